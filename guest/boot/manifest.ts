/**
 * The plugin manifest kestrel runs: `volant.manifest` from the command line when the host sent
 * one, else the file the image builder wrote (/etc/volant/plugin.json). Either way it passes the
 * shared validator; a manifest that fails is a fatal boot error naming every problem.
 */

import { readFileSync, statSync } from 'node:fs';
import { VolantError } from '../../shared/errors.js';
import { type PluginManifest, validateManifest } from '../../shared/schema/manifest.js';

export const IMAGE_MANIFEST_PATH = '/etc/volant/plugin.json';
export const MAX_MANIFEST_FILE_BYTES = 1024 * 1024;

export function loadManifestFile(path = IMAGE_MANIFEST_PATH): PluginManifest {
  let json: unknown;
  try {
    if (statSync(path).size > MAX_MANIFEST_FILE_BYTES) throw new VolantError('INVALID_ARGUMENT', `manifest ${path} is larger than ${MAX_MANIFEST_FILE_BYTES} bytes`);
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    if (e instanceof VolantError) throw e;
    throw new VolantError('INVALID_ARGUMENT', `manifest ${path}: ${(e as Error).message}`);
  }
  const v = validateManifest(json);
  if (!v.ok) throw new VolantError('VALIDATION_FAILED', `manifest ${path}: ${v.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`, v.problems);
  return v.value;
}
