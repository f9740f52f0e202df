/**
 * The build file, `volant.build.json` beside `plugin.json`: what goes into a plugin image besides
 * the runtime Volant always adds (in the spirit of the original's Fledge.toml).
 *
 *   { "files": [{ "from": "app", "to": "/app" }],   plugin-relative source → absolute image path
 *     "binaries": ["/usr/bin/curl"],                 host ELF programs, added with their libraries
 *     "modules": ["virtio_pci", ...],                extra kernel modules (defaults always included)
 *     "compression": "gzip" | "zstd" | "lz4" | "none" }
 *
 * What must hold: every path is normalized and free of `..`; `from` stays inside the plugin
 * folder (checked again on disk, through symlinks, by the builder); `to` never overwrites what
 * the runtime owns (`/init`, `/lib/volant`, `/etc/volant`, `/usr/bin/node`, `/bin/busybox`).
 */

import { type Static, Type } from '@sinclair/typebox';
import { type Problem, ValidationError } from '../shared/errors.js';
import { structuralProblems } from '../shared/schema/validate.js';

export const BUILD_FILE_NAME = 'volant.build.json';
export const MAX_BUILD_ENTRIES = 10_000;

export const Compression = Type.Union([Type.Literal('gzip'), Type.Literal('zstd'), Type.Literal('lz4'), Type.Literal('none')]);
export type Compression = Static<typeof Compression>;

const RelPath = Type.String({ minLength: 1, maxLength: 4095 });
const ImagePath = Type.String({ minLength: 2, maxLength: 4095, pattern: '^/', description: 'an absolute image path' });
const ModuleName = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'a kernel module name like virtio_net' });

export const BuildFile = Type.Object(
  {
    files: Type.Optional(Type.Array(Type.Object({ from: RelPath, to: ImagePath }, { additionalProperties: false }), { maxItems: MAX_BUILD_ENTRIES })),
    binaries: Type.Optional(Type.Array(ImagePath, { maxItems: 256 })),
    modules: Type.Optional(Type.Array(ModuleName, { maxItems: 1024 })),
    compression: Type.Optional(Compression),
  },
  { additionalProperties: false, $id: 'VolantBuildFile' },
);
export type BuildFile = Static<typeof BuildFile>;

/** Image paths the builder writes itself; a build file may not place files there. */
export const RESERVED_IMAGE_PATHS = ['/init', '/lib/volant', '/etc/volant', '/usr/bin/node', '/bin/busybox', '/lib/modules'];

function hasDotDot(p: string): boolean {
  return p.split('/').some((c) => c === '..');
}

/** Semantic checks on a structurally valid build file. Pure. */
export function buildFileProblems(b: BuildFile): Problem[] {
  const problems: Problem[] = [];
  (b.files ?? []).forEach((f, i) => {
    if (hasDotDot(f.from) || f.from.startsWith('/')) {
      problems.push({ path: `/files/${i}/from`, message: `${JSON.stringify(f.from)} must be a path inside the plugin folder (relative, no '..')` });
    }
    if (hasDotDot(f.to) || f.to.split('/').slice(1).some((c) => c === '' || c === '.') || f.to.includes('\0')) {
      problems.push({ path: `/files/${i}/to`, message: `${JSON.stringify(f.to)} must be a normalized absolute path without '..', '.' or '//'` });
    } else if (RESERVED_IMAGE_PATHS.some((r) => f.to === r || f.to.startsWith(`${r}/`))) {
      problems.push({ path: `/files/${i}/to`, message: `${f.to} is reserved for the Volant runtime (${RESERVED_IMAGE_PATHS.join(', ')})` });
    }
  });
  (b.binaries ?? []).forEach((p, i) => {
    if (hasDotDot(p)) problems.push({ path: `/binaries/${i}`, message: `${JSON.stringify(p)} must not contain '..'` });
  });
  return problems;
}

/** Validates parsed JSON as a build file; throws ValidationError naming `file`. */
export function parseBuildFile(input: unknown, file: string): BuildFile {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new ValidationError(`build file ${file}`, [{ path: '/', message: 'a build file must be a JSON object' }]);
  }
  const problems = structuralProblems(BuildFile, input);
  if (problems.length === 0) problems.push(...buildFileProblems(input as BuildFile));
  if (problems.length > 0) throw new ValidationError(`build file ${file}`, problems);
  return input as BuildFile;
}
