/* SPDX-License-Identifier: MIT */
/*
 * h2.c: the HTTP/2 connection handler (RFC 9113, nghttp2). A connection becomes HTTP/2 when
 * TLS agreed on "h2" by ALPN or when a cleartext client opens with the connection preface
 * (prior knowledge, h2c); http.c decides on the first bytes and hands it here. This file is the
 * connection: its session, the input fed to nghttp2, the output produced under the bounds
 * below, timeouts, shutdown and close; what nghttp2 reports of the streams is h2_stream.c's.
 *
 * Each stream a client opens is a stream connection (hd_conn_stream_new) carrying one request:
 * its head and body are collected as for HTTP/1.1 (the same hd_http_t, the same limits), then
 * dispatched to the same guard and router, so handlers and transports serve it without knowing
 * the version. A response ends the stream; a transport that takes it over (SSE, a held long
 * poll) writes on the stream connection as it writes on a socket, and h2_out.c frames that as
 * DATA within the stream's flow-control window.
 *
 *   socket conn (h2_conn_ops) --mem_recv--> nghttp2 --callbacks--> stream conns (h2_req_ops,
 *     then a transport's ops) --queue--> h2_out.c --DATA--> socket conn
 *
 * Limits: SETTINGS_MAX_CONCURRENT_STREAMS (http2_max_streams; nghttp2 refuses more), the
 * request head (max_url_size: 414, max_header_size and 100 fields: 431), the body
 * (max_body_size: 413), body_timeout (408), header_timeout for a head split across frames and
 * for a new connection's first request, keepalive_timeout once no stream is open; the output
 * of all streams (http2_max_queue_bytes: the stream holding most is reset, counted), and
 * RST_STREAM from the client (http2_reset_rate: nghttp2 ends the connection with GOAWAY
 * ENHANCE_YOUR_CALM past it, against rapid reset, CVE-2023-44487). nghttp2 also bounds
 * SETTINGS, PING and CONTINUATION floods.
 */
#include "internal.h"

/* Resets the streams holding most output until the connection's total is within its bound. */
static void bound_output(hd_h2_t *h2)
{
    if (h2->streams_out <= h2->max_queue_bytes)
        return; /* the usual case: no walk of the streams */
    for (;;) {
        size_t total = 0, most = 0;
        hd_h2_stream_t *worst = NULL;
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &h2->streams)
        {
            hd_h2_stream_t *s = hd_container_of(pos, hd_h2_stream_t, link);
            size_t q = s->conn ? hd_conn_queued_bytes(s->conn) : 0;
            total += q;
            if (q > most) {
                most = q;
                worst = s;
            }
        }
        if (total <= h2->max_queue_bytes || !worst)
            return;
        HD_STAT_INC(h2->conn->worker, h2_streams_reset);
        hd_conn_log(HD_LOG_INFO, worst->conn,
                    "HTTP/2 stream %d reset: %zu bytes waiting on the connection "
                    "(http2_max_queue_bytes), %zu of them on it",
                    (int)worst->id, total, most);
        hd_conn_close(worst->conn);
    }
}

/* Frames what the streams have, while the socket's queue is short; ends the connection when
 * the session has nothing more to do. */
static void produce(hd_h2_t *h2)
{
    hd_conn_t *c = h2->conn;
    if (c->is_closing || c->is_finishing)
        return;
    hd_h2_enter(h2);
    if (h2->n_in_ready)
        hd_h2_deliver_held(h2);
    if (h2->is_dead) {
        hd_h2_leave(h2);
        return;
    }
    bound_output(h2);
    int rc = nghttp2_session_send(h2->session);
    if (!h2->is_dead)
        hd_h2_out_flush(h2);
    while (h2->drained && !h2->is_dead) {
        hd_h2_stream_t *s = h2->drained;
        h2->drained = s->next_drained;
        s->is_drained = 0;
        if (s->conn)
            hd_conn_stream_drained(s->conn); /* may queue more: on_output asks for a flush */
    }
    if (hd_h2_leave(h2))
        return;
    if (c->is_closing || c->is_finishing)
        return;
    if (rc != 0) {
        hd_conn_log(HD_LOG_INFO, c, "HTTP/2 send failed: %s", nghttp2_strerror(rc));
        hd_conn_close(c);
        return;
    }
    int want_write = nghttp2_session_want_write(h2->session);
    if ((!nghttp2_session_want_read(h2->session) && !want_write) ||
        (h2->is_draining && h2->n_streams == 0 && !want_write)) {
        hd_conn_finish(c);
        return;
    }
    if (hd_conn_queued_bytes(c) <= HD_H2_OUT_HIGH)
        hd_conn_read_start(c);
}

static void h2_on_data(hd_conn_t *c, const char *data, size_t len)
{
    hd_h2_t *h2 = c->data;
    hd_h2_enter(h2);
    ssize_t rc = nghttp2_session_mem_recv(h2->session, (const uint8_t *)data, len);
    if (hd_h2_leave(h2) || c->is_closing)
        return;
    if (rc < 0) {
        hd_conn_log(HD_LOG_INFO, c, "HTTP/2 input refused: %s", nghttp2_strerror((int)rc));
        if (rc == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            hd_conn_close(c);
            return;
        }
        HD_STAT_INC(c->worker, h2_errors);
        hd_h2_enter(h2);
        nghttp2_session_terminate_session(h2->session, NGHTTP2_PROTOCOL_ERROR);
        if (hd_h2_leave(h2))
            return;
    }
    hd_conn_want_flush(c);
    /* Output backpressure, as HTTP/1.1 pipelining: a client that does not read its
     * responses is not read either. */
    if (hd_conn_queued_bytes(c) > HD_H2_OUT_HIGH)
        hd_conn_read_stop(c);
}

