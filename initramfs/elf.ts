/**
 * Finds the shared libraries a program needs by reading its ELF headers the way the dynamic
 * loader does, instead of running `ldd` (which executes the program's interpreter and whose
 * output format is not a contract).
 *
 * Parsing (64-bit little-endian ELF, what x86_64 Linux uses): the program headers give
 * `PT_INTERP` (the loader path) and `PT_DYNAMIC`; the dynamic section lists `DT_NEEDED`,
 * `DT_RPATH` and `DT_RUNPATH` as offsets into the string table at `DT_STRTAB`, a virtual address
 * that `PT_LOAD` segments map back to a file offset.
 *
 * Resolution (ld.so(8)): a name with a `/` is a path; otherwise DT_RPATH of the object (only when
 * it has no DT_RUNPATH), LD_LIBRARY_PATH is ignored (builds must not depend on the shell),
 * DT_RUNPATH, the ld.so.conf directories, then the default directories. `$ORIGIN` expands to the
 * object's directory. A candidate must itself be a 64-bit x86_64 ELF (multilib trees hold 32-bit
 * libraries of the same name). Resolution is transitive; the result is sorted and deduplicated.
 */

import { open, readdir, readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { VolantError } from '../shared/errors.js';

const ELF_MAGIC = 0x464c457f; // "\x7fELF" little-endian
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
export const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
/** Refuse to read program headers or dynamic sections larger than this (hostile files). */
const MAX_ELF_TABLE_BYTES = 4 * 1024 * 1024;

/** The directories glibc's x86_64 loader searches after RUNPATH and ld.so.cache. */
export const DEFAULT_LIBRARY_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

export interface ElfInfo {
  machine: number;
  interpreter?: string;
  needed: string[];
  rpath: string[];
  runpath: string[];
}

function bad(file: string, why: string): VolantError {
  return new VolantError('INVALID_ARGUMENT', `${file} is not a usable ELF object: ${why}`);
}

/** Parses the parts of a 64-bit little-endian ELF that name its loader and libraries. */
export function parseElf(buf: Buffer, file = '<buffer>'): ElfInfo {
  if (buf.length < 64 || buf.readUInt32LE(0) !== ELF_MAGIC) throw bad(file, 'no ELF magic');
  if (buf[4] !== ELFCLASS64 || buf[5] !== ELFDATA2LSB) throw bad(file, 'only 64-bit little-endian ELF is supported');
  const machine = buf.readUInt16LE(18);
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  if (phentsize < 56 || phoff + phnum * phentsize > buf.length || phnum * phentsize > MAX_ELF_TABLE_BYTES) throw bad(file, 'program headers out of range');

  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  let interpreter: string | undefined;
  let dyn: { offset: number; size: number } | undefined;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    const type = buf.readUInt32LE(o);
    const offset = buf.readBigUInt64LE(o + 8);
    const vaddr = buf.readBigUInt64LE(o + 16);
    const filesz = buf.readBigUInt64LE(o + 32);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    if (type === PT_INTERP || type === PT_DYNAMIC) {
      const start = Number(offset);
      const size = Number(filesz);
      if (start + size > buf.length || size > MAX_ELF_TABLE_BYTES) throw bad(file, 'segment out of range');
      if (type === PT_INTERP) interpreter = buf.toString('latin1', start, start + size).replace(/\0.*$/s, '');
      else dyn = { offset: start, size };
    }
  }
  const info: ElfInfo = { machine, interpreter, needed: [], rpath: [], runpath: [] };
  if (!dyn) return info;

  const entries: { tag: bigint; val: bigint }[] = [];
  for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.size; o += 16) {
    const tag = buf.readBigInt64LE(o);
    if (tag === BigInt(DT_NULL)) break;
    entries.push({ tag, val: buf.readBigUInt64LE(o + 8) });
  }
  const strtabAddr = entries.find((e) => e.tag === BigInt(DT_STRTAB))?.val;
  if (strtabAddr === undefined) return info;
  const seg = loads.find((l) => strtabAddr >= l.vaddr && strtabAddr < l.vaddr + l.filesz);
  if (!seg) throw bad(file, 'DT_STRTAB is outside every loadable segment');
  const strtab = Number(strtabAddr - seg.vaddr + seg.offset);
  const str = (off: bigint): string => {
    const start = strtab + Number(off);
    if (start >= buf.length) throw bad(file, 'string table offset out of range');
    const end = buf.indexOf(0, start);
    return buf.toString('utf8', start, end < 0 ? buf.length : end);
  };
  for (const e of entries) {
    if (e.tag === BigInt(DT_NEEDED)) info.needed.push(str(e.val));
    else if (e.tag === BigInt(DT_RPATH)) info.rpath.push(...str(e.val).split(':').filter(Boolean));
    else if (e.tag === BigInt(DT_RUNPATH)) info.runpath.push(...str(e.val).split(':').filter(Boolean));
  }
  return info;
}

