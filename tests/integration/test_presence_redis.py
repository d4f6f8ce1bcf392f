# SPDX-License-Identifier: MIT
"""Presence and ephemeral messages across nodes sharing a real redis-server (docs/chat.md):
two and three herald nodes, clients on python3-websockets and the raw SSE reader, tokens from
python3-jwt.

Covered: a user with tabs on two nodes is one member (one join, one leave after the last tab,
wherever it closes); snapshots (/ws and GET /presence) and /channels/{ch} agree on every node;
an ephemeral message published on one node reaches subscribers of the others and is never in
history; a node killed with SIGKILL: the surviving nodes emit the leave of its members within
presence_lease, exactly once (two survivors both renew and reap), and a member with a connection
on a surviving node does not leave; the keys of the dead node are gone from Redis afterwards;
Redis restarted without its data: the nodes mirror their members again, without the one that
left during the outage. presence_max_channels bounds the channels a node tracks under Redis too.
Pages are read by lex range (P pz:<channel>): byte order, a member's connections across the
function's batches, a cursor that was never a key, nothing left in Redis after the last leave.
"""
import asyncio
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
from herald_harness import SseStream  # noqa: E402
from test_presence import (  # noqa: E402
    conf_text, connect, mint, pget, presence_events, recv_json, recv_until, run, snapshot,
    subscribe)

IO = 10.0
LEASE_S = 3


