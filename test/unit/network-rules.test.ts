// The pure parts of host networking: name checks, the firewall plan, parsing our own rules back
// out of a listing, argv formatting, the dry-run recorder, and the noop manager.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createNetworkManager, NoopNetworkManager } from '../../host/network/index.js';
import { assertInterfaceName, assertMac } from '../../host/network/ifname.js';
import { bridgeMac, hostSideMac, LinuxNetworkManager } from '../../host/network/linux.js';
import { addArgv, checkArgv, deleteArgv, lockdownRules, natRules, rulesForTap, subnetOf, swapGuardRule, VM_CHAINS } from '../../host/network/rules.js';
import { DryRunRunner, formatCommand } from '../../host/network/runner.js';
import { isVolantError } from '../../shared/errors.js';
import { tapName } from '../../shared/names.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return isVolantError(e) ? e.code : 'not a VolantError';
  }
}

describe('interface names', () => {
  const cases: [unknown, boolean][] = [
    ['vbr0', true],
    ['br-test.100', true],
    [tapName('a-very-long-vm-name-that-is-ok'), true],
    ['a'.repeat(15), true],
    ['a'.repeat(16), false],
    ['', false],
    ['-f', false],
    ['.', false],
    ['..', false],
    ['a/b', false],
    ['a b', false],
    ['a;b', false],
    ['$(id)', false],
    ['tap\n0', false],
    ['tap0\0', false],
    ['täp0', false],
    [42, false],
    [undefined, false],
  ];
  for (const [name, ok] of cases) {
    test(`${JSON.stringify(name)} is ${ok ? 'accepted' : 'refused'}`, () => {
      assert.equal(code(() => assertInterfaceName(name)), ok ? undefined : 'INVALID_ARGUMENT');
    });
  }

  test('MACs: unicast lower-case only', () => {
    assert.equal(code(() => assertMac('02:ab:cd:ef:01:23')), undefined);
    for (const bad of ['01:00:5e:00:00:01', '02:AB:CD:EF:01:23', '02:ab:cd:ef:01', '02-ab-cd-ef-01-23', '02:ab:cd:ef:01:23 ', 'ff:ff:ff:ff:ff:ff']) {
      assert.equal(code(() => assertMac(bad)), 'INVALID_ARGUMENT', bad);
    }
  });

  test('the tap MAC differs from the guest MAC in the first byte only; the bridge MAC is stable and local', () => {
    assert.equal(hostSideMac('02:11:22:33:44:55'), 'fe:11:22:33:44:55');
    assert.equal(bridgeMac('vbr0'), bridgeMac('vbr0'));
    assert.notEqual(bridgeMac('vbr0'), bridgeMac('vbr1'));
    assert.match(bridgeMac('vbr0'), /^02(:[0-9a-f]{2}){5}$/);
  });
});

