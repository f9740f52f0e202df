/**
 * The orchestrator's life cycle and failure handling against a real SQLite store and real VMM
 * processes from the FakeVmmLauncher TEST DOUBLE (Cloud Hypervisor/KVM cannot run here; the
 * double speaks hybrid vsock and serves /healthz like kestrel). Failure injection: launch fails,
 * health never comes, the VMM is SIGKILLed, it exits cleanly, and volantd itself is SIGKILLed
 * mid-create and restarted. After each: no leaked lease, CID, process or run directory.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isVolantError } from '../../shared/errors.js';
import type { VmEvent } from '../../host/orchestrator/events.js';
import { eventually } from '../support/eventually.js';
import { type Harness, startHarness, writePluginBuild } from '../support/volantd-harness.js';
import { isAlive } from '../support/vmm-procs.js';

function leaseCount(h: Harness): number {
  return (h.daemon.store.db.prepare('SELECT count(*) AS n FROM vms').get() as { n: number }).n;
}

describe('orchestrator life cycle (real store, real processes, fake VMM double)', () => {
  let h: Harness;
  const events: VmEvent[] = [];
  before(async () => {
    h = await startHarness({ tag: 'orch' });
    h.daemon.orchestrator.events.subscribe((e) => events.push(e));
    const res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir('web') } });
    assert.equal(res.status, 201);
  });
  after(async () => {
    await h?.close();
  });

  it('launch failure: error names the step, nothing is left', async () => {
    h.launcher.behaviour.set('lf', 'launch-fails');
    await assert.rejects(h.daemon.orchestrator.create({ name: 'lf', plugin: 'web' }), (e: unknown) => isVolantError(e) && e.code === 'VMM_FAILED' && /launch VMM/.test(e.message));
    assert.equal(h.daemon.orchestrator.list().length, 0);
    assert.equal(existsSync(h.daemon.orchestrator.vmRunDir('lf')), false);
    const mine = events.filter((e) => e.vm === 'lf').map((e) => e.state ?? (e.type === 'vm.phase' ? `phase: ${e.phase}` : e.type));
    assert.deepEqual(mine, ['creating', 'phase: create run directory', 'phase: launch VMM', 'failed', 'vm.deleted'], 'the failed step is the last phase announced');
  });

  it('health never comes: TIMEOUT after the named bound, VMM process killed, row/lease/CID gone', async () => {
    h.launcher.behaviour.set('nh', 'never-healthy');
    const started = Date.now();
    await assert.rejects(h.daemon.orchestrator.create({ name: 'nh', plugin: 'web' }), (e: unknown) => isVolantError(e) && e.code === 'TIMEOUT' && /wait for kestrel \/healthz/.test(e.message));
    assert.ok(Date.now() - started >= 3000, 'waited the configured health timeout');
    const launched = h.launcher.launched.find((l) => l.vmName === 'nh')!;
    assert.equal(isAlive(launched.pid), false, 'the VMM process was stopped');
    assert.equal(leaseCount(h), 0);
    assert.equal(existsSync(launched.spec.vsock.socketPath), false, 'run directory removed');
  });

  it('a VMM that exits during boot fails the create at once with VMM_FAILED', async () => {
    h.launcher.behaviour.set('eb', 'never-healthy');
    const p = h.daemon.orchestrator.create({ name: 'eb', plugin: 'web' });
    await eventually(() => h.launcher.launched.some((l) => l.vmName === 'eb'), { what: 'launch' });
    process.kill(h.launcher.launched.find((l) => l.vmName === 'eb')!.pid, 'SIGKILL');
    await assert.rejects(p, (e: unknown) => isVolantError(e) && e.code === 'VMM_FAILED' && /exited during boot/.test(e.message));
    assert.equal(leaseCount(h), 0);
  });

  it('VMM SIGKILLed while running: state failed with the reason, process and run dir released, lease kept for restart', async () => {
    const vm = await h.daemon.orchestrator.create({ name: 'k1', plugin: 'web' });
    assert.equal(vm.state, 'running');
    process.kill(vm.pid!, 'SIGKILL');
    await eventually(() => h.daemon.orchestrator.get('k1').state === 'failed', { what: 'failed state' });
    const failed = h.daemon.orchestrator.get('k1');
    assert.match(failed.error ?? '', /exited unexpectedly \(code null, signal SIGKILL\)/);
    assert.equal(failed.pid, null);
    assert.equal(failed.cid, vm.cid);
    assert.equal(existsSync(h.daemon.orchestrator.vmRunDir('k1')), false);
    const again = await h.daemon.orchestrator.start('k1');
    assert.equal(again.state, 'running');
    assert.notEqual(again.pid, vm.pid);
    await h.daemon.orchestrator.delete('k1', { force: true });
    assert.equal(isAlive(again.pid!), false);
    assert.equal(leaseCount(h), 0);
  });

  it('a guest power-off (clean VMM exit) leaves the VM stopped, not failed', async () => {
    h.launcher.behaviour.set('po', 'exit-clean-after-boot');
    await h.daemon.orchestrator.create({ name: 'po', plugin: 'web' }).catch(() => undefined);
    // The double may exit before or after /healthz answered: either failed create (row gone) or stopped.
    await eventually(() => {
      const v = h.daemon.orchestrator.list().find((x) => x.name === 'po');
      return v === undefined || v.state === 'stopped';
    }, { what: 'po at rest' });
    const v = h.daemon.orchestrator.list().find((x) => x.name === 'po');
    if (v) {
      assert.equal(v.error, null);
      await h.daemon.orchestrator.delete('po');
    }
  });

  it('operations on one VM are serialised: concurrent stop and delete do not interleave', async () => {
    await h.daemon.orchestrator.create({ name: 'sx', plugin: 'web' });
    const results = await Promise.allSettled([h.daemon.orchestrator.stop('sx'), h.daemon.orchestrator.delete('sx'), h.daemon.orchestrator.start('sx')]);
    assert.equal(results[0].status, 'fulfilled');
    assert.equal(results[1].status, 'fulfilled', 'delete ran after stop finished, so the VM was at rest');
    assert.equal(results[2].status, 'rejected', 'start after delete finds no VM');
    assert.equal(leaseCount(h), 0);
  });

  it('concurrent creates of one name: exactly one wins, the other gets NAME_TAKEN', async () => {
    const rs = await Promise.allSettled([h.daemon.orchestrator.create({ name: 'dup', plugin: 'web' }), h.daemon.orchestrator.create({ name: 'dup', plugin: 'web' })]);
    assert.equal(rs.filter((r) => r.status === 'fulfilled').length, 1);
    const rej = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.equal(rej.reason.code, 'NAME_TAKEN');
    await h.daemon.orchestrator.delete('dup', { force: true });
  });
});

describe('volantd killed mid-create, then restarted', () => {
  const DAEMON = fileURLToPath(new URL('../support/volantd-double-main.ts', import.meta.url));
  let dir: string;
  let child: ChildProcess | undefined;
  const strays: number[] = [];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), `volant-orch-crash-${process.pid}-`));
    writeFileSync(join(dir, 'vmlinuz'), 'fake');
  });
  after(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    for (const pid of strays) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** The daemon's address and the token its TCP listener needs. */
  function startChild(behaviour: string): Promise<{ address: string; token: string }> {
    child = spawn(process.execPath, ['--import', 'tsx', DAEMON, join(dir, 'state'), join(dir, 'vmlinuz'), behaviour], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (c) => (log += c));
    return new Promise((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (c) => {
        out += c;
        const line = out.split('\n')[0];
        if (out.includes('\n')) resolve(JSON.parse(line!) as { address: string; token: string });
      });
      child!.once('exit', (code) => reject(new Error(`daemon exited ${code}; its log:\n${log}`)));
    });
  }

  it('leaves no VM row, lease, CID, run directory or VMM process behind; a running VM is re-adopted', async () => {
    // First daemon: one healthy VM, then a create that hangs waiting for /healthz.
    let { address, token } = await startChild('healthy');
    let url = `http://${address}`;
    const auth = () => ({ authorization: `Bearer ${token}` });
    const post = (path: string, json: unknown) => fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth() }, body: JSON.stringify(json) });
    assert.equal((await post('/api/v1/plugins', { path: writePluginBuild(dir, 'web') })).status, 201);
    const keep = (await (await post('/api/v1/vms', { name: 'keep', plugin: 'web' })).json()) as { pid: number; state: string };
    assert.equal(keep.state, 'running');
    strays.push(keep.pid);
    child!.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
    assert.ok(isAlive(keep.pid), 'a graceful volantd shutdown leaves VMs running');

    ({ address, token } = await startChild('never-healthy'));
    url = `http://${address}`;
    const vms = async () => ((await (await fetch(`${url}/api/v1/vms`, { headers: auth() })).json()) as { vms: { name: string; state: string; pid?: number }[] }).vms;
    assert.equal((await vms()).find((v) => v.name === 'keep')?.state, 'running', 're-adopted');
    void post('/api/v1/vms', { name: 'doomed', plugin: 'web' }).catch(() => undefined);
    const doomedPid = await eventually(async () => (await vms()).find((v) => v.name === 'doomed')?.pid, { what: 'the create getting as far as launching its VMM' });
    strays.push(doomedPid);
    child!.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    assert.ok(isAlive(doomedPid), 'the VMM outlives the killed daemon (that is the leak to clean)');

    // Restart in-process on the same state dir: reconcile must clean up.
    const h = await startHarness({ tag: 'orch-restart', stateDir: join(dir, 'state') });
    try {
      await eventually(() => !isAlive(doomedPid), { what: 'doomed VMM stopped' });
      const names = h.daemon.orchestrator.list().map((v) => `${v.name}:${v.state}`);
      assert.deepEqual(names, ['keep:running'], 'the interrupted create is rolled back, the running VM adopted');
      const leases = h.daemon.store.db.prepare('SELECT vm_name FROM ip_leases').all();
      assert.equal(leases.length, 0, 'vsock VMs hold no address');
      assert.deepEqual(h.daemon.store.vms.checkConsistency(), []);
      assert.equal(existsSync(h.daemon.orchestrator.vmRunDir('doomed')), false);
      // The adopted VM is supervised: killing its VMM is noticed.
      process.kill(keep.pid, 'SIGKILL');
      await eventually(() => h.daemon.orchestrator.get('keep').state === 'failed', { what: 'adopted VM failed' });
    } finally {
      await h.close();
    }
  });
});
