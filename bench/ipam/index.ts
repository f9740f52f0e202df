/**
 * bench/ipam: lease + release per second on a durable WAL database (docs/benchmarks.md: ≥ 10,000/s,
 * no duplicate under contention). One cycle = `vms.createWithLease` (VM row + lowest free
 * address + CID, one IMMEDIATE transaction) + `vms.deleteWithRelease` (one transaction), with
 * 50 long-lived leases in place so the gap search has work to do.
 *
 * Measured in the same run:
 * - baseline: the floor for two durable transactions on the same kind of file and settings
 *   (page size, WAL, NORMAL, checkpoint interval; insert one row, delete it), so the ratio shows
 *   what IPAM itself costs on top of SQLite;
 * - single process, synchronous=NORMAL (the store's default: survives any process crash) and
 *   synchronous=FULL (also survives power loss: one fsync per commit);
 * - contended: WORKERS processes cycling on one file, each holding up to HOLD leases; at the
 *   end every process reports what it holds and the union is checked for duplicates and
 *   against the database. Fairness is the slowest process's rate ÷ the mean (goal ≥ 0.5: no
 *   process starves while the others hold the write lock).
 *
 * Usage: node --import tsx bench/ipam/index.ts [seconds-per-phase]
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { addressPool } from '../../host/ipam/pool.js';
import { openStore, PAGE_SIZE_BYTES, WAL_AUTOCHECKPOINT_PAGES } from '../../host/store/store.js';

const PHASE_SECONDS = Number(process.argv[2] ?? 3);
const GOAL_PER_SECOND = 10_000;
/** The slowest contending process must reach this share of the mean rate. */
const GOAL_FAIRNESS = 0.5;
const BACKGROUND_LEASES = 50;
const WORKERS = 4;
const HOLD = 8;
const NET = { host_cidr: '10.220.0.1/16', pool_start: '10.220.0.2', pool_end: '10.220.255.254', reservations: {} };
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), `volant-bench-ipam-${process.pid}-`));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
process.on('SIGINT', () => process.exit(130));

function prepare(name: string, synchronous: 'normal' | 'full'): string {
  const path = join(dir, name);
  const s = openStore({ path, pool: addressPool(NET), synchronous });
  s.plugins.install({ name: 'hello', version: '1', manifest: {}, imagePath: '/x' });
  for (let i = 0; i < BACKGROUND_LEASES; i++) s.vms.createWithLease({ name: `bg${i}`, plugin: 'hello', config: {} }, { mode: 'bridged' });
  s.close();
  return path;
}

function baseline(): number {
  const db = new Database(join(dir, 'baseline.db'));
  db.pragma(`page_size = ${PAGE_SIZE_BYTES}`);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  const ins = db.prepare('INSERT INTO t (id, v) VALUES (?, ?)');
  const del = db.prepare('DELETE FROM t WHERE id = ?');
  const insTx = db.transaction((i: number) => ins.run(i, 'x'));
  const delTx = db.transaction((i: number) => del.run(i));
  const end = performance.now() + PHASE_SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    insTx.immediate(n);
    delTx.immediate(n);
    n++;
  }
  db.close();
  return n / PHASE_SECONDS;
}

function single(synchronous: 'normal' | 'full'): number {
  const s = openStore({ path: prepare(`single-${synchronous}.db`, synchronous), pool: addressPool(NET), synchronous });
  const seconds = synchronous === 'full' ? Math.min(PHASE_SECONDS, 2) : PHASE_SECONDS;
  const end = performance.now() + seconds * 1000;
  let n = 0;
  while (performance.now() < end) {
    const name = `c${n}`;
    s.vms.createWithLease({ name, plugin: 'hello', config: {} }, { mode: 'bridged' });
    s.vms.deleteWithRelease(name);
    n++;
  }
  s.close();
  return n / seconds;
}

const WORKER = `
import { existsSync } from 'node:fs';
import { addressPool } from '${ROOT}host/ipam/pool.ts';
import { openStore } from '${ROOT}host/store/store.ts';
const [dbPath, goFile, id, seconds, hold, net] = process.argv.slice(1);
const store = openStore({ path: dbPath, pool: addressPool(JSON.parse(net)) });
console.log('ready');
while (!existsSync(goFile)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
const held = [];
let cycles = 0;
const end = performance.now() + Number(seconds) * 1000;
for (let i = 0; performance.now() < end; i++) {
  const vm = store.vms.createWithLease({ name: id + '-' + i, plugin: 'hello', config: {} }, { mode: 'bridged' });
  held.push([vm.name, vm.ip]);
  if (held.length > Number(hold)) { store.vms.deleteWithRelease(held.shift()[0]); cycles++; }
}
console.log(JSON.stringify({ cycles, held }));
`;

