/**
 * The small interfaces the orchestrator drives besides the store and the launcher: host
 * networking and the egress proxy. The daemon wires the real ones; tests wire real ones too
 * where they can exist here (taps in a netns). Keeping them narrow is what lets the life cycle
 * be read in one file without knowing how a tap or a firewall rule is made.
 */

import type { NetworkPolicy } from '../../shared/network-policy.js';
import type { LockdownSpec } from '../network/manager.js';
import type { CmdlineEgress } from '../vmm/cmdline.js';

/** A VM's lockdown as the orchestrator states it; the wiring adds the bridge and the host's address. */
export type VmLockdown = Omit<LockdownSpec, 'bridge' | 'hostIp'>;

/** Per-VM taps on the bridge, and the firewall rules that confine a VM with a tap. */
export interface TapNetwork {
  /** Creates the tap, attaches it to the bridge, brings it up. */
  createTap(tap: string, mac: string): Promise<void>;
  /** Idempotent: a missing tap is not an error. */
  deleteTap(tap: string): Promise<void>;
  /** Names of existing taps Volant created (its prefix). */
  listTaps(): Promise<string[]>;
  /**
   * Makes the tap's rules exactly those of `vm` (host/network/rules.ts): the spoof guard, and
   * confinement to its egress listener when it has an allowlist. Idempotent; a change (a new
   * DHCP lease) is applied fail-closed.
   */
  lockdown(vm: VmLockdown): Promise<void>;
  /** Removes every rule `lockdown` added for the tap. Idempotent. */
  unlock(tap: string): Promise<void>;
  /**
   * The address a dhcp-mode guest with this MAC announced on the bridge (neighbour table), or
   * undefined while it has not. Absent: such guests are reachable only over vsock.
   */
  guestAddress?(mac: string): Promise<string | undefined>;
}

/** The leases Volant's own DHCP server handed out (its lease file), by guest MAC. */
export interface DhcpLeaseSource {
  /** The address currently leased to `mac`, if any. */
  addressOf(mac: string): string | undefined;
  /** Calls `listener` with the MACs whose lease appeared, moved or went away; returns the unsubscribe. */
  subscribe(listener: (macs: string[]) => void): () => void;
}

/** A running per-VM egress listener, and how the guest's forwarder reaches it (`volant.egress=`). */
export interface EgressHandle {
  route: CmdlineEgress;
  close(): Promise<void>;
}

/**
 * Starts the egress listener of one VM whose workload may go out, as its network policy says:
 * the route (hybrid vsock `<socket>_3128`, or TCP on the bridge address), the peers it serves,
 * and the allowlist. `guest()` is what volantd knows of the VM now (its address changes with a
 * DHCP lease), read at each connection.
 */
export type EgressStarter = (vm: {
  name: string;
  vsockSocketPath: string;
  egress: NonNullable<NetworkPolicy['egress']>;
  guest: () => { address?: string; mac: string };
  /** The TCP port to listen on (a re-adopted VM's command line names it); default: the kernel's choice. */
  port?: number;
}) => Promise<EgressHandle>;
