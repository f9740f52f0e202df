/**
 * End to end: images the builder writes boot under QEMU (TCG, q35) with Debian's cloud kernel.
 *
 * 1. The boot path alone: a busybox /init, the virtio-net modules in the order the module
 *    resolver computed, a static address and busybox httpd; the host reaches it over a real
 *    bridge + tap inside a namespace this test creates.
 * 2. examples/hello built by `buildPlugin`: kestrel starts as PID 1 from the image, reads `ip=`
 *    (the command line volantd writes, buildKernelCmdline), answers GET /healthz on :8080 and
 *    forwards GET /hello to the example workload it started from /app. Three ways, each with
 *    volantd's own QEMU memory/device arguments: the shared runtime image on virtio-pmem (DAX)
 *    with volantd's default memory, the same on a read-only virtio-blk disk, and `--layout single`.
 *
 * Needs root (namespaces, taps) and qemu-system-x86_64; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { createGzip } from 'node:zlib';
import { type BuildResult, buildPlugin } from '../../initramfs/build.js';
import { writeCpio } from '../../initramfs/cpio.js';
import type { KernelInfo } from '../../initramfs/kernel.js';
import { DEFAULT_MODULES, moduleImagePath, resolveModules } from '../../initramfs/modules.js';
import { busyboxApplets } from '../../initramfs/stage.js';
import { ImageTree } from '../../initramfs/tree.js';
import { DEFAULT_MEMORY_MB } from '../../host/orchestrator/orchestrator.js';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { RuntimeDevice } from '../../shared/runtime-image.js';
import { testKernel } from '../support/kernel.js';
import { bootQemu, createTapNetwork, isRoot, qemuAvailable, type TapNetwork } from '../support/qemu.js';
import { skipUnlessStrict } from '../support/strict.js';

const BOOT_TIMEOUT_MS = 180_000;
const HTTP_RETRY_MS = 1_000;
const HOST_IP = '192.168.213.1';
const GUEST_IP = '192.168.213.2';
const PREFIX = 24;
const GUEST_MAC = '52:54:00:13:37:02';
const REPO = join(import.meta.dirname, '..', '..');

const skip = skipUnlessStrict(!isRoot() ? 'needs root (network namespaces and taps)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed' : false);

/**
 * GET url from inside the namespace until it answers (with `wantStatus`, when given: a workload
 * still starting answers 502 through kestrel) or the deadline passes. Returns "<status> <body>".
 */
async function getFromNetns(net: TapNetwork, url: string, deadline: number, alive: () => boolean, wantStatus?: number): Promise<string> {
  const script = `fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(3000)}).then(async r=>{process.stdout.write(r.status+' '+await r.text())}).catch(e=>{process.stderr.write(String(e));process.exit(1)})`;
  let last = '';
  while (Date.now() < deadline && alive()) {
    try {
      last = net.exec(['node', '-e', script], 10_000);
      if (wantStatus === undefined || last.startsWith(`${wantStatus} `)) return last;
    } catch (e) {
      last = String((e as { stderr?: string }).stderr ?? e);
    }
    await new Promise((r) => setTimeout(r, HTTP_RETRY_MS));
  }
  throw new Error(`no${wantStatus ? ` ${wantStatus}` : ''} answer from ${url}: ${last}`);
}

