#!/usr/bin/env bash
# Installs the Debian packages Volant's tests, demo and benchmarks use, when missing.
# Idempotent and quiet when everything is present; needs root to install.
set -euo pipefail
PKGS=(qemu-system-x86 iproute2 iptables procps cpio busybox-static dnsmasq-base kmod file openssl nginx-light squid wrk zstd lz4 erofs-utils curl zsh build-essential python3-minimal)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "volant: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "volant: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
