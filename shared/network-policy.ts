/**
 * The network policy: everything a VM's network mode implies, decided in one place. Store,
 * orchestrator, VMM launchers and daemon ask `networkPolicy` and act on its answer; none of them
 * looks at the mode itself. Pure: the same inputs give the same answer, and a table test pins
 * every mode × allowlist × VMM vsock capability × DHCP server.
 *
 * Inputs: the plugin manifest and the VM request (the request wins field by field,
 * `resolveNetworkConfig`), the VMM's vsock capability as its launcher reports it *before* launch,
 * and what this host offers (taps, egress listeners, who serves DHCP on the bridge).
 *
 *   mode     tap  IPAM lease  ip=      how the host reaches kestrel         address volantd knows
 *   bridged  yes  yes         static   vsock when the VMM has it, else TCP  the lease
 *   dhcp     yes  no          dhcp     vsock when the VMM has it, else TCP  Volant's DHCP lease, or the
 *                                                                           neighbour table (other server)
 *   vsock    no   no          none     vsock (refused without one)          none
 *
 * vsock capabilities: `hybrid-socket` (the VMM's Unix socket with `CONNECT <port>\n`, and
 * `<socket>_<port>` for guest-initiated streams), `af-vsock` (host kernel vhost-vsock: the host
 * dials the CID with AF_VSOCK; guest-initiated streams would need a host AF_VSOCK listener keyed
 * by CID, which volantd does not run), `none`.
 *
 * Egress (a VM whose workload may go out): the guest reaches its own listener over hybrid vsock
 * when the VMM offers it (the listener is the VM's own `<socket>_3128`, so the peer is the VM by
 * construction), else over TCP on the host's bridge address, where the listener serves only the
 * VM's address and MAC (IPAM lease or Volant's DHCP lease), or only its MAC (a DHCP server
 * Volant does not run, looked up in the neighbour table).
 *
 * Lockdown (every VM with a tap): the spoof guard always (frames carry the VM's MAC, ARP only for
 * it, no IPv6, IPv4 only from its address once known); with an allowlist also confinement (it
 * reaches nothing but its egress listener: no other VM, no other host port, nothing through
 * NAT). A dhcp VM waiting for Volant's DHCP lease may send only DHCP; with a DHCP server Volant
 * does not run, the binding stays at the MAC.
 */

import { ValidationError, VolantError } from './errors.js';
import type { NetworkMode, NetworkSettings, PluginManifest } from './schema/manifest.js';
import type { VmConfig } from './schema/vm-config.js';

export const VSOCK_CAPABILITIES = ['hybrid-socket', 'af-vsock', 'none'] as const;
/** How the host reaches a VM's vsock device (see the primer). */
export type VsockCapability = (typeof VSOCK_CAPABILITIES)[number];

export const DHCP_SERVERS = ['volant', 'external'] as const;
/** Who answers DHCP on the bridge: Volant's own server (volantd reads its leases) or another one. */
export type DhcpServer = (typeof DHCP_SERVERS)[number];

export interface ResolvedNetwork {
  mode?: NetworkMode;
  subnet?: string;
  gateway?: string;
  auto_assign?: boolean;
  allowOutbound: boolean;
  allowedDomains: string[];
}

type Defined<T> = { [K in keyof T]: Exclude<T[K], undefined> };

function pick<T extends object>(...layers: (T | undefined)[]): Partial<Defined<T>> {
  const out: Record<string, unknown> = {};
  for (const layer of layers) {
    if (!layer) continue;
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) out[k] = v;
  }
  return out as Partial<Defined<T>>;
}

/** VM config wins field by field over the manifest; `proxy` is merged the same way. */
export function resolveNetworkConfig(manifest: Pick<PluginManifest, 'network'> | undefined, vmConfig?: Pick<VmConfig, 'network'>): ResolvedNetwork {
  const m: NetworkSettings | undefined = manifest?.network;
  const v: NetworkSettings | undefined = vmConfig?.network;
  const { proxy: _mp, ...mRest } = m ?? {};
  const { proxy: _vp, ...vRest } = v ?? {};
  const base = pick<Omit<NetworkSettings, 'proxy'>>(mRest, vRest);
  const proxy = pick<NonNullable<NetworkSettings['proxy']>>(m?.proxy, v?.proxy);
  return {
    ...base,
    allowOutbound: proxy.allow_outbound === true,
    allowedDomains: proxy.allowed_domains ?? [],
  };
}

