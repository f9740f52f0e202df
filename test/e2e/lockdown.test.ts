/**
 * Secure by default in every network mode, end to end on a real kernel under QEMU (TCG) with
 * volantd in a private network namespace (test/support/e2e-env.ts): Volant's own DHCP server
 * (`volar setup --dhcp`, dnsmasq) on the bridge, a dhcp VM and a bridged VM, both with an
 * allowlist, both running the `probe` TEST FIXTURE workload (test/fixtures/probe-plugin), which
 * tries to get out the way an attacker inside the VM would.
 *
 * The same suite runs in both QEMU vsock configurations (docs/vsock.md):
 *  - the default, `vmm.qemu.vsock: vhost-user`: every VM has Volant's userspace vsock device,
 *    kestrel and egress go over the hybrid vsock socket, and a confined VM's tap carries nothing
 *    to the host but DHCP;
 *  - `vhost-kernel` on this host, which has no /dev/vhost-vsock: no vsock at all, kestrel is
 *    reached over TCP on the bridge and egress goes to a TCP listener on the bridge address.
 *
 * For each VM, in each configuration:
 *  - a direct TCP connect to the outside world fails, also from a spoofed MAC, from a spoofed
 *    source address, and in priority-tagged frames (VLAN id 0: a receiving Linux stack takes them
 *    as untagged, so they must not slip past rules that look for IPv4);
 *  - an allow-listed name is reached through kestrel's forwarder and the egress proxy;
 *  - a TCP listener the test starts on the host (bridge and uplink addresses) cannot be reached,
 *    plain or tagged, while the host itself reaches it;
 *  - the other VM cannot be reached directly (TCP), and datagrams sent to it, plain or tagged,
 *    never arrive, while the host's do;
 *  - without vsock: the other VM's egress listener cannot be used (its own can); with vsock there
 *    is no TCP egress listener at all: volantd's namespace listens on TCP only on loopback.
 * Also: the dhcp VM's address comes from Volant's DHCP range, volantd binds it (its lease), and
 * the lease is renewed through the lockdown (a 120 s lease, renewed at half time).
 * Needs root, qemu-system-x86_64 and dnsmasq; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseIPv4 } from '../../shared/ipv4.js';
import { ALLOWED_NAME, type E2eEnv, startE2eEnv, UPLINK_IP, WORLD_IP } from '../support/e2e-env.js';
import { eventually } from '../support/eventually.js';
import { REPO_ROOT } from '../support/kernel.js';
import { e2eSkipReason } from '../support/qemu.js';
import { skipUnlessStrict } from '../support/strict.js';

const SUITE_TIMEOUT_MS = 25 * 60_000;
const CREATE_TIMEOUT_MS = 8 * 60_000;
/** Volant's default DHCP range: below the pool (.100–.254). */
const DHCP_FIRST = '192.168.127.10';
const DHCP_LAST = '192.168.127.99';
const BRIDGE = 'vbr0';
const BRIDGE_IP = '192.168.127.1';
const SPOOFED_ADDRESS = '192.168.127.77';
/** dnsmasq's shortest lease; udhcpc renews at half of it. */
const LEASE_TIME_S = 120;
const RENEWAL_TIMEOUT_MS = (LEASE_TIME_S + 30) * 1000;
/** The probe's HTTP and UDP ports (test/fixtures/probe-plugin). */
const PROBE_PORT = 3000;
const PROBE_UDP_PORT = 3001;
const HOST_CONNECT_TIMEOUT_MS = 3000;

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

interface Configuration {
  title: string;
  /** `vmm` config; undefined keeps the default. */
  vmm?: Record<string, unknown>;
  /** How the probe's kernel command line says egress goes (`volant.egress=`). */
  egress: 'vsock' | 'tcp';
}

const CONFIGURATIONS: Configuration[] = [
  { title: 'default configuration (vmm.qemu.vsock: vhost-user): agent and egress over the vsock device', egress: 'vsock' },
  {
    title: 'vmm.qemu.vsock: vhost-kernel on a host without /dev/vhost-vsock: agent and egress over TCP on the bridge',
    vmm: { prefer: 'qemu', accel: 'tcg', qemu: { vsock: 'vhost-kernel' } },
    egress: 'tcp',
  },
];

