/* SPDX-License-Identifier: MIT */
/*
 * parse.c: llhttp's callbacks for a request. The head (URL, then each header name and value) and
 * the body are appended to their buffers as llhttp reports the spans, each under its limit
 * (max_url_size, max_header_size, max_body_size); a head is validated when complete (HTTP
 * version, field names, Host, the request target, Expect, Content-Length), and a chunked body is
 * left to hd_chunked_feed. Also: what a request line with a method llhttp refused is (501 or 400).
 * Errors are left in h->error / h->error_msg for the connection handler (http.c) to answer.
 */
#include "internal.h"

#include <string.h>
#include <strings.h>

int hd_http_head_append(hd_http_t *h, const char *at, size_t len, size_t limit)
{
    if (h->head_len + len > limit)
        return -1;
    if (len == 0)
        return 0; /* llhttp reports empty spans ("CONNECT \n"); head may still be NULL */
    /* An HTTP/2 head comes as whole fields (no llhttp spans to gather): its buffer starts
     * small, so that a burst of streams waiting for their answers holds little. */
    h->head = hd_grow(h->head, &h->head_cap, h->head_len + len, h->h2s ? 128 : 1024, 0);
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
    if (hd_http_head_append(h, at, len, conf_of(h)->max_url_bytes) < 0)
        return fail(h, HD_EURITOOLONG);
    h->url_len = h->head_len;
    return 0;
}

static int header_limit_check(hd_http_t *h, const char *at, size_t len)
{
    const hd_conf_t *conf = conf_of(h);
    if (hd_http_head_append(h, at, len, h->url_len + conf->max_header_bytes) < 0)
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
    memset(hd_http_next_hdr(h), 0, sizeof(h->hdrs[0]));
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
int hd_http_append_body(void *arg, const char *at, size_t len)
{
    hd_http_t *h = arg;
    const hd_conf_t *conf = conf_of(h);
    if (h->body_len + len > conf->max_body_bytes)
        return HD_EBODYTOOBIG;
    /* The first piece sets the first size: a 64-byte publish takes 64 bytes from malloc's
     * per-thread cache. A fixed 4 KiB went to malloc's large-request path, which consolidates
     * the fast bins first: 4% of the CPU of a publish without subscribers (perf). */
    size_t first = len < 4096 ? (len < 64 ? 64 : len) : 4096;
    h->body = hd_grow(h->body, &h->body_cap, h->body_len + len, first, conf->max_body_bytes);
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    hd_http_t *h = p->data;
    int rc = hd_http_append_body(h, at, len);
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

void hd_http_parser_init(hd_http_t *h)
{
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    /* Any HTTP/x.y parses; on_headers_complete answers 505 to a major version other than 1. */
    h->parser.lenient_flags |= LENIENT_VERSION;
    h->parser.data = h;
}

/*
 * After HPE_INVALID_METHOD, what the request line is: 1 a well-formed line whose method llhttp
 * does not know ("BREW /x HTTP/1.1": answered 501), 0 garbage ("BROKEN LINE", binary: 400),
 * -1 not known yet (the line has not fully arrived). The shape: a method token, SP, a target,
 * SP, "HTTP/d.d", end of line. The method may have begun in an earlier read that llhttp took;
 * what is here must fit the rest of the shape.
 */
int hd_http_classify_bad_method(const char *data, size_t len)
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
