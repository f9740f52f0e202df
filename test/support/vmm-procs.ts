/**
 * Test helpers around VMM processes: find leftovers by a path in their argv (a launch that
 * failed must leave no process behind), and make a stale Unix socket file like one a crashed
 * VMM leaves.
 */

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Whether a process with this PID exists (signal 0 probes without touching it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PIDs of live processes whose argv mentions `fragment` (excluding this process). */
export function pidsMentioning(fragment: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(fragment)) out.push(pid);
    } catch {}
  }
  return out;
}

/** Leaves a bound-but-dead Unix socket at `path` (the listener is SIGKILLed, so nobody unlinks it). */
export function makeStaleSocket(path: string): void {
  const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  try {
    execFileSync(process.execPath, ['-e', script], { stdio: 'ignore' });
  } catch {
    // exits by SIGKILL on purpose
  }
}
