/* SPDX-License-Identifier: MIT */
/*
 * test_pubsub.c: messages, ids and wire encodings (SSE lines, WebSocket frame headers, poll JSON),
 * content-type classification, channel names, and incremental UTF-8 validation split at every
 * offset.
 */
#include "herald/pubsub.h"
#include "herald/utf8.h"
#include "test.h"

#include <jansson.h>

static hd_message_t *msg(const char *ct, const void *data, size_t len, uint64_t seq)
{
    hd_message_t *m = hd_message_new("news", 4, ct, data, len);
    hd_message_set_id(m, 36 * 36 + 1, seq); /* epoch "101" in base 36 */
    return m;
}

static char *text_of(hd_buf_t *b)
{
    char *s = hd_malloc(b->len + 1);
    memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    return s;
}

static void test_ids(void)
{
    char id[HD_ID_MAX];
    size_t n = hd_id_format(id, sizeof(id), 36 * 36 + 1, 42);
    T_EQ_STR(id, "101-42");
    T_EQ_INT(n, 6);
    uint64_t e, s;
    T_EQ_INT(hd_id_parse(id, n, &e, &s), 0);
    T_EQ_INT(e, 36 * 36 + 1);
    T_EQ_INT(s, 42);
    /* the same epoch again (its digits kept from the call before), and cut short by outlen */
    n = hd_id_format(id, sizeof(id), 36 * 36 + 1, 7);
    T_EQ_STR(id, "101-7");
    n = hd_id_format(id, 4, 36 * 36 + 1, 42);
    T_EQ_STR(id, "101");
    T_EQ_INT(n, 3);
    n = hd_id_format(id, 6, 36 * 36 + 1, 42);
    T_EQ_STR(id, "101-4");
    n = hd_id_format(id, 3, 36 * 36 + 1, 42);
    T_EQ_STR(id, "10");
    n = hd_id_format(id, sizeof(id), 0, 0);
    T_EQ_STR(id, "0-0");
    uint64_t big = UINT64_MAX / 2;
    n = hd_id_format(id, sizeof(id), 1700000000000ull, big);
    T_EQ_INT(hd_id_parse(id, n, &e, &s), 0);
    T_EQ_INT(e, 1700000000000ull);
    T_TRUE(s == big);
    n = hd_id_format(id, sizeof(id), UINT64_MAX, UINT64_MAX); /* the longest id */
    T_EQ_STR(id, "3w5e11264sgsf-18446744073709551615");
    T_EQ_INT(n, strlen(id));
    T_EQ_INT(hd_id_parse(id, n, &e, &s), 0);
    T_TRUE(e == UINT64_MAX && s == UINT64_MAX);
    const char *bad[] = {"",
                         "-",
                         "1-",
                         "-1",
                         "12",
                         "A-1",
                         "1-x",
                         "1-1-1",
                         "1--1",
                         "1-99999999999999999999",
                         "abcdefghijklmn-1",
                         "1 -1",
                         "1-1 "};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++)
        T_EQ_INT(hd_id_parse(bad[i], strlen(bad[i]), &e, &s), HD_EBADREQ);
}

/* The largest ids format and parse back; one past 64 bits in either part is refused, not
 * wrapped (fuzz_id found "zzzzzzzzzzzzz-1" parsed as a wrapped epoch, and the id of seq
 * UINT64_MAX refused). */
