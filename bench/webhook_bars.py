#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 12's webhook bars, measured with herald-bench against a loopback receiver.

  bar 1  a webhook per publish at 2,000 publishes/s: herald's CPU per publish with a webhook
         endpoint minus without one (the publish CPU rise per webhook delivery) <= 25 us;
  bar 2  a receiver that stops answering for 60 s changes the subscriber's p99 by <= 1 ms, and
         the backlog it left drains within 60 s of its recovery.

Two herald nodes run side by side from the same binary (A: `webhook URL channels=*`, B: none);
`herald-bench fanout -s 1 -r 2000` publishes to each in alternating rounds. herald's CPU
(user+sys of the process, from /proc) is read before a round and after every webhook of it was
delivered (A) or the bench ended (B), and divided by the messages published. For bar 2 node A's
receiver hangs (reads requests, answers none) from 10 s into a 100 s run for `--outage` seconds,
then answers everything it holds; the round's p99 is compared with a round without an outage, and
`herald_webhook_pending` is polled from the recovery until it is 0.

The receiver is a small asyncio HTTP/1.1 server in this process (answers 204 on kept-alive
connections), so its CPU is not herald's. Every figure is a median over alternating rounds; the
load average is printed with each round (the machine is shared).

  python3 bench/webhook_bars.py --herald build-rel/herald --bench build-rel/bench/herald-bench
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A loopback webhook receiver on its own thread: 204 to every request, or (hanging) none
    until it recovers, then every held request answered in order."""

    def __init__(self):
        self.count = 0
        self.conns = 0  # connections accepted: keep-alive reuse keeps it at the pool's size
        self.hanging = False
        self.held = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        srv = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = srv.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _conn(self, reader, writer):
        self.conns += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
                if m:
                    await reader.readexactly(int(m.group(1)))
                self.count += 1
                if self.hanging:
                    self.held.append(writer)
                    continue
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    def set_hanging(self, on):
        def flip():
            self.hanging = on
            if not on:
                for w in self.held:
                    if not w.is_closing():
                        w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                self.held = []
        self.loop.call_soon_threadsafe(flip)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid):
    """CPU seconds (user+sys) by thread kind: {"hooks": s, "workers": s, "other": s}."""
    out = {"hooks": 0.0, "workers": 0.0, "other": 0.0}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue  # a thread that ended
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        kind = "hooks" if comm == "herald-hooks" else (
            "workers" if comm.startswith("herald-w") else "other")
        out[kind] += s
    return out


def ctxt_switches(pid):
    """The process's context switches so far (voluntary + involuntary, every thread)."""
    n = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass  # a thread that ended
    return n


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


