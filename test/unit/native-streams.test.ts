/**
 * The addon's fd→net.Socket machinery, driven with AF_UNIX socketpairs, a Unix listener and
 * loopback TCP connects: the same code path (Pipe handle, libuv I/O, uv_poll connect) every
 * AF_VSOCK socket takes. AF_VSOCK itself is never opened here (the host's vsock is off-limits);
 * the end-to-end suite runs it inside a guest kernel.
 */

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { forTesting, nativeAvailable } from '../../native/index.js';

const MIB = 1024 * 1024;
const LARGE_TRANSFER_BYTES = 100 * MIB;
const CHUNK_BYTES = 64 * 1024;
const CONCURRENT_PAIRS = 200;

const tmp = mkdtempSync(path.join(tmpdir(), `native-streams-${process.pid}-`));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Resolves on 'close'; created up front because a socket may close before a test awaits it. */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Reads everything until 'end', returning byte count and sha256. */
function drain(socket: net.Socket, pauseEveryBytes = 0): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let sincePause = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      sincePause += chunk.length;
      if (pauseEveryBytes && sincePause >= pauseEveryBytes) {
        // A slow consumer: stop reading for a moment so the writer must feel backpressure.
        sincePause = 0;
        socket.pause();
        setTimeout(() => socket.resume(), 5);
      }
    });
    socket.on('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    socket.on('error', reject);
  });
}

test('the addon loads', () => {
  assert.equal(nativeAvailable(), true, 'build it with `npm install` (node-gyp rebuild --directory native)');
});

describe('socketpair streams', () => {
  test('100 MB cross the pair intact, and the writer is held back by backpressure', async () => {
    const [writer, reader] = forTesting.socketPair();
    const bothClosed = Promise.all([closed(writer), closed(reader)]);
    const received = drain(reader, 4 * MIB);
    const pattern = randomBytes(CHUNK_BYTES);
    const sent = createHash('sha256');
    let refusals = 0;
    let maxBuffered = 0;
    for (let written = 0; written < LARGE_TRANSFER_BYTES; written += CHUNK_BYTES) {
      sent.update(pattern);
      maxBuffered = Math.max(maxBuffered, writer.writableLength);
      if (!writer.write(pattern)) {
        refusals++;
        await once(writer, 'drain');
      }
    }
    writer.end();
    const result = await received;
    assert.equal(result.bytes, LARGE_TRANSFER_BYTES);
    assert.equal(result.sha256, sent.digest('hex'));
    assert.ok(refusals > 0, 'write() never returned false: no backpressure reached the writer');
    // Honouring write()'s answer keeps user-space buffering near one high-water mark, not 100 MB.
    assert.ok(maxBuffered <= writer.writableHighWaterMark + CHUNK_BYTES, `buffered ${maxBuffered} bytes`);
    reader.end();
    await bothClosed;
  });

  test('half-close: end() delivers EOF while the other direction keeps flowing', async () => {
    const [a, b] = forTesting.socketPair();
    const bothClosed = Promise.all([closed(a), closed(b)]);
    a.allowHalfOpen = true;
    b.allowHalfOpen = true;
    const bGot = drain(b);
    a.end('request');
    assert.deepEqual(await bGot, { bytes: 7, sha256: createHash('sha256').update('request').digest('hex') });
    assert.equal(a.writable, false);
    const aGot = drain(a);
    b.write('still ');
    b.end('open');
    const reply = await aGot;
    assert.equal(reply.bytes, 10);
    await bothClosed;
  });

  test('destroy() closes the descriptor and the peer sees end-of-stream', async () => {
    const before = openFds();
    const [a, b] = forTesting.socketPair();
    const aClosed = closed(a);
    const bClosed = closed(b);
    assert.equal(openFds(), before + 2);
    const peerEnded = once(b, 'end');
    b.resume();
    a.destroy();
    await aClosed;
    await peerEnded;
    b.destroy();
    await bClosed;
    assert.equal(openFds(), before, 'descriptors leaked');
  });

  test('a peer that closes with unread data makes the writer fail with ECONNRESET or EPIPE', async () => {
    const [a, b] = forTesting.socketPair();
    const aClosed = closed(a);
    b.pause();
    a.write(Buffer.alloc(MIB));
    await new Promise((resolve) => setImmediate(resolve));
    const failed = once(a, 'error');
    b.destroy();
    const keepWriting = setInterval(() => a.writable && a.write(Buffer.alloc(CHUNK_BYTES)), 5);
    try {
      const [error] = (await failed) as [NodeJS.ErrnoException];
      assert.ok(['ECONNRESET', 'EPIPE'].includes(String(error.code)), `got ${error.code}`);
      assert.equal(typeof error.errno, 'number');
      assert.ok(error.syscall, 'error names the syscall');
    } finally {
      clearInterval(keepWriting);
    }
    await aClosed;
  });

  test(`${CONCURRENT_PAIRS} pairs echo concurrently and leave no descriptor behind`, async () => {
    const before = openFds();
    const rounds = Array.from({ length: CONCURRENT_PAIRS }, async (_, i) => {
      const [client, server] = forTesting.socketPair();
      const bothClosed = Promise.all([closed(client), closed(server)]);
      server.pipe(server); // echo
      const payload = randomBytes(16 * 1024 + i);
      const echoed = drain(client);
      client.end(payload);
      const result = await echoed;
      assert.equal(result.bytes, payload.length);
      assert.equal(result.sha256, createHash('sha256').update(payload).digest('hex'));
      await bothClosed;
    });
    await Promise.all(rounds);
    assert.equal(openFds(), before);
  });
});

