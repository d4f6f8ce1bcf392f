# SPDX-License-Identifier: MIT
"""Wake-ups are batched: messages that reach a worker together leave in one write per
connection.

A batch publish (`POST /pub` with a JSON array) pushes every message of the batch into the
mailbox of each worker with subscribers in one critical section; the worker drains its whole
mailbox before it writes, so every subscriber connection gets all of them in one writev. The
count comes from `/stats` `per_worker[].writes` (output flushes: one writev per connection
per loop pass with output). Subscribers over SSE and `/ws/{channel}` on both workers receive
N messages published as one batch with a few writes per connection, not N; the same N
messages published one by one, apart, take at least N writes per connection (the trickle,
showing the counter counts what the batch saves).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import get_json, wait_for  # noqa: E402

N_SSE = 8
N_WS = 8
N_MSGS = 40
CHANNEL = "burst"


def writes(port):
    status, s, _ = get_json(port, "/stats")
    assert status == 200, s
    return sum(w["writes"] for w in s["per_worker"])


class Subscribers:
    """N_SSE SSE and N_WS /ws/{channel} subscribers from spread source addresses."""

    def __init__(self, port):
        self.sse = []
        self.ws = []
        try:
            for _ in range(N_SSE):
                s = hh.SseStream(port, "/sse/" + CHANNEL)
                assert s.status == 200, (s.status, s.body)
                self.sse.append(s)
            for _ in range(N_WS):
                self.ws.append(hh.RawWS(port, "/ws/" + CHANNEL, spread=True))
        except BaseException:
            self.close()
            raise

    def count(self):
        return len(self.sse) + len(self.ws)

    def expect(self, payloads):
        """Every subscriber receives payloads, in order."""
        for s in self.sse:
            got = [s.next_event().data[0] for _ in payloads]
            assert got == payloads, got
        for w in self.ws:
            got = [w.recv_data()[1].decode() for _ in payloads]
            assert got == payloads, got

    def close(self):
        for s in self.sse:
            s.close()
        for w in self.ws:
            w.client.close()


class TestBatchedWakeups(hh.HeraldTestCase):
    def setUp(self):
        # no heartbeat nor ping during a test: the writes counted are the messages' alone
        self.h = self.start_herald(conf={"max_queue_bytes": "1m", "sse_heartbeat": "1h",
                                         "ws_ping_interval": "1h"}, workers=2)
        self.port = self.h.port
        self.subs = Subscribers(self.port)
        self.addCleanup(self.subs.close)
        wait_for(lambda: get_json(self.port, "/channels/" + CHANNEL)[1].get("subscribers") ==
                 self.subs.count(), what="every subscriber to be live")
        per_worker = get_json(self.port, "/stats")[1]["per_worker"]
        self.assertTrue(all(w["sse"] + w["websocket"] > 0 for w in per_worker),
                        "subscribers on every worker: %r" % per_worker)

    def test_a_batch_leaves_in_one_write_per_connection(self):
        payloads = ["b%d" % i for i in range(N_MSGS)]
        before = writes(self.port)
        status, _, data = hh.request(self.port, "POST", "/pub", json.dumps(
            [{"channel": CHANNEL, "data": p} for p in payloads]),
            {"Content-Type": "application/json"})
        self.assertEqual(status, 200, data)
        self.subs.expect(payloads)
        # Every subscriber's writes, the publish's answer and the first /stats answer. A drain
        # may stop early behind a push still in progress (mpsc.c), so allow a second write per
        # connection; unbatched, it would be N_MSGS each.
        n = self.subs.count()
        delta = writes(self.port) - before
        print("batch of %d to %d subscribers: %d writes" % (N_MSGS, n, delta))
        self.assertGreaterEqual(delta, n)
        self.assertLessEqual(delta, 2 * n + 4,
                             "%d messages that arrived together took %d writes for %d "
                             "connections" % (N_MSGS, delta, n))

    def test_a_trickle_costs_a_write_per_message(self):
        # The counter against the same subscribers: published apart (the next once every
        # subscriber has the last: a pause would not do, a loaded machine may hold a worker
        # longer and let two messages meet in its mailbox), each message is its own wake-up and
        # its own write on every connection.
        n_msgs = 10
        payloads = ["t%d" % i for i in range(n_msgs)]
        pub = hh.Publisher(self.port)
        self.addCleanup(pub.close)
        before = writes(self.port)
        for p in payloads:
            pub(CHANNEL, p)
            self.subs.expect([p])
        delta = writes(self.port) - before
        n = self.subs.count()
        print("%d messages apart to %d subscribers: %d writes" % (n_msgs, n, delta))
        self.assertGreaterEqual(delta, n_msgs * n)


if __name__ == "__main__":
    hh.main()
