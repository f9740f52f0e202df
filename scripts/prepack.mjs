#!/usr/bin/env node
// `npm pack`/`npm publish` run this first: a clean dist/ (so no file of a removed module ships),
// then the native addon copied to prebuilds/<platform>-<arch>/ so installs need no compiler.
// The package is made on linux-x64 with glibc (see docs/packaging.md); anywhere else this stops,
// because a package without its prebuilt binary would compile on every user's machine.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}`);
};

rmSync(join(root, 'dist'), { recursive: true, force: true });
rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
run('npm', ['run', 'build']);

const { ADDON_FILE, PREBUILDS_DIR, hostPrebuildTag } = await import(new URL(`file://${join(root, 'dist', 'native', 'addon.js')}`).href);
const tag = hostPrebuildTag();
if (tag !== 'linux-x64') throw new Error(`pack on linux-x64 with glibc (this is ${tag ?? `${process.platform}-${process.arch} without glibc`}) so the package carries its prebuilt addon`);
const built = join(root, 'native', 'build', 'Release', ADDON_FILE);
// Rebuild when a source is newer than the binary, so a stale build is never packed.
const sources = [join(root, 'native', 'binding.gyp'), ...readdirSync(join(root, 'native', 'src')).map((f) => join(root, 'native', 'src', f))];
if (!existsSync(built) || sources.some((f) => statSync(f).mtimeMs > statSync(built).mtimeMs)) {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'install-native.mjs')], { cwd: root, stdio: 'inherit', env: { ...process.env, VOLANT_BUILD_FROM_SOURCE: '1' } });
  if (r.status !== 0) throw new Error('building the native addon failed');
}
const target = join(root, PREBUILDS_DIR, tag, ADDON_FILE);
mkdirSync(dirname(target), { recursive: true });
copyFileSync(built, target);
// Debug symbols are of no use to users and are most of the file.
try {
  execFileSync('strip', ['--strip-unneeded', target]);
} catch {
  process.stderr.write('volant: strip is not installed; the prebuilt addon keeps its symbols\n');
}
process.stderr.write(`volant: packed ${PREBUILDS_DIR}/${tag}/${ADDON_FILE}\n`);
