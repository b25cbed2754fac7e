#!/usr/bin/env bash
# Compose test (CTest container_compose): runs compose.yaml as an operator would, under its own
# project name, with the gateway published on a loopback port of its own and a server secret
# generated here. Checks: the stack comes up; `keygate keys create` through `compose exec`; 401
# without a key and the example API's answer with it, through keygate only (api publishes no
# port, keygate only the gateway); `keygate healthcheck` inside the container (and podman's own
# healthcheck run); `down` then `up -d` keeps the key; `down -v` removes the volume. Removes
# the stack, its volume and its images at the end, whatever happened.
#
#   tests/container/compose.sh                  podman-compose, else docker compose
#   KEYGATE_ENGINE=docker tests/container/compose.sh
#   KEYGATE_COMPOSE_TEST_PORT=18591             host port to publish on (127.0.0.1)
#
# Exit status: 0 all checks passed, 1 a check failed, 77 neither podman-compose nor docker
# compose works (printed as "SKIPPED: container_compose: ..."; never reported as a pass). With
# KEYGATE_REQUIRE_CONTAINERS=1 (set by .ci/run) that last case is a failure (1), not a skip.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
port=${KEYGATE_COMPOSE_TEST_PORT:-18591}
project=kgcompose$$
deadline_s=60

engine=''
compose=()
for e in ${KEYGATE_ENGINE:-podman docker}; do
    # "works" means the engine answers, not just that a client binary is installed.
    if ! command -v "$e" >/dev/null 2>&1 || ! "$e" info >/dev/null 2>&1; then
        continue
    fi
    if [[ $e == podman ]] && command -v podman-compose >/dev/null 2>&1; then
        engine=podman compose=(podman-compose)
    elif [[ $e == docker ]] && docker compose version >/dev/null 2>&1; then
        engine=docker compose=(docker compose)
    fi
    [[ -n $engine ]] && break
done
if [[ -z $engine ]]; then
    if [[ ${KEYGATE_REQUIRE_CONTAINERS:-} == 1 ]]; then
        # CI sets this: there a missing engine is a broken setup, not a reason to skip.
        echo "FAIL: container_compose: neither podman + podman-compose nor docker compose" \
            "works, and KEYGATE_REQUIRE_CONTAINERS=1" >&2
        for e in ${KEYGATE_ENGINE:-podman docker}; do
            command -v "$e" >/dev/null 2>&1 && { "$e" info 2>&1 | tail -n 5 >&2 || true; }
        done
        exit 1
    fi
    echo "SKIPPED: container_compose: neither podman + podman-compose nor docker compose works"
    exit 77
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "FAIL: curl is needed on the host to talk to the stack" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keygate-compose-XXXXXX")
# The secret as the README makes it: 64 hex characters, in a directory only we can enter, the
# file itself readable by the container's keygate user.
chmod 700 "$tmp"
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp/keygate_secret"
chmod 644 "$tmp/keygate_secret"
export KEYGATE_COMPOSE_PORT=$port KEYGATE_COMPOSE_SECRET=$tmp/keygate_secret

step() { printf 'ok - %s\n' "$*"; }

dc() { (cd "$repo" && "${compose[@]}" -p "$project" "$@"); }

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    echo "--- compose logs ---" >&2
    dc logs >&2 2>&1 || true
    exit 1
}

