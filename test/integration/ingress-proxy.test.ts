// The ingress proxy end to end on this machine: a client → volantd's API server with the ingress
// in front (test/support/ingress-stack.ts: its fast path, host/ingress/front.ts) → hybrid vsock
// (the muxer test double, see its header) or TCP → a real workload server. Everything on
// loopback and Unix sockets in a private temp dir.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import type { Ingress, IngressTarget } from '../../host/ingress/index.js';
import { VolantError } from '../../shared/errors.js';
import { eventually, nextEvent } from '../support/eventually.js';
import { type HybridVsockMuxer, startHybridVsockMuxer } from '../support/hybrid-vsock-muxer.js';
import { type IngressStack, startIngressStack } from '../support/ingress-stack.js';

const dir = mkdtempSync(join(tmpdir(), `volant-ingress-proxy-${process.pid}-`));

/** What the workload saw, for assertions that nothing leaked through. */
const seen: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }> = [];
const aborted: string[] = [];
let workload: Server;
let workloadPort = 0;
let mux: HybridVsockMuxer;
let deadAgentMux: HybridVsockMuxer;
let stack: IngressStack;
let slowStack: IngressStack;
let apiPort = 0;
let slowPort = 0;
/** Requests Node's HTTP server (and so fastify's routes) got: proxy requests must never be among them. */
let apiFallbacks = 0;
let ingress: Ingress;
/** How often the ingress asked for a VM's transport (the lookup is cached until `forget`). */
const lookups: Record<string, number> = {};

function workloadHandler(req: IncomingMessage, res: ServerResponse): void {
  seen.push({ method: req.method!, url: req.url!, headers: req.headers });
  const url = new URL(req.url!, 'http://guest');
  switch (url.pathname) {
    case '/slow':
      res.once('close', () => {
        if (!res.writableFinished) aborted.push(req.url!);
      });
      return; // never answers
    case '/hop':
      res.writeHead(200, { Connection: 'keep-alive, X-Internal', 'X-Internal': 'secret', 'Keep-Alive': 'timeout=5', 'Proxy-Authenticate': 'Basic', Upgrade: 'h2c', 'Content-Type': 'text/plain' });
      res.end('hop');
      return;
    case '/drip': {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const t = setInterval(() => res.write(Buffer.alloc(1024)), 10);
      res.once('close', () => {
        clearInterval(t);
        if (!res.writableFinished) aborted.push(req.url!);
      });
      return;
    }
    default: {
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
      });
      req.on('end', () => {
        const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyBytes: n });
        res.writeHead(200, { 'content-type': 'application/json', 'x-workload': '1' });
        res.end(body);
      });
    }
  }
}

const vms: Record<string, () => IngressTarget> = {
  web: () => ({ vmName: 'web', transport: { kind: 'vsock', socketPath: mux.socketPath } }),
  bridged: () => ({ vmName: 'bridged', transport: { kind: 'tcp', host: '127.0.0.1', port: workloadPort } }),
  // The VM runs but kestrel does not listen on 8080: the muxer closes without OK.
  nolistener: () => ({ vmName: 'nolistener', transport: { kind: 'vsock', socketPath: join(dir, 'nolistener.sock') } }),
  // The VMM is gone: its socket file does not exist.
  nosocket: () => ({ vmName: 'nosocket', transport: { kind: 'vsock', socketPath: join(dir, 'absent.sock') } }),
  tcpclosed: () => ({ vmName: 'tcpclosed', transport: { kind: 'tcp', host: '127.0.0.1', port: 1 } }),
  moving: () => movingTarget,
  stopped: () => {
    throw new VolantError('INVALID_STATE', 'VM stopped is stopped, not running');
  },
};

/** A VM that is restarted elsewhere: its transport changes between requests. */
let movingTarget: IngressTarget;

function lookup(name: string): IngressTarget | Promise<IngressTarget> {
  lookups[name] = (lookups[name] ?? 0) + 1;
  const vm = vms[name];
  if (vm === undefined) throw new VolantError('NOT_FOUND', `no VM named ${name}`);
  // Half the VMs answer asynchronously, as a database-backed lookup may.
  return name === 'bridged' ? Promise.resolve().then(vm) : vm();
}

