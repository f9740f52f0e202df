/**
 * bench/initramfs: `buildPlugin(examples/hello)` against what the original builder runs,
 * `find . | cpio -o -H newc | gzip -9`, on the same staged tree (our single-file image unpacked
 * with GNU cpio), measured in the same run (docs/benchmarks.md: ≤ 0.1× time, ≤ 0.9× size,
 * byte-identical rebuilds).
 *
 * Reported, for `--layout single` (everything in the initramfs): a cold build (empty runtime
 * cache: the first build on a machine), a warm build (runtime member cached: every later build,
 * what a user iterating on a plugin sees), for gzip and zstd; sizes against the baseline.
 * For the shared layout (the default): the plugin image alone, cold (its runtime image built in
 * the same call) and warm (runtime image there), and the runtime image on its own
 * (`ensureRuntimeImage`: build time, size). Whether rebuilds are byte-identical, the runtime
 * image included.
 *
 * Usage: node --import tsx bench/initramfs/index.ts
 */

import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import type { Compression } from '../../initramfs/build-file.js';
import { type BuildResult, buildPlugin, type Layout } from '../../initramfs/build.js';
import { ensureRuntimeImage, type RuntimeImage } from '../../initramfs/runtime-image.js';
import { sha256File } from '../../initramfs/member.js';
import { testKernel } from '../../test/support/kernel.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const hello = join(repo, 'examples', 'hello');
const dir = mkdtempSync(join(tmpdir(), `volant-bench-initramfs-${process.pid}-`));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
process.on('SIGINT', () => process.exit(130));

const kernel = await testKernel();

// kestrel is bundled from a snapshot of its sources so edits made to guest/ while the bench runs
// cannot make two builds differ; the snapshot sits inside the repo so node_modules resolve.
const snapshot = join(repo, '.cache', `bench-initramfs-${process.pid}`);
for (const part of ['guest', 'shared', 'native']) cpSync(join(repo, part), join(snapshot, part), { recursive: true, filter: (src) => !src.includes('/build') });
process.on('exit', () => rmSync(snapshot, { recursive: true, force: true }));

async function timed(name: string, compression: Compression, cacheDir: string, layout: Layout = 'single'): Promise<{ name: string; seconds: number; result: BuildResult }> {
  const started = performance.now();
  const result = await buildPlugin({
    pluginDir: hello,
    outDir: join(dir, name),
    kernelVersion: kernel.version,
    modulesDir: kernel.modulesDir,
    compression,
    cacheDir,
    layout,
    runtimeDir: join(cacheDir, 'runtimes'),
    kestrelEntry: join(snapshot, 'guest', 'main.ts'),
  });
  return { name, seconds: (performance.now() - started) / 1000, result };
}

/** The runtime image alone, into an empty folder (its stripped node from `cacheDir`). */
async function timedRuntime(cacheDir: string, into: string): Promise<{ seconds: number; image: RuntimeImage; sha256: string }> {
  const started = performance.now();
  const image = await ensureRuntimeImage({ kernelVersion: kernel.version, modulesDir: kernel.modulesDir, dir: join(dir, into), cacheDir });
  return { seconds: (performance.now() - started) / 1000, image, sha256: await sha256File(image.path) };
}

// examples/hello's build file picks the compression `volar plugins build examples/hello` uses
// (none today); it is measured too, beside gzip (the baseline's) and zstd.
const exampleCompression: Compression = (JSON.parse(readFileSync(join(hello, 'volant.build.json'), 'utf8')) as { compression?: Compression }).compression ?? 'gzip';
const compressions = [...new Set<Compression>(['gzip', 'zstd', exampleCompression])];
const runs: { name: string; seconds: number; result: BuildResult }[] = [];
for (const c of compressions) {
  const cache = join(dir, `cache-${c}`);
  runs.push(await timed(`${c}-cold`, c, cache));
  runs.push(await timed(`${c}-warm`, c, cache));
  runs.push(await timed(`${c}-warm-again`, c, cache));
}
// The shared layout with the example's compression: cold (runtime image made in the build),
// warm, and warm again (byte-identical); then the runtime image alone, twice, into empty folders.
const sharedCache = join(dir, 'cache-shared');
const shared = [
  await timed('shared-cold', exampleCompression, sharedCache, 'shared'),
  await timed('shared-warm', exampleCompression, sharedCache, 'shared'),
  await timed('shared-warm-again', exampleCompression, sharedCache, 'shared'),
];
const runtimeBuilds = [await timedRuntime(sharedCache, 'runtime-1'), await timedRuntime(sharedCache, 'runtime-2')];

