# SPDX-License-Identifier: MIT
"""Attacks on the Redis bridge (and on idempotency keys), against the real binary and a real
redis-server (Debian's), each bounded in count and time:

- fresh channel names in 10,000-item batches: before the budget in the Function, 460k keys and
  ~1 GB of Redis memory in 20 s. Now Redis keys stay within max_channels (cluster-wide), new
  names get 507 on every node, existing channels keep publishing and delivering;
- 10,000-item batches from several clients at once: each FCALL stays short, the heartbeat has
  its own connection, so no node loses Redis and publishes on the other node never get 503;
- resumes from the start of a deep history: each read of Redis is bounded (1000 messages), so
  twenty resumes of a 20,000-message history do not make the node hold the history twenty times;
- 100,000 unique idempotency keys (embedded broker): the table stays within
  max_memory/16, the node within its bound.
Each asserts RSS stayed bounded and other clients were still served.
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402
import test_redis as tr  # noqa: E402  (tests/integration: the redis-server wrapper)

BATCH = 10000


def batch(names, data="x", **extra):
    return json.dumps([dict({"channel": n, "data": data}, **extra) for n in names]).encode()


def redis_used_memory(redis):
    return int([line for line in redis.cli("INFO", "memory").splitlines()
                if line.startswith("used_memory:")][0].split(":")[1])


class RedisAbuse(AbuseTestCase):
    def setUp(self):
        hh.require_executable(tr.REDIS_SERVER, "redis-server")
        hh.require_executable(tr.REDIS_CLI, "redis-cli")
        hh.herald_bin()

    def start_redis(self):
        r = tr.Redis(self.tmpdir())
        self.addCleanup(r.close)
        return r.start()

    def node(self, redis, **conf):
        c = {"history_size": "1000", "max_body_size": "2m"}
        c.update(conf)
        return self.start_herald(conf=c, overrides=["redis redis://127.0.0.1:%d/0" % redis.port,
                                                    "redis_timeout 1s"])

    def assertServed(self, port, within=2.0):
        """A fresh /healthz answers 200 {"status":"ok","redis":"connected"} within `within` s
        (hh.healthz_ok expects the embedded broker's body)."""
        t0 = time.monotonic()
        st, _, body = hh.request(port, "GET", "/healthz", timeout=within)
        took = time.monotonic() - t0
        self.assertEqual((st, json.loads(body).get("status")), (200, "ok"), body)
        self.assertLessEqual(took, within, "/healthz took %.2f s" % took)

    def assertNoReconnect(self, *nodes):
        for n in nodes:
            _, body, _ = hh.get_json(n.port, "/stats")
            self.assertEqual(body["broker_reconnects"], 0, "node on %d lost Redis" % n.port)

    def test_fresh_channel_flood_bounded_in_redis(self):
        redis = self.start_redis()
        budget = 20002  # two batches, "hot" and "live" (channels with history)
        a, b = self.node(redis, max_channels=budget), self.node(redis, max_channels=budget)
        hh.publish(b.port, "hot", "h1")
        hh.publish(b.port, "live", "l1")
        sub = hh.SseStream(b.port, "/sse/live")
        self.addCleanup(sub.close)
        time.sleep(0.2)
        samplers = [RssSampler(a), RssSampler(b)]
        refused = ok = 0
        used_at_budget = None
        for k in range(8):  # 80,000 fresh names asked, 4x the budget: a count, not a time
            st, _, body = hh.request(a.port, "POST", "/pub",
                                     batch("f%d-%d" % (k, i) for i in range(BATCH)), timeout=60)
            if st == 200:
                ok += 1
            else:
                self.assertEqual(st, 507, body[:200])
                self.assertIn(b"max_channels", body)
                refused += 1
                if used_at_budget is None:
                    used_at_budget = redis_used_memory(redis)
            for s in samplers:
                s.sample()
        self.assertEqual((ok, refused), (2, 6), "two batches fit the budget, no other")
        keys = int(redis.cli("DBSIZE"))
        self.assertLess(keys, 2 * budget + 100, "Redis keys beyond the budget")
        # once the budget is spent, the attack costs Redis nothing more
        grown = redis_used_memory(redis) - used_at_budget
        self.assertLess(grown, 8 * MB, "Redis memory grew by %.1f MB past the budget" %
                        (grown / MB))
        # the other node refuses new names too (the budget is cluster-wide) ...
        self.assertEqual(hh.request(b.port, "POST", "/pub/newcomer", b"x")[0], 507)
        # ... and existing channels keep working, live subscriber included
        hh.publish(b.port, "hot", "h2")
        lid = hh.publish(a.port, "live", "still here")
        ev = sub.next_event()
        self.assertEqual((ev.id, ev.text), (lid, "still here"))
        for n, s in zip((a, b), samplers):
            self.assertRssBounded(s, 64 * MB, "fresh channel flood")
            self.assertServed(n.port)
        self.assertNoReconnect(a, b)

    def test_concurrent_big_batches_keep_heartbeat(self):
        redis = self.start_redis()
        a, b = self.node(redis), self.node(redis)
        sub = hh.SseStream(a.port, "/sse/beat")
        self.addCleanup(sub.close)
        time.sleep(0.2)
        samplers = [RssSampler(a), RssSampler(b)]
        body = batch("busy%d" % (i % 200) for i in range(BATCH))
        errors = []

        def flood():
            for _ in range(3):
                st, _, data = hh.request(a.port, "POST", "/pub", body, timeout=60)
                if st != 200:
                    errors.append((st, data[:200]))

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        beats = []
        end = time.monotonic() + 30
        while any(t.is_alive() for t in threads) and time.monotonic() < end:
            st, _, data = hh.request(b.port, "POST", "/pub/beat", b"b")
            self.assertEqual(st, 200, data)  # never a 503: b never loses Redis
            beats.append(json.loads(data)["id"])
            for s in samplers:
                s.sample()
            time.sleep(0.05)
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        got = [e.id for e in sub.events(len(beats), timeout=20)]
        self.assertEqual(got, beats)
        self.assertNoReconnect(a, b)
        for n, s in zip((a, b), samplers):
            self.assertRssBounded(s, 64 * MB, "concurrent 10,000-item batches")
            self.assertServed(n.port)

    def test_deep_history_resumes_bounded(self):
        redis = self.start_redis()
        a = self.node(redis, history_size="20000", history_max_bytes="64m")
        payload = "y" * 200
        first = None
        for k in range(20):  # 20,000 messages, 4 MB of payload in history
            st, _, data = hh.request(a.port, "POST", "/pub",
                                     batch(["deep"] * 1000, data=payload), timeout=30)
            self.assertEqual(st, 200, data[:200])
            first = first or json.loads(data)["messages"][0]["id"]
        sampler = RssSampler(a)
        streams = []
        for _ in range(20):  # each resume asks for all 20,000
            s = hh.SseStream(a.port, "/sse/deep", headers={"Last-Event-ID": first})
            self.addCleanup(s.close)
            streams.append(s)
            sampler.sample()
        for s in streams:
            ev = s.next_event()
            self.assertEqual(ev.event, "herald-gap", "the older part is reported as a gap")
        sampler.watch(1.0)
        self.assertRssBounded(sampler, 48 * MB, "20 resumes of a 20,000-message history")
        self.assertServed(a.port)
        # a poll pages through it: at most 1000 per read, `next` continues without a gap
        st, _, data = hh.request(a.port, "GET", "/poll/deep?since=" + first)
        j = json.loads(data)
        self.assertFalse(j["gap"])
        self.assertLessEqual(len(j["messages"]), 1000)

    def test_idempotency_key_flood_embedded(self):
        h = self.start_herald(conf={"max_memory": "16m", "max_body_size": "4m"})
        served = super().assertServed
        first = hh.publish(h.port, "k", "x", headers={"Idempotency-Key": "key-0"})
        sampler = RssSampler(h)
        for k in range(10):  # 100,000 unique keys of 100 bytes, 1 MB of them many times over
            body = json.dumps([{"channel": "k", "data": "x",
                                "idempotency_key": "%s-%d-%d" % ("z" * 80, k, i)}
                               for i in range(BATCH)]).encode()
            st, _, data = hh.request(h.port, "POST", "/pub", body, timeout=60)
            self.assertEqual(st, 200, data[:200])
            sampler.sample()
        self.assertRssBounded(sampler, 48 * MB, "100,000 idempotency keys")
        # the table held max_memory/16: the oldest key was forgotten, its retry is new
        again = hh.publish(h.port, "k", "x", headers={"Idempotency-Key": "key-0"})
        self.assertNotEqual(again, first)
        served(h.port)


if __name__ == "__main__":
    hh.main()
