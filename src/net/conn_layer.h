/* SPDX-License-Identifier: MIT */
/*
 * conn_layer.h: what the server (listener.c, lifecycle.c) asks of the connection layer, and
 * nothing more. The layer keeps its per-worker state (every connection, the flush list and its
 * loop hooks, the timer heap, the write request pool, the read and TLS scratch buffers) behind
 * w->conns_ (conn_internal.h), allocated and freed by conn_worker.c; the worker never looks
 * inside.
 *
 *   lifecycle:  hd_conn_worker_init ... hd_conn_shutdown_all / hd_conn_close_all ...
 *               hd_conn_worker_close
 *   listener:   hd_conn_accept / hd_conn_open, then the node's limits, then (proxy_protocol
 *               listeners) hd_conn_expect_proxy, then the per-address limits, then the protocol
 *
 * Private to src/net (and unit tests, which include it for hd_conn_census).
 */
#ifndef HERALD_NET_CONN_LAYER_H
#define HERALD_NET_CONN_LAYER_H

#include "herald/conn.h"
#include "herald/worker.h"

/*
 * Sets up the layer on w's loop (before the loop runs): the state behind w->conns_, the flush
 * hooks (a uv_check after I/O callbacks, a uv_prepare after timers) and the timer of the
 * deadline heap. Cannot fail (allocation failures abort).
 */
void hd_conn_worker_init(hd_worker_t *w);
/*
 * Closes the layer's handles on w's loop once no connection is left (idempotent; nothing if
 * never set up); the state is freed in the last close callback, so run the loop after.
 */
void hd_conn_worker_close(hd_worker_t *w);

/*
 * The accept hand-off: a new connection on w from `server` (uv_accept) or from a connected
 * socket fd (uv_tcp_open), counted and listed on w, under TLS with a new session of tls_ctx
 * when that is not NULL. Returns the connection, or NULL when the socket could not be taken
 * (the half-made connection is closed and freed on the next loop pass; a failure to take fd
 * leaves fd to the caller). No handler is installed: the caller applies the node's limits,
 * then installs one.
 */
hd_conn_t *hd_conn_accept(hd_worker_t *w, uv_stream_t *server, SSL_CTX *tls_ctx);
hd_conn_t *hd_conn_open(hd_worker_t *w, int fd);

/*
 * On a listener marked proxy_protocol: c reads a PROXY protocol header (v1 or v2,
 * proxy_proto.h) before anything else, within timeout_ms. Once it is complete, c's client
 * address is the one it names (hd_conn_client_addr) and ready_cb(c) runs with no handler
 * installed: it installs one (or refuses c), and the bytes that followed the header go to it
 * (through TLS first when c has TLS). A malformed header (proxy_malformed) or a timeout
 * (proxy_timeouts) closes c without an answer: nothing that is not a PROXY header may be
 * answered on such a listener. Memory: at most HD_PROXY_MAX bytes, only while a header arrives
 * in pieces.
 */
typedef void (*hd_conn_ready_cb)(hd_conn_t *c);
void hd_conn_expect_proxy(hd_conn_t *c, uint64_t timeout_ms, hd_conn_ready_cb ready_cb);

/* Graceful shutdown: every connection of w gets ops->on_shutdown (or is closed if it has none). */
void hd_conn_shutdown_all(hd_worker_t *w);
/* Closes every connection of w now. */
void hd_conn_close_all(hd_worker_t *w);

/* What the layer holds on a worker (tests and fuzzers check it is empty after each case). */
typedef struct hd_conn_census_s {
    size_t conns;        /* listed on the worker (open, not closing) */
    size_t timers;       /* deadlines in the heap */
    size_t flushing;     /* on the flush list */
    size_t pooled_wreqs; /* spare write requests */
} hd_conn_census_t;
/*
 * Counts the layer's state on w and checks its invariants: heap order, each connection's
 * deadline node pointing back at its heap slot, no closing connection in the heap or on a list.
 * Returns 0, or UV_EINVAL with *why naming the broken invariant.
 */
int hd_conn_census(hd_worker_t *w, hd_conn_census_t *out, const char **why);

#endif
