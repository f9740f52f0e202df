// `volar setup`, `volar teardown` and `volar debug ipam` run as real processes inside a network
// namespace each test creates: what setup builds, that a second run adds nothing, that
// --dry-run changes nothing, that teardown leaves nothing, and that bad flags write nothing.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../host/cli/exit-codes.js';
import { addressPool } from '../../host/ipam/pool.js';
import { MIGRATIONS } from '../../host/store/migrations.js';
import { openStore } from '../../host/store/store.js';
import { eventually } from '../support/eventually.js';
import { linkNamespaces, type NetNs, netnsSkipReason, withNetns } from '../support/netns.js';
import { skipUnlessStrict } from '../support/strict.js';
import { readProcessArgv } from '../../host/vmm/process.js';

/** Alive and not a zombie (a stopped daemon is reaped by whoever adopted it, a moment later). */
const isAlive = (pid: number): boolean => readProcessArgv(pid) !== undefined;

const skip = skipUnlessStrict(netnsSkipReason());
const AREA = 'setup';
const CLI = fileURLToPath(new URL('../../host/cli/main.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), `volant-setup-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const stateDir = () => join(dir, `s${n++}`);

function volar(ns: NetNs, args: string[]) {
  // No config file from the machine: every test names its own state dir and flags.
  return ns.exec(['env', `VOLANT_CONFIG=${join(dir, 'none.yaml')}`, process.execPath, '--import', 'tsx', CLI, ...args]);
}

/** Runs volar in the namespace. Setup never installs a unit into this host's systemd here (--no-systemd, or a unit folder systemd does not load). */
function run(ns: NetNs, args: string[]) {
  return ns.exec([process.execPath, '--import', 'tsx', CLI, ...args]);
}

/** What setup may leave behind: links, firewall rules, the forwarding switch. */
async function hostState(ns: NetNs): Promise<{ links: string[]; rules: string[]; eb: string }> {
  const links = (JSON.parse(await ns.run(['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname).sort();
  const rules = (await ns.run(['iptables-save'])).split('\n').filter((l) => l.startsWith('-A') || l.startsWith(':VOLANT'));
  return { links, rules, eb: await ns.run(['ebtables', '-L']) };
}

describe('volar setup / teardown', { skip }, () => {
  test('setup twice: bridge up with its address, NAT rules once, state dirs and database; teardown leaves nothing', () =>
    withNetns(AREA, 1, async (ns) => {
      // `volar setup` reads no config file here: an absent VOLANT_CONFIG is reported as an error.
      const state = stateDir();
      const empty = await hostState(ns);
      const cfgFile = join(dir, 'none.yaml');
      assert.equal(existsSync(cfgFile), false);
      const r = await volar(ns, ['setup', '--no-systemd', '--state-dir', state]);
      assert.equal(r.code, EXIT.NOT_FOUND);
      assert.match(r.stderr, /none\.yaml does not exist/);

      for (let i = 0; i < 2; i++) {
        const out = await run(ns, ['setup', '--no-systemd', '--state-dir', state, '--config', '/dev/null']);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stdout, /bridge vbr0 192\.168\.127\.1\/24 up/);
      }
      const [link] = JSON.parse(await ns.run(['ip', '-d', '-j', 'addr', 'show', 'dev', 'vbr0']));
      assert.equal(link.linkinfo.info_kind, 'bridge');
      assert.ok(link.flags.includes('UP'));
      assert.ok(link.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '192.168.127.1' && a.prefixlen === 24));
      const rules = (await hostState(ns)).rules.filter((l) => l.includes('volant:nat'));
      assert.equal(rules.length, 3, rules.join('\n'));
      assert.equal(new Set(rules).size, 3);
      assert.equal((await ns.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '1');
      for (const d of ['run', 'logs', 'plugins', 'run/vms']) assert.ok(existsSync(join(state, d)), d);
      const store = openStore({ path: join(state, 'volant.db'), readonly: true });
      assert.deepEqual(store.db.prepare('SELECT version FROM schema_migrations').all(), MIGRATIONS.map((m) => ({ version: m.version })));
      store.close();

      for (let i = 0; i < 2; i++) {
        const out = await run(ns, ['teardown', '--state-dir', state, '--config', '/dev/null']);
        assert.equal(out.code, 0, out.stderr);
      }
      assert.deepEqual(await hostState(ns), empty);
      assert.ok(existsSync(join(state, 'volant.db')), 'teardown keeps the state');
    }));

  test('custom bridge and subnet; --systemd writes a unit that starts volantd with the same state dir', () =>
    withNetns(AREA, 1, async (ns) => {
      const state = stateDir();
      const out = await run(ns, ['setup', '--config', '/dev/null', '--state-dir', state, '--bridge', 'br-test', '--cidr', '10.200.0.1/16', '--systemd', '--unit-dir', state]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /pool 10\.200\.0\.100-10\.200\.255\.254/);
      assert.match(out.stdout, new RegExp(`wrote ${join(state, 'volantd.service')}`));
      const [link] = JSON.parse(await ns.run(['ip', '-j', 'addr', 'show', 'dev', 'br-test']));
      assert.ok(link.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '10.200.0.1' && a.prefixlen === 16));
      assert.ok((await hostState(ns)).rules.some((l) => l.includes('-s 10.200.0.0/16 ! -o br-test')));
      const unit = readFileSync(join(state, 'volantd.service'), 'utf8');
      assert.match(unit, new RegExp(`^ExecStart=${process.execPath} \\S+/bin/volantd\\.js --config /dev/null --state-dir ${state}$`, 'm'));
      assert.match(unit, /^WantedBy=multi-user\.target$/m);
      const down = await run(ns, ['teardown', '--config', '/dev/null', '--state-dir', state, '--bridge', 'br-test', '--cidr', '10.200.0.1/16']);
      assert.equal(down.code, 0, down.stderr);
      assert.equal((await ns.exec(['ip', 'link', 'show', 'br-test'])).code, 1);
    }));

  test("--dhcp: Volant's dnsmasq serves the range on the bridge, once; a changed range restarts it; teardown stops it", () =>
    withNetns(AREA, 2, async (ns, guest) => {
      const state = stateDir();
      const run = (args: string[], env: string[] = []) => ns.exec(['env', ...env, process.execPath, '--import', 'tsx', CLI, ...args]);
      const setup = (env: string[] = []) => run(['setup', '--state-dir', state, '--config', '/dev/null', '--dhcp'], env);
      const pidOf = (): number => Number(readFileSync(join(state, 'run', 'dnsmasq.pid'), 'utf8').trim());
      let out = await setup();
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /DHCP 192\.168\.127\.10-192\.168\.127\.99 on vbr0 by Volant's dnsmasq \(started\)/);
      const first = pidOf();
      assert.ok(isAlive(first), 'dnsmasq runs (this namespace is not systemd\'s: a daemon with a pid file)');
      assert.match(readFileSync(join(state, 'dhcp', 'dnsmasq.conf'), 'utf8'), /^dhcp-range=192\.168\.127\.10,192\.168\.127\.99,255\.255\.255\.0,3600$/m);
      out = await setup();
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /\(unchanged\)/);
      assert.equal(pidOf(), first, 'the same server keeps running');

      // A guest on the bridge gets a lease from the range, and it lands in the lease file volantd reads.
      await linkNamespaces(ns, 'vt-g', guest, 'eth0');
      await ns.run(['ip', 'link', 'set', 'vt-g', 'master', 'vbr0', 'up']);
      await guest.run(['ip', 'link', 'set', 'eth0', 'address', '02:00:00:00:00:42', 'up']);
      const lease = await guest.exec(['/bin/busybox', 'udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '10', '-T', '1', '-s', '/bin/true']);
      assert.equal(lease.code, 0, lease.stderr);
      const leases = await eventually(() => readFileSync(join(state, 'dhcp', 'dnsmasq.leases'), 'utf8'), { what: 'the lease file' });
      assert.match(leases, /^\d+ 02:00:00:00:00:42 192\.168\.127\.(\d|[1-9]\d) /m);

      out = await setup(['VOLANT_DHCP_RANGE_START=192.168.127.50', 'VOLANT_DHCP_RANGE_END=192.168.127.60']);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /\(restarted\)/);
      assert.ok(!isAlive(first), 'the old server is gone');
      assert.ok(isAlive(pidOf()));

      out = await setup(['VOLANT_DHCP_RANGE_START=192.168.127.90', 'VOLANT_DHCP_RANGE_END=192.168.127.120']);
      assert.equal(out.code, EXIT.USAGE);
      assert.match(out.stderr, /\/dhcp\/range_start.*overlaps the address pool/);

      const last = pidOf();
      out = await run(['teardown', '--state-dir', state, '--config', '/dev/null']);
      assert.equal(out.code, 0, out.stderr);
      assert.ok(!isAlive(last), 'teardown stops the DHCP server');
      assert.equal(existsSync(join(state, 'dhcp', 'dnsmasq.conf')), false);
    }));

  test('--dry-run prints the exact commands and changes nothing', () =>
    withNetns(AREA, 1, async (ns) => {
      const state = stateDir();
      const before = await hostState(ns);
      const out = await run(ns, ['setup', '--dry-run', '--config', '/dev/null', '--state-dir', state, '--systemd', '--dhcp', '--unit-dir', state]);
      assert.equal(out.code, 0, out.stderr);
      for (const line of [
        'ip link add name vbr0 type bridge',
        'ip addr add 192.168.127.1/24 dev vbr0',
        'ip link set dev vbr0 up',
        "iptables -w -t nat -A POSTROUTING -s 192.168.127.0/24 '!' -o vbr0 -m comment --comment volant:nat -j MASQUERADE",
        `mkdir -p -m 0700 ${state}`,
      ]) {
        assert.ok(out.stdout.includes(`  ${line}\n`), `missing ${line} in\n${out.stdout}`);
      }
      assert.match(out.stdout, new RegExp(`^  \\S*dnsmasq --conf-file=${join(state, 'dhcp', 'dnsmasq.conf')} --pid-file=${join(state, 'run', 'dnsmasq.pid')}$`, 'm'), 'the DHCP server it would start');
      assert.match(out.stdout, /^ {4}dhcp-range=192\.168\.127\.10,192\.168\.127\.99,255\.255\.255\.0,3600$/m, 'and the config it would write');
      assert.deepEqual(await hostState(ns), before);
      assert.equal(existsSync(state), false);
    }));

  test('bad flags are refused with the key, the value and what is allowed, and nothing is created', () =>
    withNetns(AREA, 1, async (ns) => {
      const state = stateDir();
      const before = await hostState(ns);
      const cases: [string[], RegExp][] = [
        [['--cidr', '192.168.127.0/24'], /\/network\/host_cidr.*network or broadcast/],
        [['--cidr', '10.0.0.1'], /\/network\/host_cidr/],
        [['--bridge', 'br0;reboot'], /\/network\/bridge.*br0;reboot/],
        [['--bridge', 'a-very-long-bridge-name'], /\/network\/bridge/],
      ];
      for (const [flags, message] of cases) {
        const r = await run(ns, ['setup', '--no-systemd', '--config', '/dev/null', '--state-dir', state, ...flags]);
        assert.equal(r.code, EXIT.USAGE, flags.join(' '));
        assert.match(r.stderr, /VALIDATION_FAILED/);
        assert.match(r.stderr, message);
      }
      assert.deepEqual(await hostState(ns), before);
      assert.equal(existsSync(state), false);
    }));
});

describe('volar debug ipam', () => {
  test('reads the pool and leases straight from the database, as text and JSON', async () => {
    const state = stateDir();
    const net = { host_cidr: '192.168.127.1/24', pool_start: '192.168.127.100', pool_end: '192.168.127.254', reservations: {} };
    const store = openStore({ path: join(state, 'volant.db'), pool: addressPool(net) });
    store.plugins.install({ name: 'hello', version: '1', manifest: {}, imagePath: '/x' });
    for (const name of ['web', 'db', 'cache']) store.vms.createWithLease({ name, plugin: 'hello', config: {} }, { mode: 'bridged' });
    store.vms.createWithLease({ name: 'side', plugin: 'hello', config: {} }, { mode: 'vsock' });
    store.vms.deleteWithRelease('db');
    store.close();
    const cli = async (args: string[]) => execFileSync(process.execPath, ['--import', 'tsx', CLI, 'debug', 'ipam', '--config', '/dev/null', '--state-dir', state, ...args], { encoding: 'utf8' });
    const report = JSON.parse(await cli(['--json']));
    assert.equal(report.size, 155);
    assert.equal(report.free, 153);
    assert.deepEqual(
      report.leases.map((l: { ip: string; vm: string }) => [l.ip, l.vm]),
      [
        ['192.168.127.100', 'web'],
        ['192.168.127.102', 'cache'],
      ],
    );
    const empty = stateDir();
    const none = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', CLI, 'debug', 'ipam', '--json', '--config', '/dev/null', '--state-dir', empty], { encoding: 'utf8' }));
    assert.deepEqual([none.size, none.free, none.leases], [155, 155, []]);
    assert.equal(existsSync(empty), false, 'debug ipam creates nothing when there is no database yet');
    const text = await cli([]);
    assert.match(text, /^pool\s+192\.168\.127\.100 - 192\.168\.127\.254$/m);
    assert.match(text, /^free\s+153$/m);
    assert.match(text, /^192\.168\.127\.102\s+cache\s+\d{4}-/m);
  });
});
