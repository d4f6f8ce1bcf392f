# SPDX-License-Identifier: MIT
"""Process-level integration tests: command line, configuration checks, start failures, pidfile,
graceful shutdown, SIGHUP reload, service-manager readiness, connection admission limits.
"""
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import Client, build_request  # noqa: E402

OK_BODY = b'{"status":"ok"}'
EXIT_START = 1
EXIT_USAGE = 2
EXIT_CONF = 78


def project_version():
    with open(os.path.join(hh.HERALD_SRC, "CMakeLists.txt")) as f:
        m = re.search(r"project\(herald VERSION (\d+\.\d+\.\d+)", f.read())
    return m.group(1) if m else None


class ProcessTestCase(hh.HeraldTestCase):
    def assertOk(self, r):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, OK_BODY)

    def start_body(self, c, length, first):
        """Sends a POST head and the first bytes of its body; returns once the server is reading
        the body (its 100 Continue says so), so the request is in flight, not merely sent."""
        c.send(build_request("POST", "/healthz", {"Content-Length": str(length),
                                                  "Expect": "100-continue"}))
        r = c.read_response()
        self.assertEqual(r.status, 100, r)
        c.send(first)


class TestCommandLine(ProcessTestCase):
    def test_version(self):
        rc, out, err = hh.run_herald(["--version"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "herald %s\n" % project_version())
        rc2, out2, _ = hh.run_herald(["-v"])
        self.assertEqual((rc2, out2), (rc, out))

    def test_help(self):
        rc, out, err = hh.run_herald(["--help"])
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("usage: herald"), out)
        for opt in ("-c", "-o", "-t", "--version", "--help"):
            self.assertIn(opt, out)
        self.assertEqual(hh.run_herald(["-h"])[1], out)

    def test_bad_usage(self):
        for args in (["--no-such-option"], ["-c"], ["stray-argument"]):
            with self.subTest(args=args):
                rc, out, err = hh.run_herald(args)
                self.assertEqual(rc, EXIT_USAGE, err)
                self.assertIn("usage: herald", err)
                self.assertEqual(out, "")


