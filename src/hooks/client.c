/* SPDX-License-Identifier: MIT */
/*
 * client.c: the webhook sender's HTTP/1.1 client, on the hooks thread's uv loop. One pool per
 * endpoint keeps its connections alive between requests; a connection carries one request at a
 * time (no pipelining). A new connection:
 *
 *   uv_getaddrinfo (off the loop) -> address check (webhook_allow_private) -> uv_tcp_connect
 *     -> TLS handshake over memory BIOs (SNI, the peer verified against the CA store and its
 *        name or address), all within webhook_connect_timeout
 *   -> request written -> answer read (response.c) within webhook_timeout
 *   -> kept idle for the next request when the answer allows, closed otherwise
 *
 * No redirect is followed (a 3xx is an answer like any non-2xx); at most 64 KiB of an answer's
 * body is read. A request on a kept connection that the receiver closes before answering is a
 * failed attempt like any other (it may have been received: delivery is at least once); a
 * receiver that closes idle connections is noticed by the EOF while the connection is idle.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#define IDLE_TIMEOUT_MS 30000 /* a kept connection unused this long is closed */

enum { C_RESOLVING = 0, C_CONNECTING, C_HANDSHAKE, C_WAITING, C_IDLE, C_CLOSING };

typedef struct wreq_s {
    uv_write_t w;
    hd_buf_t *bufs[2];
    char *tls_data;
} wreq_t;

typedef struct hk_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t connect;
    hk_pool_t *pool;
    hd_list_t link; /* pool's idle or busy list */
    hk_request_t *req;
    SSL *ssl;
    BIO *rbio, *wbio; /* TLS: what the peer sent / what to send */
    hk_response_t resp;
    int state;
    int closed_handles;
    unsigned gai_pending : 1; /* the resolver still holds gai */
    unsigned is_writing : 1;  /* wr is a write in progress */
    wreq_t wr; /* a request's write (plain HTTP): one request at a time, no allocation */
} hk_conn_t;

struct hk_pool_s {
    const hd_webhook_def_t *def;
    const hk_client_conf_t *cc;
    hd_list_t idle, busy;
    size_t n_conns;
    unsigned is_closing : 1;
};

static void conn_close(hk_conn_t *c);
static void send_request(hk_conn_t *c);
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
    if (p->is_closing && p->n_conns == 0)
        free(p);
}

static void on_handle_closed(uv_handle_t *h)
{
    hk_conn_t *c = h->data;
    c->closed_handles++;
    maybe_free(c);
}

