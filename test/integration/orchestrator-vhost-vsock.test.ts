/**
 * QEMU with and without the host kernel's vhost-vsock (config `vmm.qemu.vsock: vhost-kernel`; the
 * default, vhost-user, is our device back-end: hybrid-socket): the launcher, pointed at a stand-in
 * `/dev/vhost-vsock` (a plain file; the real device does not exist here), reports `af-vsock`
 * before launch, so the network policy routes the host to kestrel over AF_VSOCK to the VM's CID,
 * and QEMU's argv carries `vhost-vsock-pci` with that CID; without the file it reports `none`.
 *
 * No AF_VSOCK socket is ever opened on this host: the VMM is the FakeVmmLauncher TEST DOUBLE
 * (it serves kestrel on its hybrid-vsock socket), and the daemon's AF_VSOCK connect is a
 * stand-in that records (CID, port) and reaches that double's kestrel instead.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVolantError } from '../../shared/errors.js';
import type { VsockCapability } from '../../shared/network-policy.js';
import { AGENT_VSOCK_PORT } from '../../shared/vsock.js';
import type { LaunchSpec, Launcher, VmProcess } from '../../host/vmm/launcher.js';
import { buildQemuArgs, createQemuLauncher } from '../../host/vmm/qemu.js';
import { dialHybridVsock } from '../../host/vsock/hybrid.js';
import { FakeVmmLauncher } from '../support/orchestrator-vmm-double.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';

/** The QEMU launcher's capability (from the device file it is pointed at); the guest is the double. */
class QemuCapabilityDouble extends FakeVmmLauncher {
  readonly argv = new Map<string, string[]>();
  constructor(private readonly qemu: Launcher) {
    super();
  }
  override vsockCapability(): VsockCapability {
    return this.qemu.vsockCapability();
  }
  override async launch(spec: LaunchSpec): Promise<VmProcess> {
    const caps = { accel: 'tcg' as const, vsock: this.vsockCapability() };
    this.argv.set(spec.vmName, buildQemuArgs(spec, caps));
    const p = await super.launch(spec);
    return { kind: 'qemu', pid: p.pid, exited: p.exited, stop: (o) => p.stop(o), capabilities: caps };
  }
}

describe('QEMU vsock: the host reaches kestrel the way QEMU offers it', () => {
  let dir: string;
  let device: string;
  let h: Harness;
  let launcher: QemuCapabilityDouble;
  const dialled: { cid: number; port: number }[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `volant-vhost-${process.pid}-`));
    device = join(dir, 'vhost-vsock');
    writeFileSync(device, '');
    launcher = new QemuCapabilityDouble(createQemuLauncher({ vsock: 'vhost-kernel', vhostVsockDevice: device, accel: 'tcg' }));
    const afVsockConnect = (cid: number, port: number): Promise<Socket> => {
      dialled.push({ cid, port });
      const vm = h.daemon.orchestrator.list().find((v) => v.cid === cid);
      if (!vm) return Promise.reject(Object.assign(new Error(`no VM with CID ${cid}`), { code: 'ENODEV' }));
      return dialHybridVsock(h.daemon.orchestrator.vsockSocketPath(vm.name), port);
    };
    h = await startHarness({ tag: 'vhost', launcher, afVsockConnect });
    for (const [name, opts] of [
      ['vs', { mode: 'vsock' as const }],
      ['vsout', { mode: 'vsock' as const, allowOutbound: true }],
    ] as const) {
      assert.equal((await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir(name, opts) } })).status, 201);
    }
  });
  after(async () => {
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the launcher reports af-vsock with the device and none without it, before any launch', () => {
    assert.equal(createQemuLauncher({ vsock: 'vhost-kernel', vhostVsockDevice: device }).vsockCapability(), 'af-vsock');
    assert.equal(createQemuLauncher({ vsock: 'vhost-kernel', vhostVsockDevice: join(dir, 'absent') }).vsockCapability(), 'none');
    assert.equal(createQemuLauncher({ vhostVsockDevice: join(dir, 'absent') }).vsockCapability(), 'hybrid-socket', 'the default vhost-user device needs no host device');
  });

  it('with vhost-vsock: QEMU gets vhost-vsock-pci with the CID, and health goes over AF_VSOCK to that CID', async () => {
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'afv', plugin: 'vs' } });
    assert.equal(res.status, 201, await res.clone().text());
    const vm = h.daemon.orchestrator.get('afv');
    assert.equal(vm.state, 'running');
    assert.ok(launcher.argv.get('afv')!.includes(`vhost-vsock-pci,guest-cid=${vm.cid}`), launcher.argv.get('afv')!.join(' '));
    // The workload has no path prefix, so kestrel runs its raw relay (AGENT_RELAY_PORT) on AF_VSOCK too.
    assert.deepEqual(h.daemon.orchestrator.agentFor('afv'), { kind: 'af-vsock', cid: vm.cid, relay: true });
    assert.ok(dialled.length > 0 && dialled.every((d) => d.cid === vm.cid && d.port === AGENT_VSOCK_PORT), JSON.stringify(dialled));
    assert.equal((await h.api('/api/v1/vms/afv?force=1', { method: 'DELETE' })).status, 204);
  });

  it('outbound from a vsock VM under vhost-vsock is refused before anything is made (no per-VM guest-initiated socket)', async () => {
    const before = dialled.length;
    await assert.rejects(h.daemon.orchestrator.create({ name: 'afout', plugin: 'vsout' }), (e: unknown) => isVolantError(e) && e.code === 'NOT_SUPPORTED' && /AF_VSOCK listener/.test(e.message));
    assert.equal(launcher.launched.some((l) => l.vmName === 'afout'), false);
    assert.equal(h.daemon.orchestrator.list().length, 0);
    assert.equal(dialled.length, before);
  });

  it('without the device: a vsock VM is refused (NOT_SUPPORTED) and volantd keeps serving', async () => {
    rmSync(device);
    await assert.rejects(h.daemon.orchestrator.create({ name: 'novs', plugin: 'vs' }), (e: unknown) => isVolantError(e) && e.code === 'NOT_SUPPORTED' && /needs a VMM with a vsock device/.test(e.message));
    assert.equal(h.daemon.orchestrator.list().length, 0);
    assert.equal((await h.api('/api/v1/health')).status, 200);
    writeFileSync(device, '');
  });
});
