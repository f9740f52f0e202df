/**
 * The egress proxy against hostile input, end to end on loopback: a real DNS server we control
 * (test/support/dns-server.ts), real upstream HTTP/HTTPS/TCP servers on 127.0.0.1, and raw bytes
 * written to the proxy so nothing normalises the attack before it arrives.
 *
 * Two proxies carry the table:
 *  - LOOSE: allow_private 127.0.0.0/8 (so allow-listed names reach the loopback upstream; this
 *    stands in for "a public address"), no IP rules;
 *  - STRICT: no allow_private, IP rules for 127.0.0.1 and ::1 (so IP literals pass the allowlist
 *    and the address policy must still refuse loopback).
 * Nothing is ever dialled outside loopback: every non-loopback address in the table is refused
 * before any connect, which the audit records confirm (address present, decision deny).
 */

import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { type AuditRecord, type EgressProxy, startEgressProxy } from '../../host/egress/index.js';
import { type DnsRecords, type DnsServer, startDnsServer } from '../support/dns-server.js';
import { createTestCa, type TestCa } from '../support/tls-ca.js';
import { captureClientHello } from '../support/client-hello.js';
import { eventually } from '../support/eventually.js';

const VM = 'web-1';

let dns: DnsServer;
let ca: TestCa;
let httpUp: HttpServer;
let httpsUp: HttpServer;
let echoUp: TcpServer;
let HTTP_PORT = 0;
let HTTPS_PORT = 0;
let ECHO_PORT = 0;
let BURST_PORT = 0;
let burstUp: TcpServer;
/** Connections the burst upstream has finished writing to and closed. */
let burstDone = 0;
const BURST_BYTES = 4 * 1024 * 1024;
let loose: EgressProxy;
let strict: EgressProxy;
const audits: AuditRecord[] = [];
const upstreamSeen: { host?: string; headers: Record<string, string | string[] | undefined>; url?: string }[] = [];

const listenPort = (s: HttpServer | TcpServer): Promise<number> =>
  new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));

const portOf = (p: EgressProxy): number => (p.address as { port: number }).port;

interface RawResponse {
  status: number;
  headers: string;
  body: string;
  json?: { error?: { code: string; message: string; details: { reason: string; rule?: string; address?: string } } };
}

/** Writes raw bytes to the proxy and reads until it closes (or `waitMs`). */
function raw(proxy: EgressProxy | number, bytes: string | Buffer, opts: { waitMs?: number; localAddress?: string } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const port = typeof proxy === 'number' ? proxy : portOf(proxy);
    const c = connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => c.destroy(), opts.waitMs ?? 5000);
    c.on('data', (d) => chunks.push(d));
    c.on('error', () => {});
    c.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (!m) {
        resolve({ status: 0, headers: '', body: text });
        return;
      }
      const split = text.indexOf('\r\n\r\n');
      const body = split >= 0 ? text.slice(split + 4) : '';
      let json: RawResponse['json'];
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      resolve({ status: Number(m[1]), headers: text.slice(0, split), body, json });
    });
    c.on('connect', () => c.write(bytes));
    c.on('timeout', () => reject(new Error('timeout')));
  });
}

const get = (target: string, host?: string, extra = ''): string =>
  `GET ${target} HTTP/1.1\r\n${host === undefined ? '' : `Host: ${host}\r\n`}${extra}Connection: close\r\n\r\n`;
const connectReq = (authority: string): string => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;

/** Opens a CONNECT tunnel and resolves with the socket, paused, after the 200 (or rejects with the status line). */
function openTunnel(proxy: EgressProxy, authority: string, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const c = connect({ port: portOf(proxy), host: '127.0.0.1', localAddress });
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      c.off('data', onData);
      if (!buf.startsWith('HTTP/1.1 200')) {
        c.destroy();
        reject(new Error(buf.split('\r\n')[0]));
        return;
      }
      const rest = buf.slice(end + 4);
      c.pause();
      if (rest.length > 0) c.unshift(Buffer.from(rest, 'latin1'));
      resolve(c);
    };
    c.on('data', onData);
    c.on('error', reject);
    c.write(connectReq(authority));
  });
}

/** TLS through a tunnel: resolves 'ok:<body>' when an HTTPS GET succeeded, 'closed' when the proxy cut it. */
async function tlsThroughTunnel(proxy: EgressProxy, authority: string, servername: string | undefined): Promise<string> {
  const sock = await openTunnel(proxy, authority);
  return new Promise((resolve) => {
    const t = tlsConnect({ socket: sock, servername, ca: ca.ca, rejectUnauthorized: false });
    let body = '';
    t.on('secureConnect', () => t.write(`GET /tls HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`));
    t.on('data', (d) => {
      body += d;
    });
    t.on('error', () => {});
    t.on('close', () => resolve(body.startsWith('HTTP/1.1 200') ? `ok:${body.slice(body.indexOf('\r\n\r\n') + 4)}` : 'closed'));
  });
}

const lastAudit = (pred: (a: AuditRecord) => boolean): AuditRecord | undefined => [...audits].reverse().find(pred);

/**
 * The audit line is written when the proxy's side of both sockets has closed, a moment after
 * ours; a denial identical to one earlier in the window arrives as the window's summary line.
 */
