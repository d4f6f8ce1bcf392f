/* SPDX-License-Identifier: MIT */
/*
 * redis_conn.c: the Redis bridge's connections. Three hiredis async contexts on the bridge's loop
 * (hiredis's libuv adapter): one for commands (pipelined FCALLs), one subscribed to the pub/sub
 * channels of the channels with local subscribers, and one that only sends the heartbeat (a
 * PUBLISH to ourselves, received on the subscriber connection). The heartbeat has a connection of
 * its own so that it never waits behind the commands queued on the command connection: Redis
 * serves each connection in turn, so the heartbeat measures whether Redis answers at all, not how
 * much this node asked of it. hiredis has no timeouts, so a tick timer watches them: a connect, a
 * reply or the heartbeat later than redis_timeout, a socket error, an error reply to the set-up,
 * or a closed connection, and all are dropped (hd_redis_conn_lost) and opened again after an
 * exponential backoff with jitter (100 ms doubling to 5 s, each delay drawn in [d/2, d]).
 *
 * Set-up, pipelined on connect:
 *   cmd: [AUTH] CLIENT SETNAME herald:<host>:<pid>:cmd, SELECT db, FUNCTION LOAD REPLACE
 *        <herald.lua>, FCALL herald_init (settings; returns the epoch)
 *   sub: [AUTH] CLIENT SETNAME ...:sub, SUBSCRIBE P ctl P hb:<node id>
 *   hb:  [AUTH] CLIENT SETNAME ...:hb
 * When all are answered the bridge is up (events->on_up).
 *
 * Every command carries the connection generation it was sent on; answers of an older one (the
 * NULL replies hiredis gives pending commands when a context is freed) are "never came".
 */
#include "herald/redis_link.h"
#include "redis_bridge.h"

#include "herald_lua.h" /* generated from herald.lua: herald_lua[] */

static void on_sub_reply(redisAsyncContext *ac, void *reply_, void *privdata);
static void finish_op(redis_broker_t *b, op_t *op, redisReply *rep);
static void init_reply(redis_broker_t *b, op_t *op, const redisReply *rep);
static void send_settings(redis_broker_t *b);

/* ---- commands ---- */

static op_t *new_op(redis_broker_t *b, rconn_t *rc, int kind)
{
    op_t *op = hd_calloc(1, sizeof(*op));
    op->b = b;
    op->rc = rc;
    op->kind = kind;
    op->gen = b->gen;
    hd_list_init(&op->link);
    return op;
}

op_t *hd_redis_op_new(redis_broker_t *b, int kind)
{
    return new_op(b, &b->cmd, kind);
}

static void on_op_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    op_t *op = privdata;
    finish_op(op->b, op, reply_);
}

/* What callbacks asked for, done on the next loop pass: a reconnect, failing refused commands. */
static void on_later(uv_timer_t *t)
{
    redis_broker_t *b = t->data;
    if (b->later_why[0]) {
        char why[sizeof(b->later_why)];
        memcpy(why, b->later_why, sizeof(why));
        b->later_why[0] = '\0';
        hd_redis_conn_lost(b, why);
    }
    while (b->failed) {
        op_t *op = b->failed;
        b->failed = op->next_failed;
        finish_op(b, op, NULL);
    }
    if (b->needs_sweep) {
        b->needs_sweep = 0;
        b->events->sweep(b);
    }
}

void hd_redis_sweep_later(redis_broker_t *b)
{
    b->needs_sweep = 1;
    uv_timer_start(&b->later_timer, on_later, 0, 0);
}

void hd_redis_reconnect_later(redis_broker_t *b, const char *why)
{
    if (!b->later_why[0])
        snprintf(b->later_why, sizeof(b->later_why), "%s", why);
    uv_timer_start(&b->later_timer, on_later, 0, 0);
}

/*
 * Sends a command; its reply goes to finish_op. A command hiredis refuses (its connection is
 * going away) fails on the next loop pass, after a reconnect is under way, never inside the
 * caller (which may be walking the lists that failure changes).
 */
void hd_redis_send(redis_broker_t *b, op_t *op, int argc, const char **argv, const size_t *lens)
{
    rconn_t *rc = op->rc;
    if (!rc->ac || redisAsyncCommandArgv(rc->ac, on_op_reply, op, argc, argv, lens) != REDIS_OK) {
        op->gen = 0; /* stale: no generation is 0 */
        op->next_failed = b->failed;
        b->failed = op;
        hd_redis_reconnect_later(b, "a command could not be sent");
        return;
    }
    if (rc->n_out++ == 0)
        rc->progress_ms = hd_redis_now_ms(b);
}

