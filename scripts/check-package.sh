#!/usr/bin/env bash
# The package as a user gets it (CI runs this; see docs/packaging.md): pack this tree, install the
# tarball into an empty folder with npm, and run the installed commands from there:
#   volar --version (the package's version), volar plugins build on the example the package
#   ships (with the kernel `volar kernel fetch` caches), volantd --help.
# It also checks what the tarball holds (dist/, the prebuilt addon; no tests, no sources of the
# host), that the install compiled nothing (the prebuilt addon loaded), that no dependency wants
# a newer Node than ours, and that the built image carries the addon the installed loader found.
# Everything it makes is in one temp folder, removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/volant-check-package-$$-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
KERNEL_CACHE="${VOLANT_KERNEL_CACHE:-$ROOT/.cache/kernel}"
say() { printf 'check-package: %s\n' "$*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}

cd "$ROOT"
say "npm pack (prepack builds dist/ and the prebuilt addon)"
npm pack --json --pack-destination "$WORK" >"$WORK/pack.json" 2>"$WORK/pack.log" || {
  cat "$WORK/pack.log" >&2
  fail "npm pack failed"
}
TARBALL="$WORK/$(node -p 'require(process.argv[1])[0].filename' "$WORK/pack.json")"
node -e '
  const files = require(process.argv[1])[0].files.map((f) => f.path);
  const need = ["bin/volar.js", "bin/volantd.js", "dist/host/cli/main.js", "dist/host/daemon/main.js", "dist/guest/main.js", "dist/shared/index.js", "dist/host/index.d.ts", "prebuilds/linux-x64/volant_native.node", "native/binding.gyp", "scripts/install-native.mjs", "examples/hello/plugin.json", "docs/CONTRACTS.md"];
  const missing = need.filter((f) => !files.includes(f));
  const unwanted = files.filter((f) => /^(test|bench|host|guest|shared|initramfs)\//.test(f) || /^native\/.*\.ts$/.test(f) || f.endsWith(".map") || /(^|\/)build\//.test(f));
  if (missing.length || unwanted.length) { console.error("missing:", missing, "unwanted:", unwanted); process.exit(1); }
  console.error(`check-package: tarball holds ${files.length} files`);
' "$WORK/pack.json" || fail "the tarball's contents are wrong"

say "npm install $(basename "$TARBALL") into an empty folder"
APP="$WORK/app"
mkdir -p "$APP"
cd "$APP"
printf '{ "name": "volant-check", "version": "1.0.0", "private": true }\n' >package.json
npm install --no-audit --no-fund --foreground-scripts "$TARBALL" >"$WORK/install.log" 2>&1 || {
  cat "$WORK/install.log" >&2
  fail "npm install of the tarball failed"
}
if grep -q "EBADENGINE" "$WORK/install.log"; then
  grep -A4 "EBADENGINE" "$WORK/install.log" >&2
  fail "a dependency does not support this Node ($(node --version))"
fi
grep -q "using the prebuilt native addon" "$WORK/install.log" || {
  cat "$WORK/install.log" >&2
  fail "the install did not use the prebuilt addon"
}
[ ! -e node_modules/volant/native/build ] || fail "the install compiled the addon although the prebuilt one loads"

BIN="$APP/node_modules/.bin"
VERSION="$("$BIN/volar" --version)"
WANT="$(node -p 'require(process.argv[1]).version' "$ROOT/package.json")"
[ "$VERSION" = "$WANT" ] || fail "volar --version printed '$VERSION', the package is $WANT"
say "volar --version: $VERSION"

"$BIN/volantd" --help | grep -q "usage: volantd" || fail "volantd --help"
say "volantd --help: ok"

say "volar kernel fetch (cached in $KERNEL_CACHE)"
"$BIN/volar" --json kernel fetch --dest "$KERNEL_CACHE" >"$WORK/kernel.json" 2>"$WORK/kernel.log" || {
  cat "$WORK/kernel.log" >&2
  fail "volar kernel fetch"
}
VMLINUZ="$(node -p 'require(process.argv[1]).vmlinuz' "$WORK/kernel.json")"
MODULES="$(node -p 'require(process.argv[1]).modulesDir' "$WORK/kernel.json")"

say "volar plugins build node_modules/volant/examples/hello"
cp -r node_modules/volant/examples/hello "$WORK/hello"
VOLANT_BUILD_CACHE="$WORK/build-cache" "$BIN/volar" --json plugins build "$WORK/hello" -o "$WORK/hello-build" --kernel "$VMLINUZ" --modules "$MODULES" >"$WORK/build.json" 2>"$WORK/build.log" || {
  cat "$WORK/build.log" >&2
  fail "volar plugins build"
}
[ -s "$WORK/hello-build/initramfs.img" ] && [ -s "$WORK/hello-build/plugin.json" ] || fail "plugins build wrote no image"
node -e '
  const r = require(process.argv[1]);
  const addon = r.items.find((i) => i.what === "native addon");
  const kestrel = r.items.find((i) => i.what.startsWith("kestrel bundle"));
  if (!addon || !kestrel || kestrel.bytes === 0) { console.error(JSON.stringify(r.items)); process.exit(1); }
  console.error(`check-package: image ${r.image} (${(r.imageBytes / 1e6).toFixed(1)} MB, sha256 ${r.sha256.slice(0, 16)}…)`);
' "$WORK/build.json" || fail "the image lacks the addon or kestrel"
say "ok: the packed volant installs without compiling and works from an empty folder"
