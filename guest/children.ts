/**
 * Every process kestrel spawns goes through here. As PID 1 kestrel also reaps orphans
 * (re-parented grandchildren) with `waitpid`, and it must not steal the exit status of a child
 * Node is waiting for: the reaper keeps exactly the pids in this set, which holds a pid from
 * spawn until Node has reported its exit.
 */

import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';

const ownChildren = new Set<number>();

export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const child = spawn(command, args, options);
  const pid = child.pid;
  if (pid !== undefined) {
    ownChildren.add(pid);
    child.once('exit', () => ownChildren.delete(pid));
  }
  return child;
}

export function isOwnChild(pid: number): boolean {
  return ownChildren.has(pid);
}
