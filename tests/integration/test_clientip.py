# SPDX-License-Identifier: MIT
"""Client addresses: PROXY protocol v1/v2 from a real HAProxy, X-Forwarded-For from trusted
proxies only, and the per-client limits (connections and connect rate per address, client
publishes per WebSocket), through the real binary.

HAProxy (Debian's haproxy, installed by scripts/deps.sh test) runs in the foreground (-db) with a
configuration written to a temp dir: TCP frontends on 127.0.0.1 that forward to herald's
proxy_protocol listeners with send-proxy (v1) and send-proxy-v2. Clients bind their sockets to
127.0.0.2, 127.0.0.3, ... before connecting, so HAProxy sees, and its PROXY headers name,
distinct client addresses; herald only ever sees HAProxy's 127.0.0.1 on the socket.
"""
import json
import os
import re
import socket
import struct
import subprocess
import time
import urllib.request

import herald_harness as hh

HAPROXY = "/usr/sbin/haproxy"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src, dst="127.0.0.1", sport=40000, dport=80):
    """A PROXY v2 header for TCP over IPv4 naming src."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return V2_SIG + b"\x21\x11" + struct.pack(">H", len(body)) + body


class HAProxy:
    """haproxy -db with one frontend per (name, herald port, server option); killed by PID.
    Each frontend listens on a port held by a hh.PortReservation until stop() (haproxy binds
    with SO_REUSEADDR and SO_REUSEPORT, as the reservation does), so no other test can be
    handed the number before haproxy listens there."""

    def __init__(self, tmpdir, routes):
        self.ports = {}
        self.reserved = []
        lines = ["global", "    maxconn 4000", "defaults", "    mode tcp",
                 "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s"]
        for name, target, option in routes:
            r = hh.PortReservation()
            self.reserved.append(r)
            port = r.port
            self.ports[name] = port
            lines += ["frontend fe_%s" % name, "    bind 127.0.0.1:%d" % port,
                      "    default_backend be_%s" % name,
                      "backend be_%s" % name, "    server herald 127.0.0.1:%d %s" % (target, option)]
        self.cfg = os.path.join(tmpdir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(tmpdir, "haproxy.log"), "w")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for port in self.ports.values():
            hh.wait_for(lambda: self._listening(port), timeout=10, what="haproxy on %d" % port)

    def _listening(self, port):
        if self.proc.poll() is not None:
            with open(self.cfg) as f:
                raise AssertionError("haproxy exited with %s:\n%s" % (self.proc.returncode,
                                                                     f.read()))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        for r in self.reserved:
            r.close()


def listen_ports(h):
    """herald's bound ports in listen order."""
    return [p for p, _ in h.ports]


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def metric(port, name, labels=""):
    text = metrics(port)
    m = re.search(r"^%s%s (\d+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    if not m:
        raise AssertionError("no %s%s in /metrics:\n%s" % (name, labels, text))
    return int(m.group(1))


def access_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def get(port, source_ip, path="/healthz", headers=None, keep=False, tls=False):
    """One request from source_ip; returns (Client, Response) when keep, else the Response."""
    c = hh.Client(port, source_ip=source_ip, tls=tls)
    try:
        resp = c.request("GET", path, headers=headers)
    except BaseException:
        c.close()
        raise
    if keep:
        return c, resp
    c.close()
    return resp


class ProxyProtocolTest(hh.HeraldTestCase):
    def setUp(self):
        hh.require_executable(HAPROXY, "haproxy (scripts/deps.sh test)")
        self.dir = self.tmpdir()
        self.access = os.path.join(self.dir, "access.log")

    def start(self, conf=None, listens=("127.0.0.1:0 proxy_protocol", "127.0.0.1:0"), **kw):
        c = {"access_log": self.access}
        c.update(conf or {})
        h = self.start_herald(conf=c, listens=listens, **kw)
        return h

    def haproxy(self, routes):
        hp = HAProxy(self.dir, routes)
        self.addCleanup(hp.stop)
        return hp

    def wait_access(self, pattern, n=1):
        hh.wait_for(lambda: sum(1 for line in access_lines(self.access)
                                if re.search(pattern, line)) >= n,
                    what="%d access log line(s) matching %r:\n%s" % (
                        n, pattern, "\n".join(access_lines(self.access))))

    def test_haproxy_v1_and_v2_name_the_client(self):
        """Through HAProxy send-proxy (v1) and send-proxy-v2, herald sees and logs the real client
        addresses, not HAProxy's."""
        h = self.start()
        pp, plain = listen_ports(h)
        hp = self.haproxy([("v1", pp, "send-proxy"), ("v2", pp, "send-proxy-v2")])
        r = get(hp.ports["v1"], "127.0.0.2", "/healthz?via=v1")
        self.assertStatus(r, 200)
        r = get(hp.ports["v2"], "127.0.0.3", "/healthz?via=v2")
        self.assertStatus(r, 200)
        self.wait_access(r'^127\.0\.0\.2:\d+ c#\d+ "GET /healthz\?via=v1 ')
        self.wait_access(r'^127\.0\.0\.3:\d+ c#\d+ "GET /healthz\?via=v2 ')
        # herald's socket peer was HAProxy's 127.0.0.1 every time: no line names it
        for line in access_lines(self.access):
            self.assertFalse(line.startswith("127.0.0.1:"), line)
        # a stream works through it too (SSE: the head, then a published event)
        s = hh.SseStream(hp.ports["v2"], "/sse/pp")
        self.addCleanup(s.close)
        hh.publish(plain, "pp", "through haproxy")
        self.assertEqual(s.next_event().text, "through haproxy")

    def test_haproxy_v2_before_tls(self):
        """listen ... tls proxy_protocol: the PROXY header comes before the ClientHello."""
        cert_dir = self.tmpdir()
        crt, key = os.path.join(cert_dir, "c.pem"), os.path.join(cert_dir, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=herald-pp.test"], check=True,
                       capture_output=True)
        h = self.start(conf={"tls_certificate": crt, "tls_certificate_key": key},
                       listens=("127.0.0.1:0 tls proxy_protocol", "127.0.0.1:0"))
        tls_pp = h.ports[0][0]
        hp = self.haproxy([("v2", tls_pp, "send-proxy-v2"), ("v1", tls_pp, "send-proxy")])
        r = get(hp.ports["v2"], "127.0.0.4", "/healthz?tls=v2", tls=True)
        self.assertStatus(r, 200)
        r = get(hp.ports["v1"], "127.0.0.5", "/healthz?tls=v1", tls=True)
        self.assertStatus(r, 200)
        self.wait_access(r'^127\.0\.0\.4:\d+ c#\d+ "GET /healthz\?tls=v2 ')
        self.wait_access(r'^127\.0\.0\.5:\d+ c#\d+ "GET /healthz\?tls=v1 ')

    def test_per_ip_connections_through_haproxy(self):
        """max_connections_per_ip counts the client HAProxy names: 127.0.0.2 is refused its third
        connection (503, Retry-After) while 127.0.0.3 is served; closing one lets it in again."""
        h = self.start(conf={"max_connections_per_ip": "2"})
        pp, plain = listen_ports(h)
        hp = self.haproxy([("v2", pp, "send-proxy-v2"), ("v1", pp, "send-proxy")])
        held = []
        for route in ("v2", "v1"):
            c, r = get(hp.ports[route], "127.0.0.2", keep=True)
            self.assertStatus(r, 200)
            held.append(c)
        r = get(hp.ports["v2"], "127.0.0.2")
        self.assertStatus(r, 503)
        self.assertTrue(r.header("Retry-After").isdigit(), r)
        self.assertIn("max_connections_per_ip", json.loads(r.body)["error"])
        for route in ("v1", "v2"):
            self.assertStatus(get(hp.ports[route], "127.0.0.3"), 200)
        self.assertEqual(metric(plain, "herald_connections_refused_total",
                                '{reason="max_connections_per_ip"}'), 1)
        h.wait_log(r"refused 1 connection\(s\): max_connections_per_ip reached "
                   r"\(the last c#\d+ 127\.0\.0\.2:\d+\)")
        held.pop().close()
        hh.wait_for(lambda: get(hp.ports["v2"], "127.0.0.2").status == 200,
                    what="127.0.0.2 served again once one of its connections closed")
        for c in held:
            c.close()

    def test_malformed_header_closes(self):
        """On a proxy_protocol listener, anything but a PROXY header is closed unanswered."""
        h = self.start()
        pp, plain = listen_ports(h)
        for junk in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\nGET / HTTP/1.1\r\n\r\n",
                     V2_SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12,
                     V2_SIG + b"\x21\x11\xff\xff"):
            with hh.Client(pp) as c:
                c.send(junk)
                c.wait_closed()
                self.assertEqual(c.buf, b"", junk)
        self.assertEqual(metric(plain, "herald_proxy_protocol_errors_total",
                                '{reason="malformed"}'), 4)
        h.wait_log(r"PROXY protocol header refused: ")
        # a good header in pieces, then the request: served, logged with the header's client
        with hh.Client(pp) as c:
            hdr = proxy_v2("198.51.100.20", sport=4242)
            for i in range(len(hdr)):
                c.send(hdr[i:i + 1])
                time.sleep(0.002)
            self.assertStatus(c.request("GET", "/healthz?pieces=1"), 200)
        self.wait_access(r'^198\.51\.100\.20:4242 c#\d+ "GET /healthz\?pieces=1 ')
        # v2 LOCAL (a balancer's health check) keeps the socket's address
        with hh.Client(pp, source_ip="127.0.0.6") as c:
            c.send(V2_SIG + b"\x20\x00\x00\x00")
            self.assertStatus(c.request("GET", "/healthz?local=1"), 200)
        self.wait_access(r'^127\.0\.0\.6:\d+ c#\d+ "GET /healthz\?local=1 ')

    def test_local_rule_sees_the_proxied_client(self):
        """With no publish_key only a local client may publish (hd_tp_peer_is_local): behind a
        local balancer that is the client the PROXY header names, not the balancer."""
        h = self.start()
        pp, plain = listen_ports(h)
        for src, status in (("198.51.100.30", 403), ("127.0.0.9", 200)):
            with hh.Client(pp) as c:
                c.send(proxy_v2(src))
                r = c.request("POST", "/pub/local", body=b"x",
                              headers={"Content-Type": "text/plain"})
                self.assertEqual(r.status, status, (src, r))
        # and /metrics (admin, no admin_key): refused to the remote client, served to the local
        for src, status in (("198.51.100.31", 403), ("127.0.0.9", 200)):
            with hh.Client(pp) as c:
                c.send(proxy_v2(src))
                self.assertEqual(c.request("GET", "/metrics").status, status, src)

    def test_header_deadline(self):
        """A PROXY header that never completes is cut at header_timeout."""
        h = self.start(conf={"header_timeout": "500ms"})
        pp, plain = listen_ports(h)
        socks = []
        for partial in (b"PROXY TCP4 1.2.", V2_SIG[:7], proxy_v2("10.0.0.1")[:20], b""):
            s = hh.connect(pp)
            s.sendall(partial)
            socks.append(s)
        t0 = time.monotonic()
        for s in socks:
            s.settimeout(5)
            self.assertEqual(s.recv(100), b"")  # closed without an answer
            s.close()
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(metric(plain, "herald_proxy_protocol_errors_total",
                                '{reason="timeout"}'), 4)


