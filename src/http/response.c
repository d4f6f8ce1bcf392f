/* SPDX-License-Identifier: MIT */
/*
 * response.c: answering a request: the status line and headers (Server, Date, Connection as
 * keep-alive allows), the body inline or as shared buffers, the access log line, JSON error
 * bodies, and deferred responses (hd_http_defer). Queuing a response resets the request; a
 * deferred one then hands the connection back to the handler (h->on_answered) for what was
 * pipelined meanwhile.
 */
#include "internal.h"

#include <string.h>

const char *hd_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    case 507:
        return "Insufficient Storage";
    default:
        return "Unknown";
    }
}

/*
 * The URL as the access log shows it, at most 512 bytes: the value of every query parameter
 * named "token" (a connection token) or "ticket" (a single-use ticket, docs/auth.md) replaced
 * by "REDACTED", so credentials never reach a log file.
 */
static size_t loggable_url(const hd_req_t *r, char *out, size_t outlen)
{
    static const char *const secret[] = {"token=", "ticket="};
    const char *u = r->url ? r->url : "";
    size_t len = r->url_len, o = 0, i = 0;
    const char *q = memchr(u, '?', len);
    size_t qstart = q ? (size_t)(q - u) + 1 : len;

    while (i < len && o + 1 < outlen) {
        /* At the start of a query parameter called token or ticket: copy "name=REDACTED",
         * skip its value. */
        size_t name_len = 0;
        for (size_t k = 0;
             k < HD_ARRAY_SIZE(secret) && i >= qstart && (i == qstart || u[i - 1] == '&'); k++) {
            size_t n = strlen(secret[k]);
            if (len - i >= n && memcmp(u + i, secret[k], n) == 0)
                name_len = n;
        }
        if (name_len) {
            for (size_t k = 0; k < name_len && o + 1 < outlen; k++)
                out[o++] = u[i + k];
            static const char red[] = "REDACTED";
            for (size_t k = 0; k < sizeof(red) - 1 && o + 1 < outlen; k++)
                out[o++] = red[k];
            i += name_len;
            while (i < len && u[i] != '&')
                i++;
            continue;
        }
        out[o++] = u[i++];
    }
    out[o] = '\0';
    return o;
}

