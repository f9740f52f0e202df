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
  /** The VM's leased address. */
  ip: string;
  /** The guest's MAC; when given, frames with any other source MAC are dropped. */
  mac?: string;
  bridge: string;
  /** The host's address on the bridge, where the egress proxy listens. */
  hostIp: string;
  egressPort: number;
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
  /** Restricts a bridged VM to the egress port on the host's bridge address (see rules.ts). */
  lockdownVm(spec: LockdownSpec): Promise<void>;
  /** Removes every firewall rule of this tap; idempotent. */
  unlockVm(spec: { tap: string }): Promise<void>;
  /** The IPv4 address the bridge's neighbour table holds for `mac` (see neighbours.ts); undefined if none yet. */
  neighbourAddress(bridge: string, mac: string): Promise<string | undefined>;
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
