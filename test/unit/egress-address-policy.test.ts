import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPolicy, HOST_RANGES, hostDeniedAddresses, ipv6ToBigInt, parseAnyCidr } from '../../host/egress/address-policy.js';

const strict = new AddressPolicy({ deniedAddresses: ['198.18.0.1', '192.168.127.1'] });

describe('AddressPolicy.check: every refused class, and what passes', () => {
  const table: [string, boolean, string, string?][] = [
    ['93.184.216.34', true, 'public'],
    ['8.8.8.8', true, 'public'],
    ['1.1.1.1', true, 'public'],
    ['127.0.0.1', false, 'loopback'],
    ['127.255.255.254', false, 'loopback'],
    ['10.0.0.1', false, 'private'],
    ['172.16.0.1', false, 'private'],
    ['172.31.255.255', false, 'private'],
    ['172.32.0.1', true, 'public'],
    ['192.168.1.1', false, 'private'],
    ['192.168.127.1', false, 'host-address'],
    ['169.254.169.254', false, 'link-local'],
    ['100.64.0.1', false, 'cgnat'],
    ['100.127.255.255', false, 'cgnat'],
    ['100.128.0.1', true, 'public'],
    ['0.0.0.0', false, 'unspecified'],
    ['0.1.2.3', false, 'unspecified'],
    ['224.0.0.1', false, 'multicast'],
    ['239.255.255.250', false, 'multicast'],
    ['255.255.255.255', false, 'broadcast'],
    ['240.0.0.1', false, 'reserved'],
    ['192.0.0.8', false, 'reserved'],
    ['192.0.2.1', false, 'documentation'],
    ['198.51.100.1', false, 'documentation'],
    ['203.0.113.1', false, 'documentation'],
    ['198.18.0.1', false, 'host-address'],
    ['198.19.0.1', false, 'reserved'],
    ['::', false, 'unspecified'],
    ['::1', false, 'loopback'],
    ['0:0:0:0:0:0:0:1', false, 'loopback'],
    ['::ffff:127.0.0.1', false, 'ipv4-mapped', '127.0.0.1'],
    ['::ffff:7f00:1', false, 'ipv4-mapped', '127.0.0.1'],
    ['::ffff:8.8.8.8', false, 'ipv4-mapped', '8.8.8.8'],
    ['::127.0.0.1', false, 'ipv4-compatible', '127.0.0.1'],
    ['64:ff9b::7f00:1', false, 'nat64', '127.0.0.1'],
    ['64:ff9b::a9fe:a9fe', false, 'nat64', '169.254.169.254'],
    ['64:ff9b::808:808', true, 'public'],
    // Local-use NAT64 (64:ff9b:1::/48) read with its /48 layout: IPv4 in bits 48-63 and 72-87.
    ['64:ff9b:1:808:8:800::', true, 'public'],
    ['64:ff9b:1:a00:0:100::', false, 'nat64', '10.0.0.1'],
    ['64:ff9b:1:a9fe:a9:fe00::', false, 'nat64', '169.254.169.254'],
    ['64:ff9b:1:7f00:0:100::', false, 'nat64', '127.0.0.1'],
    // The last 32 bits look public, the /48 layout says 10.0.0.1 (and the suffix is not zero).
    ['64:ff9b:1:a00:0:100:808:808', false, 'nat64'],
    ['64:ff9b:1::808:808', false, 'nat64'],
    ['64:ff9b:1::a00:1', false, 'nat64'],
    ['64:ff9b:1:808:ff08:800::', false, 'nat64'],
    ['2002:7f00:1::1', false, '6to4', '127.0.0.1'],
    ['2002:c0a8:7f01::', false, '6to4', '192.168.127.1'],
    ['2002:808:808::1', true, 'public'],
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', false, 'teredo', '127.0.0.1'],
    ['2001:0:4136:e378:8000:63bf:f7f7:f7f7', true, 'public'],
    ['2001:0:a00:1:8000:63bf:f7f7:f7f7', false, 'teredo', '10.0.0.1'],
    ['fe80::1', false, 'link-local'],
    ['febf::1', false, 'link-local'],
    ['fec0::1', false, 'reserved'],
    ['fc00::1', false, 'unique-local'],
    ['fdff::1', false, 'unique-local'],
    ['ff02::1', false, 'multicast'],
    ['2001:db8::1', false, 'documentation'],
    ['3fff::1', false, 'documentation'],
    ['2001:10::1', false, 'reserved'],
    ['100::1', false, 'reserved'],
    ['4000::1', false, 'reserved'],
    ['2606:4700:4700::1111', true, 'public'],
    ['2a00:1450:4001::200e', true, 'public'],
    ['not-an-ip', false, 'reserved'],
    ['fe80::1%eth0', false, 'reserved'],
  ];
  for (const [addr, allowed, cls, embedded] of table) {
    it(`${addr} → ${allowed ? 'allowed' : `refused (${cls})`}`, () => {
      const v = strict.check(addr);
      assert.equal(v.allowed, allowed);
      assert.equal(v.class, cls);
      if (embedded) assert.equal(v.embedded, embedded);
    });
  }
});

