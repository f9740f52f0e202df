/**
 * The vsock device's view of guest memory and its split-virtqueue walker, against rings built by
 * hand in an ArrayBuffer (what a guest driver would write): chains of one and several
 * descriptors, readable then writable parts, index wrap-around, batching of used entries and the
 * interrupt suppression flag; and every malformed shape a hostile guest can write — descriptors
 * outside guest memory or straddling its end, loops, links past the table, INDIRECT (not
 * negotiated), readable after writable, a broken avail index — is refused without a byte outside
 * the mapping being touched.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GuestMemory, MAX_ACCESS_BYTES, memoryFromBuffers, u64FromHalves } from '../../host/vsock/device/guest-memory.js';
import {
  AVAIL_F_NO_INTERRUPT,
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DescriptorChain,
  locateRing,
  MAX_CHAIN_DESCRIPTORS,
  MAX_SEGMENT_BYTES,
  POP_BROKEN,
  POP_EMPTY,
  POP_OK,
  POP_REFUSED,
  SplitQueue,
  USED_F_NO_NOTIFY,
} from '../../host/vsock/device/virtqueue.js';

const GPA = 0x10_0000;
const USER = 0x7f00_0000_0000;
const MEM_BYTES = 256 * 1024;
const DESC = GPA + 0x1000;
const AVAIL = GPA + 0x3000;
const USED = GPA + 0x4000;
/** Where test buffers live (guest-physical). */
const DATA = GPA + 0x10000;

/** A guest: memory, a ring of `size` at DESC/AVAIL/USED, and helpers that write what a driver writes. */
function guest(size: number, opts: { lastAvail?: number; usedIdx?: number } = {}) {
  const bytes = new Uint8Array(MEM_BYTES);
  const view = new DataView(bytes.buffer);
  const memory = memoryFromBuffers([{ guestAddr: GPA, size: MEM_BYTES, userAddr: USER, bytes }]);
  const at = (gpa: number) => gpa - GPA;
  view.setUint16(at(USED) + 2, opts.usedIdx ?? 0, true);
  let availIdx = opts.lastAvail ?? 0;
  view.setUint16(at(AVAIL) + 2, availIdx, true);
  const located = locateRing(memory, size, { desc: USER + (DESC - GPA), avail: USER + (AVAIL - GPA), used: USER + (USED - GPA) });
  assert.ok(located.ok, located.ok ? '' : located.why);
  const queue = new SplitQueue(memory, located.areas, opts.lastAvail ?? 0);
  return {
    bytes,
    view,
    queue,
    memory,
    desc(index: number, addr: number, len: number, flags = 0, next = 0, addrHigh?: number) {
      const o = at(DESC) + 16 * index;
      view.setUint32(o, addr % 2 ** 32, true);
      view.setUint32(o + 4, addrHigh ?? Math.floor(addr / 2 ** 32), true);
      view.setUint32(o + 8, len, true);
      view.setUint16(o + 12, flags, true);
      view.setUint16(o + 14, next, true);
    },
    offer(...heads: number[]) {
      for (const h of heads) {
        view.setUint16(at(AVAIL) + 4 + 2 * (availIdx % size), h, true);
        availIdx = (availIdx + 1) & 0xffff;
      }
      view.setUint16(at(AVAIL) + 2, availIdx, true);
    },
    setAvailIdx(idx: number) {
      availIdx = idx & 0xffff;
      view.setUint16(at(AVAIL) + 2, availIdx, true);
    },
    availFlags(flags: number) {
      view.setUint16(at(AVAIL), flags, true);
    },
    usedIdx: () => view.getUint16(at(USED) + 2, true),
    usedFlags: () => view.getUint16(at(USED), true),
    usedElem: (slot: number) => ({ id: view.getUint32(at(USED) + 4 + 8 * slot, true), len: view.getUint32(at(USED) + 8 + 8 * slot, true) }),
    /** The bytes a segment of a popped chain points at. */
    segment: (chain: DescriptorChain, k: number) => chain.bytes[k]!.subarray(chain.offsets[k]!, chain.offsets[k]! + chain.lengths[k]!),
  };
}

