/**
 * The firewall rules Volant owns, as data. Pure functions decide which rules exist; the Linux
 * manager only checks and applies them, so the plan can be tested as tables and printed in a dry
 * run. Every rule carries a `volant:` comment (iptables) or names the VM's tap (ebtables), which
 * is how `unlockVm` and teardown find exactly ours.
 *
 * VM lockdown works in two layers that do not depend on br_netfilter settings:
 * - L2 (ebtables, bridge family): frames entering from a VM's tap must carry the VM's MAC and
 *   leased address (IPv4 and ARP), IPv6 is dropped, and IPv4 bridged straight to another port
 *   (VM to VM) is dropped. After this, an IPv4 source address on the bridge names one VM.
 * - L3 (iptables): from that address the host accepts only the egress proxy port on its bridge
 *   address (plus replies on connections the host opened, e.g. ingress to the guest agent);
 *   everything else to the host and everything routed through it (to the internet or other
 *   VMs) is dropped, in both directions.
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

export function lockdownRules(p: LockdownSpec): Rule[] {
  const tap = assertInterfaceName(p.tap, 'tap name');
  const bridge = assertInterfaceName(p.bridge, 'bridge name');
  const ip = assertIPv4(p.ip, 'VM address');
  const hostIp = assertIPv4(p.hostIp, 'host address');
  const port = String(assertPort(p.egressPort, 'egress port'));
  const mac = p.mac === undefined ? undefined : assertMac(p.mac);
  const tag = comment(vmTag(tap));
  const fromVm = ['-i', bridge, '-s', ip];
  const l2: Rule[] = [
    ...(mac ? [{ tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', tap, '-s', '!', mac, '-j', 'DROP'] } as Rule] : []),
    { tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', tap, '-p', 'IPv4', '--ip-src', '!', ip, '-j', 'DROP'] },
    { tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', tap, '-p', 'ARP', '--arp-ip-src', '!', ip, '-j', 'DROP'] },
    { tool: 'ebtables', table: 'filter', chain: BRIDGE_SPOOF_CHAIN, spec: ['-i', tap, '-p', 'IPv6', '-j', 'DROP'] },
    { tool: 'ebtables', table: 'filter', chain: BRIDGE_ISOLATE_CHAIN, spec: ['-i', tap, '-p', 'IPv4', '-j', 'DROP'] },
  ];
  const l3: Rule[] = [
    { tool: 'iptables', table: 'filter', chain: VM_INPUT_CHAIN, spec: [...fromVm, '-d', `${hostIp}/32`, '-p', 'tcp', '--dport', port, ...tag, '-j', 'ACCEPT'] },
    { tool: 'iptables', table: 'filter', chain: VM_INPUT_CHAIN, spec: [...fromVm, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...tag, '-j', 'ACCEPT'] },
    { tool: 'iptables', table: 'filter', chain: VM_INPUT_CHAIN, spec: [...fromVm, ...tag, '-j', 'DROP'] },
    { tool: 'iptables', table: 'filter', chain: VM_FORWARD_CHAIN, spec: [...fromVm, ...tag, '-j', 'DROP'] },
    { tool: 'iptables', table: 'filter', chain: VM_FORWARD_CHAIN, spec: ['-d', ip, ...tag, '-j', 'DROP'] },
  ];
  return [...l2, ...l3];
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
