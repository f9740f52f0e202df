/**
 * The kernel tests and benches boot: Debian's cloud kernel, fetched once per machine into
 * `VOLANT_KERNEL_CACHE` (default `<repo>/.cache/kernel`, gitignored) and reused afterwards.
 */

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchKernel, type KernelInfo } from '../../initramfs/kernel.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function kernelCacheDir(): string {
  return process.env.VOLANT_KERNEL_CACHE ?? join(REPO_ROOT, '.cache', 'kernel');
}

let pending: Promise<KernelInfo> | undefined;

/** The cached test kernel; downloads it through apt on first use. */
export function testKernel(): Promise<KernelInfo> {
  pending ??= fetchKernel({ dest: kernelCacheDir() });
  return pending;
}
