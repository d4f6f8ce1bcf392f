/* SPDX-License-Identifier: MIT */
/*
 * websocket.h: private to the WebSocket transport (src/transport/ws_*.c and websocket.c).
 *
 *   websocket.c      routes (GET /ws/{channel}, GET /ws), the /ws/{channel} protocol
 *        |     \
 *        |      ws_json.c       the /ws JSON protocol: subscribe, unsubscribe, publish, ping
 *        v     /
 *   the connection   ws_publish.c  client publishes: rate, authorization, broker answers
 *   (ws_internal.h)  ws_conn.c     lifetime, the one timer, subscriptions
 *                    ws_output.c   the one writer: live frames, replies, history
 *                    ws_frame.c    framing (wslay glue), control frames, close codes
 *                    ws_backlog.c  frames held back while history is replayed
 *                    ws_ack.c      acks and the "acked" receipts due at them
 *   ws_refresh.c     {"type":"refresh"}: a new token for a live connection (both protocols)
 *   ws_hook.c        a subscribe op asking the authorize hook (docs/webhooks.md)
 *   ws_handshake.c   the opening handshake (RFC 6455 4.2.1): checks, Sec-WebSocket-Accept
 *
 * Dependencies run downwards only: the connection knows no protocol; it calls the one a
 * connection was created with through its ws_proto_t table (as wslay calls back through its
 * callbacks). Only the fields documented "public" below are read outside the connection's files,
 * which share the rest of struct ws_s through ws_internal.h.
 */
#ifndef HERALD_TRANSPORT_WEBSOCKET_H
#define HERALD_TRANSPORT_WEBSOCKET_H

#include "herald/bucket.h"
#include "herald/hooks.h"
#include "herald/transport.h"
#include "herald/utf8.h"

#include <jansson.h>
#include <wslay/wslay.h>

#define WS_SUBPROTOCOL  "herald.v1"
#define WS_GAP_REASON   "history lost or expired; some messages may be missing"
#define WS_CHANNEL_RULE "1-128 characters of A-Z a-z 0-9 . _ - : @"

enum { WS_MODE_RAW, WS_MODE_ENVELOPE, WS_MODE_JSON };

typedef struct ws_s ws_t;

/* ---- the handshake (ws_handshake.c) ---- */

/* The handshake, checked. */
typedef struct ws_handshake_s {
    char accept[32];    /* Sec-WebSocket-Accept */
    const char *bearer; /* Authorization: Bearer token (in the request), or NULL */
    size_t bearer_len;
    unsigned has_subprotocol : 1;
    unsigned is_local : 1; /* hd_tp_peer_is_local: may publish when no publish_key is set */
} ws_handshake_t;

/* Checks the opening handshake of req (RFC 6455 4.2.1) into hs. Returns 0, or -1 after
 * answering (405, 426, 400 or 403). */
int hd_ws_check_handshake(hd_req_t *req, ws_handshake_t *hs);

/* ---- a protocol spoken over a connection ---- */

typedef struct ws_proto_s {
    /* A whole data message, frames checked (text is valid UTF-8, fragments in order, size
     * within max_message_size): what it may do (policy) is the protocol's to decide here.
     * data is not NUL-terminated. */
    void (*on_message)(ws_t *ws, uint8_t opcode, const char *data, size_t len);
    /* The broker's answer to hd_ws_publish(): err, or 0 with m's id set. ref as given there. */
    void (*on_published)(ws_t *ws, int err, const hd_message_t *m, json_t *ref);
} ws_proto_t;

/* ---- the connection (ws_conn.c, ws_output.c, ws_frame.c, ws_publish.c) ---- */

/* One subscription of a connection. */
typedef struct ws_sub_s {
    ws_t *ws;
    hd_sub_t *sub;        /* NULL once the hub has let it go */
    json_t *ref;          /* JSON protocol: the subscribe's "ref", until "subscribed" is sent */
    struct ws_ack_s *ack; /* made with "ack": the position acked, receipts due (ws_ack.c) */
    uint32_t id;          /* unique on its connection: what the backlog holds for it is tagged so */
    uint8_t len;
    char channel[]; /* len bytes and a NUL: sized to the name */
} ws_sub_t;

/* The public part of a connection; the rest is its files' (ws_internal.h). */
typedef struct ws_public_s {
    hd_worker_t *w;
    hd_conn_t *conn;  /* NULL once gone */
    hd_deferred_t *d; /* /ws/{channel}: the handshake, until the subscription is live */
    ws_sub_t **subs;
    uint32_t n_subs;
    uint8_t mode; /* WS_MODE_* */
    /* Authorization (docs/auth.md): the identity is the connection's (conn->identity). */
    unsigned needs_auth : 1;   /* /ws: the first message must be {"op":"auth"} */
    unsigned is_backend : 1;   /* the handshake's bearer was the publish key */
    uint8_t n_asks;            /* /ws: presence snapshots asked, not answered yet */
    uint64_t auth_deadline_ms; /* /ws without a token: close 4401 unless auth comes by then */
    hd_tp_life_t life;         /* the identity's refresh notice and expiry (lifetime.c) */
    hd_bucket_t eph_bucket;    /* ephemeral_rate: a second's worth at once */
} ws_public_t;

