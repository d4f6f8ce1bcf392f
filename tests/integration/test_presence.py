# SPDX-License-Identifier: MIT
"""Presence and ephemeral messages on one node (docs/chat.md), against the real binary with real
clients: python3-websockets on /ws and /ws/{channel} (herald.v1), the raw SSE reader, curl-like
HTTP for GET /presence/{channel} and /channels/{channel}, tokens minted by python3-jwt.

Covered: a user with three tabs (on whichever worker each lands) is one member: join on the
first, no event for the others, leave after the last, exactly once each; the snapshot over /ws
and GET /presence lists the member with its three connections, pages with limit/cursor; an
anonymous connection is a member by its connection id; SSE gets event: herald-join /
herald-leave with ?presence=1; asking presence on a channel without presence=on is refused
(/ws error presence_off, SSE 400, GET /presence 404); /channels/{ch} counts members.
Several joins and leaves of a channel reaching a worker in one loop pass come as one
presence_events frame (a burst of subscribes read at once), unfolded here into the events; with
presence_hold, those of a whole window, in order, none merged.
Ephemeral publishes reach /ws, herald.v1 and SSE subscribers live, stamped with the sender,
without an id; they never appear in /poll nor on resume, consume no id; ephemeral_rate refuses
the sixth of a burst of five with rate_limited and retry_after_ms. A long poll asking with
?presence=1 / ?ephemeral=1 is answered by joins, leaves and ephemeral messages ("events", its
cursor unchanged), one that does not ask is not woken by them, and an answer from history never
holds one; a short poll with ?presence=1 gets a snapshot page instead, with presence_cursor.
Attack: presence on more channels than presence_max_channels (joins past it are not listed,
logged, others served), a presence_hold window past 1,024 events of a channel (sent at once),
and a churn of connections joining and leaving (the table back to its one
watcher: no member, channel or connection left behind; every join matched by one leave; the
watcher served).
"""
import asyncio
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream  # noqa: E402

hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

SECRET = "presence-test-secret-of-more-than-32-bytes"
IO = 10.0
RULES = [
    "room:* subscribe=auth publish=subscriber presence=on",
    "anon:* subscribe=any publish=subscriber presence=on",
    "plain:* subscribe=any publish=subscriber",
]


def conf_text(extra=None, rules=RULES):
    return hh.conf_with_rules({"auth_jwt_secret": SECRET, "ws_client_publish": "on",
                               "ephemeral_rate": "5"}, rules, extra)


def mint(sub, **claims):
    return hh.jwt_token(SECRET, sub, **claims)


run = hh.run_async


async def recv_json(ws, timeout=IO):
    """The next object from ws; a batch of presence events ({"type":"presence_events"}) is
    unfolded into its joins and leaves, each as the single event it stands for."""
    pending = getattr(ws, "unfolded", None)
    if pending:
        return pending.pop(0)
    m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if m.get("type") != "presence_events":
        return m
    ws.batches = getattr(ws, "batches", 0) + 1
    evs = [dict(e, channel=m["channel"]) for e in m["events"]]
    assert len(evs) >= 2 and all(e["type"] in ("join", "leave") for e in evs), m
    ws.unfolded = evs[1:]
    return evs[0]


async def recv_until(ws, pred, timeout=IO):
    return await hh.ws_recv_until(ws, pred, timeout, recv=recv_json)


async def connect(port, token=None, path="/ws", **kw):
    """/ws (or path) with ?token=; without a token, /ws says {"op":"auth"} first (auth is on)."""
    if token:
        path += ("&" if "?" in path else "?") + "token=" + token
    ws = await hh.ws_connect(port, path, **kw)
    if not token and path == "/ws":
        await ws.send(json.dumps({"op": "auth", "ref": "auth"}))
        m, _ = await recv_until(ws, lambda m: m.get("ref") == "auth")
        assert m["type"] == "authenticated", m
    return ws


def pget(port, path):
    """GET path: (status, JSON body)."""
    st, body, _ = hh.get_json(port, path)
    return st, body


def scrape(port):
    st, _, body = hh.request(port, "GET", "/metrics")
    assert st == 200, st
    return body.decode()


async def subscribe(ws, channel, presence=False, ref="s"):
    req = {"op": "subscribe", "channel": channel, "ref": ref}
    if presence:
        req["presence"] = True
    await ws.send(json.dumps(req))
    m, _ = await recv_until(ws, lambda m: m.get("ref") == ref)
    return m


async def snapshot(ws, channel, ref="p", **kw):
    req = {"op": "presence", "channel": channel, "ref": ref}
    req.update(kw)
    await ws.send(json.dumps(req))
    m, _ = await recv_until(ws, lambda m: m.get("ref") == ref)
    return m


