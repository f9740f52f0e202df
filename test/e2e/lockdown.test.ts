/**
 * Secure by default in every network mode, end to end on a real kernel under QEMU (TCG) with
 * volantd in a private network namespace (test/support/e2e-env.ts): Volant's own DHCP server
 * (`volar setup --dhcp`, dnsmasq) on the bridge, a dhcp VM and a bridged VM, both with an
 * allowlist, both running the `probe` TEST FIXTURE workload (test/fixtures/probe-plugin), which
 * tries to get out the way an attacker inside the VM would. For each VM:
 *  - a direct TCP connect to the outside world fails;
 *  - so does the same connect from a spoofed MAC, and from a spoofed source address;
 *  - an allow-listed name is reached through the egress proxy;
 *  - the other VM's egress listener cannot be used (its own can).
 * Also: the dhcp VM's address comes from Volant's DHCP range and volantd knows it (its lease).
 *
 * The VMs run without a vsock device (`vmm.qemu.vsock: vhost-kernel`, and this host has no
 * /dev/vhost-vsock), so kestrel is reached over TCP on the bridge and egress goes to a TCP
 * listener on the bridge address: the paths the lockdown must hold on for a VMM without vsock.
 * Needs root, qemu-system-x86_64 and dnsmasq; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseIPv4 } from '../../shared/ipv4.js';
import { ALLOWED_NAME, type E2eEnv, startE2eEnv, WORLD_IP } from '../support/e2e-env.js';
import { REPO_ROOT } from '../support/kernel.js';
import { e2eSkipReason } from '../support/qemu.js';
import { skipUnlessStrict } from '../support/strict.js';

const SUITE_TIMEOUT_MS = 25 * 60_000;
const CREATE_TIMEOUT_MS = 8 * 60_000;
/** Volant's default DHCP range: below the pool (.100–.254). */
const DHCP_FIRST = '192.168.127.10';
const DHCP_LAST = '192.168.127.99';
const SPOOFED_ADDRESS = '192.168.127.77';

const skip = skipUnlessStrict(e2eSkipReason({ dnsmasq: true }));

interface VmView {
  name: string;
  state: string;
  ip?: string;
  guest_ip?: string;
  mac?: string;
  pid?: number;
  network_mode?: string;
}

