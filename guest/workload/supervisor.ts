/**
 * Step 5 of boot: runs the workload and keeps it running by its restart policy.
 *
 * States (explicit, reported by /healthz):
 *   starting  spawned, health check not yet passed     → running | backoff
 *   running   spawned and healthy (or no health check)  → unhealthy | backoff
 *   unhealthy spawned, health check failing             → running | backoff
 *   backoff   exited, restart scheduled                 → starting
 *   stopping  SIGTERM sent, SIGKILL after STOP_GRACE_MS → stopped
 *   stopped   stopped by kestrel, or stays down by policy
 *   exited    exited under policy `exit` (the VM powers off)
 *
 * The workload runs in its own process group so a stop reaches its children too. Its output
 * goes line by line into the LogRing and to the console; console echo is dropped (and counted)
 * when the console cannot keep up, so a chatty workload never makes kestrel buffer without bound.
 */

import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { request } from 'undici';
import type { RestartPolicy } from '../../shared/schema/manifest.js';
import { spawnTracked } from '../children.js';
import { say } from '../console.js';
import { LineSplitter, type LogRing, type LogStream } from '../logs/ring.js';
import { decideAfterExit, describeExit, type ExitStatus } from './policy.js';

export const STOP_GRACE_MS = 5000;
export const HEALTH_POLL_INTERVAL_MS = 250;
export const HEALTH_RECHECK_INTERVAL_MS = 5000;
export const DEFAULT_HEALTH_TIMEOUT_MS = 2000;
/** Console echo is skipped while this much is already waiting to be written. */
export const CONSOLE_ECHO_MAX_PENDING_BYTES = 256 * 1024;

export type WorkloadState = 'starting' | 'running' | 'unhealthy' | 'backoff' | 'stopping' | 'stopped' | 'exited';

export interface WorkloadSpec {
  entrypoint: string[];
  env: Record<string, string>;
  workdir?: string;
  restart?: RestartPolicy;
  /** The workload's HTTP base URL and health path, when it has a health check. */
  health?: { baseUrl: string; path: string; timeoutMs?: number };
}

export interface WorkloadSnapshot {
  state: WorkloadState;
  pid: number | null;
  restarts: number;
  last_exit: (ExitStatus & { at: string }) | null;
  /** When state is backoff: ms until the next start. */
  restart_in_ms?: number;
}

export interface SupervisorEvents {
  state: [WorkloadState];
  /** Policy `exit`: the workload is done and the VM should power off. */
  finished: [ExitStatus];
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private child: ChildProcess | undefined;
  private stateValue: WorkloadState = 'stopped';
  private restarts = 0;
  private streak = 0;
  private lastExit: WorkloadSnapshot['last_exit'] = null;
  private startedAt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private restartAt = 0;
  private healthTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  /** Console lines skipped because the console was behind. */
  echoDropped = 0;

  constructor(
    private readonly spec: WorkloadSpec,
    private readonly logs: LogRing,
    private readonly console: NodeJS.WritableStream & { writableLength?: number } = process.stdout,
  ) {
    super();
  }

  get state(): WorkloadState {
    return this.stateValue;
  }

  snapshot(): WorkloadSnapshot {
    const snap: WorkloadSnapshot = { state: this.stateValue, pid: this.child?.pid ?? null, restarts: this.restarts, last_exit: this.lastExit };
    if (this.stateValue === 'backoff') snap.restart_in_ms = Math.max(0, this.restartAt - Date.now());
    return snap;
  }

  start(): void {
    if (this.stopping || this.child) return;
    this.spawnOnce();
  }

  /** SIGTERM to the workload's process group, SIGKILL after `graceMs`; no restart afterwards. */
  stop(graceMs = STOP_GRACE_MS): Promise<void> {
    if (this.stopping) return this.stopping;
    clearTimeout(this.restartTimer);
    clearTimeout(this.healthTimer);
    const child = this.child;
    if (!child) {
      this.setState('stopped');
      this.stopping = Promise.resolve();
      return this.stopping;
    }
    this.setState('stopping');
    this.stopping = new Promise<void>((resolve) => {
      const kill = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      signalGroup(child, 'SIGTERM');
    });
    return this.stopping;
  }

