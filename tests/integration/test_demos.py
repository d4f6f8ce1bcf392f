# SPDX-License-Identifier: MIT
"""The example pages in headless Debian chromium (npm playwright-core, browser_support.Driver),
against the real binary run on each example's own herald.conf, with each example's own backend
(examples/*/server.py, a process of its own): what a person would see in the page (the visible
text of its elements) is what the tests assert, and each test saves screenshots into
$HERALD_BUILD/screenshots/test_demos (a temporary directory without HERALD_BUILD; printed).

- examples/chat on one node: Ann and Bob, each in a browser context of their own, join a room
  and each sees the other in the presence list; Ann types, Bob sees "Ann is typing..." and it
  goes away when she stops; Ann sends, Bob sees the message once; Bob's read receipt reaches Ann
  (her message shows two ticks, "read by Bob"), and Bob's reply is read by Ann; Ann closes her
  tab and Bob's list loses her.
- examples/chat on two nodes sharing a redis-server: the same across the nodes (Ann's page finds
  its node through the backend's /config, Bob's is told the other one), the typing indicator
  ending when Ann's message arrives; then Ann opens a tab again and her node is killed with
  SIGKILL: Bob sees her leave within presence_lease (2 s here).
- examples/chat with Ann behind a proxy that strips Upgrade: her page falls back to SSE (its
  JSON form, messages stamped with their publisher), lists Bob (a snapshot from the backend) and
  loses him when he leaves, sees him typing, publishes over HTTP with her token, and messages and
  read ticks go both ways.
- examples/notifications: a user's feed shows the notifications the backend publishes for that
  user (and not another user's); after the page is left and opened again, and after a reload
  racing more publishes, it shows every notification exactly once, newest first; behind a proxy
  that strips Upgrade the page falls back from WebSocket to SSE and still receives.
- docs/clients.md's ten-line page, exactly as written there (the herald URL replaced), receives
  from herald on the shipped conf/herald.conf.
"""
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
from browser_support import Driver, Proxy  # noqa: E402
from herald_harness import request, wait_for  # noqa: E402

EXAMPLES = os.path.join(hh.HERALD_SRC, "examples")
CLIENTS_MD = os.path.join(hh.HERALD_SRC, "docs", "clients.md")
SECRET = "demos-test-secret-of-more-than-32-bytes"
KEY = "demos-test-publish-key"
WAIT = 20.0
LEASE_S = 2
# herald's defaults for tests (hh.DEFAULT_CONF) that the examples' files leave out.
TEST_OVERRIDES = ["log_level info", "max_connections 1000", "shutdown_timeout 3s"]

# What a person sees of the chat page: the visible text of its parts.
CHAT_VIEW = """() => {
  const shown = (e) => e && e.checkVisibility();
  const text = (e) => (shown(e) ? e.innerText.trim() : null);
  const all = (sel) => [...document.querySelectorAll(sel)].filter(shown);
  return {
    status: text(document.getElementById("status")),
    members: all("#members li").map(text),
    typing: text(document.getElementById("typing")) || "",
    messages: all("#messages li").map((li) => ({
      who: text(li.querySelector(".who")), text: text(li.querySelector(".text")),
      tick: li.querySelector(".tick") ? text(li.querySelector(".tick")) : null })),
  };
}"""
CHAT_ONLINE = "document.getElementById('status').textContent.startsWith('online')"

FEED_VIEW = """() => {
  const shown = (e) => e && e.checkVisibility();
  const text = (e) => (shown(e) ? e.innerText.trim() : null);
  return {
    status: text(document.getElementById("status")),
    notice: text(document.getElementById("notice")) || "",
    count: text(document.getElementById("count")),
    titles: [...document.querySelectorAll("#feed li .title")].filter(shown).map(text),
  };
}"""
FEED_LIVE = "document.getElementById('status').textContent.startsWith('live')"


def screenshot_dir():
    base = os.environ.get("HERALD_BUILD") or tempfile.mkdtemp(prefix="herald-demos-")
    d = os.path.join(base, "screenshots", "test_demos")
    os.makedirs(d, exist_ok=True)
    return d


