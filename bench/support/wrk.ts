/**
 * What the HTTP benchmarks share: running wrk and reading its report, the CPU a set of processes
 * spent (utime + stime from /proc/<pid>/stat), and the bench/ingress role processes (started as
 * children, ready on `READY <json>`, stopped by PID). bench/ingress/index.ts, profile.ts and the
 * chain bench use these, so every figure is read the same way.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = join(here, '..', '..');
const ROLES = join(REPO, 'bench', 'ingress', 'roles.ts');
export const READY_TIMEOUT_MS = 15_000;
/** The API token the bench's volantd (the `ingress` role) requires; every target gets the same request. */
export const BENCH_API_TOKEN = 'bench-token-0123456789abcdef';
export const BENCH_AUTH_HEADER = `Authorization: Bearer ${BENCH_API_TOKEN}`;

const children: ChildProcess[] = [];
const dirs: string[] = [];

function cleanup(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

/** A scratch directory removed when the bench exits. */
export function benchDir(name: string): string {
  const d = mkdtempSync(join(tmpdir(), `volant-bench-${name}-${process.pid}-`));
  dirs.push(d);
  return d;
}

/** A child process the bench owns: SIGTERMed by PID when the bench exits. */
export function own(child: ChildProcess): ChildProcess {
  children.push(child);
  return child;
}

export interface Role {
  pid: number;
  child: ChildProcess;
  [k: string]: unknown;
}

/** Starts `bench/ingress/roles.ts ROLE ARGS…` (node flags first) and waits for its READY line. */
export async function startRole(_dir: string, role: string, roleArgs: string[] = [], nodeFlags: string[] = []): Promise<Role> {
  const child = own(spawn(process.execPath, [...nodeFlags, '--import', 'tsx', ROLES, role, ...roleArgs], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] }));
  const info = await waitReady(child, role);
  return { ...info, pid: child.pid!, child };
}

export function waitReady(child: ChildProcess, what: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${what} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (.*)\n/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(JSON.parse(m[1]!) as Record<string, unknown>);
      }
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready`)));
  });
}

/** SIGTERM by PID and wait for the exit (a `--cpu-prof` child writes its profile then). */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** Kernel clock ticks per second for /proc/<pid>/stat times (CLK_TCK, 100 on Linux). */
const CLOCK_TICKS_PER_S = 100;

/** The process and its children (nginx: master + worker). */
export function processTree(pid: number): number[] {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return [pid, ...kids.flatMap(processTree)];
  } catch {
    return [pid];
  }
}

/** utime + stime of the processes, in microseconds. */
export function cpuUs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited
    }
  }
  return (ticks * 1_000_000) / CLOCK_TICKS_PER_S;
}

/** Resident set size of a process in KiB (VmRSS), or NaN when it is gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** A wrk latency figure (`812.00us`, `1.20ms`, `2.01s`) in milliseconds. */
export function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

export interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Non-2xx/3xx responses plus socket errors (connect, read, write, timeout). */
  errors: number;
  requests: number;
  /** CPU time (user + system) the given processes spent per request; 0 without pids. */
  cpuUsPerReq: number;
}

/** Parses wrk's `--latency` report (pure). */
export function parseWrk(out: string): Omit<WrkResult, 'cpuUsPerReq'> {
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    p50Ms: toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''),
    p99Ms: toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ''),
    errors: non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
  };
}

export interface WrkOptions {
  durationS: number;
  connections: number;
  /** Processes whose CPU is read before and after (the proxy under test). */
  pids?: readonly number[];
  /** Extra request headers (`Name: value`). */
  headers?: readonly string[];
  /** wrk's per-request timeout, seconds (default 2). */
  timeoutS?: number;
  /** An argv prefix wrk runs under (`ip netns exec NAME`: the VM chain bench). */
  prefix?: readonly string[];
}

/** One wrk run, `-t1`, with `--latency`. */
export function wrk(url: string, o: WrkOptions): WrkResult {
  const pids = o.pids ?? [];
  const before = cpuUs(pids);
  const headerArgs = (o.headers ?? []).flatMap((h) => ['-H', h]);
  const timeout = o.timeoutS === undefined ? [] : ['--timeout', `${o.timeoutS}s`];
  const argv = [...(o.prefix ?? []), 'wrk', '-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--latency', ...timeout, ...headerArgs, url];
  const out = execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  const r = parseWrk(out);
  const cpuUsPerReq = pids.length === 0 || r.requests === 0 ? 0 : (cpuUs(pids) - before) / r.requests;
  return { ...r, cpuUsPerReq };
}
