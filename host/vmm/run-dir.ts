/**
 * The files a VMM needs before it starts: its private run directory (API/QMP sockets, its own
 * stdout/stderr log) and the directory of the serial log. A socket path left by an earlier run
 * makes both VMMs fail to bind, so stale sockets are removed first; anything at such a path
 * that is not a socket is someone else's file and is left alone with an error. A missing kernel
 * or initramfs is reported with its path and the fix before anything is touched.
 */

import { closeSync, lstatSync, mkdirSync, openSync, readSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import type { LaunchSpec } from './launcher.js';

/** How much of the VMM's own log an error message quotes. */
export const LOG_TAIL_BYTES = 2048;

/** Fails with the path and the fix when a boot file is missing or not a regular file. */
export function assertBootFiles(files: { kernelPath: string; initramfsPath?: string }): void {
  const check = (what: string, path: string, fix: string): void => {
    let ok = false;
    try {
      ok = statSync(path).isFile();
    } catch {}
    if (!ok) throw new VolantError('NOT_FOUND', `${what} ${JSON.stringify(path)} does not exist or is not a file; ${fix}`);
  };
  check('kernel', files.kernelPath, 'run `volar kernel fetch` or set kernel.path (volantd --kernel)');
  if (files.initramfsPath !== undefined) check('initramfs', files.initramfsPath, 'rebuild and reinstall the plugin (`volar plugins build`, `volar plugins install`)');
}

export function removeStaleSocket(path: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new VolantError('CONFLICT', `${path} exists and is not a socket; refusing to replace it`);
  unlinkSync(path);
}

/** Creates the run and serial-log directories and clears the given stale sockets. Returns the VMM log path. */
export function prepareRunDir(spec: LaunchSpec, sockets: readonly string[]): string {
  mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
  mkdirSync(dirname(spec.serialLogPath), { recursive: true });
  for (const s of [spec.vsock.socketPath, ...sockets]) removeStaleSocket(s);
  return join(spec.runDir, 'vmm.log');
}

/** The last `LOG_TAIL_BYTES` of a log, for error messages; '' when unreadable. */
export function logTail(path: string): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const size = lstatSync(path).size;
      const len = Math.min(size, LOG_TAIL_BYTES);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').trim();
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}
