/* SPDX-License-Identifier: MIT */
/*
 * websocket.c: WebSocket (RFC 6455), frames parsed by wslay.
 *
 *   GET /ws/{channel}   one channel: each message is one data frame with the payload as-is;
 *                       subprotocol herald.v1: one JSON envelope per message, gap notices
 *   GET /ws             the JSON protocol: subscribe, unsubscribe, publish, ping
 *
 * The handshake of /ws/{channel} is answered only once its subscription is live (the request
 * is deferred until the hub's on_ready), so a client that has seen 101 misses nothing
 * published afterwards. docs/protocol-websocket.md is the public contract.
 *
 * Output: one writer, the connection's queue, in call order:
 *   - live messages: the hub's frame, encoded once per worker (HD_FMT_WS_RAW or
 *     HD_FMT_WS_ENVELOPE) and queued by reference, so one buffer serves every subscriber;
 *   - history on resume and JSON protocol replies: encoded for this connection;
 *   - control frames (pong, ping, close): wslay's queue, written by flush_control() before
 *     anything else is queued, so wslay never holds a frame behind our back.
 * History is replayed through a backlog refilled as the socket drains (on_drain), so a resume
 * longer than max_queue_bytes completes; live frames that arrive meanwhile wait behind it and
 * count against max_queue_bytes as if they were queued.
 *
 * Input:
 *   on_data -> ws->in -> recv_cb: reads each frame header (framing errors and oversize are
 *   answered there, with a reason), hands wslay bytes up to the end of the current frame only,
 *   a control frame only once complete -> wslay (unmasking, continuation order, ping -> pong)
 *   -> frame callbacks: UTF-8 per fragment (hd_utf8), reassembly into ws->msg (sized from the
 *   header, after the limit check), close frame checks -> on_msg: publish or JSON protocol.
 *
 * Lifetime: wslay and the hub call back into this file, and a connection can end inside any
 * callback (a slow-consumer drop, a write error). Every entry point brackets its work with
 * enter()/leave(); on_close marks the state gone (unsubscribing everything at once) and the
 * memory goes then, or when the outermost entry point leaves. A connection is never finished from
 * inside wslay_event_recv: close_with() queues the close frame there and read_input() ends the
 * connection when wslay has returned.
 */
#include "herald/transport.h"
#include "herald/utf8.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define WS_GUID             "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_SUBPROTOCOL      "herald.v1"
#define WS_MAX_SUBS         64    /* subscriptions of one /ws connection */
#define WS_MAX_PUBLISHES    64    /* client publishes awaiting the broker before input waits */
#define WS_KEEP_MSG_BYTES   65536 /* reassembly buffer kept between messages */
#define WS_CTRL_BYTES       125   /* a control frame's payload */
#define WS_MAX_REASON_BYTES 123   /* close reason: a control frame holds 125 bytes */
#define WS_GAP_REASON       "history lost or expired; some messages may be missing"
#define WS_SLOW_REASON      "subscriber too slow; reconnect and resume"
#define WS_CHANNEL_RULE     "1-128 characters of A-Z a-z 0-9 . _ - : @"

enum { MODE_RAW, MODE_ENVELOPE, MODE_JSON };

typedef struct ws_s ws_t;

/* One subscription of a connection. */
typedef struct ws_sub_s {
    ws_t *ws;
    hd_sub_t *sub; /* NULL once the hub has let it go */
    json_t *ref;   /* JSON protocol: the subscribe's "ref", until "subscribed" is sent */
    uint8_t len;
    char channel[]; /* len bytes and a NUL: sized to the name */
} ws_sub_t;

/* A client publish waiting for the broker; it outlives its connection if need be. */
typedef struct ws_pub_s {
    ws_t *ws; /* NULL once the connection is gone */
    hd_list_t link;
    json_t *ref;
} ws_pub_t;

/* A frame held back while history is replayed: a built frame, or a message to encode. */
typedef struct ws_out_s {
    hd_buf_t *buf;
    hd_message_t *msg;
    int is_counted; /* counts against max_queue_bytes (everything but history) */
} ws_out_t;

/* The handshake, checked. */
typedef struct hs_s {
    char accept[32]; /* Sec-WebSocket-Accept */
    unsigned has_subprotocol : 1;
    unsigned is_authorized : 1; /* may publish under publish_key (Authorization: Bearer) */
} hs_t;

struct ws_s {
    hd_worker_t *w;
    hd_conn_t *conn;  /* NULL once gone */
    hd_deferred_t *d; /* /ws/{channel}: the handshake, until the subscription is live */
    wslay_event_context_ptr ctx;
    uint8_t mode; /* MODE_* */
    uint8_t fmt;  /* HD_FMT_* of history and live frames */
    hs_t hs;
    /* input */
    uint8_t *in; /* bytes from the peer that wslay has not taken yet */
    size_t in_off, in_len, in_cap;
    uint64_t frame_left; /* bytes of the current frame not yet handed to wslay */
    uint8_t *msg;        /* the data message being reassembled */
    size_t msg_len, msg_cap;
    uint8_t msg_opcode;   /* its opcode (text or binary) */
    uint8_t frame_opcode; /* opcode of the frame being received */
    hd_utf8_t utf8;
    uint8_t *ctrl; /* WS_CTRL_BYTES: payload of the control frame being received (with ctx) */
    size_t ctrl_len;
    /* output */
    hd_sbuf_t ctl; /* what wslay writes during one flush_control */
    ws_out_t *bl;  /* backlog: bl[bl_head..bl_len) */
    size_t bl_head, bl_len, bl_cap, bl_bytes;
    /* subscriptions and publishes */
    ws_sub_t **subs;
    uint32_t n_subs, cap_subs;
    hd_list_t pubs;
    uint32_t n_pubs;
    uint64_t last_rx_ms, last_ping_ms;
    uint32_t busy;             /* entry points on the stack */
    unsigned is_gone : 1;      /* the connection has gone: free when not busy */
    unsigned is_closing : 1;   /* our close frame is queued: nothing more in or out */
    unsigned in_recv : 1;      /* inside wslay_event_recv */
    unsigned is_throttled : 1; /* too many publishes in flight: input waits */
};

