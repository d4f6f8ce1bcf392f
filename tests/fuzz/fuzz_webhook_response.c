/* SPDX-License-Identifier: MIT */
/*
 * fuzz_webhook_response.c: libFuzzer harness for what a webhook receiver answers
 * (src/hooks/response.c, llhttp in response mode under herald's rules), the one thing herald
 * reads from the network as a client. The first byte chooses a cut; the rest is the answer,
 * fed in two exact-size heap copies (ASan catches an over-read), then EOF. Checked on every
 * input:
 *   - the outcome does not depend on the cut (the same answer whole gives the same result);
 *   - a complete answer has a final status (200..999, never 1xx) and read at most 64 KiB of
 *     body; anything fed after the answer is an error, never a second answer;
 *   - an error stays an error;
 *   - the Retry-After kept is a NUL-terminated value under 40 bytes, the same whatever the cut,
 *     and what hk_retry_after_parse makes of it is a wait of at most 2^32 s;
 *   - an answer read whole with its body kept (the authorize hook's) keeps exactly the bytes it
 *     counted, NUL-terminated;
 *   - read as a pipelined connection reads it (hk_response_feed_some, a fresh parser after each
 *     answer): every answer ends within the bytes given and after at least one of them, has a
 *     final status, and the first agrees with the single read (an answer whole is the same
 *     answer, ending at the input's end or by EOF).
 */
#include "hooks/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int feed(hk_response_t *r, const uint8_t *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int rc = hk_response_feed(r, copy, len);
    free(copy);
    return rc;
}

/* Feeds data cut at `cut`, then EOF when more was wanted; the outcome and status. */
static int run(const uint8_t *data, size_t size, size_t cut, int *status, int *keep,
               char retry_after[40], int keep_body)
{
    hk_response_t r;
    hk_response_init(&r);
    r.keep_body = (uint8_t)keep_body;
    int rc = feed(&r, data, cut);
    if (rc != HK_RESP_ERROR && cut < size)
        rc = feed(&r, data + cut, size - cut);
    if (rc == HK_RESP_MORE)
        rc = hk_response_eof(&r);
    CHECK(rc == HK_RESP_DONE || rc == HK_RESP_ERROR);
    if (rc == HK_RESP_DONE) {
        CHECK(r.is_done && r.has_head);
        CHECK(r.status >= 200 && r.status <= 999);
        CHECK(r.body_bytes <= HK_RESPONSE_BODY_MAX);
        CHECK(hk_response_feed(&r, "x", 1) == HK_RESP_ERROR);
        CHECK(memchr(r.retry_after, '\0', sizeof(r.retry_after)) != NULL);
        uint64_t ms;
        if (hk_retry_after_parse(r.retry_after, strlen(r.retry_after), 1796253028175ull, &ms) == 0)
            CHECK(ms <= (uint64_t)UINT32_MAX * 1000);
        memcpy(retry_after, r.retry_after, sizeof(r.retry_after));
    } else {
        CHECK(hk_response_feed(&r, "x", 1) == HK_RESP_ERROR);
    }
    *status = r.status;
    *keep = r.keep_alive;
    if (keep_body && rc == HK_RESP_DONE) {
        size_t len;
        char *body = hk_response_take_body(&r, &len);
        CHECK(len == r.body_bytes && (body == NULL) == (len == 0));
        CHECK(!body || body[len] == '\0');
        free(body);
    }
    hk_response_dispose(&r);
    return rc;
}

/* Reads data as answers one after the other; the first's outcome and status. */
static int run_pipelined(const uint8_t *data, size_t size, int *status)
{
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t at = 0;
    int first = -2;
    for (int k = 0; k < 1000; k++) {
        hk_response_t r;
        hk_response_init(&r);
        size_t used = 0;
        int rc = hk_response_feed_some(&r, copy + at, size - at, &used);
        CHECK(used <= size - at);
        if (rc == HK_RESP_DONE) {
            CHECK(used >= 1 && r.is_done && r.has_head);
            CHECK(r.status >= 200 && r.status <= 999);
            CHECK(r.body_bytes <= HK_RESPONSE_BODY_MAX);
        } else {
            CHECK(rc == HK_RESP_ERROR || used == size - at);
        }
        if (first == -2) {
            first = rc;
            *status = r.status;
        }
        hk_response_dispose(&r);
        at += used;
        if (rc != HK_RESP_DONE || at == size)
            break;
    }
    free(copy);
    return first;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % size;
    data++, size--;
    int s1, k1, s2, k2;
    char ra1[40] = "", ra2[40] = "";
    int a = run(data, size, cut > size ? size : cut, &s1, &k1, ra1, 0);
    int b = run(data, size, size, &s2, &k2, ra2, 1);
    CHECK(a == b);
    if (a == HK_RESP_DONE)
        CHECK(s1 == s2 && k1 == k2 && strcmp(ra1, ra2) == 0);
    int s3 = 0;
    int c = run_pipelined(data, size, &s3);
    if (a == HK_RESP_DONE) /* whole: the same answer, or one the EOF ends (MORE here) */
        CHECK((c == HK_RESP_DONE && s3 == s1) || c == HK_RESP_MORE);
    if (c == HK_RESP_ERROR) /* what a single read refuses too */
        CHECK(a == HK_RESP_ERROR);
    return 0;
}
