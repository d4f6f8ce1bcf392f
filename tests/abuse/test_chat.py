# SPDX-License-Identifier: MIT
"""Chat features under attack (docs/chat.md): presence snapshots of a crowded channel, receipted
messages to a subscriber that never acks, and page requests in bursts.

- Presence pages cost the page, not the channel: a channel of 3,000 members (anonymous SSE
  subscribers) is paged by cursor over and over; the server's CPU for 4,000 one-member pages of
  it stays within 3x that of 4,000 pages of a 10-member channel (before, every page collected
  and sorted the whole channel under the broker's lock: 1.81 s of CPU against 0.02 s, Release,
  load 13), a walk of the crowd by cursor lists every member once in key order, and RSS stays
  within 64 MB. With Redis, the same for redis-server's CPU (1,000 pages each).
- Acked delivery: a subscriber on 8 channels with "ack":true that never acks 2,000 receipted
  messages holds 256 of them (receipts_dropped counts exactly the other 1,744), and acking each
  channel's last id releases exactly the 256 newest: the last 32 of each channel (the budget
  drops a subscription's oldest first).
- One user's connections do not grow a page: a sub with 2,000 SSE connections on a channel
  (one token, as a script would hold it) is one entry of every page that includes it, with
  at most 10 connection ids (HD_PRESENCE_MEMBER_CONNS) and "conn_count":2000, so every page
  (GET /presence, /ws {"op":"presence"}, a short poll's ?presence=1) stays under a size fixed
  by its limit alone (before, that entry listed all 2,000: 40 KB); the member's connections
  are paged by ?member= (each id once, in byte order); 2,000 such pages leave RSS within 64 MB
  and others served. With Redis, the same (herald_pget and herald_pconns).
- A /ws client sending 400 page requests (of a 20-member channel) in one burst gets 400
  answers, each a page or rate_limited (at most 4 unanswered per connection), and the node
  serves others meanwhile; one that keeps asking pages of 1,000 members, 4 at a time, and
  reads none is cut at max_queue_bytes (close 1013, slow_subscribers_dropped).
"""
import asyncio
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_support import MB, AbuseTestCase, RssSampler, hh  # noqa: E402
import redis_support as rs  # noqa: E402  (tests/integration)

SECRET = "abuse-chat-secret-of-more-than-32-bytes"
PUBKEY = "abuse-chat-publish-key"
IO = 20.0


def conf_text(extra=None):
    merged = dict(hh.DEFAULT_CONF)
    merged.update({"auth_jwt_secret": SECRET, "ws_client_publish": "on",
                   "publish_key": PUBKEY, "max_connections": "6000"})
    merged.update(extra or {})
    return hh.conf_text(merged) + \
        "channel_rule anon:* subscribe=any publish=subscriber presence=on\n"


def cpu_ticks(pid):
    """utime + stime of the process (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def pipelined_gets(port, paths, batch=100):
    """GETs paths on one keep-alive connection, batch requests written at once; returns the
    (status, body) of each."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=IO) as s:
        buf = b""
        for i in range(0, len(paths), batch):
            chunk = paths[i:i + batch]
            s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode()
                               for p in chunk))
            got = 0
            while got < len(chunk):
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end].decode("latin-1")
                    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                    n = int(m.group(1)) if m else 0
                    if len(buf) >= end + 4 + n:
                        out.append((int(head.split()[1]), buf[end + 4:end + 4 + n]))
                        buf = buf[end + 4 + n:]
                        got += 1
                        continue
                data = s.recv(1 << 16)
                if not data:
                    raise AssertionError("connection closed after %d answers" % len(out))
                buf += data
    return out


def open_members(port, channel, n):
    """n anonymous SSE subscribers of channel (each a presence member): their sockets."""
    socks = []
    req = b"GET /sse/%s HTTP/1.1\r\nHost: t\r\n\r\n" % channel.encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=IO)
        s.sendall(req)
        socks.append(s)
    return socks


def presence(port, channel, query=""):
    status, body, _ = hh.get_json(port, "/presence/%s%s" % (channel, query))
    assert status == 200, (status, body)
    return body


