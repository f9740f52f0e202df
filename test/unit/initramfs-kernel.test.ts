/**
 * Kernel fetching: picking the package from apt's answer (table), reusing the cache without
 * touching apt, and a clear error when apt is not there. The real download is exercised by
 * testKernel() (once per machine, shared by the boot and module tests).
 */

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { cachedKernel, fetchKernel, kernelPackageFromDepends, kernelVersionFromPackage } from '../../initramfs/kernel.js';
import { VolantError } from '../../shared/errors.js';

const work = mkdtempSync(join(tmpdir(), `volant-initramfs-kernel-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

/** Runs `fn` with PATH pointing at an empty folder, so apt-get/apt-cache/dpkg cannot run. */
async function withoutApt<T>(fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  const empty = mkdtempSync(join(work, 'empty-path-'));
  process.env.PATH = empty;
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

function fakeKernel(dest: string, version: string): { vmlinuz: string; modulesDir: string } {
  const vmlinuz = join(dest, version, 'vmlinuz');
  const modulesDir = join(dest, version, 'lib', 'modules', version);
  mkdirSync(modulesDir, { recursive: true });
  writeFileSync(vmlinuz, 'kernel');
  writeFileSync(join(dest, 'current.json'), JSON.stringify({ version, vmlinuz, modulesDir }));
  return { vmlinuz, modulesDir };
}

describe('kernel fetch', () => {
  test('the versioned package is picked out of apt-cache depends', () => {
    const table: [string, string | undefined][] = [
      ['linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n', 'linux-image-6.1.0-56-cloud-amd64'],
      ['linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-9-cloud-amd64\n  Depends: linux-image-6.1.0-10-cloud-amd64\n', 'linux-image-6.1.0-10-cloud-amd64'],
      ['linux-image-cloud-amd64\n  Depends: <linux-image-virtual>\n', undefined],
      ['', undefined],
      ['  Depends: linux-image-6.1.0-56-amd64\n', undefined],
    ];
    for (const [out, want] of table) assert.equal(kernelPackageFromDepends(out), want, out);
    assert.equal(kernelVersionFromPackage('linux-image-6.1.0-56-cloud-amd64'), '6.1.0-56-cloud-amd64');
  });

  test('a cached kernel is returned without running apt', async () => {
    const dest = join(work, 'cached');
    const k = fakeKernel(dest, '6.1.0-99-cloud-amd64');
    const got = await withoutApt(() => fetchKernel({ dest }));
    assert.deepEqual(got, { version: '6.1.0-99-cloud-amd64', ...k });
  });

  test('a stale current.json (files gone) is not trusted', async () => {
    const dest = join(work, 'stale');
    const k = fakeKernel(dest, '6.1.0-98-cloud-amd64');
    rmSync(k.vmlinuz);
    assert.equal(await cachedKernel(dest), undefined);
    writeFileSync(join(dest, 'current.json'), '{not json');
    assert.equal(await cachedKernel(dest), undefined);
  });

  test('without apt the error says what is missing and nothing is left in dest', async () => {
    const dest = join(work, 'no-apt');
    await assert.rejects(
      withoutApt(() => fetchKernel({ dest })),
      (e: unknown) => e instanceof VolantError && e.code === 'NOT_SUPPORTED' && /`apt-get` is not installed/.test(e.message),
    );
    assert.equal(await cachedKernel(dest), undefined);
  });
});
