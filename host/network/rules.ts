/**
 * The firewall rules Volant owns, as data. Pure functions decide which rules exist; the Linux
 * manager only checks and applies them, so the plan can be tested as tables and printed in a dry
 * run. Every rule carries a `volant:` comment (iptables) or names the VM's tap (ebtables), which
 * is how `unlockVm` and teardown find exactly ours.
 *
 * VM lockdown works in two layers that do not depend on br_netfilter settings:
 * - L2 (ebtables, bridge family), the spoof guard every VM with a tap gets: frames entering from
 *   its tap carry its MAC, carry no VLAN tag, ARP names only that MAC (and its address once
 *   known), IPv6 is dropped, and IPv4 comes only from its address. Tagged frames go because the
 *   kernel lifts an 802.1Q/802.1ad tag off before the bridge, so every IPv4 and ARP rule (which
 *   matches the frame's protocol) would miss them, while the receiving stack (another VM, the
 *   host) takes a priority tag (VLAN id 0) as no tag at all: VM to VM, spoofed sources and ARP
 *   claims would all pass inside one. No VM sends DHCP as a server (UDP from port 67), whose
 *   offers could re-address the other dhcp VMs. A dhcp VM may also send DHCP from 0.0.0.0 to
 *   the broadcast address; before Volant's DHCP server has leased it an address that is all its
 *   IPv4 may be; with a DHCP server Volant does not run, no address can be bound (MAC only).
 *   Every rule is a DROP with negations, so rules never depend on their order.
 * - Confinement, for a VM with an allowlist: IPv4 bridged straight to another port (VM to VM) is
 *   dropped (DHCP to a server on another port excepted where Volant does not run the server), and
 *   at L3 (iptables, matched by the VM's MAC, which L2 made unforgeable) the host accepts only its
 *   egress listener's port on the bridge address, DHCP, and replies on connections the host
 *   opened (ingress to the guest agent); everything else to the host and everything routed
 *   through it (to the internet or other VMs) is dropped, in both directions.
 */

import { formatCidr, parseCidr } from '../../shared/ipv4.js';
import { assertCidr, assertInterfaceName, assertIPv4, assertMac, assertPort } from './ifname.js';
import type { LockdownSpec } from './manager.js';

export type FirewallTool = 'iptables' | 'ebtables';

export interface Rule {
  tool: FirewallTool;
  table: 'filter' | 'nat';
  chain: string;
  spec: string[];
  /** Insert at this position (1 = first) instead of appending. */
  position?: number;
}

export const VM_INPUT_CHAIN = 'VOLANT-IN';
export const VM_FORWARD_CHAIN = 'VOLANT-FWD';
export const BRIDGE_SPOOF_CHAIN = 'VOLANT-SPOOF';
export const BRIDGE_ISOLATE_CHAIN = 'VOLANT-ISOLATE';
export const NAT_TAG = 'volant:nat';

export interface ChainSpec {
  tool: FirewallTool;
  table: 'filter';
  name: string;
}

export const VM_CHAINS: readonly ChainSpec[] = [
  { tool: 'iptables', table: 'filter', name: VM_INPUT_CHAIN },
  { tool: 'iptables', table: 'filter', name: VM_FORWARD_CHAIN },
  { tool: 'ebtables', table: 'filter', name: BRIDGE_SPOOF_CHAIN },
  { tool: 'ebtables', table: 'filter', name: BRIDGE_ISOLATE_CHAIN },
];

export function vmTag(tap: string): string {
  return `volant:${tap}`;
}

function comment(tag: string): string[] {
  return ['-m', 'comment', '--comment', tag];
}

/** `192.168.127.1/24` → `192.168.127.0/24`. */
export function subnetOf(cidr: string): string {
  return formatCidr(parseCidr(assertCidr(cidr)));
}

export interface NatParams {
  bridge: string;
  /** The VM subnet; host bits are ignored (192.168.127.1/24 means 192.168.127.0/24). */
  subnet: string;
}

/** MASQUERADE the subnet out of every other interface; forward out of the bridge and replies back in. */
export function natRules(p: NatParams): Rule[] {
  const bridge = assertInterfaceName(p.bridge, 'bridge name');
  const subnet = subnetOf(p.subnet);
  return [
    { tool: 'iptables', table: 'nat', chain: 'POSTROUTING', spec: ['-s', subnet, '!', '-o', bridge, ...comment(NAT_TAG), '-j', 'MASQUERADE'] },
    { tool: 'iptables', table: 'filter', chain: 'FORWARD', spec: ['-i', bridge, ...comment(NAT_TAG), '-j', 'ACCEPT'] },
    { tool: 'iptables', table: 'filter', chain: 'FORWARD', spec: ['-o', bridge, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...comment(NAT_TAG), '-j', 'ACCEPT'] },
  ];
}

