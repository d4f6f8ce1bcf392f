/* SPDX-License-Identifier: MIT */
/*
 * test_hooks.c: the webhook sender's pure parts. The webhook directive's syntax
 * (src/conf/webhook_def.c): good lines, every refusal and its reason, secrets decoded, patterns.
 * Signatures (src/hooks/sign.c) against the Standard Webhooks example (the same value the npm
 * standardwebhooks library computes), rotation; signers and the request heads they write.
 * Answers (src/hooks/response.c) fed whole, cut at
 * every offset and byte by byte, from exact-size copies (ASan catches an over-read). Addresses
 * SSRF protection refuses. Event bodies. Retry-After: read from answers cut anywhere, its two
 * forms parsed. Pending entries as Redis gives them (src/hooks/durable.c). The hooks thread's
 * inbox (src/hooks/hooks.c) bounded by bytes, not only by count, while nothing takes from it,
 * for webhook events and notify events alike.
 * The authorize_hook and notify_hook directives (src/conf/hook_def.c) and the backend's answers
 * read into verdicts (src/hooks/authz_answer.c); an answer's body kept. A registration of the
 * admin API read from JSON (src/conf/webhook_json.c) and the publishing threads' filter
 * (src/hooks/filter.c). A batch of writes (src/core/wbatch.c) over socket pairs.
 */
#include "herald/common.h"
#include "herald/conf.h"
#include "herald/hook_def.h"
#include "herald/pubsub.h"
#include "herald/webhook_def.h"
#include "hooks/internal.h"

#include "test.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

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
    T_EQ_INT((int)d.pipeline, 1);

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

    T_EQ_INT(parse(&d, "http://h pipeline=16 secret=" SPEC_SECRET, why, sizeof(why)), 0);
    T_EQ_INT((int)d.pipeline, 16);
    T_EQ_INT(parse(&d, "http://h pipeline=256 secret=" SPEC_SECRET, why, sizeof(why)), 0);
    T_EQ_INT((int)d.pipeline, 256);
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
        {"http://x/ secret=" SPEC_SECRET " pipeline=0", "pipeline= is the requests"},
        {"http://x/ secret=" SPEC_SECRET " pipeline=257", "1..256, not \"257\""},
        {"http://x/ secret=" SPEC_SECRET " pipeline=99999999999999999999", "1..256"},
        {"http://x/ secret=" SPEC_SECRET " pipeline=", "1..256"},
        {"http://x/ secret=" SPEC_SECRET " pipeline=-1", "1..256"},
        {"http://x/ secret=" SPEC_SECRET " pipeline=4x", "1..256"},
        {"http://x/ secret=" SPEC_SECRET " pipeline=2 pipeline=2", "pipeline= given twice"},
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

/* A signer (what the hooks thread signs with: contexts keyed once, started over per request)
 * gives what hk_sign gives, request after request, and its head is the one the hooks wrote
 * with printf before: same request line, headers, order and blank line. */
static void test_signed_head(void)
{
    hd_webhook_def_t d;
    char why[256], sig[600], want[2048];
    T_EQ_INT(parse(&d,
                   "http://hooks.example:8080/in?x=1 secret=" SPEC_SECRET
                   ",whsec_AAAAAAAAAAAAAAAAAAAAAA==",
                   why, sizeof(why)),
             0);
    hk_signer_t *sg = hk_signer_new(&d);
    const char *bodies[] = {"{\"test\": 2432232314}", "", "{\"a\":1}"};
    const char *ids[] = {"msg_p5jXN8AQM9LWM0D4loKWxJek", "evt_0123456789abcdef1", "x"};
    uint64_t tss[] = {1614265330, 0, 18446744073709551615ull};
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++) {
            hd_buf_t *body = hd_buf_new_copy(bodies[i], strlen(bodies[i]));
            T_TRUE(hk_sign(&d, ids[i], tss[i], body->data, body->len, sig, sizeof(sig)) > 0);
            snprintf(want, sizeof(want),
                     "POST /in?x=1 HTTP/1.1\r\nHost: hooks.example:8080\r\nUser-Agent: "
                     "herald/%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "webhook-id: %s\r\nwebhook-timestamp: %llu\r\nwebhook-signature: %s\r\n\r\n",
                     HERALD_VERSION, body->len, ids[i], (unsigned long long)tss[i], sig);
            hd_buf_t *head = hk_signed_head(sg, ids[i], tss[i], body);
            char *got = hd_strndup(head->data, head->len);
            T_EQ_STR(got, want);
            free(got);
            hd_buf_unref(head);
            hd_buf_unref(body);
        }
    }
    /* the specification's example, through a signer */
    hd_buf_t *body = hd_buf_new_copy(bodies[0], strlen(bodies[0]));
    hd_buf_t *head = hk_signed_head(sg, ids[0], tss[0], body);
    char *got = hd_strndup(head->data, head->len);
    T_CONTAINS(got, "\r\nwebhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,");
    free(got);
    hd_buf_unref(head);
    hd_buf_unref(body);
    hk_signer_free(sg);
    /* four secrets: four signatures */
    T_EQ_INT(parse(&d,
                   "https://[::1]/ secret=" SPEC_SECRET
                   ",whsec_AAAAAAAAAAAAAAAAAAAAAA==," SPEC_SECRET ",whsec_AAAAAAAAAAAAAAAAAAAAAA==",
                   why, sizeof(why)),
             0);
    sg = hk_signer_new(&d);
    body = hd_buf_new_copy("{}", 2);
    head = hk_signed_head(sg, "evt_1", 7, body);
    got = hd_strndup(head->data, head->len);
    static const char start[] = "POST / HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: herald/";
    T_TRUE(strncmp(got, start, sizeof(start) - 1) == 0);
    T_TRUE(hk_sign(&d, "evt_1", 7, "{}", 2, sig, sizeof(sig)) == 4 * 47 + 3);
    T_CONTAINS(got, sig);
    free(got);
    hd_buf_unref(head);
    hd_buf_unref(body);
    hk_signer_free(sg);
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

/* Answers one after the other, as a pipelined connection reads them (a fresh parser after each
 * answer, what follows it fed to the next), the bytes cut at every offset: the same answers. */
