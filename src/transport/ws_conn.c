/* SPDX-License-Identifier: MIT */
/*
 * ws_conn.c: a WebSocket connection (RFC 6455) after the handshake: frames parsed by wslay,
 * the output queue, close codes, lifetime, its subscriptions and client publishes. What the
 * messages mean is the protocol's (ws_proto_t: websocket.c for /ws/{channel}, ws_json.c for /ws).
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
 *   on_data -> ws->rx->in -> recv_cb: reads each frame header (framing errors and oversize are
 *   answered there, with a reason), hands wslay bytes up to the end of the current frame only,
 *   a control frame only once complete -> wslay (unmasking, continuation order, ping -> pong)
 *   -> frame callbacks: UTF-8 per fragment (hd_utf8), reassembly into ws->rx->msg (sized from the
 *   header, after the limit check), close frame checks -> on_msg -> proto->on_message.
 *
 * Lifetime: wslay, the hub and the protocol call back into this file, and a connection can end
 * inside any callback (a slow-consumer drop, a write error). Every entry point brackets its work
 * with hd_ws_enter()/hd_ws_leave(); on_close marks the state gone (unsubscribing everything at
 * once) and the memory goes then, or when the outermost entry point leaves. A connection is never
 * finished from inside wslay_event_recv: hd_ws_close() queues the close frame there and
 * read_input() ends the connection when wslay has returned.
 */
#include "websocket.h"

#include "herald/bucket.h"

#include <string.h>

#define WS_MAX_PUBLISHES    64    /* client publishes awaiting the broker before input waits */
#define WS_KEEP_MSG_BYTES   65536 /* reassembly buffer kept between messages */
#define WS_CTRL_BYTES       125   /* a control frame's payload */
#define WS_MAX_REASON_BYTES 123   /* close reason: a control frame holds 125 bytes */
#define WS_SLOW_REASON      "subscriber too slow; reconnect and resume"
#define WS_ENVELOPE_BYTES   256 /* a herald.v1 envelope around a payload, at most (history_cost) */

/* A client publish waiting for the broker; it outlives its connection if need be. */
typedef struct ws_pending_s {
    ws_t *ws; /* NULL once the connection is gone */
    hd_list_t link;
    json_t *ref;
} ws_pending_t;

/*
 * A frame held back while history is replayed: a built frame (live, a reply, a gap notice), or
 * a history message to encode when it goes out; neither once sent or purged. Both count
 * against max_queue_bytes, separately: live frames as the queue they would be (bytes), and
 * history (hist_bytes) so that one subscription's replay may exceed the bound (it is paced
 * by the reader) but history held for several may not.
 */
typedef struct ws_out_s {
    hd_buf_t *buf;
    hd_message_t *msg;
    uint32_t owner; /* the ws_sub_t id it belongs to (purged on unsubscribe), or 0 */
} ws_out_t;

/*
 * What only a peer that is sending (or a control frame going out) needs: the wslay context
 * (about 9 KiB), the input and reassembly buffers, the frame being received. Allocated on demand
 * (rx_of) and freed as soon as it holds nothing (release_rx_if_idle): an idle subscriber holds
 * none, and its ws_t stays small.
 */
typedef struct ws_rx_s {
    wslay_event_context_ptr ctx;
    hd_sbuf_t ctl; /* what wslay writes during one flush_control */
    uint8_t *in;   /* bytes from the peer that wslay has not taken yet */
    size_t in_off, in_len, in_cap;
    uint64_t frame_left; /* bytes of the current frame not yet handed to wslay */
    uint8_t *msg;        /* the data message being reassembled */
    size_t msg_len, msg_cap;
    uint8_t msg_opcode;   /* its opcode (text or binary) */
    uint8_t frame_opcode; /* opcode of the frame being received */
    hd_utf8_t utf8;
    size_t ctrl_len;
    uint8_t ctrl[WS_CTRL_BYTES]; /* payload of the control frame being received */
} ws_rx_t;

/* Frames held back: out[head..len). Allocated with the first, freed once all are sent. */
typedef struct ws_backlog_s {
    ws_out_t *out;
    size_t head, len, cap;
    size_t bytes;      /* frames held back (built) */
    size_t hist_bytes; /* history held back (history_cost) */
} ws_backlog_t;

_Static_assert(HD_FMT_COUNT <= 8, "ws_t.fmt holds an HD_FMT_* in 3 bits");

