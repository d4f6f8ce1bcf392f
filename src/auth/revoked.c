/* SPDX-License-Identifier: MIT */
/*
 * revoked.c: the revoked set (auth.h, docs/auth.md "Revocation"): subs and token ids refused
 * until a time. One per process, written once per revocation (POST /admin/revoke on this node,
 * or a revocation announced by another node over Redis, or the set loaded from Redis when the
 * bridge connects) and read when a token is verified, never per delivered message.
 *
 * Why one shared table under a mutex rather than a copy per worker: it is read only where a
 * token is verified (a connect or an in-place refresh, which costs 20-250 us of signature work
 * anyway; an uncontended lock is tens of nanoseconds), never on the path of a delivery; one copy
 * keeps max_revocations entries once per node instead of once per worker; and the Redis bridge's
 * thread fills it without a message per worker. Ending the live connections a revocation
 * matches is message passing (net/kick.c: each worker walks its own connections).
 *
 *   entry: [ hd_hnode_t (key -> entry) | hd_heap_node_t (until) | kind byte + key, NUL ]
 *   map:   "s<sub>" / "j<jti>"  ->  entry          heap: entries by until_ms, soonest first
 *
 * Each call drops the expired entries at the top of the heap first, so the map holds live
 * revocations only and a full set makes room as soon as one expires.
 */
#include "internal.h"

#include "herald/common.h"
#include "herald/heap.h"
#include "herald/hmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct rev_entry_s {
    hd_hnode_t node;
    hd_heap_node_t exp; /* key: until_ms */
    size_t len;
    char key[]; /* kind ('s' or 'j'), the key, a NUL */
} rev_entry_t;

struct hd_revset_s {
    pthread_mutex_t lock;
    hd_hmap_t map;
    hd_heap_t heap;
    size_t n; /* atomic: read without the lock to skip an empty set */
};

hd_revset_t *hd_revset_new(void)
{
    hd_revset_t *s = hd_calloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    hd_hmap_init(&s->map, 16);
    hd_heap_init(&s->heap, 16);
    return s;
}

static void remove_entry(hd_revset_t *s, rev_entry_t *e)
{
    hd_hmap_remove(&s->map, &e->node);
    hd_heap_remove(&s->heap, &e->exp);
    __atomic_store_n(&s->n, s->n - 1, __ATOMIC_RELAXED);
    free(e);
}

void hd_revset_free(hd_revset_t *s)
{
    if (!s)
        return;
    hd_heap_node_t *top;
    while ((top = hd_heap_min(&s->heap)) != NULL)
        remove_entry(s, hd_container_of(top, rev_entry_t, exp));
    hd_heap_dispose(&s->heap);
    hd_hmap_dispose(&s->map);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Under the lock: drops what expired at now_ms. */
static void purge(hd_revset_t *s, int64_t now_ms)
{
    hd_heap_node_t *top;
    while ((top = hd_heap_min(&s->heap)) != NULL && (int64_t)top->key <= now_ms)
        remove_entry(s, hd_container_of(top, rev_entry_t, exp));
}

/* The map key of kind/key: its kind byte, then the key (out: HD_AUTH_MAX_SUB + 2 bytes). */
static size_t map_key(char *out, int kind, const char *key, size_t len)
{
    out[0] = kind == HD_REVOKE_SUB ? 's' : 'j';
    memcpy(out + 1, key, len);
    out[len + 1] = '\0';
    return len + 1;
}

static rev_entry_t *find(hd_revset_t *s, int kind, const char *key, size_t len)
{
    char k[HD_AUTH_MAX_SUB + 2];
    size_t n = map_key(k, kind, key, len);
    hd_hnode_t *node = hd_hmap_find(&s->map, k, n);
    return node ? hd_container_of(node, rev_entry_t, node) : NULL;
}

int hd_revset_add(hd_revset_t *s, int kind, const char *key, size_t len, int64_t until_ms,
                  int64_t now_ms, size_t max)
{
    if (len == 0 || len > HD_AUTH_MAX_SUB || until_ms <= now_ms ||
        (kind != HD_REVOKE_SUB && kind != HD_REVOKE_JTI))
        return -1;
    int rc;
    pthread_mutex_lock(&s->lock);
    purge(s, now_ms);
    rev_entry_t *e = find(s, kind, key, len);
    if (e) {
        if ((int64_t)e->exp.key < until_ms) {
            e->exp.key = (uint64_t)until_ms;
            hd_heap_update(&s->heap, &e->exp);
        }
        rc = 0;
    } else if (s->n >= max) {
        rc = -1;
    } else {
        e = hd_malloc(sizeof(*e) + len + 2);
        e->len = map_key(e->key, kind, key, len);
        e->node.key = e->key;
        e->node.key_len = e->len;
        e->exp.idx = 0;
        e->exp.key = (uint64_t)until_ms;
        hd_hmap_insert(&s->map, &e->node);
        hd_heap_push(&s->heap, &e->exp);
        __atomic_store_n(&s->n, s->n + 1, __ATOMIC_RELAXED);
        rc = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int hd_revset_has(hd_revset_t *s, const char *sub, const char *jti, int64_t now_ms)
{
    if (!s || __atomic_load_n(&s->n, __ATOMIC_RELAXED) == 0 || (!sub && !jti))
        return 0;
    size_t sl = sub ? strlen(sub) : 0, jl = jti ? strlen(jti) : 0;
    int found = 0;
    pthread_mutex_lock(&s->lock);
    purge(s, now_ms);
    if (sl && sl <= HD_AUTH_MAX_SUB && find(s, HD_REVOKE_SUB, sub, sl))
        found = 1;
    else if (jl && jl <= HD_AUTH_MAX_SUB && find(s, HD_REVOKE_JTI, jti, jl))
        found = 1;
    pthread_mutex_unlock(&s->lock);
    return found;
}

size_t hd_revset_count(hd_revset_t *s, int64_t now_ms)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    purge(s, now_ms);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int64_t hd_revset_until(hd_revset_t *s, int kind, const char *key, size_t len, int64_t now_ms)
{
    if (!s || len == 0 || len > HD_AUTH_MAX_SUB)
        return 0;
    pthread_mutex_lock(&s->lock);
    purge(s, now_ms);
    rev_entry_t *e = find(s, kind, key, len);
    int64_t until = e ? (int64_t)e->exp.key : 0;
    pthread_mutex_unlock(&s->lock);
    return until;
}

/* ---- the process's set ---- */

static hd_revset_t *the_set;

void hd_auth_revocations_set(hd_revset_t *s)
{
    __atomic_store_n(&the_set, s, __ATOMIC_RELEASE);
}

hd_revset_t *hd_auth_revocations(void)
{
    return __atomic_load_n(&the_set, __ATOMIC_ACQUIRE);
}

int hd_auth_revoked(const char *sub, const char *jti)
{
    hd_revset_t *s = hd_auth_revocations();
    if (!s)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return hd_revset_has(s, sub, jti, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