static void test_response_pipelined(void)
{
    static const char text[] =
        "HTTP/1.1 204 No Content\r\n\r\n"
        "HTTP/1.1 100 Continue\r\n\r\n"
        "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\nno"
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        "HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    static const int want_status[] = {204, 503, 200, 201}, want_keep[] = {1, 1, 1, 0};
    size_t len = sizeof(text) - 1;
    for (size_t cut = 0; cut <= len; cut++) {
        char *copy = malloc(len);
        memcpy(copy, text, len);
        size_t k = 0, pieces[2][2] = {{0, cut}, {cut, len}};
        hk_response_t r;
        hk_response_init(&r);
        for (int p = 0; p < 2; p++) {
            size_t at = pieces[p][0], end = pieces[p][1];
            while (at < end) {
                size_t used = 0;
                int rc = hk_response_feed_some(&r, copy + at, end - at, &used);
                T_TRUE(used >= 1 && used <= end - at);
                at += used;
                if (rc == HK_RESP_MORE) {
                    T_EQ_INT((int)at, (int)end);
                    break;
                }
                T_EQ_INT(rc, HK_RESP_DONE);
                T_TRUE(k < HD_ARRAY_SIZE(want_status));
                T_EQ_INT(r.status, want_status[k]);
                T_EQ_INT(r.keep_alive, want_keep[k]);
                T_EQ_STR(r.retry_after, k == 1 ? "7" : "");
                k++;
                hk_response_dispose(&r);
                hk_response_init(&r);
            }
        }
        T_EQ_INT((int)k, 4);
        hk_response_dispose(&r);
        free(copy);
    }
    /* what hk_response_feed refuses (bytes after the answer) feed_some leaves to the caller */
    hk_response_t r;
    hk_response_init(&r);
    size_t used = 99;
    T_EQ_INT(hk_response_feed_some(&r, "HTTP/1.1 204 No\r\n\r\nXY", 21, &used), HK_RESP_DONE);
    T_EQ_INT((int)used, 19);
    T_EQ_INT(hk_response_feed_some(&r, "XY", 2, &used), HK_RESP_DONE); /* done: reads none */
    T_EQ_INT((int)used, 0);
    hk_response_init(&r);
    T_EQ_INT(hk_response_feed_some(&r, "SSH-2.0\r\n", 9, &used), HK_RESP_ERROR);
    T_EQ_INT((int)used, 0);
}

/* The answer's Retry-After, fed whole, cut at every offset and byte by byte. */
static void check_retry_after(const char *text, const char *want)
{
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        hk_response_t r;
        hk_response_init(&r);
        int rc = feed(&r, text, cut);
        if (rc != HK_RESP_ERROR && cut < len)
            rc = feed(&r, text + cut, len - cut);
        T_EQ_INT(rc, HK_RESP_DONE);
        T_EQ_STR(r.retry_after, want);
    }
    hk_response_t r;
    hk_response_init(&r);
    for (size_t i = 0; i < len; i++)
        feed(&r, text + i, 1);
    T_EQ_STR(r.retry_after, want);
}

static void test_retry_after(void)
{
    check_retry_after("HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n", "120");
    check_retry_after("HTTP/1.1 429 Slow\r\nretry-after:Wed, 21 Oct 2015 07:28:00 GMT\r\n"
                      "Content-Length: 0\r\n\r\n",
                      "Wed, 21 Oct 2015 07:28:00 GMT");
    check_retry_after("HTTP/1.1 500 No\r\nRetry-After-Not: 5\r\nX-Retry-After: 6\r\n"
                      "Content-Length: 0\r\n\r\n",
                      "");
    /* the last one counts; a value too long to be either form is none */
    check_retry_after(
        "HTTP/1.1 503 B\r\nRetry-After: 1\r\nRETRY-AFTER: 2\r\nContent-Length: 0\r\n\r\n", "2");
    check_retry_after("HTTP/1.1 503 B\r\nRetry-After: 1234567890123456789012345678901234567890"
                      "\r\nContent-Length: 0\r\n\r\n",
                      "");
    /* a trailer is not the answer's head */
    check_retry_after("HTTP/1.1 503 B\r\nRetry-After: 120\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "0\r\nRetry-After: 5\r\n\r\n",
                      "120");
    /* an interim answer's header is not the final answer's */
    check_retry_after("HTTP/1.1 100 Continue\r\nRetry-After: 9\r\n\r\n"
                      "HTTP/1.1 503 B\r\nContent-Length: 0\r\n\r\n",
                      "");

    uint64_t ms = 0, now = 1445412480000ull; /* Wed, 21 Oct 2015 07:28:00 GMT */
    T_EQ_INT(hk_retry_after_parse("120", 3, now, &ms), 0);
    T_EQ_INT(ms, 120000);
    T_EQ_INT(hk_retry_after_parse("  0 ", 4, now, &ms), 0);
    T_EQ_INT(ms, 0);
    T_EQ_INT(hk_retry_after_parse("99999999999999999999999", 23, now, &ms), 0);
    T_EQ_INT(ms, (uint64_t)UINT32_MAX * 1000);
    const char *d = "Wed, 21 Oct 2015 07:28:30 GMT";
    T_EQ_INT(hk_retry_after_parse(d, strlen(d), now, &ms), 0);
    T_EQ_INT(ms, 30000);
    d = "Thu, 01 Jan 1970 00:00:00 GMT"; /* in the past: now */
    T_EQ_INT(hk_retry_after_parse(d, strlen(d), now, &ms), 0);
    T_EQ_INT(ms, 0);
    /* found by fuzz_webhook_response: a date centuries ahead is clamped as seconds are */
    d = "Wed, 20 Oct 2175 00:28:00 GMT";
    T_EQ_INT(hk_retry_after_parse(d, strlen(d), 0, &ms), 0);
    T_EQ_INT(ms, (uint64_t)UINT32_MAX * 1000);
    d = "Sun, 29 Feb 2032 23:59:59 GMT";
    T_EQ_INT(hk_retry_after_parse(d, strlen(d), 0, &ms), 0);
    T_EQ_INT(ms, 1961711999000ull);
    const char *bad[] = {"",
                         "  ",
                         "-1",
                         "1.5",
                         "12s",
                         "soon",
                         "Wed, 21 Oct 2015 07:28:00 UTC",
                         "Wed, 21 Okt 2015 07:28:00 GMT",
                         "Wed, 32 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Oct 2015 24:00:00 GMT",
                         "Xyz, 21 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Oct 15 07:28:00 GMT",
                         "Wednesday, 21-Oct-15 07:28:00 GMT"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++)
        T_EQ_INT(hk_retry_after_parse(bad[i], strlen(bad[i]), now, &ms), -1);
}

