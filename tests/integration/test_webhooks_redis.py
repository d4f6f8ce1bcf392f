# SPDX-License-Identifier: MIT
"""Webhooks with Redis (docs/webhooks.md#with-redis): two herald nodes sharing a real
redis-server, the node receiver verifying every delivery with npm standardwebhooks.

Covered: an event published on either node is delivered once, by whichever node took it, and
Redis keeps nothing afterwards (stream empty, no pending entry); a node SIGKILLed while the
receiver holds its requests: the other node takes them over after webhook_claim_after and
completes them, each event delivered (2xx) exactly once after the kill and never again; retries
keep their schedule in Redis (attempts counted across them) and end as one dead letter seen
from both nodes, replayed from the other node with its id, then purged; the queue bound in
Redis (one event past webhook_queue_size is a dead letter at once); Redis restarted without
its data: the stream and its group are made again."""
import asyncio
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
import webhook_support as ws  # noqa: E402
from herald_harness import publish, wait_for  # noqa: E402

IO = 10.0
FAST = ["webhook_allow_private on", "webhook_backoff_base 50ms", "webhook_backoff_max 300ms",
        "webhook_connect_timeout 500ms", "webhook_timeout 1500ms",
        "webhook_claim_after 2500ms"]


class WebhookCluster(hh.HeraldTestCase):
    """What the test classes share (it has no test of its own: subclasses would run them)."""

    def node(self, redis, lines, extra=()):
        return self.start_herald(overrides=["redis unix://" + redis.sock] + FAST + list(lines) +
                                 list(extra))

    def queue_empty(self, redis, name):
        """Nothing pending for the endpoint in Redis: no entry, no retry waiting, none read and
        not finished."""
        q = "herald:hk:q:" + name
        pending = redis.cli("XPENDING", q, "herald").splitlines()
        return (redis.cli("XLEN", q) == "0" and redis.cli("ZCARD", "herald:hk:w:" + name) == "0"
                and (not pending or pending[0] == "0"))

    def letters(self, port):
        """The cluster's dead letters as a node counts them; None while it cannot say (a 503
        while its Redis connection is being made again, on a loaded machine)."""
        status, body = ws.admin(port, "GET", "/admin/webhooks/dead-letters")
        return body["total"] if status == 200 else None