async function awaitAudit(pred: (a: AuditRecord) => boolean, sinceIndex: number): Promise<AuditRecord | undefined> {
  return eventually(() => audits.slice(sinceIndex).reverse().find(pred), { timeoutMs: 3000, what: 'audit line' }).catch(() => undefined);
}

const DNS_RECORDS: DnsRecords = {
  'allowed.test': { a: ['127.0.0.1'] },
  'evil.test': { a: ['127.0.0.1'] },
  'sub.allowed.test': { a: ['127.0.0.1'] },
  'a.wild.test': { a: ['127.0.0.1'] },
  'deep.a.wild.test': { a: ['127.0.0.1'] },
  'wild.test': { a: ['127.0.0.1'] },
  'both.test': { a: ['127.0.0.1'] },
  'x.both.test': { a: ['127.0.0.1'] },
  'xn--bcher-kva.test': { a: ['127.0.0.1'] },
  'alias.test': { cname: 'target.elsewhere.test' },
  'target.elsewhere.test': { a: ['127.0.0.1'] },
  'alias-private.test': { cname: 'p10.bad.test' },
  'raw.test': { a: ['127.0.0.1'] },
  'loop.bad.test': { a: ['127.0.0.1'] },
  'loop6.bad.test': { aaaa: ['::1'] },
  'p10.bad.test': { a: ['10.0.0.1'] },
  'p172.bad.test': { a: ['172.16.5.4'] },
  'p192.bad.test': { a: ['192.168.1.1'] },
  'meta.bad.test': { a: ['169.254.169.254'] },
  'cgnat.bad.test': { a: ['100.64.0.1'] },
  'zero.bad.test': { a: ['0.0.0.0'] },
  'mcast.bad.test': { a: ['224.0.0.251'] },
  'bcast.bad.test': { a: ['255.255.255.255'] },
  'class-e.bad.test': { a: ['240.0.0.1'] },
  'doc.bad.test': { a: ['192.0.2.10'] },
  'mapped.bad.test': { aaaa: ['::ffff:127.0.0.1'] },
  'mapped-public.bad.test': { aaaa: ['::ffff:93.184.216.34'] },
  'compat.bad.test': { aaaa: ['::127.0.0.1'] },
  'nat64.bad.test': { aaaa: ['64:ff9b::a9fe:a9fe'] },
  'sixto4.bad.test': { aaaa: ['2002:7f00:1::1'] },
  'teredo.bad.test': { aaaa: ['2001:0:4136:e378:8000:63bf:80ff:fffe'] },
  'ula.bad.test': { aaaa: ['fd00::1'] },
  'll6.bad.test': { aaaa: ['fe80::1'] },
  'mcast6.bad.test': { aaaa: ['ff02::1'] },
  'mixed.bad.test': { a: ['127.0.0.1', '10.1.2.3'] },
  'mixed6.bad.test': { a: ['127.0.0.1'], aaaa: ['fc00::5'] },
  'hostaddr.bad.test': { a: ['93.184.216.34'] },
  'dead.bad.test': { drop: true },
  'rebind.test': { sequence: [{ a: ['127.0.0.1'] }, { a: ['169.254.169.254'] }] },
};

before(async () => {
  dns = await startDnsServer({ records: DNS_RECORDS });
  ca = createTestCa();
  const leaf = ca.issue(['allowed.test', 'wrongname.test-not']);
  httpUp = createHttpServer((req, res) => {
    upstreamSeen.push({ host: req.headers.host, headers: req.headers, url: req.url });
    if (req.url === '/big') {
      res.end(Buffer.alloc(1 << 20, 0x61));
      return;
    }
    let n = 0;
    req.on('data', (d: Buffer) => {
      n += d.length;
    });
    req.on('end', () => res.end(`hello ${req.method} ${req.headers.host} ${req.url} body=${n}`));
  });
  HTTP_PORT = await listenPort(httpUp);
  httpsUp = createHttpsServer({ cert: leaf.cert, key: leaf.key }, (req, res) => res.end(`secure ${req.headers.host} ${req.url}`));
  HTTPS_PORT = await listenPort(httpsUp);
  echoUp = createTcpServer((s) => {
    s.write('BANNER\n');
    s.pipe(s);
  });
  ECHO_PORT = await listenPort(echoUp);
  // Writes BURST_BYTES and closes at once: the proxy must still deliver all of it to a slow reader.
  burstUp = createTcpServer((s) => {
    s.on('error', () => {});
    s.end(Buffer.alloc(BURST_BYTES, 0x42), () => burstDone++);
  });
  BURST_PORT = await listenPort(burstUp);
  const common = {
    resolver: { servers: [dns.address] },
    dnsTimeoutMs: 400,
    connectTimeoutMs: 2000,
    clientHelloTimeoutMs: 1500,
    deniedAddresses: ['93.184.216.34'],
    // Every request of the table, refused or not, is charged to VM web-1's rate budget.
    requestsPerSecondPerVm: 100_000,
    requestBurstPerVm: 100_000,
    // Identical denials in a window are one line plus a summary: keep the window short here.
    auditWindowMs: 100,
    audit: (r: AuditRecord) => audits.push(r),
  };
  const rules = ['allowed.test', '*.wild.test', '.both.test', 'bücher.test', 'alias.test', 'alias-private.test', `raw.test:${ECHO_PORT}`, `raw.test:${BURST_PORT}`, '*.bad.test', 'rebind.test'];
  loose = await startEgressProxy({
    ...common,
    listen: { host: '127.0.0.1', port: 0 },
    allowPrivate: ['127.0.0.0/8'],
    policyFor: (peer) => (peer.remoteAddress === '127.0.0.1' ? { vmName: VM, allowedDomains: rules } : undefined),
  });
  strict = await startEgressProxy({
    ...common,
    listen: { host: '127.0.0.1', port: 0 },
    policyFor: () => ({ vmName: VM, allowedDomains: [...rules, '127.0.0.1', '[::1]'] }),
  });
});

