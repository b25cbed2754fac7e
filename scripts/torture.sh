#!/usr/bin/env bash
# Allocation-failure torture (issue 16, item 2), as curl's torture tests: for
# N = 1, 2, ... the Nth allocation of keygate, SQLite or jansson fails
# (build-torture/: -DKEYGATE_TORTURE=ON, clang ASan+UBSan, tests/torture/torture.c),
# until a run passes without reaching N. Every run must end in a clean answer or
# exit: no signal, no hang, no sanitizer report (leaks included), a failure says
# why on stderr, and the store stays whole (`keygate audit verify`, and the change
# is there completely or not at all).
#
#   scripts/torture.sh                  every scenario
#   scripts/torture.sh create rotate    some (list: config create rotate revoke
#                                       health proxy proxy_ok admin_create admin_rotate
#                                       admin_revoke)
#   KEYGATE_TORTURE_MAX=N               stop each scenario at N (CI: a bounded run)
#   KEYGATE_TORTURE_FROM=N              start at N (to look at one failure again)
#   KEYGATE_TORTURE_TRACE=1             the stack of the failing allocation, in the failure's output
#
# The store checks use the ordinary build (build/keygate).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
max=${KEYGATE_TORTURE_MAX:-100000}

if [[ ! -x build-torture/keygate ]] || [[ -n $(find src include tests/torture -newer build-torture/keygate -name '*.[ch]' -print -quit) ]]; then
    cmake -S . -B build-torture -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
        -DKEYGATE_SANITIZE=ON -DKEYGATE_TORTURE=ON -DKEYGATE_TESTS=OFF -DKEYGATE_BENCH=OFF >/dev/null
    cmake --build build-torture --target keygate >/dev/null
fi
if [[ ! -x build/keygate ]]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
    cmake --build build --target keygate >/dev/null
fi
tk=$root/build-torture/keygate
ok=$root/build/keygate
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:exitcode=86

tmp=$(mktemp -d /tmp/keygate-torture-XXXXXX)
daemon_pid=
upstream_pid=
cleanup() {
    if [[ -n $daemon_pid ]]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
    if [[ -n $upstream_pid ]]; then kill "$upstream_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The template store: an admin key (init), a user key, one key to rotate or revoke.
mkdir "$tmp/template"
port=$(free_port)
aport=$(free_port)
uport=$(free_port)
cat >"$tmp/keygate.conf" <<EOF
listen 127.0.0.1:$port
admin_listen 127.0.0.1:$aport
database $tmp/work/keygate.db
secret_file $tmp/work/secret
upstream http://127.0.0.1:$uport
workers 1
EOF
mkdir "$tmp/work"
root_key=$("$ok" init -c "$tmp/keygate.conf" 2>/dev/null | grep -oE 'kg_[A-Za-z0-9]{51}' | head -1)
user_key=$("$ok" keys create -c "$tmp/keygate.conf" --name user --json | grep -oE 'kg_[A-Za-z0-9]{51}' | head -1)
target_id=$("$ok" keys create -c "$tmp/keygate.conf" --name target --json | grep -oE '"id": *"key_[A-Za-z0-9]+' | grep -oE 'key_[A-Za-z0-9]+')
[[ -n $root_key && -n $user_key && -n $target_id ]] || { echo "torture: cannot make the template store" >&2; exit 1; }
cp -a "$tmp/work/." "$tmp/template/"

keys_count() { "$ok" keys list -c "$tmp/keygate.conf" --state all --json | grep -oE '"id": *"key_' | wc -l; }
key_json() { "$ok" keys show -c "$tmp/keygate.conf" "$target_id" --json; }

fresh_store() {
    rm -rf "$tmp/work"
    cp -a "$tmp/template" "$tmp/work"
}

fail() {
    echo "torture: $scenario N=$n: $*" >&2
    [[ -f $tmp/err ]] && sed -n 1,60p "$tmp/err" >&2
    exit 1
}

# What every run must show: no signal, no timeout, no sanitizer report; a
# failure says why; the store verifies.
common_checks() {
    local rc=$1
    if ((rc == 86 || rc == 87)) || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$tmp/err"; then
        fail "sanitizer report (exit $rc)"
    fi
    ((rc == 124)) && fail "hung (killed after 60 s)"
    ((rc >= 128)) && fail "killed by signal $((rc - 128))"
    if ((rc != 0)) && [[ ! -s $tmp/err ]]; then fail "exit $rc without a word on stderr"; fi
    "$ok" audit verify -c "$tmp/keygate.conf" >/dev/null 2>"$tmp/verify" || fail "audit verify: $(cat "$tmp/verify")"
}

# One CLI run under the failing allocator: rc in $rc.
cli_run() {
    set +e
    KEYGATE_TORTURE_FAIL=$n KEYGATE_TORTURE_COUNT=$tmp/count timeout 60 "$tk" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
}

check_cli() {
    local before after
    fresh_store
    before=$(keys_count)
    case $scenario in
    config)
        cli_run serve -c "$tmp/keygate.conf" -t
        common_checks "$rc"
        if ((rc == 0)) && ! grep -q 'configuration OK' "$tmp/out" "$tmp/err"; then fail "exit 0 without configuration OK"; fi
        ;;
    create)
        cli_run keys create -c "$tmp/keygate.conf" --name made --json
        common_checks "$rc"
        after=$(keys_count)
        if ((rc == 0 && after != before + 1)); then fail "exit 0 but $after keys (was $before)"; fi
        if ((after != before && after != before + 1)); then fail "$after keys (was $before)"; fi
        ;;
    rotate)
        cli_run keys rotate -c "$tmp/keygate.conf" "$target_id" --json
        common_checks "$rc"
        after=$(keys_count)
        if key_json | grep -q '"rotated_to": "key_'; then
            ((after == before + 1)) || fail "rotated, but $after keys (was $before): half a rotation"
        else
            ((rc != 0)) || fail "exit 0 but not rotated"
            ((after == before)) || fail "not rotated, but $after keys (was $before)"
        fi
        ;;
    revoke)
        cli_run keys revoke -c "$tmp/keygate.conf" "$target_id"
        common_checks "$rc"
        if ((rc == 0)) && ! key_json | grep -q '"state": "revoked"'; then fail "exit 0 but not revoked"; fi
        ;;
    esac
}

