/* SPDX-License-Identifier: MIT */
/*
 * h2sub.c: SSE subscribers carried as streams of HTTP/2 connections (--h2-streams K), with
 * nghttp2's client API (the library herald serves HTTP/2 with). A connection opens with the
 * connection preface on plain TCP (h2c, prior knowledge) or, to an https:// URL, after TLS
 * agreed on "h2" by ALPN (as a browser's does), and carries up to K subscribers, one
 * GET /sse/CH stream each; each stream's DATA goes to its subscriber as an HTTP/1.1 body would
 * (sub.c: lines, payloads, sequences), its 200 marks it subscribed, and its end (or the
 * connection's) ends it. Windows are opened wide (a browser's are megabytes), so flow control
 * costs herald a WINDOW_UPDATE now and then, not one per event.
 */
#include "sub.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW   (16 << 20)

typedef struct h2conn_s {
    bconn_t bc; /* first: a bconn_t * is an h2conn_t * */
    nghttp2_session *session;
    const opts_t *o;
    const target_t *tg;
    sub_t *subs;
    uint32_t n;
} h2conn_t;

/* Writes what the session has to send, in one write. */
static void pump_out(h2conn_t *h)
{
    char stack[16384], *out = stack;
    size_t len = 0, cap = sizeof(stack);
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h->session, &p)) > 0) {
        if (len + (size_t)n > cap) {
            size_t ncap = (len + (size_t)n) * 2;
            char *grown = malloc(ncap);
            memcpy(grown, out, len);
            if (out != stack)
                free(out);
            out = grown;
            cap = ncap;
        }
        memcpy(out + len, p, (size_t)n);
        len += (size_t)n;
    }
    if (len)
        bconn_write(&h->bc, out, len);
    if (out != stack)
        free(out);
    if (n < 0)
        bconn_close(&h->bc, CE_OTHER);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    sub_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s && valuelen == 3)
        s->status = (uint16_t)((value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0'));
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_RESPONSE)
        return 0;
    sub_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s || s->bc.is_ready)
        return 0;
    if (s->status == 200) {
        sub_stream_ready(s);
        return 0;
    }
    /* refused: the stream ends (on_stream_close tells sub.c with the status) */
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    sub_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s && s->bc.is_ready)
        sub_stream_data(s, (const char *)data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)error_code;
    (void)user_data;
    sub_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    if (s->bc.is_ready)
        sub_stream_closed(s, CE_CLOSED, 0);
    else
        sub_stream_closed(s, s->status ? CE_HTTP : CE_RESET, s->status);
    return 0;
}

/* Opens a stream per subscriber once the connection is up. */
static void on_connect(bconn_t *c)
{
    h2conn_t *h = (h2conn_t *)c;
    const opts_t *o = h->o;
    if (h->tg->is_tls && !bconn_alpn_is(c, "h2")) {
        bconn_close(c, CE_TLS); /* the server did not agree on HTTP/2 */
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, HD_ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    /* --token: "Authorization: Bearer T\r\n" as a field */
    const char *auth = o->sub_auth[0] ? strchr(o->sub_auth, ':') : NULL;
    size_t auth_len = 0;
    if (auth) {
        auth += 2;
        auth_len = strlen(auth) - 2;
    }
    const char *scheme = h->tg->is_tls ? "https" : "http";
    for (uint32_t i = 0; i < h->n; i++) {
        sub_t *s = &h->subs[i];
        char path[16 + HD_CHANNEL_MAX + 1];
        memcpy(path, "/sse/", 5);
        chan_name(o, s->ch, path + 5, sizeof(path) - 5);
        nghttp2_nv nv[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme), NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":authority", (uint8_t *)h->tg->host, 10, strlen(h->tg->host),
             NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"accept", (uint8_t *)"text/event-stream", 6, 17, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"authorization", (uint8_t *)auth, 13, auth_len, NGHTTP2_NV_FLAG_NONE},
        };
        int32_t id =
            nghttp2_submit_request(h->session, NULL, nv, HD_ARRAY_SIZE(nv) - !auth, NULL, s);
        if (id < 0)
            sub_stream_closed(s, CE_OTHER, 0);
    }
    pump_out(h);
}

static void on_data(bconn_t *c, const char *p, size_t n)
{
    h2conn_t *h = (h2conn_t *)c;
    if (nghttp2_session_mem_recv(h->session, (const uint8_t *)p, n) < 0) {
        bconn_close(c, CE_OTHER);
        return;
    }
    if (!c->is_closing)
        pump_out(h);
}

/* The connection ended: every stream still open ends with it. */
static void on_closed(bconn_t *c, int cause, int after_ready)
{
    (void)after_ready;
    h2conn_t *h = (h2conn_t *)c;
    for (uint32_t i = 0; i < h->n; i++) {
        sub_t *s = &h->subs[i];
        if (s->state != S_DEAD)
            sub_stream_closed(s, cause >= 0 ? cause : CE_CLOSED, 0);
    }
    nghttp2_session_del(h->session);
    free(h);
}

static const bconn_ops_t h2_ops = {on_connect, on_data, on_closed};

int h2_connect(uv_loop_t *loop, const opts_t *o, const target_t *tg, uint32_t src, sub_t *subs,
               uint32_t n)
{
    nghttp2_session_callbacks *cb;
    h2conn_t *h = calloc(1, sizeof(*h));
    h->o = o;
    h->tg = tg;
    h->subs = subs;
    h->n = n;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        free(h);
        return CE_OTHER;
    }
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_client_new(&h->session, cb, h);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        free(h);
        return CE_OTHER;
    }
    rc = bconn_connect_alpn(&h->bc, loop, tg, src, &h2_ops, 0, tg->is_tls ? "h2" : NULL);
    if (rc != 0) {
        nghttp2_session_del(h->session);
        free(h);
    }
    return rc;
}
