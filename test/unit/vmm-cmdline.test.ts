import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { parseCmdline } from '../../shared/cmdline.js';
import { VolantError } from '../../shared/errors.js';
import { parseIpParam } from '../../shared/ip-param.js';
import { buildKernelCmdline, type KernelCmdlineSpec, MAX_KERNEL_CMDLINE_BYTES } from '../../host/vmm/cmdline.js';

const staticIp = { address: '192.168.127.101', gateway: '192.168.127.1', prefix: 24 };
const bridged = { mode: 'bridged', ip: staticIp } as const;

describe('buildKernelCmdline: what kestrel reads back', () => {
  const cases: { name: string; spec: KernelCmdlineSpec; expect: Record<string, string | undefined> }[] = [
    {
      name: 'bridged: static ip= for eth0, hostname from the VM name',
      spec: { vmName: 'Web_1', network: bridged },
      expect: { ip: '192.168.127.101::192.168.127.1:255.255.255.0:web-1:eth0:off', 'volant.mode': 'bridged', 'volant.name': 'Web_1', 'volant.egress': undefined },
    },
    { name: 'dhcp: ip=dhcp', spec: { vmName: 'd', network: { mode: 'dhcp', ip: 'dhcp' } }, expect: { ip: 'dhcp', 'volant.mode': 'dhcp' } },
    { name: 'vsock: no ip= at all', spec: { vmName: 'v', network: { mode: 'vsock' } }, expect: { ip: undefined, 'volant.mode': 'vsock' } },
    {
      name: 'egress over vsock, DNS list',
      spec: { vmName: 'e', network: { mode: 'vsock' }, egress: { kind: 'vsock' }, dns: ['1.1.1.1', '9.9.9.9'] },
      expect: { 'volant.egress': 'vsock', 'volant.dns': '1.1.1.1,9.9.9.9' },
    },
    {
      name: 'egress over tcp to the bridge address',
      spec: { vmName: 'e', network: bridged, egress: { kind: 'tcp', host: '192.168.127.1', port: 3128 } },
      expect: { 'volant.egress': 'tcp:192.168.127.1:3128' },
    },
    { name: 'selftest', spec: { vmName: 's', network: { mode: 'vsock' }, selftest: 'vsock' }, expect: { 'volant.selftest': 'vsock' } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const cl = parseCmdline(buildKernelCmdline(c.spec));
      assert.equal(cl.get('console'), 'ttyS0');
      assert.equal(cl.get('panic'), '-1', 'a panic must end the VM (QEMU -no-reboot turns the reboot into an exit)');
      assert.equal(cl.get('reboot'), 'k');
      for (const [k, v] of Object.entries(c.expect)) assert.equal(cl.get(k), v, k);
      const ip = cl.get('ip');
      if (ip !== undefined) parseIpParam(ip);
    });
  }
});

