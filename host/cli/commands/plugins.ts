/**
 * `volar plugins ...`: plugin images. `build` turns a plugin folder into OUT/initramfs.img +
 * OUT/plugin.json (initramfs/build.ts; `--layout shared` also finds or builds the shared runtime
 * image, docs/runtime-image.md); install/list/remove talk to volantd's store.
 */

import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { VolantError } from '../../../shared/errors.js';
import type { Compression } from '../../../initramfs/build-file.js';
import { type BuildResult, buildPlugin, type Layout } from '../../../initramfs/build.js';
import { LAYOUTS } from '../../../initramfs/stage.js';
import { cachedKernel, type KernelInfo } from '../../../initramfs/kernel.js';
import { clientFor, formatTable } from '../client.js';
import { emit, globalOptions } from '../output.js';
import { defaultKernelDir } from './kernel.js';

/** What `uname -r` looks like: 6.1.0-56-cloud-amd64. */
const KERNEL_RELEASE = /^\d+\.\d+[\w.+-]*$/;
const COMPRESSIONS: readonly Compression[] = ['gzip', 'zstd', 'lz4', 'none'];

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The summary printed after a build: what went in, member sizes, the image and its digest. */
export function formatBuildSummary(r: BuildResult, seconds: number): string {
  const lines = ['contents:'];
  for (const i of r.items) lines.push(`  ${i.what.padEnd(42)} ${String(i.files).padStart(5)} files ${mb(i.bytes).padStart(10)}`);
  if (r.runtime) {
    lines.push(`  ${`runtime image (erofs, shared)${r.runtimeCached ? ', cached' : ''}`.padEnd(42)} ${''.padStart(11)} ${mb(r.runtime.bytes).padStart(10)}`);
  }
  for (const m of r.members) lines.push(`  ${`${m.layer} member (${r.compression})${m.layer === 'runtime' && r.runtimeCached ? ', cached' : ''}`.padEnd(42)} ${''.padStart(11)} ${mb(m.bytes).padStart(10)}`);
  lines.push(`image     ${r.image} (${mb(r.imageBytes)}, sha256 ${r.sha256}, layout ${r.layout}, needs ${r.minMemoryMb} MiB)`);
  if (r.runtime) lines.push(`runtime   ${r.runtime.path} (format ${r.runtime.version})`);
  lines.push(`manifest  ${r.manifest}`, `built in ${seconds.toFixed(2)} s`);
  return lines.join('\n');
}

async function kernelFor(opts: { kernel?: string; modules?: string; kernelVersion?: string }, stateDir: string | undefined): Promise<KernelInfo> {
  if (opts.kernel || opts.modules) {
    if (!opts.kernel || !opts.modules) throw new VolantError('INVALID_ARGUMENT', '--kernel and --modules go together (the modules must match the kernel)');
    if (!existsSync(opts.modules)) throw new VolantError('NOT_FOUND', `modules directory ${opts.modules} does not exist`);
    const version = opts.kernelVersion ?? basename(resolve(opts.modules));
    if (!KERNEL_RELEASE.test(version)) {
      throw new VolantError('INVALID_ARGUMENT', `cannot tell the kernel release from ${opts.modules} (expected lib/modules/<release>); pass --kernel-version`);
    }
    return { version, vmlinuz: opts.kernel, modulesDir: opts.modules };
  }
  const dir = defaultKernelDir(stateDir);
  const cached = await cachedKernel(dir);
  if (!cached) throw new VolantError('NOT_FOUND', `no kernel in ${join(dir, 'current.json')}: run \`volar kernel fetch\` or pass --kernel and --modules`);
  return cached;
}

/** `plugins build DIR`. Self-contained so other `plugins` subcommands can live beside it. */
export function registerBuild(plugins: Command): void {
  plugins
    .command('build')
    .description('build a plugin folder into OUT/initramfs.img and OUT/plugin.json')
    .argument('<dir>', 'plugin folder with plugin.json and volant.build.json')
    .option('-o, --out <dir>', 'output folder (default DIR/build)')
    .option('--kernel <path>', 'kernel image (default: the one `volar kernel fetch` cached)')
    .option('--modules <dir>', 'lib/modules/<version> of that kernel; its last path component is the version')
    .option('--kernel-version <version>', 'kernel release when --modules does not end in it')
    .option('--compression <kind>', `${COMPRESSIONS.join(' | ')} (default: the build file's, else gzip)`)
    .option('--layout <layout>', 'shared: small initramfs + the shared runtime image (default); single: everything in the initramfs (VMMs with neither pmem nor disks)', 'shared')
    .option('--runtime-dir <dir>', 'where the shared runtime image is found or built (default: <build cache>/runtimes)')
    .action(async (dir: string, opts: { out?: string; kernel?: string; modules?: string; kernelVersion?: string; compression?: string; layout: string; runtimeDir?: string }, cmd: Command) => {
      if (opts.compression !== undefined && !COMPRESSIONS.includes(opts.compression as Compression)) {
        throw new VolantError('INVALID_ARGUMENT', `--compression ${JSON.stringify(opts.compression)}: must be one of ${COMPRESSIONS.join(', ')}`);
      }
      if (!LAYOUTS.includes(opts.layout as Layout)) throw new VolantError('INVALID_ARGUMENT', `--layout ${JSON.stringify(opts.layout)}: must be one of ${LAYOUTS.join(', ')}`);
      const kernel = await kernelFor(opts, globalOptions(cmd).stateDir);
      const tty = process.stderr.isTTY === true;
      const started = performance.now();
      const result = await buildPlugin({
        pluginDir: dir,
        outDir: opts.out,
        kernelVersion: kernel.version,
        modulesDir: kernel.modulesDir,
        compression: opts.compression as Compression | undefined,
        layout: opts.layout as Layout,
        ...(opts.runtimeDir ? { runtimeDir: opts.runtimeDir } : {}),
        progress: tty ? (step) => process.stderr.write(`\u001b[2K\r volar: ${step} ...`) : undefined,
      });
      if (tty) process.stderr.write('\u001b[2K\r');
      const seconds = (performance.now() - started) / 1000;
      emit(cmd, { ...result, seconds }, () => formatBuildSummary(result, seconds));
    });
}

export function register(program: Command): void {
  const plugins = program.command('plugins').description('plugin images: build, install, list, remove');
  registerBuild(plugins);
  registerInstalled(plugins);
}

/** `plugins install DIR | list | remove NAME`: the plugins volantd knows, through its API. */
export function registerInstalled(plugins: Command): void {
  plugins
    .command('install')
    .description('register a `plugins build` output directory (plugin.json + initramfs.img) with volantd')
    .argument('<dir>', 'build output directory')
    .action(async (dir: string, _o: unknown, cmd: Command) => {
      const p = await clientFor(cmd).installPlugin(resolve(dir));
      emit(cmd, p, () => `installed ${p.name} ${p.version} (${p.initramfs_path})`);
    });
  plugins
    .command('list')
    .description('list installed plugins')
    .action(async (_o: unknown, cmd: Command) => {
      const list = await clientFor(cmd).listPlugins();
      emit(cmd, list, () =>
        list.length === 0 ? 'no plugins' : formatTable(['NAME', 'VERSION', 'MODE', 'INSTALLED'], list.map((p) => [p.name, p.version, p.network_mode ?? '-', p.installed_at])),
      );
    });
  plugins
    .command('remove')
    .description('remove an installed plugin (refused while VMs use it)')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      await clientFor(cmd).removePlugin(name);
      emit(cmd, { removed: name }, () => `removed ${name}`);
    });
}
