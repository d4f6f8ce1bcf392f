#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/profile_bars.py: where the CPU of a bench/compare scenario goes, per unit of work, in
herald, nginx+nchan and the kernel floor: counts a loaded machine does not move.

For each scenario (bench/compare's keys and commands, with shorter durations) and target, it
starts the server as bench/compare does (herald: 2 workers; nginx+nchan: bench/nchan.conf, 2
worker processes; the floor: herald-bench's own forked server), runs herald-bench against it,
and over the scenario's working window only (a fan-out: from the moment every subscriber is
connected until they start closing; connect: from before the first connection until 97% of
them are held, divided by those held; publish: the whole run) takes from the server's
processes:

  - system calls by name (perf stat on the syscalls:sys_enter_* tracepoints, raw_syscalls for
    the total), context switches, wake-ups the server's threads make (sched:sched_wakeup,
    counted in the waker: its own threads and the clients it writes to), loopback packets sent
    (net:net_dev_xmit: segments, so Nagle's coalescing shows);
  - user and kernel CPU time (/proc/PID/stat of every process and thread), bytes per write
    (/proc/PID/io wchar / syscw);
  - with --record, a perf record sample (software clock, no call graphs) for the split by
    library and the top symbols.

Each count is divided by the units the bench reports for the run (deliveries, acknowledged
publishes, subscriptions), so system calls per delivery and the like can be set side by side
for two servers measured minutes apart on a loaded machine. CPU times are the machine's and
move with load; their user/kernel split moves much less.

  bench/profile_bars.py --herald build/herald --bench build/bench/herald-bench --only nws,p1
  bench/profile_bars.py ... --record --out /tmp/prof    (perf.data and reports kept there)

Every process it starts is stopped by its PID; herald-bench bounds each run itself, and a
timeout here bounds it again. Needs perf and root (tracepoints).
"""
import argparse
import importlib.machinery
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
cmp = importlib.machinery.SourceFileLoader("compare", os.path.join(HERE, "compare")).load_module()

SYSCALLS = ["read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg",
            "sendfile64", "epoll_wait", "epoll_pwait", "epoll_ctl", "accept4", "accept", "close",
            "shutdown", "setsockopt", "getsockopt", "futex", "ioctl", "openat",
            "newfstatat", "mmap", "munmap", "brk", "madvise", "getpid", "clock_gettime",
            "io_uring_enter", "eventfd2", "getpeername", "getsockname", "fcntl", "pwrite64", "pread64", "lseek", "sched_yield"]
EVENTS = (["task-clock", "context-switches", "cpu-migrations", "page-faults",
           "raw_syscalls:sys_enter", "sched:sched_wakeup", "net:net_dev_xmit"] +
          ["syscalls:sys_enter_" + s for s in SYSCALLS])

# shorter runs of bench/compare's scenarios: the same shape and rates
DURATION = {"1": "8s", "2": "8s", "3": "8s", "4": "8s", "4s": "8s", "5": "3s", "5s": "3s",
            "nws": "8s", "nsse": "8s", "p1": "6s", "p100": "6s", "chat": "8s"}


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tids(pids):
    out = []
    for p in pids:
        try:
            out += [(p, int(t)) for t in os.listdir("/proc/%d/task" % p)]
        except OSError:
            pass
    return out


def cpu_of(pids):
    """user, system seconds of every thread of pids (threads that exited count in the process's
    own line, so the process line is used: it sums its threads)."""
    hz = os.sysconf("SC_CLK_TCK")
    u = s = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            u += int(parts[11])
            s += int(parts[12])
        except OSError:
            pass
    return u / hz, s / hz


def io_of(pids):
    w = c = 0
    for p in pids:
        try:
            with open("/proc/%d/io" % p) as f:
                d = dict(line.split(": ") for line in f.read().splitlines())
            w += int(d["wchar"])
            c += int(d["syscw"])
        except (OSError, KeyError, ValueError):
            pass
    return w, c


def switches_of(pids):
    """voluntary (the thread slept: waiting for work) and involuntary (preempted: the machine's
    load) context switches of every thread of pids."""
    v = nv = 0
    for p, t in tids(pids):
        try:
            with open("/proc/%d/task/%d/status" % (p, t)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        v += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        nv += int(line.split()[1])
        except OSError:
            pass
    return v, nv


def nfds(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            pass
    return n


def scenario_args(s):
    a = list(s["args"])
    if s["key"] in DURATION and "-d" in a:
        a[a.index("-d") + 1] = DURATION[s["key"]]
    return a


class Window:
    """perf stat (and perf record) on pids, with /proc CPU and I/O at both ends."""

    def __init__(self, pids, outdir, tag, record):
        self.pids, self.outdir, self.tag = pids, outdir, tag
        self.stat_file = os.path.join(outdir, tag + ".stat")
        pl = ",".join(str(p) for p in pids)
        self.stat = subprocess.Popen(["perf", "stat", "-x", ",", "-o", self.stat_file, "-e",
                                      ",".join(EVENTS), "-p", pl],
                                     stderr=open(self.stat_file + ".err", "w"))
        self.rec = None
        if record:
            self.rec_file = os.path.join(outdir, tag + ".data")
            self.rec = subprocess.Popen(["perf", "record", "-F", "499", "-o", self.rec_file,
                                         "-p", pl], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        time.sleep(0.2)  # perf attaching: the /proc figures start when its counts do
        self.t0 = time.time()
        self.cpu0, self.io0, self.sw0 = cpu_of(pids), io_of(pids), switches_of(pids)

    def close(self):
        self.t1 = time.time()
        self.cpu1, self.io1, self.sw1 = cpu_of(self.pids), io_of(self.pids), switches_of(self.pids)
        for p in (self.stat, self.rec):
            if p is None:
                continue
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        counts = {}
        with open(self.stat_file) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) < 3 or line.startswith("#"):
                    continue
                try:
                    counts[parts[2]] = float(parts[0])
                except ValueError:
                    counts[parts[2]] = None
        return dict(seconds=self.t1 - self.t0, counts=counts,
                    user_s=self.cpu1[0] - self.cpu0[0], sys_s=self.cpu1[1] - self.cpu0[1],
                    wchar=self.io1[0] - self.io0[0], syscw=self.io1[1] - self.io0[1],
                    vol_switches=self.sw1[0] - self.sw0[0],
                    invol_switches=self.sw1[1] - self.sw0[1])


def report_record(path, outdir, tag):
    """The split by library and the top symbols of a perf record, as text next to it."""
    out = {}
    for key, sort in (("dso", "dso"), ("sym", "dso,sym")):
        r = subprocess.run(["perf", "report", "-i", path, "--stdio", "--sort", sort,
                            "--percent-limit", "0.7"], capture_output=True, text=True,
                           timeout=300)
        with open(os.path.join(outdir, "%s.%s.txt" % (tag, key)), "w") as f:
            f.write(r.stdout)
        rows = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "%" in line.split()[0]:
                rows.append(line)
        out[key] = rows[:25]
    return out


def run_one(s, target, herald, bench, outdir, record, rundir):
    a = scenario_args(s)
    kind = s["kind"]
    if target == "floor":
        a = [x for x in a if x not in ("-t", "ws")]
        a[0] = "floor"
    procs = []
    if target == "herald":
        p, port, _ = cmp.start_herald(herald, rundir)
        procs, pids = [p], [p.pid]
    elif target == "nchan":
        p, port, _ = cmp.start_nchan(rundir)
        time.sleep(0.5)
        procs, pids = [p], [p.pid] + children(p.pid)
    cmd = [bench] + a + ["--json", "--quiet"]
    if target != "floor":
        # the bench measures a process and its descendants: nginx's master alone, as
        # bench/compare gives it
        cmd += ["--target", target, "--url", "http://127.0.0.1:%d" % port,
                "--server-pid", str(pids[0])]
    n_units = held_at_end = None
    if kind == "fanout":
        n_units = int(a[a.index("-s") + 1])
    elif kind == "connect":
        n_units = int(a[a.index("--count") + 1])
    base = nfds(pids) if target != "floor" else 0
    tag = "%s-%s" % (s["key"], target)
    out_file = open(os.path.join(outdir, tag + ".json"), "w+")
    win = None
    if kind == "connect":
        win = Window(pids, outdir, tag, record)  # before the first connection
    b = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.PIPE, text=True)
    start = time.time()
    budget = 240
    if target == "floor":
        while time.time() - start < 10 and not children(b.pid):
            time.sleep(0.02)
        kids = children(b.pid)
        pids = [min(kids)] if kids else []
        base = 0
    if kind == "publish":
        win = Window(pids, outdir, tag, record)
    # fan-outs: from every subscriber connected to the first ones closing; connect: until every
    # connection is held
    while b.poll() is None and time.time() - start < budget:
        time.sleep(0.05)
        if kind == "fanout":
            held = nfds(pids) - base
            if win is None and held >= n_units:
                win = Window(pids, outdir, tag, record)
            elif win is not None and held < 0.98 * n_units:
                break
        elif kind == "connect":
            # the bench closes every connection as soon as the last is held: stop counting at
            # 97% of them, and divide by what was held then
            held_at_end = nfds(pids) - base
            if held_at_end >= 0.97 * n_units:
                break
    res = win.close() if win else None
    try:
        b.wait(timeout=max(1, budget - (time.time() - start)))
    except subprocess.TimeoutExpired:
        b.kill()
        b.wait()
    err = b.stderr.read()
    out_file.seek(0)
    try:
        j = json.loads(out_file.read())
    except ValueError:
        j = None
    for p in procs:
        cmp.stop_one(p)
    if j is None or res is None:
        return dict(key=s["key"], target=target, error=(err or "no result")[-400:])
    units = {"fanout": j.get("delivered"), "publish": j.get("acknowledged"),
             "connect": held_at_end}[kind]
    unit = {"fanout": "delivery", "publish": "publish", "connect": "connection"}[kind]
    res.update(key=s["key"], target=target, unit=unit, units=units,
               bench={k: j.get(k) for k in ("delivered_pct", "lost", "latency_p50_us",
                                            "latency_p99_us", "server_cpu_us_per_delivery",
                                            "server_cpu_us_per_publish",
                                            "server_cpu_us_per_connection", "throughput")
                      if k in j})
    if record and win.rec is not None:
        res["record"] = report_record(win.rec_file, outdir, tag)
    return res


def summary(r):
    if "error" in r:
        return "%s %s: %s" % (r["key"], r["target"], r["error"])
    n = float(r["units"] or 1)
    c = r["counts"]
    per = lambda v: (v or 0) / n
    sc = {k.replace("syscalls:sys_enter_", ""): per(v) for k, v in c.items()
          if k.startswith("syscalls:") and v}
    lines = ["%s %s: %d %ss in %.1f s; CPU %.2f us/%s (user %.2f, kernel %.2f: %.0f%% kernel)" % (
        r["key"], r["target"], n, r["unit"], r["seconds"],
        (r["user_s"] + r["sys_s"]) * 1e6 / n, r["unit"], r["user_s"] * 1e6 / n,
        r["sys_s"] * 1e6 / n, 100 * r["sys_s"] / max(1e-9, r["user_s"] + r["sys_s"]))]
    lines.append("  per %s: syscalls %.2f (%s); ctx switches %.2f (voluntary %.2f, preempted "
                 "%.2f), wake-ups made %.2f, lo packets %.2f, task-clock %.2f us; bytes/write "
                 "%.0f" % (
                     r["unit"], per(c.get("raw_syscalls:sys_enter")),
                     ", ".join("%s %.2f" % kv for kv in sorted(sc.items(), key=lambda kv: -kv[1])
                               if kv[1] >= 0.005),
                     per(c.get("context-switches")), per(r.get("vol_switches")),
                     per(r.get("invol_switches")), per(c.get("sched:sched_wakeup")),
                     per(c.get("net:net_dev_xmit")), per(c.get("task-clock")) * 1000.0,
                     r["wchar"] / max(1, r["syscw"])))
    lines.append("  bench: %s" % json.dumps(r["bench"]))
    for row in (r.get("record") or {}).get("dso", [])[:8]:
        lines.append("  dso  " + row)
    for row in (r.get("record") or {}).get("sym", [])[:15]:
        lines.append("  sym  " + row)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--herald", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--only", default="nws,nsse,p1,4,4s,5,5s,7ws,7sse,1")
    ap.add_argument("--targets", default="herald,nchan,floor",
                    help="floor runs only where bench/compare runs it (scenario 1)")
    ap.add_argument("--record", action="store_true", help="perf record the window too")
    ap.add_argument("--out", default=None, help="directory for the raw files (default: a new "
                                                "one under /tmp)")
    args = ap.parse_args()
    outdir = args.out or tempfile.mkdtemp(prefix="herald-profile-")
    os.makedirs(outdir, exist_ok=True)
    rundir = tempfile.mkdtemp(prefix="herald-profile-run-")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(rundir, sub), exist_ok=True)
    keys = args.only.split(",")
    S = {s["key"]: s for s in cmp.scenarios(1.0)}
    signal.signal(signal.SIGTERM, lambda *_: (cmp.stop_all(), sys.exit(1)))
    results = []
    try:
        for key in keys:
            s = S[key]
            for t in args.targets.split(","):
                if t == "floor" and not s.get("floor"):
                    continue
                if s.get("targets") and t not in s["targets"]:
                    continue
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                r = run_one(s, t, args.herald, args.bench, outdir, args.record, rundir)
                r["load_before"] = float(load)
                results.append(r)
                print(summary(r) + "\n  load before: %s" % load, flush=True)
                time.sleep(1)
    finally:
        cmp.stop_all()
        with open(os.path.join(outdir, "profile.json"), "w") as f:
            json.dump(results, f, indent=1)
        print("raw files: %s" % outdir, file=sys.stderr)


if __name__ == "__main__":
    main()