class TestQueues(WebhookCluster):
    def test_either_node_delivers_once(self):
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="app")
        n1, n2 = self.node(redis, [line]), self.node(redis, [line])
        ids = set()
        for i in range(20):
            ids.add(publish((n1 if i % 2 else n2).port, "c%d" % (i % 3), "event %d" % i))
        got = r.wait_deliveries(20)
        wait_for(lambda: self.queue_empty(redis, "app"), IO, "the queue in Redis emptied")
        time.sleep(0.5)
        got = r.deliveries()
        self.assertEqual(len(got), 20, [d["answer"] for d in got])
        self.assertEqual({json.loads(d["body"])["data"]["id"] for d in got}, ids)
        self.assertEqual(len({d["id"] for d in got}), 20)
        self.assertTrue(all(d["verified"] == [True] for d in got))
        status, body = ws.admin(n1.port)
        self.assertEqual((status, body["store"]), (200, "redis"))
        delivered = sum(ws.endpoint(n.port, "app")["delivered"] for n in (n1, n2))
        self.assertEqual(delivered, 20)

    def test_node_killed_mid_delivery(self):
        """Node 1 takes two events and the receiver holds both requests; node 1 is SIGKILLed.
        Node 2 (started after) reads the third at once and claims the two after
        webhook_claim_after: each of the three is answered 2xx once, and nothing more comes."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["hang", "hang"])
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="app")
        # the held requests must outlive the kill: a longer webhook_timeout, and a claim after
        # it (the conf insists)
        slow = ["webhook_concurrency 2", "webhook_timeout 3s", "webhook_claim_after 3600ms"]
        n1 = self.node(redis, [line], slow)
        ids = [publish(n1.port, "x", "event %d" % i) for i in range(3)]
        r.wait_deliveries(2)
        time.sleep(0.2)
        self.assertEqual(len(r.deliveries()), 2)  # the third waits for room, in Redis
        n1.signal(signal.SIGKILL)
        n1.wait_exit(IO)
        n2 = self.node(redis, [line], slow)
        got = r.wait_deliveries(5, timeout=20)
        wait_for(lambda: self.queue_empty(redis, "app"), IO, "the queue in Redis emptied")
        time.sleep(1.0)
        got = r.deliveries()
        self.assertEqual(len(got), 5, [d["answer"] for d in got])
        by_msg = {}
        for d in got:
            self.assertEqual(d["verified"], [True])
            by_msg.setdefault(json.loads(d["body"])["data"]["id"], []).append(d)
        self.assertEqual(set(by_msg), set(ids))
        for mid, ds in by_msg.items():
            self.assertEqual(len({d["id"] for d in ds}), 1, ds)  # one event id per event
            self.assertEqual([d["answer"] for d in ds].count("ok"), 1, ds)
            if ds[0]["answer"] == "hang":
                # taken over only once idle for webhook_claim_after (3.6 s) since node 1 read
                # it, a few ms before its request came
                self.assertGreaterEqual(ds[1]["at_ms"] - ds[0]["at_ms"], 3000, ds)
        self.assertEqual(ws.endpoint(n2.port, "app")["delivered"], 3)

    def test_retries_dead_letter_seen_and_replayed_from_the_other_node(self):
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(default="status:500")
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="app")
        extra = ["webhook_retry_window 1s"]
        n1 = self.node(redis, [line], extra)
        n2 = self.node(redis, [line], extra)
        mid = publish(n1.port, "x", "doomed")

        def one_letter(port):
            status, body = ws.admin(port, "GET", "/admin/webhooks/dead-letters")
            return status == 200 and body["total"] == 1 and body
        wait_for(lambda: one_letter(n2.port), 15, "a dead letter seen from node 2")
        letter = one_letter(n1.port)["dead_letters"][0]
        attempts = len(r.deliveries())
        self.assertGreaterEqual(attempts, 3)
        self.assertEqual(letter["attempts"], attempts)  # the schedule lived in Redis
        self.assertEqual(letter["endpoint"], "app")
        self.assertIn("retry window", letter["reason"])
        eid = letter["event_id"]
        self.assertTrue(all(d["id"] == eid for d in r.deliveries()))
        status, body = ws.admin(n1.port, "GET", "/admin/webhooks/dead-letters/" + eid)
        self.assertEqual(status, 200)
        self.assertEqual(body["dead_letters"][0]["payload"]["data"]["id"], mid)
        wait_for(lambda: ws.admin(n1.port)[1]["dead_letters"] == 1, IO,
                 "node 1 counting the dead letter")
        # replay from node 2: delivered again with the same id, the letter gone for both
        r.control(default="ok")
        status, body = ws.admin(n2.port, "POST", "/admin/webhooks/dead-letters/%s/replay" % eid)
        self.assertEqual((status, body["replayed"]), (200, 1))
        got = r.wait_deliveries(attempts + 1)
        self.assertEqual((got[-1]["id"], got[-1]["answer"]), (eid, "ok"))
        wait_for(lambda: self.letters(n1.port) == 0, IO, "no dead letter left")
        status, body = ws.admin(n2.port, "POST", "/admin/webhooks/dead-letters/%s/replay" % eid)
        self.assertEqual(status, 404)
        # another dead letter, purged from node 1
        r.control(default="status:500")
        publish(n2.port, "x", "doomed too")
        wait_for(lambda: one_letter(n1.port), 15, "a second dead letter")
        status, body = ws.admin(n1.port, "DELETE", "/admin/webhooks/dead-letters")
        self.assertEqual((status, body["purged"]), (200, 1))
        self.assertEqual(redis.cli("XLEN", "herald:hk:dl"), "0")
        self.assertTrue(self.queue_empty(redis, "app"))

    def test_queue_bound_in_redis(self):
        """webhook_queue_size bounds an endpoint's pending events in Redis, cluster-wide: with
        the receiver holding the only request, one event past it is a dead letter at once."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(default="hang")
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="app")
        n1 = self.node(redis, [line], ["webhook_concurrency 1", "webhook_queue_size 5",
                                       "webhook_timeout 5s", "webhook_claim_after 10s"])
        for i in range(8):
            publish(n1.port, "x", "event %d" % i)

        wait_for(lambda: self.letters(n1.port) == 3, IO, "three dead letters")
        self.assertTrue(all("queue full" in d["reason"] for d in
                            ws.admin(n1.port, "GET", "/admin/webhooks/dead-letters")[1]
                            ["dead_letters"]))
        self.assertEqual(int(redis.cli("XLEN", "herald:hk:q:app")), 5)
        # the memory held stays small: bodies wait in Redis, not in the node
        status, body = ws.admin(n1.port)
        self.assertLess(body["memory_bytes"], 64 * 1024)

    def test_hooks_connection_cut_loses_nothing(self):
        """The node's hooks connection to Redis killed again and again (CLIENT KILL) while
        events are published: what was in flight or queued meanwhile is written again once it
        is back (the outbox), so every event is delivered."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        n1 = self.node(redis, [ws.webhook_line(r.url(), [s], name="app")])
        ids, kills = [], 0
        for i in range(40):
            ids.append(publish(n1.port, "x", "event %d" % i))
            time.sleep(0.05)
            if i % 4 == 0:
                for c in redis.herald_clients():
                    if c.get("name", "").endswith(":hooks"):
                        redis.cli("CLIENT", "KILL", "ID", c["id"], check=False)
                        kills += 1
        self.assertGreaterEqual(kills, 4)

        def delivered():
            return {json.loads(d["body"])["data"]["id"] for d in r.deliveries()
                    if d["answer"] == "ok"}
        wait_for(lambda: delivered() >= set(ids), 20, "every event delivered")
        wait_for(lambda: self.queue_empty(redis, "app"), IO, "the queue in Redis emptied")
        self.assertTrue(all(d["verified"] == [True] for d in r.deliveries()))

    def test_redis_restarted_without_its_data(self):
        """Redis comes back empty: the node's hooks connection reconnects, the stream and its
        group are made again, and events published after it are delivered."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="app")
        n1 = self.node(redis, [line], ["redis_timeout 500ms"])
        publish(n1.port, "x", "before")
        r.wait_deliveries(1)
        redis.kill()
        redis.start()

        def published():
            status, _, _ = hh.request(n1.port, "POST", "/pub/x", "after")
            return status == 200
        wait_for(published, 20, "a publish accepted after the restart")
        got = r.wait_deliveries(2, timeout=20)
        wait_for(lambda: self.queue_empty(redis, "app"), IO, "the queue in Redis emptied")
        self.assertEqual([json.loads(d["body"])["data"]["data"] for d in got][:2],
                         ["before", "after"])
        self.assertTrue(all(d["verified"] == [True] for d in got))


