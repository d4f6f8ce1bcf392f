/* SPDX-License-Identifier: MIT */
/*
 * redis_bridge.h: what the files of the Redis bridge share, private to src/broker. Calls run one
 * way, down this list (redis_conn.c reports back only through hd_redis_events_t):
 *
 *   redis.c          the broker: its thread and mailbox, hd_broker_redis_new and free, stats,
 *                    the table of callbacks handed to the connections
 *   redis_answer.c   what the connections report (hd_redis_events_t): answers to publishes and
 *                    reads turned into replies, pub/sub messages and subscription confirmations
 *   redis_request.c  requests from workers: publishes in bounded parts and held in order,
 *                    subscribes, unsubscribes, history and info reads, barriers
 *   redis_control.c  operators' orders (revoke, disconnect): stored in and announced through
 *                    Redis, heard from every node, the live revocations loaded at connect;
 *                    delivery receipts sent to the publisher's node (P rc:<node>) and heard
 *   redis_presence.c presence members of this node, mirrored into Redis under a lease, snapshot
 *                    pages and counts, ephemeral publishes (live-only, through pub/sub)
 *   redis_queue.c    the ordered delivery queue, channels released, catching up after a
 *                    reconnect (paced, given up past redis_max_pending), the connections up/down
 *   redis_chan.c     channels (find, create, free, SUBSCRIBE/UNSUBSCRIBE, herald_read) and the
 *                    replies to workers (held requests, barriers)
 *   redis_conn.c     the connections: three hiredis async contexts (commands, pub/sub, heartbeat),
 *                    their set-up, timeouts and reconnection with backoff
 *   redis_reply.c    parsing Redis's answers (redis_reply.h), pure
 *
 * All run on the bridge's own thread and loop; nothing here is shared with workers except the
 * mailbox and the relaxed-atomic stats.
 */
#ifndef HERALD_BROKER_REDIS_BRIDGE_H
#define HERALD_BROKER_REDIS_BRIDGE_H

#include "herald/chantab.h"
#include "herald/log.h"
#include "herald/pubsub.h"
#include "redis_reply.h"
#include "herald/redis_url.h"
#include "herald/wake.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <string.h>

#define KEY_MAX    (64 + 8 + HD_CHANNEL_MAX + 1) /* prefix, kind, channel */
#define N_SETTINGS 6

/*
 * One FCALL herald_publish_batch carries at most this many messages and (past its first message)
 * this many payload bytes: a publish costs Redis ~80 us of work inside the call, so no call of
 * ours holds Redis (every other client of it) for more than a few milliseconds. A bigger batch is
 * sent as several calls, one after the other on the command connection.
 */
#define PUBLISH_CALL_MAX_MSGS  32
#define PUBLISH_CALL_MAX_BYTES (256 * 1024)
/* Catch-up reads in flight after a reconnect: the others wait their turn (b->catchup_wait). */
#define CATCHUP_IN_FLIGHT 16

enum { ST_DOWN = HD_BROKER_DOWN, ST_CONNECTING = HD_BROKER_CONNECTING, ST_UP = HD_BROKER_UP };

/* A channel's subscription on the subscriber connection: the state of the last command sent. */
enum { RS_NONE = 0, RS_SUBSCRIBING, RS_SUBSCRIBED, RS_UNSUBSCRIBING };

enum {
    OP_INIT = 1,
    OP_HB,
    OP_PUBLISH,
    OP_SUB_READ,
    OP_CATCHUP,
    OP_HISTORY,
    OP_INFO,
    OP_CONTROL,      /* an operator's order: FCALL herald_revoke, or PUBLISH P ctl */
    OP_REVOKED_LOAD, /* the live revocations, read at each connect */
    OP_PRES_CMD,     /* herald_pjoin / pleave / plive / pdrop: no request waits */
    OP_PRES_PAGE,    /* herald_pget for a PRESENCE request */
    OP_PRES_COUNT,   /* HLEN P pk:<channel> after an INFO's read */
    OP_EPHEMERAL,    /* PUBLISH of an ephemeral message */
    OP_TICKET,       /* a ticket's SET NX or GETDEL */
    OP_RECEIPT,      /* PUBLISH P rc:<node> of a delivery receipt: no request waits */
};

