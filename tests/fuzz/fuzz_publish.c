/* SPDX-License-Identifier: MIT */
/*
 * fuzz_publish.c: libFuzzer harness for what a publisher can make subscribers read. Fuzzed
 * payloads and content types enter through every publish entry point of an embedded node
 * (tests/support/embedded.h, with herald's publish, poll, SSE and WebSocket routes, the hub and
 * the embedded broker) while a subscriber of every kind listens on the channel, and everything
 * each subscriber reads goes through wire_check.h: every SSE event and every WebSocket text
 * frame must be UTF-8, every JSON envelope a JSON object whose content_type passes
 * hd_content_type_valid.
 *
 * Input: byte 0 holds flags, the rest is CT, a 0x00 byte, then BODY (no 0x00: all of it is CT).
 *   bits 0-1  the entry point:
 *             0  POST /pub/fz, Content-Type: CT (CR and LF become spaces), body BODY
 *             1  POST /pub (batch), Content-Type: CT, body BODY as written (JSON from the fuzzer)
 *             2  POST /pub with [{"channel":"fz","data":BODY,"type":CT}] built here
 *             3  the /ws publish {"op":"publish","channel":"fz","data":BODY,"type":CT}
 *   bit 2     (2, 3) bytes >= 0x80 of CT and BODY written as \u00XX escapes, else as they are
 *   bit 3     (2, 3) BODY is written as the JSON value itself, not as a string
 *   bit 4     no Content-Type header / "type" member
 *   bit 5     (3) an ephemeral publish ("ephemeral":true): live only, an event on every stream
 * The subscribers, all live before the publish: GET /sse/fz, GET /sse?channel=fz&channel=fy,
 * GET /sse/fz?format=json (each event's data a message object, wire_check.h),
 * /ws/fz with herald.v1 (envelopes), /ws/fz (payloads as they are), /ws subscribed to fz. When
 * a publish to fz is accepted (200, or "published"), each of them must have received a message.
 * Then every connection closes and the loop runs until all are freed and the broker has
 * answered everything, so nothing but the channels' history survives one input.
 */
#define _GNU_SOURCE
#include "herald/api.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/transport.h"

#include "embedded.h"
#include "wire_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hd_embedded_t node;
static int is_started;
static hd_router_t *router;

#define CHECK(cond) HD_EMB_CHECK(cond)

/* One client connection: what subscribers read goes through their wire check; a publisher's
 * HTTP response is kept. */
typedef struct peer_s {
    int fd; /* -1: not open */
    hd_embedded_buf_t rx;
    wire_check_t wire;
} peer_t;

enum {
    P_SSE,
    P_SSE_NAMED,
    P_SSE_JSON,
    P_WS_V1,
    P_WS_RAW,
    P_WS_JSON,
    P_WS_PUB,
    P_HTTP_PUB,
    P_COUNT
};

static peer_t peers[P_COUNT];
static size_t n_read; /* bytes all clients have read so far */

static void feed_wire(void *arg, const char *data, size_t len)
{
    if (data)
        wire_check_feed(arg, data, len);
    else
        wire_check_eof(arg);
}

/* After every pass of the loop: every open client reads what it was sent. */
static void read_all(hd_embedded_t *e, void *arg)
{
    (void)e;
    (void)arg;
    for (int i = 0; i < P_COUNT; i++) {
        if (peers[i].fd >= 0 && !peers[i].rx.is_eof) {
            ssize_t n = hd_embedded_read(peers[i].fd, &peers[i].rx);
            n_read += n > 0 ? (size_t)n : 0;
        }
    }
}

/*
 * Runs the loop (every client reading) until cond holds or 10 s have passed: by the clock, as
 * the broker is a thread of its own and the machine may be busy. The caller checks cond.
 */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uint64_t until_ = uv_hrtime() + 10000000000ull;                                            \
        for (unsigned i_ = 1; !(cond) && uv_hrtime() < until_; i_++) {                             \
            hd_embedded_pump(&node, 1);                                                            \
            if (i_ % 64 == 0)                                                                      \
                usleep(50);                                                                        \
        }                                                                                          \
    } while (0)

