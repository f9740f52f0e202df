/**
 * bench/boot: VM create → first proxied 200, against the same kernel booting a busybox-only
 * initramfs to `/init` under the same QEMU settings, in one run, as a ratio (docs/benchmarks.md: ≤ 1.3×).
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

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { isRoot, qemuAvailable } from '../../test/support/qemu.js';
import { GUEST_BOOT_TIMEOUT_MS, INIT_MARKER, makeTestInitramfs } from '../../test/support/vmm-initramfs.js';
import { integerFlag } from '../support/args.js';
import { guestSecondsAtInit, intervals, KERNEL_INIT, MILESTONES, median, noteMilestones } from './timeline.js';

const DEFAULT_RUNS = 3;
const MAX_RUNS = 50;
const MEMORY_MB = 1024;
const CPUS = 1;
const BUILD_TIMEOUT_MS = 300_000;
const CREATE_TIMEOUT_MS = 360_000;
const FIRST_200_TIMEOUT_MS = 60_000;
const SERIAL_POLL_MS = 25;
const PROXY_RETRY_MS = 50;
const BASELINE_STOP_TIMEOUT_MS = 1000;
const GOAL_RATIO = 1.3;

const skip = !isRoot() ? 'needs root (network namespaces, bridges, taps)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed' : undefined;
if (skip) {
  console.log(`bench/boot skipped: ${skip}`);
  console.log(JSON.stringify({ bench: 'boot', skipped: skip }));
  process.exit(0);
}

const runs = integerFlag(process.argv.slice(2), '--runs', DEFAULT_RUNS, MAX_RUNS);
const work = mkdtempSync(join(tmpdir(), `volant-bench-boot-${process.pid}-`));
const launcher = createQemuLauncher({ accel: 'tcg' });

interface BootRun {
  /** ms from the start to the end point (baseline: marker; ours: first proxied 200). */
  totalMs: number;
  /** Named points in time, ms since the start, in order. */
  points: { name: string; at: number }[];
  /** The guest clock (s) on the kernel's `Run /init` line. */
  guestInitS?: number;
}

/**
 * Polls a serial log every SERIAL_POLL_MS, noting milestones at their host time since `started`,
 * until `done()` says stop; resolves with the last text read.
 */
async function watchSerial(path: string, started: number, seen: Map<string, number>, done: (text: string) => boolean): Promise<string> {
  for (;;) {
    const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
    noteMilestones(text, performance.now() - started, seen);
    if (done(text)) return text;
    await sleep(SERIAL_POLL_MS);
  }
}

const pointsOf = (seen: Map<string, number>): { name: string; at: number }[] =>
  MILESTONES.filter((m) => seen.has(m.name)).map((m) => ({ name: m.name, at: seen.get(m.name)! }));

async function bootBaseline(i: number, kernel: string, initramfs: string): Promise<BootRun> {
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
  const seen = new Map<string, number>();
  const started = performance.now();
  const vm = await launcher.launch(spec);
  let exited = false;
  void vm.exited.then(() => {
    exited = true;
  });
  try {
    const deadline = Date.now() + GUEST_BOOT_TIMEOUT_MS;
    const text = await watchSerial(serial, started, seen, (t) => t.includes(INIT_MARKER) || exited || Date.now() > deadline);
    if (!text.includes(INIT_MARKER)) throw new Error(`baseline ${vmName}: no ${INIT_MARKER} on the console (${exited ? 'QEMU exited' : 'timed out'}): ${text.slice(-1500)}`);
    const totalMs = performance.now() - started;
    return { totalMs, points: [{ name: 'launch', at: 0 }, ...pointsOf(seen), { name: '/init marker', at: totalMs }], guestInitS: guestSecondsAtInit(text) };
  } finally {
    await vm.stop({ timeoutMs: BASELINE_STOP_TIMEOUT_MS });
  }
}

