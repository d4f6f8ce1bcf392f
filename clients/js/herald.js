// SPDX-License-Identifier: MIT
// herald.js: the browser client of herald (docs/client-js.md). An ES module with no
// dependencies, served by herald itself at GET /herald.js.
//
//   import { Herald } from "https://push.example.com/herald.js";
//   const h = new Herald("https://push.example.com", { token: () => fetchToken() });
//   h.subscribe("news", (m) => show(m.data));
//
// One Herald is one logical connection carrying any number of channel subscriptions over the
// best transport that works: WebSocket (/ws, the JSON protocol) -> SSE (/sse?channel=..) ->
// long poll (/lp/{channel}) -> short poll (/poll/{channel}). A transport that cannot work (an
// Upgrade stripped by a proxy, a proxy that buffers the event stream, a 4xx/5xx) is given up
// for the next one; the better ones are probed again later. Every channel keeps the id of the
// last message delivered and the position to resume from, and every transport resumes from it,
// so reconnects and fallbacks lose nothing and deliver nothing twice (history permitting; when
// the server says history was lost, the `gap` event says so).
//
// Inside: Herald (state, channels, reconnect schedule, fallback and probing, auth) drives one
// transport object at a time (WsTransport, SseTransport, PollTransport for both polls). A
// transport reports to Herald through four methods: _tOpen, _tMessage, _tGap, _tClose.

export const VERSION = "1.0.0";

const DEFAULTS = {
  transports: ["websocket", "sse", "longpoll", "poll"],
  token: null, // a string, or a function (reason) => string | Promise<string>
  ticket: null, // a function (reason) => single-use ticket (POST /auth/ticket), one per connect
  backoffBase: 500, // ms: the first reconnect waits random(0, base)
  backoffCap: 30000, // ms: the n-th waits random(0, min(cap, base * 2^n))
  connectTimeout: 10000, // ms: a WebSocket not open / subscribed, an SSE or poll without answer
  firstByteTimeout: 5000, // ms: an SSE stream that sends nothing (herald sends retry: at once)
  idleTimeout: 45000, // ms: silence after which a stream is dead (herald beats every 15 s)
  pingInterval: 25000, // ms: a /ws ping when nothing came for this long
  failuresBeforeFallback: 2, // failures to open, the server reachable, before the next transport
  probeInterval: 60000, // ms: on a fallback transport, how often a better one is tried again
  longpollTimeout: 25, // s: how long herald holds a long poll
  pollInterval: 3000, // ms: short poll period per channel
  hiddenTimeout: 0, // ms: disconnect after the page has been hidden this long; 0 = never
  typingInterval: 3000, // ms: typing() sends at most one notice per channel this often
  ackInterval: 100, // ms: ack() sends at most one ack per channel this often over /ws
  fetch: null, // a fetch() to use (tests); default globalThis.fetch
  WebSocket: null, // a WebSocket constructor to use; default globalThis.WebSocket
};

const TRANSPORTS = ["websocket", "sse", "longpoll", "poll"];

// ---- ids: "<epoch>-<seq>", seq decimal, increasing within an epoch ----

function splitId(id) {
  const i = id.lastIndexOf("-");
  return i < 0 ? ["", id] : [id.slice(0, i), id.slice(i + 1)];
}

