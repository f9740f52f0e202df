/**
 * The request-line rule every Volant server and proxy applies before it acts on a request
 * (volantd's API and ingress, the egress proxy, kestrel's agent server and egress forwarder):
 * only `HTTP/1.0` and `HTTP/1.1` are served, and an HTTP/1.1 request names its `Host`.
 *
 * Why a rule of our own: Node's parser accepts an HTTP/0.9-style line without a version
 * (`GET /path`, reported as 0.9) and `HTTP/2.0` spelled as text, and answers a missing Host with
 * a bare 400 of its own. A proxy that forwards such a request speaks a protocol neither side
 * agreed on, so these are refused with 400 before anything is dialled.
 *
 * Pure: callers pass what their parser reported (Node: `req.httpVersionMajor/Minor`, or the
 * version text of a head they parsed themselves).
 */

import { VolantError } from './errors.js';

/** The only protocol versions served, as they appear on the request line. */
export const SERVED_HTTP_VERSIONS: readonly string[] = ['HTTP/1.0', 'HTTP/1.1'];

/** Whether the version text of a request line (`HTTP/1.1`) is one we serve; exact, case-sensitive. */
export function isServedHttpVersion(text: string): boolean {
  return text === 'HTTP/1.1' || text === 'HTTP/1.0';
}

/** `INVALID_ARGUMENT` for any version but 1.0 and 1.1, else `undefined`. */
export function httpVersionRefusal(major: number, minor: number): VolantError | undefined {
  if (major === 1 && (minor === 1 || minor === 0)) return undefined;
  return new VolantError(
    'INVALID_ARGUMENT',
    `HTTP/${major}.${minor} request refused: only HTTP/1.0 and HTTP/1.1 request lines ("METHOD target HTTP/1.1") are served`,
  );
}

export interface RequestLineFacts {
  httpVersionMajor: number;
  httpVersionMinor: number;
  headers: { host?: string };
}

/**
 * The refusal for a request as Node parsed it, or `undefined` when it may proceed. `requireHost`:
 * an HTTP/1.1 request without `Host` is refused (RFC 9112 §3.2); forward proxies that take the
 * authority from an absolute-form target pass `false`.
 */
export function requestLineRefusal(req: RequestLineFacts, opts: { requireHost: boolean }): VolantError | undefined {
  const version = httpVersionRefusal(req.httpVersionMajor, req.httpVersionMinor);
  if (version !== undefined) return version;
  if (opts.requireHost && req.httpVersionMinor === 1 && req.headers.host === undefined) {
    return new VolantError('INVALID_ARGUMENT', 'HTTP/1.1 request without a Host header');
  }
  return undefined;
}