# The daemon: started unarmed, SIGRTMIN+5 arms the counter for one exchange
# and a second one disarms it (not SIGUSR2: the daemon takes that for itself).
# The exchange must end (an answer or a closed connection, within 30 s), the
# daemon must serve the next request and stop with exit 0 and no sanitizer
# report.
check_daemon() {
    local code follow i
    fresh_store
    set +e
    KEYGATE_TORTURE_FAIL=$n KEYGATE_TORTURE_ARM=signal KEYGATE_TORTURE_COUNT=$tmp/count \
        "$tk" serve -c "$tmp/keygate.conf" >"$tmp/out" 2>"$tmp/err" &
    daemon_pid=$!
    set -e
    for ((i = 0; ; i++)); do
        curl -sf -o /dev/null --noproxy '*' -m 1 "http://127.0.0.1:$aport/readyz" && break
        kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon died before it was ready"
        ((i < 600)) || fail "the daemon was not ready within 60 s (unarmed: not the torture)"
        sleep 0.1
    done
    kill -s RTMIN+5 "$daemon_pid"
    sleep 0.05
    set +e
    case $scenario in
    health) code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 -H "Authorization: Bearer $user_key" "http://127.0.0.1:$port/health") ;;
    proxy | proxy_ok) code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 -H "Authorization: Bearer $user_key" "http://127.0.0.1:$port/v1/items?q=1") ;;
    admin_create) code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 -H "Authorization: Bearer $root_key" -H 'Content-Type: application/json' -d '{"name": "made"}' "http://127.0.0.1:$aport/v1/keys") ;;
    admin_rotate) code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 -X POST -H "Authorization: Bearer $root_key" "http://127.0.0.1:$aport/v1/keys/$target_id/rotate") ;;
    admin_revoke) code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 -X POST -H "Authorization: Bearer $root_key" "http://127.0.0.1:$aport/v1/keys/$target_id/revoke") ;;
    esac
    curl_rc=$?
    if ! kill -s RTMIN+5 "$daemon_pid" 2>/dev/null; then
        wait "$daemon_pid"
        rc=$?
        daemon_pid=
        fail "the daemon died during the exchange (exit $rc; the client got '$code')"
    fi
    set -e
    ((curl_rc == 28)) && fail "the request hung (30 s)"
    follow=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 10 -H "Authorization: Bearer $user_key" "http://127.0.0.1:$port/health" || true)
    [[ $follow == 200 ]] || fail "the next request after the failure got '$follow' (first: $code)"
    # The upstream side too (the torture's upstream refuses: 502): one failed
    # allocation in the loop's curl callback once left the loop unable to proxy.
    # proxy_ok's upstream answers (200), every other scenario's refuses (502).
    follow=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 10 -H "Authorization: Bearer $user_key" "http://127.0.0.1:$port/v1/after" || true)
    [[ $follow == "$want_after" ]] || fail "the next proxied request after the failure got '$follow', not $want_after (first: $code)"
    kill -TERM "$daemon_pid"
    set +e
    wait "$daemon_pid"
    rc=$?
    set -e
    daemon_pid=
    common_checks "$rc"
    ((rc == 0)) || fail "the daemon exited $rc after SIGTERM"
    case $scenario in
    admin_create) if [[ $code == 201 ]] && (($(keys_count) != 4)); then fail "201 but the key is not there"; fi ;;
    admin_revoke) if [[ $code == 200 ]] && ! key_json | grep -q '"state": "revoked"'; then fail "200 but not revoked"; fi ;;
    admin_rotate) if [[ $code == 201 ]] && ! key_json | grep -q '"rotated_to": "key_'; then fail "201 but not rotated"; fi ;;
    esac
}

