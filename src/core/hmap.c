/* SPDX-License-Identifier: MIT */
/* hmap.c: intrusive string-keyed hash map (FNV-1a, chained, doubling); see hmap.h. */
#include "herald/hmap.h"
#include "herald/common.h"

#include <string.h>

static uint64_t hash_key(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

void hd_hmap_init(hd_hmap_t *m, size_t n_buckets)
{
    size_t n = 8;
    while (n < n_buckets)
        n *= 2;
    m->buckets = hd_calloc(n, sizeof(*m->buckets));
    m->n_buckets = n;
    m->n = 0;
}

void hd_hmap_dispose(hd_hmap_t *m)
{
    free(m->buckets);
    m->buckets = NULL;
    m->n_buckets = m->n = 0;
}

hd_hnode_t *hd_hmap_find(const hd_hmap_t *m, const char *key, size_t len)
{
    uint64_t h = hash_key(key, len);
    for (hd_hnode_t *e = m->buckets[h & (m->n_buckets - 1)]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static void grow(hd_hmap_t *m)
{
    size_t n = m->n_buckets * 2;
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
    node->hash = hash_key(node->key, node->key_len);
    hd_hnode_t **slot = &m->buckets[node->hash & (m->n_buckets - 1)];
    node->next = *slot;
    *slot = node;
    if (++m->n > m->n_buckets)
        grow(m);
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
}

void hd_hmap_foreach(hd_hmap_t *m, void (*cb)(hd_hnode_t *node, void *arg), void *arg)
{
    for (size_t i = 0; i < m->n_buckets; i++) {
        hd_hnode_t *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            cb(e, arg);
        }
    }
}
