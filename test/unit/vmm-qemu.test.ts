import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kvmProbeBooted, resolveAccel } from '../../host/vmm/accel.js';
import { buildKernelCmdline, type CmdlineNetwork } from '../../host/vmm/cmdline.js';
import { assertLaunchSpec, type LaunchSpec, type VmmCapabilities } from '../../host/vmm/launcher.js';
import { buildQemuArgs, qemuMemoryArgs, qemuOptValue, qemuVsockCapability } from '../../host/vmm/qemu.js';
import { vsockBackendArgv } from '../../host/vmm/vsock-backend.js';
import { VolantError } from '../../shared/errors.js';

function specFor(network: CmdlineNetwork, extra: Partial<LaunchSpec> = {}): LaunchSpec {
  return {
    vmName: 'web',
    kernelPath: '/k/vmlinuz',
    initramfsPath: '/p/initramfs.img',
    cmdline: buildKernelCmdline({ vmName: 'web', network }),
    cpus: 2,
    memoryMb: 384,
    ...(network.ip === undefined ? {} : { tap: { name: 'vtweb-abcdefgh', mac: '02:11:22:33:44:55' } }),
    vsock: { cid: 42, socketPath: '/run/volant/vms/web/vsock.sock' },
    serialLogPath: '/var/log/volant/web.serial.log',
    runDir: '/run/volant/vms/web',
    ...extra,
  };
}

/** The value following `flag` each time it appears. */
const values = (args: string[], flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));

const tcg: VmmCapabilities = { accel: 'tcg', vsock: 'none' };
const kvmVsock: VmmCapabilities = { accel: 'kvm', vsock: 'af-vsock' };
const tcgHybrid: VmmCapabilities = { accel: 'tcg', vsock: 'hybrid-socket' };

const VHOST_USER_DEVICES = ['vhost-user-vsock-pci,chardev=vsock0'];
const VHOST_KERNEL_DEVICES = ['vhost-vsock-pci,guest-cid=42'];
const BRIDGED: CmdlineNetwork = { mode: 'bridged', ip: { address: '10.0.0.5', gateway: '10.0.0.1', prefix: 24 } };

