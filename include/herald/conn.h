/* SPDX-License-Identifier: MIT */
/*
 * conn.h: the connection layer. A connection is a TCP socket (optionally under TLS) owned by one
 * worker loop and driven by the protocol handler currently installed on it: an hd_conn_ops_t
 * table plus a handler pointer. HTTP is installed at accept; a transport (SSE, WebSocket, long
 * poll) takes over by installing its own table, so a connection's state is its handler, never
 * an enum that can drift.
 *
 * Writes are refcounted buffers (buf.h) queued per connection and written with one writev per
 * loop pass: everything a loop iteration queued for a connection leaves in a single uv_write.
 * The queue is bounded by the caller (hd_conn_queued_bytes) so slow consumers cannot make the
 * server buffer without limit. Under TLS, data is encrypted as it is queued.
 *
 * Memory: a socket is freed only after its libuv handle has closed (a stream at the end of the
 * flush pass in which it closed); handlers release their own state in ops->on_close, called
 * exactly once.
 */
#ifndef HERALD_CONN_H
#define HERALD_CONN_H

#include <stdint.h>
#include <uv.h>

#include "herald/auth.h"
#include "herald/buf.h"
#include "herald/common.h"
#include "herald/heap.h"
#include "herald/ipaddr.h"
#include "herald/log.h"
#include "herald/tls.h"

typedef struct hd_conn_s hd_conn_t;
typedef struct hd_worker_s hd_worker_t;

/*
 * An operator's order to end connections (docs/auth.md, "Revocation" and "Disconnecting"):
 * POST /admin/revoke ends those of a sub or a token id, POST /admin/disconnect those of a sub or
 * of a channel. It reaches every worker as a message (hd_kick_post) and each worker walks its own
 * connections (kick.c); the walker matches sub and jti against the connection's identity itself
 * and asks the handler (on_kick) only about those, or, for a channel, about every connection.
 */
enum {
    HD_KICK_REVOKE_SUB = 1, /* the sub's token was revoked (auth.h HD_REVOKE_SUB) */
    HD_KICK_REVOKE_JTI = 2, /* that token was revoked (HD_REVOKE_JTI) */
    HD_KICK_SUB = 3,        /* disconnect the sub's connections */
    HD_KICK_CHANNEL = 4,    /* disconnect every connection subscribed to the channel */
};
typedef struct hd_kick_s {
    int kind;        /* HD_KICK_* */
    const char *key; /* the sub, jti or channel (NUL-terminated) */
    size_t len;
} hd_kick_t;
static inline int hd_kick_is_revocation(const hd_kick_t *k)
{
    return k->kind == HD_KICK_REVOKE_SUB || k->kind == HD_KICK_REVOKE_JTI;
}

typedef struct hd_conn_ops_s {
    const char *name; /* "http", "sse", "ws", ...: logs and stats */
    /* Plaintext from the peer. The bytes are valid only during the call: consume or copy them. */
    void (*on_data)(hd_conn_t *c, const char *data, size_t len);
    /* The peer closed its side. NULL: close the connection. */
    void (*on_eof)(hd_conn_t *c);
    /* The timer set with hd_conn_set_timeout fired. NULL: close. */
    void (*on_timeout)(hd_conn_t *c);
    /* Everything queued has been written. Optional. */
    void (*on_drain)(hd_conn_t *c);
    /* The server is shutting down gracefully: finish or say goodbye. NULL: close now. */
    void (*on_shutdown)(hd_conn_t *c);
    /* The handler is being removed (close, finish or replace): release its state. Optional. */
    void (*on_close)(hd_conn_t *c);
    /*
     * An operator's order (hd_kick_t) reached this connection: for HD_KICK_CHANNEL, any
     * connection; for the others, one whose identity has that sub or jti. The handler ends the
     * connection its own way (an SSE event, a WebSocket close code, a long poll's answer) and
     * returns 1, or returns 0 when it is not concerned (not on that channel). NULL: never.
     */
    int (*on_kick)(hd_conn_t *c, const hd_kick_t *k);
    /* Output may be produced now: the flush pass reached a connection that asked for it
     * (hd_conn_want_flush) and is not waiting for a write. Optional: what a multiplexing
     * protocol (HTTP/2) uses to turn its streams' output into frames once per loop pass. */
    void (*on_flush)(hd_conn_t *c);
    /* Optional: the bytes as read from the socket, before TLS, instead of on_data (a header
     * sent in clear ahead of everything: the PROXY protocol's, src/net/conn_proxy.c). */
    void (*on_clear_data)(hd_conn_t *c, const char *data, size_t len);
} hd_conn_ops_t;

