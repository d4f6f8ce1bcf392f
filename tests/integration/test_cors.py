# SPDX-License-Identifier: MIT
"""CORS under cors_origins (docs/configuration.md#cors_origins), with curl for every case and
headless Debian chromium for the real thing.

curl: the default "*" (any origin, never credentials, no Vary), a list of origins (a listed one
echoed with credentials, others get nothing, Vary: Origin always), "*" with names (both), off
(no header at all, preflight 405), preflights (204 with methods, headers, max-age and no body;
403 for another origin), error answers carrying the headers, a reload changing the list live,
and the paths that never carry CORS (admin endpoints, /healthz, WebSocket handshakes).

chromium: a page served by this test on another origin (another port of 127.0.0.1) opens an
EventSource with credentials and publishes with fetch() and an Authorization header (so the
browser sends a preflight first). With the page's origin listed both work and the event
arrives; with it not listed both fail, and nothing is published.
"""
import json
import os
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import request  # noqa: E402
from herald_harness import CHROMIUM, Browser, PageServer  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser", "cors.html")
APP = "https://app.example"
OTHER = "https://other.example"
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials",
                "access-control-allow-methods", "access-control-allow-headers",
                "access-control-max-age", "access-control-expose-headers", "vary")


def curl(*args, timeout=15):
    """Runs curl -i; returns (status, {lower-case header: value}, body bytes)."""
    argv = ["curl", "-sS", "-i", "--max-time", str(timeout)]
    p = subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 5)
    if p.returncode not in (0, 28):  # 28: a stream cut by --max-time
        raise AssertionError("curl %r failed (%d): %s" % (args, p.returncode, p.stderr))
    return parse_response(p.stdout)


def curl_stream_head(*args, timeout=15):
    """curl -i on a stream that does not end (SSE): what curl prints up to the end of the
    response head, then curl is stopped (no wait for a --max-time to cut the stream). Returns
    (status, {lower-case header: value}, the body bytes printed with the head)."""
    argv = ["curl", "-sS", "-i", "-N", "--max-time", str(timeout)] + list(args)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out = b""
    try:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], deadline - time.monotonic())
            if not ready:
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break  # curl exited
            out += chunk
    finally:
        p.kill()
        _, err = p.communicate()
    if b"\r\n\r\n" not in out:
        raise AssertionError("curl %r: no response head within %d s: %r %s" %
                             (args, timeout, out[:200], err[-500:]))
    return parse_response(out)


