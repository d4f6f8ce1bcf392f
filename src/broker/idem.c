/* SPDX-License-Identifier: MIT */
/*
 * idem.c: the embedded broker's idempotency table (idem.h): a hash map of "<channel>/<key>" to
 * the sequence it got, with a FIFO of entries for expiry and the byte bound.
 */
#include "idem.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
    hd_hnode_t node; /* key: name[] */
    hd_list_t link;  /* in t->fifo */
    uint64_t seq;
    uint64_t expires_ms;
    size_t size; /* what it counts in t->bytes */
    char name[]; /* "<channel>/<key>" (channel names have no '/') */
} entry_t;

void hd_idem_init(hd_idem_t *t, uint64_t window_ms, size_t max_bytes)
{
    memset(t, 0, sizeof(*t));
    hd_hmap_init(&t->map, 64);
    hd_list_init(&t->fifo);
    t->window_ms = window_ms;
    t->max_bytes = max_bytes;
}

static void drop(hd_idem_t *t, entry_t *e)
{
    hd_hmap_remove(&t->map, &e->node);
    hd_list_remove(&e->link);
    t->bytes -= e->size;
    free(e);
}

void hd_idem_dispose(hd_idem_t *t)
{
    while (!hd_list_empty(&t->fifo))
        drop(t, hd_container_of(t->fifo.next, entry_t, link));
    hd_hmap_dispose(&t->map);
}

/* "<channel>/<key>" into out (HD_CHANNEL_MAX + 1 + HD_IDEM_STORED_MAX + 1 bytes). */
static size_t name_of(char *out, const char *channel, size_t channel_len, const char *key)
{
    size_t key_len = strnlen(key, HD_IDEM_STORED_MAX);
    memcpy(out, channel, channel_len);
    out[channel_len] = '/';
    memcpy(out + channel_len + 1, key, key_len);
    out[channel_len + 1 + key_len] = '\0';
    return channel_len + 1 + key_len;
}

int hd_idem_find(hd_idem_t *t, const char *channel, size_t channel_len, const char *key,
                 uint64_t now_ms, uint64_t *seq)
{
    if (t->window_ms == 0)
        return 0;
    char name[HD_CHANNEL_MAX + HD_IDEM_STORED_MAX + 2];
    size_t len = name_of(name, channel, channel_len, key);
    hd_hnode_t *n = hd_hmap_find(&t->map, name, len);
    if (!n)
        return 0;
    entry_t *e = hd_container_of(n, entry_t, node);
    if (e->expires_ms <= now_ms)
        return 0;
    *seq = e->seq;
    return 1;
}

void hd_idem_put(hd_idem_t *t, const char *channel, size_t channel_len, const char *key,
                 uint64_t seq, uint64_t now_ms)
{
    if (t->window_ms == 0)
        return;
    char name[HD_CHANNEL_MAX + HD_IDEM_STORED_MAX + 2];
    size_t len = name_of(name, channel, channel_len, key);
    hd_hnode_t *old = hd_hmap_find(&t->map, name, len);
    if (old) /* an expired entry not collected yet */
        drop(t, hd_container_of(old, entry_t, node));
    entry_t *e = hd_malloc(sizeof(*e) + len + 1);
    memcpy(e->name, name, len + 1);
    e->node.key = e->name;
    e->node.key_len = len;
    e->seq = seq;
    e->expires_ms = now_ms + t->window_ms;
    /* the entry, its map slot and the malloc header, as max_memory counts channels */
    e->size = sizeof(*e) + len + 1 + 2 * sizeof(void *) + 16;
    hd_hmap_insert(&t->map, &e->node);
    hd_list_insert_tail(&t->fifo, &e->link);
    t->bytes += e->size;
    while (t->bytes > t->max_bytes && t->fifo.next != &e->link) {
        drop(t, hd_container_of(t->fifo.next, entry_t, link));
        t->n_forgotten++;
    }
}

void hd_idem_forget(hd_idem_t *t, const char *channel, size_t channel_len, const char *key)
{
    char name[HD_CHANNEL_MAX + HD_IDEM_STORED_MAX + 2];
    size_t len = name_of(name, channel, channel_len, key);
    hd_hnode_t *n = hd_hmap_find(&t->map, name, len);
    if (n)
        drop(t, hd_container_of(n, entry_t, node));
}

void hd_idem_expire(hd_idem_t *t, uint64_t now_ms)
{
    while (!hd_list_empty(&t->fifo)) {
        entry_t *e = hd_container_of(t->fifo.next, entry_t, link);
        if (e->expires_ms > now_ms)
            return;
        drop(t, e);
    }
}
