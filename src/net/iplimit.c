/* SPDX-License-Identifier: MIT */
/*
 * iplimit.c: the node's table of client addresses (iplimit.h): open connections and a token
 * bucket per address, in shards under their own mutex, bounded by evicting idle entries. Called
 * by listener.c (admit) and conn.c (release), on any worker; it calls only core.
 */
#include "iplimit.h"

#include "herald/common.h"
#include "herald/hmap.h"

#include <string.h>
#include <uv.h>

#define SHARDS         16
#define IDLE_PER_SHARD (HD_IPLIMIT_MAX_IDLE / SHARDS)
#define KEY_MAX        9 /* family, then 4 (IPv4) or 8 (an IPv6 /64) bytes */
#define SWEEP_MAX      4 /* idle entries looked at per call for a refilled bucket */

typedef struct entry_s {
    hd_hnode_t node;     /* node.key points at key */
    hd_list_t idle_link; /* on the shard's idle list while conns == 0 */
    uint64_t tokens_ms;  /* when tokens was last brought up to date */
    double tokens;
    uint32_t conns;
    uint8_t key_len;
    char key[KEY_MAX];
} entry_t;

typedef struct shard_s {
    uv_mutex_t lock;
    hd_hmap_t map;
    hd_list_t idle; /* entries without connections, oldest first */
    size_t n_idle;
} shard_t;

struct hd_iplimit_s {
    shard_t shards[SHARDS];
    size_t n_entries; /* atomic */
};

static size_t key_of(const hd_ip_t *ip, char *key)
{
    key[0] = (char)ip->family;
    if (ip->family == HD_IP_V4) {
        memcpy(key + 1, ip->bytes, 4);
        return 5;
    }
    memcpy(key + 1, ip->bytes, 8);
    return 9;
}

hd_iplimit_t *hd_iplimit_new(void)
{
    hd_iplimit_t *t = hd_calloc(1, sizeof(*t));
    for (int i = 0; i < SHARDS; i++) {
        HD_ASSERT(uv_mutex_init(&t->shards[i].lock) == 0);
        hd_hmap_init(&t->shards[i].map, 8);
        hd_list_init(&t->shards[i].idle);
    }
    return t;
}

static void free_node(hd_hnode_t *node, void *arg)
{
    shard_t *sh = arg;
    entry_t *e = hd_container_of(node, entry_t, node);
    hd_hmap_remove(&sh->map, node);
    free(e);
}

void hd_iplimit_free(hd_iplimit_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        hd_hmap_foreach(&t->shards[i].map, free_node, &t->shards[i]);
        hd_hmap_dispose(&t->shards[i].map);
        uv_mutex_destroy(&t->shards[i].lock);
    }
    free(t);
}

size_t hd_iplimit_entries(const hd_iplimit_t *t)
{
    return __atomic_load_n(&t->n_entries, __ATOMIC_RELAXED);
}

/* Brings e's bucket up to now (loop times of different workers may be a little apart). */
static void refill(entry_t *e, uint64_t now_ms, uint32_t rate, uint32_t burst)
{
    if (now_ms > e->tokens_ms) {
        e->tokens += (double)(now_ms - e->tokens_ms) * rate / 1000.0;
        e->tokens_ms = now_ms;
    }
    if (e->tokens > burst)
        e->tokens = burst;
}

static void drop(hd_iplimit_t *t, shard_t *sh, entry_t *e)
{
    if (hd_list_linked(&e->idle_link)) {
        hd_list_remove(&e->idle_link);
        sh->n_idle--;
    }
    hd_hmap_remove(&sh->map, &e->node);
    free(e);
    __atomic_sub_fetch(&t->n_entries, 1, __ATOMIC_RELAXED);
}

