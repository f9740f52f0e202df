/**
 * The ingress fast path: client connections of volantd's API server are read here first, with
 * Node's llhttp parser (llhttp.ts) and no `IncomingMessage`/`ServerResponse`/undici per request.
 *
 *   client socket ─▶ request head parsed once ─▶ request-line rule, bearer auth, path hygiene,
 *   header rules (the same functions as everywhere: shared/http-request-line.ts, host/api/auth.ts
 *   via `authorize`, path.ts, headers.ts) ─▶ cached VM lookup ─▶ pre-serialised head on a warm
 *   per-VM socket (upstream.ts) ─▶ response head checked (shared/http-response-head.ts) and
 *   written with the body of the same read in one corked batch.
 *
 * A request that is not a proxy request (API routes, CONNECT, anything else) hands the whole
 * connection to Node's HTTP server (`handOver`), at a request boundary: its head, re-serialised
 * from what llhttp parsed, and every byte after it, are given back to the socket first, so the
 * API sees exactly the request the client sent. From then on the connection is the server's
 * (its proxy requests take the compatibility path, index.ts `handleRequest`, with the same rules).
 *
 * What must hold (the hardening rules, here as on every path):
 *  - one request at a time per connection, answered in order: pipelined requests queue (their
 *    bodies are what one read brought, and reading stops while a request waits);
 *  - bodies stream both ways with backpressure, never buffered whole; a chunked request body is
 *    re-chunked for the guest, a response without Content-Length is chunked for an HTTP/1.1
 *    client and close-delimited for HTTP/1.0;
 *  - every refusal is the one JSON error shape with its stable code (400/401/404/409/502/504 and
 *    the parser's own 431/408/400 through `clientErrorRefusal`); a refusal that leaves the rest
 *    of the connection's bytes unframed closes it, one that does not keeps it alive;
 *  - a guest head that breaks the response rules, a framing error in the read that brought the
 *    head, or a guest that closes before answering is a 502 before anything reaches the client;
 *    after the head has gone out a failure cuts the client connection;
 *  - upgrades leave the fast path for upgrade.ts (nothing of the client's flows before a 101);
 *  - a client that leaves aborts its exchange (the guest socket is not reused).
 */

import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import { VolantError } from '../../shared/errors.js';
import { clientErrorRefusal, ERROR_LINGER_MS, rawErrorResponse } from '../../shared/http-error-response.js';
import { httpVersionRefusal } from '../../shared/http-request-line.js';
import { ResponseHeadCheck } from '../../shared/http-response-head.js';
import type { Logger } from '../log/logger.js';
import { describeTransport } from './dialer.js';
import { asVolantError, badResponseHead, logFailure, upstreamFailure } from './failures.js';
import { downstreamResponseHeaders, type UpstreamRequestHead, upstreamRequestHead } from './headers.js';
import { CONTINUE, isParserError, type LlhttpParser, METHODS, newParser, type ParserError, STOP_AFTER_HEAD } from './llhttp.js';
import { matchProxyPath } from './path.js';
import type { ResponseSink, TickClock, UpstreamConn, VmUpstreams } from './upstream.js';

export interface FrontTarget {
  vmName: string;
  /** The VM's sockets for one upstream target (`ingressUpstreamPort` decides which port serves it). */
  upstreamsFor(upstreamPath: string): VmUpstreams;
}

