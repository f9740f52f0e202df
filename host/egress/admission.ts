/**
 * Admission and decision for one egress request or tunnel, up to the addresses that may be
 * dialled (decide.ts steps 0-4), shared by the CONNECT and plain-HTTP paths:
 *
 *   policy for the peer → rate budget (every request, refused or not) → no policy? 403
 *   → parse the target → allowlist → concurrency slot (tunnels per VM, host-wide in flight)
 *   → resolve (IP literals skip DNS) → every address through the address policy
 *
 * The rate budget is charged before anything is decided, so refusals cost a VM as much as
 * answers do, and a VM over its budget gets 429 whatever it asked. The concurrency slot is only
 * taken for what passed the allowlist and is released on every later refusal. State lives in an
 * explicit `AdmissionContext`; the `Exchange` collects what the audit line will say.
 */

import { Allowlist } from '../../shared/allowlist.js';
import { VolantError } from '../../shared/errors.js';
import type { AddressPolicy } from './address-policy.js';
import type { Exchange } from './audit.js';
import { type AllowedTarget, type Denial, decideAddresses, decideAllowlist, deny, type DenyReason } from './decide.js';
import { type EgressLimits, UNIDENTIFIED_PEER } from './limits.js';
import type { EgressPeer, EgressPolicy } from './options.js';
import type { NameResolver } from './resolver.js';
import type { Parsed, Target } from './target.js';

/** The compiled allowlist of each VM, recompiled only when its rules change (same array: no work). */
export class AllowlistCache {
  private readonly byVm = new Map<string, { rules: readonly string[]; joined: string; allowlist: Allowlist }>();

  /** @throws VolantError INVALID_ARGUMENT for an invalid rule. */
  get(p: EgressPolicy): Allowlist {
    const cached = this.byVm.get(p.vmName);
    if (cached && cached.rules === p.allowedDomains) return cached.allowlist;
    const joined = p.allowedDomains.join('\n');
    if (cached && cached.joined === joined) {
      cached.rules = p.allowedDomains;
      return cached.allowlist;
    }
    const allowlist = new Allowlist(p.allowedDomains);
    this.byVm.set(p.vmName, { rules: p.allowedDomains, joined, allowlist });
    return allowlist;
  }
}

export interface AdmissionContext {
  policyFor(peer: EgressPeer): EgressPolicy | undefined;
  limits: EgressLimits;
  resolver: NameResolver;
  addresses: AddressPolicy;
  allowlists: AllowlistCache;
}

export interface Admitted {
  allowed: AllowedTarget;
  /** The checked addresses, in dial order. */
  dial: string[];
  /** Gives back the concurrency slot; idempotent. */
  release(): void;
}

export interface AdmissionKind {
  tunnel: boolean;
  /** The port the decision is made on, when it differs from the target's (upgrade_to_https: 80 → 443). */
  dialPort?: (t: Target) => number;
}

function policyOf(ctx: AdmissionContext, peer: EgressPeer): EgressPolicy | undefined {
  try {
    return ctx.policyFor(peer);
  } catch {
    return undefined;
  }
}

/**
 * Charges one request from `peer` to its VM's rate budget (peers no VM claims share one budget)
 * and names the VM on the exchange. Returns the 429 when the budget is spent. Every path that
 * answers a request calls this first, including the refusals the HTTP parser makes.
 */
export function charge(ctx: AdmissionContext, x: Exchange, peer: EgressPeer): { policy: EgressPolicy | undefined; denial: Denial | undefined } {
  const policy = policyOf(ctx, peer);
  x.vm = policy?.vmName ?? null;
  if (ctx.limits.take(policy?.vmName ?? UNIDENTIFIED_PEER, performance.now())) return { policy, denial: undefined };
  const who = policy ? `VM ${policy.vmName}` : `this peer (${peer.remoteAddress ?? 'unix socket'})`;
  return { policy, denial: deny('RATE_LIMITED', 'rate-limited', `${who} exceeds ${ctx.limits.rate} egress requests per second (refused requests count too)`) };
}

export async function admit(ctx: AdmissionContext, x: Exchange, peer: EgressPeer, parse: () => Parsed<Target>, kind: AdmissionKind): Promise<Admitted | Denial> {
  const { policy, denial } = charge(ctx, x, peer);
  if (denial !== undefined) return denial;
  if (!policy) return deny('EGRESS_DENIED', 'no-policy', `no VM with outbound access is known for this connection (${peer.remoteAddress ?? 'unix socket'})`);
  const parsed = parse();
  if (!parsed.ok) {
    const forbidden = parsed.reason === 'userinfo' || parsed.reason === 'host-mismatch' || parsed.reason === 'scheme';
    return deny(forbidden ? 'EGRESS_DENIED' : 'INVALID_ARGUMENT', parsed.reason, parsed.message);
  }
  x.target = parsed.target;
  let allowlist: Allowlist;
  try {
    allowlist = ctx.allowlists.get(policy);
  } catch (e) {
    return deny('INTERNAL', 'no-policy', `VM ${policy.vmName} has an invalid allowlist: ${(e as Error).message}`);
  }
  const checkTarget = kind.dialPort ? { ...parsed.target, port: kind.dialPort(parsed.target) } : parsed.target;
  const allowed = decideAllowlist(allowlist, checkTarget);
  if ('status' in allowed) return allowed;
  x.rule = allowed.rule;
  const vm = policy.vmName;
  const slot = ctx.limits.acquire(vm, kind.tunnel);
  if (slot === 'tunnel-limit') return deny('RATE_LIMITED', 'tunnel-limit', `VM ${vm} already has ${ctx.limits.maxTunnelsPerVm} open tunnels`, { rule: allowed.rule });
  if (slot === 'overloaded') return deny('OVERLOADED', 'overloaded', `egress proxy is at its host-wide limit of ${ctx.limits.maxConcurrentTotal} concurrent connections`, { rule: allowed.rule });
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    ctx.limits.release(vm, kind.tunnel);
  };
  let resolved: string[];
  if (allowed.literal) resolved = [allowed.host];
  else {
    try {
      resolved = await ctx.resolver.resolve(allowed.host);
    } catch (e) {
      release();
      const reason = ((e as VolantError).details as { reason?: DenyReason } | undefined)?.reason ?? 'dns-error';
      const code = e instanceof VolantError && e.code === 'TIMEOUT' ? 'TIMEOUT' : 'UPSTREAM_UNREACHABLE';
      return deny(code, reason, (e as Error).message, { rule: allowed.rule });
    }
  }
  const dial = decideAddresses(ctx.addresses, allowed, resolved);
  if (!Array.isArray(dial)) {
    release();
    if (dial.address) x.address = dial.address;
    return dial;
  }
  return { allowed, dial, release };
}
