/**
 * Finding a guest's IPv4 address by its MAC in the bridge's neighbour (ARP) table. A dhcp-mode
 * VM's address comes from a DHCP server Volant does not run, so the host learns it the way the
 * kernel does: kestrel, once leased, sends one datagram to its gateway (the host's bridge
 * address); the guest's ARP request for the gateway makes the host add a neighbour entry for the
 * guest's IP and MAC. This module is the pure half: it reads `ip -j -4 neigh show dev <bridge>`.
 *
 * What must hold: only entries with a link-layer address equal to the MAC (compared
 * case-insensitively) count; FAILED/INCOMPLETE entries (no usable answer) never do; where a MAC
 * has several addresses (a renewed lease moved), a confirmed entry (REACHABLE, DELAY, PROBE,
 * PERMANENT, NOARP) wins over a STALE one; malformed output is "not found", never a throw.
 */

import { tryParseIPv4 } from '../../shared/ipv4.js';

export interface NeighbourEntry {
  address: string;
  mac: string;
  states: string[];
}

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UNUSABLE_STATES = new Set(['FAILED', 'INCOMPLETE', 'NONE']);
const CONFIRMED_STATES = new Set(['REACHABLE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);

/** The usable IPv4 entries of `ip -j neigh show` output; anything malformed is skipped. */
export function parseNeighbours(json: string): NeighbourEntry[] {
  let rows: unknown;
  try {
    rows = JSON.parse(json.trim() === '' ? '[]' : json);
  } catch {
    return [];
  }
  if (!Array.isArray(rows)) return [];
  const entries: NeighbourEntry[] = [];
  for (const row of rows) {
    if (typeof row !== 'object' || row === null) continue;
    const { dst, lladdr, state } = row as { dst?: unknown; lladdr?: unknown; state?: unknown };
    if (typeof dst !== 'string' || tryParseIPv4(dst) === undefined) continue;
    if (typeof lladdr !== 'string' || !MAC_PATTERN.test(lladdr.toLowerCase())) continue;
    const states = Array.isArray(state) ? state.filter((s): s is string => typeof s === 'string') : [];
    if (states.some((s) => UNUSABLE_STATES.has(s))) continue;
    entries.push({ address: dst, mac: lladdr.toLowerCase(), states });
  }
  return entries;
}

/** The IPv4 address the neighbour table holds for `mac`, confirmed entries first; undefined if none. */
export function addressForMac(entries: readonly NeighbourEntry[], mac: string): string | undefined {
  const wanted = mac.toLowerCase();
  const matching = entries.filter((e) => e.mac === wanted);
  return (matching.find((e) => e.states.some((s) => CONFIRMED_STATES.has(s))) ?? matching[0])?.address;
}

/** `/proc/net/arp`: the ARP flag that marks a complete entry (ATF_COM). */
const ATF_COM = 0x2;

/**
 * The complete entries of `/proc/net/arp` (the kernel's IPv4 neighbour table as text), on
 * `device` when given. Read synchronously where a decision cannot wait (an egress listener
 * checking who connected); malformed lines are skipped.
 */
export function parseProcNetArp(text: string, device?: string): NeighbourEntry[] {
  const entries: NeighbourEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const [address, , flags, mac, , dev] = line.trim().split(/\s+/);
    if (address === undefined || mac === undefined || flags === undefined || dev === undefined) continue;
    if (device !== undefined && dev !== device) continue;
    if (tryParseIPv4(address) === undefined || !MAC_PATTERN.test(mac.toLowerCase())) continue;
    if ((Number.parseInt(flags, 16) & ATF_COM) === 0) continue;
    entries.push({ address, mac: mac.toLowerCase(), states: ['REACHABLE'] });
  }
  return entries;
}

/** The MAC the neighbour table holds for `address`, if any. */
export function macForAddress(entries: readonly NeighbourEntry[], address: string): string | undefined {
  return entries.find((e) => e.address === address)?.mac;
}