/* An entry left without connections: kept only while its bucket still matters. */
static void set_idle(hd_iplimit_t *t, shard_t *sh, entry_t *e, uint64_t now_ms, uint32_t rate,
                     uint32_t burst)
{
    if (rate == 0) {
        drop(t, sh, e);
        return;
    }
    refill(e, now_ms, rate, burst);
    if (e->tokens >= burst) {
        drop(t, sh, e);
        return;
    }
    hd_list_insert_tail(&sh->idle, &e->idle_link);
    if (++sh->n_idle > IDLE_PER_SHARD)
        drop(t, sh, hd_container_of(sh->idle.next, entry_t, idle_link));
}

/* Drops the oldest idle entries whose buckets have refilled: they hold nothing any more. */
static void sweep(hd_iplimit_t *t, shard_t *sh, uint64_t now_ms, uint32_t rate, uint32_t burst)
{
    for (int i = 0; i < SWEEP_MAX && !hd_list_empty(&sh->idle); i++) {
        entry_t *e = hd_container_of(sh->idle.next, entry_t, idle_link);
        if (rate != 0) {
            refill(e, now_ms, rate, burst);
            if (e->tokens < burst)
                break;
        }
        drop(t, sh, e);
    }
}

static shard_t *shard_of(hd_iplimit_t *t, const char *key, size_t len)
{
    return &t->shards[hd_hash(key, len) % SHARDS];
}

int hd_iplimit_admit(hd_iplimit_t *t, const hd_ip_t *ip, uint64_t now_ms, uint32_t max_conns,
                     uint32_t rate, uint32_t burst, uint64_t *retry_ms)
{
    char key[KEY_MAX];
    size_t len = key_of(ip, key);
    shard_t *sh = shard_of(t, key, len);
    int rc = 0;

    *retry_ms = 0;
    uv_mutex_lock(&sh->lock);
    sweep(t, sh, now_ms, rate, burst);
    hd_hnode_t *node = hd_hmap_find(&sh->map, key, len);
    entry_t *e;
    if (node) {
        e = hd_container_of(node, entry_t, node);
        if (hd_list_linked(&e->idle_link)) {
            hd_list_remove(&e->idle_link);
            sh->n_idle--;
        }
        refill(e, now_ms, rate, burst);
    } else {
        e = hd_calloc(1, sizeof(*e));
        memcpy(e->key, key, len);
        e->key_len = (uint8_t)len;
        e->node.key = e->key;
        e->node.key_len = len;
        e->tokens = burst;
        e->tokens_ms = now_ms;
        hd_list_init(&e->idle_link);
        hd_hmap_insert(&sh->map, &e->node);
        __atomic_add_fetch(&t->n_entries, 1, __ATOMIC_RELAXED);
    }
    if (max_conns != 0 && e->conns >= max_conns) {
        rc = HD_EIPCONNS;
    } else if (rate != 0 && e->tokens < 1) {
        rc = HD_EIPRATE;
        *retry_ms = (uint64_t)((1 - e->tokens) * 1000.0 / rate) + 1;
    } else {
        if (rate != 0)
            e->tokens -= 1;
        e->conns++;
    }
    if (e->conns == 0)
        set_idle(t, sh, e, now_ms, rate, burst);
    uv_mutex_unlock(&sh->lock);
    return rc;
}

void hd_iplimit_release(hd_iplimit_t *t, const hd_ip_t *ip, uint64_t now_ms, uint32_t rate,
                        uint32_t burst)
{
    char key[KEY_MAX];
    size_t len = key_of(ip, key);
    shard_t *sh = shard_of(t, key, len);

    uv_mutex_lock(&sh->lock);
    hd_hnode_t *node = hd_hmap_find(&sh->map, key, len);
    HD_ASSERT(node != NULL);
    entry_t *e = hd_container_of(node, entry_t, node);
    HD_ASSERT(e->conns > 0);
    if (--e->conns == 0)
        set_idle(t, sh, e, now_ms, rate, burst);
    sweep(t, sh, now_ms, rate, burst);
    uv_mutex_unlock(&sh->lock);
}
