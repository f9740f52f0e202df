/**
 * The split virtqueue (virtio 1.2; primer in docs/vsock.md), device side, over guest memory. Three areas, all
 * little-endian, indices free-running u16 (slot = index % size):
 *
 *   descriptor table  size × { u64 addr (guest-physical), u32 len, u16 flags, u16 next }
 *   avail ring        u16 flags, u16 idx, u16 ring[size]          (written by the driver)
 *   used ring         u16 flags, u16 idx, { u32 id, u32 len }[size] (written by the device)
 *
 * The driver offers a chain of descriptors by putting its head in avail.ring and bumping
 * avail.idx; the device walks the chain (device-readable descriptors first, then
 * device-writable), does the work, writes { head, bytes written } into the used ring and bumps
 * used.idx; then it interrupts the driver unless avail.flags says NO_INTERRUPT.
 *
 * What must hold (the guest is not trusted):
 *  - a chain whose descriptors lie outside guest memory, loop, run longer than the queue, point
 *    past the table, use INDIRECT (not negotiated) or put a readable descriptor after a writable
 *    one is refused: it is returned to the driver as used with length 0 and counted, and no byte
 *    of it is read or written. A descriptor longer than MAX_SEGMENT_BYTES is looked at only up to
 *    that length: the device never needs more of one descriptor than that.
 *  - an avail.idx more than `size` ahead of the device, or a head index past the table, means the
 *    ring itself is broken: the queue stops (`broken`) instead of guessing.
 *  - used.idx is published with a sequentially consistent store after the used elements are
 *    written, and the avail index is read with one, so the guest never sees an index before the
 *    entries it covers (x86 keeps stores in order; Atomics keep the JIT from reordering them).
 *
 * Batching: `pushUsed` only writes entries; `publish` makes a whole batch visible at once and
 * says whether the driver wants an interrupt, so the device notifies once per batch.
 *
 * Allocation: a DescriptorChain is reused for every pop; its segments are parallel arrays.
 */

import type { GuestMemory } from './guest-memory.js';
import { u64FromHalves } from './guest-memory.js';

/** The largest queue the virtio spec allows. */
export const MAX_QUEUE_SIZE = 32768;
/** How much of one descriptor the device looks at (a vsock packet is a 44-byte header + at most 64 KiB). */
export const MAX_SEGMENT_BYTES = 64 * 1024 + 64;
/** Descriptors in one chain at most (Linux uses one or two per vsock packet). */
export const MAX_CHAIN_DESCRIPTORS = 64;

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const AVAIL_F_NO_INTERRUPT = 1;
export const USED_F_NO_NOTIFY = 1;

const DESC_BYTES = 16;
const USED_ELEM_BYTES = 8;

/** Where the three areas are, as offsets into views the caller looked up in guest memory. */
export interface RingAreas {
  size: number;
  desc: { bytes: Uint8Array; offset: number };
  avail: { bytes: Uint8Array; offset: number };
  used: { bytes: Uint8Array; offset: number };
}

export type RingAddressResult = { ok: true; areas: RingAreas } | { ok: false; why: string };

/** Finds the three ring areas in QEMU's address space (SET_VRING_ADDR) and checks size and alignment. */
export function locateRing(memory: GuestMemory, size: number, addrs: { desc: number; avail: number; used: number }): RingAddressResult {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) return { ok: false, why: `queue size ${size} is not a power of two in 1..${MAX_QUEUE_SIZE}` };
  const area = (name: string, addr: number, bytes: number, align: number) => {
    if (addr % align !== 0) return `${name} ring address 0x${addr.toString(16)} is not ${align}-byte aligned`;
    if (!memory.user(addr, bytes)) return `${name} ring 0x${addr.toString(16)}+${bytes} is outside guest memory`;
    return { bytes: memory.bytes, offset: memory.offset };
  };
  const desc = area('descriptor', addrs.desc, size * DESC_BYTES, 16);
  if (typeof desc === 'string') return { ok: false, why: desc };
  const avail = area('avail', addrs.avail, 4 + 2 * size + 2, 2);
  if (typeof avail === 'string') return { ok: false, why: avail };
  const used = area('used', addrs.used, 4 + USED_ELEM_BYTES * size + 2, 4);
  if (typeof used === 'string') return { ok: false, why: used };
  return { ok: true, areas: { size, desc, avail, used } };
}

