# SPDX-License-Identifier: MIT
"""Receipts across nodes past their bound (docs/chat.md, "Receipts across nodes"): a node sends
at most 4,096 receipts to other nodes that Redis has not answered; past it they are dropped and
counted, never queued. Two herald nodes on a real redis-server (Debian's), clients on
python3-websockets, tokens from python3-jwt.

The attack: 20 members on node B, subscribed with "ack", each hold 256 receipted messages of a
publisher on node A unacked (the per-connection bound, WS_MAX_DUE); Redis hangs (SIGSTOP, its
connections open, shorter than redis_timeout: the node does not take it for lost) and every
member acks its last message at once: 5,120 "acked" receipts for node A. Exactly 4,096 are sent
(the PUBLISHes Redis has not answered) and 1,024 dropped and counted (receipts_dropped,
herald_receipts_dropped_total); once Redis goes on, the publisher gets exactly 4,096 "acked"
receipts, and no more come. Node B's memory stayed bounded, it answered /healthz while Redis
hung, and a subscriber of another channel on node B still receives afterwards.
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402
import redis_support as rs  # noqa: E402  (tests/integration)
from test_acks import (  # noqa: E402  (tests/integration)
    IO, conf_text, member, messages, mint, quiet_receipts, receipts_until, run)

MEMBERS = 20
PER_MEMBER = 256  # WS_MAX_DUE: receipts a connection holds awaiting its ack
BOUND = 4096  # RCPT_IN_FLIGHT_MAX: receipts to other nodes Redis has not answered


class ReceiptFlood(AbuseTestCase):
    def assertServed(self, port, within=2.0):
        """A fresh /healthz answers 200 {"status":"ok","redis":"connected"} within `within` s
        (hh.healthz_ok expects the embedded broker's body)."""
        t0 = time.monotonic()
        st, _, body = hh.request(port, "GET", "/healthz", timeout=within)
        took = time.monotonic() - t0
        self.assertEqual((st, json.loads(body)), (200, {"status": "ok", "redis": "connected"}),
                         body)
        self.assertLessEqual(took, within, "/healthz took %.2f s" % took)

    def node(self, redis):
        extra = {"max_queue_bytes": "16m", "ws_ping_interval": "1h", "ws_idle_timeout": "1h"}
        h = self.start_herald(conf_raw=conf_text(extra),
                              overrides=["redis unix://" + redis.sock, "redis_timeout 30s"])
        hh.require_websocket(h.port, "/ws")
        return h

    def test_receipts_past_the_bound_are_dropped_and_counted(self):
        redis = rs.start_redis(self)
        na, nb = self.node(redis), self.node(redis)

        async def go():
            pub = await hh.ws_connect(na.port, "/ws?token=" + mint("pub"), max_queue=None)
            other, _ = await member(nb.port, "oli", "room:other", ack=False)
            members = [(await member(nb.port, "m%d" % i, "room:flood"))[0]
                       for i in range(MEMBERS)]
            for i in range(PER_MEMBER):
                await pub.send(json.dumps({"op": "publish", "channel": "room:flood",
                                           "data": "m%d" % i, "receipt": True}))
            ids = []
            for m in members:
                got = await messages(m, PER_MEMBER)
                ids.append(got[-1]["id"])
            self.assertEqual(len(set(ids)), 1, ids)
            # one "delivered" per message, from node B: every PUBLISH of them answered
            early = await receipts_until(
                pub, lambda r: sum(x["status"] == "delivered" for x in r) >= PER_MEMBER)
            self.assertEqual([x for x in early if x["status"] != "delivered"], [])
            base = hh.stats(nb.port)["receipts_dropped"]
            self.assertEqual(base, 0)
            rss = RssSampler(nb)
            redis.pause()
            try:
                for m in members:
                    await m.send(json.dumps({"op": "ack", "channel": "room:flood",
                                             "id": ids[0]}))
                want = MEMBERS * PER_MEMBER - BOUND
                await asyncio.to_thread(
                    hh.wait_for, lambda: (rss.sample(), hh.stats(nb.port))[1]
                    ["receipts_dropped"] >= want, IO, "node B to drop the receipts past 4,096")
                await asyncio.sleep(0.3)
                self.assertEqual(hh.stats(nb.port)["receipts_dropped"], want)
                self.assertServed(nb.port)
                self.assertRegex(hh.request(nb.port, "GET", "/metrics")[2].decode(),
                                 r"herald_receipts_dropped_total %d\b" % want)
            finally:
                redis.resume()
            # what was sent arrives, and only that: exactly the bound
            acked = await receipts_until(
                pub, lambda r: sum(x["status"] == "acked" for x in r) >= BOUND, timeout=30)
            acked += await quiet_receipts(pub, 0)
            acked = [x for x in acked if x["status"] == "acked"]
            self.assertEqual(len(acked), BOUND)
            self.assertLessEqual({x["id"] for x in acked}, {x["id"] for x in early})
            self.assertEqual(hh.stats(nb.port)["receipts_dropped"], want)
            rss.sample()
            self.assertRssBounded(rss, 32 * MB, "5,120 receipts with Redis hung")
            # other clients are still served, through Redis too
            mid = hh.publish(na.port, "room:other", "after")
            self.assertEqual([m["id"] for m in await messages(other, 1)], [mid])
            for c in [pub, other] + members:
                await c.close()

        run(go(), timeout=120)


if __name__ == "__main__":
    hh.main()
