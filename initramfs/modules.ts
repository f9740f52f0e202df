/**
 * Picks the kernel modules an image carries and the order kestrel loads them in.
 *
 * Debian's kernel packages ship no `modules.dep` (depmod runs at install time), so dependencies
 * come from each module's `.modinfo` ELF section: NUL-separated `key=value` strings, of which
 * `depends=a,b` names the modules that must be loaded first. Module names treat `-` and `_` alike.
 * Debian 12's cloud kernel ships plain `.ko` files; `.ko.xz` and `.ko.zst` are read through the
 * `xz`/`zstd` tools (the kernel's finit_module decompresses them itself when built to).
 *
 * What must hold: the load order is a topological order (every module after its dependencies),
 * deterministic (ties broken by name), and a requested or depended-on module that the kernel does
 * not have is an error naming it, never a silent omission. A module built into the kernel
 * (listed in `modules.builtin`) needs no file and is skipped.
 */

import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { VolantError } from '../shared/errors.js';

const execFileP = promisify(execFile);

/** What virtio networking and vsock need; dependencies are added from `.modinfo`. */
/** virtio networking, vsock, and the ACPI power button (button + evdev) kestrel stops on. */
export const DEFAULT_MODULES = ['virtio_pci', 'virtio_net', 'vsock', 'vmw_vsock_virtio_transport', 'vsock_loopback', 'button', 'evdev'];
const MODULE_SUFFIXES = ['.ko', '.ko.xz', '.ko.zst', '.ko.gz'] as const;
const MAX_MODULE_BYTES = 64 * 1024 * 1024;

/** `virtio-net` and `virtio_net` are the same module. */
export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

/** Parses a `.modinfo` section (or any buffer holding it) into its `key=value` records. */
export function parseModinfo(section: Buffer): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const rec of section.toString('latin1').split('\0')) {
    const eq = rec.indexOf('=');
    if (eq <= 0) continue;
    const key = rec.slice(0, eq);
    if (!/^[a-z_][a-z0-9_.]*$/i.test(key)) continue;
    const list = out.get(key) ?? [];
    list.push(rec.slice(eq + 1));
    out.set(key, list);
  }
  return out;
}

/** Extracts the `.modinfo` section bytes from a 64-bit little-endian ELF relocatable object. */
export function modinfoSection(elf: Buffer, file: string): Buffer {
  const fail = (why: string) => new VolantError('INVALID_ARGUMENT', `${file}: cannot read .modinfo: ${why}`);
  if (elf.length < 64 || elf.readUInt32LE(0) !== 0x464c457f || elf[4] !== 2) throw fail('not a 64-bit ELF object');
  const shoff = Number(elf.readBigUInt64LE(40));
  const shentsize = elf.readUInt16LE(58);
  const shnum = elf.readUInt16LE(60);
  const shstrndx = elf.readUInt16LE(62);
  if (shentsize < 64 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) throw fail('section headers out of range');
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    return { name: elf.readUInt32LE(o), offset: Number(elf.readBigUInt64LE(o + 24)), size: Number(elf.readBigUInt64LE(o + 32)) };
  };
  const names = sh(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    const at = names.offset + s.name;
    if (at >= elf.length) continue;
    const end = elf.indexOf(0, at);
    if (elf.toString('latin1', at, end) === '.modinfo') {
      if (s.offset + s.size > elf.length) throw fail('.modinfo out of range');
      return elf.subarray(s.offset, s.offset + s.size);
    }
  }
  throw fail('no .modinfo section');
}

/** One module file of a kernel's module tree. */
export interface ModuleFile {
  name: string;
  /** Absolute host path. */
  path: string;
  /** Path relative to the modules directory (`kernel/drivers/net/virtio_net.ko`). */
  relPath: string;
}

