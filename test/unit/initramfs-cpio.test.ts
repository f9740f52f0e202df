/**
 * The newc writer against GNU cpio (the reference reader): listing, modes, link counts, byte-exact
 * unpacking, hard links, padding, determinism, streaming, and hostile entries.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, test } from 'node:test';
import { type CpioEntry, checkArchivePath, planArchive, sourceDateEpoch, writeCpio } from '../../initramfs/cpio.js';
import { VolantError } from '../../shared/errors.js';

const work = mkdtempSync(join(tmpdir(), `volant-initramfs-cpio-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));

async function archive(entries: CpioEntry[], opts = {}): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of writeCpio(entries, opts)) chunks.push(c);
  return Buffer.concat(chunks);
}

function gnuList(buf: Buffer): string[] {
  return execFileSync('cpio', ['-itv', '--quiet'], { input: buf, encoding: 'utf8', env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } })
    .trim()
    .split('\n');
}

/** `cpio -itv` columns we assert on: mode, nlink, uid, gid, size, name (and link target). */
function columns(line: string): { mode: string; nlink: string; owner: string; group: string; size: string; name: string } {
  const [mode, nlink, owner, group, size, , , , ...rest] = line.split(/\s+/);
  return { mode: mode!, nlink: nlink!, owner: owner!, group: group!, size: size!, name: rest.join(' ') };
}

function hostFile(name: string, data: Buffer | string): { path: string; size: number } {
  const path = join(work, name);
  writeFileSync(path, data);
  return { path, size: statSync(path).size };
}

const payload = Buffer.from(Array.from({ length: 70_001 }, (_, i) => (i * 7) & 0xff));
const big = hostFile('payload.bin', payload);
const entries: CpioEntry[] = [
  { type: 'file', path: '/usr/bin/tool', mode: 0o755, source: { kind: 'host', ...big }, linkKey: 'payload' },
  { type: 'dir', path: '/usr', mode: 0o755 },
  { type: 'dir', path: '/usr/bin', mode: 0o755 },
  { type: 'dir', path: '/tmp', mode: 0o1777 },
  { type: 'file', path: '/usr/bin/tool-alias', mode: 0o755, source: { kind: 'host', ...big }, linkKey: 'payload' },
  { type: 'symlink', path: '/usr/bin/sh', target: 'tool' },
  { type: 'file', path: '/empty', mode: 0o644, source: { kind: 'bytes', data: Buffer.alloc(0) } },
  // sizes 1..5 cross every padding case
  ...[1, 2, 3, 4, 5].map((n): CpioEntry => ({ type: 'file', path: `/pad/${n}`, mode: 0o600, source: { kind: 'bytes', data: Buffer.alloc(n, 0x41 + n) } })),
  { type: 'dir', path: '/pad', mode: 0o700 },
];

