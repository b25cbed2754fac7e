#!/usr/bin/env bash
# API-key gateway benchmark harness (loopback only, every load run bounded in time).
#
#   bench/run.sh [scenario ...]        scenarios: direct nginx-key haproxy-key keygate gateway
#                                      (default: direct nginx-key haproxy-key keygate, plus
#                                       gateway when GW_URL is set)
#   bench/run.sh --summary A/results.tsv B/results.tsv ...
#                                      one table (medians) over earlier runs' rows
#   bench/run.sh --targets             issue 13's table: a plain run, a TLS run and
#                                      bench/syscalls.sh, one after another (targets_run)
#
# It starts, on 127.0.0.1 only:
#   upstream     nginx :18080, returns 200 {"ok":true} for any path (access_log off)
#   nginx-key    nginx :18081, X-Api-Key / Authorization: Bearer checked against a
#                map of NKEYS random keys, 401 JSON if unknown, else proxy_pass over
#                keepalive upstream connections, adding the headers keygate adds
#                (key id, user id, tenant, scopes, request id, X-Forwarded-*)
#   haproxy-key  haproxy :18082, same contract with a map file + ACL, http-reuse always
#   keygate      build/keygate :18083 (admin :18084) with `workers WORKERS`, proxying to
#                the upstream, its store seeded with NKEYS keygate-format keys by
#                build/kg_bench_seed (config, store, secret and keys in run/). Nothing
#                is built here: build first (cmake + ninja, see README.md).
#   keygate-obs  only when named: a second keygate :18085 (admin :18086) on the same store
#                with `access_log run/access.log`, and /metrics scraped once a second while
#                it runs; the summary gives its req/s against keygate's (issue 7's
#                "access log + metrics cost <= 3%")
#   keygate-redis only when named: a third keygate :18087 (admin :18088) on the same store
#                with `limits redis://127.0.0.1:18089/0` and a redis-server of its own on
#                :18089 (persistence off, in run/redis/): rate limits shared in Redis.
#                KG_RATE_LIMIT is the limit of both keygate (in memory) and keygate-redis,
#                KG_LIMITS_LEASE keygate-redis's limits_lease: the summary gives
#                keygate-redis's req/s, CPU and Redis calls per request against keygate's
#                (issue 15's shared-limit row)
#   keygate-pg   only when named: a fourth keygate :18091 (admin :18092) whose store is a
#                PostgreSQL 15 server of its own on 127.0.0.1:18090 (initdb in run/pg/, run
#                as nobody when we are root, fsync off: a throwaway bench store), seeded
#                with the very keys of keygate's SQLite store (kg_bench_seed -i) and the
#                same secret; the summary gives its req/s and CPU per request against
#                keygate's (issue 15: the hot path stays in memory) and the server's CPU.
#                The server is stopped and run/pg/ removed on exit
#   gateway      not started unless GW_CMD is given: any gateway under test, reached
#                at GW_URL, that proxies to the upstream on 127.0.0.1:18080
# then, for each scenario, runs wrk (fixed duration/connections/threads, --latency)
# with a valid key and with an invalid key (401 path), plus a low-concurrency
# latency run, REPS times interleaved, and prints medians and ratios vs direct.
# Servers are stopped by PID on exit (also on Ctrl-C / error).
#
# Knobs (environment):
#   DURATION=10   seconds per measured wrk run     WARMUP=2   seconds of warm-up (discarded)
#   CONNS=64      connections of the load runs     THREADS=1  wrk threads
#   WORKERS=1     nginx worker_processes / haproxy nbthread / keygate workers, every server
#   LAT_CONNS=1   connections of the latency run (0 = skip)   LAT_DURATION=5
#   REPS=1        repetitions (interleaved: rep1 all scenarios, rep2 ...); medians shown
#   INVALID=1     also run the invalid-key (401) load run (0 = skip)
#   ROTATE=0      1 = valid-key load runs cycle through ROTATE_N (1000) different keys
#                 (lua/rotate.lua; costs wrk CPU, compare only with other ROTATE=1 runs)
#   PIN=0         1 = taskset: wrk on CPU 1, all servers on CPU 0 (default: no pinning)
#   TLS=0         1 = nginx-key and keygate listen with TLS (HTTPS, TLS 1.2/1.3) on the
#                 same P-256 certificate, made with openssl in run/tls/ on first use;
#                 wrk keeps its connections (keep-alive), so this measures TLS record
#                 cost, not handshakes. direct and the upstream stay plain HTTP.
#   NKEYS=10000   keys in the generated maps (run/keys.txt, regenerated if count differs)
#                 and in keygate's store (re-seeded on every run)
#   OUT=results/<timestamp>   where raw wrk output, results.tsv and summary.txt go
#   PORT_OFFSET=0 added to every port (the nginx/HAProxy configs are then rewritten into run/)
# keygate:
#   KEYGATE_BIN=build/keygate        KEYGATE_SEED_BIN=<dir of KEYGATE_BIN>/kg_bench_seed
#   KEYGATE_EXTRA_CONF=LINES         appended to run/keygate.conf (e.g. upstream_client curl)
#   KG_RATE_LIMIT=1000000000/s       keygate's rate_limit_default (every keygate: keygate,
#                 -obs, -redis, -pg): never reached, but the limiter is on the measured path
#                 (off: no limiter). keygate-redis: at 1000000000/s one lease covers a whole
#                 run (one Redis call); 100000/s gives leases of 1000 tokens (see README.md)
#   KG_LIMITS_LEASE=                 keygate-redis's limits_lease (empty: keygate's default,
#                 10ms; 0: one Redis call per request, the exact mode)
#   PG_BINDIR=/usr/lib/postgresql/15/bin   initdb, postgres, pg_isready, createdb and psql
#                 for keygate-pg
#   SYSCALLS=0    1 = strace -c -f runs instead of load runs (bench/syscalls.sh;
#                 SYSCALL_DURATION=3 seconds each, SYSCALL_CONNS="64 1")
#                 (relative paths: from the caller's directory, else from the repo root)
#   KG_HEADER_FMT='X-Api-Key: %s'   how keygate runs send the key (the config adds
#                 `credential_header X-Api-Key`, so it is the same header nginx gets;
#                 'Authorization: Bearer %s' works too)
# Any other gateway under test:
#   GW_URL=http://127.0.0.1:8080/   GW_KEY=<valid key>   GW_BAD_KEY=<invalid key>
#   GW_HEADER_FMT='X-Api-Key: %s'   (e.g. 'Authorization: Bearer %s')
#   GW_CMD='...'  optional command that starts the gateway in the foreground (run from
#                 the caller's directory); run.sh starts it, waits for GW_URL's port,
#                 measures its CPU, stops it by PID
#   GW_PID=<pid>  optional: measure CPU of an already running gateway
#   GW_KEYS_FILE  optional: file of valid keys for ROTATE=1 against the gateway
set -uo pipefail

