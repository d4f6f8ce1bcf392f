# SPDX-License-Identifier: MIT
"""The manual page herald(8) (docs/herald.8.in, configured into the build directory) against the
binary and its source: every option `herald --help` lists is documented and every documented
option exists, the signals main.c handles are the ones the page describes, and so are the exit
codes; the configured paths are filled in and the page renders without warnings.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_harness as hh  # noqa: E402

HERALD_BUILD = os.environ.get("HERALD_BUILD", "")


def man_source():
    with open(os.path.join(HERALD_BUILD, "herald.8")) as f:
        return f.read()


def section(text, name):
    """The troff source of section `name` (up to the next .SH)."""
    m = re.search(r"^\.SH %s\n(.*?)(?=^\.SH |\Z)" % re.escape(name), text, re.S | re.M)
    if not m:
        raise AssertionError("herald.8 has no section %s" % name)
    return m.group(1)


def man_options(text):
    """Options named at the start of each .TP entry of OPTIONS: {"-c", "--conf", ...}."""
    opts = set()
    entries = re.findall(r"^\.TP\n(.*)$", section(text, "OPTIONS"), re.M)
    for line in entries:
        opts.update(o.replace("\\-", "-") for o in re.findall(r"(?:\\-){1,2}[a-z]+", line))
    return opts


class ManPageTest(unittest.TestCase):
    def test_options_match_help(self):
        status, out, _ = hh.run_herald(["--help"])
        self.assertEqual(status, 0)
        helped = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", out.split("\n\n")[1]))
        documented = man_options(man_source())
        self.assertTrue(helped, out)
        self.assertEqual(documented, helped, "herald.8 OPTIONS vs --help")

    def test_options_exist(self):
        """Each documented option is accepted by the binary (usage errors exit 2)."""
        for opt in sorted(man_options(man_source())):
            args = {"-c": ["-c", "/nonexistent", "-t"], "--conf": ["--conf", "/nonexistent", "-t"],
                    "-o": ["-o", "workers 1", "-c", "/nonexistent", "-t"],
                    "--set": ["--set", "workers 1", "-c", "/nonexistent", "-t"]}.get(opt, [opt])
            status, _, err = hh.run_herald(args)
            self.assertNotEqual(status, 2, "%s: %s" % (opt, err))

    def test_signals_match_main(self):
        with open(os.path.join(hh.HERALD_SRC, "src", "main.c")) as f:
            m = re.search(r"int signums\[\] = \{([^}]*)\}", f.read())
        self.assertIsNotNone(m, "main.c: the signums table moved; update this test")
        handled = set(s.strip() for s in m.group(1).split(","))
        documented = set(re.findall(r"\bSIG[A-Z0-9]+", section(man_source(), "SIGNALS")))
        self.assertEqual(documented, handled, "herald.8 SIGNALS vs main.c")

    def test_exit_codes_match_main(self):
        with open(os.path.join(hh.HERALD_SRC, "src", "main.c")) as f:
            m = re.search(r"enum \{ (EXIT_OK = .*?)\};", f.read())
        self.assertIsNotNone(m, "main.c: the exit codes moved; update this test")
        codes = set(re.findall(r"= (\d+)", m.group(1)))
        documented = set(re.findall(r"^\.B (\d+)$", section(man_source(), "EXIT STATUS"), re.M))
        self.assertEqual(documented, codes, "herald.8 EXIT STATUS vs main.c")

    def test_configured(self):
        text = man_source()
        self.assertNotIn("@", re.sub(r"^\.\\\".*$", "", text, flags=re.M),
                         "an unconfigured @VARIABLE@ is left in herald.8")
        self.assertRegex(text, r"\.TH HERALD 8 .*herald \d+\.\d+\.\d+")

    def test_renders_cleanly(self):
        groff = shutil.which("groff")
        self.assertTrue(groff, "groff is not installed (scripts/deps.sh test installs groff-base)")
        p = subprocess.run([groff, "-man", "-ww", "-z", os.path.join(HERALD_BUILD, "herald.8")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")


if __name__ == "__main__":
    hh.main()
