# SPDX-License-Identifier: MIT
"""Acknowledged delivery and delivery receipts on /ws (docs/chat.md), against the real binary
with python3-websockets, two workers, tokens minted by python3-jwt.

Covered: a subscription made with "ack":true takes cumulative acks ({"op":"ack"}, answered
"acked" when it carries a ref) and refuses clearly what it cannot take (an unknown channel, a
subscription without "ack", an id ahead of what was sent, an id of another epoch, a malformed
id); a client that received without acking and reconnects with "since" its last acked id gets
the unacked messages again and never the acked ones, on /ws and on herald.v1 /ws/{channel}
with ?ack=1 ({"type":"ack"} is never published). A publish with "receipt":true gets exactly
one "delivered" receipt (not for the publisher's own copy; from history too, once a subscriber
resumes) and one "acked" receipt per member connection that acks it, with the acker's sub and
connection, cumulative acks covering several messages; members without "ack" send none.
Limits: at most 256 messages awaiting an ack per connection: a subscriber that never acks 300
receipted messages holds 256 (receipts_dropped counts the rest, /metrics too) and its one ack
releases exactly 256 receipts; "receipt" with "ephemeral" or not a boolean is refused.
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402

hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

SECRET = "acks-test-secret-of-more-than-32-bytes-long"
IO = 10.0
RULES = ["room:* subscribe=auth publish=subscriber"]


def conf_text(extra=None):
    return hh.conf_with_rules({"auth_jwt_secret": SECRET, "ws_client_publish": "on"}, RULES,
                              extra)


def mint(sub):
    return hh.jwt_token(SECRET, sub)


run = hh.run_async
recv_json = hh.ws_recv_json
recv_until = hh.ws_recv_until
request = hh.ws_request  # sends req with a ref: (the reply to it, what came before)


async def member(port, sub, channel, ack=True, since=None):
    ws = await hh.ws_connect(port, "/ws?token=" + mint(sub))
    req = {"op": "subscribe", "channel": channel}
    if ack:
        req["ack"] = True
    if since:
        req["since"] = since
    rep, seen = await request(ws, req)
    assert rep["type"] == "subscribed", rep
    return ws, [m for m in seen if m.get("type") == "message"]


async def messages(ws, n, timeout=IO):
    out = []
    while len(out) < n:
        m = await recv_json(ws, timeout)
        if m.get("type") == "message":
            out.append(m)
    return out


async def receipts_until(ws, pred, timeout=IO):
    """Receipts received until pred(the list so far) holds."""
    out = []
    deadline = time.monotonic() + timeout
    while not pred(out):
        m = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m.get("type") == "receipt":
            out.append(m)
    return out


async def quiet_receipts(ws, want):
    """The receipts up to the want-th "acked" one, then those that came before the "delivered"
    receipt of a marker published afterwards (any duplicate would be among them)."""
    rs = await receipts_until(ws, lambda rs: sum(m["status"] == "acked" for m in rs) >= want)
    rep, seen = await request(ws, {"op": "publish", "channel": "room:marker", "data": "marker",
                                   "receipt": True})
    rs += [m for m in seen if m.get("type") == "receipt"]
    # nobody subscribes to room:marker: a ping round trip and a short wait instead
    await asyncio.sleep(0.3)
    rep, seen = await request(ws, {"op": "ping"})
    return rs + [m for m in seen if m.get("type") == "receipt"]


class Acks(hh.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf_raw=conf_text())
        cls.port = cls.h.port
        hh.require_websocket(cls.port, "/ws")

    def test_ack_errors(self):
        async def go():
            ws, _ = await member(self.port, "eve", "room:err")
            plain, _ = await member(self.port, "eve", "room:plain", ack=False)
            mid = hh.publish(self.port, "room:err", "one")
            got = await messages(ws, 1)
            self.assertEqual(got[0]["id"], mid)
            epoch, seq = mid.split("-")
            cases = [
                ({"channel": "room:none", "id": mid}, "not_subscribed"),
                ({"channel": "room:err", "id": "nope"}, "bad_id"),
                ({"channel": "room:err"}, "bad_id"),
                ({"channel": "room:err", "id": "%s-%d" % (epoch, int(seq) + 1000)}, "ack_ahead"),
                ({"channel": "room:err", "id": "zz%s-1" % epoch}, "bad_id"),
                ({"channel": "bad channel", "id": mid}, "bad_channel"),
            ]
            for req, code in cases:
                rep, _ = await request(ws, dict(req, op="ack"))
                self.assertEqual((rep["type"], rep["code"]), ("error", code), (req, rep))
                self.assertTrue(rep["error"])
            rep, _ = await request(plain, {"op": "ack", "channel": "room:plain", "id": mid})
            self.assertEqual(rep["code"], "ack_off", rep)
            rep, _ = await request(ws, {"op": "subscribe", "channel": "room:x", "ack": 1})
            self.assertEqual(rep["code"], "bad_ack", rep)
            # a good one, twice (cumulative: the second changes nothing), and an older one
            for _ in range(2):
                rep, _ = await request(ws, {"op": "ack", "channel": "room:err", "id": mid})
                self.assertEqual(rep, {"type": "acked", "channel": "room:err", "id": mid,
                                       "ref": rep["ref"]})
            rep, _ = await request(ws, {"op": "ack", "channel": "room:err", "id": epoch + "-1"})
            self.assertEqual(rep["type"], "acked", rep)
            # without a ref: silent
            await ws.send(json.dumps({"op": "ack", "channel": "room:err", "id": mid}))
            rep, seen = await request(ws, {"op": "ping"})
            self.assertEqual((rep["type"], seen[:-1]), ("pong", []))
            await ws.close()
            await plain.close()
        run(go())

    def test_replay_from_last_ack(self):
        async def go():
            ws, _ = await member(self.port, "fay", "room:replay")
            ids = [hh.publish(self.port, "room:replay", "m%d" % i) for i in range(5)]
            got = await messages(ws, 5)
            self.assertEqual([m["id"] for m in got], ids)
            # processed the first two only: ack the second, then the connection drops
            rep, _ = await request(ws, {"op": "ack", "channel": "room:replay", "id": ids[1]})
            self.assertEqual(rep["type"], "acked")
            await ws.close()
            # resumed from the last ack: the three unacked again, the acked never
            ws, hist = await member(self.port, "fay", "room:replay", since=ids[1])
            self.assertEqual([m["id"] for m in hist], ids[2:])
            self.assertEqual([m["data"] for m in hist], ["m2", "m3", "m4"])
            # acks go on from there on the new connection
            rep, _ = await request(ws, {"op": "ack", "channel": "room:replay", "id": ids[4]})
            self.assertEqual(rep["type"], "acked", rep)
            await ws.close()
            ws, hist = await member(self.port, "fay", "room:replay", since=ids[4])
            self.assertEqual(hist, [])
            await ws.close()
        run(go())

    def test_herald_v1_acks(self):
        async def go():
            tok = mint("gus")
            v1 = await hh.ws_connect(self.port, "/ws/room:v1?ack=1&token=" + tok,
                                     subprotocols=["herald.v1"])
            ids = [hh.publish(self.port, "room:v1", "v%d" % i) for i in range(3)]
            got = [await recv_json(v1) for _ in range(3)]
            self.assertEqual([m["id"] for m in got], ids)
            await v1.send(json.dumps({"type": "ack", "id": ids[0]}))
            await v1.send(json.dumps({"type": "ack", "id": "x"}))
            err = await recv_json(v1)
            self.assertEqual((err["type"], err["code"]), ("error", "bad_id"), err)
            await v1.close()
            # the acks were not published: the channel holds the three messages only
            st, poll, _ = hh.get_json(self.port, "/poll/room:v1?since=%s-0&token=%s"
                                      % (ids[0].split("-")[0], tok))
            self.assertEqual([m["id"] for m in poll["messages"]], ids)
            v1 = await hh.ws_connect(self.port, "/ws/room:v1?ack=1&since=%s&token=%s"
                                     % (ids[0], tok), subprotocols=["herald.v1"])
            got = [await recv_json(v1) for _ in range(2)]
            self.assertEqual([m["id"] for m in got], ids[1:])
            await v1.close()
            # ?ack=1 needs herald.v1; a bad value is refused
            for path in ("/ws/room:v1?ack=1", "/ws/room:v1?ack=maybe"):
                st, _, _ = hh.request(self.port, "GET", path + "&token=" + tok, headers={
                    "Upgrade": "websocket", "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
                self.assertEqual(st, 400, path)
        run(go())

    def test_receipts(self):
        async def go():
            pub = await hh.ws_connect(self.port, "/ws?token=" + mint("pat"))
            rep, _ = await request(pub, {"op": "subscribe", "channel": "room:rc"})
            bob, _ = await member(self.port, "bob", "room:rc")
            cat, _ = await member(self.port, "cat", "room:rc")
            dan, _ = await member(self.port, "dan", "room:rc", ack=False)
            ids = []
            early = []
            for i in range(3):
                rep, seen = await request(pub, {"op": "publish", "channel": "room:rc",
                                                "data": "hi %d" % i, "receipt": True})
                self.assertEqual(rep["type"], "published", rep)
                ids.append(rep["id"])
                early += [m for m in seen if m.get("type") == "receipt"]
            rs = early + await receipts_until(pub, lambda rs: len(early) + len(rs) >= 3)
            self.assertEqual(sorted((m["id"], m["status"]) for m in rs),
                             [(i, "delivered") for i in ids])
            self.assertIn({"type": "receipt", "channel": "room:rc", "id": ids[0],
                           "status": "delivered"}, rs)
            for c in (bob, cat, dan):
                self.assertEqual([m["id"] for m in await messages(c, 3)], ids)
            # bob acks the first, then all three at once; cat the last only (cumulative)
            await bob.send(json.dumps({"op": "ack", "channel": "room:rc", "id": ids[0]}))
            await bob.send(json.dumps({"op": "ack", "channel": "room:rc", "id": ids[2]}))
            await cat.send(json.dumps({"op": "ack", "channel": "room:rc", "id": ids[2]}))
            await dan.send(json.dumps({"op": "ack", "channel": "room:rc", "id": ids[2]}))
            rs = await quiet_receipts(pub, 6)
            acked = sorted((m["member"]["sub"], m["id"]) for m in rs if m["status"] == "acked")
            self.assertEqual(acked, sorted([("bob", i) for i in ids] + [("cat", i) for i in ids]))
            self.assertFalse([m for m in rs if m["status"] != "acked"], rs)
            one = [m for m in rs if m["member"]["sub"] == "bob"][0]
            self.assertEqual(set(one), {"type", "channel", "id", "status", "member", "conn"})
            self.assertRegex(one["conn"], r"^[0-9a-f]{8}-[0-9a-f]+$")
            # bob's acks came in order: the first, then the other two
            self.assertEqual([m["id"] for m in rs if m["member"]["sub"] == "bob"], ids)
            for c in (pub, bob, cat, dan):
                await c.close()
        run(go())

    def test_receipts_from_history_and_none_for_self(self):
        async def go():
            pub = await hh.ws_connect(self.port, "/ws?token=" + mint("pia"))
            rep, _ = await request(pub, {"op": "subscribe", "channel": "room:hist"})
            rep, seen = await request(pub, {"op": "publish", "channel": "room:hist",
                                            "data": "early", "receipt": True})
            mid = rep["id"]
            # only the publisher is subscribed: its own copy is no delivery
            if not [m for m in seen if m.get("type") == "message"]:
                m, _ = await recv_until(pub, lambda m: m.get("type") == "message")
                self.assertEqual(m["id"], mid)
            rep, seen = await request(pub, {"op": "ping"})
            self.assertFalse([x for x in seen if x.get("type") == "receipt"], seen)
            # a member resuming from before it: delivered (from history), then acked
            epoch = mid.split("-")[0]
            late, hist = await member(self.port, "lee", "room:hist", since=epoch + "-0")
            self.assertIn(mid, [x["id"] for x in hist])
            rs = await receipts_until(pub, lambda rs: len(rs) >= 1)
            self.assertEqual([(m["id"], m["status"]) for m in rs], [(mid, "delivered")])
            await late.send(json.dumps({"op": "ack", "channel": "room:hist", "id": mid}))
            rs = await quiet_receipts(pub, 1)
            self.assertEqual([(m["id"], m["status"], m["member"]) for m in rs],
                             [(mid, "acked", {"sub": "lee"})])
            await late.close()
            await pub.close()
        run(go())

    def test_receipt_refusals(self):
        async def go():
            pub = await hh.ws_connect(self.port, "/ws?token=" + mint("ray"))
            for extra in ({"receipt": True, "ephemeral": True}, {"receipt": "yes"}):
                rep, _ = await request(pub, dict({"op": "publish", "channel": "room:ref",
                                                  "data": 1}, **extra))
                self.assertEqual((rep["type"], rep["code"]), ("error", "bad_data"), rep)
            await pub.close()
        run(go())


class AckLimits(hh.HeraldTestCase):
    def test_due_receipts_bounded(self):
        h = self.start_herald(conf_raw=conf_text({"client_publish_rate": "0"}))
        hh.require_websocket(h.port, "/ws")
        n = 300

        async def go():
            pub = await hh.ws_connect(h.port, "/ws?token=" + mint("pam"))
            lazy, _ = await member(h.port, "liz", "room:lim")
            last = None
            for i in range(n):
                await pub.send(json.dumps({"op": "publish", "channel": "room:lim",
                                           "data": i, "receipt": True, "ref": i}))
            _, seen = await recv_until(pub, lambda m: m.get("ref") == n - 1)
            last = [m for m in seen if m.get("ref") == n - 1][0]["id"]
            got = await messages(lazy, n)
            self.assertEqual(got[-1]["id"], last)
            hh.wait_for(lambda: hh.stats(h.port)["receipts_dropped"] == n - 256, IO,
                        "receipts past the 256 due were dropped")
            rep, _ = await request(lazy, {"op": "ack", "channel": "room:lim", "id": last})
            self.assertEqual(rep["type"], "acked")
            rs = await quiet_receipts(pub, 256)
            acked = [m["id"] for m in rs if m["status"] == "acked"]
            ids = [m["id"] for m in got]
            self.assertEqual(acked, ids[n - 256:])  # the latest 256, in order
            st, _, body = hh.request(h.port, "GET", "/metrics")
            self.assertIn("herald_receipts_dropped_total %d\n" % (n - 256), body.decode())
            await lazy.close()
            await pub.close()
        run(go())


if __name__ == "__main__":
    hh.main()
