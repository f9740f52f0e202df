/**
 * The orchestrator's `TapNetwork` over host/network's `NetworkManager`: taps on the configured
 * bridge, named by shared `tapName` (prefix `vt`), and the per-VM lockdown with the host's bridge
 * address. Taps Volant did not name are never listed, so reconcile cannot delete foreign devices.
 */

import { formatIPv4, type Cidr } from '../../shared/ipv4.js';
import type { NetworkManager } from '../network/manager.js';
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
