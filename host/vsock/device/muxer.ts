/**
 * The host side of the vsock device: the hybrid-vsock socket of Cloud Hypervisor and
 * Firecracker, and the table of connections it carries.
 *
 *   host → guest  a client connects to `<uds>`, writes `CONNECT <port>\n` (at most 32 bytes,
 *                 within HANDSHAKE_TIMEOUT_MS); the device sends the guest a REQUEST from a host
 *                 port it allocates (2^30 upward); on the guest's RESPONSE the client reads
 *                 `OK <hostport>\n` and then raw bytes; on RST (nothing listens) or no answer
 *                 within REQUEST_TIMEOUT_MS the client's socket is closed without `OK`.
 *   guest → host  a REQUEST to (CID 2, port P) makes the device connect to `<uds>_P`; a refused
 *                 connect (nothing listens) is answered with RST.
 *
 * Data path (the reason this is not a pair of net.Sockets):
 *  - guest → host: an RW packet's payload is written from guest memory straight to the host
 *    socket; what the socket does not take goes to the connection's backlog (backlog.ts), which
 *    the guest's credit bounds.
 *  - host → guest: the host socket is read straight into a guest RX buffer, and only as far as
 *    the guest's credit allows; with no credit or no RX buffer the socket is simply not read.
 *  Host sockets are registered edge-triggered: a connection remembers "readable" until a read
 *  says EAGAIN, and waits for the next edge after that.
 *
 * Scheduling: connections with something for the guest (a control packet, readable data with
 * credit) wait in `#rxQueue`, FIFO, one packet per turn so no connection starves the others;
 * RSTs for packets that match no connection wait in a small ring of their own. The device
 * (device.ts) pulls packets with `fillRx` as the guest posts RX buffers.
 *
 * What each connection does next is decided by connection.ts `step`; this file carries it out.
 * Limits: MAX_CONNECTIONS per device (more are accepted and closed at once, as both VMMs do),
 * ORPHAN_RST_QUEUE packets of RST for unknown connections (more are dropped: the guest times out).
 */

import { EAGAIN, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, type DeviceIo, errnoName } from '../../../native/device-io.js';
import { guestInitiatedSocketPath, HANDSHAKE_MAX_BYTES, HOST_CID, parseConnectLine } from '../../../shared/vsock.js';
import { Backlog } from './backlog.js';
import {
  acceptsGuestData,
  carriesHostData,
  type ConnControl,
  type ConnEvent,
  type ConnStep,
  HOST_CLOSE,
  HOST_SHUT_WRITE,
  HOST_WRITE_OK,
  initialControl,
  SEND_CREDIT_UPDATE,
  SEND_REQUEST,
  SEND_RESPONSE,
  SEND_RST,
  SEND_SHUTDOWN,
  step,
  TIMEOUT_MS,
} from './connection.js';
import { CONN_BUFFER_BYTES, creditUpdateDue, peerCredit, withinOurBuffer } from './credit.js';
import type { DeviceMetrics } from './metrics.js';
import {
  ChainCursor,
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
  PacketHeader,
  TYPE_STREAM,
  writeHeader,
} from './packet.js';
import type { Reactor } from './reactor.js';
import type { DescriptorChain } from './virtqueue.js';
import type { Logger } from '../../log/logger.js';

/** Connections per device, as in Cloud Hypervisor and Firecracker. */
export const MAX_CONNECTIONS = 1023;
/** RSTs for unknown connections waiting for an RX buffer. */
export const ORPHAN_RST_QUEUE = 256;
/** The first host-side port of a host-initiated connection (Firecracker and Cloud Hypervisor). */
export const FIRST_HOST_PORT = 2 ** 30;
const HOST_PORT_LIMIT = 2 ** 31;
/** How often connection timers are checked while any runs. */
export const TIMER_SWEEP_MS = 100;
/** Listen backlog of the hybrid socket: a burst of MAX_CONNECTIONS clients must not see EAGAIN. */
export const HYBRID_LISTEN_BACKLOG = 1024;

const HOST_EVENTS = (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) >>> 0;

/**
 * Pending packets for the guest, in the order `#produce` serves them (data, RW, comes between
 * REQUEST and SHUTDOWN and is not a bit: it is "host readable, with credit").
 */
const RX_RST = 1;
const RX_RESPONSE = 2;
const RX_REQUEST = 4;
const RX_SHUTDOWN = 16;
const RX_CREDIT_REQUEST = 32;
const RX_CREDIT_UPDATE = 64;

