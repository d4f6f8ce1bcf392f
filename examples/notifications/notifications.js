// SPDX-License-Identifier: MIT
// notifications.js: the notification feed demo's page script (examples/notifications/README.md).
//
// The user's feed is the channel user:<id>, read through herald.js (WebSocket, or SSE, long poll
// or short poll where a proxy or a firewall stops the better transports) with a single-use ticket
// from the backend for each connection. What the page has shown is kept in localStorage with
// the id of the last notification, so a reload shows the same feed and resumes after that id:
// herald replays what was published meanwhile (from the channel's history), nothing twice.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const KEEP = 50; // notifications kept in localStorage (the newest)

function status(text) {
  $("status").textContent = text;
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

const user = params.get("user");
if (!user) {
  status("not signed in");
  $("login").hidden = false;
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams(params);
    q.set("user", $("user").value.trim().toLowerCase());
    location.search = "?" + q;
  });
} else {
  showFeed(user);
}

function showFeed(user) {
  const channel = "user:" + user;
  const key = "herald-notifications:" + user;
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(key)) || {};
  } catch (e) {
    saved = {};
  }
  const items = Array.isArray(saved.items) ? saved.items : [];

  $("who").textContent = user;
  $("box").hidden = false;

  function render(n) {
    const li = document.createElement("li");
    li.dataset.id = n.id;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = n.title;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = n.body ? " " + n.body : "";
    const at = document.createElement("time");
    if (n.at) {
      at.dateTime = new Date(n.at * 1000).toISOString();
      at.textContent = new Date(n.at * 1000).toLocaleTimeString();
    }
    li.append(at, title, body);
    $("feed").prepend(li); // newest first
    const count = $("feed").children.length;
    $("count").textContent = count + (count === 1 ? " notification" : " notifications");
  }

  for (const n of items) render(n);
  if (!items.length) $("count").textContent = "No notifications yet.";

  const h = new Herald(heraldUrl, {
    ticket: async () => {
      const r = await fetch("ticket?" + new URLSearchParams({ user }));
      if (!r.ok) throw new Error("the backend refused a ticket: " + (await r.text()));
      return r.text();
    },
  });
  window.feed = h; // for the console

  h.subscribe(channel, (m) => {
    const d = m.data && typeof m.data === "object" ? m.data : { title: String(m.data) };
    const n = { id: m.id, title: String(d.title || "Notification"), body: String(d.body || ""),
                at: d.at || 0 };
    items.push(n);
    // The feed and its position move together: what is shown is exactly what was received up
    // to pos, so a reload resuming after pos neither loses nor repeats one.
    localStorage.setItem(key, JSON.stringify({ pos: m.id, items: items.slice(-KEEP) }));
    render(n);
  }, { json: true, since: saved.pos || undefined });

  h.on("state", (e) => {
    if (e.state === "open") status("live (" + e.transport + ")");
    else if (e.state === "connecting") status("connecting\u2026");
    else status("offline");
  });
  h.on("backoff", (e) => status("reconnecting in " + Math.ceil(e.delay / 1000) + " s"));
  h.on("fallback", (e) => { $("notice").textContent = e.from + " is blocked here: using " + e.to; });
  h.on("gap", () => {
    $("notice").textContent = "Some notifications may be missing (older than the feed's history).";
  });
  h.on("error", (e) => status("error: " + (e.error || e.code)));

  $("send").addEventListener("click", async () => {
    const r = await fetch("notify?" + new URLSearchParams({ user }), {
      method: "POST", body: JSON.stringify({ title: "Hello", body: "sent at " + new Date().toLocaleTimeString() }),
    });
    if (!r.ok) $("notice").textContent = "not sent: " + (await r.text());
  });
}