/* Runs the loop until no client receives anything for three passes. */
static void settle(void)
{
    for (int i = 0, quiet = 0; i < 10000 && quiet < 3; i++) {
        size_t before = n_read;
        hd_embedded_pump(&node, 1);
        quiet = n_read != before ? 0 : quiet + 1;
    }
}

static void send_all(peer_t *p, const void *data, size_t len)
{
    hd_embedded_send_all(&node, p->fd, data, len, &p->rx);
}

/* kind 0: the response is kept in p->rx; else what comes is checked as that kind of stream. */
static void open_peer(peer_t *p, int kind, const char *who)
{
    memset(p, 0, sizeof(*p));
    p->fd = hd_embedded_connect(&node, NULL);
    if (kind) {
        wire_check_init(&p->wire, kind, who);
        p->rx = (hd_embedded_buf_t){.is_dropping = 1, .feed = feed_wire, .feed_arg = &p->wire};
    }
}

static void close_peer(peer_t *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    wire_check_dispose(&p->wire);
    hd_embedded_buf_free(&p->rx);
}

static void ws_handshake(peer_t *p, const char *path, int v1)
{
    char hs[512];
    int n = snprintf(hs, sizeof(hs),
                     "GET %s HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "%s\r\n",
                     path, v1 ? "Sec-WebSocket-Protocol: herald.v1\r\n" : "");
    send_all(p, hs, (size_t)n);
}

static void http_get(peer_t *p, const char *path)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: f\r\n\r\n", path);
    send_all(p, req, (size_t)n);
}

/* A masked text frame (zero mask key: the payload goes as it is). */
static void ws_send_text(peer_t *p, const char *data, size_t len)
{
    uint8_t h[14];
    size_t n = 0;
    h[n++] = 0x81;
    if (len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (i * 8));
    }
    memset(h + n, 0, 4);
    n += 4;
    send_all(p, h, n);
    send_all(p, data, len);
}

/* ---- building a JSON publish from CT and BODY ---- */

typedef struct out_s {
    char buf[64 * 1024];
    size_t len;
} out_t;

static void out_add(out_t *o, const void *data, size_t len)
{
    if (len == 0)
        return; /* data may be NULL */
    CHECK(o->len + len <= sizeof(o->buf));
    memcpy(o->buf + o->len, data, len);
    o->len += len;
}

static void out_str(out_t *o, const char *s)
{
    out_add(o, s, strlen(s));
}

/* A JSON string of bytes: quote, backslash and controls escaped; bytes >= 0x80 as \u00XX when
 * high is set (always valid JSON), else as they are (valid only when they are UTF-8). */
static void out_json_string(out_t *o, const uint8_t *s, size_t len, int high)
{
    out_add(o, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\' || s[i] < 0x20 || (high && s[i] >= 0x80)) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
            out_add(o, esc, 6);
        } else {
            out_add(o, s + i, 1);
        }
    }
    out_add(o, "\"", 1);
}

static void out_fields(out_t *o, uint8_t flags, const uint8_t *ct, size_t ct_len,
                       const uint8_t *body, size_t body_len)
{
    out_str(o, "\"channel\":\"fz\",\"data\":");
    if (flags & 8)
        out_add(o, body, body_len);
    else
        out_json_string(o, body, body_len, flags & 4);
    if (!(flags & 16)) {
        out_str(o, ",\"type\":");
        out_json_string(o, ct, ct_len, flags & 4);
    }
}

static out_t out;

