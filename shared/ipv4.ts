/**
 * IPv4 addresses as unsigned 32-bit numbers. Parsing is strict dotted-quad decimal: no octal,
 * hex, shortened or padded forms, because those are exactly the spellings that let an input mean
 * one address to us and another to the kernel or libc.
 */

import { VolantError } from './errors.js';

const QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Returns the address as a number, or undefined when `text` is not strict dotted-quad. */
export function tryParseIPv4(text: string): number | undefined {
  if (typeof text !== 'string' || text.length > 15) return undefined;
  const m = QUAD.exec(text);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function parseIPv4(text: string): number {
  const n = tryParseIPv4(text);
  if (n === undefined) {
    throw new VolantError('INVALID_ARGUMENT', `not an IPv4 address: ${JSON.stringify(String(text).slice(0, 64))} (expected dotted-quad like 192.168.127.10)`);
  }
  return n;
}

export function formatIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function maskFromPrefix(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** The prefix length of a contiguous netmask, or undefined when the mask has holes. */
export function prefixFromMask(mask: number): number | undefined {
  const inv = ~mask >>> 0;
  if ((inv & (inv + 1)) !== 0) return undefined;
  return Math.clz32(inv);
}

export interface Cidr {
  /** The address as written (may have host bits set, e.g. 192.168.127.1/24). */
  address: number;
  prefix: number;
  mask: number;
  network: number;
  broadcast: number;
}

export function tryParseCidr(text: string): Cidr | undefined {
  if (typeof text !== 'string' || text.length > 18) return undefined;
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = tryParseIPv4(text.slice(0, slash));
  const p = text.slice(slash + 1);
  if (address === undefined || !/^(3[0-2]|[12]?\d)$/.test(p)) return undefined;
  const prefix = Number(p);
  const mask = maskFromPrefix(prefix);
  const network = (address & mask) >>> 0;
  return { address, prefix, mask, network, broadcast: (network | (~mask >>> 0)) >>> 0 };
}

export function parseCidr(text: string): Cidr {
  const c = tryParseCidr(text);
  if (!c) {
    throw new VolantError('INVALID_ARGUMENT', `not an IPv4 CIDR: ${JSON.stringify(String(text).slice(0, 64))} (expected ADDRESS/PREFIX like 192.168.127.0/24, prefix 0-32)`);
  }
  return c;
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ((ip & c.mask) >>> 0) === c.network;
}

export function formatCidr(c: Pick<Cidr, 'network' | 'prefix'>): string {
  return `${formatIPv4(c.network)}/${c.prefix}`;
}
