/**
 * volar's exit status: one number per kind of failure, so a script can tell "fix your command"
 * from "that VM does not exist", "it is in the way", "volantd failed" and "volantd is not there"
 * without reading messages. `exitCodeFor` is the only place that decides; every error code has
 * an entry (the table is exhaustive, so a new code cannot slip through as a generic 1). The same
 * table is printed by `volar --help` and documented in docs/cli.md.
 */

import type { ErrorCode } from '../../shared/errors.js';

export const EXIT = {
  OK: 0,
  /** Failed for a reason none of the others names. */
  FAILED: 1,
  /** The command line or its input is wrong: unknown command or option, bad value, invalid body. */
  USAGE: 2,
  /** What the command names does not exist (VM, plugin, file, kernel). */
  NOT_FOUND: 3,
  /** The current state is in the way: name or address taken, VM in the wrong state, pool full. */
  CONFLICT: 4,
  /** volantd or the host failed while doing it: VMM, system command, timeout, internal error. */
  SERVER: 5,
  /** volantd could not be reached (not running, wrong --api). */
  UNREACHABLE: 6,
  /** Refused: no or wrong token, or not permitted. */
  DENIED: 7,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

const BY_CODE: Record<ErrorCode, ExitCode> = {
  INVALID_ARGUMENT: EXIT.USAGE,
  VALIDATION_FAILED: EXIT.USAGE,
  PAYLOAD_TOO_LARGE: EXIT.USAGE,
  HEADERS_TOO_LARGE: EXIT.USAGE,
  REQUEST_TIMEOUT: EXIT.SERVER,
  NOT_FOUND: EXIT.NOT_FOUND,
  NAME_TAKEN: EXIT.CONFLICT,
  IP_TAKEN: EXIT.CONFLICT,
  CONFLICT: EXIT.CONFLICT,
  INVALID_STATE: EXIT.CONFLICT,
  POOL_EXHAUSTED: EXIT.CONFLICT,
  UNAUTHORIZED: EXIT.DENIED,
  FORBIDDEN: EXIT.DENIED,
  EGRESS_DENIED: EXIT.DENIED,
  MEMORY_TOO_SMALL: EXIT.USAGE,
  RUNTIME_UNAVAILABLE: EXIT.SERVER,
  RATE_LIMITED: EXIT.SERVER,
  OVERLOADED: EXIT.SERVER,
  TIMEOUT: EXIT.SERVER,
  UPSTREAM_UNREACHABLE: EXIT.UNREACHABLE,
  VMM_FAILED: EXIT.SERVER,
  SYSTEM_COMMAND_FAILED: EXIT.SERVER,
  NOT_SUPPORTED: EXIT.FAILED,
  PROTOCOL_ERROR: EXIT.SERVER,
  INTERNAL: EXIT.SERVER,
};

/** The exit status for a failure with this error code (undefined: not a Volant error → FAILED). */
export function exitCodeFor(code: ErrorCode | undefined): ExitCode {
  return code === undefined ? EXIT.FAILED : BY_CODE[code];
}

const MEANING: Record<ExitCode, string> = {
  [EXIT.OK]: 'success',
  [EXIT.FAILED]: 'failed for another reason',
  [EXIT.USAGE]: 'usage: unknown command or option, bad value or input',
  [EXIT.NOT_FOUND]: 'not found',
  [EXIT.CONFLICT]: 'conflict with the current state',
  [EXIT.SERVER]: 'volantd or the host failed',
  [EXIT.UNREACHABLE]: 'volantd could not be reached',
  [EXIT.DENIED]: 'refused',
};

/** The table `volar --help` ends with, made from the one above. */
export function exitCodesHelp(): string {
  const lines = ['Exit status:'];
  for (const exit of Object.values(EXIT)) {
    const codes = (Object.keys(BY_CODE) as ErrorCode[]).filter((c) => BY_CODE[c] === exit);
    lines.push(`  ${exit}  ${MEANING[exit]}${codes.length > 0 ? ` (${codes.join(', ')})` : ''}`);
  }
  lines.push('With --json, a failure prints {"error":{"code","message","details"}} on stdout instead of text.');
  return lines.join('\n');
}
