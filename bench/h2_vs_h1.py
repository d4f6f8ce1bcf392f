#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/h2_vs_h1.py HERALD HERALD_BENCH [--rounds N] [--quick] [--only fanout,notify,idle] [--tls]:
SSE over HTTP/2 streams
against SSE over HTTP/1.1 connections, with herald-bench (--h2-streams), in alternating rounds
on one machine, each round on a fresh herald (loopback, port picked by herald):

  cpu:    herald-bench fanout and notify, the same subscribers over HTTP/1.1 connections and
          over HTTP/2 connections of 100 streams; server CPU per delivery (user+sys of herald);
  memory: herald-bench idle, 10,000 SSE subscribers as 10,000 HTTP/1.1 connections and as
          100 HTTP/2 connections of 100 streams (one worker); user-space memory (Pss growth)
          per subscriber.

--tls: both over TLS (a tls listener with a self-signed P-256 certificate made here; HTTP/2
by ALPN h2, HTTP/1.1 by offering no ALPN), instead of cleartext (HTTP/2 by prior knowledge).

Prints each round and the medians with their ratio (HTTP/2 / HTTP/1.1) and the load average,
as docs/http2.md quotes them. Stops only the herald it started, by PID.
"""
import json
import statistics
import subprocess
import sys
import tempfile

from _common import loadavg, make_cert, remove_cert, start_herald


def run(bench, scenario, args, workers, herald, tls):
    p, port = start_herald(herald, workers, tls, "h2_vs_h1")
    try:
        out = subprocess.run([bench, scenario, "--url",
                              "%s://127.0.0.1:%d" % ("https" if tls else "http", port),
                              "--server-pid", str(p.pid), "--json", "--quiet"] + args,
                             capture_output=True, text=True, timeout=600)
    finally:
        p.terminate()
        p.wait(30)
    try:
        return json.loads(out.stdout)
    except ValueError:
        sys.exit("h2_vs_h1: %s %s: no JSON (exit %d):\n%s%s" %
                 (scenario, " ".join(args), out.returncode, out.stdout[-2000:],
                  out.stderr[-2000:]))


def value(res, key):
    if not res.get("ok"):
        print("  !!! %s: %s" % (res.get("title"), "; ".join(res.get("warnings", []))))
    if res.get(key) is None:
        sys.exit("h2_vs_h1: %s missing from %s" % (key, json.dumps(res)[:500]))
    return float(res[key])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    herald, bench = sys.argv[1], sys.argv[2]
    rounds = 3
    quick = "--quick" in sys.argv
    if "--rounds" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
    subs = 2000 if quick else 10000
    cases = [
        ("fanout, 2,000 subscribers on 20 channels, 400 msg/s", "fanout",
         ["-t", "sse", "-s", "2000", "-c", "20", "-r", "400", "-d", "10s", "--drain", "5s"],
         2, "server_cpu_us_per_delivery"),
        ("notify, 2,000 subscribers each on its own channel, 2,000 msg/s", "notify",
         ["-t", "sse", "-s", "2000", "-r", "2000", "-p", "8", "-d", "10s", "--drain", "5s"],
         2, "server_cpu_us_per_delivery"),
        ("idle, %d subscribers held (one worker)" % subs, "idle",
         ["-t", "sse", "-s", str(subs), "--hold", "2s"], 1, "server_rss_per_conn_bytes"),
    ]
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    tls = None
    if "--tls" in sys.argv:
        tls = make_cert(tempfile.mkdtemp(prefix="h2_vs_h1-"))
    print("load average at start: %s%s" % (loadavg(),
                                           ", over TLS" if tls else ""))
    for title, sc, args, workers, key in cases:
        if only and sc not in only.split(","):
            continue
        h1, h2 = [], []
        for r in range(rounds):
            a = value(run(bench, sc, args, workers, herald, tls), key)
            b = value(run(bench, sc, args + ["--h2-streams", "100"], workers, herald, tls), key)
            h1.append(a)
            h2.append(b)
            print("  %s round %d: HTTP/1.1 %.2f, HTTP/2 %.2f (%s; load %s)" %
                  (sc, r + 1, a, b, key, loadavg()[0]))
            sys.stdout.flush()
        m1, m2 = statistics.median(h1), statistics.median(h2)
        print("%s: median %s HTTP/1.1 %.2f, HTTP/2 %.2f, ratio %.2fx" % (title, key, m1, m2,
                                                                        m2 / m1))
    print("load average at end: %s" % loadavg())
    if tls:
        remove_cert(tls)


if __name__ == "__main__":
    main()
