/**
 * volantd's view of Volant's DHCP server: its lease file, watched. dnsmasq rewrites the file on
 * every lease event (grant, renewal, release, expiry), so watching its directory tells volantd
 * of each lease as it happens; a slow periodic re-read covers a missed event and expiries. Each
 * read is diffed against the last, and listeners hear only the MACs whose address changed.
 *
 * dnsmasq truncates and rewrites the file in place, so one read can see it empty or half
 * written, which would look like leases gone (and cut their VMs off while they are re-bound). A
 * read that differs from what volantd knows is therefore taken only once a second read, made
 * `LEASE_SETTLE_MS` later, agrees with it; while the two differ the file is still being written
 * and volantd keeps its current view.
 */

import { existsSync, readFileSync, type FSWatcher, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from '../log/logger.js';
import type { DhcpLeaseSource } from '../orchestrator/ports.js';
import { activeLeases, changedMacs, parseDnsmasqLeases } from './dnsmasq.js';

/** Re-read the lease file at least this often, events or not (expiries make no event). */
export const LEASE_RECHECK_MS = 2_000;
/** How long a changed reading must hold before it is believed (dnsmasq writes the file in one go). */
export const LEASE_SETTLE_MS = 50;

export interface LeaseFileWatcher extends DhcpLeaseSource {
  /** Re-reads the file now; listeners hear of what changed once the reading has settled. */
  refresh(): void;
  close(): void;
}

export function watchLeaseFile(path: string, options: { recheckMs?: number; settleMs?: number; now?: () => number; log?: Logger } = {}): LeaseFileWatcher {
  const now = options.now ?? (() => Date.now());
  const listeners = new Set<(macs: string[]) => void>();
  let current = new Map<string, string>();

  const read = (): Map<string, string> => {
    try {
      return activeLeases(parseDnsmasqLeases(readFileSync(path, 'utf8')), Math.floor(now() / 1000));
    } catch {
      return new Map();
    }
  };
  let settling: NodeJS.Timeout | undefined;
  let closed = false;
  const sameLeases = (a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean => changedMacs(a, b).length === 0;
  /** Takes a changed reading once a second one agrees with it (see the primer). */
  const refresh = (): void => {
    if (settling !== undefined || closed) return;
    const first = read();
    if (sameLeases(current, first)) return;
    settling = setTimeout(() => {
      settling = undefined;
      if (closed) return;
      const second = read();
      if (sameLeases(first, second)) apply(second);
      else refresh();
    }, options.settleMs ?? LEASE_SETTLE_MS);
    settling.unref();
  };
  const apply = (next: Map<string, string>): void => {
    const changed = changedMacs(current, next);
    current = next;
    if (changed.length === 0) return;
    for (const l of listeners) {
      try {
        l(changed);
      } catch (e) {
        options.log?.error({ err: e, lease_file: path }, `lease listener failed: ${(e as Error).message}`);
      }
    }
  };

  current = read();
  let watcher: FSWatcher | undefined;
  const dir = dirname(path);
  if (existsSync(dir)) {
    try {
      watcher = watch(dir, { persistent: false }, (_event, file) => {
        if (file === null || file === basename(path)) refresh();
      });
      watcher.on('error', () => watcher?.close());
    } catch (e) {
      options.log?.warn({ err: e, lease_file: path }, `cannot watch ${dir} (${(e as Error).message}); re-reading every ${options.recheckMs ?? LEASE_RECHECK_MS} ms`);
    }
  }
  const timer = setInterval(refresh, options.recheckMs ?? LEASE_RECHECK_MS);
  timer.unref();

  return {
    addressOf: (mac) => current.get(mac.toLowerCase()),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refresh,
    close() {
      closed = true;
      clearTimeout(settling);
      clearInterval(timer);
      watcher?.close();
      listeners.clear();
    },
  };
}
