/* SPDX-License-Identifier: MIT */
/*
 * hooks.h: webhooks, herald as a server-to-server sender (src/hooks/, docs/webhooks.md).
 *
 * One thread with its own uv loop sends every webhook. Workers never wait for it: an event is
 * one message pushed on its lock-free mailbox (the MPSC queue every loop uses) and one wake-up
 * per worker loop pass (hd_worker_wake_later), whatever the pass queued.
 *
 *   worker (publish accepted) --hd_hooks_on_published--> mailbox --hd_wake--> hooks loop
 *   broker (0 -> 1, 1 -> 0 subscribers) --hd_hooks_on_channel--^       |
 *                                                                       v
 *        per endpoint: queue (bounded) -> up to webhook_concurrency requests (HTTP/1.1 client,
 *        keep-alive pool, TLS) -> 2xx done | 410 disable | else retry with full jitter
 *        until webhook_retry_window -> dead letters (bounded), replayable through /admin
 *
 * Delivery is at least once. Without Redis, pending events and dead letters are in memory only
 * (a restart loses them); with Redis they live in Redis, shared by every node, and a dead node's
 * unfinished deliveries are taken over by another (src/hooks/durable.c, docs/webhooks.md).
 *
 * Files, calls one way: hooks.c (thread, mailbox, the entry points below) -> the sender
 * (src/hooks/sender.h draws its files: sender.c new and close -> regsync.c, admin.c admin
 * answers -> endpoint.c endpoints -> delivery.c queues, retries, dead letters) -> client.c
 * (connections, TLS, requests) -> response.c (llhttp: the response, Retry-After, pure); the
 * sender -> sign.c (Standard Webhooks signatures, pure), event.c (event bodies, pure),
 * durable.c (with Redis: the queues and dead letters there) -> rconn.c (the thread's Redis
 * connection), registry.c (with Redis: the endpoints the admin API registered, and the
 * disabled ones, for every node) -> rconn.c; hooks.c, the sender -> filter.c (which events the
 * endpoints want, read by the publishing threads: the conf's endpoints and a view of the
 * registered ones); notify.c (the notify hook's queue and batches) -> notify_rec.c (with Redis:
 * the node's notified streams, a dead node's reported disconnected by one survivor) -> rconn.c.
 */
#ifndef HERALD_HOOKS_H
#define HERALD_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include "herald/auth.h"
#include "herald/conf.h"
#include "herald/pubsub.h"

typedef struct hd_hooks_s hd_hooks_t;

/*
 * Makes the sender for conf's webhooks (one conf reference taken; the webhook directives are
 * RESTART: reloads do not change it). Its thread starts with hd_hooks_start. Returns 0, or
 * HD_ETLS with a message in err when the TLS context cannot be made (webhook_tls_ca unreadable).
 */
int hd_hooks_new(hd_hooks_t **out, hd_conf_t *conf, char *err, size_t errlen);
/* Starts the thread. 0 or a negative UV_E* code. */
int hd_hooks_start(hd_hooks_t *h);
/*
 * Asks the thread to stop (requests in flight are cut; events still pending are lost and logged
 * as a count, after the notify hook's last batch, within its timeout) and waits for it to end, at
 * most timeout_ms. Call after no worker can publish. Returns 0 once the thread has ended (then
 * hd_hooks_free does not wait), or UV_ETIMEDOUT: the thread still runs (without Redis it runs
 * under SCHED_IDLE, and a machine whose cores are all busy may give it none for seconds), and
 * nothing it uses may be freed: the caller can only end the process (main.c: _exit). Called
 * again, waits again.
 */
int hd_hooks_stop(hd_hooks_t *h, uint64_t timeout_ms);
/*
 * Stops the thread unless hd_hooks_stop did (blocks until it has ended) and frees everything.
 * Call after no worker can publish.
 */
void hd_hooks_free(hd_hooks_t *h);

/* The process's sender, set once by main before workers run (NULL: no webhooks). */
void hd_hooks_set(hd_hooks_t *h);
hd_hooks_t *hd_hooks_get(void);

