// The egress proxy's record and its admission order, alone (pure parts and fakes, no sockets):
// repeated denials aggregate into one summary line; every request is charged to the VM's rate
// budget before anything is decided; a concurrency slot is only held by what passed the
// allowlist and comes back on every later refusal.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPolicy } from '../../host/egress/address-policy.js';
import { admit, AllowlistCache, type AdmissionContext } from '../../host/egress/admission.js';
import { AuditTrail, type AuditRecord, newExchange } from '../../host/egress/audit.js';
import { EgressLimits } from '../../host/egress/limits.js';
import { Registry } from 'prom-client';
import { EgressMetrics } from '../../host/egress/metrics.js';
import { parseConnectTarget } from '../../host/egress/target.js';
import { VolantError } from '../../shared/errors.js';

describe('AuditTrail', () => {
  it('allowed exchanges are each a line; identical denials are one line plus a summary with the count', async () => {
    const lines: AuditRecord[] = [];
    const metrics = new EgressMetrics(new Registry());
    const trail = new AuditTrail(metrics, (r) => lines.push(r), 60_000);
    const denied = { ...newExchange('CONNECT'), vm: 'a', target: { host: 'evil.test', port: 443 } };
    for (let i = 0; i < 5; i++) trail.record(denied, 'deny', 'not-allowlisted', 403);
    trail.record({ ...denied, target: { host: 'other.test', port: 443 } }, 'deny', 'not-allowlisted', 403);
    trail.record({ ...denied, vm: 'b' }, 'deny', 'not-allowlisted', 403);
    for (let i = 0; i < 2; i++) trail.record({ ...newExchange('GET'), vm: 'a' }, 'allow', 'allowed', 200);
    assert.equal(lines.length, 5, 'first evil.test, other.test, VM b, two allowed');
    trail.flush();
    assert.equal(lines.length, 6);
    const summary = lines[5]!;
    assert.equal(summary.host, 'evil.test');
    assert.equal(summary.repeated, 4);
    assert.equal(summary.window_ms, 60_000);
    assert.equal(await metrics.count({ reason: 'not-allowlisted' }), 7, 'metrics count every decision');
    trail.flush();
    assert.equal(lines.length, 6, 'nothing repeated since');
  });
  it('a sink that throws does not take the caller down', () => {
    const trail = new AuditTrail(new EgressMetrics(new Registry()), () => {
      throw new Error('disk full');
    });
    trail.record(newExchange('GET'), 'deny', 'bad-target', 400);
    trail.flush();
  });
});

describe('admit: the order of admission', () => {
  const ctx = (limits: EgressLimits, resolve: (name: string) => Promise<string[]>): AdmissionContext => ({
    policyFor: (peer) => (peer.remoteAddress === '10.0.0.2' ? { vmName: 'vm', allowedDomains: ['ok.example', 'nx.example', 'private.example'] } : undefined),
    limits,
    resolver: { resolve },
    addresses: new AddressPolicy(),
    allowlists: new AllowlistCache(),
  });
  const peer = { remoteAddress: '10.0.0.2' };
  const connect = (authority: string) => () => parseConnectTarget(authority);

  it('refused requests spend the rate budget before they are decided', async () => {
    const limits = new EgressLimits({ requestsPerSecondPerVm: 0.001, requestBurstPerVm: 2 });
    const c = ctx(limits, async () => ['93.184.216.34']);
    const first = await admit(c, newExchange('CONNECT'), peer, connect('denied.example:443'), { tunnel: true });
    assert.equal('status' in first && first.reason, 'not-allowlisted');
    const second = await admit(c, newExchange('CONNECT'), peer, connect('bad target'), { tunnel: true });
    assert.equal('status' in second && second.reason, 'bad-target');
    const third = await admit(c, newExchange('CONNECT'), peer, connect('ok.example:443'), { tunnel: true });
    assert.ok('status' in third);
    assert.equal(third.reason, 'rate-limited');
    assert.equal(third.status, 429);
    assert.equal(limits.active, 0, 'no slot was taken');
  });

  it('an unknown peer is charged to the shared budget, then refused', async () => {
    const limits = new EgressLimits({ requestsPerSecondPerVm: 0.001, requestBurstPerVm: 1 });
    const c = ctx(limits, async () => ['93.184.216.34']);
    const other = { remoteAddress: '10.0.0.99' };
    assert.equal(((await admit(c, newExchange('GET'), other, connect('ok.example:443'), { tunnel: false })) as { reason: string }).reason, 'no-policy');
    assert.equal(((await admit(c, newExchange('GET'), { remoteAddress: '10.0.0.98' }, connect('ok.example:443'), { tunnel: false })) as { reason: string }).reason, 'rate-limited');
    assert.equal(((await admit(c, newExchange('GET'), peer, connect('ok.example:443'), { tunnel: false })) as { reason: string }).reason, undefined, 'the VM has its own budget');
  });

  it('the slot is given back on DNS and address refusals, and held by what is admitted', async () => {
    const limits = new EgressLimits({ requestsPerSecondPerVm: 1000 });
    const c = ctx(limits, async (name) => {
      if (name === 'nx.example') throw new VolantError('UPSTREAM_UNREACHABLE', 'no such name', { reason: 'dns-not-found' });
      return name === 'private.example' ? ['10.0.0.5'] : ['93.184.216.34'];
    });
    assert.equal(((await admit(c, newExchange('CONNECT'), peer, connect('nx.example:443'), { tunnel: true })) as { reason: string }).reason, 'dns-not-found');
    assert.equal(((await admit(c, newExchange('CONNECT'), peer, connect('private.example:443'), { tunnel: true })) as { reason: string }).reason, 'blocked-address');
    assert.equal(limits.active, 0);
    const ok = await admit(c, newExchange('CONNECT'), peer, connect('ok.example:443'), { tunnel: true });
    assert.ok(!('status' in ok));
    assert.deepEqual(ok.dial, ['93.184.216.34']);
    assert.equal(limits.activeTunnels('vm'), 1);
    ok.release();
    ok.release();
    assert.equal(limits.active, 0, 'release is idempotent');
  });
});
