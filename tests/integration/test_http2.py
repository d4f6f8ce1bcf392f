# SPDX-License-Identifier: MIT
"""HTTP/2 (docs/http2.md) against the real binary.

Clients: Python h2 (python3-h2) for exact protocol cases, nghttp and h2load (nghttp2-client) as
real-world clients. Covered: prior knowledge (h2c) on a plain listener and h2 by ALPN on a tls
listener beside HTTP/1.1; every HTTP transport but WebSocket over streams of one connection
(SSE in both forms, short and long poll, publish, introspection); the request limits (414, 431, 413) and
timeouts; SETTINGS_MAX_CONCURRENT_STREAMS; a stream whose client stops reading it (bounded as a
slow subscriber, the connection's other streams still served) and the bound on a connection's
output; rapid reset (CVE-2023-44487) ending the connection with memory bounded and other clients
served; graceful shutdown.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402
import hyperframe.frame  # noqa: E402

from test_tls import make_cert  # noqa: E402


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = {}
        self.data = bytearray()
        self.ended = False
        self.reset = None  # error code of a RST_STREAM from the server

    @property
    def status(self):
        return int(self.headers.get(":status", "0"))


class H2Client:
    """A python-h2 client over a socket (plain: prior knowledge; tls: ALPN h2).

    auto_ack: every DATA received is acknowledged (WINDOW_UPDATE for the stream and the
    connection) unless its stream is in `stalled`, whose data only opens the connection's
    window: that stream's window closes as its client would if it stopped reading it."""

    def __init__(self, port, tls=False, auto_ack=True):
        raw = socket.create_connection(("127.0.0.1", port), timeout=hh.IO_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = hh.client_tls_context(alpn=["h2", "http/1.1"])
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            self.alpn = self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
            self.alpn = None
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}
        self.auto_ack = auto_ack
        self.stalled = set()
        self.goaway = None
        self.closed = False
        self.settings = {}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method, path, headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        pseudo = [h for h in headers if h[0].startswith(":")]
        hdrs = [(":method", method)] + pseudo + [(":path", path), (":scheme", "http"),
                                                 (":authority", "127.0.0.1")]
        hdrs += [h for h in headers if not h[0].startswith(":")]
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.streams[sid] = Stream(sid)
        self.flush()
        return self.streams[sid]

    def send(self, sid, data):
        self.conn.send_data(sid, data)
        self.flush()

    def send_body(self, sid, body, end=True):
        # Within the flow-control window herald gives (64 KiB per stream at first).
        while body:
            n = min(len(body), self.conn.local_flow_control_window(sid), 16384)
            if n == 0:
                self.pump(0.2)
                continue
            self.conn.send_data(sid, body[:n])
            body = body[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout=hh.IO_TIMEOUT):
        """Reads once (up to timeout) and handles the events. False when the socket closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            if self.goaway is None:
                raise
            events = []  # frames after GOAWAY, which python-h2 refuses to parse
        for ev in events:
            self.handle(ev)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def handle(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self.streams[ev.stream_id].headers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.data += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                if ev.stream_id in self.stalled:
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
                else:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.settings[k] = v.new_value

    def until(self, cond, timeout=hh.IO_TIMEOUT, what="condition"):
        end = time.monotonic() + timeout
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for " + what)
            if not self.pump(min(left, 0.5)) and not cond():
                raise AssertionError("connection closed waiting for " + what)
        return True

    def get(self, path, headers=(), method="GET", body=None, timeout=hh.IO_TIMEOUT):
        s = self.request(method, path, headers, body)
        self.until(lambda: s.ended or s.reset is not None, timeout, "response to " + path)
        return s


def ws_frame(payload, opcode=1):
    """A masked client WebSocket frame (RFC 6455 5.2)."""
    if isinstance(payload, str):
        payload = payload.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_frames(data):
    """The complete server frames in data: [(opcode, payload)]."""
    out, data = [], bytes(data)
    while len(data) >= 2:
        n, off = data[1] & 0x7F, 2
        if n == 126:
            n, off = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, off = int.from_bytes(data[2:10], "big"), 10
        if len(data) < off + n:
            break
        out.append((data[0] & 0x0F, data[off:off + n]))
        data = data[off + n:]
    return out


def ws_connect(c, path, headers=()):
    """Opens a WebSocket on a new stream of c (RFC 8441 extended CONNECT)."""
    return c.request("CONNECT", path, [(":protocol", "websocket"),
                                       ("sec-websocket-version", "13")] + list(headers),
                     end=False)


def metric(port, name):
    text = hh.request(port, "GET", "/metrics")[2].decode()
    total = 0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sse_events(data):
    return re.findall(rb"^data: (.*)$", bytes(data), re.M)


class Http2Plain(hh.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf={"max_body_size": "64k", "max_url_size": "1k",
                                             "max_header_size": "2k"}, workers=2)

    def test_prior_knowledge_requests(self):
        with H2Client(self.h.port) as c:
            s = c.get("/healthz")
            self.assertEqual(s.status, 200)
            self.assertEqual(bytes(s.data), b'{"status":"ok"}')
            self.assertNotIn("connection", s.headers)
            self.assertEqual(s.headers["server"].split("/")[0], "herald")
            # publish, then read it back by short poll, all on the same connection
            s = c.get("/pub/h2news", method="POST", body=b"hello over h2",
                      headers=[("content-type", "text/plain")])
            self.assertEqual(s.status, 200, bytes(s.data))
            self.assertIn(b'"id":', bytes(s.data))
            s = c.get("/poll/h2news")
            self.assertEqual(s.status, 200)
            self.assertIn(b"hello over h2", bytes(s.data))
            self.assertEqual(c.get("/nowhere").status, 404)
            s = c.get("/healthz", method="HEAD")
            self.assertEqual((s.status, bytes(s.data)), (200, b""))
            self.assertEqual(c.get("/healthz", method="BREW").status, 501)
            st = c.get("/stats")
            self.assertEqual(st.status, 200)
            self.assertEqual(c.settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS),
                             100)
        # HTTP/1.1 on the same listener is untouched
        self.assertTrue(hh.healthz_ok(self.h.port))

    def test_many_streams_in_flight(self):
        """40 requests sent at once on one connection, answered on their own streams."""
        with H2Client(self.h.port) as c:
            streams = [c.request("GET", "/poll/many%d" % i) for i in range(40)]
            c.until(lambda: all(s.ended for s in streams), what="40 answers")
            for i, s in enumerate(streams):
                self.assertEqual(s.status, 200)
                self.assertIn(b'"channel":"many%d"' % i, bytes(s.data))

    def test_sse_and_long_poll_streams_share_a_connection(self):
        with H2Client(self.h.port) as c:
            sse = [c.request("GET", "/sse/share%d" % i) for i in range(6)]
            lp = c.request("GET", "/lp/share-lp?timeout=10")
            c.until(lambda: all(s.status == 200 for s in sse), what="SSE heads")
            self.assertEqual(sse[0].headers["content-type"], "text/event-stream; charset=utf-8")
            hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] >= 6)
            for i in range(6):
                hh.publish(self.h.port, "share%d" % i, "event %d" % i)
            hh.publish(self.h.port, "share-lp", "held")
            c.until(lambda: all(sse_events(s.data) for s in sse) and lp.ended,
                    what="every stream's event")
            for i, s in enumerate(sse):
                self.assertEqual(sse_events(s.data), [b"event %d" % i])
                self.assertFalse(s.ended)
            self.assertEqual(lp.status, 200)
            self.assertIn(b"held", bytes(lp.data))
            # Resume with Last-Event-ID on a new stream of the same connection
            first = re.search(rb"^id: (\S+)$", bytes(sse[0].data), re.M).group(1).decode()
            hh.publish(self.h.port, "share0", "second")
            again = c.request("GET", "/sse/share0", headers=[("last-event-id", first)])
            c.until(lambda: sse_events(again.data), what="resumed event")
            self.assertEqual(sse_events(again.data), [b"second"])
        # the client went away: every stream is gone from the server
        hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] == 0)

    def test_head_of_many_fields(self):
        """40 fields before Last-Event-ID (more than a request state holds in itself before it
        makes room for 100): the field after them still resumes the stream."""
        with H2Client(self.h.port) as c:
            s = c.request("GET", "/sse/manyf")
            c.until(lambda: s.status == 200, what="SSE head")
            hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] >= 1)
            hh.publish(self.h.port, "manyf", "one")
            c.until(lambda: sse_events(s.data), what="the first event")
            first = re.search(rb"^id: (\S+)$", bytes(s.data), re.M).group(1).decode()
            hh.publish(self.h.port, "manyf", "two")
            fields = [("x-f%d" % i, str(i)) for i in range(40)] + [("last-event-id", first)]
            again = c.request("GET", "/sse/manyf", headers=fields)
            c.until(lambda: sse_events(again.data), what="resumed event")
            self.assertEqual(again.status, 200)
            self.assertEqual(sse_events(again.data), [b"two"])

    def test_sse_json_form(self):
        """?format=json over h2: data: is the message object, id: resumes it."""
        with H2Client(self.h.port) as c:
            first = hh.publish(self.h.port, "h2json", "one")
            s = c.request("GET", "/sse/h2json?format=json", headers=[("last-event-id", first)])
            c.until(lambda: s.status == 200, what="SSE head")
            second = hh.publish(self.h.port, "h2json", '{"n":\n2}', ctype="application/json")
            c.until(lambda: sse_events(s.data), what="the JSON event")
            self.assertEqual(re.findall(rb"^id: (\S+)$", bytes(s.data), re.M), [second.encode()])
            self.assertEqual(json.loads(b"\n".join(sse_events(s.data))),
                             {"id": second, "channel": "h2json",
                              "content_type": "application/json", "data": {"n": 2}})
            bad = c.request("GET", "/sse/h2json?format=yaml")
            c.until(lambda: bad.ended, what="the 400")
            self.assertEqual(bad.status, 400)

    def test_client_resets_a_stream(self):
        with H2Client(self.h.port) as c:
            s = c.request("GET", "/sse/resetme")
            c.until(lambda: s.status == 200)
            hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] >= 1)
            c.conn.reset_stream(s.sid)
            c.flush()
            hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] == 0)
            self.assertEqual(c.get("/healthz").status, 200)  # the connection goes on

    def test_request_limits(self):
        with H2Client(self.h.port) as c:
            self.assertEqual(c.get("/poll/" + "a" * 2000).status, 414)
            big = [("x-big-%d" % i, "v" * 200) for i in range(20)]
            s = c.get("/healthz", headers=big)
            self.assertEqual(s.status, 431)
            self.assertIn(b"too large", bytes(s.data))
            s = c.get("/pub/limits", method="POST", body=b"x" * 70000)
            self.assertEqual(s.status, 413)
            self.assertEqual(c.get("/healthz").status, 200)  # still serving the connection

    def test_nghttp_sse_and_publish(self):
        """nghttp (nghttp2's client) subscribes over h2c and publishes over h2c."""
        hh.require_executable("nghttp", "nghttp2-client")
        # -t 3: nghttp gives up on the endless stream after 3 s and prints what it received
        sub = subprocess.Popen(["nghttp", "-t", "3", "http://127.0.0.1:%d/sse/ng" % self.h.port],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(sub.kill)
        hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["sse"] >= 1)
        body = os.path.join(self.tmpdir(), "body")
        with open(body, "wb") as f:
            f.write(b"from nghttp")
        out = subprocess.run(["nghttp", "-d", body, "http://127.0.0.1:%d/pub/ng" % self.h.port],
                             capture_output=True, timeout=10)
        self.assertIn(b'"channel":"ng"', out.stdout, out.stderr)
        got = sub.communicate(timeout=15)[0]
        self.assertIn(b"data: from nghttp", got)

    def test_upgrade_h2c_answered_over_http11(self):
        """Upgrade: h2c (RFC 7540 3.2, removed by RFC 9113) is not taken: curl --http2 on
        http:// asks for it and gets its answer over HTTP/1.1, as a server without HTTP/2
        would give it."""
        hh.require_executable("curl", "curl")
        out = subprocess.run(["curl", "-sS", "--http2", "-o", "/dev/null", "-w",
                              "%{http_version} %{http_code}",
                              "http://127.0.0.1:%d/healthz" % self.h.port],
                             capture_output=True, timeout=15, text=True)
        self.assertEqual(out.stdout, "1.1 200", out.stderr)

    def test_h2load_requests(self):
        """A short bounded load: 4 connections x 10 streams at once, 2,000 requests."""
        hh.require_executable("h2load", "nghttp2-client")
        hh.publish(self.h.port, "loaded", "x")
        out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "10",
                              "http://127.0.0.1:%d/poll/loaded" % self.h.port],
                             capture_output=True, timeout=60, text=True)
        self.assertIn("2000 succeeded, 0 failed, 0 errored", out.stdout, out.stdout)
        self.assertIn("status codes: 2000 2xx", out.stdout)
        print(re.search(r"finished in .*", out.stdout).group(0), file=sys.stderr)


