# SPDX-License-Identifier: MIT
"""WebSocket transport (GET /ws/{channel}, herald.v1, the GET /ws JSON protocol) against the real
binary.

Clients: Debian's python3-websockets (a client nobody here wrote) for everything a well-behaved
client does, raw sockets (herald_harness.RawWS) for malformed frames, exact fragmentation and
close codes, and npm `ws` (installed by scripts/deps.sh test; its absence fails). Messages are
published over HTTP (POST /pub).
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,  # noqa: E402
                            Publisher, RawWS, request, stats, ws_url)
from herald_harness import WS_GUID as GUID, WS_RFC_ACCEPT as RFC_ACCEPT  # noqa: E402
from herald_harness import WS_RFC_KEY as RFC_KEY  # noqa: E402
from herald_harness import ws_close_payload as close_payload, ws_frame as frame  # noqa: E402
from herald_harness import ws_connect as connect  # noqa: E402
from herald_harness import ws_handshake_request as handshake_request  # noqa: E402

import websockets  # noqa: E402  (python3-websockets)

ID_RE = re.compile(r"^([0-9a-z]+)-([0-9]+)$")


def seq_of(i):
    m = ID_RE.match(i or "")
    if not m:
        raise AssertionError("not a message id: %r" % (i,))
    return int(m.group(2))


# ---- HTTP side ----

def find_key(obj, key):
    """The first value named key anywhere in a JSON document (stats layouts nest)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find_key(v, key)
            if r is not None:
                return r
    return None


# ---- python3-websockets helpers ----

def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_n(ws, n, timeout=10):
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(ws.recv(), timeout))
    return out


