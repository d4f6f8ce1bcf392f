/* SPDX-License-Identifier: MIT */
/*
 * chantab.h: the channel tables of the process and the per-worker interest of a broker's
 * channel. Three tables exist, one module serves them all:
 *
 *   each worker's hub (src/pubsub/hub.c)      its local subscribers, by channel
 *   the embedded broker (broker/memory_store.c) history, and which workers subscribe where
 *   the Redis bridge (broker/redis_chan.c)    which workers subscribe where, reads in flight
 *
 * hd_chantab_t: channels by name, in an hd_hmap_t (SipHash under the process's key: names come
 * from clients). An entry is one allocation made by the table, zeroed: the owner's struct, which
 * begins with an hd_chan_t named `ch` and ends with `char name[]` (the name and a NUL), so a
 * channel costs what its name needs:
 *
 *   [ hd_chan_t ch (node: key -> name) | the owner's fields ... | name bytes | NUL ]
 *
 * hd_interest_t (brokers only: the hub is one worker's): a channel's subscribers per worker and
 * the number of workers with any; hd_interest_fan_out hands a message to each worker with
 * subscribers, the way both brokers deliver into the workers' mailboxes.
 *
 * Threads: a table is used by one thread at a time (its worker, the bridge's thread, or under
 * the embedded broker's lock). A worker's count in an hd_interest_t may also be moved by that
 * worker without the lock (the embedded broker hands it over: hd_breq_t.interest), so counts are
 * read and written with relaxed atomics; n_workers changes only under the owner's serialization.
 * Nothing here takes a lock, and a fan-out reads one counter per worker.
 */
#ifndef HERALD_CHANTAB_H
#define HERALD_CHANTAB_H

#include <stddef.h>
#include <stdint.h>

#include "herald/hmap.h"
#include "herald/pubsub.h"

/* The head of every channel entry. */
typedef struct hd_chan_s {
    hd_hnode_t node; /* in the table; its key is the entry's name */
} hd_chan_t;

typedef struct hd_chantab_s {
    hd_hmap_t map;
    size_t name_offset; /* where an entry's name starts: offsetof(type, name) */
} hd_chantab_t;

/* An empty table of entries of `type` (which begins with `hd_chan_t ch` and ends with
 * `char name[]`), with at least n_buckets buckets. */
#define HD_CHANTAB_INIT(t, type, n_buckets)                                                        \
    do {                                                                                           \
        _Static_assert(offsetof(type, ch) == 0, #type ": its hd_chan_t must come first");          \
        hd_chantab_init((t), offsetof(type, name), (n_buckets));                                   \
    } while (0)
void hd_chantab_init(hd_chantab_t *t, size_t name_offset, size_t n_buckets);
/* Frees the bucket array; the entries left must have been freed (hd_chantab_foreach). */
void hd_chantab_dispose(hd_chantab_t *t);
/* The channel of that name, or NULL. */
hd_chan_t *hd_chantab_find(const hd_chantab_t *t, const char *name, size_t len);
/* The same with the name's hash known (h: hd_hash(name, len); 0: not known, computed here). */
hd_chan_t *hd_chantab_find_hashed(const hd_chantab_t *t, const char *name, size_t len, uint64_t h);
/*
 * The channel of that name, made if it is not there: a zeroed entry of name_offset + len + 1
 * bytes holding the name (NUL-terminated), in the table. *made (when not NULL) is set to 1 if it
 * was made, else 0. len is 1..HD_CHANNEL_MAX.
 */
hd_chan_t *hd_chantab_get(hd_chantab_t *t, const char *name, size_t len, int *made);
/* Takes c out of the table and frees its entry (free what the entry points to first). */
void hd_chantab_free(hd_chantab_t *t, hd_chan_t *c);
/* Visits every channel; cb may free the channel it is given (and only that one). */
void hd_chantab_foreach(hd_chantab_t *t, void (*cb)(hd_chan_t *c, void *arg), void *arg);
static inline size_t hd_chantab_count(const hd_chantab_t *t)
{
    return t->map.n;
}
static inline const char *hd_chan_name(const hd_chan_t *c)
{
    return c->node.key;
}
static inline size_t hd_chan_name_len(const hd_chan_t *c)
{
    return c->node.key_len;
}

/* ---- per-worker interest (a broker's channel) ---- */

typedef struct hd_interest_s {
    uint32_t *per_worker; /* subscribers per worker: relaxed atomics */
    uint32_t n_workers;   /* workers with subscribers here (per_worker[k] > 0) */
    uint32_t n_slots;     /* workers of the node: per_worker's length */
} hd_interest_t;

/* No subscriber on any of n_workers workers (allocates the counters). */
void hd_interest_init(hd_interest_t *in, unsigned n_workers);
void hd_interest_dispose(hd_interest_t *in);
/* One more subscriber of worker. Returns 1 when it is the worker's first (0 -> 1), else 0. */
int hd_interest_add(hd_interest_t *in, unsigned worker);
/*
 * One subscriber of worker fewer. Returns what the worker has left, or -1 when it had none
 * (nothing changes).
 */
int64_t hd_interest_remove(hd_interest_t *in, unsigned worker);
/* A worker's subscribers. */
static inline uint32_t hd_interest_of(const hd_interest_t *in, unsigned worker)
{
    return __atomic_load_n(&in->per_worker[worker], __ATOMIC_RELAXED);
}
/* Subscribers on every worker. */
uint64_t hd_interest_total(const hd_interest_t *in);

/* Receives one reference to m for worker (the fan-out's caller decides what a delivery is). */
typedef void (*hd_deliver_cb)(void *arg, unsigned worker, hd_message_t *m);
/* Calls deliver for each worker with subscribers, in worker order, each with a new reference. */
void hd_interest_fan_out(const hd_interest_t *in, hd_message_t *m, hd_deliver_cb deliver,
                         void *arg);

#endif
