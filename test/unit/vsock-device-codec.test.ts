/**
 * The vsock device's wire formats: vhost-user messages (header, payload shapes, replies, and
 * reassembly from a stream that carries fds), the vsock packet header (contiguous and split
 * across descriptors), and the back-end's command line.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBackendArgs, parseBackendArgs } from '../../host/vsock/device/args.js';
import { memoryFromBuffers } from '../../host/vsock/device/guest-memory.js';
import { HEADER_BYTES as PACKET_HEADER_BYTES, OP_RW, PacketHeader, readHeader, TYPE_STREAM, writeHeader } from '../../host/vsock/device/packet.js';
import {
  configPayload,
  decodeConfigRequest,
  decodeHeader,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeReply,
  encodeRequest,
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  MessageReader,
  memoryTablePayload,
  OFFERED_FEATURES,
  OFFERED_PROTOCOL_FEATURES,
  Req,
  u64Payload,
  VhostUserProtocolError,
  vringAddressPayload,
  vringStatePayload,
  vsockConfigSpace,
} from '../../host/vsock/device/vhost-user.js';
import { DESC_F_NEXT, DESC_F_WRITE, DescriptorChain, locateRing, POP_OK, SplitQueue } from '../../host/vsock/device/virtqueue.js';

function header(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

describe('vhost-user messages', () => {
  it('decodes a header; refuses a short one, another version, an oversized payload', () => {
    assert.deepEqual(decodeHeader(header(Req.SET_MEM_TABLE, 0x9, 264)), { request: 5, flags: 9, size: 264 });
    const table: [string, Uint8Array, RegExp][] = [
      ['short', new Uint8Array(11), /header of 11 bytes/],
      ['version 0', header(1, 0, 0), /version 0/],
      ['version 2', header(1, 2, 0), /version 2/],
      ['payload too big', header(1, 1, MAX_PAYLOAD_BYTES + 1), /announces 4097/],
    ];
    for (const [what, bytes, why] of table) assert.throws(() => decodeHeader(bytes), (e: unknown) => e instanceof VhostUserProtocolError && why.test(e.message), what);
  });

  it('replies carry version 1 + REPLY (0x5); requests may ask for one (0x9)', () => {
    const r = encodeReply(Req.GET_FEATURES, u64Payload(OFFERED_FEATURES));
    assert.deepEqual(decodeHeader(r), { request: 1, flags: 0x5, size: 8 });
    assert.equal(decodeU64(r.subarray(HEADER_BYTES), 'x'), OFFERED_FEATURES);
    assert.equal(decodeHeader(encodeRequest(Req.SET_MEM_TABLE, new Uint8Array(0), true)).flags, 0x9);
  });

  it('offers VERSION_1 + PROTOCOL_FEATURES, and MQ + REPLY_ACK + CONFIG (QEMU needs CONFIG for vsock)', () => {
    assert.equal(OFFERED_FEATURES, (1n << 32n) | (1n << 30n));
    assert.equal(OFFERED_PROTOCOL_FEATURES, 0b10_0000_1001n);
  });

  it('payload shapes round-trip; the address layout is desc, used, avail, log', () => {
    assert.deepEqual(decodeVringState(vringStatePayload(1, 128), 'x'), { index: 1, num: 128 });
    const addr = vringAddressPayload({ index: 1, desc: 0x7f00_0000_1000n, used: 0x7f00_0000_3000n, avail: 0x7f00_0000_2000n, log: 0x3000n });
    assert.equal(new DataView(addr.buffer).getBigUint64(16, true), 0x7f00_0000_3000n, 'used comes before avail on the wire');
    assert.deepEqual(decodeVringAddress(addr), { index: 1, flags: 0, desc: 0x7f00_0000_1000n, used: 0x7f00_0000_3000n, avail: 0x7f00_0000_2000n, log: 0x3000n });
    // The layout QEMU 7.2 sent for a q35 guest with a 512 MiB memfd.
    const regions = [
      { guestAddr: 0n, size: 0xa0000n, userAddr: 0x7f12_0000_0000n, mmapOffset: 0n },
      { guestAddr: 0xc0000n, size: 0x1ff40000n, userAddr: 0x7f12_000c_0000n, mmapOffset: 0xc0000n },
    ];
    assert.deepEqual(decodeMemoryTable(memoryTablePayload(regions)), regions);
    assert.deepEqual(decodeConfigRequest(configPayload({ offset: 0, size: 8, flags: 0 }, vsockConfigSpace(3))), { offset: 0, size: 8, flags: 0 });
    assert.deepEqual([...vsockConfigSpace(0x1_0203)], [3, 2, 1, 0, 0, 0, 0, 0], 'le64 guest_cid');
  });

  it('refuses payloads too short for their request and memory tables of 0 or more than 8 regions', () => {
    assert.throws(() => decodeU64(new Uint8Array(4), 'SET_FEATURES'), /SET_FEATURES: payload of 4 bytes, need 8/);
    assert.throws(() => decodeVringAddress(new Uint8Array(39)), /need 40/);
    assert.throws(() => decodeMemoryTable(memoryTablePayload([])), /0 regions/);
    const nine = Array.from({ length: 9 }, () => ({ guestAddr: 0n, size: 1n, userAddr: 0n, mmapOffset: 0n }));
    assert.throws(() => decodeMemoryTable(memoryTablePayload(nine)), /9 regions/);
    const truncated = memoryTablePayload([{ guestAddr: 0n, size: 1n, userAddr: 0n, mmapOffset: 0n }]).subarray(0, 20);
    assert.throws(() => decodeMemoryTable(truncated), /need 40/);
  });

  it('reassembles messages read piecemeal; fds stay with the message they came with', () => {
    const stream = [
      encodeRequest(Req.SET_VRING_CALL, u64Payload(0n)),
      encodeRequest(Req.GET_FEATURES, new Uint8Array(0)),
      encodeRequest(Req.SET_MEM_TABLE, memoryTablePayload([{ guestAddr: 0n, size: 4096n, userAddr: 0n, mmapOffset: 0n }]), true),
    ];
    const fdsFor = [[10], [], [11]];
    const reader = new MessageReader();
    const got: { request: number; size: number; fds: number[] }[] = [];
    for (let m = 0; m < stream.length; m++) {
      const bytes = stream[m]!;
      let pos = 0;
      let first = true;
      // Feed in pieces of at most 5 bytes, as short reads would deliver them.
      while (pos < bytes.length) {
        const w = reader.want();
        const n = Math.min(w.length, 5, bytes.length - pos);
        w.into.set(bytes.subarray(pos, pos + n), w.offset);
        pos += n;
        const msg = reader.advance(n, first ? fdsFor[m]! : []);
        first = false;
        if (msg) got.push({ request: msg.header.request, size: msg.payload.length, fds: msg.fds });
      }
    }
    assert.deepEqual(got, [
      { request: Req.SET_VRING_CALL, size: 8, fds: [10] },
      { request: Req.GET_FEATURES, size: 0, fds: [] },
      { request: Req.SET_MEM_TABLE, size: 40, fds: [11] },
    ]);
  });
});

describe('vsock packet header', () => {
  const sample = (): PacketHeader => {
    const h = new PacketHeader().set(OP_RW, 0x4000_0001, 8080, 2, 3);
    h.len = 1234;
    h.flags = 0;
    h.bufAlloc = 262144;
    h.fwdCnt = 0xffff_fff0;
    return h;
  };

  /** A chain over hand-built descriptors: `lengths` for the header area, readable or writable. */
  function chainOf(lengths: number[], writable: boolean): { chain: DescriptorChain; bytes: Uint8Array } {
    const bytes = new Uint8Array(64 * 1024);
    const view = new DataView(bytes.buffer);
    const memory = memoryFromBuffers([{ guestAddr: 0, size: bytes.length, userAddr: 0x10_0000, bytes }]);
    let data = 0x8000;
    lengths.forEach((len, i) => {
      const o = 0x1000 + 16 * i;
      view.setUint32(o, data, true);
      view.setUint32(o + 8, len, true);
      view.setUint16(o + 12, (writable ? DESC_F_WRITE : 0) | (i < lengths.length - 1 ? DESC_F_NEXT : 0), true);
      view.setUint16(o + 14, i + 1, true);
      data += 0x100;
    });
    view.setUint16(0x2002, 1, true);
    const located = locateRing(memory, 8, { desc: 0x10_1000, avail: 0x10_2000, used: 0x10_3000 });
    assert.ok(located.ok);
    const chain = new DescriptorChain();
    assert.equal(new SplitQueue(memory, located.areas).pop(chain), POP_OK);
    return { chain, bytes };
  }

  it('is 44 bytes; round-trips through one descriptor and through a header split over three', () => {
    assert.equal(PACKET_HEADER_BYTES, 44);
    for (const lengths of [[44], [60], [20, 4, 30]]) {
      const w = chainOf(lengths, true);
      assert.ok(writeHeader(w.chain, sample()));
      // Read it back as the driver would see it: lay the written segments end to end.
      const flat = new Uint8Array(44);
      let at = 0;
      for (let k = 0; k < w.chain.count && at < 44; k++) {
        const seg = w.chain.bytes[k]!.subarray(w.chain.offsets[k]!, w.chain.offsets[k]! + w.chain.lengths[k]!);
        const n = Math.min(seg.length, 44 - at);
        flat.set(seg.subarray(0, n), at);
        at += n;
      }
      const back = new PacketHeader();
      back.read(new DataView(flat.buffer), 0);
      assert.deepEqual({ ...back }, { ...sample() }, `written over ${JSON.stringify(lengths)}`);
      const r = chainOf(lengths, false);
      for (let k = 0, at2 = 0; k < r.chain.count; k++) {
        const n = Math.min(r.chain.lengths[k]!, 44 - at2);
        r.chain.bytes[k]!.set(flat.subarray(at2, at2 + n), r.chain.offsets[k]!);
        at2 += n;
      }
      const parsed = new PacketHeader();
      assert.ok(readHeader(r.chain, parsed));
      assert.deepEqual({ ...parsed }, { ...sample() }, `read over ${JSON.stringify(lengths)}`);
    }
  });

  it('a chain shorter than a header is not a packet; a CID with its upper half set reads as -1', () => {
    const short = chainOf([20, 10], false);
    assert.equal(readHeader(short.chain, new PacketHeader()), false);
    assert.equal(writeHeader(chainOf([40], true).chain, sample()), false);
    const bytes = new Uint8Array(44);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, 3, true);
    v.setUint32(4, 1, true);
    v.setUint32(8, 2, true);
    v.setUint16(28, TYPE_STREAM, true);
    const h = new PacketHeader();
    h.read(v, 0);
    assert.equal(h.srcCid, -1);
    assert.equal(h.dstCid, 2);
  });
});

