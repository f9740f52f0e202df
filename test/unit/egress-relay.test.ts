import assert from 'node:assert/strict';
import { connect, createServer, type NetConnectOpts, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { MAX_READ_BYTES, UpstreamReader } from '../../host/egress/relay.js';
import { eventually } from '../support/eventually.js';

// Loopback socket pairs: `far` writes as the upstream server would; `near` is the proxy's socket.
let server: Server;
let port = 0;
const accepted: Socket[] = [];
before(async () => {
  server = createServer((s) => accepted.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
after(() => server.close());

async function pair(reader: UpstreamReader): Promise<{ near: Socket; far: Socket }> {
  const n = accepted.length;
  const near = connect({ port, host: '127.0.0.1', allowHalfOpen: true, onread: reader.onread } as NetConnectOpts);
  reader.attach(near);
  await new Promise<void>((r) => near.once('connect', () => r()));
  await eventually(() => accepted.length > n, { what: 'the server side of the pair' });
  return { near, far: accepted[n]! };
}

/** A local sink socket pair for `dest`: returns the socket to write into and a collector of what arrived. */
async function sink(): Promise<{ dest: Socket; received: () => Promise<Buffer> }> {
  const n = accepted.length;
  const dest = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((r) => dest.once('connect', () => r()));
  await eventually(() => accepted.length > n, { what: 'the server side of the sink' });
  const other = accepted[n]!;
  const chunks: Buffer[] = [];
  other.on('data', (d: Buffer) => chunks.push(d));
  return { dest, received: () => new Promise((resolve) => other.on('end', () => resolve(Buffer.concat(chunks)))) };
}

describe('UpstreamReader', () => {
  it('holds bytes that arrive before relaying, then delivers them first and in order', async () => {
    const reader = new UpstreamReader();
    const { near, far } = await pair(reader);
    far.write('early-');
    await eventually(() => near.bytesRead >= 'early-'.length, { what: 'the early bytes read by the proxy side' });
    const { dest, received } = await sink();
    reader.relay(near, dest);
    far.end('late');
    assert.equal((await received()).toString(), 'early-late');
    near.destroy();
  });

  it('relays 32 MiB intact with growing reads and ends the destination', async () => {
    const reader = new UpstreamReader();
    const { near, far } = await pair(reader);
    const { dest, received } = await sink();
    reader.relay(near, dest);
    const data = Buffer.alloc(32 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    far.end(data);
    const got = await received();
    assert.equal(got.length, data.length);
    assert.ok(got.equals(data), 'bytes arrive unchanged and in order');
    assert.ok(reader.onread.buffer().length <= MAX_READ_BYTES);
    near.destroy();
  });

  it('ends the destination when the upstream ended before relaying started', async () => {
    const reader = new UpstreamReader();
    const { near, far } = await pair(reader);
    far.end('bye');
    // The reader holds the early bytes and pauses the socket; the end follows them either way.
    await eventually(() => near.bytesRead >= 'bye'.length, { what: "the upstream's last bytes read by the proxy side" });
    const { dest, received } = await sink();
    reader.relay(near, dest);
    assert.equal((await received()).toString(), 'bye');
    near.destroy();
  });
});
