/* SPDX-License-Identifier: MIT */
/*
 * resp_input.h: the input of the harnesses of what herald reads from Redis (fuzz_redis.c,
 * fuzz_webhook_take.c): RESP bytes as Redis would send them, turned into reply trees by
 * hiredis's reader, each tree handed to the harness's check. Header-only: each harness includes
 * it once.
 */
#ifndef HERALD_FUZZ_RESP_INPUT_H
#define HERALD_FUZZ_RESP_INPUT_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_check.h"

/*
 * hiredis 0.14's reader allocates an array reply's element table from its header before reading
 * any element ("*1700000000" is 13 GB): no Redis of ours sends that, and it is hiredis's, not
 * ours to fuzz. Inputs with an array header over 4096 elements are skipped: any '*' followed
 * by such a number, wherever it stands, since where hiredis sees a line start depends on how it
 * framed what came before (found by CI: "+++*500000000" after bare newlines).
 */
static int has_huge_array(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != '*')
            continue;
        uint64_t n = 0;
        for (size_t k = i + 1; k < size && data[k] >= '0' && data[k] <= '9' && n <= 4096; k++)
            n = n * 10 + (uint64_t)(data[k] - '0');
        if (n > 4096)
            return 1;
    }
    return 0;
}

/* Calls each(reply) for the reply trees hiredis's reader makes of data[size], at most 64, each
 * freed after; nothing for an input with a huge array header (has_huge_array). */
static void resp_each_reply(const uint8_t *data, size_t size, void (*each)(const redisReply *rep))
{
    if (has_huge_array(data, size))
        return;
    redisReader *rd = redisReaderCreate();
    CHECK(rd != NULL);
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        for (int k = 0; k < 64; k++) {
            void *rep = NULL;
            if (redisReaderGetReply(rd, &rep) != REDIS_OK || !rep)
                break;
            each(rep);
            freeReplyObject(rep);
        }
    }
    redisReaderFree(rd);
}

#endif
