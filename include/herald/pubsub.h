/* SPDX-License-Identifier: MIT */
/*
 * pubsub.h: messages, ids, the broker protocol and the per-worker hub.
 *
 * Publish once, deliver everywhere (the embedded broker; src/broker/memory.c):
 *
 *   worker A: POST /pub/ch -> submit(PUBLISH) runs on A, under the store's lock:
 *                               id, history, push DELIVER(msg ref) on every worker with
 *                    +-------   subscribers on ch, then push the reply on A; unlock, wake B
 *                    v                            v (one hop)
 *   worker A hub: encode once per wire format   worker B hub: same, its own buffers
 *      sub1 (sse)  sub2 (sse)  sub3 (ws)           sub4 (lp) ...
 *      \__ same hd_buf_t __/
 *
 * Workers own their subscribers and talk to the broker only through requests (hd_breq_t) and
 * their mailboxes; the embedded broker's store is shared behind one mutex held for table work
 * only, and nothing on the delivery path takes a lock. The Redis bridge implements the same
 * protocol for many nodes, on a thread of its own.
 *
 * Ordering: a broker handles requests one at a time (the embedded one: one critical section
 * each) and pushes to a worker through one FIFO mailbox, so a SUBSCRIBE reply reaches the
 * worker before any message published after it, and every message published before it is
 * either in the reply's history or already queued. A subscriber delivers only sequence numbers
 * above the last it delivered: no gap, no duplicate.
 *
 * Ids: "<epoch>-<seq>". seq is node-wide and strictly increasing (so one id resumes any set of
 * channels), epoch changes whenever history may have been lost (a broker restart).
 */
#ifndef HERALD_PUBSUB_H
#define HERALD_PUBSUB_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "herald/buf.h"
#include "herald/server.h"

#define HD_CHANNEL_MAX 128
#define HD_ID_MAX      40

/* ---- messages ---- */

typedef struct hd_message_s {
    int refs; /* atomic: a message crosses loops */
    uint64_t seq;
    uint64_t epoch;
    uint64_t time_ms;     /* publish time (wall clock), for history_ttl */
    uint64_t publish_ns;  /* uv_hrtime() when the broker took it: fan-out latency */
    uint8_t is_text;      /* payload is text (UTF-8): by content type */
    uint8_t is_after_gap; /* the broker lost messages of its channel just before it (on_gap) */
    uint8_t id_len;
    uint8_t channel_len;
    uint8_t kind; /* HD_MSG_*: a published message, or a live-only event (no id, no history) */
    char id[HD_ID_MAX];
    char channel[HD_CHANNEL_MAX + 1];
    /* hd_hash(channel) when known (a presence event: the joining worker's channel had it), so
     * the tables it passes look it up without hashing; 0: not known */
    uint64_t channel_hash;
    char *content_type; /* inside this allocation, NUL-terminated */
    size_t len;
    char *data; /* inside this allocation */
    /*
     * Publishing only: the client's idempotency key (an allocation of its own, or NULL). The
     * broker reads it and frees it (hd_message_take_idem_key) before anyone else sees the message.
     */
    char *idem_key;
    /*
     * Who published it, stamped by the server for a client with an identity (auth.h): compact
     * JSON {"sub":..,"info":{..}} (an allocation of its own), or NULL for the backend and
     * anonymous clients. Set before publishing (hd_message_set_publisher), never by a client's
     * bytes; envelopes and poll objects carry it as "publisher".
     */
    char *publisher;
    /*
     * Delivery receipts (docs/chat.md): where they go when the publisher asked for them (a
     * reference, dropped with the message), or NULL. Set before publishing; rcpt_done is the
     * one "delivered" receipt's flag (atomic: the first worker to write the message to a
     * subscriber sends it).
     */
    struct hd_rcpt_s *rcpt;
    uint8_t rcpt_done;
} hd_message_t;

/*
 * What a message is. Only HD_MSG_NORMAL has an id, history and a place in the channel's
 * sequence; the others are live-only events a broker hands to the subscribers present at that
 * moment (ids empty, seq 0), never stored, never replayed, skipped by polls:
 *   HD_MSG_EPHEMERAL  a client's publish marked ephemeral (typing indicators, cursors)
 *   HD_MSG_JOIN       presence: a member's first connection on the channel (data: the member's
 *   HD_MSG_LEAVE      JSON {"sub":..,"info":..} or {"conn":..}, then the connection's "conn")
 *   HD_MSG_PRESENCE   several joins and leaves of one channel that reached a worker in one pass
 *                     (hub.c batches them; data: [{"type":"join",..},..], hd_presence_batch)
 * Presence events reach only the subscriptions that asked for them (hd_hub_presence).
 */