/** Where volantd learns the guest's IPv4 address: its IPAM lease, Volant's DHCP lease for its MAC, or the bridge's neighbour table. */
export type GuestAddressSource = 'ipam' | 'dhcp-lease' | 'neighbour';

/** How the host reaches kestrel's agent port. */
export type AgentRoute = { via: 'hybrid-vsock' } | { via: 'af-vsock' } | { via: 'tcp'; address: GuestAddressSource };

/** How the guest's forwarder reaches its egress listener (`volant.egress=`). */
export type EgressRoute = { via: 'hybrid-vsock' } | { via: 'tcp' };

/**
 * Which peers a VM's egress listener serves:
 *  - `vm-socket`: whoever connects to the VM's own `<socket>_3128` (only its VMM can);
 *  - `address`: the VM's address (from `address`) AND, in the neighbour table, the VM's MAC;
 *  - `mac`: any address whose neighbour entry carries the VM's MAC (no lease is known).
 */
export type EgressPeers = { kind: 'vm-socket' } | { kind: 'address'; address: 'ipam' | 'dhcp-lease' } | { kind: 'mac' };

export interface LockdownPolicy {
  /**
   * IPv4 source binding: the IPAM lease from boot; Volant's DHCP lease once known (only DHCP
   * passes before); none where no lease can be known (MAC binding only).
   */
  address: 'ipam' | 'dhcp-lease' | 'none';
  /** DHCP client traffic passes (the lease can be taken, renewed or changed). */
  dhcp: boolean;
  /** Confined to its egress listener (a VM with an allowlist); false: spoof guard only, plain NAT. */
  confined: boolean;
}

export interface NetworkPolicy {
  mode: NetworkMode;
  /** A tap on the bridge (and a virtio-net device in the guest). */
  tap: boolean;
  /** An address from Volant's pool (IPAM), held by the VM row. */
  lease: boolean;
  /** The kernel's `ip=`: static from the lease, `dhcp`, or none (no interface). */
  ipParam: 'static' | 'dhcp' | 'none';
  agent: AgentRoute;
  /** Present when the workload may go out: its listener's route and peers, and the allowlist it applies. */
  egress?: { route: EgressRoute; peers: EgressPeers; allowedDomains: string[] };
  /** Present for every VM with a tap. */
  lockdown?: LockdownPolicy;
}

export interface NetworkPolicyInput {
  manifest: Pick<PluginManifest, 'network'> | undefined;
  request: Pick<VmConfig, 'network' | 'ip'>;
  /** The VMM's vsock capability, as its launcher reports it before launch (or an adopted VMM has). */
  vsock: VsockCapability;
  host: {
    /** volantd can make taps on a bridge. */
    taps: boolean;
    /** volantd can start egress listeners. */
    egress: boolean;
    dhcpServer: DhcpServer;
  };
}

/**
 * What a VM row of this mode holds, the part of the policy that depends on the mode alone (the
 * store asks it when it inserts a row): a tap, an address from Volant's pool, and the `ip=` kind.
 */
export function rowNetwork(mode: NetworkMode): Pick<NetworkPolicy, 'tap' | 'lease' | 'ipParam'> {
  switch (mode) {
    case 'bridged':
      return { tap: true, lease: true, ipParam: 'static' };
    case 'dhcp':
      return { tap: true, lease: false, ipParam: 'dhcp' };
    case 'vsock':
      return { tap: false, lease: false, ipParam: 'none' };
    default:
      throw new VolantError('INVALID_ARGUMENT', `network mode ${JSON.stringify(mode)} is not one of bridged, dhcp, vsock`);
  }
}

function notSupported(message: string): never {
  throw new VolantError('NOT_SUPPORTED', message);
}