/* Receipts PUBLISHed and not answered yet, at most: past it they are dropped (counted). */
#define RCPT_IN_FLIGHT_MAX 4096

/*
 * Tickets this node put in Redis, by the second their ttl ends (a ring of TICKET_RING seconds,
 * more than auth_ticket_max_ttl's 1 h): the node's count for auth_max_tickets. A ticket counts
 * until its ttl passes even once used, since a use may happen on another node.
 */
#define TICKET_RING 4096

typedef struct redis_broker_s redis_broker_t;
typedef struct op_s op_t;
typedef struct hd_redis_events_s hd_redis_events_t;

typedef struct rconn_s {
    redis_broker_t *b;
    redisAsyncContext *ac;
    unsigned n_out;       /* replies (or subscription confirmations) expected */
    uint64_t progress_ms; /* last reply, or the send that made n_out non-zero */
} rconn_t;

/* A SUBSCRIBE not answered yet, in its channel's list (arrival order). */
typedef struct pend_sub_s {
    hd_list_t link;
    hd_breq_t *r;
    op_t *op; /* its read, once sent */
    uint64_t ticket;
} pend_sub_t;

typedef struct rchan_s {
    hd_chan_t ch; /* in b->chans */
    hd_list_t pending;
    hd_list_t reads; /* op_t in flight that gate deliveries (OP_SUB_READ, OP_CATCHUP), send order */
    hd_interest_t in;                  /* live subscribers per worker (chantab.h) */
    uint32_t n_queued;                 /* messages of this channel in b->queue */
    uint32_t n_sub_sent, n_unsub_sent; /* confirmations expected */
    uint8_t rstate;
    unsigned has_pos : 1;
    unsigned has_floor : 1;
    unsigned needs_catchup : 1;
    unsigned is_gap_pending : 1; /* messages were lost: the next delivery carries is_after_gap */
    hd_list_t catchup_link;      /* in b->catchup_wait while its catch-up read waits its turn */
    uint64_t pos_epoch, pos_seq; /* the last message delivered (or the first read's seq) */
    uint64_t floor_epoch, floor_seq; /* sequence of the newest answered read */
    char name[];                     /* its name and a NUL (the table allocates the entry) */
} rchan_t;

struct op_s {
    hd_list_t link; /* in c->reads */
    redis_broker_t *b;
    rconn_t *rc;
    uint64_t gen; /* connection generation it was sent on */
    uint64_t ticket;
    uint64_t round; /* OP_CATCHUP: b->catchup_round it belongs to */
    int kind;
    const char *what; /* OP_INIT: the step, for messages */
    hd_breq_t *r;
    size_t first, n; /* OP_PUBLISH: the messages r->msgs[first, first + n) of this call */
    pend_sub_t *ps;
    rchan_t *c;
    op_t *next_failed; /* in b->failed */
};

typedef struct queued_s {
    rchan_t *c;
    hd_message_t *m;
    uint64_t arrival; /* b->read_ticket when it arrived (0: catch-up, never waits) */
} queued_t;

typedef struct held_s {
    hd_list_t link;
    hd_breq_t *r;
    uint64_t ticket;
} held_t;

struct redis_broker_s {
    hd_broker_t base;
    hd_server_t *server;
    unsigned n_workers;
    uv_loop_t loop;
    uv_thread_t thread;
    hd_wake_t wakeup; /* workers' requests: wake.h */
    uv_timer_t tick_timer, retry_timer, later_timer;
    hd_mpsc_t mailbox;
    const hd_redis_events_t *events; /* the bridge's callbacks (redis.c) */

