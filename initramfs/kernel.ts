/**
 * Fetches the kernel Volant boots: Debian's cloud kernel (`linux-image-<ver>-cloud-amd64`), taken
 * through apt as a package download (never installed on the host) and unpacked with `dpkg -x`.
 *
 * What must hold:
 * - The result lives in `<dest>/<kver>/vmlinuz` and `<dest>/<kver>/lib/modules/<kver>` (so the
 *   modules directory's name is the kernel release, as on an installed system), and `<dest>/current.json` names it, so a
 *   second call with the kernel already there downloads nothing (tests and benches share one cache).
 * - A kernel directory appears only complete: unpacking happens in a temp dir beside it, then a rename.
 * - Failures say which step failed (apt index empty, package missing, unpack failed) and leave
 *   nothing half-written behind.
 */

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { VolantError } from '../shared/errors.js';

const execFileP = promisify(execFile);

/** The Debian meta-package whose dependency names the current cloud kernel image. */
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';
const APT_TIMEOUT_MS = 10 * 60_000;
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface KernelInfo {
  /** The kernel release (`uname -r` in the guest), e.g. `6.1.0-56-cloud-amd64`. */
  version: string;
  /** Absolute path of the bootable kernel image. */
  vmlinuz: string;
  /** Absolute path of `lib/modules/<version>` for that kernel. */
  modulesDir: string;
}

export interface FetchKernelOptions {
  /** Cache directory; the kernel goes to `<dest>/<version>`. */
  dest: string;
  /** Download again even if `<dest>/current.json` names a complete kernel. */
  force?: boolean;
  /** Progress lines (step names); silent by default. */
  log?: (line: string) => void;
}

/** Picks the versioned image package out of `apt-cache depends linux-image-cloud-amd64` output. */
export function kernelPackageFromDepends(output: string): string | undefined {
  const found = [...output.matchAll(/Depends:\s*(linux-image-[0-9][^\s<>]*-cloud-amd64)\b/g)].map((m) => m[1] as string);
  return found.sort(compareVersions).at(-1);
}

/** `linux-image-6.1.0-56-cloud-amd64` → `6.1.0-56-cloud-amd64`. */
export function kernelVersionFromPackage(pkg: string): string {
  return pkg.replace(/^linux-image-/, '');
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

async function run(cmd: string, args: string[], what: string, cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd, timeout: APT_TIMEOUT_MS, maxBuffer: MAX_OUTPUT_BYTES });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new VolantError('NOT_SUPPORTED', `${what}: \`${cmd}\` is not installed (a Debian host with apt and dpkg is needed)`);
    const detail = (err.stderr ?? err.message).trim().split('\n').slice(-3).join(' | ');
    throw new VolantError('SYSTEM_COMMAND_FAILED', `${what}: \`${cmd} ${args.join(' ')}\` failed: ${detail}`, undefined, { cause: e });
  }
}

/** Reads `<dest>/current.json` if it names a kernel whose files still exist. */
export async function cachedKernel(dest: string): Promise<KernelInfo | undefined> {
  const file = join(resolve(dest), 'current.json');
  let info: KernelInfo;
  try {
    info = JSON.parse(await readFile(file, 'utf8')) as KernelInfo;
  } catch {
    return undefined;
  }
  if (typeof info?.version !== 'string' || typeof info.vmlinuz !== 'string' || typeof info.modulesDir !== 'string') return undefined;
  if (!existsSync(info.vmlinuz) || !existsSync(info.modulesDir)) return undefined;
  return info;
}

async function currentPackage(log: (l: string) => void): Promise<string> {
  let pkg = kernelPackageFromDepends(await run('apt-cache', ['depends', KERNEL_META_PACKAGE], 'looking up the kernel package').catch(() => ''));
  if (!pkg) {
    log('apt index has no cloud kernel; running apt-get update');
    await run('apt-get', ['update', '-qq'], 'refreshing the apt index');
    pkg = kernelPackageFromDepends(await run('apt-cache', ['depends', KERNEL_META_PACKAGE], 'looking up the kernel package'));
  }
  if (!pkg) {
    throw new VolantError('NOT_FOUND', `no ${KERNEL_META_PACKAGE} package in the apt sources (is this Debian 12 with main enabled?)`);
  }
  return pkg;
}

function complete(info: KernelInfo): boolean {
  return existsSync(info.vmlinuz) && existsSync(info.modulesDir);
}

/**
 * Moves a fully unpacked kernel into place. Another process may have finished the same download
 * first (tests fetch in parallel): a complete kernel already there is kept, since someone may be
 * booting it, unless `force`.
 */
async function installKernelDir(staged: string, finalDir: string, info: KernelInfo, force: boolean): Promise<void> {
  if (complete(info) && !force) return;
  await rm(finalDir, { recursive: true, force: true });
  try {
    await rename(staged, finalDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && complete(info)) return;
    throw e;
  }
}

/** Downloads and unpacks the current Debian cloud kernel into `dest`, or returns the cached one. */
export async function fetchKernel(opts: FetchKernelOptions): Promise<KernelInfo> {
  const dest = resolve(opts.dest);
  const log = opts.log ?? (() => {});
  if (!opts.force) {
    const cached = await cachedKernel(dest);
    if (cached) return cached;
  }
  const pkg = await currentPackage(log);
  const version = kernelVersionFromPackage(pkg);
  const finalDir = join(dest, version);
  const info: KernelInfo = { version, vmlinuz: join(finalDir, 'vmlinuz'), modulesDir: join(finalDir, 'lib', 'modules', version) };

  if (opts.force || !complete(info)) {
    await mkdir(dest, { recursive: true });
    const work = await mkdtemp(join(dest, `.fetch-${version}-`));
    try {
      log(`downloading ${pkg}`);
      await run('apt-get', ['download', '-qq', pkg], `downloading ${pkg}`, work);
      const deb = (await readdir(work)).find((f) => f.endsWith('.deb'));
      if (!deb) throw new VolantError('SYSTEM_COMMAND_FAILED', `apt-get download ${pkg} produced no .deb in ${work}`);
      log(`unpacking ${deb}`);
      const root = join(work, 'root');
      await run('dpkg', ['-x', join(work, deb), root], `unpacking ${deb}`);
      const staged = join(work, 'kernel');
      await mkdir(join(staged, 'lib', 'modules'), { recursive: true });
      const vmlinuz = join(root, 'boot', `vmlinuz-${version}`);
      const modules = join(root, 'lib', 'modules', version);
      if (!existsSync(vmlinuz)) throw new VolantError('NOT_FOUND', `${deb} has no boot/vmlinuz-${version}`);
      if (!existsSync(modules)) throw new VolantError('NOT_FOUND', `${deb} has no lib/modules/${version}`);
      await rename(vmlinuz, join(staged, 'vmlinuz'));
      await rename(modules, join(staged, 'lib', 'modules', version));
      await installKernelDir(staged, finalDir, info, opts.force === true);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  const tmp = join(dest, `.current.json.${process.pid}`);
  await writeFile(tmp, `${JSON.stringify(info, null, 2)}\n`);
  await rename(tmp, join(dest, 'current.json'));
  return info;
}
