// SPDX-License-Identifier: MIT
// sse_client.js: the npm `eventsource` client (nobody here wrote it) for herald's SSE tests.
//
//   node sse_client.js URL COUNT [--header NAME:VALUE]... [--event TYPE]... [--timeout MS]
//
// Listens for "message" events, the named events given with --event, and "herald-gap". Prints
// one JSON line per happening, flushed at once so the test can act on it:
//   {"kind":"open"}
//   {"kind":"event","type":"message","id":"..","data":".."}
//   {"kind":"error","status":..,"message":".."}
// and exits 0 after COUNT events, or 2 when --timeout (default 20000 ms) passes first. The client
// reconnects by itself after the server closes the stream (with Last-Event-ID), as browsers do.
'use strict';
const EventSource = require('eventsource');

const args = process.argv.slice(2);
const url = args.shift();
const count = parseInt(args.shift(), 10);
const headers = {};
const types = ['message', 'herald-gap'];
let timeoutMs = 20000;
while (args.length) {
    const opt = args.shift();
    const val = args.shift();
    if (opt === '--header') {
        const i = val.indexOf(':');
        headers[val.slice(0, i)] = val.slice(i + 1);
    } else if (opt === '--event') {
        types.push(val);
    } else if (opt === '--timeout') {
        timeoutMs = parseInt(val, 10);
    } else {
        process.stderr.write('unknown option ' + opt + '\n');
        process.exit(64);
    }
}

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const es = new EventSource(url, {headers});
let seen = 0;
es.onopen = () => out({kind: 'open'});
es.onerror = (e) => out({kind: 'error', status: e.status || null, message: e.message || null});
for (const type of types) {
    es.addEventListener(type, (e) => {
        out({kind: 'event', type: e.type, id: e.lastEventId, data: e.data});
        if (++seen === count) {
            es.close();
            process.stdout.write('', () => process.exit(0));
        }
    });
}
setTimeout(() => {
    out({kind: 'timeout', seen});
    es.close();
    process.stdout.write('', () => process.exit(2));
}, timeoutMs);
