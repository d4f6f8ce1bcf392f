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
#define _GNU_SOURCE
#include "herald/conf.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t main_loop;
static hd_conf_t *conf;
static hd_server_t *srv;
static hd_worker_t *wk;
static hd_router_t *router;
static hd_deferred_t *deferred;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- handlers: each exercises a different part of the request API ---- */

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

static void pump(int n)
{
    for (int i = 0; i < n; i++)
        uv_run(&wk->loop, UV_RUN_NOWAIT);
}

static char sink[1 << 16];

/* Reads and drops what the server sent; returns the byte count, or -1 at EOF. */
static ssize_t drain(int fd)
{
    ssize_t total = 0;
    for (;;) {
        ssize_t n = read(fd, sink, sizeof(sink));
        if (n > 0) {
            total += n;
            continue;
        }
        if (n == 0)
            return total ? total : -1;
        return total;
    }
}

/* Answers a deferred request (held ones wait for their timer or their client). */
static void answer_deferred(void)
{
    if (!deferred || deferred->on_timeout)
        return;
    hd_req_t *req = deferred->req;
    deferred = NULL;
    hd_http_respond(req, 200, NULL, "text/plain", "late", 4);
}

/* Runs the loop until the client sees nothing new for a few passes. */
static void settle(int fd)
{
    int quiet = 0;
    for (int i = 0; i < 10000 && quiet < 3; i++) {
        pump(1);
        answer_deferred();
        quiet = drain(fd) > 0 ? 0 : quiet + 1;
    }
}

static void send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            pump(1);
            drain(fd);
        } else {
            return; /* the server closed */
        }
    }
}

/* Size of the next write for split pattern `mode`. */
static size_t next_cut(uint8_t mode, uint32_t *rng, size_t left)
{
    size_t n;
    switch (mode & 3) {
    case 0:
        n = left;
        break;
    case 1:
        n = 1;
        break;
    case 2:
        n = 1 + (size_t)(mode >> 2);
        break;
    default:
        *rng = *rng * 1103515245u + 12345u;
        n = 1 + (*rng >> 16) % (1 + (size_t)(mode >> 2) * 4);
        break;
    }
    return n < left ? n : left;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (srv)
        return 0;
    static const char *const ov[] = {
        "max_url_size 256",   "max_header_size 1k", "max_body_size 1k",     "keepalive_requests 6",
        "header_timeout 10s", "body_timeout 10s",   "keepalive_timeout 10s"};
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    hd_log_set_level(HD_LOG_ERROR);
    CHECK(uv_loop_init(&main_loop) == 0);
    if (hd_conf_load_string(&conf, "fuzz", "", ov, sizeof(ov) / sizeof(ov[0]), err, sizeof(err)) !=
        0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
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
    CHECK(hd_server_new_embedded(&srv, conf, hd_http_accept, &main_loop) == 0);
    wk = hd_server_worker(srv, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    uint32_t rng = mode;
    data++;
    size--;

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    CHECK(hd_server_adopt(srv, sv[1]) != NULL);
    int fd = sv[0];

    while (size > 0) {
        size_t n = next_cut(mode, &rng, size);
        send_all(fd, data, n);
        data += n;
        size -= n;
        pump(2);
        answer_deferred();
        drain(fd);
    }
    settle(fd);
    close(fd);

    /* Everything must be freed once the peer is gone (a deferred answer may still be due). */
    for (int i = 0; i < 100000 && hd_server_conn_count(srv) > 0; i++) {
        pump(1);
        answer_deferred();
        if (i % 64 == 63)
            usleep(100); /* a held request's timer */
    }
    CHECK(hd_server_conn_count(srv) == 0);
    CHECK(deferred == NULL);
    CHECK(HD_STAT_GET(wk, conns) == 0);
    return 0;
}