before(async () => {
  workload = createServer(workloadHandler);
  new WebSocketServer({ server: workload }).on('connection', (ws, req) => {
    ws.send(`hello ${req.url}`);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  await new Promise<void>((r) => workload.listen(0, '127.0.0.1', r));
  workloadPort = (workload.address() as { port: number }).port;
  // Guest vsock port 8080 (kestrel's) is mapped straight to the workload here.
  mux = await startHybridVsockMuxer({ socketPath: join(dir, 'web.sock'), guestPorts: { 8080: { host: '127.0.0.1', port: workloadPort } } });
  deadAgentMux = await startHybridVsockMuxer({ socketPath: join(dir, 'nolistener.sock'), guestPorts: {} });
  stack = await startIngressStack({ lookup });
  slowStack = await startIngressStack({ lookup, headersTimeoutMs: 300, bodyTimeoutMs: 300 });
  ingress = stack.ingress;
  apiPort = stack.port;
  slowPort = slowStack.port;
  stack.server.on('request', () => apiFallbacks++);
});

after(async () => {
  await stack.close();
  await slowStack.close();
  await mux.close();
  await deadAgentMux.close();
  workload.closeAllConnections();
  await new Promise((r) => workload.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Writes raw bytes to the API server and returns everything it answers until it closes (or `waitMs`). */
function raw(bytes: string, waitMs = 1500, port = apiPort): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.write(bytes));
    let data = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve(data);
    }, waitMs);
    s.on('data', (d) => {
      data += d.toString('latin1');
      if (complete(data)) {
        clearTimeout(t);
        s.destroy();
        resolve(data);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(data);
    });
  });
}

/** One whole response: its Content-Length is in, or the last chunk of a chunked body. */
function complete(data: string): boolean {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const m = /\r\ncontent-length: (\d+)\r\n/i.exec(data.slice(0, end + 2));
  if (m) return data.length >= end + 4 + Number(m[1]);
  return /\r\ntransfer-encoding: chunked\r\n/i.test(data.slice(0, end + 2)) && data.endsWith('\r\n0\r\n\r\n');
}

function dechunk(body: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const nl = body.indexOf('\r\n', i);
    const size = Number.parseInt(body.slice(i, nl), 16);
    if (!(size > 0)) return out;
    out += body.slice(nl + 2, nl + 2 + size);
    i = nl + 2 + size + 2;
  }
}

function parseResponse(text: string): { status: number; headers: Map<string, string[]>; body: string } {
  const end = text.indexOf('\r\n\r\n');
  const lines = text.slice(0, end).split('\r\n');
  const headers = new Map<string, string[]>();
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    const k = l.slice(0, i).toLowerCase();
    headers.set(k, [...(headers.get(k) ?? []), l.slice(i + 1).trim()]);
  }
  const body = text.slice(end + 4);
  return { status: Number(lines[0]?.split(' ')[1]), headers, body: headers.get('transfer-encoding')?.[0] === 'chunked' ? dechunk(body) : body };
}

