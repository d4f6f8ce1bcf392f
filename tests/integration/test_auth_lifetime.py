# SPDX-License-Identifier: MIT
"""Staying authorized on a long connection (docs/auth.md, "Staying authorized"), against the real
binary with tokens minted by Debian's python3-jwt that expire within seconds (auth_clock_skew 0,
auth_refresh_before 2s, so every test is short).

Covered: an SSE stream gets event: herald-refresh before exp, then event: herald-expired at exp
and ends; reconnecting with a new token and Last-Event-ID loses nothing published meanwhile; a
/ws JSON connection gets refresh_needed, refreshes in place and its subscriptions keep receiving
past the first token's exp; a refresh whose grants lost a channel drops that subscription with a
notice; a token given by the first {"op":"auth"} message expires the same way; a refresh with
another sub is closed with 4003; an invalid or expired refresh token is
refused with an error reply and the connection still ends at the old exp with 4001; /ws/{channel}
(plain) closes with 4001; herald.v1 gets refresh_needed and refreshes with the same message; a
held long poll is answered 401 token_expired at exp, and the next request with the token too;
auth_expire_connections off lets a stream outlive its token.
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream, request  # noqa: E402

jwt = hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

SECRET = "lifetime-test-secret-of-more-than-32-bytes"
IO = 10.0
RULES = ["private:* subscribe=grant publish=grant"]


def conf_text(extra=None):
    return hh.conf_with_rules({"auth_jwt_secret": SECRET, "auth_clock_skew": "0",
                               "auth_refresh_before": "2s"}, RULES, extra)


def mint(life_s, sub="42", subscribe=("private:*",), **claims):
    """A token for sub granting `subscribe`, expiring life_s seconds from now (whole seconds,
    as exp is: the token lives between life_s - 1 and life_s seconds). Returns (token, exp)."""
    now = int(time.time())
    # iat a second back: herald reads the coarse clock (time()), which may still be in the
    # previous second, and skew is 0 here.
    body = {"sub": sub, "iat": now - 1, "exp": now + life_s,
            "channels": {"subscribe": list(subscribe), "publish": []}}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256"), now + life_s


def run(coro, timeout=60):
    return hh.run_async(coro, timeout)


recv_json = hh.ws_recv_json
recv_until = hh.ws_recv_until  # JSON messages until one satisfies pred, with those before it


async def close_of(ws, timeout=IO):
    """(code, reason, time) of the server's close frame; messages before it are drained."""
    websockets = hh.require_websockets()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        t = time.time()
        if e.rcvd is None:
            return None, None, t
        return e.rcvd.code, e.rcvd.reason, t


