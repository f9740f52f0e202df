/**
 * Which resolved addresses the egress proxy may dial (the SSRF guard). A workload names a host;
 * we resolve it ourselves and refuse the whole target when ANY address is one the host or its
 * neighbours answer on: loopback, RFC 1918, link-local, CGNAT, unspecified, multicast, broadcast,
 * reserved and documentation ranges, IPv6 ULA/site-local, and every IPv6 form that embeds an IPv4
 * address (mapped, compatible, NAT64, 6to4, Teredo) when the embedded address is itself refused.
 * Mapped and compatible forms are refused outright: no public name resolves to them, and the
 * kernel would dial the embedded IPv4 address.
 *
 * IPv6 is checked the allowlist way: only global unicast 2000::/3 can pass, so ranges assigned
 * after this was written stay refused. Operator exceptions (`allow_private` CIDRs) are checked
 * against the address exactly as resolved.
 *
 * The host itself is never an exception: `deniedAddresses` (every address of every host
 * interface, and `HOST_RANGES`, which always mean this host) are refused whatever
 * `allow_private` covers, directly and when embedded. An operator who allows the bridge subnet
 * lets VMs reach other machines there, never volantd's host.
 *
 * NAT64 (RFC 6052 §2.2) embeds the IPv4 address at a place that depends on the prefix length.
 * The well-known prefix 64:ff9b::/96 holds it in the last 32 bits. The local-use prefix
 * 64:ff9b:1::/48 (RFC 8215) is read with the /48 layout: IPv4 bits 48-63 and 72-87, the "u"
 * octet (bits 64-71) zero, the suffix (bits 88-127) zero. An address that breaks the layout
 * (a network that carves a longer prefix out of the /48 puts the IPv4 address elsewhere, where
 * the suffix would hide it) is refused: the proxy cannot know what it embeds. Teredo (RFC 4380)
 * embeds the server's address and the client's (obfuscated); a client contacts both, so both
 * must be public.
 *
 * The classes follow the IANA special-purpose registries (RFC 6890 and updates): what the
 * registries mark as not globally reachable is refused; a few globally reachable anycast
 * assignments inside refused blocks (192.0.0.9/32, 2001:1::1/128 …) are refused with their block.
 *
 * Everything here is pure: addresses are numbers (IPv4) or bigints (IPv6).
 */

import { isIP } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import { tryParseIPv4 } from '../../shared/ipv4.js';

export type AddressClass =
  | 'public'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'cgnat'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'documentation'
  | 'unique-local'
  | 'ipv4-mapped'
  | 'ipv4-compatible'
  | 'nat64'
  | '6to4'
  | 'teredo'
  | 'host-address';

export interface AddressVerdict {
  allowed: boolean;
  /** Why it was refused (the class of the address, or of the address it embeds). */
  class: AddressClass;
  /** For embedded forms: the IPv4 address inside that decided it. */
  embedded?: string;
}

/** A CIDR of either family, as numbers ready for matching. */
export interface AnyCidr {
  family: 4 | 6;
  network: bigint;
  prefix: number;
  text: string;
}

const V4_RANGES: readonly [string, AddressClass][] = [
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
];

const V4 = V4_RANGES.map(([cidr, cls]) => ({ cidr: parseAnyCidr(cidr), cls }));