/** `x-test-ingress: slow` sends the request to the ingress with 300 ms guest timeouts. */
async function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Map<string, string[]>; body: string }> {
  const port = headers['x-test-ingress'] === 'slow' ? slowPort : apiPort;
  return parseResponse(await raw(`GET ${path} HTTP/1.1\r\nHost: api.test\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 1500, port));
}

describe('ingress: forwarding', () => {
  it('passes path and query through unchanged over hybrid vsock and over TCP', async () => {
    const cases: Array<[string, string]> = [
      ['/api/v1/vms/web/proxy/hello?x=1', '/hello?x=1'],
      ['/api/v1/vms/web/proxy', '/'],
      ['/api/v1/vms/web/proxy?q=a%2Fb&r=%20', '/?q=a%2Fb&r=%20'],
      ['/api/v1/vms/web/proxy/a%20b/%C3%A9?x=1&x=2', '/a%20b/%C3%A9?x=1&x=2'],
      ['/api/v1/vms/bridged/proxy/deep/path/', '/deep/path/'],
    ];
    for (const [url, expected] of cases) {
      const r = await get(url);
      assert.equal(r.status, 200, `${url}: ${r.body}`);
      assert.equal(JSON.parse(r.body).url, expected);
    }
    assert.ok(mux.stats.commands.every((c) => c === 'CONNECT 8080'));
  });

  it('removes hop-by-hop headers both ways and sets forwarding headers', async () => {
    const before = seen.length;
    const r = await get('/api/v1/vms/web/proxy/echo', {
      Connection: 'keep-alive, X-Hop',
      'X-Hop': 'must-not-pass',
      'Keep-Alive': 'timeout=99',
      'Proxy-Authorization': 'Basic c2VjcmV0',
      TE: 'trailers',
      'X-Forwarded-For': '203.0.113.7',
      'X-Forwarded-Host': 'spoofed',
      'X-Request-Id': 'trace-123',
    });
    assert.equal(r.status, 200);
    const h = seen[before]!.headers;
    for (const gone of ['x-hop', 'keep-alive', 'proxy-authorization', 'te']) assert.equal(h[gone], undefined, gone);
    assert.notEqual(h.connection, 'keep-alive, X-Hop');
    assert.equal(h['x-forwarded-for'], '127.0.0.1', "the client's X-Forwarded-For is replaced, not extended");
    assert.equal(h.forwarded, 'for=127.0.0.1;host=api.test;proto=http');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-forwarded-host'], 'api.test');
    assert.equal(h['x-request-id'], 'trace-123');
    assert.deepEqual(r.headers.get('x-request-id'), ['trace-123']);

    const hop = await get('/api/v1/vms/web/proxy/hop');
    assert.equal(hop.status, 200);
    for (const gone of ['x-internal', 'proxy-authenticate', 'upgrade']) assert.equal(hop.headers.has(gone), false, gone);
    assert.notDeepEqual(hop.headers.get('connection'), ['keep-alive, X-Internal']);
    assert.match(hop.headers.get('x-request-id')?.[0] ?? '', /^[0-9a-f-]{36}$/);
  });

  it('WebSocket echo through the proxy (text and a 1 MiB binary frame)', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${apiPort}/api/v1/vms/web/proxy/chat?room=1`);
    const messages: Array<{ data: Buffer; isBinary: boolean }> = [];
    const next = (): Promise<{ data: Buffer; isBinary: boolean }> =>
      new Promise((resolve) => {
        const check = (): void => {
          const m = messages.shift();
          if (m) resolve(m);
          else setTimeout(check, 5);
        };
        check();
      });
    ws.on('message', (data: Buffer, isBinary) => messages.push({ data, isBinary }));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    assert.equal((await next()).data.toString(), 'hello /chat?room=1');
    ws.send('ping');
    assert.equal((await next()).data.toString(), 'ping');
    const big = Buffer.alloc(1 << 20, 7);
    ws.send(big);
    const echoed = await next();
    assert.equal(echoed.isBinary, true);
    assert.ok(echoed.data.equals(big));
    ws.close();
    await new Promise((r) => ws.once('close', r));
  });

  it('1000 concurrent requests all answered, on a bounded number of guest connections', async () => {
    const establishedBefore = mux.stats.established;
    const one = (i: number): Promise<{ status: number; url: string }> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: apiPort, path: `/api/v1/vms/web/proxy/n/${i}`, agent: false }, (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode!, url: JSON.parse(body).url }));
        });
        req.on('error', reject);
        req.end();
      });
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => one(i)));
    results.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal(r.url, `/n/${i}`);
    });
    // The per-VM pool is bounded (64): the muxer never saw more guest connections than that.
    assert.ok(mux.stats.established - establishedBefore <= 64, `opened ${mux.stats.established - establishedBefore}`);
  });

  it('a streaming response reaches the client chunk by chunk, not at its end', async () => {
    const chunks = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: apiPort, path: '/api/v1/vms/web/proxy/drip?stream=1', agent: false }, (res) => {
        let n = 0;
        res.on('data', () => {
          n++;
          if (n === 3) {
            res.destroy();
            resolve(n);
          }
        });
        res.on('end', () => reject(new Error('the never-ending response ended')));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(chunks, 3);
  });

  it('pipelined requests on one client connection are answered in order', async () => {
    const text = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: apiPort }, () =>
        s.write(
          'GET /api/v1/vms/web/proxy/first HTTP/1.1\r\nHost: a\r\n\r\nGET /api/v1/vms/bridged/proxy/second HTTP/1.1\r\nHost: a\r\n\r\n' +
            'GET /api/v1/vms/web/proxy/third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
        ),
      );
      let data = '';
      s.on('data', (d) => {
        data += d.toString('latin1');
      });
      s.on('close', () => resolve(data));
    });
    const urls = [...text.matchAll(/"url":"([^"]*)"/g)].map((m) => m[1]);
    assert.deepEqual(urls, ['/first', '/second', '/third']);
  });

  it('a VM restarted elsewhere (forgotten, then its transport changed) is reached over the new one (fresh pool)', async () => {
    movingTarget = { vmName: 'moving', transport: { kind: 'vsock', socketPath: mux.socketPath } };
    const viaVsock = mux.stats.established;
    assert.equal((await get('/api/v1/vms/moving/proxy/one')).status, 200);
    assert.equal(mux.stats.established, viaVsock + 1);
    // volantd forgets a VM when it leaves `running` (host/daemon/daemon.ts); then it may come back elsewhere.
    ingress.forget('moving');
    movingTarget = { vmName: 'moving', transport: { kind: 'tcp', host: '127.0.0.1', port: workloadPort } };
    const r = await get('/api/v1/vms/moving/proxy/two');
    assert.equal(JSON.parse(r.body).url, '/two');
    assert.equal(mux.stats.established, viaVsock + 1, 'the second request did not go through the old vsock pool');
    ingress.forget('moving');
    movingTarget = { vmName: 'moving', transport: { kind: 'vsock', socketPath: join(dir, 'absent.sock') } };
    assert.equal((await get('/api/v1/vms/moving/proxy/three')).status, 502);
  });

  it('a client that disconnects aborts the upstream request (waiting and mid-body)', async () => {
    for (const path of ['/slow?abort=1', '/drip?abort=2']) {
      const s = connect({ host: '127.0.0.1', port: apiPort }, () => s.write(`GET /api/v1/vms/web/proxy${path} HTTP/1.1\r\nHost: a\r\n\r\n`));
      s.on('error', () => undefined);
      // Mid-body: the client has bytes of the response; waiting: the workload has the request.
      const firstBytes = path.startsWith('/drip') ? nextEvent(s, 'data') : Promise.resolve();
      await eventually(() => seen.some((x) => x.url === path), { what: `the workload got ${path}` });
      await firstBytes;
      s.destroy();
      await eventually(() => aborted.includes(path), { what: `the workload saw ${path} aborted` });
    }
  });
});

