# SPDX-License-Identifier: MIT
"""The node-wide order, under stress: one id resumes any set of channels, every worker delivers
in sequence order, no gap, no duplicate (docs/architecture.md, "Ordering and resume").

herald runs 2 workers, then 4 on this 2-core machine (so loops interleave). Publishers on many
keep-alive connections from spread source addresses (SO_REUSEPORT puts them on every worker:
/stats per_worker must show publishes taken by each) send single publishes and `POST /pub`
batches into random subsets of 8 overlapping channels; every answer's ids go into a ledger.
Subscribers on every worker (checked the same way), each on a random set of those channels:

- multi-channel SSE (`/sse?channel=a&channel=b...`), from the start, and resumers that join
  mid-stream from an id, read a while, leave, and come back with Last-Event-ID (or
  ?last_event_id=), on whatever worker the kernel picks;
- `/ws` JSON-protocol clients (python3-websockets) subscribed to several channels, some leaving
  and resuming every channel with `since`;
- `/ws/{channel}` clients, `herald.v1` (ids in the envelope, resuming with ?since=) and plain
  (payload only: its id comes from the ledger);
- long-poll loops (`/lp/{channel}?since=next`).

When the publishers are done, each subscriber must have received exactly the ledger's messages
on its channels after its start point (the id it resumed from, the `last_id` of `subscribed`,
the `next` of its first poll; for a fresh SSE stream or /ws/{channel}, everything published
after it went live must be there and nothing before its first message missing), each once, with
the right channel and payload, and in global sequence order: strictly increasing across all its
channels (on /ws: across the messages that arrive while their channel is live; a subscribe's
history is replayed when that channel goes live, in the channel's order).

Bounded: a few thousand messages per test. The waits are bounded by progress, not by the clock
alone: once publishing is done, subscribers may take as long as they need to catch up while
deliveries keep coming, and the test fails when none came for STALL_TIMEOUT seconds (a lost
message leaves a subscriber waiting for it), or past TEST_TIMEOUT in all. Runs against whatever
HERALD_BIN names: the ASan build under ctest, the ThreadSanitizer build from scripts/test.sh.
"""
import asyncio
import http.client
import json
import os
import random
import sys
import threading
import time
import traceback
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import get_json  # noqa: E402

N_CHANNELS = 8
N_MESSAGES = int(os.environ.get("HERALD_ORDER_MESSAGES", "3000"))
PUBLISH_SECONDS = 5.0  # publishing is paced over this long, so subscribers come and go during it
N_PUB_THREADS = 6
N_PUB_CONNS = 24  # keep-alive publisher connections (more if a worker got too few)
# Once publishing is done, the subscribers catch up for as long as deliveries keep coming: the
# drain fails after this many seconds without a delivery to any of them. A loaded machine (load
# 18 on 2 cores, the ASan or TSan herald, ~30 subscriber threads in one Python) slows the drain
# down, it does not stop it.
STALL_TIMEOUT = 30.0
# All of one test, setup included: a bound for a test that never stalls but never ends either;
# the file's two tests stay under ctest's 300 s.
TEST_TIMEOUT = 140.0
SETUP_TIMEOUT = 60.0  # for the subscribers started together to go live
SEED = int(os.environ.get("HERALD_ORDER_SEED", str(int(time.time()))))


def parse_id(text):
    epoch, _, seq = text.rpartition("-")
    if not epoch or not seq.isdigit():
        raise AssertionError("not an id: %r" % text)
    return epoch, int(seq)


def per_worker(port):
    status, stats, _ = get_json(port, "/stats")
    if status != 200 or "per_worker" not in stats:
        raise AssertionError("/stats: %d %r" % (status, stats))
    return stats["per_worker"]


