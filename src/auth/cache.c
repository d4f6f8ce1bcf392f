/* SPDX-License-Identifier: MIT */
/*
 * cache.c: hd_auth_cache_t (auth.h, docs/auth.md "The verified-token cache"): the tokens a
 * worker verified, so that a client coming back with the token it holds (a network flap, a
 * node restart: everyone reconnects at once) skips the signature, the JSON and the identity's
 * allocations. One cache per worker, touched by that worker's thread only: no lock.
 *
 *   map:  SHA-256(token) -> entry           lru: entries, most recently used first
 *   entry: [ hd_hnode_t | hd_list_t | digest | identity ref | exp | not_before | bytes ]
 *
 * What a hit may never do is let through what a fresh verification would refuse. A verification
 * depends on the token (the key is its digest), the policy (keys, pinned algs, iss, aud, skew:
 * the entries belong to one policy, hd_auth_t's generation, and are all dropped when another
 * comes: a reload, a JWKS reread on SIGHUP), the clock (exp, nbf and iat are kept and checked
 * against now at every hit, with the policy's skew) and the revoked set, which is not asked
 * here: the caller asks it after every answer, hit or not (hd_tp_verify_token), as it always
 * did. Refusals are never cached: a bad token costs what it always cost.
 *
 * Why the digest alone and not the token: the cache then holds no bearer credential (a heap
 * disclosure or a core dump would otherwise hand out up to max entries of live tokens), and
 * each entry is the same few bytes whatever the token's length (up to 8 KiB). A false hit
 * would need a second token with the SHA-256 of one the cache holds: a second preimage
 * (2^256 work), not even a collision, as the attacker knows neither the token nor its digest.
 *
 * The cache also keeps the worker's HMAC context (hd_auth_scratch_t, verify.c): a copy of the
 * key's made once and set back to its start for each token it verifies, dropped with the
 * entries when the policy changes (its key belongs to the old policy).
 *
 * Bounded twice: at most max_entries entries and max_bytes bytes (the entry and the identity it
 * keeps alive, sub, jti, info and grants included), both from the conf at every call (a reload
 * that lowers them evicts at the next). The least recently used entry goes first; an expired
 * entry goes when it is met (a hit on it, or at the tail).
 */
#include "internal.h"

#include "herald/common.h"
#include "herald/hmap.h"

#include <openssl/evp.h>
#include <string.h>

#define DIGEST_LEN 32 /* SHA-256 */

typedef struct entry_s {
    hd_hnode_t node; /* key: digest */
    hd_list_t lru;   /* in cache->lru, most recently used at the head */
    hd_identity_t *id;
    int64_t exp;        /* the token's exp (0: none) */
    int64_t not_before; /* the later of its nbf and iat (0: none) */
    size_t bytes;       /* charged to the cache: this entry and the identity */
    unsigned char digest[DIGEST_LEN];
} entry_t;

struct hd_auth_cache_s {
    hd_hmap_t map;
    hd_list_t lru;
    uint64_t gen; /* the policy (hd_auth_t's generation) the entries were verified under */
    size_t n, bytes;
    EVP_MD_CTX *md; /* SHA-256, fetched once */
    EVP_MD *sha256;
    hd_auth_scratch_t scratch; /* the HMAC context reused by this worker's verifications */
};

hd_auth_cache_t *hd_auth_cache_new(void)
{
    hd_auth_cache_t *c = hd_calloc(1, sizeof(*c));
    hd_hmap_init(&c->map, 64);
    hd_list_init(&c->lru);
    /* Without them (an OpenSSL that cannot hash), every call verifies as if uncached. */
    c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    c->md = EVP_MD_CTX_new();
    return c;
}

static void drop(hd_auth_cache_t *c, entry_t *e)
{
    hd_hmap_remove(&c->map, &e->node);
    hd_list_remove(&e->lru);
    c->n--;
    c->bytes -= e->bytes;
    hd_identity_unref(e->id);
    free(e);
}

void hd_auth_cache_flush(hd_auth_cache_t *c)
{
    while (!hd_list_empty(&c->lru))
        drop(c, hd_container_of(c->lru.next, entry_t, lru));
}

void hd_auth_cache_free(hd_auth_cache_t *c)
{
    if (c == NULL)
        return;
    hd_auth_cache_flush(c);
    hd_auth_scratch_dispose(&c->scratch);
    hd_hmap_dispose(&c->map);
    EVP_MD_CTX_free(c->md);
    EVP_MD_free(c->sha256);
    free(c);
}

size_t hd_auth_cache_count(const hd_auth_cache_t *c)
{
    return c != NULL ? c->n : 0;
}

size_t hd_auth_cache_bytes(const hd_auth_cache_t *c)
{
    return c != NULL ? c->bytes : 0;
}

