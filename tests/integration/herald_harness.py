# SPDX-License-Identifier: MIT
"""herald_harness: runs the real herald binary for integration tests and talks to it over sockets.

Every server gets its own temporary configuration file (rewritable, for SIGHUP tests), listens on
an ephemeral port of 127.0.0.1 (`-o 'listen 127.0.0.1:0'`) and runs few workers. Its stderr is
read by a background thread; the bound ports come from its "listening on 127.0.0.1:PORT" lines
and start() returns once it logged "ready". stop() sends SIGTERM to its PID and requires exit
status 0 within a timeout and no sanitizer report in the log; a process still alive at the end of
a test or of the interpreter is killed, and that is a test failure.

A herald that exits before the test tells it to (a crash, an exit(1), a clean exit nobody asked
for) fails the test with the tail of its log, whether or not the build has sanitizers: the
harness checks the exit status at stop() and at the test's cleanup, and a server shared by a
class (start_class_herald) is checked after every test. A test that makes herald exit says so:
Herald(expect_exit=STATUS) for a start that must fail, signal(SIGTERM / SIGINT / SIGKILL) for a
stop it asks for (status 0, 0, -9), or signal(sig, expect_exit=STATUS) for any other.
run_herald (-t, --version, starts that must fail) runs to completion; death by a signal fails it.

It also holds the clients every test file shares: publish / request / get_json over HTTP,
wait_for, an SSE stream reader (SseStream, SseBlock), a raw WebSocket client (RawWS) and the
python3-websockets connect (ws_connect), a page server and a headless chromium for browser tests
(PageServer, Browser), and require_* checks that turn a missing test tool or a
WebSocket path that does not upgrade into a failure, never a skip. main() fails a file whose tests
all skipped.

The standard library is used, plus python3-websockets (imported by ws_connect only); curl,
openssl, redis-server, chromium and node are the external clients.
"""
import asyncio
import atexit
import http.client
import http.server
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERALD_BIN = os.environ.get("HERALD_BIN", "")
HERALD_SRC = os.environ.get(
    "HERALD_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0

# Conf lines every test server gets unless the test says otherwise: short timeouts keep the suite
# fast and max_connections stays below the open files limit (no startup warning).
DEFAULT_CONF = {
    "log_level": "info",
    "max_connections": "1000",
    "shutdown_timeout": "3s",
    "header_timeout": "5s",
    "body_timeout": "5s",
    "keepalive_timeout": "5s",
}

# herald's exit statuses (enum in src/main.c)
EXIT_OK, EXIT_START, EXIT_USAGE, EXIT_CONF = 0, 1, 2, 78

LOG_TAIL_LINES = 60  # lines of herald's log quoted when it exited unexpectedly

# Signals after which the harness expects herald to exit, with the status it must exit with.
STOP_SIGNALS = {signal.SIGTERM: 0, signal.SIGINT: 0, signal.SIGKILL: -signal.SIGKILL}

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "herald: assertion failed",
)

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)( tls)?")
READY_RE = re.compile(r"\bready$")
APPLIED_RE = re.compile(r" debug w\d+ configuration applied$")

_live = set()  # Herald instances whose process may still run


def _kill_leftovers():
    left = [h for h in list(_live) if h.kill()]
    if left:
        # A server nobody stopped (no cleanup registered): killed, and the run fails.
        sys.stderr.write("FAILED: herald still running at exit (pid %s), killed\n" %
                         ", ".join(str(h.pid) for h in left))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


atexit.register(_kill_leftovers)


def herald_bin():
    if not HERALD_BIN or not os.access(HERALD_BIN, os.X_OK):
        raise HeraldError("HERALD_BIN is not set to an executable herald binary: %r" % HERALD_BIN)
    return HERALD_BIN


def sanitizer_report(text):
    """Returns the first line of a sanitizer (or assertion) report in text, or None."""
    for line in text.splitlines():
        if any(p in line for p in SANITIZER_PATTERNS):
            return line
    return None


def conf_text(conf):
    """Turns {directive: value} (value None: left out) into conf file text."""
    lines = ["# written by herald_harness"]
    for k, v in conf.items():
        if v is not None:
            lines.append("%s %s" % (k, v))
    return "\n".join(lines) + "\n"


class HeraldError(AssertionError):
    pass


