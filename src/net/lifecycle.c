/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.c: the node as a whole: creating it (TLS context, listeners, workers), starting the
 * threads, reload, the phased graceful shutdown with its quiet barrier, and freeing. The main
 * thread's mailbox lives here: workers report their shutdown progress through it.
 *
 * Shutdown runs in three phases so that no message is ever posted to a loop that is gone:
 *   1. drain: workers close their listeners and ask every connection to finish; each reports
 *      "drained" when it has none left;
 *   2. stop:  when all drained (or shutdown_timeout passed) the main thread tells every worker
 *      to close what is left; each reports "stopped" once its connections are freed. With no
 *      connection left, nothing can post to another loop any more (between 2 and 3, the quiet
 *      barrier of hd_server_on_quiet lets the broker flush its last replies);
 *   3. exit:  the main thread tells every worker to close its remaining handles; the loops end
 *      and the threads are joined.
 */
#include "herald/log.h"
#include "herald/server.h"
#include "conn_layer.h"
#include "internal.h"
#include "iplimit.h"

#include <string.h>
#include <unistd.h>

/* ---- the main thread's mailbox ---- */

/* Main-loop messages carry the sending worker. */
typedef struct main_msg_s {
    hd_msg_t base;
    hd_worker_t *from;
    void (*fn)(hd_server_t *s, hd_worker_t *from);
} main_msg_t;

static void run_main_msg(hd_worker_t *unused, hd_msg_t *m)
{
    (void)unused;
    main_msg_t *mm = (main_msg_t *)m;
    mm->fn(mm->from->server, mm->from);
    free(mm);
}

static void on_main_wakeup(uv_async_t *a)
{
    hd_server_t *s = a->data;
    hd_mpsc_drain(&s->main_mailbox, NULL);
}

/* Runs fn(s, w) on the main loop (from w's loop). */
static void tell_main(hd_worker_t *w, void (*fn)(hd_server_t *s, hd_worker_t *from))
{
    main_msg_t *m = hd_calloc(1, sizeof(*m));
    m->base.cb = run_main_msg;
    m->from = w;
    m->fn = fn;
    hd_mpsc_push(&w->server->main_mailbox, &m->base);
    uv_async_send(&w->server->main_wakeup);
}

/* ---- creating and starting ---- */

static void worker_idle(hd_worker_t *w);

