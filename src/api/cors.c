/* SPDX-License-Identifier: MIT */
/*
 * cors.c: cross-origin access for browsers (the Fetch standard's CORS protocol) to what pages
 * read and send: SSE (/sse, /sse/{channel}), polls (/poll/{channel}, /lp/{channel}) and
 * publishing (/pub, /pub/{channel}), under cors_origins. WebSocket handshakes have their own
 * check (ws_origins); the admin endpoints answer no CORS at all.
 *
 *   request's Origin        cors_origins has it     has only "*"          has neither
 *   ----------------------  ----------------------  --------------------  -----------------
 *   Allow-Origin            the origin              *                     (none)
 *   Allow-Credentials       true                    (never with *)        (none)
 *   Vary: Origin            whenever the list names origins (the answer depends on Origin)
 *   preflight (OPTIONS)     204 + Allow-Methods, Allow-Headers, Max-Age   403 (JSON)
 *
 * Nothing here refuses an actual request: without the headers the browser keeps the answer
 * from the page. Who may publish is publish_key's business (a browser is never a local client).
 */
#include "herald/api.h"

#include <string.h>

/* What a page may send: herald reads these request headers on these paths. */
#define ALLOW_HEADERS "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
/* What a page may read besides the CORS-safelisted response headers. */
#define EXPOSE_HEADERS "Retry-After, WWW-Authenticate"
#define STAR                                                                                       \
    "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: " EXPOSE_HEADERS "\r\n"
/* How long a browser may reuse a preflight's answer: a removed origin loses access by then. */
#define MAX_AGE_S "600"

static int path_is(const hd_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static int path_under(const hd_req_t *req, const char *prefix)
{
    size_t n = strlen(prefix);
    return req->path_len > n && memcmp(req->path, prefix, n) == 0;
}

/* The methods of a CORS path ("GET, HEAD" or "POST"), or NULL for a path without CORS. */
static const char *cors_methods(const hd_req_t *req)
{
    if (path_is(req, "/pub") || path_under(req, "/pub/"))
        return "POST";
    if (path_is(req, "/sse") || path_under(req, "/sse/") || path_under(req, "/poll/") ||
        path_under(req, "/lp/"))
        return "GET, HEAD";
    return NULL;
}

/* The entry of list equal to origin[0..len), or NULL; and whether it holds "*" and names. */
static const char *find_origin(const hd_strlist_t *l, const char *origin, size_t len, int *any,
                               int *names)
{
    const char *found = NULL;
    *any = *names = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *o = l->v[i];
        if (strcmp(o, "*") == 0) {
            *any = 1;
            continue;
        }
        *names = 1;
        if (origin && strlen(o) == len && memcmp(o, origin, len) == 0)
            found = o;
    }
    return found;
}

int hd_api_cors(hd_req_t *req)
{
    const hd_strlist_t *l = &hd_worker_conf(req->conn->worker)->cors_origins;
    const char *methods = l->n ? cors_methods(req) : NULL;
    if (!methods)
        return 0;
    size_t olen = 0;
    const char *origin = hd_req_header(req, "origin", &olen);
    int any, names;
    const char *listed = find_origin(l, origin, olen, &any, &names);
    int is_preflight = req->method == HD_M_OPTIONS && origin &&
                       hd_req_header(req, "access-control-request-method", NULL);
    int allowed = listed || any;
    if (!listed && !is_preflight) {
        /* Most requests (any origin, or none listed): a literal, nothing built or copied. */
        static const char *const fixed[2][2] = {
            {NULL, "Vary: Origin\r\n"},
            {STAR, "Vary: Origin\r\n" STAR},
        };
        if (fixed[any][names])
            hd_req_set_response_headers(req, fixed[any][names], 0);
        return 0;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256);
    if (names)
        hd_sbuf_appends(&sb, "Vary: Origin\r\n");
    if (listed) {
        hd_sbuf_appendf(&sb,
                        "Access-Control-Allow-Origin: %s\r\n"
                        "Access-Control-Allow-Credentials: true\r\n",
                        listed);
    } else if (any) {
        hd_sbuf_appends(&sb, "Access-Control-Allow-Origin: *\r\n");
    }
    if (is_preflight && allowed) {
        hd_sbuf_appendf(&sb,
                        "Access-Control-Allow-Methods: %s\r\n"
                        "Access-Control-Allow-Headers: " ALLOW_HEADERS "\r\n"
                        "Access-Control-Max-Age: " MAX_AGE_S "\r\n",
                        methods);
    } else if (allowed) {
        hd_sbuf_appends(&sb, "Access-Control-Expose-Headers: " EXPOSE_HEADERS "\r\n");
    }
    hd_sbuf_append(&sb, "", 1); /* the NUL */
    if (sb.buf->len > 1)
        hd_req_set_response_headers(req, sb.buf->data, 1);
    hd_sbuf_dispose(&sb);
    if (!is_preflight)
        return 0;
    if (allowed) {
        hd_http_respond(req, 204, NULL, NULL, NULL, 0);
    } else {
        hd_conn_log(HD_LOG_INFO, req->conn, "CORS preflight refused: origin not in cors_origins");
        hd_http_respond_error(req, 403, "origin not allowed (cors_origins)");
    }
    return -1;
}
