/**
 * The orchestrator's `TapNetwork` over host/network's `NetworkManager`: taps on the configured
 * bridge, named by shared `tapName` (prefix `vt`), and the per-VM lockdown with the host's bridge
 * address. Taps Volant did not name are never listed, so reconcile cannot delete foreign devices.
 * `restoreHostNetwork` brings back the bridge and NAT the taps hang off at every start.
 */

import { formatIPv4, type Cidr } from '../../shared/ipv4.js';
import type { NetworkConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { ensureHostNetwork, type NetworkManager } from '../network/manager.js';
import type { TapNetwork } from '../orchestrator/ports.js';

/** Every tap `tapName` makes starts with this... */
export const VOLANT_TAP_PREFIX = 'vt';
/** ...and has exactly this shape (shared/names.ts), which is what reconcile trusts. */
export const VOLANT_TAP_NAME = /^vt[a-z0-9]{0,4}-[a-z2-7]{8}$/;

export function tapNetwork(manager: NetworkManager, bridge: string, hostCidr: Cidr): TapNetwork {
  const hostIp = formatIPv4(hostCidr.address);
  return {
    createTap: (tap, mac) => manager.createTap({ name: tap, mac, bridge }),
    deleteTap: (tap) => manager.deleteTap(tap),
    listTaps: async () => (await manager.listTaps(VOLANT_TAP_PREFIX)).filter((t) => VOLANT_TAP_NAME.test(t)),
    lockdown: (vm) => manager.lockdownVm({ ...vm, bridge, hostIp }),
    unlock: (tap) => manager.unlockVm({ tap }),
    guestAddress: (mac) => manager.neighbourAddress(bridge, mac),
  };
}

/**
 * The bridge, its address, forwarding and NAT, restored at every start (what `volar setup` made
 * does not survive a reboot). Idempotent. A failure (not root, no iptables) is logged, not fatal:
 * vsock VMs need none of it, and bridged or dhcp VMs then fail with the tap error that says why.
 */
export async function restoreHostNetwork(manager: NetworkManager, net: Pick<NetworkConfig, 'bridge' | 'host_cidr'>, log: Logger): Promise<boolean> {
  const where = { bridge: net.bridge, host_cidr: net.host_cidr };
  try {
    await ensureHostNetwork(manager, net);
    log.info(where, `bridge ${net.bridge} ${net.host_cidr} up, forwarding and NAT in place`);
    return true;
  } catch (e) {
    log.warn({ ...where, err: e }, `cannot restore bridge ${net.bridge} ${net.host_cidr} and its NAT: ${(e as Error).message}; bridged and dhcp VMs fail until it exists (run volantd as root, or \`volar setup\`)`);
    return false;
  }
}