class PresenceCluster(hh.HeraldTestCase):
    def node(self, redis, extra=None):
        conf = {"presence_lease": "%ds" % LEASE_S}
        conf.update(extra or {})
        h = self.start_herald(conf_raw=conf_text(conf), overrides=["redis unix://" + redis.sock])
        hh.require_websocket(h.port, "/ws")
        return h

    def test_two_nodes_one_member(self):
        redis = rs.start_redis(self)
        n1, n2 = self.node(redis), self.node(redis)

        async def go():
            obs = await connect(n1.port, mint("obs"))
            self.assertEqual((await subscribe(obs, "room:c", presence=True))["type"],
                             "subscribed")
            await recv_until(obs, lambda m: m.get("type") == "join")  # itself
            tok = mint("ann", info={"name": "Ann"})
            t1 = await connect(n2.port, tok)
            await subscribe(t1, "room:c")
            join, _ = await recv_until(obs, lambda m: m.get("type") == "join")
            self.assertEqual(join["member"], {"sub": "ann", "info": {"name": "Ann"}})
            t2 = await connect(n1.port, tok)
            await subscribe(t2, "room:c")
            # both nodes answer the same cluster-wide picture
            hh.wait_for(lambda: pget(n2.port, "/presence/room:c")[1].get("count") == 2 and
                        len([m for m in pget(n2.port, "/presence/room:c")[1]["members"]
                             if m["sub"] == "ann"][0]["conns"]) == 2, IO, "ann with two tabs")
            for n in (n1, n2):
                st, body = pget(n.port, "/presence/room:c")
                self.assertEqual((st, body["count"]), (200, 2), body)
                ann = [m for m in body["members"] if m["sub"] == "ann"][0]
                self.assertEqual(ann["info"], {"name": "Ann"})
                self.assertEqual(len(ann["conns"]), 2)
                self.assertEqual(len({c.split("-")[0] for c in ann["conns"]}), 2,
                                 "a connection id names its node")
                self.assertEqual(pget(n.port, "/channels/room:c")[1]["presence"], 2)
            snap = await snapshot(obs, "room:c", limit=1)
            self.assertEqual((snap["count"], len(snap["members"]), snap["next"]),
                             (2, 1, "ann"), snap)
            snap2 = await snapshot(obs, "room:c", cursor=snap["next"], ref="p2")
            self.assertEqual([m["sub"] for m in snap2["members"]], ["obs"])
            self.assertIsNone(snap2["next"])
            # the second tab is no news; closing one of two is none either
            await t1.close()
            mid = hh.publish(n1.port, "room:c", "marker")
            _, seen = await recv_until(obs, lambda m: m.get("id") == mid)
            self.assertEqual(presence_events(seen), [])
            await t2.close()
            leave, seen = await recv_until(obs, lambda m: m.get("type") == "leave")
            self.assertEqual(presence_events(seen), [("leave", "ann")])
            mid = hh.publish(n2.port, "room:c", "marker2")
            _, seen = await recv_until(obs, lambda m: m.get("id") == mid)
            self.assertEqual(presence_events(seen), [])
            # ephemeral across nodes: live on the other node, no id, not in history
            sse = SseStream(n2.port, "/sse/room:c?token=" + mint("sam"))
            self.addCleanup(sse.close)
            self.assertEqual(sse.status, 200)
            time.sleep(0.3)
            snd = await connect(n2.port, mint("pat"))
            await snd.send(json.dumps({"op": "publish", "channel": "room:c", "ephemeral": True,
                                       "data": {"typing": True}, "ref": "e"}))
            rep, _ = await recv_until(snd, lambda m: m.get("ref") == "e")
            self.assertEqual(rep.get("ephemeral"), True, rep)
            m, _ = await recv_until(obs, lambda m: m.get("type") == "ephemeral")
            self.assertEqual((m["data"], m["publisher"]["sub"]), ({"typing": True}, "pat"))
            self.assertNotIn("id", m)
            ev = sse.next_event(IO)
            while ev.event != "herald-ephemeral":
                ev = sse.next_event(IO)
            self.assertIsNone(ev.id)
            st, poll = pget(n1.port, "/poll/room:c?since=%s&token=%s" % (mid, mint("q")))
            self.assertEqual((st, poll["messages"]), (200, []), poll)
            await snd.close()
            await obs.close()
        run(go())

    def test_killed_node_members_leave_within_lease(self):
        redis = rs.start_redis(self)
        # A dead node's leaves come at least 3/4 of the lease less a renewal (1.5 s) after the
        # kill, and the room's last frame went out at most a hold after it: with a hold of
        # 500 ms the leave is a leading edge, sent at once, and the bound below measures the
        # lease alone (with the default 2 s it could wait for a window: up to 2 s more).
        hold = {"presence_hold": "500ms"}
        n1, n2, n3 = [self.node(redis, hold) for _ in range(3)]

        async def go():
            o1 = await connect(n1.port, mint("o1"))
            await subscribe(o1, "room:k", presence=True)
            o2 = await connect(n2.port, mint("o2"))
            await subscribe(o2, "room:k", presence=True)
            # alice only on n3; carol on n3 and n2
            alice = await connect(n3.port, mint("alice"))
            await subscribe(alice, "room:k")
            carol3 = await connect(n3.port, mint("carol"))
            await subscribe(carol3, "room:k")
            carol2 = await connect(n2.port, mint("carol"))
            await subscribe(carol2, "room:k")
            hh.wait_for(lambda: pget(n1.port, "/presence/room:k")[1]["count"] == 4, IO,
                        "o1, o2, alice, carol")
            mid = hh.publish(n1.port, "room:k", "before the kill")
            await recv_until(o1, lambda m: m.get("id") == mid)
            await recv_until(o2, lambda m: m.get("id") == mid)
            n3.signal(signal.SIGKILL)
            t0 = time.monotonic()
            leave1, seen1 = await recv_until(o1, lambda m: m.get("type") == "leave",
                                             timeout=LEASE_S + IO)
            took = time.monotonic() - t0
            print("alice's leave reached o1 %.2f s after SIGKILL (presence_lease %d s)" %
                  (took, LEASE_S), file=sys.stderr)
            self.assertEqual(leave1["member"]["sub"], "alice")
            self.assertLessEqual(took, LEASE_S + 1.0,
                                 "alice left %.1f s after the kill (lease %d s)" % (took, LEASE_S))
            leave2, _ = await recv_until(o2, lambda m: m.get("type") == "leave")
            self.assertEqual(leave2["member"]["sub"], "alice")
            # no second leave (both survivors renew and reap), none for carol (on n2 too)
            await asyncio.sleep(LEASE_S)
            mid = hh.publish(n2.port, "room:k", "after")
            _, seen = await recv_until(o1, lambda m: m.get("id") == mid)
            self.assertEqual(presence_events(seen), [])
            _, seen = await recv_until(o2, lambda m: m.get("id") == mid)
            self.assertEqual(presence_events(seen), [])
            for n in (n1, n2):
                body = pget(n.port, "/presence/room:k")[1]
                self.assertEqual(sorted(m["sub"] for m in body["members"]),
                                 ["carol", "o1", "o2"], body)
                carol = [m for m in body["members"] if m["sub"] == "carol"][0]
                self.assertEqual(len(carol["conns"]), 1, carol)
            for c in (o1, o2, carol2):
                await c.close()
        run(go())
        # nothing of the dead node is left in Redis; the others' members are gone too
        hh.wait_for(lambda: pget(n1.port, "/presence/room:k")[1]["count"] == 0, IO, "all left")
        self.assertEqual(redis.cli("ZCARD", "herald:pnodes").strip(), "2")
        self.assertEqual(redis.cli("EXISTS", "herald:pm:room:k").strip(), "0")

    def test_redis_restart_mirrors_members_again(self):
        """Redis restarts without its data: each node mirrors its members again once it is
        back (the snapshot is whole again), and a member that left during the outage is not
        listed."""
        redis = rs.start_redis(self)
        n1, n2 = self.node(redis), self.node(redis)

        async def go():
            obs = await connect(n1.port, mint("obs"))
            await subscribe(obs, "room:r", presence=True)
            stay = await connect(n2.port, mint("stay"))
            await subscribe(stay, "room:r")
            gone = await connect(n2.port, mint("gone"))
            await subscribe(gone, "room:r")
            hh.wait_for(lambda: pget(n1.port, "/presence/room:r")[1].get("count") == 3, IO,
                        "three members")
            redis.kill()
            st, body = pget(n1.port, "/presence/room:r")
            self.assertEqual(st, 503, body)  # no Redis: no snapshot, said so
            await gone.close()
            await asyncio.sleep(0.5)
            redis.start()
            hh.wait_for(lambda: pget(n1.port, "/presence/room:r")[0] == 200 and
                        pget(n1.port, "/presence/room:r")[1]["count"] == 2, 3 * IO,
                        "the members mirrored again")
            body = pget(n2.port, "/presence/room:r")[1]
            self.assertEqual(sorted(m["sub"] for m in body["members"]), ["obs", "stay"], body)
            await stay.close()
            await obs.close()
        run(go())
        hh.wait_for(lambda: pget(n1.port, "/presence/room:r")[1].get("count") == 0, IO,
                    "nobody left")

    def test_pages_by_lex_range(self):
        """Pages come from P pz:<channel> by lex range: keys that prefix one another in byte
        order, a member whose connections span the function's batches (3 tabs, pages of 1:
        batches of 2 entries), a cursor that was never a key; every key of the channel gone
        from Redis after the last leave."""
        redis = rs.start_redis(self)
        n1, n2 = self.node(redis), self.node(redis)

        async def go():
            tabs = []
            for sub, node in (("b", n1), ("ba", n2), ("a", n1), ("a", n2), ("a", n1),
                              ("c", n2), ("b!", n1)):
                ws = await connect(node.port, mint(sub))
                await subscribe(ws, "room:lex")
                tabs.append(ws)
            hh.wait_for(lambda: pget(n1.port, "/presence/room:lex")[1].get("count") == 5, IO,
                        "five members")
            for limit in (1, 2, 4, 5):
                got, cursor = [], None
                while True:
                    q = "?limit=%d" % limit + ("&cursor=" + cursor if cursor else "")
                    st, page = pget(n2.port, "/presence/room:lex" + q)
                    self.assertEqual((st, page["count"]), (200, 5), page)
                    self.assertLessEqual(len(page["members"]), limit)
                    got += [(m["sub"], len(m["conns"])) for m in page["members"]]
                    cursor = page["next"]
                    if cursor is None:
                        break
                # byte order: "b" before "b!" (a prefix first), "b!" before "ba" ('!' < 'a')
                self.assertEqual(got, [("a", 3), ("b", 1), ("b!", 1), ("ba", 1), ("c", 1)],
                                 limit)
            st, page = pget(n1.port, "/presence/room:lex?limit=2&cursor=b0")
            self.assertEqual(([m["sub"] for m in page["members"]], page["next"]),
                             (["ba", "c"], None), page)
            st, page = pget(n1.port, "/presence/room:lex?limit=2&cursor=a")
            self.assertEqual(([m["sub"] for m in page["members"]], page["next"]),
                             (["b", "b!"], "b!"), page)
            a = pget(n1.port, "/presence/room:lex?limit=1")[1]["members"][0]
            self.assertEqual(a["conns"], sorted(a["conns"]), a)
            self.assertEqual(len({c.split("-")[0] for c in a["conns"]}), 2, a)
            for ws in tabs:
                await ws.close()
        run(go())
        hh.wait_for(lambda: pget(n1.port, "/presence/room:lex")[1].get("count") == 0, IO,
                    "nobody left")
        left = redis.cli("--scan", "--pattern", "*room:lex*").split()
        self.assertEqual(left, [], "keys left in Redis: %r" % left)

    def test_channel_budget_per_node(self):
        """presence_max_channels holds under Redis too: this node tracks 2 channels; joins past
        them are not listed (counted, logged), the subscriptions served; the budget frees."""
        redis = rs.start_redis(self)
        h = self.start_herald(conf_raw=conf_text({"presence_max_channels": "2"}),
                              overrides=["redis unix://" + redis.sock])
        hh.require_websocket(h.port, "/ws")

        async def go():
            c = await connect(h.port, mint("pat"))
            for i in range(5):
                r = await subscribe(c, "room:rb%d" % i, ref=i)
                self.assertEqual(r["type"], "subscribed", r)
            hh.wait_for(lambda: hh.stats(h.port)["presence"]["refused"] == 3, IO,
                        "three joins past the budget")
            counts = [pget(h.port, "/presence/room:rb%d" % i)[1]["count"] for i in range(5)]
            self.assertEqual(counts, [1, 1, 0, 0, 0])
            self.assertEqual(hh.stats(h.port)["presence"]["channels"], 2)
            mid = hh.publish(h.port, "room:rb4", "still served")
            m, _ = await recv_until(c, lambda m: m.get("type") == "message")
            self.assertEqual(m["id"], mid)
            await c.close()
            hh.wait_for(lambda: hh.stats(h.port)["presence"]["channels"] == 0, IO,
                        "the channels left the count with their member")
            d = await connect(h.port, mint("quinn"))
            await subscribe(d, "room:rb4")
            hh.wait_for(lambda: pget(h.port, "/presence/room:rb4")[1]["count"] == 1, IO,
                        "room:rb4 tracked once there is room")
            await d.close()
        run(go())
        h.wait_log(r"presence joins refused: presence_max_channels \(2\)")


if __name__ == "__main__":
    hh.main()
