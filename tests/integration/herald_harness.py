# SPDX-License-Identifier: MIT
"""herald_harness: runs the real herald binary for integration tests and talks to it over sockets.

Every server gets its own temporary configuration file (rewritable, for SIGHUP tests), listens on
an ephemeral port of 127.0.0.1 (`-o 'listen 127.0.0.1:0'`) and runs few workers. Its stderr is
read by a background thread; the bound ports come from its "listening on 127.0.0.1:PORT" lines
and start() returns once it logged "ready". stop() sends SIGTERM to its PID and requires exit
status 0 within a timeout and no sanitizer report in the log; a process still alive at the end of
a test or of the interpreter is killed, and that is a test failure.

Only the standard library is used; curl and openssl are the external clients.
"""
import atexit
import itertools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

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

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "herald: assertion failed",
)

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)( tls)?")
READY_RE = re.compile(r"\bready$")

_live = set()  # Herald instances whose process may still run


def _kill_leftovers():
    for h in list(_live):
        h.kill()


atexit.register(_kill_leftovers)


def herald_bin():
    if not HERALD_BIN or not os.access(HERALD_BIN, os.X_OK):
        raise unittest.SkipTest("HERALD_BIN is not set to an executable herald binary")
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


class Herald:
    """One herald process.

    conf: {directive: value} merged over DEFAULT_CONF (None removes a default), written to a
          temporary file passed with -c; conf_raw: exact file text instead.
    listens: the -o listen values (each "127.0.0.1:0" or "127.0.0.1:0 tls").
    workers: -o workers N, or None to leave workers to the file.
    overrides: more -o values. env: extra environment variables.
    """

    def __init__(self, conf=None, conf_raw=None, listens=("127.0.0.1:0",), workers=2,
                 overrides=(), env=None, tmpdir=None):
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="herald-it-")
        self._own_tmpdir = tmpdir is None
        self.conf_path = os.path.join(self.tmpdir, "herald.conf")
        self.listens = list(listens)
        self.workers = workers
        self.overrides = list(overrides)
        self.env = dict(env or {})
        self.proc = None
        self.returncode = None
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

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its status, or None on timeout."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finish_reader()
        self.returncode = rc
        _live.discard(self)
        return rc

    def _finish_reader(self):
        if self._reader:
            self._reader.join(5)
        if self.proc is not None and self.proc.stderr and not self._reader.is_alive():
            self.proc.stderr.close()

    def kill(self):
        """Last resort: SIGKILL and reap. Returns True if the process was still running."""
        was = self.running()
        if was:
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
        rc = self.wait_exit(timeout)
        took = time.monotonic() - t0
        if rc is None:
            self.kill()
            raise HeraldError("herald (pid %d) did not exit within %.1f s of SIGTERM; killed:\n%s"
                              % (self.pid, timeout, self.log_text()))
        self.check_clean()
        if rc != 0:
            raise HeraldError("herald exited with status %d:\n%s" % (rc, self.log_text()))
        return took

    def check_clean(self):
        bad = sanitizer_report(self.log_text())
        if bad:
            raise HeraldError("sanitizer report in herald's stderr: %s\n%s" %
                              (bad, self.log_text()))

    def cleanup(self):
        """For addCleanup: stop if still running (checking the exit), remove the temp dir."""
        try:
            if self.running():
                self.stop()
            elif self.proc is not None:
                self.wait_exit(STOP_TIMEOUT)
                self.check_clean()
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
        """Rewrites the conf (when given), sends SIGHUP and waits for the outcome's log line."""
        if conf is not None or conf_raw is not None:
            self.write_conf(conf, conf_raw)
        start = self.mark()
        self.signal(signal.SIGHUP)
        m = self.wait_log(r"\breloaded$|reload failed", timeout, start)
        ok = m.group(0) == "reloaded"
        if ok != expect_ok:
            raise HeraldError("reload %s, expected it to %s:\n%s" % (
                "succeeded" if ok else "failed", "succeed" if expect_ok else "fail",
                "\n".join(self.lines()[start:])))
        # Workers apply a new snapshot from their mailbox: give them a moment to take it.
        time.sleep(0.2)
        return start


def run_herald(args, timeout=10, env=None, cwd=None):
    """Runs herald to completion (-t, --version, a start that must fail).

    Returns (status, stdout, stderr). A run that does not exit in time is killed and fails.
    """
    full_env = dict(os.environ)
    full_env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    full_env.update(env or {})
    p = subprocess.Popen([herald_bin()] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd)
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
    return p.returncode, out, err


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


# ---- tests ----

class HeraldTestCase(unittest.TestCase):
    """Starts servers that are stopped and checked (exit 0, no sanitizer report) after the test."""

    def start_herald(self, **kw):
        h = Herald(**kw)
        self.addCleanup(h.cleanup)
        h.start()
        return h

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


def main():
    """unittest.main with verbosity; exits non-zero on any failure or error."""
    if not HERALD_BIN:
        sys.stderr.write("HERALD_BIN is not set\n")
        sys.exit(2)
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    sys.exit(0 if r.wasSuccessful() and r.testsRun > 0 else 1)
