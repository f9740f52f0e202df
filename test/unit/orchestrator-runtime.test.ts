/**
 * What volantd decides before a VM of a plugin is created (nothing spawned here): the memory it
 * gets or refuses (MEMORY_TOO_SMALL against the image's `min_memory_mb`), and the runtime image it
 * attaches: none for a `single` image, the file in the runtimes folder when it is there, and a
 * clear RUNTIME_UNAVAILABLE when it is not there and cannot be built. The install path (a real
 * SQLite store) refuses a plugin whose runtime cannot be had and installs nothing.
 */

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { addressPool } from '../../host/ipam/index.js';
import { DEFAULT_MEMORY_MB, memoryFor } from '../../host/orchestrator/orchestrator.js';
import { PluginImages } from '../../host/orchestrator/plugin-images.js';
import { openStore } from '../../host/store/index.js';
import { RUNTIME_FORMAT_VERSION } from '../../initramfs/runtime-image.js';
import { VolantError } from '../../shared/errors.js';
import type { PluginManifest } from '../../shared/schema/manifest.js';

const dir = mkdtempSync(join(tmpdir(), `volant-orch-runtime-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

const HASH = 'ab'.repeat(32);
const POOL = addressPool({ host_cidr: '192.168.127.1/24', pool_start: '192.168.127.100', pool_end: '192.168.127.254', reservations: {} });
const base: PluginManifest = { name: 'hello', version: '0.1.0', workload: { type: 'http', entrypoint: ['/usr/bin/node', '/app/server.mjs'], http: { port: 3000 } } } as PluginManifest;
const shared = (min: number, extra: Partial<PluginManifest> = {}): PluginManifest => ({ ...base, ...extra, image: { layout: 'shared', runtime: { hash: HASH, version: RUNTIME_FORMAT_VERSION }, min_memory_mb: min } });

const isCode = (code: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof VolantError, String(e));
  assert.equal(e.code, code);
  assert.match(e.message, re);
  return true;
};

describe('memory for a VM', () => {
  test('without a request: the default, raised to what the image needs', () => {
    assert.equal(memoryFor({}, { name: 'hello', manifest: shared(112) }), DEFAULT_MEMORY_MB);
    assert.equal(memoryFor({}, { name: 'hello', manifest: { ...base, image: { layout: 'single', min_memory_mb: 320 } } }), 320);
    assert.equal(memoryFor({}, { name: 'old', manifest: base }), DEFAULT_MEMORY_MB, 'an image built before image records');
  });

  test('asked below the image minimum: MEMORY_TOO_SMALL naming the request, the minimum and why', () => {
    assert.throws(() => memoryFor({ memory_mb: 64 }, { name: 'hello', manifest: shared(112) }), (e: unknown) => {
      isCode('MEMORY_TOO_SMALL', /^memory_mb 64 is below the 112 MiB plugin hello's shared image needs to boot .*ask for at least 112$/)(e);
      assert.deepEqual((e as VolantError).details, { memory_mb: 64, min_memory_mb: 112 });
      return true;
    });
    assert.throws(() => memoryFor({}, { name: 'hello', manifest: shared(320, { resources: { memory_mb: 256 } }) }), isCode('MEMORY_TOO_SMALL', /plugin hello's resources\.memory_mb 256 is below the 320 MiB/));
    assert.equal(memoryFor({ memory_mb: 112 }, { name: 'hello', manifest: shared(112) }), 112, 'the minimum itself is fine');
  });
});

describe('the runtime image a plugin needs', () => {
  const runtimes = join(dir, 'runtimes');
  mkdirSync(runtimes, { recursive: true });

  test('a single-layout image attaches none; a shared one gets its file from the runtimes folder', async () => {
    const images = new PluginImages(openStore({ path: join(dir, 'a.db'), pool: POOL }).plugins, join(dir, 'plugins'), { dir: runtimes, device: 'blk' });
    assert.equal(await images.runtimeFor({ name: 'x', manifest: { ...base, image: { layout: 'single', min_memory_mb: 320 } } }), undefined);
    const file = join(runtimes, `${HASH}.erofs`);
    writeFileSync(file, Buffer.alloc(2 * 1024 * 1024));
    assert.deepEqual(await images.runtimeFor({ name: 'hello', manifest: shared(112) }), { path: file, bytes: 2 * 1024 * 1024, device: 'blk' });
    rmSync(file);
  });

  test('missing and not buildable here: RUNTIME_UNAVAILABLE saying why; install refuses and installs nothing', async () => {
    const store = openStore({ path: join(dir, 'b.db'), pool: POOL });
    const images = new PluginImages(store.plugins, join(dir, 'plugins'), { dir: runtimes, device: 'pmem' });
    await assert.rejects(images.runtimeFor({ name: 'hello', manifest: shared(112) }), isCode('RUNTIME_UNAVAILABLE', /plugin hello needs runtime image abababababababab… \(format 1\): .*cannot build it without the kernel's modules/));
    const future = { ...shared(112), image: { layout: 'shared' as const, runtime: { hash: HASH, version: RUNTIME_FORMAT_VERSION + 1 }, min_memory_mb: 112 } };
    const withKernel = new PluginImages(store.plugins, join(dir, 'plugins'), { dir: runtimes, device: 'pmem', kernel: { version: '6.1.0-57-cloud-amd64', modulesDir: '/nonexistent' } });
    await assert.rejects(withKernel.runtimeFor({ name: 'hello', manifest: future }), isCode('RUNTIME_UNAVAILABLE', /this volantd builds format 1; rebuild the plugin/));

    const build = join(dir, 'build');
    mkdirSync(build, { recursive: true });
    writeFileSync(join(build, 'plugin.json'), JSON.stringify(shared(112)));
    writeFileSync(join(build, 'initramfs.img'), 'not really an image');
    await assert.rejects(images.install(build), isCode('RUNTIME_UNAVAILABLE', /plugin hello needs runtime image/));
    assert.equal(images.get('hello'), undefined);
    assert.deepEqual(images.list(), []);
  });

  test('without a runtimes folder at all, a shared image is refused', async () => {
    const images = new PluginImages(openStore({ path: join(dir, 'c.db'), pool: POOL }).plugins, join(dir, 'plugins'));
    await assert.rejects(images.runtimeFor({ name: 'hello', manifest: shared(112) }), isCode('RUNTIME_UNAVAILABLE', /no runtimes folder configured/));
  });
});
