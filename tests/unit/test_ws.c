/* SPDX-License-Identifier: MIT */
/*
 * test_ws.c: unit tests of the WebSocket transport (src/transport/websocket.c and ws_*.c, included,
 * so their helpers are in reach):
 * the accept key (RFC 6455's example), key and close-code rules, header token lists, the Origin
 * list, the frame-header reader fed whole and cut at every offset; then the frame path through an
 * embedded server (socketpair, no threads): a fragmented JSON-protocol message with control
 * frames between its fragments and a close frame with a multi-byte reason, written whole, cut at
 * every offset and byte by byte, must always produce the same bytes; malformed input must produce
 * the right close code. After each stream the loop runs until the connection is freed, so
 * ASan/LSan sees any leak.
 */
#define _GNU_SOURCE
#include "transport/websocket.c"
#include "transport/ws_backlog.c"
#include "transport/ws_conn.c"
#include "transport/ws_frame.c"
#include "transport/ws_handshake.c"
#include "transport/ws_json.c"
#include "transport/ws_output.c"
#include "transport/ws_publish.c"

#include "herald/log.h"
#include "herald/server.h"

#include "embedded.h"
#include "test.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

/* ---- pure helpers ---- */

static void test_accept_key(void)
{
    char out[32];
    accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    T_EQ_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_key_valid(void)
{
    T_TRUE(key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    T_TRUE(key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    T_TRUE(key_valid("+/+/+/+/+/+/+/+/+/+/+w==", 24));
    T_TRUE(!key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    T_TRUE(!key_valid("dGhlIHNhbXBsZSBub25jZQ===", 25));
    T_TRUE(!key_valid("dGhlIHNhbXBsZSBub25jZ===", 24));
    T_TRUE(!key_valid("dGhlIHNhbXBsZSBub25j-Q==", 24));
    T_TRUE(!key_valid("dGhlIHNhbXBsZSBub25jZQ=A", 24));
    T_TRUE(!key_valid("", 0));
}

static void test_close_codes(void)
{
    int n_valid = 0;
    for (unsigned code = 0; code < 70000; code++) {
        int want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                   (code >= 3000 && code <= 4999);
        if (close_code_valid(code) != want)
            T_FAIL("close code %u: got %d, want %d", code, close_code_valid(code), want);
        n_valid += want;
    }
    T_EQ_INT(n_valid, 4 + 8 + 2000);
    T_TRUE(!close_code_valid(1004) && !close_code_valid(1005) && !close_code_valid(1006));
    T_TRUE(!close_code_valid(1015) && !close_code_valid(1016) && !close_code_valid(2999));
}

static void test_tokens(void)
{
    const char *v = "keep-alive, Upgrade";
    T_TRUE(list_has_token(v, strlen(v), "upgrade"));
    T_TRUE(list_has_token(v, strlen(v), "keep-alive"));
    T_TRUE(!list_has_token(v, strlen(v), "upgrad"));
    T_TRUE(!list_has_token(v, strlen(v), "alive"));
    v = " \tWebSocket\t ";
    T_TRUE(list_has_token(v, strlen(v), "websocket"));
    v = "websocketx,x";
    T_TRUE(!list_has_token(v, strlen(v), "websocket"));
    v = "a,,websocket,";
    T_TRUE(list_has_token(v, strlen(v), "websocket"));
    T_TRUE(!list_has_token("", 0, "websocket"));
    /* the value is not NUL-terminated: only len bytes count */
    T_TRUE(!list_has_token("websocket", 8, "websocket"));
}

static void test_origins(void)
{
    const char *list = "https://a.example  https://b.example:8443";
    T_TRUE(origin_allowed(list, "https://a.example", 17));
    T_TRUE(origin_allowed(list, "https://b.example:8443", 22));
    T_TRUE(!origin_allowed(list, "https://b.example", 17));
    T_TRUE(!origin_allowed(list, "https://a.exampl", 16));
    T_TRUE(!origin_allowed(list, "", 0));
    T_TRUE(origin_allowed("x *", "https://any", 11));
    T_TRUE(!origin_allowed("", "https://any", 11));
}

static void test_frame_size(void)
{
    /* masked text "hello": 2 + 4 + 5 */
    static const uint8_t text[] = {0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'};
    uint64_t size = 0, plen = 0;
    const char *why = NULL;
    for (size_t cut = 0; cut < 6; cut++)
        T_EQ_INT(frame_size(text, cut, &size, &plen, &why), FRAME_MORE);
    for (size_t cut = 6; cut <= sizeof(text); cut++) {
        T_EQ_INT(frame_size(text, cut, &size, &plen, &why), FRAME_OK);
        T_EQ_INT(size, 11);
        T_EQ_INT(plen, 5);
    }
    /* a control frame is known only once complete */
    static const uint8_t ping[] = {0x89, 0x83, 0, 0, 0, 0, 'a', 'b', 'c'};
    for (size_t cut = 0; cut < sizeof(ping); cut++)
        T_EQ_INT(frame_size(ping, cut, &size, &plen, &why), FRAME_MORE);
    T_EQ_INT(frame_size(ping, sizeof(ping), &size, &plen, &why), FRAME_OK);
    T_EQ_INT(size, 9);
    /* extended lengths */
    static const uint8_t len16[] = {0x82, 0xfe, 0x01, 0x00, 0, 0, 0, 0};
    T_EQ_INT(frame_size(len16, 7, &size, &plen, &why), FRAME_MORE);
    T_EQ_INT(frame_size(len16, 8, &size, &plen, &why), FRAME_OK);
    T_EQ_INT(plen, 256);
    T_EQ_INT(size, 8 + 256);
    static const uint8_t len64[] = {0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 9, 9, 9, 9};
    T_EQ_INT(frame_size(len64, 13, &size, &plen, &why), FRAME_MORE);
    T_EQ_INT(frame_size(len64, 14, &size, &plen, &why), FRAME_OK);
    T_EQ_INT(plen, 1ull << 32);
    /* what is refused, and why */
    static const struct {
        uint8_t b[14];
        const char *why;
    } bad[] = {
        {{0xc1, 0x80}, "reserved bits"},
        {{0x91, 0x80}, "reserved bits"},
        {{0x83, 0x80}, "reserved opcode"},
        {{0x8b, 0x80}, "reserved opcode"},
        {{0x81, 0x00}, "masked"},
        {{0x09, 0x80}, "fragmented control"},
        {{0x89, 0xfe, 0x00, 0x7e}, "longer than 125"},
        {{0x81, 0xfe, 0x00, 0x7d, 0, 0, 0, 0}, "shortest form"},
        {{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}, "shortest form"},
        {{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "shortest form"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        why = NULL;
        T_EQ_INT(frame_size(bad[i].b, sizeof(bad[i].b), &size, &plen, &why), FRAME_BAD);
        T_CONTAINS(why, bad[i].why);
    }
}

/* ---- through an embedded server ---- */

static hd_embedded_t node;
static hd_router_t *router;

static void server_start(void)
{
    router = hd_router_new();
    hd_ws_register(router);
    hd_http_set_router(router);
    HD_EMBEDDED_START(&node, hd_http_accept, "max_message_size 1k", "ws_ping_interval 1h",
                      "ws_idle_timeout 1h");
    hd_hub_init(node.wk); /* the JSON protocol's ping needs no broker */
}

static void server_stop(void)
{
    T_EQ_INT(hd_embedded_wait_idle(&node, 3000), 0);
    hd_hub_dispose(node.wk);
    hd_embedded_stop(&node);
    hd_router_free(router);
}

static void run_loop(int n)
{
    hd_embedded_pump(&node, n);
}

typedef struct out_s {
    uint8_t *data;
    size_t len, cap;
    int is_eof;
} out_t;

static void take(int fd, out_t *o)
{
    for (;;) {
        if (o->cap - o->len < 4096) {
            o->cap = o->cap ? o->cap * 2 : 8192;
            o->data = hd_realloc(o->data, o->cap);
        }
        ssize_t n = read(fd, o->data + o->len, o->cap - o->len);
        if (n > 0) {
            o->len += (size_t)n;
            continue;
        }
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            o->is_eof = 1;
        else if (errno != EAGAIN)
            T_FAIL("read: %s", strerror(errno));
        return;
    }
}

static const char handshake[] = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Key: "
                                "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/*
 * Opens a connection, sends the handshake, then `in` in pieces of the sizes in cuts (0 ends the
 * list; what is left goes last), running the loop between writes; returns what the server sent
 * after the 101 head, once it has closed (the frames only: the head carries a Date).
 */
static void run_stream(const uint8_t *in, size_t len, const size_t *cuts, out_t *o)
{
    int fd = hd_embedded_connect(&node, NULL);
    memset(o, 0, sizeof(*o));
    T_EQ_INT(write(fd, handshake, sizeof(handshake) - 1), (ssize_t)(sizeof(handshake) - 1));
    run_loop(3);
    take(fd, o);
    size_t off = 0;
    for (size_t i = 0; off < len; i++) {
        size_t n = cuts && cuts[i] ? cuts[i] : len - off;
        if (n > len - off)
            n = len - off;
        T_EQ_INT(write(fd, in + off, n), (ssize_t)n);
        off += n;
        run_loop(2);
        take(fd, o);
    }
    for (int i = 0; i < 2000 && !o->is_eof; i++) {
        run_loop(2);
        take(fd, o);
        if (!o->is_eof) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    T_TRUE(o->is_eof);
    close(fd);
    T_EQ_INT(hd_embedded_wait_idle(&node, 3000), 0);
    hd_embedded_check_clean(&node);
    /* strip the 101 head */
    uint8_t *end = memmem(o->data, o->len, "\r\n\r\n", 4);
    T_TRUE(end != NULL);
    T_TRUE(memmem(o->data, o->len, "101 Switching Protocols", 23) != NULL);
    T_TRUE(memmem(o->data, o->len, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 50));
    size_t head = (size_t)(end + 4 - o->data);
    memmove(o->data, o->data + head, o->len - head);
    o->len -= head;
}

/* Appends a masked client frame. */
static size_t put_frame(uint8_t *p, int fin, int opcode, const void *payload, size_t n)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t k = 0;
    p[k++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        p[k++] = (uint8_t)(0x80 | n);
    } else {
        p[k++] = 0x80 | 126;
        p[k++] = (uint8_t)(n >> 8);
        p[k++] = (uint8_t)n;
    }
    memcpy(p + k, key, 4);
    k += 4;
    for (size_t i = 0; i < n; i++)
        p[k + i] = ((const uint8_t *)payload)[i] ^ key[i % 4];
    return k + n;
}

/* The first server close frame in o: its code (0 when it has none), or -1 when absent. */
static int close_code_in(const out_t *o)
{
    size_t i = 0;
    while (i + 2 <= o->len) {
        size_t n = o->data[i + 1] & 0x7f, h = 2;
        if (n == 126) {
            n = (size_t)o->data[i + 2] << 8 | o->data[i + 3];
            h = 4;
        }
        if ((o->data[i] & 0x0f) == 0x8)
            return n >= 2 ? o->data[i + h] << 8 | o->data[i + h + 1] : 0;
        i += h + n;
    }
    return -1;
}

static void test_stream_split_everywhere(void)
{
    /* {"op":"ping","ref":"λ€"} in three fragments with a ping and a pong between, then a close
     * with a multi-byte reason */
    static const char msg[] = "{\"op\":\"ping\",\"ref\":\"\xce\xbb\xe2\x82\xac\"}";
    size_t mlen = sizeof(msg) - 1;
    uint8_t in[512];
    size_t n = 0;
    n += put_frame(in + n, 0, 0x1, msg, 21); /* ends inside the 'λ' */
    n += put_frame(in + n, 1, 0x9, "p1", 2);
    n += put_frame(in + n, 0, 0x0, msg + 21, 3); /* ends inside the '€' */
    n += put_frame(in + n, 1, 0xa, "", 0);
    n += put_frame(in + n, 1, 0x0, msg + 24, mlen - 24);
    static const uint8_t close_frame[] = {0x0f, 0xa1, 0xce, 0xbb, 0xce, 0xbb}; /* 4001 "λλ" */
    n += put_frame(in + n, 1, 0x8, close_frame, sizeof(close_frame));

    static const char reply[] = "{\"type\":\"pong\",\"ref\":\"\xce\xbb\xe2\x82\xac\"}";
    uint8_t want[256];
    size_t w = 0;
    want[w++] = 0x8a;
    want[w++] = 2;
    want[w++] = 'p';
    want[w++] = '1';
    want[w++] = 0x81;
    want[w++] = (uint8_t)(sizeof(reply) - 1);
    memcpy(want + w, reply, sizeof(reply) - 1);
    w += sizeof(reply) - 1;
    want[w++] = 0x88;
    want[w++] = 2;
    want[w++] = 0x0f;
    want[w++] = 0xa1;

    out_t o;
    run_stream(in, n, NULL, &o);
    T_EQ_INT(o.len, w);
    T_TRUE(memcmp(o.data, want, w) == 0);
    free(o.data);
    for (size_t cut = 1; cut < n; cut++) {
        size_t cuts[] = {cut, 0};
        run_stream(in, n, cuts, &o);
        if (o.len != w || memcmp(o.data, want, w) != 0)
            T_FAIL("cut at %zu: %zu bytes out, want %zu", cut, o.len, w);
        free(o.data);
    }
    size_t ones[512];
    for (size_t i = 0; i < n; i++)
        ones[i] = 1;
    ones[n] = 0;
    run_stream(in, n, ones, &o);
    T_EQ_INT(o.len, w);
    T_TRUE(memcmp(o.data, want, w) == 0);
    free(o.data);
}

/* Appends a server frame (unmasked, FIN) of opcode with payload to want. */
static size_t put_plain(uint8_t *p, int opcode, const void *payload, size_t n)
{
    p[0] = (uint8_t)(0x80 | opcode);
    p[1] = (uint8_t)n;
    memcpy(p + 2, payload, n);
    return 2 + n;
}

static void test_stream_whole_frames(void)
{
    /* Whole frames, each a message or a ping or a pong: read without a wslay context when they
     * arrive together (ws_frame.c read_fast), through wslay when cut; the same bytes either
     * way, pongs in their place among the replies. */
    static const char m1[] = "{\"op\":\"ping\",\"ref\":1}",
                      m2[] = "{\"op\":\"ping\",\"ref\":\"\xce\xbb\"}";
    static const char r1[] = "{\"type\":\"pong\",\"ref\":1}",
                      r2[] = "{\"type\":\"pong\",\"ref\":\"\xce\xbb\"}";
    static const uint8_t close_frame[] = {0x03, 0xe8}; /* 1000 */
    uint8_t in[512], want[512];
    size_t n = 0, w = 0;
    n += put_frame(in + n, 1, 0x9, "p1", 2);
    n += put_frame(in + n, 1, 0xa, "", 0);
    n += put_frame(in + n, 1, 0x1, m1, sizeof(m1) - 1);
    n += put_frame(in + n, 1, 0x9, "", 0);
    n += put_frame(in + n, 1, 0xa, "unasked", 7);
    n += put_frame(in + n, 1, 0x1, m2, sizeof(m2) - 1);
    n += put_frame(in + n, 1, 0x8, close_frame, sizeof(close_frame));
    w += put_plain(want + w, 0xa, "p1", 2);
    w += put_plain(want + w, 0x1, r1, sizeof(r1) - 1);
    w += put_plain(want + w, 0xa, "", 0);
    w += put_plain(want + w, 0x1, r2, sizeof(r2) - 1);
    w += put_plain(want + w, 0x8, close_frame, sizeof(close_frame));

    out_t o;
    run_stream(in, n, NULL, &o);
    T_EQ_INT(o.len, w);
    T_TRUE(memcmp(o.data, want, w) == 0);
    free(o.data);
    for (size_t cut = 1; cut < n; cut++) {
        size_t cuts[] = {cut, 0};
        run_stream(in, n, cuts, &o);
        if (o.len != w || memcmp(o.data, want, w) != 0)
            T_FAIL("cut at %zu: %zu bytes out, want %zu", cut, o.len, w);
        free(o.data);
    }
}

static void expect_close(const uint8_t *in, size_t n, int code)
{
    out_t o;
    run_stream(in, n, NULL, &o);
    if (close_code_in(&o) != code)
        T_FAIL("expected close %d, got %d", code, close_code_in(&o));
    free(o.data);
    size_t *ones = hd_malloc((n + 1) * sizeof(*ones));
    for (size_t i = 0; i < n; i++)
        ones[i] = 1;
    ones[n] = 0;
    run_stream(in, n, ones, &o);
    free(ones);
    if (close_code_in(&o) != code)
        T_FAIL("byte by byte: expected close %d, got %d", code, close_code_in(&o));
    free(o.data);
}

static void test_stream_errors(void)
{
    uint8_t in[2048];
    size_t n;
    /* close codes */
    static const struct {
        uint8_t payload[4];
        size_t len;
        int want;
    } closes[] = {
        {{0x03, 0xe8}, 2, 1000},
        {{0x03, 0xf4}, 2, 1012},
        {{0x0b, 0xb8}, 2, 3000},
        {{0x13, 0x87}, 2, 4999},
        {{0x03, 0xe7}, 2, 1002},
        {{0x03, 0xec}, 2, 1002},
        {{0x03, 0xed}, 2, 1002},
        {{0x03, 0xee}, 2, 1002},
        {{0x03, 0xf7}, 2, 1002},
        {{0x03, 0xf8}, 2, 1002},
        {{0x13, 0x88}, 2, 1002},
        {{0x00, 0x00}, 2, 1002},
        {{0x03}, 1, 1002},
        {{0}, 0, 0},
        {{0x03, 0xe8, 0xff}, 3, 1007},
        {{0x03, 0xe8, 0xce}, 3, 1007},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(closes); i++) {
        n = put_frame(in, 1, 0x8, closes[i].payload, closes[i].len);
        expect_close(in, n, closes[i].want);
    }
    /* UTF-8 invalid in the first fragment: closed before the message ends */
    n = put_frame(in, 0, 0x1, "{\"a\":\"\xff", 7);
    expect_close(in, n, 1007);
    /* a sequence cut between fragments that turns out invalid */
    n = put_frame(in, 0, 0x1, "\"\xe2\x82", 3);
    n += put_frame(in + n, 1, 0x0, "(\"", 2);
    expect_close(in, n, 1007);
    /* the message ends inside a character */
    n = put_frame(in, 0, 0x1, "\"\xf0\x9f", 3);
    n += put_frame(in + n, 1, 0x0, "\x98", 1);
    expect_close(in, n, 1007);
    /* binary is not part of the JSON protocol */
    n = put_frame(in, 1, 0x2, "\x01", 1);
    expect_close(in, n, 1003);
    /* too big: one frame, and fragments adding up */
    static uint8_t big[1100];
    memset(big, 'x', sizeof(big));
    n = put_frame(in, 1, 0x1, big, 1025);
    expect_close(in, n, 1009);
    n = put_frame(in, 0, 0x1, big, 600);
    n += put_frame(in + n, 1, 0x0, big, 600);
    expect_close(in, n, 1009);
    /* protocol errors */
    n = put_frame(in, 1, 0x0, "x", 1); /* continuation with nothing to continue */
    expect_close(in, n, 1002);
    n = put_frame(in, 0, 0x1, "x", 1);
    n += put_frame(in + n, 1, 0x1, "y", 1); /* a new message inside a fragmented one */
    expect_close(in, n, 1002);
    n = put_frame(in, 1, 0x1, "x", 1);
    in[1] &= 0x7f; /* unmasked (the payload stays masked: it is never read) */
    expect_close(in, n, 1002);
    n = put_frame(in, 1, 0x1, "x", 1);
    in[0] |= 0x40; /* RSV1 */
    expect_close(in, n, 1002);
    n = put_frame(in, 1, 0x7, "", 0);
    expect_close(in, n, 1002);
    /* a reply after good input, then the error */
    n = put_frame(in, 1, 0x1, "{\"op\":\"ping\"}", 13);
    n += put_frame(in + n, 1, 0x1, "not json", 8);
    n += put_frame(in + n, 1, 0x1, "{\"op\":\"subscribe\",\"channel\":\"a b\"}", 35);
    n += put_frame(in + n, 1, 0x8, "\x03\xe8", 2);
    expect_close(in, n, 1000);
}

int main(void)
{
    hd_log_set_level(HD_LOG_ERROR);
    T_RUN(test_accept_key);
    T_RUN(test_key_valid);
    T_RUN(test_close_codes);
    T_RUN(test_tokens);
    T_RUN(test_origins);
    T_RUN(test_frame_size);
    server_start();
    T_RUN(test_stream_split_everywhere);
    T_RUN(test_stream_whole_frames);
    T_RUN(test_stream_errors);
    server_stop();
    T_DONE();
}
