/* SPDX-License-Identifier: MIT */
/*
 * h2_out.c: what leaves on an HTTP/2 stream. The response head becomes a HEADERS frame (the
 * same status, extra lines and response headers an HTTP/1.1 head carries, names lowercased,
 * connection-specific fields dropped); the body is whatever the handler or transport queued on
 * the stream connection, framed as DATA by reference when nghttp2 asks (the stream's flow
 * control window allows it), and ended when the stream connection finishes. The stream
 * connection's carrier ops (hd_h2_carrier_ops) tell the session when a stream has output, ends
 * or is closed by herald (a reset).
 *
 *   transport --hd_conn_send--> stream conn queue --read_data/send_data--> one buffer per
 *     produce pass (every frame, copied) --> socket conn queue
 *
 * So a stream that stops reading (its window stays shut) holds its output in its own queue,
 * which every transport bounds as it bounds a slow HTTP/1.1 subscriber (hd_conn_queued_bytes),
 * and the socket's queue holds at most HD_H2_OUT_HIGH plus a frame.
 */
#include "internal.h"

#include <ctype.h>
#include <string.h>

#define MAX_NV 64

/* Fields an HTTP/2 message must not carry (RFC 9113 8.2.2). */
static int is_connection_specific(const char *name, size_t len)
{
    /* and sec-websocket-accept: a WebSocket's key has no use on a stream (RFC 8441 5) */
    static const char *const banned[] = {"connection",        "keep-alive", "proxy-connection",
                                         "transfer-encoding", "upgrade",    "sec-websocket-accept"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(banned); i++)
        if (strlen(banned[i]) == len && memcmp(banned[i], name, len) == 0)
            return 1;
    return 0;
}

/*
 * Adds the "Name: value\r\n" lines of text (lowercased in place: text is our copy) to nv.
 */
static size_t add_lines(nghttp2_nv *nv, size_t n, char *text)
{
    char *p = text;
    while (p && *p && n < MAX_NV) {
        char *eol = strstr(p, "\r\n");
        char *end = eol ? eol : p + strlen(p);
        char *colon = memchr(p, ':', (size_t)(end - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            for (size_t i = 0; i < nlen; i++)
                p[i] = (char)tolower((unsigned char)p[i]);
            char *v = colon + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            if (nlen && !is_connection_specific(p, nlen))
                nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, nlen, (size_t)(end - v),
                                       NGHTTP2_NV_FLAG_NONE};
        }
        p = eol ? eol + 2 : NULL;
    }
    return n;
}

static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data);

static nghttp2_nv nv_of(const char *name, const char *value, size_t vlen)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), vlen,
                        NGHTTP2_NV_FLAG_NONE};
}

void hd_h2_submit_head(hd_http_t *h, int status, const char *extra, const char *content_type,
                       int64_t content_length, int is_taken_over)
{
    hd_h2_stream_t *s = h->h2s;
    hd_h2_t *h2 = s->h2;
    nghttp2_nv nv[MAX_NV];
    size_t n = 0;
    char st[8], clen[24];
    snprintf(st, sizeof(st), "%d", status);
    nv[n++] = nv_of(":status", st, strlen(st));
    nv[n++] = nv_of("server", "herald/" HERALD_VERSION, strlen("herald/" HERALD_VERSION));
    const char *date = hd_worker_date(h->conn->worker);
    nv[n++] = nv_of("date", date, strlen(date));
    /* nghttp2 copies the fields: the lowercased lines live only for this call. */
    size_t elen = extra ? strlen(extra) : 0, rlen = h->resp_headers ? strlen(h->resp_headers) : 0;
    char *lines = hd_malloc(elen + rlen + 2);
    memcpy(lines, extra ? extra : "", elen);
    lines[elen] = '\0';
    memcpy(lines + elen + 1, h->resp_headers ? h->resp_headers : "", rlen);
    lines[elen + 1 + rlen] = '\0';
    n = add_lines(nv, n, lines);
    n = add_lines(nv, n, lines + elen + 1);
    if (content_type && n < MAX_NV)
        nv[n++] = nv_of("content-type", content_type, strlen(content_type));
    if (content_length >= 0 && n < MAX_NV) {
        snprintf(clen, sizeof(clen), "%lld", (long long)content_length);
        nv[n++] = nv_of("content-length", clen, strlen(clen));
    }
    int rc;
    if (is_taken_over) {
        /* HEADERS alone: DATA is submitted whenever the transport writes (submit_data) */
        rc = nghttp2_submit_headers(h2->session, NGHTTP2_FLAG_NONE, s->id, NULL, nv, n, NULL);
        s->is_taken_over = 1;
    } else {
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_data};
        rc = nghttp2_submit_response(h2->session, s->id, nv, n, &prd);
        s->has_data = rc == 0;
    }
    free(lines);
    if (rc != 0) {
        hd_conn_log(HD_LOG_INFO, h->conn, "HTTP/2 response not submitted: %s",
                    nghttp2_strerror(rc));
        return;
    }
    s->is_responding = 1;
    hd_conn_want_flush(h2->conn);
}

/*
 * A taken-over stream (an SSE stream, a WebSocket) has a DATA source in nghttp2 only while it
 * has output: an idle one holds none (nghttp2 keeps a send item of about 200 bytes for each
 * source). Submitted when output comes (or the stream finishes), detached by read_data once
 * its queue is taken (EOF without END_STREAM).
 */
static void submit_data(hd_h2_stream_t *s)
{
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_data};
    int rc = nghttp2_submit_data(s->h2->session, NGHTTP2_FLAG_END_STREAM, s->id, &prd);
    if (rc == 0)
        s->has_data = 1;
    else if (s->conn)
        hd_conn_log(HD_LOG_DEBUG, s->conn, "HTTP/2 DATA not submitted: %s", nghttp2_strerror(rc));
}

