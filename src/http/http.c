/* SPDX-License-Identifier: MIT */
/*
 * http.c: the HTTP/1.1 connection handler: llhttp glue with size limits and timeouts, one
 * request at a time (pipelined requests wait in `pending`), responses, access log.
 *
 * Request bytes live in two per-request buffers, both freed when the response is queued, so an
 * idle keep-alive connection holds only this struct:
 *   head: the URL then each header name and value, appended as llhttp reports the spans
 *         (bounded by max_url_size + max_header_size);
 *   body: the decoded body (bounded by max_body_size).
 */
#include "herald/chunked.h"
#include "herald/http.h"
#include "herald/server.h"

#include <llhttp.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 100

typedef struct hdr_off_s {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_off_t;

enum { PHASE_IDLE, PHASE_HEAD, PHASE_BODY, PHASE_HANDLING };

struct hd_http_s {
    llhttp_t parser;
    hd_conn_t *conn;
    char *head;
    size_t head_len, head_cap;
    size_t url_len;
    hdr_off_t hdrs[MAX_HEADERS];
    size_t n_hdrs;
    char *body;
    size_t body_len, body_cap;
    hd_chunked_t chunked; /* the body's decoder while is_chunked_body */
    char *pending; /* bytes received after the request being handled: [pending_off, pending_len) */
    size_t pending_off, pending_len;
    hd_header_t *req_headers;
    hd_deferred_t *deferred;
    hd_req_t req;
    int error;             /* HD_E* (or a status > 0) raised by a callback */
    const char *error_msg; /* what the client is told about it; NULL: hd_strerror(error) */
    size_t path_off;       /* where the path starts in the URL (after an absolute-form authority) */
    int phase;
    uint32_t served;
    uint64_t start_ms;
    unsigned is_closing_after : 1; /* answer with Connection: close */
    unsigned is_expect_continue : 1;
    unsigned is_dispatching : 1;  /* inside the handler: the caller goes on parsing */
    unsigned is_bad_method : 1;   /* llhttp refused the method: collecting the line */
    unsigned is_chunked_body : 1; /* the body is chunked: hd_chunked_feed, not llhttp, reads it */
    unsigned is_peer_eof : 1;     /* the peer closed its side with requests still pending */
};

static const hd_router_t *router;

void hd_http_set_router(const hd_router_t *r)
{
    router = r;
}

static const hd_conf_t *conf_of(hd_http_t *h)
{
    return hd_worker_conf(h->conn->worker);
}

/* ---- parsing ---- */

static int head_append(hd_http_t *h, const char *at, size_t len, size_t limit)
{
    if (h->head_len + len > limit)
        return -1;
    if (len == 0)
        return 0; /* llhttp reports empty spans ("CONNECT \n"); head may still be NULL */
    if (h->head_len + len > h->head_cap) {
        size_t cap = h->head_cap ? h->head_cap * 2 : 1024;
        while (cap < h->head_len + len)
            cap *= 2;
        h->head = hd_realloc(h->head, cap);
        h->head_cap = cap;
    }
    memcpy(h->head + h->head_len, at, len);
    h->head_len += len;
    return 0;
}

static int fail(hd_http_t *h, int err)
{
    h->error = err;
    return HPE_USER;
}

/* Refuses the request with `status` and a message for the client (a static string). */
static int refuse(hd_http_t *h, int status, const char *msg)
{
    h->error = status;
    h->error_msg = msg;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    hd_http_t *h = p->data;
    h->phase = PHASE_HEAD;
    h->start_ms = uv_now(&h->conn->worker->loop);
    hd_conn_set_timeout(h->conn, conf_of(h)->header_timeout_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    hd_http_t *h = p->data;
    if (head_append(h, at, len, conf_of(h)->max_url_bytes) < 0)
        return fail(h, HD_EURITOOLONG);
    h->url_len = h->head_len;
    return 0;
}

static int header_limit_check(hd_http_t *h, const char *at, size_t len)
{
    const hd_conf_t *conf = conf_of(h);
    if (head_append(h, at, len, h->url_len + conf->max_header_bytes) < 0)
        return -1;
    return 0;
}

/* RFC 9110 tchar: Debian's llhttp is built loose and lets spaces and separators into names. */
static int is_token_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    hd_http_t *h = p->data;
    hdr_off_t *cur = &h->hdrs[h->n_hdrs]; /* zeroed when the previous header completed */
    if (cur->name_len == 0)
        cur->name_off = (uint32_t)h->head_len;
    /* A field name is a token: whitespace before the colon must be refused (RFC 9112 5.1). */
    for (size_t i = 0; i < len; i++) {
        if (!is_token_char((unsigned char)at[i]))
            return fail(h, HD_EBADREQ);
    }
    if (header_limit_check(h, at, len) < 0)
        return fail(h, HD_EHDRTOOBIG);
    cur->name_len += (uint32_t)len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    hd_http_t *h = p->data;
    hdr_off_t *cur = &h->hdrs[h->n_hdrs];
    cur->value_off = (uint32_t)h->head_len;
    cur->value_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    hd_http_t *h = p->data;
    if (header_limit_check(h, at, len) < 0)
        return fail(h, HD_EHDRTOOBIG);
    h->hdrs[h->n_hdrs].value_len += (uint32_t)len;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    hd_http_t *h = p->data;
    hdr_off_t *cur = &h->hdrs[h->n_hdrs];
    /* llhttp strips leading whitespace only; trailing OWS is not part of the value either. */
    while (cur->value_len > 0 && (h->head[cur->value_off + cur->value_len - 1] == ' ' ||
                                  h->head[cur->value_off + cur->value_len - 1] == '\t'))
        cur->value_len--;
    if (++h->n_hdrs == MAX_HEADERS)
        return fail(h, HD_EHDRTOOBIG);
    memset(&h->hdrs[h->n_hdrs], 0, sizeof(h->hdrs[0]));
    return 0;
}

static const char *find_header(hd_http_t *h, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->n_hdrs; i++) {
        if (h->hdrs[i].name_len == nl &&
            strncasecmp(h->head + h->hdrs[i].name_off, name, nl) == 0) {
            *len = h->hdrs[i].value_len;
            return h->head + h->hdrs[i].value_off;
        }
    }
    return NULL;
}

