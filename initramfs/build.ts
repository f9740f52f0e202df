/**
 * `buildPlugin`: turns a plugin folder (plugin.json + volant.build.json + workload files) and a
 * kernel into `OUT_DIR/initramfs.img` + `OUT_DIR/plugin.json` (layout in notes/CONTRACTS.md).
 *
 * The image is two concatenated compressed cpio archives, which the kernel unpacks in order:
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

import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, posix, resolve, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { ValidationError, VolantError } from '../shared/errors.js';
import { type PluginManifest, validateManifest } from '../shared/schema/manifest.js';
import { BUILD_FILE_NAME, type BuildFile, type Compression, parseBuildFile } from './build-file.js';
import { defaultCacheDir, pruneCache } from './cache.js';
import { compressionSuffix, compressor, GZIP_LEVEL, ZSTD_LEVEL, ZSTD_WORKERS } from './compress.js';
import { type CpioEntry, sourceDateEpoch, writeCpio } from './cpio.js';
import { resolveElfClosure } from './elf.js';
import { bundleKestrel } from './kestrel-bundle.js';
import { DEFAULT_MODULES, moduleImagePath, resolveModules } from './modules.js';
import { strippedCopy } from './strip.js';
import { ImageTree, type Layer } from './tree.js';

export const MANIFEST_FILE_NAME = 'plugin.json';
export const IMAGE_FILE_NAME = 'initramfs.img';
/** Bumped whenever the layout or the writer changes, so stale cached runtime members are not reused. */
export const IMAGE_FORMAT_VERSION = 1;
const MAX_MANIFEST_BYTES = 1024 * 1024;
const MAX_WORKLOAD_FILES = 100_000;
/** Inodes of the plugin member start here so they never collide with the runtime member's. */
const PLUGIN_FIRST_INODE = 0x0100_0000;
/** Runtime members kept in the cache (one per set of host files / compression in use). */
const CACHE_KEEP_MEMBERS = 4;
const PROGRESS_INTERVAL_MS = 250;

export const NODE_BINARY = '/usr/bin/node';
export const BUSYBOX_BINARY = '/bin/busybox';

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
  /** kestrel entry point (default `<repo>/guest/main.ts`). */
  kestrelEntry?: string;
  /** native addon (default `<repo>/native/build/Release/volant_native.node`). */
  nativeAddon?: string;
  /** mtime of every entry (default SOURCE_DATE_EPOCH or 0). */
  mtime?: number;
  /** Carry a deterministically stripped copy of node (default true; see strip.ts). */
  stripNode?: boolean;
  /** Progress lines for long steps. */
  progress?: (step: string) => void;
}

export interface BuildItem {
  what: string;
  files: number;
  bytes: number;
}

export interface BuildResult {
  image: string;
  manifest: string;
  sha256: string;
  imageBytes: number;
  compression: Compression;
  runtimeCached: boolean;
  items: BuildItem[];
  members: { layer: Layer; bytes: number }[];
}

/** The repository root: the nearest ancestor of this module holding guest/ and native/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..');
}

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    const st = await stat(file);
    if (st.size > MAX_MANIFEST_BYTES) throw new VolantError('INVALID_ARGUMENT', `${file} is ${st.size} bytes; ${what} may be at most ${MAX_MANIFEST_BYTES}`);
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (e instanceof VolantError) throw e;
    throw new VolantError('NOT_FOUND', `${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ValidationError(`${what} ${file}`, [{ path: '/', message: `not valid JSON: ${(e as Error).message}` }]);
  }
}

/** Reads and validates plugin.json; throws ValidationError naming the file. */
export async function loadManifest(pluginDir: string): Promise<PluginManifest> {
  const file = join(pluginDir, MANIFEST_FILE_NAME);
  const result = validateManifest(await readJson(file, 'plugin manifest'));
  if (!result.ok) throw new ValidationError(`plugin manifest ${file}`, result.problems);
  return result.value;
}

