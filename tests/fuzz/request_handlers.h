/* SPDX-License-Identifier: MIT */
/*
 * request_handlers.h: the request handlers fuzz_http.c and fuzz_h2.c both route to, so that one
 * request API is fuzzed the same way over HTTP/1.1 and HTTP/2: /healthz answers a fixed body,
 * /echo its request body with a header, /i/ reads every header, the host and two query
 * parameters (one into too small a buffer) and answers what it found, or a 422 error for a path
 * of more than 8 bytes ending in '!'. Header-only: each harness includes it once, after
 * herald/http.h.
 */
#ifndef HERALD_FUZZ_REQUEST_HANDLERS_H
#define HERALD_FUZZ_REQUEST_HANDLERS_H

#include "herald/http.h"

#include <stdio.h>

static void h_health(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_respond(req, 200, NULL, "text/plain", "ok\n", 3);
}

static void h_echo(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_respond(req, 200, "X-Echo: 1\r\n", "application/octet-stream", req->body,
                    req->body_len);
}

/* Reads every header and a few query parameters, answers with what it found. */
static void h_inspect(hd_req_t *req, void *arg)
{
    (void)arg;
    char out[64], body[512];
    size_t n = 0, len;
    for (size_t i = 0; i < req->n_headers; i++)
        n += req->headers[i].name_len + req->headers[i].value_len;
    const char *host = hd_req_header(req, "host", &len);
    int a = hd_req_query(req, "a", out, sizeof(out));
    int b = hd_req_query(req, "b", out, 4);
    int k = snprintf(body, sizeof(body), "%zu %d %d %zu %.*s %.*s", n, a, b, req->body_len,
                     (int)req->path_len, req->path, host ? (int)len : 0, host ? host : "");
    if (k < 0 || (size_t)k >= sizeof(body))
        k = (int)sizeof(body) - 1;
    if (req->path_len > 8 && req->path[req->path_len - 1] == '!')
        hd_http_respond_error(req, 422, req->path);
    else
        hd_http_respond(req, 200, NULL, NULL, body, (size_t)k);
}

#endif
