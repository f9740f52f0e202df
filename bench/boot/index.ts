/**
 * bench/boot: how long a VM takes to serve its first request, Volant against doing it by hand,
 * in one run, alternating, one VM at a time (docs/benchmarks.md: (c) ≤ 1.0× (b), ≤ 1.5× (a)):
 *
 *  (a) bare: the same kernel booting test/support/vmm-initramfs.ts's busybox-only image, launch →
 *      its marker on the serial console. No NIC, no node: the floor.
 *  (b) hand-built: one initramfs with busybox, node and examples/hello's app, `ip=` applied by
 *      its init, a tap on a bridge in a namespace made here (hand-built.ts); launch → first 200
 *      from the workload, asked directly on the bridge.
 *  (c) Volant, shared runtime: volantd for real (test/support/e2e-env.ts), examples/hello built
 *      with `--layout shared` and installed (not timed); `POST /api/v1/vms` → first 200 from
 *      `GET /api/v1/vms/<name>/proxy/hello`; the VM is deleted before the next boot.
 *  (d) Volant, `--layout single`: the same with everything in one initramfs.
 *
 * Same kernel, same launcher (host/vmm/qemu.ts `createQemuLauncher`: q35, `-cpu max`, TCG) and
 * the same memory and -smp for all four. Reported per variant: medians and minimums, QEMU's
 * PSS when the end point was reached, the image size; for Volant where the time goes (serial
 * milestones, polled every 25 ms) and kestrel's own start as it reports it on the console.
 *
 * Then kestrel's start with and without its V8 code cache (kestrel-start.ts), same number of runs.
 *
 * Usage: node --import tsx bench/boot/index.ts [--runs N] [--memory MiB]   (root and QEMU needed)
 */

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultCacheDir } from '../../initramfs/cache.js';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { LaunchSpec } from '../../host/vmm/launcher.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { GUEST_BOOT_TIMEOUT_MS, INIT_MARKER, makeTestInitramfs } from '../../test/support/vmm-initramfs.js';
import { integerFlag } from '../support/args.js';
import { mib, processPss } from '../support/memory.js';
import { median } from '../support/stats.js';
import { buildAndInstallHello, createVm, deleteVm, type Layout, memoryFlag, serialLogOf, skipUnlessVmsCanRun, VM_CPUS, waitProxied200 } from '../support/volant.js';
import { handBuiltCmdline, makeHandBuiltImage, makeHandBuiltNet } from './hand-built.js';
import { measureKestrelStart, printKestrelStart } from './kestrel-start.js';
import { guestSecondsAtInit, intervals, KERNEL_INIT, type KestrelStart, kestrelStart, MILESTONES, noteMilestones } from './timeline.js';

const DEFAULT_RUNS = 3;
const MAX_RUNS = 50;
const CPUS = VM_CPUS;
const SERIAL_POLL_MS = 25;
const STOP_TIMEOUT_MS = 1000;
const GOAL_VS_HAND_BUILT = 1.0;
const GOAL_VS_BARE = 1.5;

skipUnlessVmsCanRun('boot');
const argv = process.argv.slice(2);
const runs = integerFlag(argv, '--runs', DEFAULT_RUNS, MAX_RUNS);
const memoryMb = memoryFlag(argv);
const work = mkdtempSync(join(tmpdir(), `volant-bench-boot-${process.pid}-`));
const launcher = createQemuLauncher({ accel: 'tcg' });

type Variant = 'bare' | 'hand_built' | 'volant_shared' | 'volant_single';
const LABELS: Record<Variant, string> = {
  bare: '(a) bare: launch → busybox /init marker',
  hand_built: '(b) hand-built: launch → first direct 200',
  volant_shared: '(c) Volant, shared runtime: create → first proxied 200',
  volant_single: '(d) Volant --layout single: create → first proxied 200',
};

interface BootRun {
  /** ms from the start to the end point. */
  totalMs: number;
  /** Named points in time, ms since the start, in order. */
  points: { name: string; at: number }[];
  /** The guest clock (s) on the kernel's `Run /init` line. */
  guestInitS?: number;
  /** QEMU's PSS (kB) at the end point. */
  pssKb?: number;
  kestrel?: KestrelStart;
}

const readText = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8') : '');

