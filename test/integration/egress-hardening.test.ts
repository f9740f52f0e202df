/**
 * The egress proxy against a hostile workload, end to end on loopback: a DNS server we control
 * (test/support/dns-server.ts), TLS upstreams with throwaway certificates (test/support/tls-ca.ts),
 * plain HTTP and TCP upstreams that count every connection they accept, and raw bytes written to
 * the proxy. A refusal must never open a connection to the target, so every refusal here is
 * checked against those counters.
 *
 * Classes (issue 12): Connection cannot remove the Host the allowlist decided on; TLS tunnels
 * read and check the ClientHello before dialling (no SNI refused unless `sni=optional`); refusals
 * are charged to the VM's rate budget and repeated denials aggregated in the audit; NAT64
 * local-use addresses read with their RFC 6052 layout; one error shape for the proxy's and the
 * HTTP parser's refusals; only HTTP/1.0 and 1.1; one limiter shared by every VM's listener.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { createEgressStarter } from '../../host/daemon/egress.js';
import { type AuditRecord, EgressLimits, type EgressProxy, type EgressProxyOptions, startEgressProxy } from '../../host/egress/index.js';
import { defaultConfig } from '../../host/config/schema.js';
import { parseCidr } from '../../shared/ipv4.js';
import { captureClientHello } from '../support/client-hello.js';
import { type DnsServer, startDnsServer } from '../support/dns-server.js';
import { eventually } from '../support/eventually.js';
import { createTestCa, type TestCa } from '../support/tls-ca.js';

const VM = 'vm-h';
const dir = mkdtempSync(join(tmpdir(), `volant-egress-hardening-${process.pid}-`));

let dns: DnsServer;
let ca: TestCa;
/** TLS upstream for allowed.test; counts TCP connections accepted. */
let tlsUp: HttpServer;
let tlsAccepted = 0;
let TLS_PORT = 0;
/** Plain HTTP upstream; records what it saw. */
let httpUp: HttpServer;
let httpAccepted = 0;
let HTTP_PORT = 0;
const seen: Array<{ host: string | undefined; headers: IncomingMessage['headers']; body: string }> = [];
/** TCP echo upstream (port rules); counts connections. */
let echoUp: TcpServer;
let echoAccepted = 0;
let ECHO_PORT = 0;
/** A port nothing listens on (the scan oracle). */
let CLOSED_PORT = 0;
const proxies: EgressProxy[] = [];

const listen = (s: HttpServer | TcpServer): Promise<number> => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
const portOf = (p: EgressProxy): number => (p.address as { port: number }).port;

before(async () => {
  dns = await startDnsServer({
    records: {
      'allowed.test': { a: ['127.0.0.1'] },
      'optional.test': { a: ['127.0.0.1'] },
      'closed.test': { a: ['127.0.0.1'] },
      'raw.test': { a: ['127.0.0.1'] },
      'other.test': { a: ['127.0.0.1'] },
      'hold.test': { a: ['93.184.216.34'] },
      // RFC 6052 /48 layout of 64:ff9b:1::/48: IPv4 10.0.0.1 in bits 48-63 and 72-87; the last
      // 32 bits spell 8.8.8.8 for a reader that only looks there.
      'nat64-local.test': { aaaa: ['64:ff9b:1:a00:0:100:808:808'] },
      'nat64-local-private.test': { aaaa: ['64:ff9b:1:a9fe:a9:fe00::'] },
    },
  });
  ca = createTestCa();
  const leaf = ca.issue(['allowed.test', 'optional.test']);
  tlsUp = createHttpsServer({ cert: leaf.cert, key: leaf.key }, (req, res) => res.end(`secure ${req.headers.host}`));
  tlsUp.on('connection', () => tlsAccepted++);
  TLS_PORT = await listen(tlsUp);
  httpUp = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d.toString('latin1');
    });
    req.on('end', () => {
      seen.push({ host: req.headers.host, headers: req.headers, body });
      res.end(`hello ${req.headers.host}`);
    });
  });
  httpUp.on('connection', () => httpAccepted++);
  HTTP_PORT = await listen(httpUp);
  echoUp = createTcpServer((s) => {
    echoAccepted++;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  ECHO_PORT = await listen(echoUp);
  const probe = createTcpServer();
  CLOSED_PORT = await listen(probe);
  await new Promise((r) => probe.close(r));
});

