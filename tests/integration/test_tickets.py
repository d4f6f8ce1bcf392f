# SPDX-License-Identifier: MIT
"""Single-use tickets against the real binary (docs/auth.md, "Tickets"): POST /auth/ticket
asked by curl with the backend's publish key (or the admin key), and each ticket spent by a real
client on every transport: short poll and long poll (curl), SSE (curl -N and the npm
`eventsource` client), WebSocket /ws/{channel} plain and herald.v1 and /ws with ?ticket= or the
first {"type":"auth","ticket":..} message (python3-websockets, npm `ws`).

Covered: a ticket works once per transport and its replay on the same node is refused 401; an
expired ticket is refused; a ticket's grants and its sub and info reach the connection (403
outside the grant, the publisher stamp); who may ask (no key 401, a wrong key 403, the publish
key and the admin key 201); every bad body 400 with its reason; the access log never holds a
ticket; the metrics count; and, with one real redis-server shared by two nodes, a ticket issued
on one node works once on the other and its replay on either is refused (the AuthRedis-like
class at the end).
"""
import asyncio
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream, request, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
JS_SSE = os.path.join(HERE, "js", "sse_client.js")
BACKEND_KEY = "backend-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
SECRET = "integration-test-secret-of-more-than-32-bytes"
IO = 10.0
TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")

RULES = [
    "public:* subscribe=any",
    "private:* subscribe=grant publish=grant",
    "room:* subscribe=auth publish=subscriber",
]

# A node client of the npm `ws` package: opens URL, sends each further argument as a text
# message once open, prints {"kind":"open"} then one line per message received and
# {"kind":"close","code":..} (or {"kind":"error",..} for a refused handshake).
NODE_WS = r"""
const WebSocket = require('ws');
const [url, ...send] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ws = new WebSocket(url);
ws.on('open', () => { out({kind: 'open'}); for (const m of send) ws.send(m); });
ws.on('message', (data) => out({kind: 'message', data: data.toString()}));
ws.on('unexpected-response', (req, res) => { out({kind: 'error', status: res.statusCode});
                                              process.exit(0); });
ws.on('error', (e) => { out({kind: 'error', message: String(e)}); process.exit(0); });
ws.on('close', (code) => { out({kind: 'close', code}); process.exit(0); });
setTimeout(() => { out({kind: 'timeout'}); process.exit(3); }, 15000);
"""


def conf_with_rules(extra):
    merged = dict(hh.DEFAULT_CONF)
    merged.update(extra)
    return hh.conf_text(merged) + "".join("channel_rule %s\n" % r for r in RULES)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ask_ticket(port, body, key=BACKEND_KEY):
    """POST /auth/ticket: (status, headers, parsed JSON body)."""
    hdrs = {"Content-Type": "application/json"}
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    st, h, b = request(port, "POST", "/auth/ticket", raw, hdrs)
    return st, h, json.loads(b) if b else None


def new_ticket(testcase, port, **claims):
    body = {"sub": "42", "channels": {"subscribe": ["private:a", "private:b"],
                                      "publish": ["private:a"]}}
    body.update(claims)
    st, _, doc = ask_ticket(port, body)
    testcase.assertEqual(st, 201, doc)
    testcase.assertRegex(doc["ticket"], TICKET_RE)
    return doc["ticket"]


async def ws_refused_status(port, path):
    websockets = hh.require_websockets()
    try:
        async with hh.ws_connect(port, path):
            return 101
    except websockets.InvalidStatus as e:  # websockets >= 14
        return e.response.status_code
    except getattr(websockets, "InvalidStatusCode", ()) as e:  # older
        return e.status_code


