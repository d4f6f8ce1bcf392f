/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ws.c: libFuzzer harness for the WebSocket transport: the frame path (wslay glue,
 * reassembly, UTF-8, close codes, limits) and the /ws JSON protocol, through an embedded server
 * with the embedded broker and a hub, so subscriptions, history, live fan-out and client
 * publishing all run; channel "pz" has presence (members, snapshot pages, a member's pages).
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
#include "herald/http.h"
#include "herald/log.h"
#include "herald/transport.h"

#include "embedded.h"
#include "wire_check.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hd_embedded_t node;
static int is_started;
static hd_router_t *router;
static int n_published;   /* publishes by the harness not answered yet */
static wire_check_t wire; /* what the client of the current input reads */
static hd_embedded_buf_t rx;

static void feed_wire(void *arg, const char *data, size_t len)
{
    if (data)
        wire_check_feed(arg, data, len);
    else
        wire_check_eof(arg);
}

#define CHECK(cond) HD_EMB_CHECK(cond)

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
    hd_tp_publish(node.wk, &m, 1, on_published, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (is_started)
        return 0;
    hd_log_set_level(HD_LOG_ERROR);
    router = hd_router_new();
    hd_ws_register(router);
    hd_http_set_router(router);
    HD_EMBEDDED_START(&node, hd_http_accept, "max_message_size 2k", "max_queue_bytes 8k",
                      "history_size 4", "ws_client_publish on", "ws_ping_interval 1h",
                      "ws_idle_timeout 1h", "header_timeout 10s", "keepalive_timeout 10s",
                      "poll_max_messages 10", "ws_origins \"https://ok\"",
                      "channel_rule pz subscribe=any publish=subscriber presence=on");
    hd_embedded_start_pubsub(&node);
    is_started = 1;
    /* some history on "fz" for resumes */
    publish("one", "text/plain");
    publish("{\"two\":2}", "application/json");
    publish("\x01\x02", "application/octet-stream");
    hd_embedded_sync_broker(&node);
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
    if (!is_started)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size < 2)
        return 0;
    uint8_t mode = data[0], sel = data[1];
    uint32_t rng = mode;
    data += 2;
    size -= 2;

    int fd = hd_embedded_connect(&node, NULL);
    wire_check_init(&wire, (sel & 3) == 1 ? WIRE_WS : WIRE_WS_JSON, paths[sel & 3]);
    rx = (hd_embedded_buf_t){.is_dropping = 1, .feed = feed_wire, .feed_arg = &wire};
    char hs[512];
    int n = snprintf(hs, sizeof(hs),
                     "GET %s HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "%s%s\r\n",
                     paths[sel & 3], (sel & 3) >= 2 ? "Sec-WebSocket-Protocol: herald.v1\r\n" : "",
                     (sel & 16) ? "Origin: https://ok\r\n" : "");
    hd_embedded_send_all(&node, fd, hs, (size_t)n, &rx);
    if (sel & 8) {
        /* wait for the end of the response head */
        for (int i = 0; i < 100000 && wire.state == WIRE_HEAD; i++) {
            hd_embedded_pump(&node, 1);
            if (hd_embedded_read(fd, &rx) < 0)
                break;
            if (i % 16 == 15)
                usleep(20);
        }
    }
    int k = 0;
    while (size > 0) {
        size_t cut = hd_embedded_next_cut(mode, &rng, size);
        hd_embedded_send_all(&node, fd, data, cut, &rx);
        data += cut;
        size -= cut;
        hd_embedded_pump(&node, 2);
        if ((sel & 4) && k++ < 8)
            publish(k % 2 ? "live \xce\xbb" : "\xff\xfe", k % 2 ? "text/plain" : NULL);
        hd_embedded_read(fd, &rx);
    }
    hd_embedded_settle(&node, fd, &rx, 10000);
    close(fd);
    wire_check_dispose(&wire);

    /* Everything is freed once the peer is gone and the broker has answered. */
    CHECK(hd_embedded_wait_idle(&node, 10000) == 0);
    hd_embedded_sync_broker(&node);
    CHECK(n_published == 0);
    CHECK(hd_hub_local_subscribers(node.wk) == 0);
    hd_embedded_check_clean(&node);
    return 0;
}
