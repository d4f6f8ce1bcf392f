# SPDX-License-Identifier: MIT
"""What bench/h2_vs_h1.py and bench/h2_mem_total.py share: a self-signed certificate for a TLS
listener, and a herald started on loopback on a port it picks (conf from -o options only)."""
import os
import re
import subprocess
import sys
import tempfile
import time


def make_cert(directory):
    """A self-signed P-256 certificate and key in directory (as test_tls.py makes them):
    (certificate path, key path)."""
    crt, key = os.path.join(directory, "bench.crt"), os.path.join(directory, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def remove_cert(tls):
    """Removes make_cert's files and their directory."""
    for f in tls:
        os.unlink(f)
    os.rmdir(os.path.dirname(tls[0]))


def start_herald(herald, workers, tls, who, settle_s=0.3):
    """herald on 127.0.0.1 (port 0: herald picks and logs it), over TLS with tls = (certificate,
    key), or cleartext with None; settle_s after it listens. Returns (Popen, port); exits with
    herald's log, prefixed by who, if it does not start within 20 s."""
    log = tempfile.TemporaryFile("w+")
    listen = ["-o", "listen 127.0.0.1:0"]
    if tls:
        listen = ["-o", "listen 127.0.0.1:0 tls", "-o", "tls_certificate %s" % tls[0], "-o",
                  "tls_certificate_key %s" % tls[1]]
    p = subprocess.Popen([herald, "-c", "/dev/null"] + listen +
                         ["-o", "workers %d" % workers, "-o", "log_level info", "-o",
                          "max_connections 18000", "-o", "http2_max_streams 128"],
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log.seek(0)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read())
        if m:
            time.sleep(settle_s)
            return p, int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    log.seek(0)
    sys.exit("%s: herald did not start:\n%s" % (who, log.read()[-2000:]))


def loadavg():
    """The 1, 5 and 15 minute load averages, as strings."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]
