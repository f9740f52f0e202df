/**
 * bench/ingress chain: the whole ingress chain through a real VM, against the workload reached
 * directly on the bridge, in one run (docs/benchmarks.md). One bridged examples/hello VM under
 * QEMU (TCG here), created by volantd for real (test/support/e2e-env.ts), with the vhost-user
 * vsock device; wrk runs in volantd's namespace, GET /hello, `-t1 -cN --latency`:
 *
 *   direct       wrk → guest_ip:3000 (the workload on the bridge)               the baseline
 *   chain-vsock  wrk → ingress → vsock device → kestrel relay (8081) → workload   goal ≥ 0.5× direct
 *   chain-tcp    wrk → ingress → bridge → kestrel relay (TCP 8081) → workload     goal ≥ 0.5× direct
 *   http-vsock   wrk → ingress → vsock device → kestrel HTTP proxy (8080) → workload  (without the relay)
 *   api-vsock    wrk → volantd's own API (TCP, bearer token) → the same chain as chain-vsock
 *
 * The chain-* and http-* ingresses are volantd's API server with the ingress in front
 * (bench/ingress/roles.ts `ingress`, its bench token), one process each, so they differ only in
 * the transport and port;
 * api-vsock is the route users take, authentication and all. Targets alternate within each
 * round and the medians of the rounds are reported, with p99.
 *
 * Usage: node --import tsx bench/ingress/chain.ts [--rounds N] [--duration S]   (root and QEMU)
 */

import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { e2eSkipReason } from '../../test/support/qemu.js';
import { integerFlag } from '../support/args.js';
import { createHelloVm } from '../support/hello-vm.js';
import { median } from '../support/stats.js';
import { BENCH_AUTH_HEADER, type WrkResult as WrkRun, wrk as runWrk } from '../support/wrk.js';

type WrkResult = Omit<WrkRun, 'cpuUsPerReq'>;

const READY_TIMEOUT_MS = 30_000;
const VM = 'chain';
/** examples/hello's workload port (its plugin.json). */
const WORKLOAD_PORT = 3000;

export interface ChainOptions {
  rounds: number;
  durationS: number;
  connections: number;
}

type Target = 'direct' | 'chain-vsock' | 'chain-tcp' | 'http-vsock' | 'api-vsock';

const WHAT: Record<Target, string> = {
  direct: 'the workload on the bridge (guest_ip:3000)',
  'chain-vsock': 'ingress → vsock device → kestrel relay → workload',
  'chain-tcp': 'ingress → bridge → kestrel relay (TCP) → workload',
  'http-vsock': 'ingress → vsock device → kestrel HTTP proxy → workload',
  'api-vsock': "volantd's API (TCP, token) → chain-vsock",
};