class ForwardedForTest(hh.HeraldTestCase):
    def setUp(self):
        self.dir = self.tmpdir()
        self.access = os.path.join(self.dir, "access.log")

    def logged_client(self, port, source_ip, tag, headers):
        r = get(port, source_ip, "/healthz?tag=" + tag, headers=headers)
        self.assertStatus(r, 200)
        pattern = re.compile(r'^(\S+) c#\d+ "GET /healthz\?tag=%s ' % tag)
        found = []

        def seen():
            found[:] = [m.group(1) for m in map(pattern.match, access_lines(self.access)) if m]
            return found
        hh.wait_for(seen, what="access log line for %s" % tag)
        return found[0]

    def test_untrusted_peer_cannot_spoof(self):
        h = self.start_herald(conf={"access_log": self.access})
        got = self.logged_client(h.port, "127.0.0.2", "none",
                                 {"X-Forwarded-For": "203.0.113.9"})
        self.assertRegex(got, r"^127\.0\.0\.2:\d+$")

    def test_trusted_proxy(self):
        h = self.start_herald(conf={"access_log": self.access,
                                    "trusted_proxies": "127.0.0.2 127.0.0.10/31"})
        # trusted peer: the header's client
        self.assertEqual(self.logged_client(h.port, "127.0.0.2", "t1",
                                            {"X-Forwarded-For": "203.0.113.9"}), "203.0.113.9")
        # a spoofed header from an untrusted peer is ignored
        self.assertRegex(self.logged_client(h.port, "127.0.0.3", "spoof",
                                            {"X-Forwarded-For": "203.0.113.9"}),
                         r"^127\.0\.0\.3:\d+$")
        # the right-most untrusted address: what the client prepended is ignored
        self.assertEqual(self.logged_client(
            h.port, "127.0.0.11", "chain",
            {"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 127.0.0.10"}), "198.51.100.4")
        # an IPv6 client with a port, and RFC 7239 Forwarded when there is no X-Forwarded-For
        self.assertEqual(self.logged_client(h.port, "127.0.0.2", "v6",
                                            {"X-Forwarded-For": "[2001:db8::5]:4711"}),
                         "[2001:db8::5]:4711")
        self.assertEqual(self.logged_client(
            h.port, "127.0.0.2", "fwd",
            {"Forwarded": 'for=192.0.2.60;proto=https, for="127.0.0.10"'}), "192.0.2.60")
        # garbage stops the walk at the trusted peer
        self.assertRegex(self.logged_client(h.port, "127.0.0.2", "junk",
                                            {"X-Forwarded-For": "not-an-address"}),
                         r"^127\.0\.0\.2:\d+$")

    def test_trusted_proxies_reload(self):
        h = self.start_herald(conf={"access_log": self.access})
        self.assertRegex(self.logged_client(h.port, "127.0.0.2", "before",
                                            {"X-Forwarded-For": "192.0.2.1"}),
                         r"^127\.0\.0\.2:\d+$")
        h.reload(conf={"access_log": self.access, "trusted_proxies": "127.0.0.0/8"})
        self.assertEqual(self.logged_client(h.port, "127.0.0.2", "after",
                                            {"X-Forwarded-For": "192.0.2.1"}), "192.0.2.1")


