/**
 * The addon inside a real guest kernel, where AF_VSOCK, finit_module, reboot and PID-1 reaping
 * may run (they must never run on this host). Builds a tiny initramfs (busybox, node and its
 * libraries, the addon, the vsock + vsock_loopback modules, the bundled guest program
 * native-guest-vm.guest.ts as PID 1), boots it under QEMU without any vsock device (vsock_loopback
 * needs none, so nothing reaches the host's vsock), and checks the result line the guest prints
 * before it powers itself off through the addon. Skips when qemu-system-x86_64 is missing.
 */

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { build } from 'esbuild';
import { resolveAccel } from '../../host/vmm/accel.js';
import { resolveElfClosure } from '../../initramfs/elf.js';
import { REPO_ROOT, testKernel } from '../support/kernel.js';
import { hasCommand, skipUnlessStrict } from '../support/strict.js';

const QEMU = 'qemu-system-x86_64';
const BUSYBOX = '/bin/busybox';
const RESULT_PREFIX = 'NATIVE-GUEST-RESULT '; // printed by native-guest-vm.guest.ts
const GUEST_MEMORY_MB = 768;
const BOOT_TIMEOUT_MS = 300_000; // TCG (no usable KVM) boots node in about 40 s on this machine
const VSOCK_MODULES = ['vsock', 'vmw_vsock_virtio_transport_common', 'vsock_loopback'];

const skip = skipUnlessStrict(hasCommand(QEMU) && existsSync(BUSYBOX) ? false : `needs ${QEMU} and ${BUSYBOX}`);
const work = mkdtempSync(path.join(tmpdir(), `native-guest-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

function copyInto(root: string, hostPath: string, imagePath = hostPath): void {
  const target = path.join(root, imagePath);
  mkdirSync(path.dirname(target), { recursive: true });
  copyFileSync(hostPath, target);
}

async function buildImage(modulesDir: string): Promise<string> {
  const root = path.join(work, 'root');
  for (const dir of ['proc', 'sys', 'dev', 'tmp', 'bin']) mkdirSync(path.join(root, dir), { recursive: true });
  copyInto(root, BUSYBOX);
  symlinkSync('busybox', path.join(root, 'bin', 'sh'));
  copyInto(root, process.execPath, '/usr/bin/node');
  const closure = await resolveElfClosure([process.execPath]);
  for (const lib of [...closure.libraries, ...(closure.interpreter ? [closure.interpreter] : [])]) copyInto(root, lib);
  copyInto(root, path.join(REPO_ROOT, 'native', 'build', 'Release', 'volant_native.node'), '/volant_native.node');
  for (const name of VSOCK_MODULES) {
    copyInto(root, path.join(modulesDir, 'kernel', 'net', 'vmw_vsock', `${name}.ko`), `/lib/modules/vsock/${name}.ko`);
  }
  await build({
    entryPoints: [path.join(REPO_ROOT, 'test', 'integration', 'native-guest-vm.guest.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    outfile: path.join(root, 'guest.mjs'),
    logLevel: 'warning',
  });
  const init = [
    '#!/bin/busybox sh',
    '/bin/busybox mount -t proc proc /proc',
    '/bin/busybox mount -t sysfs sys /sys',
    '/bin/busybox mount -t devtmpfs dev /dev',
    'exec /usr/bin/node /guest.mjs',
  ].join('\n');
  writeFileSync(path.join(root, 'init'), `${init}\n`, { mode: 0o755 });
  const image = path.join(work, 'initrd.img');
  execFileSync('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"', 'sh', root, image]);
  return image;
}

test('AF_VSOCK streams, finit_module, PID-1 reaping and power-off work in a guest kernel', { skip, timeout: BOOT_TIMEOUT_MS + 60_000 }, async () => {
  const kernel = await testKernel();
  const image = await buildImage(kernel.modulesDir);
  const accel = await resolveAccel('auto', QEMU, kernel.vmlinuz);
  const qemu = spawn(QEMU, [
    ...['-M', 'q35', '-cpu', 'max', '-accel', accel, '-m', String(GUEST_MEMORY_MB), '-smp', '1'],
    ...['-kernel', kernel.vmlinuz, '-initrd', image, '-append', 'console=ttyS0 panic=-1 quiet'],
    ...['-nodefaults', '-no-reboot', '-display', 'none', '-serial', 'stdio'],
  ]);
  let serial = '';
  qemu.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    serial += chunk;
  });
  qemu.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    serial += chunk;
  });
  const killer = setTimeout(() => qemu.kill('SIGKILL'), BOOT_TIMEOUT_MS);
  const [code] = await once(qemu, 'exit');
  clearTimeout(killer);

  const line = serial.split('\n').find((l) => l.includes(RESULT_PREFIX));
  assert.ok(line, `no result line on the console:\n${serial.slice(-4000)}`);
  const r = JSON.parse(line.slice(line.indexOf(RESULT_PREFIX) + RESULT_PREFIX.length));
  assert.equal(r.fatal, undefined, JSON.stringify(r.fatal));
  assert.equal(r.pid, 1);
  assert.equal(r.modules, 'loaded', JSON.stringify(r.modules));
  assert.deepEqual(r.missingModule, {
    error: "ENOENT: no such file or directory, open '/lib/modules/absent.ko'",
    code: 'ENOENT',
    errno: -2,
    syscall: 'open',
  });
  assert.equal(r.loUp, true);
  assert.equal(r.hostname, 'guest-native');
  assert.equal(typeof r.localCid, 'number', JSON.stringify(r.localCid));
  assert.equal(r.listenPort, 5000);
  assert.equal(r.echo.bytes, 20 * 1024 * 1024);
  assert.equal(r.echo.intact, true);
  assert.ok(r.echo.refusals > 0, 'the vsock writer never felt backpressure');
  assert.equal(r.halfClose, 4);
  assert.equal(r.concurrent, 50);
  assert.ok(r.anyPort.port > 0 && r.anyPort.port < 0xffffffff, JSON.stringify(r.anyPort));
  assert.equal(r.anyPort.bytes, 3);
  // A vsock peer without a listener answers with a reset.
  assert.deepEqual(r.noListener, {
    error: 'ECONNRESET: connection reset by peer, connect',
    code: 'ECONNRESET',
    errno: -104,
    syscall: 'connect',
  });
  assert.equal(r.afterClose, 'ECONNRESET');
  assert.equal(r.accepted, 52);
  assert.deepEqual(r.reap.reaped, [r.reap.orphan]);
  assert.equal(r.reap.childCode, 3);
  assert.match(serial, /reboot: Power down/);
  assert.equal(code, 0, 'QEMU exits cleanly when the guest powers off');
});
