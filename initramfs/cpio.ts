/**
 * A deterministic cpio `newc` (SVR4, magic 070701) writer: the format the Linux kernel unpacks
 * as an initramfs and GNU `cpio -H newc` reads.
 *
 * Format: each entry is a 110-byte ASCII header (magic + 13 eight-digit hex fields: ino, mode,
 * uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize incl. NUL,
 * check), the NUL-terminated name, padding to a 4-byte boundary, the data, padding to 4 bytes.
 * A symlink's data is its target. The archive ends with an entry named `TRAILER!!!`.
 *
 * What must hold (reproducible images):
 * - Entries are written sorted by path bytes, so a parent directory precedes its children.
 * - uid/gid 0, one fixed mtime (SOURCE_DATE_EPOCH or 0), inode numbers assigned in that order.
 * - Hard links: every path of a link set carries the same inode and nlink; the data is written
 *   once, with the LAST entry of the set, earlier ones have filesize 0 (what GNU cpio writes and
 *   what the kernel's `maybe_link` expects).
 * - Streaming: file data is read in chunks while writing; a file whose size changed since it was
 *   staged fails the build instead of producing a corrupt archive.
 */

import { createReadStream } from 'node:fs';
import { VolantError } from '../shared/errors.js';

export const NEWC_MAGIC = '070701';
export const NEWC_HEADER_BYTES = 110;
export const TRAILER_NAME = 'TRAILER!!!';
/** The largest file newc can describe (filesize is 8 hex digits). */
export const MAX_NEWC_FILE_BYTES = 0xffff_ffff;
/** Longest path accepted in an archive (the kernel's PATH_MAX, NUL included). */
export const MAX_PATH_BYTES = 4095;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** Where a regular file's bytes come from. */
export type FileSource = { kind: 'host'; path: string; size: number } | { kind: 'bytes'; data: Buffer };

export type CpioEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; source: FileSource; /** entries with the same key become hard links */ linkKey?: string }
  | { type: 'symlink'; path: string; target: string };

export interface CpioOptions {
  /** The mtime of every entry, seconds since the epoch. */
  mtime?: number;
  /** First inode number (lets several concatenated archives use disjoint numbers). */
  firstInode?: number;
}

/** `SOURCE_DATE_EPOCH` when it is a valid non-negative integer, else 0. */
export function sourceDateEpoch(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SOURCE_DATE_EPOCH;
  if (raw === undefined || !/^\d{1,10}$/.test(raw)) return 0;
  const n = Number(raw);
  return n <= 0xffff_ffff ? n : 0;
}

