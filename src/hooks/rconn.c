/* SPDX-License-Identifier: MIT */
/*
 * rconn.c: the webhook sender's own Redis connection, on the hooks thread's loop (the broker's
 * connections live on the broker's thread; a loop's handles are its own). One hiredis async
 * context with the libuv adapter, the same habits as src/broker/redis_conn.c (what the two share
 * is herald/redis_link.h's, src/net/redis_link.c):
 *
 *   connect -> [AUTH] CLIENT SETNAME herald:<host>:<pid>:<role>, SELECT db,
 *              FUNCTION LOAD REPLACE <hooks.lua>   (pipelined; the last answer makes it up)
 *   up      -> commands pipelined; each answer goes to its callback
 *   lost    -> (an error answer to the set-up, a closed or failed socket, no answer within
 *              redis_timeout) every command without an answer gets NULL, then a reconnect
 *              after a backoff of 100 ms doubling to 5 s, each drawn in [d/2, d]
 *
 * hiredis has no timeouts: a tick timer watches the oldest unanswered command and the socket's
 * pending error (the libuv adapter drops poll errors). Freeing a context from inside one of its
 * own callbacks is not allowed, so a loss found there is handled on the next loop pass.
 */
#include "herald/log.h"
#include "herald/redis_link.h"
#include "herald/redis_url.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

#include "hooks_lua.h" /* generated from hooks.lua: hooks_lua[] */

enum { R_DOWN = 0, R_CONNECTING, R_UP };

struct hk_redis_s {
    uv_loop_t *loop;
    hd_redis_addr_t addr;
    char where[320]; /* for messages, never with credentials */
    char name[96];   /* CLIENT SETNAME */
    redisAsyncContext *ac;
    int state;
    uint64_t gen; /* the connection's generation: answers of an older one are stale */
    unsigned n_out;
    uint64_t progress_ms, deadline_ms, timeout_ms;
    unsigned attempts;
    unsigned was_up : 1;
    unsigned is_closing : 1;
    uint64_t rng;
    uv_timer_t tick, retry, later;
    char later_why[320];
    unsigned n_closing; /* timers not closed yet, once closing */
    hk_redis_up_cb on_up;
    void *data;
};

typedef struct cmd_s {
    hk_redis_t *r;
    uint64_t gen;
    const char *what; /* a set-up step, or NULL */
    hk_redis_cb cb;
    void *data;
} cmd_t;

static void lost(hk_redis_t *r, const char *why);
static void on_later(uv_timer_t *t);

static void lost_later(hk_redis_t *r, const char *why)
{
    if (!r->later_why[0])
        snprintf(r->later_why, sizeof(r->later_why), "%s", why);
    uv_timer_start(&r->later, on_later, 0, 0);
}

static void on_later(uv_timer_t *t)
{
    hk_redis_t *r = t->data;
    char why[sizeof(r->later_why)];
    memcpy(why, r->later_why, sizeof(why));
    r->later_why[0] = '\0';
    if (why[0])
        lost(r, why);
}

static void go_up(hk_redis_t *r)
{
    r->state = R_UP;
    r->attempts = 0;
    hd_log_info("webhooks: redis %s: connected (pending deliveries and dead letters in Redis)",
                r->where);
    r->was_up = 1;
    if (r->on_up)
        r->on_up(r->data);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmd_t *c = privdata;
    hk_redis_t *r = c->r;
    const redisReply *rep = reply;
    (void)ac;
    if (c->gen != r->gen || r->state == R_DOWN) {
        rep = NULL; /* its connection is gone */
    } else {
        r->n_out -= r->n_out > 0;
        r->progress_ms = uv_now(r->loop);
        if (!rep)
            lost_later(r, "connection lost");
    }
    if (c->what) {
        if (rep && rep->type == REDIS_REPLY_ERROR && strcmp(c->what, "CLIENT SETNAME") != 0) {
            char why[300];
            hd_redis_link_setup_failed(why, sizeof(why), c->what, rep->str);
            lost_later(r, why);
        } else if (rep && strcmp(c->what, "FUNCTION LOAD") == 0 && r->state == R_CONNECTING) {
            go_up(r);
        }
    } else if (c->cb) {
        c->cb(c->data, rep);
    }
    free(c);
}

static int send_cmd(hk_redis_t *r, const char *what, int argc, const char **argv,
                    const size_t *lens, hk_redis_cb cb, void *data)
{
    cmd_t *c = hd_malloc(sizeof(*c));
    c->r = r;
    c->gen = r->gen;
    c->what = what;
    c->cb = cb;
    c->data = data;
    if (!r->ac || redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        lost_later(r, "a command could not be sent");
        return -1;
    }
    if (r->n_out++ == 0)
        r->progress_ms = uv_now(r->loop);
    return 0;
}

int hk_redis_send(hk_redis_t *r, int argc, const char **argv, const size_t *lens, hk_redis_cb cb,
                  void *data)
{
    if (r->state != R_UP)
        return -1;
    return send_cmd(r, NULL, argc, argv, lens, cb, data);
}

int hk_redis_is_up(const hk_redis_t *r)
{
    return r->state == R_UP;
}

const char *hk_redis_where(const hk_redis_t *r)
{
    return r->where;
}

