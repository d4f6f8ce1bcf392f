/* SPDX-License-Identifier: MIT */
/*
 * http.c: the HTTP/1.1 connection handler (the hd_conn_ops_t of an HTTP connection): reads fed
 * to llhttp (parse.c) or the chunked decoder, one request at a time dispatched to the router
 * (pipelined requests wait in `pending`), pipelining backpressure, requests that cannot be
 * parsed answered and the connection ended, timeouts, EOF, shutdown and close, and the hand-over
 * of the connection to a transport (hd_http_take_over). Responses are queued by response.c.
 */
#include "internal.h"

#include <string.h>

static void dispatch(hd_http_t *h)
{
    hd_http_build_request(h);
    hd_http_dispatch(h);
}

/* Answers a request that could not be parsed, then finishes the connection. */
static void respond_parse_error(hd_http_t *h, int status, const char *msg)
{
    hd_conn_log(HD_LOG_INFO, h->conn, "bad request (%d): %s", status, msg);
    hd_http_build_request(h);
    if (h->is_bad_method)
        h->req.method_name = NULL; /* llhttp's method is its default (DELETE), not the client's */
    h->req.is_keepalive = 0;
    h->is_closing_after = 1;
    hd_http_respond_error(&h->req, status, msg);
}

static int has_pending(const hd_http_t *h)
{
    return h->pending_off < h->pending_len;
}

/*
 * Keeps data[0..len) for later. Parsing pending itself saves the unparsed rest of pending: only
 * its start moves (no copy per pipelined request); anything else is appended.
 */
static void save_pending(hd_http_t *h, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (h->pending && data >= h->pending && data < h->pending + h->pending_len) {
        h->pending_off = (size_t)(data - h->pending);
        HD_ASSERT(h->pending_off + len == h->pending_len);
        return;
    }
    if (h->pending_off) {
        memmove(h->pending, h->pending + h->pending_off, h->pending_len - h->pending_off);
        h->pending_len -= h->pending_off;
        h->pending_off = 0;
    }
    h->pending = hd_realloc(h->pending, h->pending_len + len);
    memcpy(h->pending + h->pending_len, data, len);
    h->pending_len += len;
}

static void drop_pending(hd_http_t *h)
{
    free(h->pending);
    h->pending = NULL;
    h->pending_off = h->pending_len = 0;
}

/*
 * The request line of a method llhttp refused, collected in head (bounded by max_url_size)
 * until hd_http_classify_bad_method can tell 501 from 400, then answered.
 */
static void collect_bad_method(hd_http_t *h, const char *data, size_t len)
{
    if (hd_http_head_append(h, data, len, conf_of(h)->max_url_bytes) < 0) {
        respond_parse_error(h, 400, "malformed request line");
        return;
    }
    int kind = hd_http_classify_bad_method(h->head, h->head_len);
    if (kind < 0)
        return;
    h->head_len = 0; /* not a URL: nothing of it goes to the access log */
    if (kind)
        respond_parse_error(h, 501, "method not implemented");
    else
        respond_parse_error(h, 400, "Invalid method encountered");
}

/*
 * Parses data. Returns when the data is used up, when a request has been dispatched whose
 * response is not queued yet (the rest waits in pending), or when the connection ends.
 */
