/* SPDX-License-Identifier: MIT */
/*
 * conn_stream.c: streams, connections carried inside another (an HTTP/2 stream inside its
 * socket, conn.h): made with their carrier's state in one allocation, their queue taken by the
 * carrier (hd_conn_stream_copy) instead of written, freed at the end of the flush pass in which
 * they closed (hd_conn_free_stream_, conn.c). Calls no other file of the layer.
 */
#include "herald/conn.h"
#include "herald/worker.h"
#include "conn_internal.h"

#include <string.h>

/* Where a stream's carrier state starts in their allocation (malloc's alignment). */
#define CARRIER_OFF ((sizeof(hd_conn_t) + 15) & ~(size_t)15)

void hd_conn_free_stream_(hd_conn_t *c)
{
    hd_out_release(c->q, c->q_len);
    hd_out_put(&cw_of(c)->pool, c->q, c->q_cap);
    c->q = NULL;
    hd_identity_unref(c->identity);
    c->identity = NULL;
    c->is_stream_freed = 1;
    if (!c->is_carrier_held)
        free(c);
}

void hd_conn_carrier_release(hd_carrier_t *carrier)
{
    hd_conn_t *c = (hd_conn_t *)(void *)((char *)carrier - CARRIER_OFF);
    HD_ASSERT(c->is_carrier_held);
    c->is_carrier_held = 0;
    if (c->is_stream_freed)
        free(c);
}

hd_conn_t *hd_conn_stream_new(hd_conn_t *parent, const hd_carrier_ops_t *ops, size_t carrier_size)
{
    hd_worker_t *w = parent->worker;
    hd_conn_worker_t *cw = w->conns_;
    HD_ASSERT(carrier_size >= sizeof(hd_carrier_t));
    hd_conn_t *c = hd_calloc(1, CARRIER_OFF + carrier_size);
    hd_carrier_t *carrier = (hd_carrier_t *)(void *)((char *)c + CARRIER_OFF);
    carrier->ops = ops;
    c->is_carrier_held = 1;
    c->worker = w;
    c->id = ((uint64_t)w->id << 48) | ++cw->next_id;
    hd_list_init(&c->link);
    c->client = parent->client;
    c->is_admin_listener = parent->is_admin_listener;
    c->is_tls = parent->is_tls;
    c->is_unix_peer = parent->is_unix_peer;
    c->is_stream = 1;
    c->carrier = carrier;
    /* Just before its parent: a walk of the list (hd_conn_foreach, shutdown) meets a parent's
     * streams before it, so closing the parent never removes the walk's next entry. */
    hd_list_insert_tail(hd_list_linked(&parent->link) ? &parent->link : &cw->conns, &c->link);
    return c;
}

void hd_conn_stream_copy(hd_conn_t *s, void *dst, size_t len)
{
    HD_ASSERT(len <= s->queued_bytes);
    char *d = dst;
    uint32_t i = 0;
    s->queued_bytes -= len;
    while (len > 0) {
        hd_out_t *o = &s->q[i];
        size_t n = len < o->len ? len : o->len;
        memcpy(d, o->buf->data + o->off, n);
        d += n;
        len -= n;
        if (n == o->len) {
            hd_buf_unref(o->buf);
            i++;
        } else {
            o->off += (uint32_t)n;
            o->len -= (uint32_t)n;
        }
    }
    memmove(s->q, s->q + i, (s->q_len - i) * sizeof(*s->q));
    s->q_len -= i;
    if (s->q_len == 0) {
        /* An idle stream holds no array, as an idle socket: back to the worker's pool. */
        hd_out_put(&cw_of(s)->pool, s->q, s->q_cap);
        s->q = NULL;
        s->q_cap = 0;
    }
}

void hd_conn_stream_drained(hd_conn_t *s)
{
    if (s->is_closing || s->is_finishing || s->q_len > 0)
        return;
    if (s->ops && s->ops->on_drain)
        s->ops->on_drain(s);
}
