/**
 * The small interfaces the orchestrator drives besides the store and the launcher: host
 * networking and the egress proxy. The daemon wires the real ones; tests wire real ones too
 * where they can exist here (taps in a netns). Keeping them narrow is what lets the life cycle
 * be read in one file without knowing how a tap or a firewall rule is made.
 */

import type { NetworkMode } from '../../shared/schema/manifest.js';
import type { CmdlineEgress } from '../vmm/cmdline.js';

/** Per-VM taps on the bridge, and the firewall rules that confine a bridged VM. */
export interface TapNetwork {
  /** Creates the tap, attaches it to the bridge, brings it up. */
  createTap(tap: string, mac: string): Promise<void>;
  /** Idempotent: a missing tap is not an error. */
  deleteTap(tap: string): Promise<void>;
  /** Names of existing taps Volant created (its prefix). */
  listTaps(): Promise<string[]>;
  /**
   * Confines a bridged VM: no spoofed MAC/IP, no traffic to other VMs or out through NAT, and to
   * the host only on `egressPort` (where its egress proxy listens, if it may go out). Idempotent.
   */
  lockdown(vm: { tap: string; ip: string; mac: string; egressPort: number }): Promise<void>;
  /** Removes every rule `lockdown` added for the tap. Idempotent. */
  unlock(tap: string): Promise<void>;
  /**
   * The address a dhcp-mode guest with this MAC announced on the bridge (neighbour table), or
   * undefined while it has not. Absent: dhcp VMs are reachable only over vsock.
   */
  guestAddress?(mac: string): Promise<string | undefined>;
}

/** A running per-VM egress listener, and how the guest's forwarder reaches it (`volant.egress=`). */
export interface EgressHandle {
  route: CmdlineEgress;
  close(): Promise<void>;
}

/** Starts the egress proxy for one VM that allows outbound traffic. */
export type EgressStarter = (vm: { name: string; mode: NetworkMode; ip?: string; vsockSocketPath: string; allowedDomains: string[] }) => Promise<EgressHandle>;