/** What the fast path needs from the ingress (index.ts) and the API server (host/api/server.ts). */
export interface FrontContext {
  /** The VM's upstream sockets; throws or rejects `VolantError` (NOT_FOUND 404, INVALID_STATE 409, …). */
  target(vmName: string): FrontTarget | Promise<FrontTarget>;
  /** The refusal for this connection's `Authorization` value, or undefined when it may proceed. */
  authorize(authorization: string | undefined, socket: Socket): VolantError | undefined;
  /** Whether `Authorization` carries volantd's token on this connection (then it is not forwarded). */
  consumesAuthorization(socket: Socket): boolean;
  /** Node's HTTP server takes the connection; `bytes` go back to the socket before anything else. */
  handOver(socket: Socket, bytes: Buffer): void;
  /** An upgrade request for a proxy route: upgrade.ts from here on (the socket is no longer ours). */
  upgrade(socket: Socket, clientHead: Buffer, req: { method: string; path: string; head: UpstreamRequestHead; vmName: string }): void;
  counters: { requests: number; refused: number; responses: number; upstreamErrors: number; clientAborts: number };
  clock: TickClock;
  maxHeaderBytes: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  log?: Logger;
}

type ParserWithConn = LlhttpParser & { conn: ClientConn };

function onMessageBegin(this: ParserWithConn): void {
  this.conn.headStarted = this.conn.ctx.clock.now;
}

function onHeaders(this: ParserWithConn, headers: string[], url: string): void {
  const c = this.conn;
  for (let i = 0; i < headers.length; i++) c.headerAcc.push(headers[i]!);
  c.urlAcc += url;
}

function onHeadersComplete(
  this: ParserWithConn,
  major: number,
  minor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  _status: number,
  _statusMessage: string,
  upgrade: boolean,
  keepAlive: boolean,
): number {
  return this.conn.requestHead(major, minor, headers, method, url, upgrade, keepAlive);
}

function onBody(this: ParserWithConn, chunk: Buffer): void {
  this.conn.parsing?.requestBody(chunk);
}

function onMessageComplete(this: ParserWithConn): void {
  const c = this.conn;
  const ex = c.parsing;
  c.parsing = null;
  ex?.requestEnd();
}

function onClientData(this: Socket & { conn?: ClientConn }, chunk: Buffer): void {
  this.conn?.read(chunk);
}

function onClientEnd(this: Socket & { conn?: ClientConn }): void {
  this.conn?.ended();
}

function onClientClose(this: Socket & { conn?: ClientConn }): void {
  this.conn?.closed();
}

function onClientDrain(this: Socket & { conn?: ClientConn }): void {
  this.conn?.queue[0]?.clientDrained();
}

function onClientError(this: Socket): void {
  this.destroy();
}

/** The set of client connections on the fast path, swept for timeouts and cut on close. */
export class Front {
  readonly conns = new Set<ClientConn>();

  constructor(readonly ctx: FrontContext) {}

  accept(socket: Socket): void {
    const conn = new ClientConn(socket, this);
    this.conns.add(conn);
  }

  sweep(): void {
    for (const c of this.conns) c.sweep();
  }

  close(): void {
    for (const c of [...this.conns]) c.socket.destroy();
  }
}

export class ClientConn {
  readonly ctx: FrontContext;
  readonly queue: Exchange[] = [];
  /** The exchange whose request body is being read. */
  parsing: Exchange | null = null;
  headerAcc: string[] = [];
  urlAcc = '';
  /** Tick at which the current request head began; -1 when no head is being read. */
  headStarted = -1;
  private idleSince: number;
  private readonly parser: ParserWithConn;
  private readonly remoteAddress: string | undefined;
  /** The last `Authorization` value accepted on this connection (checked once per connection and value). */
  private authorizedAs: string | undefined;
  /** Once set, no more bytes are parsed (handed over, upgraded, or closing after a refusal). */
  private stopped = false;
  /** Where the connection goes when the queue empties: Node's server (bytes) or upgrade.ts. */
  private leave: (() => void) | null = null;
  private gone = false;
  pausedForBody = false;
  /** Inside `execute`: exchanges wait until the read is parsed whole (a framing error later in it refuses them all). */
  private inExecute = false;

