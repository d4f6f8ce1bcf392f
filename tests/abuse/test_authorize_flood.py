# SPDX-License-Identifier: MIT
"""Connect flood against a hung authorize hook (docs/webhooks.md, "Backend hooks"): the backend
(the node receiver in its "auth" mode) never answers questions about hook:hang-* channels, and
four threads open connects to such channels as fast as they can, each a different question (no
cache, no joined calls), 100 at a time each.

Each worker holds at most max_pending questions: the others are refused at once with 503
{"code":"backend_busy"} and Retry-After, the waiting ones get 503 backend_unavailable after the
hook's timeout. Asserted: both kinds of refusal came, nothing else; herald_authorize_pending never
passed workers x max_pending; RSS grew by less than 64 MB; /healthz, a poll on a channel without
the hook and an SSE subscriber on another channel were served during the flood; once it is over
nothing is left pending.
"""
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import webhook_support as ws  # noqa: E402

THREADS = 4
BATCH = 100
ROUNDS = 4
MAX_PENDING = 40
WORKERS = 2


def metric(port, name):
    _, _, text = hh.request(port, "GET", "/metrics")
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


class AuthorizeFlood(AbuseTestCase):
    def test_flood_is_bounded(self):
        secret = ws.new_secret()
        recv = ws.Receiver(self, [secret])
        recv.control(default="auth")
        h = self.start_herald(workers=WORKERS, overrides=[
            "webhook_allow_private on",
            "authorize_hook %s secret=%s timeout=1s max_pending=%d concurrency=16" %
            (recv.url("/authorize"), secret, MAX_PENDING),
            "channel_rule hook:* subscribe=hook", "channel_rule open:* subscribe=any"])
        port = h.port
        sub = hh.SseStream(port, "/sse/open:live")
        self.addCleanup(sub.close)
        sampler = RssSampler(h)
        counts = {}
        bad = []
        lock = threading.Lock()

        def one(k):
            for r in range(ROUNDS):
                socks = []
                for i in range(BATCH):
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    s.sendall(("GET /poll/hook:hang-%d-%d-%d HTTP/1.1\r\nHost: x\r\n"
                               "Connection: close\r\n\r\n" % (k, r, i)).encode())
                    socks.append(s)
                for s in socks:
                    data = b""
                    try:
                        while True:
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                    except OSError as e:
                        data += b"<%s>" % str(e).encode()
                    s.close()
                    m = re.search(rb'"code":"(\w+)"', data)
                    key = (data[9:12].decode(errors="replace"),
                           m.group(1).decode() if m else None)
                    with lock:
                        counts[key] = counts.get(key, 0) + 1
                        if key[0] == "503" and b"Retry-After: " not in data:
                            bad.append(data[:300])

        ths = [threading.Thread(target=one, args=(k,)) for k in range(THREADS)]
        for t in ths:
            t.start()
        served = 0
        peak_pending = 0
        while any(t.is_alive() for t in ths):
            sampler.sample()
            pending = metric(port, "herald_authorize_pending")
            peak_pending = max(peak_pending, pending or 0)
            t0 = time.monotonic()
            self.assertHealthy(port)
            self.assertEqual(hh.request(port, "GET", "/poll/open:x")[0], 200)
            self.assertLess(time.monotonic() - t0, 2.0, "other clients waited")
            hh.publish(port, "open:live", "during-%d" % served)
            self.assertEqual(sub.next_event().text, "during-%d" % served)
            served += 1
            time.sleep(0.1)
        for t in ths:
            t.join()
        self.assertEqual(bad, [])
        self.assertEqual(sum(counts.values()), THREADS * BATCH * ROUNDS)
        self.assertEqual(set(counts), {("503", "backend_busy"), ("503", "backend_unavailable")},
                         counts)
        self.assertGreater(counts[("503", "backend_busy")], THREADS * ROUNDS * 10, counts)
        self.assertLessEqual(peak_pending, WORKERS * MAX_PENDING)
        self.assertGreater(served, 3)
        self.assertRssBounded(sampler, 64 * MB, "connect flood against a hung authorize hook")
        hh.wait_for(lambda: metric(port, "herald_authorize_pending") == 0, timeout=10,
                    what="no authorization left pending")
        sys.stderr.write("authorize flood: %r, peak pending %d, RSS +%.1f MB, %d served\n" %
                         (counts, peak_pending, sampler.growth() / MB, served))


if __name__ == "__main__":
    hh.main()