/** A chain popped from the avail ring: its segments, readable ones first. */
export class DescriptorChain {
  head = 0;
  count = 0;
  /** Segments [0, readableCount) are device-readable, the rest device-writable. */
  readableCount = 0;
  readableBytes = 0;
  writableBytes = 0;
  readonly bytes: Uint8Array[] = new Array(MAX_CHAIN_DESCRIPTORS).fill(new Uint8Array(0));
  readonly views: DataView[] = new Array(MAX_CHAIN_DESCRIPTORS).fill(new DataView(new ArrayBuffer(0)));
  readonly offsets = new Float64Array(MAX_CHAIN_DESCRIPTORS);
  readonly lengths = new Float64Array(MAX_CHAIN_DESCRIPTORS);
  /** Why the last pop refused this chain (for the log; '' when it was fine). */
  refusal = '';

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.refusal = '';
  }
}

export const POP_EMPTY = 0;
export const POP_OK = 1;
/** The chain was refused; it is already returned as used with length 0. */
export const POP_REFUSED = 2;
/** The ring is broken; nothing more is taken from it. */
export const POP_BROKEN = 3;
export type PopResult = typeof POP_EMPTY | typeof POP_OK | typeof POP_REFUSED | typeof POP_BROKEN;

export class SplitQueue {
  readonly size: number;
  /** The next avail index to take (GET_VRING_BASE answers with it). */
  lastAvail: number;
  /** Why the ring stopped, once it did. */
  broken = '';
  refused = 0;
  readonly #memory: GuestMemory;
  readonly #desc: DataView;
  readonly #descOffset: number;
  readonly #avail: DataView;
  readonly #availOffset: number;
  readonly #availIdx: Uint16Array;
  readonly #availIdxIndex: number;
  readonly #used: DataView;
  readonly #usedOffset: number;
  readonly #usedIdx: Uint16Array;
  readonly #usedIdxIndex: number;
  #usedShadow: number;
  #publishedUsed: number;

  constructor(memory: GuestMemory, areas: RingAreas, lastAvail = 0) {
    this.size = areas.size;
    this.#memory = memory;
    const dv = (a: { bytes: Uint8Array }) => new DataView(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength);
    this.#desc = dv(areas.desc);
    this.#descOffset = areas.desc.offset;
    this.#avail = dv(areas.avail);
    this.#availOffset = areas.avail.offset;
    this.#availIdx = new Uint16Array(areas.avail.bytes.buffer, areas.avail.bytes.byteOffset, areas.avail.bytes.byteLength >> 1);
    this.#availIdxIndex = (areas.avail.offset + 2) >> 1;
    this.#used = dv(areas.used);
    this.#usedOffset = areas.used.offset;
    this.#usedIdx = new Uint16Array(areas.used.bytes.buffer, areas.used.bytes.byteOffset, areas.used.bytes.byteLength >> 1);
    this.#usedIdxIndex = (areas.used.offset + 2) >> 1;
    this.lastAvail = lastAvail & 0xffff;
    this.#usedShadow = this.#usedIdx[this.#usedIdxIndex]!;
    this.#publishedUsed = this.#usedShadow;
  }