after(async () => {
  for (const p of proxies) await p.close();
  await dns?.close();
  for (const s of [tlsUp, httpUp]) {
    s?.closeAllConnections();
    s?.close();
  }
  echoUp?.close();
  ca?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

async function proxy(opts: Partial<EgressProxyOptions> & { rules?: string[] } = {}): Promise<EgressProxy> {
  const rules = opts.rules ?? ['allowed.test', 'optional.test sni=optional', 'closed.test', `raw.test:${ECHO_PORT}`, 'nat64-local.test', 'nat64-local-private.test'];
  const p = await startEgressProxy({
    listen: { host: '127.0.0.1', port: 0 },
    resolver: { servers: [dns.address] },
    dnsTimeoutMs: 500,
    connectTimeoutMs: 2000,
    clientHelloTimeoutMs: 500,
    allowPrivate: ['127.0.0.0/8'],
    policyFor: (peer) => (peer.remoteAddress === '127.0.0.1' ? { vmName: VM, allowedDomains: rules } : undefined),
    ...opts,
  } as EgressProxyOptions);
  proxies.push(p);
  return p;
}

interface Reply {
  status: number;
  text: string;
  json?: { error?: { code?: string; message?: string; details?: { reason?: string } } };
}

/** Raw bytes to the proxy; everything it answers until it closes (or `waitMs`). */
function raw(p: EgressProxy, bytes: string, opts: { waitMs?: number; end?: boolean; localAddress?: string } = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const c = connect({ port: portOf(p), host: '127.0.0.1', localAddress: opts.localAddress }, () => {
      c.write(bytes);
      if (opts.end) c.end();
    });
    let text = '';
    const timer = setTimeout(() => c.destroy(), opts.waitMs ?? 4000);
    c.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      let json: Reply['json'];
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      resolve({ status: m ? Number(m[1]) : 0, text, json });
    });
  });
}

/** The one error shape, with the denial's reason in details. */
function assertRefusal(r: Reply, status: number, reason: string, code?: string): void {
  assert.equal(r.status, status, r.text.slice(0, 300));
  assert.match(r.text, /\r\ncontent-type: application\/json/i);
  assert.equal(typeof r.json?.error?.code, 'string', r.text);
  assert.equal(typeof r.json?.error?.message, 'string');
  assert.equal(r.json?.error?.details?.reason, reason, r.text);
  if (code) assert.equal(r.json?.error?.code, code);
}

