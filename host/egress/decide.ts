/**
 * The egress decision pipeline as pure steps, in the order the proxy applies them:
 *
 *   1. parse the target (target.ts)                      → 400/403 before anything else
 *   2. Allowlist decision on the host and port            → 403 naming the reason
 *   3. (the proxy resolves the name; IP literals skip DNS)
 *   4. every resolved address through the address policy → 403 naming the address and its class
 *   5. (the proxy dials exactly one checked address)
 *   6. CONNECT only: the first client bytes of the tunnel → SNI must equal the CONNECT host;
 *      non-TLS payloads only where the matching rule names the port explicitly.
 *
 * The tunnel policy in one sentence: a rule without a port (`api.example.com`) admits TLS to any
 * port and nothing else through CONNECT; a rule with a port (`db.example.com:5432`) admits any
 * protocol to that port, and a TLS ClientHello there must still carry the right SNI.
 */

import { isIP } from 'node:net';
import type { Allowlist } from '../../shared/allowlist.js';
import { canonicalIpLiteral, normalizeHostName } from '../../shared/allowlist.js';
import type { ErrorCode } from '../../shared/errors.js';
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
  | 'client-hello-invalid'
  | 'non-tls-tunnel'
  | 'rate-limited'
  | 'tunnel-limit'
  | 'overloaded'
  | 'header-too-large'
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

export function deny(status: number, code: ErrorCode, reason: DenyReason, message: string, extra: Pick<Denial, 'rule' | 'address'> = {}): Denial {
  return { status, code, reason, message, ...extra };
}

/** The JSON body every refusal carries. */
export function denialBody(d: Denial): string {
  const details: Record<string, string> = { reason: d.reason };
  if (d.rule !== undefined) details.rule = d.rule;
  if (d.address !== undefined) details.address = d.address;
  return JSON.stringify({ error: { code: d.code, message: d.message, details } });
}

export interface AllowedTarget {
  /** Normalised name to resolve, or the canonical IP literal to dial (then `literal` is true). */
  host: string;
  literal: boolean;
  port: number;
  rule: string;
  /** The rule names this port explicitly: non-TLS tunnels are admitted. */
  ruleNamesPort: boolean;
}

/** Whether an allowlist rule's text carries an explicit `:port`. */
export function ruleNamesPort(rule: string): boolean {
  if (isIP(rule) !== 0) return false;
  return /(?:^|[^:]):[0-9]{1,5}$/.test(rule);
}

/** Step 2: the shared Allowlist on the parsed target. */
export function decideAllowlist(allowlist: Allowlist, target: Target): AllowedTarget | Denial {
  const ip = canonicalIpLiteral(target.host);
  const name = ip === undefined ? normalizeHostName(target.host) : undefined;
  if (ip === undefined && name === undefined) {
    return deny(403, 'EGRESS_DENIED', 'invalid-host', `${JSON.stringify(target.host.slice(0, 100))} is not a valid host name`);
  }
  const d = allowlist.decide(ip ?? name!, target.port);
  if (!d.allowed) {
    const shown = `${ip ?? name}:${target.port}`;
    return ip !== undefined
      ? deny(403, 'EGRESS_DENIED', 'ip-literal', `IP literal target ${shown} is not allowed: only IP addresses an allowlist rule names can be reached by address`)
      : deny(403, 'EGRESS_DENIED', 'not-allowlisted', `${shown} matches no rule of this VM's allowed_domains`);
  }
  const rule = d.rule ?? '';
  return { host: ip ?? name!, literal: ip !== undefined, port: target.port, rule, ruleNamesPort: ruleNamesPort(rule) };
}

/** Step 4: refuses when ANY address is one the policy forbids; otherwise the addresses to dial, IPv4 first. */
export function decideAddresses(policy: AddressPolicy, allowed: AllowedTarget, addresses: readonly string[]): string[] | Denial {
  if (addresses.length === 0) return deny(502, 'UPSTREAM_UNREACHABLE', 'dns-not-found', `${allowed.host} has no A or AAAA records`, { rule: allowed.rule });
  for (const address of addresses) {
    const v = policy.check(address);
    if (!v.allowed) {
      const inner = v.embedded ? ` embedding ${v.embedded}` : '';
      const hint = v.class === 'host-address' ? "the host's own addresses are never an exception" : 'an operator can allow a range with egress.allow_private';
      return deny(403, 'EGRESS_DENIED', 'blocked-address', `${allowed.host} resolves to ${address} (${v.class}${inner}), which egress never dials; ${hint}`, {
        rule: allowed.rule,
        address,
      });
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
              403,
              'EGRESS_DENIED',
              'non-tls-tunnel',
              `tunnel to ${allowed.host}:${allowed.port} does not start with TLS; rule ${JSON.stringify(allowed.rule)} admits only TLS (name the port in a rule, e.g. ${allowed.host}:${allowed.port}, to allow other protocols)`,
              { rule: allowed.rule },
            ),
          };
    case 'invalid':
      if (allowed.ruleNamesPort) return { state: 'allow', tls: false };
      return { state: 'deny', denial: deny(403, 'EGRESS_DENIED', 'client-hello-invalid', `malformed TLS ClientHello: ${hello.reason}`, { rule: allowed.rule }) };
    case 'done': {
      if (hello.serverName === undefined) return { state: 'allow', tls: true };
      const sni = normalizeHostName(hello.serverName);
      if (sni !== undefined && !allowed.literal && sni === allowed.host) return { state: 'allow', tls: true, serverName: sni };
      return {
        state: 'deny',
        denial: deny(403, 'EGRESS_DENIED', 'sni-mismatch', `TLS server name ${JSON.stringify(hello.serverName.slice(0, 100))} differs from the CONNECT host ${allowed.host} (domain fronting)`, {
          rule: allowed.rule,
        }),
      };
    }
  }
}
