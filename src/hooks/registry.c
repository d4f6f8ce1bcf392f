/* SPDX-License-Identifier: MIT */
/*
 * registry.c: with Redis, the endpoints registered through the admin API and the endpoints
 * disabled, kept in Redis for every node (hooks.lua: P hk:eps, P hk:off, P hk:ver), over the
 * connection of durable.c. The sender decides (admin.c, delivery.c, regsync.c); this file
 * stores and reads:
 *
 *   POST /admin/webhooks   --herald_hk_reg-->   HSET hk:eps (bounded), INCR hk:ver
 *   DELETE ..              --herald_hk_unreg--> HDEL hk:eps, DEL its queue, INCR hk:ver
 *   410 / disable_after    --herald_hk_state--> HSET hk:off, INCR hk:ver
 *   POST ../{id}/enable    --herald_hk_state--> HDEL hk:off, INCR hk:ver
 *   every node, each poll  --herald_hk_regs-->  the version; when it moved, both hashes:
 *                                               ops->on_sync with all of them
 *   a node forgot one      --herald_hk_forget--> DEL its queue unless registered again (the
 *                                               node's takes until then made it again)
 *
 * A change reaches every node at its next poll (200 ms, sender.c's timer): reading a version
 * needs no second connection for a subscription and misses nothing across a reconnect (the
 * first read after one always gets both hashes). Nothing here is kept while Redis is away:
 * registering and deleting answer 503 then, and a state not stored is sent again by
 * regsync.c.
 */
#include "herald/log.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX (72 + 8 + HD_WEBHOOK_NAME_MAX + 1)

struct hk_registry_s {
    uv_loop_t *loop;
    const hd_conf_t *conf;
    hk_redis_t *rc;
    const hk_registry_ops_t *ops;
    void *data;
    char ver[KEY_MAX], eps[KEY_MAX], off[KEY_MAX];
    char known[24];   /* the version last read ("" none: the next read gets everything) */
    uint64_t states;  /* states sent so far */
    uint64_t read_at; /* states when the read under way was sent */
    unsigned is_reading : 1;
    unsigned is_closing : 1;
    uint64_t error_ms;
};

/* A put or a delete waiting for its answer. */
typedef struct call_s {
    hk_registry_t *r;
    hk_registry_cb cb;
    void *arg;
} call_t;

