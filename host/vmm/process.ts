/**
 * Supervising a VMM process: the side effects both launchers share. What must hold:
 *
 *  - A VMM outlives volantd: it runs in its own process group (a Ctrl-C or a daemon crash does
 *    not take VMs down) and writes stdout/stderr to a file, never to a pipe that dies with us.
 *  - A running VMM keeps the event loop alive (whoever awaits `exited` gets an answer).
 *  - `exited` resolves exactly once, whether we spawned the VMM (child `exit` event, with code
 *    and signal) or adopted it after a daemon restart (we are not its parent, so we poll /proc
 *    and learn no exit status).
 *  - Stopping is a ladder: polite steps (the VMM's API), each given time to work, then SIGTERM,
 *    then SIGKILL. Before signalling an adopted PID we re-check it is still that VMM, so a
 *    recycled PID is never killed.
 */

import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { VolantError } from '../../shared/errors.js';
import type { VmmCapabilities, VmmExit, VmmKind, VmProcess } from './launcher.js';
import { logTail } from './run-dir.js';

/** How often an adopted VMM's /proc entry is checked. */
export const ADOPTED_PID_POLL_MS = 250;
/** Time a VMM gets to exit after SIGTERM before SIGKILL. */
export const SIGTERM_GRACE_MS = 3000;
/** Time the kernel gets to reap a SIGKILLed VMM before we call it stuck. */
export const SIGKILL_WAIT_MS = 5000;

export interface SpawnedVmm {
  pid: number;
  exited: Promise<VmmExit>;
}

/** Starts `argv` detached, stdout and stderr appended to `logPath`; rejects if it cannot start. */
export function spawnVmm(argv: readonly string[], logPath: string): Promise<SpawnedVmm> {
  const [command, ...args] = argv;
  if (!command) throw new VolantError('INTERNAL', 'spawnVmm: empty command');
  const logFd = openSync(logPath, 'a', 0o600);
  return new Promise((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(command, args, { detached: true, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const exited = new Promise<VmmExit>((res) => child.once('exit', (code, signal) => res({ code, signal })));
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(new VolantError('VMM_FAILED', `cannot start ${command}: ${err.code === 'ENOENT' ? 'not found' : err.message}`, { command }, { cause: err }));
    });
    child.once('spawn', () => {
      resolve({ pid: child.pid!, exited });
    });
  });
}

/** The argv of a live process, or undefined when it is gone or a zombie. */
export function readProcessArgv(pid: number): string[] | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return undefined;
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** True when `argv` holds `needle` as consecutive arguments. */
export function argvContains(argv: readonly string[], needle: readonly string[]): boolean {
  outer: for (let i = 0; i + needle.length <= argv.length; i++) {
    for (let j = 0; j < needle.length; j++) if (argv[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** `exited` for a process we did not spawn: resolves once `isStillIt` (a /proc check) turns false. */
export function watchAdoptedPid(isStillIt: () => boolean): Promise<VmmExit> {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (isStillIt()) return;
      clearInterval(timer);
      resolve({ code: null, signal: null });
    }, ADOPTED_PID_POLL_MS);
  });
}

/** Resolves to the exit if `exited` settles within `ms`, else undefined. */
export async function waitForExit(exited: Promise<VmmExit>, ms: number): Promise<VmmExit | undefined> {
  const ac = new AbortController();
  const timeout = sleep(ms, undefined, { signal: ac.signal }).catch(() => undefined);
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    ac.abort();
  }
}

/**
 * A launch that failed after the spawn: SIGKILL the VMM, wait for it, and throw VMM_FAILED with
 * the cause and the tail of the VMM's own log (its error message is usually there).
 */
export async function abortFailedStart(kind: VmmKind, vmName: string, vmm: SpawnedVmm, vmmLog: string, cause: unknown): Promise<never> {
  try {
    process.kill(vmm.pid, 'SIGKILL');
  } catch {}
  await waitForExit(vmm.exited, SIGKILL_WAIT_MS);
  const tail = logTail(vmmLog);
  const message = cause instanceof Error ? cause.message : String(cause);
  throw new VolantError('VMM_FAILED', `${kind} could not start VM ${vmName}: ${message}${tail ? `\n${tail}` : ''}`, { vmmLog }, { cause });
}

export interface PoliteStep {
  /** For error messages: `vm.shutdown`, `QMP system_powerdown`. */
  name: string;
  run(): Promise<void>;
  /** How long the VMM gets to exit after this step. */
  waitMs: number;
}

export interface SupervisedVmOptions {
  kind: VmmKind;
  pid: number;
  capabilities: VmmCapabilities;
  exited: Promise<VmmExit>;
  /** Re-checked before each signal: false once the PID is no longer this VMM. */
  isStillIt: () => boolean;
  /** Polite steps, in order; a step that throws is skipped (the VMM may be wedged). */
  politeSteps: (timeoutMs: number) => PoliteStep[];
  defaultStopTimeoutMs: number;
}

/** The `VmProcess` both launchers return: one stop ladder, idempotent. */
export class SupervisedVm implements VmProcess {
  readonly kind: VmmKind;
  readonly pid: number;
  readonly capabilities: VmmCapabilities;
  readonly exited: Promise<VmmExit>;
  readonly #opts: SupervisedVmOptions;
  #stopping: Promise<VmmExit> | undefined;

  constructor(opts: SupervisedVmOptions) {
    this.kind = opts.kind;
    this.pid = opts.pid;
    this.capabilities = opts.capabilities;
    this.exited = opts.exited;
    this.#opts = opts;
  }

  stop(options: { timeoutMs?: number } = {}): Promise<VmmExit> {
    this.#stopping ??= this.#ladder(options.timeoutMs ?? this.#opts.defaultStopTimeoutMs);
    return this.#stopping;
  }

  async #ladder(timeoutMs: number): Promise<VmmExit> {
    for (const step of this.#opts.politeSteps(timeoutMs)) {
      const early = await waitForExit(this.exited, 0);
      if (early) return early;
      try {
        await step.run();
      } catch {
        continue;
      }
      const done = await waitForExit(this.exited, step.waitMs);
      if (done) return done;
    }
    for (const [signal, waitMs] of [['SIGTERM', SIGTERM_GRACE_MS], ['SIGKILL', SIGKILL_WAIT_MS]] as const) {
      const early = await waitForExit(this.exited, 0);
      if (early) return early;
      if (!this.#opts.isStillIt()) return this.exited;
      try {
        process.kill(this.pid, signal);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      }
      const done = await waitForExit(this.exited, waitMs);
      if (done) return done;
    }
    throw new VolantError('VMM_FAILED', `${this.kind} (pid ${this.pid}) did not exit after SIGKILL within ${SIGKILL_WAIT_MS} ms`);
  }
}
