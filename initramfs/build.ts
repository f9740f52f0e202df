/**
 * `buildPlugin`: turns a plugin folder (plugin.json + volant.build.json + workload files) and a
 * kernel into `OUT_DIR/initramfs.img` + `OUT_DIR/plugin.json` (layout in docs/CONTRACTS.md).
 *
 * Layout `shared` (default, docs/runtime-image.md): the runtime goes into the shared read-only
 * runtime image (runtime-image.ts, found or built in `runtimeDir`), and the initramfs is one small
 * compressed cpio: stage-1 (stage1.ts), kestrel, /etc, the manifest and the workload files. The
 * output plugin.json records the runtime it needs (`image.runtime`: hash and format version).
 *
 * Layout `single`: everything in the initramfs, for VMMs with neither pmem nor disks. The image is
 * two concatenated compressed cpio archives, which the kernel unpacks in order:
 * 1. runtime: Node and its libraries, busybox and its applets, the kernel modules, the native
 *    addon. It is the same for every plugin built with the same host files, so it is cached by a
 *    fingerprint of its entries (paths, modes and host file identity incl. size/mtime/ctime).
 * 2. plugin: /init, the kestrel bundle, /etc, the manifest, modules.load and the workload files.
 *
 * What must hold:
 * - Same inputs → byte-identical image (sorted entries, fixed mtime from SOURCE_DATE_EPOCH,
 *   deterministic compressors), whether the runtime member came from the cache or not.
 * - All validation (manifest, build file, paths, symlinks, modules) happens before anything is
 *   written; outputs are written to temp files and renamed, so a failure leaves no partial image.
 */

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { VolantError } from '../shared/errors.js';
import { MIN_MEMORY_MB } from '../shared/schema/manifest.js';
import type { Compression } from './build-file.js';
import { defaultCacheDir, pruneCache } from './cache.js';
import { compressionSuffix } from './compress.js';
import { sourceDateEpoch } from './cpio.js';
import { compressorIdentity, concatInto, sha256File, writeMember } from './member.js';
import { loadBuildFile, loadManifest, MANIFEST_FILE_NAME } from './plugin-input.js';
import { ensurePrepared, mkfsVersion, type RuntimeImage, runtimeHash, runtimeImagePath } from './runtime-image.js';
import { type BuildItem, type Layout, stage } from './stage.js';
import type { Layer } from './tree.js';

export { MANIFEST_FILE_NAME } from './plugin-input.js';
export type { BuildItem, Layout } from './stage.js';

export const IMAGE_FILE_NAME = 'initramfs.img';
/** Bumped whenever the layout or the writer changes, so stale cached runtime members are not reused. */
export const IMAGE_FORMAT_VERSION = 1;
/** Inodes of the plugin member start here so they never collide with the runtime member's. */
const PLUGIN_FIRST_INODE = 0x0100_0000;
/** Runtime members kept in the cache (one per set of host files / compression in use). */
const CACHE_KEEP_MEMBERS = 4;

export interface BuildOptions {
  /** The plugin folder. */
  pluginDir: string;
  /** Output folder (default `<pluginDir>/build`). */
  outDir?: string;
  kernelVersion: string;
  modulesDir: string;
  compression?: Compression;
  /** Where the runtime member is cached (default VOLANT_BUILD_CACHE or ~/.cache/volant/initramfs). */
  cacheDir?: string;
  /** kestrel entry point (default `<repo>/guest/main.ts`, or dist/guest/main.js in an installed package). */
  kestrelEntry?: string;
  /** native addon (default: the file native/addon.ts resolves on this host). */
  nativeAddon?: string;
  /** mtime of every entry (default SOURCE_DATE_EPOCH or 0). */
  mtime?: number;
  /** Carry a deterministically stripped copy of node (default true; see strip.ts). */
  stripNode?: boolean;
  /** `shared` (default): small initramfs + the shared runtime image; `single`: all in the initramfs. */
  layout?: Layout;
  /** `shared`: where the runtime image is found or built (default `<cacheDir>/runtimes`). */
  runtimeDir?: string;
  /** Progress lines for long steps. */
  progress?: (step: string) => void;
}

export interface BuildResult {
  image: string;
  manifest: string;
  sha256: string;
  imageBytes: number;
  compression: Compression;
  layout: Layout;
  /** `shared`: the runtime image the plugin needs (also recorded in the output plugin.json). */
  runtime?: RuntimeImage;
  /** The least guest memory the image needs (plugin.json `image.min_memory_mb`). */
  minMemoryMb: number;
  /** The runtime (member or image) was there already and not rebuilt. */
  runtimeCached: boolean;
  items: BuildItem[];
  members: { layer: Layer; bytes: number }[];
}

