/**
 * `buildPlugin` on examples/hello and on hostile plugin folders: the image layout (read back with
 * GNU cpio), byte-identical rebuilds with and without the runtime cache, one changed input byte
 * changing the output, and bad input failing with a clear error and nothing left behind.
 */

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { type BuildOptions, type BuildResult, buildPlugin } from '../../initramfs/build.js';
import { parseElf } from '../../initramfs/elf.js';
import type { KernelInfo } from '../../initramfs/kernel.js';
import { VolantError } from '../../shared/errors.js';
import { testKernel } from '../support/kernel.js';

const REPO = join(import.meta.dirname, '..', '..');
const HELLO = join(REPO, 'examples', 'hello');
const work = mkdtempSync(join(tmpdir(), `volant-initramfs-build-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

let kernel: KernelInfo;
const cache = join(work, 'cache');

// Other work edits guest/ and rebuilds the addon while tests run; builds compared with each other
// use a snapshot (inside the repo, so esbuild still finds node_modules).
const snapshot = join(REPO, '.cache', `test-initramfs-build-${process.pid}`);
after(() => rmSync(snapshot, { recursive: true, force: true }));
for (const part of ['guest', 'shared', 'native']) cpSync(join(REPO, part), join(snapshot, part), { recursive: true, filter: (src) => !src.endsWith('/build/Release/obj.target') });

/** gzip unless a test says otherwise (examples/hello's build file asks for zstd). */
function opts(pluginDir: string, outDir: string | undefined, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    pluginDir,
    outDir,
    kernelVersion: kernel.version,
    modulesDir: kernel.modulesDir,
    cacheDir: cache,
    compression: 'gzip',
    // This file covers the all-in-one layout; initramfs-runtime.test.ts the shared one.
    layout: 'single',
    kestrelEntry: join(snapshot, 'guest', 'main.ts'),
    nativeAddon: join(snapshot, 'native', 'build', 'Release', 'volant_native.node'),
    ...extra,
  };
}

/** The decompressed cpio archives of an image, one per member. */
function members(r: BuildResult): Buffer[] {
  const img = readFileSync(r.image);
  let at = 0;
  return r.members.map((m) => {
    const part = img.subarray(at, at + m.bytes);
    at += m.bytes;
    if (r.compression === 'lz4') return execFileSync('lz4', ['-dc'], { input: part, maxBuffer: 512 * 1024 * 1024 });
    return r.compression === 'gzip' ? gunzipSync(part) : part;
  });
}

function list(archive: Buffer): Map<string, string> {
  const out = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } });
  const m = new Map<string, string>();
  for (const line of out.trim().split('\n')) {
    const f = line.split(/\s+/);
    m.set(f.slice(8).join(' '), f[0]!);
  }
  return m;
}

function copyHello(name: string): string {
  const dir = join(work, name);
  cpSync(HELLO, dir, { recursive: true, filter: (src) => !src.includes('/build') });
  return dir;
}

/** Nothing but what was there before: no image, no temp files. */
function assertClean(outDir: string): void {
  const left = existsSync(outDir) ? readdirSync(outDir) : [];
  assert.deepEqual(left, [], `left behind in ${outDir}: ${left.join(', ')}`);
}

describe('plugin image build', { timeout: 600_000 }, () => {
  let first: BuildResult;
  before(async () => {
    kernel = await testKernel();
    first = await buildPlugin(opts(HELLO, join(work, 'out-1')));
  });

  test('the image holds the contract layout with the expected modes', () => {
    const [runtime, plugin] = members(first).map(list);
    assert.ok(runtime && plugin);
    const want: [Map<string, string>, string, string][] = [
      [plugin, 'init', '-rwxr-xr-x'],
      [plugin, 'lib/volant/kestrel.cjs', '-rw-r--r--'],
      [plugin, 'lib/volant/kestrel-bundle.js', '-rw-r--r--'],
      [plugin, 'lib/volant/kestrel-bundle.cache', '-rw-r--r--'],
      [plugin, 'etc/volant/plugin.json', '-rw-r--r--'],
      [plugin, 'etc/volant/modules.load', '-rw-r--r--'],
      [plugin, 'etc/passwd', '-rw-r--r--'],
      [plugin, 'etc/group', '-rw-r--r--'],
      [plugin, 'etc/hosts', '-rw-r--r--'],
      [plugin, 'etc/resolv.conf', '-rw-r--r--'],
      [plugin, 'app/server.mjs', '-rw-r--r--'],
      [plugin, 'tmp', 'drwxrwxrwt'],
      [runtime, 'usr/bin/node', '-rwxr-xr-x'],
      [runtime, 'bin/busybox', '-rwxr-xr-x'],
      [runtime, 'lib/volant/volant_native.node', '-rwxr-xr-x'],
      [runtime, 'lib/x86_64-linux-gnu/libc.so.6', '-rwxr-xr-x'],
      [runtime, 'lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'lrwxrwxrwx'],
      [runtime, 'bin/sh -> /bin/busybox', 'lrwxrwxrwx'],
      [runtime, `lib/modules/${kernel.version}/kernel/drivers/net/virtio_net.ko`, '-rw-r--r--'],
    ];
    for (const [m, path, mode] of want) assert.equal(m.get(path), mode, path);
  });

  test('files unpack byte for byte; modules.load names image paths in dependency order', () => {
    const dir = mkdtempSync(join(work, 'unpack-'));
    for (const a of members(first)) execFileSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: a, maxBuffer: 1024 * 1024 * 1024 });
    assert.deepEqual(readFileSync(join(dir, 'app/server.mjs')), readFileSync(join(HELLO, 'app/server.mjs')));
    // node is a stripped copy: smaller, same libraries, and it still runs (with the native addon).
    const node = join(dir, 'usr/bin/node');
    assert.ok(statSync(node).size < statSync('/usr/bin/node').size);
    assert.deepEqual(parseElf(readFileSync(node)).needed, parseElf(readFileSync('/usr/bin/node')).needed);
    const probe = `require(${JSON.stringify(join(dir, 'lib/volant/volant_native.node'))}); process.stdout.write(process.version)`;
    assert.equal(execFileSync(node, ['-e', probe], { encoding: 'utf8' }), process.version);
    assert.equal(readFileSync(join(dir, 'init'), 'utf8'), '#!/bin/sh\nexec /usr/bin/node /lib/volant/kestrel.cjs\n');
    // The image's node takes kestrel's code cache (a rejected one would only cost start time, silently).
    const bundle = join(dir, 'lib/volant/kestrel-bundle.js');
    const check = `const fs = require('node:fs'); const s = new (require('node:vm').Script)(fs.readFileSync(${JSON.stringify(bundle)}, 'utf8'), { cachedData: fs.readFileSync(${JSON.stringify(bundle.replace(/\.js$/, '.cache'))}) }); process.stdout.write(String(s.cachedDataRejected))`;
    assert.equal(execFileSync(node, ['-e', check], { encoding: 'utf8' }), 'false');
    // The output plugin.json is the image's plus what the build learnt (layout, memory it needs).
    const { image, ...manifest } = JSON.parse(readFileSync(first.manifest, 'utf8'));
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'etc/volant/plugin.json'), 'utf8')), manifest);
    assert.deepEqual(image, { layout: 'single', min_memory_mb: first.minMemoryMb });
    const load = readFileSync(join(dir, 'etc/volant/modules.load'), 'utf8').trim().split('\n');
    for (const p of load) assert.ok(existsSync(join(dir, p)), `${p} listed but not in the image`);
    const at = (n: string) => load.findIndex((p) => p.endsWith(`/${n}.ko`));
    assert.ok(at('virtio_ring') < at('virtio_net') && at('failover') < at('net_failover') && at('net_failover') < at('virtio_net'));
    assert.ok(at('vsock') < at('vmw_vsock_virtio_transport') && at('vsock') < at('vsock_loopback'));
    assert.equal(JSON.parse(readFileSync(first.manifest, 'utf8')).name, 'hello');
  });

  test('rebuilds are byte-identical, from the cache and from a cold cache', async () => {
    const again = await buildPlugin(opts(HELLO, join(work, 'out-2')));
    assert.equal(again.runtimeCached, true);
    assert.equal(again.sha256, first.sha256);
    const cold = await buildPlugin(opts(HELLO, join(work, 'out-3'), { cacheDir: join(work, 'cold-cache'), compression: 'none' }));
    const cold2 = await buildPlugin(opts(HELLO, join(work, 'out-4'), { cacheDir: join(work, 'cold-cache-2'), compression: 'none' }));
    assert.equal(cold.runtimeCached, false);
    assert.equal(cold2.sha256, cold.sha256);
    assert.deepEqual(list(members(cold)[1]!), list(members(first)[1]!));
  });

  test('stripNode: false carries the host node byte for byte', async () => {
    const r = await buildPlugin(opts(HELLO, join(work, 'out-unstripped'), { stripNode: false, compression: 'none', cacheDir: join(work, 'cache-unstripped') }));
    const dir = mkdtempSync(join(work, 'unpack-unstripped-'));
    execFileSync('cpio', ['-idm', '--quiet', 'usr/bin/node'], { cwd: dir, input: members(r)[0], maxBuffer: 1024 * 1024 * 1024 });
    assert.deepEqual(readFileSync(join(dir, 'usr/bin/node')), readFileSync('/usr/bin/node'));
  });

  test('the default output folder inside the plugin is never packed into the next image', async () => {
    const dir = copyHello('whole-folder');
    writeFileSync(join(dir, 'volant.build.json'), '{"files":[{"from":".","to":"/srv"}]}');
    const b1 = await buildPlugin(opts(dir, undefined));
    assert.equal(b1.image, join(dir, 'build', 'initramfs.img'));
    const b2 = await buildPlugin(opts(dir, undefined));
    assert.equal(b2.sha256, b1.sha256);
    const names = [...list(members(b2)[1]!).keys()];
    assert.ok(names.includes('srv/app/server.mjs') && names.includes('srv/plugin.json'));
    assert.deepEqual(names.filter((n) => n.startsWith('srv/build')), []);
  });

  test('one changed input byte or SOURCE_DATE_EPOCH changes the image', async () => {
    const dir = copyHello('changed');
    const server = readFileSync(join(dir, 'app/server.mjs'));
    server.writeUInt8(server.readUInt8(server.length - 2) ^ 0x01, server.length - 2);
    writeFileSync(join(dir, 'app/server.mjs'), server);
    const changed = await buildPlugin(opts(dir, join(work, 'out-changed')));
    assert.notEqual(changed.sha256, first.sha256);
    assert.equal(changed.runtimeCached, true);
    const dated = await buildPlugin(opts(HELLO, join(work, 'out-dated'), { mtime: 1_700_000_000 }));
    assert.notEqual(dated.sha256, first.sha256);
  });

  test('zstd images are two zstd frames the kernel can take, also reproducible', async () => {
    const a = await buildPlugin(opts(HELLO, join(work, 'out-zstd'), { compression: 'zstd' }));
    const b = await buildPlugin(opts(HELLO, join(work, 'out-zstd-2'), { compression: 'zstd' }));
    assert.equal(a.sha256, b.sha256);
    const magic = readFileSync(a.image).subarray(0, 4);
    assert.deepEqual(magic, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const plain = execFileSync('zstd', ['-dc', a.image], { maxBuffer: 512 * 1024 * 1024 });
    assert.equal(plain.subarray(0, 6).toString(), '070701');
  });

  test('lz4 images are two legacy lz4 members the kernel can take, also reproducible', async () => {
    const a = await buildPlugin(opts(HELLO, join(work, 'out-lz4'), { compression: 'lz4' }));
    const b = await buildPlugin(opts(HELLO, join(work, 'out-lz4-2'), { compression: 'lz4', cacheDir: join(work, 'cold-cache-lz4') }));
    assert.equal(b.runtimeCached, false);
    assert.equal(a.sha256, b.sha256);
    assert.equal(a.members.length, 2);
    const img = readFileSync(a.image);
    const legacyMagic = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
    assert.deepEqual(img.subarray(0, 4), legacyMagic);
    assert.deepEqual(img.subarray(a.members[0]!.bytes, a.members[0]!.bytes + 4), legacyMagic);
    const [runtime, plugin] = members(a);
    assert.equal(list(runtime!).get('usr/bin/node'), '-rwxr-xr-x');
    assert.equal(list(plugin!).get('init'), '-rwxr-xr-x');
  });

  describe('bad input: a clear error naming the file, nothing left behind', () => {
    const cases: { name: string; prepare: (dir: string) => void; error: RegExp; extra?: Partial<BuildOptions> }[] = [
      { name: 'missing plugin.json', prepare: (d) => rmSync(join(d, 'plugin.json')), error: /plugin manifest .*plugin\.json cannot be read: ENOENT/ },
      { name: 'plugin.json over 1 MiB', prepare: (d) => writeFileSync(join(d, 'plugin.json'), `{"x":"${'a'.repeat(2 * 1024 * 1024)}"}`), error: /plugin\.json is \d+ bytes; plugin manifest may be at most 1048576/ },
      { name: 'plugin.json not JSON', prepare: (d) => writeFileSync(join(d, 'plugin.json'), '{"name": '), error: /invalid plugin manifest .*plugin\.json: \/: not valid JSON/ },
      {
        name: 'manifest fails validation',
        prepare: (d) => writeFileSync(join(d, 'plugin.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(HELLO, 'plugin.json'), 'utf8')), name: '../evil' })),
        error: /invalid plugin manifest .*plugin\.json: \/name/,
      },
      { name: 'build file with ..', prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"files":[{"from":"../../etc","to":"/app"}]}'), error: /volant\.build\.json: \/files\/0\/from: .*no '\.\.'/ },
      { name: 'target with ..', prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"files":[{"from":"app","to":"/app/../init"}]}'), error: /\/files\/0\/to/ },
      { name: 'target reserved for the runtime', prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"files":[{"from":"app","to":"/lib/volant"}]}'), error: /reserved for the Volant runtime/ },
      { name: 'unknown build field', prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"filez":[]}'), error: /volant\.build\.json: \/filez: unknown field/ },
      {
        name: 'workload file missing',
        prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"files":[{"from":"app/missing.mjs","to":"/app/main.mjs"}]}'),
        error: /files\/0 \(app\/missing\.mjs\): .*app\/missing\.mjs does not exist/,
      },
      { name: 'symlink escaping the plugin folder', prepare: (d) => symlinkSync('/etc/shadow', join(d, 'app/shadow')), error: /app\/shadow resolves to \/etc\/shadow, outside the plugin folder/ },
      {
        name: 'symlinked folder escaping the plugin folder',
        prepare: (d) => {
          mkdirSync(join(d, 'outside'));
          symlinkSync(join(d, '..'), join(d, 'app/up'));
        },
        error: /outside the plugin folder/,
      },
      { name: 'module not in the kernel', prepare: (d) => writeFileSync(join(d, 'volant.build.json'), '{"files":[{"from":"app","to":"/app"}],"modules":["no_such_mod"]}'), error: /kernel module no_such_mod .*is not in/ },
      { name: 'kernel modules directory missing', prepare: () => {}, error: /kernel modules directory .* cannot be read/, extra: { modulesDir: '/nonexistent/lib/modules/6.1' } },
    ];
    for (const c of cases) {
      test(c.name, async () => {
        const dir = copyHello(c.name.replace(/\W+/g, '-'));
        c.prepare(dir);
        const out = join(work, `bad-${c.name.replace(/\W+/g, '-')}`);
        await assert.rejects(buildPlugin(opts(dir, out, c.extra)), (e: unknown) => {
          assert.ok(e instanceof VolantError, String(e));
          assert.match(e.message, c.error);
          return true;
        });
        assertClean(out);
      });
    }

    test('a plugin folder that is a file or missing', async () => {
      const file = join(work, 'not-a-folder');
      writeFileSync(file, 'x');
      await assert.rejects(buildPlugin(opts(file, join(work, 'bad-file'))), /plugin folder .*not-a-folder cannot be read: not a directory/);
      await assert.rejects(buildPlugin(opts(join(work, 'missing'), join(work, 'bad-missing'))), /plugin folder .*missing cannot be read/);
      assertClean(join(work, 'bad-file'));
      assertClean(join(work, 'bad-missing'));
    });

    test('a failed rebuild leaves the previous good image untouched', async () => {
      const dir = copyHello('keep-previous');
      const out = join(work, 'out-keep');
      const good = await buildPlugin(opts(dir, out));
      symlinkSync('/etc/passwd', join(dir, 'app/passwd'));
      await assert.rejects(buildPlugin(opts(dir, out)), /outside the plugin folder/);
      assert.deepEqual(readdirSync(out).sort(), ['initramfs.img', 'plugin.json']);
      assert.equal(execFileSync('sha256sum', [good.image], { encoding: 'utf8' }).split(' ')[0], good.sha256);
    });
  });

  test('volar plugins build: prints the summary (or the result under --json); bad --compression is refused', () => {
    const cli = join(REPO, 'host', 'cli', 'main.ts');
    const modules = kernel.modulesDir;
    const ok = spawnSync(process.execPath, ['--import', 'tsx', cli, 'plugins', 'build', HELLO, '-o', join(work, 'out-cli'), '--kernel', kernel.vmlinuz, '--modules', modules, '--compression', 'gzip', '--layout', 'single'], {
      encoding: 'utf8',
      env: { ...process.env, VOLANT_BUILD_CACHE: cache },
    });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /node \(stripped\) \+ \d+ libraries/);
    assert.match(ok.stdout, /image +\S+initramfs\.img \([\d.]+ MB, sha256 [0-9a-f]{64}, layout single, needs \d+ MiB\)/);
    assert.deepEqual(readdirSync(join(work, 'out-cli')).sort(), ['initramfs.img', 'plugin.json']);
    const json = spawnSync(process.execPath, ['--import', 'tsx', cli, '--json', 'plugins', 'build', HELLO, '-o', join(work, 'out-cli-json'), '--kernel', kernel.vmlinuz, '--modules', modules, '--compression', 'gzip', '--layout', 'single'], {
      encoding: 'utf8',
      env: { ...process.env, VOLANT_BUILD_CACHE: cache },
    });
    assert.equal(json.status, 0, json.stderr);
    const result = JSON.parse(json.stdout) as { image: string; sha256: string; compression: string; items: { what: string }[] };
    assert.equal(result.compression, 'gzip');
    assert.match(result.sha256, /^[0-9a-f]{64}$/);
    assert.ok(result.items.some((i) => i.what === 'native addon'));
    const bad = spawnSync(process.execPath, ['--import', 'tsx', cli, 'plugins', 'build', HELLO, '--compression', 'brotli'], { encoding: 'utf8' });
    assert.equal(bad.status, 2, 'a usage error');
    assert.match(bad.stderr, /INVALID_ARGUMENT: --compression "brotli": must be one of gzip, zstd, lz4, none/);
  });
});