void hd_redis_send_sub(redis_broker_t *b, const char *cmd, const char *channel, size_t len)
{
    char key[KEY_MAX];
    size_t n = hd_redis_key(b, key, "msg:", channel, len);
    const char *argv[2] = {cmd, key};
    size_t lens[2] = {strlen(cmd), n};
    /* SUBSCRIBE keeps the callback for the channel's messages; UNSUBSCRIBE ignores it. */
    if (!b->sub.ac ||
        redisAsyncCommandArgv(b->sub.ac, on_sub_reply, b, 2, argv, lens) != REDIS_OK) {
        hd_redis_reconnect_later(b, "a subscription could not be sent");
        return;
    }
    if (b->sub.n_out++ == 0)
        b->sub.progress_ms = hd_redis_now_ms(b);
}

/*
 * Every answer to a command, or its absence (NULL: the context was freed, or the command was
 * refused). The set-up and the heartbeat are handled here, the rest by the bridge.
 */
static void finish_op(redis_broker_t *b, op_t *op, redisReply *rep)
{
    int is_current = op->gen == b->gen;
    if (is_current) {
        op->rc->n_out--;
        op->rc->progress_ms = hd_redis_now_ms(b);
        if (!rep)
            hd_redis_conn_lost(b, "connection lost");
    }
    if (!is_current || op->gen != b->gen)
        rep = NULL; /* stale: its connection is gone */
    if (op->kind == OP_INIT) {
        if (rep)
            init_reply(b, op, rep);
    } else if (op->kind == OP_HB) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            hd_redis_conn_lost(b, "heartbeat PUBLISH failed");
    } else {
        b->events->on_reply(b, op, rep);
    }
    free(op);
}

/* ---- set-up ---- */

static void go_up(redis_broker_t *b);

static void init_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    char why[300];
    if (op->rc == &b->hb && strcmp(op->what, "CLIENT SETNAME") == 0) {
        b->is_hb_ready = 1; /* its last set-up step: answered, even with an error */
        if (b->is_cmd_ready && b->is_sub_ready)
            go_up(b);
    }
    if (rep->type == REDIS_REPLY_ERROR && strcmp(op->what, "CLIENT SETNAME") == 0) {
        hd_log_info("redis %s: CLIENT SETNAME refused (%.100s): connections stay unnamed", b->where,
                    rep->str);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        hd_redis_link_setup_failed(why, sizeof(why), op->what, rep->str);
        hd_redis_conn_lost(b, why);
        return;
    }
    if (strcmp(op->what, "herald_init") != 0)
        return;
    const char *s;
    size_t len;
    uint64_t epoch, cur;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != N_SETTINGS + 1 ||
        hd_redis_reply_str(rep->element[N_SETTINGS], &s, &len) < 0 ||
        hd_id_parse(s, len, &epoch, &cur) < 0) {
        hd_redis_conn_lost(b, "herald_init: unexpected answer");
        return;
    }
    static const char *const names[N_SETTINGS] = {"history_size",       "history_ttl",
                                                  "history_max_bytes",  "max_message_size",
                                                  "idempotency_window", "max_channels"};
    for (int i = 0; i < N_SETTINGS; i++) {
        if (hd_redis_reply_str(rep->element[i], &s, &len) == 0 && len > 0 &&
            (len != strlen(b->settings[i]) || memcmp(s, b->settings[i], len) != 0))
            hd_log_warn("redis %s: %s differs from the one another node stored (%.*s); this "
                        "node's (%s) now applies to every node",
                        b->where, names[i], (int)len, s, b->settings[i]);
    }
    hd_redis_note_epoch(b, epoch);
    if (cur > b->stats.messages_published)
        STAT_SET(b, messages_published, cur);
    b->is_cmd_ready = 1;
    if (b->is_sub_ready && b->is_hb_ready)
        go_up(b);
}

static void go_up(redis_broker_t *b)
{
    if (b->state != ST_CONNECTING)
        return;
    uint64_t now = hd_redis_now_ms(b);
    b->state = ST_UP;
    STAT_SET(b, state, ST_UP);
    b->attempts = 0;
    b->failures_logged = 0;
    b->hb_rx_ms = b->hb_sent_ms = now;
    if (b->was_up)
        hd_log_warn("redis %s: connected again after %.1f s; catching up %u channel(s), %d at a "
                    "time",
                    b->where, (double)(now - b->down_since_ms) / 1000.0,
                    (unsigned)hd_chantab_count(&b->chans), CATCHUP_IN_FLIGHT);
    else
        hd_log_info("redis %s: connected", b->where);
    if (!b->was_up) {
        b->was_up = 1;
        b->start_rc = 0;
        uv_sem_post(&b->started);
    }
    b->events->on_up(b);
}

