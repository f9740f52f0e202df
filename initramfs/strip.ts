/**
 * Debug information is most of what an unstripped Node binary carries beyond its code (~13 MB of
 * 99 MB here) and costs image size and guest decompression time at every boot. GNU strip is
 * deterministic (same input and binutils version → same bytes), so the image carries a stripped
 * copy, made once and kept in the build cache next to the runtime members.
 *
 * What must hold: only symbol tables and debug sections go (`--strip-unneeded` keeps `.dynsym`,
 * which native addons link against); without `strip` the original is used, unchanged.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pruneCache } from './cache.js';

const execFileP = promisify(execFile);
const STRIP_TIMEOUT_MS = 120_000;
const KEEP_STRIPPED_COPIES = 4;

async function stripVersion(): Promise<string | undefined> {
  try {
    return (await execFileP('strip', ['--version'])).stdout.split('\n')[0];
  } catch {
    return undefined;
  }
}

/** A stripped copy of `hostPath` in `cacheDir`, or undefined when `strip` is not available. */
export async function strippedCopy(hostPath: string, cacheDir: string): Promise<string | undefined> {
  const version = await stripVersion();
  if (!version) return undefined;
  const st = await stat(hostPath, { bigint: true });
  const key = createHash('sha256').update(JSON.stringify([hostPath, version, `${st.dev}:${st.ino}`, `${st.size}`, `${st.mtimeNs}`, `${st.ctimeNs}`])).digest('hex');
  const out = join(cacheDir, `stripped-${key}`);
  if (existsSync(out)) return out;
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    await execFileP('strip', ['--strip-unneeded', '-o', tmp, hostPath], { timeout: STRIP_TIMEOUT_MS });
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
  }
  await pruneCache(cacheDir, /^stripped-[0-9a-f]{64}$/, KEEP_STRIPPED_COPIES, out);
  return out;
}
