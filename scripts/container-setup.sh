#!/usr/bin/env bash
# Makes podman able to build and run keygate's image and compose stack on a Debian 12 machine
# that reaches no image registry (CI): builds a local `debian:12` base image from Debian's own
# packages with debootstrap and tags it so that `FROM debian:12` and `FROM debian:12-slim`
# resolve locally. Only where podman then cannot run a container as it is configured (a machine
# without systemd as init: podman's defaults want crun and systemd cgroups) does it write
# /etc/containers/containers.conf (or $CONTAINERS_CONF) for runc + cgroupfs, and only when that
# file is missing, was written by this script, or CI=true (then the old file is kept as
# containers.conf.keygate-orig): an operator's own containers.conf is never overwritten
# elsewhere. Idempotent; scripts/test.sh runs it.
# The packages (podman, podman-compose, runc, debootstrap, ...) come from `scripts/deps.sh --test`.
#
#   scripts/container-setup.sh                   set up; root, or sudo for the root parts
#   scripts/container-setup.sh --base-only TAG   build the base image as TAG when it is missing,
#                                                nothing else (to try the build on a machine
#                                                that already has debian:12)
#   KEYGATE_DEBIAN_MIRROR=URL                    debootstrap's mirror (http://deb.debian.org/debian)
#
# Run as a user with sudo, the image goes to that user's (rootless) podman storage, where the
# tests will look for it. Exit status 0 when podman runs the base image at the end, 1 otherwise
# (the reason on stderr).
set -euo pipefail

base=docker.io/library/debian:12
aliases=(docker.io/library/debian:12-slim docker.io/library/debian:bookworm
    docker.io/library/debian:bookworm-slim)
conf=${CONTAINERS_CONF:-/etc/containers/containers.conf} # the file podman reads
marker='# Written by keygate scripts/container-setup.sh'
mirror=${KEYGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_only=

if [[ ${1:-} == --base-only ]]; then
    [[ -n ${2:-} ]] || { echo "usage: $0 [--base-only TAG]" >&2; exit 2; }
    base=$2 base_only=1
elif [[ $# -ne 0 ]]; then
    echo "usage: $0 [--base-only TAG]" >&2
    exit 2
fi

say() { echo "container-setup: $*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "needs root or sudo"; exit 1; }
    SUDO=(sudo)
fi
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$tool" >/dev/null || { say "no $tool: scripts/deps.sh --test installs it"; exit 1; }
done

runs() { podman run --rm --pull never --network none "$base" true >/dev/null 2>&1; }

# Writes $conf for runc + cgroupfs where that is allowed (see the top); 1 where it is not.
write_conf() {
    if [[ -e $conf ]] && ! grep -qxF "$marker" "$conf"; then
        if [[ ${CI:-} != true ]]; then
            say "podman does not work here as configured, and $conf is not ours: left" \
                "unchanged. Without systemd as init, '[engine] runtime = \"runc\"' and" \
                "'cgroup_manager = \"cgroupfs\"' there (and '[containers] default_ulimits =" \
                "[\"nofile=1024:1024\"]' where the hard limit is lower) make it work."
            return 1
        fi
        [[ -e $conf.keygate-orig ]] || "${SUDO[@]}" cp -p "$conf" "$conf.keygate-orig"
    fi
    say "writing $conf: runc, cgroupfs, ulimits a container may set here"
    "${SUDO[@]}" mkdir -p "$(dirname "$conf")"
    "${SUDO[@]}" tee "$conf" >/dev/null <<CONF
$marker
# for podman without systemd as init. Delete this file to return to podman's defaults.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
}

# podman as configured may not even start (a runtime that is not installed, say).
if ! podman info >/dev/null 2>&1; then
    write_conf || exit 1
    podman info >/dev/null || { say "podman info still fails (output above)"; exit 1; }
fi

# The base image: Debian's minbase (apt, bash, coreutils, ...), about half a minute once.
if ! podman image exists "$base"; then
    say "building $base with debootstrap --variant=minbase bookworm (once, under a minute)"
    start=$SECONDS
    root=$(mktemp -d "${TMPDIR:-/tmp}/keygate-debian12.XXXXXX")
    # shellcheck disable=SC2064 # expand $root now
    trap "${SUDO[*]} rm -rf '$root' '$root.log'" EXIT
    if ! "${SUDO[@]}" debootstrap --variant=minbase bookworm "$root" "$mirror" \
        >"$root.log" 2>&1; then
        tail -n 20 "$root.log" >&2
        say "debootstrap failed (mirror $mirror; set KEYGATE_DEBIAN_MIRROR to change it)"
        exit 1
    fi
    # Apt's lists and caches are not part of an image; the Dockerfiles run apt-get update.
    "${SUDO[@]}" rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb
    # tar runs as root to read every file; the import as the user whose storage the tests use.
    "${SUDO[@]}" tar --numeric-owner -C "$root" -c . |
        podman import -q --change 'CMD ["bash"]' - "$base" >/dev/null ||
        { say "podman import of the debootstrap tree failed"; exit 1; }
    say "$base built in $((SECONDS - start)) s"
fi
[[ -z $base_only ]] || exit 0

# Aliases the Dockerfiles name; a real image already under such a name is left alone.
for a in "${aliases[@]}"; do
    podman image exists "$a" || podman tag "$base" "$a"
done

runs && exit 0
write_conf || { podman run --rm --pull never --network none "$base" true >&2 || exit 1; }
if ! runs; then
    podman run --rm --pull never --network none "$base" true >&2 || true
    say "podman still cannot run a container (output above)"
    exit 1
fi
