# SPDX-License-Identifier: MIT
"""HTTP/1.x integration tests: framing, keep-alive, pipelining, limits, timeouts, bad input.

Each test runs its own herald (ephemeral port, 2 workers, per-test conf) and talks raw HTTP over
sockets, plus curl. After every bad-input test the server must still answer /healthz.
"""
import ctypes
import email.utils
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import Client, build_request, chunked  # noqa: E402

OK_BODY = b'{"status":"ok"}'

# Small limits so that each is easy to cross; timeouts long enough not to interfere.
LIMITS = {
    "max_url_size": "1k",
    "max_header_size": "1k",
    "max_body_size": "1k",
}


class HttpTestCase(hh.HeraldTestCase):
    def assertOk(self, r):
        self.assertStatus(r, 200)
        self.assertEqual(r.body, OK_BODY)
        self.assertEqual(r.header("Content-Length"), str(len(OK_BODY)))
        self.assertEqual(r.header("Content-Type"), "application/json")

    def assertCommonHeaders(self, r):
        self.assertEqual(r.version, "HTTP/1.1")
        self.assertRegex(r.header("Server") or "", r"^herald/\d+\.\d+\.\d+$")
        date = r.header("Date")
        self.assertIsNotNone(date, "no Date header")
        self.assertRegex(date, r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
        when = email.utils.parsedate_to_datetime(date).timestamp()
        self.assertLess(abs(when - time.time()), 5, "Date %r is not now" % date)

    def assertErrorClose(self, c, status, r=None):
        """The response (read now unless given) has `status`, says Connection: close, carries
        the JSON error body its Content-Length announces, and then the connection closes."""
        if r is None:
            r = c.read_response()
        self.assertStatus(r, status)
        self.assertCommonHeaders(r)
        self.assertEqual(r.header("Connection"), "close", r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(int(r.header("Content-Length")), len(r.body))
        self.assertIn(b'"status":%d' % status, r.body)
        c.wait_closed(timeout=3)
        return r


class TestBasics(HttpTestCase):
    def setUp(self):
        self.h = self.start_herald(conf=LIMITS)

    def test_get_healthz(self):
        with Client(self.h.port) as c:
            r = c.request("GET", "/healthz")
            self.assertOk(r)
            self.assertCommonHeaders(r)
            self.assertEqual(r.header("Cache-Control"), "no-store")
            self.assertIsNone(r.header("Connection"), "keep-alive is the 1.1 default")

    def test_accepted_socket_has_nodelay(self):
        """herald sets TCP_NODELAY once on its listening sockets and every accepted socket
        inherits it (no setsockopt per connection): the server's end of a connection, taken
        from herald with pidfd_getfd, has it."""
        if os.geteuid() != 0:
            self.skipTest("pidfd_getfd on another process needs root (ptrace access)")
        with Client(self.h.port) as c:
            self.assertOk(c.request("GET", "/healthz"))
            client_port = c.sock.getsockname()[1]
            inode = None
            with open("/proc/net/tcp") as f:
                for line in f.read().splitlines()[1:]:
                    col = line.split()
                    local, remote = col[1].split(":"), col[2].split(":")
                    if int(local[1], 16) == self.h.port and int(remote[1], 16) == client_port:
                        inode = col[9]
            self.assertIsNotNone(inode, "herald's end of the connection is not in /proc/net/tcp")
            fds = [int(n) for n in os.listdir("/proc/%d/fd" % self.h.pid)
                   if os.readlink("/proc/%d/fd/%s" % (self.h.pid, n)) == "socket:[%s]" % inode]
            self.assertEqual(len(fds), 1, "herald holds the accepted socket once")
            libc = ctypes.CDLL(None, use_errno=True)
            pidfd = os.pidfd_open(self.h.pid)
            try:
                fd = libc.syscall(438, pidfd, fds[0], 0)  # SYS_pidfd_getfd
                self.assertGreaterEqual(fd, 0, os.strerror(ctypes.get_errno()))
            finally:
                os.close(pidfd)
            s = socket.socket(fileno=fd)
            try:
                self.assertEqual(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
            finally:
                s.detach()
                os.close(fd)
            self.assertOk(c.request("GET", "/healthz"))  # herald's socket is untouched

    def test_keepalive_several_requests(self):
        with Client(self.h.port) as c:
            for i in range(10):
                r = c.request("GET", "/healthz" if i % 2 == 0 else "/nope%d" % i)
                if i % 2 == 0:
                    self.assertOk(r)
                else:
                    self.assertStatus(r, 404)
                    self.assertEqual(int(r.header("Content-Length")), len(r.body))
                self.assertIsNone(r.header("Connection"))
            self.assertTrue(c.is_open(0.3))

    def test_pipelining_mixed_in_order(self):
        paths = ["/healthz", "/a", "/healthz", "/healthz?x=1", "/b/c", "/healthz", "/", "/healthzz"]
        with Client(self.h.port) as c:
            c.send(b"".join(build_request("GET", p) for p in paths))
            for p in paths:
                r = c.read_response()
                if p.split("?")[0] == "/healthz":
                    self.assertOk(r)
                else:
                    self.assertStatus(r, 404)
                    self.assertEqual(r.body, b'{"error":"not found","status":404}')
            self.assertEqual(c.buf, b"")
            self.assertOk(c.request())

    def test_pipelining_50_requests(self):
        n = 50
        reqs = []
        for i in range(n):
            if i % 5 == 4:
                reqs.append(build_request("HEAD", "/healthz"))
            elif i % 3 == 0:
                reqs.append(build_request("GET", "/missing/%d" % i))
            else:
                reqs.append(build_request("GET", "/healthz"))
        with Client(self.h.port) as c:
            c.send(b"".join(reqs))
            for i in range(n):
                if i % 5 == 4:
                    r = c.read_response(head=True)
                    self.assertStatus(r, 200)
                    self.assertEqual(r.header("Content-Length"), str(len(OK_BODY)))
                elif i % 3 == 0:
                    r = c.read_response()
                    self.assertStatus(r, 404)
                else:
                    self.assertOk(c.read_response())
            self.assertTrue(c.is_open(0.3))
            self.assertEqual(c.buf, b"", "bytes after the 50th response")

    def test_pipelining_split_across_writes(self):
        data = b"".join(build_request("GET", p) for p in ["/healthz", "/x", "/healthz"])
        with Client(self.h.port) as c:
            for i in range(0, len(data), 7):
                c.send(data[i:i + 7])
                time.sleep(0.002)
            self.assertOk(c.read_response())
            self.assertStatus(c.read_response(), 404)
            self.assertOk(c.read_response())

    def test_half_close_after_pipelining(self):
        # A client that sends its requests then shuts down its write side (printf | nc) still
        # gets every response, then the server closes at once (no linger: the peer is gone).
        for n in (1, 3, 500):
            with self.subTest(n=n), Client(self.h.port) as c:
                c.send(build_request() * n)
                c.sock.shutdown(socket.SHUT_WR)
                time.sleep(0.1)
                for _ in range(n):
                    self.assertOk(c.read_response())
                self.assertLess(c.wait_closed(timeout=3), 1.0)

    def test_large_backlog_then_close_slow_reader(self):
        # 30000 pipelined requests (5 MB of responses, more than the kernel buffers between us);
        # the server answers them all while we do not read, then we half-close and start
        # reading 2.5 s later. Every response was queued before the close, so all must arrive:
        # nginx gives a slow reader send_timeout (60 s) between writes, whereas herald's finish
        # timer allows 2 s for the whole drain.
        n = 30000
        h = self.start_herald(conf={"keepalive_requests": "100000"})
        with Client(h.port, timeout=20) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
            c.send(build_request() * n)
            time.sleep(1.0)  # the server parses and answers everything meanwhile
            c.sock.shutdown(socket.SHUT_WR)
            time.sleep(2.5)
            got = 0
            try:
                for _ in range(n):
                    c.read_response(timeout=5)
                    got += 1
            except hh.ConnectionClosed:
                pass
            self.assertEqual(got, n, "responses lost when the connection finished")

    def test_http10_without_keepalive(self):
        with Client(self.h.port) as c:
            r = c.request("GET", "/healthz", version="1.0")
            self.assertOk(r)
            self.assertEqual(r.header("Connection"), "close")
            c.wait_closed(timeout=3)

    def test_http10_with_keepalive(self):
        with Client(self.h.port) as c:
            for _ in range(3):
                r = c.request("GET", "/healthz", headers={"Connection": "keep-alive"},
                              version="1.0")
                self.assertOk(r)
                self.assertEqual(r.header("Connection"), "keep-alive")
            self.assertTrue(c.is_open(0.3))

    def test_http11_connection_close(self):
        with Client(self.h.port) as c:
            c.send(build_request("GET", "/healthz", {"Connection": "close"}) +
                   build_request("GET", "/healthz"))
            r = c.read_response()
            self.assertOk(r)
            self.assertEqual(r.header("Connection"), "close")
            c.wait_closed(timeout=3)  # the pipelined second request is not answered

    def test_head(self):
        with Client(self.h.port) as c:
            r = c.request("HEAD", "/healthz")
            self.assertStatus(r, 200)
            self.assertEqual(r.header("Content-Length"), str(len(OK_BODY)))
            self.assertEqual(r.header("Content-Type"), "application/json")
            # No body may follow: the next response must start right after the head.
            r = c.request("HEAD", "/nothing-here")
            self.assertStatus(r, 404)
            self.assertGreater(int(r.header("Content-Length")), 0)
            self.assertOk(c.request("GET", "/healthz"))
            self.assertEqual(c.buf, b"")

    def test_post_fixed_length_body_405(self):
        with Client(self.h.port) as c:
            body = b"x" * 700
            r = c.request("POST", "/healthz", body=body)
            self.assertStatus(r, 405)
            self.assertEqual(r.header("Allow"), "GET, HEAD")
            self.assertEqual(r.body, b'{"error":"method not allowed","status":405}')
            self.assertIsNone(r.header("Connection"))
            # The body was consumed as body: the next request on the socket is parsed cleanly.
            self.assertOk(c.request())

    def test_post_chunked_body_405(self):
        with Client(self.h.port) as c:
            body = chunked("hello ", "GET /evil HTTP/1.1\r\n\r\n", "x" * 300)
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}, body))
            r = c.read_response()
            self.assertStatus(r, 405)
            self.assertEqual(r.header("Allow"), "GET, HEAD")
            self.assertOk(c.request())
            self.assertEqual(c.buf, b"")

    def test_post_chunked_body_in_pieces_with_trailer(self):
        with Client(self.h.port) as c:
            body = chunked("a" * 10, "b" * 20, trailer=b"X-Trailer: yes\r\n")
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}))
            for i in range(0, len(body), 5):
                c.send(body[i:i + 5])
                time.sleep(0.002)
            self.assertStatus(c.read_response(), 405)
            self.assertOk(c.request())

    def test_other_methods_405_with_allow(self):
        with Client(self.h.port) as c:
            for m in ("PUT", "DELETE", "OPTIONS", "PATCH"):
                r = c.request(m, "/healthz")
                self.assertStatus(r, 405)
                self.assertEqual(r.header("Allow"), "GET, HEAD")
            self.assertOk(c.request())

    def test_unknown_path_404(self):
        with Client(self.h.port) as c:
            for p in ("/", "/healthz/", "/HEALTHZ", "/healthz/x", "/%00"):
                r = c.request("GET", p)
                self.assertStatus(r, 404)
                self.assertCommonHeaders(r)
                self.assertEqual(r.header("Content-Length"), str(len(r.body)))
            self.assertTrue(c.is_open(0.2))

    def test_expect_100_continue(self):
        with Client(self.h.port) as c:
            body = b"y" * 100
            c.send(build_request("POST", "/healthz", {"Expect": "100-continue",
                                                      "Content-Length": str(len(body))}))
            r = c.read_response(timeout=2)
            self.assertStatus(r, 100)
            self.assertEqual(r.raw_head, b"HTTP/1.1 100 Continue")
            c.send(body)
            r = c.read_response()
            self.assertStatus(r, 405)
            self.assertOk(c.request())

    def test_expect_100_continue_body_too_large(self):
        # Like nginx: a declared length over the limit is refused at once, without 100.
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Expect": "100-continue",
                                                      "Content-Length": "5000"}))
            self.assertErrorClose(c, 413)
        self.assertHealthy(self.h.port)

    def test_expect_unknown_417(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Expect": "something-else",
                                                      "Content-Length": "3"}, b"abc"))
            self.assertErrorClose(c, 417)
        self.assertHealthy(self.h.port)

    def test_curl_healthz(self):
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "-D", "-",
             "http://127.0.0.1:%d/healthz" % self.h.port],
            capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout.decode()
        self.assertRegex(text, r"^HTTP/1.1 200 OK\r\n")
        self.assertIn("\r\nContent-Length: 15\r\n", text)
        self.assertTrue(text.endswith('\r\n\r\n{"status":"ok"}'), text)

    def test_curl_keepalive_reuses_connection(self):
        url = "http://127.0.0.1:%d/healthz" % self.h.port
        out = subprocess.run(["curl", "-sS", "-v", "--max-time", "5", url, url, url],
                             capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, OK_BODY * 3)
        self.assertEqual(out.stderr.count(b"Re-using existing connection"), 2, out.stderr)