static void execute(hd_http_t *h, const char *data, size_t len)
{
    hd_conn_t *c = h->conn;
    while (len > 0 && !c->is_closing && c->data == h) {
        if (h->phase == PHASE_HANDLING) {
            save_pending(h, data, len);
            hd_conn_read_stop(c);
            return;
        }
        if (h->is_bad_method) {
            collect_bad_method(h, data, len);
            return;
        }
        if (h->is_chunked_body) {
            size_t used = 0;
            int rc = hd_chunked_feed(&h->chunked, data, len, &used, hd_http_append_body, h);
            if (rc < 0) {
                const char *why = rc == HD_EBADREQ ? h->chunked.why : hd_strerror(rc);
                respond_parse_error(h, hd_err_http_status(rc), why);
                return;
            }
            if (rc == 0)
                return; /* all used, more to come */
            h->is_chunked_body = 0;
            h->phase = PHASE_HANDLING;
            hd_conn_set_timeout(c, 0);
            save_pending(h, data + used, len - used);
            dispatch(h);
            return;
        }
        llhttp_errno_t err = llhttp_execute(&h->parser, data, len);
        if (err == HPE_OK)
            return;
        if (err == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&h->parser) - data);
            llhttp_resume(&h->parser);
            data += used;
            len -= used;
            if (h->is_chunked_body)
                continue;               /* the head of a chunked request: its body follows */
            save_pending(h, data, len); /* pipelined bytes, parsed after the response */
            len = 0;
            dispatch(h);
            return;
        }
        if (err == HPE_PAUSED_UPGRADE) {
            /* Upgrade: llhttp stops after the head (and the body, if any). */
            size_t used = (size_t)(llhttp_get_error_pos(&h->parser) - data);
            h->phase = PHASE_HANDLING;
            hd_conn_set_timeout(c, 0);
            save_pending(h, data + used, len - used);
            dispatch(h);
            return;
        }
        int status = 400;
        const char *msg = llhttp_get_error_reason(&h->parser);
        /* Our callbacks set h->error; llhttp reports their failure as HPE_USER from a data
         * callback but as HPE_CB_* from a notification (headers complete, value complete). */
        if (h->error) {
            status = h->error > 0 ? h->error : hd_err_http_status(h->error);
            msg = h->error_msg ? h->error_msg : hd_strerror(h->error);
        } else if (err == HPE_INVALID_METHOD) {
            /* 501 or 400 depends on the rest of the line: llhttp stops at the method. */
            h->is_bad_method = 1;
            h->head_len = 0;
            continue;
        } else if (err == HPE_UNEXPECTED_CONTENT_LENGTH) {
            msg = "conflicting Content-Length / Transfer-Encoding";
        }
        respond_parse_error(h, status, msg ? msg : "malformed request");
        return;
    }
}

/*
 * Pipelining backpressure: the next request is parsed only while less than this much of the
 * earlier responses waits to be written. Above it the connection stops reading and parsing
 * until its output drains (on_drain), so a client that pipelines requests and never reads holds
 * at most this plus one response (bounded by max_response_size), like nginx.
 */
#define PIPELINE_QUEUE_MAX (64 * 1024)

static int is_output_backed_up(hd_http_t *h)
{
    return hd_conn_queued_bytes(h->conn) > PIPELINE_QUEUE_MAX;
}

static void end_at_eof(hd_http_t *h);

static void continue_parsing(hd_http_t *h)
{
    hd_conn_t *c = h->conn;
    while (!c->is_closing && c->data == h && has_pending(h) && h->phase != PHASE_HANDLING) {
        if (is_output_backed_up(h)) {
            hd_conn_read_stop(c); /* http_on_drain resumes */
            return;
        }
        /* Parsed in place: all of it counts as used unless execute saves a rest. Nothing can
         * append to pending meanwhile (no read runs inside execute). */
        const char *data = h->pending + h->pending_off;
        size_t len = h->pending_len - h->pending_off;
        h->pending_off = h->pending_len;
        execute(h, data, len);
    }
    if (c->is_closing || c->data != h)
        return;
    if (!has_pending(h) && h->pending)
        drop_pending(h); /* an idle connection holds no buffer */
    if (h->phase == PHASE_HANDLING)
        return;
    if (h->is_peer_eof) {
        if (!has_pending(h))
            end_at_eof(h); /* every pipelined request before the EOF is answered */
        return;
    }
    if (is_output_backed_up(h))
        hd_conn_read_stop(c);
    else
        hd_conn_read_start(c);
}

/* ---- connection handler ---- */

static void http_on_close(hd_conn_t *c);

/* The HTTP/2 connection preface (RFC 9113 3.4), which a client with prior knowledge sends. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)

/*
 * Before the first request: is this HTTP/2 (TLS agreed on h2 by ALPN, or the preface on a
 * cleartext connection)? Returns 1 when the connection went to HTTP/2 (data with it), 0 when
 * it is HTTP/1.1, -1 when the bytes so far are a prefix of the preface (kept in pending).
 */
