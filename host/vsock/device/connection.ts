/**
 * The connection state machine: one pure function, `step`, decides what a connection does next
 * for each thing that can happen to it. The muxer (muxer.ts) owns the sockets and the counters
 * and carries out the decision; this file owns none of them, so every transition is a row in a
 * table test.
 *
 * Primer (virtio-vsock stream sockets, as Linux and Firecracker speak them):
 *  - Opening: the initiator sends REQUEST; the listener answers RESPONSE, or RST when nothing
 *    listens. Host-initiated connections start on the hybrid socket with `CONNECT <port>\n`
 *    (state `handshake`) and get `OK <port>\n` only once the guest answered RESPONSE.
 *  - Closing: SHUTDOWN carries sticky flags, RCV ("I receive no more") and SEND ("I send no
 *    more"). When both sides are done the peer that got SHUTDOWN(RCV|SEND) answers RST; whoever
 *    waits for that RST gives up after a timeout and sends it itself. RST ends a connection at
 *    once, in any state.
 *  - Half-close: a guest SHUTDOWN(SEND) becomes shutdown(SHUT_WR) on the host socket once every
 *    byte the guest sent has reached it; a host EOF (read returns 0) becomes SHUTDOWN(SEND), and
 *    SHUTDOWN(RCV|SEND) when the host closed its socket completely (EPOLLHUP).
 *
 * Asymmetry the states encode: guest → host bytes may wait in the connection's backlog (a slow
 * host reader), host → guest bytes never do (they are read from the socket only when the guest
 * has credit and an RX buffer). So closing towards the host waits for the backlog to drain
 * (`drained`), bounded by DRAIN_TIMEOUT_MS; closing towards the guest does not wait.
 */

import { OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND } from './packet.js';

/** A host client must finish `CONNECT <port>\n` within this (Cloud Hypervisor's bound). */
export const HANDSHAKE_TIMEOUT_MS = 2000;
/** The guest must answer a host-initiated REQUEST within this (Firecracker's CONN_REQUEST_TIMEOUT_MS). */
export const REQUEST_TIMEOUT_MS = 2000;
/** After the device sent SHUTDOWN(RCV|SEND), the guest must answer RST within this. */
export const SHUTDOWN_TIMEOUT_MS = 2000;
/** After the guest shut both ways, the backlog must reach the host within this. */
export const DRAIN_TIMEOUT_MS = 10_000;

export type ConnState =
  /** host-initiated: reading `CONNECT <port>\n` from the host client */
  | 'handshake'
  /** host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE */
  | 'local-init'
  /** guest-initiated: the host socket is connected, RESPONSE queued */
  | 'peer-init'
  | 'established'
  /** RST queued for the guest; the host socket is already closed */
  | 'closing'
  /** gone: the muxer drops it from the table */
  | 'closed';

export interface ConnControl {
  state: ConnState;
  /** SHUTDOWN flags the guest sent (sticky). */
  peerShutdown: number;
  /** SHUTDOWN flags the device sent or queued (sticky). */
  localShutdown: number;
  /** Guest → host bytes not yet written to the host socket. */
  backlog: boolean;
  /** shutdown(SHUT_WR) was done on the host socket. */
  hostWriteShut: boolean;
}

export type ConnEvent =
  | { kind: 'connect-line' }
  | { kind: 'guest'; op: number; flags: number }
  | { kind: 'response-sent' }
  /** read returned 0; `hangup` when the host closed completely (EPOLLHUP), not just its write side */
  | { kind: 'host-eof'; hangup: boolean }
  | { kind: 'host-error' }
  | { kind: 'drained' }
  | { kind: 'timeout' }
  /** The guest broke the protocol on this connection (a malformed packet, data past its credit). */
  | { kind: 'violation'; why: string };

/** Packets to queue for the guest. */
export const SEND_REQUEST = 1;
export const SEND_RESPONSE = 2;
export const SEND_RST = 4;
export const SEND_SHUTDOWN = 8;
export const SEND_CREDIT_UPDATE = 16;

/** Things to do to the host socket. */
export const HOST_WRITE_OK = 1;
export const HOST_SHUT_WRITE = 2;
export const HOST_CLOSE = 4;

export type TimerKind = 'handshake' | 'request' | 'shutdown' | 'drain';

export interface ConnStep {
  next: ConnControl;
  send: number;
  host: number;
  /** Arm this timer, clear any ('none'), or leave it ('keep'). */
  timer: TimerKind | 'none' | 'keep';
  /** Why the connection ends, when it does (for counters and the log). */
  ends?: string;
}

export const TIMEOUT_MS: Record<TimerKind, number> = {
  handshake: HANDSHAKE_TIMEOUT_MS,
  request: REQUEST_TIMEOUT_MS,
  shutdown: SHUTDOWN_TIMEOUT_MS,
  drain: DRAIN_TIMEOUT_MS,
};

export function initialControl(state: 'handshake' | 'peer-init'): ConnControl {
  return { state, peerShutdown: 0, localShutdown: 0, backlog: false, hostWriteShut: false };
}

/** Guest data is acceptable: the connection is open and the guest has not promised to stop sending. */
export function acceptsGuestData(c: ConnControl): boolean {
  return c.state === 'established' && (c.peerShutdown & SHUTDOWN_SEND) === 0;
}