class Http2WebSocket(hh.HeraldTestCase):
    """WebSocket over HTTP/2 (RFC 8441): CONNECT :protocol websocket, then WebSocket frames as
    the stream's DATA; several WebSockets and other streams on one connection."""

    @classmethod
    def setUpClass(cls):
        cls.h = cls.start_class_herald(conf={"ws_client_publish": "on"}, workers=1)

    def test_websockets_share_a_connection(self):
        with H2Client(self.h.port) as c:
            raw = ws_connect(c, "/ws/wsh2")
            js = ws_connect(c, "/ws", [("sec-websocket-protocol", "herald.v1")])
            sse = c.request("GET", "/sse/wsh2")
            c.until(lambda: raw.status == 200 and js.status == 200 and sse.status == 200,
                    what="both WebSockets and the SSE stream open")
            self.assertEqual(
                c.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL), 1)
            self.assertNotIn("sec-websocket-accept", raw.headers)
            self.assertNotIn("upgrade", raw.headers)
            self.assertEqual(js.headers.get("sec-websocket-protocol"), "herald.v1")
            c.send(js.sid, ws_frame('{"op":"subscribe","channel":"wsh2","ref":1}'))
            c.until(lambda: any(b'"subscribed"' in p for _, p in ws_frames(js.data)),
                    what="subscribed")
            c.send(js.sid, ws_frame('{"op":"ping","ref":2}'))
            c.until(lambda: any(b'"pong"' in p for _, p in ws_frames(js.data)), what="pong")
            hh.publish(self.h.port, "wsh2", "to every stream")
            c.until(lambda: ws_frames(raw.data) and sse_events(sse.data) and
                    any(b'"message"' in p for _, p in ws_frames(js.data)),
                    what="the message on the three streams")
            self.assertEqual(ws_frames(raw.data), [(1, b"to every stream")])
            # a frame from the client on /ws/{channel} is a publish (ws_client_publish)
            c.send(raw.sid, ws_frame("from the h2 websocket"))
            c.until(lambda: b"from the h2 websocket" in bytes(sse.data), what="client publish")
            # the client closes one WebSocket: the server answers close and ends the stream
            c.send(raw.sid, ws_frame(b"\x03\xe8bye", opcode=8))
            c.until(lambda: raw.ended or raw.reset is not None, what="the stream's end")
            self.assertIn(8, [op for op, _ in ws_frames(raw.data)])
            # the other WebSocket on the connection goes on
            c.send(js.sid, ws_frame('{"op":"ping","ref":3}'))
            c.until(lambda: sum(b'"pong"' in p for _, p in ws_frames(js.data)) == 2,
                    what="second pong")
            self.assertEqual(hh.stats(self.h.port)["connections"]["websocket"], 1)
        hh.wait_for(lambda: hh.stats(self.h.port)["connections"]["websocket"] == 0)

    def test_refusals(self):
        with H2Client(self.h.port) as c:
            s = c.request("CONNECT", "/ws/x", [(":protocol", "smtp")], end=False)
            c.until(lambda: s.status or s.reset is not None, what="refusal")
            self.assertEqual(s.status, 501)
            s = ws_connect(c, "/ws/" + "x" * 200)  # a channel name past 128 characters
            c.until(lambda: s.status or s.reset is not None, what="refusal")
            self.assertEqual(s.status, 400)
            self.assertEqual(c.get("/healthz").status, 200)