cleanup() {
    dc down -v >/dev/null 2>&1 || true
    # Images as podman-compose (project_service) and docker compose (project-service) name them.
    for s in keygate api; do
        "$engine" rmi -f "localhost/${project}_$s" "${project}_$s" "${project}-$s" \
            >/dev/null 2>&1 || true
    done
    "$engine" volume rm -f "${project}_keygate-data" >/dev/null 2>&1 || true
    # podman-compose 1.0.3 leaves the project's network behind.
    "$engine" network rm -f "${project}_default" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# GET PATH on the published port, optionally with a key; prints "<status> <body>".
get() {
    local args=(-s -o /dev/stdout -w ' %{http_code}' --max-time 5 --noproxy '*')
    [[ -n ${2:-} ]] && args+=(-H "Authorization: Bearer $2")
    local out
    out=$(curl "${args[@]}" "http://127.0.0.1:$port$1" 2>/dev/null) || out=" 000"
    printf '%s %s\n' "${out##* }" "${out% *}"
}

# Waits (bounded) until GET PATH answers WANT, then checks that the body contains BODY if given.
expect() { # WANT PATH KEY [BODY]
    local want=$1 path=$2 key=$3 body=${4:-} got end=$((SECONDS + deadline_s))
    while :; do
        got=$(get "$path" "$key")
        [[ ${got%% *} == "$want" ]] && break
        ((SECONDS < end)) || fail "GET $path${key:+ with the key}: wanted $want, got '$got'"
        sleep 0.3
    done
    [[ -z $body || $got == *"$body"* ]] || fail "GET $path: wanted a body with $body, got '$got'"
}

# Ports a service's running container publishes, as the engine prints them.
published() {
    "$engine" ps --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Ports}}'
}

# Running containers of a service.
running() {
    "$engine" ps -q --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1"
}

dc up -d --build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "$engine compose up -d"; }
# podman-compose 1.0.3 exits 0 even when an image failed to build: look for the containers.
if [[ -z $(running keygate) || -z $(running api) ]]; then
    tail -n 40 "$tmp/up.log" >&2
    fail "${compose[*]} up -d started no keygate or no api container (its output above)"
fi
step "${compose[*]} up -d"

expect 401 /hello "" '"detail"'
step "401 without a key"

dc exec -T keygate keygate keys create --name demo --json >"$tmp/key.json" 2>"$tmp/key.err" ||
    { cat "$tmp/key.err" >&2; fail "keys create through compose exec"; }
key=$(sed -n 's/^ *"key": "\([A-Za-z0-9_]*\)".*/\1/p' "$tmp/key.json")
id=$(sed -n 's/^ *"id": "\([A-Za-z0-9_]*\)".*/\1/p' "$tmp/key.json")
[[ -n $key && -n $id ]] || fail "keys create printed no key"
rm -f "$tmp/key.json"
step "keygate keys create through compose exec"

expect 200 /hello "$key" "\"key_id\": \"$id\""
expect 401 /hello "${key}x" '"detail"'
step "200 from the example API with the key (it sees the key id), 401 with a wrong one"

[[ -z $(published api) ]] || fail "api publishes ports: $(published api)"
pk=$(published keygate)
[[ $pk == *"127.0.0.1:$port->8080"* && $pk != *8081* ]] ||
    fail "keygate should publish only 127.0.0.1:$port->8080, publishes '$pk'"
step "api publishes nothing; keygate only the gateway, on loopback"

dc exec -T keygate keygate healthcheck >"$tmp/hc.log" 2>&1 ||
    { cat "$tmp/hc.log" >&2; fail "keygate healthcheck in the container"; }
if [[ $engine == podman ]]; then
    ctr=$(podman ps --filter "label=com.docker.compose.project=$project" \
        --filter label=com.docker.compose.service=keygate --format '{{.Names}}')
    podman healthcheck run "$ctr" || fail "podman healthcheck run $ctr (the compose healthcheck)"
fi
step "keygate healthcheck exits 0 inside the container"

old_ctr=$(running keygate)
dc down >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "compose down"; }
expect 000 /hello ""
# Removed, not just stopped: only the named volume may carry the key across.
left=$("$engine" ps -aq --filter "label=com.docker.compose.project=$project")
[[ -z $left ]] || fail "compose down left containers: $left"
dc up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "compose up -d after down"; }
[[ -n $(running keygate) && $(running keygate) != "$old_ctr" ]] ||
    fail "up -d after down should run a new keygate container"
expect 200 /hello "$key" "\"key_id\": \"$id\""
step "the key still works after down and up -d (new containers, same volume)"

dc down -v >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "compose down -v"; }
if "$engine" volume inspect "${project}_keygate-data" >/dev/null 2>&1; then
    fail "down -v left the volume ${project}_keygate-data"
fi
step "down -v removes the volume"