static void conn_close(hk_conn_t *c)
{
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    if (hd_list_linked(&c->link))
        hd_list_remove(&c->link);
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* Ends c's request (status > 0: answered) and closes c unless it may be kept. */
static void finish(hk_conn_t *c, int status, int fail, const char *why, int keep)
{
    hk_request_t *req = c->req;
    hk_pool_t *p = c->pool;
    c->req = NULL;
    if (keep && !p->is_closing) {
        c->state = C_IDLE;
        hd_list_remove(&c->link);
        hd_list_insert_tail(&p->idle, &c->link);
        uv_timer_start(&c->timer, on_timer, IDLE_TIMEOUT_MS, 0);
    } else {
        conn_close(c);
    }
    if (req && req->want_body && status > 0)
        req->answer = hk_response_take_body(&c->resp, &req->answer_len);
    hk_response_dispose(&c->resp);
    if (req) {
        /* the answer's Retry-After, for the retry's wait (delivery.c) */
        size_t n = status > 0 ? strnlen(c->resp.retry_after, sizeof(req->retry_after) - 1) : 0;
        memcpy(req->retry_after, c->resp.retry_after, n);
        req->retry_after[n] = '\0';
        req->cb(req, status, fail, why);
    }
}

static void fail_conn(hk_conn_t *c, int fail, const char *why)
{
    finish(c, 0, fail, why, 0);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t)
{
    hk_conn_t *c = t->data;
    if (c->state == C_IDLE) {
        conn_close(c);
    } else if (c->state == C_WAITING) {
        finish(c, 0, HD_HOOKS_FAIL_TIMEOUT, "no complete answer within webhook_timeout", 0);
    } else if (c->state != C_CLOSING) {
        finish(c, 0, HD_HOOKS_FAIL_TIMEOUT, "not connected within webhook_connect_timeout", 0);
    }
}

/* ---- writing ---- */

static void on_written(uv_write_t *w, int status)
{
    wreq_t *wr = hd_container_of(w, wreq_t, w);
    hk_conn_t *c = w->handle->data;
    for (int i = 0; i < 2; i++) {
        if (wr->bufs[i])
            hd_buf_unref(wr->bufs[i]);
        wr->bufs[i] = NULL;
    }
    if (wr == &c->wr) {
        c->is_writing = 0;
    } else {
        free(wr->tls_data);
        free(wr);
    }
    if (status < 0 && c->state != C_CLOSING && c->req) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

/* Writes what TLS has for the peer. */
static void flush_tls(hk_conn_t *c)
{
    size_t n = (size_t)BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return;
    wreq_t *wr = hd_calloc(1, sizeof(*wr));
    wr->tls_data = hd_malloc(n);
    int got = BIO_read(c->wbio, wr->tls_data, (int)n);
    uv_buf_t b = uv_buf_init(wr->tls_data, got > 0 ? (unsigned)got : 0);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(wr->tls_data);
        free(wr);
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(rc));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

static void send_request(hk_conn_t *c)
{
    hk_request_t *req = c->req;
    hk_response_dispose(&c->resp);
    hk_response_init(&c->resp);
    c->resp.keep_body = req->want_body;
    req->answer = NULL;
    req->answer_len = 0;
    c->state = C_WAITING;
    uv_timer_start(&c->timer, on_timer, c->pool->cc->timeout_ms, 0);
    if (c->ssl) {
        if (SSL_write(c->ssl, req->head->data, (int)req->head->len) <= 0 ||
            (req->body->len > 0 && SSL_write(c->ssl, req->body->data, (int)req->body->len) <= 0)) {
            fail_conn(c, HD_HOOKS_FAIL_TLS, "TLS write failed");
            return;
        }
        flush_tls(c);
        return;
    }
    /* the previous request's write still going (its answer came before all of it was sent):
     * this one gets its own */
    wreq_t *wr = c->is_writing ? hd_calloc(1, sizeof(*wr)) : &c->wr;
    if (wr == &c->wr)
        c->is_writing = 1;
    wr->bufs[0] = hd_buf_ref(req->head);
    wr->bufs[1] = hd_buf_ref(req->body);
    uv_buf_t b[2] = {uv_buf_init(req->head->data, (unsigned)req->head->len),
                     uv_buf_init(req->body->data, (unsigned)req->body->len)};
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, b, 2, on_written);
    if (rc < 0) {
        hd_buf_unref(wr->bufs[0]);
        hd_buf_unref(wr->bufs[1]);
        wr->bufs[0] = wr->bufs[1] = NULL;
        if (wr == &c->wr)
            c->is_writing = 0;
        else
            free(wr);
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(rc));
        fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
    }
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[16384]; /* one loop, one thread: data is used before the next read */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

/* Feeds the answer's bytes; 0 to go on reading, -1 once c's request ended. */
static int feed(hk_conn_t *c, const char *data, size_t len)
{
    if (c->state != C_WAITING || !c->req) {
        /* bytes nobody asked for on an idle connection: it cannot be trusted for the next */
        conn_close(c);
        return -1;
    }
    int r = hk_response_feed(&c->resp, data, len);
    if (r == HK_RESP_DONE) {
        finish(c, c->resp.status, 0, NULL, c->resp.keep_alive);
        return -1;
    }
    if (r == HK_RESP_ERROR) {
        if (c->resp.has_head && c->resp.body_bytes > HK_RESPONSE_BODY_MAX)
            finish(c, 0, HD_HOOKS_FAIL_PROTOCOL, "answer body larger than 64 KiB", 0);
        else
            finish(c, 0, HD_HOOKS_FAIL_PROTOCOL, "the answer is not HTTP/1.x", 0);
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
    finish(c, 0, HD_HOOKS_FAIL_TLS, why, 0);
}

static void tls_handshake(hk_conn_t *c)
{
    int r = SSL_do_handshake(c->ssl);
    flush_tls(c);
    if (c->state == C_CLOSING)
        return;
    if (r == 1) {
        send_request(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        tls_failed(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hk_conn_t *c = s->data;
    if (c->state == C_CLOSING)
        return;
    if (nread < 0) {
        if (c->state == C_IDLE) {
            conn_close(c);
        } else if (nread == UV_EOF && c->state == C_WAITING &&
                   hk_response_eof(&c->resp) == HK_RESP_DONE) {
            finish(c, c->resp.status, 0, NULL, 0);
        } else if (c->state == C_HANDSHAKE) {
            tls_failed(c);
        } else {
            char why[96];
            snprintf(why, sizeof(why), "connection %s before a complete answer",
                     nread == UV_EOF ? "closed" : uv_strerror((int)nread));
            fail_conn(c, HD_HOOKS_FAIL_CONNECT, why);
        }
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
        if (e == SSL_ERROR_ZERO_RETURN && c->state == C_WAITING &&
            hk_response_eof(&c->resp) == HK_RESP_DONE) {
            finish(c, c->resp.status, 0, NULL, 0);
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
        finish(c, 0, HD_HOOKS_FAIL_CONNECT, why, 0);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->pool->def->is_tls) {
        if (start_tls(c) < 0) {
            finish(c, 0, HD_HOOKS_FAIL_TLS, "TLS: cannot make a session", 0);
            return;
        }
        c->state = C_HANDSHAKE;
        tls_handshake(c);
        return;
    }
    send_request(c);
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
        finish(c, 0, HD_HOOKS_FAIL_CONNECT, why, 0);
        return;
    }
    if (!c->pool->cc->allow_private && hk_addr_is_private(res->ai_addr)) {
        char why[300];
        snprintf(why, sizeof(why),
                 "%.200s is a loopback, private or link-local address "
                 "(webhook_allow_private is off)",
                 c->pool->def->host);
        uv_freeaddrinfo(res);
        finish(c, 0, HD_HOOKS_FAIL_REFUSED, why, 0);
        return;
    }
    c->state = C_CONNECTING;
    c->connect.data = c;
    int rc = uv_tcp_connect(&c->connect, &c->tcp, res->ai_addr, on_connected);
    uv_freeaddrinfo(res);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
        finish(c, 0, HD_HOOKS_FAIL_CONNECT, why, 0);
    }
}

static void conn_start(hk_pool_t *p, hk_request_t *req)
{
    hk_conn_t *c = hd_calloc(1, sizeof(*c));
    const hk_client_conf_t *cc = p->cc;
    c->pool = p;
    c->req = req;
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
    hd_list_init(&p->idle);
    hd_list_init(&p->busy);
    return p;
}

void hk_pool_send(hk_pool_t *p, hk_request_t *req)
{
    HD_ASSERT(!p->is_closing);
    if (!hd_list_empty(&p->idle)) {
        /* the connection idle the shortest time: the fewest are kept busy, and those idle
         * longest reach IDLE_TIMEOUT_MS and close when the rate drops */
        hk_conn_t *c = hd_container_of(p->idle.prev, hk_conn_t, link);
        hd_list_remove(&c->link);
        hd_list_insert_tail(&p->busy, &c->link);
        uv_timer_stop(&c->timer);
        c->req = req;
        send_request(c);
        return;
    }
    conn_start(p, req);
}

void hk_pool_close(hk_pool_t *p)
{
    p->is_closing = 1;
    hd_list_t *lists[2] = {&p->idle, &p->busy};
    for (int i = 0; i < 2; i++) {
        while (!hd_list_empty(lists[i])) {
            hk_conn_t *c = hd_container_of(lists[i]->next, hk_conn_t, link);
            c->req = NULL;
            conn_close(c);
        }
    }
    if (p->n_conns == 0)
        free(p);
}

size_t hk_pool_conns(const hk_pool_t *p)
{
    return p->n_conns;
}
