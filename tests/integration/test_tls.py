# SPDX-License-Identifier: MIT
"""TLS integration tests: HTTPS with Python's ssl and curl, ALPN, keep-alive, old protocol
versions refused, failed handshakes isolated, certificate reload on SIGHUP (good and broken),
a bad certificate at start, plain and TLS listeners side by side.

Certificates are throwaway self-signed EC keys made with the openssl CLI in a temp directory.
"""
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402
from herald_harness import Client, build_request  # noqa: E402

OK_BODY = b'{"status":"ok"}'


def make_cert(directory, cn, name):
    """Writes NAME.crt and NAME.key (self-signed, CN=cn) into directory; returns both paths."""
    crt = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=" + cn],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def install(src, dst):
    """Replaces dst by a copy of src atomically (as a deployment tool would)."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def tls_client(port, **kw):
    return Client(port, ssl_context=hh.client_tls_context(**kw))


def curl_https(port, path="/healthz", verbose=False):
    args = ["curl", "-k", "-sS", "--max-time", "5", "https://127.0.0.1:%d%s" % (port, path)]
    if verbose:
        args.insert(1, "-v")
    return subprocess.run(args, capture_output=True, timeout=15)


class TlsTestCase(hh.HeraldTestCase):
    def setUp(self):
        self.dir = self.tmpdir()
        self.crt1, self.key1 = make_cert(self.dir, "herald-one.test", "one")
        self.crt2, self.key2 = make_cert(self.dir, "herald-two.test", "two")
        self.crt = os.path.join(self.dir, "server.crt")
        self.key = os.path.join(self.dir, "server.key")
        install(self.crt1, self.crt)
        install(self.key1, self.key)

    def tls_conf(self, **extra):
        conf = {"tls_certificate": self.crt, "tls_certificate_key": self.key}
        conf.update(extra)
        return conf

    def start_tls(self, listens=("127.0.0.1:0 tls",), **conf):
        return self.start_herald(conf=self.tls_conf(**conf), listens=listens)

    def assertOk(self, r):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, OK_BODY)

    def assertServerCert(self, port, der, msg=None):
        with tls_client(port) as c:
            self.assertEqual(c.sock.getpeercert(binary_form=True), der, msg)
            self.assertOk(c.request())


class TestHttps(TlsTestCase):
    def test_python_ssl_request_and_alpn(self):
        h = self.start_tls()
        with tls_client(h.tls_port, alpn=["h2", "http/1.1"]) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "h2")  # test_http2 speaks it
        with tls_client(h.tls_port, alpn=["http/1.1"]) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertIn(c.sock.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(c.sock.getpeercert(binary_form=True), der_of(self.crt1))
            r = c.request()
            self.assertOk(r)
            self.assertEqual(r.header("Content-Length"), "15")
            self.assertIsNotNone(r.header("Date"))
            self.assertRegex(r.header("Server") or "", r"^herald/")

    def test_alpn_without_http2(self):
        h = self.start_tls(http2="off")
        with tls_client(h.tls_port, alpn=["h2", "http/1.1"]) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertOk(c.request())

    def test_without_alpn(self):
        h = self.start_tls()
        with tls_client(h.tls_port) as c:
            self.assertIsNone(c.sock.selected_alpn_protocol())
            self.assertOk(c.request())

    def test_tls12_and_tls13(self):
        h = self.start_tls()
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = hh.client_tls_context(alpn=["http/1.1"])
            ctx.minimum_version = ctx.maximum_version = ver
            with self.subTest(version=ver.name), Client(h.tls_port, ssl_context=ctx) as c:
                self.assertEqual(c.sock.version(), ver.name.replace("_", "."))
                self.assertOk(c.request())

    def test_tls_min_version_13_refuses_12(self):
        h = self.start_tls(tls_min_version="1.3")
        ctx = hh.client_tls_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            Client(h.tls_port, ssl_context=ctx).close()
        h.wait_log(r"TLS handshake failed")
        with tls_client(h.tls_port) as c:
            self.assertEqual(c.sock.version(), "TLSv1.3")
            self.assertOk(c.request())

    def test_curl(self):
        h = self.start_tls()
        out = curl_https(h.tls_port, verbose=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, OK_BODY)
        err = out.stderr.decode(errors="replace")
        self.assertRegex(err, r"ALPN[^\n]*(server accepted|accepted)[^\n]*h2")
        self.assertRegex(err, r"subject: CN ?= ?herald-one\.test")
        # a client that offers only http/1.1 gets it
        out = subprocess.run(["curl", "-k", "-sS", "-v", "--http1.1", "--max-time", "5",
                              "https://127.0.0.1:%d/healthz" % h.tls_port],
                             capture_output=True, timeout=15)
        self.assertEqual(out.stdout, OK_BODY)
        self.assertRegex(out.stderr.decode(errors="replace"),
                         r"ALPN[^\n]*(server accepted|accepted)[^\n]*http/1\.1")

    def test_keepalive_and_pipelining_over_tls(self):
        h = self.start_tls()
        with tls_client(h.tls_port, alpn=["http/1.1"]) as c:
            for i in range(5):
                r = c.request("GET", "/healthz" if i % 2 == 0 else "/missing")
                self.assertEqual(r.status, 200 if i % 2 == 0 else 404)
                self.assertIsNone(r.header("Connection"))
            c.send(b"".join(build_request("GET", "/healthz") for _ in range(20)))
            for _ in range(20):
                self.assertOk(c.read_response())
            self.assertTrue(c.is_open(0.3))

    def test_pipelined_then_close_notify_all_answered(self):
        # Requests pipelined past the 64 KiB backpressure bound, then close_notify in the same
        # flight: the server reads the close with requests still waiting and must answer them
        # all before it ends (it answered 16 of 40 and dropped the rest).
        h = self.start_tls()
        ctx = hh.client_tls_context(alpn=["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", h.tls_port), timeout=5)
        self.addCleanup(raw.close)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(out.read())
                inc.write(raw.recv(65536))
        raw.sendall(out.read())
        n = 40  # 40 x /metrics: well past 64 KiB of answers
        obj.write(b"".join(build_request("GET", "/metrics") for _ in range(n)))
        try:
            obj.unwrap()  # queues close_notify; the server's comes later
        except ssl.SSLWantReadError:
            pass
        raw.sendall(out.read())
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = raw.recv(65536)
            if not data:
                break
            inc.write(data)
            while True:
                try:
                    got += obj.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
        self.assertEqual(got.count(b"HTTP/1.1 200 OK\r\n"), n)

    def test_bad_request_over_tls_closes_cleanly(self):
        h = self.start_tls(max_url_size="1k")
        with tls_client(h.tls_port) as c:
            self.assertOk(c.request())
            c.send(build_request("GET", "/" + "u" * 2000))
            r = c.read_response()
            self.assertEqual(r.status, 414, r)
            self.assertEqual(r.header("Connection"), "close")
            c.wait_closed(timeout=3)  # close_notify, then FIN
        self.assertTrue(hh.healthz_ok(h.tls_port, tls=True))

    def test_tls11_refused(self):
        h = self.start_tls()
        # A TLS 1.1 ClientHello made by hand, so the refusal is tested whatever the local
        # OpenSSL can still offer: a fatal protocol_version alert, nothing else.
        mark = h.mark()
        with socket.create_connection(("127.0.0.1", h.tls_port), timeout=5) as s:
            s.sendall(tls11_client_hello())
            answer = b""
            try:
                while len(answer) < 7:
                    chunk = s.recv(7 - len(answer))
                    if not chunk:
                        break
                    answer += chunk
            except ConnectionResetError:
                pass
        self.assertEqual(answer[:1], b"\x15", "no alert record: %r" % answer)
        self.assertEqual(answer[5:7], b"\x02\x46", "not a fatal protocol_version: %r" % answer)
        h.wait_log(r"TLS handshake failed", start=mark)
        # And a real TLS 1.1 client, when this machine's OpenSSL can still be one: Debian's
        # (SECLEVEL=0) can; a build without TLS 1.1 cannot, and the hand-made hello above
        # stands for it.
        ctx = hh.client_tls_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers("ALL:@SECLEVEL=0")
                can = offers_tls11(ctx)
            except (ValueError, ssl.SSLError):
                can = False
        if can:
            mark = h.mark()
            with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)) as cm:
                c = Client(h.tls_port, ssl_context=ctx)
                c.close()
            self.assertNotIsInstance(cm.exception, socket.timeout)
            h.wait_log(r"TLS handshake failed", start=mark)
        self.assertTrue(hh.healthz_ok(h.tls_port, tls=True))


def tls11_client_hello():
    """A ClientHello offering TLS 1.1 only (legacy_version 0x0302, no supported_versions
    extension) with RSA and ECDHE-RSA AES-CBC suites, in a TLS 1.0 record."""
    suites = (0xC013, 0xC014, 0x002F, 0x0035)
    ext = (struct.pack(">HHH", 0x000A, 4, 2) + b"\x00\x17"  # supported_groups: secp256r1
           + struct.pack(">HH", 0x000B, 2) + b"\x01\x00")  # ec_point_formats: uncompressed
    body = (struct.pack(">H", 0x0302) + os.urandom(32) + b"\x00"
            + struct.pack(">H", 2 * len(suites)) + b"".join(struct.pack(">H", c) for c in suites)
            + b"\x01\x00" + struct.pack(">H", len(ext)) + ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def offers_tls11(ctx):
    """Whether ctx really sends a ClientHello for TLS 1.1 (legacy_version 0x0302): tried against a
    local listener that records the first bytes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    got = []

    def accept():
        ls.settimeout(5)
        try:
            c, _ = ls.accept()
            c.settimeout(5)
            got.append(c.recv(4096))
            c.close()
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    s = socket.create_connection(ls.getsockname(), timeout=5)
    try:
        ctx.wrap_socket(s).close()
    except (ssl.SSLError, OSError):
        pass
    finally:
        s.close()
    t.join()
    ls.close()
    return bool(got) and len(got[0]) > 11 and got[0][0] == 0x16 and got[0][9:11] == b"\x03\x02"


