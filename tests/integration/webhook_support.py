# SPDX-License-Identifier: MIT
"""What the webhook tests share (test_webhooks*.py, test_webhook_api.py, test_notify_*.py,
test_metrics.py): a receiver (node, verifying every delivery with the npm standardwebhooks
library, answering as scripted: tests/integration/js/webhook_receiver.js) that also reads the
notify hook's batches, raw-socket receivers for what node will not do (garbage answers),
secrets, and the webhook -o lines."""
import base64
import json
import os
import socket
import subprocess
import threading
import time

import herald_harness as hh

JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js", "webhook_receiver.js")


def new_secret(nbytes=32):
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


class Receiver:
    """node webhook_receiver.js on an ephemeral loopback port; stopped by the test's cleanup."""

    def __init__(self, test, secrets, tls=None):
        node, modules = hh.require_node_module("standardwebhooks")
        args = [node, JS]
        if tls:
            args += ["--tls", tls[0], tls[1]]
        env = dict(os.environ, NODE_PATH=modules)
        self.proc = subprocess.Popen(args + list(secrets), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        test.addCleanup(self.stop)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("webhook receiver did not start: %r" %
                                 self.proc.stderr.read()[:500])
        self.port = json.loads(line)["port"]
        self.scheme = "https" if tls else "http"

    def url(self, path="/hook"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def _call(self, method, path, body=None):
        if self.scheme == "https":
            import http.client
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=ctx)
        else:
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return json.loads(r.read())
        finally:
            c.close()

    def control(self, script=(), default="ok", fail_each=0):
        self._call("POST", "/control", json.dumps({"script": list(script), "default": default,
                                                   "fail_each": fail_each}))

    def add_secrets(self, secrets):
        """Later deliveries are verified with these too (one more boolean each in verified)."""
        self._call("POST", "/secrets", json.dumps({"secrets": list(secrets)}))

    def deliveries(self):
        return self._call("GET", "/deliveries")

    def notify_batches(self, path="/notify"):
        """The notify_hook batches taken (answered "ok": one answered otherwise comes again),
        in order, each checked: its signature verified by every secret, sent to path, of type
        "events"."""
        out = []
        for d in self.deliveries():
            if d["answer"] != "ok":
                continue
            if not d["verified"] or not all(d["verified"]):
                raise AssertionError("a notify batch not verified: %r" % d)
            if d["path"] != path:
                raise AssertionError("a notify batch sent to %s, not %s" % (d["path"], path))
            b = json.loads(d["body"])
            if b["type"] != "events":
                raise AssertionError("a notify batch of type %r: %r" % (b["type"], b))
            out.append(b)
        return out

    def notify_events(self, path="/notify"):
        """The events of notify_batches, in order."""
        return [e for b in self.notify_batches(path) for e in b["events"]]

    def wait_deliveries(self, n, timeout=10.0):
        got = []

        def enough():
            got[:] = self.deliveries()
            return len(got) >= n
        hh.wait_for(enough, timeout=timeout, what="%d webhook deliveries" % n)
        return got

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class RawReceiver:
    """A loopback TCP server answering every connection with `answer` (bytes) after reading a
    request head, then closing: for answers node would not send (not HTTP, oversized bodies)."""

    def __init__(self, test, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        test.addCleanup(self.stop)

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.count += 1
                    c.sendall(self.answer)
                except OSError:
                    pass

    def stop(self):
        self.stopped = True
        self.sock.close()


def webhook_line(url, secrets, name=None, channels=None, events=None):
    parts = ["webhook", url]
    if name:
        parts.append("name=" + name)
    if channels:
        parts.append("channels=" + ",".join(channels))
    parts.append("secret=" + ",".join(secrets))
    if events:
        parts.append("events=" + ",".join(events))
    return " ".join(parts)


def admin(port, method="GET", path="/admin/webhooks", body=None):
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    headers = {"Content-Type": "application/json"} if body is not None else None
    status, _, data = hh.request(port, method, path, body, headers)
    return status, json.loads(data) if data else None


def endpoint(port, name):
    status, body = admin(port, "GET", "/admin/webhooks/" + name)
    if status != 200:
        raise AssertionError("GET /admin/webhooks/%s: %d %r" % (name, status, body))
    return body["endpoints"][0]


def wait_endpoint(port, name, pred, what, timeout=10.0):
    last = {}

    def ok():
        last.update(endpoint(port, name))
        return pred(last)
    try:
        hh.wait_for(ok, timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError("%s: endpoint is %r" % (what, last))
    return dict(last)


def run_delay_ms(pid, comm=None):
    """The time pid's threads (those named comm, say "herald-hooks") have spent runnable but
    waiting for a core (/proc schedstat), in ms: a bound on how long a loaded machine kept a
    thread from running (the hooks thread runs under SCHED_IDLE without Redis or an
    authorize_hook), for timing checks that must hold there."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            if comm is not None:
                with open(base + "comm") as f:
                    if f.read().strip() != comm:
                        continue
            with open(base + "schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e6


def now_ms():
    return int(time.time() * 1000)