    /* configuration */
    hd_redis_addr_t addr;
    char where[320]; /* "127.0.0.1:6379/0": for messages, never with credentials */
    char prefix[72];
    size_t prefix_len;
    char hb_channel[KEY_MAX];
    char ctl_channel[KEY_MAX]; /* P ctl: operators' orders, every node subscribes */
    char rc_channel[KEY_MAX];  /* P rc:<node>: receipts for this node's publishers */
    char client_name[3][96];   /* CLIENT SETNAME: herald:<host>:<pid>:cmd|sub|hb */
    uint64_t timeout_ms, tick_ms, hb_interval_ms;
    /* for herald_init: history_size, ttl_ms, max_bytes, max_message_bytes, idempotency_window_ms,
     * max_channels */
    char settings[N_SETTINGS][24];

    /* connections */
    int state;
    uint64_t gen;
    rconn_t cmd, sub, hb; /* hb: the heartbeat's own, so it never waits behind commands */
    unsigned is_cmd_ready : 1;
    unsigned is_sub_ready : 1;
    unsigned is_hb_ready : 1;
    unsigned needs_sweep : 1; /* events->sweep on the next loop pass */
    unsigned is_in_conn_lost : 1;
    unsigned was_up : 1;   /* connected at least once */
    unsigned is_quiet : 1; /* a BARRIER came (shutdown): no order is passed to workers any more */
    unsigned attempts;
    uint64_t connect_deadline_ms, down_since_ms;
    uint64_t hb_sent_ms, hb_rx_ms;
    uint64_t epoch_seen;
    uint64_t failures_logged;
    uint64_t error_logged_ms, errors_unlogged; /* error replies: logged once a second */
    uint64_t budget_logged_ms;                 /* max_channels refusals: once a second */
    char later_why[200];                       /* a reconnect asked for from inside a callback */
    op_t *failed; /* commands hiredis refused, failed on the next pass */
    uint64_t rng;

    /* requests and channels */
    hd_chantab_t chans;   /* rchan_t */
    uint64_t ticket;      /* arrival order of requests */
    uint64_t read_ticket; /* send order of reads */
    hd_list_t held;       /* held_t: publishes waiting for earlier subscribes or in_parts */
    hd_breq_t *in_parts;  /* the publish sent in parts now (PUBLISH_CALL_MAX_*), if any */
    uint64_t n_inflight;  /* requests answered later */
    hd_breq_t **barriers;
    size_t n_barriers, cap_barriers;
    queued_t *queue;
    size_t q_head, q_len, q_cap; /* entries [q_head, q_len) */
    unsigned n_catchup;          /* channels still catching up after a reconnect */
    unsigned n_catchup_sent;     /* of those, reads in flight (at most CATCHUP_IN_FLIGHT) */
    hd_list_t catchup_wait;      /* rchan_t subscribed again, their read not sent yet */
    uint64_t catchup_round;      /* a new one at each reconnect and when catching up gives up */
    size_t max_pending;          /* redis_max_pending: queue entries while catching up */
    uint32_t *tickets_ring;      /* TICKET_RING counts: tickets put, by expiry second */
    uint64_t tickets_second;     /* the ring's current second (monotonic) */
    uint64_t tickets_put;        /* the ring's sum: tickets put whose ttl has not passed */

    /* presence (redis_presence.c) */
    hd_hmap_t pres;             /* this node's member connections, by "<channel>\n<conn>" */
    hd_hmap_t pres_chans;       /* the channels they are on, with their count (presence budget) */
    uint64_t pres_max_channels; /* presence_max_channels: channels this node tracks at once */
    uint64_t pres_refused, pres_refused_logged, pres_refused_log_ms;
    uv_timer_t pres_timer; /* the lease: herald_plive every presence_lease / 4 */
    uint64_t pres_lease_ms;
    uint64_t pres_error_ms; /* error replies of the presence functions: logged once a second */

