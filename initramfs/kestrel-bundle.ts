/**
 * Bundles kestrel (guest/main.ts and everything it imports) into one script for the image, so
 * the guest needs no node_modules: esbuild, platform node, format cjs, target node20, wrapped as
 * one function expression that the loader compiles with V8's code cache (code-cache.ts).
 *
 * What must hold: the bundle depends only on the sources (paths in it are relative to the repo
 * root, no timestamps, no source map), and `require` exists for the native addon loader (a
 * parameter of the wrapper, as is what `import.meta.url` stands for). The `.node` addon is not
 * bundled; it is loaded at run time from next to the bundle (/lib/volant/volant_native.node).
 */

import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { build } from 'esbuild';
import { VolantError } from '../shared/errors.js';
import { BUNDLE_DEFINE, wrapBundle } from './code-cache.js';

export async function bundleKestrel(entry: string): Promise<Buffer> {
  if (!existsSync(entry)) {
    throw new VolantError('NOT_FOUND', `kestrel entry point ${entry} is missing (the guest agent must exist to build an image)`);
  }
  try {
    const result = await build({
      entryPoints: [entry],
      absWorkingDir: dirname(dirname(entry)),
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      write: false,
      sourcemap: false,
      legalComments: 'none',
      logLevel: 'silent',
      external: ['*.node'],
      define: BUNDLE_DEFINE,
    });
    const out = result.outputFiles[0];
    if (!out) throw new Error('esbuild produced no output');
    return wrapBundle(Buffer.from(out.contents));
  } catch (e) {
    const errors = (e as { errors?: { text: string; location?: { file: string; line: number } }[] }).errors;
    const first = errors?.[0];
    const where = first?.location ? ` at ${first.location.file}:${first.location.line}` : '';
    throw new VolantError('INVALID_ARGUMENT', `bundling kestrel from ${entry} failed${where}: ${first?.text ?? (e as Error).message}`);
  }
}
