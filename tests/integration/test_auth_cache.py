# SPDX-License-Identifier: MIT
"""The verified-token cache (docs/auth.md, "The verified-token cache") through the real binary,
with tokens minted by Debian's python3-jwt: a token used again is a hit (herald's /stats and
/metrics count it) and still honours everything a fresh check would: a token revoked after it
was cached is refused at its next connect (by sub and by jti), a token that expires while
cached is refused at exp, a reload with another secret refuses the cached token, an ES256 token
is a hit too; and a flood of distinct valid tokens leaves the cache within auth_cache_entries
and auth_cache_memory.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import SseStream, request  # noqa: E402

jwt = hh.require_jwt()  # scripts/deps.sh installs it: its absence fails

SECRET = "cache-test-secret-of-more-than-32-bytes!"
RULES = "channel_rule private:* subscribe=grant\n"


def conf(extra):
    merged = dict(hh.DEFAULT_CONF)
    merged.update(extra)
    return hh.conf_text(merged) + RULES


def mint(key=SECRET, alg="HS256", **claims):
    body = {"sub": "42", "exp": int(time.time()) + 600, "channels": ["private:*"]}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg)


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


class AuthCache(hh.HeraldTestCase):
    def cache(self, h):
        return hh.stats(h.port)["auth_cache"]

    def poll(self, h, tok):
        st, _, body = request(h.port, "GET", "/poll/private:a", headers=bearer(tok))
        return st, (json.loads(body) if st >= 400 else None)

    def test_hit_then_revoked(self):
        """A cached token is refused at its next connect once revoked, by sub or by jti; the
        refusals are hits, so the revoked set was asked on the cached path."""
        h = self.start_herald(conf_raw=conf({"auth_jwt_secret": SECRET}), workers=1)
        a = mint(sub="c1", jti="ja")
        b = mint(sub="c2", jti="jb")
        for tok in (a, b, a, b):
            self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual(self.cache(h)["misses"], 2)
        self.assertEqual(self.cache(h)["hits"], 2)
        self.assertEqual(self.cache(h)["entries"], 2)
        # Another transport, the same entry: an SSE stream opened with a cached token.
        s = SseStream(h.port, "/sse/private:a?token=" + a)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        self.assertEqual(self.cache(h)["hits"], 3)
        for body in ({"sub": "c1", "expires_in": 600}, {"jti": "jb", "expires_in": 600}):
            st, _, data = request(h.port, "POST", "/admin/revoke", json.dumps(body))
            self.assertEqual(st, 200, data)
        for tok in (a, b):
            st, doc = self.poll(h, tok)
            self.assertEqual(st, 401, doc)
            self.assertEqual(doc["code"], "token_revoked", doc)
        self.assertEqual(self.cache(h)["hits"], 5)
        self.assertEqual(self.cache(h)["misses"], 2)
        # Another token of neither: still let in.
        self.assertEqual(self.poll(h, mint(sub="c3")), (200, None))

    def test_expires_while_cached(self):
        """No skew: a token cached a moment ago is refused once its exp passes."""
        h = self.start_herald(conf_raw=conf({"auth_jwt_secret": SECRET,
                                             "auth_clock_skew": "0"}), workers=1)
        exp = int(time.time()) + 3
        tok = mint(exp=exp)
        self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual(self.poll(h, tok), (200, None))
        if time.time() >= exp:  # both connects must have come before exp for this test
            self.fail("the two connects took until exp (a machine this loaded cannot run it)")
        self.assertEqual(self.cache(h)["hits"], 1)
        time.sleep(max(0.0, exp - time.time()) + 1.1)
        st, doc = self.poll(h, tok)
        self.assertEqual(st, 401, doc)
        self.assertEqual(doc["code"], "token_expired", doc)
        self.assertEqual(self.cache(h)["hits"], 1)  # the entry answered nothing: it went

    def test_reload_with_another_secret_refuses_cached(self):
        h = self.start_herald(conf_raw=conf({"auth_jwt_secret": SECRET}), workers=1)
        tok = mint()
        self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual(self.cache(h)["hits"], 1)
        h.reload(conf_raw=conf({"auth_jwt_secret": SECRET + "-rotated"}))
        st, doc = self.poll(h, tok)
        self.assertEqual(st, 401, doc)
        self.assertIn("bad signature", doc["error"])
        new = mint(key=SECRET + "-rotated")
        self.assertEqual(self.poll(h, new), (200, None))
        self.assertEqual(self.poll(h, new), (200, None))
        self.assertEqual(self.cache(h)["hits"], 2)
        self.assertEqual(self.cache(h)["entries"], 1)  # the old secret's entry went at reload

    def test_es256_hit(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        priv = ec.generate_private_key(ec.SECP256R1())
        path = os.path.join(self.tmpdir(), "ec.pub.pem")
        with open(path, "wb") as f:
            f.write(priv.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        h = self.start_herald(conf_raw=conf({"auth_jwt_public_key": path}), workers=1)
        tok = mint(key=priv, alg="ES256")
        for _ in range(3):
            self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual((self.cache(h)["misses"], self.cache(h)["hits"]), (1, 2))
        # One signature byte changed: another token, verified, refused.
        bad = tok[:-3] + ("A" if tok[-3] != "A" else "B") + tok[-2:]
        self.assertEqual(self.poll(h, bad)[0], 401)
        self.assertEqual(self.cache(h)["hits"], 2)

    def test_flood_of_distinct_tokens_stays_bounded(self):
        """600 distinct valid tokens with 1 KiB of info each against a cache of 50 entries and
        64 KiB: every connect is let in, the cache never holds more than its bounds, and the
        most recent token is still a hit."""
        h = self.start_herald(conf_raw=conf({"auth_jwt_secret": SECRET,
                                             "auth_cache_entries": "50",
                                             "auth_cache_memory": "64k"}), workers=1)
        pad = "x" * 1024
        tok = None
        for i in range(600):
            tok = mint(sub="flood-%d" % i, info={"pad": pad})
            self.assertEqual(self.poll(h, tok), (200, None))
            if i % 100 == 99:
                c = self.cache(h)
                self.assertLessEqual(c["entries"], 50, c)
                self.assertLessEqual(c["bytes"], 64 * 1024, c)
        c = self.cache(h)
        self.assertEqual(c["misses"], 600, c)
        self.assertEqual(c["hits"], 0, c)
        self.assertGreater(c["entries"], 20, c)  # full: by bytes (about 1.3 KiB an entry)
        self.assertEqual(self.poll(h, tok), (200, None))
        self.assertEqual(self.cache(h)["hits"], 1)


if __name__ == "__main__":
    hh.main()
