# SPDX-License-Identifier: MIT
"""The authorize hook through the real binary (docs/webhooks.md, "Backend hooks"): herald asks
the application's backend (a real receiver: node, every question verified with the npm
standardwebhooks library, webhook_support.Receiver in its "auth" mode, answering by the channel's
name) whether a connect or a subscribe on a channel under `channel_rule ... subscribe=hook` may go
on, and applies the answer on every transport (short poll, long poll, SSE, /ws/{channel}, a /ws
subscribe op, HTTP/2 streams): allowed; refused with the backend's reason (403 JSON, a /ws error
reply); allowed as the identity the backend gives (its sub is the connection's: a disconnect by
sub reaches it); a backend that hangs (timeout) or is down, under on_error=deny (503 with
Retry-After) and on_error=allow; answers cached (one call for many connects); questions carry
the client, forwarded headers and cookies; with connect=on, every connect asks (a /ws connect
naming no channel, open channels: action "connect"), allowed, refused 403/401 before the
upgrade, as the backend's identity, and a backend down under both policies; conf errors. The flood of connects against a hung
backend is tests/abuse/test_authorize_flood.py."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import webhook_support as ws  # noqa: E402
from test_http2 import H2Client  # noqa: E402

RULES = ["hook:* subscribe=hook publish=grant", "open:* subscribe=any"]

# Every transport, as (name, how to connect to a channel): each returns (status, JSON body or
# None); the /ws subscribe op maps its reply to 200 or to the status its code stands for.
HTTP_TRANSPORTS = ("poll", "longpoll", "sse", "websocket", "h2-poll", "h2-sse")
CODE_STATUS = {"forbidden": 403, "unauthenticated": 401, "backend_unavailable": 503,
               "backend_busy": 503}


def hook_line(url, secret, extra=""):
    return ("authorize_hook %s secret=%s forward_headers=x-tenant forward_cookies=sid %s" %
            (url, secret, extra)).strip()


def node_overrides(url, secret, extra=""):
    return (["webhook_allow_private on", hook_line(url, secret, extra)] +
            ["channel_rule " + r for r in RULES])


def body_json(data):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def connect(port, transport, channel, headers=None, timeout=hh.IO_TIMEOUT):
    """Opens `channel` on `transport` and returns (status, JSON body or None, headers)."""
    headers = dict(headers or {})
    if transport in ("poll", "longpoll"):
        path = "/poll/" + channel if transport == "poll" else "/lp/%s?timeout=0.2" % channel
        status, hdrs, data = hh.request(port, "GET", path, headers=headers, timeout=timeout)
        return status, body_json(data), hdrs
    if transport in ("sse", "websocket"):
        with hh.Client(port) as c:
            if transport == "sse":
                c.send(hh.build_request("GET", "/sse/" + channel, headers))
            else:
                c.send(hh.ws_handshake_request("/ws/" + channel, extra=headers))
            r = c.read_response(head=True, timeout=timeout)
            if r.status in (200, 101):
                return r.status, None, r
            n = int(r.header("Content-Length") or 0)
            while len(c.buf) < n:
                c._fill(timeout)
            return r.status, body_json(c.buf[:n]), r
    if transport.startswith("h2-"):
        path = ("/poll/" if transport == "h2-poll" else "/sse/") + channel
        with H2Client(port) as c:
            s = c.request("GET", path, [(k.lower(), v) for k, v in headers.items()])
            c.until(lambda: s.status or s.reset is not None, timeout, "answer to " + path)
            if transport == "h2-sse" and s.status == 200:
                return 200, None, s.headers
            c.until(lambda: s.ended or s.reset is not None, timeout, "body of " + path)
            return s.status, body_json(bytes(s.data)), s.headers
    raise AssertionError("unknown transport " + transport)


def ws_subscribe(port, channel, headers=None, timeout=hh.IO_TIMEOUT):
    """A /ws subscribe op on a fresh connection: (status it stands for, the reply)."""
    w = hh.RawWS(port, "/ws", extra=headers)
    try:
        w.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
            {"op": "subscribe", "channel": channel, "ref": 7}).encode()))
        reply = w.recv_json(timeout)
        # the connection goes on after a refusal: a ping is still answered, in order
        w.send(hh.ws_frame(hh.OP_TEXT, b'{"op":"ping","ref":8}'))
        pong = w.recv_json(timeout)
        assert pong.get("type") == "pong" and pong.get("ref") == 8, pong
    finally:
        w.close()
    if reply.get("type") == "subscribed":
        return 200, reply
    return CODE_STATUS.get(reply.get("code"), 0), reply


class HookCase(hh.HeraldTestCase):
    def backend(self):
        self.secret = ws.new_secret()
        self.recv = ws.Receiver(self, [self.secret])
        self.recv.control(default="auth")
        return self.recv

    def node(self, extra="", url=None, workers=2, more=()):
        return self.start_herald(
            overrides=node_overrides(url or self.recv.url("/authorize"), self.secret, extra) +
            list(more), workers=workers)

    def questions(self):
        """The questions the backend got, parsed, each checked signed."""
        out = []
        for d in self.recv.deliveries():
            self.assertEqual(d["verified"], [True], d)
            self.assertEqual(d["path"], "/authorize")
            out.append(json.loads(d["body"]))
        return out


class TestVerdicts(HookCase):
    def test_allow_every_transport(self):
        """An allowed channel opens on every transport; each question is signed, names the
        action, transport, channel, client, forwarded header and cookie, and nothing else."""
        self.backend()
        h = self.node("timeout=3s")
        hdrs = {"X-Tenant": "acme", "Cookie": "theme=dark; sid=s3cr3t", "X-Other": "no"}
        for t in HTTP_TRANSPORTS:
            status, body, _ = connect(h.port, t, "hook:ok-" + t, hdrs)
            self.assertIn(status, (200, 101, 204), (t, status, body))
        status, reply = ws_subscribe(h.port, "hook:ok-ws-op", hdrs)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["ref"], 7)
        qs = self.questions()
        by_channel = {q["data"]["channels"][0]: q for q in qs}
        self.assertEqual(len(qs), len(HTTP_TRANSPORTS) + 1, qs)
        want = {"poll": ("poll", "history"), "longpoll": ("longpoll", "subscribe"),
                "sse": ("sse", "subscribe"), "websocket": ("websocket", "subscribe"),
                "h2-poll": ("poll", "history"), "h2-sse": ("sse", "subscribe"),
                "ws-op": ("websocket", "subscribe")}
        for t, (transport, action) in want.items():
            q = by_channel["hook:ok-" + t]
            self.assertEqual(q["type"], "authorize")
            d = q["data"]
            self.assertEqual((d["transport"], d["action"]), (transport, action), (t, d))
            self.assertEqual(d["channels"], ["hook:ok-" + t])
            self.assertEqual(d["client_ip"], "127.0.0.1")
            self.assertIsNone(d["identity"])
            self.assertEqual(d["headers"], {"x-tenant": "acme"}, (t, d))
            self.assertEqual(d["cookies"], {"sid": "s3cr3t"}, (t, d))
        # a channel no hook covers is not asked about
        n = len(qs)
        self.assertEqual(connect(h.port, "poll", "open:x")[0], 200)
        self.assertEqual(len(self.recv.deliveries()), n)

    def test_deny_every_transport(self):
        """The backend's refusal is a 403 with its reason on every transport, an error reply
        with code forbidden on /ws (the connection goes on)."""
        self.backend()
        h = self.node()
        for t in HTTP_TRANSPORTS:
            status, body, _ = connect(h.port, t, "hook:deny-" + t)
            self.assertEqual(status, 403, (t, body))
            self.assertEqual(body["code"], "forbidden", (t, body))
            self.assertEqual(body["error"], "no entry for hook:deny-" + t, (t, body))
        status, reply = ws_subscribe(h.port, "hook:deny-op")
        self.assertEqual(status, 403, reply)
        self.assertEqual(reply["error"], "no entry for hook:deny-op")
        self.assertEqual(reply["channel"], "hook:deny-op")
        _, _, text = hh.request(h.port, "GET", "/metrics")
        self.assertIn(b'herald_authorize_refused_total{reason="denied"} %d' %
                      (len(HTTP_TRANSPORTS) + 1), text)

    def test_multi_channel_sse_one_question(self):
        """A multi-channel SSE stream asks once about its hook channels (not the others)."""
        self.backend()
        h = self.node()
        with hh.Client(h.port) as c:
            c.send(hh.build_request("GET", "/sse?channel=hook:a&channel=open:b&channel=hook:c"))
            r = c.read_response(head=True)
            self.assertEqual(r.status, 200)
        qs = self.questions()
        self.assertEqual(len(qs), 1, qs)
        self.assertEqual(qs[0]["data"]["channels"], ["hook:a", "hook:c"])

    def test_grant_identity(self):
        """An answer with sub, info and grants makes that identity the connection's: a client
        publish on the granted channel is allowed (publish=grant) and stamped with the
        backend's sub and info, one on a channel allowed without grants is refused, and a
        disconnect by that sub ends a stream opened the same way."""
        self.backend()
        key = "k-" + os.urandom(8).hex()
        h = self.node(more=["ws_client_publish on", "publish_key " + key])
        sse = hh.SseStream(h.port, "/sse/hook:grant-1")
        self.addCleanup(sse.close)
        w = hh.RawWS(h.port, "/ws/hook:grant-1")
        self.addCleanup(w.close)
        w.send(hh.ws_frame(hh.OP_TEXT, b"hi from the hooked user"))
        self.assertEqual(sse.next_event().text, "hi from the hooked user")
        status, body, _ = hh.get_json(h.port, "/poll/hook:grant-1")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["messages"][-1]["publisher"], {"sub": "hooked",
                                                             "info": {"via": "hook"}})
        plain = hh.RawWS(h.port, "/ws/hook:plain-1")
        self.addCleanup(plain.close)
        plain.send(hh.ws_frame(hh.OP_TEXT, b"not granted"))
        code, reason = plain.expect_close()
        self.assertEqual((code, reason), (4401, "publishing here needs a token"))
        status, _, data = hh.request(h.port, "POST", "/admin/disconnect",
                                     body=json.dumps({"sub": "hooked"}))
        self.assertEqual(status, 200, data)
        while True:
            b = sse.next_block()
            if b.event == "herald-disconnected":
                break


class TestFailures(HookCase):
    def test_timeout_deny(self):
        """A backend that does not answer within timeout: 503 backend_unavailable with
        Retry-After on every transport, an error reply on /ws; other channels served."""
        self.backend()
        h = self.node("timeout=300ms")
        for t in ("poll", "sse", "websocket", "h2-poll"):
            t0 = time.monotonic()
            status, body, hdrs = connect(h.port, t, "hook:hang-" + t)
            took = time.monotonic() - t0
            self.assertEqual(status, 503, (t, body))
            self.assertEqual(body["code"], "backend_unavailable", (t, body))
            self.assertGreaterEqual(took, 0.25, t)
            self.assertLess(took, 5, t)
            if t != "h2-poll":
                self.assertTrue(hdrs.header("Retry-After") if hasattr(hdrs, "header")
                                else hdrs.get("Retry-After"), t)
        status, reply = ws_subscribe(h.port, "hook:hang-op")
        self.assertEqual(reply.get("code"), "backend_unavailable", reply)
        self.assertEqual(connect(h.port, "poll", "open:x")[0], 200)

    def test_backend_down_both_policies(self):
        """Nothing listens where the backend should: on_error=deny refuses with 503, allow
        lets every transport in."""
        port = self.reserve_port()
        self.secret = ws.new_secret()
        url = "http://127.0.0.1:%d/authorize" % port
        h = self.node("timeout=1s", url=url)
        for t in ("poll", "sse", "websocket"):
            status, body, _ = connect(h.port, t, "hook:x")
            self.assertEqual((status, body["code"]), (503, "backend_unavailable"), t)
        status, reply = ws_subscribe(h.port, "hook:x")
        self.assertEqual(status, 503, reply)
        h.stop()
        h = self.node("timeout=1s on_error=allow", url=url)
        for t in HTTP_TRANSPORTS:
            status, body, _ = connect(h.port, t, "hook:x")
            self.assertIn(status, (200, 101, 204), (t, body))
        self.assertEqual(ws_subscribe(h.port, "hook:x")[0], 200)

    def test_backend_500(self):
        """A 5xx is no answer: on_error=deny refuses with 503."""
        self.backend()
        h = self.node()
        status, body, _ = connect(h.port, "poll", "hook:err")
        self.assertEqual((status, body["code"]), (503, "backend_unavailable"))


class TestCache(HookCase):
    def test_cache_one_call(self):
        """With cache=, many connects asking the same question make one call within the cache
        time (refusals are cached too); without it, one call each."""
        self.backend()
        h = self.node("cache=30s")
        for _ in range(10):
            self.assertEqual(connect(h.port, "poll", "hook:c")[0], 200)
            self.assertEqual(connect(h.port, "poll", "hook:deny-c")[0], 403)
        qs = self.questions()
        self.assertEqual(sorted(q["data"]["channels"][0] for q in qs), ["hook:c", "hook:deny-c"])
        # another question (another header value) is another call
        self.assertEqual(connect(h.port, "poll", "hook:c", {"X-Tenant": "b"})[0], 200)
        self.assertEqual(len(self.questions()), 3)
        _, _, text = hh.request(h.port, "GET", "/metrics")
        self.assertIn(b'herald_authorize_hook_total{result="cached"} 18', text)

    def test_no_cache(self):
        self.backend()
        h = self.node()
        for _ in range(4):
            self.assertEqual(connect(h.port, "poll", "hook:n")[0], 200)
        self.assertEqual(len(self.questions()), 4)


def ws_connect(port, headers=None, timeout=hh.IO_TIMEOUT):
    """A /ws handshake (no channel): (status, JSON body or None)."""
    with hh.Client(port) as c:
        c.send(hh.ws_handshake_request("/ws", extra=dict(headers or {})))
        r = c.read_response(head=True, timeout=timeout)
        if r.status == 101:
            return 101, None
        n = int(r.header("Content-Length") or 0)
        while len(c.buf) < n:
            c._fill(timeout)
        return r.status, body_json(c.buf[:n])


class TestConnectLevel(HookCase):
    """connect=on: the backend decides every connect, also a /ws connect naming no channel and
    a connect to channels no hook covers (action "connect", no channel); a connect with hook
    channels still asks once."""

    def test_allow_deny_identity(self):
        self.backend()
        deny = json.dumps({"allow": False, "reason": "not today"})
        who = json.dumps({"allow": False, "status": 401, "reason": "who are you"})
        grant = json.dumps({"allow": True, "sub": "hooked", "info": {"via": "connect"}})
        self.recv.control(["reply:200:" + deny, "reply:200:" + who, "reply:200:" + deny,
                           "reply:200:" + grant], default="auth")
        h = self.node("connect=on")
        status, body = ws_connect(h.port)
        self.assertEqual((status, body["code"], body["error"]), (403, "forbidden", "not today"))
        status, body = ws_connect(h.port)
        self.assertEqual((status, body["code"]), (401, "unauthenticated"), body)
        status, body, _ = connect(h.port, "sse", "open:deny-me")
        self.assertEqual((status, body["code"]), (403, "forbidden"), body)
        # allowed as the backend's identity: a disconnect by its sub reaches the /ws connection
        w = hh.RawWS(h.port, "/ws")
        self.addCleanup(w.close)
        for t in ("poll", "longpoll", "sse", "websocket", "h2-sse"):
            status, body, _ = connect(h.port, t, "open:ok-" + t)
            self.assertIn(status, (200, 101, 204), (t, status, body))
        self.assertEqual(connect(h.port, "sse", "hook:one")[0], 200)
        qs = [q["data"] for q in self.questions()]
        self.assertEqual([(q["action"], q["transport"], q["channels"]) for q in qs[:4]],
                         [("connect", "websocket", [])] * 2 + [("connect", "sse", [])] +
                         [("connect", "websocket", [])])
        self.assertEqual([(q["action"], q["transport"]) for q in qs[4:9]],
                         [("connect", "poll"), ("connect", "longpoll"), ("connect", "sse"),
                          ("connect", "websocket"), ("connect", "sse")])
        self.assertEqual(qs[9]["channels"], ["hook:one"])  # one question, as before
        self.assertEqual(qs[9]["action"], "subscribe")
        self.assertEqual(len(qs), 10, qs)
        status, _, data = hh.request(h.port, "POST", "/admin/disconnect",
                                     body=json.dumps({"sub": "hooked"}))
        self.assertEqual(status, 200, data)
        self.assertIsNotNone(w.expect_close()[0])

    def test_backend_down(self):
        """Nothing listens: a /ws connect is refused 503 backend_unavailable (on_error=deny),
        let in with on_error=allow."""
        port = self.reserve_port()
        self.secret = ws.new_secret()
        url = "http://127.0.0.1:%d/authorize" % port
        h = self.node("timeout=1s connect=on", url=url)
        status, body = ws_connect(h.port)
        self.assertEqual((status, body["code"]), (503, "backend_unavailable"), body)
        status, body, _ = connect(h.port, "sse", "open:x")
        self.assertEqual((status, body["code"]), (503, "backend_unavailable"), body)
        h.stop()
        h = self.node("timeout=1s connect=on on_error=allow", url=url)
        self.assertEqual(ws_connect(h.port)[0], 101)
        self.assertEqual(connect(h.port, "sse", "open:x")[0], 200)

    def test_off_by_default(self):
        self.backend()
        h = self.node()
        self.assertEqual(ws_connect(h.port)[0], 101)
        self.assertEqual(connect(h.port, "sse", "open:x")[0], 200)
        self.assertEqual(self.questions(), [])


# a SCHED_IDLE thread keeps the nice it inherits (the suite may run under nice)
INHERITED_NICE = os.nice(0)


def hooks_thread_sched(pid):
    """(policy, nice) of herald's hooks thread, from /proc (stat fields 41 and 19)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() != "herald-hooks":
                continue
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[38]), int(fields[16])
    return None


