/* SPDX-License-Identifier: MIT */
/*
 * presence.c (API): GET /presence/{channel}?cursor=..&limit=N, a page of the channel's presence
 * members for backends (docs/chat.md), and GET /presence/{channel}?member=KEY&cursor=..&limit=N,
 * a page of one member's connections; guarded as the other admin endpoints are (access.c).
 */
#include "herald/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct page_ctx_s {
    hd_deferred_t *d;
} page_ctx_t;

static void page_abort(hd_deferred_t *d)
{
    ((page_ctx_t *)d->data)->d = NULL;
}

static void on_page(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    page_ctx_t *ctx = r->cookie;
    if (ctx->d && r->err) {
        hd_tp_respond_failure(ctx->d->req, r->err);
    } else if (ctx->d) {
        hd_sbuf_t sb;
        hd_sbuf_init(&sb, 96 + (r->page ? strlen(r->page) : 0));
        if (r->member_key)
            hd_sbuf_appendf(&sb, "{\"channel\":\"%s\",\"conn_count\":%llu,%s}", r->channel,
                            (unsigned long long)r->members,
                            r->page ? r->page : "\"member\":null,\"conns\":[],\"next\":null");
        else
            hd_sbuf_appendf(&sb, "{\"channel\":\"%s\",\"count\":%llu,%s}", r->channel,
                            (unsigned long long)r->members,
                            r->page ? r->page : "\"members\":[],\"next\":null");
        hd_http_respond(ctx->d->req, 200, "Cache-Control: no-store\r\n", "application/json",
                        sb.buf->data, sb.buf->len);
        hd_sbuf_dispose(&sb);
    }
    free(ctx);
    hd_breq_free(r);
}

static void on_presence(hd_req_t *req, void *arg)
{
    (void)arg;
    char channel[HD_CHANNEL_MAX + 1];
    int n = hd_tp_channel_from_path(req, 10, channel);
    if (n < 0)
        return;
    if (!hd_auth_presence(hd_worker_conf(req->conn->worker)->auth, channel, (size_t)n)) {
        hd_http_respond_error(req, 404,
                              "presence is not tracked on this channel (its channel_rule needs "
                              "presence=on)");
        return;
    }
    char v[512];
    long limit = HD_PRESENCE_PAGE_DEFAULT;
    if (hd_req_query(req, "limit", v, sizeof(v)) >= 0) {
        char *end;
        limit = strtol(v, &end, 10);
        if (!v[0] || *end || limit < 1 || limit > HD_PRESENCE_PAGE_MAX) {
            hd_http_respond_error(req, 400, "limit must be 1-1000");
            return;
        }
    }
    char key[512];
    int klen = hd_req_query(req, "member", key, sizeof(key));
    if (klen == 0 || klen > HD_AUTH_MAX_SUB) {
        hd_http_respond_error(req, 400,
                              "member must be a member's key (its sub, or an anonymous member's "
                              "conn), 1-255 bytes");
        return;
    }
    int clen = hd_req_query(req, "cursor", v, sizeof(v));
    hd_breq_t *r = hd_breq_new(HD_BREQ_PRESENCE, req->conn->worker, channel, (size_t)n);
    if (clen > 0)
        r->cursor = hd_strndup(v, (size_t)clen);
    if (klen > 0)
        r->member_key = hd_strndup(key, (size_t)klen);
    r->limit = (size_t)limit;
    page_ctx_t *ctx = hd_calloc(1, sizeof(*ctx));
    r->cookie = ctx;
    r->reply_cb = on_page;
    ctx->d = hd_http_defer(req);
    ctx->d->data = ctx;
    ctx->d->on_abort = page_abort;
    hd_broker_submit(r);
}

void hd_presence_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/presence/", 1, on_presence, NULL);
}
