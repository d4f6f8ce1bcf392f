/* SPDX-License-Identifier: MIT */
/*
 * clientjs.c: GET /herald.js, the browser client (clients/js/herald.js, docs/client-js.md),
 * embedded in the binary at build time (CMake turns the file into gen/herald_js.h), so a page
 * loads it from the push server itself without a build step:
 *
 *     <script type="module">import { Herald } from "https://push.example.com/herald.js";
 *
 * The answer is the same bytes for the life of the binary: a strong ETag (the start of the
 * file's SHA-256) lets browsers revalidate cheaply (If-None-Match -> 304), Cache-Control lets
 * them reuse it for a few minutes, and Access-Control-Allow-Origin: * lets a page of any origin
 * load it as a module (a module script is fetched in CORS mode). It is public code: no
 * cors_origins list applies. client_js off (a reload) answers 404 as for an unknown path.
 */
#include "herald/api.h"

#include "herald_js.h" /* generated from clients/js/herald.js: herald_js[], its length, SHA-256 */

#include <stdio.h>
#include <string.h>

/* The ETag: the first 32 hex digits of the file's SHA-256, quoted (a strong validator); set
 * once by hd_clientjs_register, before the workers start, and only read afterwards. */
static char etag[2 + 32 + 1];

#define HEADERS_FMT                                                                                \
    "ETag: %s\r\nCache-Control: public, max-age=300\r\nAccess-Control-Allow-Origin: *\r\n"         \
    "X-Content-Type-Options: nosniff\r\n"
static char headers[sizeof(HEADERS_FMT) + sizeof(etag)];

/* 1 if the If-None-Match list (RFC 9110 13.1.2: "*" or entity tags, weak ones compared weakly)
 * names our tag. */
static int none_match(const char *v, size_t len)
{
    size_t i = 0, tl = strlen(etag);
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        const char *t = v + start;
        size_t n = end - start;
        if (n == 1 && t[0] == '*')
            return 1;
        if (n > 2 && t[0] == 'W' && t[1] == '/') {
            t += 2;
            n -= 2;
        }
        if (n == tl && memcmp(t, etag, tl) == 0)
            return 1;
    }
    return 0;
}

static void on_herald_js(hd_req_t *req, void *arg)
{
    (void)arg;
    if (!hd_worker_conf(req->conn->worker)->client_js) {
        hd_http_respond_error(req, 404, "not found");
        return;
    }
    size_t len = 0;
    const char *inm = hd_req_header(req, "if-none-match", &len);
    if (inm && none_match(inm, len)) {
        hd_http_respond(req, 304, headers, NULL, NULL, 0);
        return;
    }
    hd_http_respond(req, 200, headers, "text/javascript; charset=utf-8", herald_js, HERALD_JS_LEN);
}

void hd_clientjs_register(hd_router_t *r)
{
    static const char sha[] = HERALD_JS_SHA256;
    etag[0] = '"';
    memcpy(etag + 1, sha, 32);
    etag[33] = '"';
    etag[34] = '\0';
    snprintf(headers, sizeof(headers), HEADERS_FMT, etag);
    hd_router_add(r, HD_M_GET, "/herald.js", 0, on_herald_js, NULL);
}