# proxy_ok's upstream: a small answer that arrives whole, so the proxy
# sends it from one buffer (the path a failed response once leaked).
start_upstream() {
    mkdir -p "$tmp/www/v1"
    printf '{"items": [1, 2, 3]}\n' >"$tmp/www/v1/items"
    printf '{"after": true}\n' >"$tmp/www/v1/after"
    python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" "$uport" >/dev/null 2>&1 &
    upstream_pid=$!
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null --noproxy '*' -m 1 "http://127.0.0.1:$uport/v1/after" && return 0
        sleep 0.1
    done
    echo "torture: the upstream for proxy_ok did not start" >&2
    exit 1
}
stop_upstream() {
    if [[ -n $upstream_pid ]]; then
        kill "$upstream_pid" 2>/dev/null || true
        wait "$upstream_pid" 2>/dev/null || true
    fi
    upstream_pid=
}

scenarios=("$@")
((${#scenarios[@]})) || scenarios=(config create rotate revoke health proxy proxy_ok admin_create admin_rotate admin_revoke)
for scenario in "${scenarios[@]}"; do
    started=$SECONDS
    want_after=502
    if [[ $scenario == proxy_ok ]]; then
        start_upstream
        want_after=200
    fi
    n=${KEYGATE_TORTURE_FROM:-1}
    while ((n <= max)); do
        rm -f "$tmp/count"
        case $scenario in
        config | create | rotate | revoke) check_cli ;;
        health | proxy | proxy_ok | admin_create | admin_rotate | admin_revoke) check_daemon ;;
        *) echo "torture: unknown scenario $scenario" >&2; exit 2 ;;
        esac
        count=$(cat "$tmp/count" 2>/dev/null || echo 0)
        # Every scenario allocates: a first run that counted nothing was not
        # armed (the arm signal never reached the counter), not a pass.
        if ((count == 0)); then
            echo "torture: $scenario N=$n: no allocation was counted: the counter was never armed" >&2
            exit 1
        fi
        if ((count < n)); then break; fi
        n=$((n + 1))
    done
    if ((n > max)); then
        echo "torture: $scenario: N = ${KEYGATE_TORTURE_FROM:-1}..$max failed cleanly (stopped at KEYGATE_TORTURE_MAX; the last run counted $count allocations) in $((SECONDS - started)) s"
    else
        echo "torture: $scenario: N = ${KEYGATE_TORTURE_FROM:-1}..$((n - 1)) failed cleanly, N = $n ran through ($count allocations) in $((SECONDS - started)) s"
    fi
    stop_upstream
done
