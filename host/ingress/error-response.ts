/**
 * How the proxy reports a failure: the API's JSON error body `{ error: { code, message } }`
 * with the status `httpStatusFor` gives the code, on a response object or, for an upgrade
 * request, as raw HTTP on the client socket. Upstream failures are mapped to codes here
 * (pure `upstreamFailure`), so the two paths agree.
 */

import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { httpStatusFor, isVolantError, VolantError } from '../../shared/errors.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

/** Maps what undici or the dialer threw to the code the client sees. */
export function upstreamFailure(err: unknown, where: string): VolantError {
  if (isVolantError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) return new VolantError('TIMEOUT', `${where}: ${message}`);
  return new VolantError('UPSTREAM_UNREACHABLE', `${where}: ${typeof code === 'string' ? `${code}: ` : ''}${message}`);
}

/** Any error to a VolantError; what is not one is an internal error. */
export function asVolantError(err: unknown): VolantError {
  return isVolantError(err) ? err : new VolantError('INTERNAL', err instanceof Error ? err.message : String(err));
}

function body(err: VolantError): string {
  return JSON.stringify({ error: { code: err.code, message: err.message } });
}

export function sendError(res: ServerResponse, err: VolantError, requestId: string | undefined): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const text = body(err);
  const headers = ['content-type', 'application/json; charset=utf-8', 'content-length', String(Buffer.byteLength(text))];
  if (requestId !== undefined) headers.push('x-request-id', requestId);
  res.writeHead(httpStatusFor(err.code), headers);
  res.end(text);
}

/** For upgrade requests: a complete HTTP/1.1 error response on the raw socket, then close. */
export function sendErrorOnSocket(socket: Duplex, err: VolantError, requestId: string | undefined): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const status = httpStatusFor(err.code);
  const text = body(err);
  const rid = requestId === undefined ? '' : `x-request-id: ${requestId}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(text)}\r\n${rid}connection: close\r\n\r\n${text}`,
  );
}
