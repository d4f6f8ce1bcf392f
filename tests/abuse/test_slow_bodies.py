# SPDX-License-Identifier: MIT
"""Abuse: request bodies sent a byte at a time.

Found against herald 0.1 (issue 8): body_timeout was re-armed on every chunk, so a client
sending one byte every 29 s held a connection (and its body buffer) for hours. body_timeout is
now a deadline for the whole body, set when the head is complete, like header_timeout for the
head: a trickling client gets 408 and the connection is closed when it runs out.

Small timeouts keep each attack short: many connections trickle for longer than body_timeout,
then every one of them must have been answered 408 and closed, memory stayed bounded, and other
clients (a fresh request, a live SSE subscriber) were served throughout.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402

BODY_TIMEOUT_S = 1.0
CONF = {"body_timeout": "1s", "header_timeout": "5s", "keepalive_timeout": "30s",
        "max_body_size": "1m"}
N_CONNS = 40
TRICKLE_S = 3.0  # three times body_timeout
STEP_S = 0.2


def open_trickler(port, head):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((hh.next_source_ip(), 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(head)
    s.setblocking(False)
    return s


def poll_answer(s, got):
    """Reads what the server sent without blocking; True once it closed the connection."""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
            got.extend(chunk)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class SlowBodies(AbuseTestCase):
    def setUp(self):
        self.h = self.start_herald(conf=CONF)
        self.live = hh.SseStream(self.h.port, "/sse/other")
        self.addCleanup(self.live.close)
        self.assertEqual(self.live.status, 200)
        self.pub = hh.Publisher(self.h.port)
        self.addCleanup(self.pub.close)

    def trickle(self, head, piece, what):
        rss = RssSampler(self.h)
        socks = [open_trickler(self.h.port, head) for _ in range(N_CONNS)]
        self.addCleanup(lambda: [s.close() for s in socks])
        answers = [bytearray() for _ in socks]
        closed_after = [None] * N_CONNS
        t0 = time.monotonic()
        served = 0
        while time.monotonic() - t0 < TRICKLE_S:
            for i, s in enumerate(socks):
                if closed_after[i] is not None:
                    continue
                if poll_answer(s, answers[i]):
                    closed_after[i] = time.monotonic() - t0
                    continue
                try:
                    s.send(piece)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
            rss.sample()
            if served < 3 and time.monotonic() - t0 > served + 0.5:
                self.assertServed(self.h.port, msg="%s: /healthz not served" % what)
                mid = self.pub("other", "tick %d" % served)
                self.assertEqual(self.live.next_event(timeout=3).id, mid)
                served += 1
            time.sleep(STEP_S)
        for i in range(N_CONNS):
            # The trickle went on for three deadlines: each connection must have been cut
            # while its client was still sending, within body_timeout plus scheduling slack.
            self.assertIsNotNone(closed_after[i], "%s: connection %d still open after %.1f s "
                                 "of trickling (body_timeout %.1f s)" %
                                 (what, i, TRICKLE_S, BODY_TIMEOUT_S))
            self.assertLess(closed_after[i], BODY_TIMEOUT_S + 1.2)
            self.assertTrue(bytes(answers[i]).startswith(b"HTTP/1.1 408 "),
                            "%s: connection %d: %r" % (what, i, bytes(answers[i][:60])))
        self.assertRssBounded(rss, 64 * MB, what)
        self.assertServed(self.h.port)

    def test_content_length_body_one_byte_at_a_time(self):
        head = hh.build_request("POST", "/pub/slow", {"Content-Length": "100000",
                                                      "Content-Type": "text/plain"})
        self.trickle(head, b"x", "Content-Length body trickled")

    def test_chunked_body_one_chunk_at_a_time(self):
        head = hh.build_request("POST", "/pub/slow", {"Transfer-Encoding": "chunked",
                                                      "Content-Type": "text/plain"})
        self.trickle(head, b"1\r\nx\r\n", "chunked body trickled")

    def test_body_in_time_is_published(self):
        # The deadline is for slow bodies only: one that arrives within it is served.
        c = hh.Client(self.h.port)
        self.addCleanup(c.close)
        body = b"steady"
        c.send(hh.build_request("POST", "/pub/slow", {"Content-Length": str(len(body)),
                                                      "Content-Type": "text/plain"}))
        for b in body:
            time.sleep(0.1)
            c.send(bytes([b]))
        self.assertStatus(c.read_response(), 200)


if __name__ == "__main__":
    hh.main()