  constructor(
    readonly socket: Socket,
    private readonly front: Front,
  ) {
    this.ctx = front.ctx;
    this.idleSince = this.ctx.clock.now;
    this.remoteAddress = socket.remoteAddress;
    this.parser = newParser<ClientConn, ParserWithConn>('request', this.ctx.maxHeaderBytes, this, {
      messageBegin: onMessageBegin,
      headers: onHeaders,
      headersComplete: onHeadersComplete,
      body: onBody,
      messageComplete: onMessageComplete,
    });
    const s = socket as Socket & { conn?: ClientConn };
    s.conn = this;
    s.setNoDelay(true);
    s.on('data', onClientData);
    s.on('end', onClientEnd);
    s.on('close', onClientClose);
    s.on('drain', onClientDrain);
    s.on('error', onClientError);
  }

  read(chunk: Buffer): void {
    if (this.stopped) return;
    this.inExecute = true;
    const r = this.parser.execute(chunk);
    this.inExecute = false;
    if (isParserError(r)) {
      this.parserRefused(r);
      return;
    }
    if (this.leave !== null) {
      // Parsing stopped after a head that leaves the fast path: the rest is not ours to read.
      this.stopped = true;
      this.pendingBytes = r < chunk.length ? chunk.subarray(r) : EMPTY;
      this.socket.pause();
      if (this.queue.length === 0) this.depart();
      else this.queue[0]!.start();
      return;
    }
    // Only now, with the whole read parsed and accepted, does anything go to a guest.
    this.queue[0]?.start();
    if (this.queue.length > 1) this.socket.pause();
  }

  /** Bytes after the head that left the fast path (handed to Node's server or the tunnel). */
  pendingBytes: Buffer = EMPTY;

