# SPDX-License-Identifier: MIT
"""Attacks on subscriptions: many per connection and across connections (max_subscriptions_per_
connection, max_subscriptions), and held-back history (a resume with `since`) piled up by a
client that never reads, then dropped on unsubscribe or counted against max_queue_bytes.

Each attack is bounded in count and time; afterwards resident memory stayed within its bound,
other clients were served, and a subscriber that was live before the attack still receives.
"""
import asyncio
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402
from herald_harness import stats  # noqa: E402

IO = 10.0


def batch_publish(port, channel, n, size):
    """n messages of `size` bytes to channel in one POST /pub; returns the first id."""
    items = [{"channel": channel, "data": "%06d" % i + "x" * (size - 6)} for i in range(n)]
    status, _, data = hh.request(port, "POST", "/pub", json.dumps(items),
                                 {"Content-Type": "application/json"}, timeout=60)
    if status != 200:
        raise AssertionError("batch publish: %d %r" % (status, data[:200]))
    return json.loads(data)["messages"][0]["id"]


class LiveSubscriber:
    """A /ws/{channel} subscriber opened before the attack: it must still receive after it."""

    def __init__(self, port, channel):
        self.port, self.channel = port, channel
        self.ws = hh.RawWS(port, "/ws/" + channel)

    def check(self, test):
        body = "still here %f" % time.monotonic()
        hh.publish(self.port, self.channel, body)
        op, payload = self.ws.recv_data(IO)
        test.assertEqual(payload.decode(), body)

    def close(self):
        self.ws.close()


