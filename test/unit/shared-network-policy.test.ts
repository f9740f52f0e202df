import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type DhcpServer,
  egressServesPeer,
  type NetworkPolicy,
  networkPolicy,
  type PluginManifest,
  resolveNetworkConfig,
  type VmConfig,
  type VsockCapability,
} from '../../shared/index.js';

type Allow = 'none' | 'allowlist' | 'domains-only';
const PROXY: Record<Allow, object | undefined> = {
  none: undefined,
  allowlist: { allow_outbound: true, allowed_domains: ['allowed.test'] },
  'domains-only': { allowed_domains: ['allowed.test'] },
};

/** One line per policy, so the table below reads as the decision itself. */
function summary(p: NetworkPolicy): string {
  const agent = p.agent.via === 'tcp' ? `tcp:${p.agent.address}` : p.agent.via;
  const egress = p.egress ? `${p.egress.route.via}/${p.egress.peers.kind === 'address' ? `address:${p.egress.peers.address}` : p.egress.peers.kind}` : '-';
  const lock = p.lockdown ? `${p.lockdown.address}${p.lockdown.dhcp ? '+dhcp' : ''}${p.lockdown.confined ? ',confined' : ''}` : '-';
  return `${p.tap ? 'tap' : 'no-tap'} ${p.lease ? 'lease' : 'no-lease'} ip=${p.ipParam} agent=${agent} egress=${egress} lock=${lock}`;
}

function policy(mode: string, allow: Allow, vsock: VsockCapability, dhcpServer: DhcpServer = 'external'): NetworkPolicy {
  const proxy = PROXY[allow];
  return networkPolicy({
    manifest: { network: { mode: mode as 'bridged', ...(proxy ? { proxy } : {}) } },
    request: {},
    vsock,
    host: { taps: true, egress: true, dhcpServer },
  });
}

