/**
 * Staging: decides every path of a plugin image and where its bytes come from (ImageTree), per
 * the layout in docs/CONTRACTS.md. The runtime layer: node (stripped copy) with its ELF closure,
 * busybox and its applets, the native addon, the kernel modules in load order. The plugin layer:
 * /init, the kestrel bundle, /etc, the manifest, modules.load and the workload files.
 *
 * What must hold: workload files come only from inside the plugin folder (checked on the real
 * path, through symlinks), never from the output folder, and every failure names the build file
 * entry it came from. Nothing is written here except the cached stripped node.
 */

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { dirname, join, posix, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { resolveAddonPath } from '../native/addon.js';
import { VolantError } from '../shared/errors.js';
import type { PluginManifest } from '../shared/schema/manifest.js';
import type { BuildFile } from './build-file.js';
import { resolveElfClosure } from './elf.js';
import { KESTREL_BUNDLE, KESTREL_CODE_CACHE, KESTREL_ENTRY, kestrelCodeCache, LOADER } from './code-cache.js';
import { bundleKestrel } from './kestrel-bundle.js';
import { DEFAULT_MODULES, moduleImagePath, resolveModules } from './modules.js';
import { strippedCopy } from './strip.js';
import { linkRuntime, stageStage1 } from './stage1.js';
import { ImageTree } from './tree.js';

const execFileP = promisify(execFile);

export const NODE_BINARY = '/usr/bin/node';
export const BUSYBOX_BINARY = '/bin/busybox';
export const NATIVE_ADDON_IMAGE_PATH = '/lib/volant/volant_native.node';
/** What node runs as kestrel: the code-cache loader (code-cache.ts), for /init and stage-1 alike. */
export const KESTREL_IMAGE_PATH = KESTREL_ENTRY;
const MAX_WORKLOAD_FILES = 100_000;

/** One line of the build summary. */
export interface BuildItem {
  what: string;
  files: number;
  bytes: number;
}

export interface StageOptions {
  kernelVersion: string;
  modulesDir: string;
  kestrelEntry?: string;
  nativeAddon?: string;
  stripNode?: boolean;
  /** `shared` (default): stage-1 + the runtime image; `single`: everything in the initramfs. */
  layout?: Layout;
  progress?: (step: string) => void;
}

/** Where the runtime lives: a shared read-only image (docs/runtime-image.md) or inside the initramfs. */
export type Layout = 'shared' | 'single';
export const LAYOUTS: readonly Layout[] = ['shared', 'single'];

/** The repository root: the nearest ancestor of this module holding guest/ and native/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..');
}

/** kestrel's entry point: the sources in a checkout, the compiled dist/ in an installed package. */
export function kestrelEntry(root: string): string {
  const source = join(root, 'guest', 'main.ts');
  return existsSync(source) ? source : join(root, 'dist', 'guest', 'main.js');
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
  const { stdout } = await execFileP(busybox, ['--list-full']).catch((e: Error) => {
    throw new VolantError('SYSTEM_COMMAND_FAILED', `${busybox} --list-full failed: ${e.message}`);
  });
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.includes('..'))
    .map((l) => `/${l}`)
    .sort();
}

const INIT_SCRIPT = `#!/bin/sh\nexec ${NODE_BINARY} ${KESTREL_ENTRY}\n`;
const ETC_FILES: Record<string, string> = {
  '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  '/etc/group': 'root:x:0:\nnogroup:x:65534:\n',
  '/etc/hosts': '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  '/etc/resolv.conf': '# kestrel writes the resolvers from volant.dns= at boot\n',
  '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
};
const MOUNT_POINTS = ['/proc', '/sys', '/dev', '/run', '/root', '/var'];

export interface Staging {
  tree: ImageTree;
  items: BuildItem[];
  /** `shared` layout: the runtime's own tree and what it was made from. */
  runtime?: { tree: ImageTree; inputs: RuntimeInputs };
}

/** What the runtime (node, busybox, addon, modules) is made of on this host. */
export interface RuntimeInputs {
  modulesDir: string;
  kernelVersion: string;
  nativeAddon: string;
  cacheDir: string;
  stripNode: boolean;
  /** Extra host programs (volant.build.json `binaries`), added with their libraries. */
  binaries?: string[];
  /** Kernel modules besides DEFAULT_MODULES (their dependencies are added). */
  modules?: string[];
}

/** The native addon this host loads (a source build, else the packed prebuilt one), checked. */
export function hostNativeAddon(explicit?: string): string {
  const addonFile = explicit ?? resolveAddonPath();
  if (addonFile === undefined) throw new VolantError('NOT_FOUND', 'the native addon is missing (build it from source with `npm rebuild volant --build-from-source`, or `npm install` in a checkout)');
  const nativeAddon = resolve(addonFile);
  if (!existsSync(nativeAddon)) throw new VolantError('NOT_FOUND', `native addon ${nativeAddon} is missing (build it with \`npm run install\` or node-gyp)`);
  return nativeAddon;
}

/**
 * Stages the runtime layer into `tree`: node (stripped copy) + ELF closure, busybox + applets,
 * the addon at /lib/volant, the kernel modules in load order. Returns the modules' image paths
 * in load order (the contents of /etc/volant/modules.load).
 */