enum { HD_MSG_NORMAL = 0, HD_MSG_EPHEMERAL, HD_MSG_JOIN, HD_MSG_LEAVE, HD_MSG_PRESENCE };

/* A message with no id yet (the broker assigns it), one reference. */
hd_message_t *hd_message_new(const char *channel, size_t channel_len, const char *content_type,
                             const void *data, size_t len);
/* A live-only message of len bytes of data that the caller writes into m->data before anyone
 * else sees it: text and valid JSON the server made (no check, no parse). One reference. */
hd_message_t *hd_message_new_json(const char *channel, size_t channel_len, size_t len);
struct json_t;
/*
 * A message for channel from a client's JSON "data" value and optional "type" (NULL, or the
 * JSON value given): a string's text as is (type text/plain; charset=utf-8 unless given), any
 * other value as compact JSON (application/json unless given); one reference in *out.
 * Returns 0; HD_EBADREQ when data is missing, type is not a string or not a valid media type
 * (hd_content_type_valid), or data cannot be encoded;
 * HD_EBODYTOOBIG when the payload is longer than max_bytes. On error *why is a static message
 * for the client and *out is untouched. The HTTP batch publish and the /ws publish use this.
 */
int hd_message_from_json(const char *channel, size_t channel_len, const struct json_t *data,
                         const struct json_t *type, size_t max_bytes, hd_message_t **out,
                         const char **why);
hd_message_t *hd_message_ref(hd_message_t *m);
void hd_message_unref(hd_message_t *m);
/* Longest idempotency key, in bytes. */
#define HD_IDEM_KEY_MAX 128
/* Longest key a broker stores: a batch item's derived "<key>#<index>" is a little longer. */
#define HD_IDEM_STORED_MAX (HD_IDEM_KEY_MAX + 8)
/* 1 if key[0..len) is a valid idempotency key: 1..HD_IDEM_KEY_MAX printable ASCII bytes, no
 * space (the Idempotency-Key header, the batch and /ws "idempotency_key" fields). */
int hd_idem_key_valid(const char *key, size_t len);
/* Gives the message (not yet published) an idempotency key (copied; checked by the caller). */
void hd_message_set_idem_key(hd_message_t *m, const char *key, size_t len);
/* Stamps the message (not yet published) with its publisher (JSON object text, copied; NULL:
 * none). */
void hd_message_set_publisher(hd_message_t *m, const char *json);
/* Sets seq/epoch/id; only the broker does this, before anyone else sees the message. */
void hd_message_set_id(hd_message_t *m, uint64_t epoch, uint64_t seq);

/* Longest Content-Type kept with a message, in bytes. */
#define HD_CONTENT_TYPE_MAX 127
/*
 * 1 if ct[0..len) is a valid media type (RFC 9110: type/subtype and token=value or
 * token="quoted" parameters) of at most HD_CONTENT_TYPE_MAX printable ASCII bytes, or empty
 * (no type). Every entry point that takes a content type from a client checks it with this.
 */
int hd_content_type_valid(const char *ct, size_t len);
/* 1 if content type means text (text/ *, JSON, XML, JavaScript, form data), else 0. */
int hd_content_type_is_text(const char *ct, size_t len);
/* 1 if name is a valid channel name: 1..HD_CHANNEL_MAX bytes of [A-Za-z0-9._:@-]. */
int hd_channel_name_valid(const char *name, size_t len);

/* Formats "<epoch>-<seq>" (epoch in base 36). Returns the length. */
size_t hd_id_format(char *out, size_t outlen, uint64_t epoch, uint64_t seq);
/*
 * Parses an id as hd_id_format writes it (leading zeros allowed): every id hd_id_format writes
 * parses back to its pair. Returns 0, or HD_EBADREQ for anything else, a part past 64 bits too.
 */
int hd_id_parse(const char *s, size_t len, uint64_t *epoch, uint64_t *seq);

/* ---- delivery receipts (receipt.c; docs/chat.md) ---- */

