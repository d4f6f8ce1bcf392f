# SPDX-License-Identifier: MIT
"""Webhooks through the real binary (docs/webhooks.md): a real receiver (node, verifying every
delivery with the npm standardwebhooks library: webhook_support.Receiver) answering as each test
scripts it, herald configured with -o webhook lines.

Signed deliveries with rotation secrets, channel patterns and events; retries after 500, a
dropped connection, a timeout, a reset and a body trickling past the timeout, with full-jitter
backoff inside its bounds; 410 disabling the endpoint; dead
letters, inspection, replay and purge; a hung receiver never delaying publishes nor subscribers;
the queue bound and webhook_max_memory under a flood; SSRF refusal; https with certificate
verification; channel.occupied / channel.vacated; conf errors."""
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import webhook_support as ws  # noqa: E402
from herald_harness import SseStream, publish, wait_for  # noqa: E402

# herald's debug line for each retry it schedules: the event, k, and the wait it drew
RETRY_RE = re.compile(r"webhook \S+: event (\S+) retry (\d+) in (\d+) ms$")


FAST = ["webhook_allow_private on", "webhook_backoff_base 100ms", "webhook_backoff_max 2s",
        "webhook_timeout 2s", "webhook_connect_timeout 1s"]


class WebhookCase(hh.HeraldTestCase):
    def node(self, lines, extra=(), workers=2):
        return self.start_herald(overrides=list(FAST) + list(lines) + list(extra), workers=workers)


