/* SPDX-License-Identifier: MIT */
/*
 * sender.h: the webhook sender's state (endpoints, their jobs, the dead letters) and what the
 * files that implement it share. Only those files include it; hooks.c sees the sender through
 * internal.h (hk_sender_new, the events, hk_sender_admin, hk_sender_close).
 *
 *   sender.c     new and close; with Redis, the poll timer (takes, the registry's version)
 *      |   \
 *      |    regsync.c   with Redis: the registry's endpoints and disabled states applied here
 *      v   /            (registry.c's hk_registry_ops_t)
 *   admin.c      the admin API's answers: list, register (the SSRF check, resolving, storing
 *      |         in Redis), delete, enable, dead letters listed, shown, replayed, purged
 *      v
 *   endpoint.c   endpoints added, found, freed, removed; the publishing threads' filter told
 *      |
 *      v
 *   delivery.c   what becomes of an event: queues, attempts, answers, retries with full
 *                jitter, disabling, dead letters in memory; with Redis, durable.c's
 *                hk_durable_ops_t (the entries taken there)
 *
 * Calls run downwards only (unit.depgraph): a file never calls one above it; sender.c hands
 * durable.c and registry.c the tables of delivery.c and regsync.c. Everything runs on the hooks
 * thread's loop.
 */
#ifndef HERALD_HOOKS_SENDER_H
#define HERALD_HOOKS_SENDER_H

#include "internal.h"

typedef struct hk_endpoint_s hk_endpoint_t;

typedef struct hk_job_s {
    hd_heap_node_t due; /* in the sender's retry heap while waiting (key: loop ms) */
    hd_list_t link;     /* endpoint's ready list, while ready */
    hd_list_t all;      /* endpoint's pending list, oldest first */
    hk_endpoint_t *ep;
    hd_buf_t *body;
    char id[40];
    char type[24];
    uint64_t created_ms;       /* wall clock, when the event was made */
    uint64_t first_attempt_ms; /* loop time of the first attempt (0: none yet) */
    uint64_t first_wall_ms;    /* wall clock of the first attempt (0: none yet; Redis keeps it) */
    uint32_t attempts;
    char sid[HK_SID_MAX]; /* with Redis: its stream entry, "" otherwise */
    char last_error[160];
    hk_request_t req;
} hk_job_t;

typedef struct hk_letter_s {
    hd_list_t link; /* the sender's dead letters, oldest first */
    hk_endpoint_t *ep;
    hd_buf_t *body;
    char id[40];
    char type[24];
    uint32_t attempts;
    uint64_t created_ms, dead_ms; /* wall clock */
    char reason[160];
} hk_letter_t;

struct hk_endpoint_s {
    hk_sender_t *s;
    const hd_webhook_def_t *def; /* the conf's, or own_def */
    hd_webhook_def_t *own_def;   /* registered through the admin API (is_api): owned */
    char *record;                /* is_api: its registration as stored (JSON), owned */
    unsigned is_api : 1;
    unsigned is_state_unstored : 1; /* with Redis: its state is not in Redis yet */
    unsigned is_deleting : 1;       /* with Redis: its delete is on its way (no more takes) */
    uint64_t state_seq;             /* with Redis: the number of its last state sent */
    hk_dslot_t *slot;               /* with Redis: its keys there */
    hk_pool_t *pool;
    hk_signer_t *signer; /* its secrets keyed, its head's fixed part (sign.c) */
    hd_list_t ready, all;
    size_t n_pending, in_flight, n_letters;
    int is_disabled;
    char disabled_reason[160];
    uint64_t disabled_ms;
    uint64_t attempts, delivered, failures[HD_HOOKS_FAIL_COUNT];
    int last_status;
    char last_error[160];
    uint64_t failing_since_ms; /* wall clock of the first failure since the last 2xx; 0: none */
    uint64_t redis_pending;    /* with Redis: its pending events there, at the last take */
};

