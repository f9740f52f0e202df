/**
 * The egress decision pipeline as pure steps, in the order the proxy applies them
 * (admission.ts runs steps 0-4, tunnel.ts step 6):
 *
 *   0. (the VM's rate budget: every request counts, refused or not → 429)
 *   1. parse the target (target.ts)                      → 400/403 before anything else
 *   2. Allowlist decision on the host and port            → 403 naming the reason
 *   3. (the proxy resolves the name; IP literals skip DNS)
 *   4. every resolved address through the address policy → 403 naming the address and its class
 *   5. (the proxy dials exactly one checked address)
 *   6. CONNECT only: the first client bytes of the tunnel → a TLS ClientHello whose SNI equals the
 *      CONNECT host; non-TLS payloads only where the matching rule names the port explicitly.
 *
 * The tunnel policy in one sentence: a rule without a port (`api.example.com`) admits TLS with
 * the right SNI to any port and nothing else, and the ClientHello is checked before the target
 * is dialled; a rule with a port (`db.example.com:5432`) admits any protocol to that port (the
 * target is dialled at once: server-speaks-first protocols need it), and a TLS ClientHello there
 * must still carry the right SNI. A ClientHello without SNI for a name target is refused unless
 * the rule says `sni=optional` (shared/allowlist.ts); IP-literal targets never carry SNI.
 *
 * Every refusal is a `Denial` with a stable reason and an error code; its HTTP status is the
 * code's (`httpStatusFor`), and `denialError` turns it into the error the one writer sends.
 */

import { isIP } from 'node:net';
import type { Allowlist } from '../../shared/allowlist.js';
import { canonicalIpLiteral, normalizeHostName, splitRuleOptions } from '../../shared/allowlist.js';
import { type ErrorCode, httpStatusFor, VolantError } from '../../shared/errors.js';
import type { AddressPolicy } from './address-policy.js';
import type { ClientHelloResult } from './sni.js';
import type { Target } from './target.js';

/** Stable machine-readable reasons; they appear in audit lines, metrics and 403 bodies. */
export type DenyReason =
  | 'no-policy'
  | 'bad-target'
  | 'bad-port'
  | 'userinfo'
  | 'scheme'
  | 'origin-form'
  | 'host-mismatch'
  | 'not-allowlisted'
  | 'ip-literal'
  | 'invalid-host'
  | 'blocked-address'
  | 'dns-not-found'
  | 'dns-timeout'
  | 'dns-error'
  | 'sni-mismatch'
  | 'sni-missing'
  | 'client-hello-invalid'
  | 'non-tls-tunnel'
  | 'rate-limited'
  | 'tunnel-limit'
  | 'overloaded'
  | 'header-too-large'
  | 'incomplete-request'
  | 'http-version'
  | 'body-too-large'
  | 'connect-timeout'
  | 'connect-failed'
  | 'upstream-error'
  | 'upgrade-unsupported'
  | 'method-unsupported';

export interface Denial {
  status: number;
  code: ErrorCode;
  reason: DenyReason;
  message: string;
  rule?: string;
  address?: string;
}

export function deny(code: ErrorCode, reason: DenyReason, message: string, extra: Pick<Denial, 'rule' | 'address'> = {}): Denial {
  return { status: httpStatusFor(code), code, reason, message, ...extra };
}

/** The error a refusal is answered with: its code and message, and `details` naming the reason (and rule and address). */
export function denialError(d: Denial): VolantError {
  const details: Record<string, string> = { reason: d.reason };
  if (d.rule !== undefined) details.rule = d.rule;
  if (d.address !== undefined) details.address = d.address;
  return new VolantError(d.code, d.message, details);
}

export interface AllowedTarget {
  /** Normalised name to resolve, or the canonical IP literal to dial (then `literal` is true). */
  host: string;
  literal: boolean;
  port: number;
  rule: string;
  /** The rule names this port explicitly: non-TLS tunnels are admitted. */
  ruleNamesPort: boolean;
  /** The rule says `sni=optional`: a ClientHello without SNI is admitted for a name target. */
  sniOptional: boolean;
}

/** Whether an allowlist rule's text carries an explicit `:port` (options after the target ignored). */
export function ruleNamesPort(rule: string): boolean {
  const { target } = splitRuleOptions(rule);
  if (isIP(target) !== 0) return false;
  return /(?:^|[^:]):[0-9]{1,5}$/.test(target);
}

