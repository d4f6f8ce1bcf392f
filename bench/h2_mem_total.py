#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/h2_mem_total.py HERALD HERALD_BENCH [--rounds N] [--subscribers N] [--streams K] [--tls]:
everything the server holds for idle SSE subscribers, user space and kernel, over HTTP/1.1
(one connection each) and over HTTP/2 (K streams a connection, 100 by default), in alternating rounds
(h1 h2, h2 h1, ...), each on a fresh herald (one worker) on loopback.

herald-bench idle holds the subscribers; while they are held this samples, for the server only:

  user:    herald's Pss (/proc/PID/smaps_rollup), growth from before the connects;
  buffers: the socket memory charged to herald's sockets: skmem of every socket whose local
           port is herald's (ss -tm), r + w + f + o (receive queue, write queue, forward
           allocation, option memory), the part of /proc/net/sockstat's TCP "mem" that is
           herald's;
  objects: the kernel objects each of herald's sockets holds: its tcp_sock (slab TCP or
           TCPv6), socket inode (sock_inode_cache), struct file (filp), dentry, and its epoll
           registration (eventpoll_epi, eventpoll_pwq), at what each costs in its slab
           (slab pages / objects a slab, from /proc/slabinfo), times herald's sockets.

The clients' sockets are on the same machine, so the machine-wide figures (slab growth,
sockstat) count both ends and other processes' work; they are printed beside as a check: the
growth of each of those caches per TCP socket added (both ends) should be about one object.

Prints each round and the medians. Stops only the processes it started, by PID.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from _common import loadavg, make_cert, remove_cert, start_herald

CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq")


def slabinfo():
    """{cache: (active_objs, bytes per object in its slabs)} for every cache."""
    out = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            p = line.split()
            active, num, objsize, perslab, pages = (int(x) for x in p[1:6])
            out[p[0]] = (active, pages * 4096 / perslab if perslab else objsize)
    return out


def cache_cost(info, name):
    """What one object costs in cache name, following /sys/kernel/slab's alias (merged caches)."""
    if name in info:
        return info[name][1]
    link = os.path.join("/sys/kernel/slab", name)
    size = int(open(os.path.join(link, "slab_size")).read())
    order = int(open(os.path.join(link, "order")).read())
    per = int(open(os.path.join(link, "objs_per_slab")).read())
    return (4096 << order) / per if per else size


def merged_active(name):
    """Objects of cache name (a merged cache: of every cache merged with it)."""
    return int(open("/sys/kernel/slab/%s/objects" % name).read().split()[0])


def sockstat():
    out = {}
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            p = line.split()[1:]
            out = {p[i]: int(p[i + 1]) for i in range(0, len(p), 2)}
    return out


def meminfo_slab_kb():
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def pss_bytes(pid):
    for line in open("/proc/%d/smaps_rollup" % pid):
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def server_sockets(port):
    """(count, bytes) of the TCP sockets whose local port is herald's, listener included:
    bytes is the sum of skmem r + w + f + o."""
    out = subprocess.run(["ss", "-tanmH", "sport", "=", ":%d" % port], capture_output=True,
                         text=True, timeout=60).stdout
    n, total = 0, 0
    for m in re.finditer(r"skmem:\(([^)]*)\)", out):
        f = dict(re.match(r"([a-z]+)(\d+)", x).groups() for x in m.group(1).split(","))
        total += int(f["r"]) + int(f["w"]) + int(f["f"]) + int(f.get("o", 0))
        n += 1
    return n, total


def sample(pid, port):
    info = slabinfo()
    n, buf = server_sockets(port)
    return {
        "pss": pss_bytes(pid),
        "sockets": n,
        "buffers": buf,
        "slab": info,
        "merged": {c: merged_active(c) for c in CACHES if c not in info},
        "slab_kb": meminfo_slab_kb(),
        "sockstat": sockstat(),
    }


def cost_of(s, name):
    if name in s["slab"]:
        return s["slab"][name][1]
    return cache_cost(s["slab"], name)


def active_of(s, name):
    return s["slab"][name][0] if name in s["slab"] else s["merged"][name]