describe('image boot under QEMU', { skip, timeout: 4 * BOOT_TIMEOUT_MS + 240_000 }, () => {
  let kernel: KernelInfo;
  let net: TapNetwork;
  let work: string;

  before(async () => {
    kernel = await testKernel();
    work = mkdtempSync(join(tmpdir(), `volant-initramfs-e2e-${process.pid}-`));
    net = createTapNetwork('img', HOST_IP, PREFIX);
  });
  after(() => {
    net?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('busybox /init: virtio-net modules load in resolver order and the guest answers over the tap', async () => {
    const tree = new ImageTree();
    await tree.addHostFile('/bin/busybox', '/bin/busybox', 'plugin', { dereference: true });
    for (const a of await busyboxApplets('/bin/busybox')) if (!tree.has(a)) tree.addSymlink(a, '/bin/busybox', 'plugin');
    const mods = await resolveModules(kernel.modulesDir, DEFAULT_MODULES);
    const insmods: string[] = [];
    for (const m of mods.modules) {
      const p = moduleImagePath(kernel.version, m);
      await tree.addHostFile(p, m.path, 'plugin', { dereference: true });
      insmods.push(`insmod ${p}`);
    }
    for (const d of ['/proc', '/sys', '/dev', '/tmp']) tree.addDir(d, 'plugin');
    tree.addBytes('/www/healthz', 'busybox-ok\n', 'plugin');
    const init = [
      '#!/bin/sh',
      'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev',
      ...insmods,
      'ip link set lo up',
      `ip addr add ${GUEST_IP}/${PREFIX} dev eth0 && ip link set eth0 up`,
      'httpd -p 8080 -h /www',
      'echo "boot-test: ready"',
      'exec sleep 100000',
    ].join('\n');
    tree.addBytes('/init', `${init}\n`, 'plugin', 0o755);
    const image = join(work, 'busybox.img');
    await pipeline(Readable.from(writeCpio(tree.entries('plugin'))), createGzip(), createWriteStream(image));

    const guest = await bootQemu({
      kernel: kernel.vmlinuz,
      initrd: image,
      append: 'console=ttyS0 reboot=k panic=-1 quiet',
      nic: { netns: net.netns, tap: net.tap, mac: GUEST_MAC },
    });
    try {
      await guest.waitForConsole(/boot-test: ready/, BOOT_TIMEOUT_MS);
      let alive = true;
      void guest.exited.then(() => {
        alive = false;
      });
      const body = await getFromNetns(net, `http://${GUEST_IP}:8080/healthz`, Date.now() + 60_000, () => alive);
      assert.equal(body, '200 busybox-ok\n');
      assert.doesNotMatch(guest.console(), /insmod: can't insert/);
    } finally {
      await guest.stop();
    }
  });

  /** Boots a built examples/hello and checks what a user relies on: /healthz, the workload, a streamed body. */
  async function serveHello(built: BuildResult, how: { device?: RuntimeDevice; memoryMb: number; stream?: boolean }): Promise<string> {
    const runtime = built.runtime && how.device ? { path: built.runtime.path, bytes: built.runtime.bytes, device: how.device } : undefined;
    const append = buildKernelCmdline({ vmName: 'hello-e2e', network: { mode: 'bridged', ip: { address: GUEST_IP, gateway: HOST_IP, prefix: PREFIX } }, runtime: runtime?.device });
    const guest = await bootQemu({ kernel: kernel.vmlinuz, initrd: built.image, append, memoryMb: how.memoryMb, nic: { netns: net.netns, tap: net.tap, mac: GUEST_MAC }, runtime });
    try {
      let alive = true;
      void guest.exited.then(() => {
        alive = false;
      });
      const answer = await getFromNetns(net, `http://${GUEST_IP}:8080/healthz`, Date.now() + BOOT_TIMEOUT_MS, () => alive).catch((e: Error) => {
        throw new Error(`${e.message}\n--- console ---\n${guest.console().slice(-6000)}`);
      });
      const [status, ...rest] = answer.split(' ');
      assert.equal(status, '200', answer);
      const health = JSON.parse(rest.join(' ')) as { mode?: string; network?: { eth0?: { address?: string } | null } };
      assert.equal(health.mode, 'bridged');
      assert.equal(health.network?.eth0?.address, GUEST_IP);
      assert.match(guest.console(), /kestrel: /);

      // Past kestrel, the example workload from /app answers on the forwarded path.
      const hello = await getFromNetns(net, `http://${GUEST_IP}:8080/hello?from=e2e`, Date.now() + 60_000, () => alive, 200);
      assert.equal(hello.split(' ')[0], '200', hello);
      assert.deepEqual(JSON.parse(hello.slice(4)), { message: 'hello', path: '/hello', query: { from: 'e2e' } });

      if (how.stream) {
        // A streamed body crosses kestrel intact: every byte follows the app's documented pattern.
        const n = 3_000_017;
        const verify = `fetch('http://${GUEST_IP}:8080/bytes?n=${n}').then(async r=>{const u=new Uint8Array(await r.arrayBuffer());let bad=-1;for(let i=0;i<u.length;i++)if(u[i]!==((i*31+7)&255)){bad=i;break}process.stdout.write(r.ok?u.length+' '+bad:r.status+' '+Buffer.from(u).toString())})`;
        const got = net.exec(['node', '-e', verify], 60_000);
        assert.equal(got, `${n} -1`, `${got}\n--- console ---\n${guest.console().slice(-3000)}`);
      }
      assert.doesNotMatch(guest.console(), /volant-stage1: fatal|Out of memory/);
      return guest.console();
    } finally {
      await guest.stop();
    }
  }

  let shared: BuildResult;
  const buildHello = (layout: 'shared' | 'single') =>
    buildPlugin({ pluginDir: join(REPO, 'examples', 'hello'), outDir: join(work, `hello-${layout}`), kernelVersion: kernel.version, modulesDir: kernel.modulesDir, cacheDir: join(work, 'cache'), layout });

  test('examples/hello, shared runtime on virtio-pmem (DAX) with the default memory: kestrel boots, serves /healthz and the workload', async () => {
    shared = await buildHello('shared');
    assert.ok(shared.runtime);
    const serial = await serveHello(shared, { device: 'pmem', memoryMb: DEFAULT_MEMORY_MB, stream: true });
    assert.match(serial, /erofs: DAX enabled/);
    assert.doesNotMatch(serial, /DAX unsupported/);
  });

  test('examples/hello, shared runtime on a read-only virtio-blk disk (the fallback): boots and serves', async () => {
    shared ??= await buildHello('shared');
    const serial = await serveHello(shared, { device: 'blk', memoryMb: DEFAULT_MEMORY_MB });
    assert.match(serial, /erofs: \(device vda\): mounted/);
  });

  test('examples/hello, --layout single (everything in the initramfs): boots and serves with the memory its manifest asks for', async () => {
    const single = await buildHello('single');
    assert.equal(single.runtime, undefined);
    assert.ok(single.minMemoryMb > DEFAULT_MEMORY_MB, 'the all-in-one image needs more than the shared default');
    await serveHello(single, { memoryMb: single.minMemoryMb });
  });
});

process.on('exit', () => {
  // A crashed run must not leave its namespace behind (after() covers the normal path).
  try {
    execFileSync('ip', ['netns', 'del', `volant-img-${process.pid}`], { stdio: 'ignore' });
  } catch {
    // not there
  }
});