class Lifetime(hh.HeraldTestCase):
    """One server: HS256, skew 0, refresh notices 2 s ahead, private:* by grant."""

    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf_raw=conf_text({"ws_client_publish": "on"}))
        cls.port = cls.h.port
        hh.require_websocket(cls.port, "/ws")

    def publish(self, channel, body):
        return hh.publish(self.port, channel, body)

    # ---- SSE ----

    def test_sse_refresh_then_expired(self):
        tok, exp = mint(4)
        s = SseStream(self.port, "/sse/private:s1?token=" + tok)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        mid = self.publish("private:s1", "before")
        ev = s.next_event(IO)
        self.assertEqual((ev.id, ev.text), (mid, "before"))
        ev = s.next_event(IO)
        t_refresh = time.time()
        self.assertEqual(ev.event, "herald-refresh", ev)
        self.assertEqual(json.loads(ev.text)["exp"], exp)
        self.assertIsNone(ev.id)
        self.assertLess(t_refresh, exp, "the refresh notice came after exp")
        self.assertGreaterEqual(t_refresh, exp - 2.5, "the refresh notice came too early")
        ev = s.next_event(IO)
        t_expired = time.time()
        self.assertEqual(ev.event, "herald-expired", ev)
        body = json.loads(ev.text)
        self.assertEqual((body["exp"], body["code"]), (exp, "token_expired"))
        self.assertGreaterEqual(t_expired, exp - 0.05, "expired before exp")
        self.assertLess(t_expired, exp + 2.0, "expired late")
        self.assertIsNone(s.next_block(IO), "the stream must end after herald-expired")
        # The same token on a new request: 401 token_expired.
        s2 = SseStream(self.port, "/sse/private:s1?token=" + tok)
        self.addCleanup(s2.close)
        self.assertEqual(s2.status, 401)
        self.assertEqual(json.loads(s2.body)["code"], "token_expired")

    def test_sse_reconnect_with_last_event_id_loses_nothing(self):
        ch = "private:s2"
        tok, exp = mint(4)
        s = SseStream(self.port, "/sse/%s?token=%s" % (ch, tok))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        sent = [self.publish(ch, "m%d" % i) for i in range(3)]
        got = s.events(3, IO)
        self.assertEqual([e.id for e in got], sent)
        last = got[-1].id
        # The client is told to refresh; meanwhile (and after the end) messages keep coming.
        ev = s.next_event(IO)
        self.assertEqual(ev.event, "herald-refresh")
        while True:  # publish until the stream has ended at exp: some reach it, some do not
            sent.append(self.publish(ch, "m%d" % len(sent)))
            ev = s.next_event(IO)
            if ev is None:
                break
            if ev.event == "herald-expired":
                self.assertIsNone(s.next_block(IO))
                break
            self.assertEqual(ev.id, sent[len(got)])
            got.append(ev)
            last = ev.id
            time.sleep(0.2)
        self.assertGreaterEqual(time.time(), exp - 0.05)
        sent += [self.publish(ch, "after-%d" % i) for i in range(3)]
        # A new token, and the last id seen (the query form, as a browser's EventSource must).
        tok2, _ = mint(60)
        s2 = SseStream(self.port, "/sse/%s?token=%s&last_event_id=%s" % (ch, tok2, last))
        self.addCleanup(s2.close)
        self.assertEqual(s2.status, 200, s2.body)
        rest = s2.events(len(sent) - len(got), IO)
        self.assertEqual([e.id for e in got + rest], sent, "a message was lost or repeated")
        self.assertEqual([e.text for e in got + rest][-3:], ["after-0", "after-1", "after-2"])
        s2.assert_quiet(0.3)
        # The header form of Last-Event-ID works the same.
        s3 = SseStream(self.port, "/sse/%s?token=%s" % (ch, tok2),
                       headers={"Last-Event-ID": sent[-2]})
        self.addCleanup(s3.close)
        self.assertEqual([e.id for e in s3.events(1, IO)], sent[-1:])

    # ---- /ws JSON protocol ----

    def test_ws_refresh_keeps_subscriptions(self):
        tok, exp = mint(3)

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                for ch in ("private:w1", "private:w2"):
                    await ws.send(json.dumps({"op": "subscribe", "channel": ch}))
                    m, _ = await recv_until(ws, lambda m: m.get("type") == "subscribed")
                    self.assertEqual(m["channel"], ch)
                m, _ = await recv_until(ws, lambda m: m.get("type") == "refresh_needed")
                self.assertEqual(m["exp"], exp)
                self.assertLess(time.time(), exp)
                tok2, exp2 = mint(60)
                await ws.send(json.dumps({"type": "refresh", "token": tok2, "ref": 7}))
                m, _ = await recv_until(ws, lambda m: m.get("type") != "message")
                self.assertEqual(m, {"type": "refreshed", "sub": "42", "exp": exp2, "ref": 7})
                # Past the first token's exp, the connection and both subscriptions live on.
                await asyncio.sleep(max(0, exp - time.time()) + 0.5)
                ids = [self.publish(ch, "after") for ch in ("private:w1", "private:w2")]
                got = [await recv_json(ws) for _ in ids]
                self.assertEqual([(g["type"], g["id"]) for g in got],
                                 [("message", i) for i in ids])
                await ws.send(json.dumps({"op": "ping"}))
                self.assertEqual((await recv_json(ws))["type"], "pong")
        run(go())

    def test_ws_refresh_with_fewer_grants_drops_the_channel(self):
        tok, _ = mint(30, subscribe=["private:g1", "private:g2"])

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                for ch in ("private:g1", "private:g2"):
                    await ws.send(json.dumps({"op": "subscribe", "channel": ch}))
                    await recv_until(ws, lambda m: m.get("type") == "subscribed")
                tok2, exp2 = mint(30, subscribe=["private:g1"])
                await ws.send(json.dumps({"op": "refresh", "token": tok2}))
                m, seen = await recv_until(ws, lambda m: m.get("type") == "refreshed")
                self.assertEqual(m["exp"], exp2)
                self.assertEqual([(x["type"], x["channel"], x["code"]) for x in seen[:-1]],
                                 [("unsubscribed", "private:g2", "forbidden")])
                self.publish("private:g2", "not for you")
                i1 = self.publish("private:g1", "yours")
                m = await recv_json(ws)
                self.assertEqual((m["channel"], m["id"]), ("private:g1", i1))
                # Subscribing again to the lost channel is refused by the new grants.
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:g2"}))
                m = await recv_json(ws)
                self.assertEqual((m["type"], m["code"]), ("error", "forbidden"))
        run(go())

    def test_ws_refresh_with_another_sub_is_closed_4003(self):
        tok, _ = mint(30)

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                other, _ = mint(30, sub="43")
                await ws.send(json.dumps({"op": "refresh", "token": other}))
                code, reason, _ = await close_of(ws)
                self.assertEqual((code, reason), (4003, "refresh token is for another sub"))
        run(go())

    def test_ws_bad_refresh_is_refused_and_old_exp_holds(self):
        tok, exp = mint(3)

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:b1"}))
                await recv_until(ws, lambda m: m.get("type") == "subscribed")
                bad = jwt.encode({"sub": "42", "exp": exp + 60}, "another-secret-of-32-bytes-or-more",
                                 algorithm="HS256")
                expired, _ = mint(-5)
                for t, code in ((bad, "unauthenticated"), (expired, "token_expired"),
                                (17, "bad_token")):
                    await ws.send(json.dumps({"op": "refresh", "token": t, "ref": code}))
                    m, _ = await recv_until(ws, lambda m: m.get("ref") == code)
                    self.assertEqual((m["type"], m["code"]), ("error", code), m)
                code, reason, t = await close_of(ws)
                self.assertEqual((code, reason), (4001, "token expired"))
                self.assertGreaterEqual(t, exp - 0.05)
                self.assertLess(t, exp + 2.0)
        run(go())

    def test_ws_without_refresh_closes_4001(self):
        tok, exp = mint(2)

        async def go():
            async with hh.ws_connect(self.port, "/ws?token=" + tok) as ws:
                code, reason, t = await close_of(ws)
                self.assertEqual((code, reason), (4001, "token expired"))
                self.assertGreaterEqual(t, exp - 0.05)
        run(go())

    def test_ws_auth_message_token_has_the_same_lifetime(self):
        # A connection opened without a token authenticates with its first message: the
        # expiry and the notice follow that token.
        tok, exp = mint(3)

        async def go():
            async with hh.ws_connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "auth", "token": tok}))
                m = await recv_json(ws)
                self.assertEqual((m["type"], m["exp"]), ("authenticated", exp))
                m, _ = await recv_until(ws, lambda m: m.get("type") == "refresh_needed")
                self.assertEqual(m["exp"], exp)
                code, reason, t = await close_of(ws)
                self.assertEqual((code, reason), (4001, "token expired"))
                self.assertGreaterEqual(t, exp - 0.05)
        run(go())

    # ---- /ws/{channel} ----

    def test_ws_channel_plain_closes_4001(self):
        tok, exp = mint(2)

        async def go():
            async with hh.ws_connect(self.port, "/ws/private:c1?token=" + tok) as ws:
                mid = self.publish("private:c1", "hello")
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO), "hello", mid)
                code, reason, t = await close_of(ws)  # no notice: a plain client gets payloads
                self.assertEqual((code, reason), (4001, "token expired"))
                self.assertGreaterEqual(t, exp - 0.05)
        run(go())

    def test_ws_herald_v1_refresh(self):
        tok, exp = mint(3)

        async def go():
            async with hh.ws_connect(self.port, "/ws/private:v1?token=" + tok,
                                     subprotocols=["herald.v1"]) as ws:
                m = await recv_json(ws)
                self.assertEqual(m, {"type": "refresh_needed", "exp": exp})
                tok2, exp2 = mint(60)
                await ws.send(json.dumps({"type": "refresh", "token": tok2}))
                self.assertEqual(await recv_json(ws),
                                 {"type": "refreshed", "sub": "42", "exp": exp2})
                await ws.send(json.dumps({"type": "refresh", "token": "not.a.token"}))
                m = await recv_json(ws)
                self.assertEqual((m["type"], m["code"]), ("error", "unauthenticated"))
                await asyncio.sleep(max(0, exp - time.time()) + 0.5)
                mid = self.publish("private:v1", "still here")
                m = await recv_json(ws)
                self.assertEqual((m["type"], m["id"], m["data"]), ("message", mid, "still here"))
                # A refresh naming another user ends it.
                other, _ = mint(60, sub="7")
                await ws.send(json.dumps({"type": "refresh", "token": other}))
                code, _, _ = await close_of(ws)
                self.assertEqual(code, 4003)
        run(go())

    def test_ws_herald_v1_refresh_losing_the_channel_closes_4003(self):
        tok, _ = mint(30)

        async def go():
            async with hh.ws_connect(self.port, "/ws/private:v2?token=" + tok,
                                     subprotocols=["herald.v1"]) as ws:
                tok2, _ = mint(30, subscribe=["private:other"])
                await ws.send(json.dumps({"type": "refresh", "token": tok2}))
                code, reason, _ = await close_of(ws)
                self.assertEqual((code, reason),
                                 (4003, "channel no longer granted by the refreshed token"))
        run(go())

    # ---- long poll ----

    def test_held_long_poll_answers_401_at_exp(self):
        tok, exp = mint(2)
        t0 = time.time()
        status, _, body = request(self.port, "GET", "/lp/private:l1?timeout=30&token=" + tok,
                                  timeout=IO)
        t = time.time()
        self.assertEqual(status, 401, body)
        self.assertEqual(json.loads(body)["code"], "token_expired")
        self.assertGreaterEqual(t, exp - 0.05)
        self.assertLess(t - t0, 4.0)
        status, _, body = request(self.port, "GET", "/lp/private:l1?timeout=1&token=" + tok)
        self.assertEqual((status, json.loads(body)["code"]), (401, "token_expired"))
        # A poll whose timeout comes first is answered as always.
        tok2, _ = mint(30)
        status, _, body = request(self.port, "GET", "/lp/private:l1?timeout=0.3&token=" + tok2)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["messages"], [])


class ConnectionOutlivesToken(hh.HeraldTestCase):
    def test_expire_off(self):
        h = self.start_herald(conf_raw=conf_text({"auth_expire_connections": "off"}))
        tok, exp = mint(2)
        s = SseStream(h.port, "/sse/private:o1?token=" + tok)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        time.sleep(max(0, exp - time.time()) + 0.5)
        mid = hh.publish(h.port, "private:o1", "later")
        ev = s.next_event(IO)  # no refresh notice, no expiry: the message
        self.assertEqual((ev.id, ev.event), (mid, None))


if __name__ == "__main__":
    hh.main()