class Ledger:
    """Every message the publishers' answers acknowledged: seq -> (channel, payload, t_sent)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_seq = {}
        self.by_payload = {}
        self.epochs = set()
        self.frozen = False
        self.by_channel = {}

    def add(self, epoch, seq, channel, payload, t_sent):
        with self.lock:
            if seq in self.by_seq:
                raise AssertionError("id %s-%d given to two messages: %r and %r" %
                                     (epoch, seq, self.by_seq[seq], (channel, payload)))
            self.by_seq[seq] = (channel, payload, t_sent)
            self.by_payload[payload] = seq
            self.epochs.add(epoch)

    def freeze(self):
        with self.lock:
            self.frozen = True
            for seq in sorted(self.by_seq):
                self.by_channel.setdefault(self.by_seq[seq][0], []).append(seq)

    @property
    def epoch(self):
        with self.lock:
            return next(iter(self.epochs))

    def id_of(self, seq):
        return "%s-%d" % (self.epoch, seq)

    def recent_seq(self, rnd):
        """A seq published a moment ago (a resume point mid-stream)."""
        with self.lock:
            seqs = sorted(self.by_seq)
        if not seqs:
            return None
        return seqs[max(0, len(seqs) - 1 - rnd.randint(0, min(200, len(seqs) - 1)))]

    def last(self, chans):
        """The highest seq on chans (after freeze), 0 if none."""
        return max((self.by_channel[c][-1] for c in chans if c in self.by_channel), default=0)

    def expected(self, chans, lo_by_chan):
        """Sorted seqs on chans above each channel's start point (after freeze)."""
        out = []
        for c in chans:
            lo = lo_by_chan[c]
            out += [s for s in self.by_channel.get(c, ()) if s > lo]
        return sorted(out)


class Run:
    """What publishers and subscribers of one test share."""

    def __init__(self, port, channels, rnd):
        self.port = port
        self.channels = channels
        self.rnd = rnd
        self.ledger = Ledger()
        self.pub_done = threading.Event()
        self.budget = N_MESSAGES
        self.budget_lock = threading.Lock()
        self.t0 = None  # when publishing started
        self.drain_start = None  # when publishing was done
        self.last_delivery = time.monotonic()
        self.hard_deadline = time.monotonic() + TEST_TIMEOUT

    def claim(self, n):
        """Up to n messages of the budget: (how many, when to send them), paced evenly over
        PUBLISH_SECONDS."""
        with self.budget_lock:
            n = min(n, self.budget)
            self.budget -= n
            done = N_MESSAGES - self.budget - n
            return n, self.t0 + PUBLISH_SECONDS * done / N_MESSAGES

    def delivered(self):
        self.last_delivery = time.monotonic()

    def expired(self):
        """Why the test must give up now (past TEST_TIMEOUT, or the drain stalled), or None."""
        now = time.monotonic()
        if now > self.hard_deadline:
            return "over the test's %.0f s" % TEST_TIMEOUT
        if self.drain_start is not None and \
                now - max(self.last_delivery, self.drain_start) > STALL_TIMEOUT:
            return "no delivery to any subscriber for %.0f s" % STALL_TIMEOUT
        return None


class Sub:
    """One subscriber's record: what it received, in arrival order, and its start points."""

    def __init__(self, run, kind, name, chans, global_order=True):
        self.run = run
        self.kind = kind
        self.name = name
        self.chans = frozenset(chans)
        self.global_order = global_order
        self.got = []  # [seq or None, channel or None, payload or None, is_live]
        self.lo_by_chan = {}  # exact start point per channel, when known
        self.t_live = None  # a fresh stream's moment of going live: publishes sent later must come
        self.resumes = 0
        self.live = threading.Event()
        self.done = threading.Event()
        self.error = None
        self.t_done = None

    def record(self, seq, channel, payload, is_live=True):
        if channel is not None and channel not in self.chans:
            raise AssertionError("%s: a message of %s, not one of %s" %
                                 (self.name, channel, sorted(self.chans)))
        self.got.append([seq, channel, payload, is_live])
        self.run.delivered()

    def resolve(self):
        """Fills in the seq of messages that carried only their payload (plain /ws/{channel})."""
        if not self.run.ledger.frozen:
            return
        for g in self.got:
            if g[0] is None:
                g[0] = self.run.ledger.by_payload.get(g[2], -1)

    def last_seq(self):
        self.resolve()
        return max((g[0] for g in self.got), default=0)

    def caught_up(self):
        """Publishing is over and the last message on its channels has arrived."""
        if not self.run.pub_done.is_set():
            return False
        pos = max([self.last_seq()] + list(self.lo_by_chan.values()))
        if pos < self.run.ledger.last(self.chans):
            return False
        self.t_done = self.t_done or time.monotonic()
        return True

    def fail(self, exc):
        self.error = "%s: %s\n%s" % (self.name, exc, traceback.format_exc())
        self.live.set()


