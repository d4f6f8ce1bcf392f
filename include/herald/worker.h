/* SPDX-License-Identifier: MIT */
/*
 * worker.h: a worker is one thread running one uv loop, with a mailbox other threads post to
 * (hd_worker_post), its reference to the current configuration, its counters and the per-worker
 * state of the layers above it, each behind its own pointer. Everything on a worker's loop is
 * touched by that thread only; other threads post messages.
 *
 *   other threads --hd_worker_post(msg)--> mailbox --hd_wake--> msg->cb(w, msg) on the loop
 *
 * Layers, one way: the connection layer (src/net/conn*.c) keeps its per-worker state (connection
 * list, timer heap, write pool, read buffer) behind conns_ and calls this API; the worker never
 * looks inside it. The server (server.h: listener.c, lifecycle.c) creates workers and drives them.
 */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "herald/common.h"
#include "herald/conf.h"
#include "herald/mpsc.h"
#include "herald/tls.h"
#include "herald/wake.h"

typedef struct hd_server_s hd_server_t;
typedef struct hd_conn_worker_s hd_conn_worker_t;
typedef struct hd_iplimit_s hd_iplimit_t;

/* Per-worker counters: written by the owning worker only, read by anyone (relaxed). */
typedef struct hd_worker_stats_s {
    uint64_t accepted;
    uint64_t refused_max_conns;
    uint64_t refused_rate;
    uint64_t refused_ip_conns;        /* max_connections_per_ip */
    uint64_t refused_ip_rate;         /* connect_rate_per_ip */
    uint64_t proxy_malformed;         /* PROXY protocol headers refused */
    uint64_t proxy_timeouts;          /* PROXY protocol headers not complete in time */
    uint64_t client_publish_refused;  /* client_publish_rate */
    uint64_t tickets_issued;          /* POST /auth/ticket answered 201 */
    uint64_t tickets_used;            /* tickets taken by a connect (each once) */
    uint64_t tickets_refused_invalid; /* connects with a malformed, unknown, used or expired one */
    uint64_t tickets_refused_full;    /* POST /auth/ticket refused: auth_max_tickets */
    uint64_t auth_cache_hits;         /* tokens answered by the worker's cache (no signature) */
    uint64_t auth_cache_misses;       /* tokens verified (then kept when valid) */
    uint64_t auth_cache_entries;      /* held now */
    uint64_t auth_cache_bytes;        /* charged now (auth_cache_memory) */
    uint64_t ephemeral_refused;       /* ephemeral_rate */
    uint64_t receipts_dropped;        /* "acked" receipts given up (ws WS_MAX_DUE) */
    uint64_t requests;
    uint64_t tls_handshake_failures;
    uint64_t timeouts;
    uint64_t conns;  /* open now on this worker */
    uint64_t writes; /* output flushes: one write per connection per loop pass with output (a
                        writev of its own, or its part of a batch: conn.c flush_batch) */
    uint64_t kicked_revoked;      /* connections ended by a revocation (POST /admin/revoke) */
    uint64_t kicked_disconnected; /* ended by POST /admin/disconnect */
    uint64_t h2_conns;            /* connections that became HTTP/2 */
    uint64_t h2_streams;          /* HTTP/2 streams opened by clients */
    uint64_t h2_streams_reset;    /* streams reset for http2_max_queue_bytes */
    uint64_t h2_errors;           /* HTTP/2 connections ended with an error (GOAWAY) */
    uint64_t authz_pending;       /* authorize hook questions waiting for their answer, now */
    uint64_t authz_refused_busy;  /* connects refused: the hook's max_pending was reached */
    uint64_t authz_refused_error; /* refused: the backend failed, on_error=deny */
    uint64_t authz_denied;        /* refused by the backend's answer */
} hd_worker_stats_t;

#define HD_STAT_INC(w, field)                                                                      \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field + 1, __ATOMIC_RELAXED)
#define HD_STAT_DEC(w, field)                                                                      \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field - 1, __ATOMIC_RELAXED)
#define HD_STAT_GET(w, field) __atomic_load_n(&(w)->stats.field, __ATOMIC_RELAXED)

