/**
 * Host networking on Linux through iproute2, sysctl, iptables and ebtables. Each operation first
 * probes (read-only) and then changes only what is missing, so repeated runs converge and add
 * nothing twice. Names and addresses are validated before the first command; a tap that fails
 * half-way through set-up is deleted again so no half-made device stays behind.
 */

import { createHash } from 'node:crypto';
import { VolantError } from '../../shared/errors.js';
import { parseCidr } from '../../shared/ipv4.js';
import { assertCidr, assertInterfaceName, assertMac } from './ifname.js';
import type { BridgeSpec, LockdownSpec, NatSpec, NetworkManager, TapSpec } from './manager.js';
import {
  addArgv,
  type ChainSpec,
  checkArgv,
  deleteArgv,
  deleteChainArgv,
  flushChainArgv,
  listChainArgv,
  lockdownRules,
  NAT_CHAINS,
  NAT_TAG,
  natRules,
  newChainArgv,
  type Rule,
  rulesForTap,
  rulesTagged,
  swapGuardRule,
  VM_CHAINS,
  vmChainJumps,
} from './rules.js';
import { addressForMac, parseNeighbours } from './neighbours.js';
import type { CommandResult, CommandRunner } from './runner.js';

const sameRule = (a: Rule, b: Rule): boolean => a.tool === b.tool && a.chain === b.chain && a.spec.join(' ') === b.spec.join(' ');

/** A rule is deleted at most this many times per remove (duplicates left by older tools). */
export const MAX_DUPLICATE_DELETES = 16;

