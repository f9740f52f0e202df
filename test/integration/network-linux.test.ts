// Real bridges, taps, NAT and VM lockdown inside network namespaces each test creates and
// deletes. A "VM" is a namespace behind a veth whose host end plays the tap (a real tap has no
// carrier without a VMM); an "internet" is another namespace routed through the host namespace.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LinuxNetworkManager } from '../../host/network/linux.js';
import { DryRunRunner } from '../../host/network/runner.js';
import { isVolantError } from '../../shared/errors.js';
import { macAddress, tapName } from '../../shared/names.js';
import { eventually } from '../support/eventually.js';
import { linkNamespaces, type NetNs, netnsSkipReason, withNetns } from '../support/netns.js';
import { hasCommand, skipUnlessStrict, strictSkip } from '../support/strict.js';

const skip = skipUnlessStrict(netnsSkipReason());
const AREA = 'network';
const PROBE_TIMEOUT_MS = 1500;

async function firewall(ns: NetNs): Promise<string> {
  const ipt = await ns.run(['iptables-save']);
  const eb = await ns.run(['ebtables', '-L']);
  return `${ipt}\n${eb}`;
}

function count(haystack: string, needle: RegExp): number {
  return haystack.split('\n').filter((l) => needle.test(l)).length;
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => isVolantError(e) && e.code === code);
}

const LISTENER = `
const net = require('node:net');
const [host, ...ports] = process.argv.slice(1);
let pending = ports.length;
for (const port of ports) net.createServer((s) => { s.end('ok:' + s.remoteAddress); }).listen(Number(port), host, () => { if (--pending === 0) console.log('ready'); });
`;

const CLIENT = `
const net = require('node:net');
const [timeoutMs, localAddress, ...targets] = process.argv.slice(1);
Promise.all(targets.map((t) => new Promise((resolve) => {
  const [host, port] = t.split(':');
  const s = net.connect({ host, port: Number(port), localAddress: localAddress === '-' ? undefined : localAddress });
  let data = '';
  const done = (r) => { s.destroy(); resolve([t, r]); };
  s.setTimeout(Number(timeoutMs), () => done('timeout'));
  s.on('data', (d) => { data += d; });
  s.on('end', () => done(data.startsWith('ok') ? 'ok' : 'closed'));
  s.on('error', (e) => done(e.code));
}))).then((r) => console.log(JSON.stringify(Object.fromEntries(r))));
`;

async function listen(ns: NetNs, host: string, ports: number[]): Promise<void> {
  const child = ns.spawn(['node', '-e', LISTENER, host, ...ports.map(String)]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`listener in ${ns.name} exited ${code}`)));
  });
}

/**
 * Sends ICMP echo requests as raw Ethernet frames from `ns` (Node has no packet socket):
 * argv IFACE SRC_MAC DST_MAC SRC_IP DST_IP TPID, where TPID `none` sends untagged frames and
 * 8100 / 88a8 add a VLAN tag with id 0 (a priority tag, which a receiving stack takes as no tag).
 */
const FRAMES = `
import socket, struct, sys
ifc, smac, dmac, sip, dip, tpid = sys.argv[1:7]
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
icmp = struct.pack('!BBHHH', 8, 0, 0, 0x7601, 1) + b'volant-tag'
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(sip), socket.inet_aton(dip))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
mac = lambda m: bytes(int(x, 16) for x in m.split(':'))
tag = b'' if tpid == 'none' else struct.pack('!HH', int(tpid, 16), 0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifc, 0))
for _ in range(3):
    s.send(mac(dmac) + mac(smac) + tag + struct.pack('!H', 0x0800) + ip + icmp)
`;

/** Sends three UDP datagrams from `ns`, source port `sport`, to `dst`:`dport`. */
const DATAGRAMS = `
const d = require('node:dgram').createSocket('udp4');
const [sport, dst, dport] = process.argv.slice(1);
d.bind(Number(sport), () => {
  let left = 3;
  for (let i = 0; i < 3; i++) d.send('volant', Number(dport), dst, () => { if (--left === 0) d.close(); });
});
`;

