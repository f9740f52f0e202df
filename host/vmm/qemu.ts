/**
 * QEMU launcher (used where Cloud Hypervisor is absent, and by the end-to-end tests). What must
 * hold:
 *
 *  - q35 with `-cpu max`; KVM only when it really boots a kernel here (accel.ts), else TCG.
 *  - Guest RAM is a shared memfd (`qemuMemoryArgs`, the one place memory is set up): a vhost-user
 *    device maps it, and with private RAM it would never see a guest write. The shared runtime
 *    image is attached read-only as virtio-pmem (device memory, also in `qemuMemoryArgs`) or as a
 *    read-only virtio-blk disk (`qemuRuntimeDiskArgs`).
 *  - Nothing implicit: `-nodefaults -no-user-config -display none`; the only devices are the
 *    serial port (appended to the per-VM log), virtio-net on the VM's tap for bridged/dhcp
 *    (vhost off: no /dev/vhost-net needed), and vsock:
 *      `vhost-user` (default, config `vmm.qemu.vsock`): vhost-user-vsock-pci served by our device
 *        back-end in its own process (vsock-backend.ts, host/vsock/device/), which exposes the
 *        VM's vsock exactly as Cloud Hypervisor does: the hybrid socket `spec.vsock.socketPath`
 *        (vsock capability `hybrid-socket`, known before launch). Started before QEMU, ended with it; if
 *        it dies the VM is killed and reported failed.
 *      `vhost-kernel`: vhost-vsock-pci with the VM's CID, where /dev/vhost-vsock exists (the host
 *        reaches the guest by CID over AF_VSOCK: `af-vsock`); without it, no vsock at all (`none`).
 *    `vsockCapability()` says which before launch: the network policy needs it.
 *  - `-no-reboot`: with the kernel's `reboot=k panic=-1`, a guest power-off, reboot or panic
 *    ends the process, so the orchestrator sees every guest death as an exit.
 *  - Stop: QMP `system_powerdown` (ACPI, the guest may shut down cleanly), then QMP `quit`, then
 *    SIGTERM, then SIGKILL.
 *  - Option values QEMU parses as `key=value,...` get commas doubled (its escaping rule).
 */

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import type { VsockCapability } from '../../shared/network-policy.js';
import { type Accel, type AccelSetting, resolveAccel } from './accel.js';
import { assertLaunchSpec, DEFAULT_STOP_TIMEOUT_MS, type LaunchSpec, type Launcher, type VmmCapabilities, type VmProcess } from './launcher.js';
import { abortFailedStart, argvContains, readProcessArgv, SIGKILL_WAIT_MS, type SpawnedVmm, SupervisedVm, spawnVmm, waitForExit, watchAdoptedPid } from './process.js';
import { qmpExecute } from './qmp.js';
import { assertBootFiles, prepareRunDir, removeStaleSocket } from './run-dir.js';
import { isLogLevel } from '../log/levels.js';
import type { Logger } from '../log/logger.js';
import {
  findVsockBackend,
  pairedExit,
  removeBackendFiles,
  startVsockBackend,
  stopVsockBackend,
  type VsockBackend,
  vhostUserSocketPath,
  vsockBackendLogPath,
} from './vsock-backend.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** Time QEMU gets to exit after QMP `quit`. */
export const QMP_QUIT_WAIT_MS = 3000;
/** How long launch waits for QMP to answer (QEMU answers once the machine is set up, before the guest runs). */
export const QMP_READY_TIMEOUT_MS = 10_000;
const QMP_READY_POLL_MS = 50;

/** config `vmm.qemu.vsock`: which vsock device QEMU gets. */
export type QemuVsockBackend = 'vhost-user' | 'vhost-kernel';

export interface QemuOptions {
  binary?: string;
  /** config `vmm.accel`; `auto` probes once per kernel. */
  accel?: AccelSetting;
  /** config `vmm.qemu.vsock`; default `vhost-user`. */
  vsock?: QemuVsockBackend;
  /** Device paths checked for support (tests point them elsewhere). */
  kvmDevice?: string;
  vhostVsockDevice?: string;
  defaultStopTimeoutMs?: number;
  /** The launcher's logger; the vsock device back-end logs at its level (into its own file). */
  log?: Logger;
}

/** QEMU's escaping inside `-opt key=value,...`: a literal comma is written twice. */
export const qemuOptValue = (value: string): string => value.replaceAll(',', ',,');

export const qmpSocketPath = (spec: Pick<LaunchSpec, 'runDir'>): string => join(spec.runDir, 'qmp.sock');

/** The id of guest RAM's memory backend. */
export const RAM_BACKEND_ID = 'ram0';
/** The id of the runtime image's backend (pmem) or drive (blk). */
export const RUNTIME_BACKEND_ID = 'rt0';
const MIB = 1024 * 1024;

