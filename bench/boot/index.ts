/**
 * bench/boot: VM create → first proxied 200, against the same kernel booting a busybox-only
 * initramfs to `/init` under the same QEMU settings, in one run, as a ratio (BENCHMARKS.md: ≤ 1.3×).
 *
 *  - Ours: volantd for real in a private network namespace (test/support/e2e-env.ts), examples/hello
 *    built and installed once (not timed), then `POST /api/v1/vms` → first 200 from
 *    `GET /api/v1/vms/<name>/proxy/hello`; the VM is deleted before the next boot.
 *  - Baseline: the same kernel and the same launcher (host/vmm/qemu.ts `createQemuLauncher`: q35,
 *    `-cpu max`, TCG, same memory and -smp), booting test/support/vmm-initramfs.ts's busybox image,
 *    timed from launch to its marker on the serial console. It has no NIC (nothing to configure).
 *  - Runs alternate baseline and ours, one VM at a time, 1024 MiB each.
 *  - Where ours spends its time: milestones noted on the serial console as it boots (timeline.ts).
 *
 * Usage: node --import tsx bench/boot/index.ts [--runs N]   (root and qemu-system-x86_64 needed)
 */

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { isRoot, qemuAvailable } from '../../test/support/qemu.js';
import { INIT_MARKER, makeTestInitramfs, waitForSerial } from '../../test/support/vmm-initramfs.js';
import { guestSecondsAtInit, MILESTONES, median, noteMilestones } from './timeline.js';

const DEFAULT_RUNS = 3;
const MEMORY_MB = 1024;
const CPUS = 1;
const BUILD_TIMEOUT_MS = 300_000;
const CREATE_TIMEOUT_MS = 360_000;
const FIRST_200_TIMEOUT_MS = 60_000;
const SERIAL_POLL_MS = 25;
const PROXY_RETRY_MS = 50;
const BASELINE_STOP_TIMEOUT_MS = 1000;
const GOAL_RATIO = 1.3;

function parseRuns(argv: string[]): number {
  const at = argv.indexOf('--runs');
  if (at < 0) return DEFAULT_RUNS;
  const n = Number(argv[at + 1]);
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new Error(`--runs takes an integer from 1 to 50, got ${JSON.stringify(argv[at + 1])}`);
  return n;
}

const skip = !isRoot() ? 'needs root (network namespaces, bridges, taps)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed' : undefined;
if (skip) {
  console.log(`bench/boot skipped: ${skip}`);
  console.log(JSON.stringify({ bench: 'boot', skipped: skip }));
  process.exit(0);
}

const runs = parseRuns(process.argv.slice(2));
const work = mkdtempSync(join(tmpdir(), `volant-bench-boot-${process.pid}-`));
const launcher = createQemuLauncher({ accel: 'tcg' });

interface OursRun {
  totalMs: number;
  createMs: number;
  milestones: Map<string, number>;
  guestInitS?: number;
}

async function bootBaseline(i: number, kernel: string, initramfs: string): Promise<number> {
  const vmName = `bench-boot-base-${i}`;
  const dir = join(work, vmName);
  mkdirSync(dir, { recursive: true });
  const serial = join(dir, 'serial.log');
  const spec = {
    vmName,
    kernelPath: kernel,
    initramfsPath: initramfs,
    cmdline: buildKernelCmdline({ vmName, network: { mode: 'vsock' } }),
    cpus: CPUS,
    memoryMb: MEMORY_MB,
    vsock: { cid: 3 + i, socketPath: join(dir, 'vsock.sock') },
    serialLogPath: serial,
    runDir: join(dir, 'run'),
  };
  const started = performance.now();
  const vm = await launcher.launch(spec);
  try {
    await waitForSerial(serial, new RegExp(INIT_MARKER), vm);
    return performance.now() - started;
  } finally {
    await vm.stop({ timeoutMs: BASELINE_STOP_TIMEOUT_MS });
  }
}

async function bootOurs(env: E2eEnv, i: number): Promise<OursRun> {
  const name = `bench-boot-${i}`;
  const serialPath = join(env.stateDir, 'vms', name, 'serial.log');
  const milestones = new Map<string, number>();
  const started = performance.now();
  let creating = true;
  const watcher = (async () => {
    while (creating) {
      if (existsSync(serialPath)) noteMilestones(readFileSync(serialPath, 'utf8'), performance.now() - started, milestones);
      await sleep(SERIAL_POLL_MS);
    }
  })();
  let created: Awaited<ReturnType<E2eEnv['api']>>;
  try {
    created = await Promise.race([
      env.api('POST', '/api/v1/vms', { name, plugin: 'hello', cpus: CPUS, memory_mb: MEMORY_MB }),
      sleep(CREATE_TIMEOUT_MS).then(() => {
        throw new Error(`POST /api/v1/vms ${name} did not answer within ${CREATE_TIMEOUT_MS} ms`);
      }),
    ]);
  } finally {
    creating = false;
    await watcher;
  }
  const createMs = performance.now() - started;
  const pid = (created.json as { pid?: number } | undefined)?.pid;
  if (typeof pid === 'number') env.track(pid);
  try {
    if (created.status !== 201) throw new Error(`POST /api/v1/vms ${name} answered ${created.status}: ${created.text}`);
    const deadline = Date.now() + FIRST_200_TIMEOUT_MS;
    let last = '';
    for (;;) {
      const r = await env.api('GET', `/api/v1/vms/${name}/proxy/hello`).catch((e: Error) => ({ status: 0, text: e.message }));
      if (r.status === 200) break;
      last = `${r.status} ${r.text.slice(0, 300)}`;
      if (Date.now() > deadline) throw new Error(`no 200 from /api/v1/vms/${name}/proxy/hello within ${FIRST_200_TIMEOUT_MS} ms after create (last: ${last})`);
      await sleep(PROXY_RETRY_MS);
    }
    const totalMs = performance.now() - started;
    const serial = existsSync(serialPath) ? readFileSync(serialPath, 'utf8') : '';
    noteMilestones(serial, createMs, milestones);
    return { totalMs, createMs, milestones, guestInitS: guestSecondsAtInit(serial) };
  } finally {
    const d = await env.api('DELETE', `/api/v1/vms/${name}?force=1`);
    if (d.status !== 204) console.error(`warning: DELETE ${name} answered ${d.status}: ${d.text}`);
  }
}

