/* SPDX-License-Identifier: MIT */
/*
 * bucket.h: the 8-byte token bucket a connection keeps for client_publish_rate (a WebSocket's
 * publishes, an HTTP connection's token-authorized publishes). It starts full (a fresh
 * connection is never refused its first `burst`), refills at `rate` per second up to `burst`.
 * The time is kept in 32 bits of loop milliseconds: a difference modulo 2^32 is right for 49
 * days, and a connection idle that long has a full bucket either way. The all-zero bucket is
 * not valid: hd_bucket_init it.
 */
#ifndef HERALD_BUCKET_H
#define HERALD_BUCKET_H

#include <stdint.h>

typedef struct hd_bucket_s {
    float tokens;   /* < 0: never used, full */
    uint32_t at_ms; /* when tokens was counted */
} hd_bucket_t;

static inline void hd_bucket_init(hd_bucket_t *b)
{
    b->tokens = -1;
    b->at_ms = 0;
}

/*
 * Takes a token at now_ms (loop time) from a bucket of `rate` per second and depth `burst`
 * (both > 0). Returns 1, or 0 with *retry_ms the time until one is back.
 */
static inline int hd_bucket_take(hd_bucket_t *b, uint64_t now_ms, uint32_t rate, uint32_t burst,
                                 uint64_t *retry_ms)
{
    uint32_t now = (uint32_t)now_ms;
    *retry_ms = 0;
    if (b->tokens < 0) {
        b->tokens = (float)burst;
    } else {
        b->tokens += (float)((double)(uint32_t)(now - b->at_ms) * rate / 1000.0);
        if (b->tokens > (float)burst)
            b->tokens = (float)burst;
    }
    b->at_ms = now;
    if (b->tokens < 1) {
        *retry_ms = (uint64_t)((1 - b->tokens) * 1000.0 / rate) + 1;
        return 0;
    }
    b->tokens -= 1;
    return 1;
}

#endif
