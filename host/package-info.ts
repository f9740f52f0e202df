/**
 * Where this installed copy of volant lives and which version it is, for `volar --version`,
 * volantd's health answer and the systemd unit's ExecStart. The same module runs from the
 * source tree (host/*.ts under tsx) and from the package (dist/host/*.js), so the root is found
 * by walking up to the package.json named `volant` rather than by a fixed number of `..`.
 */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_NAME = 'volant';

function readPackage(dir: string): { name?: string; version?: string } | undefined {
  const file = join(dir, 'package.json');
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
  } catch {
    return undefined;
  }
}

/** The nearest ancestor of `from` holding volant's package.json; undefined when there is none. */
export function findPackageRoot(from: string): string | undefined {
  let dir = from;
  for (;;) {
    if (readPackage(dir)?.name === PACKAGE_NAME) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

const HERE = dirname(fileURLToPath(import.meta.url));

/** This copy's package root (throws when the files were moved out of their package). */
export function packageRoot(): string {
  const root = findPackageRoot(HERE);
  if (root === undefined) throw new Error(`cannot find volant's package.json above ${HERE}`);
  return root;
}

/** This copy's version from its package.json, or 0.0.0-unknown. */
export function packageVersion(): string {
  const root = findPackageRoot(HERE);
  return (root && readPackage(root)?.version) || '0.0.0-unknown';
}