struct ws_s {
    ws_public_t pub; /* first: websocket.h's view */
    const ws_proto_t *proto;
    char accept[32]; /* Sec-WebSocket-Accept, until the upgrade */
    char *bearer;    /* the handshake's Authorization: Bearer token, or NULL */
    ws_rx_t *rx;     /* NULL while the peer is silent */
    /* output */
    ws_backlog_t *bl;     /* NULL while nothing is held back */
    uint32_t next_sub_id; /* ids of subscriptions, for their backlog entries */
    /* subscriptions (pub.subs[0..pub.n_subs)) and publishes */
    uint32_t cap_subs;
    ws_sub_t *sub1; /* pub.subs while there is room for one only: /ws/{channel} needs no array */
    hd_list_t pubs;
    uint32_t n_pubs;
    uint32_t bearer_len;    /* within max_header_size */
    hd_bucket_t pub_bucket; /* client_publish_rate: a second's worth at once */
    uint64_t last_rx_ms, last_ping_ms;
    uint32_t busy;             /* entry points on the stack */
    unsigned fmt : 3;          /* HD_FMT_* of history and live frames (below 8) */
    unsigned is_gone : 1;      /* the connection has gone: free when not busy */
    unsigned is_closing : 1;   /* our close frame is queued: nothing more in or out */
    unsigned in_recv : 1;      /* inside wslay_event_recv */
    unsigned is_throttled : 1; /* too many publishes in flight: input waits */
    unsigned has_subprotocol : 1;
    unsigned is_local : 1; /* the handshake came from this host (hd_tp_peer_is_local) */
};

static const hd_conn_ops_t ws_conn_ops;
static void read_input(ws_t *ws);
static wslay_event_context_ptr ctx_of(ws_t *ws);
static void free_rx(ws_t *ws);
static void release_rx_if_idle(ws_t *ws);

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
    return hd_worker_conf(ws->pub.w);
}

static uint64_t now_ms(ws_t *ws)
{
    return uv_now(&ws->pub.w->loop);
}

int hd_ws_bearer_ok(ws_t *ws)
{
    const hd_conf_t *conf = conf_of(ws);
    if (conf->publish_keys.n == 0)
        return ws->is_local;
    return hd_tp_key_match(&conf->publish_keys, ws->bearer, ws->bearer_len) == 0;
}

int hd_ws_may_publish(ws_t *ws, const char *channel, size_t len, const char **reason)
{
    const hd_conf_t *conf = conf_of(ws);
    *reason = NULL;
    /* The backend: a publish key on the handshake, or (no publish_key) a local client. */
    if (!hd_auth_enabled(conf->auth) || ws->pub.is_backend || hd_ws_bearer_ok(ws))
        return 0;
    switch (hd_auth_check(conf->auth, hd_ws_identity(ws), channel, len, HD_AUTH_PUBLISH, reason)) {
    case HD_AUTH_OK:
        return 0;
    case HD_AUTH_UNAUTHENTICATED:
        return HD_EUNAUTHENTICATED;
    default:
        return HD_EFORBIDDEN;
    }
}

void hd_ws_stamp(ws_t *ws, hd_message_t *m)
{
    char *stamp = hd_tp_publisher_json(hd_ws_identity(ws));
    if (stamp)
        hd_message_set_publisher(m, stamp);
    free(stamp);
}

int hd_ws_publish_allowed(ws_t *ws, uint64_t *retry_ms)
{
    uint32_t rate = conf_of(ws)->client_publish_rate;
    *retry_ms = 0;
    if (rate == 0 || hd_bucket_take(&ws->pub_bucket, now_ms(ws), rate, rate, retry_ms))
        return 1;
    HD_STAT_INC(ws->pub.w, client_publish_refused);
    return 0;
}

int hd_ws_is_open(const ws_t *ws)
{
    return !ws->is_gone && !ws->is_closing;
}

/* What a held-back history message counts against max_queue_bytes: its payload and a frame's
 * worth of envelope (an upper bound for the header, the id and the channel). */
static size_t history_cost(const hd_message_t *m)
{
    return m->len + WS_ENVELOPE_BYTES;
}

static void drop_out(ws_t *ws, ws_out_t *o);

static void free_backlog(ws_t *ws)
{
    free(ws->bl->out);
    free(ws->bl);
    ws->bl = NULL;
}

static void clear_backlog(ws_t *ws)
{
    if (!ws->bl)
        return;
    for (size_t i = ws->bl->head; i < ws->bl->len; i++)
        drop_out(ws, &ws->bl->out[i]);
    HD_ASSERT(ws->bl->bytes == 0 && ws->bl->hist_bytes == 0);
    free_backlog(ws);
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
    for (uint32_t i = 0; i < ws->pub.n_subs; i++)
        free_sub(ws->pub.subs[i]);
    if (ws->pub.subs != &ws->sub1)
        free(ws->pub.subs);
    clear_backlog(ws);
    free_rx(ws);
    free(ws->bearer);
    HD_HUB_STAT_ADD(ws->pub.w, transport_conns[HD_TP_WS], -1);
    free(ws);
}