/** Reads volant.build.json (optional: absent means no workload files and defaults). */
export async function loadBuildFile(pluginDir: string): Promise<BuildFile> {
  const file = join(pluginDir, BUILD_FILE_NAME);
  if (!existsSync(file)) return {};
  return parseBuildFile(await readJson(file, 'build file'), file);
}

function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * Stages `from` (a file or folder inside the plugin) at image path `to`, refusing escapes.
 * The output folder is skipped (it defaults to DIR/build), so an old image never goes into a new one.
 */
async function stageWorkload(tree: ImageTree, pluginRoot: string, from: string, to: string, index: number, outDir: string): Promise<number> {
  const where = `files/${index} (${from})`;
  let count = 0;
  const visit = async (host: string, image: string, seenDirs: Set<string>): Promise<void> => {
    let real: string;
    try {
      real = await realpath(host);
    } catch (e) {
      throw new VolantError('NOT_FOUND', `${where}: ${host} does not exist or is a dangling symlink (${(e as NodeJS.ErrnoException).code})`);
    }
    if (!isInside(pluginRoot, real)) {
      throw new VolantError('FORBIDDEN', `${where}: ${host} resolves to ${real}, outside the plugin folder ${pluginRoot}`);
    }
    if (isInside(outDir, real)) return;
    const st = await stat(real);
    if (st.isDirectory()) {
      if (seenDirs.has(real)) throw new VolantError('INVALID_ARGUMENT', `${where}: symlink loop at ${host}`);
      const nextSeen = new Set(seenDirs).add(real);
      tree.addDir(image, 'plugin');
      for (const name of (await readdir(host)).sort()) await visit(join(host, name), posix.join(image, name), nextSeen);
      return;
    }
    if (!st.isFile()) throw new VolantError('INVALID_ARGUMENT', `${where}: ${host} is not a regular file or folder`);
    if (++count > MAX_WORKLOAD_FILES) throw new VolantError('INVALID_ARGUMENT', `${where}: more than ${MAX_WORKLOAD_FILES} files`);
    await tree.addHostFile(image, real, 'plugin', { dereference: true });
  };
  await visit(join(pluginRoot, from), to, new Set());
  return count;
}

/** The applet paths (`/bin/sh`, `/sbin/ip`, ...) the host busybox reports with `--list-full`. */
export async function busyboxApplets(busybox: string): Promise<string[]> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { stdout } = await promisify(execFile)(busybox, ['--list-full']).catch((e: Error) => {
    throw new VolantError('SYSTEM_COMMAND_FAILED', `${busybox} --list-full failed: ${e.message}`);
  });
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.includes('..'))
    .map((l) => `/${l}`)
    .sort();
}

const INIT_SCRIPT = '#!/bin/sh\nexec /usr/bin/node /lib/volant/kestrel.mjs\n';
const ETC_FILES: Record<string, string> = {
  '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  '/etc/group': 'root:x:0:\nnogroup:x:65534:\n',
  '/etc/hosts': '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  '/etc/resolv.conf': '# kestrel writes the resolvers from volant.dns= at boot\n',
  '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
};
const MOUNT_POINTS = ['/proc', '/sys', '/dev', '/run', '/root', '/var'];

interface Staging {
  tree: ImageTree;
  items: BuildItem[];
}

interface RuntimeInputs {
  modulesDir: string;
  kernelVersion: string;
  nativeAddon: string;
  cacheDir: string;
  stripNode: boolean;
}

