// SPDX-License-Identifier: MIT
// chat.js: the chat demo's page script (examples/chat/README.md). Everything live goes through
// herald.js, loaded from herald itself; the backend (server.py) only serves this page and mints
// tokens. One herald connection carries two channels per room:
//
//   room:NAME           the messages ({"text": ..}), presence (join/leave, snapshots) and
//                       typing notices (ephemeral, never stored)
//   receipts:room:NAME  read receipts ({"read": "<id of the last message seen>"})
//
// herald stamps every client publish with the sender's verified identity (publisher.sub and the
// name from the token's info), so the page shows who wrote a message, who is typing and who read
// what without trusting the client that sent it (docs/chat.md). Both channels have presence=on
// (herald.conf): an SSE stream asks presence of all its channels or none, and the page wants the
// room's join and leave events on SSE too (where WebSocket is blocked).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TYPING_SHOWN_MS = 4000; // herald.js sends a typing notice at most every 3 s while typing
const RECEIPT_EVERY_MS = 1000; // at most one read receipt a second ("read up to X")

function status(text) {
  $("status").textContent = text;
}

// Message ids are "<epoch>-<seq>"; within an epoch seq grows (docs/protocol.md). Returns
// whether a is at or after b, or null when they are of different epochs (not comparable).
function atOrAfter(a, b) {
  const i = a.lastIndexOf("-"), j = b.lastIndexOf("-");
  if (a.slice(0, i) !== b.slice(0, j)) return null;
  return BigInt(a.slice(i + 1)) >= BigInt(b.slice(j + 1));
}

function slug(name) {
  return name.toLowerCase().normalize("NFKD").replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^-+|-+$/g, "").slice(0, 32);
}

function roomLink(room) {
  const q = new URLSearchParams(params);
  q.set("room", room);
  return "?" + q;
}

let config;
try {
  config = await fetch("config").then((r) => r.json());
} catch (e) {
  status("the demo's backend did not answer: " + e);
  throw e;
}
const heraldUrl = (params.get("herald") || config.herald).replace(/\/+$/, "");
let Herald;
try {
  ({ Herald } = await import(heraldUrl + "/herald.js"));
} catch (e) {
  status("herald.js did not load from " + heraldUrl + ": is herald running?");
  throw e;
}

const name = (params.get("name") || params.get("user") || "").trim();
const me = params.get("user") || slug(name);
const room = params.get("room") || "general";
if (!me) {
  status("not signed in");
  $("login").hidden = false;
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = $("name").value.trim();
    const q = new URLSearchParams(params);
    q.set("user", slug(n) || "guest" + Math.floor(Math.random() * 1e4));
    q.set("name", n);
    q.set("room", slug($("room").value) || "general");
    location.search = "?" + q;
  });
} else {
  join();
}