ORIG_PWD=$PWD
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$BENCH_DIR" || exit 1

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
LAT_CONNS=${LAT_CONNS:-1}
LAT_DURATION=${LAT_DURATION:-5}
REPS=${REPS:-1}
INVALID=${INVALID:-1}
ROTATE=${ROTATE:-0}
ROTATE_N=${ROTATE_N:-1000}
PIN=${PIN:-0}
TLS=${TLS:-0}
NKEYS=${NKEYS:-10000}
SYSCALLS=${SYSCALLS:-0}
SYSCALL_DURATION=${SYSCALL_DURATION:-3}
SYSCALL_CONNS=${SYSCALL_CONNS:-64 1}
OUT=${OUT:-results/$(date +%Y%m%d-%H%M%S)}   # relative to bench/ by default
[ -n "${OUT%%/*}" ] && [ "${OUT#results/}" = "$OUT" ] && OUT="$ORIG_PWD/$OUT"  # user paths: caller's cwd
GW_URL=${GW_URL:-}
GW_KEY=${GW_KEY:-}
GW_BAD_KEY=${GW_BAD_KEY:-}
GW_HEADER_FMT=${GW_HEADER_FMT:-X-Api-Key: %s}
GW_CMD=${GW_CMD:-}
GW_PID=${GW_PID:-}
GW_KEYS_FILE=${GW_KEYS_FILE:-}
case "$GW_KEYS_FILE" in "" | /*) ;; *) GW_KEYS_FILE="$ORIG_PWD/$GW_KEYS_FILE" ;; esac
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
abs_bin() { # path -> absolute: as given from the caller's cwd if it exists there, else repo root
    case "$1" in
        /*) echo "$1" ;;
        *) if [ -e "$ORIG_PWD/$1" ]; then echo "$ORIG_PWD/$1"; else echo "$REPO_DIR/$1"; fi ;;
    esac
}
KEYGATE_BIN=$(abs_bin "${KEYGATE_BIN:-build/keygate}")
KEYGATE_SEED_BIN=$(abs_bin "${KEYGATE_SEED_BIN:-$(dirname "$KEYGATE_BIN")/kg_bench_seed}")
KG_HEADER_FMT=${KG_HEADER_FMT:-X-Api-Key: %s}
KG_RATE_LIMIT=${KG_RATE_LIMIT:-1000000000/s}
KG_LIMITS_LEASE=${KG_LIMITS_LEASE:-}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}

RUN="$BENCH_DIR/run"
TLS_DIR="$RUN/tls"
SCHEME=http CURL_TLS=()
if [ "$TLS" = 1 ]; then
    SCHEME=https CURL_TLS=(--cacert "$TLS_DIR/ca.crt")
fi
# PORT_OFFSET moves every port (e.g. 100: 18180...), for a second run beside another one.
PORT_OFFSET=${PORT_OFFSET:-0}
UP_PORT=$((18080 + PORT_OFFSET)) NK_PORT=$((18081 + PORT_OFFSET)) HK_PORT=$((18082 + PORT_OFFSET))
KG_PORT=$((18083 + PORT_OFFSET)) KG_ADMIN_PORT=$((18084 + PORT_OFFSET))
KO_PORT=$((18085 + PORT_OFFSET)) KO_ADMIN_PORT=$((18086 + PORT_OFFSET))
KR_PORT=$((18087 + PORT_OFFSET)) KR_ADMIN_PORT=$((18088 + PORT_OFFSET)) RD_PORT=$((18089 + PORT_OFFSET))
PG_PORT=$((18090 + PORT_OFFSET)) KP_PORT=$((18091 + PORT_OFFSET)) KP_ADMIN_PORT=$((18092 + PORT_OFFSET))
CLK_TCK=$(getconf CLK_TCK)

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for t in wrk nginx haproxy curl ss awk taskset; do
    command -v "$t" >/dev/null 2>&1 ||
        die "missing '$t' (apt-get install -y nginx-light haproxy wrk curl iproute2 util-linux)"
done

# ---- scenarios -----------------------------------------------------------
SUMMARY_FILES=()
TARGETS_MODE=0
if [ "${1:-}" = --targets ]; then
    # Every run issue 13's table needs, one after another (see targets_run below).
    [ $# -eq 1 ] || die "--targets takes no scenarios: it runs its own"
    TARGETS_MODE=1
    set -- direct
fi
if [ "${1:-}" = --summary ]; then
    shift
    [ $# -gt 0 ] || die "usage: run.sh --summary results/A/results.tsv [results/B/results.tsv ...]"
    for f in "$@"; do
        case "$f" in /*) SUMMARY_FILES+=("$f") ;; *) SUMMARY_FILES+=("$ORIG_PWD/$f") ;; esac
    done
    SUMMARY_ONLY=1 SUMMARY_TMP=$(mktemp)
    set --
fi
if [ $# -gt 0 ]; then
    SCENARIOS=("$@")
else
    SCENARIOS=(direct nginx-key haproxy-key keygate)
    [ -n "$GW_URL" ] && SCENARIOS+=(gateway)
fi
need_nk=0 need_hk=0 need_kg=0 need_ko=0 need_kr=0 need_kp=0
for s in "${SCENARIOS[@]}"; do
    case "$s" in
        direct) ;;
        keygate-obs)
            need_ko=1
            [ "${SUMMARY_ONLY:-0}" = 1 ] && continue
            [ -x "$KEYGATE_BIN" ] || die "no keygate binary at $KEYGATE_BIN"
            [ -x "$KEYGATE_SEED_BIN" ] || die "no seeding tool at $KEYGATE_SEED_BIN" ;;
        keygate-redis)
            need_kr=1
            [ "${SUMMARY_ONLY:-0}" = 1 ] && continue
            [ -x "$KEYGATE_BIN" ] || die "no keygate binary at $KEYGATE_BIN"
            [ -x "$KEYGATE_SEED_BIN" ] || die "no seeding tool at $KEYGATE_SEED_BIN"
            command -v redis-server >/dev/null 2>&1 || die "missing 'redis-server' (apt-get install -y redis-server)" ;;
        keygate-pg)
            need_kp=1
            [ "${SUMMARY_ONLY:-0}" = 1 ] && continue
            [ -x "$KEYGATE_BIN" ] || die "no keygate binary at $KEYGATE_BIN"
            [ -x "$KEYGATE_SEED_BIN" ] || die "no seeding tool at $KEYGATE_SEED_BIN"
            for t in initdb postgres pg_isready createdb psql; do
                [ -x "$PG_BINDIR/$t" ] || die "no $PG_BINDIR/$t (apt-get install -y postgresql-15; or set PG_BINDIR)"
            done ;;
        nginx-key) need_nk=1 ;;
        haproxy-key) need_hk=1 ;;
        keygate)
            need_kg=1
            [ "${SUMMARY_ONLY:-0}" = 1 ] && continue
            [ -x "$KEYGATE_BIN" ] ||
                die "no keygate binary at $KEYGATE_BIN (build it: cmake -S . -B build -G Ninja && ninja -C build; or set KEYGATE_BIN)"
            [ -x "$KEYGATE_SEED_BIN" ] ||
                die "no seeding tool at $KEYGATE_SEED_BIN (ninja -C build kg_bench_seed, with -DKEYGATE_BENCH=ON; or set KEYGATE_SEED_BIN)" ;;
        gateway)
            [ -n "$GW_URL" ] || die "scenario gateway needs GW_URL (and GW_KEY)"
            [ -n "$GW_KEY" ] || die "scenario gateway needs GW_KEY"
            [[ "$GW_URL" =~ ^https?://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?(/|$) ]] ||
                die "GW_URL must point at loopback (127.0.0.0/8, localhost, [::1])" ;;
        *) die "unknown scenario '$s' (direct nginx-key haproxy-key keygate keygate-obs keygate-redis keygate-pg gateway)" ;;
    esac
done

# ---- CPU placement ---------------------------------------------------------
SRV_PREFIX=() WRK_PREFIX=()
if [ "$PIN" = 1 ]; then
    SRV_PREFIX=(taskset -c 0)
    WRK_PREFIX=(taskset -c 1)
fi

# ---- process bookkeeping ---------------------------------------------------
declare -A PID_OF=() STOP_SIG=()
STARTED=()
PG_MADE=0

# Last started first: a keygate stops (and flushes) before the store or Redis it uses.
# STOP_SIG[name] overrides TERM (postgres: INT, a fast shutdown; TERM would wait for
# its clients).
stop_all() {
    local name pid i n
    for ((n = ${#STARTED[@]} - 1; n >= 0; n--)); do
        name=${STARTED[$n]}
        pid=${PID_OF[$name]}
        if kill -0 "$pid" 2>/dev/null; then
            kill "-${STOP_SIG[$name]:-TERM}" "$pid" 2>/dev/null
            for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            log "stopped $name (pid $pid)"
        fi
    done
    STARTED=()
    # keygate-pg's server: its data directory goes with it (a fresh one every run).
    pid=${PID_OF[postgres]:-}
    if [ "$PG_MADE" = 1 ] && { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }; then
        rm -rf "$RUN/pg" && log "removed $RUN/pg"
        PG_MADE=0
    fi
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

wait_port() { # name port [scheme] -> waits up to 10 s for an HTTP answer
    local name=$1 port=$2 scheme=${3:-http} i
    for i in $(seq 100); do
        kill -0 "${PID_OF[$name]}" 2>/dev/null || die "$name exited at start (see $RUN/$name.log)"
        curl -s -o /dev/null --max-time 1 "${CURL_TLS[@]}" "$scheme://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    die "$name did not answer on 127.0.0.1:$port within 10 s"
}

start_bg() { # name logfile cmd... -> starts in background, records PID
    local name=$1 logf=$2; shift 2
    "$@" >"$logf" 2>&1 &
    PID_OF[$name]=$!
    STARTED+=("$name")
}

# utime+stime ticks of a process, its threads and all its descendants
tree_ticks() {
    local pid=$1 total=0 p t kids
    [ -n "$pid" ] || { echo 0; return; }
    local queue=("$pid")
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}; queue=("${queue[@]:1}")
        t=$(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' \
            "/proc/$p/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
        kids=$(ps -o pid= --ppid "$p" 2>/dev/null) || kids=""
        for k in $kids; do queue+=("$k"); done
    done
    echo "$total"
}

# CPU ticks the whole machine spent busy (every core), and ticks of this shell's
# reaped children (wrk runs as one): with the servers' ticks they give how much
# CPU something outside the benchmark took during a run (the other% column).
# Loopback packets are sometimes processed in ksoftirqd rather than in the sender:
# that is the benchmark's own network work, so it is not counted as "other".
sys_busy_ticks() {
    local t k p
    t=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)
    k=0
    for p in $(pgrep -x 'ksoftirqd/[0-9]+'); do
        k=$((k + $(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' \
            "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo $((t - k))
}
child_ticks() {
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[14] + f[15] }' "/proc/$$/stat"
}

# ---- keys ------------------------------------------------------------------
gen_keys() {
    mkdir -p "$RUN/tmp"
    if [ -f "$RUN/keys.txt" ] && [ "$(wc -l <"$RUN/keys.txt")" -eq "$NKEYS" ] &&
        [ -s "$RUN/keys.nginx.id.map" ] && [ -s "$RUN/keys.haproxy.user.map" ]; then
        return
    fi
    if ! [ -f "$RUN/keys.txt" ] || [ "$(wc -l <"$RUN/keys.txt")" -ne "$NKEYS" ]; then
        log "generating $NKEYS random keys into $RUN/keys.txt"
        # awk (not sed) so the last line gets its newline too: wc -l must equal NKEYS
        od -An -tx1 -v -N $((16 * NKEYS)) /dev/urandom | tr -d ' \n' | fold -w 32 |
            awk '{ print "kg_" $0 }' >"$RUN/keys.txt"
        [ "$(sort -u "$RUN/keys.txt" | wc -l)" -eq "$NKEYS" ] || die "key generation produced duplicates"
    fi
    awk '{ printf "\"%s\" 1;\n", $1 }' "$RUN/keys.txt" >"$RUN/keys.nginx.map"
    awk '{ printf "%s 1\n", $1 }' "$RUN/keys.txt" >"$RUN/keys.haproxy.map"
    # Each key's id and user id, as long as keygate's (key_ / usr_ and 22 characters),
    # for the identity headers nginx-key and haproxy-key add upstream.
    awk '{ printf "\"%s\" key_%s;\n", $1, substr($1, 4, 22) }' "$RUN/keys.txt" >"$RUN/keys.nginx.id.map"
    awk '{ printf "\"%s\" usr_%s;\n", $1, substr($1, 14, 22) }' "$RUN/keys.txt" >"$RUN/keys.nginx.user.map"
    awk '{ printf "%s key_%s\n", $1, substr($1, 4, 22) }' "$RUN/keys.txt" >"$RUN/keys.haproxy.id.map"
    awk '{ printf "%s usr_%s\n", $1, substr($1, 14, 22) }' "$RUN/keys.txt" >"$RUN/keys.haproxy.user.map"
}

# ---- TLS (TLS=1): one CA and one server certificate for 127.0.0.1 -------------
gen_tls() {
    [ -s "$TLS_DIR/server.crt" ] && [ -s "$TLS_DIR/server.key" ] && return
    command -v openssl >/dev/null 2>&1 || die "TLS=1 needs the openssl command (apt-get install -y openssl)"
    log "making a test CA and a server certificate in $TLS_DIR"
    mkdir -p "$TLS_DIR"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS_DIR/ext"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" -subj "/CN=keygate bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        >"$TLS_DIR/openssl.log" 2>&1 &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" >>"$TLS_DIR/openssl.log" 2>&1 &&
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
            -set_serial 1 -days 30 -extfile "$TLS_DIR/ext" -out "$TLS_DIR/server.crt" \
            >>"$TLS_DIR/openssl.log" 2>&1 || die "openssl failed (see $TLS_DIR/openssl.log)"
}

# nginx-key with TLS=1: conf/nginx-key.conf with an ssl listener on the same port.
nginx_key_conf() {
    local base
    base=$(conf_of nginx-key.conf)
    if [ "$TLS" != 1 ]; then
        echo "$base"
        return
    fi
    sed -e "s|listen 127.0.0.1:$NK_PORT backlog=4096;|listen 127.0.0.1:$NK_PORT ssl backlog=4096; ssl_certificate $TLS_DIR/server.crt; ssl_certificate_key $TLS_DIR/server.key; ssl_protocols TLSv1.2 TLSv1.3;|" \
        -e "s|include ../run/keys.nginx.map;|include $RUN/keys.nginx.map;|" \
        "$base" >"$RUN/nginx-key-tls.conf"
    grep -q "ssl_certificate" "$RUN/nginx-key-tls.conf" || die "could not add TLS to conf/nginx-key.conf"
    echo "$RUN/nginx-key-tls.conf"
}

# ---- servers ---------------------------------------------------------------
# conf/NAME as given, or with PORT_OFFSET its copy in run/ with the ports moved
# (same directory depth, so the configs' relative paths still hold).
conf_of() {
    [ "$PORT_OFFSET" = 0 ] && { echo "conf/$1"; return; }
    sed -e "s/127\.0\.0\.1:18080/127.0.0.1:$UP_PORT/g" -e "s/127\.0\.0\.1:18081/127.0.0.1:$NK_PORT/g" \
        -e "s/127\.0\.0\.1:18082/127.0.0.1:$HK_PORT/g" "conf/$1" >"$RUN/$1"
    echo "run/$1"
}

start_upstream() {
    port_busy $UP_PORT && die "127.0.0.1:$UP_PORT already in use (another run? stop it first)"
    local conf
    conf=$(conf_of upstream.conf)
    nginx -q -t -p "$BENCH_DIR/" -c "$conf" -g "worker_processes $WORKERS;" ||
        die "$conf does not validate"
    start_bg upstream "$RUN/upstream.log" "${SRV_PREFIX[@]}" \
        nginx -p "$BENCH_DIR/" -c "$conf" -g "worker_processes $WORKERS;"
    wait_port upstream $UP_PORT
}

start_nginx_key() {
    port_busy $NK_PORT && die "127.0.0.1:$NK_PORT already in use"
    local conf
    conf=$(nginx_key_conf) || exit 1
    nginx -q -t -p "$BENCH_DIR/" -c "$conf" -g "worker_processes $WORKERS;" ||
        die "$conf does not validate"
    start_bg nginx-key "$RUN/nginx-key.log" "${SRV_PREFIX[@]}" \
        nginx -p "$BENCH_DIR/" -c "$conf" -g "worker_processes $WORKERS;"
    wait_port nginx-key $NK_PORT $SCHEME
}

start_haproxy_key() {
    port_busy $HK_PORT && die "127.0.0.1:$HK_PORT already in use"
    export BENCH_RUN="$RUN" HAPROXY_THREADS="$WORKERS"
    local conf
    conf=$(conf_of haproxy-key.cfg)
    haproxy -q -c -f "$conf" || die "$conf does not validate"
    start_bg haproxy-key "$RUN/haproxy-key.log" "${SRV_PREFIX[@]}" \
        haproxy -db -f "$conf"
    wait_port haproxy-key $HK_PORT
}

# keygate: a config of its own in run/, a freshly seeded store, then the daemon.
write_keygate_conf() { # [file port admin_port database]
    local conf=${1:-$RUN/keygate.conf} port=${2:-$KG_PORT} admin=${3:-$KG_ADMIN_PORT}
    local db=${4:-$RUN/keygate.db}
    cat >"$conf" <<EOF
# Written by bench/run.sh on every run; edits are lost.
listen            127.0.0.1:$port
admin_listen      127.0.0.1:$admin
upstream          http://127.0.0.1:$UP_PORT
database          "$db"
secret_file       "$RUN/keygate.secret"
key_prefix        kg_
credential_header X-Api-Key
workers           $WORKERS
log_level         info
# Every key gets a rate limit it never reaches, so the limiter (a GCRA step and the
# RateLimit headers) is on the measured path, as a deployment with limits has it.
rate_limit_default $KG_RATE_LIMIT
# The invalid-key runs measure the 401 path: the brute-force throttle would
# turn them into 429s after 20 attempts.
auth_throttle     off
EOF
    if [ "$TLS" = 1 ]; then
        printf 'tls_certificate   "%s"\ntls_key           "%s"\n' "$TLS_DIR/server.crt" \
            "$TLS_DIR/server.key" >>"$conf"
    fi
    # e.g. KEYGATE_EXTRA_CONF='upstream_client curl'. The limit is KG_RATE_LIMIT's: a
    # second rate_limit_default line would make the config invalid.
    case "${KEYGATE_EXTRA_CONF:-}" in
        *rate_limit_default*) die "set the limit with KG_RATE_LIMIT=RATE, not in KEYGATE_EXTRA_CONF (rate_limit_default is already in the config)" ;;
    esac
    [ -n "${KEYGATE_EXTRA_CONF:-}" ] && printf '%s\n' "$KEYGATE_EXTRA_CONF" >>"$conf"
    return 0
}

seed_keygate() {
    # A fresh store each run: no last_used_at or rotation left over from an earlier one.
    rm -f "$RUN/keygate.db" "$RUN/keygate.db-wal" "$RUN/keygate.db-shm" "$RUN/keygate.secret" \
        "$RUN/keygate-keys.txt" "$RUN/keygate-unknown-key.txt"
    log "seeding $NKEYS keys into $RUN/keygate.db"
    "$KEYGATE_SEED_BIN" -c "$RUN/keygate.conf" -n "$NKEYS" -o "$RUN/keygate-keys.txt" \
        -u "$RUN/keygate-unknown-key.txt" >"$RUN/keygate-seed.log" 2>&1 ||
        die "seeding failed: $(tail -3 "$RUN/keygate-seed.log")"
    [ "$(wc -l <"$RUN/keygate-keys.txt")" -eq "$NKEYS" ] || die "seeding wrote the wrong number of keys"
    KG_VALID_KEY=$(sed -n "$(( (NKEYS + 1) / 2 ))p" "$RUN/keygate-keys.txt")
    KG_BAD_KEY=$(head -1 "$RUN/keygate-unknown-key.txt")
    # Same shape, last checksum character changed: refused before any lookup.
    local last=${KG_VALID_KEY: -1} swap=0
    [ "$last" = 0 ] && swap=1
    KG_BADSUM_KEY=${KG_VALID_KEY%?}$swap
}

start_keygate() {
    port_busy $KG_PORT && die "127.0.0.1:$KG_PORT already in use"
    port_busy $KG_ADMIN_PORT && die "127.0.0.1:$KG_ADMIN_PORT already in use"
    write_keygate_conf
    "$KEYGATE_BIN" serve -t -c "$RUN/keygate.conf" >"$RUN/keygate-check.log" 2>&1 ||
        die "run/keygate.conf does not validate: $(cat "$RUN/keygate-check.log")"
    seed_keygate
    start_bg keygate "$RUN/keygate.log" "${SRV_PREFIX[@]}" \
        "$KEYGATE_BIN" serve -c "$RUN/keygate.conf"
    local i
    for i in $(seq 300); do
        kill -0 "${PID_OF[keygate]}" 2>/dev/null || die "keygate exited at start (see $RUN/keygate.log)"
        port_busy $KG_PORT && break
        sleep 0.1
    done
    port_busy $KG_PORT || die "keygate did not listen on port $KG_PORT within 30 s"
}

# keygate-obs: the same store (seeded by start_keygate, or here when keygate is not
# in the run) with the access log on, and a scraper reading /metrics every second.
start_keygate_obs() {
    port_busy $KO_PORT && die "127.0.0.1:$KO_PORT already in use"
    port_busy $KO_ADMIN_PORT && die "127.0.0.1:$KO_ADMIN_PORT already in use"
    if [ $need_kg = 0 ]; then
        write_keygate_conf
        seed_keygate
    fi
    write_keygate_conf "$RUN/keygate-obs.conf" $KO_PORT $KO_ADMIN_PORT
    rm -f "$RUN/access.log"
    printf 'access_log        "%s"\n' "$RUN/access.log" >>"$RUN/keygate-obs.conf"
    "$KEYGATE_BIN" serve -t -c "$RUN/keygate-obs.conf" >"$RUN/keygate-obs-check.log" 2>&1 ||
        die "run/keygate-obs.conf does not validate: $(cat "$RUN/keygate-obs-check.log")"
    start_bg keygate-obs "$RUN/keygate-obs.log" "${SRV_PREFIX[@]}" \
        "$KEYGATE_BIN" serve -c "$RUN/keygate-obs.conf"
    local i
    for i in $(seq 300); do
        kill -0 "${PID_OF[keygate-obs]}" 2>/dev/null || die "keygate-obs exited at start (see $RUN/keygate-obs.log)"
        port_busy $KO_PORT && break
        sleep 0.1
    done
    port_busy $KO_PORT || die "keygate-obs did not listen on port $KO_PORT within 30 s"
    # Prometheus scrapes every 15 s by default; once a second is the harsher case.
    start_bg metrics-scraper "$RUN/metrics-scraper.log" bash -c \
        "while :; do curl -s -o /dev/null --max-time 2 http://127.0.0.1:$KO_ADMIN_PORT/metrics; sleep 1; done"
}

# keygate-redis: the same store with its rate limits in a redis-server of its own.
start_keygate_redis() {
    port_busy $KR_PORT && die "127.0.0.1:$KR_PORT already in use"
    port_busy $KR_ADMIN_PORT && die "127.0.0.1:$KR_ADMIN_PORT already in use"
    port_busy $RD_PORT && die "127.0.0.1:$RD_PORT already in use"
    if [ $need_kg = 0 ] && [ $need_ko = 0 ]; then
        write_keygate_conf
        seed_keygate
    fi
    mkdir -p "$RUN/redis"
    start_bg redis "$RUN/redis.log" "${SRV_PREFIX[@]}" redis-server --port $RD_PORT \
        --bind 127.0.0.1 --dir "$RUN/redis" --save "" --appendonly no
    local i
    for i in $(seq 100); do port_busy $RD_PORT && break; sleep 0.1; done
    port_busy $RD_PORT || die "redis-server did not listen on port $RD_PORT within 10 s"
    write_keygate_conf "$RUN/keygate-redis.conf" $KR_PORT $KR_ADMIN_PORT
    printf 'limits            redis://127.0.0.1:%s/0\n' $RD_PORT >>"$RUN/keygate-redis.conf"
    # The lease is Redis's alone: the local limiter has none, the limit is the same.
    [ -n "$KG_LIMITS_LEASE" ] && printf 'limits_lease      %s\n' "$KG_LIMITS_LEASE" >>"$RUN/keygate-redis.conf"
    "$KEYGATE_BIN" serve -t -c "$RUN/keygate-redis.conf" >"$RUN/keygate-redis-check.log" 2>&1 ||
        die "run/keygate-redis.conf does not validate: $(cat "$RUN/keygate-redis-check.log")"
    start_bg keygate-redis "$RUN/keygate-redis.log" "${SRV_PREFIX[@]}" \
        "$KEYGATE_BIN" serve -c "$RUN/keygate-redis.conf"
    for i in $(seq 300); do
        kill -0 "${PID_OF[keygate-redis]}" 2>/dev/null || die "keygate-redis exited at start (see $RUN/keygate-redis.log)"
        port_busy $KR_PORT && break
        sleep 0.1
    done
    port_busy $KR_PORT || die "keygate-redis did not listen on port $KR_PORT within 30 s"
}

# keygate-pg's PostgreSQL: a cluster of its own in run/pg/ (made afresh every run,
# removed on exit), on loopback TCP only, as nobody when we are root (postgres refuses
# to run as root). fsync and full-page writes are off: the store is thrown away after
# the run, and the measured path reads keys from memory, not from the server.
PG_AS=()
start_postgres() {
    port_busy $PG_PORT && die "127.0.0.1:$PG_PORT already in use"
    rm -rf "$RUN/pg"
    mkdir -p "$RUN/pg" || die "cannot create $RUN/pg"
    PG_MADE=1
    if [ "$(id -u)" = 0 ]; then
        id nobody >/dev/null 2>&1 || die "running as root and there is no user nobody to run postgres as"
        command -v setpriv >/dev/null 2>&1 || die "missing 'setpriv' (util-linux) to run postgres as nobody"
        chown "$(id -u nobody):$(id -g nobody)" "$RUN/pg" || die "cannot hand $RUN/pg to nobody"
        PG_AS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups)
    fi
    log "initdb in $RUN/pg/data"
    "${PG_AS[@]}" "$PG_BINDIR/initdb" -D "$RUN/pg/data" -U keygate -A trust -E UTF8 --no-sync \
        --locale=C >"$RUN/pg/initdb.log" 2>&1 || die "initdb failed (see $RUN/pg/initdb.log)"
    start_bg postgres "$RUN/postgres.log" "${SRV_PREFIX[@]}" "${PG_AS[@]}" \
        "$PG_BINDIR/postgres" -D "$RUN/pg/data" -p $PG_PORT -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories= -c fsync=off -c full_page_writes=off
    STOP_SIG[postgres]=INT
    local i
    for i in $(seq 300); do
        kill -0 "${PID_OF[postgres]}" 2>/dev/null || die "postgres exited at start (see $RUN/postgres.log)"
        "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p $PG_PORT && break
        sleep 0.1
    done
    "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p $PG_PORT ||
        die "postgres did not accept connections on 127.0.0.1:$PG_PORT within 30 s"
    "$PG_BINDIR/createdb" -h 127.0.0.1 -p $PG_PORT -U keygate keygate_bench >>"$RUN/pg/initdb.log" 2>&1 ||
        die "createdb failed (see $RUN/pg/initdb.log)"
}

# keygate-pg: the same keys and secret as keygate's SQLite store, in PostgreSQL.
start_keygate_pg() {
    port_busy $KP_PORT && die "127.0.0.1:$KP_PORT already in use"
    port_busy $KP_ADMIN_PORT && die "127.0.0.1:$KP_ADMIN_PORT already in use"
    if [ $need_kg = 0 ] && [ $need_ko = 0 ] && [ $need_kr = 0 ]; then
        write_keygate_conf
        seed_keygate
    fi
    start_postgres
    write_keygate_conf "$RUN/keygate-pg.conf" $KP_PORT $KP_ADMIN_PORT \
        "postgres://keygate@127.0.0.1:$PG_PORT/keygate_bench"
    "$KEYGATE_BIN" serve -t -c "$RUN/keygate-pg.conf" >"$RUN/keygate-pg-check.log" 2>&1 ||
        die "run/keygate-pg.conf does not validate: $(cat "$RUN/keygate-pg-check.log")"
    log "seeding the same $NKEYS keys into PostgreSQL (127.0.0.1:$PG_PORT/keygate_bench)"
    "$KEYGATE_SEED_BIN" -c "$RUN/keygate-pg.conf" -i "$RUN/keygate-keys.txt" \
        >"$RUN/keygate-pg-seed.log" 2>&1 || die "seeding PostgreSQL failed: $(tail -3 "$RUN/keygate-pg-seed.log")"
    grep -q "^kg_bench_seed: $NKEYS keys from a file .*(secret reused)" "$RUN/keygate-pg-seed.log" ||
        die "seeding PostgreSQL did not insert $NKEYS keys with keygate's secret: $(tail -1 "$RUN/keygate-pg-seed.log")"
    # Now rather than autovacuum's own time, during a measured run.
    "$PG_BINDIR/psql" -q -h 127.0.0.1 -p $PG_PORT -U keygate -d keygate_bench -c 'VACUUM ANALYZE' \
        >>"$RUN/keygate-pg-seed.log" 2>&1 || die "VACUUM ANALYZE failed (see $RUN/keygate-pg-seed.log)"
    start_bg keygate-pg "$RUN/keygate-pg.log" "${SRV_PREFIX[@]}" \
        "$KEYGATE_BIN" serve -c "$RUN/keygate-pg.conf"
    local i
    for i in $(seq 300); do
        kill -0 "${PID_OF[keygate-pg]}" 2>/dev/null || die "keygate-pg exited at start (see $RUN/keygate-pg.log)"
        port_busy $KP_PORT && break
        sleep 0.1
    done
    port_busy $KP_PORT || die "keygate-pg did not listen on port $KP_PORT within 30 s"
}

gw_port() { # port of GW_URL
    local hp=${GW_URL#*://}; hp=${hp%%/*}
    case "$hp" in *:*) echo "${hp##*:}" ;; *) case "$GW_URL" in https*) echo 443 ;; *) echo 80 ;; esac ;; esac
}

start_gateway() {
    if [ -n "$GW_CMD" ]; then
        port_busy "$(gw_port)" && die "gateway port $(gw_port) already in use"
        # GW_CMD runs from the caller's working directory, not bench/
        # shellcheck disable=SC2016  # $1/$2 are expanded by the child bash, on purpose
        start_bg gateway "$RUN/gateway.log" "${SRV_PREFIX[@]}" \
            bash -c 'cd "$1" && exec bash -c "exec $2"' _ "$ORIG_PWD" "$GW_CMD"
        local i
        for i in $(seq 300); do
            kill -0 "${PID_OF[gateway]}" 2>/dev/null || die "gateway exited at start (see $RUN/gateway.log)"
            port_busy "$(gw_port)" && break
            sleep 0.1
        done
        port_busy "$(gw_port)" || die "gateway did not listen on port $(gw_port) within 30 s"
    elif [ -n "$GW_PID" ]; then
        PID_OF[gateway]=$GW_PID   # not in STARTED: not ours to stop
    fi
}

# ---- per-scenario facts ----------------------------------------------------
url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$UP_PORT/v1/items" ;;
        nginx-key) echo "$SCHEME://127.0.0.1:$NK_PORT/v1/items" ;;
        haproxy-key) echo "http://127.0.0.1:$HK_PORT/v1/items" ;;
        keygate) echo "$SCHEME://127.0.0.1:$KG_PORT/v1/items" ;;
        keygate-obs) echo "$SCHEME://127.0.0.1:$KO_PORT/v1/items" ;;
        keygate-redis) echo "$SCHEME://127.0.0.1:$KR_PORT/v1/items" ;;
        keygate-pg) echo "$SCHEME://127.0.0.1:$KP_PORT/v1/items" ;;
        gateway) echo "$GW_URL" ;;
    esac
}
is_keygate() { # scenario -> true for the keygate instances (seeded keygate keys)
    case "$1" in keygate | keygate-obs | keygate-redis | keygate-pg) return 0 ;; *) return 1 ;; esac
}
key_hdr() { # scenario key -> header line
    local fmt='X-Api-Key: %s' pat='%s'
    [ "$1" = gateway ] && fmt=$GW_HEADER_FMT
    is_keygate "$1" && fmt=$KG_HEADER_FMT
    echo "${fmt//"$pat"/$2}"
}
gw_pid_of() { # scenario -> pid whose tree is "the gateway" in the CPU columns
    case "$1" in
        direct) echo "" ;;
        *) echo "${PID_OF[$1]:-}" ;;
    esac
}
aux_pid_of() { # scenario -> pid of the server it needs for its limits or store (aux_us/rq)
    case "$1" in
        keygate-redis) echo "${PID_OF[redis]:-}" ;;
        keygate-pg) echo "${PID_OF[postgres]:-}" ;;
        *) echo "" ;;
    esac
}

# ---- smoke checks: the scenarios must behave before they are measured ------
check_status() { # desc expected url [header]
    local desc=$1 want=$2 url=$3 got
    shift 3
    got=$(curl -s -o "$RUN/smoke.body" -w '%{http_code}' --max-time 5 "${CURL_TLS[@]}" "$@" "$url") ||
        got="curl-failed"
    if [ "$got" != "$want" ]; then
        echo "SMOKE FAIL: $desc: want $want, got $got ($(head -c 200 "$RUN/smoke.body" 2>/dev/null))" >&2
        return 1
    fi
    echo "  ok  $desc -> $got $(head -c 80 "$RUN/smoke.body")" >&2
}

# What the gateway added to the request, as the upstream saw it (conf/upstream.conf's
# /bench/headers), kept in $OUT/headers-<scenario>.txt: every identity and forwarding
# header keygate sends must be there, and neither key header.
check_headers() { # scenario header-line
    local s=$1 url f line name
    url=$(url_of "$s")
    url=${url%/v1/items}/bench/headers
    f="$OUT/headers-$s.txt"
    curl -s -o "$f" --max-time 5 "${CURL_TLS[@]}" -H "$2" "$url" || {
        echo "SMOKE FAIL: $s: no answer from $url" >&2; return 1; }
    for name in key_id tenant scopes user_id request_id forwarded_for forwarded_proto forwarded_host; do
        line=$(grep "^$name=" "$f")
        if [ -z "$line" ] || [ "$line" = "$name=" ]; then
            echo "SMOKE FAIL: $s does not send the upstream $name (see $f)" >&2; return 1
        fi
    done
    for name in x_api_key authorization; do
        if [ "$(grep "^$name=" "$f")" != "$name=" ]; then
            echo "SMOKE FAIL: $s forwards the key ($name; see $f)" >&2; return 1
        fi
    done
    echo "  ok  $s adds upstream: $(grep -v '^x_api_key=\|^authorization=' "$f" | tr '\n' ' ')" >&2
}

metrics_of() { # admin port -> its /metrics (the admin listener speaks TLS when TLS=1)
    curl -s --max-time 5 "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$1/metrics"
}

# The RateLimit-Policy header a keygate answers the valid key with: two keygates
# compared must apply the same limit (the comparison is where the buckets live).
ratelimit_policy() { # scenario
    curl -s -o /dev/null -D - --max-time 5 "${CURL_TLS[@]}" -H "$(key_hdr "$1" "$KG_VALID_KEY")" \
        "$(url_of "$1")" | tr -d '\r' | sed -n 's/^[Rr]ate[Ll]imit-[Pp]olicy: //p'
}
check_same_limit() { # scenario: the same limit as keygate's (when keygate is in the run)
    local mine theirs same=""
    mine=$(ratelimit_policy "$1")
    if [ $need_kg = 1 ]; then
        theirs=$(ratelimit_policy keygate)
        if [ "$mine" != "$theirs" ]; then
            echo "SMOKE FAIL: $1's limit (${mine:-none}) is not keygate's (${theirs:-none})" >&2; return 1
        fi
        same=" (keygate: the same)"
    fi
    echo "  ok  $1 RateLimit-Policy: ${mine:-none}$same" >&2
}

smoke() {
    local s=$1 url fail=0
    url=$(url_of "$s")
    log "smoke checks: $s"
    case "$s" in
        direct)
            check_status "direct GET" 200 "$url" || fail=1 ;;
        nginx-key | haproxy-key)
            check_status "$s valid X-Api-Key" 200 "$url" -H "X-Api-Key: $VALID_KEY" || fail=1
            check_status "$s valid Bearer" 200 "$url" -H "Authorization: Bearer $VALID_KEY" || fail=1
            check_status "$s valid key, POST" 200 "$url" -X POST -H "X-Api-Key: $VALID_KEY" -d '{"a":1}' || fail=1
            check_status "$s invalid key" 401 "$url" -H "X-Api-Key: $BAD_KEY" || fail=1
            check_status "$s invalid Bearer" 401 "$url" -H "Authorization: Bearer $BAD_KEY" || fail=1
            check_status "$s Basic auth is not a key" 401 "$url" -H "Authorization: Basic $VALID_KEY" || fail=1
            check_status "$s no key" 401 "$url" || fail=1
            check_headers "$s" "X-Api-Key: $VALID_KEY" || fail=1 ;;
        keygate)
            check_status "keygate valid key ($KG_HEADER_FMT)" 200 "$url" -H "$(key_hdr keygate "$KG_VALID_KEY")" || fail=1
            check_status "keygate valid Bearer" 200 "$url" -H "Authorization: Bearer $KG_VALID_KEY" || fail=1
            check_status "keygate valid key, POST" 200 "$url" -X POST -H "$(key_hdr keygate "$KG_VALID_KEY")" -d '{"a":1}' || fail=1
            check_status "keygate first seeded key" 200 "$url" -H "$(key_hdr keygate "$(head -1 "$RUN/keygate-keys.txt")")" || fail=1
            check_status "keygate unknown well-formed key" 401 "$url" -H "$(key_hdr keygate "$KG_BAD_KEY")" || fail=1
            check_status "keygate bad checksum" 401 "$url" -H "$(key_hdr keygate "$KG_BADSUM_KEY")" || fail=1
            check_status "keygate Basic auth is not a key" 401 "$url" -H "Authorization: Basic $KG_VALID_KEY" || fail=1
            check_status "keygate no key" 401 "$url" || fail=1
            check_status "keygate admin /livez" 200 "$SCHEME://127.0.0.1:$KG_ADMIN_PORT/livez" || fail=1
            check_headers keygate "$(key_hdr keygate "$KG_VALID_KEY")" || fail=1 ;;
        keygate-obs)
            check_status "keygate-obs valid key" 200 "$url" -H "$(key_hdr keygate-obs "$KG_VALID_KEY")" || fail=1
            check_status "keygate-obs unknown well-formed key" 401 "$url" -H "$(key_hdr keygate-obs "$KG_BAD_KEY")" || fail=1
            check_status "keygate-obs /metrics" 200 "$SCHEME://127.0.0.1:$KO_ADMIN_PORT/metrics" || fail=1
            local i
            for i in $(seq 50); do grep -q '"status":401' "$RUN/access.log" 2>/dev/null && break; sleep 0.1; done
            if grep -q '"status":200' "$RUN/access.log" && grep -q '"status":401' "$RUN/access.log"; then
                echo "  ok  keygate-obs access log: $(wc -l <"$RUN/access.log") line(s)" >&2
            else
                echo "SMOKE FAIL: keygate-obs wrote no access log lines to $RUN/access.log" >&2; fail=1
            fi ;;
        keygate-redis)
            check_status "keygate-redis valid key" 200 "$url" -H "$(key_hdr keygate-redis "$KG_VALID_KEY")" || fail=1
            check_status "keygate-redis unknown well-formed key" 401 "$url" -H "$(key_hdr keygate-redis "$KG_BAD_KEY")" || fail=1
            if metrics_of $KR_ADMIN_PORT | grep -q '^keygate_limiter_redis_up 1'; then
                echo "  ok  keygate-redis: Redis answers" >&2
            else
                echo "SMOKE FAIL: keygate-redis does not reach its Redis (see $RUN/keygate-redis.log)" >&2; fail=1
            fi
            check_same_limit keygate-redis || fail=1 ;;
        keygate-pg)
            check_status "keygate-pg valid key ($KG_HEADER_FMT)" 200 "$url" -H "$(key_hdr keygate-pg "$KG_VALID_KEY")" || fail=1
            check_status "keygate-pg valid Bearer" 200 "$url" -H "Authorization: Bearer $KG_VALID_KEY" || fail=1
            check_status "keygate-pg valid key, POST" 200 "$url" -X POST -H "$(key_hdr keygate-pg "$KG_VALID_KEY")" -d '{"a":1}' || fail=1
            check_status "keygate-pg first seeded key" 200 "$url" -H "$(key_hdr keygate-pg "$(head -1 "$RUN/keygate-keys.txt")")" || fail=1
            check_status "keygate-pg unknown well-formed key" 401 "$url" -H "$(key_hdr keygate-pg "$KG_BAD_KEY")" || fail=1
            check_status "keygate-pg bad checksum" 401 "$url" -H "$(key_hdr keygate-pg "$KG_BADSUM_KEY")" || fail=1
            check_status "keygate-pg no key" 401 "$url" || fail=1
            check_status "keygate-pg admin /readyz" 200 "$SCHEME://127.0.0.1:$KP_ADMIN_PORT/readyz" || fail=1
            check_headers keygate-pg "$(key_hdr keygate-pg "$KG_VALID_KEY")" || fail=1
            check_same_limit keygate-pg || fail=1 ;;
        gateway)
            check_status "gateway valid key" 200 "$url" -H "$(key_hdr gateway "$GW_KEY")" || fail=1
            check_status "gateway invalid key" 401 "$url" -H "$(key_hdr gateway "$GW_BAD_KEY")" || fail=1
            check_status "gateway no key" 401 "$url" || fail=1 ;;
    esac
    [ $fail = 0 ] || die "scenario $s does not behave as expected; not measuring it"
}

# ---- one measured wrk run --------------------------------------------------
redis_calls() { # keygate-redis's keygate_limiter_redis_calls_total
    metrics_of $KR_ADMIN_PORT | awk '$1 == "keygate_limiter_redis_calls_total" { print $2 }'
}
# appends one row to $OUT/results.tsv
measure() { # rep scenario keycase conns duration
    local rep=$1 s=$2 kc=$3 c=$4 d=$5
    local url key hdr script raw gpid apid t0g t0u t1g t1u t0s t1s t0w t1w t0a t1a c0 c1 line
    url=$(url_of "$s")
    case "$kc" in
        valid) key=$VALID_KEY; [ "$s" = gateway ] && key=$GW_KEY; is_keygate "$s" && key=$KG_VALID_KEY ;;
        invalid) key=$BAD_KEY; [ "$s" = gateway ] && key=$GW_BAD_KEY; is_keygate "$s" && key=$KG_BAD_KEY ;;
    esac
    hdr=$(key_hdr "$s" "$key")
    script=lua/report.lua
    local -a envs=()
    if [ "$ROTATE" = 1 ] && [ "$kc" = valid ] && [ "$c" = "$CONNS" ] && [ "$s" != direct ]; then
        script=lua/rotate.lua
        local kf="$RUN/keys.txt" fmt='X-Api-Key: %s'
        [ "$s" = gateway ] && { kf=${GW_KEYS_FILE:-}; fmt=$GW_HEADER_FMT; }
        is_keygate "$s" && { kf="$RUN/keygate-keys.txt"; fmt=$KG_HEADER_FMT; }
        if [ -n "$kf" ]; then
            envs=(KEYS_FILE="$kf" ROTATE_N="$ROTATE_N" KEY_HEADER_FMT="$fmt")
        else
            script=lua/report.lua   # gateway without GW_KEYS_FILE: single key
        fi
    fi
    local th=$THREADS
    [ "$c" -lt "$th" ] && th=$c
    local -a wrk_cmd=("${WRK_PREFIX[@]}" timeout $((d + WARMUP + 30)) env "${envs[@]}" wrk
        -t "$th" -c "$c" --latency --timeout 5s -s "$script")
    [ "$script" = lua/report.lua ] && wrk_cmd+=(-H "$hdr")

    raw="$OUT/raw/rep${rep}-${s}-${kc}-c${c}.txt"
    if [ "$WARMUP" -gt 0 ]; then
        "${wrk_cmd[@]}" -d "${WARMUP}s" "$url" >/dev/null 2>&1
    fi
    gpid=$(gw_pid_of "$s") apid=$(aux_pid_of "$s") c0="" c1=""
    # keygate-redis: its Redis calls during the run (read outside the CPU window)
    [ "$s" = keygate-redis ] && c0=$(redis_calls)
    t0g=$(tree_ticks "$gpid"); t0u=$(tree_ticks "${PID_OF[upstream]}"); t0a=$(tree_ticks "$apid")
    t0s=$(sys_busy_ticks); t0w=$(child_ticks)
    "${wrk_cmd[@]}" -d "${d}s" "$url" >"$raw" 2>&1
    t1w=$(child_ticks); t1s=$(sys_busy_ticks)
    t1g=$(tree_ticks "$gpid"); t1u=$(tree_ticks "${PID_OF[upstream]}"); t1a=$(tree_ticks "$apid")
    [ "$s" = keygate-redis ] && c1=$(redis_calls)
    line=$(grep '^WRKRESULT ' "$raw" | tail -1)
    if [ -z "$line" ]; then
        log "wrk produced no result for $s/$kc/c$c (see $raw)"
        return
    fi
    # key=value -> tsv row
    echo "$line" | awk -v rep="$rep" -v s="$s" -v kc="$kc" -v c="$c" \
        -v gt="$((t1g - t0g))" -v ut="$((t1u - t0u))" -v hz="$CLK_TCK" -v hasg="${gpid:+1}" \
        -v st="$((t1s - t0s))" -v wt="$((t1w - t0w))" -v at="$((t1a - t0a))" -v hasa="${apid:+1}" \
        -v calls="$([ -n "$c0" ] && [ -n "$c1" ] && echo $((c1 - c0)))" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END {
            req = v["requests"]; dur = v["duration_us"] / 1e6
            errs = v["err_connect"] + v["err_read"] + v["err_write"] + v["err_timeout"]
            if (kc == "valid") ok = (v["non2xx"] == 0 && errs == 0) ? "ok" : "BAD"
            else ok = (v["non2xx"] == req && errs == 0) ? "ok" : "BAD"
            gus = (hasg && req > 0) ? sprintf("%.1f", gt * 1e6 / hz / req) : "-"
            gpc = (hasg && dur > 0) ? sprintf("%.0f", gt * 100 / hz / dur) : "-"
            uus = (req > 0) ? sprintf("%.1f", ut * 1e6 / hz / req) : "-"
            upc = (dur > 0) ? sprintf("%.0f", ut * 100 / hz / dur) : "-"
            # aux: the server a keygate keeps its store or limits in (postgres, redis)
            aus = (hasa && req > 0) ? sprintf("%.1f", at * 1e6 / hz / req) : "-"
            cpr = (calls != "" && req > 0) ? sprintf("%.4f", calls / req) : "-"
            # other: busy CPU not spent by wrk, the gateway, its aux server or the upstream
            # (100 = one core)
            oth = st - wt - ut - (hasg ? gt : 0) - (hasa ? at : 0); if (oth < 0) oth = 0
            wpc = (dur > 0) ? sprintf("%.0f", wt * 100 / hz / dur) : "-"
            opc = (dur > 0) ? sprintf("%.0f", oth * 100 / hz / dur) : "-"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                rep, s, kc, c, v["rps"], v["p50_us"], v["p90_us"], v["p99_us"],
                req, v["non2xx"], errs, gus, gpc, uus, ok, wpc, opc, aus, cpr
        }' >>"$OUT/results.tsv"
    log "$(tail -1 "$OUT/results.tsv" | awk -F'\t' '{ printf "rep %s %-11s %-7s c=%-3s rps=%-9s p50=%.2fms p99=%.2fms non2xx=%s err=%s gw_us/req=%s other=%s%% %s", $1, $2, $3, $4, $5, $6/1000, $8/1000, $10, $11, $12, $17, $15
        if ($18 != "-") printf " aux_us/req=%s", $18
        if ($19 != "-") printf " redis_calls/req=%s", $19 }')"
}

# ---- system calls per proxied request (SYSCALLS=1, bench/syscalls.sh) --------
# The gateway's processes doing the request work: nginx's workers (the master only
# forks them), HAProxy's and keygate's one process with every thread (strace -f -p
# attaches to all threads of a process).
syscall_pids() {
    local pid=${PID_OF[$1]:-}
    case "$1" in
        nginx-key) ps -o pid= --ppid "$pid" | tr -d ' ' ;;
        *) echo "$pid" ;;
    esac
}
# strace -c -f on the gateway while wrk sends SYSCALL_DURATION seconds of valid-key
# requests at conns connections; appends "scenario conns requests calls" to
# $OUT/syscalls.tsv and keeps strace's table in $OUT/strace-<scenario>-c<conns>.txt.
# Under strace every system call stops the process twice, so the request rate is a
# fraction of the real one: only the count per request means anything.
measure_syscalls() { # scenario conns
    local s=$1 c=$2 url key hdr raw st spid p line req calls
    local -a pargs=()
    url=$(url_of "$s")
    key=$VALID_KEY
    is_keygate "$s" && key=$KG_VALID_KEY
    [ "$s" = gateway ] && key=$GW_KEY
    hdr=$(key_hdr "$s" "$key")
    for p in $(syscall_pids "$s"); do pargs+=(-p "$p"); done
    [ ${#pargs[@]} -gt 0 ] || die "no process to trace for $s"
    raw="$OUT/raw/syscalls-${s}-c${c}.txt" st="$OUT/strace-${s}-c${c}.txt"
    # Warm the connections first, untraced: the count is for requests, not handshakes.
    timeout $((WARMUP + 30)) wrk -t 1 -c "$c" -d "${WARMUP}s" -H "$hdr" "$url" >/dev/null 2>&1
    strace -c -f -q -o "$st" "${pargs[@]}" 2>"$OUT/raw/strace-${s}-c${c}.err" &
    spid=$!
    sleep 1   # attached to every thread before the first request counts
    kill -0 $spid 2>/dev/null || die "strace could not attach to $s (see $OUT/raw/strace-${s}-c${c}.err)"
    timeout $((SYSCALL_DURATION + 30)) wrk -t 1 -c "$c" -d "${SYSCALL_DURATION}s" --latency \
        --timeout 5s -s lua/report.lua -H "$hdr" "$url" >"$raw" 2>&1
    kill -INT $spid 2>/dev/null
    wait $spid 2>/dev/null
    line=$(grep '^WRKRESULT ' "$raw" | tail -1)
    req=$(echo "$line" | sed -n 's/.* requests=\([0-9]*\).*/\1/p')
    calls=$(awk '$NF == "total" { print $4 }' "$st")
    [ -n "$req" ] && [ "${req:-0}" -gt 0 ] && [ -n "$calls" ] ||
        { log "syscalls $s c=$c: no result (see $raw, $st)"; return; }
    printf '%s\t%s\t%s\t%s\n' "$s" "$c" "$req" "$calls" >>"$OUT/syscalls.tsv"
    log "syscalls $s c=$c: $req requests, $calls system calls, $(awk -v a="$calls" -v b="$req" 'BEGIN { printf "%.2f", a / b }') per request"
}
syscalls_table() { # syscalls.tsv -> per scenario: total per request and the calls making it up
    local f=$1 s c req calls
    echo "system calls per proxied request (strace -c -f on the gateway, valid key, ${SYSCALL_DURATION}s of wrk):"
    printf '  %-12s %5s %9s %10s %8s  %s\n' scenario conns requests syscalls per_req "per request, by call"
    while IFS=$'\t' read -r s c req calls; do
        printf '  %-12s %5s %9s %10s %8.2f  %s\n' "$s" "$c" "$req" "$calls" \
            "$(awk -v a="$calls" -v b="$req" 'BEGIN { print a / b }')" \
            "$(awk -v r="$req" 'f && /^-/ { exit } f && NF >= 5 { printf "%s %.2f  ", $NF, $4 / r } /^-/ { f = 1 }' \
                "$(dirname "$f")/strace-${s}-c${c}.txt")"
    done <"$f"
}