async def quiet(ws, port, channel, timeout=IO):
    """Publishes a marker on channel (HTTP, loopback backend) and returns what ws received before
    it: nothing else must have been on its way."""
    mid = hh.publish(port, channel, "marker")
    _, seen = await recv_until(ws, lambda m: m.get("type") == "message" and m.get("id") == mid,
                               timeout)
    return seen[:-1]


def presence_events(msgs):
    return [(m["type"], m["member"].get("sub") or m["member"].get("conn"))
            for m in msgs if m.get("type") in ("join", "leave")]


class Presence(hh.HeraldTestCase):
    """One server, two workers: auth with rooms (presence on), anon: (presence on, anonymous)
    and plain: (no presence)."""

    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf_raw=conf_text())
        cls.port = cls.h.port
        hh.require_websocket(cls.port, "/ws")

    def test_three_tabs_one_member(self):
        async def go():
            bob = await connect(self.port, mint("bob", info={"name": "Bob"}))
            r = await subscribe(bob, "room:tabs", presence=True)
            self.assertEqual(r["type"], "subscribed", r)
            m, _ = await recv_until(bob, lambda m: m.get("type") == "join")
            self.assertEqual(m["member"], {"sub": "bob", "info": {"name": "Bob"}})
            self.assertEqual(m["channel"], "room:tabs")
            tok = mint("alice", info={"name": "Alice"})
            tabs = []
            for i in range(3):
                t = await connect(self.port, tok)
                self.assertEqual((await subscribe(t, "room:tabs"))["type"], "subscribed")
                tabs.append(t)
            join, seen = await recv_until(bob, lambda m: m.get("type") == "join")
            self.assertEqual(join["member"], {"sub": "alice", "info": {"name": "Alice"}}, join)
            self.assertRegex(join["conn"], r"^[0-9a-f]{8}-[0-9a-f]+$")
            self.assertNotIn("id", join)
            # the second and third tab are no news
            self.assertEqual(presence_events(await quiet(bob, self.port, "room:tabs")), [])
            snap = await snapshot(bob, "room:tabs")
            self.assertEqual(snap["type"], "presence", snap)
            self.assertEqual(snap["count"], 2)
            self.assertIsNone(snap["next"])
            byname = {m["sub"]: m for m in snap["members"]}
            self.assertEqual(sorted(byname), ["alice", "bob"])
            self.assertEqual(len(byname["alice"]["conns"]), 3)
            self.assertEqual(len(set(byname["alice"]["conns"])), 3)
            self.assertIn(join["conn"], byname["alice"]["conns"])
            self.assertEqual(byname["alice"]["info"], {"name": "Alice"})
            # HTTP snapshot and the channel's count agree
            st, body = pget(self.port, "/presence/room:tabs")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["count"], 2)
            self.assertEqual(sorted(m["sub"] for m in body["members"]), ["alice", "bob"])
            st, info = pget(self.port, "/channels/room:tabs")
            self.assertEqual((st, info["presence"]), (200, 2), info)
            # two tabs close: nothing; the last one: one leave
            await tabs[0].close()
            await tabs[1].close()
            self.assertEqual(presence_events(await quiet(bob, self.port, "room:tabs")), [])
            await tabs[2].close()
            leave, seen = await recv_until(bob, lambda m: m.get("type") == "leave")
            self.assertEqual(leave["member"]["sub"], "alice")
            self.assertEqual(presence_events(seen), [("leave", "alice")])
            self.assertEqual(presence_events(await quiet(bob, self.port, "room:tabs")), [])
            snap = await snapshot(bob, "room:tabs")
            self.assertEqual([m["sub"] for m in snap["members"]], ["bob"])
            await bob.close()
            hh.wait_for(lambda: pget(self.port, "/presence/room:tabs")[1]["count"] == 0,
                        IO, "bob left")
        run(go())

    def test_unsubscribe_leaves(self):
        async def go():
            obs = await connect(self.port, mint("obs"))
            await subscribe(obs, "room:unsub", presence=True)
            await recv_until(obs, lambda m: m.get("type") == "join")
            carl = await connect(self.port, mint("carl"))
            await subscribe(carl, "room:unsub")
            await recv_until(obs, lambda m: m.get("type") == "join" and
                             m["member"]["sub"] == "carl")
            await carl.send(json.dumps({"op": "unsubscribe", "channel": "room:unsub",
                                        "ref": "u"}))
            await recv_until(carl, lambda m: m.get("ref") == "u")
            leave, _ = await recv_until(obs, lambda m: m.get("type") == "leave")
            self.assertEqual(leave["member"]["sub"], "carl")
            # carl is still connected, no longer present
            snap = await snapshot(obs, "room:unsub")
            self.assertEqual([m["sub"] for m in snap["members"]], ["obs"])
            await carl.close()
            self.assertEqual(presence_events(await quiet(obs, self.port, "room:unsub")), [])
            await obs.close()
        run(go())

    def test_anonymous_members_by_connection(self):
        async def go():
            a = await connect(self.port)
            r = await subscribe(a, "anon:lobby", presence=True)
            self.assertEqual(r["type"], "subscribed", r)
            me, _ = await recv_until(a, lambda m: m.get("type") == "join")
            self.assertEqual(set(me["member"]), {"conn"})
            self.assertEqual(me["member"]["conn"], me["conn"])
            b = await connect(self.port)
            await subscribe(b, "anon:lobby")
            other, _ = await recv_until(a, lambda m: m.get("type") == "join")
            self.assertNotEqual(other["conn"], me["conn"])
            snap = await snapshot(a, "anon:lobby")
            self.assertEqual(sorted(m["conn"] for m in snap["members"]),
                             sorted([me["conn"], other["conn"]]))
            await b.close()
            leave, _ = await recv_until(a, lambda m: m.get("type") == "leave")
            self.assertEqual(leave["member"], {"conn": other["conn"]})
            await a.close()
        run(go())

    def test_paging(self):
        async def go():
            users = ["u%02d" % i for i in range(7)]
            conns = []
            for u in users:
                c = await connect(self.port, mint(u))
                await subscribe(c, "room:paging")
                conns.append(c)
            hh.wait_for(lambda: pget(self.port, "/presence/room:paging")[1]["count"] == 7,
                        IO, "7 members")
            got, cursor = [], None
            while True:
                kw = {"limit": 3}
                if cursor:
                    kw["cursor"] = cursor
                page = await snapshot(conns[0], "room:paging", **kw)
                self.assertEqual(page["count"], 7)
                self.assertLessEqual(len(page["members"]), 3)
                got += [m["sub"] for m in page["members"]]
                cursor = page["next"]
                if cursor is None:
                    break
            self.assertEqual(got, users)
            # HTTP: the same pages
            st, p1 = pget(self.port, "/presence/room:paging?limit=4")
            self.assertEqual([m["sub"] for m in p1["members"]], users[:4])
            st, p2 = pget(self.port, "/presence/room:paging?limit=4&cursor=" + p1["next"])
            self.assertEqual([m["sub"] for m in p2["members"]], users[4:])
            self.assertIsNone(p2["next"])
            for bad in ("limit=0", "limit=1001", "limit=x"):
                st, body = pget(self.port, "/presence/room:paging?" + bad)
                self.assertEqual(st, 400, (bad, body))
            bad = await snapshot(conns[0], "room:paging", limit=0)
            self.assertEqual((bad["type"], bad["code"]), ("error", "bad_request"))
            for c in conns:
                await c.close()
        run(go())

    def test_presence_off_refused(self):
        async def go():
            c = await connect(self.port, mint("dan"))
            r = await subscribe(c, "plain:x", presence=True)
            self.assertEqual((r["type"], r["code"]), ("error", "presence_off"), r)
            self.assertIn("presence=on", r["error"])
            r = await snapshot(c, "plain:x")
            self.assertEqual((r["type"], r["code"]), ("error", "presence_off"), r)
            await c.send(json.dumps({"op": "subscribe", "channel": "room:x", "presence": "yes",
                                     "ref": "b"}))
            r, _ = await recv_until(c, lambda m: m.get("ref") == "b")
            self.assertEqual((r["type"], r["code"]), ("error", "bad_presence"), r)
            # a subscriber of a channel without presence is nobody's member
            r = await subscribe(c, "plain:x", ref="c")
            self.assertEqual(r["type"], "subscribed")
            await c.close()
        run(go())
        s = SseStream(self.port, "/sse/plain:x?presence=1")
        self.addCleanup(s.close)
        self.assertEqual(s.status, 400)
        self.assertIn(b"presence=on", s.body)
        st, body = pget(self.port, "/presence/plain:x")
        self.assertEqual(st, 404, body)
        s2 = SseStream(self.port, "/sse/anon:x?presence=maybe")
        self.addCleanup(s2.close)
        self.assertEqual(s2.status, 400)

    def test_sse_events_and_member(self):
        s = SseStream(self.port, "/sse/room:sse?presence=1&token=" + mint("eve", info={"n": 1}))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        ev = s.next_event(IO)
        self.assertEqual(ev.event, "herald-join", ev)
        self.assertIsNone(ev.id)
        self.assertEqual(json.loads(ev.text)["member"], {"sub": "eve", "info": {"n": 1}})

        async def go():
            f = await connect(self.port, mint("frank"))
            await subscribe(f, "room:sse")
            ev = s.next_event(IO)
            self.assertEqual(ev.event, "herald-join")
            self.assertEqual(json.loads(ev.text)["member"]["sub"], "frank")
            snap = await snapshot(f, "room:sse")
            self.assertEqual(sorted(m["sub"] for m in snap["members"]), ["eve", "frank"])
            await f.close()
            ev = s.next_event(IO)
            self.assertEqual(ev.event, "herald-leave")
            data = json.loads(ev.text)
            self.assertEqual((data["channel"], data["member"]["sub"]), ("room:sse", "frank"))
        run(go())

    def test_herald_v1_events(self):
        async def go():
            tok = mint("gil")
            v1 = await hh.ws_connect(self.port, "/ws/room:v1?presence=1&token=" + tok,
                                     subprotocols=["herald.v1"])
            me = await recv_json(v1)
            self.assertEqual((me["type"], me["member"]["sub"]), ("join", "gil"), me)
            h = await connect(self.port, mint("hal"))
            await subscribe(h, "room:v1")
            m = await recv_json(v1)
            self.assertEqual((m["type"], m["member"]["sub"]), ("join", "hal"))
            await h.close()
            m = await recv_json(v1)
            self.assertEqual((m["type"], m["member"]["sub"]), ("leave", "hal"))
            await v1.close()
            # a plain /ws/{channel} has no envelope for the events: refused before the upgrade
            st, _, body = hh.request(self.port, "GET", "/ws/room:v1?presence=1&token=" + tok,
                                     headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                              "Sec-WebSocket-Version": "13",
                                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            self.assertEqual(st, 400, body)
            self.assertIn(b"presence=1 needs the herald.v1 subprotocol", body)
        run(go())

    def test_events_batched_per_pass(self):
        """A burst of joins on one worker: the joins of one pass come in one frame, which holds
        exactly the events it stands for (the pass is the server's: a burst read at once)."""
        h = self.start_herald(conf_raw=conf_text(), workers=1)
        hh.require_websocket(h.port, "/ws")

        async def go():
            watcher = await connect(h.port)
            await subscribe(watcher, "anon:burst", presence=True)
            await recv_until(watcher, lambda m: m.get("type") == "join")  # itself
            for attempt in range(3):
                conns = await asyncio.gather(*[connect(h.port) for _ in range(40)])
                req = json.dumps({"op": "subscribe", "channel": "anon:burst"})
                for c in conns:  # sent back to back: the server reads many in one pass
                    await c.send(req)
                joins = []
                while len(joins) < 40:
                    m = await recv_json(watcher)
                    if m.get("type") == "join":
                        joins.append(m["conn"])
                self.assertEqual(len(set(joins)), 40)
                await asyncio.gather(*[c.close() for c in conns])
                leaves = []
                while len(leaves) < 40:
                    m = await recv_json(watcher)
                    if m.get("type") == "leave":
                        leaves.append(m["conn"])
                self.assertEqual(sorted(leaves), sorted(joins))
                if getattr(watcher, "batches", 0):
                    break
            self.assertGreater(getattr(watcher, "batches", 0), 0,
                               "80 joins and leaves in bursts came one frame each")
            self.assertEqual(presence_events(await quiet(watcher, h.port, "anon:burst")), [])
            await watcher.close()
        run(go())

    def test_events_held(self):
        """presence_hold 3s and its leading edge: the watcher's own join, the first event of a
        quiet channel, comes at once; the joins and leaves that follow within the hold wait for
        the window the first of them opens and come in one frame when it ends, in order, nothing
        merged: a member who leaves and joins again within it is both events."""
        h = self.start_herald(conf_raw=conf_text({"presence_hold": "3s"}))
        hh.require_websocket(h.port, "/ws")

        async def go():
            watcher, a, b = [await connect(h.port) for _ in range(3)]
            t0 = time.monotonic()
            await subscribe(watcher, "anon:held", presence=True)
            own = await recv_json(watcher)
            self.assertEqual(own["type"], "join", own)
            self.assertLess(time.monotonic() - t0, 2.5, "a quiet channel's join was held")
            t1 = time.monotonic()
            a_joined = None  # by then a's join had reached the server
            for ws, op in ((a, "subscribe"), (b, "subscribe"), (a, "unsubscribe"),
                           (a, "subscribe")):
                await ws.send(json.dumps({"op": op, "channel": "anon:held", "ref": op}))
                await recv_until(ws, lambda m: m.get("ref") == op)
                if a_joined is None:
                    a_joined = time.monotonic() - t0
            took = time.monotonic() - t1
            first = await recv_json(watcher)
            waited = time.monotonic() - t1
            evs = [first] + [await recv_json(watcher) for _ in range(3)]
            self.assertEqual([e["type"] for e in evs], ["join", "join", "leave", "join"])
            conns = [e["conn"] for e in evs]
            self.assertEqual((conns[0], conns[2], conns[3]), (conns[0],) * 3, conns)
            self.assertNotEqual(conns[0], conns[1])
            self.assertNotIn(own["conn"], conns)
            if a_joined < 2.9:  # within the hold of the watcher's join (a machine not stalled)
                self.assertGreaterEqual(waited, 2.9, "a held event came before the hold ended")
                if took < 2.5:  # the four operations fell in one window: one frame
                    self.assertEqual(getattr(watcher, "batches", 0), 1)
            self.assertEqual(presence_events(await quiet(watcher, h.port, "anon:held")), [])
            for c in (watcher, a, b):
                await c.close()
        run(go())

    def test_events_held_across_workers(self):
        """presence_hold 1s, two workers: the joins and leaves made on one worker while the
        watcher's worker holds a window reach that worker without a wake-up (hub.c,
        hd_hub_push_delivery_lazy) and must come when the window ends, every one once, in order.
        Here nothing else happens on the watcher's worker, so without the drain at the window's
        end they would wait for a wake-up that never comes."""
        h = self.start_herald(conf_raw=conf_text({"presence_hold": "1s"}), workers=2)
        hh.require_websocket(h.port, "/ws")

        async def worker_of(ws, i):
            # its own join, alone on a channel of its own: the worker is the id's top 16 bits
            await subscribe(ws, "anon:self%d" % i, presence=True, ref="self")
            m, _ = await recv_until(ws, lambda m: m.get("type") == "join")
            return int(m["conn"].rsplit("-", 1)[1], 16) >> 48

        async def go():
            conns = [await connect(h.port) for _ in range(16)]  # spread by SO_REUSEPORT
            workers = await asyncio.gather(*[worker_of(c, i) for i, c in enumerate(conns)])
            watcher = conns[0]
            members = [c for c, w in zip(conns, workers) if w != workers[0]][:6]
            self.assertGreaterEqual(len(members), 2, workers)
            await subscribe(watcher, "anon:spread", presence=True)  # opens its worker's window
            for i, ws in enumerate(members):
                await subscribe(ws, "anon:spread", ref="m%d" % i)
            joins = []
            while len(joins) < 1 + len(members):
                m = await recv_json(watcher, IO)
                self.assertEqual(m["type"], "join", m)
                joins.append(m["conn"])
            self.assertEqual(len(set(joins)), 1 + len(members), joins)
            for ws in members:
                await ws.send(json.dumps({"op": "unsubscribe", "channel": "anon:spread"}))
            leaves = []
            while len(leaves) < len(members):
                m = await recv_json(watcher, IO)
                self.assertEqual(m["type"], "leave", m)
                leaves.append(m["conn"])
            self.assertEqual(leaves, joins[1:])
            self.assertEqual(presence_events(await quiet(watcher, h.port, "anon:spread")), [])
            for c in conns:
                await c.close()
        run(go())

    # ---- ephemeral ----

    def test_ephemeral_live_only(self):
        async def go():
            before = hh.publish(self.port, "room:eph", "before")
            r1 = await connect(self.port, mint("ivy"))
            await subscribe(r1, "room:eph")
            sse = SseStream(self.port, "/sse/room:eph?token=" + mint("jay"))
            self.addCleanup(sse.close)
            self.assertEqual(sse.status, 200)
            v1 = await hh.ws_connect(self.port, "/ws/room:eph?token=" + mint("kim"),
                                     subprotocols=["herald.v1"])
            plain = await hh.ws_connect(self.port, "/ws/room:eph?token=" + mint("lou"))
            await asyncio.sleep(0.3)  # the streams are live
            snd = await connect(self.port, mint("max", info={"name": "Max"}))
            await snd.send(json.dumps({"op": "publish", "channel": "room:eph", "ephemeral": True,
                                       "data": {"typing": True}, "ref": "e",
                                       "publisher": {"sub": "forged"}}))
            rep, _ = await recv_until(snd, lambda m: m.get("ref") == "e")
            self.assertEqual(rep, {"type": "published", "channel": "room:eph",
                                   "ephemeral": True, "ref": "e"})
            want = {"type": "ephemeral", "channel": "room:eph",
                    "publisher": {"sub": "max", "info": {"name": "Max"}},
                    "content_type": "application/json", "data": {"typing": True}}
            m, _ = await recv_until(r1, lambda m: m.get("type") == "ephemeral")
            self.assertEqual(m, want)
            m = await recv_json(v1)
            self.assertEqual(m, want)
            self.assertEqual(json.loads(await asyncio.wait_for(plain.recv(), IO)),
                             {"typing": True})
            ev = sse.next_event(IO)
            self.assertEqual(ev.event, "herald-ephemeral")
            self.assertIsNone(ev.id)
            self.assertEqual(json.loads(ev.text), {k: v for k, v in want.items() if k != "type"})
            # never stored, no id consumed: the next message's id follows "before"'s
            after = hh.publish(self.port, "room:eph", "after")
            ep, sb = before.split("-")
            ea, sa = after.split("-")
            st, poll = pget(self.port, "/poll/room:eph?since=%s&token=%s" % (before, mint("pia")))
            self.assertEqual(st, 200, poll)
            self.assertEqual([m["id"] for m in poll["messages"]], [after])
            # resume from before: only "after"
            res = await connect(self.port, mint("ned"))
            await res.send(json.dumps({"op": "subscribe", "channel": "room:eph",
                                       "since": before, "ref": "r"}))
            sub, seen = await recv_until(res, lambda m: m.get("ref") == "r")
            self.assertEqual([m["id"] for m in seen if m.get("type") == "message"], [after])
            self.assertFalse([m for m in seen if m.get("type") == "ephemeral"])
            for c in (r1, v1, plain, snd, res):
                await c.close()
            return int(sb), int(sa)
        sb, sa = run(go())
        self.assertGreater(sa, sb)

    def test_ephemeral_rate(self):
        async def go():
            c = await connect(self.port, mint("olga"))
            for i in range(5):
                await c.send(json.dumps({"op": "publish", "channel": "room:rate",
                                         "ephemeral": True, "data": "t", "ref": i}))
                r, _ = await recv_until(c, lambda m: m.get("ref") == i)
                self.assertEqual(r["type"], "published", r)
            await c.send(json.dumps({"op": "publish", "channel": "room:rate",
                                     "ephemeral": True, "data": "t", "ref": "x"}))
            r, _ = await recv_until(c, lambda m: m.get("ref") == "x")
            self.assertEqual((r["type"], r["code"]), ("error", "rate_limited"), r)
            self.assertIn("ephemeral_rate 5/s", r["error"])
            self.assertGreater(r["retry_after_ms"], 0)
            # a normal publish is not counted against ephemeral_rate
            await c.send(json.dumps({"op": "publish", "channel": "room:rate", "data": "m",
                                     "ref": "n"}))
            r, _ = await recv_until(c, lambda m: m.get("ref") == "n")
            self.assertEqual(r["type"], "published", r)
            self.assertIn("id", r)
            await asyncio.sleep(0.25)
            await c.send(json.dumps({"op": "publish", "channel": "room:rate",
                                     "ephemeral": True, "data": "t", "ref": "y"}))
            r, _ = await recv_until(c, lambda m: m.get("ref") == "y")
            self.assertEqual(r["type"], "published", r)
            await c.close()
        run(go())
        metrics = scrape(self.port)
        self.assertRegex(metrics, r"herald_client_publishes_refused_total\{reason=\"ephemeral_rate\"\} [1-9]")


    def held(self, n):
        """Waits until n long polls are open on the server (they go live in the same loop pass)."""
        hh.wait_for(lambda: sum(w["longpoll"] for w in hh.stats(self.port)["per_worker"]) >= n,
                    IO, "%d long poll(s) held" % n)

    def test_longpoll_events(self):
        """A long poll that asks gets joins, leaves and ephemeral messages while it is held, in
        "events" with no message and its cursor unchanged; one that does not ask is not woken
        by an ephemeral message; an answer from history never holds an event."""
        tok = mint("lpw")

        async def lp(query):
            path = "/lp/room:lp?timeout=20&token=%s&%s" % (tok, query)
            return await asyncio.to_thread(hh.get_json, self.port, path, 30)

        async def answer(task):
            st, body, _ = await asyncio.wait_for(task, IO)
            self.assertEqual(st, 200, body)
            return body

        async def go():
            before = hh.publish(self.port, "room:lp", "before")
            t = asyncio.ensure_future(lp("since=%s&presence=1&ephemeral=1" % before))
            await asyncio.to_thread(self.held, 1)
            ann = await connect(self.port, mint("ann2"))
            await subscribe(ann, "room:lp")
            body = await answer(t)
            self.assertEqual((body["messages"], body["next"], body["gap"]), ([], before, False))
            self.assertEqual([(e["type"], e["member"]["sub"]) for e in body["events"]],
                             [("join", "ann2")])
            self.assertEqual(set(body["events"][0]), {"type", "member", "conn"})
            t = asyncio.ensure_future(lp("since=%s&ephemeral=1" % before))
            await asyncio.to_thread(self.held, 1)
            await ann.send(json.dumps({"op": "publish", "channel": "room:lp", "ephemeral": True,
                                       "data": {"typing": True}}))
            body = await answer(t)
            self.assertEqual(body["events"], [{
                "type": "ephemeral", "channel": "room:lp", "publisher": {"sub": "ann2"},
                "content_type": "application/json", "data": {"typing": True}}])
            self.assertEqual((body["messages"], body["next"]), ([], before))
            # not asked: an ephemeral message does not answer it; the next message does, alone
            t = asyncio.ensure_future(lp("since=%s&presence=1" % before))
            await asyncio.to_thread(self.held, 1)
            await ann.send(json.dumps({"op": "publish", "channel": "room:lp", "ephemeral": True,
                                       "data": {"typing": True}, "ref": "e2"}))
            await recv_until(ann, lambda m: m.get("ref") == "e2")
            await asyncio.sleep(0.3)
            self.assertFalse(t.done(), "an ephemeral message answered a poll that did not ask")
            mid = hh.publish(self.port, "room:lp", "after")
            body = await answer(t)
            self.assertEqual(([m["id"] for m in body["messages"]], body["next"]), ([mid], mid))
            self.assertNotIn("events", body)
            t = asyncio.ensure_future(lp("since=%s&presence=1" % mid))
            await asyncio.to_thread(self.held, 1)
            await ann.close()
            body = await answer(t)
            self.assertEqual([(e["type"], e["member"]["sub"]) for e in body["events"]],
                             [("leave", "ann2")])
            # from history: messages only, never an event
            st, body = pget(self.port, "/lp/room:lp?since=%s&presence=1&ephemeral=1&timeout=0"
                            "&token=%s" % (before, tok))
            self.assertEqual((st, [m["id"] for m in body["messages"]]), (200, [mid]), body)
            self.assertNotIn("events", body)
        run(go())
        for path, why in (("/lp/plain:x?presence=1", "presence=on"),
                          ("/lp/plain:x?ephemeral=maybe", "ephemeral must be"),
                          ("/poll/plain:x?ephemeral=1", "live only")):
            st, body = pget(self.port, path)
            self.assertEqual(st, 400, path)
            self.assertIn(why, body["error"])

    def test_short_poll_presence(self):
        """A short poll cannot replay presence events (never stored): ?presence=1 gives it the
        members instead, a snapshot page beside the messages."""
        async def go():
            ann = await connect(self.port, mint("sp1", info={"n": 1}))
            await subscribe(ann, "room:sp")
            bob = await connect(self.port, mint("sp2"))
            await subscribe(bob, "room:sp")
            mid = hh.publish(self.port, "room:sp", "m")
            q = "&token=" + mint("spq")
            st, body = pget(self.port, "/poll/room:sp?presence=1" + q)
            self.assertEqual(st, 200, body)
            self.assertEqual(([m["id"] for m in body["messages"]], body["next"]), ([mid], mid))
            p = body["presence"]
            self.assertEqual((p["count"], [m["sub"] for m in p["members"]], p["next"]),
                             (2, ["sp1", "sp2"], None), p)
            self.assertEqual(p["members"][0]["info"], {"n": 1})
            self.assertEqual(len(p["members"][0]["conns"]), 1)
            st, body = pget(self.port, "/poll/room:sp?since=%s&presence=1&presence_cursor=sp1%s"
                            % (mid, q))
            self.assertEqual((st, body["messages"]), (200, []), body)
            self.assertEqual([m["sub"] for m in body["presence"]["members"]], ["sp2"])
            st, body = pget(self.port, "/poll/room:sp?since=%s%s" % (mid, q))
            self.assertEqual(set(body), {"channel", "messages", "next", "gap"})
            await ann.close()
            await bob.close()
        run(go())
        st, body = pget(self.port, "/poll/plain:x?presence=1")
        self.assertEqual(st, 400, body)

class PresenceLimits(hh.HeraldTestCase):
    """presence_max_channels 4: joins past it are not listed; churn leaves nothing behind."""

    def test_channel_budget(self):
        h = self.start_herald(conf_raw=conf_text({"presence_max_channels": "4"}))
        hh.require_websocket(h.port, "/ws")

        async def go():
            c = await connect(h.port, mint("pat"))
            for i in range(12):
                r = await subscribe(c, "room:b%d" % i, ref=i)
                self.assertEqual(r["type"], "subscribed", r)
            counts = [pget(h.port, "/presence/room:b%d" % i)[1]["count"]
                      for i in range(12)]
            self.assertEqual(sum(counts), 4, counts)
            self.assertEqual(counts[:4], [1, 1, 1, 1])
            # a channel past the budget still delivers
            mid = hh.publish(h.port, "room:b11", "still served")
            m, _ = await recv_until(c, lambda m: m.get("type") == "message")
            self.assertEqual(m["id"], mid)
            await c.close()
            hh.wait_for(lambda: pget(h.port, "/presence/room:b0")[1]["count"] == 0, IO,
                        "members gone")
            # the budget is free again
            d = await connect(h.port, mint("quinn"))
            await subscribe(d, "room:b9")
            hh.wait_for(lambda: pget(h.port, "/presence/room:b9")[1]["count"] == 1, IO,
                        "room:b9 tracked once there is room")
            await d.close()
        run(go())
        h.wait_log(r"presence joins refused: presence_max_channels \(4\)")
        metrics = scrape(h.port)
        self.assertRegex(metrics, r"herald_presence_refused_total [1-9]")

    def test_hold_bounded(self):
        """presence_hold 5s: a channel holding 1,024 events is sent in that loop pass, not at the
        end of the hold (a window holds what its channels bound, not what its length lets in)."""
        h = self.start_herald(conf_raw=conf_text({"presence_hold": "5s",
                                                  "max_connections": "2000"}), workers=1)
        hh.require_websocket(h.port, "/ws")
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])

        async def go():
            watcher = await connect(h.port)
            t0 = time.monotonic()
            await subscribe(watcher, "anon:cap", presence=True)
            own = await recv_json(watcher)  # a quiet channel's: at once
            self.assertEqual(own["type"], "join", own)
            # the first SSE join, within the hold of that one, opens the window
            for _ in range(1100):  # anonymous SSE streams: a member each
                s = socket.create_connection(("127.0.0.1", h.port), timeout=IO)
                s.sendall(b"GET /sse/anon:cap HTTP/1.1\r\nHost: t\r\n\r\n")
                socks.append(s)
            frame = json.loads(await asyncio.wait_for(watcher.recv(), IO))
            took = time.monotonic() - t0
            self.assertEqual(frame["type"], "presence_events")
            # 1,024 or more: the events that reached the worker in the pass that made 1,024
            self.assertGreaterEqual(len(frame["events"]), 1024)
            self.assertLess(took, 4.5, "the batch waited for the end of the hold")
            # the rest come when the window ends: every join once
            n = len(frame["events"])
            while n < 1100:
                m = await recv_json(watcher, IO)
                self.assertEqual(m["type"], "join", m)
                n += 1
            await watcher.close()
        run(go())
        self.assertServed(h.port)

    def test_churn_bounded(self):
        h = self.start_herald(conf_raw=conf_text())
        hh.require_websocket(h.port, "/ws")

        async def churn(n_rounds, width):
            for r in range(n_rounds):
                conns = await asyncio.gather(*[connect(h.port) for _ in range(width)])
                await asyncio.gather(*[subscribe(c, "anon:churn%d" % (i % 5), ref=i)
                                       for i, c in enumerate(conns)])
                await asyncio.gather(*[c.close() for c in conns])

        async def go():
            watcher = await connect(h.port)
            await subscribe(watcher, "anon:churn0", presence=True)
            await churn(13, 40)
            hh.wait_for(lambda: all(
                pget(h.port, "/presence/anon:churn%d" % i)[1]["count"] ==
                (1 if i == 0 else 0) for i in range(5)), IO, "every churned member left")
            # nothing left behind: one channel tracked (the watcher's), one member
            pres = pget(h.port, "/stats")[1]["presence"]
            self.assertEqual((pres["channels"], pres["members"]), (1, 1), pres)
            self.assertEqual(pres["events"], 1 + 2 * 13 * 40, pres)
            # the watcher saw every join matched by its leave, and is still served; the last
            # may still be held (presence_hold) when the marker, never held, comes
            seen = await quiet(watcher, h.port, "anon:churn0")
            while sum(m.get("type") == "leave" for m in seen) < 13 * 8:
                seen.append(await recv_json(watcher, IO))
            joins = [m["conn"] for m in seen if m.get("type") == "join"]
            leaves = [m["conn"] for m in seen if m.get("type") == "leave"]
            self.assertEqual(sorted(joins[1:]), sorted(leaves))  # [0]: the watcher itself
            self.assertEqual(len(leaves), 13 * 8)
            self.assertEqual(presence_events(await quiet(watcher, h.port, "anon:churn0")), [])
            await watcher.close()
        run(go())
        hh.wait_for(lambda: pget(h.port, "/stats")[1]["presence"]["members"] == 0, IO,
                    "the watcher left")
        self.assertEqual(pget(h.port, "/stats")[1]["presence"]["channels"], 0)


if __name__ == "__main__":
    hh.main()
