/**
 * Node's own HTTP/1.1 parser (llhttp, the one behind `node:http`'s server and client), used
 * directly by the ingress fast path (front.ts, upstream.ts): a request or response head is
 * parsed once, in native code, with the same strictness as Node's server (no lenient flags), and
 * no `IncomingMessage`/`ServerResponse` stream objects are built around it.
 *
 * `_http_common` is the module Node's http server and client take the parser from; it is not in
 * Node's public documentation, so everything the ingress needs from it is typed and named here
 * and nowhere else. Callbacks are called with the parser as `this`; the ones the ingress sets:
 *   kOnMessageBegin()                      a message starts
 *   kOnHeaders(headers, url)               more than 32 header pairs: a batch, before the rest
 *   kOnHeadersComplete(major, minor, headers, method, url, statusCode, statusMessage, upgrade, keepAlive)
 *                                          return 0, 1 (no body: HEAD, 1xx) or 2 (stop here: upgrade,
 *                                          hand-over; `execute` then returns the offset after the head)
 *   kOnBody(chunk)                         a slice of the buffer passed to `execute` (de-chunked)
 *   kOnMessageComplete()
 * `execute` returns the bytes parsed, or an Error with `code` (`HPE_*`) and `bytesParsed`.
 */

import { createRequire } from 'node:module';

export interface ParserError extends Error {
  code: string;
  reason?: string;
  bytesParsed?: number;
}

export interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | ParserError;
  /** End of input (the peer closed): completes a close-delimited message, or an error. */
  finish(): number | ParserError | undefined;
  remove(): void;
  free(): void;
  [callback: number]: ((...args: never[]) => unknown) | undefined;
}

interface HTTPParserClass {
  new (): LlhttpParser;
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
  kLenientNone: number;
}

const common = createRequire(import.meta.url)('_http_common') as { HTTPParser: HTTPParserClass; methods: readonly string[] };

export const HTTPParser = common.HTTPParser;
/** Method names by llhttp's method index (`kOnHeadersComplete`'s 4th argument). */
export const METHODS: readonly string[] = common.methods;

/** `kOnHeadersComplete` return values. */
export const CONTINUE = 0;
export const SKIP_BODY = 1;
export const STOP_AFTER_HEAD = 2;

/** The callbacks a parser user sets; each is called with the parser as `this` (its `conn` is the owner). */
export interface ParserCallbacks<P> {
  messageBegin(this: P): void;
  headers(this: P, headers: string[], url: string): void;
  headersComplete(this: P, ...args: never[]): number;
  body(this: P, chunk: Buffer): void;
  messageComplete(this: P): void;
}

/** A strict parser (no lenient flags) for requests or responses, owned by `conn`, with its callbacks set. */
export function newParser<C, P extends LlhttpParser & { conn: C }>(type: 'request' | 'response', maxHeaderSize: number, conn: C, cb: ParserCallbacks<P>): P {
  const p = new HTTPParser() as P;
  p.initialize(type === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, maxHeaderSize, HTTPParser.kLenientNone);
  p.conn = conn;
  p[HTTPParser.kOnMessageBegin] = cb.messageBegin;
  p[HTTPParser.kOnHeaders] = cb.headers;
  p[HTTPParser.kOnHeadersComplete] = cb.headersComplete;
  p[HTTPParser.kOnBody] = cb.body;
  p[HTTPParser.kOnMessageComplete] = cb.messageComplete;
  return p;
}

export function isParserError(r: unknown): r is ParserError {
  return r instanceof Error;
}