static const hd_conn_ops_t ws_conn_ops;
static void read_input(ws_t *ws);
static wslay_event_context_ptr ctx_of(ws_t *ws);
static void release_ctx_if_idle(ws_t *ws);

/* ---- pure helpers ---- */

/* 1 if a peer may send this close code (RFC 6455 7.4 and the IANA registry), else 0. */
static int close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return 1;
    if (code < 1000 || code > 1014)
        return 0;
    return code != 1004 && code != 1005 && code != 1006;
}

/* 1 if key is the base64 text of 16 bytes: 22 base64 characters and "==". */
static int key_valid(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

/* Writes the Sec-WebSocket-Accept value for key (at most 64 bytes): 28 characters and a NUL. */
static void accept_key(const char *key, size_t len, char out[32])
{
    unsigned char in[64 + sizeof(WS_GUID)], md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    HD_ASSERT(len <= 64);
    memcpy(in, key, len);
    memcpy(in + len, WS_GUID, sizeof(WS_GUID) - 1);
    int ok = EVP_Digest(in, len + sizeof(WS_GUID) - 1, md, &md_len, EVP_sha1(), NULL);
    HD_ASSERT(ok == 1 && md_len == 20);
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len);
}

/* 1 if the comma-separated list v[0..len) holds token (case-insensitive, blanks ignored). */
static int list_has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    const char *p = v, *end = v + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *a = p, *b = comma ? comma : end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == tl && strncasecmp(a, token, tl) == 0)
            return 1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* 1 if any header `name` of req lists token. */
static int req_has_token(const hd_req_t *req, const char *name, const char *token)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const hd_header_t *h = &req->headers[i];
        if (h->name_len == nl && strncasecmp(h->name, name, nl) == 0 &&
            list_has_token(h->value, h->value_len, token))
            return 1;
    }
    return 0;
}

/* 1 if origin[0..len) is one of the blank-separated values of list ("*" allows any). */
static int origin_allowed(const char *list, const char *origin, size_t len)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t')
            e++;
        size_t n = (size_t)(e - p);
        if ((n == 1 && *p == '*') || (n == len && n > 0 && memcmp(p, origin, len) == 0))
            return 1;
        p = e;
    }
    return 0;
}

enum { FRAME_OK = 0, FRAME_MORE = 1, FRAME_BAD = -1 };

/*
 * Reads the frame header at p[0..avail). Returns FRAME_OK with *size set to the whole frame
 * (header and payload) and *payload to the payload length, FRAME_MORE when more bytes are
 * needed to tell (a control frame counts as known only once complete), or FRAME_BAD with *why
 * set for framing RFC 6455 forbids. Continuation order is left to wslay, which keeps that state.
 */
static int frame_size(const uint8_t *p, size_t avail, uint64_t *size, uint64_t *payload,
                      const char **why)
{
    if (avail < 2)
        return FRAME_MORE;
    unsigned opcode = p[0] & 0x0f, len7 = p[1] & 0x7f;
    int is_ctrl = (opcode & 0x08) != 0;
    if (p[0] & 0x70) {
        *why = "reserved bits set (no extension was negotiated)";
        return FRAME_BAD;
    }
    if ((opcode > 0x2 && opcode < 0x8) || opcode > 0xa) {
        *why = "reserved opcode";
        return FRAME_BAD;
    }
    if (!(p[1] & 0x80)) {
        *why = "client frames must be masked";
        return FRAME_BAD;
    }
    if (is_ctrl && !(p[0] & 0x80)) {
        *why = "fragmented control frame";
        return FRAME_BAD;
    }
    if (is_ctrl && len7 > 125) {
        *why = "control frame longer than 125 bytes";
        return FRAME_BAD;
    }
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + ext + 4;
    if (avail < hlen)
        return FRAME_MORE;
    uint64_t plen = len7;
    if (ext) {
        plen = 0;
        for (size_t i = 0; i < ext; i++)
            plen = plen << 8 | p[2 + i];
        if ((plen >> 63) != 0 || plen < (ext == 2 ? 126u : 65536u)) {
            *why = "payload length not in its shortest form";
            return FRAME_BAD;
        }
    }
    if (is_ctrl && avail < hlen + plen)
        return FRAME_MORE;
    *size = hlen + plen;
    *payload = plen;
    return FRAME_OK;
}

/* ---- lifetime ---- */

static const hd_conf_t *conf_of(const ws_t *ws)
{
    return hd_worker_conf(ws->w);
}

static uint64_t now_ms(ws_t *ws)
{
    return uv_now(&ws->w->loop);
}

static int is_open(const ws_t *ws)
{
    return !ws->is_gone && !ws->is_closing;
}

static void clear_backlog(ws_t *ws)
{
    for (size_t i = ws->bl_head; i < ws->bl_len; i++) {
        if (ws->bl[i].buf)
            hd_buf_unref(ws->bl[i].buf);
        if (ws->bl[i].msg)
            hd_message_unref(ws->bl[i].msg);
    }
    ws->bl_head = ws->bl_len = ws->bl_bytes = 0;
}

static void free_sub(ws_sub_t *e)
{
    if (e->sub)
        hd_hub_unsubscribe(e->sub);
    json_decref(e->ref);
    free(e);
}

static void free_ws(ws_t *ws)
{
    for (uint32_t i = 0; i < ws->n_subs; i++)
        free_sub(ws->subs[i]);
    free(ws->subs);
    clear_backlog(ws);
    free(ws->bl);
    hd_sbuf_dispose(&ws->ctl);
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    free(ws->ctrl);
    free(ws->in);
    free(ws->msg);
    HD_HUB_STAT_ADD(ws->w, transport_conns[HD_TP_WS], -1);
    free(ws);
}

/* The connection has gone: stop every subscription now, free the memory when not busy. */
static void gone(ws_t *ws)
{
    if (!ws->is_gone) {
        ws->is_gone = 1;
        ws->conn = NULL;
        for (uint32_t i = 0; i < ws->n_subs; i++) {
            if (ws->subs[i]->sub)
                hd_hub_unsubscribe(ws->subs[i]->sub);
            ws->subs[i]->sub = NULL;
        }
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &ws->pubs)
        {
            ws_pub_t *p = hd_container_of(pos, ws_pub_t, link);
            p->ws = NULL; /* its answer will find nobody */
            hd_list_remove(&p->link);
        }
        clear_backlog(ws);
    }
    if (ws->busy == 0)
        free_ws(ws);
}