/** Reads `/etc/ld.so.conf` (following `include` globs one directory deep) into directories. */
export async function ldSoConfDirs(confFile = '/etc/ld.so.conf', root = '/'): Promise<string[]> {
  const dirs: string[] = [];
  const seen = new Set<string>();
  const visit = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    let text: string;
    try {
      text = await readFile(join(root, file), 'utf8');
    } catch {
      return;
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) continue;
      const inc = /^include\s+(.+)$/.exec(line);
      if (!inc) {
        if (line.startsWith('/')) dirs.push(line);
        continue;
      }
      const pattern = resolve(dirname(file), inc[1]!.trim());
      const dir = dirname(pattern);
      const re = new RegExp(`^${pattern.slice(dir.length + 1).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
      let names: string[] = [];
      try {
        names = (await readdir(join(root, dir))).filter((n) => re.test(n)).sort();
      } catch {
        names = [];
      }
      for (const n of names) await visit(join(dir, n));
    }
  };
  await visit(confFile);
  return dirs;
}

/** What a program needs at run time: its loader and every library, as absolute host paths. */
export interface ElfClosure {
  interpreter?: string;
  libraries: string[];
}

export interface ResolveOptions {
  /** ld.so.conf directories; read from the host when omitted. */
  confDirs?: string[];
  defaultDirs?: string[];
}

async function readElfFile(path: string): Promise<ElfInfo | undefined> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, 'r');
    const buf = await fh.readFile();
    return parseElf(buf, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'EISDIR') return undefined;
    if (e instanceof VolantError) return undefined;
    throw e;
  } finally {
    await fh?.close();
  }
}

function expandOrigin(dir: string, origin: string): string {
  return dir.replace(/\$(ORIGIN|\{ORIGIN\})/g, origin);
}

/** Resolves the interpreter and all libraries `programs` need, transitively. */
export async function resolveElfClosure(programs: string[], opts: ResolveOptions = {}): Promise<ElfClosure> {
  const confDirs = opts.confDirs ?? (await ldSoConfDirs());
  const defaultDirs = opts.defaultDirs ?? DEFAULT_LIBRARY_DIRS;
  const cache = new Map<string, Promise<ElfInfo | undefined>>();
  const readElfInfo = (path: string): Promise<ElfInfo | undefined> => {
    let p = cache.get(path);
    if (!p) {
      p = readElfFile(path);
      cache.set(path, p);
    }
    return p;
  };
  const libraries = new Set<string>();
  let interpreter: string | undefined;
  const queue: { path: string; inheritedRpath: string[] }[] = [];
  for (const p of programs) {
    const info = await readElfInfo(p);
    if (!info) throw new VolantError('NOT_FOUND', `${p} is missing or is not an ELF program`);
    queue.push({ path: p, inheritedRpath: [] });
  }
  const done = new Set<string>();
  while (queue.length > 0) {
    const { path, inheritedRpath } = queue.shift()!;
    if (done.has(path)) continue;
    done.add(path);
    const info = (await readElfInfo(path))!;
    if (info.interpreter) interpreter ??= info.interpreter;
    const origin = dirname(path);
    // DT_RPATH applies to the object and, when the object has no RUNPATH, to what it loads.
    const rpath = info.runpath.length > 0 ? [] : [...info.rpath.map((d) => expandOrigin(d, origin)), ...inheritedRpath];
    const runpath = info.runpath.map((d) => expandOrigin(d, origin));
    for (const name of info.needed) {
      const found = await findLibrary(name, [...rpath, ...runpath, ...confDirs, ...defaultDirs], info.machine, readElfInfo);
      if (!found) {
        throw new VolantError('NOT_FOUND', `${path} needs ${name}, which is in none of: ${[...new Set([...rpath, ...runpath, ...confDirs, ...defaultDirs])].join(', ')}`);
      }
      libraries.add(found);
      queue.push({ path: found, inheritedRpath: rpath });
    }
  }
  if (interpreter) libraries.delete(interpreter);
  return { interpreter, libraries: [...libraries].sort() };
}

async function findLibrary(
  name: string,
  dirs: string[],
  machine: number,
  readElfInfo: (p: string) => Promise<ElfInfo | undefined>,
): Promise<string | undefined> {
  const candidates = name.includes('/') ? [name] : dirs.filter((d) => isAbsolute(d)).map((d) => join(d, name));
  for (const c of candidates) {
    const info = await readElfInfo(c);
    if (info && info.machine === machine) return c;
  }
  return undefined;
}
