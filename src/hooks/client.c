/* SPDX-License-Identifier: MIT */
/*
 * client.c: the webhook sender's HTTP/1.1 client, on the hooks thread's uv loop. One pool per
 * endpoint keeps its connections alive between requests. A new connection:
 *
 *   uv_getaddrinfo (off the loop) -> address check (webhook_allow_private) -> uv_tcp_connect
 *     -> TLS handshake over memory BIOs (SNI, the peer verified against the CA store and its
 *        name or address), all within webhook_connect_timeout
 *   -> requests written -> answers read in order (response.c), each within webhook_timeout of
 *      the one before
 *   -> kept idle for the next request when the last answer allows, closed otherwise
 *
 * A connection carries one request at a time, or up to pipeline= (the endpoint's opt-in: HTTP/1.1
 * pipelining) whose answers come back in their order. With pipelining a request goes to the
 * connection already carrying others while it has room, so the requests of a loop pass share
 * one connection. Requests are not written when sent but queued on their connection, and every
 * connection with queued requests is written once, in one writev (one SSL write into the BIO and
 * one socket write for TLS), before the loop waits (uv_prepare) and after it polled (uv_check):
 * the requests a loop pass made, and those the answers it read made room for, go out together.
 * The pool's plain HTTP connections are written in one system call (wbatch.c, when the sender
 * made one: a tick's requests to one endpoint each have a connection of their own without
 * pipelining, and a receiver on the same machine, woken by each write, would preempt the thread
 * after every one).
 *
 * No redirect is followed (a 3xx is an answer like any non-2xx); at most 64 KiB of an answer's
 * body is read. A request on a kept connection that the receiver closes before answering is a
 * failed attempt like any other (it may have been received: delivery is at least once), and so
 * is every request pipelined behind it; a receiver that closes idle connections is noticed by
 * the EOF while the connection is idle.
 *
 * A deadline that passes with something unread on the socket (the answer, the connect's outcome)
 * waits for the loop to read it, once (is_late): libuv runs a loop pass's due timers before it
 * polls, so a thread that waited for a core past a deadline (SCHED_IDLE on a busy machine,
 * hooks.c) would otherwise count a receiver that answered in time as a timeout.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define IDLE_TIMEOUT_MS 30000 /* a kept connection unused this long is closed */
#define WREQ_SMALL      8     /* buffers a write holds without an allocation (4 requests) */

enum { C_RESOLVING = 0, C_CONNECTING, C_HANDSHAKE, C_WAITING, C_IDLE, C_CLOSING };

typedef struct wreq_s {
    uv_write_t w;
    size_t n;        /* references in bufs */
    hd_buf_t **bufs; /* small, or malloc'd */
    hd_buf_t *small[WREQ_SMALL];
    char *tls_data;
} wreq_t;

typedef struct hk_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t connect;
    hk_pool_t *pool;
    hd_list_t link;  /* pool's idle or busy list */
    hd_list_t dirty; /* pool's list of connections with requests to write */
    hd_list_t reqs;  /* its requests (hk_request_t.link_), in order: the head is answered next */
    size_t n_reqs;
    size_t n_unsent; /* the last n_unsent of reqs are not written yet */
    SSL *ssl;
    BIO *rbio, *wbio;   /* TLS: what the peer sent / what to send */
    hk_response_t resp; /* the head request's answer */
    int state;
    int closed_handles;
    unsigned gai_pending : 1; /* the resolver still holds gai */
    unsigned is_writing : 1;  /* wr is a write in progress */
    unsigned is_late : 1;     /* its deadline passed with something unread: one more poll */
    wreq_t wr; /* a write (plain HTTP) without an allocation, when none is in progress */
} hk_conn_t;

struct hk_pool_s {
    const hd_webhook_def_t *def;
    const hk_client_conf_t *cc;
    hd_list_t idle, busy;
    hd_list_t dirty;   /* connections with requests to write */
    uv_prepare_t prep; /* write them before the loop waits */
    uv_check_t check;  /* and after it polled */
    size_t depth;      /* requests a connection carries at once (pipeline=) */
    size_t n_conns;
    unsigned n_handles; /* prep and check, until closed */
    unsigned is_closing : 1;
};

