/* SPDX-License-Identifier: MIT */
/*
 * conn_pool.h: the connection layer's per-worker pools of write requests and of output arrays
 * (hd_conn_pool_t, one in each worker's hd_conn_worker_t), touched by that worker's thread only.
 * The functions are static inline: taking an output array and giving it back is on the path of
 * every delivery to an idle connection (push_out, written in conn.c), and a call there would
 * cost more than the pool saves.
 *
 * Private to the connection layer's files (conn_internal.h includes it).
 */
#ifndef HERALD_NET_CONN_POOL_H
#define HERALD_NET_CONN_POOL_H

#include "herald/conn.h"

#include <stdlib.h>
#include <string.h>

#define WREQ_POOL_MAX 1024
#define OUT_POOL_CAP  4 /* entries of a pooled output array (its first size) */
#define OUT_POOL_MAX  1024

/*
 * Write requests (about 200 bytes each) come from a per-worker pool: most flushes complete in
 * uv_try_write and need none, so an idle connection holds no request.
 */
typedef struct hd_wreq_s {
    uv_write_t req;
    hd_conn_t *conn;
    struct hd_wreq_s *next;
} hd_wreq_t;

/* The all-zero pool is the valid empty pool. */
typedef struct hd_conn_pool_s {
    hd_wreq_t *wreq_pool; /* spare write requests */
    uint32_t wreq_pooled;
    void *out_pool; /* spare output arrays of OUT_POOL_CAP entries, linked by their first word */
    uint32_t out_pooled;
} hd_conn_pool_t;

static inline hd_wreq_t *hd_wreq_get(hd_conn_pool_t *p)
{
    hd_wreq_t *r = p->wreq_pool;
    if (r) {
        p->wreq_pool = r->next;
        p->wreq_pooled--;
        return r;
    }
    return hd_malloc(sizeof(*r));
}

static inline void hd_wreq_put(hd_conn_pool_t *p, hd_wreq_t *r)
{
    if (p->wreq_pooled >= WREQ_POOL_MAX) {
        free(r);
        return;
    }
    r->next = p->wreq_pool;
    p->wreq_pool = r;
    p->wreq_pooled++;
}

/*
 * Output arrays of the first size come from a per-worker pool too: a connection holds one only
 * while it has output, so without the pool every delivery to an idle subscriber would allocate
 * and free one (about 220 instructions per delivery under callgrind). Returns an array of
 * OUT_POOL_CAP entries, or NULL when the pool is empty (the caller grows its array from NULL).
 */
static inline hd_out_t *hd_out_get(hd_conn_pool_t *p)
{
    void *a = p->out_pool;
    if (a) {
        memcpy(&p->out_pool, a, sizeof(void *));
        p->out_pooled--;
    }
    return a;
}

/* Takes back an emptied output array of cap entries (NULL: nothing); one of another size, or
 * one past OUT_POOL_MAX, is freed. */
static inline void hd_out_put(hd_conn_pool_t *p, hd_out_t *a, uint32_t cap)
{
    if (a == NULL)
        return;
    if (cap != OUT_POOL_CAP || p->out_pooled >= OUT_POOL_MAX) {
        free(a);
        return;
    }
    memcpy(a, &p->out_pool, sizeof(void *));
    p->out_pool = a;
    p->out_pooled++;
}

/* Drops the references of the n entries of an output array q (the array is the caller's). */
static inline void hd_out_release(hd_out_t *q, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        hd_buf_unref(q[i].buf);
}

/* Frees everything pooled; p is then the empty pool. */
static inline void hd_conn_pool_dispose(hd_conn_pool_t *p)
{
    while (p->wreq_pool) {
        hd_wreq_t *r = p->wreq_pool;
        p->wreq_pool = r->next;
        free(r);
    }
    p->wreq_pooled = 0;
    for (hd_out_t *a; (a = hd_out_get(p)) != NULL;)
        free(a);
}

#endif
