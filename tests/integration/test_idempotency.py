# SPDX-License-Identifier: MIT
"""Idempotent publishing with the embedded broker: a publish retried with the same
Idempotency-Key (POST /pub/{channel}), batch key (header, "<key>#<index>" per item, or an item's
own "idempotency_key") or /ws "idempotency_key" within idempotency_window gets the first id and is
published once; a bad key is 400 (/ws: bad_idempotency_key); idempotency_window 0 turns it off.
The Redis side is in test_redis.py (retries on the same node and on another one).
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import request  # noqa: E402


def pub(port, channel, body, key=None):
    hdrs = {"Content-Type": "text/plain"}
    if key is not None:
        hdrs["Idempotency-Key"] = key
    st, _, data = request(port, "POST", "/pub/" + channel, body.encode(), hdrs)
    return st, json.loads(data)


def history(port, channel):
    st, _, data = request(port, "GET", "/poll/%s?since=0-0" % channel)
    assert st == 200, (st, data)
    return [(m["id"], m["data"]) for m in json.loads(data)["messages"]]


class IdempotencyTest(hh.HeraldTestCase):
    def setUp(self):
        hh.herald_bin()

    def test_single_publish_retried(self):
        h = self.start_herald(conf={"ws_client_publish": "on"})
        st, first = pub(h.port, "i", "one", key="order-17")
        self.assertEqual(st, 200)
        for _ in range(3):
            st, again = pub(h.port, "i", "one", key="order-17")
            self.assertEqual((st, again["id"]), (200, first["id"]))
        # the same key on another channel is another publish; no key is always a new one
        st, other = pub(h.port, "j", "one", key="order-17")
        self.assertNotEqual(other["id"], first["id"])
        st, a = pub(h.port, "i", "two")
        st, b = pub(h.port, "i", "two")
        self.assertEqual(history(h.port, "i"),
                         [(first["id"], "one"), (a["id"], "two"), (b["id"], "two")])
        for bad in ("", "has space", "x" * 129, "caf\u00e9"):
            st, _, body = request(h.port, "POST", "/pub/i", b"z",
                                  {"Idempotency-Key": bad.encode("utf-8")})
            self.assertEqual(st, 400, bad)
            self.assertIn(b"Idempotency-Key", body)
        self.assertEqual(len(history(h.port, "i")), 3)

    def test_batch_keys(self):
        h = self.start_herald()
        items = [{"channel": "b1", "data": "a"}, {"channel": "b2", "data": "b"},
                 {"channel": "b1", "data": "c", "idempotency_key": "own"}]
        hdrs = {"Idempotency-Key": "batch-1"}
        st, _, data = request(h.port, "POST", "/pub", json.dumps(items).encode(), hdrs)
        self.assertEqual(st, 200, data)
        ids = [m["id"] for m in json.loads(data)["messages"]]
        # the retry of the whole batch publishes nothing
        st, _, data = request(h.port, "POST", "/pub", json.dumps(items).encode(), hdrs)
        self.assertEqual([m["id"] for m in json.loads(data)["messages"]], ids)
        # an item's own key holds without the header too; item 0 of another request key is new
        st, _, data = request(h.port, "POST", "/pub", json.dumps(items[2:]).encode())
        self.assertEqual([m["id"] for m in json.loads(data)["messages"]], ids[2:])
        self.assertEqual(history(h.port, "b1"), [(ids[0], "a"), (ids[2], "c")])
        self.assertEqual(history(h.port, "b2"), [(ids[1], "b")])
        # a key repeated inside one batch is one publish
        twice = [{"channel": "b3", "data": "x", "idempotency_key": "k"}] * 2
        st, _, data = request(h.port, "POST", "/pub", json.dumps(twice).encode())
        got = [m["id"] for m in json.loads(data)["messages"]]
        self.assertEqual(got[0], got[1])
        self.assertEqual(len(history(h.port, "b3")), 1)
        bad = [{"channel": "b1", "data": "x", "idempotency_key": 5}]
        st, _, data = request(h.port, "POST", "/pub", json.dumps(bad).encode())
        self.assertEqual(st, 400)
        self.assertIn(b"item 0", data)

    def test_window_off(self):
        h = self.start_herald(conf={"idempotency_window": "0"})
        st, a = pub(h.port, "o", "x", key="k")
        st, b = pub(h.port, "o", "x", key="k")
        self.assertNotEqual(a["id"], b["id"])

    def test_window_ends(self):
        h = self.start_herald(conf={"idempotency_window": "1s"})
        st, a = pub(h.port, "w", "x", key="k")
        self.assertEqual(pub(h.port, "w", "x", key="k")[1]["id"], a["id"])
        time.sleep(2.2)
        st, b = pub(h.port, "w", "x", key="k")
        self.assertNotEqual(b["id"], a["id"])

    def test_ws_publish(self):
        h = self.start_herald(conf={"ws_client_publish": "on"})

        async def go():
            async with hh.ws_connect(h.port, "/ws") as ws:
                async def call(obj):
                    await ws.send(json.dumps(obj))
                    return json.loads(await asyncio.wait_for(ws.recv(), 10))
                msg = {"op": "publish", "channel": "ws", "data": "d", "idempotency_key": "w-1"}
                a = await call(msg)
                b = await call(msg)
                self.assertEqual((a["type"], b["type"]), ("published", "published"))
                self.assertEqual(a["id"], b["id"])
                r = await call(dict(msg, idempotency_key="bad key", ref=4))
                self.assertEqual((r["type"], r["code"], r["ref"]),
                                 ("error", "bad_idempotency_key", 4))
                return a["id"]
        wid = asyncio.run(go())
        self.assertEqual(history(h.port, "ws"), [(wid, "d")])
        # the HTTP retry of the /ws publish with the same key finds it too
        self.assertEqual(pub(h.port, "ws", "d", key="w-1")[1]["id"], wid)


if __name__ == "__main__":
    hh.main()