static int try_h2(hd_http_t *h, const char *data, size_t len)
{
    hd_conn_t *c = h->conn;
    unsigned alen;
    const char *alpn = hd_conn_alpn(c, &alen);
    int is_h2 = alpn && alen == 2 && memcmp(alpn, "h2", 2) == 0;
    if (!is_h2 && !conf_of(h)->http2) {
        h->is_h2_decided = 1;
        return 0;
    }
    size_t have = h->pending_len - h->pending_off;
    if (!is_h2) {
        /* Compare what arrived so far (pending, then data) with the preface. */
        size_t n = 0;
        for (size_t i = 0; i < have && n < H2_PREFACE_LEN; i++, n++)
            if (h->pending[h->pending_off + i] != h2_preface[n])
                break;
        int same = n == (have < H2_PREFACE_LEN ? have : H2_PREFACE_LEN);
        for (size_t i = 0; same && i < len && n < H2_PREFACE_LEN; i++, n++)
            same = data[i] == h2_preface[n];
        if (!same) {
            h->is_h2_decided = 1;
            return 0;
        }
        if (n < H2_PREFACE_LEN) {
            save_pending(h, data, len);
            return -1;
        }
    }
    /* Everything received goes to HTTP/2: what waited, then data. */
    char *all = NULL;
    if (have) {
        all = hd_malloc(have + len);
        memcpy(all, h->pending + h->pending_off, have);
        memcpy(all + have, data, len);
        data = all;
        len += have;
    }
    http_on_close(c);
    hd_h2_accept(c, data, len);
    free(all);
    return 1;
}

static void http_on_data(hd_conn_t *c, const char *data, size_t len)
{
    hd_http_t *h = c->data;
    if (!h->is_h2_decided) {
        int rc = try_h2(h, data, len);
        if (rc != 0) {
            if (rc < 0)
                hd_conn_read_start(c);
            return;
        }
        if (has_pending(h)) {
            /* A prefix of the preface waited: parse it with what came now. */
            save_pending(h, data, len);
            continue_parsing(h);
            return;
        }
    }
    if (h->phase == PHASE_HANDLING || has_pending(h) || is_output_backed_up(h)) {
        save_pending(h, data, len);
        /* one request at a time, and none while responses pile up: backpressure */
        hd_conn_read_stop(c);
    } else {
        execute(h, data, len);
    }
    if (c->data == h)
        continue_parsing(h);
}

static void http_on_drain(hd_conn_t *c)
{
    continue_parsing(c->data);
}

static void http_on_eof(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    if (h->deferred && h->deferred->on_timeout) {
        hd_conn_close(c); /* a held request (long poll) whose client left: stop holding */
        return;
    }
    if (has_pending(h)) {
        /* Pipelined requests still wait for their turn (a response in progress, or output
         * backed up; under TLS the close can come in the same read as they did): answer them,
         * then end (continue_parsing). */
        h->is_peer_eof = 1;
        hd_conn_read_stop(c);
        return;
    }
    if (h->phase == PHASE_HANDLING) {
        /* A deferred response may still be wanted (half-close); keep going until it is sent. */
        h->is_closing_after = 1;
        hd_conn_read_stop(c);
        return;
    }
    end_at_eof(h);
}

/* The peer closed its side and nothing it sent waits: end once what is queued is written. */
static void end_at_eof(hd_http_t *h)
{
    hd_conn_t *c = h->conn;
    if (llhttp_finish(&h->parser) != HPE_OK && h->phase != PHASE_IDLE)
        hd_conn_log(HD_LOG_DEBUG, c, "peer closed mid-request");
    /* A client that half-closes after pipelining still gets every response already queued. */
    if (hd_conn_queued_bytes(c) > 0)
        hd_conn_finish(c);
    else
        hd_conn_close(c);
}