/*
 * Where the receipts of messages published with "receipt" go. A box is the publishing
 * connection's, on its worker: shared, with an atomic count, by the messages that asked
 * (hd_message_t.rcpt), the subscriptions waiting for an ack of one and the receipts on their
 * way; none of them owns the connection. The connection closes its box (hd_rcpt_close, on its
 * worker) when it goes, and a receipt that arrives after that is dropped.
 *
 * The embedded broker delivers the very message published, box and all. The Redis bridge
 * delivers copies rebuilt from Redis: the box travels through Redis as its tag "<node>-<conn>"
 * (the publisher's connection as presence names it), and each copy carries an address made
 * from the tag (hd_rcpt_address, a hd_rcpt_t with no worker). A receipt to an address is text
 * handed to the broker (HD_BREQ_RECEIPT): the bridge PUBLISHes it on P rc:<node>, which only
 * that node subscribes to (or, on the publisher's own node, posts it at once), and the node
 * hands it to the box by connection id (hd_rcpt_post). Nothing of it runs for a message
 * without receipts: the fan-out pays one NULL test.
 *
 *   publisher's worker P                     subscriber's worker W (any node under Redis)
 *   ws publish "receipt" -> m->rcpt = box    fan-out: m written to a subscriber (not P's conn)
 *        ^                                     -> first one on the node (rcpt_done): DELIVERED
 *        |   mail (box ref) on P's mailbox     ack of m's id on a subscription with "ack"
 *        +------------------------------------ -> ACKED, with the acker
 *        |   Redis: mail by connection id      m->rcpt an address: text to the broker
 *        +-- P's bridge <- SUBSCRIBE P rc:<node> <- PUBLISH P rc:<node> <- W's bridge
 *   on P: box->owner ? box->cb(owner, ...) : dropped. Under Redis every node that delivers
 *   sends its DELIVERED: the box passes on one per message (the last HD_RCPT_SEEN remembered).
 */
enum { HD_RCPT_DELIVERED = 1, HD_RCPT_ACKED };
typedef void (*hd_rcpt_cb)(void *owner, int status, const char *channel, const char *id,
                           const char *member_json, const char *conn);
#define HD_RCPT_SEEN    16
#define HD_RCPT_TAG_MAX 40 /* "<node>-<connection id in hex>" and a NUL */
typedef struct hd_rcpt_s {
    int refs;            /* atomic */
    hd_worker_t *worker; /* a box: the publisher's worker; NULL: an address */
    void *owner; /* a box: the publishing connection's, NULL once closed: read and written on worker
                  */
    hd_rcpt_cb cb;
    uint64_t conn_id; /* the publisher's connection: its own copy is no delivery */
    uint8_t is_here;  /* that connection is on this node (every box; an address of this node) */
    uint8_t seen_next;
    char node[16]; /* an address: the publisher's node */
    /* a box: the DELIVERED receipts passed on lately, (epoch, seq), a ring */
    uint64_t seen[HD_RCPT_SEEN][2];
} hd_rcpt_t;

/* A box for the connection conn_id on w (one reference), found by conn_id on w until
 * hd_rcpt_close; cb runs on w with owner. */
hd_rcpt_t *hd_rcpt_new(hd_worker_t *w, uint64_t conn_id, hd_rcpt_cb cb, void *owner);
/* The connection has gone (on the box's worker): receipts on their way find nobody. */
void hd_rcpt_close(hd_rcpt_t *box);
hd_rcpt_t *hd_rcpt_ref(hd_rcpt_t *r);
void hd_rcpt_unref(hd_rcpt_t *r);
/* r's tag, "<node>-<conn hex>", into out (HD_RCPT_TAG_MAX bytes). Returns its length. */
size_t hd_rcpt_tag(const hd_rcpt_t *r, char *out);
/* The address a tag names (one reference), or NULL when tag[0..len) is not one. */
hd_rcpt_t *hd_rcpt_address(const char *tag, size_t len);
/* 1 when conn_id (a connection of this node) is the publisher r's receipts go to. */
static inline int hd_rcpt_is_publisher(const hd_rcpt_t *r, uint64_t conn_id)
{
    return r->is_here && r->conn_id == conn_id;
}
/* m (with a box) was queued on the connection conn_id of a subscriber: the first time on this
 * node for another connection than the publisher's, the DELIVERED receipt goes to the box. */
void hd_rcpt_delivered_(hd_message_t *m, uint64_t conn_id);
static inline void hd_rcpt_delivered(hd_message_t *m, uint64_t conn_id)
{
    if (m->rcpt && !__atomic_load_n(&m->rcpt_done, __ATOMIC_RELAXED))
        hd_rcpt_delivered_(m, conn_id);
}
/* The ACKED receipt of the message (channel, epoch, seq) to box to: acked by the connection
 * conn_id, whose identity is member_json ({"sub":..,"info":..}; NULL: anonymous). */
void hd_rcpt_acked(hd_rcpt_t *to, const char *channel, uint64_t epoch, uint64_t seq,
                   const char *member_json, uint64_t conn_id);
