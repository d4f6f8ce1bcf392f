/* SPDX-License-Identifier: MIT */
/*
 * kick.c: an operator's order to end connections (conn.h hd_kick_t: a revocation, a disconnect
 * by sub or by channel) carried to a worker and run there. Whoever takes the order (the admin
 * API with the embedded broker, the Redis bridge for an order announced by any node) posts one
 * message per worker; each worker walks its own connections on its own loop, so nothing is
 * shared and no lock is taken: the cost is one walk per order per worker, nothing per message.
 *
 *   POST /admin/revoke {"sub":"42"} --> hd_kick_post(w0..wN) --> on each worker's loop:
 *        for each connection: identity's sub == "42"? -> ops->on_kick(c, k): the transport ends
 *        it its way (SSE event, WebSocket close code, long poll answer)
 *
 * The walker matches identities itself (conn.h: c->identity), so a transport is asked only
 * about its own connections' channels (HD_KICK_CHANNEL) or told to end one that matched.
 */
#include "herald/conn.h"
#include "herald/worker.h"

#include <string.h>

typedef struct kick_msg_s {
    hd_msg_t base;
    int kind;
    size_t len;
    char key[]; /* len bytes and a NUL */
} kick_msg_t;

typedef struct walk_s {
    const hd_kick_t *k;
    size_t ended;
} walk_t;

/* 1 when the connection's identity is the one the order names. */
static int identity_matches(const hd_conn_t *c, const hd_kick_t *k)
{
    const char *v =
        k->kind == HD_KICK_REVOKE_JTI ? hd_identity_jti(c->identity) : hd_identity_sub(c->identity);
    return v && strlen(v) == k->len && memcmp(v, k->key, k->len) == 0;
}

static void visit(hd_conn_t *c, void *arg)
{
    walk_t *wk = arg;
    if (c->is_finishing || !c->ops || !c->ops->on_kick)
        return;
    if (wk->k->kind != HD_KICK_CHANNEL && !identity_matches(c, wk->k))
        return;
    if (c->ops->on_kick(c, wk->k))
        wk->ended++;
}

size_t hd_kick_run(hd_worker_t *w, const hd_kick_t *k)
{
    walk_t wk = {.k = k};
    hd_conn_foreach(w, visit, &wk);
    for (size_t i = 0; i < wk.ended; i++) {
        if (hd_kick_is_revocation(k))
            HD_STAT_INC(w, kicked_revoked);
        else
            HD_STAT_INC(w, kicked_disconnected);
    }
    if (wk.ended)
        hd_log_info("%s %.*s: %zu connection(s) ended on this worker",
                    hd_kick_is_revocation(k)     ? "revoked"
                    : k->kind == HD_KICK_CHANNEL ? "disconnected channel"
                                                 : "disconnected sub",
                    (int)k->len, k->key, wk.ended);
    return wk.ended;
}

static void on_kick_msg(hd_worker_t *w, hd_msg_t *msg)
{
    kick_msg_t *m = (kick_msg_t *)msg;
    hd_kick_t k = {.kind = m->kind, .key = m->key, .len = m->len};
    hd_kick_run(w, &k);
    free(m);
}

void hd_kick_post(hd_worker_t *w, int kind, const char *key, size_t len)
{
    kick_msg_t *m = hd_malloc(sizeof(*m) + len + 1);
    m->base.cb = on_kick_msg;
    m->kind = kind;
    m->len = len;
    memcpy(m->key, key, len);
    m->key[len] = '\0';
    hd_worker_post(w, &m->base);
}