/** 128-bit value of an IPv6 address (any RFC 4291 text form, with or without brackets). */
export function ipv6ToBigInt(text: string): bigint | undefined {
  let t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const zone = t.indexOf('%');
  if (zone >= 0) return undefined;
  if (isIP(t) !== 6) return undefined;
  const lastColon = t.lastIndexOf(':');
  const maybeV4 = t.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    const v4 = tryParseIPv4(maybeV4);
    if (v4 === undefined) return undefined;
    t = `${t.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [headText, restText] = t.includes('::') ? (t.split('::') as [string, string]) : [t, undefined];
  const head = headText === '' ? [] : headText.split(':').map((g) => Number.parseInt(g, 16));
  const rest = restText === undefined || restText === '' ? [] : restText.split(':').map((g) => Number.parseInt(g, 16));
  const fill = 8 - head.length - rest.length;
  if (restText === undefined && fill !== 0) return undefined;
  if (fill < 0) return undefined;
  const groups = [...head, ...new Array<number>(restText === undefined ? 0 : fill).fill(0), ...rest];
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** Parses `a.b.c.d/n` or `v6::/n`; throws INVALID_ARGUMENT naming the text. */
export function parseAnyCidr(text: string): AnyCidr {
  const bad = (why: string): VolantError =>
    new VolantError('INVALID_ARGUMENT', `not a CIDR: ${JSON.stringify(String(text).slice(0, 80))} (${why}; expected e.g. 10.0.0.0/8 or fd00::/8)`, { cidr: text });
  if (typeof text !== 'string') throw bad('not a string');
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const v4 = tryParseIPv4(addr);
  const family: 4 | 6 | undefined = v4 !== undefined ? 4 : ipv6ToBigInt(addr) !== undefined ? 6 : undefined;
  if (family === undefined) throw bad('address is neither dotted-quad IPv4 nor IPv6');
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^[0-9]{1,3}$/.test(prefixText) ? Number(prefixText) : Number.NaN;
  if (!(prefix >= 0 && prefix <= max)) throw bad(`prefix must be 0-${max}`);
  const value = family === 4 ? BigInt(v4!) : ipv6ToBigInt(addr)!;
  const bits = BigInt(max - prefix);
  return { family, network: (value >> bits) << bits, prefix, text };
}

function inCidr(c: AnyCidr, family: 4 | 6, value: bigint): boolean {
  if (c.family !== family) return false;
  const bits = BigInt((family === 4 ? 32 : 128) - c.prefix);
  return (value >> bits) << bits === c.network;
}

function formatV4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function classifyV4(n: number): AddressClass {
  const v = BigInt(n);
  for (const r of V4) if (inCidr(r.cidr, 4, v)) return r.cls;
  return 'public';
}

const bits = (v: bigint, from: number, width: number): bigint => (v >> BigInt(128 - from - width)) & ((1n << BigInt(width)) - 1n);

interface V6Class {
  cls: AddressClass;
  embedded?: number;
}

/**
 * The IPv4 address a local-use NAT64 address (64:ff9b:1::/48) embeds under the /48 layout of
 * RFC 6052 §2.2, or undefined when the address breaks that layout (u octet or suffix not zero).
 */
export function localNat64Embedded(v: bigint): number | undefined {
  if (bits(v, 64, 8) !== 0n || bits(v, 88, 40) !== 0n) return undefined;
  return Number((bits(v, 48, 16) << 16n) | bits(v, 72, 16));
}

function classifyV6(v: bigint): V6Class {
  if (v === 0n) return { cls: 'unspecified' };
  if (v === 1n) return { cls: 'loopback' };
  const top16 = bits(v, 0, 16);
  if (bits(v, 0, 96) === 0xffffn) return { cls: 'ipv4-mapped', embedded: Number(bits(v, 96, 32)) };
  if (bits(v, 0, 96) === 0n) return { cls: 'ipv4-compatible', embedded: Number(bits(v, 96, 32)) };
  if (bits(v, 0, 96) === 0x0064ff9b0000000000000000n) return { cls: 'nat64', embedded: Number(bits(v, 96, 32)) };
  if (bits(v, 0, 48) === 0x0064ff9b0001n) {
    // A broken layout embeds nothing we can check: the class alone refuses it.
    const embedded = localNat64Embedded(v);
    return embedded === undefined ? { cls: 'nat64' } : { cls: 'nat64', embedded };
  }
  if (top16 === 0x2002n) return { cls: '6to4', embedded: Number(bits(v, 16, 32)) };
  // Teredo: the server's address in bits 32-63, the client's (obfuscated) in 96-127; a server
  // address that is not public decides.
  if (bits(v, 0, 32) === 0x20010000n) {
    const server = Number(bits(v, 32, 32));
    return { cls: 'teredo', embedded: classifyV4(server) === 'public' ? Number(bits(v, 96, 32) ^ 0xffffffffn) : server };
  }
  if (bits(v, 0, 8) === 0xffn) return { cls: 'multicast' };
  if (bits(v, 0, 10) === 0b1111111010n) return { cls: 'link-local' };
  if (bits(v, 0, 10) === 0b1111111011n) return { cls: 'reserved' };
  if (bits(v, 0, 7) === 0b1111110n) return { cls: 'unique-local' };
  if (bits(v, 0, 32) === 0x20010db8n || bits(v, 0, 20) === 0x3fff0n) return { cls: 'documentation' };
  if (bits(v, 0, 23) === 0x20010000n >> 9n) return { cls: 'reserved' };
  if (bits(v, 0, 3) !== 0b001n) return { cls: 'reserved' };
  return { cls: 'public' };
}

/** Ranges that always reach this host, whatever its interfaces: loopback and "this host" (0.0.0.0 dials the local host). */
export const HOST_RANGES: readonly string[] = ['127.0.0.0/8', '0.0.0.0/8', '::1/128', '::/128'];

/** What the egress proxy must refuse as "the host": the given interface addresses plus `HOST_RANGES` (pure). */
export function hostDeniedAddresses(interfaceAddresses: readonly string[]): string[] {
  return [...new Set([...interfaceAddresses.filter((a) => !a.includes('%')), ...HOST_RANGES])];
}

export interface AddressPolicyOptions {
  /** CIDRs the operator allows even though they are private/loopback/...; checked on the address as resolved. */
  allowPrivate?: readonly string[];
  /**
   * The host itself: addresses or CIDRs (every interface address, `HOST_RANGES`) refused as
   * `host-address`, also when `allowPrivate` covers them and when embedded.
   */
  deniedAddresses?: readonly string[];
}

/** The compiled address policy: `check(address)` is pure and cheap. */
export class AddressPolicy {
  private readonly allow: AnyCidr[];
  private readonly host: AnyCidr[];

  /** @throws VolantError INVALID_ARGUMENT for a malformed CIDR or address. */
  constructor(opts: AddressPolicyOptions = {}) {
    this.allow = (opts.allowPrivate ?? []).map(parseAnyCidr);
    this.host = (opts.deniedAddresses ?? []).map(parseAnyCidr);
  }

  private isHost(family: 4 | 6, value: bigint): boolean {
    return this.host.some((c) => inCidr(c, family, value));
  }

  check(address: string): AddressVerdict {
    const v4 = tryParseIPv4(address);
    if (v4 !== undefined) {
      if (this.isHost(4, BigInt(v4))) return { allowed: false, class: 'host-address' };
      if (this.allow.some((c) => inCidr(c, 4, BigInt(v4)))) return { allowed: true, class: 'public' };
      const cls = classifyV4(v4);
      return { allowed: cls === 'public', class: cls };
    }
    const v6 = ipv6ToBigInt(address);
    if (v6 === undefined) return { allowed: false, class: 'reserved' };
    if (this.isHost(6, v6)) return { allowed: false, class: 'host-address' };
    const r = classifyV6(v6);
    if (r.embedded !== undefined) {
      const embedded = formatV4(r.embedded);
      // Mapped/compatible addresses are dialled as the IPv4 address inside: always refused.
      if (r.cls === 'ipv4-mapped' || r.cls === 'ipv4-compatible') return { allowed: false, class: r.cls, embedded };
      if (this.isHost(4, BigInt(r.embedded))) return { allowed: false, class: r.cls, embedded };
    }
    if (this.allow.some((c) => inCidr(c, 6, v6))) return { allowed: true, class: 'public' };
    if (r.embedded !== undefined) {
      const inner = classifyV4(r.embedded);
      return inner === 'public' ? { allowed: true, class: 'public' } : { allowed: false, class: r.cls, embedded: formatV4(r.embedded) };
    }
    return { allowed: r.cls === 'public', class: r.cls };
  }
}