const NEWLINE = 10;
/** Connection endings worth a log line (the rest are normal life: refusals while a guest boots, closes). */
const NOTABLE_ENDINGS = /credit|malformed|timed out|unexpected|unknown/;

class Connection {
  control: ConnControl;
  fd: number;
  token = -1;
  localPort = 0;
  peerPort = 0;
  /** RX_* bits. */
  pending = 0;
  inRxQueue = false;
  /** The host socket may have bytes (edge seen, no EAGAIN since). */
  hostReadable = false;
  /** EPOLLHUP seen: the host closed its socket completely. */
  hostHangup = false;
  /** A CREDIT_REQUEST went out and no credit has come since. */
  creditRequested = false;
  /** The guest has heard of this connection (our REQUEST went out, or it sent one). */
  guestKnows: boolean;
  /** Credit counters (credit.ts): what we sent the guest, what it consumed, its buffer. */
  sentToPeer = 0;
  peerFwdCnt = 0;
  peerBufAlloc = 0;
  /** What the guest sent us, what we forwarded to the host, and the fwd_cnt it last heard. */
  received = 0;
  fwdCnt = 0;
  lastFwdCntSent = 0;
  readonly backlog = new Backlog(CONN_BUFFER_BYTES);
  /** `CONNECT <port>\n` as it arrives, then the bytes that came after it in the same read. */
  line: Uint8Array | undefined;
  lineLength = 0;
  earlyStart = 0;
  expiresAt = 0;

  constructor(fd: number, state: 'handshake' | 'peer-init') {
    this.fd = fd;
    this.control = initialControl(state);
    this.guestKnows = state === 'peer-init';
  }

  earlyBytes(): number {
    return this.line === undefined ? 0 : this.lineLength - this.earlyStart;
  }
}

export interface MuxerOptions {
  /** The hybrid socket `<uds>`; guest-initiated connections go to `<uds>_<port>`. */
  socketPath: string;
  guestCid: number;
  io: DeviceIo;
  reactor: Reactor;
  metrics: DeviceMetrics;
  log: Logger;
}

export class Muxer {
  readonly #o: MuxerOptions;
  readonly #io: DeviceIo;
  /** local port → peer port → connection. */
  readonly #table = new Map<number, Map<number, Connection>>();
  /** Host clients still sending `CONNECT`: not in the table yet (no ports). */
  readonly #handshaking = new Set<Connection>();
  /** Connections in `#table`. */
  #inTable = 0;
  readonly #usedHostPorts = new Set<number>();
  readonly #timed = new Set<Connection>();
  readonly #rxQueue: Connection[] = [];
  #rxHead = 0;
  readonly #orphanPorts = new Float64Array(ORPHAN_RST_QUEUE * 2);
  #orphanHead = 0;
  #orphanCount = 0;
  #nextHostPort = FIRST_HOST_PORT;
  #listenFd = -1;
  #listenToken = -1;
  #sweep: NodeJS.Timeout | undefined;
  readonly #header = new PacketHeader();
  readonly #cursor = new ChainCursor();
  readonly #okLine = new Uint8Array(32);

  constructor(opts: MuxerOptions) {
    this.#o = opts;
    this.#io = opts.io;
  }

  /** Listens on the hybrid socket (the path must not exist). */
  listen(): void {
    this.#listenFd = this.#io.listenUnixSocket(this.#o.socketPath, HYBRID_LISTEN_BACKLOG);
    this.#listenToken = this.#o.reactor.add(this.#listenFd, EPOLLIN, () => this.#accept());
  }

  /** Something is waiting for an RX buffer. */
  hasRx(): boolean {
    return this.#orphanCount > 0 || this.#rxHead < this.#rxQueue.length;
  }