function agentRoute(vsock: VsockCapability, mode: NetworkMode, address: GuestAddressSource | undefined): AgentRoute {
  if (vsock === 'hybrid-socket') return { via: 'hybrid-vsock' };
  if (vsock === 'af-vsock') return { via: 'af-vsock' };
  if (address === undefined) return notSupported(`network mode ${mode} needs a VMM with a vsock device (kestrel has no other way in); this VMM has none (QEMU without /dev/vhost-vsock or a vhost-user vsock backend)`);
  return { via: 'tcp', address };
}

/**
 * The policy for one VM (see the primer). Throws VALIDATION_FAILED for a request that
 * contradicts its mode, NOT_SUPPORTED for what this host or VMM cannot give it.
 */
export function networkPolicy(input: NetworkPolicyInput): NetworkPolicy {
  const net = resolveNetworkConfig(input.manifest, input.request);
  const mode: NetworkMode = net.mode ?? 'bridged';
  const { vsock, host } = input;
  if (!(VSOCK_CAPABILITIES as readonly string[]).includes(vsock)) throw new VolantError('INTERNAL', `vsock capability ${JSON.stringify(vsock)} is not one of ${VSOCK_CAPABILITIES.join(', ')}`);

  const { tap, lease, ipParam } = rowNetwork(mode);
  const address: GuestAddressSource | undefined = lease ? 'ipam' : !tap ? undefined : host.dhcpServer === 'volant' ? 'dhcp-lease' : 'neighbour';
  if (input.request.ip !== undefined && address !== 'ipam') {
    throw new ValidationError('VM create request', [{ path: '/ip', message: `an explicit address needs network mode bridged; this VM is ${mode}` }]);
  }
  if (tap && !host.taps) notSupported(`network mode ${mode} needs host networking, which this volantd runs without`);
  if (net.allowOutbound && !host.egress) notSupported('outbound traffic needs the egress proxy, which this volantd runs without');

  const agent = agentRoute(vsock, mode, address);
  const policy: NetworkPolicy = { mode, tap, lease, ipParam, agent };

  if (net.allowOutbound) {
    let route: EgressRoute;
    let peers: EgressPeers;
    if (vsock === 'hybrid-socket') {
      route = { via: 'hybrid-vsock' };
      peers = { kind: 'vm-socket' };
    } else if (address !== undefined) {
      route = { via: 'tcp' };
      peers = address === 'neighbour' ? { kind: 'mac' } : { kind: 'address', address };
    } else {
      return notSupported(
        `outbound traffic of a ${mode} VM needs guest-initiated vsock to a per-VM socket; the host kernel's vhost-vsock would need an AF_VSOCK listener keyed by CID, which volantd does not run (use a vhost-user vsock backend, or network mode bridged)`,
      );
    }
    policy.egress = { route, peers, allowedDomains: net.allowedDomains };
  }

  if (tap) {
    policy.lockdown = {
      address: address === 'ipam' ? 'ipam' : address === 'dhcp-lease' ? 'dhcp-lease' : 'none',
      dhcp: ipParam === 'dhcp',
      confined: net.allowedDomains.length > 0,
    };
  }
  return policy;
}

/** `::ffff:a.b.c.d` (a v4 peer on a dual-stack socket) as `a.b.c.d`. */
function plainAddress(address: string | undefined): string | undefined {
  return address?.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
}

/**
 * Whether a VM's egress listener serves a connecting peer. `peer.mac` is the MAC the bridge's
 * neighbour table holds for the peer's address (undefined when it holds none); `vm.address` is
 * the VM's address as volantd knows it now (undefined while a DHCP lease is not known).
 */
export function egressServesPeer(peers: EgressPeers, peer: { address?: string; mac?: string }, vm: { address?: string; mac: string }): boolean {
  switch (peers.kind) {
    case 'vm-socket':
      return true;
    case 'address': {
      const address = plainAddress(peer.address);
      return vm.address !== undefined && address === vm.address && peer.mac?.toLowerCase() === vm.mac.toLowerCase();
    }
    case 'mac':
      return peer.mac !== undefined && peer.mac.toLowerCase() === vm.mac.toLowerCase();
    default:
      return false;
  }
}
