/* SPDX-License-Identifier: MIT */
/*
 * test_hooks.c: the webhook sender's pure parts. The webhook directive's syntax
 * (src/conf/webhook_def.c): good lines, every refusal and its reason, secrets decoded, patterns.
 * Signatures (src/hooks/sign.c) against the Standard Webhooks example (the same value the npm
 * standardwebhooks library computes), rotation. Answers (src/hooks/response.c) fed whole, cut at
 * every offset and byte by byte, from exact-size copies (ASan catches an over-read). Addresses
 * SSRF protection refuses. Event bodies.
 */
#include "herald/common.h"
#include "herald/webhook_def.h"
#include "hooks/internal.h"

#include "test.h"

#include <arpa/inet.h>
#include <jansson.h>

#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static int parse(hd_webhook_def_t *d, const char *line, char *why, size_t whylen)
{
    const char *argv[16];
    char buf[1024];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t && argc < 16; t = strtok(NULL, " "))
        argv[argc++] = t;
    return hd_webhook_def_parse(d, 3, argc, argv, why, whylen);
}

static void test_def_good(void)
{
    hd_webhook_def_t d;
    char why[256] = "";
    T_EQ_INT(parse(&d, "https://api.example.com/in?a=1 secret=" SPEC_SECRET, why, sizeof(why)), 0);
    T_EQ_STR(d.name, "webhook-3");
    T_TRUE(d.is_tls);
    T_EQ_STR(d.host, "api.example.com");
    T_EQ_INT(d.port, 443);
    T_EQ_STR(d.target, "/in?a=1");
    T_EQ_STR(d.host_header, "api.example.com");
    T_EQ_INT((int)d.n_patterns, 1);
    T_EQ_STR(d.patterns[0], "*");
    T_EQ_INT((int)d.events, HD_WEBHOOK_EV_MESSAGE);
    T_EQ_INT((int)d.n_keys, 1);
    T_EQ_INT((int)d.key_lens[0], 24); /* 32 base64 characters */

    T_EQ_INT(parse(&d,
                   "http://[::1]:8080 name=a.b-c_1 channels=news,room:* events=channel.vacated,"
                   "message.published secret=" SPEC_SECRET ",whsec_AAAAAAAAAAAAAAAAAAAAAA==",
                   why, sizeof(why)),
             0);
    T_EQ_STR(d.name, "a.b-c_1");
    T_TRUE(!d.is_tls);
    T_EQ_STR(d.host, "::1");
    T_EQ_INT(d.port, 8080);
    T_EQ_STR(d.target, "/");
    T_EQ_STR(d.host_header, "[::1]:8080");
    T_EQ_INT((int)d.events, HD_WEBHOOK_EV_MESSAGE | HD_WEBHOOK_EV_VACATED);
    T_EQ_INT((int)d.n_keys, 2);
    T_EQ_INT((int)d.key_lens[1], 16);
    T_TRUE(hd_webhook_def_matches(&d, "news", 4));
    T_TRUE(!hd_webhook_def_matches(&d, "news2", 5));
    T_TRUE(!hd_webhook_def_matches(&d, "new", 3));
    T_TRUE(hd_webhook_def_matches(&d, "room:", 5));
    T_TRUE(hd_webhook_def_matches(&d, "room:12", 7));
    T_TRUE(!hd_webhook_def_matches(&d, "room", 4));

    T_EQ_INT(parse(&d, "http://h?q secret=" SPEC_SECRET, why, sizeof(why)), 0);
    T_EQ_STR(d.target, "/?q");
    T_EQ_STR(d.host_header, "h");
}