void hd_redis_note_epoch(redis_broker_t *b, uint64_t epoch)
{
    /* Epochs are creation times: a newer one means Redis lost its data since the last answer.
     * (Answers on the two connections may interleave: an older one is no news.) */
    if (epoch <= b->epoch_seen)
        return;
    int is_news = b->epoch_seen != 0;
    b->epoch_seen = epoch;
    if (!is_news)
        return;
    hd_log_warn("redis %s lost its data (the id epoch changed): history published before is "
                "gone; clients resuming from older ids are told",
                b->where);
    if (b->state == ST_UP)
        send_settings(b); /* they went with the data */
}

/* ---- the subscriber connection ---- */

static void on_sub_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_broker_t *b = privdata;
    redisReply *rep = reply_;
    if (!rep || ac != b->sub.ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str, *name = rep->element[1]->str;
    size_t len = rep->element[1]->len;
    int is_message = strcmp(kind, "message") == 0;
    if (!is_message) {
        b->sub.n_out -= b->sub.n_out > 0;
        b->sub.progress_ms = hd_redis_now_ms(b);
    }
    if (len == strlen(b->ctl_channel) && memcmp(name, b->ctl_channel, len) == 0) {
        if (is_message && rep->element[2]->type == REDIS_REPLY_STRING)
            b->events->on_control(b, rep->element[2]->str, rep->element[2]->len);
        return;
    }
    if (len == strlen(b->rc_channel) && memcmp(name, b->rc_channel, len) == 0) {
        if (is_message && rep->element[2]->type == REDIS_REPLY_STRING)
            b->events->on_receipt(b, rep->element[2]->str, rep->element[2]->len);
        return;
    }
    if (len == strlen(b->hb_channel) && memcmp(name, b->hb_channel, len) == 0) {
        if (is_message) {
            b->hb_rx_ms = hd_redis_now_ms(b);
        } else if (strcmp(kind, "subscribe") == 0) {
            b->is_sub_ready = 1;
            if (b->is_cmd_ready && b->is_hb_ready)
                go_up(b);
        }
        return;
    }
    if (len <= b->prefix_len + 4 || memcmp(name, b->prefix, b->prefix_len) != 0 ||
        memcmp(name + b->prefix_len, "msg:", 4) != 0)
        return;
    name += b->prefix_len + 4;
    len -= b->prefix_len + 4;
    if (is_message) {
        if (rep->element[2]->type == REDIS_REPLY_STRING)
            b->events->on_message(b, name, len, rep->element[2]->str, rep->element[2]->len);
    } else if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "unsubscribe") == 0) {
        b->events->on_subscription(b, name, len, kind[0] == 's');
    }
}

/* ---- connecting ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *rc = ac->data;
    if (!rc || rc->ac != ac || status == REDIS_OK)
        return;
    char why[300];
    snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr ? ac->errstr : "error");
    rc->ac = NULL; /* hiredis frees it after this callback */
    hd_redis_conn_lost(rc->b, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    rconn_t *rc = ac->data;
    if (!rc || rc->ac != ac)
        return; /* one we dropped */
    char why[300];
    snprintf(why, sizeof(why), "connection lost: %s", ac->errstr ? ac->errstr : "closed");
    rc->ac = NULL;
    hd_redis_conn_lost(rc->b, why);
}

static int open_conn(redis_broker_t *b, rconn_t *rc, char *why, size_t whylen)
{
    redisAsyncContext *ac =
        hd_redis_link_open(&b->loop, &b->addr, rc, on_connect, on_disconnect, why, whylen);
    if (!ac)
        return -1;
    rc->ac = ac;
    rc->n_out = 0;
    rc->progress_ms = hd_redis_now_ms(b);
    return 0;
}

static void send_init(redis_broker_t *b, rconn_t *rc, const char *what, int argc, const char **argv)
{
    size_t lens[4 + N_SETTINGS];
    HD_ASSERT(argc <= (int)HD_ARRAY_SIZE(lens));
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    op_t *op = new_op(b, rc, OP_INIT);
    op->what = what;
    hd_redis_send(b, op, argc, argv, lens);
}

static void send_auth(redis_broker_t *b, rconn_t *rc)
{
    if (!b->addr.password[0])
        return;
    if (b->addr.user[0]) {
        const char *argv[] = {"AUTH", b->addr.user, b->addr.password};
        send_init(b, rc, "AUTH", 3, argv);
    } else {
        const char *argv[] = {"AUTH", b->addr.password};
        send_init(b, rc, "AUTH", 2, argv);
    }
}

