# SPDX-License-Identifier: MIT
"""Log rotation as logrotate does it, through the real binary: with `log_file` and `access_log`
set, the test renames both files while clients keep sending requests, then sends SIGUSR1;
herald must write to new files from then on, and across the old and new files no line may be
lost, repeated or torn.

The load is bounded: keep-alive GETs, a publisher, polls, one-request connections (404) and
unparsable requests (each answered 400 and logged at info in the error log), from threads that
count what was answered. Three rotations happen while they run. Afterwards the access lines of
all files together must be exactly the requests answered (by kind: method, path, status), every
line well-formed and ending in LF, and the error log must hold one "bad request" line per
unparsable request, each file starting where the previous one ended.

A sink that cannot keep up (a FIFO nobody reads) or whose writes fail (/dev/full) loses lines,
but never silently: the error log counts them, and lines written plus lines counted is every
request.
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
from herald_harness import wait_for  # noqa: E402

ACCESS_RE = re.compile(r'^127\.0\.0\.\d+:\d+ c#\d+ "(\S+) (\S*) HTTP/(\d)\.(\d)" (\d{3}) (\d+) '
                       r'(\d+)ms$')
ERROR_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) "
                      r"(main|w\d+|broker|redis) \S.*$")
DROPPED_RE = re.compile(r" warn w0 (\d+) access log lines dropped "
                        r"\(log sink too slow or failing\)$")
LISTEN_FILE_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
ROTATIONS = 3
GROWTH = 500  # access lines the current file must get before it is rotated
MAX_PER_THREAD = 4000  # bound of each load thread's requests
LOAD_DEADLINE = 40.0  # seconds: the load stops by then whatever happens


def read_lines(path):
    """The file's lines; fails if its last line has no LF (torn or unfinished)."""
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        raise AssertionError("%s ends with an unfinished line: %r" % (path, data[-200:]))
    return data.decode("utf-8").splitlines()


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


