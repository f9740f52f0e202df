/**
 * Write transactions that take turns between processes sharing the database file.
 *
 * SQLite's own busy handler (busy_timeout) sleeps 1, 2, 5, 10, … up to 100 ms between attempts
 * to take the write lock. Under contention that is unfair: a process that lost a few times sleeps
 * for tens of milliseconds while the one holding the lock, which asks again microseconds after
 * each commit, keeps winning (bench/ipam measured 194 vs 2684 cycles/s between four processes).
 * Here BEGIN IMMEDIATE runs with a busy timeout of 0 and is retried from JS after a short random
 * pause that never grows (RETRY_PAUSE_MIN_US..MAX_US), so every waiter asks as often as any other
 * and none falls behind for long; a process that had to wait for its turn also pauses once after
 * its commit, which gives the next waiter its turn instead of taking the lock straight back. A
 * process alone never waits and never pauses. After BUSY_TIMEOUT_MS of trying, SQLITE_BUSY is
 * thrown as before. Only BEGIN runs without SQLite's handler: every other statement keeps it.
 */

import type Database from 'better-sqlite3';

/** How long a writer keeps asking for the lock before giving up with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 10_000;
/** Pause between two attempts to take the write lock: uniform in [MIN, MAX] microseconds. */
export const RETRY_PAUSE_MIN_US = 20;
export const RETRY_PAUSE_MAX_US = 200;

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

export class WriteTurns {
  private readonly noWait: Database.Statement;
  private readonly wait: Database.Statement;

  constructor(db: Database.Database) {
    this.noWait = db.prepare('PRAGMA busy_timeout = 0');
    this.wait = db.prepare(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  }

  /** Runs `tx` as an IMMEDIATE transaction, waiting for the write lock in turn with other processes. */
  run<A extends unknown[], R>(tx: Database.Transaction<(...args: A) => R>, ...args: A): R {
    let deadline = 0;
    let waited = false;
    this.noWait.get();
    try {
      for (;;) {
        try {
          const result = tx.immediate(...args);
          if (waited) pause(randomPause());
          return result;
        } catch (e) {
          if (!isBusy(e)) throw e;
          const now = performance.now();
          if (!waited) deadline = now + BUSY_TIMEOUT_MS;
          else if (now > deadline) throw e;
          waited = true;
          pause(randomPause());
        }
      }
    } finally {
      this.wait.get();
    }
  }
}