struct hk_sender_s {
    uv_loop_t *loop;
    hd_conf_t *conf;
    hk_client_conf_t cc;
    hk_endpoint_t **eps; /* the conf's first, in conf order, then the admin API's */
    size_t n_eps, n_api, cap_eps;
    hk_filter_t *filter; /* told of the admin API's endpoints */
    hd_heap_t retry;
    uv_timer_t timer;
    hd_list_t dlq;
    size_t n_dlq;
    size_t mem;
    uint64_t rng;
    uint64_t warned_ms;
    hd_hooks_stats_t *st;
    hk_durable_t *dur;   /* with Redis: where jobs come from and go (NULL: in memory) */
    hk_registry_t *reg;  /* with Redis: the admin API's endpoints and the disabled ones */
    uv_timer_t poll;     /* with Redis: takes for every endpoint with room (sender.c) */
    uint64_t redis_dlq;  /* with Redis: the cluster's dead letters, at the last take */
    unsigned n_closing;  /* its timers not closed yet, once closing */
    hd_list_t resolving; /* registrations whose host is being resolved (admin.c) */
};

/* ---- delivery.c ---- */

/* The gauges of st (pending, oldest pending, dead letters, memory) set from what is held. */
void hk_sender_gauges(hk_sender_t *s);
/* Rate-limited warnings: 1 when one may be logged now (at most one a second). */
int hk_sender_may_warn(hk_sender_t *s);
/* Starts what ep has room for: attempts of its ready jobs (in memory), or a take from Redis. */
void hk_sender_pump(hk_sender_t *s, hk_endpoint_t *ep);
/* Tells Redis ep's state (with Redis), for every node; kept to send again while it is away. */
void hk_sender_store_state(hk_sender_t *s, hk_endpoint_t *ep);
/* Enables ep again (nothing when it is enabled) and pumps it. */
void hk_sender_enable(hk_sender_t *s, hk_endpoint_t *ep);
/* Disables ep: what waits becomes dead letters, what is in flight ends on its own (store: and
 * tells Redis, when the decision is this node's). */
void hk_sender_disable(hk_sender_t *s, hk_endpoint_t *ep, const char *reason, int store);
/* Frees a job with its charge (unlinked from its endpoint, the retry heap). */
void hk_job_free(hk_sender_t *s, hk_job_t *j);
/* Frees a dead letter with its charge. */
void hk_letter_free(hk_sender_t *s, hk_letter_t *l);
/* Queues a dead letter again as a new event with the same id; 0, or -1 when its endpoint is
 * disabled or its queue is full (the letter stays). The caller pumps. */
int hk_letter_replay(hk_sender_t *s, hk_letter_t *l);
/* What durable.c tells the sender (hk_durable_new's ops; data: the sender, owner: an
 * endpoint). */
extern const hk_durable_ops_t hk_sender_durable_ops;

/* ---- endpoint.c ---- */

/* A new endpoint, last: def is the conf's, or own (then record too) one the admin API
 * registered, both taken. The caller checked there is room (s->n_eps < s->cap_eps). */
hk_endpoint_t *hk_endpoint_add(hk_sender_t *s, const hd_webhook_def_t *def, hd_webhook_def_t *own,
                               char *record);
/* Frees ep with what it holds: its connections (requests in flight are cut), its pending events
 * and its dead letters (in memory). Returns the events that were pending here. */
size_t hk_endpoint_free(hk_sender_t *s, hk_endpoint_t *ep);
/* An endpoint of the admin API deleted (here, or on another node: with Redis). */
void hk_endpoint_remove(hk_sender_t *s, hk_endpoint_t *ep);
/* The endpoint named name, or NULL. */
hk_endpoint_t *hk_endpoint_find(hk_sender_t *s, const char *name);
/* The admin API's endpoints changed: the publishing threads' filter learns of it. */
void hk_endpoint_filter_update(hk_sender_t *s);

/* ---- admin.c (hk_sender_admin: internal.h) ---- */

/* At close: registrations whose host is being resolved are answered 503 once the resolver is
 * done (their requests are cancelled). */
void hk_admin_cancel(hk_sender_t *s);

/* ---- regsync.c ---- */

/* What registry.c tells the sender (hk_registry_new's ops; data: the sender). */
extern const hk_registry_ops_t hk_regsync_ops;

#endif