static void send_interim(hd_http_t *h, const char *text)
{
    hd_conn_send_copy(h->conn, text, strlen(text));
}

/* RFC 3986 unreserved / sub-delims: the bytes of a reg-name besides pct-encoded triplets. */
static int is_host_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("-._~!$&'()*+,;=", ch) != NULL);
}

/*
 * 1 if s[0..len) is a valid Host value or absolute-form authority (RFC 9110 7.2, RFC 3986
 * 3.2.2): uri-host [":" port], the host an IP literal in brackets or a reg-name (which may be
 * empty), the port digits. No userinfo, no path, no whitespace.
 */
static int host_valid(const char *s, size_t len)
{
    size_t i = 0;
    if (len > 0 && s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (!is_host_char(ch) && ch != ':')
                return 0;
        }
        if (i == len || i == 1)
            return 0; /* no closing bracket, or nothing inside */
        i++;
    } else {
        for (; i < len && s[i] != ':'; i++) {
            if (s[i] == '%') {
                if (len - i < 3 || hd_hexval(s[i + 1]) < 0 || hd_hexval(s[i + 2]) < 0)
                    return 0;
                i += 2;
            } else if (!is_host_char((unsigned char)s[i])) {
                return 0;
            }
        }
    }
    if (i == len)
        return 1;
    if (s[i] != ':')
        return 0;
    for (i++; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
    }
    return 1;
}

/*
 * The request target. Origin-form ("/path?query") is used as is. Absolute-form
 * ("http://authority/path?query", RFC 9112 3.2.2) is served as its path, "/" when it has none;
 * its authority must be valid. Sets h->path_off. Returns 0, or HPE_USER after refuse().
 */
static int parse_target(hd_http_t *h)
{
    const char *u = h->head;
    size_t len = h->url_len, i = 0;
    h->path_off = 0;
    if (len == 0 || u[0] == '/' || u[0] == '*')
        return 0;
    while (i < len &&
           ((u[i] >= 'a' && u[i] <= 'z') || (u[i] >= 'A' && u[i] <= 'Z') ||
            (i > 0 && ((u[i] >= '0' && u[i] <= '9') || u[i] == '+' || u[i] == '-' || u[i] == '.'))))
        i++;
    if (i == 0 || len - i < 3 || memcmp(u + i, "://", 3) != 0)
        return 0; /* not absolute-form: routed as it is (404) */
    if (!((i == 4 && strncasecmp(u, "http", 4) == 0) ||
          (i == 5 && strncasecmp(u, "https", 5) == 0)))
        return refuse(h, 400, "absolute-form target: only http and https URIs are served");
    size_t auth = i + 3, end = auth;
    while (end < len && u[end] != '/' && u[end] != '?')
        end++;
    if (end == auth || !host_valid(u + auth, end - auth))
        return refuse(h, 400, "absolute-form target: invalid authority");
    h->path_off = end;
    return 0;
}

