/* SPDX-License-Identifier: MIT */
/*
 * request.c: the request handlers see (hd_req_t): built from what parse.c collected, its strings
 * pointing into the connection's head and body buffers, reset (buffers freed) once it is
 * answered; and the accessors for its headers and query string.
 */
#include "internal.h"

#include "herald/auth.h"

#include <string.h>
#include <strings.h>

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

/*
 * The request's client (hd_req_client_ip): behind a trusted proxy, the right-most untrusted
 * address of X-Forwarded-For (every line of it, in order), or of Forwarded when there is no
 * X-Forwarded-For.
 */
static void resolve_client(hd_http_t *h, hd_req_t *r)
{
    const hd_cidr_list_t *trusted = &conf_of(h)->trusted_proxies;
    const hd_ip_t *peer = hd_conn_client_addr(h->conn);
    const char *values[MAX_HEADERS];
    size_t lens[MAX_HEADERS], n = 0;
    int is_forwarded = 0;

    r->client_ip_ = *peer;
    if (trusted->n == 0 || !hd_cidr_list_match(trusted, peer))
        return;
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        const char *name = pass == 0 ? "x-forwarded-for" : "forwarded";
        size_t nl = strlen(name);
        for (size_t i = 0; i < r->n_headers; i++) {
            const hd_header_t *hd = &r->headers[i];
            if (hd->name_len == nl && strncasecmp(hd->name, name, nl) == 0) {
                values[n] = hd->value;
                lens[n++] = hd->value_len;
            }
        }
        is_forwarded = pass == 1;
    }
    hd_ip_forwarded_client(peer, trusted, values, lens, n, is_forwarded, &r->client_ip_);
}

hd_http_t *hd_http_new(hd_conn_t *c)
{
    hd_http_t *h = hd_calloc(1, sizeof(*h));
    hd_bucket_init(&h->pub_bucket);
    h->conn = c;
    h->hdrs = h->hdrs_inline;
    return h;
}

hdr_off_t *hd_http_next_hdr(hd_http_t *h)
{
    HD_ASSERT(h->n_hdrs < MAX_HEADERS);
    if (h->n_hdrs == HDRS_INLINE && h->hdrs == h->hdrs_inline) {
        h->hdrs = hd_malloc(MAX_HEADERS * sizeof(*h->hdrs));
        memcpy(h->hdrs, h->hdrs_inline, sizeof(h->hdrs_inline));
    }
    return &h->hdrs[h->n_hdrs];
}

void hd_http_build_request(hd_http_t *h)
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
    resolve_client(h, r);
}

void hd_http_reset_request(hd_http_t *h)
{
    free(h->head);
    free(h->body);
    free(h->req_headers);
    free(h->resp_headers_owned);
    free(h->authority);
    h->authority = NULL;
    h->head = h->body = NULL;
    h->req_headers = NULL;
    h->resp_headers = h->resp_headers_owned = NULL;
    h->head_len = h->head_cap = h->url_len = 0;
    h->body_len = h->body_cap = 0;
    h->n_hdrs = 0;
    if (h->hdrs != h->hdrs_inline)
        free(h->hdrs);
    h->hdrs = h->hdrs_inline;
    memset(&h->hdrs[0], 0, sizeof(h->hdrs[0]));
    h->error = 0;
    h->error_msg = NULL;
    h->path_off = 0;
    h->is_expect_continue = 0;
    h->is_bad_method = 0;
    h->is_chunked_body = 0;
    hd_identity_unref(h->req.proven_id_);
    memset(&h->req, 0, sizeof(h->req));
    h->phase = PHASE_IDLE;
}

void hd_req_set_response_headers(hd_req_t *req, const char *lines, int is_copy)
{
    hd_http_t *h = req->http_;
    free(h->resp_headers_owned);
    h->resp_headers_owned = is_copy && lines ? hd_strdup(lines) : NULL;
    h->resp_headers = is_copy ? h->resp_headers_owned : lines;
}

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

int hd_http_publish_take(hd_req_t *req, uint32_t rate, uint64_t *retry_ms)
{
    hd_http_t *h = req->http_;
    /* One bucket per connection: an HTTP/2 client's streams share their connection's. */
    hd_bucket_t *b = h->h2s ? &h->h2s->h2->pub_bucket : &h->pub_bucket;
    *retry_ms = 0;
    return rate == 0 || hd_bucket_take(b, uv_now(&req->conn->worker->loop), rate, rate, retry_ms);
}