def payload_for(tag, channel, rnd):
    return "%s %s %s" % (tag, channel, "x" * rnd.randint(0, 120))


# ---- publishers ----

def open_pub_conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=hh.HTTP_TIMEOUT,
                                      source_address=(hh.next_source_ip(), 0))


def post(conn, path, body, ctype):
    conn.request("POST", path, body=body.encode(), headers={"Content-Type": ctype})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise AssertionError("POST %s: %d %r" % (path, r.status, data[:200]))
    return json.loads(data)


def publisher(run, idx, conns, errors):
    rnd = random.Random(SEED * 1000 + idx)
    n = 0
    last_by_conn = {}
    try:
        while not run.expired():
            want = 1 if rnd.random() < 0.5 else rnd.randint(2, 12)
            take, at = run.claim(want)
            if take == 0:
                return
            time.sleep(max(0.0, at - time.monotonic()))
            k = rnd.randrange(len(conns))
            conn = conns[k]
            subset = rnd.sample(run.channels, rnd.randint(1, 4))
            items = []
            for _ in range(take):
                n += 1
                ch = rnd.choice(subset)
                items.append((ch, payload_for("p%d-%d" % (idx, n), ch, rnd)))
            t_sent = time.monotonic()
            if take == 1 and rnd.random() < 0.8:
                ch, payload = items[0]
                ids = [post(conn, "/pub/" + ch, payload, "text/plain; charset=utf-8")["id"]]
            else:
                body = json.dumps([{"channel": ch, "data": p} for ch, p in items])
                answer = post(conn, "/pub", body, "application/json")["messages"]
                if [m["channel"] for m in answer] != [ch for ch, _ in items]:
                    raise AssertionError("batch answer %r for %r" % (answer, items))
                ids = [m["id"] for m in answer]
            seqs = []
            for (ch, payload), text in zip(items, ids):
                epoch, seq = parse_id(text)
                run.ledger.add(epoch, seq, ch, payload, t_sent)
                seqs.append(seq)
            # One connection's requests are answered in order, so their ids increase, within
            # a batch and from one request to the next.
            prev = last_by_conn.get(k, 0)
            if any(b <= a for a, b in zip([prev] + seqs, seqs)):
                raise AssertionError("publisher %d conn %d: ids %r after %d" % (idx, k, seqs, prev))
            last_by_conn[k] = seqs[-1]
    except Exception as e:  # noqa: BLE001 (reported by the test)
        errors.append("publisher %d: %s\n%s" % (idx, e, traceback.format_exc()))


# ---- SSE ----

def sse_subscriber(sub, since=None, resumes=0):
    """A multi-channel SSE stream from the start (since None) or from the id `since`; leaves
    after a random number of events and resumes from the last id seen, `resumes` times."""
    run = sub.run
    rnd = random.Random(zlib.crc32(sub.name.encode()) ^ SEED)
    try:
        if since is not None:
            for c in sub.chans:
                sub.lo_by_chan[c] = since
        cur = since
        first = True
        while True:
            path = "/sse?" + "&".join("channel=" + c for c in sorted(sub.chans))
            headers = {}
            if cur is not None:
                if rnd.random() < 0.5:
                    headers["Last-Event-ID"] = run.ledger.id_of(cur)
                else:
                    path += "&last_event_id=" + run.ledger.id_of(cur)
            st = hh.SseStream(run.port, path, headers)
            try:
                if st.status != 200:
                    raise AssertionError("GET %s: %d %r" % (path, st.status, st.body))
                if first:
                    if since is None:
                        sub.t_live = time.monotonic()
                    sub.live.set()
                    first = False
                leave_after = rnd.randint(20, 200) if resumes > 0 else None
                n = 0
                while not sub.caught_up():
                    why = run.expired()
                    if why:
                        raise AssertionError("timed out at %d (%d received): %s" %
                                             (sub.last_seq(), len(sub.got), why))
                    try:
                        b = st.next_block(0.5)
                    except AssertionError as e:
                        if "no SSE block" in str(e):
                            continue
                        raise
                    if b is None:
                        raise AssertionError("the stream ended")
                    if not b.is_event:
                        continue
                    if b.event == "herald-gap":
                        raise AssertionError("gap notice %r (history holds everything)" % b.text)
                    epoch, seq = parse_id(b.id)
                    sub.record(seq, b.event, b.text)
                    n += 1
                    if leave_after and n >= leave_after:
                        break
                else:
                    return
            finally:
                st.close()
            resumes -= 1
            sub.resumes += 1
            cur = sub.last_seq() if sub.got else cur
            time.sleep(rnd.uniform(0, 0.2))
    except Exception as e:  # noqa: BLE001
        sub.fail(e)
    finally:
        sub.done.set()