describe('firewall plan', () => {
  test('NAT: MASQUERADE the subnet (host bits dropped) out of other interfaces; forward out and replies in', () => {
    assert.equal(subnetOf('192.168.127.1/24'), '192.168.127.0/24');
    const rules = natRules({ bridge: 'vbr0', subnet: '10.200.3.1/16' });
    assert.deepEqual(
      rules.map((r) => addArgv(r).join(' ')),
      [
        'iptables -w -t nat -A POSTROUTING -s 10.200.0.0/16 ! -o vbr0 -m comment --comment volant:nat -j MASQUERADE',
        'iptables -w -t filter -A FORWARD -i vbr0 -m comment --comment volant:nat -j ACCEPT',
        'iptables -w -t filter -A FORWARD -o vbr0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment volant:nat -j ACCEPT',
      ],
    );
    assert.equal(checkArgv(rules[0]!)[4], '-C');
    assert.equal(deleteArgv(rules[0]!)[4], '-D');
  });

  const base = { tap: 'vtweb-abc', mac: '02:11:22:33:44:55', bridge: 'vbr0', hostIp: '192.168.127.1' };
  const lines = (spec: Parameters<typeof lockdownRules>[0]): string[] => lockdownRules(spec).map((r) => addArgv(r).join(' '));
  const SPOOF = 'ebtables -t filter -A VOLANT-SPOOF -i vtweb-abc';
  const ISOLATE = 'ebtables -t filter -A VOLANT-ISOLATE -i vtweb-abc';
  const IN = 'iptables -w -t filter -A VOLANT-IN -i vbr0 -m mac --mac-source 02:11:22:33:44:55';
  const FWD = 'iptables -w -t filter -A VOLANT-FWD -i vbr0 -m mac --mac-source 02:11:22:33:44:55';
  const TAG = '-m comment --comment volant:vtweb-abc';
  // VLAN-tagged frames (802.1Q, 802.1ad) are dropped outright: the kernel lifts the tag off
  // before the bridge, so no IPv4 or ARP rule would see them, and a priority tag (id 0) is
  // taken as untagged by the receiving stack.
  const guard = [
    `${SPOOF} -s ! 02:11:22:33:44:55 -j DROP`,
    `${SPOOF} -p 0x8100 -j DROP`,
    `${SPOOF} -p 0x88a8 -j DROP`,
    `${SPOOF} -p IPv6 -j DROP`,
    `${SPOOF} -p IPv4 --ip-proto udp --ip-sport 67 -j DROP`,
    `${SPOOF} -p ARP --arp-mac-src ! 02:11:22:33:44:55 -j DROP`,
  ];

  test('bridged with an allowlist: MAC, ARP and IPv4 bound to the lease; isolated; only the egress port on the host', () => {
    assert.deepEqual(lines({ ...base, address: '192.168.127.100', dhcp: false, confine: { egressPort: 3128 } }), [
      ...guard,
      `${SPOOF} -p ARP --arp-ip-src ! 192.168.127.100 -j DROP`,
      `${SPOOF} -p IPv4 --ip-src ! 192.168.127.100 -j DROP`,
      `${ISOLATE} -p IPv4 -j DROP`,
      `${IN} -d 192.168.127.1/32 -p tcp --dport 3128 ${TAG} -j ACCEPT`,
      `${IN} -m conntrack --ctstate RELATED,ESTABLISHED ${TAG} -j ACCEPT`,
      `${IN} ${TAG} -j DROP`,
      `${FWD} ${TAG} -j DROP`,
      `iptables -w -t filter -A VOLANT-FWD -d 192.168.127.100 ${TAG} -j DROP`,
    ]);
    assert.equal(checkArgv(lockdownRules({ ...base, address: '10.0.0.5', dhcp: false })[0]!)[3], '--check', 'ebtables -C means change-counters; the check is --check');
  });

  test('without an allowlist only the spoof guard: nothing at L3, no isolation (plain NAT)', () => {
    assert.deepEqual(lines({ ...base, address: '192.168.127.100', dhcp: false }), [
      ...guard,
      `${SPOOF} -p ARP --arp-ip-src ! 192.168.127.100 -j DROP`,
      `${SPOOF} -p IPv4 --ip-src ! 192.168.127.100 -j DROP`,
    ]);
  });

  test("dhcp before Volant's lease: IPv4 only as a DHCP client broadcast; DHCP to the host accepted", () => {
    assert.deepEqual(lines({ ...base, address: 'awaiting-lease', dhcp: true, confine: {} }), [
      ...guard,
      `${SPOOF} -p IPv4 --ip-dst ! 255.255.255.255 -j DROP`,
      `${SPOOF} -p IPv4 --ip-proto ! udp -j DROP`,
      `${SPOOF} -p IPv4 --ip-proto udp --ip-dport ! 67 -j DROP`,
      `${ISOLATE} -p IPv4 -j DROP`,
      `${IN} -p udp --sport 68 --dport 67 ${TAG} -j ACCEPT`,
      `${IN} -m conntrack --ctstate RELATED,ESTABLISHED ${TAG} -j ACCEPT`,
      `${IN} ${TAG} -j DROP`,
      `${FWD} ${TAG} -j DROP`,
    ]);
  });

  test("dhcp once Volant's lease is known: bound like bridged, DHCP (renewal, rebinding) still passes", () => {
    assert.deepEqual(lines({ ...base, address: '192.168.127.20', dhcp: true, confine: { egressPort: 40001 } }), [
      ...guard,
      `${SPOOF} -p ARP --arp-ip-src ! 192.168.127.20 -j DROP`,
      `${SPOOF} -p IPv4 --ip-src ! 192.168.127.20 --ip-dst ! 255.255.255.255 -j DROP`,
      `${SPOOF} -p IPv4 --ip-src ! 192.168.127.20 --ip-proto ! udp -j DROP`,
      `${SPOOF} -p IPv4 --ip-src ! 192.168.127.20 --ip-proto udp --ip-dport ! 67 -j DROP`,
      `${ISOLATE} -p IPv4 -j DROP`,
      `${IN} -d 192.168.127.1/32 -p tcp --dport 40001 ${TAG} -j ACCEPT`,
      `${IN} -p udp --sport 68 --dport 67 ${TAG} -j ACCEPT`,
      `${IN} -m conntrack --ctstate RELATED,ESTABLISHED ${TAG} -j ACCEPT`,
      `${IN} ${TAG} -j DROP`,
      `${FWD} ${TAG} -j DROP`,
      `iptables -w -t filter -A VOLANT-FWD -d 192.168.127.20 ${TAG} -j DROP`,
    ]);
  });

  test('dhcp from a server Volant does not run: bound by MAC only; DHCP reaches that server on the host or across the bridge', () => {
    assert.deepEqual(lines({ ...base, address: 'unbound', dhcp: true, confine: { egressPort: 40001 } }), [
      ...guard,
      `${ISOLATE} -p IPv4 --ip-proto ! udp -j DROP`,
      `${ISOLATE} -p IPv4 --ip-proto udp --ip-dport ! 67 -j DROP`,
      `${IN} -d 192.168.127.1/32 -p tcp --dport 40001 ${TAG} -j ACCEPT`,
      `${IN} -p udp --sport 68 --dport 67 ${TAG} -j ACCEPT`,
      `${IN} -m conntrack --ctstate RELATED,ESTABLISHED ${TAG} -j ACCEPT`,
      `${IN} ${TAG} -j DROP`,
      `${FWD} -p udp --sport 68 --dport 67 ${TAG} -j ACCEPT`,
      `${FWD} ${TAG} -j DROP`,
    ]);
  });

  test('the swap guard cuts the whole tap, first in the spoof chain', () => {
    assert.equal(addArgv(swapGuardRule('vt0')).join(' '), 'ebtables -t filter -I VOLANT-SPOOF 1 -i vt0 -j DROP');
  });

  test('lockdown refuses every bad field before producing a rule', () => {
    const good = { tap: 'vt0', address: '10.0.0.5', mac: '02:11:22:33:44:55', bridge: 'vbr0', hostIp: '10.0.0.1', dhcp: false, confine: { egressPort: 3128 } };
    const bad: Record<string, unknown>[] = [
      { tap: 'vt0;x' },
      { address: '10.0.0.5/24' },
      { address: '010.0.0.5' },
      { address: 'leased' },
      { hostIp: 'localhost' },
      { bridge: 'a b' },
      { confine: { egressPort: 0 } },
      { confine: { egressPort: 1.5 } },
      { mac: 'zz' },
      { mac: undefined },
    ];
    for (const b of bad) assert.equal(code(() => lockdownRules({ ...good, ...b } as never)), 'INVALID_ARGUMENT', JSON.stringify(b));
  });

  test('our rules are found again in a listing by tap, and only ours', () => {
    const input = VM_CHAINS.find((c) => c.name === 'VOLANT-IN')!;
    const spoof = VM_CHAINS.find((c) => c.name === 'VOLANT-SPOOF')!;
    const iptables = [
      '-N VOLANT-IN',
      '-A VOLANT-IN -s 10.0.0.5/32 -d 10.0.0.1/32 -i vbr0 -p tcp -m tcp --dport 3128 -m comment --comment "volant:vt0" -j ACCEPT',
      '-A VOLANT-IN -s 10.0.0.6/32 -i vbr0 -m comment --comment "volant:vt00" -j DROP',
      '-A VOLANT-IN -s 10.0.0.5/32 -i vbr0 -m comment --comment "volant:vt0" -j DROP',
    ].join('\n');
    assert.deepEqual(
      rulesForTap(input, iptables, 'vt0').map((r) => deleteArgv(r).join(' ')),
      [
        'iptables -w -t filter -D VOLANT-IN -s 10.0.0.5/32 -d 10.0.0.1/32 -i vbr0 -p tcp -m tcp --dport 3128 -m comment --comment volant:vt0 -j ACCEPT',
        'iptables -w -t filter -D VOLANT-IN -s 10.0.0.5/32 -i vbr0 -m comment --comment volant:vt0 -j DROP',
      ],
    );
    const ebtables = [
      'Bridge table: filter',
      '',
      'Bridge chain: VOLANT-SPOOF, entries: 3, policy: RETURN',
      '-p IPv4 -i vt0 --ip-src ! 10.0.0.5 -j DROP',
      '-p IPv4 -i vt00 --ip-src ! 10.0.0.6 -j DROP',
      '-p IPv6 -i vt0 -j DROP',
    ].join('\n');
    assert.deepEqual(
      rulesForTap(spoof, ebtables, 'vt0').map((r) => r.spec.join(' ')),
      ['-p IPv4 -i vt0 --ip-src ! 10.0.0.5 -j DROP', '-p IPv6 -i vt0 -j DROP'],
    );
  });
});