def parse_response(raw):
    """(status, {lower-case header: value}, body) of what curl -i printed; a header twice
    fails."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in hdrs:
            raise AssertionError("header %s twice in %r" % (name, head))
        hdrs[name] = value.strip()
    return status, hdrs, body


def cors_of(hdrs):
    return {k: v for k, v in hdrs.items() if k in CORS_HEADERS}


def preflight(port, path, origin, method="POST", req_headers="authorization,content-type"):
    args = ["-X", "OPTIONS", "-H", "Origin: " + origin,
            "-H", "Access-Control-Request-Method: " + method]
    if req_headers:
        args += ["-H", "Access-Control-Request-Headers: " + req_headers]
    return curl(*args, "http://127.0.0.1:%d%s" % (port, path))


class CorsCase(hh.HeraldTestCase):
    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path, origin=None, *extra):
        args = (["-H", "Origin: " + origin] if origin else []) + list(extra)
        return curl(*args, self.url(path))

    def sse(self, path, origin):
        return curl_stream_head("-H", "Origin: " + origin, self.url(path))

    def assertStar(self, hdrs):
        self.assertEqual(cors_of(hdrs), {
            "access-control-allow-origin": "*",
            "access-control-expose-headers": "Retry-After, WWW-Authenticate"})

    def assertEcho(self, hdrs, origin):
        self.assertEqual(cors_of(hdrs), {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "Retry-After, WWW-Authenticate",
            "vary": "Origin"})

    def assertPreflightOk(self, status, hdrs, body, origin, methods, credentials):
        self.assertEqual(status, 204, body)
        self.assertEqual(body, b"")
        self.assertNotIn("content-length", hdrs)
        self.assertEqual(hdrs["access-control-allow-origin"], origin)
        self.assertEqual(hdrs.get("access-control-allow-credentials"),
                         "true" if credentials else None)
        self.assertEqual(hdrs["access-control-allow-methods"], methods)
        allowed = [h.strip().lower() for h in hdrs["access-control-allow-headers"].split(",")]
        for h in ("authorization", "content-type", "idempotency-key", "last-event-id"):
            self.assertIn(h, allowed)
        self.assertEqual(hdrs["access-control-max-age"], "600")


class TestDefaultAnyOrigin(CorsCase):
    """cors_origins * (the default): any page reads, none with credentials."""

    def setUp(self):
        self.h = self.start_herald(conf={"publish_key": "k"})
        self.port = self.h.port

    def test_reads_and_publish(self):
        hh.publish(self.port, "d", "x", headers={"Authorization": "Bearer k"})
        for origin in (APP, OTHER, None):
            with self.subTest(origin=origin):
                for path in ("/poll/d", "/lp/d?since=0-0&timeout=1"):
                    status, hdrs, body = self.get(path, origin)
                    self.assertIn(status, (200, 400), body)
                    self.assertStar(hdrs)
                status, hdrs, _ = self.get("/poll/d", origin, "-I")  # HEAD
                self.assertEqual(status, 200)
                self.assertStar(hdrs)
                if origin:
                    status, hdrs, _ = self.sse("/sse/d", origin)
                    self.assertEqual(status, 200)
                    self.assertStar(hdrs)
                    status, hdrs, _ = self.sse("/sse?channel=d&channel=e", origin)
                    self.assertStar(hdrs)
        status, hdrs, body = curl("-H", "Origin: " + APP, "-H", "Authorization: Bearer k",
                                  "--data-binary", "y", self.url("/pub/d"))
        self.assertEqual(status, 200, body)
        self.assertStar(hdrs)
        # An error answer carries them too, so the page can read why.
        status, hdrs, body = curl("-H", "Origin: " + APP, "--data-binary", "y",
                                  self.url("/pub/d"))
        self.assertEqual(status, 401, body)
        self.assertStar(hdrs)
        status, hdrs, _ = self.get("/poll/bad%20name", APP)
        self.assertEqual(status, 400)
        self.assertStar(hdrs)

    def test_preflight(self):
        status, hdrs, body = preflight(self.port, "/pub/d", OTHER)
        self.assertPreflightOk(status, hdrs, body, "*", "POST", credentials=False)
        self.assertNotIn("vary", hdrs)
        status, hdrs, body = preflight(self.port, "/pub", OTHER)
        self.assertPreflightOk(status, hdrs, body, "*", "POST", credentials=False)
        for path in ("/sse/d", "/sse", "/poll/d", "/lp/d"):
            status, hdrs, body = preflight(self.port, path, OTHER, "GET", "last-event-id")
            self.assertPreflightOk(status, hdrs, body, "*", "GET, HEAD", credentials=False)
        # An OPTIONS that is no preflight is routed as before (405 with Allow).
        status, hdrs, _ = curl("-X", "OPTIONS", self.url("/pub/d"))
        self.assertEqual(status, 405)
        self.assertEqual(hdrs["allow"], "POST")
        # The connection goes on after a preflight (keep-alive, no body read as a request).
        with hh.Client(self.port) as c:
            for _ in range(3):
                r = c.request("OPTIONS", "/pub/d", headers={
                    "Origin": APP, "Access-Control-Request-Method": "POST"})
                self.assertStatus(r, 204)
            self.assertStatus(c.request("GET", "/poll/d"), 200)

    def test_no_cors_elsewhere(self):
        for path in ("/healthz", "/stats", "/metrics", "/channels/d", "/nothing"):
            with self.subTest(path=path):
                _, hdrs, _ = self.get(path, APP)
                self.assertEqual(cors_of(hdrs), {})
                status, hdrs, _ = preflight(self.port, path, APP, "GET")
                self.assertEqual(cors_of(hdrs), {})
                self.assertIn(status, (403, 404, 405))
        r = hh.RawWS(self.port, "/ws/d", extra={"Origin": APP})
        try:
            self.assertEqual(r.response.status, 101)
            self.assertIsNone(r.response.header("Access-Control-Allow-Origin"))
        finally:
            r.close()


class TestListedOrigins(CorsCase):
    """cors_origins APP: that page reads with credentials; others get nothing."""

    def setUp(self):
        self.h = self.start_herald(conf={"cors_origins": APP + " http://127.0.0.1:1"})
        self.port = self.h.port

    def test_listed_and_not(self):
        for path in ("/poll/l", "/sse/l"):
            with self.subTest(path=path):
                fetch = self.sse if path.startswith("/sse") else self.get
                status, hdrs, _ = fetch(path, APP)
                self.assertEqual(status, 200)
                self.assertEcho(hdrs, APP)
                status, hdrs, _ = fetch(path, OTHER)
                self.assertEqual(status, 200)  # served: the browser keeps it from the page
                self.assertEqual(cors_of(hdrs), {"vary": "Origin"})
                # Near misses are other origins.
                for near in (APP + "/", APP + ":443", "https://APP.example", "http://app.example",
                             APP + ".evil", "null"):
                    _, hdrs, _ = fetch(path, near)
                    self.assertEqual(cors_of(hdrs), {"vary": "Origin"}, near)
        # No Origin: still Vary (a cache must not hand this answer to a page).
        _, hdrs, _ = self.get("/poll/l")
        self.assertEqual(cors_of(hdrs), {"vary": "Origin"})

    def test_preflight(self):
        status, hdrs, body = preflight(self.port, "/pub/l", APP)
        self.assertPreflightOk(status, hdrs, body, APP, "POST", credentials=True)
        self.assertEqual(hdrs["vary"], "Origin")
        status, hdrs, body = preflight(self.port, "/pub/l", OTHER)
        self.assertEqual(status, 403, body)
        self.assertEqual(json.loads(body)["error"], "origin not allowed (cors_origins)")
        self.assertEqual(cors_of(hdrs), {"vary": "Origin"})
        self.assertFalse(hh.get_json(self.port, "/channels/l")[0] == 200)

    def test_reload(self):
        _, hdrs, _ = self.get("/poll/r", OTHER)
        self.assertNotIn("access-control-allow-origin", hdrs)
        self.h.reload(conf={"cors_origins": "* " + OTHER})
        _, hdrs, _ = self.get("/poll/r", OTHER)
        self.assertEcho(hdrs, OTHER)
        _, hdrs, _ = self.get("/poll/r", APP)
        self.assertEqual(cors_of(hdrs)["access-control-allow-origin"], "*")
        self.assertNotIn("access-control-allow-credentials", hdrs)
        self.assertEqual(hdrs["vary"], "Origin")
        status, hdrs, body = preflight(self.port, "/pub/r", APP)
        self.assertPreflightOk(status, hdrs, body, "*", "POST", credentials=False)
        self.h.reload(conf={"cors_origins": "off"})
        for origin in (APP, OTHER):
            _, hdrs, _ = self.get("/poll/r", origin)
            self.assertEqual(cors_of(hdrs), {})
            _, hdrs, _ = self.sse("/sse/r", origin)
            self.assertEqual(cors_of(hdrs), {})
            status, hdrs, _ = preflight(self.port, "/pub/r", origin)
            self.assertEqual(status, 405)
            self.assertEqual(cors_of(hdrs), {})


# ---- a real browser ---------------------------------------------------------------------------

class TestBrowserCors(hh.HeraldTestCase):
    KEY = "page-key-123"

    def setUp(self):
        hh.require_executable(CHROMIUM, "chromium")
        self.pages = PageServer(PAGE)
        self.addCleanup(self.pages.close)

    def run_page(self, cors_origins, channel):
        self.access_log = os.path.join(self.tmpdir(), "access.log")
        h = self.start_herald(conf={"cors_origins": cors_origins, "publish_key": self.KEY,
                                    "access_log": self.access_log})
        b = Browser(self.pages.url({"herald": h.port, "channel": channel, "key": self.KEY}))
        self.addCleanup(b.close)
        try:
            _, result = self.pages.next(("result",), timeout=45)
        except AssertionError as e:
            raise AssertionError("%s; chromium said:\n%s" % (e, b.output()))
        return h, result, b

    def test_listed_origin_publishes_and_reads_with_credentials(self):
        h, got, b = self.run_page("https://unrelated.example " + self.pages.origin, "cors-ok")
        self.assertEqual(got["sse"], "open", (got, b.output()))
        self.assertEqual(got["publish"].get("status"), 200, (got, b.output()))
        published = json.loads(got["publish"]["body"])
        self.assertEqual(published["channel"], "cors-ok")
        self.assertEqual(got["event"], {"id": published["id"], "data": "from the page"})
        status, _, data = request(h.port, "GET", "/channels/cors-ok")
        self.assertEqual((status, json.loads(data)["history"]), (200, 1))
        # The browser did ask first: a preflight answered 204, then the POST.
        log = self.logged(h)
        self.assertRegex(log, r'"OPTIONS /pub/cors-ok HTTP/1.1" 204 ')
        self.assertRegex(log, r'"POST /pub/cors-ok HTTP/1.1" 200 ')

    def logged(self, h):
        h.stop()
        with open(self.access_log) as f:
            return f.read()

    def test_unlisted_origin_fails(self):
        h, got, b = self.run_page("https://unrelated.example", "cors-no")
        self.assertEqual(got["sse"], "error", (got, b.output()))
        self.assertIn("error", got["publish"], (got, b.output()))  # fetch() rejected
        self.assertIsNone(got["event"])
        # The preflight was refused, so the POST itself was never sent: nothing published.
        status, _, _ = request(h.port, "GET", "/channels/cors-no")
        self.assertEqual(status, 404)
        log = self.logged(h)
        self.assertRegex(log, r'"OPTIONS /pub/cors-no HTTP/1.1" 403 ')
        self.assertNotIn("POST /pub/cors-no", log)

    def test_any_origin_refuses_credentials(self):
        """"*" lets pages read, but not with credentials: the EventSource withCredentials
        fails; the fetch (no credentials mode) works."""
        h, got, b = self.run_page("*", "cors-star")
        self.assertEqual(got["sse"], "error", (got, b.output()))
        self.assertEqual(got["publish"].get("status"), 200, (got, b.output()))


if __name__ == "__main__":
    hh.main()
