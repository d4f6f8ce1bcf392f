# SPDX-License-Identifier: MIT
"""Webhook endpoints registered through the admin API (docs/webhooks.md#registering-through-the-
admin-api): POST/GET/DELETE /admin/webhooks against the real binary, deliveries verified by the
node receiver with npm standardwebhooks (webhook_support.Receiver).

Covered: a registration without a secret gets one, shown once, which signs its deliveries;
only matching channels are sent; list and get never show a secret; delete stops deliveries and
the id can be registered again; conf endpoints are read-only (409); refusals with their status
and JSON reason: a bad URL or body (400), a loopback/private/link-local target without
webhook_allow_private (400; a host name resolved at registration), a taken id (409), past webhook_max_endpoints (507), a body past
16 KiB (413), more than 16 channel patterns, a pattern past 129 bytes, a URL past 512 bytes or
more than 4 secrets (400), registration off (403), a caller without the admin_key (401) or with
a wrong one (403). With Redis, two nodes sharing a real redis-server: an
endpoint registered on one is delivered for publishes on the other, survives a restart, is
deleted everywhere, the bound is the cluster's, and a 410 Gone answered to one node disables it
on both until it is enabled through the API; while Redis is away, 503."""
import ipaddress
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
import redis_support as rs  # noqa: E402
import webhook_support as ws  # noqa: E402
from herald_harness import publish, wait_for  # noqa: E402

IO = 10.0
FAST = ["webhook_allow_private on", "webhook_backoff_base 50ms", "webhook_backoff_max 300ms",
        "webhook_timeout 1500ms", "webhook_connect_timeout 500ms"]


def register(port, body, expect=201):
    status, answer = ws.admin(port, "POST", "/admin/webhooks", body)
    if status != expect:
        raise AssertionError("POST /admin/webhooks %r: %d %r (expected %d)" %
                             (body, status, answer, expect))
    return answer


def wait_known(port, name, pred, what):
    """The endpoint as the node shows it, once it knows it (404 until then) and pred holds."""
    last = []

    def ok():
        status, body = ws.admin(port, "GET", "/admin/webhooks/" + name)
        last[:] = [status, body]
        return status == 200 and pred(body["endpoints"][0]) and body["endpoints"][0]
    try:
        return wait_for(ok, IO, what)
    except AssertionError:
        raise AssertionError("%s: last answer %r" % (what, last))