/** Polls a serial log, noting milestones at their host time since `started`, until `done()` says stop. */
async function watchSerial(path: string, started: number, seen: Map<string, number>, done: () => boolean): Promise<void> {
  for (;;) {
    noteMilestones(readText(path), performance.now() - started, seen);
    if (done()) return;
    await sleep(SERIAL_POLL_MS);
  }
}

const pointsOf = (seen: Map<string, number>): { name: string; at: number }[] =>
  MILESTONES.filter((m) => seen.has(m.name)).map((m) => ({ name: m.name, at: seen.get(m.name)! }));

const pssOf = (pid: number): number | undefined => {
  try {
    return processPss(pid).pss_kb;
  } catch {
    return undefined;
  }
};

/** Launches a VM with the bench launcher and resolves when `until` settles, timing from launch. */
async function bootDirect(spec: LaunchSpec, endName: string, until: (exited: () => boolean) => Promise<void>): Promise<BootRun> {
  mkdirSync(spec.runDir, { recursive: true });
  const seen = new Map<string, number>();
  let finished = false;
  const started = performance.now();
  const vm = await launcher.launch(spec);
  let exited = false;
  void vm.exited.then(() => {
    exited = true;
  });
  const watcher = watchSerial(spec.serialLogPath, started, seen, () => finished);
  try {
    await until(() => exited);
    const totalMs = performance.now() - started;
    const pssKb = pssOf(vm.pid);
    finished = true;
    await watcher;
    const serial = readText(spec.serialLogPath);
    return { totalMs, pssKb, points: [{ name: 'launch', at: 0 }, ...pointsOf(seen), { name: endName, at: totalMs }], guestInitS: guestSecondsAtInit(serial) };
  } catch (e) {
    throw new Error(`${spec.vmName}: ${(e as Error).message}; serial:\n${readText(spec.serialLogPath).slice(-1500)}`);
  } finally {
    finished = true;
    await watcher;
    await vm.stop({ timeoutMs: STOP_TIMEOUT_MS });
  }
}

function directSpec(vmName: string, i: number, kernel: string, initramfs: string, cmdline: string): LaunchSpec {
  const dir = join(work, vmName);
  return {
    vmName,
    kernelPath: kernel,
    initramfsPath: initramfs,
    cmdline,
    cpus: CPUS,
    memoryMb,
    vsock: { cid: 3 + i, socketPath: join(dir, 'vsock.sock') },
    serialLogPath: join(dir, 'serial.log'),
    runDir: join(dir, 'run'),
  };
}

async function bootOurs(env: E2eEnv, name: string, plugin: string): Promise<BootRun> {
  const serialPath = serialLogOf(env, name);
  const seen = new Map<string, number>();
  const started = performance.now();
  let creating = true;
  const watcher = watchSerial(serialPath, started, seen, () => !creating);
  let created: Awaited<ReturnType<typeof createVm>>;
  try {
    created = await createVm(env, { name, plugin, cpus: CPUS, memory_mb: memoryMb });
  } finally {
    creating = false;
    await watcher;
  }
  try {
    await waitProxied200(env, name);
    const totalMs = performance.now() - started;
    const pssKb = pssOf(created.pid);
    const serial = readText(serialPath);
    noteMilestones(serial, created.createMs, seen);
    const points = [{ name: 'POST /vms', at: 0 }, ...pointsOf(seen), { name: 'POST answered', at: created.createMs }, { name: 'first proxied 200', at: totalMs }];
    return { totalMs, points, pssKb, guestInitS: guestSecondsAtInit(serial), kestrel: kestrelStart(serial) };
  } finally {
    await deleteVm(env, name);
  }
}

const s = (ms: number): string => (ms / 1000).toFixed(2);
const pad = (cells: string[], widths: number[]): string => cells.map((c, k) => c.padEnd(widths[k]!)).join('  ');
const stat = (xs: number[]): { median: number; min: number } => ({ median: median(xs), min: Math.min(...xs) });