async function contended(): Promise<{ perSecond: number; duplicates: number; matchesDatabase: boolean; perWorker: number[]; fairness: number }> {
  const path = prepare('contended.db', 'normal');
  const go = join(dir, 'contended.go');
  const workers = Array.from({ length: WORKERS }, (_, i) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', WORKER, path, go, `w${i}`, String(PHASE_SECONDS), String(HOLD), JSON.stringify(NET)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const ready = new Promise<void>((resolve) =>
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.startsWith('ready\n')) resolve();
      }),
    );
    const done = new Promise<{ cycles: number; held: [string, string][] }>((resolve, reject) =>
      child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.replace(/^ready\n/, ''))) : reject(new Error(`worker ${i} exited ${code}`)))),
    );
    return { ready, done };
  });
  await Promise.all(workers.map((w) => w.ready));
  writeFileSync(go, '');
  const results = await Promise.all(workers.map((w) => w.done));
  const held = results.flatMap((r) => r.held);
  const duplicates = held.length - new Set(held.map(([, ip]) => ip)).size;
  const s = openStore({ path, pool: addressPool(NET) });
  const rows = s.db.prepare("SELECT vm_name, ip FROM ip_leases WHERE vm_name NOT LIKE 'bg%'").all() as { vm_name: string; ip: string }[];
  const inDb = new Map(rows.map((r) => [r.vm_name, r.ip]));
  const matchesDatabase = rows.length === held.length && held.every(([name, ip]) => inDb.get(name) === ip) && s.vms.checkConsistency().length === 0;
  s.close();
  const perWorker = results.map((r) => r.cycles / PHASE_SECONDS);
  const perSecond = perWorker.reduce((a, b) => a + b, 0);
  return { perSecond, duplicates, matchesDatabase, perWorker, fairness: Math.min(...perWorker) / (perSecond / perWorker.length) };
}

const base = baseline();
const normal = single('normal');
const full = single('full');
const contention = await contended();

const rows: [string, number][] = [
  ['baseline: insert+delete, 2 tx (NORMAL)', base],
  ['lease+release, 1 process (NORMAL)', normal],
  ['lease+release, 1 process (FULL)', full],
  [`lease+release, ${WORKERS} processes (NORMAL)`, contention.perSecond],
];
console.log(`bench/ipam on ${dir} (WAL, ${PHASE_SECONDS}s per phase, ${BACKGROUND_LEASES} standing leases, /16 pool)`);
console.log('phase                                        cycles/s   ×baseline   ×goal(10k)');
for (const [name, v] of rows) console.log(`${name.padEnd(44)} ${v.toFixed(0).padStart(8)} ${(v / base).toFixed(3).padStart(11)} ${(v / GOAL_PER_SECOND).toFixed(3).padStart(12)}`);
console.log(`contended per process: ${contention.perWorker.map((v) => v.toFixed(0)).join(', ')} cycles/s; slowest ÷ mean ${contention.fairness.toFixed(2)} (goal ≥ ${GOAL_FAIRNESS})`);
console.log(`duplicates under contention: ${contention.duplicates}; held leases match the database: ${contention.matchesDatabase ? 'yes' : 'NO'}`);
console.log(
  JSON.stringify({
    bench: 'ipam',
    goal_per_second: GOAL_PER_SECOND,
    baseline_per_second: base,
    single_normal_per_second: normal,
    single_full_per_second: full,
    contended_per_second: contention.perSecond,
    contended_workers: WORKERS,
    contended_per_worker_per_second: contention.perWorker,
    fairness_goal: GOAL_FAIRNESS,
    ratio_fairness_slowest_vs_mean: contention.fairness,
    ratio_single_vs_goal: normal / GOAL_PER_SECOND,
    ratio_contended_vs_goal: contention.perSecond / GOAL_PER_SECOND,
    ratio_single_vs_baseline: normal / base,
    met: normal >= GOAL_PER_SECOND && contention.fairness >= GOAL_FAIRNESS && contention.duplicates === 0 && contention.matchesDatabase,
    duplicates: contention.duplicates,
    consistent: contention.matchesDatabase,
  }),
);
