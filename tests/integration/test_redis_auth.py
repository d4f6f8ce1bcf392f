# SPDX-License-Identifier: MIT
"""The Redis bridge's addressing and authentication, through the real binary and a real
redis-server: a password (requirepass) and an ACL user with a password, over TCP and over a unix
socket (unix:// URL with ?user=&password=, and a bare socket path), percent-encoded
credentials; a wrong password or user stops the start with a clear message that never shows
the password. Two clusters with different redis_prefix share one Redis without seeing each
other's channels: a publish on cluster A reaches A's nodes only, B's subscriber of the same
channel name gets nothing, each cluster numbers its own ids, and every key either writes
starts with its prefix.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
import test_redis as tr  # noqa: E402  (its SSE collector and id parser)
from herald_harness import publish, wait_for  # noqa: E402

PASSWORD = "s3cret p@ss/word"  # a space, @ and / need percent-encoding in a URL
PASSWORD_URL = "s3cret%20p%40ss%2Fword"
USER_RULES = "on >alice-pw ~* &* +@all"


class RedisAuthTest(hh.HeraldTestCase):
    def setUp(self):
        rs.require_redis()

    def node(self, url, **conf):
        c = {"history_size": "100"}
        c.update(conf)
        return self.start_herald(conf=c, workers=2, overrides=["redis " + url,
                                                               "redis_timeout 2s"])

    def assertServes(self, n, redis, channel="c", user=None):
        """A publish and a subscription work through n, and Redis holds what was published;
        n's connections are authenticated as user (default: the default user)."""
        sse = tr.SseCollector(n.port, "/sse/" + channel)
        self.addCleanup(sse.close)
        mid = publish(n.port, channel, "hello")
        self.assertEqual(sse.wait_messages(1), [(mid, "hello")])
        st, body, _ = hh.get_json(n.port, "/poll/%s?since=0-0" % channel)
        self.assertEqual([m["data"] for m in body["messages"]], ["hello"])
        names = [c for c in redis.herald_clients() if ":%d:" % n.pid in c.get("name", "")]
        self.assertEqual(sorted(c["name"].rsplit(":", 1)[1] for c in names),
                         ["cmd", "hb", "sub"], names)
        self.assertEqual({c["user"] for c in names}, {user or "default"})

    def assertStartRefused(self, url, secret, why=r"(?i)WRONGPASS|NOAUTH|auth"):
        h = hh.Herald(workers=1, overrides=["redis " + url, "redis_timeout 2s"],
                      expect_exit=hh.EXIT_START)
        self.addCleanup(h.cleanup)
        h.start(wait_ready=False)
        self.assertEqual(h.wait_exit(15), hh.EXIT_START)
        log = h.log_text()
        self.assertRegex(log, r"cannot start: .*redis", log)
        self.assertRegex(log, why, log)
        self.assertNotIn(secret, log)
        return log

    def test_requirepass_tcp(self):
        redis = rs.start_redis(self, tcp=True, password=PASSWORD)
        n = self.node("redis://:%s@127.0.0.1:%d/0" % (PASSWORD_URL, redis.port))
        self.assertServes(n, redis)
        # Without the password, or with another one: a clear refusal at start.
        self.assertStartRefused("redis://127.0.0.1:%d" % redis.port, PASSWORD)
        self.assertStartRefused("redis://:wrong-pw@127.0.0.1:%d" % redis.port, "wrong-pw")

    def test_acl_user_tcp(self):
        redis = rs.start_redis(self, tcp=True, password="admin-pw",
                               users={"alice": USER_RULES,
                                      "nofunc": "on >nf-pw ~* &* +@all -@scripting"})
        n = self.node("redis://alice:alice-pw@127.0.0.1:%d" % redis.port)
        self.assertServes(n, redis, user="alice")
        self.assertStartRefused("redis://alice:nope@127.0.0.1:%d" % redis.port, "nope")
        self.assertStartRefused("redis://bob:alice-pw@127.0.0.1:%d" % redis.port, "alice-pw")
        # A user that may not load or call Redis Functions: refused at start, saying why.
        log = self.assertStartRefused("redis://nofunc:nf-pw@127.0.0.1:%d" % redis.port, "nf-pw",
                                      why=r"NOPERM")
        self.assertRegex(log, r"(?i)function", log)

    def test_unix_socket_with_user_and_password(self):
        redis = rs.start_redis(self, password="admin-pw", users={"alice": USER_RULES})
        n = self.node("unix://%s?user=alice&password=alice-pw&db=2" % redis.sock)
        self.assertServes(n, redis, user="alice")
        # The db asked for is the one used.
        self.assertNotEqual(redis.cli("-n", "2", "DBSIZE"), "0")
        self.assertEqual(redis.cli("-n", "0", "DBSIZE"), "0")

    def test_unix_socket_password_only(self):
        redis = rs.start_redis(self, password=PASSWORD)
        n = self.node("unix://%s?password=%s" % (redis.sock, PASSWORD_URL))
        self.assertServes(n, redis)
        self.assertStartRefused("unix://%s?password=nope" % redis.sock, "nope")

    def test_bare_socket_path(self):
        redis = rs.start_redis(self)
        n = self.node(redis.sock)
        self.assertServes(n, redis)

    def test_two_prefixes_share_one_redis(self):
        redis = rs.start_redis(self)
        url = "unix://" + redis.sock
        a1, a2 = self.node(url, redis_prefix="clusterA:"), self.node(url, redis_prefix="clusterA:")
        b1 = self.node(url, redis_prefix="clusterB:")
        on_a2 = tr.SseCollector(a2.port, "/sse/same")
        on_b1 = tr.SseCollector(b1.port, "/sse/same")
        for s in (on_a2, on_b1):
            self.addCleanup(s.close)
        ids_a = [publish(a1.port, "same", "for A %d" % i) for i in range(3)]
        self.assertEqual(on_a2.wait_messages(3), [(i, "for A %d" % k) for k, i in enumerate(ids_a)])
        # B's subscriber of the same name: nothing. A message of B's own, published after,
        # comes first, so nothing of A's was merely late.
        id_b = publish(b1.port, "same", "for B")
        self.assertEqual(on_b1.wait_messages(1), [(id_b, "for B")])
        self.assertEqual(tr.parse_id(id_b)[1], 1, "cluster B numbers its own ids")
        self.assertEqual(on_a2.wait_messages(4, 0.5), on_a2.messages())
        self.assertEqual(len(on_a2.messages()), 3, "cluster A received B's message")
        # Polls and history are per cluster too.
        st, body, _ = hh.get_json(b1.port, "/poll/same?since=0-0")
        self.assertEqual([m["data"] for m in body["messages"]], ["for B"])
        st, body, _ = hh.get_json(a2.port, "/poll/same?since=0-0")
        self.assertEqual([m["data"] for m in body["messages"]], ["for A 0", "for A 1", "for A 2"])
        # Every key herald wrote carries its cluster's prefix.
        keys = redis.cli("--scan").split()
        self.assertTrue(keys)
        self.assertEqual([k for k in keys if not k.startswith(("clusterA:", "clusterB:"))], [])
        self.assertTrue(any(k.startswith("clusterA:") for k in keys))
        self.assertTrue(any(k.startswith("clusterB:") for k in keys))


if __name__ == "__main__":
    hh.main()
