/**
 * Which DNS resolvers a guest gets when the config names none (`network.dns` unset): the host's
 * own, from /etc/resolv.conf, as a guest on the bridge reaches them through NAT. A host that only
 * lists a local stub (127.0.0.53 of systemd-resolved, a dnsmasq on 127.0.0.1) has nothing a
 * guest can reach there, so the stub's upstreams (/run/systemd/resolve/resolv.conf) are used,
 * and failing those the public resolvers the Volant guides name. IPv6 servers are skipped:
 * guests are IPv4-only. `guestResolvers` decides (pure); `hostResolvers` reads the files.
 */

import { existsSync, readFileSync } from 'node:fs';
import { tryParseIPv4 } from '../../shared/ipv4.js';
import { MAX_DNS_SERVERS } from '../vmm/cmdline.js';

export const RESOLV_CONF = '/etc/resolv.conf';
/** systemd-resolved's list of the upstream servers behind its 127.0.0.53 stub. */
export const RESOLVED_UPSTREAM_CONF = '/run/systemd/resolve/resolv.conf';
export const PUBLIC_RESOLVERS: readonly string[] = ['1.1.1.1', '8.8.8.8'];

/** The IPv4 `nameserver` entries of a resolv.conf, in order, without duplicates. */
export function nameservers(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && tryParseIPv4(m[1]!) !== undefined && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

/** 127.0.0.0/8 and 0.0.0.0: the host itself, which a guest cannot reach at that address. */
export function isHostLocal(ip: string): boolean {
  return ip.startsWith('127.') || ip === '0.0.0.0';
}

export interface GuestResolvers {
  servers: string[];
  /** Where they came from, for the log. */
  source: string;
}

/** The guest's resolvers from the host's files (undefined: file absent). */
export function guestResolvers(files: { resolvConf?: string; resolvedUpstream?: string }): GuestResolvers {
  for (const [text, source] of [
    [files.resolvConf, RESOLV_CONF],
    [files.resolvedUpstream, RESOLVED_UPSTREAM_CONF],
  ] as const) {
    const usable = nameservers(text ?? '').filter((ip) => !isHostLocal(ip));
    if (usable.length > 0) return { servers: usable.slice(0, MAX_DNS_SERVERS), source };
  }
  return { servers: [...PUBLIC_RESOLVERS], source: 'public resolvers (the host has none a guest can reach)' };
}

/** This host's answer (volantd asks once at start); both files are world-readable when present. */
export function hostResolvers(): GuestResolvers {
  const read = (path: string): string | undefined => (existsSync(path) ? readFileSync(path, 'utf8') : undefined);
  return guestResolvers({ resolvConf: read(RESOLV_CONF), resolvedUpstream: read(RESOLVED_UPSTREAM_CONF) });
}
