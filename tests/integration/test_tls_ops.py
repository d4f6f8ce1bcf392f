# SPDX-License-Identifier: MIT
"""Every transport over TLS, through the real binary (test_tls.py covers the TLS layer itself:
handshakes, versions, certificates, reload):

- publish, SSE, short poll, long poll and WebSocket (python3-websockets over wss://), with
  payloads of exactly max_message_size (delivered whole on each transport) and one byte more
  (413);
- a slow consumer: a TLS SSE client that stops reading is cut at max_queue_bytes (counted in
  herald_slow_subscribers_dropped_total) while another TLS subscriber receives every message,
  and the server's memory stays bounded;
- max_connections and accept_rate on a TLS listener: the connection over the limit is closed
  before any handshake byte is sent (herald never answers its ClientHello), counted in
  herald_connections_refused_total and not as a failed handshake.
"""
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import Client, build_request, wait_for  # noqa: E402

MAX_MESSAGE = 256 * 1024
MB = 1024 * 1024


def make_cert(directory):
    crt, key = os.path.join(directory, "s.crt"), os.path.join(directory, "s.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=tls-ops.test"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def tls_sse(port, path, rcvbuf=None, read_head=True):
    """herald_harness.SseStream over TLS (the handshake done before the request is sent)."""
    s = hh.SseStream.__new__(hh.SseStream)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.bind((hh.next_source_ip(), 0))
    raw.settimeout(hh.STREAM_TIMEOUT)
    raw.connect(("127.0.0.1", port))
    s.sock = hh.client_tls_context(alpn=["http/1.1"]).wrap_socket(raw)
    s.sock.sendall(build_request("GET", path))
    s.buf, s.scan, s.eof, s.status, s.headers, s.body = bytearray(), 0, False, None, {}, b""
    if read_head:
        s.read_head()
    return s


def tls_request(port, method, path, body=None, headers=None):
    with Client(port, tls=True) as c:
        return c.request(method, path, headers=headers, body=body, timeout=20)


def metrics(port):
    """/metrics as {series: value} (test_metrics.py parses it with prometheus_client)."""
    from prometheus_client.parser import text_string_to_metric_families
    r = tls_request(port, "GET", "/metrics")
    assert r.status == 200, r
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            key = s.name + ("{%s}" % ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
                            if s.labels else "")
            out[key] = s.value
    return out


class TlsOpsTestCase(hh.HeraldTestCase):
    def start_tls(self, workers=2, **conf):
        d = self.tmpdir()
        crt, key = make_cert(d)
        c = {"tls_certificate": crt, "tls_certificate_key": key}
        c.update(conf)
        return self.start_herald(conf=c, workers=workers, listens=("127.0.0.1:0 tls",))


class TestTransportsOverTls(TlsOpsTestCase):
    def test_every_transport_at_max_message_size(self):
        h = self.start_tls(max_message_size=str(MAX_MESSAGE), ws_client_publish="on")
        port = h.tls_port
        big = "".join(chr(ord("a") + i % 26) for i in range(MAX_MESSAGE))
        sse = tls_sse(port, "/sse/big")
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200)
        lp_result = []
        lp = threading.Thread(target=lambda: lp_result.append(
            tls_request(port, "GET", "/lp/big?timeout=20")), daemon=True)
        lp.start()
        websockets = hh.require_websockets()
        ctx = hh.client_tls_context()

        async def ws_side(ready, n):
            async with hh.ws_connect(port, "/ws/big", tls=True, ssl=ctx) as ws:
                ready.set()
                return [await asyncio.wait_for(ws.recv(), 20) for _ in range(n)]

        ws_got, ws_ready = [], threading.Event()
        wst = threading.Thread(target=lambda: ws_got.extend(
            asyncio.run(ws_side(ws_ready, 2))), daemon=True)
        wst.start()
        self.assertTrue(ws_ready.wait(20), "wss:// did not open")
        wait_for(lambda: json.loads(tls_request(port, "GET", "/channels/big").body)
                 ["subscribers"] == 3, what="3 subscribers over TLS")

        r = tls_request(port, "POST", "/pub/big", big.encode(), {"Content-Type": "text/plain"})
        self.assertEqual(r.status, 200, r)
        first = json.loads(r.body)["id"]
        r = tls_request(port, "POST", "/pub/big", (big + "!").encode(),
                        {"Content-Type": "text/plain"})
        self.assertEqual(r.status, 413, r)

        # A WebSocket client publishes over wss:// (ws_client_publish): the whole JSON request
        # counts against max_message_size, so its data leaves room for the envelope.
        near = big[:MAX_MESSAGE - 100]

        async def ws_publish(data):
            async with hh.ws_connect(port, "/ws", tls=True, ssl=ctx) as ws:
                await ws.send(json.dumps({"op": "publish", "channel": "big", "data": data,
                                          "ref": 7}))
                try:
                    return json.loads(await asyncio.wait_for(ws.recv(), 20))
                except websockets.exceptions.ConnectionClosed as e:
                    return {"close": e.rcvd.code if e.rcvd else None}
        reply = asyncio.run(ws_publish(near))
        self.assertEqual((reply.get("type"), reply.get("ref")), ("published", 7), reply)
        second = reply["id"]
        self.assertEqual(asyncio.run(ws_publish(big)), {"close": 1009})

        ev = [sse.next_event(20) for _ in range(2)]
        self.assertEqual([(e.id, e.text) for e in ev], [(first, big), (second, near)])
        lp.join(20)
        r = lp_result[0]
        self.assertEqual(r.status, 200, r)
        body = json.loads(r.body)
        self.assertEqual([(m["id"], m["data"]) for m in body["messages"]], [(first, big)])
        wst.join(20)
        self.assertEqual(ws_got, [big, near])
        r = tls_request(port, "GET", "/poll/big?since=0-0")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(m["id"], m["data"]) for m in json.loads(r.body)["messages"]],
                         [(first, big), (second, near)])


