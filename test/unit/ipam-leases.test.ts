// IPAM on real SQLite files: numeric order, exhaustion, explicit/taken/out-of-pool/reserved
// requests, custom subnets, and bad input that must write nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { addressPool, ipamReport } from '../../host/ipam/index.js';
import { MIGRATIONS, openStore, type Store } from '../../host/store/index.js';
import { isVolantError } from '../../shared/errors.js';
import type { NetworkConfig } from '../../host/config/schema.js';

const dir = mkdtempSync(join(tmpdir(), `volant-ipam-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

type Net = Pick<NetworkConfig, 'host_cidr' | 'pool_start' | 'pool_end' | 'reservations'>;
const DEFAULT_NET: Net = { host_cidr: '192.168.127.1/24', pool_start: '192.168.127.100', pool_end: '192.168.127.254', reservations: {} };

function fresh(net: Partial<Net> = {}): { store: Store; net: Net } {
  const full = { ...DEFAULT_NET, ...net };
  const store = openStore({ path: join(dir, `t${n++}.db`), pool: addressPool(full) });
  store.plugins.install({ name: 'hello', version: '1.0.0', manifest: { name: 'hello' }, imagePath: '/nonexistent/initramfs.img' });
  return { store, net: full };
}

function bridged(store: Store, name: string, requestedIp?: string) {
  return store.vms.createWithLease({ name, plugin: 'hello', config: {} }, { mode: 'bridged', requestedIp });
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(isVolantError(e), `expected a VolantError, got ${e}`);
    return e.code;
  }
  assert.fail('expected an error');
}

function snapshot(store: Store): string {
  return JSON.stringify([store.db.prepare('SELECT * FROM vms ORDER BY cid').all(), store.db.prepare('SELECT * FROM ip_leases ORDER BY ip_num').all()]);
}

describe('lease order', () => {
  test('addresses go out in numeric order: .109 then .110, and a freed low address is reused first', () => {
    const { store } = fresh({ pool_start: '192.168.127.2', pool_end: '192.168.127.20' });
    const ips = Array.from({ length: 12 }, (_, i) => bridged(store, `vm${i}`).ip);
    assert.deepEqual(ips, ['2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13'].map((x) => `192.168.127.${x}`));
    store.vms.deleteWithRelease('vm1');
    store.vms.deleteWithRelease('vm8');
    assert.equal(bridged(store, 'again1').ip, '192.168.127.3');
    assert.equal(bridged(store, 'again2').ip, '192.168.127.10');
    assert.equal(bridged(store, 'again3').ip, '192.168.127.14');
    assert.deepEqual(store.vms.checkConsistency(), []);
    store.close();
  });

  test('the allocation hint never skips a free address: pool changes, reservations, raw deletes', () => {
    const path = join(dir, `hint${n++}.db`);
    const a = openStore({ path, pool: addressPool({ ...DEFAULT_NET, pool_start: '192.168.127.100' }) });
    a.plugins.install({ name: 'hello', version: '1', manifest: {}, imagePath: '/x' });
    for (const name of ['a', 'b', 'c']) bridged(a, name);
    // A delete that bypasses the repository (the cascade path) still lowers the hint.
    a.db.prepare("DELETE FROM vms WHERE name = 'a'").run();
    assert.equal(bridged(a, 'd').ip, '192.168.127.100');
    a.close();
    // The pool moved down: the old hint must not hide the new lower addresses.
    const b = openStore({ path, pool: addressPool({ ...DEFAULT_NET, pool_start: '192.168.127.50' }) });
    assert.equal(bridged(b, 'e').ip, '192.168.127.50');
    b.close();
    // A reservation dropped from config frees its address for everyone again.
    const c = openStore({ path, pool: addressPool({ ...DEFAULT_NET, pool_start: '192.168.127.50', reservations: { x: '192.168.127.51' } }) });
    assert.equal(bridged(c, 'f').ip, '192.168.127.52');
    c.close();
    const d = openStore({ path, pool: addressPool({ ...DEFAULT_NET, pool_start: '192.168.127.50' }) });
    assert.equal(bridged(d, 'g').ip, '192.168.127.51');
    assert.deepEqual(d.vms.checkConsistency(), []);
    d.close();
  });

  test('the default pool starts at .100 and ends at .254', () => {
    const { store } = fresh();
    assert.equal(bridged(store, 'a').ip, '192.168.127.100');
    store.close();
  });

  test('the pool is exhausted with POOL_EXHAUSTED, and the failed create writes nothing', () => {
    const { store } = fresh({ pool_start: '192.168.127.250', pool_end: '192.168.127.254' });
    for (let i = 0; i < 5; i++) bridged(store, `vm${i}`);
    const before = snapshot(store);
    assert.equal(code(() => bridged(store, 'one-too-many')), 'POOL_EXHAUSTED');
    assert.equal(snapshot(store), before);
    store.vms.deleteWithRelease('vm2');
    assert.equal(bridged(store, 'one-too-many').ip, '192.168.127.252');
    store.close();
  });
});

describe('explicit and reserved addresses', () => {
  test('an explicit free address is honoured; a taken one is IP_TAKEN; out of pool is INVALID_ARGUMENT', () => {
    const { store } = fresh();
    assert.equal(bridged(store, 'a', '192.168.127.200').ip, '192.168.127.200');
    const before = snapshot(store);
    assert.equal(code(() => bridged(store, 'b', '192.168.127.200')), 'IP_TAKEN');
    for (const bad of ['192.168.127.1', '192.168.127.0', '192.168.127.255', '192.168.127.99', '10.0.0.5', '192.168.127.0200', '192.168.127', 'x; rm -rf /']) {
      assert.equal(code(() => bridged(store, 'b', bad)), 'INVALID_ARGUMENT', bad);
    }
    assert.equal(snapshot(store), before);
    assert.equal(code(() => store.vms.createWithLease({ name: 'd', plugin: 'hello', config: {} }, { mode: 'dhcp', requestedIp: '192.168.127.201' })), 'INVALID_ARGUMENT');
    store.close();
  });

  test('a reserved address goes only to its VM, even when it is the lowest free one', () => {
    const { store } = fresh({ reservations: { db: '192.168.127.100', cache: '192.168.127.102' } });
    assert.equal(bridged(store, 'web1').ip, '192.168.127.101');
    assert.equal(bridged(store, 'web2').ip, '192.168.127.103');
    assert.equal(code(() => bridged(store, 'web3', '192.168.127.100')), 'IP_TAKEN');
    assert.equal(bridged(store, 'db').ip, '192.168.127.100');
    assert.equal(code(() => bridged(store, 'cache', '192.168.127.150')), 'CONFLICT');
    assert.equal(bridged(store, 'cache', '192.168.127.102').ip, '192.168.127.102');
    const report = ipamReport(store, { network: { ...DEFAULT_NET, bridge: 'vbr0', dns: [], reservations: { db: '192.168.127.100', cache: '192.168.127.102' } } });
    assert.deepEqual(
      report.leases.map((l) => [l.ip, l.vm]),
      [
        ['192.168.127.100', 'db'],
        ['192.168.127.101', 'web1'],
        ['192.168.127.102', 'cache'],
        ['192.168.127.103', 'web2'],
      ],
    );
    assert.equal(report.size, 155);
    assert.equal(report.free, 151);
    store.close();
  });

  test('a reservation not yet used counts as not free in the report', () => {
    const { store, net } = fresh({ reservations: { db: '192.168.127.120' } });
    const report = ipamReport(store, { network: { ...net, bridge: 'vbr0', dns: [] } });
    assert.equal(report.free, report.size - 1);
    assert.deepEqual(report.reservations, [{ vm: 'db', ip: '192.168.127.120', leased: false }]);
    store.close();
  });
});

describe('modes without a lease', () => {
  test('dhcp and vsock VMs hold no lease, have a NULL address, and never collide with each other', () => {
    const { store } = fresh();
    const d1 = store.vms.createWithLease({ name: 'd1', plugin: 'hello', config: {} }, { mode: 'dhcp' });
    const d2 = store.vms.createWithLease({ name: 'd2', plugin: 'hello', config: {} }, { mode: 'dhcp' });
    const v1 = store.vms.createWithLease({ name: 'v1', plugin: 'hello', config: {} }, { mode: 'vsock' });
    const v2 = store.vms.createWithLease({ name: 'v2', plugin: 'hello', config: {} }, { mode: 'vsock' });
    for (const vm of [d1, d2, v1, v2]) assert.equal(vm.ip, null);
    assert.ok(d1.tap?.startsWith('vt'));
    assert.equal(v1.tap, null);
    assert.equal(v2.tap, null);
    assert.deepEqual(store.db.prepare('SELECT count(*) AS n FROM ip_leases').get(), { n: 0 });
    assert.equal(bridged(store, 'b').ip, '192.168.127.100');
    store.close();
  });

  test('vsock CIDs are the lowest free at or above 3 and are reused after delete', () => {
    const { store } = fresh();
    const cids = ['a', 'b', 'c', 'd'].map((name) => store.vms.createWithLease({ name, plugin: 'hello', config: {} }, { mode: 'vsock' }).cid);
    assert.deepEqual(cids, [3, 4, 5, 6]);
    store.vms.deleteWithRelease('b');
    assert.equal(bridged(store, 'e').cid, 4);
    assert.equal(bridged(store, 'f').cid, 7);
    store.close();
  });
});

describe('bad input writes nothing', () => {
  test('invalid names are refused before any write', () => {
    const { store } = fresh();
    bridged(store, 'ok');
    const before = snapshot(store);
    for (const name of ['a'.repeat(64), 'a/b', '../etc', 'has space', 'x;reboot', '$(id)', '`id`', 'a|b', '', '-lead', 'ümlaut', 'a\nb']) {
      assert.equal(code(() => bridged(store, name)), 'INVALID_ARGUMENT', JSON.stringify(name));
    }
    assert.equal(code(() => store.vms.createWithLease({ name: 42 as unknown as string, plugin: 'hello', config: {} }, { mode: 'bridged' })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.vms.createWithLease({ name: 'm', plugin: 'hello', config: {} }, { mode: 'wifi' as 'dhcp' })), 'INVALID_ARGUMENT');
    assert.equal(snapshot(store), before);
    store.close();
  });

  test('a taken name is NAME_TAKEN; an unknown plugin is NOT_FOUND; neither consumes an address', () => {
    const { store } = fresh();
    bridged(store, 'web');
    const before = snapshot(store);
    assert.equal(code(() => bridged(store, 'web')), 'NAME_TAKEN');
    assert.equal(code(() => store.vms.createWithLease({ name: 'x', plugin: 'nope', config: {} }, { mode: 'bridged' })), 'NOT_FOUND');
    assert.equal(snapshot(store), before);
    assert.equal(bridged(store, 'next').ip, '192.168.127.101');
    store.close();
  });

  test('deleting a missing VM is NOT_FOUND; removing a plugin in use is CONFLICT', () => {
    const { store } = fresh();
    bridged(store, 'web');
    assert.equal(code(() => store.vms.deleteWithRelease('ghost')), 'NOT_FOUND');
    assert.equal(code(() => store.plugins.uninstall('hello')), 'CONFLICT');
    store.vms.deleteWithRelease('web');
    assert.equal(store.plugins.uninstall('hello').name, 'hello');
    store.close();
  });
});

describe('custom subnets', () => {
  test('10.200.0.0/16 leases in numeric order across the third octet and finds a hole among 64k leases', () => {
    const { store } = fresh({ host_cidr: '10.200.0.1/16', pool_start: '10.200.0.2', pool_end: '10.200.255.254' });
    const insert = store.db.prepare("INSERT INTO vms (name, plugin, state, mode, ip, mac, tap, cid, config, created_at, updated_at) VALUES (?, 'hello', 'stopped', 'bridged', ?, '02:00:00:00:00:00', ?, ?, '{}', 'now', 'now')");
    const lease = store.db.prepare("INSERT INTO ip_leases (ip_num, ip, vm_name, since) VALUES (?, ?, ?, 'now')");
    // Fill 10.200.0.2 .. 10.200.250.255 directly (64k leases) to test the gap search at scale.
    const base = (10 << 24) | (200 << 16);
    store.db.transaction(() => {
      for (let x = 2; x < 251 * 256; x++) {
        const ip = `10.200.${x >> 8}.${x & 255}`;
        insert.run(`bulk${x}`, ip, `tb${x}`, 1000 + x);
        lease.run(base + x, ip, `bulk${x}`);
      }
    })();
    assert.equal(bridged(store, 'late').ip, '10.200.251.0');
    store.vms.deleteWithRelease('bulk700');
    assert.equal(bridged(store, 'hole').ip, '10.200.2.188');
    assert.deepEqual(store.vms.checkConsistency(), []);
    store.close();
  });
});

describe('store', () => {
  test('migrations run once; pragmas are WAL and foreign keys on', () => {
    const path = join(dir, 'migrate.db');
    openStore({ path }).close();
    const s = openStore({ path });
    assert.deepEqual(s.db.prepare('SELECT version FROM schema_migrations').all(), MIGRATIONS.map((m) => ({ version: m.version })));
    assert.equal(s.db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(s.db.pragma('foreign_keys', { simple: true }), 1);
    s.close();
  });

  test('update changes state/pid/error and refuses bad values', () => {
    const { store } = fresh();
    bridged(store, 'web');
    const r = store.vms.update('web', { state: 'running', pid: 1234, vmm: 'qemu' });
    assert.equal(r.state, 'running');
    assert.equal(r.pid, 1234);
    assert.equal(code(() => store.vms.update('web', { state: 'flying' as 'running' })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.vms.update('web', { pid: -1 })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.vms.update('ghost', { state: 'running' })), 'NOT_FOUND');
    assert.equal(store.vms.update('web', { error: 'x'.repeat(10_000) }).error?.length, 4096);
    store.close();
  });
});