/* A reply tree of strings (and integers for "#N"), as hiredis gives herald_hk_take's. */
static redisReply *str_reply(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (s[0] == '#') {
        r->type = REDIS_REPLY_INTEGER;
        r->integer = atoll(s + 1);
        return r;
    }
    r->type = REDIS_REPLY_STRING;
    r->len = strlen(s);
    r->str = hd_strndup(s, r->len);
    return r;
}

static int parse_entry(const char *const f[HK_ENTRY_FIELDS], hk_entry_t *e)
{
    redisReply *el[HK_ENTRY_FIELDS];
    for (int i = 0; i < HK_ENTRY_FIELDS; i++)
        el[i] = str_reply(f[i]);
    int rc = hk_entry_parse((const redisReply *const *)el, e);
    for (int i = 0; i < HK_ENTRY_FIELDS; i++) {
        free(el[i]->str);
        free(el[i]);
    }
    return rc;
}

static void test_entry(void)
{
    const char *good[HK_ENTRY_FIELDS] = {
        "1796253028175-3", "evt_0123456789abcdef1", "message.published", "1796253028100", "2",
        "1796253028200",   "{\"type\":\"x\"}"};
    hk_entry_t e;
    T_EQ_INT(parse_entry(good, &e), 0);
    T_EQ_INT((int)e.sid_len, 15);
    T_EQ_INT((int)e.id_len, 21);
    T_EQ_INT(e.created_ms, 1796253028100ull);
    T_EQ_INT(e.attempts, 2);
    T_EQ_INT(e.first_ms, 1796253028200ull);
    T_EQ_INT((int)e.body_len, 12);
    /* each field wrong in turn: refused */
    const char *bad[][2] = {{"0", ""},
                            {"0", "12-x"},
                            {"0", "1234567890123456789012345678901234567890123456789-0"},
                            {"1", ""},
                            {"1", "evt_0123456789abcdef0123456789abcdef0123"},
                            {"1", "evt\r\nx"},
                            {"2", ""},
                            {"2", "Message.published"},
                            {"2", "message.published.and.more"},
                            {"3", "-1"},
                            {"3", "12a"},
                            {"3", "#-5"},
                            {"4", "4294967296"},
                            {"4", ""},
                            {"5", "99999999999999999999"}};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        const char *f[HK_ENTRY_FIELDS];
        memcpy(f, good, sizeof(f));
        f[bad[i][0][0] - '0'] = bad[i][1];
        T_EQ_INT(parse_entry(f, &e), -1);
    }
    /* numbers may come as integers; the body as an integer is not a body */
    const char *ints[HK_ENTRY_FIELDS] = {"5-0", "e1", "channel.vacated", "#7", "#0", "#0", "{}"};
    T_EQ_INT(parse_entry(ints, &e), 0);
    T_EQ_INT(e.created_ms, 7);
    ints[6] = "#3";
    T_EQ_INT(parse_entry(ints, &e), -1);
}

static int parse_pev(const char *const f[HK_PEV_FIELDS], hk_pev_t *e)
{
    redisReply *el[HK_PEV_FIELDS];
    for (int i = 0; i < HK_PEV_FIELDS; i++)
        el[i] = str_reply(f[i]);
    int rc = hk_pev_parse((const redisReply *const *)el, e);
    for (int i = 0; i < HK_PEV_FIELDS; i++) {
        free(el[i]->str);
        free(el[i]);
    }
    return rc;
}

static void test_member_events(void)
{
    const char *good[HK_PEV_FIELDS] = {"1796253028175-0", "~j", "room:1",
                                       "{\"member\":{\"sub\":\"ann\"},\"conn\":\"ab-1\"}"};
    hk_pev_t ev;
    T_EQ_INT(parse_pev(good, &ev), 0);
    T_EQ_INT(ev.added, 1);
    T_EQ_INT((int)ev.channel_len, 6);
    /* (ev points into the replies, freed: the body is made from the same strings) */
    hd_buf_t *b = hk_event_member(good[2], strlen(good[2]), 1, good[3], strlen(good[3]), 5);
    char *text = hd_strndup(b->data, b->len);
    T_EQ_STR(text,
             "{\"type\":\"member.added\",\"timestamp\":\"1970-01-01T00:00:00.005Z\","
             "\"data\":{\"channel\":\"room:1\",\"member\":{\"sub\":\"ann\"},\"conn\":\"ab-1\"}}");
    free(text);
    hd_buf_unref(b);
    b = hk_event_member("c", 1, 0, "{}", 2, 5);
    text = hd_strndup(b->data, b->len);
    T_EQ_STR(text, "{\"type\":\"member.removed\",\"timestamp\":\"1970-01-01T00:00:00.005Z\","
                   "\"data\":{\"channel\":\"c\"}}");
    free(text);
    hd_buf_unref(b);
    T_TRUE(hk_event_member("c", 1, 0, "[1]", 3, 5) == NULL);
    T_TRUE(hk_event_member("c", 1, 0, "{", 1, 5) == NULL);
    const char *bad[][2] = {{"0", "1234567890123456789012345678901234-0"},
                            {"0", "1-x"},
                            {"1", "~e"},
                            {"1", "j"},
                            {"2", ""},
                            {"2", "room 1"},
                            {"3", "[]"},
                            {"3", "{"},
                            {"3", "x}"}};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        const char *f[HK_PEV_FIELDS];
        memcpy(f, good, sizeof(f));
        f[bad[i][0][0] - '0'] = bad[i][1];
        T_EQ_INT(parse_pev(f, &ev), -1);
    }
    /* leave, and the channel's occupancy */
    const char *leave[HK_PEV_FIELDS] = {"5-1", "~l", "c", "{}"};
    T_EQ_INT(parse_pev(leave, &ev), 0);
    T_TRUE(!ev.added && !ev.is_channel);
    leave[1] = "~o";
    T_EQ_INT(parse_pev(leave, &ev), 0);
    T_TRUE(ev.added && ev.is_channel);
    leave[1] = "~v";
    T_EQ_INT(parse_pev(leave, &ev), 0);
    T_TRUE(!ev.added && ev.is_channel);
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

    /* the second's text is kept: the milliseconds still change, and the next second is new */
    uint64_t at[] = {999, 1000, 1001, 61001};
    const char *want_ts[] = {"00:00:00.999Z", "00:00:01.000Z", "00:00:01.001Z", "00:01:01.001Z"};
    for (int i = 0; i < 4; i++) {
        b = hk_event_channel("c", 1, 1, at[i]);
        text = hd_strndup(b->data, b->len);
        T_CONTAINS(text, want_ts[i]);
        free(text);
        hd_buf_unref(b);
    }

    char a[40], c[40];
    hk_event_id(a);
    hk_event_id(c);
    T_TRUE(strncmp(a, "evt_", 4) == 0 && strlen(a) == 21);
    T_TRUE(strcmp(a, c) != 0 && strncmp(a, c, 20) == 0);
    /* 16 hex digits of the prefix, then the counter in hex without leading zeros */
    T_EQ_INT((int)strspn(a + 4, "0123456789abcdef"), (int)strlen(a) - 4);
    for (int i = 0; i < 20; i++)
        hk_event_id(c);
    T_EQ_INT((int)strtoull(c + 20, NULL, 16), (int)strtoull(a + 20, NULL, 16) + 21);
    T_TRUE(c[20] != '0');
}