describe('guest memory', () => {
  it('translates guest-physical and QEMU addresses into one mapping, whole accesses only', () => {
    const bytes = new Uint8Array(8192);
    bytes[100] = 42;
    const m = memoryFromBuffers([{ guestAddr: 0x1000, size: 8192, userAddr: 0x5000_0000, bytes }]);
    assert.ok(m.guest(0x1000 + 100, 1));
    assert.equal(m.bytes[m.offset], 42);
    assert.ok(m.user(0x5000_0000 + 100, 1));
    assert.equal(m.bytes[m.offset], 42);
    const table: [string, () => boolean, boolean][] = [
      ['last byte', () => m.guest(0x1000 + 8191, 1), true],
      ['whole region', () => m.guest(0x1000, 8192), true],
      ['one byte past the end', () => m.guest(0x1000 + 8192, 1), false],
      ['straddles the end', () => m.guest(0x1000 + 8000, 200), false],
      ['before the start', () => m.guest(0xfff, 1), false],
      ['a QEMU address used as guest-physical', () => m.guest(0x5000_0000, 1), false],
      ['negative', () => m.guest(-1, 1), false],
      ['beyond 2^53', () => m.guest(2 ** 60, 1), false],
      ['longer than MAX_ACCESS_BYTES', () => m.guest(0x1000, MAX_ACCESS_BYTES + 1), false],
    ];
    for (const [what, lookup, ok] of table) assert.equal(lookup(), ok, what);
  });

  it('several regions; a region seen through overlapping chunks serves any access up to MAX_ACCESS_BYTES', () => {
    const chunk = 4 * 1024 * 1024;
    const big = new Uint8Array(3 * chunk);
    big[chunk + 5] = 7;
    const small = new Uint8Array(4096);
    small[0] = 9;
    const m = memoryFromBuffers(
      [
        { guestAddr: 0, size: big.length, userAddr: 0x1_0000_0000, bytes: big },
        { guestAddr: 0x1_0000_0000, size: small.length, userAddr: 0x2_0000_0000, bytes: small },
      ],
      chunk,
    );
    // An access across the chunk boundary still lies in one view (the previous chunk overlaps the next).
    assert.ok(m.guest(chunk - 10, 100));
    assert.equal(m.bytes[m.offset + 15], 7);
    assert.ok(m.guest(3 * chunk - 1, 1), 'the last byte');
    assert.ok(m.guest(0x1_0000_0000, 1));
    assert.equal(m.bytes[m.offset], 9);
    assert.equal(m.guest(0x1_0000_0000 + 4096, 1), false);
  });

  it('u64 addresses: halves combine; anything above 2^53 is -1, never a rounded number', () => {
    assert.equal(u64FromHalves(5, 0), 5);
    assert.equal(u64FromHalves(0, 1), 2 ** 32);
    assert.equal(u64FromHalves(0xffff_ffff, 0x1f_ffff), Number.MAX_SAFE_INTEGER);
    assert.equal(u64FromHalves(0, 0x20_0000), -1);
  });

  it('refuses a region list it cannot hold', () => {
    assert.throws(() => new GuestMemory([{ guestAddr: 0, size: 0, userAddr: 0, view: () => new Uint8Array(0) }]), /not usable/);
    const nine = Array.from({ length: 9 }, (_, i) => ({ guestAddr: i * 4096, size: 4096, userAddr: i * 4096, view: () => new Uint8Array(4096) }));
    assert.throws(() => new GuestMemory(nine), /at most 8/);
  });
});