class TestSchedule(HookCase):
    def test_hooks_thread_not_idle_class_with_authorize_hook(self):
        """Connects wait on the hooks thread when an authorize_hook is configured, so it runs
        at nice 10 (SCHED_OTHER), not SCHED_IDLE (about 0.3% of a core while the workers keep
        both cores busy); with webhooks only and no Redis it is SCHED_IDLE."""
        self.backend()
        h = self.node("timeout=3s")
        hh.wait_for(lambda: hooks_thread_sched(h.pid) is not None, timeout=20,
                    what="herald-hooks thread")
        hh.wait_for(lambda: hooks_thread_sched(h.pid) == (os.SCHED_OTHER, 10), timeout=20,
                    what="hooks thread at SCHED_OTHER nice 10: %r" % (hooks_thread_sched(h.pid),))
        w = self.start_herald(overrides=[
            "webhook_allow_private on",
            "webhook %s secret=%s" % (self.recv.url("/hook"), self.secret)])
        idle = (os.SCHED_IDLE, INHERITED_NICE)
        hh.wait_for(lambda: hooks_thread_sched(w.pid) == idle, timeout=20,
                    what="webhooks only: SCHED_IDLE: %r" % (hooks_thread_sched(w.pid),))

    def test_reload_adding_authorize_hook(self):
        """The policy's inputs (redis, authorize_hook) are restart directives, so it holds for
        the thread's whole life: a reload that adds an authorize_hook (and subscribe=hook
        rules) to a webhooks-only node is warned about, the thread stays SCHED_IDLE and decides
        no connect (503 backend_unavailable at once: nothing waits on an idle-class thread);
        the restart that applies the hook starts the thread at nice 10."""
        self.backend()
        base = hh.conf_text(dict(hh.DEFAULT_CONF)) + "\n".join([
            "webhook_allow_private on",
            "webhook %s secret=%s" % (self.recv.url("/hook"), self.secret)]) + "\n"
        h = self.start_herald(conf_raw=base, workers=2)
        idle = (os.SCHED_IDLE, INHERITED_NICE)
        hh.wait_for(lambda: hooks_thread_sched(h.pid) == idle, timeout=20,
                    what="webhooks only: SCHED_IDLE: %r" % (hooks_thread_sched(h.pid),))
        hooked = base + "\n".join([hook_line(self.recv.url("/authorize"), self.secret)] +
                                   ["channel_rule " + r for r in RULES]) + "\n"
        start = h.reload(conf_raw=hooked)
        h.wait_log(r"reload: .*authorize_hook.* changed; that takes effect only after a "
                   r"restart", start=start)
        t0 = time.monotonic()
        status, body, _ = connect(h.port, "poll", "hook:a")
        self.assertEqual((status, body["code"]), (503, "backend_unavailable"), body)
        self.assertLess(time.monotonic() - t0, 2.0, "refused at once, not after a call")
        self.assertEqual(self.questions(), [], "the backend was asked by a reloaded conf")
        self.assertEqual(hooks_thread_sched(h.pid), idle)
        h.stop()
        r = self.start_herald(conf_raw=hooked, workers=2)
        hh.wait_for(lambda: hooks_thread_sched(r.pid) == (os.SCHED_OTHER, 10), timeout=20,
                    what="restarted with the hook: nice 10: %r" % (hooks_thread_sched(r.pid),))
        status, body, _ = connect(r.port, "poll", "hook:a")
        self.assertIn(status, (200, 204), body)
        self.assertEqual([q["data"]["channels"] for q in self.questions()], [["hook:a"]])


