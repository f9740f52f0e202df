/**
 * The shared runtime image (docs/runtime-image.md): node with its ELF closure, busybox and its
 * applets, the native addon and the kernel modules, as one read-only erofs file that every VM of
 * the host attaches (virtio-pmem with DAX, or a read-only virtio-blk disk).
 *
 * What must hold:
 * - Content-addressed: the name is the sha256 of what decides its bytes (format version, the
 *   mkfs.erofs version and flags, every path with its mode, link target or content hash), so one
 *   host+kernel builds it once and a plugin's manifest can name the runtime it needs.
 * - Byte-reproducible: a staged copy with normalized modes, fixed timestamps (`-T0`), all files
 *   owned by root, no xattrs, a UUID derived from the hash; rebuilt on another day, it is identical.
 * - DAX-capable: `-Enoinline_data` (with tail inlining the mount still says dax=always, yet no
 *   file is DAX), and the file is padded to a multiple of 2 MiB (the guest's nd_pmem refuses a
 *   misaligned region; Cloud Hypervisor refuses it outright).
 * - Appears only complete: written to a temp name beside it, then renamed.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rename, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { VolantError } from '../shared/errors.js';
import { RUNTIME_ALIGN_BYTES, RUNTIME_SUFFIX } from '../shared/runtime-image.js';
import { defaultCacheDir } from './cache.js';
import { sha256File } from './member.js';
import { hostNativeAddon, type RuntimeInputs, stageRuntime } from './stage.js';
import { ImageTree } from './tree.js';

const execFileP = promisify(execFile);

/** Bumped whenever the runtime's layout or the way it is written changes. */
export const RUNTIME_FORMAT_VERSION = 1;
const MKFS = 'mkfs.erofs';
const MKFS_FLAGS = ['-T0', '--all-root', '-x-1', '-Enoinline_data', '--quiet'];
const MKFS_TIMEOUT_MS = 5 * 60_000;

export interface RuntimeImageOptions {
  kernelVersion: string;
  modulesDir: string;
  /** Where images are kept: `<dir>/<hash>.erofs` (volantd: `<state_dir>/runtimes`). */
  dir: string;
  /** The stripped-node cache (default VOLANT_BUILD_CACHE or ~/.cache/volant/initramfs). */
  cacheDir?: string;
  nativeAddon?: string;
  stripNode?: boolean;
  /** Extra host programs (a build file's `binaries`); they make a different runtime. */
  binaries?: string[];
  /** Extra kernel modules (a build file's `modules`); they make a different runtime. */
  modules?: string[];
  progress?: (step: string) => void;
}

export interface RuntimeImage {
  path: string;
  /** sha256 of the inputs (hex); the file is `<hash>.erofs`. */
  hash: string;
  version: number;
  bytes: number;
}

/** A staged runtime (layer `runtime` of `tree`) and its content hash. */
export interface PreparedRuntime {
  tree: ImageTree;
  hash: string;
}

/** `mkfs.erofs 1.5`: it prints its version on stdout at every run. */
export async function mkfsVersion(): Promise<string> {
  try {
    await execFileP(MKFS, []);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string };
    if (err.code === 'ENOENT') throw new VolantError('NOT_SUPPORTED', `${MKFS} is not installed (Debian: apt-get install erofs-utils; scripts/install-deps.sh does it)`);
    const m = /mkfs\.erofs\s+(\S+)/.exec(err.stdout ?? '');
    if (m) return m[1]!;
  }
  throw new VolantError('SYSTEM_COMMAND_FAILED', `cannot tell the version of ${MKFS}`);
}

/** The content hash of a staged runtime: what decides the image's bytes. */
export async function runtimeHash(tree: ImageTree, mkfs: string): Promise<string> {
  const h = createHash('sha256').update(`volant-runtime ${RUNTIME_FORMAT_VERSION}\nmkfs.erofs ${mkfs} ${MKFS_FLAGS.join(' ')} pad ${RUNTIME_ALIGN_BYTES}\n`);
  const contentOf = new Map<string, string>();
  for (const e of tree.entries('runtime').sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (e.type === 'dir') h.update(`d ${e.path} ${e.mode}\n`);
    else if (e.type === 'symlink') h.update(`l ${e.path} ${e.target}\n`);
    else if (e.source.kind === 'bytes') h.update(`b ${e.path} ${e.mode} ${createHash('sha256').update(e.source.data).digest('hex')}\n`);
    else {
      const src = e.source.path;
      const digest = contentOf.get(src) ?? (await sha256File(src));
      contentOf.set(src, digest);
      h.update(`f ${e.path} ${e.mode} ${digest}\n`);
    }
  }
  return h.digest('hex');
}

