/**
 * The virtio-vsock packet header (virtio 1.2; docs/vsock.md), 44 bytes, little-endian, packed:
 *
 *   u64 src_cid  u64 dst_cid  u32 src_port  u32 dst_port  u32 len
 *   u16 type     u16 op       u32 flags     u32 buf_alloc u32 fwd_cnt
 *
 * followed by `len` payload bytes (RW only). On the TX queue (guest → device) a packet is the
 * readable part of a chain; on the RX queue (device → guest) the device writes one packet into
 * the writable part of a chain the driver offered.
 *
 * Every packet carries the sender's credit: `buf_alloc` (its receive buffer for this connection)
 * and `fwd_cnt` (free-running count of bytes it has consumed); credit.ts does the arithmetic.
 *
 * What must hold: a header split across descriptors is read and written as well as a contiguous
 * one (Linux uses one descriptor today, older kernels two); CIDs above 2^32 are not valid (the
 * upper half is zero in the spec) and read as -1. `PacketHeader` is one mutable object reused
 * for every packet: no allocation per packet.
 */

import type { DescriptorChain } from './virtqueue.js';

export const HEADER_BYTES = 44;
/** The largest payload one packet carries (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in Linux). */
export const MAX_PAYLOAD_BYTES = 64 * 1024;

export const TYPE_STREAM = 1;
export const TYPE_SEQPACKET = 2;

export const OP_INVALID = 0;
export const OP_REQUEST = 1;
export const OP_RESPONSE = 2;
export const OP_RST = 3;
export const OP_SHUTDOWN = 4;
export const OP_RW = 5;
export const OP_CREDIT_UPDATE = 6;
export const OP_CREDIT_REQUEST = 7;

/** SHUTDOWN flags: the sender will receive no more / send no more. Sticky. */
export const SHUTDOWN_RCV = 1;
export const SHUTDOWN_SEND = 2;
export const SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND;

export const OP_NAMES: Record<number, string> = {
  [OP_REQUEST]: 'REQUEST',
  [OP_RESPONSE]: 'RESPONSE',
  [OP_RST]: 'RST',
  [OP_SHUTDOWN]: 'SHUTDOWN',
  [OP_RW]: 'RW',
  [OP_CREDIT_UPDATE]: 'CREDIT_UPDATE',
  [OP_CREDIT_REQUEST]: 'CREDIT_REQUEST',
};

const TWO_POW_32 = 0x1_0000_0000;

export class PacketHeader {
  srcCid = 0;
  dstCid = 0;
  srcPort = 0;
  dstPort = 0;
  len = 0;
  type = 0;
  op = 0;
  flags = 0;
  bufAlloc = 0;
  fwdCnt = 0;

  /** Reads a contiguous header at `offset`. */
  read(view: DataView, offset: number): void {
    this.srcCid = view.getUint32(offset + 4, true) === 0 ? view.getUint32(offset, true) : -1;
    this.dstCid = view.getUint32(offset + 12, true) === 0 ? view.getUint32(offset + 8, true) : -1;
    this.srcPort = view.getUint32(offset + 16, true);
    this.dstPort = view.getUint32(offset + 20, true);
    this.len = view.getUint32(offset + 24, true);
    this.type = view.getUint16(offset + 28, true);
    this.op = view.getUint16(offset + 30, true);
    this.flags = view.getUint32(offset + 32, true);
    this.bufAlloc = view.getUint32(offset + 36, true);
    this.fwdCnt = view.getUint32(offset + 40, true);
  }

  /** Writes a contiguous header at `offset`. */
  write(view: DataView, offset: number): void {
    view.setUint32(offset, this.srcCid % TWO_POW_32, true);
    view.setUint32(offset + 4, 0, true);
    view.setUint32(offset + 8, this.dstCid % TWO_POW_32, true);
    view.setUint32(offset + 12, 0, true);
    view.setUint32(offset + 16, this.srcPort, true);
    view.setUint32(offset + 20, this.dstPort, true);
    view.setUint32(offset + 24, this.len, true);
    view.setUint16(offset + 28, this.type, true);
    view.setUint16(offset + 30, this.op, true);
    view.setUint32(offset + 32, this.flags, true);
    view.setUint32(offset + 36, this.bufAlloc, true);
    view.setUint32(offset + 40, this.fwdCnt, true);
  }

  set(op: number, srcPort: number, dstPort: number, srcCid: number, dstCid: number): this {
    this.op = op;
    this.srcPort = srcPort;
    this.dstPort = dstPort;
    this.srcCid = srcCid;
    this.dstCid = dstCid;
    this.type = TYPE_STREAM;
    this.len = 0;
    this.flags = 0;
    return this;
  }
}

const scratch = new Uint8Array(HEADER_BYTES);
const scratchView = new DataView(scratch.buffer);

/** Reads the header from the readable segments of a chain; false when they are shorter than a header. */
export function readHeader(chain: DescriptorChain, header: PacketHeader): boolean {
  if (chain.readableBytes < HEADER_BYTES) return false;
  if (chain.lengths[0]! >= HEADER_BYTES) {
    header.read(chain.views[0]!, chain.offsets[0]!);
    return true;
  }
  copyAcross(chain, 0, scratch, false);
  header.read(scratchView, 0);
  return true;
}

/** Writes `header` at the start of the writable segments; false when they are shorter than a header. */
export function writeHeader(chain: DescriptorChain, header: PacketHeader): boolean {
  if (chain.writableBytes < HEADER_BYTES) return false;
  const first = chain.readableCount;
  if (chain.lengths[first]! >= HEADER_BYTES) {
    header.write(chain.views[first]!, chain.offsets[first]!);
    return true;
  }
  header.write(scratchView, 0);
  copyAcross(chain, first, scratch, true);
  return true;
}

/**
 * Copies between `buf` and the segments from `segment` on, laid end to end: out of the chain into
 * `buf` (`toChain` false) or from `buf` into the chain. Only for headers split across descriptors.
 */
function copyAcross(chain: DescriptorChain, segment: number, buf: Uint8Array, toChain: boolean): void {
  let done = 0;
  for (let s = segment; s < chain.count && done < buf.length; s++) {
    const bytes = chain.bytes[s]!;
    const base = chain.offsets[s]!;
    const n = Math.min(chain.lengths[s]!, buf.length - done);
    for (let i = 0; i < n; i++) {
      if (toChain) bytes[base + i] = buf[done + i]!;
      else buf[done + i] = bytes[base + i]!;
    }
    done += n;
  }
}

/**
 * A position inside a chain's segments: the segment index and the offset within it. Reused; the
 * device walks payloads with it (after the header, from segment to segment).
 */
export class ChainCursor {
  segment = 0;
  within = 0;

  /** Moves to `skip` bytes past the start of segment `first`; false when the chain is shorter. */
  seek(chain: DescriptorChain, first: number, skip: number, end: number): boolean {
    let s = first;
    let left = skip;
    while (s < end && left >= chain.lengths[s]!) {
      left -= chain.lengths[s]!;
      s++;
    }
    this.segment = s;
    this.within = left;
    return s < end || left === 0;
  }
}