  /** Closes every connection (the guest's driver went away) without telling the guest. */
  resetAll(why: string): void {
    const all = [...this.#handshaking];
    for (const byLocal of this.#table.values()) all.push(...byLocal.values());
    if (all.length > 0) this.#o.log.info({ connections: all.length }, `dropping ${all.length} connection(s): ${why}`);
    for (const c of all) this.#remove(c);
    this.#rxQueue.length = 0;
    this.#rxHead = 0;
    this.#orphanCount = 0;
  }

  /** Stops listening and closes everything; the hybrid socket file is removed by the caller. */
  close(): void {
    this.resetAll('device closing');
    if (this.#listenFd >= 0) {
      this.#o.reactor.remove(this.#listenFd, this.#listenToken, true);
      this.#io.closeFd(this.#listenFd);
      this.#listenFd = -1;
    }
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  // ------------------------------------------------------------------------------------------
  // Guest → device (TX queue)

  /** One packet the guest sent: `header` is read, the payload follows it in `chain`. */
  onGuestPacket(h: PacketHeader, chain: DescriptorChain): void {
    const m = this.#o.metrics;
    m.txPackets++;
    if (h.srcCid !== this.#o.guestCid || h.dstCid !== HOST_CID) {
      m.txDropped++;
      return;
    }
    if (h.type !== TYPE_STREAM || h.len > MAX_PAYLOAD_BYTES || (h.op === OP_RW && h.len > chain.readableBytes - HEADER_BYTES)) {
      m.txDropped++;
      const c = this.#find(h.dstPort, h.srcPort);
      if (c) this.#event(c, { kind: 'violation', why: 'malformed packet from the guest' });
      else if (h.op !== OP_RST) this.#orphanRst(h.dstPort, h.srcPort);
      return;
    }
    const c = this.#find(h.dstPort, h.srcPort);
    if (c === undefined) {
      if (h.op === OP_REQUEST) this.#acceptGuestRequest(h);
      else if (h.op !== OP_RST) this.#orphanRst(h.dstPort, h.srcPort);
      return;
    }
    const creditBefore = peerCredit(c.peerBufAlloc, c.sentToPeer, c.peerFwdCnt);
    c.peerBufAlloc = h.bufAlloc;
    c.peerFwdCnt = h.fwdCnt;
    if (h.op === OP_RST) m.resetsReceived++;
    if (h.op === OP_RW && acceptsGuestData(c.control)) {
      if (h.len > 0) this.#guestData(c, chain, h.len);
    } else {
      this.#event(c, { kind: 'guest', op: h.op, flags: h.flags });
    }
    if (c.control.state === 'closed') return;
    if (creditBefore === 0 && peerCredit(c.peerBufAlloc, c.sentToPeer, c.peerFwdCnt) > 0) c.creditRequested = false;
    this.#schedule(c);
  }

  #acceptGuestRequest(h: PacketHeader): void {
    const m = this.#o.metrics;
    if (this.#connectionCount() >= MAX_CONNECTIONS) {
      m.overLimit++;
      m.guestRefused++;
      this.#orphanRst(h.dstPort, h.srcPort);
      return;
    }
    let fd: number;
    try {
      fd = this.#io.connectUnixSocket(guestInitiatedSocketPath(this.#o.socketPath, h.dstPort));
    } catch {
      fd = -1;
    }
    if (fd < 0) {
      m.guestRefused++;
      this.#orphanRst(h.dstPort, h.srcPort);
      return;
    }
    const c = new Connection(fd, 'peer-init');
    c.localPort = h.dstPort;
    c.peerPort = h.srcPort;
    c.peerBufAlloc = h.bufAlloc;
    c.peerFwdCnt = h.fwdCnt;
    c.pending = RX_RESPONSE;
    this.#insert(c);
    if (!this.#register(c)) return;
    m.guestConnections++;
    this.#schedule(c);
  }

  /** RW payload → host socket (then backlog). */
  #guestData(c: Connection, chain: DescriptorChain, len: number): void {
    const m = this.#o.metrics;
    if (!withinOurBuffer(CONN_BUFFER_BYTES, c.received, c.fwdCnt, len)) {
      m.creditViolations++;
      this.#event(c, { kind: 'violation', why: 'the guest sent past its credit' });
      return;
    }
    c.received = (c.received + len) >>> 0;
    m.txBytes += len;
    const cursor = this.#cursor;
    cursor.seek(chain, 0, HEADER_BYTES, chain.readableCount);
    let left = len;
    let direct = c.backlog.size === 0;
    for (let s = cursor.segment, within = cursor.within; s < chain.readableCount && left > 0; s++, within = 0) {
      const bytes = chain.bytes[s]!;
      const at = chain.offsets[s]! + within;
      const take = Math.min(chain.lengths[s]! - within, left);
      left -= take;
      let written = 0;
      if (direct) {
        const n = this.#io.writeFrom(c.fd, bytes, at, take);
        if (n < 0 && n !== -EAGAIN) {
          this.#event(c, { kind: 'host-error' });
          return;
        }
        written = Math.max(n, 0);
        c.fwdCnt = (c.fwdCnt + written) >>> 0;
        if (written < take) direct = false;
      }
      if (written < take) {
        c.backlog.push(bytes, at + written, take - written);
        m.backlogBytes += take - written;
      }
    }
    if (c.backlog.size > 0) c.control = { ...c.control, backlog: true };
    if (creditUpdateDue(CONN_BUFFER_BYTES, c.received, c.fwdCnt, c.lastFwdCntSent)) c.pending |= RX_CREDIT_UPDATE;
  }

  // ------------------------------------------------------------------------------------------
  // Device → guest (RX queue)

  /** Writes the next packet into `chain`; returns the bytes written (0: nothing after all). */
  fillRx(chain: DescriptorChain): number {
    if (chain.writableBytes < HEADER_BYTES) return 0;
    if (this.#orphanCount > 0) {
      const i = this.#orphanHead;
      this.#orphanHead = (i + 1) % ORPHAN_RST_QUEUE;
      this.#orphanCount--;
      const h = this.#header.set(OP_RST, this.#orphanPorts[2 * i]!, this.#orphanPorts[2 * i + 1]!, HOST_CID, this.#o.guestCid);
      h.bufAlloc = 0;
      h.fwdCnt = 0;
      writeHeader(chain, h);
      this.#o.metrics.resetsSent++;
      this.#countRx(0);
      return HEADER_BYTES;
    }
    // Each queued connection gets one chance per call: one with nothing to give after all (its
    // socket said EAGAIN, the buffer has no room for data) waits for the next flush.
    for (let budget = this.#rxQueue.length - this.#rxHead; budget > 0 && this.#rxHead < this.#rxQueue.length; budget--) {
      const c = this.#rxQueue[this.#rxHead]!;
      this.#rxHead++;
      c.inRxQueue = false;
      const written = c.control.state === 'closed' ? 0 : this.#produce(c, chain);
      if (c.control.state !== 'closed') this.#schedule(c);
      this.#compactRxQueue();
      if (written > 0) return written;
    }
    return 0;
  }

  #compactRxQueue(): void {
    if (this.#rxHead === this.#rxQueue.length) {
      this.#rxQueue.length = 0;
      this.#rxHead = 0;
    } else if (this.#rxHead > 1024 && this.#rxHead * 2 > this.#rxQueue.length) {
      this.#rxQueue.splice(0, this.#rxHead);
      this.#rxHead = 0;
    }
  }

  /** One packet from connection `c` into `chain`, by priority; 0 when it had nothing after all. */
  #produce(c: Connection, chain: DescriptorChain): number {
    const h = this.#header.set(0, c.localPort, c.peerPort, HOST_CID, this.#o.guestCid);
    if (c.pending & RX_RST) {
      c.pending = 0;
      h.op = OP_RST;
      this.#o.metrics.resetsSent++;
      this.#emit(c, chain, 0);
      this.#remove(c);
      return HEADER_BYTES;
    }
    if (c.pending & RX_RESPONSE) {
      c.pending &= ~RX_RESPONSE;
      h.op = OP_RESPONSE;
      this.#emit(c, chain, 0);
      this.#event(c, { kind: 'response-sent' });
      return HEADER_BYTES;
    }
    if (c.pending & RX_REQUEST) {
      c.pending &= ~RX_REQUEST;
      c.guestKnows = true;
      h.op = OP_REQUEST;
      this.#emit(c, chain, 0);
      return HEADER_BYTES;
    }
    if (this.#wantsData(c) && chain.writableBytes > HEADER_BYTES) {
      const credit = peerCredit(c.peerBufAlloc, c.sentToPeer, c.peerFwdCnt);
      if (credit === 0) {
        if (!c.creditRequested) {
          c.creditRequested = true;
          c.pending |= RX_CREDIT_REQUEST;
        }
      } else {
        const n = this.#readHost(c, chain, Math.min(credit, MAX_PAYLOAD_BYTES, chain.writableBytes - HEADER_BYTES));
        if (n > 0) {
          h.op = OP_RW;
          this.#emit(c, chain, n);
          return HEADER_BYTES + n;
        }
        if (n === 0) this.#event(c, { kind: 'host-eof', hangup: c.hostHangup });
        else if (n !== -EAGAIN) this.#event(c, { kind: 'host-error' });
        if (c.control.state === 'closed') return 0;
        if (c.pending & RX_RST) return this.#produce(c, chain);
      }
    }
    if (c.pending & RX_SHUTDOWN) {
      c.pending &= ~RX_SHUTDOWN;
      h.op = OP_SHUTDOWN;
      h.flags = c.control.localShutdown;
      this.#emit(c, chain, 0);
      return HEADER_BYTES;
    }
    if (c.pending & RX_CREDIT_REQUEST) {
      c.pending &= ~RX_CREDIT_REQUEST;
      h.op = OP_CREDIT_REQUEST;
      this.#emit(c, chain, 0);
      return HEADER_BYTES;
    }
    if (c.pending & RX_CREDIT_UPDATE) {
      h.op = OP_CREDIT_UPDATE;
      this.#emit(c, chain, 0);
      return HEADER_BYTES;
    }
    return 0;
  }