/** CONNECT, then after the 200 send `payload` (bytes) and read until the proxy closes. */
function tunnel(p: EgressProxy, authority: string, payload: Buffer | null): Promise<{ established: boolean; after: string }> {
  return new Promise((resolve) => {
    const c = connect(portOf(p), '127.0.0.1');
    let buf = '';
    let established = false;
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!established && buf.includes('\r\n\r\n')) {
        established = buf.startsWith('HTTP/1.1 200');
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        if (established && payload) c.write(payload);
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => resolve({ established, after: buf }));
    c.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

/** A full HTTPS GET through a tunnel; `servername: undefined` sends no SNI. */
function httpsThrough(p: EgressProxy, authority: string, servername: string | undefined): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(portOf(p), '127.0.0.1');
    c.once('data', (d: Buffer) => {
      if (!d.toString('latin1').startsWith('HTTP/1.1 200')) {
        c.destroy();
        resolve('refused');
        return;
      }
      const t = tlsConnect({ socket: c, servername, ca: ca.ca, rejectUnauthorized: false });
      let body = '';
      t.on('secureConnect', () => t.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      t.on('data', (x: Buffer) => {
        body += x.toString('latin1');
      });
      t.on('error', () => undefined);
      t.on('close', () => resolve(body.startsWith('HTTP/1.1 200') ? body.slice(body.indexOf('\r\n\r\n') + 4) : 'closed'));
    });
    c.on('error', () => resolve('error'));
    c.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

describe('egress: Connection cannot remove the Host the allowlist decided on', () => {
  it('Connection: host → the upstream still sees the decided Host, never the pinned address', async () => {
    const p = await proxy();
    for (const conn of ['host', 'Host, close', 'close, HOST']) {
      seen.length = 0;
      const r = await raw(p, `GET http://allowed.test:${HTTP_PORT}/x HTTP/1.1\r\nHost: allowed.test:${HTTP_PORT}\r\nConnection: ${conn}\r\n\r\n`);
      assert.equal(r.status, 200, r.text);
      assert.equal(seen[0]?.host, `allowed.test:${HTTP_PORT}`, `Connection: ${conn}`);
    }
  });

  it('the Host is the canonical name the decision was made on, with or without a client Host header', async () => {
    const p = await proxy();
    for (const [target, host] of [
      [`http://ALLOWED.Test.:${HTTP_PORT}/`, `ALLOWED.Test.:${HTTP_PORT}`],
      [`http://allowed.test:${HTTP_PORT}/`, undefined],
    ] as const) {
      seen.length = 0;
      const r = await raw(p, `GET ${target} HTTP/1.1\r\n${host ? `Host: ${host}\r\n` : ''}Connection: close\r\n\r\n`);
      assert.equal(r.status, 200, r.text);
      assert.equal(seen[0]?.host, `allowed.test:${HTTP_PORT}`);
    }
  });

  it('Connection cannot remove Content-Length either; other listed headers are dropped', async () => {
    const p = await proxy();
    seen.length = 0;
    const r = await raw(p, `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nHost: allowed.test:${HTTP_PORT}\r\nContent-Length: 5\r\nX-Hop: 1\r\nConnection: content-length, x-hop, close\r\n\r\nhello`);
    assert.equal(r.status, 200, r.text);
    assert.equal(seen[0]?.headers['content-length'], '5');
    assert.equal(seen[0]?.headers['transfer-encoding'], undefined);
    assert.equal(seen[0]?.headers['x-hop'], undefined);
    assert.equal(seen[0]?.body, 'hello');
  });
});

describe('egress: TLS tunnels read and check the ClientHello before dialling', () => {
  const refused: Array<[string, () => Promise<Buffer | null>, string]> = [
    ['a ClientHello without SNI', () => captureClientHello(undefined), 'sni-missing'],
    ['a ClientHello for another name (fronting)', () => captureClientHello('evil.test'), 'sni-mismatch'],
    ['a ClientHello for a subdomain', () => captureClientHello('x.allowed.test'), 'sni-mismatch'],
    ['plain HTTP instead of TLS', async () => Buffer.from('GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n'), 'non-tls-tunnel'],
    ['a malformed ClientHello', async () => Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]), 'client-hello-invalid'],
    ['nothing within the hello timeout', async () => null, 'client-hello-invalid'],
  ];
  for (const [name, payload, reason] of refused) {
    it(`${name}: cut after the 200, and the target never sees a TCP handshake`, async () => {
      const audits: AuditRecord[] = [];
      const p = await proxy({ audit: (a) => audits.push(a) });
      const before = tlsAccepted;
      const t = await tunnel(p, `allowed.test:${TLS_PORT}`, await payload());
      assert.equal(t.established, true);
      assert.equal(t.after, '', 'nothing came back through the tunnel');
      const a = await eventually(() => audits.find((x) => x.method === 'CONNECT'), { what: 'the audit line' });
      assert.equal(a.decision, 'deny');
      assert.equal(a.reason, reason);
      assert.equal(tlsAccepted, before, 'no connection was opened to the target');
    });
  }

  it('the right SNI goes through, with exactly one connection to the target', async () => {
    const p = await proxy();
    const before = tlsAccepted;
    assert.equal(await httpsThrough(p, `allowed.test:${TLS_PORT}`, 'allowed.test'), `secure x`);
    assert.equal(tlsAccepted, before + 1);
  });

  it('no SNI is admitted where the rule says sni=optional (and for IP-literal rules)', async () => {
    const p = await proxy({ rules: ['optional.test sni=optional', '127.0.0.1'] });
    assert.equal(await httpsThrough(p, `optional.test:${TLS_PORT}`, undefined), 'secure x');
    assert.equal(await httpsThrough(p, `127.0.0.1:${TLS_PORT}`, undefined), 'secure x');
    assert.equal(await httpsThrough(p, `optional.test:${TLS_PORT}`, 'evil.test'), 'closed', 'a wrong SNI is still refused');
  });

  it('a VM cannot scan: CONNECT to an allow-listed name on a closed port answers 200 like an open one', async () => {
    const p = await proxy();
    const open = await tunnel(p, `allowed.test:${TLS_PORT}`, null);
    const closed = await tunnel(p, `closed.test:${CLOSED_PORT}`, null);
    assert.equal(open.established, true);
    assert.equal(closed.established, true);
    const hello = await tunnel(p, `closed.test:${CLOSED_PORT}`, await captureClientHello('closed.test'));
    assert.equal(hello.established, true);
    assert.equal(hello.after, '', 'the dial after the hello failed: the tunnel just closes');
  });

  it('a rule naming the port admits any protocol and dials at once (server-speaks-first); a client FIN there is a half-close', async () => {
    const p = await proxy();
    const before = echoAccepted;
    const echoed = await new Promise<string>((resolve) => {
      const c = connect(portOf(p), '127.0.0.1');
      let b = '';
      c.on('data', (d: Buffer) => {
        b += d.toString('latin1');
        if (b.startsWith('HTTP/1.1 200') && b.endsWith('\r\n\r\n')) c.end('ping');
      });
      c.on('close', () => resolve(b.slice(b.indexOf('\r\n\r\n') + 4)));
      c.write(`CONNECT raw.test:${ECHO_PORT} HTTP/1.1\r\nHost: raw.test\r\n\r\n`);
    });
    assert.equal(echoed, 'ping');
    assert.equal(echoAccepted, before + 1);
  });
});

describe('egress: refusals count against the VM’s rate budget; repeated denials are aggregated', () => {
  it('denied requests spend the budget: the next request, even an allowed one, is 429', async () => {
    const p = await proxy({ requestsPerSecondPerVm: 0.001, requestBurstPerVm: 3 });
    for (let i = 0; i < 3; i++) assertRefusal(await raw(p, `GET http://denied.example/ HTTP/1.1\r\n\r\n`), 403, 'not-allowlisted');
    const before = httpAccepted;
    assertRefusal(await raw(p, `GET http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\n\r\n`), 429, 'rate-limited', 'RATE_LIMITED');
    assertRefusal(await raw(p, `CONNECT allowed.test:${TLS_PORT} HTTP/1.1\r\n\r\n`), 429, 'rate-limited');
    assert.equal(httpAccepted, before);
  });

  it('malformed requests and refused upgrades are charged too; peers no VM claims share one budget', async () => {
    const p = await proxy({ requestsPerSecondPerVm: 0.001, requestBurstPerVm: 2 });
    assertRefusal(await raw(p, 'GET http://x.test/ HTTP/1.1\r\nBad Header\r\n\r\n'), 400, 'bad-target');
    assertRefusal(await raw(p, `GET http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`), 501, 'upgrade-unsupported');
    assertRefusal(await raw(p, 'GET http://x.test/ HTTP/1.1\r\nBad Header\r\n\r\n'), 429, 'rate-limited');
    for (let i = 0; i < 2; i++) assertRefusal(await raw(p, 'CONNECT allowed.test:443 HTTP/1.1\r\n\r\n', { localAddress: '127.0.0.2' }), 403, 'no-policy');
    assertRefusal(await raw(p, 'CONNECT allowed.test:443 HTTP/1.1\r\n\r\n', { localAddress: '127.0.0.3' }), 429, 'rate-limited');
  });

  it('identical denials: the first is written, then one summary line with the count', async () => {
    const audits: AuditRecord[] = [];
    const p = await proxy({ audit: (a) => audits.push(a), auditWindowMs: 200, requestsPerSecondPerVm: 10_000, requestBurstPerVm: 10_000 });
    for (let i = 0; i < 20; i++) assertRefusal(await raw(p, 'CONNECT denied.example:443 HTTP/1.1\r\n\r\n'), 403, 'not-allowlisted');
    assertRefusal(await raw(p, 'CONNECT other.example:443 HTTP/1.1\r\n\r\n'), 403, 'not-allowlisted');
    const summary = await eventually(() => audits.find((a) => a.repeated !== undefined), { what: 'the summary line' });
    const denied = audits.filter((a) => a.host === 'denied.example');
    assert.equal(denied.length, 2, JSON.stringify(denied));
    assert.equal(denied[0]!.repeated, undefined);
    assert.equal(summary.host, 'denied.example');
    assert.equal(summary.repeated, 19);
    assert.equal(summary.window_ms, 200);
    assert.equal(audits.filter((a) => a.host === 'other.example').length, 1, 'a different denial has its own line');
    assert.equal(await p.metrics.count({ reason: 'not-allowlisted' }), 21, 'metrics still count every decision');
  });
});

describe('egress: NAT64 local-use addresses are read with their RFC 6052 layout', () => {
  it('64:ff9b:1::/48 embedding a private address is refused, whatever the last 32 bits say', async () => {
    const p = await proxy();
    for (const name of ['nat64-local.test', 'nat64-local-private.test']) {
      for (const req of [`CONNECT ${name}:443 HTTP/1.1\r\n\r\n`, `GET http://${name}/ HTTP/1.1\r\n\r\n`]) {
        assertRefusal(await raw(p, req), 403, 'blocked-address', 'EGRESS_DENIED');
      }
    }
  });
});

describe('egress: the one error shape, the HTTP parser’s refusals included; only HTTP/1.0 and 1.1', () => {
  it('431 for a head over the limit, 408 for a head that never finishes, 400 for garbage', async () => {
    const p = await proxy();
    assertRefusal(await raw(p, `GET http://allowed.test/ HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'header-too-large', 'HEADERS_TOO_LARGE');
    assertRefusal(await raw(p, 'GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ', { end: true }), 408, 'incomplete-request', 'REQUEST_TIMEOUT');
    assertRefusal(await raw(p, '\x16\x03\x01garbage\r\n\r\n'), 400, 'bad-target', 'INVALID_ARGUMENT');
  });

  it('413 carries its own code', async () => {
    const p = await proxy({ maxRequestBodyBytes: 10 });
    assertRefusal(await raw(p, `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world`), 413, 'body-too-large', 'PAYLOAD_TOO_LARGE');
  });

  const lines: Array<[string, string]> = [
    ['HTTP/0.9-style GET', `GET http://allowed.test:HTTP_PORT/\r\n\r\n`],
    ['HTTP/0.9-style GET with a header after it', `GET http://allowed.test:HTTP_PORT/\r\nHost: allowed.test\r\n\r\n`],
    ['HTTP/2.0 GET', `GET http://allowed.test:HTTP_PORT/ HTTP/2.0\r\n\r\n`],
    ['HTTP/0.9-style CONNECT', `CONNECT raw.test:ECHO_PORT\r\n\r\n`],
    ['HTTP/2.0 CONNECT', `CONNECT raw.test:ECHO_PORT HTTP/2.0\r\n\r\n`],
  ];
  for (const [name, bytes] of lines) {
    it(`${name} → 400, nothing dialled`, async () => {
      const p = await proxy();
      const before = httpAccepted + echoAccepted;
      const r = await raw(p, bytes.replace('HTTP_PORT', String(HTTP_PORT)).replace('ECHO_PORT', String(ECHO_PORT)));
      assertRefusal(r, 400, 'http-version', 'INVALID_ARGUMENT');
      assert.equal(httpAccepted + echoAccepted, before);
    });
  }
});

describe('egress: one limiter for every VM’s listener', () => {
  it('two proxies given one EgressLimits share its host-wide concurrency limit', async () => {
    const limits = new EgressLimits({ maxConcurrentTotal: 2 });
    const rules = [`raw.test:${ECHO_PORT}`];
    const a = await proxy({ limits, policyFor: () => ({ vmName: 'a', allowedDomains: rules }) });
    const b = await proxy({ limits, policyFor: () => ({ vmName: 'b', allowedDomains: rules }) });
    const open = (p: EgressProxy): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const c = connect(portOf(p), '127.0.0.1');
        c.once('data', (d: Buffer) => (d.toString('latin1').startsWith('HTTP/1.1 200') ? resolve(c) : reject(new Error(d.toString('latin1')))));
        c.write(`CONNECT raw.test:${ECHO_PORT} HTTP/1.1\r\n\r\n`);
      });
    const ta = await open(a);
    const tb = await open(b);
    assertRefusal(await raw(a, `CONNECT raw.test:${ECHO_PORT} HTTP/1.1\r\n\r\n`), 503, 'overloaded', 'OVERLOADED');
    assert.equal(limits.active, 2);
    ta.destroy();
    tb.destroy();
    await eventually(() => limits.active === 0, { what: 'the slots released' });
  });

  it('the daemon gives every VM’s listener the same limiter', async () => {
    const cfg = defaultConfig();
    cfg.egress.dns_servers = [dns.address];
    const starter = createEgressStarter({ egress: cfg.egress }, parseCidr('127.0.0.1/8'), { bridge: 'lo', interfaceAddresses: () => [] });
    const handles = [];
    const sockets: Socket[] = [];
    try {
      for (const name of ['one', 'two']) {
        const vsockSocketPath = join(dir, `${name}.vsock`);
        const egress = { route: { via: 'hybrid-vsock' as const }, peers: { kind: 'vm-socket' as const }, allowedDomains: ['hold.test'] };
        handles.push(await starter.start({ name, vsockSocketPath, egress, guest: () => ({ mac: '02:00:00:00:00:01' }) }));
        // A TLS-only tunnel holds its slot from the 200 while it waits for the ClientHello; nothing
        // is dialled (hold.test's public address is never contacted: no hello is sent).
        const c = connect({ path: `${vsockSocketPath}_3128` });
        await new Promise<void>((resolve) => {
          c.once('data', () => resolve());
          c.write('CONNECT hold.test:443 HTTP/1.1\r\n\r\n');
        });
        sockets.push(c);
      }
      assert.equal(starter.limits.active, 2, 'both VMs’ tunnels hold a slot of the one limiter');
    } finally {
      for (const s of sockets) s.destroy();
      for (const h of handles) await h.close();
    }
  });
});