static void test_id_limits(void)
{
    char id[HD_ID_MAX];
    uint64_t e, s;
    size_t n = hd_id_format(id, sizeof(id), UINT64_MAX, UINT64_MAX);
    T_EQ_STR(id, "3w5e11264sgsf-18446744073709551615");
    T_EQ_INT(hd_id_parse(id, n, &e, &s), 0);
    T_TRUE(e == UINT64_MAX && s == UINT64_MAX);
    T_EQ_INT(hd_id_parse("0000000000001-00000000000000000001", 34, &e, &s), 0);
    T_TRUE(e == 1 && s == 1);
    const char *bad[] = {"3w5e11264sgsg-1", "zzzzzzzzzzzzz-1", "1-18446744073709551616",
                         "1-99999999999999999999", "1-000000000000000000001"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        if (hd_id_parse(bad[i], strlen(bad[i]), &e, &s) != HD_EBADREQ)
            T_FAIL("\"%s\" parsed as %llu-%llu", bad[i], (unsigned long long)e,
                   (unsigned long long)s);
    }
    /* Pairs around every power of 36 and of 10 go there and back. */
    for (uint64_t p = 1; p != 0 && p <= UINT64_MAX / 36; p *= 36) {
        uint64_t pairs[3][2] = {{p - 1, p}, {p, p - 1}, {p * 36 - 1, p + 1}};
        for (int k = 0; k < 3; k++) {
            n = hd_id_format(id, sizeof(id), pairs[k][0], pairs[k][1]);
            T_EQ_INT(hd_id_parse(id, n, &e, &s), 0);
            T_TRUE(e == pairs[k][0] && s == pairs[k][1]);
        }
    }
}

static void test_channel_names(void)
{
    T_TRUE(hd_channel_name_valid("a", 1));
    T_TRUE(hd_channel_name_valid("room-1.x_y:z@w", 14));
    T_TRUE(!hd_channel_name_valid("", 0));
    T_TRUE(!hd_channel_name_valid("a b", 3));
    T_TRUE(!hd_channel_name_valid("a/b", 3));
    char long_name[HD_CHANNEL_MAX + 1];
    memset(long_name, 'x', sizeof(long_name));
    T_TRUE(hd_channel_name_valid(long_name, HD_CHANNEL_MAX));
    T_TRUE(!hd_channel_name_valid(long_name, HD_CHANNEL_MAX + 1));
    /* every byte, first and last: valid exactly in [A-Za-z0-9._:@-] */
    for (int b = 0; b < 256; b++) {
        int want = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
                   b == '.' || b == '_' || b == '-' || b == ':' || b == '@';
        char name[3] = {(char)b, 'x', (char)b};
        if (hd_channel_name_valid(name, 3) != want || hd_channel_name_valid(name, 1) != want)
            T_FAIL("byte 0x%02x: valid %d, expected %d", b, hd_channel_name_valid(name, 3), want);
    }
}

static void test_content_type_syntax(void)
{
    const char *good[] = {"",
                          "text/plain",
                          "text/plain; charset=utf-8",
                          "application/vnd.api+json;charset=UTF-8",
                          "multipart/form-data; boundary=\"a b;c\"",
                          "text/plain;;",
                          "text/plain ; a=b ;c=\"\\\"\""};
    for (size_t i = 0; i < HD_ARRAY_SIZE(good); i++)
        T_TRUE(hd_content_type_valid(good[i], strlen(good[i])));
    const char *bad[] = {"text",
                         "/plain",
                         "text/",
                         "text/plain; x=\xff\xfe",
                         "text/pl\xc3\xa9in",
                         "text/plain; x",
                         "text/plain; x=",
                         "text/plain; x=\"open",
                         "text/plain\r\nX-Evil: 1",
                         "text/plain; x=\"\x01\"",
                         "text plain",
                         "text/plain x"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++)
        T_TRUE(!hd_content_type_valid(bad[i], strlen(bad[i])));
    char longer[HD_CONTENT_TYPE_MAX + 2];
    memset(longer, 'a', sizeof(longer));
    longer[4] = '/';
    T_TRUE(hd_content_type_valid(longer, HD_CONTENT_TYPE_MAX));
    T_TRUE(!hd_content_type_valid(longer, HD_CONTENT_TYPE_MAX + 1));
    /* the NUL byte is not part of any token */
    T_TRUE(!hd_content_type_valid("text/pl\0in", 10));
}

static void test_content_types(void)
{
    const char *text[] = {"text/plain",
                          "TEXT/HTML; charset=utf-8",
                          "application/json",
                          "application/ld+json",
                          "application/vnd.x+json; v=1",
                          "image/svg+xml",
                          "application/x-www-form-urlencoded"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(text); i++)
        T_TRUE(hd_content_type_is_text(text[i], strlen(text[i])));
    const char *bin[] = {"application/octet-stream", "image/png", "application/protobuf"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bin); i++)
        T_TRUE(!hd_content_type_is_text(bin[i], strlen(bin[i])));
    /* a text type with invalid UTF-8 is binary; no type and valid UTF-8 is text */
    hd_message_t *m = msg("text/plain", "\xff\xfe", 2, 1);
    T_EQ_INT(m->is_text, 0);
    hd_message_unref(m);
    m = msg(NULL, "h\xc3\xa9", 3, 1);
    T_TRUE(m->is_text);
    hd_message_unref(m);
}