function seqCmp(a, b) {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

// 1 when id comes after ref (or ref is null, or the epoch changed: a new history).
function isAfter(id, ref) {
  if (!ref) return true;
  const [ea, sa] = splitId(id);
  const [eb, sb] = splitId(ref);
  return ea !== eb || seqCmp(sa, sb) > 0;
}

function minId(ids) {
  let m = null;
  for (const id of ids) if (id && (!m || !isAfter(id, m))) m = id;
  return m;
}

function fullJitter(attempt, base, cap) {
  return Math.random() * Math.min(cap, base * Math.pow(2, Math.min(attempt, 30)));
}

function retryAfterMs(res) {
  const v = res && res.headers && res.headers.get("Retry-After");
  if (!v) return 0;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : 0;
}

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// A message object of the server (polls, /ws) as handed to the page.
function fromObject(o, transport) {
  let data = o.data;
  if (o.encoding === "base64") data = b64ToBytes(data);
  else if (typeof data !== "string") data = JSON.stringify(data);
  const m = { id: o.id, channel: o.channel, data, transport };
  if (o.content_type) m.contentType = o.content_type;
  if (o.encoding) m.encoding = o.encoding;
  if (o.publisher) m.publisher = o.publisher;
  return m;
}

// ---------------------------------------------------------------------------------------------

export class Herald {
  constructor(url, options = {}) {
    const base = new URL(url || "/", typeof location !== "undefined" ? location.href : undefined);
    this.url = base.href.replace(/\/+$/, "");
    this.options = Object.assign({}, DEFAULTS, options);
    for (const t of this.options.transports)
      if (!TRANSPORTS.includes(t)) throw new Error("herald: unknown transport " + t);
    if (!this.options.transports.length) throw new Error("herald: no transport");
    this._fetch = this.options.fetch || globalThis.fetch.bind(globalThis);
    this._WS = this.options.WebSocket || globalThis.WebSocket;
    this.state = "closed"; // connecting | open | closed
    this.transport = null; // the name of the current transport
    this._tIndex = 0; // into options.transports
    this._t = null; // the transport object
    this._channels = new Map(); // name -> {name, pos, seen, handlers:Set, json}
    this._listeners = new Map(); // event -> Set(fn)
    this._attempt = 0; // reconnects since the last open
    this._failures = 0; // failures to open this transport while the server was reachable
    this._timer = null; // the pending reconnect
    this._probeTimer = null;
    this._hiddenTimer = null;
    this._token = null;
    this._wanted = false; // connect() called, close() not
    this._paused = null; // "offline" | "hidden" while held back by the page
    this._gen = 0; // bumps on every connect, so late callbacks of old attempts do nothing
    this._installPageHooks();
  }

  // ---- public API ----

  // Starts connecting (subscribe() does it too). Returns this.
  connect() {
    this._wanted = true;
    if (!this._t && !this._timer && !this._paused && this.state !== "connecting") this._open("connect");
    return this;
  }

  // Stops for good: the transport closes, no reconnect; subscriptions are kept for connect().
  close() {
    this._wanted = false;
    this._stopTransport();
    this._clearTimers();
    this._setState("closed", { reason: "closed by the page" });
  }

  // Subscribes to channel; handler(message) gets each message of it. options.since resumes
  // after an id; options.json parses each payload as JSON; options.presence asks for the
  // channel's join and leave events (a channel with presence=on); options.ack: the page acks
  // what it processed (ack(), acked(); docs/chat.md). Returns {channel, unsubscribe()}.
  subscribe(channel, handler, options = {}) {
    let ch = this._channels.get(channel);
    if (!ch) {
      ch = { name: channel, pos: options.since || null, seen: options.since || null,
             handlers: new Set(), json: !!options.json, presence: !!options.presence,
             ack: !!options.ack, acked: options.ack ? options.since || null : null, ackSent: null };
      this._channels.set(channel, ch);
      if (this._t) this._t.add(ch);
    }
    if (handler) ch.handlers.add(handler);
    if (!this._wanted) this.connect();
    return { channel, unsubscribe: () => this.unsubscribe(channel, handler) };
  }

  // Removes handler (or every handler) of channel; the last one gone ends the subscription.
  unsubscribe(channel, handler) {
    const ch = this._channels.get(channel);
    if (!ch) return;
    if (handler) ch.handlers.delete(handler);
    else ch.handlers.clear();
    if (ch.handlers.size === 0) {
      this._channels.delete(channel);
      if (this._t) this._t.remove(ch);
    }
  }

  // The resume position of channel (the id to pass as since later), or null.
  position(channel) {
    const ch = this._channels.get(channel);
    return ch ? ch.pos : null;
  }

  // Acknowledged delivery (docs/chat.md): the page has processed channel up to id
  // (cumulative). Over /ws the server hears it (at most one ack per channel per ackInterval),
  // which sends "acked" receipts to publishers that asked; on any transport acked(channel)
  // moves to it. Persist acked(channel) and pass it as since when the page loads again: what
  // had arrived but was not processed comes again (at least once; ids tell duplicates).
  ack(channel, id) {
    const ch = this._channels.get(channel);
    if (!ch || !ch.ack || !id || !isAfter(id, ch.acked)) return;
    ch.acked = id;
    if (this._ackTimer) return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      if (this._t && this._t.name === "websocket") this._t.sendAcks();
    }, this.options.ackInterval);
  }

  // The last id acked on channel (subscribed with ack), or null.
  acked(channel) {
    const ch = this._channels.get(channel);
    return ch && ch.ack ? ch.acked : null;
  }

  // Publishes data (a string: text; a Uint8Array/ArrayBuffer/Blob: binary; anything else:
  // JSON) to channel. Over the open /ws connection when there is one (ws_client_publish),
  // else POST /pub/{channel} with the token. Resolves {channel, id}; rejects an Error whose
  // .code is herald's (forbidden, rate_limited, ...) and .status the HTTP status.
  async publish(channel, data, options = {}) {
    if (options.ephemeral) {
      // Live only, no id (docs/chat.md): herald takes these on /ws only.
      if (!(this._t && this._t.name === "websocket" && this._t.isOpen()))
        throw herror("ephemeral messages need the WebSocket transport", "not_websocket");
      return this._t.publish(channel, data, options);
    }
    if (this._t && this._t.name === "websocket" && this._t.isOpen() && !this._wsPublishOff) {
      try {
        return await this._t.publish(channel, data, options);
      } catch (e) {
        if (e.code !== "publish_disabled") throw e;
        this._wsPublishOff = true; // ws_client_publish off: publish over HTTP from now on
      }
    }
    const headers = {};
    let body = data;
    if (typeof data === "string") headers["Content-Type"] = options.type || "text/plain; charset=utf-8";
    else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data) ||
             (typeof Blob !== "undefined" && data instanceof Blob))
      headers["Content-Type"] = options.type || "application/octet-stream";
    else {
      body = JSON.stringify(data);
      headers["Content-Type"] = options.type || "application/json";
    }
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    const token = await this._getToken("publish");
    if (token) headers.Authorization = "Bearer " + token;
    const res = await this._fetch(this.url + "/pub/" + encodeURIComponent(channel),
                                  { method: "POST", headers, body, cache: "no-store" });
    const j = await res.json().catch(() => ({}));
    if (!res.ok) throw herror(j.error || "HTTP " + res.status, j.code, res.status, j);
    return { channel: j.channel, id: j.id };
  }

  // A page of channel's presence members over /ws: resolves {count, members, next}
  // (options.limit 1-1000, options.cursor = a previous answer's next); each member has at most
  // 10 of its connection ids in conns and their number in conn_count. Join and leave events
  // are never replayed: after a reconnect ("open"), ask again.
  presence(channel, options = {}) {
    if (!(this._t && this._t.name === "websocket" && this._t.isOpen()))
      return Promise.reject(herror("presence snapshots need the WebSocket transport", "not_websocket"));
    return this._t.request({ op: "presence", channel, limit: options.limit, cursor: options.cursor });
  }

  // A page of one member's connection ids (member: its sub, or an anonymous member's conn)
  // over /ws: resolves {member, conn_count, conns, next} (member null when it is not one;
  // options.limit 1-1000, options.cursor = a previous answer's next).
  presenceConns(channel, member, options = {}) {
    if (!(this._t && this._t.name === "websocket" && this._t.isOpen()))
      return Promise.reject(herror("presence snapshots need the WebSocket transport", "not_websocket"));
    return this._t.request({ op: "presence", channel, member, limit: options.limit,
                             cursor: options.cursor });
  }

  // Tells channel "I am typing": an ephemeral {"typing":true}, at most one per
  // typingInterval; receivers get a "typing" event. Resolves false when throttled or when
  // not on WebSocket (typing is best effort), true when sent.
  async typing(channel) {
    const now = Date.now();
    this._typed = this._typed || new Map();
    if (now - (this._typed.get(channel) || 0) < this.options.typingInterval) return false;
    if (!(this._t && this._t.name === "websocket" && this._t.isOpen())) return false;
    this._typed.set(channel, now);
    await this.publish(channel, { typing: true }, { ephemeral: true });
    return true;
  }

  // An ephemeral message, a join or a leave from a transport (no id: nothing to resume).
  _tLive(t, kind, o) {
    if (t !== this._t || !this._channels.has(o.channel)) return;
    if (kind === "ephemeral") {
      const m = fromObject(o, t.name);
      delete m.id;
      this._emit("ephemeral", m);
      if (o.data && typeof o.data === "object" && o.data.typing === true)
        this._emit("typing", { channel: o.channel, publisher: o.publisher || null });
      return;
    }
    this._emit(kind, { channel: o.channel, member: o.member || null, conn: o.conn, transport: t.name });
  }

  // on(event, fn): "message", "gap", "state", "connecting", "open", "closed", "fallback",
  // "probe", "backoff", "refresh", "disconnected", "join", "leave", "ephemeral", "typing",
  // "receipt", "error".
  // Returns a function that removes fn.
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const s = this._listeners.get(event);
    if (s) s.delete(fn);
  }

  // ---- events ----

  _emit(event, arg) {
    const s = this._listeners.get(event);
    if (!s) return;
    for (const fn of [...s]) {
      try {
        fn(arg);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
  }

  _setState(state, extra = {}) {
    const prev = this.state;
    this.state = state;
    const ev = Object.assign({ state, previous: prev, transport: this.transport }, extra);
    this._emit(state, ev);
    this._emit("state", ev);
  }

  // ---- tokens ----

  async _getToken(reason) {
    const t = this.options.token;
    if (!t) return null;
    if (typeof t === "string") return t;
    if (reason === "publish" && this._token) return this._token;
    this._token = await t(reason);
    return this._token;
  }

  // The credential of one connection or request: a fresh single-use ticket when a ticket
  // provider is set (each stream, socket and poll spends one), else the token.
  async _cred(reason) {
    if (this.options.ticket) return { param: "ticket", value: await this.options.ticket(reason) };
    const token = await this._getToken(reason);
    return token ? { param: "token", value: token } : null;
  }

  // The server asked for a new token (SSE herald-refresh, /ws refresh_needed) or the old one
  // was refused as expired: the transport gets a fresh one (in place on /ws).
  async _refresh(t, reason) {
    if (t !== this._t) return;
    if (this.options.ticket) {
      t.end({ opened: true, refresh: true, reason: "refresh: reconnecting with a new ticket" });
      return;
    }
    let token;
    try {
      token = await this._getToken(reason);
    } catch (e) {
      this._emit("error", { error: "token provider failed: " + e, code: "token_provider" });
      return;
    }
    if (t !== this._t) return;
    this._emit("refresh", { transport: t.name, reason });
    t.refresh(token);
  }

  // ---- connecting, reconnecting, falling back ----

  async _open(why) {
    this._clearTimer();
    if (!this._wanted || this._paused) return;
    const gen = ++this._gen;
    const name = this.options.transports[this._tIndex];
    this.transport = name;
    this._setState("connecting", { reason: why, attempt: this._attempt });
    let cred = null;
    try {
      cred = await this._cred(why === "refresh" ? "refresh" : why === "connect" ? "connect" : "reconnect");
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit("error", { error: "token provider failed: " + e, code: "token_provider" });
      this._schedule(0);
      return;
    }
    if (gen !== this._gen || !this._wanted || this._paused) return;
    const T = name === "websocket" ? WsTransport : name === "sse" ? SseTransport : PollTransport;
    this._t = new T(this, name, cred);
    this._t.start();
  }

  _stopTransport() {
    this._gen++;
    const t = this._t;
    this._t = null;
    if (t) t.stop();
    clearTimeout(this._probeTimer);
    this._probeTimer = null;
  }

  _clearTimer() {
    clearTimeout(this._timer);
    this._timer = null;
  }

  _clearTimers() {
    this._clearTimer();
    clearTimeout(this._probeTimer);
    this._probeTimer = null;
  }

  _schedule(hintMs) {
    this._clearTimer();
    const o = this.options;
    const delay = Math.max(hintMs || 0, fullJitter(this._attempt, o.backoffBase, o.backoffCap));
    this._emit("backoff", { delay, attempt: this._attempt, transport: this.transport });
    this._attempt++;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open("reconnect");
    }, delay);
    return delay;
  }

  _tOpen(t) {
    if (t !== this._t) return;
    this._attempt = 0;
    this._failures = 0;
    this._setState("open");
    this._armProbe();
  }

  _tMessage(t, ch, m) {
    if (t !== this._t) return;
    if (!isAfter(m.id, ch.seen)) return; // already delivered (a replay overlapping what we had)
    ch.seen = m.id;
    if (isAfter(m.id, ch.pos)) ch.pos = m.id;
    if (!this._channels.has(ch.name)) return;
    if (ch.json && typeof m.data === "string") {
      try {
        m.data = JSON.parse(m.data);
      } catch (e) {
        this._emit("error", { error: "not JSON: " + e, code: "bad_json", channel: ch.name, id: m.id });
        return;
      }
    }
    for (const fn of [...ch.handlers]) {
      try {
        fn(m);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
    this._emit("message", m);
  }

  _tGap(t, channel, reason) {
    if (t !== this._t) return;
    this._emit("gap", { channel, reason, transport: t.name });
  }

  // A transport ended. info: {opened, reason, hintMs (server's retry:/Retry-After),
  // refresh (reconnect at once with a new token), status, code, blocked (nothing to do with
  // the network: the transport itself cannot work)}.
  _tClose(t, info) {
    if (t !== this._t) return;
    this._stopTransport();
    if (!this._wanted) return;
    if (info.stop) {
      // The operator disconnected us (POST /admin/disconnect): herald asks clients not to come
      // back by themselves. connect() starts again.
      this._wanted = false;
      this._clearTimers();
      this._setState("closed", Object.assign({ transport: t.name }, info));
      this._emit("disconnected", { transport: t.name, code: info.code, reason: info.reason });
      return;
    }
    this._setState("closed", Object.assign({ transport: t.name }, info));
    if (info.code === "token_revoked")
      this._emit("error", { code: "token_revoked", error: info.reason || "token revoked" });
    if (this._paused) return;
    if (info.refresh && info.opened) {
      this._open("refresh"); // the server asked: at once, with a new token
      return;
    }
    if (info.opened) {
      this._failures = 0;
      this._schedule(info.hintMs);
      return;
    }
    if (info.status === 429 || info.status === 503 || info.auth) {
      this._schedule(info.hintMs); // the server is there and busy, or refuses us: not a transport problem
      return;
    }
    const gen = this._gen;
    this._reachable().then((up) => {
      if (gen !== this._gen || this._t || !this._wanted || this._paused) return;
      if (up) this._failures++;
      const last = this._tIndex >= this.options.transports.length - 1;
      if (up && !last && (info.blocked || this._failures >= this.options.failuresBeforeFallback)) {
        const from = this.options.transports[this._tIndex];
        this._tIndex++;
        this._failures = 0;
        this._attempt = 0;
        this.transport = this.options.transports[this._tIndex];
        this._emit("fallback", { from, to: this.transport, reason: info.reason });
        this._open("fallback");
      } else {
        this._schedule(info.hintMs);
      }
    });
  }

  // Whether the server answers HTTP at all (an opaque no-cors GET of /healthz), to tell a
  // transport that cannot work from a network that does not.
  async _reachable() {
    if (typeof navigator !== "undefined" && navigator.onLine === false) return false;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.options.connectTimeout);
    try {
      await this._fetch(this.url + "/healthz", { mode: "no-cors", cache: "no-store", signal: ctl.signal });
      return true;
    } catch (e) {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- probing back up ----

  _armProbe() {
    clearTimeout(this._probeTimer);
    this._probeTimer = null;
    if (this._tIndex === 0 || !this.options.probeInterval) return;
    const ms = this.options.probeInterval * (0.75 + Math.random() * 0.5);
    this._probeTimer = setTimeout(() => this._probe(), ms);
  }

  async _probe() {
    this._probeTimer = null;
    const t = this._t;
    if (!t || this._tIndex === 0) return;
    for (let i = 0; i < this._tIndex; i++) {
      const name = this.options.transports[i];
      const ok = await this._probeOne(name);
      if (t !== this._t) return;
      this._emit("probe", { transport: name, ok });
      if (ok) {
        const from = this.transport;
        this._stopTransport();
        this._tIndex = i;
        this._failures = 0;
        this._attempt = 0;
        this.transport = name;
        this._setState("closed", { transport: from, reason: "upgrading to " + name });
        this._open("probe");
        return;
      }
    }
    this._armProbe();
  }

  // Whether transport name works now: a WebSocket that opens, an SSE stream whose first bytes
  // arrive within firstByteTimeout. Poll transports always work when the server answers.
  async _probeOne(name) {
    const o = this.options;
    if (name === "websocket") {
      return new Promise((resolve) => {
        let ws;
        try {
          ws = new this._WS(wsUrl(this.url, null));
        } catch (e) {
          resolve(false);
          return;
        }
        const done = (ok) => {
          clearTimeout(timer);
          ws.onopen = ws.onerror = ws.onclose = null;
          try { ws.close(); } catch (e) { /* closing anyway */ }
          resolve(ok);
        };
        const timer = setTimeout(() => done(false), o.connectTimeout);
        ws.onopen = () => done(true);
        ws.onerror = ws.onclose = () => done(false);
      });
    }
    if (name === "sse") {
      const chans = [...this._channels.keys()].slice(0, 1);
      if (!chans.length) return false;
      const cred = await this._cred("probe").catch(() => null);
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), o.firstByteTimeout);
      try {
        const res = await this._fetch(sseUrl(this.url, chans, cred, null), { cache: "no-store", signal: ctl.signal });
        if (res.status !== 200 || !res.body) return false;
        const r = res.body.getReader();
        const { value } = await r.read();
        return !!(value && value.length);
      } catch (e) {
        return false;
      } finally {
        clearTimeout(timer);
        ctl.abort();
      }
    }
    return this._reachable();
  }

  // ---- the page: online/offline, visibility ----

  _installPageHooks() {
    if (typeof window === "undefined" || !window.addEventListener) return;
    this._onOffline = () => {
      this._paused = "offline";
      this._stopTransport();
      this._clearTimer();
      this._setState("closed", { reason: "offline" });
    };
    this._onOnline = () => {
      if (this._paused !== "offline") return;
      this._paused = null;
      this._resumeSoon("online");
    };
    this._onVisibility = () => {
      const hidden = document.visibilityState === "hidden";
      clearTimeout(this._hiddenTimer);
      this._hiddenTimer = null;
      if (hidden && this.options.hiddenTimeout > 0) {
        this._hiddenTimer = setTimeout(() => {
          if (this._paused) return;
          this._paused = "hidden";
          this._stopTransport();
          this._clearTimer();
          this._setState("closed", { reason: "page hidden" });
        }, this.options.hiddenTimeout);
      } else if (!hidden) {
        if (this._paused === "hidden") {
          this._paused = null;
          this._resumeSoon("visible");
        } else if (this._timer) {
          // Waiting out a backoff while the user was away: the user is back, try now.
          this._clearTimer();
          this._open("visible");
        }
      }
    };
    window.addEventListener("offline", this._onOffline);
    window.addEventListener("online", this._onOnline);
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", this._onVisibility);
  }

  // Back online / visible: every page of a site comes back at the same moment, so spread.
  _resumeSoon(why) {
    if (!this._wanted || this._t) return;
    this._clearTimer();
    this._attempt = 0;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open(why);
    }, Math.random() * this.options.backoffBase);
  }

  // Removes the page hooks as well (close() keeps them for a later connect()).
  destroy() {
    this.close();
    if (typeof window !== "undefined" && window.removeEventListener) {
      window.removeEventListener("offline", this._onOffline);
      window.removeEventListener("online", this._onOnline);
      if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this._onVisibility);
    }
    clearTimeout(this._hiddenTimer);
  }
}

