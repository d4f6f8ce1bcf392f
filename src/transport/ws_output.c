/* SPDX-License-Identifier: MIT */
/*
 * ws_output.c: a WebSocket connection's one writer. Everything goes through the connection's
 * queue, in call order:
 *   - live messages: the hub's frame, encoded once per worker (HD_FMT_WS_RAW or
 *     HD_FMT_WS_ENVELOPE) and queued by reference, so one buffer serves every subscriber;
 *   - history on resume and JSON protocol replies: encoded for this connection;
 *   - control frames (pong, ping, close): wslay's, flushed first (hd_ws_flush_control).
 * History is replayed through a backlog (ws_backlog.c) refilled as the socket drains
 * (hd_ws_pump from on_drain), so a resume longer than max_queue_bytes completes; live frames
 * that arrive meanwhile wait behind it and count against max_queue_bytes as if they were queued.
 * A client too far behind is let go as a slow consumer (1013).
 */
#include "ws_internal.h"

#include <string.h>

/*
 * Queues frame b (taking a reference) after whatever is held back; owner is the subscription
 * it belongs to (0: the connection's own, e.g. a reply). A client more than max_queue_bytes
 * behind is let go; one frame alone is always allowed.
 */
void hd_ws_emit(ws_t *ws, hd_buf_t *b, uint32_t owner)
{
    if (!hd_ws_is_open(ws))
        return;
    size_t max = conf_of(ws)->max_queue_bytes;
    if (ws->bl) {
        if (ws->bl->bytes + b->len > max) {
            hd_ws_drop_slow(ws);
            return;
        }
        hd_ws_backlog_push(ws, hd_buf_ref(b), NULL, owner);
        return;
    }
    size_t queued = hd_conn_queued_bytes(ws->pub.conn);
    if (queued > 0 && queued + b->len > max) {
        hd_ws_drop_slow(ws);
        return;
    }
    hd_ws_flush_control(ws);
    if (!ws->is_gone)
        hd_conn_send(ws->pub.conn, b, 0, b->len);
}

static void emit(ws_t *ws, hd_buf_t *b)
{
    hd_ws_emit(ws, b, 0);
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
        hd_ws_drop_slow(ws);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        hd_ws_backlog_push(ws, NULL, hd_message_ref(msgs[i]), e->id);
    return 0;
}

/* A history message with receipts goes out on its subscription: as a live one would. */
static void note_history(ws_t *ws, ws_out_t *o)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++)
        if (ws->pub.subs[i]->id == o->owner)
            hd_ws_ack_note(ws, ws->pub.subs[i], o->msg);
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
        if (o->msg && o->msg->rcpt)
            note_history(ws, o);
        hd_ws_backlog_drop(ws, o);
        ws->bl->head++;
        hd_ws_flush_control(ws);
        if (!ws->is_gone)
            hd_conn_send(ws->pub.conn, b, 0, b->len);
        hd_buf_unref(b);
    }
    if (ws->bl && ws->bl->head == ws->bl->len && !ws->is_gone)
        hd_ws_backlog_free(ws); /* all sent: an idle connection holds no backlog */
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

void hd_ws_emit_text(ws_t *ws, const char *text, size_t n)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, n + 10);
    hd_ws_frame_header(&sb, WSLAY_TEXT_FRAME, n);
    hd_sbuf_append(&sb, text, n);
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
    hd_ws_emit(ws, b, e->id);
    hd_buf_unref(b);
}
