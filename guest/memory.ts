/**
 * The guest's memory as kestrel reports it on /healthz: `MemTotal` and `MemAvailable` from
 * /proc/meminfo, in kB. The host cannot see how much of a VM's RAM its guest still has free
 * (QEMU's own footprint counts pages the guest touched once), so this is the figure to size
 * `resources.memory_mb` by (bench/density reads it).
 */

import { readFileSync } from 'node:fs';

export interface GuestMemory {
  total_kb: number;
  available_kb: number;
}

/** Parses /proc/meminfo text (pure); undefined when either line is missing. */
export function parseMeminfo(text: string): GuestMemory | undefined {
  const total = /^MemTotal:\s+(\d+) kB$/m.exec(text);
  const available = /^MemAvailable:\s+(\d+) kB$/m.exec(text);
  return total && available ? { total_kb: Number(total[1]), available_kb: Number(available[1]) } : undefined;
}

/** This system's memory now, or null where /proc/meminfo cannot be read (not Linux). */
export function guestMemory(file = '/proc/meminfo'): GuestMemory | null {
  try {
    return parseMeminfo(readFileSync(file, 'utf8')) ?? null;
  } catch {
    return null;
  }
}
