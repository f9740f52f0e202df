/**
 * Reads a plugin folder's two JSON inputs: `plugin.json` (validated with the shared manifest
 * schema, the same check volantd applies) and the optional `volant.build.json`. Errors name the
 * file and every problem; files larger than MAX_INPUT_JSON_BYTES are refused before parsing.
 */

import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ValidationError, VolantError } from '../shared/errors.js';
import { type PluginManifest, validateManifest } from '../shared/schema/manifest.js';
import { BUILD_FILE_NAME, type BuildFile, parseBuildFile } from './build-file.js';

export const MANIFEST_FILE_NAME = 'plugin.json';
const MAX_INPUT_JSON_BYTES = 1024 * 1024;

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    const st = await stat(file);
    if (st.size > MAX_INPUT_JSON_BYTES) throw new VolantError('INVALID_ARGUMENT', `${file} is ${st.size} bytes; ${what} may be at most ${MAX_INPUT_JSON_BYTES}`);
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (e instanceof VolantError) throw e;
    throw new VolantError('NOT_FOUND', `${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ValidationError(`${what} ${file}`, [{ path: '/', message: `not valid JSON: ${(e as Error).message}` }]);
  }
}

/** Reads and validates plugin.json; throws ValidationError naming the file. */
export async function loadManifest(pluginDir: string): Promise<PluginManifest> {
  const file = join(pluginDir, MANIFEST_FILE_NAME);
  const result = validateManifest(await readJson(file, 'plugin manifest'));
  if (!result.ok) throw new ValidationError(`plugin manifest ${file}`, result.problems);
  return result.value;
}

/** Reads volant.build.json (optional: absent means no workload files and defaults). */
export async function loadBuildFile(pluginDir: string): Promise<BuildFile> {
  const file = join(pluginDir, BUILD_FILE_NAME);
  if (!existsSync(file)) return {};
  return parseBuildFile(await readJson(file, 'build file'), file);
}