describe('split virtqueue', () => {
  it('locateRing checks size, alignment and that the rings are in guest memory', () => {
    const m = memoryFromBuffers([{ guestAddr: GPA, size: MEM_BYTES, userAddr: USER, bytes: new Uint8Array(MEM_BYTES) }]);
    const ok = { desc: USER, avail: USER + 0x1000, used: USER + 0x2000 };
    assert.ok(locateRing(m, 128, ok).ok);
    const table: [string, number, typeof ok, RegExp][] = [
      ['size not a power of two', 100, ok, /power of two/],
      ['size 0', 0, ok, /power of two/],
      ['size above 32768', 65536, ok, /power of two/],
      ['descriptor table misaligned', 128, { ...ok, desc: USER + 8 }, /16-byte aligned/],
      ['used ring misaligned', 128, { ...ok, used: USER + 0x2002 }, /4-byte aligned/],
      ['avail ring outside memory', 128, { ...ok, avail: USER + MEM_BYTES - 4 }, /outside guest memory/],
      ['a guest-physical address where a QEMU one belongs', 128, { ...ok, desc: GPA }, /outside guest memory/],
    ];
    for (const [what, size, addrs, why] of table) {
      const r = locateRing(m, size, addrs);
      assert.equal(r.ok, false, what);
      if (!r.ok) assert.match(r.why, why, what);
    }
  });

  it('pops a one-descriptor chain and a header + payload chain; readable segments come first', () => {
    const g = guest(8);
    g.bytes.set([1, 2, 3], DATA - GPA);
    g.desc(0, DATA, 44);
    g.desc(3, DATA, 44, DESC_F_NEXT, 5);
    g.desc(5, DATA + 0x1000, 100, DESC_F_NEXT, 6);
    g.desc(6, DATA + 0x2000, 4096, DESC_F_WRITE);
    g.offer(0, 3);
    const chain = new DescriptorChain();
    assert.equal(g.queue.pending(), 2);
    assert.equal(g.queue.pop(chain), POP_OK);
    assert.deepEqual([chain.head, chain.count, chain.readableCount, chain.readableBytes, chain.writableBytes], [0, 1, 1, 44, 0]);
    assert.deepEqual([...g.segment(chain, 0).subarray(0, 3)], [1, 2, 3], 'the segment is the guest buffer itself');
    assert.equal(g.queue.pop(chain), POP_OK);
    assert.deepEqual([chain.head, chain.count, chain.readableCount, chain.readableBytes, chain.writableBytes], [3, 3, 2, 144, 4096]);
    assert.equal(g.queue.pop(chain), POP_EMPTY);
  });

  it('wraps: avail and used indices run past 65535, slots wrap at the queue size', () => {
    const g = guest(4, { lastAvail: 0xfffe, usedIdx: 0xfffe });
    for (let i = 0; i < 4; i++) g.desc(i, DATA + i * 64, 64, DESC_F_WRITE);
    g.offer(2, 3, 0, 1);
    const chain = new DescriptorChain();
    const heads: number[] = [];
    while (g.queue.pop(chain) === POP_OK) {
      heads.push(chain.head);
      g.queue.pushUsed(chain.head, 10 + chain.head);
      if (heads.length === 4) break;
    }
    assert.deepEqual(heads, [2, 3, 0, 1]);
    assert.equal(g.queue.lastAvail, 2, 'avail index wrapped 0xfffe → 2');
    assert.equal(g.usedIdx(), 0xfffe, 'nothing visible before publish');
    assert.equal(g.queue.publish(), true, 'the driver wants an interrupt');
    assert.equal(g.usedIdx(), 2, 'used index wrapped too');
    // 0xfffe % 4 = 2: entries went to slots 2, 3, 0, 1.
    assert.deepEqual([g.usedElem(2), g.usedElem(3), g.usedElem(0), g.usedElem(1)], [
      { id: 2, len: 12 },
      { id: 3, len: 13 },
      { id: 0, len: 10 },
      { id: 1, len: 11 },
    ]);
    assert.equal(g.queue.publish(), false, 'nothing new: no interrupt');
    assert.equal(g.queue.pending(), 0);
    g.offer(3);
    assert.equal(g.queue.pop(chain), POP_OK);
    assert.equal(chain.head, 3, 'slot 2 % 4 after the wrap');
  });

  it('publish honours NO_INTERRUPT; notifications are suppressed and restored through used.flags', () => {
    const g = guest(8);
    g.desc(0, DATA, 64, DESC_F_WRITE);
    g.offer(0);
    g.availFlags(AVAIL_F_NO_INTERRUPT);
    const chain = new DescriptorChain();
    assert.equal(g.queue.pop(chain), POP_OK);
    g.queue.pushUsed(chain.head, 1);
    assert.equal(g.queue.publish(), false);
    assert.equal(g.usedIdx(), 1, 'published, just no interrupt');
    g.queue.setNotifications(false);
    assert.equal(g.usedFlags(), USED_F_NO_NOTIFY);
    g.queue.setNotifications(true);
    assert.equal(g.usedFlags(), 0);
  });

  it('unpop gives a chain back untouched', () => {
    const g = guest(8);
    g.desc(4, DATA, 64, DESC_F_WRITE);
    g.offer(4);
    const chain = new DescriptorChain();
    assert.equal(g.queue.pop(chain), POP_OK);
    g.queue.unpop();
    assert.equal(g.queue.pending(), 1);
    assert.equal(g.queue.pop(chain), POP_OK);
    assert.equal(chain.head, 4);
  });

  it('looks at most MAX_SEGMENT_BYTES of a long descriptor (and only checks that much)', () => {
    const g = guest(8);
    g.desc(0, DATA, 10 * 1024 * 1024, DESC_F_WRITE);
    g.offer(0);
    const chain = new DescriptorChain();
    assert.equal(g.queue.pop(chain), POP_OK);
    assert.equal(chain.lengths[0], MAX_SEGMENT_BYTES);
    assert.equal(chain.writableBytes, MAX_SEGMENT_BYTES);
  });

  describe('malformed chains are refused: returned as used with length 0, nothing of them exposed', () => {
    const cases: { name: string; setup: (g: ReturnType<typeof guest>) => void; why: RegExp }[] = [
      { name: 'a descriptor outside guest memory', setup: (g) => g.desc(0, GPA + MEM_BYTES + 4096, 64), why: /outside guest memory/ },
      { name: 'a descriptor straddling the end of memory', setup: (g) => g.desc(0, GPA + MEM_BYTES - 10, 64), why: /outside guest memory/ },
      { name: 'a descriptor below guest memory', setup: (g) => g.desc(0, GPA - 64, 64), why: /outside guest memory/ },
      { name: 'an address beyond 2^53', setup: (g) => g.desc(0, 0, 64, 0, 0, 0xffff_ffff), why: /outside guest memory/ },
      {
        name: 'a loop (0 → 1 → 0)',
        setup: (g) => {
          g.desc(0, DATA, 16, DESC_F_NEXT, 1);
          g.desc(1, DATA, 16, DESC_F_NEXT, 0);
        },
        why: /longer than|loops/,
      },
      { name: 'a link past the table', setup: (g) => g.desc(0, DATA, 16, DESC_F_NEXT, 8), why: /past the 8-entry table/ },
      { name: 'INDIRECT (not negotiated)', setup: (g) => g.desc(0, DATA, 16, DESC_F_INDIRECT), why: /INDIRECT/ },
      {
        name: 'a readable descriptor after a writable one',
        setup: (g) => {
          g.desc(0, DATA, 16, DESC_F_WRITE | DESC_F_NEXT, 1);
          g.desc(1, DATA, 16, 0);
        },
        why: /readable after/,
      },
      {
        name: 'a second descriptor outside memory',
        setup: (g) => {
          g.desc(0, DATA, 44, DESC_F_NEXT, 1);
          g.desc(1, GPA + MEM_BYTES, 100, 0);
        },
        why: /descriptor 1 .*outside/,
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const g = guest(8);
        c.setup(g);
        g.desc(2, DATA, 64, DESC_F_WRITE);
        g.offer(0, 2);
        const chain = new DescriptorChain();
        assert.equal(g.queue.pop(chain), POP_REFUSED);
        assert.match(chain.refusal, c.why);
        assert.equal(chain.head, 0);
        assert.equal(g.queue.refused, 1);
        g.queue.publish();
        assert.deepEqual(g.usedElem(0), { id: 0, len: 0 }, 'returned to the driver, nothing written');
        assert.equal(g.queue.pop(chain), POP_OK, 'the queue goes on with the next chain');
        assert.equal(chain.head, 2);
      });
    }

    it('a chain longer than MAX_CHAIN_DESCRIPTORS (in a queue that could hold it)', () => {
      const g = guest(128);
      for (let i = 0; i <= MAX_CHAIN_DESCRIPTORS; i++) g.desc(i, DATA, 8, DESC_F_NEXT, i + 1);
      g.desc(MAX_CHAIN_DESCRIPTORS + 1, DATA, 8);
      g.offer(0);
      const chain = new DescriptorChain();
      assert.equal(g.queue.pop(chain), POP_REFUSED);
      assert.match(chain.refusal, /longer than 64/);
    });
  });

  describe('a broken ring stops the queue instead of guessing', () => {
    it('avail.idx more than the queue size ahead', () => {
      const g = guest(8);
      g.setAvailIdx(9);
      assert.equal(g.queue.pop(new DescriptorChain()), POP_BROKEN);
      assert.match(g.queue.broken, /9 entries ahead/);
      assert.equal(g.queue.pop(new DescriptorChain()), POP_BROKEN, 'and stays stopped');
    });
    it('a head past the descriptor table', () => {
      const g = guest(8);
      g.offer(8);
      assert.equal(g.queue.pop(new DescriptorChain()), POP_BROKEN);
      assert.match(g.queue.broken, /head 8/);
    });
  });
});