static void test_sse_encoding(void)
{
    hd_message_t *m = msg("text/plain", "a\nb\r\nc\rd", 8, 7);
    hd_buf_t *b = hd_message_encode(m, HD_FMT_SSE);
    char *s = text_of(b);
    T_EQ_STR(s, "id: 101-7\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    free(s);
    hd_buf_unref(b);
    b = hd_message_encode(m, HD_FMT_SSE_NAMED);
    s = text_of(b);
    T_EQ_STR(s, "id: 101-7\nevent: news\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
    /* trailing newline and empty payload */
    m = msg("text/plain", "x\n", 2, 8);
    b = hd_message_encode(m, HD_FMT_SSE);
    s = text_of(b);
    T_EQ_STR(s, "id: 101-8\ndata: x\ndata: \n\n");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
    m = msg("text/plain", "", 0, 9);
    b = hd_message_encode(m, HD_FMT_SSE);
    s = text_of(b);
    T_EQ_STR(s, "id: 101-9\ndata: \n\n");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
    /* binary: base64 behind a comment */
    m = msg("application/octet-stream", "\x00\xff", 2, 10);
    b = hd_message_encode(m, HD_FMT_SSE);
    s = text_of(b);
    T_EQ_STR(s, "id: 101-10\n: base64\ndata: AP8=\n\n");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
}

static void expect_encoding(hd_message_t *m, int fmt, const char *want)
{
    hd_buf_t *b = hd_message_encode(m, fmt);
    char *s = text_of(b);
    T_EQ_STR(s, want);
    free(s);
    hd_buf_unref(b);
}

/* ?format=json: the poll's message object as data:, one data: line per line of it. */
static void test_sse_json_encoding(void)
{
    hd_message_t *m = msg("text/plain", "a\nb", 3, 7);
    hd_message_set_publisher(m, "{\"sub\":\"ann\",\"info\":{\"n\":1}}");
    expect_encoding(m, HD_FMT_SSE_JSON,
                    "id: 101-7\ndata: {\"id\":\"101-7\",\"channel\":\"news\",\"publisher\":"
                    "{\"sub\":\"ann\",\"info\":{\"n\":1}},\"content_type\":\"text/plain\","
                    "\"data\":\"a\\nb\"}\n\n");
    hd_message_unref(m);
    /* a JSON payload is embedded as published: its line breaks split data: lines */
    m = msg("application/json", "{\r\n\"a\":\r1\n}", 11, 8);
    expect_encoding(m, HD_FMT_SSE_JSON,
                    "id: 101-8\ndata: {\"id\":\"101-8\",\"channel\":\"news\",\"content_type\":"
                    "\"application/json\",\"data\":{\ndata: \"a\":\ndata: 1\ndata: }}\n\n");
    hd_message_unref(m);
    m = msg("application/octet-stream", "\x00\xff", 2, 10);
    expect_encoding(m, HD_FMT_SSE_JSON,
                    "id: 101-10\ndata: {\"id\":\"101-10\",\"channel\":\"news\",\"content_type\":"
                    "\"application/octet-stream\",\"data\":\"AP8=\",\"encoding\":\"base64\"}\n\n");
    hd_message_unref(m);
    /* live-only events: no id:, the event's name; an ephemeral message says so */
    m = hd_message_new("room", 4, "application/json", "{\n}", 3);
    m->kind = HD_MSG_EPHEMERAL;
    hd_message_set_publisher(m, "{\"sub\":\"bo\"}");
    expect_encoding(m, HD_FMT_SSE_JSON,
                    "event: herald-ephemeral\ndata: {\"ephemeral\":true,\"channel\":\"room\","
                    "\"publisher\":{\"sub\":\"bo\"},\"content_type\":\"application/json\","
                    "\"data\":{\ndata: }}\n\n");
    expect_encoding(m, HD_FMT_SSE,
                    "event: herald-ephemeral\ndata: {\"channel\":\"room\",\"publisher\":"
                    "{\"sub\":\"bo\"},\"content_type\":\"application/json\",\"data\":{\n"
                    "data: }}\n\n");
    hd_message_unref(m);
    m = hd_message_new("room", 4, "application/json", "{\"conn\":\"n-1\"}", 14);
    m->kind = HD_MSG_JOIN;
    expect_encoding(m, HD_FMT_SSE_JSON,
                    "event: herald-join\ndata: {\"channel\":\"room\",\"conn\":\"n-1\"}\n\n");
    hd_message_unref(m);
}

static void check_frame(size_t len, size_t header_len, uint8_t len7)
{
    char *payload = hd_calloc(1, len ? len : 1);
    hd_message_t *m = msg("application/octet-stream", payload, len, 1);
    hd_buf_t *b = hd_message_encode(m, HD_FMT_WS_RAW);
    T_EQ_INT(b->len, header_len + len);
    T_EQ_INT((uint8_t)b->data[0], 0x82); /* FIN + binary */
    T_EQ_INT((uint8_t)b->data[1], len7); /* never masked */
    uint64_t got = len7 < 126 ? len7 : 0;
    for (size_t i = 2; i < header_len; i++)
        got = (got << 8) | (uint8_t)b->data[i];
    T_TRUE(got == len);
    hd_buf_unref(b);
    hd_message_unref(m);
    free(payload);
}

static void test_ws_frames(void)
{
    check_frame(0, 2, 0);
    check_frame(125, 2, 125);
    check_frame(126, 4, 126);
    check_frame(65535, 4, 126);
    check_frame(65536, 10, 127);
    hd_message_t *m = msg("text/plain", "hi", 2, 1);
    hd_buf_t *b = hd_message_encode(m, HD_FMT_WS_RAW);
    T_EQ_INT(b->len, 4);
    T_EQ_INT((uint8_t)b->data[0], 0x81);
    T_TRUE(memcmp(b->data + 2, "hi", 2) == 0);
    hd_buf_unref(b);
    b = hd_message_encode(m, HD_FMT_WS_ENVELOPE);
    T_EQ_INT((uint8_t)b->data[0], 0x81);
    char *s = text_of(b);
    T_EQ_STR(s + 2,
             "{\"type\":\"message\",\"id\":\"101-1\",\"channel\":\"news\",\"content_type\":\"text/"
             "plain\",\"data\":\"hi\"}");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
}

/* A member's connection id is "<node>-<id in lowercase hex>", as printf's %llx writes it. */
static void test_member_conn_id(void)
{
    static const uint64_t ids[] = {0, 1, 0xf, 0x10, 0x1f, 0xabcdef, 0x123456789, UINT64_MAX};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s-%llx", hd_presence_node(), (unsigned long long)ids[i]);
        hd_member_t *m = hd_member_new(NULL, NULL, ids[i]);
        T_EQ_STR(m->conn, want);
        T_EQ_INT(m->conn_len, strlen(want));
        T_EQ_STR(m->key, want); /* anonymous: the member is the connection */
        hd_member_unref(m);
    }
}

/* Joins and leaves of one pass batched (hd_presence_batch): one frame, one SSE event. */
static void test_presence_batch(void)
{
    hd_member_t *ann = hd_member_new("ann", "{\"n\":1}", 0x1f);
    hd_member_t *anon = hd_member_new(NULL, NULL, 0x20);
    hd_message_t *evs[3] = {hd_presence_event(HD_MSG_JOIN, "room:1", 6, ann),
                            hd_presence_event(HD_MSG_JOIN, "room:1", 6, anon),
                            hd_presence_event(HD_MSG_LEAVE, "room:1", 6, ann)};
    hd_message_t *m = hd_presence_batch(evs, 3);
    T_TRUE(m->kind == HD_MSG_PRESENCE && m->id_len == 0 && m->seq == 0);
    char want[512];
    const char *node = hd_presence_node();
    snprintf(want, sizeof(want),
             "{\"channel\":\"room:1\",\"events\":[{\"type\":\"join\",\"member\":{\"sub\":"
             "\"ann\",\"info\":{\"n\":1}},\"conn\":\"%s-1f\"},{\"type\":\"join\",\"member\":{"
             "\"conn\":\"%s-20\"},\"conn\":\"%s-20\"},{\"type\":\"leave\",\"member\":{\"sub\":"
             "\"ann\",\"info\":{\"n\":1}},\"conn\":\"%s-1f\"}]}",
             node, node, node, node);
    hd_buf_t *b = hd_message_encode(m, HD_FMT_SSE);
    char *s = text_of(b);
    static const char head[] = "event: herald-presence\ndata: ";
    size_t hl = sizeof(head) - 1;
    T_TRUE(strncmp(s, head, hl) == 0);
    T_EQ_STR(s + hl + strlen(want), "\n\n");
    s[hl + strlen(want)] = '\0';
    T_EQ_STR(s + hl, want);
    free(s);
    hd_buf_unref(b);
    /* a long poll's "events" elements: the batch's, unfolded (poll.c wraps them) */
    b = hd_message_encode(m, HD_FMT_POLL_ANSWER);
    s = text_of(b);
    char elems[600];
    snprintf(elems, sizeof(elems), "%s", strstr(want, "\"events\":[") + 10);
    elems[strlen(elems) - 2] = '\0'; /* without "]}" */
    T_EQ_STR(s, elems);
    free(s);
    hd_buf_unref(b);
    b = hd_message_encode(evs[0], HD_FMT_POLL_ANSWER);
    s = text_of(b);
    char one[300];
    snprintf(
        one, sizeof(one),
        "{\"type\":\"join\",\"member\":{\"sub\":\"ann\",\"info\":{\"n\":1}},\"conn\":\"%s-1f\"}",
        node);
    T_EQ_STR(s, one);
    free(s);
    hd_buf_unref(b);
    b = hd_message_encode(m, HD_FMT_WS_ENVELOPE);
    s = text_of(b);
    char frame[600];
    snprintf(frame, sizeof(frame), "{\"type\":\"presence_events\",%s", want + 1);
    T_EQ_INT((uint8_t)b->data[0], 0x81);
    T_EQ_INT((uint8_t)b->data[1], 126); /* over 125 bytes: a 16-bit length follows */
    T_EQ_INT(((uint8_t)b->data[2] << 8) | (uint8_t)b->data[3], strlen(frame));
    T_EQ_STR(s + 4, frame);
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
    for (int i = 0; i < 3; i++)
        hd_message_unref(evs[i]);
    hd_member_unref(ann);
    hd_member_unref(anon);
}

/* Ephemeral messages in a long poll's answer: the /ws object, channel and stamp included. */
static void test_poll_ephemeral(void)
{
    hd_message_t *m = hd_message_new("room:1", 6, "application/json", "{\"typing\":true}", 15);
    m->kind = HD_MSG_EPHEMERAL;
    hd_message_set_publisher(m, "{\"sub\":\"ann\"}");
    hd_buf_t *b = hd_message_encode(m, HD_FMT_POLL_ANSWER);
    char *s = text_of(b);
    T_EQ_STR(s, "{\"type\":\"ephemeral\",\"channel\":\"room:1\",\"publisher\":{\"sub\":\"ann\"},"
                "\"content_type\":\"application/json\",\"data\":{\"typing\":true}}");
    free(s);
    hd_buf_unref(b);
    hd_message_unref(m);
}

/* Receipt tags and the addresses they name (the Redis bridge's copies carry them). */
static void test_receipt_tags(void)
{
    char tag[HD_RCPT_TAG_MAX], want[HD_RCPT_TAG_MAX];
    hd_rcpt_t *a = hd_rcpt_address("0badcafe-1000000000002a", 23);
    T_TRUE(a != NULL && a->worker == NULL && a->refs == 1);
    T_TRUE(a->conn_id == 0x1000000000002aull);
    T_EQ_STR(a->node, "0badcafe");
    T_EQ_INT(hd_rcpt_tag(a, tag), 23);
    T_EQ_STR(tag, "0badcafe-1000000000002a");
    T_TRUE(hd_rcpt_is_publisher(a, 0x1000000000002aull) ==
           (strcmp(hd_presence_node(), "0badcafe") == 0));
    hd_rcpt_unref(a);
    /* this node's own tag: its publisher's copy is no delivery */
    snprintf(want, sizeof(want), "%s-7", hd_presence_node());
    a = hd_rcpt_address(want, strlen(want));
    T_TRUE(a != NULL && a->is_here && hd_rcpt_is_publisher(a, 7) && !hd_rcpt_is_publisher(a, 8));
    hd_rcpt_tag(a, tag);
    T_EQ_STR(tag, want);
    hd_rcpt_unref(a);
    static const char *const bad[] = {"",
                                      "-",
                                      "ab",
                                      "ab-",
                                      "-1f",
                                      "AB-1",
                                      "ab-1F",
                                      "ab-1 ",
                                      "a-b-1",
                                      "1234567890123456-1",
                                      "ab-12345678901234567"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        a = hd_rcpt_address(bad[i], strlen(bad[i]));
        if (a) {
            hd_rcpt_unref(a);
            T_FAIL("tag %zu (%s) accepted", i, bad[i]);
        }
    }
    /* receipts to an address, as text (P rc:<node>) */
    hd_rcpt_text_t t;
    static const char d[] = "0badcafe-2a d room:1 101-7";
    T_EQ_INT(hd_rcpt_parse(d, sizeof(d) - 1, &t), 0);
    T_TRUE(t.status == HD_RCPT_DELIVERED && t.conn_id == 0x2a && t.seq == 7 && !t.acker);
    T_EQ_STR(t.node, "0badcafe");
    T_TRUE(t.channel_len == 6 && memcmp(t.channel, "room:1", 6) == 0);
    static const char k[] = "0badcafe-2a a room:1 101-7 77-3 {\"sub\":\"b c\"}";
    T_EQ_INT(hd_rcpt_parse(k, sizeof(k) - 1, &t), 0);
    T_TRUE(t.status == HD_RCPT_ACKED && t.acker_len == 4 && memcmp(t.acker, "77-3", 4) == 0);
    T_TRUE(t.member_len == 13 && memcmp(t.member, "{\"sub\":\"b c\"}", 13) == 0);
    static const char anon[] = "0badcafe-2a a room:1 101-7 77-3";
    T_EQ_INT(hd_rcpt_parse(anon, sizeof(anon) - 1, &t), 0);
    T_TRUE(t.acker && !t.member);
    static const char *const bad_text[] = {"",
                                           "0badcafe-2a",
                                           "0badcafe-2a d",
                                           "0badcafe-2a d room:1",
                                           "0badcafe-2a x room:1 101-7",
                                           "0badcafe-2a d room:1 101-7 ",
                                           "0badcafe-2a d room:1 101-7 x",
                                           "0badcafe-2a d r/1 101-7",
                                           "0badcafe-2a d room:1 101",
                                           "0badcafe d room:1 101-7",
                                           "0badcafe-2a  d room:1 101-7",
                                           "0badcafe-2a a room:1 101-7",
                                           "0badcafe-2a a room:1 101-7 77",
                                           "0badcafe-2a a room:1 101-7 77-3 ",
                                           "0badcafe-2a a room:1 101-7 77-3 []",
                                           "0badcafe-2a a room:1 101-7 77-3 {\"a\":1,\"a\":2}",
                                           "0badcafe-2a a room:1 101-7 77-3 {\"a\":1} x"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad_text); i++) {
        size_t n = strlen(bad_text[i]);
        char *copy = hd_malloc(n ? n : 1); /* exactly its size: an over-read is caught */
        memcpy(copy, bad_text[i], n);
        if (hd_rcpt_parse(copy, n, &t) == 0)
            T_FAIL("receipt text %zu (%s) accepted", i, bad_text[i]);
        free(copy);
    }
}