class TestHandshakeFailures(TlsTestCase):
    def test_failed_handshakes_close_only_that_connection(self):
        h = self.start_tls()
        good = tls_client(h.tls_port)
        self.addCleanup(good.close)
        self.assertOk(good.request())
        mark = h.mark()
        # Garbage where a ClientHello belongs.
        with Client(h.tls_port) as bad:
            bad.send(os.urandom(64) + b"\r\n\r\n")
            self.assertClosedWithoutHttp(bad)
        # A plain HTTP request on the TLS port.
        with Client(h.tls_port) as plain:
            plain.send(build_request("GET", "/healthz"))
            self.assertClosedWithoutHttp(plain)
        # A ClientHello cut short, then the client goes away.
        with Client(h.tls_port) as cut:
            cut.send(bytes.fromhex("160301020001"))
        self.assertGreaterEqual(h.wait_count(r"TLS handshake failed", 2, start=mark), 2,
                                h.log_text())
        # The established connection and new ones are unaffected.
        self.assertOk(good.request())
        self.assertTrue(hh.healthz_ok(h.tls_port, tls=True))

    def assertClosedWithoutHttp(self, c):
        data = b""
        c.sock.settimeout(3)
        try:
            while True:
                chunk = c.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            self.fail("connection not closed after a failed handshake")
        self.assertNotIn(b"HTTP/1.1 200", data)
        # At most a TLS alert record (content type 21) comes back.
        if data:
            self.assertEqual(data[0], 21, data[:20])

    def test_tls_client_on_plain_port(self):
        h = self.start_herald(conf=self.tls_conf(),
                              listens=("127.0.0.1:0", "127.0.0.1:0 tls"))
        with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
            tls_client(h.port).close()
        self.assertTrue(hh.healthz_ok(h.port))


