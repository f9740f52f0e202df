/**
 * Node-style system errors for the native wrapper. The addon reports failing syscalls as Errors
 * with `errno` (negative, like Node's own fs/net errors), `code` ('ENODEV') and `syscall`; the
 * wrapper's argument checks raise the same shape (EINVAL) so a caller handles one error family,
 * and nothing reaches the kernel when an argument is wrong.
 */

import os from 'node:os';
import util from 'node:util';

export interface NativeErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

/** An errno error for `syscall`, with Node's message shape: "EINVAL: <why>, <syscall>". */
export function errnoError(code: keyof typeof os.constants.errno, syscall: string, why: string): NativeErrnoError {
  const error = new Error(`${code}: ${why}, ${syscall}`) as NativeErrnoError;
  error.errno = -os.constants.errno[code];
  error.code = code;
  error.syscall = syscall;
  return error;
}

/** An errno error from a libuv status (a negative errno), as Pipe handle methods return them. */
export function uvStatusError(status: number, syscall: string): NativeErrnoError {
  const code = util.getSystemErrorName(status);
  const error = new Error(`${code}: ${syscall} failed`) as NativeErrnoError;
  error.errno = status;
  error.code = code;
  error.syscall = syscall;
  return error;
}

/** Throws EINVAL for `syscall` unless `ok`. */
export function requireArgument(ok: boolean, syscall: string, why: string): void {
  if (!ok) throw errnoError('EINVAL', syscall, why);
}
