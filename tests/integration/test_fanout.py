# SPDX-License-Identifier: MIT
"""The 1,000-subscriber fan-out ("done when" of the push issue), once per transport.

herald runs 2 workers; 1,000 subscriber connections come from 127.0.0.2..251 (bound before
connect, so SO_REUSEPORT spreads them over both workers); 50 messages are published over HTTP;
every subscriber must receive every message exactly once and in order. SSE and long-poll
subscribers are live before the first publish (checked through /channels and /stats); pollers
re-poll with `next` until they have all 50. WebSocket subscribers use python3-websockets (nobody
here wrote it); a /ws/{channel} that does not upgrade fails the test.
"""
import asyncio
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import get_json, wait_for  # noqa: E402

N_SUBS = 1000
N_MSGS = 50
DEADLINE = 50.0  # seconds for one transport's whole run


def source_ip(i):
    return "127.0.0.%d" % (2 + i % 250)


def publish_all(port, channel, n, pause=0.0, tag="m"):
    """Publishes n messages on one keep-alive connection; returns [(id, payload)] in order."""
    out = []
    pub = hh.Publisher(port)
    try:
        for i in range(n):
            body = "%s-%d %s" % (tag, i, "\u00e9" * (i % 7))
            out.append((pub(channel, body), body))
            if pause:
                time.sleep(pause)
    finally:
        pub.close()
    return out


async def open_conn(port, i):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip(i), 0),
                                         limit=1 << 20)