describe('QEMU argv', () => {
  const table: { name: string; network: CmdlineNetwork; caps: VmmCapabilities; netdev: boolean; vsockDevices: string[] }[] = [
    { name: 'bridged, TCG, vhost-user vsock', network: BRIDGED, caps: tcgHybrid, netdev: true, vsockDevices: VHOST_USER_DEVICES },
    { name: 'bridged, TCG, vhost-kernel asked for but absent: no vsock', network: BRIDGED, caps: tcg, netdev: true, vsockDevices: [] },
    { name: 'dhcp, KVM with vhost-vsock', network: { mode: 'dhcp', ip: 'dhcp' }, caps: kvmVsock, netdev: true, vsockDevices: VHOST_KERNEL_DEVICES },
    { name: 'vsock mode, vhost-kernel: no NIC', network: { mode: 'vsock' }, caps: kvmVsock, netdev: false, vsockDevices: VHOST_KERNEL_DEVICES },
    { name: 'vsock mode, vhost-user: no NIC, the vsock device only', network: { mode: 'vsock' }, caps: tcgHybrid, netdev: false, vsockDevices: VHOST_USER_DEVICES },
  ];
  for (const t of table) {
    it(t.name, () => {
      const spec = specFor(t.network);
      const args = buildQemuArgs(spec, t.caps, '/usr/bin/qemu-system-x86_64');
      assert.equal(args[0], '/usr/bin/qemu-system-x86_64');
      assert.deepEqual(values(args, '-machine'), ['q35,memory-backend=ram0']);
      assert.deepEqual(values(args, '-M'), []);
      assert.deepEqual(values(args, '-cpu'), ['max']);
      assert.deepEqual(values(args, '-accel'), [t.caps.accel]);
      assert.deepEqual(values(args, '-m'), ['384M']);
      assert.deepEqual(values(args, '-object'), ['memory-backend-memfd,id=ram0,size=384M,share=on'], 'guest RAM is a shared memfd, always');
      assert.deepEqual(values(args, '-smp'), ['2']);
      assert.deepEqual(values(args, '-kernel'), ['/k/vmlinuz']);
      assert.deepEqual(values(args, '-initrd'), ['/p/initramfs.img']);
      assert.deepEqual(values(args, '-append'), [spec.cmdline], 'the command line is one argv element, never re-split');
      for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot']) assert.ok(args.includes(flag), flag);
      assert.deepEqual(values(args, '-display'), ['none']);
      assert.deepEqual(values(args, '-chardev')[0], 'file,id=serial0,path=/var/log/volant/web.serial.log,append=on');
      assert.deepEqual(values(args, '-serial'), ['chardev:serial0']);
      assert.deepEqual(values(args, '-qmp'), ['unix:/run/volant/vms/web/qmp.sock,server=on,wait=off']);
      const devices = values(args, '-device');
      if (t.netdev) {
        assert.deepEqual(values(args, '-netdev'), ['tap,id=n0,ifname=vtweb-abcdefgh,script=no,downscript=no,vhost=off']);
        assert.ok(devices.includes('virtio-net-pci,netdev=n0,mac=02:11:22:33:44:55'));
      } else {
        assert.deepEqual(values(args, '-netdev'), []);
      }
      assert.deepEqual(
        devices.filter((d) => d.includes('vsock')),
        t.vsockDevices,
      );
      assert.equal(devices.length, (t.netdev ? 1 : 0) + t.vsockDevices.length, 'no device beyond the NIC and vsock');
      const chardevs = values(args, '-chardev').filter((c) => c.startsWith('socket,'));
      assert.deepEqual(chardevs, t.caps.vsock === 'hybrid-socket' ? ['socket,id=vsock0,path=/run/volant/vms/web/vhost-vsock.sock'] : [], 'vhost-user connects to the back-end in the run directory');
    });
  }

  it('memory arguments come from one pure function: machine, size, shared memfd RAM', () => {
    assert.deepEqual(qemuMemoryArgs({ memoryMb: 1024 }), ['-machine', 'q35,memory-backend=ram0', '-m', '1024M', '-object', 'memory-backend-memfd,id=ram0,size=1024M,share=on']);
  });

  const IMAGE_BYTES = 46 * 2 * 1024 * 1024;
  it('the runtime image on pmem: maxmem leaves room for it, a read-only private file backend of its exact size, virtio-pmem; RAM stays the shared memfd', () => {
    const runtime = { path: '/var/lib/volant/runtimes/ab.erofs', bytes: IMAGE_BYTES, device: 'pmem' as const };
    assert.deepEqual(qemuMemoryArgs({ memoryMb: 160, runtime }), [
      ...['-machine', 'q35,memory-backend=ram0', '-m', '160M,slots=1,maxmem=252M', '-object', 'memory-backend-memfd,id=ram0,size=160M,share=on'],
      ...['-object', `memory-backend-file,id=rt0,mem-path=/var/lib/volant/runtimes/ab.erofs,size=${IMAGE_BYTES},share=off,readonly=on`],
      ...['-device', 'virtio-pmem-pci,memdev=rt0,id=pmem0'],
    ]);
    const args = buildQemuArgs(specFor({ mode: 'vsock' }, { runtime, cmdline: buildKernelCmdline({ vmName: 'web', network: { mode: 'vsock' }, runtime: 'pmem' }) }), tcg);
    assert.equal(values(args, '-drive').length, 0, 'no disk with pmem');
    assert.match(values(args, '-append')[0]!, / volant\.runtime=pmem swiotlb=noforce /);
  });

  it('the runtime image on blk: a read-only raw virtio-blk drive, plain RAM, no maxmem', () => {
    const runtime = { path: '/var/lib/volant/runtimes/ab.erofs', bytes: IMAGE_BYTES, device: 'blk' as const };
    const args = buildQemuArgs(specFor({ mode: 'vsock' }, { runtime, cmdline: buildKernelCmdline({ vmName: 'web', network: { mode: 'vsock' }, runtime: 'blk' }) }), tcg);
    assert.deepEqual(values(args, '-m'), ['384M']);
    assert.deepEqual(values(args, '-drive'), ['file=/var/lib/volant/runtimes/ab.erofs,if=none,format=raw,readonly=on,id=rt0']);
    assert.ok(values(args, '-device').includes('virtio-blk-pci,drive=rt0'));
    assert.ok(!values(args, '-device').some((d) => d.startsWith('virtio-pmem')));
    assert.doesNotMatch(values(args, '-append')[0]!, /swiotlb/);
    assert.match(values(args, '-append')[0]!, / volant\.runtime=blk /);
  });

  it('a runtime image that is not 2 MiB padded or not pmem/blk is refused before launch', () => {
    for (const runtime of [
      { path: '/r.erofs', bytes: IMAGE_BYTES + 4096, device: 'pmem' },
      { path: '/r.erofs', bytes: IMAGE_BYTES, device: 'nvme' },
      { path: 'r.erofs', bytes: IMAGE_BYTES, device: 'pmem' },
    ]) {
      assert.throws(() => assertLaunchSpec(specFor({ mode: 'vsock' }, { runtime: runtime as LaunchSpec['runtime'] })), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && /runtime\./.test(e.message));
    }
  });

  it('the vsock capability is known before launch: vhost-user is a hybrid socket everywhere; vhost-kernel needs /dev/vhost-vsock', () => {
    const table: [Parameters<typeof qemuVsockCapability>, ReturnType<typeof qemuVsockCapability>][] = [
      [['vhost-user', false], 'hybrid-socket'],
      [['vhost-user', true], 'hybrid-socket'],
      [['vhost-kernel', true], 'af-vsock'],
      [['vhost-kernel', false], 'none'],
    ];
    for (const [args, capability] of table) assert.equal(qemuVsockCapability(...args), capability, JSON.stringify(args));
  });

  it('the vsock device back-end gets the run directory\'s sockets and the CID; paths that cannot be sockets are refused first', () => {
    const argv = vsockBackendArgv(specFor({ mode: 'vsock' }));
    assert.deepEqual(argv.slice(argv.indexOf('--vhost-user')), [
      ...['--vhost-user', '/run/volant/vms/web/vhost-vsock.sock', '--socket', '/run/volant/vms/web/vsock.sock'],
      ...['--cid', '42', '--metrics', '/run/volant/vms/web/vsock-device.metrics.json'],
    ]);
    const deep = `/run/${'d'.repeat(80)}`;
    assert.throws(
      () => vsockBackendArgv(specFor({ mode: 'vsock' }, { runDir: deep, vsock: { cid: 42, socketPath: `${deep}/vsock.sock` } })),
      (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && /too long for a Unix socket/.test(e.message),
    );
  });

  it('commas in option values are doubled so they cannot add QEMU options', () => {
    assert.equal(qemuOptValue('/a,b/c'), '/a,,b/c');
    assert.equal(qemuOptValue('x,,y'), 'x,,,,y');
    // The launch spec refuses commas in paths outright; the escaping is the second line of defence.
    const args = buildQemuArgs(specFor({ mode: 'vsock' }, { serialLogPath: '/l/a,server=on.log' }), tcg);
    assert.deepEqual(values(args, '-chardev'), ['file,id=serial0,path=/l/a,,server=on.log,append=on']);
  });
});

describe('KVM probe', () => {
  it('reads a boot to the root mount as success, anything short of it as failure', () => {
    const table: [string, boolean][] = [
      ['[    0.000000] Linux version 6.1.0 ...\n[    1.2] VFS: Unable to mount root fs on unknown-block(0,0)\n', true],
      ['[    0.000000] Linux version 6.1.0 ...\n[    0.9] Run /init as init process\n', true],
      ['[    0.000000] Linux version 6.1.0 ...\n[    0.1] tsc: Fast TSC calibration', false],
      ['', false],
      ['VFS: Unable to mount root fs', false],
    ];
    for (const [serial, booted] of table) assert.equal(kvmProbeBooted(serial), booted, serial.slice(0, 60));
  });

  it('a forced setting is used as is; no /dev/kvm means TCG without probing', async () => {
    assert.equal(await resolveAccel('kvm', '/nonexistent/qemu', '/nonexistent/kernel'), 'kvm');
    assert.equal(await resolveAccel('tcg', '/nonexistent/qemu', '/nonexistent/kernel'), 'tcg');
    assert.equal(await resolveAccel('auto', '/nonexistent/qemu', '/nonexistent/kernel', '/nonexistent/kvm'), 'tcg');
  });
});