class TestConf(hh.HeraldTestCase):
    def test_conf_errors(self):
        """subscribe=hook without authorize_hook, publish=subscriber with it, bad options: the
        file, line and directive are named, never the secret."""
        secret = ws.new_secret()
        cases = [
            ("channel_rule hook:* subscribe=hook\n",
             "channel_rule: hook:*: subscribe=hook needs authorize_hook"),
            ("authorize_hook http://x/ secret=%s\nchannel_rule a subscribe=hook "
             "publish=subscriber\n" % secret, "publish=subscriber cannot go with subscribe=hook"),
            ("authorize_hook http://x/ secret=%s timeout=5m\n" % secret,
             ":1: authorize_hook: timeout: expected a duration in 10ms..60s"),
            ("authorize_hook http://x/ secret=%s on_error=maybe\n" % secret,
             ":1: authorize_hook: on_error: expected deny or allow"),
            ("authorize_hook http://x/\n", "secret=whsec_... is required"),
            ("authorize_hook http://x/ secret=%s connect=yes\n" % secret,
             ":1: authorize_hook: connect: expected on or off"),
        ]
        for text, want in cases:
            d = self.tmpdir()
            path = os.path.join(d, "h.conf")
            with open(path, "w") as f:
                f.write(text)
            rc, out, err = hh.run_herald(["-t", "-c", path])
            self.assertNotEqual(rc, 0, text)
            self.assertIn(want, err, text)
            self.assertNotIn(secret[8:20], err)


if __name__ == "__main__":
    hh.main()