/* The connection has gone: stop every subscription now, free the memory when not busy. */
void hd_ws_gone(ws_t *ws)
{
    if (!ws->is_gone) {
        ws->is_gone = 1;
        ws->pub.conn = NULL;
        for (uint32_t i = 0; i < ws->pub.n_subs; i++) {
            if (ws->pub.subs[i]->sub)
                hd_hub_unsubscribe(ws->pub.subs[i]->sub);
            ws->pub.subs[i]->sub = NULL;
        }
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &ws->pubs)
        {
            ws_pending_t *p = hd_container_of(pos, ws_pending_t, link);
            p->ws = NULL; /* its answer will find nobody */
            hd_list_remove(&p->link);
        }
        clear_backlog(ws);
    }
    if (ws->busy == 0)
        free_ws(ws);
}

void hd_ws_enter(ws_t *ws)
{
    ws->busy++;
}

void hd_ws_leave(ws_t *ws)
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
    hd_sbuf_append(&ws->rx->ctl, data, len);
    return (ssize_t)len;
}

/* Queues the control frames wslay holds (pong, ping, close) on the connection, now. */
static void flush_control(ws_t *ws)
{
    if (ws->is_gone || !ws->rx || !wslay_event_want_write(ws->rx->ctx))
        return;
    hd_sbuf_init(&ws->rx->ctl, 64);
    int rc = wslay_event_send(ws->rx->ctx);
    hd_buf_t *b = hd_sbuf_finish(&ws->rx->ctl);
    if (rc == 0 && b->len)
        hd_conn_send(ws->pub.conn, b, 0, b->len);
    hd_buf_unref(b);
    if (rc != 0 && !ws->is_gone)
        hd_conn_close(ws->pub.conn); /* out of memory inside wslay */
}

/* Writes what wslay holds, then finishes the connection (its on_close makes the state gone). */
static void finish(ws_t *ws)
{
    flush_control(ws);
    if (!ws->is_gone)
        hd_conn_finish(ws->pub.conn);
}

/*
 * Sends a close frame with code and reason and ends the connection: at once, or from inside
 * wslay_event_recv when it has returned (read_input).
 */
void hd_ws_close(ws_t *ws, int code, const char *reason)
{
    if (!hd_ws_is_open(ws))
        return;
    ws->is_closing = 1;
    clear_backlog(ws);
    hd_conn_log(code == 1000 || code == 1001 ? HD_LOG_DEBUG : HD_LOG_INFO, ws->pub.conn,
                "closing with %d: %s", code, reason);
    size_t len = strlen(reason);
    if (len > WS_MAX_REASON_BYTES)
        len = WS_MAX_REASON_BYTES;
    wslay_event_queue_close(ctx_of(ws), (uint16_t)code, (const uint8_t *)reason, len);
    wslay_event_shutdown_read(ws->rx->ctx);
    if (!ws->in_recv)
        finish(ws);
}

static void drop_slow(ws_t *ws)
{
    HD_HUB_STAT_ADD(ws->pub.w, slow_dropped, 1);
    hd_conn_log(HD_LOG_INFO, ws->pub.conn,
                "slow subscriber: %zu bytes queued, %zu held back, %zu of history",
                hd_conn_queued_bytes(ws->pub.conn), ws->bl ? ws->bl->bytes : 0,
                ws->bl ? ws->bl->hist_bytes : 0);
    hd_ws_close(ws, 1013, WS_SLOW_REASON);
}

/* Appends an entry to the backlog (its references pass to it) and counts it. */
static void push_out(ws_t *ws, hd_buf_t *b, hd_message_t *m, uint32_t owner)
{
    if (!ws->bl)
        ws->bl = hd_calloc(1, sizeof(*ws->bl));
    ws_backlog_t *bl = ws->bl;
    if (bl->len == bl->cap) {
        if (bl->head >= bl->cap / 2 && bl->head > 0) {
            memmove(bl->out, bl->out + bl->head, (bl->len - bl->head) * sizeof(*bl->out));
            bl->len -= bl->head;
            bl->head = 0;
        } else {
            bl->out = hd_grow_array(bl->out, &bl->cap, bl->len + 1, sizeof(*bl->out), 16);
        }
    }
    bl->out[bl->len++] = (ws_out_t){b, m, owner};
    if (b)
        bl->bytes += b->len;
    else
        bl->hist_bytes += history_cost(m);
}

/* Releases backlog entry o (sent or purged) and uncounts it. */
static void drop_out(ws_t *ws, ws_out_t *o)
{
    if (o->buf) {
        ws->bl->bytes -= o->buf->len;
        hd_buf_unref(o->buf);
    }
    if (o->msg) {
        ws->bl->hist_bytes -= history_cost(o->msg);
        hd_message_unref(o->msg);
    }
    o->buf = NULL;
    o->msg = NULL;
}

/*
 * Queues frame b (taking a reference) after whatever is held back; owner is the subscription
 * it belongs to (0: the connection's own, e.g. a reply). A client more than max_queue_bytes
 * behind is let go; one frame alone is always allowed.
 */
