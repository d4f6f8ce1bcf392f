/* SPDX-License-Identifier: MIT */
/*
 * authorize.c: the authorize hook on the hooks loop (hooks.h "The authorize hook"). A question
 * (the JSON body a transport built) is answered, in this order:
 *
 *   1. from the cache, when the same question was answered allow or deny within cache= (an
 *      error is never cached); the cache holds at most cache_size= answers, oldest dropped first;
 *   2. by a call already on its way with the same question (a flood of identical connects while
 *      the backend is slow makes one call, not one each);
 *   3. by a new call: POST to the backend, signed as a webhook (Standard Webhooks headers), on
 *      the hook's keep-alive pool, at most concurrency= in flight; the others wait in FIFO order,
 *      and one that waited timeout= without a slot is answered as timed out.
 *
 * Bounds: calls and their waiters are bounded by what the workers may have pending
 * (max_pending= per worker, counted on the worker until its answer comes back), the cache by
 * cache_size=. Everything here runs on the hooks thread only.
 */
#include "herald/hmap.h"
#include "herald/log.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

struct hk_authz_s {
    uv_loop_t *loop;
    const hd_hook_def_t *def;
    hk_client_conf_t cc;
    hk_pool_t *pool;
    hk_signer_t *signer;
    hd_hooks_stats_t *st;
    void (*answer)(hd_hooks_authz_t *a);
    hd_hmap_t calls; /* calls by question: in flight or waiting for a slot */
    hd_list_t queue; /* calls waiting for a slot, oldest first */
    uint32_t in_flight;
    hd_hmap_t cache; /* answers by question */
    hd_list_t lru;   /* cache entries, oldest first (all live cache_ms from insertion) */
    size_t n_cache;
    uv_timer_t timer;   /* the oldest waiting call's deadline */
    uint64_t warned_ms; /* a failing backend is logged at most once a second */
};

typedef struct call_s {
    hd_hnode_t node; /* key: body->data */
    hd_list_t link;  /* z->queue while waiting for a slot */
    hk_authz_t *z;
    hd_list_t waiters; /* hd_hooks_authz_t.link_ */
    hk_request_t req;
    hd_buf_t *body;
    uint64_t asked_ms;
} call_t;

typedef struct centry_s {
    hd_hnode_t node; /* key: key[] */
    hd_list_t link;  /* z->lru */
    uint64_t expires_ms;
    hk_verdict_t v; /* v.id: one reference */
    char key[];
} centry_t;

static void pump(hk_authz_t *z);

/* ---- answering ---- */

static void reply(hk_authz_t *z, hd_hooks_authz_t *a, const hk_verdict_t *v, int cached)
{
    a->verdict = v->kind;
    a->status = v->status;
    memcpy(a->reason, v->reason, sizeof(a->reason));
    a->id = v->id ? hd_identity_ref(v->id) : NULL;
    a->is_cached = cached ? 1 : 0;
    z->answer(a);
}

/* Answers every waiter of c with v and frees c (out of the map and queue). */
static void call_end(hk_authz_t *z, call_t *c, const hk_verdict_t *v)
{
    hd_hmap_remove(&z->calls, &c->node);
    if (hd_list_linked(&c->link))
        hd_list_remove(&c->link);
    while (!hd_list_empty(&c->waiters)) {
        hd_hooks_authz_t *a = hd_container_of(c->waiters.next, hd_hooks_authz_t, link_);
        hd_list_remove(&a->link_);
        reply(z, a, v, 0);
    }
    hd_buf_unref(c->body);
    free(c);
}

/* ---- the cache ---- */

static void cache_drop(hk_authz_t *z, centry_t *e)
{
    hd_hmap_remove(&z->cache, &e->node);
    hd_list_remove(&e->link);
    hd_identity_unref(e->v.id);
    free(e);
    z->n_cache--;
}

