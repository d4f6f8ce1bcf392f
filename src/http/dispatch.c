/* SPDX-License-Identifier: MIT */
/*
 * dispatch.c: a complete request, whichever HTTP version carried it (http.c, h2_stream.c), handed
 * to the guard (who may reach what: src/api/access.c) and then to the router's handler; methods
 * herald implements nowhere (501), unknown paths (404) and methods a path does not take (405
 * with Allow) are answered here; a request whose handler waited for something (a ticket) runs
 * it again (hd_http_redispatch).
 */
#include "internal.h"

#include <stdio.h>

static const hd_router_t *router;
static hd_http_guard_cb guard;

void hd_http_set_router(const hd_router_t *r)
{
    router = r;
}

void hd_http_set_guard(hd_http_guard_cb g)
{
    guard = g;
}

void hd_http_dispatch(hd_http_t *h)
{
    h->is_dispatching = 1;
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
    } else if (guard && guard(r) != 0) {
        /* answered: refused, or a CORS preflight */
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

void hd_http_redispatch(hd_deferred_t *d)
{
    hd_req_t *r = d->req;
    hd_http_t *h = r->http_;
    hd_conn_t *c = h->conn;
    hd_handler_cb cb;
    void *arg;
    unsigned allow = 0;
    HD_ASSERT(h->deferred == d && !h->is_dispatching);
    hd_http_end_deferred(h);
    hd_conn_set_timeout(c, 0);
    h->is_dispatching = 1;
    if (hd_router_match(router, r->method, r->path, r->path_len, &cb, &arg, &allow) == 0)
        cb(r, arg);
    else
        hd_http_respond_error(r, 404, "not found");
    if (c->data != h)
        return; /* handed over to a stream */
    h->is_dispatching = 0;
    /* Answered at once: go on with what was pipelined, as a deferred answer does. */
    if (h->phase != PHASE_HANDLING && !c->is_closing)
        h->on_answered(h);
}
