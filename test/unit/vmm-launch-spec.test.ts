import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertLaunchSpec, type LaunchSpec, MAX_MEMORY_MB, MAX_VCPUS } from '../../host/vmm/launcher.js';
import { VolantError } from '../../shared/errors.js';

const good: LaunchSpec = {
  vmName: 'web',
  kernelPath: '/k/vmlinuz',
  initramfsPath: '/p/initramfs.img',
  cmdline: 'console=ttyS0 volant.mode=vsock',
  cpus: 1,
  memoryMb: 256,
  tap: { name: 'vtweb-abcdefgh', mac: '02:11:22:33:44:55' },
  vsock: { cid: 3, socketPath: '/run/volant/vms/web/vsock.sock' },
  serialLogPath: '/var/log/volant/web.serial.log',
  runDir: '/run/volant/vms/web',
};

describe('assertLaunchSpec', () => {
  it('accepts a sound spec, with or without a tap', () => {
    assertLaunchSpec(good);
    const { tap: _tap, ...noTap } = good;
    assertLaunchSpec(noTap);
  });

  const bad: [string, Partial<LaunchSpec> | Record<string, unknown>, RegExp][] = [
    ['relative kernel path', { kernelPath: 'vmlinuz' }, /kernelPath/],
    ['kernel path with a comma (QEMU/CH option splitting)', { kernelPath: '/k/a,b' }, /kernelPath/],
    ['initramfs path with a newline', { initramfsPath: '/p/a\nb' }, /initramfsPath/],
    ['serial log path traversal stays absolute but a relative one is refused', { serialLogPath: '../../etc/passwd' }, /serialLogPath/],
    ['runDir missing', { runDir: undefined }, /runDir/],
    ['cmdline with a newline', { cmdline: 'console=ttyS0\ninit=/bin/sh' }, /cmdline/],
    ['cmdline not a string', { cmdline: 42 }, /cmdline/],
    ['0 vCPUs', { cpus: 0 }, /cpus/],
    ['1.5 vCPUs', { cpus: 1.5 }, /cpus/],
    ['too many vCPUs', { cpus: MAX_VCPUS + 1 }, /cpus/],
    ['memory as a string', { memoryMb: '256' }, /memoryMb/],
    ['too little memory', { memoryMb: 1 }, /memoryMb/],
    ['too much memory', { memoryMb: MAX_MEMORY_MB + 1 }, /memoryMb/],
    ['CID 2 (the host)', { vsock: { cid: 2, socketPath: '/s.sock' } }, /vsock\.cid/],
    ['CID past u32', { vsock: { cid: 2 ** 32, socketPath: '/s.sock' } }, /vsock\.cid/],
    ['vsock socket path longer than sun_path', { vsock: { cid: 3, socketPath: `/${'a'.repeat(120)}` } }, /too long for a Unix socket/],
    ['no vsock', { vsock: undefined }, /vsock/],
    ['tap name too long', { tap: { name: 'a'.repeat(16), mac: '02:00:00:00:00:01' } }, /tap name/],
    ['tap name with a comma', { tap: { name: 'tap0,script=/x', mac: '02:00:00:00:00:01' } }, /tap name/],
    ['MAC with an option smuggled in', { tap: { name: 'tap0', mac: '02:00:00:00:00:01,romfile=/x' } }, /MAC/],
    ['MAC upper case', { tap: { name: 'tap0', mac: '02:AA:00:00:00:01' } }, /MAC/],
    ['commandPrefix not strings', { commandPrefix: ['ip', 1] }, /commandPrefix/],
  ];
  for (const [name, over, match] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => assertLaunchSpec({ ...good, ...over } as LaunchSpec),
        (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && match.test(e.message) && e.message.includes('"web"'),
      );
    });
  }
});