class TestConfCheck(ProcessTestCase):
    def write(self, text, name="test.conf"):
        path = os.path.join(self.tmpdir(), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_good_conf(self):
        path = self.write("""# every kind of value
listen 127.0.0.1:0
workers 2
pidfile off
shutdown_timeout 1s
log_level debug
max_connections 50
accept_rate 10
accept_burst 20
max_url_size 4k
max_header_size 8k
max_body_size 64k
header_timeout 500ms
body_timeout 2s
keepalive_timeout 1m
keepalive_requests 100   # trailing comment
tls_min_version 1.3
""")
        rc, out, err = hh.run_herald(["-t", "-c", path])
        self.assertEqual(rc, 0, err)
        self.assertIn("configuration %s is valid" % path, out)
        rc, out, err = hh.run_herald(["-t", "-c", "/dev/null", "-o", "workers 3"])
        self.assertEqual(rc, 0, err)

    def test_shipped_conf_is_valid(self):
        path = os.path.join(hh.HERALD_SRC, "conf", "herald.conf")
        rc, out, err = hh.run_herald(["-t", "-c", path])
        self.assertEqual(rc, 0, err)

    def check_bad(self, text, line, directive, pattern):
        path = self.write(text)
        rc, out, err = hh.run_herald(["-t", "-c", path])
        self.assertEqual(rc, EXIT_CONF, err)
        prefix = "%s:%d: " % (path, line) + (directive + ": " if directive else "")
        self.assertIn(prefix, err)
        self.assertRegex(err, re.escape(prefix) + pattern)
        self.assertEqual(err.count("\n"), 1, "one line per error: %r" % err)
        # Without -t the same configuration stops the start, with the same message.
        rc2, _, err2 = hh.run_herald(["-c", path, "-o", "listen 127.0.0.1:0"])
        self.assertEqual(rc2, EXIT_CONF)
        self.assertIn(prefix, err2)

    def test_unknown_directive(self):
        self.check_bad("workers 2\n\nwrokers 3\n", 3, None, r'unknown directive "wrokers"')

    def test_bad_value(self):
        self.check_bad("# c\nworkers x\n", 2, "workers", r'expected .*got "x"')
        self.check_bad("log_level loud\n", 1, "log_level", r'expected one of debug, info, warn, '
                       r'error, got "loud"')
        self.check_bad("header_timeout 5 s\n", 1, "header_timeout", r"expected 1 value, got 2")
        self.check_bad("listen 127.0.0.1\n", 1, "listen", r"expected")

    def test_out_of_range(self):
        self.check_bad("\n\n\nmax_url_size 10\n", 4, "max_url_size",
                       r'expected .* in 256\.\.1m, got "10"')
        self.check_bad("workers 5000\n", 1, "workers",
                       r"expected .*in 1\.\.1024, got \"5000\"")
        self.check_bad("header_timeout 5ms\n", 1, "header_timeout",
                       r"expected .*in 10ms\.\.1h, got \"5ms\"")

    def test_duplicate_directive(self):
        self.check_bad("workers 2\nworkers 3\n", 2, "workers", r"duplicate directive.*line 1")

    def test_bad_override(self):
        rc, out, err = hh.run_herald(["-t", "-c", "/dev/null", "-o", "workers x"])
        self.assertEqual(rc, EXIT_CONF)
        self.assertIn("-o 'workers x': workers: expected", err)

    def test_missing_conf_file(self):
        path = os.path.join(self.tmpdir(), "absent.conf")
        for args in (["-t", "-c", path], ["-c", path, "-o", "listen 127.0.0.1:0"]):
            with self.subTest(args=args):
                rc, out, err = hh.run_herald(args)
                self.assertEqual(rc, EXIT_CONF)
                self.assertIn(path, err)
                self.assertIn("No such file or directory", err)

    def test_conf_is_a_directory(self):
        d = self.tmpdir()
        rc, out, err = hh.run_herald(["-t", "-c", d])
        self.assertEqual(rc, EXIT_CONF)
        self.assertIn(d, err)

    def test_unreadable_conf_file(self):
        path = self.write("workers 2\n")
        os.chmod(path, 0)
        # Root reads any file: as root (CI, containers) herald runs as nobody, in a directory it
        # may enter, so that only the file's mode refuses the read.
        user = None
        if os.geteuid() == 0:
            user = 65534
            os.chmod(os.path.dirname(path), 0o755)
        try:
            rc, out, err = hh.run_herald(["-t", "-c", path], user=user)
        except PermissionError as e:
            # Only as root, with a build tree nobody may enter (e.g. under /root): nothing here
            # can show a permission refusal then.
            self.skipTest("nobody cannot run %s: %s" % (hh.HERALD_BIN, e))
        self.assertEqual(rc, EXIT_CONF)
        self.assertIn(path, err)
        self.assertIn("Permission denied", err)


class TestStartFailures(ProcessTestCase):
    def expect_start_failure(self, h, pattern):
        self.addCleanup(h.cleanup)
        h.start(wait_ready=False)
        rc = h.wait_exit(30)  # at once, but an ASan herald on a loaded machine takes a while
        self.assertIsNotNone(rc, "herald kept running:\n" + h.log_text())
        self.assertEqual(rc, EXIT_START, h.log_text())
        self.assertRegex(h.log_text(), pattern)
        self.assertIsNone(h.find_log(r"\bready$"))
        h.check_clean()

    def test_port_in_use_by_another_socket(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        h = hh.Herald(listens=("127.0.0.1:%d" % port,), expect_exit=EXIT_START)
        self.expect_start_failure(
            h, r"(?i)listen 127\.0\.0\.1:%d.*address already in use" % port)

    def test_port_in_use_by_another_herald(self):
        # SO_REUSEPORT must not let a second node silently share the first one's port.
        first = self.start_herald()
        h = hh.Herald(listens=("127.0.0.1:%d" % first.port,), expect_exit=EXIT_START)
        self.expect_start_failure(h, r"(?i)address already in use")
        self.assertTrue(hh.healthz_ok(first.port))

    def test_pidfile_not_writable(self):
        path = os.path.join(self.tmpdir(), "no-such-dir", "herald.pid")
        h = hh.Herald(conf={"pidfile": path}, expect_exit=EXIT_START)
        self.expect_start_failure(h, re.escape(path))


class TestLifecycle(ProcessTestCase):
    def test_pidfile_written_and_removed(self):
        path = os.path.join(self.tmpdir(), "herald.pid")
        h = self.start_herald(conf={"pidfile": path})
        with open(path) as f:
            self.assertEqual(f.read().strip(), str(h.pid))
        h.stop()
        self.assertFalse(os.path.exists(path), "pidfile left behind")

    def test_sigint_is_graceful(self):
        h = self.start_herald()
        self.assertTrue(hh.healthz_ok(h.port))
        h.signal(signal.SIGINT)
        self.assertEqual(h.wait_exit(30), 0)
        h.check_clean()
        self.assertTrue(h.find_log(r"SIGINT received"))
        self.assertTrue(h.find_log(r"\bstopped$"))

    # The shutdown tests tell "finished at once" from "held until a timeout" by herald's log
    # (shutdown_timeout reached, or not) and by times far apart: the timeout that would end the
    # wrong behaviour is 60 s and the bound 30 s, so a loaded machine's pauses (an ASan herald's
    # exit alone can take a second or two there) cannot decide the result.
    def test_inflight_request_completes_at_shutdown(self):
        h = self.start_herald(conf={"shutdown_timeout": "60s"})
        c = Client(h.port)
        self.addCleanup(c.close)
        self.assertOk(c.request())
        self.start_body(c, 100, b"a" * 50)
        mark = h.mark()
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        h.wait_log(r"shutting down", start=mark)
        time.sleep(0.2)
        self.assertTrue(h.running())
        c.send(b"b" * 50)
        r = c.read_response()
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("Connection"), "close")
        c.wait_closed(timeout=30)
        c.close()
        rc = h.wait_exit(30)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, h.log_text())
        h.check_clean()
        self.assertIsNone(h.find_log(r"shutdown_timeout reached"),
                          "exit waited for shutdown_timeout although nothing was left")
        self.assertLess(took, 30, "exit waited for shutdown_timeout although nothing was left")

    def test_idle_keepalive_closed_at_shutdown(self):
        h = self.start_herald(conf={"shutdown_timeout": "60s", "keepalive_timeout": "120s"})
        clients = [Client(h.port, spread=True) for _ in range(5)]
        for c in clients:
            self.addCleanup(c.close)
            self.assertOk(c.request())
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        for c in clients:
            c.wait_closed(timeout=30)
        self.assertEqual(h.wait_exit(30), 0, h.log_text())
        h.check_clean()
        self.assertIsNone(h.find_log(r"shutdown_timeout reached"),
                          "idle connections held up the shutdown")
        self.assertLess(time.monotonic() - t0, 30, "idle connections held up the shutdown")

    def test_new_connections_refused_after_shutdown_starts(self):
        h = self.start_herald(conf={"shutdown_timeout": "60s"})
        busy = Client(h.port)
        self.addCleanup(busy.close)
        self.start_body(busy, 10, b"12345")
        h.signal(signal.SIGTERM)
        h.wait_log(r"shutting down")
        # the workers close their listeners once told (a mailbox message: soon, not at once)
        deadline = time.monotonic() + 10.0
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                hh.connect(h.port, timeout=1).close()
                time.sleep(0.02)
            except ConnectionRefusedError:
                refused = True
            except TimeoutError:
                # A SYN that reached a worker's listener as it closed is dropped by the kernel
                # (seen once in CI): the client would retransmit after 1 s. Not an accept.
                pass
        self.assertTrue(refused, "still accepting connections after SIGTERM")
        for _ in range(5):
            with self.assertRaises(ConnectionRefusedError):
                hh.connect(h.port, timeout=1, spread=True).close()
        self.assertTrue(h.running(), "the in-flight request should hold the shutdown")
        busy.send(b"67890")
        r = busy.read_response()
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Connection"), "close")
        busy.close()
        self.assertEqual(h.wait_exit(30), 0)
        h.check_clean()

    def test_shutdown_timeout_enforced(self):
        h = self.start_herald(conf={"shutdown_timeout": "1s", "body_timeout": "60s",
                                    "header_timeout": "60s"})
        stuck = Client(h.port)
        self.addCleanup(stuck.close)
        self.start_body(stuck, 1000, b"x" * 10)
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        rc = h.wait_exit(30)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, h.log_text())
        h.check_clean()
        self.assertGreater(took, 0.8, "the in-flight request was not given shutdown_timeout")
        # not held until body_timeout (60 s)
        self.assertLess(took, 30, "shutdown_timeout not enforced")
        self.assertTrue(h.find_log(r"shutdown_timeout reached"))
        stuck.wait_closed(timeout=5)

    def test_shutdown_with_many_open_connections(self):
        # idle keep-alive connections and half heads are closed at once: neither waits for
        # shutdown_timeout
        h = self.start_herald(conf={"shutdown_timeout": "60s", "header_timeout": "120s",
                                    "keepalive_timeout": "120s"})
        clients = []
        for i in range(40):
            c = Client(h.port, spread=True)
            self.addCleanup(c.close)
            if i % 2:
                self.assertOk(c.request())
            else:
                c.send(b"GET /healthz HTTP/1.1\r\nHost")  # half a head
            clients.append(c)
        mark = h.mark()
        took = h.stop(timeout=60)
        self.assertIsNone(h.find_log(r"shutdown_timeout reached", start=mark), h.log_text())
        self.assertLess(took, 30)


