/* SPDX-License-Identifier: MIT */
/*
 * chantab.c: the channel tables of the hub, the embedded broker and the Redis bridge, and a
 * broker channel's interest per worker with the fan-out to the workers' mailboxes (chantab.h).
 * Calls only the hash map (core/hmap.c) and message references (message.c).
 */
#include "herald/chantab.h"

#include <string.h>

/* ---- the table ---- */

void hd_chantab_init(hd_chantab_t *t, size_t name_offset, size_t n_buckets)
{
    HD_ASSERT(name_offset >= sizeof(hd_chan_t));
    hd_hmap_init(&t->map, n_buckets);
    t->name_offset = name_offset;
}

void hd_chantab_dispose(hd_chantab_t *t)
{
    HD_ASSERT(t->map.n == 0);
    hd_hmap_dispose(&t->map);
}

hd_chan_t *hd_chantab_find(const hd_chantab_t *t, const char *name, size_t len)
{
    hd_hnode_t *n = hd_hmap_find(&t->map, name, len);
    return n ? hd_container_of(n, hd_chan_t, node) : NULL;
}

hd_chan_t *hd_chantab_find_hashed(const hd_chantab_t *t, const char *name, size_t len, uint64_t h)
{
    if (!h)
        return hd_chantab_find(t, name, len);
    hd_hnode_t *n = hd_hmap_find_hashed(&t->map, name, len, h);
    return n ? hd_container_of(n, hd_chan_t, node) : NULL;
}

hd_chan_t *hd_chantab_get(hd_chantab_t *t, const char *name, size_t len, int *made)
{
    hd_chan_t *c = hd_chantab_find(t, name, len);
    if (made)
        *made = c == NULL;
    if (c)
        return c;
    HD_ASSERT(len > 0 && len <= HD_CHANNEL_MAX);
    c = hd_calloc(1, t->name_offset + len + 1u);
    char *key = (char *)c + t->name_offset;
    memcpy(key, name, len);
    c->node.key = key;
    c->node.key_len = len;
    hd_hmap_insert(&t->map, &c->node);
    return c;
}

void hd_chantab_free(hd_chantab_t *t, hd_chan_t *c)
{
    hd_hmap_remove(&t->map, &c->node);
    free(c);
}

typedef struct visit_s {
    void (*cb)(hd_chan_t *c, void *arg);
    void *arg;
} visit_t;

static void visit(hd_hnode_t *n, void *arg)
{
    visit_t *v = arg;
    v->cb(hd_container_of(n, hd_chan_t, node), v->arg);
}

void hd_chantab_foreach(hd_chantab_t *t, void (*cb)(hd_chan_t *c, void *arg), void *arg)
{
    visit_t v = {cb, arg};
    hd_hmap_foreach(&t->map, visit, &v);
}

/* ---- per-worker interest ---- */

void hd_interest_init(hd_interest_t *in, unsigned n_workers)
{
    in->per_worker = hd_calloc(n_workers, sizeof(*in->per_worker));
    in->n_workers = 0;
    in->n_slots = n_workers;
}

void hd_interest_dispose(hd_interest_t *in)
{
    free(in->per_worker);
    in->per_worker = NULL;
    in->n_workers = in->n_slots = 0;
}

int hd_interest_add(hd_interest_t *in, unsigned worker)
{
    HD_ASSERT(worker < in->n_slots);
    if (__atomic_fetch_add(&in->per_worker[worker], 1, __ATOMIC_RELAXED) != 0)
        return 0;
    in->n_workers++;
    return 1;
}

int64_t hd_interest_remove(hd_interest_t *in, unsigned worker)
{
    HD_ASSERT(worker < in->n_slots);
    uint32_t *k = &in->per_worker[worker];
    if (__atomic_load_n(k, __ATOMIC_RELAXED) == 0)
        return -1;
    uint32_t left = __atomic_sub_fetch(k, 1, __ATOMIC_RELAXED);
    if (left == 0) {
        HD_ASSERT(in->n_workers > 0);
        in->n_workers--;
    }
    return left;
}

uint64_t hd_interest_total(const hd_interest_t *in)
{
    uint64_t n = 0;
    for (unsigned k = 0; k < in->n_slots; k++)
        n += hd_interest_of(in, k);
    return n;
}

void hd_interest_fan_out(const hd_interest_t *in, hd_message_t *m, hd_deliver_cb deliver, void *arg)
{
    /* A worker's count leaves 0 or reaches it only under the owner's serialization (the
     * embedded broker's lock, the bridge's thread), as n_workers does: once that many workers
     * are served, none is left. */
    uint32_t left = in->n_workers;
    for (unsigned k = 0; left && k < in->n_slots; k++) {
        if (hd_interest_of(in, k)) {
            deliver(arg, k, hd_message_ref(m));
            left--;
        }
    }
}
