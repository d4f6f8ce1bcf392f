# SPDX-License-Identifier: MIT
"""Authorization against the real binary (docs/auth.md): tokens minted by Debian's python3-jwt
and by npm `jose` (node), bad tokens made by hand, on every transport.

Covered: valid, expired, not yet valid, wrong signature, alg none, the HS/RS confusion (an HS256
token signed with the RSA public key PEM as secret), wrong aud, a channel outside the grant
(403), the user:<sub> rule, history=off, rules without a token; short poll, long poll, SSE (one
and several channels), WebSocket /ws/{channel} (plain and herald.v1) and the /ws JSON protocol
(token on the handshake, or the auth message with its deadline), HTTP publish (backend key,
token grants, the stamped publisher a client cannot forge); Authorization: Bearer and ?token=,
and the access log never holding a token; ES256 from jose through a JWKS with kid selection;
RS256 from a PEM key and a JWKS reloaded on SIGHUP; the publisher stamp through Redis.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream, request, wait_for  # noqa: E402

jwt = hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

HERE = os.path.dirname(os.path.abspath(__file__))
JOSE_MINT = os.path.join(HERE, "js", "jose_mint.js")
SECRET = "integration-test-secret-of-more-than-32-bytes"
BACKEND_KEY = "backend-key-0123456789"
AUD = "herald-test"
IO = 10.0

RULES = [
    "public:* subscribe=any",
    "private:* subscribe=grant publish=grant",
    "user:* subscribe=user",
    "room:* subscribe=auth publish=subscriber history=off",
]


def conf_with_rules(extra):
    """Conf text: DEFAULT_CONF, extra directives, and the channel_rule lines."""
    merged = dict(hh.DEFAULT_CONF)
    merged.update(extra)
    return hh.conf_text(merged) + "".join("channel_rule %s\n" % r for r in RULES)


def mint(claims=None, key=SECRET, alg="HS256", headers=None, **kw):
    """A token from python3-jwt with exp in an hour and our aud unless claims say otherwise."""
    now = int(time.time())
    body = {"sub": "42", "aud": AUD, "iat": now, "exp": now + 3600}
    body.update(claims or {})
    body.update(kw)
    for k in [k for k, v in body.items() if v is None]:
        del body[k]
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header, claims, hmac_key=None):
    """A token assembled by hand: any header, an HMAC-SHA256 signature with hmac_key (bytes) or
    an empty signature."""
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = b""
    if hmac_key is not None:
        sig = hmac.new(hmac_key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def close_code_of(ws, timeout=IO):
    websockets = hh.require_websockets()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        if e.rcvd is None:
            return None, None
        return e.rcvd.code, e.rcvd.reason


def grants(subscribe=None, publish=None, **kw):
    """A token granting those subscribe and publish patterns (kw: more claims, key, alg)."""
    return mint({"channels": {"subscribe": subscribe or [], "publish": publish or []}}, **kw)


class AuthHS256(hh.HeraldTestCase):
    """One server: HS256 secret, aud required, the four rules, a publish key, an access log."""

    @classmethod
    def setUpClass(cls):
        cls.logdir = hh.tempfile.mkdtemp(prefix="herald-auth-")
        cls.access_log = os.path.join(cls.logdir, "access.log")
        cls.h = cls.start_class_herald(conf_raw=conf_with_rules({
            "auth_jwt_secret": SECRET,
            "auth_jwt_audience": AUD,
            "auth_timeout": "1s",
            "publish_key": BACKEND_KEY,
            "ws_client_publish": "on",
            "access_log": cls.access_log,
        }))
        cls.port = cls.h.port
        cls.used_tokens = []

    def get(self, path, tok=None, how="bearer", headers=None):
        hdrs = dict(headers or {})
        if tok is not None:
            self.used_tokens.append(tok)
            if how == "bearer":
                hdrs.update(bearer(tok))
            else:
                sep = "&" if "?" in path else "?"
                path += sep + "token=" + urllib.parse.quote(tok)
        return request(self.port, "GET", path, headers=hdrs)

    def expect(self, status, path, tok=None, how="bearer", code=None):
        st, _, body = self.get(path, tok, how)
        self.assertEqual(st, status, "%s with %s: %r" % (path, how, body))
        if status >= 400:
            doc = json.loads(body)
            self.assertEqual(doc["status"], status)
            self.assertTrue(doc["error"])
            if code:
                self.assertEqual(doc["code"], code, doc)
        return body

    def backend_publish(self, channel, body):
        st, _, data = request(self.port, "POST", "/pub/" + channel, body,
                              dict(bearer(BACKEND_KEY), **{"Content-Type": "text/plain"}))
        self.assertEqual(st, 200, data)
        return json.loads(data)["id"]

    # ---- short poll: every kind of bad token, both ways of carrying it ----

    def test_poll_tokens(self):
        good = grants(["private:a", "private:team:*"])
        for how in ("bearer", "query"):
            self.expect(200, "/poll/private:a", good, how)
            self.expect(200, "/poll/private:team:x", good, how)
            self.expect(403, "/poll/private:b", good, how, "forbidden")
        self.expect(401, "/poll/private:a", None, code="unauthenticated")
        self.expect(200, "/poll/public:news")
        self.expect(403, "/poll/elsewhere", good, code="forbidden")  # no rule: closed
        now = int(time.time())
        pem_like = b"-----BEGIN PUBLIC KEY-----\nnot really\n-----END PUBLIC KEY-----\n"
        bad = {
            "expired": (grants(["private:a"], exp=now - 120), "token_expired"),
            "within skew": None,
            "not yet valid": (grants(["private:a"], nbf=now + 300), "unauthenticated"),
            "wrong signature": (grants(["private:a"], key=SECRET + "x"), "unauthenticated"),
            "wrong aud": (grants(["private:a"], aud="other"), "unauthenticated"),
            "no aud": (grants(["private:a"], aud=None), "unauthenticated"),
            "alg none": (hand_made({"alg": "none", "typ": "JWT"},
                                   {"sub": "42", "aud": AUD,
                                    "channels": ["private:a"]}), "unauthenticated"),
            "HS512": (grants(["private:a"], key=SECRET * 2, alg="HS512"), "unauthenticated"),
            "HMAC with a PEM": (hand_made({"alg": "HS256"}, {"sub": "42", "aud": AUD},
                                          pem_like), "unauthenticated"),
            "garbage": ("not-a-token", "unauthenticated"),
        }
        for what, case in bad.items():
            if case is None:
                continue
            tok, code = case
            with self.subTest(what):
                for how in ("bearer", "query"):
                    self.expect(401, "/poll/private:a", tok, how, code)
        # exp 10 s ago is inside the 30 s skew: still good.
        self.expect(200, "/poll/private:a", grants(["private:a"], exp=now - 10))

    def bad_tokens(self):
        """Every kind of bad token for private:a, with the code it must be refused with."""
        now = int(time.time())
        pem_like = b"-----BEGIN PUBLIC KEY-----\nnot really\n-----END PUBLIC KEY-----\n"
        g = ["private:a"]
        return {
            "expired": (grants(g, exp=now - 120), "token_expired"),
            "not yet valid": (grants(g, nbf=now + 300), "unauthenticated"),
            "wrong signature": (grants(g, key=SECRET + "x"), "unauthenticated"),
            "wrong aud": (grants(g, aud="other"), "unauthenticated"),
            "alg none": (hand_made({"alg": "none"}, {"sub": "42", "aud": AUD, "channels": g}),
                         "unauthenticated"),
            "HMAC with a PEM": (hand_made({"alg": "HS256"}, {"sub": "42", "aud": AUD,
                                                             "channels": g}, pem_like),
                                "unauthenticated"),
            "outside the grant": (grants(["private:b"]), "forbidden"),
            "another user": (mint(sub="43"), "forbidden"),  # for user:42 below
        }

    def test_bad_tokens_every_transport(self):
        """One table of bad tokens, run against every transport: HTTP answers 401/403 with the
        code, a WebSocket handshake the same status, the /ws auth message closes 4401/4001
        (a token outside the grant is a valid identity there: its subscribe is refused)."""
        websockets = hh.require_websockets()
        status_of = {"token_expired": 401, "unauthenticated": 401, "forbidden": 403}
        http_paths = ["/poll/%s", "/lp/%s?timeout=0", "/sse/%s", "/sse?channel=public:z&channel=%s"]

        for what, (tok, code) in self.bad_tokens().items():
            channel = "user:42" if what == "another user" else "private:a"
            for how in ("bearer", "query"):
                for path in http_paths:
                    with self.subTest(what=what, how=how, path=path):
                        p = path % channel
                        if path.startswith("/sse"):
                            hdrs = bearer(tok) if how == "bearer" else {}
                            if how == "query":
                                p += ("&" if "?" in p else "?") + "token=" + tok
                                self.used_tokens.append(tok)
                            s = SseStream(self.port, p, headers=hdrs)
                            try:
                                self.assertEqual(s.status, status_of[code], s.body)
                                self.assertEqual(json.loads(s.body)["code"], code)
                            finally:
                                s.close()
                        else:
                            self.expect(status_of[code], p, tok, how, code)
                # HTTP publish: only grant-less publishing is refused 403 here (publish=grant).
                st, _, data = request(self.port, "POST", "/pub/private:a", "x",
                                      dict(bearer(tok), **{"Content-Type": "text/plain"}))
                self.assertIn(st, (401, 403), data)
                self.assertEqual(st == 401, code != "forbidden", (what, data))

            async def ws_cases():
                path = "/ws/%s" % channel
                for hdrs, p in ((bearer(tok), path), ({}, path + "?token=" + tok)):
                    with self.assertRaises(websockets.InvalidStatusCode) as cm:
                        async with hh.ws_connect(self.port, p, extra_headers=hdrs):
                            pass
                    self.assertEqual(cm.exception.status_code, status_of[code], (what, p))
                ws = await hh.ws_connect(self.port, "/ws")
                try:
                    await ws.send(json.dumps({"op": "auth", "token": tok}))
                    if code == "forbidden":
                        r = json.loads(await asyncio.wait_for(ws.recv(), IO))
                        self.assertEqual(r["type"], "authenticated")
                        r = await self.rpc(ws, {"op": "subscribe", "channel": channel})
                        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"), what)
                    else:
                        got, reason = await close_code_of(ws)
                        self.assertEqual(got, 4001 if code == "token_expired" else 4401,
                                         (what, reason))
                finally:
                    await ws.close()

            with self.subTest(what=what, transport="websocket"):
                self.used_tokens.append(tok)
                run(ws_cases())

    def test_refusal_body(self):
        st, hdrs, body = self.get("/poll/private:a", grants(["private:a"], exp=1))
        self.assertEqual(st, 401)
        self.assertIn("Bearer", hdrs.get("www-authenticate", ""))
        doc = json.loads(body)
        self.assertEqual(doc, {"error": "token expired", "code": "token_expired", "status": 401})

    # ---- rules ----

    def test_user_channels(self):
        tok = mint(sub="42")
        self.expect(200, "/poll/user:42", tok)
        self.expect(403, "/poll/user:43", tok, code="forbidden")
        self.expect(403, "/poll/user:420", tok, code="forbidden")
        self.expect(401, "/poll/user:42", None, code="unauthenticated")
        self.expect(401, "/poll/user:", mint(sub=None), code="unauthenticated")

    def test_history_off(self):
        tok = mint()
        self.expect(403, "/poll/room:1", tok, code="forbidden")  # a short poll reads history
        self.expect(401, "/lp/room:1?timeout=0", None, code="unauthenticated")
        self.expect(200, "/lp/room:1?timeout=0", tok)  # waiting for the next message is fine
        self.expect(403, "/lp/room:1?timeout=0&since=abc-1", tok, code="forbidden")

    # ---- long poll ----

    def test_long_poll(self):
        tok = grants(["private:lp"])
        self.expect(401, "/lp/private:lp?timeout=0")
        self.expect(403, "/lp/private:other?timeout=0", tok)
        since = self.backend_publish("private:lp", "before")
        result = {}

        def poll():
            result["r"] = self.get("/lp/private:lp?timeout=10&since=" + since, tok, "query")

        import threading
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)  # held or not yet: since= makes the answer the same
        self.backend_publish("private:lp", "held")
        t.join(IO)
        st, _, body = result["r"]
        self.assertEqual(st, 200, body)
        self.assertEqual([m["data"] for m in json.loads(body)["messages"]], ["held"])

    # ---- SSE ----

    def test_sse(self):
        tok = mint({"channels": ["private:s1", "private:s2"]}, sub="7")
        for how in ("bearer", "query"):
            path = "/sse/private:s1"
            hdrs = {}
            if how == "bearer":
                hdrs = bearer(tok)
            else:
                path += "?token=" + tok
            self.used_tokens.append(tok)
            s = SseStream(self.port, path, headers=hdrs)
            try:
                self.assertEqual(s.status, 200, s.body)
                s.next_block()  # retry:
                self.backend_publish("private:s1", "sse-" + how)
                ev = s.next_block()
                while not ev.is_event:
                    ev = s.next_block()
                self.assertEqual(ev.text, "sse-" + how)
            finally:
                s.close()
        for path, hdrs, status in [
            ("/sse/private:s1", {}, 401),
            ("/sse/private:s3", bearer(tok), 403),
            ("/sse/user:7", bearer(tok), 200),
            ("/sse/user:8", bearer(tok), 403),
            ("/sse?channel=private:s1&channel=private:s2", bearer(tok), 200),
            ("/sse?channel=private:s1&channel=private:s3", bearer(tok), 403),
            ("/sse?channel=public:x&channel=private:s1", {}, 401),
            ("/sse/private:s1", bearer(grants(["private:s1"], exp=1)), 401),
        ]:
            with self.subTest(path=path, status=status):
                s = SseStream(self.port, path, headers=hdrs)
                try:
                    self.assertEqual(s.status, status, s.body)
                    if status != 200:
                        self.assertEqual(json.loads(s.body)["status"], status)
                finally:
                    s.close()

    # ---- WebSocket /ws/{channel} ----

    def test_ws_channel(self):
        websockets = hh.require_websockets()
        tok = grants(["private:w"])
        self.used_tokens.append(tok)

        async def go():
            async with hh.ws_connect(self.port, "/ws/private:w",
                                     extra_headers=bearer(tok)) as ws:
                await asyncio.sleep(0.1)
                self.backend_publish("private:w", "raw")
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO), "raw")
            async with hh.ws_connect(self.port, "/ws/private:w?token=" + tok,
                                     subprotocols=["herald.v1"]) as ws:
                await asyncio.sleep(0.1)
                self.backend_publish("private:w", "env")
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual((m["type"], m["data"]), ("message", "env"))
                self.assertNotIn("publisher", m)  # the backend's messages carry none
            for path, hdrs, status in [
                ("/ws/private:w", {}, 401),
                ("/ws/private:x", bearer(tok), 403),
                ("/ws/private:w", bearer(grants(["private:w"], key="x" * 40)), 401),
                ("/ws/private:w?token=" + grants(["private:w"], exp=1), {}, 401),
            ]:
                with self.assertRaises(websockets.InvalidStatusCode) as cm:
                    async with hh.ws_connect(self.port, path, extra_headers=hdrs):
                        pass
                self.assertEqual(cm.exception.status_code, status, path)

        run(go())

    def test_ws_channel_client_publish(self):
        """room:* lets subscribers publish: the message is stamped with the publisher's sub;
        a client that may not publish is closed 4003."""
        alice = mint(sub="alice", info={"name": "Alice"})
        watcher = mint(sub="watcher")

        async def go():
            async with hh.ws_connect(self.port, "/ws/room:7", subprotocols=["herald.v1"],
                                     extra_headers=bearer(watcher)) as w, \
                    hh.ws_connect(self.port, "/ws/room:7", extra_headers=bearer(alice)) as a:
                await asyncio.sleep(0.1)
                await a.send("hello")
                m = json.loads(await asyncio.wait_for(w.recv(), IO))
                self.assertEqual(m["data"], "hello")
                self.assertEqual(m["publisher"], {"sub": "alice", "info": {"name": "Alice"}})
            tok = grants(["private:ro"])  # may subscribe, not publish
            async with hh.ws_connect(self.port, "/ws/private:ro", extra_headers=bearer(tok)) as c:
                await c.send("nope")
                code, reason = await close_code_of(c)
                self.assertEqual(code, 4003, reason)

        run(go())

    # ---- WebSocket /ws JSON protocol ----

    async def ws_json(self, path="/ws", **kw):
        return await hh.ws_connect(self.port, path, **kw)

    async def rpc(self, ws, msg):
        await ws.send(json.dumps(msg))
        return json.loads(await asyncio.wait_for(ws.recv(), IO))

    def test_ws_json_auth_message(self):
        tok = grants(["private:j*"], ["private:j1"], sub="55")

        async def go():
            ws = await self.ws_json()
            try:
                r = await self.rpc(ws, {"op": "auth", "token": tok, "ref": 1})
                self.assertEqual(r, {"type": "authenticated", "sub": "55",
                                     "exp": jwt.decode(tok, options={
                                         "verify_signature": False})["exp"], "ref": 1})
                r = await self.rpc(ws, {"op": "subscribe", "channel": "private:j1"})
                self.assertEqual(r["type"], "subscribed", r)
                r = await self.rpc(ws, {"op": "subscribe", "channel": "private:k", "ref": "x"})
                self.assertEqual((r["type"], r["code"], r["ref"]), ("error", "forbidden", "x"))
                r = await self.rpc(ws, {"op": "subscribe", "channel": "public:j"})
                self.assertEqual(r["type"], "subscribed", r)
                # A second auth is refused without closing.
                r = await self.rpc(ws, {"op": "auth", "token": tok})
                self.assertEqual((r["type"], r["code"]), ("error", "already_authenticated"))
                # Publish with the grant: stamped with sub 55, whatever the client claims.
                await ws.send(json.dumps({"op": "publish", "channel": "private:j1",
                                          "data": {"x": 1}, "publisher": {"sub": "admin"},
                                          "ref": "p"}))
                got = {}
                while len(got) < 2:
                    m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                    got[m["type"]] = m
                self.assertEqual(got["published"]["ref"], "p")
                self.assertEqual(got["message"]["publisher"], {"sub": "55"})
                self.assertEqual(got["message"]["data"], {"x": 1})
                r = await self.rpc(ws, {"op": "publish", "channel": "private:j2", "data": "n"})
                self.assertEqual((r["type"], r["code"]), ("error", "forbidden"))
            finally:
                await ws.close()
            # The poll output carries the stamp too.
            st, _, body = self.get("/poll/private:j1", tok)
            self.assertEqual(json.loads(body)["messages"][-1]["publisher"], {"sub": "55"})

        run(go())

    def test_ws_json_handshake_token(self):
        tok = grants(["private:h"], sub="9")
        self.used_tokens.append(tok)

        async def go():
            for kw in ({"extra_headers": bearer(tok)}, {}):
                path = "/ws" if kw else "/ws?token=" + tok
                async with hh.ws_connect(self.port, path, **kw) as ws:
                    r = await self.rpc(ws, {"op": "subscribe", "channel": "private:h"})
                    self.assertEqual(r["type"], "subscribed", r)
            websockets = hh.require_websockets()
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with hh.ws_connect(self.port, "/ws", extra_headers=bearer(tok + "x")):
                    pass
            self.assertEqual(cm.exception.status_code, 401)

        run(go())

    def test_ws_json_auth_failures(self):
        async def closed_with(first, code):
            ws = await self.ws_json()
            try:
                if first is not None:
                    await ws.send(json.dumps(first))
                got, reason = await close_code_of(ws)
                self.assertEqual(got, code, "%r: %r" % (first, reason))
                return reason
            finally:
                await ws.close()

        async def go():
            t0 = time.monotonic()
            reason = await closed_with(None, 4401)  # nothing within auth_timeout (1 s)
            self.assertGreaterEqual(time.monotonic() - t0, 0.9)
            self.assertIn("timed out", reason)
            await closed_with({"op": "subscribe", "channel": "public:x"}, 4401)
            await closed_with({"op": "auth", "token": "garbage"}, 4401)
            await closed_with({"op": "auth", "token": grants(exp=1)}, 4001)
            await closed_with({"type": "auth", "token": grants(key="wrong" * 10)}, 4401)
            await closed_with({"op": "auth", "token": 42}, 4401)
            # {"op":"auth"} without a token: anonymous, public channels only.
            ws = await self.ws_json()
            try:
                r = await self.rpc(ws, {"op": "auth"})
                self.assertEqual(r, {"type": "authenticated"})
                r = await self.rpc(ws, {"op": "subscribe", "channel": "public:a"})
                self.assertEqual(r["type"], "subscribed")
                r = await self.rpc(ws, {"op": "subscribe", "channel": "private:a"})
                self.assertEqual((r["type"], r["code"]), ("error", "unauthenticated"))
            finally:
                await ws.close()

        run(go())

    # ---- HTTP publish ----

    def test_http_publish(self):
        def pub(channel, hdrs, body="m"):
            h = {"Content-Type": "text/plain"}
            h.update(hdrs)
            st, _, data = request(self.port, "POST", "/pub/" + channel, body, h)
            return st, json.loads(data)

        tok = grants(["private:p"], ["private:p"], sub="pub1", info={"role": "x"})
        self.assertEqual(pub("anything", bearer(BACKEND_KEY))[0], 200)
        self.assertEqual(pub("private:p", bearer(tok))[0], 200)
        st, doc = pub("private:q", bearer(tok))
        self.assertEqual((st, doc["code"]), (403, "forbidden"))
        st, doc = pub("public:x", bearer(tok))  # publish=key
        self.assertEqual(st, 403)
        st, doc = pub("private:p", {})
        self.assertEqual(st, 401)
        st, doc = pub("private:p", bearer("wrong-key"))  # neither the key nor a token
        self.assertEqual((st, doc["code"]), (401, "unauthenticated"))
        st, doc = pub("private:p", bearer(grants([], ["private:p"], exp=1)))
        self.assertEqual((st, doc["code"]), (401, "token_expired"))
        self.used_tokens.append(tok)
        st, _, data = request(self.port, "POST", "/pub/private:p?token=" + tok, "q",
                              {"Content-Type": "text/plain"})
        self.assertEqual(st, 200, data)
        msgs = json.loads(self.expect(200, "/poll/private:p", tok))["messages"]
        self.assertEqual(msgs[-1]["publisher"], {"sub": "pub1", "info": {"role": "x"}})
        self.assertEqual(msgs[-1]["data"], "q")
        # Batch: every channel checked, all or nothing.
        st, _, data = request(self.port, "POST", "/pub", json.dumps(
            [{"channel": "private:p", "data": 1}, {"channel": "private:q", "data": 2}]),
            bearer(tok))
        self.assertEqual(st, 403, data)
        st, _, data = request(self.port, "POST", "/pub", json.dumps(
            [{"channel": "private:p", "data": 1}]), bearer(tok))
        self.assertEqual(st, 200, data)

    # ---- the access log ----

    def test_zz_access_log_has_no_token(self):
        tok = grants(["private:log"])
        self.expect(200, "/poll/private:log?a=1", tok, "query")
        self.used_tokens.append(tok)
        wait_for(lambda: os.path.exists(self.access_log) and
                 "private:log" in open(self.access_log).read(), what="the access log line")
        text = open(self.access_log).read()
        self.assertIn("token=REDACTED", text)
        for t in self.used_tokens:
            for part in t.split("."):
                if part:
                    self.assertNotIn(part, text)
        self.assertNotIn(SECRET, self.h.log_text())
        log = self.h.log_text()
        for t in self.used_tokens:
            for part in t.split("."):
                if len(part) > 8:
                    self.assertNotIn(part, log)


class AuthRSA(hh.HeraldTestCase):
    """RS256 with a PEM public key: the HS/RS confusion; then a JWKS reloaded on SIGHUP."""

    def setUp(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.dir = self.tmpdir()
        self.priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pub_pem = self.priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.pem_path = os.path.join(self.dir, "jwt.pub.pem")
        with open(self.pem_path, "wb") as f:
            f.write(self.pub_pem)

    def test_hs_rs_confusion(self):
        h = self.start_herald(conf_raw=conf_with_rules({
            "auth_jwt_public_key": self.pem_path, "auth_jwt_alg": "RS256"}))
        good = mint({"channels": ["private:a"]}, key=self.priv, alg="RS256")
        st, _, body = request(h.port, "GET", "/poll/private:a", headers=bearer(good))
        self.assertEqual(st, 200, body)
        # The attack: HS256 "signed" with the public key PEM as the HMAC secret (python3-jwt
        # refuses to do it, so by hand), both as the file holds it and as herald re-encodes it.
        for secret in (self.pub_pem, self.pub_pem.strip()):
            evil = hand_made({"alg": "HS256", "typ": "JWT"},
                             {"sub": "admin", "channels": ["private:a"]}, secret)
            st, _, body = request(h.port, "GET", "/poll/private:a", headers=bearer(evil))
            self.assertEqual(st, 401, body)
            self.assertIn("alg HS256 is not the configured RS256", json.loads(body)["error"])
        # A secret that is a PEM is refused at load.
        rc, _, err = hh.run_herald(["-t", "-c", os.devnull, "-o",
                                    'auth_jwt_secret "%s"' % self.pub_pem.decode().replace(
                                        "\n", " ")])
        self.assertEqual(rc, hh.EXIT_CONF, err)
        self.assertIn("looks like a PEM key", err)

    def test_jwks_reload(self):
        from jwt.algorithms import RSAAlgorithm
        from cryptography.hazmat.primitives.asymmetric import rsa
        jwks_path = os.path.join(self.dir, "jwks.json")

        def write_jwks(*keys):
            out = []
            for kid, k in keys:
                jwk = json.loads(RSAAlgorithm.to_jwk(k.public_key()))
                jwk.update(kid=kid, alg="RS256", use="sig")
                out.append(jwk)
            with open(jwks_path + ".tmp", "w") as f:
                json.dump({"keys": out}, f)
            os.replace(jwks_path + ".tmp", jwks_path)

        k2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_jwks(("k1", self.priv))
        raw = conf_with_rules({"auth_jwks": jwks_path})
        h = self.start_herald(conf_raw=raw)
        t1 = mint({"channels": ["private:a"]}, key=self.priv, alg="RS256", headers={"kid": "k1"})
        t2 = mint({"channels": ["private:a"]}, key=k2, alg="RS256", headers={"kid": "k2"})
        status = lambda t: request(h.port, "GET", "/poll/private:a", headers=bearer(t))[0]  # noqa
        self.assertEqual((status(t1), status(t2)), (200, 401))
        write_jwks(("k1", self.priv), ("k2", k2))
        h.reload(conf_raw=raw)
        self.assertEqual((status(t1), status(t2)), (200, 200))
        # k1 rotated out.
        write_jwks(("k2", k2))
        h.reload(conf_raw=raw)
        self.assertEqual((status(t1), status(t2)), (401, 200))
        # A broken file fails the reload; the keys in use stay.
        with open(jwks_path, "w") as f:
            f.write("{broken")
        h.reload(conf_raw=raw, expect_ok=False)
        self.assertEqual(status(t2), 200)


class AuthRedis(hh.HeraldTestCase):
    """Two nodes sharing a redis-server: a message published with a token on one carries its
    publisher stamp on the other, live (/ws herald.v1 envelope) and from history (poll)."""

    def test_stamp_crosses_nodes(self):
        import redis_support as rs
        redis = rs.start_redis(self)
        conf = {"auth_jwt_secret": SECRET, "publish_key": BACKEND_KEY,
                "redis": "unix://" + redis.sock}
        a = self.start_herald(conf_raw=conf_with_rules(conf))
        b = self.start_herald(conf_raw=conf_with_rules(conf))
        tok = grants(["private:r"], ["private:r"], sub="cross", info={"n": 1})

        async def go():
            async with hh.ws_connect(b.port, "/ws/private:r", subprotocols=["herald.v1"],
                                     extra_headers=bearer(tok)) as ws:
                await asyncio.sleep(0.3)
                st, _, data = request(a.port, "POST", "/pub/private:r", "hello",
                                      dict(bearer(tok), **{"Content-Type": "text/plain"}))
                self.assertEqual(st, 200, data)
                st, _, data = request(a.port, "POST", "/pub/private:r", "backend",
                                      dict(bearer(BACKEND_KEY), **{"Content-Type": "text/plain"}))
                self.assertEqual(st, 200, data)
                m1 = json.loads(await asyncio.wait_for(ws.recv(), IO))
                m2 = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual(m1["publisher"], {"sub": "cross", "info": {"n": 1}})
                self.assertNotIn("publisher", m2)

        run(go())
        st, _, body = request(b.port, "GET", "/poll/private:r?since=0-0", headers=bearer(tok))
        self.assertEqual(st, 200, body)
        msgs = json.loads(body)["messages"]
        self.assertEqual([(m["data"], m.get("publisher")) for m in msgs],
                         [("hello", {"sub": "cross", "info": {"n": 1}}), ("backend", None)])


class AuthJose(hh.HeraldTestCase):
    """ES256 tokens minted by npm jose, verified through the JWKS jose exported (kid e1)."""

    def test_es256_from_jose(self):
        node, modules = hh.require_node_module("jose")
        now = int(time.time())
        claims = [
            {"sub": "u1", "exp": now + 600, "channels": {"subscribe": ["private:*"]}},
            {"sub": "u1", "exp": now - 600, "channels": ["private:*"]},
            {"sub": "u1", "nbf": now + 600, "channels": ["private:*"]},
            {"sub": "u1", "channels": ["private:a"]},
        ]
        out = subprocess.run([node, JOSE_MINT, "e1"] + [json.dumps(c) for c in claims],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, NODE_PATH=modules))
        self.assertEqual(out.returncode, 0, out.stderr)
        minted = json.loads(out.stdout)
        jwks_path = os.path.join(self.tmpdir(), "jwks.json")
        with open(jwks_path, "w") as f:
            json.dump(minted["jwks"], f)
        h = self.start_herald(conf_raw=conf_with_rules({"auth_jwks": jwks_path}))
        good, expired, early, narrow = minted["tokens"]

        def get(path, tok):
            return request(h.port, "GET", path, headers=bearer(tok))

        self.assertEqual(get("/poll/private:x", good)[0], 200)
        self.assertEqual(get("/poll/user:u1", good)[0], 200)
        self.assertEqual(json.loads(get("/poll/private:x", expired)[2])["code"], "token_expired")
        self.assertEqual(get("/poll/private:x", early)[0], 401)
        self.assertEqual(get("/poll/private:x", narrow)[0], 403)
        # A changed signature byte, and the same token claiming another kid.
        head, body, sig = good.split(".")
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        self.assertEqual(get("/poll/private:x", ".".join([head, body, flipped]))[0], 401)
        hdr = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        hdr["kid"] = "e2"
        other = b64url(json.dumps(hdr).encode()) + "." + body + "." + sig
        st, _, data = get("/poll/private:x", other)
        self.assertEqual(st, 401)
        self.assertIn("kid", json.loads(data)["error"])
        # SSE with ?token= (what a browser's EventSource does).
        s = SseStream(h.port, "/sse/private:x?token=" + good)
        try:
            self.assertEqual(s.status, 200, s.body)
        finally:
            s.close()


if __name__ == "__main__":
    hh.main()
