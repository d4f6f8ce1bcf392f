# SPDX-License-Identifier: MIT
"""A redis-server of a test's own (Debian's), for the files that run herald against Redis in
ways test_redis.py does not: over a unix socket, with a password or an ACL user, hung with
SIGSTOP.

The server listens on a unix socket in the test's temporary directory, and on TCP only when
asked: redis-server picks no port by itself, so a TCP server listens on a port the test holds
(hh.PortReservation: no other test is handed it, no bind-0-then-close race).
"""
import os
import shutil
import signal
import subprocess
import time

import herald_harness as hh

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
IO = 10.0


def require_redis():
    hh.require_executable(REDIS_SERVER, "redis-server")
    hh.require_executable(REDIS_CLI, "redis-cli")


class RedisServer:
    """redis-server in tmpdir: unix socket tmpdir/redis.sock; tcp=True adds a TCP port on
    127.0.0.1. password: requirepass; users: ACL SETUSER rules {name: "on >pw ~* &* +@all"}."""

    def __init__(self, tmpdir, tcp=False, password=None, users=None):
        self.dir = tmpdir
        self.sock = os.path.join(tmpdir, "redis.sock")
        self.tcp = tcp
        self.password = password
        self.users = dict(users or {})
        self.reservation = hh.PortReservation() if tcp else None
        self.port = self.reservation.port if tcp else 0
        self.proc = None
        self.stopped = False  # SIGSTOPped by the test

    def _args(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", self.sock, "--unixsocketperm", "700", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        for name, rules in self.users.items():
            args += ["--user", name] + rules.split()
        return args

    def start(self):
        self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + IO
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s:\n%s" %
                                     (hh.describe_status(self.proc.returncode), self.log()))
            if self.ping():
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError("redis-server did not answer PING within %.0f s:\n%s" %
                             (IO, self.log()))

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def ping(self):
        return self.cli("PING", check=False) == "PONG"

    def cli(self, *args, check=True, user=None, password=None):
        """redis-cli on the unix socket (as the admin: requirepass, or the default user)."""
        cmd = [REDIS_CLI, "-s", self.sock, "--no-auth-warning"]
        pw = password if password is not None else self.password
        if user:
            cmd += ["--user", user]
        if pw:
            cmd += ["-a", pw]
        p = subprocess.run(cmd + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=IO)
        out = p.stdout.decode(errors="replace").strip()
        if check and (p.returncode != 0 or out.startswith(("ERR", "NOAUTH", "WRONGPASS"))):
            raise AssertionError("redis-cli %r: %s %s" % (args, out, p.stderr.decode()))
        return out

    def pause(self):
        """SIGSTOP: the server hangs with its connections open (no close, no RST)."""
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(IO)

    def close(self):
        """kill(), and release the TCP port (start() may run again until then)."""
        try:
            self.kill()
        finally:
            if self.reservation:
                self.reservation.close()

    def herald_clients(self):
        """CLIENT LIST entries whose name starts with herald: ({field: value} each)."""
        out = []
        for line in self.cli("CLIENT", "LIST").splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if f.get("name", "").startswith("herald:") or f.get("name", "").count(":") >= 3:
                out.append(f)
        return out


def start_redis(test, **kw):
    """A RedisServer in a temp dir of the test, killed after it (its port released)."""
    require_redis()
    r = RedisServer(test.tmpdir(), **kw)
    test.addCleanup(r.close)  # before start: a server that fails to start is killed too
    return r.start()
