#!/bin/sh
# scripts/check_include_cycles.sh - no include cycle between the folders a
# request walks through: http/ (enters), auth/ (admitted), proxy/ (leaves)
# and server/ (the loops that drive them).
#
# A header include/keygate/NAME.h belongs to the folder of src/*/NAME.c
# (headers without a .c of that name belong to no folder). Every #include
# "keygate/NAME.h" in a file of one of these folders, or in a header that
# belongs to one, is an edge from its folder to the header's. Prints each
# cycle with the includes that make it and exits 1; exits 0 when there is
# none. Usage: check_include_cycles.sh [SOURCE_DIR]
set -eu
root=${1:-$(dirname "$0")/..}
cd "$root"
folders="http auth proxy server"

owner_of_header() {
    for f in $folders; do
        if [ -f "src/$f/$1.c" ]; then
            echo "$f"
            return
        fi
    done
}

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for f in $folders; do
    for file in src/$f/*.c src/$f/*.h include/keygate/*.h; do
        [ -f "$file" ] || continue
        case $file in
        include/*)
            [ "$(owner_of_header "$(basename "$file" .h)")" = "$f" ] || continue
            ;;
        esac
        sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"keygate\/\([A-Za-z0-9_]*\)\.h".*/\1/p' "$file" |
            while read -r h; do
                to=$(owner_of_header "$h")
                if [ -n "$to" ] && [ "$to" != "$f" ]; then
                    echo "$f $to $file keygate/$h.h"
                fi
            done
    done
done >"$edges"

# Reachability over at most four folders: A and B are in a cycle when each
# reaches the other.
awk -v folders="$folders" '
{ reach[$1 " " $2] = 1; why[$1 " " $2] = why[$1 " " $2] "    " $3 " includes " $4 "\n" }
END {
    n = split(folders, f, " ")
    for (k = 1; k <= n; k++)
        for (i = 1; i <= n; i++)
            for (j = 1; j <= n; j++)
                if (reach[f[i] " " f[k]] && reach[f[k] " " f[j]])
                    reach[f[i] " " f[j]] = 1
    bad = 0
    for (i = 1; i <= n; i++)
        for (j = i + 1; j <= n; j++)
            if (reach[f[i] " " f[j]] && reach[f[j] " " f[i]]) {
                printf "include cycle between %s/ and %s/\n", f[i], f[j]
                bad = 1
            }
    if (bad) {
        print "edges between these folders:"
        for (e in why)
            printf "  %s/ -> %s/\n%s", substr(e, 1, index(e, " ") - 1), substr(e, index(e, " ") + 1), why[e]
        exit 1
    }
    print "no include cycle between " folders
}' "$edges"