/* POST path on a new connection (closed by the server after its answer); returns the status. */
static int http_publish(const char *path, uint8_t flags, const uint8_t *ct, size_t ct_len,
                        const void *body, size_t body_len)
{
    peer_t *p = &peers[P_HTTP_PUB];
    open_peer(p, 0, "publisher");
    char head[512];
    int n =
        snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: f\r\nConnection: close\r\n", path);
    send_all(p, head, (size_t)n);
    if (!(flags & 16)) {
        char line[256 + 16];
        size_t k = 0;
        memcpy(line, "Content-Type: ", 14);
        k = 14;
        for (size_t i = 0; i < ct_len && i < 256; i++)
            line[k++] = (ct[i] == '\r' || ct[i] == '\n') ? ' ' : (char)ct[i];
        line[k++] = '\r';
        line[k++] = '\n';
        send_all(p, line, k);
    }
    n = snprintf(head, sizeof(head), "Content-Length: %zu\r\n\r\n", body_len);
    send_all(p, head, (size_t)n);
    send_all(p, body, body_len);
    RUN_UNTIL(p->rx.is_eof);
    CHECK(p->rx.is_eof);
    int status = 0;
    if (p->rx.len >= 12 && memcmp(p->rx.data, "HTTP/1.1 ", 9) == 0)
        status = atoi(p->rx.data + 9);
    close_peer(p);
    return status;
}

/* The /ws publish; returns 1 when the server answered "published". */
static int ws_publish(uint8_t flags, const uint8_t *ct, size_t ct_len, const uint8_t *body,
                      size_t body_len)
{
    peer_t *p = &peers[P_WS_PUB];
    out.len = 0;
    out_str(&out, "{\"op\":\"publish\",");
    out_fields(&out, flags, ct, ct_len, body, body_len);
    out_str(&out, flags & 32 ? ",\"ephemeral\":true}" : "}");
    size_t before = p->wire.texts;
    ws_send_text(p, out.buf, out.len);
    RUN_UNTIL(p->wire.texts > before || p->rx.is_eof);
    return p->wire.texts > before && strcmp(p->wire.last_type, "published") == 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (is_started)
        return 0;
    hd_log_set_level(HD_LOG_ERROR);
    router = hd_router_new();
    hd_publish_register(router);
    hd_poll_register(router);
    hd_sse_register(router);
    hd_ws_register(router);
    hd_http_set_router(router);
    HD_EMBEDDED_START(&node, hd_http_accept, "max_message_size 2k", "max_queue_bytes 256k",
                      "history_size 4", "ws_client_publish on", "ws_ping_interval 1h",
                      "ws_idle_timeout 1h", "sse_heartbeat 1h", "header_timeout 10s",
                      "keepalive_timeout 10s");
    hd_embedded_start_pubsub(&node);
    node.on_pass = read_all;
    for (int i = 0; i < P_COUNT; i++)
        peers[i].fd = -1;
    is_started = 1;
    return 0;
}