class TestRegistration(hh.HeraldTestCase):
    def test_register_deliver_list_get_delete(self):
        r = ws.Receiver(self, [])
        h = self.start_herald(overrides=FAST + ["webhook_max_endpoints 4"])
        answer = register(h.port, {"id": "app", "url": r.url("/in?k=1"),
                                   "channels": ["orders:*"]})
        secret = answer["secret"]
        self.assertTrue(secret.startswith("whsec_"), answer)
        ep = answer["endpoint"]
        self.assertEqual((ep["name"], ep["source"], ep["state"], ep["channels"], ep["events"],
                          ep["secrets"]),
                         ("app", "api", "enabled", ["orders:*"], ["message.published"], 1))
        r.add_secrets([secret, ws.new_secret()])
        mid = publish(h.port, "orders:1", "paid")
        publish(h.port, "news", "not for it")
        got = r.wait_deliveries(1)
        time.sleep(0.3)
        got = r.deliveries()
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["verified"], [True, False])
        self.assertEqual(got[0]["path"], "/in?k=1")
        self.assertEqual(json.loads(got[0]["body"])["data"]["id"], mid)
        # list and get: figures, never the secret
        for path in ("/admin/webhooks", "/admin/webhooks/app"):
            status, _, raw = hh.request(h.port, "GET", path)
            self.assertEqual(status, 200)
            self.assertNotIn(secret[6:], raw.decode())
        ep = ws.wait_endpoint(h.port, "app", lambda e: e["delivered"] == 1, "delivered")
        self.assertEqual((ep["pending"], ep["last_error"], ep["state"]), (0, "", "enabled"))
        # a secret given is not shown back; an id is made when none is given
        s2 = ws.new_secret()
        answer = register(h.port, {"url": r.url("/two"), "secret": s2,
                                   "events": ["channel.occupied"]})
        self.assertNotIn("secret", answer)
        self.assertRegex(answer["endpoint"]["name"], r"^wh_[0-9a-f]{16}$")
        status, body = ws.admin(h.port)
        self.assertEqual(sorted(e["name"] for e in body["endpoints"]),
                         sorted(["app", answer["endpoint"]["name"]]))
        # delete: no more deliveries, 404 after, the id free again
        status, body = ws.admin(h.port, "DELETE", "/admin/webhooks/app")
        self.assertEqual((status, body), (200, {"deleted": "app"}))
        publish(h.port, "orders:2", "after the delete")
        time.sleep(0.5)
        self.assertEqual(len(r.deliveries()), 1)
        self.assertEqual(ws.admin(h.port, "GET", "/admin/webhooks/app")[0], 404)
        status, body = ws.admin(h.port, "DELETE", "/admin/webhooks/app")
        self.assertEqual(status, 404, body)
        register(h.port, {"id": "app", "url": r.url("/again"), "channels": ["orders:*"],
                          "secret": secret})
        publish(h.port, "orders:3", "registered again")
        got = r.wait_deliveries(2)
        self.assertEqual((got[1]["path"], got[1]["verified"]), ("/again", [True, False]))

    def test_refusals(self):
        """Each refusal with its status and a JSON reason; the bound holds (507) and nothing past
        it is kept."""
        s = ws.new_secret()
        h = self.start_herald(overrides=FAST + [
            "webhook_max_endpoints 2",
            ws.webhook_line("http://127.0.0.1:9/conf", [s], name="confhook")])
        ok = {"url": "http://127.0.0.1:9/x", "secret": s}

        def refused(body, status, why, method="POST", path="/admin/webhooks"):
            got, answer = ws.admin(h.port, method, path, body)
            self.assertEqual(got, status, answer)
            self.assertEqual(answer["status"], status, answer)
            self.assertIn(why, answer["error"])
            self.assertNotIn(s[6:], json.dumps(answer))

        refused(None, 409, "defined in the conf", "DELETE", "/admin/webhooks/confhook")
        refused(dict(ok, id="confhook"), 409, "of the conf")
        refused(dict(ok, url="ftp://example.com/"), 400, "expected an http")
        refused(dict(ok, url="http://u:p@example.com/"), 400, "no user info")
        refused(dict(ok, secret="whsec_AAAA"), 400, "16..64")
        refused(dict(ok, colour="red"), 400, "unknown member")
        refused(dict(ok, channels="news"), 400, "an array of")
        refused(dict(ok, id="dead-letters"), 400, "not dead-letters")
        refused("{not json", 400, "JSON object")
        refused("[]", 400, "JSON object")
        big = dict(ok, channels=["c%d" % i for i in range(16)], pad="x" * 17000)
        refused(big, 413, "16 KiB")
        refused(dict(ok, channels=["c%d" % i for i in range(17)]), 400, "1..16 strings")
        refused(dict(ok, channels=["c" * 130]), 400, "1..129 bytes")
        refused(dict(ok, url="http://127.0.0.1:9/" + "u" * 494), 400, "1..512 bytes")
        refused(dict(ok, secret=[s] * 5), 400, "1..4 strings")
        register(h.port, dict(ok, id="one"))
        refused(dict(ok, id="one"), 409, "already registered")
        register(h.port, dict(ok, id="two"))
        for i in range(5):
            refused(dict(ok, id="more%d" % i), 507, "webhook_max_endpoints")
        status, body = ws.admin(h.port)
        self.assertEqual(sorted(e["name"] for e in body["endpoints"]), ["confhook", "one", "two"])
        self.assertEqual(ws.admin(h.port, "DELETE", "/admin/webhooks/two")[0], 200)
        register(h.port, dict(ok, id="three"))

    def test_admin_key_guards_registration(self):
        """With admin_key, a caller without it is refused before anything is registered: 401
        with WWW-Authenticate and a JSON reason without the key, 403 with a wrong one."""
        h = self.start_herald(overrides=FAST + ["webhook_max_endpoints 2",
                                                "admin_key the-admin-key-of-this-test"])
        body = json.dumps({"url": "http://127.0.0.1:9/x", "secret": ws.new_secret()})
        ctype = {"Content-Type": "application/json"}
        status, hdrs, data = hh.request(h.port, "POST", "/admin/webhooks", body, ctype)
        self.assertEqual(status, 401, data)
        self.assertIn("Bearer", hdrs.get("www-authenticate", ""))
        self.assertIn("admin_key", json.loads(data)["error"])
        status, _, data = hh.request(h.port, "POST", "/admin/webhooks", body,
                                     dict(ctype, Authorization="Bearer wrong"))
        self.assertEqual(status, 403, data)
        self.assertIn("wrong admin key", json.loads(data)["error"])
        good = dict(ctype, Authorization="Bearer the-admin-key-of-this-test")
        status, _, data = hh.request(h.port, "GET", "/admin/webhooks", None, good)
        self.assertEqual((status, json.loads(data)["endpoints"]), (200, []), data)
        status, _, data = hh.request(h.port, "POST", "/admin/webhooks", body, good)
        self.assertEqual(status, 201, data)

    def test_ssrf_refused_at_registration(self):
        """Without webhook_allow_private, loopback, private, link-local and unspecified targets
        are refused when registered (any IPv4 form the resolver reads, IPv6, localhost), not at
        the first delivery."""
        s = ws.new_secret()
        h = self.start_herald(overrides=["webhook_max_endpoints 4"])
        for url in ("http://127.0.0.1:8080/", "http://2130706433/", "http://127.1/",
                    "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/latest",
                    "http://0.0.0.0/", "http://[::1]:80/", "http://[fe80::1]/",
                    "http://[::ffff:127.0.0.1]/", "http://localhost:3000/",
                    "https://api.localhost/"):
            status, answer = ws.admin(h.port, "POST", "/admin/webhooks", {"url": url, "secret": s})
            self.assertEqual(status, 400, (url, answer))
            self.assertIn("webhook_allow_private", answer["error"], url)
        # a public address is accepted (nothing is sent until an event)
        register(h.port, {"url": "https://192.0.2.10/hook", "secret": s})

    def test_ssrf_name_resolved_at_registration(self):
        """A host name is resolved when registered (through /etc/hosts here: no DNS query
        leaves the machine): one that names a loopback or private address is refused."""
        names = []
        with open("/etc/hosts") as f:
            for line in f:
                words = line.split("#")[0].split()
                try:
                    addr = ipaddress.ip_address(words[0]) if words else None
                except ValueError:
                    continue
                if addr and (addr.is_loopback or addr.is_private or addr.is_link_local):
                    names += [w for w in words[1:] if w.lower() != "localhost" and
                              not w.lower().endswith(".localhost") and "." not in w[-1:]]
        if not names:
            # a machine whose /etc/hosts names no private address but localhost: nothing to
            # resolve without a DNS query, which tests must not send
            self.skipTest("no name of a private address in /etc/hosts")
        h = self.start_herald(overrides=["webhook_max_endpoints 4"])
        status, answer = ws.admin(h.port, "POST", "/admin/webhooks",
                                  {"url": "http://%s:8080/" % names[0], "secret": ws.new_secret()})
        self.assertEqual(status, 400, (names[0], answer))
        self.assertIn("webhook_allow_private", answer["error"])
        self.assertIn(names[0], answer["error"])

    def test_registration_off(self):
        """Off by default (webhook_max_endpoints 0): 403 naming the directive, with conf
        endpoints and without any webhook at all (the default conf)."""
        line = ws.webhook_line("http://127.0.0.1:9/", [ws.new_secret()])
        for overrides in ([line], []):
            h = self.start_herald(overrides=overrides)
            status, body = ws.admin(h.port, "POST", "/admin/webhooks",
                                    {"url": "http://127.0.0.1:9/", "secret": ws.new_secret()})
            self.assertEqual(status, 403, (overrides, body))
            self.assertIn("set webhook_max_endpoints N", body["error"])
            status, body = ws.admin(h.port, "GET", "/admin/webhooks")
            self.assertEqual((status, len(body["endpoints"])), (200, len(overrides)))