class Load:
    """Client threads sending requests until told to stop (or their bound); each counts what was
    answered, by (method, path, status)."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered = {}
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(fn,), daemon=True)
                        for fn in (self._healthz, self._publish, self._poll, self._one_shot,
                                   self._garbage)]

    def _count(self, key):
        with self.lock:
            self.answered[key] = self.answered.get(key, 0) + 1

    def _run(self, fn):
        try:
            fn()
        except Exception as e:  # reported by the test
            self.errors.append("%s: %r" % (fn.__name__, e))

    def _loop(self):
        deadline = time.monotonic() + LOAD_DEADLINE
        for _ in range(MAX_PER_THREAD):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            yield

    def _healthz(self):
        with hh.Client(self.port) as c:
            for _ in self._loop():
                r = c.request("GET", "/healthz")
                assert r.status == 200, r
                self._count(("GET", "/healthz", 200))

    def _publish(self):
        pub = hh.Publisher(self.port)
        try:
            for i in self._loop():
                pub("rot", "message")
                self._count(("POST", "/pub/rot", 200))
                time.sleep(0.002)
        finally:
            pub.close()

    def _poll(self):
        with hh.Client(self.port) as c:
            for _ in self._loop():
                r = c.request("GET", "/poll/rot")
                assert r.status == 200, r
                self._count(("GET", "/poll/rot", 200))
                time.sleep(0.002)

    def _one_shot(self):
        for _ in self._loop():
            r = hh.http_get(self.port, "/nothing-here", spread=True)
            assert r.status == 404, r
            self._count(("GET", "/nothing-here", 404))

    def _garbage(self):
        for _ in self._loop():
            with hh.Client(self.port, spread=True) as c:
                c.send(b"GARBAGE\r\n\r\n")
                r = c.read_response()
                assert r.status == 400, r
            self._count(("-", "", 400))
            time.sleep(0.005)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(LOAD_DEADLINE + 10)
        assert not any(t.is_alive() for t in self.threads), "a load thread did not stop"
        if self.errors:
            raise AssertionError("load clients failed: %s" % "; ".join(self.errors))
        return dict(self.answered)


class TestLogRotation(hh.HeraldTestCase):
    def start_logging(self, d, **conf):
        """A herald writing its error log and access log to files in d; its port is read from
        the error log (nothing goes to stderr)."""
        self.errlog = os.path.join(d, "herald.log")
        self.acclog = os.path.join(d, "access.log")
        c = {"log_file": self.errlog, "access_log": self.acclog}
        c.update(conf)
        h = hh.Herald(conf=c, workers=2)
        self.addCleanup(h.cleanup)
        h.start(wait_ready=False)
        wait_for(lambda: any(l.endswith(" ready") for l in self.lines_of(self.errlog)),
                 timeout=hh.START_TIMEOUT, what="'ready' in %s" % self.errlog)
        ports = [int(m.group(1)) for m in map(LISTEN_FILE_RE.search, self.lines_of(self.errlog))
                 if m]
        self.assertEqual(len(ports), 1, self.lines_of(self.errlog))
        h.ports = [(ports[0], False)]
        self.assertEqual(h.lines(), [], "herald wrote to stderr with log_file set")
        return h

    @staticmethod
    def lines_of(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    def rotate(self, h, k):
        """Moves both logs to NAME.k (as logrotate does) and sends SIGUSR1; returns once herald
        says in the new error log that it reopened."""
        os.rename(self.acclog, "%s.%d" % (self.acclog, k))
        os.rename(self.errlog, "%s.%d" % (self.errlog, k))
        h.signal(signal.SIGUSR1)
        wait_for(lambda: any("log files reopened" in l for l in self.lines_of(self.errlog)),
                 what="'log files reopened' in the new %s" % self.errlog)

    def test_rotation_under_load_loses_no_line(self):
        d = self.tmpdir()
        h = self.start_logging(d)
        load = Load(h.port)
        load.start()
        try:
            for k in range(1, ROTATIONS + 1):
                # The current file takes lines before it is moved: each file gets some.
                wait_for(lambda: count_lines(self.acclog) >= GROWTH or load.errors,
                         timeout=20, what="%d lines in %s" % (GROWTH, self.acclog))
                self.assertEqual(load.errors, [])
                self.rotate(h, k)
            wait_for(lambda: count_lines(self.acclog) >= GROWTH or load.errors, timeout=20,
                     what="%d lines in the last %s" % (GROWTH, self.acclog))
        finally:
            answered = load.finish()
        total = sum(answered.values())
        acc_files = ["%s.%d" % (self.acclog, k) for k in range(1, ROTATIONS + 1)] + [self.acclog]
        err_files = ["%s.%d" % (self.errlog, k) for k in range(1, ROTATIONS + 1)] + [self.errlog]
        # Worker threads write their buffers from libuv's pool: give the last lines a moment.
        wait_for(lambda: sum(count_lines(p) for p in acc_files) >= total, timeout=10,
                 what="%d access lines in all files (%r)" %
                 (total, [count_lines(p) for p in acc_files]))
        time.sleep(0.3)  # a line beyond the requests answered would show up now

        logged = {}
        for p in acc_files:
            lines = read_lines(p)
            self.assertGreater(len(lines), 0, "%s is empty" % p)
            for line in lines:
                m = ACCESS_RE.match(line)
                self.assertIsNotNone(m, "malformed access line in %s: %r" % (p, line))
                method, path, major, minor, status = m.group(1, 2, 3, 4, 5)
                if status != "400":
                    self.assertEqual((major, minor), ("1", "1"), line)
                key = (method, path, int(status))
                logged[key] = logged.get(key, 0) + 1
        self.assertEqual(logged, answered, "access lines (all files) vs requests answered")

        bad = 0
        for i, p in enumerate(err_files):
            lines = read_lines(p)
            for line in lines:
                self.assertRegex(line, ERROR_RE, "malformed error log line in %s" % p)
            bad += sum(1 for l in lines if "http: bad request (400)" in l)
            reopened = sum(1 for l in lines if l.endswith(" log files reopened"))
            # Each rotation's message is the first thing of the file it opened.
            self.assertEqual(reopened, 0 if i == 0 else 1, "%s: %d reopen lines" % (p, reopened))
        self.assertTrue(any(l.endswith(" ready") for l in read_lines(err_files[0])))
        self.assertEqual(bad, answered[("-", "", 400)], "bad-request lines in the error log")
        self.assertHealthy(h.port)

    def test_deleted_log_is_recreated(self):
        """logrotate's copytruncate-free "create" mode also covers a log removed outright: after
        SIGUSR1 herald creates the file again and writes there."""
        d = self.tmpdir()
        h = self.start_logging(d)
        self.assertEqual(hh.http_get(h.port, "/healthz").status, 200)
        wait_for(lambda: count_lines(self.acclog) == 1, what="the first access line")
        os.unlink(self.acclog)
        os.unlink(self.errlog)
        h.signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(self.errlog) and os.path.exists(self.acclog),
                 what="both logs created again")
        for _ in range(5):
            self.assertEqual(hh.http_get(h.port, "/healthz").status, 200)
        wait_for(lambda: count_lines(self.acclog) == 5, what="5 access lines in the new file")
        for line in read_lines(self.acclog):
            self.assertRegex(line, ACCESS_RE)
        self.assertTrue(any(l.endswith(" log files reopened") for l in read_lines(self.errlog)))

    def test_unwritable_new_log_keeps_serving(self):
        """When the new file cannot be made (its path is now a directory), herald says so and
        keeps writing to the file it had; requests are still served and logged."""
        d = self.tmpdir()
        h = self.start_logging(d)
        os.rename(self.acclog, self.acclog + ".1")
        os.mkdir(self.acclog)
        h.signal(signal.SIGUSR1)
        wait_for(lambda: any("reopening logs: cannot open log file %s" % self.acclog in l
                             for l in self.lines_of(self.errlog)),
                 what="the reopen error in the error log")
        self.assertEqual(hh.http_get(h.port, "/healthz").status, 200)
        wait_for(lambda: count_lines(self.acclog + ".1") == 1,
                 what="the access line in the file herald kept")
        os.rmdir(self.acclog)
        h.signal(signal.SIGUSR1)
        wait_for(lambda: any(l.endswith(" log files reopened")
                             for l in self.lines_of(self.errlog)), what="a reopen that works")
        self.assertEqual(hh.http_get(h.port, "/healthz").status, 200)
        wait_for(lambda: count_lines(self.acclog) == 1, what="the line in the new access log")


class TestSlowSink(hh.HeraldTestCase):
    def test_access_lines_dropped_are_counted(self):
        """The access log is a FIFO nobody reads for a while (a stuck log shipper): herald keeps
        serving, drops the lines its buffer cannot hold, and says in the error log how many;
        what reached the FIFO plus what it reported dropped is every request, and every line
        that reached it is whole."""
        d = self.tmpdir()
        fifo = os.path.join(d, "access.fifo")
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # herald's open for writing succeeds
        self.addCleanup(os.close, rfd)
        h = self.start_herald(conf={"access_log": fifo}, workers=1)
        requests = 0
        with hh.Client(h.port) as c:
            for _ in range(8000):  # ~500 KB of lines: over the pipe and herald's buffers
                self.assertEqual(c.request().status, 200)
                requests += 1
        data = bytearray()
        stop = threading.Event()

        def drain():
            os.set_blocking(rfd, False)
            while not stop.is_set():
                try:
                    chunk = os.read(rfd, 65536)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                if not chunk:
                    time.sleep(0.01)
                    continue
                data.extend(chunk)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        dropped_re = DROPPED_RE

        def dropped():
            return sum(int(m.group(1)) for m in map(dropped_re.search, h.lines()) if m)
        # The count is written with the next access line once there is room: more requests
        # (counted too) until the FIFO's lines and the count add up.
        deadline = time.monotonic() + 20
        while data.count(b"\n") + dropped() < requests:
            self.assertLess(time.monotonic(), deadline, "lines %d + dropped %d < requests %d" %
                            (data.count(b"\n"), dropped(), requests))
            self.assertEqual(hh.http_get(h.port, "/healthz").status, 200)
            requests += 1
            time.sleep(0.05)
        time.sleep(0.3)
        self.assertGreater(dropped(), 0, "nothing was dropped: the test did not fill the sink")
        self.assertEqual(data.count(b"\n") + dropped(), requests)
        h.stop()  # with the reader still draining: herald writes what it still holds
        stop.set()
        t.join(5)
        self.assertEqual(data.count(b"\n") + dropped(), requests, "lines after the count")
        self.assertTrue(data.endswith(b"\n"))
        for line in data.decode().splitlines():
            self.assertRegex(line, ACCESS_RE)
        for line in h.lines():
            self.assertRegex(line, ERROR_RE)

    def test_failed_writes_are_counted(self):
        """An access log whose writes fail (/dev/full: ENOSPC, a full disk): requests are served
        and the error log counts every line lost."""
        h = self.start_herald(conf={"access_log": "/dev/full"}, workers=1)
        dropped_re = DROPPED_RE
        requests = 0
        with hh.Client(h.port) as c:
            for _ in range(50):
                self.assertEqual(c.request().status, 200)
                requests += 1
                time.sleep(0.02)  # each line's write fails before the next line comes
        reported = sum(int(m.group(1)) for m in map(dropped_re.search, h.lines()) if m)
        # A loss is reported with the line after it: the last one or two are still to come.
        self.assertTrue(requests - 3 <= reported <= requests, (reported, requests))


if __name__ == "__main__":
    hh.main()