def metric(port, series):
    st, _, body = request(port, "GET", "/metrics", headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert st == 200, st
    m = re.search(r"^%s (\d+)$" % re.escape(series), body.decode(), re.M)
    if not m:
        raise AssertionError("no %s in /metrics" % series)
    return int(m.group(1))


class TicketsMemory(hh.HeraldTestCase):
    """One node, embedded broker: the rules, a publish key, an admin key, an access log."""

    @classmethod
    def setUpClass(cls):
        cls.logdir = hh.tempfile.mkdtemp(prefix="herald-tickets-")
        cls.access_log = os.path.join(cls.logdir, "access.log")
        cls.h = cls.start_class_herald(conf_raw=conf_with_rules({
            "auth_jwt_secret": SECRET,
            "auth_timeout": "2s",
            "auth_ticket_max_ttl": "60s",
            "publish_key": BACKEND_KEY,
            "admin_key": ADMIN_KEY,
            "ws_client_publish": "on",
            "access_log": cls.access_log,
        }))
        cls.port = cls.h.port

    def pub(self, channel, data):
        st, _, body = request(self.port, "POST", "/pub/" + channel, data,
                              {"Authorization": "Bearer " + BACKEND_KEY})
        self.assertEqual(st, 200, body)

    def assert401(self, st, body, reason="ticket unknown, already used or expired"):
        self.assertEqual(st, 401, body)
        doc = json.loads(body)
        self.assertEqual(doc["status"], 401)
        self.assertEqual(doc["code"], "unauthenticated")
        self.assertIn(reason, doc["error"])

    # ---- issuing ----

    def test_issue_answer(self):
        st, hdrs, doc = ask_ticket(self.port, {"sub": "7", "channels": ["public:x"],
                                               "info": {"name": "Ann"}})
        self.assertEqual(st, 201, doc)
        self.assertEqual(set(doc), {"ticket", "expires_in"})
        self.assertRegex(doc["ticket"], TICKET_RE)
        self.assertEqual(doc["expires_in"], 30)  # auth_ticket_ttl's default
        self.assertEqual(hdrs["Cache-Control"], "no-store")
        self.assertEqual(hdrs["Content-Type"], "application/json")
        st, _, doc = ask_ticket(self.port, {"sub": "7", "ttl": 2.5})
        self.assertEqual((st, doc["expires_in"]), (201, 2.5), doc)
        # 100 tickets, all different (192 random bits each)
        seen = {new_ticket(self, self.port) for _ in range(100)}
        self.assertEqual(len(seen), 100)

    def test_who_may_ask(self):
        body = {"sub": "1"}
        st, hdrs, doc = ask_ticket(self.port, body, key=None)
        self.assertEqual(st, 401, doc)
        self.assertIn("publish_key", doc["error"])
        self.assertIn("Bearer", hdrs["WWW-Authenticate"])
        st, _, doc = ask_ticket(self.port, body, key="not-a-key-of-this-node")
        self.assertEqual(st, 403, doc)
        self.assertIn("wrong key", doc["error"])
        self.assertEqual(ask_ticket(self.port, body, key=BACKEND_KEY)[0], 201)
        self.assertEqual(ask_ticket(self.port, body, key=ADMIN_KEY)[0], 201)
        # only POST
        st, _, _ = request(self.port, "GET", "/auth/ticket",
                           headers={"Authorization": "Bearer " + BACKEND_KEY})
        self.assertEqual(st, 405)

    def test_bad_bodies(self):
        cases = [
            ("", "a JSON object is needed"),
            ("{", "body is not JSON"),
            ("[1]", "must be a JSON object"),
            ('{"sub":"1","sub":"2"}', "body is not JSON"),
            ('{"sub":"1","chanels":["a"]}', 'unknown member "chanels"'),
            ('{"sub":"1","exp":1}', 'unknown member "exp"'),
            ('{"sub":7}', "sub must be a string"),
            ('{"sub":""}', "sub"),
            ('{"sub":"1","channels":"news"}', "channels must be an object"),
            ('{"sub":"1","channels":{"subscribe":"news"}}', "channels.subscribe"),
            ('{"sub":"1","channels":{"read":["a"]}}', 'unknown member "channels.read"'),
            ('{"sub":"1","channels":["bad channel"]}', "channel pattern"),
            ('{"sub":"1","channels":["a*b"]}', "channel pattern"),
            ('{"sub":"1","info":"x"}', "info must be a JSON object"),
            ('{"sub":"1","info":{"big":"%s"}}' % ("x" * 5000), "info"),
            ('{"sub":"1","ttl":0}', "ttl must be more than 0"),
            ('{"sub":"1","ttl":-1}', "ttl must be more than 0"),
            ('{"sub":"1","ttl":"30"}', "ttl must be a number"),
            ('{"sub":"1","ttl":61}', "above auth_ticket_max_ttl (60 s)"),
            ('{"sub":"1","channels":%s}' % json.dumps(["c%d" % i for i in range(257)]),
             "more than 256"),
            ('{"sub":"1","channels":{"subscribe":%s,"publish":%s}}' % (
                json.dumps(["c%0120d*" % i for i in range(200)]),
                json.dumps(["d%0120d*" % i for i in range(200)])), "more than 16384"),
        ]
        for body, reason in cases:
            st, _, doc = ask_ticket(self.port, body)
            self.assertEqual(st, 400, (body[:80], doc))
            self.assertEqual(doc["status"], 400)
            self.assertIn(reason, doc["error"], body[:80])

    # ---- spending, per transport ----

    def test_short_poll_once(self):
        t = new_ticket(self, self.port)
        st, _, body = request(self.port, "GET", "/poll/private:a?ticket=" + t)
        self.assertEqual(st, 200, body)
        self.assert401(*request(self.port, "GET", "/poll/private:a?ticket=" + t)[::2])

    def test_long_poll_once(self):
        t = new_ticket(self, self.port)
        out = {}

        def poll():
            out["r"] = request(self.port, "GET", "/lp/private:a?timeout=5&ticket=" + t,
                               timeout=IO)
        import threading
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.3)
        self.pub("private:a", "held")
        th.join(IO)
        st, _, body = out["r"]
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["messages"][0]["data"], "held")
        self.assert401(*request(self.port, "GET", "/lp/private:a?timeout=1&ticket=" + t)[::2])

    def test_sse_curl_once(self):
        t = new_ticket(self, self.port)
        url = "http://127.0.0.1:%d/sse/private:a?ticket=%s" % (self.port, t)
        p = subprocess.Popen(["curl", "-sN", "--max-time", "8", url], stdout=subprocess.PIPE)
        self.addCleanup(p.kill)
        # the stream is up once a publish reaches it
        deadline = time.monotonic() + IO
        got = b""
        os.set_blocking(p.stdout.fileno(), False)
        while b"data: live" not in got and time.monotonic() < deadline:
            self.pub("private:a", "live")
            time.sleep(0.3)
            got += p.stdout.read() or b""
        self.assertIn(b"data: live", got)
        p.kill()
        st, _, body = request(self.port, "GET", "/sse/private:a?ticket=" + t)
        self.assert401(st, body)

    def test_sse_eventsource_once(self):
        node, modules = hh.require_node_module("eventsource")
        t = new_ticket(self, self.port)
        url = "http://127.0.0.1:%d/sse/private:b?ticket=%s" % (self.port, t)
        env = dict(os.environ, NODE_PATH=modules)
        p = subprocess.Popen([node, JS_SSE, url, "1", "--timeout", "15000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        first = json.loads(p.stdout.readline())
        self.assertEqual(first["kind"], "open", first)
        self.pub("private:b", "to-es")
        ev = json.loads(p.stdout.readline())
        self.assertEqual((ev["kind"], ev["data"]), ("event", "to-es"), ev)
        self.assertEqual(p.wait(IO), 0)
        # The same URL again (what EventSource does on a reconnect): refused, the browser
        # needs a new ticket.
        p = subprocess.Popen([node, JS_SSE, url, "1", "--timeout", "3000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        ev = json.loads(p.stdout.readline())
        self.assertEqual((ev["kind"], ev.get("status")), ("error", 401), ev)

    def test_websocket_channel_once(self):
        async def go():
            for proto in (None, "herald.v1"):
                t = new_ticket(self, self.port)
                kw = {"subprotocols": [proto]} if proto else {}
                async with hh.ws_connect(self.port, "/ws/private:a?ticket=" + t, **kw) as ws:
                    await asyncio.sleep(0.2)
                    self.pub("private:a", "over-ws")
                    m = await asyncio.wait_for(ws.recv(), IO)
                    if proto:
                        self.assertEqual(json.loads(m)["data"], "over-ws")
                    else:
                        self.assertEqual(m, "over-ws")
                self.assertEqual(await ws_refused_status(self.port, "/ws/private:a?ticket=" + t),
                                 401)
        run(go())

    def test_ws_json_query_once(self):
        async def go():
            t = new_ticket(self, self.port)
            async with hh.ws_connect(self.port, "/ws?ticket=" + t) as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:a"}))
                self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), IO))["type"],
                                 "subscribed")
                # outside the ticket's grant
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:z"}))
                self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), IO))["code"],
                                 "forbidden")
            self.assertEqual(await ws_refused_status(self.port, "/ws?ticket=" + t), 401)
        run(go())

    def test_ws_auth_message_once(self):
        websockets = hh.require_websockets()

        async def closed_with(ws):
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), IO)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code, e.rcvd.reason

        async def go():
            t = new_ticket(self, self.port)
            async with hh.ws_connect(self.port, "/ws") as ws:
                # the subscribe right behind the auth waits for the ticket's answer, in order
                await ws.send(json.dumps({"type": "auth", "ticket": t, "ref": 1}))
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:a", "ref": 2}))
                a = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual((a["type"], a["sub"], a["ref"]), ("authenticated", "42", 1), a)
                self.assertNotIn("exp", a)  # a ticket's connection has no exp
                b = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual((b["type"], b["ref"]), ("subscribed", 2), b)
                self.pub("private:a", "after-auth")
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual(m["data"], "after-auth")
                await ws.send(json.dumps({"type": "auth", "ticket": t}))
                e = json.loads(await asyncio.wait_for(ws.recv(), IO))
                self.assertEqual(e["code"], "already_authenticated", e)
            # replayed, malformed, or with a token too: closed 4401
            for msg, reason in (({"type": "auth", "ticket": t}, "already used"),
                                ({"type": "auth", "ticket": "x" * 31}, "malformed ticket"),
                                ({"type": "auth", "ticket": 5}, "malformed ticket"),
                                ({"type": "auth", "ticket": new_ticket(self, self.port),
                                  "token": "a.b.c"}, "not both")):
                async with hh.ws_connect(self.port, "/ws") as ws:
                    await ws.send(json.dumps(msg))
                    code, why = await closed_with(ws)
                    self.assertEqual(code, 4401, why)
                    self.assertIn(reason, why)
            # the client leaves while its ticket is being taken: nothing breaks, it is spent
            t = new_ticket(self, self.port)
            ws = await hh.ws_connect(self.port, "/ws")
            await ws.send(json.dumps({"type": "auth", "ticket": t}))
            ws.transport.abort()
            await asyncio.sleep(0.3)
            self.assertEqual(request(self.port, "GET", "/poll/private:a?ticket=" + t)[0], 401)
        run(go())

    def test_ws_auth_message_revoked_sub(self):
        """A ticket vouches for a user like a token: on the /ws auth message, a revoked sub is
        refused with 4002 (the connect transports' 401 token_revoked is test_revoke's)."""
        websockets = hh.require_websockets()
        st, _, body = request(self.port, "POST", "/admin/revoke",
                              json.dumps({"sub": "rita", "expires_in": 60}),
                              {"Authorization": "Bearer " + ADMIN_KEY,
                               "Content-Type": "application/json"})
        self.assertEqual(st, 200, body)

        async def go():
            async with hh.ws_connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"type": "auth",
                                          "ticket": new_ticket(self, self.port, sub="rita")}))
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), IO)
                except websockets.ConnectionClosed as e:
                    return e.rcvd.code, e.rcvd.reason
        self.assertEqual(run(go()), (4002, "token revoked"))

    def test_npm_ws_once(self):
        node, modules = hh.require_node_module("ws")
        env = dict(os.environ, NODE_PATH=modules)
        t = new_ticket(self, self.port)
        url = "ws://127.0.0.1:%d/ws/private:a?ticket=%s" % (self.port, t)
        p = subprocess.Popen([node, "-e", NODE_WS, url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.assertEqual(json.loads(p.stdout.readline()), {"kind": "open"})
        time.sleep(0.2)
        self.pub("private:a", "npm")
        self.assertEqual(json.loads(p.stdout.readline()), {"kind": "message", "data": "npm"})
        p.kill()
        p.wait(5)
        out = subprocess.run([node, "-e", NODE_WS, url], capture_output=True, env=env, timeout=20)
        self.assertEqual(json.loads(out.stdout.splitlines()[0]), {"kind": "error", "status": 401},
                         out)

    # ---- what a ticket carries ----

    def test_grant_and_stamp(self):
        # outside the grant: 403, and the ticket is spent anyway
        t = new_ticket(self, self.port)
        st, _, body = request(self.port, "GET", "/poll/private:z?ticket=" + t)
        self.assertEqual(st, 403, body)
        self.assert401(*request(self.port, "GET", "/poll/private:a?ticket=" + t)[::2])
        # sub and info travel with the connection: a client publish is stamped with them

        async def go():
            t = new_ticket(self, self.port, sub="ann", info={"name": "Ann"}, channels=[])
            async with hh.ws_connect(self.port, "/ws?ticket=" + t) as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "room:1"}))
                await asyncio.wait_for(ws.recv(), IO)
                await ws.send(json.dumps({"op": "publish", "channel": "room:1", "data": "hi"}))
                for _ in range(3):
                    m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                    if m["type"] == "message":
                        return m
        m = run(go())
        self.assertEqual(m["publisher"], {"sub": "ann", "info": {"name": "Ann"}}, m)

    def test_expired(self):
        t = new_ticket(self, self.port, ttl=0.3)
        time.sleep(0.6)
        self.assert401(*request(self.port, "GET", "/poll/private:a?ticket=" + t)[::2])

    def test_refusals(self):
        t = new_ticket(self, self.port)
        # malformed: never reaches the store
        for bad in ("abc", t + "x", t[:-1] + "!", t[:-1] + "%3D"):
            st, _, body = request(self.port, "GET", "/poll/private:a?ticket=" + bad)
            self.assert401(st, body, "malformed ticket")
        # a ticket and a token together: refused, the ticket not spent
        st, _, body = request(self.port, "GET", "/poll/private:a?ticket=%s&token=x" % t)
        self.assert401(st, body, "not both")
        st, _, body = request(self.port, "GET", "/poll/private:a?ticket=" + t,
                              headers={"Authorization": "Bearer x.y.z"})
        self.assert401(st, body, "not both")
        # tickets open connections; they do not publish
        st, _, body = request(self.port, "POST", "/pub/private:a?ticket=" + t, "x")
        self.assert401(st, body, "a ticket opens a connection")
        # still good after all that
        self.assertEqual(request(self.port, "GET", "/poll/private:a?ticket=" + t)[0], 200)

    def test_access_log_redacts(self):
        t = new_ticket(self, self.port)
        request(self.port, "GET", "/poll/private:a?since=0-0&ticket=%s&x=1" % t)
        wait_for(lambda: os.path.exists(self.access_log) and
                 "ticket=REDACTED&x=1" in open(self.access_log).read(), what="access log line")
        text = open(self.access_log).read()
        self.assertNotIn(t, text)
        self.assertNotIn(t, self.h.log_text())

    def test_metrics(self):
        before = {k: metric(self.port, 'herald_tickets_total{result="%s"}' % k)
                  for k in ("issued", "used", "refused_invalid")}
        t = new_ticket(self, self.port)
        request(self.port, "GET", "/poll/private:a?ticket=" + t)
        request(self.port, "GET", "/poll/private:a?ticket=" + t)
        request(self.port, "GET", "/poll/private:a?ticket=short")
        after = {k: metric(self.port, 'herald_tickets_total{result="%s"}' % k) for k in before}
        self.assertEqual({k: after[k] - before[k] for k in before},
                         {"issued": 1, "used": 1, "refused_invalid": 2})