class TestSigned(WebhookCase):
    def test_signed_delivery_rotation_patterns(self):
        """Each delivery verifies with either rotation secret (standardwebhooks), not with a
        third; only matching channels are sent; the body is the event, ids unique."""
        old, new, other = ws.new_secret(), ws.new_secret(24), ws.new_secret()
        r = ws.Receiver(self, [old, new, other])
        h = self.node([ws.webhook_line(r.url("/in?x=1"), [old, new], name="app",
                                       channels=["news", "room:*"])], ["webhook_concurrency 1"])
        ids = [publish(h.port, "news", "hello"),
               publish(h.port, "room:7", '{"n":1}', ctype="application/json"),
               publish(h.port, "other", "not sent"),
               publish(h.port, "room:", b"\x00\xff", ctype="application/octet-stream")]
        got = r.wait_deliveries(3)
        time.sleep(0.3)
        got = r.deliveries()
        self.assertEqual(len(got), 3, got)
        for d in got:
            self.assertEqual(d["verified"], [True, True, False], d)
            self.assertEqual(d["path"], "/in?x=1")
            self.assertEqual(d["method"], "POST")
            self.assertEqual(d["content_type"], "application/json")
            self.assertTrue(d["id"].startswith("evt_"), d["id"])
            self.assertLessEqual(abs(int(d["timestamp"]) - time.time()), 5)
        self.assertEqual(len({d["id"] for d in got}), 3)
        bodies = [json.loads(d["body"]) for d in got]
        by_id = {b["data"]["id"]: b for b in bodies}
        self.assertEqual(set(by_id), {ids[0], ids[1], ids[3]})
        self.assertEqual(by_id[ids[0]]["type"], "message.published")
        self.assertEqual(by_id[ids[0]]["data"]["channel"], "news")
        self.assertEqual(by_id[ids[0]]["data"]["data"], "hello")
        self.assertEqual(by_id[ids[1]]["data"]["data"], {"n": 1})
        self.assertEqual(by_id[ids[3]]["data"]["encoding"], "base64")
        self.assertEqual(by_id[ids[3]]["data"]["data"], "AP8=")
        self.assertRegex(by_id[ids[0]]["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # kept alive: one request at a time, the three went over one connection
        self.assertEqual(len({d["conn"] for d in got}), 1, got)
        ep = ws.endpoint(h.port, "app")
        self.assertEqual((ep["attempts"], ep["delivered"], ep["pending"], ep["secrets"]),
                         (3, 3, 0, 2))

    def test_batch_and_websocket_publishes(self):
        """A batch publish gives one event per message, in order when concurrency is 1."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.node([ws.webhook_line(r.url(), [s])], ["webhook_concurrency 1"])
        items = [{"channel": "c%d" % (i % 3), "data": i} for i in range(20)]
        status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                     {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        ids = [m["id"] for m in json.loads(body)["messages"]]
        got = r.wait_deliveries(20)
        self.assertEqual([json.loads(d["body"])["data"]["id"] for d in got], ids)
        self.assertTrue(all(d["verified"] == [True] for d in got))


class TestRetries(WebhookCase):
    def test_retry_after_500_and_dropped_connection(self):
        """500, a connection dropped unanswered and 503 are retried with the same id and a valid
        signature each time, until a 2xx; the failures are counted by reason."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["status:500", "drop", "status:503", "ok"])
        h = self.node([ws.webhook_line(r.url(), [s], name="a")])
        publish(h.port, "x", "retry me")
        got = r.wait_deliveries(4)
        self.assertEqual(len({d["id"] for d in got}), 1, got)
        self.assertTrue(all(d["verified"] == [True] for d in got))
        self.assertEqual([d["answer"] for d in got], ["status:500", "drop", "status:503", "ok"])
        ep = ws.wait_endpoint(h.port, "a", lambda e: e["delivered"] == 1, "delivered")
        self.assertEqual(ep["attempts"], 4)
        self.assertEqual(ep["failures"]["status"], 2)
        self.assertEqual(ep["failures"]["connect"], 1)
        self.assertEqual(ep["pending"], 0)

    def test_timeouts_resets_and_slow_bodies(self):
        """A receiver that never answers, and one whose 200 comes at once but whose body trickles
        past webhook_timeout, both time out (the whole answer has webhook_timeout: a 2xx head
        is not a delivery); a TCP reset is a connection failure; each is retried with the same
        id, and a slow body complete within the timeout is a delivery."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        script = ["hang", "trickle:40:100", "reset", "trickle:4:50"]
        r.control(script)
        h = self.node([ws.webhook_line(r.url(), [s], name="t")],
                      ["webhook_timeout 800ms", "webhook_backoff_base 10ms",
                       "webhook_backoff_max 50ms"])
        publish(h.port, "x", "patience")
        ep = ws.wait_endpoint(h.port, "t", lambda e: e["delivered"] == 1, "delivered",
                              timeout=20)
        got = r.deliveries()
        self.assertEqual([d["answer"] for d in got], script)
        self.assertEqual(len({d["id"] for d in got}), 1, got)
        self.assertTrue(all(d["verified"] == [True] for d in got))
        # each timed-out attempt was given its 800 ms (less the receiver's own delay)
        for k in (1, 2):
            self.assertGreaterEqual(got[k]["at_ms"] - got[k - 1]["at_ms"], 700, got)
        self.assertEqual((ep["attempts"], ep["failures"]["timeout"], ep["failures"]["connect"],
                          ep["pending"]), (4, 2, 1, 0), ep)

    def test_backoff_schedule_full_jitter(self):
        """Retry k waits a random time in [0, min(max, base * 2^(k-1))] (full jitter): every wait
        herald drew (its debug line "retry K in W ms") is within its cap, the waits vary and
        grow with k on average, and each retry reached the receiver no sooner than its wait
        after the attempt before, nor later than that plus slack plus what the hooks thread and
        the receiver spent waiting for a core meanwhile (their schedstat run delay: the hooks
        thread runs under SCHED_IDLE, and a loaded machine stretched gaps to 1,095 ms against a
        cap of 800)."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        n_events, fails = 8, 4
        base_ms = 100
        h = self.node([ws.webhook_line(r.url(), [s])],
                      ["webhook_backoff_base %dms" % base_ms, "webhook_backoff_max 10s",
                       "log_level debug"])
        r.control(fail_each=fails)
        waited0 = ws.run_delay_ms(h.pid, "herald-hooks") + ws.run_delay_ms(r.proc.pid)
        for i in range(n_events):
            publish(h.port, "j", "event %d" % i)
        got = r.wait_deliveries(n_events * (fails + 1), timeout=30)
        waited = ws.run_delay_ms(h.pid, "herald-hooks") + ws.run_delay_ms(r.proc.pid) - waited0
        h.wait_count(RETRY_RE, n_events * fails)
        drawn = {}
        for line in h.lines():
            m = RETRY_RE.search(line)
            if m:
                drawn.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
        by_id = {}
        for d in got:
            by_id.setdefault(d["id"], []).append(d["at_ms"])
        self.assertEqual(len(by_id), n_events)
        self.assertEqual(set(drawn), set(by_id))
        waits = {k: [] for k in range(1, fails + 1)}
        slack = 300
        for event, times in by_id.items():
            self.assertEqual(len(times), fails + 1, times)
            self.assertEqual(sorted(drawn[event]), list(range(1, fails + 1)), drawn[event])
            times.sort()
            for k in range(1, fails + 1):
                cap = base_ms * 2 ** (k - 1)
                wait, gap = drawn[event][k], times[k] - times[k - 1]
                self.assertTrue(0 <= wait <= cap, "retry %d of %s waits %d ms, cap %d"
                                % (k, event, wait, cap))
                # the receiver's clock is in whole ms, herald's timers too
                self.assertGreaterEqual(gap, wait - 3, "retry %d of %s came %d ms after the "
                                        "attempt before, its wait %d" % (k, event, gap, wait))
                self.assertLessEqual(gap, wait + slack + waited,
                                     "retry %d of %s came %d ms after the attempt before, its "
                                     "wait %d, %.0f ms waiting for a core"
                                     % (k, event, gap, wait, waited))
                waits[k].append(wait)
        all_waits = [x for w in waits.values() for x in w]
        self.assertGreater(len(set(all_waits)), n_events, "no jitter: %r" % waits)
        self.assertGreater(statistics.mean(waits[fails]), statistics.mean(waits[1]),
                           "waits do not grow: %r" % waits)
        self.assertGreater(max(waits[fails]), base_ms, waits)

    def test_retry_after_honoured_within_the_cap(self):
        """A receiver's Retry-After (seconds or a date) lengthens the wait before the retry well
        past the backoff (base 10 ms), but never past webhook_backoff_max: a 1 s Retry-After is
        waited for, a date an hour ahead waits the 1.5 s cap. The waits are herald's own (its
        debug line "retry 1 in W ms"), exactly; each retry came no sooner, and no later than slack
        plus what the hooks thread and the receiver waited for a core meanwhile."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
        r.control(["retry:503:1", "ok", "retry:429:" + later, "ok"])
        h = self.node([ws.webhook_line(r.url(), [s], name="ra")],
                      ["webhook_concurrency 1", "webhook_backoff_base 10ms",
                       "webhook_backoff_max 1500ms", "log_level debug"])
        waited0 = ws.run_delay_ms(h.pid, "herald-hooks") + ws.run_delay_ms(r.proc.pid)
        publish(h.port, "x", "first")
        got = r.wait_deliveries(2)
        publish(h.port, "x", "second")
        got = r.wait_deliveries(4, timeout=15)
        waited = ws.run_delay_ms(h.pid, "herald-hooks") + ws.run_delay_ms(r.proc.pid) - waited0
        self.assertEqual([d["answer"] for d in got][:4],
                         ["retry:503:1", "ok", "retry:429:" + later, "ok"])
        self.assertEqual(got[0]["id"], got[1]["id"])
        self.assertEqual(got[2]["id"], got[3]["id"])
        h.wait_count(RETRY_RE, 2)
        drawn = {m.group(1): (int(m.group(2)), int(m.group(3)))
                 for m in map(RETRY_RE.search, h.lines()) if m}
        # 1 s asked: waited (the backoff alone would be <= 10 ms); an hour asked: the cap
        self.assertEqual(drawn, {got[0]["id"]: (1, 1000), got[2]["id"]: (1, 1500)})
        for first, wait in ((0, 1000), (2, 1500)):
            gap = got[first + 1]["at_ms"] - got[first]["at_ms"]
            self.assertGreaterEqual(gap, wait - 3, gap)
            self.assertLess(gap, wait + 2000 + waited, (gap, waited))
        self.assertTrue(all(d["verified"] == [True] for d in got))

    def test_410_disables_then_enable_and_replay(self):
        """410 Gone disables the endpoint: that event is a dead letter, later events are dropped
        (counted), nothing more is sent; enable + replay delivers it again with its id."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["status:410"])
        h = self.node([ws.webhook_line(r.url(), [s], name="gone")])
        publish(h.port, "x", "first")
        ep = ws.wait_endpoint(h.port, "gone", lambda e: e["state"] == "disabled", "disabled")
        self.assertIn("410", ep["disabled_reason"])
        publish(h.port, "x", "second")
        time.sleep(0.5)
        self.assertEqual(len(r.deliveries()), 1)
        status, dl = ws.admin(h.port, "GET", "/admin/webhooks/dead-letters")
        self.assertEqual(status, 200)
        self.assertEqual(len(dl["dead_letters"]), 1)
        letter = dl["dead_letters"][0]
        first_id = r.deliveries()[0]["id"]
        self.assertEqual((letter["event_id"], letter["endpoint"], letter["attempts"]),
                         (first_id, "gone", 1))
        # replay while disabled: refused (409), the letter stays
        status, body = ws.admin(h.port, "POST", "/admin/webhooks/dead-letters/replay")
        self.assertEqual((status, body["replayed"], body["skipped"]), (409, 0, 1))
        status, body = ws.admin(h.port, "POST", "/admin/webhooks/gone/enable")
        self.assertEqual((status, body["endpoint"]["state"]), (200, "enabled"))
        status, body = ws.admin(h.port, "POST",
                                "/admin/webhooks/dead-letters/%s/replay" % first_id)
        self.assertEqual((status, body["replayed"]), (200, 1))
        got = r.wait_deliveries(2)
        self.assertEqual(got[1]["id"], first_id)
        self.assertEqual(got[1]["verified"], [True])
        self.assertEqual(json.loads(got[1]["body"])["data"]["data"], "first")


    def test_disabled_after_failing_too_long(self):
        """webhook_disable_after: an endpoint answering 500 for longer is disabled (reason named),
        its events dead letters; a 2xx before the limit resets the clock."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["status:500", "status:500", "ok"], default="status:500")
        h = self.node([ws.webhook_line(r.url(), [s], name="sick")],
                      ["webhook_disable_after 1500ms", "webhook_backoff_base 50ms",
                       "webhook_backoff_max 200ms"])
        publish(h.port, "x", "recovers")
        ep = ws.wait_endpoint(h.port, "sick", lambda e: e["delivered"] == 1, "delivered")
        self.assertEqual((ep["state"], ep["failing_since_ms"]), ("enabled", 0))
        t0 = time.monotonic()
        publish(h.port, "x", "never answered 2xx")
        ep = ws.wait_endpoint(h.port, "sick", lambda e: e["state"] == "disabled", "disabled")
        self.assertGreaterEqual(time.monotonic() - t0, 1.4)
        self.assertIn("webhook_disable_after", ep["disabled_reason"])
        self.assertIn("HTTP 500", ep["disabled_reason"])
        self.assertEqual((ep["pending"], ep["dead_letters"]), (0, 1))
        n = len(r.deliveries())
        publish(h.port, "x", "dropped")
        time.sleep(0.4)
        self.assertEqual(len(r.deliveries()), n)


class TestDeadLetters(WebhookCase):
    def test_window_dead_letters_inspect_purge_replay(self):
        """Past webhook_retry_window an event is a dead letter: listed (no payload), inspected
        (payload), purged one by one, replayed all: delivered again with the same ids."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control([], default="status:500")
        # a window of 2 s holds a retry or more (backoff 50 ms, doubling) even when the first
        # attempt's answer takes a loaded machine's half second (460 ms seen at load 22, with a
        # window of 400 ms: one attempt, no retry)
        h = self.node([ws.webhook_line(r.url(), [s], name="dl")],
                      ["webhook_retry_window 2s", "webhook_backoff_base 50ms"])
        pub = [publish(h.port, "d", "m%d" % i) for i in range(3)]
        ws.wait_endpoint(h.port, "dl", lambda e: e["dead_letters"] == 3 and e["pending"] == 0,
                         "three dead letters")
        status, dl = ws.admin(h.port, "GET", "/admin/webhooks/dead-letters?endpoint=dl")
        self.assertEqual((status, dl["total"]), (200, 3))
        letters = dl["dead_letters"]
        self.assertTrue(all("payload" not in x and x["attempts"] >= 2 for x in letters), letters)
        self.assertTrue(all("retry window" in x["reason"] and "HTTP 500" in x["reason"]
                            for x in letters), letters)
        ids = [x["event_id"] for x in letters]
        status, one = ws.admin(h.port, "GET", "/admin/webhooks/dead-letters/" + ids[0])
        self.assertEqual(status, 200)
        self.assertEqual(len(one["dead_letters"]), 1)
        self.assertEqual(one["dead_letters"][0]["event_id"], ids[0])
        self.assertIn(one["dead_letters"][0]["payload"]["data"]["id"], pub)
        self.assertEqual(ws.admin(h.port, "GET", "/admin/webhooks/dead-letters/evt_nope")[0], 404)
        self.assertEqual(ws.admin(h.port, "GET", "/admin/webhooks/dead-letters?endpoint=zz")[0],
                         404)
        status, body = ws.admin(h.port, "DELETE", "/admin/webhooks/dead-letters/" + ids[2])
        self.assertEqual((status, body["purged"]), (200, 1))
        before = len(r.deliveries())
        r.control([], default="ok")
        status, body = ws.admin(h.port, "POST", "/admin/webhooks/dead-letters/replay")
        self.assertEqual((status, body["replayed"]), (200, 2))
        got = r.wait_deliveries(before + 2)[before:]
        self.assertEqual(sorted(d["id"] for d in got), sorted(ids[:2]))
        self.assertTrue(all(d["verified"] == [True] for d in got))
        ws.wait_endpoint(h.port, "dl", lambda e: e["dead_letters"] == 0 and e["pending"] == 0,
                         "replayed")
        status, body = ws.admin(h.port, "DELETE", "/admin/webhooks/dead-letters")
        self.assertEqual((status, body["purged"]), (200, 0))

    def test_admin_needs_admin(self):
        """/admin/webhooks is an admin endpoint: with admin_key set, no key is 401."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.node([ws.webhook_line(r.url(), [s])], ["admin_key k3y"])
        status, _, _ = hh.request(h.port, "GET", "/admin/webhooks")
        self.assertEqual(status, 401)
        status, _, body = hh.request(h.port, "GET", "/admin/webhooks",
                                     headers={"Authorization": "Bearer k3y"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["endpoints"][0]["name"], "webhook-1")


class TestIsolation(WebhookCase):
    def test_hung_receiver_never_delays_publishes_or_subscribers(self):
        """A receiver that never answers: publishes keep their latency and an SSE subscriber
        gets every message at once, while the endpoint's queue fills (and is bounded)."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.node([ws.webhook_line(r.url(), [s], name="hung")],
                      ["webhook_timeout 60s", "webhook_queue_size 100"])
        sub = SseStream(h.port, "/sse/h")
        self.addCleanup(sub.close)

        def measure(n, tag):
            lat = []
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
            try:
                for i in range(n):
                    t0 = time.monotonic()
                    publish(h.port, "h", "%s %d" % (tag, i), conn=conn)
                    lat.append(time.monotonic() - t0)
            finally:
                conn.close()
            return lat
        base = measure(200, "base")
        sub.events(200, timeout=20)
        r.control([], default="hang")
        time.sleep(0.3)
        hung = measure(400, "hung")
        t0 = time.monotonic()
        evs = sub.events(400, timeout=20)
        self.assertEqual(evs[-1].data, ["hung 399"])
        self.assertLess(time.monotonic() - t0, 2.0)
        ep = ws.wait_endpoint(h.port, "hung", lambda e: e["in_flight"] == 4, "4 hung requests")
        self.assertLessEqual(ep["pending"], 100)
        self.assertGreater(ep["dead_letters"], 0)
        p99 = lambda xs: sorted(xs)[int(len(xs) * 0.99)]  # noqa: E731
        sys.stderr.write("publish latency ms: receiver answering p50 %.2f p99 %.2f; hung p50 "
                         "%.2f p99 %.2f\n" % (statistics.median(base) * 1e3, p99(base) * 1e3,
                                              statistics.median(hung) * 1e3, p99(hung) * 1e3))
        self.assertLess(statistics.median(hung), statistics.median(base) * 2 + 0.005)
        self.assertLess(p99(hung), 0.25)

    def test_flood_bounded(self):
        """A flood of 8 KiB events to a receiver that never answers: pending stays at
        webhook_queue_size, dead letters at webhook_dead_letters, the bytes held under
        webhook_max_memory, the overflow counted; RSS grows by little; /healthz is served."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control([], default="hang")
        # ASan keeps freed memory in a 256 MB quarantine: a small one, so RSS means something
        asan = "abort_on_error=0:detect_leaks=1:quarantine_size_mb=8:malloc_context_size=5"
        h = self.start_herald(env={"ASAN_OPTIONS": asan}, overrides=FAST + [
            ws.webhook_line(r.url(), [s], name="f"), "webhook_timeout 60s",
            "webhook_queue_size 50", "webhook_dead_letters 200", "webhook_max_memory 1m",
            "max_body_size 4m", "history_size 0"])
        publish(h.port, "warm", "x")
        time.sleep(0.3)
        rss0 = h.rss_bytes()
        payload = "p" * 8192
        total = 0
        for b in range(10):
            items = [{"channel": "f%d" % i, "data": payload} for i in range(300)]
            status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                         {"Content-Type": "application/json"})
            self.assertEqual(status, 200, body[:200])
            total += len(items)
            self.assertServed(h.port)
        ep = ws.wait_endpoint(h.port, "f", lambda e: e["pending"] == 50, "queue at its bound")
        self.assertEqual(ep["in_flight"], 4)
        status, adm = ws.admin(h.port)
        self.assertLessEqual(adm["memory_bytes"], 1 << 20)
        self.assertLessEqual(adm["dead_letters"], 200)
        rss1 = h.rss_bytes()
        sys.stderr.write("flood of %d x 8 KiB events: RSS %d -> %d KiB, held %d bytes, %d dead "
                         "letters\n" % (total, rss0 >> 10, rss1 >> 10, adm["memory_bytes"],
                                        adm["dead_letters"]))
        self.assertLess(rss1 - rss0, 24 << 20)
        m = hh.request(h.port, "GET", "/metrics")[2].decode()
        dropped = [ln for ln in m.splitlines() if ln.startswith("herald_webhook_dropped_total")]
        counts = {ln.split('"')[1]: int(ln.split()[-1]) for ln in dropped}
        self.assertGreater(counts["memory"] + counts["dead_letters"], 0, counts)


class TestTargets(WebhookCase):
    def test_ssrf_refused_without_allow_private(self):
        """A loopback target is refused (no connection made) unless webhook_allow_private."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.start_herald(overrides=[ws.webhook_line(r.url(), [s], name="p"),
                                         "webhook_retry_window 0"])
        publish(h.port, "x", "y")
        ep = ws.wait_endpoint(h.port, "p", lambda e: e["dead_letters"] == 1, "refused")
        self.assertEqual(ep["failures"]["refused"], 1)
        self.assertIn("webhook_allow_private", ep["last_error"])
        self.assertEqual(r.deliveries(), [])

    def test_https_verified(self):
        """https: the receiver's certificate verified against webhook_tls_ca (name checked:
        127.0.0.1 in its subjectAltName); without that CA the handshake fails (tls)."""
        d = self.tmpdir()
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        s = ws.new_secret()
        r = ws.Receiver(self, [s], tls=(cert, key))
        h = self.node([ws.webhook_line(r.url(), [s], name="tls")],
                      ["webhook_tls_ca " + cert])
        publish(h.port, "x", "secure")
        got = r.wait_deliveries(1)
        self.assertEqual(got[0]["verified"], [True])
        h2 = self.node([ws.webhook_line(r.url(), [s], name="untrusted")],
                       ["webhook_retry_window 0"])
        publish(h2.port, "x", "not trusted")
        ep = ws.wait_endpoint(h2.port, "untrusted", lambda e: e["dead_letters"] == 1, "tls")
        self.assertEqual(ep["failures"]["tls"], 1, ep)
        self.assertIn("certificate", ep["last_error"])
        self.assertEqual(len(r.deliveries()), 1)

    def test_channel_lifecycle_events(self):
        """channel.occupied when a channel gets its first subscriber on the node, vacated when
        the last leaves (two subscribers on two workers: one event each)."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.node([ws.webhook_line(r.url(), [s], channels=["life:*"],
                                       events=["channel.occupied", "channel.vacated"])])
        a = SseStream(h.port, "/sse/life:1")
        b = SseStream(h.port, "/sse/life:1")
        got = r.wait_deliveries(1)
        publish(h.port, "life:1", "not a lifecycle event")
        a.close()
        time.sleep(0.3)
        self.assertEqual(len(r.deliveries()), 1)
        b.close()
        got = r.wait_deliveries(2)
        types = [json.loads(x["body"])["type"] for x in got]
        self.assertEqual(types, ["channel.occupied", "channel.vacated"])
        self.assertEqual(json.loads(got[0]["body"])["data"], {"channel": "life:1"})
        self.assertTrue(all(x["verified"] == [True] for x in got))


class TestMembers(WebhookCase):
    def test_member_added_and_removed_once_per_member(self):
        """Presence (embedded broker): a member with two tabs is added once (its first
        connection) and removed once (its last); a channel without presence sends nothing."""
        from test_presence import conf_text, connect, mint, run, subscribe
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        h = self.start_herald(conf_raw=conf_text(), overrides=list(FAST) + [
            ws.webhook_line(r.url(), [s], name="m", channels=["room:*", "plain:*"],
                            events=["member.added", "member.removed"])])

        async def go():
            tok = mint("ann", info={"name": "Ann"})
            t1 = await connect(h.port, tok)
            await subscribe(t1, "room:1")
            await subscribe(t1, "plain:1", ref="p")  # no presence there: no member event
            t2 = await connect(h.port, tok)
            await subscribe(t2, "room:1")
            r.wait_deliveries(1)
            await t1.close()
            await asyncio.sleep(0.3)
            self.assertEqual(len(r.deliveries()), 1)  # ann still has a tab
            await t2.close()
            r.wait_deliveries(2)
        run(go())
        time.sleep(0.3)
        got = r.deliveries()
        self.assertEqual(len(got), 2, got)
        bodies = [json.loads(d["body"]) for d in got]
        self.assertEqual([b["type"] for b in bodies], ["member.added", "member.removed"])
        for b in bodies:
            self.assertEqual(b["data"]["channel"], "room:1")
            self.assertEqual(b["data"]["member"], {"sub": "ann", "info": {"name": "Ann"}})
        self.assertEqual(len({d["id"] for d in got}), 2)
        self.assertTrue(all(d["verified"] == [True] for d in got))


class TestPipelining(WebhookCase):
    def test_pipelined_on_one_connection(self):
        """pipeline=8: a batch of 8 events behind a slow answer goes over one connection, in one
        write, each verified and answered in order; without it, the same batch opens a
        connection per event (the receiver, node's http server, takes both)."""
        s = ws.new_secret()
        piped, plain = ws.Receiver(self, [s]), ws.Receiver(self, [s])
        piped.control(["slow:400"])
        plain.control(["slow:400"])
        h = self.node([ws.webhook_line(piped.url(), [s], name="piped", channels=["p"]) +
                       " pipeline=8",
                       ws.webhook_line(plain.url(), [s], name="plain", channels=["q"])],
                      ["webhook_concurrency 8"])
        for ch in ("p", "q"):
            items = [{"channel": ch, "data": i} for i in range(8)]
            status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                         {"Content-Type": "application/json"})
            self.assertEqual(status, 200, body)
        got = piped.wait_deliveries(8)
        self.assertEqual(len(got), 8, got)
        self.assertTrue(all(d["verified"] == [True] for d in got), got)
        self.assertEqual(len({d["id"] for d in got}), 8)
        self.assertEqual(len({d["conn"] for d in got}), 1, got)
        # all 8 came before the first was answered: they were pipelined, not sent in turn
        self.assertLess(got[-1]["at_ms"] - got[0]["at_ms"], 350, got)
        ep = ws.wait_endpoint(h.port, "piped", lambda e: e["delivered"] == 8, "8 delivered")
        self.assertEqual((ep["attempts"], ep["pending"]), (8, 0))
        got = plain.wait_deliveries(8)
        self.assertEqual(len({d["conn"] for d in got}), 8, got)
        ws.wait_endpoint(h.port, "plain", lambda e: e["delivered"] == 8, "8 delivered")

    def test_pipelined_connection_lost_retries_the_rest(self):
        """A connection dropped with requests pipelined on it fails each of them (the receiver
        may or may not have them): every one is retried until answered, none is lost."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["slow:200", "drop"])
        h = self.node([ws.webhook_line(r.url(), [s], name="p") + " pipeline=8"],
                      ["webhook_concurrency 8"])
        items = [{"channel": "x", "data": i} for i in range(8)]
        status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                     {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        ep = ws.wait_endpoint(h.port, "p", lambda e: e["delivered"] == 8 and e["pending"] == 0,
                              "8 delivered", timeout=20)
        self.assertGreater(ep["attempts"], 8, ep)
        self.assertGreaterEqual(ep["failures"]["connect"], 1, ep)
        got = r.deliveries()
        ids = {json.loads(d["body"])["data"]["id"] for d in got}
        self.assertEqual(len(ids), 8, got)
        self.assertGreater(len({d["conn"] for d in got}), 1, got)


    def test_pipelined_behind_connection_close_sent_again(self):
        """Requests pipelined behind an answer saying Connection: close were not processed (RFC
        9112 9.6): they are sent again on a new connection, not failed (no failure counted, no
        backoff), and each attempt is counted once."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["close"])
        h = self.node([ws.webhook_line(r.url(), [s], name="p") + " pipeline=8"],
                      ["webhook_concurrency 8", "webhook_backoff_base 1h"])
        items = [{"channel": "x", "data": i} for i in range(8)]
        status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                     {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        ep = ws.wait_endpoint(h.port, "p", lambda e: e["delivered"] == 8 and e["pending"] == 0,
                              "8 delivered (a retry would wait an hour)")
        self.assertEqual(ep["attempts"], 8, ep)
        self.assertEqual(sum(ep["failures"].values()), 0, ep)
        got = r.deliveries()
        self.assertEqual(got[0]["answer"], "close")
        self.assertGreater(len({d["conn"] for d in got}), 1, got)


class TestConf(hh.HeraldTestCase):
    def test_conf_errors_name_file_line_directive(self):
        d = self.tmpdir()
        good = ws.new_secret()
        cases = [
            ("webhook ftp://x/ secret=%s" % good, "expected an http:// or https:// URL"),
            ("webhook http://x/", "secret=whsec_... is required"),
            ("webhook http://x/ secret=abc", "whsec_"),
            ("webhook http://x/ secret=whsec_AAAA", "16..64"),
            ("webhook http://u:p@x/ secret=%s" % good, "no user info"),
            ("webhook http://x/ secret=%s events=message.deleted" % good, "unknown event"),
            ("webhook http://x/ secret=%s channels=a b" % good, "unknown option"),
            ("webhook http://x/ secret=%s channels=*x" % good, "bad channel pattern"),
            ("webhook http://x:99999/ secret=%s" % good, "bad port"),
            ("webhook http://x/ secret=%s name=dead-letters" % good, "not dead-letters"),
            ("webhook http://x/ secret=%s pipeline=0" % good, "1..256, not \"0\""),
            ("webhook http://x/ secret=%s pipeline=300" % good, "1..256, not \"300\""),
        ]
        for line, why in cases:
            path = os.path.join(d, "h.conf")
            with open(path, "w") as f:
                f.write("# a comment\n%s\n" % line)
            status, out, err = hh.run_herald(["-t", "-c", path], timeout=20)
            self.assertEqual(status, hh.EXIT_CONF, (line, err))
            self.assertIn("%s:2: webhook: " % path, err, line)
            self.assertIn(why, err, line)
            self.assertNotIn(good, err)
        with open(path, "w") as f:
            f.write("webhook http://a/ name=x secret=%s\nwebhook http://b/ name=x secret=%s\n"
                    % (good, good))
        status, _, err = hh.run_herald(["-t", "-c", path], timeout=20)
        self.assertEqual(status, hh.EXIT_CONF)
        self.assertIn(":2: webhook: name \"x\" given twice", err)


if __name__ == "__main__":
    hh.main()
