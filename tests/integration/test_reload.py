# SPDX-License-Identifier: MIT
"""Live reload (SIGHUP) of every directive marked RELOAD in src/conf/directives.c, through the
real binary: for each, the server is reloaded to one value and a new request shows it in
force, then reloaded to another and a new request shows that one (each value chosen so the two
behave differently). Where the docs say a reload reaches connections already open (publish_key
on a WebSocket session, max_subscriptions_per_connection keeping what a connection holds), a
connection opened before the reload shows it too.

test_every_reload_directive_has_a_case reads the table of directives and fails for a RELOAD
directive with no case here: a new reloadable directive comes with its case (a @case below).
"""
import json
import shutil
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import Client, SseStream, wait_for  # noqa: E402
import h2.errors  # noqa: E402
import h2.settings  # noqa: E402
from test_http2 import H2Client  # noqa: E402

CASES = {}  # directive -> (before, after, check, extra conf)
SECRET_A = "a" * 40  # HS256 needs 32 bytes at least
SECRET_B = "b" * 40
SECRET_LONG = "l" * 64  # HS512: 64

# RELOAD directives whose effect no request can show yet, with why. Each is listed on stderr at
# every run; test_every_reload_directive_has_a_case fails for any other directive without a case.
PENDING = {}
LIFE_SECRET = "reload-test-secret-of-more-than-32-bytes"


def life_token(seconds):
    """An HS256 token from python3-jwt expiring `seconds` from now (iat a second back)."""
    import jwt  # Debian python3-jwt (scripts/deps.sh)
    now = int(time.time())
    return jwt.encode({"sub": "1", "iat": now - 1, "exp": now + seconds}, LIFE_SECRET,
                      algorithm="HS256")


D_ROW_RE = re.compile(r'\bD\("([a-z_0-9]+)"')


def case(directive, before, after, **extra):
    """Registers check(self, h, value) for directive: asserts that value is in force on h."""
    def wrap(fn):
        assert directive not in CASES, directive
        CASES[directive] = (before, after, fn, extra)
        return fn
    return wrap


def reload_flags():
    """{directive: "RELOAD" | "RESTART"} from the table in src/conf/directives.c."""
    path = os.path.join(hh.HERALD_SRC, "src", "conf", "directives.c")
    with open(path) as f:
        text = f.read()
    rows = {}
    starts = [(m.start(), m.group(1)) for m in D_ROW_RE.finditer(text)]
    for i, (pos, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        row = text[pos:end]
        flags = [f for f in ("RELOAD", "RESTART") if re.search(r"\b%s\b" % f, row)]
        if len(flags) != 1:
            raise AssertionError("directive %s: cannot tell RELOAD or RESTART from %r" %
                                 (name, row[:300]))
        rows[name] = flags[0]
    return rows


def make_cert(directory, name, cn, key=None):
    """NAME.crt (self-signed, CN=cn) and its key: a new EC key, or the given key file."""
    crt = os.path.join(directory, name + ".crt")
    args = ["openssl", "req", "-x509", "-nodes", "-out", crt, "-days", "2", "-subj", "/CN=" + cn]
    if key is None:
        key = os.path.join(directory, name + ".key")
        args += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", key]
    else:
        args += ["-key", key]
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    return crt, key


def make_ec_key(directory, name):
    """(private key PEM bytes, public key file) of a new P-256 key."""
    key, pub = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".pub")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    key], check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True, timeout=30)
    with open(key, "rb") as f:
        return f.read(), pub


def write_jwks(directory, name, kid, secret):
    """A JWKS file with one HS256 oct key."""
    import base64
    k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": k}]}, f)
    return path


def peer_cert(port, **ctx_kw):
    with Client(port, ssl_context=hh.client_tls_context(**ctx_kw)) as c:
        der = c.sock.getpeercert(binary_form=True)
        assert c.request().status == 200
        return der


