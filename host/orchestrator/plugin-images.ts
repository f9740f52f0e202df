/**
 * Installed plugin images. `install(dir)` takes a `volar plugins build` output directory
 * (`plugin.json` + `initramfs.img`, docs/CONTRACTS.md), validates the manifest with the shared
 * validator, and copies the image into `<state_dir>/plugins/<name>/<version>-<hash>.img` so the
 * build directory can go away and a rebuild never changes the image of a VM that uses it. The
 * row is written last: a failed copy leaves no plugin behind. Removal is refused (CONFLICT) while
 * VMs use the plugin.
 *
 * A `shared`-layout image needs the runtime image its plugin.json names (`image.runtime`: hash and
 * format version; docs/runtime-image.md). `runtimeFor` finds `<state_dir>/runtimes/<hash>.erofs`
 * or builds it from this host's files and kernel modules (one build per hash at a time), and
 * refuses with RUNTIME_UNAVAILABLE, saying why and what to do, when neither gives that hash.
 * Install asks for it first, so a plugin whose runtime cannot be had is never installed.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ValidationError, VolantError } from '../../shared/errors.js';
import { RUNTIME_SUFFIX, type RuntimeDevice } from '../../shared/runtime-image.js';
import { type PluginManifest, validateManifest } from '../../shared/schema/manifest.js';
import type { LaunchSpec } from '../vmm/launcher.js';
import type { PluginRecord, PluginRepository } from '../store/plugins.js';

/** A plugin.json larger than this is not a manifest. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
export const MANIFEST_FILE = 'plugin.json';
export const IMAGE_FILE = 'initramfs.img';

export interface InstalledPlugin {
  name: string;
  version: string;
  manifest: PluginManifest;
  initramfsPath: string;
  installedAt: string;
}

function fromRecord(r: PluginRecord): InstalledPlugin {
  return { name: r.name, version: r.version, manifest: r.manifest as PluginManifest, initramfsPath: r.imagePath, installedAt: r.installedAt };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Where runtime images live on this host and how they are made and attached. */
export interface RuntimeHost {
  /** `<state_dir>/runtimes`. */
  dir: string;
  /** config `vmm.runtime_device`. */
  device: RuntimeDevice;
  /** This host's guest kernel; without it only images already in `dir` can be used. */
  kernel?: { version: string; modulesDir: string };
  /** The stripped-node cache used when building. */
  cacheDir?: string;
}

type Runtime = NonNullable<LaunchSpec['runtime']>;
type RuntimeNeed = NonNullable<NonNullable<PluginManifest['image']>['runtime']>;

export class PluginImages {
  private readonly building = new Map<string, Promise<{ path: string; bytes: number }>>();

  constructor(
    private readonly repo: PluginRepository,
    private readonly imagesDir: string,
    private readonly runtimes?: RuntimeHost,
  ) {}

  /**
   * The runtime image a plugin's VMs attach (undefined for a `single`-layout image): found in the
   * runtimes folder, else built here; RUNTIME_UNAVAILABLE when neither gives the hash it names.
   */
  async runtimeFor(plugin: Pick<InstalledPlugin, 'name' | 'manifest'>): Promise<Runtime | undefined> {
    const need = plugin.manifest.image?.runtime;
    if (!need) return undefined;
    const unavailable = (why: string): VolantError =>
      new VolantError('RUNTIME_UNAVAILABLE', `plugin ${plugin.name} needs runtime image ${need.hash.slice(0, 16)}… (format ${need.version}): ${why}`, { hash: need.hash, version: need.version });
    if (!this.runtimes) throw unavailable('this volantd has no runtimes folder configured');
    const host = this.runtimes;
    const path = join(host.dir, `${need.hash}${RUNTIME_SUFFIX}`);
    const found = await stat(path).catch(() => undefined);
    if (found?.isFile()) return { path, bytes: found.size, device: host.device };
    let pending = this.building.get(need.hash);
    if (!pending) {
      pending = this.buildRuntime(need, host, unavailable);
      this.building.set(need.hash, pending);
      void pending.then(
        () => this.building.delete(need.hash),
        () => this.building.delete(need.hash),
      );
    }
    return { ...(await pending), device: host.device };
  }