describe('runners and managers', () => {
  test('formatCommand quotes what a shell would reinterpret, for display only', () => {
    assert.equal(formatCommand(['iptables', '!', '-o', 'vbr0']), "iptables '!' -o vbr0");
    assert.equal(formatCommand(['echo', "it's"]), "echo 'it'\\''s'");
  });

  test('a dry run records the changes in order and answers probes "absent"', async () => {
    const printed: string[] = [];
    const runner = new DryRunRunner({ print: (l) => printed.push(l) });
    const net = new LinuxNetworkManager(runner);
    await net.ensureBridge({ name: 'vbr0', cidr: '192.168.127.1/24' });
    await net.createTap({ name: 'vt0', mac: '02:11:22:33:44:55', bridge: 'vbr0' }).catch((e) => assert.equal(e.code, 'NOT_FOUND'));
    await net.lockdownVm({ tap: 'vt0', address: '192.168.127.100', mac: '02:11:22:33:44:55', dhcp: false, bridge: 'vbr0', hostIp: '192.168.127.1', confine: { egressPort: 3128 } });
    assert.deepEqual(printed.slice(0, 4), [
      'ip link add name vbr0 type bridge',
      `ip link set dev vbr0 address ${bridgeMac('vbr0')}`,
      'ip addr add 192.168.127.1/24 dev vbr0',
      'ip link set dev vbr0 up',
    ]);
    assert.ok(printed.includes('iptables -w -t filter -N VOLANT-IN'));
    assert.ok(printed.includes('iptables -w -t filter -I INPUT 1 -j VOLANT-IN'));
    assert.ok(printed.includes('ebtables -t filter -N VOLANT-SPOOF -P RETURN'));
    assert.equal(runner.commands.length, printed.length);
  });

  test('off Linux the manager is a noop that reports nothing', async () => {
    const net = createNetworkManager({ platform: 'darwin' });
    assert.ok(net instanceof NoopNetworkManager);
    await net.ensureBridge({ name: 'vbr0', cidr: '192.168.127.1/24' });
    assert.equal(await net.tapExists('vt0'), false);
    assert.deepEqual(await net.listTaps('vt'), []);
    assert.ok(createNetworkManager({ platform: 'linux', runner: new DryRunRunner() }) instanceof LinuxNetworkManager);
  });
});