async def close_code_of(ws, timeout=10):
    """Waits for the server to close ws; returns (code, reason) of its close frame."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        if e.rcvd is None:
            return None, None
        return e.rcvd.code, e.rcvd.reason


class WebSocketTest(hh.HeraldTestCase):
    conf = {}

    def setUp(self):
        conf = {"log_level": "info", "ws_ping_interval": "30s", "ws_idle_timeout": "60s"}
        conf.update(self.conf)
        self.h = self.start_herald(conf=conf)
        self.port = self.h.port
        self.pub = Publisher(self.port)
        self.addCleanup(lambda: self.pub.close())

    def tearDown(self):
        self.assertHealthy(self.port)

    def reconf(self, **kw):
        """Restarts the server with more conf lines (a fresh process per configuration)."""
        self.h.stop()
        conf = {"log_level": "info", "ws_ping_interval": "30s", "ws_idle_timeout": "60s"}
        conf.update(self.conf)
        conf.update(kw)
        self.h = self.start_herald(conf=conf)
        self.port = self.h.port
        self.pub.close()
        self.pub = Publisher(self.port)


# ---- delivery, order, resume ----

class Delivery(WebSocketTest):
    def test_text_and_binary(self):
        async def go():
            async with connect(self.port, "/ws/news") as ws:
                self.pub("news", "héllo wörld")
                self.pub("news", b"\x00\x01\xfe\xff", "application/octet-stream")
                self.pub("news", '{"a":1}', "application/json")
                self.pub("news", b"")
                got = await recv_n(ws, 4)
            self.assertEqual(got, ["héllo wörld", b"\x00\x01\xfe\xff", '{"a":1}', ""])
        run(go())

    def test_order_200(self):
        async def go():
            async with connect(self.port, "/ws/order") as ws:
                for i in range(200):
                    self.pub("order", "m%d" % i)
                got = await recv_n(ws, 200)
            self.assertEqual(got, ["m%d" % i for i in range(200)])
        run(go())

    def test_resume_no_loss_no_dup_across_workers(self):
        """Several clients (spread over source addresses, so both workers serve some) read part
        of a stream, disconnect, miss messages, and resume with ?since (or ?last_event_id): each
        sees every message exactly once, in order."""
        async def go():
            conns = [await connect(self.port, "/ws/resume", local_addr=(hh.next_source_ip(), 0))
                     for _ in range(8)]
            ids = [self.pub("resume", "r%d" % i) for i in range(10)]
            for ws in conns:
                self.assertEqual(await recv_n(ws, 10), ["r%d" % i for i in range(10)])
                await ws.close()
            ids += [self.pub("resume", "r%d" % i) for i in range(10, 30)]
            for k in range(8):
                path = "/ws/resume?%s=%s" % ("since" if k % 2 == 0 else "last_event_id", ids[9])
                want = ["r%d" % i for i in range(10, 30)] + ["live%d" % j for j in range(k)]
                async with connect(self.port, path, local_addr=(hh.next_source_ip(), 0)) as ws:
                    self.assertEqual(await recv_n(ws, len(want)), want)
                    self.pub("resume", "live%d" % k)
                    # its own live message is next: nothing repeated in between
                    self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "live%d" % k)
            # resuming from the last id seen: nothing to replay, then live
            async with connect(self.port, "/ws/resume?since=" + ids[29]) as ws:
                got = await recv_n(ws, 8)
                self.assertEqual(got, ["live%d" % k for k in range(8)])
        run(go())

    def test_resume_longer_than_queue(self):
        """History larger than max_queue_bytes is replayed as the socket drains, not dropped."""
        self.reconf(max_queue_bytes="64k", history_size="200")
        first = self.pub("big", "x" * 100)
        for i in range(60):
            self.pub("big", ("%03d" % i) * 2700)  # ~8 KB each, ~480 KB in all

        async def go():
            async with connect(self.port, "/ws/big?since=" + first) as ws:
                got = await recv_n(ws, 60)
                self.pub("big", "after")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "after")
            self.assertEqual(got, [("%03d" % i) * 2700 for i in range(60)])
        run(go())
        self.assertEqual(find_key(stats(self.port), "slow_subscribers_dropped"), 0)

    def test_resume_expired_id_gap(self):
        self.reconf(history_size="3")
        ids = [self.pub("gap", "g%d" % i) for i in range(10)]

        async def go():
            async with connect(self.port, "/ws/gap?since=" + ids[1],
                               subprotocols=["herald.v1"]) as ws:
                self.assertEqual(ws.subprotocol, "herald.v1")
                got = [json.loads(m) for m in await recv_n(ws, 4)]
            self.assertEqual(got[0]["type"], "gap")
            self.assertEqual(got[0]["channel"], "gap")
            self.assertIn("missing", got[0]["reason"])
            self.assertEqual([m["data"] for m in got[1:]], ["g7", "g8", "g9"])
            self.assertEqual([m["id"] for m in got[1:]], ids[7:])
            # plain clients get what history has (no envelope, no notice)
            async with connect(self.port, "/ws/gap?since=" + ids[1]) as ws:
                self.assertEqual(await recv_n(ws, 3), ["g7", "g8", "g9"])
            # an id from another epoch is a gap too
            async with connect(self.port, "/ws/gap?since=zzz-1", subprotocols=["herald.v1"]) as ws:
                self.assertEqual(json.loads(await ws.recv())["type"], "gap")
            # an id still in history is no gap
            async with connect(self.port, "/ws/gap?since=" + ids[8],
                               subprotocols=["herald.v1"]) as ws:
                m = json.loads(await ws.recv())
                self.assertEqual((m["type"], m["data"]), ("message", "g9"))
        run(go())

    def test_envelope(self):
        async def go():
            async with connect(self.port, "/ws/env", subprotocols=["chat", "herald.v1"]) as ws:
                self.assertEqual(ws.subprotocol, "herald.v1")
                a = self.pub("env", "line1\nline2 \"q\"")
                b = self.pub("env", '{"k":[1,2]}', "application/json")
                c = self.pub("env", b"\xff\x00", "application/octet-stream")
                d = self.pub("env", "no type", None)
                got = [json.loads(m) for m in await recv_n(ws, 4)]
            self.assertEqual(got[0], {"type": "message", "id": a, "channel": "env",
                                      "content_type": "text/plain; charset=utf-8",
                                      "data": "line1\nline2 \"q\""})
            self.assertEqual(got[1]["data"], {"k": [1, 2]})
            self.assertEqual(got[1]["content_type"], "application/json")
            self.assertEqual(got[2]["encoding"], "base64")
            self.assertEqual(base64.b64decode(got[2]["data"]), b"\xff\x00")
            self.assertEqual(got[3]["id"], d)
            self.assertNotIn("content_type", got[3])
            self.assertEqual([seq_of(x["id"]) for x in got], sorted(seq_of(i) for i in (a, b, c, d)))
        run(go())

    def test_client_gone_during_handshake(self):
        """Clients that leave before the 101 (while the subscription is being set up) or right
        after it are forgotten: no subscription or connection count is left behind."""
        req = handshake_request("/ws/early?since=0-1")
        for i in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", self.port))
            s.sendall(req + (frame(OP_TEXT, b"x") if i % 3 == 0 else b""))
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.pub("early", "after")
        def subscribers():
            status, _, body = request(self.port, "GET", "/channels/early")
            return json.loads(body).get("subscribers")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if find_key(stats(self.port), "websocket") == 0 and subscribers() == 0:
                break
            time.sleep(0.05)
        self.assertEqual(find_key(stats(self.port), "websocket"), 0)
        self.assertEqual(subscribers(), 0)

    def test_connection_counted(self):
        async def go():
            async with connect(self.port, "/ws/cnt"), connect(self.port, "/ws"):
                await asyncio.sleep(0.2)
                self.assertEqual(find_key(stats(self.port), "websocket"), 2)
        run(go())
        deadline = time.monotonic() + 5
        while find_key(stats(self.port), "websocket") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(find_key(stats(self.port), "websocket"), 0)


# ---- the JSON protocol ----

class JsonProtocol(WebSocketTest):
    async def call(self, ws, obj):
        await ws.send(json.dumps(obj))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))

    def test_subscribe_publish_unsubscribe(self):
        self.reconf(ws_client_publish="on")
        old = [self.pub("j1", "old%d" % i) for i in range(3)]

        async def go():
            async with connect(self.port, "/ws") as ws:
                self.assertEqual(await self.call(ws, {"op": "ping", "ref": {"n": 1}}),
                                 {"type": "pong", "ref": {"n": 1}})
                self.assertEqual(await self.call(ws, {"op": "ping"}), {"type": "pong"})
                await ws.send(json.dumps({"op": "subscribe", "channel": "j1", "since": old[0],
                                          "ref": 7}))
                got = [json.loads(m) for m in await recv_n(ws, 3)]
                self.assertEqual([(m["type"], m["data"]) for m in got[:2]],
                                 [("message", "old1"), ("message", "old2")])
                self.assertEqual(got[2]["type"], "subscribed")
                self.assertEqual(got[2]["channel"], "j1")
                self.assertEqual(got[2]["ref"], 7)
                self.assertGreaterEqual(seq_of(got[2]["last_id"]), seq_of(old[2]))
                await ws.send(json.dumps({"op": "subscribe", "channel": "j2"}))
                self.assertEqual(json.loads(await ws.recv())["type"], "subscribed")
                i1 = self.pub("j1", "live1")
                i2 = self.pub("j2", "live2")
                got = [json.loads(m) for m in await recv_n(ws, 2)]
                self.assertEqual([(m["channel"], m["id"], m["data"]) for m in got],
                                 [("j1", i1, "live1"), ("j2", i2, "live2")])
                # publish: the reply carries the id; the message comes back on the subscription
                await ws.send(json.dumps({"op": "publish", "channel": "j1", "data": {"x": [1]},
                                          "ref": "p1"}))
                got = [json.loads(m) for m in await recv_n(ws, 2)]
                pubd = [m for m in got if m["type"] == "published"][0]
                msg = [m for m in got if m["type"] == "message"][0]
                self.assertEqual(pubd["ref"], "p1")
                self.assertEqual(pubd["id"], msg["id"])
                self.assertEqual(msg["data"], {"x": [1]})
                self.assertEqual(msg["content_type"], "application/json")
                r = await self.call(ws, {"op": "publish", "channel": "other", "data": "t",
                                         "type": "text/x-custom"})
                self.assertEqual(r["type"], "published")
                self.assertEqual(await self.call(ws, {"op": "unsubscribe", "channel": "j1",
                                                      "ref": 3}),
                                 {"type": "unsubscribed", "channel": "j1", "ref": 3})
                self.pub("j1", "not for me")
                i3 = self.pub("j2", "still")
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual((m["channel"], m["id"]), ("j2", i3))
        run(go())
        status, _, body = request(self.port, "GET", "/poll/other?since=" + old[0])
        self.assertEqual(json.loads(body)["messages"][-1]["content_type"], "text/x-custom")

    def test_simple_and_full_parse_agree(self):
        # Simple objects (strings without escapes, integers, true/false/null) are read by a scan
        # (src/core/jflat.c), the rest by jansson: the same request through both (a leading
        # member with an escaped key sends it to jansson) gets the same bytes back.
        reqs = ['{"op":"subscribe","channel":"pa1","ref":"r"}',
                '{"op":"subscribe","channel":"pa1","ref":7}',
                '{"op":"unsubscribe","channel":"pa1","ref":null}',
                '{"op":"unsubscribe","channel":"pa1","ref":true}',
                '{"op":"subscribe","channel":"bad name"}',
                '{"op":"subscribe","channel":5,"ref":false}',
                '{"op":"subscribe","channel":"pa2","since":"nope","ref":-0}',
                '{"op":"subscribe","channel":"pa2","since":3}',
                '{"op":"subscribe","channel":"pa2","presence":"yes"}',
                '{"op":"subscribe","channel":"pa2","presence":true}',
                '{"op":"subscribe","channel":"pa2","ack":1}',
                ' {"type":"subscribe", "channel":"pa3","since":null,"presence":false,'
                '"ack":false,"ref":123456789012345678}\n',
                '{"op":"unsubscribe","channel":"pa3"}',
                '{"op":"ping","ref":"p"}',
                '{"op":5,"type":"ping"}']

        async def replies(escaped):
            out = []
            async with connect(self.port, "/ws") as ws:
                for r in reqs:
                    await ws.send(r.replace("{", '{"\\u0078":0,', 1) if escaped else r)
                    out.append(await asyncio.wait_for(ws.recv(), 10))
            return out

        simple, full = run(replies(False)), run(replies(True))
        self.assertEqual(simple, full)
        self.assertEqual([json.loads(m).get("ref", "-") for m in simple],
                         ["r", 7, None, True, "-", False, 0, "-", "-", "-", "-",
                          123456789012345678, "-", "p", "-"])

    def test_unsubscribe_while_pending(self):
        async def go():
            async with connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "pend", "ref": 1}) +
                              "")
                await ws.send(json.dumps({"op": "unsubscribe", "channel": "pend", "ref": 2}))
                await ws.send(json.dumps({"op": "ping", "ref": 3}))
                first = json.loads(await ws.recv())
                if first["type"] == "subscribed":  # the broker was faster than the client
                    first = json.loads(await ws.recv())
                self.assertEqual(first, {"type": "unsubscribed", "channel": "pend", "ref": 2})
                self.assertEqual(json.loads(await ws.recv()), {"type": "pong", "ref": 3})
                self.pub("pend", "nobody listens")
                await ws.send(json.dumps({"op": "ping", "ref": 4}))
                self.assertEqual(json.loads(await ws.recv()), {"type": "pong", "ref": 4})
        run(go())

    def test_gap_notice_on_subscribe(self):
        self.reconf(history_size="2")
        ids = [self.pub("jg", "x%d" % i) for i in range(6)]

        async def go():
            async with connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "jg", "since": ids[0]}))
                got = [json.loads(m) for m in await recv_n(ws, 4)]
            self.assertEqual([m["type"] for m in got], ["gap", "message", "message", "subscribed"])
            self.assertEqual([m["data"] for m in got[1:3]], ["x4", "x5"])
        run(go())

    def test_errors(self):
        async def go():
            async with connect(self.port, "/ws") as ws:
                async def err(obj_or_text):
                    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
                    await ws.send(text)
                    r = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    self.assertEqual(r["type"], "error", r)
                    self.assertTrue(r["error"])
                    return r
                self.assertEqual((await err("not json"))["code"], "bad_json")
                self.assertEqual((await err("[1,2]"))["code"], "bad_json")
                self.assertEqual((await err({"ref": 5}))["code"], "bad_op")
                r = await err({"op": "dance", "ref": [1]})
                self.assertEqual((r["code"], r["ref"]), ("unknown_op", [1]))
                for bad in ("", "a b", "x" * 129, "é", 7, None):
                    self.assertEqual((await err({"op": "subscribe", "channel": bad}))["code"],
                                     "bad_channel")
                for since in ("nope", "1", 5, "-3"):
                    self.assertEqual((await err({"op": "subscribe", "channel": "c",
                                                 "since": since}))["code"], "bad_since")
                self.assertEqual((await err({"op": "unsubscribe", "channel": "c"}))["code"],
                                 "not_subscribed")
                r = await err({"op": "publish", "channel": "c", "data": "x", "ref": 9})
                self.assertEqual((r["code"], r["ref"]), ("publish_disabled", 9))
                for i in range(64):
                    await ws.send(json.dumps({"op": "subscribe", "channel": "s%d" % i}))
                got = [json.loads(m) for m in await recv_n(ws, 64)]
                self.assertEqual({m["type"] for m in got}, {"subscribed"})
                r = await err({"op": "subscribe", "channel": "s3"})
                self.assertEqual(r["code"], "already_subscribed")
                r = await err({"op": "subscribe", "channel": "s64"})
                self.assertEqual(r["code"], "too_many_subscriptions")
                # still serving
                self.assertEqual(json.loads(await self.pingpong(ws))["type"], "pong")
                # a binary frame is not part of the protocol
                await ws.send(b"\x01\x02")
                self.assertEqual((await close_code_of(ws))[0], 1003)
        run(go())

    async def pingpong(self, ws):
        await ws.send('{"op":"ping"}')
        return await asyncio.wait_for(ws.recv(), 10)


# ---- client publishing ----

class ClientPublish(WebSocketTest):
    def test_off_closes_1008(self):
        async def go():
            async with connect(self.port, "/ws/chat") as ws:
                await ws.send("hello")
                code, reason = await close_code_of(ws)
            self.assertEqual((code, reason), (1008, "client publishing is disabled"))
        run(go())

    def test_off_frame_checked_before_policy(self):
        """With publishing off, a data frame that is itself invalid gets the frame's close code
        (1007 invalid UTF-8, 1002 a new message inside a fragmented one), not 1008; a valid one
        gets 1008 whether whole or fragmented. Same on /ws/{channel} without the publish key."""
        cases = [
            (frame(OP_TEXT, b"ok \xff\xfe"), 1007),
            (frame(OP_TEXT, b"ok \xc3", fin=False) + frame(OP_CONT, b"\x28"), 1007),
            (frame(OP_TEXT, b"part", fin=False) + frame(OP_TEXT, b"again"), 1002),
            (frame(OP_BINARY, b"\x00", fin=False) + frame(OP_BINARY, b"\x01"), 1002),
            (frame(OP_CONT, b"orphan"), 1002),
            (frame(OP_TEXT, b"fine"), 1008),
            (frame(OP_TEXT, b"fi", fin=False) + frame(OP_CONT, b"ne"), 1008),
            (frame(OP_BINARY, b"\xff"), 1008),
        ]
        for conf in ({}, {"ws_client_publish": "on", "publish_key": "k"}):
            if conf:
                self.reconf(**conf)
            for data, want in cases:
                ws = RawWS(self.port, "/ws/chk")
                try:
                    ws.send(data)
                    code, reason = ws.expect_close()
                    self.assertEqual(code, want, (conf, data, reason))
                    if want == 1008:
                        self.assertIn("publish", reason)
                finally:
                    ws.close()

    def test_key_set_by_reload_holds_for_live_sessions(self):
        """A session opened before publish_key was set (or with a key since rotated) cannot
        publish after SIGHUP: /ws/{channel} closes with 1008, /ws answers "forbidden"."""
        self.reconf(ws_client_publish="on")
        base = {"log_level": "info", "ws_ping_interval": "30s", "ws_idle_timeout": "60s",
                "ws_client_publish": "on"}
        first = self.pub("rk", "marker")

        async def go():
            async with connect(self.port, "/ws/rk") as raw, connect(self.port, "/ws") as js, \
                    connect(self.port, "/ws/rk",
                            extra_headers={"Authorization": "Bearer k1"}) as keyed:
                await raw.send("before")
                self.assertEqual(await asyncio.wait_for(raw.recv(), 10), "before")
                await js.send(json.dumps({"op": "publish", "channel": "rk", "data": "j"}))
                self.assertEqual(json.loads(await js.recv())["type"], "published")
                self.assertEqual(await asyncio.wait_for(raw.recv(), 10), "j")
                self.assertEqual(await recv_n(keyed, 2), ["before", "j"])
                self.h.reload(conf=dict(base, publish_key="k1"))
                # the keyed session was opened with the key now set: it may publish
                await keyed.send("keyed")
                self.assertEqual(await asyncio.wait_for(keyed.recv(), 10), "keyed")
                await js.send(json.dumps({"op": "publish", "channel": "rk", "data": "x"}))
                self.assertEqual(json.loads(await js.recv())["code"], "forbidden")
                await js.send(json.dumps({"op": "publish", "channel": "rk", "data": "y",
                                          "key": "k1"}))
                self.assertEqual(json.loads(await js.recv())["type"], "published")
                self.assertEqual(await recv_n(keyed, 1), ["y"])
                await raw.send("after")
                code, reason = await close_code_of(raw)
                self.assertEqual(code, 1008)
                self.assertIn("key", reason)
                # rotated: the old key no longer publishes
                self.h.reload(conf=dict(base, publish_key="k2"))
                await keyed.send("stale")
                code, _ = await close_code_of(keyed)
                self.assertEqual(code, 1008)
                await js.send(json.dumps({"op": "publish", "channel": "rk", "data": "z",
                                          "key": "k1"}))
                self.assertEqual(json.loads(await js.recv())["code"], "forbidden")
            async with connect(self.port, "/ws/rk",
                               extra_headers={"Authorization": "Bearer k2"}) as ws:
                await ws.send("new key")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "new key")
        run(go())
        # nothing published under a refused key
        status, _, body = request(self.port, "GET", "/poll/rk?since=" + first)
        self.assertEqual(status, 200)
        data = [m["data"] for m in json.loads(body)["messages"]]
        self.assertEqual(data, ["before", "j", "keyed", "y", "new key"])

    def test_bad_content_type(self):
        """A /ws publish with an invalid "type" gets a clear error and publishes nothing."""
        self.reconf(ws_client_publish="on")
        first = self.pub("ct", "marker")

        async def go():
            async with connect(self.port, "/ws") as ws, connect(self.port, "/ws/ct") as sub:
                for ref, t in enumerate(("text/plain; x=\xff\xfe", "no-slash", "text/plain; =x",
                                         "a/b\r\nX: y", "text/" + "x" * 130, "text/plain\u00e9")):
                    await ws.send(json.dumps({"op": "publish", "channel": "ct", "data": "bad",
                                              "type": t, "ref": ref}))
                    r = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    self.assertEqual((r["type"], r.get("code"), r["ref"]), ("error", "bad_data", ref),
                                     (t, r))
                    self.assertIn("media type", r["error"])
                await ws.send(json.dumps({"op": "publish", "channel": "ct", "data": "good",
                                          "type": "text/plain; charset=utf-8"}))
                self.assertEqual(json.loads(await ws.recv())["type"], "published")
                self.assertEqual(await asyncio.wait_for(sub.recv(), 10), "good")
        run(go())
        status, _, body = request(self.port, "GET", "/poll/ct?since=" + first)
        self.assertEqual([m["data"] for m in json.loads(body)["messages"]], ["good"])

    def test_on_text_and_binary(self):
        self.reconf(ws_client_publish="on")

        async def go():
            async with connect(self.port, "/ws/chat") as a, \
                    connect(self.port, "/ws/chat", subprotocols=["herald.v1"]) as b:
                await a.send("hi there")
                await a.send(b"\x00\xff")
                self.assertEqual(await recv_n(a, 2), ["hi there", b"\x00\xff"])
                got = [json.loads(m) for m in await recv_n(b, 2)]
                self.assertEqual(got[0]["data"], "hi there")
                self.assertEqual(got[0]["content_type"], "text/plain; charset=utf-8")
                self.assertEqual(got[1]["content_type"], "application/octet-stream")
                self.assertEqual(base64.b64decode(got[1]["data"]), b"\x00\xff")
        run(go())

    def test_many_publishes_in_order(self):
        """More publishes in flight than the per-connection cap: input waits for the broker,
        nothing is lost or reordered."""
        self.reconf(ws_client_publish="on")

        async def go():
            async with connect(self.port, "/ws/burst") as a, connect(self.port, "/ws") as b:
                await b.send(json.dumps({"op": "subscribe", "channel": "burst"}))
                self.assertEqual(json.loads(await b.recv())["type"], "subscribed")
                for i in range(500):
                    await a.send("b%03d" % i)
                for i in range(500):
                    await b.send(json.dumps({"op": "publish", "channel": "burst",
                                             "data": "j%03d" % i, "ref": i}))
                got = await recv_n(a, 1000, timeout=30)
                # each connection's messages in its order (the two interleave)
                self.assertEqual([m for m in got if m[0] == "b"], ["b%03d" % i for i in range(500)])
                self.assertEqual([m for m in got if m[0] == "j"], ["j%03d" % i for i in range(500)])
                replies = [json.loads(m) for m in await recv_n(b, 1500, timeout=30)]
                refs = [m["ref"] for m in replies if m["type"] == "published"]
                self.assertEqual(refs, list(range(500)))
                ids = [seq_of(m["id"]) for m in replies if m["type"] == "message"]
                self.assertEqual(ids, sorted(ids))
                self.assertEqual(len(ids), 1000)
        run(go())

    def test_publish_key(self):
        self.reconf(ws_client_publish="on", publish_key="s3cret")

        async def go():
            async with connect(self.port, "/ws/keyed") as ws:
                await ws.send("x")
                code, reason = await close_code_of(ws)
                self.assertEqual(code, 1008)
                self.assertIn("key", reason)
            async with connect(self.port, "/ws/keyed",
                               extra_headers={"Authorization": "Bearer s3cret"}) as ws:
                await ws.send("ok")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "ok")
            async with connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "publish", "channel": "k", "data": "x"}))
                self.assertEqual(json.loads(await ws.recv())["code"], "forbidden")
                await ws.send(json.dumps({"op": "publish", "channel": "k", "data": "x",
                                          "key": "s3cret"}))
                self.assertEqual(json.loads(await ws.recv())["type"], "published")
        run(go())


# ---- handshake ----

class Handshake(WebSocketTest):
    conf = {"ws_origins": '"https://good.example https://also.example"'}

    def raw(self, path, **kw):
        with hh.Client(self.port) as c:
            c.send(handshake_request(path, **kw))
            return c.read_response()

    def test_accept_key_rfc_example(self):
        ws = RawWS(self.port, "/ws/x")
        try:
            r = ws.response
            self.assertEqual(r.header("Sec-WebSocket-Accept"), RFC_ACCEPT)
            self.assertEqual(r.header("Upgrade").lower(), "websocket")
            self.assertEqual(r.header("Connection").lower(), "upgrade")
            self.assertIsNone(r.header("Sec-WebSocket-Protocol"))
            expect = base64.b64encode(hashlib.sha1((RFC_KEY + GUID).encode()).digest()).decode()
            self.assertEqual(expect, RFC_ACCEPT)
        finally:
            ws.close()

    def test_errors(self):
        r = self.raw("/ws/x", upgrade=False)
        self.assertStatus(r, 426)
        self.assertEqual(r.header("Upgrade"), "websocket")
        self.assertEqual(r.header("Sec-WebSocket-Version"), "13")
        # plain GET on a keep-alive connection, twice: the connection stays usable
        with hh.Client(self.port) as c:
            self.assertStatus(c.request("GET", "/ws/x"), 426)
            self.assertStatus(c.request("GET", "/ws"), 426)
        for version in ("8", "12", "", "13, 8"):
            r = self.raw("/ws/x", version=version)
            self.assertStatus(r, 426)
            self.assertEqual(r.header("Sec-WebSocket-Version"), "13")
        r = self.raw("/ws/x", version=None)
        self.assertStatus(r, 426)
        self.assertStatus(self.raw("/ws/x", key=None), 400)
        for key in ("short", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ!=",
                    "dGhlIHNhbXBsZSBub25jZQ==x", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="):
            self.assertStatus(self.raw("/ws/x", key=key), 400)
        self.assertStatus(self.raw("/ws/x", extra={"Origin": "https://evil.example"}), 403)
        self.assertStatus(self.raw("/ws", extra={"Origin": "https://good.example.evil"}), 403)
        self.assertStatus(self.raw("/ws/bad%20name"), 400)
        self.assertStatus(self.raw("/ws/"), 400)
        self.assertStatus(self.raw("/ws/x?since=garbage"), 400)
        status, headers, _ = request(self.port, "POST", "/ws/x", b"")
        self.assertEqual(status, 405)
        with hh.Client(self.port) as c:
            self.assertStatus(c.request("HEAD", "/ws/x"), 405)

    def test_origin_and_tokens(self):
        for extra in ({"Origin": "https://also.example"}, {}):
            RawWS(self.port, "/ws/o", extra=extra).close()
        # token lists and case: "Connection: keep-alive, Upgrade", "Upgrade: WebSocket"
        RawWS(self.port, "/ws/o", upgrade=False,
              extra={"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}).close()
        RawWS(self.port, "/ws", upgrade=False,
              extra={"Connection": "upgrade", "Upgrade": "foo/2, websocket"}).close()

        async def go():
            async with connect(self.port, "/ws/o", origin="https://good.example") as ws:
                self.pub("o", "fine")
                self.assertEqual(await ws.recv(), "fine")
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with connect(self.port, "/ws/o", origin="https://nope.example"):
                    pass
            self.assertEqual(cm.exception.status_code, 403)
        run(go())


# ---- frames ----

class Frames(WebSocketTest):
    conf = {"max_message_size": "1k", "ws_client_publish": "on"}

    def test_fragmented_with_ping_between(self):
        msg = json.dumps({"op": "ping", "ref": "frag"}).encode()
        data = (frame(OP_TEXT, msg[:5], fin=False) + frame(OP_PING, b"p1") +
                frame(OP_CONT, msg[5:12], fin=False) + frame(OP_PING, b"") +
                frame(OP_CONT, msg[12:]))
        for sender in ("send", "send_bytewise"):
            ws = RawWS(self.port, "/ws")
            try:
                getattr(ws, sender)(data)
                self.assertEqual(ws.recv_frame()[2:], (OP_PONG, b"p1"))
                self.assertEqual(ws.recv_frame()[2:], (OP_PONG, b""))
                self.assertEqual(ws.recv_json(), {"type": "pong", "ref": "frag"})
                ws.send(frame(OP_CLOSE, close_payload(1000)))
                self.assertEqual(ws.expect_close()[0], 1000)
            finally:
                ws.close()

    def test_fragmented_publish_on_channel(self):
        ws = RawWS(self.port, "/ws/frag")
        try:
            ws.send(frame(OP_BINARY, b"\x00\x01", fin=False) + frame(OP_PING, b"x") +
                    frame(OP_CONT, b"", fin=False) + frame(OP_CONT, b"\x02\x03"))
            self.assertEqual(ws.recv_frame()[2:], (OP_PONG, b"x"))
            self.assertEqual(ws.recv_data(), (OP_BINARY, b"\x00\x01\x02\x03"))
        finally:
            ws.close()

    def test_utf8_split_across_fragments(self):
        text = "ref λ€😀 ok"
        msg = json.dumps({"op": "ping", "ref": text}, ensure_ascii=False).encode()
        # split inside each multi-byte character
        cuts = [msg.index("λ".encode()) + 1, msg.index("€".encode()) + 2,
                msg.index("😀".encode()) + 3]
        parts = [msg[:cuts[0]], msg[cuts[0]:cuts[1]], msg[cuts[1]:cuts[2]], msg[cuts[2]:]]
        data = b"".join(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
                        for i, p in enumerate(parts))
        ws = RawWS(self.port, "/ws")
        try:
            ws.send(data)
            self.assertEqual(ws.recv_json(), {"type": "pong", "ref": text})
        finally:
            ws.close()

    def test_utf8_invalid_1007(self):
        cases = [
            # invalid byte in the first fragment: closed before the message ends
            [frame(OP_TEXT, b"ab\xff", fin=False)],
            # a sequence split across fragments that turns out invalid
            [frame(OP_TEXT, b"x\xe2\x82", fin=False), frame(OP_CONT, b"(")],
            # a message ending inside a character
            [frame(OP_TEXT, b"ok\xf0\x9f", fin=False), frame(OP_CONT, b"\x98")],
            # surrogate and overlong forms
            [frame(OP_TEXT, b"\xed\xa0\x80")],
            [frame(OP_TEXT, b"\xc0\xaf")],
        ]
        for path in ("/ws", "/ws/u"):
            for parts in cases:
                ws = RawWS(self.port, path)
                try:
                    for p in parts:
                        ws.send(p)
                    self.assertEqual(ws.expect_close()[0], 1007, (path, parts))
                finally:
                    ws.close()

    def test_close_codes(self):
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999):
            ws = RawWS(self.port, "/ws/c")
            try:
                ws.send(frame(OP_CLOSE, close_payload(code, "bye ✓".encode())))
                self.assertEqual(ws.expect_close()[0], code)
            finally:
                ws.close()
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
            ws = RawWS(self.port, "/ws/c")
            try:
                ws.send(frame(OP_CLOSE, close_payload(code)))
                self.assertEqual(ws.expect_close()[0], 1002, code)
            finally:
                ws.close()
        ws = RawWS(self.port, "/ws/c")  # a 1-byte close payload
        try:
            ws.send(frame(OP_CLOSE, b"\x03"))
            self.assertEqual(ws.expect_close()[0], 1002)
        finally:
            ws.close()
        ws = RawWS(self.port, "/ws/c")  # empty close: echoed empty
        try:
            ws.send(frame(OP_CLOSE))
            self.assertEqual(ws.expect_close()[0], None)
        finally:
            ws.close()
        ws = RawWS(self.port, "/ws/c")  # reason not UTF-8
        try:
            ws.send(frame(OP_CLOSE, close_payload(1000, b"\xff\xfe")))
            self.assertEqual(ws.expect_close()[0], 1007)
        finally:
            ws.close()
        ws = RawWS(self.port, "/ws/c")  # a multi-byte reason, byte by byte
        try:
            ws.send_bytewise(frame(OP_CLOSE, close_payload(4001, "λλλ".encode())))
            self.assertEqual(ws.expect_close()[0], 4001)
        finally:
            ws.close()

    def test_protocol_errors_1002(self):
        cases = {
            "unmasked": frame(OP_TEXT, b"hi", mask=False),
            "rsv1": frame(OP_TEXT, b"hi", rsv=4),
            "rsv3": frame(OP_BINARY, b"hi", rsv=1),
            "opcode 3": frame(0x3, b""),
            "opcode 0xb": frame(0xB, b""),
            "continuation first": frame(OP_CONT, b"x"),
            "fragmented ping": frame(OP_PING, b"x", fin=False),
            "ping of 126": frame(OP_PING, b"x" * 126),
            "text inside fragments": frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
            "long length form": frame(OP_TEXT, b"abc")[:1] + b"\xfe\x00\x03" + b"\0" * 4 + b"abc",
        }
        for name, data in cases.items():
            ws = RawWS(self.port, "/ws/p")
            try:
                ws.send(data)
                self.assertEqual(ws.expect_close()[0], 1002, name)
            finally:
                ws.close()

    def test_oversize_1009(self):
        for path in ("/ws", "/ws/big"):
            ws = RawWS(self.port, path)
            try:
                ws.send(frame(OP_TEXT, b"x" * 1025))
                self.assertEqual(ws.expect_close()[0], 1009)
            finally:
                ws.close()
            ws = RawWS(self.port, path)  # only the header: refused before the payload comes
            try:
                ws.send(frame(OP_BINARY if path != "/ws" else OP_TEXT, b"", length=1 << 40)[:14])
                self.assertEqual(ws.expect_close()[0], 1009)
            finally:
                ws.close()
            ws = RawWS(self.port, path)  # fragments that add up to too much
            try:
                ws.send(frame(OP_TEXT, b"y" * 600, fin=False) + frame(OP_CONT, b"y" * 600))
                self.assertEqual(ws.expect_close()[0], 1009)
            finally:
                ws.close()
        # exactly the limit is fine
        ws = RawWS(self.port, "/ws/big")
        try:
            ws.send(frame(OP_TEXT, b"z" * 1024))
            self.assertEqual(ws.recv_data(), (OP_TEXT, b"z" * 1024))
        finally:
            ws.close()


# ---- liveness, slow consumers, shutdown ----

class Liveness(WebSocketTest):
    # ten pings per idle timeout: a peer that answers them stays however late a loaded machine
    # lets one pong through (up to most of 2 s), a peer that never answers is closed
    conf = {"ws_ping_interval": "200ms", "ws_idle_timeout": "2s"}

    def setUp(self):
        conf = {"log_level": "info"}
        conf.update(self.conf)
        self.h = self.start_herald(conf=conf)
        self.port = self.h.port
        self.pub = Publisher(self.port)
        self.addCleanup(lambda: self.pub.close())

    def test_pings_and_idle_close(self):
        ws = RawWS(self.port, "/ws/idle")
        try:
            t0 = time.monotonic()
            fin, rsv, op, payload = ws.recv_frame(10)
            self.assertEqual(op, OP_PING)
            code, reason = ws.expect_close(20)  # a peer that never answers
            self.assertEqual((code, reason), (1001, "idle timeout"))
            self.assertGreater(time.monotonic() - t0, 1.8)
        finally:
            ws.close()

    def test_pong_keeps_alive(self):
        async def go():
            async with connect(self.port, "/ws/alive", ping_interval=None) as ws:
                await asyncio.sleep(5)  # 2.5 idle timeouts: the library answers the pings
                self.pub("alive", "still here")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "still here")
        run(go())


class SlowConsumer(WebSocketTest):
    conf = {"max_queue_bytes": "64k", "history_size": "10"}

    def test_slow_reader_dropped_1013(self):
        """A client that stops reading is cut off with 1013 once it is max_queue_bytes behind; it
        still gets, in order, everything queued before, and a reader that keeps up loses
        nothing."""
        import threading
        fast = RawWS(self.port, "/ws/flood")
        slow = RawWS(self.port, "/ws/flood", rcvbuf=8192)
        fast_got = []

        def read_fast():
            while len(fast_got) < 300:
                op, payload = fast.recv_data(20)
                fast_got.append(int(payload[:4]))
        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()
        payload = "p" * 32768
        seen, close = [], None
        try:
            for i in range(300):
                self.pub("flood", "%04d" % i + payload)
                deadline = time.monotonic() + 10
                while len(fast_got) <= i and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if close is None and self.h.find_log(r"slow subscriber"):
                    # read it all now: a finishing connection waits for a reader that progresses
                    while True:
                        fin, rsv, op, data = slow.recv_frame(5)
                        if op == OP_CLOSE:
                            close = data
                            break
                        if op == OP_TEXT:
                            seen.append(int(data[:4]))
            reader.join(20)
        finally:
            fast.close()
            slow.close()
        self.assertIsNotNone(close, "the slow client was never dropped")
        self.assertIn(struct.unpack(">H", close[:2])[0], (1013, 1008))
        self.assertIn("too slow", close[2:].decode())
        self.assertEqual(seen, list(range(len(seen))))
        self.assertLess(len(seen), 300)
        self.assertEqual(fast_got, list(range(300)))
        self.assertGreaterEqual(find_key(stats(self.port), "slow_subscribers_dropped"), 1)

    def test_ping_flood_without_reading(self):
        """A peer that pings and never reads cannot grow the server's queue without bound."""
        ws = RawWS(self.port, "/ws/pf", rcvbuf=4096)
        ping = frame(OP_PING, b"z" * 125) * 50
        try:
            ws.sock.settimeout(2)
            for i in range(20000):
                ws.send(ping)
                if i % 20 == 0 and self.h.find_log(r"slow subscriber"):
                    break
        except (OSError, socket.timeout):
            pass
        finally:
            ws.close()
        self.h.wait_log(r"slow subscriber", 5)