class TestMembersCluster(WebhookCluster):
    def test_member_events_once_for_the_cluster(self):
        """A member with a tab on each of two nodes (both sending member.* to the same
        receiver) is added once and removed once for the cluster, each event with its own id;
        a member whose node is SIGKILLed is removed once, by a survivor, within presence_lease."""
        from test_presence import conf_text, connect, mint, run, subscribe
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="m", channels=["room:*"],
                               events=["member.added", "member.removed"])

        def node():
            return self.start_herald(conf_raw=conf_text({"presence_lease": "3s"}),
                                     overrides=["redis unix://" + redis.sock] + FAST + [line])
        n1, n2, n3 = node(), node(), node()

        def types():
            # at least once: node 3 may be killed after its receiver took bob's member.added
            # and before the entry was acknowledged in Redis; a survivor then claims it and
            # delivers it again, with the same id and body. Each event counts once, by id.
            seen, out = {}, []
            for d in r.deliveries():
                if d["id"] in seen:
                    self.assertEqual(d["body"], seen[d["id"]], "one id, two bodies")
                    continue
                seen[d["id"]] = d["body"]
                b = json.loads(d["body"])
                out.append((b["type"], b["data"]["member"]["sub"]))
            return out

        async def go():
            tok = mint("ann")
            t1 = await connect(n1.port, tok)
            await subscribe(t1, "room:1")
            t2 = await connect(n2.port, tok)
            await subscribe(t2, "room:1")
            r.wait_deliveries(1)
            await t1.close()
            await asyncio.sleep(0.5)
            self.assertEqual(types(), [("member.added", "ann")])
            await t2.close()
            r.wait_deliveries(2)
            # bob's only tab is on node 3, which dies: a survivor removes him, once
            t3 = await connect(n3.port, mint("bob"))
            await subscribe(t3, "room:1")
            r.wait_deliveries(3)
            n3.signal(signal.SIGKILL)
            n3.wait_exit(IO)
            wait_for(lambda: len(types()) >= 4, 15, "bob removed by a survivor")
        run(go())
        time.sleep(1.0)
        self.assertEqual(types(), [("member.added", "ann"), ("member.removed", "ann"),
                                   ("member.added", "bob"), ("member.removed", "bob")])
        got = r.deliveries()
        self.assertEqual(len({d["id"] for d in got}), 4)
        self.assertTrue(all(d["verified"] == [True] for d in got))


