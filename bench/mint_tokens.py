#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Mints connection tokens for herald-bench connect --tokens FILE (bench/benchmarks-notes.md,
"Connect with a JWT") with Debian's python3-jwt: N distinct tokens, one a line, each
{"sub": "bench-I", "jti": "I", "exp": now + ttl, "channels": ["*"]}.

    mint_tokens.py --alg HS256 --secret SECRET --count 10000 > hs.tokens
    mint_tokens.py --alg ES256 --key ec.key.pem --count 10000 > es.tokens
"""
import argparse
import sys
import time

import jwt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alg", required=True, help="HS256/384/512, RS256/384/512, ES256/384/512")
    ap.add_argument("--secret", help="the HMAC secret (HS*)")
    ap.add_argument("--key", help="a PEM private key file (RS*, ES*)")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    a = ap.parse_args()
    if a.alg.startswith("HS"):
        if not a.secret:
            ap.error("--secret is needed for %s" % a.alg)
        key = a.secret
    else:
        if not a.key:
            ap.error("--key is needed for %s" % a.alg)
        with open(a.key, "rb") as f:
            key = f.read()
    exp = int(time.time()) + a.ttl
    out = sys.stdout
    for i in range(a.count):
        out.write(jwt.encode({"sub": "bench-%d" % i, "jti": str(i), "exp": exp,
                              "channels": ["*"]}, key, algorithm=a.alg) + "\n")


if __name__ == "__main__":
    main()
