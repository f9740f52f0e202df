/**
 * The one interface every VMM implementation serves (one file per VMM beside this one). A
 * launcher turns a `LaunchSpec` into a running VMM process it supervises: it owns the process,
 * the serial log file, and graceful-then-forced shutdown. The orchestrator never spawns a VMM
 * itself and never needs to know which one runs.
 */

import { isAbsolute } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import { MAX_IFNAME_BYTES } from '../../shared/names.js';
import type { VsockCapability } from '../../shared/network-policy.js';
import { RUNTIME_ALIGN_BYTES, type RuntimeDevice } from '../../shared/runtime-image.js';
import { FIRST_GUEST_CID, MAX_GUEST_CID, MAX_UNIX_SOCKET_PATH_BYTES } from '../../shared/vsock.js';

export type VmmKind = 'cloud-hypervisor' | 'qemu';

/** Limits a launch spec is held to (both VMMs accept far more; these keep a typo from hurting the host). */
export const MAX_VCPUS = 64;
export const MIN_MEMORY_MB = 64;
export const MAX_MEMORY_MB = 256 * 1024;
/** How long `stop()` lets the guest shut down before forcing the VMM, unless told otherwise. */
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

export interface LaunchSpec {
  vmName: string;
  kernelPath: string;
  initramfsPath: string;
  /** The full kernel command line (console, ip=, volant.* keys). */
  cmdline: string;
  cpus: number;
  memoryMb: number;
  /** Present for bridged and dhcp VMs: the tap already exists and is attached to the bridge. */
  tap?: { name: string; mac: string };
  /** Always present: the VM's vsock CID and the hybrid-vsock Unix socket path. */
  vsock: { cid: number; socketPath: string };
  /** The guest's serial console goes here (QEMU appends; Cloud Hypervisor starts it afresh and the launcher keeps the previous one as `.1`). */
  serialLogPath: string;
  /** A private directory for the VMM's sockets and files (API socket, QMP, event monitor). */
  runDir: string;
  /**
   * The shared runtime image (docs/runtime-image.md), attached read-only: `pmem` = virtio-pmem
   * (QEMU: a read-only memory-backend-file; Cloud Hypervisor: pmem with discard_writes), `blk` = a
   * read-only virtio-blk disk. Absent for `single`-layout images. The command line must name the
   * same device (`volant.runtime=`).
   */
  runtime?: { path: string; bytes: number; device: RuntimeDevice };
  /** Extra environment/command prefix, e.g. `['ip','netns','exec','ns']` for tests. */
  commandPrefix?: string[];
}

export interface VmmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why the VMM ended when the launcher ended it (e.g. its vsock device died). */
  detail?: string;
}

export interface VmmCapabilities {
  /** How the guest CPU runs. */
  accel: 'kvm' | 'tcg';
  /**
   * The guest's vsock device and how the host reaches it: `hybrid-socket` = through
   * `vsock.socketPath` (Cloud Hypervisor's own device; under QEMU our vhost-user back-end,
   * host/vsock/device/); `af-vsock` = by CID through the host kernel (QEMU vhost-vsock);
   * `none` = no vsock device.
   */
  vsock: VsockCapability;
}

export interface VmProcess {
  readonly kind: VmmKind;
  readonly pid: number;
  readonly capabilities: VmmCapabilities;
  /**
   * Resolves once the VMM process has exited, whatever the reason (guest power-off, reboot or
   * panic, crash, signal). For an adopted VMM (not our child) code and signal are null.
   */
  readonly exited: Promise<VmmExit>;
  /**
   * Idempotent. Asks the VMM to stop the guest (QEMU: ACPI powerdown, waiting up to `timeoutMs`,
   * then QMP quit; Cloud Hypervisor: vm.shutdown then vmm.shutdown), then SIGTERM, then SIGKILL
   * (process.ts names the waits). Resolves with the exit; rejects only if SIGKILL did not work.
   */
  stop(options?: { timeoutMs?: number }): Promise<VmmExit>;
}

