/**
 * Cloud Hypervisor launcher. The VMM starts empty with `--api-socket` (and `--event-monitor`),
 * then gets the VM over its REST API: `vm.create` with a `VmConfig` body, then `vm.boot`.
 * What must hold:
 *
 *  - The body is built by a pure function and validates against `VmConfig` in the project's
 *    OpenAPI spec (a test checks every mode): payload, cpus, memory in bytes, one virtio-net on
 *    the VM's tap for bridged/dhcp, vsock always (hybrid vsock on `spec.vsock.socketPath`),
 *    serial to the per-VM log file, virtio console off, and the shared runtime image read-only
 *    (`pmem` with `discard_writes`, or a read-only disk).
 *  - A stale vsock or API socket from an earlier run is removed before launch.
 *  - Cloud Hypervisor creates the serial file afresh (`File::create`, it truncates), unlike
 *    QEMU's `append=on`; so the previous boot's serial log is kept as `<serialLogPath>.1`.
 *  - Stop: `vm.shutdown`, `vmm.shutdown` (the VMM process stays up after the first), then
 *    SIGTERM, then SIGKILL.
 *  - A guest reboot or panic ends the VMM as with QEMU's `-no-reboot`: Cloud Hypervisor would
 *    reboot the VM in place, so the launcher watches its event monitor for `vm/rebooting` and
 *    then sends `vmm.shutdown` (cloud-hypervisor-events.ts).
 *  - Cloud Hypervisor needs KVM, so a VM it runs always has accel `kvm` and vsock.
 */

import { renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chApiCall, chApiExpectOk, waitForChApi } from './cloud-hypervisor-api.js';
import { currentSize, watchChEvents } from './cloud-hypervisor-events.js';
import { assertLaunchSpec, DEFAULT_STOP_TIMEOUT_MS, type LaunchSpec, type Launcher, type VmProcess } from './launcher.js';
import { abortFailedStart, argvContains, readProcessArgv, SupervisedVm, spawnVmm, watchAdoptedPid } from './process.js';
import { assertBootFiles, prepareRunDir } from './run-dir.js';

export const CLOUD_HYPERVISOR_BINARY = 'cloud-hypervisor';
/** Time the VMM gets to exit after `vmm.shutdown`. */
export const VMM_SHUTDOWN_WAIT_MS = 2000;
/** virtio-net: one RX/TX queue pair of CH's default size. */
const NET_QUEUES = 2;
const NET_QUEUE_SIZE = 256;
/** The id of the runtime image's pmem device or disk. */
const RUNTIME_DEVICE_ID = 'runtime';

export interface CloudHypervisorOptions {
  /** The VMM binary (a test double in tests); default `cloud-hypervisor` from PATH. */
  binary?: string;
  defaultStopTimeoutMs?: number;
}

export const chApiSocketPath = (spec: Pick<LaunchSpec, 'runDir'>): string => join(spec.runDir, 'ch-api.sock');
export const chEventMonitorPath = (spec: Pick<LaunchSpec, 'runDir'>): string => join(spec.runDir, 'ch-events.json');

/** The `vm.create` body for a spec (pure). */
export function buildVmCreateBody(spec: LaunchSpec): Record<string, unknown> {
  const body: Record<string, unknown> = {
    payload: { kernel: spec.kernelPath, initramfs: spec.initramfsPath, cmdline: spec.cmdline },
    cpus: { boot_vcpus: spec.cpus, max_vcpus: spec.cpus },
    memory: { size: spec.memoryMb * 1024 * 1024 },
    vsock: { cid: spec.vsock.cid, socket: spec.vsock.socketPath },
    serial: { mode: 'File', file: spec.serialLogPath },
    console: { mode: 'Off' },
  };
  if (spec.tap) body.net = [{ tap: spec.tap.name, mac: spec.tap.mac, num_queues: NET_QUEUES, queue_size: NET_QUEUE_SIZE }];
  // The shared runtime image, read-only: pmem with discard_writes (CH opens the file O_RDONLY and
  // maps it private into a read-only memslot; size = the file's, a 2 MiB multiple), or a disk.
  if (spec.runtime?.device === 'pmem') body.pmem = [{ file: spec.runtime.path, discard_writes: true, id: RUNTIME_DEVICE_ID }];
  if (spec.runtime?.device === 'blk') body.disks = [{ path: spec.runtime.path, readonly: true, id: RUNTIME_DEVICE_ID }];
  return body;
}

