/**
 * The real Cloud Hypervisor launcher against a TEST DOUBLE of the VMM. Cloud Hypervisor needs
 * KVM, which is not usable on the test machines, so test/support/fake-cloud-hypervisor.ts plays
 * it: a separate process that serves the documented REST API (OpenAPI spec v0.3.0 in
 * shared/reference) on `--api-socket`, validates `vm.create` against the spec's `VmConfig`,
 * writes the serial file, binds the vsock socket, and exits on `vmm.shutdown`. Everything on the
 * launcher's side (spawn, API calls, stale sockets, stop ladder, exit detection, adoption) is
 * the production code.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chApiExpectOk } from '../../host/vmm/cloud-hypervisor-api.js';
import { chApiSocketPath, createCloudHypervisorLauncher } from '../../host/vmm/cloud-hypervisor.js';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { LaunchSpec, VmProcess } from '../../host/vmm/launcher.js';
import { SIGTERM_GRACE_MS, waitForExit } from '../../host/vmm/process.js';
import { VolantError } from '../../shared/errors.js';
import { writeFakeCloudHypervisorBinary } from '../support/fake-cloud-hypervisor.js';
import { makeStaleSocket, pidsMentioning } from '../support/vmm-procs.js';

/** Upper bound for an exit the test caused (the double reacts in milliseconds). */
const EXIT_WAIT_MS = 10_000;
const root = mkdtempSync(join(tmpdir(), `volant-vmm-ch-${process.pid}-`));
const started: VmProcess[] = [];
let launcher: ReturnType<typeof createCloudHypervisorLauncher>;

function spec(name: string, extra: Partial<LaunchSpec> = {}): LaunchSpec {
  const runDir = join(root, 'run', name);
  return {
    vmName: name,
    kernelPath: join(root, 'vmlinuz'),
    initramfsPath: join(root, 'initramfs.img'),
    cmdline: buildKernelCmdline({ vmName: name, network: { mode: 'dhcp', ip: 'dhcp' } }),
    cpus: 1,
    memoryMb: 256,
    tap: { name: 'vtx-test0', mac: '02:00:00:00:00:01' },
    vsock: { cid: 3, socketPath: join(runDir, 'vsock.sock') },
    serialLogPath: join(root, 'logs', `${name}.serial.log`),
    runDir,
    ...extra,
  };
}

async function launch(s: LaunchSpec, l = launcher): Promise<VmProcess> {
  const vm = await l.launch(s);
  started.push(vm);
  return vm;
}

const isVmmFailed = (match: RegExp) => (e: unknown) => e instanceof VolantError && e.code === 'VMM_FAILED' && match.test(e.message);

