/* SPDX-License-Identifier: MIT */
/*
 * h2_stream.c: the streams of an HTTP/2 connection, as nghttp2 reports what arrives (its
 * callbacks, installed by hd_h2_session_callbacks): a stream opened as a stream connection
 * (hd_conn_stream_new) whose handler is its request (h2_req_ops) until it is answered or taken
 * over, the head (fields and pseudo-fields into the same hd_http_t and under the same limits as
 * HTTP/1.1) and the body collected, the request dispatched, DATA held for a stream that does
 * not read it and delivered when it reads again, resets counted (http2_reset_rate), and the
 * stream closed and freed. h2.c, the connection, calls in; nothing here calls h2.c (entering
 * and leaving nghttp2 calls and the connection's freeing are inline in internal.h).
 */
#include "internal.h"

#include <string.h>
#include <strings.h>

void hd_h2_stream_free(hd_h2_stream_t *s)
{
    hd_h2_t *h2 = s->h2;
    hd_list_remove(&s->link);
    if (s->in_len)
        hd_h2_release_held(h2, s->in_len); /* never read: dropped */
    if (s->is_in_ready)
        h2->n_in_ready--;
    free(s->in);
    hd_conn_carrier_release(&s->carrier); /* allocated with its stream connection */
}

/* ---- a stream's request, until it is answered or taken over ---- */

static const hd_conn_ops_t h2_req_ops;

/* The stream's request while it is the stream connection's handler (it is being received or
 * handled), else NULL. A handler being removed is no longer installed (conn.c installs the
 * lingering one before on_close). */
static hd_http_t *http_of(const hd_h2_stream_t *s)
{
    hd_conn_t *c = s->conn;
    return c && c->ops == &h2_req_ops ? c->data : NULL;
}

static void req_on_data(hd_conn_t *c, const char *data, size_t len)
{
    (void)c; /* the body comes through on_data_chunk_recv */
    (void)data;
    (void)len;
}

static void req_on_timeout(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    hd_h2_stream_t *s = h->h2s;
    if (h->deferred && h->deferred->on_timeout) {
        h->deferred->on_timeout(h->deferred);
        return;
    }
    HD_STAT_INC(c->worker, timeouts);
    if (h->phase == PHASE_HEAD) {
        /* A head split across frames that never completes holds the whole connection (no
         * other frame may come in between): end it. */
        hd_conn_log(HD_LOG_INFO, c, "header timeout");
        hd_h2_enter(s->h2);
        nghttp2_session_terminate_session(s->h2->session, NGHTTP2_PROTOCOL_ERROR);
        hd_conn_want_flush(s->h2->conn);
        hd_h2_leave(s->h2);
        return;
    }
    if (h->phase == PHASE_BODY) {
        hd_conn_log(HD_LOG_INFO, c, "body timeout");
        hd_http_build_request(h);
        hd_http_respond_error(&h->req, 408, "body timeout");
        return;
    }
    hd_conn_close(c);
}

static void req_on_shutdown(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    /* A held request (long poll) is answered now so its client re-polls elsewhere; one still
     * arriving is left to finish (the connection's GOAWAY lets it). */
    if (h->deferred && h->deferred->on_timeout)
        h->deferred->on_timeout(h->deferred);
}

static void req_on_close(hd_conn_t *c)
{
    hd_http_free(c->data);
}

/* An operator's order (conn.h hd_kick_t): a held request (a long poll, a stream still
 * subscribing) answers it, as on HTTP/1.1. */
static int req_on_kick(hd_conn_t *c, const hd_kick_t *k)
{
    hd_http_t *h = c->data;
    if (h->deferred && h->deferred->on_kick)
        return h->deferred->on_kick(h->deferred, k);
    return 0;
}

static const hd_conn_ops_t h2_req_ops = {
    .name = "h2",
    .on_data = req_on_data,
    .on_timeout = req_on_timeout,
    .on_shutdown = req_on_shutdown,
    .on_close = req_on_close,
    .on_kick = req_on_kick,
};

