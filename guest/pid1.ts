/**
 * The duties of init, which kestrel has when it runs as PID 1 in the VM:
 *
 *  - Reap orphans. Processes the workload leaves behind are re-parented to us; their zombies are
 *    collected with the addon's `reapOrphans`, which leaves alone every pid Node itself spawned
 *    (children.ts) so Node still sees those exits. Runs on SIGCHLD and every REAP_INTERVAL_MS.
 *  - Power off, never exit: when PID 1 exits the kernel panics. Every end (SIGTERM, a workload
 *    done under policy `exit`, a fatal boot error) goes through `powerOff`.
 *  - A fatal boot error prints one `kestrel: fatal: ...` line and powers off, so a broken image
 *    shows its cause on the console and the VMM exits instead of hanging.
 *
 * Outside a VM the same calls end the process with an exit code instead.
 */

import { spawnSync } from 'node:child_process';
import { reapOrphans, reboot, setChildSubreaper } from '../native/index.js';
import { isOwnChild } from './children.js';
import { say } from './console.js';

export const REAP_INTERVAL_MS = 1000;
/** The longest a clean shutdown may take before we power off anyway. */
export const SHUTDOWN_DEADLINE_MS = 10_000;

export const isPid1 = (): boolean => process.pid === 1;

let orphansReaped = 0;

/** How many orphans the reaper has collected (reported by /healthz). */
export const reapedCount = (): number => orphansReaped;

/**
 * Starts reaping. Outside PID 1 (`--reap-orphans`) kestrel first becomes a child subreaper, so
 * orphaned descendants are re-parented to it as they would be to init.
 */
export function startReaper(): () => void {
  if (!isPid1()) setChildSubreaper();
  const reap = (): void => {
    try {
      orphansReaped += reapOrphans((pid: number) => isOwnChild(pid)).length;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECHILD') say(`reaper: ${(e as Error).message}`);
    }
  };
  process.on('SIGCHLD', reap);
  const timer = setInterval(reap, REAP_INTERVAL_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    process.off('SIGCHLD', reap);
  };
}

/** PID 1: sync and power the VM off. Otherwise: exit with `code`. */
export function endKestrel(reason: string, code: number): never {
  say(`${reason}; ${isPid1() ? 'powering off' : `exiting with ${code}`}`);
  if (!isPid1()) process.exit(code);
  spawnSync('sync', [], { stdio: 'ignore', timeout: 5000 });
  return reboot('power-off');
}

export function fatal(message: string): never {
  say(`fatal: ${message}`);
  return endKestrel('cannot go on', 1);
}

/**
 * SIGTERM/SIGINT run `shutdown` once (stop the workload, close servers), then end; a second
 * signal or SHUTDOWN_DEADLINE_MS ends at once.
 */
export function onShutdownSignals(shutdown: (signal: string) => Promise<void>): void {
  let started = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (started) endKestrel(`second ${signal}`, 1);
    started = true;
    setTimeout(() => endKestrel(`shutdown took longer than ${SHUTDOWN_DEADLINE_MS} ms`, 1), SHUTDOWN_DEADLINE_MS).unref();
    shutdown(signal).then(
      () => endKestrel(`stopped on ${signal}`, 0),
      (e: unknown) => endKestrel(`shutdown failed: ${(e as Error).message}`, 1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
