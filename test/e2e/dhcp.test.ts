/**
 * dhcp mode end to end on a real kernel: dnsmasq (Debian's dnsmasq-base) serves DHCP on the
 * bridge inside volantd's private namespace (see test/support/e2e-env.ts); a VM created with
 * `--network dhcp` leases an address from it with busybox udhcpc, kestrel announces itself to
 * the gateway, and volantd finds the guest by MAC in the bridge's neighbour table (the API's
 * guest_ip); kestrel itself is reached over the VM's vsock device. No IPAM lease is taken.
 *
 * Needs root, qemu-system-x86_64 and dnsmasq; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseIPv4 } from '../../shared/ipv4.js';
import { ALLOWED_NAME, type E2eEnv, startE2eEnv } from '../support/e2e-env.js';
import { eventually } from '../support/eventually.js';
import { REPO_ROOT } from '../support/kernel.js';
import { e2eSkipReason } from '../support/qemu.js';
import { skipUnlessStrict } from '../support/strict.js';

const SUITE_TIMEOUT_MS = 20 * 60_000;
const CREATE_TIMEOUT_MS = 6 * 60_000;
const DHCP_FIRST = '192.168.127.20';
const DHCP_LAST = '192.168.127.50';
const VM = 'leased';
/** An adopted QEMU is no child of this volantd: its exit is reaped by init, a moment after delete returns. */
const PROCESS_EXIT_GRACE_MS = 10_000;

