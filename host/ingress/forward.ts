/**
 * One proxied request: an undici dispatch handler that streams the guest's response into the
 * client's `ServerResponse`.
 *
 * What must hold:
 *  - bodies stream both ways with backpressure: the request body is the `IncomingMessage` itself
 *    (undici pauses it when the guest connection is full); a response chunk that the client
 *    socket cannot take pauses the upstream parser until `drain`. Nothing is buffered whole.
 *  - a client that goes away aborts the upstream request (its connection is not reused).
 *  - the guest's response head is checked (shared/http-response-head.ts) before anything of it
 *    reaches the client: a bad status line, header or framing is a 502 JSON error, promptly.
 *  - before the response starts, a failure is a JSON error (502/504); after, the client
 *    connection is cut, because a half-sent response cannot be turned into an error. The head
 *    is held until the first body bytes, the end, or one event-loop turn (RESPONSE_HEAD_SETTLE_MS),
 *    so a framing error the parser finds in the same read (a bad chunk) is still a 502.
 *
 * This is the hot path: a plain class with the undici legacy handler methods (the interface
 * undici's client calls natively, no adapter), no closures per request; the client-gone
 * watcher is one listener per client connection, not per request.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { sendErrorResponse } from '../../shared/http-error-response.js';
import { ResponseHeadCheck } from '../../shared/http-response-head.js';
import type { VolantError } from '../../shared/errors.js';
import { describeTransport, type IngressTransport } from './dialer.js';
import type { Logger } from '../log/logger.js';
import { badResponseHead, logFailure, upstreamFailure } from './failures.js';
import { downstreamResponseHeaders } from './headers.js';

/**
 * How long a response head that arrived without body bytes waits before it is sent. One
 * event-loop turn: a parse error found in the same read reaches us with the socket's close,
 * which comes before the next timers phase.
 */
export const RESPONSE_HEAD_SETTLE_MS = 1;

interface PendingHead {
  statusCode: number;
  statusText: string;
  headers: string[];
}

export interface ForwardStats {
  responses: number;
  upstreamErrors: number;
  clientAborts: number;
}

/** The request in flight on a client connection (HTTP/1.1: at most one is being answered). */
const inFlight = Symbol('volant.ingress.inFlight');
type WatchedSocket = Socket & { [inFlight]?: ForwardHandler | null };

function onClientSocketClose(this: WatchedSocket): void {
  const handler = this[inFlight];
  this[inFlight] = null;
  handler?.clientGone();
}

function commitSettled(handler: ForwardHandler): void {
  handler.commitHead();
}

/** Heads waiting for the end of the current parser turn: one microtask serves them all. */
let unsettled: ForwardHandler[] = [];

function settleAll(): void {
  const batch = unsettled;
  unsettled = [];
  for (const h of batch) h.settleHead();
}

function settleAfterThisTurn(h: ForwardHandler): void {
  if (unsettled.push(h) === 1) queueMicrotask(settleAll);
}

function onResponseDrain(this: ServerResponse & { [inFlight]?: ForwardHandler }): void {
  this[inFlight]?.drained();
}