class TestLimits(HttpTestCase):
    """Each limit answers its status, closes the connection, and leaves the server serving."""

    def setUp(self):
        self.h = self.start_herald(conf=LIMITS)

    def tearDown(self):
        self.assertHealthy(self.h.port, msg="server no longer answers /healthz after bad input")

    def test_url_within_limit_404(self):
        with Client(self.h.port) as c:
            r = c.request("GET", "/" + "a" * 900)
            self.assertStatus(r, 404)
            self.assertTrue(c.is_open(0.2))

    def test_url_too_long_414(self):
        with Client(self.h.port) as c:
            c.send(build_request("GET", "/" + "a" * 1100))
            self.assertErrorClose(c, 414)

    def test_url_too_long_trickled_414(self):
        with Client(self.h.port) as c:
            c.send(b"GET /")
            for _ in range(12):
                c.send(b"b" * 100)
                time.sleep(0.005)
            self.assertErrorClose(c, 414)

    def test_url_far_too_long_414(self):
        with Client(self.h.port) as c:
            try:
                c.send(b"GET /" + b"c" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertErrorClose(c, 414)

    def test_header_within_limit(self):
        with Client(self.h.port) as c:
            self.assertOk(c.request(headers={"X-Fill": "v" * 800}))

    def test_header_too_large_431(self):
        with Client(self.h.port) as c:
            c.send(build_request("GET", "/healthz", {"X-Fill": "v" * 1200}))
            self.assertErrorClose(c, 431)

    def test_many_headers_too_large_431(self):
        with Client(self.h.port) as c:
            c.send(build_request("GET", "/healthz", [("X-H%d" % i, "v" * 20) for i in range(60)]))
            self.assertErrorClose(c, 431)

    def test_too_many_headers_431(self):
        # 120 tiny headers stay under max_header_size; herald keeps at most 100 headers.
        h = self.start_herald(conf={"max_header_size": "4k"})
        with Client(h.port) as c:
            self.assertOk(c.request(headers=[("h%d" % i, "v") for i in range(90)]))
            c.send(build_request("GET", "/healthz", [("h%d" % i, "v") for i in range(120)]))
            self.assertErrorClose(c, 431)
        self.assertHealthy(h.port)

    def test_body_at_limit_accepted(self):
        with Client(self.h.port) as c:
            self.assertStatus(c.request("POST", "/healthz", body=b"z" * 1024), 405)
            self.assertOk(c.request())

    def test_body_content_length_too_large_413(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Content-Length": "1025"}))
            self.assertErrorClose(c, 413)

    def test_body_content_length_huge_413(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Content-Length": "99999999999"}))
            self.assertErrorClose(c, 413)

    def test_body_chunked_too_large_413(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}))
            r = None
            try:
                for _ in range(10):  # 5000 bytes in 500-byte chunks, past 1k on the 3rd
                    c.send(b"1f4\r\n" + b"q" * 500 + b"\r\n")
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertErrorClose(c, 413, r)

    def test_content_length_and_transfer_encoding_400(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", [("Content-Length", "5"),
                                                      ("Transfer-Encoding", "chunked")],
                                 chunked("hello")))
            self.assertErrorClose(c, 400)

    def test_transfer_encoding_then_content_length_400(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", [("Transfer-Encoding", "chunked"),
                                                      ("Content-Length", "5")],
                                 chunked("hello")))
            self.assertErrorClose(c, 400)

    def test_conflicting_content_length_400(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", [("Content-Length", "3"),
                                                      ("Content-Length", "10")], b"abcdefghij"))
            self.assertErrorClose(c, 400)

    def test_content_length_list_400(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", [("Content-Length", "3, 10")], b"abcdefghij"))
            self.assertErrorClose(c, 400)

    def test_bad_content_length_400(self):
        for value in ("abc", "-1", "1 0", "+5"):
            with self.subTest(value=value), Client(self.h.port) as c:
                c.send(build_request("POST", "/healthz", [("Content-Length", value)], b"hello"))
                self.assertErrorClose(c, 400)

    def test_bad_chunk_size_400(self):
        with Client(self.h.port) as c:
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}) +
                   b"zz\r\nhello\r\n0\r\n\r\n")
            self.assertErrorClose(c, 400)

    def test_malformed_request_line_400(self):
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n",
            b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            # Header names are tokens: RFC 9112 5.1 requires 400 for whitespace before the
            # colon; nginx (1.21.1+) also refuses spaces inside a name and an empty name.
            b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n: novalue\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nX(y): z\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
            b"GET /he\x00lthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for data in cases:
            with self.subTest(data=data), Client(self.h.port) as c:
                c.send(data)
                self.assertErrorClose(c, 400)

    def test_binary_garbage_400(self):
        with Client(self.h.port) as c:
            c.send(bytes(range(256)) * 4)
            self.assertErrorClose(c, 400)

    def test_tls_client_hello_on_plain_port_400(self):
        hello = bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00" * 100
        with Client(self.h.port) as c:
            c.send(hello)
            self.assertErrorClose(c, 400)

    def test_bad_request_after_good_ones(self):
        with Client(self.h.port) as c:
            self.assertOk(c.request())
            c.send(b"\x16\x03\x01 nonsense\r\n\r\n")
            self.assertErrorClose(c, 400)

    def test_error_after_pipelined_good_requests(self):
        with Client(self.h.port) as c:
            c.send(build_request() + build_request("GET", "/x") + b"BROKEN LINE\r\n\r\n" +
                   build_request())
            self.assertOk(c.read_response())
            self.assertStatus(c.read_response(), 404)
            self.assertErrorClose(c, 400)


