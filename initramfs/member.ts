/**
 * Writes one image member: the cpio stream of a layer through a compressor into a file, with
 * progress, plus the helpers that assemble members into the image. The kernel unpacks members
 * concatenated one after the other, each a complete archive ending in its own trailer.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Compression } from './build-file.js';
import { compressor, compressorCommand, GZIP_LEVEL } from './compress.js';
import { type CpioEntry, writeCpio } from './cpio.js';

const execFileP = promisify(execFile);
const PROGRESS_INTERVAL_MS = 250;

/** Reports the share of `total` bytes that passed, at most every PROGRESS_INTERVAL_MS. */
function progressMeter(total: number, report: ((percent: number) => void) | undefined): Transform {
  let seen = 0;
  let last = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      const now = Date.now();
      if (report && now - last >= PROGRESS_INTERVAL_MS) {
        last = now;
        report(Math.min(100, Math.floor((seen / Math.max(total, 1)) * 100)));
      }
      done(null, chunk);
    },
  });
}

export async function writeMember(
  entries: CpioEntry[],
  compression: Compression,
  file: string,
  o: { mtime: number; firstInode: number; totalBytes: number; report?: (percent: number) => void },
): Promise<void> {
  await pipeline(
    Readable.from(writeCpio(entries, { mtime: o.mtime, firstInode: o.firstInode })),
    progressMeter(o.totalBytes, o.report),
    compressor(compression),
    createWriteStream(file),
  );
}

/** What else decides the runtime member's bytes besides its entries. */
export async function compressorIdentity(c: Compression): Promise<string> {
  if (c === 'gzip') return `gzip-zlib-${process.versions.zlib}-${GZIP_LEVEL}`;
  if (c === 'none') return 'none';
  const { program, args } = compressorCommand(c);
  const { stdout } = await execFileP(program, ['--version']).catch(() => ({ stdout: `${program}-missing` }));
  return `${stdout.trim()} ${args.join(' ')}`;
}

export async function concatInto(target: string, parts: string[]): Promise<void> {
  const out = createWriteStream(target);
  for (const p of parts) await pipeline(createReadStream(p), out, { end: false });
  await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}
