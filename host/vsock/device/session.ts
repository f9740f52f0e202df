/**
 * One vhost-user session: QEMU (the front-end) drives the device over a Unix socket, and this
 * file answers it (message format: vhost-user.ts). The order QEMU 7.2 uses with
 * vhost-user-vsock-pci:
 *
 *   realize   GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, GET_FEATURES,
 *             SET_VRING_CALL/ERR, GET_CONFIG (the guest CID, cached by QEMU from now on)
 *   driver up SET_FEATURES, SET_MEM_TABLE (one fd per region), then per ring SET_VRING_NUM,
 *             SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, and SET_VRING_ENABLE 1; SET_VRING_CALL
 *             again whenever QEMU swaps notifiers (each replaces the last)
 *   shut down SET_VRING_ENABLE 0, GET_VRING_BASE (stops the ring; the answer is the next avail
 *             index), then the socket closes
 *
 * Ring states: stopped until its kick fd arrives, stopped again by GET_VRING_BASE; with
 * VHOST_USER_F_PROTOCOL_FEATURES negotiated also disabled until SET_VRING_ENABLE 1. The device
 * gets a ring only while it is started and enabled.
 *
 * Memory: each region fd is mapped MAP_SHARED (guest-memory.ts explains the chunks) and closed;
 * a new table replaces the old one and re-seats running rings. QEMU must back guest RAM with a
 * shared memfd (`memory-backend-memfd,share=on`): a private mapping would hide every guest write
 * from this process (the CID still reads fine, the data path is dead).
 *
 * Failures: anything malformed or unsupported ends the session (the caller exits the process, the
 * launcher sees it and the VM fails) after answering "failed" when QEMU asked for a reply: a
 * half-working device is worse than a visible failure.
 */

import { EAGAIN, type DeviceIo, errnoName, EPOLLIN } from '../../../native/device-io.js';
import type { VsockDevice } from './device.js';
import { GuestMemory } from './guest-memory.js';
import type { Reactor } from './reactor.js';
import {
  configPayload,
  decodeConfigRequest,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeReply,
  FLAG_NEED_REPLY,
  type MessageHeader,
  MessageReader,
  OFFERED_FEATURES,
  OFFERED_PROTOCOL_FEATURES,
  PROTOCOL_F_REPLY_ACK,
  REQUEST_NAMES,
  Req,
  u64Payload,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VhostUserProtocolError,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
  vringStatePayload,
  vsockConfigSpace,
} from './vhost-user.js';
import { locateRing, MAX_QUEUE_SIZE, SplitQueue } from './virtqueue.js';
import type { Logger } from '../../log/logger.js';

/** The queues a vsock back-end serves: RX and TX (QEMU keeps the event queue). */
export const QUEUES = 2;

interface Vring {
  num: number;
  base: number;
  addr: { desc: number; avail: number; used: number } | undefined;
  kickFd: number;
  kickToken: number;
  callFd: number;
  started: boolean;
  enabled: boolean;
  active: boolean;
}

export interface SessionOptions {
  /** The connected vhost-user socket (the session owns and closes it). */
  fd: number;
  cid: number;
  io: DeviceIo;
  reactor: Reactor;
  device: VsockDevice;
  log: Logger;
  /** Called once when the session ends, with why. */
  onClose: (why: string, clean: boolean) => void;
}

function safeNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new VhostUserProtocolError(`${what} 0x${value.toString(16)} is beyond 2^53`);
  return Number(value);
}

export class VhostUserSession {
  readonly #o: SessionOptions;
  readonly #reader = new MessageReader();
  readonly #vrings: Vring[];
  #token = -1;
  #memory: GuestMemory | undefined;
  #protocolFeatures = 0n;
  #closed = false;

  constructor(opts: SessionOptions) {
    this.#o = opts;
    this.#vrings = Array.from({ length: QUEUES }, () => ({ num: 0, base: 0, addr: undefined, kickFd: -1, kickToken: -1, callFd: -1, started: false, enabled: false, active: false }));
  }

  start(): void {
    this.#token = this.#o.reactor.add(this.#o.fd, EPOLLIN, () => this.#onReadable());
  }