class TestTimeouts(HttpTestCase):
    def test_header_timeout(self):
        h = self.start_herald(conf={"header_timeout": "1s"})
        with Client(h.port) as c:
            t0 = time.monotonic()
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
            try:
                r = c.read_response(timeout=4)
            except hh.ConnectionClosed:
                r = None  # closing without an answer is acceptable too
            took = time.monotonic() - t0
            if r is not None:
                self.assertErrorClose(c, 408, r)
            self.assertGreater(took, 0.8, "closed before header_timeout")
            self.assertLess(took, 2.0, "not closed within header_timeout")
        self.assertHealthy(h.port)

    def test_idle_connection_without_request_closed(self):
        h = self.start_herald(conf={"header_timeout": "1s"})
        with Client(h.port) as c:
            took = c.wait_closed(timeout=4)
            self.assertGreater(took, 0.8)
            self.assertLess(took, 2.0)

    def test_slowloris_closed_while_others_served(self):
        h = self.start_herald(conf={"header_timeout": "1s"}, workers=1)
        slow = Client(h.port)
        self.addCleanup(slow.close)
        data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        # The slow client's fate, seen by a thread of its own while the test serves another
        # client: the answer it got and when the connection ended (seconds after t0).
        state = {"closed_at": None, "sent": 0, "answer": None, "error": None}
        t0 = time.monotonic()

        def trickle():
            for i in range(len(data)):
                if state["closed_at"] is not None:
                    break
                try:
                    slow.sock.sendall(data[i:i + 1])
                    state["sent"] += 1
                except OSError:
                    break
                time.sleep(0.2)

        def watch():
            try:
                state["answer"] = slow.read_response(timeout=10)
                slow.wait_closed(timeout=10)
            except (hh.ConnectionClosed, hh.HeraldError, OSError) as e:
                state["error"] = e
            state["closed_at"] = time.monotonic() - t0

        sender = threading.Thread(target=trickle, daemon=True)
        watcher = threading.Thread(target=watch, daemon=True)
        sender.start()
        watcher.start()
        served = 0
        # Meanwhile another client is served promptly, again and again, on the same worker.
        with Client(h.port) as other:
            while time.monotonic() - t0 < 1.6:
                s = time.monotonic()
                self.assertOk(other.request(timeout=1))
                self.assertLess(time.monotonic() - s, 0.5, "a normal request waited on slowloris")
                served += 1
                time.sleep(0.05)
        self.assertGreater(served, 10)
        watcher.join(12)
        sender.join(5)
        self.assertIsNotNone(state["closed_at"], "slowloris client never closed")
        self.assertIsNone(state["error"], "slowloris client: %r" % state["error"])
        self.assertStatus(state["answer"], 408)
        self.assertEqual(state["answer"].header("Connection"), "close")
        self.assertGreater(state["closed_at"], 0.8, "closed before header_timeout")
        self.assertLess(state["closed_at"], 2.5, "slowloris client not closed by header_timeout")
        self.assertLess(state["sent"], 15, "the slow client kept sending far past header_timeout")
        self.assertHealthy(h.port)

    def test_body_timeout(self):
        h = self.start_herald(conf={"body_timeout": "1s", "header_timeout": "5s"})
        with Client(h.port) as c:
            c.send(build_request("POST", "/healthz", {"Content-Length": "100"}) + b"x" * 40)
            t0 = time.monotonic()
            try:
                r = c.read_response(timeout=4)
            except hh.ConnectionClosed:
                self.fail("closed without the 408 answer")
            took = time.monotonic() - t0
            self.assertErrorClose(c, 408, r)
            self.assertGreater(took, 0.8)
            self.assertLess(took, 2.0)
        self.assertHealthy(h.port)

    def test_body_timeout_chunked(self):
        h = self.start_herald(conf={"body_timeout": "1s"})
        with Client(h.port) as c:
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}) +
                   b"5\r\nhello\r\n")
            t0 = time.monotonic()
            r = c.read_response(timeout=4)
            self.assertErrorClose(c, 408, r)
            self.assertLess(time.monotonic() - t0, 2.0)
        self.assertHealthy(h.port)

    def test_body_timeout_is_a_total_deadline(self):
        # body_timeout bounds the whole body, like header_timeout the head: a client trickling
        # a byte now and then is cut off when it runs out, not held for as long as it trickles.
        h = self.start_herald(conf={"body_timeout": "1s", "header_timeout": "5s"})
        with Client(h.port) as c:
            c.send(build_request("POST", "/healthz", {"Content-Length": "20"}))
            t0 = time.monotonic()
            r = None
            for _ in range(12):  # 3.6 s of steady progress if the server let it go on
                time.sleep(0.3)
                try:
                    c.send(b"x")
                except OSError:
                    break
                if not c.is_open(0.01) or c.buf:
                    break
            r = c.read_response(timeout=4)
            self.assertErrorClose(c, 408, r)
            self.assertIn(b"body timeout", r.body)
            self.assertLess(time.monotonic() - t0, 2.5)
        self.assertHealthy(h.port)

    def test_body_timeout_chunked_trickle(self):
        h = self.start_herald(conf={"body_timeout": "1s"})
        with Client(h.port) as c:
            c.send(build_request("POST", "/healthz", {"Transfer-Encoding": "chunked"}))
            t0 = time.monotonic()
            for _ in range(12):
                time.sleep(0.3)
                try:
                    c.send(b"1\r\nx\r\n")
                except OSError:
                    break
                if not c.is_open(0.01) or c.buf:
                    break
            self.assertErrorClose(c, 408, c.read_response(timeout=4))
            self.assertLess(time.monotonic() - t0, 2.5)

    def test_body_within_deadline_served(self):
        h = self.start_herald(conf={"body_timeout": "2s"})
        with Client(h.port) as c:
            c.send(build_request("POST", "/healthz", {"Content-Length": "5"}))
            for _ in range(5):  # 0.75 s in all, well within the deadline
                time.sleep(0.15)
                c.send(b"x")
            self.assertStatus(c.read_response(), 405)
            self.assertTrue(c.is_open(0.2))

    def test_keepalive_timeout(self):
        h = self.start_herald(conf={"keepalive_timeout": "1s", "header_timeout": "5s"})
        with Client(h.port) as c:
            self.assertOk(c.request())
            took = c.wait_closed(timeout=4)
            self.assertGreater(took, 0.8, "idle keep-alive closed too early")
            self.assertLess(took, 2.0, "idle keep-alive not closed within keepalive_timeout")

    def test_keepalive_timer_restarts_per_request(self):
        h = self.start_herald(conf={"keepalive_timeout": "1s", "header_timeout": "5s"})
        with Client(h.port) as c:
            for _ in range(3):
                self.assertOk(c.request())
                time.sleep(0.6)  # 1.8 s in all: longer than the timeout, never idle that long
            self.assertOk(c.request())

    def test_keepalive_requests(self):
        h = self.start_herald(conf={"keepalive_requests": "3"})
        with Client(h.port) as c:
            for i in range(3):
                r = c.request()
                self.assertOk(r)
                self.assertEqual(r.header("Connection"), "close" if i == 2 else None)
            c.wait_closed(timeout=3)

    def test_keepalive_requests_pipelined(self):
        h = self.start_herald(conf={"keepalive_requests": "3"})
        with Client(h.port) as c:
            c.send(build_request() * 6)
            for i in range(3):
                r = c.read_response()
                self.assertOk(r)
            self.assertEqual(r.header("Connection"), "close")
            c.wait_closed(timeout=3)
        self.assertHealthy(h.port)


