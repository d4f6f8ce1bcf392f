# SPDX-License-Identifier: MIT
"""What the abuse tests share: the harness, and memory sampling of the server under attack."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import herald_harness as hh  # noqa: E402,F401

# Under AddressSanitizer freed memory sits in a quarantine (256 MB by default) and would read as
# growth: keep it small so that RSS measures what herald holds.
_asan = os.environ.get("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
os.environ["ASAN_OPTIONS"] = _asan + ":quarantine_size_mb=8:malloc_context_size=5"

MB = 1024 * 1024


class RssSampler:
    """Samples the server's RSS while an attack runs; .peak is the highest seen."""

    def __init__(self, herald):
        self.herald = herald
        self.base = herald.rss_bytes()
        self.peak = self.base

    def sample(self):
        rss = self.herald.rss_bytes()
        self.peak = max(self.peak, rss)
        return rss

    def watch(self, seconds, interval=0.1):
        """Samples for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample()
            time.sleep(interval)

    def growth(self):
        return self.peak - self.base


class AbuseTestCase(hh.HeraldTestCase):
    def assertRssBounded(self, sampler, limit_bytes, what):
        sampler.sample()
        self.assertLess(sampler.growth(), limit_bytes,
                        "%s: RSS grew by %.1f MB (bound %.1f MB)" %
                        (what, sampler.growth() / MB, limit_bytes / MB))
