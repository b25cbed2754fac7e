#!/bin/sh
# tests/layout/include_cycles_selftest.sh - scripts/check_include_cycles.sh
# must fail on a cycle and pass without one: run on two tiny trees made here.
set -eu
check=$(cd "$(dirname "$0")/../.." && pwd)/scripts/check_include_cycles.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/src/http" "$tmp/src/auth" "$tmp/src/proxy" "$tmp/src/server" "$tmp/include/keygate"
printf '#include "keygate/gate.h"\n' >"$tmp/src/http/front.c"
printf '/* gate */\n' >"$tmp/src/auth/gate.c"
printf '#include "keygate/loop.h"\n' >"$tmp/include/keygate/relay.h"
printf '#include "keygate/relay.h"\n' >"$tmp/src/proxy/relay.c"
printf '/* loop */\n' >"$tmp/src/server/loop.c"
if ! sh "$check" "$tmp" >/dev/null; then
    echo "FAIL: a tree without a cycle was refused"
    exit 1
fi
# server/loop.c includes relay.h, whose relay.c is in proxy/, which includes loop.h.
printf '#include "keygate/relay.h"\n' >"$tmp/src/server/loop.c"
if sh "$check" "$tmp" >"$tmp/out"; then
    echo "FAIL: the proxy/ <-> server/ cycle was not found"
    exit 1
fi
grep -q "include cycle between proxy/ and server/" "$tmp/out" || {
    echo "FAIL: the cycle was not named:"
    cat "$tmp/out"
    exit 1
}
echo "ok"