async def read_response(reader):
    """(status, body) of one Content-Length response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    if length is None:
        raise AssertionError("no Content-Length: %r" % head)
    return status, await reader.readexactly(length)


def poll_request(path):
    return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()


class FanoutCase(hh.HeraldTestCase):
    CONF = {"max_connections": "4000", "history_size": "200", "poll_max_messages": "20",
            "longpoll_timeout": "30s", "keepalive_timeout": "60s", "max_queue_bytes": "1m"}

    def setUp(self):
        self.h = self.start_herald(conf=self.CONF, workers=2)
        self.port = self.h.port

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, DEADLINE))

    def check(self, results, published, what):
        self.assertEqual(len(published), N_MSGS)
        self.assertEqual(len(results), N_SUBS)
        bad = [k for k, got in enumerate(results) if got != published]
        if bad:
            k = bad[0]
            self.fail("%s: %d of %d subscribers got a wrong sequence; #%d got %d messages: %r"
                      % (what, len(bad), N_SUBS, k, len(results[k]), results[k][:5]))

    async def publish_in_thread(self, channel, pause=0.0):
        return await asyncio.get_running_loop().run_in_executor(
            None, publish_all, self.port, channel, N_MSGS, pause)

    async def wait_in_thread(self, cond, what):
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(cond, timeout=20.0, what=what, interval=0.05))

    async def gather_batches(self, factory, n, batch=100):
        out = []
        for start in range(0, n, batch):
            out += await asyncio.gather(*(factory(i) for i in range(start, min(n, start + batch))))
        return out


class TestFanoutSse(FanoutCase):
    def test_sse_1000_subscribers(self):
        channel = "fan-sse"

        async def subscriber(i, ready):
            reader, writer = await open_conn(self.port, i)
            writer.write(poll_request("/sse/" + channel))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise AssertionError("subscriber %d: %r" % (i, head))
            first = await reader.readuntil(b"\n\n")
            if not first.startswith(b"retry: "):
                raise AssertionError("subscriber %d: first block %r" % (i, first))
            ready.append(i)
            return reader, writer

        async def receive(reader, writer):
            got = []
            try:
                while len(got) < N_MSGS:
                    block = hh.SseBlock(await reader.readuntil(b"\n\n"))
                    if block.is_event:
                        got.append((block.id, block.text))
            finally:
                writer.close()
            return got

        async def run():
            ready = []
            conns = await self.gather_batches(lambda i: subscriber(i, ready), N_SUBS)
            self.assertEqual(len(ready), N_SUBS)
            await self.wait_in_thread(
                lambda: get_json(self.port, "/channels/" + channel)[1]["subscribers"] == N_SUBS,
                "1000 SSE subscribers")
            stats = get_json(self.port, "/stats")[1]
            self.assertEqual(stats["connections"]["sse"], N_SUBS)
            receivers = [asyncio.ensure_future(receive(r, w)) for r, w in conns]
            published = await self.publish_in_thread(channel)
            return await asyncio.gather(*receivers), published

        t0 = time.monotonic()
        results, published = self.run_async(run())
        self.check(results, published, "SSE")
        sys.stderr.write("[sse fan-out: %.1f s] " % (time.monotonic() - t0))
        stats = get_json(self.port, "/stats")[1]
        self.assertEqual(stats["slow_subscribers_dropped"], 0)
        # each message reached both workers once, and was written to every subscriber once
        self.assertEqual(stats["messages"]["fanned_out"], 2 * N_MSGS)
        self.assertEqual(stats["messages"]["delivered"], N_SUBS * N_MSGS)


class TestFanoutLongPoll(FanoutCase):
    def test_longpoll_1000_subscribers(self):
        channel = "fan-lp"
        start = publish_all(self.port, channel, 1, tag="start")[0][0]

        async def subscriber(i):
            reader, writer = await open_conn(self.port, i)
            got, since, polls = [], start, 0
            try:
                while len(got) < N_MSGS:
                    writer.write(poll_request("/lp/%s?since=%s&timeout=30" % (channel, since)))
                    status, body = await read_response(reader)
                    polls += 1
                    if status != 200:
                        raise AssertionError("poller %d: %d %r" % (i, status, body))
                    j = json.loads(body)
                    if j["gap"]:
                        raise AssertionError("poller %d: gap %r" % (i, j))
                    got += [(m["id"], m["data"]) for m in j["messages"]]
                    since = j["next"]
            finally:
                writer.close()
            return got

        async def run():
            pollers = []
            for start_i in range(0, N_SUBS, 100):
                pollers += [asyncio.ensure_future(subscriber(i))
                            for i in range(start_i, start_i + 100)]
                await asyncio.sleep(0.01)
            await self.wait_in_thread(
                lambda: get_json(self.port, "/stats")[1]["connections"]["longpoll"] == N_SUBS,
                "1000 held long polls")
            published = await self.publish_in_thread(channel)
            return await asyncio.gather(*pollers), published

        t0 = time.monotonic()
        results, published = self.run_async(run())
        self.check(results, published, "long poll")
        sys.stderr.write("[long-poll fan-out: %.1f s] " % (time.monotonic() - t0))


class TestFanoutShortPoll(FanoutCase):
    def test_short_poll_1000_subscribers(self):
        channel = "fan-poll"
        start = publish_all(self.port, channel, 1, tag="start")[0][0]
        first_polls = []

        async def subscriber(i):
            rnd = random.Random(i)
            reader, writer = await open_conn(self.port, i)
            got, since, polls = [], start, 0
            try:
                while len(got) < N_MSGS:
                    writer.write(poll_request("/poll/%s?since=%s" % (channel, since)))
                    status, body = await read_response(reader)
                    polls += 1
                    if polls == 1:
                        first_polls.append(i)
                    if status != 200:
                        raise AssertionError("poller %d: %d %r" % (i, status, body))
                    j = json.loads(body)
                    if j["gap"]:
                        raise AssertionError("poller %d: gap %r" % (i, j))
                    got += [(m["id"], m["data"]) for m in j["messages"]]
                    since = j["next"]
                    if len(got) < N_MSGS:
                        await asyncio.sleep(0.15 + rnd.random() * 0.2)
            finally:
                writer.close()
            return got

        async def run():
            pollers = []
            for start_i in range(0, N_SUBS, 100):
                pollers += [asyncio.ensure_future(subscriber(i))
                            for i in range(start_i, start_i + 100)]
                await asyncio.sleep(0.01)
            while len(first_polls) < N_SUBS:
                await asyncio.sleep(0.02)
            published = await self.publish_in_thread(channel, pause=0.02)
            return await asyncio.gather(*pollers), published

        t0 = time.monotonic()
        results, published = self.run_async(run())
        self.check(results, published, "short poll")
        sys.stderr.write("[short-poll fan-out: %.1f s] " % (time.monotonic() - t0))


class TestFanoutWebSocket(FanoutCase):
    def test_websocket_1000_subscribers(self):
        hh.require_websocket(self.port)
        channel = "fan-ws"

        async def subscriber(i):
            return await hh.ws_connect(self.port, "/ws/" + channel, local_addr=(source_ip(i), 0),
                                       ping_interval=None, max_queue=None, max_size=2 ** 20)

        async def receive(ws):
            got = []
            try:
                while len(got) < N_MSGS:
                    got.append(await ws.recv())
            finally:
                await ws.close()
            return got

        async def run():
            conns = await self.gather_batches(subscriber, N_SUBS)
            await self.wait_in_thread(
                lambda: get_json(self.port, "/channels/" + channel)[1]["subscribers"] == N_SUBS,
                "1000 WebSocket subscribers")
            receivers = [asyncio.ensure_future(receive(ws)) for ws in conns]
            published = await self.publish_in_thread(channel)
            return await asyncio.gather(*receivers), published

        t0 = time.monotonic()
        results, published = self.run_async(run())
        # a plain WebSocket message is the payload as-is (no id): compare payloads in order
        self.check(results, [body for _, body in published], "WebSocket")
        stats = get_json(self.port, "/stats")[1]
        self.assertEqual(stats["slow_subscribers_dropped"], 0)
        self.assertEqual(stats["messages"]["fanned_out"], 2 * N_MSGS)  # both workers
        self.assertEqual(stats["messages"]["delivered"], N_SUBS * N_MSGS)
        sys.stderr.write("[websocket fan-out: %.1f s] " % (time.monotonic() - t0))


if __name__ == "__main__":
    hh.main()