static void enter(ws_t *ws)
{
    ws->busy++;
}

static void leave(ws_t *ws)
{
    if (--ws->busy == 0 && ws->is_gone)
        free_ws(ws);
}

/* ---- output ---- */

/* wslay's writer: collects what wslay_event_send writes; flush_control queues it as one. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx;
    (void)flags;
    ws_t *ws = user;
    hd_sbuf_append(&ws->ctl, data, len);
    return (ssize_t)len;
}

/* Queues the control frames wslay holds (pong, ping, close) on the connection, now. */
static void flush_control(ws_t *ws)
{
    if (ws->is_gone || !ws->ctx || !wslay_event_want_write(ws->ctx))
        return;
    hd_sbuf_init(&ws->ctl, 64);
    int rc = wslay_event_send(ws->ctx);
    hd_buf_t *b = hd_sbuf_finish(&ws->ctl);
    if (rc == 0 && b->len)
        hd_conn_send(ws->conn, b, 0, b->len);
    hd_buf_unref(b);
    if (rc != 0 && !ws->is_gone)
        hd_conn_close(ws->conn); /* out of memory inside wslay */
}

/* Writes what wslay holds, then finishes the connection (its on_close makes the state gone). */
static void finish(ws_t *ws)
{
    flush_control(ws);
    if (!ws->is_gone)
        hd_conn_finish(ws->conn);
}

/*
 * Sends a close frame with code and reason and ends the connection: at once, or from inside
 * wslay_event_recv when it has returned (read_input).
 */
static void close_with(ws_t *ws, int code, const char *reason)
{
    if (!is_open(ws))
        return;
    ws->is_closing = 1;
    clear_backlog(ws);
    hd_conn_log(code == 1000 || code == 1001 ? HD_LOG_DEBUG : HD_LOG_INFO, ws->conn,
                "closing with %d: %s", code, reason);
    size_t len = strlen(reason);
    if (len > WS_MAX_REASON_BYTES)
        len = WS_MAX_REASON_BYTES;
    wslay_event_queue_close(ctx_of(ws), (uint16_t)code, (const uint8_t *)reason, len);
    wslay_event_shutdown_read(ws->ctx);
    if (!ws->in_recv)
        finish(ws);
}

static void drop_slow(ws_t *ws)
{
    HD_HUB_STAT_ADD(ws->w, slow_dropped, 1);
    hd_conn_log(HD_LOG_INFO, ws->conn, "slow subscriber: %zu bytes queued, %zu held back",
                hd_conn_queued_bytes(ws->conn), ws->bl_bytes);
    close_with(ws, 1013, WS_SLOW_REASON);
}

static void push_out(ws_t *ws, hd_buf_t *b, hd_message_t *m, int is_counted)
{
    if (ws->bl_len == ws->bl_cap) {
        if (ws->bl_head >= ws->bl_cap / 2 && ws->bl_head > 0) {
            memmove(ws->bl, ws->bl + ws->bl_head, (ws->bl_len - ws->bl_head) * sizeof(*ws->bl));
            ws->bl_len -= ws->bl_head;
            ws->bl_head = 0;
        } else {
            ws->bl_cap = ws->bl_cap ? ws->bl_cap * 2 : 16;
            ws->bl = hd_realloc(ws->bl, ws->bl_cap * sizeof(*ws->bl));
        }
    }
    ws->bl[ws->bl_len++] = (ws_out_t){b, m, is_counted};
    if (is_counted)
        ws->bl_bytes += b->len;
}

/*
 * Queues frame b (taking a reference) after whatever is held back. A client more than
 * max_queue_bytes behind is let go; one frame alone is always allowed.
 */
static void emit(ws_t *ws, hd_buf_t *b)
{
    if (!is_open(ws))
        return;
    size_t max = conf_of(ws)->max_queue_bytes;
    if (ws->bl_head < ws->bl_len) {
        if (ws->bl_bytes + b->len > max) {
            drop_slow(ws);
            return;
        }
        push_out(ws, hd_buf_ref(b), NULL, 1);
        return;
    }
    size_t queued = hd_conn_queued_bytes(ws->conn);
    if (queued > 0 && queued + b->len > max) {
        drop_slow(ws);
        return;
    }
    flush_control(ws);
    if (!ws->is_gone)
        hd_conn_send(ws->conn, b, 0, b->len);
}

/* Holds a history message back, to be encoded and sent by pump(). */
static void hold_history(ws_t *ws, hd_message_t *m)
{
    if (is_open(ws))
        push_out(ws, NULL, hd_message_ref(m), 0);
}

/* Moves held-back frames to the connection while it has room; on_drain calls again. */
static void pump(ws_t *ws)
{
    size_t max = conf_of(ws)->max_queue_bytes;
    while (is_open(ws) && ws->bl_head < ws->bl_len) {
        ws_out_t *o = &ws->bl[ws->bl_head];
        if (!o->buf) {
            o->buf = hd_message_encode(o->msg, ws->fmt);
            hd_message_unref(o->msg);
            o->msg = NULL;
        }
        size_t queued = hd_conn_queued_bytes(ws->conn);
        if (queued > 0 && queued + o->buf->len > max)
            break;
        hd_buf_t *b = o->buf;
        if (o->is_counted)
            ws->bl_bytes -= b->len;
        ws->bl_head++;
        flush_control(ws);
        if (!ws->is_gone)
            hd_conn_send(ws->conn, b, 0, b->len);
        hd_buf_unref(b);
    }
    if (ws->bl_head == ws->bl_len)
        ws->bl_head = ws->bl_len = 0;
}

/* Queues a JSON object (consumed) as one text frame. */
static void emit_json(ws_t *ws, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!text)
        return;
    size_t n = strlen(text);
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, n + 10);
    hd_ws_frame_header(&sb, WSLAY_TEXT_FRAME, n);
    hd_sbuf_append(&sb, text, n);
    free(text);
    hd_buf_t *b = hd_sbuf_finish(&sb);
    emit(ws, b);
    hd_buf_unref(b);
}

