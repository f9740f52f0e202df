/**
 * How long kestrel took to start, for its console lines: `node up` is the time since this Node
 * process began (performance.timeOrigin is taken as Node starts, before V8 and the bundle load),
 * `guest up` the guest kernel's uptime (/proc/uptime, comparable to the kernel's printk clock),
 * and `code cache` whether the bundle loader (initramfs/code-cache.ts) ran the bundle from V8's
 * code cache. bench/boot reads these lines to split a boot into Node start and kestrel's own work.
 */

import { readFileSync } from 'node:fs';

/** Where the bundle loader records what happened to the code cache (absent when run without it). */
export const CODE_CACHE_STATUS = Symbol.for('volant.kestrel.codeCache');

function guestUptimeS(): string | undefined {
  try {
    return readFileSync('/proc/uptime', 'utf8').split(' ')[0];
  } catch {
    return undefined;
  }
}

/** `node up 812 ms, guest up 4.31 s, code cache accepted` (the parts known here). */
export function startupNote(): string {
  const parts = [`node up ${Math.round(performance.now())} ms`];
  const up = guestUptimeS();
  if (up !== undefined) parts.push(`guest up ${up} s`);
  const cache = (globalThis as Record<symbol, unknown>)[CODE_CACHE_STATUS];
  parts.push(`code cache ${typeof cache === 'string' ? cache : 'not used'}`);
  return parts.join(', ');
}