/** Indexes `<modulesDir>` by canonical module name. */
export async function indexModules(modulesDir: string): Promise<Map<string, ModuleFile>> {
  const index = new Map<string, ModuleFile>();
  let files: string[];
  try {
    files = (await readdir(modulesDir, { recursive: true })) as string[];
  } catch (e) {
    throw new VolantError('NOT_FOUND', `kernel modules directory ${modulesDir} cannot be read: ${(e as Error).message}`);
  }
  for (const rel of files.sort()) {
    const suffix = MODULE_SUFFIXES.find((s) => rel.endsWith(s));
    if (!suffix) continue;
    const base = rel.slice(rel.lastIndexOf('/') + 1, -suffix.length);
    const name = canonicalModuleName(base);
    if (!index.has(name)) index.set(name, { name, path: join(modulesDir, rel), relPath: rel });
  }
  return index;
}

async function builtinModules(modulesDir: string): Promise<Set<string>> {
  try {
    const text = await readFile(join(modulesDir, 'modules.builtin'), 'utf8');
    return new Set(
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => canonicalModuleName(l.slice(l.lastIndexOf('/') + 1).replace(/\.ko$/, ''))),
    );
  } catch {
    return new Set();
  }
}

/** The uncompressed ELF of a module file. */
export async function readModuleElf(path: string): Promise<Buffer> {
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : path.endsWith('.gz') ? 'gzip' : undefined;
  if (!tool) return readFile(path);
  try {
    const { stdout } = await execFileP(tool, ['-dc', path], { encoding: 'buffer', maxBuffer: MAX_MODULE_BYTES });
    return stdout;
  } catch (e) {
    throw new VolantError('SYSTEM_COMMAND_FAILED', `cannot decompress ${path} with ${tool}: ${(e as Error).message}`);
  }
}

/** A module graph: name → the names it depends on. */
export type ModuleGraph = Map<string, string[]>;

/**
 * Topological load order of `requested` and everything they depend on. Pure.
 * Depth-first, dependencies before dependants, siblings in name order; throws on a cycle.
 */
export function loadOrder(requested: string[], graph: ModuleGraph): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]): void => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new VolantError('INVALID_ARGUMENT', `kernel module dependency cycle: ${[...chain, name].join(' -> ')}`);
    state.set(name, 'visiting');
    for (const dep of [...(graph.get(name) ?? [])].sort()) visit(dep, [...chain, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const r of [...requested].map(canonicalModuleName).sort()) visit(r, []);
  return order;
}

export interface ResolvedModules {
  /** Module files in load order. */
  modules: ModuleFile[];
  /** Requested names that are built into the kernel (nothing to load). */
  builtin: string[];
}

/** Resolves `requested` modules and their dependencies against a kernel's module tree. */
export async function resolveModules(modulesDir: string, requested: string[]): Promise<ResolvedModules> {
  const index = await indexModules(modulesDir);
  const builtin = await builtinModules(modulesDir);
  const graph: ModuleGraph = new Map();
  const skipped = new Set<string>();
  const pending = [...requested.map(canonicalModuleName)];
  const neededBy = new Map<string, string>();
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (graph.has(name) || skipped.has(name)) continue;
    const file = index.get(name);
    if (!file) {
      if (builtin.has(name)) {
        skipped.add(name);
        continue;
      }
      const via = neededBy.get(name);
      throw new VolantError(
        'NOT_FOUND',
        `kernel module ${name}${via ? ` (needed by ${via})` : ''} is not in ${modulesDir} (neither a .ko file nor built in)`,
      );
    }
    const info = parseModinfo(modinfoSection(await readModuleElf(file.path), file.path));
    const deps = (info.get('depends') ?? [])
      .flatMap((d) => d.split(','))
      .map((d) => canonicalModuleName(d.trim()))
      .filter(Boolean);
    graph.set(name, deps.filter((d) => !builtin.has(d) || index.has(d)));
    for (const d of deps) {
      if (!neededBy.has(d)) neededBy.set(d, name);
      pending.push(d);
    }
  }
  const wanted = requested.map(canonicalModuleName).filter((n) => !skipped.has(n));
  for (const [name, deps] of graph) graph.set(name, deps.filter((d) => !skipped.has(d)));
  const order = loadOrder(wanted, graph);
  return { modules: order.map((n) => index.get(n)!), builtin: [...skipped].sort() };
}

/** Where a module sits in the image: the same place under `/lib/modules/<kver>` as on the host. */
export function moduleImagePath(kernelVersion: string, file: ModuleFile): string {
  return `/lib/modules/${kernelVersion}/${file.relPath}`;
}
