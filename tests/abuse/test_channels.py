# SPDX-License-Identifier: MIT
"""Channel creation: batches of fresh channel names must not grow the node without bound.

Before max_channels and byte-exact accounting, `POST /pub` with 10,000-item batches to fresh
names made 300,000 channels and +404 MB in 3.2 s, while max_memory (payloads only) never
evicted anything. Here:
- with a channel budget, batches to fresh names well past it are refused (507, the limit named)
  while the channels that exist keep publishing and delivering, and RSS stays within 64 MB;
- with a large budget and a small max_memory, the bytes of channels themselves make the
  coldest ones go, so memory is bounded by max_memory alone.
"""
import asyncio
import http.client
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402
from herald_harness import stats  # noqa: E402

BATCH = 10000
# A 10,000-item batch of small messages to fresh names, about 0.3 MB of JSON.
MAX_BODY = "2m"


def fresh_batch(prefix, n=BATCH):
    return json.dumps([{"channel": "%s-%d" % (prefix, i), "data": "x"} for i in range(n)])


def metric(port, name):
    status, _, body = hh.request(port, "GET", "/metrics")
    assert status == 200, status
    m = re.search(r"^%s (\d+)$" % re.escape(name), body.decode(), re.M)
    if not m:
        raise AssertionError("no %s in /metrics" % name)
    return int(m.group(1))