static void emit_owned(ws_t *ws, hd_buf_t *b, uint32_t owner)
{
    if (!hd_ws_is_open(ws))
        return;
    size_t max = conf_of(ws)->max_queue_bytes;
    if (ws->bl) {
        if (ws->bl->bytes + b->len > max) {
            drop_slow(ws);
            return;
        }
        push_out(ws, hd_buf_ref(b), NULL, owner);
        return;
    }
    size_t queued = hd_conn_queued_bytes(ws->pub.conn);
    if (queued > 0 && queued + b->len > max) {
        drop_slow(ws);
        return;
    }
    flush_control(ws);
    if (!ws->is_gone)
        hd_conn_send(ws->pub.conn, b, 0, b->len);
}

static void emit(ws_t *ws, hd_buf_t *b)
{
    emit_owned(ws, b, 0);
}

int hd_ws_hold_history(ws_t *ws, ws_sub_t *e, hd_message_t *const *msgs, size_t n)
{
    if (!hd_ws_is_open(ws))
        return -1;
    size_t cost = 0;
    for (size_t i = 0; i < n; i++)
        cost += history_cost(msgs[i]);
    size_t held = ws->bl ? ws->bl->hist_bytes : 0;
    if (held > 0 && held + cost > conf_of(ws)->max_queue_bytes) {
        hd_conn_log(HD_LOG_INFO, ws->pub.conn,
                    "history of %s (%zu bytes) on top of %zu held back: over max_queue_bytes",
                    e->channel, cost, held);
        drop_slow(ws);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        push_out(ws, NULL, hd_message_ref(msgs[i]), e->id);
    return 0;
}

/* Drops whatever the backlog holds for subscription id (its history, live frames, gap) and
 * closes the holes, so a client that subscribes and unsubscribes over and over holds nothing. */
static void purge_backlog(ws_t *ws, uint32_t id)
{
    if (!ws->bl)
        return;
    size_t out = ws->bl->head;
    for (size_t i = ws->bl->head; i < ws->bl->len; i++) {
        if (ws->bl->out[i].owner == id)
            drop_out(ws, &ws->bl->out[i]);
        if (ws->bl->out[i].buf || ws->bl->out[i].msg)
            ws->bl->out[out++] = ws->bl->out[i];
    }
    ws->bl->len = out;
    if (ws->bl->head == ws->bl->len)
        free_backlog(ws);
}

/*
 * Moves held-back frames to the connection while it has room, on_drain calls again. A replay
 * fills the queue to half of max_queue_bytes only: the other half is for what comes live (and
 * replies), so a client that reads is never taken for a slow one because a replay filled its
 * queue just before.
 */
void hd_ws_pump(ws_t *ws)
{
    size_t max = conf_of(ws)->max_queue_bytes / 2;
    while (hd_ws_is_open(ws) && ws->bl && ws->bl->head < ws->bl->len) {
        ws_out_t *o = &ws->bl->out[ws->bl->head];
        if (!o->buf && !o->msg) { /* purged */
            ws->bl->head++;
            continue;
        }
        size_t len = o->buf ? o->buf->len : o->msg->len;
        size_t queued = hd_conn_queued_bytes(ws->pub.conn);
        if (queued > 0 && queued + len > max)
            break;
        hd_buf_t *b = o->buf ? hd_buf_ref(o->buf) : hd_message_encode(o->msg, ws->fmt);
        drop_out(ws, o);
        ws->bl->head++;
        flush_control(ws);
        if (!ws->is_gone)
            hd_conn_send(ws->pub.conn, b, 0, b->len);
        hd_buf_unref(b);
    }
    if (ws->bl && ws->bl->head == ws->bl->len && !ws->is_gone)
        free_backlog(ws); /* all sent: an idle connection holds no backlog */
}

/* Queues a JSON object (consumed) as one text frame. */
void hd_ws_emit_json(ws_t *ws, json_t *obj)
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

void hd_ws_emit_gap(ws_t *ws, ws_sub_t *e)
{
    char text[sizeof("{\"type\":\"gap\",\"channel\":\"\",\"reason\":\"\"}") + HD_CHANNEL_MAX +
              sizeof(WS_GAP_REASON)];
    /* channel names need no JSON escaping (their alphabet is safe) */
    int n = snprintf(text, sizeof(text), "{\"type\":\"gap\",\"channel\":\"%s\",\"reason\":\"%s\"}",
                     e->channel, WS_GAP_REASON);
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, (size_t)n + 10);
    hd_ws_frame_header(&sb, WSLAY_TEXT_FRAME, (size_t)n);
    hd_sbuf_append(&sb, text, (size_t)n);
    hd_buf_t *b = hd_sbuf_finish(&sb);
    emit_owned(ws, b, e->id);
    hd_buf_unref(b);
}

/* ---- subscriptions ---- */

ws_sub_t *hd_ws_sub_find(ws_t *ws, const char *channel, size_t len)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++)
        if (ws->pub.subs[i]->len == len && memcmp(ws->pub.subs[i]->channel, channel, len) == 0)
            return ws->pub.subs[i];
    return NULL;
}