/* Events the hooks thread has not taken yet hold their messages: at most webhook_max_memory of
 * them (by message size), not INBOX_MAX mails of any size. The thread is not started here, so
 * nothing is taken: every post stays in the inbox. */
static void test_inbox_bound(void)
{
    hd_conf_t *conf = NULL;
    char err[256];
    T_EQ_INT(hd_conf_load_string(&conf, "t.conf",
                                 "webhook https://hooks.example/in secret=" SPEC_SECRET "\n"
                                 "webhook_max_memory 1m\n",
                                 NULL, 0, err, sizeof(err)),
             0);
    hd_hooks_t *h = NULL;
    T_EQ_INT(hd_hooks_new(&h, conf, err, sizeof(err)), 0);
    hd_hooks_set(h);
    size_t len = 64 * 1024;
    char *data = hd_calloc(1, len);
    hd_message_t *m = hd_message_new("news", 4, "text/plain", data, len);
    free(data);
    for (int i = 0; i < 100; i++) /* 6.4 MB of events for a 1 MB budget */
        hd_hooks_on_published(&m, 1);
    hd_hooks_stats_t st;
    hd_hooks_get_stats(h, &st);
    /* at most 1m / 64k are held; the rest were dropped and counted */
    T_TRUE(st.dropped[HD_HOOKS_DROP_MEMORY] >= 100 - 16);
    T_TRUE(st.dropped[HD_HOOKS_DROP_MEMORY] < 100);
    T_EQ_INT((int)m->refs, 1 + 100 - (int)st.dropped[HD_HOOKS_DROP_MEMORY]);
    hd_hooks_set(NULL);
    hd_hooks_free(h); /* lets go of what the inbox held */
    T_EQ_INT((int)m->refs, 1);
    hd_message_unref(m);
    hd_conf_unref(conf);
}

/* hd_hooks_stop: the stop is sent once; a wait that times out (0 ms: the thread cannot have
 * taken it yet, or just did) leaves the thread to a later wait, which joins it; once joined,
 * another stop and hd_hooks_free do not wait again. */
static void test_stop_bounded(void)
{
    hd_conf_t *conf = NULL;
    char err[256];
    T_EQ_INT(hd_conf_load_string(&conf, "t.conf",
                                 "webhook https://hooks.example/in secret=" SPEC_SECRET "\n", NULL,
                                 0, err, sizeof(err)),
             0);
    hd_hooks_t *h = NULL;
    T_EQ_INT(hd_hooks_new(&h, conf, err, sizeof(err)), 0);
    T_EQ_INT(hd_hooks_start(h), 0);
    int rc = hd_hooks_stop(h, 0);
    T_TRUE(rc == 0 || rc == UV_ETIMEDOUT);
    T_EQ_INT(hd_hooks_stop(h, 10000), 0);
    T_EQ_INT(hd_hooks_stop(h, 0), 0);
    hd_hooks_free(h);
    hd_conf_unref(conf);
}

