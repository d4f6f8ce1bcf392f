# SPDX-License-Identifier: MIT
"""Revocation and disconnects (docs/auth.md, "Revocation" and "Disconnecting"), against the real
binary with tokens minted by Debian's python3-jwt, WebSocket peers from python3-websockets, raw
SSE and long-poll clients, and (class RevokeRedis) a real redis-server shared by several nodes.

One node (embedded broker): POST /admin/revoke by sub and by jti ends, within 1 s, a /ws JSON
connection and a /ws/{channel} one (plain and herald.v1: close 4002), an SSE stream (event:
herald-revoked, then the end) and a held long poll (401 token_revoked), while another user's
connections on the same channel stay; the revoked token is refused at connect on every transport
(401, /ws auth message: 4002), with a single-use ticket of that sub, and on an in-place
refresh (token_revoked), until the revocation expires; a jti revocation leaves the sub's other tokens alone. POST /admin/disconnect by sub and
by channel ends connections (4009, herald-disconnected, 409) without refusing them afterwards.
Bad bodies get 400 with a JSON reason; the admin endpoints need the admin key. (The cap,
max_revocations, and memory under a flood of revocations: tests/abuse/test_revocations.py.)

Several nodes sharing Redis: a revocation or a disconnect made on one node ends the matching
connections on both within 1 s; both refuse the token, and so does a third node started after
the revocation (it loads the set from Redis); the cap holds across the cluster.
"""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
from herald_harness import SseStream, request  # noqa: E402

hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

SECRET = "revocation-test-secret-of-more-than-32-bytes"
ADMIN_KEY = "admin-key-for-the-revocation-tests"
IO = 10.0
WITHIN = 1.0  # issue 10: every node ends the matching connections within 1 s
RULES = ["private:* subscribe=grant publish=grant", "public:* subscribe=any"]


def conf_text(extra=None):
    return hh.conf_with_rules({"auth_jwt_secret": SECRET, "admin_key": ADMIN_KEY,
                               "auth_refresh_before": "0"}, RULES, extra)


def mint(sub="42", jti="t1", life_s=600, subscribe=("private:*",)):
    return hh.jwt_token(SECRET, sub, life_s, jti=jti,
                        channels={"subscribe": list(subscribe), "publish": []})