def one(herald, bench, subs, streams, tls):
    """One setup on a fresh herald: the figures per subscriber."""
    p, port = start_herald(herald, 1, tls, "h2_mem_total", settle_s=0.5)
    bp = None
    try:
        s0 = sample(p.pid, port)
        args = [bench, "idle", "--url", "%s://127.0.0.1:%d" % ("https" if tls else "http", port),
                "-t", "sse", "-s", str(subs), "--hold", "20s", "--server-pid", str(p.pid),
                "--json", "--quiet"]
        if streams:
            args += ["--h2-streams", str(streams)]
        bp = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        want = 1 + (subs + streams - 1) // streams if streams else 1 + subs
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if server_sockets(port)[0] >= want or bp.poll() is not None:
                break
            time.sleep(1)
        # every socket is there; the streams' subscriptions follow: wait until herald's memory
        # stops growing (2 s apart, within 0.5%)
        last = pss_bytes(p.pid)
        for _ in range(30):
            time.sleep(2)
            now = pss_bytes(p.pid)
            if abs(now - last) <= last * 0.005:
                break
            last = now
        s1 = sample(p.pid, port)
        out, err = bp.communicate(timeout=300)
        bp = None
    finally:
        if bp:
            bp.kill()
            bp.wait()
        p.terminate()
        p.wait(30)
    try:
        res = json.loads(out)
    except ValueError:
        sys.exit("h2_mem_total: herald-bench gave no JSON:\n%s%s" % (out[-2000:], err[-2000:]))
    held = res.get("connections_held") or 0
    if not held:
        sys.exit("h2_mem_total: nothing held: %s" % out[-2000:])
    if not res.get("ok"):
        print("  !!! %s" % "; ".join(res.get("warnings", [])))
    n_sock = s1["sockets"] - s0["sockets"]
    per_sock = sum(cost_of(s1, c) for c in CACHES)
    r = {
        "held": held,
        "server_sockets": n_sock,
        "user": (s1["pss"] - s0["pss"]) / held,
        "user_bench": float(res.get("server_rss_per_conn_bytes") or 0),
        "buffers": (s1["buffers"] - s0["buffers"]) / held,
        "objects": n_sock * per_sock / held,
        "per_socket_objects": per_sock,
    }
    r["kernel"] = r["buffers"] + r["objects"]
    r["total"] = r["user"] + r["kernel"]
    # machine-wide, both ends and everything else the machine did: a check of the objects
    added = s1["sockstat"].get("alloc", 0) - s0["sockstat"].get("alloc", 0)
    r["machine_sockets"] = added
    r["machine_objs_per_socket"] = {
        c: (active_of(s1, c) - active_of(s0, c)) / added if added > 0 else 0.0 for c in CACHES
    }
    r["machine_slab_per_socket"] = (s1["slab_kb"] - s0["slab_kb"]) * 1024 / added if added else 0
    r["machine_tcp_mem_per_socket"] = ((s1["sockstat"].get("mem", 0) - s0["sockstat"].get("mem", 0))
                                       * 4096 / added if added else 0)
    return r


def show(label, r):
    print("    %-8s held %d, herald's sockets +%d: user %.0f B (herald-bench %.0f), kernel %.0f B "
          "(buffers %.0f, objects %.0f at %.0f B a socket), total %.0f B a subscriber; "
          "machine-wide: +%d sockets, slab %.0f B and TCP mem %.0f B a socket, objects a socket %s"
          % (label, r["held"], r["server_sockets"], r["user"], r["user_bench"], r["kernel"],
             r["buffers"], r["objects"], r["per_socket_objects"], r["total"],
             r["machine_sockets"], r["machine_slab_per_socket"], r["machine_tcp_mem_per_socket"],
             ", ".join("%s %.2f" % (c, v) for c, v in r["machine_objs_per_socket"].items())))
    sys.stdout.flush()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    herald, bench = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    subs = (int(sys.argv[sys.argv.index("--subscribers") + 1])
            if "--subscribers" in sys.argv else 10000)
    streams = int(sys.argv[sys.argv.index("--streams") + 1]) if "--streams" in sys.argv else 100
    tls = make_cert(tempfile.mkdtemp(prefix="h2_mem_total-")) if "--tls" in sys.argv else None
    print("load average at start: %s; %d subscribers, HTTP/2 with %d streams a connection%s" %
          (loadavg(), subs, streams, ", over TLS" if tls else ""))
    res = {"h1": [], "h2": []}
    for i in range(rounds):
        order = ("h1", "h2") if i % 2 == 0 else ("h2", "h1")
        print("  round %d (load %s)" % (i + 1, loadavg()[0]))
        for setup in order:
            r = one(herald, bench, subs, streams if setup == "h2" else 0, tls)
            res[setup].append(r)
            show("HTTP/1.1" if setup == "h1" else "HTTP/2", r)
    print("medians (bytes a subscriber):")
    for key in ("user", "buffers", "objects", "kernel", "total"):
        a = statistics.median(r[key] for r in res["h1"])
        b = statistics.median(r[key] for r in res["h2"])
        print("  %-8s HTTP/1.1 %8.0f  HTTP/2 %8.0f  ratio %.2fx" % (key, a, b, b / a if a else 0))
    print("load average at end: %s" % loadavg())
    if tls:
        remove_cert(tls)


if __name__ == "__main__":
    main()
