# SPDX-License-Identifier: MIT
"""Who may publish and who may use the admin endpoints (docs/configuration.md, "Access").

- publish_key: several keys (rotation, on one line or repeated lines, changed by reload), each
  accepted; a missing key 401, a wrong one 403. With no key, only a local client may publish
  (loopback, and no X-Forwarded-For / Forwarded / X-Real-IP / Origin / Sec-Fetch-Site): HTTP
  publish and WebSocket client publish alike; a refusal is 403 naming publish_key.
- admin endpoints (/stats, /metrics, /channels, /channels/*, DELETE, /admin/*, /auth/ticket):
  a listener marked admin, or admin_key (Bearer), or, with no admin_key, a local client.
  /healthz stays public. An admin listener serves nothing else.

Every client is real: curl, http.client, python3-websockets, and Prometheus's own text parser
(python3-prometheus-client) reading /metrics from the admin listener.
"""
import asyncio
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import request  # noqa: E402

# Headers that make a loopback request count as someone else's (a proxy or a browser on this
# host acting for another party).
RELAYED = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"Forwarded": "for=203.0.113.7"},
    {"X-Real-IP": "203.0.113.7"},
    {"Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
]

ADMIN_GETS = ["/stats", "/metrics", "/channels", "/channels/x", "/admin", "/admin/revoke",
              "/admin/anything/else", "/auth/ticket"]


def curl(*args, timeout=15):
    """Runs curl; returns (http status, headers text, body bytes)."""
    argv = ["curl", "-sS", "--max-time", str(timeout), "-D", "/dev/stderr", "-o", "-",
            "-w", "\n%{http_code}"]
    p = subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 5)
    if p.returncode != 0:
        raise AssertionError("curl %r failed (%d): %s" % (args, p.returncode, p.stderr))
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), p.stderr.decode("latin-1"), body


def error_of(body):
    doc = json.loads(body)
    assert set(doc) == {"error", "status"}, doc
    return doc["error"]


class AccessCase(hh.HeraldTestCase):
    def channel_exists(self, port, channel):
        status, _, _ = request(port, "GET", "/channels/" + channel)
        self.assertIn(status, (200, 404))
        return status == 200


# ---- publishing -----------------------------------------------------------------------------

