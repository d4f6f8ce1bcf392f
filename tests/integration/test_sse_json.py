# SPDX-License-Identifier: MIT
"""The JSON form of SSE (GET /sse...?format=json, docs/protocol.md) against the real binary: the
raw SSE reader (SseStream), HTTP publishes with tokens minted by python3-jwt and with the
loopback backend, python3-websockets for presence and ephemeral publishes.

Covered: each message's data: is the message object of the polls (id equal to the event's id:,
channel, content_type, data embedded as JSON / a string / base64), with the publisher stamp for
a publish made with a token and none for a backend publish; the stamp cannot be forged (a
payload's own "publisher", a batch item's "publisher" member, a payload of newlines and SSE
fields); a JSON payload written over several lines still reaches an EventSource as one JSON
text; the multi-channel form has no event: line (the channel is in the object); resume with
Last-Event-ID and ?last_event_id= in that form; presence (herald-join, -leave, -presence) and
ephemeral (herald-ephemeral, "ephemeral":true) events in that form; format=text is the plain
form; any other format is 400. Through the Redis bridge (two nodes sharing a redis-server): a
token publish on one node reaches a JSON stream on the other with its stamp, live and on resume
from Redis's history, and so do an ephemeral message and a join.
"""
import asyncio
import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
from herald_harness import SseStream  # noqa: E402

hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

HERE = os.path.dirname(os.path.abspath(__file__))
JS_CLIENT = os.path.join(HERE, "js", "sse_client.js")
SECRET = "sse-json-test-secret-of-more-than-32-bytes"
IO = 10.0
RULES = [
    "room:* subscribe=auth publish=subscriber presence=on",
    "news:* subscribe=any publish=grant history=on",
]


def conf_text():
    return hh.conf_with_rules({"auth_jwt_secret": SECRET, "ws_client_publish": "on"}, RULES)


def mint(sub, **claims):
    return hh.jwt_token(SECRET, sub, **claims)


def run(coro, timeout=60):
    return hh.run_async(coro, timeout)


def message(ev):
    """The message object of an event of the JSON form, checked against the event's id:."""
    assert ev is not None, "stream ended"
    assert ev.event is None, "a message of the JSON form has no event: line: %r" % ev.raw
    obj = json.loads(ev.text)
    assert obj["id"] == ev.id, (obj, ev.id)
    return obj


def presence(ev):
    """[(type, member)] of a presence event of the JSON form: herald-join, herald-leave, or
    herald-presence (several of one loop pass); [] for any other event."""
    if ev.event in ("herald-join", "herald-leave"):
        return [(ev.event[7:], json.loads(ev.text)["member"])]
    if ev.event == "herald-presence":
        return [(e["type"], e["member"]) for e in json.loads(ev.text)["events"]]
    return []


def until_presence(s, want):
    """Reads s until presence event want = (type, member) has come; returns what came before."""
    before = []
    while True:
        ev = s.next_event(IO)
        assert ev is not None, "stream ended waiting for %r" % (want,)
        got = presence(ev)
        if want in got:
            return before + got[:got.index(want)]
        assert got, "%r came waiting for %r" % (ev.raw, want)
        before += got