ws_sub_t *hd_ws_sub_add(ws_t *ws, const char *channel, size_t len)
{
    if (ws->cap_subs == 0) {
        ws->pub.subs = &ws->sub1;
        ws->cap_subs = 1;
    } else if (ws->pub.n_subs == ws->cap_subs) {
        ws_sub_t **subs = hd_malloc(ws->cap_subs * 2u * sizeof(*subs));
        memcpy(subs, ws->pub.subs, ws->cap_subs * sizeof(*subs));
        if (ws->pub.subs != &ws->sub1)
            free(ws->pub.subs);
        ws->pub.subs = subs;
        ws->cap_subs *= 2;
    }
    ws_sub_t *e = hd_calloc(1, sizeof(*e) + len + 1);
    e->ws = ws;
    e->id = ++ws->next_sub_id;
    e->len = (uint8_t)len;
    memcpy(e->channel, channel, len);
    ws->pub.subs[ws->pub.n_subs++] = e;
    return e;
}

void hd_ws_sub_remove(ws_t *ws, ws_sub_t *e)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++) {
        if (ws->pub.subs[i] == e) {
            ws->pub.subs[i] = ws->pub.subs[--ws->pub.n_subs];
            break;
        }
    }
    purge_backlog(ws, e->id);
    free_sub(e);
}

void hd_ws_sub_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)m;
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    hd_ws_enter(ws);
    emit_owned(ws, encoded, e->id);
    hd_ws_leave(ws);
}

void hd_ws_sub_on_gap(hd_sub_t *s)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    if (ws->pub.mode == WS_MODE_RAW)
        return; /* a plain client has no envelope to carry the notice */
    hd_ws_enter(ws);
    hd_ws_emit_gap(ws, e);
    hd_ws_leave(ws);
}

/*
 * Arms the connection's one timer for the earliest of: the next ping, the idle limit, the auth
 * message's deadline (/ws without a token), and the token's next event (refresh notice, expiry).
 */
static void arm_timer(ws_t *ws, uint64_t now)
{
    const hd_conf_t *conf = conf_of(ws);
    uint64_t ping_at = ws->last_ping_ms + conf->ws_ping_interval_ms;
    uint64_t idle_at = ws->last_rx_ms + conf->ws_idle_timeout_ms;
    uint64_t at = ping_at < idle_at ? ping_at : idle_at;
    if (ws->pub.needs_auth && ws->pub.auth_deadline_ms < at)
        at = ws->pub.auth_deadline_ms;
    uint64_t life = hd_tp_life_wait_ms(&ws->pub.life);
    if (life != UINT64_MAX && now + life < at)
        at = now + life;
    if (!ws->is_gone)
        hd_conn_set_timeout(ws->pub.conn, at > now ? at - now : 1);
}

void hd_ws_life_reset(ws_t *ws)
{
    hd_tp_life_set(&ws->pub.life, conf_of(ws), hd_ws_identity(ws), ws->pub.mode != WS_MODE_RAW);
    if (!ws->is_gone && !ws->is_closing)
        arm_timer(ws, now_ms(ws));
}

/* {"type":"refresh_needed","exp":N}: the token runs out soon (auth_refresh_before). */
static void emit_refresh_needed(ws_t *ws)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("refresh_needed"));
    json_object_set_new(o, "exp", json_integer((json_int_t)hd_identity_exp(hd_ws_identity(ws))));
    hd_ws_emit_json(ws, o);
}

static void start_stream(ws_t *ws)
{
    uint64_t now = ws->last_rx_ms = ws->last_ping_ms = now_ms(ws);
    const hd_conf_t *conf = conf_of(ws);
    if (ws->pub.needs_auth) /* without a token, the auth message must come within auth_timeout */
        ws->pub.auth_deadline_ms = now + conf->auth_timeout_ms;
    hd_tp_life_set(&ws->pub.life, conf, hd_ws_identity(ws), ws->pub.mode != WS_MODE_RAW);
    arm_timer(ws, now);
    if (ws->pub.w->is_draining || ws->pub.w->is_stopped)
        hd_ws_close(ws, 1001, "server shutting down");
}

void hd_ws_upgrade(ws_t *ws, hd_req_t *req)
{
    char head[256];
    snprintf(head, sizeof(head),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s",
             ws->accept,
             ws->has_subprotocol ? "Sec-WebSocket-Protocol: " WS_SUBPROTOCOL "\r\n" : "");
    hd_http_take_over(req, 101, head, &ws_conn_ops, ws); /* may read early frames */
    if (!ws->is_gone)
        start_stream(ws);
}

