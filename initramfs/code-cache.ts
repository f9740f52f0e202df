/**
 * kestrel starts from a V8 code cache made at build time. Node 20 has no compile cache of its
 * own (module.enableCompileCache came in 22), and under TCG parsing and compiling the 1.4 MB
 * bundle is a large part of kestrel's start, so the image carries:
 *
 *   /lib/volant/kestrel.cjs           the entry /init runs: a small loader (LOADER below)
 *   /lib/volant/kestrel-bundle.js     the bundle, CommonJS, as one function expression
 *   /lib/volant/kestrel-bundle.cache  V8's code cache for it
 *
 * The loader compiles the bundle with `new vm.Script(source, { cachedData })` and runs it; V8
 * checks the cache (its version, its flags, the source) and rejects a stale one, and then simply
 * compiles from source: a rejected or missing cache costs time, never correctness. The loader
 * notes which happened for kestrel's console lines (guest/startup.ts).
 *
 * The cache comes from a warm run on the build host, under the host's node (the image carries a
 * stripped copy of that binary: the same V8, so the same check) and with the flags the guest
 * uses (none): the bundle runs as an ordinary process until it stops at the
 * manifest it cannot find (after its module code and the start of boot ran, so those functions
 * are compiled), and the cache is taken at exit. `--random-seed` is the one flag added: V8 leaves
 * it out of the flags a cache must match, and it makes the cache byte-identical from build to
 * build (without it the bytes differ each time). Produced caches are kept in the build cache,
 * named by the bundle and the node binary, so a warm build does not pay the run again.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { VolantError } from '../shared/errors.js';
import { pruneCache } from './cache.js';

const execFileP = promisify(execFile);

export const KESTREL_DIR = '/lib/volant';
/** What /init executes (after `/usr/bin/node`). */
export const KESTREL_ENTRY = `${KESTREL_DIR}/kestrel.cjs`;
export const KESTREL_BUNDLE = `${KESTREL_DIR}/kestrel-bundle.js`;
export const KESTREL_CODE_CACHE = `${KESTREL_DIR}/kestrel-bundle.cache`;

/** The bundle's parameters: CommonJS `require` for the addon, and what `import.meta.url` stands for. */
export const BUNDLE_HEAD = '(function (require, __volantImportMetaUrl) {';
export const BUNDLE_TAIL = '\n})';
/** esbuild `define` for a CommonJS bundle: the one `import.meta` use (native/addon.ts) reads the parameter. */
export const BUNDLE_DEFINE = { 'import.meta.url': '__volantImportMetaUrl' };

/**
 * The entry (CommonJS, so Node does not start its ESM loader): compiles the bundle next to it
 * with the code cache next to it, records what V8 made of the cache, runs it.
 */
export const LOADER = `'use strict';
// kestrel's entry (initramfs/code-cache.ts): runs the bundle from V8's code cache made at build time.
const { readFileSync } = require('node:fs');
const { Script } = require('node:vm');
const { createRequire } = require('node:module');
const { pathToFileURL } = require('node:url');
const bundle = require('node:path').join(__dirname, 'kestrel-bundle.js');
let cachedData;
try {
  cachedData = readFileSync(bundle.replace(/\\.js$/, '.cache'));
} catch {}
// The name is the image path wherever the loader runs, so a cache made elsewhere is the same bytes.
const script = new Script(readFileSync(bundle, 'utf8'), { filename: '${KESTREL_BUNDLE}', cachedData });
globalThis[Symbol.for('volant.kestrel.codeCache')] = cachedData === undefined ? 'absent' : script.cachedDataRejected ? 'rejected' : 'accepted';
if (process.env.VOLANT_CODE_CACHE_OUT) {
  const out = process.env.VOLANT_CODE_CACHE_OUT;
  delete process.env.VOLANT_CODE_CACHE_OUT;
  process.once('exit', () => require('node:fs').writeFileSync(out, script.createCachedData()));
}
script.runInThisContext()(createRequire(bundle), pathToFileURL(bundle).href);
`;

/** The flag that makes the cache reproducible without making the guest reject it (see the module comment). */
const PRODUCE_FLAGS = ['--random-seed=1'];
const PRODUCE_TIMEOUT_MS = 120_000;
/** Code caches kept in the build cache (one per bundle and node in use). */
const CACHE_KEEP = 4;

/** The bundle source as the image stores it: the CommonJS bundle wrapped in BUNDLE_HEAD/TAIL. */
export const wrapBundle = (cjs: Buffer): Buffer => Buffer.concat([Buffer.from(BUNDLE_HEAD), cjs, Buffer.from(BUNDLE_TAIL)]);

/**
 * The code cache for `bundle` (already wrapped) under `node`: from the build cache, else made by a
 * warm run (see the module comment) and stored there. Throws SYSTEM_COMMAND_FAILED when the warm
 * run writes no cache.
 */
export async function kestrelCodeCache(bundle: Buffer, node: string, cacheDir: string): Promise<Buffer> {
  const st = await stat(node);
  const key = createHash('sha256')
    .update(JSON.stringify({ node, size: st.size, mtimeMs: st.mtimeMs, flags: PRODUCE_FLAGS, loader: LOADER }))
    .update(bundle)
    .digest('hex');
  const cached = join(cacheDir, `kestrel-code-cache-${key}.bin`);
  if (existsSync(cached)) return readFile(cached);

  const dir = await mkdtemp(join(tmpdir(), 'volant-code-cache-'));
  try {
    await writeFile(join(dir, 'kestrel.cjs'), LOADER);
    await writeFile(join(dir, 'kestrel-bundle.js'), bundle);
    const out = join(dir, 'out.cache');
    // kestrel ends (exit 1, "fatal: ... manifest") where the manifest is missing: that is the warm run.
    await execFileP(node, [...PRODUCE_FLAGS, join(dir, 'kestrel.cjs'), '--manifest', join(dir, 'no-manifest.json')], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VOLANT_CODE_CACHE_OUT: out },
      timeout: PRODUCE_TIMEOUT_MS,
    }).catch(() => undefined);
    const data = await readFile(out).catch(() => undefined);
    if (!data || data.length === 0) throw new VolantError('SYSTEM_COMMAND_FAILED', `making kestrel's code cache with ${node} wrote nothing (the bundle did not run there)`);
    const tmp = `${cached}.tmp-${process.pid}`;
    await writeFile(tmp, data);
    await rename(tmp, cached);
    await pruneCache(cacheDir, /^kestrel-code-cache-[0-9a-f]{64}\.bin$/, CACHE_KEEP, cached);
    return data;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