/* ---- connecting ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    hk_redis_t *r = ac->data;
    if (!r || r->ac != ac || status == REDIS_OK)
        return;
    char why[300];
    snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr[0] ? ac->errstr : "error");
    r->ac = NULL; /* hiredis frees it after this callback */
    lost_later(r, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    hk_redis_t *r = ac->data;
    if (!r || r->ac != ac)
        return; /* one we dropped */
    char why[300];
    snprintf(why, sizeof(why), "connection lost: %s", ac->errstr[0] ? ac->errstr : "closed");
    r->ac = NULL;
    lost_later(r, why);
}

static void setup(hk_redis_t *r, const char *what, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    send_cmd(r, what, argc, argv, lens, NULL, NULL);
}

static void start(hk_redis_t *r)
{
    r->gen++;
    r->state = R_CONNECTING;
    r->n_out = 0;
    r->deadline_ms = uv_now(r->loop) + r->timeout_ms;
    char why[300];
    redisAsyncContext *ac =
        hd_redis_link_open(r->loop, &r->addr, r, on_connect, on_disconnect, why, sizeof(why));
    if (!ac) {
        lost(r, why);
        return;
    }
    r->ac = ac;
    if (r->addr.password[0]) {
        if (r->addr.user[0]) {
            const char *argv[] = {"AUTH", r->addr.user, r->addr.password};
            setup(r, "AUTH", 3, argv);
        } else {
            const char *argv[] = {"AUTH", r->addr.password};
            setup(r, "AUTH", 2, argv);
        }
    }
    const char *name[] = {"CLIENT", "SETNAME", r->name};
    setup(r, "CLIENT SETNAME", 3, name);
    char db[16];
    snprintf(db, sizeof(db), "%u", r->addr.db);
    const char *select[] = {"SELECT", db};
    setup(r, "SELECT", 2, select);
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", hooks_lua};
    setup(r, "FUNCTION LOAD", 4, load);
}

static void on_retry(uv_timer_t *t)
{
    start(t->data);
}

static void drop(hk_redis_t *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->n_out = 0;
    hd_redis_link_drop(ac); /* the answers it still owed come back NULL, now */
}

static void lost(hk_redis_t *r, const char *why)
{
    if (r->state == R_DOWN && !r->ac)
        return;
    int was_up = r->state == R_UP;
    r->state = R_DOWN;
    r->gen++;
    if (was_up || r->attempts % 10 == 0)
        hd_log_warn("webhooks: redis %s: %s; reconnecting (deliveries %s)", r->where, why,
                    was_up ? "paused, new events held in memory" : "wait");
    drop(r);
    if (r->is_closing)
        return;
    uint64_t delay = hd_redis_link_backoff_ms(r->attempts++, &r->rng);
    uv_timer_start(&r->retry, on_retry, delay, 0);
}

static void on_tick(uv_timer_t *t)
{
    hk_redis_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    char why[200];
    int e = hd_redis_link_socket_error(r->ac);
    if (e && r->state != R_DOWN) {
        snprintf(why, sizeof(why), "%s", strerror(e));
        lost(r, why);
    } else if ((r->state == R_CONNECTING && now > r->deadline_ms) ||
               (r->state == R_UP && r->n_out && now - r->progress_ms > r->timeout_ms)) {
        snprintf(why, sizeof(why), "no answer within redis_timeout (%llu ms)",
                 (unsigned long long)r->timeout_ms);
        lost(r, why);
    }
}

/* ---- life ---- */

hk_redis_t *hk_redis_new(uv_loop_t *loop, const hd_conf_t *conf, const char *role,
                         hk_redis_up_cb on_up, void *data)
{
    hk_redis_t *r = hd_calloc(1, sizeof(*r));
    char err[200];
    if (hd_redis_url_parse(conf->redis, &r->addr, err, sizeof(err)) < 0) {
        hd_log_error("webhooks: redis: %s", err); /* the conf checked it: not reached */
        free(r);
        return NULL;
    }
    if (r->addr.path[0])
        snprintf(r->where, sizeof(r->where), "unix:%s/%u", r->addr.path, r->addr.db);
    else
        snprintf(r->where, sizeof(r->where), "%s:%d/%u", r->addr.host, r->addr.port, r->addr.db);
    hd_redis_link_client_name(r->name, sizeof(r->name), role);
    r->loop = loop;
    r->timeout_ms = conf->redis_timeout_ms;
    r->on_up = on_up;
    r->data = data;
    r->rng = uv_hrtime() | 1;
    uv_timer_init(loop, &r->tick);
    uv_timer_init(loop, &r->retry);
    uv_timer_init(loop, &r->later);
    r->tick.data = r->retry.data = r->later.data = r;
    uint64_t tick = hd_redis_link_tick_ms(r->timeout_ms);
    uv_timer_start(&r->tick, on_tick, tick, tick);
    start(r);
    return r;
}

static void on_closed(uv_handle_t *h)
{
    hk_redis_t *r = h->data;
    if (--r->n_closing == 0) /* the last of its three timers (libuv's order is its own) */
        free(r);
}

void hk_redis_close(hk_redis_t *r)
{
    r->is_closing = 1;
    r->state = R_DOWN;
    r->gen++;
    drop(r);
    r->n_closing = 3;
    uv_close((uv_handle_t *)&r->tick, on_closed);
    uv_close((uv_handle_t *)&r->retry, on_closed);
    uv_close((uv_handle_t *)&r->later, on_closed);
}
