/* SPDX-License-Identifier: MIT */
/*
 * http.h: HTTP/1.1 on top of the connection layer (llhttp), and the router.
 *
 * One request is handled at a time per connection: when a request is complete, parsing pauses,
 * the handler runs, and the next pipelined request is parsed only once the response has been
 * queued, so responses always leave in request order. A handler may answer at once
 * (hd_http_respond), later (hd_http_defer, then hd_http_respond from any callback on the same
 * loop: long polling), or take the connection over for a stream (hd_http_take_over: SSE,
 * WebSocket).
 *
 * Unknown paths (404), methods herald knows but not on that path (405 + Allow) and methods it
 * implements nowhere (501) are answered and the connection goes on. An absolute-form target
 * ("GET http://host/path") is served as its path. While more than 64 KiB of responses wait to
 * be written, the next pipelined request is not parsed and the connection is not read.
 * Refused, each answered with its status and then the connection is finished:
 *   request line/URL > max_url_size -> 414, header section > max_header_size -> 431,
 *   body > max_body_size -> 413, Content-Length with Transfer-Encoding or conflicting lengths
 *   -> 400, malformed -> 400, an unknown method llhttp cannot parse -> 501, HTTP major version
 *   other than 1 -> 505, HTTP/1.1 without Host, two Host lines or an invalid Host -> 400,
 *   unsupported Expect -> 417, header_timeout / body_timeout (each a deadline for the whole
 *   head / body) -> 408.
 */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "herald/conn.h"

enum {
    HD_M_GET = 1 << 0,
    HD_M_HEAD = 1 << 1,
    HD_M_POST = 1 << 2,
    HD_M_PUT = 1 << 3,
    HD_M_DELETE = 1 << 4,
    HD_M_OPTIONS = 1 << 5,
    HD_M_PATCH = 1 << 6,
    HD_M_OTHER = 1 << 7,
};

typedef struct hd_header_s {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} hd_header_t;

typedef struct hd_http_s hd_http_t;

typedef struct hd_req_s {
    hd_conn_t *conn;
    hd_http_t *http_;
    unsigned method; /* HD_M_* */
    const char *method_name;
    const char *url; /* path and query as received */
    size_t url_len;
    const char *path; /* up to '?' */
    size_t path_len;
    const char *query; /* after '?', not including it; NULL when absent */
    size_t query_len;
    hd_header_t *headers;
    size_t n_headers;
    const char *body;
    size_t body_len;
    uint8_t version_major, version_minor;
    unsigned is_keepalive : 1;
    unsigned is_upgrade : 1;
    uint64_t start_ms;
    hd_ip_t client_ip_; /* hd_req_client_ip */
    /* An identity proven while the request waited, for its handler run again by
     * hd_http_redispatch (a consumed ticket: hd_tp_connect_credential takes it). One reference,
     * dropped with the request if nobody took it. */
    hd_identity_t *proven_id_;
    unsigned is_proven_ : 1;       /* proven_id_ is the credential, even when NULL (anonymous) */
    unsigned is_hook_allowed_ : 1; /* the authorize hook allowed its subscribe=hook channels */
} hd_req_t;

/* ---- router ---- */

typedef void (*hd_handler_cb)(hd_req_t *req, void *arg);
typedef struct hd_router_s hd_router_t;

hd_router_t *hd_router_new(void);
void hd_router_free(hd_router_t *r);
/*
 * Maps `methods` (HD_M_* mask; GET implies HEAD) on `path` to cb. With is_prefix, every path
 * starting with `path` matches; the longest match wins. Routes are added before the workers
 * start and never changed afterwards (the table is shared read-only).
 */
void hd_router_add(hd_router_t *r, unsigned methods, const char *path, int is_prefix,
                   hd_handler_cb cb, void *arg);
/*
 * Finds the route for method+path. Returns 0 with cb and arg set, HD_ENOTFOUND, or HD_EMETHOD with
 * *allow set to the mask of methods the path accepts.
 */
int hd_router_match(const hd_router_t *r, unsigned method, const char *path, size_t len,
                    hd_handler_cb *cb, void **arg, unsigned *allow);
/* Writes "GET, HEAD, POST" for a mask. */
void hd_http_allow_string(unsigned mask, char *out, size_t len);

/* ---- serving ---- */

/* The router used by every HTTP connection (set once at start, before workers run). */
void hd_http_set_router(const hd_router_t *r);
/*
 * A check run on every request (of a method herald knows) before it is routed, set once at
 * start like the router: returns 0 to route the request, or -1 once it has answered it. Who may
 * reach what (src/api/access.c) is decided there, so the HTTP layer knows no path. NULL: none.
 */
typedef int (*hd_http_guard_cb)(hd_req_t *req);
void hd_http_set_guard(hd_http_guard_cb guard);
/* Installs the HTTP handler on a freshly accepted connection (hd_accept_cb). */
void hd_http_accept(hd_conn_t *c);