function join() {
  const roomCh = "room:" + room;
  const rcptCh = "receipts:room:" + room;
  const names = new Map(); // sub -> display name, from tokens' info (presence, publisher)
  const members = new Set(); // subs present in the room
  const typers = new Map(); // sub -> timer clearing the indicator
  const readUpTo = new Map(); // sub -> the last message id that user has read
  let lastSeen = null, lastSent = null, sentAt = 0, receiptTimer = null;
  let changes = null; // [sub, present] of joins and leaves while a snapshot is on its way

  document.title = "#" + room + " - herald chat";
  $("title").textContent = "#" + room;
  $("chat").hidden = false;
  for (const r of new Set(["general", "random", room])) {
    const a = document.createElement("a");
    a.href = roomLink(r);
    a.textContent = "#" + r;
    if (r === room) a.className = "current";
    const li = document.createElement("li");
    li.append(a);
    $("rooms").append(li);
  }

  // Every transport, in herald.js's order: WebSocket, then SSE (its JSON form: each message
  // with its publisher stamp; presence and typing notices in, typing notices not out, messages
  // and receipts published over HTTP with the token), then polls (no presence, no typing).
  const h = new Herald(heraldUrl, {
    token: async () => {
      const r = await fetch("token?" + new URLSearchParams({ user: me, name: name || me }));
      if (!r.ok) throw new Error("the backend refused a token: " + (await r.text()));
      return r.text();
    },
  });
  window.chat = h; // for the console

  const nameOf = (sub) => names.get(sub) || sub;
  const learn = (who) => {
    if (who && who.sub) names.set(who.sub, (who.info && who.info.name) || who.sub);
  };

  // ---- presence: a snapshot at each (re)connect, then join and leave events ----

  function renderMembers() {
    const ul = $("members");
    ul.replaceChildren();
    if (h.transport !== "websocket" && h.transport !== "sse") {
      // The list is built over /ws and SSE; a long poll misses what comes between two polls.
      const li = document.createElement("li");
      li.className = "note";
      li.textContent = "shown over WebSocket and SSE only";
      ul.append(li);
      return;
    }
    for (const sub of [...members].sort((a, b) => nameOf(a).localeCompare(nameOf(b)))) {
      const li = document.createElement("li");
      li.dataset.sub = sub;
      li.textContent = nameOf(sub) + (sub === me ? " (you)" : "");
      ul.append(li);
    }
  }

  // The members now: over /ws herald answers a snapshot; on SSE the backend asks herald for it
  // (GET /presence/{channel} is for backends); polls have no presence.
  async function snapshot() {
    const found = new Set();
    changes = [];
    try {
      if (h.transport === "websocket") {
        let cursor;
        do {
          const page = await h.presence(roomCh, { limit: 100, cursor });
          for (const m of page.members) {
            learn(m);
            found.add(m.sub);
          }
          cursor = page.next;
        } while (cursor);
      } else if (h.transport === "sse") {
        const r = await fetch("members?" + new URLSearchParams({ room }));
        if (!r.ok) throw new Error(await r.text());
        for (const m of (await r.json()).members) {
          learn(m);
          found.add(m.sub);
        }
      } else {
        throw new Error("no presence on " + h.transport);
      }
    } catch (e) {
      changes = null;
      renderMembers(); // polls: says so
      return;
    }
    members.clear();
    for (const sub of found) members.add(sub);
    for (const [sub, present] of changes) present ? members.add(sub) : members.delete(sub);
    changes = null;
    renderMembers();
  }

  h.on("join", (e) => {
    if (e.channel !== roomCh || !e.member) return;
    learn(e.member);
    members.add(e.member.sub);
    if (changes) changes.push([e.member.sub, true]);
    renderMembers();
  });
  h.on("leave", (e) => {
    if (e.channel !== roomCh || !e.member) return;
    members.delete(e.member.sub);
    if (changes) changes.push([e.member.sub, false]);
    stopTyping(e.member.sub);
    renderMembers();
  });

  // ---- typing: a notice while typing, shown by the others for a few seconds ----

  function renderTyping() {
    const who = [...typers.keys()].map(nameOf);
    $("typing").textContent = who.length === 0 ? "" :
      who.length === 1 ? who[0] + " is typing\u2026" : who.join(" and ") + " are typing\u2026";
  }

  function stopTyping(sub) {
    if (!typers.has(sub)) return;
    clearTimeout(typers.get(sub));
    typers.delete(sub);
    renderTyping();
  }

  h.on("typing", (e) => {
    if (e.channel !== roomCh || !e.publisher || e.publisher.sub === me) return;
    learn(e.publisher);
    clearTimeout(typers.get(e.publisher.sub));
    typers.set(e.publisher.sub, setTimeout(() => stopTyping(e.publisher.sub), TYPING_SHOWN_MS));
    renderTyping();
  });
  $("text").addEventListener("input", () => {
    if ($("text").value) h.typing(roomCh).catch(() => {}); // best effort, throttled by herald.js
  });

  // ---- messages ----

  function onMessage(m) {
    const d = m.data;
    if (!d || typeof d.text !== "string" || !m.publisher) return;
    learn(m.publisher);
    const mine = m.publisher.sub === me;
    const li = document.createElement("li");
    li.className = mine ? "msg mine" : "msg";
    li.dataset.id = m.id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = mine ? "You" : nameOf(m.publisher.sub);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = d.text;
    li.append(who, text);
    if (mine) {
      const tick = document.createElement("span");
      tick.className = "tick";
      li.append(tick);
    }
    $("messages").append(li);
    li.scrollIntoView({ block: "end" });
    if (mine) renderTicks();
    else {
      stopTyping(m.publisher.sub);
      sawMessage(m.id);
    }
  }

  $("compose").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    $("text").value = "";
    try {
      await h.publish(roomCh, { text });
    } catch (e) {
      status("not sent: " + e.message);
      $("text").value = text;
    }
  });

  // ---- read receipts: "read up to X", at most once a second, while the page is seen ----

  function sawMessage(id) {
    if (!lastSeen || atOrAfter(id, lastSeen) !== false) lastSeen = id;
    flushReceipt();
  }

  function flushReceipt() {
    if (!lastSeen || lastSeen === lastSent || receiptTimer) return;
    if (document.visibilityState !== "visible") return; // sent when the page is shown again
    const wait = sentAt + RECEIPT_EVERY_MS - Date.now();
    if (wait > 0) {
      receiptTimer = setTimeout(() => {
        receiptTimer = null;
        flushReceipt();
      }, wait);
      return;
    }
    const id = lastSeen;
    lastSent = id;
    sentAt = Date.now();
    h.publish(rcptCh, { read: id }).catch(() => {
      lastSent = null; // sent again with the next message or when the page is shown
    });
  }
  document.addEventListener("visibilitychange", flushReceipt);

  function onReceipt(m) {
    const sub = m.publisher && m.publisher.sub;
    const id = m.data && m.data.read;
    if (!sub || sub === me || typeof id !== "string") return;
    learn(m.publisher);
    const prev = readUpTo.get(sub);
    if (!prev || atOrAfter(id, prev) !== false) readUpTo.set(sub, id);
    renderTicks();
  }

  // One tick: herald has the message (it came back with its id); two: someone read it.
  function renderTicks() {
    for (const li of $("messages").querySelectorAll("li.mine")) {
      const readers = [...readUpTo].filter(([, upTo]) => atOrAfter(upTo, li.dataset.id))
        .map(([sub]) => nameOf(sub));
      const tick = li.querySelector(".tick");
      tick.textContent = readers.length ? "\u2713\u2713 read by " + readers.join(", ") : "\u2713";
      tick.classList.toggle("read", readers.length > 0);
    }
  }

  // ---- the connection ----

  h.on("state", (e) => {
    if (e.state === "open") status("online (" + e.transport + ")");
    else if (e.state === "connecting") status("connecting\u2026");
    else status("offline");
  });
  h.on("backoff", (e) => status("reconnecting in " + Math.ceil(e.delay / 1000) + " s"));
  h.on("open", snapshot);
  h.on("error", (e) => status("error: " + (e.error || e.code)));
  h.subscribe(roomCh, onMessage, { json: true, presence: true });
  h.subscribe(rcptCh, onReceipt, { json: true, presence: true });
  $("text").focus();
}