class TestReload(ProcessTestCase):
    def partial_then_close(self, h):
        c = Client(h.port)
        c.send(b"GET /healthz HTTP/1.1\r\nHo")
        time.sleep(0.05)
        c.close()

    def test_reload_log_level(self):
        h = self.start_herald(conf={"log_level": "info"})
        debug_line = r" debug .*peer closed mid-request"
        self.partial_then_close(h)
        time.sleep(0.3)
        self.assertEqual(h.count_log(r" debug "), 0)
        h.reload(conf={"log_level": "debug"})
        mark = h.mark()
        self.partial_then_close(h)
        h.wait_log(debug_line, start=mark)
        h.reload(conf={"log_level": "info"})
        mark = h.mark()
        self.partial_then_close(h)
        time.sleep(0.3)
        self.assertEqual(h.count_log(r" debug ", start=mark), 0, h.log_text())
        self.assertTrue(hh.healthz_ok(h.port))

    def test_reload_limit(self):
        h = self.start_herald(conf={"max_url_size": "8k"})
        url = "/" + "u" * 2000
        keep = Client(h.port)
        self.addCleanup(keep.close)
        self.assertEqual(keep.request("GET", url).status, 404)
        h.reload(conf={"max_url_size": "1k"})
        with Client(h.port) as c:
            c.send(build_request("GET", url))
            r = c.read_response()
            self.assertEqual(r.status, 414, r)
            c.wait_closed()
        # An open keep-alive connection's next request sees the new limit as well.
        r = keep.request("GET", url)
        self.assertEqual(r.status, 414, r)
        self.assertTrue(hh.healthz_ok(h.port))
        h.reload(conf={"max_url_size": "8k"})
        with Client(h.port) as c:
            self.assertEqual(c.request("GET", url).status, 404)

    def test_reload_broken_conf_keeps_old(self):
        h = self.start_herald(conf={"max_url_size": "1k"})
        url = "/" + "u" * 2000
        mark = h.reload(conf_raw=hh.conf_text(dict(hh.DEFAULT_CONF, max_url_size="8k")) +
                        "max_url_size_typo 3\n", expect_ok=False)
        line = h.wait_log(r"reload failed.*", start=mark).group(0)
        self.assertIn("%s:" % h.conf_path, line)
        self.assertIn("max_url_size_typo", line)
        self.assertTrue(h.running())
        with Client(h.port) as c:
            c.send(build_request("GET", url))
            self.assertEqual(c.read_response().status, 414, "old max_url_size no longer applies")
        # A bad value is refused the same way.
        mark = h.reload(conf=dict(max_url_size="huge"), expect_ok=False)
        self.assertIn("max_url_size", h.wait_log(r"reload failed.*", start=mark).group(0))
        # A missing file too.
        os.unlink(h.conf_path)
        mark = h.reload(expect_ok=False)
        self.assertIn(h.conf_path, h.wait_log(r"reload failed.*", start=mark).group(0))
        self.assertTrue(hh.healthz_ok(h.port))
        h.reload(conf={"max_url_size": "8k"})
        with Client(h.port) as c:
            self.assertEqual(c.request("GET", url).status, 404)

    def test_reload_restart_only_directive(self):
        h = self.start_herald(conf={"workers": "2", "max_url_size": "8k"}, workers=None)
        url = "/" + "u" * 2000
        mark = h.reload(conf={"workers": "3", "max_url_size": "1k"})
        line = h.wait_log(r".*reload: workers changed.*restart.*", start=mark).group(0)
        self.assertIn(" warn ", line)
        # The rest of the file is applied all the same.
        with Client(h.port) as c:
            c.send(build_request("GET", url))
            self.assertEqual(c.read_response().status, 414)
        self.assertTrue(hh.healthz_ok(h.port))

    def test_reload_under_load(self):
        h = self.start_herald()
        stop = threading.Event()
        errors = []

        def load():
            while not stop.is_set():
                try:
                    with Client(h.port, spread=True) as c:
                        for _ in range(5):
                            r = c.request()
                            if r.status != 200:
                                errors.append(repr(r))
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(10):
                h.reload(conf={"keepalive_requests": str(100 + i)})
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertEqual(errors, [])


