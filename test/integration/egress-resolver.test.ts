/**
 * The egress resolver against the loopback DNS server (in-process and as the script the e2e
 * harness runs): both families, CNAME chains, NXDOMAIN vs. a resolver that never answers,
 * rebinding sequences, and bad server lists.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { createDnsResolver } from '../../host/egress/resolver.js';
import { type DnsServer, startDnsServer } from '../support/dns-server.js';

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({
    records: {
      'both.test': { a: ['192.0.2.1', '192.0.2.2'], aaaa: ['2001:db8::1'] },
      'v6only.test': { aaaa: ['2001:db8::2'] },
      'alias.test': { cname: 'hop.test' },
      'hop.test': { cname: 'both.test' },
      'loop-a.test': { cname: 'loop-b.test' },
      'loop-b.test': { cname: 'loop-a.test' },
      'dead.test': { drop: true },
      'flip.test': { sequence: [{ a: ['192.0.2.10'] }, { a: ['10.0.0.1'] }] },
    },
  });
});
after(() => dns.close());

describe('createDnsResolver', () => {
  it('returns every A and AAAA address', async () => {
    const r = createDnsResolver({ servers: [dns.address] });
    assert.deepEqual((await r.resolve('both.test')).sort(), ['192.0.2.1', '192.0.2.2', '2001:db8::1']);
    assert.deepEqual(await r.resolve('v6only.test'), ['2001:db8::2']);
  });
  it('follows CNAME chains to the addresses', async () => {
    const r = createDnsResolver({ servers: [dns.address] });
    assert.deepEqual((await r.resolve('alias.test')).sort(), ['192.0.2.1', '192.0.2.2', '2001:db8::1']);
  });
  it('NXDOMAIN → UPSTREAM_UNREACHABLE dns-not-found; CNAME loop is not an address', async () => {
    const r = createDnsResolver({ servers: [dns.address] });
    await assert.rejects(r.resolve('nothing.test'), (e: Error & { code?: string; details?: { reason: string } }) => e.code === 'UPSTREAM_UNREACHABLE' && e.details?.reason === 'dns-not-found');
    await assert.rejects(r.resolve('loop-a.test'), (e: Error & { code?: string }) => e.code === 'UPSTREAM_UNREACHABLE');
  });
  it('a resolver that never answers → TIMEOUT dns-timeout within the bound', async () => {
    const r = createDnsResolver({ servers: [dns.address], timeoutMs: 300 });
    const t0 = performance.now();
    await assert.rejects(r.resolve('dead.test'), (e: Error & { code?: string; details?: { reason: string } }) => e.code === 'TIMEOUT' && e.details?.reason === 'dns-timeout');
    assert.ok(performance.now() - t0 < 3000);
  });
  it('asks again on every call (no cache that would hide rebinding from the check)', async () => {
    const r = createDnsResolver({ servers: [dns.address] });
    assert.deepEqual(await r.resolve('flip.test'), ['192.0.2.10']);
    assert.deepEqual(await r.resolve('flip.test'), ['10.0.0.1']);
  });
  it('refuses a malformed server list with INVALID_ARGUMENT', () => {
    assert.throws(() => createDnsResolver({ servers: ['not an ip'] }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /not an ip/.test(e.message));
  });
});

describe('dns-server as a script', () => {
  it('serves the --records table on --port and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/dns-server.ts', '--port', '0', '--records', JSON.stringify({ 'script.test': { a: ['192.0.2.99'] } })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d) => {
          out += d;
          const m = /listening on (\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      assert.deepEqual(await createDnsResolver({ servers: [address] }).resolve('script.test'), ['192.0.2.99']);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });
});