/** Step 2: the shared Allowlist on the parsed target. */
export function decideAllowlist(allowlist: Allowlist, target: Target): AllowedTarget | Denial {
  const ip = canonicalIpLiteral(target.host);
  const name = ip === undefined ? normalizeHostName(target.host) : undefined;
  if (ip === undefined && name === undefined) {
    return deny('EGRESS_DENIED', 'invalid-host', `${JSON.stringify(target.host.slice(0, 100))} is not a valid host name`);
  }
  const d = allowlist.decide(ip ?? name!, target.port);
  if (!d.allowed) {
    const shown = `${ip ?? name}:${target.port}`;
    return ip !== undefined
      ? deny('EGRESS_DENIED', 'ip-literal', `IP literal target ${shown} is not allowed: only IP addresses an allowlist rule names can be reached by address`)
      : deny('EGRESS_DENIED', 'not-allowlisted', `${shown} matches no rule of this VM's allowed_domains`);
  }
  const rule = d.rule ?? '';
  return { host: ip ?? name!, literal: ip !== undefined, port: target.port, rule, ruleNamesPort: ruleNamesPort(rule), sniOptional: d.options?.has('sni=optional') === true };
}

/** Step 4: refuses when ANY address is one the policy forbids; otherwise the addresses to dial, IPv4 first. */
export function decideAddresses(policy: AddressPolicy, allowed: AllowedTarget, addresses: readonly string[]): string[] | Denial {
  if (addresses.length === 0) return deny('UPSTREAM_UNREACHABLE', 'dns-not-found', `${allowed.host} has no A or AAAA records`, { rule: allowed.rule });
  for (const address of addresses) {
    const v = policy.check(address);
    if (!v.allowed) {
      const inner = v.embedded ? ` embedding ${v.embedded}` : '';
      const hint = v.class === 'host-address' ? "the host's own addresses are never an exception" : 'an operator can allow a range with egress.allow_private';
      return deny('EGRESS_DENIED', 'blocked-address', `${allowed.host} resolves to ${address} (${v.class}${inner}), which egress never dials; ${hint}`, { rule: allowed.rule, address });
    }
  }
  return [...addresses].sort((a, b) => (isIP(a) === isIP(b) ? 0 : isIP(a) === 4 ? -1 : 1));
}

export type TunnelVerdict = { state: 'need-more' } | { state: 'allow'; tls: boolean; serverName?: string } | { state: 'deny'; denial: Denial };

/** Step 6: decides a CONNECT tunnel from its first client bytes. */
export function decideTunnelPayload(allowed: AllowedTarget, hello: ClientHelloResult): TunnelVerdict {
  switch (hello.state) {
    case 'need-more':
      return hello;
    case 'not-tls':
      return allowed.ruleNamesPort
        ? { state: 'allow', tls: false }
        : {
            state: 'deny',
            denial: deny(
              'EGRESS_DENIED',
              'non-tls-tunnel',
              `tunnel to ${allowed.host}:${allowed.port} does not start with TLS; rule ${JSON.stringify(allowed.rule)} admits only TLS (name the port in a rule, e.g. ${allowed.host}:${allowed.port}, to allow other protocols)`,
              { rule: allowed.rule },
            ),
          };
    case 'invalid':
      if (allowed.ruleNamesPort) return { state: 'allow', tls: false };
      return { state: 'deny', denial: deny('EGRESS_DENIED', 'client-hello-invalid', `malformed TLS ClientHello: ${hello.reason}`, { rule: allowed.rule }) };
    case 'done': {
      if (hello.serverName === undefined) {
        if (allowed.literal || allowed.sniOptional) return { state: 'allow', tls: true };
        return {
          state: 'deny',
          denial: deny(
            'EGRESS_DENIED',
            'sni-missing',
            `TLS ClientHello for ${allowed.host} carries no server name (SNI); rule ${JSON.stringify(allowed.rule)} requires it (add " sni=optional" to the rule to admit clients that send none)`,
            { rule: allowed.rule },
          ),
        };
      }
      const sni = normalizeHostName(hello.serverName);
      if (sni !== undefined && !allowed.literal && sni === allowed.host) return { state: 'allow', tls: true, serverName: sni };
      return {
        state: 'deny',
        denial: deny('EGRESS_DENIED', 'sni-mismatch', `TLS server name ${JSON.stringify(hello.serverName.slice(0, 100))} differs from the CONNECT host ${allowed.host} (domain fronting)`, {
          rule: allowed.rule,
        }),
      };
    }
  }
}