class BackendExample(hh.HeraldTestCase):
    """examples/backend.py (docs/auth.md's backend) run against the real binary, so the example
    cannot rot: its token and its ticket open real connections, and its errors are herald's."""

    def run_example(self, port, *args, key=BACKEND_KEY):
        env = dict(os.environ, HERALD_URL="http://127.0.0.1:%d" % port, HERALD_SECRET=SECRET,
                   HERALD_KEY=key)
        return subprocess.run([sys.executable, os.path.join(hh.HERALD_SRC, "examples",
                                                            "backend.py")] + list(args),
                              capture_output=True, text=True, env=env, timeout=30)

    def test_example(self):
        h = self.start_herald(conf_raw=conf_with_rules({
            "auth_jwt_secret": SECRET, "publish_key": BACKEND_KEY, "admin_key": ADMIN_KEY,
            "channel_rule": "user:* subscribe=user"}))
        out = self.run_example(h.port, "urls", "42")
        self.assertEqual(out.returncode, 0, out.stderr)
        sse_url, ws_url = out.stdout.split()
        self.assertIn("/sse/user%3A42?token=", sse_url)
        self.assertIn("/ws/user%3A42?ticket=", ws_url)
        path = sse_url.split(str(h.port), 1)[1]
        s = SseStream(h.port, path)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        path = ws_url.split(str(h.port), 1)[1]

        async def go():
            async with hh.ws_connect(h.port, path) as ws:
                await asyncio.sleep(0.2)
                st, _, _ = request(h.port, "POST", "/pub/user:42", "for-42",
                                   {"Authorization": "Bearer " + BACKEND_KEY})
                self.assertEqual(st, 200)
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO), "for-42")
            self.assertEqual(await ws_refused_status(h.port, path), 401)
        run(go())
        self.assertEqual(s.next_event(IO).text, "for-42")
        # the ticket command prints one ticket; herald's refusal is the script's error
        out = self.run_example(h.port, "ticket", "7", "user:7")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout.strip(), TICKET_RE)
        out = self.run_example(h.port, "ticket", "7", key="wrong-key")
        self.assertEqual(out.returncode, 1)
        self.assertIn("herald refused the ticket (403): POST /auth/ticket: wrong key", out.stderr)