/*
 * A receipt to an address as text (HD_BREQ_RECEIPT's data, P rc:<node>'s messages):
 *   "<tag> d <channel> <id>"                          DELIVERED
 *   "<tag> a <channel> <id> <acker conn> [<member>]"  ACKED (member: a JSON object, or none)
 * hd_rcpt_parse reads it (pure; the pointers are into text): 0, or HD_EBADREQ when it is not
 * that. hd_rcpt_post hands it to the box of the tag's connection, on that connection's worker
 * of s: 0, or HD_EBADREQ when it does not parse or its tag names another node or no worker of
 * s. Any thread.
 */
typedef struct hd_rcpt_text_s {
    int status; /* HD_RCPT_* */
    char node[16];
    uint64_t conn_id, epoch, seq;
    const char *channel, *acker, *member; /* acker, member: ACKED (member NULL: anonymous) */
    size_t channel_len, acker_len, member_len;
} hd_rcpt_text_t;
int hd_rcpt_parse(const char *text, size_t len, hd_rcpt_text_t *out);
int hd_rcpt_post(hd_server_t *s, const char *text, size_t len);
/* Longest receipt text: member stamps above this are sent without the member. */
#define HD_RCPT_TEXT_MAX 4096

/* ---- wire formats: each message is encoded once per format per worker ---- */

enum {
    HD_FMT_SSE = 0,     /* id:, data: lines */
    HD_FMT_SSE_NAMED,   /* id:, event: channel, data: lines */
    HD_FMT_WS_RAW,      /* one WebSocket frame, payload as-is (text or binary opcode) */
    HD_FMT_WS_ENVELOPE, /* one text frame {"type":"message","channel","id","data"} */
    HD_FMT_JSON,        /* {"id":..,"channel":..,"data":..} object for polls */
    HD_FMT_POLL_ANSWER, /* a long poll's whole answer body for this one message:
                           {"channel":..,"messages":[<HD_FMT_JSON>],"next":id,"gap":false};
                           for a live-only event, the elements of the answer's "events" array:
                           {"type":"join"|"leave"|"ephemeral",..},.. (poll.c wraps them) */
    HD_FMT_SSE_JSON,    /* SSE ?format=json: id:, data: <HD_FMT_JSON> (no event: line) */
    HD_FMT_COUNT
};

/* Encodes m in format fmt (one reference). */
hd_buf_t *hd_message_encode(const hd_message_t *m, int fmt);
/* Appends an unmasked WebSocket frame header (FIN set) for a payload of len bytes. */
void hd_ws_frame_header(hd_sbuf_t *sb, int opcode, size_t len);
/* Appends the JSON string or value for the payload: JSON payloads verbatim when valid,
 * text as a JSON string, binary as base64 string (with "encoding":"base64" set by the caller). */
void hd_message_json_object(hd_sbuf_t *sb, const hd_message_t *m);

/* ---- broker protocol ---- */

enum {
    HD_BREQ_PUBLISH = 1, /* msgs[0..n) in order; reply: err, ids set in msgs */
    HD_BREQ_SUBSCRIBE,   /* channel, since?; reply: history after since, gap, last_seq */
    HD_BREQ_UNSUBSCRIBE, /* channel; no reply */
    HD_BREQ_HISTORY,     /* channel, since?, limit; reply: msgs, gap, last_seq */
    HD_BREQ_INFO,        /* channel; reply: found, subscribers, last id, history length */
    HD_BREQ_BARRIER,     /* no-op answered in order: shutdown uses it to flush replies */
    /*
     * Single-use tickets (auth.h, docs/auth.md): channel holds the ticket's key (hd_ticket_key),
     * data its claims. TICKET_PUT stores data for ttl_ms unless limit tickets (auth_max_tickets)
     * already wait on this node: err 0, or HD_ETICKETS (full), HD_EOVERLOAD (no Redis).
     * TICKET_TAKE removes the ticket and answers its claims in data, once, on any node sharing
     * the broker: err 0, or HD_ENOTFOUND (unknown, used, or expired), HD_EOVERLOAD.
     */
    HD_BREQ_TICKET_PUT,
    HD_BREQ_TICKET_TAKE,
    HD_BREQ_CONTROL,  /* an operator's order to every node: ctl_*; reply: err, ctl_nodes */
    HD_BREQ_JOIN,     /* member: one more connection of it on channel; no reply (next_op) */
    HD_BREQ_LEAVE,    /* member: that connection is gone; no reply (next_op) */
    HD_BREQ_PRESENCE, /* channel, cursor?, limit, member_key?: a page of members, or of one
                       * member's connections (page, members) */
    HD_BREQ_RECEIPT,  /* data: a receipt to an address (hd_rcpt_post's text); no reply */
};