describe('ingress: error statuses are JSON with the shared codes', () => {
  const cases: Array<[string, string, Record<string, string>, number, string]> = [
    ['unknown VM', '/api/v1/vms/ghost/proxy/', {}, 404, 'NOT_FOUND'],
    ['VM not running', '/api/v1/vms/stopped/proxy/', {}, 409, 'INVALID_STATE'],
    ['agent not listening (muxer closes without OK)', '/api/v1/vms/nolistener/proxy/', {}, 502, 'UPSTREAM_UNREACHABLE'],
    ['VMM socket gone', '/api/v1/vms/nosocket/proxy/', {}, 502, 'UPSTREAM_UNREACHABLE'],
    ['TCP connection refused', '/api/v1/vms/tcpclosed/proxy/', {}, 502, 'UPSTREAM_UNREACHABLE'],
    ['guest does not answer in time', '/api/v1/vms/web/proxy/slow?t=1', { 'x-test-ingress': 'slow' }, 504, 'TIMEOUT'],
    ['unsafe path', '/api/v1/vms/web/proxy/%2e%2e/x', {}, 400, 'INVALID_ARGUMENT'],
  ];
  for (const [name, path, headers, status, code] of cases) {
    it(`${status} ${code}: ${name}`, async () => {
      const r = await get(path, { ...headers, 'X-Request-Id': 'err-1' });
      assert.equal(r.status, status, r.body);
      assert.match(r.headers.get('content-type')?.[0] ?? '', /^application\/json/);
      const body = JSON.parse(r.body) as { error: { code: string; message: string } };
      assert.equal(body.error.code, code);
      assert.ok(body.error.message.length > 10);
    });
  }

  it('an upgrade to an unknown VM or a dead agent is answered with the JSON error on the socket', async () => {
    for (const [vm, status] of [['ghost', 404], ['nolistener', 502]] as const) {
      const r = parseResponse(await raw(`GET /api/v1/vms/${vm}/proxy/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`));
      assert.equal(r.status, status);
      assert.ok(JSON.parse(r.body).error.code);
    }
  });
});

