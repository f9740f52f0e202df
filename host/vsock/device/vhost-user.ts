/**
 * The vhost-user wire format (the protocol QEMU defines; primer in docs/vsock.md), as far as a vsock back-end
 * needs it: pure encoding and decoding, no I/O.
 *
 * A message is a 12-byte header in host byte order (little-endian here) — u32 request,
 * u32 flags, u32 size — then `size` payload bytes. File descriptors ride on the same message as
 * SCM_RIGHTS. Flags: bits 0-1 the version (1), 0x4 on every reply, 0x8 "need reply" (with the
 * REPLY_ACK protocol feature: answer u64 0 for success even when the request has no reply).
 *
 * Payload shapes used here:
 *   u64                     features, protocol features, queue count, vring kick/call/err index
 *   vring state             u32 index, u32 num
 *   vring address           u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log
 *   memory table            u32 nregions, u32 padding, then per region
 *                           u64 guest_addr, u64 size, u64 user_addr, u64 mmap_offset
 *   config                  u32 offset, u32 size, u32 flags, u8 data[size]
 *
 * What is offered (and so what QEMU may use): VIRTIO_F_VERSION_1 and
 * VHOST_USER_F_PROTOCOL_FEATURES; protocol features MQ, REPLY_ACK and CONFIG (QEMU 7.2 refuses
 * a vsock back-end without CONFIG). Not offered: EVENT_IDX, INDIRECT_DESC, NOTIFY_ON_EMPTY,
 * SEQPACKET, dirty logging, in-band notifications, inflight tracking, extra memory slots.
 *
 * Malformed input (short header, wrong version, oversized payload, a payload too short for its
 * request) is a `VhostUserProtocolError`: the caller ends the session.
 */

export const HEADER_BYTES = 12;
/** The largest payload accepted (a full memory table is 8 + 8 × 32 = 264 bytes; config 12 + 256). */
export const MAX_PAYLOAD_BYTES = 4096;

export const VERSION = 1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
} as const;

export const REQUEST_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, k]));

/** Device feature bits (u64 as BigInt). */
export const VIRTIO_F_VERSION_1 = 32n;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;
export const OFFERED_FEATURES = (1n << VIRTIO_F_VERSION_1) | (1n << VHOST_USER_F_PROTOCOL_FEATURES);

/** Protocol feature bits. */
export const PROTOCOL_F_MQ = 0n;
export const PROTOCOL_F_REPLY_ACK = 3n;
export const PROTOCOL_F_CONFIG = 9n;
export const OFFERED_PROTOCOL_FEATURES = (1n << PROTOCOL_F_MQ) | (1n << PROTOCOL_F_REPLY_ACK) | (1n << PROTOCOL_F_CONFIG);

/** vring index bits in a SET_VRING_KICK/CALL/ERR payload, and the "no fd" flag. */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;

