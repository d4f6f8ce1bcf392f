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
 *   - an error stays an error.
 */
#include "hooks/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_webhook_response: check failed: %s (%s:%d)\n", #cond, __FILE__,  \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int feed(hk_response_t *r, const uint8_t *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int rc = hk_response_feed(r, copy, len);
    free(copy);
    return rc;
}

/* Feeds data cut at `cut`, then EOF when more was wanted; the outcome and status. */
static int run(const uint8_t *data, size_t size, size_t cut, int *status, int *keep)
{
    hk_response_t r;
    hk_response_init(&r);
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
    } else {
        CHECK(hk_response_feed(&r, "x", 1) == HK_RESP_ERROR);
    }
    *status = r.status;
    *keep = r.keep_alive;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % size;
    data++, size--;
    int s1, k1, s2, k2;
    int a = run(data, size, cut > size ? size : cut, &s1, &k1);
    int b = run(data, size, size, &s2, &k2);
    CHECK(a == b);
    if (a == HK_RESP_DONE)
        CHECK(s1 == s2 && k1 == k2);
    return 0;
}
