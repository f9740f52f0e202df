/**
 * The fast path's connections to kestrel: per VM, a bounded set of keep-alive sockets opened
 * through the one dialer (dialer.ts `dialAgent`), each with its own response parser (llhttp.ts).
 * One request at a time per socket (no upstream pipelining: a slow response must not hold up the
 * next request); a socket goes back to its VM's idle list only after a complete response to a
 * completely sent request, with the guest not asking to close. Idle sockets are used newest
 * first (the warmest), and closed after `keepAliveTimeoutMs` idle (below kestrel's own 5 s, so
 * we close first rather than racing the guest's close); `forget` closes a VM's idle sockets and
 * lets the busy ones finish and close.
 *
 * Time is read from a tick counter the ingress's one sweep timer advances (`TickClock`), never
 * per request: headers and body timeouts, idle expiry, all at the sweep's granularity.
 *
 * What the parser reports goes to the request's `ResponseSink` (the exchange in front.ts). All
 * of one `execute` (one read from the guest) is reported before `endOfRead`, so the exchange can
 * hold a head until it knows whether the same read ended in a framing error (then the client
 * gets a 502, not half a response), and write what one read brought in one batch.
 */

import type { Socket } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import { type AgentTransport, dialAgent, transportKey } from './dialer.js';
import { CONTINUE, isParserError, type LlhttpParser, newParser, SKIP_BODY } from './llhttp.js';

/** Response heads from the guest larger than this are a 502 (the same bound as the API's request heads). */
export const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;

export interface TickClock {
  /** Advanced by the sweep; compare against a value read earlier. */
  now: number;
  /** Milliseconds between ticks. */
  readonly intervalMs: number;
}

export interface ResponseSink {
  /** The guest's head (raw name/value list); `keepAlive`: the guest keeps the connection. */
  responseHead(status: number, reason: string, rawHeaders: string[], keepAlive: boolean): void;
  responseBody(chunk: Buffer): void;
  responseEnd(): void;
  /** The exchange failed on the guest's side (unreachable, closed early, invalid HTTP, too slow). */
  upstreamFailed(err: VolantError | Error): void;
  /** One read from the guest has been parsed: write what it brought. */
  endOfRead(): void;
}

export interface UpstreamLimits {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  maxConnectionsPerVm: number;
  keepAliveTimeoutMs: number;
}

type ParserWithConn = LlhttpParser & { conn: UpstreamConn };

function onHeaders(this: ParserWithConn, headers: string[]): void {
  const acc = this.conn.headerAcc;
  for (let i = 0; i < headers.length; i++) acc.push(headers[i]!);
}

function onHeadersComplete(
  this: ParserWithConn,
  _major: number,
  _minor: number,
  headers: string[] | undefined,
  _method: number,
  _url: string | undefined,
  statusCode: number,
  statusMessage: string,
  _upgrade: boolean,
  keepAlive: boolean,
): number {
  const c = this.conn;
  let raw = headers ?? [];
  if (c.headerAcc.length > 0) {
    raw = c.headerAcc.concat(raw);
    c.headerAcc = [];
  }
  if (statusCode < 200 && statusCode !== 101) {
    // 1xx: informational, our side speaks for itself; the final response follows on this stream.
    c.informational = true;
    return SKIP_BODY;
  }
  c.lastActivity = c.clock.now;
  c.gotHead = true;
  c.sink?.responseHead(statusCode, statusMessage, raw, keepAlive);
  return c.headRequest ? SKIP_BODY : CONTINUE;
}

function onBody(this: ParserWithConn, chunk: Buffer): void {
  const c = this.conn;
  c.lastActivity = c.clock.now;
  c.sink?.responseBody(chunk);
}

function onMessageBegin(this: ParserWithConn): void {
  // A second message after the response we asked for: the guest sent more than one answer.
  if (this.conn.completed) this.conn.tainted = true;
}

function onMessageComplete(this: ParserWithConn): void {
  const c = this.conn;
  if (c.informational) {
    c.informational = false;
    return;
  }
  c.responseComplete();
}

function onSocketData(this: Socket & { conn?: UpstreamConn }, chunk: Buffer): void {
  this.conn?.read(chunk);
}

function onSocketEnd(this: Socket & { conn?: UpstreamConn }): void {
  this.conn?.closedByGuest();
}

