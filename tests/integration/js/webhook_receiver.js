// SPDX-License-Identifier: MIT
// webhook_receiver.js: a webhook receiver for herald's tests. Every delivery is verified with the
// npm `standardwebhooks` library (the specification's own; nobody here wrote it) against each
// secret given, recorded, and answered as the test said.
//
//   node webhook_receiver.js [--tls CERT KEY] SECRET [SECRET ...]
//
// Prints {"port": N} on its first line, then serves on 127.0.0.1:N:
//   POST /control   {"script": ["status:500", "drop", "hang", "slow:300", "ok", ...],
//                    "default": "ok", "fail_each": N}: how the next deliveries are answered,
//                    one entry each, then `default` (ok = 204; status:N = that status;
//                    retry:N:VALUE = that status with Retry-After: VALUE; drop =
//                    the connection is destroyed unanswered; reset = likewise with a TCP RST;
//                    hang = never answered; slow:MS = 204 after MS ms; trickle:N:MS = 200 with
//                    its head at once and a body of N bytes, one every MS ms (a slow body);
//                    close = 204 with Connection: close (node closes the connection after it);
//                    reply:STATUS:BODY = that status with that JSON body;
//                    auth = an authorize hook's backend: the answer follows the first channel
//                    of the question, by what its name contains: "deny" -> {"allow":false,
//                    "reason":"no entry for CHANNEL"}, "hang" -> never answered, "err" -> 500,
//                    "grant" -> {"allow":true,"sub":"hooked","info":{"via":"hook"},
//                    "channels":{"subscribe":[CHANNEL],"publish":[CHANNEL]}}, else
//                    {"allow":true}); with fail_each, the first N deliveries of each event id
//                    are answered 500 whatever the script says
//   POST /secrets   {"secrets": [SECRET, ...]}: verifies later deliveries with these too (each
//                    adds one boolean to `verified`, after those of the command line)
//   GET  /deliveries  every delivery so far: {id, timestamp, signature, verified: [one boolean
//                    per SECRET], error, body, at_ms, answer, path, conn}
//   anything else is a delivery
'use strict';
const http = require('http');
const https = require('https');
const fs = require('fs');
const { Webhook } = require('standardwebhooks');

const args = process.argv.slice(2);
let tls = null;
if (args[0] === '--tls') {
  tls = { cert: fs.readFileSync(args[1]), key: fs.readFileSync(args[2]) };
  args.splice(0, 3);
}
const hooks = args.map((s) => new Webhook(s));
const deliveries = [];
let script = [];
let dflt = 'ok';
let failEach = 0;
const seenIds = new Map();
let connSeq = 0;

function handle(req, res, body) {
  if (req.url === '/control' && req.method === 'POST') {
    const c = JSON.parse(body || '{}');
    script = c.script || [];
    dflt = c.default || 'ok';
    failEach = c.fail_each || 0;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
    return;
  }
  if (req.url === '/secrets' && req.method === 'POST') {
    for (const sec of JSON.parse(body || '{}').secrets || []) hooks.push(new Webhook(sec));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
    return;
  }
  if (req.url === '/deliveries' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(deliveries));
    return;
  }
  const headers = {
    'webhook-id': req.headers['webhook-id'],
    'webhook-timestamp': req.headers['webhook-timestamp'],
    'webhook-signature': req.headers['webhook-signature'],
  };
  const verified = [];
  let error = null;
  for (const wh of hooks) {
    try {
      wh.verify(body, headers);
      verified.push(true);
    } catch (e) {
      verified.push(false);
      error = String(e && e.message ? e.message : e);
    }
  }
  const seen = (seenIds.get(headers['webhook-id']) || 0) + 1;
  seenIds.set(headers['webhook-id'], seen);
  let answer = script.length ? script.shift() : dflt;
  if (seen <= failEach) answer = 'status:500';
  deliveries.push({
    id: headers['webhook-id'] || null,
    timestamp: headers['webhook-timestamp'] || null,
    signature: headers['webhook-signature'] || null,
    content_type: req.headers['content-type'] || null,
    verified: verified,
    error: error,
    body: body,
    at_ms: Date.now(),
    answer: answer,
    path: req.url,
    method: req.method,
    conn: req.socket.hdConn,
  });
  if (answer === 'auth') {
    let ch = '';
    try {
      ch = JSON.parse(body).data.channels[0] || '';
    } catch (e) {
      ch = '';
    }
    if (ch.includes('hang')) return;
    if (ch.includes('err')) answer = 'status:500';
    else if (ch.includes('deny'))
      answer = 'reply:200:' + JSON.stringify({ allow: false, reason: 'no entry for ' + ch });
    else if (ch.includes('grant'))
      answer = 'reply:200:' + JSON.stringify({
        allow: true, sub: 'hooked', info: { via: 'hook' },
        channels: { subscribe: [ch], publish: [ch] },
      });
    else answer = 'reply:200:{"allow":true}';
  }
  if (answer.startsWith('reply:')) {
    const rest = answer.slice(6);
    const colon = rest.indexOf(':');
    const st = parseInt(rest.slice(0, colon), 10);
    res.writeHead(st, { 'content-type': 'application/json' });
    res.end(rest.slice(colon + 1));
  } else if (answer === 'close') {
    res.writeHead(204, { connection: 'close' });
    res.end();
  } else if (answer === 'drop') {
    req.socket.destroy();
  } else if (answer === 'reset') {
    req.socket.resetAndDestroy();
  } else if (answer.startsWith('trickle:')) {
    const [n, ms] = answer.slice(8).split(':').map((x) => parseInt(x, 10));
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': n });
    res.flushHeaders();
    let sent = 0;
    const t = setInterval(() => {
      if (res.destroyed) {
        clearInterval(t);
      } else if (++sent < n) {
        res.write('x');
      } else {
        clearInterval(t);
        res.end('x');
      }
    }, ms);
    res.on('close', () => clearInterval(t));
  } else if (answer === 'hang') {
    // never answered
  } else if (answer.startsWith('slow:')) {
    setTimeout(() => { res.writeHead(204); res.end(); }, parseInt(answer.slice(5), 10));
  } else if (answer.startsWith('retry:')) {
    // retry:STATUS:VALUE: that status with Retry-After: VALUE (VALUE may hold colons: a date)
    const rest = answer.slice(6);
    const i = rest.indexOf(':');
    res.writeHead(parseInt(rest.slice(0, i), 10), { 'retry-after': rest.slice(i + 1) });
    res.end();
  } else if (answer.startsWith('status:')) {
    const st = parseInt(answer.slice(7), 10);
    res.writeHead(st, { 'content-type': 'text/plain' });
    res.end('answered ' + st + '\n');
  } else {
    res.writeHead(204);
    res.end();
  }
}

function onRequest(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')));
}

const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest);
server.keepAliveTimeout = 60000;
server.on(tls ? 'secureConnection' : 'connection', (sock) => { sock.hdConn = ++connSeq; });
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