interface LinkInfo {
  ifname: string;
  master?: string;
  flags?: string[];
  address?: string;
  linkinfo?: { info_kind?: string; info_data?: { type?: string; vnet_hdr?: boolean } };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/**
 * The tap's own MAC: the guest's with the first byte set to 0xfe (as libvirt does). It differs
 * from the guest's, so the bridge never treats the guest's address as local, and it sorts high,
 * so it never becomes the bridge's address.
 */
export function hostSideMac(guestMac: string): string {
  return `fe${assertMac(guestMac).slice(2)}`;
}

/** A stable locally administered MAC for the bridge, so its address does not follow its ports. */
export function bridgeMac(bridge: string): string {
  const d = createHash('sha256').update('volant-bridge\0').update(bridge).digest();
  return ['02', ...[...d.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export class LinuxNetworkManager implements NetworkManager {
  constructor(private readonly runner: CommandRunner) {}

  private change(argv: string[]): Promise<CommandResult> {
    return this.runner.run({ argv });
  }

  private probe(argv: string[]): Promise<CommandResult> {
    return this.runner.run({ argv, probe: true });
  }

  private async link(name: string): Promise<LinkInfo | undefined> {
    const r = await this.probe(['ip', '-d', '-j', 'addr', 'show', 'dev', name]);
    if (r.code !== 0 || r.stdout.trim() === '') return undefined;
    try {
      return (JSON.parse(r.stdout) as LinkInfo[])[0];
    } catch {
      return undefined;
    }
  }

  async ensureBridge(spec: BridgeSpec): Promise<void> {
    const name = assertInterfaceName(spec.name, 'bridge name');
    const cidr = parseCidr(assertCidr(spec.cidr, 'bridge address'));
    const address = spec.cidr.slice(0, spec.cidr.indexOf('/'));
    let link = await this.link(name);
    if (link && link.linkinfo?.info_kind !== 'bridge') {
      throw new VolantError('CONFLICT', `interface ${name} exists and is not a bridge (it is ${link.linkinfo?.info_kind ?? 'a plain device'}); choose another bridge name`);
    }
    if (!link) {
      await this.change(['ip', 'link', 'add', 'name', name, 'type', 'bridge']);
      await this.change(['ip', 'link', 'set', 'dev', name, 'address', bridgeMac(name)]);
      link = { ifname: name, addr_info: [], flags: [] };
    }
    const has = (link.addr_info ?? []).some((a) => a.family === 'inet' && a.local === address && a.prefixlen === cidr.prefix);
    if (!has) await this.change(['ip', 'addr', 'add', `${address}/${cidr.prefix}`, 'dev', name]);
    if (!(link.flags ?? []).includes('UP')) await this.change(['ip', 'link', 'set', 'dev', name, 'up']);
  }

  async removeBridge(name: string): Promise<void> {
    assertInterfaceName(name, 'bridge name');
    const link = await this.link(name);
    if (!link) return;
    if (link.linkinfo?.info_kind !== 'bridge') throw new VolantError('CONFLICT', `interface ${name} is not a bridge; refusing to delete it`);
    await this.change(['ip', 'link', 'del', 'dev', name]);
  }

  async createTap(spec: TapSpec): Promise<void> {
    const name = assertInterfaceName(spec.name, 'tap name');
    const bridge = assertInterfaceName(spec.bridge, 'bridge name');
    const mac = spec.mac === undefined ? undefined : hostSideMac(spec.mac);
    if (await this.link(name)) throw new VolantError('CONFLICT', `interface ${name} already exists; delete it first (volar reconciles stale taps at start-up)`);
    const br = await this.link(bridge);
    if (!br || br.linkinfo?.info_kind !== 'bridge') throw new VolantError('NOT_FOUND', `bridge ${bridge} does not exist (run \`volar setup\`)`);
    await this.change(['ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr']);
    try {
      if (mac) await this.change(['ip', 'link', 'set', 'dev', name, 'address', mac]);
      await this.change(['ip', 'link', 'set', 'dev', name, 'master', bridge]);
      await this.change(['ip', 'link', 'set', 'dev', name, 'up']);
    } catch (e) {
      await this.probe(['ip', 'link', 'del', 'dev', name]);
      throw e;
    }
  }

  async deleteTap(name: string): Promise<void> {
    assertInterfaceName(name, 'tap name');
    const link = await this.link(name);
    if (!link) return;
    if (link.linkinfo?.info_kind !== 'tun') throw new VolantError('CONFLICT', `interface ${name} is not a tap; refusing to delete it`);
    await this.change(['ip', 'link', 'del', 'dev', name]);
  }

  async tapExists(name: string): Promise<boolean> {
    assertInterfaceName(name, 'tap name');
    const link = await this.link(name);
    return link?.linkinfo?.info_kind === 'tun';
  }

  async listTaps(prefix: string): Promise<string[]> {
    if (prefix !== '') assertInterfaceName(prefix, 'tap name prefix');
    const r = await this.probe(['ip', '-d', '-j', 'link', 'show']);
    if (r.code !== 0) return [];
    const links = JSON.parse(r.stdout || '[]') as LinkInfo[];
    return links
      .filter((l) => l.linkinfo?.info_kind === 'tun' && l.linkinfo.info_data?.type === 'tap' && l.ifname.startsWith(prefix))
      .map((l) => l.ifname)
      .sort();
  }

  async ensureNat(spec: NatSpec): Promise<void> {
    const rules = natRules(spec);
    const forward = await this.probe(['sysctl', '-n', 'net.ipv4.ip_forward']);
    if (forward.stdout.trim() !== '1') await this.change(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    // The VM chains' jumps go first in INPUT/FORWARD before any ACCEPT exists, so a locked VM's
    // DROP rules always run before the bridge's blanket forward ACCEPT.
    await this.ensureVmChains();
    for (const r of rules) await this.ensureRule(r);
  }

  async removeNat(spec: NatSpec): Promise<void> {
    for (const r of natRules(spec)) await this.removeRule(r);
    // Rules an earlier setup made for another subnet or bridge carry the same tag.
    for (const c of NAT_CHAINS) {
      const listing = await this.probe(listChainArgv(c));
      if (listing.code !== 0) continue;
      for (const r of rulesTagged(c, listing.stdout, NAT_TAG)) await this.removeRule(r);
    }
    for (const j of vmChainJumps()) await this.removeRule(j);
    for (const c of VM_CHAINS) {
      if (!(await this.chainExists(c))) continue;
      await this.change(flushChainArgv(c));
      await this.change(deleteChainArgv(c));
    }
  }

  async lockdownVm(spec: LockdownSpec): Promise<void> {
    const rules = lockdownRules(spec);
    await this.ensureVmChains();
    const present = await this.tapRules(spec.tap);
    if (present.length === 0) {
      for (const r of rules) await this.ensureRule(r);
      return;
    }
    if (present.length === rules.length && (await this.allPresent(rules))) return;
    // Replace fail-closed: cut the tap off, remove every old rule, add the new ones in order.
    const guard = swapGuardRule(spec.tap);
    await this.ensureRule(guard);
    for (const r of present) if (!sameRule(r, guard)) await this.removeRule(r);
    for (const r of rules) await this.ensureRule(r);
    await this.removeRule(guard);
  }

  async unlockVm(spec: { tap: string }): Promise<void> {
    for (const r of await this.tapRules(spec.tap)) await this.removeRule(r);
  }

  /** Every rule in our VM chains that belongs to `tap`. */
  private async tapRules(tapName: string): Promise<Rule[]> {
    const tap = assertInterfaceName(tapName, 'tap name');
    const out: Rule[] = [];
    for (const c of VM_CHAINS) {
      const listing = await this.probe(listChainArgv(c));
      if (listing.code === 0) out.push(...rulesForTap(c, listing.stdout, tap));
    }
    return out;
  }

  private async allPresent(rules: readonly Rule[]): Promise<boolean> {
    for (const r of rules) if ((await this.probe(checkArgv(r))).code !== 0) return false;
    return true;
  }

  async neighbourAddress(bridge: string, mac: string): Promise<string | undefined> {
    const name = assertInterfaceName(bridge, 'bridge name');
    const r = await this.probe(['ip', '-j', '-4', 'neigh', 'show', 'dev', name]);
    if (r.code !== 0) return undefined;
    return addressForMac(parseNeighbours(r.stdout), mac);
  }

  private async ensureVmChains(): Promise<void> {
    for (const c of VM_CHAINS) if (!(await this.chainExists(c))) await this.change(newChainArgv(c));
    for (const j of vmChainJumps()) await this.ensureRule(j);
  }

  private async chainExists(c: ChainSpec): Promise<boolean> {
    return (await this.probe(listChainArgv(c))).code === 0;
  }

  private async ensureRule(r: Rule): Promise<void> {
    if ((await this.probe(checkArgv(r))).code !== 0) await this.change(addArgv(r));
  }

  private async removeRule(r: Rule): Promise<void> {
    for (let i = 0; i < MAX_DUPLICATE_DELETES; i++) {
      if ((await this.probe(checkArgv(r))).code !== 0) return;
      await this.change(deleteArgv(r));
    }
  }
}