async def ws_anon(port):
    """/ws as an anonymous client (auth is on: it says so with {"op":"auth"} first)."""
    ws = await hh.ws_connect(port, "/ws")
    await ws.send(json.dumps({"op": "auth", "ref": "auth"}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), IO))
        if m.get("ref") == "auth":
            assert m["type"] == "authenticated", m
            return ws


def member_key(m):
    return m.get("sub") or m["conn"]


MEMBER_CONNS = 10  # HD_PRESENCE_MEMBER_CONNS: connection ids on a member's entry, at most
CONN_ID_MAX = 40  # bytes of a connection id ("<node>-<hex>"), at most


def entry_bound(member):
    """Bytes of a member's entry on a page, at most, whatever its connections: its object,
    MEMBER_CONNS quoted ids and the count."""
    return len(json.dumps(member, separators=(",", ":"))) + MEMBER_CONNS * (CONN_ID_MAX + 3) + \
        len(',"conns":[],"conn_count":') + 20


def open_user(port, channel, token, n):
    """n SSE subscribers of channel with one token (one member, n connections): their sockets,
    each read up to its response head."""
    socks = []
    req = b"GET /sse/%s?token=%s HTTP/1.1\r\nHost: t\r\n\r\n" % (channel.encode(), token.encode())
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=IO)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, "an SSE subscriber was closed: %r" % head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return socks