  /** Finishes the header for `c` (credit fields, length), writes it and counts the packet. */
  #emit(c: Connection, chain: DescriptorChain, payload: number): void {
    const h = this.#header;
    h.len = payload;
    h.bufAlloc = CONN_BUFFER_BYTES;
    h.fwdCnt = c.fwdCnt;
    writeHeader(chain, h);
    c.lastFwdCntSent = c.fwdCnt;
    c.pending &= ~RX_CREDIT_UPDATE;
    c.sentToPeer = (c.sentToPeer + payload) >>> 0;
    this.#countRx(payload);
  }

  #countRx(payload: number): void {
    const m = this.#o.metrics;
    m.rxPackets++;
    m.rxBytes += payload;
  }

  #wantsData(c: Connection): boolean {
    return carriesHostData(c.control) && (c.hostReadable || c.earlyBytes() > 0);
  }

  /**
   * Reads at most `max` bytes for the guest into the payload area of `chain`: first what came
   * after the `CONNECT` line, then the socket. Returns bytes (> 0), 0 at end of stream, or a
   * negative errno (-EAGAIN: nothing now, and `hostReadable` is cleared).
   */
  #readHost(c: Connection, chain: DescriptorChain, max: number): number {
    const cursor = this.#cursor;
    cursor.seek(chain, chain.readableCount, HEADER_BYTES, chain.count);
    let total = 0;
    let s = cursor.segment;
    let within = cursor.within;
    while (s < chain.count && total < max) {
      const room = Math.min(chain.lengths[s]! - within, max - total);
      const bytes = chain.bytes[s]!;
      const at = chain.offsets[s]! + within;
      const early = c.earlyBytes();
      let n: number;
      if (early > 0) {
        n = Math.min(early, room);
        bytes.set(c.line!.subarray(c.earlyStart, c.earlyStart + n), at);
        c.earlyStart += n;
      } else {
        if (!c.hostReadable) break;
        n = this.#io.readInto(c.fd, bytes, at, room);
        if (n <= 0) {
          if (n === -EAGAIN) c.hostReadable = false;
          return total > 0 ? total : n;
        }
      }
      total += n;
      within += n;
      if (within >= chain.lengths[s]!) {
        s++;
        within = 0;
      } else if (early === 0) {
        // A short read: the socket had no more for now. `hostReadable` stays set (an EOF that
        // came with this edge is only seen by the next read).
        break;
      }
    }
    return total;
  }

  // ------------------------------------------------------------------------------------------
  // Host sockets

  #accept(): void {
    const m = this.#o.metrics;
    for (;;) {
      const fd = this.#io.acceptConnection(this.#listenFd);
      if (fd === -EAGAIN) return;
      if (fd < 0) {
        this.#o.log.warn({ errno: errnoName(fd) }, `accept on ${this.#o.socketPath}: ${errnoName(fd)}`);
        return;
      }
      if (this.#connectionCount() >= MAX_CONNECTIONS) {
        m.overLimit++;
        this.#io.closeFd(fd);
        continue;
      }
      const c = new Connection(fd, 'handshake');
      c.line = new Uint8Array(HANDSHAKE_MAX_BYTES);
      this.#handshaking.add(c);
      if (!this.#register(c)) continue;
      this.#setTimer(c, 'handshake');
    }
  }

  /** Adds the host socket to epoll; false (and the connection gone) when that fails. */
  #register(c: Connection): boolean {
    try {
      c.token = this.#o.reactor.add(c.fd, HOST_EVENTS, (events) => this.#onHostEvents(c, events));
      this.#o.metrics.connections = this.#connectionCount();
      return true;
    } catch (e) {
      this.#o.log.warn({ err: e }, `epoll add: ${(e as Error).message}`);
      this.#remove(c);
      return false;
    }
  }

  #onHostEvents(c: Connection, events: number): void {
    if (c.fd < 0) return;
    if (events & EPOLLHUP) c.hostHangup = true;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) c.hostReadable = true;
    if (c.control.state === 'handshake') {
      this.#readConnectLine(c);
      return;
    }
    if (events & EPOLLOUT && c.backlog.size > 0) this.#flushBacklog(c);
    if (c.control.state === 'closed' || c.control.state === 'closing') return;
    // A host that closed completely while its bytes cannot be read for the guest: pass it on now.
    // (While data is carried, or before RESPONSE went out, the data path reads up to the EOF.)
    const state = c.control.state;
    if (c.hostHangup && (state === 'local-init' || (state === 'established' && !carriesHostData(c.control)))) this.#event(c, { kind: 'host-eof', hangup: true });
    this.#schedule(c);
  }

  #readConnectLine(c: Connection): void {
    const line = c.line!;
    while (c.lineLength < line.length) {
      const n = this.#io.readInto(c.fd, line, c.lineLength, line.length - c.lineLength);
      if (n === -EAGAIN) {
        c.hostReadable = false;
        return;
      }
      if (n <= 0) {
        this.#handshakeFailed(c);
        return;
      }
      const from = c.lineLength;
      c.lineLength += n;
      const nl = line.indexOf(NEWLINE, from);
      if (nl >= 0 && nl < c.lineLength) {
        let port: number;
        try {
          port = parseConnectLine(Buffer.from(line.buffer, line.byteOffset, nl).toString('latin1'));
        } catch {
          this.#handshakeFailed(c);
          return;
        }
        c.earlyStart = nl + 1;
        this.#handshaking.delete(c);
        c.localPort = this.#allocateHostPort();
        c.peerPort = port;
        this.#insert(c);
        this.#o.metrics.hostConnections++;
        this.#event(c, { kind: 'connect-line' });
        return;
      }
    }
    this.#handshakeFailed(c);
  }

  #handshakeFailed(c: Connection): void {
    this.#o.metrics.handshakeFailures++;
    this.#remove(c);
  }

  #flushBacklog(c: Connection): void {
    const n = c.backlog.flush(c.fd, this.#io.writeFrom);
    if (n < 0) {
      this.#event(c, { kind: 'host-error' });
      return;
    }
    c.fwdCnt = (c.fwdCnt + n) >>> 0;
    if (creditUpdateDue(CONN_BUFFER_BYTES, c.received, c.fwdCnt, c.lastFwdCntSent)) c.pending |= RX_CREDIT_UPDATE;
    if (c.backlog.size === 0) this.#event(c, { kind: 'drained' });
  }

  #writeOk(c: Connection): boolean {
    const text = `OK ${c.localPort}\n`;
    for (let i = 0; i < text.length; i++) this.#okLine[i] = text.charCodeAt(i);
    return this.#io.writeFrom(c.fd, this.#okLine, 0, text.length) === text.length;
  }

  // ------------------------------------------------------------------------------------------
  // State machine glue

  #event(c: Connection, e: ConnEvent): void {
    this.#apply(c, step(c.control, e));
  }

  #apply(c: Connection, s: ConnStep): void {
    const m = this.#o.metrics;
    const before = c.control.state;
    c.control = s.next;
    if (s.send & SEND_REQUEST) c.pending |= RX_REQUEST;
    if (s.send & SEND_RESPONSE) c.pending |= RX_RESPONSE;
    if (s.send & SEND_SHUTDOWN) c.pending |= RX_SHUTDOWN;
    if (s.send & SEND_CREDIT_UPDATE) c.pending |= RX_CREDIT_UPDATE;
    if (s.send & SEND_RST) c.pending = RX_RST;
    if (s.host & HOST_WRITE_OK && !this.#writeOk(c)) {
      this.#event(c, { kind: 'host-error' });
      return;
    }
    if (s.host & HOST_SHUT_WRITE && c.fd >= 0) this.#io.shutdownWrite(c.fd);
    if (s.host & HOST_CLOSE) {
      if (before === 'local-init' || before === 'handshake') m.handshakeFailures++;
      this.#closeHost(c);
    }
    if (s.timer === 'none') this.#clearTimer(c);
    else if (s.timer !== 'keep') this.#setTimer(c, s.timer);
    if (s.ends !== undefined && NOTABLE_ENDINGS.test(s.ends)) this.#o.log.info({ local_port: c.localPort, peer_port: c.peerPort }, `connection ${c.localPort}→${c.peerPort} ends: ${s.ends}`);
    // An RST for a connection the guest never heard of (its REQUEST never left, e.g. while the
    // guest's driver is not up yet) is not sent: the connection just goes.
    if (c.control.state === 'closed' || (c.control.state === 'closing' && !c.guestKnows)) this.#remove(c);
    else this.#schedule(c);
  }

  #schedule(c: Connection): void {
    if (c.inRxQueue || c.control.state === 'closed' || c.control.state === 'handshake') return;
    const work = c.pending !== 0 || (this.#wantsData(c) && (peerCredit(c.peerBufAlloc, c.sentToPeer, c.peerFwdCnt) > 0 || !c.creditRequested));
    if (!work) return;
    c.inRxQueue = true;
    this.#rxQueue.push(c);
  }

  #orphanRst(localPort: number, peerPort: number): void {
    if (this.#orphanCount >= ORPHAN_RST_QUEUE) return;
    const i = (this.#orphanHead + this.#orphanCount) % ORPHAN_RST_QUEUE;
    this.#orphanPorts[2 * i] = localPort;
    this.#orphanPorts[2 * i + 1] = peerPort;
    this.#orphanCount++;
  }

  // ------------------------------------------------------------------------------------------
  // Table, ports, timers

  #find(local: number, peer: number): Connection | undefined {
    return this.#table.get(local)?.get(peer);
  }

  #insert(c: Connection): void {
    let byPeer = this.#table.get(c.localPort);
    if (byPeer === undefined) {
      byPeer = new Map();
      this.#table.set(c.localPort, byPeer);
    }
    byPeer.set(c.peerPort, c);
    this.#inTable++;
    this.#o.metrics.connections = this.#connectionCount();
  }

  #remove(c: Connection): void {
    this.#closeHost(c);
    this.#clearTimer(c);
    c.control = { ...c.control, state: 'closed' };
    c.pending = 0;
    this.#handshaking.delete(c);
    const byPeer = this.#table.get(c.localPort);
    if (byPeer?.get(c.peerPort) === c) {
      byPeer.delete(c.peerPort);
      this.#inTable--;
      if (byPeer.size === 0) this.#table.delete(c.localPort);
      if (c.localPort >= FIRST_HOST_PORT && c.localPort < HOST_PORT_LIMIT) this.#usedHostPorts.delete(c.localPort);
    }
    this.#o.metrics.connections = this.#connectionCount();
  }

  #closeHost(c: Connection): void {
    if (c.fd < 0) return;
    this.#o.reactor.remove(c.fd, c.token, true);
    this.#io.closeFd(c.fd);
    c.fd = -1;
    c.hostReadable = false;
    c.backlog.clear();
  }

  #connectionCount(): number {
    return this.#handshaking.size + this.#inTable;
  }

  #allocateHostPort(): number {
    for (;;) {
      const port = this.#nextHostPort;
      this.#nextHostPort = port + 1 >= HOST_PORT_LIMIT ? FIRST_HOST_PORT : port + 1;
      if (!this.#usedHostPorts.has(port)) {
        this.#usedHostPorts.add(port);
        return port;
      }
    }
  }

  #setTimer(c: Connection, kind: keyof typeof TIMEOUT_MS): void {
    c.expiresAt = Date.now() + TIMEOUT_MS[kind];
    this.#timed.add(c);
    this.#sweep ??= setInterval(() => this.#sweepTimers(), TIMER_SWEEP_MS).unref();
  }

  #clearTimer(c: Connection): void {
    c.expiresAt = 0;
    this.#timed.delete(c);
    if (this.#timed.size === 0 && this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  #sweepTimers(): void {
    const now = Date.now();
    for (const c of [...this.#timed]) {
      if (c.expiresAt === 0 || c.expiresAt > now) continue;
      this.#o.metrics.timeouts++;
      this.#clearTimer(c);
      if (c.control.state === 'handshake') this.#handshakeFailed(c);
      else this.#event(c, { kind: 'timeout' });
    }
    this.#o.reactor.requestFlush();
  }
}
