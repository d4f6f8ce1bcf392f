/* SPDX-License-Identifier: MIT */
/*
 * conn_worker.c: the connection layer on a worker (conn_layer.h): creating connections (the
 * accept hand-off), the layer's state and handles (the flush hooks, whose callbacks are conn.c's,
 * and the deadline timer), closing them once no connection is left, and the walks over a
 * worker's connections (shutdown, close, foreach, the census). Calls conn.c (hd_conn_close,
 * also handed to conn_timeout.c as cw->on_expired) and conn_stream.c; nothing calls back in.
 */
#include "herald/conn.h"
#include "herald/worker.h"
#include "conn_internal.h"
#include "conn_layer.h"

#include <errno.h>
#include <string.h>

/* ---- creation: the accept hand-off ---- */

static hd_conn_t *conn_new(hd_worker_t *w)
{
    hd_conn_worker_t *cw = w->conns_;
    sock_t *k = hd_calloc(1, sizeof(*k));
    hd_conn_t *c = &k->c;
    c->worker = w;
    c->id = ((uint64_t)w->id << 48) | ++cw->next_id;
    k->tcp.data = c;
    hd_list_init(&sock_of(c)->flush_link);
    hd_list_init(&c->link);
    uv_tcp_init(&w->loop, &k->tcp);
    hd_worker_conn_opened(w);
    return c;
}

/* The socket is ours: note its peer, list the connection and set up TLS. nodelay: set
 * TCP_NODELAY (an accepted socket has it from its listener, listener.c bind_one). */
static hd_conn_t *conn_ready(hd_conn_t *c, SSL_CTX *tls_ctx, int nodelay)
{
    sock_t *k = sock_of(c);
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (uv_tcp_getpeername(&k->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        hd_ip_from_sockaddr(&c->client, (struct sockaddr *)&ss);
        c->is_unix_peer = ss.ss_family == AF_UNIX;
    }
    if (nodelay)
        uv_tcp_nodelay(&k->tcp, 1);
    hd_list_insert_tail(&cw_of(c)->conns, &c->link);
    if (tls_ctx) {
        k->tls = hd_calloc(1, sizeof(*k->tls));
        if (hd_tls_init(k->tls, tls_ctx) != 0) {
            free(k->tls);
            k->tls = NULL;
            hd_conn_close(c);
            return NULL;
        }
        c->is_tls = 1;
    }
    return c;
}

hd_conn_t *hd_conn_accept(hd_worker_t *w, uv_stream_t *server, SSL_CTX *tls_ctx)
{
    hd_conn_t *c = conn_new(w);
    if (uv_accept(server, (uv_stream_t *)&sock_of(c)->tcp) != 0) {
        hd_conn_close(c);
        return NULL;
    }
    return conn_ready(c, tls_ctx, 0);
}

hd_conn_t *hd_conn_open(hd_worker_t *w, int fd)
{
    hd_conn_t *c = conn_new(w);
    if (uv_tcp_open(&sock_of(c)->tcp, fd) != 0) {
        hd_conn_close(c);
        return NULL;
    }
    return conn_ready(c, NULL, 1);
}

/* ---- the layer on a worker ---- */

void hd_conn_worker_init(hd_worker_t *w)
{
    hd_conn_worker_t *cw = hd_calloc(1, sizeof(*cw));
    cw->w = w;
    hd_list_init(&cw->conns);
    hd_list_init(&cw->flush_list);
    hd_list_init(&cw->dead_streams);
    hd_heap_init(&cw->heap, 64);
    uv_prepare_init(&w->loop, &cw->flush_prepare);
    cw->flush_prepare.data = cw;
    uv_prepare_start(&cw->flush_prepare, hd_conn_on_prepare_);
    uv_check_init(&w->loop, &cw->flush_check);
    cw->flush_check.data = cw;
    uv_check_start(&cw->flush_check, hd_conn_on_check_);
    uv_timer_init(&w->loop, &cw->timer);
    cw->timer.data = cw;
    cw->on_expired = hd_conn_close;
    cw->open_handles = 3;
    cw->wbatch = hd_wbatch_new();
    if (!cw->wbatch)
        hd_log_info("worker %u: no Linux AIO (io_setup: %s): each connection is written on its own",
                    w->id, strerror(errno));
    w->conns_ = cw;
}

static void on_worker_handle_closed(uv_handle_t *h)
{
    hd_conn_worker_t *cw = h->data;
    if (--cw->open_handles > 0)
        return;
    while (!hd_list_empty(&cw->dead_streams)) {
        hd_conn_t *c = hd_container_of(cw->dead_streams.next, hd_conn_t, link);
        hd_list_remove(&c->link);
        hd_conn_free_stream_(c);
    }
    hd_conn_pool_dispose(&cw->pool);
    hd_heap_dispose(&cw->heap);
    hd_wbatch_free(cw->wbatch);
    cw->w->conns_ = NULL;
    free(cw);
}

void hd_conn_worker_close(hd_worker_t *w)
{
    hd_conn_worker_t *cw = w->conns_;
    if (!cw || cw->is_closing)
        return;
    HD_ASSERT(hd_list_empty(&cw->conns));
    cw->is_closing = 1;
    uv_close((uv_handle_t *)&cw->flush_prepare, on_worker_handle_closed);
    uv_close((uv_handle_t *)&cw->flush_check, on_worker_handle_closed);
    uv_close((uv_handle_t *)&cw->timer, on_worker_handle_closed);
}

void hd_conn_shutdown_all(hd_worker_t *w)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns_->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        if (c->ops->on_shutdown)
            c->ops->on_shutdown(c);
        else
            hd_conn_close(c);
    }
}

void hd_conn_foreach(hd_worker_t *w, void (*fn)(hd_conn_t *c, void *arg), void *arg)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns_->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        if (!c->is_closing)
            fn(c, arg);
    }
}

void hd_conn_close_all(hd_worker_t *w)
{
    /* Closing a connection closes the streams it carries, which may be next on the list. */
    while (!hd_list_empty(&w->conns_->conns))
        hd_conn_close(hd_container_of(w->conns_->conns.next, hd_conn_t, link));
}

int hd_conn_census(hd_worker_t *w, hd_conn_census_t *out, const char **why)
{
    hd_conn_worker_t *cw = w->conns_;
    hd_list_t *pos, *tmp;
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (!cw)
        return 0;
    hd_list_foreach_safe(pos, tmp, &cw->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        out->conns++;
        if (c->is_closing)
            *why = "a closing connection is still listed";
    }
    hd_list_foreach_safe(pos, tmp, &cw->flush_list)
    {
        if (hd_container_of(pos, sock_t, flush_link)->c.is_closing)
            *why = "a closing connection is on the flush list";
        out->flushing++;
    }
    for (uint32_t i = 0; i < cw->heap.n; i++)
        out->timers += !conn_of_deadline(cw->heap.a[i])->deadline_off;
    const char *heap_why = hd_heap_check(&cw->heap);
    if (heap_why)
        *why = heap_why;
    for (uint32_t i = 0; i < cw->heap.n; i++)
        if (conn_of_deadline(cw->heap.a[i])->is_closing)
            *why = "a closing connection has a deadline";
    for (hd_wreq_t *r = cw->pool.wreq_pool; r; r = r->next)
        out->pooled_wreqs++;
    if (out->pooled_wreqs != cw->pool.wreq_pooled)
        *why = "the write request pool count is wrong";
    return *why ? UV_EINVAL : 0;
}
