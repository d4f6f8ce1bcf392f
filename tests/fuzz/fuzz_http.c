/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http.c: libFuzzer harness for the HTTP request path (llhttp glue, limits, pipelining,
 * deferred responses, take-over) through an embedded server.
 *
 * The first byte of an input picks how the rest is cut into writes (whole, byte by byte, fixed
 * sizes, pseudo-random sizes); the rest is written over a fresh connection with the worker loop
 * run between writes. Deferred requests are answered, then the client closes and the loop runs
 * until the connection is freed, so nothing survives from one input to the next.
 */
#include "herald/http.h"
#include "herald/log.h"

#include "embedded.h"
#include "request_handlers.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hd_embedded_t node;
static int is_started;
static hd_router_t *router;
static hd_deferred_t *deferred;

#define CHECK(cond) HD_EMB_CHECK(cond)

/* ---- handlers: request_handlers.h's, and those of this harness ---- */

static void on_abort(hd_deferred_t *d)
{
    CHECK(d == deferred);
    deferred = NULL;
}

static void h_defer(hd_req_t *req, void *arg)
{
    (void)arg;
    CHECK(deferred == NULL);
    deferred = hd_http_defer(req);
    deferred->on_abort = on_abort;
}

/* A held request (long poll): its 1 ms timeout answers unless the client leaves first. */
static void on_hold_timeout(hd_deferred_t *d)
{
    CHECK(d == deferred);
    deferred = NULL;
    hd_http_respond(d->req, 504, NULL, NULL, "held", 4);
}

static void h_hold(hd_req_t *req, void *arg)
{
    (void)arg;
    CHECK(deferred == NULL);
    deferred = hd_http_defer(req);
    deferred->on_abort = on_abort;
    deferred->on_timeout = on_hold_timeout;
    hd_http_defer_timeout(deferred, 1);
}

static void h_bufs(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_buf_t *bufs[2] = {hd_buf_new_copy("shared ", 7), hd_buf_new_copy(req->path, req->path_len)};
    hd_http_respond_bufs(req, 200, NULL, "text/plain", bufs, 2);
    hd_buf_unref(bufs[0]);
    hd_buf_unref(bufs[1]);
}

static void stream_data(hd_conn_t *c, const char *data, size_t len)
{
    if (len > 0 && data[0] == 'Q') {
        hd_conn_finish(c);
        return;
    }
    hd_conn_send_copy(c, data, len);
}

static const hd_conn_ops_t stream_ops = {.name = "fuzzstream", .on_data = stream_data};

static void h_stream(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_take_over(req, 101, "Upgrade: fuzz\r\nConnection: Upgrade\r\n", &stream_ops, NULL);
}

/* ---- driving the loop ---- */

/* Answers a deferred request after every loop pass (held ones wait for their timer or their
 * client). */
static void answer_deferred(hd_embedded_t *e, void *arg)
{
    (void)e;
    (void)arg;
    if (!deferred || deferred->on_timeout)
        return;
    hd_req_t *req = deferred->req;
    deferred = NULL;
    hd_http_respond(req, 200, NULL, "text/plain", "late", 4);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (is_started)
        return 0;
    hd_log_set_level(HD_LOG_ERROR);
    router = hd_router_new();
    hd_router_add(router, HD_M_GET, "/healthz", 0, h_health, NULL);
    hd_router_add(router, HD_M_POST | HD_M_PUT, "/echo", 0, h_echo, NULL);
    hd_router_add(router, HD_M_GET | HD_M_POST | HD_M_DELETE, "/i/", 1, h_inspect, NULL);
    hd_router_add(router, HD_M_GET | HD_M_POST, "/defer", 0, h_defer, NULL);
    hd_router_add(router, HD_M_GET, "/stream", 0, h_stream, NULL);
    hd_router_add(router, HD_M_GET, "/hold", 0, h_hold, NULL);
    hd_router_add(router, HD_M_GET | HD_M_POST, "/bufs/", 1, h_bufs, NULL);
    hd_router_add(router, HD_M_OPTIONS | HD_M_PATCH, "/", 1, h_inspect, NULL);
    hd_http_set_router(router);
    HD_EMBEDDED_START(&node, hd_http_accept, "max_url_size 256", "max_header_size 1k",
                      "max_body_size 1k", "keepalive_requests 6", "header_timeout 10s",
                      "body_timeout 10s", "keepalive_timeout 10s");
    node.on_pass = answer_deferred;
    is_started = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!is_started)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    uint32_t rng = mode;
    data++;
    size--;

    int fd = hd_embedded_connect(&node, NULL);
    while (size > 0) {
        size_t n = hd_embedded_next_cut(mode, &rng, size);
        hd_embedded_send_all(&node, fd, data, n, NULL);
        data += n;
        size -= n;
        hd_embedded_pump(&node, 2);
        hd_embedded_read(fd, NULL);
    }
    hd_embedded_settle(&node, fd, NULL, 10000);
    close(fd);

    /* Everything must be freed once the peer is gone (a deferred answer may still be due). */
    CHECK(hd_embedded_wait_idle(&node, 10000) == 0);
    CHECK(deferred == NULL);
    hd_embedded_check_clean(&node);
    return 0;
}