static void test_def_bad(void)
{
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"ftp://x/ secret=" SPEC_SECRET, "expected an http:// or https:// URL"},
        {"http:/x/ secret=" SPEC_SECRET, "expected an http"},
        {"http:// secret=" SPEC_SECRET, "no host"},
        {"http://x/#f secret=" SPEC_SECRET, "#fragment"},
        {"http://u:p@x/ secret=" SPEC_SECRET, "no user info"},
        {"http://x:0/ secret=" SPEC_SECRET, "bad port"},
        {"http://x:65536/ secret=" SPEC_SECRET, "bad port"},
        {"http://x:/ secret=" SPEC_SECRET, "bad port"},
        {"http://x!/ secret=" SPEC_SECRET, "bad host"},
        {"http://[::1/ secret=" SPEC_SECRET, "bad IPv6"},
        {"http://x/", "secret=whsec_... is required"},
        {"http://x/ secret=", "whsec_"},
        {"http://x/ secret=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"},
        {"http://x/ secret=whsec_AAAA", "16..64"},
        {"http://x/ secret=whsec_!!!!!!!!!!!!!!!!!!!!!!!!", "whsec_"},
        {"http://x/ secret=" SPEC_SECRET "," SPEC_SECRET "," SPEC_SECRET "," SPEC_SECRET
         "," SPEC_SECRET,
         "more than 4 secrets"},
        {"http://x/ secret=" SPEC_SECRET " secret=" SPEC_SECRET, "secret= given twice"},
        {"http://x/ secret=" SPEC_SECRET " events=", "unknown event"},
        {"http://x/ secret=" SPEC_SECRET " events=message", "unknown event"},
        {"http://x/ secret=" SPEC_SECRET " channels=", "bad channel pattern"},
        {"http://x/ secret=" SPEC_SECRET " channels=a*b", "bad channel pattern"},
        {"http://x/ secret=" SPEC_SECRET " channels=a,,b", "bad channel pattern"},
        {"http://x/ secret=" SPEC_SECRET " name=", "a name is"},
        {"http://x/ secret=" SPEC_SECRET " name=a/b", "a name is"},
        {"http://x/ secret=" SPEC_SECRET " name=dead-letters", "not dead-letters"},
        {"http://x/ secret=" SPEC_SECRET " colour=red", "unknown option"},
        {"http://x/ secret=" SPEC_SECRET " plain", "unknown option"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(cases); i++) {
        hd_webhook_def_t d;
        char why[256] = "";
        T_EQ_INT(parse(&d, cases[i].line, why, sizeof(why)), -1);
        T_CONTAINS(why, cases[i].why);
        T_TRUE(strstr(why, "MfKQ9r8GKYq") == NULL); /* never a secret */
    }
    /* 16 patterns fit, 17 do not */
    char line[1024] = "http://x/ secret=" SPEC_SECRET " channels=a0";
    for (int i = 1; i < 17; i++)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), ",a%d", i);
    hd_webhook_def_t d;
    char why[256];
    T_EQ_INT(parse(&d, line, why, sizeof(why)), -1);
    T_CONTAINS(why, "more than 16");
    *strrchr(line, ',') = '\0';
    T_EQ_INT(parse(&d, line, why, sizeof(why)), 0);
    T_EQ_INT((int)d.n_patterns, 16);
}