describe('cpio newc writer', () => {
  test('GNU cpio lists exactly the entries, sorted, with modes, owners, link counts and sizes', async () => {
    const lines = gnuList(await archive(entries));
    const got = lines.map(columns).map((c) => `${c.mode} ${c.nlink} ${c.owner}:${c.group} ${c.size} ${c.name}`);
    assert.deepEqual(got, [
      '-rw-r--r-- 1 root:root 0 empty',
      'drwx------ 2 root:root 0 pad',
      '-rw------- 1 root:root 1 pad/1',
      '-rw------- 1 root:root 2 pad/2',
      '-rw------- 1 root:root 3 pad/3',
      '-rw------- 1 root:root 4 pad/4',
      '-rw------- 1 root:root 5 pad/5',
      'drwxrwxrwt 2 root:root 0 tmp',
      'drwxr-xr-x 2 root:root 0 usr',
      'drwxr-xr-x 2 root:root 0 usr/bin',
      'lrwxrwxrwx 1 root:root 4 usr/bin/sh -> tool',
      // hard link set: data only with the last member
      '-rwxr-xr-x 2 root:root 0 usr/bin/tool',
      `-rwxr-xr-x 2 root:root ${payload.length} usr/bin/tool-alias`,
    ]);
  });

  test('GNU cpio -idm reproduces every file byte for byte, the symlink, the hard link and the mtime', async () => {
    const dir = mkdtempSync(join(work, 'unpack-'));
    execFileSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: await archive(entries, { mtime: 1_700_000_000 }) });
    assert.deepEqual(readFileSync(join(dir, 'usr/bin/tool')), payload);
    assert.deepEqual(readFileSync(join(dir, 'usr/bin/tool-alias')), payload);
    assert.equal(statSync(join(dir, 'usr/bin/tool')).ino, statSync(join(dir, 'usr/bin/tool-alias')).ino);
    assert.equal(readlinkSync(join(dir, 'usr/bin/sh')), 'tool');
    for (const n of [1, 2, 3, 4, 5]) assert.deepEqual(readFileSync(join(dir, `pad/${n}`)), Buffer.alloc(n, 0x41 + n));
    assert.equal(readFileSync(join(dir, 'empty')).length, 0);
    assert.equal(statSync(join(dir, 'usr/bin/tool-alias')).mtimeMs, 1_700_000_000_000);
    assert.equal(statSync(join(dir, 'usr/bin/tool')).mode & 0o7777, 0o755);
  });

  test('the archive is 4-byte aligned, starts with the newc magic and ends with the trailer', async () => {
    const buf = await archive(entries);
    assert.equal(buf.length % 4, 0);
    assert.equal(buf.subarray(0, 6).toString(), '070701');
    const tail = buf.subarray(buf.length - 128).toString('latin1');
    assert.match(tail, /070701[0-9a-f]{104}TRAILER!!!\0+$/);
  });

  test('deterministic: input order does not matter; mtime and one changed byte do', async () => {
    const a = await archive(entries);
    const b = await archive([...entries].reverse());
    assert.deepEqual(a, b);
    assert.notDeepEqual(await archive(entries, { mtime: 1 }), a);
    const changed = entries.map((e) => (e.path === '/pad/3' ? { ...e, source: { kind: 'bytes' as const, data: Buffer.from('AAB') } } : e));
    assert.notDeepEqual(await archive(changed), a);
  });

  test('inode numbers are assigned in path order from firstInode; a link set shares one', () => {
    const plan = planArchive(entries, 100);
    const byName = new Map(plan.map((p) => [p.name, p]));
    assert.equal(plan[0]!.ino, 100);
    assert.equal(byName.get('usr/bin/tool')!.ino, byName.get('usr/bin/tool-alias')!.ino);
    assert.deepEqual(
      plan.map((p) => p.carriesData),
      plan.map((p) => p.name !== 'usr/bin/tool'),
    );
    const inos = plan.map((p) => p.ino);
    assert.equal(new Set(inos).size, inos.length - 1);
  });

  test('streams: a 96 MiB file is yielded in chunks no larger than the read buffer', async () => {
    const path = join(work, 'sparse.bin');
    writeFileSync(path, '');
    truncateSync(path, 96 * 1024 * 1024);
    let largest = 0;
    let total = 0;
    for await (const c of writeCpio([{ type: 'file', path: '/big', mode: 0o644, source: { kind: 'host', path, size: 96 * 1024 * 1024 } }])) {
      largest = Math.max(largest, c.length);
      total += c.length;
    }
    assert.ok(largest <= 64 * 1024, `largest chunk ${largest} bytes`);
    assert.ok(total > 96 * 1024 * 1024);
  });

  test('a host file whose size changed after staging fails the write instead of corrupting it', async () => {
    const f = hostFile('shrinks.bin', 'abcdef');
    const out = join(work, 'shrinks.cpio');
    const staged: CpioEntry[] = [{ type: 'file', path: '/f', mode: 0o644, source: { kind: 'host', path: f.path, size: f.size + 10 } }];
    await assert.rejects(pipeline(Readable.from(writeCpio(staged)), createWriteStream(out)), (e: unknown) => e instanceof VolantError && e.code === 'CONFLICT' && /changed while/.test(e.message));
  });

  test('hostile paths and entries are refused', async () => {
    for (const bad of ['', '/', '../etc/passwd', '/a/../b', 'a//b', './a', 'a/./b', 'a\0b', `/${'x'.repeat(5000)}`]) {
      assert.throws(() => checkArchivePath(bad), VolantError, JSON.stringify(bad));
    }
    assert.equal(checkArchivePath('/usr/bin/node'), 'usr/bin/node');
    await assert.rejects(
      archive([
        { type: 'dir', path: '/a', mode: 0o755 },
        { type: 'file', path: 'a', mode: 0o644, source: { kind: 'bytes', data: Buffer.from('x') } },
      ]),
      /two entries for the same image path \/a/,
    );
    await assert.rejects(archive([{ type: 'symlink', path: '/l', target: '' }]), /invalid target/);
  });

  test('SOURCE_DATE_EPOCH: honoured when a valid integer, otherwise 0', () => {
    const table: [string | undefined, number][] = [
      [undefined, 0],
      ['1700000000', 1_700_000_000],
      ['0', 0],
      ['-5', 0],
      ['12abc', 0],
      ['1e9', 0],
      ['99999999999', 0],
    ];
    for (const [raw, want] of table) assert.equal(sourceDateEpoch(raw === undefined ? {} : { SOURCE_DATE_EPOCH: raw }), want, String(raw));
  });
});
