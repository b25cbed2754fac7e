#!/usr/bin/env bash
# Quick start: install what is missing, build, and run `keygate serve` on the
# shipped config (conf/keygate.conf). The SQLite file and the server secret
# are created under data/ on first start. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target keygate
exec build/keygate serve -c conf/keygate.conf "$@"
