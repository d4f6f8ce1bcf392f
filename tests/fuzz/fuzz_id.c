/* SPDX-License-Identifier: MIT */
/*
 * fuzz_id.c: libFuzzer harness for message ids: hd_id_parse and hd_id_format on their own, and
 * an id given by a client where clients give one (the Last-Event-ID header and ?last_event_id=
 * of SSE, ?since= of polls and WebSocket handshakes), through an embedded server with the
 * embedded broker and a hub, so a resume from any id runs against a channel with history.
 *
 * Input: byte 0 picks where the id goes (bits 0-2, see `places`) and whether a leading "E" is
 * replaced by the broker's current epoch (bit 3), so resumes reach the same-epoch paths; the
 * rest, up to its first CR or LF, is the id. Checked on every input:
 *   - an id hd_id_parse accepts formats back to itself (leading zeros aside), and any (epoch,
 *     seq) formats to an id that parses back to the same pair;
 *   - the server answers 400 for an id hd_id_parse refuses and accepts one it takes (200, or
 *     101 for a WebSocket), and everything is freed when the client leaves.
 */
#include "herald/http.h"
#include "herald/log.h"
#include "herald/pubsub.h"
#include "herald/transport.h"

#include "embedded.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Longest id the harness sends to the server (percent-encoded in a query: three bytes each). */
#define ID_WIRE_MAX 80

static hd_embedded_t node;
static int is_started;
static hd_router_t *router;
static int n_published;  /* publishes by the harness not answered yet */
static char epoch36[16]; /* the broker's epoch in base 36, from a published message's id */

#define CHECK(cond) HD_EMB_CHECK(cond)

/* ---- the id functions on their own ---- */

/* s[0..len) without leading zeros (one zero stays when all are zeros). */
static size_t strip_zeros(const char *s, size_t len, const char **out)
{
    while (len > 1 && s[0] == '0') {
        s++;
        len--;
    }
    *out = s;
    return len;
}

static void check_parse(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so that reading past the id is caught. */
    char *s = malloc(size ? size : 1);
    CHECK(s != NULL);
    memcpy(s, data, size);
    uint64_t e = 0, q = 0;
    int rc = hd_id_parse(s, size, &e, &q);
    CHECK(rc == 0 || rc == HD_EBADREQ);
    if (rc == 0) {
        char id[HD_ID_MAX];
        size_t n = hd_id_format(id, sizeof(id), e, q);
        CHECK(n < sizeof(id) && id[n] == '\0');
        /* Same epoch digits and same seq digits, leading zeros aside. */
        const char *dash_in = memchr(s, '-', size), *dash_out = memchr(id, '-', n);
        CHECK(dash_in != NULL && dash_out != NULL);
        const char *a, *b;
        size_t la = strip_zeros(s, (size_t)(dash_in - s), &a);
        size_t lb = strip_zeros(id, (size_t)(dash_out - id), &b);
        CHECK(la == lb && memcmp(a, b, la) == 0);
        la = strip_zeros(dash_in + 1, (size_t)(s + size - dash_in - 1), &a);
        lb = strip_zeros(dash_out + 1, (size_t)(id + n - dash_out - 1), &b);
        CHECK(la == lb && memcmp(a, b, la) == 0);
    }
    free(s);

    /* Any pair the input spells (16 bytes, little end first) formats and parses back. */
    if (size >= 16) {
        uint64_t pe = 0, pq = 0;
        for (int i = 7; i >= 0; i--) {
            pe = pe << 8 | data[i];
            pq = pq << 8 | data[8 + i];
        }
        char id[HD_ID_MAX];
        size_t n = hd_id_format(id, sizeof(id), pe, pq);
        CHECK(n > 0 && n < sizeof(id));
        CHECK(hd_id_parse(id, n, &e, &q) == 0);
        CHECK(e == pe && q == pq);
    }
}

/* ---- the embedded server ---- */

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    (void)arg;
    if (err == 0 && n > 0 && !epoch36[0]) {
        const char *dash = memchr(msgs[0]->id, '-', msgs[0]->id_len);
        CHECK(dash != NULL && (size_t)(dash - msgs[0]->id) < sizeof(epoch36));
        memcpy(epoch36, msgs[0]->id, (size_t)(dash - msgs[0]->id));
    }
    n_published--;
}