def describe_status(rc):
    """'status 1' or 'signal SIGSEGV' for a Popen returncode."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return "signal %s" % signal.Signals(-rc).name
        except ValueError:
            return "signal %d" % -rc
    return "status %d" % rc


class Herald:
    """One herald process.

    conf: {directive: value} merged over DEFAULT_CONF (None removes a default), written to a
          temporary file passed with -c; conf_raw: exact file text instead.
    listens: the -o listen values (each "127.0.0.1:0" or "127.0.0.1:0 tls").
    workers: -o workers N, or None to leave workers to the file.
    overrides: more -o values. env: extra environment variables.
    expect_exit: None (the default): herald runs until the test stops it (stop(), or signal()
          with SIGTERM, SIGINT or SIGKILL); exiting before that fails the test. An int: the
          test makes herald exit by itself (a start that must fail), with that status (negative:
          killed by that signal); True: with any status but death by a signal.
    """

    def __init__(self, conf=None, conf_raw=None, listens=("127.0.0.1:0",), workers=2,
                 overrides=(), env=None, tmpdir=None, expect_exit=None):
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="herald-it-")
        self._own_tmpdir = tmpdir is None
        self.conf_path = os.path.join(self.tmpdir, "herald.conf")
        self.listens = list(listens)
        self.workers = workers
        self.overrides = list(overrides)
        self.env = dict(env or {})
        self.proc = None
        self.returncode = None
        self.expect_exit = expect_exit
        self._told = None  # the status a stop signal sent by the test asks for (STOP_SIGNALS)
        self._reported = False  # an unexpected exit failed a test already: say it once
        self._level = None  # the log_level in force (set at start and by each reload)
        self.ports = []  # [(port, is_tls)] in listen order
        self._lines = []
        self._cond = threading.Condition()
        self._reader = None
        self._eof = False
        self.write_conf(conf, conf_raw)

    # ---- configuration ----

    def write_conf(self, conf=None, conf_raw=None):
        """Rewrites the conf file (atomically: a reload never reads half a file)."""
        if conf_raw is None:
            merged = dict(DEFAULT_CONF)
            merged.update(conf or {})
            conf_raw = conf_text(merged)
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(conf_raw)
        os.replace(tmp, self.conf_path)

    def argv(self):
        args = [herald_bin(), "-c", self.conf_path]
        for listen in self.listens:
            args += ["-o", "listen " + listen]
        if self.workers is not None:
            args += ["-o", "workers %d" % self.workers]
        for o in self.overrides:
            args += ["-o", o]
        return args

    # ---- process ----

    def start(self, wait_ready=True):
        self._level = self.log_level()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _live.add(self)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_ready()
        return self

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                m = LISTEN_RE.search(line)
                if m:
                    self.ports.append((int(m.group(1)), bool(m.group(2))))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_ready(self, timeout=START_TIMEOUT):
        try:
            self.wait_log(READY_RE, timeout)
        except HeraldError:
            self.kill()
            raise HeraldError("herald did not become ready within %.0f s (exit %s):\n%s" %
                              (timeout, self.proc.poll(), self.log_text()))
        if len(self.ports) != len(self.listens):
            raise HeraldError("expected %d 'listening on' lines, got %r\n%s" %
                              (len(self.listens), self.ports, self.log_text()))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def port(self):
        """The first plain listener's port."""
        for p, tls in self.ports:
            if not tls:
                return p
        raise HeraldError("no plain listener")

    @property
    def tls_port(self):
        for p, tls in self.ports:
            if tls:
                return p
        raise HeraldError("no tls listener")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self):
        """The server's resident set size now (VmRSS), in bytes."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise HeraldError("no VmRSS for pid %d" % self.pid)

    def signal(self, sig, expect_exit=None):
        """Sends sig. SIGTERM and SIGINT tell herald to stop (it must then exit 0), SIGKILL kills
        it (-9); expect_exit=STATUS declares that another signal makes it exit with STATUS."""
        if expect_exit is not None:
            self._told = expect_exit
        elif sig in STOP_SIGNALS and self._told is None:
            self._told = STOP_SIGNALS[sig]
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its status, or None on timeout. An exit the
        test did not ask for (signal) or declare (expect_exit) fails (check_exit)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finish_reader()
        self.returncode = rc
        _live.discard(self)
        self.check_exit()
        return rc

    def conf_value(self, directive):
        """The value of a one-word-name directive as herald reads it now (the -o overrides
        over the conf file, the last line winning), or None when neither sets it."""
        value = None
        try:
            with open(self.conf_path) as f:
                conf_lines = f.read().splitlines()
        except OSError:
            conf_lines = []
        for line in conf_lines + list(self.overrides):
            words = line.split(None, 1)
            if len(words) == 2 and words[0] == directive:
                value = words[1].strip()
        return value

    def log_file(self):
        """The log_file herald writes its log to instead of stderr (the -o overrides, then the
        conf file), or None."""
        path = self.conf_value("log_file")
        return None if path in (None, "stderr") else path

    def log_level(self):
        """The log_level of the conf file and overrides as they are now (herald's default:
        info)."""
        return self.conf_value("log_level") or "info"

    def log_tail(self, n=LOG_TAIL_LINES):
        """The last n lines of its stderr, and of its log_file when it has one."""
        out = []
        for what, lines in (("stderr", self.lines()), ("log_file", None)):
            if lines is None:
                path = self.log_file()
                if not path:
                    continue
                what = "log_file %s" % path
                try:
                    with open(path, errors="replace") as f:
                        lines = f.read().splitlines()
                except OSError as e:
                    lines = ["(%s)" % e]
            cut = " [... %d earlier lines]" % (len(lines) - n) if len(lines) > n else ""
            out.append("--- %s%s\n%s" % (what, cut, "\n".join(lines[-n:])))
        return "\n".join(out)

    def check_exit(self):
        """Fails if the process exited in a way nobody asked for: before the test told it to
        stop, or with another status than the one asked for or declared. A running process, or
        one never started, passes."""
        rc = self.proc.poll() if self.proc is not None else None
        if rc is None or self._reported:
            return
        want = self._told if self._told is not None else self.expect_exit
        if want is None:
            why = "exited with %s before the test stopped it" % describe_status(rc)
        elif want is True:
            if rc >= 0:
                return
            why = "died of %s (expected an exit status)" % describe_status(rc)
        elif rc == want:
            return
        else:
            why = "exited with %s, expected %s" % (describe_status(rc), describe_status(want))
        self._finish_reader()
        self._reported = True
        if sanitizer_report(self.log_text()):
            raise HeraldError("herald (pid %d) %s, with a sanitizer report:\n%s" %
                              (self.proc.pid, why, self.log_text()))
        raise HeraldError("herald (pid %d) %s; the last lines of its log:\n%s" %
                          (self.proc.pid, why, self.log_tail()))

    def _finish_reader(self):
        if self._reader:
            self._reader.join(5)
        if self.proc is not None and self.proc.stderr and not self._reader.is_alive():
            self.proc.stderr.close()

    def kill(self):
        """Last resort: SIGKILL and reap. Returns True if the process was still running."""
        was = self.running()
        if was:
            self._told = -signal.SIGKILL
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._finish_reader()
        _live.discard(self)
        return was

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then requires exit 0 within timeout and a clean log. Returns seconds taken."""
        t0 = time.monotonic()
        if self.running():
            self.signal(signal.SIGTERM)
        else:
            self.check_exit()  # it exited already: was it told to?
        rc = self.wait_exit(timeout)
        took = time.monotonic() - t0
        if rc is None:
            self.kill()
            raise HeraldError("herald (pid %d) did not exit within %.1f s of SIGTERM; killed:\n%s"
                              % (self.pid, timeout, self.log_text()))
        self.check_clean()
        if rc != 0:
            raise HeraldError("herald exited with %s:\n%s" % (describe_status(rc),
                                                               self.log_text()))
        return took

    def check_clean(self):
        bad = sanitizer_report(self.log_text())
        if bad and not self._reported:
            raise HeraldError("sanitizer report in herald's stderr: %s\n%s" %
                              (bad, self.log_text()))

    def cleanup(self):
        """For addCleanup: stop if still running (checking the exit), otherwise check that it
        exited as asked or declared and with a clean log; remove the temp dir."""
        try:
            if self.running():
                self.stop()
            elif self.proc is not None:
                self.proc.wait(STOP_TIMEOUT)
                self._finish_reader()
                self.returncode = self.proc.returncode
                _live.discard(self)
                self.check_clean()
                self.check_exit()
        finally:
            self.kill()
            if self._own_tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    # ---- log ----

    def lines(self):
        with self._cond:
            return list(self._lines)

    def log_text(self):
        return "\n".join(self.lines())

    def mark(self):
        """Index of the next log line: pass as `start` to look only at what follows."""
        with self._cond:
            return len(self._lines)

    def find_log(self, pattern, start=0):
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines()[start:]:
            m = rx.search(line)
            if m:
                return m
        return None

    def count_log(self, pattern, start=0):
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return sum(1 for line in self.lines()[start:] if rx.search(line))

    def wait_count(self, pattern, n, timeout=IO_TIMEOUT, start=0):
        """Waits until at least n log lines (from index start) match; returns the count. Worker
        threads write their lines asynchronously, so a count taken at once may be short."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count_log(pattern, start)
            if got >= n or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def wait_log(self, pattern, timeout=IO_TIMEOUT, start=0):
        """Waits for a log line matching pattern (from line index start); returns the match."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise HeraldError("no log line matching %r within %.1f s:\n%s" %
                                      (rx.pattern, timeout, "\n".join(self._lines)))
                self._cond.wait(left)

    # ---- reload ----

    def reload(self, conf=None, conf_raw=None, expect_ok=True, timeout=IO_TIMEOUT):
        """Rewrites the conf (when given), sends SIGHUP and waits for the outcome's log line,
        then for the workers to take the new configuration (below)."""
        if conf is not None or conf_raw is not None:
            self.write_conf(conf, conf_raw)
        start = self.mark()
        before = self._level
        self.signal(signal.SIGHUP)
        m = self.wait_log(r"\breloaded$|reload failed", timeout, start)
        ok = m.group(0) == "reloaded"
        if ok != expect_ok:
            raise HeraldError("reload %s, expected it to %s:\n%s" % (
                "succeeded" if ok else "failed", "succeed" if expect_ok else "fail",
                "\n".join(self.lines()[start:])))
        if ok:
            self._level = self.log_level()
        # Workers take the new configuration from their mailbox after "reloaded" is logged;
        # each then logs "configuration applied" at debug. A server at debug before and after
        # the reload (the main thread sets the new level while the workers apply, so a change
        # of level may hide the line) that logs to stderr is waited for, line by line, with
        # its number of workers known; any other gets a moment instead.
        if ok and before == self._level == "debug" and self.workers and not self.log_file():
            got = self.wait_count(APPLIED_RE, self.workers, timeout, start)
            if got < self.workers:
                raise HeraldError("%d of %d workers applied the reloaded configuration within "
                                  "%.0f s:\n%s" % (got, self.workers, timeout,
                                                    "\n".join(self.lines()[start:])))
        else:
            time.sleep(0.2)
        return start