function startIngress(env: E2eEnv, target: string, relay: boolean): Promise<{ port: number; child: ChildProcess }> {
  const child = env.hostNs.spawn([process.execPath, '--import', 'tsx', join(REPO_ROOT, 'bench', 'ingress', 'roles.ts'), 'ingress', target, ...(relay ? ['relay'] : [])]);
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`ingress ${target} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (.*)\n/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ port: (JSON.parse(m[1]!) as { port: number }).port, child });
      }
    });
    child.once('exit', (code) => reject(new Error(`ingress ${target} exited with ${code} before it was ready`)));
  });
}

/**
 * What the run measured, for a JSON report: every `*Ratio` field is a row of `npm run bench`'s
 * table (scripts/run-bench.mjs), also when nested one level in index.ts's report.
 */
export type ChainReport = { skipped: string } | ({ loadAverage: number[]; results: Record<Target, WrkResult> } & Record<`${string}Ratio`, number>);

/** Boots the VM, measures, prints the table, and returns the report (the caller prints it as JSON). */
export async function runChainBench(o: ChainOptions): Promise<ChainReport> {
  const skip = e2eSkipReason();
  if (skip) {
    console.log(`chain bench (real VM) skipped: ${skip}`);
    return { skipped: skip };
  }
  let env: E2eEnv | undefined;
  try {
    env = await startE2eEnv();
    const vm = await createHelloVm(env, VM);
    const sock = join(vm.runDir, 'vsock.sock');
    const relayVsock = await startIngress(env, `vsock:${sock}`, true);
    const relayTcp = await startIngress(env, `tcp:${vm.ip}:8080`, true);
    const httpVsock = await startIngress(env, `vsock:${sock}`, false);
    const proxied = (port: number): string => `http://127.0.0.1:${port}/api/v1/vms/${VM}/proxy/hello`;
    const token = env.tcp.token();
    const targets: Array<[Target, string, string[]]> = [
      ['direct', `http://${vm.ip}:${WORKLOAD_PORT}/hello`, []],
      ['chain-vsock', proxied(relayVsock.port), [BENCH_AUTH_HEADER]],
      ['chain-tcp', proxied(relayTcp.port), [BENCH_AUTH_HEADER]],
      ['http-vsock', proxied(httpVsock.port), [BENCH_AUTH_HEADER]],
      ['api-vsock', `http://${env.tcp.address}/api/v1/vms/${VM}/proxy/hello`, [`Authorization: Bearer ${token}`]],
    ];
    const wrk = (url: string, headers: string[], durationS: number): WrkResult => runWrk(url, { connections: o.connections, durationS, headers, prefix: env!.hostNs.prefix });
    // Warm-up (JIT, pools, the guest's page cache), and a target that answers nothing is an error, not a 0 in the table.
    for (const [name, url, headers] of targets) {
      const w = wrk(url, headers, 5);
      if (w.requests === 0 || w.errors === w.requests) throw new Error(`${name} (${url}) answered no request in the warm-up: ${JSON.stringify(w)}`);
    }
    const runs = new Map<Target, WrkResult[]>(targets.map(([n]) => [n, []]));
    for (let round = 0; round < o.rounds; round++) {
      const order = targets.map((_, k) => targets[(k + round) % targets.length]!);
      for (const [name, url, headers] of order) runs.get(name)!.push(wrk(url, headers, o.durationS));
    }
    const summary = Object.fromEntries(
      [...runs].map(([name, rs]) => [
        name,
        { rps: median(rs.map((r) => r.rps)), p50Ms: median(rs.map((r) => r.p50Ms)), p99Ms: median(rs.map((r) => r.p99Ms)), errors: rs.reduce((a, r) => a + r.errors, 0), requests: rs.reduce((a, r) => a + r.requests, 0) },
      ]),
    ) as Record<Target, WrkResult>;
    const d = summary.direct;
    const ratios = Object.fromEntries(
      (Object.keys(summary) as Target[]).filter((n) => n !== 'direct').map((n) => [n, { rps: summary[n].rps / d.rps, p99: summary[n].p99Ms / d.p99Ms }]),
    ) as Record<Exclude<Target, 'direct'>, { rps: number; p99: number }>;
    const load = loadavg().map((l) => Number(l.toFixed(2)));
    console.log(`ingress chain through a real VM (QEMU TCG, examples/hello, GET /hello): wrk -t1 -c${o.connections} -d${o.durationS}s, ${o.rounds} rounds alternating, medians; load average ${load.join(' ')} (shared machine: read ratios)`);
    console.log('target      | req/s   | p50 ms  | p99 ms  | errors | ÷ direct req/s | ÷ direct p99 | what');
    for (const [name] of targets) {
      const r = summary[name];
      const ratio = name === 'direct' ? { rps: 1, p99: 1 } : ratios[name];
      console.log(
        `${name.padEnd(11)} | ${r.rps.toFixed(0).padStart(7)} | ${r.p50Ms.toFixed(2).padStart(7)} | ${r.p99Ms.toFixed(2).padStart(7)} | ${String(r.errors).padStart(6)} | ${ratio.rps.toFixed(2).padStart(13)}× | ${ratio.p99.toFixed(2).padStart(11)}× | ${WHAT[name]}`,
      );
    }
    console.log(`chain ÷ direct: vsock ${ratios['chain-vsock'].rps.toFixed(2)}×, tcp ${ratios['chain-tcp'].rps.toFixed(2)}× req/s (goal ≥ 0.5); without the relay ${ratios['http-vsock'].rps.toFixed(2)}×; through volantd's API ${ratios['api-vsock'].rps.toFixed(2)}×`);
    return {
      loadAverage: load,
      results: summary,
      vsockRpsRatio: ratios['chain-vsock'].rps,
      vsockP99Ratio: ratios['chain-vsock'].p99,
      tcpRpsRatio: ratios['chain-tcp'].rps,
      tcpP99Ratio: ratios['chain-tcp'].p99,
      withoutRelayVsockRpsRatio: ratios['http-vsock'].rps,
      apiVsockRpsRatio: ratios['api-vsock'].rps,
      apiVsockP99Ratio: ratios['api-vsock'].p99,
    };
  } finally {
    await env?.dispose();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const o = { rounds: integerFlag(argv, '--rounds', 3, 20), durationS: integerFlag(argv, '--duration', 5, 600), connections: integerFlag(argv, '--connections', 32, 1000) };
  runChainBench(o).then(
    (report) => {
      console.log(JSON.stringify({ bench: 'ingress-chain', connections: o.connections, durationS: o.durationS, rounds: o.rounds, ...report }));
      process.exit(0);
    },
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
