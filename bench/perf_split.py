#!/usr/bin/env python3
"""Where a keygate's CPU goes, from a perf profile with call graphs.

    perf record -F 1999 --call-graph dwarf,16384 -p <keygate pid> -o k.data -- sleep 6
    perf script -i k.data -F tid,ip,sym,dso > k.txt
    bench/perf_split.py k.txt

Each sample of the busiest thread (the event loop with `workers 1`) is put in
one group: a kernel sample by the system call it is in (and who made it: the
loop, libmicrohttpd, the native upstream client), a user-space sample by its
owner, the first frame from the leaf that is neither libc nor the kernel
(keygate's code with the libc it calls, libmicrohttpd, libsodium, libcurl).
Samples of every other thread are one group. Shares of all samples.
docs/performance.md ("Where the gap is") shows what it printed.
"""
import collections
import re
import sys

FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def read(path):
    samples, cur, tid = [], [], None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur:
                samples.append((tid, cur))
            cur = []
            continue
        if not line.startswith("\t"):
            tid = line.split()[0]
            continue
        m = FRAME.match(line)
        if m:
            cur.append((m.group(2).split("+0x")[0], m.group(3).split("/")[-1]))
    if cur:
        samples.append((tid, cur))
    return samples


def kernel_group(names, dsos):
    mhd = any("libmicrohttpd" in d for d in dsos)
    if "asm_exc_page_fault" in names:
        return "kernel: page faults (memory malloc takes back after a trim)"
    if "__GI_madvise" in names or "__madvise" in names:
        return "kernel: madvise (free trimming the heap)"
    if "__GI___writev" in names or "writev" in names:
        return "kernel: writev, the request to the upstream"
    if "__libc_sendmsg" in names:
        return "kernel: sendmsg, the answer to the client (libmicrohttpd)"
    if "conn_read" in names:
        return "kernel: recvfrom, the upstream's answer"
    if "real_read" in names:
        return "kernel: recvfrom, the client's request and the EAGAIN read (libmicrohttpd)"
    if "__GI_epoll_ctl" in names or "epoll_ctl" in names:
        return "kernel: epoll_ctl (" + ("libmicrohttpd" if mhd else "keygate") + ")"
    if "__GI_epoll_wait" in names or "epoll_wait" in names:
        return "kernel: epoll_wait (" + ("MHD_run" if "MHD_run" in names else "the loop") + ")"
    return "kernel: other"


def user_group(frame, leaf):
    if frame is None:
        return "user: libc only"
    sym, dso = frame
    if "libmicrohttpd" in dso:
        return "libmicrohttpd: memset of the connection pool" if "memset" in leaf else "libmicrohttpd: other"
    if "libsodium" in dso:
        return "keygate: libsodium (checksum, digest, request id)"
    if "libcurl" in dso:
        return "keygate: libcurl (the curl_slist of upstream headers)"
    if "libsqlite" in dso:
        return "keygate: libsqlite3"
    return "keygate: its own code and the libc it calls"


def main():
    samples = read(sys.argv[1])
    if not samples:
        sys.exit("no samples")
    loop_tid = collections.Counter(t for t, _ in samples).most_common(1)[0][0]
    groups = collections.Counter()
    for tid, frames in samples:
        if tid != loop_tid:
            groups["other threads (key watch, store poll, access log, admin)"] += 1
            continue
        names = [f[0] for f in frames]
        dsos = [f[1] for f in frames]
        if "kernel" in frames[0][1]:
            groups[kernel_group(names, dsos)] += 1
            continue
        owner = next((f for f in frames if not f[1].startswith("libc")
                      and f[1] not in ("inlined", "[unknown]", "[vdso]")), None)
        groups[user_group(owner, frames[0][0])] += 1
    total = len(samples)
    print(f"{total} samples, event loop thread {loop_tid}")
    for name, n in groups.most_common():
        print(f"{100.0 * n / total:6.1f} %  {name}")


if __name__ == "__main__":
    main()
