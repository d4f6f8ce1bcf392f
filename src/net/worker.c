/* SPDX-License-Identifier: MIT */
/*
 * worker.c: a worker thread and its loop: creation, the thread's main, the mailbox other threads
 * post to, the cached Date header and the connection counts. It calls nothing above it: the
 * connection layer (conn*.c) and the server (listener.c, lifecycle.c) call in, and the one thing
 * the worker reports up (no connection left) goes through the server's worker_idle_cb.
 */
#include "herald/worker.h"
#include "herald/log.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* The worker this thread runs (set by hd_worker_main): posting to it needs no wake-up. */
static __thread hd_worker_t *self;

hd_worker_t *hd_worker_self(void)
{
    return self;
}

void hd_worker_adopt_thread(hd_worker_t *w)
{
    self = w;
}

void hd_worker_push(hd_worker_t *w, hd_msg_t *msg)
{
    hd_mpsc_push(&w->mailbox, msg);
}

void hd_worker_wake(hd_worker_t *w)
{
    if (w == self)
        w->has_local_mail = 1; /* hd_worker_run_local drains it in this pass */
    else
        hd_wake_send(&w->wakeup);
}

void hd_worker_post(hd_worker_t *w, hd_msg_t *msg)
{
    hd_worker_push(w, msg);
    hd_worker_wake(w);
}

void hd_worker_run_local(hd_worker_t *w)
{
    /* A pop may stop early behind another thread's push still in progress: that thread's
     * wake-up follows, and the next drain gets both in order. */
    while (w->has_local_mail) {
        w->has_local_mail = 0;
        hd_mpsc_drain(&w->mailbox, w);
    }
}

void hd_worker_wake_later(hd_wake_t *wk)
{
    hd_worker_t *w = self;
    if (!w) {
        hd_wake_send(wk);
        return;
    }
    for (unsigned i = 0; i < w->n_wakes_owed; i++) {
        if (w->wakes_owed[i] == wk)
            return;
    }
    if (w->n_wakes_owed < HD_ARRAY_SIZE(w->wakes_owed))
        w->wakes_owed[w->n_wakes_owed++] = wk;
    else
        hd_wake_send(wk);
}

void hd_worker_send_wakes(hd_worker_t *w)
{
    for (unsigned i = 0; i < w->n_wakes_owed; i++)
        hd_wake_send(w->wakes_owed[i]);
    w->n_wakes_owed = 0;
}

static void on_wakeup(void *data)
{
    hd_worker_t *w = data;
    hd_mpsc_drain(&w->mailbox, w);
}

const char *hd_worker_date(hd_worker_t *w)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = now;
    }
    return w->date;
}

void hd_worker_conn_opened(hd_worker_t *w)
{
    __atomic_add_fetch(&w->server->n_conns, 1, __ATOMIC_RELAXED);
    HD_STAT_INC(w, conns);
}

void hd_worker_conn_freed(hd_worker_t *w)
{
    __atomic_sub_fetch(&w->server->n_conns, 1, __ATOMIC_RELAXED);
    HD_STAT_DEC(w, conns);
    if (w->stats.conns == 0 && w->server->worker_idle_cb)
        w->server->worker_idle_cb(w);
}

int hd_worker_new(hd_worker_t **out, hd_server_t *s, unsigned id, char *err, size_t errlen)
{
    hd_worker_t *w = hd_calloc(1, sizeof(*w));
    *out = w; /* even on failure: hd_worker_free takes a half-built worker */
    w->id = id;
    snprintf(w->name, sizeof(w->name), "w%u", id);
    w->server = s;
    w->conf = hd_conf_ref(s->conf);
    w->tls_ctx = s->tls_ctx ? hd_tls_ctx_ref(s->tls_ctx) : NULL;
    hd_mpsc_init(&w->mailbox);
    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create event loop: %s", uv_strerror(rc));
        return rc;
    }
    w->loop.data = w; /* NULL again once the loop has ended (hd_worker_free) */
    rc = hd_wake_init(&w->wakeup, &w->loop, on_wakeup, w);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the wake-up of a worker: %s", uv_strerror(rc));
        return rc;
    }
    return 0;
}

void hd_worker_main(void *arg)
{
    hd_worker_t *w = arg;
    hd_log_thread_name(w->name);
    hd_log_thread_attach(&w->loop);
    self = w;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Messages posted after the exit message (late broker replies) still own memory. */
    hd_mpsc_drain(&w->mailbox, w);
    hd_worker_send_wakes(w);
    self = NULL;
    hd_log_thread_detach();
}

void hd_worker_close(hd_worker_t *w)
{
    hd_wake_close(&w->wakeup);
}

void hd_worker_join(hd_worker_t *w)
{
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
    w->loop.data = NULL;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void hd_worker_free(hd_worker_t *w)
{
    if (!w)
        return;
    if (self == w)
        self = NULL;
    if (w->loop.data) {
        /* The loop never ran to its end (an embedded node, or a failure in hd_server_new):
         * close what its owners left open and run it dry. */
        uv_walk(&w->loop, close_any, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    hd_auth_cache_free(w->auth_cache);
    hd_wake_dispose(&w->wakeup); /* the loop is over: nobody wakes it any more */
    hd_conf_unref(w->conf);
    if (w->tls_ctx)
        hd_tls_ctx_unref(w->tls_ctx);
    free(w);
}
