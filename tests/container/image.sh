#!/usr/bin/env bash
# CTest fixture of the container tests (container_image_build / container_image_clean): builds
# the image once from the Dockerfile with the engine's layer cache, so the builds that
# container_smoke and container_compose then run as a user would (podman build, compose up
# --build) reuse its layers instead of compiling keygate two more times; afterwards removes
# every image that appeared since, the build stage's untagged layers included.
#
#   tests/container/image.sh build STATE_DIR
#   tests/container/image.sh clean STATE_DIR
#
# Where no engine works this does nothing and exits 0: the two tests then skip or fail by
# themselves, with their own message. A failed build exits 1 with the end of its output.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
what=${1:?build or clean}
state=${2:?state directory}
tag=localhost/keygate-test-cache:latest

engine=
for e in ${KEYGATE_ENGINE:-podman docker}; do
    if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
        engine=$e
        break
    fi
done
[[ -n $engine ]] || { echo "no working container engine: nothing to do"; exit 0; }
mkdir -p "$state"
before=$state/container-images-before

case $what in
build)
    "$engine" images -a -q --no-trunc | sort -u >"$before"
    log=$state/container-image-build.log
    t0=$SECONDS
    if ! "$engine" build -t "$tag" -f "$repo/Dockerfile" "$repo" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "FAIL: $engine build (last lines of its output above)" >&2
        exit 1
    fi
    echo "ok - $engine build of the image, $((SECONDS - t0)) s (its layers are the cache of the tests)"
    ;;
clean)
    "$engine" rmi -f "$tag" >/dev/null 2>&1 || true
    [[ -f $before ]] || exit 0
    # Children before parents: a few rounds, each removing what has no dependants left.
    for _ in 1 2 3 4 5 6; do
        mapfile -t new < <("$engine" images -a -q --no-trunc | sort -u | comm -23 - "$before")
        ((${#new[@]} > 0)) || break
        "$engine" rmi "${new[@]}" >/dev/null 2>&1 || true
    done
    mapfile -t new < <("$engine" images -a -q --no-trunc | sort -u | comm -23 - "$before")
    rm -f "$before"
    if ((${#new[@]} > 0)); then
        echo "FAIL: ${#new[@]} image(s) made by the container tests are still there: ${new[*]}" >&2
        exit 1
    fi
    echo "ok - the images the container tests made are removed"
    ;;
*)
    echo "usage: $0 build|clean STATE_DIR" >&2
    exit 2
    ;;
esac