/*
 * A presence member as a connection presents itself (presence.c): key is who it is on the
 * channel (the token's sub, or for an anonymous connection its conn), conn is the connection
 * ("<node>-<id>", unique in the cluster), json the member's public object ({"sub":..,"info":..}
 * or {"conn":..}). One allocation, read-only once made and shared by reference: the
 * subscription holds one, each JOIN and LEAVE request another, and the embedded broker's table
 * one per connection it lists (memory_presence.c), so a member is made once per subscription
 * and never copied. Any thread may drop a reference (atomic count).
 */
typedef struct hd_member_s {
    uint32_t refs; /* atomic */
    char *key;
    char *conn;
    char *json;
    size_t key_len, conn_len, json_len;
    /* hd_hash(key, key_len), made with the member on its worker (hd_member_new): the embedded
     * broker finds and files it without hashing under its lock */
    uint64_t key_hash;
} hd_member_t;
/* sub and info_json may be NULL (anonymous: the member is the connection). One reference. */
hd_member_t *hd_member_new(const char *sub, const char *info_json, uint64_t conn_id);
static inline hd_member_t *hd_member_ref(hd_member_t *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    return m;
}
/* Drops a reference (NULL: nothing); the last one frees the member (one allocation). */
static inline void hd_member_unref(hd_member_t *m)
{
    if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(m);
}
/* This process's name in connection ids ("<node>-<id>"): random, drawn once. */
const char *hd_presence_node(void);
/* A presence event (HD_MSG_JOIN or HD_MSG_LEAVE) for member on channel: one reference; its data
 * is {"member":<json>,"conn":"<conn>"}. */
hd_message_t *hd_presence_event(int kind, const char *channel, size_t channel_len,
                                const hd_member_t *member);
/* The events evs[0..n) (joins and leaves of one channel, n >= 2) as one HD_MSG_PRESENCE
 * message (one reference), in order: data [{"type":"join","member":..,"conn":..},..]. */
hd_message_t *hd_presence_batch(hd_message_t *const *evs, size_t n);
/* Largest page of a presence snapshot, and the page when none is asked. */
#define HD_PRESENCE_PAGE_MAX     1000
#define HD_PRESENCE_PAGE_DEFAULT 100
/*
 * Connection ids listed on a member's entry of a snapshot page, at most: a user with thousands
 * of connections (tabs, or a script holding one token) is one entry of a bounded size, with its
 * "conn_count"; the rest are paged with member_key (docs/chat.md, "Snapshots"). So a page is at
 * most limit x (member object + HD_PRESENCE_MEMBER_CONNS ids) bytes, whatever members do.
 */
#define HD_PRESENCE_MEMBER_CONNS 10

typedef struct hd_breq_s hd_breq_t;
typedef void (*hd_breq_cb)(hd_worker_t *w, hd_breq_t *r);

struct hd_breq_s {
    hd_msg_t base; /* private: mailbox link and dispatch */
    int type;
    hd_worker_t *worker; /* who asked; the reply goes there */
    hd_breq_cb reply_cb; /* runs on that worker with the reply; then it frees r */
    void *cookie;
    char channel[HD_CHANNEL_MAX + 1];
    /* JOIN, LEAVE: hd_hash(channel) (the hub's channel has it); 0: not known */
    uint64_t channel_hash;
    uint8_t has_since;
    uint64_t since_epoch, since_seq;
    size_t limit;
    /* in (PUBLISH) and out (SUBSCRIBE / HISTORY): references owned by the request */
    hd_message_t **msgs;
    size_t n_msgs;
    /* out */
    int err;
    uint8_t gap;             /* history before the first returned message may be missing */
    uint8_t found;           /* INFO: the channel exists */
    uint64_t epoch;          /* current epoch */
    uint64_t last_seq;       /* the node-wide sequence when the reply was made */
    char last_id[HD_ID_MAX]; /* INFO: the channel's last message id ("" if none) */
    uint64_t subscribers;    /* INFO */
    uint64_t history_len;    /* INFO */
    /*
     * SUBSCRIBE, the embedded broker only (else NULL): the broker's count of this worker's
     * subscribers on the channel. While it is above 1 the worker moves it itself (atomic adds,
     * no request): a subscriber joins or leaves a channel its worker carries without asking the
     * broker, which is told only when the count goes 0 -> 1 and 1 -> 0.
     */
    uint32_t *interest;
    /* TICKET_PUT (in) and TICKET_TAKE (out): the claims, owned by the request (malloc'd) */
    char *data;
    size_t data_len;
    uint64_t ttl_ms; /* TICKET_PUT */
    /*
     * CONTROL (POST /admin/revoke, /admin/disconnect; docs/auth.md): kind HD_KICK_* (conn.h), key
     * (a sub, jti or channel: an allocation of the request's, freed with it), for a revocation
     * its expiry (unix ms) and max_revocations. The broker adds a revocation to the revoked set
     * (auth.h; under Redis, to the cluster's, refused past max with HD_EREVOCATIONS) and has
     * every worker of every node end the matching connections (hd_kick_post). Out: the nodes
     * the order reached (the embedded broker: 1; Redis: the nodes subscribed to the control
     * channel).
     */
    uint8_t ctl_kind;
    char *ctl_key;
    size_t ctl_key_len;
    int64_t ctl_until_ms;
    uint32_t ctl_max;
    uint64_t ctl_nodes;
    /* JOIN, LEAVE: a reference to the member (the request's; a broker may take it, leaving
     * NULL) */
    hd_member_t *member;
    /*
     * JOIN, LEAVE: the next join or leave of the same worker's loop pass (owned by this request;
     * NULL: none). A worker sends the joins and leaves of a pass as one chain (hub.c); a broker
     * handles its links in order as if each had come alone (the embedded one in one critical
     * section, with one wake-up per worker for all of them).
     */
    hd_breq_t *next_op;
    /*
     * PRESENCE in: members after this key (owned; NULL: from the first); limit: page size.
     * With member_key (owned; NULL: a page of members): that member's connections after the
     * connection id cursor instead, at most limit of them.
     */
    char *cursor;
    char *member_key;
    /*
     * PRESENCE out, owned (NULL: none): a page of members is the text
     *   "members":[{<member's json>,"conns":[..],"conn_count":N},..],"next":<key>|null
     * (at most HD_PRESENCE_MEMBER_CONNS ids on an entry), and members the channel's members in
     * the cluster (as INFO's, presence on); a member's page is
     *   "member":<its json>|null,"conns":[..],"next":<conn>|null
     * and members its connections in the cluster (0: not a member).
     */
    char *page;
    uint64_t members;
};