static void cache_put(hk_authz_t *z, const char *key, size_t len, const hk_verdict_t *v)
{
    uint64_t now = uv_now(z->loop);
    /* everything lives cache_ms: the oldest are the expired ones */
    while (!hd_list_empty(&z->lru)) {
        centry_t *old = hd_container_of(z->lru.next, centry_t, link);
        if (old->expires_ms > now && z->n_cache < z->def->cache_size)
            break;
        cache_drop(z, old);
    }
    hd_hnode_t *n = hd_hmap_find(&z->cache, key, len);
    if (n)
        cache_drop(z, hd_container_of(n, centry_t, node));
    centry_t *e = hd_malloc(sizeof(*e) + len + 1);
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->node.key = e->key;
    e->node.key_len = len;
    e->expires_ms = now + z->def->cache_ms;
    e->v = *v;
    e->v.id = v->id ? hd_identity_ref(v->id) : NULL;
    hd_hmap_insert(&z->cache, &e->node);
    hd_list_insert_tail(&z->lru, &e->link);
    z->n_cache++;
    HK_SET(z->st->authz_cache_size, (uint64_t)z->n_cache);
}

/* The cached answer to key, or NULL (an expired one is dropped). */
static centry_t *cache_get(hk_authz_t *z, const char *key, size_t len)
{
    hd_hnode_t *n = hd_hmap_find(&z->cache, key, len);
    if (!n)
        return NULL;
    centry_t *e = hd_container_of(n, centry_t, node);
    if (e->expires_ms <= uv_now(z->loop)) {
        cache_drop(z, e);
        HK_SET(z->st->authz_cache_size, (uint64_t)z->n_cache);
        return NULL;
    }
    return e;
}

/* ---- calls ---- */

static void on_answer(hk_request_t *req, int status, int fail, const char *why)
{
    call_t *c = req->data;
    hk_authz_t *z = c->z;
    hk_verdict_t v;
    (void)fail;
    z->in_flight--;
    hd_buf_unref(req->head);
    req->head = NULL;
    if (status > 0) {
        hk_authz_answer(status, req->answer, req->answer_len, &v);
    } else {
        memset(&v, 0, sizeof(v));
        v.kind = HD_HOOKS_ERROR;
        snprintf(v.reason, sizeof(v.reason), "%s", why ? why : "no answer");
    }
    free(req->answer);
    req->answer = NULL;
    if (v.kind == HD_HOOKS_ALLOW)
        HK_ADD(z->st->authz_allowed, 1);
    else if (v.kind == HD_HOOKS_DENY)
        HK_ADD(z->st->authz_denied, 1);
    else
        HK_ADD(z->st->authz_errors, 1);
    if (v.kind == HD_HOOKS_ERROR && uv_now(z->loop) >= z->warned_ms + 1000) {
        z->warned_ms = uv_now(z->loop);
        hd_log_warn("authorize_hook %s: %s (on_error=%s)", z->def->ep.url, v.reason,
                    z->def->allow_on_error ? "allow" : "deny");
    }
    if (v.kind != HD_HOOKS_ERROR && z->def->cache_ms > 0)
        cache_put(z, c->body->data, c->body->len, &v);
    call_end(z, c, &v);
    hd_identity_unref(v.id);
    pump(z);
}

static void call_send(hk_authz_t *z, call_t *c)
{
    char id[40];
    hk_event_id(id);
    c->req.head = hk_signed_head(z->signer, id, hk_wall_ms() / 1000, c->body);
    c->req.body = c->body;
    c->req.cb = on_answer;
    c->req.data = c;
    c->req.want_body = 1;
    z->in_flight++;
    HK_ADD(z->st->authz_calls, 1);
    uv_update_time(z->loop);
    hk_pool_send(z->pool, &c->req);
}

static void on_timer(uv_timer_t *t);

/* Ends the waiting calls whose time is up, sends what fits, re-arms the timer. */
static void pump(hk_authz_t *z)
{
    uint64_t now = uv_now(z->loop);
    while (!hd_list_empty(&z->queue)) {
        call_t *c = hd_container_of(z->queue.next, call_t, link);
        if (c->asked_ms + z->def->timeout_ms <= now) {
            hk_verdict_t v;
            memset(&v, 0, sizeof(v));
            v.kind = HD_HOOKS_ERROR;
            snprintf(v.reason, sizeof(v.reason),
                     "timeout: %u calls to the backend were already in flight (concurrency)",
                     (unsigned)z->def->concurrency);
            HK_ADD(z->st->authz_errors, 1);
            call_end(z, c, &v);
            continue;
        }
        if (z->in_flight >= z->def->concurrency)
            break;
        hd_list_remove(&c->link);
        call_send(z, c);
    }
    if (hd_list_empty(&z->queue)) {
        uv_timer_stop(&z->timer);
    } else {
        call_t *c = hd_container_of(z->queue.next, call_t, link);
        uv_timer_start(&z->timer, on_timer, c->asked_ms + z->def->timeout_ms - now, 0);
    }
}

