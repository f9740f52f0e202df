// Several real Node processes leasing from one SQLite file at once: no address is handed out
// twice, the pool is used exactly up, and processes killed with SIGKILL in the middle of
// lease/release loops leave a database where every lease has its VM row and vice versa.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addressPool } from '../../host/ipam/pool.js';
import { openStore } from '../../host/store/store.js';

const dir = mkdtempSync(join(tmpdir(), `volant-store-${process.pid}-`));
const started = new Set<ChildProcess>();
after(() => {
  for (const c of started) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const NET = { host_cidr: '10.210.0.1/24', pool_start: '10.210.0.100', pool_end: '10.210.0.254', reservations: {} };
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * One worker process. `fill`: lease `count` VMs, report what it got. `churn`: create and delete
 * VMs forever (killed by the test), saying `churning` once it has written CHURN_REPORT_AFTER
 * times. Both wait for the go file so all contend at once.
 */
const WORKER = `
import { existsSync } from 'node:fs';
import { addressPool } from '${ROOT}host/ipam/pool.ts';
import { openStore } from '${ROOT}host/store/store.ts';
const [mode, dbPath, goFile, id, count, net] = process.argv.slice(1);
const store = openStore({ path: dbPath, pool: addressPool(JSON.parse(net)) });
console.log('ready');
while (!existsSync(goFile)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
const leased = [];
let exhausted = 0;
if (mode === 'fill') {
  for (let i = 0; i < Number(count); i++) {
    try {
      const vm = store.vms.createWithLease({ name: id + '-' + i, plugin: 'hello', config: {} }, { mode: 'bridged' });
      leased.push([vm.name, vm.ip, vm.cid]);
    } catch (e) {
      if (e.code !== 'POOL_EXHAUSTED') throw e;
      exhausted++;
    }
  }
  console.log(JSON.stringify({ leased, exhausted }));
} else {
  const mine = [];
  for (let i = 0; ; i++) {
    try {
      mine.push(store.vms.createWithLease({ name: id + '-' + i, plugin: 'hello', config: {} }, { mode: i % 5 === 0 ? 'vsock' : 'bridged' }).name);
    } catch (e) {
      if (e.code !== 'POOL_EXHAUSTED') throw e;
    }
    if (mine.length > 3 || (mine.length > 0 && i % 3 === 0)) store.vms.deleteWithRelease(mine.splice(Math.floor(Math.random() * mine.length), 1)[0]);
    if (i === Number(count)) console.log('churning');
  }
}
`;

interface Worker {
  child: ChildProcess;
  ready: Promise<void>;
  /** churn: resolves once the worker is in its loop and has written `count` times. */
  churning: Promise<void>;
  output: Promise<string>;
}

/** A churn worker reports after this many create/delete rounds; it is killed at a random point after. */
const CHURN_REPORT_AFTER = 300;

function startWorker(mode: 'fill' | 'churn', db: string, go: string, id: string, count: number, net = NET): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', WORKER, mode, db, go, id, String(count), JSON.stringify(net)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const ready = new Promise<void>((resolve, reject) => {
    const check = () => (out.startsWith('ready\n') ? resolve() : undefined);
    child.stdout!.on('data', check);
    child.once('exit', () => reject(new Error(`worker ${id} exited before ready: ${err}`)));
  });
  const churning = new Promise<void>((resolve, reject) => {
    const check = () => (out.includes('churning\n') ? resolve() : undefined);
    child.stdout!.on('data', check);
    child.once('exit', () => reject(new Error(`worker ${id} exited before churning: ${err}`)));
  });
  churning.catch(() => undefined);
  const output = new Promise<string>((resolve, reject) => {
    child.once('exit', (code, signal) => {
      started.delete(child);
      if (code === 0 || signal === 'SIGKILL') resolve(out.replace(/^ready\n/, ''));
      else reject(new Error(`worker ${id} failed (${code ?? signal}): ${err}`));
    });
  });
  output.catch(() => undefined);
  return { child, ready, churning, output };
}