/*
 * A stream: a connection carried inside another one (an HTTP/2 stream inside its TCP
 * connection), so that a transport serves it exactly as it serves a socket. It has no socket:
 * what is sent on it waits in its own queue (hd_conn_queued_bytes counts it, so every
 * transport's bound on a slow subscriber holds per stream) until its carrier takes it
 * (hd_conn_stream_copy). The carrier is told through this table; its state begins with a
 * pointer to it (hd_carrier_t).
 */
typedef struct hd_carrier_ops_s {
    /* s got output (queued behind what it has, if anything). */
    void (*on_output)(hd_conn_t *s);
    /* s is finishing: end it once its queue is taken (hd_conn_finish on s). */
    void (*on_finish)(hd_conn_t *s);
    /* s is closed (hd_conn_close on s, its handler already gone): forget it, reset it when it
     * has not ended. Its memory is freed later in this loop pass. */
    void (*on_close)(hd_conn_t *s);
    /* s's handler reads again (hd_conn_read_start after hd_conn_read_stop, or its first): what
     * the carrier held back for it goes to its on_data later in this loop pass, never inside
     * this call. While s is not reading, the carrier holds what its peer sends, and stops the
     * peer (HTTP/2: the stream's flow-control window is not reopened). */
    void (*on_read_start)(hd_conn_t *s);
} hd_carrier_ops_t;
typedef struct hd_carrier_s {
    const hd_carrier_ops_t *ops;
} hd_carrier_t;

typedef struct hd_out_s {
    hd_buf_t *buf;
    uint32_t off;
    uint32_t len;
} hd_out_t;

/*
 * What every connection has, a socket or a stream. A socket's own state (its uv_tcp_t, TLS,
 * the write in flight, the shutdown request) is allocated with it, behind this struct, and
 * private to the connection layer (src/net/conn_internal.h): a stream (hd_conn_stream_new) is only
 * this, so an HTTP/2 stream costs less than a connection.
 */