/*
 * A publish was accepted (ids set): from the worker that took it, once per message, any thread.
 * Cheap when nothing matches (the endpoints' patterns are read, nothing allocated); otherwise
 * one allocation, one reference per message and one push. Never blocks.
 */
void hd_hooks_on_published(hd_message_t *const *msgs, size_t n);
/*
 * A channel got its first subscriber on this node (occupied 1) or lost its last (occupied 0):
 * from the embedded broker, any thread, possibly under its lock (only a push is done).
 */
void hd_hooks_on_channel(const char *channel, size_t len, int occupied);
/* 1 if some endpoint wants channel lifecycle events (the broker asks before calling). */
int hd_hooks_want_channel_events(void);
/*
 * A presence event of the embedded broker (ev->kind HD_MSG_JOIN: a member's first connection on
 * the channel, HD_MSG_LEAVE: its last left; ev->data {"member":..,"conn":..}): member.added or
 * member.removed for the endpoints that want it. Any thread; a reference and a push, no more.
 * With Redis the broker does not call it: the hooks thread reads the cluster's presence events
 * from Redis (durable.c), once for the cluster.
 */
void hd_hooks_on_member(hd_message_t *ev);

/* Node-wide figures for /stats and /metrics (relaxed reads, any thread). */
enum {
    HD_HOOKS_FAIL_STATUS = 0, /* an answer other than 2xx (410 included) */
    HD_HOOKS_FAIL_TIMEOUT,    /* webhook_connect_timeout or webhook_timeout passed */
    HD_HOOKS_FAIL_CONNECT,    /* DNS, refused, reset, closed before a complete answer */
    HD_HOOKS_FAIL_TLS,        /* handshake or certificate verification failed */
    HD_HOOKS_FAIL_REFUSED,    /* the address is loopback, private or link-local (SSRF) */
    HD_HOOKS_FAIL_PROTOCOL,   /* an answer that is not HTTP/1.x, or its body past 64 KiB */
    HD_HOOKS_FAIL_COUNT
};
extern const char *const hd_hooks_fail_names[HD_HOOKS_FAIL_COUNT];
enum {
    HD_HOOKS_DROP_MEMORY = 0,   /* webhook_max_memory reached: the event was not kept */
    HD_HOOKS_DROP_DISABLED,     /* its endpoint is disabled */
    HD_HOOKS_DROP_DEAD_LETTERS, /* a dead letter pushed out by a newer one (webhook_dead_letters) */
    HD_HOOKS_DROP_COUNT
};
extern const char *const hd_hooks_drop_names[HD_HOOKS_DROP_COUNT];

typedef struct hd_hooks_stats_s {
    uint64_t endpoints;
    uint64_t endpoints_disabled;
    uint64_t events;    /* events queued for an endpoint (one per endpoint) */
    uint64_t attempts;  /* requests sent */
    uint64_t delivered; /* answered 2xx */
    uint64_t failures[HD_HOOKS_FAIL_COUNT];
    uint64_t retries;       /* attempts scheduled after a failure */
    uint64_t dead_lettered; /* events that became dead letters */
    uint64_t replayed;      /* dead letters queued again by the admin API */
    uint64_t dropped[HD_HOOKS_DROP_COUNT];
    uint64_t pending;           /* events waiting or in flight, every endpoint */
    uint64_t oldest_pending_ms; /* age of the oldest of them (0: none) */
    uint64_t dead_letters;      /* dead letters held */
    uint64_t memory_bytes;      /* event bodies held */
    /* the authorize hook */
    uint64_t authz_asked;      /* questions from workers */
    uint64_t authz_cached;     /* answered from the cache */
    uint64_t authz_joined;     /* answered by a call already on its way for the same question */
    uint64_t authz_calls;      /* requests sent to the backend */
    uint64_t authz_allowed;    /* calls answered allow */
    uint64_t authz_denied;     /* calls answered deny */
    uint64_t authz_errors;     /* calls without a usable answer (timeout, down, 5xx, bad JSON) */
    uint64_t authz_cache_size; /* answers in the cache */
    /* the notify hook */
    uint64_t notify_events;       /* events queued */
    uint64_t notify_delivered;    /* events acknowledged (a 2xx to their batch) */
    uint64_t notify_requests;     /* batches sent (attempts) */
    uint64_t notify_batches;      /* batches answered 2xx */
    uint64_t notify_failures;     /* batches that failed (retried) */
    uint64_t notify_dropped;      /* events not kept: queue_size, max_memory, the mailbox full */
    uint64_t notify_pending;      /* events waiting or on their way */
    uint64_t notify_memory_bytes; /* what those and the mailbox's notify events hold */
} hd_hooks_stats_t;
/* Zeroes *out when h is NULL. */
void hd_hooks_get_stats(hd_hooks_t *h, hd_hooks_stats_t *out);