  requestHead(major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, upgrade: boolean, keepAlive: boolean): number {
    this.headStarted = -1;
    let raw = headers ?? [];
    if (this.headerAcc.length > 0) {
      raw = this.headerAcc.concat(raw);
      this.headerAcc = [];
    }
    const target = this.urlAcc + (url ?? '');
    this.urlAcc = '';
    const methodName = METHODS[method] ?? 'GET';
    let match: ReturnType<typeof matchProxyPath>;
    try {
      match = matchProxyPath(target);
    } catch (e) {
      this.refuse(asVolantError(e), true, true);
      return STOP_AFTER_HEAD;
    }
    if (match === null || methodName === 'CONNECT') {
      // Not ours: Node's server gets the connection from this request on.
      const bytes = serialiseHead(methodName, target, major, minor, raw);
      this.leave = () => this.ctx.handOver(this.socket, this.pendingBytes.length > 0 ? Buffer.concat([bytes, this.pendingBytes]) : bytes);
      return STOP_AFTER_HEAD;
    }
    // The request-line rule (shared/http-request-line.ts), then auth, as for every API request.
    let host: string | undefined;
    let authorization: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i]!;
      if (n.length === 4 && n.toLowerCase() === 'host') host = raw[i + 1];
      else if (n.length === 13 && n.toLowerCase() === 'authorization') authorization = raw[i + 1];
    }
    const version = httpVersionRefusal(major, minor);
    if (version !== undefined || (minor === 1 && host === undefined)) {
      this.refuse(version ?? new VolantError('INVALID_ARGUMENT', 'HTTP/1.1 request without a Host header'), true, false);
      return STOP_AFTER_HEAD;
    }
    if (authorization === undefined || authorization !== this.authorizedAs) {
      const denied = this.ctx.authorize(authorization, this.socket);
      if (denied !== undefined) {
        this.refuse(denied, upgrade, false);
        return upgrade ? STOP_AFTER_HEAD : CONTINUE;
      }
      this.authorizedAs = authorization;
    }
    let head: UpstreamRequestHead;
    try {
      head = upstreamRequestHead(raw, {
        remoteAddress: this.remoteAddress,
        proto: 'http',
        httpVersionMinor: minor,
        upgrade,
        dropAuthorization: this.ctx.consumesAuthorization(this.socket),
      });
      // Bytes after an upgrade request's head belong to the new protocol; a body would blur that line.
      if (upgrade && head.hasBody) throw new VolantError('INVALID_ARGUMENT', 'an upgrade request must not carry a body');
    } catch (e) {
      this.refuse(asVolantError(e), true, true);
      return STOP_AFTER_HEAD;
    }
    if (upgrade) {
      const m = match;
      this.leave = () => this.ctx.upgrade(this.socket, this.pendingBytes, { method: methodName, path: m.upstreamPath, head, vmName: m.vmName });
      return STOP_AFTER_HEAD;
    }
    this.ctx.counters.requests++;
    const ex = new Exchange(this, methodName, match.vmName, match.upstreamPath, head, keepAlive, minor === 0);
    // Before it starts: a request without a body is complete already when its guest socket is attached.
    if (head.hasBody) this.parsing = ex;
    else ex.requestDone = true;
    this.enqueue(ex);
    return CONTINUE;
  }

  private enqueue(ex: Exchange): void {
    this.queue.push(ex);
    if (this.queue.length === 1 && !this.inExecute) ex.start();
  }

  /**
   * Answers `err` in order (after the requests before it). `close`: the rest of the connection's
   * bytes cannot be trusted to frame a next request, so nothing more is read and the connection
   * ends after the answer.
   */
  refuse(err: VolantError, close: boolean, counted: boolean): void {
    if (counted) this.ctx.counters.refused++;
    logFailure(this.ctx.log, err, {});
    if (close) this.stopped = true;
    const ex = new Exchange(this, 'GET', '', '/', null, !close, false);
    ex.preset = err;
    ex.requestDone = true;
    this.enqueue(ex);
  }

  /** llhttp refused the bytes (431 head too large, 400 malformed, 408 cut mid-head): answer and close. */
  private parserRefused(e: ParserError): void {
    this.stopped = true;
    const refusal = clientErrorRefusal(e, this.ctx.maxHeaderBytes);
    if (refusal === undefined) {
      this.socket.destroy();
      return;
    }
    const active = this.queue[0];
    if (active !== undefined && active.headOut) {
      // Never write over a response whose head has gone out.
      this.socket.destroy();
      return;
    }
    // The requests read so far are abandoned (as Node's server does): the answer is the refusal.
    for (const ex of this.queue.splice(0)) ex.abandon();
    this.parsing = null;
    this.refuse(refusal, true, false);
  }

  /**
   * The client half-closed: a head cut short is a 408; otherwise, as with Node's server, the
   * client is gone (requests in flight are aborted upstream) and our side ends too.
   */
  ended(): void {
    if (!this.stopped) {
      const r = this.parser.finish();
      if (isParserError(r)) {
        this.parserRefused(r);
        return;
      }
    } else if (this.queue.some((ex) => ex.isRefusal)) {
      return; // our refusal is on its way, and it closes the connection
    }
    this.stopped = true;
    for (const ex of this.queue.splice(0)) ex.clientGone();
    this.parsing = null;
    this.socket.end();
  }

  closed(): void {
    if (this.gone) return;
    this.gone = true;
    this.front.conns.delete(this);
    (this.socket as Socket & { conn?: ClientConn }).conn = undefined;
    for (const ex of this.queue.splice(0)) ex.clientGone();
    this.parsing = null;
    this.freeParser();
  }

  private freeParser(): void {
    this.parser.remove?.();
    this.parser.free();
  }

  /** An exchange has written its last byte. */
  exchangeDone(ex: Exchange, close: boolean): void {
    if (this.queue[0] === ex) this.queue.shift();
    if (this.gone) return;
    if (close) {
      this.stopped = true;
      for (const rest of this.queue.splice(0)) rest.clientGone();
      this.socket.end();
      this.socket.resume(); // read and drop what the client still sends, so our answer is not lost to a reset
      setTimeout(destroySocket, ERROR_LINGER_MS, this.socket).unref();
      return;
    }
    const next = this.queue[0];
    if (next !== undefined) {
      next.start();
      return;
    }
    this.idleSince = this.ctx.clock.now;
    if (this.leave !== null && this.stopped) {
      this.depart();
      return;
    }
    if (this.stopped) {
      // The client half-closed and everything it asked is answered.
      this.socket.end();
      return;
    }
    if (!this.pausedForBody) this.socket.resume();
  }

  /** The connection leaves the fast path (hand-over or upgrade), with no exchange in flight. */
  private depart(): void {
    const leave = this.leave!;
    this.leave = null;
    this.gone = true;
    this.front.conns.delete(this);
    const s = this.socket as Socket & { conn?: ClientConn };
    s.conn = undefined;
    s.removeListener('data', onClientData);
    s.removeListener('end', onClientEnd);
    s.removeListener('close', onClientClose);
    s.removeListener('drain', onClientDrain);
    s.removeListener('error', onClientError);
    this.freeParser();
    leave();
  }

  sweep(): void {
    const { now, intervalMs } = this.ctx.clock;
    if (this.headStarted >= 0 && !this.stopped && (now - this.headStarted) * intervalMs >= this.ctx.headersTimeoutMs) {
      this.headStarted = -1;
      this.parserRefused({ code: 'ERR_HTTP_REQUEST_TIMEOUT', message: 'request head timeout', name: 'Error' } as ParserError);
      return;
    }
    if (this.queue.length === 0 && this.headStarted < 0 && !this.stopped && (now - this.idleSince) * intervalMs >= this.ctx.keepAliveTimeoutMs) {
      this.socket.destroy();
    }
  }
}