# ---- long poll ----

def longpoll_loop(sub):
    run = sub.run
    (channel,) = sub.chans
    conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=hh.HTTP_TIMEOUT,
                                      source_address=(hh.next_source_ip(), 0))
    try:
        status, _, data = hh.request(run.port, "GET", "/poll/" + channel, conn=conn)
        if status != 200:
            raise AssertionError("/poll/%s: %d %r" % (channel, status, data))
        cur = json.loads(data)["next"]
        sub.lo_by_chan[channel] = parse_id(cur)[1] if cur else 0
        sub.live.set()
        while not sub.caught_up():
            why = run.expired()
            if why:
                raise AssertionError("timed out at %s: %s" % (cur, why))
            path = "/lp/%s?timeout=1" % channel + ("&since=" + cur if cur else "")
            status, _, data = hh.request(run.port, "GET", path, conn=conn)
            if status != 200:
                raise AssertionError("%s: %d %r" % (path, status, data))
            body = json.loads(data)
            if body["gap"]:
                raise AssertionError("%s: gap (history holds everything)" % path)
            for m in body["messages"]:
                sub.record(parse_id(m["id"])[1], m["channel"], m["data"])
            cur = body["next"] or cur
    except Exception as e:  # noqa: BLE001
        sub.fail(e)
    finally:
        conn.close()
        sub.done.set()


# ---- WebSocket (python3-websockets, on an asyncio loop of its own thread) ----
# max_queue=None: a client that leaves with frames it has not read must still read up to the
# server's close frame (with the default of 32 the library stops reading, and its close waits
# close_timeout, 10 s, for a frame it will not read).

async def ws_json_client(sub, since=None, resumes=0):
    """/ws: subscribes to every channel of sub (with `since` when given); leaves after a random
    number of messages once all are live, and resumes every channel from the last id seen."""
    run = sub.run
    rnd = random.Random(zlib.crc32(sub.name.encode()) ^ SEED)
    try:
        cur = since
        if since is not None:
            for c in sub.chans:
                sub.lo_by_chan[c] = since
        first = True
        while True:
            async with hh.ws_connect(run.port, "/ws", local_addr=(hh.next_source_ip(), 0),
                                     max_queue=None) as ws:
                for i, c in enumerate(sorted(sub.chans)):
                    req = {"op": "subscribe", "channel": c, "ref": i}
                    if cur is not None:
                        req["since"] = run.ledger.id_of(cur)
                    await ws.send(json.dumps(req))
                pending = set(sub.chans)
                leave_after = rnd.randint(20, 200) if resumes > 0 else None
                n = 0
                while not (not pending and sub.caught_up()):
                    why = run.expired()
                    if why:
                        raise AssertionError("timed out at %d (pending %r): %s" %
                                             (sub.last_seq(), sorted(pending), why))
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    o = json.loads(raw)
                    t = o.get("type")
                    if t == "message":
                        sub.record(parse_id(o["id"])[1], o["channel"], o["data"],
                                   is_live=o["channel"] not in pending)
                        n += 1
                    elif t == "subscribed":
                        pending.discard(o["channel"])
                        if cur is None:
                            sub.lo_by_chan[o["channel"]] = parse_id(o["last_id"])[1]
                        if not pending and first:
                            sub.live.set()
                            first = False
                    else:
                        raise AssertionError("unexpected %r" % o)
                    if leave_after and not pending and n >= leave_after:
                        break
                else:
                    return
            resumes -= 1
            sub.resumes += 1
            cur = sub.last_seq() if sub.got else cur
            if cur is None:
                cur = min(sub.lo_by_chan.values())
            await asyncio.sleep(rnd.uniform(0, 0.2))
    except Exception as e:  # noqa: BLE001
        sub.fail(e)
    finally:
        sub.done.set()


