/**
 * Bridged VMs against real host networking inside a private network namespace (root only): the
 * orchestrator makes the VM's tap on the bridge and its lockdown rules, and releases both when
 * the VM stops, its VMM is SIGKILLed, or it is deleted; reconcile at start-up deletes Volant taps
 * no live VM owns (and leaves foreign ones alone). The VMM is the FakeVmmLauncher TEST DOUBLE
 * (no KVM / Cloud Hypervisor here); the store is a real SQLite file.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tryParseCidr } from '../../shared/ipv4.js';
import { tapName } from '../../shared/names.js';
import { tapNetwork } from '../../host/daemon/network.js';
import { createNetworkManager } from '../../host/network/index.js';
import { vmTag } from '../../host/network/rules.js';
import { createNetns, type NetNs, netnsSkipReason } from '../support/netns.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';
import { skipUnlessStrict } from '../support/strict.js';
import { eventually } from '../support/eventually.js';

const skip = skipUnlessStrict(netnsSkipReason());
const BRIDGE = 'vbr0';
const HOST_CIDR = '192.168.127.1/24';
/** A per-VM allowlist (outbound itself stays off, so no egress proxy is needed): the tap is locked down. */
const LOCKED = { proxy: { allowed_domains: ['example.com'] } };

describe('orchestrator with real taps and firewall rules in a netns', { skip }, () => {
  let ns: NetNs;
  let h: Harness;
  const links = async () => (await ns.run(['ip', '-o', 'link', 'show'])).split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '');
  const rules = async () => (await ns.run(['iptables', '-w', '-S'])) + (await ns.exec(['ebtables', '-L'])).stdout;

  before(async () => {
    ns = await createNetns('orch');
    const manager = createNetworkManager({ runner: ns.runner });
    await manager.ensureBridge({ name: BRIDGE, cidr: HOST_CIDR });
    await manager.ensureNat({ bridge: BRIDGE, subnet: HOST_CIDR });
    // A stray Volant tap (as if a VM's volantd died) and a foreign tap that merely starts with "vt".
    await manager.createTap({ name: tapName('ghost'), bridge: BRIDGE });
    await ns.run(['ip', 'tuntap', 'add', 'dev', 'vtforeign', 'mode', 'tap']);
    h = await startHarness({ tag: 'orchnet', network: tapNetwork(manager, BRIDGE, tryParseCidr(HOST_CIDR)!) });
    const res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir('br', { mode: 'bridged' }) } });
    assert.equal(res.status, 201);
  });
  after(async () => {
    await h?.close();
    await ns?.dispose();
  });

  it('start-up reconcile removed the stray Volant tap but not the foreign one', async () => {
    const names = await links();
    assert.ok(!names.includes(tapName('ghost')), names.join(' '));
    assert.ok(names.includes('vtforeign'));
  });

  it('a bridged VM gets a leased address, its tap on the bridge and lockdown rules; all released on stop and delete', async () => {
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'b1', plugin: 'br', ip: '192.168.127.150', network: LOCKED } });
    assert.equal(res.status, 201, await res.clone().text());
    const vm = (await res.json()) as { ip: string; tap: string; state: string };
    assert.equal(vm.ip, '192.168.127.150');
    assert.equal(vm.tap, tapName('b1'));
    const link = await ns.run(['ip', '-o', 'link', 'show', vm.tap]);
    assert.match(link, new RegExp(`master ${BRIDGE}`));
    assert.match(await rules(), new RegExp(vmTag(vm.tap)));

    const dup = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'b2', plugin: 'br', ip: '192.168.127.150' } });
    assert.equal(dup.status, 409);
    assert.equal(((await dup.json()) as { error: { code: string } }).error.code, 'IP_TAKEN');
    assert.ok(!(await links()).includes(tapName('b2')), 'the refused create made no tap');

    assert.equal((await h.api('/api/v1/vms/b1/stop', { method: 'POST' })).status, 200);
    assert.ok(!(await links()).includes(vm.tap), 'stop removes the tap');
    assert.doesNotMatch(await rules(), new RegExp(vmTag(vm.tap)), 'stop removes the lockdown');
    const restarted = (await (await h.api('/api/v1/vms/b1/start', { method: 'POST' })).json()) as { ip: string };
    assert.equal(restarted.ip, '192.168.127.150', 'same address after restart');
    assert.equal((await h.api('/api/v1/vms/b1?force=1', { method: 'DELETE' })).status, 204);
    assert.ok(!(await links()).includes(vm.tap));
    assert.equal((h.daemon.store.db.prepare('SELECT count(*) AS n FROM ip_leases').get() as { n: number }).n, 0);
  });

  it('a bridged VM without allowed_domains keeps plain NAT: only the spoof guard on its tap, no confinement', async () => {
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'open1', plugin: 'br' } });
    assert.equal(res.status, 201, await res.clone().text());
    const vm = (await res.json()) as { tap: string; ip: string; mac: string };
    assert.match(await ns.run(['ip', '-o', 'link', 'show', vm.tap]), new RegExp(`master ${BRIDGE}`));
    const all = await rules();
    assert.doesNotMatch(all, new RegExp(vmTag(vm.tap)), 'no L3 confinement');
    assert.match(all, new RegExp(`-i ${vm.tap} --ip-src ! ${vm.ip.replace(/\./g, '\\.')} -j DROP`), 'IPv4 only from its lease');
    assert.equal((await h.api('/api/v1/vms/open1?force=1', { method: 'DELETE' })).status, 204);
    assert.doesNotMatch(await rules(), new RegExp(`-i ${vm.tap}`), 'the guard goes with the VM');
  });

  it('VMM SIGKILLed: tap and rules released, state failed', async () => {
    const vm = (await (await h.api('/api/v1/vms', { method: 'POST', json: { name: 'b3', plugin: 'br', network: LOCKED } })).json()) as { pid: number; tap: string; ip: string };
    assert.ok(vm.ip.startsWith('192.168.127.'));
    process.kill(vm.pid, 'SIGKILL');
    await eventually(() => h.daemon.orchestrator.get('b3').state === 'failed', { what: 'b3 failed after its VMM was killed' });
    assert.ok(!(await links()).includes(vm.tap));
    assert.doesNotMatch(await rules(), new RegExp(vmTag(vm.tap)));
    await h.daemon.orchestrator.delete('b3');
  });

  it('pool exhaustion answers 503 POOL_EXHAUSTED and leaves no tap', async () => {
    // Fill the pool by leasing every address straight in the store (fast), then ask for one more.
    const before = await links();
    const r = h.daemon.store.db.prepare('SELECT count(*) AS n FROM vms').get() as { n: number };
    assert.equal(r.n, 0);
    for (let i = 0; i < 155; i++) h.daemon.store.vms.createWithLease({ name: `fill${i}`, plugin: 'br', config: { name: `fill${i}`, plugin: 'br' } }, { mode: 'bridged' });
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'onemore', plugin: 'br' } });
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'POOL_EXHAUSTED');
    assert.deepEqual(await links(), before);
    for (let i = 0; i < 155; i++) h.daemon.store.vms.deleteWithRelease(`fill${i}`);
  });
});
