/**
 * The vsock device back-end process for real (started as the QEMU launcher starts it), driven by
 * test/support/vhost-user-driver.ts, which plays QEMU's vhost-user front-end and the guest's
 * virtio-vsock driver over shared memory, eventfds and the rings. The real guest (Linux under
 * QEMU) is the e2e suite's; here the guest does on purpose what a real one never does.
 *
 * Checked: the hybrid socket contract (CONNECT/OK, the host port in OK and in the REQUEST, bytes
 * after the command line, refusal and timeouts without OK), guest-initiated connections to
 * `<uds>_P`, half-close both ways, RST both ways mid-stream, credit in both directions with slow
 * readers (the device holds at most its buffer, sends nothing past the guest's credit, resets a
 * guest that sends past its credit), malformed TX chains, the connection limit, and that the
 * process exits and removes its sockets when the front-end goes.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { type VsockBackend, startVsockBackend, vhostUserSocketPath, vsockBackendMetricsPath } from '../../host/vmm/vsock-backend.js';
import { REQUEST_TIMEOUT_MS } from '../../host/vsock/device/connection.js';
import { CONN_BUFFER_BYTES } from '../../host/vsock/device/credit.js';
import type { DeviceMetrics } from '../../host/vsock/device/metrics.js';
import { FIRST_HOST_PORT, MAX_CONNECTIONS } from '../../host/vsock/device/muxer.js';
import { OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_SEND } from '../../host/vsock/device/packet.js';
import { nativeAvailable } from '../../native/index.js';
import { eventually } from '../support/eventually.js';
import { GUEST_BUF_ALLOC, type Packet, VsockDriver } from '../support/vhost-user-driver.js';
import { skipUnlessStrict } from '../support/strict.js';

const CID = 7;
const root = mkdtempSync(join(tmpdir(), `volant-vsock-device-${process.pid}-`));
let n = 0;

interface Rig {
  spec: { vmName: string; runDir: string; vsock: { cid: number; socketPath: string } };
  backend: VsockBackend;
  driver: VsockDriver;
  metrics(): DeviceMetrics;
}

const rigs: Rig[] = [];

async function rig(opts: { driverUp?: boolean } = {}): Promise<Rig> {
  const runDir = join(root, `vm${++n}`);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(runDir, { recursive: true });
  const spec = { vmName: `vm${n}`, runDir, vsock: { cid: CID, socketPath: join(runDir, 'vsock.sock') } };
  const backend = await startVsockBackend(spec);
  const driver = new VsockDriver(CID);
  await driver.connect(vhostUserSocketPath(spec));
  if (opts.driverUp !== false) {
    assert.equal(await driver.start(), CID, 'GET_CONFIG carries the guest CID');
    driver.postRx();
  }
  const r: Rig = { spec, backend, driver, metrics: () => JSON.parse(readFileSync(vsockBackendMetricsPath(spec), 'utf8')) as DeviceMetrics };
  rigs.push(r);
  return r;
}

/** When each host client closed (recorded from the start: the device may close it before a test looks). */
const closes = new WeakMap<Socket, Promise<unknown>>();
const whenClosed = (s: Socket): Promise<unknown> => closes.get(s) ?? once(s, 'close');

/** A host client: connect to `<uds>`, send the command (and maybe bytes after it). */
function hostClient(r: Rig, command: string): Socket {
  const s = connect(r.spec.vsock.socketPath);
  closes.set(s, new Promise((resolve) => s.once('close', resolve)));
  s.on('error', () => s.destroy());
  s.write(command);
  return s;
}