/* One webhook endpoint's figures, as the hooks thread last published them (at most
 * HD_HOOKS_EP_STATS_MS old): the labelled series of /metrics. */
#define HD_HOOKS_EP_STATS_MS 1000
typedef struct hd_hooks_ep_stats_s {
    char name[HD_WEBHOOK_NAME_MAX + 1];
    uint64_t pending;             /* waiting or in flight (with Redis: there, at the last take) */
    uint64_t oldest_pending_ms;   /* age of the oldest of those held here (0: none) */
    uint64_t attempts, delivered; /* this node's, since it started */
    uint64_t failures[HD_HOOKS_FAIL_COUNT]; /* likewise, by reason (HD_HOOKS_FAIL_*) */
    uint64_t dead_letters; /* held (with Redis: the cluster's for it, at the last count) */
} hd_hooks_ep_stats_t;
/* Any thread: a copy of every endpoint's figures (*out, to free; NULL when none); returns how
 * many. One short lock, shared with the hooks thread's publishing once a second. */
size_t hd_hooks_get_ep_stats(hd_hooks_t *h, hd_hooks_ep_stats_t **out);

/*
 * The admin API's questions (src/api/webhooks.c), answered on the hooks loop with a JSON body:
 *   LIST            endpoints with their state and figures
 *   ENABLE          endpoint: enabled again after a 410 (or the admin's DISABLE)
 *   DEAD_LIST       dead letters (of endpoint when given), oldest first, at most limit, no payload
 *   DEAD_GET        the dead letters with event_id (of endpoint when given), with their payload
 *   DEAD_REPLAY     those with event_id, or every one when event_id is "": queued again as new
 *                   attempts (same event id), skipping disabled endpoints
 *   DEAD_PURGE      those with event_id, or every one: dropped
 *   REGISTER        def (its name the id) with record, its registration as JSON: a new endpoint
 *                   (with Redis stored there, for every node): 201 {"endpoint":{..}}; 409 when
 *                   the name is taken, 400 for a loopback/private address without
 *                   webhook_allow_private, 507 past webhook_max_endpoints, 503 Redis away
 *   DELETE          endpoint, one the admin API registered: 200; 409 for one of the conf
 * status: 200, 404 (no such endpoint or dead letter), 409 (replay to a disabled endpoint).
 */
enum {
    HD_HOOKS_LIST = 1,
    HD_HOOKS_ENABLE,
    HD_HOOKS_DEAD_LIST,
    HD_HOOKS_DEAD_GET,
    HD_HOOKS_DEAD_REPLAY,
    HD_HOOKS_DEAD_PURGE,
    HD_HOOKS_REGISTER,
    HD_HOOKS_DELETE,
};
typedef struct hd_hooks_admin_s hd_hooks_admin_t;
typedef void (*hd_hooks_admin_cb)(hd_hooks_admin_t *a);
struct hd_hooks_admin_s {
    hd_msg_t base_; /* private */
    /* in */
    int op;
    char endpoint[HD_WEBHOOK_NAME_MAX + 1]; /* "" = every endpoint */
    char event_id[64];                      /* "" = every event (replay, purge) */
    uint32_t limit;                         /* DEAD_LIST */
    hd_webhook_def_t *def; /* REGISTER: malloc'd; the sender takes it, else freed with a */
    char *record;          /* REGISTER: malloc'd JSON (hd_webhook_def_from_json reads it) */
    size_t record_len;
    hd_worker_t *worker; /* the answer runs cb there */
    hd_hooks_admin_cb cb;
    void *data;
    /* out */
    int status;
    char *body; /* JSON, NUL-terminated; freed with the request */
    size_t body_len;
};
/* A request (zeroed) for op; fill endpoint, event_id, limit, worker, cb, data, then submit. */
hd_hooks_admin_t *hd_hooks_admin_new(int op);
/* Hands a to the hooks loop; cb runs later on a->worker's loop, then the caller frees a with
 * hd_hooks_admin_free. Without a sender (no webhook configured) cb runs there with 404. */
