/**
 * The error family host and guest share. Callers branch on `code`, never on message text;
 * the API maps codes to HTTP statuses through `httpStatusFor` (the single place that does),
 * and the CLI prints `code: message` and exits non-zero.
 */

export const ErrorCodes = [
  'INVALID_ARGUMENT',
  'VALIDATION_FAILED',
  'PAYLOAD_TOO_LARGE',
  'HEADERS_TOO_LARGE',
  'REQUEST_TIMEOUT',
  'NOT_FOUND',
  'NAME_TAKEN',
  'IP_TAKEN',
  'CONFLICT',
  'INVALID_STATE',
  'POOL_EXHAUSTED',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'RATE_LIMITED',
  'OVERLOADED',
  'TIMEOUT',
  'UPSTREAM_UNREACHABLE',
  'VMM_FAILED',
  'SYSTEM_COMMAND_FAILED',
  'NOT_SUPPORTED',
  'PROTOCOL_ERROR',
  'EGRESS_DENIED',
  'MEMORY_TOO_SMALL',
  'RUNTIME_UNAVAILABLE',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

/** One problem found in an input, located by a JSON pointer-like path (`/network/mode`). */
export interface Problem {
  path: string;
  message: string;
}

export class VolantError extends Error {
  readonly code: ErrorCode;
  readonly details?: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VolantError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Raised when input fails validation; `details` lists every problem with its path. */
export class ValidationError extends VolantError {
  readonly problems: Problem[];
  constructor(what: string, problems: Problem[]) {
    const first = problems[0];
    const summary = first ? `${first.path || '/'}: ${first.message}` : 'invalid';
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
    super('VALIDATION_FAILED', `invalid ${what}: ${summary}${more}`, problems);
    this.name = 'ValidationError';
    this.problems = problems;
  }
}

const STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  VALIDATION_FAILED: 400,
  /** A request body over a limit (the egress proxy's body cap, the API's body limit). */
  PAYLOAD_TOO_LARGE: 413,
  /** A request head over the server's header size limit. */
  HEADERS_TOO_LARGE: 431,
  /** The client did not finish its request head (too slow, or it closed mid-head). */
  REQUEST_TIMEOUT: 408,
  NOT_FOUND: 404,
  NAME_TAKEN: 409,
  IP_TAKEN: 409,
  CONFLICT: 409,
  INVALID_STATE: 409,
  POOL_EXHAUSTED: 503,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  OVERLOADED: 503,
  TIMEOUT: 504,
  UPSTREAM_UNREACHABLE: 502,
  VMM_FAILED: 502,
  SYSTEM_COMMAND_FAILED: 500,
  NOT_SUPPORTED: 501,
  PROTOCOL_ERROR: 502,
  EGRESS_DENIED: 403,
  /** `memory_mb` below what the plugin's image needs to boot (its plugin.json `image.min_memory_mb`). */
  MEMORY_TOO_SMALL: 400,
  /** The shared runtime image a plugin needs is not on this host and cannot be built here. */
  RUNTIME_UNAVAILABLE: 424,
  INTERNAL: 500,
};

export function httpStatusFor(code: ErrorCode): number {
  return STATUS[code];
}

export function isVolantError(e: unknown): e is VolantError {
  return e instanceof VolantError;
}
