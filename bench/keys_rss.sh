#!/bin/sh
# bench/keys_rss.sh - memory per cached key and start time (issue 17): starts
# keygate on an empty store, then on DIR's store (a bench/keys_scale.sh DIR,
# seeded before), each until /readyz is 200, and prints for each the wall time
# to that 200, the CPU time the process used until then and its RSS; then the
# bytes per key: (RSS with the keys - RSS empty) / keys.
#
#   bench/keys_rss.sh DIR
#
# Needs build/keygate, curl, sqlite3. Stops every process it started, by PID.
set -eu
DIR=${1:?usage: keys_rss.sh DIR}
BUILD=${BUILD:-build}
PORT=${PORT:-18490}
ADMIN=${ADMIN:-18491}
KG=$BUILD/keygate
WORK=$(mktemp -d)
PID=

cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

ms() { date +%s%3N; }
TICK=$(getconf CLK_TCK)

# start DB: prints "MS CPU_MS RSS_KB" once /readyz is 200, then stops it.
start() {
    cat > "$WORK/keygate.conf" <<EOC
listen 127.0.0.1:$PORT
admin_listen 127.0.0.1:$ADMIN
upstream http://127.0.0.1:9
database "$1"
secret_file "$DIR/secret"
workers 1
auth_throttle off
EOC
    t0=$(ms)
    "$KG" serve -c "$WORK/keygate.conf" > "$WORK/serve.log" 2>&1 &
    PID=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz"; do sleep 0.02; done
    t1=$(ms)
    cpu=$(awk -v t="$TICK" '{ print int(($14 + $15) * 1000 / t) }' "/proc/$PID/stat")
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    echo "$((t1 - t0)) $cpu $rss"
}

keys=$(sqlite3 "$DIR/keygate.db" "SELECT COUNT(*) FROM keys WHERE revoked_at IS NULL")
set -- $(start "$WORK/empty.db")
empty_rss=$3
echo "empty store: /readyz 200 after $1 ms, $2 ms of CPU, RSS $3 kB"
set -- $(start "$DIR/keygate.db")
echo "$keys keys: /readyz 200 after $1 ms, $2 ms of CPU, RSS $3 kB"
echo "bytes per key: $(( ($3 - empty_rss) * 1024 / keys ))"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
