/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ws.c: libFuzzer harness for the WebSocket transport: the frame path (wslay glue,
 * reassembly, UTF-8, close codes, limits) and the /ws JSON protocol, through an embedded server
 * with the embedded broker and a hub, so subscriptions, history, live fan-out and client
 * publishing all run.
 *
 * Input: byte 0 picks how the rest is cut into writes (as in fuzz_http.c); byte 1 picks the
 * handshake (bits 0-1: /ws, /ws/fz, /ws/fz with herald.v1, /ws/fz?since=0-1 with herald.v1;
 * bit 2: publish to "fz" between writes; bit 3: wait for the 101 before writing). The rest is
 * written after a valid handshake: client frames (masked; a zero mask key leaves the payload
 * readable, which the corpus uses). Then the client closes and the loop runs until the
 * connection is freed and the broker has answered everything, so nothing survives one input.
 *
 * Everything the server writes back goes through wire_check.h: every text frame (payloads on
 * /ws/fz, herald.v1 envelopes, /ws replies and error messages) and close reason must be UTF-8,
 * the JSON ones JSON objects with a valid content_type, the framing sound.
 */
#define _GNU_SOURCE
#include "herald/conf.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/server.h"
#include "herald/transport.h"
#include "wire_check.h"

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
static int n_published; /* publishes by the harness not answered yet */
static int barrier_done;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ws: %s:%d: %s\n", __FILE__, __LINE__, #cond);                    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void pump(int n)
{
    for (int i = 0; i < n; i++)
        uv_run(&wk->loop, UV_RUN_NOWAIT);
}

static char sink[1 << 16];
static wire_check_t wire; /* what the client of the current input reads */

/* Reads what the server sent into the wire check; returns the byte count, or -1 at EOF. */
static ssize_t drain(int fd, int *saw_head)
{
    ssize_t total = 0;
    for (;;) {
        ssize_t n = read(fd, sink, sizeof(sink));
        if (n > 0) {
            total += n;
            wire_check_feed(&wire, sink, (size_t)n);
            if (saw_head && wire.state != WIRE_HEAD)
                *saw_head = 1;
            continue;
        }
        if (n == 0) {
            wire_check_eof(&wire);
            return total ? total : -1;
        }
        return total;
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
            drain(fd, NULL);
        } else {
            return; /* the server closed */
        }
    }
}

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

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    (void)arg;
    (void)err;
    (void)msgs;
    (void)n;
    n_published--;
}

static void publish(const char *data, const char *type)
{
    hd_message_t *m = hd_message_new("fz", 2, type, data, strlen(data));
    n_published++;
    hd_tp_publish(wk, &m, 1, on_published, NULL);
}

static void on_barrier(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    hd_breq_free(r);
    barrier_done = 1;
}

/* Runs the loop until the broker has answered everything asked before (one FIFO). */
static void sync_broker(void)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_BARRIER, wk, NULL, 0);
    r->reply_cb = on_barrier;
    barrier_done = 0;
    hd_broker_submit(r);
    for (int i = 0; i < 200000 && !barrier_done; i++) {
        pump(1);
        if (i % 16 == 15)
            usleep(50);
    }
    CHECK(barrier_done);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (srv)
        return 0;
    static const char *const ov[] = {"max_message_size 2k",  "max_queue_bytes 8k",
                                     "history_size 4",       "ws_client_publish on",
                                     "ws_ping_interval 1h",  "ws_idle_timeout 1h",
                                     "header_timeout 10s",   "keepalive_timeout 10s",
                                     "poll_max_messages 10", "ws_origins \"https://ok\""};
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    hd_log_set_level(HD_LOG_ERROR);
    CHECK(uv_loop_init(&main_loop) == 0);
    if (hd_conf_load_string(&conf, "fuzz", "", ov, sizeof(ov) / sizeof(ov[0]), err, sizeof(err)) !=
        0) {
        fprintf(stderr, "fuzz_ws: %s\n", err);
        abort();
    }
    router = hd_router_new();
    hd_ws_register(router);
    hd_http_set_router(router);
    CHECK(hd_server_new_embedded(&srv, conf, hd_http_accept, &main_loop) == 0);
    wk = hd_server_worker(srv, 0);
    hd_hub_init(wk);
    hd_broker_t *broker;
    CHECK(hd_broker_memory_new(&broker, srv, conf) == 0);
    hd_broker_set(broker);
    /* some history on "fz" for resumes */
    publish("one", "text/plain");
    publish("{\"two\":2}", "application/json");
    publish("\x01\x02", "application/octet-stream");
    sync_broker();
    return 0;
}

static const char *const paths[4] = {
    "/ws",
    "/ws/fz",
    "/ws/fz",
    "/ws/fz?since=0-1",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size < 2)
        return 0;
    uint8_t mode = data[0], sel = data[1];
    uint32_t rng = mode;
    data += 2;
    size -= 2;

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    CHECK(hd_server_adopt(srv, sv[1]) != NULL);
    int fd = sv[0];
    wire_check_init(&wire, (sel & 3) == 1 ? WIRE_WS : WIRE_WS_JSON, paths[sel & 3]);

    char hs[512];
    int n = snprintf(hs, sizeof(hs),
                     "GET %s HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "%s%s\r\n",
                     paths[sel & 3], (sel & 3) >= 2 ? "Sec-WebSocket-Protocol: herald.v1\r\n" : "",
                     (sel & 16) ? "Origin: https://ok\r\n" : "");
    send_all(fd, (const uint8_t *)hs, (size_t)n);
    if (sel & 8) {
        int saw_head = 0;
        for (int i = 0; i < 100000 && !saw_head; i++) {
            pump(1);
            if (drain(fd, &saw_head) < 0)
                break;
            if (i % 16 == 15)
                usleep(20);
        }
    }
    int k = 0;
    while (size > 0) {
        size_t cut = next_cut(mode, &rng, size);
        send_all(fd, data, cut);
        data += cut;
        size -= cut;
        pump(2);
        if ((sel & 4) && k++ < 8)
            publish(k % 2 ? "live \xce\xbb" : "\xff\xfe", k % 2 ? "text/plain" : NULL);
        drain(fd, NULL);
    }
    for (int i = 0, quiet = 0; i < 10000 && quiet < 3; i++) {
        pump(1);
        quiet = drain(fd, NULL) > 0 ? 0 : quiet + 1;
    }
    close(fd);
    wire_check_dispose(&wire);

    /* Everything is freed once the peer is gone and the broker has answered. */
    for (int i = 0; i < 100000 && hd_server_conn_count(srv) > 0; i++) {
        pump(1);
        if (i % 64 == 63)
            usleep(100);
    }
    CHECK(hd_server_conn_count(srv) == 0);
    sync_broker();
    CHECK(n_published == 0);
    CHECK(hd_hub_local_subscribers(wk) == 0);
    CHECK(HD_STAT_GET(wk, conns) == 0);
    return 0;
}