/** The device may read the host socket for the guest: open, and neither side closed that direction. */
export function carriesHostData(c: ConnControl): boolean {
  return c.state === 'established' && (c.peerShutdown & SHUTDOWN_RCV) === 0 && (c.localShutdown & SHUTDOWN_SEND) === 0;
}

function reset(c: ConnControl, ends: string): ConnStep {
  return { next: { ...c, state: 'closing' }, send: SEND_RST, host: HOST_CLOSE, timer: 'none', ends };
}

function gone(c: ConnControl, ends: string): ConnStep {
  return { next: { ...c, state: 'closed' }, send: 0, host: HOST_CLOSE, timer: 'none', ends };
}

function same(c: ConnControl): ConnStep {
  return { next: c, send: 0, host: 0, timer: 'keep' };
}

/** After a shutdown or a drain: pass a guest half-close on, and end when nothing can flow any more. */
function settle(c: ConnControl, send: number, timer: ConnStep['timer']): ConnStep {
  const next = { ...c };
  let host = 0;
  if (next.peerShutdown & SHUTDOWN_SEND && !next.backlog && !next.hostWriteShut) {
    host |= HOST_SHUT_WRITE;
    next.hostWriteShut = true;
  }
  const guestDone = (next.peerShutdown & SHUTDOWN_SEND) !== 0;
  const hostDone = (next.localShutdown & SHUTDOWN_SEND) !== 0;
  if (next.peerShutdown === SHUTDOWN_BOTH || (guestDone && hostDone)) {
    if (!next.backlog) return { next: { ...next, state: 'closing' }, send: (send & ~SEND_SHUTDOWN) | SEND_RST, host: host | HOST_CLOSE, timer: 'none', ends: 'closed by both sides' };
    return { next, send, host, timer: 'drain' };
  }
  return { next, send, host, timer };
}

export function step(c: ConnControl, e: ConnEvent): ConnStep {
  if (c.state === 'closed') return same(c);
  if (c.state === 'closing') return e.kind === 'guest' && e.op === OP_RST ? gone(c, 'reset by the guest') : same(c);
  if (e.kind === 'timeout') {
    if (c.state === 'handshake') return gone(c, 'no CONNECT line in time');
    return reset(c, c.state === 'local-init' ? 'the guest did not answer REQUEST in time' : 'shutdown timed out');
  }
  if (e.kind === 'host-error') return c.state === 'handshake' ? gone(c, 'host socket failed') : reset(c, 'host socket failed');
  if (e.kind === 'violation') return reset(c, e.why);
  if (e.kind === 'connect-line') {
    if (c.state !== 'handshake') return same(c);
    return { next: { ...c, state: 'local-init' }, send: SEND_REQUEST, host: 0, timer: 'request' };
  }
  if (e.kind === 'response-sent') return c.state === 'peer-init' ? { next: { ...c, state: 'established' }, send: 0, host: 0, timer: 'keep' } : same(c);

  if (e.kind === 'host-eof') {
    if (c.state === 'handshake') return gone(c, 'host closed before CONNECT');
    if (c.state === 'local-init') return reset(c, 'host closed before the guest answered');
    const flags = c.localShutdown | SHUTDOWN_SEND | (e.hangup ? SHUTDOWN_RCV : 0);
    if (flags === c.localShutdown) return same(c);
    return settle({ ...c, localShutdown: flags }, SEND_SHUTDOWN, flags === SHUTDOWN_BOTH ? 'shutdown' : 'keep');
  }
  if (e.kind === 'drained') {
    if (c.state !== 'established' || !c.backlog) return same(c);
    return settle({ ...c, backlog: false }, 0, 'keep');
  }

  // A packet from the guest.
  if (e.op === OP_RST) return gone(c, c.state === 'local-init' ? 'the guest refused (nothing listens on that port)' : 'reset by the guest');
  switch (c.state) {
    case 'handshake':
      return same(c);
    case 'local-init':
      if (e.op === OP_RESPONSE) return { next: { ...c, state: 'established' }, send: 0, host: HOST_WRITE_OK, timer: 'none' };
      return reset(c, `unexpected ${e.op} while waiting for RESPONSE`);
    case 'peer-init':
      if (e.op === OP_CREDIT_UPDATE) return same(c);
      if (e.op === OP_CREDIT_REQUEST) return { next: c, send: SEND_CREDIT_UPDATE, host: 0, timer: 'keep' };
      return reset(c, `unexpected op ${e.op} before RESPONSE`);
    case 'established':
      switch (e.op) {
        case OP_RW:
          return acceptsGuestData(c) ? same(c) : reset(c, 'data after the guest shut its sending side');
        case OP_CREDIT_UPDATE:
          return same(c);
        case OP_CREDIT_REQUEST:
          return { next: c, send: SEND_CREDIT_UPDATE, host: 0, timer: 'keep' };
        case OP_SHUTDOWN: {
          const flags = c.peerShutdown | (e.flags & SHUTDOWN_BOTH);
          return settle({ ...c, peerShutdown: flags }, 0, 'keep');
        }
        case OP_REQUEST:
        case OP_RESPONSE:
          return reset(c, `unexpected op ${e.op} on an open connection`);
        default:
          return reset(c, `unknown op ${e.op}`);
      }
  }
}