class TestNotify(ProcessTestCase):
    def notify_socket(self, abstract=False):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        if abstract:
            name = "herald-it-%d-%d" % (os.getpid(), time.monotonic_ns())
            s.bind("\0" + name)
            addr = "@" + name
        else:
            addr = os.path.join(self.tmpdir(), "notify.sock")
            s.bind(addr)
        s.settimeout(5)
        return s, addr

    def recv_state(self, s):
        data = s.recv(4096).decode()
        return dict(kv.split("=", 1) for kv in data.split("\n") if kv)

    def test_ready_reload_stopping(self):
        s, addr = self.notify_socket()
        h = self.start_herald(env={"NOTIFY_SOCKET": addr})
        st = self.recv_state(s)
        self.assertEqual(st.get("READY"), "1", st)
        self.assertEqual(st.get("MAINPID"), str(h.pid))
        h.reload()
        self.assertEqual(self.recv_state(s).get("RELOADING"), "1")
        self.assertEqual(self.recv_state(s).get("READY"), "1")
        h.signal(signal.SIGTERM)
        st = self.recv_state(s)
        self.assertEqual(st.get("STOPPING"), "1", st)
        self.assertEqual(h.wait_exit(30), 0)

    def test_ready_on_abstract_socket(self):
        s, addr = self.notify_socket(abstract=True)
        h = self.start_herald(env={"NOTIFY_SOCKET": addr})
        self.assertEqual(self.recv_state(s).get("READY"), "1")
        h.stop()
        self.assertEqual(self.recv_state(s).get("STOPPING"), "1")

    def test_ready_not_sent_before_listening(self):
        s, addr = self.notify_socket()
        h = hh.Herald(env={"NOTIFY_SOCKET": addr})
        self.addCleanup(h.cleanup)
        h.start(wait_ready=False)
        self.assertEqual(self.recv_state(s).get("READY"), "1")
        # READY=1 promises that the listeners accept: connect right away.
        h.wait_ready()
        self.assertTrue(hh.healthz_ok(h.port))