def run_herald(args, timeout=10, env=None, cwd=None, user=None):
    """Runs herald to completion (-t, --version, a start that must fail): the exit is what the
    test expects, and it asserts the status.

    Returns (status, stdout, stderr). A run that does not exit in time is killed and fails, and
    so does one killed by a signal (a crash) or with a sanitizer report. user: a uid to run as
    (the harness must be root).
    """
    full_env = dict(os.environ)
    full_env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    full_env.update(env or {})
    ids = {} if user is None else {"user": user, "group": user, "extra_groups": []}
    p = subprocess.Popen([herald_bin()] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                         **ids)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise HeraldError("herald %r did not exit within %d s:\n%s" %
                          (args, timeout, err.decode(errors="replace")))
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    bad = sanitizer_report(err)
    if bad:
        raise HeraldError("sanitizer report running herald %r: %s\n%s" % (args, bad, err))
    if p.returncode < 0:
        raise HeraldError("herald %r died of %s:\n%s" % (args, describe_status(p.returncode), err))
    return p.returncode, out, err


# ---- ports ----

class PortReservation:
    """A loopback TCP port held for as long as a test needs it, for a server that must listen
    on a number known in advance (a restart on the same port, a port a client is given first)
    or a port where nothing listens.

    A socket bound to 127.0.0.1:0 with SO_REUSEADDR and SO_REUSEPORT that never listens: the
    kernel hands its port to nobody else (not to a bind to port 0, not to a connect), while
    herald (SO_REUSEADDR + SO_REUSEPORT) and redis-server (SO_REUSEADDR) can listen on it, stop
    and listen on it again. It takes no connection itself: while no server listens there, a
    connect is refused. Closing a probe socket and reusing its number instead is a race under
    ctest -j (another test may be handed the number in between).

    A server that needs no fixed number listens on port 0 and reports the port it got (herald:
    its "listening on" line, Herald.port).
    """

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.sock.bind((host, 0))
        except BaseException:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


