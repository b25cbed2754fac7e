#!/usr/bin/env bash
# Quick start: install what is missing, build, and run `keygate serve` on the
# shipped config (conf/keygate.conf). The SQLite file and the server secret
# are created under data/ on first start, and `keygate init` prints a
# platform admin key once (for the admin API); on later starts it says
# "already initialised" and changes nothing. Ctrl-C stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target keygate
build/keygate init -c conf/keygate.conf
exec build/keygate serve -c conf/keygate.conf "$@"