async function stageRuntime(tree: ImageTree, opts: RuntimeInputs, build: BuildFile, items: BuildItem[]): Promise<string[]> {
  const closure = await resolveElfClosure([NODE_BINARY, opts.nativeAddon, ...(build.binaries ?? [])]);
  const node = (opts.stripNode ? await strippedCopy(NODE_BINARY, opts.cacheDir) : undefined) ?? NODE_BINARY;
  await tree.addHostFile(NODE_BINARY, node, 'runtime', { dereference: true });
  const libraries = [...(closure.interpreter ? [closure.interpreter] : []), ...closure.libraries];
  for (const f of libraries) await tree.addHostFile(f, f, 'runtime');
  for (const b of build.binaries ?? []) await tree.addHostFile(b, b, 'runtime');
  items.push({
    what: `node${node === NODE_BINARY ? '' : ' (stripped)'} + ${closure.libraries.length} libraries`,
    files: libraries.length + 1,
    bytes: await sumSizes([node, ...libraries]),
  });

  await tree.addHostFile(BUSYBOX_BINARY, BUSYBOX_BINARY, 'runtime', { dereference: true });
  const applets = await busyboxApplets(BUSYBOX_BINARY);
  for (const a of applets) if (!tree.has(a)) tree.addSymlink(a, BUSYBOX_BINARY, 'runtime', 'busybox applet');
  items.push({ what: `busybox + ${applets.length} applets`, files: 1, bytes: (await stat(BUSYBOX_BINARY)).size });

  await tree.addHostFile('/lib/volant/volant_native.node', opts.nativeAddon, 'runtime', { dereference: true });
  items.push({ what: 'native addon', files: 1, bytes: (await stat(opts.nativeAddon)).size });

  const mods = await resolveModules(opts.modulesDir, [...new Set([...DEFAULT_MODULES, ...(build.modules ?? [])])]);
  const loadList = mods.modules.map((m) => moduleImagePath(opts.kernelVersion, m));
  for (const [i, m] of mods.modules.entries()) await tree.addHostFile(loadList[i]!, m.path, 'runtime', { dereference: true });
  items.push({ what: `kernel modules (${opts.kernelVersion})`, files: mods.modules.length, bytes: await sumSizes(mods.modules.map((m) => m.path)) });
  return loadList;
}

async function sumSizes(files: string[]): Promise<number> {
  let total = 0;
  for (const f of new Set(files)) total += (await stat(f)).size;
  return total;
}

async function stage(opts: BuildOptions, manifest: PluginManifest, build: BuildFile, pluginRoot: string, cacheDir: string, outDir: string): Promise<Staging> {
  const tree = new ImageTree();
  const items: BuildItem[] = [];
  const root = repoRoot();
  const nativeAddon = resolve(opts.nativeAddon ?? join(root, 'native', 'build', 'Release', 'volant_native.node'));
  if (!existsSync(nativeAddon)) throw new VolantError('NOT_FOUND', `native addon ${nativeAddon} is missing (build it with \`npm run install\` or node-gyp)`);
  opts.progress?.('resolving node libraries, busybox and kernel modules');
  const inputs = { modulesDir: opts.modulesDir, kernelVersion: opts.kernelVersion, nativeAddon, cacheDir, stripNode: opts.stripNode !== false };
  const loadList = await stageRuntime(tree, inputs, build, items);

  opts.progress?.('bundling kestrel');
  const kestrel = await bundleKestrel(resolve(opts.kestrelEntry ?? join(root, 'guest', 'main.ts')));
  tree.addBytes('/lib/volant/kestrel.mjs', kestrel, 'plugin', 0o644, 'kestrel bundle');
  items.push({ what: 'kestrel bundle', files: 1, bytes: kestrel.length });

  tree.addBytes('/init', INIT_SCRIPT, 'plugin', 0o755, '/init');
  for (const [path, text] of Object.entries(ETC_FILES)) tree.addBytes(path, text, 'plugin');
  for (const d of MOUNT_POINTS) tree.addDir(d, 'plugin');
  tree.addDir('/tmp', 'plugin', 0o1777);
  tree.addBytes('/etc/volant/plugin.json', `${JSON.stringify(manifest, null, 2)}\n`, 'plugin');
  tree.addBytes('/etc/volant/modules.load', loadList.map((l) => `${l}\n`).join(''), 'plugin');

  let workloadFiles = 0;
  const before = tree.sizes().plugin.bytes;
  for (const [i, f] of (build.files ?? []).entries()) workloadFiles += await stageWorkload(tree, pluginRoot, f.from, f.to, i, outDir);
  items.push({ what: 'workload files', files: workloadFiles, bytes: tree.sizes().plugin.bytes - before });
  return { tree, items };
}