/* {"type":type} and "channel" (when not NULL); send it with emit_reply. */
static json_t *reply_new(const char *type, const char *channel)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    if (channel)
        json_object_set_new(o, "channel", json_string(channel));
    return o;
}

/* Adds the request's "ref" (when it had one) as the last member, then queues the reply. */
static void emit_reply(ws_t *ws, json_t *o, json_t *ref)
{
    if (ref)
        json_object_set(o, "ref", ref);
    emit_json(ws, o);
}

static void reply_error(ws_t *ws, json_t *ref, const char *channel, const char *code,
                        const char *text)
{
    json_t *o = reply_new("error", channel);
    json_object_set_new(o, "code", json_string(code));
    json_object_set_new(o, "error", json_string(text));
    emit_reply(ws, o, ref);
}

static void emit_gap(ws_t *ws, const char *channel)
{
    json_t *o = reply_new("gap", channel);
    json_object_set_new(o, "reason", json_string(WS_GAP_REASON));
    emit_json(ws, o);
}

/* ---- subscriptions ---- */

static ws_sub_t *find_sub(ws_t *ws, const char *channel, size_t len)
{
    for (uint32_t i = 0; i < ws->n_subs; i++)
        if (ws->subs[i]->len == len && memcmp(ws->subs[i]->channel, channel, len) == 0)
            return ws->subs[i];
    return NULL;
}

static ws_sub_t *add_sub(ws_t *ws, const char *channel, size_t len)
{
    if (ws->n_subs == ws->cap_subs) {
        ws->cap_subs = ws->cap_subs ? ws->cap_subs * 2 : 1;
        ws->subs = hd_realloc(ws->subs, ws->cap_subs * sizeof(*ws->subs));
    }
    ws_sub_t *e = hd_calloc(1, sizeof(*e) + len + 1);
    e->ws = ws;
    e->len = (uint8_t)len;
    memcpy(e->channel, channel, len);
    ws->subs[ws->n_subs++] = e;
    return e;
}

static void remove_sub(ws_t *ws, ws_sub_t *e)
{
    for (uint32_t i = 0; i < ws->n_subs; i++) {
        if (ws->subs[i] == e) {
            ws->subs[i] = ws->subs[--ws->n_subs];
            break;
        }
    }
    free_sub(e);
}

static void sub_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)m;
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    enter(ws);
    emit(ws, encoded);
    leave(ws);
}

static void sub_on_gap(hd_sub_t *s)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    if (ws->mode == MODE_RAW)
        return; /* a plain client has no envelope to carry the notice */
    enter(ws);
    emit_gap(ws, e->channel);
    leave(ws);
}

static void start_stream(ws_t *ws)
{
    ws->last_rx_ms = ws->last_ping_ms = now_ms(ws);
    const hd_conf_t *conf = conf_of(ws);
    uint64_t first = conf->ws_ping_interval_ms < conf->ws_idle_timeout_ms
                         ? conf->ws_ping_interval_ms
                         : conf->ws_idle_timeout_ms;
    hd_conn_set_timeout(ws->conn, first);
    if (ws->w->is_draining || ws->w->is_stopped)
        close_with(ws, 1001, "server shutting down");
}

static void upgrade(ws_t *ws, hd_req_t *req)
{
    char head[256];
    snprintf(head, sizeof(head),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s",
             ws->hs.accept,
             ws->hs.has_subprotocol ? "Sec-WebSocket-Protocol: " WS_SUBPROTOCOL "\r\n" : "");
    hd_http_take_over(req, 101, head, &ws_conn_ops, ws); /* may read early frames */
    if (!ws->is_gone)
        start_stream(ws);
}

/* /ws/{channel}: the subscription is live, so the handshake can be answered. */
static void chan_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    enter(ws);
    hd_req_t *req = ws->d->req;
    ws->d = NULL;
    if (err) {
        e->sub = NULL; /* the hub frees it */
        gone(ws);
        hd_tp_respond_failure(req, err);
    } else {
        upgrade(ws, req);
        if (gap && ws->mode == MODE_ENVELOPE)
            emit_gap(ws, e->channel);
        for (size_t i = 0; i < n; i++)
            hold_history(ws, msgs[i]);
        pump(ws);
    }
    leave(ws);
}

/* /ws: a subscribe op has gone live: gap notice, history, then "subscribed". */
static void json_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    enter(ws);
    json_t *ref = e->ref;
    e->ref = NULL;
    if (err) {
        e->sub = NULL; /* the hub frees it */
        char channel[HD_CHANNEL_MAX + 1];
        memcpy(channel, e->channel, sizeof(channel));
        remove_sub(ws, e);
        reply_error(ws, ref, channel, "unavailable", hd_strerror(err));
    } else {
        if (gap)
            emit_gap(ws, e->channel);
        for (size_t i = 0; i < n; i++)
            hold_history(ws, msgs[i]);
        char id[HD_ID_MAX];
        hd_id_format(id, sizeof(id), s->epoch, s->last_seq);
        json_t *o = reply_new("subscribed", e->channel);
        json_object_set_new(o, "last_id", json_string(id));
        emit_reply(ws, o, ref);
        pump(ws);
    }
    json_decref(ref);
    leave(ws);
}

static const hd_sub_ops_t raw_sub_ops = {
    .format = HD_FMT_WS_RAW, .on_ready = chan_on_ready, .on_message = sub_on_message};
static const hd_sub_ops_t envelope_sub_ops = {.format = HD_FMT_WS_ENVELOPE,
                                              .on_ready = chan_on_ready,
                                              .on_message = sub_on_message,
                                              .on_gap = sub_on_gap};
static const hd_sub_ops_t json_sub_ops = {.format = HD_FMT_WS_ENVELOPE,
                                          .on_ready = json_on_ready,
                                          .on_message = sub_on_message,
                                          .on_gap = sub_on_gap};

