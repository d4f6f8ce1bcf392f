/* SPDX-License-Identifier: MIT */
/*
 * hmap.c: intrusive string-keyed hash map (chained, doubling, halving as it empties) and the keyed
 * hash every table of the process uses; see hmap.h.
 *
 * Keys come from clients (channel names), so the hash is keyed: SipHash-2-4 with a key drawn
 * from the kernel once per process. Without the key a client can compute names that land in one
 * bucket and make every lookup on a worker or the broker walk one long chain.
 */
#include "herald/hmap.h"
#include "herald/common.h"

#include <endian.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/random.h>
#include <uv.h>

/* ---- SipHash-2-4 (Aumasson and Bernstein), written from the paper ---- */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL64(v1, 13);                                                                       \
        v1 ^= v0;                                                                                  \
        v0 = ROTL64(v0, 32);                                                                       \
        v2 += v3;                                                                                  \
        v3 = ROTL64(v3, 16);                                                                       \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL64(v3, 21);                                                                       \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL64(v1, 17);                                                                       \
        v1 ^= v2;                                                                                  \
        v2 = ROTL64(v2, 32);                                                                       \
    } while (0)

/* One load (memcpy: p need not be aligned), not eight byte loads and shifts, which GCC 12 did
 * not merge: a channel name's hash took about 210 instructions with them. */
static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

uint64_t hd_siphash(const void *data, size_t len, const uint8_t key[HD_HASH_KEY_BYTES])
{
    const uint8_t *in = data;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0;
    uint64_t v3 = 0x7465646279746573ull ^ k1;
    const uint8_t *end = in + (len & ~(size_t)7);
    for (; in != end; in += 8) {
        uint64_t m = load_le64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    /* the last 0..7 bytes, with the length's low byte on top */
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint8_t process_key[HD_HASH_KEY_BYTES];
static uv_once_t process_key_once = UV_ONCE_INIT;

static void draw_process_key(void)
{
    size_t got = 0;
    while (got < sizeof(process_key)) {
        ssize_t n = getrandom(process_key + got, sizeof(process_key) - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    /* getrandom is missing only on kernels before 3.17; OpenSSL has its own sources then. */
    if (got < sizeof(process_key))
        HD_ASSERT(RAND_bytes(process_key, sizeof(process_key)) == 1);
}

const uint8_t *hd_hash_key(void)
{
    uv_once(&process_key_once, draw_process_key);
    return process_key;
}

uint64_t hd_hash(const void *data, size_t len)
{
    return hd_siphash(data, len, hd_hash_key());
}

/* ---- the map ---- */

void hd_hmap_init(hd_hmap_t *m, size_t n_buckets)
{
    size_t n = 8;
    while (n < n_buckets)
        n *= 2;
    m->buckets = hd_calloc(n, sizeof(*m->buckets));
    m->n_buckets = m->min_buckets = n;
    m->n = 0;
    m->is_iterating = 0;
    m->key = hd_hash_key();
}

void hd_hmap_dispose(hd_hmap_t *m)
{
    free(m->buckets);
    m->buckets = NULL;
    m->n_buckets = m->n = 0;
}

hd_hnode_t *hd_hmap_find(const hd_hmap_t *m, const char *key, size_t len)
{
    return hd_hmap_find_hashed(m, key, len, hd_siphash(key, len, m->key));
}

hd_hnode_t *hd_hmap_find_hashed(const hd_hmap_t *m, const char *key, size_t len, uint64_t h)
{
    for (hd_hnode_t *e = m->buckets[h & (m->n_buckets - 1)]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static void resize(hd_hmap_t *m, size_t n)
{
    hd_hnode_t **b = hd_calloc(n, sizeof(*b));
    for (size_t i = 0; i < m->n_buckets; i++) {
        hd_hnode_t *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

void hd_hmap_insert(hd_hmap_t *m, hd_hnode_t *node)
{
    hd_hmap_insert_hashed(m, node, hd_siphash(node->key, node->key_len, m->key));
}

void hd_hmap_insert_hashed(hd_hmap_t *m, hd_hnode_t *node, uint64_t h)
{
    node->hash = h;
    hd_hnode_t **slot = &m->buckets[node->hash & (m->n_buckets - 1)];
    node->next = *slot;
    *slot = node;
    if (++m->n > m->n_buckets)
        resize(m, m->n_buckets * 2);
}

void hd_hmap_remove(hd_hmap_t *m, hd_hnode_t *node)
{
    hd_hnode_t **pp = &m->buckets[node->hash & (m->n_buckets - 1)];
    while (*pp != node) {
        HD_ASSERT(*pp != NULL);
        pp = &(*pp)->next;
    }
    *pp = node->next;
    m->n--;
    /* A table that held a flood gives its buckets back as it empties (not while a foreach
     * walks them): below one entry per 4 buckets, half of them go. */
    if (!m->is_iterating && m->n_buckets > m->min_buckets && m->n * 4 < m->n_buckets)
        resize(m, m->n_buckets / 2);
}

void hd_hmap_foreach(hd_hmap_t *m, void (*cb)(hd_hnode_t *node, void *arg), void *arg)
{
    unsigned was_iterating = m->is_iterating;
    m->is_iterating = 1;
    for (size_t i = 0; i < m->n_buckets; i++) {
        hd_hnode_t *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            cb(e, arg);
        }
    }
    m->is_iterating = was_iterating;
}
