#!/usr/bin/env node
// npm's install step for the native addon. A packed volant carries a prebuilt binary
// (prebuilds/<platform>-<arch>/, see docs/packaging.md): when it loads here, nothing is compiled.
// Otherwise (no prebuilt for this platform, it does not load, or `--build-from-source`), the
// addon is built from native/ with node-gyp, which npm provides to install scripts. The prebuilt
// path comes from the same loader the daemon and the guest use (dist/native/addon.js), so the
// two never disagree; a source checkout has no dist/ yet and always compiles.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (line) => process.stderr.write(`volant: ${line}\n`);

if (process.platform !== 'linux') {
  say(`the native addon (AF_VSOCK, guest syscalls) is Linux-only; skipped on ${process.platform}`);
  process.exit(0);
}

const fromSource = process.env.npm_config_build_from_source === 'true' || process.env.VOLANT_BUILD_FROM_SOURCE === '1';
const loaderFile = join(root, 'dist', 'native', 'addon.js');
// Only a packed volant has prebuilds/; a source checkout may hold a dist/ from an older build,
// whose loader must not decide anything here.
if (!fromSource && existsSync(join(root, 'prebuilds')) && existsSync(loaderFile)) {
  const loader = await import(new URL(`file://${loaderFile}`).href);
  const prebuilt = typeof loader.prebuiltAddonPath === 'function' ? loader.prebuiltAddonPath() : undefined;
  if (prebuilt) {
    try {
      createRequire(import.meta.url)(prebuilt);
      say(`using the prebuilt native addon ${prebuilt.slice(root.length + 1)}`);
      process.exit(0);
    } catch (e) {
      say(`the prebuilt native addon does not load here (${e.message.split('\n')[0]}); building from source`);
    }
  }
}

// npm hands install scripts its own node-gyp; outside npm, node-gyp must be on PATH.
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild', '--directory', 'native']] : ['node-gyp', ['rebuild', '--directory', 'native']];
const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
if (r.error) say(`cannot run node-gyp: ${r.error.message} (run this through npm, which provides node-gyp: npm rebuild volant, or npm run install in a checkout; a compiler and python3 are needed)`);
process.exit(r.status ?? 1);