function herror(text, code, status, body) {
  const e = new Error(text);
  e.code = code || null;
  e.status = status || 0;
  e.body = body;
  return e;
}

// cred: {param: "token" | "ticket", value} or null.
function wsUrl(base, cred) {
  const u = new URL(base + "/ws");
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (cred && cred.value) u.searchParams.set(cred.param, cred.value);
  return u.href;
}

// format=json: each event's data is the message object of the polls (publisher stamp, content
// type and all), not the payload's bytes alone.
function sseUrl(base, channels, cred, lastId, presence) {
  const q = new URLSearchParams();
  for (const c of channels) q.append("channel", c);
  q.set("format", "json");
  if (presence) q.set("presence", "1");
  if (cred && cred.value) q.set(cred.param, cred.value);
  if (lastId) q.set("last_event_id", lastId);
  return base + "/sse?" + q;
}

// ---- WebSocket: /ws, the JSON protocol (docs/protocol-websocket.md) ----------------------------

class WsTransport {
  constructor(client, name, cred) {
    this.c = client;
    this.name = name;
    this.cred = cred;
    this.ws = null;
    this.opened = false;
    this.pending = new Set(); // channels whose subscribed has not come yet
    this.refs = new Map(); // ref -> {resolve, reject} of publishes
    this.nextRef = 1;
    this.timer = null;
    this.lastRx = 0;
  }