/* A stream carries one request: nothing is pipelined behind it. */
static void answered(hd_http_t *h)
{
    (void)h;
}

static hd_h2_stream_t *stream_of(hd_h2_t *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2->session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    hd_h2_t *h2 = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    hd_conn_t *pc = h2->conn;
    if (h2->is_dead || pc->is_closing || pc->is_finishing)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* the connection went: no stream outlives it */
    /* The stream's state and its stream connection are one allocation (conn.h). */
    hd_conn_t *sc = hd_conn_stream_new(pc, &hd_h2_carrier_ops, sizeof(hd_h2_stream_t));
    hd_h2_stream_t *s = (hd_h2_stream_t *)sc->carrier;
    s->h2 = h2;
    s->id = frame->hd.stream_id;
    hd_list_insert_tail(&h2->streams, &s->link);
    s->conn = sc;
    hd_http_t *h = hd_http_new(s->conn);
    h->h2s = s;
    h->is_h2_decided = 1;
    h->phase = PHASE_HEAD;
    h->start_ms = uv_now(&pc->worker->loop);
    h->on_answered = answered;
    hd_conn_set_handler(s->conn, &h2_req_ops, h);
    hd_conn_set_timeout(s->conn, conf_of(h)->header_timeout_ms);
    nghttp2_session_set_stream_user_data(session, s->id, s);
    if (h2->n_streams++ == 0)
        hd_conn_set_timeout(pc, 0); /* not idle */
    HD_STAT_INC(pc->worker, h2_streams);
    return 0;
}

static const struct {
    const char *name;
    llhttp_method_t method;
} methods[] = {{"GET", HTTP_GET},     {"HEAD", HTTP_HEAD},      {"POST", HTTP_POST},
               {"PUT", HTTP_PUT},     {"DELETE", HTTP_DELETE},  {"OPTIONS", HTTP_OPTIONS},
               {"PATCH", HTTP_PATCH}, {"CONNECT", HTTP_CONNECT}};

/* A refusal found while the head arrives, answered once it is complete. */
static void refuse(hd_http_t *h, int status, const char *msg)
{
    if (!h->error) {
        h->error = status;
        h->error_msg = msg;
    }
}

/* Appends a field to the request head (n_hdrs < MAX_HEADERS; the caller checked the size). */
static void append_field(hd_http_t *h, const char *name, size_t name_len, const char *value,
                         size_t value_len)
{
    hdr_off_t *o = hd_http_next_hdr(h);
    h->n_hdrs++;
    o->name_off = (uint32_t)h->head_len;
    o->name_len = (uint32_t)name_len;
    hd_http_head_append(h, name, name_len, SIZE_MAX);
    o->value_off = (uint32_t)h->head_len;
    o->value_len = (uint32_t)value_len;
    hd_http_head_append(h, value, value_len, SIZE_MAX);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)session;
    (void)flags;
    hd_h2_t *h2 = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: ignored */
    hd_h2_stream_t *s = stream_of(h2, frame->hd.stream_id);
    hd_http_t *h = s ? http_of(s) : NULL;
    if (!h || h->error)
        return 0;
    const hd_conf_t *conf = conf_of(h);
    const char *n = (const char *)name, *v = (const char *)value;
    if (namelen > 0 && n[0] == ':') {
        /* Pseudo-fields come first (nghttp2 checks it): the URL starts the head buffer. */
        if (namelen == 5 && memcmp(n, ":path", 5) == 0) {
            if (hd_http_head_append(h, v, valuelen, conf->max_url_bytes) < 0)
                refuse(h, 414, "URI too long");
            h->url_len = h->head_len;
        } else if (namelen == 7 && memcmp(n, ":method", 7) == 0) {
            s->method = 0; /* one herald knows nowhere: 501 */
            for (size_t i = 0; i < HD_ARRAY_SIZE(methods); i++)
                if (strlen(methods[i].name) == valuelen &&
                    memcmp(methods[i].name, v, valuelen) == 0)
                    s->method = (uint8_t)(i + 1);
        } else if (namelen == 9 && memcmp(n, ":protocol", 9) == 0) {
            /* nghttp2 lets it through only on CONNECT (RFC 8441, our SETTINGS allow it) */
            if (valuelen == 9 && strncasecmp(v, "websocket", 9) == 0)
                s->is_websocket = 1;
            else
                s->is_protocol = 1;
        } else if (namelen == 10 && memcmp(n, ":authority", 10) == 0) {
            if (valuelen > conf->max_header_bytes) {
                refuse(h, 431, "request header fields too large");
                return 0;
            }
            free(h->authority);
            h->authority = hd_strndup(v, valuelen);
        }
        return 0;
    }
    if (h->n_hdrs == MAX_HEADERS ||
        h->head_len - h->url_len + namelen + valuelen > conf->max_header_bytes) {
        refuse(h, 431, "request header fields too large");
        return 0;
    }
    append_field(h, n, namelen, v, valuelen);
    return 0;
}