after(async () => {
  await loose?.close();
  await strict?.close();
  await dns?.close();
  httpUp?.close();
  httpsUp?.close();
  echoUp?.close();
  burstUp?.close();
  ca?.cleanup();
});

// ---------------------------------------------------------------------------------------------
// The table. Each row: which proxy, the raw request, the status and the reason it must name.

interface Case {
  name: string;
  proxy: 'loose' | 'strict';
  request: () => string;
  status: number;
  reason?: string;
  /** For 200 rows: a substring of the upstream's answer. */
  body?: string;
}

const cases: Case[] = [];
const allowedGet = (host: string, authority: string, proxy: Case['proxy'] = 'loose'): Case => ({
  name: `GET http://${authority} (Host ${host}) on ${proxy} → 200`,
  proxy,
  request: () => get(`http://${authority.replace('PORT', String(HTTP_PORT))}/ok`, host.replace('PORT', String(HTTP_PORT))),
  status: 200,
  body: 'hello GET',
});

// Names that must pass: case, trailing dot, wildcards, IDN spelled as punycode, CNAME to elsewhere.
for (const [h, a] of [
  ['allowed.test:PORT', 'allowed.test:PORT'],
  ['ALLOWED.TEST:PORT', 'ALLOWED.TEST:PORT'],
  ['Allowed.Test.:PORT', 'Allowed.Test.:PORT'],
  ['allowed.test:PORT', 'AlLoWeD.tEsT:PORT'],
  ['a.wild.test:PORT', 'a.wild.test:PORT'],
  ['deep.a.wild.test:PORT', 'deep.a.wild.test:PORT'],
  ['both.test:PORT', 'both.test:PORT'],
  ['x.both.test:PORT', 'x.both.test:PORT'],
  ['xn--bcher-kva.test:PORT', 'xn--bcher-kva.test:PORT'],
  ['alias.test:PORT', 'alias.test:PORT'],
] as const) {
  cases.push(allowedGet(h, a));
}

// Names that must not pass the allowlist.
for (const host of ['evil.test', 'allowed.test.evil.test', 'evilallowed.test', 'sub.allowed.test', 'wild.test', 'xn--llowed-2nf.test', 'xn--allowd-8wf.test', 'allowed.tes', 'allowed.test.', 'target.elsewhere.test']) {
  const trailingDotAllowed = host === 'allowed.test.';
  cases.push({
    name: `GET http://${host} → ${trailingDotAllowed ? 200 : 403}`,
    proxy: 'loose',
    request: () => get(`http://${host}:${HTTP_PORT}/`, `${host}:${HTTP_PORT}`),
    status: trailingDotAllowed ? 200 : 403,
    reason: trailingDotAllowed ? undefined : 'not-allowlisted',
  });
  cases.push(
    trailingDotAllowed
      ? { name: `CONNECT ${host}:PORT → 200 tunnel`, proxy: 'loose', request: () => connectReq(`${host}:${HTTPS_PORT}`), status: 0 }
      : { name: `CONNECT ${host}:443 → 403`, proxy: 'loose', request: () => connectReq(`${host}:443`), status: 403, reason: 'not-allowlisted' },
  );
}

// Userinfo, delimiters and CRLF tricks in the target.
for (const [target, status, reason] of [
  ['http://allowed.test@evil.test/', 403, 'userinfo'],
  ['http://evil.test@allowed.test/', 403, 'userinfo'],
  ['http://allowed.test:80@evil.test/', 403, 'userinfo'],
  ['http://user:pass@allowed.test/', 403, 'userinfo'],
  ['http://allowed.test%2eevil.test/', 400, 'bad-target'],
  ['http://allowed.test%40evil.test/', 400, 'bad-target'],
  ['http://allowed.test\\@evil.test/', 400, 'bad-target'],
  ['http://allowed.test#@evil.test/', 400, 'bad-target'],
  ['http://allowed.test;.evil.test/', 400, 'bad-target'],
  ['http:///allowed.test/', 400, 'bad-target'],
  ['http://[::1/', 400, 'bad-target'],
  ['http://allowed.test:0/', 400, 'bad-port'],
  ['http://allowed.test:65536/', 400, 'bad-port'],
  ['http://allowed.test:+80/', 400, 'bad-port'],
  ['http://allowed.test:0x50/', 400, 'bad-port'],
  ['http://allowed.test:/', 400, 'bad-port'],
  ['https://allowed.test/', 403, 'scheme'],
  ['ftp://allowed.test/', 403, 'scheme'],
  ['gopher://allowed.test:70/', 403, 'scheme'],
  ['/ok', 400, 'origin-form'],
  ['*', 400, 'origin-form'],
  ['allowed.test/ok', 400, 'bad-target'],
] as const) {
  cases.push({ name: `GET ${target} → ${status} ${reason}`, proxy: 'loose', request: () => get(target, undefined), status, reason });
}
for (const [authority, status, reason] of [
  ['allowed.test', 400, 'bad-port'],
  ['allowed.test:0', 400, 'bad-port'],
  ['allowed.test:99999', 400, 'bad-port'],
  ['allowed.test:443/x', 400, 'bad-port'],
  ['http://allowed.test:443', 400, 'bad-target'],
  ['allowed.test@evil.test:443', 403, 'userinfo'],
  ['evil.test:443@allowed.test:443', 403, 'userinfo'],
  ['allowed.test%0d%0aX-Injected:443', 400, 'bad-target'],
  ['allowed.test:443%0d%0a', 400, 'bad-port'],
  [':443', 400, 'bad-target'],
  ['[::1]', 400, 'bad-port'],
  ['::1:443', 400, 'bad-target'],
] as const) {
  cases.push({ name: `CONNECT ${authority} → ${status} ${reason}`, proxy: 'loose', request: () => connectReq(authority), status, reason });
}

