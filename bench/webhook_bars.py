#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 12's webhook bars, measured with herald-bench against a loopback receiver.

  bar 1  a webhook per publish at 2,000 publishes/s: herald's CPU per publish with a webhook
         endpoint minus without one (the publish CPU rise per webhook delivery) <= 25 us;
  bar 2  a receiver that stops answering for 60 s changes the subscriber's p99 by <= 1 ms, and
         the backlog it left drains within 60 s of its recovery.

Bar 1: two herald nodes run side by side from the same binary (A: `webhook URL channels=*`, B:
none); `herald-bench fanout -s 1 -r 2000` publishes to each in alternating rounds. herald's CPU
(user+sys of the process, from /proc) is read before a round and after every webhook of it was
delivered (A) or the bench ended (B), and divided by the messages published. Its receiver is a
small asyncio HTTP/1.1 server in this process (answers 204 on kept-alive connections), so its CPU
is not herald's.

Bar 2: one node with a webhook to `herald-bench hooksink` (a light C receiver, niced: it stands
for another machine), and pairs of 100 s rounds of `herald-bench fanout -s 1 -r 2000`: in one
round of a pair the receiver is stopped (SIGSTOP) from 10 s in for `--outage` seconds, then
resumed (SIGCONT), and `herald_webhook_pending` is polled until it is 0 (the drain); the other
round has no outage. The bench publishes with --publish-pipeline requests in flight (8; with
one, a stall of the host queues every message behind it and the p99 counts stalls). The pairs
alternate their order (none/outage, outage/none, ...). Each pair's subscriber p99 difference is
one sample: the report gives every pair's, their median and range, the load average, and checks
that the receiver saw as many distinct webhook ids as events were published. The asyncio
receiver is not used for bar 2: at 60-85 us of CPU per request it took 12-17% of a core at
2,000 webhooks/s and half a core while draining a backlog, at normal priority, on the same 2
cores as herald and the subscriber (hooksink: about 15 us).

Every figure is a median over alternating rounds; the load average is printed with each round
(the machine is shared).

  python3 bench/webhook_bars.py --herald build-rel/herald --bench build-rel/bench/herald-bench
  python3 bench/webhook_bars.py --herald ... --bench ... --only 2 --pairs 4
"""
import argparse
import asyncio
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_COMMON = ["webhook_allow_private on", "webhook_concurrency 16",
                  "webhook_queue_size 1000000", "webhook_max_memory 1g", "webhook_timeout 10s"]


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


class Sink:
    """`herald-bench hooksink`: the light loopback receiver of bar 2 (a C process: about 15 us of
    CPU per request where the asyncio Receiver takes about 100, so at 2,000 webhooks/s it leaves
    the cores to herald and the subscriber, and it drains a backlog at herald's pace). It answers
    204 to everything, pipelined requests included, and counts requests and distinct webhook
    ids; SIGSTOP makes the outage (it stops reading and answering; the kernel keeps accepting
    and buffering until the windows fill), SIGCONT ends it. It stops at stdin's end or after
    --max-seconds, so it cannot outlive the script."""

    def __init__(self, bench, nice, max_s):
        def child():
            os.nice(nice)
            # killed with this script even while stopped (a stopped process never reads EOF)
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        self.proc = subprocess.Popen([bench, "hooksink", "--max-seconds", str(max_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=child)
        m = re.search(r":(\d+)$", self.proc.stdout.readline().strip())
        if not m:
            raise SystemExit("herald-bench hooksink did not start")
        self.port = int(m.group(1))

    def counts(self):
        """(requests, distinct webhook ids, connections accepted) so far."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        f = self.proc.stdout.readline().split()
        return int(f[1]), int(f[3]), int(f[5])

    def pause(self, on):
        os.kill(self.proc.pid, signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.stdin.close()
        self.proc.wait(20)


class Timeline:
    """--timeline: one more SSE subscriber on the round's channel, on a thread of this script,
    that times every message it receives against the send time the bench wrote into its payload
    (both CLOCK_MONOTONIC), so a round's late messages can be placed in time: before the outage,
    during it, in the 10 s after the recovery (the drain), after. It costs a few % of a core,
    in both kinds of round alike; the bar's p99 is the bench's subscriber's, not this one's."""

    def __init__(self, port, channel, timeout_s):
        self.got = []  # (intended send ns, latency ns)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock.sendall(("GET /sse/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" %
                           channel).encode())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                now = time.monotonic_ns()
                buf += data
                cut = buf.rfind(b"\n")
                if cut < 0:
                    continue
                for m in re.finditer(rb"hb:\d+:\d+:(\d+):", buf[:cut]):
                    sent = int(m.group(1))
                    self.got.append((sent, now - sent))
                buf = buf[cut + 1:]
        except OSError:
            pass  # the timeout or the close at the round's end

    def phases(self, t_start, lead, outage):
        """p99 in ms by phase of the round, phases in seconds of this script's monotonic clock
        from t_start (the same for a round without an outage)."""
        self.sock.close()
        self.thread.join(5)
        bounds = [("before", 0, lead), ("outage", lead, lead + outage),
                  ("drain+10s", lead + outage, lead + outage + 10),
                  ("after", lead + outage + 10, 1e9)]
        out = []
        for name, lo, hi in bounds:
            lat = sorted(l for sent, l in self.got
                         if lo <= sent / 1e9 - t_start < hi)
            if lat:
                out.append("%s %.2f ms (%d)" % (name, lat[int(len(lat) * 0.99)] / 1e6,
                                               len(lat)))
        return ", ".join(out)