  isOpen() {
    return this.opened && this.ws && this.ws.readyState === 1;
  }

  start() {
    const o = this.c.options;
    try {
      this.ws = new this.c._WS(wsUrl(this.c.url, this.cred));
    } catch (e) {
      this.end({ opened: false, reason: "WebSocket failed: " + e, blocked: true });
      return;
    }
    this.timer = setTimeout(() => this.end({ opened: this.opened, reason: "no answer within connectTimeout" }),
                            o.connectTimeout);
    this.ws.onopen = () => {
      this.lastRx = Date.now();
      for (const ch of this.c._channels.values()) this.sendSubscribe(ch);
      if (!this.pending.size) this.becomeOpen();
    };
    this.ws.onmessage = (ev) => this.onMessage(ev);
    this.ws.onclose = (ev) => this.onClose(ev);
    this.ws.onerror = () => {}; // onclose follows with the code
  }

  becomeOpen() {
    if (this.opened) return;
    this.opened = true;
    this.armPing();
    this.c._tOpen(this);
  }

  armPing() {
    clearTimeout(this.timer);
    const o = this.c.options;
    this.timer = setTimeout(() => {
      if (Date.now() - this.lastRx >= o.pingInterval + o.connectTimeout) {
        this.end({ opened: true, reason: "no answer to ping" });
        return;
      }
      this.send({ op: "ping" });
      this.armPing();
    }, Math.min(o.pingInterval, o.connectTimeout));
  }

