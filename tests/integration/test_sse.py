# SPDX-License-Identifier: MIT
"""Server-Sent Events against the real binary: curl -N, the npm `eventsource` client (node) and
raw sockets with a spec-following event parser.

Covered: headers, jittered retry:, ids on every event, multi-line payloads (LF, CRLF, CR)
reassembled exactly by a real EventSource, multi-channel streams, resume by Last-Event-ID and
?last_event_id= (also across workers, under continuous publishing, and for several channels
with one id), gap notices for expired ids and other epochs (also through the client's own
reconnect after a restart), heartbeats, slow-consumer disconnect, graceful shutdown, bad input.
"""
import base64
import http.client
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream, get_json, publish, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
JS_CLIENT = os.path.join(HERE, "js", "sse_client.js")
ID_RE = re.compile(r"^([0-9a-z]+)-([0-9]+)$")
IO = 10.0


def parse_id(i):
    m = ID_RE.match(i or "")
    if not m:
        raise AssertionError("not a message id: %r" % (i,))
    return m.group(1), int(m.group(2))


def sse_lines(payload):
    """The data: lines a text payload must be split into (CR, LF and CRLF end a line)."""
    return re.split(r"\r\n|\r|\n", payload)


def reassembled(payload):
    """What an EventSource hands the application for a text payload."""
    return "\n".join(sse_lines(payload))


class CurlStream:
    """curl -N -i on an SSE URL, its output collected by a thread; killed by stop()."""

    def __init__(self, url, *args):
        self.proc = subprocess.Popen(["curl", "-sS", "-N", "-i", "--max-time", "30"] + list(args)
                                     + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            with self.cond:
                if not chunk:
                    self.cond.notify_all()
                    return
                self.out += chunk
                self.cond.notify_all()

    def wait(self, pred, timeout=IO):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.out):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("curl output did not match in time: %r" % self.out[-500:])
                self.cond.wait(left)
            return self.out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.thread.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.out

    def head_and_blocks(self):
        head, _, body = self.out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        blocks = [hh.SseBlock(b + b"\n") for b in body.split(b"\n\n") if b]
        return lines[0], hdrs, blocks


class NodeSse:
    """The npm eventsource client (tests/integration/js/sse_client.js) in a node process."""

    def __init__(self, testcase, url, count, headers=None, events=(), timeout_ms=20000):
        node, modules = hh.require_node_module("eventsource")
        argv = [node, JS_CLIENT, url, str(count), "--timeout", str(timeout_ms)]
        for k, v in (headers or {}).items():
            argv += ["--header", "%s:%s" % (k, v)]
        for e in events:
            argv += ["--event", e]
        env = dict(os.environ, NODE_PATH=modules)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        testcase.addCleanup(self.kill)
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def next(self, timeout=IO):
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the node eventsource client said nothing for %.1f s" % timeout)
        if item is None:
            raise AssertionError("node exited: %s" % self.proc.stderr.read().decode())
        return item

    def wait_open(self, timeout=IO):
        while True:
            item = self.next(timeout)
            if item["kind"] == "open":
                return
            if item["kind"] == "timeout":
                raise AssertionError("node: %r" % item)

    def events(self, n, timeout=IO):
        out = []
        while len(out) < n:
            item = self.next(timeout)
            if item["kind"] == "event":
                out.append(item)
            elif item["kind"] == "timeout":
                raise AssertionError("node timed out after %r" % out)
        return out

    def finish(self, timeout=IO):
        rc = self.proc.wait(timeout)
        self.thread.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


