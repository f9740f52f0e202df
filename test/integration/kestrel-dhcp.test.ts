/**
 * kestrel's DHCP path for real: busybox udhcpc (the guest's client) with the script kestrel
 * writes (guest/network/dhcp-script.ts), against dnsmasq, across a veth pair between two network
 * namespaces this test creates and deletes. `ip` in the script is busybox's, as in the image.
 * Needs root (network namespaces); skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dhcpScript, parseLeaseFile, udhcpcArgs } from '../../guest/network/dhcp-script.js';
import { eventually, nextEvent } from '../support/eventually.js';
import { skipUnlessStrict } from '../support/strict.js';

const isRoot = process.getuid?.() === 0;
const BUSYBOX = '/bin/busybox';
const tag = String(process.pid % 100000);
const SERVER_NS = `kdhcp-s-${tag}`;
const CLIENT_NS = `kdhcp-c-${tag}`;
const SERVER_IF = `kds${tag}`;
const CLIENT_IF = `kdc${tag}`;
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

interface Udhcpc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function startUdhcpc(dir: string, script: string): Udhcpc {
  const bin = path.join(dir, 'bin');
  const child = spawn('ip', ['netns', 'exec', CLIENT_NS, 'env', `PATH=${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, 'udhcpc', ...udhcpcArgs({ device: CLIENT_IF, hostname: 'dhcp-vm', scriptPath: script, tries: 5, intervalS: 1 })], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (c) => {
    output += c;
  });
  child.stderr!.on('data', (c) => {
    output += c;
  });
  return { child, output: () => output, exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
}

/** Waits for the lease file (udhcpc stays running afterwards: it keeps the lease renewed), then stops udhcpc. */
async function leaseWith(dir: string, script: string, leasePath: string): Promise<void> {
  const u = startUdhcpc(dir, script);
  try {
    await eventually(() => existsSync(leasePath) || u.child.exitCode !== null, { timeoutMs: 20_000, what: 'a lease' });
    assert.equal(u.child.exitCode, null, `udhcpc keeps running after the lease: ${u.output()}`);
  } finally {
    u.child.kill('SIGTERM');
    await u.exited;
  }
}