  /** Synchronous last resort (process exit): SIGKILL to the workload's process group. */
  killNow(): void {
    clearTimeout(this.restartTimer);
    if (this.child) signalGroup(this.child, 'SIGKILL');
  }

  private setState(s: WorkloadState): void {
    if (this.stateValue === s) return;
    this.stateValue = s;
    this.emit('state', s);
  }

  private spawnOnce(): void {
    const [command, ...args] = this.spec.entrypoint;
    this.startedAt = Date.now();
    this.setState('starting');
    const child = spawnTracked(command!, args, {
      env: this.spec.env,
      cwd: this.spec.workdir,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    this.capture(child, 'stdout');
    this.capture(child, 'stderr');
    let exited = false;
    const onExit = (status: ExitStatus): void => {
      if (exited) return;
      exited = true;
      this.onExit(child, status);
    };
    child.once('error', (e: NodeJS.ErrnoException) => {
      say(`workload: cannot start ${JSON.stringify(command)}: ${e.code ?? e.message}`);
      onExit({ code: 127, signal: null });
    });
    child.once('exit', (code, signal) => onExit({ code, signal }));
    if (child.pid !== undefined) say(`workload: started pid ${child.pid}: ${this.spec.entrypoint.join(' ')}`);
    if (this.spec.health) this.scheduleHealth(0);
    else if (child.pid !== undefined) this.setState('running');
  }

  private capture(child: ChildProcess, stream: LogStream): void {
    const source = child[stream];
    if (!source) return;
    const splitter = new LineSplitter((text) => {
      this.logs.push(stream, text);
      if ((this.console.writableLength ?? 0) > CONSOLE_ECHO_MAX_PENDING_BYTES) this.echoDropped++;
      else this.console.write(`${text}\n`);
    });
    source.on('data', (chunk: Buffer) => splitter.write(chunk));
    source.once('end', () => splitter.end());
  }

  private onExit(child: ChildProcess, status: ExitStatus): void {
    if (this.child !== child) return;
    this.child = undefined;
    clearTimeout(this.healthTimer);
    this.lastExit = { ...status, at: new Date().toISOString() };
    say(`workload: exited (${describeExit(status)})`);
    if (this.stopping) {
      this.setState('stopped');
      return;
    }
    const next = decideAfterExit(this.spec.restart, status, this.streak, Date.now() - this.startedAt);
    if (next.action === 'power-off') {
      say(next.reason);
      this.setState('exited');
      this.emit('finished', status);
      return;
    }
    if (next.action === 'stay-down') {
      say(next.reason);
      this.setState('stopped');
      return;
    }
    this.streak = next.streak;
    this.restartAt = Date.now() + next.delayMs;
    this.setState('backoff');
    say(`workload: restarting in ${next.delayMs} ms`);
    this.restartTimer = setTimeout(() => {
      this.restarts++;
      this.spawnOnce();
    }, next.delayMs);
  }

  private scheduleHealth(delayMs: number): void {
    clearTimeout(this.healthTimer);
    this.healthTimer = setTimeout(() => void this.checkHealth(), delayMs);
  }

  private async checkHealth(): Promise<void> {
    const health = this.spec.health!;
    const child = this.child;
    if (!child) return;
    const timeoutMs = health.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
    let ok = false;
    try {
      const res = await request(`${health.baseUrl}${health.path}`, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
      await res.body.dump();
      ok = res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      ok = false;
    }
    if (this.child !== child || this.stopping) return;
    if (ok) this.setState('running');
    else if (this.stateValue === 'running') this.setState('unhealthy');
    this.scheduleHealth(ok ? HEALTH_RECHECK_INTERVAL_MS : HEALTH_POLL_INTERVAL_MS);
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}
