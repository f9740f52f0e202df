/**
 * Volant's own DHCP server for the bridge, the pure half: dnsmasq's config, its systemd unit,
 * its lease file read back, and how it is supervised. `volar setup --dhcp` writes and (re)starts
 * it (server.ts); volantd reads its lease file (leases.ts) to learn each dhcp VM's address, which
 * is what lets a dhcp VM be bound to its lease like a bridged VM to its IPAM address.
 *
 * What must hold:
 *  - DHCP only (`port=0`: no DNS), on the bridge only, from a range that never overlaps the IPAM
 *    pool (config validation), with the bridge address as router.
 *  - The config is a function of the Volant config alone, so "changed?" is a text comparison and
 *    setup can restart the server exactly when something changed (idempotent).
 *  - Under systemd (and only in the network namespace systemd's services run in) it is a unit;
 *    elsewhere (containers, test namespaces) a daemonised process with a pid file.
 */

import { tryParseIPv4 } from '../../shared/ipv4.js';
import { serviceUnit } from '../config/systemd-unit.js';

export const DHCP_UNIT_NAME = 'volant-dhcp.service';
export const DNSMASQ_BINARY = 'dnsmasq';

export interface DnsmasqSettings {
  bridge: string;
  /** The host's address on the bridge (router option, and the server's own address). */
  gateway: string;
  /** Dotted netmask of the bridge subnet. */
  netmask: string;
  rangeStart: string;
  rangeEnd: string;
  leaseTimeS: number;
  /** Resolvers handed to clients (config network.dns); none when empty. */
  dns: readonly string[];
  leaseFile: string;
}

/** dnsmasq's config file text (pure). */
export function dnsmasqConfig(s: DnsmasqSettings): string {
  const lines = [
    '# Volant DHCP server, written by `volar setup --dhcp` from volantd.yaml; edits are overwritten.',
    'port=0',
    `interface=${s.bridge}`,
    'bind-dynamic',
    'no-hosts',
    'dhcp-authoritative',
    `dhcp-range=${s.rangeStart},${s.rangeEnd},${s.netmask},${s.leaseTimeS}`,
    `dhcp-option=option:router,${s.gateway}`,
    ...(s.dns.length > 0 ? [`dhcp-option=option:dns-server,${s.dns.join(',')}`] : []),
    `dhcp-leasefile=${s.leaseFile}`,
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * The command that runs the server: under systemd in the foreground without a pid file (systemd
 * tracks it; the runtime directory may not exist at boot), elsewhere daemonised with `pidFile`.
 */
export function dnsmasqArgv(binary: string, configFile: string, run: { foreground: true } | { foreground: false; pidFile: string }): string[] {
  return [binary, `--conf-file=${configFile}`, ...(run.foreground ? ['--keep-in-foreground', '--pid-file'] : [`--pid-file=${run.pidFile}`])];
}

export function dhcpUnit(o: { bridge: string; execStart: string[] }): string {
  return serviceUnit({ description: `Volant DHCP server for ${o.bridge} (dnsmasq)`, unit: ['After=network.target'], execStart: o.execStart, service: [] });
}

export type DhcpSupervisor = 'systemd' | 'process';

/**
 * systemd only where it runs and this process shares PID 1's network namespace: a unit would
 * start dnsmasq in PID 1's namespace, where a bridge made inside another namespace does not exist.
 */
export function dhcpSupervisor(host: { systemdRunning: boolean; inInitNetworkNamespace: boolean }): DhcpSupervisor {
  return host.systemdRunning && host.inInitNetworkNamespace ? 'systemd' : 'process';
}

export interface DhcpLease {
  mac: string;
  address: string;
  /** Unix seconds; 0 means the lease never expires. */
  expires: number;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * dnsmasq's lease file: one lease per line, `<expiry> <mac> <ip> <hostname|*> <client-id|*>`
 * (IPv6 `duid` lines and anything malformed are skipped). When a MAC appears twice the later
 * line wins (dnsmasq writes one line per lease, newest last). dnsmasq rewrites the file in place,
 * so a reader can catch it half-written: only newline-terminated lines count, because a cut line
 * can still look valid (`192.168.127.3` from `192.168.127.35`).
 */
export function parseDnsmasqLeases(text: string): DhcpLease[] {
  const byMac = new Map<string, DhcpLease>();
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  for (const line of complete.split('\n')) {
    const [expiry, mac, address] = line.trim().split(/\s+/);
    if (expiry === undefined || mac === undefined || address === undefined) continue;
    const lower = mac.toLowerCase();
    if (!/^[0-9]+$/.test(expiry) || !MAC.test(lower) || tryParseIPv4(address) === undefined) continue;
    byMac.set(lower, { mac: lower, address, expires: Number(expiry) });
  }
  return [...byMac.values()];
}

/** The live (unexpired at `nowS`) address of each MAC. */
export function activeLeases(leases: readonly DhcpLease[], nowS: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of leases) if (l.expires === 0 || l.expires > nowS) out.set(l.mac, l.address);
  return out;
}

/** The MACs whose address differs between two lease maps (appeared, moved or gone). */
export function changedMacs(before: ReadonlyMap<string, string>, after: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [mac, address] of after) if (before.get(mac) !== address) out.push(mac);
  for (const mac of before.keys()) if (!after.has(mac)) out.push(mac);
  return out;
}