def der_of(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def tls12_client(port, ciphers=None):
    """True when a TLS 1.2 handshake (with only `ciphers`) succeeds and serves /healthz."""
    ctx = hh.client_tls_context(alpn=["http/1.1"], tls_max=ssl.TLSVersion.TLSv1_2)
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with Client(port, ssl_context=ctx) as c:
            return c.request().status == 200
    except (ssl.SSLError, OSError, hh.ConnectionClosed):
        return False


def status_of(port, raw, timeout=hh.IO_TIMEOUT):
    with Client(port, spread=True) as c:
        c.send(raw)
        return c.read_response(timeout=timeout).status


def rapid_statuses(port, n):
    """n connections made at once, then a request on each: their statuses."""
    cs = [Client(port, spread=True) for _ in range(n)]
    try:
        out = []
        for c in cs:
            c.send(hh.build_request())
            out.append(c.read_response().status)
        return out
    finally:
        for c in cs:
            c.close()


class TestReload(hh.HeraldTestCase):
    """One server (one worker, a plain and a TLS listener) reloaded by every case, logging at
    debug: each reload waits for the worker's "configuration applied" (Herald.reload)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-reload-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.crt1, cls.key1 = make_cert(cls.dir, "one", "one.test")
        cls.crt1b, _ = make_cert(cls.dir, "one-b", "one-b.test", key=cls.key1)
        cls.crt2, cls.key2 = make_cert(cls.dir, "two", "two.test")
        cls.access = os.path.join(cls.dir, "access.log")
        cls.ec_a, cls.pub_a = make_ec_key(cls.dir, "ec-a")
        cls.ec_b, cls.pub_b = make_ec_key(cls.dir, "ec-b")
        cls.jwks_a = write_jwks(cls.dir, "a.jwks", "ka", SECRET_A)
        cls.jwks_b = write_jwks(cls.dir, "b.jwks", "kb", SECRET_B)
        cls.base = {"tls_certificate": cls.crt1, "tls_certificate_key": cls.key1,
                    "log_level": "debug", "shutdown_timeout": "5s"}
        cls.h = cls.start_class_herald(conf=cls.base, workers=1,
                                       listens=("127.0.0.1:0", "127.0.0.1:0 tls"))

    def reload(self, conf):
        start = self.h.reload(conf)
        warn = self.h.find_log(r"reload: .* changed; that takes effect only after a restart",
                               start)
        self.assertIsNone(warn, "a RELOAD directive asked for a restart: %s" %
                          (warn and warn.group(0)))

    # ---- process and logs ----

    @case("shutdown_timeout", "30s", "300ms")
    def check_shutdown_timeout(self, h, value):
        # Shown on a server of its own (stopping it is the only way to see it): reloaded from
        # 30s to the value, a stop with a request in progress takes that long.
        own = self.start_herald(conf={"shutdown_timeout": "30s"}, workers=1)
        if value != "30s":
            own.reload({"shutdown_timeout": value})
        c = Client(own.port)
        self.addCleanup(c.close)
        c.send(b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        time.sleep(0.1)
        if value == "30s":
            own.signal(signal.SIGTERM)
            self.assertIsNone(own.wait_exit(1.0), "exited before its 30 s shutdown_timeout")
            c.close()  # the last connection gone, it finishes
            self.assertEqual(own.wait_exit(10), 0)
        else:
            took = own.stop()
            self.assertLess(took, 3.0, "shutdown_timeout 300ms took %.1f s" % took)

    @case("log_level", "debug", "info")
    def check_log_level(self, h, value):
        # A client leaving mid-request is a debug line; a bad request then an info line, which
        # (one worker writes both, in order) shows that the debug line would be there by now.
        mark = h.mark()
        with Client(h.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHo")
            time.sleep(0.05)
        self.assertEqual(status_of(h.port, b"BAD\r\n\r\n"), 400)
        h.wait_log(r"bad request \(400\)", start=mark)
        debug = h.count_log(r" debug w0 .*peer closed mid-request", mark)
        self.assertEqual(debug, 1 if value == "debug" else 0, h.lines()[mark:])

    @case("access_log", "off", "ACCESS")
    def check_access_log(self, h, value):
        path = self.access
        before = os.path.getsize(path) if os.path.exists(path) else 0
        self.assertEqual(hh.http_get(h.port, "/healthz?reload-check").status, 200)
        if value == "off":
            time.sleep(0.3)
            after = os.path.getsize(path) if os.path.exists(path) else 0
            self.assertEqual(after, before, "access_log off still logs")
        else:
            def logged():
                with open(path, "rb") as f:
                    return b"/healthz?reload-check" in f.read()[before:]
            wait_for(lambda: os.path.exists(path) and logged(), what="the request in %s" % path)

    # ---- connection limits ----

    @case("max_connections", "1000", "3")
    def check_max_connections(self, h, value):
        statuses = rapid_statuses(h.port, 5)
        if value == "3":
            self.assertIn(503, statuses, statuses)
        else:
            self.assertEqual(statuses, [200] * 5)

    @case("accept_rate", "0", "1", accept_burst="2")
    def check_accept_rate(self, h, value):
        statuses = rapid_statuses(h.port, 8)
        if value == "0":
            self.assertEqual(statuses, [200] * 8)
        else:
            self.assertLessEqual(statuses.count(200), 3, statuses)  # the burst of 2 (+ refill)

    @case("accept_burst", "2", "8", accept_rate="2")
    def check_accept_burst(self, h, value):
        time.sleep(int(value) / 2 + 0.2)  # the bucket fills at accept_rate up to the burst
        ok = rapid_statuses(h.port, 12).count(200)
        if value == "2":
            self.assertLessEqual(ok, 3)
        else:
            self.assertGreaterEqual(ok, 7)

    # ---- HTTP ----

    @case("max_url_size", "1k", "256")
    def check_max_url_size(self, h, value):
        st = status_of(h.port, hh.build_request("GET", "/nothing/" + "u" * 500))
        self.assertEqual(st, 404 if value == "1k" else 414)

    @case("max_header_size", "4k", "1k")
    def check_max_header_size(self, h, value):
        st = status_of(h.port, hh.build_request("GET", "/healthz", {"X-Pad": "p" * 2000}))
        self.assertEqual(st, 200 if value == "4k" else 431)

    @case("max_body_size", "1k", "100")
    def check_max_body_size(self, h, value):
        st = status_of(h.port, hh.build_request("POST", "/pub/body", None, b"b" * 500))
        self.assertEqual(st, 200 if value == "1k" else 413)

    @case("header_timeout", "5s", "200ms")
    def check_header_timeout(self, h, value):
        with Client(h.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.6)
            if value == "200ms":
                self.assertEqual(c.read_response().status, 408)
            else:
                c.send(b"\r\n")
                self.assertEqual(c.read_response().status, 200)

    @case("body_timeout", "5s", "200ms")
    def check_body_timeout(self, h, value):
        with Client(h.port) as c:
            c.send(b"POST /pub/bt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
            time.sleep(0.6)
            if value == "200ms":
                self.assertEqual(c.read_response().status, 408)
            else:
                c.send(b"cd")
                self.assertEqual(c.read_response().status, 200)

    @case("keepalive_timeout", "5s", "200ms")
    def check_keepalive_timeout(self, h, value):
        with Client(h.port) as c:
            self.assertEqual(c.request().status, 200)
            time.sleep(0.6)
            self.assertEqual(c.is_open(), value == "5s")

    @case("keepalive_requests", "100", "2")
    def check_keepalive_requests(self, h, value):
        with Client(h.port) as c:
            rs = [c.request() for _ in range(2)]
            self.assertEqual([r.status for r in rs], [200, 200])
            closes = rs[1].header("Connection") == "close"
            self.assertEqual(closes, value == "2", rs[1])
            if value == "100":
                self.assertEqual(c.request().status, 200)

    # ---- HTTP/2 ----

    @case("http2", "on", "off")
    def check_http2(self, h, value):
        s = hh.connect(h.port)
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            s.settimeout(5)
            first = s.recv(9)
        finally:
            s.close()
        # on: herald's SETTINGS frame (type 4); off: an HTTP/1.1 refusal
        self.assertEqual(first[3:4] == b"\x04", value == "on", first)
        with Client(h.tls_port, ssl_context=hh.client_tls_context(alpn=["h2", "http/1.1"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "h2" if value == "on" else "http/1.1")

    @case("http2_max_streams", "100", "7")
    def check_http2_max_streams(self, h, value):
        with H2Client(h.port) as c:
            self.assertEqual(c.get("/healthz").status, 200)
            got = c.settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            self.assertEqual(got, int(value))

    @case("http2_max_queue_bytes", "4m", "64k")
    def check_http2_max_queue_bytes(self, h, value):
        with H2Client(h.port) as c:
            s = c.request("GET", "/sse/reload-h2q")
            c.stalled.add(s.sid)
            c.until(lambda: s.status == 200)
            wait_for(lambda: hh.stats(h.port)["connections"]["sse"] >= 1)
            for i in range(40):  # 160 KB: 64 KiB in the stream's window, the rest queued
                hh.publish(h.port, "reload-h2q", "%03d%s" % (i, "z" * 4000))
                c.pump(0.01)
            if value == "64k":
                c.until(lambda: s.reset is not None, what="the stalled stream reset")
            else:
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    c.pump(0.1)
                self.assertIsNone(s.reset)

    @case("http2_reset_rate", "33", "1")
    def check_http2_reset_rate(self, h, value):
        # 200 streams reset at once: within 33/s (330 at once), past 1/s (100 at once)
        with H2Client(h.port) as c:
            for _ in range(200):
                s = c.request("GET", "/sse/reload-rr")
                c.conn.reset_stream(s.sid)
            c.flush()
            if value == "1":
                c.until(lambda: c.goaway is not None, what="GOAWAY")
                self.assertEqual(c.goaway, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            else:
                self.assertEqual(c.get("/healthz").status, 200)
                self.assertIsNone(c.goaway)

    # ---- TLS ----

    @case("tls_certificate", "ONE", "ONE_B")
    def check_tls_certificate(self, h, value):
        self.assertEqual(peer_cert(h.tls_port), der_of(self.crt1 if value == "ONE" else self.crt1b))

    @case("tls_certificate_key", "ONE", "TWO")
    def check_tls_certificate_key(self, h, value):
        self.assertEqual(peer_cert(h.tls_port), der_of(self.crt1 if value == "ONE" else self.crt2))

    @case("tls_ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305")
    def check_tls_ciphers(self, h, value):
        aes = tls12_client(h.tls_port, "ECDHE-ECDSA-AES128-GCM-SHA256")
        chacha = tls12_client(h.tls_port, "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertEqual((aes, chacha), (True, False) if "AES" in value else (False, True))

    @case("tls_min_version", "1.2", "1.3")
    def check_tls_min_version(self, h, value):
        self.assertEqual(tls12_client(h.tls_port), value == "1.2")
        self.assertEqual(peer_cert(h.tls_port, tls_max=ssl.TLSVersion.TLSv1_3), der_of(self.crt1))

    # ---- publishing ----

    @case("publish_key", "off", "k-after", ws_client_publish="on")
    def check_publish_key(self, h, value):
        st, _, body = hh.request(h.port, "POST", "/pub/pk", "x")
        st_ok, _, _ = hh.request(h.port, "POST", "/pub/pk", "x",
                                 {"Authorization": "Bearer k-after"})
        if value == "off":
            self.assertEqual((st, st_ok), (200, 200), body)
            # A session opened now, without a key, publishes until the key is set by a reload.
            self.__class__.ws_before_key = hh.RawWS(h.port, "/ws")
            self.addCleanup(self.ws_before_key.close)
            self.ws_publish(self.ws_before_key, "published")
        else:
            self.assertEqual((st, st_ok), (401, 200), body)
            # The key holds for sessions already open: this one's publish is refused now.
            self.assertEqual(self.ws_publish(self.ws_before_key).get("code"), "forbidden")

    def ws_publish(self, ws, want_type=None):
        ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
            {"op": "publish", "channel": "pk", "data": "w", "ref": 1}).encode()))
        reply = ws.recv_json()
        if want_type:
            self.assertEqual(reply["type"], want_type, reply)
        return reply

    @case("admin_key", "off", "adm-key")
    def check_admin_key(self, h, value):
        st, _, body = hh.request(h.port, "GET", "/stats")
        st_key, _, _ = hh.request(h.port, "GET", "/stats", headers={"Authorization":
                                                                    "Bearer adm-key"})
        st_wrong, _, _ = hh.request(h.port, "GET", "/stats", headers={"Authorization":
                                                                      "Bearer other"})
        if value == "off":  # a local client, without a key
            self.assertEqual((st, st_key, st_wrong), (200, 200, 200), body)
        else:
            self.assertEqual((st, st_key, st_wrong), (401, 200, 403), body)

    @case("cors_origins", "*", "https://a.example")
    def check_cors_origins(self, h, value):
        _, hdrs, _ = hh.request(h.port, "GET", "/poll/co", headers={"Origin": "https://b.example"})
        _, listed, _ = hh.request(h.port, "GET", "/poll/co",
                                  headers={"Origin": "https://a.example"})
        if value == "*":
            self.assertEqual(hdrs.get("access-control-allow-origin"), "*")
            self.assertEqual(listed.get("access-control-allow-origin"), "*")
            self.assertIsNone(listed.get("access-control-allow-credentials"))
        else:
            self.assertIsNone(hdrs.get("access-control-allow-origin"))
            self.assertEqual(listed.get("access-control-allow-origin"), "https://a.example")
            self.assertEqual(listed.get("access-control-allow-credentials"), "true")

    @case("max_message_size", "1k", "100")
    def check_max_message_size(self, h, value):
        st, _, body = hh.request(h.port, "POST", "/pub/mm", "m" * 500)
        self.assertEqual(st, 200 if value == "1k" else 413, body)

    # ---- delivery ----

    @case("max_queue_bytes", "64m", "4k")
    def check_max_queue_bytes(self, h, value):
        dropped = hh.stats(h.port)["slow_subscribers_dropped"]
        slow = SseStream(h.port, "/sse/mq", rcvbuf=4096, read_head=False)
        self.addCleanup(slow.close)
        wait_for(lambda: hh.get_json(h.port, "/channels/mq")[1]["subscribers"] == 1,
                 what="the slow subscriber")
        pub = hh.Publisher(h.port)
        self.addCleanup(pub.close)
        # Up to 3.2 MB: past 4k and what the sockets hold, far under 64m.
        for _ in range(200):
            pub("mq", "q" * 16384)
            if hh.stats(h.port)["slow_subscribers_dropped"] > dropped:
                break
        want = dropped + (1 if value == "4k" else 0)
        wait_for(lambda: hh.stats(h.port)["slow_subscribers_dropped"] == want,
                 what="slow_subscribers_dropped %d" % want)
        slow.close()

    @case("presence_hold", "0", "3s", channel_rule="held:* subscribe=any presence=on")
    def check_presence_hold(self, h, value):
        # A /ws subscriber of a presence channel gets its own join: with no hold as soon as the
        # loop pass ends, with a hold when the window its join opened ends (3 s later; 1.5 s
        # apart from both, for a loaded machine).
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        t0 = time.monotonic()
        ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "subscribe", "channel": "held:x",
                                                    "presence": True, "ref": 1})))
        while True:
            m = ws.recv_json(timeout=10)
            if m.get("type") in ("join", "presence_events"):
                break
            self.assertIn(m.get("type"), ("subscribed", "presence"), m)
        waited = time.monotonic() - t0
        if value == "0":
            self.assertLess(waited, 1.5, "the join came %.1f s late without a hold" % waited)
        else:
            self.assertGreaterEqual(waited, 2.9, "the join came %.1f s into a 3 s hold" % waited)

    @case("max_subscriptions_per_connection", "2", "1")
    def check_max_subscriptions_per_connection(self, h, value):
        st = SseStream(h.port, "/sse?channel=s1&channel=s2")
        self.addCleanup(st.close)
        self.assertEqual(st.status, 200 if value == "2" else 400, st.body)
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        if value == "2":
            # Held on a /ws connection opened before the limit goes down: kept after it.
            for ch in ("s1", "s2"):
                ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "subscribe",
                                                            "channel": ch}).encode()))
                self.assertEqual(ws.recv_json()["type"], "subscribed")
            self.__class__.ws_two_subs = ws
        else:
            kept = self.ws_two_subs
            hh.publish(h.port, "s2", "still")
            m = kept.recv_json()
            self.assertEqual((m["type"], m["channel"], m["data"]), ("message", "s2", "still"))
            kept.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "subscribe",
                                                          "channel": "s3"}).encode()))
            self.assertEqual(kept.recv_json()["code"], "too_many_subscriptions")
            kept.close()

    @case("max_subscriptions", "1000", "1")
    def check_max_subscriptions(self, h, value):
        first = SseStream(h.port, "/sse/ms1")
        self.addCleanup(first.close)
        self.assertEqual(first.status, 200)
        second = SseStream(h.port, "/sse/ms2")
        self.addCleanup(second.close)
        self.assertEqual(second.status, 200 if value == "1000" else 503, second.body)
        first.close()
        second.close()
        wait_for(lambda: hh.stats(h.port)["subscriptions"] == 0, what="the streams to end")

    @case("poll_max_messages", "3", "1")
    def check_poll_max_messages(self, h, value):
        ch = "pm%d" % time.monotonic_ns()
        for i in range(3):
            hh.publish(h.port, ch, "m%d" % i)
        st, body, _ = hh.get_json(h.port, "/poll/%s?since=0-0" % ch)
        self.assertEqual(len(body["messages"]), int(value), body)

    @case("max_response_size", "1m", "64k")
    def check_max_response_size(self, h, value):
        ch = "rs%d" % time.monotonic_ns()
        for i in range(3):
            hh.publish(h.port, ch, "r" * 40000)
        st, body, _ = hh.get_json(h.port, "/poll/%s?since=0-0" % ch)
        self.assertEqual(len(body["messages"]), 3 if value == "1m" else 1)

    @case("longpoll_timeout", "1s", "2s")
    def check_longpoll_timeout(self, h, value):
        t0 = time.monotonic()
        st, body, _ = hh.get_json(h.port, "/lp/quiet-lp")
        took = time.monotonic() - t0
        self.assertEqual((st, body["messages"]), (200, []))
        want = 1.0 if value == "1s" else 2.0
        self.assertTrue(want - 0.1 <= took < want + 0.7, "long poll held %.2f s" % took)

    @case("longpoll_max_timeout", "1s", "2s")
    def check_longpoll_max_timeout(self, h, value):
        t0 = time.monotonic()
        st, body, _ = hh.get_json(h.port, "/lp/quiet-lpm?timeout=30")
        took = time.monotonic() - t0
        self.assertEqual(st, 200)
        want = 1.0 if value == "1s" else 2.0
        self.assertTrue(want - 0.1 <= took < want + 0.7, "long poll held %.2f s" % took)

    @case("sse_heartbeat", "5s", "100ms")
    def check_sse_heartbeat(self, h, value):
        st = SseStream(h.port, "/sse/hb")
        self.addCleanup(st.close)
        first = st.next_block()  # the retry: block
        self.assertIsNotNone(first.retry)
        t0 = time.monotonic()
        if value == "100ms":
            self.assertEqual(st.next_block(2).raw, b":\n")
            self.assertLess(time.monotonic() - t0, 1.0)
        else:
            st.assert_quiet(0.6)

    @case("sse_retry", "100ms", "5s")
    def check_sse_retry(self, h, value):
        st = SseStream(h.port, "/sse/rt")
        self.addCleanup(st.close)
        retry = st.next_block().retry
        lo = 100 if value == "100ms" else 5000
        self.assertTrue(lo <= retry <= 2 * lo, retry)  # the value plus up to 100% jitter

    @case("ws_ping_interval", "10s", "100ms")
    def check_ws_ping_interval(self, h, value):
        ws = hh.RawWS(h.port, "/ws/ping")
        self.addCleanup(ws.close)
        if value == "100ms":
            fin, rsv, op, payload = ws.recv_frame(1.0)
            self.assertEqual(op, hh.OP_PING)
        else:
            self.assertRaises((socket.timeout, TimeoutError, AssertionError, OSError),
                              ws.recv_frame, 0.6)

    @case("ws_idle_timeout", "10s", "300ms")
    def check_ws_idle_timeout(self, h, value):
        ws = hh.RawWS(h.port, "/ws/idle")
        self.addCleanup(ws.close)
        if value == "300ms":
            self.assertEqual(ws.expect_close(2.0), (1001, "idle timeout"))
        else:
            time.sleep(0.8)
            self.assertTrue(ws.client.is_open())

    @case("ws_origins", "*", "https://a.example")
    def check_ws_origins(self, h, value):
        raw = hh.ws_handshake_request("/ws/o", extra={"Origin": "https://b.example"})
        self.assertEqual(status_of(h.port, raw), 101 if value == "*" else 403)
        raw = hh.ws_handshake_request("/ws/o", extra={"Origin": "https://a.example"})
        self.assertEqual(status_of(h.port, raw), 101)

    @case("ws_client_publish", "off", "on")
    def check_ws_client_publish(self, h, value):
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
            {"op": "publish", "channel": "cp", "data": "w", "ref": 1}).encode()))
        reply = ws.recv_json()
        if value == "on":
            self.assertEqual(reply["type"], "published", reply)
        else:
            self.assertEqual(reply.get("code"), "publish_disabled", reply)

    @case("client_js", "on", "off")
    def check_client_js(self, h, value):
        status = hh.request(h.port, "GET", "/herald.js")[0]
        self.assertEqual(status, 200 if value == "on" else 404)

    # ---- auth (tokens minted with python3-jwt; a short poll shows whether one is taken) ----

    def token(self, key, alg="HS256", **claims):
        import jwt
        body = {"sub": "u1", "exp": int(time.time()) + 300}
        body.update(claims)
        headers = {"kid": claims.pop("_kid")} if "_kid" in claims else None
        body.pop("_kid", None)
        return jwt.encode(body, key, algorithm=alg, headers=headers)

    def poll_with(self, h, token=None):
        path = "/poll/authz" + ("?token=" + token if token else "")
        return hh.request(h.port, "GET", path)[0]

    @case("auth_jwt_secret", "SECRET_A", "SECRET_B", channel_rule="* subscribe=auth")
    def check_auth_jwt_secret(self, h, value):
        a, b = self.poll_with(h, self.token(SECRET_A)), self.poll_with(h, self.token(SECRET_B))
        self.assertEqual((a, b), (200, 401) if value == "SECRET_A" else (401, 200))
        self.assertEqual(self.poll_with(h), 401)

    @case("auth_jwt_alg", "HS256", "HS512", auth_jwt_secret=SECRET_LONG,
          channel_rule="* subscribe=auth")
    def check_auth_jwt_alg(self, h, value):
        hs256 = self.poll_with(h, self.token(SECRET_LONG, "HS256"))
        hs512 = self.poll_with(h, self.token(SECRET_LONG, "HS512"))
        self.assertEqual((hs256, hs512), (200, 401) if value == "HS256" else (401, 200))

    @case("auth_jwt_public_key", "PUB_A", "PUB_B", channel_rule="* subscribe=auth")
    def check_auth_jwt_public_key(self, h, value):
        a = self.poll_with(h, self.token(self.ec_a, "ES256"))
        b = self.poll_with(h, self.token(self.ec_b, "ES256"))
        self.assertEqual((a, b), (200, 401) if value == "PUB_A" else (401, 200))

    @case("auth_jwks", "JWKS_A", "JWKS_B", channel_rule="* subscribe=auth")
    def check_auth_jwks(self, h, value):
        a = self.poll_with(h, self.token(SECRET_A, _kid="ka"))
        b = self.poll_with(h, self.token(SECRET_B, _kid="kb"))
        self.assertEqual((a, b), (200, 401) if value == "JWKS_A" else (401, 200))

    @case("auth_jwt_issuer", "iss-a", "iss-b", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_jwt_issuer(self, h, value):
        a = self.poll_with(h, self.token(SECRET_A, iss="iss-a"))
        b = self.poll_with(h, self.token(SECRET_A, iss="iss-b"))
        self.assertEqual((a, b), (200, 401) if value == "iss-a" else (401, 200))

    @case("auth_jwt_audience", "aud-a", "aud-b", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_jwt_audience(self, h, value):
        a = self.poll_with(h, self.token(SECRET_A, aud="aud-a"))
        b = self.poll_with(h, self.token(SECRET_A, aud=["x", "aud-b"]))
        self.assertEqual((a, b), (200, 401) if value == "aud-a" else (401, 200))

    @case("auth_clock_skew", "5m", "0", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_clock_skew(self, h, value):
        expired = self.token(SECRET_A, exp=int(time.time()) - 60)  # a minute ago
        self.assertEqual(self.poll_with(h, expired), 200 if value == "5m" else 401)

    @case("auth_timeout", "10s", "300ms", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_timeout(self, h, value):
        ws = hh.RawWS(h.port, "/ws")  # no token, and no auth message
        self.addCleanup(ws.close)
        if value == "300ms":
            code, reason = ws.expect_close(3.0)
            self.assertEqual(code, 4401, reason)
        else:
            time.sleep(0.8)
            self.assertTrue(ws.client.is_open())

    def cache_hits_of(self, h, token):
        """/stats auth_cache hits that two connects with token add."""
        before = hh.stats(h.port)["auth_cache"]["hits"]
        self.assertEqual((self.poll_with(h, token), self.poll_with(h, token)), (200, 200))
        return hh.stats(h.port)["auth_cache"]["hits"] - before

    @case("auth_cache_entries", "10000", "0", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_cache_entries(self, h, value):
        tok = self.token(SECRET_A, jti="entries-" + value)
        self.assertEqual(self.cache_hits_of(h, tok), 1 if value == "10000" else 0)

    @case("auth_cache_memory", "8m", "64k", auth_jwt_secret=SECRET_A,
          channel_rule="* subscribe=auth")
    def check_auth_cache_memory(self, h, value):
        # An identity of about 11 KiB (2 x 256 grants, 16 bytes of pattern and its name each,
        # 0.5 KiB of info; identity.c keeps it in one block) in a token of about 6 KiB: kept
        # in 8m, over an eighth of 64k (8 KiB) so never kept there.
        names = ["g%d" % i for i in range(256)]
        tok = self.token(SECRET_A, jti="memory-" + value, info={"pad": "y" * 500},
                         channels={"subscribe": names, "publish": names})
        self.assertEqual(self.cache_hits_of(h, tok), 1 if value == "8m" else 0)

    @case("channel_rule", "* subscribe=any", "* subscribe=auth", auth_jwt_secret=SECRET_A)
    def check_channel_rule(self, h, value):
        anonymous = self.poll_with(h)
        with_token = self.poll_with(h, self.token(SECRET_A))
        self.assertEqual((anonymous, with_token), (200, 200) if "any" in value else (401, 200))

    # ---- client addresses and per-client limits ----

    def held_from(self, h, source_ip, n):
        """n connections from source_ip, each with one request answered; their statuses. The
        connections stay open until the test ends (the per-address count sees them)."""
        out = []
        for _ in range(n):
            c = Client(h.port, source_ip=source_ip)
            self.addCleanup(c.close)
            c.send(hh.build_request())
            out.append(c.read_response().status)
        return out

    @case("trusted_proxies", "off", "127.0.0.0/8", max_connections_per_ip="1")
    def check_trusted_proxies(self, h, value):
        # A trusted proxy carries many clients: it is not limited per address.
        src = hh.next_source_ip()
        want = [200, 503] if value == "off" else [200, 200]
        self.assertEqual(self.held_from(h, src, 2), want)

    @case("max_connections_per_ip", "0", "1")
    def check_max_connections_per_ip(self, h, value):
        src = hh.next_source_ip()
        want = [200, 200, 200] if value == "0" else [200, 503, 503]
        self.assertEqual(self.held_from(h, src, 3), want)

    @case("connect_rate_per_ip", "0", "1", connect_burst_per_ip="2")
    def check_connect_rate_per_ip(self, h, value):
        src = hh.next_source_ip()  # a fresh address: its bucket starts full
        statuses = [hh.http_get(h.port, "/healthz", source_ip=src).status for _ in range(6)]
        if value == "0":
            self.assertEqual(statuses, [200] * 6)
        else:
            self.assertLessEqual(statuses.count(200), 3, statuses)  # the burst of 2 (+ refill)
            self.assertIn(429, statuses)

    @case("connect_burst_per_ip", "2", "8", connect_rate_per_ip="1")
    def check_connect_burst_per_ip(self, h, value):
        src = hh.next_source_ip()
        ok = [hh.http_get(h.port, "/healthz", source_ip=src).status
              for _ in range(10)].count(200)
        if value == "2":
            self.assertLessEqual(ok, 3)
        else:
            self.assertGreaterEqual(ok, 8)

    @case("client_publish_rate", "0", "2", ws_client_publish="on")
    def check_client_publish_rate(self, h, value):
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        for i in range(4):
            ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
                {"op": "publish", "channel": "cpr", "data": "w", "ref": i}).encode()))
        replies = [ws.recv_json() for _ in range(4)]
        published = [r["ref"] for r in replies if r["type"] == "published"]
        self.assertEqual(published, [0, 1, 2, 3] if value == "0" else [0, 1], replies)

    @case("ephemeral_rate", "0", "2", ws_client_publish="on")
    def check_ephemeral_rate(self, h, value):
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        for i in range(4):
            ws.send(hh.ws_frame(hh.OP_TEXT, json.dumps(
                {"op": "publish", "channel": "eph", "data": "typing", "ephemeral": True,
                 "ref": i}).encode()))
        replies = [ws.recv_json() for _ in range(4)]
        published = [r["ref"] for r in replies if r["type"] == "published"]
        self.assertEqual(published, [0, 1, 2, 3] if value == "0" else [0, 1], replies)
        self.assertTrue(all(r.get("ephemeral") or r.get("code") == "rate_limited"
                            for r in replies), replies)

    # ---- staying authorized (docs/auth.md) ----

    @case("auth_refresh_before", "0", "10s", auth_jwt_secret=LIFE_SECRET, auth_clock_skew="0",
          channel_rule="life:* subscribe=auth")
    def check_auth_refresh_before(self, h, value):
        # A token living 5 s: with 10s its notice is due at once, with 0 there is none.
        s = SseStream(h.port, "/sse/life:r?token=" + life_token(5))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        if value == "0":
            s.assert_quiet(0.5)
        else:
            self.assertEqual(s.next_event(hh.IO_TIMEOUT).event, "herald-refresh")

    @case("auth_expire_connections", "on", "off", auth_jwt_secret=LIFE_SECRET,
          auth_clock_skew="0", auth_refresh_before="0", channel_rule="life:* subscribe=auth")
    def check_auth_expire_connections(self, h, value):
        s = SseStream(h.port, "/sse/life:e?token=" + life_token(2))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200, s.body)
        if value == "on":
            self.assertEqual(s.next_event(hh.IO_TIMEOUT).event, "herald-expired")
            self.assertIsNone(s.next_block(hh.IO_TIMEOUT))
        else:
            time.sleep(2.5)
            mid = hh.publish(h.port, "life:e", "still")
            self.assertEqual(s.next_event(hh.IO_TIMEOUT).id, mid)

    # ---- single-use tickets (docs/auth.md) ----

    def mint_ticket(self, h, body):
        """POST /auth/ticket from this host (no publish_key nor admin_key: a local client may)."""
        st, _, b = hh.request(h.port, "POST", "/auth/ticket", json.dumps(body))
        return st, json.loads(b)

    @case("auth_ticket_ttl", "30s", "2s", channel_rule="* subscribe=auth")
    def check_auth_ticket_ttl(self, h, value):
        st, doc = self.mint_ticket(h, {"sub": "1"})
        self.assertEqual((st, doc.get("expires_in")), (201, 30 if value == "30s" else 2), doc)
        self.assertEqual(hh.request(h.port, "GET", "/poll/t?ticket=" + doc["ticket"])[0], 200)

    @case("auth_ticket_max_ttl", "5m", "10s", channel_rule="* subscribe=auth")
    def check_auth_ticket_max_ttl(self, h, value):
        st, doc = self.mint_ticket(h, {"sub": "1", "ttl": 60})
        if value == "5m":
            self.assertEqual(st, 201, doc)
            self.assertEqual(hh.request(h.port, "GET", "/poll/t?ticket=" + doc["ticket"])[0], 200)
        else:
            self.assertEqual(st, 400, doc)
            self.assertIn("auth_ticket_max_ttl (10 s)", doc["error"])

    @case("auth_max_tickets", "1000", "2", channel_rule="* subscribe=auth")
    def check_auth_max_tickets(self, h, value):
        got = [self.mint_ticket(h, {"sub": "1"}) for _ in range(3)]
        want = [201, 201, 201] if value == "1000" else [201, 201, 503]
        self.assertEqual([st for st, _ in got], want, got)
        for st, doc in got:  # spent, so that the store is empty again
            if st == 201:
                self.assertEqual(hh.request(h.port, "GET", "/poll/t?ticket=" + doc["ticket"])[0],
                                 200)

    # ---- revocation (docs/auth.md, "Revocation"): read at each POST /admin/revoke ----

    def revoke(self, h, body):
        st, _, data = hh.request(h.port, "POST", "/admin/revoke", json.dumps(body),
                                 headers={"Content-Type": "application/json"})
        return st, json.loads(data)

    @case("revocation_ttl", "1h", "10s")
    def check_revocation_ttl(self, h, value):
        st, body = self.revoke(h, {"sub": "reload-ttl-" + value})
        self.assertEqual(st, 200, body)
        self.assertIn(body["expires_in"], (3600, 3601) if value == "1h" else (10, 11), body)

    @case("revocation_max_ttl", "720h", "1h")
    def check_revocation_max_ttl(self, h, value):
        st, body = self.revoke(h, {"sub": "reload-max-" + value, "expires_in": 7200})
        if value == "1h":
            self.assertEqual(st, 400, body)
            self.assertIn("revocation_max_ttl", body["error"])
        else:
            self.assertEqual(st, 200, body)

    @case("max_revocations", "100000", "1")
    def check_max_revocations(self, h, value):
        # A new sub: taken under the default, refused once the cap is 1 (earlier cases left
        # revocations in the set).
        st, body = self.revoke(h, {"sub": "reload-cap-%s-%f" % (value, time.time()),
                                   "expires_in": 60})
        if value == "1":
            self.assertEqual(st, 507, body)
            self.assertIn("max_revocations", body["error"])
        else:
            self.assertEqual(st, 200, body)

    # ---- the table ----

    def test_every_reload_directive_has_a_case(self):
        flags = reload_flags()
        rc, out, err = hh.run_herald(["--reference"])
        self.assertEqual(rc, 0, err)
        listed = {l.split()[0] for l in out.splitlines() if l and not l.startswith("#")}
        self.assertEqual(set(flags), listed, "directives.c rows vs herald --reference")
        reloadable = sorted(d for d, f in flags.items() if f == "RELOAD")
        for d, why in sorted(PENDING.items()):
            sys.stderr.write("note: reload of %s not tested: %s\n" % (d, why))
        missing = [d for d in reloadable if d not in CASES and d not in PENDING]
        self.assertEqual(missing, [], "RELOAD directives without a reload case in "
                         "tests/integration/test_reload.py (add a @case): %r" % missing)
        stale = sorted(d for d in list(CASES) + list(PENDING) if flags.get(d) != "RELOAD")
        self.assertEqual(stale, [], "cases for directives that are not RELOAD")
        both = sorted(set(CASES) & set(PENDING))
        self.assertEqual(both, [], "directives with a case still listed as PENDING")


# Symbolic values: files known only once setUpClass made them.
_FILES = {"ACCESS": lambda c: c.access, "ONE": lambda c: c.crt1, "ONE_B": lambda c: c.crt1b,
          "TWO": lambda c: c.crt2, "SECRET_A": lambda c: SECRET_A, "SECRET_B": lambda c: SECRET_B,
          "PUB_A": lambda c: c.pub_a, "PUB_B": lambda c: c.pub_b, "JWKS_A": lambda c: c.jwks_a,
          "JWKS_B": lambda c: c.jwks_b}
_KEYS = {"ONE": lambda c: c.key1, "ONE_B": lambda c: c.key1, "TWO": lambda c: c.key2}


def _make_test(directive):
    def test(self):
        before, after, check, extra = CASES[directive]

        def resolve(value):
            return _FILES[value](self) if value in _FILES else value

        def conf_for(value):
            conf = dict(self.base)
            conf.update(extra)
            conf[directive] = resolve(value)
            if directive in ("tls_certificate", "tls_certificate_key"):
                conf["tls_certificate"] = _FILES[value](self)
                conf["tls_certificate_key"] = _KEYS[value](self)
            return conf
        # Each reload writes the whole file (the base, the case's extra lines, the directive):
        # the next case's first reload takes back whatever this one changed, even if it failed.
        for value in (before, after):
            self.reload(conf_for(value))
            check(self, self.h, value)
    test.__name__ = "test_reload_" + directive
    test.__doc__ = "%s: %s, then %s, each in force on new requests after SIGHUP" % (
        directive, CASES[directive][0], CASES[directive][1])
    return test


for _d in CASES:
    setattr(TestReload, "test_reload_" + _d, _make_test(_d))

if __name__ == "__main__":
    hh.main()