static void test_json_objects(void)
{
    struct {
        const char *ct, *data, *want;
    } cases[] = {
        {"application/json", "{\"a\":[1,2]}",
         "{\"id\":\"101-1\",\"channel\":\"news\",\"content_type\":\"application/"
         "json\",\"data\":{\"a\":[1,2]}}"},
        {"application/json", "{broken",
         "{\"id\":\"101-1\",\"channel\":\"news\",\"content_type\":\"application/"
         "json\",\"data\":\"{broken\"}"},
        {"text/plain", "q\"\\\n\t\x01",
         "{\"id\":\"101-1\",\"channel\":\"news\",\"content_type\":\"text/"
         "plain\",\"data\":\"q\\\"\\\\\\n\\t\\u0001\"}"},
        {"", "plain", "{\"id\":\"101-1\",\"channel\":\"news\",\"data\":\"plain\"}"},
        {"application/octet-stream", "\xff",
         "{\"id\":\"101-1\",\"channel\":\"news\",\"content_type\":\"application/"
         "octet-stream\",\"data\":\"/w==\","
         "\"encoding\":\"base64\"}"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(cases); i++) {
        hd_message_t *m = msg(cases[i].ct, cases[i].data, strlen(cases[i].data), 1);
        hd_buf_t *b = hd_message_encode(m, HD_FMT_JSON);
        char *s = text_of(b);
        T_EQ_STR(s, cases[i].want);
        free(s);
        hd_buf_unref(b);
        /* a long poll's whole answer around the same object */
        char want[512];
        snprintf(want, sizeof(want),
                 "{\"channel\":\"news\",\"messages\":[%s],\"next\":\"101-1\","
                 "\"gap\":false}",
                 cases[i].want);
        b = hd_message_encode(m, HD_FMT_POLL_ANSWER);
        s = text_of(b);
        T_EQ_STR(s, want);
        free(s);
        hd_buf_unref(b);
        hd_message_unref(m);
    }
}

static void test_utf8(void)
{
    const char *good[] = {"",
                          "abc",
                          "h\xc3\xa9",
                          "\xe2\x82\xac",
                          "\xf0\x9f\x98\x80",
                          "\xed\x9f\xbf",
                          "\xf4\x8f\xbf\xbf",
                          "\xee\x80\x80"};
    const char *bad[] = {"\xc0\xaf",         "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                         "\xf5\x80\x80\x80", "\xff",         "\x80",         "\xc3",
                         "\xe2\x82",         "a\xc3("};
    for (size_t i = 0; i < HD_ARRAY_SIZE(good); i++) {
        size_t len = strlen(good[i]);
        T_TRUE(hd_utf8_valid(good[i], len));
        for (size_t cut = 0; cut <= len; cut++) { /* split at every offset */
            hd_utf8_t u;
            hd_utf8_init(&u);
            T_EQ_INT(hd_utf8_feed(&u, good[i], cut), 0);
            T_EQ_INT(hd_utf8_feed(&u, good[i] + cut, len - cut), 0);
            T_TRUE(hd_utf8_complete(&u));
        }
    }
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        size_t len = strlen(bad[i]);
        T_TRUE(!hd_utf8_valid(bad[i], len));
        for (size_t cut = 0; cut <= len; cut++) {
            hd_utf8_t u;
            hd_utf8_init(&u);
            int rc = hd_utf8_feed(&u, bad[i], cut);
            if (rc == 0)
                rc = hd_utf8_feed(&u, bad[i] + cut, len - cut);
            T_TRUE(rc != 0 || !hd_utf8_complete(&u));
        }
    }
    /* Long ASCII runs (validated 8 bytes at a time) with a character of 2, 3 or 4 bytes, or a
     * bad byte, at every offset, fed whole and split at every offset. */
    const char *ins_good[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    const char *ins_bad[] = {"\xff", "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xc3"};
    for (int valid = 1; valid >= 0; valid--) {
        const char **ins = valid ? ins_good : ins_bad;
        size_t n_ins = valid ? HD_ARRAY_SIZE(ins_good) : HD_ARRAY_SIZE(ins_bad);
        for (size_t k = 0; k < n_ins; k++) {
            for (size_t at = 0; at <= 40; at++) {
                char s[64];
                size_t il = strlen(ins[k]);
                memset(s, 'a', sizeof(s));
                memcpy(s + at, ins[k], il);
                size_t len = 40 + il;
                T_EQ_INT(hd_utf8_valid(s, len), valid);
                for (size_t cut = 0; cut <= len; cut++) {
                    hd_utf8_t u;
                    hd_utf8_init(&u);
                    int rc = hd_utf8_feed(&u, s, cut);
                    if (rc == 0)
                        rc = hd_utf8_feed(&u, s + cut, len - cut);
                    T_EQ_INT(rc == 0 && hd_utf8_complete(&u), valid);
                }
            }
        }
    }
}

/* One builder for the HTTP batch and the /ws publish: defaults, errors named, nothing built on
 * error. */
static void test_message_from_json(void)
{
    hd_message_t *m = NULL;
    const char *why = NULL;
    json_t *s = json_string("héllo"), *obj = json_pack("{s:[i,b,n]}", "a", 1, 1);
    json_t *type = json_string("text/x-note; lang=en"), *num = json_integer(3);
    T_EQ_INT(hd_message_from_json("c", 1, s, NULL, 100, &m, &why), 0);
    T_EQ_STR(m->content_type, "text/plain; charset=utf-8");
    T_EQ_INT(m->len, 6);
    T_TRUE(memcmp(m->data, "héllo", 6) == 0);
    hd_message_unref(m);
    T_EQ_INT(hd_message_from_json("c", 1, obj, NULL, 100, &m, &why), 0);
    T_EQ_STR(m->content_type, "application/json");
    T_EQ_INT(m->len, strlen("{\"a\":[1,true,null]}"));
    T_TRUE(memcmp(m->data, "{\"a\":[1,true,null]}", m->len) == 0);
    hd_message_unref(m);
    T_EQ_INT(hd_message_from_json("c", 1, num, type, 100, &m, &why), 0);
    T_EQ_STR(m->content_type, "text/x-note; lang=en");
    T_EQ_INT(m->len, 1);
    hd_message_unref(m);
    m = NULL;
    T_EQ_INT(hd_message_from_json("c", 1, NULL, NULL, 100, &m, &why), HD_EBADREQ);
    T_CONTAINS(why, "data");
    T_EQ_INT(hd_message_from_json("c", 1, s, num, 100, &m, &why), HD_EBADREQ);
    T_CONTAINS(why, "type");
    static const char *const bad[] = {"text/plain; x=\xff\xfe", "plain", "a/b\r\nX: y",
                                      "text/plain; =x"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        json_t *t = json_stringn_nocheck(bad[i], strlen(bad[i]));
        T_EQ_INT(hd_message_from_json("c", 1, s, t, 100, &m, &why), HD_EBADREQ);
        T_CONTAINS(why, "media type");
        json_decref(t);
    }
    T_EQ_INT(hd_message_from_json("c", 1, s, NULL, 5, &m, &why), HD_EBODYTOOBIG);
    T_EQ_INT(hd_message_from_json("c", 1, obj, NULL, 10, &m, &why), HD_EBODYTOOBIG);
    T_CONTAINS(why, "max_message_size");
    T_TRUE(m == NULL);
    json_decref(s);
    json_decref(obj);
    json_decref(type);
    json_decref(num);
}

static void test_refs(void)
{
    hd_message_t *m = msg("text/plain", "x", 1, 1);
    T_TRUE(hd_message_ref(m) == m);
    T_EQ_INT(m->refs, 2);
    hd_message_unref(m);
    hd_message_unref(m); /* freed: LeakSanitizer checks nothing is left */
}

int main(void)
{
    T_RUN(test_ids);
    T_RUN(test_id_limits);
    T_RUN(test_channel_names);
    T_RUN(test_content_type_syntax);
    T_RUN(test_content_types);
    T_RUN(test_sse_encoding);
    T_RUN(test_sse_json_encoding);
    T_RUN(test_ws_frames);
    T_RUN(test_json_objects);
    T_RUN(test_member_conn_id);
    T_RUN(test_presence_batch);
    T_RUN(test_poll_ephemeral);
    T_RUN(test_receipt_tags);
    T_RUN(test_utf8);
    T_RUN(test_message_from_json);
    T_RUN(test_refs);
    T_DONE();
}
