/**
 * The example workload (examples/hello/app/server.mjs) run on loopback: /hello, /bytes (verified
 * against the documented pattern), /healthz, and /fetch through a forward proxy. The proxy here is
 * a test double of kestrel's egress forwarder that follows the HTTP proxy protocol (RFC 9110
 * CONNECT, RFC 9112 absolute-form) and records what it was asked, so the test proves the app
 * really goes through HTTP_PROXY / HTTPS_PROXY instead of connecting directly.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { eventually } from '../support/eventually.js';

const SERVER = join(import.meta.dirname, '..', '..', 'examples', 'hello', 'app', 'server.mjs');
const pattern = (i: number) => (i * 31 + 7) & 0xff;

describe('examples/hello workload', () => {
  let app: ChildProcess;
  let base: string;
  let upstream: http.Server;
  let proxy: http.Server;
  const proxied: string[] = [];

  before(async () => {
    upstream = http.createServer((req, res) => {
      res.writeHead(203, { 'content-type': 'text/plain' });
      res.end(`upstream saw ${req.method} ${req.url} host=${req.headers.host}`);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const upPort = (upstream.address() as AddressInfo).port;

    // Every destination resolves to the local upstream; `denied.test` is refused like a policy would.
    proxy = http.createServer((req, res) => {
      proxied.push(`GET-ABS ${req.url}`);
      const target = new URL(req.url ?? '');
      if (target.hostname === 'denied.test') {
        res.writeHead(403).end('denied');
        return;
      }
      const fwd = http.request({ host: '127.0.0.1', port: upPort, path: target.pathname + target.search, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(fwd);
    });
    proxy.on('connect', (req, socket) => {
      proxied.push(`CONNECT ${req.url}`);
      if (req.url?.startsWith('denied.test')) {
        socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      const up = net.connect(upPort, '127.0.0.1', () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        up.pipe(socket);
        socket.pipe(up);
      });
      up.on('error', () => socket.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;

    app = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', HTTP_PROXY: proxyUrl, HTTPS_PROXY: proxyUrl }, stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      app.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on :(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      app.once('exit', (code) => reject(new Error(`server exited ${code}`)));
    });
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    if (app?.pid && app.exitCode === null) process.kill(app.pid, 'SIGTERM');
    await new Promise<void>((r) => proxy?.close(() => r()));
    await new Promise<void>((r) => upstream?.close(() => r()));
  });

  test('GET /hello answers with its path and query', async () => {
    const r = await fetch(`${base}/hello?name=volant&x=%20y`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { message: 'hello', path: '/hello', query: { name: 'volant', x: ' y' } });
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
  });

  test('GET /bytes?n=N streams exactly N bytes of the documented pattern', async () => {
    for (const n of [0, 1, 65_537, 1_000_003]) {
      const body = Buffer.from(await (await fetch(`${base}/bytes?n=${n}`)).arrayBuffer());
      assert.equal(body.length, n);
      for (let i = 0; i < n; i += 997) assert.equal(body[i], pattern(i), `byte ${i}`);
      if (n > 0) assert.equal(body[n - 1], pattern(n - 1));
    }
    for (const bad of ['-1', 'abc', '1e3x', String(2 ** 40)]) assert.equal((await fetch(`${base}/bytes?n=${bad}`)).status, 400, bad);
  });

  test('GET /fetch goes through the proxy: absolute-form for http, a CONNECT tunnel for https', async () => {
    proxied.length = 0;
    const r = await fetch(`${base}/fetch?url=${encodeURIComponent('http://allowed.test/a?b=1')}`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { status: 203, body: 'upstream saw GET /a?b=1 host=allowed.test', truncated: false });
    assert.deepEqual(proxied, ['GET-ABS http://allowed.test/a?b=1']);

    proxied.length = 0;
    const denied = await (await fetch(`${base}/fetch?url=${encodeURIComponent('http://denied.test/')}`)).json();
    assert.equal((denied as { status: number }).status, 403);

    // The tunnel reaches a plain-HTTP upstream here, so TLS fails; what matters is the CONNECT.
    proxied.length = 0;
    const tls = await fetch(`${base}/fetch?url=${encodeURIComponent('https://allowed.test:8443/x')}`);
    assert.equal(tls.status, 502);
    assert.deepEqual(proxied, ['CONNECT allowed.test:8443']);
    const refused = await fetch(`${base}/fetch?url=${encodeURIComponent('https://denied.test/')}`);
    assert.equal(refused.status, 403);
  });

  test('GET /bytes?n=N&cut=1 sends N bytes and then breaks the connection', async () => {
    await assert.rejects(
      (async () => {
        const r = await fetch(`${base}/bytes?n=100000&cut=1`);
        await r.arrayBuffer();
      })(),
      'the response is cut short: the client sees an error, not a complete body',
    );
  });

  test('WS /ws echoes text and binary frames (ws client)', async () => {
    const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
    await once(ws, 'open');
    const big = Buffer.alloc(200_000, 7);
    const got: (string | Buffer)[] = [];
    ws.on('message', (d, binary) => got.push(binary ? (d as Buffer) : d.toString()));
    ws.send('hello over ws');
    ws.send(big);
    await eventually(() => got.length === 2);
    assert.equal(got[0], 'hello over ws');
    assert.ok(Buffer.isBuffer(got[1]) && (got[1] as Buffer).equals(big));
    ws.close();
    await once(ws, 'close');
  });

  test('GET /fetch refuses non-http schemes and a missing url', async () => {
    assert.equal((await fetch(`${base}/fetch?url=${encodeURIComponent('file:///etc/passwd')}`)).status, 400);
    assert.equal((await fetch(`${base}/fetch`)).status, 400);
    assert.equal((await fetch(`${base}/fetch?url=not-a-url`)).status, 502);
  });
});