/* The parts of a node every kind shares: workers' slots, the main mailbox, the timer. */
static hd_server_t *server_alloc(hd_conf_t *conf, unsigned n_workers, hd_accept_cb accept_cb,
                                 uv_loop_t *main_loop)
{
    hd_server_t *s = hd_calloc(1, sizeof(*s));
    s->conf = hd_conf_ref(conf);
    s->main_loop = main_loop;
    s->accept_cb = accept_cb;
    s->worker_idle_cb = worker_idle;
    s->n_workers = n_workers;
    s->workers = hd_calloc(n_workers, sizeof(*s->workers));
    s->iplimit = hd_iplimit_new();
    hd_mpsc_init(&s->main_mailbox);
    uv_async_init(main_loop, &s->main_wakeup, on_main_wakeup);
    s->main_wakeup.data = s;
    uv_timer_init(main_loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    return s;
}

static int worker_create(hd_server_t *s, unsigned id, char *err, size_t errlen)
{
    int rc = hd_worker_new(&s->workers[id], s, id, err, errlen);
    if (rc < 0)
        return rc;
    hd_worker_t *w = s->workers[id];
    hd_conn_worker_init(w);
    w->iplimit = s->iplimit;
    w->tokens = (double)s->conf->accept_burst / s->n_workers;
    return hd_listeners_open(w, err, errlen);
}

int hd_server_new(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb, uv_loop_t *main_loop,
                  char *err, size_t errlen)
{
    hd_server_t *s = server_alloc(conf, conf->workers, accept_cb, main_loop);
    int rc;
    *out = NULL;
    s->n_listens = conf->n_listens;
    s->fds = hd_malloc(conf->n_listens * s->n_workers * sizeof(int));
    for (size_t i = 0; i < conf->n_listens * s->n_workers; i++)
        s->fds[i] = -1;
    s->bound = hd_calloc(conf->n_listens, sizeof(*s->bound));
    s->listens = hd_calloc(conf->n_listens ? conf->n_listens : 1, sizeof(*s->listens));
    memcpy(s->listens, conf->listens, conf->n_listens * sizeof(*s->listens));
    for (size_t i = 0; i < conf->n_listens; i++) {
        if (conf->listens[i].is_tls && !s->tls_ctx) {
            if ((rc = hd_tls_ctx_new(&s->tls_ctx, conf, err, errlen)) < 0)
                goto fail;
        }
    }
    if ((rc = hd_listeners_bind(s, err, errlen)) < 0)
        goto fail;
    for (unsigned k = 0; k < s->n_workers; k++) {
        if ((rc = worker_create(s, k, err, errlen)) < 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    hd_server_free(s);
    return rc;
}

int hd_server_new_embedded(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb,
                           uv_loop_t *main_loop)
{
    char err[256];
    hd_server_t *s = server_alloc(conf, 1, accept_cb, main_loop);
    int rc = worker_create(s, 0, err, sizeof(err));
    if (rc < 0) {
        hd_server_free(s);
        return rc;
    }
    hd_worker_adopt_thread(s->workers[0]); /* the caller pumps its loop */
    *out = s;
    return 0;
}

int hd_server_start(hd_server_t *s)
{
    for (unsigned k = 0; k < s->n_workers; k++) {
        int rc = uv_thread_create(&s->workers[k]->thread, hd_worker_main, s->workers[k]);
        if (rc < 0)
            return rc;
    }
    s->is_started = 1;
    for (size_t i = 0; i < s->n_listens; i++)
        hd_log_info("listening on %s%s%s%s (%u workers)", s->bound[i],
                    s->listens[i].is_tls ? " tls" : "", s->listens[i].is_admin ? " admin" : "",
                    s->listens[i].is_proxy ? " proxy_protocol" : "", s->n_workers);
    return 0;
}

/* ---- reload ---- */

typedef struct reload_msg_s {
    hd_msg_t base;
    hd_conf_t *conf;
    SSL_CTX *tls_ctx;
} reload_msg_t;

static void on_reload_msg(hd_worker_t *w, hd_msg_t *m)
{
    reload_msg_t *rm = (reload_msg_t *)m;
    hd_conf_unref(w->conf);
    w->conf = rm->conf; /* the message's reference becomes ours */
    if (rm->tls_ctx) {
        if (w->tls_ctx)
            hd_tls_ctx_unref(w->tls_ctx);
        w->tls_ctx = rm->tls_ctx;
    }
    hd_log_debug("configuration applied");
    free(rm);
}

int hd_server_reload(hd_server_t *s, hd_conf_t *conf, char *err, size_t errlen)
{
    SSL_CTX *ctx = NULL;
    if (s->tls_ctx) {
        /* Always reload: the files may have been replaced under the same names. */
        int rc = hd_tls_ctx_new(&ctx, conf, err, errlen);
        if (rc < 0)
            return rc;
        hd_tls_ctx_unref(s->tls_ctx);
        s->tls_ctx = ctx;
    }
    hd_conf_unref(s->conf);
    s->conf = hd_conf_ref(conf);
    for (unsigned k = 0; k < s->n_workers; k++) {
        reload_msg_t *m = hd_calloc(1, sizeof(*m));
        m->base.cb = on_reload_msg;
        m->conf = hd_conf_ref(conf);
        m->tls_ctx = ctx ? hd_tls_ctx_ref(ctx) : NULL;
        hd_worker_post(s->workers[k], &m->base);
    }
    return 0;
}

/* ---- shutdown ---- */

static void main_worker_drained(hd_server_t *s, hd_worker_t *from);
static void exit_all(hd_server_t *s);
static void main_worker_stopped(hd_server_t *s, hd_worker_t *from);

/* On a worker's loop: reports the phase it finished once its last connection is gone. */
static void worker_idle(hd_worker_t *w)
{
    if (w->stats.conns != 0)
        return;
    if (w->is_stopped) {
        tell_main(w, main_worker_stopped);
    } else if (w->is_draining) {
        w->is_draining = 0; /* report once */
        tell_main(w, main_worker_drained);
    }
}

static void on_drain_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    hd_listeners_close(w);
    w->is_draining = 1;
    hd_conn_shutdown_all(w);
    worker_idle(w);
}

static void on_stop_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    hd_listeners_close(w);
    w->is_stopped = 1;
    hd_conn_close_all(w);
    worker_idle(w);
}

static void on_exit_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    hd_conn_worker_close(w);
    hd_worker_close(w);
}