/* :authority stands for Host (RFC 9113 8.3.1) when the client sent no Host field. */
static void add_host(hd_http_t *h)
{
    if (!h->authority || h->error || h->n_hdrs == MAX_HEADERS)
        return;
    for (size_t i = 0; i < h->n_hdrs; i++)
        if (h->hdrs[i].name_len == 4 && strncasecmp(h->head + h->hdrs[i].name_off, "host", 4) == 0)
            return;
    append_field(h, "host", 4, h->authority, strlen(h->authority));
}

/* Adds a field to the request head unless one of that name is there. */
static void add_field(hd_http_t *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    for (size_t i = 0; i < h->n_hdrs; i++)
        if (h->hdrs[i].name_len == nl && strncasecmp(h->head + h->hdrs[i].name_off, name, nl) == 0)
            return;
    if (h->n_hdrs == MAX_HEADERS) {
        refuse(h, 431, "request header fields too large");
        return;
    }
    append_field(h, name, nl, value, vl);
}

/*
 * A WebSocket over HTTP/2 (RFC 8441: CONNECT with :protocol websocket) is handed to the
 * handler as the HTTP/1.1 opening handshake it stands for (GET, Upgrade: websocket,
 * Connection: Upgrade, a Sec-WebSocket-Key, which HTTP/2 does without), so the WebSocket
 * transport serves it unchanged; its 101 becomes 200 on the stream (hd_http_take_over).
 */
static void as_websocket_handshake(hd_http_t *h)
{
    h->parser.method = HTTP_GET;
    h->parser.upgrade = 1;
    add_field(h, "upgrade", "websocket");
    add_field(h, "connection", "Upgrade");
    add_field(h, "sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==");
}

/* The request is complete (or refused): to the handler, as an HTTP/1.1 one would go. */
static void dispatch(hd_h2_stream_t *s)
{
    hd_http_t *h = http_of(s);
    if (!h || s->is_dispatched)
        return;
    s->is_dispatched = 1;
    if (s->is_protocol)
        refuse(h, 501, "only the websocket protocol is served by extended CONNECT");
    int known = s->method != 0;
    if (known)
        h->parser.method = methods[s->method - 1].method;
    if (s->is_websocket && known && methods[s->method - 1].method == HTTP_CONNECT && !h->error)
        as_websocket_handshake(h);
    h->parser.http_major = 2;
    h->parser.http_minor = 0;
    h->phase = PHASE_HANDLING;
    hd_conn_set_timeout(h->conn, 0);
    hd_http_build_request(h);
    if (!known) {
        h->req.method = HD_M_OTHER;
        h->req.method_name = "OTHER";
    }
    if (h->error) {
        int status = h->error > 0 ? h->error : hd_err_http_status(h->error);
        const char *msg = h->error_msg ? h->error_msg : hd_strerror(h->error);
        hd_conn_log(HD_LOG_INFO, h->conn, "bad request (%d): %s", status, msg);
        hd_http_respond_error(&h->req, status, msg);
        return;
    }
    hd_http_dispatch(h);
}

