#!/usr/bin/env bash
# Installs what building and testing keygate needs on Debian 12, and nothing
# that is already there. Idempotent; uses sudo when not run as root.
set -euo pipefail

pkgs=(
  gcc clang libclang-rt-14-dev cmake ninja-build pkg-config make
  libmicrohttpd-dev libsodium-dev libsqlite3-dev libjansson-dev libcmocka-dev libcurl4-openssl-dev
  curl ca-certificates
  systemd man-db
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "deps.sh: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