/* Host (RFC 9112 3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0, each a valid value. */
static int check_host(hd_http_t *h, const llhttp_t *p)
{
    size_t n = 0, len = 0;
    const char *value = NULL;
    for (size_t i = 0; i < h->n_hdrs; i++) {
        if (h->hdrs[i].name_len == 4 &&
            strncasecmp(h->head + h->hdrs[i].name_off, "host", 4) == 0) {
            n++;
            value = h->head + h->hdrs[i].value_off;
            len = h->hdrs[i].value_len;
        }
    }
    if (n > 1)
        return refuse(h, 400, "more than one Host header");
    if (n == 0 && p->http_minor >= 1)
        return refuse(h, 400, "missing Host header (required in HTTP/1.1)");
    if (n == 1 && !host_valid(value, len))
        return refuse(h, 400, "invalid Host header");
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    hd_http_t *h = p->data;
    const hd_conf_t *conf = conf_of(h);
    size_t len;
    /* llhttp is lenient about the version (LENIENT_VERSION): any HTTP/1.x is served as 1.1
     * would be (RFC 9110 2.5), another major version is not ours. */
    if (p->http_major != 1)
        return refuse(h, 505, "HTTP version not supported: this server speaks HTTP/1.0 and 1.1");
    for (size_t i = 0; i < h->n_hdrs; i++) {
        if (h->hdrs[i].name_len == 0)
            return fail(h, HD_EBADREQ); /* ": value": a field name is at least one tchar */
    }
    if (check_host(h, p) != 0 || parse_target(h) != 0)
        return HPE_USER;
    const char *expect = find_header(h, "expect", &len);
    if (p->flags & F_CONTENT_LENGTH && p->content_length > conf->max_body_bytes)
        return fail(h, HD_EBODYTOOBIG);
    if (expect) {
        if (len == 12 && strncasecmp(expect, "100-continue", 12) == 0) {
            if (p->http_major == 1 && p->http_minor >= 1)
                h->is_expect_continue = 1;
        } else {
            return refuse(h, 417, "expectation not supported");
        }
    }
    int has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if (has_body) {
        /* body_timeout is a deadline for the whole body, set once: a client sending a byte now
         * and then cannot hold the connection longer (like header_timeout for the head). */
        h->phase = PHASE_BODY;
        hd_conn_set_timeout(h->conn, conf->body_timeout_ms);
        if (h->is_expect_continue)
            send_interim(h, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    if ((p->flags & F_CHUNKED) && !p->upgrade) {
        /* llhttp refuses valid chunk extensions: the body is ours to decode (execute). Telling
         * llhttp there is none makes it complete the message after the head. */
        hd_chunked_init(&h->chunked, conf->max_body_bytes, (uint32_t)conf->max_header_bytes);
        h->is_chunked_body = 1;
        return 1;
    }
    return 0;
}

/* Appends body bytes (from llhttp or the chunked decoder). 0, or HD_EBODYTOOBIG. */
static int append_body(void *arg, const char *at, size_t len)
{
    hd_http_t *h = arg;
    const hd_conf_t *conf = conf_of(h);
    if (h->body_len + len > conf->max_body_bytes)
        return HD_EBODYTOOBIG;
    if (h->body_len + len > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap * 2 : 4096;
        while (cap < h->body_len + len)
            cap *= 2;
        if (cap > conf->max_body_bytes && conf->max_body_bytes >= h->body_len + len)
            cap = conf->max_body_bytes;
        h->body = hd_realloc(h->body, cap);
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    hd_http_t *h = p->data;
    int rc = append_body(h, at, len);
    return rc ? fail(h, rc) : 0;
}

static int on_message_complete(llhttp_t *p)
{
    hd_http_t *h = p->data;
    if (h->is_chunked_body)
        return HPE_PAUSED; /* the head only: execute decodes the body */
    h->phase = PHASE_HANDLING;
    hd_conn_set_timeout(h->conn, 0);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- responses ---- */

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

static void reset_request(hd_http_t *h)
{
    free(h->head);
    free(h->body);
    free(h->req_headers);
    h->head = h->body = NULL;
    h->req_headers = NULL;
    h->head_len = h->head_cap = h->url_len = 0;
    h->body_len = h->body_cap = 0;
    h->n_hdrs = 0;
    memset(&h->hdrs[0], 0, sizeof(h->hdrs[0]));
    h->error = 0;
    h->error_msg = NULL;
    h->path_off = 0;
    h->is_expect_continue = 0;
    h->is_bad_method = 0;
    h->is_chunked_body = 0;
    memset(&h->req, 0, sizeof(h->req));
    h->phase = PHASE_IDLE;
}

static void access_log(hd_http_t *h, int status, size_t bytes)
{
    if (!hd_log_access_enabled())
        return;
    char line[1024];
    const hd_req_t *r = &h->req;
    uint64_t ms = uv_now(&h->conn->worker->loop) - h->start_ms;
    int n = snprintf(line, sizeof(line), "%s c#%llu \"%s %.*s HTTP/%u.%u\" %d %zu %llums",
                     hd_conn_peer(h->conn), (unsigned long long)h->conn->id,
                     r->method_name ? r->method_name : "-",
                     (int)(r->url_len > 512 ? 512 : r->url_len), r->url ? r->url : "",
                     r->version_major, r->version_minor, status, bytes, (unsigned long long)ms);
    if (n > 0)
        hd_log_access(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static int must_close(hd_http_t *h)
{
    const hd_conf_t *conf = conf_of(h);
    return h->is_closing_after || !h->req.is_keepalive || h->served >= conf->keepalive_requests ||
           h->conn->worker->is_draining || h->conn->worker->is_stopped;
}

static void build_head(hd_http_t *h, hd_sbuf_t *sb, int status, const char *extra, int is_close)
{
    hd_sbuf_appendf(sb, "HTTP/1.1 %d %s\r\nServer: herald/" HERALD_VERSION "\r\nDate: %s\r\n",
                    status, hd_http_status_text(status), hd_worker_date(h->conn->worker));
    if (extra)
        hd_sbuf_appends(sb, extra);
    if (is_close > 0)
        hd_sbuf_appends(sb, "Connection: close\r\n");
    else if (is_close == 0 && h->req.version_major == 1 && h->req.version_minor == 0)
        hd_sbuf_appends(sb, "Connection: keep-alive\r\n");
}

static void continue_parsing(hd_http_t *h);
static void end_deferred(hd_http_t *h);
static void end_at_eof(hd_http_t *h);

/* Queues the head, then the body: either inline bytes or shared buffers (written as they are). */
static void respond(hd_req_t *req, int status, const char *extra_headers, const char *content_type,
                    const void *body, size_t len, hd_buf_t *const *bufs, size_t n_bufs)
{
    hd_http_t *h = req->http_;
    hd_conn_t *c = h->conn;
    end_deferred(h);
    h->served++;
    HD_STAT_INC(c->worker, requests);
    int is_close = must_close(h) || req->is_upgrade;
    for (size_t i = 0; i < n_bufs; i++)
        len += bufs[i]->len;
    int with_body = req->method != HD_M_HEAD;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256 + (with_body && !n_bufs ? len : 0));
    build_head(h, &sb, status, extra_headers, is_close);
    if (content_type)
        hd_sbuf_appendf(&sb, "Content-Type: %s\r\n", content_type);
    hd_sbuf_appendf(&sb, "Content-Length: %zu\r\n\r\n", len);
    if (with_body && body && len)
        hd_sbuf_append(&sb, body, len);
    hd_buf_t *b = hd_sbuf_finish(&sb);
    hd_conn_send(c, b, 0, b->len);
    hd_buf_unref(b);
    for (size_t i = 0; with_body && i < n_bufs; i++)
        hd_conn_send(c, bufs[i], 0, bufs[i]->len);
    access_log(h, status, len);
    reset_request(h);
    if (is_close) {
        hd_conn_finish(c);
        return;
    }
    hd_conn_set_timeout(c, conf_of(h)->keepalive_timeout_ms);
    if (!h->is_dispatching)
        continue_parsing(h); /* a deferred response: go on with what was pipelined */
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

static void end_deferred(hd_http_t *h)
{
    free(h->deferred);
    h->deferred = NULL;
}

/* ---- request dispatch ---- */

static unsigned method_bit(int m)
{
    switch (m) {
    case HTTP_GET:
        return HD_M_GET;
    case HTTP_HEAD:
        return HD_M_HEAD;
    case HTTP_POST:
        return HD_M_POST;
    case HTTP_PUT:
        return HD_M_PUT;
    case HTTP_DELETE:
        return HD_M_DELETE;
    case HTTP_OPTIONS:
        return HD_M_OPTIONS;
    case HTTP_PATCH:
        return HD_M_PATCH;
    default:
        return HD_M_OTHER;
    }
}

static void build_request(hd_http_t *h)
{
    hd_req_t *r = &h->req;
    llhttp_t *p = &h->parser;
    r->conn = h->conn;
    r->http_ = h;
    r->method = method_bit(p->method);
    r->method_name = llhttp_method_name((llhttp_method_t)p->method);
    r->url = h->head ? h->head : "";
    r->url_len = h->url_len;
    /* After an absolute-form authority: the path, or "/" when the target has none. */
    const char *target = r->url + h->path_off, *end = r->url + r->url_len;
    const char *q = memchr(target, '?', (size_t)(end - target));
    r->path = target;
    r->path_len = (size_t)((q ? q : end) - target);
    if (h->path_off && r->path_len == 0) {
        r->path = "/";
        r->path_len = 1;
    }
    r->query = q ? q + 1 : NULL;
    r->query_len = q ? (size_t)(end - q - 1) : 0;
    h->req_headers = hd_calloc(h->n_hdrs ? h->n_hdrs : 1, sizeof(hd_header_t));
    for (size_t i = 0; i < h->n_hdrs; i++) {
        h->req_headers[i] =
            (hd_header_t){h->head + h->hdrs[i].name_off, h->head + h->hdrs[i].value_off,
                          h->hdrs[i].name_len, h->hdrs[i].value_len};
    }
    r->headers = h->req_headers;
    r->n_headers = h->n_hdrs;
    r->body = h->body ? h->body : "";
    r->body_len = h->body_len;
    r->version_major = p->http_major;
    r->version_minor = p->http_minor;
    r->is_keepalive = llhttp_should_keep_alive(p) ? 1 : 0;
    r->is_upgrade = p->upgrade ? 1 : 0;
    r->start_ms = h->start_ms;
}

static void dispatch(hd_http_t *h)
{
    h->is_dispatching = 1;
    build_request(h);
    hd_req_t *r = &h->req;
    hd_handler_cb cb;
    void *arg;
    unsigned allow = 0;
    int rc = hd_router_match(router, r->method, r->path, r->path_len, &cb, &arg, &allow);
    hd_conn_t *c = h->conn;
    if (r->method == HD_M_OTHER) {
        /* A method herald implements for no resource (RFC 9110 15.6.2); 405 is for the ones it
         * knows but not on this path. */
        hd_http_respond_error(r, 501, "method not implemented");
    } else if (rc == HD_ENOTFOUND) {
        hd_http_respond_error(r, 404, "not found");
    } else if (rc == HD_EMETHOD) {
        char hdr[160], list[100];
        hd_http_allow_string(allow, list, sizeof(list));
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", list);
        char body[160];
        int n = snprintf(body, sizeof(body), "{\"error\":\"method not allowed\",\"status\":405}");
        hd_http_respond(r, 405, hdr, "application/json", body, (size_t)n);
    } else {
        cb(r, arg);
    }
    if (c->data == h) /* the handler may have finished or handed over the connection */
        h->is_dispatching = 0;
}

/* Answers a request that could not be parsed, then finishes the connection. */
static void respond_parse_error(hd_http_t *h, int status, const char *msg)
{
    hd_conn_log(HD_LOG_INFO, h->conn, "bad request (%d): %s", status, msg);
    build_request(h);
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
 * After HPE_INVALID_METHOD, what the request line is: 1 a well-formed line whose method llhttp
 * does not know ("BREW /x HTTP/1.1": answered 501), 0 garbage ("BROKEN LINE", binary: 400),
 * -1 not known yet (the line has not fully arrived). The shape: a method token, SP, a target,
 * SP, "HTTP/d.d", end of line. The method may have begun in an earlier read that llhttp took;
 * what is here must fit the rest of the shape.
 */
static int classify_bad_method(const char *data, size_t len)
{
    static const char version[] = "HTTP/d.d";
    const char *q = data, *end = data + len;
    while (q < end && (*q == '\r' || *q == '\n'))
        q++; /* empty lines before a request are ignored (RFC 9112 2.2) */
    const char *start = q;
    while (q < end && is_token_char((unsigned char)*q))
        q++;
    if (q == end)
        return -1;
    if (q == start || *q++ != ' ')
        return 0;
    const char *target = q;
    while (q < end && (unsigned char)*q > ' ' && (unsigned char)*q < 0x7f)
        q++;
    if (q == end)
        return -1;
    if (q == target || *q++ != ' ')
        return 0;
    for (size_t i = 0; i < sizeof(version) - 1; i++, q++) {
        if (q == end)
            return -1;
        if (version[i] == 'd' ? (*q < '0' || *q > '9') : *q != version[i])
            return 0;
    }
    if (q == end)
        return -1;
    return *q == '\r' || *q == '\n';
}

/*
 * The request line of a method llhttp refused, collected in head (bounded by max_url_size)
 * until classify_bad_method can tell 501 from 400, then answered.
 */
static void collect_bad_method(hd_http_t *h, const char *data, size_t len)
{
    if (head_append(h, data, len, conf_of(h)->max_url_bytes) < 0) {
        respond_parse_error(h, 400, "malformed request line");
        return;
    }
    int kind = classify_bad_method(h->head, h->head_len);
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
            int rc = hd_chunked_feed(&h->chunked, data, len, &used, append_body, h);
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

static void http_on_data(hd_conn_t *c, const char *data, size_t len)
{
    hd_http_t *h = c->data;
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

static void http_on_close(hd_conn_t *c)
{
    hd_http_t *h = c->data;
    if (h->deferred) {
        hd_deferred_t *d = h->deferred;
        d->req = NULL;
        if (d->on_abort)
            d->on_abort(d);
        end_deferred(h);
    }
    reset_request(h);
    drop_pending(h);
    free(h);
}

static const hd_conn_ops_t http_ops = {
    .name = "http",
    .on_data = http_on_data,
    .on_eof = http_on_eof,
    .on_timeout = http_on_timeout,
    .on_drain = http_on_drain,
    .on_shutdown = http_on_shutdown,
    .on_close = http_on_close,
};

void hd_http_accept(hd_conn_t *c)
{
    hd_http_t *h = hd_calloc(1, sizeof(*h));
    h->conn = c;
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    /* Any HTTP/x.y parses; on_headers_complete answers 505 to a major version other than 1. */
    h->parser.lenient_flags |= LENIENT_VERSION;
    h->parser.data = h;
    hd_conn_set_handler(c, &http_ops, h);
    hd_conn_set_timeout(c, conf_of(h)->header_timeout_ms);
    hd_conn_read_start(c);
}

/* ---- request accessors ---- */

const char *hd_req_header(const hd_req_t *req, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const hd_header_t *hd = &req->headers[i];
        if (hd->name_len == nl && strncasecmp(hd->name, name, nl) == 0) {
            if (len)
                *len = hd->value_len;
            return hd->value;
        }
    }
    return NULL;
}

int hd_req_query(const hd_req_t *req, const char *name, char *out, size_t outlen)
{
    if (!req->query)
        return -1;
    size_t nl = strlen(name);
    const char *p = req->query, *end = req->query + req->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : stop;
            return hd_pct_decode(v, (size_t)(stop - v), out, outlen, HD_PCT_PLUS);
        }
        p = stop + 1;
    }
    return -1;
}

/* ---- streams ---- */

void hd_http_take_over(hd_req_t *req, int status, const char *head_headers,
                       const hd_conn_ops_t *ops, void *data)
{
    hd_http_t *h = req->http_;
    hd_conn_t *c = h->conn;
    end_deferred(h);
    h->served++;
    HD_STAT_INC(c->worker, requests);
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256);
    build_head(h, &sb, status, head_headers, -1); /* the stream names its own Connection */
    hd_sbuf_appends(&sb, "\r\n");
    hd_buf_t *b = hd_sbuf_finish(&sb);
    hd_conn_send(c, b, 0, b->len);
    hd_buf_unref(b);
    access_log(h, status, 0);
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
