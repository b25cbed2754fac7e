#!/usr/bin/env bash
# System calls per proxied request: `strace -c -f` on each gateway while wrk sends
# it SYSCALL_DURATION (3) seconds of valid-key requests, at each of SYSCALL_CONNS
# ("64 1") connections, after an untraced warm-up on the same connections.
#
#   bench/syscalls.sh                     nginx-key and keygate (issue 13's pair)
#   bench/syscalls.sh nginx-key haproxy-key keygate
#   KEYGATE_EXTRA_CONF='upstream_client curl' bench/syscalls.sh keygate
#
# It is run.sh with SYSCALLS=1: the same servers, configs, keys, smoke checks and
# knobs (PORT_OFFSET, WORKERS, KEYGATE_BIN, KEYGATE_EXTRA_CONF, OUT, ...), then the
# traced runs instead of the load runs. The table: system calls per request, in
# all and by call; strace's own tables are kept in $OUT/strace-<scenario>-c<N>.txt.
# Under strace the gateway runs many times slower, so its request rate means
# nothing here; the count per request is the figure (every thread of the
# process is counted, the background ones of keygate too: a few calls a second).
set -uo pipefail
if [ $# -eq 0 ]; then
    set -- nginx-key keygate
fi
SYSCALLS=1 INVALID=0 LAT_CONNS=0 exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
