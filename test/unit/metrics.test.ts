/** The metric families volantd registers: values from their owners, per-VM series kept until the VM is forgotten. */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { EgressMetrics } from '../../host/egress/metrics.js';
import { INGRESS_COUNTERS, registerIngressMetrics } from '../../host/metrics/ingress.js';
import { registerVmMetrics } from '../../host/metrics/vms.js';
import { VSOCK_DEVICE_FAMILIES, VsockDeviceMetrics } from '../../host/metrics/vsock-device.js';
import { newDeviceMetrics } from '../../host/vsock/device/metrics.js';
import { parsePrometheusText } from '../support/prometheus.js';

const dir = mkdtempSync(join(tmpdir(), `volant-metrics-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

async function samples(registry: Registry): Promise<string[]> {
  const out: string[] = [];
  for (const f of parsePrometheusText(await registry.metrics()).values()) for (const s of f.samples) out.push(`${s.name}${JSON.stringify(s.labels)} ${s.value}`);
  return out;
}

describe('EgressMetrics', () => {
  it('counts decisions, bytes and tunnels per VM; forgetVm removes that VM only', async () => {
    const registry = new Registry();
    const m = new EgressMetrics(registry);
    for (const vm of ['a', 'b']) {
      m.recordDecision({ vm, method: 'CONNECT', decision: 'deny', reason: 'not-allowlisted' });
      m.recordDecision({ vm, method: 'HTTP', decision: 'allow', reason: 'allowed' });
      m.recordBytes(vm, 'in', 10);
      m.recordBytes(vm, 'out', 0);
      m.tunnelOpened(vm);
    }
    m.recordDecision({ vm: 'a', method: 'CONNECT', decision: 'deny', reason: 'not-allowlisted' });
    m.tunnelClosed('a');
    assert.equal(await m.count({ vm: 'a', reason: 'not-allowlisted' }), 2);
    assert.equal(await m.count({ decision: 'allow' }), 2);
    assert.equal(await m.count(), 5);
    const before = await samples(registry);
    assert.ok(before.includes('volant_egress_active_tunnels{"vm":"a"} 0'), 'a closed tunnel leaves the series at 0');
    assert.ok(before.includes('volant_egress_bytes_total{"vm":"a","direction":"in"} 10'));
    assert.ok(!before.some((s) => s.includes('"direction":"out"')), 'no bytes, no series');

    m.forgetVm('a');
    const left = await samples(registry);
    assert.deepEqual(
      left.filter((s) => s.includes('"vm":"a"')),
      [],
    );
    assert.deepEqual(
      left,
      before.filter((s) => !s.includes('"vm":"a"')),
    );
    m.recordDecision({ vm: 'a', method: 'HTTP', decision: 'deny', reason: 'scheme' });
    assert.equal(await m.count({ vm: 'a' }), 1, 'a VM of the same name starts afresh');
  });
});

describe('VsockDeviceMetrics', () => {
  it("reads each VM's counters file once per scrape, keeps the last values when it is gone, drops VMs that no longer exist", async () => {
    const registry = new Registry();
    const vms = ['web', 'db'];
    const file = (vm: string) => join(dir, `${vm}.metrics.json`);
    let reads = 0;
    const device = new VsockDeviceMetrics(registry, {
      vms: () => vms,
      metricsFile: (vm) => {
        reads++;
        return file(vm);
      },
    });
    writeFileSync(file('web'), JSON.stringify({ ...newDeviceMetrics(), txPackets: 5, connections: 2 }));
    const value = async (name: string, vm: string) => parsePrometheusText(await registry.metrics()).get(name)?.samples.find((s) => s.labels.vm === vm)?.value;

    assert.equal(await value('volant_vsock_device_tx_packets_total', 'web'), 5);
    assert.equal(reads, vms.length, 'one read of each VM per scrape, however many families ask');
    assert.equal(await value('volant_vsock_device_connections', 'web'), 2);
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'db'), undefined, 'no file, no series');

    rmSync(file('web'));
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'web'), 5, 'the VM stopped: its last values stay');
    writeFileSync(file('web'), '{"txPackets": 9, "rxPa');
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'web'), 5, 'a torn file keeps the last values');
    writeFileSync(file('web'), JSON.stringify({ ...newDeviceMetrics(), txPackets: 1 }));
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'web'), 1, 'a new back-end counts from zero (a counter reset)');

    device.forgetVm('web');
    vms.splice(0, 1);
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'web'), undefined, 'deleted: gone');
    vms.push('old');
    writeFileSync(file('old'), JSON.stringify(newDeviceMetrics()));
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'old'), 0);
    vms.pop();
    await registry.metrics();
    assert.equal(await value('volant_vsock_device_tx_packets_total', 'old'), undefined, 'a VM the source no longer lists is dropped even without forgetVm');
  });

  it('every device counter has a family: counters end in _total, the open connections are a gauge', () => {
    assert.deepEqual(Object.keys(VSOCK_DEVICE_FAMILIES).sort(), Object.keys(newDeviceMetrics()).sort());
    for (const [field, f] of Object.entries(VSOCK_DEVICE_FAMILIES)) {
      assert.match(f.name, /^volant_vsock_device_[a-z_]+$/, field);
      assert.equal(f.name.endsWith('_total'), f.type === 'counter', f.name);
    }
  });
});

describe('ingress and VM families', () => {
  it('ingress counters are read from the ingress at scrape time', async () => {
    const registry = new Registry();
    const counts = { requests: 3, upgrades: 1, refused: 2, responses: 3, upstreamErrors: 0, clientAborts: 1 };
    registerIngressMetrics(registry, () => counts);
    counts.requests = 4;
    const families = parsePrometheusText(await registry.metrics());
    for (const [field, { name }] of Object.entries(INGRESS_COUNTERS)) {
      assert.equal(families.get(name)?.type, 'counter', name);
      assert.equal(families.get(name)?.samples[0]?.value, counts[field as keyof typeof counts], name);
    }
  });

  it('VMs by state name every state; the pool is read from the IPAM report', async () => {
    const registry = new Registry();
    registerVmMetrics(registry, { vms: () => [{ state: 'running' }, { state: 'running' }, { state: 'failed' }], ipam: () => ({ leased: 3, size: 155, free: 150 }) });
    const got = await samples(registry);
    for (const line of [
      'volant_vms{"state":"running"} 2',
      'volant_vms{"state":"failed"} 1',
      'volant_vms{"state":"creating"} 0',
      'volant_ip_leases{} 3',
      'volant_ip_pool_addresses{} 155',
      'volant_ip_pool_free{} 150',
    ]) {
      assert.ok(got.includes(line), `${line} in ${got.join('\n')}`);
    }
  });
});