class ChannelFlood(AbuseTestCase):
    def post_batch(self, conn, port, body):
        return hh.request(port, "POST", "/pub", body, {"Content-Type": "application/json"},
                          conn=conn, timeout=30)

    async def ws_subscribe(self, port, channel):
        """A subscribe on /ws (the JSON protocol): the first reply."""
        async with hh.ws_connect(port, "/ws") as ws:
            await ws.send(json.dumps({"op": "subscribe", "channel": channel}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    def assertBudgetRefusal(self, status, hdrs, body, what):
        self.assertEqual(status, 507, "%s: %d %r" % (what, status, body[:200]))
        doc = json.loads(body)
        self.assertEqual(doc["limit"], "max_channels", doc)
        self.assertEqual(doc["status"], 507, doc)
        self.assertIn("max_channels", doc["error"])

    def test_budget_refuses_new_channels_and_keeps_existing_ones(self):
        budget = 25000
        h = self.start_herald(conf={"max_channels": budget, "max_body_size": MAX_BODY})
        port = h.port
        # Channels in use before the attack: one with a live subscriber, one with history.
        hh.publish(port, "hot", "h1")
        hh.publish(port, "hot", "h2")
        sub = hh.SseStream(port, "/sse/live")
        self.addCleanup(sub.close)
        self.assertEqual(sub.status, 200)
        hh.wait_for(lambda: stats(port)["channels"] == 2, what="the subscriber's channel")
        mark = h.mark()
        sampler = RssSampler(h)

        # The attack: 12 batches of 10,000 fresh names (120,000 channels asked, 4.8x the budget),
        # on one keep-alive connection: a count, not a time, so a loaded machine runs it all.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.addCleanup(conn.close)
        accepted = refused = 0
        for b in range(12):
            status, hdrs, body = self.post_batch(conn, port, fresh_batch("flood%d" % b))
            sampler.sample()
            if status == 200:
                accepted += 1
                self.assertEqual(refused, 0, "a batch accepted after one was refused")
            else:
                self.assertBudgetRefusal(status, hdrs, body, "batch %d" % b)
                refused += 1
        print("channel flood: %d batches accepted, %d refused; RSS +%.1f MB (peak), base %.1f MB"
              % (accepted, refused, sampler.growth() / MB, sampler.base / MB))
        # 2 + 2 x 10,000 channels fit 25,000; the third batch would need 10,000 more: all or
        # nothing, so none of it is made.
        self.assertEqual((accepted, refused), (2, 10))
        self.assertEqual(stats(port)["channels"], 2 + 2 * BATCH)
        # What is left of the budget can still be used, to the last channel.
        left = budget - (2 + 2 * BATCH)
        status, _, body = self.post_batch(conn, port, fresh_batch("rest", left))
        self.assertEqual(status, 200, body[:200])
        self.assertEqual(stats(port)["channels"], budget)

        # A single publish and a subscription that would make a channel are refused alike.
        status, hdrs, body = hh.request(port, "POST", "/pub/one-more", "x",
                                        {"Content-Type": "text/plain"})
        self.assertBudgetRefusal(status, hdrs, body, "publish")
        fresh = hh.SseStream(port, "/sse/one-more-sub")
        self.addCleanup(fresh.close)
        self.assertBudgetRefusal(fresh.status, fresh.headers, fresh.body, "SSE subscribe")
        reply = asyncio.run(self.ws_subscribe(port, "one-more-ws"))
        self.assertEqual((reply["type"], reply["code"], reply["channel"]),
                         ("error", "limit_reached", "one-more-ws"), reply)
        self.assertIn("max_channels", reply["error"])

        # Existing channels are untouched: the live subscriber still receives, history is whole.
        hh.publish(port, "live", "still here")
        ev = sub.next_event()
        self.assertEqual(ev.data, ["still here"])
        status, body, _ = hh.get_json(port, "/poll/hot?since=0-0")
        self.assertEqual(status, 200)
        self.assertEqual([m["data"] for m in body["messages"]], ["h1", "h2"])
        status, body, _ = hh.get_json(port, "/poll/flood0-9999?since=0-0")
        self.assertEqual([m["data"] for m in body["messages"]], ["x"])
        self.assertServed(port)

        # Counted and logged: one refusal per refused request, the log rate-limited.
        self.assertEqual(metric(port, "herald_channels_refused_total"), refused + 3)
        self.assertEqual(stats(port)["channels_refused"], refused + 3)
        h.wait_log(r"new channels refused: max_channels \(25000\) reached", start=mark)
        self.assertLessEqual(h.count_log(r"new channels refused", start=mark), 4)

        # RSS: 25,000 channels with a message each (about 0.5 KiB charged apiece) and the
        # batches in flight, far from the +404 MB the same flood cost before.
        self.assertRssBounded(sampler, 64 * MB, "12 batches of 10,000 fresh channels")
        self.assertLess(stats(port)["broker_memory_bytes"], 16 * MB)

    def test_max_memory_counts_channels(self):
        max_memory = 4 * MB
        h = self.start_herald(conf={"max_channels": 1000000, "max_memory": "4m",
                                    "max_body_size": MAX_BODY})
        port = h.port
        sampler = RssSampler(h)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.addCleanup(conn.close)
        batches = 12  # 120,000 channels, more than ten times what 4 MB holds
        for b in range(batches):
            status, _, body = self.post_batch(conn, port, fresh_batch("m%d" % b))
            self.assertEqual(status, 200, body[:200])
            sampler.sample()
        s = stats(port)
        print("max_memory flood: %d channels, %d bytes charged, %d evicted; RSS +%.1f MB"
              % (s["channels"], s["broker_memory_bytes"], s["channels_evicted"],
                 sampler.growth() / MB))
        # Payloads are 1 byte each: only counting the channels themselves can reach 4 MB.
        self.assertLessEqual(s["broker_memory_bytes"], max_memory)
        self.assertLess(s["channels"], max_memory // 400)
        # every channel made is either still there or was evicted
        self.assertEqual(s["channels"] + s["channels_evicted"], batches * BATCH, s)
        # The most recently published channels kept their history.
        status, body, _ = hh.get_json(port, "/poll/m%d-9999?since=0-0" % (batches - 1))
        self.assertEqual([m["data"] for m in body["messages"]], ["x"])
        self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "120,000 fresh channels under max_memory 4m")


if __name__ == "__main__":
    hh.main()