/** Run with node inside volantd's namespace: a TCP connect; prints ok or the error. */
const CONNECT = `
const net = require('node:net');
const [host, port, timeoutMs] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
const done = (r) => { console.log(r); s.destroy(); };
s.setTimeout(Number(timeoutMs), () => done('timeout'));
s.once('connect', () => done('ok'));
s.once('error', (e) => done(e.code));
`;

/** Run with node inside volantd's namespace: UDP datagrams carrying a text. */
const SEND = `
const s = require('node:dgram').createSocket('udp4');
const [host, port, text] = process.argv.slice(1);
let left = 3;
for (let i = 0; i < 3; i++) s.send(text, Number(port), host, () => { if (--left === 0) s.close(); });
`;

/** Run with node inside volantd's namespace: a TCP listener on every address; prints its port, then each peer. */
const LISTENER = `
const server = require('node:net').createServer((s) => { console.log('peer ' + s.remoteAddress); s.end('ok'); });
server.listen(0, '0.0.0.0', () => console.log('port ' + server.address().port));
`;

for (const configuration of CONFIGURATIONS) {
  describe(`lockdown end to end, ${configuration.title}: a dhcp VM and a bridged VM with an allowlist (QEMU, Volant DHCP)`, { skip, timeout: SUITE_TIMEOUT_MS }, () => {
    let env: E2eEnv;
    const views = new Map<string, VmView>();
    const egressOf = new Map<string, string>();
    let bridgeMac: string;

    before(async () => {
      env = await startE2eEnv({ dhcp: true, extraConfig: { ...(configuration.vmm ? { vmm: configuration.vmm } : {}), dhcp: { lease_time_s: LEASE_TIME_S } } });
      bridgeMac = (await env.inHost(['cat', `/sys/class/net/${BRIDGE}/address`])).stdout.trim();
    });
    after(async () => {
      await env?.dispose();
    });

    async function probe(vm: string, path: string): Promise<Record<string, unknown>> {
      const r = await env.api('GET', `/api/v1/vms/${vm}/proxy${path}`);
      assert.equal(r.status, 200, `${vm} ${path}: ${r.status} ${r.text}`);
      return r.json as Record<string, unknown>;
    }

    async function view(vm: string): Promise<VmView> {
      return (await env.api('GET', `/api/v1/vms/${vm}`)).json as VmView;
    }

    /** A TCP connect from volantd's namespace (the host itself). */
    async function hostConnects(host: string, port: number): Promise<string> {
      return (await env.inHost([process.execPath, '-e', CONNECT, host, String(port), String(HOST_CONNECT_TIMEOUT_MS)])).stdout.trim();
    }

    /** The dnsmasq lease line for a MAC: expiry (Unix seconds) and address. */
    function leaseOf(mac: string): { expires: number; address: string } | undefined {
      const text = readFileSync(join(env.stateDir, 'dhcp', 'dnsmasq.leases'), 'utf8');
      const line = text.split('\n').find((l) => l.split(' ')[1] === mac);
      return line ? { expires: Number(line.split(' ')[0]), address: line.split(' ')[2]! } : undefined;
    }

    test('build the probe fixture, boot a dhcp VM and a bridged VM', { timeout: CREATE_TIMEOUT_MS + 300_000 }, async () => {
      const buildDir = join(env.stateDir, 'probe-build');
      const b = await env.buildPlugin(join(REPO_ROOT, 'test', 'fixtures', 'probe-plugin'), buildDir);
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
        const v = await view(name);
        if (v.pid) env.track(v.pid);
        assert.equal(v.state, 'running');
        const info = await probe(name, '/info');
        if (configuration.egress === 'vsock') {
          assert.equal(info.egress, 'vsock', `${name} reaches its egress listener over vsock: ${JSON.stringify(info)}`);
        } else {
          assert.match(String(info.egress), /^tcp:192\.168\.127\.1:\d+$/, `${name} reaches its egress listener over TCP on the bridge: ${JSON.stringify(info)}`);
          egressOf.set(name, String(info.egress).slice('tcp:'.length));
        }
      }
    });

    test("the dhcp VM leased its address from Volant's DHCP server, and volantd is bound to that lease", async () => {
      const v = await view('dvm');
      assert.equal(v.network_mode, 'dhcp');
      assert.equal(v.ip, undefined, 'no address from the IPAM pool');
      const info = await probe('dvm', '/info');
      const address = (info.eth0 as string[])[0]!;
      const n = parseIPv4(address);
      assert.ok(n >= parseIPv4(DHCP_FIRST) && n <= parseIPv4(DHCP_LAST), `${address} lies in Volant's DHCP range`);
      // Over vsock the create does not wait for the address; volantd binds it when dnsmasq writes the lease.
      await eventually(async () => (await view('dvm')).guest_ip === address, { timeoutMs: 30_000, what: `volantd knows the lease ${address} (from dnsmasq's lease file)` });
      assert.equal(leaseOf(v.mac!)?.address, address);
      for (const name of ['dvm', 'bvm']) views.set(name, await view(name));
    });

    for (const [vm, other] of [
      ['dvm', 'bvm'],
      ['bvm', 'dvm'],
    ] as const) {
      const kind = vm === 'dvm' ? 'dhcp' : 'bridged';

      test(`${kind} VM: no direct connect to the outside world, not from a spoofed MAC, not from a spoofed address, not in priority-tagged frames`, async () => {
        const direct = await probe(vm, `/connect?host=${WORLD_IP}&port=80`);
        assert.equal(direct.connected, false, `direct: ${JSON.stringify(direct)}`);
        const mac = await probe(vm, `/connect?host=${WORLD_IP}&port=80&spoof=mac`);
        assert.equal(mac.connected, false, `spoofed MAC: ${JSON.stringify(mac)}`);
        const ip = await probe(vm, `/connect?host=${WORLD_IP}&port=80&spoof=ip&as=${SPOOFED_ADDRESS}`);
        assert.equal(ip.connected, false, `spoofed address: ${JSON.stringify(ip)}`);
        const tagged = await probe(vm, `/connect?host=${WORLD_IP}&port=80&spoof=tag&mac=${bridgeMac}`);
        assert.equal(tagged.connected, false, `priority-tagged, routed by the host: ${JSON.stringify(tagged)}`);
        // Itself again afterwards: the host still reaches it, with its own address.
        assert.deepEqual((await probe(vm, '/info')).eth0, [(await view(vm)).guest_ip]);
      });

      test(`${kind} VM: an allow-listed name through kestrel's forwarder and the egress proxy`, async () => {
        const r = await probe(vm, `/fetch?url=${encodeURIComponent(`http://${ALLOWED_NAME}/from-${vm}`)}`);
        assert.equal(r.status, 200, JSON.stringify(r));
        assert.match(String(r.body), /"world":true/);
        const tunnel = await probe(vm, `/tunnel?proxy=127.0.0.1:3128&target=${ALLOWED_NAME}:443`);
        assert.equal(tunnel.status, 200, `CONNECT through kestrel's forwarder: ${JSON.stringify(tunnel)}`);
      });

      test(`${kind} VM: no TCP connection to a listener on the host, on the bridge or the uplink address, plain or tagged`, async (t) => {
        const listener = env.hostNs.spawn([process.execPath, '-e', LISTENER]);
        t.after(async () => {
          if (listener.exitCode !== null || listener.signalCode !== null) return;
          const exited = once(listener, 'exit');
          listener.kill('SIGKILL');
          await exited;
        });
        let out = '';
        listener.stdout!.on('data', (c: Buffer) => {
          out += c.toString();
        });
        const port = Number(await eventually(() => /^port (\d+)$/m.exec(out)?.[1], { what: 'the test listener in volantd namespace' }));
        assert.equal(await hostConnects(BRIDGE_IP, port), 'ok', 'the host itself reaches the listener on the bridge address');
        for (const host of [BRIDGE_IP, UPLINK_IP]) {
          const plain = await probe(vm, `/connect?host=${host}&port=${port}`);
          assert.equal(plain.connected, false, `${host}:${port}: ${JSON.stringify(plain)}`);
          const tagged = await probe(vm, `/connect?host=${host}&port=${port}&spoof=tag&mac=${bridgeMac}`);
          assert.equal(tagged.connected, false, `${host}:${port} priority-tagged: ${JSON.stringify(tagged)}`);
        }
        // One connection accepted: the host's own (its source is one of the host's addresses).
        const peers = [...out.matchAll(/^peer (\S+)$/gm)].map((m) => m[1]!);
        assert.equal(peers.length, 1, out);
        assert.ok([BRIDGE_IP, UPLINK_IP].includes(peers[0]!), out);
      });

      test(`${kind} VM: the other VM cannot be reached directly: no TCP connect, no datagram plain or tagged (the host's arrive)`, async () => {
        const target = views.get(other)!;
        assert.equal(await hostConnects(target.guest_ip!, PROBE_PORT), 'ok', `the host reaches ${other}'s workload port`);
        const tcp = await probe(vm, `/connect?host=${target.guest_ip}&port=${PROBE_PORT}`);
        assert.equal(tcp.connected, false, `${vm} → ${other} TCP: ${JSON.stringify(tcp)}`);
        const tcpTagged = await probe(vm, `/connect?host=${target.guest_ip}&port=${PROBE_PORT}&spoof=tag&mac=${target.mac}`);
        assert.equal(tcpTagged.connected, false, `${vm} → ${other} TCP, priority-tagged: ${JSON.stringify(tcpTagged)}`);

        const marker = `${vm}-to-${other}-${Date.now()}`;
        for (const [how, query] of [
          ['plain', ''],
          ['tagged', `&spoof=tag&mac=${target.mac}`],
        ] as const) {
          const sent = await probe(vm, `/send?host=${target.guest_ip}&port=${PROBE_UDP_PORT}&text=${marker}-${how}${query}`);
          assert.equal(sent.sent, true, JSON.stringify(sent));
        }
        await env.inHost([process.execPath, '-e', SEND, target.guest_ip!, String(PROBE_UDP_PORT), `${marker}-host`]);
        // The host's datagram arrives, so the VM's would have by now had they passed.
        const seen = await eventually(
          async () => {
            const texts = ((await probe(other, '/seen')).datagrams as { text: string }[]).map((d) => d.text);
            return texts.includes(`${marker}-host`) ? texts : undefined;
          },
          { timeoutMs: 15_000, what: `the host's datagram reaching ${other}` },
        );
        assert.deepEqual(
          seen.filter((text) => text.startsWith(`${marker}-`) && text !== `${marker}-host`),
          [],
          `${vm}'s datagrams reached ${other}`,
        );
      });

      if (configuration.egress === 'tcp') {
        test(`${kind} VM: the other VM's egress listener cannot be used; its own can`, async () => {
          const own = await probe(vm, `/tunnel?proxy=${egressOf.get(vm)}&target=${ALLOWED_NAME}:443`);
          assert.equal(own.status, 200, `its own listener: ${JSON.stringify(own)}`);
          const borrowed = await probe(vm, `/tunnel?proxy=${egressOf.get(other)}&target=${ALLOWED_NAME}:443`);
          assert.notEqual(borrowed.status, 200, `${other}'s listener: ${JSON.stringify(borrowed)}`);
        });
      }
    }

    if (configuration.egress === 'vsock') {
      test('no TCP egress listener at all: in volantd namespace only the API listens on TCP, on loopback', async () => {
        const listening = (await env.inHost(['ss', '-Htln'])).stdout
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => l.trim().split(/\s+/)[3]);
        assert.deepEqual(listening, [env.tcp.address], `TCP listeners: ${JSON.stringify(listening)}`);
      });
    }

    test('the dhcp lease is renewed through the lockdown, and volantd stays bound to it', { timeout: RENEWAL_TIMEOUT_MS + 30_000 }, async () => {
      const mac = views.get('dvm')!.mac!;
      const first = leaseOf(mac);
      assert.ok(first, `a lease for ${mac}`);
      const renewed = await eventually(() => {
        const now = leaseOf(mac);
        return now !== undefined && now.expires > first.expires ? now : undefined;
      }, { timeoutMs: RENEWAL_TIMEOUT_MS, pollMs: 1000, what: `dnsmasq renewing the lease of ${mac} (expiring at ${first.expires})` });
      assert.equal(renewed.address, first.address, 'the same address');
      assert.equal((await view('dvm')).guest_ip, first.address);
      assert.deepEqual((await probe('dvm', '/info')).eth0, [first.address]);
    });

    test('both VMs go with their taps and rules on delete', async () => {
      for (const name of ['dvm', 'bvm']) {
        const del = await env.volar(['vms', 'delete', name, '--force']);
        assert.equal(del.code, 0, del.stderr);
      }
      const rules = (await env.inHost(['iptables', '-w', '-S'])).stdout + (await env.inHost(['ebtables', '-L'])).stdout;
      assert.doesNotMatch(rules, /-i vt|volant:vt/, rules);
    });
  });
}
