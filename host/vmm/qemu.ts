/**
 * QEMU launcher (used where Cloud Hypervisor is absent, and by the end-to-end tests). What must
 * hold:
 *
 *  - q35 with `-cpu max`; KVM only when it really boots a kernel here (accel.ts), else TCG.
 *  - Nothing implicit: `-nodefaults -no-user-config -display none`; the only devices are the
 *    serial port (appended to the per-VM log), virtio-net on the VM's tap for bridged/dhcp
 *    (vhost off: no /dev/vhost-net needed), and vhost-vsock with the VM's CID when
 *    /dev/vhost-vsock exists. QEMU has no hybrid vsock socket: with vhost-vsock the host reaches
 *    the guest by CID over AF_VSOCK: `vsockCapability()` says `af-vsock` before launch (the network
 *    policy needs it), `none` without the device.
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
import { abortFailedStart, argvContains, readProcessArgv, SupervisedVm, spawnVmm, watchAdoptedPid } from './process.js';
import { qmpExecute } from './qmp.js';
import { assertBootFiles, prepareRunDir } from './run-dir.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** Time QEMU gets to exit after QMP `quit`. */
export const QMP_QUIT_WAIT_MS = 3000;
/** How long launch waits for QMP to answer (QEMU answers once the machine is set up, before the guest runs). */
export const QMP_READY_TIMEOUT_MS = 10_000;
const QMP_READY_POLL_MS = 50;

export interface QemuOptions {
  binary?: string;
  /** config `vmm.accel`; `auto` probes once per kernel. */
  accel?: AccelSetting;
  /** Device paths checked for support (tests point them elsewhere). */
  kvmDevice?: string;
  vhostVsockDevice?: string;
  defaultStopTimeoutMs?: number;
}

/** QEMU's escaping inside `-opt key=value,...`: a literal comma is written twice. */
export const qemuOptValue = (value: string): string => value.replaceAll(',', ',,');

export const qmpSocketPath = (spec: Pick<LaunchSpec, 'runDir'>): string => join(spec.runDir, 'qmp.sock');

/** QEMU's argv for a spec and the capabilities chosen for it (pure). */
export function buildQemuArgs(spec: LaunchSpec, caps: VmmCapabilities, binary = QEMU_BINARY): string[] {
  const args = [
    binary,
    ...['-name', `guest=${qemuOptValue(spec.vmName)}`],
    ...['-M', 'q35', '-cpu', 'max', '-accel', caps.accel],
    ...['-m', String(spec.memoryMb), '-smp', String(spec.cpus)],
    ...['-kernel', spec.kernelPath, '-initrd', spec.initramfsPath, '-append', spec.cmdline],
    ...['-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot'],
    ...['-chardev', `file,id=serial0,path=${qemuOptValue(spec.serialLogPath)},append=on`, '-serial', 'chardev:serial0'],
    ...['-qmp', `unix:${qemuOptValue(qmpSocketPath(spec))},server=on,wait=off`],
  ];
  if (spec.tap) {
    args.push('-netdev', `tap,id=n0,ifname=${spec.tap.name},script=no,downscript=no,vhost=off`);
    args.push('-device', `virtio-net-pci,netdev=n0,mac=${spec.tap.mac}`);
  }
  if (caps.vsock === 'af-vsock') args.push('-device', `vhost-vsock-pci,guest-cid=${spec.vsock.cid}`);
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

  /** QEMU's vhost-vsock needs the host kernel's device; without it the VM has no vsock at all. */
  const vsockCapability = (): VsockCapability => (existsSync(vhostVsockDevice) ? 'af-vsock' : 'none');

  const supervise = (spec: LaunchSpec, pid: number, caps: VmmCapabilities, exited: VmProcess['exited'], isStillIt: () => boolean): VmProcess => {
    const qmp = qmpSocketPath(spec);
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
      const vmmLog = prepareRunDir(spec, [qmp]);
      const caps: VmmCapabilities = { accel: await resolveAccel(options.accel ?? 'auto', binary, spec.kernelPath, options.kvmDevice), vsock: vsockCapability() };
      const spawned = await spawnVmm([...(spec.commandPrefix ?? []), ...buildQemuArgs(spec, caps, binary)], vmmLog);
      let gone = false;
      void spawned.exited.then(() => {
        gone = true;
      });
      try {
        await waitForQmpReady(qmp, () => gone);
      } catch (e) {
        return abortFailedStart('qemu', spec.vmName, spawned, vmmLog, e);
      }
      return supervise(spec, spawned.pid, caps, spawned.exited, () => !gone);
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
      const caps: VmmCapabilities = { accel, vsock: argv.some((a) => a.startsWith('vhost-vsock-pci,')) ? 'af-vsock' : 'none' };
      return supervise(spec, pid, caps, watchAdoptedPid(isStillIt), isStillIt);
    },
  };
}