/* A connection not yet upgraded, with mode, proto and the checked handshake (its bearer token
 * is copied: publishing checks it against the publish key of the moment). */
ws_t *hd_ws_new(hd_req_t *req, int mode, const ws_proto_t *proto, const ws_handshake_t *hs);
static inline ws_public_t *hd_ws_pub(ws_t *ws)
{
    return (ws_public_t *)ws; /* the public part comes first */
}
static inline const hd_conf_t *hd_ws_conf(ws_t *ws)
{
    return hd_worker_conf(hd_ws_pub(ws)->w);
}
/* Answers req with 101 and hands the connection to ws. */
void hd_ws_upgrade(ws_t *ws, hd_req_t *req);
/* Brackets work that may end the connection: memory goes only when the outermost leaves. */
void hd_ws_enter(ws_t *ws);
void hd_ws_leave(ws_t *ws);
/* The connection has gone (or never came): stops every subscription, frees when not busy. */
void hd_ws_gone(ws_t *ws);
/* 1 if the handshake's bearer token is one of the publish keys now, or no key is set and the
 * handshake came from a local client (hd_tp_peer_is_local): checked on each client publish, so
 * a key set or rotated by a reload holds for live sessions too. */
int hd_ws_bearer_ok(ws_t *ws);
/* The connection's identity (NULL: anonymous, or gone). */
static inline hd_identity_t *hd_ws_identity(ws_t *ws)
{
    return hd_ws_pub(ws)->conn ? hd_ws_pub(ws)->conn->identity : NULL;
}
/*
 * May this connection publish to channel (a client publish)? With auth off, or from the
 * backend (the handshake's bearer is the publish key), yes. Otherwise the channel's rule
 * decides for the connection's identity: returns 0, or the HD_E* refusal with a reason.
 */
int hd_ws_may_publish(ws_t *ws, const char *channel, size_t len, const char **reason);
/* Stamps m with the connection's identity as its publisher (nothing for the backend). */
void hd_ws_stamp(ws_t *ws, hd_message_t *m);

/* The connection's identity changed (auth, refresh): its refresh notice and expiry follow the
 * new exp, and the timer is re-armed for them. */
void hd_ws_life_reset(ws_t *ws);

/* 1 while neither gone nor closing. */
int hd_ws_is_open(const ws_t *ws);
/* client_publish_rate: 1 when the client may publish now (a token is taken), else 0 with
 * *retry_ms until it may (counted in client_publish_refused). */
int hd_ws_publish_allowed(ws_t *ws, uint64_t *retry_ms);
/* Sends a close frame with code and reason, then ends the connection. */
void hd_ws_close(ws_t *ws, int code, const char *reason);

/* Queues a JSON object (consumed) as one text frame, after anything held back. */
void hd_ws_emit_json(ws_t *ws, json_t *obj);
/* Queues text[0..n) (JSON the caller wrote) as one text frame, after anything held back. */
void hd_ws_emit_text(ws_t *ws, const char *text, size_t n);
/* Queues a gap notice for e's channel. */
void hd_ws_emit_gap(ws_t *ws, ws_sub_t *e);
/*
 * Holds e's history msgs[0..n) back (references taken), to be sent by hd_ws_pump() as the
 * socket drains. History counts against max_queue_bytes: one subscription's replay may be
 * larger (it is paced by the reader), but history held for several may not. Returns 0, or -1
 * when the connection was let go as a slow consumer (1013) instead.
 */
int hd_ws_hold_history(ws_t *ws, ws_sub_t *e, hd_message_t *const *msgs, size_t n);
/* Moves held-back frames to the connection while it has room. */
void hd_ws_pump(ws_t *ws);

/* A connection's subscriptions: add (not yet subscribed at the hub), find, remove (and free,
 * with whatever the backlog still holds for it). */
ws_sub_t *hd_ws_sub_add(ws_t *ws, const char *channel, size_t len);
ws_sub_t *hd_ws_sub_find(ws_t *ws, const char *channel, size_t len);
void hd_ws_sub_remove(ws_t *ws, ws_sub_t *e);
/* The hub's live callbacks, for each protocol's hd_sub_ops_t (s->data is the ws_sub_t). */
void hd_ws_sub_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded);
void hd_ws_sub_on_gap(hd_sub_t *s);

/* Publishes m (the reference passes) for the client; the answer goes to proto->on_published
 * with ref (a reference is taken). Input waits while too many publishes are in flight. */
