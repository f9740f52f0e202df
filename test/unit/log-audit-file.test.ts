/** The egress audit file: JSON lines, size-capped by rotation, in order, never split, never failing the caller. */

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AUDIT_FILE_NAME, AuditFile, planWrites, rotationRenames } from '../../host/log/audit-file.js';
import { VolantError } from '../../shared/errors.js';

const root = mkdtempSync(join(tmpdir(), `volant-audit-${process.pid}-`));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `d${n++}`);
const lines = (path: string): Record<string, unknown>[] =>
  existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    : [];

describe('rotation plan', () => {
  it('shifts .1 … .keep up, oldest first, then the file to .1', () => {
    assert.deepEqual(rotationRenames('/l/a.jsonl', 3), [
      ['/l/a.jsonl.2', '/l/a.jsonl.3'],
      ['/l/a.jsonl.1', '/l/a.jsonl.2'],
      ['/l/a.jsonl', '/l/a.jsonl.1'],
    ]);
    assert.deepEqual(rotationRenames('/l/a.jsonl', 1), [['/l/a.jsonl', '/l/a.jsonl.1']]);
  });

  it('splits queued lines where the cap falls, never inside a line', () => {
    const cases: { name: string; lines: string[]; size: number; max: number; runs: string[]; endSize: number }[] = [
      { name: 'all fit', lines: ['aa\n', 'bb\n'], size: 0, max: 10, runs: ['aa\nbb\n'], endSize: 6 },
      { name: 'exactly at the cap fits', lines: ['aaaa\n'], size: 5, max: 10, runs: ['aaaa\n'], endSize: 10 },
      { name: 'one over rotates first', lines: ['aaaa\n'], size: 6, max: 10, runs: ['', 'aaaa\n'], endSize: 5 },
      { name: 'two rotations in one batch', lines: ['aaaaaa\n', 'bbbbbb\n', 'ccc\n'], size: 0, max: 10, runs: ['aaaaaa\n', 'bbbbbb\n', 'ccc\n'], endSize: 4 },
      { name: 'a line bigger than the cap goes alone into an empty file', lines: ['x'.repeat(20)], size: 0, max: 10, runs: ['x'.repeat(20)], endSize: 20 },
      { name: 'bytes, not characters', lines: ['éé\n'], size: 6, max: 10, runs: ['', 'éé\n'], endSize: 5 },
    ];
    for (const c of cases) assert.deepEqual(planWrites(c.lines, c.size, c.max), { runs: c.runs, endSize: c.endSize }, c.name);
  });
});

describe('AuditFile', () => {
  it('writes one JSON object per line at the end of the turn, in order', async () => {
    const dir = freshDir();
    const f = new AuditFile({ dir, maxBytes: 1 << 20, keep: 2 });
    assert.equal(f.path, join(dir, AUDIT_FILE_NAME));
    for (let i = 0; i < 5; i++) f.write({ i, decision: 'deny', reason: 'not-allowlisted' });
    assert.equal(readFileSync(f.path, 'utf8'), '', 'queued, not yet written');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      lines(f.path).map((l) => l.i),
      [0, 1, 2, 3, 4],
    );
    f.write({ i: 5 });
    f.close();
    assert.equal(lines(f.path).length, 6, 'close writes what is queued');
    f.write({ i: 6 });
    f.flush();
    assert.equal(lines(f.path).length, 6, 'nothing after close');
  });

  it('rotates before a record would pass the cap, keeps `keep` old files, and holds every record exactly once', () => {
    const dir = freshDir();
    const record = (i: number) => ({ i, pad: 'x'.repeat(80) });
    const size = Buffer.byteLength(`${JSON.stringify(record(10))}\n`);
    const f = new AuditFile({ dir, maxBytes: size * 4, keep: 2 });
    for (let i = 10; i < 40; i++) {
      f.write(record(i));
      if (i % 3 === 0) f.flush();
    }
    f.close();
    const files = [f.path, `${f.path}.1`, `${f.path}.2`];
    for (const p of files) assert.ok(statSync(p).size <= size * 4, `${p} within the cap`);
    assert.equal(existsSync(`${f.path}.3`), false, 'no more than keep rotated files');
    // 30 records, 4 to a file: the current file holds the last 2, .1 and .2 the 8 before them.
    const kept = files.reverse().flatMap((p) => lines(p).map((l) => l.i as number));
    assert.deepEqual(kept, [30, 31, 32, 33, 34, 35, 36, 37, 38, 39], 'the newest records, in order, none twice');
  });

  it('rotates a file already over the cap before the first write', () => {
    const dir = freshDir();
    new AuditFile({ dir, maxBytes: 1 << 20, keep: 1 }).close();
    writeFileSync(join(dir, AUDIT_FILE_NAME), `${'{"old":true}\n'.repeat(10)}`);
    const f = new AuditFile({ dir, maxBytes: 64, keep: 1 });
    f.write({ new: true });
    f.close();
    assert.deepEqual(lines(f.path), [{ new: true }]);
    assert.equal(lines(`${f.path}.1`).length, 10);
  });

  it('a directory it cannot make is INVALID_ARGUMENT naming log.dir; a failing write is reported once and never thrown', () => {
    const blocker = join(root, `file-${n++}`);
    writeFileSync(blocker, '');
    assert.throws(() => new AuditFile({ dir: join(blocker, 'logs'), maxBytes: 1 << 20, keep: 1 }), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && /log\.dir/.test(e.message));
    const dir = freshDir();
    const errors: unknown[] = [];
    const f = new AuditFile({ dir, maxBytes: 32, keep: 1, onError: (e) => errors.push(e) });
    f.write({ a: 'x'.repeat(40) });
    f.flush();
    // The next record needs a rotation, and rotation needs the directory: take it away.
    rmSync(dir, { recursive: true, force: true });
    for (let i = 0; i < 3; i++) {
      f.write({ b: i });
      assert.doesNotThrow(() => f.flush());
    }
    assert.equal(errors.length, 1, 'reported once');
    f.close();
  });
});