/* The client ended its side of a stream whose request was handled: a transport that took the
 * stream over (a WebSocket) hears it as the peer closing. */
static void peer_ended(hd_h2_stream_t *s)
{
    hd_conn_t *c = s->conn;
    if (!c || c->is_closing)
        return;
    if (s->in_len || c->ops == &h2_req_ops) {
        s->is_eof_held = 1; /* after what it holds (deliver_held) */
        return;
    }
    if (c->ops->on_eof)
        c->ops->on_eof(c);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    hd_h2_t *h2 = user_data;
    hd_h2_stream_t *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        s = stream_of(h2, frame->hd.stream_id);
        if (!s)
            return 0;
        hd_http_t *h = http_of(s);
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST && h &&
            !s->is_dispatched) {
            add_host(h);
            free(h->authority);
            h->authority = NULL;
            if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
                if (h->error || s->is_websocket || s->is_protocol) {
                    dispatch(s); /* refused at the head: no need to read the body */
                    return 0;
                }
                h->phase = PHASE_BODY;
                hd_conn_set_timeout(s->conn, conf_of(h)->body_timeout_ms);
            }
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            if (s->is_dispatched)
                peer_ended(s);
            else
                dispatch(s);
        }
        return 0;
    case NGHTTP2_RST_STREAM: {
        /* Rapid reset (CVE-2023-44487): opening and cancelling streams costs the server work
         * without holding a stream open, so max_streams does not bound it; this does. Only a
         * reset of a stream still open counts (a client may answer our frames on a stream it
         * cancelled with more resets, which cost nothing). */
        uint64_t retry;
        if (!stream_of(h2, frame->hd.stream_id))
            return 0;
        uint32_t burst = h2->reset_rate * 10 > 100 ? h2->reset_rate * 10 : 100;
        if (!hd_bucket_take(&h2->reset_bucket, uv_now(&h2->conn->worker->loop), h2->reset_rate,
                            burst, &retry)) {
            hd_conn_log(HD_LOG_INFO, h2->conn,
                        "HTTP/2 client resets streams faster than http2_reset_rate (%u/s)",
                        h2->reset_rate);
            nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    }
    default:
        return 0;
    }
}

/*
 * Keeps DATA for a stream whose handler does not read it now (its request waits to be taken
 * over, or it stopped reading): the stream's window is not given back, so its client stops
 * once it is shut, as a TCP client stops when herald does not read its socket. The
 * connection's window is given back unless the connection holds too much already.
 */
static void hold(hd_h2_t *h2, hd_h2_stream_t *s, const uint8_t *data, size_t len)
{
    s->in = hd_realloc(s->in, s->in_len + len);
    memcpy(s->in + s->in_len, data, len);
    s->in_len += (uint32_t)len;
    h2->in_held += len;
    if (h2->in_held > HD_H2_IN_HIGH)
        h2->in_owed += len;
    else
        nghttp2_session_consume_connection(h2->session, len);
}

/*
 * DATA for a stream. The windows are given back (nghttp2_session_consume: herald sends
 * WINDOW_UPDATE itself) for what is used: a request body as it is collected (bounded by
 * max_body_size), what a transport reads, what is dropped; not for what is held (hold).
 */
static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    hd_h2_t *h2 = user_data;
    hd_h2_stream_t *s = stream_of(h2, stream_id);
    hd_conn_t *c = s ? s->conn : NULL;
    if (s && c && !c->is_closing && !c->is_finishing && s->is_dispatched &&
        (c->ops == &h2_req_ops || !c->is_reading || s->in_len)) {
        hold(h2, s, data, len);
        return 0;
    }
    nghttp2_session_consume(session, stream_id, len);
    if (!s || !c || c->is_closing || c->is_finishing)
        return 0; /* dropped */
    hd_http_t *h = http_of(s);
    if (!s->is_dispatched && h) {
        if (h->error)
            return 0;
        int rc = hd_http_append_body(h, (const char *)data, len);
        if (rc < 0) {
            refuse(h, hd_err_http_status(rc), "request body too large");
            dispatch(s); /* answered now; the rest of the body is not wanted */
        }
        return 0;
    }
    if (c->ops->on_data)
        c->ops->on_data(c, (const char *)data, len);
    return 0;
}

