/* SPDX-License-Identifier: MIT */
/*
 * redis.c: the Redis bridge. The broker protocol of pubsub.h, served by a Redis that many nodes
 * share, so a client may publish, subscribe and resume on any of them. Ids, history and the
 * id epoch live in Redis and change only inside the Redis Functions of herald.lua (one atomic
 * call per publish or read); the bridge keeps what is local to the node: which workers have
 * subscribers on which channel, and the order of deliveries to them. This file owns the bridge's
 * thread, mailbox, start, stop and stats, and hands the connections (redis_conn.c) the table of
 * callbacks (redis_answer.c, redis_queue.c); redis_bridge.h lists the other files and what they
 * share. What follows is the design of the whole bridge.
 *
 * One thread with its own loop, as the embedded broker, and three hiredis async connections
 * (libuv adapter) on it:
 *
 *   workers --breq--> mailbox --> bridge thread --cmd conn--> FCALL herald_publish_batch (32
 *         <--reply, delivery---         |                     messages a call), herald_read
 *                                       +------sub conn--> SUBSCRIBE P msg:<channel> (channels
 *                                       |                  with local subscribers) + heartbeat
 *                                       |                  + P ctl (operators' orders)
 *                                       +------hb conn---> PUBLISH P hb:<node> (the heartbeat)
 *
 * Bounds. A publish goes to Redis in calls of PUBLISH_CALL_MAX_MSGS messages, one after the
 * other (later publishes wait: b->in_parts), so no call holds Redis long; herald_read returns
 * at most 1000 messages; after a reconnect CATCHUP_IN_FLIGHT channels at a time are subscribed
 * again and caught up; the queue holds at most redis_max_pending messages (past it they are
 * dropped and the channels' subscribers get a gap notice: give_up_catchup).
 *
 * Ordering. A SUBSCRIBE is answered only after Redis confirmed the channel's subscription and a
 * herald_read issued after that confirmation returned: the read's sequence S is the new
 * subscriber's last_seq, every message up to S is in the read (or before since), and every later
 * one comes over pub/sub. Replies and pub/sub arrive on different sockets, so a message may
 * arrive before the read it follows; live messages therefore pass through one node-wide FIFO
 * (the queue) and a message waits there while its channel has a read in flight that was sent
 * before the message arrived, unless the message is at or below the sequence of a read answered
 * since. The FIFO keeps the global publish order across channels (multi-channel SSE ids rely on
 * it). Each channel remembers the last sequence it delivered (pos) and drops anything at or
 * below it: no duplicates.
 *
 * A PUBLISH waits (held) while one of its channels has a SUBSCRIBE that arrived before it and is
 * not answered: as with the embedded broker, a worker that subscribes and then publishes gets
 * its own message.
 *
 * Failures. A connect, command or heartbeat slower than redis_timeout, an error, or a closed
 * socket drops the connections (hd_redis_conn_lost): requests in flight fail with HD_EOVERLOAD,
 * and reconnection follows with exponential backoff and jitter. Once up again every channel
 * with local subscribers is subscribed anew and caught up from history after its pos; until all
 * are, deliveries wait, then the catch-up and what arrived meanwhile go out merged in sequence
 * order. If Redis lost its data the epoch changed: subscribers see ids of the new epoch, and
 * clients resuming with old ids are told of the gap.
 */
#include "redis_bridge.h"

/* Connected (again): channels subscribed again and caught up, the live revocations read,
 * presence mirrored again. */
static void on_up(redis_broker_t *b)
{
    hd_redis_on_up(b);
    hd_redis_load_revoked(b);
    hd_redis_presence_on_up(b);
}

static const hd_redis_events_t bridge_events = {
    .on_reply = hd_redis_on_reply,
    .on_message = hd_redis_on_message,
    .on_subscription = hd_redis_on_subscription,
    .on_control = hd_redis_on_control,
    .on_receipt = hd_redis_on_receipt,
    .on_up = on_up,
    .on_down = hd_redis_on_down,
    .sweep = hd_redis_sweep,
};