struct hd_worker_s {
    unsigned id;
    char name[16];
    hd_server_t *server;
    uv_loop_t loop;
    uv_thread_t thread;
    hd_wake_t wakeup; /* other threads' way in (wake.h: no spinning, unlike uv_async_t) */
    hd_mpsc_t mailbox;
    hd_conf_t *conf; /* this loop's reference to the current configuration */
    SSL_CTX *tls_ctx;
    /* listener.c: this worker's listening sockets and its share of the accept rate */
    uv_tcp_t *listeners; /* one per conf listen line */
    size_t n_listeners;
    double tokens;
    uint64_t tokens_ms;
    uint64_t refused_logged_ms;
    uint64_t refused_since_log;
    uint64_t accept_failed_logged_ms; /* accept errors (EMFILE): one warning a second */
    uint64_t accept_failed_since_log;
    hd_conn_worker_t *conns_; /* the connection layer's state: conn_internal.h */
    hd_iplimit_t *iplimit;    /* the node's per-address table (src/net/iplimit.h), shared */
    /* Tokens this worker verified lately (auth.h): made at the first token, freed with it. */
    hd_auth_cache_t *auth_cache;
    time_t date_sec;
    char date[40];
    unsigned is_draining : 1; /* graceful shutdown started */
    unsigned is_stopped : 1;  /* connections closed; waiting for exit */
    uint8_t has_local_mail;   /* messages queued from this worker's own thread, not run yet */
    uint8_t n_wakes_owed;     /* hd_worker_wake_later: other loops to wake after this pass */
    hd_wake_t *wakes_owed[4];
    hd_worker_stats_t stats;
    void *modules[8]; /* per-worker state of higher layers (pub/sub, ...), by slot */
};

/* Posts msg to worker w (any thread); msg->cb runs on w's loop and owns msg. Same as
 * hd_worker_push then hd_worker_wake. */
void hd_worker_post(hd_worker_t *w, hd_msg_t *msg);
/*
 * Queues msg in w's mailbox without waking w (any thread); hd_worker_wake(w) must follow. The
 * mailbox is one FIFO: messages run on w in the order they were pushed, whoever pushed them, so
 * a thread that pushes to several workers under one lock gives them all one order, and wakes
 * them after it let the lock go.
 */
void hd_worker_push(hd_worker_t *w, hd_msg_t *msg);
/*
 * Makes w run what is in its mailbox. From another thread: w's wake-up (wake.h: a system call
 * on both sides). From w's own thread: no wake-up at all; the mailbox is drained later in this
 * same loop pass, before output is written (hd_worker_run_local), never inside this call.
 */
void hd_worker_wake(hd_worker_t *w);
/* The connection layer calls this in the prepare and check phases, before it flushes output:
 * runs what w's own thread queued in this pass (and anything queued before it). */
void hd_worker_run_local(hd_worker_t *w);
/*
 * Wakes another loop's wk once this worker's loop pass has run its own mail and written its
 * output (hd_worker_send_wakes), instead of now: whatever the pass queues for that loop (a
 * webhook event per publish taken in the pass) goes with one wake-up, and the pass's answers
 * leave first. From a thread that is not a worker's (or with four other loops owed already):
 * hd_wake_send now. The caller has pushed its mail before, as for hd_wake_send.
 */
void hd_worker_wake_later(hd_wake_t *wk);
/* Sends the wake-ups this worker owes (the connection layer, after each flush; the worker's
 * thread at its end). */
void hd_worker_send_wakes(hd_worker_t *w);
/* The worker whose thread is calling (NULL on the main thread and in embedded test nodes). */
hd_worker_t *hd_worker_self(void);
/* Current configuration of the calling worker. */
static inline const hd_conf_t *hd_worker_conf(const hd_worker_t *w)
{
    return w->conf;
}
/* RFC 7231 date for the Date header, cached per second. */
const char *hd_worker_date(hd_worker_t *w);

/*
 * For the connection layer: a connection was created on / freed from w. They keep the worker's
 * and the node's connection counts (max_connections); the last free on a worker shutting down
 * tells the server the worker is idle.
 */
void hd_worker_conn_opened(hd_worker_t *w);
void hd_worker_conn_freed(hd_worker_t *w);

#endif