function alive(pid: number): boolean {
  let stat: string;
  try {
    process.kill(pid, 0);
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // A zombie still answers signal 0 until init reaps it.
  return !/^\S+ \(.*\) Z /.test(stat);
}

async function processGone(pid: number, timeoutMs: number): Promise<boolean> {
  return eventually(() => !alive(pid), { timeoutMs, what: `pid ${pid} gone` }).catch(() => false);
}

const skip = skipUnlessStrict(e2eSkipReason({ dnsmasq: true }));

interface VmView {
  name: string;
  state: string;
  ip?: string | null;
  tap?: string;
  mac?: string;
  pid?: number;
  network_mode?: string;
}

describe('dhcp-mode VM end to end (QEMU, real kernel, dnsmasq on the bridge)', { skip, timeout: SUITE_TIMEOUT_MS }, () => {
  let env: E2eEnv;
  let leaseFile: string;
  let dnsmasq: ReturnType<E2eEnv['hostNs']['spawn']> | undefined;
  let dnsmasqLog = '';

  before(async () => {
    env = await startE2eEnv();
    leaseFile = join(env.stateDir, 'dnsmasq.leases');
    dnsmasq = env.hostNs.spawn([
      'dnsmasq',
      '--no-daemon',
      '--conf-file=/dev/null',
      '--port=0',
      '--interface=vbr0',
      '--bind-interfaces',
      `--dhcp-range=${DHCP_FIRST},${DHCP_LAST},255.255.255.0,12h`,
      `--dhcp-leasefile=${leaseFile}`,
      `--pid-file=${join(env.stateDir, 'dnsmasq.pid')}`,
    ]);
    dnsmasq.stdout?.on('data', (c: Buffer) => (dnsmasqLog += c.toString()));
    dnsmasq.stderr?.on('data', (c: Buffer) => (dnsmasqLog += c.toString()));
    env.track(dnsmasq.pid!);
    // Ready once it listens on the DHCP port on the bridge (or it died: say why).
    const server = dnsmasq;
    await eventually(async () => server.exitCode === null && /:67\b/.test((await env.inHost(['ss', '-ulnH', 'sport = :67'])).stdout), { what: `dnsmasq listening on vbr0:67 (${dnsmasqLog})` });
  });
  after(async () => {
    dnsmasq?.kill('SIGTERM');
    await env?.dispose();
  });

  async function vm(name: string): Promise<VmView> {
    const r = await env.api('GET', `/api/v1/vms/${name}`);
    assert.equal(r.status, 200, r.text);
    return r.json as VmView;
  }

  test('a dhcp VM leases from dnsmasq, is reached at that address, holds no IPAM lease, and is cleaned up', { timeout: CREATE_TIMEOUT_MS + 300_000 }, async () => {
    const buildDir = join(env.stateDir, 'hello-build');
    const b = await env.buildPlugin(join(REPO_ROOT, 'examples', 'hello'), buildDir);
    assert.equal(b.code, 0, b.stderr + b.stdout);
    const i = await env.volar(['plugins', 'install', buildDir]);
    assert.equal(i.code, 0, i.stderr + i.stdout);

    const startedAt = Date.now();
    const c = await env.volar(['vms', 'create', VM, '--plugin', 'hello', '--network', 'dhcp', '--json'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, `create: ${c.stderr}${c.stdout}\ndnsmasq: ${dnsmasqLog}`);
    console.log(`  create → running: ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
    const view = await vm(VM);
    if (view.pid) env.track(view.pid);
    assert.equal(view.state, 'running', JSON.stringify(view));
    assert.equal(view.network_mode, 'dhcp');
    assert.ok(view.ip === undefined || view.ip === null, `a dhcp VM holds no pool address: ${JSON.stringify(view)}`);

    // kestrel, reached through the ingress at the discovered address, reports its lease.
    const health = await env.api('GET', `/api/v1/vms/${VM}/proxy/healthz`);
    assert.equal(health.status, 200, health.text);
    const h = health.json as { mode?: string; network?: { eth0?: { address?: string; prefix?: number; gateway?: string | null } | null } };
    assert.equal(h.mode, 'dhcp');
    const address = h.network?.eth0?.address;
    assert.ok(address, `kestrel reports a leased eth0 address: ${health.text}`);
    const n = parseIPv4(address);
    assert.ok(n >= parseIPv4(DHCP_FIRST) && n <= parseIPv4(DHCP_LAST), `${address} lies in dnsmasq's range ${DHCP_FIRST}–${DHCP_LAST}`);
    assert.equal(h.network?.eth0?.prefix, 24);
    assert.equal(h.network?.eth0?.gateway, '192.168.127.1', 'dnsmasq hands out the bridge address as router');
    console.log(`  leased ${address}`);
    const seen = (await env.api('GET', `/api/v1/vms/${VM}`)).json as { guest_ip?: string };
    assert.equal(seen.guest_ip, address, 'the API shows the address the guest got from DHCP');

    // The workload answers through the same route.
    const hello = await env.api('GET', `/api/v1/vms/${VM}/proxy/hello?via=dhcp`);
    assert.equal(hello.status, 200, hello.text);
    assert.deepEqual((hello.json as { query?: unknown }).query, { via: 'dhcp' });

    // With a DHCP server Volant does not run, the VM (hello allows allowed.test) is locked down by
    // its MAC and its egress listener is bound to that MAC: the allow-listed name is reached.
    const fetchAllowed = async (): Promise<{ status?: number }> =>
      (await env.api('GET', `/api/v1/vms/${VM}/proxy/fetch?url=${encodeURIComponent(`http://${ALLOWED_NAME}/dhcp`)}`)).json as { status?: number };
    assert.equal((await fetchAllowed()).status, 200, 'egress through the MAC-bound listener');

    // No lease from Volant's pool; dnsmasq's lease file holds the VM's MAC and that address.
    const ipam = await env.api('GET', '/api/v1/debug/ipam');
    assert.equal(ipam.status, 200, ipam.text);
    const report = ipam.json as { leased: number; leases: { vm: string; ip: string }[] };
    assert.ok(!report.leases.some((l) => l.vm === VM), `no IPAM lease for ${VM}: ${ipam.text}`);
    assert.equal(report.leased, 0);
    assert.ok(existsSync(leaseFile), 'dnsmasq wrote its lease file');
    const leases = readFileSync(leaseFile, 'utf8');
    const mac = view.mac ?? (await env.inHost(['ip', '-j', 'neigh', 'show', 'to', address])).stdout.match(/"lladdr":"([0-9a-f:]{17})"/)?.[1];
    assert.ok(mac, 'the VM MAC is known');
    assert.match(leases, new RegExp(`^\\d+ ${mac.toLowerCase()} ${address.replace(/\./g, '\\.')} `, 'm'), `dnsmasq leased ${address} to ${mac}:\n${leases}`);

    // A restarted volantd re-adopts the VM and finds its address again.
    await env.stopVolantd('SIGTERM');
    await env.startVolantd();
    assert.equal((await vm(VM)).state, 'running');
    const again = await env.api('GET', `/api/v1/vms/${VM}/proxy/healthz`);
    assert.equal(again.status, 200, `after volantd restart: ${again.text}`);
    assert.equal((await fetchAllowed()).status, 200, 'egress works after the restart: its listener came back on the port its command line names');

    // Delete: row, tap and process go; still no lease anywhere in the pool.
    const del = await env.volar(['vms', 'delete', VM, '--force']);
    assert.equal(del.code, 0, del.stderr + del.stdout);
    assert.equal((await env.api('GET', `/api/v1/vms/${VM}`)).status, 404);
    const links = await env.inHost(['ip', '-j', 'link', 'show']);
    assert.ok(view.tap && !links.stdout.includes(`"${view.tap}"`), `tap ${view.tap} removed`);
    if (view.pid) assert.ok(await processGone(view.pid, PROCESS_EXIT_GRACE_MS), `QEMU pid ${view.pid} is gone`);
    const after = (await env.api('GET', '/api/v1/debug/ipam')).json as { leased: number };
    assert.equal(after.leased, 0);
  });
});