void hd_http_access_log(hd_http_t *h, int status, size_t bytes)
{
    if (!hd_log_access_enabled())
        return;
    char line[1024], url[513];
    char client[HD_IP_TEXT_MAX];
    const hd_req_t *r = &h->req;
    uint64_t ms = uv_now(&h->conn->worker->loop) - h->start_ms;
    size_t ulen = loggable_url(r, url, sizeof(url));
    /* The request's client (X-Forwarded-For behind a trusted proxy); before a request was
     * parsed (a refused head), the connection's. */
    hd_ip_format_port(r->conn ? hd_req_client_ip(r) : hd_conn_client_addr(h->conn), client,
                      sizeof(client));
    int n =
        snprintf(line, sizeof(line), "%s c#%llu \"%s %.*s HTTP/%u.%u\" %d %zu %llums", client,
                 (unsigned long long)h->conn->id, r->method_name ? r->method_name : "-", (int)ulen,
                 url, r->version_major, r->version_minor, status, bytes, (unsigned long long)ms);
    if (n > 0)
        hd_log_access(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static int must_close(hd_http_t *h)
{
    const hd_conf_t *conf = conf_of(h);
    return h->is_closing_after || !h->req.is_keepalive || h->served >= conf->keepalive_requests ||
           h->conn->worker->is_draining || h->conn->worker->is_stopped;
}

void hd_http_build_head(hd_http_t *h, hd_sbuf_t *sb, int status, const char *extra, int is_close)
{
    /* appends, not printf: this runs for every response (a third of a long poll's CPU) */
    hd_sbuf_appends(sb, "HTTP/1.1 ");
    hd_sbuf_append_u64(sb, (uint64_t)status);
    hd_sbuf_appends(sb, " ");
    hd_sbuf_appends(sb, hd_http_status_text(status));
    hd_sbuf_appends(sb, "\r\nServer: herald/" HERALD_VERSION "\r\nDate: ");
    hd_sbuf_appends(sb, hd_worker_date(h->conn->worker));
    hd_sbuf_appends(sb, "\r\n");
    if (extra)
        hd_sbuf_appends(sb, extra);
    if (h->resp_headers)
        hd_sbuf_appends(sb, h->resp_headers);
    if (is_close > 0)
        hd_sbuf_appends(sb, "Connection: close\r\n");
    else if (is_close == 0 && h->req.version_major == 1 && h->req.version_minor == 0)
        hd_sbuf_appends(sb, "Connection: keep-alive\r\n");
}

/*
 * On an HTTP/2 stream: HEADERS, then the body as the stream's DATA, then the end of the stream
 * (the stream connection finishes; nothing of the request is left).
 */
static void respond_h2(hd_http_t *h, int status, const char *extra_headers,
                       const char *content_type, const void *body, size_t len,
                       hd_buf_t *const *bufs, size_t n_bufs)
{
    hd_conn_t *c = h->conn;
    int with_body = h->req.method != HD_M_HEAD && status != 204 && status != 304;
    hd_h2_submit_head(h, status, extra_headers, content_type,
                      status == 204 || status == 304 ? -1 : (int64_t)len, 0);
    if (with_body && body && len > 0 && !n_bufs)
        hd_conn_send_copy(c, body, len);
    for (size_t i = 0; with_body && i < n_bufs; i++)
        hd_conn_send(c, bufs[i], 0, bufs[i]->len);
    hd_http_access_log(h, status, with_body ? len : 0);
    hd_conn_finish(c); /* frees h */
}

/* Queues the head, then the body: either inline bytes or shared buffers (written as they are). */
static void respond(hd_req_t *req, int status, const char *extra_headers, const char *content_type,
                    const void *body, size_t len, hd_buf_t *const *bufs, size_t n_bufs)
{
    hd_http_t *h = req->http_;
    hd_conn_t *c = h->conn;
    hd_http_end_deferred(h);
    h->served++;
    HD_STAT_INC(c->worker, requests);
    if (h->h2s) {
        for (size_t i = 0; i < n_bufs; i++)
            len += bufs[i]->len;
        respond_h2(h, status, extra_headers, content_type, body, len, bufs, n_bufs);
        return;
    }
    int is_close = must_close(h) || req->is_upgrade;
    for (size_t i = 0; i < n_bufs; i++)
        len += bufs[i]->len;
    int with_body = req->method != HD_M_HEAD;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256 + (with_body && !n_bufs ? len : 0));
    hd_http_build_head(h, &sb, status, extra_headers, is_close);
    if (content_type) {
        hd_sbuf_appends(&sb, "Content-Type: ");
        hd_sbuf_appends(&sb, content_type);
        hd_sbuf_appends(&sb, "\r\n");
    }
    if (status == 204 || status == 304) {
        /* No content, and no Content-Length (RFC 9110 8.6) */
        with_body = 0;
        len = 0;
        hd_sbuf_appends(&sb, "\r\n");
    } else {
        hd_sbuf_appends(&sb, "Content-Length: ");
        hd_sbuf_append_u64(&sb, len);
        hd_sbuf_appends(&sb, "\r\n\r\n");
    }
    if (with_body && body && len)
        hd_sbuf_append(&sb, body, len);
    hd_buf_t *b = hd_sbuf_finish(&sb);
    hd_conn_send(c, b, 0, b->len);
    hd_buf_unref(b);
    for (size_t i = 0; with_body && i < n_bufs; i++)
        hd_conn_send(c, bufs[i], 0, bufs[i]->len);
    hd_http_access_log(h, status, len);
    hd_http_reset_request(h);
    if (is_close) {
        hd_conn_finish(c);
        return;
    }
    hd_conn_set_timeout(c, conf_of(h)->keepalive_timeout_ms);
    if (!h->is_dispatching)
        h->on_answered(h); /* a deferred response: go on with what was pipelined */
}

void hd_http_respond(hd_req_t *req, int status, const char *extra_headers, const char *content_type,
                     const void *body, size_t len)
{
    respond(req, status, extra_headers, content_type, body, len, NULL, 0);
}

void hd_http_respond_bufs(hd_req_t *req, int status, const char *extra_headers,
                          const char *content_type, hd_buf_t *const *bufs, size_t n)
{
    respond(req, status, extra_headers, content_type, NULL, 0, bufs, n);
}

static void json_escape_into(char *out, size_t outlen, const char *msg)
{
    size_t n = 0;
    for (; *msg && n + 7 < outlen; msg++) {
        unsigned char ch = (unsigned char)*msg;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, outlen - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
}

void hd_http_respond_error(hd_req_t *req, int status, const char *msg)
{
    char esc[512], body[600];
    json_escape_into(esc, sizeof(esc), msg);
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d}", esc, status);
    hd_http_respond(req, status, NULL, "application/json", body, (size_t)n);
}

hd_deferred_t *hd_http_defer(hd_req_t *req)
{
    hd_http_t *h = req->http_;
    HD_ASSERT(h->deferred == NULL);
    h->deferred = hd_calloc(1, sizeof(*h->deferred));
    h->deferred->req = req;
    return h->deferred;
}

void hd_http_defer_timeout(hd_deferred_t *d, uint64_t timeout_ms)
{
    hd_conn_set_timeout(d->req->conn, timeout_ms);
}

void hd_http_end_deferred(hd_http_t *h)
{
    free(h->deferred);
    h->deferred = NULL;
}

void hd_http_free(hd_http_t *h)
{
    if (h->deferred) {
        hd_deferred_t *d = h->deferred;
        d->req = NULL;
        if (d->on_abort)
            d->on_abort(d);
        hd_http_end_deferred(h);
    }
    hd_http_reset_request(h);
    free(h->pending);
    free(h);
}