/** An archive path: relative, no empty, `.` or `..` components, no NUL. Throws otherwise. */
export function checkArchivePath(path: string): string {
  const p = path.replace(/^\/+/, '');
  if (p === '' || p.includes('\0') || p.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new VolantError('INVALID_ARGUMENT', `invalid image path ${JSON.stringify(path)}: must be a normalized path without '.', '..' or empty components`);
  }
  if (Buffer.byteLength(p) >= MAX_PATH_BYTES) throw new VolantError('INVALID_ARGUMENT', `image path too long (${Buffer.byteLength(p)} bytes): ${p.slice(0, 80)}...`);
  return p;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

const ZEROS = Buffer.alloc(4);

function header(f: { ino: number; mode: number; nlink: number; mtime: number; filesize: number; name: string }): Buffer {
  const name = Buffer.from(`${f.name}\0`);
  const fields = [f.ino, f.mode, 0, 0, f.nlink, f.mtime, f.filesize, 0, 0, 0, 0, name.length, 0];
  const head = Buffer.from(NEWC_MAGIC + fields.map(hex8).join(''), 'latin1');
  return Buffer.concat([head, name, ZEROS.subarray(0, pad4(head.length + name.length))]);
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function fileSize(s: FileSource): number {
  return s.kind === 'host' ? s.size : s.data.length;
}

interface Planned {
  entry: CpioEntry;
  name: string;
  ino: number;
  nlink: number;
  /** For a hard-link set: true only on the member that carries the data. */
  carriesData: boolean;
}

/** Orders entries, rejects duplicates and assigns inodes and link counts. Pure. */
export function planArchive(entries: readonly CpioEntry[], firstInode = 1): Planned[] {
  const named = entries.map((e) => ({ entry: e, name: checkArchivePath(e.path) }));
  named.sort((a, b) => compareBytes(a.name, b.name));
  for (let i = 1; i < named.length; i++) {
    if (named[i]!.name === named[i - 1]!.name) throw new VolantError('CONFLICT', `two entries for the same image path /${named[i]!.name}`);
  }
  const groups = new Map<string, number[]>();
  named.forEach((n, i) => {
    if (n.entry.type === 'file' && n.entry.linkKey !== undefined) {
      const list = groups.get(n.entry.linkKey) ?? [];
      list.push(i);
      groups.set(n.entry.linkKey, list);
    }
  });
  const planned: Planned[] = [];
  const groupIno = new Map<string, number>();
  let next = firstInode;
  named.forEach((n, i) => {
    const key = n.entry.type === 'file' ? n.entry.linkKey : undefined;
    const group = key === undefined ? undefined : groups.get(key);
    if (!group || group.length < 2 || key === undefined) {
      planned.push({ ...n, ino: next++, nlink: n.entry.type === 'dir' ? 2 : 1, carriesData: true });
      return;
    }
    let ino = groupIno.get(key);
    if (ino === undefined) {
      ino = next++;
      groupIno.set(key, ino);
    }
    planned.push({ ...n, ino, nlink: group.length, carriesData: group.at(-1) === i });
  });
  return planned;
}

async function* fileChunks(name: string, source: FileSource): AsyncGenerator<Buffer> {
  if (source.kind === 'bytes') {
    yield source.data;
    return;
  }
  let seen = 0;
  for await (const chunk of createReadStream(source.path)) {
    const b = chunk as Buffer;
    seen += b.length;
    if (seen > source.size) break;
    yield b;
  }
  if (seen !== source.size) {
    throw new VolantError('CONFLICT', `${source.path} changed while the image was being written (expected ${source.size} bytes for /${name}, read ${seen})`);
  }
}

/** Streams the archive as chunks: headers, names, file data and the trailer. */
export async function* writeCpio(entries: readonly CpioEntry[], opts: CpioOptions = {}): AsyncGenerator<Buffer> {
  const mtime = opts.mtime ?? 0;
  const planned = planArchive(entries, opts.firstInode ?? 1);
  for (const p of planned) {
    const e = p.entry;
    if (e.type === 'dir') {
      yield header({ ino: p.ino, mode: S_IFDIR | (e.mode & 0o7777), nlink: p.nlink, mtime, filesize: 0, name: p.name });
    } else if (e.type === 'symlink') {
      const target = Buffer.from(e.target);
      if (target.length === 0 || target.includes(0)) throw new VolantError('INVALID_ARGUMENT', `symlink /${p.name} has an invalid target`);
      yield header({ ino: p.ino, mode: S_IFLNK | 0o777, nlink: 1, mtime, filesize: target.length, name: p.name });
      yield Buffer.concat([target, ZEROS.subarray(0, pad4(target.length))]);
    } else {
      const size = p.carriesData ? fileSize(e.source) : 0;
      if (size > MAX_NEWC_FILE_BYTES) throw new VolantError('INVALID_ARGUMENT', `/${p.name} is ${size} bytes; newc archives hold files up to 4 GiB`);
      yield header({ ino: p.ino, mode: S_IFREG | (e.mode & 0o7777), nlink: p.nlink, mtime, filesize: size, name: p.name });
      if (size > 0) {
        yield* fileChunks(p.name, e.source);
        const pad = pad4(size);
        if (pad) yield ZEROS.subarray(0, pad);
      }
    }
  }
  yield header({ ino: 0, mode: 0, nlink: 1, mtime: 0, filesize: 0, name: TRAILER_NAME });
}