class TicketsWithoutJwtKey(hh.HeraldTestCase):
    """Channel rules and no JWT key: tickets are the only identity. An anonymous /ws (which
    needs no auth message) may still authenticate once with a ticket."""

    def test_tickets_only(self):
        h = self.start_herald(conf_raw=conf_with_rules({"publish_key": BACKEND_KEY}))
        t = new_ticket(self, h.port)
        self.assertEqual(request(h.port, "GET", "/poll/private:a")[0], 401)
        self.assertEqual(request(h.port, "GET", "/poll/private:a?ticket=" + t)[0], 200)

        async def go():
            async with hh.ws_connect(h.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "public:x"}))
                self.assertEqual(json.loads(await ws.recv())["type"], "subscribed")
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:a"}))
                self.assertEqual(json.loads(await ws.recv())["code"], "unauthenticated")
                await ws.send(json.dumps({"type": "auth", "ticket": new_ticket(self, h.port)}))
                self.assertEqual(json.loads(await ws.recv())["type"], "authenticated")
                await ws.send(json.dumps({"op": "subscribe", "channel": "private:a"}))
                self.assertEqual(json.loads(await ws.recv())["type"], "subscribed")
        run(go())


class TicketsAuthOff(hh.HeraldTestCase):
    def test_refused_when_auth_is_off(self):
        h = self.start_herald(conf={"publish_key": BACKEND_KEY})
        st, _, doc = ask_ticket(h.port, {"sub": "1"})
        self.assertEqual(st, 409, doc)
        self.assertIn("authorization is off", doc["error"])