static void test_sign(void)
{
    hd_webhook_def_t d;
    char why[256], sig[600];
    const char *body = "{\"test\": 2432232314}";
    T_EQ_INT(parse(&d, "http://x/ secret=" SPEC_SECRET, why, sizeof(why)), 0);
    size_t n = hk_sign(&d, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig,
                       sizeof(sig));
    T_EQ_STR(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    T_EQ_INT((int)n, (int)strlen(sig));
    /* rotation: the old signature first, then the new one, space-separated */
    T_EQ_INT(parse(&d,
                   "http://x/ secret=" SPEC_SECRET ",whsec_AAAAAAAAAAAAAAAAAAAAAA==," SPEC_SECRET
                   ",whsec_AAAAAAAAAAAAAAAAAAAAAA==",
                   why, sizeof(why)),
             0);
    n = hk_sign(&d, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig,
                sizeof(sig));
    T_TRUE(strncmp(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,", 51) == 0);
    T_EQ_INT((int)n, 4 * 47 + 3); /* "v1," + 44 characters each, 3 spaces */
    /* a different timestamp, id or body changes it */
    n = hk_sign(&d, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, strlen(body), sig,
                sizeof(sig));
    T_TRUE(strncmp(sig, "v1,g0hM9SsE+OTPJTGt", 19) != 0);
    /* too small a buffer: 0, nothing half-written is used */
    T_EQ_INT((int)hk_sign(&d, "id", 1, "x", 1, sig, 60), 0);
}

/* Feeds an exact-size copy. */
static int feed(hk_response_t *r, const char *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int rc = hk_response_feed(r, copy, len);
    free(copy);
    return rc;
}

/* The answer whole, cut at every offset and byte by byte: same outcome. */
static void check_answer(const char *text, int want, int status, int keep)
{
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        hk_response_t r;
        hk_response_init(&r);
        int rc = feed(&r, text, cut);
        if (rc != HK_RESP_ERROR && cut < len)
            rc = feed(&r, text + cut, len - cut);
        if (rc == HK_RESP_MORE && want == HK_RESP_DONE)
            rc = hk_response_eof(&r);
        T_EQ_INT(rc, want);
        if (want == HK_RESP_DONE) {
            T_EQ_INT(r.status, status);
            T_EQ_INT(r.keep_alive, keep);
        }
    }
    hk_response_t r;
    hk_response_init(&r);
    int rc = HK_RESP_MORE;
    for (size_t i = 0; i < len && rc != HK_RESP_ERROR; i++)
        rc = feed(&r, text + i, 1);
    if (rc == HK_RESP_MORE && want == HK_RESP_DONE)
        rc = hk_response_eof(&r);
    T_EQ_INT(rc, want);
}

static void test_response(void)
{
    check_answer("HTTP/1.1 204 No Content\r\n\r\n", HK_RESP_DONE, 204, 1);
    check_answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HK_RESP_DONE, 200, 1);
    check_answer("HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
                 HK_RESP_DONE, 500, 0);
    check_answer("HTTP/1.0 200 OK\r\n\r\nread to the end", HK_RESP_DONE, 200, 0);
    check_answer("HTTP/1.1 410 Gone\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 HK_RESP_DONE, 410, 1);
    check_answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                 HK_RESP_DONE, 201, 1);
    check_answer("HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
                 HK_RESP_DONE, 302, 1);
    check_answer("SSH-2.0-OpenSSH_9.2\r\n", HK_RESP_ERROR, 0, 0);
    check_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", HK_RESP_ERROR, 0, 0);
    check_answer("HTTP/1.1 2000 OK\r\n\r\n", HK_RESP_ERROR, 0, 0);
    /* found by fuzz_webhook_response: a status line without a status */
    check_answer("HTTP/1.1 \r\n\r\n", HK_RESP_ERROR, 0, 0);
    check_answer("HTTP/1.1 099 Low\r\n\r\n", HK_RESP_ERROR, 0, 0);

    /* cut before the end: EOF is an error (nothing, a head, half a body) */
    const char *partial[] = {"", "HTTP/1.1 200 OK\r\n",
                             "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(partial); i++) {
        hk_response_t r;
        hk_response_init(&r);
        T_EQ_INT(feed(&r, partial[i], strlen(partial[i])), HK_RESP_MORE);
        T_EQ_INT(hk_response_eof(&r), HK_RESP_ERROR);
    }

    /* a body past 64 KiB is refused, whatever its framing */
    size_t big = HK_RESPONSE_BODY_MAX + 1;
    char *body = malloc(big);
    memset(body, 'x', big);
    hk_response_t r;
    hk_response_init(&r);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n";
    T_EQ_INT(feed(&r, head, strlen(head)), HK_RESP_MORE);
    T_EQ_INT(feed(&r, body, big - 1), HK_RESP_MORE);
    T_EQ_INT(feed(&r, body, 1), HK_RESP_ERROR);
    T_TRUE(r.has_head && r.body_bytes > HK_RESPONSE_BODY_MAX);
    free(body);
    /* after DONE, more bytes are an error */
    hk_response_init(&r);
    T_EQ_INT(feed(&r, "HTTP/1.1 204 No\r\n\r\n", 19), HK_RESP_DONE);
    T_EQ_INT(feed(&r, "H", 1), HK_RESP_ERROR);
}

static int private4(const char *a)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof(s));
    s.sin_family = AF_INET;
    inet_pton(AF_INET, a, &s.sin_addr);
    return hk_addr_is_private((struct sockaddr *)&s);
}

