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
# created or revoked with the CLI every second; then the latency over
# RATE_SECONDS (20) without changes and while RATE (100) changes a second go
# through the admin API (RATE=0: not measured). Needs build/keygate,
# build/kg_bench_seed, wrk, curl. Stops every process it started, by PID.
set -eu
DIR=${1:?usage: keys_scale.sh DIR [COUNT]}
COUNT=${2:-}
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
CHANGE_SECONDS=${CHANGE_SECONDS:-60}
RATE=${RATE:-100}
RATE_SECONDS=${RATE_SECONDS:-20}
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
# Issue 17 item 2: a stream of RATE changes per second through the admin API
# (keep-alive, alternately a create and a revoke of the key just made) for
# RATE_SECONDS, against a control run of the same length without changes, each
# while wrk measures every other request's latency. RATE=0 skips it.
if [ "$RATE" -gt 0 ]; then
    adm=$("$KG" users create --username "scale-admin-$$" --tenant bench --json -c "$CONF")
    aid=$(printf '%s' "$adm" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
    akey=$("$KG" keys create --name scale-admin --user "$aid" --scopes keys:write --json -c "$CONF" |
        sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
    lat() {
        awk -v what="$1" '/Latency/ && !l { printf "%s: avg %s, max %s", what, $2, $4; l = 1 }
             /99%/ { printf ", p99 %s", $2 } /Requests\/sec/ { print ", req/s " $2 }'
    }
    wrk -t 2 -c 64 -d "${RATE_SECONDS}s" --latency -s "$DIR/auth.lua" \
        "http://127.0.0.1:$PORT/health" | lat "control, no changes, ${RATE_SECONDS} s"
    python3 - "$ADMIN" "$akey" "$RATE" "$RATE_SECONDS" > "$DIR/changes.out" 2>&1 <<'PY' &
import http.client, json, sys, time
port, key, rate, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
hdr = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
start, n, bad, last = time.monotonic(), 0, 0, None
while time.monotonic() - start < secs:
    if last is None:
        conn.request("POST", "/v1/keys", json.dumps({"name": "scale-stream-%d" % n}), hdr)
    else:
        conn.request("POST", "/v1/keys/%s/revoke" % last, "{}", hdr)
    r = conn.getresponse()
    body = r.read()
    if r.status // 100 != 2:
        bad += 1
    last = json.loads(body).get("id") if last is None and r.status // 100 == 2 else None
    n += 1
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
el = time.monotonic() - start
print("changes: %d in %.1f s (%.1f/s), %d not 2xx" % (n, el, n / el, bad))
PY
    STREAM=$!
    wrk -t 2 -c 64 -d "${RATE_SECONDS}s" --latency -s "$DIR/auth.lua" \
        "http://127.0.0.1:$PORT/health" | lat "during ${RATE} changes a second, ${RATE_SECONDS} s"
    wait "$STREAM"
    cat "$DIR/changes.out"
fi
echo "full loads after start: $(grep -c 'keys loaded again' "$DIR/serve.log" || true)"