describe('back-end command line', () => {
  it('round-trips and refuses what it cannot use', () => {
    const args = { vhostUser: '/run/volant/vms/a/vhost-vsock.sock', socket: '/run/volant/vms/a/vsock.sock', cid: 7, metrics: '/run/volant/vms/a/m.json' };
    assert.deepEqual(parseBackendArgs(formatBackendArgs(args)), args);
    const { metrics: _m, ...noMetrics } = args;
    assert.deepEqual(parseBackendArgs(formatBackendArgs(noMetrics)), noMetrics);
    const table: [string, string[], RegExp][] = [
      ['relative socket', ['--vhost-user', '/a', '--socket', 'rel', '--cid', '3'], /--socket must be an absolute path/],
      ['CID 2 (the host)', ['--vhost-user', '/a', '--socket', '/b', '--cid', '2'], /--cid "2" must be an integer 3\.\./],
      ['CID not a number', ['--vhost-user', '/a', '--socket', '/b', '--cid', '3x'], /--cid/],
      ['socket too long for its _PORT suffix', ['--vhost-user', '/a', '--socket', `/${'x'.repeat(100)}`, '--cid', '3'], /too long for a Unix socket/],
      ['unknown flag', ['--vhost-user', '/a', '--socket', '/b', '--cid', '3', '--x'], /Unknown option/],
    ];
    for (const [what, argv, why] of table) assert.throws(() => parseBackendArgs(argv), why, what);
  });
});