    /* delivery receipts to other nodes (redis_control.c) */
    uint64_t rcpt_out;        /* PUBLISHed, not answered yet (at most RCPT_IN_FLIGHT_MAX) */
    uint64_t rcpt_bad_log_ms; /* a malformed receipt heard: logged once a second */

    /* start and stop */
    uv_sem_t started;
    int start_rc;
    char start_err[256];
    int is_stopping; /* atomic */
    hd_broker_stats_t stats;
};

#define STAT_SET(b, f, v) __atomic_store_n(&(b)->stats.f, (v), __ATOMIC_RELAXED)

/* ---- small shared helpers ---- */

static inline uint64_t hd_redis_now_ms(redis_broker_t *b)
{
    return uv_now(&b->loop);
}

/* prefix + kind + name: a key or a pub/sub channel (KEY_MAX bytes). Returns its length. */
static inline size_t hd_redis_key(const redis_broker_t *b, char *out, const char *kind,
                                  const char *name, size_t len)
{
    size_t k = strlen(kind);
    memcpy(out, b->prefix, b->prefix_len);
    memcpy(out + b->prefix_len, kind, k);
    memcpy(out + b->prefix_len + k, name, len);
    out[b->prefix_len + k + len] = '\0';
    return b->prefix_len + k + len;
}

/* ---- redis_conn.c: the connections ---- */

/* Sets up the timers and names (before the thread starts); events receive what happens. */
void hd_redis_conn_init(redis_broker_t *b, const hd_redis_events_t *events);
/* Opens both connections and pipelines what makes them ready; events->on_up follows. */
void hd_redis_conn_start(redis_broker_t *b);
/*
 * Both connections are gone (or never came): drops them, fails what was in flight (through
 * events->on_down and the replies' callbacks) and schedules a reconnect with backoff. Before
 * the first connection, it ends the start instead.
 */
void hd_redis_conn_lost(redis_broker_t *b, const char *why);
/* The same, on the next loop pass (safe from inside any callback). */
void hd_redis_reconnect_later(redis_broker_t *b, const char *why);
/* Closes the connections and the handles of the loop (the thread then ends). */
void hd_redis_conn_close(redis_broker_t *b);
/* A command for the command connection; its answer goes to events->on_reply. */
op_t *hd_redis_op_new(redis_broker_t *b, int kind);
void hd_redis_send(redis_broker_t *b, op_t *op, int argc, const char **argv, const size_t *lens);
/* An id epoch seen in an answer: a newer one than before means Redis lost its data (logged,
 * and the history settings are stored again). */
void hd_redis_note_epoch(redis_broker_t *b, uint64_t epoch);
/* SUBSCRIBE or UNSUBSCRIBE P msg:<channel> on the subscriber connection. */
void hd_redis_send_sub(redis_broker_t *b, const char *cmd, const char *channel, size_t len);

/* ---- the bridge, told by the connections through a table of callbacks ---- */

/*
 * What the connections report to the bridge. redis.c hands its table to hd_redis_conn_init;
 * redis_conn.c calls only through it, so the connections know nothing of the bridge's insides
 * and calls run one way (the bridge's files -> redis_conn.c), as wslay hands its caller a callbacks
 * table.
 */
