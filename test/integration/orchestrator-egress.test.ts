/**
 * A VM whose plugin allows outbound traffic gets its own egress proxy, wired the way kestrel
 * reaches it: for a vsock VM the guest's (CID 2, port 3128) lands on `<vsock socket>_3128`
 * (hybrid vsock), the kernel command line says `volant.egress=vsock`, the proxy applies that VM's
 * allowlist, its decisions show in /metrics and in the audit file (not in volantd's log), and the
 * listener goes away with the VM. The VMM is the FakeVmmLauncher TEST DOUBLE; nothing here leaves
 * the machine (denied before any DNS).
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCmdline } from '../../shared/cmdline.js';
import { EGRESS_VSOCK_PORT, guestInitiatedSocketPath } from '../../shared/vsock.js';
import { AUDIT_FILE_NAME } from '../../host/log/audit-file.js';
import { guestRequest } from '../support/egress-guest.js';
import { eventually } from '../support/eventually.js';
import { captureLogs } from '../support/logs.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';

describe('per-VM egress proxy wiring', () => {
  let h: Harness;
  const logs = captureLogs('debug');
  before(async () => {
    h = await startHarness({ tag: 'orch-egress', logger: logs.logger });
    assert.equal((await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir('out', { mode: 'vsock', allowOutbound: true }) } })).status, 201);
  });
  after(async () => {
    await h?.close();
  });

  it('listens on the guest-initiated vsock path, enforces the VM allowlist, counts decisions, closes with the VM', async () => {
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'eo', plugin: 'out' } });
    assert.equal(res.status, 201, await res.clone().text());
    const spec = h.launcher.launched.find((l) => l.vmName === 'eo')!.spec;
    const params = parseCmdline(spec.cmdline);
    assert.equal(params.get('volant.egress'), 'vsock');
    assert.equal(params.get('volant.mode'), 'vsock');
    assert.equal(params.get('ip'), undefined, 'a vsock VM has no ip=');

    const egressPath = guestInitiatedSocketPath(spec.vsock.socketPath, EGRESS_VSOCK_PORT);
    const answer = await guestRequest(egressPath, 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 403 /, answer);

    // The decision is one JSON line in <state_dir>/logs/egress-audit.jsonl, and nowhere in volantd's log.
    const auditPath = join(h.stateDir, 'logs', AUDIT_FILE_NAME);
    const audit = await eventually(() => {
      const records = readFileSync(auditPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
      return records.length > 0 ? records : undefined;
    }, { what: 'an audit record' });
    assert.equal(audit.length, 1);
    assert.deepEqual(
      [audit[0]!.vm, audit[0]!.method, audit[0]!.host, audit[0]!.decision, audit[0]!.reason, audit[0]!.status],
      ['eo', 'CONNECT', 'evil.test', 'deny', 'not-allowlisted', 403],
    );
    assert.deepEqual(logs.records().filter((r) => JSON.stringify(r).includes('evil.test')), [], 'audit records stay out of the daemon log');

    const metrics = await (await h.api('/metrics')).text();
    assert.match(metrics, /^volant_egress_decisions_total\{vm="eo",method="CONNECT",decision="deny",[^}]*\} 1$/m, metrics);
    assert.equal(metrics.match(/^# TYPE volant_egress_decisions_total /gm)?.length, 1);

    assert.equal((await h.api('/api/v1/vms/eo/stop', { method: 'POST' })).status, 200);
    await assert.rejects(guestRequest(egressPath, 'CONNECT example.com:443 HTTP/1.1\r\n\r\n'), /ENOENT|ECONNREFUSED/);
  });
});