describe('Cloud Hypervisor launcher (against the API test double)', () => {
  before(() => {
    writeFileSync(join(root, 'vmlinuz'), 'not a kernel: the double only checks the file exists');
    writeFileSync(join(root, 'initramfs.img'), 'x');
    launcher = createCloudHypervisorLauncher({ binary: writeFakeCloudHypervisorBinary(root), defaultStopTimeoutMs: 2000 });
  });

  after(async () => {
    for (const vm of started) {
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {}
    }
    rmSync(root, { recursive: true, force: true });
  });

  it('launch: vm.create + vm.boot → Running, serial file written, vsock socket bound; stop → exits', async () => {
    const s = spec('boot1');
    const vm = await launch(s);
    assert.equal(vm.kind, 'cloud-hypervisor');
    assert.deepEqual(vm.capabilities, { accel: 'kvm', vsock: 'hybrid-socket' });
    const info = JSON.parse((await chApiExpectOk(chApiSocketPath(s), 'GET', 'vm.info')).body);
    assert.equal(info.state, 'Running');
    assert.equal(info.config.payload.cmdline, s.cmdline);
    assert.deepEqual(info.config.net, [{ tap: 'vtx-test0', mac: '02:00:00:00:00:01', num_queues: 2, queue_size: 256 }]);
    assert.match(readFileSync(s.serialLogPath, 'utf8'), /volant\.name=boot1/);
    assert.ok(lstatSync(s.vsock.socketPath).isSocket());

    const exit = await vm.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, 'vm.shutdown then vmm.shutdown ends the VMM cleanly');
    assert.deepEqual(await vm.exited, exit);
    assert.deepEqual(pidsMentioning(s.runDir), []);
    assert.deepEqual(await vm.stop(), exit, 'stop is idempotent');
  });

  it('the runtime image goes in as read-only pmem (discard_writes); a file CH would refuse as unaligned is VMM_FAILED', async () => {
    const image = join(root, 'runtime.erofs');
    writeFileSync(image, Buffer.alloc(2 * 1024 * 1024));
    const s = spec('pmem1', { runtime: { path: image, bytes: 2 * 1024 * 1024, device: 'pmem' } });
    const vm = await launch(s);
    const info = JSON.parse((await chApiExpectOk(chApiSocketPath(s), 'GET', 'vm.info')).body);
    assert.deepEqual(info.config.pmem, [{ file: image, discard_writes: true, id: 'runtime' }]);
    await vm.stop();
    // The spec says 2 MiB but the file on disk is not (it was replaced): CH's PmemSizeNotAligned.
    writeFileSync(image, Buffer.alloc(2 * 1024 * 1024 + 4096));
    await assert.rejects(launch(spec('pmem2', { runtime: { path: image, bytes: 2 * 1024 * 1024, device: 'pmem' } })), isVmmFailed(/PmemSizeNotAligned/));
  });

  it('the previous boot\'s serial log survives as .1 (CH truncates the serial file on boot)', async () => {
    const s = spec('relaunch');
    mkdirSync(join(root, 'logs'), { recursive: true });
    writeFileSync(s.serialLogPath, 'previous boot output\n');
    const vm = await launch(s);
    assert.equal(readFileSync(`${s.serialLogPath}.1`, 'utf8'), 'previous boot output\n');
    assert.match(readFileSync(s.serialLogPath, 'utf8'), /^fake-cloud-hypervisor: booting/);
    await vm.stop();
  });

  it('a stale vsock socket from a crashed run is removed before launch', async () => {
    const s = spec('stale');
    rmSync(s.runDir, { recursive: true, force: true });
    mkdirSync(s.runDir, { recursive: true });
    makeStaleSocket(s.vsock.socketPath);
    makeStaleSocket(chApiSocketPath(s));
    assert.ok(lstatSync(s.vsock.socketPath).isSocket());
    const vm = await launch(s);
    assert.ok(lstatSync(s.vsock.socketPath).isSocket(), 'the double bound it afresh (binding a stale path fails with EADDRINUSE)');
    await vm.stop();
  });

  it('a regular file at the vsock path is not deleted: CONFLICT, nothing spawned', async () => {
    const s = spec('notasock');
    mkdirSync(s.runDir, { recursive: true });
    writeFileSync(s.vsock.socketPath, 'precious');
    await assert.rejects(launcher.launch(s), (e: unknown) => e instanceof VolantError && e.code === 'CONFLICT');
    assert.equal(readFileSync(s.vsock.socketPath, 'utf8'), 'precious');
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });

  it('a hung VMM (API silent, SIGTERM ignored) is SIGKILLed at the end of the stop ladder', async () => {
    process.env.VOLANT_FAKE_CH_WEDGED = '1';
    let vm: VmProcess;
    try {
      vm = await launch(spec('wedged'));
    } finally {
      delete process.env.VOLANT_FAKE_CH_WEDGED;
    }
    const t0 = Date.now();
    assert.deepEqual(await vm.stop({ timeoutMs: 100 }), { code: null, signal: 'SIGKILL' });
    assert.ok(Date.now() - t0 >= SIGTERM_GRACE_MS, 'SIGTERM got its grace period first');
  });

  it('a guest reboot (or panic=-1) ends the VMM: the launcher sees vm/rebooting and sends vmm.shutdown', async () => {
    const vm = await launch(spec('reboots'));
    process.kill(vm.pid, 'SIGUSR1'); // the double's stand-in for "the guest reset itself"
    assert.deepEqual(await waitForExit(vm.exited, EXIT_WAIT_MS), { code: 0, signal: null });
    assert.match(readFileSync(join(root, 'run', 'reboots', 'ch-events.json'), 'utf8'), /"event":"rebooting"/);
  });

  it('a guest power-off ends the VMM by itself and is seen through exited', async () => {
    const vm = await launch(spec('poweroff'));
    process.kill(vm.pid, 'SIGUSR2'); // the double's stand-in for "the guest powered off"
    assert.deepEqual(await waitForExit(vm.exited, EXIT_WAIT_MS), { code: 0, signal: null });
  });

  it('SIGKILL of the VMM is seen through exited', async () => {
    const vm = await launch(spec('killed'));
    process.kill(vm.pid, 'SIGKILL');
    assert.deepEqual(await waitForExit(vm.exited, EXIT_WAIT_MS), { code: null, signal: 'SIGKILL' });
    assert.deepEqual(await vm.stop(), { code: null, signal: 'SIGKILL' }, 'stopping a dead VMM just reports its exit');
  });

  it('a missing initramfs is NOT_FOUND before anything starts', async () => {
    const s = spec('noinitrd', { initramfsPath: join(root, 'missing.img') });
    await assert.rejects(launcher.launch(s), (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && /initramfs/.test(e.message));
    assert.equal(existsSync(s.runDir), false);
  });

  it('vm.create refused by the VMM → VMM_FAILED with the VMM message, process gone', async () => {
    const s = spec('refused', { memoryMb: 64, tap: { name: 'vtx-test0', mac: '02:00:00:00:00:01' } });
    process.env.VOLANT_FAKE_CH_REFUSE_CREATE = 'Error creating VM: failed to open tap vtx-test0';
    try {
      await assert.rejects(launcher.launch(s), isVmmFailed(/vm\.create failed with HTTP 500: Error creating VM: failed to open tap vtx-test0/));
    } finally {
      delete process.env.VOLANT_FAKE_CH_REFUSE_CREATE;
    }
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });

  it('binary missing → VMM_FAILED "not found"', async () => {
    const l = createCloudHypervisorLauncher({ binary: join(root, 'no-such-cloud-hypervisor') });
    await assert.rejects(l.launch(spec('nobin')), isVmmFailed(/not found/));
  });

  it('a bad spec is refused before anything runs', async () => {
    const s = spec('badspec', { vsock: { cid: 2, socketPath: join(root, 'x.sock') } });
    await assert.rejects(launcher.launch(s), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && /vsock\.cid/.test(e.message));
    assert.equal(existsSync(s.runDir), false);
  });

  it('daemon restart: a VMM launched by a process that then exits keeps running and is adopted', async () => {
    const s = spec('survivor');
    const launcherUrl = new URL('../../host/vmm/cloud-hypervisor.ts', import.meta.url).href;
    const script = [
      `import { createCloudHypervisorLauncher } from ${JSON.stringify(launcherUrl)};`,
      `const vm = await createCloudHypervisorLauncher({ binary: ${JSON.stringify(join(root, 'cloud-hypervisor'))} }).launch(${JSON.stringify(s)});`,
      'console.log(vm.pid);',
      'process.exit(0);',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    const pid = Number(out.trim().split('\n').pop());
    assert.ok(Number.isInteger(pid) && pid > 0, out);
    const adopted = await createCloudHypervisorLauncher().adopt(pid, s);
    assert.ok(adopted, 'the VMM outlived the process that launched it');
    const info = JSON.parse((await chApiExpectOk(chApiSocketPath(s), 'GET', 'vm.info')).body);
    assert.equal(info.state, 'Running');
    assert.deepEqual(await adopted.stop(), { code: null, signal: null });
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });

  it('adopt: a new launcher re-attaches by PID; a wrong PID or another VM is not adopted', async () => {
    const s = spec('adopted');
    const vm = await launch(s);
    const fresh = createCloudHypervisorLauncher({ defaultStopTimeoutMs: 2000 });
    assert.equal(await fresh.adopt(process.pid, s), undefined, 'this test process is not that VMM');
    assert.equal(await fresh.adopt(vm.pid, spec('someone-else')), undefined, 'the PID runs a different VM');
    assert.equal(await fresh.adopt(2 ** 22 + 12345, s), undefined, 'no such PID');
    const adopted = await fresh.adopt(vm.pid, s);
    assert.ok(adopted);
    assert.equal(adopted.pid, vm.pid);
    const exit = await adopted.stop();
    assert.deepEqual(exit, { code: null, signal: null }, 'not our child: no exit status, but the exit is seen');
    assert.deepEqual(await vm.exited, { code: 0, signal: null });
    assert.deepEqual(pidsMentioning(s.runDir), []);
  });
});