/** Builds a plugin image. See the module comment for what holds. */
export async function buildPlugin(opts: BuildOptions): Promise<BuildResult> {
  const pluginDir = resolve(opts.pluginDir);
  let pluginRoot: string;
  try {
    pluginRoot = await realpath(pluginDir);
    if (!(await lstat(pluginRoot)).isDirectory()) throw new Error('not a directory');
  } catch (e) {
    throw new VolantError('NOT_FOUND', `plugin folder ${pluginDir} cannot be read: ${(e as Error).message}`);
  }
  const manifest = await loadManifest(pluginDir);
  const build = await loadBuildFile(pluginDir);
  const compression = opts.compression ?? build.compression ?? 'gzip';
  const mtime = opts.mtime ?? sourceDateEpoch();
  const outDir = resolve(opts.outDir ?? join(pluginDir, 'build'));

  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir());
  await mkdir(cacheDir, { recursive: true });
  const outReal = await realpath(outDir).catch(() => outDir);
  const layout = opts.layout ?? 'shared';
  const { tree, items, runtime: staged } = await stage({ ...opts, layout }, manifest, build, pluginRoot, cacheDir, outReal);
  const tmpTag = `${process.pid}-${Date.now()}`;
  let runtime: RuntimeImage | undefined;
  let runtimeMember: string | undefined;
  let runtimeCached: boolean;
  if (staged) {
    const prepared = { tree: staged.tree, hash: await runtimeHash(staged.tree, await mkfsVersion()) };
    const runtimeDir = resolve(opts.runtimeDir ?? join(cacheDir, 'runtimes'));
    runtimeCached = existsSync(runtimeImagePath(runtimeDir, prepared.hash));
    runtime = await ensurePrepared(prepared, runtimeDir, opts.progress);
  } else {
    const fp = createHash('sha256')
      .update(JSON.stringify({ format: IMAGE_FORMAT_VERSION, compressor: await compressorIdentity(compression), mtime, entries: await tree.fingerprint('runtime') }))
      .digest('hex');
    runtimeMember = join(cacheDir, `runtime-${fp}.cpio.${compressionSuffix(compression)}`);
    runtimeCached = existsSync(runtimeMember);
    if (!runtimeCached) {
      const total = tree.sizes().runtime.bytes;
      const step = `compressing the runtime (${(total / 1e6).toFixed(1)} MB, ${compression}; cached afterwards)`;
      opts.progress?.(step);
      const tmp = `${runtimeMember}.tmp-${tmpTag}`;
      try {
        await writeMember(tree.entries('runtime'), compression, tmp, { mtime, firstInode: 1, totalBytes: total, report: (pct) => opts.progress?.(`${step} ${pct}%`) });
        await rename(tmp, runtimeMember);
      } finally {
        await rm(tmp, { force: true });
      }
      await pruneCache(cacheDir, /^runtime-[0-9a-f]{64}\.cpio\.\w+$/, CACHE_KEEP_MEMBERS, runtimeMember);
    }
  }

  await mkdir(outDir, { recursive: true });
  const pluginTmp = join(outDir, `.plugin-member.tmp-${tmpTag}`);
  const imageTmp = join(outDir, `.${IMAGE_FILE_NAME}.tmp-${tmpTag}`);
  const manifestTmp = join(outDir, `.${MANIFEST_FILE_NAME}.tmp-${tmpTag}`);
  try {
    opts.progress?.('writing the plugin archive');
    await writeMember(tree.entries('plugin'), compression, pluginTmp, { mtime, firstInode: PLUGIN_FIRST_INODE, totalBytes: tree.sizes().plugin.bytes });
    await concatInto(imageTmp, runtimeMember ? [runtimeMember, pluginTmp] : [pluginTmp]);
    const sizes = tree.sizes();
    const minMemoryMb = imageMinMemoryMb(sizes.plugin.bytes + (runtimeMember ? sizes.runtime.bytes : 0), (await stat(imageTmp)).size);
    const image$ = {
      layout,
      ...(runtime ? { runtime: { hash: runtime.hash, version: runtime.version, ...(build.binaries?.length ? { binaries: build.binaries } : {}), ...(build.modules?.length ? { modules: build.modules } : {}) } } : {}),
      min_memory_mb: minMemoryMb,
    };
    await writeFile(manifestTmp, `${JSON.stringify({ ...manifest, image: image$ }, null, 2)}\n`);
    const members = [
      ...(runtimeMember ? [{ layer: 'runtime' as Layer, bytes: (await stat(runtimeMember)).size }] : []),
      { layer: 'plugin' as Layer, bytes: (await stat(pluginTmp)).size },
    ];
    const sha256 = await sha256File(imageTmp);
    const image = join(outDir, IMAGE_FILE_NAME);
    const manifestOut = join(outDir, MANIFEST_FILE_NAME);
    await rename(imageTmp, image);
    await rename(manifestTmp, manifestOut);
    return { image, manifest: manifestOut, sha256, imageBytes: (await stat(image)).size, compression, layout, ...(runtime ? { runtime } : {}), minMemoryMb, runtimeCached, items, members };
  } finally {
    await Promise.all([pluginTmp, imageTmp, manifestTmp].map((f) => rm(f, { force: true })));
  }
}

/**
 * Guest memory below which an image does not boot and serve (plugin.json `image.min_memory_mb`),
 * fitted to boots of examples/hello under QEMU/TCG (docs/runtime-image.md "Memory"): a fixed
 * part (kernel, kestrel and one workload process) plus twice the initramfs' unpacked bytes (the
 * tmpfs pages and the unpacking's own needs) plus its compressed bytes (held until unpacked),
 * rounded up to 16 MiB. Measured: shared layout served at 104 MiB and was OOM-killed at 96
 * (formula: 112); single layout served at 320 MiB and failed to unpack at 256 (formula: 320).
 */
export const BASE_GUEST_MEMORY_MB = 96;
const MEMORY_STEP_MB = 16;
export function imageMinMemoryMb(unpackedBytes: number, imageBytes: number): number {
  const mib = (b: number) => b / (1024 * 1024);
  const need = BASE_GUEST_MEMORY_MB + 2 * mib(unpackedBytes) + mib(imageBytes);
  return Math.max(MIN_MEMORY_MB, Math.ceil(need / MEMORY_STEP_MB) * MEMORY_STEP_MB);
}