// The same staged tree: our gzip image unpacked, member by member, with GNU cpio.
const tree = join(dir, 'tree');
mkdirSync(tree);
const gz = runs[0]!.result;
const image = readFileSync(gz.image);
let at = 0;
for (const m of gz.members) {
  execFileSync('cpio', ['-idm', '--quiet'], { cwd: tree, input: gunzipSync(image.subarray(at, at + m.bytes)), maxBuffer: 1 << 30 });
  at += m.bytes;
}
const baselineOut = join(dir, 'baseline.img');
const b0 = performance.now();
execFileSync('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -9 > ${baselineOut}`], { cwd: tree });
const baselineSeconds = (performance.now() - b0) / 1000;
const baselineBytes = statSync(baselineOut).size;

const by = (n: string): { seconds: number; result: BuildResult } => {
  const run = runs.find((r) => r.name === n);
  if (!run) throw new Error(`bench/initramfs: no run named ${n} (ran ${runs.map((r) => r.name).join(', ')})`);
  return run;
};

// Cold (runtime compressed now) and warm (runtime from the cache) builds must give the same bytes.
const identical =
  compressions.every((c) => new Set(runs.filter((r) => r.name.startsWith(`${c}-`)).map((r) => r.result.sha256)).size === 1) &&
  new Set(shared.map((r) => r.result.sha256)).size === 1 &&
  new Set(runtimeBuilds.map((r) => r.sha256)).size === 1;
const runtimeImage = runtimeBuilds[0]!;

const rows = [
  { name: 'baseline find|cpio|gzip -9', seconds: baselineSeconds, bytes: baselineBytes },
  ...runs.map((r) => ({ name: `volar single ${r.name}`, seconds: r.seconds, bytes: r.result.imageBytes })),
  ...shared.map((r) => ({ name: `volar ${r.name} (${exampleCompression})`, seconds: r.seconds, bytes: r.result.imageBytes })),
  { name: 'runtime image (erofs)', seconds: runtimeImage.seconds, bytes: runtimeImage.image.bytes },
];
console.log('build                                time (s)   ×base   size (MB)   ×base');
for (const r of rows) {
  console.log(
    `${r.name.padEnd(36)} ${r.seconds.toFixed(2).padStart(8)} ${(r.seconds / baselineSeconds).toFixed(3).padStart(7)} ${(r.bytes / 1e6).toFixed(2).padStart(11)} ${(r.bytes / baselineBytes).toFixed(3).padStart(7)}`,
  );
}
console.log(`shared layout: the plugin image is ${(by('gzip-warm').result.imageBytes / shared[1]!.result.imageBytes).toFixed(0)}× smaller than the single-file gzip image; the runtime image is made once per host and kernel`);
console.log(
  `byte-identical rebuilds: ${identical ? 'yes' : 'NO'} (${compressions.map((c) => `${c} ${by(`${c}-cold`).result.sha256.slice(0, 16)}…`).join(', ')}, shared ${shared[0]!.result.sha256.slice(0, 16)}…, runtime ${runtimeImage.sha256.slice(0, 16)}…)`,
);
console.log(
  JSON.stringify({
    bench: 'initramfs',
    baseline: { seconds: baselineSeconds, bytes: baselineBytes },
    runs: Object.fromEntries(runs.map((r) => [r.name, { seconds: r.seconds, bytes: r.result.imageBytes, time_ratio: r.seconds / baselineSeconds, size_ratio: r.result.imageBytes / baselineBytes }])),
    example: {
      compression: exampleCompression,
      warm_time_ratio: by(`${exampleCompression}-warm`).seconds / baselineSeconds,
      cold_time_ratio: by(`${exampleCompression}-cold`).seconds / baselineSeconds,
      size_ratio: by(`${exampleCompression}-warm`).result.imageBytes / baselineBytes,
    },
    shared: {
      compression: exampleCompression,
      cold: { seconds: shared[0]!.seconds, bytes: shared[0]!.result.imageBytes },
      warm: { seconds: shared[1]!.seconds, bytes: shared[1]!.result.imageBytes },
      warm_time_ratio: shared[1]!.seconds / baselineSeconds,
      cold_time_ratio: shared[0]!.seconds / baselineSeconds,
      size_ratio: shared[1]!.result.imageBytes / baselineBytes,
    },
    runtime_image: { seconds: runtimeImage.seconds, bytes: runtimeImage.image.bytes, hash: runtimeImage.image.hash, time_ratio: runtimeImage.seconds / baselineSeconds },
    warm_time_ratio_gzip: by('gzip-warm').seconds / baselineSeconds,
    size_ratio_gzip: by('gzip-warm').result.imageBytes / baselineBytes,
    size_ratio_zstd: by('zstd-warm').result.imageBytes / baselineBytes,
    byte_identical: identical,
  }),
);