/* A registration of the admin API read from its JSON: what it gives, and every refusal. */
static void test_def_json(void)
{
    hd_webhook_def_t d;
    char why[256] = "";
    const char *good =
        "{\"id\":\"app\",\"url\":\"https://h.example:8443/in?x=1\",\"channels\":"
        "[\"news\",\"room:*\"],\"events\":[\"channel.occupied\",\"message.published\"],"
        "\"secret\":[\"" SPEC_SECRET "\",\"" SPEC_SECRET "\"]}";
    T_EQ_INT(hd_webhook_def_from_json(&d, good, strlen(good), why, sizeof(why)), 0);
    T_EQ_STR(d.name, "app");
    T_EQ_STR(d.host, "h.example");
    T_EQ_INT(d.port, 8443);
    T_EQ_STR(d.target, "/in?x=1");
    T_EQ_INT((int)d.n_patterns, 2);
    T_EQ_INT((int)d.n_keys, 2);
    T_EQ_INT((int)d.events, HD_WEBHOOK_EV_MESSAGE | HD_WEBHOOK_EV_OCCUPIED);
    T_EQ_INT((int)d.pipeline, 1);
    const char *piped =
        "{\"id\":\"p\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"pipeline\":32}";
    T_EQ_INT(hd_webhook_def_from_json(&d, piped, strlen(piped), why, sizeof(why)), 0);
    T_EQ_INT((int)d.pipeline, 32);
    const char *least = "{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}";
    T_EQ_INT(hd_webhook_def_from_json(&d, least, strlen(least), why, sizeof(why)), 0);
    T_EQ_STR(d.patterns[0], "*");
    T_EQ_INT((int)d.events, HD_WEBHOOK_EV_MESSAGE);
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"", "not JSON"},
        {"[]", "JSON object"},
        {"{\"id\":\"a\",\"url\":\"http://h/\"}", "\"secret\" is required"},
        {"{\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}", "\"id\" must be"},
        {"{\"id\":\"a\",\"secret\":\"" SPEC_SECRET "\"}", "\"url\" must be"},
        {"{\"id\":\"a\",\"id\":\"b\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}",
         "not JSON"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"x\":1}",
         "unknown member"},
        {"{\"id\":\"a\",\"url\":\"ftp://h/\",\"secret\":\"" SPEC_SECRET "\"}", "expected an http"},
        {"{\"id\":\"a/b\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}", "a name is"},
        {"{\"id\":\"a\\u0000\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}",
         "not JSON"}, /* jansson refuses NUL in strings */
        {"{\"id\":7,\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\"}", "\"id\" must be"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"channels\":\"news\",\"secret\":\"" SPEC_SECRET
         "\"}",
         "an array of"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"channels\":[\"a,b\"],\"secret\":\"" SPEC_SECRET
         "\"}",
         "without ','"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"channels\":[],\"secret\":\"" SPEC_SECRET "\"}",
         "1..16"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"events\":[\"x\"],\"secret\":\"" SPEC_SECRET "\"}",
         "unknown event"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"whsec_AAAA\"}", "16..64"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":[]}", "\"secret\" must be"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"pipeline\":0}",
         "\"pipeline\" must be an integer in 1..256"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"pipeline\":257}",
         "\"pipeline\" must be"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"pipeline\":\"8\"}",
         "\"pipeline\" must be"},
        {"{\"id\":\"a\",\"url\":\"http://h/\",\"secret\":\"" SPEC_SECRET "\",\"pipeline\":2.5}",
         "\"pipeline\" must be"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        why[0] = '\0';
        T_EQ_INT(hd_webhook_def_from_json(&d, bad[i].json, strlen(bad[i].json), why, sizeof(why)),
                 -1);
        T_CONTAINS(why, bad[i].why);
        T_TRUE(strstr(why, "MfKQ9r8GKYq") == NULL); /* never a secret */
    }
}

/* The publishing threads' filter: the conf's endpoints, then the admin API's as they change. */
static void test_filter(void)
{
    hd_conf_t *conf = NULL;
    char err[256];
    T_EQ_INT(hd_conf_load_string(&conf, "t.conf",
                                 "webhook https://h.example/in channels=news secret=" SPEC_SECRET
                                 "\n",
                                 NULL, 0, err, sizeof(err)),
             0);
    hk_filter_t *f = hk_filter_new(conf);
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_MESSAGE, "news", 4));
    T_TRUE(!hk_filter_wanted(f, HD_WEBHOOK_EV_MESSAGE, "room:1", 6));
    T_TRUE(!hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "news", 4));
    hd_webhook_def_t d;
    char why[256];
    const char *json = "{\"id\":\"a\",\"url\":\"http://h/\",\"channels\":[\"room:*\"],\"events\":"
                       "[\"channel.occupied\"],\"secret\":\"" SPEC_SECRET "\"}";
    T_EQ_INT(hd_webhook_def_from_json(&d, json, strlen(json), why, sizeof(why)), 0);
    const hd_webhook_def_t *defs[] = {&d};
    hk_filter_set(f, defs, 1);
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6));
    T_TRUE(!hk_filter_wanted(f, HD_WEBHOOK_EV_MESSAGE, "room:1", 6));
    T_TRUE(hk_filter_events(f) & HD_WEBHOOK_EV_OCCUPIED);
    hk_filter_set(f, defs, 1); /* a new view: this thread reads it, the old one is freed */
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "room:2", 6));
    hk_filter_set(f, NULL, 0);
    T_TRUE(!hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6));
    T_TRUE(!(hk_filter_events(f) & HD_WEBHOOK_EV_OCCUPIED));
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_MESSAGE, "news", 4));
    hk_filter_set(f, defs, 1);
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6));
    hk_filter_free(f); /* with this thread's view: ASan finds a leak otherwise */
    /* a new filter: this thread's reader of the old one is not followed */
    f = hk_filter_new(conf);
    hk_filter_set(f, defs, 1);
    T_TRUE(hk_filter_wanted(f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6));
    hk_filter_free(f);
    hd_conf_unref(conf);
}

/* Threads publishing while the hooks thread swaps the view (run under ThreadSanitizer by
 * scripts/test.sh): no race, and each reader sees the last view once the swaps are over. */
typedef struct filter_reader_s {
    hk_filter_t *f;
    int done;            /* atomic: the writer finished */
    int last;            /* what the reader saw after that */
    unsigned long reads; /* atomic */
} filter_reader_t;

static void filter_read(void *arg)
{
    filter_reader_t *r = arg;
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
        hk_filter_wanted(r->f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6);
        hk_filter_wanted(r->f, HD_WEBHOOK_EV_MESSAGE, "news", 4);
        __atomic_add_fetch(&r->reads, 1, __ATOMIC_RELAXED);
    }
    r->last = hk_filter_wanted(r->f, HD_WEBHOOK_EV_OCCUPIED, "room:1", 6);
}

static void test_filter_threads(void)
{
    hd_conf_t *conf = NULL;
    char err[256], why[256];
    T_EQ_INT(hd_conf_load_string(&conf, "t.conf",
                                 "webhook https://h.example/in channels=news secret=" SPEC_SECRET
                                 "\n",
                                 NULL, 0, err, sizeof(err)),
             0);
    hd_webhook_def_t d;
    const char *json = "{\"id\":\"a\",\"url\":\"http://h/\",\"channels\":[\"room:*\"],\"events\":"
                       "[\"channel.occupied\"],\"secret\":\"" SPEC_SECRET "\"}";
    T_EQ_INT(hd_webhook_def_from_json(&d, json, strlen(json), why, sizeof(why)), 0);
    const hd_webhook_def_t *defs[] = {&d};
    hk_filter_t *f = hk_filter_new(conf);
    filter_reader_t r[2];
    uv_thread_t t[2];
    for (int i = 0; i < 2; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].f = f;
        T_EQ_INT(uv_thread_create(&t[i], filter_read, &r[i]), 0);
    }
    for (int i = 0; i < 2; i++) { /* both read while the views change, however loaded */
        while (__atomic_load_n(&r[i].reads, __ATOMIC_RELAXED) == 0)
            uv_sleep(1);
    }
    for (int k = 0; k < 2000; k++)
        hk_filter_set(f, k % 2 ? NULL : defs, k % 2 ? 0 : 1);
    hk_filter_set(f, defs, 1);
    for (int i = 0; i < 2; i++)
        __atomic_store_n(&r[i].done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++) {
        uv_thread_join(&t[i]);
        T_EQ_INT(r[i].last, 1);
    }
    hk_filter_free(f);
    hd_conf_unref(conf);
}

