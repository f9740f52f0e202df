/**
 * The one writer of Volant's error responses on the wire. The API, the ingress, the egress proxy
 * and kestrel's servers all answer a failure the same way:
 *
 *   HTTP/1.1 <httpStatusFor(code)> <standard reason>
 *   content-type: application/json; charset=utf-8
 *
 *   { "error": { "code": "<ErrorCode>", "message": "<what was wrong>", "details"?: … } }
 *
 * on a `ServerResponse`, or, where no response object exists (an upgrade or CONNECT socket, the
 * HTTP parser's own refusals), as raw bytes on the socket followed by a close. The status comes
 * from `httpStatusFor` and nothing else, so a client branches on `code` alone.
 *
 * The HTTP parser's refusals (`clientError`) are mapped here too, by one pure function: a head
 * over the size limit is 431, a head that never finished (too slow, or the client closed
 * mid-head) is 408, everything else the parser refuses is 400. Servers install `answerClientError`
 * instead of Node's or fastify's defaults, which use other shapes or none.
 *
 * What must hold: a response that has started is never patched with an error (the connection is
 * cut instead); a status text or header left behind by a `writeHead` that threw cannot poison the
 * error response that follows.
 */

import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { httpStatusFor, VolantError } from './errors.js';

export const ERROR_CONTENT_TYPE = 'application/json; charset=utf-8';
/** After an error written on a raw socket, how long the client's remaining bytes are read and dropped before the socket is cut. */
export const ERROR_LINGER_MS = 2000;

/** Extra headers an error may carry (x-request-id, retry-after); values must be printable ASCII. */
export type ErrorHeaders = Readonly<Record<string, string>>;

const SAFE_HEADER_NAME = /^[A-Za-z0-9-]{1,64}$/;
const SAFE_HEADER_VALUE = /^[\x20-\x7e]{0,256}$/;

/** The JSON body of an error: `{"error":{"code","message"[,"details"]}}`. */
export function errorBody(err: VolantError): string {
  return JSON.stringify({ error: err.toJSON() });
}

export interface SendErrorOptions {
  headers?: ErrorHeaders;
  /** Close the connection after the error (the rest of the client's bytes cannot be trusted to frame a next request). */
  close?: boolean;
}

/** Answers `err` on a response that has not started; a started response is cut instead. */
export function sendErrorResponse(res: ServerResponse, err: VolantError, opts: SendErrorOptions = {}): void {
  if (res.headersSent || res.destroyed || res.writableEnded) {
    res.destroy();
    return;
  }
  const text = errorBody(err);
  // A writeHead that threw stored its status text and headers before throwing: drop them.
  res.statusMessage = '';
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  const headers: string[] = ['content-type', ERROR_CONTENT_TYPE, 'content-length', String(Buffer.byteLength(text))];
  pushSafeHeaders(headers, opts.headers);
  if (opts.close) headers.push('connection', 'close');
  res.writeHead(httpStatusFor(err.code), headers);
  res.end(text);
}

/**
 * Answers `err` as a complete HTTP/1.1 response on a raw socket, then closes it. The socket keeps
 * reading (and dropping) so that the client's close completes ours and the answer is not lost to
 * a reset; a client that never closes is cut after `lingerMs`.
 */
export function sendErrorOnSocket(socket: Duplex, err: VolantError, opts: { headers?: ErrorHeaders; lingerMs?: number } = {}): void {
  socket.on('error', () => socket.destroy());
  if (!socket.writable || socket.destroyed) {
    socket.destroy();
    return;
  }
  socket.end(rawErrorResponse(err, opts.headers));
  socket.resume();
  setTimeout(() => socket.destroy(), opts.lingerMs ?? ERROR_LINGER_MS).unref();
}

/**
 * The bytes `sendErrorOnSocket` writes (status line, headers, JSON body), for callers that own the
 * socket; `keepAlive` leaves out `connection: close` (the caller keeps reading requests after it).
 */
export function rawErrorResponse(err: VolantError, extra?: ErrorHeaders, keepAlive = false): string {
  const status = httpStatusFor(err.code);
  const text = errorBody(err);
  const headers: string[] = [];
  pushSafeHeaders(headers, extra);
  let lines = '';
  for (let i = 0; i < headers.length; i += 2) lines += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: ${ERROR_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(text)}\r\n${lines}${keepAlive ? '' : 'connection: close\r\n'}\r\n${text}`
  );
}

function pushSafeHeaders(out: string[], extra: ErrorHeaders | undefined): void {
  if (extra === undefined) return;
  for (const name in extra) {
    const value = extra[name]!;
    if (SAFE_HEADER_NAME.test(name) && SAFE_HEADER_VALUE.test(value)) out.push(name, value);
  }
}

/** Parser errors that mean "the request line itself is not HTTP/1.x as we serve it". */
const REQUEST_LINE_ERRORS = new Set(['HPE_INVALID_VERSION', 'HPE_INVALID_CONSTANT', 'HPE_INVALID_METHOD', 'HPE_INVALID_URL', 'HPE_PAUSED_H2_UPGRADE']);
/** Nothing to answer: the peer is gone. */
const PEER_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

export interface ParserError {
  code?: string;
  /** llhttp's explanation (`Invalid HTTP version`), when Node passes it on. */
  reason?: string;
  message?: string;
}

/**
 * What the HTTP parser's own refusal means for the client (pure): `undefined` when there is no
 * one to answer. `maxHeaderBytes` is named in the 431 message.
 */
export function clientErrorRefusal(err: ParserError, maxHeaderBytes: number): VolantError | undefined {
  const code = err.code ?? '';
  if (PEER_GONE.has(code)) return undefined;
  const why = typeof err.reason === 'string' && err.reason !== '' ? err.reason : (err.message ?? 'parse error');
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new VolantError('HEADERS_TOO_LARGE', `the request head exceeds ${maxHeaderBytes} bytes`);
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new VolantError('REQUEST_TIMEOUT', 'the request head did not arrive in time');
    case 'HPE_INVALID_EOF_STATE':
      return new VolantError('REQUEST_TIMEOUT', 'the connection ended before the request was complete');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new VolantError('PAYLOAD_TOO_LARGE', 'chunk extensions exceed the server limit');
    default:
      if (REQUEST_LINE_ERRORS.has(code)) {
        return new VolantError('INVALID_ARGUMENT', `malformed request line (${why}): only "METHOD target HTTP/1.0" or "HTTP/1.1" requests are served`);
      }
      return new VolantError('INVALID_ARGUMENT', `malformed HTTP request (${code === '' ? why : `${code}: ${why}`})`);
  }
}

/**
 * A server's `clientError` listener: answers in the one shape when no response is in flight on
 * the socket, then closes it. Returns the refusal it decided on (for audit and metrics), or
 * `undefined` when the peer was already gone.
 */
export function answerClientError(err: ParserError, socket: Duplex, maxHeaderBytes: number): VolantError | undefined {
  const refusal = clientErrorRefusal(err, maxHeaderBytes);
  if (refusal === undefined) socket.destroy();
  else writeClientErrorAnswer(socket, refusal);
  return refusal;
}

/** Writes a parser refusal on its socket unless a response is in flight there (then the socket is cut). */
export function writeClientErrorAnswer(socket: Duplex, refusal: VolantError): void {
  // Node's own rule: never write over a response whose head has gone out.
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (inFlight !== undefined && inFlight !== null && inFlight.headersSent) {
    socket.destroy();
    return;
  }
  sendErrorOnSocket(socket, refusal);
}
