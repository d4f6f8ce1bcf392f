# SPDX-License-Identifier: MIT
"""End to end in a real browser: headless Debian chromium runs tests/integration/browser/page.html,
served by a small HTTP server of this test on another port than herald (so the page's
EventSource is a cross-origin request and herald's CORS headers matter). The page opens an
EventSource on /sse/{channel} and a WebSocket on /ws/{channel} (a /ws that does not upgrade
fails the test, as does a missing chromium); the test publishes over HTTP; the page POSTs what
it received back to the test's server, where it is compared exactly (payloads, ids, order).

The second test restarts herald on the same port: the browser's EventSource reconnects on its
own with Last-Event-ID (an id of the old epoch), and must get the herald-gap notice and then the
new messages.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import CHROMIUM, Browser, PageServer, get_json, publish, wait_for  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser", "page.html")


def reassembled(payload):
    """What an EventSource hands the page for a text payload (CR, CRLF become LF)."""
    return "\n".join(re.split(r"\r\n|\r|\n", payload))


class TestBrowser(hh.HeraldTestCase):
    CONF = {"sse_retry": "200ms", "history_size": "100"}

    def setUp(self):
        hh.require_executable(CHROMIUM, "chromium")
        self.pages = PageServer(PAGE)
        self.addCleanup(self.pages.close)

    def open_page(self, herald_port, channel, n, ws):
        b = Browser(self.pages.url({"herald": herald_port, "channel": channel, "n": n,
                                    "ws": int(ws)}))
        self.addCleanup(b.close)
        return b

    def wait_opens(self, browser, transports):
        want = sorted(transports)
        opened = []
        while sorted(opened) != want:
            try:
                kind, body = self.pages.next(("open", "error"))
            except AssertionError as e:
                raise AssertionError("%s; opened %r; chromium said:\n%s" % (e, opened,
                                                                          browser.output()))
            if kind == "error" and body.get("transport") == "ws":
                self.fail("the page's WebSocket failed: %r" % body)
            if kind == "open":
                opened.append(body["transport"])

    def test_eventsource_and_websocket_receive_published_events(self):
        h = self.start_herald(conf=self.CONF, workers=2)
        hh.require_websocket(h.port)
        payloads = [
            ("hello from herald", "text/plain; charset=utf-8"),
            ("multi\nline\r\ncrlf\rcr", "text/plain; charset=utf-8"),
            ('{"k":"v","n":[1,2,3]}', "application/json"),
            ("unicode \u00e9\u2603\U0001F600", "text/plain; charset=utf-8"),
            ("  spaces, data: and : colons  ", "text/plain"),
        ]
        channel = "browser"
        browser = self.open_page(h.port, channel, len(payloads), True)
        self.wait_opens(browser, ["sse", "ws"])
        wait_for(lambda: get_json(h.port, "/channels/" + channel)[1].get("subscribers")
                 == 2, timeout=10.0, what="the page's subscriptions")
        ids = [publish(h.port, channel, p, t) for p, t in payloads]
        try:
            _, got = self.pages.next(("done",))
        except AssertionError as e:
            raise AssertionError("%s; chromium said:\n%s" % (e, browser.output()))
        self.assertEqual([(g["type"], g["id"], g["data"]) for g in got["sse"]],
                         [("message", i, reassembled(p)) for i, (p, _) in zip(ids, payloads)])
        self.assertEqual({g["origin"] for g in got["sse"]}, {"http://127.0.0.1:%d" % h.port})
        self.assertEqual(got["ws"], [{"text": p} for p, _ in payloads])

    def test_eventsource_reconnects_with_last_event_id_after_restart(self):
        port = self.reserve_port()  # both servers listen there; nobody else gets it between
        listen = ("127.0.0.1:%d" % port,)
        h1 = self.start_herald(conf=self.CONF, listens=listen)
        channel = "browser-again"
        browser = self.open_page(port, channel, 4, False)
        self.wait_opens(browser, ["sse"])
        old = [publish(port, channel, "old %d" % i) for i in range(2)]
        wait_for(lambda: get_json(port, "/channels/" + channel)[1].get("subscribers") == 1,
                 timeout=10.0, what="the page's subscription")
        h1.stop()
        h2 = self.start_herald(conf=self.CONF, listens=listen)
        self.wait_opens(browser, ["sse"])  # the browser came back by itself
        wait_for(lambda: get_json(port, "/channels/" + channel)[1].get("subscribers") == 1,
                 timeout=10.0, what="the page's new subscription")
        new = publish(port, channel, "new 0")
        try:
            _, got = self.pages.next(("done",))
        except AssertionError as e:
            raise AssertionError("%s; chromium said:\n%s" % (e, browser.output()))
        sse = got["sse"]
        self.assertEqual([(g["type"], g["id"], g["data"]) for g in sse[:2]],
                         [("message", old[0], "old 0"), ("message", old[1], "old 1")])
        self.assertEqual(sse[2]["type"], "herald-gap")
        self.assertEqual(json.loads(sse[2]["data"])["channel"], channel)
        self.assertEqual((sse[3]["type"], sse[3]["id"], sse[3]["data"]), ("message", new, "new 0"))
        h2.stop()


if __name__ == "__main__":
    hh.main()