static int parse_hook(hd_hook_def_t *d, const char *line, char *why, size_t whylen)
{
    const char *argv[16];
    char buf[1024];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t && argc < 16; t = strtok(NULL, " "))
        argv[argc++] = t;
    return hd_hook_def_parse(d, argc, argv, why, whylen);
}

/* Notify events the hooks thread has not taken yet are charged against the hook's max_memory
 * (their JSON + 128 bytes each), not only counted: a flood of big events (a connect with many
 * channels) past it is dropped and counted, and what is held never exceeds the bound. */
static void test_notify_inbox_bound(void)
{
    hd_conf_t *conf = NULL;
    char err[256];
    T_EQ_INT(hd_conf_load_string(&conf, "t.conf",
                                 "notify_hook http://127.0.0.1:9/n secret=" SPEC_SECRET
                                 " max_memory=64k queue_size=1000000\n",
                                 NULL, 0, err, sizeof(err)),
             0);
    hd_hooks_t *h = NULL;
    T_EQ_INT(hd_hooks_new(&h, conf, err, sizeof(err)), 0);
    hd_hooks_set(h);
    size_t len = 8192;
    char *json = hd_malloc(len);
    memset(json, ' ', len);
    json[0] = '{';
    json[len - 1] = '}';
    for (int i = 0; i < 100; i++) /* 820 KB of events for a 64 KiB budget */
        hd_hooks_notify(json, len);
    free(json);
    hd_hooks_stats_t st;
    hd_hooks_get_stats(h, &st);
    uint64_t held = 64 * 1024 / HK_NOTIFY_CHARGE(len); /* 7 */
    T_EQ_INT((int)st.notify_dropped, (int)(100 - held));
    T_EQ_INT((int)st.notify_memory_bytes, (int)(held * HK_NOTIFY_CHARGE(len)));
    T_TRUE(st.notify_memory_bytes <= 64 * 1024);
    /* a small event still fits in what is left */
    hd_hooks_notify("{}", 2);
    hd_hooks_get_stats(h, &st);
    T_EQ_INT((int)st.notify_dropped, (int)(100 - held));
    hd_hooks_set(NULL);
    hd_hooks_free(h); /* frees what the inbox held */
    hd_conf_unref(conf);
}