hd_breq_t *hd_breq_new(int type, hd_worker_t *w, const char *channel, size_t channel_len);
/* Releases the request, every message reference it holds and the chain after it (next_op). */
void hd_breq_free(hd_breq_t *r);
/* Broker side: sends r back to the worker that asked (its reply_cb runs there and frees it);
 * a request without reply_cb is freed at once. Any thread. */
void hd_breq_reply(hd_breq_t *r);
/* The same without the wake-up: queues the reply in the asker's mailbox and returns the worker
 * to wake (hd_worker_wake) once the caller let its lock go; NULL when r had no reply_cb (freed). */
hd_worker_t *hd_breq_push_reply(hd_breq_t *r);

/* Node-wide broker figures for /stats and /metrics (relaxed reads). */
typedef struct hd_broker_stats_s {
    uint64_t channels;
    uint64_t messages_published;
    uint64_t history_messages;
    uint64_t history_bytes;
    uint64_t channels_evicted;
    uint64_t channels_refused;  /* new channels refused: max_channels or max_memory */
    uint64_t memory_bytes;      /* every byte held for channels and history (embedded broker) */
    uint64_t presence_channels; /* channels with presence members on this node */
    uint64_t presence_members;  /* members on those channels (a user's tabs: one) */
    uint64_t presence_events;   /* join and leave events made */
    uint64_t presence_refused;  /* joins refused at presence_max_channels */
    uint64_t receipts_dropped;  /* receipts to other nodes not sent: Redis lost, or too many */
    int state;           /* HD_BROKER_*: the Redis bridge's connection (the embedded one: UP) */
    uint64_t reconnects; /* connections to Redis lost since start */
} hd_broker_stats_t;

/* Broker states; the all-zero stats (the embedded broker's) read as UP. */
enum { HD_BROKER_UP = 0, HD_BROKER_CONNECTING, HD_BROKER_DOWN };
static inline const char *hd_broker_state_name(int state)
{
    return state == HD_BROKER_UP           ? "connected"
           : state == HD_BROKER_CONNECTING ? "connecting"
                                           : "disconnected";
}

typedef struct hd_broker_s hd_broker_t;
typedef struct hd_broker_ops_s {
    const char *name;
    /* Hands r to the broker (any thread; the embedded broker does the work in this call). The
     * reply comes back via r->reply_cb on r->worker's loop, never inside this call. */
    void (*submit)(hd_broker_t *b, hd_breq_t *r);
    void (*get_stats)(hd_broker_t *b, hd_broker_stats_t *out);
    /* Stops the broker and frees everything (on the main loop, once no worker can submit). */
    void (*free)(hd_broker_t *b);
} hd_broker_ops_t;

struct hd_broker_s {
    const hd_broker_ops_t *ops;
};

