/**
 * The pure parts of staging: build file validation (table), the image tree's conflict rules,
 * parent directories, layers, symlink chains and mode normalization.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseBuildFile } from '../../initramfs/build-file.js';
import { ImageTree, normalizedMode } from '../../initramfs/tree.js';
import { ValidationError, VolantError } from '../../shared/errors.js';

const work = mkdtempSync(join(tmpdir(), `volant-initramfs-tree-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

describe('build file', () => {
  const ok: unknown[] = [
    {},
    { files: [{ from: 'app', to: '/app' }], compression: 'zstd' },
    { files: [{ from: '.', to: '/srv' }], binaries: ['/usr/bin/env'], modules: ['virtio-net', 'vsock'] },
  ];
  for (const input of ok) test(`accepts ${JSON.stringify(input)}`, () => assert.deepEqual(parseBuildFile(input, 'b.json'), input));

  const bad: [string, unknown, RegExp][] = [
    ['not an object', [], /b\.json: \/: a build file must be a JSON object/],
    ['null', null, /must be a JSON object/],
    ['unknown field', { file: [] }, /\/file: unknown field/],
    ['from escapes', { files: [{ from: '../x', to: '/x' }] }, /\/files\/0\/from/],
    ['from absolute', { files: [{ from: '/etc/shadow', to: '/x' }] }, /\/files\/0\/from/],
    ['from with inner ..', { files: [{ from: 'a/../../b', to: '/x' }] }, /\/files\/0\/from/],
    ['to relative', { files: [{ from: 'a', to: 'app' }] }, /\/files\/0\/to/],
    ['to with ..', { files: [{ from: 'a', to: '/app/../../etc' }] }, /\/files\/0\/to/],
    ['to with //', { files: [{ from: 'a', to: '/app//x' }] }, /\/files\/0\/to/],
    ['to is /init', { files: [{ from: 'a', to: '/init' }] }, /reserved/],
    ['to under /etc/volant', { files: [{ from: 'a', to: '/etc/volant/plugin.json' }] }, /reserved/],
    ['to under /lib/modules', { files: [{ from: 'a', to: '/lib/modules/x.ko' }] }, /reserved/],
    ['bad compression', { compression: 'brotli' }, /\/compression/],
    ['module name with a slash', { modules: ['../../evil'] }, /\/modules\/0/],
    ['binary with ..', { binaries: ['/usr/../etc/shadow'] }, /\/binaries\/0/],
    ['wrong type', { files: 'app' }, /\/files/],
  ];
  for (const [name, input, re] of bad) {
    test(`refuses ${name}`, () => {
      assert.throws(() => parseBuildFile(input, 'b.json'), (e: unknown) => e instanceof ValidationError && re.test(e.message));
    });
  }
});

describe('image tree', () => {
  test('parents are created, a directory may be declared twice, the same source twice is fine', async () => {
    const t = new ImageTree();
    t.addBytes('/a/b/c.txt', 'x', 'plugin');
    t.addDir('/a', 'plugin');
    t.addBytes('/a/b/c.txt', 'x', 'plugin');
    const f = join(work, 'f');
    writeFileSync(f, 'data');
    await t.addHostFile('/x/f', f, 'runtime');
    await t.addHostFile('/x/f', f, 'runtime');
    assert.deepEqual(
      t.entries('plugin').map((e) => `${e.type} ${e.path}`).sort(),
      ['dir /a', 'dir /a/b', 'file /a/b/c.txt'],
    );
    assert.deepEqual(
      t.entries('runtime').map((e) => `${e.type} ${e.path}`).sort(),
      ['dir /x', 'file /x/f'],
    );
  });

  test('a directory shared by both layers is declared in both; files stay in their layer', () => {
    const t = new ImageTree();
    t.addBytes('/lib/volant/volant_native.node', 'addon', 'runtime');
    t.addBytes('/lib/volant/kestrel.mjs', 'bundle', 'plugin');
    const paths = (l: 'runtime' | 'plugin') => t.entries(l).map((e) => e.path).sort();
    assert.deepEqual(paths('runtime'), ['/lib', '/lib/volant', '/lib/volant/volant_native.node']);
    assert.deepEqual(paths('plugin'), ['/lib', '/lib/volant', '/lib/volant/kestrel.mjs']);
  });

  test('conflicts name both sources', () => {
    const t = new ImageTree();
    t.addSymlink('/bin/sh', '/bin/busybox', 'runtime', 'busybox applet');
    assert.throws(() => t.addBytes('/bin/sh', 'evil', 'plugin', 0o755, 'files/0'), /\/bin\/sh would come from both busybox applet and files\/0/);
    t.addBytes('/etc/hosts', 'a', 'plugin');
    assert.throws(() => t.addBytes('/etc/hosts/x', 'b', 'plugin'), (e: unknown) => e instanceof VolantError && /needs \/etc\/hosts to be a directory/.test(e.message));
    assert.throws(() => t.addBytes('/a/../etc/passwd', 'x', 'plugin'), /invalid image path/);
  });

  test('a final symlink chain is kept link by link, each target added', async () => {
    const real = join(work, 'lib.so.1.2');
    writeFileSync(real, 'elf');
    symlinkSync('lib.so.1.2', join(work, 'lib.so.1'));
    symlinkSync(join(work, 'lib.so.1'), join(work, 'lib.so'));
    const t = new ImageTree();
    await t.addHostFile(join(work, 'lib.so'), join(work, 'lib.so'), 'runtime');
    const got = new Map(t.entries('runtime').map((e) => [e.path, e]));
    assert.deepEqual(got.get(join(work, 'lib.so')), { type: 'symlink', path: join(work, 'lib.so'), target: join(work, 'lib.so.1') });
    assert.deepEqual(got.get(join(work, 'lib.so.1')), { type: 'symlink', path: join(work, 'lib.so.1'), target: 'lib.so.1.2' });
    assert.equal(got.get(join(work, 'lib.so.1.2'))?.type, 'file');
    await assert.rejects(t.addHostFile('/missing', join(work, 'nope'), 'runtime'), /nope cannot be read: ENOENT/);
  });

  test('modes are normalized so a umask cannot change the image', () => {
    const table: [number, number][] = [
      [0o100644, 0o644],
      [0o100664, 0o644],
      [0o100600, 0o644],
      [0o100755, 0o755],
      [0o100700, 0o755],
      [0o104755, 0o755],
      [0o100744, 0o755],
    ];
    for (const [host, want] of table) assert.equal(normalizedMode(host), want, host.toString(8));
  });
});