describe('networkPolicy: every mode × allowlist × VMM vsock capability (× DHCP server for dhcp)', () => {
  // [mode, allowlist, vsock, dhcp server, expected summary or NOT_SUPPORTED]
  const table: [string, Allow, VsockCapability, DhcpServer, string][] = [
    ['bridged', 'none', 'hybrid-socket', 'external', 'tap lease ip=static agent=hybrid-vsock egress=- lock=ipam'],
    ['bridged', 'none', 'af-vsock', 'external', 'tap lease ip=static agent=af-vsock egress=- lock=ipam'],
    ['bridged', 'none', 'none', 'external', 'tap lease ip=static agent=tcp:ipam egress=- lock=ipam'],
    ['bridged', 'allowlist', 'hybrid-socket', 'external', 'tap lease ip=static agent=hybrid-vsock egress=hybrid-vsock/vm-socket lock=ipam,confined'],
    ['bridged', 'allowlist', 'af-vsock', 'external', 'tap lease ip=static agent=af-vsock egress=tcp/address:ipam lock=ipam,confined'],
    ['bridged', 'allowlist', 'none', 'external', 'tap lease ip=static agent=tcp:ipam egress=tcp/address:ipam lock=ipam,confined'],
    ['bridged', 'domains-only', 'hybrid-socket', 'external', 'tap lease ip=static agent=hybrid-vsock egress=- lock=ipam,confined'],
    ['bridged', 'domains-only', 'af-vsock', 'external', 'tap lease ip=static agent=af-vsock egress=- lock=ipam,confined'],
    ['bridged', 'domains-only', 'none', 'external', 'tap lease ip=static agent=tcp:ipam egress=- lock=ipam,confined'],
    ['bridged', 'allowlist', 'none', 'volant', 'tap lease ip=static agent=tcp:ipam egress=tcp/address:ipam lock=ipam,confined'],

    ['dhcp', 'none', 'hybrid-socket', 'volant', 'tap no-lease ip=dhcp agent=hybrid-vsock egress=- lock=dhcp-lease+dhcp'],
    ['dhcp', 'none', 'af-vsock', 'volant', 'tap no-lease ip=dhcp agent=af-vsock egress=- lock=dhcp-lease+dhcp'],
    ['dhcp', 'none', 'none', 'volant', 'tap no-lease ip=dhcp agent=tcp:dhcp-lease egress=- lock=dhcp-lease+dhcp'],
    ['dhcp', 'allowlist', 'hybrid-socket', 'volant', 'tap no-lease ip=dhcp agent=hybrid-vsock egress=hybrid-vsock/vm-socket lock=dhcp-lease+dhcp,confined'],
    ['dhcp', 'allowlist', 'af-vsock', 'volant', 'tap no-lease ip=dhcp agent=af-vsock egress=tcp/address:dhcp-lease lock=dhcp-lease+dhcp,confined'],
    ['dhcp', 'allowlist', 'none', 'volant', 'tap no-lease ip=dhcp agent=tcp:dhcp-lease egress=tcp/address:dhcp-lease lock=dhcp-lease+dhcp,confined'],
    ['dhcp', 'domains-only', 'none', 'volant', 'tap no-lease ip=dhcp agent=tcp:dhcp-lease egress=- lock=dhcp-lease+dhcp,confined'],
    ['dhcp', 'none', 'hybrid-socket', 'external', 'tap no-lease ip=dhcp agent=hybrid-vsock egress=- lock=none+dhcp'],
    ['dhcp', 'none', 'af-vsock', 'external', 'tap no-lease ip=dhcp agent=af-vsock egress=- lock=none+dhcp'],
    ['dhcp', 'none', 'none', 'external', 'tap no-lease ip=dhcp agent=tcp:neighbour egress=- lock=none+dhcp'],
    ['dhcp', 'allowlist', 'hybrid-socket', 'external', 'tap no-lease ip=dhcp agent=hybrid-vsock egress=hybrid-vsock/vm-socket lock=none+dhcp,confined'],
    ['dhcp', 'allowlist', 'af-vsock', 'external', 'tap no-lease ip=dhcp agent=af-vsock egress=tcp/mac lock=none+dhcp,confined'],
    ['dhcp', 'allowlist', 'none', 'external', 'tap no-lease ip=dhcp agent=tcp:neighbour egress=tcp/mac lock=none+dhcp,confined'],
    ['dhcp', 'domains-only', 'af-vsock', 'external', 'tap no-lease ip=dhcp agent=af-vsock egress=- lock=none+dhcp,confined'],

    ['vsock', 'none', 'hybrid-socket', 'external', 'no-tap no-lease ip=none agent=hybrid-vsock egress=- lock=-'],
    ['vsock', 'none', 'af-vsock', 'external', 'no-tap no-lease ip=none agent=af-vsock egress=- lock=-'],
    ['vsock', 'none', 'none', 'external', 'NOT_SUPPORTED'],
    ['vsock', 'allowlist', 'hybrid-socket', 'external', 'no-tap no-lease ip=none agent=hybrid-vsock egress=hybrid-vsock/vm-socket lock=-'],
    ['vsock', 'allowlist', 'af-vsock', 'external', 'NOT_SUPPORTED'],
    ['vsock', 'allowlist', 'none', 'external', 'NOT_SUPPORTED'],
    ['vsock', 'domains-only', 'hybrid-socket', 'volant', 'no-tap no-lease ip=none agent=hybrid-vsock egress=- lock=-'],
    ['vsock', 'domains-only', 'af-vsock', 'volant', 'no-tap no-lease ip=none agent=af-vsock egress=- lock=-'],
    ['vsock', 'domains-only', 'none', 'volant', 'NOT_SUPPORTED'],
  ];
  for (const [mode, allow, vsock, dhcp, expected] of table) {
    test(`${mode} · ${allow} · ${vsock} · dhcp ${dhcp} → ${expected}`, () => {
      if (expected === 'NOT_SUPPORTED') {
        assert.throws(() => policy(mode, allow, vsock, dhcp), (e: Error & { code?: string }) => e.code === 'NOT_SUPPORTED' && /vsock/.test(e.message));
      } else {
        assert.equal(summary(policy(mode, allow, vsock, dhcp)), expected);
      }
    });
  }

  test('the allowlist the egress listener applies is the resolved one (request over manifest)', () => {
    const p = networkPolicy({
      manifest: { network: { mode: 'bridged', proxy: { allow_outbound: true, allowed_domains: ['a.example'] } } },
      request: { network: { proxy: { allowed_domains: ['b.example'] } } },
      vsock: 'none',
      host: { taps: true, egress: true, dhcpServer: 'external' },
    });
    assert.deepEqual(p.egress?.allowedDomains, ['b.example']);
  });

  test('an empty config means bridged', () => {
    const p = networkPolicy({ manifest: undefined, request: {}, vsock: 'none', host: { taps: true, egress: true, dhcpServer: 'external' } });
    assert.equal(summary(p), 'tap lease ip=static agent=tcp:ipam egress=- lock=ipam');
  });
});

