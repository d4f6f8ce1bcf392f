/* SPDX-License-Identifier: MIT */
/*
 * internal.h: the server's private parts, shared by worker.c, listener.c and lifecycle.c (never
 * by the connection layer, conn*.c, which sees workers through herald/worker.h only).
 *
 *   lifecycle.c --> listener.c --> conn*.c (conn_layer.h) --> worker.c --> core/mpsc.c
 *        |                                                      ^
 *        +------------------------------------------------------+
 *
 * The one report that goes up, a worker left without connections, is a callback the lifecycle
 * installs (worker_idle_cb), not a call.
 */
#ifndef HERALD_NET_INTERNAL_H
#define HERALD_NET_INTERNAL_H

#include "herald/server.h"

struct hd_server_s {
    hd_conf_t *conf;
    uv_loop_t *main_loop;
    uv_async_t main_wakeup;
    hd_mpsc_t main_mailbox;
    hd_accept_cb accept_cb;
    SSL_CTX *tls_ctx;
    hd_worker_t **workers;
    unsigned n_workers;
    int *fds; /* [listener * n_workers + worker] */
    char (*bound)[80];
    size_t n_listens;
    hd_listen_t *listens;  /* n_listens, copied at start (listen needs a restart) */
    hd_iplimit_t *iplimit; /* client addresses for the per-address limits (iplimit.h) */
    uint64_t n_conns;      /* atomic */
    /* Runs on a worker's loop when its last connection has been freed (lifecycle.c). */
    void (*worker_idle_cb)(hd_worker_t *w);
    uv_timer_t shutdown_timer;
    void (*done_cb)(hd_server_t *s);
    void (*quiet_cb)(hd_server_t *s, int all_acked);
    unsigned n_quiet_acks;
    unsigned n_drained, n_stopped;
    unsigned is_started : 1;
    unsigned is_stopping : 1;
};

/* ---- worker.c ---- */

/*
 * Creates worker `id` of s: its loop, mailbox and wake-up, a reference to s's configuration and
 * TLS context. *out is set even on failure (pass it to hd_worker_free). Returns 0, or a libuv
 * error with err set.
 */
int hd_worker_new(hd_worker_t **out, hd_server_t *s, unsigned id, char *err, size_t errlen);
/* The calling thread runs w's loop itself (an embedded node): its posts to w need no wake-up,
 * as on a worker thread (hd_worker_wake). */
void hd_worker_adopt_thread(hd_worker_t *w);
/* The worker thread's main: runs the loop until its last handle closed (uv_thread_cb). */
void hd_worker_main(void *arg);
/* Closes the worker's own handles (the exit phase: the loop then ends). */
void hd_worker_close(hd_worker_t *w);
/* Joins the thread and closes the ended loop. */
void hd_worker_join(hd_worker_t *w);
/* Frees w; a loop that never ended has its remaining handles closed and is run dry first, so
 * whoever owns state behind a handle closes it before (hd_conn_worker_close, ...). */
void hd_worker_free(hd_worker_t *w);

/* ---- listener.c ---- */

/*
 * Binds every listener of s->conf once per worker (SO_REUSEPORT, after a plain probe bind that
 * fails if another process listens there) into s->fds and names the bound addresses. Returns 0,
 * or a negative errno with err naming the listener.
 */
int hd_listeners_bind(hd_server_t *s, char *err, size_t errlen);
/* Makes w's sockets of s->fds listening handles on w's loop. Returns 0, or a libuv error. */
int hd_listeners_open(hd_worker_t *w, char *err, size_t errlen);
/* Stops accepting on w (idempotent); the handles' memory goes with their last close. */
void hd_listeners_close(hd_worker_t *w);

#endif