/* FCALL herald_init: this node's history settings, for every publish in the cluster. */
static void send_settings(redis_broker_t *b)
{
    char conf_key[KEY_MAX];
    hd_redis_key(b, conf_key, "conf", "", 0);
    const char *init[4 + N_SETTINGS] = {"FCALL", "herald_init", "1", conf_key};
    for (int i = 0; i < N_SETTINGS; i++)
        init[4 + i] = b->settings[i];
    send_init(b, &b->cmd, "herald_init", 4 + N_SETTINGS, init);
}

void hd_redis_conn_start(redis_broker_t *b)
{
    char why[300];
    b->gen++;
    b->state = ST_CONNECTING;
    STAT_SET(b, state, ST_CONNECTING);
    b->is_cmd_ready = b->is_sub_ready = b->is_hb_ready = 0;
    b->connect_deadline_ms = hd_redis_now_ms(b) + b->timeout_ms;
    if (open_conn(b, &b->cmd, why, sizeof(why)) < 0 ||
        open_conn(b, &b->sub, why, sizeof(why)) < 0 || open_conn(b, &b->hb, why, sizeof(why)) < 0) {
        hd_redis_conn_lost(b, why);
        return;
    }
    send_auth(b, &b->cmd);
    const char *name_cmd[] = {"CLIENT", "SETNAME", b->client_name[0]};
    send_init(b, &b->cmd, "CLIENT SETNAME", 3, name_cmd);
    char db[16];
    snprintf(db, sizeof(db), "%u", b->addr.db);
    const char *select[] = {"SELECT", db};
    send_init(b, &b->cmd, "SELECT", 2, select);
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", herald_lua};
    send_init(b, &b->cmd, "FUNCTION LOAD", 4, load);
    send_settings(b);
    send_auth(b, &b->sub);
    const char *name_sub[] = {"CLIENT", "SETNAME", b->client_name[1]};
    send_init(b, &b->sub, "CLIENT SETNAME", 3, name_sub);
    send_auth(b, &b->hb);
    const char *name_hb[] = {"CLIENT", "SETNAME", b->client_name[2]};
    send_init(b, &b->hb, "CLIENT SETNAME", 3, name_hb);
    /* The control and receipt channels first: their confirmations come before the heartbeat's,
     * which makes the connection ready, so a node is up only once it hears operators' orders
     * and its publishers' receipts. */
    const char *argv[4] = {"SUBSCRIBE", b->ctl_channel, b->rc_channel, b->hb_channel};
    size_t lens[4] = {9, strlen(b->ctl_channel), strlen(b->rc_channel), strlen(b->hb_channel)};
    if (!b->sub.ac ||
        redisAsyncCommandArgv(b->sub.ac, on_sub_reply, b, 4, argv, lens) != REDIS_OK) {
        hd_redis_conn_lost(b, "cannot subscribe");
        return;
    }
    b->sub.n_out += 3; /* one confirmation per channel */
}

static void on_retry(uv_timer_t *t)
{
    hd_redis_conn_start(t->data);
}

/* Drops a connection unless hiredis is already freeing it. */
static void drop_conn(rconn_t *rc)
{
    redisAsyncContext *ac = rc->ac;
    rc->ac = NULL;
    rc->n_out = 0;
    hd_redis_link_drop(ac);
}

void hd_redis_conn_lost(redis_broker_t *b, const char *why)
{
    if (b->state == ST_DOWN || b->is_in_conn_lost)
        return;
    int was_up = b->state == ST_UP;
    uint64_t now = hd_redis_now_ms(b);
    b->state = ST_DOWN;
    STAT_SET(b, state, ST_DOWN);
    b->gen++;
    if (was_up) {
        b->down_since_ms = now;
        STAT_SET(b, reconnects, b->stats.reconnects + 1);
        hd_log_warn("redis %s: %s; publishing answers 503 until reconnected", b->where, why);
    } else if (b->was_up && b->failures_logged++ % 10 == 0) {
        hd_log_warn("redis %s: reconnecting: %s", b->where, why);
    }
    if (!b->was_up)
        /* The reason is kept whole when it fits; a longer one is cut, and said to be. */
        snprintf(b->start_err, sizeof(b->start_err), "%.*s", (int)sizeof(b->start_err) - 1, why);
    /* Freeing a context runs the callbacks of its pending commands (as never answered) here. */
    b->is_in_conn_lost = 1;
    drop_conn(&b->cmd);
    drop_conn(&b->sub);
    drop_conn(&b->hb);
    b->is_in_conn_lost = 0;
    b->events->on_down(b);
    if (!b->was_up) {
        b->start_rc = UV_ECONNREFUSED;
        uv_sem_post(&b->started); /* the start fails: no retry */
        return;
    }
    uint64_t delay = hd_redis_link_backoff_ms(b->attempts++, &b->rng);
    uv_timer_start(&b->retry_timer, on_retry, delay, 0);
}

