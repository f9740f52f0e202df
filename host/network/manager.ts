/**
 * The one interface the orchestrator and `volar setup` use for host networking. Implementations:
 * `LinuxNetworkManager` (iproute2 + iptables/ebtables through a CommandRunner; a DryRunRunner
 * turns it into a printer of the exact commands) and `NoopNetworkManager` off Linux.
 * Every `ensure*` is idempotent (check before add: running twice adds nothing twice) and every
 * remove is idempotent (removing what is not there succeeds).
 */

export interface BridgeSpec {
  name: string;
  /** The host's address on the bridge with the prefix, e.g. 192.168.127.1/24. */
  cidr: string;
}

export interface TapSpec {
  name: string;
  /** The guest's MAC. The tap itself gets `hostSideMac(mac)` so the bridge never confuses the two. */
  mac?: string;
  bridge: string;
}

export interface NatSpec {
  bridge: string;
  subnet: string;
}

export interface LockdownSpec {
  tap: string;
  bridge: string;
  /** The guest's MAC: frames from the tap must carry it, and ARP must name it. */
  mac: string;
  /** The host's address on the bridge, where TCP egress listeners and Volant's DHCP server listen. */
  hostIp: string;
  /**
   * IPv4 source binding: the VM's address (its IPAM or DHCP lease); `awaiting-lease` before
   * Volant's DHCP server has leased it one (only DHCP passes); `unbound` where no lease can be
   * known (a DHCP server Volant does not run: the MAC is the binding).
   */
  address: string | 'awaiting-lease' | 'unbound';
  /** DHCP client traffic passes (udp 68 → 67), so the lease can be taken and renewed. */
  dhcp: boolean;
  /**
   * Confinement (a VM with an allowlist): from the VM the host accepts only `egressPort` on
   * `hostIp` (when the VM has a TCP egress listener), DHCP, and replies; nothing reaches other
   * VMs or leaves through NAT. Absent: the spoof guard alone, plain NAT.
   */
  confine?: { egressPort?: number };
}

export interface NetworkManager {
  ensureBridge(spec: BridgeSpec): Promise<void>;
  removeBridge(name: string): Promise<void>;
  /** Creates a tap with VNET_HDR, attaches it to the bridge and sets it up; CONFLICT if the name exists. */
  createTap(spec: TapSpec): Promise<void>;
  deleteTap(name: string): Promise<void>;
  tapExists(name: string): Promise<boolean>;
  /** Names of tap devices whose name starts with `prefix`. */
  listTaps(prefix: string): Promise<string[]>;
  /**
   * ip_forward=1, MASQUERADE for the subnet out of other interfaces, FORWARD accept out and
   * replies in; also creates the (empty) VM firewall chains and their jumps ahead of the ACCEPTs.
   */
  ensureNat(spec: NatSpec): Promise<void>;
  /** Removes the NAT rules and the VM firewall chains (teardown). */
  removeNat(spec: NatSpec): Promise<void>;
  /**
   * Makes the tap's rules exactly `lockdownRules(spec)` (see rules.ts): nothing changes when they
   * already are; otherwise the tap is cut off while its rules are replaced (fail-closed), so a
   * lease change never leaves a moment without a binding.
   */
  lockdownVm(spec: LockdownSpec): Promise<void>;
  /** Removes every firewall rule of this tap; idempotent. */
  unlockVm(spec: { tap: string }): Promise<void>;
  /** The IPv4 address the bridge's neighbour table holds for `mac` (see neighbours.ts); undefined if none yet. */
  neighbourAddress(bridge: string, mac: string): Promise<string | undefined>;
}

/**
 * The bridge with the host's address, forwarding and NAT: what `volar setup` makes and volantd
 * restores at every start. Idempotent, like every `ensure*`.
 */
export async function ensureHostNetwork(manager: NetworkManager, net: { bridge: string; host_cidr: string }): Promise<void> {
  await manager.ensureBridge({ name: net.bridge, cidr: net.host_cidr });
  await manager.ensureNat({ bridge: net.bridge, subnet: net.host_cidr });
}

export class NoopNetworkManager implements NetworkManager {
  async ensureBridge(_spec: BridgeSpec): Promise<void> {}
  async removeBridge(_name: string): Promise<void> {}
  async createTap(_spec: TapSpec): Promise<void> {}
  async deleteTap(_name: string): Promise<void> {}
  async tapExists(_name: string): Promise<boolean> {
    return false;
  }
  async listTaps(_prefix: string): Promise<string[]> {
    return [];
  }
  async ensureNat(_spec: NatSpec): Promise<void> {}
  async removeNat(_spec: NatSpec): Promise<void> {}
  async lockdownVm(_spec: LockdownSpec): Promise<void> {}
  async unlockVm(_spec: { tap: string }): Promise<void> {}
  async neighbourAddress(_bridge: string, _mac: string): Promise<string | undefined> {
    return undefined;
  }
}