class PresencePages(AbuseTestCase):
    def test_pages_of_a_crowd_cost_the_page(self):
        h = self.start_herald(conf_raw=conf_text())
        port = h.port
        crowd, few = 3000, 10
        socks = open_members(port, "anon:crowd", crowd) + open_members(port, "anon:few", few)
        self.addCleanup(lambda: [s.close() for s in socks])
        hh.wait_for(lambda: presence(port, "anon:crowd", "?limit=1")["count"] == crowd, IO,
                    "%d members" % crowd)
        hh.wait_for(lambda: presence(port, "anon:few", "?limit=1")["count"] == few, IO,
                    "%d members" % few)
        sampler = RssSampler(h)

        # A walk of the crowd by cursor: every member once, in byte order of their keys.
        keys, cursor = [], None
        while True:
            page = presence(port, "anon:crowd", "?limit=1000" +
                            ("&cursor=" + cursor if cursor else ""))
            self.assertEqual(page["count"], crowd)
            keys += [member_key(m) for m in page["members"]]
            cursor = page["next"]
            if cursor is None:
                break
        self.assertEqual(len(keys), crowd)
        self.assertEqual(keys, sorted(keys, key=lambda k: k.encode()))
        small = [member_key(m) for m in presence(port, "anon:few", "?limit=100")["members"]]

        # The attack: one-member pages from the middle of the crowd, against the same pages of
        # the small channel, in alternating rounds (CPU ticks of 10 ms: rounds long enough).
        crowd_path = "/presence/anon:crowd?limit=1&cursor=" + keys[crowd // 2]
        few_path = "/presence/anon:few?limit=1&cursor=" + small[few // 2]
        spent = {"crowd": 0, "few": 0}
        for _ in range(2):
            for what, path in (("crowd", crowd_path), ("few", few_path)):
                t0 = cpu_ticks(h.pid)
                answers = pipelined_gets(port, [path] * 2000)
                spent[what] += cpu_ticks(h.pid) - t0
                sampler.sample()
                self.assertEqual({st for st, _ in answers}, {200})
                page = json.loads(answers[-1][1])
                want = keys[crowd // 2 + 1] if what == "crowd" else small[few // 2 + 1]
                self.assertEqual([member_key(m) for m in page["members"]], [want])
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print("4,000 pages: %d ticks on %d members, %d ticks on %d (load %s)" %
              (spent["crowd"], crowd, spent["few"], few, load))
        self.assertLess(spent["crowd"], 3 * max(spent["few"], 5),
                        "a page of %d members costs more than 3x a page of %d: %r" %
                        (crowd, few, spent))
        self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "4,000 pages of a 3,000-member channel")

    def test_pages_of_a_crowd_cost_redis_the_page(self):
        """With Redis the members are there and herald_pget reads them: redis-server's CPU for
        1,000 one-member pages of 3,000 members stays within 3x that of a 10-member channel
        (before, each page read and sorted the whole channel inside Redis)."""
        redis = rs.start_redis(self)
        h = self.start_herald(conf_raw=conf_text(), overrides=["redis unix://" + redis.sock])
        port = h.port
        crowd, few = 3000, 10
        socks = open_members(port, "anon:crowd", crowd) + open_members(port, "anon:few", few)
        self.addCleanup(lambda: [s.close() for s in socks])
        hh.wait_for(lambda: presence(port, "anon:crowd", "?limit=1")["count"] == crowd, IO,
                    "%d members in Redis" % crowd)
        hh.wait_for(lambda: presence(port, "anon:few", "?limit=1")["count"] == few, IO,
                    "%d members in Redis" % few)
        first = [member_key(m) for m in presence(port, "anon:crowd", "?limit=1000")["members"]]
        crowd_path = "/presence/anon:crowd?limit=1&cursor=" + first[500]
        small = [member_key(m) for m in presence(port, "anon:few", "?limit=100")["members"]]
        few_path = "/presence/anon:few?limit=1&cursor=" + small[few // 2]
        spent = {"crowd": 0, "few": 0}
        for _ in range(2):
            for what, path in (("crowd", crowd_path), ("few", few_path)):
                t0 = cpu_ticks(redis.proc.pid)
                answers = pipelined_gets(port, [path] * 500)
                spent[what] += cpu_ticks(redis.proc.pid) - t0
                self.assertEqual({st for st, _ in answers}, {200})
                page = json.loads(answers[-1][1])
                self.assertEqual((page["count"], len(page["members"])),
                                 (crowd if what == "crowd" else few, 1), page)
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print("1,000 pages in Redis: %d ticks on %d members, %d ticks on %d (load %s)" %
              (spent["crowd"], crowd, spent["few"], few, load))
        self.assertLess(spent["crowd"], 3 * max(spent["few"], 5),
                        "a page of %d members costs Redis more than 3x a page of %d: %r" %
                        (crowd, few, spent))
        st, _, body = hh.request(port, "GET", "/healthz", timeout=2)  # the Redis form of it
        self.assertEqual((st, json.loads(body).get("redis")), (200, "connected"), body)

    def test_ws_page_burst_bounded(self):
        h = self.start_herald(conf_raw=conf_text())
        port = h.port
        socks = open_members(port, "anon:burst", 20)
        self.addCleanup(lambda: [s.close() for s in socks])
        hh.wait_for(lambda: presence(port, "anon:burst", "?limit=1")["count"] == 20, IO,
                    "20 members")
        sampler = RssSampler(h)

        async def go():
            ws = await ws_anon(port)
            n = 400
            for i in range(n):
                await ws.send(json.dumps({"op": "presence", "channel": "anon:burst",
                                          "limit": 1000, "ref": i}))
            kinds = {}
            refs = set()
            while len(refs) < n:
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                if "ref" not in m:
                    continue
                refs.add(m["ref"])
                if m["type"] == "presence":
                    self.assertEqual((m["count"], len(m["members"])), (20, 20), m)
                    kinds["page"] = kinds.get("page", 0) + 1
                else:
                    self.assertEqual((m["type"], m["code"]), ("error", "rate_limited"), m)
                    self.assertIn("unanswered", m["error"])
                    kinds["refused"] = kinds.get("refused", 0) + 1
                sampler.sample()
            self.assertEqual(refs, set(range(n)))
            self.assertGreaterEqual(kinds.get("page", 0), 4, kinds)
            print("400 page requests in a burst: %r" % kinds)
            # the connection still asks and is answered once the burst is over
            await ws.send(json.dumps({"op": "presence", "channel": "anon:burst",
                                      "limit": 1, "ref": "after"}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                if m.get("ref") == "after":
                    self.assertEqual(m["type"], "presence", m)
                    break
            await ws.close()
        asyncio.run(asyncio.wait_for(go(), 60))
        self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "a burst of 400 page requests")

    def test_ws_pages_never_read_cut_at_the_queue_bound(self):
        """A /ws client asking pages of 1,000 members (45 KB each), 4 at a time (what the
        connection may have unanswered) every 10 ms, and reading none, is cut once the kernel's
        buffers are full and its output passes max_queue_bytes (1 MB: the slow-subscriber
        rule, close 1013); nothing else is held for it."""
        h = self.start_herald(conf_raw=conf_text())
        port = h.port
        socks = open_members(port, "anon:big", 1000)
        self.addCleanup(lambda: [s.close() for s in socks])
        hh.wait_for(lambda: presence(port, "anon:big", "?limit=1")["count"] == 1000, IO,
                    "1,000 members")
        sampler = RssSampler(h)
        w = hh.RawWS(port, "/ws", rcvbuf=4096)
        self.addCleanup(w.client.close)
        w.send(hh.ws_frame(hh.OP_TEXT, json.dumps({"op": "auth"}).encode()))
        ask = b"".join(hh.ws_frame(hh.OP_TEXT, json.dumps(
            {"op": "presence", "channel": "anon:big", "limit": 1000, "ref": i}).encode())
            for i in range(4))
        cut = False
        for rnd in range(500):  # 2,000 pages asked at most, 90 MB if all were answered
            try:
                w.send(ask)
            except OSError:
                break  # cut
            if rnd % 10 == 9:
                sampler.sample()
                cut = hh.stats(port)["slow_subscribers_dropped"] == 1
                if cut:
                    break
            time.sleep(0.01)
        hh.wait_for(lambda: hh.stats(port)["slow_subscribers_dropped"] == 1, IO,
                    "the reader that never reads cut")
        sampler.sample()
        h.wait_log(r"slow subscriber: \d+ bytes queued")
        print("unread pages: cut after %d rounds of 4 asks" % (rnd + 1))
        self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "unread pages of 1,000 members")


class OneMemberManyConnections(AbuseTestCase):
    """A sub with 2,000 connections on a channel with 20 other members (20,000 files at most
    for the test and herald: 4,000 here)."""
    CONNS = 2000
    OTHERS = 20

    def crowd(self, port):
        """The channel room:big: "mallory" with CONNS connections, user00..user19 with one."""
        info = {"name": "Mallory"}
        socks = open_user(port, "room:big", hh.jwt_token(SECRET, "mallory", info=info),
                          self.CONNS)
        for i in range(self.OTHERS):
            socks += open_user(port, "room:big", hh.jwt_token(SECRET, "user%02d" % i), 1)
        self.addCleanup(lambda: [s.close() for s in socks])
        hh.wait_for(lambda: presence(port, "room:big", "?member=mallory&limit=1")["conn_count"]
                    == self.CONNS, IO, "mallory's %d connections listed" % self.CONNS)
        hh.wait_for(lambda: presence(port, "room:big", "?limit=1")["count"] == self.OTHERS + 1,
                    IO, "%d members" % (self.OTHERS + 1))
        return {"sub": "mallory", "info": info}

    def check_page(self, body, limit, mallory):
        """A page's members: mallory's entry bounded, each entry's ids within its count; the
        page's size within what its limit allows."""
        page = json.loads(body) if isinstance(body, (bytes, str)) else body
        members = page["members"]
        self.assertLessEqual(len(members), limit)
        bound = 200 + sum(entry_bound({"sub": m["sub"], "info": m["info"]} if "info" in m
                                      else {"sub": m["sub"]}) for m in members)
        size = len(body) if isinstance(body, (bytes, str)) else len(json.dumps(page))
        self.assertLess(size, bound, "a page of %d members: %d bytes" % (len(members), size))
        for m in members:
            self.assertLessEqual(len(m["conns"]), MEMBER_CONNS, m)
            self.assertEqual(len(m["conns"]), min(m["conn_count"], MEMBER_CONNS), m)
            self.assertEqual(m["conns"], sorted(m["conns"]), m)
            if m["sub"] == "mallory":
                self.assertEqual((m["info"], m["conn_count"]), (mallory["info"], self.CONNS))
        return page

    def check_member_pages(self, port, limit):
        """mallory's connections by ?member=: every id once, in byte order; every page within
        its limit."""
        conns, cursor, pages = [], None, 0
        while True:
            page = presence(port, "room:big", "?member=mallory&limit=%d%s" %
                            (limit, "&cursor=" + cursor if cursor else ""))
            self.assertEqual((page["member"]["sub"], page["conn_count"]), ("mallory", self.CONNS))
            self.assertLessEqual(len(page["conns"]), limit)
            conns += page["conns"]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
            self.assertEqual(cursor, conns[-1])
        self.assertEqual(len(conns), self.CONNS)
        self.assertEqual(len(set(conns)), self.CONNS)
        self.assertEqual(conns, sorted(conns, key=lambda c: c.encode()))
        self.assertEqual(pages, -(-self.CONNS // limit))
        # not a member, and a page after the last id
        self.assertEqual(presence(port, "room:big", "?member=nobody"),
                         {"channel": "room:big", "conn_count": 0, "member": None, "conns": [],
                          "next": None})
        after = presence(port, "room:big", "?member=mallory&cursor=" + conns[-1])
        self.assertEqual((after["conns"], after["next"], after["conn_count"]),
                         ([], None, self.CONNS))
        return conns

    def attack(self, port, h, mallory, redis=None):
        # every page holding mallory, through each way of asking
        self.check_page(hh.request(port, "GET", "/presence/room:big?limit=1000")[2], 1000,
                        mallory)
        walk, cursor = [], None
        while True:  # one member a page: mallory's page is as small as the others'
            body = hh.request(port, "GET", "/presence/room:big?limit=1%s" %
                              ("&cursor=" + cursor if cursor else ""))[2]
            page = self.check_page(body, 1, mallory)
            walk += [m["sub"] for m in page["members"]]
            cursor = page["next"]
            if cursor is None:
                break
        self.assertEqual(walk, sorted(["mallory"] + ["user%02d" % i for i in range(self.OTHERS)]))
        st, body, _ = hh.get_json(port, "/poll/room:big?presence=1&token=" +
                                  hh.jwt_token(SECRET, "user00"))
        self.assertEqual(st, 200, body)
        self.check_page(json.dumps(body["presence"]), 100, mallory)

        async def over_ws():
            ws = await hh.ws_connect(port, "/ws")
            await ws.send(json.dumps({"op": "auth", "token": hh.jwt_token(SECRET, "user00"),
                                      "ref": "auth"}))
            await ws.send(json.dumps({"op": "presence", "channel": "room:big", "limit": 1000,
                                      "ref": "page"}))
            await ws.send(json.dumps({"op": "presence", "channel": "room:big",
                                      "member": "mallory", "limit": 7, "ref": "conns"}))
            got = {}
            while len(got) < 3:
                m = json.loads(await asyncio.wait_for(ws.recv(), IO))
                if "ref" in m:
                    got[m["ref"]] = m
            await ws.close()
            return got
        got = asyncio.run(asyncio.wait_for(over_ws(), 60))
        self.assertEqual(got["auth"]["type"], "authenticated", got)
        self.assertEqual(got["page"]["type"], "presence", got["page"])
        self.check_page(json.dumps(got["page"]), 1000, mallory)
        conns = self.check_member_pages(port, 1000)
        self.check_member_pages(port, 333)
        c = got["conns"]
        self.assertEqual((c["type"], c["member"], c["conn_count"], c["conns"], c["next"]),
                         ("presence", mallory, self.CONNS, conns[:7], conns[6]), c)

        # the attack: pages of the member and of the channel, over and over
        sampler = RssSampler(h)
        pid = redis.proc.pid if redis else h.pid
        t0 = cpu_ticks(pid)
        answers = pipelined_gets(port, ["/presence/room:big?limit=1000",
                                        "/presence/room:big?member=mallory&limit=1000"] * 500)
        spent = cpu_ticks(pid) - t0
        sampler.sample()
        self.assertEqual({st for st, _ in answers}, {200})
        biggest = max(len(b) for _, b in answers[0::2])
        self.check_page(answers[-2][1], 1000, mallory)
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print("one member with %d connections%s (all its ids: %d bytes): 1,000 pages, the "
              "largest of members %d bytes, %d ticks of %s CPU (load %s)" %
              (self.CONNS, " (Redis)" if redis else "",
               len(json.dumps(conns, separators=(",", ":"))), biggest, spent,
               "redis-server's" if redis else "herald's", load))
        if redis:
            st, _, body = hh.request(port, "GET", "/healthz", timeout=2)  # the Redis form of it
            self.assertEqual((st, json.loads(body).get("redis")), (200, "connected"), body)
        else:
            self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "pages of a member with %d connections" %
                              self.CONNS)

    def test_member_with_thousands_of_connections(self):
        h = self.start_herald(conf_raw=conf_text() +
                              "channel_rule room:* subscribe=auth presence=on\n")
        self.attack(h.port, h, self.crowd(h.port))

    def test_member_with_thousands_of_connections_redis(self):
        redis = rs.start_redis(self)
        h = self.start_herald(conf_raw=conf_text() +
                              "channel_rule room:* subscribe=auth presence=on\n",
                              overrides=["redis unix://" + redis.sock])
        self.attack(h.port, h, self.crowd(h.port), redis)


class UnackedReceipts(AbuseTestCase):
    def test_unacked_bounded_and_newest_kept(self):
        h = self.start_herald(conf_raw=conf_text())
        port = h.port
        sampler = RssSampler(h)
        channels = ["anon:ack%d" % i for i in range(8)]
        total = 2000

        async def go():
            sub = await ws_anon(port)
            pub = await ws_anon(port)
            for c in channels:
                await sub.send(json.dumps({"op": "subscribe", "channel": c, "ack": True,
                                           "ref": c}))
            ok = set()
            while len(ok) < len(channels):
                m = json.loads(await asyncio.wait_for(sub.recv(), IO))
                if m.get("type") == "subscribed":
                    ok.add(m["channel"])
            # The publisher writes every message at once; the subscriber reads them all and
            # acks none.
            for i in range(total):
                await pub.send(json.dumps({"op": "publish", "channel": channels[i % 8],
                                           "data": "m%d" % i, "key": PUBKEY, "receipt": True}))
            last = {}
            ids = {c: [] for c in channels}
            got = 0
            while got < total:
                m = json.loads(await asyncio.wait_for(sub.recv(), IO))
                if m.get("type") == "message":
                    ids[m["channel"]].append(m["id"])
                    last[m["channel"]] = m["id"]
                    got += 1
                    if got % 200 == 0:
                        sampler.sample()
            delivered = published = 0
            while published < total or delivered < total:
                m = json.loads(await asyncio.wait_for(pub.recv(), IO))
                if m.get("type") == "published":
                    published += 1
                elif m.get("type") == "receipt":
                    self.assertEqual(m["status"], "delivered", m)
                    delivered += 1
                elif m.get("type") == "error":
                    self.fail("publish refused: %r" % m)
            hh.wait_for(lambda: hh.stats(port)["receipts_dropped"] == total - 256, IO,
                        "receipts_dropped = %d" % (total - 256))
            # Acking each channel's last id releases the 256 held: the newest 32 of each.
            for c in channels:
                await sub.send(json.dumps({"op": "ack", "channel": c, "id": last[c]}))
            acked = []
            while len(acked) < 256:
                m = json.loads(await asyncio.wait_for(pub.recv(), IO))
                if m.get("type") == "receipt":
                    self.assertEqual(m["status"], "acked", m)
                    acked.append((m["channel"], m["id"]))
            # nothing more comes: a ping's pong is the next frame
            await pub.send(json.dumps({"op": "ping", "ref": "p"}))
            m = json.loads(await asyncio.wait_for(pub.recv(), IO))
            self.assertEqual(m.get("type"), "pong", m)
            want = sorted((c, i) for c in channels for i in ids[c][-32:])
            self.assertEqual(sorted(acked), want)
            await sub.close()
            await pub.close()
        asyncio.run(asyncio.wait_for(go(), 90))
        self.assertEqual(hh.stats(port)["receipts_dropped"], total - 256)
        self.assertServed(port)
        self.assertRssBounded(sampler, 64 * MB, "2,000 receipted messages never acked")


if __name__ == "__main__":
    hh.main()