/** The runtime's inputs on this host, staged and hashed (nothing written but the stripped-node cache). */
export async function prepareRuntime(opts: Omit<RuntimeImageOptions, 'dir'> & { nativeAddon: string; cacheDir: string }): Promise<PreparedRuntime> {
  const inputs: RuntimeInputs = {
    kernelVersion: opts.kernelVersion,
    modulesDir: opts.modulesDir,
    nativeAddon: opts.nativeAddon,
    cacheDir: opts.cacheDir,
    stripNode: opts.stripNode !== false,
    ...(opts.binaries?.length ? { binaries: opts.binaries } : {}),
    ...(opts.modules?.length ? { modules: opts.modules } : {}),
  };
  const tree = new ImageTree();
  await stageRuntime(tree, inputs, []);
  return { tree, hash: await runtimeHash(tree, await mkfsVersion()) };
}

/** A UUID from the hash, so the superblock is reproducible and still tells runtimes apart. */
function uuidOf(hash: string): string {
  return `${hash.slice(0, 8)}-${hash.slice(8, 12)}-${hash.slice(12, 16)}-${hash.slice(16, 20)}-${hash.slice(20, 32)}`;
}

/** Copies the runtime tree to `root` with its image modes (host modes and owners do not leak in). */
async function materialize(tree: ImageTree, root: string): Promise<void> {
  const entries = tree.entries('runtime').sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const e of entries) {
    const at = join(root, e.path);
    if (e.type === 'dir') await mkdir(at, { recursive: true });
    else if (e.type === 'symlink') await symlink(e.target, at);
    else {
      if (e.source.kind === 'host') await copyFile(e.source.path, at);
      else await writeFile(at, e.source.data);
      await chmod(at, e.mode);
    }
  }
  for (const e of entries.filter((x) => x.type === 'dir')) await chmod(join(root, e.path), e.mode);
  await chmod(root, 0o755);
}

/** Writes the image of a prepared runtime to `path` (temp name, then rename). */
export async function writeRuntimeImage(prepared: PreparedRuntime, path: string): Promise<void> {
  const dir = resolve(path, '..');
  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(dir, '.runtime-build-'));
  const tmp = join(work, 'image.erofs');
  try {
    const root = join(work, 'root');
    await mkdir(root);
    await materialize(prepared.tree, root);
    try {
      await execFileP(MKFS, [...MKFS_FLAGS, `-U${uuidOf(prepared.hash)}`, tmp, root], { timeout: MKFS_TIMEOUT_MS, maxBuffer: 16 << 20 });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new VolantError('SYSTEM_COMMAND_FAILED', `${MKFS} failed: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' | ')}`);
    }
    const size = (await stat(tmp)).size;
    await truncate(tmp, Math.ceil(size / RUNTIME_ALIGN_BYTES) * RUNTIME_ALIGN_BYTES);
    await chmod(tmp, 0o444);
    await rename(tmp, path);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export const runtimeImagePath = (dir: string, hash: string): string => join(resolve(dir), `${hash}${RUNTIME_SUFFIX}`);

/**
 * The runtime image for this host and kernel in `opts.dir`: found by its hash, else built.
 * Returns its path, hash, format version and size.
 */
export async function ensureRuntimeImage(opts: RuntimeImageOptions): Promise<RuntimeImage> {
  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir());
  await mkdir(cacheDir, { recursive: true });
  opts.progress?.('resolving the runtime (node, libraries, busybox, modules)');
  const prepared = await prepareRuntime({ ...opts, cacheDir, nativeAddon: hostNativeAddon(opts.nativeAddon) });
  return ensurePrepared(prepared, opts.dir, opts.progress);
}

/** Builds the image of `prepared` in `dir` unless it is there already. */
export async function ensurePrepared(prepared: PreparedRuntime, dir: string, progress?: (step: string) => void): Promise<RuntimeImage> {
  const path = runtimeImagePath(dir, prepared.hash);
  if (!existsSync(path)) {
    progress?.(`writing the runtime image (${(prepared.tree.sizes().runtime.bytes / 1e6).toFixed(1)} MB, erofs)`);
    await writeRuntimeImage(prepared, path);
  }
  return { path, hash: prepared.hash, version: RUNTIME_FORMAT_VERSION, bytes: (await stat(path)).size };
}
