#!/usr/bin/env bash
# libFuzzer targets of tests/fuzz (docs/testing.md, "Fuzzing"), built with
# clang, ASan and UBSan into build-fuzz/.
#
#   scripts/fuzz.sh TARGET SECONDS   fuzz one target (e.g. pathnorm) for SECONDS
#   scripts/fuzz.sh all SECONDS      every target in turn, SECONDS each
#   scripts/fuzz.sh replay [TARGET]  run every input of the checked-in corpora once
#   scripts/fuzz.sh merge TARGET DIR...  minimise DIR's inputs into the checked-in corpus
#   scripts/fuzz.sh list             the target names
#   scripts/fuzz.sh build            only build the targets (scripts/test.sh does it early)
#   scripts/fuzz.sh campaign TARGET CPU_SECONDS
#                                    fuzz TARGET until it has used CPU_SECONDS of CPU time
#                                    (user + system, in wall-clock chunks of KEYGATE_FUZZ_CHUNK
#                                    seconds, default 600), so a campaign on a shared machine is
#                                    measured in what it really got; one line per chunk is added
#                                    to build-fuzz/campaign.tsv
#
# New inputs a run finds go to build-fuzz/corpus/TARGET (the checked-in
# corpus under tests/fuzz/corpus/TARGET is only read); a crash or leak is
# written to build-fuzz/artifacts/TARGET/ and the script exits non-zero.
# Every crash found becomes a fixed bug and its input a file of the
# checked-in corpus (`merge`). KEYGATE_FUZZ_JOBS=N runs N targets of `all`
# at once (default 1); extra libFuzzer flags go in KEYGATE_FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${KEYGATE_FUZZ_BUILD:-$root/build-fuzz}

usage() {
    sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

targets() {
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        f=${f##*/fuzz_}
        echo "${f%.c}"
    done
}

build() {
    if [[ ! -f $build/build.ninja ]]; then
        cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
            -DKEYGATE_FUZZ=ON -DKEYGATE_TESTS=OFF -DKEYGATE_BENCH=OFF >/dev/null
    fi
    cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || {
        cat "$build/build.log" >&2
        echo "fuzz.sh: the fuzz build failed" >&2
        exit 1
    }
}

# The same sanitizer settings as the test suite (scripts/test.sh); the
# libraries' own known leak reports are suppressed there (tests/lsan.supp).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}

check_target() {
    [[ -f $root/tests/fuzz/fuzz_$1.c ]] || { echo "fuzz.sh: no target $1 (try: list)" >&2; exit 2; }
}

replay() {
    local t=$1 dir=$root/tests/fuzz/corpus/$1
    [[ -d $dir ]] || { echo "fuzz.sh: $t: no corpus in $dir" >&2; return 1; }
    # -runs=0: execute every input once, then stop.
    "$build/tests/fuzz/fuzz_$t" -runs=0 "$dir" >"$build/replay-$t.log" 2>&1 || {
        cat "$build/replay-$t.log" >&2
        echo "fuzz.sh: $t: corpus replay FAILED" >&2
        return 1
    }
    echo "fuzz.sh: $t: $(ls "$dir" | wc -l) corpus inputs replayed, no crash, no leak"
}

run() {
    local t=$1 secs=$2 log
    mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
    log=$build/fuzz-$t.log
    # The scratch corpus first: new inputs go there, the checked-in one is read.
    # shellcheck disable=SC2086
    if ! "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t/" ${KEYGATE_FUZZ_FLAGS:-} \
        "$build/corpus/$t" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $t: FAILED, input in $build/artifacts/$t/" >&2
        return 1
    fi
    local runs cov ft
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    echo "fuzz.sh: $t: ${secs}s, $runs executions, cov $cov, ft $ft, 0 crashes"
}

# One campaign: chunks of the normal run until the CPU time they used adds
# up to the goal. Each chunk starts from the scratch corpus the previous one
# grew, so coverage carries over; executions add up.
campaign() {
    local t=$1 goal=$2 chunk=${KEYGATE_FUZZ_CHUNK:-600} cpu=0 runs=0 n=0 log tf u s r cov ft
    mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
    log=$build/campaign-$t.log
    tf=$build/campaign-$t.time
    while ((cpu < goal)); do
        n=$((n + 1))
        # shellcheck disable=SC2086
        if ! /usr/bin/time -f '%U %S' -o "$tf" "$build/tests/fuzz/fuzz_$t" -max_total_time="$chunk" \
            -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" ${KEYGATE_FUZZ_FLAGS:-} \
            "$build/corpus/$t" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "fuzz.sh: $t: campaign FAILED in chunk $n, input in $build/artifacts/$t/" >&2
            return 1
        fi
        read -r u s <"$tf"
        cpu=$((cpu + ${u%.*} + ${s%.*}))
        r=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        runs=$((runs + ${r:-0}))
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
        ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
        printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$n" "$((${u%.*} + ${s%.*}))" \
            "${r:-0}" "$cov" "$ft" >>"$build/campaign.tsv"
    done
    echo "fuzz.sh: $t: campaign: ${cpu}s CPU in $n chunks, $runs executions, cov $cov, ft $ft, 0 crashes"
}

[[ $# -ge 1 ]] || usage
case $1 in
campaign)
    [[ $# -eq 3 && $3 =~ ^[0-9]+$ ]] || usage
    check_target "$2"
    build
    campaign "$2" "$3"
    ;;
list)
    targets
    ;;
build)
    build
    ;;
replay)
    build
    fail=0
    if [[ $# -ge 2 && $2 != all ]]; then
        check_target "$2"
        replay "$2"
    else
        for t in $(targets); do replay "$t" || fail=1; done
        exit $fail
    fi
    ;;
merge)
    [[ $# -ge 3 ]] || usage
    check_target "$2"
    build
    t=$2
    shift 2
    mkdir -p "$root/tests/fuzz/corpus/$t"
    "$build/tests/fuzz/fuzz_$t" -merge=1 "$root/tests/fuzz/corpus/$t" "$@"
    ;;
all)
    [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
    build
    jobs=${KEYGATE_FUZZ_JOBS:-1}
    fail=0
    pids=()
    for t in $(targets); do
        run "$t" "$2" &
        pids+=($!)
        if ((${#pids[@]} >= jobs)); then
            wait "${pids[0]}" || fail=1
            pids=("${pids[@]:1}")
        fi
    done
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    exit $fail
    ;;
-h | --help | help)
    usage
    ;;
*)
    [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
    check_target "$1"
    build
    run "$1" "$2"
    ;;
esac