async def ws_channel_client(sub, envelope, resumes=0):
    """/ws/{channel}: herald.v1 (ids in the envelope; leaves and resumes with ?since=) or plain
    (the payload alone, matched to its id in the ledger afterwards)."""
    run = sub.run
    rnd = random.Random(zlib.crc32(sub.name.encode()) ^ SEED)
    (channel,) = sub.chans
    try:
        cur = None
        first = True
        while True:
            path = "/ws/" + channel + ("?since=" + run.ledger.id_of(cur) if cur else "")
            kw = {"subprotocols": ["herald.v1"]} if envelope else {}
            async with hh.ws_connect(run.port, path, local_addr=(hh.next_source_ip(), 0),
                                     max_queue=None, **kw) as ws:
                if first:
                    sub.t_live = time.monotonic()
                    sub.live.set()
                    first = False
                leave_after = rnd.randint(20, 100) if resumes > 0 else None
                n = 0
                while not sub.caught_up():
                    why = run.expired()
                    if why:
                        raise AssertionError("timed out at %d: %s" % (sub.last_seq(), why))
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if envelope:
                        o = json.loads(raw)
                        if o.get("type") != "message":
                            raise AssertionError("unexpected %r" % o)
                        sub.record(parse_id(o["id"])[1], o["channel"], o["data"])
                    else:
                        sub.record(None, None, raw)
                    n += 1
                    if leave_after and n >= leave_after:
                        break
                else:
                    return
            resumes -= 1
            sub.resumes += 1
            cur = sub.last_seq()
            await asyncio.sleep(rnd.uniform(0, 0.2))
    except Exception as e:  # noqa: BLE001
        sub.fail(e)
    finally:
        sub.done.set()