/**
 * Every memory argument of a VM (pure; the one place guest memory is set up): the machine, its
 * size, and RAM as a shared memfd so a vhost-user device can map it. With the runtime image on
 * virtio-pmem (docs/runtime-image.md) the image is device memory: `maxmem` = RAM + the image
 * (QEMU refuses a memory device without room for it; one slot), a read-only private file
 * backend (`readonly=on`: O_RDONLY and a ROM mapping, so a guest write never reaches the file;
 * `size` must equal the file's length, which the builder pads to 2 MiB) and the
 * virtio-pmem-pci device. The guest then maps the host's page cache of the file (DAX).
 */
export function qemuMemoryArgs(spec: Pick<LaunchSpec, 'memoryMb' | 'runtime'>): string[] {
  const size = `${spec.memoryMb}M`;
  const pmem = spec.runtime?.device === 'pmem' ? spec.runtime : undefined;
  const mem = pmem ? `${size},slots=1,maxmem=${spec.memoryMb + Math.ceil(pmem.bytes / MIB)}M` : size;
  const args = ['-machine', `q35,memory-backend=${RAM_BACKEND_ID}`, '-m', mem, '-object', `memory-backend-memfd,id=${RAM_BACKEND_ID},size=${size},share=on`];
  if (pmem) {
    args.push('-object', `memory-backend-file,id=${RUNTIME_BACKEND_ID},mem-path=${qemuOptValue(pmem.path)},size=${pmem.bytes},share=off,readonly=on`);
    args.push('-device', `virtio-pmem-pci,memdev=${RUNTIME_BACKEND_ID},id=pmem0`);
  }
  return args;
}

/** The runtime image as a read-only virtio-blk disk (`vmm.runtime_device: blk`; pure). */
export function qemuRuntimeDiskArgs(spec: Pick<LaunchSpec, 'runtime'>): string[] {
  if (spec.runtime?.device !== 'blk') return [];
  return ['-drive', `file=${qemuOptValue(spec.runtime.path)},if=none,format=raw,readonly=on,id=${RUNTIME_BACKEND_ID}`, '-device', `virtio-blk-pci,drive=${RUNTIME_BACKEND_ID}`];
}

/** The vsock device for the capabilities chosen (pure). */
export function qemuVsockArgs(spec: Pick<LaunchSpec, 'runDir' | 'vsock'>, caps: VmmCapabilities): string[] {
  if (caps.vsock === 'hybrid-socket') return ['-chardev', `socket,id=vsock0,path=${qemuOptValue(vhostUserSocketPath(spec))}`, '-device', 'vhost-user-vsock-pci,chardev=vsock0'];
  if (caps.vsock === 'af-vsock') return ['-device', `vhost-vsock-pci,guest-cid=${spec.vsock.cid}`];
  return [];
}

/** The vsock capability of a QEMU VM, known before launch (pure). */
export function qemuVsockCapability(vsock: QemuVsockBackend, vhostKernelPresent: boolean): VsockCapability {
  if (vsock === 'vhost-user') return 'hybrid-socket';
  return vhostKernelPresent ? 'af-vsock' : 'none';
}

/** QEMU's argv for a spec and the capabilities chosen for it (pure). */
export function buildQemuArgs(spec: LaunchSpec, caps: VmmCapabilities, binary = QEMU_BINARY): string[] {
  const args = [
    binary,
    ...['-name', `guest=${qemuOptValue(spec.vmName)}`],
    ...['-cpu', 'max', '-accel', caps.accel],
    ...qemuMemoryArgs(spec),
    ...['-smp', String(spec.cpus)],
    ...['-kernel', spec.kernelPath, '-initrd', spec.initramfsPath, '-append', spec.cmdline],
    ...['-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot'],
    ...['-chardev', `file,id=serial0,path=${qemuOptValue(spec.serialLogPath)},append=on`, '-serial', 'chardev:serial0'],
    ...['-qmp', `unix:${qemuOptValue(qmpSocketPath(spec))},server=on,wait=off`],
  ];
  if (spec.tap) {
    args.push('-netdev', `tap,id=n0,ifname=${spec.tap.name},script=no,downscript=no,vhost=off`);
    args.push('-device', `virtio-net-pci,netdev=n0,mac=${spec.tap.mac}`);
  }
  args.push(...qemuRuntimeDiskArgs(spec));
  args.push(...qemuVsockArgs(spec, caps));
  return args;
}

/** Waits until QMP answers `query-status`: QEMU serves QMP only once the machine (tap, devices) is set up. */
async function waitForQmpReady(path: string, gone: () => boolean): Promise<void> {
  const deadline = Date.now() + QMP_READY_TIMEOUT_MS;
  let last = 'no socket';
  for (;;) {
    if (gone()) throw new VolantError('VMM_FAILED', 'qemu exited during start-up');
    if (Date.now() > deadline) throw new VolantError('VMM_FAILED', `qemu QMP ${path} did not answer within ${QMP_READY_TIMEOUT_MS} ms (${last})`);
    if (existsSync(path)) {
      try {
        return await qmpExecute(path, ['query-status']);
      } catch (e) {
        last = (e as Error).message;
      }
    }
    await new Promise((r) => setTimeout(r, QMP_READY_POLL_MS));
  }
}

