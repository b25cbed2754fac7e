#!/usr/bin/env bash
# Container smoke test: builds the image from the Dockerfile, starts it with its data in a named
# volume and the gateway published on 127.0.0.1 only, creates a key with `keygate keys create`
# inside the container, checks GET /health with and without it, then restarts the container and
# replaces it with a new one on the same volume to show the key survives. Removes the container,
# the volume and the image at the end, whatever happened.
#
#   tests/container/smoke.sh            uses podman, else docker
#   KEYGATE_ENGINE=docker tests/container/smoke.sh
#   KEYGATE_SMOKE_PORT=18580            host port to publish on (127.0.0.1)
#   KEYGATE_SMOKE_KEEP_IMAGE=1          keep the built image (for inspection)
#
# Exit status: 0 all checks passed, 1 a check failed, 77 no working container engine (printed as
# "SKIPPED: container_smoke: ..."; never reported as a pass). With KEYGATE_REQUIRE_CONTAINERS=1
# (set by .ci/run) that last case is a failure (1), not a skip.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
port=${KEYGATE_SMOKE_PORT:-18580}
tag=$$-$(date +%s)
image=localhost/keygate-smoke:$tag
ctr=keygate-smoke-$tag
vol=keygate-smoke-$tag
deadline_s=30

engine=
for e in ${KEYGATE_ENGINE:-podman docker}; do
    # "works" means the engine answers, not just that the client binary is installed.
    if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
        engine=$e
        break
    fi
done
if [[ -z $engine ]]; then
    if [[ ${KEYGATE_REQUIRE_CONTAINERS:-} == 1 ]]; then
        # CI sets this: there a missing engine is a broken setup, not a reason to skip.
        echo "FAIL: container_smoke: no working container engine (podman or docker)," \
            "and KEYGATE_REQUIRE_CONTAINERS=1" >&2
        for e in ${KEYGATE_ENGINE:-podman docker}; do
            command -v "$e" >/dev/null 2>&1 && { "$e" info 2>&1 | tail -n 5 >&2 || true; }
        done
        exit 1
    fi
    echo "SKIPPED: container_smoke: no container engine (podman or docker) works here"
    exit 77
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "FAIL: curl is needed on the host to talk to the container" >&2
    exit 1
fi

step() { printf 'ok - %s\n' "$*"; }

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    if "$engine" container exists "$ctr" >/dev/null 2>&1 ||
        "$engine" inspect "$ctr" >/dev/null 2>&1; then
        echo "--- container log ---" >&2
        "$engine" logs "$ctr" >&2 2>&1 || true
    fi
    exit 1
}

cleanup() {
    "$engine" rm -f -t 0 "$ctr" >/dev/null 2>&1 || "$engine" rm -f "$ctr" >/dev/null 2>&1 || true
    "$engine" volume rm -f "$vol" >/dev/null 2>&1 || true
    rm -f "${buildlog:-}"
    if [[ -z ${KEYGATE_SMOKE_KEEP_IMAGE:-} ]]; then
        "$engine" rmi -f "$image" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# GET /health, optionally with a key; prints "<status> <body>".
health() {
    local args=(-s -o /dev/stdout -w ' %{http_code}' --max-time 5)
    [[ -n ${1:-} ]] && args+=(-H "Authorization: Bearer $1")
    local out
    out=$(curl "${args[@]}" "http://127.0.0.1:$port/health" 2>/dev/null) || out=" 000"
    printf '%s %s\n' "${out##* }" "${out% *}"
}

# Waits (bounded) until GET /health answers EXPECT (a status code), then checks the body if given.
expect_health() {
    local want=$1 key=${2:-} body=${3:-} got end=$((SECONDS + deadline_s))
    while :; do
        got=$(health "$key")
        [[ ${got%% *} == "$want" ]] && break
        ((SECONDS < end)) || fail "GET /health${key:+ with the key}: wanted $want, got '$got'"
        sleep 0.25
    done
    if [[ -n $body && ${got#* } != "$body" ]]; then
        fail "GET /health${key:+ with the key}: wanted body '$body', got '${got#* }'"
    fi
}

start_container() {
    "$engine" run -d --name "$ctr" -p "127.0.0.1:$port:8080" -v "$vol:/var/lib/keygate" \
        "$image" >/dev/null || fail "$engine run"
    # A request without a key gets 401 as soon as the listener is up.
    expect_health 401
}

echo "# engine: $engine ($("$engine" --version 2>/dev/null | head -n1))"
if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
    fail "something already listens on 127.0.0.1:$port (set KEYGATE_SMOKE_PORT)"
fi

# With the layer cache: under CTest, container_image_build has just built the same layers, and
# container_image_clean removes them and the build stage afterwards (tests/container/image.sh).
build_opts=()
[[ $engine == podman ]] && build_opts+=(--layers=true)
buildlog=$(mktemp)
if ! "$engine" build "${build_opts[@]}" -t "$image" -f "$repo/Dockerfile" "$repo" >"$buildlog" 2>&1
then
    tail -n 40 "$buildlog" >&2
    fail "$engine build (last lines of its output above)"
fi
size=$("$engine" image inspect --format '{{.Size}}' "$image" 2>/dev/null || echo "?")
step "image built: $image ($size bytes)"

uid=$("$engine" run --rm --entrypoint id "$image" -u) || fail "running id in the image"
[[ $uid != 0 ]] || fail "the image runs as root"
step "the image runs as uid $uid ($("$engine" run --rm --entrypoint id "$image" -un)), not root"

found=$("$engine" run --rm --entrypoint sh "$image" -c 'command -v cc gcc curl || true')
[[ -z $found ]] || fail "the runtime image contains build or network tools: $found"
step "no compiler and no curl binary in the runtime image"

"$engine" volume create "$vol" >/dev/null || fail "$engine volume create"
start_container
step "container started on 127.0.0.1:$port; GET /health without a key -> 401"

created=$("$engine" exec "$ctr" keygate keys create --name smoke --json 2>/dev/null) ||
    fail "keygate keys create inside the container"
key=$(printf '%s\n' "$created" | sed -n 's/^ *"key": *"\([^"]*\)".*/\1/p')
id=$(printf '%s\n' "$created" | sed -n 's/^ *"id": *"\([^"]*\)".*/\1/p')
[[ -n $key && -n $id ]] || fail "no key/id in the output of keys create: $created"
step "key $id created with '$engine exec $ctr keygate keys create --name smoke --json'"

expect_health 200 "$key" '{"status":"ok"}'
step 'GET /health with the key -> 200 {"status":"ok"}'
expect_health 401
step "GET /health without a key -> 401"
expect_health 401 "${key%?}x"
step "GET /health with a mistyped key -> 401"

perm=$("$engine" exec "$ctr" stat -c '%a %U' /var/lib/keygate/secret) || fail "stat secret"
[[ $perm == "600 keygate" ]] || fail "secret file is '$perm', wanted '600 keygate'"
step "server secret is /var/lib/keygate/secret, mode 600, owned by keygate"

"$engine" restart "$ctr" >/dev/null || fail "$engine restart"
expect_health 401
expect_health 200 "$key" '{"status":"ok"}'
step "after a restart the key still works"

"$engine" rm -f "$ctr" >/dev/null || fail "$engine rm"
start_container
expect_health 200 "$key" '{"status":"ok"}'
"$engine" exec "$ctr" keygate keys show "$id" >/dev/null || fail "keys show $id in the new container"
step "a new container on the same volume still accepts the key"

echo "PASS: container smoke test ($engine)"