# ---- clients ----

_src_counter = itertools.count()


def next_source_ip():
    """127.0.0.2 .. 127.0.0.250, round robin: many connections without exhausting one address's
    ephemeral ports or TIME_WAIT slots."""
    return "127.0.0.%d" % (2 + next(_src_counter) % 249)


def connect(port, source_ip=None, timeout=IO_TIMEOUT, spread=False):
    """A TCP connection to 127.0.0.1:port, bound first to source_ip (or a spread address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if spread and source_ip is None:
        source_ip = next_source_ip()
    if source_ip:
        s.bind((source_ip, 0))
    try:
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def client_tls_context(alpn=None, tls_max=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls_max:
        ctx.maximum_version = tls_max
    return ctx


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        """The value of the only header `name` (case-insensitive); None if absent; fails if
        repeated."""
        vals = self.header_all(name)
        if len(vals) > 1:
            raise HeraldError("header %s repeated: %r" % (name, vals))
        return vals[0] if vals else None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def __repr__(self):
        return "<Response %d %r headers=%r body=%r>" % (self.status, self.reason, self.headers,
                                                         self.body[:200])


class ConnectionClosed(Exception):
    pass


class Client:
    """A buffered HTTP/1.x client on one socket (plain or TLS) that sends raw bytes."""

    def __init__(self, port, tls=False, spread=False, source_ip=None, timeout=IO_TIMEOUT,
                 ssl_context=None, sock=None):
        if sock is None:
            sock = connect(port, source_ip=source_ip, timeout=timeout, spread=spread)
            if tls or ssl_context:
                ctx = ssl_context or client_tls_context(alpn=["http/1.1"])
                try:
                    sock = ctx.wrap_socket(sock)
                except BaseException:
                    sock.close()
                    raise
        self.sock = sock
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            raise ConnectionClosed("connection closed with %d unparsed bytes: %r" %
                                   (len(self.buf), self.buf[:200]))
        self.buf += chunk

    def read_response(self, head=False, timeout=IO_TIMEOUT):
        """Reads one response: status line, headers, then the body by Content-Length (none for
        HEAD, 1xx, 204, 304); without a length, the body runs to the end of the connection."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(max(0.01, deadline - time.monotonic()))
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        m = re.match(r"(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise HeraldError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            if ":" not in line:
                raise HeraldError("bad header line %r" % line)
            k, v = line.split(":", 1)
            if k != k.strip() or not k:
                raise HeraldError("bad header name %r" % k)
            headers.append((k, v.strip()))
        status = int(m.group(2))
        resp = Response(m.group(1), status, m.group(3), headers, b"", raw_head)
        if head or 100 <= status < 200 or status in (204, 304):
            return resp
        cl = resp.header("Content-Length")
        if cl is not None:
            n = int(cl)
            while len(self.buf) < n:
                self._fill(max(0.01, deadline - time.monotonic()))
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            try:
                while True:
                    self._fill(max(0.01, deadline - time.monotonic()))
            except ConnectionClosed:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method="GET", path="/healthz", headers=None, body=None, version="1.1",
                timeout=IO_TIMEOUT):
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(head=(method == "HEAD"), timeout=timeout)

    def wait_closed(self, timeout=IO_TIMEOUT):
        """Waits for the peer to close (FIN or RST). Returns the seconds waited; fails if data
        arrives first or nothing happens within timeout."""
        t0 = time.monotonic()
        if self.buf:
            raise HeraldError("unexpected bytes before close: %r" % self.buf[:200])
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            data = b""
        except (socket.timeout, TimeoutError):
            raise HeraldError("connection still open after %.1f s" % timeout)
        except ssl.SSLError as e:
            raise HeraldError("TLS error instead of a clean close: %s" % e)
        if data:
            raise HeraldError("unexpected bytes instead of close: %r" % data[:200])
        return time.monotonic() - t0

    def is_open(self, wait=0.2):
        """True if the connection is still open: nothing (no close) arrives within `wait`."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return False
        except ssl.SSLWantReadError:
            return True
        if data:
            self.buf += data
            return True
        return False


def build_request(method="GET", path="/healthz", headers=None, body=None, version="1.1"):
    """Request bytes; Host is added for HTTP/1.1 unless given; Content-Length for a body unless
    the headers frame it already (Content-Length or Transfer-Encoding)."""
    hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
    names = {k.lower() for k, _ in hdrs}
    if version == "1.1" and "host" not in names:
        hdrs.insert(0, ("Host", "127.0.0.1"))
    if isinstance(body, str):
        body = body.encode()
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s HTTP/%s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def chunked(*parts, trailer=b""):
    """Chunked encoding of parts, with the last chunk."""
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


def http_get(port, path="/healthz", timeout=IO_TIMEOUT, **kw):
    """One request on a new connection."""
    with Client(port, timeout=timeout, **kw) as c:
        return c.request("GET", path, timeout=timeout)


def healthz_ok(port, tls=False, timeout=IO_TIMEOUT, **kw):
    """True when GET /healthz on a new connection answers 200 {"status":"ok"}."""
    try:
        r = http_get(port, "/healthz", timeout=timeout, tls=tls, **kw)
    except (OSError, ConnectionClosed, HeraldError, ssl.SSLError):
        return False
    return r.status == 200 and r.body == b'{"status":"ok"}'


# ---- shared test clients: HTTP publish and JSON, waiting ----

HTTP_TIMEOUT = 10.0  # seconds for one request of the http.client helpers below
STREAM_TIMEOUT = 10.0  # default wait for the next SSE block or WebSocket frame


class Headers(dict):
    """Response headers keyed by lower-case name; [], get and `in` ignore the case asked for.
    A repeated header keeps its last value."""

    def __init__(self, pairs=()):
        super().__init__((k.lower(), v) for k, v in pairs)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)


def request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT, conn=None):
    """One request with http.client: on a new connection to 127.0.0.1:port, closed after it,
    or on `conn` (an http.client.HTTPConnection the caller keeps alive).

    Returns (status, Headers, body bytes). A str body is sent as UTF-8."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        return r.status, Headers(r.getheaders()), data
    finally:
        if own:
            conn.close()