describe('DHCP: udhcpc + kestrel script against dnsmasq', { skip: skipUnlessStrict(isRoot && existsSync(BUSYBOX) ? false : 'needs root and busybox (network namespaces)') }, () => {
  let dir: string;
  let dnsmasq: ChildProcess | undefined;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), `kestrel-dhcp-${process.pid}-`));
    execFileSync('mkdir', ['-p', path.join(dir, 'bin')]);
    for (const applet of ['ip', 'udhcpc']) symlinkSync(BUSYBOX, path.join(dir, 'bin', applet));
    ip('netns', 'add', SERVER_NS);
    ip('netns', 'add', CLIENT_NS);
    ip('link', 'add', SERVER_IF, 'type', 'veth', 'peer', 'name', CLIENT_IF);
    ip('link', 'set', SERVER_IF, 'netns', SERVER_NS);
    ip('link', 'set', CLIENT_IF, 'netns', CLIENT_NS);
    ip('-n', SERVER_NS, 'addr', 'add', '10.231.0.1/24', 'dev', SERVER_IF);
    ip('-n', SERVER_NS, 'link', 'set', SERVER_IF, 'up');
    ip('-n', CLIENT_NS, 'link', 'set', 'lo', 'up');
    dnsmasq = spawn(
      'ip',
      [
        'netns', 'exec', SERVER_NS, 'dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', `--interface=${SERVER_IF}`, '--bind-interfaces',
        '--dhcp-range=10.231.0.50,10.231.0.60,255.255.255.0,1h', '--dhcp-option=option:router,10.231.0.1', '--dhcp-option=option:dns-server,10.231.0.53',
        `--dhcp-leasefile=${path.join(dir, 'dnsmasq.leases')}`, `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
      ],
      { stdio: 'ignore' },
    );
    // Ready once it listens on the DHCP port in its namespace.
    await eventually(() => /:67\b/.test(ip('netns', 'exec', SERVER_NS, 'ss', '-ulnH', 'sport = :67')), { what: 'dnsmasq listening on :67' });
  });

  after(() => {
    dnsmasq?.kill('SIGTERM');
    for (const ns of [SERVER_NS, CLIENT_NS]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a lease configures the address, the default route, resolv.conf and the lease file', async () => {
    const leasePath = path.join(dir, 'lease-1');
    const resolvConfPath = path.join(dir, 'resolv-1.conf');
    const script = path.join(dir, 'udhcpc-1.sh');
    writeFileSync(script, dhcpScript({ leasePath, resolvConfPath, writeResolvConf: true }));
    chmodSync(script, 0o755);
    ip('-n', CLIENT_NS, 'link', 'set', CLIENT_IF, 'up');
    await leaseWith(dir, script, leasePath);
    const lease = parseLeaseFile(readFileSync(leasePath, 'utf8'));
    assert.ok(lease, 'lease file written');
    assert.match(lease.address, /^10\.231\.0\.(5\d|60)$/);
    assert.equal(lease.prefix, 24);
    assert.equal(lease.gateway, '10.231.0.1');
    assert.match(ip('-n', CLIENT_NS, '-4', 'addr', 'show', 'dev', CLIENT_IF), new RegExp(`inet ${lease.address.replace(/\./g, '\\.')}/24`));
    assert.match(ip('-n', CLIENT_NS, 'route', 'show', 'default'), new RegExp(`default via 10\\.231\\.0\\.1 dev ${CLIENT_IF}`));
    assert.equal(readFileSync(resolvConfPath, 'utf8'), 'nameserver 10.231.0.53\n');
  });

  test('with fixed resolvers (volant.dns) the lease leaves resolv.conf alone; a renewal replaces the address', async () => {
    const leasePath = path.join(dir, 'lease-2');
    const resolvConfPath = path.join(dir, 'resolv-2.conf');
    writeFileSync(resolvConfPath, 'nameserver 9.9.9.9\n');
    const script = path.join(dir, 'udhcpc-2.sh');
    writeFileSync(script, dhcpScript({ leasePath, resolvConfPath, writeResolvConf: false }));
    chmodSync(script, 0o755);
    await leaseWith(dir, script, leasePath);
    assert.equal(readFileSync(resolvConfPath, 'utf8'), 'nameserver 9.9.9.9\n');
    const addrs = ip('-n', CLIENT_NS, '-4', 'addr', 'show', 'dev', CLIENT_IF).match(/inet /g) ?? [];
    assert.equal(addrs.length, 1, 'the script flushes the old address before adding the new one');
  });

  test('udhcpc stays and renews the lease (kestrel no longer runs it with -q): a renewal rewrites the lease file', async () => {
    const leasePath = path.join(dir, 'lease-r');
    const script = path.join(dir, 'udhcpc-r.sh');
    writeFileSync(script, dhcpScript({ leasePath, resolvConfPath: path.join(dir, 'resolv-r.conf'), writeResolvConf: true }));
    chmodSync(script, 0o755);
    const u = startUdhcpc(dir, script);
    try {
      await eventually(() => existsSync(leasePath), { timeoutMs: 20_000, what: 'the first lease' });
      const first = parseLeaseFile(readFileSync(leasePath, 'utf8'));
      rmSync(leasePath);
      // SIGUSR1 makes udhcpc renew now (as it does by itself at half the lease time). `ip netns
      // exec` and `env` exec their program, so the child is udhcpc itself.
      u.child.kill('SIGUSR1');
      await eventually(() => existsSync(leasePath), { timeoutMs: 20_000, what: 'the renewal' });
      assert.deepEqual(parseLeaseFile(readFileSync(leasePath, 'utf8')), first, 'the same lease, renewed');
      assert.equal(u.child.exitCode, null);
    } finally {
      u.child.kill('SIGTERM');
      await u.exited;
    }
  });

  test('no DHCP server: udhcpc gives up (-n) and no lease file appears', async () => {
    const server = dnsmasq!;
    const gone = server.exitCode !== null || server.signalCode !== null ? Promise.resolve() : nextEvent(server, 'exit');
    server.kill('SIGTERM');
    await gone;
    const leasePath = path.join(dir, 'lease-3');
    const script = path.join(dir, 'udhcpc-3.sh');
    writeFileSync(script, dhcpScript({ leasePath, resolvConfPath: path.join(dir, 'resolv-3.conf'), writeResolvConf: true }));
    chmodSync(script, 0o755);
    const u = startUdhcpc(dir, script);
    assert.notEqual(await u.exited, 0);
    assert.equal(existsSync(leasePath), false);
  });
});
