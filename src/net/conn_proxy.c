/* SPDX-License-Identifier: MIT */
/*
 * conn_proxy.c: a connection on a proxy_protocol listener waits for the PROXY protocol header
 * (v1 or v2, parsed by proxy_proto.c) before anything else, TLS included: the header is read in
 * clear (the handler's on_clear_data), the connection takes the client it names, and the rest
 * goes to the protocol the caller installs (hd_conn_expect_proxy, conn_layer.h).
 */
#include "herald/conn.h"
#include "herald/proxy_proto.h"
#include "herald/worker.h"
#include "conn_layer.h"
#include "conn_priv.h"

#include <stdlib.h>
#include <string.h>

/*
 * While a PROXY header is awaited, the connection's handler is proxy_ops and its state holds
 * what arrived of the header when it came in pieces (at most HD_PROXY_MAX bytes, allocated only
 * then: a header read whole in one go, the usual case, is parsed in the read buffer).
 */
typedef struct proxy_wait_s {
    hd_conn_ready_cb ready_cb;
    char *buf;
    size_t len;
} proxy_wait_t;

static void proxy_refuse(hd_conn_t *c, const char *why)
{
    HD_STAT_INC(c->worker, proxy_malformed);
    hd_conn_log(HD_LOG_INFO, c, "PROXY protocol header refused: %s", why ? why : "?");
    hd_conn_close(c);
}

/*
 * The header is complete: the connection takes the client it names and is handed to the
 * caller of hd_conn_expect_proxy; what came after the header (the ClientHello, the request)
 * then goes the usual way, [a, a + alen) first, then [b, b + blen).
 */
static void proxy_done(hd_conn_t *c, const hd_proxy_hdr_t *hdr, const char *a, size_t alen,
                       const char *b, size_t blen)
{
    proxy_wait_t *pw = c->data;
    hd_conn_ready_cb ready_cb = pw->ready_cb;
    char *held = pw->buf;
    pw->buf = NULL; /* a may point into it: freed below */
    if (!hdr->is_local)
        c->client = hdr->src;
    hd_conn_set_timeout(c, 0);
    hd_conn_remove_handler_(
        c);      /* frees pw; the handler is the lingering one until ready_cb installs */
    ready_cb(c); /* installs the protocol, or refuses the client */
    if (alen && !c->is_closing && !c->is_finishing && c->ops && c->ops->on_data)
        hd_conn_deliver_(c, a, alen);
    if (blen && !c->is_closing && !c->is_finishing && c->ops && c->ops->on_data)
        hd_conn_deliver_(c, b, blen);
    free(held);
}

static void proxy_read(hd_conn_t *c, const char *data, size_t len)
{
    proxy_wait_t *pw = c->data;
    hd_proxy_hdr_t hdr;
    const char *why = NULL;
    int rc;
    if (pw->len == 0) {
        rc = hd_proxy_parse(data, len, &hdr, &why);
        if (rc > 0) {
            proxy_done(c, &hdr, data + rc, len - (size_t)rc, NULL, 0);
            return;
        }
        if (rc == 0) {
            /* Incomplete, so shorter than HD_PROXY_MAX: keep it for the next read. */
            pw->buf = hd_malloc(len);
            memcpy(pw->buf, data, len);
            pw->len = len;
            return;
        }
        proxy_refuse(c, why);
        return;
    }
    size_t take = len < HD_PROXY_MAX - pw->len ? len : HD_PROXY_MAX - pw->len;
    pw->buf = hd_realloc(pw->buf, pw->len + take);
    memcpy(pw->buf + pw->len, data, take);
    pw->len += take;
    rc = hd_proxy_parse(pw->buf, pw->len, &hdr, &why);
    if (rc > 0) {
        proxy_done(c, &hdr, pw->buf + rc, pw->len - (size_t)rc, data + take, len - take);
        return;
    }
    if (rc < 0 || pw->len >= HD_PROXY_MAX)
        proxy_refuse(c, why ? why : "header longer than herald accepts");
}

static void proxy_on_timeout(hd_conn_t *c)
{
    HD_STAT_INC(c->worker, proxy_timeouts);
    HD_STAT_INC(c->worker, timeouts);
    hd_conn_log(HD_LOG_INFO, c, "PROXY protocol header not received within header_timeout");
    hd_conn_close(c);
}

static void proxy_on_close(hd_conn_t *c)
{
    proxy_wait_t *pw = c->data;
    free(pw->buf);
    free(pw);
}

static const hd_conn_ops_t proxy_ops = {
    .name = "proxy",
    .on_clear_data = proxy_read,
    .on_timeout = proxy_on_timeout,
    .on_close = proxy_on_close,
};

void hd_conn_expect_proxy(hd_conn_t *c, uint64_t timeout_ms, hd_conn_ready_cb ready_cb)
{
    proxy_wait_t *pw = hd_calloc(1, sizeof(*pw));
    pw->ready_cb = ready_cb;
    hd_conn_set_handler(c, &proxy_ops, pw);
    hd_conn_set_timeout(c, timeout_ms);
    hd_conn_read_start(c);
}