/* ---- publishing by clients ---- */

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    ws_pub_t *p = arg;
    ws_t *ws = p->ws;
    if (ws) {
        enter(ws);
        hd_list_remove(&p->link);
        ws->n_pubs--;
        if (ws->mode == MODE_JSON) {
            if (err || n == 0) {
                reply_error(ws, p->ref, NULL, "unavailable", hd_strerror(err));
            } else {
                json_t *o = reply_new("published", msgs[0]->channel);
                json_object_set_new(o, "id", json_string(msgs[0]->id));
                emit_reply(ws, o, p->ref);
            }
        } else if (err) {
            close_with(ws, hd_err_ws_close(err), hd_strerror(err)); /* nowhere else to say it */
        }
        if (ws->is_throttled && ws->n_pubs <= WS_MAX_PUBLISHES / 2) {
            ws->is_throttled = 0;
            if (is_open(ws)) {
                hd_conn_read_start(ws->conn);
                read_input(ws);
            }
        }
        leave(ws);
    }
    json_decref(p->ref);
    free(p);
}

/* Publishes m (the reference passes) through the broker; the answer comes to on_published. */
static void submit_publish(ws_t *ws, hd_message_t *m, json_t *ref)
{
    ws_pub_t *p = hd_calloc(1, sizeof(*p));
    p->ws = ws;
    p->ref = ref ? json_incref(ref) : NULL;
    hd_list_insert_tail(&ws->pubs, &p->link);
    if (++ws->n_pubs >= WS_MAX_PUBLISHES)
        ws->is_throttled = 1;
    hd_tp_publish(ws->w, &m, 1, on_published, p);
}

/* ---- the JSON protocol (GET /ws) ---- */

/* The "channel" member when it is a valid name, else NULL after an error reply. */
static const char *json_channel(ws_t *ws, json_t *root, json_t *ref, size_t *len)
{
    json_t *ch = json_object_get(root, "channel");
    const char *name = json_string_value(ch);
    *len = json_string_length(ch);
    if (!name || !hd_channel_name_valid(name, *len)) {
        reply_error(ws, ref, NULL, "bad_channel", "\"channel\" must be " WS_CHANNEL_RULE);
        return NULL;
    }
    return name;
}

static void op_subscribe(ws_t *ws, json_t *root, json_t *ref)
{
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    json_t *since = json_object_get(root, "since");
    uint64_t epoch = 0, seq = 0;
    int has_since = since && !json_is_null(since);
    if (has_since &&
        (!json_is_string(since) ||
         hd_id_parse(json_string_value(since), json_string_length(since), &epoch, &seq) != 0)) {
        reply_error(ws, ref, name, "bad_since",
                    "\"since\" must be a message id such as \"mh3k2x1a-42\"");
        return;
    }
    if (find_sub(ws, name, len)) {
        reply_error(ws, ref, name, "already_subscribed", "already subscribed to this channel");
        return;
    }
    if (ws->n_subs == WS_MAX_SUBS) {
        reply_error(ws, ref, name, "too_many_subscriptions",
                    "at most 64 subscriptions per connection");
        return;
    }
    ws_sub_t *e = add_sub(ws, name, len);
    e->ref = ref ? json_incref(ref) : NULL;
    e->sub = hd_hub_subscribe(ws->w, name, len, has_since ? &epoch : NULL, has_since ? &seq : NULL,
                              &json_sub_ops, e);
}

static void op_unsubscribe(ws_t *ws, json_t *root, json_t *ref)
{
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    ws_sub_t *e = find_sub(ws, name, len);
    if (!e) {
        reply_error(ws, ref, name, "not_subscribed", "not subscribed to this channel");
        return;
    }
    remove_sub(ws, e);
    emit_reply(ws, reply_new("unsubscribed", name), ref);
}

static void op_publish(ws_t *ws, json_t *root, json_t *ref)
{
    const hd_conf_t *conf = conf_of(ws);
    if (!conf->ws_client_publish) {
        reply_error(ws, ref, NULL, "publish_disabled",
                    "client publishing is disabled on this server (ws_client_publish off)");
        return;
    }
    if (!ws->hs.is_authorized) {
        json_t *key = json_object_get(root, "key");
        if (!json_is_string(key) ||
            hd_tp_publish_key_ok(conf, json_string_value(key), json_string_length(key)) != 0) {
            reply_error(ws, ref, NULL, "forbidden",
                        "publishing needs the publish key (\"key\", or Authorization: Bearer on "
                        "the handshake)");
            return;
        }
    }
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    json_t *data = json_object_get(root, "data");
    json_t *type = json_object_get(root, "type");
    if (!data || (type && !json_is_string(type))) {
        reply_error(ws, ref, NULL, "bad_data",
                    "needs \"data\" (a string or any JSON value); \"type\" must be a string");
        return;
    }
    char *dumped = NULL;
    const char *payload, *ct;
    size_t plen;
    if (json_is_string(data)) {
        payload = json_string_value(data);
        plen = json_string_length(data);
        ct = type ? json_string_value(type) : "text/plain; charset=utf-8";
    } else {
        dumped = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
        payload = dumped ? dumped : "";
        plen = dumped ? strlen(dumped) : 0;
        ct = type ? json_string_value(type) : "application/json";
    }
    if (plen > conf->max_message_bytes) {
        free(dumped);
        reply_error(ws, ref, NULL, "too_large", "message larger than max_message_size");
        return;
    }
    submit_publish(ws, hd_message_new(name, len, ct, payload, plen), ref);
    free(dumped);
}

/* Copies src into out as printable ASCII (a parser's message may quote the input). */
static void ascii_copy(char *out, size_t outlen, const char *src)
{
    size_t n = 0;
    for (; *src && n + 1 < outlen; src++)
        out[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    out[n] = '\0';
}

static void json_message(ws_t *ws, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        char why[160], text[256];
        ascii_copy(why, sizeof(why), root ? "not an object" : jerr.text);
        snprintf(text, sizeof(text), "expected one JSON object per message: %s", why);
        reply_error(ws, NULL, NULL, "bad_json", text);
        json_decref(root);
        return;
    }
    json_t *ref = json_object_get(root, "ref");
    const char *op = json_string_value(json_object_get(root, "op"));
    if (!op)
        reply_error(ws, ref, NULL, "bad_op",
                    "missing \"op\": subscribe, unsubscribe, publish or ping");
    else if (strcmp(op, "subscribe") == 0)
        op_subscribe(ws, root, ref);
    else if (strcmp(op, "unsubscribe") == 0)
        op_unsubscribe(ws, root, ref);
    else if (strcmp(op, "publish") == 0)
        op_publish(ws, root, ref);
    else if (strcmp(op, "ping") == 0)
        emit_reply(ws, reply_new("pong", NULL), ref);
    else
        reply_error(ws, ref, NULL, "unknown_op",
                    "unknown \"op\": expected subscribe, unsubscribe, publish or ping");
    json_decref(root);
}