async function bootOurs(env: E2eEnv, i: number): Promise<BootRun> {
  const name = `bench-boot-${i}`;
  const serialPath = join(env.stateDir, 'vms', name, 'serial.log');
  const seen = new Map<string, number>();
  const started = performance.now();
  let creating = true;
  const watcher = watchSerial(serialPath, started, seen, () => !creating);
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
    for (;;) {
      const r = await env.api('GET', `/api/v1/vms/${name}/proxy/hello`).catch((e: Error) => ({ status: 0, text: e.message }));
      if (r.status === 200) break;
      if (Date.now() > deadline) throw new Error(`no 200 from /api/v1/vms/${name}/proxy/hello within ${FIRST_200_TIMEOUT_MS} ms after create (last: ${r.status} ${r.text.slice(0, 300)})`);
      await sleep(PROXY_RETRY_MS);
    }
    const totalMs = performance.now() - started;
    const serial = existsSync(serialPath) ? readFileSync(serialPath, 'utf8') : '';
    noteMilestones(serial, createMs, seen);
    const points = [{ name: 'POST /vms', at: 0 }, ...pointsOf(seen), { name: 'POST answered', at: createMs }, { name: 'first proxied 200', at: totalMs }];
    return { totalMs, points, guestInitS: guestSecondsAtInit(serial) };
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

  const base: BootRun[] = [];
  const ours: BootRun[] = [];
  for (let i = 0; i < runs; i++) {
    base.push(await bootBaseline(i, env.kernel.vmlinuz, baselineImage));
    ours.push(await bootOurs(env, i));
    console.error(`run ${i + 1}/${runs}: baseline ${s(base[i]!.totalMs)} s, ours ${s(ours[i]!.totalMs)} s`);
  }

  const stat = (xs: number[]): { median: number; min: number } => ({ median: median(xs), min: Math.min(...xs) });
  const baseTotal = stat(base.map((r) => r.totalMs));
  const oursTotal = stat(ours.map((r) => r.totalMs));
  const ratioMedian = oursTotal.median / baseTotal.median;
  const ratioMin = oursTotal.min / baseTotal.min;
  /** Median and min of each named interval over the runs that saw both ends. */
  const phaseStats = (rs: BootRun[]): { name: string; median: number; min: number }[] => {
    const byName = new Map<string, number[]>();
    for (const r of rs) for (const iv of intervals(r.points)) byName.set(iv.name, [...(byName.get(iv.name) ?? []), iv.ms]);
    return [...byName].map(([name, xs]) => ({ name, ...stat(xs) }));
  };
  const guestInit = (rs: BootRun[]): number | undefined => {
    const xs = rs.map((r) => r.guestInitS).filter((x): x is number => x !== undefined);
    return xs.length > 0 ? median(xs) : undefined;
  };
  const oursImage = statSync(join(buildDir, 'initramfs.img')).size;
  const baseImage = statSync(baselineImage).size;
  const mib = (n: number): string => (n / (1 << 20)).toFixed(1);

  const w = [52, 10, 10];
  console.log(`bench/boot: kernel ${env.kernel.version}, QEMU q35 TCG -cpu max, ${MEMORY_MB} MiB, -smp ${CPUS}, ${runs} runs each, alternating`);
  console.log(`images: ours ${mib(oursImage)} MiB (examples/hello), baseline ${mib(baseImage)} MiB (busybox only)`);
  console.log(pad(['', 'median s', 'min s'], w));
  console.log(pad(['baseline: launch → busybox /init marker', s(baseTotal.median), s(baseTotal.min)], w));
  console.log(pad(['ours: POST /api/v1/vms → first proxied 200', s(oursTotal.median), s(oursTotal.min)], w));
  console.log(pad([`ratio ours ÷ baseline (goal ≤ ${GOAL_RATIO}×)`, `${ratioMedian.toFixed(2)}×`, `${ratioMin.toFixed(2)}×`], w));
  const oursPhases = phaseStats(ours);
  const basePhases = phaseStats(base);
  console.log('where the time goes (host time at first sight on the serial console, polled every 25 ms):');
  for (const [label, phases, rs] of [['baseline', basePhases, base], ['ours', oursPhases, ours]] as const) {
    console.log(`  ${label}:`);
    for (const p of phases) console.log(pad([`    ${p.name}`, s(p.median), s(p.min)], w));
    const g = guestInit(rs);
    if (g !== undefined) console.log(pad([`    (guest clock at ${KERNEL_INIT}, printk)`, g.toFixed(2), ''], w));
  }

  const ms = (x: { median: number; min: number }) => ({ median: Math.round(x.median), min: Math.round(x.min) });
  console.log(
    JSON.stringify({
      bench: 'boot',
      runs,
      memory_mb: MEMORY_MB,
      cpus: CPUS,
      baseline_ms: { ...ms(baseTotal), all: base.map((r) => Math.round(r.totalMs)) },
      ours_ms: { ...ms(oursTotal), all: ours.map((r) => Math.round(r.totalMs)) },
      ratio_median: Number(ratioMedian.toFixed(3)),
      ratio_min: Number(ratioMin.toFixed(3)),
      goal: GOAL_RATIO,
      met: ratioMedian <= GOAL_RATIO,
      phases_ms: { baseline: Object.fromEntries(basePhases.map((p) => [p.name, Math.round(p.median)])), ours: Object.fromEntries(oursPhases.map((p) => [p.name, Math.round(p.median)])) },
      guest_init_s: { baseline: guestInit(base), ours: guestInit(ours) },
      image_bytes: { baseline: baseImage, ours: oursImage },
    }),
  );
} catch (e) {
  console.error(`bench/boot failed: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await env?.dispose();
}
// A keep-alive client socket or a finished child's pipe must not keep the bench from ending.
process.exit();
