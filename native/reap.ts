/**
 * Reaping orphans without stealing the exit status of children Node spawned.
 *
 * As PID 1 (or a child subreaper) kestrel inherits every orphaned descendant and must collect
 * their zombies; but Node's child_process must still get its own children's exit codes. libuv
 * reaps its children one by one with waitpid(pid, WNOHANG) on SIGCHLD, never waitpid(-1), so
 * we only have to avoid reaping those pids ourselves:
 *   1. peek: waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT) names an exited child and leaves its
 *      status in place;
 *   2. if keep(pid) is false, waitpid(pid, WNOHANG) collects exactly that child; repeat;
 *   3. if keep(pid) is true (Node's own child, not yet collected by libuv), waitid(P_ALL) would
 *      keep naming it, so the remaining zombies are found in /proc (state Z, parent = us) and
 *      each non-kept one is collected by pid.
 * Why this is race-free: a zombie's pid cannot be reused until someone reaps it, and only libuv
 * (kept pids) or we (non-kept pids) reap, so the pid we peek is the process we reap. keep() is
 * called on the JS thread, where child_process.spawn() has already returned the pid of every
 * child Node started (spawn is synchronous in the parent), so keep() can never miss a child
 * that exists. A child spawned from a worker thread is outside this guarantee: keep() must
 * know those pids too.
 */

import { readdirSync, readFileSync } from 'node:fs';
import { addon } from './addon.js';

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
}

/** Parses /proc/<pid>/stat; the command name may contain spaces and parentheses. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const [state, ppid] = text.slice(close + 1).trim().split(' ');
  if (!Number.isInteger(pid) || state === undefined || ppid === undefined) return undefined;
  return { pid, state, ppid: Number(ppid) };
}

/** Pids of this process's zombie children, from /proc (empty when /proc is not mounted). */
export function zombieChildren(procRoot = '/proc', parent = process.pid): number[] {
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return [];
  }
  const zombies: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: ProcStat | undefined;
    try {
      stat = parseProcStat(readFileSync(`${procRoot}/${entry}/stat`, 'utf8'));
    } catch {
      continue; // exited and reaped while we looked
    }
    if (stat && stat.state === 'Z' && stat.ppid === parent) zombies.push(stat.pid);
  }
  return zombies;
}

/** Reaps every exited child for which keep(pid) is false; returns the reaped pids. */
export function reapOrphans(keep: (pid: number) => boolean): number[] {
  const native = addon();
  const reaped: number[] = [];
  for (;;) {
    const pid = native.peekExitedChild();
    if (pid === 0) return reaped;
    if (keep(pid)) break;
    if (!native.reapChild(pid)) break;
    reaped.push(pid);
  }
  for (const pid of zombieChildren()) {
    if (!keep(pid) && native.reapChild(pid)) reaped.push(pid);
  }
  return reaped;
}
