/**
 * Write transactions that take turns between processes sharing the database file.
 *
 * SQLite's own busy handler (busy_timeout) sleeps 1, 2, 5, 10, … up to 100 ms between attempts
 * to take the write lock. Under contention that is unfair: a process that lost a few times sleeps
 * for tens of milliseconds while the one holding the lock, which asks again microseconds after
 * each commit, keeps winning (bench/ipam measured 194 vs 2684 cycles/s between four processes).
 * Here BEGIN IMMEDIATE runs with a busy timeout of 0 and is retried from JS:
 *
 *  - between attempts a short random pause that never grows (RETRY_PAUSE_MIN_US..MAX_US), so
 *    every waiter asks as often as any other;
 *  - a waiter says so: each failed attempt touches the beacon file `<database>-waiting`;
 *  - a writer that has committed TURN_BATCH transactions in a row without waiting looks at the
 *    beacon after its commit, and when someone waited within the last WAITING_FRESH_MS it pauses
 *    once, so a waiter gets the lock instead of the writer taking it straight back. Handing on
 *    after every commit would be fairest but leaves the lock idle half the time; a batch keeps
 *    most of the throughput and every process its share (bench/ipam: slowest ÷ mean ≈ 0.9).
 *
 * A process alone never waits and never pauses (it looks at the beacon once per TURN_BATCH
 * commits). After BUSY_TIMEOUT_MS of trying, SQLITE_BUSY is thrown as before. Only BEGIN runs
 * without SQLite's handler: every other statement keeps it.
 */

import { closeSync, openSync, statSync, utimesSync } from 'node:fs';
import type Database from 'better-sqlite3';

/** How long a writer keeps asking for the lock before giving up with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 10_000;
/** Pause between two attempts to take the write lock: uniform in [MIN, MAX] microseconds. */
export const RETRY_PAUSE_MIN_US = 20;
export const RETRY_PAUSE_MAX_US = 200;
/**
 * A beacon touched this recently means another process is waiting for the lock (a little more
 * than a coarse file-system clock tick, which may date a fresh file a few ms back).
 */
export const WAITING_FRESH_MS = 10;
/** Transactions a writer may commit in a row while others wait, before it hands the lock on. */
export const TURN_BATCH = 16;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `us` microseconds (SQLite's calls are synchronous too). */
function pause(us: number): void {
  Atomics.wait(sleeper, 0, 0, us / 1000);
}

function randomPause(): number {
  return RETRY_PAUSE_MIN_US + Math.random() * (RETRY_PAUSE_MAX_US - RETRY_PAUSE_MIN_US);
}

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/** The beacon beside a database file; none for in-memory databases (one process only). */
export function beaconPath(databaseFile: string): string | undefined {
  return databaseFile === '' || databaseFile === ':memory:' ? undefined : `${databaseFile}-waiting`;
}

/**
 * The busy timeout is set with `exec`, not a prepared statement: SQLite applies
 * `PRAGMA busy_timeout = N` when the statement is compiled, so running a prepared one again does
 * not set it again once another value was set in between.
 */
const NO_WAIT = 'PRAGMA busy_timeout = 0';
const WAIT = `PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`;

export class WriteTurns {
  private readonly beacon: string | undefined;
  /** Commits in a row since this writer last waited or handed the lock on. */
  private streak = 0;

  constructor(private readonly db: Database.Database) {
    this.beacon = beaconPath(db.name);
  }

  /** Runs `tx` as an IMMEDIATE transaction, waiting for the write lock in turn with other processes. */
  run<A extends unknown[], R>(tx: Database.Transaction<(...args: A) => R>, ...args: A): R {
    const deadline = performance.now() + BUSY_TIMEOUT_MS;
    let waited = false;
    this.db.exec(NO_WAIT);
    try {
      for (;;) {
        let result: R;
        try {
          result = tx.immediate(...args);
        } catch (e) {
          if (!isBusy(e) || performance.now() > deadline) throw e;
          waited = true;
          this.signalWaiting();
          pause(randomPause());
          continue;
        }
        this.streak = waited ? 1 : this.streak + 1;
        if (this.streak >= TURN_BATCH && this.othersWaiting()) {
          this.streak = 0;
          pause(randomPause());
        }
        return result;
      }
    } finally {
      this.db.exec(WAIT);
    }
  }

  /** Someone touched the beacon within WAITING_FRESH_MS. */
  othersWaiting(): boolean {
    if (!this.beacon) return false;
    const st = statSync(this.beacon, { throwIfNoEntry: false });
    return st !== undefined && Date.now() - st.mtimeMs <= WAITING_FRESH_MS;
  }

  private signalWaiting(): void {
    if (!this.beacon) return;
    const now = new Date();
    try {
      utimesSync(this.beacon, now, now);
    } catch {
      try {
        closeSync(openSync(this.beacon, 'a', 0o600));
      } catch {
        // A read-only directory: waiting still works, only without the hand-on.
      }
    }
  }
}
