/**
 * Compressors for initramfs members. The kernel unpacks gzip, xz, lz4 and zstd members (Debian's
 * kernels enable them) and accepts several members concatenated, each compressed on its own.
 * Unpacking is most of a cold boot's time before /init under TCG: lz4 unpacks several times
 * faster than zstd or gzip, and `none` (cpio only) faster still at about 3× zstd's size
 * (bench/boot, examples/hello: zstd 29.6 MiB → 4.1 s guest clock at /init, lz4 40.4 → 3.3, none 91.7 → 3.1).
 *
 * What must hold: output depends only on the input bytes and the chosen level (gzip through
 * zlib writes mtime 0 and a fixed OS byte; zstd runs with a fixed worker count, whose output
 * does not depend on the machine's core count; lz4 is single-threaded), and a failing
 * compressor fails the build. lz4 writes the legacy frame format (`-l`), the only one the
 * kernel's initramfs unpacker reads.
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
/** lz4 high-compression level: smaller than -1 at the same (fast) decompression speed. */
export const LZ4_LEVEL = 9;

/** The external program and its arguments for the compressions Node has no stream for. */
export function compressorCommand(c: 'zstd' | 'lz4'): { program: string; args: string[] } {
  return c === 'zstd'
    ? { program: 'zstd', args: ['-q', '-c', `-${ZSTD_LEVEL}`, `-T${ZSTD_WORKERS}`, '--no-check'] }
    : { program: 'lz4', args: ['-q', '-c', '-l', `-${LZ4_LEVEL}`] };
}

export function compressionSuffix(c: Compression): string {
  return c === 'gzip' ? 'gz' : c === 'zstd' ? 'zst' : c === 'lz4' ? 'lz4' : 'cpio';
}

/** A transform stream compressing with `c`. */
export function compressor(c: Compression): Duplex {
  if (c === 'none') return new PassThrough();
  if (c === 'gzip') return createGzip({ level: GZIP_LEVEL, memLevel: 9, chunkSize: 256 * 1024, strategy: constants.Z_DEFAULT_STRATEGY });
  return programStream(c);
}

function programStream(c: 'zstd' | 'lz4'): Duplex {
  const { program, args } = compressorCommand(c);
  const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
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
    const err = (e as NodeJS.ErrnoException).code === 'ENOENT' ? new VolantError('NOT_SUPPORTED', `${c} compression needs the \`${program}\` program (apt-get install ${program})`) : e;
    out.destroy(err);
  });
  child.on('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new VolantError('SYSTEM_COMMAND_FAILED', `${program} exited with ${code}: ${stderr.trim()}`));
  });
  // Writes go to the program's stdin, reads come from its stdout. A pipeline torn down by an
  // error upstream must not leave it waiting on its stdin.
  const duplex = Duplex.from({ writable: input, readable: out });
  duplex.once('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return duplex;
}
