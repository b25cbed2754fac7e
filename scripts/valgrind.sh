#!/usr/bin/env bash
# The unit tests and a subset of the integration tests under Valgrind
# memcheck: no error and no leak (definite, indirect or possible), or the
# script fails. docs/testing.md ("Valgrind") says which integration tests
# and why not all.
#
#   scripts/valgrind.sh            build/ (gcc), configured and built if needed
#   KEYGATE_VALGRIND_BUILD=DIR     another build directory (not an ASan one)
#   KEYGATE_VALGRIND_TESTS=REGEX   other integration tests (ctest -R), "" for none
#   KEYGATE_VALGRIND_UNITS=0       leave the unit tests out
#
# Unit test binaries run under valgrind themselves. An integration test
# binary runs natively and every keygate process it starts (the daemon and
# the CLI, through tests/helpers/daemon.c) runs under valgrind: the helpers
# put $KEYGATE_TEST_WRAPPER in front of the command. Each valgrind process
# writes DIR/valgrind/<pid>.log; every log is checked at the end, so an error
# in a daemon whose exit status no test looks at still fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${KEYGATE_VALGRIND_BUILD:-$root/build}
# The admin API (every route, the store, the audit chain), signup (Argon2id,
# one transaction), the health endpoints and the 31 hostile requests: the
# daemon's main paths, about 4.5 minutes of CPU under valgrind. Left out
# (measured under valgrind on a loaded 2-core machine): credentials (170 s,
# the same request path as these), cli_accounts (over its 300 s timeout: a
# valgrind start per CLI call), proxy (asserts a peak RSS that valgrind's
# shadow memory doubles), and every test bound to time (drain, reload, rate
# limits, quotas, throttle, access-log stalls, TLS).
default_tests='^integration_test_(admin_api|signup|healthcheck|hostile)$'
tests=${KEYGATE_VALGRIND_TESTS-$default_tests}
jobs=$(nproc)

command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed (scripts/deps.sh --test)" >&2; exit 1; }
if [[ ! -f $build/build.ninja ]]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
fi
cmake --build "$build" -j "$jobs" >/dev/null || { echo "valgrind.sh: the build failed" >&2; exit 1; }

logs=$build/valgrind
rm -rf "$logs"
mkdir -p "$logs"
# One command line for every process, written once as a wrapper script
# (KEYGATE_TEST_WRAPPER takes a single program). Unit tests fork children
# that only _exit() with a verdict: valgrind stays silent in them
# (--child-silent-after-fork), and their exit code must stay theirs, so the
# unit wrapper leaves --error-exitcode out; the log check below still sees
# every error of the test process itself.
opts="--tool=memcheck --quiet --log-file=$logs/%p.log --leak-check=full \
--show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
--num-callers=40 --suppressions=$root/tests/valgrind.supp --gen-suppressions=all"
printf '#!/bin/sh\nexec valgrind %s --error-exitcode=99 "$@"\n' "$opts" >"$logs/wrap.sh"
printf '#!/bin/sh\nexec valgrind %s --child-silent-after-fork=yes "$@"\n' "$opts" >"$logs/wrap-unit.sh"
chmod +x "$logs/wrap-unit.sh"
chmod +x "$logs/wrap.sh"

start=$(date +%s)
fail=0
if [[ ${KEYGATE_VALGRIND_UNITS:-1} != 0 ]]; then
    echo "== valgrind: unit tests"
    # ctest runs each unit test from build/tests; so do we.
    # The slowest first (Argon2id under memcheck takes 30-50 s), so the two at a time end together.
    units=$(cd "$build/tests" && { printf '%s\n' unit_console_test_selfservice unit_console_test_session \
        unit_manage_test_audit unit_obs_test_accessfmt unit_store_test_store; ls unit_* 2>/dev/null | sort; } |
        awk '!seen[$0]++' | while read -r u; do [[ -x $u ]] && echo "$u"; done)
    [[ -n $units ]] || { echo "valgrind.sh: no unit test binaries in $build/tests" >&2; exit 1; }
    if ! (cd "$build/tests" && printf '%s\n' $units |
        xargs -P "$jobs" -I{} sh -c '"$1" ./{} >"$2/{}.out" 2>&1 || { echo "FAILED: {}"; exit 1; }' \
            sh "$logs/wrap-unit.sh" "$logs"); then
        fail=1
    fi
    echo "   $(printf '%s\n' $units | wc -l) unit test binaries, $(($(date +%s) - start)) s"
fi

if [[ -n $tests ]]; then
    echo "== valgrind: integration tests matching $tests (keygate under valgrind)"
    t0=$(date +%s)
    KEYGATE_TEST_WRAPPER=$logs/wrap.sh ctest --test-dir "$build" -R "$tests" -j "$((jobs * 2))" \
        --output-on-failure || fail=1
    echo "   $(($(date +%s) - t0)) s"
fi

# Every process's verdict, including daemons stopped by a signal the test
# expected: a log with an error summary other than 0, or any error block.
bad=0
for f in "$logs"/[0-9]*.log; do
    [[ -e $f ]] || continue
    if grep -q 'ERROR SUMMARY: [1-9]' "$f" || grep -qE '^==[0-9]+== (Invalid|Conditional|Syscall param|Mismatched|Source and destination)' "$f"; then
        echo "---- $f" >&2
        cat "$f" >&2
        bad=$((bad + 1))
    fi
done
n=$(ls "$logs"/[0-9]*.log 2>/dev/null | wc -l)
echo "== valgrind: $n processes checked, $bad with errors or leaks, $(($(date +%s) - start)) s in all"
((bad == 0)) || fail=1
exit $fail
