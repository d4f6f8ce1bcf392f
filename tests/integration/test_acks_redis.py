# SPDX-License-Identifier: MIT
"""Delivery receipts across nodes sharing a real redis-server (docs/chat.md, "Delivery
receipts"): two herald nodes, clients on python3-websockets, tokens from python3-jwt.

Covered: a publisher on node A asks receipts; subscribers acking on node B (through Redis) and
on node A (the copy from Redis, no hop back) both send theirs, and the publisher gets exactly one
"delivered" per message although both nodes delivered it, one "acked" per acking member
connection, with the acker's sub and its connection on its own node; a member on node B
resuming from history (Redis's stream keeps the receipt tag) acks and the receipt reaches A; a
message published without receipts has no tag in Redis; receipts_dropped stays 0. With Redis
lost, a receipt for another node is dropped and counted (receipts_dropped, /metrics).
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
from herald_harness import run_async as run, ws_request as request  # noqa: E402
from test_acks import (  # noqa: E402
    IO, conf_text, member, messages, mint, quiet_receipts, receipts_until)


class ReceiptsCluster(hh.HeraldTestCase):
    def node(self, redis):
        h = self.start_herald(conf_raw=conf_text(), overrides=["redis unix://" + redis.sock])
        hh.require_websocket(h.port, "/ws")
        return h

    def test_receipts_across_nodes(self):
        redis = rs.start_redis(self)
        na, nb = self.node(redis), self.node(redis)

        async def go():
            pub = await hh.ws_connect(na.port, "/ws?token=" + mint("pat"))
            bob, _ = await member(nb.port, "bob", "room:x")  # another node
            cat, _ = await member(na.port, "cat", "room:x")  # the publisher's node
            ids, early = [], []
            for i in range(2):
                rep, seen = await request(pub, {"op": "publish", "channel": "room:x",
                                                "data": "hi %d" % i, "receipt": True})
                self.assertEqual(rep["type"], "published", rep)
                ids.append(rep["id"])
                early += [m for m in seen if m.get("type") == "receipt"]
            plain, seen = await request(pub, {"op": "publish", "channel": "room:x", "data": "p"})
            early += [m for m in seen if m.get("type") == "receipt"]
            for c in (bob, cat):
                self.assertEqual([m["id"] for m in await messages(c, 3)], ids + [plain["id"]])
            rs_ = early + await receipts_until(pub, lambda r: len(early) + len(r) >= 2)
            await bob.send(json.dumps({"op": "ack", "channel": "room:x", "id": plain["id"]}))
            await cat.send(json.dumps({"op": "ack", "channel": "room:x", "id": ids[1]}))
            rs_ += await quiet_receipts(pub, 4)
            # both nodes delivered each message: the publisher hears "delivered" once each
            self.assertEqual(sorted(m["id"] for m in rs_ if m["status"] == "delivered"), ids)
            acked = sorted((m["member"]["sub"], m["id"]) for m in rs_ if m["status"] == "acked")
            self.assertEqual(acked, sorted([("bob", i) for i in ids] + [("cat", i) for i in ids]))
            conns = {m["member"]["sub"]: m["conn"] for m in rs_ if m["status"] == "acked"}
            self.assertNotEqual(conns["bob"].split("-")[0], conns["cat"].split("-")[0],
                                "bob's ack came from the other node")
            # a member of node B resuming from history: Redis kept where receipts go
            epoch = ids[0].split("-")[0]
            lee, hist = await member(nb.port, "lee", "room:x", since=epoch + "-0")
            self.assertEqual([m["id"] for m in hist], ids + [plain["id"]])
            await lee.send(json.dumps({"op": "ack", "channel": "room:x", "id": ids[0]}))
            rs_ = await quiet_receipts(pub, 1)
            self.assertEqual([(m["id"], m["member"]["sub"]) for m in rs_
                              if m["status"] == "acked"], [(ids[0], "lee")])
            for c in (pub, bob, cat, lee):
                await c.close()
            return ids, plain["id"]

        ids, plain = run(go())
        # the tag is stored with the messages that asked, and only with them
        out = redis.cli("--raw", "XRANGE", "herald:ch:room:x", "-", "+").split("\n")
        self.assertEqual(out.count("r"), 2, out)
        for n in (na, nb):
            st, stats, _ = hh.get_json(n.port, "/stats")
            self.assertEqual((st, stats["receipts_dropped"]), (200, 0), stats)

    def test_receipts_dropped_while_redis_lost(self):
        """A receipt for another node while Redis is lost is dropped and counted, never held."""
        redis = rs.start_redis(self)
        na, nb = self.node(redis), self.node(redis)

        async def go():
            pub = await hh.ws_connect(na.port, "/ws?token=" + mint("pam"))
            bob, _ = await member(nb.port, "bob", "room:lost")
            rep, _ = await request(pub, {"op": "publish", "channel": "room:lost", "data": "x",
                                         "receipt": True})
            self.assertEqual([m["id"] for m in await messages(bob, 1)], [rep["id"]])
            await receipts_until(pub, lambda r: len(r) >= 1)  # "delivered", from node B
            redis.kill()
            hh.wait_for(lambda: hh.request(nb.port, "GET", "/healthz")[0] == 503, IO,
                        "node B to see Redis lost")
            # the PUBLISH of "delivered" may not have been answered when Redis went: counted
            base = hh.stats(nb.port)["receipts_dropped"]
            self.assertLessEqual(base, 1)
            await bob.send(json.dumps({"op": "ack", "channel": "room:lost", "id": rep["id"]}))
            hh.wait_for(lambda: hh.stats(nb.port)["receipts_dropped"] == base + 1, IO,
                        "the acked receipt dropped on node B")
            await asyncio.sleep(0.2)
            self.assertEqual(hh.stats(nb.port)["receipts_dropped"], base + 1)
            self.assertRegex(hh.request(nb.port, "GET", "/metrics")[2].decode(),
                             r"herald_receipts_dropped_total %d\b" % (base + 1))
            for c in (pub, bob):
                await c.close()
        run(go())


if __name__ == "__main__":
    hh.main()
