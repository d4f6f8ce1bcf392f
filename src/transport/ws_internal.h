/* SPDX-License-Identifier: MIT */
/*
 * ws_internal.h: the WebSocket connection's own state (struct ws_s) and what the files that
 * implement it share. Only those files include it; the protocols (websocket.c, ws_json.c,
 * ws_refresh.c) see the connection through websocket.h.
 *
 *   ws_publish.c   client publishes: rate, authorization, the broker's answers
 *   ws_ticket.c    a ticket from the /ws auth message, taken from the broker while input waits
 *   ws_hook.c      a /ws subscribe op asking the authorize hook while input waits
 *        |
 *        v
 *   ws_conn.c      creation, upgrade, lifetime (enter/leave/gone), the one timer, the
 *        |         connection's handler table, its subscriptions
 *        v
 *   ws_output.c    the one writer: live frames, replies and history, paced by the backlog
 *        |
 *        v
 *   ws_frame.c     the wslay glue: frames in, control frames out, close codes, the
 *        |         slow-consumer close
 *        v
 *   ws_backlog.c   the frames held back while history is replayed, and what they count
 *   ws_ack.c       acks of a subscription made with "ack", the receipts due at them (called
 *                  by ws_conn.c, ws_output.c and the protocols; calls no other ws_ file)
 *
 * Calls run downwards only (unit.depgraph): a file never calls one above it.
 */
#ifndef HERALD_TRANSPORT_WS_INTERNAL_H
#define HERALD_TRANSPORT_WS_INTERNAL_H

#include "websocket.h"

#include "herald/bucket.h"

#define WS_CTRL_BYTES     125 /* a control frame's payload */
#define WS_ENVELOPE_BYTES 256 /* a herald.v1 envelope around a payload, at most (history_cost) */

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
    hd_sbuf_t ctl; /* what wslay writes during one hd_ws_flush_control */
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
    char accept[32];  /* Sec-WebSocket-Accept, until the upgrade */
    char *bearer;     /* the handshake's Authorization: Bearer token, or NULL */
    json_t *hook_ctx; /* /ws with an authorize_hook: the handshake's client, headers, cookies */
    ws_rx_t *rx;      /* NULL while the peer is silent */
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
    unsigned is_authing : 1;   /* a ticket is being taken (ws_ticket.c), or the authorize hook
                                  asked (ws_hook.c): input waits */
    unsigned has_subprotocol : 1;
    unsigned is_local : 1; /* the handshake came from this host (hd_tp_peer_is_local) */
    unsigned n_due : 16;   /* receipts due at an ack, all subscriptions (<= WS_MAX_DUE) */
    hd_rcpt_t *rcpt;       /* where receipts of its publishes go (ws_publish.c), or NULL */
};

_Static_assert(WS_MAX_DUE < 65536, "ws_t.n_due holds WS_MAX_DUE in 16 bits");

static inline const hd_conf_t *conf_of(const ws_t *ws)
{
    return hd_worker_conf(ws->pub.w);
}

static inline uint64_t now_ms(ws_t *ws)
{
    return uv_now(&ws->pub.w->loop);
}

/* What a held-back history message counts against max_queue_bytes: its payload and a frame's
 * worth of envelope (an upper bound for the header, the id and the channel). */
static inline size_t history_cost(const hd_message_t *m)
{
    return m->len + WS_ENVELOPE_BYTES;
}

/* ---- ws_frame.c ---- */

/* The connection's wslay context, created with the rest of ws_rx_t when there is none. */
wslay_event_context_ptr hd_ws_ctx(ws_t *ws);
/* Frees ws->rx (if any). */
void hd_ws_free_rx(ws_t *ws);
/* Frees ws->rx when it holds nothing: an idle subscriber keeps no wslay context. */
void hd_ws_release_rx_if_idle(ws_t *ws);
/* Bytes from the peer: whole messages read without wslay while it has nothing half-sent, the
 * rest buffered and read by wslay (hd_ws_read_input). */
void hd_ws_on_input(ws_t *ws, const char *data, size_t len);
/* Lets wslay read what has arrived; ends the connection when a close frame has been queued. */
void hd_ws_read_input(ws_t *ws);
/* Queues the control frames wslay holds (pong, ping, close) on the connection, now. */
void hd_ws_flush_control(ws_t *ws);
/* Lets a slow consumer go: counted, logged, closed with 1013. */
void hd_ws_drop_slow(ws_t *ws);

/* ---- ws_backlog.c ---- */

/* Appends an entry to the backlog, created if need be (its references pass to it), counted. */
void hd_ws_backlog_push(ws_t *ws, hd_buf_t *b, hd_message_t *m, uint32_t owner);
/* Releases backlog entry o (sent or purged) and uncounts it. */
void hd_ws_backlog_drop(ws_t *ws, ws_out_t *o);
/* Frees the backlog's memory (its entries already dropped). */
void hd_ws_backlog_free(ws_t *ws);
/* Drops every entry and frees the backlog (nothing when there is none). */
void hd_ws_backlog_clear(ws_t *ws);
/* Drops what the backlog holds for subscription id and closes the holes. */
void hd_ws_backlog_purge(ws_t *ws, uint32_t id);

/* ---- ws_output.c ---- */

/* Queues frame b (a reference is taken) after whatever is held back, for subscription owner
 * (0: the connection's own). */
void hd_ws_emit(ws_t *ws, hd_buf_t *b, uint32_t owner);

#endif