class TestReload(TlsTestCase):
    def test_sighup_reloads_certificate(self):
        h = self.start_tls()
        old = tls_client(h.tls_port)
        self.addCleanup(old.close)
        self.assertEqual(old.sock.getpeercert(binary_form=True), der_of(self.crt1))
        self.assertOk(old.request())

        install(self.crt2, self.crt)
        install(self.key2, self.key)
        h.reload()
        self.assertServerCert(h.tls_port, der_of(self.crt2), "new connections see the new cert")
        out = curl_https(h.tls_port, verbose=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stderr.decode(errors="replace"), r"subject: CN ?= ?herald-two\.test")
        # The connection made before the reload still works, on its old session.
        self.assertOk(old.request())
        self.assertEqual(old.sock.getpeercert(binary_form=True), der_of(self.crt1))
        self.assertOk(old.request())

    def test_reload_with_broken_certificate_keeps_old(self):
        h = self.start_tls()
        old = tls_client(h.tls_port)
        self.addCleanup(old.close)
        self.assertOk(old.request())
        with open(self.crt, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        mark = h.reload(expect_ok=False)
        line = h.wait_log(r"reload failed.*", start=mark).group(0)
        self.assertIn(self.crt, line, "the log should name the broken file")
        self.assertServerCert(h.tls_port, der_of(self.crt1), "the old certificate stays in use")
        self.assertOk(old.request())
        # A certificate that does not match the key is refused too.
        install(self.crt2, self.crt)
        mark = h.reload(expect_ok=False)
        line = h.wait_log(r"reload failed.*", start=mark).group(0)
        self.assertRegex(line, r"does not match|mismatch")
        self.assertIn(self.key, line)
        self.assertServerCert(h.tls_port, der_of(self.crt1))
        # Fixing the files and reloading again brings the new certificate in.
        install(self.key2, self.key)
        h.reload()
        self.assertServerCert(h.tls_port, der_of(self.crt2))
        self.assertOk(old.request())

    def test_reload_with_missing_key_keeps_old(self):
        h = self.start_tls()
        os.unlink(self.key)
        mark = h.reload(expect_ok=False)
        line = h.wait_log(r"reload failed.*", start=mark).group(0)
        self.assertIn(self.key, line)
        self.assertServerCert(h.tls_port, der_of(self.crt1))


class TestStart(TlsTestCase):
    def test_bad_certificate_path_at_start(self):
        missing = os.path.join(self.dir, "nope", "missing.crt")
        h = hh.Herald(conf={"tls_certificate": missing, "tls_certificate_key": self.key},
                      listens=("127.0.0.1:0 tls",), expect_exit=hh.EXIT_START)
        self.addCleanup(h.cleanup)
        t0 = time.monotonic()
        h.start(wait_ready=False)
        rc = h.wait_exit(5)
        self.assertIsNotNone(rc, "herald kept running with a missing certificate")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(rc, hh.EXIT_START)
        self.assertIn(missing, h.log_text())
        self.assertIsNone(h.find_log(r"\bready$"))
        h.check_clean()

    def test_bad_certificate_content_at_start(self):
        with open(self.crt, "w") as f:
            f.write("garbage\n")
        h = hh.Herald(conf=self.tls_conf(), listens=("127.0.0.1:0 tls",),
                      expect_exit=hh.EXIT_START)
        self.addCleanup(h.cleanup)
        h.start(wait_ready=False)
        rc = h.wait_exit(5)
        self.assertIsNotNone(rc)
        self.assertEqual(rc, hh.EXIT_START)
        self.assertIn(self.crt, h.log_text())

    def test_check_mode_reports_bad_certificate(self):
        missing = os.path.join(self.dir, "missing.crt")
        h = hh.Herald(conf={"tls_certificate": missing, "tls_certificate_key": self.key},
                      listens=("127.0.0.1:0 tls",))
        self.addCleanup(h.cleanup)
        rc, out, err = hh.run_herald(h.argv()[1:] + ["-t"])
        self.assertNotEqual(rc, 0)
        self.assertIn(missing, err)

    def test_plain_and_tls_listeners_together(self):
        h = self.start_herald(conf=self.tls_conf(),
                              listens=("127.0.0.1:0", "127.0.0.1:0 tls"))
        self.assertNotEqual(h.port, h.tls_port)
        self.assertTrue(h.find_log(r"listening on 127\.0\.0\.1:%d tls" % h.tls_port))
        self.assertTrue(h.find_log(r"listening on 127\.0\.0\.1:%d \(" % h.port))
        with Client(h.port) as plain, tls_client(h.tls_port) as sec:
            for _ in range(3):
                self.assertOk(plain.request())
                self.assertOk(sec.request())
        out = subprocess.run(["curl", "-sS", "--max-time", "5",
                              "http://127.0.0.1:%d/healthz" % h.port], capture_output=True)
        self.assertEqual(out.stdout, OK_BODY, out.stderr)
        out = curl_https(h.tls_port)
        self.assertEqual(out.stdout, OK_BODY, out.stderr)


if __name__ == "__main__":
    hh.main()