const s = (ms: number): string => (ms / 1000).toFixed(2);
const pad = (cells: string[], widths: number[]): string => cells.map((c, k) => c.padEnd(widths[k]!)).join('  ');

let env: E2eEnv | undefined;
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
try {
  env = await startE2eEnv();
  const buildDir = join(env.stateDir, 'hello-build');
  const b = await env.volar(['plugins', 'build', join(REPO_ROOT, 'examples', 'hello'), '-o', buildDir, '--kernel', env.kernel.vmlinuz, '--modules', env.kernel.modulesDir], { timeoutMs: BUILD_TIMEOUT_MS });
  if (b.code !== 0) throw new Error(`volar plugins build failed (${b.code}): ${b.stderr || b.stdout}`);
  const inst = await env.volar(['plugins', 'install', buildDir]);
  if (inst.code !== 0) throw new Error(`volar plugins install failed (${inst.code}): ${inst.stderr || inst.stdout}`);
  const baselineImage = join(work, 'baseline-initramfs.cpio');
  makeTestInitramfs(baselineImage, work);

  const base: number[] = [];
  const ours: OursRun[] = [];
  for (let i = 0; i < runs; i++) {
    base.push(await bootBaseline(i, env.kernel.vmlinuz, baselineImage));
    ours.push(await bootOurs(env, i));
    console.error(`run ${i + 1}/${runs}: baseline ${s(base[i]!)} s, ours ${s(ours[i]!.totalMs)} s`);
  }

  const oursTotal = ours.map((r) => r.totalMs);
  const ratioMedian = median(oursTotal) / median(base);
  const ratioMin = Math.min(...oursTotal) / Math.min(...base);
  const w = [44, 10, 10];
  console.log(`bench/boot: kernel ${env.kernel.version}, QEMU q35 TCG, ${MEMORY_MB} MiB, -smp ${CPUS}, ${runs} runs each, alternating`);
  console.log(pad(['', 'median s', 'min s'], w));
  console.log(pad(['baseline: launch → busybox /init marker', s(median(base)), s(Math.min(...base))], w));
  console.log(pad(['ours: POST /vms → first proxied 200', s(median(oursTotal)), s(Math.min(...oursTotal))], w));
  console.log(pad(['  of which POST /vms answered (kestrel healthy)', s(median(ours.map((r) => r.createMs))), s(Math.min(...ours.map((r) => r.createMs)))], w));
  console.log(pad([`ratio ours ÷ baseline (goal ≤ ${GOAL_RATIO}×)`, `${ratioMedian.toFixed(2)}×`, `${ratioMin.toFixed(2)}×`], w));
  console.log('ours, where the time goes (median s since POST, noted on the serial console):');
  const phases: Record<string, number> = {};
  for (const m of MILESTONES) {
    const at = ours.map((r) => r.milestones.get(m.name)).filter((x): x is number => x !== undefined);
    if (at.length === 0) continue;
    phases[m.name] = median(at);
    console.log(pad([`  ${m.name}`, s(median(at)), s(Math.min(...at))], w));
  }
  const guestInit = ours.map((r) => r.guestInitS).filter((x): x is number => x !== undefined);
  if (guestInit.length > 0) console.log(pad(['  guest clock at Run /init (printk)', median(guestInit).toFixed(2), Math.min(...guestInit).toFixed(2)], w));

  console.log(
    JSON.stringify({
      bench: 'boot',
      runs,
      baseline_ms: { median: Math.round(median(base)), min: Math.round(Math.min(...base)), all: base.map(Math.round) },
      ours_ms: { median: Math.round(median(oursTotal)), min: Math.round(Math.min(...oursTotal)), all: oursTotal.map(Math.round) },
      create_ms: { median: Math.round(median(ours.map((r) => r.createMs))) },
      phases_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v)])),
      ratio_median: Number(ratioMedian.toFixed(3)),
      ratio_min: Number(ratioMin.toFixed(3)),
      goal: GOAL_RATIO,
      met: ratioMedian <= GOAL_RATIO,
    }),
  );
} catch (e) {
  console.error(`bench/boot failed: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await env?.dispose();
}