describe('lockdown end to end: a dhcp VM and a bridged VM with an allowlist (QEMU, Volant DHCP)', { skip, timeout: SUITE_TIMEOUT_MS }, () => {
  let env: E2eEnv;
  const egressOf = new Map<string, string>();

  before(async () => {
    env = await startE2eEnv({ dhcp: true, extraConfig: { vmm: { prefer: 'qemu', accel: 'tcg', qemu: { vsock: 'vhost-kernel' } } } });
  });
  after(async () => {
    await env?.dispose();
  });

  async function probe(vm: string, path: string): Promise<Record<string, unknown>> {
    const r = await env.api('GET', `/api/v1/vms/${vm}/proxy${path}`);
    assert.equal(r.status, 200, `${vm} ${path}: ${r.status} ${r.text}`);
    return r.json as Record<string, unknown>;
  }

  test('build the probe fixture, boot a dhcp VM and a bridged VM', { timeout: CREATE_TIMEOUT_MS + 300_000 }, async () => {
    const buildDir = join(env.stateDir, 'probe-build');
    const b = await env.volar(['plugins', 'build', join(REPO_ROOT, 'test', 'fixtures', 'probe-plugin'), '-o', buildDir, '--kernel', env.kernel.vmlinuz, '--modules', env.kernel.modulesDir], { timeoutMs: 300_000 });
    assert.equal(b.code, 0, b.stderr + b.stdout);
    const i = await env.volar(['plugins', 'install', buildDir]);
    assert.equal(i.code, 0, i.stderr + i.stdout);

    const started = Date.now();
    const [d, br] = await Promise.all([
      env.volar(['vms', 'create', 'dvm', '--plugin', 'probe', '--network', 'dhcp', '--memory', '512'], { timeoutMs: CREATE_TIMEOUT_MS }),
      env.volar(['vms', 'create', 'bvm', '--plugin', 'probe', '--memory', '512'], { timeoutMs: CREATE_TIMEOUT_MS }),
    ]);
    assert.equal(d.code, 0, `dhcp VM: ${d.stderr}${d.stdout}\n${readFileSync(join(env.stateDir, 'volantd.out'), { encoding: 'utf8', flag: 'a+' }).slice(-3000)}`);
    assert.equal(br.code, 0, `bridged VM: ${br.stderr}${br.stdout}`);
    console.log(`  both running after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const name of ['dvm', 'bvm']) {
      const view = (await env.api('GET', `/api/v1/vms/${name}`)).json as VmView;
      if (view.pid) env.track(view.pid);
      assert.equal(view.state, 'running');
      const info = await probe(name, '/info');
      assert.match(String(info.egress), /^tcp:192\.168\.127\.1:\d+$/, `${name} reaches its egress listener over TCP on the bridge: ${JSON.stringify(info)}`);
      egressOf.set(name, String(info.egress).slice('tcp:'.length));
    }
  });

  test("the dhcp VM leased its address from Volant's DHCP server, and volantd is bound to that lease", async () => {
    const view = (await env.api('GET', `/api/v1/vms/dvm`)).json as VmView;
    assert.equal(view.network_mode, 'dhcp');
    assert.equal(view.ip, undefined, 'no address from the IPAM pool');
    const info = await probe('dvm', '/info');
    const address = (info.eth0 as string[])[0]!;
    const n = parseIPv4(address);
    assert.ok(n >= parseIPv4(DHCP_FIRST) && n <= parseIPv4(DHCP_LAST), `${address} lies in Volant's DHCP range`);
    assert.equal(view.guest_ip, address, "volantd knows the lease (from dnsmasq's lease file)");
    const leases = readFileSync(join(env.stateDir, 'dhcp', 'dnsmasq.leases'), 'utf8');
    assert.match(leases, new RegExp(`^\\d+ ${view.mac} ${address.replace(/\./g, '\\.')} `, 'm'));
  });

  for (const [vm, other] of [
    ['dvm', 'bvm'],
    ['bvm', 'dvm'],
  ] as const) {
    const kind = vm === 'dvm' ? 'dhcp' : 'bridged';

    test(`${kind} VM: no direct connect to the outside world, not from a spoofed MAC, not from a spoofed address`, async () => {
      const direct = await probe(vm, `/connect?host=${WORLD_IP}&port=80`);
      assert.equal(direct.connected, false, `direct: ${JSON.stringify(direct)}`);
      const mac = await probe(vm, `/connect?host=${WORLD_IP}&port=80&spoof=mac`);
      assert.equal(mac.connected, false, `spoofed MAC: ${JSON.stringify(mac)}`);
      const ip = await probe(vm, `/connect?host=${WORLD_IP}&port=80&spoof=ip&as=${SPOOFED_ADDRESS}`);
      assert.equal(ip.connected, false, `spoofed address: ${JSON.stringify(ip)}`);
      // Itself again afterwards: the host still reaches it, with its own address.
      assert.deepEqual((await probe(vm, '/info')).eth0, [(await env.api('GET', `/api/v1/vms/${vm}`)).json as VmView].map((v) => v.guest_ip));
    });

    test(`${kind} VM: an allow-listed name through the egress proxy`, async () => {
      const r = await probe(vm, `/fetch?url=${encodeURIComponent(`http://${ALLOWED_NAME}/from-${vm}`)}`);
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.match(String(r.body), /"world":true/);
    });

    test(`${kind} VM: the other VM's egress listener cannot be used; its own can`, async () => {
      const own = await probe(vm, `/tunnel?proxy=${egressOf.get(vm)}&target=${ALLOWED_NAME}:443`);
      assert.equal(own.status, 200, `its own listener: ${JSON.stringify(own)}`);
      const borrowed = await probe(vm, `/tunnel?proxy=${egressOf.get(other)}&target=${ALLOWED_NAME}:443`);
      assert.notEqual(borrowed.status, 200, `${other}'s listener: ${JSON.stringify(borrowed)}`);
    });
  }

  test('both VMs go with their taps and rules on delete', async () => {
    for (const name of ['dvm', 'bvm']) {
      const del = await env.volar(['vms', 'delete', name, '--force']);
      assert.equal(del.code, 0, del.stderr);
    }
    const rules = (await env.inHost(['iptables', '-w', '-S'])).stdout + (await env.inHost(['ebtables', '-L'])).stdout;
    assert.doesNotMatch(rules, /-i vt|volant:vt/, rules);
  });
});
