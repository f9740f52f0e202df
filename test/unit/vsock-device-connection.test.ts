/**
 * The vsock device's connection state machine (connection.ts `step`) and credit arithmetic
 * (credit.ts), as tables: every row is a state, something that happens, and what the device must
 * do — packets for the guest, actions on the host socket, the timer, the next state.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  acceptsGuestData,
  carriesHostData,
  type ConnControl,
  type ConnEvent,
  HOST_CLOSE,
  HOST_SHUT_WRITE,
  HOST_WRITE_OK,
  initialControl,
  SEND_CREDIT_UPDATE,
  SEND_REQUEST,
  SEND_RST,
  SEND_SHUTDOWN,
  step,
} from '../../host/vsock/device/connection.js';
import { CONN_BUFFER_BYTES, CREDIT_UPDATE_THRESHOLD_BYTES, creditUpdateDue, peerCredit, withinOurBuffer } from '../../host/vsock/device/credit.js';
import { OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND } from '../../host/vsock/device/packet.js';

const open = (extra: Partial<ConnControl> = {}): ConnControl => ({ ...initialControl('peer-init'), state: 'established', ...extra });
const guest = (op: number, flags = 0): ConnEvent => ({ kind: 'guest', op, flags });

interface Row {
  name: string;
  from: ConnControl;
  event: ConnEvent;
  state: ConnControl['state'];
  send?: number;
  host?: number;
  timer?: string;
  peerShutdown?: number;
  localShutdown?: number;
}

const rows: Row[] = [
  // Opening from the host: CONNECT line, REQUEST, the guest's answer.
  { name: 'CONNECT line → REQUEST, request timer', from: initialControl('handshake'), event: { kind: 'connect-line' }, state: 'local-init', send: SEND_REQUEST, timer: 'request' },
  { name: 'no CONNECT line in time → closed without a word to the guest', from: initialControl('handshake'), event: { kind: 'timeout' }, state: 'closed', host: HOST_CLOSE },
  { name: 'host closes before CONNECT', from: initialControl('handshake'), event: { kind: 'host-eof', hangup: true }, state: 'closed', host: HOST_CLOSE },
  { name: 'RESPONSE → established, OK to the host, timer off', from: { ...initialControl('handshake'), state: 'local-init' }, event: guest(OP_RESPONSE), state: 'established', host: HOST_WRITE_OK, timer: 'none' },
  { name: 'RST to our REQUEST (nothing listens) → closed without OK', from: { ...initialControl('handshake'), state: 'local-init' }, event: guest(OP_RST), state: 'closed', host: HOST_CLOSE },
  { name: 'the guest never answers → RST, host closed', from: { ...initialControl('handshake'), state: 'local-init' }, event: { kind: 'timeout' }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'host gives up before the answer → RST', from: { ...initialControl('handshake'), state: 'local-init' }, event: { kind: 'host-eof', hangup: true }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'anything but RESPONSE/RST while waiting → RST', from: { ...initialControl('handshake'), state: 'local-init' }, event: guest(OP_RW), state: 'closing', send: SEND_RST, host: HOST_CLOSE },

  // Opening from the guest: RESPONSE queued by the muxer; delivered → established.
  { name: 'RESPONSE delivered → established', from: initialControl('peer-init'), event: { kind: 'response-sent' }, state: 'established' },
  { name: 'guest resets before RESPONSE arrives', from: initialControl('peer-init'), event: guest(OP_RST), state: 'closed', host: HOST_CLOSE },
  { name: 'guest sends data before RESPONSE → RST', from: initialControl('peer-init'), event: guest(OP_RW), state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'host closes at once (before RESPONSE went out): SHUTDOWN after it', from: initialControl('peer-init'), event: { kind: 'host-eof', hangup: true }, state: 'peer-init', send: SEND_SHUTDOWN, timer: 'shutdown', localShutdown: SHUTDOWN_BOTH },

  // Established: data, credit.
  { name: 'RW is the data path (no transition)', from: open(), event: guest(OP_RW), state: 'established', timer: 'keep' },
  { name: 'CREDIT_UPDATE: nothing to do', from: open(), event: guest(OP_CREDIT_UPDATE), state: 'established' },
  { name: 'CREDIT_REQUEST → CREDIT_UPDATE', from: open(), event: guest(OP_CREDIT_REQUEST), state: 'established', send: SEND_CREDIT_UPDATE },
  { name: 'REQUEST on an open connection → RST', from: open(), event: guest(OP_REQUEST), state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'unknown op → RST', from: open(), event: guest(42), state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'RST → closed at once', from: open({ backlog: true }), event: guest(OP_RST), state: 'closed', host: HOST_CLOSE },
  { name: 'host socket fails → RST', from: open(), event: { kind: 'host-error' }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'a protocol violation (data past credit, malformed packet) → RST', from: open(), event: { kind: 'violation', why: 'credit' }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },

  // Guest shutdowns.
  { name: 'guest SHUTDOWN(SEND), nothing pending → half-close the host socket', from: open(), event: guest(OP_SHUTDOWN, SHUTDOWN_SEND), state: 'established', host: HOST_SHUT_WRITE, peerShutdown: SHUTDOWN_SEND },
  { name: 'guest SHUTDOWN(SEND) with a backlog → wait for it', from: open({ backlog: true }), event: guest(OP_SHUTDOWN, SHUTDOWN_SEND), state: 'established', peerShutdown: SHUTDOWN_SEND },
  { name: 'backlog drained after SHUTDOWN(SEND) → half-close now', from: open({ backlog: true, peerShutdown: SHUTDOWN_SEND }), event: { kind: 'drained' }, state: 'established', host: HOST_SHUT_WRITE },
  { name: 'guest SHUTDOWN(RCV|SEND), nothing pending → RST, host closed', from: open(), event: guest(OP_SHUTDOWN, SHUTDOWN_BOTH), state: 'closing', send: SEND_RST, host: HOST_SHUT_WRITE | HOST_CLOSE },
  { name: 'guest SHUTDOWN(RCV|SEND) with a backlog → drain timer', from: open({ backlog: true }), event: guest(OP_SHUTDOWN, SHUTDOWN_BOTH), state: 'established', timer: 'drain' },
  { name: 'drained after both → RST', from: open({ backlog: true, peerShutdown: SHUTDOWN_BOTH }), event: { kind: 'drained' }, state: 'closing', send: SEND_RST, host: HOST_SHUT_WRITE | HOST_CLOSE },
  { name: 'drain timer fires → RST (a host reader that never reads)', from: open({ backlog: true, peerShutdown: SHUTDOWN_BOTH }), event: { kind: 'timeout' }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'shutdown flags are sticky (RCV then SEND = both)', from: open({ peerShutdown: SHUTDOWN_RCV }), event: guest(OP_SHUTDOWN, SHUTDOWN_SEND), state: 'closing', send: SEND_RST },
  { name: 'data after the guest promised not to send → RST', from: open({ peerShutdown: SHUTDOWN_SEND }), event: guest(OP_RW), state: 'closing', send: SEND_RST, host: HOST_CLOSE },

  // Host ends.
  { name: 'host half-closes (EOF) → SHUTDOWN(SEND), the guest may still send', from: open(), event: { kind: 'host-eof', hangup: false }, state: 'established', send: SEND_SHUTDOWN, localShutdown: SHUTDOWN_SEND, timer: 'keep' },
  { name: 'host closes completely (EOF + HUP) → SHUTDOWN(RCV|SEND), shutdown timer', from: open(), event: { kind: 'host-eof', hangup: true }, state: 'established', send: SEND_SHUTDOWN, localShutdown: SHUTDOWN_BOTH, timer: 'shutdown' },
  { name: 'HUP after a half-close adds RCV', from: open({ localShutdown: SHUTDOWN_SEND }), event: { kind: 'host-eof', hangup: true }, state: 'established', send: SEND_SHUTDOWN, localShutdown: SHUTDOWN_BOTH, timer: 'shutdown' },
  { name: 'a repeated EOF changes nothing', from: open({ localShutdown: SHUTDOWN_SEND }), event: { kind: 'host-eof', hangup: false }, state: 'established' },
  { name: 'the guest never answers our SHUTDOWN → RST', from: open({ localShutdown: SHUTDOWN_BOTH }), event: { kind: 'timeout' }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },
  { name: 'both sides done sending (guest SEND after host EOF) → RST', from: open({ localShutdown: SHUTDOWN_SEND }), event: guest(OP_SHUTDOWN, SHUTDOWN_SEND), state: 'closing', send: SEND_RST, host: HOST_SHUT_WRITE | HOST_CLOSE },
  { name: 'host EOF after the guest shut its sending side → RST instead of SHUTDOWN', from: open({ peerShutdown: SHUTDOWN_SEND, hostWriteShut: true }), event: { kind: 'host-eof', hangup: false }, state: 'closing', send: SEND_RST, host: HOST_CLOSE },

  // Closing: only the guest's RST matters (the muxer removes it once our RST went out).
  { name: 'closing ignores data', from: open({ state: 'closing' }), event: guest(OP_RW), state: 'closing' },
  { name: "closing + the guest's own RST → closed", from: open({ state: 'closing' }), event: guest(OP_RST), state: 'closed', host: HOST_CLOSE },
  { name: 'closed stays closed', from: open({ state: 'closed' }), event: guest(OP_REQUEST), state: 'closed' },
];

describe('connection state machine', () => {
  for (const r of rows) {
    it(r.name, () => {
      const s = step(r.from, r.event);
      assert.equal(s.next.state, r.state, 'state');
      if (r.send !== undefined) assert.equal(s.send, r.send, 'packets for the guest');
      else assert.equal(s.send & SEND_RST, 0, 'no RST');
      if (r.host !== undefined) assert.equal(s.host, r.host, 'host socket actions');
      if (r.timer !== undefined) assert.equal(s.timer, r.timer, 'timer');
      if (r.peerShutdown !== undefined) assert.equal(s.next.peerShutdown, r.peerShutdown, 'guest shutdown flags');
      if (r.localShutdown !== undefined) assert.equal(s.next.localShutdown, r.localShutdown, 'our shutdown flags');
      if (s.next.state === 'closed' || s.next.state === 'closing') assert.equal(s.timer === 'none' || s.timer === 'keep', true, 'no timer armed on the way out');
    });
  }

  it('which direction carries data in which state', () => {
    const table: [ConnControl, boolean, boolean][] = [
      [open(), true, true],
      [open({ peerShutdown: SHUTDOWN_SEND }), false, true],
      [open({ peerShutdown: SHUTDOWN_RCV }), true, false],
      [open({ localShutdown: SHUTDOWN_SEND }), true, false],
      [initialControl('peer-init'), false, false],
      [open({ state: 'local-init' }), false, false],
      [open({ state: 'closing' }), false, false],
    ];
    for (const [c, guestData, hostData] of table) {
      assert.equal(acceptsGuestData(c), guestData, `guest data in ${JSON.stringify(c)}`);
      assert.equal(carriesHostData(c), hostData, `host data in ${JSON.stringify(c)}`);
    }
  });
});

describe('credit', () => {
  it('peer credit: its buffer minus what is in flight, modulo 2^32, never negative', () => {
    const table: [number, number, number, number][] = [
      // bufAlloc, sent, fwdCnt → credit
      [262144, 0, 0, 262144],
      [262144, 100_000, 0, 162144],
      [262144, 262144, 0, 0],
      [262144, 300_000, 0, 0],
      [262144, 300_000, 100_000, 62144],
      [65536, 10, 0xffff_fff6, 65516],
      [65536, 0xffff_ffff, 0xffff_fff0, 65521],
      [65536, 5, 10, 0],
      [0, 0, 0, 0],
    ];
    for (const [bufAlloc, sent, fwd, credit] of table) assert.equal(peerCredit(bufAlloc, sent, fwd), credit, `${bufAlloc}/${sent}/${fwd}`);
  });

  it('our buffer: a guest may not have more than CONN_BUFFER_BYTES with us', () => {
    const table: [number, number, number, boolean][] = [
      // received, fwdCnt, len → fits
      [0, 0, CONN_BUFFER_BYTES, true],
      [0, 0, CONN_BUFFER_BYTES + 1, false],
      [100, 0, CONN_BUFFER_BYTES - 100, true],
      [100, 0, CONN_BUFFER_BYTES - 99, false],
      [0xffff_fff0, 0xffff_fff0, 4096, true],
      [5, 0xffff_fff0, CONN_BUFFER_BYTES - 21, true],
      [5, 0xffff_fff0, CONN_BUFFER_BYTES - 20, false],
    ];
    for (const [received, fwd, len, fits] of table) assert.equal(withinOurBuffer(CONN_BUFFER_BYTES, received, fwd, len), fits, `${received}/${fwd}/${len}`);
  });

  it('a credit update goes out when the space the guest knows of runs low and we freed some', () => {
    const B = CONN_BUFFER_BYTES;
    const T = CREDIT_UPDATE_THRESHOLD_BYTES;
    const table: [string, number, number, number, boolean][] = [
      // received, fwdCnt, lastFwdCntSent → due
      ['nothing forwarded since the last update', B, 0, 0, false],
      ['the guest still sees plenty', T - 1, T - 1, 0, false],
      ['the guest sees less than the threshold, and we freed space', B - T + 1, B - T + 1, 0, true],
      ['the guest is out of credit, we forwarded a little', B, 1, 0, true],
      ['…and it already knows', B, 1, 1, false],
      ['across the 2^32 wrap', (B - 10) >>> 0, 5, 0xffff_fff0, true],
    ];
    for (const [what, received, fwd, last, due] of table) assert.equal(creditUpdateDue(B, received >>> 0, fwd >>> 0, last >>> 0), due, what);
  });
});
