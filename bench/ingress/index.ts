/**
 * bench/ingress: requests per second and latency of the ingress proxy, against baselines
 * measured in the same run (docs/benchmarks.md):
 *   direct     wrk → upstream                                   (the ceiling)
 *   nginx      wrk → nginx (1 worker, upstream keepalive 64) → upstream
 *   ingress    wrk → volantd's API server (bearer token; the ingress fast path) → upstream
 *                                                                goal ≥ 1.0× nginx req/s, ≤ 1.0× p99
 *   nodepipe   wrk → a Node byte pipe (no HTTP) → upstream (the I/O floor of one event loop)
 * Load: `wrk -t1 -c32 -d5s --latency`. Targets alternate within each round and the median of
 * the rounds is reported; CPU µs per request is utime+stime of the proxy process(es) from
 * /proc/<pid>/stat over the run. Then `--hold-connections` (1000) client connections are held
 * through the ingress for `--hold` (30) seconds, one request per second each: errors and
 * volantd's RSS before and after. Every child process is ours and stopped by PID at the end.
 *
 * Last, the chain through a real VM (ingress → the vhost-user vsock device or the bridge → kestrel's
 * relay → workload, against the workload reached directly on the bridge; goal ≥ 0.5×):
 * bench/ingress/chain.ts, its ratios under `vmChain` (skipped without root and QEMU, or with --no-vm).
 *
 * Usage: node --import tsx bench/ingress/index.ts [--rounds N] [--duration S] [--only a,b]
 *        [--hold-connections N (0: skip)] [--hold S] [--no-vm]
 */

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { type HoldResult, holdConnections } from '../support/hold.js';
import { median } from '../support/stats.js';
import { runChainBench } from './chain.js';
import { BENCH_AUTH_HEADER, benchDir, own, processTree, READY_TIMEOUT_MS, type Role, rssKiB, startRole as startRoleIn, type WrkResult, wrk as runWrk } from '../support/wrk.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const ROUNDS = opt('rounds', 3);
const DURATION_S = opt('duration', 5);
const CONNECTIONS = 32;
const VM_CHAIN_CONNECTIONS = 8;
/** The held-connections check: this many client connections through the ingress for HOLD_S. */
const HOLD_CONNECTIONS = opt('hold-connections', 1000);
const HOLD_S = opt('hold', 30);
/** Seconds into the hold after which every connection is open and served once (the warm RSS). */
const HOLD_WARM_S = 5;

const dir = benchDir('ingress');

const startRole = (role: string, ...roleArgs: string[]): Promise<Role> => startRoleIn(dir, role, roleArgs);

async function startNginx(upstreamPort: number): Promise<{ port: number; pid: number }> {
  const port = 20_000 + (process.pid % 20_000);
  const prefix = join(dir, 'nginx');
  mkdirSync(join(prefix, 'logs'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'logs', 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'body')};
  proxy_temp_path ${join(prefix, 'proxy')};
  upstream app { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location /api/v1/vms/bench/proxy/ {
      proxy_pass http://app/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
}
`,
  );
  const child = own(spawn('nginx', ['-p', prefix, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'inherit'] }));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/vms/bench/proxy/`);
      await r.text();
      if (r.ok) return { port, pid: child.pid! };
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nginx did not start');
}

/** Every target gets the same request, the API token included (volantd requires it; the others ignore it). */
function wrk(url: string, durationS: number, proxyPids: number[] = []): WrkResult {
  return runWrk(url, { durationS, connections: CONNECTIONS, pids: proxyPids, headers: [BENCH_AUTH_HEADER] });
}

let onlyAt = -1;