static void http_on_timeout(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    if (h->deferred && h->deferred->on_timeout) {
        h->deferred->on_timeout(h->deferred);
        return;
    }
    HD_STAT_INC(c->worker, timeouts);
    if (h->phase == PHASE_HEAD || h->phase == PHASE_BODY) {
        hd_conn_log(HD_LOG_INFO, c, "%s timeout", h->phase == PHASE_HEAD ? "header" : "body");
        respond_parse_error(h, 408, h->phase == PHASE_HEAD ? "header timeout" : "body timeout");
        return;
    }
    hd_conn_close(c); /* keep-alive idle */
}

static void http_on_shutdown(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    if (h->phase == PHASE_HANDLING || h->phase == PHASE_BODY) {
        h->is_closing_after = 1; /* the response in progress will say Connection: close */
        /* A held request (long poll) would keep the node up until its own timeout and then be
         * dropped unanswered: let it time out now, so its client gets an answer and re-polls. */
        if (h->deferred && h->deferred->on_timeout)
            h->deferred->on_timeout(h->deferred);
        return;
    }
    hd_conn_close(c);
}

/* An operator's order (conn.h hd_kick_t): only a held request (a long poll, a stream still
 * subscribing) can be concerned; its handler answers it. */
static int http_on_kick(hd_conn_t *c, const hd_kick_t *k)
{
    hd_http_t *h = c->data;
    if (h->deferred && h->deferred->on_kick)
        return h->deferred->on_kick(h->deferred, k);
    return 0;
}

static void http_on_close(hd_conn_t *c)
{
    hd_http_free(c->data);
}

static const hd_conn_ops_t http_ops = {
    .name = "http",
    .on_data = http_on_data,
    .on_eof = http_on_eof,
    .on_timeout = http_on_timeout,
    .on_drain = http_on_drain,
    .on_shutdown = http_on_shutdown,
    .on_close = http_on_close,
    .on_kick = http_on_kick,
};

void hd_http_accept(hd_conn_t *c)
{
    hd_http_t *h = hd_http_new(c);
    hd_http_parser_init(h);
    h->on_answered = continue_parsing;
    hd_conn_set_handler(c, &http_ops, h);
    hd_conn_set_timeout(c, conf_of(h)->header_timeout_ms);
    hd_conn_read_start(c);
}

/* ---- streams ---- */

void hd_http_take_over(hd_req_t *req, int status, const char *head_headers,
                       const hd_conn_ops_t *ops, void *data)
{
    hd_http_t *h = req->http_;
    hd_conn_t *c = h->conn;
    hd_http_end_deferred(h);
    h->served++;
    HD_STAT_INC(c->worker, requests);
    if (h->h2s) {
        /* HEADERS without END_STREAM: the stream's DATA is what the transport sends. A
         * WebSocket's 101 is 200 on a stream (RFC 8441 5). */
        if (status == 101)
            status = 200;
        hd_h2_submit_head(h, status, head_headers, NULL, -1, 1);
        hd_http_access_log(h, status, 0);
        c->ops->on_close(c); /* the stream's request handler: frees h */
        hd_conn_set_handler(c, ops, data);
        hd_conn_set_timeout(c, 0);
        /* DATA that came while the request waited is held by the stream (h2_stream.c): read now */
        hd_conn_read_start(c);
        return;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256);
    hd_http_build_head(h, &sb, status, head_headers, -1); /* the stream names its own Connection */
    hd_sbuf_appends(&sb, "\r\n");
    hd_buf_t *b = hd_sbuf_finish(&sb);
    hd_conn_send(c, b, 0, b->len);
    hd_buf_unref(b);
    hd_http_access_log(h, status, 0);
    char *rest_buf = h->pending, *rest = rest_buf ? rest_buf + h->pending_off : NULL;
    size_t rest_len = h->pending_len - h->pending_off;
    h->pending = NULL;
    h->pending_off = h->pending_len = 0;
    http_on_close(c);
    hd_conn_set_handler(c, ops, data);
    hd_conn_set_timeout(c, 0);
    if (rest_len && ops->on_data)
        ops->on_data(c, rest, rest_len);
    free(rest_buf);
    if (!c->is_closing)
        hd_conn_read_start(c);
}