/* ---- publishing by clients ---- */

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    ws_pending_t *p = arg;
    ws_t *ws = p->ws;
    if (ws) {
        hd_ws_enter(ws);
        hd_list_remove(&p->link);
        ws->n_pubs--;
        ws->proto->on_published(ws, err, n ? msgs[0] : NULL, p->ref);
        if (ws->is_throttled && ws->n_pubs <= WS_MAX_PUBLISHES / 2) {
            ws->is_throttled = 0;
            if (hd_ws_is_open(ws)) {
                hd_conn_read_start(ws->pub.conn);
                read_input(ws);
            }
        }
        hd_ws_leave(ws);
    }
    json_decref(p->ref);
    free(p);
}

/* Publishes m (the reference passes) through the broker; the answer comes to on_published. */
void hd_ws_publish(ws_t *ws, hd_message_t *m, json_t *ref)
{
    ws_pending_t *p = hd_calloc(1, sizeof(*p));
    p->ws = ws;
    p->ref = ref ? json_incref(ref) : NULL;
    hd_list_insert_tail(&ws->pubs, &p->link);
    if (++ws->n_pubs >= WS_MAX_PUBLISHES)
        ws->is_throttled = 1;
    hd_tp_publish(ws->pub.w, &m, 1, on_published, p);
}

/* ---- input ---- */

/*
 * wslay's reader. It hands over ws->rx->in up to the end of the current frame only, and a control
 * frame only once all of it has arrived: wslay checks a close reason for UTF-8 chunk by chunk,
 * restarting past the status code in every chunk, so a close frame must reach it in one piece.
 * The header is read here anyway, so framing errors are answered here, with a reason.
 */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_t *ws = user;
    size_t avail = ws->rx->in_len - ws->rx->in_off;
    if (!hd_ws_is_open(ws) || avail == 0)
        goto block;
    if (ws->rx->frame_left == 0) {
        if (ws->is_throttled)
            goto block; /* between frames: resumed when publishes are answered */
        const char *why = NULL;
        uint64_t plen = 0;
        const uint8_t *p = ws->rx->in + ws->rx->in_off;
        int rc = frame_size(p, avail, &ws->rx->frame_left, &plen, &why);
        if (rc == FRAME_BAD) {
            hd_ws_close(ws, 1002, why);
            goto block;
        }
        if (rc == FRAME_MORE)
            goto block;
        /* Too big is known from the header: answered now, not after the first payload byte. */
        size_t max = conf_of(ws)->max_message_bytes;
        size_t so_far = (p[0] & 0x0f) == WSLAY_CONTINUATION_FRAME ? ws->rx->msg_len : 0;
        if (!(p[0] & 0x08) && plen > max - so_far) {
            ws->rx->frame_left = 0;
            hd_ws_close(ws, 1009, "message larger than max_message_size");
            goto block;
        }
    }
    size_t n = len < avail ? len : avail;
    if (n > ws->rx->frame_left)
        n = (size_t)ws->rx->frame_left;
    memcpy(buf, ws->rx->in + ws->rx->in_off, n);
    ws->rx->in_off += n;
    ws->rx->frame_left -= n;
    return (ssize_t)n;
block:
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws))
        return;
    ws->rx->frame_opcode = arg->opcode;
    if (wslay_is_ctrl_frame(arg->opcode)) {
        ws->rx->ctrl_len = 0;
        return;
    }
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->rx->msg_opcode = arg->opcode;
        ws->rx->msg_len = 0;
        hd_utf8_init(&ws->rx->utf8);
    }
    /* The limit holds for the whole message, checked before anything is buffered. */
    size_t max = conf_of(ws)->max_message_bytes;
    if (ws->rx->msg_len > max || arg->payload_length > max - ws->rx->msg_len) {
        hd_ws_close(ws, 1009, "message larger than max_message_size");
        return;
    }
    size_t need = ws->rx->msg_len + (size_t)arg->payload_length;
    ws->rx->msg = hd_grow(ws->rx->msg, &ws->rx->msg_cap, need, 1024, 0);
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws) || arg->data_length == 0)
        return;
    if (wslay_is_ctrl_frame(ws->rx->frame_opcode)) {
        size_t n = arg->data_length;
        if (n > WS_CTRL_BYTES - ws->rx->ctrl_len)
            n = WS_CTRL_BYTES - ws->rx->ctrl_len;
        memcpy(ws->rx->ctrl + ws->rx->ctrl_len, arg->data, n);
        ws->rx->ctrl_len += n;
        return;
    }
    if (ws->rx->msg_opcode == WSLAY_TEXT_FRAME &&
        hd_utf8_feed(&ws->rx->utf8, arg->data, arg->data_length) < 0) {
        hd_ws_close(ws, 1007, "invalid UTF-8 in a text message");
        return;
    }
    HD_ASSERT(ws->rx->msg_len + arg->data_length <= ws->rx->msg_cap);
    memcpy(ws->rx->msg + ws->rx->msg_len, arg->data, arg->data_length);
    ws->rx->msg_len += arg->data_length;
}