/* The embedded in-memory broker: no thread; its expiry timer runs on the server's main loop. */
int hd_broker_memory_new(hd_broker_t **out, hd_server_t *server, const hd_conf_t *conf);
/*
 * The Redis bridge (src/broker/redis.c; docs/redis.md): the same protocol with ids, history and
 * fan-out in the Redis of conf->redis, shared by every node. A thread of its own; it connects
 * before returning. Returns 0, HD_ECONF (a bad redis URL) or UV_ECONNREFUSED (Redis unreachable,
 * refused AUTH or SELECT, no Redis Functions: Redis before 7), with a message in err that names
 * the server but never its password.
 */
int hd_broker_redis_new(hd_broker_t **out, hd_server_t *server, const hd_conf_t *conf, char *err,
                        size_t errlen);

/* The process's broker (set once at start). */
void hd_broker_set(hd_broker_t *b);
hd_broker_t *hd_broker_get(void);
static inline void hd_broker_submit(hd_breq_t *r)
{
    hd_broker_t *b = hd_broker_get();
    b->ops->submit(b, r);
}

/* ---- per-worker hub: local subscribers ---- */

typedef struct hd_sub_s hd_sub_t;
typedef struct hd_sub_ops_s {
    uint8_t format; /* HD_FMT_* this subscriber writes */
    /*
     * The subscription is live. msgs are the history after `since` (borrowed: ref what you
     * keep), gap is set when some of it may be missing (expired or from another epoch), err is
     * non-zero when the broker refused (the hub frees the subscription after this call).
     */
    void (*on_ready)(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err);
    /* A live message with a sequence above the last delivered, encoded in `format`. */
    void (*on_message)(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded);
    /*
     * Optional: history may have been lost while subscribed (the next message belongs to a new
     * epoch: the broker restarted, or Redis lost its data). Called just before that message.
     */
    void (*on_gap)(hd_sub_t *s);
} hd_sub_ops_t;

struct hd_sub_s {
    const hd_sub_ops_t *ops;
    void *data; /* the transport's */
    hd_worker_t *worker;
    struct hd_lchan_s *chan;
    hd_list_t link;
    uint64_t last_seq; /* last sequence delivered (or skipped as seen) */
    uint64_t epoch;
    unsigned is_pending : 1;      /* SUBSCRIBE sent, no reply yet */
    unsigned is_orphan : 1;       /* unsubscribed while pending: freed when the reply comes */
    unsigned is_dead : 1;         /* unsubscribed during a fan-out: freed when it ends */
    unsigned is_counted : 1;      /* holds one unit of the node's max_subscriptions budget */
    unsigned is_waiting : 1;      /* waits for its worker's SUBSCRIBE on the channel (hub.c) */
    unsigned wants_since : 1;     /* while waiting: resumes from (epoch, last_seq) */
    unsigned wants_presence : 1;  /* receives join and leave events (hd_hub_presence) */
    unsigned wants_ephemeral : 1; /* a poll that receives ephemeral messages (hd_hub_ephemeral) */
    unsigned is_joined : 1;       /* its member's JOIN was sent: a LEAVE follows when it ends */
    hd_member_t *member;          /* a presence member while subscribed (hd_hub_presence) */
    hd_msg_t join_mail;           /* private (hub.c): a local join's reply, to its own worker */
};

/* Sets up the hub of a worker (call on that worker's loop or before it runs). */
void hd_hub_init(hd_worker_t *w);
void hd_hub_dispose(hd_worker_t *w);
/*
 * Subscribes on worker w. since may be NULL (live only). The subscription goes live when
 * ops->on_ready runs. Returns the subscription (owned by the hub; end it with
 * hd_hub_unsubscribe, which may be called at any time, even before on_ready).
 *
 * Every subscription on the node (every worker, every transport) counts against
 * max_subscriptions: one atomic add when it is made and one subtract when it is freed, nothing
 * per delivery. Past the budget the subscription is refused the way a broker refuses: on_ready
 * runs later (never inside this call) with err HD_ESUBSCRIPTIONS.
 */
hd_sub_t *hd_hub_subscribe(hd_worker_t *w, const char *channel, size_t channel_len,
                           const uint64_t *since_epoch, const uint64_t *since_seq,
                           const hd_sub_ops_t *ops, void *data);
void hd_hub_unsubscribe(hd_sub_t *s);
/*
 * Presence on subscription s (right after hd_hub_subscribe, before it is live): events 1 to
 * receive join and leave events on its channel; member (owned by the hub from here; NULL: none)
 * makes the subscription a presence member from when it is live until it ends (the broker is
 * told JOIN then, LEAVE after). Polls are never members.
 */