static void test_hook_def(void)
{
    hd_hook_def_t d;
    char why[256] = "";
    T_EQ_INT(parse_hook(&d, "http://127.0.0.1:9/auth secret=" SPEC_SECRET, why, sizeof(why)), 0);
    T_EQ_INT((int)d.timeout_ms, 2000);
    T_EQ_INT((int)d.cache_ms, 0);
    T_EQ_INT((int)d.cache_size, 10000);
    T_EQ_INT((int)d.max_pending, 1000);
    T_EQ_INT((int)d.concurrency, 64);
    T_TRUE(!d.allow_on_error);
    T_TRUE(!d.ask_connect);
    T_EQ_STR(d.ep.target, "/auth");
    T_EQ_INT((int)d.ep.n_keys, 1);
    T_EQ_INT(parse_hook(&d,
                        "https://b.example/a secret=" SPEC_SECRET " timeout=250ms cache=30s "
                        "cache_size=5 on_error=allow forward_headers=X-Tenant,User-Agent "
                        "forward_cookies=sid,Theme max_pending=7 concurrency=3 connect=on",
                        why, sizeof(why)),
             0);
    T_EQ_INT((int)d.timeout_ms, 250);
    T_EQ_INT((int)d.cache_ms, 30000);
    T_EQ_INT((int)d.cache_size, 5);
    T_TRUE(d.allow_on_error);
    T_EQ_INT((int)d.n_headers, 2);
    T_EQ_STR(d.headers[0], "x-tenant"); /* header names are case-insensitive: kept lowercase */
    T_EQ_STR(d.headers[1], "user-agent");
    T_EQ_INT((int)d.n_cookies, 2);
    T_EQ_STR(d.cookies[1], "Theme"); /* cookie names are not */
    T_EQ_INT((int)d.max_pending, 7);
    T_EQ_INT((int)d.concurrency, 3);
    T_TRUE(d.ask_connect);
    static const struct {
        const char *line, *why;
    } bad[] = {
        {"http://x/", "secret=whsec_... is required"},
        {"ftp://x/ secret=" SPEC_SECRET, "expected an http"},
        {"http://x/ secret=" SPEC_SECRET " timeout=5ms", "timeout: expected a duration"},
        {"http://x/ secret=" SPEC_SECRET " timeout=2m", "timeout: expected a duration"},
        {"http://x/ secret=" SPEC_SECRET " timeout=soon", "timeout: expected a duration"},
        {"http://x/ secret=" SPEC_SECRET " cache=25h", "cache: expected"},
        {"http://x/ secret=" SPEC_SECRET " cache_size=0", "cache_size: expected"},
        {"http://x/ secret=" SPEC_SECRET " on_error=maybe", "on_error: expected deny or allow"},
        {"http://x/ secret=" SPEC_SECRET " forward_headers=a,,b", "forward_headers: a name"},
        {"http://x/ secret=" SPEC_SECRET " forward_cookies=a:b", "not a name"},
        {"http://x/ secret=" SPEC_SECRET " max_pending=0", "max_pending: expected"},
        {"http://x/ secret=" SPEC_SECRET " concurrency=2000", "concurrency: expected"},
        {"http://x/ secret=" SPEC_SECRET " connect=yes", "connect: expected on or off"},
        {"http://x/ secret=" SPEC_SECRET " timeout=1s timeout=2s", "timeout= given twice"},
        {"http://x/ secret=" SPEC_SECRET " name=x", "unknown option"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        T_EQ_INT(parse_hook(&d, bad[i].line, why, sizeof(why)), -1);
        T_CONTAINS(why, bad[i].why);
        T_TRUE(strstr(why, "MfKQ9r8GKYq") == NULL);
    }
}

static void test_notify_def(void)
{
    const char *argv[8];
    char buf[512], why[256] = "";
    hd_notify_def_t d;
    int argc = 0;
    snprintf(buf, sizeof(buf), "http://127.0.0.1:9/n secret=" SPEC_SECRET);
    for (char *t = strtok(buf, " "); t; t = strtok(NULL, " "))
        argv[argc++] = t;
    T_EQ_INT(hd_notify_def_parse(&d, argc, argv, why, sizeof(why)), 0);
    T_EQ_INT((int)d.events, HD_NOTIFY_CONNECT | HD_NOTIFY_DISCONNECT | HD_NOTIFY_SUBSCRIBE |
                                HD_NOTIFY_UNSUBSCRIBE);
    T_EQ_INT((int)d.batch, 100);
    T_EQ_INT((int)d.flush_ms, 1000);
    T_EQ_INT((int)d.queue_size, 100000);
    T_TRUE(d.max_memory_bytes == (uint64_t)64 << 20);
    T_EQ_INT((int)d.timeout_ms, 5000);
    const char *more[] = {"http://x/",
                          ("secret=" SPEC_SECRET),
                          "events=disconnect,connect",
                          "batch=7",
                          "flush=0",
                          "queue_size=9",
                          "max_memory=64k",
                          "timeout=50ms"};
    T_EQ_INT(hd_notify_def_parse(&d, 8, more, why, sizeof(why)), 0);
    T_TRUE(d.max_memory_bytes == 64 * 1024);
    T_EQ_INT((int)d.events, HD_NOTIFY_CONNECT | HD_NOTIFY_DISCONNECT);
    T_EQ_INT((int)d.batch, 7);
    T_EQ_INT((int)d.flush_ms, 0);
    T_EQ_INT((int)d.queue_size, 9);
    T_EQ_INT((int)d.timeout_ms, 50);
    static const struct {
        const char *opt, *why;
    } bad[] = {
        {"events=", "unknown event"},
        {"events=join", "unknown event \"join\""},
        {"events=connect,,", "unknown event"},
        {"batch=0", "batch: expected"},
        {"flush=2m", "flush: expected"},
        {"queue_size=0", "queue_size: expected"},
        {"timeout=1ms", "timeout: expected"},
        {"cache=1s", "unknown option"},
        {"max_memory=63k", "max_memory: expected a size in 64k..16g"},
        {"max_memory=17g", "max_memory: expected"},
        {"max_memory=1x", "max_memory: expected"},
        {"max_memory=", "max_memory: expected"},
        {"max_memory=1mb", "max_memory: expected"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        const char *v[] = {"http://x/", ("secret=" SPEC_SECRET), bad[i].opt};
        T_EQ_INT(hd_notify_def_parse(&d, 3, v, why, sizeof(why)), -1);
        T_CONTAINS(why, bad[i].why);
    }
}

static void check_verdict(int status, const char *body, int kind, int deny_status,
                          const char *reason, const char *sub)
{
    hk_verdict_t v;
    size_t len = body ? strlen(body) : 0;
    char *copy = body ? hd_strndup(body, len) : NULL; /* exact size: ASan sees an over-read */
    hk_authz_answer(status, copy, len, &v);
    T_EQ_INT(v.kind, kind);
    if (kind == HD_HOOKS_DENY)
        T_EQ_INT(v.status, deny_status);
    if (reason)
        T_CONTAINS(v.reason, reason);
    if (sub)
        T_EQ_STR(hd_identity_sub(v.id), sub);
    else
        T_TRUE(v.id == NULL);
    hd_identity_unref(v.id);
    free(copy);
}

static void test_authz_answer(void)
{
    check_verdict(200, "{\"allow\":true}", HD_HOOKS_ALLOW, 0, NULL, NULL);
    check_verdict(204, "{\"allow\":true,\"sub\":\"42\",\"channels\":{\"publish\":[\"room:1\"]}}",
                  HD_HOOKS_ALLOW, 0, NULL, "42");
    check_verdict(200, "{\"allow\":false}", HD_HOOKS_DENY, 403, "refused by the application", NULL);
    check_verdict(200, "{\"allow\":false,\"reason\":\"banned\\n\",\"status\":401}", HD_HOOKS_DENY,
                  401, "banned?", NULL);
    check_verdict(403, NULL, HD_HOOKS_DENY, 403, "refused by the application", NULL);
    check_verdict(401, "{\"reason\":\"log in\"}", HD_HOOKS_DENY, 401, "log in", NULL);
    check_verdict(403, "<html>", HD_HOOKS_DENY, 403, "refused", NULL);
    check_verdict(500, "{\"allow\":true}", HD_HOOKS_ERROR, 0, "answered 500", NULL);
    check_verdict(302, NULL, HD_HOOKS_ERROR, 0, "answered 302", NULL);
    check_verdict(200, NULL, HD_HOOKS_ERROR, 0, "not {\"allow\"", NULL);
    check_verdict(200, "[true]", HD_HOOKS_ERROR, 0, "not {\"allow\"", NULL);
    check_verdict(200, "{\"allow\":1}", HD_HOOKS_ERROR, 0, "not {\"allow\"", NULL);
    check_verdict(200, "{\"allow\":true,\"sub\":7}", HD_HOOKS_ERROR, 0, "identity is unusable",
                  NULL);
    check_verdict(200, "{\"allow\":true,\"allow\":false}", HD_HOOKS_ERROR, 0, NULL, NULL);
}

/* The authorize hook keeps the answer's body, cut anywhere. */
static void test_response_body(void)
{
    const char *a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\n{\"all\r\n9\r\now\":true}\r\n0\r\n\r\n";
    size_t n = strlen(a);
    for (size_t cut = 0; cut <= n; cut++) {
        hk_response_t r;
        hk_response_init(&r);
        r.keep_body = 1;
        int rc = feed(&r, a, cut);
        if (rc == HK_RESP_MORE)
            rc = feed(&r, a + cut, n - cut);
        T_EQ_INT(rc, HK_RESP_DONE);
        size_t len;
        char *body = hk_response_take_body(&r, &len);
        T_EQ_INT((int)len, 14);
        T_EQ_STR(body, "{\"allow\":true}");
        free(body);
        hk_response_dispose(&r);
    }
}

/* A batch of writes (wbatch.c) over real sockets: each socket gets exactly its bytes, in the
 * order of its buffers; a full socket answers UV_EAGAIN and one with a little room the bytes it
 * took, as uv_try_write would; a batch of one is a plain write, and more than HD_WBATCH_MAX are
 * refused by hd_wbatch_add. Where the kernel has no AIO for us, the batch is NULL (the client
 * then writes one by one) and only that is checked. */
static void test_wbatch(void)
{
    hd_wbatch_t *wb = hd_wbatch_new();
    if (!wb) {
        fprintf(stderr, "  (no Linux AIO here: the client writes each socket itself)\n");
        return;
    }
    enum { N = 5 };
    int sp[N][2];
    for (int i = 0; i < N; i++) {
        T_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp[i]), 0);
        int size = i >= 3 ? 4096 : 1 << 20; /* the last two to fill, the others not to */
        setsockopt(sp[i][0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    }
    /* socket 3 full, socket 4 with room for less than its write */
    static char fill[1 << 16];
    memset(fill, 'f', sizeof(fill));
    while (write(sp[3][0], fill, sizeof(fill)) > 0 || write(sp[3][0], fill, 1) > 0) {
    }
    while (write(sp[4][0], fill, 1024) > 0) {
    }
    char drained[1 << 16];
    T_TRUE(read(sp[4][1], drained, 3000) > 0); /* some room again, less than 60,000 bytes */
    for (int round = 0; round < 2; round++) {
        char heads[N][32], bodies[N][16];
        uv_buf_t iov[N][2];
        for (int i = 0; i < N; i++) {
            int hl = snprintf(heads[i], sizeof(heads[i]), "head %d of round %d;", i, round);
            int bl = snprintf(bodies[i], sizeof(bodies[i]), "body %d", i);
            iov[i][0] = uv_buf_init(heads[i], (unsigned)hl);
            iov[i][1] = uv_buf_init(bodies[i], (unsigned)bl);
        }
        uv_buf_t big[1] = {uv_buf_init(fill, 60000)};
        for (int i = 0; i < N; i++) {
            if (i == 4)
                T_EQ_INT(hd_wbatch_add(wb, sp[i][0], big, 1), i);
            else
                T_EQ_INT(hd_wbatch_add(wb, sp[i][0], iov[i], 2), i);
        }
        T_EQ_INT((int)hd_wbatch_count(wb), N);
        ssize_t res[HD_WBATCH_MAX];
        hd_wbatch_run(wb, res);
        T_EQ_INT((int)hd_wbatch_count(wb), 0);
        for (int i = 0; i < 3; i++) {
            size_t want = iov[i][0].len + iov[i][1].len;
            T_EQ_INT((int)res[i], (int)want);
            char got[64] = {0}, exp[64];
            snprintf(exp, sizeof(exp), "%s%s", heads[i], bodies[i]);
            T_EQ_INT((int)read(sp[i][1], got, sizeof(got) - 1), (int)want);
            T_EQ_STR(got, exp);
        }
        T_EQ_INT((int)res[3], UV_EAGAIN);
        T_TRUE(res[4] == UV_EAGAIN || (res[4] > 0 && res[4] < 60000));
        while (read(sp[4][1], drained, sizeof(drained)) > 0) {
        }
        while (write(sp[4][0], fill, 1024) > 0) {
        }
        T_TRUE(read(sp[4][1], drained, 3000) > 0);
    }
    /* one write: done without io_submit, the same result */
    uv_buf_t one = uv_buf_init((char *)"x", 1);
    T_EQ_INT(hd_wbatch_add(wb, sp[0][0], &one, 1), 0);
    ssize_t res1[HD_WBATCH_MAX];
    hd_wbatch_run(wb, res1);
    T_EQ_INT((int)res1[0], 1);
    char c = 0;
    T_EQ_INT((int)read(sp[0][1], &c, 1), 1);
    T_TRUE(c == 'x');
    /* a closed peer: the error of writev (EPIPE; herald ignores SIGPIPE, as here), and the
     * batch's others still written */
    signal(SIGPIPE, SIG_IGN);
    close(sp[1][1]);
    T_EQ_INT(hd_wbatch_add(wb, sp[0][0], &one, 1), 0);
    T_EQ_INT(hd_wbatch_add(wb, sp[1][0], &one, 1), 1);
    hd_wbatch_run(wb, res1);
    T_EQ_INT((int)res1[0], 1);
    T_EQ_INT((int)res1[1], UV_EPIPE);
    /* bounded: HD_WBATCH_MAX writes, not one more */
    for (int i = 0; i < HD_WBATCH_MAX; i++)
        T_EQ_INT(hd_wbatch_add(wb, sp[2][0], &one, 1), i);
    T_EQ_INT(hd_wbatch_add(wb, sp[2][0], &one, 1), -1);
    ssize_t resn[HD_WBATCH_MAX];
    hd_wbatch_run(wb, resn);
    for (int i = 0; i < HD_WBATCH_MAX; i++)
        T_EQ_INT((int)resn[i], 1);
    T_EQ_INT((int)read(sp[2][1], drained, sizeof(drained)), HD_WBATCH_MAX);
    for (int i = 0; i < N; i++) {
        close(sp[i][0]);
        if (i != 1)
            close(sp[i][1]);
    }
    hd_wbatch_free(wb);
}

int main(void)
{
    T_RUN(test_def_good);
    T_RUN(test_def_bad);
    T_RUN(test_def_json);
    T_RUN(test_filter);
    T_RUN(test_filter_threads);
    T_RUN(test_sign);
    T_RUN(test_signed_head);
    T_RUN(test_response);
    T_RUN(test_response_pipelined);
    T_RUN(test_retry_after);
    T_RUN(test_entry);
    T_RUN(test_member_events);
    T_RUN(test_private);
    T_RUN(test_events);
    T_RUN(test_inbox_bound);
    T_RUN(test_stop_bounded);
    T_RUN(test_notify_inbox_bound);
    T_RUN(test_hook_def);
    T_RUN(test_notify_def);
    T_RUN(test_authz_answer);
    T_RUN(test_response_body);
    T_RUN(test_wbatch);
    return 0;
}