class TestRedis(hh.HeraldTestCase):
    def node(self, redis, extra=()):
        h = self.start_herald(overrides=["redis unix://" + redis.sock,
                                         "webhook_max_endpoints 2"] + FAST + list(extra))
        # ready before its webhook sender's Redis connection is: until then registering answers
        # 503 (Redis away); the dead letters, read from Redis, say when it is up
        wait_for(lambda: ws.admin(h.port, "GET", "/admin/webhooks/dead-letters")[0] == 200, IO,
                 "the node's webhook connection to Redis")
        return h

    def test_shared_by_nodes_and_restarts(self):
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        redis = rs.start_redis(self)
        a, b = self.node(redis), self.node(redis)
        register(a.port, {"id": "app", "url": r.url(), "secret": s, "channels": ["x"]})
        wait_known(b.port, "app", lambda e: e["source"] == "api", "node B knowing app")
        ids = {publish(b.port, "x", "on B"), publish(a.port, "x", "on A")}
        got = r.wait_deliveries(2)
        self.assertEqual({json.loads(d["body"])["data"]["id"] for d in got}, ids)
        self.assertTrue(all(d["verified"] == [True] for d in got))
        # the bound is the cluster's; a taken id is refused by the other node too
        register(b.port, {"id": "other", "url": r.url("/o"), "secret": s, "channels": ["none"]})
        status, body = ws.admin(a.port, "POST", "/admin/webhooks",
                                {"id": "third", "url": r.url(), "secret": s})
        self.assertEqual(status, 507, body)
        wait_for(lambda: ws.admin(a.port, "GET", "/admin/webhooks/other")[0] == 200, IO,
                 "node A knowing other")
        status, body = ws.admin(b.port, "POST", "/admin/webhooks",
                                {"id": "app", "url": r.url(), "secret": s})
        self.assertEqual(status, 409, body)
        # a restart: read back from Redis
        a.stop()
        a = self.node(redis)
        ep = wait_known(a.port, "app", lambda e: e["source"] == "api", "app after a restart")
        self.assertEqual(ep["channels"], ["x"])
        publish(a.port, "x", "after the restart")
        r.wait_deliveries(3)
        # deleted on B: gone from A too, nothing more delivered
        self.assertEqual(ws.admin(b.port, "DELETE", "/admin/webhooks/app")[0], 200)
        wait_for(lambda: ws.admin(a.port, "GET", "/admin/webhooks/app")[0] == 404, IO,
                 "node A forgetting app")
        publish(a.port, "x", "after the delete")
        publish(b.port, "x", "after the delete")
        time.sleep(0.5)
        self.assertEqual(len(r.deliveries()), 3)
        self.assertEqual(redis.cli("HLEN", "herald:hk:eps"), "1")
        self.assertEqual(redis.cli("EXISTS", "herald:hk:q:app"), "0")

    def test_410_disables_everywhere_until_enabled(self):
        s = ws.new_secret()
        r = ws.Receiver(self, [s])
        r.control(["status:410"])
        redis = rs.start_redis(self)
        a, b = self.node(redis), self.node(redis)
        register(a.port, {"id": "gone", "url": r.url(), "secret": s})
        wait_known(b.port, "gone", lambda e: True, "node B knowing gone")
        publish(a.port, "x", "answered 410")
        for n in (a, b):
            ep = wait_known(n.port, "gone", lambda e: e["state"] == "disabled",
                            "disabled on every node")
            self.assertIn("410", ep["disabled_reason"])
        publish(b.port, "x", "dropped")
        publish(a.port, "x", "dropped")
        time.sleep(0.5)
        self.assertEqual(len(r.deliveries()), 1)
        status, body = ws.admin(b.port, "POST", "/admin/webhooks/gone/enable")
        self.assertEqual((status, body["endpoint"]["state"]), (200, "enabled"))
        wait_known(a.port, "gone", lambda e: e["state"] == "enabled", "enabled on A too")
        mid = publish(a.port, "x", "delivered again")
        got = r.wait_deliveries(2)
        self.assertEqual(json.loads(got[1]["body"])["data"]["id"], mid)
        self.assertEqual(got[1]["answer"], "ok")

    def test_redis_away(self):
        """Without Redis, registering and deleting answer 503 with a reason; what the node knows
        is still listed."""
        s = ws.new_secret()
        redis = rs.start_redis(self)
        a = self.node(redis)
        register(a.port, {"id": "app", "url": "http://127.0.0.1:9/", "secret": s})
        redis.kill()

        def refused():
            status, body = ws.admin(a.port, "POST", "/admin/webhooks",
                                    {"id": "late", "url": "http://127.0.0.1:9/", "secret": s})
            return status == 503 and body
        body = wait_for(refused, IO, "a registration refused while Redis is away")
        self.assertIn("redis is unavailable", body["error"])
        status, body = ws.admin(a.port, "DELETE", "/admin/webhooks/app")
        self.assertEqual(status, 503, body)
        self.assertEqual(ws.admin(a.port, "GET", "/admin/webhooks/app")[0], 200)


if __name__ == "__main__":
    hh.main()
