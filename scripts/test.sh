#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs every
# unit and integration test twice, with gcc (-Werror) and with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer (leak checking on). The
# container tests run once, in the first pass, and report themselves skipped
# where no container engine works. Between the two, scripts/mutate.sh checks
# that the tests notice deliberate breakage. Then every fuzz corpus is
# replayed and each fuzz target runs for a short while (scripts/fuzz.sh), and
# the unit tests and a subset of the integration tests run under Valgrind
# memcheck (scripts/valgrind.sh). docs/testing.md has the details.
#
#   KEYGATE_CONTAINER_SETUP=0   leave podman alone (no scripts/container-setup.sh)
#   KEYGATE_REQUIRE_CONTAINERS=1, KEYGATE_REQUIRE_PROMTOOL=1,
#   KEYGATE_REQUIRE_SYSTEMD_ANALYZE=1   what would be a skip is a failure (.ci/run)
#   KEYGATE_FUZZ_SECONDS=N      seconds per fuzz target (default 6; 0 replays the corpora only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
jobs=$(nproc)
# Tests wait on sockets, timers and child processes more than they compute (about 45 % idle at
# one test per core): two per core. The ones that measure load or time run alone anyway
# (RUN_SERIAL in tests/CMakeLists.txt).
test_jobs=$((jobs * 2))
# Each stage's start with the seconds since this script began, for CI's budget.
stage() { echo "== [$(date -u +%T) +${SECONDS}s] $*"; }

# podman with a local debian:12 base image (no registry needed), where we may be root.
if [[ ${KEYGATE_CONTAINER_SETUP:-1} != 0 ]] &&
    { [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null; }; then
    if ! scripts/container-setup.sh; then
        [[ ${KEYGATE_REQUIRE_CONTAINERS:-} != 1 ]] || exit 1
        echo "test.sh: podman is not set up; the container tests use docker or skip" >&2
    fi
fi

# The checked-in .clang-format is the style: a file that drifts fails the run.
stage "clang-format --dry-run -Werror (src/ include/ tests/)"
git ls-files 'src/*.[ch]' 'include/*.h' 'tests/*.[ch]' | xargs clang-format-14 --dry-run -Werror

stage "gcc build + tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$test_jobs"

# Break critical lines on purpose, one at a time: each must fail a test. In the gcc
# build dir, which the gcc pass above has just shown green (a build of its own would
# cost a minute); mutate.sh restores and rebuilds what it touched. The ASan and fuzz
# builds run beside it, in the background: a test slowed by them can only fail, which
# kills a mutant, never lets one survive (beside the gcc tests they made timing-bound
# tests fail, so they are not started earlier).
stage "mutation check (the clang ASan and fuzz builds beside it)"
bg_logs=$(mktemp -d)
bg_pids=()
trap 'kill "${bg_pids[@]}" 2>/dev/null || true; rm -rf "$bg_logs"' EXIT
{ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
    -DKEYGATE_SANITIZE=ON >/dev/null && cmake --build build-asan -j "$jobs"; } >"$bg_logs/asan" 2>&1 &
bg_pids+=($!)
scripts/fuzz.sh build >"$bg_logs/fuzz" 2>&1 &
bg_pids+=($!)
KEYGATE_MUTATE_BUILD=build KEYGATE_MUTATE_BASELINE=0 scripts/mutate.sh
wait "${bg_pids[0]}" || { tail -n 60 "$bg_logs/asan" >&2; echo "test.sh: the ASan build failed" >&2; exit 1; }
wait "${bg_pids[1]}" || { tail -n 60 "$bg_logs/fuzz" >&2; echo "test.sh: the fuzz build failed" >&2; exit 1; }
bg_pids=()

stage "clang ASan+UBSan tests"
# A test that fails under ASan is run once more (--repeat until-pass:2) and
# ctest prints both runs: integration_test_proxy's 64 MiB chunked upload
# through the native client stalled twice in a row for 60 s under ASan on
# 2026-12-04. The lost wake-up found by reading the code is fixed (relay.c,
# kg_relay_push_body) but was never reproduced, so the retry stays until CI
# runs show the stall gone.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp \
  ctest --test-dir build-asan --output-on-failure -j "$test_jobs" -LE 'container|long|nosanitize' \
    --repeat until-pass:2

stage "fuzz: corpus replay, then ${KEYGATE_FUZZ_SECONDS:-6} s per target (clang libFuzzer, ASan+UBSan)"
scripts/fuzz.sh replay all
if [[ ${KEYGATE_FUZZ_SECONDS:-6} != 0 ]]; then
    KEYGATE_FUZZ_JOBS=$jobs scripts/fuzz.sh all "${KEYGATE_FUZZ_SECONDS:-6}"
fi

stage "valgrind memcheck: unit tests + integration subset (gcc build)"
scripts/valgrind.sh
stage "all passed"
