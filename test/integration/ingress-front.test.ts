/**
 * What the ingress fast path (host/ingress/front.ts, upstream.ts) introduces, through volantd's
 * real front (test/support/ingress-stack.ts, with a bearer token as on any TCP listener): the
 * cached VM lookup and its invalidation, pipelined requests with bodies, keep-alive connections
 * that keep working after errors (client side and guest side), a connection that moves from
 * proxy requests to API routes, auth on proxied requests, and the ingress counters. The guest
 * is a real node:http server on loopback that reports what it received and on which socket.
 */

import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { IngressTarget } from '../../host/ingress/index.js';
import { VolantError } from '../../shared/errors.js';
import { eventually } from '../support/eventually.js';
import { type IngressStack, parseRawResponse, startIngressStack } from '../support/ingress-stack.js';

const TOKEN = 'front-test-token-0123456789';
const AUTH = `Authorization: Bearer ${TOKEN}\r\n`;

let guest: Server;
let guestPort = 0;
let stack: IngressStack;
/** Guest-side sockets by the order they were accepted, and what each request saw. */
const guestSockets: Socket[] = [];
const seen: Array<{ url: string; socket: number; body: string; authorization: string | undefined }> = [];
const lookups: Record<string, number> = {};
/** Per-VM answer of the lookup: a transport, or an error to throw. */
const vms: Record<string, () => IngressTarget | Promise<IngressTarget>> = {};
let stalledLookup: { release: () => void } | null = null;

function guestHandler(req: IncomingMessage, res: ServerResponse): void {
  let body = '';
  req.setEncoding('latin1');
  req.on('data', (d: string) => {
    body += d;
  });
  req.on('end', () => {
    seen.push({ url: req.url!, socket: guestSockets.indexOf(req.socket), body, authorization: req.headers.authorization });
    if (req.url!.startsWith('/unframed')) {
      // No Content-Length: chunked by node:http for an HTTP/1.1 request.
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part-one,');
      res.end('part-two');
      return;
    }
    if (req.url!.startsWith('/bad-head')) {
      // An invalid answer on this guest connection: the ingress must not reuse it.
      req.socket.end('HTTP/1.1 200 O\x01K\r\ncontent-length: 2\r\n\r\nok');
      return;
    }
    const text = JSON.stringify({ url: req.url, body });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  });
}

const tcp = (): IngressTarget['transport'] => ({ kind: 'tcp', host: '127.0.0.1', port: guestPort });

before(async () => {
  guest = createServer(guestHandler);
  guest.on('connection', (s) => guestSockets.push(s));
  guest.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => guest.listen(0, '127.0.0.1', r));
  guestPort = (guest.address() as { port: number }).port;
  for (const name of ['web', 'cached', 'api', 'err', 'pipe', 'count']) vms[name] = () => ({ vmName: name, transport: tcp() });
  vms.stopped = () => {
    throw new VolantError('INVALID_STATE', 'VM stopped is stopped, not running');
  };
  vms.slow = () =>
    new Promise<IngressTarget>((resolve) => {
      stalledLookup = { release: () => resolve({ vmName: 'slow', transport: tcp() }) };
    });
  stack = await startIngressStack({
    token: TOKEN,
    lookup: (name) => {
      lookups[name] = (lookups[name] ?? 0) + 1;
      const vm = vms[name];
      if (vm === undefined) throw new VolantError('NOT_FOUND', `no VM named ${name}`);
      return vm();
    },
  });
});

after(async () => {
  await stack.close();
  guest.closeAllConnections();
  await new Promise((r) => guest.close(r));
});

/** A client connection that sends raw bytes and reads whole responses (Content-Length framed) one by one. */
class Client {
  data = '';
  private waiters: Array<() => void> = [];
  closed = false;
  readonly socket: Socket;