/** The VMM's argv (after any command prefix); pure. */
export function buildCloudHypervisorArgs(spec: LaunchSpec, binary = CLOUD_HYPERVISOR_BINARY): string[] {
  return [binary, '--api-socket', `path=${chApiSocketPath(spec)}`, '--event-monitor', `path=${chEventMonitorPath(spec)}`];
}

/** Moves a non-empty serial log to `<path>.1` (replacing an older one) before CH truncates it. */
function keepPreviousSerialLog(path: string): void {
  try {
    if (statSync(path).size > 0) renameSync(path, `${path}.1`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

export function createCloudHypervisorLauncher(options: CloudHypervisorOptions = {}): Launcher {
  const binary = options.binary ?? CLOUD_HYPERVISOR_BINARY;
  const defaultStopTimeoutMs = options.defaultStopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;

  const supervise = (spec: LaunchSpec, pid: number, exited: VmProcess['exited'], isStillIt: () => boolean, eventsFrom: number): VmProcess => {
    const api = chApiSocketPath(spec);
    const unwatch = watchChEvents(
      chEventMonitorPath(spec),
      (e) => {
        if (e.source === 'vm' && e.event === 'rebooting') void chApiCall(api, 'PUT', 'vmm.shutdown').catch(() => undefined);
      },
      eventsFrom,
    );
    void exited.then(unwatch);
    return new SupervisedVm({
      kind: 'cloud-hypervisor',
      pid,
      capabilities: { accel: 'kvm', vsock: 'hybrid-socket' },
      exited,
      isStillIt,
      defaultStopTimeoutMs,
      politeSteps: (timeoutMs) => [
        { name: 'vm.shutdown', run: async () => void (await chApiExpectOk(api, 'PUT', 'vm.shutdown')), waitMs: 0 },
        { name: 'vmm.shutdown', run: async () => void (await chApiCall(api, 'PUT', 'vmm.shutdown')), waitMs: Math.max(timeoutMs, VMM_SHUTDOWN_WAIT_MS) },
      ],
    });
  };

  return {
    kind: 'cloud-hypervisor',

    vsockCapability: () => 'hybrid-socket',

    async launch(spec) {
      assertLaunchSpec(spec);
      assertBootFiles(spec);
      const api = chApiSocketPath(spec);
      const vmmLog = prepareRunDir(spec, [api]);
      rmSync(chEventMonitorPath(spec), { force: true });
      keepPreviousSerialLog(spec.serialLogPath);
      const argv = [...(spec.commandPrefix ?? []), ...buildCloudHypervisorArgs(spec, binary)];
      const spawned = await spawnVmm(argv, vmmLog);
      let gone = false;
      void spawned.exited.then(() => {
        gone = true;
      });
      const vm = supervise(spec, spawned.pid, spawned.exited, () => !gone, 0);
      try {
        await waitForChApi(api, () => gone);
        await chApiExpectOk(api, 'PUT', 'vm.create', buildVmCreateBody(spec));
        await chApiExpectOk(api, 'PUT', 'vm.boot');
      } catch (e) {
        return abortFailedStart('cloud-hypervisor', spec.vmName, spawned, vmmLog, e);
      }
      return vm;
    },

    async adopt(pid, spec) {
      const api = chApiSocketPath(spec);
      const needle = ['--api-socket', `path=${api}`];
      const isStillIt = (): boolean => {
        const argv = readProcessArgv(pid);
        return argv !== undefined && argvContains(argv, needle);
      };
      if (!isStillIt()) return undefined;
      try {
        await chApiExpectOk(api, 'GET', 'vmm.ping');
      } catch {
        return undefined;
      }
      return supervise(spec, pid, watchAdoptedPid(isStillIt), isStillIt, currentSize(chEventMonitorPath(spec)));
    },
  };
}
