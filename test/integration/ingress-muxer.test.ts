// The hybrid-vsock muxer test double against the host-side hybrid vsock contract (docs/vsock.md,
// docs/CONTRACTS.md), and the host's dial/listen (host/vsock/hybrid.ts) against it. Real Unix
// sockets and TCP.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dialHybridVsock, listenGuestInitiated } from '../../host/vsock/hybrid.js';
import { isVolantError } from '../../shared/errors.js';
import { type HybridVsockMuxer, MUXER_FIRST_HOST_PORT, startHybridVsockMuxer } from '../support/hybrid-vsock-muxer.js';

const dir = mkdtempSync(join(tmpdir(), `volant-ingress-muxer-${process.pid}-`));
let guest: Server;
let guestPort = 0;
let mux: HybridVsockMuxer;

/** Sends `bytes` on a fresh connection and collects everything until the muxer closes (or `waitMs`). */
function exchange(bytes: string | Buffer, waitMs = 1000, socketPath = mux.socketPath): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ path: socketPath }, () => s.write(bytes));
    let data = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve({ data, closed: false });
    }, waitMs);
    s.on('data', (d) => {
      data += d.toString('latin1');
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve({ data, closed: true });
    });
  });
}

before(async () => {
  // "The guest": an echo service on guest vsock port 8080 that prefixes what it echoes.
  guest = createServer((s) => s.on('data', (d) => s.write(`echo:${d.toString('latin1')}`)));
  await new Promise<void>((r) => guest.listen(0, '127.0.0.1', r));
  guestPort = (guest.address() as { port: number }).port;
  mux = await startHybridVsockMuxer({ socketPath: join(dir, 'vm.sock'), guestPorts: { 8080: { host: '127.0.0.1', port: guestPort } }, handshakeTimeoutMs: 300 });
});

after(async () => {
  await mux.close();
  await new Promise((r) => guest.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('hybrid-vsock muxer double (the hybrid vsock contract, docs/vsock.md)', () => {
  it('answers CONNECT with OK <n>, n from 2^30 upward, then carries bytes (also those sent with the command)', async () => {
    const a = await exchange('CONNECT 8080\nhello', 300);
    const b = await exchange('connect 8080\nx', 300);
    const ma = /^OK (\d+)\necho:hello$/.exec(a.data);
    const mb = /^OK (\d+)\necho:x$/.exec(b.data);
    assert.ok(ma && mb, JSON.stringify([a.data, b.data]));
    assert.ok(Number(ma[1]) >= MUXER_FIRST_HOST_PORT);
    assert.ok(Number(mb[1]) > Number(ma[1]));
  });

  const refusals: Array<[string, string]> = [
    ['nothing listens on the guest port', 'CONNECT 9999\n'],
    ['malformed keyword', 'CONNEKT 8080\n'],
    ['no port', 'CONNECT \n'],
    ['non-decimal port', 'CONNECT 0x1f90\n'],
    ['trailing junk', 'CONNECT 8080 x\n'],
    ['longer than 32 bytes without newline', 'CONNECT 8080'.padEnd(40, ' ')],
    ['newline past byte 32', `CONNECT ${'0'.repeat(30)}8080\n`],
  ];
  for (const [name, command] of refusals) {
    it(`closes without OK: ${name}`, async () => {
      const r = await exchange(command);
      assert.equal(r.closed, true);
      assert.equal(r.data, '');
    });
  }

  it('closes without OK on EOF before the newline', async () => {
    const r = await new Promise<{ data: string }>((resolve) => {
      const s = connect({ path: mux.socketPath }, () => s.end('CONNECT 80'));
      let data = '';
      s.on('data', (d) => {
        data += d;
      });
      s.on('close', () => resolve({ data }));
    });
    assert.equal(r.data, '');
  });

  it('closes a handshake that does not finish within the handshake timeout', async () => {
    const started = Date.now();
    const r = await exchange('CONN', 3000);
    assert.equal(r.closed, true);
    assert.equal(r.data, '');
    assert.ok(Date.now() - started >= 250);
  });

  it('accepts and drops connections past the per-device limit', async () => {
    const small = await startHybridVsockMuxer({ socketPath: join(dir, 'small.sock'), guestPorts: { 8080: { host: '127.0.0.1', port: guestPort } }, maxConnections: 2 });
    const held: Socket[] = [await dialHybridVsock(small.socketPath, 8080), await dialHybridVsock(small.socketPath, 8080)];
    const third = await exchange('CONNECT 8080\n', 500, small.socketPath);
    assert.equal(third.closed, true);
    assert.equal(third.data, '');
    assert.equal(small.stats.dropped, 1);
    for (const s of held) s.destroy();
    await small.close();
  });

  it('guest-initiated: the VMM dials <socket>_<port>; a reset when the host does not listen', async () => {
    await assert.rejects(mux.dialFromGuest(3128), /ENOENT|ECONNREFUSED/);
    const got: string[] = [];
    const server = await listenGuestInitiated(mux.socketPath, 3128, (s) => s.on('data', (d) => got.push(d.toString())));
    const s = await mux.dialFromGuest(3128);
    s.end('from guest');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got, ['from guest']);
    await new Promise((r) => server.close(r));
  });
});

describe('dialHybridVsock against the muxer', () => {
  it('resolves after OK, the stream reaches the guest', async () => {
    const s = await dialHybridVsock(mux.socketPath, 8080);
    const reply = await new Promise<string>((resolve) => {
      s.once('data', (d) => resolve(d.toString()));
      s.resume(); // the dial hands the stream over paused
      s.write('ping');
    });
    assert.equal(reply, 'echo:ping');
    s.destroy();
  });
  it('rejects UPSTREAM_UNREACHABLE when the guest port has no listener', async () => {
    await assert.rejects(dialHybridVsock(mux.socketPath, 1234), (e: unknown) => isVolantError(e) && e.code === 'UPSTREAM_UNREACHABLE');
  });
});
