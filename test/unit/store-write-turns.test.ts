/**
 * Write transactions take turns (host/store/write-turns.ts): while another connection holds the
 * write lock the transaction waits (saying so on the beacon) and then runs once; the beacon tells
 * lock holders whether anyone waits; a failure that is not SQLITE_BUSY is
 * thrown at once and rolls back; SQLite's own busy timeout is back in place afterwards for every
 * other statement. The lock holder is a worker thread with its own connection, since the waiting
 * side blocks its thread, as SQLite calls do.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { BUSY_TIMEOUT_MS, beaconPath, WAITING_FRESH_MS, WriteTurns } from '../../host/store/write-turns.js';
import { nextEvent } from '../support/eventually.js';

const dir = mkdtempSync(join(tmpdir(), `volant-write-turns-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

function open(path: string): Database.Database {
  const db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who TEXT NOT NULL) STRICT');
  return db;
}

/** A thread that takes the write lock, says `held`, and commits when told to or after `holdMs`. */
const HOLDER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
const db = new Database(workerData.path);
db.exec('BEGIN IMMEDIATE');
db.prepare("INSERT INTO t (who) VALUES ('holder')").run();
parentPort.postMessage('held');
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.holdMs);
db.exec('COMMIT');
db.close();
`;

describe('write turns', () => {
  test('waits while another connection holds the write lock, then runs once', async () => {
    const path = join(dir, 'wait.db');
    const db = open(path);
    const turns = new WriteTurns(db);
    const insert = db.transaction((who: string) => db.prepare('INSERT INTO t (who) VALUES (?)').run(who));
    const holder = new Worker(HOLDER, { eval: true, workerData: { path, holdMs: 300, sqlite: createRequire(import.meta.url).resolve('better-sqlite3') } });
    const exited = nextEvent(holder, 'exit');
    await nextEvent(holder, 'message');
    // The holder has the lock now: this blocks until it commits, then inserts after it, and
    // meanwhile tells the others it waits (the beacon the lock holders look at).
    turns.run(insert, 'waiter');
    const beacon = statSync(beaconPath(path)!);
    assert.ok(Date.now() - beacon.mtimeMs < 60_000, 'the waiter touched the beacon');
    await exited;
    assert.deepEqual(db.prepare('SELECT who FROM t ORDER BY id').all(), [{ who: 'holder' }, { who: 'waiter' }]);
    assert.equal(db.pragma('busy_timeout', { simple: true }), BUSY_TIMEOUT_MS, "SQLite's busy timeout is back for other statements");
    db.close();
  });

  test('someone waits while the beacon is fresh; an old beacon means no one does', () => {
    const path = join(dir, 'beacon.db');
    const db = open(path);
    const turns = new WriteTurns(db);
    const beacon = beaconPath(path)!;
    assert.equal(turns.othersWaiting(), false, 'no beacon yet');
    writeFileSync(beacon, '');
    utimesSync(beacon, new Date(), new Date());
    assert.equal(turns.othersWaiting(), true);
    const old = (Date.now() - 100 * WAITING_FRESH_MS) / 1000;
    utimesSync(beacon, old, old);
    assert.equal(turns.othersWaiting(), false);
    assert.equal(beaconPath(':memory:'), undefined);
    db.close();
  });

  test('another error is thrown at once and the transaction rolls back', () => {
    const db = open(join(dir, 'error.db'));
    const turns = new WriteTurns(db);
    const failing = db.transaction(() => {
      db.prepare("INSERT INTO t (who) VALUES ('half')").run();
      db.prepare('INSERT INTO t (id, who) VALUES (1, NULL)').run();
    });
    assert.throws(() => turns.run(failing), /NOT NULL/);
    assert.equal((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n, 0);
    assert.equal(db.pragma('busy_timeout', { simple: true }), BUSY_TIMEOUT_MS);
    db.close();
  });
});