def bar2(args):
    """Pairs of rounds, one with a receiver outage and one without, in alternating order (ABBA:
    a drift of the host over the run cancels); each pair's p99 difference is one sample, and the
    report gives their median and range. A round publishes for --lead + --outage + --tail
    seconds (10 + 60 + 30 by default)."""
    sink = Sink(args.bench, args.sink_nice, 3600)
    url = "http://127.0.0.1:%d/hook" % sink.port
    a = Node(args.herald, WEBHOOK_COMMON + ["webhook %s name=bench secret=%s" % (url, SECRET)],
             args.workers)
    lead, run_s = args.lead, args.lead + args.outage + args.tail
    rows = {"outage": [], "none": [], "diff": [], "drain": [], "load": [], "bad": 0}
    print("bar2: herald pid %d port %d, hooksink pid %d :%d (nice %d), %d pairs of %d s rounds, "
          "outage %d s from %d s, publishing with %d requests in flight, load %s" % (
              a.proc.pid, a.port, sink.proc.pid, sink.port, args.sink_nice, args.pairs, run_s,
              args.outage, lead, args.publish_pipeline, loadavg()), flush=True)
    published = 0
    try:
        for pair in range(args.pairs):
            p99 = {}
            for kind in (("none", "outage") if pair % 2 == 0 else ("outage", "none")):
                req0, uniq0, _ = sink.counts()
                result = {}
                prefix = "wb2-%d-%d-%s" % (os.getpid(), pair, kind)
                tl = Timeline(a.port, prefix + "-0", run_s + 120) if args.timeline else None

                def go():
                    result["res"] = fanout(args.bench, a.port, a.proc.pid, args.rate, run_s,
                                           ["--pipeline", str(args.publish_pipeline),
                                            "--prefix", prefix])
                t = threading.Thread(target=go)
                t_start = time.monotonic()
                t.start()
                note = ""
                if kind == "outage":
                    time.sleep(lead)
                    sink.pause(True)
                    time.sleep(args.outage)
                    pend = metric(a.port, "herald_webhook_pending")
                    sink.pause(False)
                    t0, drain = time.monotonic(), float("inf")
                    while time.monotonic() - t0 < 300:
                        if metric(a.port, "herald_webhook_pending") == 0:
                            drain = time.monotonic() - t0
                            break
                        time.sleep(0.1)
                    rows["drain"].append(drain)
                    rows["bad"] += drain > 60
                    note = ", %s pending at recovery, drained in %s s" % (
                        pend, "%.1f" % drain if drain < 300 else "> 300")
                t.join()
                res = result["res"]
                published += res["published"]
                deadline = time.monotonic() + 60  # the round's last webhooks
                while metric(a.port, "herald_webhook_pending") and time.monotonic() < deadline:
                    time.sleep(0.1)
                req1, uniq1, conns = sink.counts()
                p99[kind] = res.get("latency_p99_us", 0) / 1000
                rows[kind].append(p99[kind])
                rows["load"].append(float(loadavg()))
                print("bar2 pair %d %-6s: subscriber p99 %.2f ms (p50 %.2f, p99.9 %.2f, publish "
                      "p99 %.2f), delivered %s/%s, webhooks %d distinct of %d published (%d "
                      "requests, %d receiver connections so far), dead letters %s%s, load %s" % (
                          pair + 1, kind, p99[kind], res.get("latency_p50_us", 0) / 1000,
                          res.get("latency_p99_9_us", 0) / 1000,
                          res.get("publish_latency_p99_us", 0) / 1000, res.get("delivered"),
                          res.get("published"), uniq1 - uniq0, res["published"], req1 - req0,
                          conns, metric(a.port, "herald_webhook_dead_letters"), note,
                          loadavg()), flush=True)
                if tl:
                    print("bar2 pair %d %-6s: timeline (p99 by intended send time, from the "
                          "extra subscriber): %s" % (pair + 1, kind,
                                                     tl.phases(t_start, lead, args.outage)),
                          flush=True)
                if uniq1 != published or res.get("delivered") != res["published"]:
                    rows["bad"] += 1
                    print("bar2: !!! %d distinct webhook ids received, %d events published; "
                          "%s of %s messages delivered to the subscriber" % (
                              uniq1, published, res.get("delivered"), res["published"]),
                          flush=True)
            rows["diff"].append(p99["outage"] - p99["none"])
            print("bar2 pair %d: outage - none = %+.2f ms" % (pair + 1, rows["diff"][-1]),
                  flush=True)
    finally:
        a.stop()
        sink.stop()
    d = rows["diff"]
    print("bar2: subscriber p99 with a %d s outage minus without, per pair: %s ms; median %+.2f "
          "ms, range %+.2f..%+.2f ms, %d of %d pairs higher with the outage (bar: <= 1 ms); "
          "medians %.2f ms with, %.2f ms without; backlog drained in %s s after recovery (bar: "
          "<= 60 s); load %.1f-%.1f" % (
              args.outage, ", ".join("%+.2f" % x for x in d), statistics.median(d), min(d),
              max(d), sum(1 for x in d if x > 0), len(d), statistics.median(rows["outage"]),
              statistics.median(rows["none"]), ", ".join("%.1f" % x for x in rows["drain"]),
              min(rows["load"]), max(rows["load"])), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--herald", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=20, help="bar 1: seconds per round")
    ap.add_argument("--rounds", type=int, default=3, help="bar 1: rounds of A and B")
    ap.add_argument("--pairs", "--rounds2", type=int, default=4,
                    help="bar 2: pairs of rounds (one with an outage, one without)")
    ap.add_argument("--publish-pipeline", type=int, default=8,
                    help="bar 2: publish requests in flight on the bench's publishing connection "
                    "(with 1, every stall of the host queues the messages behind it, and the "
                    "p99 counts the host's stalls)")
    ap.add_argument("--timeline", action="store_true",
                    help="bar 2: an extra subscriber in this script places the late messages "
                    "in time (before the outage, during it, the drain, after)")
    ap.add_argument("--sink-nice", type=int, default=10,
                    help="bar 2: the receiver's nice (it stands for another machine)")
    ap.add_argument("--outage", type=int, default=60, help="bar 2: seconds the receiver is stopped")
    ap.add_argument("--lead", type=int, default=10, help="bar 2: seconds before the outage")
    ap.add_argument("--tail", type=int, default=30, help="bar 2: seconds after the outage")
    ap.add_argument("--smoke", action="store_true",
                    help="bar 2 in miniature for ctest (one pair: 1 s, a 2 s outage, 3 s): "
                    "fails on a lost webhook or delivery, or a drain over 60 s")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("1", "2"))
    ap.add_argument("--pipeline", type=int, default=1,
                    help="the endpoint's pipeline= (the receiver answers pipelined requests)")
    args = ap.parse_args()
    if args.smoke:
        args.only, args.pairs, args.lead, args.outage, args.tail = "2", 1, 1, 2, 3
    if args.only != "2":
        recv = Receiver()
        url = "http://127.0.0.1:%d/hook" % recv.port
        hook = "webhook %s name=bench secret=%s" % (url, SECRET)
        if args.pipeline > 1:
            hook += " pipeline=%d" % args.pipeline
        a = Node(args.herald, WEBHOOK_COMMON + [hook], args.workers)
        b = Node(args.herald, WEBHOOK_COMMON, args.workers)
        try:
            print("herald A (webhook) pid %d port %d, B (none) pid %d port %d, receiver :%d, "
                  "%d CPUs, load %s" % (a.proc.pid, a.port, b.proc.pid, b.port, recv.port,
                                        os.cpu_count(), loadavg()), flush=True)
            bar1(args, recv, a, b)
        finally:
            a.stop()
            b.stop()
    if args.only != "1" and bar2(args)["bad"]:
        raise SystemExit("bar2: a webhook or a delivery was lost, or a drain took over 60 s")


if __name__ == "__main__":
    main()