  /** Chains the driver has offered and the device has not taken yet. */
  pending(): number {
    return (Atomics.load(this.#availIdx, this.#availIdxIndex) - this.lastAvail) & 0xffff;
  }

  /** Takes the next chain into `chain` (see the PopResult constants). */
  pop(chain: DescriptorChain): PopResult {
    if (this.broken) return POP_BROKEN;
    const pending = this.pending();
    if (pending === 0) return POP_EMPTY;
    if (pending > this.size) return this.#break(`avail.idx is ${pending} entries ahead of the device, more than the ${this.size} the queue holds`);
    const head = this.#avail.getUint16(this.#availOffset + 4 + 2 * (this.lastAvail % this.size), true);
    if (head >= this.size) return this.#break(`avail ring names head ${head}, past the ${this.size}-entry descriptor table`);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    chain.reset(head);
    const why = this.#walk(chain);
    if (why === '') return POP_OK;
    chain.refusal = why;
    this.refused++;
    this.pushUsed(head, 0);
    return POP_REFUSED;
  }

  /** Gives the last popped chain back untouched (the device had nothing to put in it). */
  unpop(): void {
    this.lastAvail = (this.lastAvail - 1) & 0xffff;
  }

  /** Records a used chain; invisible to the driver until `publish`. */
  pushUsed(head: number, written: number): void {
    const at = this.#usedOffset + 4 + USED_ELEM_BYTES * (this.#usedShadow % this.size);
    this.#used.setUint32(at, head, true);
    this.#used.setUint32(at + 4, written, true);
    this.#usedShadow = (this.#usedShadow + 1) & 0xffff;
  }

  /** Makes pushed entries visible; true when there were any and the driver wants an interrupt. */
  publish(): boolean {
    if (this.#usedShadow === this.#publishedUsed) return false;
    this.#publishedUsed = this.#usedShadow;
    Atomics.store(this.#usedIdx, this.#usedIdxIndex, this.#usedShadow);
    return (this.#avail.getUint16(this.#availOffset, true) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Asks the driver not to kick (while the device is busy with the queue anyway) or to kick again. */
  setNotifications(wanted: boolean): void {
    // Sequentially consistent, so a following pending() is not read before this store lands.
    Atomics.store(this.#usedIdx, this.#usedOffset >> 1, wanted ? 0 : USED_F_NO_NOTIFY);
  }

  #break(why: string): PopResult {
    this.broken = why;
    return POP_BROKEN;
  }

  /** Walks the chain from chain.head; returns '' or why it is refused. */
  #walk(chain: DescriptorChain): string {
    const memory = this.#memory;
    const desc = this.#desc;
    let index = chain.head;
    let writableSeen = false;
    for (let steps = 0; ; steps++) {
      if (steps >= this.size || steps >= MAX_CHAIN_DESCRIPTORS) return `chain from head ${chain.head} is longer than ${Math.min(this.size, MAX_CHAIN_DESCRIPTORS)} descriptors (or loops)`;
      const at = this.#descOffset + DESC_BYTES * index;
      const addr = u64FromHalves(desc.getUint32(at, true), desc.getUint32(at + 4, true));
      const len = desc.getUint32(at + 8, true);
      const flags = desc.getUint16(at + 12, true);
      const next = desc.getUint16(at + 14, true);
      if (flags & DESC_F_INDIRECT) return `descriptor ${index} is INDIRECT, which was not negotiated`;
      const writable = (flags & DESC_F_WRITE) !== 0;
      if (!writable && writableSeen) return `descriptor ${index} is device-readable after a device-writable one`;
      writableSeen ||= writable;
      const seen = Math.min(len, MAX_SEGMENT_BYTES);
      if (seen > 0) {
        if (addr < 0 || !memory.guest(addr, seen)) return `descriptor ${index} (0x${addr.toString(16)}+${len}) is outside guest memory`;
        const k = chain.count++;
        chain.bytes[k] = memory.bytes;
        chain.views[k] = memory.view;
        chain.offsets[k] = memory.offset;
        chain.lengths[k] = seen;
        if (writable) chain.writableBytes += seen;
        else {
          chain.readableCount++;
          chain.readableBytes += seen;
        }
      }
      if ((flags & DESC_F_NEXT) === 0) return '';
      if (next >= this.size) return `descriptor ${index} links to ${next}, past the ${this.size}-entry table`;
      index = next;
    }
  }
}