class Backend:
    """An example's server.py, run as the README says (python3 server.py, the key or secret in
    the environment), on a port of its choosing (--listen 127.0.0.1:0, read from its first line);
    stopped by its pid after the test. Its log is kept for failure messages."""

    def __init__(self, test, example, env, args=()):
        script = os.path.join(EXAMPLES, example, "server.py")
        self.log_path = os.path.join(test.tmpdir(), example + ".log")
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--listen", "127.0.0.1:0"] + list(args),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=dict(os.environ, **env))
        test.addCleanup(self.close)
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline() if ready else ""
        m = re.search(r" on (http://127\.0\.0\.1:\d+)/", line)
        if not m:
            raise AssertionError("%s/server.py did not say where it listens within %.0f s: %r\n%s"
                                 % (example, WAIT, line, self.output()))
        self.url = m.group(1)  # also the pages' origin

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-2000:]

    def post(self, path, body):
        port = int(self.url.rsplit(":", 1)[1])
        status, _, answer = request(port, "POST", path, body.encode(),
                                    {"Content-Type": "application/json"})
        if status != 200:
            raise AssertionError("POST %s: %d %r\n%s" % (path, status, answer, self.output()))
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.log.close()


class Page:
    """A page in a browser context of its own (its own cookies, storage and connections: another
    person's browser)."""

    def __init__(self, test, url, ready):
        self.test = test
        self.driver = test.driver
        self.n = self.driver.call("page", url=url, ready=ready)
        self.closed = False
        test.addCleanup(self.close)  # before herald stops (cleanups run last-in first-out)

    def eval(self, expr, arg=None):
        return self.driver.call("eval", page=self.n, expr=expr, arg=arg)

    def call(self, op, **kw):
        return self.driver.call(op, page=self.n, **kw)

    def shot(self, name):
        path = os.path.join(self.test.shots, "%s.%s.png" % (self.test.id().split(".")[-1], name))
        self.call("screenshot", path=path)
        sys.stderr.write("screenshot: %s\n" % path)

    def wait(self, view, pred, what, timeout=WAIT):
        last = {}

        def check():
            last["view"] = self.eval(view)
            return last["view"] if pred(last["view"]) else None
        try:
            return wait_for(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as e:
            raise AssertionError("%s; the page shows %r; console:\n%s" % (
                e, last.get("view"), "\n".join(self.driver.console[-30:])))

    def close(self):
        if not self.closed:
            self.closed = True
            self.driver.call("closepage", page=self.n)


class TestDemos(hh.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.driver = Driver()
        cls.shots = screenshot_dir()
        sys.stderr.write("test_demos: screenshots go to %s\n" % cls.shots)

    @classmethod
    def tearDownClass(cls):
        cls.driver.close()

    def example_herald(self, example, port=0, overrides=()):
        with open(os.path.join(EXAMPLES, example, "herald.conf")) as f:
            conf = f.read()
        return self.start_herald(conf_raw=conf, listens=("127.0.0.1:%d" % port,),
                                 overrides=TEST_OVERRIDES + list(overrides))

    @staticmethod
    def origins(backend):
        """The examples' confs let their backend's origin in (port 8000 or 8001): here it is
        the test backend's."""
        return ["cors_origins " + backend.url, 'ws_origins "%s"' % backend.url]

    # ---- chat ----

    def chat_page(self, backend, user, name, herald=None):
        q = {"user": user, "name": name, "room": "demo"}
        if herald:
            q["herald"] = herald
        return Page(self, "%s/?%s" % (backend.url, urllib.parse.urlencode(q)), CHAT_ONLINE)

    def chat(self, ann, bob, stop_typing_by_sending):
        """The conversation both chat tests hold: presence, typing, a message seen once, read
        ticks. Returns nothing; asserts on what each page shows."""
        ann.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann (you)", "Bob"],
                 "Ann's list: herself and Bob")
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann", "Bob (you)"],
                 "Bob's list: Ann and himself")

        ann.call("type", selector="#text", text="hel", delay=30)
        bob.wait(CHAT_VIEW, lambda v: v["typing"] == "Ann is typing\u2026",
                 "Bob sees Ann typing")
        self.assertEqual(ann.eval(CHAT_VIEW)["typing"], "", "Ann is not told she is typing")
        if not stop_typing_by_sending:
            # Ann stops: the indicator goes away by itself (4 s after her last notice).
            t0 = time.monotonic()
            bob.wait(CHAT_VIEW, lambda v: v["typing"] == "", "Bob's indicator goes away")
            took = time.monotonic() - t0
            sys.stderr.write("the typing indicator went away %.1f s after it was seen\n" % took)
            self.assertEqual(bob.eval(CHAT_VIEW)["messages"], [])
        ann.call("type", selector="#text", text="lo Bob", delay=10)
        ann.call("press", selector="#text", key="Enter")
        v = bob.wait(CHAT_VIEW, lambda v: v["messages"], "Ann's message on Bob's page")
        # The message came, and with it the indicator went (the same step of the page).
        self.assertEqual(v["typing"], "")
        self.assertEqual(v["messages"], [{"who": "Ann", "text": "hello Bob", "tick": None}])
        v = ann.wait(CHAT_VIEW, lambda v: v["messages"] and
                     v["messages"][0]["tick"] == "\u2713\u2713 read by Bob",
                     "Bob's read receipt on Ann's message")
        self.assertEqual(v["messages"], [{"who": "You", "text": "hello Bob",
                                          "tick": "\u2713\u2713 read by Bob"}])
        self.assertEqual(ann.eval("() => document.getElementById('text').value"), "")

        # Bob answers: Ann reads it, Bob's message gets its ticks; Ann's message is still there
        # once on both pages.
        bob.call("type", selector="#text", text="hi Ann", delay=5)
        bob.call("press", selector="#text", key="Enter")
        want_bob = [{"who": "Ann", "text": "hello Bob", "tick": None},
                    {"who": "You", "text": "hi Ann", "tick": "\u2713\u2713 read by Ann"}]
        bob.wait(CHAT_VIEW, lambda v: v["messages"] == want_bob, "Ann reads Bob's answer")
        ann.wait(CHAT_VIEW, lambda v: len(v["messages"]) == 2, "Bob's answer on Ann's page")
        self.assertEqual(ann.eval(CHAT_VIEW)["messages"], [
            {"who": "You", "text": "hello Bob", "tick": "\u2713\u2713 read by Bob"},
            {"who": "Bob", "text": "hi Ann", "tick": None}])
        ann.shot("ann")
        bob.shot("bob")

    def test_chat_one_node(self):
        port = self.reserve_port()
        backend = Backend(self, "chat", {"HERALD_SECRET": SECRET},
                          ["--herald", "http://127.0.0.1:%d" % port])
        self.example_herald("chat", port, ["auth_jwt_secret " + SECRET] + self.origins(backend))
        ann = self.chat_page(backend, "ann", "Ann")
        bob = self.chat_page(backend, "bob", "Bob")
        self.chat(ann, bob, stop_typing_by_sending=False)
        ann.close()  # the tab closes: her connection ends, she leaves
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Bob (you)"], "Ann leaves Bob's list")
        bob.shot("after-ann-left")

    def test_chat_two_nodes_and_a_killed_node(self):
        redis = rs.start_redis(self)
        port = self.reserve_port()
        backend = Backend(self, "chat", {"HERALD_SECRET": SECRET},
                          ["--herald", "http://127.0.0.1:%d" % port])
        # A dead node's leaves come at least 3/4 of the lease less a renewal (1 s) after the
        # kill, and Ann's join, the room's last frame, went out before it: with a hold of 500 ms
        # her leave is a leading edge, sent at once, and the bound below measures the lease
        # alone (with the default 2 s it could wait for a window: up to 2 s more)
        conf = ["auth_jwt_secret " + SECRET, "redis unix://" + redis.sock,
                "presence_lease %ds" % LEASE_S, "presence_hold 500ms"] + self.origins(backend)
        n1 = self.example_herald("chat", port, conf)
        n2 = self.example_herald("chat", 0, conf)
        ann = self.chat_page(backend, "ann", "Ann")  # on n1: the backend's /config says so
        bob = self.chat_page(backend, "bob", "Bob", herald="http://127.0.0.1:%d" % n2.port)
        self.chat(ann, bob, stop_typing_by_sending=True)
        ann.close()
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Bob (you)"],
                 "Ann (node 1) leaves Bob's list (node 2)")

        # Ann comes back on n1, whose process then dies without a word: her membership lives
        # in Redis under n1's lease, and node 2 sends her leave when it runs out.
        ann = self.chat_page(backend, "ann", "Ann")
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann", "Bob (you)"], "Ann is back")
        n1.signal(signal.SIGKILL)
        t0 = time.monotonic()
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Bob (you)"],
                 "Ann's leave after her node was killed", timeout=LEASE_S + WAIT)
        took = time.monotonic() - t0
        sys.stderr.write("Ann left Bob's list %.2f s after SIGKILL of her node "
                         "(presence_lease %d s)\n" % (took, LEASE_S))
        self.assertLessEqual(took, LEASE_S + 1.5,
                             "Ann left %.1f s after the kill (lease %d s)" % (took, LEASE_S))
        self.assertEqual(n1.wait_exit(5), -signal.SIGKILL)
        bob.shot("after-node-killed")
        self.assertTrue(bob.eval(CHAT_VIEW)["status"].startswith("online"))

    def test_chat_websocket_blocked(self):
        """Ann behind a proxy that strips Upgrade: her page falls back to SSE, whose JSON form
        brings every message with its publisher stamp. Her list shows Bob, who was there first
        (a snapshot through the backend's /members), and loses him when he leaves (an SSE
        leave event); she sees him typing (an ephemeral event on her stream) but sends no
        typing notices (herald takes them on /ws only) and publishes over HTTP with her token;
        messages and read ticks go both ways."""
        port = self.reserve_port()
        backend = Backend(self, "chat", {"HERALD_SECRET": SECRET},
                          ["--herald", "http://127.0.0.1:%d" % port])
        self.example_herald("chat", port, ["auth_jwt_secret " + SECRET] + self.origins(backend))
        proxy = Proxy(port)
        self.addCleanup(proxy.close)
        proxy.strip_upgrade = True
        bob = self.chat_page(backend, "bob", "Bob")
        ann = self.chat_page(backend, "ann", "Ann", herald="http://127.0.0.1:%d" % proxy.port)
        v = ann.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann (you)", "Bob"],
                     "Ann's list on SSE: herself and Bob")
        self.assertEqual(v["status"], "online (sse)")
        # Her stream is a member of the room: Bob's list has her.
        bob.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann", "Bob (you)"], "Bob's list")
        bob.call("type", selector="#text", text="hel", delay=30)
        ann.wait(CHAT_VIEW, lambda v: v["typing"] == "Bob is typing\u2026",
                 "Ann sees Bob typing over SSE")
        bob.call("press", selector="#text", key="Enter")
        ann.wait(CHAT_VIEW, lambda v: v["messages"] == [
            {"who": "Bob", "text": "hel", "tick": None}] and v["typing"] == "",
            "Bob's message on SSE, stamped: his name")
        bob.wait(CHAT_VIEW, lambda v: v["messages"] == [
            {"who": "You", "text": "hel", "tick": "\u2713\u2713 read by Ann"}],
            "Ann's receipt over HTTP")
        ann.call("type", selector="#text", text="hello Bob", delay=5)
        ann.call("press", selector="#text", key="Enter")
        bob.wait(CHAT_VIEW, lambda v: len(v["messages"]) == 2, "Ann's message over HTTP")
        v = ann.wait(CHAT_VIEW, lambda v: len(v["messages"]) == 2 and
                     v["messages"][1]["tick"] == "\u2713\u2713 read by Bob",
                     "Bob's receipt over SSE")
        self.assertEqual(v["messages"], [
            {"who": "Bob", "text": "hel", "tick": None},
            {"who": "You", "text": "hello Bob", "tick": "\u2713\u2713 read by Bob"}])
        v = bob.eval(CHAT_VIEW)
        self.assertEqual((v["typing"], v["messages"][1]), ("", {"who": "Ann", "text": "hello Bob",
                                                               "tick": None}))
        self.assertEqual(ann.eval(CHAT_VIEW)["status"], "online (sse)")
        ann.shot("ann-sse")
        bob.close()
        ann.wait(CHAT_VIEW, lambda v: v["members"] == ["Ann (you)"], "Bob's leave over SSE")

    # ---- notifications ----

    def feed_setup(self):
        port = self.reserve_port()
        backend = Backend(self, "notifications", {"HERALD_KEY": KEY},
                          ["--herald", "http://127.0.0.1:%d" % port])
        self.example_herald("notifications", port, ["publish_key " + KEY] + self.origins(backend))
        return backend, port

    def notify(self, backend, user, title):
        backend.post("/notify?user=" + user, '{"title": "%s", "body": "for %s"}' % (title, user))

    def test_notifications_feed_resumes_after_reload(self):
        backend, _ = self.feed_setup()
        url = "%s/?user=ann" % backend.url
        ann = Page(self, url, FEED_LIVE)
        v = ann.eval(FEED_VIEW)
        self.assertEqual((v["titles"], v["count"]), ([], "No notifications yet."))
        self.assertTrue(v["status"].startswith("live (websocket)"), v)
        for i in (1, 2, 3):
            self.notify(backend, "ann", "Order %d shipped" % i)
        self.notify(backend, "bob", "Not for Ann")
        want = ["Order %d shipped" % i for i in (3, 2, 1)]
        v = ann.wait(FEED_VIEW, lambda v: len(v["titles"]) >= 3, "three notifications")
        self.assertEqual((v["titles"], v["count"]), (want, "3 notifications"))
        ann.shot("feed")

        # Away from the page while two more come: back on it, they are there, nothing twice.
        ann.call("goto", url="about:blank", ready="true")
        for i in (4, 5):
            self.notify(backend, "ann", "Order %d shipped" % i)
        ann.call("goto", url=url, ready=FEED_LIVE)
        want = ["Order %d shipped" % i for i in (5, 4, 3, 2, 1)]
        v = ann.wait(FEED_VIEW, lambda v: len(v["titles"]) >= 5, "the two sent while away")
        self.assertEqual((v["titles"], v["count"]), (want, "5 notifications"))

        # A reload while the backend publishes: whichever page gets each one (the old one
        # before it unloads, the new one resuming after the old one's last id), it is shown once.
        def publish_during_reload():
            for i in (6, 7, 8, 9):
                self.notify(backend, "ann", "Order %d shipped" % i)
                time.sleep(0.05)
        t = threading.Thread(target=publish_during_reload)
        t.start()
        try:
            ann.call("reload", ready=FEED_LIVE)
        finally:
            t.join(WAIT)
        want = ["Order %d shipped" % i for i in range(9, 0, -1)]
        v = ann.wait(FEED_VIEW, lambda v: len(v["titles"]) >= 9, "every notification")
        time.sleep(0.3)  # anything extra would show now
        v = ann.eval(FEED_VIEW)
        self.assertEqual((v["titles"], v["count"]), (want, "9 notifications"))
        self.assertEqual(v["notice"], "")
        ann.shot("after-reload")

    def test_notifications_websocket_blocked_falls_back(self):
        backend, port = self.feed_setup()
        proxy = Proxy(port)
        self.addCleanup(proxy.close)
        proxy.strip_upgrade = True  # a proxy that does not know WebSocket
        cat = Page(self, "%s/?%s" % (backend.url, urllib.parse.urlencode(
            {"user": "cat", "herald": "http://127.0.0.1:%d" % proxy.port})), FEED_LIVE)
        v = cat.eval(FEED_VIEW)
        self.assertEqual(v["status"], "live (sse)", v)
        self.assertEqual(v["notice"], "websocket is blocked here: using sse")
        for i in (1, 2):
            self.notify(backend, "cat", "Parcel %d" % i)
        v = cat.wait(FEED_VIEW, lambda v: len(v["titles"]) >= 2, "two notifications over SSE")
        self.assertEqual((v["titles"], v["count"]), (["Parcel 2", "Parcel 1"], "2 notifications"))
        self.assertEqual(v["status"], "live (sse)")
        cat.shot("fallback")

    # ---- docs/clients.md ----

    def test_clients_md_ten_lines(self):
        with open(CLIENTS_MD) as f:
            doc = f.read()
        m = re.search(r"```html\n(.*?)```", doc, re.S)
        self.assertIsNotNone(m, "docs/clients.md has no html example")
        snippet = m.group(1)
        self.assertLessEqual(len(snippet.splitlines()), 10, snippet)
        # The shipped configuration, as the page says (bash scripts/run.sh runs herald on it).
        with open(os.path.join(hh.HERALD_SRC, "conf", "herald.conf")) as f:
            h = self.start_herald(conf_raw=f.read(), overrides=TEST_OVERRIDES)
        self.assertIn("http://localhost:8080", snippet)
        page_file = os.path.join(self.tmpdir(), "clients.html")
        with open(page_file, "w") as f:
            f.write(snippet.replace("http://localhost:8080", "http://127.0.0.1:%d" % h.port))
        pages = hh.PageServer(page_file)
        self.addCleanup(pages.close)
        page = Page(self, pages.origin + pages.path, "document.readyState === 'complete'")
        wait_for(lambda: (hh.get_json(h.port, "/channels/news")[1] or {}).get("subscribers", 0),
                 timeout=WAIT, interval=0.1, what="the page subscribed to news")
        hh.publish(h.port, "news", "hello from docs/clients.md")
        hh.publish(h.port, "news", "and another")
        view = "() => [...document.querySelectorAll('li')].map((li) => li.innerText)"
        got = page.wait(view, lambda v: len(v) >= 2, "the two messages in the page")
        self.assertEqual(got, ["hello from docs/clients.md", "and another"])
        page.shot("clients-md")


if __name__ == "__main__":
    hh.main()
