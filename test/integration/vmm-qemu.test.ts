/**
 * The QEMU launcher for real: Debian's cloud kernel (fetched once into the test kernel cache)
 * boots under TCG with a tiny busybox initramfs made here, whose /init prints a marker and the
 * command line it got on the serial console. One VM at a time, 256 MiB (the machine's two cores
 * are shared). Checks: the marker reaches the serial log; stop() ends QEMU through QMP (not a
 * signal); SIGKILL is seen through `exited`; a guest whose init dies (kernel panic) ends the
 * VMM by itself (`panic=-1` + `-no-reboot`); a start-up failure is reported with QEMU's words.
 *
 * Every VM gets the vhost-user vsock device back-end (its own process) by default: QEMU connects
 * to it at start-up even though this guest never loads a vsock driver, so the pair's life cycle
 * is checked here (kill -9 of either end, adoption); the data path is the e2e suite's.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kvmDeviceUsable } from '../../host/vmm/accel.js';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { LaunchSpec, VmProcess } from '../../host/vmm/launcher.js';
import { spawnVmm, waitForExit } from '../../host/vmm/process.js';
import { buildQemuArgs, createQemuLauncher } from '../../host/vmm/qemu.js';
import { VolantError } from '../../shared/errors.js';
import { testKernel } from '../support/kernel.js';
import { BUSYBOX, INIT_MARKER, makeTestInitramfs, waitForSerial } from '../support/vmm-initramfs.js';
import { findVsockBackend, startVsockBackend, vhostUserSocketPath } from '../../host/vmm/vsock-backend.js';
import { eventually } from '../support/eventually.js';
import { isAlive, pidsMentioning } from '../support/vmm-procs.js';
import { skipUnlessStrict } from '../support/strict.js';

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
const HYBRID = { accel: 'tcg', vsock: 'hybrid-socket' } as const;

/** Files left in a run directory besides logs (sockets, pid files). */
function leftovers(runDir: string): string[] {
  return existsSync(runDir) ? readdirSync(runDir).filter((f) => !f.endsWith('.log') && !f.endsWith('.metrics.json')) : [];
}

