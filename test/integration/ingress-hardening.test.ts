/**
 * The ingress against a hostile client and a hostile guest, through volantd's real HTTP front
 * (test/support/ingress-stack.ts: the API server with the ingress in front of fastify) on
 * loopback. The guest is test/support/scripted-guest.ts, a raw TCP server standing where kestrel
 * listens, so it can answer with bytes no HTTP server library would produce, count connections
 * and record every byte it received. Everything here is asserted on the wire: status, the one
 * JSON error shape, what the guest saw, and that nothing was dialled when nothing should be.
 *
 * Classes (issue 12): upgrade smuggling, forwarding headers, malformed guest responses, one error
 * shape (the HTTP server's own refusals included), HTTP/1.0 and 1.1 request lines only.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Socket } from 'node:net';
import { ErrorCodes, type ErrorCode, httpStatusFor } from '../../shared/errors.js';
import { type IngressStack, parseRawResponse, rawExchange, startIngressStack } from '../support/ingress-stack.js';
import { type GuestConnection, type ScriptedGuest, startScriptedGuest } from '../support/scripted-guest.js';

let guest: ScriptedGuest;
let stack: IngressStack;
let vmSeq = 0;
/** A fresh VM name per case: its own connection pool, so one case's guest connection never serves another. */
const vm = (): string => `h${++vmSeq}`;

before(async () => {
  guest = await startScriptedGuest();
  stack = await startIngressStack({
    lookup: (vmName) => ({ vmName, transport: { kind: 'tcp', host: '127.0.0.1', port: guest.port } }),
    headersTimeoutMs: 400,
    connectTimeoutMs: 2000,
    timeoutMs: 3000,
  });
});

after(async () => {
  await stack?.close();
  await guest?.close();
});

/** Asserts the one error shape: JSON `{ error: { code, message } }` with the status of its code. */
function assertErrorShape(text: string, status: number, code?: ErrorCode): { code: string; message: string } {
  const r = parseRawResponse(text);
  assert.equal(r.status, status, `status: ${JSON.stringify(text.slice(0, 300))}`);
  assert.match(r.headers.get('content-type')?.[0] ?? '', /^application\/json/, 'content-type');
  const length = r.headers.get('content-length')?.[0];
  const body = length === undefined ? r.body : r.body.slice(0, Number(length));
  const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
  assert.ok(parsed.error && typeof parsed.error.code === 'string' && typeof parsed.error.message === 'string', body);
  assert.ok((ErrorCodes as readonly string[]).includes(parsed.error.code as string), `known code ${parsed.error.code}`);
  assert.equal(httpStatusFor(parsed.error.code as ErrorCode), status, 'the status is the code’s');
  if (code) assert.equal(parsed.error.code, code);
  assert.ok((parsed.error.message as string).length > 5, 'the message says what was wrong');
  return parsed.error as { code: string; message: string };
}

const connectionsSince = (mark: number): GuestConnection[] => guest.connections.slice(mark);

