# SPDX-License-Identifier: MIT
"""A hung Redis, through the real binary: redis-server is stopped with SIGSTOP (its sockets stay
open, nothing is closed or reset: only redis_timeout can tell), while two herald nodes have
live SSE and WebSocket subscribers and a held long poll, and a publisher keeps publishing.

Within redis_timeout (plus a heartbeat period) each node declares the connection lost: publishes
and new SSE, WebSocket and poll subscriptions get 503 with Retry-After, /healthz says degraded,
and the subscribers already connected stay connected. After SIGCONT the nodes reconnect by
themselves and every message that was acknowledged (200) reaches every subscriber once, in
order; a publish answered 503 while its command sat in the stopped server's socket may show up
too (the documented "may or may not have been applied"), never twice and never out of order.
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
import test_redis as tr  # noqa: E402  (its SSE and WebSocket collectors)
from herald_harness import publish, request, wait_for  # noqa: E402

TIMEOUT_S = 1.0  # redis_timeout of the nodes
HANG_S = 3.0  # how long Redis stays stopped once both nodes noticed


class PacedPublisher(threading.Thread):
    """Publishes "p0", "p1", ... every `pause` seconds until stopped (at most `limit`), each
    once (no retry): records (id, body) for a 200, (status, Retry-After, body) otherwise."""

    def __init__(self, port, channel, pause=0.05, limit=400):
        super().__init__(daemon=True)
        self.port, self.channel, self.pause, self.limit = port, channel, pause, limit
        self.acked, self.rejected, self.errors = [], [], []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.start()

    def run(self):
        for i in range(self.limit):
            if self.stopping.is_set():
                return
            body = "p%d" % i
            try:
                st, hdrs, data = request(self.port, "POST", "/pub/" + self.channel, body,
                                         {"Content-Type": "text/plain"})
            except OSError as e:
                self.errors.append(repr(e))
                continue
            with self.lock:
                if st == 200:
                    self.acked.append((json.loads(data)["id"], body))
                else:
                    self.rejected.append((st, hdrs.get("Retry-After"), body))
            time.sleep(self.pause)

    def counts(self):
        with self.lock:
            return len(self.acked), len(self.rejected)

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), "the publisher did not stop"


class TestHungRedis(hh.HeraldTestCase):
    def setUp(self):
        rs.require_redis()
        hh.require_websockets()

    def node(self, redis):
        return self.start_herald(conf={"history_size": "1000"}, workers=2, overrides=[
            "redis unix://" + redis.sock, "redis_timeout %dms" % (TIMEOUT_S * 1000)])

    def assert503(self, st, hdrs, body, what):
        self.assertEqual(st, 503, "%s: %r" % (what, body))
        retry = hdrs.get("Retry-After")
        self.assertTrue(retry and retry.isdigit() and int(retry) >= 1,
                        "%s: 503 without a Retry-After (%r)" % (what, retry))

    def ws_handshake(self, port, path):
        with hh.Client(port) as c:
            c.send(hh.ws_handshake_request(path))
            return c.read_response()

    def test_sigstop_then_sigcont(self):
        redis = rs.start_redis(self)
        a, b = self.node(redis), self.node(redis)
        subs = {"sse on A": tr.SseCollector(a.port, "/sse/hung"),
                "sse on B": tr.SseCollector(b.port, "/sse/hung"),
                "ws on B": tr.WsCollector(b.port, "/ws/hung")}
        self.addCleanup(lambda: [s.stop() if hasattr(s, "stop") else s.close()
                                 for s in subs.values()])
        wait_for(lambda: all(hh.stats(n.port)["subscriptions"] == k for n, k in ((a, 1), (b, 2))),
                 what="the subscriptions")
        # A long poll held across the hang, on a channel nothing is published to until after.
        lp = []
        lpt = threading.Thread(target=lambda: lp.append(
            request(a.port, "GET", "/lp/hung-lp?timeout=60", timeout=70)), daemon=True)
        lpt.start()
        wait_for(lambda: hh.stats(a.port)["subscriptions"] == 2, what="the long poll")
        pub = PacedPublisher(a.port, "hung")
        self.addCleanup(pub.stop)
        wait_for(lambda: pub.counts()[0] >= 5, what="publishes before the hang")

        marks = [n.mark() for n in (a, b)]
        t0 = time.monotonic()
        redis.pause()
        self.addCleanup(lambda: redis.stopped and redis.resume())
        for n in (a, b):
            wait_for(lambda: request(n.port, "GET", "/healthz")[0] == 503,
                     timeout=TIMEOUT_S + 3, what="node on %d to notice the hung Redis" % n.port)
        noticed = time.monotonic() - t0
        # The heartbeat is due every redis_timeout/3 and must come back within redis_timeout.
        self.assertLess(noticed, TIMEOUT_S * 2 + 1.0, "hung Redis noticed after %.1f s" % noticed)
        for n, m in zip((a, b), marks):
            # Not a closed socket (there is none): the timeout or the heartbeat said so.
            self.assertIsNotNone(n.find_log(r"redis .*(no answer within redis_timeout|heartbeat "
                                            r"lost)", m), n.log_tail())

        # While it hangs: every new subscription and publish is refused with a Retry-After...
        for n in (a, b):
            st, hdrs, body = request(n.port, "POST", "/pub/hung", "refused")
            self.assert503(st, hdrs, body, "publish")
            st, hdrs, body = request(n.port, "GET", "/poll/hung")
            self.assert503(st, hdrs, body, "poll")
            sse = hh.SseStream(n.port, "/sse/hung2")
            self.assert503(sse.status, hh.Headers(sse.headers.items()), sse.body, "new SSE")
            sse.close()
            r = self.ws_handshake(n.port, "/ws/hung2")
            self.assert503(r.status, hh.Headers(r.headers), r.body, "new WebSocket")
            st, body, _ = hh.get_json(n.port, "/healthz")
            self.assertEqual((st, body.get("status")), (503, "degraded"), body)
        # ... and the subscribers already there stay connected.
        self.assertEqual([hh.stats(n.port)["subscriptions"] for n in (a, b)], [2, 2])
        time.sleep(max(0.0, HANG_S - (time.monotonic() - t0 - noticed)))
        self.assertEqual([hh.stats(n.port)["subscriptions"] for n in (a, b)], [2, 2])
        self.assertEqual(lp, [], "the held long poll was answered while Redis hung")
        self.assertFalse(any(s.closed for s in subs.values() if hasattr(s, "closed")))

        redis.resume()
        for n in (a, b):
            wait_for(lambda: request(n.port, "GET", "/healthz")[0] == 200, timeout=15,
                     what="node on %d back" % n.port)
        lp_id = publish(b.port, "hung-lp", "after the hang")
        lpt.join(15)
        st, _, data = lp[0]
        self.assertEqual(st, 200, data)
        self.assertEqual([(m["id"], m["data"]) for m in json.loads(data)["messages"]],
                         [(lp_id, "after the hang")])
        acked_at_resume = pub.counts()[0]
        wait_for(lambda: pub.counts()[0] >= acked_at_resume + 5, what="publishes after")
        pub.stop()
        self.assertEqual(pub.errors, [])
        self.assertGreater(len(pub.rejected), 0, "no publish was refused while Redis hung")
        for st, retry, body in pub.rejected:
            self.assertEqual(st, 503, body)
            self.assertTrue(retry and retry.isdigit(), "503 without Retry-After")
        acked = pub.acked
        rejected_bodies = {body for _, _, body in pub.rejected}
        for what, s in subs.items():
            wait_for(lambda: set(acked) <= set(s.wait_messages(len(acked), 0.5)
                                               if hasattr(s, "wait_messages")
                                               else s.messages()),
                     timeout=15, what="%s to get every acknowledged message" % what)
            got = s.messages()
            ids = [i for i, _ in got]
            self.assertEqual(len(ids), len(set(ids)), "%s: a message twice" % what)
            self.assertEqual(len({d for _, d in got}), len(got), "%s: a body twice" % what)
            seqs = [tr.parse_id(i) for i in ids]
            self.assertEqual(seqs, sorted(seqs), "%s: out of order" % what)
            self.assertEqual([x for x in got if x in acked], acked, "%s: acknowledged" % what)
            extra = [x[1] for x in got if x not in acked]
            self.assertTrue(set(extra) <= rejected_bodies,
                            "%s: messages nobody published: %r" % (what, extra))
        # Whatever went in while it hung, the nodes are whole: a fresh subscriber resumes.
        st, body, _ = hh.get_json(b.port, "/poll/hung?since=0-0")
        self.assertEqual(st, 200)
        polled = [(m["id"], m["data"]) for m in body["messages"]]
        self.assertEqual([x for x in polled if x in acked][:len(acked)],
                         [x for x in acked if x in polled])


if __name__ == "__main__":
    hh.main()
