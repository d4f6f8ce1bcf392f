#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""server.py: the notification feed demo's backend (examples/notifications/README.md), Python's
standard library only.

A notification feed is one channel per user, user:<sub>, that only that user may read (herald's
rule subscribe=user) and only the backend writes to (with its publish key). This backend:

- serves the page (index.html, notifications.js);
- gives the page single-use tickets: it asks herald's POST /auth/ticket with its publish key for
  a ticket naming the user, and herald.js spends one per connection (docs/auth.md, "Tickets").
  The backend needs one secret, the publish key, for both publishing and tickets;
- publishes notifications: POST /notify?user=ID (the page's "send me one" button, or curl) turns
  into POST /pub/user:ID at herald, a JSON {"title", "body", "at"}. With --every S it also sends
  every user who asked for a ticket recently a notification every S seconds.

    HERALD_KEY=... server.py [--listen 127.0.0.1:8001] [--herald http://127.0.0.1:8080]
                             [--herald-public URL] [--every SECONDS]

    GET  /                   the page
    GET  /notifications.js   its script
    GET  /config             {"herald": URL}: where the page finds herald (--herald-public)
    GET  /ticket?user=ID     a ticket for user ID (1-32 of a-z 0-9 _ -), text/plain
    POST /notify?user=ID     body: the notification's text (or JSON {"title","body"});
                             answers herald's {"channel", "id"}

--herald is where this backend reaches herald, --herald-public where browsers do (the same by
default). A real backend takes the user from its own session instead of trusting ?user=, and
publishes when something happens (an order shipped, a comment). It prints
"notifications demo on http://HOST:PORT/" once it listens.
"""
import argparse
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/notifications.js": ("notifications.js", "text/javascript; charset=utf-8"),
}
USER_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
MAX_BODY = 4096


class HeraldRefused(Exception):
    def __init__(self, status, reason):
        super().__init__("herald answered %d: %s" % (status, reason))
        self.status = status


class Backend:
    def __init__(self, herald_url, key):
        self.herald = herald_url
        self.key = key
        self.recent = {}  # user -> time of the last ticket, for --every
        self.lock = threading.Lock()
        self.sent = 0

    def call(self, path, body, ctype="application/json"):
        req = urllib.request.Request(self.herald + path, data=body, method="POST", headers={
            "Authorization": "Bearer " + self.key, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                reason = json.loads(e.read() or b"{}").get("error", e.reason)
            except ValueError:
                reason = e.reason
            raise HeraldRefused(e.code, reason)

    def ticket(self, user):
        """A single-use ticket for user: it may subscribe to user:<user>, its own feed (the rule
        subscribe=user would refuse any other anyway)."""
        with self.lock:
            self.recent[user] = time.monotonic()
        doc = self.call("/auth/ticket", json.dumps(
            {"sub": user, "channels": {"subscribe": ["user:" + user]}, "ttl": 30}).encode())
        return doc["ticket"]

    def notify(self, user, title, body):
        """Publishes one notification to user:<user>; returns herald's {"channel", "id"}."""
        note = {"title": title, "body": body, "at": int(time.time())}
        return self.call("/pub/" + urllib.parse.quote("user:" + user, safe=""),
                         json.dumps(note).encode())

    def every(self, seconds):
        """--every: a notification every `seconds` to each user who took a ticket in the last
        10 minutes."""
        while True:
            time.sleep(seconds)
            with self.lock:
                now = time.monotonic()
                users = [u for u, t in self.recent.items() if now - t < 600]
            for u in users:
                self.sent += 1
                try:
                    self.notify(u, "Tick %d" % self.sent, "sent by the backend every %g s" % seconds)
                except (OSError, HeraldRefused) as e:
                    sys.stderr.write("notifications: publishing to %s failed: %s\n" % (u, e))


def make_handler(backend, public_url):
    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body, ctype="text/plain; charset=utf-8"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def user(self, q):
            user = q.get("user", "")
            if not USER_RE.match(user):
                self.answer(400, "user: 1-32 characters of a-z 0-9 _ -\n")
                return None
            return user

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path in FILES:
                name, ctype = FILES[url.path]
                with open(os.path.join(HERE, name), "rb") as f:
                    self.answer(200, f.read(), ctype)
            elif url.path == "/config":
                self.answer(200, json.dumps({"herald": public_url}), "application/json")
            elif url.path == "/ticket":
                user = self.user(q)
                if user:
                    self.relay(lambda: backend.ticket(user), False)
            else:
                self.answer(404, "not found\n")

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                self.answer(413, "at most %d bytes\n" % MAX_BODY)
                return
            raw = self.rfile.read(n).decode("utf-8", "replace").strip()
            if url.path != "/notify":
                self.answer(404, "not found\n")
                return
            user = self.user(q)
            if not user:
                return
            try:
                doc = json.loads(raw)
                title, body = str(doc.get("title", "")), str(doc.get("body", ""))
            except (ValueError, AttributeError):
                title, body = raw or "Hello", ""
            self.relay(lambda: backend.notify(user, title or "Notification", body), True)

        def relay(self, fn, as_json):
            try:
                out = fn()
            except HeraldRefused as e:
                self.answer(502 if e.status >= 500 else e.status, str(e) + "\n")
                return
            except OSError as e:
                self.answer(502, "herald did not answer: %s\n" % e)
                return
            if as_json:
                self.answer(200, json.dumps(out), "application/json")
            else:
                self.answer(200, out)

        def log_message(self, fmt, *args):  # one line per request on stderr, no tickets
            sys.stderr.write("notifications: %s %s\n" % (self.command, self.path.split("?")[0]))

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8001", help="HOST:PORT (default %(default)s)")
    ap.add_argument("--herald", default=os.environ.get("HERALD_URL", "http://127.0.0.1:8080"),
                    help="herald's URL for this backend (default $HERALD_URL or %(default)s)")
    ap.add_argument("--herald-public", help="herald's URL for browsers (default: --herald)")
    ap.add_argument("--every", type=float, default=0,
                    help="send recent users a notification every SECONDS (default: never)")
    args = ap.parse_args()
    key = os.environ.get("HERALD_KEY", "")
    if not key:
        sys.exit("server.py: set HERALD_KEY to one of herald's publish_key values")
    backend = Backend(args.herald.rstrip("/"), key)
    public = (args.herald_public or args.herald).rstrip("/")
    host, _, port = args.listen.rpartition(":")
    httpd = http.server.ThreadingHTTPServer((host, int(port)), make_handler(backend, public))
    if args.every > 0:
        threading.Thread(target=backend.every, args=(args.every,), daemon=True).start()
    print("notifications demo on http://%s:%d/ (herald at %s)" % (
        host, httpd.server_address[1], public), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
