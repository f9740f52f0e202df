/**
 * kestrel's raw relay (guest/server/relay.ts) as a real process from source, on a Unix socket
 * (`--relay-listen`), in front of a real workload server. The relay is what the host's ingress
 * dials for proxied requests: bytes pass unparsed both ways, two requests share one kept-alive
 * connection, and a workload that cannot be reached is the one JSON error shape, never silence.
 * (In a VM it listens on vsock and, bridged, TCP; test/e2e/volant.test.ts covers that path.)
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../support/eventually.js';
import { freePort, type KestrelRun, REPO_ROOT, startKestrel, waitForWorkloadState } from '../support/workload-kestrel.js';

/** Writes `bytes` on a fresh connection to `socketPath` and reads until `done(received)` or the peer closes. */
function exchange(socketPath: string, bytes: string | Buffer, done: (got: Buffer) => boolean = () => false): Promise<{ got: Buffer; closed: boolean; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    const chunks: Buffer[] = [];
    s.on('error', reject);
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      if (done(Buffer.concat(chunks))) resolve({ got: Buffer.concat(chunks), closed: false, socket: s });
    });
    s.on('end', () => resolve({ got: Buffer.concat(chunks), closed: true, socket: s }));
    s.write(bytes);
  });
}

describe('kestrel raw relay in front of a real workload', () => {
  let k: KestrelRun;
  let dir: string;
  let relay: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), `kestrel-relay-${process.pid}-`));
    relay = path.join(dir, 'relay.sock');
    k = await startKestrel({ name: 'relay', args: ['--relay-listen', `unix:${relay}`] });
    await k.waitForOutput(/relay listening on unix:/);
    await waitForWorkloadState(k, 'running');
  });
  after(async () => {
    await k?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('passes the request as sent (no header rewriting) and the response as answered', async () => {
    const req = 'GET /headers HTTP/1.1\r\nHost: client.example\r\nX-Forwarded-For: 198.51.100.7\r\nX-Custom: kept\r\n\r\n';
    const { got, closed } = await exchange(relay, req);
    assert.equal(closed, true, 'the workload answers Connection: close, and the relay passes the close on');
    const text = got.toString('latin1');
    const [head, body] = text.split('\r\n\r\n');
    // The workload's own head, hop-by-hop headers included: checking it is the host ingress's job.
    assert.match(head!, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(head!, /\r\nx-hop-response: must not pass/i);
    const seen = JSON.parse(body!) as Record<string, string>;
    assert.equal(seen.host, 'client.example');
    assert.equal(seen['x-forwarded-for'], '198.51.100.7', 'the relay adds no forwarding headers: the ingress set them');
    assert.equal(seen['x-custom'], 'kept');
  });

  test('keeps a connection alive across requests and carries a 4 MiB body both ways unchanged', async () => {
    const body = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const want = createHash('sha256').update(body).digest('hex');
    const s = connect(relay);
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.write(`POST /sink HTTP/1.1\r\nHost: vm\r\nContent-Length: ${body.length}\r\n\r\n`);
    s.write(body);
    s.write('GET /healthz HTTP/1.1\r\nHost: vm\r\n\r\n');
    const text = await new Promise<string>((resolve, reject) => {
      s.on('error', reject);
      const check = (): void => {
        const t = Buffer.concat(chunks).toString('latin1');
        if ((t.match(/HTTP\/1\.1 200/g) ?? []).length === 2 && t.endsWith('ok')) resolve(t);
      };
      s.on('data', check);
    });
    s.destroy();
    assert.match(text, new RegExp(`"sha256":"${want}"`));
    assert.match(text, /"bytes":4194304/);
  });

  test('a client that goes away mid-response cuts the workload side (no socket left behind)', async () => {
    const fds = (): number => readdirSync(`/proc/${k.child.pid}/fd`).length;
    const before = fds();
    const s = connect(relay);
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('GET /slow HTTP/1.1\r\nHost: vm\r\n\r\n');
    await new Promise<void>((r) => s.once('data', () => r()));
    s.destroy();
    await eventually(
      () => {
        if (fds() > before) throw new Error(`kestrel holds ${fds()} fds, had ${before}`);
        return true;
      },
      { what: 'kestrel closing both sockets of the relayed connection' },
    );
    // The relay process survives and keeps serving.
    const { got } = await exchange(relay, 'GET /healthz HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n');
    assert.match(got.toString('latin1'), /^HTTP\/1\.1 200 OK[\s\S]*\r\n\r\nok$/);
  });
});

describe('kestrel raw relay when the workload cannot be reached', () => {
  let k: KestrelRun;
  let dir: string;
  let relay: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), `kestrel-relay-down-${process.pid}-`));
    relay = path.join(dir, 'relay.sock');
    const closedPort = await freePort();
    // A workload that runs but never listens where its manifest says.
    k = await startKestrel({
      name: 'relay-down',
      args: ['--relay-listen', `unix:${relay}`],
      manifest: () => ({
        name: 'silent',
        version: '1.0.0',
        workload: { type: 'http', entrypoint: [process.execPath, '-e', 'setInterval(() => {}, 1000)'], workdir: REPO_ROOT, http: { base_url: `http://127.0.0.1:${closedPort}` } },
      }),
    });
    await k.waitForOutput(/relay listening on unix:/);
  });
  after(async () => {
    await k?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('answers 502 in the one JSON error shape, naming the workload', async () => {
    const { got, closed } = await exchange(relay, 'GET / HTTP/1.1\r\nHost: vm\r\n\r\n');
    assert.equal(closed, true);
    const [head, body] = got.toString('latin1').split('\r\n\r\n');
    assert.match(head!, /^HTTP\/1\.1 502 /);
    assert.match(head!, /content-type: application\/json/i);
    const err = JSON.parse(body!) as { error: { code: string; message: string } };
    assert.equal(err.error.code, 'UPSTREAM_UNREACHABLE');
    assert.match(err.error.message, /the workload at http:\/\/127\.0\.0\.1:\d+ failed: ECONNREFUSED/);
  });
});