def get_json(port, path, timeout=HTTP_TIMEOUT):
    """GET path: (status, the parsed JSON body (None when empty), Headers). A body that is not
    JSON fails the test."""
    status, hdrs, data = request(port, "GET", path, timeout=timeout)
    try:
        return status, json.loads(data or b"null"), hdrs
    except ValueError:
        raise AssertionError("GET %s answered %d with a body that is not JSON: %r" %
                             (path, status, data[:200]))


def stats(port):
    """GET /stats as parsed JSON; anything but 200 fails."""
    status, body, _ = get_json(port, "/stats")
    if status != 200:
        raise AssertionError("GET /stats answered %d: %r" % (status, body))
    return body


def _publish_headers(ctype, headers):
    hdrs = dict(headers or {})
    if ctype is not None:
        hdrs["Content-Type"] = ctype
    return hdrs


def _published_id(channel, status, data):
    if status != 200:
        raise AssertionError("publish to %s: %d %r" % (channel, status, data))
    return json.loads(data)["id"]


def publish(port, channel, body, ctype="text/plain; charset=utf-8", headers=None, conn=None,
            timeout=HTTP_TIMEOUT):
    """POST /pub/{channel} with body (str: UTF-8) and Content-Type ctype (None: no header) plus
    `headers`, on a new connection or on `conn` (kept alive by the caller).

    Returns the message id; anything but 200 fails the test (AssertionError with the body)."""
    status, _, data = request(port, "POST", "/pub/" + channel, body,
                              _publish_headers(ctype, headers), timeout=timeout, conn=conn)
    return _published_id(channel, status, data)


