# SPDX-License-Identifier: MIT
"""Abuse of POST /admin/revoke (docs/auth.md, "Revocation"): the revoked set is bounded by
max_revocations. Filling it with the longest subs herald takes (255 bytes), then a flood of
thousands more: each is refused 507 with a reason naming max_revocations, the node's memory
stays flat during the flood, one already in the set is still extended, other clients are
served, and the cap is read at each request (a reload raising it lets the next one in).
"""
import json
import os
import sys
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abuse_support as ab  # noqa: E402
from abuse_support import hh, MB  # noqa: E402

ADMIN_KEY = "admin-key-for-the-revocation-abuse-test"
CAP = 2000
FLOOD = 10000


def conf(cap):
    return {"admin_key": ADMIN_KEY, "auth_jwt_secret": "x" * 40, "max_revocations": str(cap),
            "channel_rule": "public:* subscribe=any"}


class RevocationFlood(ab.AbuseTestCase):
    def revoke(self, conn, sub, expires_in=600):
        conn.request("POST", "/admin/revoke", json.dumps({"sub": sub, "expires_in": expires_in}),
                     {"Authorization": "Bearer " + ADMIN_KEY,
                      "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    def metric(self, port, name):
        st, _, body = hh.request(port, "GET", "/metrics",
                                 headers={"Authorization": "Bearer " + ADMIN_KEY})
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        raise AssertionError("no %s in /metrics" % name)

    def test_flood_past_the_cap(self):
        h = self.start_herald(conf=conf(CAP))
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        self.addCleanup(conn.close)
        before = ab.RssSampler(h)
        for i in range(CAP):
            st, body = self.revoke(conn, "%05d-%s" % (i, "s" * 249))
            self.assertEqual(st, 200, body)
        filled = h.rss_bytes() - before.base
        self.assertEqual(self.metric(h.port, "herald_revocations"), CAP)
        sampler = ab.RssSampler(h)
        sub = hh.SseStream(h.port, "/sse/public:alive")
        self.addCleanup(sub.close)
        self.assertEqual(sub.status, 200)
        refused = 0
        for i in range(FLOOD):
            st, body = self.revoke(conn, "flood-%06d-%s" % (i, "f" * 240))
            if st == 507:
                refused += 1
                if refused == 1:
                    self.assertIn("max_revocations", body["error"])
            if i % 500 == 0:
                sampler.sample()
        self.assertEqual(refused, FLOOD)
        print("%d revocations of 255-byte subs: RSS %+.1f MB; %d more refused: %+.1f MB" % (
            CAP, filled / MB, FLOOD, sampler.growth() / MB), file=sys.stderr)
        self.assertRssBounded(sampler, 8 * MB, "%d refused revocations" % FLOOD)
        self.assertEqual(self.metric(h.port, "herald_revocations"), CAP)
        # One already in the set is extended, not refused.
        st, body = self.revoke(conn, "%05d-%s" % (7, "s" * 249), expires_in=900)
        self.assertEqual(st, 200, body)
        # Others are served: a health check, and a subscriber still receives.
        self.assertServed(h.port)
        mid = hh.publish(h.port, "public:alive", "still here")
        ev = sub.next_event(5)
        self.assertEqual((ev.id, ev.text), (mid, "still here"))
        # The cap is read at each request: raised by a reload, the next one goes in.
        h.reload(conf=conf(CAP + 1))
        conn.close()
        st, body = self.revoke(conn, "one-more")
        self.assertEqual(st, 200, body)
        self.assertEqual(self.metric(h.port, "herald_revocations"), CAP + 1)


if __name__ == "__main__":
    hh.main()