// Host header vs absolute-form authority, and request smuggling shapes the HTTP parser must refuse.
for (const [host, status, reason] of [
  ['evil.test:PORT', 403, 'host-mismatch'],
  ['allowed.test', 403, 'host-mismatch'],
  ['allowed.test:1', 403, 'host-mismatch'],
  ['allowed.test@evil.test:PORT', 403, 'host-mismatch'],
  ['ALLOWED.test:PORT', 200, undefined],
  ['allowed.test.:PORT', 200, undefined],
] as const) {
  cases.push({
    name: `Host ${host} for http://allowed.test:PORT → ${status}`,
    proxy: 'loose',
    request: () => get(`http://allowed.test:${HTTP_PORT}/`, host.replace('PORT', String(HTTP_PORT))),
    status,
    reason,
  });
}
cases.push({
  // The bare LF ends an HTTP/0.9-style request line (no version): refused before anything else.
  name: 'bare LF smuggles a Host header → 400 http-version',
  proxy: 'loose',
  request: () => `GET http://allowed.test:${HTTP_PORT}/\nHost: evil.test HTTP/1.1\r\n\r\n`,
  status: 400,
  reason: 'http-version',
});
cases.push({
  name: 'two Host headers → 403 host-mismatch',
  proxy: 'loose',
  request: () => get(`http://allowed.test:${HTTP_PORT}/`, `allowed.test:${HTTP_PORT}`, 'Host: evil.test\r\n'),
  status: 403,
  reason: 'host-mismatch',
});
for (const [name, bytes] of [
  ['CRLF injection in the request line', () => `GET http://allowed.test:${HTTP_PORT}/\rX-Injected: 1 HTTP/1.1\r\nConnection: close\r\n\r\n`],
  ['tab in target', () => `GET http://allowed.test:${HTTP_PORT}/\tx HTTP/1.1\r\n\r\n`],
  ['Content-Length with Transfer-Encoding', () => `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['two Content-Length', () => `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`],
  ['raw UTF-8 host', () => `GET http://bücher.test:${HTTP_PORT}/ HTTP/1.1\r\n\r\n`],
  ['garbage', () => '\x16\x03\x01\x00\x05hello\r\n\r\n'],
  ['header without colon', () => `GET http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nNoColonHere\r\n\r\n`],
  ['obsolete line folding', () => `GET http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n`],
] as const) {
  cases.push({ name: `${name} → 400`, proxy: 'loose', request: bytes, status: 400, reason: 'bad-target' });
}
cases.push({
  name: 'oversized headers (20 KiB) → 431',
  proxy: 'loose',
  request: () => get(`http://allowed.test:${HTTP_PORT}/`, undefined, `X-Big: ${'a'.repeat(20 * 1024)}\r\n`),
  status: 431,
  reason: 'header-too-large',
});
cases.push({
  name: 'oversized CONNECT headers → 431',
  proxy: 'loose',
  request: () => `CONNECT allowed.test:443 HTTP/1.1\r\n${'X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(400)}\r\n`,
  status: 431,
  reason: 'header-too-large',
});

// IP literals in every notation. LOOSE has no IP rule: refused as literals. STRICT has rules for
// 127.0.0.1 and ::1, so those spellings pass the allowlist and the address policy refuses them.
const literals: [string, 'loopback-rule' | 'other'][] = [
  ['127.0.0.1', 'loopback-rule'],
  ['2130706433', 'loopback-rule'],
  ['0177.0.0.1', 'loopback-rule'],
  ['0x7f.1', 'loopback-rule'],
  ['0x7f000001', 'loopback-rule'],
  ['127.1', 'loopback-rule'],
  ['127.0.1', 'loopback-rule'],
  ['017700000001', 'loopback-rule'],
  ['0x7F.0.0.0x1', 'loopback-rule'],
  ['127.0.0.1.', 'loopback-rule'],
  ['[::1]', 'loopback-rule'],
  ['[0:0:0:0:0:0:0:1]', 'loopback-rule'],
  ['[::ffff:127.0.0.1]', 'other'],
  ['[::ffff:7f00:1]', 'other'],
  ['[64:ff9b::7f00:1]', 'other'],
  ['[2002:7f00:1::]', 'other'],
  ['[::127.0.0.1]', 'other'],
  ['0', 'other'],
  ['0.0.0.0', 'other'],
  ['169.254.169.254', 'other'],
  ['10.0.0.1', 'other'],
  ['100.64.0.1', 'other'],
  ['[fe80::1]', 'other'],
  ['[fd00::1]', 'other'],
  ['93.184.216.34', 'other'],
];
for (const [lit, kind] of literals) {
  for (const proxy of ['loose', 'strict'] as const) {
    const reason = proxy === 'strict' && kind === 'loopback-rule' ? 'blocked-address' : 'ip-literal';
    cases.push({ name: `CONNECT ${lit}:443 on ${proxy} → 403 ${reason}`, proxy, request: () => connectReq(`${lit}:443`), status: 403, reason });
    cases.push({ name: `GET http://${lit}/ on ${proxy} → 403 ${reason}`, proxy, request: () => get(`http://${lit}:${HTTP_PORT}/`, undefined), status: 403, reason });
  }
}

// Allow-listed names whose addresses are private, loopback, link-local, ... (any one bad address refuses).
for (const name of [
  'p10', 'p172', 'p192', 'meta', 'cgnat', 'zero', 'mcast', 'bcast', 'class-e', 'doc', 'mapped', 'mapped-public', 'compat', 'nat64', 'sixto4', 'teredo',
  'ula', 'll6', 'mcast6', 'mixed', 'mixed6', 'hostaddr',
]) {
  cases.push({ name: `${name}.bad.test (CONNECT) → 403 blocked-address`, proxy: 'loose', request: () => connectReq(`${name}.bad.test:443`), status: 403, reason: 'blocked-address' });
  cases.push({ name: `${name}.bad.test (GET) → 403 blocked-address`, proxy: 'loose', request: () => get(`http://${name}.bad.test/`, undefined), status: 403, reason: 'blocked-address' });
}
cases.push({ name: 'CNAME to a private name → 403', proxy: 'loose', request: () => get('http://alias-private.test/', undefined), status: 403, reason: 'blocked-address' });
for (const name of ['loop', 'loop6']) {
  cases.push({ name: `${name}.bad.test on strict (no allow_private) → 403`, proxy: 'strict', request: () => connectReq(`${name}.bad.test:443`), status: 403, reason: 'blocked-address' });
  cases.push({ name: `${name}.bad.test GET on strict → 403`, proxy: 'strict', request: () => get(`http://${name}.bad.test:${HTTP_PORT}/`, undefined), status: 403, reason: 'blocked-address' });
}
cases.push({ name: 'allowed.test on strict (loopback, no allow_private) → 403', proxy: 'strict', request: () => get(`http://allowed.test:${HTTP_PORT}/`, undefined), status: 403, reason: 'blocked-address' });
cases.push({ name: 'loop.bad.test on loose (allow_private 127/8) → 200', proxy: 'loose', request: () => get(`http://loop.bad.test:${HTTP_PORT}/`, undefined), status: 200, body: 'hello' });
cases.push({ name: 'NXDOMAIN → 502 dns-not-found', proxy: 'loose', request: () => connectReq('nothere.wild.test:443'), status: 502, reason: 'dns-not-found' });
cases.push({ name: 'resolver never answers → 504 dns-timeout', proxy: 'loose', request: () => connectReq('dead.bad.test:443'), status: 504, reason: 'dns-timeout' });
cases.push({
  name: 'WebSocket upgrade as a plain request → 501',
  proxy: 'loose',
  request: () => get(`http://allowed.test:${HTTP_PORT}/ws`, `allowed.test:${HTTP_PORT}`, 'Upgrade: websocket\r\nConnection: Upgrade\r\n'),
  status: 501,
  reason: 'upgrade-unsupported',
});

describe('egress proxy: hostile request table', () => {
  it('has at least 100 cases', () => {
    assert.ok(cases.length >= 100, `only ${cases.length} cases`);
  });
  for (const c of cases) {
    it(c.name, async () => {
      const proxy = c.proxy === 'loose' ? loose : strict;
      const r = await raw(proxy, c.request());
      if (c.status === 0) {
        // CONNECT to a name that passes: the tunnel opens (200) and closes when no ClientHello comes.
        assert.match(r.headers, /^HTTP\/1\.1 200/);
        return;
      }
      assert.equal(r.status, c.status, `status for ${c.name}: ${r.headers.split('\r\n')[0]} ${r.body.slice(0, 300)}`);
      if (c.reason) {
        assert.equal(r.json?.error?.details.reason, c.reason, r.body);
        assert.ok(r.json?.error?.code, 'error code present');
        assert.ok((r.json?.error?.message.length ?? 0) > 10, 'message says what failed');
      }
      if (c.body) assert.ok(r.body.includes(c.body), r.body);
    });
  }
});

describe('egress proxy: behaviour beyond the table', () => {
  it('never dialled a refused address: every blocked-address audit names the address it refused', () => {
    const blocked = audits.filter((a) => a.reason === 'blocked-address');
    assert.ok(blocked.length >= 40);
    for (const b of blocked) assert.ok(b.address, JSON.stringify(b));
    assert.ok(audits.every((a) => a.decision === 'deny' || a.address === '127.0.0.1'), 'only loopback was ever dialled');
  });

  it('forwards the Host the allowlist decided on and strips hop-by-hop and Proxy-* headers', async () => {
    upstreamSeen.length = 0;
    const r = await raw(
      loose,
      get(`http://Allowed.Test:${HTTP_PORT}/h?q=1`, `Allowed.Test:${HTTP_PORT}`, 'Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nX-Drop: 1\r\nX-Keep: 2\r\nTE: trailers\r\nConnection: X-Drop\r\n'),
    );
    assert.equal(r.status, 200);
    const seen = upstreamSeen.at(-1)!;
    assert.equal(seen.host, `allowed.test:${HTTP_PORT}`, 'the canonical name the decision was made on');
    assert.equal(seen.url, '/h?q=1');
    assert.equal(seen.headers['x-keep'], '2');
    for (const h of ['proxy-authorization', 'proxy-connection', 'x-drop', 'te']) assert.equal(seen.headers[h], undefined, h);
  });

  it('streams request and response bodies', async () => {
    const body = 'x'.repeat(300_000);
    const r = await raw(loose, `POST http://allowed.test:${HTTP_PORT}/up HTTP/1.1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(r.status, 200);
    assert.match(r.body, /body=300000/);
    const big = await raw(loose, get(`http://allowed.test:${HTTP_PORT}/big`, undefined));
    assert.equal(big.status, 200);
    assert.equal(big.body.length, 1 << 20);
    const a = lastAudit((x) => x.status === 200 && x.method === 'GET' && x.bytes_in === 1 << 20);
    assert.ok(a, 'audit counts the bytes relayed');
  });

  it('resolves once per request and dials what it checked (DNS rebinding)', async () => {
    const before = dns.queries.filter((q) => q.name === 'rebind.test' && q.type === 'A').length;
    const first = await raw(loose, get(`http://rebind.test:${HTTP_PORT}/`, undefined));
    assert.equal(first.status, 200, first.body);
    assert.equal(dns.queries.filter((q) => q.name === 'rebind.test' && q.type === 'A').length, before + 1, 'exactly one A lookup for the request');
    const second = await raw(loose, get(`http://rebind.test:${HTTP_PORT}/`, undefined));
    assert.equal(second.status, 403);
    assert.equal(second.json?.error?.details.reason, 'blocked-address');
    assert.equal(second.json?.error?.details.address, '169.254.169.254');
  });

  it('CONNECT with the right SNI carries TLS end to end; the wrong SNI is cut (domain fronting)', async () => {
    assert.equal(await tlsThroughTunnel(loose, `allowed.test:${HTTPS_PORT}`, 'allowed.test'), 'ok:secure allowed.test /tls');
    assert.equal(await tlsThroughTunnel(loose, `allowed.test:${HTTPS_PORT}`, 'ALLOWED.test'), 'ok:secure allowed.test /tls');
    const mark = audits.length;
    assert.equal(await tlsThroughTunnel(loose, `allowed.test:${HTTPS_PORT}`, 'evil.test'), 'closed');
    const a = await awaitAudit((x) => x.method === 'CONNECT', mark);
    assert.ok(a && a.decision === 'deny' && a.host === 'allowed.test' && a.bytes_out === 0, JSON.stringify(a));
    assert.equal(await tlsThroughTunnel(loose, `allowed.test:${HTTPS_PORT}`, 'sub.allowed.test'), 'closed');
  });

  it('reads SNI from a ClientHello split across TLS records and single-byte writes', async () => {
    const hello = await captureClientHello('evil.test');
    const body = hello.subarray(5);
    const refragmented = Buffer.concat([recordOf(body.subarray(0, 7)), recordOf(body.subarray(7, 60)), recordOf(body.subarray(60))]);
    const mark = audits.length;
    const sock = await openTunnel(loose, `allowed.test:${HTTPS_PORT}`);
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('error', () => {});
    for (const b of refragmented) {
      if (sock.destroyed) break;
      sock.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    await closed;
    assert.equal((await awaitAudit((x) => x.method === 'CONNECT', mark))?.reason, 'sni-mismatch');
  });

  it('non-TLS tunnels: refused under a port-less rule, allowed where the rule names the port', async () => {
    const mark = audits.length;
    const plain = await openTunnel(loose, `allowed.test:${HTTP_PORT}`);
    const closed = new Promise<string>((resolve) => {
      let b = '';
      plain.on('data', (d) => {
        b += d;
      });
      plain.on('close', () => resolve(b));
    });
    plain.resume();
    plain.write('GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    assert.equal(await closed, '', 'no upstream bytes reach the client');
    assert.equal((await awaitAudit((x) => x.method === 'CONNECT', mark))?.reason, 'non-tls-tunnel');

    const echo = await openTunnel(loose, `raw.test:${ECHO_PORT}`);
    const got = await new Promise<string>((resolve) => {
      let b = '';
      echo.on('data', (d) => {
        b += d;
        if (b.includes('ping')) resolve(b);
      });
      echo.resume();
      echo.write('ping');
    });
    assert.equal(got, 'BANNER\nping', 'server-speaks-first protocols work under a port rule');
    echo.destroy();
  });

  it('delivers everything the upstream sent before closing to a slow reader, and honours half-close', async () => {
    const mark = audits.length;
    const before = burstDone;
    const t = await openTunnel(loose, `raw.test:${BURST_PORT}`);
    await eventually(() => burstDone > before, { what: 'the upstream wrote everything and closed' });
    const got = await new Promise<number>((resolve) => {
      let n = 0;
      t.on('data', (d: Buffer) => {
        n += d.length;
      });
      t.on('close', () => resolve(n));
      t.resume();
    });
    assert.equal(got, BURST_BYTES);
    const a = await awaitAudit((x) => x.method === 'CONNECT' && x.port === BURST_PORT, mark);
    assert.equal(a?.bytes_in, BURST_BYTES);
    assert.equal(a?.decision, 'allow');

    const echo = await openTunnel(loose, `raw.test:${ECHO_PORT}`);
    const all = await new Promise<string>((resolve) => {
      let b = '';
      echo.on('data', (d) => {
        b += d;
      });
      echo.on('close', () => resolve(b));
      echo.resume();
      echo.end('half-closed');
    });
    assert.equal(all, 'BANNER\nhalf-closed');
  });

  it('a tunnel that never sends a ClientHello is closed after the hello timeout', async () => {
    const mark = audits.length;
    const s = await openTunnel(loose, `allowed.test:${HTTPS_PORT}`);
    const t0 = performance.now();
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    s.resume();
    await closed;
    assert.ok(performance.now() - t0 >= 1000);
    assert.equal((await awaitAudit((x) => x.method === 'CONNECT', mark))?.reason, 'client-hello-invalid');
  });

  it('an unknown peer gets 403 no-policy', async () => {
    const r = await raw(loose, connectReq('allowed.test:443'), { localAddress: '127.0.0.2' });
    assert.equal(r.status, 403);
    assert.equal(r.json?.error?.details.reason, 'no-policy');
  });

  it('metrics count decisions by reason', async () => {
    assert.ok((await loose.metrics.count({ vm: 'web-1', method: 'CONNECT', decision: 'deny', reason: 'sni-mismatch' })) >= 1);
    assert.ok((await loose.metrics.count({ vm: 'web-1', method: 'HTTP', decision: 'allow', reason: 'allowed' })) >= 1);
    assert.ok((await loose.metrics.count({ reason: 'blocked-address' })) >= 20);
  });
});

describe('egress proxy: limits', () => {
  it('per-VM request rate → 429, other VMs unaffected', async () => {
    let vm = 'a';
    const p = await startEgressProxy({
      listen: { host: '127.0.0.1', port: 0 },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      requestsPerSecondPerVm: 1,
      requestBurstPerVm: 3,
      policyFor: () => ({ vmName: vm, allowedDomains: ['allowed.test'] }),
    });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined))).status);
      assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
      assert.equal(statuses[4], 429);
      const r = await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined));
      assert.equal(r.json?.error?.details.reason, 'rate-limited');
      assert.equal(r.json?.error?.code, 'RATE_LIMITED');
      vm = 'b';
      assert.equal((await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined))).status, 200);
    } finally {
      await p.close();
    }
  });

  it('per-VM tunnel limit → 429, freed when a tunnel closes; global limit → 503', async () => {
    const p = await startEgressProxy({
      listen: { host: '127.0.0.1', port: 0 },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      maxTunnelsPerVm: 2,
      maxConcurrent: 3,
      policyFor: (peer) => ({ vmName: peer.remoteAddress === '127.0.0.1' ? 'one' : 'two', allowedDomains: [`raw.test:${ECHO_PORT}`] }),
    });
    try {
      const t1 = await openTunnel(p, `raw.test:${ECHO_PORT}`);
      const t2 = await openTunnel(p, `raw.test:${ECHO_PORT}`);
      const third = await raw(p, connectReq(`raw.test:${ECHO_PORT}`));
      assert.equal(third.status, 429);
      assert.equal(third.json?.error?.details.reason, 'tunnel-limit');
      const other = await raw(p, connectReq(`raw.test:${ECHO_PORT}`), { localAddress: '127.0.0.3', waitMs: 300 });
      assert.match(other.headers, /^HTTP\/1\.1 200/, 'another VM still gets a tunnel');
      // 'other' closed (its slot comes back once the proxy's side has closed too); now occupy the
      // global limit of 3 with a tunnel for VM two and try again.
      const c = await eventually(() => openTunnel(p, `raw.test:${ECHO_PORT}`, '127.0.0.3'), { what: "VM two's slot freed" });
      const overloaded = await raw(p, connectReq(`raw.test:${ECHO_PORT}`), { localAddress: '127.0.0.4' });
      assert.equal(overloaded.status, 503);
      assert.equal(overloaded.json?.error?.details.reason, 'overloaded');
      c.destroy();
      t1.destroy();
      const again = await eventually(() => openTunnel(p, `raw.test:${ECHO_PORT}`), { what: "VM one's tunnel slot freed" });
      again.destroy();
      t2.destroy();
    } finally {
      await p.close();
    }
  });

  it('request body limit → 413 (declared and streamed), header limit → 431', async () => {
    const p = await startEgressProxy({
      listen: { host: '127.0.0.1', port: 0 },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      maxRequestBodyBytes: 1024,
      maxHeaderBytes: 2048,
      policyFor: () => ({ vmName: VM, allowedDomains: ['allowed.test'] }),
    });
    try {
      const declared = await raw(p, `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n${'a'.repeat(5000)}`);
      assert.equal(declared.status, 413);
      assert.equal(declared.json?.error?.details.reason, 'body-too-large');
      const chunk = 'a'.repeat(4000);
      const chunked = await raw(p, `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`);
      assert.ok(chunked.status === 413 || chunked.status === 0, `streamed over-limit body: ${chunked.status}`);
      assert.equal(await p.metrics.count({ reason: 'body-too-large' }), chunked.status === 413 ? 2 : 1);
      const small = await raw(p, `POST http://allowed.test:${HTTP_PORT}/ HTTP/1.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789`);
      assert.equal(small.status, 200);
      const headers = await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined, `X-Big: ${'b'.repeat(3000)}\r\n`));
      assert.equal(headers.status, 431);
    } finally {
      await p.close();
    }
  });
});