/* ---- the thread ---- */

static void on_wakeup(void *data)
{
    redis_broker_t *b = data;
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(&b->mailbox)) != NULL)
        hd_redis_handle(b, (hd_breq_t *)m);
    if (__atomic_load_n(&b->is_stopping, __ATOMIC_ACQUIRE)) {
        hd_redis_conn_close(b);
        hd_redis_presence_close(b);
        hd_wake_close(&b->wakeup);
    }
}

static void broker_main(void *arg)
{
    redis_broker_t *b = arg;
    hd_log_thread_name("redis");
    uv_update_time(&b->loop);
    hd_redis_conn_start(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
}

/* ---- the broker interface ---- */

static void redis_submit(hd_broker_t *base, hd_breq_t *r)
{
    redis_broker_t *b = (redis_broker_t *)base;
    hd_mpsc_push(&b->mailbox, &r->base);
    hd_wake_send(&b->wakeup);
}

static void redis_get_stats(hd_broker_t *base, hd_broker_stats_t *out)
{
    redis_broker_t *b = (redis_broker_t *)base;
    memset(out, 0, sizeof(*out));
    out->channels = __atomic_load_n(&b->stats.channels, __ATOMIC_RELAXED);
    out->messages_published = __atomic_load_n(&b->stats.messages_published, __ATOMIC_RELAXED);
    out->state = __atomic_load_n(&b->stats.state, __ATOMIC_RELAXED);
    out->reconnects = __atomic_load_n(&b->stats.reconnects, __ATOMIC_RELAXED);
    out->channels_refused = __atomic_load_n(&b->stats.channels_refused, __ATOMIC_RELAXED);
    out->presence_channels = __atomic_load_n(&b->stats.presence_channels, __ATOMIC_RELAXED);
    out->presence_refused = __atomic_load_n(&b->stats.presence_refused, __ATOMIC_RELAXED);
    out->receipts_dropped = __atomic_load_n(&b->stats.receipts_dropped, __ATOMIC_RELAXED);
}

static void free_chan_cb(hd_chan_t *ch, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(ch, rchan_t, ch);
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &c->pending)
    {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        hd_breq_free(ps->r);
        free(ps);
    }
    hd_redis_chan_free(b, c);
}

/* After the thread ended: whatever is left (nothing, after a clean shutdown). */
static void dispose(redis_broker_t *b)
{
    for (size_t i = b->q_head; i < b->q_len; i++)
        hd_message_unref(b->queue[i].m);
    free(b->queue);
    while (!hd_list_empty(&b->held)) {
        held_t *h = hd_container_of(b->held.next, held_t, link);
        hd_list_remove(&h->link);
        hd_breq_free(h->r);
        free(h);
    }
    hd_chantab_foreach(&b->chans, free_chan_cb, b);
    hd_chantab_dispose(&b->chans);
    hd_redis_presence_dispose(b);
    for (size_t i = 0; i < b->n_barriers; i++)
        hd_breq_free(b->barriers[i]);
    free(b->barriers);
    free(b->tickets_ring);
    hd_wake_dispose(&b->wakeup);
    uv_sem_destroy(&b->started);
    free(b);
}

static void stop_thread(redis_broker_t *b)
{
    __atomic_store_n(&b->is_stopping, 1, __ATOMIC_RELEASE);
    hd_wake_send(&b->wakeup);
    uv_thread_join(&b->thread);
    HD_ASSERT(uv_loop_close(&b->loop) == 0);
}

static void redis_free(hd_broker_t *base)
{
    redis_broker_t *b = (redis_broker_t *)base;
    stop_thread(b);
    dispose(b);
}

static const hd_broker_ops_t redis_ops = {
    .name = "redis",
    .submit = redis_submit,
    .get_stats = redis_get_stats,
    .free = redis_free,
};