class SubscriptionLimits(AbuseTestCase):
    def start(self, **conf):
        c = {"log_level": "info", "ws_ping_interval": "1h", "ws_idle_timeout": "1h"}
        c.update(conf)
        self.h = self.start_herald(conf=c)
        self.port = self.h.port
        self.live = LiveSubscriber(self.port, "live")
        self.addCleanup(self.live.close)
        hh.wait_for(lambda: stats(self.port)["subscriptions"] == 1, what="the live subscriber")

    def test_many_subscriptions_per_connection_and_node(self):
        """12 /ws connections each ask for 100 channels: each holds at most 64, the node at most
        max_subscriptions; every refusal is an error reply naming its limit, counted and
        logged; SSE, long poll and /ws/{channel} get 503 with Retry-After at the node limit;
        all of it is given back when the connections close."""
        self.start(max_subscriptions="400")
        sampler = RssSampler(self.h)
        n_conns, per_conn = 12, 100

        async def attack():
            conns = [await hh.ws_connect(self.port, "/ws") for _ in range(n_conns)]
            for k, ws in enumerate(conns):
                for i in range(per_conn):
                    await ws.send(json.dumps({"op": "subscribe", "channel": "a%d-%d" % (k, i),
                                              "ref": i}))
            replies = []
            for ws in conns:
                for _ in range(per_conn):
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), IO)))
            return conns, replies

        async def main():
            conns, replies = await attack()
            try:
                subscribed = [r for r in replies if r["type"] == "subscribed"]
                errors = [r for r in replies if r["type"] == "error"]
                self.assertEqual(len(subscribed) + len(errors), n_conns * per_conn)
                self.assertEqual(len(subscribed), 399)  # the budget, less the live subscriber
                self.assertEqual({e["code"] for e in errors}, {"too_many_subscriptions"})
                texts = {e["error"] for e in errors}
                self.assertTrue(any("max_subscriptions_per_connection" in t for t in texts), texts)
                self.assertIn("subscription limit reached (max_subscriptions)", texts)
                per = {}
                for r in subscribed:
                    k = r["channel"].split("-")[0]
                    per[k] = per.get(k, 0) + 1
                self.assertLessEqual(max(per.values()), 64, per)
                s = stats(self.port)
                self.assertEqual(s["subscriptions"], 400)
                refused = s["subscriptions_refused"]
                self.assertGreater(refused["max_subscriptions"], 0)
                self.assertGreater(refused["max_subscriptions_per_connection"], 0)
                self.assertEqual(sum(refused.values()), len(errors))
                # every transport is refused the same way at the node limit
                for path in ("/sse/fresh", "/lp/fresh?timeout=1", "/sse?channel=x&channel=y"):
                    st, hdrs, data = hh.request(self.port, "GET", path)
                    self.assertEqual(st, 503, (path, data))
                    self.assertTrue(hdrs.get("Retry-After", "").isdigit(), path)
                    self.assertIn(b"max_subscriptions", data)
                with hh.Client(self.port) as c:
                    c.send(hh.ws_handshake_request("/ws/fresh"))
                    r = c.read_response()
                    self.assertEqual(r.status, 503)
                    self.assertIn(b"max_subscriptions", r.body)
                st, _, data = hh.request(self.port, "GET", "/metrics")
                self.assertIn(b"\nherald_subscriptions 400\n", data)
                self.assertIn(b'herald_subscriptions_refused_total{limit="max_subscriptions"} ',
                              data)
                self.h.wait_log(r"subscriptions refused in the last 10 s")
                # the node still serves, and a subscriber from before still receives
                self.assertServed(self.port)
                self.live.check(self)
            finally:
                for ws in conns:
                    await ws.close()

        asyncio.run(asyncio.wait_for(main(), 60))
        hh.wait_for(lambda: stats(self.port)["subscriptions"] == 1, what="subscriptions freed")
        st, _, _ = hh.request(self.port, "GET", "/lp/fresh?timeout=0.1")
        self.assertEqual(st, 200)
        self.live.check(self)
        self.assertRssBounded(sampler, 32 * MB, "12 connections x 100 subscriptions")

    def test_sse_channels_per_stream(self):
        """An SSE stream naming more channels than max_subscriptions_per_connection gets 400
        naming the directive; up to the limit is fine."""
        self.start(max_subscriptions_per_connection="8")
        path = "/sse?" + "&".join("channel=s%d" % i for i in range(9))
        st, _, data = hh.request(self.port, "GET", path)
        self.assertEqual(st, 400)
        self.assertIn(b"max_subscriptions_per_connection", data)
        s = hh.SseStream(self.port, "/sse?" + "&".join("channel=s%d" % i for i in range(8)))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        self.assertEqual(stats(self.port)["subscriptions_refused"]
                         ["max_subscriptions_per_connection"], 1)