static void on_timer(uv_timer_t *t)
{
    pump(t->data);
}

void hk_authz_ask(hk_authz_t *z, hd_hooks_authz_t *a, void (*answer)(hd_hooks_authz_t *a))
{
    z->answer = answer;
    HK_ADD(z->st->authz_asked, 1);
    if (z->def->cache_ms > 0) {
        centry_t *e = cache_get(z, a->body, a->body_len);
        if (e) {
            HK_ADD(z->st->authz_cached, 1);
            reply(z, a, &e->v, 1);
            return;
        }
    }
    hd_hnode_t *n = hd_hmap_find(&z->calls, a->body, a->body_len);
    if (n) {
        call_t *c = hd_container_of(n, call_t, node);
        HK_ADD(z->st->authz_joined, 1);
        hd_list_insert_tail(&c->waiters, &a->link_);
        return;
    }
    call_t *c = hd_calloc(1, sizeof(*c));
    c->z = z;
    c->body = hd_buf_new_copy(a->body, a->body_len);
    c->node.key = c->body->data;
    c->node.key_len = c->body->len;
    c->asked_ms = uv_now(z->loop);
    hd_list_init(&c->waiters);
    hd_list_init(&c->link);
    hd_list_insert_tail(&c->waiters, &a->link_);
    hd_hmap_insert(&z->calls, &c->node);
    hd_list_insert_tail(&z->queue, &c->link);
    pump(z);
}

/* ---- lifetime ---- */

hk_authz_t *hk_authz_new(uv_loop_t *loop, const hd_conf_t *conf, SSL_CTX *tls,
                         hd_hooks_stats_t *stats)
{
    hk_authz_t *z = hd_calloc(1, sizeof(*z));
    z->loop = loop;
    z->def = conf->authorize_hook;
    z->st = stats;
    z->cc.loop = loop;
    z->cc.tls = tls;
    z->cc.timeout_ms = z->def->timeout_ms;
    z->cc.connect_timeout_ms = conf->webhook_connect_timeout_ms < z->def->timeout_ms
                                   ? conf->webhook_connect_timeout_ms
                                   : z->def->timeout_ms;
    z->cc.allow_private = conf->webhook_allow_private;
    z->pool = hk_pool_new(&z->def->ep, &z->cc);
    z->signer = hk_signer_new(&z->def->ep);
    hd_hmap_init(&z->calls, 64);
    hd_hmap_init(&z->cache, 64);
    hd_list_init(&z->queue);
    hd_list_init(&z->lru);
    uv_timer_init(loop, &z->timer);
    z->timer.data = z;
    return z;
}

static void end_call(hd_hnode_t *n, void *arg)
{
    hk_authz_t *z = arg;
    hk_verdict_t v;
    memset(&v, 0, sizeof(v));
    v.kind = HD_HOOKS_ERROR;
    snprintf(v.reason, sizeof(v.reason), "herald is stopping");
    call_t *c = hd_container_of(n, call_t, node);
    if (c->req.head)
        hd_buf_unref(c->req.head);
    call_end(z, c, &v);
}

static void drop_entry(hd_hnode_t *n, void *arg)
{
    cache_drop(arg, hd_container_of(n, centry_t, node));
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void hk_authz_close(hk_authz_t *z)
{
    hk_pool_close(z->pool); /* calls in flight end with no callback: ended below */
    hk_signer_free(z->signer);
    z->pool = NULL;
    if (z->answer)
        hd_hmap_foreach(&z->calls, end_call, z);
    hd_hmap_foreach(&z->cache, drop_entry, z);
    hd_hmap_dispose(&z->calls);
    hd_hmap_dispose(&z->cache);
    uv_close((uv_handle_t *)&z->timer, on_timer_closed);
}
