# SPDX-License-Identifier: MIT
"""Abuse: clients that ask for large answers and never read them.

Found against herald 0.1 (issue 8): one connection pipelining 1,800 bytes of
`GET /poll/{ch}?since=<old id>` and never reading grew RSS by 890 MB in 8 s; 30 connections with
one such request each +687 MB; pipelined /metrics 31 MB per connection. What holds now: the next
pipelined request is parsed only while less than 64 KiB of responses wait (the connection is not
read meanwhile), a poll answer is at most max_response_size, and one poll answer is shared by
every client asking for the same history while any of them is still being written to.

Each attack runs a few seconds, then: RSS grew by less than 64 MB, a fresh client is served and
an SSE subscriber on another channel still receives.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402

# Each message is 40,000 control characters: 240,000 bytes once JSON-escaped ("\u0001"), so a
# poll of the 100 in history was a 24 MB answer.
N_MESSAGES = 100
PAYLOAD = "\x01" * 40000
CONF = {
    "history_size": "200",
    "history_max_bytes": "64m",
    "max_memory": "256m",
    "poll_max_messages": "100",
    "keepalive_timeout": "30s",
}
BOUND = 64 * MB
ATTACK_SECONDS = 3.0


def attacker(port, data):
    """A socket that sends data and never reads (a small receive buffer keeps the answers in
    the server rather than in the kernel)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((hh.next_source_ip(), 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    return s


def poll_request(channel, since):
    return hh.build_request("GET", "/poll/%s?since=%s" % (channel, since))


class PipeliningAbuse(AbuseTestCase):
    def setUp(self):
        self.h = self.start_herald(conf=CONF)
        pub = hh.Publisher(self.h.port)
        self.addCleanup(pub.close)
        self.first = pub("big", "x")
        for _ in range(N_MESSAGES):
            pub("big", PAYLOAD)
        self.pub = pub
        self.live = hh.SseStream(self.h.port, "/sse/other")
        self.addCleanup(self.live.close)
        self.assertEqual(self.live.status, 200)
        self.sockets = []
        self.addCleanup(self.close_attackers)

    def close_attackers(self):
        for s in self.sockets:
            s.close()
        self.sockets = []

    def assertOthersServed(self, what):
        self.assertServed(self.h.port, msg="%s: /healthz not served" % what)
        mid = self.pub("other", "still here")
        ev = self.live.next_event(timeout=3)
        self.assertEqual(ev.id, mid, "%s: the live subscriber did not receive" % what)

    def mount(self, what, make_sockets):
        rss = RssSampler(self.h)
        self.sockets = make_sockets()
        rss.watch(ATTACK_SECONDS)
        self.assertRssBounded(rss, BOUND, what)
        self.assertOthersServed(what)
        return rss

    def test_pipelined_polls_never_read(self):
        req = poll_request("big", self.first)
        data = req * (1800 // len(req) + 1)
        self.mount("1,800 bytes of pipelined polls, never read",
                   lambda: [attacker(self.h.port, data)])

    def test_many_connections_one_poll_each(self):
        req = poll_request("big", self.first)
        self.mount("30 connections with one poll each, never read",
                   lambda: [attacker(self.h.port, req) for _ in range(30)])

    def test_many_connections_different_since(self):
        # Different cursors cannot share one answer; each is bounded by max_response_size.
        ids = [m["id"] for m in hh.get_json(self.h.port, "/poll/big?since=%s" %
                                            self.first)[1]["messages"]]
        self.mount("30 connections polling from different ids, never read",
                   lambda: [attacker(self.h.port, poll_request("big", ids[i % len(ids)]))
                            for i in range(30)])

    def test_pipelined_metrics_never_read(self):
        req = hh.build_request("GET", "/metrics")
        data = req * (64 * 1024 // len(req))
        self.mount("64 KiB of pipelined /metrics on 10 connections, never read",
                   lambda: [attacker(self.h.port, data) for _ in range(10)])

    def test_pipelined_answers_arrive_in_order_once_read(self):
        # Backpressure delays pipelined requests; it loses none: a client that reads late
        # still gets every answer, in order.
        c = hh.Client(self.h.port)
        self.addCleanup(c.close)
        reqs = [hh.build_request("GET", "/poll/big?since=%s" % self.first),
                hh.build_request("GET", "/healthz")] * 5
        c.send(b"".join(reqs))
        time.sleep(0.5)
        for i in range(len(reqs)):
            r = c.read_response(timeout=10)
            self.assertStatus(r, 200)
            if i % 2 == 0:
                self.assertEqual(json.loads(r.body)["channel"], "big")
            else:
                self.assertEqual(r.body, b'{"status":"ok"}')


class ResponseCap(AbuseTestCase):
    """One answer is bounded whatever the history settings (a poll of 10,000 large messages
    needed one allocation past 4 GB and aborted the process): it carries fewer messages, and
    `next` pages through the rest without loss."""

    def test_poll_answer_bounded_and_pages_without_loss(self):
        h = self.start_herald(conf={"history_size": "10000", "history_max_bytes": "64m",
                                    "poll_max_messages": "10000", "max_response_size": "64k"})
        pub = hh.Publisher(h.port)
        self.addCleanup(pub.close)
        first = pub("deep", "start")
        sent = [pub("deep", "\x02" * 3000 + str(i)) for i in range(60)]  # ~18 KB each in JSON
        got, since, answers = [], first, 0
        while len(got) < len(sent) and answers < 100:
            status, _, body = hh.request(h.port, "GET", "/poll/deep?since=%s" % since)
            self.assertEqual(status, 200)
            self.assertLessEqual(len(body), 64 * 1024 + 20000, "answer over max_response_size")
            doc = json.loads(body)
            self.assertGreaterEqual(len(doc["messages"]), 1)
            self.assertFalse(doc["gap"])
            got += [m["id"] for m in doc["messages"]]
            self.assertEqual(doc["next"], got[-1])
            since = doc["next"]
            answers += 1
        self.assertEqual(got, sent)
        self.assertGreater(answers, 10, "the answers were not split")

    def test_one_message_larger_than_the_cap_still_delivered(self):
        h = self.start_herald(conf={"max_response_size": "64k", "max_message_size": "1m",
                                    "max_body_size": "1m"})
        first = hh.publish(h.port, "huge", "start")
        big = hh.publish(h.port, "huge", "y" * 200000)
        after = hh.publish(h.port, "huge", "small")
        status, _, body = hh.request(h.port, "GET", "/poll/huge?since=%s" % first)
        doc = json.loads(body)
        self.assertEqual([m["id"] for m in doc["messages"]], [big])
        self.assertEqual(len(doc["messages"][0]["data"]), 200000)
        status, _, body = hh.request(h.port, "GET", "/poll/huge?since=%s" % big)
        self.assertEqual([m["id"] for m in json.loads(body)["messages"]], [after])


if __name__ == "__main__":
    hh.main()