static int private6(const char *a)
{
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof(s));
    s.sin6_family = AF_INET6;
    inet_pton(AF_INET6, a, &s.sin6_addr);
    return hk_addr_is_private((struct sockaddr *)&s);
}

static void test_private(void)
{
    const char *yes4[] = {"127.0.0.1",    "127.255.1.2", "10.1.2.3",        "172.16.0.1",
                          "172.31.255.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
                          "100.64.0.1",   "224.0.0.1",   "255.255.255.255"};
    const char *no4[] = {"8.8.8.8",     "172.32.0.1",  "172.15.255.255",
                         "192.169.0.1", "100.128.0.1", "93.184.216.34"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(yes4); i++)
        T_TRUE(private4(yes4[i]));
    for (size_t i = 0; i < HD_ARRAY_SIZE(no4); i++)
        T_TRUE(!private4(no4[i]));
    const char *yes6[] = {"::1",     "::",      "fe80::1",          "fd00::1",
                          "fc00::2", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"};
    const char *no6[] = {"2001:4860:4860::8888", "::ffff:8.8.8.8", "2606:4700::1"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(yes6); i++)
        T_TRUE(private6(yes6[i]));
    for (size_t i = 0; i < HD_ARRAY_SIZE(no6); i++)
        T_TRUE(!private6(no6[i]));
}

static void test_events(void)
{
    hd_message_t *m = hd_message_new("news", 4, "text/plain", "a \"quoted\"\nline", 15);
    hd_message_set_id(m, 7, 42);
    hd_buf_t *b = hk_event_message(m, 1796253028175ull);
    json_error_t e;
    json_t *j = json_loadb(b->data, b->len, 0, &e);
    T_TRUE(j != NULL);
    T_EQ_STR(json_string_value(json_object_get(j, "type")), "message.published");
    T_EQ_STR(json_string_value(json_object_get(j, "timestamp")), "2026-12-02T23:10:28.175Z");
    json_t *data = json_object_get(j, "data");
    T_EQ_STR(json_string_value(json_object_get(data, "channel")), "news");
    T_EQ_STR(json_string_value(json_object_get(data, "id")), m->id);
    T_EQ_STR(json_string_value(json_object_get(data, "data")), "a \"quoted\"\nline");
    json_decref(j);
    hd_buf_unref(b);
    hd_message_unref(m);

    b = hk_event_channel("room:1", 6, 0, 5);
    char *text = hd_strndup(b->data, b->len);
    T_EQ_STR(text, "{\"type\":\"channel.vacated\",\"timestamp\":\"1970-01-01T00:00:00.005Z\","
                   "\"data\":{\"channel\":\"room:1\"}}");
    free(text);
    hd_buf_unref(b);

    char a[40], c[40];
    hk_event_id(a);
    hk_event_id(c);
    T_TRUE(strncmp(a, "evt_", 4) == 0 && strlen(a) == 21);
    T_TRUE(strcmp(a, c) != 0 && strncmp(a, c, 20) == 0);
}

int main(void)
{
    T_RUN(test_def_good);
    T_RUN(test_def_bad);
    T_RUN(test_sign);
    T_RUN(test_response);
    T_RUN(test_private);
    T_RUN(test_events);
    return 0;
}