  send(obj) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(obj));
  }

  sendSubscribe(ch) {
    const req = { op: "subscribe", channel: ch.name, ref: "s:" + ch.name };
    if (ch.pos) req.since = ch.pos;
    if (ch.presence) req.presence = true;
    if (ch.ack) {
      req.ack = true;
      ch.ackSent = null; // a new subscription: its acks start over
    }
    this.pending.add(ch.name);
    this.send(req);
  }

  add(ch) {
    if (this.ws && this.ws.readyState === 1) this.sendSubscribe(ch);
  }

  remove(ch) {
    this.pending.delete(ch.name);
    this.send({ op: "unsubscribe", channel: ch.name });
  }

  // The acks of the channels that moved since the last sent (live subscriptions only: a
  // pending one sends its ack once subscribed).
  sendAcks() {
    for (const ch of this.c._channels.values()) {
      if (!ch.ack || !ch.acked || ch.acked === ch.ackSent || this.pending.has(ch.name)) continue;
      ch.ackSent = ch.acked;
      this.send({ op: "ack", channel: ch.name, id: ch.acked });
    }
  }

  refresh(token) {
    this.cred = { param: "token", value: token };
    this.send({ op: "refresh", token, ref: "refresh" });
  }

  // Sends req with a ref; resolves the reply (rejects an error reply).
  request(req) {
    return new Promise((resolve, reject) => {
      const ref = this.nextRef++;
      this.refs.set(ref, { resolve, reject, raw: true });
      this.send(Object.assign({}, req, { ref }));
    });
  }

  publish(channel, data, options) {
    return new Promise((resolve, reject) => {
      const ref = this.nextRef++;
      const req = { op: "publish", channel, ref };
      if (options.ephemeral) req.ephemeral = true;
      if (options.receipt) req.receipt = true;
      if (typeof data === "string" || !(data instanceof ArrayBuffer || ArrayBuffer.isView(data))) req.data = data;
      else {
        reject(herror("binary publish needs HTTP: close the WebSocket transport or use fetch", "bad_data"));
        return;
      }
      if (options.type) req.type = options.type;
      if (options.idempotencyKey) req.idempotency_key = options.idempotencyKey;
      this.refs.set(ref, { resolve, reject });
      this.send(req);
    });
  }

  onMessage(ev) {
    this.lastRx = Date.now();
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    const c = this.c;
    switch (m.type) {
    case "message": {
      const ch = c._channels.get(m.channel);
      if (ch) c._tMessage(this, ch, fromObject(m, this.name));
      break;
    }
    case "gap":
      c._tGap(this, m.channel, m.reason);
      break;
    case "subscribed": {
      const ch = c._channels.get(m.channel);
      if (ch && m.last_id && isAfter(m.last_id, ch.pos)) ch.pos = m.last_id;
      this.pending.delete(m.channel);
      if (ch && ch.ack && ch.acked !== ch.ackSent) this.sendAcks(); // acked while it was pending
      if (!this.opened && !this.pending.size) this.becomeOpen();
      break;
    }
    case "refresh_needed":
      c._refresh(this, "refresh");
      break;
    case "published": {
      const p = this.refs.get(m.ref);
      if (p) {
        this.refs.delete(m.ref);
        p.resolve(m.ephemeral ? { channel: m.channel, ephemeral: true } : { channel: m.channel, id: m.id });
      }
      break;
    }
    case "presence": {
      const p = this.refs.get(m.ref);
      if (p) {
        this.refs.delete(m.ref);
        p.resolve("member" in m
          ? { channel: m.channel, member: m.member, conn_count: m.conn_count, conns: m.conns || [],
              next: m.next || null }
          : { channel: m.channel, count: m.count, members: m.members || [], next: m.next || null });
      }
      break;
    }
    case "join":
    case "leave":
    case "ephemeral":
      c._tLive(this, m.type, m);
      break;
    case "receipt": // of a publish with {receipt: true}: delivered, then acked by each member
      c._emit("receipt", { channel: m.channel, id: m.id, status: m.status, member: m.member || null,
                           conn: m.conn || null });
      break;
    case "presence_events": // joins and leaves of one pass, batched by the server: in order
      for (const e of m.events || []) c._tLive(this, e.type, Object.assign({ channel: m.channel }, e));
      break;
    case "unsubscribed":
      if (m.code) c._emit("error", { channel: m.channel, code: m.code, error: m.error });
      break;
    case "error": {
      const p = this.refs.get(m.ref);
      if (p) {
        this.refs.delete(m.ref);
        p.reject(herror(m.error, m.code, 0, m));
      } else {
        if (typeof m.ref === "string" && m.ref.startsWith("s:")) {
          this.pending.delete(m.ref.slice(2));
          if (!this.opened && !this.pending.size) this.becomeOpen();
        }
        c._emit("error", { channel: m.channel, code: m.code, error: m.error });
      }
      break;
    }
    default:
      break; // pong, refreshed, authenticated: nothing to do
    }
  }

  onClose(ev) {
    const info = { opened: this.opened, code: ev.code, reason: ev.reason || "WebSocket closed (" + ev.code + ")" };
    if (ev.code === 4001) info.refresh = true; // the token ran out: reconnect now with a new one
    if (ev.code === 4401 || ev.code === 4003) info.auth = true;
    if (ev.code === 4002) Object.assign(info, { auth: true, code: "token_revoked" }); // back off, a new token
    if (ev.code === 4009) Object.assign(info, { stop: true, code: "disconnected" });
    this.end(info);
  }

  end(info) {
    if (this.ended) return;
    this.stop();
    this.c._tClose(this, info);
  }

  stop() {
    this.ended = true;
    clearTimeout(this.timer);
    for (const p of this.refs.values()) p.reject(herror("connection closed", "closed"));
    this.refs.clear();
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
      try {
        this.ws.close(1000);
      } catch (e) { /* already closed */ }
    }
  }
}