def admin(port, path, body, key=ADMIN_KEY):
    """POST an admin order; returns (status, parsed JSON body, time answered)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    st, hdrs, data = request(port, "POST", path, raw, headers=headers)
    t = time.monotonic()
    try:
        parsed = json.loads(data)
    except ValueError:
        raise AssertionError("%s answered %d with a body that is not JSON: %r" % (path, st, data))
    return st, parsed, t


# ---- peers, each watched by a thread: what ended it and when (time.monotonic()) ----

class Peer(threading.Thread):
    """Opens a connection, sets `ready` once it is live, then records how it ended."""

    def __init__(self, port, path, what):
        super().__init__(daemon=True)
        self.port, self.path, self.what = port, path, what
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error = None
        self.ended_at = None
        self.outcome = None  # transport-specific: a close code, an SSE event, a status
        self.detail = None

    def run(self):
        try:
            self.watch()
        except BaseException as e:  # reported by the test
            self.error = "%s %s: %r" % (self.what, self.path, e)
        finally:
            self.ready.set()
            self.done.set()

    def wait_ready(self, test):
        test.assertTrue(self.ready.wait(IO), "%s never got live" % self.what)
        test.assertIsNone(self.error)

    def wait_end(self, test, timeout=IO):
        test.assertTrue(self.done.wait(timeout), "%s %s did not end" % (self.what, self.path))
        test.assertIsNone(self.error)
        return self.outcome, self.ended_at


class WsPeer(Peer):
    """python3-websockets: /ws (subscribes to `channel` first) or /ws/{channel}."""

    def __init__(self, port, path, channel=None, subprotocols=None, auth=None):
        super().__init__(port, path, "websocket")
        self.channel, self.subprotocols, self.auth = channel, subprotocols, auth
        self.messages = []

    def watch(self):
        asyncio.run(self._watch())

    async def _watch(self):
        websockets = hh.require_websockets()
        kw = {"subprotocols": self.subprotocols} if self.subprotocols else {}
        async with hh.ws_connect(self.port, self.path, **kw) as ws:
            if self.auth is not None:  # "": stays anonymous
                await ws.send(json.dumps({"op": "auth", "token": self.auth or None}))
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.messages.append(m)
            if self.channel:
                await ws.send(json.dumps({"op": "subscribe", "channel": self.channel}))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                    self.messages.append(m)
                    if m.get("type") in ("subscribed", "error"):
                        break
            self.ready.set()
            try:
                while True:
                    self.messages.append(await ws.recv())
            except websockets.ConnectionClosed as e:
                self.ended_at = time.monotonic()
                self.outcome = e.rcvd.code if e.rcvd else None
                self.detail = e.rcvd.reason if e.rcvd else None


class SsePeer(Peer):
    def __init__(self, port, path):
        super().__init__(port, path, "sse")
        self.events = []

    def watch(self):
        s = SseStream(self.port, self.path)
        try:
            if s.status != 200:
                raise AssertionError("SSE refused: %d %r" % (s.status, s.body))
            self.ready.set()
            while True:
                b = s.next_block(120)
                if b is None:
                    self.ended_at = time.monotonic()
                    return
                if b.is_event:
                    self.events.append(b)
                    if b.event in ("herald-revoked", "herald-disconnected"):
                        self.outcome = b.event
                        self.detail = json.loads(b.text)
        finally:
            s.close()


class LpPeer(Peer):
    """A held long poll; `ready` is set once herald logged nothing better: after a short wait
    (a held poll answers nothing until something happens)."""

    def __init__(self, port, path):
        super().__init__(port, path, "long poll")

    def watch(self):
        c = hh.Client(self.port)
        try:
            c.send(hh.build_request("GET", self.path))
            self.ready.set()
            r = c.read_response(timeout=60)
            self.ended_at = time.monotonic()
            self.outcome = r.status
            self.detail = json.loads(r.body) if r.body else None
        finally:
            c.close()


def start(peers, test, settle=0.3):
    for p in peers:
        p.start()
    for p in peers:
        p.wait_ready(test)
    time.sleep(settle)  # long polls held, subscriptions confirmed
    for p in peers:
        test.assertFalse(p.done.is_set(), "%s %s ended early: %r %r" % (
            p.what, p.path, p.outcome, p.error))


def stats_of(port):
    st, hdrs, body = request(port, "GET", "/stats", headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert st == 200, (st, body)
    return json.loads(body)


def metrics_of(port):
    st, hdrs, body = request(port, "GET", "/metrics",
                             headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert st == 200, (st, body)
    return body.decode()


class RevokeMixin:
    """Assertions on peers ended by an order."""

    def assertEndedBy(self, peers, kind, t_order):
        """Every peer ended within WITHIN s of t_order, the way `kind` (revoked|disconnected)
        ends its transport."""
        for p in peers:
            outcome, at = p.wait_end(self, WITHIN + 3)
            self.assertIsNotNone(at, "%s %s: no end recorded" % (p.what, p.path))
            took = at - t_order
            self.assertLess(took, WITHIN, "%s %s ended %.3f s after the order" % (
                p.what, p.path, took))
            if isinstance(p, WsPeer):
                self.assertEqual(outcome, 4002 if kind == "revoked" else 4009,
                                 (p.path, outcome, p.detail))
            elif isinstance(p, SsePeer):
                self.assertEqual(outcome, "herald-" + kind, (p.path, p.events))
                self.assertEqual(p.detail["code"],
                                 "token_revoked" if kind == "revoked" else "disconnected")
            else:
                self.assertEqual(outcome, 401 if kind == "revoked" else 409, (p.path, p.detail))
                self.assertEqual(p.detail["code"],
                                 "token_revoked" if kind == "revoked" else "disconnected")

    def assertAlive(self, peers):
        for p in peers:
            self.assertFalse(p.done.is_set(), "%s %s ended: %r %r" % (
                p.what, p.path, p.outcome, p.detail))

    def assertRefused(self, port, tok, channel="private:r", code="token_revoked"):
        """The token is refused at connect on every transport."""
        s = SseStream(port, "/sse/%s?token=%s" % (channel, tok))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 401, s.body)
        self.assertEqual(json.loads(s.body)["code"], code)
        st, _, body = request(port, "GET", "/lp/%s?timeout=1&token=%s" % (channel, tok))
        self.assertEqual((st, json.loads(body)["code"]), (401, code))
        with hh.Client(port) as c:
            c.send(hh.ws_handshake_request("/ws/%s?token=%s" % (channel, tok)))
            r = c.read_response()
            self.assertEqual(r.status, 401, r)
            self.assertEqual(json.loads(r.body)["code"], code)
        # /ws with the token in its first message: closed 4002 (token revoked).
        ws = hh.RawWS(port, "/ws")
        self.addCleanup(ws.close)
        ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "auth", "token": tok}).encode()))
        self.assertEqual(ws.expect_close()[0], 4002 if code == "token_revoked" else 4401)

    def assertAccepted(self, port, tok, channel="private:r"):
        s = SseStream(port, "/sse/%s?token=%s" % (channel, tok))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)

    def transports(self, port, tok, channel):
        """A live connection of the token on every transport."""
        return [
            WsPeer(port, "/ws?token=" + tok, channel=channel),
            WsPeer(port, "/ws/%s?token=%s" % (channel, tok)),
            WsPeer(port, "/ws/%s?token=%s" % (channel, tok), subprotocols=["herald.v1"]),
            WsPeer(port, "/ws", channel=channel, auth=tok),
            SsePeer(port, "/sse/%s?token=%s" % (channel, tok)),
            SsePeer(port, "/sse?channel=%s&channel=private:other&token=%s" % (channel, tok)),
            LpPeer(port, "/lp/%s?timeout=60&token=%s" % (channel, tok)),
        ]


class RevokeOneNode(RevokeMixin, hh.HeraldTestCase):
    """One node, embedded broker, two workers."""

    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf_raw=conf_text({"max_revocations": "1000"}))
        cls.port = cls.h.port
        hh.require_websocket(cls.port, "/ws")

    def test_revoke_sub_ends_every_transport(self):
        tok = mint(sub="alice", jti="a-1")
        other = mint(sub="bob", jti="b-1")
        mine = self.transports(self.port, tok, "private:r1")
        theirs = [WsPeer(self.port, "/ws/private:r1?token=" + other),
                  SsePeer(self.port, "/sse/private:r1?token=" + other),
                  LpPeer(self.port, "/lp/private:r1?timeout=60&token=" + other)]
        start(mine + theirs, self)
        t0 = time.monotonic()
        st, body, _ = admin(self.port, "/admin/revoke", {"sub": "alice", "expires_in": 4})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["revoked"], {"sub": "alice"})
        self.assertEqual(body["nodes"], 1)
        self.assertIn(body["expires_in"], (4, 5))
        self.assertAlmostEqual(body["until"], time.time() + 4, delta=2)
        self.assertEndedBy(mine, "revoked", t0)
        self.assertAlive(theirs)
        # The others still get messages: the long poll is answered by one.
        hh.publish(self.port, "private:r1", "still here")
        outcome, _ = theirs[2].wait_end(self)
        self.assertEqual(outcome, 200)
        self.assertAlive(theirs[:2])
        for p in theirs[:2]:
            hh.wait_for(lambda: p.messages if isinstance(p, WsPeer) else p.events,
                        what="bob's delivery")
        # Refused at connect until it expires; then taken again.
        self.assertRefused(self.port, tok)
        self.assertRefused(self.port, mint(sub="alice", jti="a-2"))
        self.assertAccepted(self.port, other)
        hh.wait_for(lambda: self._sse_status(tok) == 200, timeout=8, interval=0.2,
                    what="the revocation expiring")
        self.assertAccepted(self.port, tok)

    def _sse_status(self, tok):
        s = SseStream(self.port, "/sse/private:r?token=" + tok)
        s.close()
        return s.status

    def test_revoke_jti_leaves_the_subs_other_tokens(self):
        exp_tok = int(time.time()) + 600
        tok1, tok2 = mint(sub="carol", jti="c-1"), mint(sub="carol", jti="c-2")
        one = self.transports(self.port, tok1, "private:r2")
        two = [WsPeer(self.port, "/ws?token=" + tok2, channel="private:r2"),
               SsePeer(self.port, "/sse/private:r2?token=" + tok2)]
        start(one + two, self)
        t0 = time.monotonic()
        st, body, _ = admin(self.port, "/admin/revoke", {"jti": "c-1", "exp": exp_tok})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["revoked"], {"jti": "c-1"})
        # until the token's exp (and the clock skew, 30 s by default)
        self.assertAlmostEqual(body["until"], exp_tok + 30, delta=1)
        self.assertEndedBy(one, "revoked", t0)
        self.assertAlive(two)
        self.assertRefused(self.port, tok1)
        self.assertAccepted(self.port, tok2)
        # The same order again is accepted (already revoked) and ends nothing more.
        st, body, _ = admin(self.port, "/admin/revoke", {"jti": "c-1", "exp": exp_tok})
        self.assertEqual(st, 200, body)
        time.sleep(0.3)
        self.assertAlive(two)

    def test_refresh_with_a_revoked_token_is_refused(self):
        tok = mint(sub="dave", jti="d-1")
        fresh = mint(sub="dave", jti="d-2")
        st, body, _ = admin(self.port, "/admin/revoke", {"jti": "d-2", "expires_in": 60})
        self.assertEqual(st, 200, body)

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                await ws.send(json.dumps({"op": "refresh", "token": fresh, "ref": 1}))
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual((m["type"], m["code"]), ("error", "token_revoked"), m)
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:r3"}))
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual(m["type"], "subscribed", m)  # the connection goes on

        asyncio.run(asyncio.wait_for(go(), 30))

    def test_revoke_over_http2(self):
        """h2c (curl --http2-prior-knowledge): an SSE stream ends with herald-revoked and a held
        long poll is answered 401 token_revoked, as over HTTP/1.1."""
        curl = hh.require_executable("curl", "curl")
        tok = mint(sub="hugo", jti="hu-1")
        base = "http://127.0.0.1:%d" % self.port
        sse = subprocess.Popen([curl, "-sN", "--http2-prior-knowledge", "--max-time", "20",
                                base + "/sse/private:h2?token=" + tok],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        lp = subprocess.Popen([curl, "-s", "--http2-prior-knowledge", "--max-time", "20",
                               "-w", "\n%{http_code} %{http_version}",
                               base + "/lp/private:h2?timeout=30&token=" + tok],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(sse.kill)
        self.addCleanup(lp.kill)
        # The stream is live once its head and retry: came (before that, an order answers the
        # request 401 instead: test_revoke_sub_ends_every_transport's streams cover both).
        self.assertTrue(sse.stdout.readline().startswith(b"retry:"))
        hh.wait_for(lambda: stats_of(self.port)["connections"]["longpoll"] >= 1,
                    what="the h2 long poll held")
        t0 = time.monotonic()
        st, body, _ = admin(self.port, "/admin/revoke", {"sub": "hugo", "expires_in": 60})
        self.assertEqual(st, 200, body)
        out, _ = sse.communicate(timeout=10)
        t_sse = time.monotonic()
        text = out.decode()
        self.assertIn("event: herald-revoked\n", text, text)
        self.assertIn('"code":"token_revoked"', text)
        out, _ = lp.communicate(timeout=10)
        t_lp = time.monotonic()
        body, _, status = out.decode().rpartition("\n")
        self.assertEqual(status, "401 2", out)
        self.assertEqual(json.loads(body)["code"], "token_revoked")
        self.assertLess(max(t_sse, t_lp) - t0, WITHIN + 0.5)

    def test_ticket_of_a_revoked_sub_is_refused(self):
        def ticket(sub):
            st, _, body = request(self.port, "POST", "/auth/ticket",
                                  json.dumps({"sub": sub, "channels": ["private:*"]}),
                                  headers={"Authorization": "Bearer " + ADMIN_KEY,
                                           "Content-Type": "application/json"})
            self.assertEqual(st, 201, body)
            return json.loads(body)["ticket"]
        st, body, _ = admin(self.port, "/admin/revoke", {"sub": "tina", "expires_in": 60})
        self.assertEqual(st, 200, body)
        s = SseStream(self.port, "/sse/private:t?ticket=" + ticket("tina"))
        self.addCleanup(s.close)
        self.assertEqual((s.status, json.loads(s.body)["code"]), (401, "token_revoked"))
        s2 = SseStream(self.port, "/sse/private:t?ticket=" + ticket("tom"))
        self.addCleanup(s2.close)
        self.assertEqual(s2.status, 200, s2.body)

    def test_disconnect_by_sub_and_by_channel(self):
        tok = mint(sub="erin", jti="e-1")
        other = mint(sub="frank", jti="f-1")
        mine = self.transports(self.port, tok, "private:d1")
        theirs = [WsPeer(self.port, "/ws?token=" + other, channel="private:d1"),
                  SsePeer(self.port, "/sse/private:d1?token=" + other)]
        start(mine + theirs, self)
        t0 = time.monotonic()
        st, body, _ = admin(self.port, "/admin/disconnect", {"sub": "erin"})
        self.assertEqual((st, body), (200, {"disconnected": {"sub": "erin"}, "nodes": 1}))
        self.assertEndedBy(mine, "disconnected", t0)
        self.assertAlive(theirs)
        self.assertAccepted(self.port, tok, "private:d1")  # a kick, not a ban
        # By channel: everyone on it, anonymous ones too; another channel stays.
        on = [WsPeer(self.port, "/ws/public:d2"), SsePeer(self.port, "/sse/public:d2"),
              SsePeer(self.port, "/sse?channel=public:x&channel=public:d2"),
              LpPeer(self.port, "/lp/public:d2?timeout=60"),
              WsPeer(self.port, "/ws", channel="public:d2", auth="")]
        off = [WsPeer(self.port, "/ws/public:d3"), SsePeer(self.port, "/sse/public:d3"),
               LpPeer(self.port, "/lp/public:d3?timeout=60")]
        start(on + off, self)
        t0 = time.monotonic()
        st, body, _ = admin(self.port, "/admin/disconnect", {"channel": "public:d2"})
        self.assertEqual((st, body), (200, {"disconnected": {"channel": "public:d2"}, "nodes": 1}))
        self.assertEndedBy(on, "disconnected", t0)
        self.assertAlive(off + theirs)
        s = stats_of(self.port)
        self.assertGreaterEqual(sum(w["kicked_disconnected"] for w in s["per_worker"]),
                                len(mine) + len(on))
        self.assertAccepted(self.port, tok, "public:d2")

    def test_bad_bodies(self):
        cases = [
            (b"not json", "JSON object"),
            (b"[1]", "JSON object"),
            (b"", "JSON object"),
            ({}, "no target"),
            ({"sub": "a", "jti": "b"}, "exactly one"),
            ({"sub": 42}, "string of 1-255"),
            ({"sub": ""}, "string of 1-255"),
            ({"sub": "x" * 256}, "string of 1-255"),
            ({"sub": "a", "expires_in": 0}, "positive number"),
            ({"sub": "a", "expires_in": -5}, "positive number"),
            ({"sub": "a", "expires_in": "10"}, "positive number"),
            ({"sub": "a", "expires_in": 10, "until": time.time() + 100}, "at most one"),
            ({"sub": "a", "expires_in": 31 * 86400}, "revocation_max_ttl"),
            ({"sub": "a", "until": time.time() - 10}, "already have expired"),
            ({"sub": "a", "exp": time.time() + 100}, "goes with \\\"jti\\\""),
            ({"jti": "a", "exp": time.time() - 100}, "already have expired"),
        ]
        for body, why in cases:
            st, got, _ = admin(self.port, "/admin/revoke", body)
            self.assertEqual(st, 400, (body, got))
            self.assertIn(why.replace("\\", ""), got["error"], (body, got))
        for body, why in [({}, "no target"), ({"sub": "a", "channel": "b"}, "exactly one"),
                          ({"channel": "bad name"}, "bad channel name"),
                          ({"channel": 5}, "string of 1-255"), (b"{", "JSON object")]:
            st, got, _ = admin(self.port, "/admin/disconnect", body)
            self.assertEqual(st, 400, (body, got))
            self.assertIn(why, got["error"], (body, got))
        # Guarded as every /admin/ path: no key 401, a wrong one 403; GET is not routed.
        st, got, _ = admin(self.port, "/admin/revoke", {"sub": "a"}, key=None)
        self.assertEqual(st, 401, got)
        st, got, _ = admin(self.port, "/admin/disconnect", {"sub": "a"}, key="wrong")
        self.assertEqual(st, 403, got)
        st, _, _ = request(self.port, "GET", "/admin/revoke",
                           headers={"Authorization": "Bearer " + ADMIN_KEY})
        self.assertIn(st, (404, 405))
        self.assertServed(self.port)


class RevokeRedis(RevokeMixin, hh.HeraldTestCase):
    """Nodes sharing a real redis-server: orders taken by one node reach every node."""

    def setUp(self):
        self.redis = rs.start_redis(self)

    def node(self, **extra):
        return self.start_herald(conf_raw=conf_text(extra), workers=2,
                                 overrides=["redis unix://" + self.redis.sock,
                                            "redis_timeout 2s"])

    def test_revoke_on_two_nodes_and_a_third_started_later(self):
        a, b = self.node(), self.node()
        hh.require_websocket(a.port, "/ws")
        tok = mint(sub="gina", jti="g-1")
        other = mint(sub="hank", jti="h-1")
        mine = self.transports(a.port, tok, "private:x1") + self.transports(b.port, tok,
                                                                             "private:x1")
        theirs = [WsPeer(a.port, "/ws?token=" + other, channel="private:x1"),
                  SsePeer(b.port, "/sse/private:x1?token=" + other)]
        start(mine + theirs, self)
        t0 = time.monotonic()
        st, body, _ = admin(a.port, "/admin/revoke", {"sub": "gina", "expires_in": 6})
        self.assertEqual(st, 200, body)
        self.assertEqual((body["revoked"], body["nodes"]), ({"sub": "gina"}, 2))
        self.assertEndedBy(mine, "revoked", t0)
        self.assertAlive(theirs)
        # Both nodes refuse the token; the set lives in Redis with its expiry.
        self.assertRefused(a.port, tok)
        self.assertRefused(b.port, tok)
        members = self.redis.cli("ZRANGE", "herald:revoked", "0", "-1").split()
        self.assertEqual(members, ["s:gina"])
        self.assertGreater(int(self.redis.cli("PTTL", "herald:revoked")), 0)
        # A node started after the revocation loads it and refuses the token too.
        c = self.node()
        self.assertRefused(c.port, tok)
        self.assertAccepted(c.port, other)
        for n in (a, b, c):
            self.assertEqual(stats_of(n.port)["revocations"], 1)
        # Expired: every node lets it in again.
        for n in (a, b, c):
            hh.wait_for(lambda: self._sse_status(n.port, tok) == 200, timeout=10, interval=0.2,
                        what="the revocation expiring on port %d" % n.port)

    def _sse_status(self, port, tok):
        s = SseStream(port, "/sse/private:r?token=" + tok)
        s.close()
        return s.status

    def test_revoke_jti_and_refresh_across_nodes(self):
        a, b = self.node(), self.node()
        tok, fresh = mint(sub="ivy", jti="i-1"), mint(sub="ivy", jti="i-2")
        on_b = [WsPeer(b.port, "/ws/private:x2?token=" + tok),
                SsePeer(b.port, "/sse/private:x2?token=" + tok),
                LpPeer(b.port, "/lp/private:x2?timeout=60&token=" + tok)]
        keep = [SsePeer(a.port, "/sse/private:x2?token=" + fresh)]
        start(on_b + keep, self)
        t0 = time.monotonic()
        st, body, _ = admin(a.port, "/admin/revoke", {"jti": "i-1", "expires_in": 60})
        self.assertEqual(st, 200, body)
        self.assertEndedBy(on_b, "revoked", t0)
        self.assertAlive(keep)
        # A refresh on node b to a token revoked on node a is refused; the connection stays.
        st, body, _ = admin(a.port, "/admin/revoke", {"jti": "i-3", "expires_in": 60})
        self.assertEqual(st, 200, body)
        revoked_fresh = mint(sub="ivy", jti="i-3")

        async def go():
            async with hh.ws_connect(b.port, "/ws?token=" + fresh) as ws:
                await ws.send(json.dumps({"op": "refresh", "token": revoked_fresh}))
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual((m["type"], m["code"]), ("error", "token_revoked"), m)
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:x2"}))
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual(m["type"], "subscribed", m)

        asyncio.run(asyncio.wait_for(go(), 30))

    def test_disconnect_on_two_nodes(self):
        a, b = self.node(), self.node()
        tok = mint(sub="jack", jti="j-1")
        mine = self.transports(a.port, tok, "private:y1") + self.transports(b.port, tok,
                                                                             "private:y1")
        start(mine, self)
        t0 = time.monotonic()
        st, body, _ = admin(b.port, "/admin/disconnect", {"sub": "jack"})
        self.assertEqual((st, body), (200, {"disconnected": {"sub": "jack"}, "nodes": 2}))
        self.assertEndedBy(mine, "disconnected", t0)
        self.assertAccepted(a.port, tok, "private:y1")
        on = [WsPeer(a.port, "/ws/public:y2"), SsePeer(b.port, "/sse/public:y2"),
              LpPeer(a.port, "/lp/public:y2?timeout=60"), LpPeer(b.port, "/lp/public:y2?timeout=60"),
              WsPeer(b.port, "/ws", channel="public:y2", auth="")]
        off = [SsePeer(a.port, "/sse/public:y3"), WsPeer(b.port, "/ws/public:y3")]
        start(on + off, self)
        t0 = time.monotonic()
        st, body, _ = admin(a.port, "/admin/disconnect", {"channel": "public:y2"})
        self.assertEqual((st, body), (200, {"disconnected": {"channel": "public:y2"}, "nodes": 2}))
        self.assertEndedBy(on, "disconnected", t0)
        self.assertAlive(off)

    def test_cap_across_the_cluster(self):
        a, b = self.node(max_revocations="3"), self.node(max_revocations="3")
        for port, sub in ((a.port, "k1"), (b.port, "k2"), (a.port, "k3")):
            st, body, _ = admin(port, "/admin/revoke", {"sub": sub, "expires_in": 60})
            self.assertEqual(st, 200, body)
        for port in (a.port, b.port):
            st, body, _ = admin(port, "/admin/revoke", {"sub": "k4", "expires_in": 60})
            self.assertEqual(st, 507, body)
            self.assertIn("max_revocations", body["error"])
            st, body, _ = admin(port, "/admin/revoke", {"sub": "k2", "expires_in": 90})
            self.assertEqual(st, 200, body)  # one held is extended
        self.assertEqual(int(self.redis.cli("ZCARD", "herald:revoked")), 3)
        for n in (a, b):
            hh.wait_for(lambda: stats_of(n.port)["revocations"] == 3, what="3 on every node")


if __name__ == "__main__":
    hh.main()
