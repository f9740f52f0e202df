/**
 * A create that fails never takes volantd down. Reproduces the issue-11 crash first: a VMM
 * without vsock for a vsock-mode VM made the create fail with NOT_SUPPORTED after launch, and
 * the VMM's early-exit promise then rejected with no owner (an unhandled rejection ends Node).
 * The VMM is the FakeVmmLauncher TEST DOUBLE (no KVM / Cloud Hypervisor here).
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isVolantError } from '../../shared/errors.js';
import type { VsockCapability } from '../../shared/network-policy.js';
import type { LaunchSpec, VmProcess } from '../../host/vmm/launcher.js';
import { FakeVmmLauncher } from '../support/orchestrator-vmm-double.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';

/** The double, reporting a VMM without any vsock device (QEMU on a host without /dev/vhost-vsock). */
class NoVsockLauncher extends FakeVmmLauncher {
  readonly processes: VmProcess[] = [];
  override vsockCapability(): VsockCapability {
    return 'none';
  }
  override async launch(spec: LaunchSpec): Promise<VmProcess> {
    const p = await super.launch(spec);
    const proc = { ...p, stop: p.stop, capabilities: { accel: 'tcg', vsock: 'none' } } as VmProcess;
    this.processes.push(proc);
    return proc;
  }
}

describe('a failed create leaves volantd serving', () => {
  let h: Harness;
  const launcher = new NoVsockLauncher();
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => {
    unhandled.push(e);
  };
  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    h = await startHarness({ tag: 'faults', launcher });
    assert.equal((await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir('vs', { mode: 'vsock' }) } })).status, 201);
  });
  after(async () => {
    process.off('unhandledRejection', onUnhandled);
    await h?.close();
  });

  it('vsock VM on a VMM without vsock: refused, and no promise of the create is left without an owner', async () => {
    await assert.rejects(h.daemon.orchestrator.create({ name: 'webv', plugin: 'vs' }), (e: unknown) => isVolantError(e) && e.code === 'NOT_SUPPORTED');
    // The stopped VMM's exit is when the orphaned promise used to reject; give its handlers a turn.
    for (const p of launcher.processes) await p.exited;
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
    assert.equal((await h.api('/api/v1/health')).status, 200);
  });
});