// ---- SSE: GET /sse?channel=a&channel=b&format=json, read with fetch (status, headers, first
// byte) ----------------------------------------------------------------------------------------

class SseTransport {
  constructor(client, name, cred) {
    this.c = client;
    this.name = name;
    this.cred = cred; // spent by the first stream when it is a ticket
    this.ctl = null;
    this.opened = false;
    this.timer = null;
    this.hintMs = 0;
    this.restartQueued = false;
  }

  start() {
    const chans = [...this.c._channels.values()];
    this.streamChans = chans;
    if (!chans.length) {
      // Nothing to stream: open, idle, until a channel is added.
      this.becomeOpen();
      return;
    }
    const o = this.c.options;
    const ctl = (this.ctl = new AbortController());
    this.arm(o.connectTimeout, "no answer within connectTimeout");
    const spent = this.cred && this.cred.param === "ticket" && this.cred.spent;
    (spent ? this.c._cred("reconnect") : Promise.resolve(this.cred))
      .then((cred) => {
        if (ctl !== this.ctl) return null;
        this.cred = cred;
        if (cred) cred.spent = true;
        // The positions are read now, after any wait for a ticket.
        const lastId = minId(chans.map((ch) => ch.pos));
        // herald asks every channel of a stream with ?presence=1 to have presence: ask only
        // when every subscription wants it.
        const presence = chans.every((ch) => ch.presence);
        return this.c._fetch(sseUrl(this.c.url, chans.map((ch) => ch.name), cred, lastId, presence),
                             { cache: "no-store", signal: ctl.signal, headers: { Accept: "text/event-stream" } });
      })
      .then((res) => res && this.onResponse(res, ctl))
      .catch((e) => {
        if (ctl === this.ctl) this.end({ opened: this.opened, reason: this.why || "SSE failed: " + e });
      });
  }

