# SPDX-License-Identifier: MIT
"""Ticket flood: POST /auth/ticket as fast as four keep-alive connections can send it, each
request asking for the largest ticket there may be (16 KiB of grants), must not grow the node
without bound (docs/auth.md, "Tickets": auth_max_tickets and a sixteenth of max_memory).

The attacker holds the backend's key (a leaked key, or a backend gone wrong): past the bound the
requests are answered 503 with Retry-After, RSS stays within 64 MB, a subscriber on a channel
keeps receiving and a poll and /healthz are answered meanwhile. Tickets used make room again,
and a second flood costs no more memory than the first (the store reuses what it gave back).
"""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402

KEY = "backend-key-0123456789"
# grants of 2 x 60 patterns of 128 bytes: about 15.7 KB of claims, under the 16 KiB a ticket
# may hold
BIG = json.dumps({"sub": "flood", "ttl": 60, "channels": {
    "subscribe": ["s%0126d*" % i for i in range(60)],
    "publish": ["p%0126d*" % i for i in range(60)]}})
PER_THREAD = 400
THREADS = 4


class TicketFlood(AbuseTestCase):
    def flood(self, port, seconds=40):
        """THREADS x PER_THREAD requests (at most `seconds`): the count of each status, and the
        tickets issued."""
        counts = {}
        tickets = []
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def one():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                for _ in range(PER_THREAD):
                    if time.monotonic() > deadline:
                        break
                    conn.request("POST", "/auth/ticket", BIG, {
                        "Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
                    r = conn.getresponse()
                    body = r.read()
                    if r.status == 503:
                        assert r.getheader("Retry-After"), "503 without Retry-After"
                        assert b"auth_max_tickets" in body, body
                    with lock:
                        counts[r.status] = counts.get(r.status, 0) + 1
                        if r.status == 201:
                            tickets.append(json.loads(body)["ticket"])
            finally:
                conn.close()
        ths = [threading.Thread(target=one) for _ in range(THREADS)]
        for t in ths:
            t.start()
        return ths, counts, tickets

    def test_flood_is_bounded(self):
        h = self.start_herald(conf_raw=hh.conf_text(dict(hh.DEFAULT_CONF, **{
            "publish_key": KEY, "max_memory": "32m", "auth_max_tickets": "100000",
            "max_body_size": "64k"})) + "channel_rule * subscribe=any\n")
        port = h.port
        sub = hh.SseStream(port, "/sse/live")
        self.addCleanup(sub.close)
        self.assertEqual(sub.status, 200)
        hh.publish(port, "hot", "h1", headers={"Authorization": "Bearer " + KEY})
        sampler = RssSampler(h)

        ths, counts, tickets = self.flood(port)
        served = 0
        while any(t.is_alive() for t in ths):  # the others, during the flood
            sampler.sample()
            hh.publish(port, "live", "during-%d" % served,
                       headers={"Authorization": "Bearer " + KEY})
            self.assertEqual(sub.next_event().data, ["during-%d" % served])
            st, body, _ = hh.get_json(port, "/poll/hot?since=0-0")
            self.assertEqual((st, [m["data"] for m in body["messages"]]), (200, ["h1"]))
            self.assertServed(port)
            served += 1
            time.sleep(0.1)
        for t in ths:
            t.join()
        sampler.sample()
        first = sampler.growth()
        # max_memory 32m: the store holds 2 MB of tickets, about 120 of these; the rest 503
        print("ticket flood: %r; served %d rounds meanwhile; RSS +%.1f MB (peak), base %.1f MB"
              % (counts, served, first / MB, sampler.base / MB))
        self.assertEqual(set(counts), {201, 503}, counts)
        self.assertLess(counts[201], 200, counts)
        self.assertGreater(counts[503], 1000, counts)
        self.assertGreater(served, 0)
        self.assertRssBounded(sampler, 64 * MB, "a flood of the largest tickets")
        st = hh.stats(port)["tickets"]
        self.assertEqual((st["issued"], st["refused_full"]), (counts[201], counts[503]), st)

        # used: room again (each spent once), and a second flood costs no more
        for t in tickets:
            self.assertEqual(hh.request(port, "GET", "/poll/hot?ticket=" + t)[0], 200)
        ths, counts2, _ = self.flood(port)
        for t in ths:
            t.join()
        sampler.sample()
        print("second flood: %r; RSS +%.1f MB (peak)" % (counts2, sampler.growth() / MB))
        self.assertEqual(set(counts2), {201, 503}, counts2)
        self.assertLess(counts2[201], 200, counts2)
        self.assertRssBounded(sampler, 64 * MB, "a second flood")
        self.assertLess(sampler.growth(), first + 16 * MB, "the second flood grew the node more")
        self.assertServed(port)


if __name__ == "__main__":
    hh.main()