function onSocketClose(this: Socket & { conn?: UpstreamConn }): void {
  this.conn?.closedByGuest();
}

function onSocketError(this: Socket & { conn?: UpstreamConn }, err: Error): void {
  this.conn?.failed(err);
}

function onSocketDrain(this: Socket & { conn?: UpstreamConn }): void {
  this.conn?.sink?.upstreamDrained?.();
}

/** One keep-alive socket to kestrel in one VM. */
export class UpstreamConn {
  sink: (ResponseSink & { upstreamDrained?: () => void }) | null = null;
  headerAcc: string[] = [];
  informational = false;
  headRequest = false;
  gotHead = false;
  /** The response has ended (the exchange releases the socket after the read that ended it). */
  completed = false;
  /** Bytes followed the response: this stream can never be trusted for another exchange. */
  tainted = false;
  /** The request (head and body) has been written completely. */
  requestSent = false;
  guestKeepAlive = true;
  /** Tick of the last sign of life during an exchange (dispatch, head, body), or of going idle. */
  lastActivity: number;
  private readonly parser: ParserWithConn;
  private dead = false;

  constructor(
    readonly socket: Socket,
    private readonly owner: VmUpstreams,
    readonly clock: TickClock,
  ) {
    this.lastActivity = clock.now;
    this.parser = newParser<UpstreamConn, ParserWithConn>('response', MAX_RESPONSE_HEAD_BYTES, this, {
      messageBegin: onMessageBegin,
      headers: onHeaders,
      headersComplete: onHeadersComplete,
      body: onBody,
      messageComplete: onMessageComplete,
    });
    const s = socket as Socket & { conn?: UpstreamConn };
    s.conn = this;
    s.setNoDelay?.(true);
    s.on('data', onSocketData);
    s.on('end', onSocketEnd);
    s.on('close', onSocketClose);
    s.on('error', onSocketError);
    s.on('drain', onSocketDrain);
    s.resume();
  }

  get busy(): boolean {
    return this.sink !== null;
  }

  /** Starts an exchange: `head` is the whole request head, written at once. */
  begin(sink: ResponseSink & { upstreamDrained?: () => void }, head: string, isHead: boolean): void {
    this.sink = sink;
    this.headRequest = isHead;
    this.gotHead = false;
    this.completed = false;
    this.requestSent = false;
    this.guestKeepAlive = true;
    this.lastActivity = this.clock.now;
    this.socket.write(head, 'latin1');
  }

  read(chunk: Buffer): void {
    if (this.sink === null) {
      // Bytes from the guest while nothing was asked: the stream is out of step; never reuse it.
      this.destroy();
      return;
    }
    const r = this.parser.execute(chunk);
    if (isParserError(r)) {
      this.failed(r);
      return;
    }
    this.sink?.endOfRead();
  }

  responseComplete(): void {
    if (this.sink === null || this.completed) return;
    this.completed = true;
    this.sink.responseEnd();
  }

  /**
   * The exchange is over (called after the read that completed the response was parsed whole);
   * back to the idle list when the stream is clean.
   */
  release(reusable: boolean): void {
    this.sink = null;
    if (this.dead) return;
    if (reusable && this.requestSent && this.guestKeepAlive && this.completed && !this.tainted) this.owner.idle(this);
    else this.destroy();
  }

  /** The guest closed (or reset) the connection. */
  closedByGuest(): void {
    if (this.dead) return;
    if (this.sink !== null) {
      // A close-delimited body ends here; anything else is a response cut short.
      const r = this.parser.finish();
      if (isParserError(r)) {
        this.failed(r);
        return;
      }
      if (!this.completed) {
        this.failed(new VolantError('UPSTREAM_UNREACHABLE', this.gotHead ? 'the guest closed the connection before the response ended' : 'the guest closed the connection without answering'));
        return;
      }
      this.guestKeepAlive = false;
      this.sink?.endOfRead();
    }
    this.destroy();
  }

  failed(err: Error): void {
    const sink = this.sink;
    this.sink = null;
    this.destroy();
    sink?.upstreamFailed(err);
  }

  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    (this.socket as Socket & { conn?: UpstreamConn }).conn = undefined;
    this.socket.destroy();
    this.parser.remove?.();
    this.parser.free();
    this.owner.gone(this);
  }
}

interface Waiter {
  ready(conn: UpstreamConn): void;
  failed(err: Error): void;
}

