/**
 * bench/vsock: what the vsock device costs against the bridge, in one run, as ratios.
 *
 *  - One bridged VM of examples/hello under QEMU (TCG here), created through volantd for real
 *    (test/support/e2e-env.ts): it has both paths to the same kestrel, the vsock device
 *    (`<run_dir>/vsock.sock`, `CONNECT 8080`) and the bridge (TCP guest_ip:8080).
 *  - bulk: GET /bytes?n=BYTES through kestrel to the workload (guest → host), MB/s, fresh
 *    connection each time; rate: CONNECTIONS keep-alive connections looping GET /hello for SECONDS,
 *    requests/s (small messages both ways). The client runs in volantd's namespace (bench/vsock/client.ts)
 *    and alternates device and bridge run by run.
 *  - Ratios are device ÷ bridge (medians). Goal: the device is not the bottleneck of the ingress
 *    chain (a later bench, chain-vsock, holds the whole chain to ≥ 0.5× direct).
 *
 * Usage: node --import tsx bench/vsock/index.ts [--runs N] [--mb M]   (root and qemu-system-x86_64 needed)
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { runCommand } from '../../test/support/netns.js';
import { e2eSkipReason } from '../../test/support/qemu.js';
import { integerFlag } from '../support/args.js';
import { createHelloVm } from '../support/hello-vm.js';
import { median } from '../support/stats.js';

const DEFAULT_RUNS = 3;
const DEFAULT_MB = 64;
const RATE_SECONDS = 5;
const RATE_CONNECTIONS = 16;
const CLIENT_TIMEOUT_MS = 900_000;

const skip = e2eSkipReason();
if (skip) {
  console.log(`bench/vsock skipped: ${skip}`);
  console.log(JSON.stringify({ bench: 'vsock', skipped: skip }));
  process.exit(0);
}

const runs = integerFlag(process.argv, '--runs', DEFAULT_RUNS, 20);
const mb = integerFlag(process.argv, '--mb', DEFAULT_MB, 1024);

let env: E2eEnv | undefined;
try {
  env = await startE2eEnv();
  const vm = await createHelloVm(env, 'bulk');
  const client = await runCommand([
    ...env.hostNs.prefix,
    process.execPath,
    '--import',
    'tsx',
    join(REPO_ROOT, 'bench', 'vsock', 'client.ts'),
    '--vsock',
    join(vm.runDir, 'vsock.sock'),
    '--tcp',
    `${vm.ip}:8080`,
    '--bytes',
    String(mb * 1024 * 1024),
    '--runs',
    String(runs),
    '--seconds',
    String(RATE_SECONDS),
    '--connections',
    String(RATE_CONNECTIONS),
    '--device-pid',
    readFileSync(join(vm.runDir, 'vsock-device.pid'), 'utf8').trim(),
  ], { timeoutMs: CLIENT_TIMEOUT_MS });
  if (client.code !== 0) throw new Error(`client failed: ${client.stderr}`);
  const r = JSON.parse(client.stdout.trim().split('\n').pop()!) as Record<'bulkMBps' | 'requestsPerS', Record<'device' | 'bridge', number[]>> & { deviceCpuMsPerMiB: number[] };
  const row = (what: string, unit: string, k: 'bulkMBps' | 'requestsPerS') => {
    const d = median(r[k].device);
    const br = median(r[k].bridge);
    console.log(`${what.padEnd(34)} device ${d.toFixed(1).padStart(8)} ${unit}   bridge ${br.toFixed(1).padStart(8)} ${unit}   ratio ${(d / br).toFixed(2)}×   (runs: device ${r[k].device.map((x) => x.toFixed(1)).join(', ')}; bridge ${r[k].bridge.map((x) => x.toFixed(1)).join(', ')})`);
    return { device: d, bridge: br, ratio: d / br };
  };
  console.log(`bench/vsock: one bridged examples/hello VM under QEMU, kestrel reached over the vsock device vs over the bridge (${runs} runs, medians)`);
  const bulk = row(`bulk GET /bytes ${mb} MiB (guest→host)`, 'MB/s ', 'bulkMBps');
  const rate = row(`GET /hello, ${RATE_CONNECTIONS} keep-alive conns`, 'req/s', 'requestsPerS');
  const cpu = median(r.deviceCpuMsPerMiB);
  console.log(`${'device process CPU per MiB (bulk)'.padEnd(34)} ${cpu.toFixed(2)} ms   (≈ ${(1000 / cpu).toFixed(0)} MiB/s of one core)`);
  console.log(JSON.stringify({ bench: 'vsock', runs, mb, bulk, rate, deviceCpuMsPerMiB: cpu }));
} finally {
  await env?.dispose();
}