  constructor() {
    this.socket = connect({ host: '127.0.0.1', port: stack.port });
    this.socket.on('data', (d: Buffer) => {
      this.data += d.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
    this.socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    this.socket.on('error', () => undefined);
  }

  send(bytes: string): void {
    this.socket.write(bytes);
  }

  /** The next whole response on the connection. */
  async response(): Promise<ReturnType<typeof parseRawResponse>> {
    for (;;) {
      const end = this.data.indexOf('\r\n\r\n');
      if (end >= 0) {
        const length = Number(/\r\ncontent-length: (\d+)/i.exec(this.data.slice(0, end + 2))?.[1] ?? 0);
        if (this.data.length >= end + 4 + length) {
          const text = this.data.slice(0, end + 4 + length);
          this.data = this.data.slice(end + 4 + length);
          return parseRawResponse(text);
        }
      }
      if (this.closed) throw new Error(`connection closed; unparsed: ${JSON.stringify(this.data.slice(0, 200))}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: api.test\r\n${AUTH}${extra}\r\n`;

describe('ingress fast path: VM lookups are cached until the VM is forgotten', () => {
  it('one lookup serves many requests; forget makes the next request look up again', async () => {
    const c = new Client();
    for (let i = 0; i < 5; i++) {
      c.send(get(`/api/v1/vms/cached/proxy/n${i}`));
      assert.equal((await c.response()).status, 200);
    }
    assert.equal(lookups.cached, 1, 'looked up once for five requests');
    stack.ingress.forget('cached');
    c.send(get('/api/v1/vms/cached/proxy/after'));
    assert.equal((await c.response()).status, 200);
    assert.equal(lookups.cached, 2, 'looked up again after forget');
    c.close();
  });

  it('a lookup in flight when the VM is forgotten answers its request but is not cached', async () => {
    const c = new Client();
    c.send(get('/api/v1/vms/slow/proxy/first'));
    await eventually(() => stalledLookup !== null, { what: 'the lookup started' });
    stack.ingress.forget('slow');
    stalledLookup!.release();
    stalledLookup = null;
    assert.equal((await c.response()).status, 200);
    c.send(get('/api/v1/vms/slow/proxy/second'));
    await eventually(() => stalledLookup !== null, { what: 'a second lookup (the first was not cached)' });
    stalledLookup!.release();
    assert.equal((await c.response()).status, 200);
    assert.equal(lookups.slow, 2);
    c.close();
  });

  it('failed lookups are not cached', async () => {
    const c = new Client();
    for (let i = 0; i < 2; i++) {
      c.send(get('/api/v1/vms/stopped/proxy/'));
      const r = await c.response();
      assert.equal(r.status, 409);
      assert.equal(JSON.parse(r.body).error.code, 'INVALID_STATE');
    }
    assert.equal(lookups.stopped, 2);
    c.close();
  });
});

describe('ingress fast path: one connection, many requests', () => {
  it('pipelined requests with bodies (Content-Length and chunked) are answered in order, bodies intact', async () => {
    const c = new Client();
    c.send(
      `POST /api/v1/vms/pipe/proxy/a HTTP/1.1\r\nHost: h\r\n${AUTH}Content-Length: 5\r\n\r\nhello` +
        `POST /api/v1/vms/pipe/proxy/b HTTP/1.1\r\nHost: h\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n` +
        get('/api/v1/vms/pipe/proxy/c'),
    );
    const bodies = [];
    for (let i = 0; i < 3; i++) bodies.push(JSON.parse((await c.response()).body) as { url: string; body: string });
    assert.deepEqual(bodies, [
      { url: '/a', body: 'hello' },
      { url: '/b', body: 'abcde' },
      { url: '/c', body: '' },
    ]);
    c.close();
  });

  it('errors keep the connection usable: unknown VM, VM not running, a 401, then a proxied 200', async () => {
    const c = new Client();
    c.send(get('/api/v1/vms/ghost/proxy/'));
    assert.equal((await c.response()).status, 404);
    c.send(get('/api/v1/vms/stopped/proxy/'));
    assert.equal((await c.response()).status, 409);
    c.send('GET /api/v1/vms/web/proxy/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer wrong\r\n\r\n');
    const denied = await c.response();
    assert.equal(denied.status, 401);
    assert.equal(JSON.parse(denied.body).error.code, 'UNAUTHORIZED');
    c.send(get('/api/v1/vms/web/proxy/ok'));
    const ok = await c.response();
    assert.equal(ok.status, 200);
    assert.equal(JSON.parse(ok.body).url, '/ok');
    assert.equal(c.closed, false);
    c.close();
  });

  it('after a guest answers with an invalid head (502), the next request works and takes another guest connection', async () => {
    const c = new Client();
    c.send(get('/api/v1/vms/err/proxy/before'));
    assert.equal((await c.response()).status, 200);
    const before = seen.find((x) => x.url === '/before')!.socket;
    c.send(get('/api/v1/vms/err/proxy/bad-head'));
    const bad = await c.response();
    assert.equal(bad.status, 502);
    assert.equal(JSON.parse(bad.body).error.code, 'PROTOCOL_ERROR');
    assert.equal(seen.find((x) => x.url === '/bad-head')!.socket, before, 'the warm guest connection was reused for the bad request');
    c.send(get('/api/v1/vms/err/proxy/after'));
    assert.equal((await c.response()).status, 200);
    assert.notEqual(seen.find((x) => x.url === '/after')!.socket, before, 'the connection that answered badly was not reused');
    c.close();
  });

  it('warm guest connections are reused across requests and client connections', async () => {
    const first = new Client();
    first.send(get('/api/v1/vms/count/proxy/one'));
    assert.equal((await first.response()).status, 200);
    first.close();
    const second = new Client();
    second.send(get('/api/v1/vms/count/proxy/two'));
    assert.equal((await second.response()).status, 200);
    const [one, two] = ['/one', '/two'].map((u) => seen.find((x) => x.url === u)!.socket);
    assert.equal(one, two);
    second.close();
  });

  it('an API request after proxied ones moves the connection to the API (same bytes), and proxy requests keep working there', async () => {
    const c = new Client();
    c.send(get('/api/v1/vms/api/proxy/p1'));
    assert.equal((await c.response()).status, 200);
    // A route the API serves (the stub orchestrator lists no VM), then the proxy again.
    c.send(get('/api/v1/vms') + get('/api/v1/vms/api/proxy/p2'));
    const list = await c.response();
    assert.equal(list.status, 200, list.body);
    assert.deepEqual(JSON.parse(list.body), { vms: [] });
    const p2 = await c.response();
    assert.equal(p2.status, 200);
    assert.equal(JSON.parse(p2.body).url, '/p2');
    c.close();
  });
});

describe('ingress fast path: framing the client sees', () => {
  it('HEAD gets the head alone, and the connection carries on', async () => {
    const c = new Client();
    c.send(`HEAD /api/v1/vms/web/proxy/head HTTP/1.1\r\nHost: h\r\n${AUTH}\r\n`);
    await eventually(() => c.data.includes('\r\n\r\n'), { what: 'the HEAD answer' });
    const head = c.data;
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.ok(head.endsWith('\r\n\r\n'), 'no body after the head');
    c.data = '';
    c.send(get('/api/v1/vms/web/proxy/after-head'));
    assert.equal(JSON.parse((await c.response()).body).url, '/after-head');
    c.close();
  });

  it('Expect: 100-continue is answered by the ingress, and the body then reaches the guest', async () => {
    const c = new Client();
    c.send(`POST /api/v1/vms/web/proxy/expect HTTP/1.1\r\nHost: h\r\n${AUTH}Content-Length: 4\r\nExpect: 100-continue\r\n\r\n`);
    await eventually(() => c.data.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), { what: '100 Continue' });
    c.data = '';
    c.send('body');
    const r = await c.response();
    assert.deepEqual(JSON.parse(r.body), { url: '/expect', body: 'body' });
    c.close();
  });

  it('a response without Content-Length is chunked for HTTP/1.1 and close-delimited for HTTP/1.0', async () => {
    const c11 = new Client();
    c11.send(get('/api/v1/vms/web/proxy/unframed'));
    await eventually(() => c11.data.endsWith('0\r\n\r\n'), { what: 'the last chunk' });
    assert.match(c11.data, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.match(c11.data, /part-one,[\s\S]*part-two/);
    c11.close();
    const c10 = new Client();
    c10.send(`GET /api/v1/vms/web/proxy/unframed HTTP/1.0\r\nHost: h\r\n${AUTH}\r\n`);
    await eventually(() => c10.closed, { what: 'the HTTP/1.0 answer ends with the connection' });
    const text = c10.data;
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(text, /transfer-encoding/i);
    assert.match(text, /\r\nconnection: close\r\n/i);
    assert.ok(text.endsWith('part-one,part-two'), JSON.stringify(text.slice(-40)));
  });
});

describe('ingress fast path: auth and counters', () => {
  it('a proxied request needs the token; the token never reaches the guest', async () => {
    const c = new Client();
    c.send('GET /api/v1/vms/web/proxy/noauth HTTP/1.1\r\nHost: h\r\n\r\n');
    const r = await c.response();
    assert.equal(r.status, 401);
    assert.equal(JSON.parse(r.body).error.code, 'UNAUTHORIZED');
    assert.ok(!seen.some((x) => x.url === '/noauth'), 'the unauthenticated request reached no guest');
    c.send(get('/api/v1/vms/web/proxy/withauth'));
    assert.equal((await c.response()).status, 200);
    assert.equal(seen.find((x) => x.url === '/withauth')!.authorization, undefined);
    c.close();
  });

  it('requests, responses, refusals and upstream errors are counted', async () => {
    const m0 = { ...stack.ingress.metrics };
    const c = new Client();
    c.send(get('/api/v1/vms/web/proxy/counted'));
    await c.response();
    c.send(get('/api/v1/vms/web/proxy/bad-head'));
    await c.response();
    c.send(get('/api/v1/vms/web/proxy/%2e%2e/x'));
    assert.equal((await c.response()).status, 400);
    const m = stack.ingress.metrics;
    assert.equal(m.requests - m0.requests, 2);
    assert.equal(m.responses - m0.responses, 1);
    assert.equal(m.upstreamErrors - m0.upstreamErrors, 1);
    assert.equal(m.refused - m0.refused, 1);
    c.close();
  });
});
