import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { type BootConfig, bootConfigFromCmdline, MAX_MANIFEST_OVERRIDE_BYTES } from '../../guest/boot/cmdline.js';
import { agentEndpoints, parseEndpoint } from '../../guest/server/endpoint.js';
import { VolantError } from '../../shared/index.js';

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64url');
const manifest = { name: 'hello', version: '1.0.0', workload: { type: 'http', entrypoint: ['/usr/bin/node', '/app/server.js'], http: { port: 3000 } } };
const base = 'console=ttyS0 reboot=k panic=-1';

describe('kernel command line → BootConfig', () => {
  const ok: [string, string, Partial<BootConfig>][] = [
    [
      'bridged, as the host writes it',
      `${base} ip=192.168.127.100::192.168.127.1:255.255.255.0:web-1:eth0:off volant.mode=bridged volant.name=web-1`,
      { mode: 'bridged', name: 'web-1', hostname: 'web-1', ip: { client: '192.168.127.100', prefix: 24, gateway: '192.168.127.1', device: 'eth0' }, dns: [], env: {} },
    ],
    ['bridged without volant.mode: static ip= implies it', 'ip=10.0.0.5::10.0.0.1:255.255.0.0:h:eth0:off', { mode: 'bridged', ip: { client: '10.0.0.5', prefix: 16, gateway: '10.0.0.1', device: 'eth0' }, hostname: 'h' }],
    ['dhcp', `${base} ip=dhcp volant.mode=dhcp volant.name=d`, { mode: 'dhcp', hostname: 'd', ip: undefined }],
    ['dhcp implied by ip=dhcp', 'ip=dhcp', { mode: 'dhcp', hostname: 'volant' }],
    ['vsock: no ip=', `${base} volant.mode=vsock volant.name=v`, { mode: 'vsock', hostname: 'v' }],
    ['vsock implied by no ip= at all', base, { mode: 'vsock', hostname: 'volant', dns: [], env: {} }],
    ['volant.dns before ip= DNS, duplicates removed', 'ip=10.0.0.5::10.0.0.1:255.255.255.0:h:eth0:off:10.0.0.1:1.1.1.1 volant.dns=9.9.9.9,1.1.1.1', { dns: ['9.9.9.9', '1.1.1.1', '10.0.0.1'] }],
    ['env decoded', `volant.env=${b64(JSON.stringify({ A: '1', LONG_NAME_2: 'x y' }))}`, { env: { A: '1', LONG_NAME_2: 'x y' } }],
    ['egress over vsock', 'volant.egress=vsock', { egress: { kind: 'vsock', cid: 2, port: 3128 } }],
    ['egress over tcp', 'volant.egress=tcp:192.168.127.1:3128', { egress: { kind: 'tcp', host: '192.168.127.1', port: 3128 } }],
    ['selftest', 'volant.selftest=vsock', { selftest: 'vsock' }],
    ['last value wins, as in the kernel', 'volant.mode=dhcp volant.mode=vsock', { mode: 'vsock' }],
  ];
  for (const [name, text, expected] of ok) {
    test(name, () => {
      const c = bootConfigFromCmdline(text);
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(c[k as keyof BootConfig], v, k);
    });
  }

  test('manifest override is decoded and validated', () => {
    const c = bootConfigFromCmdline(`volant.manifest=${b64(gzipSync(JSON.stringify(manifest)))}`);
    assert.equal(c.manifestOverride?.name, 'hello');
    assert.deepEqual(c.manifestOverride?.workload.entrypoint, manifest.workload.entrypoint);
  });

  const bad: [string, string, RegExp][] = [
    ['bridged without ip=', 'volant.mode=bridged', /bridged needs ip=/],
    ['dhcp with a static address', 'ip=10.0.0.5::10.0.0.1:255.255.255.0:h:eth0:off volant.mode=dhcp', /contradicts/],
    ['vsock with ip=', 'ip=dhcp volant.mode=vsock', /vsock means no network interface/],
    ['unknown mode', 'volant.mode=bridge', /is not one of bridged, dhcp, vsock/],
    ['garbage ip=', 'ip=300.1.1.1::::::off', /not a dotted-quad/],
    ['gateway off-subnet', 'ip=10.0.0.5::10.1.0.1:255.255.255.0:h:eth0:off', /not on the client's subnet/],
    ['autoconf off, no address', 'ip=::::h:eth0:off', /configures nothing/],
    ['env not base64url', 'volant.env=!!!', /volant.env: is not base64url/],
    ['env not JSON', `volant.env=${b64('{nope')}`, /volant.env: is not base64url-encoded JSON/],
    ['env an array', `volant.env=${b64('["A"]')}`, /must encode a JSON object/],
    ['env bad name', `volant.env=${b64(JSON.stringify({ 'A B': '1' }))}`, /name "A B" is not allowed/],
    ['env number value', `volant.env=${b64(JSON.stringify({ A: 1 }))}`, /A must be a string, got number/],
    ['env NUL', `volant.env=${b64(JSON.stringify({ A: 'x\u0000y' }))}`, /NUL/],
    ['env proto pollution name', `volant.env=${b64('{"__proto__":"x"}')}`, /name "__proto__" is not allowed/],
    ['dns garbage', 'volant.dns=1.1.1.1,evil', /volant.dns: "evil"/],
    ['dns too many', 'volant.dns=1.1.1.1,1.0.0.1,8.8.8.8,8.8.4.4', /at most 3/],
    ['egress unknown', 'volant.egress=http://x', /is not vsock or tcp:HOST:PORT/],
    ['egress tcp hostname', 'volant.egress=tcp:evil.example:3128', /not a dotted-quad IPv4 address or localhost/],
    ['egress port out of range', 'volant.egress=tcp:10.0.0.1:70000', /port "70000"/],
    ['selftest unknown', 'volant.selftest=tcp', /is not vsock/],
    ['manifest not gzip', `volant.manifest=${b64('{}')}`, /is not base64url\(gzip\(JSON\)\)/],
    ['manifest invalid', `volant.manifest=${b64(gzipSync('{"name":"x"}'))}`, /invalid manifest/],
    ['manifest gzip bomb', `volant.manifest=${b64(gzipSync(Buffer.alloc(MAX_MANIFEST_OVERRIDE_BYTES + 1, 32)))}`, /decodes to more than/],
  ];
  for (const [name, text, re] of bad) {
    test(`refuses ${name}`, () => {
      assert.throws(
        () => bootConfigFromCmdline(text),
        (e: unknown) => e instanceof VolantError && re.test(e.message),
      );
    });
  }
});

describe('endpoint specs', () => {
  const ok: [string, unknown][] = [
    ['vsock:8080', { kind: 'vsock', cid: 2, port: 8080 }],
    ['vsock:2:3128', { kind: 'vsock', cid: 2, port: 3128 }],
    ['tcp:127.0.0.1:0', { kind: 'tcp', host: '127.0.0.1', port: 0 }],
    ['tcp:localhost:3128', { kind: 'tcp', host: 'localhost', port: 3128 }],
    ['unix:/run/x.sock', { kind: 'unix', path: '/run/x.sock' }],
  ];
  for (const [spec, expected] of ok) test(spec, () => assert.deepEqual(parseEndpoint(spec), expected));
  const bad = ['', 'vsock:', 'vsock:-1', 'vsock:1:2:3', 'vsock:08080', 'tcp:127.0.0.1', 'tcp:example.com:80', 'tcp:127.0.0.1:65536', 'unix:relative', `unix:/${'x'.repeat(200)}`, 'udp:1.2.3.4:5', 'unix:/a\u0000b'];
  for (const spec of bad) test(`refuses ${JSON.stringify(spec.slice(0, 30))}`, () => assert.throws(() => parseEndpoint(spec), VolantError));
});

describe('where the agent listens in a VM', () => {
  const vsock8080 = { kind: 'vsock', cid: 0xffffffff, port: 8080 };
  const tcp8080 = { kind: 'tcp', host: '0.0.0.0', port: 8080 };
  const cases: [Parameters<typeof agentEndpoints>, unknown[]][] = [
    [['bridged', true], [vsock8080, tcp8080]],
    [['dhcp', true], [vsock8080, tcp8080]],
    [['vsock', true], [vsock8080]],
    [['bridged', false], [tcp8080]],
    [['vsock', false], []],
  ];
  for (const [args, expected] of cases) test(args.join(', '), () => assert.deepEqual(agentEndpoints(...args), expected));
});
