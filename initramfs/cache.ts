/**
 * The build cache: runtime members and stripped binaries that are expensive to make and the same
 * for every plugin built from the same host files. Entries are named by a hash of what decides
 * their bytes, written to a temp name and renamed (so a reader never sees half a file), and only
 * the newest few of each kind are kept.
 */

import { readdir, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

export function defaultCacheDir(): string {
  return process.env.VOLANT_BUILD_CACHE ?? join(homedir(), '.cache', 'volant', 'initramfs');
}

/** Removes all but the `keep` newest files of `dir` whose names match `kind`; `current` always stays. */
export async function pruneCache(dir: string, kind: RegExp, keep: number, current: string): Promise<void> {
  const found: { path: string; mtimeMs: number }[] = [];
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    if (!kind.test(name) || path === current) continue;
    const st = await stat(path).catch(() => undefined);
    if (st) found.push({ path, mtimeMs: st.mtimeMs });
  }
  found.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const f of found.slice(Math.max(0, keep - 1))) await rm(f.path, { force: true });
}