class AsyncThread:
    """An asyncio loop on a thread of its own, for the WebSocket clients."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# ---- checking ----

def check_sub(sub, ledger):
    """Every problem with what sub received, as text lines (none: all good)."""
    sub.resolve()
    errs = []
    seqs = [g[0] for g in sub.got]
    for seq, channel, payload, _ in sub.got:
        rec = ledger.by_seq.get(seq)
        if rec is None:
            errs.append("received a message no publisher was answered (seq %s, payload %r)" %
                        (seq, (payload or "")[:40]))
            continue
        if rec[0] not in sub.chans or (channel is not None and channel != rec[0]):
            errs.append("seq %d is on %s, received as %s" % (seq, rec[0], channel))
        if payload is not None and payload != rec[1]:
            errs.append("seq %d: payload %r, published %r" % (seq, payload[:40], rec[1][:40]))
    if sub.global_order:
        order = [g[0] for g in sub.got if g[3]]
        for i in range(1, len(order)):
            if order[i] <= order[i - 1]:
                errs.append("out of global order: seq %d after %d (delivery %d of %d)" %
                            (order[i], order[i - 1], i, len(order)))
                break
    for c in sub.chans:
        on_c = [g[0] for g in sub.got if ledger.by_seq.get(g[0], ("",))[0] == c]
        for i in range(1, len(on_c)):
            if on_c[i] <= on_c[i - 1]:
                errs.append("%s: seq %d after %d" % (c, on_c[i], on_c[i - 1]))
                break
    dups = len(seqs) - len(set(seqs))
    if dups:
        errs.append("%d duplicate deliveries" % dups)
    got = set(seqs)
    lo = dict(sub.lo_by_chan)
    for c in sub.chans:
        if c not in lo:
            # A fresh stream: its start is before its first message on any channel.
            lo[c] = min(seqs) - 1 if seqs else ledger.last(sub.chans)
    expected = ledger.expected(sub.chans, lo)
    missing = [s for s in expected if s not in got]
    if missing:
        errs.append("%d of %d messages missing, first %r (start %r)" %
                    (len(missing), len(expected), missing[:8], sorted(set(lo.values()))[:4]))
    extra = sorted(got - set(expected))
    if extra:
        errs.append("%d messages before its start point: %r" % (len(extra), extra[:8]))
    if sub.t_live is not None:
        late = [s for c in sub.chans for s in ledger.by_channel.get(c, ())
                if ledger.by_seq[s][2] > sub.t_live and s not in got]
        if late:
            errs.append("%d messages published after it went live never came: %r" %
                        (len(late), sorted(late)[:8]))
    return errs


class OrderingCase:
    """The test, run by the classes below with their number of workers."""
    WORKERS = 2
    CONF = {"max_connections": "2000", "history_size": "20000", "history_max_bytes": "64m",
            "max_queue_bytes": "16m", "keepalive_timeout": "60s", "longpoll_timeout": "5s",
            "poll_max_messages": "200"}

    def test_node_wide_order(self):
        rnd = random.Random(SEED + self.WORKERS)
        sys.stderr.write("seed %d (HERALD_ORDER_SEED repeats its random choices)\n" % SEED)
        t_setup = time.monotonic()
        h = self.start_herald(conf=self.CONF, workers=self.WORKERS)
        tag = "o%d" % rnd.randrange(10 ** 6)
        channels = ["%s-%d" % (tag, i) for i in range(N_CHANNELS)]
        run = Run(h.port, channels, rnd)
        aio = AsyncThread()
        self.addCleanup(aio.stop)
        subs, threads, futures = [], [], []

        def chans():
            return rnd.sample(channels, rnd.randint(2, 5))

        def start_sse(since=None, resumes=0, kind="sse"):
            s = Sub(run, kind, "%s#%d" % (kind, len(subs)), chans())
            subs.append(s)
            t = threading.Thread(target=sse_subscriber, args=(s, since, resumes), daemon=True)
            t.start()
            threads.append(t)
            return s

        def start_ws_json(since=None, resumes=0, kind="ws"):
            s = Sub(run, kind, "%s#%d" % (kind, len(subs)), chans())
            subs.append(s)
            futures.append(aio.start(ws_json_client(s, since, resumes)))
            return s

        def start_ws_channel(envelope, resumes=0):
            kind = "ws/ch" + (" herald.v1" if envelope else " plain")
            s = Sub(run, kind, "%s#%d" % (kind, len(subs)), [rnd.choice(channels)])
            subs.append(s)
            futures.append(aio.start(ws_channel_client(s, envelope, resumes)))
            return s

        def start_lp():
            s = Sub(run, "longpoll", "longpoll#%d" % len(subs), [rnd.choice(channels)])
            subs.append(s)
            t = threading.Thread(target=longpoll_loop, args=(s,), daemon=True)
            t.start()
            threads.append(t)
            return s

        def wait_live(group):
            deadline = time.monotonic() + SETUP_TIMEOUT
            for s in group:
                if not s.live.wait(max(0.01, deadline - time.monotonic())):
                    self.fail("%s did not go live within %.0f s" % (s.name, SETUP_TIMEOUT))
                if s.error:
                    self.fail(s.error)

        # Subscribers from the start, until every worker carries SSE and WebSocket ones.
        first = [start_sse() for _ in range(2 * self.WORKERS + 2)]
        first += [start_ws_json() for _ in range(2 * self.WORKERS + 2)]
        first += [start_ws_channel(True), start_ws_channel(False), start_ws_channel(True, 3)]
        first += [start_lp() for _ in range(3)]
        wait_live(first)
        for key, more in (("sse", start_sse), ("websocket", start_ws_json)):
            for _ in range(8 * self.WORKERS):
                pw = per_worker(h.port)
                if all(w[key] > 0 for w in pw):
                    break
                wait_live([more()])
            self.assertTrue(all(w[key] > 0 for w in per_worker(h.port)),
                            "%s subscribers on every worker: %r" % (key, per_worker(h.port)))

        # Publisher connections, until every worker took at least two of them (a probe publish
        # on each to a channel nobody subscribes to shows where it landed).
        conns = []
        probe = tag + "-probe"
        for i in range(N_PUB_CONNS + 16 * self.WORKERS):
            if i >= N_PUB_CONNS and all(w["published_here"] >= 2 for w in per_worker(h.port)):
                break
            c = open_pub_conn(h.port)
            self.addCleanup(c.close)
            post(c, "/pub/" + probe, "probe", "text/plain")
            conns.append(c)
        before = per_worker(h.port)
        self.assertTrue(all(w["published_here"] >= 2 for w in before),
                        "publisher connections on every worker: %r" % before)

        # Publish; resumers and late /ws clients join mid-stream from an id already published.
        errors = []
        pubs = [threading.Thread(target=publisher,
                                 args=(run, k, conns[k::N_PUB_THREADS], errors), daemon=True)
                for k in range(N_PUB_THREADS)]
        t0 = run.t0 = time.monotonic()
        for t in pubs:
            t.start()
        late = []
        for k in range(2 * self.WORKERS):
            time.sleep(PUBLISH_SECONDS / (2 * self.WORKERS + 1))
            since = run.ledger.recent_seq(rnd)
            if since is None:
                continue
            late.append(start_sse(since, resumes=3, kind="sse-resume"))
            late.append(start_ws_json(since if k % 2 else None, resumes=3, kind="ws-resume"))
        for t in pubs:
            t.join(max(1.0, run.hard_deadline - time.monotonic()))
        publish_s = time.monotonic() - t0
        self.assertEqual(errors, [])
        self.assertFalse(any(t.is_alive() for t in pubs), "publishers did not finish")
        run.ledger.freeze()
        run.drain_start = time.monotonic()
        run.pub_done.set()
        n_msgs = len(run.ledger.by_seq)
        self.assertEqual(n_msgs, N_MESSAGES)
        self.assertEqual(len(run.ledger.epochs), 1, run.ledger.epochs)

        # Every worker took publishes.
        after = per_worker(h.port)
        took = [a["published_here"] - b["published_here"] for a, b in zip(after, before)]
        self.assertTrue(all(n > 0 for n in took), "publishes per worker: %r" % took)

        # Each subscriber ends once caught up, or fails by itself when run.expired() (it looks
        # every 0.5 s at most).
        while not all(s.done.is_set() for s in subs) and not run.expired():
            time.sleep(0.1)
        for t in threads:
            t.join(5)
        for f in futures:
            f.result(5)
        problems = []
        for s in subs:
            if s.error:
                problems.append(s.error)
                continue
            if not s.done.is_set():
                problems.append("%s: still running" % s.name)
                continue
            problems += ["%s on %s: %s" % (s.name, ",".join(sorted(s.chans)), e)
                         for e in check_sub(s, run.ledger)]
        slowest = max(subs, key=lambda s: s.t_done or 0)
        sys.stderr.write(
            "%d workers: setup %.1f s; %d messages in %.1f s from %d connections (per worker "
            "%r); %d subscribers, %d deliveries checked, %d resumes; the last caught up %.1f s "
            "after the last publish (%s)\n" %
            (self.WORKERS, t0 - t_setup, n_msgs, publish_s, len(conns), took, len(subs),
             sum(len(s.got) for s in subs), sum(s.resumes for s in subs),
             (slowest.t_done or 0) - (t0 + publish_s), slowest.name))
        if problems:
            self.fail("seed %d: %d problems:\n%s" % (SEED, len(problems),
                                                      "\n".join(problems[:30])))
        self.assertGreater(sum(s.resumes for s in subs), 0)
        self.assertTrue(all(s.got for s in subs if s.kind != "longpoll"),
                        [s.name for s in subs if not s.got])


class TestOrdering2Workers(OrderingCase, hh.HeraldTestCase):
    WORKERS = 2


class TestOrdering4Workers(OrderingCase, hh.HeraldTestCase):
    """Twice as many loops as cores: the kernel interleaves them at every point."""
    WORKERS = 4


if __name__ == "__main__":
    hh.main()
