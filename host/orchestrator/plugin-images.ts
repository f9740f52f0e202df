/**
 * Installed plugin images. `install(dir)` takes a `volar plugins build` output directory
 * (`plugin.json` + `initramfs.img`, docs/CONTRACTS.md), validates the manifest with the shared
 * validator, and copies the image into `<state_dir>/plugins/<name>/<version>-<hash>.img` so the
 * build directory can go away and a rebuild never changes the image of a VM that uses it. The
 * row is written last: a failed copy leaves no plugin behind. Removal is refused (CONFLICT) while
 * VMs use the plugin.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ValidationError, VolantError } from '../../shared/errors.js';
import { type PluginManifest, validateManifest } from '../../shared/schema/manifest.js';
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

export class PluginImages {
  constructor(
    private readonly repo: PluginRepository,
    private readonly imagesDir: string,
  ) {}

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
