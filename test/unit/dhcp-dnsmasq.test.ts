/** Volant's DHCP server, the pure half: dnsmasq's config and unit, its lease file, and who supervises it. */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { activeLeases, changedMacs, dhcpSupervisor, dhcpUnit, dnsmasqArgv, dnsmasqConfig, parseDnsmasqLeases } from '../../host/dhcp/dnsmasq.js';
import { watchLeaseFile } from '../../host/dhcp/leases.js';
import { dhcpSettings } from '../../host/dhcp/server.js';
import { loadConfig } from '../../host/config/load.js';
import { eventually } from '../support/eventually.js';

describe('dnsmasq config', () => {
  it('DHCP only, on the bridge, the configured range below the pool, the bridge as router, leases where volantd reads them', () => {
    const cfg = loadConfig({ file: null, overrides: { state_dir: '/srv/volant' } });
    assert.equal(
      dnsmasqConfig(dhcpSettings(cfg)),
      [
        '# Volant DHCP server, written by `volar setup --dhcp` from volantd.yaml; edits are overwritten.',
        'port=0',
        'interface=vbr0',
        'bind-dynamic',
        'no-hosts',
        'dhcp-authoritative',
        'dhcp-range=192.168.127.10,192.168.127.99,255.255.255.0,3600',
        'dhcp-option=option:router,192.168.127.1',
        'dhcp-leasefile=/srv/volant/dhcp/dnsmasq.leases',
        '',
      ].join('\n'),
    );
    const withDns = dnsmasqConfig(dhcpSettings(loadConfig({ file: null, overrides: { network: { dns: ['1.1.1.1', '9.9.9.9'] } } })));
    assert.match(withDns, /^dhcp-option=option:dns-server,1\.1\.1\.1,9\.9\.9\.9$/m);
  });

  it('no room for a range is a clear error naming the keys', () => {
    const cfg = loadConfig({ file: null, overrides: { network: { pool_start: '192.168.127.2' } } });
    assert.throws(() => dhcpSettings(cfg), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /dhcp\.range_start/.test(e.message));
  });

  it('foreground without a pid file under systemd, a daemon with one elsewhere; the unit quotes its command', () => {
    assert.deepEqual(dnsmasqArgv('/usr/sbin/dnsmasq', '/srv/v/dhcp/dnsmasq.conf', { foreground: true }), ['/usr/sbin/dnsmasq', '--conf-file=/srv/v/dhcp/dnsmasq.conf', '--keep-in-foreground', '--pid-file']);
    assert.deepEqual(dnsmasqArgv('dnsmasq', '/c', { foreground: false, pidFile: '/run/v/dnsmasq.pid' }), ['dnsmasq', '--conf-file=/c', '--pid-file=/run/v/dnsmasq.pid']);
    const unit = dhcpUnit({ bridge: 'vbr0', execStart: ['/usr/sbin/dnsmasq', '--keep-in-foreground', '--conf-file=/srv/my v/dnsmasq.conf'] });
    assert.match(unit, /^ExecStart=\/usr\/sbin\/dnsmasq --keep-in-foreground "--conf-file=\/srv\/my v\/dnsmasq\.conf"$/m);
    assert.match(unit, /^WantedBy=multi-user\.target$/m);
  });

  it('systemd supervises only where it runs in this network namespace', () => {
    assert.equal(dhcpSupervisor({ systemdRunning: true, inInitNetworkNamespace: true }), 'systemd');
    assert.equal(dhcpSupervisor({ systemdRunning: true, inInitNetworkNamespace: false }), 'process');
    assert.equal(dhcpSupervisor({ systemdRunning: false, inInitNetworkNamespace: true }), 'process');
  });
});

