/* SPDX-License-Identifier: MIT */
/*
 * conn.c: one client connection of herald-bench. It owns the socket set-up (a loopback source
 * address chosen by the caller, bound before connect with IP_BIND_ADDRESS_NO_PORT so the kernel
 * picks the port per destination: about 28k ports per source address), TLS for wss:// and
 * https:// over memory BIOs (no certificate verification: the bench measures, it does not
 * authenticate), and writes (uv_try_write first, a copied uv_write for the rest). Reads go
 * through one static buffer per process: an idle connection costs the bench no read buffer.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

const char *const ce_names[CE_COUNT] = {
#define CE_NAME(n, s) s,
    CE_MAP(CE_NAME)
#undef CE_NAME
};

int ce_from_uv(int err)
{
    switch (err) {
    case UV_ECONNREFUSED:
        return CE_REFUSED;
    case UV_ETIMEDOUT:
        return CE_TIMEOUT;
    case UV_ECONNRESET:
    case UV_EPIPE:
        return CE_RESET;
    case UV_EOF:
        return CE_CLOSED;
    case UV_EADDRNOTAVAIL:
    case UV_EADDRINUSE:
        return CE_PORTS;
    case UV_EMFILE:
    case UV_ENFILE:
    case UV_ENOBUFS:
        return CE_FILES;
    default:
        return CE_OTHER;
    }
}

static SSL_CTX *ssl_ctx;
static char read_buf[65536];
static char plain_buf[65536];

typedef struct wreq_s {
    uv_write_t req;
    bconn_t *c;
    char data[];
} wreq_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    w->c->pending_writes--;
    if (status < 0 && status != UV_ECANCELED)
        bconn_close(w->c, ce_from_uv(status));
    free(w);
}

static void raw_write(bconn_t *c, const char *p, size_t n)
{
    if (c->is_closing || n == 0)
        return;
    if (c->pending_writes == 0) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r == (int)n)
            return;
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r != UV_EAGAIN) {
            bconn_close(c, ce_from_uv(r));
            return;
        }
    }
    wreq_t *w = malloc(sizeof(*w) + n);
    w->c = c;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    c->pending_writes++;
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (r < 0) {
        c->pending_writes--;
        free(w);
        bconn_close(c, ce_from_uv(r));
    }
}

/* Sends whatever TLS has produced. */
static void tls_flush(bconn_t *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    int n;
    while ((n = BIO_read(wbio, plain_buf, sizeof(plain_buf))) > 0)
        raw_write(c, plain_buf, (size_t)n);
}

static void tls_input(bconn_t *c, const char *p, size_t n)
{
    SSL *ssl = c->ssl;
    BIO_write(SSL_get_rbio(ssl), p, (int)n);
    if (!c->is_up) {
        int r = SSL_do_handshake(ssl);
        tls_flush(c);
        if (r != 1) {
            int e = SSL_get_error(ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                bconn_close(c, CE_TLS);
            return;
        }
        c->is_up = 1;
        c->ops->on_connect(c);
    }
    while (!c->is_closing) {
        int r = SSL_read(ssl, plain_buf, sizeof(plain_buf));
        if (r <= 0) {
            int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                bconn_close(c, CE_CLOSED);
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                bconn_close(c, CE_TLS);
            break;
        }
        c->ops->on_data(c, plain_buf, (size_t)r);
    }
    if (!c->is_closing)
        tls_flush(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    bconn_t *c = (bconn_t *)s;
    if (n < 0) {
        bconn_close(c, ce_from_uv((int)n));
        return;
    }
    if (n == 0)
        return;
    if (c->ssl)
        tls_input(c, buf->base, (size_t)n);
    else
        c->ops->on_data(c, buf->base, (size_t)n);
}

static void on_connected(uv_connect_t *req, int status)
{
    bconn_t *c = hd_container_of(req, bconn_t, creq);
    if (c->is_closing)
        return;
    if (status < 0) {
        bconn_close(c, ce_from_uv(status));
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->ssl) {
        SSL_do_handshake(c->ssl);
        tls_flush(c);
        return;
    }
    c->is_up = 1;
    c->ops->on_connect(c);
}

int bconn_connect(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                  const bconn_ops_t *ops)
{
    return bconn_connect_rcvbuf(c, loop, tg, src, ops, 0);
}

int bconn_connect_rcvbuf(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                         const bconn_ops_t *ops, int rcvbuf)
{
    return bconn_connect_alpn(c, loop, tg, src, ops, rcvbuf, NULL);
}

int bconn_connect_alpn(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                       const bconn_ops_t *ops, int rcvbuf, const char *alpn)
{
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->cause = -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno == EMFILE || errno == ENFILE ? CE_FILES : CE_OTHER;
    if (rcvbuf > 0) /* before connecting: the window offered in the handshake follows it */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (tg->is_loopback) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        /* 127.1.x.y: loopback, and never the server's own 127.0.0.1 */
        sa.sin_addr.s_addr = htonl(0x7f010001u + (src / 250) * 256 + src % 250);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            int e = errno;
            close(fd);
            return e == EADDRNOTAVAIL || e == EADDRINUSE ? CE_PORTS : CE_OTHER;
        }
    }
    uv_tcp_init(loop, &c->tcp);
    c->is_open = 1;
    int r = uv_tcp_open(&c->tcp, fd);
    if (r == 0)
        r = uv_tcp_nodelay(&c->tcp, 1);
    if (tg->is_tls) {
        if (!ssl_ctx) {
            ssl_ctx = SSL_CTX_new(TLS_client_method());
            SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
        }
        SSL *ssl = SSL_new(ssl_ctx);
        SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(ssl);
        SSL_set_tlsext_host_name(ssl, tg->sni);
        if (alpn) {
            /* the wire form: each protocol's name after its length byte */
            unsigned char wire[64];
            size_t n = strlen(alpn);
            if (n > 0 && n < sizeof(wire)) {
                wire[0] = (unsigned char)n;
                memcpy(wire + 1, alpn, n);
                SSL_set_alpn_protos(ssl, wire, (unsigned)n + 1);
            }
        }
        c->ssl = ssl;
    }
    if (r == 0)
        r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&tg->addr, on_connected);
    if (r < 0) {
        /* the handle is initialised: report through the close callback like any other failure */
        bconn_close(c, ce_from_uv(r));
    }
    return 0;
}

void bconn_write(bconn_t *c, const char *p, size_t n)
{
    if (c->is_closing)
        return;
    if (c->ssl) {
        SSL_write(c->ssl, p, (int)n);
        tls_flush(c);
        return;
    }
    raw_write(c, p, n);
}

static void on_tcp_closed(uv_handle_t *h)
{
    bconn_t *c = (bconn_t *)h;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    c->is_open = 0;
    c->ops->on_closed(c, c->cause, c->is_ready);
}

void bconn_close(bconn_t *c, int cause)
{
    if (c->is_closing || !c->is_open)
        return;
    c->is_closing = 1;
    c->cause = cause;
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

void bconn_read_pause(bconn_t *c)
{
    if (c->is_up && !c->is_closing)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

void bconn_read_resume(bconn_t *c)
{
    if (c->is_up && !c->is_closing)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int bconn_alpn_is(const bconn_t *c, const char *proto)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    if (!c->ssl)
        return 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    return p && n == strlen(proto) && memcmp(p, proto, n) == 0;
}

uint64_t bconn_pending(const bconn_t *c)
{
    return c->pending_writes;
}
