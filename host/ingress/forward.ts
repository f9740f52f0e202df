/**
 * One proxied request: an undici dispatch handler that streams the guest's response into the
 * client's `ServerResponse`.
 *
 * What must hold:
 *  - bodies stream both ways with backpressure: the request body is the `IncomingMessage` itself
 *    (undici pauses it when the guest connection is full); a response chunk that the client
 *    socket cannot take pauses the upstream parser until `drain`. Nothing is buffered whole.
 *  - a client that goes away aborts the upstream request (its connection is not reused).
 *  - before the response starts, a failure is a JSON error (502/504); after, the client
 *    connection is cut, because a half-sent response cannot be turned into an error.
 *
 * This is the hot path: a plain class with the undici legacy handler methods (the interface
 * undici's client calls natively, no adapter), no closures per request; the client-gone
 * watcher is one listener per client connection, not per request.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { describeTransport, type IngressTransport } from './dialer.js';
import { sendError, upstreamFailure } from './error-response.js';
import { downstreamResponseHeaders } from './headers.js';

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
  private readonly socket: WatchedSocket | null;

  constructor(
    private readonly res: ServerResponse,
    private readonly requestId: string,
    private readonly vmName: string,
    private readonly transport: IngressTransport,
    private readonly stats: ForwardStats,
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
    this.resumeUpstream = resume;
    this.res.writeHead(statusCode, statusText || undefined, downstreamResponseHeaders(rawHeaders, this.requestId));
    return true;
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
    this.done();
    this.stats.responses++;
    const held = this.held;
    this.held = null;
    if (held === null) this.res.end();
    else this.res.end(held);
  }

  onError(err: Error): void {
    if (this.finished) return; // our own abort after the client left
    this.done();
    this.stats.upstreamErrors++;
    sendError(this.res, upstreamFailure(err, `VM ${this.vmName} agent via ${describeTransport(this.transport)}`), this.requestId);
  }

  onUpgrade(): void {
    // Upgrade requests take the raw path (upgrade.ts); undici never sees one.
  }
}

export function dispatchOptions(req: IncomingMessage, path: string, headers: string[], hasBody: boolean): Dispatcher.DispatchOptions {
  return { path, method: req.method!, headers, body: hasBody ? req : null };
}