static void conn_close(hk_conn_t *c);
static void on_timer(uv_timer_t *t);

/* An IPv4 address (host order) no webhook may reach unless webhook_allow_private. */
static int v4_is_private(uint32_t a)
{
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 || (a >> 16) == 0xa9fe ||
           (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || (a >> 22) == (100u << 2 | 1) ||
           (a >> 28) == 0xe || a == 0xffffffffu;
}

/*
 * The IPv4-mapped case is checked on the address's bytes, not by building a sockaddr_in and
 * reading it back through a struct sockaddr: that read breaks the aliasing rules, and GCC's
 * Release build (-O3, the call inlined) did not see the family stored, so ::ffff:8.8.8.8 was
 * taken for private.
 */
int hk_addr_is_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return v4_is_private(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t zero[15] = {0};
        if (memcmp(b, mapped, 12) == 0)
            return v4_is_private((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
                                 (uint32_t)b[14] << 8 | b[15]);
        if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
            return 1;                                     /* :: and ::1 */
        return (b[0] & 0xfe) == 0xfc ||                   /* fc00::/7 unique local */
               (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
               b[0] == 0xff;                              /* multicast */
    }
    return 1;
}

/* ---- lifetime ---- */

static void pool_maybe_free(hk_pool_t *p)
{
    if (p->is_closing && p->n_conns == 0 && p->n_handles == 0)
        free(p);
}

static void maybe_free(hk_conn_t *c)
{
    if (c->closed_handles < 2 || c->gai_pending)
        return;
    hk_pool_t *p = c->pool;
    if (c->ssl)
        SSL_free(c->ssl); /* frees both BIOs */
    hk_response_dispose(&c->resp);
    free(c);
    p->n_conns--;
    pool_maybe_free(p);
}

static void on_handle_closed(uv_handle_t *h)
{
    hk_conn_t *c = h->data;
    c->closed_handles++;
    maybe_free(c);
}

/* Closes c; its requests are the caller's (still on c->reqs). */
static void conn_close(hk_conn_t *c)
{
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    if (hd_list_linked(&c->link))
        hd_list_remove(&c->link);
    if (hd_list_linked(&c->dirty))
        hd_list_remove(&c->dirty);
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static hk_request_t *head_req(hk_conn_t *c)
{
    return c->n_reqs ? hd_container_of(c->reqs.next, hk_request_t, link_) : NULL;
}

static hk_request_t *pop_req(hk_conn_t *c)
{
    hk_request_t *req = head_req(c);
    hd_list_remove(&req->link_);
    c->n_reqs--;
    if (c->n_unsent > c->n_reqs)
        c->n_unsent = c->n_reqs;
    return req;
}

/* Closes c and fails every request it carried (the head with why; those pipelined behind it
 * were not answered either). Callbacks stop once one of them closed the pool. */
static void fail_conn(hk_conn_t *c, int fail, const char *why)
{
    hk_pool_t *p = c->pool;
    conn_close(c);
    while (c->n_reqs > 0) {
        hk_request_t *req = pop_req(c);
        if (!p->is_closing) {
            req->retry_after[0] = '\0';
            req->cb(req, 0, fail, why);
        }
    }
}

/* The head request's answer is to be read: a fresh parser, webhook_timeout from now. */
static void await_head(hk_conn_t *c)
{
    hk_request_t *req = head_req(c);
    hk_response_dispose(&c->resp);
    hk_response_init(&c->resp);
    c->resp.keep_body = req->want_body;
    c->state = C_WAITING;
    c->is_late = 0;
    uv_timer_start(&c->timer, on_timer, c->pool->cc->timeout_ms, 0);
}

/* What follows an answer: the connection is kept, the answer closes it (Connection: close,
 * HTTP/1.0), or the peer closed it (the answer read to EOF). */
enum { A_KEEP, A_CLOSE, A_EOF };

/* The head request was answered (c->resp complete): it ends, and c waits for the next answer,
 * goes idle, or closes. Requests pipelined behind an answer that closes the connection were not
 * processed (RFC 9112 9.6: the server must not) and are sent again, on another connection,
 * without a callback (9.3.2); behind an answer read to EOF they fail (the peer just closed). */

static void answered(hk_conn_t *c, int then)
{
    hk_pool_t *p = c->pool;
    hk_request_t *req = pop_req(c);
    hd_list_t again;
    hd_list_init(&again);
    int status = c->resp.status;
    if (req->want_body)
        req->answer = hk_response_take_body(&c->resp, &req->answer_len);
    /* the answer's Retry-After, for the retry's wait (delivery.c) */
    size_t n = strnlen(c->resp.retry_after, sizeof(req->retry_after) - 1);
    memcpy(req->retry_after, c->resp.retry_after, n);
    req->retry_after[n] = '\0';
    if (then != A_KEEP || p->is_closing) {
        conn_close(c);
        if (then == A_CLOSE) {
            while (c->n_reqs > 0)
                hd_list_insert_tail(&again, &pop_req(c)->link_);
        }
    } else if (c->n_reqs > 0) {
        await_head(c);
    } else {
        c->state = C_IDLE;
        hd_list_remove(&c->link);
        hd_list_insert_tail(&p->idle, &c->link);
        uv_timer_start(&c->timer, on_timer, IDLE_TIMEOUT_MS, 0);
    }
    req->cb(req, status, 0, NULL);
    if (c->state == C_CLOSING && c->n_reqs > 0)
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, "the receiver closed the connection before answering");
    while (!hd_list_empty(&again)) {
        hk_request_t *r = hd_container_of(again.next, hk_request_t, link_);
        hd_list_remove(&r->link_);
        if (!p->is_closing) /* else: ended with no callback, as the pool's others */
            hk_pool_send(p, r);
    }
}

/* ---- timers ---- */

/* c's deadline passed: 1 when its socket has something the loop has not read yet (an answer's
 * bytes, the connect's outcome, an error), for the first time since the deadline was set. */
static int unread_at_deadline(hk_conn_t *c)
{
    uv_os_fd_t fd;
    if (c->is_late || c->state == C_RESOLVING || uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0)
        return 0;
    struct pollfd pfd = {.fd = fd, .events = c->state == C_CONNECTING ? POLLOUT : POLLIN};
    return poll(&pfd, 1, 0) == 1;
}

static void on_timer(uv_timer_t *t)
{
    hk_conn_t *c = t->data;
    if (c->state != C_IDLE && c->state != C_CLOSING && unread_at_deadline(c)) {
        /* 1 ms, not 0: libuv would run a timer restarted at 0 again in this same pass */
        c->is_late = 1;
        uv_timer_start(&c->timer, on_timer, 1, 0);
        return;
    }
    if (c->state == C_IDLE) {
        conn_close(c);
    } else if (c->state == C_WAITING) {
        fail_conn(c, HD_HOOKS_FAIL_TIMEOUT, "no complete answer within webhook_timeout");
    } else if (c->state != C_CLOSING) {
        fail_conn(c, HD_HOOKS_FAIL_TIMEOUT, "not connected within webhook_connect_timeout");
    }
}

/* ---- writing ---- */

static void wreq_release(wreq_t *wr)
{
    for (size_t i = 0; i < wr->n; i++)
        hd_buf_unref(wr->bufs[i]);
    if (wr->bufs != wr->small)
        free(wr->bufs);
    wr->bufs = wr->small;
    wr->n = 0;
    free(wr->tls_data);
    wr->tls_data = NULL;
}

static void on_written(uv_write_t *w, int status)
{
    wreq_t *wr = hd_container_of(w, wreq_t, w);
    hk_conn_t *c = w->handle->data;
    wreq_release(wr);
    if (wr == &c->wr)
        c->is_writing = 0;
    else
        free(wr);
    if (status < 0 && c->state != C_CLOSING && c->n_reqs > 0) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

/* A write request: c's own when free, else a new one (a write still going). */
static wreq_t *wreq_get(hk_conn_t *c)
{
    wreq_t *wr = c->is_writing ? hd_calloc(1, sizeof(*wr)) : &c->wr;
    c->is_writing = 1; /* for wr == &c->wr; harmless otherwise */
    wr->bufs = wr->small;
    wr->n = 0;
    return wr;
}

static void wreq_put(hk_conn_t *c, wreq_t *wr)
{
    wreq_release(wr);
    if (wr == &c->wr)
        c->is_writing = 0;
    else
        free(wr);
}

/*
 * What is left of b[0..n) after an attempt to write it (rc: the bytes the socket took, or a
 * negative error; UV_EAGAIN: none) goes with a write request holding a reference to each of
 * refs[0..nrefs) and owning tls_data (malloc'd or NULL; freed here when all was written). b[] is
 * changed. 0, or -1 once c failed.
 */
static int write_rest(hk_conn_t *c, uv_buf_t *b, size_t n, hd_buf_t *const *refs, size_t nrefs,
                      char *tls_data, ssize_t rc)
{
    size_t done = rc > 0 ? (size_t)rc : 0;
    while (n > 0 && done >= b->len) {
        done -= b->len;
        b++, n--;
    }
    if (n == 0) {
        free(tls_data);
        return 0;
    }
    if (rc < 0 && rc != UV_EAGAIN) {
        free(tls_data);
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror((int)rc));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
        return -1;
    }
    b->base += done;
    b->len -= done;
    wreq_t *wr = wreq_get(c);
    if (nrefs > WREQ_SMALL)
        wr->bufs = hd_malloc(nrefs * sizeof(wr->bufs[0]));
    for (size_t i = 0; i < nrefs; i++)
        wr->bufs[wr->n++] = hd_buf_ref(refs[i]);
    wr->tls_data = tls_data;
    int r = uv_write(&wr->w, (uv_stream_t *)&c->tcp, b, (unsigned)n, on_written);
    if (r < 0) {
        wreq_put(c, wr);
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(r));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
        return -1;
    }
    return 0;
}

/*
 * Writes b[0..n): what the socket takes at once with uv_try_write (no request, no callback, and
 * no epoll_ctl, which libuv 1.44 makes after every write request it completes: a receiver that
 * keeps up takes it whole), the rest as write_rest says. 0, or -1 once c failed.
 */
static int write_out(hk_conn_t *c, uv_buf_t *b, size_t n, hd_buf_t *const *refs, size_t nrefs,
                     char *tls_data)
{
    int rc = uv_try_write((uv_stream_t *)&c->tcp, b, (unsigned)n);
    return write_rest(c, b, n, refs, nrefs, tls_data, rc);
}

/* Writes what TLS has for the peer. */
static void flush_tls(hk_conn_t *c)
{
    size_t n = (size_t)BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return;
    char *data = hd_malloc(n);
    int got = BIO_read(c->wbio, data, (int)n);
    uv_buf_t b = uv_buf_init(data, got > 0 ? (unsigned)got : 0);
    write_out(c, &b, 1, NULL, 0, data);
}

/* c's unsent requests are to be written now (its place in the pool's dirty list given up):
 * their count, 0 when there is nothing to write yet (connecting) or any more. */
static size_t take_unsent(hk_conn_t *c)
{
    if (hd_list_linked(&c->dirty))
        hd_list_remove(&c->dirty);
    if ((c->state != C_WAITING && c->state != C_IDLE) || c->n_unsent == 0)
        return 0; /* connecting: written once connected */
    size_t n = c->n_unsent;
    c->n_unsent = 0;
    return n;
}

/* The first of c's last n requests (the unsent ones take_unsent counted). */
static hd_list_t *first_of_last(hk_conn_t *c, size_t n)
{
    hd_list_t *pos = c->reqs.prev;
    for (size_t i = 1; i < n; i++)
        pos = pos->prev;
    return pos;
}

/* Fills b[0..2n) and refs[0..2n) with the heads and bodies of c's last n requests. */
static void gather(hk_conn_t *c, size_t n, uv_buf_t *b, hd_buf_t **refs)
{
    hd_list_t *pos = first_of_last(c, n);
    for (size_t i = 0; i < n; i++, pos = pos->next) {
        hk_request_t *req = hd_container_of(pos, hk_request_t, link_);
        refs[2 * i] = req->head;
        refs[2 * i + 1] = req->body;
        b[2 * i] = uv_buf_init(req->head->data, (unsigned)req->head->len);
        b[2 * i + 1] = uv_buf_init(req->body->data, (unsigned)req->body->len);
    }
}

/* Writes c's unsent requests, all in one write. */
static void conn_flush(hk_conn_t *c)
{
    size_t n = take_unsent(c);
    if (n == 0)
        return;
    if (c->ssl) {
        hd_list_t *pos = first_of_last(c, n);
        for (size_t i = 0; i < n; i++, pos = pos->next) {
            hk_request_t *req = hd_container_of(pos, hk_request_t, link_);
            if (SSL_write(c->ssl, req->head->data, (int)req->head->len) <= 0 ||
                (req->body->len > 0 &&
                 SSL_write(c->ssl, req->body->data, (int)req->body->len) <= 0)) {
                fail_conn(c, HD_HOOKS_FAIL_TLS, "TLS write failed");
                return;
            }
        }
        flush_tls(c);
        return;
    }
    uv_buf_t small_b[WREQ_SMALL];
    hd_buf_t *small_r[WREQ_SMALL];
    uv_buf_t *b = 2 * n > WREQ_SMALL ? hd_malloc(2 * n * sizeof(*b)) : small_b;
    hd_buf_t **refs = 2 * n > WREQ_SMALL ? hd_malloc(2 * n * sizeof(*refs)) : small_r;
    gather(c, n, b, refs);
    write_out(c, b, 2 * n, refs, 2 * n, NULL);
    if (b != small_b) {
        free(b);
        free(refs);
    }
}

/* Whether c's unsent requests may go in a batch with other connections' (wbatch.c): plain HTTP,
 * nothing of an earlier write still queued in libuv (which uv_try_write would see too). */
static int batchable(const hk_conn_t *c)
{
    return !c->ssl && (c->state == C_WAITING || c->state == C_IDLE) && c->n_unsent > 0 &&
           c->tcp.write_queue_size == 0;
}

#define BATCH_BUFS 128 /* heads and bodies a batch gathers without an allocation */

static int conn_fd(hk_conn_t *c)
{
    uv_os_fd_t fd = -1;
    uv_fileno((const uv_handle_t *)&c->tcp, &fd);
    return fd;
}

/*
 * Writes the unsent requests of up to HD_WBATCH_MAX batchable connections of p's dirty list in
 * one system call (wbatch.c), what a socket did not take as write_rest says. The connections'
 * requests cannot end while the batch is made and run: no callback runs before the results are
 * in, and a connection failed by one result is skipped by the rest.
 */
static void flush_batch(hk_pool_t *p, hd_wbatch_t *wb)
{
    hk_conn_t *cs[HD_WBATCH_MAX];
    size_t counts[HD_WBATCH_MAX], nc = 0, nbufs = 0;
    hd_list_t *pos;
    for (pos = p->dirty.next; pos != &p->dirty && nc < HD_WBATCH_MAX; pos = pos->next) {
        hk_conn_t *c = hd_container_of(pos, hk_conn_t, dirty);
        if (batchable(c)) {
            cs[nc++] = c;
            nbufs += 2 * c->n_unsent;
        }
    }
    if (nc < 2) { /* nothing to share a system call with */
        conn_flush(hd_container_of(p->dirty.next, hk_conn_t, dirty));
        return;
    }
    uv_buf_t small_b[BATCH_BUFS];
    hd_buf_t *small_r[BATCH_BUFS];
    uv_buf_t *b = nbufs > BATCH_BUFS ? hd_malloc(nbufs * sizeof(*b)) : small_b;
    hd_buf_t **refs = nbufs > BATCH_BUFS ? hd_malloc(nbufs * sizeof(*refs)) : small_r;
    ssize_t res[HD_WBATCH_MAX];
    size_t at = 0;
    for (size_t i = 0; i < nc; i++) {
        counts[i] = take_unsent(cs[i]);
        gather(cs[i], counts[i], b + at, refs + at);
        int slot = hd_wbatch_add(wb, conn_fd(cs[i]), b + at, 2 * counts[i]);
        HD_ASSERT(slot == (int)i);
        at += 2 * counts[i];
    }
    hd_wbatch_run(wb, res);
    at = 0;
    for (size_t i = 0; i < nc; i++) {
        size_t k = 2 * counts[i];
        if (cs[i]->state != C_CLOSING) /* failed by an earlier result's callbacks */
            write_rest(cs[i], b + at, k, refs + at, k, NULL, res[i]);
        at += k;
    }
    if (b != small_b) {
        free(b);
        free(refs);
    }
}

static void pool_flush(hk_pool_t *p)
{
    hd_wbatch_t *wb = p->cc->wbatch;
    while (!hd_list_empty(&p->dirty)) {
        if (wb)
            flush_batch(p, wb);
        else
            conn_flush(hd_container_of(p->dirty.next, hk_conn_t, dirty));
    }
    uv_prepare_stop(&p->prep);
    uv_check_stop(&p->check);
}

static void on_prepare(uv_prepare_t *h)
{
    pool_flush(h->data);
}

static void on_check(uv_check_t *h)
{
    pool_flush(h->data);
}

/* c has requests to write: at the end of this loop pass. */
static void mark_dirty(hk_conn_t *c)
{
    hk_pool_t *p = c->pool;
    if (hd_list_linked(&c->dirty) || c->state == C_CLOSING)
        return;
    if (hd_list_empty(&p->dirty)) {
        uv_prepare_start(&p->prep, on_prepare);
        uv_check_start(&p->check, on_check);
    }
    hd_list_insert_tail(&p->dirty, &c->dirty);
}

/* c is connected (and its TLS session up): its requests go. */
static void conn_ready(hk_conn_t *c)
{
    await_head(c);
    conn_flush(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[16384]; /* one loop, one thread: data is used before the next read */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

/* Feeds answers' bytes, the head request's first; 0 to go on reading, -1 once c closed. */
static int feed(hk_conn_t *c, const char *data, size_t len)
{
    while (len > 0) {
        if (c->state != C_WAITING || c->n_reqs == c->n_unsent) {
            /* bytes nobody asked for (an idle connection, or nothing written yet): it cannot
             * be trusted for the next request */
            if (c->n_reqs > 0)
                fail_conn(c, HD_HOOKS_FAIL_PROTOCOL, "the receiver spoke before a request");
            else
                conn_close(c);
            return -1;
        }
        size_t used;
        int r = hk_response_feed_some(&c->resp, data, len, &used);
        if (r == HK_RESP_MORE)
            return 0;
        if (r == HK_RESP_ERROR) {
            if (c->resp.has_head && c->resp.body_bytes > HK_RESPONSE_BODY_MAX)
                fail_conn(c, HD_HOOKS_FAIL_PROTOCOL, "answer body larger than 64 KiB");
            else
                fail_conn(c, HD_HOOKS_FAIL_PROTOCOL, "the answer is not HTTP/1.x");
            return -1;
        }
        data += used;
        len -= used;
        if (len > 0 && c->n_reqs - c->n_unsent == 1) {
            /* bytes after the last answer owed: a receiver talking out of turn; the answer
             * cannot be trusted either */
            fail_conn(c, HD_HOOKS_FAIL_PROTOCOL, "the answer is not HTTP/1.x");
            return -1;
        }
        answered(c, c->resp.keep_alive ? A_KEEP : A_CLOSE);
        if (c->state == C_CLOSING)
            return -1;
    }
    return 0;
}

static void tls_failed(hk_conn_t *c)
{
    char why[256];
    long v = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_get_error();
    if (v != X509_V_OK)
        snprintf(why, sizeof(why), "TLS: certificate not trusted: %s",
                 X509_verify_cert_error_string(v));
    else if (e)
        snprintf(why, sizeof(why), "TLS: %s", ERR_reason_error_string(e));
    else
        snprintf(why, sizeof(why), "TLS handshake failed");
    ERR_clear_error();
    fail_conn(c, HD_HOOKS_FAIL_TLS, why);
}

static void tls_handshake(hk_conn_t *c)
{
    int r = SSL_do_handshake(c->ssl);
    flush_tls(c);
    if (c->state == C_CLOSING)
        return;
    if (r == 1) {
        conn_ready(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        tls_failed(c);
}

/* The connection ended (is_eof: the peer closed it, or TLS's close_notify, and a body read to
 * the end may be the head's answer), what saying how. */
static void on_eof(hk_conn_t *c, int is_eof, const char *what)
{
    if (c->state == C_IDLE) {
        conn_close(c);
    } else if (is_eof && c->state == C_WAITING && hk_response_eof(&c->resp) == HK_RESP_DONE) {
        answered(c, A_EOF);
    } else {
        char why[96];
        snprintf(why, sizeof(why), "connection %s before a complete answer", what);
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hk_conn_t *c = s->data;
    if (c->state == C_CLOSING)
        return;
    if (nread < 0) {
        if (c->state == C_HANDSHAKE)
            tls_failed(c);
        else
            on_eof(c, nread == UV_EOF, nread == UV_EOF ? "closed" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    if (!c->ssl) {
        feed(c, buf->base, (size_t)nread);
        return;
    }
    BIO_write(c->rbio, buf->base, (int)nread);
    if (c->state == C_HANDSHAKE) {
        tls_handshake(c);
        if (c->state != C_WAITING)
            return;
    }
    for (;;) {
        char plain[16384];
        int n = SSL_read(c->ssl, plain, sizeof(plain));
        if (n > 0) {
            if (feed(c, plain, (size_t)n) < 0)
                return;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN && c->state == C_WAITING) {
            on_eof(c, 1, "closed");
            return;
        }
        if (c->state == C_IDLE)
            conn_close(c);
        else
            fail_conn(c, HD_HOOKS_FAIL_CONNECT, "connection closed before a complete answer");
        return;
    }
    flush_tls(c); /* TLS 1.3 may answer session tickets or key updates */
}

/* ---- connecting ---- */

static int start_tls(hk_conn_t *c)
{
    const hd_webhook_def_t *d = c->pool->def;
    c->ssl = SSL_new(c->pool->cc->tls);
    if (!c->ssl)
        return -1;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    unsigned char tmp[16];
    int is_ip = inet_pton(AF_INET, d->host, tmp) == 1 || inet_pton(AF_INET6, d->host, tmp) == 1;
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), d->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, d->host);
        SSL_set1_host(c->ssl, d->host);
    }
    return 0;
}

static void on_connected(uv_connect_t *creq, int status)
{
    hk_conn_t *c = creq->data;
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->pool->def->is_tls) {
        if (start_tls(c) < 0) {
            fail_conn(c, HD_HOOKS_FAIL_TLS, "TLS: cannot make a session");
            return;
        }
        c->state = C_HANDSHAKE;
        tls_handshake(c);
        return;
    }
    conn_ready(c);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    hk_conn_t *c = g->data;
    c->gai_pending = 0;
    if (c->state == C_CLOSING) {
        uv_freeaddrinfo(res);
        maybe_free(c);
        return;
    }
    if (status < 0 || !res) {
        char why[300];
        snprintf(why, sizeof(why), "cannot resolve %.200s: %s", c->pool->def->host,
                 uv_strerror(status));
        uv_freeaddrinfo(res);
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
        return;
    }
    if (!c->pool->cc->allow_private && hk_addr_is_private(res->ai_addr)) {
        char why[300];
        snprintf(why, sizeof(why),
                 "%.200s is a loopback, private or link-local address "
                 "(webhook_allow_private is off)",
                 c->pool->def->host);
        uv_freeaddrinfo(res);
        fail_conn(c, HD_HOOKS_FAIL_REFUSED, why);
        return;
    }
    c->state = C_CONNECTING;
    c->connect.data = c;
    int rc = uv_tcp_connect(&c->connect, &c->tcp, res->ai_addr, on_connected);
    uv_freeaddrinfo(res);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

/* A new connection for req (its first request). */
static void conn_start(hk_pool_t *p, hk_request_t *req)
{
    hk_conn_t *c = hd_calloc(1, sizeof(*c));
    const hk_client_conf_t *cc = p->cc;
    c->pool = p;
    hd_list_init(&c->reqs);
    hd_list_insert_tail(&c->reqs, &req->link_);
    c->n_reqs = c->n_unsent = 1;
    p->n_conns++;
    uv_tcp_init(cc->loop, &c->tcp);
    uv_timer_init(cc->loop, &c->timer);
    c->tcp.data = c->timer.data = c->gai.data = c;
    hd_list_insert_tail(&p->busy, &c->link);
    uv_timer_start(&c->timer, on_timer, cc->connect_timeout_ms, 0);
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)p->def->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    c->gai_pending = 1;
    int rc = uv_getaddrinfo(cc->loop, &c->gai, on_resolved, p->def->host, port, &hints);
    if (rc < 0) {
        c->gai_pending = 0;
        /* reported from the loop, never inside hk_pool_send: a zero-delay timer */
        c->state = C_CONNECTING;
        uv_timer_start(&c->timer, on_timer, 0, 0);
    }
}

/* ---- pool ---- */

hk_pool_t *hk_pool_new(const hd_webhook_def_t *def, const hk_client_conf_t *cc)
{
    hk_pool_t *p = hd_calloc(1, sizeof(*p));
    p->def = def;
    p->cc = cc;
    p->depth = def->pipeline > 1 ? def->pipeline : 1;
    hd_list_init(&p->idle);
    hd_list_init(&p->busy);
    hd_list_init(&p->dirty);
    uv_prepare_init(cc->loop, &p->prep);
    uv_check_init(cc->loop, &p->check);
    p->prep.data = p->check.data = p;
    p->n_handles = 2;
    return p;
}

/* With pipelining, a busy connection with room (connecting ones included): the first, so a
 * loop pass's requests share it. NULL when none has room (or without pipelining). */
static hk_conn_t *busy_with_room(hk_pool_t *p)
{
    if (p->depth < 2)
        return NULL;
    hd_list_t *pos;
    for (pos = p->busy.next; pos != &p->busy; pos = pos->next) {
        hk_conn_t *c = hd_container_of(pos, hk_conn_t, link);
        if (c->n_reqs < p->depth)
            return c;
    }
    return NULL;
}

void hk_pool_send(hk_pool_t *p, hk_request_t *req)
{
    HD_ASSERT(!p->is_closing);
    req->answer = NULL;
    req->answer_len = 0;
    req->retry_after[0] = '\0';
    hk_conn_t *c = busy_with_room(p);
    if (!c && !hd_list_empty(&p->idle)) {
        /* the connection idle the shortest time: the fewest are kept busy, and those idle
         * longest reach IDLE_TIMEOUT_MS and close when the rate drops */
        c = hd_container_of(p->idle.prev, hk_conn_t, link);
        hd_list_remove(&c->link);
        hd_list_insert_tail(&p->busy, &c->link);
    }
    if (!c) {
        conn_start(p, req);
        return;
    }
    hd_list_insert_tail(&c->reqs, &req->link_);
    c->n_reqs++;
    c->n_unsent++;
    if (c->state == C_IDLE)
        await_head(c); /* its timer: from the idle timeout to the answer's */
    if (c->state == C_WAITING)
        mark_dirty(c); /* connecting: its requests go once it is connected */
}

static void on_pool_handle_closed(uv_handle_t *h)
{
    hk_pool_t *p = h->data;
    p->n_handles--;
    pool_maybe_free(p);
}

void hk_pool_close(hk_pool_t *p)
{
    p->is_closing = 1;
    hd_list_t *lists[2] = {&p->idle, &p->busy};
    for (int i = 0; i < 2; i++) {
        while (!hd_list_empty(lists[i])) {
            hk_conn_t *c = hd_container_of(lists[i]->next, hk_conn_t, link);
            while (c->n_reqs > 0) /* no callback: the caller owns them and knows */
                pop_req(c);
            conn_close(c);
        }
    }
    uv_close((uv_handle_t *)&p->prep, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->check, on_pool_handle_closed);
}

size_t hk_pool_conns(const hk_pool_t *p)
{
    return p->n_conns;
}
