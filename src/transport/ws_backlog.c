/* SPDX-License-Identifier: MIT */
/*
 * ws_backlog.c: the frames a WebSocket connection holds back while history is replayed
 * (ws_backlog_t, ws_internal.h): appended, released as they are sent (ws_output.c) or when their
 * subscription goes, and counted against max_queue_bytes. It exists only while something is
 * held: an idle connection has none.
 */
#include "ws_internal.h"

#include <string.h>

void hd_ws_backlog_free(ws_t *ws)
{
    free(ws->bl->out);
    free(ws->bl);
    ws->bl = NULL;
}

void hd_ws_backlog_clear(ws_t *ws)
{
    if (!ws->bl)
        return;
    for (size_t i = ws->bl->head; i < ws->bl->len; i++)
        hd_ws_backlog_drop(ws, &ws->bl->out[i]);
    HD_ASSERT(ws->bl->bytes == 0 && ws->bl->hist_bytes == 0);
    hd_ws_backlog_free(ws);
}

/* Appends an entry to the backlog (its references pass to it) and counts it. */
void hd_ws_backlog_push(ws_t *ws, hd_buf_t *b, hd_message_t *m, uint32_t owner)
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
void hd_ws_backlog_drop(ws_t *ws, ws_out_t *o)
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

/* Drops whatever the backlog holds for subscription id (its history, live frames, gap) and
 * closes the holes, so a client that subscribes and unsubscribes over and over holds nothing. */
void hd_ws_backlog_purge(ws_t *ws, uint32_t id)
{
    if (!ws->bl)
        return;
    size_t out = ws->bl->head;
    for (size_t i = ws->bl->head; i < ws->bl->len; i++) {
        if (ws->bl->out[i].owner == id)
            hd_ws_backlog_drop(ws, &ws->bl->out[i]);
        if (ws->bl->out[i].buf || ws->bl->out[i].msg)
            ws->bl->out[out++] = ws->bl->out[i];
    }
    ws->bl->len = out;
    if (ws->bl->head == ws->bl->len)
        hd_ws_backlog_free(ws);
}