/** UDP datagrams `ns` received for a port nobody listens on (its NoPorts counter in /proc/net/snmp). */
async function udpNoPortsIn(ns: NetNs): Promise<number> {
  const [names, values] = (await ns.run(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  return Number(values!.split(/\s+/)[names!.split(/\s+/).indexOf('NoPorts')]);
}

/** ICMP echo requests `ns` has received so far (its own counter in /proc/net/snmp). */
async function echoesIn(ns: NetNs): Promise<number> {
  const [names, values] = (await ns.run(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Icmp:'));
  return Number(values!.split(/\s+/)[names!.split(/\s+/).indexOf('InEchos')]);
}

/**
 * Bridge `vbr0` on `<prefix>.1/24` with NAT, and each of `guests` behind a veth port `vt-vmN`
 * (playing its tap) as `<prefix>.(9+N)` with the MAC of `vmN` and a default route via the bridge.
 */
async function bridgeWithVms(host: NetNs, prefix: string, guests: NetNs[]): Promise<{ net: LinuxNetworkManager; vms: { ns: NetNs; port: string; ip: string; mac: string }[] }> {
  const net = new LinuxNetworkManager(host.runner);
  await net.ensureBridge({ name: 'vbr0', cidr: `${prefix}.1/24` });
  await net.ensureNat({ bridge: 'vbr0', subnet: `${prefix}.0/24` });
  const vms = guests.map((ns, i) => ({ ns, port: `vt-vm${i + 1}`, ip: `${prefix}.${10 + i}`, mac: macAddress(`vm${i + 1}`) }));
  for (const v of vms) {
    await linkNamespaces(host, v.port, v.ns, 'eth0');
    await host.run(['ip', 'link', 'set', v.port, 'master', 'vbr0', 'up']);
    await v.ns.run(['ip', 'link', 'set', 'eth0', 'address', v.mac, 'up']);
    await v.ns.run(['ip', 'addr', 'add', `${v.ip}/24`, 'dev', 'eth0']);
    await v.ns.run(['ip', 'route', 'add', 'default', 'via', `${prefix}.1`]);
  }
  return { net, vms };
}

/** Tries every target at once from `ns`; returns target → 'ok' | 'timeout' | error code. */
async function reach(ns: NetNs, targets: string[], localAddress = '-'): Promise<Record<string, string>> {
  return JSON.parse(await ns.run(['node', '-e', CLIENT, String(PROBE_TIMEOUT_MS), localAddress, ...targets]));
}

describe('bridge, tap and NAT', { skip }, () => {
  test('ensureBridge/ensureNat twice: bridge up with its address, each rule exactly once; teardown leaves nothing', () =>
    withNetns(AREA, 1, async (host) => {
      const net = new LinuxNetworkManager(host.runner);
      const before = await firewall(host);
      for (let i = 0; i < 2; i++) {
        await net.ensureBridge({ name: 'vbr0', cidr: '192.168.127.1/24' });
        await net.ensureNat({ bridge: 'vbr0', subnet: '192.168.127.1/24' });
      }
      const [link] = JSON.parse(await host.run(['ip', '-d', '-j', 'addr', 'show', 'dev', 'vbr0']));
      assert.equal(link.linkinfo.info_kind, 'bridge');
      assert.ok(link.flags.includes('UP'));
      assert.deepEqual(
        link.addr_info.filter((a: { family: string }) => a.family === 'inet').map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`),
        ['192.168.127.1/24'],
      );
      assert.equal((await host.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '1');
      const rules = await firewall(host);
      assert.equal(count(rules, /-A POSTROUTING -s 192\.168\.127\.0\/24 ! -o vbr0 .*-j MASQUERADE/), 1);
      assert.equal(count(rules, /-A FORWARD -i vbr0 .*-j ACCEPT/), 1);
      assert.equal(count(rules, /-A FORWARD -o vbr0 .*RELATED,ESTABLISHED.*-j ACCEPT/), 1);
      // The VM chains come first, ahead of the blanket ACCEPT, so lockdown cannot be bypassed.
      const forward = rules.split('\n').filter((l) => l.startsWith('-A FORWARD'));
      assert.match(forward[0]!, /^-A FORWARD -j VOLANT-FWD$/);
      assert.equal(count(rules, /-A INPUT -j VOLANT-IN/), 1);

      // Rules an older setup made for another bridge/subnet go too (found by their tag).
      await net.ensureNat({ bridge: 'vbrold', subnet: '10.9.0.0/24' });
      await net.removeNat({ bridge: 'vbr0', subnet: '192.168.127.0/24' });
      await net.removeBridge('vbr0');
      await net.removeNat({ bridge: 'vbr0', subnet: '192.168.127.0/24' });
      await net.removeBridge('vbr0');
      assert.doesNotMatch(await firewall(host), /volant|VOLANT/i);
      assert.equal((await host.exec(['ip', 'link', 'show', 'vbr0'])).code, 1);
      assert.equal(count(await firewall(host), /^-A /), count(before, /^-A /));
    }));

  test('createTap: VNET_HDR, attached, up, guest MAC kept off the tap; second create is CONFLICT; delete is idempotent', () =>
    withNetns(AREA, 1, async (host) => {
      const net = new LinuxNetworkManager(host.runner);
      await net.ensureBridge({ name: 'vbr0', cidr: '10.200.0.1/16' });
      const tap = tapName('web-1');
      const mac = macAddress('web-1');
      await net.createTap({ name: tap, mac, bridge: 'vbr0' });
      const [link] = JSON.parse(await host.run(['ip', '-d', '-j', 'link', 'show', 'dev', tap]));
      assert.equal(link.linkinfo.info_kind, 'tun');
      assert.equal(link.linkinfo.info_data.type, 'tap');
      assert.equal(link.linkinfo.info_data.vnet_hdr, true);
      assert.equal(link.master, 'vbr0');
      assert.ok(link.flags.includes('UP'));
      assert.equal(link.address, `fe${mac.slice(2)}`);
      const IFF_VNET_HDR = 0x4000;
      const flags = Number.parseInt((await host.run(['cat', `/sys/class/net/${tap}/tun_flags`])).trim(), 16);
      assert.equal(flags & IFF_VNET_HDR, IFF_VNET_HDR);
      assert.equal(await net.tapExists(tap), true);
      assert.deepEqual(await net.listTaps('vt'), [tap]);

      await rejects(net.createTap({ name: tap, mac, bridge: 'vbr0' }), 'CONFLICT');
      await rejects(net.createTap({ name: 'vtother', bridge: 'nobridge' }), 'NOT_FOUND');
      assert.equal(await net.tapExists('vtother'), false);
      await rejects(net.deleteTap('vbr0'), 'CONFLICT');

      await net.deleteTap(tap);
      await net.deleteTap(tap);
      assert.equal(await net.tapExists(tap), false);
      assert.deepEqual(await net.listTaps('vt'), []);
      await net.removeBridge('vbr0');
    }));

  test('bad names and addresses run no command at all', async () => {
    const runner = new DryRunRunner();
    const net = new LinuxNetworkManager(runner);
    for (const name of ['a-name-too-long-x', 'a/b', 'has space', 'x;reboot', '$(id)', '-f', '', '..', 'tap\n0']) {
      await rejects(net.createTap({ name, bridge: 'vbr0' }), 'INVALID_ARGUMENT');
      await rejects(net.ensureBridge({ name, cidr: '10.0.0.1/24' }), 'INVALID_ARGUMENT');
      await rejects(net.deleteTap(name), 'INVALID_ARGUMENT');
    }
    await rejects(net.ensureBridge({ name: 'vbr0', cidr: '10.0.0.1' }), 'INVALID_ARGUMENT');
    await rejects(net.createTap({ name: 'vt0', mac: '01:00:5e:00:00:01', bridge: 'vbr0' }), 'INVALID_ARGUMENT');
    await rejects(net.ensureNat({ bridge: 'vbr0', subnet: '10.0.0.0/33' }), 'INVALID_ARGUMENT');
    const lock = { tap: 'vt0', mac: '02:11:22:33:44:55', bridge: 'vbr0', hostIp: '10.0.0.1', dhcp: false };
    await rejects(net.lockdownVm({ ...lock, address: '10.0.0.5; ls', confine: { egressPort: 3128 } }), 'INVALID_ARGUMENT');
    await rejects(net.lockdownVm({ ...lock, address: '10.0.0.5', confine: { egressPort: 70000 } }), 'INVALID_ARGUMENT');
    assert.deepEqual(runner.commands, []);
  });

  test('a failing system command is SYSTEM_COMMAND_FAILED with the command and its stderr', () =>
    withNetns(AREA, 1, async (host) => {
      const net = new LinuxNetworkManager(host.runner);
      await host.run(['ip', 'link', 'add', 'dummy0', 'type', 'veth', 'peer', 'name', 'dummy1']);
      await rejects(net.ensureBridge({ name: 'dummy0', cidr: '10.0.0.1/24' }), 'CONFLICT');
      await rejects(net.createTap({ name: 'dummy0', bridge: 'vbr0' }), 'CONFLICT');
      await net.ensureBridge({ name: 'vbr0', cidr: '10.0.0.1/24' });
      // A runner whose probes always answer "absent" makes the manager re-create the bridge.
      const blind = new LinuxNetworkManager({ run: (c) => (c.probe ? Promise.resolve({ code: 1, stdout: '', stderr: '' }) : host.runner.run(c)) });
      const err = await blind.ensureBridge({ name: 'vbr0', cidr: '10.0.0.1/24' }).catch((e) => e);
      assert.ok(isVolantError(err), String(err));
      assert.equal(err.code, 'SYSTEM_COMMAND_FAILED');
      const details = err.details as { command: string[]; stderr: string };
      assert.deepEqual(details.command.slice(-6), ['link', 'add', 'name', 'vbr0', 'type', 'bridge']);
      assert.match(details.stderr, /exists/i);
      assert.match(err.message, /ip link add name vbr0 type bridge/);
    }));
});

describe('VM lockdown', { skip }, () => {
  test('a locked VM reaches only the egress port; spoofed sources, other VMs, other host ports and the internet are dropped; unlock restores', () =>
    withNetns(AREA, 4, async (host, vm1, vm2, inet) => {
      const { net, vms } = await bridgeWithVms(host, '10.77.0', [vm1, vm2]);
      // vm1 also holds an address that is not its lease, to try spoofing with.
      await vm1.run(['ip', 'addr', 'add', '10.77.0.12/24', 'dev', 'eth0']);
      await linkNamespaces(host, 'uplink', inet, 'eth0');
      await host.run(['ip', 'addr', 'add', '10.66.0.1/24', 'dev', 'uplink']);
      await host.run(['ip', 'link', 'set', 'uplink', 'up']);
      await inet.run(['ip', 'addr', 'add', '10.66.0.2/24', 'dev', 'eth0']);
      await inet.run(['ip', 'link', 'set', 'eth0', 'up']);

      await listen(host, '10.77.0.1', [3128, 2222]);
      await listen(inet, '10.66.0.2', [80]);
      await listen(vm2, '10.77.0.11', [8080]);
      await listen(vm1, '10.77.0.10', [8080]);
      const targets = ['10.77.0.1:3128', '10.77.0.1:2222', '10.66.0.2:80', '10.77.0.11:8080'];
      const allOk = Object.fromEntries(targets.map((t) => [t, 'ok']));

      // Without lockdown everything is reachable (so the checks below can fail), NAT included.
      assert.deepEqual(await reach(vm1, targets), allOk);
      assert.deepEqual(await reach(vm1, targets, '10.77.0.12'), allOk);

      const lock = { tap: 'vt-vm1', address: '10.77.0.10', mac: vms[0]!.mac, bridge: 'vbr0', hostIp: '10.77.0.1', dhcp: false, confine: { egressPort: 3128 } };
      await net.lockdownVm(lock);
      await net.lockdownVm(lock);
      const rules = await firewall(host);
      assert.equal(count(rules, /volant:vt-vm1/), 5, rules);
      assert.equal(count(rules, /-i vt-vm1/), 9, rules);
      assert.equal(count(rules, /-A INPUT -j VOLANT-IN/), 1);
      assert.equal(count(rules, /-A FORWARD -j VOLANT-FWD/), 1);

      const locked = await reach(vm1, targets);
      assert.equal(locked['10.77.0.1:3128'], 'ok', 'the egress port stays reachable');
      for (const t of targets.slice(1)) assert.notEqual(locked[t], 'ok', `${t} must be blocked: ${JSON.stringify(locked)}`);
      const spoofed = await reach(vm1, targets, '10.77.0.12');
      for (const t of targets) assert.notEqual(spoofed[t], 'ok', `spoofed source must not reach ${t}: ${JSON.stringify(spoofed)}`);
      // The right address from the wrong MAC is dropped too.
      await vm1.run(['ip', 'link', 'set', 'eth0', 'address', '02:de:ad:be:ef:01']);
      await host.run(['ip', 'neigh', 'flush', 'dev', 'vbr0']);
      assert.notEqual((await reach(vm1, ['10.77.0.1:3128']))['10.77.0.1:3128'], 'ok', 'a foreign source MAC must not reach the host');
      await vm1.run(['ip', 'link', 'set', 'eth0', 'address', vms[0]!.mac]);
      await host.run(['ip', 'neigh', 'flush', 'dev', 'vbr0']);
      await vm1.run(['ip', 'neigh', 'flush', 'dev', 'eth0']);
      assert.equal((await reach(vm1, ['10.77.0.1:3128']))['10.77.0.1:3128'], 'ok');
      // The host can still open connections to the guest (ingress over TCP): replies pass.
      assert.deepEqual(await reach(host, ['10.77.0.10:8080']), { '10.77.0.10:8080': 'ok' });
      // vm2 is not locked and still reaches the internet, but not the locked vm1.
      const fromVm2 = await reach(vm2, ['10.66.0.2:80', '10.77.0.10:8080']);
      assert.deepEqual(fromVm2, { '10.66.0.2:80': 'ok', '10.77.0.10:8080': fromVm2['10.77.0.10:8080'] });
      assert.notEqual(fromVm2['10.77.0.10:8080'], 'ok');

      await net.unlockVm({ tap: 'vt-vm1' });
      await net.unlockVm({ tap: 'vt-vm1' });
      assert.doesNotMatch(await firewall(host), /vt-vm1/);
      assert.deepEqual(await reach(vm1, targets), allOk);

      await net.removeNat({ bridge: 'vbr0', subnet: '10.77.0.0/24' });
      await net.removeBridge('vbr0');
      assert.doesNotMatch(await firewall(host), /volant|VOLANT/i);
    }));

  test("dhcp lockdown: only DHCP before the lease, bound to the lease once known, rebound on a lease change; MAC-only where the lease is unknown", () =>
    withNetns(AREA, 3, async (host, vm1, inet) => {
      const net = new LinuxNetworkManager(host.runner);
      await net.ensureBridge({ name: 'vbr0', cidr: '10.78.0.1/24' });
      await net.ensureNat({ bridge: 'vbr0', subnet: '10.78.0.0/24' });
      const mac = macAddress('dvm');
      await linkNamespaces(host, 'vt-dvm', vm1, 'eth0');
      await host.run(['ip', 'link', 'set', 'vt-dvm', 'master', 'vbr0', 'up']);
      await vm1.run(['ip', 'link', 'set', 'eth0', 'address', mac, 'up']);
      // Two addresses the guest could use: the lease it gets first (.20) and the one it moves to (.21).
      await vm1.run(['ip', 'addr', 'add', '10.78.0.20/24', 'dev', 'eth0']);
      await vm1.run(['ip', 'addr', 'add', '10.78.0.21/24', 'dev', 'eth0']);
      await vm1.run(['ip', 'route', 'add', 'default', 'via', '10.78.0.1']);
      await linkNamespaces(host, 'uplink', inet, 'eth0');
      await host.run(['ip', 'addr', 'add', '10.68.0.1/24', 'dev', 'uplink']);
      await host.run(['ip', 'link', 'set', 'uplink', 'up']);
      await inet.run(['ip', 'addr', 'add', '10.68.0.2/24', 'dev', 'eth0']);
      await inet.run(['ip', 'link', 'set', 'eth0', 'up']);
      await listen(host, '10.78.0.1', [40001, 2222]);
      await listen(inet, '10.68.0.2', [80]);
      const targets = ['10.78.0.1:40001', '10.78.0.1:2222', '10.68.0.2:80'];
      const fresh = async (): Promise<void> => {
        await host.run(['ip', 'neigh', 'flush', 'dev', 'vbr0']);
        await vm1.run(['ip', 'neigh', 'flush', 'dev', 'eth0']);
      };
      const base = { tap: 'vt-dvm', mac, bridge: 'vbr0', hostIp: '10.78.0.1', dhcp: true, confine: { egressPort: 40001 } };

      await net.lockdownVm({ ...base, address: 'awaiting-lease' });
      for (const from of ['10.78.0.20', '10.78.0.21']) {
        const r = await reach(vm1, targets, from);
        for (const t of targets) assert.notEqual(r[t], 'ok', `before the lease nothing but DHCP passes (${from} → ${t}): ${JSON.stringify(r)}`);
      }

      await net.lockdownVm({ ...base, address: '10.78.0.20' });
      await fresh();
      const leased = await reach(vm1, targets, '10.78.0.20');
      assert.equal(leased['10.78.0.1:40001'], 'ok', `the leased address reaches its egress listener: ${JSON.stringify(leased)}`);
      assert.notEqual(leased['10.78.0.1:2222'], 'ok');
      assert.notEqual(leased['10.68.0.2:80'], 'ok');
      assert.notEqual((await reach(vm1, ['10.78.0.1:40001'], '10.78.0.21'))['10.78.0.1:40001'], 'ok', 'another source address is spoofing');

      // The lease moves to .21: the binding follows, the old address is refused.
      await net.lockdownVm({ ...base, address: '10.78.0.21' });
      await fresh();
      assert.equal((await reach(vm1, ['10.78.0.1:40001'], '10.78.0.21'))['10.78.0.1:40001'], 'ok');
      assert.notEqual((await reach(vm1, ['10.78.0.1:40001'], '10.78.0.20'))['10.78.0.1:40001'], 'ok');
      const rules = await firewall(host);
      assert.doesNotMatch(rules, /10\.78\.0\.20/, 'no rule of the old lease is left');
      assert.equal(count(rules, /^-i vt-dvm -j DROP$/), 0, 'the swap guard is gone');

      // A DHCP server Volant does not run: any address, bound by the MAC only.
      await net.lockdownVm({ ...base, address: 'unbound' });
      await fresh();
      for (const from of ['10.78.0.20', '10.78.0.21']) {
        const r = await reach(vm1, targets, from);
        assert.equal(r['10.78.0.1:40001'], 'ok', JSON.stringify(r));
        assert.notEqual(r['10.78.0.1:2222'], 'ok');
        assert.notEqual(r['10.68.0.2:80'], 'ok');
      }
      await vm1.run(['ip', 'link', 'set', 'eth0', 'address', '02:de:ad:be:ef:02']);
      await fresh();
      assert.notEqual((await reach(vm1, ['10.78.0.1:40001'], '10.78.0.20'))['10.78.0.1:40001'], 'ok', 'another MAC is refused');

      await net.unlockVm({ tap: 'vt-dvm' });
      assert.doesNotMatch(await firewall(host), /vt-dvm/);
      await net.removeNat({ bridge: 'vbr0', subnet: '10.78.0.0/24' });
      await net.removeBridge('vbr0');
    }));

  test('VLAN-tagged frames get past nothing: a priority tag carries no frame to another VM, nor a spoofed source to the host', (t) =>
    withNetns(AREA, 3, async (host, vm1, vm2) => {
      if (strictSkip(t, !hasCommand('python3') && 'python3 is not installed (it writes the raw frames; scripts/install-deps.sh installs python3-minimal)')) return;
      const { net, vms } = await bridgeWithVms(host, '10.79.0', [vm1, vm2]);
      const bridgeMac = (await host.run(['cat', '/sys/class/net/vbr0/address'])).trim();
      const spoofed = '10.79.0.99';
      /** How many of three echo requests from vm1 reach `to` (through the bridge, to `dstMac`). */
      const delivered = async (to: NetNs, dstMac: string, src: string, dst: string, tpid: string): Promise<number> => {
        const before = await echoesIn(to);
        await vm1.run(['python3', '-c', FRAMES, 'eth0', vms[0]!.mac, dstMac, src, dst, tpid]);
        // Three untagged echoes that no rule filters (the host to vm2, vm2 to the host) arrive
        // after whatever vm1 sent got through.
        if (to === host) await vm2.run(['python3', '-c', FRAMES, 'eth0', vms[1]!.mac, bridgeMac, vms[1]!.ip, dst, 'none']);
        else await host.run(['python3', '-c', FRAMES, 'vbr0', bridgeMac, dstMac, '10.79.0.1', dst, 'none']);
        await eventually(async () => (await echoesIn(to)) - before >= 3, { what: 'the untagged echoes that follow' });
        return (await echoesIn(to)) - before - 3;
      };
      const toVm2 = (src: string, tpid: string) => delivered(vm2, vms[1]!.mac, src, vms[1]!.ip, tpid);
      const toHost = (src: string, tpid: string) => delivered(host, bridgeMac, src, '10.79.0.1', tpid);

      // Without lockdown a priority-tagged frame is delivered like an untagged one (so the checks below can fail).
      assert.equal(await toVm2(vms[0]!.ip, '8100'), 3);
      assert.equal(await toVm2(vms[0]!.ip, '88a8'), 3);
      assert.equal(await toHost(spoofed, '8100'), 3);

      // The spoof guard alone (no allowlist): untagged frames from its own address pass, a
      // spoofed source does not, and no tagged frame passes at all.
      await net.lockdownVm({ tap: 'vt-vm1', address: vms[0]!.ip, mac: vms[0]!.mac, bridge: 'vbr0', hostIp: '10.79.0.1', dhcp: false });
      assert.equal(await toHost(vms[0]!.ip, 'none'), 3);
      assert.equal(await toHost(spoofed, 'none'), 0);
      for (const tpid of ['8100', '88a8']) {
        assert.equal(await toHost(spoofed, tpid), 0, `a spoofed source in a ${tpid} priority tag`);
        assert.equal(await toHost(vms[0]!.ip, tpid), 0, `a ${tpid} priority tag`);
        assert.equal(await toVm2(spoofed, tpid), 0, `a spoofed source in a ${tpid} priority tag to another VM`);
      }

      // Confined (an allowlist): nothing reaches the other VM, tagged or not.
      await net.lockdownVm({ tap: 'vt-vm1', address: vms[0]!.ip, mac: vms[0]!.mac, bridge: 'vbr0', hostIp: '10.79.0.1', dhcp: false, confine: {} });
      for (const tpid of ['none', '8100', '88a8']) assert.equal(await toVm2(vms[0]!.ip, tpid), 0, `vm1 → vm2 (${tpid})`);

      await net.unlockVm({ tap: 'vt-vm1' });
      await net.removeNat({ bridge: 'vbr0', subnet: '10.79.0.0/24' });
      await net.removeBridge('vbr0');
    }));
  test('no VM answers as a DHCP server: datagrams from UDP port 67 are dropped at its tap, other ports pass', () =>
    withNetns(AREA, 3, async (host, vm1, vm2) => {
      const { net, vms } = await bridgeWithVms(host, '10.76.0', [vm1, vm2]);
      const vm2Ip = vms[1]!.ip;
      /** How many of three datagrams from vm1's port `sport` reach vm2's DHCP client port. */
      const delivered = async (sport: number): Promise<number> => {
        const before = await udpNoPortsIn(vm2);
        await vm1.run(['node', '-e', DATAGRAMS, String(sport), vm2Ip, '68']);
        // Three datagrams from the host, which no rule filters, arrive after whatever vm1 sent got through.
        await host.run(['node', '-e', DATAGRAMS, '40067', vm2Ip, '68']);
        await eventually(async () => (await udpNoPortsIn(vm2)) - before >= 3, { what: "the host's datagrams that follow" });
        return (await udpNoPortsIn(vm2)) - before - 3;
      };

      assert.equal(await delivered(67), 3, 'without lockdown an offer from another VM arrives (so the check below can fail)');
      await net.lockdownVm({ tap: 'vt-vm1', address: vms[0]!.ip, mac: vms[0]!.mac, bridge: 'vbr0', hostIp: '10.76.0.1', dhcp: false });
      assert.equal(await delivered(67), 0, 'a DHCP offer from a VM');
      assert.equal(await delivered(40068), 3, 'other UDP between VMs without an allowlist still passes');

      await net.unlockVm({ tap: 'vt-vm1' });
      await net.removeNat({ bridge: 'vbr0', subnet: '10.76.0.0/24' });
      await net.removeBridge('vbr0');
    }));
});