class Http2InputBackpressure(hh.HeraldTestCase):
    """A stream herald does not read stops its client at the stream's flow-control window, as
    a socket herald does not read stops a TCP client, while the connection's other streams go
    on; what it held is read, in order, once herald reads the stream again."""

    def test_unread_stream_stops_its_client_at_the_window(self):
        redis = rs.start_redis(self)
        h = self.start_herald(conf={"max_queue_bytes": "1m"}, workers=1, overrides=[
            "redis unix://" + redis.sock, "redis_timeout 10s"])
        with H2Client(h.port) as c:
            self.assertEqual(c.get("/healthz").status, 200)
            # The WebSocket's handshake waits for its subscription, which a stopped Redis
            # does not answer: herald does not read the stream meanwhile.
            redis.pause()
            self.addCleanup(lambda: redis.stopped and redis.resume())
            ws = ws_connect(c, "/ws/held")
            pings = ws_frame(b"p" * 119, opcode=9) * 1000  # 125 KB of 125-byte pings
            sent = 0
            while sent < len(pings):
                n = min(c.conn.local_flow_control_window(ws.sid), 16384, len(pings) - sent)
                if n == 0:
                    break
                c.send(ws.sid, pings[sent:sent + n])
                sent += n
            self.assertEqual(sent, 65535)  # the stream's initial window
            # Herald holds it and gives the connection's window back (other streams go on),
            # not the stream's.
            other = c.request("GET", "/healthz", body=b"b" * 50000)
            c.until(lambda: other.ended, what="another stream with a body, answered")
            for _ in range(4):
                c.pump(0.1)
            self.assertGreater(c.conn.outbound_flow_control_window, 0)
            self.assertEqual(c.conn.local_flow_control_window(ws.sid), 0,
                             "the unread stream's window stayed shut")
            self.assertEqual(ws.status, 0)
            # Redis answers: the WebSocket opens and reads what was held, then the rest.
            redis.resume()
            c.until(lambda: ws.status == 200, what="the WebSocket's handshake")

            def pongs():
                return sum(op == 10 for op, _ in ws_frames(ws.data))
            c.until(lambda: pongs() == 65535 // 125, timeout=10, what="pongs for the held pings")
            c.send_body(ws.sid, pings[sent:], end=False)
            c.until(lambda: pongs() == 1000, timeout=20, what="a pong for every ping")
            self.assertIsNone(ws.reset)
            self.assertIsNone(c.goaway)

    def test_unread_streams_together_are_bounded(self):
        """40 unread streams of one connection cannot make herald hold 40 windows: past 256 KiB
        held, the connection's window is not given back either."""
        redis = rs.start_redis(self)
        h = self.start_herald(conf={"http2_max_streams": "64"}, workers=1, overrides=[
            "redis unix://" + redis.sock, "redis_timeout 10s"])
        with H2Client(h.port) as c:
            self.assertEqual(c.get("/healthz").status, 200)
            redis.pause()
            self.addCleanup(lambda: redis.stopped and redis.resume())
            rss0 = h.rss_bytes()
            wss = [ws_connect(c, "/ws/bound%d" % i) for i in range(40)]
            chunk = ws_frame(b"p" * 119, opcode=9) * 131  # 16,375 bytes of whole pings
            sent, idle = 0, 0
            while idle < 5:  # until nothing could be sent for 5 reads in a row
                moved = 0
                for ws in wss:
                    n = min(c.conn.local_flow_control_window(ws.sid), len(chunk))
                    if n > 0:
                        c.send(ws.sid, chunk[:n])
                        moved += n
                sent += moved
                idle = 0 if moved else idle + 1
                c.pump(0.1)
            self.assertGreater(sent, 256 * 1024)  # the connection's window was given back...
            self.assertLess(sent, 256 * 1024 + 2 * 65536)  # ...until 256 KiB were held
            self.assertEqual(c.conn.outbound_flow_control_window, 0)
            self.assertLess(h.rss_bytes() - rss0, 16 << 20)
            # another client is served (/stats: /healthz reports the stopped Redis)
            self.assertEqual(hh.request(h.port, "GET", "/stats", timeout=2)[0], 200)
            # Once read, the connection flows again.
            redis.resume()
            c.until(lambda: all(ws.status == 200 for ws in wss), timeout=15,
                    what="every handshake answered")
            c.until(lambda: c.conn.outbound_flow_control_window > 0, timeout=10,
                    what="the connection's window given back")
            self.assertIsNone(c.goaway)


class Http2Chromium(hh.HeraldTestCase):
    """Headless Chromium: eight EventSources on one https origin (eight tabs of a site) all
    receive over HTTP/2, where HTTP/1.1's six connections per host hold two back; and a
    WebSocket on that origin goes over the same connection (RFC 8441)."""

    PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser", "h2tabs.html")

    def setUp(self):
        hh.require_executable(hh.CHROMIUM, "chromium")
        d = self.tmpdir()
        self.crt, self.key = make_cert(d, "localhost", "tabs")
        self.pages = hh.PageServer(self.PAGE)
        self.addCleanup(self.pages.close)

    def open_tabs(self, h, prefix, n, ws):
        url = "http://127.0.0.1:%d/h2tabs.html?herald=https://127.0.0.1:%d&channel=%s&n=%d&ws=%d" % (
            self.pages.port, h.tls_port, prefix, n, ws)
        b = hh.Browser(url, extra_args=["--ignore-certificate-errors"])
        self.addCleanup(b.close)
        return b

    def reports(self, kinds, until, timeout):
        got = []
        end = time.monotonic() + timeout
        while not until(got) and time.monotonic() < end:
            try:
                got.append(self.pages.next(kinds, timeout=max(0.1, end - time.monotonic())))
            except AssertionError:
                break
        return got

    def start(self, **conf):
        conf.update({"tls_certificate": self.crt, "tls_certificate_key": self.key,
                     "cors_origins": "http://127.0.0.1:%d" % self.pages.port})
        return self.start_herald(conf=conf, listens=("127.0.0.1:0", "127.0.0.1:0 tls"),
                                 workers=1)

    def test_eight_tabs_and_a_websocket_share_one_connection(self):
        h = self.start()
        b = self.open_tabs(h, "tab", 8, 1)
        opens = self.reports(("open", "error"), lambda g: len([x for x in g if x[0] == "open"])
                             == 9, 30)
        opened = sorted((x[1]["transport"], x[1].get("tab", -1)) for x in opens
                        if x[0] == "open")
        self.assertEqual(opened, [("sse", i) for i in range(8)] + [("ws", -1)],
                         "%r; chromium said:\n%s" % (opens, b.output()))
        for i in range(8):
            hh.publish(h.port, "tab-%d" % i, "to tab %d" % i)
        hh.publish(h.port, "tab-ws", "to the websocket")
        msgs = self.reports(("message",), lambda g: len(g) == 9, 20)
        got = sorted((m[1]["transport"], m[1].get("tab", -1), m[1]["data"]) for m in msgs)
        self.assertEqual(got, [("sse", i, "to tab %d" % i) for i in range(8)] +
                         [("ws", -1, "to the websocket")])
        m = hh.request(h.port, "GET", "/metrics")[2].decode()
        # one connection carried the eight EventSources and the WebSocket as nine streams
        self.assertIn("herald_http2_connections_total 1\n", m)
        self.assertIn("herald_http2_streams_total 9\n", m)
        st = hh.stats(h.port)["connections"]
        self.assertEqual((st["sse"], st["websocket"]), (8, 1))

    def test_over_http11_two_tabs_of_eight_wait(self):
        """The control: HTTP/1.1 only (http2 off), Chromium opens six of the eight."""
        h = self.start(http2="off")
        b = self.open_tabs(h, "old", 8, 0)
        opens = self.reports(("open",), lambda g: len(g) == 6, 30)
        self.assertEqual(len(opens), 6, "%r; chromium said:\n%s" % (opens, b.output()))
        more = self.reports(("open",), lambda g: len(g) > 0, 3)  # the other two stay waiting
        self.assertEqual(more, [], "more than six tabs opened over HTTP/1.1")


class Http2Tls(hh.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        d = cls.class_tmpdir() if hasattr(cls, "class_tmpdir") else None
        import tempfile
        d = d or tempfile.mkdtemp(prefix="herald-h2-")
        cls.crt, cls.key = make_cert(d, "localhost", "h2")
        cls.h = cls.start_class_herald(
            conf={"tls_certificate": cls.crt, "tls_certificate_key": cls.key},
            listens=("127.0.0.1:0", "127.0.0.1:0 tls"))

    def test_alpn_h2_and_http11_side_by_side(self):
        with H2Client(self.h.tls_port, tls=True) as c:
            self.assertEqual(c.alpn, "h2")
            s = c.request("GET", "/sse/tlsch")
            c.until(lambda: s.status == 200)
            hh.publish(self.h.port, "tlsch", "over tls")
            c.until(lambda: sse_events(s.data), what="event over h2 + TLS")
            self.assertEqual(sse_events(s.data), [b"over tls"])
            self.assertEqual(c.get("/healthz").status, 200)
        ctx = hh.client_tls_context(alpn=["http/1.1"])
        with hh.Client(self.h.tls_port, ssl_context=ctx) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(c.request("GET", "/healthz").status, 200)

    def test_curl_http2_over_tls(self):
        hh.require_executable("curl", "curl")
        out = subprocess.run(["curl", "-k", "-sS", "--http2", "-o", "/dev/null", "-w",
                              "%{http_version} %{http_code}",
                              "https://127.0.0.1:%d/healthz" % self.h.tls_port],
                             capture_output=True, timeout=15, text=True)
        self.assertEqual(out.stdout, "2 200", out.stderr)


class Http2Limits(hh.HeraldTestCase):
    def start(self, **conf):
        base = {"max_queue_bytes": "64k", "http2_max_streams": "4", "keepalive_timeout": "1s"}
        base.update(conf)
        h = hh.Herald(conf=base, workers=1)
        self.addCleanup(h.cleanup)
        return h.start()

    def test_concurrent_streams_refused_past_the_setting(self):
        h = self.start()
        with H2Client(h.port) as c:
            # sent before our SETTINGS are read: the client does not hold itself to them
            held = [c.request("GET", "/sse/cap%d" % i) for i in range(4)]
            extra = c.request("GET", "/sse/cap-extra")
            c.until(lambda: extra.reset is not None and all(s.status == 200 for s in held),
                    what="the fifth stream refused")
            self.assertEqual(extra.reset, h2.errors.ErrorCodes.REFUSED_STREAM)
            for i in range(4):
                hh.publish(h.port, "cap%d" % i, "still here")
            c.until(lambda: all(sse_events(s.data) for s in held), what="events on held streams")
            self.assertIsNone(c.goaway)

    def test_stream_that_stops_reading_is_cut_like_a_slow_subscriber(self):
        h = self.start()
        with H2Client(h.port) as c:
            stuck = c.request("GET", "/sse/slowch")
            live = c.request("GET", "/sse/slowch")
            c.stalled.add(stuck.sid)
            c.until(lambda: stuck.status == 200 and live.status == 200)
            hh.wait_for(lambda: hh.stats(h.port)["connections"]["sse"] == 2)
            rss0 = h.rss_bytes()
            payload = "p" * 4000
            pub = hh.Publisher(h.port)
            self.addCleanup(pub.close)
            for i in range(100):  # 400 KB: the stuck stream's window (64 KiB) + 64k queue
                pub("slowch", "%03d%s" % (i, payload))
                c.pump(0.01)
            c.until(lambda: len(sse_events(live.data)) == 100, timeout=20,
                    what="all 100 events on the stream that reads")
            hh.wait_for(lambda: metric(h.port, "herald_slow_subscribers_dropped_total") >= 1)
            self.assertLess(len(stuck.data), 70000)  # never more than its window
            self.assertLess(h.rss_bytes() - rss0, 16 << 20)
            self.assertIsNone(c.goaway)
            self.assertEqual(c.get("/healthz").status, 200)
            # cut as an HTTP/1.1 subscriber is: once its client reads again, what was queued
            # before the cut, then the end of the stream (not the 100 events)
            c.stalled.discard(stuck.sid)
            c.conn.increment_flow_control_window(1 << 20, stream_id=stuck.sid)
            c.flush()
            c.until(lambda: stuck.ended or stuck.reset is not None, timeout=10,
                    what="the cut stream's end")
            self.assertTrue(stuck.ended, "END_STREAM, not a reset (%r)" % stuck.reset)
            self.assertLess(len(sse_events(stuck.data)), 100)

    def test_connection_output_bound_resets_the_largest_stream(self):
        h = self.start(max_queue_bytes="1m", http2_max_queue_bytes="128k",
                       http2_max_streams="10")
        before = metric(h.port, "herald_http2_streams_reset_total")
        with H2Client(h.port) as c:
            stuck = [c.request("GET", "/sse/bound") for _ in range(3)]
            live = c.request("GET", "/sse/bound")
            c.stalled.update(s.sid for s in stuck)
            c.until(lambda: all(s.status == 200 for s in stuck + [live]))
            pub = hh.Publisher(h.port)
            self.addCleanup(pub.close)
            for i in range(60):  # 240 KB to each stream
                pub("bound", "%03d%s" % (i, "q" * 4000))
                c.pump(0.01)
            c.until(lambda: len(sse_events(live.data)) == 60, timeout=20, what="live events")
            c.until(lambda: any(s.reset == h2.errors.ErrorCodes.CANCEL for s in stuck),
                    what="a stalled stream reset")
        self.assertGreater(metric(h.port, "herald_http2_streams_reset_total"), before)

    def test_rapid_reset_ends_the_connection(self):
        h = self.start(http2_max_streams="100", http2_reset_rate="10")
        other = H2Client(h.port)
        self.addCleanup(other.close)
        sse = other.request("GET", "/sse/calm")
        other.until(lambda: sse.status == 200)
        rss0 = h.rss_bytes()
        before = metric(h.port, "herald_http2_connection_errors_total")
        with H2Client(h.port) as c:
            sent = 0
            try:
                for _ in range(2000):
                    s = c.request("GET", "/sse/rapid", end=True)
                    c.conn.reset_stream(s.sid)
                    c.flush()
                    sent += 1
            except (BrokenPipeError, ConnectionResetError):
                pass
            c.until(lambda: c.goaway is not None or c.closed, what="GOAWAY")
            self.assertEqual(c.goaway, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self.assertLess(sent, 2000 + 1)
        self.assertGreater(metric(h.port, "herald_http2_connection_errors_total"), before)
        self.assertLess(h.rss_bytes() - rss0, 16 << 20)
        hh.publish(h.port, "calm", "unbothered")
        other.until(lambda: sse_events(sse.data), what="the other client's event")
        self.assertEqual(hh.stats(h.port)["subscriptions"], 1)

    def test_idle_connection_gets_goaway(self):
        h = self.start()
        with H2Client(h.port) as c:
            self.assertEqual(c.get("/healthz").status, 200)
            t0 = time.monotonic()
            c.until(lambda: c.goaway is not None, timeout=5, what="GOAWAY when idle")
            self.assertEqual(c.goaway, h2.errors.ErrorCodes.NO_ERROR)
            self.assertGreater(time.monotonic() - t0, 0.5)
            c.until(lambda: c.closed, timeout=5, what="close after GOAWAY")

    def test_body_timeout(self):
        h = self.start(body_timeout="500ms")
        with H2Client(h.port) as c:
            s = c.request("POST", "/pub/slowbody", body=b"part", end=False)
            c.until(lambda: s.ended or s.reset is not None, timeout=5, what="408")
            self.assertEqual(s.status, 408)

    def test_shutdown_ends_streams_and_connection(self):
        h = self.start(shutdown_timeout="3s")
        with H2Client(h.port) as c:
            s = c.request("GET", "/sse/bye")
            c.until(lambda: s.status == 200)
            h.signal(hh.signal.SIGTERM)
            # python-h2 refuses frames after a GOAWAY, which RFC 9113 allows for streams the
            # GOAWAY keeps (6.8): read the frames raw from here on.
            data, ended, goaway = bytearray(), False, None
            buf = b""
            c.sock.settimeout(5)
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    f, length = hyperframe.frame.Frame.parse_frame_header(buf[:9])
                    if len(buf) < 9 + length:
                        break
                    f.parse_body(memoryview(buf[9:9 + length]))
                    buf = buf[9 + length:]
                    if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == s.sid:
                        data += f.data
                        ended = ended or "END_STREAM" in f.flags
                    elif isinstance(f, hyperframe.frame.GoAwayFrame):
                        goaway = f.error_code
            self.assertIn(b"server shutting down", bytes(data))
            self.assertTrue(ended, "the SSE stream ended (END_STREAM)")
            self.assertEqual(goaway, h2.errors.ErrorCodes.NO_ERROR)
        self.assertEqual(h.wait_exit(10), 0)

    def test_http2_off(self):
        h = self.start(http2="off")
        sock = hh.connect(h.port)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        head = sock.recv(200)
        sock.close()
        self.assertTrue(head.startswith(b"HTTP/1.1 4"), head)


if __name__ == "__main__":
    hh.main()