class Shutdown(WebSocketTest):
    def test_sigterm_closes_1001(self):
        async def go():
            ws = await connect(self.port, "/ws/bye")
            ws2 = await connect(self.port, "/ws")
            self.h.signal(15)
            self.assertEqual(await close_code_of(ws), (1001, "server shutting down"))
            self.assertEqual((await close_code_of(ws2))[0], 1001)
            await ws.close()
            await ws2.close()
        run(go())
        self.assertIsNotNone(self.h.wait_exit(10))
        self.h.check_clean()
        self.assertEqual(self.h.returncode, 0)

    def tearDown(self):
        pass


# ---- fan-out ----

class FanOut(WebSocketTest):
    conf = {"max_connections": "2500"}
    N = 1000
    MESSAGES = 20

    def test_1000_subscribers(self):
        async def go():
            sem = asyncio.Semaphore(100)

            async def open_one(k):
                async with sem:
                    path = "/ws/fan" if k % 2 else "/ws/fan?since=0-0"
                    return await connect(self.port, path, local_addr=(hh.next_source_ip(), 0),
                                         ping_interval=None)
            conns = await asyncio.gather(*[open_one(k) for k in range(self.N)])
            try:
                loop = asyncio.get_running_loop()
                ids = await loop.run_in_executor(
                    None, lambda: [self.pub("fan", "f%02d" % i) for i in range(self.MESSAGES)])

                async def read_all(ws):
                    return await recv_n(ws, self.MESSAGES, timeout=60)
                results = await asyncio.gather(*[read_all(ws) for ws in conns])
                want = ["f%02d" % i for i in range(self.MESSAGES)]
                bad = [k for k, r in enumerate(results) if r != want]
                self.assertEqual(bad, [], "connections with wrong streams")
                # exactly once: nothing more arrives
                extra = await asyncio.gather(*[self._nothing_more(ws) for ws in conns[:50]])
                self.assertEqual(sum(extra), 0)
                self.assertEqual(len(ids), self.MESSAGES)
            finally:
                await asyncio.gather(*[ws.close() for ws in conns], return_exceptions=True)
        run(go(), timeout=240)
        self.assertEqual(self.h.count_log(r"slow subscriber"), 0)

    async def _nothing_more(self, ws):
        try:
            await asyncio.wait_for(ws.recv(), 0.05)
            return 1
        except asyncio.TimeoutError:
            return 0