void hd_hooks_admin_submit(hd_hooks_admin_t *a);
void hd_hooks_admin_free(hd_hooks_admin_t *a);

/*
 * The authorize hook (authorize_hook, docs/webhooks.md "Backend hooks"): a worker asks the
 * application's backend whether a connect or a subscribe may go on. The question is a JSON body
 * the transport builds; the hooks loop answers from its cache (an answer given for the same body
 * within the hook's cache= time), joins a call already on its way with the same body, or POSTs
 * it, signed as a webhook, at most concurrency= at once (the others wait their turn, and one
 * still waiting timeout= after it was asked is answered as timed out). The answer comes back to
 * a->worker's loop (cb), never inside hd_hooks_authorize.
 *
 *   worker: body --hd_hooks_authorize--> hooks loop: cache? same call on its way? POST
 *   worker <--cb(a): ALLOW (+ identity) | DENY (status, reason) | ERROR (reason)----+
 */
enum {
    HD_HOOKS_ALLOW = 0,
    HD_HOOKS_DENY,  /* the backend refused: status 401 or 403, reason */
    HD_HOOKS_ERROR, /* no usable answer (down, timeout, 5xx, not JSON): reason */
};
typedef struct hd_hooks_authz_s hd_hooks_authz_t;
typedef void (*hd_hooks_authz_cb)(hd_hooks_authz_t *a);
struct hd_hooks_authz_s {
    hd_msg_t base_;     /* private */
    hd_list_t link_;    /* private: the call it waits for */
    hd_hooks_t *hooks_; /* private: the sender it was handed to */
    uint64_t asked_ms_; /* private: the hooks loop's time when it arrived */
    /* in */
    char *body; /* the question (malloc'd JSON); freed with the request */
    size_t body_len;
    hd_worker_t *worker; /* the answer runs cb there */
    hd_hooks_authz_cb cb;
    void *data;
    /* out */
    int verdict;       /* HD_HOOKS_* */
    int status;        /* DENY: 401 or 403 */
    char reason[200];  /* DENY, ERROR: one printable line */
    hd_identity_t *id; /* ALLOW: the identity the backend gave (one reference), or NULL */
    unsigned is_cached : 1;
};
/* A request (zeroed); fill body, worker, cb, data, then hd_hooks_authorize. */
hd_hooks_authz_t *hd_hooks_authz_new(void);
/* Hands a to the hooks loop. Without a sender or an authorize hook, cb runs on a->worker's loop
 * with HD_HOOKS_ERROR. cb owns a then and frees it with hd_hooks_authz_free. */
void hd_hooks_authorize(hd_hooks_authz_t *a);
void hd_hooks_authz_free(hd_hooks_authz_t *a);

/*
 * The notify hook (notify_hook, docs/webhooks.md "Backend hooks"): the transports report stream
 * connects, disconnects, subscribes and unsubscribes; the hooks loop sends them to the backend
 * in batches, at least once while the process lives; with Redis, the streams of a node that
 * dies are reported disconnected by a surviving node (src/hooks/notify_rec.c).
 */
/* 1 when the notify hook wants events of kind (HD_NOTIFY_*): one load and a test, any thread. */
int hd_hooks_notify_wants(unsigned kind);
/* Queues one event, json[0..len) a JSON object (copied); any thread, never blocks (past the
 * mailbox's count or the hook's max_memory, which the events in the mailbox and in the hook's
 * queue share, the event is dropped and counted). */
void hd_hooks_notify(const char *json, size_t len);
/* This process's id in event and connection ids: 16 hex digits drawn at start. */
const char *hd_hooks_node_id(void);

#endif