static int subscribers_ready(int with_pub)
{
    return peers[P_SSE].wire.events >= 1 && peers[P_SSE_NAMED].wire.events >= 1 &&
           peers[P_SSE_JSON].wire.events >= 1 && peers[P_WS_V1].wire.state == WIRE_FRAMES &&
           peers[P_WS_RAW].wire.state == WIRE_FRAMES && peers[P_WS_JSON].wire.texts >= 1 &&
           (!with_pub || peers[P_WS_PUB].wire.state == WIRE_FRAMES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!is_started)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    int mode = flags & 3;
    const uint8_t *ct = data + 1, *body = NULL;
    size_t ct_len = size - 1, body_len = 0;
    const uint8_t *nul = memchr(ct, 0, ct_len);
    if (nul) {
        body = nul + 1;
        body_len = ct_len - (size_t)(nul - ct) - 1;
        ct_len = (size_t)(nul - ct);
    }

    /* every kind of subscriber, live on fz before the publish */
    open_peer(&peers[P_SSE], WIRE_SSE, "/sse/fz");
    http_get(&peers[P_SSE], "/sse/fz");
    open_peer(&peers[P_SSE_NAMED], WIRE_SSE, "/sse?channel=fz&channel=fy");
    http_get(&peers[P_SSE_NAMED], "/sse?channel=fz&channel=fy");
    open_peer(&peers[P_SSE_JSON], WIRE_SSE_JSON, "/sse/fz?format=json");
    http_get(&peers[P_SSE_JSON], "/sse/fz?format=json");
    open_peer(&peers[P_WS_V1], WIRE_WS_JSON, "/ws/fz herald.v1");
    ws_handshake(&peers[P_WS_V1], "/ws/fz", 1);
    open_peer(&peers[P_WS_RAW], WIRE_WS, "/ws/fz");
    ws_handshake(&peers[P_WS_RAW], "/ws/fz", 0);
    open_peer(&peers[P_WS_JSON], WIRE_WS_JSON, "/ws subscriber");
    ws_handshake(&peers[P_WS_JSON], "/ws", 0);
    if (mode == 3) {
        open_peer(&peers[P_WS_PUB], WIRE_WS_JSON, "/ws publisher");
        ws_handshake(&peers[P_WS_PUB], "/ws", 0);
    }
    RUN_UNTIL(peers[P_WS_JSON].wire.state != WIRE_HEAD);
    CHECK(peers[P_WS_JSON].wire.state == WIRE_FRAMES);
    static const char sub[] = "{\"op\":\"subscribe\",\"channel\":\"fz\"}";
    ws_send_text(&peers[P_WS_JSON], sub, sizeof(sub) - 1);
    RUN_UNTIL(subscribers_ready(mode == 3));
    CHECK(subscribers_ready(mode == 3));
    hd_embedded_sync_broker(&node);
    settle();

    size_t before[P_COUNT];
    before[P_SSE] = peers[P_SSE].wire.events;
    before[P_SSE_NAMED] = peers[P_SSE_NAMED].wire.events;
    before[P_SSE_JSON] = peers[P_SSE_JSON].wire.events;
    before[P_WS_V1] = peers[P_WS_V1].wire.datas;
    before[P_WS_RAW] = peers[P_WS_RAW].wire.datas;
    before[P_WS_JSON] = peers[P_WS_JSON].wire.datas;

    int to_fz = 0; /* a publish to fz was accepted */
    switch (mode) {
    case 0:
        to_fz = http_publish("/pub/fz", flags, ct, ct_len, body, body_len) == 200;
        break;
    case 1:
        http_publish("/pub", flags, ct, ct_len, body, body_len);
        break;
    case 2:
        out.len = 0;
        out_str(&out, "[{");
        out_fields(&out, flags, ct, ct_len, body, body_len);
        out_str(&out, "}]");
        to_fz = http_publish("/pub", flags & ~16, (const uint8_t *)"application/json", 16, out.buf,
                             out.len) == 200;
        break;
    default:
        to_fz = ws_publish(flags, ct, ct_len, body, body_len);
        break;
    }
    hd_embedded_sync_broker(&node);
    settle();
    if (to_fz) {
        CHECK(peers[P_SSE].wire.events > before[P_SSE]);
        CHECK(peers[P_SSE_NAMED].wire.events > before[P_SSE_NAMED]);
        CHECK(peers[P_SSE_JSON].wire.events > before[P_SSE_JSON]);
        CHECK(peers[P_WS_V1].wire.datas > before[P_WS_V1]);
        CHECK(peers[P_WS_RAW].wire.datas > before[P_WS_RAW]);
        CHECK(peers[P_WS_JSON].wire.datas > before[P_WS_JSON]);
    }

    for (int i = 0; i < P_COUNT; i++)
        close_peer(&peers[i]);
    /* Everything is freed once the peers are gone and the broker has answered. */
    CHECK(hd_embedded_wait_idle(&node, 10000) == 0);
    hd_embedded_sync_broker(&node);
    hd_embedded_check_clean(&node);
    CHECK(hd_hub_local_subscribers(node.wk) == 0);
    return 0;
}
