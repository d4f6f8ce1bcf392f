# SPDX-License-Identifier: MIT
"""The notify hook with Redis (docs/webhooks.md, "Backend hooks"): three herald nodes share a
real redis-server and one receiver (node, every batch verified with npm standardwebhooks). Each
node keeps a record of its notified streams in Redis under its presence lease; a node killed
with SIGKILL leaves them behind, and once its lease ran out exactly one of the two survivors
claims them (herald_hk_ntake, one atomic call) and sends a `disconnect` with reason node_lost
for each, with the stream's transport, sub and channels (a /ws subscription included), within
the lease (plus a poll and a flush); a stream whose disconnect the backend already got is not
reported again, nor are the survivors' streams; the dead node's keys are gone afterwards. A
graceful stop removes its records before the process exits (nothing is reported twice).
max_connections bounds the records of a node. A node frozen past its lease (taken for dead, its
streams reported lost) reports its live streams connected again (node_back) once it runs: after
its Redis connection is made again, and with it kept."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
import webhook_support as ws  # noqa: E402

LEASE_S = 2


class NotifyRedisCase(hh.HeraldTestCase):
    def setup_cluster(self):
        self.redis = rs.start_redis(self)
        self.secret = ws.new_secret()
        self.recv = ws.Receiver(self, [self.secret])
        self.recv.control([], default="ok")

    def node(self, more=(), flush="100ms"):
        return self.start_herald(workers=1, overrides=[
            "webhook_allow_private on", "redis unix://" + self.redis.sock,
            "presence_lease %ds" % LEASE_S,
            "notify_hook %s secret=%s batch=50 flush=%s" % (self.recv.url("/notify"),
                                                             self.secret, flush)] + list(more))

    def batches(self):
        return self.recv.notify_batches()

    def events(self):
        return self.recv.notify_events()

    def records(self):
        """{presence node: {conn: record}} as Redis holds them (nodes with records only)."""
        out = {}
        for node in self.redis.cli("SMEMBERS", "herald:ncn").split():
            flat = self.redis.cli("HGETALL", "herald:nc:" + node).splitlines()
            if flat:
                out[node] = {flat[i]: json.loads(flat[i + 1])
                             for i in range(0, len(flat) - 1, 2)}
        return out


class TestCrash(NotifyRedisCase):
    def test_killed_node_streams_reported_once(self):
        self.setup_cluster()
        n1, n2, n3 = self.node(), self.node(), self.node()
        stays = hh.SseStream(n1.port, "/sse/s1")  # a survivor's: never reported lost
        self.addCleanup(stays.close)
        sse = hh.SseStream(n3.port, "/sse?channel=a&channel=b")
        self.addCleanup(sse.close)
        w1 = hh.RawWS(n3.port, "/ws/c")
        self.addCleanup(w1.close)
        w2 = hh.RawWS(n3.port, "/ws")
        self.addCleanup(w2.close)
        w2.send(hh.ws_frame(hh.OP_TEXT, b'{"op":"subscribe","channel":"d","ref":1}'))
        self.assertEqual(w2.recv_json()["type"], "subscribed")
        gone = hh.SseStream(n3.port, "/sse/gone")  # closed before the kill: told once
        gone.close()

        def settled():
            recs = self.records()
            return (sorted(len(r) for r in recs.values()) == [1, 3] and
                    any(["d"] in [x["channels"] for x in r.values()] for r in recs.values()))
        hh.wait_for(settled, timeout=10, what="the streams' records in Redis, gone's removed")
        recs = self.records()
        dead_node = [n for n, r in recs.items() if len(r) == 3][0]
        dead_conns = set(recs[dead_node])
        n3.signal(signal.SIGKILL)
        n3.wait_exit(10)
        t0 = time.monotonic()

        def lost():
            return [e for e in self.events() if e.get("reason") == "node_lost"]
        hh.wait_for(lambda: len(lost()) >= 3, timeout=LEASE_S + 15,
                    what="the disconnects of the dead node's three streams")
        took = time.monotonic() - t0
        print("a dead node's streams reported %.2f s after SIGKILL (presence_lease %d s)" %
              (took, LEASE_S), file=sys.stderr)
        self.assertLess(took, LEASE_S + 5, "lease %d s" % LEASE_S)
        time.sleep(1.5)  # more polls of both survivors: nothing more comes
        got = lost()
        self.assertEqual(len(got), 3, got)
        self.assertEqual({e["conn"] for e in got}, dead_conns)
        self.assertEqual(len({e["id"] for e in got}), 3)
        by_tp = sorted((e["transport"], e["channels"]) for e in got)
        self.assertEqual(by_tp, [("sse", ["a", "b"]), ("websocket", ["c"]),
                                 ("websocket", ["d"])])
        for e in got:
            self.assertEqual(e["type"], "disconnect")
            self.assertIsNone(e["sub"])
            self.assertTrue(e["client_ip"].startswith("127."), e)
            self.assertLessEqual(abs(e["at"] / 1000 - time.time()), 30)
        # one survivor's batches carry them; gone's disconnect came once, from n3 itself
        claimers = {b["node"] for b in self.batches()
                    if any(e.get("reason") == "node_lost" for e in b["events"])}
        self.assertEqual(len(claimers), 1, claimers)
        evs = self.events()
        gone_conn = [e["conn"] for e in evs if e["type"] == "connect" and
                     e["channels"] == ["gone"]][0]
        self.assertEqual([e["type"] for e in evs if e["conn"] == gone_conn],
                         ["connect", "disconnect"])
        s1_conn = [e["conn"] for e in evs if e["type"] == "connect" and
                   e["channels"] == ["s1"]][0]
        self.assertEqual([e["type"] for e in evs if e["conn"] == s1_conn], ["connect"])
        # the dead node's keys are gone
        hh.wait_for(lambda: self.redis.cli("SISMEMBER", "herald:ncn", dead_node) == "0",
                    timeout=5, what="the dead node unlisted")
        self.assertEqual(self.redis.cli("EXISTS", "herald:nc:" + dead_node), "0")
        self.assertEqual(self.redis.cli("XPENDING", "herald:hk:nev", "herald").split()[0], "0")

    def test_graceful_stop_leaves_no_record(self):
        """A node stopped with SIGTERM sends its streams' disconnects itself and removes their
        records before it exits: a survivor has nothing to report."""
        self.setup_cluster()
        # a long flush: the disconnects leave in the stop's own last batch, just before the exit
        n1, n2 = self.node(), self.node(flush="30s")
        streams = [hh.SseStream(n2.port, "/sse/g%d" % i) for i in range(3)]
        for s in streams:
            self.addCleanup(s.close)
        hh.wait_for(lambda: sum(len(r) for r in self.records().values()) == 3, timeout=10,
                    what="three records")
        n2.signal(signal.SIGTERM)
        self.assertEqual(n2.wait_exit(15), 0)
        self.assertEqual(self.records(), {})
        evs = self.events()
        self.assertEqual(sorted(e["type"] for e in evs), ["connect"] * 3 + ["disconnect"] * 3)
        self.assertTrue(all("reason" not in e for e in evs), evs)

    def test_records_bounded_by_max_connections(self):
        """A node holds at most max_connections records: the connects past it are refused and
        leave nothing in Redis; closed streams leave once their disconnect is acknowledged."""
        self.setup_cluster()
        n1 = self.node(more=["max_connections 4"])
        streams = []
        for i in range(4):
            streams.append(hh.SseStream(n1.port, "/sse/b%d" % i))
            self.addCleanup(streams[-1].close)
        for _ in range(4):
            try:
                s = hh.SseStream(n1.port, "/sse/over")
            except (AssertionError, OSError):
                continue  # closed at accept
            s.close()
            self.assertNotEqual(s.status, 200, "a connect past max_connections was served")
        hh.wait_for(lambda: sum(len(r) for r in self.records().values()) == 4, timeout=10,
                    what="four records")
        time.sleep(0.5)
        self.assertEqual(sum(len(r) for r in self.records().values()), 4)
        for s in streams:
            s.close()
        hh.wait_for(lambda: sum(len(r) for r in self.records().values()) == 0, timeout=10,
                    what="no record once the disconnects were acknowledged")


class TestNodeBack(NotifyRedisCase):
    def test_node_taken_for_dead_reports_its_streams_back(self):
        """A node frozen (SIGSTOP) past its presence lease is taken for dead: the survivor
        reports its stream disconnected (node_lost). Once it runs again the stream, still
        open, is reported connected again (connect, reason node_back, its channels): (1) when
        its notify connection to Redis, killed while it was frozen, is made again (the sync
        finds its records claimed); (2) with its connection kept and nothing new on it (its
        check of the node list every second finds it unlisted; before that check, only its
        next record written, herald_hk_nset, could tell it, and the sync that followed did not
        report them). Each time its record is back in Redis and a message published to the
        stream's channel still reaches it."""
        self.setup_cluster()
        # a long redis_timeout: a command in flight when frozen is not timed out at the thaw,
        # so (2) keeps its connection as it means to
        n1 = self.node(more=["redis_timeout 30s"])
        self.node()
        self.addCleanup(lambda: n1.running() and n1.signal(signal.SIGCONT))
        a = hh.SseStream(n1.port, "/sse?channel=a1&channel=a2")
        self.addCleanup(a.close)

        def connects():
            return [e for e in self.events() if e["type"] == "connect"]
        hh.wait_for(lambda: connects() and self.records(), timeout=10, what="a's record")
        a_conn = connects()[0]["conn"]
        node = list(self.records())[0]

        def reasons():
            return [e.get("reason", e["type"]) for e in self.events() if e["conn"] == a_conn]

        def freeze_until_lost():
            n = reasons().count("node_lost")
            n1.signal(signal.SIGSTOP)
            try:
                hh.wait_for(lambda: reasons().count("node_lost") > n, timeout=LEASE_S + 15,
                            what="a reported lost while its node is frozen")
            except AssertionError:
                n1.signal(signal.SIGCONT)
                raise

        def thaw_until_back(what):
            n = reasons().count("node_back")
            n1.signal(signal.SIGCONT)
            hh.wait_for(lambda: reasons().count("node_back") > n, timeout=10,
                        what="a reported back (%s)" % what)
            back = [e for e in self.events() if e["conn"] == a_conn and
                    e.get("reason") == "node_back"][-1]
            self.assertEqual((back["type"], back["transport"], back["channels"]),
                             ("connect", "sse", ["a1", "a2"]), back)
            hh.wait_for(lambda: a_conn in self.records().get(node, {}), timeout=10,
                        what="a's record back in Redis (%s)" % what)
            hh.publish(n1.port, "a2", "after " + what)
            self.assertEqual(a.events(1, timeout=10)[0].data, ["after " + what])

        # (1) its notify connection cut while frozen: made again at the thaw
        freeze_until_lost()
        killed = 0
        for c in self.redis.herald_clients():
            if c.get("name", "").endswith(":%d:notify" % n1.pid):
                self.redis.cli("CLIENT", "KILL", "ID", c["id"], check=False)
                killed += 1
        self.assertEqual(killed, 1)
        thaw_until_back("reconnected")
        # (2) connection kept, nothing new on the node: its check of the node list
        freeze_until_lost()
        thaw_until_back("checked")
        # lost and back, in turn, never lost without coming back
        got = reasons()
        self.assertEqual(got[0], "connect")
        self.assertGreaterEqual(len(got), 5, got)
        self.assertEqual(got[1:], ["node_lost", "node_back"] * ((len(got) - 1) // 2), got)


if __name__ == "__main__":
    hh.main()