let env: E2eEnv | undefined;
let net: Awaited<ReturnType<typeof makeHandBuiltNet>> | undefined;
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
try {
  env = await startE2eEnv();
  const kernel = env.kernel;
  const built = new Map<Layout, Awaited<ReturnType<typeof buildAndInstallHello>>>();
  for (const layout of ['shared', 'single'] as const) built.set(layout, await buildAndInstallHello(env, layout, work));

  const bareImage = join(work, 'bare-initramfs.cpio');
  mkdirSync(join(work, 'bare-tree'));
  makeTestInitramfs(bareImage, join(work, 'bare-tree'));
  const handImage = join(work, 'hand-built-initramfs.cpio');
  mkdirSync(join(work, 'hand-tree'));
  await makeHandBuiltImage(handImage, join(work, 'hand-tree'), kernel.modulesDir, defaultCacheDir());
  net = await makeHandBuiltNet();
  const handNet = net;

  const variants: Variant[] = ['bare', 'hand_built', 'volant_shared', 'volant_single'];
  const results = new Map<Variant, BootRun[]>(variants.map((v) => [v, []]));
  const boot = async (v: Variant, i: number): Promise<BootRun> => {
    switch (v) {
      case 'bare': {
        const spec = directSpec(`bench-boot-bare-${i}`, i, kernel.vmlinuz, bareImage, buildKernelCmdline({ vmName: `bench-boot-bare-${i}`, network: { mode: 'vsock' } }));
        const deadline = Date.now() + GUEST_BOOT_TIMEOUT_MS;
        return bootDirect(spec, '/init marker', async (exited) => {
          while (!readText(spec.serialLogPath).includes(INIT_MARKER)) {
            if (exited()) throw new Error('QEMU exited before the marker');
            if (Date.now() > deadline) throw new Error(`no ${INIT_MARKER} within ${GUEST_BOOT_TIMEOUT_MS} ms`);
            await sleep(SERIAL_POLL_MS);
          }
        });
      }
      case 'hand_built': {
        const spec = { ...directSpec(`bench-boot-hand-${i}`, 100 + i, kernel.vmlinuz, handImage, handBuiltCmdline()), tap: handNet.tap, commandPrefix: handNet.ns.prefix };
        const poll = handNet.first200();
        try {
          return await bootDirect(spec, 'first direct 200', async (exited) => {
            const deadline = sleep(GUEST_BOOT_TIMEOUT_MS).then(() => {
              throw new Error(`no 200 on the bridge within ${GUEST_BOOT_TIMEOUT_MS} ms`);
            });
            const died = (async () => {
              while (!exited()) await sleep(250);
              throw new Error('QEMU exited before the first 200');
            })();
            await Promise.race([poll.done, deadline, died]);
          });
        } finally {
          poll.child.kill('SIGKILL');
        }
      }
      case 'volant_shared':
        return bootOurs(env!, `bench-boot-shared-${i}`, built.get('shared')!.plugin);
      case 'volant_single':
        return bootOurs(env!, `bench-boot-single-${i}`, built.get('single')!.plugin);
    }
  };
  for (let i = 0; i < runs; i++) {
    // Each run starts with a different variant, so none always follows the same one.
    const order = variants.map((_, k) => variants[(k + i) % variants.length]!);
    const line: string[] = [];
    for (const v of order) {
      const r = await boot(v, i);
      results.get(v)!.push(r);
      line.push(`${v} ${s(r.totalMs)} s`);
    }
    console.error(`run ${i + 1}/${runs}: ${line.join(', ')}`);
  }

  // kestrel's start with and without its code cache, same runs, after the boots above.
  const codeCache = await measureKestrelStart(runs);

  const totals = new Map(variants.map((v) => [v, stat(results.get(v)!.map((r) => r.totalMs))]));
  const ratio = (a: Variant, b: Variant): number => Number((totals.get(a)!.median / totals.get(b)!.median).toFixed(3));
  const phaseStats = (rs: BootRun[]): { name: string; median: number; min: number }[] => {
    const byName = new Map<string, number[]>();
    for (const r of rs) for (const iv of intervals(r.points)) byName.set(iv.name, [...(byName.get(iv.name) ?? []), iv.ms]);
    return [...byName].map(([name, xs]) => ({ name, ...stat(xs) }));
  };
  const medianOf = (xs: (number | undefined)[]): number | undefined => {
    const ys = xs.filter((x): x is number => x !== undefined);
    return ys.length > 0 ? median(ys) : undefined;
  };
  const images: Record<Variant, number> = {
    bare: statSync(bareImage).size,
    hand_built: statSync(handImage).size,
    volant_shared: built.get('shared')!.result.imageBytes,
    volant_single: built.get('single')!.result.imageBytes,
  };

  const w = [62, 10, 10, 12, 12];
  console.log(`bench/boot: kernel ${kernel.version}, QEMU q35 TCG -cpu max, ${memoryMb} MiB, -smp ${CPUS}, ${runs} runs each, alternating`);
  console.log(pad(['', 'median s', 'min s', 'PSS MiB', 'image MiB'], w));
  for (const v of variants) {
    const t = totals.get(v)!;
    const pss = medianOf(results.get(v)!.map((r) => r.pssKb));
    const img = images[v];
    console.log(pad([LABELS[v], s(t.median), s(t.min), pss === undefined ? '-' : mib(pss), mib(img / 1024)], w));
  }
  const ratios: [string, number, string][] = [
    ['(c) ÷ (b)', ratio('volant_shared', 'hand_built'), `goal ≤ ${GOAL_VS_HAND_BUILT}`],
    ['(c) ÷ (a)', ratio('volant_shared', 'bare'), `goal ≤ ${GOAL_VS_BARE}`],
    ['(d) ÷ (b)', ratio('volant_single', 'hand_built'), ''],
    ['(d) ÷ (a)', ratio('volant_single', 'bare'), ''],
  ];
  for (const [label, value, goal] of ratios) console.log(pad([`ratio ${label} ${goal}`, `${value.toFixed(2)}×`], w));
  console.log('where the time goes (median s; host time at first sight on the serial console):');
  const phases: Record<string, Record<string, number>> = {};
  const kestrel: Record<string, unknown> = {};
  for (const v of variants) {
    const rs = results.get(v)!;
    console.log(`  ${LABELS[v]}`);
    const ps = phaseStats(rs);
    phases[v] = Object.fromEntries(ps.map((p) => [p.name, Math.round(p.median)]));
    for (const p of ps) console.log(pad([`    ${p.name}`, s(p.median), s(p.min)], w));
    const g = medianOf(rs.map((r) => r.guestInitS));
    if (g !== undefined) console.log(pad([`    (guest clock at ${KERNEL_INIT}, printk)`, g.toFixed(2)], w));
    const nodeUp = medianOf(rs.map((r) => r.kestrel?.nodeUpMs));
    if (nodeUp !== undefined) {
      const caches = [...new Set(rs.map((r) => r.kestrel?.codeCache ?? '?'))].join('/');
      console.log(pad([`    (kestrel's start: Node start + bundle load, code cache ${caches})`, s(nodeUp)], w));
      kestrel[v] = { node_up_ms: nodeUp, code_cache: caches };
    }
  }

  printKestrelStart(codeCache);

  const ms = (x: { median: number; min: number }) => ({ median: Math.round(x.median), min: Math.round(x.min) });
  const c_vs_b = ratio('volant_shared', 'hand_built');
  const c_vs_a = ratio('volant_shared', 'bare');
  console.log(
    JSON.stringify({
      bench: 'boot',
      runs,
      memory_mb: memoryMb,
      cpus: CPUS,
      ms: Object.fromEntries(variants.map((v) => [v, { ...ms(totals.get(v)!), all: results.get(v)!.map((r) => Math.round(r.totalMs)) }])),
      pss_kb: Object.fromEntries(variants.map((v) => [v, medianOf(results.get(v)!.map((r) => r.pssKb))])),
      image_bytes: images,
      ratio_shared_vs_hand_built: c_vs_b,
      ratio_shared_vs_bare: c_vs_a,
      ratio_single_vs_hand_built: ratio('volant_single', 'hand_built'),
      ratio_single_vs_bare: ratio('volant_single', 'bare'),
      goals: { shared_vs_hand_built: GOAL_VS_HAND_BUILT, shared_vs_bare: GOAL_VS_BARE },
      met: c_vs_b <= GOAL_VS_HAND_BUILT && c_vs_a <= GOAL_VS_BARE,
      phases_ms: phases,
      kestrel_start: kestrel,
      kestrel_code_cache: codeCache,
    }),
  );
} catch (e) {
  console.error(`bench/boot failed: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await net?.dispose();
  await env?.dispose();
}
// A keep-alive client socket or a finished child's pipe must not keep the bench from ending.
process.exit();
