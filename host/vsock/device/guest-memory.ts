/**
 * Guest memory as the vsock device sees it: the regions QEMU shares over vhost-user
 * (SET_MEM_TABLE), each mapped into this process, and the two address spaces that point into them:
 *
 *  - guest-physical addresses (GPA): what the guest's driver writes into descriptors;
 *  - QEMU's own virtual addresses: what SET_VRING_ADDR gives for the rings.
 *
 * What must hold: the device never touches a byte outside a mapping. Every access goes through
 * `guest()`/`user()` with an address AND a length; an access that is not wholly inside one region
 * (or is longer than MAX_ACCESS_BYTES) is refused, never clipped. Addresses are u64 on the wire;
 * anything above 2^53 cannot be inside a region and is refused before arithmetic could round it.
 *
 * Why chunks: a typed array is at most 4 GiB in Node 20, and guests may have more. Each region is
 * seen through views of MEMORY_CHUNK_BYTES that start every MEMORY_CHUNK_BYTES and overlap by
 * MAX_ACCESS_BYTES, so any access the device is allowed to make lies inside one view. The mmap is
 * per chunk too (host/vsock/device/session.ts), which costs address space only.
 *
 * The hot path allocates nothing: a successful lookup leaves its answer in `bytes`, `view` and
 * `offset` (valid until the next lookup) and returns true.
 */

/** One view every MEMORY_CHUNK_BYTES of a region. */
export const MEMORY_CHUNK_BYTES = 1024 * 1024 * 1024;
/** The longest contiguous access the device makes (the largest ring, 32768 descriptors, is 512 KiB). */
export const MAX_ACCESS_BYTES = 1024 * 1024;
/** Regions in one memory table (VHOST_MEMORY_BASELINE_NREGIONS: CONFIGURE_MEM_SLOTS is not negotiated). */
export const MAX_MEMORY_REGIONS = 8;

const TWO_POW_32 = 0x1_0000_0000;
/** The largest high half of a u64 that keeps the value a safe integer. */
const MAX_SAFE_HIGH = 0x1f_ffff;

export interface RegionLayout {
  /** Guest-physical start. */
  guestAddr: number;
  /** Bytes. */
  size: number;
  /** Start in QEMU's address space. */
  userAddr: number;
}

/** Where a region's bytes come from: `view(start, length)` for [start, start+length) of the region. */
export interface RegionSource extends RegionLayout {
  view(start: number, length: number): Uint8Array;
}

interface Chunk {
  bytes: Uint8Array;
  view: DataView;
}

interface Region extends RegionLayout {
  chunks: Chunk[];
}

/** A u64 stored as two little-endian u32 halves, or -1 when it is not a safe integer. */
export function u64FromHalves(low: number, high: number): number {
  return high > MAX_SAFE_HIGH ? -1 : high * TWO_POW_32 + low;
}

export class GuestMemory {
  /** The answer of the last successful lookup. */
  bytes: Uint8Array = new Uint8Array(0);
  view: DataView = new DataView(new ArrayBuffer(0));
  offset = 0;
  readonly regions: readonly RegionLayout[];
  readonly #regions: Region[];
  readonly #chunkBytes: number;

  /** `chunkBytes` is for tests that want several chunks without gigabytes. */
  constructor(sources: readonly RegionSource[], chunkBytes = MEMORY_CHUNK_BYTES) {
    if (sources.length > MAX_MEMORY_REGIONS) throw new RangeError(`${sources.length} memory regions; at most ${MAX_MEMORY_REGIONS}`);
    this.#chunkBytes = chunkBytes;
    this.#regions = sources.map((s) => {
      if (!Number.isSafeInteger(s.guestAddr) || !Number.isSafeInteger(s.userAddr) || !Number.isSafeInteger(s.size) || s.size <= 0 || s.guestAddr < 0 || s.userAddr < 0) {
        throw new RangeError(`memory region ${JSON.stringify({ guestAddr: s.guestAddr, size: s.size, userAddr: s.userAddr })} is not usable`);
      }
      const chunks: Chunk[] = [];
      for (let start = 0; start < s.size; start += chunkBytes) {
        const bytes = s.view(start, Math.min(chunkBytes + MAX_ACCESS_BYTES, s.size - start));
        chunks.push({ bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) });
      }
      return { guestAddr: s.guestAddr, size: s.size, userAddr: s.userAddr, chunks };
    });
    this.regions = this.#regions.map(({ guestAddr, size, userAddr }) => ({ guestAddr, size, userAddr }));
  }

  /** Looks up [gpa, gpa+length) in guest-physical space. */
  guest(gpa: number, length: number): boolean {
    return this.#find(gpa, length, false);
  }

  /** Looks up [addr, addr+length) in QEMU's address space (ring addresses). */
  user(addr: number, length: number): boolean {
    return this.#find(addr, length, true);
  }

  #find(addr: number, length: number, user: boolean): boolean {
    if (!(addr >= 0) || !(length >= 0) || length > MAX_ACCESS_BYTES || !Number.isSafeInteger(addr)) return false;
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      const within = addr - (user ? r.userAddr : r.guestAddr);
      if (within < 0 || within >= r.size || length > r.size - within) continue;
      const index = Math.floor(within / this.#chunkBytes);
      const chunk = r.chunks[index]!;
      const offset = within - index * this.#chunkBytes;
      if (offset + length > chunk.bytes.byteLength) return false;
      this.bytes = chunk.bytes;
      this.view = chunk.view;
      this.offset = offset;
      return true;
    }
    return false;
  }
}

/** Guest memory over plain buffers (tests, and the shape of a region list). */
export function memoryFromBuffers(regions: readonly (RegionLayout & { bytes: Uint8Array })[], chunkBytes?: number): GuestMemory {
  return new GuestMemory(
    regions.map((r) => ({ guestAddr: r.guestAddr, size: r.size, userAddr: r.userAddr, view: (start, length) => r.bytes.subarray(start, start + length) })),
    chunkBytes,
  );
}