export class ForwardHandler {
  private abortUpstream: ((reason?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  private finished = false;
  private draining = false;
  /**
   * The first body chunk, held until the same parser turn tells us whether more follows: a
   * small response then leaves in one `res.end(chunk)`. A microtask flushes it otherwise, so a
   * streaming response (logs, SSE) is never delayed.
   */
  private held: Buffer | null = null;
  private streaming = false;
  /** The validated head, not yet written: see RESPONSE_HEAD_SETTLE_MS. */
  private pending: PendingHead | null = null;
  private settleTimer: NodeJS.Timeout | undefined;
  private readonly socket: WatchedSocket | null;

  constructor(
    private readonly res: ServerResponse,
    private readonly requestId: string,
    private readonly vmName: string,
    private readonly transport: IngressTransport,
    private readonly stats: ForwardStats,
    private readonly log?: Logger,
  ) {
    const socket = res.socket as WatchedSocket | null;
    this.socket = socket;
    if (socket === null) {
      // A pipelined response queued behind another one gets its socket later.
      res.once('close', () => this.clientGone());
      return;
    }
    if (socket.destroyed) {
      this.finished = true;
      return;
    }
    const current = socket[inFlight];
    if (current === undefined) socket.once('close', onClientSocketClose);
    if (current === undefined || current === null) socket[inFlight] = this;
    else res.once('close', () => this.clientGone()); // pipelined behind a response still in flight
  }

  /** The client connection closed before the response finished: abort upstream. */
  clientGone(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.settleTimer);
    this.stats.clientAborts++;
    this.abortUpstream?.(new Error('client closed the connection'));
  }

  drained(): void {
    this.draining = false;
    this.resumeUpstream?.();
  }

  private done(): void {
    this.finished = true;
    if (this.socket !== null && this.socket[inFlight] === this) this.socket[inFlight] = null;
  }

  onConnect(abort: (reason?: Error) => void): void {
    if (this.finished) abort(new Error('client closed the connection'));
    else this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true; // 1xx: informational, our server speaks for itself
    if (this.finished) return false;
    const check = new ResponseHeadCheck();
    const headers = downstreamResponseHeaders(rawHeaders, this.requestId, check);
    const problem = check.finish(statusCode, statusText);
    if (headers === undefined || problem !== undefined) {
      this.fail(badResponseHead(this.where(), problem ?? 'invalid header'));
      return false;
    }
    this.resumeUpstream = resume;
    this.pending = { statusCode, statusText, headers };
    settleAfterThisTurn(this);
    return true;
  }

  /** After the parser's turn: a head that no body bytes followed is sent after RESPONSE_HEAD_SETTLE_MS. */
  settleHead(): void {
    if (this.pending === null || this.finished || this.settleTimer !== undefined) return;
    this.settleTimer = setTimeout(commitSettled, RESPONSE_HEAD_SETTLE_MS, this);
  }

  /** Writes the held head; false when Node refused it (the request has then failed). */
  commitHead(): boolean {
    const head = this.pending;
    if (head === null) return true;
    this.pending = null;
    clearTimeout(this.settleTimer);
    try {
      this.res.writeHead(head.statusCode, head.statusText || undefined, head.headers);
      return true;
    } catch (e) {
      this.fail(badResponseHead(this.where(), (e as Error).message));
      return false;
    }
  }

  private where(): string {
    return `VM ${this.vmName} agent via ${describeTransport(this.transport)}`;
  }

  /** Ends this request with an error: the upstream request is aborted and the client told. */
  private fail(err: VolantError): void {
    this.done();
    this.pending = null;
    clearTimeout(this.settleTimer);
    this.stats.upstreamErrors++;
    this.abortUpstream?.(err);
    logFailure(this.log, err, { reqId: this.requestId, vm: this.vmName });
    sendErrorResponse(this.res, err, { headers: { 'x-request-id': this.requestId } });
  }

  /** Writes the held chunk, if any, once the turn that delivered it is over. */
  readonly flushHeld = (): void => {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    this.streaming = true;
    if (!this.res.write(held)) this.waitForDrain();
  };

  private waitForDrain(): void {
    if (this.draining) return;
    this.draining = true;
    const res = this.res as ServerResponse & { [inFlight]?: ForwardHandler };
    res[inFlight] = this;
    res.once('drain', onResponseDrain);
  }

  onData(chunk: Buffer): boolean {
    if (this.finished) return false;
    if (this.pending !== null && !this.commitHead()) return false;
    if (!this.streaming) {
      if (this.held === null) {
        this.held = chunk;
        queueMicrotask(this.flushHeld);
        return true;
      }
      this.flushHeld();
    }
    if (this.res.write(chunk)) return true;
    this.waitForDrain();
    return false;
  }

  onComplete(): void {
    if (this.finished) return;
    if (this.pending !== null && !this.commitHead()) return;
    this.done();
    this.stats.responses++;
    const held = this.held;
    this.held = null;
    if (held === null) this.res.end();
    else this.res.end(held);
  }

  onError(err: Error): void {
    if (this.finished) return; // our own abort after the client left, or after a refused head
    this.done();
    this.pending = null;
    clearTimeout(this.settleTimer);
    this.stats.upstreamErrors++;
    const failure = upstreamFailure(err, this.where());
    logFailure(this.log, failure, { reqId: this.requestId, vm: this.vmName });
    sendErrorResponse(this.res, failure, { headers: { 'x-request-id': this.requestId } });
  }

  onUpgrade(): void {
    // Upgrade requests take the raw path (upgrade.ts); undici never sees one.
  }
}

export function dispatchOptions(req: IncomingMessage, path: string, headers: string[], hasBody: boolean): Dispatcher.DispatchOptions {
  return { path, method: req.method!, headers, body: hasBody ? req : null };
}
