/**
 * The egress proxy resolves names itself, against resolvers the operator configures (never the
 * workload's), so the addresses it checks are the addresses it dials. Both families are asked in
 * parallel; the answer is every A and AAAA address, which the address policy then checks as a
 * whole (one bad address refuses the name). A name that does not exist and a resolver that does
 * not answer are different failures with different statuses.
 */

import { Resolver } from 'node:dns/promises';
import { VolantError } from '../../shared/errors.js';

export const DNS_TIMEOUT_MS = 5000;

export interface NameResolver {
  /** All A and AAAA addresses of `name`; throws VolantError TIMEOUT or UPSTREAM_UNREACHABLE. */
  resolve(name: string): Promise<string[]>;
}

export interface DnsResolverOptions {
  /** `ip` or `ip:port` / `[ip6]:port`; empty: the system resolvers of /etc/resolv.conf. */
  servers?: readonly string[];
  timeoutMs?: number;
}

const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'NXDOMAIN', 'ENONAME']);

export function createDnsResolver(opts: DnsResolverOptions = {}): NameResolver {
  const timeoutMs = opts.timeoutMs ?? DNS_TIMEOUT_MS;
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  if (opts.servers && opts.servers.length > 0) {
    try {
      resolver.setServers([...opts.servers]);
    } catch (e) {
      throw new VolantError('INVALID_ARGUMENT', `egress DNS servers ${JSON.stringify(opts.servers)}: ${(e as Error).message} (expected ip or ip:port)`);
    }
  }
  return {
    async resolve(name: string): Promise<string[]> {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          // No resolver.cancel(): it would cancel every other VM's lookups on this resolver too.
          reject(new VolantError('TIMEOUT', `DNS lookup of ${name} took longer than ${timeoutMs} ms`, { reason: 'dns-timeout' }));
        }, timeoutMs + 100);
      });
      try {
        const [a, aaaa] = await Promise.race([Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]), deadline]);
        const addresses = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
        if (addresses.length > 0) return addresses;
        const codes = [a, aaaa].map((r) => (r.status === 'rejected' ? String((r.reason as NodeJS.ErrnoException).code) : 'ENODATA'));
        if (codes.every((c) => NOT_FOUND.has(c))) throw new VolantError('UPSTREAM_UNREACHABLE', `${name} does not resolve (${codes[0]})`, { reason: 'dns-not-found' });
        if (codes.some((c) => c === 'ETIMEOUT' || c === 'ECANCELLED')) throw new VolantError('TIMEOUT', `DNS lookup of ${name} timed out after ${timeoutMs} ms`, { reason: 'dns-timeout' });
        throw new VolantError('UPSTREAM_UNREACHABLE', `DNS lookup of ${name} failed (${codes.join(', ')})`, { reason: 'dns-error' });
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
