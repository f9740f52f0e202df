/**
 * The daemon's per-VM egress listeners (host/daemon/egress.ts) on loopback: which peers a TCP
 * listener serves (the VM's address and MAC, Volant's DHCP lease as it moves, or the MAC alone),
 * and that no `allow_private` range re-opens the host's own addresses. The "bridge" is loopback
 * here (host 127.0.0.1, VMs 127.0.0.x) and the neighbour table is a stand-in function, because
 * the listener reads the kernel's table for the bridge; the e2e suite runs the real one.
 */

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { VolantConfig } from '../../host/config/schema.js';
import { createEgressStarter } from '../../host/daemon/egress.js';
import type { EgressHandle } from '../../host/orchestrator/ports.js';
import { tryParseCidr } from '../../shared/ipv4.js';
import type { EgressPeers } from '../../shared/network-policy.js';
import { type DnsServer, startDnsServer } from '../support/dns-server.js';

const VM_MAC = '02:aa:bb:cc:dd:01';
const OTHER_MAC = '02:aa:bb:cc:dd:02';

/** A CONNECT from `localAddress`; resolves with the status and the refusal reason. */
function connectVia(port: number, localAddress: string, target: string): Promise<{ status: number; reason?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress }, () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    let text = '';
    s.on('data', (c) => {
      text += c;
    });
    s.on('error', reject);
    s.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      try {
        const e = (JSON.parse(body) as { error: { message: string; details?: { reason?: string } } }).error;
        resolve({ status, reason: e.details?.reason, message: e.message });
      } catch {
        resolve({ status });
      }
    });
  });
}

describe('egress listener peer binding and host addresses', () => {
  let dns: DnsServer;
  const neighbours = new Map<string, string>();
  const handles: EgressHandle[] = [];
  let start: ReturnType<typeof createEgressStarter>['start'];

  before(async () => {
    dns = await startDnsServer({
      records: {
        'loop.allowed.test': { a: ['127.0.0.7'] },
        'bridge.allowed.test': { a: ['127.0.0.1'] },
        'uplink.allowed.test': { a: ['10.77.1.1'] },
      },
    });
    const cfg = {
      egress: {
        // Everything private is allowed: the host's addresses must stay refused anyway.
        allow_private: ['127.0.0.0/8', '10.0.0.0/8'],
        upgrade_to_https: false,
        connect_timeout_ms: 300,
        dns_timeout_ms: 1000,
        dns_servers: [dns.address],
        max_tunnels_per_vm: 8,
        requests_per_second_per_vm: 1000,
      },
    } as unknown as Pick<VolantConfig, 'egress'>;
    ({ start } = createEgressStarter(cfg, tryParseCidr('127.0.0.1/8')!, { bridge: 'lo', interfaceAddresses: () => ['127.0.0.1', '10.77.1.1'], macOf: (a) => neighbours.get(a) }));
  });
  after(async () => {
    for (const h of handles) await h.close();
    await dns?.close();
  });

  async function listener(peers: EgressPeers, guest: () => { address?: string; mac: string }): Promise<number> {
    const h = await start({ name: 'vm1', vsockSocketPath: '/nonexistent/vsock.sock', egress: { route: { via: 'tcp' }, peers, allowedDomains: ['*.allowed.test'] }, guest });
    handles.push(h);
    assert.equal(h.route.kind, 'tcp');
    return (h.route as { port: number }).port;
  }

  it('address binding: the VM address with the VM MAC is served; another address, or the right address with another MAC, is not', async () => {
    neighbours.clear();
    neighbours.set('127.0.0.2', VM_MAC);
    neighbours.set('127.0.0.3', OTHER_MAC);
    const port = await listener({ kind: 'address', address: 'ipam' }, () => ({ address: '127.0.0.2', mac: VM_MAC }));
    // Served: the allowlist decides (here: allowed name, refused for its address below).
    assert.equal((await connectVia(port, '127.0.0.2', 'nope.example:443')).reason, 'not-allowlisted');
    assert.equal((await connectVia(port, '127.0.0.3', 'nope.example:443')).reason, 'no-policy', 'another VM cannot use this listener');
    neighbours.set('127.0.0.2', OTHER_MAC);
    assert.equal((await connectVia(port, '127.0.0.2', 'nope.example:443')).reason, 'no-policy', 'the right address from another MAC (ARP spoofing) is refused');
  });

  it("DHCP lease binding follows the lease: nothing before it is known, then only the leased address", async () => {
    neighbours.clear();
    neighbours.set('127.0.0.4', VM_MAC);
    neighbours.set('127.0.0.5', VM_MAC);
    let lease: string | undefined;
    const port = await listener({ kind: 'address', address: 'dhcp-lease' }, () => ({ address: lease, mac: VM_MAC }));
    assert.equal((await connectVia(port, '127.0.0.4', 'nope.example:443')).reason, 'no-policy', 'no lease known yet');
    lease = '127.0.0.4';
    assert.equal((await connectVia(port, '127.0.0.4', 'nope.example:443')).reason, 'not-allowlisted');
    lease = '127.0.0.5';
    assert.equal((await connectVia(port, '127.0.0.4', 'nope.example:443')).reason, 'no-policy', 'the old lease is no longer served');
    assert.equal((await connectVia(port, '127.0.0.5', 'nope.example:443')).reason, 'not-allowlisted');
  });

  it('MAC binding (a DHCP server Volant does not run): any address whose neighbour entry carries the VM MAC', async () => {
    neighbours.clear();
    neighbours.set('127.0.0.6', VM_MAC);
    neighbours.set('127.0.0.3', OTHER_MAC);
    const port = await listener({ kind: 'mac' }, () => ({ mac: VM_MAC }));
    assert.equal((await connectVia(port, '127.0.0.6', 'nope.example:443')).reason, 'not-allowlisted');
    assert.equal((await connectVia(port, '127.0.0.3', 'nope.example:443')).reason, 'no-policy');
    assert.equal((await connectVia(port, '127.0.0.8', 'nope.example:443')).reason, 'no-policy', 'no neighbour entry, no service');
  });

  it('allow_private covering everything still refuses every host address (loopback range, bridge, other interfaces)', async () => {
    neighbours.clear();
    neighbours.set('127.0.0.2', VM_MAC);
    const port = await listener({ kind: 'address', address: 'ipam' }, () => ({ address: '127.0.0.2', mac: VM_MAC }));
    for (const [name, address] of [
      ['loop.allowed.test', '127.0.0.7'],
      ['bridge.allowed.test', '127.0.0.1'],
      ['uplink.allowed.test', '10.77.1.1'],
    ] as const) {
      const r = await connectVia(port, '127.0.0.2', `${name}:443`);
      assert.equal(r.status, 403, `${name}: ${JSON.stringify(r)}`);
      assert.equal(r.reason, 'blocked-address');
      assert.match(r.message ?? '', new RegExp(`${address.replace(/\./g, '\\.')} \\(host-address\\).*never an exception`));
    }
  });
});
