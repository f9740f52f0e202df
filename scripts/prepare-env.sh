#!/usr/bin/env bash
# What `npm test` and `npm run demo` need on a fresh Debian 12 machine: the Debian packages
# (as root; otherwise the root-only tests skip and say why), then the npm packages when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-deps.sh
else
  echo "volant: not root: Debian packages are not installed; namespace and QEMU tests will skip" >&2
fi
if [ ! -d node_modules ] || [ ! -f native/build/Release/volant_native.node ]; then npm ci; fi