const EMPTY = Buffer.alloc(0);

function destroySocket(s: Socket): void {
  s.destroy();
}

/** A request head as bytes again, for Node's server (what llhttp accepted, re-spelled canonically). */
function serialiseHead(method: string, target: string, major: number, minor: number, raw: readonly string[]): Buffer {
  let text = major === 0 && minor === 9 ? `${method} ${target}\r\n` : `${method} ${target} HTTP/${major}.${minor}\r\n`;
  for (let i = 0; i < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return Buffer.from(`${text}\r\n`, 'latin1');
}

const CRLF = '\r\n';
const PRINTABLE_REASON = /^[\t\x20-\x7e]*$/;
const LAST_CHUNK = '0\r\n\r\n';

/** One request on a client connection, from its head to the last byte of its answer. */
export class Exchange implements ResponseSink {
  /** An answer decided before any dial (a refusal): written when this exchange's turn comes. */
  preset: VolantError | null = null;
  requestDone = false;
  headOut = false;
  private started = false;
  private finished = false;
  private upstream: UpstreamConn | null = null;
  private upstreams: VmUpstreams | null = null;
  /** Request body bytes that arrived before the guest socket did (one read's worth at most). */
  private body: Buffer[] | null = null;
  /** Response bytes of the current guest read, written together at its end. */
  private out: (string | Buffer)[] = [];
  private responseEnded = false;
  private chunkedOut = false;
  private closeAfter = false;
  private readonly waiter = { ready: (c: UpstreamConn) => this.attach(c), failed: (e: Error) => this.upstreamFailed(e) };

  constructor(
    private readonly conn: ClientConn,
    private readonly method: string,
    private readonly vmName: string,
    private readonly path: string,
    private readonly head: UpstreamRequestHead | null,
    private readonly keepAlive: boolean,
    private readonly http10: boolean,
  ) {}

  private get requestId(): string {
    return this.head?.requestId ?? '';
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.preset !== null) {
      this.writeError(this.preset, !this.keepAlive);
      return;
    }
    if (this.head!.expectContinue && this.head!.hasBody && !this.requestDone) this.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    let t: FrontTarget | Promise<FrontTarget>;
    try {
      t = this.conn.ctx.target(this.vmName);
    } catch (e) {
      this.lookupFailed(e);
      return;
    }
    if (t instanceof Promise) t.then((v) => this.dispatch(v), (e: unknown) => this.lookupFailed(e));
    else this.dispatch(t);
  }

  private dispatch(vm: FrontTarget): void {
    if (this.finished) return;
    this.upstreams = vm.upstreamsFor(this.path);
    this.upstreams.acquire(this.waiter);
  }

  private lookupFailed(e: unknown): void {
    if (this.finished) return;
    const err = asVolantError(e);
    logFailure(this.conn.ctx.log, err, { reqId: this.requestId, vm: this.vmName });
    this.writeError(err, !this.requestDone);
  }

  private attach(up: UpstreamConn): void {
    if (this.finished) {
      up.release(true);
      return;
    }
    this.upstream = up;
    const h = this.head!;
    let text = `${this.method} ${this.path} HTTP/1.1\r\n`;
    const hs = h.headers;
    for (let i = 0; i < hs.length; i += 2) text += `${hs[i]}: ${hs[i + 1]}\r\n`;
    if (h.chunked) text += 'transfer-encoding: chunked\r\n';
    text += CRLF;
    const s = up.socket;
    s.cork();
    up.begin(this, text, this.method === 'HEAD');
    const body = this.body;
    this.body = null;
    if (body !== null) for (const b of body) this.writeBody(b);
    if (this.requestDone) this.finishBody();
    s.uncork();
  }

  requestBody(chunk: Buffer): void {
    if (this.finished) return;
    if (this.upstream === null) {
      if (this.body === null) this.body = [chunk];
      else this.body.push(chunk);
      return;
    }
    if (!this.writeBody(chunk)) {
      this.conn.pausedForBody = true;
      this.conn.socket.pause();
    }
  }

  private writeBody(chunk: Buffer): boolean {
    const up = this.upstream!;
    // A long upload is not a silent guest: its head timeout counts from the last byte sent.
    up.lastActivity = up.clock.now;
    const s = up.socket;
    if (!this.head!.chunked) return s.write(chunk);
    s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    s.write(chunk);
    return s.write(CRLF, 'latin1');
  }

  requestEnd(): void {
    this.requestDone = true;
    if (this.upstream !== null && !this.finished) this.finishBody();
  }

  private finishBody(): void {
    const up = this.upstream!;
    if (this.head!.chunked) up.socket.write(LAST_CHUNK, 'latin1');
    up.requestSent = true;
    up.lastActivity = up.clock.now;
  }

  upstreamDrained(): void {
    if (!this.conn.pausedForBody) return;
    this.conn.pausedForBody = false;
    if (this.conn.queue.length <= 1) this.conn.socket.resume();
  }

  clientDrained(): void {
    this.upstream?.socket.resume();
  }

  private where(): string {
    return this.upstreams === null ? `VM ${this.vmName} agent` : `VM ${this.vmName} agent via ${describeTransport(this.upstreams.transport, this.upstreams.port)}`;
  }

  responseHead(status: number, reason: string, rawHeaders: string[], keepAlive: boolean): void {
    if (this.finished) return;
    this.upstream!.guestKeepAlive = keepAlive;
    if (status < 200) {
      this.upstreamFailed(badResponseHead(this.where(), `a ${status} answer to a request that asked for no upgrade`));
      return;
    }
    const check = new ResponseHeadCheck();
    const headers = downstreamResponseHeaders(rawHeaders, this.requestId, check);
    // obs-text in a reason phrase is refused too: clients decode it differently (undici, on the
    // compatibility path, turns it into U+FFFD, which the check refuses), so no path relays it.
    const problem = check.finish(status, reason) ?? (PRINTABLE_REASON.test(reason) ? undefined : 'the reason phrase holds a byte outside printable ASCII');
    if (headers === undefined || problem !== undefined) {
      this.upstreamFailed(badResponseHead(this.where(), problem ?? 'invalid header'));
      return;
    }
    let text = `HTTP/1.1 ${status} ${reason === '' ? (STATUS_CODES[status] ?? '') : reason}\r\n`;
    let hasLength = false;
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!;
      if (n.length === 14 && n.toLowerCase() === 'content-length') hasLength = true;
      text += `${n}: ${headers[i + 1]}\r\n`;
    }
    const bodyless = this.method === 'HEAD' || status === 204 || status === 304;
    if (!bodyless && !hasLength) {
      if (this.http10) this.closeAfter = true;
      else {
        this.chunkedOut = true;
        text += 'transfer-encoding: chunked\r\n';
      }
    }
    // A request whose body the guest did not wait for leaves the connection unframed: close it.
    if (!this.keepAlive || !this.requestDone) this.closeAfter = true;
    if (this.closeAfter) text += 'connection: close\r\n';
    else if (this.http10) text += 'connection: keep-alive\r\n';
    this.out.push(text + CRLF);
  }

  responseBody(chunk: Buffer): void {
    if (this.finished) return;
    if (this.chunkedOut) this.out.push(`${chunk.length.toString(16)}\r\n`, chunk, CRLF);
    else this.out.push(chunk);
  }

  responseEnd(): void {
    if (this.finished) return;
    if (this.chunkedOut) this.out.push(LAST_CHUNK);
    this.responseEnded = true;
  }

  /** The guest's read is parsed whole: what it brought leaves in one batch. */
  endOfRead(): void {
    if (this.finished) return;
    const out = this.out;
    if (out.length > 0) {
      this.out = [];
      this.headOut = true;
      const s = this.conn.socket;
      let ok = true;
      if (out.length === 1) ok = s.write(out[0]!, 'latin1');
      else {
        s.cork();
        for (const piece of out) ok = typeof piece === 'string' ? s.write(piece, 'latin1') : s.write(piece);
        s.uncork();
      }
      if (!ok && !this.responseEnded) this.upstream?.socket.pause();
    }
    if (this.responseEnded) {
      this.finished = true;
      this.conn.ctx.counters.responses++;
      const up = this.upstream;
      this.upstream = null;
      up?.release(this.requestDone);
      this.conn.exchangeDone(this, this.closeAfter);
    }
  }

  upstreamFailed(e: Error): void {
    if (this.finished) return;
    const err = upstreamFailure(e, this.where());
    this.conn.ctx.counters.upstreamErrors++;
    logFailure(this.conn.ctx.log, err, { reqId: this.requestId, vm: this.vmName });
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
    if (this.headOut) {
      // A response that has started cannot become an error: cut the connection.
      this.finished = true;
      this.conn.socket.destroy();
      return;
    }
    this.out = [];
    this.writeError(err, !this.requestDone);
  }

  /** Answers with the one JSON error shape; `close` when the connection cannot carry another request. */
  private writeError(err: VolantError, close: boolean): void {
    this.finished = true;
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
    const closing = close || !this.keepAlive || this.http10;
    const extra = this.requestId === '' ? undefined : { 'x-request-id': this.requestId };
    this.conn.socket.write(rawErrorResponse(err, extra, !closing), 'latin1');
    this.conn.exchangeDone(this, closing);
  }

  get isRefusal(): boolean {
    return this.preset !== null;
  }

  /** Dropped without an answer of its own (the connection is refused as a whole). */
  abandon(): void {
    this.clientGone(false);
  }

  /** The client connection closed: the guest's socket is not reused, a waiting request stops waiting. */
  clientGone(counted = true): void {
    if (this.finished) return;
    this.finished = true;
    if (counted && this.started && this.preset === null) this.conn.ctx.counters.clientAborts++;
    this.upstreams?.cancel(this.waiter);
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
  }
}

