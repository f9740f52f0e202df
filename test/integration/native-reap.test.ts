/**
 * reapOrphans with real processes: this test process becomes a child subreaper (through the
 * addon), so a grandchild orphaned by its shell is reparented to it and, once it exits, becomes
 * our zombie. The checks: orphans are collected, a child that Node spawned (keep → true) is left
 * for libuv so child_process still reports its own exit code, and the orphans behind such a kept
 * zombie are still found. The event loop is held (synchronous waits) while zombies pile up, so
 * libuv cannot collect its child before reapOrphans runs.
 */

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { forTesting, reapOrphans, setChildSubreaper } from '../../native/index.js';
import { parseProcStat, zombieChildren } from '../../native/reap.js';

const ZOMBIE_WAIT_MS = 10_000;
const POLL_MS = 10;
/** A wrong reaper can steal a child's status and leave child_process waiting forever. */
const TEST_TIMEOUT_MS = 30_000;

function isOurZombie(pid: number): boolean {
  try {
    const stat = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return stat?.state === 'Z' && stat.ppid === process.pid;
  } catch {
    return false;
  }
}

function exists(pid: number): boolean {
  try {
    readFileSync(`/proc/${pid}/stat`);
    return true;
  } catch {
    return false;
  }
}

/** Blocks the thread (and so libuv's SIGCHLD handling) until every pid is our zombie. */
function holdUntilZombies(pids: number[]): void {
  const deadline = Date.now() + ZOMBIE_WAIT_MS;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  while (!pids.every(isOurZombie)) {
    if (Date.now() > deadline) throw new Error(`not zombies of ${process.pid} in time: ${pids.filter((p) => !isOurZombie(p))}`);
    Atomics.wait(sleeper, 0, 0, POLL_MS);
  }
}

/** Starts `count` grandchildren that outlive their shell (so they become ours) and exit soon. */
function orphans(count: number): number[] {
  const script = Array.from({ length: count }, () => 'sleep 0.05 </dev/null >/dev/null 2>&1 & echo $!').join('\n');
  const shell = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
  assert.equal(shell.status, 0, shell.stderr);
  return shell.stdout.trim().split('\n').map(Number);
}

describe('reapOrphans', { timeout: TEST_TIMEOUT_MS }, () => {
  before(() => setChildSubreaper());

  test('collects orphaned grandchildren reparented to this subreaper', () => {
    const pids = orphans(3);
    holdUntilZombies(pids);
    const asked: number[] = [];
    const reaped = reapOrphans((pid) => {
      asked.push(pid);
      return false;
    });
    assert.deepEqual([...reaped].sort(), [...pids].sort());
    assert.deepEqual([...asked].sort(), [...pids].sort(), 'keep() is asked about every zombie');
    for (const pid of pids) assert.equal(exists(pid), false, `pid ${pid} still exists`);
    assert.deepEqual(reapOrphans(() => false), [], 'nothing left to reap');
  });

  test("leaves Node's own child to child_process, which still gets its exit code", async () => {
    const child = spawn(process.execPath, ['-e', 'process.exit(7)'], { stdio: 'ignore' });
    const exited = once(child, 'exit');
    const childPid = child.pid!;
    const orphanPids = orphans(4);
    holdUntilZombies([childPid, ...orphanPids]);

    try {
      // waitid(P_ALL) may name the kept child before the orphans (the kernel's order is not
      // ours to choose); the /proc scan must then find the orphans behind it.
      assert.deepEqual([...zombieChildren()].sort(), [childPid, ...orphanPids].sort());
      assert.ok([childPid, ...orphanPids].includes(forTesting.peekExitedChild()));
      const reaped = reapOrphans((pid) => pid === childPid);
      assert.deepEqual([...reaped].sort(), [...orphanPids].sort());
      assert.equal(isOurZombie(childPid), true, "the kept child's status must still be waiting for libuv");
    } finally {
      const [code, signal] = await exited;
      assert.equal(code, 7);
      assert.equal(signal, null);
    }
  });

  test('keep() returning true for everything reaps nothing', () => {
    const pids = orphans(2);
    holdUntilZombies(pids);
    assert.deepEqual(reapOrphans(() => true), []);
    for (const pid of pids) assert.equal(isOurZombie(pid), true);
    assert.deepEqual([...reapOrphans((pid) => !pids.includes(pid))].sort(), [...pids].sort());
  });
});