# ---- TLS ----

class OverTls(hh.HeraldTestCase):
    def test_wss(self):
        d = self.tmpdir()
        crt, key = os.path.join(d, "c.crt"), os.path.join(d, "c.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, timeout=30)
        h = self.start_herald(conf={"tls_certificate": crt, "tls_certificate_key": key},
                              listens=("127.0.0.1:0 tls", "127.0.0.1:0"))
        pub = Publisher(h.port)
        self.addCleanup(pub.close)
        ctx = hh.client_tls_context()

        async def go():
            async with connect(h.tls_port, "/ws/secure", tls=True, ssl=ctx,
                               subprotocols=["herald.v1"]) as ws:
                ids = [pub("secure", "s%d" % i) for i in range(50)]
                ids.append(pub("secure", "x" * 100000))
                got = [json.loads(m) for m in await recv_n(ws, 51)]
                self.assertEqual([m["id"] for m in got], ids)
                self.assertEqual(got[-1]["data"], "x" * 100000)
                await ws.close(1000)
                self.assertEqual(ws.close_code, 1000)
        run(go())


# ---- npm ws ----

NODE_CLIENT = r"""
const WebSocket = require('ws');
const [url, count, proto] = process.argv.slice(1);
const ws = proto ? new WebSocket(url, [proto]) : new WebSocket(url);
const got = [];
ws.on('open', () => { console.log(JSON.stringify({kind: 'open', protocol: ws.protocol})); });
ws.on('message', (data, isBinary) => {
  got.push({binary: isBinary, data: isBinary ? data.toString('base64') : data.toString()});
  if (got.length === parseInt(count, 10)) {
    console.log(JSON.stringify({kind: 'messages', got}));
    ws.close(1000, 'done');
  }
});
ws.on('close', (code) => { console.log(JSON.stringify({kind: 'close', code})); process.exit(0); });
ws.on('error', (e) => { console.log(JSON.stringify({kind: 'error', message: String(e)})); process.exit(1); });
setTimeout(() => { console.log(JSON.stringify({kind: 'timeout'})); process.exit(2); }, 15000);
"""


class NpmWs(WebSocketTest):
    def test_npm_ws_client(self):
        node, modules = hh.require_node_module("ws")
        for proto in ("", "herald.v1"):
            env = dict(os.environ, NODE_PATH=modules)
            p = subprocess.Popen([node, "-e", NODE_CLIENT, ws_url(self.port, "/ws/npm"), "3",
                                  proto], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            line = p.stdout.readline().decode()
            self.assertEqual(json.loads(line), {"kind": "open", "protocol": proto}, line)
            self.pub("npm", "one")
            self.pub("npm", b"\x01\x02", "application/octet-stream")
            self.pub("npm", '{"j":true}', "application/json")
            out, err = p.communicate(timeout=20)
            events = [json.loads(x) for x in out.decode().splitlines()]
            self.assertEqual(p.returncode, 0, (events, err))
            got = events[0]["got"]
            if proto:
                datas = [json.loads(g["data"])["data"] for g in got]
                self.assertEqual(datas, ["one", "AQI=", {"j": True}])
            else:
                self.assertEqual(got, [{"binary": False, "data": "one"},
                                       {"binary": True, "data": "AQI="},
                                       {"binary": False, "data": '{"j":true}'}])
            self.assertEqual(events[1], {"kind": "close", "code": 1000})


if __name__ == "__main__":
    hh.main()