  arm(ms, why) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.why = why;
      this.end({ opened: this.opened, reason: why, blocked: !this.opened && why.startsWith("nothing") });
    }, ms);
  }

  async onResponse(res, ctl) {
    if (ctl !== this.ctl) return;
    if (res.status !== 200 || !res.body) {
      const j = await res.json().catch(() => ({}));
      if (ctl !== this.ctl) return;
      const info = { opened: false, status: res.status, code: j.code, reason: j.error || "HTTP " + res.status,
                     hintMs: retryAfterMs(res) };
      if (res.status === 401 || res.status === 403) info.auth = true;
      if (res.status === 409) info.stop = true; // disconnected by the operator
      this.end(info);
      return;
    }
    const o = this.c.options;
    this.arm(o.firstByteTimeout, "nothing received within firstByteTimeout (a buffering proxy?)");
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    this.buf = "";
    this.ev = { data: [], event: "", id: null, base64: false };
    for (;;) {
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        if (ctl === this.ctl) this.end({ opened: this.opened, reason: this.why || "SSE stream broke: " + e });
        return;
      }
      if (ctl !== this.ctl) return;
      if (r.done) {
        this.end({ opened: this.opened, reason: "SSE stream ended", hintMs: this.hintMs });
        return;
      }
      if (!this.opened) this.becomeOpen();
      this.arm(o.idleTimeout, "SSE stream silent for idleTimeout");
      this.feed(dec.decode(r.value, { stream: true }));
      if (this.ended || ctl !== this.ctl) return;
    }
  }

  becomeOpen() {
    if (this.opened) return;
    this.opened = true;
    this.c._tOpen(this);
  }

  feed(text) {
    this.buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      if (m[0] === "\r" && m.index === this.buf.length - 1) break; // a CR that may start a CRLF
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
      if (this.ended) return;
    }
  }

  line(line) {
    const ev = this.ev;
    if (line === "") {
      if (ev.data.length) this.dispatch(ev);
      this.ev = { data: [], event: "", id: null, base64: false };
      return;
    }
    if (line[0] === ":") {
      if (line === ": base64") ev.base64 = true;
      return;
    }
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") ev.data.push(value);
    else if (field === "event") ev.event = value;
    else if (field === "id") ev.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.hintMs = Number(value);
  }

  dispatch(ev) {
    const c = this.c;
    const data = ev.data.join("\n");
    if (ev.event === "herald-gap") {
      let g = {};
      try {
        g = JSON.parse(data);
      } catch (e) { /* keep the notice */ }
      c._tGap(this, g.channel, g.reason);
      return;
    }
    if (ev.event === "herald-refresh") {
      c._refresh(this, "refresh");
      return;
    }
    if (ev.event === "herald-expired") {
      this.end({ opened: true, refresh: true, reason: "token expired" });
      return;
    }
    if (ev.event === "herald-join" || ev.event === "herald-leave" || ev.event === "herald-ephemeral") {
      let o;
      try {
        o = JSON.parse(data);
      } catch (e) {
        return;
      }
      c._tLive(this, ev.event.slice(7), o);
      return;
    }
    if (ev.event === "herald-presence") { // joins and leaves of one pass, batched
      let o;
      try {
        o = JSON.parse(data);
      } catch (e) {
        return;
      }
      for (const e of o.events || []) c._tLive(this, e.type, Object.assign({ channel: o.channel }, e));
      return;
    }
    if (ev.event === "herald-revoked" || ev.event === "herald-disconnected") {
      let j = {};
      try {
        j = JSON.parse(data);
      } catch (e) { /* the event is enough */ }
      const revoked = ev.event === "herald-revoked";
      this.end({ opened: true, auth: revoked, stop: !revoked, code: revoked ? "token_revoked" : "disconnected",
                 reason: j.error || ev.event });
      return;
    }
    if (!ev.id) return;
    // The JSON form (format=json): no event: line, data is the message object; a plain event
    // (a herald that does not know the form) names its channel, or is of the only one.
    let o = null;
    if (!ev.event) {
      try {
        o = JSON.parse(data);
      } catch (e) { /* a plain event */ }
      if (!o || typeof o !== "object" || o.id !== ev.id || typeof o.channel !== "string") o = null;
    }
    const name = o ? o.channel : ev.event;
    const ch = c._channels.get(name) || (!o && this.streamChans.length === 1 ? this.streamChans[0] : null);
    if (!ch) return;
    // The stream's ids resume every channel of it (docs/protocol.md): each moves to this id.
    for (const sc of this.streamChans) if (sc !== ch && isAfter(ev.id, sc.pos)) sc.pos = ev.id;
    let m;
    if (o) {
      m = fromObject(o, this.name);
    } else {
      m = { id: ev.id, channel: ch.name, data: ev.base64 ? b64ToBytes(data) : data, transport: this.name };
      if (ev.base64) m.encoding = "base64";
    }
    c._tMessage(this, ch, m);
  }

  // A new channel list: a new stream from the positions (nothing lost; what overlaps is
  // dropped by the ids). Several changes in one task make one restart.
  restart() {
    if (this.restartQueued || this.ended) return;
    this.restartQueued = true;
    queueMicrotask(() => {
      this.restartQueued = false;
      if (this.ended) return;
      this.abortStream();
      this.start();
    });
  }

  add() {
    this.restart();
  }

  remove() {
    this.restart();
  }

  refresh(token) {
    this.cred = { param: "token", value: token };
    this.restart();
  }

  abortStream() {
    clearTimeout(this.timer);
    const ctl = this.ctl;
    this.ctl = null;
    if (ctl) ctl.abort();
  }

  end(info) {
    if (this.ended) return;
    this.stop();
    // The stream's retry: holds for any reconnect after it, however the stream ended.
    if (!info.hintMs && this.hintMs) info.hintMs = this.hintMs;
    this.c._tClose(this, info);
  }

  stop() {
    this.ended = true;
    this.abortStream();
  }
}