class TestAdmission(ProcessTestCase):
    def assertRefused(self, c):
        c.send(build_request())
        r = c.read_response()
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("Connection"), "close")
        retry = r.header("Retry-After")
        self.assertIsNotNone(retry, r)
        self.assertRegex(retry, r"^\d+$")
        self.assertTrue(1 <= int(retry) <= 60, retry)
        self.assertEqual(int(r.header("Content-Length")), len(r.body))
        c.wait_closed(timeout=3)
        return int(retry)

    def test_max_connections(self):
        h = self.start_herald(conf={"max_connections": "3"})
        first = [Client(h.port, spread=True) for _ in range(3)]
        for c in first:
            self.addCleanup(c.close)
            self.assertOk(c.request())
        for _ in range(5):
            with Client(h.port, spread=True) as extra:
                self.assertRefused(extra)
        for c in first:
            self.assertOk(c.request())
        h.wait_log(r"refused \d+ connection\(s\): max_connections")
        # A slot freed is a slot available again (once the server has seen the close).
        first.pop().close()
        deadline = time.monotonic() + 20
        while True:
            with Client(h.port, spread=True) as c:
                c.send(build_request())
                r = c.read_response()
                if r.status == 200:
                    break
                self.assertEqual(r.status, 503)
            self.assertLess(time.monotonic(), deadline, "the freed slot never came back")
            time.sleep(0.1)

    def test_accept_rate(self):
        h = self.start_herald(conf={"accept_rate": "1", "accept_burst": "5"}, workers=1)
        t0 = time.monotonic()
        clients = [Client(h.port, spread=True) for _ in range(40)]
        for c in clients:
            self.addCleanup(c.close)
        accepted, retries = 0, []
        for c in clients:
            c.send(build_request())
            r = c.read_response()
            if r.status == 200:
                accepted += 1
                self.assertEqual(r.body, OK_BODY)
            else:
                retries.append(self.assertRefused_from(c, r))
        # herald accepted every one of them between t0 and now (a loaded machine may spread its
        # accepts over seconds): the burst, plus one a second over that time at most
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(accepted, 5, "the burst should be admitted")
        self.assertLessEqual(accepted, 5 + 1 * elapsed + 1, "more accepted than rate allows")
        self.assertEqual(accepted + len(retries), 40)
        self.assertGreaterEqual(len(retries), 10, "a 40-connection burst took %.1f s" % elapsed)
        self.assertGreater(len(set(retries)), 1, "Retry-After has no jitter: %r" % retries)
        h.wait_log(r"refused \d+ connection\(s\): accept_rate")
        # The bucket refills: after a second new connections are served again.
        time.sleep(1.1)
        self.assertTrue(hh.healthz_ok(h.port))

    def assertRefused_from(self, c, r):
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("Connection"), "close")
        retry = r.header("Retry-After")
        self.assertRegex(retry or "", r"^\d+$")
        self.assertTrue(1 <= int(retry) <= 60, retry)
        c.wait_closed(timeout=3)
        return int(retry)


if __name__ == "__main__":
    hh.main()
