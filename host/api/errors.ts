/**
 * Every error the API sends is `{ error: { code, message, details? } }` with the status from
 * shared `httpStatusFor` (the only code → status map), written by shared/http-error-response.ts.
 * Fastify's own errors (schema validation, malformed JSON, body too large, unknown route) are
 * translated here into the same codes, schema problems carrying their JSON paths, so a client
 * branches on `code` alone.
 */

import type { FastifyError } from 'fastify';
import { type ErrorCode, httpStatusFor, isVolantError, type Problem, VolantError } from '../../shared/errors.js';
import { errorBody } from '../../shared/http-error-response.js';

interface AjvError {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
}

/** Turns Ajv's errors into problems located by JSON path (the offending property, not its parent). */
export function problemsFromAjv(errors: AjvError[]): Problem[] {
  return errors.map((e) => {
    let path = e.instancePath ?? '';
    const p = e.params ?? {};
    if (e.keyword === 'required' && typeof p.missingProperty === 'string') path += `/${p.missingProperty}`;
    if (e.keyword === 'additionalProperties' && typeof p.additionalProperty === 'string') path += `/${p.additionalProperty}`;
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') message = 'is not a known property';
    if (e.keyword === 'required') message = 'is required';
    return { path: path || '/', message };
  });
}

/**
 * The one place API errors become a VolantError. What is not one is an internal error whose
 * message stays in volantd's log; the client gets the request id to find it there.
 */
export function toVolantError(err: unknown, requestId?: string): VolantError {
  if (isVolantError(err)) return err;
  const fe = err as FastifyError & { validation?: AjvError[]; validationContext?: string };
  if (Array.isArray(fe.validation)) {
    const where = fe.validationContext ?? 'request';
    const problems = problemsFromAjv(fe.validation);
    const first = problems[0];
    return new VolantError('VALIDATION_FAILED', `invalid ${where}: ${first ? `${first.path}: ${first.message}` : 'invalid'}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}`, problems.map((p) => ({ ...p, in: where })));
  }
  const code = typeof fe.code === 'string' ? fe.code : '';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new VolantError('PAYLOAD_TOO_LARGE', fe.message);
  if (code.startsWith('FST_ERR_CTP_') || code === 'FST_ERR_VALIDATION' || (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500)) {
    const mapped: ErrorCode = fe.statusCode === 404 ? 'NOT_FOUND' : 'INVALID_ARGUMENT';
    return new VolantError(mapped, fe.message);
  }
  return new VolantError('INTERNAL', `internal error (see the volantd log${requestId === undefined ? '' : `, reqId ${requestId}`})`);
}

/** The status and the JSON body text of any error the API answers with. */
export function errorReply(err: unknown, requestId?: string): { status: number; body: string } {
  const ve = toVolantError(err, requestId);
  return { status: httpStatusFor(ve.code), body: errorBody(ve) };
}
