/**
 * kestrel's lease announcement (guest/network/apply.ts `announceLease`) teaches the host the
 * guest's IP↔MAC, so `LinuxNetworkManager.neighbourAddress` finds a dhcp guest on the bridge.
 * Real kernel pieces: a "host" namespace with a bridge, a "guest" namespace behind a veth on it
 * (standing in for the VM's tap), the real announcement sent from inside the guest namespace.
 * Nothing else on the link talks first, so the neighbour entry can only come from the
 * announcement (dnsmasq would also leave one when it unicasts its offer; other DHCP servers do not).
 *
 * Needs root (network namespaces); skips otherwise.
 */

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LinuxNetworkManager } from '../../host/network/linux.js';
import { REPO_ROOT } from '../support/kernel.js';
import { linkNamespaces, netnsSkipReason, withNetns } from '../support/netns.js';
import { skipUnlessStrict } from '../support/strict.js';

const HOST_IP = '10.77.0.1';
const GUEST_IP = '10.77.0.37';
const BRIDGE = 'vbrann0';

test('the lease announcement puts the guest IP and MAC into the host bridge neighbour table', { skip: skipUnlessStrict(netnsSkipReason()), timeout: 60_000 }, async () => {
  await withNetns('dhann', 2, async (host, guest) => {
    await host.run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge']);
    await host.run(['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE]);
    await host.run(['ip', 'link', 'set', BRIDGE, 'up']);
    await linkNamespaces(host, 'vann-h', guest, 'eth0');
    await host.run(['ip', 'link', 'set', 'vann-h', 'master', BRIDGE]);
    await host.run(['ip', 'link', 'set', 'vann-h', 'up']);
    await guest.run(['ip', 'addr', 'add', `${GUEST_IP}/24`, 'dev', 'eth0']);
    await guest.run(['ip', 'link', 'set', 'eth0', 'up']);
    const mac = (JSON.parse(await guest.run(['ip', '-j', 'link', 'show', 'eth0'])) as { address: string }[])[0]!.address;

    const network = new LinuxNetworkManager(host.runner);
    assert.equal(await network.neighbourAddress(BRIDGE, mac), undefined, 'nothing known before the guest speaks');

    const apply = join(REPO_ROOT, 'guest', 'network', 'apply.ts');
    const r = await guest.exec([process.execPath, '--import', 'tsx', '-e', `import(${JSON.stringify(apply)}).then((m) => m.announceLease(${JSON.stringify(HOST_IP)}))`]);
    assert.equal(r.code, 0, r.stderr);

    let found: string | undefined;
    for (let i = 0; i < 20 && found === undefined; i++) {
      found = await network.neighbourAddress(BRIDGE, mac);
      if (found === undefined) await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(found, GUEST_IP);
    assert.equal(await network.neighbourAddress(BRIDGE, '52:54:00:00:00:01'), undefined, 'another MAC is not this guest');
  });
});
