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
 * undici's client calls natively, no adapter), listeners added only when needed.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { downstreamResponseHeaders } from './headers.js';
import { sendError, upstreamFailure } from './error-response.js';

export interface ForwardStats {
  responses: number;
  upstreamErrors: number;
  clientAborts: number;
}

export class ForwardHandler {
  private abortUpstream: ((reason?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  private finished = false;
  private draining = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly requestId: string,
    private readonly where: string,
    private readonly stats: ForwardStats,
  ) {
    res.once('close', this.onClientClose);
  }

  /** Client went away (or the response finished): abort the upstream request if still running. */
  private readonly onClientClose = (): void => {
    if (this.finished) return;
    this.finished = true;
    this.stats.clientAborts++;
    this.abortUpstream?.(new Error('client closed the connection'));
  };

  private readonly onDrain = (): void => {
    this.draining = false;
    this.resumeUpstream?.();
  };

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

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    if (!this.draining) {
      this.draining = true;
      this.res.once('drain', this.onDrain);
    }
    return false;
  }

  onComplete(): void {
    this.finished = true;
    this.stats.responses++;
    this.res.end();
  }

  onError(err: Error): void {
    if (this.finished) return; // our own abort after the client left
    this.finished = true;
    this.stats.upstreamErrors++;
    sendError(this.res, upstreamFailure(err, this.where), this.requestId);
  }

  onUpgrade(): void {
    // Upgrade requests take the raw path (upgrade.ts); undici never sees one.
  }
}

export function dispatchOptions(req: IncomingMessage, path: string, headers: string[], hasBody: boolean): Dispatcher.DispatchOptions {
  return { path, method: req.method!, headers, body: hasBody ? req : null };
}
