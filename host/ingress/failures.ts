/**
 * What the ingress tells a client when something fails, as a `VolantError` (the one writer in
 * shared/http-error-response.ts puts it on the wire with the status `httpStatusFor` gives the
 * code). Upstream failures are mapped here (pure `upstreamFailure`), so the request path and the
 * upgrade path agree: a guest too slow is TIMEOUT (504), unreachable UPSTREAM_UNREACHABLE (502),
 * an answer that is not valid HTTP PROTOCOL_ERROR (502).
 */

import { httpStatusFor, isVolantError, VolantError } from '../../shared/errors.js';
import type { Logger } from '../log/logger.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);
/** undici's and Node's names for "the bytes that came back are not a valid HTTP response". */
const PROTOCOL_CODES = new Set(['UND_ERR_RES_CONTENT_LENGTH_MISMATCH']);

/** Maps what undici, Node's HTTP client or the dialer threw to the code the client sees. */
export function upstreamFailure(err: unknown, where: string): VolantError {
  if (isVolantError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) return new VolantError('TIMEOUT', `${where}: ${message}`);
  const name = (err as { name?: unknown } | null)?.name;
  if ((typeof code === 'string' && (PROTOCOL_CODES.has(code) || code.startsWith('HPE_'))) || name === 'HTTPParserError') {
    return new VolantError('PROTOCOL_ERROR', `${where}: the guest's answer is not valid HTTP/1.1: ${message}`);
  }
  return new VolantError('UPSTREAM_UNREACHABLE', `${where}: ${typeof code === 'string' ? `${code}: ` : ''}${message}`);
}

/** Any error to a VolantError; what is not one is an internal error. */
export function asVolantError(err: unknown): VolantError {
  return isVolantError(err) ? err : new VolantError('INTERNAL', err instanceof Error ? err.message : String(err));
}

/** A guest response head that breaks shared/http-response-head.ts's rules. */
export function badResponseHead(where: string, problem: string): VolantError {
  return new VolantError('PROTOCOL_ERROR', `${where}: the guest's response head is refused: ${problem}`);
}

/**
 * Logs a failure the ingress answered, under the request id the client and the guest see
 * (`reqId`): what volantd or the guest got wrong (5xx) as a warning, the client's own mistakes
 * (unknown VM, VM not running, bad path) at debug.
 */
export function logFailure(log: Logger | undefined, err: VolantError, at: { reqId?: string; vm?: string }): void {
  if (log === undefined) return;
  if (httpStatusFor(err.code) >= 500) log.warn({ ...at, err }, err.message);
  else log.debug({ ...at, code: err.code }, err.message);
}
