/**
 * What the API shows of stored records: snake_case JSON, no internal fields. Pure mappings.
 */

import { requestOf } from '../orchestrator/orchestrator.js';
import type { InstalledPlugin } from '../orchestrator/plugin-images.js';
import type { VmRecord } from '../store/vms.js';
import type { PluginView, VmView } from './schemas.js';

/** `discovered` is a dhcp guest's address as seen on the bridge (no lease exists for it). */
export function vmView(vm: VmRecord, discovered?: string): VmView {
  const v: VmView = {
    name: vm.name,
    plugin: vm.plugin,
    state: vm.state,
    network_mode: vm.mode,
    created_at: vm.createdAt,
    updated_at: vm.updatedAt,
  };
  const req = requestOf(vm);
  v.cid = vm.cid;
  v.mac = vm.mac;
  if (vm.error !== null) v.error = vm.error;
  if (vm.ip !== null) v.ip = vm.ip;
  const guestIp = vm.ip ?? discovered;
  if (guestIp !== undefined) v.guest_ip = guestIp;
  if (vm.tap !== null) v.tap = vm.tap;
  if (vm.pid !== null) v.pid = vm.pid;
  if (vm.vmm !== null) v.vmm = vm.vmm;
  if (req.cpus !== undefined) v.cpus = req.cpus;
  if (req.memory_mb !== undefined) v.memory_mb = req.memory_mb;
  return v;
}

export function pluginView(p: InstalledPlugin): PluginView {
  const v: PluginView = {
    name: p.name,
    version: p.version,
    initramfs_path: p.initramfsPath,
    installed_at: p.installedAt,
    manifest: p.manifest,
  };
  if (p.manifest.description !== undefined) v.description = p.manifest.description;
  if (p.manifest.network?.mode !== undefined) v.network_mode = p.manifest.network.mode;
  return v;
}
