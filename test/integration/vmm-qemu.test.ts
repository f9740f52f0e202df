/**
 * The QEMU launcher for real: Debian's cloud kernel (fetched once into the test kernel cache)
 * boots under TCG with a tiny busybox initramfs made here, whose /init prints a marker and the
 * command line it got on the serial console. One VM at a time, 256 MiB (the machine's two cores
 * are shared). Checks: the marker reaches the serial log; stop() ends QEMU through QMP (not a
 * signal); SIGKILL is seen through `exited`; a guest whose init dies (kernel panic) ends the
 * VMM by itself (`panic=-1` + `-no-reboot`); a start-up failure is reported with QEMU's words.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kvmDeviceUsable } from '../../host/vmm/accel.js';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { LaunchSpec, VmProcess } from '../../host/vmm/launcher.js';
import { waitForExit } from '../../host/vmm/process.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { VolantError } from '../../shared/errors.js';
import { testKernel } from '../support/kernel.js';
import { BUSYBOX, INIT_MARKER, makeTestInitramfs, waitForSerial } from '../support/vmm-initramfs.js';
import { pidsMentioning } from '../support/vmm-procs.js';

const QEMU = 'qemu-system-x86_64';

const root = mkdtempSync(join(tmpdir(), `volant-vmm-qemu-${process.pid}-`));
const started: VmProcess[] = [];
let kernelPath = '';
const initramfsPath = join(root, 'initramfs.cpio');

function spec(name: string, extra: Partial<LaunchSpec> = {}): LaunchSpec {
  const runDir = join(root, 'run', name);
  return {
    vmName: name,
    kernelPath,
    initramfsPath,
    cmdline: buildKernelCmdline({ vmName: name, network: { mode: 'vsock' }, env: { GREETING: 'hello world' } }),
    cpus: 1,
    memoryMb: 256,
    vsock: { cid: 3, socketPath: join(runDir, 'vsock.sock') },
    serialLogPath: join(root, 'logs', `${name}.serial.log`),
    runDir,
    ...extra,
  };
}

const launcher = createQemuLauncher({ binary: QEMU, accel: 'tcg', defaultStopTimeoutMs: 1500 });

describe('QEMU launcher (real kernel under TCG)', { skip: BUSYBOX ? false : 'busybox is not installed' }, () => {
  before(async () => {
    kernelPath = (await testKernel()).vmlinuz;
    makeTestInitramfs(initramfsPath, root);
  });

  after(() => {
    for (const vm of started) {
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {}
    }
    rmSync(root, { recursive: true, force: true });
  });

  it('boots: the marker and our command line reach the serial log; stop() quits through QMP', async () => {
    const s = spec('boots');
    const vm = await launcher.launch(s);
    started.push(vm);
    assert.equal(vm.kind, 'qemu');
    assert.deepEqual(vm.capabilities, { accel: 'tcg', vsock: 'none' }, 'TCG as configured; no /dev/vhost-vsock on these machines');
    const serial = await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline: .*volant\\.name=boots`), vm);
    assert.match(serial, /console=ttyS0 reboot=k panic=-1 volant\.mode=vsock volant\.name=boots volant\.env=/);
    const exit = await vm.stop({ timeoutMs: 1000 });
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.doesNotMatch(readFileSync(join(s.runDir, 'vmm.log'), 'utf8'), /terminating on signal/, 'QMP quit ended it, not SIGTERM');
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });

  it('accel auto picks an acceleration that boots on this machine (probe: /dev/kvm + a real KVM boot)', async () => {
    const s = spec('autoaccel');
    const vm = await createQemuLauncher({ binary: QEMU, accel: 'auto' }).launch(s);
    started.push(vm);
    await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline:`), vm);
    if (!kvmDeviceUsable()) assert.equal(vm.capabilities.accel, 'tcg', 'no usable /dev/kvm means TCG');
    await vm.stop({ timeoutMs: 500 });
  });

  it('SIGKILL of QEMU is seen through exited', async () => {
    const s = spec('killed');
    const vm = await launcher.launch(s);
    started.push(vm);
    process.kill(vm.pid, 'SIGKILL');
    assert.deepEqual(await vm.exited, { code: null, signal: 'SIGKILL' });
  });

  it('adopt: a new launcher finds the running QEMU by PID and stops it', async () => {
    const s = spec('adopted');
    const vm = await launcher.launch(s);
    started.push(vm);
    const fresh = createQemuLauncher({ binary: QEMU, accel: 'tcg', defaultStopTimeoutMs: 1000 });
    assert.equal(await fresh.adopt(vm.pid, spec('other')), undefined, 'the PID runs another VM');
    assert.equal(await fresh.adopt(process.pid, s), undefined);
    const adopted = await fresh.adopt(vm.pid, s);
    assert.ok(adopted);
    assert.deepEqual(adopted.capabilities, { accel: 'tcg', vsock: 'none' });
    await adopted.stop();
    assert.deepEqual(await vm.exited, { code: 0, signal: null });
  });

  it('a guest whose init dies ends the VMM on its own (panic=-1 + -no-reboot)', async () => {
    const s = spec('init-exits');
    const vm = await launcher.launch(s);
    started.push(vm);
    await waitForSerial(s.serialLogPath, /Attempted to kill init/, vm);
    assert.deepEqual(await waitForExit(vm.exited, 60_000), { code: 0, signal: null }, 'QEMU must exit by itself after the panic');
  });

  it('a kernel QEMU cannot load → VMM_FAILED quoting QEMU, no process left', async () => {
    const bogus = join(root, 'not-a-kernel');
    writeFileSync(bogus, 'garbage');
    const s = spec('badkernel', { kernelPath: bogus });
    await assert.rejects(launcher.launch(s), (e: unknown) => e instanceof VolantError && e.code === 'VMM_FAILED' && /qemu could not start VM badkernel: .*\n.*qemu/s.test(e.message));
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });

  it('a missing initramfs is NOT_FOUND before anything starts', async () => {
    const s = spec('noinitrd', { initramfsPath: join(root, 'missing.img') });
    await assert.rejects(launcher.launch(s), (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && /initramfs/.test(e.message));
    assert.equal(existsSync(s.runDir), false, 'nothing was created');
  });
});