/* ---- timers ---- */

static void send_heartbeat(redis_broker_t *b)
{
    const char *argv[] = {"PUBLISH", b->hb_channel, "1"};
    size_t lens[] = {7, strlen(b->hb_channel), 1};
    b->hb_sent_ms = hd_redis_now_ms(b);
    hd_redis_send(b, new_op(b, &b->hb, OP_HB), 3, argv, lens);
}

static void on_tick(uv_timer_t *t)
{
    redis_broker_t *b = t->data;
    uint64_t now = hd_redis_now_ms(b);
    char why[200];
    /* hiredis's libuv adapter drops poll errors: the sockets are asked (redis_link.h) */
    int e = hd_redis_link_socket_error(b->cmd.ac);
    if (!e)
        e = hd_redis_link_socket_error(b->sub.ac);
    if (!e)
        e = hd_redis_link_socket_error(b->hb.ac);
    if (e && b->state != ST_DOWN) {
        snprintf(why, sizeof(why), "%s: %s",
                 b->state == ST_UP ? "connection lost" : "cannot connect", strerror(e));
        hd_redis_conn_lost(b, why);
        return;
    }
    if (b->state == ST_CONNECTING && now > b->connect_deadline_ms) {
        snprintf(why, sizeof(why), "no answer within redis_timeout (%llu ms)",
                 (unsigned long long)b->timeout_ms);
        hd_redis_conn_lost(b, why);
        return;
    }
    if (b->state != ST_UP)
        return;
    if ((b->cmd.n_out && now - b->cmd.progress_ms > b->timeout_ms) ||
        (b->sub.n_out && now - b->sub.progress_ms > b->timeout_ms) ||
        (b->hb.n_out && now - b->hb.progress_ms > b->timeout_ms)) {
        snprintf(why, sizeof(why), "no answer within redis_timeout (%llu ms)",
                 (unsigned long long)b->timeout_ms);
        hd_redis_conn_lost(b, why);
        return;
    }
    if (now - b->hb_rx_ms > b->timeout_ms + b->hb_interval_ms) {
        hd_redis_conn_lost(b, "the subscriber connection stopped receiving (heartbeat lost)");
        return;
    }
    if (now - b->hb_sent_ms >= b->hb_interval_ms && b->hb.n_out == 0)
        send_heartbeat(b);
}

/* ---- life ---- */

void hd_redis_conn_init(redis_broker_t *b, const hd_redis_events_t *events)
{
    b->events = events;
    b->cmd.b = b->sub.b = b->hb.b = b;
    b->tick_ms = hd_redis_link_tick_ms(b->timeout_ms);
    b->hb_interval_ms = b->timeout_ms / 3 > 1000 ? 1000 : b->timeout_ms / 3;
    uint64_t id = uv_hrtime();
    uv_random(NULL, NULL, &id, sizeof(id), 0, NULL);
    b->rng = id | 1;
    char node[24];
    snprintf(node, sizeof(node), "%016llx", (unsigned long long)id);
    hd_redis_key(b, b->hb_channel, "hb:", node, strlen(node));
    hd_redis_key(b, b->ctl_channel, "ctl", "", 0);
    hd_redis_key(b, b->rc_channel, "rc:", hd_presence_node(), strlen(hd_presence_node()));
    static const char *const roles[3] = {"cmd", "sub", "hb"};
    for (int i = 0; i < 3; i++)
        hd_redis_link_client_name(b->client_name[i], sizeof(b->client_name[i]), roles[i]);
    uv_timer_init(&b->loop, &b->tick_timer);
    uv_timer_init(&b->loop, &b->retry_timer);
    uv_timer_init(&b->loop, &b->later_timer);
    b->tick_timer.data = b->retry_timer.data = b->later_timer.data = b;
    uv_timer_start(&b->tick_timer, on_tick, b->tick_ms, b->tick_ms);
}

void hd_redis_conn_close(redis_broker_t *b)
{
    b->state = ST_DOWN;
    b->gen++;
    drop_conn(&b->cmd);
    drop_conn(&b->sub);
    drop_conn(&b->hb);
    uv_close((uv_handle_t *)&b->tick_timer, NULL);
    uv_close((uv_handle_t *)&b->retry_timer, NULL);
    uv_close((uv_handle_t *)&b->later_timer, NULL);
}