class TestLifecycleCluster(WebhookCluster):
    def test_channel_occupied_vacated_once_for_the_cluster(self):
        """channel.occupied when the cluster's first subscriber comes (a second, on another
        node, sends nothing), channel.vacated when the last leaves; a channel whose only
        subscriber is on a node SIGKILLed is vacated once, by a survivor, within
        presence_lease."""
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        line = ws.webhook_line(r.url(), [s], name="life", channels=["life:*"],
                               events=["channel.occupied", "channel.vacated"])
        nodes = [self.node(redis, [line], ["presence_lease 3s"]) for _ in range(3)]

        def events():
            return [(json.loads(d["body"])["type"], json.loads(d["body"])["data"]["channel"])
                    for d in r.deliveries()]
        a = hh.SseStream(nodes[0].port, "/sse/life:1")
        r.wait_deliveries(1)
        b = hh.SseStream(nodes[1].port, "/sse/life:1")
        publish(nodes[1].port, "life:1", "both nodes subscribed")
        b.next_event()  # b's subscription is live (and so is node 2's occupancy in Redis)
        a.close()
        time.sleep(0.6)
        self.assertEqual(events(), [("channel.occupied", "life:1")])
        b.close()
        r.wait_deliveries(2)
        c = hh.SseStream(nodes[2].port, "/sse/life:2")
        r.wait_deliveries(3)
        # finished before the kill: an event the receiver got from node 3 but node 3 did not
        # finish in Redis yet (2xx on its way, XACK not sent) would be claimed and sent again,
        # rightly (at least once), with the same id
        wait_for(lambda: self.queue_empty(redis, "life") and
                 redis.cli("XPENDING", "herald:hk:pev", "herald").split()[:1] == ["0"], IO,
                 "life:2's occupancy finished in Redis")
        nodes[2].signal(signal.SIGKILL)
        nodes[2].wait_exit(IO)
        c.close()
        r.wait_deliveries(4, timeout=15)
        time.sleep(1.0)
        self.assertEqual(events(), [("channel.occupied", "life:1"), ("channel.vacated", "life:1"),
                                    ("channel.occupied", "life:2"), ("channel.vacated", "life:2")])
        got = r.deliveries()
        self.assertEqual(len({d["id"] for d in got}), 4)
        self.assertTrue(all(d["verified"] == [True] for d in got))


class TestClaimConf(hh.HeraldTestCase):
    def test_claim_after_must_outlast_an_attempt(self):
        """With Redis, webhook_claim_after no longer than webhook_connect_timeout +
        webhook_timeout is refused (file, line, directive): a live node would be overtaken."""
        d = self.tmpdir()
        path = os.path.join(d, "h.conf")
        with open(path, "w") as f:
            f.write("redis unix:///nonexistent.sock\nwebhook http://x/ secret=%s\n"
                    "webhook_timeout 10s\nwebhook_claim_after 12s\n" % ws.new_secret())
        status, _, err = hh.run_herald(["-t", "-c", path], timeout=20)
        self.assertEqual(status, hh.EXIT_CONF, err)
        self.assertIn("%s:4: webhook_claim_after: 12000 ms must be longer than "
                      "webhook_connect_timeout + webhook_timeout (15000 ms)" % path, err)
        with open(path, "a") as f:
            f.write("webhook_connect_timeout 1s\n")
        status, _, err = hh.run_herald(["-t", "-c", path], timeout=20)
        self.assertEqual(status, 0, err)


if __name__ == "__main__":
    hh.main()