void hd_h2_data_sent(hd_h2_stream_t *s)
{
    if (!s->is_eof_pending)
        return;
    /* nghttp2 detached the source before telling us (so a new one may be submitted now) */
    s->is_eof_pending = 0;
    s->has_data = 0;
    if (s->conn && (hd_conn_queued_bytes(s->conn) > 0 || s->conn->is_finishing))
        submit_data(s);
}

/*
 * nghttp2 asks for at most `length` bytes of the stream's next DATA frame: as many as its
 * queue holds (taken, without copy, in hd_h2_send_data), END_STREAM once the stream finished
 * and its queue is empty. Nothing yet: a response waits (DEFERRED until output comes:
 * on_output resumes it); a taken-over stream lets go of its source (EOF without END_STREAM:
 * at once when the queue is empty, nghttp2 then sends nothing; else once this frame is sent,
 * hd_h2_data_sent).
 */
static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)buf;
    (void)user_data;
    hd_h2_stream_t *s = source->ptr;
    hd_conn_t *c = s->conn;
    if (!c || c->is_closing) {
        s->is_deferred = 1; /* reset: its RST_STREAM is on its way */
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t queued = hd_conn_queued_bytes(c);
    if (queued == 0) {
        if (c->is_finishing) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        if (s->is_taken_over) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            s->has_data = 0;
            return 0;
        }
        s->is_deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = queued < length ? queued : length;
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == queued && c->is_finishing) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == queued && s->is_taken_over) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        s->is_eof_pending = 1;
    }
    return (ssize_t)n;
}

int hd_h2_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    hd_h2_t *h2 = user_data;
    hd_h2_stream_t *s = source->ptr;
    hd_conn_t *out = h2->conn;
    if (out->is_closing || out->is_finishing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (hd_h2_out_bytes(h2) > HD_H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (!s->conn || hd_conn_queued_bytes(s->conn) < length || frame->data.padlen > 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cannot happen: resets the stream */
    char *p = hd_h2_out_reserve(h2, 9 + length);
    memcpy(p, framehd, 9);
    hd_conn_stream_copy(s->conn, p + 9, length);
    hd_h2_count_output(s);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        s->is_ended = 1;
    if (hd_conn_queued_bytes(s->conn) == 0 && !s->is_drained) {
        /* Its handler may write more (on_drain), once nghttp2 is done with this send. */
        s->is_drained = 1;
        s->next_drained = h2->drained;
        h2->drained = s;
    }
    return 0;
}

/* ---- the connection's output, coalesced ---- */

#define OUT_CHUNK (16 * 1024) /* a TLS record's worth */

/*
 * Every frame of a produce pass (h2.c) is copied into one buffer, sent whole when full and at
 * the end of the pass: a fan-out to many streams of a connection leaves in one write of a few
 * large pieces (under TLS, full records) instead of a header and a payload per frame.
 */
char *hd_h2_out_reserve(hd_h2_t *h2, size_t n)
{
    hd_buf_t *b = h2->out;
    if (b && b->len + n > b->cap) {
        hd_h2_out_flush(h2);
        b = NULL;
    }
    if (!b)
        b = h2->out = hd_buf_new(n > OUT_CHUNK ? n : OUT_CHUNK);
    char *p = b->data + b->len;
    b->len += n;
    return p;
}

void hd_h2_out_flush(hd_h2_t *h2)
{
    hd_buf_t *b = h2->out;
    if (!b)
        return;
    h2->out = NULL;
    if (b->len)
        hd_conn_send(h2->conn, b, 0, b->len);
    hd_buf_unref(b);
}

/* ---- the stream connection's carrier ---- */

void hd_h2_count_output(hd_h2_stream_t *s)
{
    size_t q = s->conn ? hd_conn_queued_bytes(s->conn) : 0;
    s->h2->streams_out = s->h2->streams_out - s->out_counted + q;
    s->out_counted = (uint32_t)q;
}

static void carrier_on_output(hd_conn_t *c)
{
    hd_h2_stream_t *s = (hd_h2_stream_t *)c->carrier;
    hd_h2_count_output(s);
    if (s->is_responding && !s->has_data && s->is_taken_over) {
        submit_data(s);
    } else if (s->is_deferred && s->is_responding) {
        s->is_deferred = 0;
        nghttp2_session_resume_data(s->h2->session, s->id);
    }
    hd_conn_want_flush(s->h2->conn);
}

static void carrier_on_close(hd_conn_t *c)
{
    hd_h2_stream_t *s = (hd_h2_stream_t *)c->carrier;
    s->conn = NULL;
    hd_h2_count_output(s);
    if (!s->is_ended) {
        /* Herald let go of a stream it had not ended (a slow subscriber cut off, a timeout, a
         * transport closing): the peer learns it by RST_STREAM. */
        nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id,
                                  s->is_responding ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR);
    }
    hd_conn_want_flush(s->h2->conn);
}

/* What the stream holds (h2.c hold) goes to its handler in the next produce. */
static void carrier_on_read_start(hd_conn_t *c)
{
    hd_h2_stream_t *s = (hd_h2_stream_t *)c->carrier;
    if ((!s->in_len && !s->is_eof_held) || s->is_in_ready)
        return;
    s->is_in_ready = 1;
    s->h2->n_in_ready++;
    hd_conn_want_flush(s->h2->conn);
}

const hd_carrier_ops_t hd_h2_carrier_ops = {
    .on_output = carrier_on_output,
    .on_finish = carrier_on_output, /* the end goes out once the queue is taken */
    .on_close = carrier_on_close,
    .on_read_start = carrier_on_read_start,
};