void hd_hub_presence(hd_sub_t *s, int events, hd_member_t *member);
/*
 * Ephemeral messages on a poll's subscription (HD_FMT_POLL_ANSWER, right after
 * hd_hub_subscribe): on 1 to receive them (a long poll's ?ephemeral=1). Streams always receive
 * them; polls only when they ask, as each one ends the poll early.
 */
void hd_hub_ephemeral(hd_sub_t *s, int on);
/* The channel a subscription is on. */
const char *hd_sub_channel(const hd_sub_t *s);
/* Local subscribers on this worker (all channels). */
uint64_t hd_hub_local_subscribers(hd_worker_t *w);
/* Subscriptions on the node (all workers, pending ones included), for /stats and /metrics. */
uint64_t hd_hub_subscriptions(void);
/* Which limit refused a subscription: max_subscriptions (node) or
 * max_subscriptions_per_connection (a transport's own check). */
enum { HD_SUBS_LIMIT_NODE = 0, HD_SUBS_LIMIT_CONNECTION, HD_SUBS_LIMIT_COUNT };
/* Counts a refused subscription (stats, metrics) and logs it, at most once per 10 s per worker
 * with the number refused meanwhile. */
void hd_hub_note_refused(hd_worker_t *w, int limit);

/*
 * Answers shared while in use. A transport that builds the same large answer for several
 * clients (a poll of the same history) stores it under a key it makes from everything the
 * answer depends on; the next request with that key gets the same buffer and queues it by
 * reference instead of building a copy. The cache keeps nothing alive: a body nobody else holds
 * any more (every connection wrote it) is dropped at the next get or put, and at most 16 are
 * kept per worker (the oldest goes first). Keys are at most 192 bytes (longer: not stored).
 *   get: a new reference to the body stored under key, or NULL.
 *   put: stores body under key (taking a reference of its own).
 */
hd_buf_t *hd_hub_shared_get(hd_worker_t *w, const void *key, size_t key_len);
void hd_hub_shared_put(hd_worker_t *w, const void *key, size_t key_len, hd_buf_t *body);

/* Delivery message posted by a broker to a worker (the reference to m passes with it). */
void hd_hub_post_delivery(hd_worker_t *w, hd_message_t *m);
/* The same, queued without waking w: hd_worker_wake(w) must follow (hd_worker_push). */
void hd_hub_push_delivery(hd_worker_t *w, hd_message_t *m);
/*
 * The same, for a broker that wakes w only when needed: returns 1 when hd_worker_wake(w) must
 * follow, 0 when m is a join or leave that can wait in w's mailbox for the presence_hold window
 * open on w (its end drains the mailbox; hub.c). Any thread; m is read before it is pushed.
 */
int hd_hub_push_delivery_lazy(hd_worker_t *w, hd_message_t *m);

/* Upper bounds (microseconds) of the fan-out latency histogram buckets; the last is +Inf. */
#define HD_LATENCY_BUCKETS 12
extern const uint64_t hd_latency_bounds_us[HD_LATENCY_BUCKETS - 1];

/* Per-worker pub/sub counters, for /stats. */
typedef struct hd_hub_stats_s {
    uint64_t messages_in;       /* messages that reached this worker */
    uint64_t deliveries;        /* message x subscriber deliveries */
    uint64_t slow_dropped;      /* subscribers disconnected for falling behind */
    uint64_t published;         /* messages published through this worker */
    uint64_t events_in;         /* live-only events (ephemeral, presence) that reached it */
    int64_t transport_conns[4]; /* open now, by HD_TP_* */
    uint64_t subscriptions_refused[HD_SUBS_LIMIT_COUNT]; /* by HD_SUBS_LIMIT_* */
    uint64_t latency_buckets[HD_LATENCY_BUCKETS]; /* broker -> fan-out, cumulative upper bounds */
    uint64_t latency_sum_us;
    uint64_t latency_count;
} hd_hub_stats_t;
enum { HD_TP_POLL = 0, HD_TP_LONGPOLL, HD_TP_SSE, HD_TP_WS };
/* Counter updates by the owning worker, readable from any thread. */
#define HD_HUB_STAT_ADD(w, field, n)                                                               \
    __atomic_store_n(&hd_hub_stats(w)->field, hd_hub_stats(w)->field + (n), __ATOMIC_RELAXED)
hd_hub_stats_t *hd_hub_stats(hd_worker_t *w);

/* w->modules slots: the hub, WebSocket's, the receipt boxes' table (receipt.c) */
enum { HD_MODULE_HUB = 0, HD_MODULE_WS = 1, HD_MODULE_RCPT = 2 };

#endif