class Publisher:
    """publish() over one keep-alive connection: pub(channel, body, ctype, headers) -> id.

    A connection the server closed between two publishes (keep-alive timeout or request limit)
    is reopened once and the publish sent again; a second failure is raised. close() when done.
    """

    def __init__(self, port, timeout=HTTP_TIMEOUT):
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def __call__(self, channel, body, ctype="text/plain; charset=utf-8", headers=None):
        hdrs = _publish_headers(ctype, headers)
        for attempt in range(2):
            try:
                status, _, data = request(self.port, "POST", "/pub/" + channel, body, hdrs,
                                          conn=self.conn)
                break
            except (http.client.HTTPException, OSError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
        return _published_id(channel, status, data)

    def close(self):
        self.conn.close()


def wait_for(cond, timeout=IO_TIMEOUT, what="condition", interval=0.02):
    """Calls cond() every `interval` seconds until it returns a true value, and returns that
    value; once `timeout` seconds have passed without one, fails with "timed out waiting for
    <what>". cond is always called at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s (%.1f s)" % (what, timeout))
        time.sleep(interval)


# ---- required tools: a missing one fails the test, it never skips it ----

DEPS_HINT = "scripts/deps.sh test installs it (the README's test command runs it)"


def _node_modules():
    """HERALD_SRC/node_modules; in a linked git worktree (git worktree add) without its own, the
    main checkout's, which the worktree shares with it like its git objects."""
    own = os.path.join(HERALD_SRC, "node_modules")
    if os.path.isdir(own):
        return own
    try:
        common = subprocess.run(["git", "-C", HERALD_SRC, "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return own
    if os.path.basename(common) == ".git":
        shared = os.path.join(os.path.dirname(common), "node_modules")
        if os.path.isdir(shared):
            return shared
    return own


NODE_MODULES = _node_modules()


def require_executable(path, what):
    """Returns path if it is an executable file (a name is looked up in PATH); fails otherwise."""
    found = path if os.path.isabs(path) else shutil.which(path)
    if not found or not os.access(found, os.X_OK):
        raise AssertionError("%s is not installed (%s): %s" % (what, path, DEPS_HINT))
    return found


def require_node_module(name):
    """(node binary, node_modules directory) when node and the npm package `name` (installed
    from package-lock.json) are there; fails otherwise."""
    node = require_executable("node", "node")
    if not os.path.isdir(os.path.join(NODE_MODULES, name)):
        raise AssertionError("the npm package %s is not in %s: %s" %
                             (name, NODE_MODULES, DEPS_HINT))
    return node, NODE_MODULES


def require_websockets():
    """The python3-websockets module; fails when it is not installed."""
    try:
        import websockets
    except ImportError as e:
        raise AssertionError("python3-websockets is not installed (%s): %s" % (e, DEPS_HINT))
    return websockets


def require_jwt():
    """Debian's python3-jwt module (PyJWT); fails when it is not installed."""
    try:
        import jwt
    except ImportError as e:
        raise AssertionError("python3-jwt is not installed (%s): %s" % (e, DEPS_HINT))
    return jwt


# ---- tokens and the configuration of an authenticating server ----

def jwt_token(secret, sub, life_s=600, alg="HS256", **claims):
    """A JWT signed with secret (python3-jwt) for sub, issued a second ago (herald reads the
    coarse clock, which may still be in the previous second) and expiring life_s seconds from
    now (exp is whole seconds: the token lives between life_s - 1 and life_s seconds); claims
    are added or override those."""
    now = int(time.time())
    body = {"sub": sub, "iat": now - 1, "exp": now + life_s}
    body.update(claims)
    return require_jwt().encode(body, secret, algorithm=alg)


def conf_with_rules(settings, rules, extra=None):
    """Conf file text: DEFAULT_CONF, then settings, then extra ({directive: value}, None
    leaves one out), then a channel_rule line for each of rules."""
    merged = dict(DEFAULT_CONF)
    merged.update(settings)
    merged.update(extra or {})
    return conf_text(merged) + "".join("channel_rule %s\n" % r for r in rules)


# ---- a real browser ----

CHROMIUM = "/usr/bin/chromium"


class PageServer:
    """Serves one HTML page (GET /NAME, NAME its file name, not cached) from a port of its own on
    127.0.0.1, so the page is of another origin than herald, and collects what the page reports:
    each POST /report/{kind} with a JSON body is queued as (kind, body) for next()."""

    def __init__(self, page):
        self.path = "/" + os.path.basename(page)
        self.reports = queue.Queue()
        reports, path = self.reports, self.path

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if urllib.parse.urlsplit(self.path).path != path:
                    self.send_error(404)
                    return
                with open(page, "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                m = re.match(r"^/report/([a-z]+)$", self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not m:
                    self.send_error(404)
                    return
                reports.put((m.group(1), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, query):
        """The page's URL with query (a dict) as its query string."""
        return "%s%s?%s" % (self.origin, self.path, urllib.parse.urlencode(query))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def next(self, kinds, timeout=30.0):
        """The body of the next report of one of kinds, as (kind, body); reports of other kinds
        are passed over. Fails when none comes within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s report from the page within %.0f s" % (kinds, timeout))
            try:
                kind, body = self.reports.get(timeout=left)
            except queue.Empty:
                continue
            if kind in kinds:
                return kind, body


class Browser:
    """Headless chromium on one URL, in a process group of its own (killed by its id), with a
    profile directory of its own (removed by close()), extra_args added to its command line.
    Callers check require_executable(CHROMIUM, "chromium") first."""

    def __init__(self, url, extra_args=()):
        self.profile = tempfile.mkdtemp(prefix="herald-chromium-")
        self.log = open(os.path.join(self.profile, "chromium.log"), "w+b")
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-extensions", "--user-data-dir=" + self.profile]
        argv += list(extra_args) + [url]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        """The end of what chromium printed, for a failure message."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:
            try:  # helpers left behind by a browser that already exited
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# ---- SSE ----

class SseBlock:
    """One SSE block (the fields up to a blank line) parsed as the spec says: id, event, data
    lines, retry, comments. The bytes must be UTF-8 and every field one herald sends; anything
    else fails."""

    def __init__(self, raw):
        self.raw = raw
        self.id = None
        self.event = None
        self.data = None
        self.retry = None
        self.comments = []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError("SSE block is not UTF-8 (%s): %r" % (e, raw[:200]))
        for line in text.split("\n"):
            if line == "":
                continue
            if line.startswith(":"):
                self.comments.append(line[1:])
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "id":
                self.id = value
            elif name == "event":
                self.event = value
            elif name == "data":
                self.data = (self.data or []) + [value]
            elif name == "retry":
                self.retry = int(value)
            else:
                raise AssertionError("unknown SSE field %r in %r" % (name, raw))

    @property
    def text(self):
        """The event's data (lines joined with LF), None for a block without data."""
        return None if self.data is None else "\n".join(self.data)

    @property
    def is_event(self):
        return self.data is not None

    def __repr__(self):
        return "<SseBlock %r>" % self.raw[:200]


class SseStream:
    """A raw-socket SSE client: sends GET path (with headers) from a spread source address,
    reads the response head (status, headers by lower-case name, and the body of a non-200
    answer), then the stream block by block. Blocks must end in LF LF with no CR on the wire."""

    def __init__(self, port, path, headers=None, spread=True, rcvbuf=None, read_head=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if spread:
                self.sock.bind((next_source_ip(), 0))
            self.sock.settimeout(STREAM_TIMEOUT)
            self.sock.connect(("127.0.0.1", port))
            self.sock.sendall(build_request("GET", path, headers))
        except BaseException:
            self.sock.close()
            raise
        self.buf = bytearray()
        self.scan = 0
        self.eof = False
        self.status = None
        self.headers = {}
        self.body = b""
        if read_head:
            self.read_head()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(262144)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_head(self, timeout=STREAM_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise AssertionError("closed before the response head: %r" % bytes(self.buf))
        i = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:i]).decode("latin-1").split("\r\n")
        del self.buf[:i + 4]
        self.status = int(head[0].split(" ")[1])
        for line in head[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n and self._fill(deadline):
                pass
            self.body = bytes(self.buf[:n])
            del self.buf[:n]

    def next_block(self, timeout=STREAM_TIMEOUT):
        """The next block, or None at the end of the stream; fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n\n", self.scan)
            if i >= 0:
                raw = bytes(self.buf[:i + 1])
                del self.buf[:i + 2]
                self.scan = 0
                if b"\r" in raw:
                    raise AssertionError("CR on the wire: %r" % raw[:200])
                return SseBlock(raw)
            self.scan = max(0, len(self.buf) - 1)
            if self.eof:
                if self.buf:
                    raise AssertionError("stream ended inside a block: %r" % bytes(self.buf[:200]))
                return None
            if time.monotonic() >= deadline:
                raise AssertionError("no SSE block within %.1f s" % timeout)
            try:
                self._fill(deadline)
            except (socket.timeout, TimeoutError):
                raise AssertionError("no SSE block within %.1f s" % timeout)

    def next_event(self, timeout=STREAM_TIMEOUT):
        """The next block that is an event (has data), skipping retry: and comments."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.next_block(max(0.01, deadline - time.monotonic()))
            if b is None or b.is_event:
                return b

    def events(self, n, timeout=STREAM_TIMEOUT):
        """The next n events; fails if the stream ends or they take longer than timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            b = self.next_event(max(0.01, deadline - time.monotonic()))
            if b is None:
                raise AssertionError("stream closed after %d of %d events" % (len(out), n))
            out.append(b)
        return out

    def assert_quiet(self, wait=0.3):
        """No further event arrives within `wait` (comments are fine)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                b = self.next_block(max(0.01, deadline - time.monotonic()))
            except AssertionError as e:
                if "no SSE block" in str(e):
                    return
                raise
            if b is None or b.is_event:
                raise AssertionError("unexpected %r" % (b,))


# ---- WebSocket ----

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
WS_RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_handshake_request(path, key=WS_RFC_KEY, version="13", extra=None, upgrade=True):
    """The bytes of a WebSocket opening handshake for path (key or version None: left out)."""
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: " + version)
    for k, v in (extra or {}).items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ws_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=b"\x37\xfa\x21\x3d",
             length=None):
    """One client frame. length overrides the encoded payload length (for framing errors)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        out.append(mbit | n)
    elif n < 65536:
        out.append(mbit | 126)
        out += struct.pack(">H", n)
    else:
        out.append(mbit | 127)
        out += struct.pack(">Q", n)
    if mask:
        out += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(out) + payload


def ws_close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


class RawWS:
    """A WebSocket client on a raw socket: exact bytes out, parsed frames in. The handshake
    must answer 101 (anything else fails). Every text frame and close reason the server sends
    must be UTF-8 (RFC 6455 8.1): recv_frame fails on one that is not."""

    def __init__(self, port, path="/ws", extra=None, rcvbuf=None, spread=False, upgrade=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if spread:
                self.sock.bind((next_source_ip(), 0))
            self.sock.settimeout(IO_TIMEOUT)
            self.sock.connect(("127.0.0.1", port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            self.sock.close()
            raise
        self.client = Client(port, sock=self.sock)
        self.client.send(ws_handshake_request(path, extra=extra, upgrade=upgrade))
        self.response = self.client.read_response()
        if self.response.status != 101:
            self.client.close()
            raise AssertionError("handshake: %r" % self.response)
        self._text = False  # inside a fragmented text message

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data):
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.001)

    def _need(self, n, deadline):
        while len(self.client.buf) < n:
            self.client._fill(max(0.01, deadline - time.monotonic()))

    def recv_frame(self, timeout=IO_TIMEOUT):
        """(fin, rsv, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.client.buf[0], self.client.buf[1]
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack(">H", self.client.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack(">Q", self.client.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload = self.client.buf[off:off + n]
        self.client.buf = self.client.buf[off + n:]
        fin, op = bool(b0 & 0x80), b0 & 0x0F
        # Fragments of one text message may split a character: the complete message is checked
        # by recv_json or the caller; a single-frame text message and a close reason here.
        if op == OP_TEXT and fin or op == OP_CLOSE:
            try:
                payload[2 if op == OP_CLOSE else 0:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise AssertionError("server %s is not UTF-8 (%s): %r" % (
                    "close reason" if op == OP_CLOSE else "text frame", e, payload[:200]))
        return fin, (b0 >> 4) & 7, op, payload

    def recv_data(self, timeout=IO_TIMEOUT):
        """The next data frame (opcode, payload), skipping pings."""
        while True:
            fin, rsv, op, payload = self.recv_frame(timeout)
            if op == OP_PING:
                continue
            if op == OP_CLOSE:
                raise AssertionError("closed: %r" % (payload,))
            assert fin and rsv == 0, (fin, rsv, op)
            return op, payload

    def recv_json(self, timeout=IO_TIMEOUT):
        op, payload = self.recv_data(timeout)
        assert op == OP_TEXT, op
        return json.loads(payload)

    def expect_close(self, timeout=IO_TIMEOUT):
        """Reads up to the server's close frame; returns (code or None, reason), then requires
        the connection to end."""
        deadline = time.monotonic() + timeout
        while True:
            fin, rsv, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                break
        code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
        reason = payload[2:].decode("utf-8")
        try:
            self.send(ws_frame(OP_CLOSE, payload[:2]))
        except OSError:
            pass
        self.client.wait_closed(max(0.5, deadline - time.monotonic()))
        return code, reason

    def close(self):
        self.client.close()


def require_websocket(port, path="/ws/probe"):
    """Fails unless a WebSocket handshake on path upgrades (101 with the RFC 6455 accept key):
    a transport that does not upgrade is a failure, never a reason to skip."""
    try:
        with Client(port) as c:
            c.send(ws_handshake_request(path))
            r = c.read_response()
    except (OSError, ConnectionClosed, HeraldError) as e:
        raise AssertionError("WebSocket handshake on %s failed: %r" % (path, e))
    if r.status != 101 or r.header("Sec-WebSocket-Accept") != WS_RFC_ACCEPT:
        raise AssertionError("WebSocket handshake on %s did not upgrade: %r" % (path, r))


def ws_url(port, path, tls=False):
    return "%s://127.0.0.1:%d%s" % ("wss" if tls else "ws", port, path)


def ws_connect(port, path, tls=False, **kw):
    """python3-websockets connect() to ws://127.0.0.1:port/path (wss:// with tls, and an `ssl`
    context in kw) for `async with` or await, without compression or a message size limit and
    with a 20 s handshake deadline unless kw says otherwise. A handshake that does not upgrade
    raises (and fails the test)."""
    websockets = require_websockets()
    kw.setdefault("compression", None)
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 20)
    return websockets.connect(ws_url(port, path, tls), **kw)


# ---- python3-websockets clients speaking /ws's JSON, on asyncio ----

_ref_counter = itertools.count(1)  # refs of ws_request

def run_async(coro, timeout=90):
    """Runs coro to its end on a new event loop; fails (asyncio.TimeoutError) after timeout
    seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ws_recv_json(ws, timeout=STREAM_TIMEOUT):
    """The next message of ws (a python3-websockets connection), parsed as JSON; fails after
    timeout seconds."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def ws_recv_until(ws, pred, timeout=STREAM_TIMEOUT, recv=ws_recv_json):
    """Messages from recv(ws, timeout) until one satisfies pred: (that one, every message
    received, it included). Fails when none does within timeout seconds."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.01, deadline - time.monotonic()))
        seen.append(m)
        if pred(m):
            return m, seen


async def ws_request(ws, req, timeout=STREAM_TIMEOUT, recv=ws_recv_json):
    """Sends the /ws operation req (a dict) with a ref of its own: (the message answering that
    ref, every message received up to it, it included)."""
    ref = "r%d" % next(_ref_counter)
    await ws.send(json.dumps(dict(req, ref=ref)))
    return await ws_recv_until(ws, lambda m: m.get("ref") == ref, timeout, recv)


# ---- tests ----

class HeraldTestCase(unittest.TestCase):
    """Starts servers that are stopped and checked (exit 0, no sanitizer report, no exit before
    the test stopped it) after the test, or after the class for start_class_herald."""

    _class_heralds = ()

    def start_herald(self, **kw):
        h = Herald(**kw)
        self.addCleanup(h.cleanup)
        h.start()
        return h

    @classmethod
    def start_class_herald(cls, **kw):
        """For setUpClass: one server shared by the class's tests, stopped and checked after the
        last one, and checked still running after each (an exit fails the test that saw it)."""
        h = Herald(**kw)
        cls.addClassCleanup(h.cleanup)
        if "_class_heralds" not in cls.__dict__:
            cls._class_heralds = []
        cls._class_heralds.append(h)
        h.start()
        return h

    def run(self, result=None):
        # Registered first, so it runs last: after the test's own cleanups.
        self.addCleanup(self._check_class_heralds)
        return super().run(result)

    def _check_class_heralds(self):
        for klass in type(self).__mro__:
            for h in klass.__dict__.get("_class_heralds", ()):
                h.check_exit()

    def reserve_port(self):
        """A port number held until the end of the test (PortReservation)."""
        r = PortReservation()
        self.addCleanup(r.close)
        return r.port

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="herald-it-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def assertHealthy(self, port, tls=False, msg=None):
        self.assertTrue(healthz_ok(port, tls=tls), msg or "GET /healthz failed on port %d" % port)

    def assertServed(self, port, tls=False, within=2.0, msg=None):
        """Another client is still served: a fresh /healthz answers 200 within `within` s."""
        t0 = time.monotonic()
        ok = healthz_ok(port, tls=tls, timeout=within)
        took = time.monotonic() - t0
        self.assertTrue(ok and took <= within,
                        msg or "/healthz on port %d: ok=%s after %.2fs" % (port, ok, took))

    def assertStatus(self, resp, status):
        self.assertEqual(resp.status, status, "expected %d, got %r" % (status, resp))


# The exit status of a file whose tests all skipped: ctest's SKIP_RETURN_CODE for every Python
# test (tests/CMakeLists.txt), so such a file is reported as skipped, never as passed.
EXIT_SKIPPED = 77


def main():
    """unittest.main with verbosity. Exits 1 on any failure or error, or when no test was found;
    EXIT_SKIPPED (77) when every test skipped (ctest reports the file as skipped); 0 when at
    least one test ran and all passed (the skipped ones are listed on stderr).

    A skip is only for what is truly optional on the machine (each skipTest says why in a
    comment); a tool that scripts/deps.sh test installs is required (require_executable,
    require_node_module, require_websockets fail without it)."""
    if not HERALD_BIN:
        sys.stderr.write("HERALD_BIN is not set\n")
        sys.exit(2)
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    ran = r.testsRun - len(r.skipped)
    reasons = "; ".join(sorted({why for _, why in r.skipped}))
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun == 0:
        sys.stderr.write("FAILED: no test found\n")
        sys.exit(1)
    if ran <= 0:
        sys.stderr.write("SKIPPED: all %d tests of this file skipped (%s)\n" %
                         (r.testsRun, reasons))
        sys.exit(EXIT_SKIPPED)
    if r.skipped:
        sys.stderr.write("note: %d of %d tests skipped (%s)\n" %
                         (len(r.skipped), r.testsRun, reasons))
    sys.exit(0)