struct hd_redis_events_s {
    /* The answer to op (NULL: it never came, the connection is gone); op is freed after. */
    void (*on_reply)(redis_broker_t *b, op_t *op, const redisReply *rep);
    /* A message of P msg:<channel> (channel without the prefix). */
    void (*on_message)(redis_broker_t *b, const char *channel, size_t len, const char *data,
                       size_t data_len);
    /* Redis confirmed a SUBSCRIBE (is_subscribe) or an UNSUBSCRIBE of P msg:<channel>. */
    void (*on_subscription)(redis_broker_t *b, const char *channel, size_t len, int is_subscribe);
    /* Both connections are ready: subscribe again where subscribers are, catch up. */
    void (*on_up)(redis_broker_t *b);
    /* The connections are gone: fail what waits, keep what deliveries can follow. */
    void (*on_down)(redis_broker_t *b);
    /* A message of P ctl: an operator's order announced by a node (redis_control.c). */
    void (*on_control)(redis_broker_t *b, const char *data, size_t len);
    /* A message of P rc:<node>: a delivery receipt for a publisher of this node. */
    void (*on_receipt)(redis_broker_t *b, const char *data, size_t len);
    /* Releases every channel left with nothing to do (after the queue was dropped); runs on the
     * loop pass after hd_redis_sweep_later. */
    void (*sweep)(redis_broker_t *b);
};
/* The bridge's sweep on the next loop pass (redis_conn.c). */
void hd_redis_sweep_later(redis_broker_t *b);

/* ---- redis_chan.c: channels and replies to workers ---- */

void hd_redis_reply(hd_breq_t *r);
void hd_redis_fail_now(hd_breq_t *r, int err);
/* A request answered later (hd_redis_release): counted, so that a BARRIER waits for it. */
void hd_redis_hold(redis_broker_t *b);
void hd_redis_release(redis_broker_t *b, hd_breq_t *r);
void hd_redis_release_err(redis_broker_t *b, hd_breq_t *r, int err);
/* The epoch and the highest sequence of a message from Redis noted (stats, lost data). */
void hd_redis_note_seq(redis_broker_t *b, uint64_t epoch, uint64_t seq);
/* Parses herald_read's answer (and notes it). Returns 0, or -1 (nothing allocated). */
int hd_redis_read_answer(redis_broker_t *b, const char *channel, const redisReply *rep,
                         hd_redis_read_t *out);
rchan_t *hd_redis_chan_find(redis_broker_t *b, const char *name, size_t len);
/* Finds or creates. */
rchan_t *hd_redis_chan_get(redis_broker_t *b, const char *name, size_t len);
void hd_redis_chan_free(redis_broker_t *b, rchan_t *c);
void hd_redis_chan_subscribe(redis_broker_t *b, rchan_t *c);
void hd_redis_chan_unsubscribe(redis_broker_t *b, rchan_t *c);
/* FCALL herald_read for op (its channel in op->c or op->r). */
void hd_redis_send_read(redis_broker_t *b, op_t *op, const char *channel, const char *mode,
                        int has_since, uint64_t since_epoch, uint64_t since_seq, size_t limit);

/* ---- redis_presence.c: presence and ephemeral messages ---- */

/* The table and the lease timer (before the thread starts); close them with the loop; free. */
void hd_redis_presence_init(redis_broker_t *b, uint64_t lease_ms, uint64_t max_channels);
void hd_redis_presence_close(redis_broker_t *b);
void hd_redis_presence_dispose(redis_broker_t *b);
/* Redis is back: this node's members mirrored again. */
void hd_redis_presence_on_up(redis_broker_t *b);
/* JOIN and LEAVE requests (freed), PRESENCE (answered), an INFO's count after its read (r held),
 * an ephemeral PUBLISH request (answered). */
void hd_redis_presence_join(redis_broker_t *b, hd_breq_t *r);
void hd_redis_presence_leave(redis_broker_t *b, hd_breq_t *r);
void hd_redis_presence_page(redis_broker_t *b, hd_breq_t *r);
void hd_redis_presence_count(redis_broker_t *b, hd_breq_t *r);
void hd_redis_send_ephemeral(redis_broker_t *b, hd_breq_t *r);
/* A channel got its first subscriber on this node (occupied 1) or lost its last: told to
 * Redis (FCALL herald_occ) when webhooks want channel.* events, so that they are sent once for
 * the cluster (src/hooks reads them back). */