  /** Ends the session: rings off, every fd closed, `onClose` called. */
  close(why: string, clean = false): void {
    if (this.#closed) return;
    this.#closed = true;
    for (let i = 0; i < QUEUES; i++) {
      this.#deactivate(i);
      this.#closeKick(i);
      this.#closeFd(this.#vrings[i]!.callFd);
      this.#vrings[i]!.callFd = -1;
    }
    for (const fd of this.#reader.takeFds()) this.#closeFd(fd);
    this.#o.reactor.remove(this.#o.fd, this.#token, true);
    this.#o.io.closeFd(this.#o.fd);
    this.#o.onClose(why, clean);
  }

  #onReadable(): void {
    const io = this.#o.io;
    while (!this.#closed) {
      const w = this.#reader.want();
      const r = io.recvMsg(this.#o.fd, w.into, w.offset, w.length);
      if (r.bytes === -EAGAIN) return;
      if (r.bytes <= 0) {
        this.close(r.bytes === 0 ? 'the VMM closed the vhost-user connection' : `vhost-user recvmsg: ${errnoName(r.bytes)}`, r.bytes === 0);
        return;
      }
      let message: ReturnType<MessageReader['advance']>;
      try {
        message = this.#reader.advance(r.bytes, r.fds);
      } catch (e) {
        for (const fd of r.fds) this.#closeFd(fd);
        this.close(`vhost-user: ${(e as Error).message}`);
        return;
      }
      if (message) this.#dispatch(message.header, message.payload, message.fds);
    }
  }

  #dispatch(header: MessageHeader, payload: Uint8Array, fds: number[]): void {
    const name = REQUEST_NAMES[header.request] ?? `request ${header.request}`;
    let reply: Uint8Array | undefined;
    try {
      reply = this.#handle(header.request, payload, fds);
    } catch (e) {
      for (const fd of fds) this.#closeFd(fd);
      if (this.#wantsAck(header)) this.#send(encodeReply(header.request, u64Payload(1n)));
      this.close(`vhost-user ${name}: ${(e as Error).message}`);
      return;
    }
    if (reply) this.#send(encodeReply(header.request, reply));
    else if (this.#wantsAck(header)) this.#send(encodeReply(header.request, u64Payload(0n)));
  }

  /** REPLY_ACK: a request flagged need_reply gets u64 0 (done) or 1 (failed) unless it has a reply of its own. */
  #wantsAck(header: MessageHeader): boolean {
    return (header.flags & FLAG_NEED_REPLY) !== 0 && (this.#protocolFeatures & (1n << PROTOCOL_F_REPLY_ACK)) !== 0n;
  }

  #send(message: Uint8Array): void {
    if (this.#closed) return;
    const n = this.#o.io.sendMsg(this.#o.fd, message, 0, message.byteLength, []);
    if (n !== message.byteLength) this.close(`vhost-user reply not sent whole (${n < 0 ? errnoName(n) : `${n} of ${message.byteLength} bytes`})`);
  }

  /** Handles one request; returns the reply payload for requests that have one. Takes ownership of `fds`. */
  #handle(request: number, payload: Uint8Array, fds: number[]): Uint8Array | undefined {
    const expectFds = (n: number): void => {
      if (fds.length !== n) throw new VhostUserProtocolError(`came with ${fds.length} fds, expected ${n}`);
    };
    switch (request) {
      case Req.GET_FEATURES:
        return u64Payload(OFFERED_FEATURES);
      case Req.SET_FEATURES: {
        const acked = decodeU64(payload, 'SET_FEATURES');
        if (acked & ~OFFERED_FEATURES) throw new VhostUserProtocolError(`features 0x${acked.toString(16)} include bits never offered (0x${OFFERED_FEATURES.toString(16)})`);
        // Without protocol features a ring is enabled from the start.
        if ((acked & (1n << VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) for (let i = 0; i < QUEUES; i++) this.#vrings[i]!.enabled = true;
        return undefined;
      }
      case Req.GET_PROTOCOL_FEATURES:
        return u64Payload(OFFERED_PROTOCOL_FEATURES);
      case Req.SET_PROTOCOL_FEATURES: {
        const acked = decodeU64(payload, 'SET_PROTOCOL_FEATURES');
        if (acked & ~OFFERED_PROTOCOL_FEATURES) throw new VhostUserProtocolError(`protocol features 0x${acked.toString(16)} include bits never offered`);
        this.#protocolFeatures = acked;
        return undefined;
      }
      case Req.GET_QUEUE_NUM:
        return u64Payload(BigInt(QUEUES));
      case Req.SET_OWNER:
        return undefined;
      case Req.SET_MEM_TABLE:
        this.#setMemTable(payload, fds);
        return undefined;
      case Req.SET_VRING_NUM: {
        const s = decodeVringState(payload, 'SET_VRING_NUM');
        const v = this.#vring(s.index);
        if (s.num < 1 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) throw new VhostUserProtocolError(`queue size ${s.num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
        v.num = s.num;
        this.#reseat(s.index);
        return undefined;
      }
      case Req.SET_VRING_BASE: {
        const s = decodeVringState(payload, 'SET_VRING_BASE');
        this.#vring(s.index).base = s.num & 0xffff;
        this.#reseat(s.index);
        return undefined;
      }
      case Req.SET_VRING_ADDR: {
        const a = decodeVringAddress(payload);
        this.#vring(a.index).addr = { desc: safeNumber(a.desc, 'descriptor address'), avail: safeNumber(a.avail, 'avail address'), used: safeNumber(a.used, 'used address') };
        this.#reseat(a.index);
        return undefined;
      }
      case Req.GET_VRING_BASE: {
        const s = decodeVringState(payload, 'GET_VRING_BASE');
        const v = this.#vring(s.index);
        this.#deactivate(s.index);
        v.started = false;
        this.#closeKick(s.index);
        return vringStatePayload(s.index, v.base);
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const value = decodeU64(payload, REQUEST_NAMES[request]!);
        const index = Number(value & VRING_INDEX_MASK);
        const noFd = (value & VRING_NOFD_MASK) !== 0n;
        expectFds(noFd ? 0 : 1);
        const fd = noFd ? -1 : fds[0]!;
        const v = this.#vring(index);
        if (request === Req.SET_VRING_ERR) {
          this.#closeFd(fd);
          return undefined;
        }
        if (request === Req.SET_VRING_CALL) {
          const old = v.callFd;
          v.callFd = fd;
          if (v.active) this.#o.device.setCallFd(index, fd);
          this.#closeFd(old);
          return undefined;
        }
        if (noFd) throw new VhostUserProtocolError('polling a ring without a kick fd is not supported');
        this.#closeKick(index);
        v.kickFd = fd;
        v.kickToken = this.#o.reactor.add(fd, EPOLLIN, () => this.#o.device.onKick(index, fd));
        v.started = true;
        this.#activate(index);
        return undefined;
      }
      case Req.SET_VRING_ENABLE: {
        const s = decodeVringState(payload, 'SET_VRING_ENABLE');
        const v = this.#vring(s.index);
        v.enabled = s.num === 1;
        if (v.enabled) this.#activate(s.index);
        else this.#deactivate(s.index);
        return undefined;
      }
      case Req.GET_CONFIG: {
        const c = decodeConfigRequest(payload);
        const space = vsockConfigSpace(this.#o.cid);
        const data = new Uint8Array(Math.min(c.size, 256));
        if (c.offset < space.byteLength) data.set(space.subarray(c.offset, c.offset + data.byteLength));
        return configPayload(c, data);
      }
      default:
        throw new VhostUserProtocolError('not supported by this back-end');
    }
  }

  #vring(index: number): Vring {
    const v = this.#vrings[index];
    if (v === undefined) throw new VhostUserProtocolError(`vring ${index} does not exist; a vsock back-end serves ${QUEUES}`);
    return v;
  }

  #setMemTable(payload: Uint8Array, fds: number[]): void {
    const regions = decodeMemoryTable(payload);
    if (fds.length !== regions.length) throw new VhostUserProtocolError(`${regions.length} regions came with ${fds.length} fds`);
    try {
      const sources = regions.map((r, i) => {
        const fd = fds[i]!;
        const mmapOffset = safeNumber(r.mmapOffset, 'mmap_offset');
        return {
          guestAddr: safeNumber(r.guestAddr, 'guest_addr'),
          size: safeNumber(r.size, 'region size'),
          userAddr: safeNumber(r.userAddr, 'user_addr'),
          view: (start: number, length: number) => new Uint8Array(this.#o.io.mmapShared(fd, mmapOffset + start, length)),
        };
      });
      this.#memory = new GuestMemory(sources);
    } finally {
      for (const fd of fds) this.#closeFd(fd);
    }
    const layout = this.#memory.regions.map((r) => `gpa 0x${r.guestAddr.toString(16)}+0x${r.size.toString(16)}`).join(', ');
    this.#o.log.info(`guest memory mapped: ${layout}`);
    for (let i = 0; i < QUEUES; i++) this.#reseat(i);
  }

  /** Hands the ring to the device when it is started, enabled and fully described. */
  #activate(index: number): void {
    const v = this.#vrings[index]!;
    if (v.active || !v.started || !v.enabled || !v.addr || !this.#memory || v.num === 0) return;
    const located = locateRing(this.#memory, v.num, v.addr);
    if (!located.ok) throw new VhostUserProtocolError(`vring ${index}: ${located.why}`);
    v.active = true;
    this.#o.device.attach(index, new SplitQueue(this.#memory, located.areas, v.base), v.callFd);
  }

  #deactivate(index: number): void {
    const v = this.#vrings[index]!;
    if (!v.active) return;
    v.active = false;
    const next = this.#o.device.detach(index);
    if (next !== undefined) v.base = next;
  }

  /** A ring parameter or the memory changed: a running ring is set up again from where it was. */
  #reseat(index: number): void {
    if (!this.#vrings[index]!.active) return;
    this.#deactivate(index);
    this.#activate(index);
  }

  #closeKick(index: number): void {
    const v = this.#vrings[index]!;
    if (v.kickFd < 0) return;
    this.#o.reactor.remove(v.kickFd, v.kickToken, true);
    this.#closeFd(v.kickFd);
    v.kickFd = -1;
    v.kickToken = -1;
  }

  #closeFd(fd: number): void {
    if (fd < 0) return;
    try {
      this.#o.io.closeFd(fd);
    } catch {
      // already closed
    }
  }
}