class TestSlowTlsConsumer(TlsOpsTestCase):
    def test_slow_tls_sse_cut_others_served(self):
        h = self.start_tls(workers=1, max_queue_bytes="256k")
        port = h.tls_port
        reader = tls_sse(port, "/sse/slow")
        self.addCleanup(reader.close)
        # Handshake done, request sent, then it never reads again (not even the head).
        slow = tls_sse(port, "/sse/slow", rcvbuf=4096, read_head=False)
        self.addCleanup(slow.close)
        wait_for(lambda: json.loads(tls_request(port, "GET", "/channels/slow").body)
                 ["subscribers"] == 2, what="2 subscribers")
        got, errors = [], []

        def read():
            try:
                while True:
                    e = reader.next_event(20)
                    if e is None or e.text == "end":
                        return
                    got.append((e.id, e.text[:8]))
            except Exception as e:  # reported below
                errors.append(repr(e))
        t = threading.Thread(target=read, daemon=True)
        t.start()
        rss0 = h.rss_bytes()
        published = []
        with Client(port, tls=True) as pub:
            for i in range(400):  # at most 12.8 MB, far past 256k and the socket buffers
                wait_for(lambda: len(got) >= len(published) - 4 or errors, what="the reader")
                r = pub.request("POST", "/pub/slow", body=("%08d" % i + "z" * 32760).encode(),
                                headers={"Content-Type": "text/plain"})
                self.assertEqual(r.status, 200, r)
                published.append((json.loads(r.body)["id"], "%08d" % i))
                if i % 8 == 7 and metrics(port)["herald_slow_subscribers_dropped_total"]:
                    break
            self.assertEqual(metrics(port)["herald_slow_subscribers_dropped_total"], 1,
                             "the slow TLS subscriber was not cut")
            self.assertLess(h.rss_bytes() - rss0, 48 * MB, "memory grew behind a slow client")
            for i in range(3):
                r = pub.request("POST", "/pub/slow", body=b"after%d" % i)
                published.append((json.loads(r.body)["id"], "after%d" % i))
            pub.request("POST", "/pub/slow", body=b"end")
        t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(got, published)
        # The slow one was closed (its data ends; the server sent a close_notify or FIN).
        slow.sock.settimeout(10)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline and slow.sock.recv(1 << 20):
                pass
        except (ssl.SSLError, OSError):
            pass
        self.assertEqual(json.loads(tls_request(port, "GET", "/channels/slow").body)
                         ["subscribers"], 1)


class TestTlsAdmission(TlsOpsTestCase):
    def assertClosedBeforeHandshake(self, port):
        """A TCP connection to the TLS port is closed by the server at once, before any TLS byte:
        without sending anything the client reads the end of the stream (an admitted
        connection would wait for its ClientHello)."""
        raw = hh.connect(port, spread=True)
        try:
            raw.settimeout(3)
            try:
                data = raw.recv(4096)
            except ConnectionResetError:
                data = b""
            except (socket.timeout, TimeoutError):
                self.fail("a connection over the limit was kept open (waiting for a handshake)")
            self.assertEqual(data, b"", "the server sent bytes to a refused TLS connection")
        finally:
            raw.close()

    def test_max_connections_on_tls(self):
        h = self.start_tls(workers=1, max_connections="3")
        held = [Client(h.tls_port, tls=True, spread=True) for _ in range(3)]
        for c in held:
            self.addCleanup(c.close)
            self.assertEqual(c.request().status, 200)
        for _ in range(4):
            self.assertClosedBeforeHandshake(h.tls_port)
        for c in held:
            self.assertEqual(c.request().status, 200)
        m = held[0].request("GET", "/metrics").body.decode()
        self.assertIn('herald_connections_refused_total{reason="max_connections"} 4\n', m)
        self.assertIn("herald_tls_handshake_failures_total 0\n", m)
        self.assertIn("herald_connections 3\n", m)

    def test_accept_rate_on_tls(self):
        h = self.start_tls(workers=1, accept_rate="1", accept_burst="1")
        with Client(h.tls_port, tls=True) as first:
            self.assertEqual(first.request().status, 200)
            for _ in range(2):
                self.assertClosedBeforeHandshake(h.tls_port)
            m = first.request("GET", "/metrics").body.decode()
        self.assertIn('herald_connections_refused_total{reason="accept_rate"} 2\n', m)
        self.assertIn("herald_tls_handshake_failures_total 0\n", m)
        time.sleep(1.1)  # a token again: served
        self.assertTrue(hh.healthz_ok(h.tls_port, tls=True))


if __name__ == "__main__":
    hh.main()
