/**
 * kestrel's own start with and without its V8 code cache (initramfs/code-cache.ts), in one run,
 * alternating, under QEMU TCG: the same examples/hello image (`--layout single`) booted directly
 * by the bench launcher, once as built (cache accepted) and once with one more cpio member
 * appended that replaces /lib/volant/kestrel-bundle.cache with an empty file (the kernel unpacks
 * members in order, the later entry wins), so V8 rejects it and compiles the bundle from source.
 * Everything else is byte for byte the same image.
 *
 * Reported from kestrel's console lines (guest/startup.ts): `node up` at `kestrel: starting`
 * (Node's start plus loading the bundle: what the cache cuts) and at `kestrel: ready`, medians,
 * and the ratio with ÷ without. bench/boot runs it (part of `npm run bench boot`); alone:
 *
 *   node --import tsx bench/boot/kestrel-start.ts [--runs N]   (QEMU needed)
 */

import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { buildPlugin } from '../../initramfs/build.js';
import { KESTREL_CODE_CACHE } from '../../initramfs/code-cache.js';
import { writeCpio } from '../../initramfs/cpio.js';
import { testKernel, REPO_ROOT } from '../../test/support/kernel.js';
import { qemuAvailable } from '../../test/support/qemu.js';
import { waitForSerial } from '../../test/support/vmm-initramfs.js';
import { integerFlag } from '../support/args.js';
import { median } from '../support/stats.js';
import { kestrelStart } from './timeline.js';

const MEMORY_MB = 512;
const STOP_TIMEOUT_MS = 1000;
const READY = /kestrel: ready \(node up (\d+) ms/;

export interface KestrelStartResult {
  runs: number;
  /** Medians, ms since Node started, at kestrel's `starting` and `ready` lines. */
  with_cache: { starting_ms: number; ready_ms: number; status: string };
  without_cache: { starting_ms: number; ready_ms: number; status: string };
  ratio_kestrel_start_cache: number;
}

/** Builds the two images and boots each `runs` times, alternating. */
export async function measureKestrelStart(runs: number): Promise<KestrelStartResult> {
  const kernel = await testKernel();
  const work = mkdtempSync(join(tmpdir(), `volant-bench-kestrel-start-${process.pid}-`));
  try {
    const built = await buildPlugin({ pluginDir: join(REPO_ROOT, 'examples', 'hello'), outDir: join(work, 'build'), kernelVersion: kernel.version, modulesDir: kernel.modulesDir, layout: 'single' });
    const withCache = built.image;
    const withoutCache = join(work, 'no-cache.img');
    copyFileSync(withCache, withoutCache);
    // The kernel reads a cpio header only at a 4-byte aligned offset; zeros before it are skipped.
    appendFileSync(withoutCache, Buffer.alloc((4 - (statSync(withoutCache).size % 4)) % 4));
    for await (const chunk of writeCpio([{ type: 'file', path: KESTREL_CODE_CACHE, mode: 0o644, source: { kind: 'bytes', data: Buffer.alloc(0) } }], { firstInode: 0x0200_0000 })) {
      appendFileSync(withoutCache, chunk);
    }
    const launcher = createQemuLauncher({ accel: 'tcg' });
    const samples = { with: [] as { starting: number; ready: number; status: string }[], without: [] as { starting: number; ready: number; status: string }[] };
    for (let i = 0; i < runs; i++) {
      for (const [key, image] of (i % 2 === 0 ? [['with', withCache], ['without', withoutCache]] : [['without', withoutCache], ['with', withCache]]) as ['with' | 'without', string][]) {
        const vmName = `kestrel-start-${key}-${i}`;
        const dir = join(work, vmName);
        mkdirSync(join(dir, 'run'), { recursive: true });
        const spec = {
          vmName,
          kernelPath: kernel.vmlinuz,
          initramfsPath: image,
          cmdline: buildKernelCmdline({ vmName, network: { mode: 'vsock' } }),
          cpus: 1,
          memoryMb: MEMORY_MB,
          vsock: { cid: 200 + i, socketPath: join(dir, 'vsock.sock') },
          serialLogPath: join(dir, 'serial.log'),
          runDir: join(dir, 'run'),
        };
        const vm = await launcher.launch(spec);
        try {
          const serial = await waitForSerial(spec.serialLogPath, READY, vm);
          const start = kestrelStart(serial);
          if (!start) throw new Error(`${vmName}: no kestrel starting line: ${serial.slice(-1000)}`);
          const status = start.codeCache ?? '?';
          if ((key === 'with') !== (status === 'accepted')) throw new Error(`${vmName}: the code cache was ${status}, so this boot does not measure what it is for; serial:\n${serial.slice(-1500)}`);
          samples[key].push({ starting: start.nodeUpMs, ready: Number(READY.exec(serial)![1]), status });
        } finally {
          await vm.stop({ timeoutMs: STOP_TIMEOUT_MS });
        }
      }
      console.error(`kestrel start run ${i + 1}/${runs}: with cache ${samples.with.at(-1)!.starting} ms (${samples.with.at(-1)!.status}), without ${samples.without.at(-1)!.starting} ms (${samples.without.at(-1)!.status})`);
    }
    const summary = (xs: { starting: number; ready: number; status: string }[]) => ({
      starting_ms: median(xs.map((x) => x.starting)),
      ready_ms: median(xs.map((x) => x.ready)),
      status: [...new Set(xs.map((x) => x.status))].join('/'),
    });
    const w = summary(samples.with);
    const wo = summary(samples.without);
    return { runs, with_cache: w, without_cache: wo, ratio_kestrel_start_cache: Number((w.starting_ms / wo.starting_ms).toFixed(3)) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function printKestrelStart(r: KestrelStartResult): void {
  console.log(`kestrel's start under TCG (node up at kestrel's line, median of ${r.runs}; examples/hello --layout single, booted directly):`);
  console.log(`  with the code cache (${r.with_cache.status}):     starting ${(r.with_cache.starting_ms / 1000).toFixed(2)} s, ready ${(r.with_cache.ready_ms / 1000).toFixed(2)} s`);
  console.log(`  without it (${r.without_cache.status}):            starting ${(r.without_cache.starting_ms / 1000).toFixed(2)} s, ready ${(r.without_cache.ready_ms / 1000).toFixed(2)} s`);
  console.log(`  ratio with ÷ without (to starting): ${r.ratio_kestrel_start_cache.toFixed(2)}×`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (!qemuAvailable()) {
    console.log(JSON.stringify({ bench: 'kestrel-start', skipped: 'qemu-system-x86_64 is not installed' }));
    process.exit(0);
  }
  const r = await measureKestrelStart(integerFlag(process.argv.slice(2), '--runs', 3, 50));
  printKestrelStart(r);
  console.log(JSON.stringify({ bench: 'kestrel-start', ...r }));
  process.exit();
}
