/**
 * The QEMU launcher in bridged mode for real: inside a network namespace this test creates, a
 * bridge and a tap (`ip tuntap ... vnet_hdr`, as the host network layer makes them); QEMU runs
 * there through `LaunchSpec.commandPrefix` (`ip netns exec`). Debian's cloud kernel boots under
 * TCG with a busybox initramfs that loads the virtio-net modules and configures eth0 from the
 * `ip=` the launcher's command line carries. Checks: the guest's NIC has the spec's MAC, the
 * guest answers a ping on the bridge, and stop() ends QEMU. Needs root; one VM, 256 MiB.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildKernelCmdline } from '../../host/vmm/cmdline.js';
import type { VmProcess } from '../../host/vmm/launcher.js';
import { createQemuLauncher } from '../../host/vmm/qemu.js';
import { macAddress } from '../../shared/names.js';
import { testKernel } from '../support/kernel.js';
import { createNetns, type NetNs, netnsSkipReason } from '../support/netns.js';
import { BUSYBOX, makeTestInitramfs, VIRTIO_NET_MODULES, waitForSerial } from '../support/vmm-initramfs.js';
import { skipUnlessStrict } from '../support/strict.js';
import { eventually } from '../support/eventually.js';

const BRIDGE = 'vbr-vmm';
const TAP = 'vtap-vmm';
const GATEWAY = '10.213.7.1';
const GUEST = '10.213.7.50';
const PING_TIMEOUT_MS = 60_000;

const skip = skipUnlessStrict(netnsSkipReason() || (BUSYBOX ? false : 'busybox is not installed'));

describe('QEMU launcher, bridged mode on a real tap in a namespace', { skip }, () => {
  const root = mkdtempSync(join(tmpdir(), `volant-vmm-bridged-${process.pid}-`));
  let ns: NetNs | undefined;
  let vm: VmProcess | undefined;
  let kernel: Awaited<ReturnType<typeof testKernel>>;

  before(async () => {
    kernel = await testKernel();
    makeTestInitramfs(join(root, 'initramfs.cpio'), root, { modulesDir: kernel.modulesDir, names: VIRTIO_NET_MODULES });
    ns = await createNetns('vmm');
    await ns.run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge']);
    await ns.run(['ip', 'addr', 'add', `${GATEWAY}/24`, 'dev', BRIDGE]);
    await ns.run(['ip', 'link', 'set', BRIDGE, 'up']);
    await ns.run(['ip', 'tuntap', 'add', TAP, 'mode', 'tap', 'vnet_hdr']);
    await ns.run(['ip', 'link', 'set', TAP, 'master', BRIDGE]);
    await ns.run(['ip', 'link', 'set', TAP, 'up']);
  });

  after(async () => {
    if (vm) {
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {}
      await vm.exited;
    }
    await ns?.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  it('the guest gets the MAC and the address from the spec and answers on the bridge', async () => {
    const name = 'bridged1';
    const runDir = join(root, 'run', name);
    const serialLogPath = join(root, `${name}.serial.log`);
    const launcher = createQemuLauncher({ accel: 'tcg', defaultStopTimeoutMs: 1000 });
    vm = await launcher.launch({
      vmName: name,
      kernelPath: kernel.vmlinuz,
      initramfsPath: join(root, 'initramfs.cpio'),
      cmdline: buildKernelCmdline({ vmName: name, network: { mode: 'bridged', ip: { address: GUEST, gateway: GATEWAY, prefix: 24 } } }),
      cpus: 1,
      memoryMb: 256,
      tap: { name: TAP, mac: macAddress(name) },
      vsock: { cid: 3, socketPath: join(runDir, 'vsock.sock') },
      serialLogPath,
      runDir,
      commandPrefix: ns!.prefix,
    });
    const serial = await waitForSerial(serialLogPath, /NET-UP mac=\S+ addr=\S+/, vm);
    assert.match(serial, new RegExp(`NET-UP mac=${macAddress(name)} addr=${GUEST.replaceAll('.', '\\.')}`));

    // Each ping waits up to 2 s for its answer; the guest's ARP and stack may need a few.
    await eventually(async () => (await ns!.exec([BUSYBOX!, 'ping', '-c', '1', '-W', '2', GUEST])).code === 0, { what: `guest ${GUEST} answering a ping from the bridge`, timeoutMs: PING_TIMEOUT_MS }).catch((e: Error) => {
      throw new Error(`${e.message}; serial:\n${readFileSync(serialLogPath, 'utf8').slice(-2000)}`);
    });

    assert.deepEqual(await vm.stop(), { code: 0, signal: null });
  });
});
