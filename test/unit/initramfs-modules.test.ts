/**
 * Module resolution: the pure load-order function on tables, `.modinfo` parsing, and the real
 * Debian cloud kernel (fetched once into the test cache) with kmod's `modinfo` as the oracle.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KernelInfo } from '../../initramfs/kernel.js';
import { canonicalModuleName, DEFAULT_MODULES, loadOrder, type ModuleGraph, parseModinfo, resolveModules } from '../../initramfs/modules.js';
import { VolantError } from '../../shared/errors.js';
import { testKernel } from '../support/kernel.js';

const work = mkdtempSync(join(tmpdir(), `volant-initramfs-modules-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

function graph(spec: Record<string, string[]>): ModuleGraph {
  return new Map(Object.entries(spec));
}

describe('module load order (pure)', () => {
  const table: { name: string; requested: string[]; graph: Record<string, string[]>; want: string[] | RegExp }[] = [
    { name: 'no deps', requested: ['b', 'a'], graph: { a: [], b: [] }, want: ['a', 'b'] },
    { name: 'chain', requested: ['c'], graph: { c: ['b'], b: ['a'], a: [] }, want: ['a', 'b', 'c'] },
    { name: 'diamond loads the shared dep once', requested: ['top'], graph: { top: ['l', 'r'], l: ['base'], r: ['base'], base: [] }, want: ['base', 'l', 'r', 'top'] },
    { name: 'requested dep is not repeated', requested: ['x', 'dep'], graph: { x: ['dep'], dep: [] }, want: ['dep', 'x'] },
    { name: 'dash and underscore are one name', requested: ['virtio-net'], graph: { virtio_net: ['virtio'], virtio: [] }, want: ['virtio', 'virtio_net'] },
    { name: 'cycle', requested: ['a'], graph: { a: ['b'], b: ['a'] }, want: /cycle: a -> b -> a/ },
  ];
  for (const c of table) {
    test(c.name, () => {
      if (c.want instanceof RegExp) assert.throws(() => loadOrder(c.requested, graph(c.graph)), c.want);
      else assert.deepEqual(loadOrder(c.requested, graph(c.graph)), c.want);
    });
  }

  test('.modinfo records: depends, repeated keys, junk ignored', () => {
    const info = parseModinfo(Buffer.from('license=GPL\0depends=virtio,virtio_ring\0alias=a\0alias=b\0\0\0=novalue\0name=virtio_net\0'));
    assert.deepEqual(info.get('depends'), ['virtio,virtio_ring']);
    assert.deepEqual(info.get('alias'), ['a', 'b']);
    assert.equal(info.size, 4);
    assert.equal(canonicalModuleName('vmw-vsock'), 'vmw_vsock');
  });
});

describe('modules of the Debian cloud kernel', () => {
  let kernel: KernelInfo;
  before(async () => {
    kernel = await testKernel();
  });

  test('the default set resolves to an order where every module follows its modinfo dependencies', async () => {
    const { modules } = await resolveModules(kernel.modulesDir, DEFAULT_MODULES);
    const names = modules.map((m) => m.name);
    for (const want of [...DEFAULT_MODULES, 'virtio_ring', 'virtio', 'failover', 'net_failover', 'vmw_vsock_virtio_transport_common']) {
      assert.ok(names.includes(want), `${want} missing from ${names.join(' ')}`);
    }
    for (const [i, m] of modules.entries()) {
      const deps = execFileSync('modinfo', ['-F', 'depends', m.path], { encoding: 'utf8' }).trim().split(',').filter(Boolean);
      for (const d of deps) {
        const at = names.indexOf(canonicalModuleName(d));
        assert.ok(at >= 0 && at < i, `${m.name} needs ${d} loaded first: ${names.join(' ')}`);
      }
    }
    assert.equal(new Set(names).size, names.length);
  });

  test('a module the kernel does not have is an error naming it and who needs it', async () => {
    await assert.rejects(resolveModules(kernel.modulesDir, ['no_such_module']), (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && /no_such_module/.test(e.message));
    const partial = join(work, 'partial');
    mkdirSync(partial);
    copyFileSync(join(kernel.modulesDir, 'kernel/drivers/net/virtio_net.ko'), join(partial, 'virtio_net.ko'));
    await assert.rejects(resolveModules(partial, ['virtio_net']), /kernel module \w+ \(needed by virtio_net\) is not in/);
    await assert.rejects(resolveModules(join(work, 'absent'), ['virtio_net']), /cannot be read/);
  });

  test('compressed modules (.ko.xz, .ko.zst) are read too', async () => {
    const tree = join(work, 'compressed');
    mkdirSync(tree);
    copyFileSync(join(kernel.modulesDir, 'kernel/drivers/virtio/virtio_ring.ko'), join(tree, 'virtio_ring.ko'));
    copyFileSync(join(kernel.modulesDir, 'kernel/drivers/virtio/virtio.ko'), join(tree, 'virtio.ko'));
    copyFileSync(join(kernel.modulesDir, 'kernel/drivers/virtio/virtio_balloon.ko'), join(tree, 'virtio_balloon.ko'));
    execFileSync('xz', ['--check=crc32', join(tree, 'virtio.ko')]);
    execFileSync('zstd', ['-q', '--rm', join(tree, 'virtio_balloon.ko')]);
    const { modules } = await resolveModules(tree, ['virtio_balloon']);
    assert.deepEqual(
      modules.map((m) => m.relPath),
      ['virtio_ring.ko', 'virtio.ko.xz', 'virtio_balloon.ko.zst'],
    );
  });

  test('a file that is not a module is refused with its path', async () => {
    const tree = join(work, 'garbage');
    mkdirSync(tree);
    writeFileSync(join(tree, 'evil.ko'), 'not an ELF object at all, just text that is long enough to pass length checks....');
    await assert.rejects(resolveModules(tree, ['evil']), /evil\.ko: cannot read \.modinfo/);
  });
});
