#!/usr/bin/env bash
# Installs what building and testing keygate needs on Debian 12, and nothing that is already
# there. Idempotent (one dpkg-query per package, apt-get only when something is missing); uses
# sudo when not run as root.
#
#   scripts/deps.sh          build and run (scripts/run.sh)
#   scripts/deps.sh --test   also every tool the test suite uses (scripts/test.sh)
set -euo pipefail

pkgs=(
  gcc clang libclang-rt-14-dev cmake ninja-build pkg-config make
  libmicrohttpd-dev libsodium-dev libsqlite3-dev libjansson-dev libcmocka-dev libcurl4-openssl-dev
  # the PostgreSQL store backend (src/store/pg_*.c)
  libpq-dev
  curl ca-certificates
  # llhttp's C sources, compiled into the build: the native upstream client's parser
  node-llhttp
  # limits redis://: the Redis protocol (formatting and parsing; keygate owns the socket)
  libhiredis-dev
)
if [[ ${1:-} == --test ]]; then
  pkgs+=(
    # scripts/test.sh: the tree's format against .clang-format
    clang-format-14
    # tests/install/install.sh: systemd-analyze verify, man --warnings
    systemd man-db
    # integration tests: promtool check metrics; nginx in front of keygate (forward-auth);
    # a CA and certificates made at run time (TLS)
    prometheus nginx-light openssl gnutls-bin
    # tests/container/*.sh with podman, and a local debian:12 base image
    # (scripts/container-setup.sh). Named one by one rather than through Recommends: netavark +
    # aardvark-dns give compose services DNS, iptables their published ports, uidmap,
    # slirp4netns and fuse-overlayfs rootless podman (when the tests run as a user with sudo).
    podman podman-compose runc conmon netavark aardvark-dns iptables catatonit
    uidmap slirp4netns fuse-overlayfs debootstrap
    # tests/fuzz: libFuzzer targets built with clang-14 (scripts/fuzz.sh)
    clang-14 libfuzzer-14-dev
    # scripts/valgrind.sh: the unit and integration suites under memcheck
    valgrind
    # shared rate limits (limits redis://): the tests start their own redis-server
    redis-server
    # tests/browser/test_console.py: the web console in a real headless Chromium
    chromium chromium-driver python3-selenium
    # tests/helpers/pgserver.c: a private PostgreSQL server (initdb, pg_ctl) for the store tests
    postgresql-15
    # integration_test_clock_steps: the daemon's wall clock stepped (libfaketime preload)
    libfaketime
  )
elif [[ $# -ne 0 ]]; then
  echo "usage: $0 [--test]" >&2
  exit 2
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=sudo
fi
echo "deps.sh: installing ${missing[*]}" >&2
# nginx and prometheus are wanted as programs the tests start, not as services: none is started
# while installing (policy-rc.d, when the machine has none), and a service this run installed
# is not left enabled at boot either.
policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  trap '$SUDO rm -f "$policy"' EXIT
  printf '#!/bin/sh\n# scripts/deps.sh, while it installs\nexit 101\n' |
    $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -d /run/systemd/system ]; then
  for p in "${missing[@]}"; do
    case $p in
    nginx-light) $SUDO systemctl disable -q nginx.service 2>/dev/null || true ;;
    prometheus) $SUDO systemctl disable -q prometheus.service 2>/dev/null || true ;;
    postgresql-15) $SUDO systemctl disable -q postgresql.service 2>/dev/null || true ;;
    esac
  done
fi