class LimitsTest(hh.HeraldTestCase):
    def test_connect_rate_per_ip(self):
        """connect_rate_per_ip 1 with a burst of 2: the third connection of 127.0.0.2 within the
        second is answered 429 with Retry-After, while 127.0.0.3 is served."""
        h = self.start_herald(conf={"connect_rate_per_ip": "1", "connect_burst_per_ip": "2"})
        for _ in range(2):
            self.assertStatus(get(h.port, "127.0.0.2"), 200)
        # the third is refused unless the run was so slow that a token came back meanwhile;
        # one of the next ones then is (a token a second)
        r = get(h.port, "127.0.0.2")
        for _ in range(3):
            if r.status != 200:
                break
            r = get(h.port, "127.0.0.2")
        self.assertStatus(r, 429)
        self.assertIn(r.header("Retry-After"), ("1", "2"))
        self.assertIn("connect_rate_per_ip", json.loads(r.body)["error"])
        self.assertStatus(get(h.port, "127.0.0.3"), 200)
        self.assertGreaterEqual(metric(h.port, "herald_connections_refused_total",
                                       '{reason="connect_rate_per_ip"}'), 1)
        time.sleep(1.1)
        self.assertStatus(get(h.port, "127.0.0.2"), 200)

    def test_limits_reload(self):
        """The per-address limits apply on SIGHUP, to connections made after it."""
        h = self.start_herald()
        held = [get(h.port, "127.0.0.2", keep=True)[0] for _ in range(3)]
        self.assertStatus(get(h.port, "127.0.0.2"), 200)
        h.reload(conf={"max_connections_per_ip": "1"})
        # connections from before the limit are not counted: one more may open, then no more
        c, r = get(h.port, "127.0.0.2", keep=True)
        self.assertStatus(r, 200)
        self.assertStatus(get(h.port, "127.0.0.2"), 503)
        self.assertStatus(get(h.port, "127.0.0.3"), 200)
        c.close()
        hh.wait_for(lambda: get(h.port, "127.0.0.2").status == 200, what="served again")
        for s in held:
            s.close()

    def test_client_publish_rate_json(self):
        h = self.start_herald(conf={"ws_client_publish": "on", "client_publish_rate": "5"})
        ws = hh.RawWS(h.port, "/ws")
        self.addCleanup(ws.close)
        for i in range(12):
            ws.send(hh.ws_frame(1, json.dumps({"op": "publish", "channel": "rl",
                                               "data": "m%d" % i, "ref": i}).encode()))
        replies = [ws.recv_json() for _ in range(12)]
        ok = [r["ref"] for r in replies if r["type"] == "published"]
        refused = [r for r in replies if r["type"] == "error"]
        self.assertEqual(ok, [0, 1, 2, 3, 4], replies)
        self.assertEqual(len(refused), 7, replies)
        for r in refused:
            self.assertEqual(r["code"], "rate_limited")
            self.assertGreater(r["retry_after_ms"], 0)
        self.assertEqual(metric(h.port, "herald_client_publishes_refused_total",
                                '{reason="client_publish_rate"}'), 7)
        time.sleep(0.5)  # a token back every 200 ms
        ws.send(hh.ws_frame(1, json.dumps({"op": "publish", "channel": "rl", "data": "later",
                                           "ref": "later"}).encode()))
        self.assertEqual(ws.recv_json()["type"], "published")

    def test_client_publish_rate_http_token(self):
        """HTTP publishes on a token (a client's, auth on) take the connection's tokens: 429
        with Retry-After past the rate; the backend's publish key is not limited."""
        import jwt
        secret = "clientip-test-secret-of-more-than-32-bytes"
        conf = dict(hh.DEFAULT_CONF)
        conf.update({"auth_jwt_secret": secret, "publish_key": "backend-key-0123",
                     "client_publish_rate": "2"})
        h = self.start_herald(conf_raw=hh.conf_text(conf) +
                              "channel_rule pub:* subscribe=any publish=grant\n")
        tok = jwt.encode({"sub": "7", "exp": int(time.time()) + 600,
                          "channels": {"publish": ["pub:*"]}}, secret, algorithm="HS256")
        with hh.Client(h.port) as c:
            statuses = []
            for i in range(4):
                r = c.request("POST", "/pub/pub:r", body=b"m%d" % i,
                              headers={"Authorization": "Bearer " + tok,
                                       "Content-Type": "text/plain"})
                statuses.append(r.status)
                if r.status == 429:
                    self.assertIn(r.header("Retry-After"), ("1", "2"))
                    self.assertIn("client_publish_rate", json.loads(r.body)["error"])
            self.assertEqual(statuses, [200, 200, 429, 429])
            for i in range(4):
                r = c.request("POST", "/pub/pub:r", body=b"k%d" % i,
                              headers={"Authorization": "Bearer backend-key-0123",
                                       "Content-Type": "text/plain"})
                self.assertStatus(r, 200)
        self.assertEqual(metric(h.port, "herald_client_publishes_refused_total",
                                '{reason="client_publish_rate"}'), 2)

    def test_client_publish_rate_channel(self):
        """/ws/{channel} cannot answer a message: past the rate the client is closed 1008."""
        h = self.start_herald(conf={"ws_client_publish": "on", "client_publish_rate": "3"})
        ws = hh.RawWS(h.port, "/ws/rl2")
        self.addCleanup(ws.close)
        for i in range(6):
            ws.send(hh.ws_frame(1, b"x%d" % i))
        code, reason = ws.expect_close()
        self.assertEqual(code, 1008)
        self.assertIn("client_publish_rate", reason)


if __name__ == "__main__":
    hh.main()
