/* SPDX-License-Identifier: MIT */
/*
 * memory_store.h (private to src/broker): the channels of the embedded broker, with no thread
 * and no mailbox, so unit tests drive it directly. memory.c owns one store and calls it only
 * under its mutex, from whichever thread submits a request; nothing here locks.
 *
 * A channel exists while it has subscribers or history. Its history is a ring of message
 * references allocated on the first message and grown by doubling up to history_size, halved
 * when a quarter full, freed when empty:
 *
 *   ring: [ m5 | m6 | m7 | -- | -- | -- | m3 | m4 ]   cap 8, len 5
 *                     ^ newest            ^ head (the oldest)
 *                          ^ the next push goes here
 *
 * Memory: every byte the store holds for a channel or a message counts against max_memory
 * (memory_bytes): the channel struct with its name, the per-worker interest array, its share of
 * the table's buckets and of the expiry heap, the ring, and each message in history (header,
 * content type, payload and idempotency key), each allocation with the allocator's overhead. Above
 * max_memory the least recently published channels lose their history first; a channel left with
 * neither history nor subscribers goes away.
 *
 * Budget: at most max_channels channels exist. A publish or subscribe that would make one more
 * (or whose new channels would not fit max_memory even with all history evicted) is refused
 * with HD_ECHANNELS or HD_EMEMORY, before anything is evicted; no channel is ever evicted to
 * make room for a new one past max_channels, so a flood of new names cannot push out the
 * history of the channels in use.
 *
 * Expiry: channels with history sit in a min-heap by the publish time of their oldest message,
 * so a pass of hd_mstore_expire costs O(log channels) per expired message, not one look at
 * every channel.
 */
#ifndef HERALD_BROKER_MEMORY_STORE_H
#define HERALD_BROKER_MEMORY_STORE_H

#include "herald/chantab.h"
#include "herald/heap.h"
#include "herald/pubsub.h"

typedef struct hd_mchan_s {
    hd_chan_t ch;  /* in store->chans, keyed by name */
    hd_list_t lru; /* store->lru: least recently published first */
    /* In store->heap while the channel has history (and history_ttl is set): key, its oldest
     * message's time_ms */
    hd_heap_node_t expiry;
    hd_message_t **ring;
    uint32_t cap, head, len;
    size_t bytes;         /* payload bytes in history */
    uint64_t trimmed_seq; /* highest sequence that ever left history */
    uint64_t last_seq;    /* last sequence published here; 0: none */
    /*
     * Per worker: its subscribers here, and the workers with any (chantab.h). Moved from 0 and
     * to 0 only by the store (under the broker's lock: interest and history change together);
     * between 1 and more also by the worker itself, atomically and without the lock, through the
     * counter hd_mstore_subscribe handed it (r->interest).
     */
    hd_interest_t in;
    char name[]; /* its name and a NUL (the table allocates the entry) */
} hd_mchan_t;

typedef struct hd_mstore_limits_s {
    uint32_t history_size;    /* messages per channel */
    uint64_t history_ttl_ms;  /* 0: no age limit */
    size_t history_max_bytes; /* payload bytes per channel */
    size_t max_memory_bytes;  /* every byte the store holds */
    uint64_t max_channels;
} hd_mstore_limits_t;

typedef struct hd_mstore_s {
    hd_mstore_limits_t lim;
    unsigned n_workers;
    uint64_t epoch, seq;
    hd_chantab_t chans; /* hd_mchan_t */
    hd_list_t lru;
    hd_heap_t heap;  /* channels by their oldest message's time_ms (history_ttl > 0 only) */
    uint64_t *tombs; /* highest sequence lost with a deleted channel, by keyed hash of its name */
    size_t memory_bytes;     /* everything charged: channels, rings, messages in history */
    size_t history_bytes;    /* payload bytes in history */
    size_t history_charge;   /* of memory_bytes, the messages in history and the rings */
    size_t idle_charge;      /* of memory_bytes, the channels with history and no subscribers:
                              * evicting all history frees both charges at least */
    uint64_t history_msgs;   /* messages in history */
    uint64_t evicted;        /* channels whose history max_memory took */
    uint64_t evicted_logged; /* evicted when the last eviction was logged */
    uint64_t evicted_log_ms; /* when it was logged */
    uint64_t refused;        /* new channels refused (max_channels or max_memory) */
    uint64_t refused_logged; /* refused when the last refusal was logged */
    uint64_t refused_log_ms; /* when it was logged */
    int refused_err;         /* the limit of the last refusal: HD_ECHANNELS or HD_EMEMORY */
    hd_deliver_cb deliver;   /* for each worker with subscribers on a published message's channel */
    void *deliver_arg;
} hd_mstore_t;

/* An empty store (the epoch: ids of this store are "<epoch>-<seq>"). */
void hd_mstore_init(hd_mstore_t *st, const hd_mstore_limits_t *lim, unsigned n_workers,
                    uint64_t epoch, hd_deliver_cb deliver, void *deliver_arg);
/* Releases every channel and message reference. */
void hd_mstore_dispose(hd_mstore_t *st);

/*
 * Publishes msgs[0..n) in order at wall-clock time now_ms: ids, history, delivery. All or
 * nothing: when the messages would make more channels than the budget allows, none is
 * published, nothing is evicted, and the call returns HD_ECHANNELS (max_channels) or HD_EMEMORY
 * (the new channels would pass max_memory even with all history evicted); otherwise 0.
 */
int hd_mstore_publish(hd_mstore_t *st, hd_message_t *const *msgs, size_t n, uint64_t now_ms);
/*
 * Counts a subscriber of worker on channel r->channel (made if new) and fills r with the history
 * after since (r->msgs, r->n_msgs, r->gap), at most limit messages (0: all), and r->interest
 * with the worker's counter (valid while it is above 0). Returns 0, or HD_ECHANNELS /
 * HD_EMEMORY when the channel is new and the budget is spent (nothing counted).
 */
int hd_mstore_subscribe(hd_mstore_t *st, unsigned worker, hd_breq_t *r, size_t limit);
/* Drops one subscriber of worker on channel (no-op when there is none). */
void hd_mstore_unsubscribe(hd_mstore_t *st, unsigned worker, const char *channel, size_t len);
/* Fills r (HISTORY) with history after since, at most limit messages (0: all); makes nothing. */
void hd_mstore_history(hd_mstore_t *st, hd_breq_t *r, size_t limit);
/* Fills r (INFO): found, subscribers, history length, last id. */
void hd_mstore_info(hd_mstore_t *st, hd_breq_t *r);
/* Drops history older than history_ttl at wall-clock time now_ms. */
void hd_mstore_expire(hd_mstore_t *st, uint64_t now_ms);
/*
 * Logs evictions and refused channels, each at most once per 10 seconds of now_ms (monotonic),
 * with the count since its last line.
 */
void hd_mstore_log_limits(hd_mstore_t *st, uint64_t now_ms);

hd_mchan_t *hd_mstore_find(const hd_mstore_t *st, const char *name, size_t len);
/* The same with the name's hash known (hd_chantab_find_hashed; 0: computed here). */
hd_mchan_t *hd_mstore_find_hashed(const hd_mstore_t *st, const char *name, size_t len, uint64_t h);
/* Bytes charged for a channel of name_len bytes with no ring (what a new channel needs). */
size_t hd_mstore_channel_cost(const hd_mstore_t *st, size_t name_len);
/* Bytes charged for a message in history. */
size_t hd_mstore_message_cost(const hd_message_t *m);

#endif