describe('QEMU launcher (real kernel under TCG)', { skip: skipUnlessStrict(BUSYBOX ? false : 'busybox is not installed') }, () => {
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
    assert.deepEqual(vm.capabilities, HYBRID, 'TCG as configured; vsock through the vhost-user device and its hybrid socket');
    assert.ok(existsSync(s.vsock.socketPath), 'the hybrid socket exists while the VM runs');
    const serial = await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline: .*volant\\.name=boots`), vm);
    assert.match(serial, /console=ttyS0 reboot=k panic=-1 volant\.mode=vsock volant\.name=boots volant\.env=/);
    assert.ok(!existsSync(vhostUserSocketPath(s)), 'the vhost-user socket is gone once QEMU connected');
    const exit = await vm.stop({ timeoutMs: 1000 });
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.doesNotMatch(readFileSync(join(s.runDir, 'vmm.log'), 'utf8'), /terminating on signal/, 'QMP quit ended it, not SIGTERM');
    assert.deepEqual(pidsMentioning(s.runDir), [], 'QEMU and its vsock device are gone');
    assert.deepEqual(leftovers(s.runDir), [], 'no socket or pid file is left');
  });

  it('accel auto picks an acceleration that boots on this machine (probe: /dev/kvm + a real KVM boot)', async () => {
    const s = spec('autoaccel');
    const vm = await createQemuLauncher({ binary: QEMU, accel: 'auto' }).launch(s);
    started.push(vm);
    await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline:`), vm);
    if (!kvmDeviceUsable()) assert.equal(vm.capabilities.accel, 'tcg', 'no usable /dev/kvm means TCG');
    await vm.stop({ timeoutMs: 500 });
  });

  it('SIGKILL of QEMU is seen through exited; its vsock device exits by itself', async () => {
    const s = spec('killed');
    const vm = await launcher.launch(s);
    started.push(vm);
    const backend = findVsockBackend(s);
    assert.ok(backend, 'the vsock device runs beside QEMU');
    await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline:`), vm);
    process.kill(vm.pid, 'SIGKILL');
    assert.deepEqual(await vm.exited, { code: null, signal: 'SIGKILL' });
    assert.equal(isAlive(backend.pid), false, 'the device back-end is gone');
    assert.match(readFileSync(join(s.runDir, 'vsock-device.log'), 'utf8'), /ends: the VMM closed the vhost-user connection/, 'it ended on its own, not by a signal');
    assert.deepEqual(pidsMentioning(s.runDir), []);
    assert.deepEqual(leftovers(s.runDir), []);
  });

  it('SIGKILL of the vsock device ends QEMU and reports a failure, leaving nothing', async () => {
    const s = spec('devkilled');
    const vm = await launcher.launch(s);
    started.push(vm);
    await waitForSerial(s.serialLogPath, new RegExp(`${INIT_MARKER} cmdline:`), vm);
    const backend = findVsockBackend(s)!;
    process.kill(backend.pid, 'SIGKILL');
    const exit = await vm.exited;
    assert.equal(exit.signal, 'SIGKILL', 'QEMU was killed: the VM is failed, not stopped');
    assert.match(exit.detail ?? '', /vsock device \(pid \d+\) exited with signal SIGKILL/);
    assert.deepEqual(pidsMentioning(s.runDir), []);
    assert.deepEqual(leftovers(s.runDir), [], 'the dead device left sockets; the launcher removed them');
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
    assert.deepEqual(adopted.capabilities, HYBRID);
    await adopted.stop();
    assert.deepEqual(await vm.exited, { code: 0, signal: null });
    assert.deepEqual(pidsMentioning(s.runDir), [], 'the adopted device went with its QEMU');
    assert.deepEqual(leftovers(s.runDir), []);
  });

  it('adopt: a QEMU whose vsock device is gone is ended and not adopted', async () => {
    // The pair as a launch leaves it for the next volantd: spawned with the launcher's own argv,
    // supervised by nobody.
    const s = spec('orphaned');
    mkdirSync(s.runDir, { recursive: true });
    const backend = await startVsockBackend(s);
    const qemu = await spawnVmm(buildQemuArgs(s, HYBRID, QEMU), join(s.runDir, 'vmm.log'));
    await eventually(() => existsSync(join(s.runDir, 'qmp.sock')) && !existsSync(vhostUserSocketPath(s)), { what: 'QEMU connected to its device' });
    process.kill(backend.pid, 'SIGKILL');
    await backend.exited;
    const fresh = createQemuLauncher({ binary: QEMU, accel: 'tcg' });
    assert.equal(await fresh.adopt(qemu.pid, s), undefined);
    assert.deepEqual(await qemu.exited, { code: null, signal: 'SIGKILL' }, 'adopt ended the QEMU it could not adopt');
    assert.deepEqual(pidsMentioning(s.runDir), []);
    assert.deepEqual(leftovers(s.runDir).filter((f) => f !== 'qmp.sock'), [], 'the dead device left sockets; adopt removed them (QMP is the caller\'s run directory to clear)');
  });

  it('vmm.qemu.vsock vhost-kernel without /dev/vhost-vsock: no vsock device and no back-end', async () => {
    const s = spec('nokernelvsock');
    const vm = await createQemuLauncher({ binary: QEMU, accel: 'tcg', vsock: 'vhost-kernel', vhostVsockDevice: join(root, 'no-such-device') }).launch(s);
    started.push(vm);
    assert.deepEqual(vm.capabilities, { accel: 'tcg', vsock: 'none' });
    assert.equal(findVsockBackend(s), undefined);
    await vm.stop({ timeoutMs: 500 });
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