describe('ingress: upgrade smuggling', () => {
  const upgradeHead = (name: string, path: string): string =>
    `GET /api/v1/vms/${name}/proxy${path} HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
  const smuggled = 'GET /admin HTTP/1.1\r\nHost: guest\r\n\r\n';

  it('a refused upgrade (200) is relayed as a normal response, the connection ends, and the bytes after the head never reach the guest', async () => {
    guest.script('/refuse200', 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nnope');
    const mark = guest.connections.length;
    const text = await rawExchange(stack.port, upgradeHead(vm(), '/refuse200') + smuggled, { onFirstBytes: (w) => w(smuggled) });
    const r = parseRawResponse(text);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'nope');
    assert.deepEqual(r.headers.get('connection'), ['close']);
    assert.equal(text.match(/HTTP\/1\.1 /g)?.length, 1, 'one response, then the connection ended');
    const seen = connectionsSince(mark);
    assert.equal(seen.length, 1);
    assert.doesNotMatch(seen[0]!.received.toString('latin1'), /admin/, 'no smuggled byte reached the guest');
  });

  it('a refused upgrade (404 with a chunked body) is relayed whole; a second request on the connection goes nowhere', async () => {
    guest.script('/refuse404', 'HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n');
    const mark = guest.connections.length;
    const text = await rawExchange(stack.port, upgradeHead(vm(), '/refuse404'), { onFirstBytes: (w) => w(smuggled) });
    const r = parseRawResponse(text);
    assert.equal(r.status, 404);
    assert.equal(r.body, 'nope!', 'de-chunked and close-delimited');
    assert.equal(r.headers.has('transfer-encoding'), false);
    assert.ok(connectionsSince(mark).every((c) => !c.received.toString('latin1').includes('/admin')));
  });

  it('after a 101, and only then, the client bytes sent with the head flow to the guest (both ways)', async () => {
    guest.script('/ws', (s: Socket, _head, conn) => {
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello');
      s.on('data', () => {
        if (conn.afterAnswer.includes('early')) s.end('echo:early');
      });
    });
    const mark = guest.connections.length;
    const text = await rawExchange(stack.port, `${upgradeHead(vm(), '/ws')}early`);
    assert.match(text, /^HTTP\/1\.1 101 /);
    assert.match(text, /hello/);
    assert.match(text, /echo:early$/);
    const c = connectionsSince(mark)[0]!;
    assert.doesNotMatch(c.head, /early/, 'the early bytes were not sent with the request head');
    assert.equal(c.afterAnswer.toString('latin1'), 'early', 'they arrived after the guest answered 101');
  });

  it('a 101 whose head is malformed is a 502 JSON error, and the client bytes stay with us', async () => {
    guest.script('/ws-bad', (s: Socket) => s.write('HTTP/1.1 101 Switching\x01Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'));
    const mark = guest.connections.length;
    const text = await rawExchange(stack.port, `${upgradeHead(vm(), '/ws-bad')}early`);
    assertErrorShape(text, 502, 'PROTOCOL_ERROR');
    assert.equal(connectionsSince(mark)[0]!.afterAnswer.length, 0);
  });
});

describe('ingress: forwarding headers', () => {
  const forged: Array<[string, string]> = [
    ['Forwarded', 'for=6.6.6.6;proto=https;host=evil.test'],
    ['X-Forwarded-For', '6.6.6.6'],
    ['X-Forwarded-Proto', 'https'],
    ['X-Forwarded-Host', 'evil.test'],
    ['X-Forwarded-Port', '443'],
    ['X-Forwarded-Prefix', '/admin'],
    ['X-Forwarded-Ssl', 'on'],
    ['X-Forwarded-Client-Cert', 'Hash=abc'],
    ['X-Forwarded', 'for=6.6.6.6'],
    ['Forwarded-For', '6.6.6.6'],
    ['X-Real-IP', '6.6.6.6'],
    ['X-Client-IP', '6.6.6.6'],
    ['Client-IP', '6.6.6.6'],
    ['True-Client-IP', '6.6.6.6'],
    ['CF-Connecting-IP', '6.6.6.6'],
    ['Fastly-Client-IP', '6.6.6.6'],
    ['Fly-Client-IP', '6.6.6.6'],
    ['X-Cluster-Client-IP', '6.6.6.6'],
    ['X-Original-Forwarded-For', '6.6.6.6'],
    ['X-Original-URL', '/admin'],
    ['X-Original-Host', 'evil.test'],
    ['X-Rewrite-URL', '/admin'],
    ['X-Host', 'evil.test'],
    ['X-Url-Scheme', 'https'],
    ['Front-End-Https', 'on'],
    ['X-Remote-Addr', '6.6.6.6'],
    ['X-Originating-IP', '6.6.6.6'],
    ['X-ProxyUser-Ip', '6.6.6.6'],
    ['X-Envoy-External-Address', '6.6.6.6'],
    ['X-SSL-Client-Cert', 'MIIB'],
    ['X_Forwarded_For', '6.6.6.6'],
    ['x_real_ip', '6.6.6.6'],
  ];
  const echoHead = (s: Socket, head: string): void => {
    s.end(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(head, 'latin1')}\r\nconnection: close\r\n\r\n${head}`);
  };

  function guestHeaders(head: string): Map<string, string[]> {
    return parseRawResponse(`HTTP/1.1 200 X\r\n${head.split('\r\n').slice(1).join('\r\n')}`).headers;
  }

  it("every client-supplied forwarding header is dropped; ours (Forwarded, X-Forwarded-For/-Proto/-Host) agree", async () => {
    guest.script('/echo-head', echoHead);
    const extra = forged.map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const text = await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/echo-head HTTP/1.1\r\nHost: api.test:8080\r\n${extra}Connection: close\r\n\r\n`);
    const r = parseRawResponse(text);
    assert.equal(r.status, 200, text.slice(0, 300));
    const h = guestHeaders(r.body);
    assert.deepEqual(h.get('forwarded'), ['for=127.0.0.1;host="api.test:8080";proto=http']);
    assert.deepEqual(h.get('x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(h.get('x-forwarded-proto'), ['http']);
    assert.deepEqual(h.get('x-forwarded-host'), ['api.test:8080']);
    for (const [name] of forged) {
      const lower = name.toLowerCase();
      if (['forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'].includes(lower)) continue;
      assert.equal(h.has(lower), false, `${name} reached the guest`);
    }
    assert.doesNotMatch(r.body, /6\.6\.6\.6|evil\.test|\/admin/, 'no forged value reached the guest');
  });

  it('Connection cannot name our forwarding headers away; the upgrade path gets the same facts', async () => {
    guest.script('/echo-head-2', echoHead);
    let text = await rawExchange(
      stack.port,
      `GET /api/v1/vms/${vm()}/proxy/echo-head-2 HTTP/1.1\r\nHost: api.test\r\nConnection: close, Forwarded, X-Forwarded-For, X-Forwarded-Host\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n`,
    );
    let h = guestHeaders(parseRawResponse(text).body);
    assert.deepEqual(h.get('forwarded'), ['for=127.0.0.1;host=api.test;proto=http']);
    assert.deepEqual(h.get('x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(h.get('x-forwarded-host'), ['api.test']);

    guest.script('/echo-head-ws', echoHead);
    text = await rawExchange(
      stack.port,
      `GET /api/v1/vms/${vm()}/proxy/echo-head-ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n`,
    );
    h = guestHeaders(parseRawResponse(text).body);
    assert.deepEqual(h.get('forwarded'), ['for=127.0.0.1;host=api.test;proto=http']);
    assert.equal(h.has('x-real-ip'), false);
  });
});

describe('ingress: malformed guest responses are a prompt 502 JSON error', () => {
  const cases: Array<[string, string]> = [
    ['control byte in the reason phrase', 'HTTP/1.1 200 O\x01K\r\ncontent-length: 2\r\n\r\nok'],
    ['ESC in the reason phrase', 'HTTP/1.1 200 \x1b[31mOK\r\ncontent-length: 2\r\n\r\nok'],
    ['byte 0xff in the reason phrase', 'HTTP/1.1 200 O\xffK\r\ncontent-length: 2\r\n\r\nok'],
    ['control byte in a header value', 'HTTP/1.1 200 OK\r\nx-a: a\x01b\r\ncontent-length: 2\r\n\r\nok'],
    ['NUL in a header value', 'HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok'],
    ['space in a header name', 'HTTP/1.1 200 OK\r\nx a: b\r\ncontent-length: 2\r\n\r\nok'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nx-a: a\r\n b\r\ncontent-length: 2\r\n\r\nok'],
    ['bare LF line ends', 'HTTP/1.1 200 OK\ncontent-length: 2\n\nok'],
    ['conflicting Content-Length', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok'],
    ['Content-Length list with two values', 'HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok'],
    ['signed Content-Length', 'HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok'],
    ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    ['Transfer-Encoding gzip', 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc'],
    ['two Transfer-Encoding headers', 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    ['chunked, identity', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, identity\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    ['bad chunk size', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n'],
    ['chunk size overflow', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\nok\r\n0\r\n\r\n'],
    ['status 999', 'HTTP/1.1 999 Weird\r\ncontent-length: 2\r\n\r\nok'],
    ['status 600', 'HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok'],
    ['two-digit status', 'HTTP/1.1 20 OK\r\ncontent-length: 2\r\n\r\nok'],
    ['204 with a body', 'HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello'],
    ['HTTP/0.9 answer', 'ok\r\n'],
    ['garbage', '\x16\x03\x01\x00\x05hello'],
    ['nothing at all', ''],
  ];
  for (const [name, answer] of cases) {
    it(name, async () => {
      const path = `/bad-${name.replace(/[^a-z0-9]+/gi, '-')}`;
      guest.script(path, answer);
      const text = await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy${path} HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: bad-1\r\n\r\n`, { waitMs: 4000 });
      const e = assertErrorShape(text, 502);
      assert.ok(e.code === 'PROTOCOL_ERROR' || e.code === 'UPSTREAM_UNREACHABLE', e.code);
      assert.deepEqual(parseRawResponse(text).headers.get('x-request-id'), ['bad-1']);
    });
  }

  it('a valid head whose body streams later is relayed as it comes (the head is not held back)', async () => {
    guest.script('/later', (s: Socket) => {
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n');
      setImmediate(() => s.end('4\r\nlate\r\n0\r\n\r\n'));
    });
    const text = await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/later HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n`);
    const r = parseRawResponse(text);
    assert.equal(r.status, 200);
    assert.match(r.body, /late/);
  });
});

describe('ingress and API: one error shape for every refusal, the HTTP server’s own included', () => {
  it('431 for a head over the size limit', async () => {
    assertErrorShape(await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/ HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
    assertErrorShape(await rawExchange(stack.port, `GET /api/v1/health HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
  });

  it('400 for an HTTP/1.1 request without Host (proxy and API routes)', async () => {
    const mark = guest.connections.length;
    assertErrorShape(await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/x HTTP/1.1\r\n\r\n`), 400, 'INVALID_ARGUMENT');
    assertErrorShape(await rawExchange(stack.port, 'GET /api/v1/health HTTP/1.1\r\n\r\n'), 400, 'INVALID_ARGUMENT');
    assert.equal(guest.connections.length, mark, 'nothing was dialled');
  });

  it('408 for a head that never finishes: the client stops sending, or closes mid-head', async () => {
    assertErrorShape(await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/x HTTP/1.1\r\nHost: a\r\nX-Slow: `), 408, 'REQUEST_TIMEOUT');
    assertErrorShape(await rawExchange(stack.port, 'GET /api/v1/health HTTP/1.1\r\nHost: a\r\nX-Slow: ', { end: true }), 408, 'REQUEST_TIMEOUT');
  });

  it('400 for request lines the parser refuses', async () => {
    for (const line of ['\x01\x02 garbage', 'GET /api/v1/health HTTP/1.2', 'GET /api/v1/health http/1.1', 'GET /api/v1/health HTTP/1.1 extra', 'PRI * HTTP/2.0']) {
      assertErrorShape(await rawExchange(stack.port, `${line}\r\nHost: a\r\n\r\n`), 400, 'INVALID_ARGUMENT');
    }
  });

  it('API errors, unknown routes and upgrades nobody serves share the shape', async () => {
    assertErrorShape(await rawExchange(stack.port, 'GET /api/v1/nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), 404, 'NOT_FOUND');
    assertErrorShape(await rawExchange(stack.port, 'GET /api/v1/nope HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'), 404, 'NOT_FOUND');
    assertErrorShape(await rawExchange(stack.port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'), 501, 'NOT_SUPPORTED');
    const big = 'x'.repeat(1024 * 1024 + 10);
    assertErrorShape(
      await rawExchange(stack.port, `POST /api/v1/plugins HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${big.length}\r\nConnection: close\r\n\r\n${big}`),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });
});

describe('ingress: only HTTP/1.0 and HTTP/1.1 request lines, nothing dialled otherwise', () => {
  const lines: Array<[string, string]> = [
    ['HTTP/0.9-style line (no version)', 'GET /api/v1/vms/VM/proxy/x\r\n\r\n'],
    ['HTTP/0.9-style line with headers after it', 'GET /api/v1/vms/VM/proxy/x\r\nHost: a\r\n\r\n'],
    ['HTTP/2.0 as text', 'GET /api/v1/vms/VM/proxy/x HTTP/2.0\r\nHost: a\r\n\r\n'],
    ['HTTP/0.9 upgrade', 'GET /api/v1/vms/VM/proxy/x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['HTTP/2.0 upgrade', 'GET /api/v1/vms/VM/proxy/x HTTP/2.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['HTTP/1.2', 'GET /api/v1/vms/VM/proxy/x HTTP/1.2\r\nHost: a\r\n\r\n'],
  ];
  for (const [name, bytes] of lines) {
    it(`${name} → 400`, async () => {
      const mark = guest.connections.length;
      assertErrorShape(await rawExchange(stack.port, bytes.replace('VM', vm())), 400, 'INVALID_ARGUMENT');
      assert.equal(guest.connections.length, mark, 'no connection to the guest');
    });
  }

  it('HTTP/1.0 and HTTP/1.1 are served', async () => {
    guest.script('/ok', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
    for (const v of ['1.0', '1.1']) {
      const r = parseRawResponse(await rawExchange(stack.port, `GET /api/v1/vms/${vm()}/proxy/ok HTTP/${v}\r\nHost: a\r\nConnection: close\r\n\r\n`));
      assert.equal(r.status, 200);
      assert.equal(r.body, 'ok');
    }
  });
});