class TicketsLimit(hh.HeraldTestCase):
    def test_max_tickets(self):
        h = self.start_herald(conf_raw=conf_with_rules({
            "publish_key": BACKEND_KEY, "admin_key": ADMIN_KEY, "auth_max_tickets": "5"}))
        ts = [new_ticket(self, h.port) for _ in range(5)]
        st, hdrs, doc = ask_ticket(h.port, {"sub": "1"})
        self.assertEqual(st, 503, doc)
        self.assertIn("auth_max_tickets", doc["error"])
        self.assertTrue(hdrs["Retry-After"].isdigit())
        self.assertEqual(metric(h.port, 'herald_tickets_total{result="refused_full"}'), 1)
        # a used ticket makes room
        self.assertEqual(request(h.port, "GET", "/poll/private:a?ticket=" + ts[0])[0], 200)
        new_ticket(self, h.port)
        # so does an expired one
        h.reload(conf_raw=conf_with_rules({
            "publish_key": BACKEND_KEY, "admin_key": ADMIN_KEY, "auth_max_tickets": "6"}))
        new_ticket(self, h.port, ttl=0.2)
        self.assertEqual(ask_ticket(h.port, {"sub": "1"})[0], 503)
        time.sleep(0.5)
        new_ticket(self, h.port)