static void h2_on_flush(hd_conn_t *c)
{
    produce(c->data);
}

static void h2_on_drain(hd_conn_t *c)
{
    hd_h2_t *h2 = c->data;
    c->is_flush_wanted = 0;
    produce(h2);
}

static void h2_on_eof(hd_conn_t *c)
{
    hd_conn_close(c); /* every stream with it */
}

static void h2_on_timeout(hd_conn_t *c)
{
    hd_h2_t *h2 = c->data;
    if (h2->n_streams > 0)
        return;
    HD_STAT_INC(c->worker, timeouts);
    hd_h2_enter(h2);
    nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
    if (hd_h2_leave(h2))
        return;
    h2->is_draining = 1;
    hd_conn_want_flush(c);
}

static void h2_on_shutdown(hd_conn_t *c)
{
    hd_h2_t *h2 = c->data;
    /* The streams hear it themselves (they are connections too); this one says no more. */
    h2->is_draining = 1;
    hd_h2_enter(h2);
    nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h2->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    if (hd_h2_leave(h2))
        return;
    hd_conn_want_flush(c);
}

static void h2_on_close(hd_conn_t *c)
{
    hd_h2_t *h2 = c->data;
    while (!hd_list_empty(&h2->streams)) {
        hd_h2_stream_t *s = hd_container_of(h2->streams.next, hd_h2_stream_t, link);
        if (s->conn) {
            hd_conn_t *sc = s->conn;
            sc->carrier = NULL;
            s->conn = NULL;
            hd_conn_close(sc);
        }
        nghttp2_session_set_stream_user_data(h2->session, s->id, NULL);
        hd_h2_stream_free(s);
    }
    h2->drained = NULL;
    h2->n_streams = 0;
    h2->n_in_ready = 0;
    h2->streams_out = 0;
    if (h2->depth > 0) {
        h2->is_dead = 1; /* freed when the nghttp2 call under way returns */
        return;
    }
    hd_h2_destroy(h2);
}

static const hd_conn_ops_t h2_conn_ops = {
    .name = "h2",
    .on_data = h2_on_data,
    .on_eof = h2_on_eof,
    .on_timeout = h2_on_timeout,
    .on_drain = h2_on_drain,
    .on_shutdown = h2_on_shutdown,
    .on_close = h2_on_close,
    .on_flush = h2_on_flush,
};

static int new_session(hd_h2_t *h2, const hd_conf_t *conf)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    hd_h2_session_callbacks(cb); /* h2_stream.c */
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Flow control follows what herald uses (on_data_chunk): a stream that does not read
     * stops its client at its window, as a socket herald does not read stops TCP. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* herald counts resets of open streams itself (on_frame_recv: ENHANCE_YOUR_CALM, logged);
     * nghttp2 counts every RST_STREAM, also those of streams already closed, which cost
     * nothing: its limit (INTERNAL_ERROR) stays as a backstop well above herald's. */
    uint64_t rate = conf->http2_reset_rate;
    nghttp2_option_set_stream_reset_rate_limit(opt, rate * 100 > 1000 ? rate * 100 : 1000,
                                               rate * 10);
    /* Response heads are encoded without HPACK's dynamic table (as nginx does): otherwise each
     * connection keeps up to 4 KiB of past fields (a Date a second) for its life, which a
     * long-lived connection of a few streams pays in full, for some bytes of each head. */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_mem mem;
    hd_h2_mem_init(h2, &mem); /* nghttp2 copies it */
    int rc = nghttp2_session_server_new3(&h2->session, cb, h2, opt, &mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, conf->http2_max_streams},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* WebSockets over streams */
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)(conf->max_url_bytes + conf->max_header_bytes)},
    };
    return nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, HD_ARRAY_SIZE(iv));
}

void hd_h2_accept(hd_conn_t *c, const char *data, size_t len)
{
    const hd_conf_t *conf = hd_worker_conf(c->worker);
    hd_h2_t *h2 = hd_calloc(1, sizeof(*h2));
    h2->conn = c;
    hd_list_init(&h2->streams);
    hd_bucket_init(&h2->pub_bucket);
    hd_bucket_init(&h2->reset_bucket);
    h2->reset_rate = conf->http2_reset_rate;
    h2->max_queue_bytes = conf->http2_max_queue_bytes;
    if (new_session(h2, conf) != 0) {
        if (h2->session)
            nghttp2_session_del(h2->session);
        free(h2);
        hd_conn_close(c);
        return;
    }
    HD_STAT_INC(c->worker, h2_conns);
    hd_conn_set_handler(c, &h2_conn_ops, h2);
    /* The first request must come as an HTTP/1.1 head must: within header_timeout. */
    hd_conn_set_timeout(c, conf->header_timeout_ms);
    hd_conn_read_start(c);
    if (len)
        h2_on_data(c, data, len);
    else
        hd_conn_want_flush(c); /* our SETTINGS go first */
}
