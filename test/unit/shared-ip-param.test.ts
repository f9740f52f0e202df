import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatIpParam, type IpParam, parseCmdline, parseIpParam, VolantError } from '../../shared/index.js';

describe('parseIpParam reads the kernel syntax', () => {
  const cases: [string, Partial<IpParam>][] = [
    ['192.168.127.100::192.168.127.1:255.255.255.0:web:eth0:off', { client: '192.168.127.100', gateway: '192.168.127.1', netmask: '255.255.255.0', prefix: 24, hostname: 'web', device: 'eth0', autoconf: 'off', dns: [] }],
    ['dhcp', { autoconf: 'dhcp', dns: [] }],
    ['DHCP', { autoconf: 'dhcp', dns: [] }],
    ['off', { autoconf: 'off', dns: [] }],
    ['none', { autoconf: 'off', dns: [] }],
    ['any', { autoconf: 'on', dns: [] }],
    ['on', { autoconf: 'on', dns: [] }],
    ['bootp', { autoconf: 'bootp', dns: [] }],
    ['rarp', { autoconf: 'rarp', dns: [] }],
    ['both', { autoconf: 'both', dns: [] }],
    ['', { autoconf: 'on', dns: [] }],
    ['::::::dhcp', { autoconf: 'dhcp', dns: [] }],
    [':::::eth1:none', { device: 'eth1', autoconf: 'off', dns: [] }],
    ['10.0.0.5:10.0.0.1:10.0.0.1:255.0.0.0:h.example.com:eth0:off:1.1.1.1:8.8.8.8:10.0.0.9', { client: '10.0.0.5', server: '10.0.0.1', gateway: '10.0.0.1', prefix: 8, hostname: 'h.example.com', autoconf: 'off', dns: ['1.1.1.1', '8.8.8.8'], ntp: '10.0.0.9' }],
    ['10.1.2.3', { client: '10.1.2.3', netmask: '255.0.0.0', prefix: 8, netmaskDerived: true, autoconf: 'on', dns: [] }],
    ['172.16.0.9:::::eth0:off', { client: '172.16.0.9', netmask: '255.255.0.0', prefix: 16, netmaskDerived: true }],
    ['192.0.2.9::::', { client: '192.0.2.9', prefix: 24, netmaskDerived: true }],
    ['10.0.0.2::10.0.0.1:255.255.255.252::eth0:off', { client: '10.0.0.2', prefix: 30 }],
    ['10.0.0.2:::255.255.255.255::eth0:off:', { prefix: 32, gateway: undefined }],
  ];
  for (const [input, expected] of cases) {
    test(JSON.stringify(input), () => {
      const got = parseIpParam(input);
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(got[k as keyof IpParam], v, `field ${k}`);
    });
  }
});

describe('parseIpParam rejects garbage with a clear error', () => {
  const bad: [string, RegExp][] = [
    ['300.1.1.1::::::off', /client address/],
    ['10.0.0.1::10.0.0.256:255.255.255.0::eth0:off', /gateway/],
    ['10.0.0.1::10.0.0.1:255.0.255.0::eth0:off', /not contiguous/],
    ['10.0.0.1::10.9.0.1:255.255.0.0::eth0:off', /not on the client's subnet/],
    ['10.0.0.1:::::eth0:maybe', /autoconf/],
    ['10.0.0.1::::bad_host!::off', /hostname/],
    ['10.0.0.1:::::a-device-name-longer-than-15:off', /device/],
    ['10.0.0.1:::::eth0;rm:off', /device/],
    ['224.0.0.1', /class D\/E/],
    ['1:2:3:4:5:6:7:8:9:10:11', /at most 10/],
    ['010.0.0.1::::::off', /client address/],
    ['0x0a.0.0.1::::::off', /client address/],
    ['10.0.0.1::::::off:8.8.8', /dns0/],
    ['banana', /client address/],
    [`${'1'.repeat(600)}`, /longer than/],
    ['10.0.0.1 ::::::off', /client address/],
  ];
  for (const [input, re] of bad) {
    test(JSON.stringify(input.slice(0, 40)), () => {
      assert.throws(
        () => parseIpParam(input),
        (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && re.test(e.message),
      );
    });
  }
  test('non-string input', () => {
    assert.throws(() => parseIpParam(42 as unknown as string), VolantError);
  });
});

describe('formatIpParam writes what the kernel and kestrel read back', () => {
  test('the static bridged form', () => {
    assert.equal(
      formatIpParam({ ip: '192.168.127.100', gateway: '192.168.127.1', netmask: 24, hostname: 'web' }),
      'ip=192.168.127.100::192.168.127.1:255.255.255.0:web:eth0:off',
    );
  });
  test('with DNS servers and a dotted mask', () => {
    assert.equal(
      formatIpParam({ ip: '10.200.3.4', gateway: '10.200.0.1', netmask: '255.255.0.0', hostname: 'a-b', dns: ['10.200.0.1', '1.1.1.1'] }),
      'ip=10.200.3.4::10.200.0.1:255.255.0.0:a-b:eth0:off:10.200.0.1:1.1.1.1',
    );
  });
  test('round trip through the command line', () => {
    const text = formatIpParam({ ip: '192.168.127.254', gateway: '192.168.127.1', netmask: 24, hostname: 'vm-1', dns: ['9.9.9.9'] });
    const cmdline = parseCmdline(`console=ttyS0 ${text} volant.mode=bridged`);
    const p = parseIpParam(cmdline.get('ip')!);
    assert.equal(p.client, '192.168.127.254');
    assert.equal(p.gateway, '192.168.127.1');
    assert.equal(p.prefix, 24);
    assert.equal(p.hostname, 'vm-1');
    assert.equal(p.device, 'eth0');
    assert.equal(p.autoconf, 'off');
    assert.deepEqual(p.dns, ['9.9.9.9']);
  });
  const bad: [Parameters<typeof formatIpParam>[0], RegExp][] = [
    [{ ip: 'x', gateway: '10.0.0.1', netmask: 24, hostname: 'a' }, /guest address/],
    [{ ip: '10.0.0.2', gateway: '10.1.0.1', netmask: 24, hostname: 'a' }, /not on/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 33, hostname: 'a' }, /netmask/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: '255.0.255.0', hostname: 'a' }, /netmask/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 24, hostname: 'a:b' }, /hostname/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 24, hostname: 'a b' }, /hostname/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 24, hostname: 'a', device: 'eth0 x' }, /device/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 24, hostname: 'a', dns: ['1.1.1.1', '2.2.2.2', '3.3.3.3'] }, /at most two/],
    [{ ip: '10.0.0.2', gateway: '10.0.0.1', netmask: 24, hostname: 'a', dns: ['1.1.1.1:53'] }, /DNS server/],
  ];
  for (const [spec, re] of bad) {
    test(`rejects ${JSON.stringify(spec)}`, () => {
      assert.throws(() => formatIpParam(spec), (e: unknown) => e instanceof VolantError && re.test(e.message));
    });
  }
});
