/**
 * bench/density: what each VM of examples/hello costs the host, the shared runtime against
 * `--layout single`, in one run (docs/benchmarks.md: PSS per VM shared ÷ single ≤ 0.25).
 *
 * For each layout: volantd for real (test/support/e2e-env.ts) starts VMS VMs one after another
 * (each create waits for kestrel's health, then for a first proxied 200); with all of them
 * running, it reads for each VM
 *  - the host's cost: QEMU's PSS from /proc/PID/smaps_rollup (bench/support/memory.ts: a page
 *    shared by N processes counts 1/N, so the runtime image's page cache shared by all VMs is
 *    paid once in all; guest RAM, a memfd each QEMU owns, in full);
 *  - the guest's view: MemAvailable, from kestrel's /healthz (guest/memory.ts), asked over the
 *    VM's vsock socket as volantd asks it;
 * then deletes them and does the other layout. Same kernel, memory and -smp for both.
 *
 * Usage: node --import tsx bench/density/index.ts [--vms N] [--memory MiB]   (root and QEMU needed)
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type E2eEnv, startE2eEnv } from '../../test/support/e2e-env.js';
import { integerFlag } from '../support/args.js';
import { mib, type Pss, processPss } from '../support/memory.js';
import { median } from '../support/stats.js';
import { buildAndInstallHello, createVm, deleteVm, kestrelHealth, type Layout, memoryFlag, skipUnlessVmsCanRun, VM_CPUS, waitProxied200 } from '../support/volant.js';

const DEFAULT_VMS = 8;
const MAX_VMS = 32;
const CPUS = VM_CPUS;
const GOAL_PSS_RATIO = 0.25;

skipUnlessVmsCanRun('density');
const argv = process.argv.slice(2);
const vms = integerFlag(argv, '--vms', DEFAULT_VMS, MAX_VMS);
const memoryMb = memoryFlag(argv);
const work = mkdtempSync(join(tmpdir(), `volant-bench-density-${process.pid}-`));

interface VmMemory {
  name: string;
  pss: Pss;
  /** kB, from kestrel's /healthz. */
  memAvailableKb: number;
  memTotalKb: number;
  createMs: number;
}

async function fill(env: E2eEnv, layout: Layout, plugin: string): Promise<VmMemory[]> {
  const started: { name: string; pid: number; createMs: number }[] = [];
  try {
    for (let i = 0; i < vms; i++) {
      const name = `density-${layout}-${i}`;
      const vm = await createVm(env, { name, plugin, cpus: CPUS, memory_mb: memoryMb });
      started.push(vm);
      await waitProxied200(env, name);
      console.error(`${layout}: VM ${i + 1}/${vms} serving (create ${(vm.createMs / 1000).toFixed(1)} s)`);
    }
    const out: VmMemory[] = [];
    for (const vm of started) {
      const health = await kestrelHealth(env, vm.name);
      const memory = health.memory as { total_kb: number; available_kb: number } | null | undefined;
      if (!memory) throw new Error(`kestrel of ${vm.name} reports no memory on /healthz (an image built before guest/memory.ts?)`);
      out.push({ name: vm.name, pss: processPss(vm.pid), memAvailableKb: memory.available_kb, memTotalKb: memory.total_kb, createMs: vm.createMs });
    }
    return out;
  } finally {
    for (const vm of started) await deleteVm(env, vm.name);
  }
}

const pad = (cells: string[], widths: number[]): string => cells.map((c, k) => c.padEnd(widths[k]!)).join('  ');

let env: E2eEnv | undefined;
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
try {
  env = await startE2eEnv();
  const layouts: Layout[] = ['shared', 'single'];
  const results = new Map<Layout, VmMemory[]>();
  for (const layout of layouts) {
    const built = await buildAndInstallHello(env, layout, work);
    results.set(layout, await fill(env, layout, built.plugin));
  }

  console.log(`bench/density: ${vms} VMs of examples/hello per layout, kernel ${env.kernel.version}, QEMU TCG, ${memoryMb} MiB, -smp ${CPUS}`);
  const w = [26, 10, 10, 10, 10, 14, 12];
  console.log(pad(['VM', 'PSS MiB', 'anon', 'file', 'shmem', 'MemAvail MiB', 'MemTotal'], w));
  for (const [, rs] of results) {
    for (const r of rs) {
      console.log(pad([r.name, mib(r.pss.pss_kb), mib(r.pss.pss_anon_kb), mib(r.pss.pss_file_kb), mib(r.pss.pss_shmem_kb), mib(r.memAvailableKb), mib(r.memTotalKb)], w));
    }
  }
  const summary = Object.fromEntries(
    [...results].map(([layout, rs]) => [
      layout,
      {
        pss_kb_median: median(rs.map((r) => r.pss.pss_kb)),
        // What the guest made QEMU hold: its RAM pages (shmem) and mapped files; the rest (anon) is
        // mostly TCG's translated code, the same for both layouts and absent under KVM.
        guest_pss_kb_median: median(rs.map((r) => r.pss.pss_shmem_kb + r.pss.pss_file_kb)),
        pss_kb_total: rs.reduce((a, r) => a + r.pss.pss_kb, 0),
        mem_available_kb_median: median(rs.map((r) => r.memAvailableKb)),
        mem_total_kb: median(rs.map((r) => r.memTotalKb)),
        per_vm: rs.map((r) => ({ name: r.name, pss_kb: r.pss.pss_kb, pss_anon_kb: r.pss.pss_anon_kb, pss_file_kb: r.pss.pss_file_kb, pss_shmem_kb: r.pss.pss_shmem_kb, mem_available_kb: r.memAvailableKb })),
      },
    ]),
  );
  for (const [layout, sm] of Object.entries(summary)) {
    console.log(`${layout}: PSS per VM median ${mib(sm.pss_kb_median)} MiB (all ${vms}: ${mib(sm.pss_kb_total)} MiB), guest MemAvailable median ${mib(sm.mem_available_kb_median)} of ${mib(sm.mem_total_kb)} MiB`);
  }
  const shared = summary.shared!;
  const single = summary.single!;
  const ratio = Number((shared.pss_kb_median / single.pss_kb_median).toFixed(3));
  const guestRatio = Number((shared.guest_pss_kb_median / single.guest_pss_kb_median).toFixed(3));
  console.log(`ratio PSS per VM shared ÷ single: ${ratio.toFixed(3)} (goal ≤ ${GOAL_PSS_RATIO}); guest RAM + files only (shmem + file, without TCG's anon): ${guestRatio.toFixed(3)}`);
  console.log(
    JSON.stringify({
      bench: 'density',
      vms,
      memory_mb: memoryMb,
      cpus: CPUS,
      layouts,
      ...summary,
      ratio_pss_shared_vs_single: ratio,
      ratio_guest_pss_shared_vs_single: guestRatio,
      ratio_mem_available_shared_vs_single: Number((shared.mem_available_kb_median / single.mem_available_kb_median).toFixed(3)),
      goal: GOAL_PSS_RATIO,
      met: ratio <= GOAL_PSS_RATIO,
    }),
  );
} catch (e) {
  console.error(`bench/density failed: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await env?.dispose();
}
process.exit();
