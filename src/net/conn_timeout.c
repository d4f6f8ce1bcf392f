/* SPDX-License-Identifier: MIT */
/*
 * conn_timeout.c: the connections' deadlines (hd_conn_set_timeout): one heap and one timer per
 * worker, in the layer's state (conn_internal.h). A deadline that passes calls the handler's
 * on_timeout, or closes the connection through cw->on_expired: this file calls no other file of
 * the layer.
 */
#include "herald/conn.h"
#include "herald/worker.h"
#include "conn_internal.h"

/*
 * Timeouts: each worker keeps its connections' deadlines in one binary min-heap (core/heap.c)
 * and arms one uv timer for the earliest. A connection holds its heap node (deadline.key: when,
 * in loop milliseconds; deadline.idx: 0 when it is in no heap) instead of a timer handle.
 *
 * The heap is kept lazily: a keep-alive request moves its connection's deadline four times
 * (header, body, none, keep-alive), and re-keying a node among every connection of the
 * worker walks the heap (4% of the CPU of the notify scenario, bench/benchmarks-notes.md).
 * So a deadline that moves later leaves its node where it is and notes how much later it is
 * (deadline.aux: key + aux is the deadline), and a deadline removed leaves its node
 * marked (deadline_off); when such a node comes first, on_timer moves it to the real deadline
 * or drops it. Only a deadline moved earlier, or a first one, touches the heap. A connection
 * busy with requests then re-keys its node about once per header_timeout instead of four
 * times a request.
 */
static void on_timer(uv_timer_t *t);

/* Arms the worker's timer for the earliest deadline (or stops it). */
static void rearm(hd_conn_worker_t *cw)
{
    hd_heap_node_t *first = hd_heap_min(&cw->heap);
    if (!first) {
        uv_timer_stop(&cw->timer);
        return;
    }
    uint64_t now = uv_now(&cw->w->loop), at = first->key;
    if (cw->timer_armed_at == at && uv_is_active((uv_handle_t *)&cw->timer))
        return;
    cw->timer_armed_at = at;
    uv_timer_start(&cw->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    hd_conn_worker_t *cw = t->data;
    uint64_t now = uv_now(&cw->w->loop);
    cw->timer_armed_at = 0;
    hd_heap_node_t *first;
    while ((first = hd_heap_min(&cw->heap)) != NULL && first->key <= now) {
        hd_conn_t *c = conn_of_deadline(first);
        if (c->deadline.aux && !c->deadline_off) {
            first->key += c->deadline.aux; /* moved later meanwhile: its place in the heap */
            c->deadline.aux = 0;
            hd_heap_update(&cw->heap, first);
            continue;
        }
        hd_heap_remove(&cw->heap, first);
        c->deadline.aux = 0;
        if (c->is_closing || c->deadline_off) {
            c->deadline_off = 0;
            continue;
        }
        if (c->ops->on_timeout)
            c->ops->on_timeout(c); /* may set a new deadline */
        else
            cw->on_expired(c);
    }
    rearm(cw);
}

void hd_conn_set_timeout(hd_conn_t *c, uint64_t timeout_ms)
{
    hd_conn_worker_t *cw = cw_of(c);
    if (c->is_closing)
        return;
    if (timeout_ms == 0) {
        c->deadline_off = hd_heap_contains(&c->deadline); /* dropped when it comes first */
        return;
    }
    uint64_t at = uv_now(&cw->w->loop) + timeout_ms;
    if (hd_heap_contains(&c->deadline) && at >= c->deadline.key &&
        at - c->deadline.key <= UINT32_MAX) {
        c->deadline.aux = (uint32_t)(at - c->deadline.key); /* later: the node stays */
        c->deadline_off = 0;
        return;
    }
    c->deadline.key = at;
    c->deadline.aux = 0;
    c->deadline_off = 0;
    if (hd_heap_contains(&c->deadline))
        hd_heap_update(&cw->heap, &c->deadline);
    else
        hd_heap_push(&cw->heap, &c->deadline);
    if (hd_heap_min(&cw->heap) == &c->deadline || !uv_is_active((uv_handle_t *)&cw->timer))
        rearm(cw);
}