/* ---- input ---- */

/*
 * wslay's reader. It hands over ws->in up to the end of the current frame only, and a control
 * frame only once all of it has arrived: wslay checks a close reason for UTF-8 chunk by chunk,
 * restarting past the status code in every chunk, so a close frame must reach it in one piece.
 * The header is read here anyway, so framing errors are answered here, with a reason.
 */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_t *ws = user;
    size_t avail = ws->in_len - ws->in_off;
    if (!is_open(ws) || avail == 0)
        goto block;
    if (ws->frame_left == 0) {
        if (ws->is_throttled)
            goto block; /* between frames: resumed when publishes are answered */
        const char *why = NULL;
        uint64_t plen = 0;
        const uint8_t *p = ws->in + ws->in_off;
        int rc = frame_size(p, avail, &ws->frame_left, &plen, &why);
        if (rc == FRAME_BAD) {
            close_with(ws, 1002, why);
            goto block;
        }
        if (rc == FRAME_MORE)
            goto block;
        /* Too big is known from the header: answered now, not after the first payload byte. */
        size_t max = conf_of(ws)->max_message_bytes;
        size_t so_far = (p[0] & 0x0f) == WSLAY_CONTINUATION_FRAME ? ws->msg_len : 0;
        if (!(p[0] & 0x08) && plen > max - so_far) {
            ws->frame_left = 0;
            close_with(ws, 1009, "message larger than max_message_size");
            goto block;
        }
    }
    size_t n = len < avail ? len : avail;
    if (n > ws->frame_left)
        n = (size_t)ws->frame_left;
    memcpy(buf, ws->in + ws->in_off, n);
    ws->in_off += n;
    ws->frame_left -= n;
    return (ssize_t)n;
block:
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
}

/* 1 if a data message with opcode may start here, else 0 after closing. */
static int message_allowed(ws_t *ws, uint8_t opcode)
{
    const hd_conf_t *conf = conf_of(ws);
    if (ws->mode == MODE_JSON) {
        if (opcode == WSLAY_BINARY_FRAME) {
            close_with(ws, 1003, "the /ws JSON protocol takes text messages only");
            return 0;
        }
        return 1;
    }
    if (!conf->ws_client_publish) {
        close_with(ws, 1008, "client publishing is disabled");
        return 0;
    }
    if (!ws->hs.is_authorized) {
        close_with(ws, 1008, "publishing needs the publish key (Authorization: Bearer)");
        return 0;
    }
    return 1;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!is_open(ws))
        return;
    ws->frame_opcode = arg->opcode;
    if (wslay_is_ctrl_frame(arg->opcode)) {
        ws->ctrl_len = 0;
        return;
    }
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->msg_opcode = arg->opcode;
        ws->msg_len = 0;
        hd_utf8_init(&ws->utf8);
        if (!message_allowed(ws, arg->opcode))
            return;
    }
    /* The limit holds for the whole message, checked before anything is buffered. */
    size_t max = conf_of(ws)->max_message_bytes;
    if (ws->msg_len > max || arg->payload_length > max - ws->msg_len) {
        close_with(ws, 1009, "message larger than max_message_size");
        return;
    }
    size_t need = ws->msg_len + (size_t)arg->payload_length;
    if (need > ws->msg_cap) {
        size_t cap = ws->msg_cap ? ws->msg_cap * 2 : 1024;
        while (cap < need)
            cap *= 2;
        ws->msg = hd_realloc(ws->msg, cap);
        ws->msg_cap = cap;
    }
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!is_open(ws) || arg->data_length == 0)
        return;
    if (wslay_is_ctrl_frame(ws->frame_opcode)) {
        size_t n = arg->data_length;
        if (n > WS_CTRL_BYTES - ws->ctrl_len)
            n = WS_CTRL_BYTES - ws->ctrl_len;
        memcpy(ws->ctrl + ws->ctrl_len, arg->data, n);
        ws->ctrl_len += n;
        return;
    }
    if (ws->msg_opcode == WSLAY_TEXT_FRAME &&
        hd_utf8_feed(&ws->utf8, arg->data, arg->data_length) < 0) {
        close_with(ws, 1007, "invalid UTF-8 in a text message");
        return;
    }
    HD_ASSERT(ws->msg_len + arg->data_length <= ws->msg_cap);
    memcpy(ws->msg + ws->msg_len, arg->data, arg->data_length);
    ws->msg_len += arg->data_length;
}

