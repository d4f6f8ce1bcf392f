#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/redis_split.py: one herald-bench scenario against an embedded node (2 workers) and
against two nodes over one redis-server (bench/compare's r1 set-up), alternating, with the
server CPU split per process and per thread (/proc/PID/task/TID/stat, user and system apart;
herald names its threads herald-w0, herald-redis, ...) per delivered message: where Redis
mode's extra CPU goes (bench/benchmarks-notes.md). One JSON line per run.

  bench/redis_split.py HERALD HERALD_BENCH [--rounds 3] [--perf DIR] [--only embedded|redis] \
      -- fanout -t ws -s 1000 -c 1 -r 100 -n 64 -d 10s --source-addrs 32

--perf DIR also records `perf record -g` of the server processes of each run into DIR. Every
process started is stopped by its PID; traffic stays on 127.0.0.1.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

STARTED = []
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start(cmd, log):
    p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def threads(pid):
    """{tid: (comm, utime s, stime s)}"""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[tid] = (comm, int(fields[11]) / TICK, int(fields[12]) / TICK)
    return out


def herald_node(herald, rundir, name, redis_port=None):
    port = free_port()
    cmd = [herald, "-c", "/dev/null", "-o", "listen 127.0.0.1:%d" % port, "-o", "workers 2",
           "-o", "log_level warn", "-o", "ws_client_publish on"]
    if redis_port:
        cmd += ["-o", "redis redis://127.0.0.1:%d/0" % redis_port]
    p = start(cmd, os.path.join(rundir, name + ".log"))
    if not wait_port(port):
        sys.exit("split: %s did not start" % name)
    return p, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("herald")
    ap.add_argument("bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--perf", metavar="DIR", help="perf record -g each run into DIR")
    ap.add_argument("--perf-freq", default="999")
    ap.add_argument("--only", choices=("embedded", "redis"))
    ap.add_argument("args", nargs="+")
    a = ap.parse_args()
    rundir = tempfile.mkdtemp(prefix="split-")
    results = []
    try:
        for rnd in range(a.rounds):
            modes = ["embedded", "redis"] if rnd % 2 == 0 else ["redis", "embedded"]
            if a.only:
                modes = [a.only]
            for mode in modes:
                procs, labels, ports = [], [], []
                if mode == "embedded":
                    p, port = herald_node(a.herald, rundir, "embedded")
                    procs, labels, ports = [p], ["herald"], [port]
                else:
                    rport = free_port()
                    rp = start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               os.path.join(rundir, "redis.log"))
                    if not wait_port(rport):
                        sys.exit("split: redis-server did not start")
                    p1, port1 = herald_node(a.herald, rundir, "node1", rport)
                    p2, port2 = herald_node(a.herald, rundir, "node2", rport)
                    procs, labels, ports = [p1, p2, rp], ["node1", "node2", "redis"], [port1, port2]
                time.sleep(1)
                pids = [p.pid for p in procs]
                cmd = [a.bench] + a.args + ["--json", "--quiet"]
                for port in ports:
                    cmd += ["--url", "http://127.0.0.1:%d" % port]
                cmd += ["--server-pid", ",".join(map(str, pids))]
                perf = None
                if a.perf:
                    os.makedirs(a.perf, exist_ok=True)
                    data = os.path.join(a.perf, "%s-%d.data" % (mode, rnd + 1))
                    perf = subprocess.Popen(["perf", "record", "-g", "-F", a.perf_freq, "-o", data,
                                             "-p", ",".join(map(str, pids))],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    STARTED.append(perf)
                with open("/proc/loadavg") as f:
                    load = float(f.read().split()[0])
                before = {l: threads(p.pid) for l, p in zip(labels, procs)}
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                after = {l: threads(p.pid) for l, p in zip(labels, procs)}
                if perf:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(timeout=60)
                    STARTED.remove(perf)
                for p in procs:
                    stop(p)
                try:
                    res = json.loads(r.stdout)
                except ValueError:
                    print("split: %s round %d: no result: %s" % (mode, rnd + 1, r.stderr[-500:]),
                          file=sys.stderr)
                    continue
                d = res.get("delivered") or 0
                split = {}
                for l in labels:
                    for tid, (comm, ut, st) in after[l].items():
                        if tid not in before[l]:
                            continue
                        b = before[l][tid]
                        key = "%s/%s" % (l, comm)
                        u, s = split.get(key, (0.0, 0.0))
                        split[key] = (u + ut - b[1], s + st - b[2])
                row = dict(mode=mode, round=rnd + 1, load=load, delivered=d,
                           cpu_us=res.get("server_cpu_us_per_delivery"),
                           p50_ms=(res.get("latency_p50_us") or 0) / 1000,
                           p99_ms=(res.get("latency_p99_us") or 0) / 1000,
                           lost=res.get("lost"),
                           threads={k: [round(u * 1e6 / d, 3) if d else None,
                                        round(s * 1e6 / d, 3) if d else None]
                                    for k, (u, s) in sorted(split.items())})
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for p in reversed(list(STARTED)):
            stop(p)


if __name__ == "__main__":
    main()