function prepare(name: string): string {
  const db = join(dir, name);
  const s = openStore({ path: db, pool: addressPool(NET) });
  s.plugins.install({ name: 'hello', version: '1', manifest: {}, imagePath: '/x' });
  s.close();
  return db;
}

function assertConsistent(db: string): void {
  const s = openStore({ path: db, pool: addressPool(NET) });
  try {
    assert.equal(s.db.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(s.db.pragma('foreign_key_check'), []);
    assert.deepEqual(s.vms.checkConsistency(), []);
    const leases = s.db.prepare('SELECT ip_num, ip, vm_name FROM ip_leases').all() as { ip_num: number; ip: string; vm_name: string }[];
    const pool = addressPool(NET);
    for (const l of leases) assert.ok(l.ip_num >= pool.start && l.ip_num <= pool.end, `lease ${l.ip} outside the pool`);
    const bridged = s.db.prepare("SELECT count(*) AS n FROM vms WHERE mode = 'bridged'").get() as { n: number };
    assert.equal(bridged.n, leases.length);
  } finally {
    s.close();
  }
}

describe('several processes on one database', () => {
  test('contending processes never get the same address or CID, and use the pool up exactly', async () => {
    const db = prepare('contend.db');
    const go = join(dir, 'contend.go');
    const WORKERS = 5;
    const EACH = 40; // 200 requests for 155 addresses
    const workers = Array.from({ length: WORKERS }, (_, i) => startWorker('fill', db, go, `w${i}`, EACH));
    await Promise.all(workers.map((w) => w.ready));
    writeFileSync(go, '');
    const results = (await Promise.all(workers.map((w) => w.output))).map((o) => JSON.parse(o) as { leased: [string, string, number][]; exhausted: number });
    const all = results.flatMap((r) => r.leased);
    assert.equal(all.length, 155, 'every pool address is leased once');
    assert.equal(new Set(all.map(([, ip]) => ip)).size, all.length, 'no address twice');
    assert.equal(new Set(all.map(([, , cid]) => cid)).size, all.length, 'no CID twice');
    assert.equal(
      results.reduce((n, r) => n + r.exhausted, 0),
      WORKERS * EACH - 155,
    );
    assert.ok(results.filter((r) => r.leased.length > 0).length > 1, 'more than one process got addresses (they really contended)');
    const s = openStore({ path: db, pool: addressPool(NET) });
    const rows = s.db.prepare('SELECT vm_name, ip FROM ip_leases ORDER BY vm_name').all() as { vm_name: string; ip: string }[];
    assert.deepEqual(
      rows.map((r) => [r.vm_name, r.ip]),
      all.map(([name, ip]) => [name, ip]).sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
    );
    s.close();
    assertConsistent(db);
  });

  test('SIGKILL in the middle of lease/release loops leaves every lease with its VM and every bridged VM with its lease', async () => {
    const db = prepare('killed.db');
    const ROUNDS = 3;
    for (let round = 0; round < ROUNDS; round++) {
      const go = join(dir, `killed-${round}.go`);
      const workers = Array.from({ length: 4 }, (_, i) => startWorker('churn', db, go, `r${round}w${i}`, CHURN_REPORT_AFTER));
      await Promise.all(workers.map((w) => w.ready));
      writeFileSync(go, '');
      // Killed once every worker is in the middle of its loop, wherever each one is by then.
      await Promise.all(workers.map((w) => w.churning));
      for (const w of workers) w.child.kill('SIGKILL');
      await Promise.all(workers.map((w) => w.output));
      assertConsistent(db);
    }
    const s = openStore({ path: db, pool: addressPool(NET) });
    const n = s.db.prepare('SELECT count(*) AS n FROM vms').get() as { n: number };
    assert.ok(n.n > 0, 'the workers really wrote before they were killed');
    s.close();
  });
});
