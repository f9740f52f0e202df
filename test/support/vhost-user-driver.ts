/**
 * TEST DOUBLE of QEMU's vhost-user front-end and a guest's virtio-vsock driver together, for
 * driving the real device back-end process (host/vsock/device/main.ts) without a VM. A real
 * QEMU and Linux guest run in the e2e suite; this double exists to do what a well-behaved guest
 * never does (send past its credit, write malformed descriptors, never answer a REQUEST, reset
 * mid-stream) and to see exactly which packets the device sends. It follows the published
 * protocols as docs/vsock.md summarises them: vhost-user (in the message order QEMU 7.2 uses with
 * vhost-user-vsock-pci, see host/vsock/device/session.ts) and the virtio 1.2 split virtqueue and
 * vsock packet format.
 *
 * Guest memory is a memfd shared with the back-end (as `memory-backend-memfd,share=on`), at
 * guest-physical GUEST_RAM_GPA and "QEMU address" GUEST_RAM_USER. RX and TX rings of QUEUE_SIZE;
 * RX buffers are single writable descriptors of RX_BUFFER_BYTES, as Linux 6.1 posts them.
 */

import { deviceIo } from '../../native/device-io.js';
import { HEADER_BYTES as PKT, OP_RESPONSE, PacketHeader, TYPE_STREAM } from '../../host/vsock/device/packet.js';
import {
  decodeHeader,
  encodeRequest,
  HEADER_BYTES,
  memoryTablePayload,
  OFFERED_PROTOCOL_FEATURES,
  Req,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from '../../host/vsock/device/vhost-user.js';
import { DESC_F_NEXT, DESC_F_WRITE } from '../../host/vsock/device/virtqueue.js';
import { eventually } from './eventually.js';

export const GUEST_RAM_BYTES = 16 * 1024 * 1024;
export const GUEST_RAM_GPA = 0x100000;
export const GUEST_RAM_USER = 0x7f00_0000_0000;
export const QUEUE_SIZE = 256;
export const RX_BUFFER_BYTES = 4096;
const TX_SLOT_BYTES = 64 * 1024 + 64;
/** The guest's receive buffer per connection (Linux's default). */
export const GUEST_BUF_ALLOC = 256 * 1024;

// Layout inside guest RAM (offsets).
const RX_RING = 0x1000;
const TX_RING = 0x10000;
const RX_BUFFERS = 0x100000;
const TX_BUFFERS = RX_BUFFERS + QUEUE_SIZE * RX_BUFFER_BYTES;

export interface Packet {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  op: number;
  type: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
  payload: Buffer;
}

function ring(base: number) {
  return { desc: base, avail: base + 16 * QUEUE_SIZE, used: base + 16 * QUEUE_SIZE + 0x1000 };
}

export class VsockDriver {
  readonly io = deviceIo();
  readonly ram: Uint8Array;
  readonly view: DataView;
  readonly #u16: Uint16Array;
  readonly #memfd: number;
  #sock = -1;
  readonly #kick = [-1, -1];
  readonly #call = [-1, -1];
  #txAvail = 0;
  #rxAvail = 0;
  #rxUsedSeen = 0;
  #txNext = 0;
  /** Packets the device sent, in order, not yet taken by `next`. */
  readonly inbox: Packet[] = [];

  constructor(readonly cid = 3) {
    this.#memfd = this.io.memfdCreate('vsock-driver', GUEST_RAM_BYTES);
    this.ram = new Uint8Array(this.io.mmapShared(this.#memfd, 0, GUEST_RAM_BYTES));
    this.view = new DataView(this.ram.buffer);
    this.#u16 = new Uint16Array(this.ram.buffer);
  }

  // ------------------------------------------------------------------------------------------
  // vhost-user (QEMU's side)

  async connect(path: string): Promise<void> {
    this.#sock = await eventually(() => {
      const fd = this.io.connectUnixSocket(path);
      return fd >= 0 ? fd : undefined;
    }, { what: `connect ${path}` });
  }

  send(request: number, payload: Uint8Array, fds: number[] = [], needReply = false): void {
    const msg = encodeRequest(request, payload, needReply);
    const n = this.io.sendMsg(this.#sock, msg, 0, msg.length, fds);
    if (n !== msg.length) throw new Error(`sendmsg ${request}: ${n}`);
  }

  async reply(request: number): Promise<Uint8Array> {
    const head = new Uint8Array(HEADER_BYTES);
    await eventually(() => this.io.recvMsg(this.#sock, head, 0, HEADER_BYTES).bytes === HEADER_BYTES, { what: `reply to ${request}` });
    const h = decodeHeader(head);
    if (h.request !== request || h.flags !== 0x5) throw new Error(`unexpected reply ${JSON.stringify(h)} to ${request}`);
    const payload = new Uint8Array(h.size);
    if (h.size > 0) await eventually(() => this.io.recvMsg(this.#sock, payload, 0, h.size).bytes === h.size);
    return payload;
  }

  async call(request: number, payload: Uint8Array = new Uint8Array(0)): Promise<Uint8Array> {
    this.send(request, payload);
    return this.reply(request);
  }

  /** QEMU 7.2's sequence from realize to a running device; returns the CID the config space holds. */
  async start(): Promise<number> {
    const u64 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);
    const features = u64(await this.call(Req.GET_FEATURES));
    const protocol = u64(await this.call(Req.GET_PROTOCOL_FEATURES));
    if (protocol !== OFFERED_PROTOCOL_FEATURES) throw new Error(`protocol features ${protocol}`);
    this.send(Req.SET_PROTOCOL_FEATURES, u64Payload(protocol));
    const queues = u64(await this.call(Req.GET_QUEUE_NUM));
    if (queues !== 2n) throw new Error(`queues ${queues}`);
    this.send(Req.SET_OWNER, new Uint8Array(0));
    const config = await this.call(Req.GET_CONFIG, new Uint8Array([0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]));
    const cid = Number(new DataView(config.buffer, config.byteOffset).getBigUint64(12, true));
    this.send(Req.SET_FEATURES, u64Payload(features));
    this.send(Req.SET_MEM_TABLE, memoryTablePayload([{ guestAddr: BigInt(GUEST_RAM_GPA), size: BigInt(GUEST_RAM_BYTES), userAddr: BigInt(GUEST_RAM_USER), mmapOffset: 0n }]), [this.#memfd], true);
    const ack = u64(await this.reply(Req.SET_MEM_TABLE));
    if (ack !== 0n) throw new Error('SET_MEM_TABLE failed');
    for (const index of [0, 1]) {
      const r = ring(index === 0 ? RX_RING : TX_RING);
      this.send(Req.SET_VRING_NUM, vringStatePayload(index, QUEUE_SIZE));
      this.send(Req.SET_VRING_BASE, vringStatePayload(index, 0));
      this.send(Req.SET_VRING_ADDR, vringAddressPayload({ index, desc: BigInt(GUEST_RAM_USER + r.desc), used: BigInt(GUEST_RAM_USER + r.used), avail: BigInt(GUEST_RAM_USER + r.avail) }));
      this.#kick[index] = this.io.eventfdCreate();
      this.#call[index] = this.io.eventfdCreate();
      this.send(Req.SET_VRING_KICK, u64Payload(BigInt(index)), [this.#kick[index]!]);
      this.send(Req.SET_VRING_CALL, u64Payload(BigInt(index)), [this.#call[index]!]);
      this.send(Req.SET_VRING_ENABLE, vringStatePayload(index, 1));
    }
    return cid;
  }

  /** Closes the front-end connection, as QEMU exiting does. */
  disconnect(): void {
    if (this.#sock >= 0) this.io.closeFd(this.#sock);
    this.#sock = -1;
  }

  close(): void {
    this.disconnect();
    for (const fd of [...this.#kick, ...this.#call, this.#memfd]) if (fd >= 0) this.io.closeFd(fd);
  }

  // ------------------------------------------------------------------------------------------
  // The guest driver

  #kickQueue(index: number): void {
    const one = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
    this.io.writeFrom(this.#kick[index]!, one, 0, 8);
  }

  #setDesc(ringBase: number, i: number, addr: number, len: number, flags: number, next = 0): void {
    const o = ringBase + 16 * i;
    this.view.setUint32(o, addr % 2 ** 32, true);
    this.view.setUint32(o + 4, Math.floor(addr / 2 ** 32), true);
    this.view.setUint32(o + 8, len, true);
    this.view.setUint16(o + 12, flags, true);
    this.view.setUint16(o + 14, next, true);
  }

  #offer(ringBase: number, head: number, availIdx: number): number {
    const r = ring(ringBase);
    this.view.setUint16(r.avail + 4 + 2 * (availIdx % QUEUE_SIZE), head, true);
    const next = (availIdx + 1) & 0xffff;
    Atomics.store(this.#u16, (r.avail + 2) >> 1, next);
    return next;
  }

  /** Posts `count` RX buffers (one writable descriptor each) and kicks. */
  postRx(count = QUEUE_SIZE): void {
    const r = ring(RX_RING);
    for (let k = 0; k < count; k++) {
      const slot = this.#rxAvail % QUEUE_SIZE;
      this.#setDesc(r.desc, slot, GUEST_RAM_GPA + RX_BUFFERS + slot * RX_BUFFER_BYTES, RX_BUFFER_BYTES, DESC_F_WRITE);
      this.#rxAvail = this.#offer(RX_RING, slot, this.#rxAvail);
    }
    this.#kickQueue(0);
  }

  /** RX buffers the device has not used yet. */
  rxBuffersLeft(): number {
    const used = Atomics.load(this.#u16, (ring(RX_RING).used + 2) >> 1);
    return (this.#rxAvail - used) & 0xffff;
  }

  /** Collects what the device put in the RX used ring into `inbox` (re-posting nothing). */
  collect(): void {
    const r = ring(RX_RING);
    const idx = Atomics.load(this.#u16, (r.used + 2) >> 1);
    while (this.#rxUsedSeen !== idx) {
      const e = r.used + 4 + 8 * (this.#rxUsedSeen % QUEUE_SIZE);
      const head = this.view.getUint32(e, true);
      const len = this.view.getUint32(e + 4, true);
      const at = RX_BUFFERS + head * RX_BUFFER_BYTES;
      const h = new PacketHeader();
      h.read(this.view, at);
      const payload = Buffer.from(this.ram.subarray(at + PKT, at + PKT + Math.max(0, len - PKT)));
      if (h.len !== payload.length) throw new Error(`used length ${len} but header len ${h.len}`);
      this.inbox.push({ srcCid: h.srcCid, dstCid: h.dstCid, srcPort: h.srcPort, dstPort: h.dstPort, op: h.op, type: h.type, flags: h.flags, bufAlloc: h.bufAlloc, fwdCnt: h.fwdCnt, payload });
      this.#rxUsedSeen = (this.#rxUsedSeen + 1) & 0xffff;
    }
  }

  /** Waits for the next packet matching `filter` (others stay in the inbox). */
  async next(filter: (p: Packet) => boolean = () => true, timeoutMs = 10_000): Promise<Packet> {
    return eventually(
      () => {
        this.collect();
        const i = this.inbox.findIndex(filter);
        return i >= 0 ? this.inbox.splice(i, 1)[0] : undefined;
      },
      { timeoutMs, pollMs: 2, what: 'a packet from the device' },
    );
  }

  /** Sends one packet on TX (header + payload as two descriptors, as Linux does) and kicks. */
  sendPacket(p: { srcPort: number; dstPort: number; op: number; payload?: Uint8Array; flags?: number; bufAlloc?: number; fwdCnt?: number; type?: number; srcCid?: number; dstCid?: number }): void {
    const r = ring(TX_RING);
    const slot = this.#txNext;
    this.#txNext = (this.#txNext + 2) % QUEUE_SIZE;
    const at = TX_BUFFERS + (slot / 2) * TX_SLOT_BYTES;
    const h = new PacketHeader().set(p.op, p.srcPort, p.dstPort, p.srcCid ?? this.cid, p.dstCid ?? 2);
    h.type = p.type ?? TYPE_STREAM;
    h.flags = p.flags ?? 0;
    h.len = p.payload?.length ?? 0;
    h.bufAlloc = p.bufAlloc ?? GUEST_BUF_ALLOC;
    h.fwdCnt = p.fwdCnt ?? 0;
    h.write(this.view, at);
    if (p.payload && p.payload.length > 0) {
      this.ram.set(p.payload, at + 64);
      this.#setDesc(r.desc, slot, GUEST_RAM_GPA + at, PKT, DESC_F_NEXT, slot + 1);
      this.#setDesc(r.desc, slot + 1, GUEST_RAM_GPA + at + 64, p.payload.length, 0);
    } else {
      this.#setDesc(r.desc, slot, GUEST_RAM_GPA + at, PKT, 0);
    }
    this.#txAvail = this.#offer(TX_RING, slot, this.#txAvail);
    this.#kickQueue(1);
  }

  /** Offers a TX chain whose only descriptor points outside guest memory. */
  sendMalformed(): void {
    const r = ring(TX_RING);
    const slot = this.#txNext;
    this.#txNext = (this.#txNext + 2) % QUEUE_SIZE;
    this.#setDesc(r.desc, slot, GUEST_RAM_GPA + GUEST_RAM_BYTES + 0x1000, PKT, 0);
    this.#txAvail = this.#offer(TX_RING, slot, this.#txAvail);
    this.#kickQueue(1);
  }

  /** TX chains the device has returned (used). */
  async txDone(): Promise<void> {
    const r = ring(TX_RING);
    await eventually(() => Atomics.load(this.#u16, (r.used + 2) >> 1) === this.#txAvail, { pollMs: 2, what: 'the device consumed TX' });
  }

  respond(to: Packet, bufAlloc = GUEST_BUF_ALLOC): void {
    this.sendPacket({ srcPort: to.dstPort, dstPort: to.srcPort, op: OP_RESPONSE, bufAlloc });
  }
}
