/* SPDX-License-Identifier: MIT */
/*
 * redis_reply.h: what the Redis bridge reads in Redis's answers, private to src/broker. Pure
 * functions over hiredis reply trees and pub/sub payloads (no I/O, no bridge state), so that
 * unit tests and the fuzzer (tests/fuzz/fuzz_redis.c) drive them directly. Anything that is
 * not what herald.lua sends is refused whole: nothing half-parsed reaches a client.
 */
#ifndef HERALD_BROKER_REDIS_REPLY_H
#define HERALD_BROKER_REDIS_REPLY_H

#include "herald/pubsub.h"

#include <hiredis/hiredis.h>

/* A string or status reply: its bytes. Returns 0, or -1 for anything else (or NULL). */
int hd_redis_reply_str(const redisReply *e, const char **s, size_t *len);
/* A non-negative integer reply, or a string of 1-19 decimal digits. Returns 0 or -1. */
int hd_redis_reply_u64(const redisReply *e, uint64_t *v);

/* Longest publisher stamp (hd_message_t.publisher) accepted from Redis. */
#define HD_REDIS_PUBLISHER_MAX 8192
/*
 * A message of channel from its stored parts (id "<epoch36>-<seq>", or "<id> <receipt tag>" for
 * a message whose publisher asked receipts: it carries the tag's address, hd_rcpt_address;
 * publish time, content type valid for hd_content_type_valid, publisher stamp "" or a JSON
 * object, payload). NULL when a part is malformed.
 */
hd_message_t *hd_redis_message_new(const char *channel, size_t channel_len, const char *id,
                                   size_t id_len, uint64_t time_ms, const char *ct, size_t ct_len,
                                   const char *pub, size_t pub_len, const char *data, size_t len);
/* A pub/sub payload "<id>\n<time ms>\n<content type>\n<publisher>\n<payload>" of channel
 * (publisher "" for none; id maybe with a receipt tag, as above). NULL if malformed. */
hd_message_t *hd_redis_parse_pubsub(const char *channel, size_t channel_len, const char *s,
                                    size_t len);

/* herald_read's answer. */
typedef struct hd_redis_read_s {
    uint64_t epoch, cur, history_len; /* cur: the cluster-wide sequence when it was read */
    int gap, found;
    char last_id[HD_ID_MAX];
    hd_message_t **msgs; /* n references, oldest first */
    size_t n;
} hd_redis_read_t;

/* Parses herald_read's answer for channel. Returns 0, or -1 (out empty, nothing allocated). */
int hd_redis_parse_read(const char *channel, size_t channel_len, const redisReply *rep,
                        hd_redis_read_t *out);
/* Releases the messages of a parsed read. */
void hd_redis_read_dispose(hd_redis_read_t *r);

/*
 * herald_publish_batch's answer {time ms, id 1 .. id n} for msgs[0..n): sets their ids and
 * time. Returns 0, or -1 when it is not that (then no message is changed).
 */
int hd_redis_parse_publish(const redisReply *rep, hd_message_t *const *msgs, size_t n);

#endif