export interface Launcher {
  readonly kind: VmmKind;
  /**
   * The vsock capability a VM launched now would have, known before launch: the network policy
   * needs it for `ip=`, the agent transport and the egress route.
   */
  vsockCapability(): VsockCapability;
  launch(spec: LaunchSpec): Promise<VmProcess>;
  /**
   * Re-attaches to a VMM that was started by an earlier volantd and still runs (after a daemon
   * restart). Returns undefined when `pid` is not that VM's VMM any more.
   */
  adopt(pid: number, spec: LaunchSpec): Promise<VmProcess | undefined>;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IFNAME = new RegExp(`^[A-Za-z0-9_.-]{1,${MAX_IFNAME_BYTES}}$`);
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Checks a spec before anything is spawned or deleted; every launcher calls it first. Paths must be
 * absolute and free of control characters (and commas: both VMMs split option strings on them).
 */
export function assertLaunchSpec(spec: LaunchSpec): void {
  const bad = (what: string, allowed: string): never => {
    throw new VolantError('INVALID_ARGUMENT', `launch spec for ${JSON.stringify(String(spec?.vmName).slice(0, 64))}: ${what} (${allowed})`);
  };
  const path = (name: string, value: unknown, socket = false): void => {
    if (typeof value !== 'string' || !isAbsolute(value) || CONTROL.test(value) || value.includes(',')) {
      bad(`${name} ${JSON.stringify(value)} is not usable`, 'an absolute path without control characters or commas');
    }
    if (socket && Buffer.byteLength(value as string) > MAX_UNIX_SOCKET_PATH_BYTES) bad(`${name} is too long for a Unix socket`, `at most ${MAX_UNIX_SOCKET_PATH_BYTES} bytes`);
  };
  const int = (name: string, value: unknown, min: number, max: number): void => {
    if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) bad(`${name} ${JSON.stringify(value)} is out of range`, `an integer ${min}..${max}`);
  };
  path('kernelPath', spec.kernelPath);
  path('initramfsPath', spec.initramfsPath);
  path('serialLogPath', spec.serialLogPath);
  path('runDir', spec.runDir);
  if (typeof spec.cmdline !== 'string' || CONTROL.test(spec.cmdline)) bad('cmdline is not a single line', 'build it with buildKernelCmdline');
  int('cpus', spec.cpus, 1, MAX_VCPUS);
  int('memoryMb', spec.memoryMb, MIN_MEMORY_MB, MAX_MEMORY_MB);
  if (spec.runtime !== undefined) {
    path('runtime.path', spec.runtime.path);
    if (spec.runtime.device !== 'pmem' && spec.runtime.device !== 'blk') bad(`runtime.device ${JSON.stringify(spec.runtime.device)} is not usable`, 'pmem or blk');
    if (!Number.isInteger(spec.runtime.bytes) || spec.runtime.bytes <= 0 || spec.runtime.bytes % RUNTIME_ALIGN_BYTES !== 0) {
      bad(`runtime.bytes ${JSON.stringify(spec.runtime.bytes)} is not usable`, `a positive multiple of ${RUNTIME_ALIGN_BYTES} (the image is padded to 2 MiB)`);
    }
  }
  int('vsock.cid', spec.vsock?.cid, FIRST_GUEST_CID, MAX_GUEST_CID);
  path('vsock.socketPath', spec.vsock?.socketPath, true);
  if (spec.tap !== undefined) {
    if (typeof spec.tap.name !== 'string' || !IFNAME.test(spec.tap.name)) bad(`tap name ${JSON.stringify(spec.tap.name)} is not an interface name`, `1-${MAX_IFNAME_BYTES} of letters, digits, '_', '.', '-'`);
    if (typeof spec.tap.mac !== 'string' || !MAC.test(spec.tap.mac)) bad(`tap MAC ${JSON.stringify(spec.tap.mac)} is not usable`, 'six lower-case hex pairs separated by colons');
  }
  if (spec.commandPrefix !== undefined && (!Array.isArray(spec.commandPrefix) || spec.commandPrefix.some((a) => typeof a !== 'string'))) {
    bad('commandPrefix is not a list of strings', 'e.g. ["ip", "netns", "exec", "ns"]');
  }
}