/* The peer's close frame: answered with its code, or with 1002/1007 when it is malformed. */
static void answer_close(ws_t *ws)
{
    const uint8_t *p = ws->rx->ctrl;
    size_t n = ws->rx->ctrl_len;
    unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
    if (n == 1) {
        hd_ws_close(ws, 1002, "close frame with a 1-byte payload");
        return;
    }
    if (n >= 2 && !close_code_valid(code)) {
        hd_ws_close(ws, 1002, "invalid close code");
        return;
    }
    if (n > 2 && !hd_utf8_valid(p + 2, n - 2)) {
        hd_ws_close(ws, 1007, "close reason is not UTF-8");
        return;
    }
    /* Queued before wslay's own echo, which then finds a close queued and stays out. */
    hd_conn_log(HD_LOG_DEBUG, ws->pub.conn, "peer closed with %u", code);
    ws->is_closing = 1;
    clear_backlog(ws);
    wslay_event_queue_close(ctx_of(ws), (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(ws->rx->ctx);
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (hd_ws_is_open(ws) && ws->rx->frame_opcode == WSLAY_CONNECTION_CLOSE)
        answer_close(ws);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws) || wslay_is_ctrl_frame(arg->opcode))
        return; /* wslay has queued the pong for a ping; a pong only shows the peer is alive */
    if (ws->rx->msg_opcode == WSLAY_TEXT_FRAME && !hd_utf8_complete(&ws->rx->utf8)) {
        hd_ws_close(ws, 1007, "text message ends inside a UTF-8 sequence");
        return;
    }
    const char *data = ws->rx->msg ? (const char *)ws->rx->msg : "";
    ws->proto->on_message(ws, ws->rx->msg_opcode, data, ws->rx->msg_len);
    ws->rx->msg_len = 0;
    ws->rx->msg_opcode = 0;
    if (ws->rx->msg_cap > WS_KEEP_MSG_BYTES) {
        free(ws->rx->msg);
        ws->rx->msg = NULL;
        ws->rx->msg_cap = 0;
    }
}

/* Lets wslay read what has arrived; ends the connection when a close frame has been queued. */
static void read_input(ws_t *ws)
{
    if (!hd_ws_is_open(ws))
        return;
    ws->in_recv = 1;
    int rc = wslay_event_recv(ctx_of(ws));
    ws->in_recv = 0;
    if (ws->is_gone)
        return;
    if (ws->is_closing)
        ws->rx->in_off = ws->rx->in_len;
    if (ws->rx->in_off) { /* an idle connection has no input buffer at all (in == NULL) */
        memmove(ws->rx->in, ws->rx->in + ws->rx->in_off, ws->rx->in_len - ws->rx->in_off);
        ws->rx->in_len -= ws->rx->in_off;
        ws->rx->in_off = 0;
    }
    if (rc != 0) {
        hd_conn_log(HD_LOG_WARN, ws->pub.conn, "wslay failed (%d): closing", rc);
        hd_conn_close(ws->pub.conn);
        return;
    }
    flush_control(ws);
    if (ws->is_gone)
        return;
    if (ws->is_closing || wslay_event_get_close_sent(ws->rx->ctx)) {
        if (!ws->is_closing)
            hd_conn_log(HD_LOG_INFO, ws->pub.conn, "protocol error: closed with %u",
                        wslay_event_get_status_code_sent(ws->rx->ctx));
        ws->is_closing = 1;
        hd_conn_finish(ws->pub.conn);
        return;
    }
    if (ws->is_throttled && ws->rx->in_len > WS_KEEP_MSG_BYTES)
        hd_conn_read_stop(ws->pub.conn); /* on_published starts reading again */
    if (hd_conn_queued_bytes(ws->pub.conn) > conf_of(ws)->max_queue_bytes)
        drop_slow(ws); /* a peer that pings (or asks) much faster than it reads */
    else
        release_rx_if_idle(ws);
}

/* ---- the connection ---- */

static void ws_on_data(hd_conn_t *c, const char *data, size_t len)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    ws->last_rx_ms = now_ms(ws);
    if (hd_ws_is_open(ws)) {
        ctx_of(ws);
        ws_rx_t *rx = ws->rx;
        rx->in = hd_grow(rx->in, &rx->in_cap, rx->in_len + len, 4096, 0);
        memcpy(rx->in + rx->in_len, data, len);
        rx->in_len += len;
        read_input(ws);                                      /* may free rx (release_rx_if_idle) */
        if (!ws->is_gone && ws->rx && ws->rx->in_len == 0) { /* no input buffer while idle */
            free(ws->rx->in);
            ws->rx->in = NULL;
            ws->rx->in_cap = 0;
        }
    }
    hd_ws_leave(ws);
}

static void ws_on_eof(hd_conn_t *c)
{
    hd_conn_log(HD_LOG_DEBUG, c, "peer went away without a close frame");
    hd_conn_close(c);
}

/* The one timer: a ping every ws_ping_interval, the end of a peer silent too long, and the
 * token's refresh notice and expiry (docs/auth.md). */