export async function stageRuntime(tree: ImageTree, opts: RuntimeInputs, items: BuildItem[]): Promise<string[]> {
  const binaries = opts.binaries ?? [];
  const closure = await resolveElfClosure([NODE_BINARY, opts.nativeAddon, ...binaries]);
  const node = (opts.stripNode ? await strippedCopy(NODE_BINARY, opts.cacheDir) : undefined) ?? NODE_BINARY;
  await tree.addHostFile(NODE_BINARY, node, 'runtime', { dereference: true });
  const libraries = [...(closure.interpreter ? [closure.interpreter] : []), ...closure.libraries];
  for (const f of libraries) await tree.addHostFile(f, f, 'runtime');
  for (const b of binaries) await tree.addHostFile(b, b, 'runtime');
  items.push({
    what: `node${node === NODE_BINARY ? '' : ' (stripped)'} + ${closure.libraries.length} libraries`,
    files: libraries.length + 1,
    bytes: await sumSizes([node, ...libraries]),
  });

  await tree.addHostFile(BUSYBOX_BINARY, BUSYBOX_BINARY, 'runtime', { dereference: true });
  const applets = await busyboxApplets(BUSYBOX_BINARY);
  for (const a of applets) if (!tree.has(a)) tree.addSymlink(a, BUSYBOX_BINARY, 'runtime', 'busybox applet');
  items.push({ what: `busybox + ${applets.length} applets`, files: 1, bytes: (await stat(BUSYBOX_BINARY)).size });

  await tree.addHostFile(NATIVE_ADDON_IMAGE_PATH, opts.nativeAddon, 'runtime', { dereference: true });
  items.push({ what: 'native addon', files: 1, bytes: (await stat(opts.nativeAddon)).size });

  const mods = await resolveModules(opts.modulesDir, [...new Set([...DEFAULT_MODULES, ...(opts.modules ?? [])])]);
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

/**
 * Stages a plugin image. `single`: one tree, runtime and plugin layers (two cpio members).
 * `shared`: the runtime goes to its own tree (the erofs image, runtime-image.ts) and the plugin
 * tree gets the stage-1 (stage1.ts) plus links into the mounted runtime.
 */
export async function stage(opts: StageOptions, manifest: PluginManifest, build: BuildFile, pluginRoot: string, cacheDir: string, outDir: string): Promise<Staging> {
  const layout = opts.layout ?? 'shared';
  const tree = new ImageTree();
  const items: BuildItem[] = [];
  const root = repoRoot();
  const nativeAddon = hostNativeAddon(opts.nativeAddon);
  opts.progress?.('resolving node libraries, busybox and kernel modules');
  const inputs: RuntimeInputs = {
    modulesDir: opts.modulesDir,
    kernelVersion: opts.kernelVersion,
    nativeAddon,
    cacheDir,
    stripNode: opts.stripNode !== false,
    ...(build.binaries?.length ? { binaries: build.binaries } : {}),
    ...(build.modules?.length ? { modules: build.modules } : {}),
  };
  const runtimeTree = layout === 'shared' ? new ImageTree() : tree;
  const loadList = await stageRuntime(runtimeTree, inputs, items);

  opts.progress?.('bundling kestrel');
  const kestrel = await bundleKestrel(resolve(opts.kestrelEntry ?? kestrelEntry(root)));
  opts.progress?.('making kestrel\'s code cache');
  const codeCache = await kestrelCodeCache(kestrel, NODE_BINARY, cacheDir);
  tree.addBytes(KESTREL_ENTRY, LOADER, 'plugin', 0o644, 'kestrel loader');
  tree.addBytes(KESTREL_BUNDLE, kestrel, 'plugin', 0o644, 'kestrel bundle');
  tree.addBytes(KESTREL_CODE_CACHE, codeCache, 'plugin', 0o644, 'kestrel code cache');
  items.push({ what: 'kestrel bundle + code cache', files: 3, bytes: LOADER.length + kestrel.length + codeCache.length });

  if (layout === 'single') tree.addBytes('/init', INIT_SCRIPT, 'plugin', 0o755, '/init');
  else await stageStage1(tree, opts.kernelVersion, opts.modulesDir, items);
  for (const [path, text] of Object.entries(ETC_FILES)) tree.addBytes(path, text, 'plugin');
  for (const d of MOUNT_POINTS) tree.addDir(d, 'plugin');
  tree.addDir('/tmp', 'plugin', 0o1777);
  tree.addBytes('/etc/volant/plugin.json', `${JSON.stringify(manifest, null, 2)}\n`, 'plugin');
  tree.addBytes('/etc/volant/modules.load', loadList.map((l) => `${l}\n`).join(''), 'plugin');

  let workloadFiles = 0;
  const before = tree.sizes().plugin.bytes;
  for (const [i, f] of (build.files ?? []).entries()) workloadFiles += await stageWorkload(tree, pluginRoot, f.from, f.to, i, outDir);
  items.push({ what: 'workload files', files: workloadFiles, bytes: tree.sizes().plugin.bytes - before });
  if (layout === 'single') return { tree, items };
  linkRuntime(tree, runtimeTree);
  return { tree, items, runtime: { tree: runtimeTree, inputs } };
}