export class VhostUserProtocolError extends Error {
  override readonly name = 'VhostUserProtocolError';
}

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.byteLength < HEADER_BYTES) throw new VhostUserProtocolError(`header of ${bytes.byteLength} bytes; a header is ${HEADER_BYTES}`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const header = { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
  if ((header.flags & FLAG_VERSION_MASK) !== VERSION) throw new VhostUserProtocolError(`message ${header.request} has version ${header.flags & FLAG_VERSION_MASK}; only ${VERSION} is spoken`);
  if (header.size > MAX_PAYLOAD_BYTES) throw new VhostUserProtocolError(`message ${header.request} announces ${header.size} payload bytes; at most ${MAX_PAYLOAD_BYTES}`);
  return header;
}

function view(payload: Uint8Array, need: number, what: string): DataView {
  if (payload.byteLength < need) throw new VhostUserProtocolError(`${what}: payload of ${payload.byteLength} bytes, need ${need}`);
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
}

export function decodeU64(payload: Uint8Array, what: string): bigint {
  return view(payload, 8, what).getBigUint64(0, true);
}

export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(payload: Uint8Array, what: string): VringState {
  const v = view(payload, 8, what);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

export interface VringAddress {
  index: number;
  flags: number;
  /** QEMU virtual addresses (guest memory as mapped in QEMU). */
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function decodeVringAddress(payload: Uint8Array): VringAddress {
  const v = view(payload, 40, 'SET_VRING_ADDR');
  return { index: v.getUint32(0, true), flags: v.getUint32(4, true), desc: v.getBigUint64(8, true), used: v.getBigUint64(16, true), avail: v.getBigUint64(24, true), log: v.getBigUint64(32, true) };
}

export interface MemoryRegionMessage {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

const REGION_BYTES = 32;
export const MAX_REGIONS_IN_TABLE = 8;

export function decodeMemoryTable(payload: Uint8Array): MemoryRegionMessage[] {
  const v = view(payload, 8, 'SET_MEM_TABLE');
  const n = v.getUint32(0, true);
  if (n === 0 || n > MAX_REGIONS_IN_TABLE) throw new VhostUserProtocolError(`SET_MEM_TABLE with ${n} regions; 1..${MAX_REGIONS_IN_TABLE} are accepted`);
  view(payload, 8 + n * REGION_BYTES, 'SET_MEM_TABLE');
  const regions: MemoryRegionMessage[] = [];
  for (let i = 0; i < n; i++) {
    const at = 8 + i * REGION_BYTES;
    regions.push({ guestAddr: v.getBigUint64(at, true), size: v.getBigUint64(at + 8, true), userAddr: v.getBigUint64(at + 16, true), mmapOffset: v.getBigUint64(at + 24, true) });
  }
  return regions;
}

export interface ConfigRequest {
  offset: number;
  size: number;
  flags: number;
}

export function decodeConfigRequest(payload: Uint8Array): ConfigRequest {
  const v = view(payload, 12, 'GET_CONFIG');
  return { offset: v.getUint32(0, true), size: v.getUint32(4, true), flags: v.getUint32(8, true) };
}

/** A whole reply message: header (flags VERSION|REPLY) + payload. */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, VERSION | FLAG_REPLY, true);
  v.setUint32(8, payload.byteLength, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

/** A whole request message (the front-end's side; tests play QEMU with it). */
export function encodeRequest(request: number, payload: Uint8Array, needReply = false): Uint8Array {
  const out = encodeReply(request, payload);
  new DataView(out.buffer).setUint32(4, VERSION | (needReply ? FLAG_NEED_REPLY : 0), true);
  return out;
}

export function u64Payload(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, true);
  return out;
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return out;
}

export function vringAddressPayload(a: Omit<VringAddress, 'flags' | 'log'> & { flags?: number; log?: bigint }): Uint8Array {
  const out = new Uint8Array(40);
  const v = new DataView(out.buffer);
  v.setUint32(0, a.index, true);
  v.setUint32(4, a.flags ?? 0, true);
  v.setBigUint64(8, a.desc, true);
  v.setBigUint64(16, a.used, true);
  v.setBigUint64(24, a.avail, true);
  v.setBigUint64(32, a.log ?? 0n, true);
  return out;
}

export function memoryTablePayload(regions: readonly MemoryRegionMessage[]): Uint8Array {
  const out = new Uint8Array(8 + regions.length * REGION_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const at = 8 + i * REGION_BYTES;
    v.setBigUint64(at, r.guestAddr, true);
    v.setBigUint64(at + 8, r.size, true);
    v.setBigUint64(at + 16, r.userAddr, true);
    v.setBigUint64(at + 24, r.mmapOffset, true);
  });
  return out;
}

export function configPayload(request: ConfigRequest, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, request.offset, true);
  v.setUint32(4, data.byteLength, true);
  v.setUint32(8, request.flags, true);
  out.set(data, 12);
  return out;
}

/** The vsock device's config space: le64 guest_cid. */
export function vsockConfigSpace(cid: number): Uint8Array {
  return u64Payload(BigInt(cid));
}

/**
 * Reassembles messages from a byte stream with fds (the channel reads exactly what it is asked
 * for, so fds arrive with the header they belong to). `want()` says how many bytes to read next.
 */
export class MessageReader {
  readonly #header = new Uint8Array(HEADER_BYTES);
  #payload: Uint8Array = new Uint8Array(0);
  #have = 0;
  #current: MessageHeader | undefined;
  #fds: number[] = [];

  /** The buffer and window the next read must fill. */
  want(): { into: Uint8Array; offset: number; length: number } {
    if (this.#current === undefined) return { into: this.#header, offset: this.#have, length: HEADER_BYTES - this.#have };
    return { into: this.#payload, offset: this.#have, length: this.#current.size - this.#have };
  }

  /** Records `n` bytes read into want()'s window with the fds that came along; returns a message when one is complete. */
  advance(n: number, fds: number[]): { header: MessageHeader; payload: Uint8Array; fds: number[] } | undefined {
    this.#fds.push(...fds);
    this.#have += n;
    if (this.#current === undefined) {
      if (this.#have < HEADER_BYTES) return undefined;
      this.#current = decodeHeader(this.#header);
      this.#payload = new Uint8Array(this.#current.size);
      this.#have = 0;
    }
    if (this.#have < this.#current.size) return undefined;
    const message = { header: this.#current, payload: this.#payload, fds: this.#fds };
    this.#current = undefined;
    this.#have = 0;
    this.#fds = [];
    return message;
  }

  /** fds received for a message that never completed (the caller closes them). */
  takeFds(): number[] {
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }
}