class SseJson(hh.HeraldTestCase):
    """One server, two workers, auth on: room:* (token subscribers, presence), news:* (anyone
    subscribes, publishers need a grant)."""

    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf_raw=conf_text())
        cls.port = cls.h.port

    def stream(self, path):
        s = SseStream(self.port, path)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        self.assertEqual(s.headers["content-type"], "text/event-stream; charset=utf-8")
        return s

    def pub(self, channel, body, token=None, ctype="application/json", expect=200):
        headers = {"Content-Type": ctype}
        if token:
            headers["Authorization"] = "Bearer " + token
        st, _, data = hh.request(self.port, "POST", "/pub/" + channel, body, headers)
        self.assertEqual(st, expect, data)
        return json.loads(data)["id"] if st == 200 else json.loads(data)

    def test_stamp_token_and_backend(self):
        s = self.stream("/sse/room:a?format=json&token=" + mint("reader"))
        tok = mint("ann", info={"name": "Ann"}, channels={"publish": ["room:*"]})
        mid = self.pub("room:a", b'{"text":"hi"}', tok)
        self.assertEqual(message(s.next_event(IO)),
                         {"id": mid, "channel": "room:a",
                          "publisher": {"sub": "ann", "info": {"name": "Ann"}},
                          "content_type": "application/json", "data": {"text": "hi"}})
        # the backend (loopback, no publish_key): no stamp
        bid = hh.publish(self.port, "room:a", "from the backend")
        self.assertEqual(message(s.next_event(IO)),
                         {"id": bid, "channel": "room:a",
                          "content_type": "text/plain; charset=utf-8",
                          "data": "from the backend"})
        # binary: base64, flagged; no ": base64" comment in this form
        raw = bytes(range(256))
        xid = self.pub("room:a", raw, tok, "application/octet-stream")
        ev = s.next_event(IO)
        self.assertEqual(ev.comments, [])
        obj = message(ev)
        self.assertEqual((obj["id"], obj["encoding"], obj["publisher"]["sub"]),
                         (xid, "base64", "ann"))
        self.assertEqual(base64.b64decode(obj["data"]), raw)

    def test_stamp_cannot_be_forged(self):
        s = self.stream("/sse/room:f?format=json&token=" + mint("reader"))
        tok = mint("bob", channels={"publish": ["room:*"]})
        # a payload of its own "publisher" stays in data
        mid = self.pub("room:f", b'{"publisher":{"sub":"admin"},"text":"x"}', tok)
        obj = message(s.next_event(IO))
        self.assertEqual((obj["id"], obj["publisher"], obj["data"]),
                         (mid, {"sub": "bob"}, {"publisher": {"sub": "admin"}, "text": "x"}))
        # text made of SSE fields and blank lines: one event, the text as a JSON string
        evil = 'x\n\nid: zz-1\ndata: {"id":"zz-1","publisher":{"sub":"admin"}}\r\n\r\n'
        mid = self.pub("room:f", evil.encode(), tok, "text/plain; charset=utf-8")
        ev = s.next_event(IO)
        self.assertEqual(ev.data and len(ev.data), 1, ev.raw)
        obj = message(ev)
        self.assertEqual((obj["id"], obj["publisher"], obj["data"]), (mid, {"sub": "bob"}, evil))
        # a batch item's "publisher" member does not stamp the message
        st, _, body = hh.request(self.port, "POST", "/pub", json.dumps(
            [{"channel": "room:f", "data": "b", "publisher": {"sub": "admin"}}]).encode(),
            {"Content-Type": "application/json", "Authorization": "Bearer " + tok})
        if st == 200:
            obj = message(s.next_event(IO))
            self.assertEqual((obj["publisher"], obj["data"]), ({"sub": "bob"}, "b"))
        else:
            self.assertEqual(st, 400, body)
        s.assert_quiet()
        # a JSON payload over several lines (CR, LF, CRLF) reaches a reader as JSON
        mid = self.pub("room:f", b'{\n  "a": [1,\r\n 2],\r"b": "\\n"\n}', tok)
        ev = s.next_event(IO)
        self.assertGreater(len(ev.data), 1)
        self.assertEqual(message(ev)["data"], {"a": [1, 2], "b": "\n"})

    def test_multi_channel_and_forms(self):
        s = self.stream("/sse?channel=news:1&channel=news:2&format=json")
        ids = [hh.publish(self.port, "news:2", "two"), hh.publish(self.port, "news:1", "one")]
        got = [message(e) for e in s.events(2, IO)]
        self.assertEqual([(m["id"], m["channel"], m["data"]) for m in got],
                         [(ids[0], "news:2", "two"), (ids[1], "news:1", "one")])
        # format=text is the plain form: event: <channel>, the payload as it is
        t = self.stream("/sse?channel=news:1&channel=news:2&format=text")
        tid = hh.publish(self.port, "news:1", "plain")
        ev = t.next_event(IO)
        self.assertEqual((ev.id, ev.event, ev.text), (tid, "news:1", "plain"))
        for bad in ("xml", "", "JSON", "json" * 40):
            r = SseStream(self.port, "/sse/news:1?format=" + bad)
            self.addCleanup(r.close)
            self.assertEqual(r.status, 400, bad)
            self.assertEqual(json.loads(r.body)["error"], "format must be json or text")

    def test_resume(self):
        ids = [hh.publish(self.port, "news:r", "m%d" % i) for i in range(4)]
        s = self.stream("/sse/news:r?format=json&last_event_id=" + ids[0])
        self.assertEqual([(m["id"], m["data"]) for m in map(message, s.events(3, IO))],
                         [(ids[i], "m%d" % i) for i in (1, 2, 3)])
        s.close()
        h = self.stream_with_header("/sse?channel=news:r&format=json", ids[2])
        self.assertEqual(message(h.next_event(IO))["id"], ids[3])
        live = hh.publish(self.port, "news:r", "live")
        self.assertEqual(message(h.next_event(IO)), {"id": live, "channel": "news:r",
                                                     "content_type": "text/plain; charset=utf-8",
                                                     "data": "live"})

    def test_npm_eventsource(self):
        """The npm eventsource client (a real EventSource) hands the page JSON it can parse:
        a payload over several lines, a stamped one, a binary one."""
        node, modules = hh.require_node_module("eventsource")
        tok = mint("ann", channels={"publish": ["news:*"]})
        before = hh.publish(self.port, "news:es", "before")
        ids = [self.pub("news:es", b'[1,\r\n2,\r3\n]'), self.pub("news:es", b'"s"', tok),
               self.pub("news:es", b"\x00\xff", tok, "application/octet-stream")]
        url = "http://127.0.0.1:%d/sse/news:es?format=json&last_event_id=%s" % (self.port, before)
        p = subprocess.run([node, JS_CLIENT, url, "3", "--timeout", "15000"], capture_output=True,
                           timeout=30, env=dict(os.environ, NODE_PATH=modules))
        self.assertEqual(p.returncode, 0, p.stderr)
        evs = [json.loads(line) for line in p.stdout.decode().splitlines()]
        evs = [e for e in evs if e["kind"] == "event"]
        self.assertEqual([(e["type"], e["id"]) for e in evs], [("message", i) for i in ids])
        objs = [json.loads(e["data"]) for e in evs]
        self.assertEqual([o["id"] for o in objs], ids)
        self.assertEqual([o["data"] for o in objs], [[1, 2, 3], "s", "AP8="])
        self.assertEqual([o.get("publisher") for o in objs], [None, {"sub": "ann"}, {"sub": "ann"}])
        self.assertEqual(objs[2]["encoding"], "base64")

    def stream_with_header(self, path, last_id):
        s = SseStream(self.port, path, headers={"Last-Event-ID": last_id})
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        return s

    def test_presence_and_ephemeral(self):
        s = self.stream("/sse/room:p?format=json&presence=1&token=" + mint("eve", info={"n": 1}))
        ev = s.next_event(IO)
        self.assertEqual((ev.event, ev.id), ("herald-join", None))
        self.assertEqual(json.loads(ev.text)["member"], {"sub": "eve", "info": {"n": 1}})

        async def go():
            ws = await hh.ws_connect(self.port, "/ws?token=" + mint("max", info={"name": "Max"}))
            await ws.send(json.dumps({"op": "subscribe", "channel": "room:p", "ref": "s"}))
            while json.loads(await asyncio.wait_for(ws.recv(), IO)).get("ref") != "s":
                pass
            self.assertEqual(until_presence(s, ("join", {"sub": "max", "info": {"name": "Max"}})),
                             [])
            await ws.send(json.dumps({"op": "publish", "channel": "room:p", "ephemeral": True,
                                      "data": {"typing": True}, "ref": "e",
                                      "publisher": {"sub": "forged"}}))
            ev = s.next_event(IO)
            self.assertEqual((ev.event, ev.id), ("herald-ephemeral", None))
            self.assertEqual(json.loads(ev.text),
                             {"ephemeral": True, "channel": "room:p",
                              "publisher": {"sub": "max", "info": {"name": "Max"}},
                              "content_type": "application/json", "data": {"typing": True}})
            # a message published on /ws: the same object as the polls' (with the stamp)
            await ws.send(json.dumps({"op": "publish", "channel": "room:p", "data": "hello",
                                      "ref": "m"}))
            obj = message(s.next_event(IO))
            self.assertEqual((obj["publisher"]["sub"], obj["data"]), ("max", "hello"))
            await ws.close()
            self.assertEqual(until_presence(s, ("leave", {"sub": "max", "info": {"name": "Max"}})),
                             [])
        run(go())