class Node:
    def __init__(self, binary, lines, workers):
        self.dir = tempfile.mkdtemp(prefix="hb-webhook-")
        conf = os.path.join(self.dir, "herald.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:0\nworkers %d\nlog_level warn\nmax_connections 10000\n" %
                    workers)
            f.write("".join(line + "\n" for line in lines))
        self.proc = subprocess.Popen([binary, "-c", conf, "-o", "log_level info"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if line.rstrip().endswith("ready"):
                break
        if not self.port:
            raise SystemExit("herald did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for _ in self.proc.stderr:
            pass

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


def fanout(bench, port, pid, rate, duration, extra=()):
    out = subprocess.run([bench, "fanout", "-t", "sse", "-s", "1", "-c", "1", "-r", str(rate),
                          "-d", "%ds" % duration, "--drain", "10s", "--url",
                          "http://127.0.0.1:%d" % port, "--server-pid", str(pid), "--json"] +
                         list(extra), capture_output=True, text=True, timeout=duration + 120)
    if out.returncode not in (0, 1):
        raise SystemExit("herald-bench failed: %s" % out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def bar1(args, recv, a, b):
    rows = {"A": [], "B": [], "A_hooks": [], "B_hooks": [], "A_workers": [], "B_workers": []}
    for r in range(args.rounds):
        for name, node in (("A", a), ("B", b)):
            before_recv, conns0 = recv.count, recv.conns
            c0, x0 = cpu_s(node.proc.pid), ctxt_switches(node.proc.pid)
            t0 = thread_cpu_s(node.proc.pid)
            res = fanout(args.bench, node.port, node.proc.pid, args.rate, args.duration)
            published = res["published"]
            if name == "A":  # until every webhook of the round was answered
                deadline = time.monotonic() + 60
                while recv.count - before_recv < published and time.monotonic() < deadline:
                    time.sleep(0.05)
                hh = metric(node.port, "herald_webhook_pending")
                while hh and time.monotonic() < deadline:
                    time.sleep(0.05)
                    hh = metric(node.port, "herald_webhook_pending")
            c1, x1 = cpu_s(node.proc.pid), ctxt_switches(node.proc.pid)
            t1 = thread_cpu_s(node.proc.pid)
            per = (c1 - c0) * 1e6 / published
            rows[name].append(per)
            hooks = (t1["hooks"] - t0["hooks"]) * 1e6 / published
            workers = (t1["workers"] - t0["workers"]) * 1e6 / published
            rows[name + "_hooks"].append(hooks)
            rows[name + "_workers"].append(workers)
            print("bar1 round %d %s: %d published, %d webhooks, %.1f us CPU per publish (hooks "
                  "thread %.1f, workers %.1f), %.2f context switches per publish, %d new "
                  "receiver connections, p99 %.2f ms, load %s" % (
                      r + 1, name, published, recv.count - before_recv, per, hooks, workers,
                      (x1 - x0) / published, recv.conns - conns0,
                      res.get("latency_p99_us", 0) / 1000, loadavg()), flush=True)
    ma, mb = statistics.median(rows["A"]), statistics.median(rows["B"])
    print("bar1: median CPU per publish %.1f us with a webhook, %.1f us without: +%.1f us per "
          "webhook delivery (bar: <= 25 us)" % (ma, mb, ma - mb), flush=True)
    print("bar1: medians by thread: hooks thread %.1f us per delivery; workers %.1f us per "
          "publish with a webhook, %.1f without (+%.1f)" % (
              statistics.median(rows["A_hooks"]), statistics.median(rows["A_workers"]),
              statistics.median(rows["B_workers"]),
              statistics.median(rows["A_workers"]) - statistics.median(rows["B_workers"])),
          flush=True)
    return rows


def bar2(args, recv, a):
    rows = {"outage": [], "none": [], "drain": []}
    run_s = args.outage + 40
    for r in range(args.rounds2):
        for kind in ("none", "outage"):
            result = {}

            def go():
                result["res"] = fanout(args.bench, a.port, a.proc.pid, args.rate, run_s)
            t = threading.Thread(target=go)
            t.start()
            drain = None
            if kind == "outage":
                time.sleep(10)
                recv.set_hanging(True)
                time.sleep(args.outage)
                pend = metric(a.port, "herald_webhook_pending")
                recv.set_hanging(False)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 300:
                    if metric(a.port, "herald_webhook_pending") == 0:
                        drain = time.monotonic() - t0
                        break
                    time.sleep(0.2)
                print("bar2 round %d: %s pending at recovery, drained in %s s" %
                      (r + 1, pend, "%.1f" % drain if drain is not None else "> 300"), flush=True)
                rows["drain"].append(drain if drain is not None else float("inf"))
            t.join()
            res = result["res"]
            p99 = res.get("latency_p99_us", 0) / 1000
            rows[kind].append(p99)
            print("bar2 round %d %s: p99 %.2f ms, p50 %.2f ms, delivered %s/%s, dead letters %s, "
                  "load %s" % (r + 1, kind, p99, res.get("latency_p50_us", 0) / 1000,
                               res.get("delivered"), res.get("published"),
                               metric(a.port, "herald_webhook_dead_letters"), loadavg()),
                  flush=True)
    print("bar2: median subscriber p99 %.2f ms with a 60 s outage, %.2f ms without (%+.2f ms; "
          "bar: <= 1 ms); backlog drained in %s s after recovery (bar: <= 60 s)" % (
              statistics.median(rows["outage"]), statistics.median(rows["none"]),
              statistics.median(rows["outage"]) - statistics.median(rows["none"]),
              ", ".join("%.1f" % d for d in rows["drain"])), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--herald", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=20, help="bar 1: seconds per round")
    ap.add_argument("--rounds", type=int, default=3, help="bar 1: rounds of A and B")
    ap.add_argument("--rounds2", type=int, default=1, help="bar 2: rounds of each kind")
    ap.add_argument("--outage", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("1", "2"))
    ap.add_argument("--pipeline", type=int, default=1,
                    help="the endpoint's pipeline= (the receiver answers pipelined requests)")
    args = ap.parse_args()
    recv = Receiver()
    url = "http://127.0.0.1:%d/hook" % recv.port
    common = ["webhook_allow_private on", "webhook_concurrency 16",
              "webhook_queue_size 1000000", "webhook_max_memory 1g", "webhook_timeout 10s"]
    hook = "webhook %s name=bench secret=%s" % (url, SECRET)
    if args.pipeline > 1:
        hook += " pipeline=%d" % args.pipeline
    a = Node(args.herald, common + [hook], args.workers)
    b = Node(args.herald, common, args.workers)
    try:
        print("herald A (webhook) pid %d port %d, B (none) pid %d port %d, receiver :%d, "
              "%d CPUs, load %s" % (a.proc.pid, a.port, b.proc.pid, b.port, recv.port,
                                    os.cpu_count(), loadavg()), flush=True)
        if args.only != "2":
            bar1(args, recv, a, b)
        if args.only != "1":
            bar2(args, recv, a)
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    main()
