/* SPDX-License-Identifier: MIT */
/*
 * tickets.c: the embedded broker's ticket store (tickets.h): a keyed hash map of ticket keys
 * to their claims, with a min-heap by expiry and count and byte bounds.
 */
#include "tickets.h"

#include "herald/common.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
    hd_hnode_t node;       /* key: key[] */
    hd_heap_node_t expiry; /* key: expires_ms */
    size_t size;           /* what it counts in t->bytes */
    size_t len;
    char key[HD_TICKET_KEY_LEN + 1];
    char data[]; /* the claims and a NUL */
} entry_t;

void hd_tstore_init(hd_tstore_t *t, size_t max_bytes)
{
    memset(t, 0, sizeof(*t));
    hd_hmap_init(&t->map, 64);
    hd_heap_init(&t->heap, 64);
    t->max_bytes = max_bytes;
}

static void drop(hd_tstore_t *t, entry_t *e)
{
    hd_hmap_remove(&t->map, &e->node);
    hd_heap_remove(&t->heap, &e->expiry);
    t->bytes -= e->size;
    t->n--;
    free(e);
}

void hd_tstore_dispose(hd_tstore_t *t)
{
    hd_heap_node_t *n;
    while ((n = hd_heap_min(&t->heap)) != NULL)
        drop(t, hd_container_of(n, entry_t, expiry));
    hd_heap_dispose(&t->heap);
    hd_hmap_dispose(&t->map);
}

void hd_tstore_expire(hd_tstore_t *t, uint64_t now_ms)
{
    hd_heap_node_t *n;
    while ((n = hd_heap_min(&t->heap)) != NULL && n->key <= now_ms)
        drop(t, hd_container_of(n, entry_t, expiry));
}

int hd_tstore_put(hd_tstore_t *t, const char *key, const char *data, size_t len,
                  uint64_t expires_ms, size_t limit, uint64_t now_ms)
{
    hd_tstore_expire(t, now_ms);
    /* the entry with the allocator's header, its map slot and its heap slot */
    size_t size = sizeof(entry_t) + len + 1 + 16 + 2 * sizeof(void *) + sizeof(void *);
    if (t->n >= limit || t->bytes + size > t->max_bytes)
        return HD_ETICKETS;
    if (hd_hmap_find(&t->map, key, HD_TICKET_KEY_LEN))
        return HD_EBADREQ;
    entry_t *e = hd_malloc(sizeof(*e) + len + 1);
    memcpy(e->key, key, HD_TICKET_KEY_LEN);
    e->key[HD_TICKET_KEY_LEN] = '\0';
    memcpy(e->data, data, len);
    e->data[len] = '\0';
    e->len = len;
    e->size = size;
    e->node.key = e->key;
    e->node.key_len = HD_TICKET_KEY_LEN;
    e->expiry.key = expires_ms;
    e->expiry.idx = 0;
    hd_hmap_insert(&t->map, &e->node);
    hd_heap_push(&t->heap, &e->expiry);
    t->n++;
    t->bytes += size;
    return 0;
}

int hd_tstore_take(hd_tstore_t *t, const char *key, uint64_t now_ms, char **data, size_t *len)
{
    hd_hnode_t *n = hd_hmap_find(&t->map, key, HD_TICKET_KEY_LEN);
    if (!n)
        return HD_ENOTFOUND;
    entry_t *e = hd_container_of(n, entry_t, node);
    if (e->expiry.key <= now_ms) {
        drop(t, e);
        return HD_ENOTFOUND;
    }
    *data = hd_strndup(e->data, e->len);
    *len = e->len;
    drop(t, e);
    return 0;
}