describe('dnsmasq lease file', () => {
  const FILE = [
    '1700003600 02:aa:bb:cc:dd:01 192.168.127.20 leased 01:02:aa:bb:cc:dd:01',
    '0 02:AA:BB:CC:DD:02 192.168.127.21 * *',
    '1699990000 02:aa:bb:cc:dd:03 192.168.127.22 old *',
    'duid 00:01:00:01:2c:00:00:00:02:aa:bb:cc:dd:01',
    '1700003600 not-a-mac 192.168.127.23 x *',
    '1700003600 02:aa:bb:cc:dd:04 192.168.127.999 x *',
    '1700007200 02:aa:bb:cc:dd:01 192.168.127.24 moved *',
    '',
  ].join('\n');

  it('reads leases (MACs lower-cased, later line wins), skipping what is not an IPv4 lease', () => {
    assert.deepEqual(
      parseDnsmasqLeases(FILE).map((l) => `${l.mac} ${l.address} ${l.expires}`),
      ['02:aa:bb:cc:dd:01 192.168.127.24 1700007200', '02:aa:bb:cc:dd:02 192.168.127.21 0', '02:aa:bb:cc:dd:03 192.168.127.22 1699990000'],
    );
  });

  it('a line cut short by a rewrite in progress is not a lease (its address could be a prefix of the real one)', () => {
    const text = '0 02:aa:bb:cc:dd:01 192.168.127.20 a *\n0 02:aa:bb:cc:dd:02 192.168.127.3';
    assert.deepEqual(
      parseDnsmasqLeases(text).map((l) => l.mac),
      ['02:aa:bb:cc:dd:01'],
    );
  });

  it('expired leases are gone; infinite ones (0) stay', () => {
    const active = activeLeases(parseDnsmasqLeases(FILE), 1_700_000_000);
    assert.deepEqual([...active], [
      ['02:aa:bb:cc:dd:01', '192.168.127.24'],
      ['02:aa:bb:cc:dd:02', '192.168.127.21'],
    ]);
  });

  it('changedMacs names leases that appeared, moved or went away, and nothing else', () => {
    const before = new Map([
      ['02:00:00:00:00:01', '10.0.0.1'],
      ['02:00:00:00:00:02', '10.0.0.2'],
      ['02:00:00:00:00:03', '10.0.0.3'],
    ]);
    const after = new Map([
      ['02:00:00:00:00:01', '10.0.0.1'],
      ['02:00:00:00:00:02', '10.0.0.9'],
      ['02:00:00:00:00:04', '10.0.0.4'],
    ]);
    assert.deepEqual(changedMacs(before, after).sort(), ['02:00:00:00:00:02', '02:00:00:00:00:03', '02:00:00:00:00:04']);
    assert.deepEqual(changedMacs(before, before), []);
  });
});

describe('lease file watcher', () => {
  const A = '0 02:aa:bb:cc:dd:01 192.168.127.20 a *\n';
  const B = '0 02:aa:bb:cc:dd:02 192.168.127.35 b *\n';
  const C = '0 02:aa:bb:cc:dd:03 192.168.127.40 c *\n';

  it('a file caught empty or half-rewritten by dnsmasq loses no lease; listeners hear only real changes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volant-leases-'));
    const file = join(dir, 'dnsmasq.leases');
    writeFileSync(file, A + B);
    const watcher = watchLeaseFile(file, { recheckMs: 60_000 });
    const heard: string[][] = [];
    watcher.subscribe((macs) => heard.push([...macs].sort()));
    try {
      assert.equal(watcher.addressOf('02:aa:bb:cc:dd:02'), '192.168.127.35');
      // dnsmasq truncates, then writes: a read lands on the empty file, then on a cut line.
      truncateSync(file, 0);
      watcher.refresh();
      assert.equal(watcher.addressOf('02:aa:bb:cc:dd:01'), '192.168.127.20');
      writeFileSync(file, A + B.slice(0, B.indexOf('.35') + 2));
      watcher.refresh();
      assert.equal(watcher.addressOf('02:aa:bb:cc:dd:02'), '192.168.127.35');
      // The rewrite completes (synchronously, before any settle timer can run), with one new lease.
      writeFileSync(file, A + B + C);
      await eventually(() => watcher.addressOf('02:aa:bb:cc:dd:03'), { what: 'the new lease' });
      assert.deepEqual(heard, [['02:aa:bb:cc:dd:03']]);
      assert.equal(watcher.addressOf('02:aa:bb:cc:dd:02'), '192.168.127.35');
      // A lease that really goes away is still reported.
      writeFileSync(file, A + C);
      await eventually(() => watcher.addressOf('02:aa:bb:cc:dd:02') === undefined, { what: 'the released lease' });
      assert.deepEqual(heard, [['02:aa:bb:cc:dd:03'], ['02:aa:bb:cc:dd:02']]);
    } finally {
      watcher.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
