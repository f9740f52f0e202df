/**
 * The shared runtime image and the `shared` plugin layout (docs/runtime-image.md): what the
 * runtime image holds (read back with fsck.erofs --extract) and that node runs from it with the
 * addon; that it is content-addressed, padded to 2 MiB, written without tail inlining (DAX), and
 * byte-identical when built again later from a cold cache; what the small plugin initramfs holds
 * (stage-1, links into /rt, kestrel, manifest with the runtime it needs); and bad input refused.
 */

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { type BuildOptions, type BuildResult, buildPlugin } from '../../initramfs/build.js';
import type { KernelInfo } from '../../initramfs/kernel.js';
import { ensureRuntimeImage, RUNTIME_FORMAT_VERSION, type RuntimeImage } from '../../initramfs/runtime-image.js';
import { VolantError } from '../../shared/errors.js';
import { RUNTIME_ALIGN_BYTES } from '../../shared/runtime-image.js';
import { testKernel } from '../support/kernel.js';
import { hasCommand, skipUnlessStrict } from '../support/strict.js';

const REPO = join(import.meta.dirname, '..', '..');
const HELLO = join(REPO, 'examples', 'hello');
const work = mkdtempSync(join(tmpdir(), `volant-runtime-image-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));
/** examples/hello's image must stay small enough to be worth it (issue 14: at most 4 MB). */
const HELLO_IMAGE_MAX_BYTES = 4_000_000;

// Builds compared with each other use a snapshot of the sources (others edit guest/ meanwhile).
const snapshot = join(REPO, '.cache', `test-runtime-image-${process.pid}`);
after(() => rmSync(snapshot, { recursive: true, force: true }));
for (const part of ['guest', 'shared', 'native']) cpSync(join(REPO, part), join(snapshot, part), { recursive: true, filter: (src) => !src.endsWith('/build/Release/obj.target') });
const ADDON = join(snapshot, 'native', 'build', 'Release', 'volant_native.node');

const skip = skipUnlessStrict(!hasCommand('mkfs.erofs', ['--help']) ? 'mkfs.erofs is not installed (scripts/install-deps.sh installs erofs-utils)' : false);

let kernel: KernelInfo;

function opts(pluginDir: string, outDir: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    pluginDir,
    outDir,
    kernelVersion: kernel.version,
    modulesDir: kernel.modulesDir,
    cacheDir: join(work, 'cache'),
    runtimeDir: join(work, 'runtimes'),
    kestrelEntry: join(snapshot, 'guest', 'main.ts'),
    nativeAddon: ADDON,
    ...extra,
  };
}

function extract(image: string, name: string): string {
  const dir = join(work, name);
  execFileSync('fsck.erofs', [`--extract=${dir}`, image], { stdio: 'pipe' });
  return dir;
}

describe('shared runtime image and the shared layout', { skip, timeout: 600_000 }, () => {
  let built: BuildResult;
  let runtime: RuntimeImage;
  before(async () => {
    kernel = await testKernel();
    built = await buildPlugin(opts(HELLO, join(work, 'hello')));
    assert.ok(built.runtime);
    runtime = built.runtime;
  });

  test('the runtime image is <hash>.erofs, 2 MiB padded, and holds node, busybox, the addon and modules', () => {
    assert.equal(basename(runtime.path), `${runtime.hash}.erofs`);
    assert.equal(runtime.version, RUNTIME_FORMAT_VERSION);
    assert.equal(statSync(runtime.path).size, runtime.bytes);
    assert.equal(runtime.bytes % RUNTIME_ALIGN_BYTES, 0);
    assert.equal(statSync(runtime.path).mode & 0o222, 0, 'read-only on the host too');
    const dir = extract(runtime.path, 'rt-extract');
    for (const [path, mode] of [
      ['usr/bin/node', 0o755],
      ['bin/busybox', 0o755],
      ['lib/volant/volant_native.node', 0o755],
      [`lib/modules/${kernel.version}/kernel/drivers/net/virtio_net.ko`, 0o644],
    ] as const) {
      assert.equal(statSync(join(dir, path)).mode & 0o7777, mode, path);
    }
    assert.equal(readlinkSync(join(dir, 'bin/sh')), '/bin/busybox');
    // Node from the image runs and loads the addon from it.
    const probe = `require(${JSON.stringify(join(dir, 'lib/volant/volant_native.node'))}); process.stdout.write(process.version)`;
    assert.equal(execFileSync(join(dir, 'usr/bin/node'), ['-e', probe], { encoding: 'utf8' }), process.version);
    // Written for DAX: plain (not tail-inlined) data, owned by root, fixed timestamps.
    for (const p of ['/usr/bin/node', '/lib/volant/volant_native.node']) {
      const info = execFileSync('dump.erofs', [`--path=${p}`, runtime.path], { encoding: 'utf8' });
      assert.match(info, /Layout: 0\b/, `${p} is FLAT_PLAIN`);
      assert.match(info, /Uid: 0 +Gid: 0/);
      assert.match(info, /Timestamp: 1970-01-01 00:00:00/);
    }
  });

  test('built again later from a cold cache, it is byte-identical; other inputs give another hash', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // a different second for every mtime the copy gets
    const again = await ensureRuntimeImage({ kernelVersion: kernel.version, modulesDir: kernel.modulesDir, dir: join(work, 'runtimes-2'), cacheDir: join(work, 'cold-cache'), nativeAddon: ADDON });
    assert.equal(again.hash, runtime.hash);
    assert.notEqual(again.path, runtime.path);
    assert.deepEqual(readFileSync(again.path), readFileSync(runtime.path));
    const found = await ensureRuntimeImage({ kernelVersion: kernel.version, modulesDir: kernel.modulesDir, dir: join(work, 'runtimes-2'), cacheDir: join(work, 'cold-cache'), nativeAddon: ADDON });
    assert.equal(found.path, again.path);
    const other = await ensureRuntimeImage({ kernelVersion: kernel.version, modulesDir: kernel.modulesDir, dir: join(work, 'runtimes-2'), cacheDir: join(work, 'cold-cache'), nativeAddon: ADDON, modules: ['virtio_blk'] });
    assert.notEqual(other.hash, runtime.hash);
  });

  test('the plugin image is small: stage-1, links into /rt, kestrel, the manifest naming its runtime', () => {
    assert.ok(built.imageBytes <= HELLO_IMAGE_MAX_BYTES, `examples/hello is ${built.imageBytes} bytes`);
    assert.equal(built.layout, 'shared');
    assert.equal(built.members.length, 1);
    const dir = mkdtempSync(join(work, 'unpack-'));
    execFileSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: gunzipSync(readFileSync(built.image)), maxBuffer: 64 * 1024 * 1024 });
    const init = readFileSync(join(dir, 'init'), 'utf8');
    assert.match(init, /^#!\/lib\/volant\/stage1\/busybox sh\n/);
    assert.match(init, /mount -t erofs -o "\$opts" "\$node" \/rt/);
    assert.match(init, /exec \/usr\/bin\/node \/lib\/volant\/kestrel\.cjs/);
    assert.ok(lstatSync(join(dir, 'rt')).isDirectory());
    assert.equal(readlinkSync(join(dir, 'usr')), '/rt/usr');
    assert.equal(readlinkSync(join(dir, 'bin')), '/rt/bin');
    assert.equal(readlinkSync(join(dir, 'lib64')), '/rt/lib64');
    assert.equal(readlinkSync(join(dir, 'lib/volant/volant_native.node')), '/rt/lib/volant/volant_native.node');
    assert.ok(lstatSync(join(dir, 'lib/volant/kestrel-bundle.cache')).isFile());
    assert.ok(lstatSync(join(dir, 'app/server.mjs')).isFile());
    // Stage-1's own modules, per device, each listed file present, dependencies first.
    for (const device of ['pmem', 'blk']) {
      const load = readFileSync(join(dir, `lib/volant/stage1/${device}.load`), 'utf8').trim().split('\n');
      for (const m of load) assert.ok(existsSync(join(dir, 'lib/volant/stage1', m)), `${m} listed for ${device}`);
      assert.ok(load.indexOf('virtio.ko') < load.indexOf('virtio_pci.ko'));
      assert.ok(load.includes('erofs.ko'));
      assert.ok(load.includes(device === 'pmem' ? 'nd_pmem.ko' : 'virtio_blk.ko'));
    }
    const manifest = JSON.parse(readFileSync(built.manifest, 'utf8'));
    assert.deepEqual(manifest.image, { layout: 'shared', runtime: { hash: runtime.hash, version: RUNTIME_FORMAT_VERSION }, min_memory_mb: built.minMemoryMb });
  });

  test('a plugin file where the runtime has one is a CONFLICT, and nothing is written', async () => {
    const dir = join(work, 'clash');
    cpSync(HELLO, dir, { recursive: true, filter: (src) => !src.includes('/build') });
    writeFileSync(join(dir, 'volant.build.json'), '{"files":[{"from":"app/server.mjs","to":"/bin/sh"}]}');
    const out = join(work, 'out-clash');
    await assert.rejects(buildPlugin(opts(dir, out)), (e: unknown) => e instanceof VolantError && e.code === 'CONFLICT' && /\/bin\/sh is both in the plugin image and in the runtime image/.test(e.message));
    assert.deepEqual(existsSync(out) ? readdirSync(out) : [], []);
  });

  test('volar plugins build --layout: shared by default, a bad value is a usage error', () => {
    const cli = join(REPO, 'host', 'cli', 'main.ts');
    const bad = spawnSync(process.execPath, ['--import', 'tsx', cli, 'plugins', 'build', HELLO, '--layout', 'split'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /INVALID_ARGUMENT: --layout "split": must be one of shared, single/);
    const ok = spawnSync(
      process.execPath,
      ['--import', 'tsx', cli, '--json', 'plugins', 'build', HELLO, '-o', join(work, 'out-cli'), '--kernel', kernel.vmlinuz, '--modules', kernel.modulesDir, '--runtime-dir', join(work, 'runtimes')],
      { encoding: 'utf8', env: { ...process.env, VOLANT_BUILD_CACHE: join(work, 'cache') } },
    );
    assert.equal(ok.status, 0, ok.stderr);
    const result = JSON.parse(ok.stdout) as BuildResult;
    assert.equal(result.layout, 'shared');
    assert.equal(result.runtime?.hash, runtime.hash, 'the same host files give the same runtime');
  });
});