/* Links e first in the LRU order (the most recently used). */
static void push_head(hd_auth_cache_t *c, entry_t *e)
{
    e->lru.next = c->lru.next;
    e->lru.prev = &c->lru;
    c->lru.next->prev = &e->lru;
    c->lru.next = &e->lru;
}

/* Evicts from the tail until one more entry of `more` bytes fits (more = 0: until within). */
static void make_room(hd_auth_cache_t *c, size_t max_entries, size_t max_bytes, size_t more)
{
    while (!hd_list_empty(&c->lru) &&
           (c->n + (more > 0) > max_entries || c->bytes + more > max_bytes))
        drop(c, hd_container_of(c->lru.prev, entry_t, lru));
}

/* Drops expired entries at the tail (the least recently used), a few per call. */
static void sweep_tail(hd_auth_cache_t *c, const hd_auth_t *a, int64_t now)
{
    for (int i = 0; i < 4 && !hd_list_empty(&c->lru); i++) {
        entry_t *e = hd_container_of(c->lru.prev, entry_t, lru);
        if (e->exp == 0 || now < e->exp + a->skew_s)
            return;
        drop(c, e);
    }
}

hd_auth_verify_t hd_auth_cache_verify(hd_auth_cache_t *c, const hd_auth_t *a, const char *token,
                                      size_t len, int64_t now, size_t max_entries, size_t max_bytes,
                                      hd_identity_t **out, int *hit, char *why, size_t whylen)
{
    unsigned char digest[DIGEST_LEN];
    unsigned int dlen = 0;
    hd_auth_times_t t;
    hd_auth_verify_t v;
    hd_hnode_t *node;
    entry_t *e;

    *hit = 0;
    if (c != NULL && max_entries == 0)
        hd_auth_cache_flush(c); /* turned off by a reload: give the memory back */
    if (c == NULL || c->md == NULL || c->sha256 == NULL || a == NULL || a->keys.n == 0 ||
        max_entries == 0 || len == 0 || len > HD_AUTH_MAX_TOKEN)
        return hd_auth_verify(a, token, len, now, out, why, whylen);
    if (c->gen != a->gen) { /* another policy: nothing verified under the old one stands */
        hd_auth_cache_flush(c);
        hd_auth_scratch_dispose(&c->scratch); /* its key was the old policy's */
        c->gen = a->gen;
    }
    make_room(c, max_entries, max_bytes, 0);
    if (EVP_DigestInit_ex2(c->md, c->sha256, NULL) != 1 ||
        EVP_DigestUpdate(c->md, token, len) != 1 || EVP_DigestFinal_ex(c->md, digest, &dlen) != 1 ||
        dlen != DIGEST_LEN)
        return hd_auth_verify(a, token, len, now, out, why, whylen);
    if ((node = hd_hmap_find(&c->map, (const char *)digest, DIGEST_LEN)) != NULL) {
        e = hd_container_of(node, entry_t, node);
        /* The clock moved on: what check_claims (verify.c) refuses, refused the same way. */
        if (e->exp != 0 && now >= e->exp + a->skew_s) {
            drop(c, e);
            *out = NULL;
            hd_auth_fail(why, whylen, "token expired");
            return HD_AUTH_EXPIRED;
        }
        if (e->not_before != 0 && now + a->skew_s < e->not_before) {
            /* Only a clock set back makes a verified token not valid yet again. */
            *out = NULL;
            hd_auth_fail(why, whylen, "token not valid yet (nbf or iat)");
            return HD_AUTH_INVALID;
        }
        hd_list_remove(&e->lru);
        push_head(c, e);
        *out = hd_identity_ref(e->id);
        *hit = 1;
        return HD_AUTH_VERIFIED;
    }
    v = hd_auth_verify_times(a, token, len, now, &c->scratch, out, &t, why, whylen);
    if (v != HD_AUTH_VERIFIED)
        return v;
    sweep_tail(c, a, now);
    size_t bytes = sizeof(entry_t) + hd_identity_footprint(*out);
    if (bytes > max_bytes / 8)
        return v; /* one identity would take an eighth of the cache: not kept */
    make_room(c, max_entries, max_bytes, bytes);
    e = hd_malloc(sizeof(*e));
    memcpy(e->digest, digest, DIGEST_LEN);
    e->node.key = (const char *)e->digest;
    e->node.key_len = DIGEST_LEN;
    e->id = hd_identity_ref(*out);
    e->exp = t.exp;
    e->not_before = t.not_before;
    e->bytes = bytes;
    hd_hmap_insert(&c->map, &e->node);
    push_head(c, e);
    c->n++;
    c->bytes += bytes;
    return v;
}