class ServerCase(hh.HeraldTestCase):
    """One herald per class (tests use their own channels), with an access log whose connection
    ids tell which worker served a request; stopped and checked at the end."""
    CONF = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="herald-it-sse-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)  # after the server's cleanup
        cls.access_log = os.path.join(cls.tmp, "access.log")
        conf = dict(cls.CONF, access_log=cls.access_log)
        cls.h = cls.start_class_herald(conf=conf, workers=2, tmpdir=cls.tmp)
        cls.port = cls.h.port

    def workers_serving(self, path_prefix, n):
        """The workers (0, 1) that served at least n requests starting with path_prefix."""
        def seen():
            with open(self.access_log) as f:
                lines = [ln for ln in f if '"GET %s' % path_prefix in ln]
            if len(lines) < n:
                return None
            return {int(re.search(r" c#(\d+) ", ln).group(1)) >> 48 for ln in lines}
        return wait_for(seen, what="%d access log lines for %s" % (n, path_prefix))

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stream(self, path, headers=None, **kw):
        s = SseStream(self.port, path, headers, **kw)
        self.addCleanup(s.close)
        return s

    def started(self, path, headers=None, **kw):
        """A stream whose head and first retry: block arrived (its subscription is live)."""
        s = self.stream(path, headers, **kw)
        self.assertEqual(s.status, 200, s.body)
        b = s.next_block()
        self.assertIsNotNone(b.retry, b)
        return s