/*
 * The request's client: the connection's address (hd_conn_client_addr: the socket's peer or
 * the PROXY header's client), unless that address is in trusted_proxies, in which case
 * X-Forwarded-For (or, without one, Forwarded: for=) is walked from the right past every
 * trusted address (hd_ip_forwarded_client). Resolved once per request, when its head is
 * complete; spoofed headers from an untrusted peer are ignored. Use it for decisions about
 * this request (is the client loopback? hd_ip_is_loopback) and its logs; the per-address
 * connection limits count hd_conn_client_addr instead, known before any request.
 */
static inline const hd_ip_t *hd_req_client_ip(const hd_req_t *req)
{
    return &req->client_ip_;
}

/*
 * client_publish_rate on HTTP: a token from the connection's bucket of `rate` per second (a
 * second's worth at once; 0: no limit). Returns 1, or 0 with *retry_ms until one is back. For
 * publishes a client makes on a token, not the backend's publish key.
 */
int hd_http_publish_take(hd_req_t *req, uint32_t rate, uint64_t *retry_ms);

/* Header value by name (case-insensitive), NULL if absent. */
const char *hd_req_header(const hd_req_t *req, const char *name, size_t *len);
/*
 * Header lines ("Name: value\r\n", each complete) that every response to req carries, a
 * stream's head included, besides what the handler passes (the CORS headers, set by the guard:
 * src/api/access.c). `lines` must stay valid until req is answered (a string literal), unless
 * is_copy, which copies it (freed with the request). Replaces what was set before; NULL: none.
 */
void hd_req_set_response_headers(hd_req_t *req, const char *lines, int is_copy);
/*
 * Query parameter by name: copies the percent-decoded value of the first occurrence into out
 * (NUL-terminated) and returns its length, or -1 when absent or longer than outlen - 1.
 */
int hd_req_query(const hd_req_t *req, const char *name, char *out, size_t outlen);

/*
 * Queues the response: status line, Server, Date, `extra_headers` (complete "Name: value\r\n"
 * lines, may be NULL), Content-Type (if not NULL), Content-Length and the body (not for HEAD).
 * Then the connection goes on with the next request, or finishes when it must close.
 */
void hd_http_respond(hd_req_t *req, int status, const char *extra_headers, const char *content_type,
                     const void *body, size_t len);
/* Same, the body being the concatenation of bufs (each queued by reference, not copied). */
void hd_http_respond_bufs(hd_req_t *req, int status, const char *extra_headers,
                          const char *content_type, hd_buf_t *const *bufs, size_t n);
/* A JSON error response {"error":"msg"}; statuses >= 400 caused by the client keep the
 * connection unless the request could not be framed. */
void hd_http_respond_error(hd_req_t *req, int status, const char *msg);
/*
 * The handler will respond later (from any callback on the same loop). Returns a handle owned by
 * the HTTP layer: it is freed when the response is queued (hd_http_respond / take_over) or, if
 * the connection goes away first, right after on_abort ran; touch it after neither.
 * While deferred, hd_http_defer_timeout arms the connection's timer; when it fires on_timeout
 * runs (it should respond). Without on_timeout the connection is closed.
 */
typedef struct hd_deferred_s hd_deferred_t;
struct hd_deferred_s {
    hd_req_t *req;
    void (*on_abort)(hd_deferred_t *d);
    void (*on_timeout)(hd_deferred_t *d);
    /* An operator's order (conn.h hd_kick_t) reached the held request; its connection's identity
     * already matched, unless k is a channel. Answer it and return 1, or return 0 (not
     * concerned). NULL: never concerned. */
    int (*on_kick)(hd_deferred_t *d, const hd_kick_t *k);
    void *data; /* the handler's */
};
hd_deferred_t *hd_http_defer(hd_req_t *req);
void hd_http_defer_timeout(hd_deferred_t *d, uint64_t timeout_ms);
/*
 * Ends the deferral d (freed here) and runs the request's route handler again, as when it
 * arrived (the guard is not asked twice): for a handler that had to wait for something before
 * it could decide (a ticket asked of the broker), and then decides from the start. The
 * request's strings and body are still valid; what the wait learnt travels in the request
 * (proven_id_). Call it from a callback on the connection's loop, never from inside the
 * handler's first run.
 */
void hd_http_redispatch(hd_deferred_t *d);
/*
 * For streams: writes the response head (status, headers, no length: the body runs until the
 * connection closes) and hands the connection to `ops`/`data`. The request (and everything it
 * points to) is freed: copy what you need first. Bytes the client sent after the request are
 * passed to ops->on_data before this returns.
 */
void hd_http_take_over(hd_req_t *req, int status, const char *head_headers,
                       const hd_conn_ops_t *ops, void *data);

const char *hd_http_status_text(int status);

/* Called for every finished request when the access log is on (and for stats). */
#endif