class SseJsonRedis(hh.HeraldTestCase):
    def test_stamp_across_nodes(self):
        redis = rs.start_redis(self)
        n1, n2 = [self.start_herald(conf_raw=conf_text(), overrides=["redis unix://" + redis.sock])
                  for _ in range(2)]
        tok = mint("ann", info={"name": "Ann"})
        st, _, data = hh.request(n1.port, "POST", "/pub/room:x", b'{"n":1}',
                                 {"Content-Type": "application/json",
                                  "Authorization": "Bearer " + tok})
        self.assertEqual(st, 200, data)
        first = json.loads(data)["id"]
        s = SseStream(n2.port, "/sse/room:x?format=json&presence=1&token=" + mint("bob"),
                      headers={"Last-Event-ID": first})
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        hh.wait_for(lambda: hh.get_json(n1.port, "/channels/room:x")[1].get("presence") == 1, IO,
                    "bob a member on both nodes")
        st, _, data = hh.request(n1.port, "POST", "/pub/room:x", b'{"n":2}',
                                 {"Content-Type": "application/json",
                                  "Authorization": "Bearer " + tok})
        self.assertEqual(st, 200, data)
        second = json.loads(data)["id"]
        # what Redis kept for a resume, and the live message: both stamped
        ev = s.next_event(IO)
        bob = ("join", {"sub": "bob"})
        held = [bob]  # bob's own join: after the message when presence_hold holds it longer
        while presence(ev):
            if bob in presence(ev):
                held = []
            ev = s.next_event(IO)
        self.assertEqual(message(ev), {"id": second, "channel": "room:x",
                                       "publisher": {"sub": "ann", "info": {"name": "Ann"}},
                                       "content_type": "application/json", "data": {"n": 2}})
        r = self.resume(n2, first)
        self.assertEqual(message(r.next_event(IO))["publisher"]["sub"], "ann")

        async def go():
            ws = await hh.ws_connect(n1.port, "/ws?token=" + mint("pat"))
            await ws.send(json.dumps({"op": "subscribe", "channel": "room:x", "ref": "s"}))
            while json.loads(await asyncio.wait_for(ws.recv(), IO)).get("ref") != "s":
                pass
            # cy's join (the resumed stream) may come first, in one event or apart
            self.assertIn(until_presence(s, ("join", {"sub": "pat"})),
                          (held, held + [("join", {"sub": "cy"})]))
            await ws.send(json.dumps({"op": "publish", "channel": "room:x", "ephemeral": True,
                                      "data": {"typing": True}, "ref": "e"}))
            ev = s.next_event(IO)
            self.assertEqual(ev.event, "herald-ephemeral")
            self.assertEqual(json.loads(ev.text),
                             {"ephemeral": True, "channel": "room:x", "publisher": {"sub": "pat"},
                              "content_type": "application/json", "data": {"typing": True}})
            await ws.close()
        run(go())

    def resume(self, node, since):
        r = SseStream(node.port, "/sse/room:x?format=json&last_event_id=%s&token=%s"
                      % (since, mint("cy")))
        self.addCleanup(r.close)
        self.assertEqual(r.status, 200, r.body)
        return r


if __name__ == "__main__":
    hh.main()