struct hd_conn_s {
    /* In the worker's deadline heap (conn_timeout.c) while a timeout is set: key, the loop time in
     * ms when on_timeout fires, plus deadline.aux (a deadline moved later keeps its node where it
     * was, aux ms early); deadline_off: removed, the node still in the heap until it comes
     * first. */
    hd_heap_node_t deadline;
    hd_worker_t *worker;
    const hd_conn_ops_t *ops;
    void *data; /* the handler's state */
    uint64_t id;
    hd_list_t link; /* the worker's connection list (conn_worker.c) */
    hd_out_t *q;    /* queued: not yet handed to uv_write (a stream: to its carrier) */
    uint32_t q_len, q_cap;
    size_t queued_bytes; /* q + a socket's write in flight */
    /* Who the peer is (auth.h): set by the transport that verified its credential
     * (hd_conn_set_identity), one reference, dropped when the connection is freed; NULL:
     * anonymous. Streams (SSE, WebSocket) keep it for their lifetime, a held long poll while it
     * waits; its exp (hd_identity_exp) is when the credential runs out. */
    hd_identity_t *identity;
    hd_carrier_t *carrier; /* a stream's carrier (hd_conn_stream_new); NULL: a socket */
    hd_ip_t client;        /* the socket's peer, or the client a PROXY protocol header named */
    unsigned is_closing : 1;
    unsigned is_writing : 1; /* a socket's write in flight: a uv_write, or a flush's batch */
    unsigned is_finishing : 1;
    unsigned is_reading : 1;
    unsigned is_admin_listener : 1; /* accepted on a listener marked admin (listen ... admin) */
    unsigned is_ip_counted : 1;     /* counted in the node's per-address table until freed */
    unsigned is_stream : 1;         /* carried inside another connection (hd_conn_stream_new) */
    unsigned is_flush_wanted : 1;   /* ops->on_flush runs in the next flush pass */
    unsigned is_tls : 1;            /* under TLS (or carried by a connection that is) */
    unsigned is_unix_peer : 1;      /* a Unix socket (or carried by one): tests' socketpairs */
    unsigned is_shutting : 1;       /* a socket's write side is being shut down (linger) */
    unsigned deadline_off : 1;      /* see deadline */
    unsigned is_carrier_held : 1;   /* a stream's carrier still uses its state (conn_stream.c) */
    unsigned is_stream_freed : 1;   /* freed but for its carrier's state (conn_stream.c) */
};

/*
 * Installs a handler: `ops` with state `data`. The previous handler's on_close is NOT called:
 * the caller is that handler, handing over.
 */
static inline void hd_conn_set_handler(hd_conn_t *c, const hd_conn_ops_t *ops, void *data)
{
    c->ops = ops;
    c->data = data;
}

/* Starts/stops reading from the peer. Stopping is how a handler applies backpressure. */
void hd_conn_read_start(hd_conn_t *c);
void hd_conn_read_stop(hd_conn_t *c);

/*
 * Queues buf[off..off+len) (taking a reference) to be written in this loop pass. Returns 0, or
 * UV_ECANCELED if the connection is closing/finishing (nothing queued, no reference taken).
 */
int hd_conn_send(hd_conn_t *c, hd_buf_t *buf, size_t off, size_t len);
/* Same, copying the bytes. */
int hd_conn_send_copy(hd_conn_t *c, const void *data, size_t len);
static inline size_t hd_conn_queued_bytes(const hd_conn_t *c)
{
    return c->queued_bytes;
}

/* (Re)arms the connection's single timer; 0 stops it. On expiry ops->on_timeout runs. */
void hd_conn_set_timeout(hd_conn_t *c, uint64_t timeout_ms);

/*
 * Graceful end: the handler is removed (on_close), what is queued is written, then the write
 * side is shut down and what the peer still sends is read and discarded for a short while, so
 * the peer reads our last response instead of a reset. Then the connection closes.
 */
void hd_conn_finish(hd_conn_t *c);

/* Immediate close: queued output is dropped. Safe to call more than once and from callbacks. */
void hd_conn_close(hd_conn_t *c);

/*
 * Asks for ops->on_flush in this loop pass's flush (or, while a write is in flight, leaves the
 * wish for the handler's on_drain, which should produce output itself).
 */
void hd_conn_want_flush(hd_conn_t *c);

/*
 * Writes c's queued output first in this loop pass's flush, before the connections that got
 * output earlier in the pass (a publish's answer before the publishing worker's fan-out, so a
 * publisher waiting for it is not held up by the subscribers' writes). Only the order of the
 * pass's writes across connections changes. Nothing for a stream, or with nothing queued.
 */
void hd_conn_flush_first(hd_conn_t *c);