/** Reports the share of `total` bytes that passed, at most every PROGRESS_INTERVAL_MS. */
function progressMeter(total: number, report: ((percent: number) => void) | undefined): Transform {
  let seen = 0;
  let last = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      const now = Date.now();
      if (report && now - last >= PROGRESS_INTERVAL_MS) {
        last = now;
        report(Math.min(100, Math.floor((seen / Math.max(total, 1)) * 100)));
      }
      done(null, chunk);
    },
  });
}

async function writeMember(
  entries: CpioEntry[],
  compression: Compression,
  file: string,
  o: { mtime: number; firstInode: number; totalBytes: number; report?: (percent: number) => void },
): Promise<void> {
  await pipeline(
    Readable.from(writeCpio(entries, { mtime: o.mtime, firstInode: o.firstInode })),
    progressMeter(o.totalBytes, o.report),
    compressor(compression),
    createWriteStream(file),
  );
}

/** What else decides the runtime member's bytes besides its entries. */
async function compressorIdentity(c: Compression): Promise<string> {
  if (c === 'gzip') return `gzip-zlib-${process.versions.zlib}-${GZIP_LEVEL}`;
  if (c === 'none') return 'none';
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { stdout } = await promisify(execFile)('zstd', ['--version']).catch(() => ({ stdout: 'zstd-missing' }));
  return `${stdout.trim()}-${ZSTD_LEVEL}-T${ZSTD_WORKERS}`;
}

async function concatInto(target: string, parts: string[]): Promise<void> {
  const out = createWriteStream(target);
  for (const p of parts) await pipeline(createReadStream(p), out, { end: false });
  await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
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
  const { tree, items } = await stage(opts, manifest, build, pluginRoot, cacheDir, outReal);
  const fp = createHash('sha256')
    .update(JSON.stringify({ format: IMAGE_FORMAT_VERSION, compressor: await compressorIdentity(compression), mtime, entries: await tree.fingerprint('runtime') }))
    .digest('hex');
  const runtimeMember = join(cacheDir, `runtime-${fp}.cpio.${compressionSuffix(compression)}`);
  const runtimeCached = existsSync(runtimeMember);
  const tmpTag = `${process.pid}-${Date.now()}`;
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

  await mkdir(outDir, { recursive: true });
  const pluginTmp = join(outDir, `.plugin-member.tmp-${tmpTag}`);
  const imageTmp = join(outDir, `.${IMAGE_FILE_NAME}.tmp-${tmpTag}`);
  const manifestTmp = join(outDir, `.${MANIFEST_FILE_NAME}.tmp-${tmpTag}`);
  try {
    opts.progress?.('writing the plugin archive');
    await writeMember(tree.entries('plugin'), compression, pluginTmp, { mtime, firstInode: PLUGIN_FIRST_INODE, totalBytes: tree.sizes().plugin.bytes });
    await concatInto(imageTmp, [runtimeMember, pluginTmp]);
    await writeFile(manifestTmp, `${JSON.stringify(manifest, null, 2)}\n`);
    const members = [
      { layer: 'runtime' as Layer, bytes: (await stat(runtimeMember)).size },
      { layer: 'plugin' as Layer, bytes: (await stat(pluginTmp)).size },
    ];
    const sha256 = await sha256File(imageTmp);
    const image = join(outDir, IMAGE_FILE_NAME);
    const manifestOut = join(outDir, MANIFEST_FILE_NAME);
    await rename(imageTmp, image);
    await rename(manifestTmp, manifestOut);
    return { image, manifest: manifestOut, sha256, imageBytes: (await stat(image)).size, compression, runtimeCached, items, members };
  } finally {
    await Promise.all([pluginTmp, imageTmp, manifestTmp].map((f) => rm(f, { force: true })));
  }
}
