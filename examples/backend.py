#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""backend.py: what an application backend does for herald (docs/auth.md), with Debian's
python3-jwt and the standard library only.

    backend.py token  SUB [CHANNEL ...]   prints a connection token (JWT, HS256, 10 minutes)
    backend.py ticket SUB [CHANNEL ...]   asks herald for a single-use ticket, prints it
    backend.py urls   SUB [CHANNEL ...]   both, as the connect URLs a browser would open

Settings come from the environment (the values of your herald.conf):

    HERALD_URL      herald's base URL, e.g. https://push.example.com (default http://127.0.0.1:8080)
    HERALD_SECRET   = auth_jwt_secret (needed for tokens)
    HERALD_KEY      one of publish_key (needed for tickets; herald also accepts an admin_key)
    HERALD_AUD      = auth_jwt_audience, when herald checks it

The channels given are granted for subscribing (default: user:SUB). Exit status 0, or 1 with
herald's reason on stderr when it refused.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt  # apt install python3-jwt

HERALD_URL = os.environ.get("HERALD_URL", "http://127.0.0.1:8080").rstrip("/")


def mint_token(sub, channels, publish=(), ttl=600, info=None):
    """A connection token: herald verifies it with auth_jwt_secret at every connect, and a
    stream ends (or is told to refresh) when it expires."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex,
              "channels": {"subscribe": list(channels), "publish": list(publish)}}
    if os.environ.get("HERALD_AUD"):
        claims["aud"] = os.environ["HERALD_AUD"]
    if info:
        claims["info"] = info
    return jwt.encode(claims, os.environ["HERALD_SECRET"], algorithm="HS256")


def ask_ticket(sub, channels, publish=(), ttl=30, info=None):
    """A single-use ticket: POST /auth/ticket with the backend's key. herald keeps the grant for
    ttl seconds (or until it is used, once, on any node); the connection it opens has no expiry
    of its own. Returns (ticket, expires_in)."""
    body = {"sub": sub, "channels": {"subscribe": list(channels), "publish": list(publish)},
            "ttl": ttl}
    if info:
        body["info"] = info
    req = urllib.request.Request(
        HERALD_URL + "/auth/ticket", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + os.environ["HERALD_KEY"],
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as e:  # 400 bad body, 401/403 key, 503 full (Retry-After)
        reason = json.loads(e.read() or b"{}").get("error", e.reason)
        sys.exit("herald refused the ticket (%d): %s" % (e.code, reason))
    return doc["ticket"], doc["expires_in"]


def main(argv):
    if len(argv) < 3 or argv[1] not in ("token", "ticket", "urls"):
        sys.exit(__doc__)
    what, sub, channels = argv[1], argv[2], argv[3:] or ["user:" + argv[2]]
    if what == "token":
        print(mint_token(sub, channels))
    elif what == "ticket":
        print(ask_ticket(sub, channels)[0])
    else:
        q = urllib.parse.quote
        ws = HERALD_URL.replace("http", "ws", 1)
        print("%s/sse/%s?token=%s" % (HERALD_URL, q(channels[0]), mint_token(sub, channels)))
        print("%s/ws/%s?ticket=%s" % (ws, q(channels[0]), ask_ticket(sub, channels)[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
