/**
 * Compressors for initramfs members. The kernel unpacks gzip, xz, lz4 and zstd members (Debian's
 * kernels enable them) and accepts several members concatenated, each compressed on its own.
 *
 * What must hold: output depends only on the input bytes and the chosen level (gzip through
 * zlib writes mtime 0 and a fixed OS byte; zstd runs with a fixed worker count, whose output
 * does not depend on the machine's core count), and a failing compressor fails the build.
 */

import { spawn } from 'node:child_process';
import { Duplex, PassThrough } from 'node:stream';
import { constants, createGzip } from 'node:zlib';
import { VolantError } from '../shared/errors.js';
import type { Compression } from './build-file.js';

export const GZIP_LEVEL = 6;
export const ZSTD_LEVEL = 12;
/** Fixed so output is identical on every machine (zstd's MT output depends on the mode, not the core count). */
export const ZSTD_WORKERS = 2;

export function compressionSuffix(c: Compression): string {
  return c === 'gzip' ? 'gz' : c === 'zstd' ? 'zst' : 'cpio';
}

/** A transform stream compressing with `c`. */
export function compressor(c: Compression): Duplex {
  if (c === 'none') return new PassThrough();
  if (c === 'gzip') return createGzip({ level: GZIP_LEVEL, memLevel: 9, chunkSize: 256 * 1024, strategy: constants.Z_DEFAULT_STRATEGY });
  return zstdStream();
}

function zstdStream(): Duplex {
  const child = spawn('zstd', ['-q', '-c', `-${ZSTD_LEVEL}`, `-T${ZSTD_WORKERS}`, '--no-check'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const out = new PassThrough();
  const input = new PassThrough();
  input.pipe(child.stdin);
  child.stdin.on('error', (e) => out.destroy(e));
  child.stdout.pipe(out, { end: false });
  child.on('error', (e) => {
    const err = (e as NodeJS.ErrnoException).code === 'ENOENT' ? new VolantError('NOT_SUPPORTED', 'zstd compression needs the `zstd` program (apt-get install zstd)') : e;
    out.destroy(err);
  });
  child.on('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new VolantError('SYSTEM_COMMAND_FAILED', `zstd exited with ${code}: ${stderr.trim()}`));
  });
  // Writes go to zstd's stdin, reads come from its stdout. A pipeline torn down by an error
  // upstream must not leave zstd waiting on its stdin.
  const duplex = Duplex.from({ writable: input, readable: out });
  duplex.once('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return duplex;
}
