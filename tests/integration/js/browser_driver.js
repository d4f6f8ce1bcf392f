// SPDX-License-Identifier: MIT
// browser_driver.js: headless Debian chromium driven by npm playwright-core, for Python tests
// (test_heraldjs.py). One JSON request per line on stdin, one JSON answer per line on stdout:
//
//   {"id":1,"op":"page","url":"http://...","ready":EXPR?,"ignoreHTTPSErrors":BOOL?}
//                                                   -> {"id":1,"ok":true,"value":PAGE}  (a new
//                                                      browser context each: its own socket pools
//                                                      and storage)
//   {"id":11,"op":"tab","page":PAGE,"url":..,"ready":EXPR?} -> a new PAGE in PAGE's context (another
//                                                      tab of the same browser: it shares the
//                                                      context's socket pools); closepage of the
//                                                      first closes them all
//   {"id":2,"op":"eval","page":PAGE,"expr":"...","arg":..}
//                                                   -> the value of (expr)(arg), awaited
//   {"id":3,"op":"offline","page":PAGE,"value":true} -> the context goes offline / online
//   {"id":4,"op":"closepage","page":PAGE}          -> closes the page and its context (a tab
//                                                      closed: its connections end)
//   {"id":5,"op":"close"}                           -> closes the browser and exits
//   {"id":6,"op":"goto","page":PAGE,"url":..,"ready":EXPR?} -> the page navigates to url
//   {"id":7,"op":"reload","page":PAGE,"ready":EXPR?} -> the page reloads
//   {"id":8,"op":"type","page":PAGE,"selector":..,"text":..,"delay":MS?}
//                                                   -> keys pressed one by one into the element
//                                                      (keydown, input, keyup: as a person types)
//   {"id":9,"op":"press","page":PAGE,"selector":..,"key":"Enter"} -> one key
//   {"id":10,"op":"screenshot","page":PAGE,"path":..} -> a PNG of the whole page at path
//
// "ready" is a JavaScript expression the page must make true once loaded (waited for up to
// 15 s); without it, herald.js test pages set window.heraldReady (or window.heraldError). A page
// that loads nothing to wait for (about:blank) says "true".
// The pages' console lines and errors go to stderr, prefixed with the page number.
// usage: node browser_driver.js NODE_MODULES CHROMIUM
"use strict";
const path = require("path");
const readline = require("readline");

const [nodeModules, chromiumPath] = process.argv.slice(2);
const { chromium } = require(path.join(nodeModules, "playwright-core"));

// Waits until the page says it is ready: the expression ready, or a herald.js test page's
// window.heraldReady (its window.heraldError fails).
async function waitReady(page, ready) {
  if (ready) {
    await page.waitForFunction(ready, null, { timeout: 15000 });
    return;
  }
  await page.waitForFunction(() => window.heraldReady === true || window.heraldError, null,
                             { timeout: 15000 });
  const err = await page.evaluate(() => window.heraldError || null);
  if (err) throw new Error("the page could not load herald.js: " + err);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--disable-background-networking", "--disable-component-update"],
  });
  const pages = [];
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    try {
      let value = null;
      if (req.op === "page" || req.op === "tab") {
        const ctx = req.op === "tab" ? pages[req.page].ctx : await browser.newContext(
          req.ignoreHTTPSErrors ? { ignoreHTTPSErrors: true } : {});
        const page = await ctx.newPage();
        const n = pages.length;
        page.on("console", (m) => process.stderr.write(`[page ${n}] ${m.type()}: ${m.text()}\n`));
        page.on("pageerror", (e) => process.stderr.write(`[page ${n}] error: ${e}\n`));
        pages.push({ ctx, page });
        await page.goto(req.url);
        await waitReady(page, req.ready);
        value = n;
      } else if (req.op === "eval") {
        const { page } = pages[req.page];
        value = await page.evaluate(
          ([expr, arg]) => (0, eval)("(" + expr + ")")(arg),
          [req.expr, req.arg === undefined ? null : req.arg]);
      } else if (req.op === "closepage") {
        const p = pages[req.page];
        if (p && p.ctx) await p.ctx.close();
        pages[req.page] = { ctx: null, page: null };
      } else if (req.op === "goto") {
        const { page } = pages[req.page];
        await page.goto(req.url);
        await waitReady(page, req.ready);
      } else if (req.op === "reload") {
        const { page } = pages[req.page];
        await page.reload();
        await waitReady(page, req.ready);
      } else if (req.op === "type") {
        await pages[req.page].page.locator(req.selector)
          .pressSequentially(req.text, { delay: req.delay || 0 });
      } else if (req.op === "press") {
        await pages[req.page].page.locator(req.selector).press(req.key);
      } else if (req.op === "screenshot") {
        await pages[req.page].page.screenshot({ path: req.path, fullPage: true });
      } else if (req.op === "offline") {
        await pages[req.page].ctx.setOffline(!!req.value);
      } else if (req.op === "close") {
        out({ id: req.id, ok: true, value: null });
        break;
      } else {
        throw new Error("unknown op " + req.op);
      }
      out({ id: req.id, ok: true, value: value === undefined ? null : value });
    } catch (e) {
      out({ id: req.id, ok: false, error: String(e && e.stack || e) });
    }
  }
  await browser.close();
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write("browser_driver: " + (e && e.stack || e) + "\n");
  process.exit(1);
});
