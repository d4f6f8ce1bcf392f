/* SPDX-License-Identifier: MIT */
/*
 * idem.h: the embedded broker's idempotency table, private to src/broker. It remembers, for
 * idempotency_window, the sequence a publish with an idempotency key got on a channel, so that a
 * retry of that publish gets the same id instead of publishing twice (the Redis bridge keeps the
 * same record in Redis: herald.lua). One thread (the broker's) uses it.
 *
 * Bounded: every entry costs its key, its channel name and a fixed header (counted in bytes);
 * past max_bytes the oldest entries are forgotten before their window ends (counted in
 * n_forgotten). Entries expire in insertion order (one window for all), so expiry walks only
 * what expires.
 */
#ifndef HERALD_BROKER_IDEM_H
#define HERALD_BROKER_IDEM_H

#include "herald/common.h"
#include "herald/hmap.h"
#include "herald/pubsub.h"

typedef struct hd_idem_s {
    hd_hmap_t map;  /* "<channel>/<key>" -> entry */
    hd_list_t fifo; /* oldest first */
    uint64_t window_ms;
    size_t max_bytes;
    size_t bytes;         /* what the entries take, headers included */
    uint64_t n_forgotten; /* entries dropped before their window ended (max_bytes) */
} hd_idem_t;

/* window_ms 0: idempotency is off (lookups find nothing, nothing is stored). */
void hd_idem_init(hd_idem_t *t, uint64_t window_ms, size_t max_bytes);
void hd_idem_dispose(hd_idem_t *t);
/* 1 and *seq if (channel, key) was published within the window, else 0. */
int hd_idem_find(hd_idem_t *t, const char *channel, size_t channel_len, const char *key,
                 uint64_t now_ms, uint64_t *seq);
/* Remembers that (channel, key) got seq (it must not be in the table). */
void hd_idem_put(hd_idem_t *t, const char *channel, size_t channel_len, const char *key,
                 uint64_t seq, uint64_t now_ms);
/* Forgets (channel, key) if it is there. */
void hd_idem_forget(hd_idem_t *t, const char *channel, size_t channel_len, const char *key);
/* Forgets what left the window. */
void hd_idem_expire(hd_idem_t *t, uint64_t now_ms);

#endif
