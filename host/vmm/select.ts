/**
 * Which VMM runs the VMs (config `vmm.prefer`). `auto` takes Cloud Hypervisor when its binary is
 * on PATH and /dev/kvm is usable (it cannot run without KVM), else QEMU. A VMM asked for by name
 * that is not installed, no VMM at all, or a missing kernel/initramfs is a clear error at
 * start-up rather than a failure at the first VM (boot files: run-dir.ts `assertBootFiles`). The decision is a pure function; looking at
 * PATH and devices happens at the edge.
 */

import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import { type AccelSetting, kvmDeviceUsable } from './accel.js';
import { CLOUD_HYPERVISOR_BINARY, createCloudHypervisorLauncher } from './cloud-hypervisor.js';
import type { Launcher, VmmKind } from './launcher.js';
import { createQemuLauncher, QEMU_BINARY, type QemuVsockBackend } from './qemu.js';
import { assertBootFiles } from './run-dir.js';
import type { Logger } from '../log/logger.js';

export type VmmPreference = 'auto' | VmmKind;

export interface VmmAvailability {
  cloudHypervisor: boolean;
  qemu: boolean;
  kvm: boolean;
}

const INSTALL_HINT = 'install qemu-system-x86 (apt-get install qemu-system-x86) or put cloud-hypervisor on PATH';

/** The VMM for a preference and what the host has (pure). */
export function chooseVmm(prefer: VmmPreference, available: VmmAvailability): VmmKind {
  switch (prefer) {
    case 'cloud-hypervisor':
      if (!available.cloudHypervisor) throw new VolantError('NOT_FOUND', `vmm.prefer is cloud-hypervisor but ${CLOUD_HYPERVISOR_BINARY} is not on PATH`);
      if (!available.kvm) throw new VolantError('NOT_SUPPORTED', 'vmm.prefer is cloud-hypervisor but /dev/kvm cannot be opened; Cloud Hypervisor needs KVM (use vmm.prefer: qemu)');
      return 'cloud-hypervisor';
    case 'qemu':
      if (!available.qemu) throw new VolantError('NOT_FOUND', `vmm.prefer is qemu but ${QEMU_BINARY} is not on PATH; ${INSTALL_HINT}`);
      return 'qemu';
    case 'auto':
      if (available.cloudHypervisor && available.kvm) return 'cloud-hypervisor';
      if (available.qemu) return 'qemu';
      throw new VolantError('NOT_FOUND', `no VMM found: neither ${CLOUD_HYPERVISOR_BINARY} (with usable /dev/kvm) nor ${QEMU_BINARY} is available; ${INSTALL_HINT}`);
    default:
      throw new VolantError('INVALID_ARGUMENT', `vmm.prefer ${JSON.stringify(prefer)} is not one of auto, cloud-hypervisor, qemu`);
  }
}

/** The absolute path of an executable `binary` on `searchPath`, or undefined. */
export function findOnPath(binary: string, searchPath = process.env.PATH ?? ''): string | undefined {
  const candidates = isAbsolute(binary) ? [binary] : searchPath.split(delimiter).filter(isAbsolute).map((dir) => join(dir, binary));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

export interface SelectLauncherOptions {
  prefer: VmmPreference;
  accel: AccelSetting;
  /** config `vmm.qemu.vsock` (QEMU only). */
  qemuVsock?: QemuVsockBackend;
  /** Checked when given, so a missing kernel stops start-up. */
  kernelPath?: string;
  searchPath?: string;
  kvmDevice?: string;
  /** The launchers' logger (the QEMU launcher's vsock device back-end logs at its level). */
  log?: Logger;
}

/** The launcher for this host and config. */
export function selectLauncher(opts: SelectLauncherOptions): Launcher {
  if (opts.kernelPath !== undefined) assertBootFiles({ kernelPath: opts.kernelPath });
  const ch = findOnPath(CLOUD_HYPERVISOR_BINARY, opts.searchPath);
  const qemu = findOnPath(QEMU_BINARY, opts.searchPath);
  const kind = chooseVmm(opts.prefer, { cloudHypervisor: ch !== undefined, qemu: qemu !== undefined, kvm: kvmDeviceUsable(opts.kvmDevice) });
  return kind === 'cloud-hypervisor'
    ? createCloudHypervisorLauncher({ binary: ch })
    : createQemuLauncher({ binary: qemu, accel: opts.accel, log: opts.log, ...(opts.qemuVsock ? { vsock: opts.qemuVsock } : {}), ...(opts.kvmDevice ? { kvmDevice: opts.kvmDevice } : {}) });
}