/** The jumps from the built-in chains into ours, first in line so they run before any ACCEPT. */
export function vmChainJumps(): Rule[] {
  return [
    { tool: 'iptables', table: 'filter', chain: 'INPUT', spec: ['-j', VM_INPUT_CHAIN], position: 1 },
    { tool: 'iptables', table: 'filter', chain: 'FORWARD', spec: ['-j', VM_FORWARD_CHAIN], position: 1 },
    { tool: 'ebtables', table: 'filter', chain: 'INPUT', spec: ['-j', BRIDGE_SPOOF_CHAIN], position: 1 },
    { tool: 'ebtables', table: 'filter', chain: 'FORWARD', spec: ['-j', BRIDGE_SPOOF_CHAIN], position: 1 },
    { tool: 'ebtables', table: 'filter', chain: 'FORWARD', spec: ['-j', BRIDGE_ISOLATE_CHAIN], position: 1 },
  ];
}

const BROADCAST = '255.255.255.255';
/** Ethertypes of VLAN-tagged frames: 802.1Q (C-tag) and 802.1ad (S-tag). */
const VLAN_ETHERTYPES = ['0x8100', '0x88a8'] as const;
const DHCP_SERVER_PORT = '67';
const DHCP_CLIENT_PORT = '68';

export function lockdownRules(p: LockdownSpec): Rule[] {
  const tap = assertInterfaceName(p.tap, 'tap name');
  const bridge = assertInterfaceName(p.bridge, 'bridge name');
  const mac = assertMac(p.mac);
  const hostIp = assertIPv4(p.hostIp, 'host address');
  const address = p.address === 'awaiting-lease' || p.address === 'unbound' ? p.address : assertIPv4(p.address, 'VM address');
  const ip = address === 'awaiting-lease' || address === 'unbound' ? undefined : address;
  const egressPort = p.confine?.egressPort === undefined ? undefined : String(assertPort(p.confine.egressPort, 'egress port'));
  // DHCP to a server on the host (Volant's, or another one on the bridge address) is accepted at
  // L3; to a server Volant does not run it may also cross the bridge (another port, an uplink).
  const dhcpOnHost = p.dhcp === true;
  const dhcpForwarded = p.dhcp === true && address === 'unbound';
  const spoof = (...spec: string[]): Rule => ({ tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', tap, ...spec, '-j', 'DROP'] });
  const isolate = (...spec: string[]): Rule => ({ tool: 'ebtables', table: 'filter', chain: BRIDGE_ISOLATE_CHAIN, spec: ['-i', tap, ...spec, '-j', 'DROP'] });
  /** IPv4 from `source` (an ebtables match) must be a DHCP client broadcast, else it is dropped. */
  const onlyDhcpBroadcast = (source: string[]): Rule[] => [
    spoof('-p', 'IPv4', ...source, '--ip-dst', '!', BROADCAST),
    spoof('-p', 'IPv4', ...source, '--ip-proto', '!', 'udp'),
    spoof('-p', 'IPv4', ...source, '--ip-proto', 'udp', '--ip-dport', '!', DHCP_SERVER_PORT),
  ];

  // A VM is never a DHCP server: its offers could re-address other dhcp VMs on the bridge.
  const noDhcpServer = spoof('-p', 'IPv4', '--ip-proto', 'udp', '--ip-sport', DHCP_SERVER_PORT);
  const l2: Rule[] = [spoof('-s', '!', mac), ...VLAN_ETHERTYPES.map((t) => spoof('-p', t)), spoof('-p', 'IPv6'), noDhcpServer, spoof('-p', 'ARP', '--arp-mac-src', '!', mac)];
  if (ip !== undefined) {
    l2.push(spoof('-p', 'ARP', '--arp-ip-src', '!', ip));
    if (p.dhcp) l2.push(...onlyDhcpBroadcast(['--ip-src', '!', ip]));
    else l2.push(spoof('-p', 'IPv4', '--ip-src', '!', ip));
  } else if (address === 'awaiting-lease') {
    l2.push(...onlyDhcpBroadcast([]));
  }
  if (!p.confine) return l2;

  if (dhcpForwarded) l2.push(isolate('-p', 'IPv4', '--ip-proto', '!', 'udp'), isolate('-p', 'IPv4', '--ip-proto', 'udp', '--ip-dport', '!', DHCP_SERVER_PORT));
  else l2.push(isolate('-p', 'IPv4'));

  const tag = comment(vmTag(tap));
  const fromVm = ['-i', bridge, '-m', 'mac', '--mac-source', mac];
  const dhcpIn = ['-p', 'udp', '--sport', DHCP_CLIENT_PORT, '--dport', DHCP_SERVER_PORT];
  const l3: Rule[] = [];
  const input = (spec: string[], target: 'ACCEPT' | 'DROP'): void => {
    l3.push({ tool: 'iptables', table: 'filter', chain: VM_INPUT_CHAIN, spec: [...fromVm, ...spec, ...tag, '-j', target] });
  };
  if (egressPort !== undefined) input(['-d', `${hostIp}/32`, '-p', 'tcp', '--dport', egressPort], 'ACCEPT');
  if (dhcpOnHost) input(dhcpIn, 'ACCEPT');
  input(['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED'], 'ACCEPT');
  input([], 'DROP');
  if (dhcpForwarded) l3.push({ tool: 'iptables', table: 'filter', chain: VM_FORWARD_CHAIN, spec: [...fromVm, ...dhcpIn, ...tag, '-j', 'ACCEPT'] });
  l3.push({ tool: 'iptables', table: 'filter', chain: VM_FORWARD_CHAIN, spec: [...fromVm, ...tag, '-j', 'DROP'] });
  if (ip !== undefined) l3.push({ tool: 'iptables', table: 'filter', chain: VM_FORWARD_CHAIN, spec: ['-d', ip, ...tag, '-j', 'DROP'] });
  return [...l2, ...l3];
}

/**
 * Cuts every frame from the tap while its rules are replaced (first in the spoof chain, which
 * both INPUT and FORWARD jump to); `rulesForTap` finds it like any other rule of the tap.
 */
export function swapGuardRule(tap: string): Rule {
  return { tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', assertInterfaceName(tap, 'tap name'), '-j', 'DROP'], position: 1 };
}

function base(tool: FirewallTool, table: string): string[] {
  return tool === 'iptables' ? ['iptables', '-w', '-t', table] : ['ebtables', '-t', table];
}

export function checkArgv(r: Rule): string[] {
  return [...base(r.tool, r.table), r.tool === 'iptables' ? '-C' : '--check', r.chain, ...r.spec];
}

export function addArgv(r: Rule): string[] {
  return r.position === undefined ? [...base(r.tool, r.table), '-A', r.chain, ...r.spec] : [...base(r.tool, r.table), '-I', r.chain, String(r.position), ...r.spec];
}

export function deleteArgv(r: Pick<Rule, 'tool' | 'table' | 'chain' | 'spec'>): string[] {
  return [...base(r.tool, r.table), '-D', r.chain, ...r.spec];
}

export function listChainArgv(c: ListedChain): string[] {
  return c.tool === 'iptables' ? [...base(c.tool, c.table), '-S', c.name] : [...base(c.tool, c.table), '-L', c.name];
}

export function newChainArgv(c: ChainSpec): string[] {
  return c.tool === 'iptables' ? [...base(c.tool, c.table), '-N', c.name] : [...base(c.tool, c.table), '-N', c.name, '-P', 'RETURN'];
}

export function flushChainArgv(c: ChainSpec): string[] {
  return [...base(c.tool, c.table), '-F', c.name];
}

export function deleteChainArgv(c: ChainSpec): string[] {
  return [...base(c.tool, c.table), '-X', c.name];
}

function tokens(line: string): string[] {
  return line
    .trim()
    .split(/\s+/)
    .map((t) => t.replace(/^"(.*)"$/, '$1'));
}

/** An iptables chain we put tagged rules into (ours or a built-in one). */
export interface ListedChain {
  tool: FirewallTool;
  table: 'filter' | 'nat';
  name: string;
}

/** The built-in chains holding NAT rules tagged `NAT_TAG`. */
export const NAT_CHAINS: readonly ListedChain[] = [
  { tool: 'iptables', table: 'nat', name: 'POSTROUTING' },
  { tool: 'iptables', table: 'filter', name: 'FORWARD' },
];

/**
 * The iptables rules in a chain listing (`iptables -S CHAIN`) tagged with `tag`, as deletable
 * specs. Our values never contain spaces or quotes, so splitting on blanks is exact.
 */
export function rulesTagged(chain: ListedChain, listing: string, tag: string): Rule[] {
  const out: Rule[] = [];
  for (const line of listing.split('\n')) {
    const t = tokens(line);
    if (t[0] !== '-A' || t[1] !== chain.name) continue;
    const spec = t.slice(2);
    const i = spec.indexOf('--comment');
    if (i >= 0 && spec[i + 1] === tag) out.push({ tool: 'iptables', table: chain.table, chain: chain.name, spec });
  }
  return out;
}

/**
 * The rules in a chain listing (`iptables -S CHAIN` / `ebtables -L CHAIN`) that belong to `tap`:
 * iptables rules by their `volant:<tap>` comment, ebtables rules by `-i <tap>`.
 */
export function rulesForTap(chain: ListedChain, listing: string, tap: string): Rule[] {
  if (chain.tool === 'iptables') return rulesTagged(chain, listing, vmTag(tap));
  const out: Rule[] = [];
  for (const line of listing.split('\n')) {
    const t = tokens(line);
    const i = t.indexOf('-i');
    if (i >= 0 && t[i + 1] === tap && t.includes('-j')) out.push({ tool: 'ebtables', table: chain.table, chain: chain.name, spec: t });
  }
  return out;
}