/* The peer's close frame: answered with its code, or with 1002/1007 when it is malformed. */
static void answer_close(ws_t *ws)
{
    const uint8_t *p = ws->ctrl;
    size_t n = ws->ctrl_len;
    unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
    if (n == 1) {
        close_with(ws, 1002, "close frame with a 1-byte payload");
        return;
    }
    if (n >= 2 && !close_code_valid(code)) {
        close_with(ws, 1002, "invalid close code");
        return;
    }
    if (n > 2 && !hd_utf8_valid(p + 2, n - 2)) {
        close_with(ws, 1007, "close reason is not UTF-8");
        return;
    }
    /* Queued before wslay's own echo, which then finds a close queued and stays out. */
    hd_conn_log(HD_LOG_DEBUG, ws->conn, "peer closed with %u", code);
    ws->is_closing = 1;
    clear_backlog(ws);
    wslay_event_queue_close(ctx_of(ws), (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(ws->ctx);
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (is_open(ws) && ws->frame_opcode == WSLAY_CONNECTION_CLOSE)
        answer_close(ws);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!is_open(ws) || wslay_is_ctrl_frame(arg->opcode))
        return; /* wslay has queued the pong for a ping; a pong only shows the peer is alive */
    if (ws->msg_opcode == WSLAY_TEXT_FRAME && !hd_utf8_complete(&ws->utf8)) {
        close_with(ws, 1007, "text message ends inside a UTF-8 sequence");
        return;
    }
    const char *data = ws->msg ? (const char *)ws->msg : "";
    if (ws->mode == MODE_JSON) {
        json_message(ws, data, ws->msg_len);
    } else {
        const char *ct = ws->msg_opcode == WSLAY_TEXT_FRAME ? "text/plain; charset=utf-8"
                                                            : "application/octet-stream";
        ws_sub_t *e = ws->subs[0];
        submit_publish(ws, hd_message_new(e->channel, e->len, ct, data, ws->msg_len), NULL);
    }
    ws->msg_len = 0;
    ws->msg_opcode = 0;
    if (ws->msg_cap > WS_KEEP_MSG_BYTES) {
        free(ws->msg);
        ws->msg = NULL;
        ws->msg_cap = 0;
    }
}

/* Lets wslay read what has arrived; ends the connection when a close frame has been queued. */
static void read_input(ws_t *ws)
{
    if (!is_open(ws))
        return;
    ws->in_recv = 1;
    int rc = wslay_event_recv(ctx_of(ws));
    ws->in_recv = 0;
    if (ws->is_gone)
        return;
    if (ws->is_closing)
        ws->in_off = ws->in_len;
    if (ws->in_off) { /* an idle connection has no input buffer at all (in == NULL) */
        memmove(ws->in, ws->in + ws->in_off, ws->in_len - ws->in_off);
        ws->in_len -= ws->in_off;
        ws->in_off = 0;
    }
    if (rc != 0) {
        hd_conn_log(HD_LOG_WARN, ws->conn, "wslay failed (%d): closing", rc);
        hd_conn_close(ws->conn);
        return;
    }
    flush_control(ws);
    if (ws->is_gone)
        return;
    if (ws->is_closing || wslay_event_get_close_sent(ws->ctx)) {
        if (!ws->is_closing)
            hd_conn_log(HD_LOG_INFO, ws->conn, "protocol error: closed with %u",
                        wslay_event_get_status_code_sent(ws->ctx));
        ws->is_closing = 1;
        hd_conn_finish(ws->conn);
        return;
    }
    if (ws->is_throttled && ws->in_len > WS_KEEP_MSG_BYTES)
        hd_conn_read_stop(ws->conn); /* on_published starts reading again */
    if (hd_conn_queued_bytes(ws->conn) > conf_of(ws)->max_queue_bytes)
        drop_slow(ws); /* a peer that pings (or asks) much faster than it reads */
    else
        release_ctx_if_idle(ws);
}

/* ---- the connection ---- */

static void ws_on_data(hd_conn_t *c, const char *data, size_t len)
{
    ws_t *ws = c->data;
    enter(ws);
    ws->last_rx_ms = now_ms(ws);
    if (is_open(ws)) {
        if (ws->in_len + len > ws->in_cap) {
            size_t cap = ws->in_cap ? ws->in_cap : 4096;
            while (cap < ws->in_len + len)
                cap *= 2;
            ws->in = hd_realloc(ws->in, cap);
            ws->in_cap = cap;
        }
        memcpy(ws->in + ws->in_len, data, len);
        ws->in_len += len;
        read_input(ws);
        if (!ws->is_gone && ws->in_len == 0) { /* an idle connection holds no input buffer */
            free(ws->in);
            ws->in = NULL;
            ws->in_cap = 0;
        }
    }
    leave(ws);
}

static void ws_on_eof(hd_conn_t *c)
{
    hd_conn_log(HD_LOG_DEBUG, c, "peer went away without a close frame");
    hd_conn_close(c);
}

/* The one timer: a ping every ws_ping_interval, and the end of a peer silent too long. */
static void ws_on_timeout(hd_conn_t *c)
{
    ws_t *ws = c->data;
    const hd_conf_t *conf = conf_of(ws);
    enter(ws);
    uint64_t now = now_ms(ws);
    if (now - ws->last_rx_ms >= conf->ws_idle_timeout_ms) {
        close_with(ws, 1001, "idle timeout");
    } else {
        if (now - ws->last_ping_ms >= conf->ws_ping_interval_ms) {
            struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
            wslay_event_queue_msg(ctx_of(ws), &ping);
            flush_control(ws);
            release_ctx_if_idle(ws);
            ws->last_ping_ms = now;
        }
        uint64_t ping_at = ws->last_ping_ms + conf->ws_ping_interval_ms;
        uint64_t idle_at = ws->last_rx_ms + conf->ws_idle_timeout_ms;
        uint64_t at = ping_at < idle_at ? ping_at : idle_at;
        if (!ws->is_gone)
            hd_conn_set_timeout(c, at > now ? at - now : 1);
    }
    leave(ws);
}

static void ws_on_drain(hd_conn_t *c)
{
    ws_t *ws = c->data;
    enter(ws);
    pump(ws);
    leave(ws);
}

static void ws_on_shutdown(hd_conn_t *c)
{
    ws_t *ws = c->data;
    enter(ws);
    close_with(ws, 1001, "server shutting down");
    leave(ws);
}

static void ws_on_close(hd_conn_t *c)
{
    gone(c->data);
}

static const hd_conn_ops_t ws_conn_ops = {
    .name = "ws",
    .on_data = ws_on_data,
    .on_eof = ws_on_eof,
    .on_timeout = ws_on_timeout,
    .on_drain = ws_on_drain,
    .on_shutdown = ws_on_shutdown,
    .on_close = ws_on_close,
};

/* ---- the handshake ---- */

static void on_abort(hd_deferred_t *d)
{
    ws_t *ws = d->data;
    ws->d = NULL;
    gone(ws);
}

static void respond_426(hd_req_t *req, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":426}", msg);
    hd_http_respond(req, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                    "application/json", body, (size_t)n);
}