describe('ingress: hostile input', () => {
  const escapes = [
    '/api/v1/vms/web/proxy/../../bridged/proxy/x',
    '/api/v1/vms/web/proxy/..',
    '/api/v1/vms/web/proxy/./x',
    '/api/v1/vms/web/proxy/%2e%2e/%2e%2e/bridged/proxy/x',
    '/api/v1/vms/web/proxy/%2E%2E/x',
    '/api/v1/vms/web/proxy/.%2e/x',
    '/api/v1/vms/web/proxy/..%2fbridged',
    '/api/v1/vms/web/proxy/..%2F..%2Fbridged',
    '/api/v1/vms/web/proxy/a%2fb',
    '/api/v1/vms/web/proxy/..%5cx',
    '/api/v1/vms/web/proxy/..\\x',
    '/api/v1/vms/web/proxy/%252e%252e/x',
    '/api/v1/vms/web/proxy/a%00',
    '/api/v1/vms/web/proxy/a%0d%0aHost:%20evil',
    '/api/v1/vms/web/proxy/..;/x',
    '/api/v1/vms/web/proxy//evil.example/x',
    '/api/v1/vms/web/proxy/%',
    '/api/v1/vms/web%2f..%2fbridged/proxy/x',
    '/api/v1/vms/..%2fbridged/proxy/x',
    '/api/v1/vms/w%65b/proxy/x',
    '/api/v1/vms/web/%2e%2e/bridged/proxy/x',
    '/api/v1/vms/../vms/web/proxy/x',
    'http://evil.example/api/v1/vms/web/proxy/x',
    'http://127.0.0.1/api/v1/vms/web/proxy/../bridged/x',
    '//evil.example/api/v1/vms/web/proxy/x',
  ];
  it(`${escapes.length} path-escape attempts are refused with 400 and reach no VM`, async () => {
    const before = seen.length;
    const fallbacks = apiFallbacks;
    for (const target of escapes) {
      const r = parseResponse(await raw(`GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`));
      assert.equal(r.status, 400, `${target} → ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).error.code, 'INVALID_ARGUMENT', target);
    }
    assert.equal(seen.length, before, 'no escape attempt reached the workload');
    assert.equal(apiFallbacks, fallbacks, 'no escape attempt fell through to the API');
  });

  const P = '/api/v1/vms/web/proxy/smuggle';
  const smuggling: Array<[string, string]> = [
    ['CL.TE', `POST ${P} HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGPOST ${P} HTTP/1.1\r\n\r\n`],
    ['TE.CL', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`],
    ['duplicate Content-Length', `POST ${P} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc`],
    ['same Content-Length twice', `POST ${P} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc`],
    ['Content-Length list', `POST ${P} HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc`],
    ['signed Content-Length', `POST ${P} HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc`],
    ['obfuscated TE value', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
    ['space before colon', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`],
    ['obs-fold TE', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`],
    ['two TE headers', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['TE list', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`],
    ['chunked, identity', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
    ['TE on HTTP/1.0', `POST ${P} HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['two Host headers', `GET ${P} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`],
    ['bare LF line ends', `POST ${P} HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc`],
    ['bad chunk size', `POST ${P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`],
    ['NUL in a header', `GET ${P} HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n`],
  ];
  for (const [name, payload] of smuggling) {
    it(`smuggling refused with 400: ${name}`, async () => {
      const before = seen.length;
      const text = await raw(payload, 800);
      assert.match(text, /^HTTP\/1\.1 400 /, JSON.stringify(text.slice(0, 200)));
      assert.equal(text.match(/HTTP\/1\.1 /g)?.length, 1, 'exactly one response');
      // A marker request after the refused one: once it is answered, anything dispatched before it was seen.
      assert.equal((await get('/api/v1/vms/web/proxy/marker')).status, 200);
      assert.deepEqual(seen.slice(before).map((x) => x.url), ['/marker'], 'nothing but the marker reached the workload');
    });
  }
});