# ---- summary ---------------------------------------------------------------
summarize() { summarize_file "$OUT/results.tsv"; }
summarize_file() {
    awk -F'\t' -v tls="$TLS" '
    function med(str,   a, n, i, j, t) {
        n = split(str, a, " ")
        if (n == 0 || a[1] == "-") return "-"
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function mn(str,   a, n, i, m) { n = split(str, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 < m) m = a[i] + 0; return m }
    function mx(str,   a, n, i, m) { n = split(str, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 > m) m = a[i] + 0; return m }
    {
        g = $2 SUBSEP $3 SUBSEP $4
        if (!(g in seen)) { seen[g] = 1; order[++ng] = g; S[g] = $2; K[g] = $3; C[g] = $4 }
        rps[g] = rps[g] " " $5; p50[g] = p50[g] " " $6; p99[g] = p99[g] " " $8
        gus[g] = gus[g] " " $12; gpc[g] = gpc[g] " " $13; uus[g] = uus[g] " " $14
        # columns 16-17 (wrk and other CPU) are absent from rows of older harness versions
        oth[g] = oth[g] " " (NF >= 17 ? $17 : "-")
        n[g]++; if ($15 != "ok") bad[g]++
        R[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = $5; P[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = $6
        G[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = $12
        # columns 18-19 (aux server CPU, Redis calls per request) likewise
        A[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = (NF >= 19 ? $18 : "-")
        N[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = (NF >= 19 ? $19 : "-")
        if ($2 == "keygate" && $3 == "valid") {
            if (cmax == "" || $4 + 0 > cmax + 0) cmax = $4
            if (cmin == "" || $4 + 0 < cmin + 0) cmin = $4
        }
        if (!($1 in repseen)) { repseen[$1] = 1; replist = replist " " $1 }
        reps[g] = reps[g] " " $1
    }
    END {
        printf "%-12s %-7s %4s %4s %10s %17s %8s %8s %8s %6s %8s %7s %9s %6s %s\n",
            "scenario", "key", "conn", "runs", "rps(med)", "rps min..max", "p50_ms", "p99_ms",
            "gw_us/rq", "gw_cpu", "up_us/rq", "x_direct", "+p50_ms", "other", "check"
        for (i = 1; i <= ng; i++) {
            g = order[i]
            r = med(rps[g]); l50 = med(p50[g]) / 1000; l99 = med(p99[g]) / 1000
            # ratios are taken within each rep (same minute, same noise), then the median
            ratio = "-"; add = "-"; rl = ""; al = ""
            nr = split(reps[g], rr, " ")
            for (j = 1; j <= nr; j++) {
                kd = rr[j] SUBSEP "direct" SUBSEP "valid" SUBSEP C[g]
                ks = rr[j] SUBSEP S[g] SUBSEP K[g] SUBSEP C[g]
                if ((kd in R) && R[kd] > 0) { rl = rl " " R[ks] / R[kd]; al = al " " (P[ks] - P[kd]) / 1000 }
            }
            if (rl != "") { ratio = sprintf("%.2f", med(rl)); add = sprintf("%+.3f", med(al)) }
            gc = med(gpc[g]); gcs = (gc == "-") ? "-" : gc "%"
            oc = mx(oth[g]); ocs = (oth[g] ~ /-/) ? "-" : oc "%"
            printf "%-12s %-7s %4s %4d %10.0f %8.0f..%-8.0f %8.3f %8.3f %8s %6s %8s %7s %9s %6s %s\n",
                S[g], K[g], C[g], n[g], r, mn(rps[g]), mx(rps[g]), l50, l99,
                med(gus[g]), gcs, med(uus[g]), ratio, add, ocs, (bad[g] ? "BAD(" bad[g] ")" : "ok")
        }
        print ""
        print "rps/p50/p99/CPU are medians over the runs; x_direct = rps / direct rps and +p50_ms ="
        print "p50 - direct p50, each taken within the same rep at the same connection count, then"
        print "the median over reps. gw_us/rq = CPU microseconds per request of the proxy/gateway"
        print "process tree (- for direct); gw_cpu = its CPU% (100% = one core); up_us/rq = CPU per"
        print "request of the upstream nginx. check: valid runs must see no non-2xx and no socket"
        print "errors, invalid runs only 401s. other = the highest, over the runs, CPU% taken by"
        print "processes outside the benchmark (busy CPU minus wrk, gateway and upstream, and the"
        print "redis-server or postgres of keygate-redis and keygate-pg; 100% = one core; softirq work"
        print "not charged to a process lands here too): a few % is normal, tens of % mean something"
        print "else was running and the row is not trustworthy."
        # keygate against nginx-key, the three targets of issue 3, each ratio taken
        # within a rep and then the median over reps
        if (cmax != "") {
            nr = split(replist, rr, " "); t1 = t2 = t3 = ""
            for (j = 1; j <= nr; j++) {
                r = rr[j]
                a = r SUBSEP "keygate" SUBSEP "valid" SUBSEP cmax; b = r SUBSEP "nginx-key" SUBSEP "valid" SUBSEP cmax
                if ((a in R) && (b in R) && R[b] > 0) t1 = t1 " " R[a] / R[b]
                a = r SUBSEP "keygate" SUBSEP "invalid" SUBSEP cmax; b = r SUBSEP "nginx-key" SUBSEP "invalid" SUBSEP cmax
                if ((a in G) && (b in G) && G[a] != "-" && G[b] + 0 > 0) t2 = t2 " " G[a] / G[b]
                a = r SUBSEP "keygate" SUBSEP "valid" SUBSEP cmin; b = r SUBSEP "nginx-key" SUBSEP "valid" SUBSEP cmin
                d = r SUBSEP "direct" SUBSEP "valid" SUBSEP cmin
                if (cmin != cmax && (a in P) && (b in P) && (d in P) && P[b] - P[d] > 0)
                    t3 = t3 " " (P[a] - P[d]) / (P[b] - P[d])
            }
            print ""
            if (tls == 1) print "TLS=1: keygate and nginx-key both over TLS (same certificate, keep-alive); the"
            if (tls == 1) print "issue 7 target is the valid-key req/s line (>= 0.70x nginx-key)."
            print "issue 3 targets, keygate vs nginx-key (per-rep ratios, median):"
            if (t1 != "") printf "  valid-key req/s at c=%s:     %.2fx nginx-key (target >= 0.70x)  %s\n", cmax, med(t1), (med(t1) >= 0.7 ? "met" : "NOT met")
            if (t2 != "") printf "  401 CPU us/request at c=%s:  %.2fx nginx-key (target <= 1.50x)  %s\n", cmax, med(t2), (med(t2) <= 1.5 ? "met" : "NOT met")
            if (t3 != "") printf "  added p50 at c=%s:            %.2fx nginx-key (target <= 2.00x)  %s\n", cmin, med(t3), (med(t3) <= 2.0 ? "met" : "NOT met")
        }
        # keygate-obs (access log to a file + /metrics scraped) against keygate (both off)
        nr = split(replist, rr, " "); shown = 0
        for (kk = 1; kk <= 2; kk++) {
            kc = (kk == 1) ? "valid" : "invalid"; t4 = ""; t5 = ""; cc = ""
            for (j = 1; j <= nr; j++) {
                for (g in seen) {
                    split(g, gp, SUBSEP)
                    if (gp[1] != "keygate-obs" || gp[2] != kc) continue
                    a = rr[j] SUBSEP "keygate-obs" SUBSEP kc SUBSEP gp[3]; b = rr[j] SUBSEP "keygate" SUBSEP kc SUBSEP gp[3]
                    if (gp[3] + 0 > 1 && (a in R) && (b in R) && R[b] > 0) {
                        t4 = t4 " " R[a] / R[b]; cc = gp[3]
                        if (G[a] != "-" && G[b] + 0 > 0) t5 = t5 " " G[a] / G[b]
                    }
                }
            }
            if (t4 == "") continue
            if (!shown++) print "\nissue 7 target, access log + metrics on (keygate-obs) vs both off (keygate):"
            printf "  %-7s req/s at c=%s: %.3fx (cost %.1f%%; target <= 3%%)  %s", kc, cc, med(t4), (1 - med(t4)) * 100, (med(t4) >= 0.97 ? "met" : "NOT met")
            if (t5 != "") printf "; CPU us/request %.3fx", med(t5)
            printf "\n"
        }
        # issue 15: keygate-redis (limits in Redis) and keygate-pg (store in PostgreSQL)
        # against keygate (limits in memory, store in SQLite), within each rep
        for (ks = 1; ks <= 2; ks++) {
            sc = (ks == 1) ? "keygate-redis" : "keygate-pg"; shown = 0
            for (kk = 1; kk <= 2; kk++) {
                kc = (kk == 1) ? "valid" : "invalid"
                for (i = 1; i <= ng; i++) {
                    g = order[i]
                    if (S[g] != sc || K[g] != kc) continue
                    cc = C[g]; t4 = ""; t5 = ""; ra = ""; rb = ""; ga = ""; gb = ""; au = ""; nc = ""; pa = ""; pb = ""
                    for (j = 1; j <= nr; j++) {
                        a = rr[j] SUBSEP sc SUBSEP kc SUBSEP cc; b = rr[j] SUBSEP "keygate" SUBSEP kc SUBSEP cc
                        if (!(a in R) || !(b in R) || R[b] <= 0) continue
                        t4 = t4 " " R[a] / R[b]; ra = ra " " R[a]; rb = rb " " R[b]
                        pa = pa " " P[a]; pb = pb " " P[b]
                        if (G[a] != "-" && G[b] + 0 > 0) { t5 = t5 " " G[a] / G[b]; ga = ga " " G[a]; gb = gb " " G[b] }
                        if (A[a] != "-") au = au " " A[a]
                        if (N[a] != "-") nc = nc " " N[a]
                    }
                    if (t4 == "") continue
                    if (!shown++) {
                        if (sc == "keygate-redis") print "\nissue 15, limits shared in Redis (keygate-redis) vs in memory (keygate), the same limit:"
                        else print "\nissue 15, store in PostgreSQL (keygate-pg) vs SQLite (keygate):"
                    }
                    printf "  %-7s c=%-3s req/s %.0f vs %.0f, %.3fx", kc, cc, med(ra), med(rb), med(t4)
                    if (cc + 0 == 1) printf "; p50 ms %.3f vs %.3f", med(pa) / 1000, med(pb) / 1000
                    if (t5 != "") printf "; CPU us/request %s vs %s, %.3fx", med(ga), med(gb), med(t5)
                    if (au != "") printf "; %s CPU us/request %s", (sc == "keygate-pg") ? "postgres" : "redis-server", med(au)
                    if (nc != "") printf "; Redis calls/request %s", med(nc)
                    printf "\n"
                }
            }
        }
    }' "$1"
}

# ---- issue 13's targets (--targets) ---------------------------------------------
# plain.tsv tls.tsv syscalls.tsv -> one table: each target with keygate's and
# nginx-key's medians, the ratio (taken within each rep, then the median), the
# target and whether it is met.
targets_table() {
    awk -F'\t' -v conns="$CONNS" -v lc="$LAT_CONNS" '
    function med(str,   a, n, i, j, t) {
        n = split(str, a, " ")
        if (n == 0) return ""
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    FNR == 1 { file++ }
    file <= 2 {
        k = file SUBSEP $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
        R[k] = $5; P[k] = $6; G[k] = $12
        if (!((file SUBSEP $1) in seenrep)) { seenrep[file SUBSEP $1] = 1; reps[file] = reps[file] " " $1 }
        next
    }
    { SC[$1 SUBSEP $2] = $4 / $3 }   # syscalls.tsv: scenario conns requests calls
    # ratio a/b of column X over reps of file f; also the medians of a and b
    function ratio(f, X, sa, ka, sb, kb, c,   n, r, j, ka_, kb_, va, vb, rl) {
        n = split(reps[f], r, " "); rl = ""; va = ""; vb = ""
        for (j = 1; j <= n; j++) {
            ka_ = f SUBSEP r[j] SUBSEP sa SUBSEP ka SUBSEP c; kb_ = f SUBSEP r[j] SUBSEP sb SUBSEP kb SUBSEP c
            if (!(ka_ in R) || !(kb_ in R)) continue
            a = (X == "rps") ? R[ka_] : G[ka_]; b = (X == "rps") ? R[kb_] : G[kb_]
            if (a == "-" || b == "-" || b + 0 <= 0) continue
            rl = rl " " a / b; va = va " " a; vb = vb " " b
        }
        MA = med(va); MB = med(vb); return med(rl)
    }
    function row(name, a, b, r, op, t, unit,   ok, vs) {
        if (r == "") { printf "  %-44s %12s %12s %8s %9s  %s\n", name, "-", "-", "-", op " " t "x", "not measured"; return }
        ok = (op == ">=") ? (r + 0 >= t) : (r + 0 <= t)
        printf "  %-44s %12s %12s %7.2fx %9s  %s\n", name, a, b, r, op " " t "x", ok ? "met" : "NOT met"
    }
    END {
        print "issue 13 targets (keygate vs nginx-key; ratios per rep, then the median):"
        printf "  %-44s %12s %12s %8s %9s  %s\n", "", "keygate", "nginx-key", "ratio", "target", ""
        r = ratio(1, "rps", "keygate", "valid", "nginx-key", "valid", conns)
        row("valid-key req/s at c=" conns, sprintf("%.0f", MA), sprintf("%.0f", MB), r, ">=", 0.8)
        r = ratio(1, "cpu", "keygate", "valid", "nginx-key", "valid", conns)
        row("CPU us per proxied request at c=" conns, MA, MB, r, "<=", 1.3)
        r = ratio(1, "cpu", "keygate", "invalid", "nginx-key", "invalid", conns)
        row("CPU us per 401 at c=" conns, MA, MB, r, "<=", 1.2)
        # added p50 at one connection: (gateway p50 - direct p50), per rep
        n = split(reps[1], rr, " "); rl = ""; va = ""; vb = ""
        for (j = 1; j <= n; j++) {
            a = 1 SUBSEP rr[j] SUBSEP "keygate" SUBSEP "valid" SUBSEP lc
            b = 1 SUBSEP rr[j] SUBSEP "nginx-key" SUBSEP "valid" SUBSEP lc
            d = 1 SUBSEP rr[j] SUBSEP "direct" SUBSEP "valid" SUBSEP lc
            if ((a in P) && (b in P) && (d in P) && P[b] - P[d] > 0) {
                rl = rl " " (P[a] - P[d]) / (P[b] - P[d]); va = va " " (P[a] - P[d]); vb = vb " " (P[b] - P[d])
            }
        }
        row("added p50 (us) at c=" lc, (va == "") ? "-" : med(va), (vb == "") ? "-" : med(vb), med(rl), "<=", 1.2)
        r = ratio(2, "rps", "keygate", "valid", "nginx-key", "valid", conns)
        row("TLS keep-alive req/s at c=" conns " (same cert)", sprintf("%.0f", MA), sprintf("%.0f", MB), r, ">=", 0.8)
        print ""
        print "  access log + metrics on (keygate-obs) vs off (keygate), cost in req/s (target <= 3%):"
        for (kk = 1; kk <= 2; kk++) {
            kc = (kk == 1) ? "valid" : "invalid"
            r = ratio(1, "rps", "keygate-obs", kc, "keygate", kc, conns)
            if (r == "") { printf "    %-8s not measured\n", kc; continue }
            printf "    %-8s on %.0f vs off %.0f req/s: %.3fx, cost %.1f%%  %s\n", (kc == "valid") ? "valid" : "401", MA, MB, r, (1 - r) * 100, (r >= 0.97) ? "met" : "NOT met"
        }
        print ""
        print "  system calls per proxied request (target <= 6):"
        for (c = 0; c <= 1; c++) {
            cc = (c == 0) ? conns : 1
            if (!(("keygate" SUBSEP cc) in SC)) continue
            printf "    c=%-4s keygate %.2f, nginx-key %s  %s\n", cc, SC["keygate" SUBSEP cc],
                (("nginx-key" SUBSEP cc) in SC) ? sprintf("%.2f", SC["nginx-key" SUBSEP cc]) : "-",
                (SC["keygate" SUBSEP cc] <= 6) ? "met" : "NOT met"
        }
    }' "$1" "$2" "$3"
}

# Runs, one after another (ports and knobs as given: REPS, DURATION, WORKERS, NKEYS,
# PORT_OFFSET, KEYGATE_BIN, KEYGATE_EXTRA_CONF ...), into $OUT/{plain,tls,syscalls}:
#   plain     direct nginx-key haproxy-key keygate keygate-obs (valid, 401, c=1)
#   tls       TLS=1 direct nginx-key keygate (valid-key load runs only)
#   syscalls  bench/syscalls.sh nginx-key keygate
# then the table above, also in $OUT/targets.txt.
targets_run() {
    local base=$OUT rc=0
    case "$base" in /*) ;; *) base="$BENCH_DIR/$base" ;; esac
    mkdir -p "$base" || die "cannot create $base"
    log "--targets: 1/3 plain HTTP into $base/plain"
    OUT="$base/plain" TLS=0 "$BENCH_DIR/run.sh" direct nginx-key haproxy-key keygate keygate-obs || rc=1
    log "--targets: 2/3 TLS into $base/tls"
    OUT="$base/tls" TLS=1 INVALID=0 LAT_CONNS=0 "$BENCH_DIR/run.sh" direct nginx-key keygate || rc=1
    log "--targets: 3/3 system calls into $base/syscalls"
    OUT="$base/syscalls" TLS=0 "$BENCH_DIR/syscalls.sh" nginx-key keygate || rc=1
    {
        echo "# bench/run.sh --targets, $(date -Is): $base"
        grep -h '^params:\|^keygate:\|^load average' "$base/plain/env.txt" 2>/dev/null
        echo
        targets_table "$base/plain/results.tsv" "$base/tls/results.tsv" "$base/syscalls/syscalls.tsv"
    } | tee "$base/targets.txt"
    [ $rc = 0 ] || die "a run failed: the table is incomplete (see $base/*/)"
    exit 0
}

# ---- main ------------------------------------------------------------------
[ "$TARGETS_MODE" = 1 ] && targets_run
if [ "${SUMMARY_ONLY:-0}" = 1 ]; then
    # re-summarise earlier runs together: results.tsv files given as arguments
    i=0
    for f in "${SUMMARY_FILES[@]}"; do
        i=$((i + 1))
        [ -r "$f" ] || die "cannot read $f"
        # make rep ids unique across files: rep 2 of file 3 -> 3.2
        awk -F'\t' -v i="$i" 'BEGIN { OFS = "\t" } { $1 = i "." $1; print }' "$f"
    done >"$SUMMARY_TMP"
    summarize_file "$SUMMARY_TMP"
    rm -f "$SUMMARY_TMP"
    exit 0
fi
mkdir -p "$RUN/tmp" "$OUT/raw" || die "cannot create $RUN or $OUT"
: >"$OUT/results.tsv"
gen_keys
[ "$TLS" = 1 ] && gen_tls
VALID_KEY=$(sed -n "$(( (NKEYS + 1) / 2 ))p" "$RUN/keys.txt")
while :; do
    BAD_KEY=kg_$(od -An -tx1 -N 16 /dev/urandom | tr -d ' \n')
    grep -qxF "$BAD_KEY" "$RUN/keys.txt" || break
done
[ -n "$GW_BAD_KEY" ] || GW_BAD_KEY=$BAD_KEY

{
    echo "# bench run $(date -Is)"
    echo "host: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "tools: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>&1 | head -1 | awk '{ print "haproxy " $3 }'), $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
    echo "params: DURATION=${DURATION}s WARMUP=${WARMUP}s CONNS=$CONNS THREADS=$THREADS WORKERS=$WORKERS LAT_CONNS=$LAT_CONNS LAT_DURATION=${LAT_DURATION}s REPS=$REPS ROTATE=$ROTATE PIN=$PIN NKEYS=$NKEYS TLS=$TLS"
    echo "scenarios: ${SCENARIOS[*]}"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $need_kg = 1 ] || [ $need_ko = 1 ] || [ $need_kr = 1 ] || [ $need_kp = 1 ]; then
        echo "keygate: $("$KEYGATE_BIN" --version 2>&1 | head -1) ($KEYGATE_BIN), workers $WORKERS, key header '$KG_HEADER_FMT', invalid key = well-formed but not in the store"
        echo "keygate limits: rate_limit_default $KG_RATE_LIMIT${KEYGATE_EXTRA_CONF:+; KEYGATE_EXTRA_CONF: $(printf '%s' "$KEYGATE_EXTRA_CONF" | tr '\n' ';')}"
    fi
    [ $need_kr = 1 ] && echo "keygate-redis: $(redis-server --version | awk '{ print $1, $2, $3 }'), limits_lease ${KG_LIMITS_LEASE:-default (10ms)}"
    [ $need_kp = 1 ] && echo "keygate-pg: $("$PG_BINDIR/postgres" --version), fsync=off full_page_writes=off"
} | tee "$OUT/env.txt" >&2

start_upstream
[ $need_nk = 1 ] && start_nginx_key
[ $need_hk = 1 ] && start_haproxy_key
[ $need_kg = 1 ] && start_keygate
[ $need_ko = 1 ] && start_keygate_obs
[ $need_kr = 1 ] && start_keygate_redis
[ $need_kp = 1 ] && start_keygate_pg
for s in "${SCENARIOS[@]}"; do [ "$s" = gateway ] && start_gateway; done
for s in "${SCENARIOS[@]}"; do smoke "$s"; done

if [ "$SYSCALLS" = 1 ]; then
    command -v strace >/dev/null 2>&1 || die "SYSCALLS=1 needs strace (apt-get install -y strace)"
    : >"$OUT/syscalls.tsv"
    for s in "${SCENARIOS[@]}"; do
        [ "$s" = direct ] && continue
        for c in $SYSCALL_CONNS; do measure_syscalls "$s" "$c"; done
    done
    stop_all
    { cat "$OUT/env.txt"; echo; syscalls_table "$OUT/syscalls.tsv"; } | tee "$OUT/summary.txt"
    exit 0
fi

for rep in $(seq "$REPS"); do
    for s in "${SCENARIOS[@]}"; do
        measure "$rep" "$s" valid "$CONNS" "$DURATION"
        if [ "$INVALID" = 1 ] && [ "$s" != direct ]; then
            measure "$rep" "$s" invalid "$CONNS" "$DURATION"
        fi
        if [ "$LAT_CONNS" -gt 0 ]; then
            measure "$rep" "$s" valid "$LAT_CONNS" "$LAT_DURATION"
        fi
    done
done

if [ $need_ko = 1 ]; then
    {
        echo "keygate-obs: $(curl -s --max-time 5 "http://127.0.0.1:$KO_ADMIN_PORT/metrics" |
            grep '^keygate_access_log_dropped_total') (access log lines dropped: ring full)"
    } >>"$OUT/env.txt"
fi
if [ $need_kr = 1 ]; then
    echo "keygate-redis: $(metrics_of $KR_ADMIN_PORT |
        grep -E '^keygate_limiter_(redis_(calls|errors)|unavailable)_total' | tr '\n' ' ')" >>"$OUT/env.txt"
fi
if [ $need_kp = 1 ]; then
    echo "keygate-pg: $(metrics_of $KP_ADMIN_PORT |
        grep -E '^keygate_(store_errors_total|keys\{)' | tr '\n' ' ')" >>"$OUT/env.txt"
fi
stop_all
[ $need_ko = 1 ] && echo "keygate-obs: $(wc -l <"$RUN/access.log") access log lines in $RUN/access.log" >>"$OUT/env.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
{
    cat "$OUT/env.txt"
    echo
    summarize
} | tee "$OUT/summary.txt"
echo "raw wrk output: $OUT/raw/, rows: $OUT/results.tsv" >&2