class HeldBackHistory(AbuseTestCase):
    def start(self, **conf):
        c = {"log_level": "info", "ws_ping_interval": "1h", "ws_idle_timeout": "1h"}
        c.update(conf)
        self.h = self.start_herald(conf=c, workers=1)
        self.port = self.h.port
        self.live = LiveSubscriber(self.port, "live")
        self.addCleanup(self.live.close)

    def test_since_then_unsubscribe_holds_nothing(self):
        """A client that never reads subscribes with `since` to a channel holding 10,000
        messages and unsubscribes, 300 times (about 45 KB of input): what was held back for
        each subscription is dropped with it, so memory stays flat and the client, once it
        reads, gets no history of a channel it left beyond what was already written."""
        self.start(history_size="10000", poll_max_messages="10000", max_queue_bytes="1m")
        first = batch_publish(self.port, "h", 10000, 8)
        sampler = RssSampler(self.h)
        ws = hh.RawWS(self.port, "/ws", rcvbuf=4096)
        self.addCleanup(ws.close)
        cycles = 300
        # Every cycle holds and drops 10,000 messages of history: about 5 s in all for the ASan
        # build on an idle machine, three times that on a loaded one.
        deadline = time.monotonic() + 60
        # Each subscription must be live (its history held back) before it is dropped, or the
        # attack tests nothing: an unsubscribe read in the same pass as its subscribe (both in
        # one read, as a sleep allows when the server is slow) ends it while it waits for the
        # broker's reply, before any history is held. So the client waits until the channel's
        # subscriber count (the broker's, moved as the worker handles each request) shows the
        # subscribe handled, and the unsubscribe too before the next cycle. With one worker and
        # the embedded broker the reply runs in the pass that handled the subscribe, before
        # /channels can answer, so "1" means live.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO)
        self.addCleanup(conn.close)

        def subscribers():
            status, _, data = hh.request(self.port, "GET", "/channels/h", conn=conn)
            self.assertEqual(status, 200, data)
            return json.loads(data)["subscribers"]

        def until_subscribers(n, what):
            hh.wait_for(lambda: subscribers() == n, timeout=IO, interval=0.001, what=what)

        for i in range(cycles):
            ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
                {"op": "subscribe", "channel": "h", "since": first})))
            until_subscribers(1, "subscribe %d handled" % i)
            ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "unsubscribe", "channel": "h"})))
            until_subscribers(0, "unsubscribe %d handled" % i)
            if i % 20 == 0:
                sampler.sample()
            self.assertLess(time.monotonic(), deadline, "attack took too long")
        sampler.watch(1.0)
        self.assertServed(self.port)
        self.live.check(self)
        # ASan build: +15 MB after 60 cycles, +21 MB after 600 (its quarantine included): flat.
        self.assertRssBounded(sampler, 32 * MB, "300 x (subscribe since + unsubscribe)")
        # Now read everything: the replies of every request, and history only from replays
        # that were written before the socket filled.
        messages = subscribed = unsubscribed = 0
        while unsubscribed < cycles:
            op, payload = ws.recv_data(IO)
            t = json.loads(payload)["type"]
            if t == "message":
                messages += 1
            elif t == "subscribed":
                subscribed += 1
            else:
                self.assertEqual(t, "unsubscribed")
                unsubscribed += 1
        self.assertEqual(subscribed, cycles, "not every subscription went live")
        self.assertLess(messages, 30 * 9999, "held-back history was not dropped")


    def test_history_of_many_subscriptions_counts(self):
        """A client that never reads subscribes with `since` to 8 channels of 300 KB history
        each: history held back beyond max_queue_bytes (1 MB) for several subscriptions makes
        it a slow consumer (1013); memory stays bounded and others are served."""
        self.start(history_size="100", max_message_size="64k", max_queue_bytes="1m")
        firsts = [batch_publish(self.port, "big%d" % k, 100, 3000) for k in range(8)]
        sampler = RssSampler(self.h)
        before = stats(self.port)["slow_subscribers_dropped"]
        ws = hh.RawWS(self.port, "/ws", rcvbuf=4096)
        self.addCleanup(ws.close)
        for k, first in enumerate(firsts):
            ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
                {"op": "subscribe", "channel": "big%d" % k, "since": first})))
        hh.wait_for(lambda: stats(self.port)["slow_subscribers_dropped"] > before,
                    what="the client let go as a slow consumer")
        self.assertEqual(ws.expect_close(IO)[0], 1013)
        self.assertServed(self.port)
        self.live.check(self)
        self.assertRssBounded(sampler, 24 * MB, "8 subscriptions with 300 KB of history each")

    def test_one_replay_larger_than_the_queue_completes(self):
        """One subscription's history may exceed max_queue_bytes: it is paced by the reader and
        arrives whole."""
        self.start(history_size="100", max_message_size="64k", max_queue_bytes="64k")
        first = batch_publish(self.port, "one", 100, 3000)
        ws = hh.RawWS(self.port, "/ws")
        self.addCleanup(ws.close)
        ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
            {"op": "subscribe", "channel": "one", "since": first})))
        got = [json.loads(ws.recv_data(IO)[1]) for _ in range(100)]
        self.assertEqual([m["type"] for m in got], ["message"] * 99 + ["subscribed"])


if __name__ == "__main__":
    hh.main()