class TestSse(ServerCase):
    CONF = {"history_size": "1000", "sse_retry": "1s", "max_connections": "2000"}

    def test_headers_and_delivery_with_curl(self):
        c = CurlStream(self.url("/sse/curl1"))
        try:
            c.wait(lambda out: b"retry:" in out)
            ids = [publish(self.port, "curl1", "m%d" % i) for i in range(3)]
            c.wait(lambda out: out.count(b"\nid: ") == 3)
        finally:
            c.stop()
        status, hdrs, blocks = c.head_and_blocks()
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertEqual(hdrs["content-type"].split(";")[0], "text/event-stream")
        self.assertEqual(hdrs["cache-control"], "no-cache")
        self.assertEqual(hdrs["access-control-allow-origin"], "*")
        self.assertNotIn("content-length", hdrs)
        self.assertTrue(1000 <= blocks[0].retry <= 2000, blocks[0].retry)
        events = [b for b in blocks if b.is_event]
        self.assertEqual([(b.id, b.text, b.event) for b in events],
                         [(ids[i], "m%d" % i, None) for i in range(3)])

    def test_retry_jittered_per_connection(self):
        retries = []
        for _ in range(12):
            s = self.stream("/sse/jitter")
            self.assertEqual(s.status, 200)
            b = s.next_block()
            self.assertEqual(b.raw, b"retry: %d\n" % b.retry)
            retries.append(b.retry)
            s.close()
        self.assertTrue(all(1000 <= r <= 2000 for r in retries), retries)
        self.assertGreater(len(set(retries)), 3, retries)

    def test_every_event_has_an_id_in_order(self):
        s = self.started("/sse/ids")
        sent = []
        for i in range(25):
            if i % 5 == 4:
                body, ctype = b'{"n":%d}' % i, "application/json"
            elif i % 5 == 3:
                body, ctype = bytes([i, 0, 255, 10]), "application/octet-stream"
            else:
                body, ctype = b"text %d" % i, "text/plain"
            sent.append((publish(self.port, "ids", body, ctype), body, ctype))
        got = s.events(25)
        for b, (mid, body, ctype) in zip(got, sent):
            self.assertEqual(b.id, mid)
            self.assertIsNone(b.event)
            if ctype == "application/octet-stream":
                self.assertIn(" base64", b.comments)
                self.assertEqual(base64.b64decode(b.text), body)
            else:
                self.assertEqual(b.text, body.decode())
        seqs = [parse_id(b.id)[1] for b in got]
        self.assertEqual(seqs, sorted(set(seqs)))
        s.assert_quiet(0.2)

    PAYLOADS = [
        "one line",
        "lf\nsplit\nthree",
        "crlf\r\nsplit\r\nthree",
        "cr\rsplit\rthree",
        "mixed\r\n\n\r\rend",
        "trailing newline\n",
        "\nleading newline",
        "\r\n",
        "  leading spaces and data: inside",
        ": looks like a comment\nid: looks like an id\nevent: x",
        "unicode \u00e9\u2603\U0001F600\r\nline",
        "tab\there",
    ]

    def test_multiline_on_the_wire_with_curl(self):
        c = CurlStream(self.url("/sse/lines"))
        try:
            c.wait(lambda out: b"retry:" in out)
            for p in self.PAYLOADS:
                publish(self.port, "lines", p, "text/plain; charset=utf-8")
            c.wait(lambda out: out.count(b"\nid: ") == len(self.PAYLOADS))
        finally:
            c.stop()
        _, _, blocks = c.head_and_blocks()
        events = [b for b in blocks if b.is_event]
        self.assertEqual(len(events), len(self.PAYLOADS))
        for b, p in zip(events, self.PAYLOADS):
            expect = b"id: " + b.id.encode() + b"\n" + b"".join(
                b"data: " + line.encode() + b"\n" for line in sse_lines(p))
            self.assertEqual(b.raw, expect)
            self.assertEqual(b.data, sse_lines(p))

    def test_multiline_reassembled_by_eventsource(self):
        binary = bytes(range(256))
        n = len(self.PAYLOADS) + 1
        es = NodeSse(self, self.url("/sse/es-lines"), n)
        es.wait_open()
        ids = [publish(self.port, "es-lines", p, "text/plain; charset=utf-8")
               for p in self.PAYLOADS]
        ids.append(publish(self.port, "es-lines", binary, "application/octet-stream"))
        got = es.events(n)
        self.assertEqual(es.finish(), 0)
        self.assertEqual([g["id"] for g in got], ids)
        self.assertEqual([g["type"] for g in got], ["message"] * n)
        self.assertEqual([g["data"] for g in got[:-1]], [reassembled(p) for p in self.PAYLOADS])
        self.assertEqual(base64.b64decode(got[-1]["data"]), binary)

    def test_multichannel_names_the_channel(self):
        s = self.started("/sse?channel=mca&channel=mcb&channel=mca")
        plan = ["mca", "mcb", "mcc", "mca", "mcb", "mcb"]
        sent = [(publish(self.port, ch, "%s-%d" % (ch, i)), ch, "%s-%d" % (ch, i))
                for i, ch in enumerate(plan)]
        expect = [x for x in sent if x[1] != "mcc"]
        got = s.events(len(expect))
        self.assertEqual([(b.id, b.event, b.text) for b in got], expect)
        s.assert_quiet(0.2)

    def test_multichannel_with_eventsource(self):
        es = NodeSse(self, self.url("/sse?channel=esa&channel=esb"), 4, events=("esa", "esb"))
        es.wait_open()
        sent = [(publish(self.port, ch, "x%d" % i), ch, "x%d" % i)
                for i, ch in enumerate(["esa", "esb", "esc", "esb", "esa"])]
        got = es.events(4)
        self.assertEqual(es.finish(), 0)
        self.assertEqual([(g["id"], g["type"], g["data"]) for g in got],
                         [x for x in sent if x[1] != "esc"])

    def test_resume_header_and_query(self):
        ids = [publish(self.port, "resume", "m%d" % i) for i in range(10)]
        for how in ("header", "query"):
            with self.subTest(how=how):
                if how == "header":
                    s = self.started("/sse/resume", {"Last-Event-ID": ids[3]})
                else:
                    s = self.started("/sse/resume?last_event_id=" + ids[3])
                got = s.events(6)
                self.assertEqual([(b.id, b.text) for b in got],
                                 [(ids[i], "m%d" % i) for i in range(4, 10)])
                s.assert_quiet(0.2)
        # resuming from the newest id replays nothing, then goes live
        s = self.started("/sse/resume", {"Last-Event-ID": ids[-1]})
        s.assert_quiet(0.2)
        mid = publish(self.port, "resume", "live")
        [b] = s.events(1)
        self.assertEqual((b.id, b.text), (mid, "live"))

    def test_resume_with_eventsource_header(self):
        ids = [publish(self.port, "es-resume", "m%d" % i) for i in range(6)]
        es = NodeSse(self, self.url("/sse/es-resume"), 4, headers={"Last-Event-ID": ids[2]})
        es.wait_open()
        live = publish(self.port, "es-resume", "live")
        got = es.events(4)
        self.assertEqual(es.finish(), 0)
        self.assertEqual([(g["id"], g["data"]) for g in got],
                         [(ids[3], "m3"), (ids[4], "m4"), (ids[5], "m5"), (live, "live")])

    def test_resume_under_continuous_publishing_across_workers(self):
        """30 clients (both workers) drop and resume at random points while a publisher
        publishes 200 messages: each sees every message exactly once, in order."""
        channel = "churn"
        start = publish(self.port, channel, "start")
        total, n_clients = 200, 30
        published, errors = [], []
        results = [[] for _ in range(n_clients)]
        done = threading.Event()

        def publisher():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO)
            try:
                for i in range(total):
                    published.append((publish(self.port, channel, "m%d" % i, conn=conn),
                                      "m%d" % i))
                    time.sleep(0.002)
            except Exception as e:  # noqa: BLE001
                errors.append("publisher: %r" % e)
            finally:
                conn.close()
                done.set()

        def client(k):
            rnd = random.Random(k)
            last, got, reconnects = start, results[k], 0
            try:
                while len(got) < total:
                    if rnd.random() < 0.5:
                        s = SseStream(self.port, "/sse/" + channel, {"Last-Event-ID": last})
                    else:
                        s = SseStream(self.port, "/sse/%s?last_event_id=%s" % (channel, last))
                    try:
                        if s.status != 200:
                            errors.append("client %d: status %d %r" % (k, s.status, s.body))
                            return
                        want = rnd.randint(1, 25)
                        while want and len(got) < total:
                            b = s.next_block(15)
                            if b is None:
                                errors.append("client %d: stream closed" % k)
                                return
                            if b.event == "herald-gap":
                                errors.append("client %d: unexpected gap %r" % (k, b))
                                return
                            if b.is_event:
                                got.append((b.id, b.text))
                                last = b.id
                                want -= 1
                    finally:
                        s.close()
                    reconnects += 1
            except Exception as e:  # noqa: BLE001
                errors.append("client %d: %r after %d" % (k, e, len(got)))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        pub = threading.Thread(target=publisher)
        pub.start()
        pub.join(60)
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(published), total)
        for k, got in enumerate(results):
            self.assertEqual(got, published, "client %d" % k)
        self.assertEqual(self.workers_serving("/sse/churn", n_clients * 2), {0, 1})

    def test_multichannel_resume_with_one_id(self):
        plan = ["r1", "r2", "r1", "r2", "r2", "r1"]
        sent = [(publish(self.port, ch, "a%d" % i), ch, "a%d" % i) for i, ch in enumerate(plan)]
        s = self.started("/sse?channel=r1&channel=r2",
                         {"Last-Event-ID": sent[0][0]})
        got = s.events(2)
        self.assertEqual([(b.id, b.event, b.text) for b in got], sent[1:3])
        last = got[-1].id
        s.close()
        plan2 = ["r2", "r1", "r3", "r1"]
        sent += [(publish(self.port, ch, "b%d" % i), ch, "b%d" % i) for i, ch in enumerate(plan2)]
        s = self.started("/sse?channel=r2&channel=r1&last_event_id=" + last)
        expect = [x for x in sent[3:] if x[1] != "r3"]
        got = s.events(len(expect))
        self.assertEqual([(b.id, b.event, b.text) for b in got], expect)
        s.assert_quiet(0.2)

    def test_resume_from_another_epoch_gap(self):
        ids = [publish(self.port, "epoch", "m%d" % i) for i in range(3)]
        epoch, seq = parse_id(ids[0])
        other = ("1" if epoch[0] != "1" else "2") + epoch
        s = self.started("/sse/epoch", {"Last-Event-ID": "%s-%d" % (other, seq)})
        gap = s.next_event()
        self.assertEqual(gap.event, "herald-gap")
        self.assertIsNone(gap.id)
        self.assertEqual(json.loads(gap.text)["channel"], "epoch")
        got = s.events(3)
        self.assertEqual([(b.id, b.text) for b in got], [(ids[i], "m%d" % i) for i in range(3)])

    def test_bad_input(self):
        cases = [
            ("/sse/bad", {"Last-Event-ID": "garbage"}),
            ("/sse/bad", {"Last-Event-ID": "ABC-1"}),
            ("/sse/bad", {"Last-Event-ID": "1-"}),
            ("/sse/bad?last_event_id=zz", None),
            ("/sse?channel=bad&last_event_id=-1", None),
            ("/sse/a%20b", None),
            ("/sse/" + "c" * 129, None),
            ("/sse/", None),
            ("/sse", None),
            ("/sse?channel=", None),
            ("/sse?channel=a%20b", None),
            ("/sse?channel=ok&channel=" + "c" * 129, None),
            ("/sse?" + "&".join("channel=c%d" % i for i in range(65)), None),
        ]
        for path, headers in cases:
            with self.subTest(path=path[:60], headers=headers):
                s = self.stream(path, headers)
                self.assertEqual(s.status, 400, s.body)
                self.assertEqual(json.loads(s.body)["status"], 400)
                s.close()
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                               "Last-Event-ID: nope", self.url("/sse/bad")],
                              stdout=subprocess.PIPE, timeout=IO).stdout
        self.assertEqual(code, b"400")
        # 64 channels (and a repeated one) are fine
        path = "/sse?" + "&".join("channel=c%d" % i for i in range(64)) + "&channel=c0"
        s = self.started(path)
        mid = publish(self.port, "c63", "last one")
        [b] = s.events(1)
        self.assertEqual((b.id, b.event, b.text), (mid, "c63", "last one"))
        self.assertHealthy(self.port)