// ---- polls: GET /lp/{channel} (held) or /poll/{channel} (every pollInterval), per channel -----

class PollTransport {
  constructor(client, name, cred) {
    this.c = client;
    this.name = name;
    this.cred = cred; // a ticket is spent by the first request; each further one gets its own
    this.long = name === "longpoll";
    this.loops = new Map(); // channel name -> {ch, ctl, timer}
    this.opened = false;
    this.firstDone = 0;
  }

  start() {
    const chans = [...this.c._channels.values()];
    if (!chans.length) this.becomeOpen();
    for (const ch of chans) this.add(ch);
  }

  becomeOpen() {
    if (this.opened) return;
    this.opened = true;
    this.c._tOpen(this);
  }

  add(ch) {
    if (this.ended || this.loops.has(ch.name)) return;
    const loop = { ch, ctl: null, timer: null, first: true };
    this.loops.set(ch.name, loop);
    this.poll(loop);
  }

  remove(ch) {
    const loop = this.loops.get(ch.name);
    if (!loop) return;
    this.loops.delete(ch.name);
    clearTimeout(loop.timer);
    if (loop.ctl) loop.ctl.abort();
  }

  refresh(token) {
    this.cred = { param: "token", value: token }; // the next request carries it; a held one runs on
  }

  // The credential of the next request: the token, or a fresh ticket.
  async credential() {
    const cred = this.cred;
    if (!cred || cred.param !== "ticket") return cred;
    if (!cred.spent) {
      cred.spent = true;
      return cred;
    }
    return this.c._cred("reconnect");
  }

  url(loop, cred) {
    const ch = loop.ch;
    const o = this.c.options;
    const q = new URLSearchParams();
    if (ch.pos) q.set("since", ch.pos);
    // The first long poll answers at once (timeout=0): it proves the path works and, without
    // a position, tells us where the channel is.
    if (this.long) q.set("timeout", loop.first ? "0" : String(o.longpollTimeout));
    // A held long poll also takes the live-only events: joins and leaves when asked (the rule
    // must have presence=on), ephemeral messages always, as SSE has them; each answers it.
    if (this.long && ch.presence) q.set("presence", "1");
    if (this.long) q.set("ephemeral", "1");
    if (cred && cred.value) q.set(cred.param, cred.value);
    return this.c.url + (this.long ? "/lp/" : "/poll/") + encodeURIComponent(ch.name) + "?" + q;
  }

  async poll(loop) {
    const o = this.c.options;
    const ctl = (loop.ctl = new AbortController());
    const limit = this.long && !loop.first ? o.longpollTimeout * 1000 + o.connectTimeout : o.connectTimeout;
    const timer = setTimeout(() => ctl.abort(), limit);
    let res, j;
    try {
      const cred = await this.credential();
      res = await this.c._fetch(this.url(loop, cred), { cache: "no-store", signal: ctl.signal });
      j = await res.json();
    } catch (e) {
      clearTimeout(timer);
      if (this.loops.get(loop.ch.name) !== loop) return;
      this.end({ opened: this.opened, reason: "poll failed: " + (ctl.signal.aborted ? "no answer in time" : e) });
      return;
    }
    clearTimeout(timer);
    if (this.loops.get(loop.ch.name) !== loop) return;
    if (res.status !== 200) {
      const info = { opened: this.opened, status: res.status, code: j.code, reason: j.error || "HTTP " + res.status,
                     hintMs: retryAfterMs(res) };
      if (res.status === 401) {
        if (j.code === "token_expired" && this.opened) info.refresh = true; // a held poll outlived its token
        info.auth = true;
      } else if (res.status === 403) info.auth = true;
      if (res.status === 409) info.stop = true; // disconnected by the operator
      this.end(info);
      return;
    }
    const ch = loop.ch;
    // A short poll without since answers the latest message, from before we subscribed: it
    // only tells the position.
    const positionOnly = !ch.pos && !this.long;
    if (j.gap && ch.pos) this.c._tGap(this, ch.name, "history lost or expired; some messages may be missing");
    if (!positionOnly)
      for (const o2 of j.messages || []) {
        if (this.loops.get(ch.name) !== loop) return;
        this.c._tMessage(this, ch, fromObject(o2, this.name));
      }
    if (this.loops.get(ch.name) !== loop) return;
    for (const e of j.events || []) { // joins, leaves, ephemeral messages met while it was held
      this.c._tLive(this, e.type, Object.assign({ channel: ch.name }, e));
      if (this.loops.get(ch.name) !== loop) return;
    }
    if (j.next && isAfter(j.next, ch.pos)) ch.pos = j.next;
    const wasFirst = loop.first;
    loop.first = false;
    if (wasFirst && !this.opened) this.becomeOpen();
    const more = (j.messages || []).length > 0;
    const wait = this.long ? 0 : more ? 50 : o.pollInterval;
    loop.timer = setTimeout(() => {
      if (this.loops.get(ch.name) === loop) this.poll(loop);
    }, wait);
  }

  end(info) {
    if (this.ended) return;
    this.stop();
    this.c._tClose(this, info);
  }

  stop() {
    this.ended = true;
    for (const loop of this.loops.values()) {
      clearTimeout(loop.timer);
      if (loop.ctl) loop.ctl.abort();
    }
    this.loops.clear();
  }
}

export default Herald;
