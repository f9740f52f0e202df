import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildKernelCmdline, type CmdlineNetwork } from '../../host/vmm/cmdline.js';
import { buildCloudHypervisorArgs, buildVmCreateBody } from '../../host/vmm/cloud-hypervisor.js';
import type { LaunchSpec } from '../../host/vmm/launcher.js';
import { macAddress, tapName } from '../../shared/names.js';
import { loadVmConfigValidator } from '../support/fake-cloud-hypervisor.js';

function specFor(name: string, network: CmdlineNetwork, extra: Partial<LaunchSpec> = {}): LaunchSpec {
  return {
    vmName: name,
    kernelPath: '/var/lib/volant/kernels/vmlinuz-6.1.0-56-cloud-amd64',
    initramfsPath: `/var/lib/volant/plugins/${name}/initramfs.img`,
    cmdline: buildKernelCmdline({ vmName: name, network, env: { A: 'b c' }, egress: { kind: 'vsock' } }),
    cpus: 2,
    memoryMb: 512,
    ...(network.mode === 'vsock' ? {} : { tap: { name: tapName(name), mac: macAddress(name) } }),
    vsock: { cid: 7, socketPath: `/run/volant/vms/${name}/vsock.sock` },
    serialLogPath: `/var/lib/volant/logs/${name}.serial.log`,
    runDir: `/run/volant/vms/${name}`,
    ...extra,
  };
}

const modes: CmdlineNetwork[] = [{ mode: 'bridged', ip: { address: '192.168.127.100', gateway: '192.168.127.1', prefix: 24 } }, { mode: 'dhcp', ip: 'dhcp' }, { mode: 'vsock' }];

describe('Cloud Hypervisor vm.create body', () => {
  // Closed = every object in the spec rejects keys it does not name, so a misspelled field fails here.
  const validateVmConfig = loadVmConfigValidator({ closed: true });

  for (const network of modes) {
    it(`${network.mode}: validates against VmConfig in the project's OpenAPI spec`, () => {
      const spec = specFor(`vm-${network.mode}`, network);
      const body = buildVmCreateBody(spec);
      assert.ok(validateVmConfig(body), JSON.stringify(validateVmConfig.errors));
      assert.deepEqual(body.payload, { kernel: spec.kernelPath, initramfs: spec.initramfsPath, cmdline: spec.cmdline });
      assert.deepEqual(body.cpus, { boot_vcpus: 2, max_vcpus: 2 });
      assert.deepEqual(body.memory, { size: 512 * 1024 * 1024 }, 'memory.size is in bytes');
      assert.deepEqual(body.vsock, { cid: 7, socket: spec.vsock.socketPath }, 'vsock is always present');
      assert.deepEqual(body.serial, { mode: 'File', file: spec.serialLogPath });
      assert.deepEqual(body.console, { mode: 'Off' });
      if (network.mode === 'vsock') assert.equal(body.net, undefined, 'vsock mode has no NIC');
      else assert.deepEqual(body.net, [{ tap: spec.tap!.name, mac: spec.tap!.mac, num_queues: 2, queue_size: 256 }]);
    });
  }

  it('the runtime image: pmem with discard_writes (or a read-only disk) validates against the spec', () => {
    const path = '/var/lib/volant/runtimes/ab.erofs';
    const bytes = 92 * 1024 * 1024;
    const pmem = buildVmCreateBody(specFor('rt-pmem', modes[0]!, { runtime: { path, bytes, device: 'pmem' } }));
    assert.ok(validateVmConfig(pmem), JSON.stringify(validateVmConfig.errors));
    assert.deepEqual(pmem.pmem, [{ file: path, discard_writes: true, id: 'runtime' }], 'CH opens it read-only and sizes it from the file');
    assert.equal(pmem.disks, undefined);
    const blk = buildVmCreateBody(specFor('rt-blk', modes[2]!, { runtime: { path, bytes, device: 'blk' } }));
    assert.ok(validateVmConfig(blk), JSON.stringify(validateVmConfig.errors));
    assert.deepEqual(blk.disks, [{ path, readonly: true, id: 'runtime' }]);
    assert.equal(blk.pmem, undefined);
    assert.equal(buildVmCreateBody(specFor('rt-none', modes[2]!)).pmem, undefined, 'a single-layout image attaches nothing');
    // The closed spec catches a misspelled pmem key or a wrong type.
    assert.equal(validateVmConfig({ ...pmem, pmem: [{ file: path, discard_write: true }] }), false);
    assert.equal(validateVmConfig({ ...pmem, pmem: [{ file: path, discard_writes: 'yes' }] }), false);
  });

  it('the validator is not a rubber stamp: broken bodies fail', () => {
    const good = buildVmCreateBody(specFor('x', modes[0]!));
    const broken: [string, Record<string, unknown>][] = [
      ['no payload', { ...good, payload: undefined }],
      ['cid 2 (the host)', { ...good, vsock: { cid: 2, socket: '/s' } }],
      ['vsock without socket', { ...good, vsock: { cid: 3 } }],
      ['memory as a string', { ...good, memory: { size: '512M' } }],
      ['zero vCPUs', { ...good, cpus: { boot_vcpus: 0, max_vcpus: 1 } }],
      ['serial mode lower-case', { ...good, serial: { mode: 'file', file: '/x' } }],
      ['misspelled net key', { ...good, net: [{ tapname: 'x' }] }],
    ];
    for (const [name, body] of broken) assert.equal(validateVmConfig(JSON.parse(JSON.stringify(body))), false, name);
  });

  it('argv: an API socket and an event monitor in the run directory, nothing else', () => {
    assert.deepEqual(buildCloudHypervisorArgs(specFor('a', { mode: 'vsock' }), '/opt/ch'), [
      '/opt/ch',
      '--api-socket',
      'path=/run/volant/vms/a/ch-api.sock',
      '--event-monitor',
      'path=/run/volant/vms/a/ch-events.json',
    ]);
  });
});