static void ws_on_timeout(hd_conn_t *c)
{
    ws_t *ws = c->data;
    const hd_conf_t *conf = conf_of(ws);
    hd_ws_enter(ws);
    uint64_t now = now_ms(ws);
    int life = hd_tp_life_due(&ws->pub.life);
    if (life == HD_TP_LIFE_EXPIRED) {
        hd_conn_log(HD_LOG_INFO, c, "token expired: closing (4001)");
        hd_ws_close(ws, 4001, "token expired");
    } else if (ws->pub.needs_auth && now >= ws->pub.auth_deadline_ms) {
        hd_ws_close(ws, 4401,
                    "authentication timed out: send {\"op\":\"auth\",\"token\":..} first");
    } else if (now - ws->last_rx_ms >= conf->ws_idle_timeout_ms) {
        HD_STAT_INC(c->worker, timeouts); /* herald_timeouts_total, as HTTP's timeouts */
        hd_ws_close(ws, 1001, "idle timeout");
    } else {
        if (life == HD_TP_LIFE_REFRESH)
            emit_refresh_needed(ws);
        if (now - ws->last_ping_ms >= conf->ws_ping_interval_ms) {
            struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
            wslay_event_queue_msg(ctx_of(ws), &ping);
            flush_control(ws);
            release_rx_if_idle(ws);
            ws->last_ping_ms = now;
        }
        arm_timer(ws, now);
    }
    hd_ws_leave(ws);
}

static void ws_on_drain(hd_conn_t *c)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    hd_ws_pump(ws);
    hd_ws_leave(ws);
}

static void ws_on_shutdown(hd_conn_t *c)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    hd_ws_close(ws, 1001, "server shutting down");
    hd_ws_leave(ws);
}

static void ws_on_close(hd_conn_t *c)
{
    hd_ws_gone(c->data);
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

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_frame_recv_start_callback = on_frame_start,
    .on_frame_recv_chunk_callback = on_frame_chunk,
    .on_frame_recv_end_callback = on_frame_end,
    .on_msg_recv_callback = on_msg,
};

/*
 * The wslay context (about 9 KiB) and the rest of ws_rx_t exist only while the peer is sending
 * or a control frame is going out: an idle subscriber holds none. Created on demand...
 */
static wslay_event_context_ptr ctx_of(ws_t *ws)
{
    if (!ws->rx) {
        ws->rx = hd_calloc(1, sizeof(*ws->rx));
        HD_ASSERT(wslay_event_context_server_init(&ws->rx->ctx, &callbacks, ws) == 0);
        /* Data frames are reassembled here (size checked first); wslay buffers control frames. */
        wslay_event_config_set_no_buffering(ws->rx->ctx, 1);
        wslay_event_config_set_max_recv_msg_length(ws->rx->ctx, UINT64_MAX);
    }
    return ws->rx->ctx;
}

static void free_rx(ws_t *ws)
{
    ws_rx_t *rx = ws->rx;
    if (!rx)
        return;
    hd_sbuf_dispose(&rx->ctl);
    wslay_event_context_free(rx->ctx);
    free(rx->in);
    free(rx->msg);
    free(rx);
    ws->rx = NULL;
}

/* ...and freed when it holds nothing: no input waiting, no frame or fragmented message half
 * received, nothing to send, no close under way. */
static void release_rx_if_idle(ws_t *ws)
{
    ws_rx_t *rx = ws->rx;
    if (!rx || ws->is_gone || ws->is_closing || ws->in_recv || rx->in_len || rx->frame_left ||
        rx->msg_opcode || wslay_event_want_write(rx->ctx) || wslay_event_get_close_sent(rx->ctx) ||
        wslay_event_get_close_received(rx->ctx))
        return;
    free_rx(ws);
}

ws_t *hd_ws_new(hd_req_t *req, int mode, const ws_proto_t *proto, const ws_handshake_t *hs)
{
    ws_t *ws = hd_calloc(1, sizeof(*ws));
    ws->pub.w = req->conn->worker;
    ws->pub.conn = req->conn;
    ws->pub.mode = (uint8_t)mode;
    ws->proto = proto;
    ws->fmt = mode == WS_MODE_RAW ? HD_FMT_WS_RAW : HD_FMT_WS_ENVELOPE;
    ws->has_subprotocol = hs->has_subprotocol;
    ws->is_local = hs->is_local;
    memcpy(ws->accept, hs->accept, sizeof(ws->accept));
    if (hs->bearer) {
        ws->bearer = hd_malloc(hs->bearer_len + 1);
        memcpy(ws->bearer, hs->bearer, hs->bearer_len);
        ws->bearer_len = (uint32_t)hs->bearer_len;
    }
    hd_list_init(&ws->pubs);
    hd_bucket_init(&ws->pub_bucket);
    HD_HUB_STAT_ADD(ws->pub.w, transport_conns[HD_TP_WS], 1);
    return ws;
}
