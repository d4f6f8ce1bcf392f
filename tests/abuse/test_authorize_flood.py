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

The work is bounded, not the time: in each round every thread writes its 100 connects, then the
test checks the other clients (once a round, while those connects are all in flight), then the
threads read their answers. It used to check as often as it could while the threads ran free and
ask for more than 3 checks in all, each within 2 s: at load 20-24 under ASan (two copies beside 8
busy loops) a check took up to 1.6 s and only 6 fitted in the flood, so a loaded CI machine
(ctest -j2 at load ~15) could fail it with a herald that served everyone.
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
# A check of the other clients (a new connection each) waits behind the round's connects in the
# kernel's queue and herald's loop: how long is the machine's load, not herald's; this only
# catches a herald that does not answer them at all.
CHECK_S = 15.0


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
        errors = []
        lock = threading.Lock()
        # each round: the threads' connects written (sent), the others checked (checked)
        sent = threading.Barrier(THREADS + 1, timeout=120)
        checked = threading.Barrier(THREADS + 1, timeout=120)

        def one(k):
            try:
                flood(k)
            except Exception as e:  # noqa: BLE001 (reported by the main thread)
                errors.append("thread %d: %r" % (k, e))
                sent.abort()
                checked.abort()

        def flood(k):
            for r in range(ROUNDS):
                socks = []
                for i in range(BATCH):
                    s = socket.create_connection(("127.0.0.1", port), timeout=30)
                    s.sendall(("GET /poll/hook:hang-%d-%d-%d HTTP/1.1\r\nHost: x\r\n"
                               "Connection: close\r\n\r\n" % (k, r, i)).encode())
                    socks.append(s)
                sent.wait()
                checked.wait()
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
        self.peak_pending = 0
        self.slowest = 0.0
        try:
            for _ in range(ROUNDS):
                sent.wait()
                self.check_others(port, sub, served, sampler)
                served += 1
                checked.wait()
        except threading.BrokenBarrierError:
            pass  # a thread failed: errors says why
        except BaseException:
            sent.abort()  # the threads stop waiting, and end
            checked.abort()
            raise
        finally:
            for t in ths:
                t.join()
        peak_pending = self.peak_pending
        self.assertEqual(errors, [])
        self.assertEqual(served, ROUNDS)
        self.assertEqual(bad, [])
        self.assertEqual(sum(counts.values()), THREADS * BATCH * ROUNDS)
        self.assertEqual(set(counts), {("503", "backend_busy"), ("503", "backend_unavailable")},
                         counts)
        self.assertGreater(counts[("503", "backend_busy")], THREADS * ROUNDS * 10, counts)
        self.assertLessEqual(peak_pending, WORKERS * MAX_PENDING)
        self.assertRssBounded(sampler, 64 * MB, "connect flood against a hung authorize hook")
        hh.wait_for(lambda: metric(port, "herald_authorize_pending") == 0, timeout=10,
                    what="no authorization left pending")
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        sys.stderr.write("authorize flood: %r, peak pending %d, RSS +%.1f MB, %d checks served "
                         "(the slowest %.2f s, load %s)\n" %
                         (counts, peak_pending, sampler.growth() / MB, served, self.slowest,
                          load))

    def check_others(self, port, sub, n, sampler):
        """While a round's connects are in flight: the pending questions within the bound, and
        other clients served (/healthz, a poll, an SSE subscriber's message)."""
        sampler.sample()
        self.peak_pending = max(self.peak_pending,
                                metric(port, "herald_authorize_pending") or 0)
        t0 = time.monotonic()
        self.assertTrue(hh.healthz_ok(port, timeout=CHECK_S), "/healthz during the flood")
        self.assertEqual(hh.request(port, "GET", "/poll/open:x", timeout=CHECK_S)[0], 200)
        hh.publish(port, "open:live", "during-%d" % n)
        self.assertEqual(sub.next_event(timeout=CHECK_S).text, "during-%d" % n)
        self.slowest = max(self.slowest, time.monotonic() - t0)


if __name__ == "__main__":
    hh.main()