class TestPublishWithoutKey(AccessCase):
    """No publish_key (the default): local clients only."""

    def setUp(self):
        self.h = self.start_herald(conf={"ws_client_publish": "on"})
        self.port = self.h.port
        self.url = "http://127.0.0.1:%d" % self.port

    def test_local_client_publishes(self):
        code, _, body = curl("-X", "POST", "--data-binary", "hi", self.url + "/pub/local")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["channel"], "local")
        code, _, body = curl("-X", "POST", "--data-binary", '[{"channel":"local","data":"b"}]',
                             self.url + "/pub")
        self.assertEqual(code, 200, body)

    def test_relayed_or_browser_request_is_refused(self):
        for extra in RELAYED:
            with self.subTest(extra=extra):
                hdr = ["-H", "%s: %s" % next(iter(extra.items()))]
                code, _, body = curl("-X", "POST", "--data-binary", "x", *hdr,
                                     self.url + "/pub/refused")
                self.assertEqual(code, 403, body)
                msg = error_of(body)
                self.assertIn("publish_key", msg)
                self.assertIn("local", msg)
                code, _, body = curl("-X", "POST", "--data-binary",
                                     '[{"channel":"refused","data":"x"}]', *hdr, self.url + "/pub")
                self.assertEqual(code, 403, body)
                self.assertIn("publish_key", error_of(body))
        # Nothing was published, and the connection is still good for a local publish.
        self.assertFalse(self.channel_exists(self.port, "refused"))
        status, _, _ = request(self.port, "POST", "/pub/refused", b"now")
        self.assertEqual(status, 200)

    def test_websocket_publish_local_only(self):
        async def go():
            # A local client without Origin (python3-websockets sends none unless asked).
            async with hh.ws_connect(self.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "publish", "channel": "wsl", "data": "ok",
                                          "ref": 1}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(reply.get("type"), "published", reply)
            # A browser-like client (Origin) may subscribe but not publish.
            async with hh.ws_connect(self.port, "/ws", origin="https://page.example") as ws:
                await ws.send(json.dumps({"op": "publish", "channel": "wsr", "data": "no",
                                          "ref": 2}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual((reply.get("type"), reply.get("code")), ("error", "forbidden"),
                                 reply)
                self.assertIn("publish_key", reply.get("error", ""))
            async with hh.ws_connect(self.port, "/ws/wsr",
                                     extra_headers={"X-Forwarded-For": "203.0.113.7"}) as ws:
                await ws.send("no")
                with self.assertRaises(Exception) as cm:
                    await asyncio.wait_for(ws.recv(), 10)
                self.assertEqual(getattr(cm.exception, "code", None), 1008, repr(cm.exception))
                self.assertIn("publish_key", getattr(cm.exception, "reason", ""))
        asyncio.run(go())
        self.assertTrue(self.channel_exists(self.port, "wsl"))
        self.assertFalse(self.channel_exists(self.port, "wsr"))


class TestPublishKeys(AccessCase):
    """Several keys, each valid; rotation by reload; a key makes locality irrelevant."""

    def test_rotation(self):
        h = self.start_herald(conf={"publish_key": "old-key-0123 new-key-4567"})
        url = "http://127.0.0.1:%d/pub/rot" % h.port
        for key in ("old-key-0123", "new-key-4567"):
            for extra in ([], ["-H", "X-Forwarded-For: 203.0.113.7"]):
                code, _, body = curl("-X", "POST", "-H", "Authorization: Bearer " + key, *extra,
                                     "--data-binary", key, url)
                self.assertEqual(code, 200, body)
        code, hdrs, body = curl("-X", "POST", "--data-binary", "x", url)
        self.assertEqual(code, 401, body)
        self.assertIn("www-authenticate: bearer", hdrs.lower())
        self.assertIn("publish_key", error_of(body))
        # Wrong keys: prefixes, extensions, both keys glued, the other scheme, a space more.
        for bad in ("Bearer old-key-012", "Bearer old-key-01234", "Bearer old-key-0123new-key-4567", "Basic old-key-0123", "old-key-0123",
                    "Bearer  new-key-4567", "Bearer " + "k" * 300, "Bearer "):
            with self.subTest(bad=bad):
                status, _, data = request(h.port, "POST", "/pub/rot", b"x",
                                          headers={"Authorization": bad})
                self.assertEqual(status, 403, data)
                self.assertIn("publish_key", error_of(data))

        # Rotation, step 2: the old key is removed by a reload; repeated lines are one list.
        h.reload(conf_raw="publish_key new-key-4567\npublish_key third-key-89\n")
        status, _, _ = request(h.port, "POST", "/pub/rot", b"x",
                               headers={"Authorization": "Bearer old-key-0123"})
        self.assertEqual(status, 403)
        for key in ("new-key-4567", "third-key-89"):
            status, _, data = request(h.port, "POST", "/pub/rot", b"x",
                                      headers={"Authorization": "Bearer " + key})
            self.assertEqual(status, 200, data)
        # Back to no key: local clients only again.
        h.reload(conf_raw="publish_key off\n")
        status, _, _ = request(h.port, "POST", "/pub/rot", b"x")
        self.assertEqual(status, 200)
        status, _, data = request(h.port, "POST", "/pub/rot", b"x",
                                  headers={"X-Forwarded-For": "203.0.113.7"})
        self.assertEqual(status, 403, data)

    def test_websocket_keys(self):
        h = self.start_herald(conf={"publish_key": "ka kb", "ws_client_publish": "on"})

        async def go():
            for key in ("ka", "kb"):
                async with hh.ws_connect(h.port, "/ws/wsk",
                                         extra_headers={"Authorization": "Bearer " + key}) as ws:
                    await ws.send("with " + key)
                    self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "with " + key)
            async with hh.ws_connect(h.port, "/ws") as ws:
                await ws.send(json.dumps({"op": "publish", "channel": "wsk", "data": "x",
                                          "key": "kb", "ref": 1}))
                self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"],
                                 "published")
                await ws.send(json.dumps({"op": "publish", "channel": "wsk", "data": "x",
                                          "key": "kc", "ref": 2}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(reply.get("code"), "forbidden", reply)
        asyncio.run(go())


# ---- admin endpoints ------------------------------------------------------------------------

class TestAdminWithoutKey(AccessCase):
    """No admin_key (the default): local clients, and admin listeners."""

    def test_local_client_and_refusals(self):
        h = self.start_herald()
        port = h.port
        hh.publish(port, "x", "one")
        for path in ("/stats", "/metrics", "/channels/x"):
            status, _, data = request(port, "GET", path)
            self.assertEqual(status, 200, (path, data))
        for extra in RELAYED:
            for path in ADMIN_GETS:
                with self.subTest(extra=extra, path=path):
                    status, _, data = request(port, "GET", path, headers=extra)
                    self.assertEqual(status, 403, data)
                    msg = error_of(data)
                    self.assertIn("admin_key", msg)
                    self.assertIn("listen ADDR:PORT admin", msg)
            status, _, data = request(port, "DELETE", "/channels/x", headers=extra)
            self.assertEqual(status, 403, data)
            # /healthz is public; publishing and subscribing have their own rules.
            status, _, data = request(port, "GET", "/healthz", headers=extra)
            self.assertEqual((status, data), (200, b'{"status":"ok"}'))
            status, _, _ = request(port, "GET", "/poll/x", headers=extra)
            self.assertEqual(status, 200)
        # The paths are held whatever the route table has: an unknown admin path answers 404
        # only to an admitted client.
        status, _, _ = request(port, "GET", "/admin/nothing-here")
        self.assertEqual(status, 404)
        code, _, body = curl("-H", "X-Forwarded-For: 203.0.113.7",
                             "http://127.0.0.1:%d/stats" % port)
        self.assertEqual(code, 403, body)
        code, _, body = curl("http://127.0.0.1:%d/stats" % port)
        self.assertEqual(code, 200, body)
        self.assertIn("connections", json.loads(body))


class TestAdminKey(AccessCase):
    """admin_key set: the key is needed everywhere but on admin listeners."""

    def setUp(self):
        self.h = self.start_herald(conf={"admin_key": "adm-old adm-new"},
                                   listens=("127.0.0.1:0", "127.0.0.1:0 admin"))
        self.public, self.admin = self.h.ports[0][0], self.h.ports[1][0]

    def test_key_needed_on_public_listener(self):
        hh.publish(self.public, "x", "one")
        for path in ("/stats", "/metrics", "/channels/x"):
            with self.subTest(path=path):
                status, hdrs, data = request(self.public, "GET", path)
                self.assertEqual(status, 401, data)
                self.assertIn("bearer", hdrs.get("www-authenticate", "").lower())
                msg = error_of(data)
                self.assertIn("admin_key", msg)
                self.assertIn("listen ADDR:PORT admin", msg)
                status, _, data = request(self.public, "GET", path,
                                          headers={"Authorization": "Bearer adm-wrong"})
                self.assertEqual(status, 403, data)
                self.assertIn("admin_key", error_of(data))
                for key in ("adm-old", "adm-new"):
                    for extra in ({}, {"X-Forwarded-For": "203.0.113.7"}):
                        status, _, data = request(self.public, "GET", path,
                                                  headers=dict(extra, Authorization="Bearer " + key))
                        self.assertEqual(status, 200, (key, extra, data))
        code, _, body = curl("-H", "Authorization: Bearer adm-new",
                             "http://127.0.0.1:%d/stats" % self.public)
        self.assertEqual(code, 200, body)
        # Rotation: the old key goes away by reload.
        self.h.reload(conf={"admin_key": "adm-new"})
        status, _, _ = request(self.public, "GET", "/stats", headers={"Authorization": "Bearer adm-old"})
        self.assertEqual(status, 403)
        status, _, _ = request(self.public, "GET", "/stats", headers={"Authorization": "Bearer adm-new"})
        self.assertEqual(status, 200)

    def test_admin_listener(self):
        from prometheus_client.parser import text_string_to_metric_families
        hh.publish(self.public, "adm", "one")
        # No key needed there, from anyone (even "relayed"); Prometheus's parser reads it.
        for extra in ({}, {"X-Forwarded-For": "203.0.113.7"}, {"Origin": "https://x.example"}):
            status, hdrs, data = request(self.admin, "GET", "/metrics", headers=extra)
            self.assertEqual(status, 200, data)
            names = {f.name for f in text_string_to_metric_families(data.decode())}
            self.assertIn("herald_connections", names)
            self.assertIn("herald_messages_published", names)
            status, _, data = request(self.admin, "GET", "/channels/adm", headers=extra)
            self.assertEqual((status, json.loads(data)["history"]), (200, 1))
            status, _, data = request(self.admin, "GET", "/stats", headers=extra)
            self.assertEqual(status, 200)
            self.assertGreaterEqual(json.loads(data)["messages"]["published"], 1)
        code, _, body = curl("http://127.0.0.1:%d/metrics" % self.admin)
        self.assertEqual(code, 200)
        # It serves nothing else: no publishing, no subscribing; /healthz stays.
        for method, path in (("POST", "/pub/adm"), ("GET", "/poll/adm"), ("GET", "/sse/adm"),
                             ("GET", "/ws/adm"), ("GET", "/")):
            with self.subTest(path=path):
                status, _, data = request(self.admin, method, path, b"x" if method == "POST"
                                          else None)
                self.assertEqual(status, 404, data)
                self.assertIn("admin listener", error_of(data))
        status, _, data = request(self.admin, "GET", "/healthz")
        self.assertEqual((status, data), (200, b'{"status":"ok"}'))
        # The public listener still wants the key.
        status, _, _ = request(self.public, "GET", "/metrics")
        self.assertEqual(status, 401)


if __name__ == "__main__":
    hh.main()