/** One VM's sockets to kestrel. */
export class VmUpstreams {
  readonly key: string;
  private readonly idleConns: UpstreamConn[] = [];
  private readonly all = new Set<UpstreamConn>();
  private dialing = 0;
  private readonly waiters: Waiter[] = [];
  private closed = false;

  constructor(
    readonly transport: AgentTransport,
    /** kestrel's HTTP agent port or its raw relay (dialer.ts `ingressUpstreamPort`). */
    readonly port: number,
    private readonly limits: UpstreamLimits,
    private readonly clock: TickClock,
    /** A dial failed: the ingress drops its cached lookup, so the next request asks where the VM is. */
    private readonly onDialFailed: () => void = () => undefined,
  ) {
    this.key = `${transportKey(transport)}:${port}`;
  }

  /** A socket for one exchange: an idle one, a new one, or the next one freed. */
  acquire(w: Waiter): void {
    if (this.closed) {
      w.failed(new VolantError('UPSTREAM_UNREACHABLE', 'the VM stopped while the request waited'));
      return;
    }
    const conn = this.idleConns.pop();
    if (conn !== undefined) {
      w.ready(conn);
      return;
    }
    this.waiters.push(w);
    if (this.all.size + this.dialing < this.limits.maxConnectionsPerVm) this.dial();
  }

  /** Gives up a wait (the client left). */
  cancel(w: Waiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private dial(): void {
    this.dialing++;
    dialAgent(this.transport, this.limits.connectTimeoutMs, undefined, this.port).then(
      (socket) => {
        this.dialing--;
        if (this.closed) {
          socket.destroy();
          return;
        }
        const conn = new UpstreamConn(socket, this, this.clock);
        this.all.add(conn);
        this.idle(conn);
      },
      (err: Error) => {
        this.dialing--;
        this.onDialFailed();
        // Every request waiting beyond what the remaining dials and sockets will serve learns why.
        // One failed dial fails one waiter; when nothing is left that could serve the rest, all of them.
        const failing = this.all.size === 0 && this.dialing === 0 ? this.waiters.splice(0) : this.waiters.splice(0, 1);
        for (const w of failing) w.failed(err);
      },
    );
  }

  idle(conn: UpstreamConn): void {
    if (this.closed) {
      conn.destroy();
      return;
    }
    const w = this.waiters.shift();
    if (w !== undefined) {
      w.ready(conn);
      return;
    }
    conn.lastActivity = this.clock.now;
    this.idleConns.push(conn);
  }

  gone(conn: UpstreamConn): void {
    this.all.delete(conn);
    const i = this.idleConns.indexOf(conn);
    if (i >= 0) this.idleConns.splice(i, 1);
    // A waiter behind a socket that died gets a fresh dial.
    if (this.waiters.length > this.dialing && !this.closed && this.all.size + this.dialing < this.limits.maxConnectionsPerVm) this.dial();
  }

  /** Timeouts, at the sweep: idle sockets past keep-alive, busy ones past the header or body timeout. */
  sweep(): void {
    const { now, intervalMs } = this.clock;
    for (const conn of [...this.all]) {
      const ms = (now - conn.lastActivity) * intervalMs;
      if (!conn.busy) {
        if (ms >= this.limits.keepAliveTimeoutMs) conn.destroy();
      } else if (ms >= (conn.gotHead ? this.limits.bodyTimeoutMs : this.limits.headersTimeoutMs)) {
        conn.failed(new VolantError('TIMEOUT', conn.gotHead ? `the response body stalled for ${this.limits.bodyTimeoutMs} ms` : `no response head within ${this.limits.headersTimeoutMs} ms`));
      }
    }
  }

  get size(): number {
    return this.all.size;
  }

  /** Idle sockets close now; busy ones close when their exchange ends; waiters fail. */
  close(): void {
    this.closed = true;
    for (const conn of [...this.idleConns]) conn.destroy();
    for (const w of this.waiters.splice(0)) w.failed(new VolantError('UPSTREAM_UNREACHABLE', 'the VM stopped while the request waited'));
  }

  /** Every socket closes now. */
  destroy(): void {
    this.close();
    for (const conn of [...this.all]) conn.failed(new VolantError('UPSTREAM_UNREACHABLE', 'volantd is shutting down'));
  }
}
