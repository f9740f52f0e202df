/**
 * Compressors: round trips through the standard tools, identical output for identical input
 * regardless of how the input is chunked, and no zstd process left behind when the stream fails.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import type { Compression } from '../../initramfs/build-file.js';
import { compressor } from '../../initramfs/compress.js';
import { eventually } from '../support/eventually.js';

const input = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * i) & 0xff));

async function compress(c: Compression, chunks: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(chunks),
    compressor(c),
    new Writable({
      write(chunk: Buffer, _enc, done) {
        out.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(out);
}

function split(buf: Buffer, size: number): Buffer[] {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return parts;
}

describe('compressors', () => {
  for (const [c, tool] of [
    ['gzip', 'gzip'],
    ['zstd', 'zstd'],
    ['lz4', 'lz4'],
  ] as const) {
    test(`${c}: decompresses with ${tool} and does not depend on input chunking`, async () => {
      const a = await compress(c, [input]);
      const b = await compress(c, split(input, 4093));
      assert.deepEqual(a, b);
      assert.deepEqual(execFileSync(tool, ['-dc'], { input: a, maxBuffer: 1 << 24 }), input);
    });
  }

  test('lz4 writes the legacy frame format, the only one the kernel unpacks', async () => {
    const out = await compress('lz4', [input]);
    assert.deepEqual(out.subarray(0, 4), Buffer.from([0x02, 0x21, 0x4c, 0x18]));
  });

  test('none passes bytes through', async () => {
    assert.deepEqual(await compress('none', split(input, 1000)), input);
  });

  test('a failing input stream fails the pipeline and leaves no zstd process', { timeout: 20_000 }, async () => {
    async function* failing() {
      yield input;
      throw new Error('source broke');
    }
    const sink = new Writable({
      write(_c, _e, done) {
        done();
      },
    });
    await assert.rejects(pipeline(Readable.from(failing()), compressor('zstd'), sink), /source broke/);
    const zstdChildren = (): string => {
      try {
        return execFileSync('pgrep', ['-P', String(process.pid), '-x', 'zstd'], { encoding: 'utf8' }).trim();
      } catch {
        return '';
      }
    };
    await eventually(() => zstdChildren() === '', { what: 'the zstd child gone' });
  });
});
