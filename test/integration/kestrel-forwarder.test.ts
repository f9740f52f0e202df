/**
 * kestrel's egress forwarder as a real process: the workload-facing proxy on loopback TCP, the
 * upstream a Unix socket where a real forward proxy (standing in for the host's egress proxy,
 * which is where allow/deny is decided) takes CONNECT and absolute-form requests. Shows that
 * bytes go through unchanged, that garbage is refused before any upstream connection opens,
 * and that an unreachable upstream is a 502 with a JSON reason. No AF_VSOCK here.
 */

import assert from 'node:assert/strict';
import { createServer as createHttpServer, request, type Server } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type KestrelRun, startKestrel, waitForWorkloadState } from '../support/workload-kestrel.js';

function listenUnix(server: Server | ReturnType<typeof createServer>, socketPath: string): Promise<void> {
  return new Promise((resolve) => server.listen(socketPath, resolve));
}

function rawExchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let out = '';
    s.on('data', (c) => {
      out += c.toString('latin1');
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.write(bytes, 'latin1');
  });
}

describe('kestrel egress forwarder', () => {
  let k: KestrelRun;
  let forwarderPort: number;
  let upstreamConnections = 0;
  const upstreamHeads: string[] = [];
  let origin: Server;
  let echo: ReturnType<typeof createServer>;
  let upstream: Server;
  let upstreamDir: string | undefined;
  let upstreamPath: string;

  before(async () => {
    origin = createHttpServer((req, res) => res.end(`origin saw ${req.method} ${req.url} host=${req.headers.host}`));
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    // The host-side stand-in: a plain forward proxy (absolute-form + CONNECT), recording what arrives.
    upstream = createHttpServer((req, res) => {
      upstreamHeads.push(`${req.method} ${req.url}`);
      const target = new URL(req.url!);
      const out = request({ host: target.hostname, port: target.port, path: `${target.pathname}${target.search}`, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode!, r.headers);
        r.pipe(res);
      });
      req.pipe(out);
    });
    upstream.on('connection', () => upstreamConnections++);
    upstream.on('connect', (req, client: Socket, head) => {
      upstreamHeads.push(`CONNECT ${req.url}`);
      const [host, port] = req.url!.split(':');
      const target = connect({ host, port: Number(port) }, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) target.write(head);
        target.pipe(client);
        client.pipe(target);
      });
      target.on('error', () => client.destroy());
    });
    upstreamDir = mkdtempSync(path.join(tmpdir(), `kestrel-egress-${process.pid}-`));
    upstreamPath = path.join(upstreamDir, 'egress.sock');
    await listenUnix(upstream, upstreamPath);
    k = await startKestrel({ name: 'egress', args: ['--egress-listen', 'tcp:127.0.0.1:0', '--egress-upstream', `unix:${upstreamPath}`] });
    forwarderPort = Number((await k.waitForOutput(/egress forwarder on tcp:127\.0\.0\.1:(\d+)/))[1]);
  });

  after(async () => {
    await k?.stop();
    origin?.close();
    echo?.close();
    upstream?.close();
    if (upstreamDir) rmSync(upstreamDir, { recursive: true, force: true });
  });

  test('the workload is told where the forwarder is; /healthz names the upstream', async () => {
    await waitForWorkloadState(k, 'running');
    const h = JSON.parse((await k.get('/healthz')).body);
    assert.deepEqual(h.egress, { enabled: true, upstream: `unix:${upstreamPath}` });
    for (const name of ['HTTP_PROXY', 'https_proxy']) assert.equal((await k.get(`/env?name=${name}`)).body, `http://127.0.0.1:${forwarderPort}`, name);
    assert.equal((await k.get('/env?name=NO_PROXY')).body, 'localhost,127.0.0.1');
  });

  test('absolute-form GET reaches the origin through the upstream unchanged', async () => {
    const originPort = (origin.address() as { port: number }).port;
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: forwarderPort, path: `http://127.0.0.1:${originPort}/hello?x=1`, headers: { host: `127.0.0.1:${originPort}` } }, (res) => {
        let b = '';
        res.on('data', (c) => {
          b += c;
        });
        res.on('end', () => resolve(b));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(body, `origin saw GET /hello?x=1 host=127.0.0.1:${originPort}`);
    assert.equal(upstreamHeads.at(-1), `GET http://127.0.0.1:${originPort}/hello?x=1`);
  });

  test('CONNECT opens a tunnel that carries bytes both ways', async () => {
    const echoPort = (echo.address() as { port: number }).port;
    const reply = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: forwarderPort, method: 'CONNECT', path: `127.0.0.1:${echoPort}` });
      req.on('connect', (res, socket) => {
        assert.equal(res.statusCode, 200);
        const payload = Buffer.alloc(1024 * 1024, 'z');
        let got = 0;
        socket.on('data', (c: Buffer) => {
          got += c.length;
          if (got === payload.length) {
            socket.destroy();
            resolve(`echoed ${got}`);
          }
        });
        socket.write(payload);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(reply, `echoed ${1024 * 1024}`);
    assert.equal(upstreamHeads.at(-1), `CONNECT 127.0.0.1:${echoPort}`);
  });

  const refused: [string, string, RegExp][] = [
    ['origin-form', 'GET /secret HTTP/1.1\r\nHost: example.com\r\n\r\n', /origin-form/],
    ['garbage', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 junk\r\n\r\n', /request line|method|NUL/],
    ['CL.TE smuggling', 'POST http://example.com/ HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG', /smuggling/],
    ['oversized head', `GET http://example.com/ HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, /larger than/],
  ];
  for (const [name, bytes, reason] of refused) {
    test(`refuses ${name} with 400 before opening an upstream`, async () => {
      const before = upstreamConnections;
      const answer = await rawExchange(forwarderPort, bytes);
      assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      assert.equal(body.error.code, 'INVALID_ARGUMENT');
      assert.match(body.error.message, reason);
      assert.equal(upstreamConnections, before, 'no upstream connection may be opened for a refused head');
    });
  }

  test('an unreachable upstream is a 502 with a JSON reason', async () => {
    await new Promise<void>((r) => upstream.close(() => r()));
    const answer = await rawExchange(forwarderPort, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    assert.equal(body.error.code, 'UPSTREAM_UNREACHABLE');
    assert.match(body.error.message, /egress proxy is unreachable/);
  });
});