void hd_redis_occupancy(redis_broker_t *b, const char *channel, int occupied);
/* The answers of the OP_PRES_* and OP_EPHEMERAL commands (rep NULL: none came). */
void hd_redis_presence_reply(redis_broker_t *b, op_t *op, const redisReply *rep);

/* ---- redis_queue.c: ordered deliveries and catching up ---- */

/* A live-only event (join, leave, ephemeral; the reference passes): to the workers now. */
void hd_redis_deliver_event(redis_broker_t *b, rchan_t *c, hd_message_t *m);

/* Unsubscribes and frees c if nothing is left for it. */
void hd_redis_maybe_release(redis_broker_t *b, rchan_t *c);
/* A live message (the reference passes to the call): delivered now or queued. */
void hd_redis_on_live_message(redis_broker_t *b, rchan_t *c, hd_message_t *m);
/* Delivers from the head of the queue what no read holds back. */
void hd_redis_deliver_ready(redis_broker_t *b);
/* The catch-up read of a channel subscribed again, and its answer (is_current: 0 if stale). */
void hd_redis_send_catchup(redis_broker_t *b, rchan_t *c);
void hd_redis_catchup_reply(redis_broker_t *b, op_t *op, const redisReply *rep, int is_current);
/* hd_redis_events_t's on_up, on_down and sweep. */
void hd_redis_on_up(redis_broker_t *b);
void hd_redis_on_down(redis_broker_t *b);
void hd_redis_sweep(redis_broker_t *b);

/* ---- redis_control.c: operators' orders across the cluster ---- */

/* HD_BREQ_CONTROL: a revocation (FCALL herald_revoke) or a disconnect (PUBLISH P ctl). */
void hd_redis_send_control(redis_broker_t *b, hd_breq_t *r);
/* Its answer (NULL: never came). */
void hd_redis_control_reply(redis_broker_t *b, op_t *op, const redisReply *rep);
/* An order announced on P ctl (hd_redis_events_t.on_control). */
void hd_redis_on_control(redis_broker_t *b, const char *data, size_t len);
/* Reads the live revocations from Redis into the node's set (each connect), and its answer. */
void hd_redis_load_revoked(redis_broker_t *b);
void hd_redis_revoked_reply(redis_broker_t *b, op_t *op, const redisReply *rep);
/* HD_BREQ_RECEIPT (freed): to the publisher's node, this one at once (hd_rcpt_post) or another
 * through PUBLISH P rc:<node>; dropped and counted while Redis is lost or past
 * RCPT_IN_FLIGHT_MAX. Its answer (NULL: never came), and a receipt heard on P rc:<node>. */
void hd_redis_send_receipt(redis_broker_t *b, hd_breq_t *r);
void hd_redis_receipt_reply(redis_broker_t *b, op_t *op, const redisReply *rep);
void hd_redis_on_receipt(redis_broker_t *b, const char *data, size_t len);

/* ---- redis_request.c: requests from workers ---- */

/* A request from the mailbox (arrival order). */
void hd_redis_handle(redis_broker_t *b, hd_breq_t *r);
/* The part of publish r from message `first` (the next after an answered one). */
void hd_redis_send_publish(redis_broker_t *b, hd_breq_t *r, size_t first);
/* Sends the held publishes no earlier subscribe holds back any more, in order. */
void hd_redis_drain_held(redis_broker_t *b);
/* The read that answers a SUBSCRIBE, once its channel is subscribed. */
void hd_redis_issue_sub_read(redis_broker_t *b, rchan_t *c, pend_sub_t *ps);

/* ---- redis_answer.c: hd_redis_events_t's on_reply, on_message, on_subscription ---- */

void hd_redis_on_reply(redis_broker_t *b, op_t *op, const redisReply *rep);
void hd_redis_on_message(redis_broker_t *b, const char *channel, size_t len, const char *data,
                         size_t data_len);
void hd_redis_on_subscription(redis_broker_t *b, const char *channel, size_t len, int is_subscribe);

#endif