export function createQemuLauncher(options: QemuOptions = {}): Launcher {
  const binary = options.binary ?? QEMU_BINARY;
  const defaultStopTimeoutMs = options.defaultStopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
  const vhostVsockDevice = options.vhostVsockDevice ?? '/dev/vhost-vsock';
  const vsock = options.vsock ?? 'vhost-user';
  const log = options.log;
  const deviceLogLevel = isLogLevel(log?.level) ? log.level : undefined;

  const vsockCapability = (): VsockCapability => qemuVsockCapability(vsock, existsSync(vhostVsockDevice));

  const supervise = (spec: LaunchSpec, pid: number, caps: VmmCapabilities, qemuExited: VmProcess['exited'], isStillIt: () => boolean, backend: VsockBackend | undefined): VmProcess => {
    const qmp = qmpSocketPath(spec);
    // A killed QEMU leaves its QMP socket; once it is gone the file is stale either way.
    const exited = (backend ? pairedExit({ pid, exited: qemuExited, isStillIt }, backend, spec) : qemuExited).then((x) => {
      try {
        removeStaleSocket(qmp);
      } catch {}
      return x;
    });
    return new SupervisedVm({
      kind: 'qemu',
      pid,
      capabilities: caps,
      exited,
      isStillIt,
      defaultStopTimeoutMs,
      politeSteps: (timeoutMs) => [
        { name: 'QMP system_powerdown', run: () => qmpExecute(qmp, ['system_powerdown']), waitMs: timeoutMs },
        { name: 'QMP quit', run: () => qmpExecute(qmp, ['quit']), waitMs: QMP_QUIT_WAIT_MS },
      ],
    });
  };

  return {
    kind: 'qemu',

    vsockCapability,

    async launch(spec) {
      assertLaunchSpec(spec);
      assertBootFiles(spec);
      const qmp = qmpSocketPath(spec);
      const vmmLog = prepareRunDir(spec, [qmp, vhostUserSocketPath(spec)]);
      const caps: VmmCapabilities = { accel: await resolveAccel(options.accel ?? 'auto', binary, spec.kernelPath, options.kvmDevice), vsock: vsockCapability() };
      // The device back-end first: QEMU connects to it while it sets the machine up.
      const backend = caps.vsock === 'hybrid-socket' ? await startVsockBackend(spec, { logLevel: deviceLogLevel }) : undefined;
      if (backend) log?.debug({ vm: spec.vmName, pid: backend.pid, log: vsockBackendLogPath(spec) }, 'vsock device back-end started');
      let spawned: SpawnedVmm;
      try {
        spawned = await spawnVmm([...(spec.commandPrefix ?? []), ...buildQemuArgs(spec, caps, binary)], vmmLog);
      } catch (e) {
        if (backend) await stopVsockBackend(backend, spec);
        throw e;
      }
      let gone = false;
      void spawned.exited.then(() => {
        gone = true;
      });
      try {
        await waitForQmpReady(qmp, () => gone);
      } catch (e) {
        if (backend) await stopVsockBackend(backend, spec);
        return abortFailedStart('qemu', spec.vmName, spawned, vmmLog, e);
      }
      return supervise(spec, spawned.pid, caps, spawned.exited, () => !gone, backend);
    },

    async adopt(pid, spec) {
      const needle = ['-qmp', `unix:${qemuOptValue(qmpSocketPath(spec))},server=on,wait=off`];
      const isStillIt = (): boolean => {
        const argv = readProcessArgv(pid);
        return argv !== undefined && argvContains(argv, needle);
      };
      const argv = readProcessArgv(pid);
      if (!argv || !argvContains(argv, needle)) return undefined;
      const accelAt = argv.indexOf('-accel');
      const accel: Accel = argv[accelAt + 1] === 'kvm' ? 'kvm' : 'tcg';
      const device = argv.find((a) => a.startsWith('vhost-user-vsock-pci,') || a.startsWith('vhost-vsock-pci,'));
      const caps: VmmCapabilities = { accel, vsock: device === undefined ? 'none' : device.startsWith('vhost-user') ? 'hybrid-socket' : 'af-vsock' };
      let backend: VsockBackend | undefined;
      if (caps.vsock === 'hybrid-socket') {
        backend = findVsockBackend(spec);
        if (!backend) {
          // Its device is gone: the VM cannot be reached or serve its guest. End it here, so the
          // caller's "VMM gone" path leaves nothing behind.
          log?.warn({ vm: spec.vmName, pid }, 'QEMU runs without its vsock device back-end: killed');
          try {
            process.kill(pid, 'SIGKILL');
          } catch {}
          await waitForExit(watchAdoptedPid(isStillIt), SIGKILL_WAIT_MS);
          removeBackendFiles(spec);
          return undefined;
        }
      }
      return supervise(spec, pid, caps, watchAdoptedPid(isStillIt), isStillIt, backend);
    },
  };
}
