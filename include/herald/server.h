/* SPDX-License-Identifier: MIT */
/*
 * server.h: the node: N worker threads, each with its own uv loop, its own listening socket per
 * listener (SO_REUSEPORT: the kernel spreads accepts) and its own connections. Loops share no
 * mutable state; they talk by messages pushed on a lock-free queue and an uv_async wake-up.
 *
 *                 main thread (signals, reload, shutdown, systemd notify)
 *                   |  hd_worker_post(msg)        ^ hd_server_post_main
 *        +----------+-----------+                  |
 *        v                      v                  |
 *   worker 0: uv loop      worker 1: uv loop  -----+
 *   listener :8080 (fd)    listener :8080 (fd)   <- same port, SO_REUSEPORT
 *   conns, timers          conns, timers
 *
 * Node-wide figures that must be shared (the connection count for max_connections) are single
 * atomic counters touched once per connection, never per request or per delivery.
 */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "herald/common.h"
#include "herald/conf.h"
#include "herald/conn.h"

typedef struct hd_server_s hd_server_t;
typedef struct hd_msg_s hd_msg_t;

/* A message for a worker loop: cb runs on that loop and owns msg from then on. */
typedef void (*hd_msg_cb)(hd_worker_t *w, hd_msg_t *msg);
struct hd_msg_s {
    hd_msg_t *next_; /* queue link: private */
    hd_msg_cb cb;
};

/* Lock-free multi-producer single-consumer intrusive queue (one per loop). */
typedef struct hd_mpsc_s {
    hd_msg_t *head; /* producers exchange here */
    hd_msg_t *tail; /* consumer pops here */
    hd_msg_t stub;
} hd_mpsc_t;

void hd_mpsc_init(hd_mpsc_t *q);
void hd_mpsc_push(hd_mpsc_t *q, hd_msg_t *m);
/* Returns the oldest message or NULL (empty, or a producer mid-push: its wake-up follows). */
hd_msg_t *hd_mpsc_pop(hd_mpsc_t *q);

/* Per-worker counters: written by the owning worker only, read by anyone (relaxed). */
typedef struct hd_worker_stats_s {
    uint64_t accepted;
    uint64_t refused_max_conns;
    uint64_t refused_rate;
    uint64_t requests;
    uint64_t tls_handshake_failures;
    uint64_t timeouts;
    uint64_t conns; /* open now on this worker */
} hd_worker_stats_t;

#define HD_STAT_INC(w, field)                                                                      \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field + 1, __ATOMIC_RELAXED)
#define HD_STAT_DEC(w, field)                                                                      \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field - 1, __ATOMIC_RELAXED)
#define HD_STAT_GET(w, field) __atomic_load_n(&(w)->stats.field, __ATOMIC_RELAXED)

#define HD_READ_BUF_BYTES    (64 * 1024)
#define HD_TLS_SCRATCH_BYTES (16 * 1024)

struct hd_worker_s {
    unsigned id;
    char name[16];
    hd_server_t *server;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    hd_mpsc_t mailbox;
    uv_prepare_t flush_prepare; /* flushes output queued by timers before the loop blocks */
    uv_check_t flush_check;     /* flushes output queued by I/O callbacks */
    uv_tcp_t *listeners;        /* one per conf listen line */
    size_t n_listeners;
    hd_conf_t *conf; /* this loop's reference to the current configuration */
    SSL_CTX *tls_ctx;
    hd_list_t conns;
    hd_list_t flush_list;
    uv_timer_t conn_timer; /* fires the earliest connection deadline of theap */
    hd_conn_t **theap;     /* min-heap of connections by deadline_ms (conn.c) */
    uint32_t theap_len, theap_cap;
    uint64_t timer_armed_at;
    void *wreq_pool; /* spare write requests (conn.c) */
    uint32_t wreq_pooled;
    uint64_t next_conn_id;
    /* accept token bucket: this worker's share of accept_rate / accept_burst */
    double tokens;
    uint64_t tokens_ms;
    uint64_t refused_logged_ms;
    uint64_t refused_since_log;
    time_t date_sec;
    char date[40];
    unsigned is_draining : 1; /* graceful shutdown started */
    unsigned is_stopped : 1;  /* connections closed; waiting for exit */
    hd_worker_stats_t stats;
    void *modules[8]; /* per-worker state of higher layers (pub/sub, ...), by slot */
    char read_buf[HD_READ_BUF_BYTES];
    char tls_scratch[HD_TLS_SCRATCH_BYTES];
};

/* Called on the worker loop for every accepted connection that passed the limits. */
typedef void (*hd_accept_cb)(hd_conn_t *c);

/*
 * Creates the node for `conf` (one reference taken): binds every listener once per worker with
 * SO_REUSEPORT (port 0 binds an ephemeral port once and reuses it), loads the TLS context when a
 * listener needs it. Returns 0, or a negative code with a message in err saying which listener
 * or certificate failed ("listen 0.0.0.0:80: address already in use").
 */
int hd_server_new(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb, uv_loop_t *main_loop,
                  char *err, size_t errlen);
/* Starts the worker threads. */
int hd_server_start(hd_server_t *s);
/*
 * Applies a new configuration snapshot live (takes a reference): reloads the TLS certificate and
 * posts the snapshot to every worker. Returns 0, or HD_ETLS with err set (nothing changed).
 */
int hd_server_reload(hd_server_t *s, hd_conf_t *conf, char *err, size_t errlen);
/*
 * Graceful shutdown: workers stop accepting, finish in-flight responses, ask long-lived
 * connections to leave; after conf->shutdown_timeout_ms whatever is left is closed. done_cb runs
 * on the main loop when every worker has exited; then call hd_server_free.
 */
void hd_server_shutdown(hd_server_t *s, void (*done_cb)(hd_server_t *s));
/*
 * Shutdown hook for whatever else posts to workers (the broker). When no worker has a
 * connection left, quiet_cb(s, 0) runs on the main loop; the hook then makes every worker call
 * hd_server_quiet_ack once (from its own loop) after the last message it can receive, and when
 * all have, quiet_cb(s, 1) runs: the moment to stop that component. Then the loops end.
 */
void hd_server_on_quiet(hd_server_t *s, void (*quiet_cb)(hd_server_t *s, int all_acked));
void hd_server_quiet_ack(hd_worker_t *w);
void hd_server_free(hd_server_t *s);

/*
 * For tests and fuzzers: a node with one worker, no listeners and no threads. The caller drives
 * the worker's loop (hd_server_worker(s, 0)->loop) and hands it connected sockets with
 * hd_server_adopt. Free with hd_server_free after closing every connection.
 */
int hd_server_new_embedded(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb,
                           uv_loop_t *main_loop);
/* Adopts a connected socket (one end of a socketpair, say) as a connection on worker 0. */
hd_conn_t *hd_server_adopt(hd_server_t *s, int fd);

/* Posts msg to worker w (any thread). */
void hd_worker_post(hd_worker_t *w, hd_msg_t *msg);
unsigned hd_server_worker_count(const hd_server_t *s);
hd_worker_t *hd_server_worker(hd_server_t *s, unsigned i);
/* Current configuration of the calling worker. */
static inline const hd_conf_t *hd_worker_conf(const hd_worker_t *w)
{
    return w->conf;
}
/* The node's open connection count (all workers). */
uint64_t hd_server_conn_count(const hd_server_t *s);
/* RFC 7231 date for the Date header, cached per second. */
const char *hd_worker_date(hd_worker_t *w);
/* Bound address of listener i ("127.0.0.1:43121"). */
const char *hd_server_listen_addr(const hd_server_t *s, size_t i);

#endif