/* Checks the opening handshake (RFC 6455 4.2.1). Returns 0, or -1 after answering. */
static int check_handshake(hd_req_t *req, hs_t *hs)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    size_t len;
    if (req->method != HD_M_GET) {
        static const char body[] = "{\"error\":\"method not allowed\",\"status\":405}";
        hd_http_respond(req, 405, "Allow: GET\r\n", "application/json", body, sizeof(body) - 1);
        return -1;
    }
    if (!req_has_token(req, "upgrade", "websocket") ||
        !req_has_token(req, "connection", "upgrade")) {
        respond_426(req, "this is a WebSocket endpoint: send Upgrade: websocket and "
                         "Connection: Upgrade");
        return -1;
    }
    if (req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1)) {
        hd_http_respond_error(req, 400, "a WebSocket handshake needs HTTP/1.1");
        return -1;
    }
    const char *v = hd_req_header(req, "sec-websocket-version", &len);
    if (!v || len != 2 || memcmp(v, "13", 2) != 0) {
        respond_426(req, "unsupported Sec-WebSocket-Version: this server speaks 13");
        return -1;
    }
    const char *key = hd_req_header(req, "sec-websocket-key", &len);
    if (!key || !key_valid(key, len)) {
        hd_http_respond_error(req, 400,
                              "missing or invalid Sec-WebSocket-Key (base64 of 16 bytes)");
        return -1;
    }
    accept_key(key, len, hs->accept);
    const char *origin = hd_req_header(req, "origin", &len);
    if (conf->ws_origins && origin && !origin_allowed(conf->ws_origins, origin, len)) {
        hd_conn_log(HD_LOG_INFO, req->conn, "WebSocket origin refused: %.*s",
                    (int)(len > 200 ? 200 : len), origin);
        hd_http_respond_error(req, 403, "origin not allowed");
        return -1;
    }
    hs->has_subprotocol = req_has_token(req, "sec-websocket-protocol", WS_SUBPROTOCOL);
    const char *auth = hd_req_header(req, "authorization", &len);
    hs->is_authorized =
        !conf->publish_key || (auth && len > 7 && strncasecmp(auth, "Bearer ", 7) == 0 &&
                               hd_tp_publish_key_ok(conf, auth + 7, len - 7) == 0);
    return 0;
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_frame_recv_start_callback = on_frame_start,
    .on_frame_recv_chunk_callback = on_frame_chunk,
    .on_frame_recv_end_callback = on_frame_end,
    .on_msg_recv_callback = on_msg,
};

/*
 * The wslay context (about 9 KiB) exists only while the peer is sending or a control frame is
 * going out: an idle subscriber holds none. Created on demand...
 */
static wslay_event_context_ptr ctx_of(ws_t *ws)
{
    if (!ws->ctx) {
        HD_ASSERT(wslay_event_context_server_init(&ws->ctx, &callbacks, ws) == 0);
        /* Data frames are reassembled here (size checked first); wslay buffers control frames. */
        wslay_event_config_set_no_buffering(ws->ctx, 1);
        wslay_event_config_set_max_recv_msg_length(ws->ctx, UINT64_MAX);
        ws->ctrl = hd_malloc(WS_CTRL_BYTES);
    }
    return ws->ctx;
}

/* ...and freed when it holds nothing: no frame or fragmented message half received, nothing
 * to send, no close under way. */
static void release_ctx_if_idle(ws_t *ws)
{
    if (!ws->ctx || ws->is_gone || ws->is_closing || ws->in_recv || ws->in_len || ws->frame_left ||
        ws->msg_opcode || wslay_event_want_write(ws->ctx) || wslay_event_get_close_sent(ws->ctx) ||
        wslay_event_get_close_received(ws->ctx))
        return;
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    free(ws->ctrl);
    ws->ctrl = NULL;
    ws->ctrl_len = 0;
}

static ws_t *ws_new(hd_req_t *req, int mode, const hs_t *hs)
{
    ws_t *ws = hd_calloc(1, sizeof(*ws));
    ws->w = req->conn->worker;
    ws->conn = req->conn;
    ws->mode = (uint8_t)mode;
    ws->fmt = mode == MODE_RAW ? HD_FMT_WS_RAW : HD_FMT_WS_ENVELOPE;
    ws->hs = *hs;
    hd_list_init(&ws->pubs);
    HD_HUB_STAT_ADD(ws->w, transport_conns[HD_TP_WS], 1);
    return ws;
}

static void on_ws(hd_req_t *req, void *arg)
{
    (void)arg;
    hs_t hs = {0};
    if (check_handshake(req, &hs) < 0)
        return;
    if (req->path_len == 3) { /* "/ws": the JSON protocol, live at once */
        ws_t *ws = ws_new(req, MODE_JSON, &hs);
        enter(ws);
        upgrade(ws, req);
        leave(ws);
        return;
    }
    char name[HD_CHANNEL_MAX + 1];
    int n = hd_tp_channel_from_path(req, 4, name);
    if (n < 0)
        return;
    uint64_t epoch = 0, seq = 0;
    int has_since = 0;
    char v[256];
    const char *what = "since";
    int qlen = hd_req_query(req, "since", v, sizeof(v));
    if (qlen < 0) {
        what = "last_event_id";
        qlen = hd_req_query(req, what, v, sizeof(v));
    }
    if (qlen > 0) {
        if (hd_tp_parse_id(req, what, v, (size_t)qlen, &epoch, &seq) < 0)
            return;
        has_since = 1;
    }
    int mode = hs.has_subprotocol ? MODE_ENVELOPE : MODE_RAW;
    ws_t *ws = ws_new(req, mode, &hs);
    ws_sub_t *e = add_sub(ws, name, (size_t)n);
    ws->d = hd_http_defer(req);
    ws->d->data = ws;
    ws->d->on_abort = on_abort;
    e->sub =
        hd_hub_subscribe(ws->w, name, (size_t)n, has_since ? &epoch : NULL, has_since ? &seq : NULL,
                         mode == MODE_RAW ? &raw_sub_ops : &envelope_sub_ops, e);
}

void hd_ws_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/ws/", 1, on_ws, NULL);
    hd_router_add(r, HD_M_GET, "/ws", 0, on_ws, NULL);
}