class TestConformance(HttpTestCase):
    """RFC 9110 / 9112 rules a server must keep: Host, request targets, methods, versions."""

    def setUp(self):
        self.h = self.start_herald(conf=LIMITS)

    def assertRefused(self, data, status, message):
        with Client(self.h.port) as c:
            c.send(data)
            r = self.assertErrorClose(c, status)
            self.assertIn(message.encode(), r.body)

    def test_missing_host_400(self):
        self.assertRefused(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "missing Host header")
        self.assertRefused(b"GET /healthz HTTP/1.1\r\nX-Host: a\r\n\r\n", 400,
                           "missing Host header")
        self.assertHealthy(self.h.port)

    def test_http10_without_host_allowed(self):
        with Client(self.h.port) as c:
            c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
            self.assertOk(c.read_response())

    def test_two_host_lines_400(self):
        for hosts in (("a", "a"), ("a", "b"), ("127.0.0.1", "")):
            with self.subTest(hosts=hosts):
                self.assertRefused(build_request("GET", "/healthz", [("Host", v) for v in hosts]),
                                   400, "more than one Host header")
        self.assertRefused(b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400,
                           "more than one Host header")

    def test_invalid_host_400(self):
        for value in ("a b", "user@example.com", "example.com/x", "a:80x", "[::1", "[]",
                      "a\"b", "100%", "a:b:c", "a<b>"):
            with self.subTest(value=value):
                self.assertRefused(build_request("GET", "/healthz", {"Host": value}), 400,
                                   "invalid Host header")

    def test_valid_hosts_served(self):
        with Client(self.h.port) as c:
            for value in ("example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80",
                          "[2001:db8::7]", "xn--bcher-kva.example", "a%20b", "", "ex_am-ple.~"):
                with self.subTest(value=value):
                    self.assertOk(c.request("GET", "/healthz", {"Host": value}))

    def test_websocket_handshake_host_checked(self):
        upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                   ("Sec-WebSocket-Version", "13")]
        head = b"GET /ws/room HTTP/1.1\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode())
                                                        for k, v in upgrade)
        self.assertRefused(head + b"\r\n", 400, "missing Host header")
        self.assertRefused(head + b"Host: a\r\nHost: b\r\n\r\n", 400, "more than one Host")
        self.assertRefused(head + b"Host: a b\r\n\r\n", 400, "invalid Host header")
        with Client(self.h.port) as c:
            c.send(head + b"Host: 127.0.0.1\r\n\r\n")
            r = c.read_response(head=True)
            self.assertStatus(r, 101)

    def test_absolute_form_served_as_path(self):
        with Client(self.h.port) as c:
            for target in ("http://127.0.0.1/healthz", "HTTP://example.com:8080/healthz",
                           "https://example.com/healthz?x=1"):
                with self.subTest(target=target):
                    self.assertOk(c.request("GET", target))
            r = c.request("GET", "http://example.com")
            self.assertStatus(r, 404)  # the path "/"
            self.assertTrue(c.is_open(0.2))
        with Client(self.h.port) as c:
            c.send(build_request("GET", "http://example.com/sse/news"))
            r = c.read_response(head=True)
            self.assertStatus(r, 200)
            self.assertTrue(r.header("Content-Type").startswith("text/event-stream"))

    def test_absolute_form_bad_authority_or_scheme_400(self):
        self.assertRefused(build_request("GET", "http://u@h/healthz"), 400, "invalid authority")
        self.assertRefused(build_request("GET", "http:///healthz"), 400, "invalid authority")
        self.assertRefused(build_request("GET", "ftp://h/healthz"), 400, "only http and https")

    def test_unknown_method_501(self):
        for method in ("BREW", "PROPFIND", "TRACE", "X-CUSTOM"):
            with self.subTest(method=method), Client(self.h.port) as c:
                r = c.request(method, "/healthz")
                self.assertStatus(r, 501)
                self.assertIsNone(r.header("Allow"))
                self.assertIn(b"method not implemented", r.body)
        self.assertRefused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
                           501, "method not implemented")

    def test_known_method_on_wrong_path_still_405(self):
        with Client(self.h.port) as c:
            r = c.request("PUT", "/healthz")
            self.assertStatus(r, 405)
            self.assertEqual(r.header("Allow"), "GET, HEAD")
            self.assertOk(c.request())

    def test_garbage_method_still_400(self):
        for data in (b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"BROKEN LINE\r\n\r\n",
                     b"BREW /x HTTP/1.1 more\r\n\r\n"):
            with self.subTest(data=data), Client(self.h.port) as c:
                c.send(data)
                self.assertErrorClose(c, 400)

    def test_chunk_extensions_ignored(self):
        # RFC 9112 7.1.1: extensions on any chunk, several per chunk, whitespace around ';' and
        # '=', quoted values with quoted pairs; the data is what the chunks carry.
        forms = [b"5;name=value", b"5;name", b"5 ; a = b ; c", b'5;q="a \\"quoted\\" value"',
                 b"5;a=b;c=d;e=f", b"5\t;\tx=1"]
        with Client(self.h.port) as c:
            for i, ext in enumerate(forms):
                with self.subTest(ext=ext):
                    body = (ext + b"\r\nhello\r\n6;more=1\r\n world\r\n0;last=\"yes\"\r\n"
                            b"X-Trailer: t\r\n\r\n")
                    c.send(build_request("POST", "/pub/ext%d" % i,
                                         {"Transfer-Encoding": "chunked",
                                          "Content-Type": "text/plain"}) + body)
                    r = c.read_response()
                    self.assertStatus(r, 200)
                    p = c.request("GET", "/poll/ext%d" % i)
                    self.assertStatus(p, 200)
                    self.assertEqual(json.loads(p.body)["messages"][0]["data"], "hello world")

    def test_bad_chunk_extension_400(self):
        for ext in (b"5;", b"5;=v", b'5;a="open', b"5;a b", b"5;a=\x01"):
            with self.subTest(ext=ext), Client(self.h.port) as c:
                c.send(build_request("POST", "/pub/x", {"Transfer-Encoding": "chunked"}) +
                       ext + b"\r\nhello\r\n0\r\n\r\n")
                r = self.assertErrorClose(c, 400)
                self.assertIn(b"chunk extension", r.body)

    def test_other_major_version_505(self):
        for version in ("2.0", "3.0", "0.9", "9.9"):
            with self.subTest(version=version):
                self.assertRefused(build_request("GET", "/healthz", {"Host": "a"},
                                                 version=version),
                                   505, "HTTP version not supported")

    def test_higher_minor_version_served_as_11(self):
        # RFC 9110 2.5: a higher minor version of a major version we speak is served as ours.
        with Client(self.h.port) as c:
            self.assertOk(c.request("GET", "/healthz", {"Host": "a"}, version="1.2"))
            self.assertOk(c.request())


class TestManyClients(HttpTestCase):
    def test_concurrent_clients_from_many_addresses(self):
        h = self.start_herald()
        errors = []

        def worker(k):
            try:
                with Client(h.port, spread=True) as c:
                    for _ in range(5):
                        r = c.request()
                        if r.status != 200 or r.body != OK_BODY:
                            errors.append(repr(r))
            except Exception as e:  # noqa: BLE001
                errors.append("%d: %r" % (k, e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])


if __name__ == "__main__":
    hh.main()
