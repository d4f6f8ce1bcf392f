#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""server.py: the chat demo's backend (examples/chat/README.md), Python's standard library only.

It does what an application backend does for a herald chat: it serves the app's page
(index.html, chat.js) and it mints each user a connection token (a JWT signed HS256 with the
secret herald's auth_jwt_secret holds), which names the user (sub), carries the display name
herald stamps on everything the user publishes (info), and grants the rooms and their receipt
channels. The browser then talks to herald, but for one thing: a page on SSE (where WebSocket is
blocked) asks the backend for a room's member list, which herald answers on /ws or to a backend
(GET /presence/{channel}, an admin endpoint).

    HERALD_SECRET=... [HERALD_ADMIN_KEY=...] server.py [--listen 127.0.0.1:8000]
                                                       [--herald http://127.0.0.1:8080]

    GET /                    the page
    GET /chat.js             its script
    GET /config              {"herald": URL}: where the page finds herald (and /herald.js)
    GET /token?user=ID&name=NAME
                             a token for user ID (1-32 of a-z 0-9 _ -), 10 minutes, text/plain
    GET /members?room=NAME   {"members": [{"sub": .., "info": {..}}, ..]}: who is in room:NAME,
                             from herald's GET /presence/room:NAME (every page of it), with
                             Authorization: Bearer $HERALD_ADMIN_KEY when set (else herald
                             must see this backend as a local client: same host, no proxy)

A real backend takes the user from its own session (a cookie, its login) instead of trusting
?user=: the demo has no accounts. It prints "chat demo on http://HOST:PORT/" once it listens
(with --listen HOST:0 the port the system chose).
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
}
USER_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
TOKEN_TTL_S = 600
# What a token grants: every room and its receipts channel. A backend that keeps members per room
# would list the user's rooms here instead ("room:42", "receipts:room:42").
GRANTS = ["room:*", "receipts:room:*"]


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint_token(secret, sub, name, ttl=TOKEN_TTL_S):
    """An HS256 JWT for sub (RFC 7519): what python3-jwt's jwt.encode() makes, in five lines."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl, "info": {"name": name},
              "channels": {"subscribe": GRANTS}}
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64url(sig))


def room_members(herald_url, admin_key, room):
    """Every member of room:ROOM as herald's presence lists it (all pages), sub and info."""
    members, cursor = [], None
    while True:
        q = {"limit": "1000"}
        if cursor:
            q["cursor"] = cursor
        req = urllib.request.Request("%s/presence/%s?%s" % (
            herald_url, urllib.parse.quote("room:" + room), urllib.parse.urlencode(q)))
        if admin_key:
            req.add_header("Authorization", "Bearer " + admin_key)
        with urllib.request.urlopen(req, timeout=5) as r:
            page = json.load(r)
        members += [{"sub": m["sub"], "info": m.get("info")} for m in page["members"]
                    if m.get("sub")]
        cursor = page.get("next")
        if not cursor:
            return members


def make_handler(secret, herald_url, admin_key=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body, ctype="text/plain; charset=utf-8"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path in FILES:
                name, ctype = FILES[url.path]
                with open(os.path.join(HERE, name), "rb") as f:
                    self.answer(200, f.read(), ctype)
            elif url.path == "/config":
                self.answer(200, json.dumps({"herald": herald_url}), "application/json")
            elif url.path == "/token":
                user = q.get("user", "")
                name = q.get("name", user).strip()[:40] or user
                if not USER_RE.match(user):
                    self.answer(400, "user: 1-32 characters of a-z 0-9 _ -\n")
                    return
                self.answer(200, mint_token(secret, user, name))
            elif url.path == "/members":
                # A real backend answers only a member of the room (its session says who asks).
                room = q.get("room", "")
                if not USER_RE.match(room):
                    self.answer(400, "room: 1-32 characters of a-z 0-9 _ -\n")
                    return
                try:
                    members = room_members(herald_url, admin_key, room)
                except (OSError, ValueError, KeyError) as e:
                    detail = e.read().decode(errors="replace") if isinstance(
                        e, urllib.error.HTTPError) else str(e)
                    self.answer(502, "herald's presence did not answer: %s\n" % detail)
                    return
                self.answer(200, json.dumps({"members": members}), "application/json")
            else:
                self.answer(404, "not found\n")

        def log_message(self, fmt, *args):  # one line per request on stderr, no tokens
            sys.stderr.write("chat: %s %s\n" % (self.command, self.path.split("?")[0]))

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (default %(default)s)")
    ap.add_argument("--herald", default=os.environ.get("HERALD_URL", "http://127.0.0.1:8080"),
                    help="herald's URL as the browser reaches it (default $HERALD_URL or "
                         "%(default)s)")
    args = ap.parse_args()
    secret = os.environ.get("HERALD_SECRET", "")
    if len(secret) < 32:
        sys.exit("server.py: set HERALD_SECRET to herald's auth_jwt_secret (32 bytes or more)")
    host, _, port = args.listen.rpartition(":")
    httpd = http.server.ThreadingHTTPServer((host, int(port)),
                                            make_handler(secret, args.herald.rstrip("/"),
                                                         os.environ.get("HERALD_ADMIN_KEY")))
    print("chat demo on http://%s:%d/ (herald at %s)" % (host, httpd.server_address[1],
                                                          args.herald), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
