/**
 * The staged image: every path the initramfs will hold, which host file or bytes it comes from,
 * and which layer it belongs to (`runtime`: the heavy part shared by all plugins and cached;
 * `plugin`: the small per-plugin part). Nothing is copied; the cpio writer streams host files.
 *
 * What must hold:
 * - Adding the same image path twice is fine only when it is the same thing (same host inode,
 *   same bytes, same link target); anything else is a conflict naming both sources.
 * - Host files keep their host path in the image; a symlink as the last path component is copied
 *   as a symlink and its target is added too (so `/lib64/ld-linux-x86-64.so.2` works), while
 *   symlinked directories (merged /usr) become real directories.
 * - Parents of every entry exist in the same layer; modes are normalized (0755 for directories and
 *   executables, 0644 otherwise) so a checkout's umask cannot change the image.
 */

import { lstat, readlink, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix } from 'node:path';
import { VolantError } from '../shared/errors.js';
import { type CpioEntry, checkArchivePath, type FileSource } from './cpio.js';

export type Layer = 'runtime' | 'plugin';
const MAX_SYMLINK_HOPS = 40;

interface Staged {
  entry: CpioEntry;
  layer: Layer;
  /** Identity for conflict detection: host dev:ino, bytes, or link target. */
  identity: string;
  origin: string;
}

/** 0755 when any execute bit is set, else 0644. */
export function normalizedMode(hostMode: number): number {
  return hostMode & 0o111 ? 0o755 : 0o644;
}

export class ImageTree {
  private readonly staged = new Map<string, Staged>();

  private put(path: string, s: Omit<Staged, 'entry'> & { entry: CpioEntry }): void {
    const key = `/${checkArchivePath(path)}`;
    const prev = this.staged.get(key);
    if (prev) {
      if (prev.identity === s.identity) return;
      if (prev.entry.type === 'dir' && s.entry.type === 'dir') return;
      throw new VolantError('CONFLICT', `${key} would come from both ${prev.origin} and ${s.origin}`);
    }
    for (let p = posix.dirname(key); p !== '/'; p = posix.dirname(p)) {
      const parent = this.staged.get(p);
      if (parent && parent.entry.type !== 'dir') throw new VolantError('CONFLICT', `${key} needs ${p} to be a directory, but ${parent.origin} puts a ${parent.entry.type} there`);
      if (!parent) this.staged.set(p, { entry: { type: 'dir', path: p, mode: 0o755 }, layer: s.layer, identity: 'dir', origin: 'parent directory' });
    }
    this.staged.set(key, { ...s, entry: { ...s.entry, path: key } as CpioEntry });
  }

  has(path: string): boolean {
    return this.staged.has(`/${checkArchivePath(path)}`);
  }

  addDir(path: string, layer: Layer, mode = 0o755): void {
    this.put(path, { entry: { type: 'dir', path, mode }, layer, identity: 'dir', origin: 'directory' });
  }

  addBytes(path: string, data: Buffer | string, layer: Layer, mode = 0o644, origin = 'generated'): void {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    this.put(path, { entry: { type: 'file', path, mode, source: { kind: 'bytes', data: buf } }, layer, identity: `bytes:${buf.toString('base64')}`, origin });
  }

  addSymlink(path: string, target: string, layer: Layer, origin = 'symlink'): void {
    this.put(path, { entry: { type: 'symlink', path, target }, layer, identity: `link:${target}`, origin });
  }

  /**
   * Adds a host file at `imagePath`. A final-component symlink chain is kept as symlinks (each
   * target added too) unless `dereference`, which copies the file the chain ends at.
   */
  async addHostFile(imagePath: string, hostPath: string, layer: Layer, opts: { dereference?: boolean } = {}, hops = 0): Promise<void> {
    if (hops > MAX_SYMLINK_HOPS) throw new VolantError('INVALID_ARGUMENT', `too many symlinks resolving ${hostPath}`);
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = opts.dereference ? await stat(hostPath) : await lstat(hostPath);
    } catch (e) {
      throw new VolantError('NOT_FOUND', `${hostPath} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.isSymbolicLink()) {
      const target = await readlink(hostPath);
      this.addSymlink(imagePath, target, layer, hostPath);
      const nextHost = isAbsolute(target) ? target : join(dirname(hostPath), target);
      const nextImage = isAbsolute(target) ? target : posix.join(posix.dirname(`/${checkArchivePath(imagePath)}`), target);
      await this.addHostFile(nextImage, nextHost, layer, opts, hops + 1);
      return;
    }
    if (!st.isFile()) throw new VolantError('INVALID_ARGUMENT', `${hostPath} is not a regular file`);
    const source: FileSource = { kind: 'host', path: hostPath, size: st.size };
    const linkKey = `${st.dev}:${st.ino}`;
    this.put(imagePath, { entry: { type: 'file', path: imagePath, mode: normalizedMode(st.mode), source, linkKey }, layer, identity: `host:${linkKey}`, origin: hostPath });
  }

  /** The entries of one layer (unsorted; the cpio writer orders them). */
  entries(layer: Layer): CpioEntry[] {
    return [...this.staged.values()].filter((s) => s.layer === layer || (s.entry.type === 'dir' && this.dirNeeded(s.entry.path, layer))).map((s) => s.entry);
  }

  private dirNeeded(dir: string, layer: Layer): boolean {
    const prefix = `${dir}/`;
    for (const [p, s] of this.staged) if (s.layer === layer && p.startsWith(prefix)) return true;
    return false;
  }

  /** Byte total of regular files per layer (for the summary). */
  sizes(): Record<Layer, { files: number; bytes: number }> {
    const out: Record<Layer, { files: number; bytes: number }> = { runtime: { files: 0, bytes: 0 }, plugin: { files: 0, bytes: 0 } };
    for (const s of this.staged.values()) {
      if (s.entry.type !== 'file') continue;
      out[s.layer].files++;
      out[s.layer].bytes += s.entry.source.kind === 'host' ? s.entry.source.size : s.entry.source.data.length;
    }
    return out;
  }

  /** Stat-based fingerprint of a layer: paths, modes, link targets and host file identity. */
  async fingerprint(layer: Layer): Promise<string[]> {
    const lines: string[] = [];
    for (const e of this.entries(layer).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
      if (e.type === 'dir') lines.push(`d ${e.path} ${e.mode}`);
      else if (e.type === 'symlink') lines.push(`l ${e.path} ${e.target}`);
      else if (e.source.kind === 'bytes') lines.push(`b ${e.path} ${e.mode} ${e.source.data.toString('base64')}`);
      else {
        const st = await stat(e.source.path, { bigint: true });
        lines.push(`f ${e.path} ${e.mode} ${e.linkKey} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`);
      }
    }
    return lines;
  }
}