async function main(): Promise<void> {
  const upstream = await startRole('upstream');
  const upstreamPort = upstream.port as number;
  const nginx = await startNginx(upstreamPort);
  const ingress = await startRole('ingress', `tcp:127.0.0.1:${upstreamPort}`);
  const pipe = await startRole('pipe', String(upstreamPort));

  const targets: Array<[string, string, number[]]> = [
    ['direct', `http://127.0.0.1:${upstreamPort}/`, [upstream.pid]],
    ['nginx', `http://127.0.0.1:${nginx.port}/api/v1/vms/bench/proxy/`, processTree(nginx.pid)],
    ['ingress', `http://127.0.0.1:${ingress.port as number}/api/v1/vms/bench/proxy/`, [ingress.pid]],
    // Not a proxy (it does not parse HTTP): the I/O floor of any one-event-loop Node proxy.
    ['nodepipe', `http://127.0.0.1:${pipe.port as number}/`, [pipe.pid]],
  ];
  // `--only a,b`: a subset (the others report NaN); the host hop alone is `--only nginx,ingress`.
  onlyAt = args.indexOf('--only');
  if (onlyAt >= 0) {
    const keep = new Set((args[onlyAt + 1] ?? '').split(','));
    targets.splice(0, targets.length, ...targets.filter(([n]) => keep.has(n)));
  }
  for (const [, url] of targets) wrk(url, 1); // warm-up: JIT, pools, nginx keepalive
  const runs = new Map<string, WrkResult[]>(targets.map(([n]) => [n, []]));
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate the order each round so drift on a shared machine does not favour one target.
    const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
    for (const [name, url, pids] of order) runs.get(name)!.push(wrk(url, DURATION_S, pids));
  }
  // CPU per request means little at a few hundred req/s (timers, JIT and GC dominate), so read
  // it for the host hop, where the proxy is the busy part.
  const summary = Object.fromEntries(
    [...runs].map(([name, rs]) => [
      name,
      {
        rps: median(rs.map((r) => r.rps)),
        p50Ms: median(rs.map((r) => r.p50Ms)),
        p99Ms: median(rs.map((r) => r.p99Ms)),
        errors: rs.reduce((a, r) => a + r.errors, 0),
        requests: rs.reduce((a, r) => a + r.requests, 0),
        cpuUsPerReq: median(rs.map((r) => r.cpuUsPerReq)),
      },
    ]),
  ) as Record<string, WrkResult>;
  const none: WrkResult = { rps: Number.NaN, p50Ms: Number.NaN, p99Ms: Number.NaN, errors: 0, requests: 0, cpuUsPerReq: Number.NaN };
  const s = (n: string): WrkResult => summary[n] ?? none;
  const ratios = {
    hostHopRps: s('ingress').rps / s('nginx').rps,
    hostHopP99: s('ingress').p99Ms / s('nginx').p99Ms,
    hostHopCpuPerReq: s('ingress').cpuUsPerReq / s('nginx').cpuUsPerReq,
    nodePipeCpuPerReqVsNginx: s('nodepipe').cpuUsPerReq / s('nginx').cpuUsPerReq,
    nginxVsDirectRps: s('nginx').rps / s('direct').rps,
  };
  const load = loadavg().map((l) => Number(l.toFixed(2)));
  console.log(`ingress bench: wrk -t1 -c${CONNECTIONS} -d${DURATION_S}s, ${ROUNDS} rounds alternating, medians; load average ${load.join(' ')} (shared machine: read ratios, not absolutes)`);
  console.log('target   | req/s     | p50 ms | p99 ms | errors | proxy CPU µs/req | what (direct: CPU of the upstream itself)');
  const what: Record<string, string> = {
    direct: 'upstream directly',
    nginx: 'nginx 1 worker, keepalive 64',
    ingress: 'volantd (API server + ingress fast path), host hop over TCP',
    nodepipe: 'Node byte pipe, no HTTP: the I/O floor of one Node event loop',
  };
  for (const [name] of targets) {
    const r = s(name);
    console.log(`${name.padEnd(9)}| ${r.rps.toFixed(0).padStart(9)} | ${r.p50Ms.toFixed(2).padStart(6)} | ${r.p99Ms.toFixed(2).padStart(6)} | ${String(r.errors).padStart(6)} | ${r.cpuUsPerReq.toFixed(1).padStart(16)} | ${what[name]}`);
  }
  console.log(`host hop: ingress ÷ nginx = ${ratios.hostHopRps.toFixed(2)}× req/s (goal ≥ 1.0), p99 ${ratios.hostHopP99.toFixed(2)}× (goal ≤ 1.0), CPU/req ${ratios.hostHopCpuPerReq.toFixed(2)}×`);
  console.log(`Node byte pipe (no HTTP) ÷ nginx: CPU/req ${ratios.nodePipeCpuPerReqVsNginx.toFixed(2)}× — what a one-event-loop Node proxy pays before any HTTP work`);
  console.log(`nginx ÷ direct = ${ratios.nginxVsDirectRps.toFixed(2)}× req/s (what any proxy hop costs here)`);
  // Many clients held through the ingress: none may fail, and volantd's memory must not grow with time.
  // RSS is sampled every second: "before" is volantd idle; "warm" is after the first
  // HOLD_WARM_S, when every connection is open and has been served (what 1,000 sockets cost);
  // flat means "after" (the end of the hold) is no higher than warm, i.e. nothing grows with time.
  let hold: (HoldResult & { rssBeforeKiB: number; rssWarmKiB: number; rssAfterKiB: number; rssMaxKiB: number; seconds: number }) | undefined;
  if (HOLD_CONNECTIONS > 0 && (onlyAt < 0 || targets.some(([n]) => n === 'ingress'))) {
    const rssBeforeKiB = rssKiB(ingress.pid);
    const rssSamples: number[] = [];
    const sampler = setInterval(() => rssSamples.push(rssKiB(ingress.pid)), 1000);
    const r = await holdConnections({
      port: ingress.port as number,
      path: '/api/v1/vms/bench/proxy/',
      headers: [BENCH_AUTH_HEADER],
      connections: HOLD_CONNECTIONS,
      durationS: HOLD_S,
      gapMs: 1000,
      timeoutMs: 10_000,
    });
    clearInterval(sampler);
    const atEnd = rssSamples.at(-1) ?? rssKiB(ingress.pid);
    const warm = rssSamples[Math.min(HOLD_WARM_S, rssSamples.length) - 1] ?? atEnd;
    hold = { ...r, rssBeforeKiB, rssWarmKiB: warm, rssAfterKiB: atEnd, rssMaxKiB: Math.max(...rssSamples, atEnd), seconds: HOLD_S };
    const mib = (k: number): string => (k / 1024).toFixed(1);
    console.log(
      `held: ${r.connections}/${HOLD_CONNECTIONS} client connections through the ingress for ${HOLD_S} s, one request per second each: ${r.requests} requests, ${r.errors} errors${r.samples.length ? ` (${r.samples.join('; ')})` : ''}; volantd RSS ${mib(rssBeforeKiB)} MiB idle, ${mib(warm)} MiB after ${HOLD_WARM_S} s (all open), ${mib(atEnd)} MiB at the end (max ${mib(hold.rssMaxKiB)})`,
    );
  }
  // The chain through a real VM (bench/ingress/chain.ts; skipped without root and QEMU, or with
  // --no-vm). A TCG guest answers tens of requests per second: 8 connections keep it busy without
  // queueing past wrk's timeout. Its failure is reported, not allowed to lose the figures above.
  const vmChain = process.argv.includes('--no-vm')
    ? { skipped: '--no-vm' }
    : await runChainBench({ rounds: ROUNDS, durationS: 2 * DURATION_S, connections: VM_CHAIN_CONNECTIONS }).catch((e: unknown) => {
        console.error(e);
        return { failed: e instanceof Error ? e.message : String(e) };
      });
  console.log(JSON.stringify({ bench: 'ingress', loadAverage: load, connections: CONNECTIONS, durationS: DURATION_S, rounds: ROUNDS, results: summary, ratios, hold, vmChain }));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