describe('egress proxy: options', () => {
  const base = { listen: { host: '127.0.0.1', port: 0 }, policyFor: () => undefined };
  const bad: [string, Record<string, unknown>][] = [
    ['negative tunnel limit', { maxTunnelsPerVm: -1 }],
    ['zero rate', { requestsPerSecondPerVm: 0 }],
    ['NaN timeout', { connectTimeoutMs: Number.NaN }],
    ['string limit', { maxHeaderBytes: '16k' }],
    ['bad CIDR', { allowPrivate: ['127.0.0.0/40'] }],
    ['bad DNS server', { resolver: { servers: ['dns.example'] } }],
    ['no listener', { listen: {} }],
    ['port out of range', { listen: { host: '127.0.0.1', port: 70000 } }],
  ];
  for (const [name, patch] of bad) {
    it(`refuses ${name} with INVALID_ARGUMENT`, async () => {
      await assert.rejects(startEgressProxy({ ...base, ...patch } as Parameters<typeof startEgressProxy>[0]), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
    });
  }
});

describe('egress proxy: listeners and upgrade_to_https', () => {
  it('a changed allowlist applies to the next request; a fresh array with the same rules is not recompiled wrongly', async () => {
    let rules: string[] = ['allowed.test'];
    const p = await startEgressProxy({
      listen: { host: '127.0.0.1', port: 0 },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      policyFor: () => ({ vmName: VM, allowedDomains: [...rules] }),
    });
    try {
      assert.equal((await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined))).status, 200);
      assert.equal((await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined))).status, 200);
      rules = ['evil.test'];
      assert.equal((await raw(p, get(`http://allowed.test:${HTTP_PORT}/`, undefined))).status, 403);
      assert.equal((await raw(p, get(`http://evil.test:${HTTP_PORT}/`, undefined))).status, 200);
    } finally {
      await p.close();
    }
  });


  it('serves on a Unix socket (the VM vsock _3128 path) and removes a stale socket file', async () => {
    const path = join(tmpdir(), `volant-egress-${process.pid}.sock_3128`);
    const { writeFileSync, existsSync } = await import('node:fs');
    writeFileSync(path, 'stale');
    const p = await startEgressProxy({
      listen: { path },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      policyFor: (peer) => (peer.remoteAddress === undefined ? { vmName: 'vsock-vm', allowedDomains: ['allowed.test'] } : undefined),
    });
    try {
      const body = await new Promise<string>((resolve) => {
        const c = connect({ path });
        let b = '';
        c.on('data', (d) => {
          b += d;
        });
        c.on('close', () => resolve(b));
        c.write(get(`http://allowed.test:${HTTP_PORT}/unix`, undefined));
      });
      assert.match(body, /^HTTP\/1\.1 200/);
      assert.match(body, /hello GET allowed.test:\d+ \/unix/);
    } finally {
      await p.close();
    }
    assert.equal(existsSync(path), false);
  });

  it('upgrade_to_https re-issues http:// over TLS verified against the name', async () => {
    const p = await startEgressProxy({
      listen: { host: '127.0.0.1', port: 0 },
      resolver: { servers: [dns.address] },
      allowPrivate: ['127.0.0.0/8'],
      upgradeToHttps: true,
      upstreamCa: ca.ca,
      policyFor: () => ({ vmName: VM, allowedDomains: ['allowed.test', 'a.wild.test'] }),
    });
    try {
      const ok = await raw(p, get(`http://allowed.test:${HTTPS_PORT}/up`, undefined));
      assert.equal(ok.status, 200, ok.body);
      assert.match(ok.body, /^secure allowed.test:\d+ \/up/);
      // a.wild.test resolves to the same server, whose certificate does not name it.
      const wrong = await raw(p, get(`http://a.wild.test:${HTTPS_PORT}/`, undefined));
      assert.equal(wrong.status, 502);
      assert.equal(wrong.json?.error?.details.reason, 'upstream-error');
      assert.match(wrong.json?.error?.message ?? '', /altnames|certificate|Hostname/i);
    } finally {
      await p.close();
    }
  });
});

function recordOf(payload: Buffer): Buffer {
  const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
  h.writeUInt16BE(payload.length, 3);
  return Buffer.concat([h, payload]);
}
