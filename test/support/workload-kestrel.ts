/**
 * Runs kestrel from source as a child process (`node --import tsx guest/main.ts ...`) in front
 * of test/support/workload-server.ts, the way the integration tests need it: a private temp
 * dir, a Unix socket for the agent, a free loopback port for the workload, console lines
 * collected for assertions, and a stop that kills only the processes this helper started.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually } from './eventually.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WORKLOAD_SERVER = path.join(REPO_ROOT, 'test', 'support', 'workload-server.ts');
const READY_TIMEOUT_MS = 20_000;

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface KestrelRun {
  dir: string;
  socket: string;
  workloadPort: number;
  child: ChildProcess;
  /** Everything kestrel wrote (its own `kestrel:` lines and the workload's echoed output). */
  output(): string;
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  get(urlPath: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>;
  stop(): Promise<void>;
}

export async function startKestrel(opts: { name: string; manifest?: (workloadPort: number) => object; args?: string[]; nodeArgs?: string[] }): Promise<KestrelRun> {
  const dir = mkdtempSync(path.join(tmpdir(), `kestrel-${opts.name}-${process.pid}-`));
  const socket = path.join(dir, 'agent.sock');
  const workloadPort = await freePort();
  const manifest = opts.manifest?.(workloadPort) ?? {
    name: 'workload',
    version: '1.0.0',
    workload: {
      type: 'http',
      entrypoint: [process.execPath, '--import', 'tsx', WORKLOAD_SERVER],
      env: { PORT: String(workloadPort) },
      workdir: REPO_ROOT,
      http: { base_url: `http://127.0.0.1:${workloadPort}` },
    },
    health_check: { endpoint: '/healthz', timeout_ms: 1000 },
  };
  writeFileSync(path.join(dir, 'plugin.json'), JSON.stringify(manifest));
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), '--import', 'tsx', path.join(REPO_ROOT, 'guest', 'main.ts'), '--listen', `unix:${socket}`, '--manifest', path.join(dir, 'plugin.json'), ...(opts.args ?? [])], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (c: Buffer): void => {
    out += c.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const run: KestrelRun = {
    dir,
    socket,
    workloadPort,
    child,
    output: () => out,
    waitForOutput(re, timeoutMs = READY_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = out.match(re);
          if (m) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`kestrel output did not match ${re} within ${timeoutMs} ms:\n${out}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    get(urlPath) {
      return new Promise((resolve, reject) => {
        const req = request({ socketPath: socket, path: urlPath, headers: { host: 'vm.test' } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            body += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        });
        req.on('error', reject);
        req.end();
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await run.waitForOutput(/kestrel: ready/);
  return run;
}

/** Polls GET /healthz until the workload reports `state` (after at least `minRestarts` restarts). */
export async function waitForWorkloadState(run: KestrelRun, state: string, minRestarts = 0, timeoutMs = READY_TIMEOUT_MS): Promise<Record<string, unknown>> {
  return eventually(
    async () => {
      const body = (await run.get('/healthz')).body;
      const h = JSON.parse(body) as { workload: { state: string; restarts: number } };
      if (h.workload.state !== state || h.workload.restarts < minRestarts) throw new Error(`/healthz says ${body}`);
      return h as unknown as Record<string, unknown>;
    },
    { timeoutMs, what: `workload reaching ${state} after ${minRestarts} restarts` },
  );
}