static void log_error(hk_registry_t *r, const char *what, const redisReply *rep)
{
    uint64_t now = uv_now(r->loop);
    if (r->error_ms && now - r->error_ms < 1000)
        return;
    r->error_ms = now;
    hd_log_warn("webhooks: redis %s: %s: %.200s", hk_redis_where(r->rc), what,
                rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected answer");
}

hk_registry_t *hk_registry_new(uv_loop_t *loop, const hd_conf_t *conf, hk_redis_t *rc,
                               const hk_registry_ops_t *ops, void *data)
{
    hk_registry_t *r = hd_calloc(1, sizeof(*r));
    r->loop = loop;
    r->conf = conf;
    r->rc = rc;
    r->ops = ops;
    r->data = data;
    snprintf(r->ver, sizeof(r->ver), "%shk:ver", conf->redis_prefix);
    snprintf(r->eps, sizeof(r->eps), "%shk:eps", conf->redis_prefix);
    snprintf(r->off, sizeof(r->off), "%shk:off", conf->redis_prefix);
    return r;
}

void hk_registry_close(hk_registry_t *r)
{
    free(r);
}

/* ---- reading ---- */

/* The pairs of a HGETALL answer: 0, or -1 when it is not an array of string pairs. */
static int pairs_ok(const redisReply *a)
{
    if (!a || a->type != REDIS_REPLY_ARRAY || a->elements % 2 != 0)
        return -1;
    for (size_t i = 0; i < a->elements; i++) {
        if (a->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    }
    return 0;
}

static void on_regs(void *data, const redisReply *rep)
{
    hk_registry_t *r = data;
    r->is_reading = 0;
    if (!rep) {
        r->known[0] = '\0'; /* after a reconnect, read everything again */
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || (rep->elements != 1 && rep->elements != 3) ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof(r->known) ||
        (rep->elements == 3 && (pairs_ok(rep->element[1]) < 0 || pairs_ok(rep->element[2]) < 0))) {
        log_error(r, "herald_hk_regs", rep);
        return;
    }
    if (rep->elements == 1)
        return; /* unchanged */
    const redisReply *eps = rep->element[1], *off = rep->element[2];
    size_t n_eps = eps->elements / 2, n_off = off->elements / 2, n = 0;
    hk_reg_entry_t *e = hd_calloc(n_eps + n_off + 1, sizeof(*e));
    for (size_t i = 0; i < n_eps; i++) {
        e[n].name = eps->element[2 * i]->str;
        e[n].name_len = eps->element[2 * i]->len;
        e[n].record = eps->element[2 * i + 1]->str;
        e[n].record_len = eps->element[2 * i + 1]->len;
        n++;
    }
    for (size_t i = 0; i < n_off; i++) {
        const redisReply *name = off->element[2 * i], *why = off->element[2 * i + 1];
        size_t k = 0;
        while (k < n &&
               !(e[k].name_len == name->len && memcmp(e[k].name, name->str, name->len) == 0))
            k++;
        if (k == n) {
            e[n].name = name->str;
            e[n].name_len = name->len;
            n++;
        }
        e[k].off = why->str;
        e[k].off_len = why->len;
    }
    memcpy(r->known, rep->element[0]->str, rep->element[0]->len);
    r->known[rep->element[0]->len] = '\0';
    r->ops->on_sync(r->data, e, n, r->read_at);
    free(e);
}

void hk_registry_poll(hk_registry_t *r)
{
    if (r->is_reading || !hk_redis_is_up(r->rc))
        return;
    const char *argv[] = {"FCALL", "herald_hk_regs", "3", r->ver, r->eps, r->off, r->known};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (hk_redis_send(r->rc, 7, argv, lens, on_regs, r) == 0) {
        r->is_reading = 1;
        r->read_at = r->states;
    }
}

/* ---- changes ---- */

static void on_call(void *data, const redisReply *rep)
{
    call_t *c = data;
    int result = HK_REG_DOWN;
    if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= -1 && rep->integer <= 1)
        result = (int)rep->integer;
    else if (rep)
        log_error(c->r, "herald_hk_reg/unreg", rep);
    c->cb(c->arg, result);
    free(c);
}

static void call(hk_registry_t *r, int argc, const char **argv, const size_t *lens,
                 hk_registry_cb cb, void *arg)
{
    call_t *c = hd_malloc(sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    if (hk_redis_send(r->rc, argc, argv, lens, on_call, c) < 0) {
        free(c);
        cb(arg, HK_REG_DOWN);
    }
}

void hk_registry_put(hk_registry_t *r, const char *name, const char *record, size_t len,
                     hk_registry_cb cb, void *arg)
{
    char max[16];
    snprintf(max, sizeof(max), "%u", r->conf->webhook_max_endpoints);
    const char *argv[] = {"FCALL", "herald_hk_reg", "3", r->ver, r->eps, r->off, name, record, max};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = i == 7 ? len : strlen(argv[i]);
    call(r, 9, argv, lens, cb, arg);
}

void hk_registry_del(hk_registry_t *r, const char *name, hk_registry_cb cb, void *arg)
{
    char q[KEY_MAX], w[KEY_MAX];
    snprintf(q, sizeof(q), "%shk:q:%s", r->conf->redis_prefix, name);
    snprintf(w, sizeof(w), "%shk:w:%s", r->conf->redis_prefix, name);
    const char *argv[] = {"FCALL", "herald_hk_unreg", "5", r->ver, r->eps, r->off, q, w, name};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    call(r, 9, argv, lens, cb, arg);
}

void hk_registry_forget(hk_registry_t *r, const char *name)
{
    char q[KEY_MAX], w[KEY_MAX];
    snprintf(q, sizeof(q), "%shk:q:%s", r->conf->redis_prefix, name);
    snprintf(w, sizeof(w), "%shk:w:%s", r->conf->redis_prefix, name);
    const char *argv[] = {"FCALL", "herald_hk_forget", "3", r->eps, q, w, name};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    hk_redis_send(r->rc, 7, argv, lens, NULL, NULL);
}

uint64_t hk_registry_state(hk_registry_t *r, const char *name, const char *reason)
{
    const char *argv[] = {"FCALL", "herald_hk_state",   "2", r->ver, r->off,
                          name,    reason ? reason : ""};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (hk_redis_send(r->rc, 7, argv, lens, NULL, NULL) < 0)
        return 0;
    return ++r->states;
}