/*
 * A new stream inside `parent` (same worker, client address and listener kind), and its
 * carrier's state in the same allocation: carrier_size bytes (>= sizeof(hd_carrier_t)),
 * zeroed but for the hd_carrier_t they start with, whose ops (told when the stream has output,
 * finishes or closes) are `ops`; s->carrier points to it. The stream is listed with the
 * worker's connections (shutdown, hd_conn_foreach reach it) but not counted as one (it holds
 * no socket). No handler is installed: the caller installs one. Closing it (hd_conn_close)
 * calls ops->on_close unless the carrier detached first (s->carrier = NULL).
 *
 * The allocation is freed once both are done, in either order: the stream (freed at the end of
 * the flush pass after its close) and the carrier's state (hd_conn_carrier_release), as a
 * carrier's state may outlive its stream (an HTTP/2 stream herald reset lives until nghttp2
 * closes it) and the reverse.
 */
hd_conn_t *hd_conn_stream_new(hd_conn_t *parent, const hd_carrier_ops_t *ops, size_t carrier_size);
/* The carrier is done with the state hd_conn_stream_new allocated with its stream, which it
 * closed or detached from (s->carrier = NULL) before: see hd_conn_stream_new. */
void hd_conn_carrier_release(hd_carrier_t *carrier);
/*
 * Copies the first `len` (<= hd_conn_queued_bytes(s)) queued bytes of stream s to dst and
 * drops them from its queue. For the carrier, when it frames them.
 */
void hd_conn_stream_copy(hd_conn_t *s, void *dst, size_t len);
/* For the carrier: s's queue was taken whole and s is not finishing: its handler's on_drain. */
void hd_conn_stream_drained(hd_conn_t *s);
/* The protocol the peer and herald agreed on by TLS ALPN ("h2", "http/1.1"), with its length
 * in *len; NULL when none (no TLS, no ALPN, or before the handshake). */
const char *hd_conn_alpn(const hd_conn_t *c, unsigned *len);

/* Sets the connection's identity (NULL clears it): takes a reference, drops the previous one. */
void hd_conn_set_identity(hd_conn_t *c, hd_identity_t *id);
/*
 * Calls fn(c, arg) for every open (not closing) connection of w, on w's loop: how a worker
 * finds its connections by identity (a sub, a jti, an exp that passed). fn may close or finish
 * the connection it is given, no other.
 */
void hd_conn_foreach(hd_worker_t *w, void (*fn)(hd_conn_t *c, void *arg), void *arg);

/*
 * Sends an operator's order to worker w (any thread; kind HD_KICK_*, key copied): on w's loop
 * every matching connection's handler ends it (hd_conn_ops_t.on_kick), counted in w's stats
 * (kicked_revoked, kicked_disconnected). Cost: one walk of w's connections, once per order.
 */
void hd_kick_post(hd_worker_t *w, int kind, const char *key, size_t len);
/* The same on the calling worker's own loop, now (tests); returns the connections ended. */
size_t hd_kick_run(hd_worker_t *w, const hd_kick_t *k);

/*
 * The connection's client address: the socket's peer, or on a listener marked proxy_protocol
 * the source address of the PROXY header (the socket's peer, the balancer, when the header
 * names none: LOCAL, UNKNOWN). Set before any handler runs and fixed for the connection's life;
 * family HD_IP_NONE for a socket that is not TCP (tests' socketpairs). This is the address the
 * per-address limits count; a request behind an HTTP proxy has its own (hd_req_client_ip).
 */
static inline const hd_ip_t *hd_conn_client_addr(const hd_conn_t *c)
{
    return &c->client;
}

/* The client address and port, "192.0.2.1:5555" or "[2001:db8::1]:5555", for logs (thread-local
 * storage, valid until the next call). */
const char *hd_conn_peer(hd_conn_t *c);

#define hd_conn_log(level, c, fmt, ...)                                                            \
    do {                                                                                           \
        if (hd_log_enabled(level))                                                                 \
            hd_log_printf(level, "c#%llu %s %s: " fmt, (unsigned long long)(c)->id,                \
                          hd_conn_peer(c), (c)->ops ? (c)->ops->name : "-", ##__VA_ARGS__);        \
    } while (0)

#endif