function readLine(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      s.off('data', onData);
      s.pause();
      const rest = Buffer.from(buf.slice(nl + 1), 'latin1');
      if (rest.length > 0) s.unshift(rest);
      resolve(buf.slice(0, nl));
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed before a line (got ${JSON.stringify(buf)})`)));
  });
}

/** Reads exactly `count` bytes from a socket. */
function readBytes(s: Socket, count: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      have += c.length;
      if (have >= count) {
        s.off('data', onData);
        const all = Buffer.concat(chunks);
        if (all.length > count) s.unshift(all.subarray(count));
        s.pause();
        resolve(all.subarray(0, count));
      }
    };
    s.on('data', onData);
    s.resume();
    s.once('close', () => have < count && reject(new Error(`closed after ${have} of ${count} bytes`)));
  });
}

/** Opens a host-initiated connection to guest port `port` and completes it; returns the client (after OK) and the REQUEST. */
async function openFromHost(r: Rig, port: number, guestBufAlloc = GUEST_BUF_ALLOC): Promise<{ client: Socket; req: Packet }> {
  const client = hostClient(r, `CONNECT ${port}\n`);
  const req = await r.driver.next((p) => p.op === OP_REQUEST && p.dstPort === port);
  r.driver.respond(req, guestBufAlloc);
  assert.equal(await readLine(client), `OK ${req.srcPort}`);
  return { client, req };
}

async function listenAt(path: string, onConnection: (s: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    onConnection(s);
  });
  server.listen(path);
  await once(server, 'listening');
  return server;
}

const skip = skipUnlessStrict(nativeAvailable() ? false : 'the native addon is not built');

describe('vsock device back-end (scripted front-end and guest driver)', { skip }, () => {
  afterEach(async () => {
    for (const r of rigs.splice(0)) {
      r.driver.close();
      await r.backend.exited;
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('host → guest: CONNECT, REQUEST from a host port ≥ 2^30, RESPONSE, OK with that port, bytes both ways', async () => {
    const r = await rig();
    const client = hostClient(r, 'connect 1234\nearly');
    const req = await r.driver.next((p) => p.op === OP_REQUEST);
    assert.deepEqual([req.srcCid, req.dstCid, req.dstPort], [2, CID, 1234], 'keyword matched case-insensitively; to the guest CID');
    assert.ok(req.srcPort >= FIRST_HOST_PORT && req.srcPort < 2 ** 31);
    r.driver.respond(req);
    assert.equal(await readLine(client), `OK ${req.srcPort}`);
    const early = await r.driver.next((p) => p.op === OP_RW);
    assert.equal(early.payload.toString(), 'early', 'bytes after the command line belong to the stream');
    client.write('more from the host');
    assert.equal((await r.driver.next((p) => p.op === OP_RW)).payload.toString(), 'more from the host');
    r.driver.sendPacket({ srcPort: 1234, dstPort: req.srcPort, op: OP_RW, payload: Buffer.from('from the guest') });
    assert.equal((await readBytes(client, 14)).toString(), 'from the guest');
    // Guest closes: SHUTDOWN(RCV|SEND) → the device answers RST and closes the host socket.
    r.driver.sendPacket({ srcPort: 1234, dstPort: req.srcPort, op: OP_SHUTDOWN, flags: SHUTDOWN_BOTH });
    assert.equal((await r.driver.next((p) => p.op === OP_RST)).dstPort, 1234);
    client.resume();
    await whenClosed(client);
    await eventually(() => r.metrics().connections === 0);
  });

  it('refusals close the host socket without OK: RST (nothing listens), no answer in time, a malformed or over-long command', async () => {
    const r = await rig();
    const refused = hostClient(r, 'CONNECT 9\n');
    const req = await r.driver.next((p) => p.op === OP_REQUEST && p.dstPort === 9);
    r.driver.sendPacket({ srcPort: 9, dstPort: req.srcPort, op: OP_RST });
    await assert.rejects(readLine(refused), /closed before a line/);

    const started = Date.now();
    const silent = hostClient(r, 'CONNECT 10\n');
    await r.driver.next((p) => p.op === OP_REQUEST && p.dstPort === 10);
    await assert.rejects(readLine(silent), /closed before a line/);
    assert.ok(Date.now() - started >= REQUEST_TIMEOUT_MS - 100, 'closed by the request timeout');
    assert.equal((await r.driver.next((p) => p.op === OP_RST && p.dstPort === 10)).op, OP_RST, 'and the guest is told');

    for (const bad of ['HELLO 1\n', 'CONNECT x\n', `CONNECT ${'1'.repeat(40)}\n`, 'CONNECT 99999999999\n']) {
      await assert.rejects(readLine(hostClient(r, bad)), /closed before a line/, bad);
    }
    const m = await eventually(() => {
      const now = r.metrics();
      return now.handshakeFailures >= 6 && now.connections === 0 ? now : undefined;
    });
    assert.equal(m.hostConnections, 2);
  });

  it('before the guest driver is up, a host client waits out the request timeout and leaves nothing behind', async () => {
    const r = await rig({ driverUp: false });
    const started = Date.now();
    await assert.rejects(readLine(hostClient(r, 'CONNECT 8080\n')), /closed before a line/);
    assert.ok(Date.now() - started >= REQUEST_TIMEOUT_MS - 100);
    await eventually(() => r.metrics().connections === 0, { what: 'no connection waits for a guest that never heard of it' });
  });

  it('guest → host: REQUEST to CID 2 port P reaches `<uds>_P`; half-close each way; nothing listening → RST', async () => {
    const r = await rig();
    const accepted: Socket[] = [];
    const server = await listenAt(`${r.spec.vsock.socketPath}_5000`, (s) => accepted.push(s));
    try {
      r.driver.sendPacket({ srcPort: 40000, dstPort: 5000, op: OP_REQUEST });
      const resp = await r.driver.next((p) => p.dstPort === 40000);
      assert.equal(resp.op, 2, 'RESPONSE');
      const host = await eventually(() => accepted[0]);
      r.driver.sendPacket({ srcPort: 40000, dstPort: 5000, op: OP_RW, payload: Buffer.from('guest says hi') });
      assert.equal((await readBytes(host, 13)).toString(), 'guest says hi');
      // The guest stops sending: the host sees EOF and can still answer.
      r.driver.sendPacket({ srcPort: 40000, dstPort: 5000, op: OP_SHUTDOWN, flags: SHUTDOWN_SEND });
      host.resume();
      await once(host, 'end');
      host.end('host answers after EOF');
      assert.equal((await r.driver.next((p) => p.op === OP_RW && p.dstPort === 40000)).payload.toString(), 'host answers after EOF');
      // The host is done too: nothing can flow any more, so the device ends it with RST.
      assert.equal((await r.driver.next((p) => p.dstPort === 40000)).op, OP_RST);
      await eventually(() => r.metrics().connections === 0);

      r.driver.sendPacket({ srcPort: 40001, dstPort: 5001, op: OP_REQUEST });
      assert.equal((await r.driver.next((p) => p.dstPort === 40001)).op, OP_RST, 'no listener at <uds>_5001');
      // A packet for no connection is answered with RST; an RST for none is ignored.
      r.driver.sendPacket({ srcPort: 40002, dstPort: 5000, op: OP_RW, payload: Buffer.from('x') });
      assert.equal((await r.driver.next((p) => p.dstPort === 40002)).op, OP_RST);
    } finally {
      server.close();
    }
  });

  it('RST mid-stream either way: a guest reset closes the host socket; a host client that vanishes is passed on to the guest', async () => {
    const r = await rig();
    const { client, req } = await openFromHost(r, 80);
    client.write(Buffer.alloc(100_000, 1));
    await r.driver.next((p) => p.op === OP_RW);
    r.driver.sendPacket({ srcPort: 80, dstPort: req.srcPort, op: OP_RST });
    client.resume();
    await whenClosed(client);

    // A client that closes its socket: SHUTDOWN(RCV|SEND); this guest never answers, so the device resets after its timeout.
    const closing = await openFromHost(r, 81);
    closing.client.destroy();
    const shut = await r.driver.next((p) => p.op === OP_SHUTDOWN && p.dstPort === 81);
    assert.equal(shut.flags, SHUTDOWN_BOTH, 'the host closed completely: it neither receives nor sends');
    assert.equal((await r.driver.next((p) => p.op === OP_RST && p.dstPort === 81)).op, OP_RST);

    // A client that vanishes with guest bytes unread: its socket resets, and so does the connection.
    const vanishing = await openFromHost(r, 82);
    r.driver.sendPacket({ srcPort: 82, dstPort: vanishing.req.srcPort, op: OP_RW, payload: Buffer.alloc(30_000, 2) });
    await r.driver.txDone();
    vanishing.client.destroy();
    r.driver.sendPacket({ srcPort: 82, dstPort: vanishing.req.srcPort, op: OP_RW, payload: Buffer.alloc(30_000, 3) });
    assert.equal((await r.driver.next((p) => (p.op === OP_RST || p.op === OP_SHUTDOWN) && p.dstPort === 82)).dstPort, 82, 'the guest hears of it');
    await eventually(() => r.metrics().connections === 0, { timeoutMs: 15_000 });
  });

  it('credit, slow host reader: the device holds at most its buffer, tells the guest, and resets a guest that sends past it', async () => {
    const r = await rig();
    let host: Socket | undefined;
    const server = await listenAt(`${r.spec.vsock.socketPath}_6000`, (s) => {
      host = s;
      s.pause(); // never reads
    });
    try {
      r.driver.sendPacket({ srcPort: 41000, dstPort: 6000, op: OP_REQUEST });
      const resp = await r.driver.next((p) => p.dstPort === 41000);
      assert.equal(resp.bufAlloc, CONN_BUFFER_BYTES, 'the device advertises its per-connection buffer');
      await eventually(() => host);
      // Send within credit, as Linux would, until the device's credit stops growing.
      let sent = 0;
      let peerFwd = resp.fwdCnt;
      const chunk = Buffer.alloc(60_000, 3);
      for (let stalled = 0; stalled < 3; ) {
        const credit = CONN_BUFFER_BYTES - (sent - peerFwd);
        if (credit >= chunk.length) {
          r.driver.sendPacket({ srcPort: 41000, dstPort: 6000, op: OP_RW, payload: chunk });
          sent += chunk.length;
          await r.driver.txDone();
          continue;
        }
        // Ask for credit; a stalled host reader means the answer stops moving.
        r.driver.sendPacket({ srcPort: 41000, dstPort: 6000, op: OP_CREDIT_REQUEST });
        const update = await r.driver.next((p) => p.dstPort === 41000 && p.op === OP_CREDIT_UPDATE);
        if (update.fwdCnt === peerFwd) stalled++;
        peerFwd = update.fwdCnt;
      }
      const m = await eventually(() => r.metrics());
      assert.ok(sent - peerFwd <= CONN_BUFFER_BYTES, 'never more in the device than its buffer');
      assert.ok(m.backlogBytes <= sent, JSON.stringify(m));
      console.log(`  slow host reader: guest sent ${sent} bytes, host socket took ${peerFwd}, device holds ${sent - peerFwd} (buffer ${CONN_BUFFER_BYTES})`);
      // A guest that ignores its credit is reset.
      r.driver.sendPacket({ srcPort: 41000, dstPort: 6000, op: OP_RW, payload: chunk });
      assert.equal((await r.driver.next((p) => p.dstPort === 41000 && p.op === OP_RST)).op, OP_RST);
      await eventually(() => r.metrics().creditViolations === 1);
    } finally {
      host?.destroy();
      server.close();
    }
  });

  it('credit, slow guest reader: nothing past the guest\'s credit, then a CREDIT_REQUEST; an update lets more through', async () => {
    const r = await rig();
    const guestBuf = 64 * 1024;
    const { client, req } = await openFromHost(r, 90, guestBuf);
    const total = 4 * 1024 * 1024;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i++) data[i] = (i * 7) & 0xff;
    let flushed = false;
    client.write(data, () => {
      flushed = true;
    });
    let got = 0;
    const received: Buffer[] = [];
    const takeData = async (): Promise<void> => {
      for (;;) {
        const p = await r.driver.next((x) => x.dstPort === 90 && (x.op === OP_RW || x.op === OP_CREDIT_REQUEST));
        if (p.op === OP_CREDIT_REQUEST) return;
        received.push(p.payload);
        got += p.payload.length;
        if (r.driver.rxBuffersLeft() < 64) r.driver.postRx(128);
      }
    };
    await takeData();
    assert.equal(got, guestBuf, 'exactly the credit the guest gave, then a CREDIT_REQUEST');
    assert.equal(flushed, false, 'the host writer is held back (its data waits in its own socket)');
    // The guest reads and says so; data resumes, in credit-sized steps, until all is through.
    while (got < total) {
      r.driver.sendPacket({ srcPort: 90, dstPort: req.srcPort, op: OP_CREDIT_UPDATE, bufAlloc: guestBuf, fwdCnt: got });
      await takeData().catch(() => undefined);
      if (got === total) break;
    }
    assert.ok(Buffer.concat(received).equals(data), '4 MiB arrive intact and in order');
    client.destroy();
  });

  it('a malformed TX chain is refused and the device goes on', async () => {
    const r = await rig();
    r.driver.sendMalformed();
    await eventually(() => r.metrics().txRefusedChains === 1);
    r.driver.sendPacket({ srcPort: 42000, dstPort: 7000, op: OP_REQUEST });
    assert.equal((await r.driver.next((p) => p.dstPort === 42000)).op, OP_RST, 'still serving');
    assert.match(readFileSync(join(r.spec.runDir, 'vsock-device.log'), 'utf8'), /TX chain refused: descriptor 0 .*outside guest memory/);
  });

  it(`at most ${MAX_CONNECTIONS} connections: the next client is accepted and closed at once`, async () => {
    const r = await rig();
    const clients: Socket[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) clients.push(connect(r.spec.vsock.socketPath).on('error', () => undefined));
    await eventually(() => r.metrics().connections === MAX_CONNECTIONS, { timeoutMs: 30_000 });
    const extra = connect(r.spec.vsock.socketPath);
    const extraClosed = new Promise((resolve) => extra.once('close', resolve));
    extra.on('error', () => undefined);
    extra.resume();
    await extraClosed;
    assert.equal(r.metrics().overLimit >= 1 || (await eventually(() => r.metrics().overLimit >= 1)), true);
    for (const c of clients) c.destroy();
    await eventually(() => r.metrics().connections === 0, { timeoutMs: 30_000 });
  });

  it('when the front-end goes away the process exits and removes its sockets', async () => {
    const r = await rig();
    assert.ok(existsSync(r.spec.vsock.socketPath));
    assert.equal(existsSync(vhostUserSocketPath(r.spec)), false, 'the vhost-user socket went when QEMU connected');
    r.driver.disconnect();
    assert.deepEqual(await r.backend.exited, { code: 0, signal: null });
    assert.equal(existsSync(r.spec.vsock.socketPath), false);
    rigs.splice(rigs.indexOf(r), 1);
    r.driver.close();
  });
});
