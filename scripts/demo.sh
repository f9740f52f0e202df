#!/usr/bin/env bash
# `npm run demo`: on a fresh Debian 12 machine as root, installs what is missing, builds, and
# runs the demo (scripts/demo.ts) in private network namespaces that it removes afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "volant demo: needs root (it creates network namespaces, a bridge, taps and iptables rules in them)." >&2
  echo "  run: sudo npm run demo" >&2
  exit 1
fi
bash scripts/prepare-env.sh
npm run --silent build
exec node --import tsx scripts/demo.ts