  private async buildRuntime(need: RuntimeNeed, host: RuntimeHost, unavailable: (why: string) => VolantError): Promise<{ path: string; bytes: number }> {
    const { ensureRuntimeImage, RUNTIME_FORMAT_VERSION } = await import('../../initramfs/runtime-image.js');
    if (need.version !== RUNTIME_FORMAT_VERSION) throw unavailable(`this volantd builds format ${RUNTIME_FORMAT_VERSION}; rebuild the plugin with this version's \`volar plugins build\``);
    if (!host.kernel) throw unavailable(`it is not in ${host.dir} and volantd cannot build it without the kernel's modules (set kernel.modules_dir or run \`volar kernel fetch\`)`);
    let built: Awaited<ReturnType<typeof ensureRuntimeImage>>;
    try {
      built = await ensureRuntimeImage({
        dir: host.dir,
        kernelVersion: host.kernel.version,
        modulesDir: host.kernel.modulesDir,
        ...(host.cacheDir ? { cacheDir: host.cacheDir } : {}),
        ...(need.binaries ? { binaries: need.binaries } : {}),
        ...(need.modules ? { modules: need.modules } : {}),
      });
    } catch (e) {
      throw unavailable(`it is not in ${host.dir} and building it here failed: ${(e as Error).message}`);
    }
    if (built.hash !== need.hash) {
      throw unavailable(
        `it is not in ${host.dir}, and this host's files and kernel ${host.kernel.version} make runtime ${built.hash.slice(0, 16)}… instead (node, libraries, busybox, the addon or the kernel differ from where the plugin was built): rebuild the plugin on this host, or copy its runtime image into ${host.dir}`,
      );
    }
    return { path: built.path, bytes: built.bytes };
  }

  get(name: string): InstalledPlugin | undefined {
    const r = this.repo.get(name);
    return r ? fromRecord(r) : undefined;
  }

  list(): InstalledPlugin[] {
    return this.repo.list().map(fromRecord);
  }

  async install(dir: string): Promise<InstalledPlugin> {
    const manifestPath = join(dir, MANIFEST_FILE);
    const imagePath = join(dir, IMAGE_FILE);
    const mStat = await stat(manifestPath).catch(() => undefined);
    if (!mStat?.isFile()) throw new VolantError('INVALID_ARGUMENT', `${manifestPath} does not exist: give the output directory of \`volar plugins build\``, { path: dir });
    if (mStat.size > MAX_MANIFEST_BYTES) throw new VolantError('INVALID_ARGUMENT', `${manifestPath} is ${mStat.size} bytes; a manifest is at most ${MAX_MANIFEST_BYTES}`);
    const iStat = await stat(imagePath).catch(() => undefined);
    if (!iStat?.isFile() || iStat.size === 0) throw new VolantError('INVALID_ARGUMENT', `${imagePath} does not exist or is empty: build the plugin first`, { path: dir });
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(manifestPath, 'utf8'));
    } catch (e) {
      throw new VolantError('INVALID_ARGUMENT', `${manifestPath} is not JSON: ${(e as Error).message}`);
    }
    const checked = validateManifest(parsed);
    if (!checked.ok) throw new ValidationError(`plugin manifest ${manifestPath}`, checked.problems);
    const m = checked.value;
    await this.runtimeFor({ name: m.name, manifest: m });
    const digest = (await sha256File(imagePath)).slice(0, 16);
    const destDir = join(this.imagesDir, m.name);
    const dest = join(destDir, `${m.version}-${digest}.img`);
    await mkdir(destDir, { recursive: true, mode: 0o700 });
    if (!(await stat(dest).catch(() => undefined))) {
      const tmp = `${dest}.tmp-${process.pid}`;
      try {
        await copyFile(imagePath, tmp);
        await rename(tmp, dest);
      } finally {
        await rm(tmp, { force: true });
      }
    }
    const previous = this.repo.get(m.name);
    const installed = fromRecord(this.repo.install({ name: m.name, version: m.version, manifest: m, imagePath: dest }));
    if (previous && previous.imagePath !== dest) await rm(previous.imagePath, { force: true });
    return installed;
  }

  /** CONFLICT while VMs use it; the image file goes with the row. */
  async remove(name: string): Promise<void> {
    const removed = this.repo.uninstall(name);
    await rm(removed.imagePath, { force: true });
  }
}
