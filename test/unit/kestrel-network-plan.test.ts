import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bootConfigFromCmdline } from '../../guest/boot/cmdline.js';
import { parseLeaseFile } from '../../guest/network/dhcp-script.js';
import { type NetworkStep, planNetwork } from '../../guest/network/plan.js';

function describeStep(s: NetworkStep): string {
  switch (s.op) {
      case 'link-up':
        return `up ${s.device}`;
      case 'address':
        return `addr ${s.device} ${s.address}/${s.prefix}`;
      case 'default-route':
        return `route default via ${s.gateway} dev ${s.device}`;
      case 'hostname':
        return `hostname ${s.name}`;
      case 'write-file':
        return `write ${s.path}`;
      case 'dhcp':
        return `dhcp ${s.device} as ${s.hostname}${s.dns.length ? ' keep-dns' : ''}`;
  }
}
const ops = (steps: NetworkStep[]): string[] => steps.map(describeStep);

describe('network plan from the command line', () => {
  const cases: [string, string, string[]][] = [
    [
      'bridged: eth0 address, route, hosts, resolv.conf',
      'ip=192.168.127.100::192.168.127.1:255.255.255.0:web-1:eth0:off volant.dns=192.168.127.1',
      ['up lo', 'hostname web-1', 'up eth0', 'addr eth0 192.168.127.100/24', 'route default via 192.168.127.1 dev eth0', 'write /etc/hosts', 'write /etc/resolv.conf'],
    ],
    ['bridged without DNS: no resolv.conf', 'ip=10.0.0.5::10.0.0.1:255.255.255.0:h:eth0:off', ['up lo', 'hostname h', 'up eth0', 'addr eth0 10.0.0.5/24', 'route default via 10.0.0.1 dev eth0', 'write /etc/hosts']],
    ['bridged without gateway: no route', 'ip=10.0.0.5:::255.255.255.0:h:eth0:off', ['up lo', 'hostname h', 'up eth0', 'addr eth0 10.0.0.5/24', 'write /etc/hosts']],
    ['dhcp: client on eth0, lease DNS', 'ip=dhcp volant.name=d', ['up lo', 'hostname d', 'write /etc/hosts', 'up eth0', 'dhcp eth0 as d']],
    ['dhcp with volant.dns: fixed resolvers win', 'ip=dhcp volant.name=d volant.dns=9.9.9.9', ['up lo', 'hostname d', 'write /etc/hosts', 'up eth0', 'dhcp eth0 as d keep-dns', 'write /etc/resolv.conf']],
    ['vsock: lo only', 'volant.mode=vsock volant.name=v', ['up lo', 'hostname v', 'write /etc/hosts']],
  ];
  for (const [name, cmdline, expected] of cases) {
    test(name, () => assert.deepEqual(ops(planNetwork(bootConfigFromCmdline(cmdline)).steps), expected));
  }

  test('bridged: file contents and reported eth0', () => {
    const plan = planNetwork(bootConfigFromCmdline('ip=192.168.127.100::192.168.127.1:255.255.255.0:web-1.lab:eth0:off volant.dns=1.1.1.1,9.9.9.9'));
    const files = Object.fromEntries(plan.steps.flatMap((s) => (s.op === 'write-file' ? [[s.path, s.content]] : [])));
    assert.match(files['/etc/hosts']!, /^192\.168\.127\.100\tweb-1\.lab web-1$/m);
    assert.match(files['/etc/hosts']!, /^127\.0\.0\.1\tlocalhost$/m);
    assert.equal(files['/etc/resolv.conf'], 'nameserver 1.1.1.1\nnameserver 9.9.9.9\n');
    assert.deepEqual(plan.eth0, { address: '192.168.127.100', prefix: 24, gateway: '192.168.127.1' });
  });

  test('vsock: hostname on 127.0.1.1, no eth0', () => {
    const plan = planNetwork(bootConfigFromCmdline('volant.name=v'));
    const hosts = plan.steps.find((s) => s.op === 'write-file' && s.path === '/etc/hosts');
    assert.ok(hosts && hosts.op === 'write-file' && /^127\.0\.1\.1\tv$/m.test(hosts.content));
    assert.equal(plan.eth0, null);
  });
});

describe('dhcp lease file', () => {
  const cases: [string, unknown][] = [
    ['address=10.0.2.15\nprefix=24\ngateway=10.0.2.2\n', { address: '10.0.2.15', prefix: 24, gateway: '10.0.2.2' }],
    ['address=10.0.2.15\nprefix=24\ngateway=\n', { address: '10.0.2.15', prefix: 24, gateway: null }],
    ['', undefined],
    ['address=10.0.2.15\nprefix=33\n', undefined],
    ['prefix=24\n', undefined],
  ];
  for (const [text, expected] of cases) test(JSON.stringify(text), () => assert.deepEqual(parseLeaseFile(text), expected));
});
