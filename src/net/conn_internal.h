/* SPDX-License-Identifier: MIT */
/*
 * conn_internal.h: what the connection layer's own files share, and no one else sees: the
 * layer's state on a worker (hd_conn_worker_t, behind w->conns_), a socket's (sock_t), and the
 * few calls between the files. Calls run one way:
 *
 *   conn_worker.c --> conn.c --> conn_timeout.c
 *        |              |
 *        +--------------+-------> conn_stream.c          (all of them: conn_pool.h, inline)
 *
 *   conn_worker.c   creating connections (the accept hand-off), the layer on a worker: its
 *                   handles, their closing, walks over its connections, the census
 *   conn.c          a connection's I/O: reading, TLS, the output queue and its one write per
 *                   loop pass (the flush hooks; many sockets' in one io_submit, herald/wbatch.h),
 *                   finishing, lingering, closing, freeing
 *   conn_timeout.c  the deadline heap and its timer; a connection whose handler has no
 *                   on_timeout is closed through cw->on_expired (hd_conn_close, set by
 *                   conn_worker.c), so this file never calls conn.c
 *   conn_stream.c   streams: connections carried inside another (HTTP/2)
 *   conn_pool.h     the write request and output array pools
 *
 * conn_proxy.c, beside them, reaches conn.c through conn_priv.h only.
 */
#ifndef HERALD_NET_CONN_INTERNAL_H
#define HERALD_NET_CONN_INTERNAL_H

#include "herald/conn.h"
#include "herald/wbatch.h"
#include "herald/worker.h"
#include "conn_pool.h"

#define READ_BUF_BYTES    (64 * 1024)
#define TLS_SCRATCH_BYTES (16 * 1024)
#define BATCH_IOVS        1024 /* buffers of one batch of writes (conn.c flush_batch) */

/* The layer's state on one worker (w->conns_), touched by that worker's thread only. */
struct hd_conn_worker_s {
    hd_worker_t *w;
    hd_list_t conns;            /* every connection not closing, by c->link */
    hd_list_t flush_list;       /* sockets with output queued this pass, by flush_link */
    hd_list_t dead_streams;     /* closed streams, freed at the end of the flush pass (c->link) */
    uv_prepare_t flush_prepare; /* flushes output queued by timers before the loop blocks */
    uv_check_t flush_check;     /* flushes output queued by I/O callbacks */
    uv_timer_t timer;           /* fires the earliest deadline of heap */
    hd_heap_t heap;             /* the connections' deadline nodes, earliest first */
    uint64_t timer_armed_at;
    hd_conn_pool_t pool; /* spare write requests and output arrays */
    uint64_t next_id;
    /* Closes a connection whose deadline passed and whose handler has no on_timeout. */
    void (*on_expired)(hd_conn_t *c);
    uint8_t open_handles; /* freed when the last of the three handles has closed */
    unsigned is_closing : 1;
    /* A flush pass's writes to plain sockets in one system call (conn.c flush_batch); NULL
     * where the kernel has no AIO for herald: one writev per connection. The batch being made:
     * its connections, where each one's buffers start in batch_iov, and their bytes. */
    hd_wbatch_t *wbatch;
    hd_conn_t *batch[HD_WBATCH_MAX];
    size_t batch_at[HD_WBATCH_MAX], batch_total[HD_WBATCH_MAX];
    uv_buf_t batch_iov[BATCH_IOVS];
    /* One read buffer per worker: a connection holds no read buffer while idle. */
    char read_buf[READ_BUF_BYTES];
    char tls_scratch[TLS_SCRATCH_BYTES];
};

static inline hd_conn_worker_t *cw_of(const hd_conn_t *c)
{
    return c->worker->conns_;
}

/*
 * A socket: the connection and what only a socket has, in one allocation (a stream is an
 * hd_conn_t alone: conn.h).
 */
typedef struct sock_s {
    hd_conn_t c; /* first: an hd_conn_t * of a socket is a sock_t * */
    uv_tcp_t tcp;
    hd_list_t flush_link; /* the worker's flush list while it has output to write */
    hd_tls_t *tls;        /* NULL on plain listeners */
    hd_out_t *wq;         /* in the uv_write in flight */
    uint32_t wq_len, wq_cap;
} sock_t;

static inline sock_t *sock_of(hd_conn_t *c)
{
    HD_ASSERT(!c->is_stream);
    return (sock_t *)c;
}

static inline hd_tls_t *tls_of(const hd_conn_t *c)
{
    return c->is_stream ? NULL : ((const sock_t *)c)->tls;
}

static inline hd_conn_t *conn_of_deadline(hd_heap_node_t *n)
{
    return hd_container_of(n, hd_conn_t, deadline);
}

/* ---- conn.c ---- */

/* The flush hooks hd_conn_worker_init installs: each runs the worker's own mail and writes
 * what the loop pass queued (cw in the handle's data). */
void hd_conn_on_prepare_(uv_prepare_t *p);
void hd_conn_on_check_(uv_check_t *c);

/* ---- conn_stream.c ---- */

/* Frees a closed stream at the end of the flush pass in which it closed (cw->dead_streams):
 * its queue goes back to the pool, its memory with it unless its carrier still holds it. */
void hd_conn_free_stream_(hd_conn_t *c);

#endif