int hd_broker_redis_new(hd_broker_t **out, hd_server_t *server, const hd_conf_t *conf, char *err,
                        size_t errlen)
{
    hd_redis_addr_t addr;
    int rc = hd_redis_url_parse(conf->redis ? conf->redis : "", &addr, err, errlen);
    if (rc < 0)
        return rc;
    redis_broker_t *b = hd_calloc(1, sizeof(*b));
    b->base.ops = &redis_ops;
    b->server = server;
    b->n_workers = hd_server_worker_count(server);
    b->addr = addr;
    if (addr.path[0])
        snprintf(b->where, sizeof(b->where), "%s db %u", addr.path, addr.db);
    else if (strchr(addr.host, ':'))
        snprintf(b->where, sizeof(b->where), "[%s]:%d/%u", addr.host, addr.port, addr.db);
    else
        snprintf(b->where, sizeof(b->where), "%s:%d/%u", addr.host, addr.port, addr.db);
    b->prefix_len = strlen(conf->redis_prefix);
    HD_ASSERT(b->prefix_len < sizeof(b->prefix) - 8);
    memcpy(b->prefix, conf->redis_prefix, b->prefix_len + 1);
    b->timeout_ms = conf->redis_timeout_ms;
    snprintf(b->settings[0], sizeof(b->settings[0]), "%u", conf->history_size);
    snprintf(b->settings[1], sizeof(b->settings[1]), "%llu",
             (unsigned long long)conf->history_ttl_ms);
    snprintf(b->settings[2], sizeof(b->settings[2]), "%zu", conf->history_max_bytes);
    snprintf(b->settings[3], sizeof(b->settings[3]), "%zu", conf->max_message_bytes);
    snprintf(b->settings[4], sizeof(b->settings[4]), "%llu",
             (unsigned long long)conf->idempotency_window_ms);
    /* max_channels: under Redis the cluster-wide budget of channels with history */
    snprintf(b->settings[5], sizeof(b->settings[5]), "%u", conf->max_channels);
    HD_CHANTAB_INIT(&b->chans, rchan_t, 256);
    hd_list_init(&b->held);
    hd_list_init(&b->catchup_wait);
    b->max_pending = conf->redis_max_pending;
    b->tickets_ring = hd_calloc(TICKET_RING, sizeof(*b->tickets_ring));
    hd_mpsc_init(&b->mailbox);
    uv_sem_init(&b->started, 0);
    if ((rc = uv_loop_init(&b->loop)) < 0) {
        snprintf(err, errlen, "redis: %s", uv_strerror(rc));
        hd_chantab_dispose(&b->chans);
        free(b->tickets_ring);
        uv_sem_destroy(&b->started);
        free(b);
        return rc;
    }
    if ((rc = hd_wake_init(&b->wakeup, &b->loop, on_wakeup, b)) < 0) {
        snprintf(err, errlen, "redis: cannot create its thread's wake-up: %s", uv_strerror(rc));
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        hd_chantab_dispose(&b->chans);
        free(b->tickets_ring);
        uv_sem_destroy(&b->started);
        free(b);
        return rc;
    }
    hd_redis_conn_init(b, &bridge_events);
    hd_redis_presence_init(b, conf->presence_lease_ms, conf->presence_max_channels);
    if ((rc = uv_thread_create(&b->thread, broker_main, b)) < 0) {
        snprintf(err, errlen, "redis: cannot start its thread: %s", uv_strerror(rc));
        hd_redis_conn_close(b);
        hd_redis_presence_close(b);
        hd_wake_close(&b->wakeup);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        dispose(b);
        return rc;
    }
    /* The thread connects; the start waits for its first outcome (at most redis_timeout). */
    uv_sem_wait(&b->started);
    if (b->start_rc < 0) {
        rc = b->start_rc;
        snprintf(err, errlen, "redis %s: %s", b->where, b->start_err);
        stop_thread(b);
        dispose(b);
        return rc;
    }
    *out = &b->base;
    return 0;
}