describe('networkPolicy refusals', () => {
  const host = { taps: true, egress: true, dhcpServer: 'external' as const };
  test('an explicit address outside bridged mode is a validation error on /ip', () => {
    assert.throws(
      () => networkPolicy({ manifest: { network: { mode: 'dhcp' } }, request: { ip: '192.168.127.150' }, vsock: 'none', host }),
      (e: Error & { code?: string; problems?: { path: string }[] }) => e.code === 'VALIDATION_FAILED' && e.problems?.[0]?.path === '/ip',
    );
  });
  test('a tap without host networking, outbound without an egress proxy: NOT_SUPPORTED naming what is missing', () => {
    assert.throws(() => networkPolicy({ manifest: undefined, request: {}, vsock: 'none', host: { ...host, taps: false } }), /needs host networking/);
    const out = { network: { mode: 'vsock' as const, proxy: { allow_outbound: true } } };
    assert.throws(() => networkPolicy({ manifest: out, request: {}, vsock: 'hybrid-socket', host: { ...host, egress: false } }), /egress proxy/);
  });
  test('a vsock VM on a VMM without vsock is refused before anything is made', () => {
    assert.throws(() => networkPolicy({ manifest: { network: { mode: 'vsock' } }, request: {}, vsock: 'none', host }), /needs a VMM with a vsock device/);
  });
});

describe('egressServesPeer: the listener binding', () => {
  const vm = { address: '192.168.127.20', mac: '02:aa:bb:cc:dd:ee' };
  const table: [string, Parameters<typeof egressServesPeer>[0], { address?: string; mac?: string }, { address?: string; mac: string }, boolean][] = [
    ['own socket: always', { kind: 'vm-socket' }, {}, vm, true],
    ['address + MAC match', { kind: 'address', address: 'ipam' }, { address: '192.168.127.20', mac: '02:aa:bb:cc:dd:ee' }, vm, true],
    ['v4-mapped peer', { kind: 'address', address: 'ipam' }, { address: '::ffff:192.168.127.20', mac: '02:AA:BB:CC:DD:EE' }, vm, true],
    ['another address', { kind: 'address', address: 'ipam' }, { address: '192.168.127.21', mac: '02:aa:bb:cc:dd:ee' }, vm, false],
    ['right address, another MAC (ARP spoofing)', { kind: 'address', address: 'dhcp-lease' }, { address: '192.168.127.20', mac: '02:00:00:00:00:01' }, vm, false],
    ['right address, no neighbour entry', { kind: 'address', address: 'dhcp-lease' }, { address: '192.168.127.20' }, vm, false],
    ['lease not known yet', { kind: 'address', address: 'dhcp-lease' }, { address: '192.168.127.20', mac: '02:aa:bb:cc:dd:ee' }, { mac: vm.mac }, false],
    ['MAC binding: any address with the MAC', { kind: 'mac' }, { address: '192.168.127.99', mac: '02:aa:bb:cc:dd:ee' }, { mac: vm.mac }, true],
    ['MAC binding: another MAC', { kind: 'mac' }, { address: '192.168.127.99', mac: '02:aa:bb:cc:dd:ef' }, { mac: vm.mac }, false],
    ['MAC binding: unknown MAC', { kind: 'mac' }, { address: '192.168.127.99' }, { mac: vm.mac }, false],
  ];
  for (const [name, peers, peer, facts, served] of table) test(name, () => assert.equal(egressServesPeer(peers, peer, facts), served));
});

describe('resolveNetworkConfig: the VM config wins', () => {
  const manifest: Pick<PluginManifest, 'network'> = {
    network: { mode: 'vsock', subnet: '10.1.0.0/24', proxy: { allow_outbound: true, allowed_domains: ['a.example'] } },
  };
  test('manifest alone', () => {
    assert.deepEqual(resolveNetworkConfig(manifest), { mode: 'vsock', subnet: '10.1.0.0/24', allowOutbound: true, allowedDomains: ['a.example'] });
  });
  test('VM override of mode keeps the rest', () => {
    const vm: Pick<VmConfig, 'network'> = { network: { mode: 'bridged' } };
    assert.deepEqual(resolveNetworkConfig(manifest, vm), { mode: 'bridged', subnet: '10.1.0.0/24', allowOutbound: true, allowedDomains: ['a.example'] });
  });
  test('VM override of proxy fields field by field', () => {
    const vm: Pick<VmConfig, 'network'> = { network: { proxy: { allowed_domains: ['b.example'] } } };
    const r = resolveNetworkConfig(manifest, vm);
    assert.equal(r.allowOutbound, true);
    assert.deepEqual(r.allowedDomains, ['b.example']);
    const off = resolveNetworkConfig(manifest, { network: { proxy: { allow_outbound: false } } });
    assert.equal(off.allowOutbound, false);
  });
  test('nothing anywhere: no mode (bridged by policy), no outbound', () => {
    assert.deepEqual(resolveNetworkConfig(undefined, undefined), { allowOutbound: false, allowedDomains: [] });
  });
});