class TestSseLimits(ServerCase):
    CONF = {"history_size": "5", "sse_heartbeat": "300ms", "sse_retry": "100ms",
            "max_queue_bytes": "256k", "max_message_size": "256k", "max_body_size": "1m"}

    def test_expired_resume_gap(self):
        ids = [publish(self.port, "exp", "m%d" % i) for i in range(20)]
        s = self.started("/sse/exp", {"Last-Event-ID": ids[0]})
        gap = s.next_event()
        self.assertEqual(gap.event, "herald-gap")
        info = json.loads(gap.text)
        self.assertEqual(info["channel"], "exp")
        self.assertIn("reason", info)
        got = s.events(5)
        self.assertEqual([(b.id, b.text) for b in got],
                         [(ids[i], "m%d" % i) for i in range(15, 20)])
        s.assert_quiet(0.2)
        # one id still in history: no gap
        s = self.started("/sse/exp?last_event_id=" + ids[16])
        got = s.events(3)
        self.assertEqual([b.id for b in got], ids[17:])
        self.assertTrue(all(b.event is None for b in got))

    def test_expired_resume_gap_names_only_the_expired_channel(self):
        keep = publish(self.port, "gkeep", "kept")
        ids = [publish(self.port, "gexp", "m%d" % i) for i in range(20)]
        later = publish(self.port, "gkeep", "later")
        s = self.started("/sse?channel=gkeep&channel=gexp", {"Last-Event-ID": keep})
        gap = s.next_event()
        self.assertEqual(gap.event, "herald-gap")
        self.assertEqual(json.loads(gap.text)["channel"], "gexp")
        got = s.events(6)
        expect = [(i, "gexp", "m%d" % k) for k, i in enumerate(ids)][15:] + [(later, "gkeep",
                                                                              "later")]
        self.assertEqual([(b.id, b.event, b.text) for b in got], expect)

    def test_resume_replays_history_larger_than_max_queue_bytes(self):
        """A fast client resuming over more history than max_queue_bytes gets all of it, then
        the live events published meanwhile, and is not taken for a slow consumer."""
        h = self.start_herald(conf={"history_size": "100", "max_queue_bytes": "64k",
                                    "max_message_size": "64k"})
        big = "z" * (16 * 1024)
        sent = [(publish(h.port, ch, "%s-%02d" % (ch, i) + big), ch, "%s-%02d" % (ch, i) + big)
                for i, ch in enumerate(["rp1", "rp2"] * 20)]
        for path in ("/sse/rp1", "/sse?channel=rp1&channel=rp2"):
            with self.subTest(path=path):
                named = path.startswith("/sse?")
                expect = [x for x in sent[1:] if named or x[1] == "rp1"]
                s = SseStream(h.port, path, {"Last-Event-ID": sent[0][0]})
                self.addCleanup(s.close)
                self.assertEqual(s.status, 200)
                got = s.events(5)
                live = [(publish(h.port, "rp1", "live%d" % i), "rp1", "live%d" % i)
                        for i in range(3)]
                got += s.events(len(expect) - 5 + 3)
                self.assertEqual([(b.id, b.event if named else "rp1", b.text) for b in got],
                                 expect + live)
                s.assert_quiet(0.2)
                sent += live
        self.assertEqual(get_json(h.port, "/stats")[1]["slow_subscribers_dropped"], 0)

    def test_stalled_resume_holds_live_events_within_max_queue_bytes(self):
        """A client that resumes over a long history and stops reading: the live events kept
        behind the history are charged what each holds (not only its data), so tiny events
        cannot pile up without bound; past max_queue_bytes it is a slow subscriber."""
        h = self.start_herald(conf={"history_size": "100", "max_queue_bytes": "64k",
                                    "max_message_size": "64k"})
        big = "h" * (60 * 1024)
        first = publish(h.port, "st", big)
        for _ in range(99):  # 6 MB: more than the socket buffers and max_queue_bytes
            publish(h.port, "st", big)
        s = SseStream(h.port, "/sse/st", {"Last-Event-ID": first}, rcvbuf=4096, read_head=False)
        self.addCleanup(s.close)
        wait_for(lambda: get_json(h.port, "/channels/st")[1]["subscribers"] == 1,
                 what="the subscriber")
        # 1,000 one-byte events: 1,000 bytes of data, far under 64k; what they hold is not
        for i in range(10):
            items = [{"channel": "st", "data": "x"} for _ in range(100)]
            status, _, body = hh.request(h.port, "POST", "/pub", json.dumps(items),
                                         {"Content-Type": "application/json"})
            self.assertEqual(status, 200, body)
        wait_for(lambda: get_json(h.port, "/stats")[1]["slow_subscribers_dropped"] == 1,
                 what="the stalled resume dropped as a slow subscriber")

    def test_heartbeat(self):
        s = self.started("/sse/beat")
        t0 = time.monotonic()
        beats = []
        while time.monotonic() - t0 < 1.2:
            try:
                b = s.next_block(max(0.01, 1.2 - (time.monotonic() - t0)))
            except AssertionError:
                break
            self.assertFalse(b.is_event)
            self.assertEqual(b.raw, b":\n")
            beats.append(time.monotonic() - t0)
        self.assertIn(len(beats), (3, 4), beats)  # every 300 ms
        self.assertLess(beats[0], 0.6, beats)

    def test_slow_consumer_disconnected_others_keep_receiving(self):
        channel = "slow"
        before = get_json(self.port, "/stats")[1]["slow_subscribers_dropped"]
        active = self.started("/sse/" + channel)
        # a consumer that never reads, not even the response head
        slow = SseStream(self.port, "/sse/" + channel, rcvbuf=4096, read_head=False)
        self.addCleanup(slow.close)
        wait_for(lambda: get_json(self.port, "/channels/" + channel)[1]["subscribers"] == 2,
                 what="2 subscribers")
        published, got, errors = [], [], []

        def reader():
            try:
                while True:
                    b = active.next_event(20)
                    if b is None:
                        errors.append("active stream closed")
                        return
                    if b.text == "end":
                        return
                    got.append((b.id, len(b.text), b.text[:12]))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        t = threading.Thread(target=reader)
        t.start()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO)
        dropped = False
        for i in range(2000):
            # the reading subscriber stays within a few messages (far less than max_queue_bytes)
            wait_for(lambda: len(got) >= i - 3 or errors, timeout=IO, what="the active reader")
            body = ("%08d" % i) + "x" * (32 * 1024 - 8)
            published.append((publish(self.port, channel, body, conn=conn), len(body), body[:12]))
            if i % 10 == 9:
                if get_json(self.port, "/stats")[1]["slow_subscribers_dropped"] > before:
                    dropped = True
                    break
        self.assertTrue(dropped, "the slow consumer was never dropped")
        for i in range(3):  # the server goes on
            published.append((publish(self.port, channel, "after%d" % i, conn=conn), 6,
                              "after%d" % i))
        publish(self.port, channel, "end", conn=conn)
        conn.close()
        t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(got, published)
        self.assertEqual(get_json(self.port, "/stats")[1]["slow_subscribers_dropped"], before + 1)
        self.assertEqual(get_json(self.port, "/channels/" + channel)[1]["subscribers"], 1)
        # the slow one: a prefix of the messages, in order, then the final comment, then EOF
        slow.sock.settimeout(IO)
        slow.read_head()
        self.assertEqual(slow.status, 200)
        seen, last_block = [], None
        while True:
            b = slow.next_block(IO)
            if b is None:
                break
            last_block = b
            if b.is_event:
                seen.append((b.id, len(b.text), b.text[:12]))
        self.assertGreater(len(seen), 0)
        self.assertEqual(seen, published[:len(seen)])
        self.assertLess(len(seen), len(published))
        self.assertFalse(last_block.is_event)
        self.assertTrue(last_block.comments and "disconnected" in last_block.comments[0],
                        last_block)
        # it resumes from its last id: exactly the rest, or a gap notice and what history has
        s = self.started("/sse/" + channel, {"Last-Event-ID": seen[-1][0]})
        rest = published[len(seen):] + [None]  # + "end"
        first = s.next_event()
        if len(rest) > 5:
            self.assertEqual(first.event, "herald-gap")
            want = rest[-5:]
        else:
            want = rest
            s.buf[:0] = first.raw + b"\n"
        got2 = s.events(len(want))
        self.assertEqual([(b.id, len(b.text), b.text[:12]) for b in got2[:-1]], want[:-1])
        self.assertEqual(got2[-1].text, "end")
        self.assertHealthy(self.port)

    def test_graceful_shutdown_final_retry_and_close(self):
        # SSE streams are closed at once on SIGTERM, not held for shutdown_timeout: the log says
        # so, and the exit comes long before a 60 s timeout would end them
        h = self.start_herald(conf=dict(self.CONF, shutdown_timeout="60s"))
        streams = []
        for _ in range(6):
            s = SseStream(h.port, "/sse/bye")
            self.addCleanup(s.close)
            self.assertEqual(s.status, 200)
            self.assertIsNotNone(s.next_block().retry)
            streams.append(s)
        wait_for(lambda: get_json(h.port, "/channels/bye")[1]["subscribers"] == 6,
                 what="6 subscribers")
        mark = h.mark()
        took = h.stop(timeout=60)
        self.assertIsNone(h.find_log(r"shutdown_timeout reached", start=mark), h.log_text())
        self.assertLess(took, 30)
        for s in streams:
            blocks = []
            while True:
                b = s.next_block(IO)
                if b is None:
                    break
                blocks.append(b)
            final = [b for b in blocks if b.raw != b":\n"][-1]  # heartbeats may come first
            self.assertTrue(100 <= (final.retry or 0) <= 200, final)
            self.assertTrue(any("shutting down" in c for c in final.comments), final)
            self.assertFalse(final.is_event)

    def test_eventsource_reconnects_after_restart_with_gap(self):
        """The npm client reconnects by itself after a graceful shutdown, sends Last-Event-ID
        (an id of the old epoch) to the restarted server, and gets the gap notice."""
        port = self.reserve_port()  # both servers listen there; nobody else gets it between
        listen = ("127.0.0.1:%d" % port,)
        h1 = self.start_herald(conf=self.CONF, listens=listen)
        es = NodeSse(self, "http://127.0.0.1:%d/sse/again" % port, 4, timeout_ms=30000)
        es.wait_open()
        old = [publish(port, "again", "old%d" % i) for i in range(2)]
        got = es.events(2)
        self.assertEqual([(g["id"], g["data"]) for g in got], [(old[0], "old0"), (old[1], "old1")])
        h1.stop()
        h2 = self.start_herald(conf=self.CONF, listens=listen)
        es.wait_open(timeout=15)
        wait_for(lambda: get_json(port, "/channels/again")[1].get("subscribers") == 1,
                 what="the client back")
        new = publish(port, "again", "new")
        gap, msg = es.events(2)
        self.assertEqual(gap["type"], "herald-gap")
        self.assertEqual(json.loads(gap["data"])["channel"], "again")
        self.assertEqual((msg["type"], msg["id"], msg["data"]), ("message", new, "new"))
        self.assertNotEqual(parse_id(new)[0], parse_id(old[0])[0])
        self.assertEqual(es.finish(), 0)
        h2.stop()


if __name__ == "__main__":
    hh.main()