static void post_all(hd_server_t *s, hd_msg_cb cb)
{
    for (unsigned k = 0; k < s->n_workers; k++) {
        hd_msg_t *m = hd_calloc(1, sizeof(*m));
        m->cb = cb;
        hd_worker_post(s->workers[k], m);
    }
}

static void stop_all(hd_server_t *s)
{
    if (s->is_stopping)
        return;
    s->is_stopping = 1;
    uv_timer_stop(&s->shutdown_timer);
    post_all(s, on_stop_msg);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    hd_server_t *s = t->data;
    hd_log_warn("shutdown_timeout reached: closing the remaining connections");
    stop_all(s);
}

static void main_worker_drained(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_drained == s->n_workers)
        stop_all(s);
}

static void main_worker_stopped(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_stopped < s->n_workers)
        return;
    if (s->quiet_cb) {
        s->quiet_cb(s, 0); /* continues in main_quiet_ack */
        return;
    }
    exit_all(s);
}

static void main_quiet_ack(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_quiet_acks < s->n_workers)
        return;
    s->quiet_cb(s, 1);
    exit_all(s);
}

void hd_server_quiet_ack(hd_worker_t *w)
{
    tell_main(w, main_quiet_ack);
}

static void exit_all(hd_server_t *s)
{
    post_all(s, on_exit_msg);
    for (unsigned k = 0; k < s->n_workers; k++)
        hd_worker_join(s->workers[k]);
    if (s->done_cb)
        s->done_cb(s);
}

uv_loop_t *hd_server_main_loop(hd_server_t *s)
{
    return s->main_loop;
}

void hd_server_on_quiet(hd_server_t *s, void (*quiet_cb)(hd_server_t *s, int all_acked))
{
    s->quiet_cb = quiet_cb;
}

void hd_server_shutdown(hd_server_t *s, void (*done_cb)(hd_server_t *s))
{
    if (s->done_cb)
        return;
    s->done_cb = done_cb;
    hd_log_info("shutting down: draining %llu connection(s), at most %llu ms",
                (unsigned long long)hd_server_conn_count(s),
                (unsigned long long)s->conf->shutdown_timeout_ms);
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, s->conf->shutdown_timeout_ms, 0);
    post_all(s, on_drain_msg);
}

/* ---- freeing ---- */

static void free_worker(hd_worker_t *w)
{
    if (!w)
        return;
    /* Both idempotent: after a normal exit they closed already; an embedded node or a failed
     * hd_server_new closes them here, and hd_worker_free runs the loop dry. */
    hd_conn_worker_close(w);
    hd_listeners_close(w);
    hd_worker_free(w);
}

static void on_main_handle_closed(uv_handle_t *h)
{
    hd_server_t *s = h->data;
    if (h == (uv_handle_t *)&s->main_wakeup)
        uv_close((uv_handle_t *)&s->shutdown_timer, on_main_handle_closed);
    else
        free(s);
}

void hd_server_free(hd_server_t *s)
{
    for (unsigned k = 0; k < s->n_workers; k++)
        free_worker(s->workers[k]);
    for (size_t i = 0; s->fds && i < s->n_listens * s->n_workers; i++)
        if (s->fds[i] >= 0)
            close(s->fds[i]);
    free(s->fds);
    free(s->bound);
    free(s->listens);
    free(s->workers);
    hd_iplimit_free(s->iplimit);
    if (s->tls_ctx)
        hd_tls_ctx_unref(s->tls_ctx);
    hd_conf_unref(s->conf);
    /* s itself is freed when its main-loop handles have closed (next loop pass). */
    uv_close((uv_handle_t *)&s->main_wakeup, on_main_handle_closed);
}

unsigned hd_server_worker_count(const hd_server_t *s)
{
    return s->n_workers;
}

hd_worker_t *hd_server_worker(hd_server_t *s, unsigned i)
{
    return s->workers[i];
}

size_t hd_server_client_entries(const hd_server_t *s)
{
    return hd_iplimit_entries(s->iplimit);
}

uint64_t hd_server_conn_count(const hd_server_t *s)
{
    return __atomic_load_n(&s->n_conns, __ATOMIC_RELAXED);
}
