/* SPDX-License-Identifier: MIT */
/*
 * hmap.h: an intrusive hash map keyed by short byte strings (channel names). The entry embeds an
 * hd_hnode_t whose key points into the entry itself; the map never allocates entries, only its
 * bucket array, which doubles when the map holds more entries than buckets and halves (down to
 * its initial size) when it holds fewer than one per 4 buckets, so a table that held a flood of
 * names gives the memory back.
 *
 * Keys come from clients, so buckets are chosen by a keyed hash (SipHash-2-4 under a random key
 * drawn once per process): nobody outside the process can pick names that share a bucket.
 */
#ifndef HERALD_HMAP_H
#define HERALD_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_hnode_s {
    struct hd_hnode_s *next;
    uint64_t hash;
    const char *key;
    size_t key_len;
} hd_hnode_t;

typedef struct hd_hmap_s {
    hd_hnode_t **buckets;
    size_t n_buckets;   /* a power of two */
    size_t min_buckets; /* the initial size: it never shrinks below */
    size_t n;
    unsigned is_iterating; /* in hd_hmap_foreach: removals do not shrink the array */
    const uint8_t *key;    /* the process's hash key (hd_hash_key) */
} hd_hmap_t;

#define HD_HASH_KEY_BYTES 16

/* SipHash-2-4 of data[0..len) under a 128-bit key (little-endian, as in the paper). */
uint64_t hd_siphash(const void *data, size_t len, const uint8_t key[HD_HASH_KEY_BYTES]);
/*
 * The process's hash key: HD_HASH_KEY_BYTES drawn from getrandom (OpenSSL's RAND_bytes where
 * that fails) on first use, from any thread; the same for the life of the process.
 */
const uint8_t *hd_hash_key(void);
/* SipHash-2-4 of data under the process's key: for any table indexed by client-chosen bytes. */
uint64_t hd_hash(const void *data, size_t len);

/* An empty map with at least n_buckets buckets (a power of two, 8 or more). */
void hd_hmap_init(hd_hmap_t *m, size_t n_buckets);
/* Frees the bucket array; the entries belong to the caller. */
void hd_hmap_dispose(hd_hmap_t *m);
hd_hnode_t *hd_hmap_find(const hd_hmap_t *m, const char *key, size_t len);
/* The same with the key's hash known (h: hd_hash(key, len), every map hashes under the process's
 * key): one name's hash carried from table to table instead of computed at each. */
hd_hnode_t *hd_hmap_find_hashed(const hd_hmap_t *m, const char *key, size_t len, uint64_t h);
/* Inserts node (key and key_len set by the caller; the key must not be in the map). */
void hd_hmap_insert(hd_hmap_t *m, hd_hnode_t *node);
/* The same with the key's hash known (h: hd_hash of node's key, as for hd_hmap_find_hashed). */
void hd_hmap_insert_hashed(hd_hmap_t *m, hd_hnode_t *node, uint64_t h);
void hd_hmap_remove(hd_hmap_t *m, hd_hnode_t *node);
/* Visits every node; cb may remove the node it is given (and only that one). */
void hd_hmap_foreach(hd_hmap_t *m, void (*cb)(hd_hnode_t *node, void *arg), void *arg);

#endif