static void publish(const char *data)
{
    hd_message_t *m = hd_message_new("fz", 2, "text/plain", data, strlen(data));
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
    hd_sse_register(router);
    hd_poll_register(router);
    hd_ws_register(router);
    hd_http_set_router(router);
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 4", "poll_max_messages 10",
                      "ws_ping_interval 1h", "ws_idle_timeout 1h", "header_timeout 10s",
                      "keepalive_timeout 10s");
    hd_embedded_start_pubsub(&node);
    is_started = 1;
    /* History on "fz", more than history_size holds, so resumes meet a trimmed ring. */
    for (int i = 0; i < 6; i++)
        publish(i % 2 ? "odd" : "even");
    hd_embedded_sync_broker(&node);
    CHECK(n_published == 0 && epoch36[0] != '\0');
    return 0;
}

/* Where the id goes; `query` ids are percent-encoded whole. */
typedef struct place_s {
    const char *path; /* up to the id */
    unsigned is_query : 1;
    unsigned is_ws : 1; /* a WebSocket handshake: 101 when accepted */
} place_t;

static const place_t places[8] = {
    {"/sse/fz", 0, 0},                /* Last-Event-ID header */
    {"/sse/fz?last_event_id=", 1, 0}, /* the query for clients without headers */
    {"/sse?channel=fz&last_event_id=", 1, 0},
    {"/poll/fz?since=", 1, 0},
    {"/poll/fz?last_event_id=", 1, 0},
    {"/ws/fz?since=", 1, 1},
    {"/ws/fz?last_event_id=", 1, 1},
    {"/sse/fz", 0, 0}, /* the header again: browsers resume with it */
};

/* Value of a header line as the server sees it: without leading and trailing SP and HTAB. */
static size_t trim_ows(const char *s, size_t len, const char **out)
{
    while (len > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    *out = s;
    return len;
}

static void check_server(uint8_t sel, const uint8_t *data, size_t size)
{
    const place_t *pl = &places[sel & 7];
    char id[ID_WIRE_MAX + 16];
    size_t len = 0;
    if ((sel & 8) && size > 0 && data[0] == 'E') {
        len = strlen(epoch36);
        memcpy(id, epoch36, len);
        data++;
        size--;
    }
    for (size_t i = 0; i < size && len < ID_WIRE_MAX; i++) {
        if (data[i] == '\r' || data[i] == '\n')
            break;
        id[len++] = (char)data[i];
    }

    /* What the server must answer: absent (empty) ids are no resume at all. */
    const char *v = id;
    size_t vlen = pl->is_query ? len : trim_ows(id, len, &v);
    uint64_t e, q;
    int ok = vlen == 0 || hd_id_parse(v, vlen, &e, &q) == 0;

    char req[1024];
    size_t n = 0;
    n += (size_t)snprintf(req + n, sizeof(req) - n, "GET %s", pl->path);
    if (pl->is_query) {
        for (size_t i = 0; i < len; i++)
            n += (size_t)snprintf(req + n, sizeof(req) - n, "%%%02X", (unsigned char)id[i]);
    }
    n += (size_t)snprintf(req + n, sizeof(req) - n, " HTTP/1.1\r\nHost: f\r\n");
    if (pl->is_ws)
        n += (size_t)snprintf(req + n, sizeof(req) - n,
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n");
    if (!pl->is_query) {
        n += (size_t)snprintf(req + n, sizeof(req) - n, "Last-Event-ID: ");
        memcpy(req + n, id, len);
        n += len;
        n += (size_t)snprintf(req + n, sizeof(req) - n, "\r\n");
    }
    n += (size_t)snprintf(req + n, sizeof(req) - n, "\r\n");
    CHECK(n < sizeof(req));

    int fd = hd_embedded_connect(&node, NULL);
    hd_embedded_buf_t rx = {0};
    hd_embedded_send_all(&node, fd, req, n, &rx);
    for (int i = 0, quiet = 0; i < 100000 && (rx.len < 12 || quiet < 3); i++) {
        hd_embedded_pump(&node, 1);
        ssize_t k = hd_embedded_read(fd, &rx);
        if (k < 0)
            break;
        quiet = k > 0 ? 0 : quiet + 1;
        if (rx.len < 12 && i % 16 == 15)
            usleep(20);
    }
    close(fd);

    int status = rx.len >= 12 && memcmp(rx.data, "HTTP/1.1 ", 9) == 0 ? atoi(rx.data + 9) : 0;
    hd_embedded_buf_free(&rx);
    if (!ok)
        CHECK(status == 400);
    else
        CHECK(status == (pl->is_ws ? 101 : 200));

    /* Everything is freed once the peer is gone and the broker has answered. */
    CHECK(hd_embedded_wait_idle(&node, 10000) == 0);
    hd_embedded_sync_broker(&node);
    CHECK(hd_hub_local_subscribers(node.wk) == 0);
    hd_embedded_check_clean(&node);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!is_started)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size == 0)
        return 0;
    check_parse(data + 1, size - 1);
    check_server(data[0], data + 1, size - 1);
    return 0;
}