class TicketsRedis(hh.HeraldTestCase):
    """Two nodes sharing one real redis-server: a ticket is stored in Redis (under its hash,
    never as itself, with its ttl) and taken with GETDEL, so it works once on any node."""

    def setUp(self):
        import redis_support as rs
        self.redis = rs.start_redis(self)
        self.conf = {"auth_jwt_secret": SECRET, "publish_key": BACKEND_KEY,
                     "redis": "unix://" + self.redis.sock}
        self.a = self.start_herald(conf_raw=conf_with_rules(self.conf))
        self.b = self.start_herald(conf_raw=conf_with_rules(self.conf))

    def test_once_across_nodes(self):
        t = new_ticket(self, self.a.port)
        # In Redis: one key under the prefix, not the ticket itself, with a ttl of about 30 s.
        keys = self.redis.cli("--scan", "--pattern", "herald:tk:*").split()
        self.assertEqual(len(keys), 1, keys)
        self.assertNotIn(t, keys[0])
        self.assertTrue(25000 < int(self.redis.cli("PTTL", keys[0])) <= 30000)
        # used on the other node, then refused on both
        st, _, body = request(self.b.port, "GET", "/poll/private:a?ticket=" + t)
        self.assertEqual(st, 200, body)
        for node in (self.b, self.a):
            st, _, body = request(node.port, "GET", "/poll/private:a?ticket=" + t)
            self.assertEqual(st, 401, body)
            self.assertIn("ticket unknown, already used or expired", json.loads(body)["error"])
        self.assertEqual(self.redis.cli("--scan", "--pattern", "herald:tk:*").split(), [])

    def test_race_two_nodes(self):
        """The same ticket sent to both nodes at once, 20 times: exactly one wins each time."""
        import threading
        for _ in range(20):
            t = new_ticket(self, self.a.port)
            out = []

            def go(node):
                out.append(request(node.port, "GET", "/poll/private:a?ticket=" + t)[0])
            ths = [threading.Thread(target=go, args=(n,)) for n in (self.a, self.b)]
            for th in ths:
                th.start()
            for th in ths:
                th.join(IO)
            self.assertEqual(sorted(out), [200, 401])

    def test_streams_across_nodes(self):
        async def go():
            t = new_ticket(self, self.a.port)
            async with hh.ws_connect(self.b.port, "/ws/private:a?ticket=" + t) as ws:
                await asyncio.sleep(0.3)
                st, _, _ = request(self.a.port, "POST", "/pub/private:a", "x-node",
                                   {"Authorization": "Bearer " + BACKEND_KEY})
                self.assertEqual(st, 200)
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO), "x-node")
            self.assertEqual(await ws_refused_status(self.a.port, "/ws/private:a?ticket=" + t),
                             401)
        run(go())
        t = new_ticket(self, self.b.port)
        s = SseStream(self.a.port, "/sse/private:a?ticket=" + t)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        s.close()
        s = SseStream(self.b.port, "/sse/private:a?ticket=" + t)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 401, s.body)

    def test_expired_and_limit(self):
        t = new_ticket(self, self.a.port, ttl=0.3)
        time.sleep(0.6)  # Redis dropped the key (PX)
        self.assertEqual(request(self.b.port, "GET", "/poll/private:a?ticket=" + t)[0], 401)
        time.sleep(0.8)  # the node counts by whole seconds: its count of it has ended too
        # auth_max_tickets 3 on node a, counted until their ttl passes (a use on another node
        # is not seen): the short one above counts no more
        self.a.reload(conf_raw=conf_with_rules(dict(self.conf, auth_max_tickets="3")))
        for _ in range(3):
            new_ticket(self, self.a.port, ttl=1)
        st, hdrs, doc = ask_ticket(self.a.port, {"sub": "1"})
        self.assertEqual(st, 503, doc)
        self.assertIn("auth_max_tickets", doc["error"])
        new_ticket(self, self.b.port)  # the other node has its own count
        time.sleep(2.1)
        new_ticket(self, self.a.port)

    def test_redis_down(self):
        t = new_ticket(self, self.a.port)
        self.redis.kill()
        st, hdrs, body = request(self.a.port, "GET", "/poll/private:a?ticket=" + t)
        self.assertEqual(st, 503, body)
        self.assertIn("Retry-After", hdrs)
        st, _, doc = ask_ticket(self.b.port, {"sub": "1"})
        self.assertEqual(st, 503, doc)


if __name__ == "__main__":
    hh.main()