describe('as a transport for HTTP (how kestrel and the host use vsock connections)', () => {
  test('an http.Server fed with wrapped sockets answers an http client that dials through one', async () => {
    const server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk) => {
        body += chunk;
      });
      req.on('end', () => res.end(JSON.stringify({ method: req.method, url: req.url, body })));
    });
    const request = http.request({
      method: 'POST',
      path: '/v1/echo',
      createConnection: () => {
        const [client, serverSide] = forTesting.socketPair();
        server.emit('connection', serverSide);
        return client;
      },
    });
    request.end('payload');
    const [response] = (await once(request, 'response')) as [http.IncomingMessage];
    let text = '';
    for await (const chunk of response) text += chunk;
    assert.equal(response.statusCode, 200);
    assert.deepEqual(JSON.parse(text), { method: 'POST', url: '/v1/echo', body: 'payload' });
    server.closeAllConnections();
  });
});

describe('listener path', () => {
  test('accepts many clients through libuv and keeps accepted sockets open after close()', async () => {
    const socketPath = path.join(tmp, 'listen.sock');
    const accepted: net.Socket[] = [];
    const listener = forTesting.unixListen(socketPath, (socket) => {
      accepted.push(socket);
      socket.pipe(socket);
    });
    const clients = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const client = net.connect(socketPath);
        await once(client, 'connect');
        const echoed = drain(client);
        client.end(`client-${i}`);
        return (await echoed).bytes;
      }),
    );
    assert.deepEqual(clients, Array.from({ length: 50 }, (_, i) => `client-${i}`.length));
    assert.equal(accepted.length, 50);

    const lingering = net.connect(socketPath);
    await once(lingering, 'connect');
    while (accepted.length < 51) await new Promise((resolve) => setImmediate(resolve));
    await listener.close();
    await listener.close(); // idempotent
    const refused = net.connect(socketPath);
    const [error] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    assert.equal(error.code, 'ECONNREFUSED');
    const echoed = drain(lingering);
    lingering.end('after close');
    assert.equal((await echoed).bytes, 'after close'.length);
  });

  test('binding a path that is in use fails with EADDRINUSE from bind', () => {
    const socketPath = path.join(tmp, 'busy.sock');
    const first = forTesting.unixListen(socketPath, () => {});
    try {
      assert.throws(() => forTesting.unixListen(socketPath, () => {}), { code: 'EADDRINUSE', syscall: 'bind', errno: -98 });
    } finally {
      void first.close();
    }
  });
});

describe('asynchronous connect path', () => {
  test('connects (non-blocking connect, poll for writable, SO_ERROR) and carries data both ways', async () => {
    const server = net.createServer((socket) => socket.pipe(socket));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as net.AddressInfo;
      const socket = await forTesting.tcp4Connect('127.0.0.1', port);
      const echoed = drain(socket);
      socket.end('ping over the connect path');
      assert.equal((await echoed).bytes, 'ping over the connect path'.length);
    } finally {
      server.close();
    }
  });

  test('a refused connect rejects with ECONNREFUSED from connect, not the poll status', async () => {
    const probe = net.createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const { port } = probe.address() as net.AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    const before = openFds();
    await assert.rejects(forTesting.tcp4Connect('127.0.0.1', port), {
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
    });
    assert.equal(openFds(), before, 'the failed socket was not closed');
  });
});
