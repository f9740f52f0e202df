/**
 * Which acceleration QEMU gets. `/dev/kvm` existing is not enough: on some hosts (nested, odd
 * MSR support) QEMU aborts or a stock kernel hangs under KVM (as on the 2-core test machines). So
 * `auto` means: /dev/kvm opens read-write AND the VM's kernel, booted under KVM without an
 * initramfs, gets as far as looking for its root file system (then panics, and `-no-reboot`
 * turns that into an exit). Anything else within the time limit means TCG. The answer is cached
 * per QEMU binary and kernel for the life of the process.
 */

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnVmm, waitForExit } from './process.js';

export type AccelSetting = 'auto' | 'kvm' | 'tcg';
export type Accel = 'kvm' | 'tcg';

/** A stock kernel reaches its root mount in well under a second under KVM. */
export const KVM_PROBE_TIMEOUT_MS = 15_000;
const KVM_PROBE_MEMORY_MB = 128;

/** True when the serial output shows the kernel booted to the point of mounting a root fs. */
export function kvmProbeBooted(serial: string): boolean {
  return /Linux version/.test(serial) && /(VFS: Unable to mount root fs|Run \/init|No working init found)/.test(serial);
}

export function kvmDeviceUsable(path = '/dev/kvm'): boolean {
  try {
    closeSync(openSync(path, 'r+'));
    return true;
  } catch {
    return false;
  }
}

async function probeKvmBoot(qemuBinary: string, kernelPath: string): Promise<boolean> {
  const dir = mkdtempSync(join(tmpdir(), `volant-kvm-probe-${process.pid}-`));
  const serial = join(dir, 'serial.log');
  try {
    const { pid, exited } = await spawnVmm(
      [
        qemuBinary,
        ...['-M', 'q35', '-cpu', 'max', '-accel', 'kvm', '-m', String(KVM_PROBE_MEMORY_MB), '-kernel', kernelPath],
        ...['-append', 'console=ttyS0 panic=-1', '-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot', '-serial', `file:${serial}`],
      ],
      join(dir, 'qemu.log'),
    );
    if (!(await waitForExit(exited, KVM_PROBE_TIMEOUT_MS))) {
      process.kill(pid, 'SIGKILL');
      await exited;
    }
    return kvmProbeBooted(readFileSync(serial, { encoding: 'utf8', flag: 'a+' }));
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const cache = new Map<string, Promise<Accel>>();

/** The acceleration for VMs of this kernel: the setting when forced, else the (cached) probe. */
export function resolveAccel(setting: AccelSetting, qemuBinary: string, kernelPath: string, kvmDevice = '/dev/kvm'): Promise<Accel> {
  if (setting !== 'auto') return Promise.resolve(setting);
  const key = `${qemuBinary}\0${kernelPath}\0${kvmDevice}`;
  let answer = cache.get(key);
  if (!answer) {
    answer = kvmDeviceUsable(kvmDevice) ? probeKvmBoot(qemuBinary, kernelPath).then((ok) => (ok ? 'kvm' : 'tcg')) : Promise.resolve('tcg');
    cache.set(key, answer);
  }
  return answer;
}