describe('buildKernelCmdline: hostile values cannot add parameters', () => {
  const hostileEnv: Record<string, string> = {
    A: 'x volant.mode=vsock',
    B: '" init=/bin/sh "',
    C: 'line\nbreak -- init=/bin/sh',
    D: 'ünïcødé ☃',
    E: '',
  };

  it('env travels as base64url JSON and round-trips exactly', () => {
    const line = buildKernelCmdline({ vmName: 'h', network: { mode: 'dhcp', ip: 'dhcp' }, env: hostileEnv });
    const cl = parseCmdline(line);
    assert.equal(cl.has('init'), false);
    assert.equal(cl.get('volant.mode'), 'dhcp');
    assert.deepEqual(cl.initArgs, []);
    const decoded = JSON.parse(Buffer.from(cl.get('volant.env')!, 'base64url').toString('utf8'));
    assert.deepEqual(decoded, hostileEnv);
  });

  it('the manifest override is base64url(gzip(JSON))', () => {
    const manifest = { name: 'p " init=/x', version: '1' };
    const cl = parseCmdline(buildKernelCmdline({ vmName: 'm', network: { mode: 'vsock' }, manifestOverride: manifest }));
    assert.deepEqual(JSON.parse(gunzipSync(Buffer.from(cl.get('volant.manifest')!, 'base64url')).toString()), manifest);
  });

  const rejects: { name: string; spec: unknown; match: RegExp }[] = [
    { name: 'VM name with a space', spec: { vmName: 'a b', network: { mode: 'vsock' } }, match: /VM name/ },
    { name: 'VM name with a quote', spec: { vmName: 'a"', network: { mode: 'vsock' } }, match: /VM name/ },
    { name: 'VM name path traversal', spec: { vmName: '../x', network: { mode: 'vsock' } }, match: /VM name/ },
    { name: 'unknown mode', spec: { vmName: 'a', network: { mode: 'host' } }, match: /network mode "host"/ },
    { name: 'missing network', spec: { vmName: 'a' }, match: /network mode/ },
    { name: 'ip neither static nor dhcp', spec: { vmName: 'a', network: { mode: 'dhcp', ip: 'auto' } }, match: /static settings or dhcp/ },
    { name: 'DNS smuggling a parameter', spec: { vmName: 'a', network: { mode: 'dhcp', ip: 'dhcp' }, dns: ['1.1.1.1 init=/bin/sh'] }, match: /DNS server/ },
    { name: 'four DNS servers', spec: { vmName: 'a', network: { mode: 'dhcp', ip: 'dhcp' }, dns: ['1.1.1.1', '1.1.1.2', '1.1.1.3', '1.1.1.4'] }, match: /at most 3/ },
    { name: 'egress host name', spec: { vmName: 'a', network: bridged, egress: { kind: 'tcp', host: 'evil x=y', port: 1 } }, match: /egress host/ },
    { name: 'egress port 0', spec: { vmName: 'a', network: bridged, egress: { kind: 'tcp', host: '10.0.0.1', port: 0 } }, match: /egress port/ },
    { name: 'egress port 65536', spec: { vmName: 'a', network: bridged, egress: { kind: 'tcp', host: '10.0.0.1', port: 65536 } }, match: /egress port/ },
    { name: 'egress kind unknown', spec: { vmName: 'a', network: bridged, egress: { kind: 'udp' } }, match: /egress kind/ },
    { name: 'gateway off subnet', spec: { vmName: 'a', network: { ...bridged, ip: { ...staticIp, gateway: '10.0.0.1' } } }, match: /gateway/ },
    { name: 'prefix 33', spec: { vmName: 'a', network: { ...bridged, ip: { ...staticIp, prefix: 33 } } }, match: /netmask/ },
    { name: 'ip with colon injection', spec: { vmName: 'a', network: { ...bridged, ip: { ...staticIp, address: '1.2.3.4:::::eth1' } } }, match: /not IPv4/ },
    { name: 'env key with =', spec: { vmName: 'a', network: bridged, env: { 'A=B': 'x' } }, match: /env name/ },
    { name: 'env value not a string', spec: { vmName: 'a', network: bridged, env: { A: 1 } }, match: /must be a string/ },
    { name: 'env array', spec: { vmName: 'a', network: bridged, env: ['x'] }, match: /env/ },
    { name: 'selftest unknown', spec: { vmName: 'a', network: bridged, selftest: 'tcp' }, match: /selftest/ },
    { name: 'env too large for the kernel', spec: { vmName: 'a', network: bridged, env: { A: 'x'.repeat(3000) } }, match: new RegExp(`at most ${MAX_KERNEL_CMDLINE_BYTES}`) },
  ];
  for (const r of rejects) {
    it(`rejects ${r.name}`, () => {
      assert.throws(
        () => buildKernelCmdline(r.spec as KernelCmdlineSpec),
        (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && r.match.test(e.message),
      );
    });
  }

  it('a line just under the limit is accepted and parses to the same env', () => {
    let size = 1000;
    let line = '';
    for (;;) {
      try {
        line = buildKernelCmdline({ vmName: 'a', network: bridged, env: { A: 'y'.repeat(size) } });
        size += 1;
      } catch {
        break;
      }
    }
    assert.ok(Buffer.byteLength(line) <= MAX_KERNEL_CMDLINE_BYTES && Buffer.byteLength(line) > MAX_KERNEL_CMDLINE_BYTES - 8);
    assert.equal(JSON.parse(Buffer.from(parseCmdline(line).get('volant.env')!, 'base64url').toString()).A.length, size - 1);
  });
});

describe('buildKernelCmdline: the runtime image device', () => {
  it('pmem adds volant.runtime=pmem and swiotlb=noforce; blk only volant.runtime=blk; none without a runtime', () => {
    const line = (runtime?: 'pmem' | 'blk') => parseCmdline(buildKernelCmdline({ vmName: 'rt', network: { mode: 'vsock' }, ...(runtime ? { runtime } : {}) }));
    assert.equal(line('pmem').get('volant.runtime'), 'pmem');
    assert.equal(line('pmem').get('swiotlb'), 'noforce');
    assert.equal(line('blk').get('volant.runtime'), 'blk');
    assert.equal(line('blk').get('swiotlb'), undefined);
    assert.equal(line().get('volant.runtime'), undefined);
  });

  it('another device is refused', () => {
    assert.throws(() => buildKernelCmdline({ vmName: 'rt', network: { mode: 'vsock' }, runtime: 'nvme' as 'pmem' }), /runtime device "nvme" is not one of pmem, blk/);
  });
});
