# SPDX-License-Identifier: MIT
"""browser_support: what the browser tests share beyond herald_harness: Driver, headless Debian
chromium driven by npm playwright-core through js/browser_driver.js (real browser contexts, so
each page has its own socket pools and storage; DOM reads, keyboard input, reloads and
screenshots), and Proxy, a small TCP proxy that stands between a page and herald and can strip
the Upgrade header, hold SSE bodies back, cut every connection and refuse new ones.

Used by test_heraldjs.py (herald.js itself) and test_demos.py (the example pages)."""
import asyncio
import json
import os
import subprocess
import threading
import time

import herald_harness as hh

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "js", "browser_driver.js")


class Driver:
    """One headless chromium (node js/browser_driver.js, in a process group of its own) for a
    test class. call(op, **args) sends one request and returns its value (the ops are listed at
    the top of browser_driver.js); a failed op or no answer within timeout fails with the end of
    the pages' console."""

    def __init__(self):
        node, modules = hh.require_node_module("playwright-core")
        hh.require_executable(hh.CHROMIUM, "chromium")
        self.proc = subprocess.Popen([node, DRIVER, modules, hh.CHROMIUM], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.console = []
        threading.Thread(target=self._read_err, daemon=True).start()
        self.next_id = 0

    def _read_err(self):
        for line in self.proc.stderr:
            self.console.append(line.rstrip("\n"))

    def call(self, op, timeout=60.0, **kw):
        self.next_id += 1
        kw.update(id=self.next_id, op=op)
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        result = {}

        def read():
            line = self.proc.stdout.readline()
            result["line"] = line

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if "line" not in result or not result["line"]:
            raise AssertionError("the browser driver did not answer %s within %.0f s; console:\n%s"
                                 % (op, timeout, "\n".join(self.console[-40:])))
        answer = json.loads(result["line"])
        if not answer["ok"]:
            raise AssertionError("browser: %s failed: %s\nconsole:\n%s" %
                                 (op, answer["error"], "\n".join(self.console[-40:])))
        return answer["value"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=10)
                self.proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class Proxy:
    """TCP proxy on 127.0.0.1 (asyncio, its own thread). Options, changeable at any time (they
    apply to new connections): fail_sse answers /sse with that status itself, fail_lp /lp
    (a proxy in front of which only short polls get through); strip_upgrade
    drops Upgrade and makes Connection "close" (a proxy that does not know WebSocket: herald
    answers the plain GET 426); buffer_sse passes the head of every /sse response and holds its
    body until 1 MiB or its end (a buffering proxy). Either makes every request
    Connection: close, so each connection carries one request the proxy sees. cut() resets
    every connection; down()/up() stop and restart listening on the same port. `accepts` keeps
    the time.monotonic() of every connection accepted."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.strip_upgrade = False
        self.buffer_sse = False
        self.fail_sse = 0  # a status to answer /sse with, instead of herald
        self.fail_lp = 0  # the same for /lp
        self.accepts = []
        self.conns = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = None
        self.port = 0
        self.up()

    def _run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def up(self):
        async def start():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                     reuse_address=True, backlog=1024)
            return self.server.sockets[0].getsockname()[1]
        self.port = self._run(start())

    def down(self):
        async def stop():
            self.server.close()  # first: a connection accepted meanwhile would escape the cut
            for w in list(self.conns):
                w.transport.abort()
            self.conns.clear()
        self._run(stop())

    def cut(self):
        async def cut():
            for w in list(self.conns):
                w.transport.abort()
            self.conns.clear()
        self._run(cut())

    def close(self):
        async def settle():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.down()
            self._run(settle())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def rewrite(self, head):
        lines = head.decode("latin-1").split("\r\n")
        first, fields = lines[0], [ln for ln in lines[1:] if ln]
        is_sse = first.split(" ")[1].startswith("/sse") if " " in first else False
        if not (self.strip_upgrade or self.buffer_sse):
            return head, False
        out = []
        upgrade = any(ln.lower().startswith("upgrade:") for ln in fields)
        for ln in fields:
            name = ln.split(":", 1)[0].strip().lower()
            if name == "upgrade" and self.strip_upgrade:
                continue
            if name == "connection" and (self.strip_upgrade or not upgrade):
                continue
            out.append(ln)
        if self.strip_upgrade or not upgrade:
            out.append("Connection: close")
        text = "\r\n".join([first] + out) + "\r\n\r\n"
        return text.encode("latin-1"), is_sse and self.buffer_sse

    async def _handle(self, reader, writer):
        self.accepts.append(time.monotonic())
        self.conns.add(writer)
        up_w = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            fail = ((target.startswith(b"/sse") and self.fail_sse) or
                    (target.startswith(b"/lp") and self.fail_lp))
            if fail:
                body = b"proxy error"
                # With a CORS header, so the page may read the status (else fetch only fails).
                writer.write(b"HTTP/1.1 %d Proxy Says No\r\nContent-Type: text/plain\r\n"
                             b"Access-Control-Allow-Origin: *\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                 fail, len(body), body))
                await writer.drain()
                return
            head, hold = self.rewrite(head)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            self.conns.add(up_w)
            up_w.write(head)

            async def pipe(src, dst, hold):
                held = bytearray()
                try:
                    if hold:  # the response head goes through; the body is what is held
                        dst.write(await src.readuntil(b"\r\n\r\n"))
                    while True:
                        data = await src.read(65536)
                        if not data:
                            break
                        if hold:
                            held += data
                            if len(held) < (1 << 20):
                                continue
                            data, held = bytes(held), bytearray()
                        dst.write(data)
                        await dst.drain()
                    if held:
                        dst.write(bytes(held))
                    if dst.can_write_eof():
                        dst.write_eof()
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    pass

            await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, hold))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    self.conns.discard(w)
                    w.transport.abort()