void hd_h2_deliver_held(hd_h2_t *h2)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &h2->streams)
    {
        hd_h2_stream_t *s = hd_container_of(pos, hd_h2_stream_t, link);
        if (!s->is_in_ready)
            continue;
        hd_conn_t *c = s->conn;
        if (!c || c->is_closing)
            continue; /* gone: freed with what it holds (hd_h2_stream_free) */
        s->is_in_ready = 0;
        h2->n_in_ready--;
        if (!c->is_reading || c->ops == &h2_req_ops)
            continue; /* stopped again: on_read_start sets it ready again */
        char *in = s->in;
        size_t n = s->in_len;
        s->in = NULL;
        s->in_len = 0;
        hd_h2_release_held(h2, n);
        nghttp2_session_consume_stream(h2->session, s->id, n);
        if (n && !c->is_finishing && c->ops->on_data)
            c->ops->on_data(c, in, n);
        free(in);
        if (h2->is_dead)
            return; /* the connection closed: every stream is gone */
        if (s->is_eof_held && s->conn == c && !c->is_closing && !c->is_finishing &&
            c->ops->on_eof) {
            s->is_eof_held = 0;
            c->ops->on_eof(c);
            if (h2->is_dead)
                return;
        }
        if (h2->n_in_ready == 0)
            return;
    }
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)error_code;
    hd_h2_t *h2 = user_data;
    hd_h2_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    if (s->conn) {
        hd_conn_t *c = s->conn;
        c->carrier = NULL; /* no reset to send: the stream is gone */
        s->conn = NULL;
        hd_h2_count_output(s);
        hd_conn_close(c); /* its handler (a request, a transport) lets go */
    }
    if (s->is_drained) {
        /* still on h2->drained: unlink it */
        for (hd_h2_stream_t **p = &h2->drained; *p; p = &(*p)->next_drained) {
            if (*p == s) {
                *p = s->next_drained;
                break;
            }
        }
    }
    hd_h2_stream_free(s);
    if (--h2->n_streams == 0 && !h2->is_draining)
        hd_conn_set_timeout(h2->conn, hd_worker_conf(h2->conn->worker)->keepalive_timeout_ms);
    hd_conn_want_flush(h2->conn);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    hd_h2_t *h2 = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        HD_STAT_INC(h2->conn->worker, h2_errors);
        hd_conn_log(HD_LOG_INFO, h2->conn, "HTTP/2 connection ended: GOAWAY %s",
                    nghttp2_http2_strerror(frame->goaway.error_code));
        return 0;
    }
    if (frame->hd.type == NGHTTP2_DATA) {
        hd_h2_stream_t *s = stream_of(h2, frame->hd.stream_id);
        if (s)
            hd_h2_data_sent(s);
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        hd_h2_stream_t *s = stream_of(h2, frame->hd.stream_id);
        if (s)
            s->is_ended = 1;
        /* The response is complete but the client still sends (a body refused early): it
         * may stop (RFC 9113 8.1). */
        if (!nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id))
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                      NGHTTP2_NO_ERROR);
    }
    return 0;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)session;
    (void)flags;
    hd_h2_t *h2 = user_data;
    hd_conn_t *c = h2->conn;
    if (c->is_closing || c->is_finishing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (hd_h2_out_bytes(h2) > HD_H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(hd_h2_out_reserve(h2, len), data, len);
    return (ssize_t)len;
}

void hd_h2_session_callbacks(nghttp2_session_callbacks *cb)
{
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, hd_h2_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
}