describe('allow_private exceptions', () => {
  const p = new AddressPolicy({ allowPrivate: ['127.0.0.0/8', '10.1.0.0/16', 'fd00:1::/32'], deniedAddresses: ['127.0.0.53'] });
  const table: [string, boolean][] = [
    ['127.0.0.1', true],
    ['127.0.0.53', false],
    ['10.1.2.3', true],
    ['10.2.0.1', false],
    ['fd00:1::5', true],
    ['fd00:2::5', false],
    ['::1', false],
    ['::ffff:127.0.0.1', false],
    ['64:ff9b::7f00:1', false],
    ['169.254.169.254', false],
  ];
  for (const [addr, allowed] of table) {
    it(`${addr} → ${allowed}`, () => assert.equal(p.check(addr).allowed, allowed));
  }
});

describe('allow_private never re-opens the host', () => {
  // The daemon passes every address of every host interface plus HOST_RANGES.
  const host = hostDeniedAddresses(['192.168.127.1', '10.99.0.1', '127.0.0.1', '::1', 'fe80::5054:ff:fe12:3456%vbr0', '2001:db8:1::1']);
  const everything = ['0.0.0.0/0', '::/0'];
  const table: { name: string; allow: string[]; address: string; allowed: boolean; cls?: string }[] = [
    { name: 'the bridge address, bridge subnet allowed', allow: ['192.168.127.0/24'], address: '192.168.127.1', allowed: false, cls: 'host-address' },
    { name: 'another machine on the bridge subnet stays allowed', allow: ['192.168.127.0/24'], address: '192.168.127.50', allowed: true },
    { name: 'the uplink address, its subnet allowed', allow: ['10.99.0.0/24'], address: '10.99.0.1', allowed: false, cls: 'host-address' },
    { name: 'the world next door stays allowed', allow: ['10.99.0.0/24'], address: '10.99.0.2', allowed: true },
    { name: 'every loopback address, 127/8 allowed', allow: ['127.0.0.0/8'], address: '127.0.0.2', allowed: false, cls: 'host-address' },
    { name: '0.0.0.0 dials the host', allow: everything, address: '0.0.0.0', allowed: false, cls: 'host-address' },
    { name: 'IPv6 loopback', allow: everything, address: '::1', allowed: false, cls: 'host-address' },
    { name: 'a global IPv6 address of the host', allow: everything, address: '2001:db8:1::1', allowed: false, cls: 'host-address' },
    { name: 'the host embedded in NAT64', allow: everything, address: '64:ff9b::c0a8:7f01', allowed: false, cls: 'nat64' },
    { name: 'the host embedded in 6to4', allow: everything, address: '2002:c0a8:7f01::1', allowed: false, cls: '6to4' },
    { name: 'the host as a mapped address', allow: everything, address: '::ffff:192.168.127.1', allowed: false, cls: 'ipv4-mapped' },
  ];
  for (const t of table) {
    it(`${t.name}: ${t.address} → ${t.allowed ? 'allowed' : `refused (${t.cls})`}`, () => {
      const v = new AddressPolicy({ allowPrivate: t.allow, deniedAddresses: host }).check(t.address);
      assert.equal(v.allowed, t.allowed, JSON.stringify(v));
      if (t.cls) assert.equal(v.class, t.cls);
    });
  }
  it('HOST_RANGES are always part of the denial; zone-scoped addresses are skipped, duplicates merged', () => {
    for (const r of HOST_RANGES) assert.ok(host.includes(r), r);
    assert.ok(!host.some((a) => a.includes('%')));
    assert.equal(hostDeniedAddresses(['127.0.0.0/8']).filter((a) => a === '127.0.0.0/8').length, 1);
  });
});

describe('parsing', () => {
  it('expands IPv6 text forms', () => {
    assert.equal(ipv6ToBigInt('1:2:3:4:5:6:7:8'), 0x00010002000300040005000600070008n);
    assert.equal(ipv6ToBigInt('::ffff:1.2.3.4'), 0xffff01020304n);
    assert.equal(ipv6ToBigInt('[::1]'), 1n);
    assert.equal(ipv6ToBigInt('1::'), 1n << 112n);
    assert.equal(ipv6ToBigInt('1:2:3:4:5:6:7'), undefined);
    assert.equal(ipv6ToBigInt('::ffff:1.2.3.04'), undefined);
  });
  it('refuses malformed CIDRs with a message naming the input', () => {
    for (const bad of ['10.0.0.0/33', 'fd00::/129', '10.0.0/8', '0x7f.1/8', 'x/8', '10.0.0.0/-1', '10.0.0.0/ 8']) {
      assert.throws(() => parseAnyCidr(bad), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && e.message.includes(JSON.stringify(bad)));
    }
    assert.throws(() => new AddressPolicy({ deniedAddresses: ['10.0.0.0/33'] }), /not a CIDR/);
    assert.equal(parseAnyCidr('10.1.2.3/8').network, 10n << 24n);
  });
});
