/* SPDX-License-Identifier: MIT */
/*
 * fuzz_h2.c: libFuzzer harness for HTTP/2 (src/http/h2.c, h2_stream.c, h2_out.c: the nghttp2
 * session glue, streams as stream connections, limits, deferred responses, take-over) through an
 * embedded server. nghttp2 parses the frames; what is fuzzed is herald's handling of whatever
 * sequence of frames, streams, resets and windows a client can make.
 *
 * The first byte of an input picks how the rest is cut into writes (whole, byte by byte, fixed
 * sizes, pseudo-random sizes); the client connection preface is sent first, then the rest (the
 * frames: the corpus holds frame sequences python3-h2 wrote), over a fresh connection with the
 * worker loop run between writes. Deferred requests are answered and streams that stopped
 * reading ('S' on /stream) read again after each loop pass; then the client closes and the
 * loop runs until the connection and its streams are freed, so nothing survives from one input
 * to the next.
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

#define CHECK(cond) HD_EMB_CHECK(cond)

/* ---- handlers: request_handlers.h's, and those of this harness ---- */

/* Held requests: one per stream at most, http2_max_streams of them. */
#define MAX_HELD 16
static hd_deferred_t *held[MAX_HELD];

static void forget(hd_deferred_t *d)
{
    for (int i = 0; i < MAX_HELD; i++) {
        if (held[i] == d) {
            held[i] = NULL;
            return;
        }
    }
    CHECK(0 && "an unknown deferred request");
}

static void keep(hd_deferred_t *d)
{
    for (int i = 0; i < MAX_HELD; i++) {
        if (!held[i]) {
            held[i] = d;
            return;
        }
    }
    CHECK(0 && "more deferred requests than streams");
}

static void on_abort(hd_deferred_t *d)
{
    forget(d);
}

static void h_defer(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_deferred_t *d = hd_http_defer(req);
    d->on_abort = on_abort;
    keep(d);
}

/* A held request (long poll): its 1 ms timeout answers unless the client leaves first. */
static void on_hold_timeout(hd_deferred_t *d)
{
    forget(d);
    hd_http_respond(d->req, 504, NULL, NULL, "held", 4);
}

static void h_hold(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_deferred_t *d = hd_http_defer(req);
    d->on_abort = on_abort;
    d->on_timeout = on_hold_timeout;
    hd_http_defer_timeout(d, 1);
    keep(d);
}

static void h_bufs(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_buf_t *bufs[2] = {hd_buf_new_copy("shared ", 7), hd_buf_new_copy(req->path, req->path_len)};
    hd_http_respond_bufs(req, 200, NULL, "text/plain", bufs, 2);
    hd_buf_unref(bufs[0]);
    hd_buf_unref(bufs[1]);
}

/* Streams that stopped reading ('S'): they read again after the loop pass (answer_deferred),
 * so what their client sends meanwhile is held by the stream and handed over later. */
#define MAX_STOPPED 16
static hd_conn_t *stopped[MAX_STOPPED];

static void stream_data(hd_conn_t *c, const char *data, size_t len)
{
    if (len > 0 && data[0] == 'Q') {
        hd_conn_finish(c);
        return;
    }
    if (len > 0 && data[0] == 'S') {
        for (int i = 0; i < MAX_STOPPED; i++) {
            if (!stopped[i] || stopped[i] == c) {
                stopped[i] = c;
                hd_conn_read_stop(c);
                break;
            }
        }
    }
    hd_conn_send_copy(c, data, len);
}

static void stream_close(hd_conn_t *c)
{
    for (int i = 0; i < MAX_STOPPED; i++)
        if (stopped[i] == c)
            stopped[i] = NULL;
}

static const hd_conn_ops_t stream_ops = {
    .name = "fuzzstream", .on_data = stream_data, .on_close = stream_close};

static void h_stream(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_take_over(req, 200, "Content-Type: text/plain\r\nConnection: close\r\n", &stream_ops,
                      NULL);
}

/* ---- driving the loop ---- */

/* Answers a deferred request after every loop pass (held ones wait for their timer or their
 * client), and streams that stopped reading read again. */
static void answer_deferred(hd_embedded_t *e, void *arg)
{
    (void)e;
    (void)arg;
    for (int i = 0; i < MAX_STOPPED; i++) {
        hd_conn_t *c = stopped[i];
        stopped[i] = NULL;
        if (c)
            hd_conn_read_start(c);
    }
    for (int i = 0; i < MAX_HELD; i++) {
        hd_deferred_t *d = held[i];
        if (!d || d->on_timeout)
            continue;
        held[i] = NULL;
        hd_http_respond(d->req, 200, NULL, "text/plain", "late", 4);
    }
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
                      "max_body_size 1k", "header_timeout 10s", "body_timeout 10s",
                      "keepalive_timeout 10s", "http2_max_streams 8", "http2_reset_rate 5",
                      "http2_max_queue_bytes 64k", "max_queue_bytes 4k");
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
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    hd_embedded_send_all(&node, fd, preface, sizeof(preface) - 1, NULL);
    hd_embedded_pump(&node, 2);
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
    for (int i = 0; i < MAX_HELD; i++)
        CHECK(held[i] == NULL);
    hd_embedded_check_clean(&node);
    return 0;
}
