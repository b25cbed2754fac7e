#!/bin/sh
# bench/keys_scale.sh - the key cache at scale (issue 17), measured against one
# keygate with one worker on 127.0.0.1; the numbers go to docs/performance.md.
#
#   bench/keys_scale.sh DIR COUNT        # seed DIR with COUNT keys (kg_bench_seed), then measure
#   bench/keys_scale.sh DIR              # measure a DIR seeded before
#
# Prints: start until /readyz is 200 and RSS after it; valid-key req/s on
# GET /health (keygate's own answer: the cache and the decision, no upstream)
# with wrk, 64 connections, DURATION seconds; the first request of a key made
# with the CLI; the time from `keygate keys revoke` exiting until the key gets
# 401; and wrk's latency (max and p99) over CHANGE_SECONDS while one key is
# created or revoked with the CLI every second. Needs build/keygate,
# build/kg_bench_seed, wrk, curl. Stops every process it started, by PID.
set -eu
DIR=${1:?usage: keys_scale.sh DIR [COUNT]}
COUNT=${2:-}
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
CHANGE_SECONDS=${CHANGE_SECONDS:-60}
PORT=${PORT:-18480}
ADMIN=${ADMIN:-18481}
KG=$BUILD/keygate
CONF=$DIR/keygate.conf
PID=

cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

mkdir -p "$DIR"
cat > "$CONF" <<EOF
listen 127.0.0.1:$PORT
admin_listen 127.0.0.1:$ADMIN
upstream http://127.0.0.1:9
database "$DIR/keygate.db"
secret_file "$DIR/secret"
workers 1
auth_throttle off
EOF
if [ -n "$COUNT" ]; then
    rm -f "$DIR"/keygate.db* "$DIR/secret"
    "$BUILD/kg_bench_seed" -c "$CONF" -n "$COUNT" -o "$DIR/keys.txt"
fi
KEY=$(head -n 1 "$DIR/keys.txt")
ms() { date +%s%3N; }

t0=$(ms)
"$KG" serve -c "$CONF" > "$DIR/serve.log" 2>&1 &
PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz"; do sleep 0.02; done
t1=$(ms)
echo "start until /readyz 200: $((t1 - t0)) ms; $(grep VmRSS /proc/$PID/status)"

cat > "$DIR/auth.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $KEY"
EOF
wrk -t 2 -c 64 -d 2s -s "$DIR/auth.lua" "http://127.0.0.1:$PORT/health" > /dev/null
wrk -t 2 -c 64 -d "${DURATION}s" -s "$DIR/auth.lua" "http://127.0.0.1:$PORT/health" |
    awk '/Requests\/sec/ { print "valid-key req/s (GET /health, 64 connections): " $2 }'

new=$("$KG" keys create --name scale-fresh --json -c "$CONF")
id=$(printf '%s' "$new" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
key=$(printf '%s' "$new" | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
echo "first request of a key made with the CLI: $(curl -s -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer $key" "http://127.0.0.1:$PORT/health")"
"$KG" keys revoke "$id" -c "$CONF" > /dev/null
t0=$(ms)
while [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$PORT/health")" != 401 ]; do sleep 0.005; done
echo "revocation enforced $(( $(ms) - t0 )) ms after the CLI exited"

# One change per second while wrk measures every other request's latency.
(
    i=0
    while [ "$i" -lt "$CHANGE_SECONDS" ]; do
        out=$("$KG" keys create --name "scale-$i" --json -c "$CONF")
        if [ $((i % 2)) -eq 1 ]; then
            "$KG" keys revoke "$(printf '%s' "$out" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')" \
                -c "$CONF" > /dev/null
        fi
        i=$((i + 1))
        sleep 1
    done
) &
CHANGER=$!
wrk -t 2 -c 64 -d "${CHANGE_SECONDS}s" --latency -s "$DIR/auth.lua" \
    "http://127.0.0.1:$PORT/health" |
    awk '/Latency/ && !l { print "latency during one change per second: avg " $2 ", max " $4; l = 1 }
         /99%/ { print "  p99 " $2 } /Requests\/sec/ { print "  req/s " $2 }'
wait "$CHANGER"
echo "full loads after start: $(grep -c 'keys loaded again' "$DIR/serve.log" || true)"