void hd_ws_publish(ws_t *ws, hd_message_t *m, json_t *ref);
/* The client asks delivery receipts of m (not yet published): they come to this connection as
 * {"type":"receipt",...} frames (docs/chat.md). */
void hd_ws_want_receipts(ws_t *ws, hd_message_t *m);

/* ---- acknowledged delivery (ws_ack.c; docs/chat.md) ---- */

/* At most this many messages with receipts waiting for an ack, per connection (all its
 * subscriptions): past it the oldest of the subscription is dropped (its "acked" receipt is
 * never sent; counted in receipts_dropped). */
#define WS_MAX_DUE 256
/* Subscription e tracks acks ("ack":true on subscribe). */
void hd_ws_ack_enable(ws_sub_t *e);
/* Releases what e's acks hold (its receipts due). */
void hd_ws_ack_free(ws_t *ws, ws_sub_t *e);
/* m was queued on subscription e (live or history): the "delivered" receipt when it is the first
 * subscriber, and when e tracks acks an "acked" receipt due at its ack. Nothing for a message
 * without receipts. */
void hd_ws_ack_note(ws_t *ws, ws_sub_t *e, hd_message_t *m);
/*
 * The client acked (epoch, seq) on e, cumulatively: everything up to it is processed. Sends the
 * "acked" receipts now due. Returns 0 (an ack at or below the last one changes nothing), or -1
 * with *code and *why for the client: ack_off (e was made without "ack"), ack_ahead (beyond
 * what was sent on e, or before "subscribed"), bad_id (an id of another epoch than e's stream).
 */
int hd_ws_ack(ws_t *ws, ws_sub_t *e, uint64_t epoch, uint64_t seq, const char **code,
              const char **why);

/*
 * Takes the single-use ticket (HD_TICKET_LEN valid characters) from the broker for ws's auth
 * message (ws_ticket.c). Until the answer, the connection's input waits (frames already
 * received included), and ws stays allocated. Then, unless the connection has gone, done runs
 * with err 0 and the ticket's identity (borrowed: ref it to keep it), or HD_ENOTFOUND (unknown,
 * used or expired), HD_EOVERLOAD (the broker cannot answer), HD_EUNAUTHENTICATED (claims
 * unusable); ref is the auth message's "ref" (a reference is held meanwhile).
 */
typedef void (*ws_ticket_cb)(ws_t *ws, int err, hd_identity_t *id, json_t *ref);
void hd_ws_take_ticket(ws_t *ws, const char *ticket, ws_ticket_cb done, json_t *ref);

/*
 * Asks the authorize hook whether ws may subscribe to channel[0..len) (action: subscribe or
 * history), the question carrying the handshake's client, headers and cookies and the
 * connection's identity (ws_hook.c). Until the answer, input waits and ws stays allocated, as
 * for a ticket. Then, unless the connection has gone, done runs with HD_HOOKS_ALLOW (also for
 * a failed backend under on_error=allow; the answer's identity is not used: a connection's
 * identity is settled at its connect), HD_HOOKS_DENY with the backend's reason, or
 * HD_HOOKS_ERROR with code "backend_busy" (the worker's max_pending) or
 * "backend_unavailable"; root and ref are the subscribe op's (references held meanwhile).
 */
typedef void (*ws_hook_cb)(ws_t *ws, int verdict, const char *code, const char *reason,
                           json_t *root, json_t *ref);
void hd_ws_ask_hook(ws_t *ws, const char *channel, size_t len, hd_auth_action_t action,
                    ws_hook_cb done, json_t *root, json_t *ref);

/* ---- refreshing the token (ws_refresh.c) ---- */

enum { WS_REFRESHED = 0, WS_REFRESH_REFUSED = 1, WS_REFRESH_CLOSED = -1 };

/*
 * Replaces the connection's identity with the one token[0..len) proves (docs/auth.md, "Staying
 * authorized"). Returns:
 *   WS_REFRESHED        the new identity is the connection's: its expiry and refresh notice
 *                       moved; on /ws each subscription its grants no longer allow is dropped
 *                       with an {"type":"unsubscribed","code":"forbidden"} notice;
 *   WS_REFRESH_REFUSED  *code and why say why (the connection has no token to refresh, the
 *                       token is invalid, expired or revoked); nothing changed: the connection
 *                       still ends at the old exp;
 *   WS_REFRESH_CLOSED   the connection was closed with 4003: the token is another user's (a
 *                       different sub), or /ws/{channel}'s one channel is no longer granted.
 */
int hd_ws_refresh(ws_t *ws, const char *token, size_t len, const char **code, char *why,
                  size_t whylen);
/* {"type":"refreshed","exp":N,"sub":..} (ref echoed when not NULL) after WS_REFRESHED. */
void hd_ws_emit_refreshed(ws_t *ws, json_t *ref);

/* ---- protocols ---- */

/* ws_json.c: the /ws JSON protocol. */
extern const ws_proto_t hd_ws_json_proto;

#endif
