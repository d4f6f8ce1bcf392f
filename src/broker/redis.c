/* SPDX-License-Identifier: MIT */
/*
 * redis.c: the Redis bridge. The broker protocol of pubsub.h, served by a Redis that many nodes
 * share, so a client may publish, subscribe and resume on any of them. Ids, history and the
 * id epoch live in Redis and change only inside the Redis Functions of herald.lua (one atomic
 * call per publish or read); this file keeps what is local to the node: which workers have
 * subscribers on which channel, and the order of deliveries to them. redis_conn.c owns the
 * connections (redis_bridge.h: what the two share).
 *
 * One thread with its own loop, as the embedded broker, and three hiredis async connections
 * (libuv adapter) on it:
 *
 *   workers --breq--> mailbox --> bridge thread --cmd conn--> FCALL herald_publish_batch (32
 *         <--reply, delivery---         |                     messages a call), herald_read
 *                                       +------sub conn--> SUBSCRIBE P msg:<channel> (channels
 *                                       |                  with local subscribers) + heartbeat
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
#include "redis_reply.h"

#include <strings.h>

static void deliver_ready(redis_broker_t *b);
static void end_catchup(redis_broker_t *b, rchan_t *c);
static void maybe_release(redis_broker_t *b, rchan_t *c);

/* ---- replies to workers ---- */

static void reply(hd_breq_t *r)
{
    hd_breq_reply(r);
}

static void fail_now(hd_breq_t *r, int err)
{
    r->err = err;
    reply(r);
}

/* A request answered later: counted, so that a BARRIER waits for it. */
static void hold(redis_broker_t *b)
{
    b->n_inflight++;
}

static void release(redis_broker_t *b, hd_breq_t *r)
{
    reply(r);
    HD_ASSERT(b->n_inflight > 0);
    if (--b->n_inflight == 0) {
        for (size_t i = 0; i < b->n_barriers; i++)
            reply(b->barriers[i]);
        b->n_barriers = 0;
    }
}

static void release_err(redis_broker_t *b, hd_breq_t *r, int err)
{
    r->err = err;
    release(b, r);
}

/* ---- messages from Redis ---- */

/* What every message from Redis tells the node: its epoch (a new one: Redis lost its data), and
 * the highest sequence seen (messages published, for /stats). */
static void note_seq(redis_broker_t *b, uint64_t epoch, uint64_t seq)
{
    hd_redis_note_epoch(b, epoch);
    if (seq > b->stats.messages_published)
        STAT_SET(b, messages_published, seq);
}

static hd_message_t *parse_pubsub(redis_broker_t *b, const rchan_t *c, const char *s, size_t len)
{
    hd_message_t *m = hd_redis_parse_pubsub(c->name, c->name_len, s, len);
    if (m)
        note_seq(b, m->epoch, m->seq);
    return m;
}

typedef hd_redis_read_t read_result_t;

/* Parses herald_read's answer. Returns 0, or -1 (nothing allocated). */
static int parse_read(redis_broker_t *b, const char *channel, const redisReply *rep,
                      read_result_t *out)
{
    if (hd_redis_parse_read(channel, strlen(channel), rep, out) < 0)
        return -1;
    note_seq(b, out->epoch, out->cur);
    for (size_t i = 0; i < out->n; i++)
        hd_redis_note_epoch(b, out->msgs[i]->epoch);
    return 0;
}

static void discard_result(read_result_t *res)
{
    hd_redis_read_dispose(res);
}

/* ---- channels ---- */

static rchan_t *find_chan(redis_broker_t *b, const char *name, size_t len)
{
    hd_hnode_t *n = hd_hmap_find(&b->chans, name, len);
    return n ? hd_container_of(n, rchan_t, node) : NULL;
}

static rchan_t *get_chan(redis_broker_t *b, const char *name, size_t len)
{
    rchan_t *c = find_chan(b, name, len);
    if (c)
        return c;
    c = hd_calloc(1, sizeof(*c));
    memcpy(c->name, name, len);
    c->name_len = (uint8_t)len;
    c->subs = hd_calloc(b->n_workers, sizeof(*c->subs));
    hd_list_init(&c->pending);
    hd_list_init(&c->reads);
    hd_list_init(&c->catchup_link);
    c->node.key = c->name;
    c->node.key_len = len;
    hd_hmap_insert(&b->chans, &c->node);
    STAT_SET(b, channels, b->chans.n);
    return c;
}

static void free_chan(redis_broker_t *b, rchan_t *c)
{
    hd_hmap_remove(&b->chans, &c->node);
    free(c->subs);
    free(c);
    STAT_SET(b, channels, b->chans.n);
}

static void send_subscribe(redis_broker_t *b, rchan_t *c)
{
    c->rstate = RS_SUBSCRIBING;
    c->n_sub_sent++;
    hd_redis_send_sub(b, "SUBSCRIBE", c->name, c->name_len);
}

static void send_unsubscribe(redis_broker_t *b, rchan_t *c)
{
    c->rstate = RS_UNSUBSCRIBING;
    c->n_unsub_sent++;
    hd_redis_send_sub(b, "UNSUBSCRIBE", c->name, c->name_len);
}

/* FCALL herald_read for op (its channel in op->c or op->r). */
static void send_read(redis_broker_t *b, op_t *op, const char *channel, const char *mode,
                      int has_since, uint64_t since_epoch, uint64_t since_seq, size_t limit)
{
    char key[KEY_MAX], since[HD_ID_MAX] = "", lim[24];
    size_t channel_len = strlen(channel);
    size_t key_len = hd_redis_key(b, key, "ch:", channel, channel_len);
    if (has_since)
        hd_id_format(since, sizeof(since), since_epoch, since_seq);
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *argv[] = {"FCALL", "herald_read", "1", key, channel, mode, since, lim};
    size_t lens[HD_ARRAY_SIZE(argv)];
    for (size_t i = 0; i < HD_ARRAY_SIZE(argv); i++)
        lens[i] = strlen(argv[i]);
    lens[3] = key_len;
    hd_redis_send(b, op, (int)HD_ARRAY_SIZE(argv), argv, lens);
}

/*
 * A channel with no subscriber, no pending request and nothing queued leaves Redis pub/sub
 * (UNSUBSCRIBE, then its confirmation) and is freed.
 */
static void maybe_release(redis_broker_t *b, rchan_t *c)
{
    if (!c->subs_total && hd_list_linked(&c->catchup_link)) {
        /* nobody left to catch up for */
        hd_list_remove(&c->catchup_link);
        hd_list_init(&c->catchup_link);
        b->n_catchup_sent++; /* end_catchup counts one out */
        end_catchup(b, c);
    }
    if (c->subs_total || !hd_list_empty(&c->pending) || !hd_list_empty(&c->reads) || c->n_queued)
        return;
    if (b->state == ST_UP && (c->rstate == RS_SUBSCRIBED || c->rstate == RS_SUBSCRIBING)) {
        send_unsubscribe(b, c);
        return;
    }
    if (b->state == ST_UP && c->rstate == RS_UNSUBSCRIBING)
        return;
    free_chan(b, c);
}

/* ---- deliveries ---- */

static int is_blocked(const queued_t *q)
{
    const rchan_t *c = q->c;
    if (hd_list_empty(&c->reads))
        return 0;
    const op_t *oldest = hd_container_of(c->reads.next, op_t, link);
    if (oldest->ticket > q->arrival)
        return 0; /* sent after the message arrived: its answer already covers it */
    if (c->has_floor && q->m->epoch == c->floor_epoch && q->m->seq <= c->floor_seq)
        return 0; /* an answered read covers it, and the pending ones come later */
    return 1;
}

static void deliver(redis_broker_t *b, rchan_t *c, hd_message_t *m)
{
    if (c->has_pos && m->epoch == c->pos_epoch && m->seq <= c->pos_seq)
        return; /* already delivered */
    c->has_pos = 1;
    c->pos_epoch = m->epoch;
    c->pos_seq = m->seq;
    if (c->is_gap_pending) {
        m->is_after_gap = 1; /* this node's copy, not shared with anyone yet */
        c->is_gap_pending = 0;
    }
    for (unsigned k = 0; k < b->n_workers; k++)
        if (c->subs[k])
            hd_hub_post_delivery(hd_server_worker(b->server, k), hd_message_ref(m));
}

static void enqueue(redis_broker_t *b, rchan_t *c, hd_message_t *m, uint64_t arrival)
{
    if (b->q_len == b->q_cap) {
        if (b->q_head > 0) {
            memmove(b->queue, b->queue + b->q_head, (b->q_len - b->q_head) * sizeof(*b->queue));
            b->q_len -= b->q_head;
            b->q_head = 0;
        }
        if (b->q_len == b->q_cap) {
            b->q_cap = b->q_cap ? b->q_cap * 2 : 64;
            b->queue = hd_realloc(b->queue, b->q_cap * sizeof(*b->queue));
        }
    }
    b->queue[b->q_len++] = (queued_t){c, m, arrival};
    c->n_queued++;
}

static void stop_catchup(hd_hnode_t *n, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(n, rchan_t, node);
    if (c->needs_catchup) {
        c->needs_catchup = 0;
        c->is_gap_pending = 1;
        if (c->rstate == RS_NONE && c->subs_total && b->state == ST_UP)
            send_subscribe(b, c); /* its turn never came: live from now on */
    }
}

/*
 * The delivery queue reached redis_max_pending (while catching up, or behind a slow read): stop
 * holding deliveries. What was held is dropped and every channel concerned (a message dropped,
 * or not caught up yet) tells its subscribers of the gap before its next message; catch-up reads
 * still in flight are ignored when they come (a new round). Channels left with nothing to do
 * are released on the next loop pass (the caller may be using one).
 */
static void give_up_catchup(redis_broker_t *b)
{
    size_t dropped = b->q_len - b->q_head;
    unsigned not_caught_up = b->n_catchup;
    for (size_t i = b->q_head; i < b->q_len; i++) {
        queued_t q = b->queue[i];
        q.c->is_gap_pending = 1;
        q.c->n_queued--;
        hd_message_unref(q.m);
    }
    b->q_head = b->q_len = 0;
    while (!hd_list_empty(&b->catchup_wait)) {
        rchan_t *c = hd_container_of(b->catchup_wait.next, rchan_t, catchup_link);
        hd_list_remove(&c->catchup_link);
        hd_list_init(&c->catchup_link);
    }
    hd_hmap_foreach(&b->chans, stop_catchup, b);
    if (not_caught_up)
        hd_log_warn("redis %s: catching up gave up: %zu live messages held (redis_max_pending); "
                    "%u channel(s) not caught up; their subscribers are told of a gap",
                    b->where, dropped, not_caught_up);
    else
        hd_log_warn("redis %s: delivery queue full: %zu live messages held behind a read "
                    "(redis_max_pending) dropped; their subscribers are told of a gap",
                    b->where, dropped);
    b->n_catchup = 0;
    b->n_catchup_sent = 0;
    b->catchup_round++;
    hd_redis_sweep_later(b);
}

static void sweep_one(hd_hnode_t *n, void *arg)
{
    maybe_release(arg, hd_container_of(n, rchan_t, node));
}

static void bridge_sweep(redis_broker_t *b)
{
    hd_hmap_foreach(&b->chans, sweep_one, b);
}

/* A live message (the reference passes to the call). */
static void on_live_message(redis_broker_t *b, rchan_t *c, hd_message_t *m)
{
    queued_t q = {c, m, b->read_ticket};
    if (b->q_len - b->q_head >= b->max_pending)
        give_up_catchup(b);
    if (b->q_head == b->q_len && b->n_catchup == 0 && !is_blocked(&q)) {
        deliver(b, c, m);
        hd_message_unref(m);
        return;
    }
    enqueue(b, c, m, b->read_ticket);
}

/* Delivers from the head of the queue what no read holds back. */
static void deliver_ready(redis_broker_t *b)
{
    if (b->n_catchup > 0 || b->is_in_conn_lost)
        return;
    while (b->q_head < b->q_len && !is_blocked(&b->queue[b->q_head])) {
        queued_t q = b->queue[b->q_head++];
        q.c->n_queued--;
        deliver(b, q.c, q.m);
        hd_message_unref(q.m);
        maybe_release(b, q.c);
    }
    if (b->q_head == b->q_len)
        b->q_head = b->q_len = 0;
}

static int by_epoch_seq(const void *x, const void *y)
{
    const hd_message_t *a = ((const queued_t *)x)->m, *c = ((const queued_t *)y)->m;
    if (a->epoch != c->epoch)
        return a->epoch < c->epoch ? -1 : 1;
    return a->seq < c->seq ? -1 : a->seq > c->seq;
}

static void sort_queue(redis_broker_t *b)
{
    if (b->q_len - b->q_head > 1)
        qsort(b->queue + b->q_head, b->q_len - b->q_head, sizeof(*b->queue), by_epoch_seq);
}

/* ---- requests ---- */

static int publish_blocked(redis_broker_t *b, const held_t *h)
{
    for (size_t i = 0; i < h->r->n_msgs; i++) {
        const hd_message_t *m = h->r->msgs[i];
        rchan_t *c = find_chan(b, m->channel, m->channel_len);
        if (c && !hd_list_empty(&c->pending) &&
            hd_container_of(c->pending.next, pend_sub_t, link)->ticket < h->ticket)
            return 1;
    }
    return 0;
}

/*
 * FCALL herald_publish_batch for the next messages of r from `first`: at most
 * PUBLISH_CALL_MAX_MSGS of them and PUBLISH_CALL_MAX_BYTES of payload (at least one), so that
 * the call stays short inside Redis. publish_reply sends the next part when this one is answered.
 */
static void send_publish(redis_broker_t *b, hd_breq_t *r, size_t first)
{
    size_t n = 0, bytes = 0;
    while (first + n < r->n_msgs && n < PUBLISH_CALL_MAX_MSGS &&
           (n == 0 || bytes + r->msgs[first + n]->len <= PUBLISH_CALL_MAX_BYTES))
        bytes += r->msgs[first + n++]->len;
    size_t argc = 3 + 5 * n;
    const char *argv[3 + 5 * PUBLISH_CALL_MAX_MSGS];
    size_t lens[3 + 5 * PUBLISH_CALL_MAX_MSGS];
    char keys[PUBLISH_CALL_MAX_MSGS][KEY_MAX], nkeys[24];
    snprintf(nkeys, sizeof(nkeys), "%zu", n);
    argv[0] = "FCALL";
    argv[1] = "herald_publish_batch";
    argv[2] = nkeys;
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < n; i++) {
        hd_message_t *m = r->msgs[first + i];
        lens[3 + i] = hd_redis_key(b, keys[i], "ch:", m->channel, m->channel_len);
        argv[3 + i] = keys[i];
        const char **a = argv + 3 + n + 4 * i;
        size_t *l = lens + 3 + n + 4 * i;
        a[0] = m->channel;
        l[0] = m->channel_len;
        a[1] = m->data;
        l[1] = m->len;
        a[2] = m->content_type;
        l[2] = strlen(m->content_type);
        a[3] = m->idem_key ? m->idem_key : "";
        l[3] = strlen(a[3]);
    }
    op_t *op = hd_redis_op_new(b, OP_PUBLISH);
    op->r = r;
    op->first = first;
    op->n = n;
    b->in_parts = first + n < r->n_msgs || first > 0 ? r : NULL;
    hd_redis_send(b, op, (int)argc, argv, lens);
    for (size_t i = 0; i < n; i++) { /* hiredis copied them: Redis keeps the record */
        free(r->msgs[first + i]->idem_key);
        r->msgs[first + i]->idem_key = NULL;
    }
}

/* Sends the held publishes no earlier subscribe holds back any more, in order. */
static void drain_held(redis_broker_t *b)
{
    while (!hd_list_empty(&b->held) && b->state == ST_UP && !b->in_parts) {
        held_t *h = hd_container_of(b->held.next, held_t, link);
        if (publish_blocked(b, h))
            return;
        hd_list_remove(&h->link);
        hd_breq_t *r = h->r;
        free(h);
        send_publish(b, r, 0);
    }
}

static void do_publish(redis_broker_t *b, hd_breq_t *r, uint64_t ticket)
{
    if (b->state != ST_UP) {
        fail_now(r, HD_EOVERLOAD);
        return;
    }
    if (r->n_msgs == 0) {
        reply(r);
        return;
    }
    hold(b);
    held_t h = {.r = r, .ticket = ticket};
    if (hd_list_empty(&b->held) && !b->in_parts && !publish_blocked(b, &h)) {
        send_publish(b, r, 0);
        return;
    }
    held_t *copy = hd_malloc(sizeof(*copy));
    *copy = h;
    hd_list_insert_tail(&b->held, &copy->link);
}

static void issue_sub_read(redis_broker_t *b, rchan_t *c, pend_sub_t *ps)
{
    op_t *op = hd_redis_op_new(b, OP_SUB_READ);
    op->c = c;
    op->ps = ps;
    op->r = ps->r;
    op->ticket = ++b->read_ticket;
    ps->op = op;
    hd_list_insert_tail(&c->reads, &op->link);
    hd_breq_t *r = ps->r;
    /* Like the embedded broker: all history after since (no limit), none without since. */
    send_read(b, op, c->name, "sub", r->has_since, r->since_epoch, r->since_seq, 0);
}

/* The catch-up read of a channel subscribed again (its turn was taken in start_catchup). */
static void send_catchup(redis_broker_t *b, rchan_t *c)
{
    op_t *op = hd_redis_op_new(b, OP_CATCHUP);
    op->round = b->catchup_round;
    op->c = c;
    op->ticket = ++b->read_ticket;
    hd_list_insert_tail(&c->reads, &op->link);
    send_read(b, op, c->name, "sub", 1, c->pos_epoch, c->pos_seq, 0);
}

/*
 * After a reconnect a channel catches up in its turn: at most CATCHUP_IN_FLIGHT channels at a
 * time are subscribed again and read (the others wait in b->catchup_wait, receiving nothing
 * live yet: their read comes after their subscription), so that the live messages held while
 * catching up are those of a few channels, not of all.
 */
static void start_catchup(redis_broker_t *b, rchan_t *c)
{
    if (b->n_catchup_sent >= CATCHUP_IN_FLIGHT) {
        hd_list_insert_tail(&b->catchup_wait, &c->catchup_link);
        return;
    }
    b->n_catchup_sent++;
    if (c->rstate == RS_NONE)
        send_subscribe(b, c);
    else if (c->rstate == RS_SUBSCRIBED)
        send_catchup(b, c);
    /* RS_SUBSCRIBING: a new subscriber sent it; subscribed() reads */
}

static void do_subscribe(redis_broker_t *b, hd_breq_t *r, uint64_t ticket)
{
    if (b->state != ST_UP) {
        fail_now(r, HD_EOVERLOAD);
        return;
    }
    rchan_t *c = get_chan(b, r->channel, strlen(r->channel));
    pend_sub_t *ps = hd_calloc(1, sizeof(*ps));
    ps->r = r;
    ps->ticket = ticket;
    hd_list_insert_tail(&c->pending, &ps->link);
    hold(b);
    if (c->rstate == RS_SUBSCRIBED)
        issue_sub_read(b, c, ps);
    else if (c->rstate != RS_SUBSCRIBING)
        send_subscribe(b, c); /* the read follows its confirmation */
}

static void do_unsubscribe(redis_broker_t *b, hd_breq_t *r)
{
    rchan_t *c = find_chan(b, r->channel, strlen(r->channel));
    if (c && c->subs[r->worker->id] > 0) {
        c->subs[r->worker->id]--;
        c->subs_total--;
        maybe_release(b, c);
    }
    hd_breq_free(r);
}

static void do_read(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        fail_now(r, HD_EOVERLOAD);
        return;
    }
    hold(b);
    int is_info = r->type == HD_BREQ_INFO;
    op_t *op = hd_redis_op_new(b, is_info ? OP_INFO : OP_HISTORY);
    op->r = r;
    send_read(b, op, r->channel, is_info ? "info" : "hist", r->has_since, r->since_epoch,
              r->since_seq, is_info ? 0 : r->limit);
}

static void do_barrier(redis_broker_t *b, hd_breq_t *r)
{
    if (b->n_inflight == 0) {
        reply(r);
        return;
    }
    if (b->n_barriers == b->cap_barriers) {
        b->cap_barriers = b->cap_barriers ? b->cap_barriers * 2 : 8;
        b->barriers = hd_realloc(b->barriers, b->cap_barriers * sizeof(*b->barriers));
    }
    b->barriers[b->n_barriers++] = r;
}

static void handle(redis_broker_t *b, hd_breq_t *r)
{
    uint64_t ticket = ++b->ticket;
    switch (r->type) {
    case HD_BREQ_PUBLISH:
        do_publish(b, r, ticket);
        break;
    case HD_BREQ_SUBSCRIBE:
        do_subscribe(b, r, ticket);
        break;
    case HD_BREQ_UNSUBSCRIBE:
        do_unsubscribe(b, r);
        break;
    case HD_BREQ_HISTORY:
    case HD_BREQ_INFO:
        do_read(b, r);
        break;
    case HD_BREQ_BARRIER:
        do_barrier(b, r);
        break;
    default:
        fail_now(r, HD_EBADREQ);
    }
}

/* ---- answers from Redis ---- */

/* An error reply to a publish or read: what the client is told, and whether to reconnect. */
static int map_error(redis_broker_t *b, const char *what, const redisReply *rep)
{
    const char *s = rep->str;
    if (strncmp(s, "ERR herald: message larger", 26) == 0)
        return HD_EBODYTOOBIG;
    if (strncmp(s, "ERR herald: channel budget", 26) == 0) {
        STAT_SET(b, channels_refused, b->stats.channels_refused + 1);
        uint64_t now = hd_redis_now_ms(b);
        if (now - b->budget_logged_ms >= 1000) {
            hd_log_warn("redis %s: a new channel refused: %.200s", b->where, s + 12);
            b->budget_logged_ms = now;
        }
        return HD_ECHANNELS; /* as max_channels with the embedded broker */
    }
    if (strncmp(s, "ERR herald: ", 12) == 0)
        return HD_EBADREQ;
    /* Once a second at most: a Redis out of memory refuses every publish. */
    uint64_t now = hd_redis_now_ms(b);
    if (now - b->error_logged_ms >= 1000) {
        if (b->errors_unlogged)
            hd_log_warn("redis %s: %s failed: %.200s (and %llu errors not logged before)", b->where,
                        what, s, (unsigned long long)b->errors_unlogged);
        else
            hd_log_warn("redis %s: %s failed: %.200s", b->where, what, s);
        b->error_logged_ms = now;
        b->errors_unlogged = 0;
    } else {
        b->errors_unlogged++;
    }
    if (strstr(s, "Function not found") || strncmp(s, "READONLY", 8) == 0 ||
        strncmp(s, "NOAUTH", 6) == 0 || strncmp(s, "LOADING", 7) == 0 ||
        strncmp(s, "MASTERDOWN", 10) == 0)
        hd_redis_reconnect_later(b, s);
    return HD_EOVERLOAD;
}

/* The answer to one part of a publish. Returns 1 if it sent the next part. */
static int publish_part_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    if (!rep) {
        release_err(b, r, HD_EOVERLOAD);
        return 0;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        release_err(b, r, map_error(b, "publish", rep));
        return 0;
    }
    if (hd_redis_parse_publish(rep, r->msgs + op->first, op->n) < 0)
        goto bad;
    for (size_t i = 0; i < op->n; i++)
        note_seq(b, r->msgs[op->first + i]->epoch, r->msgs[op->first + i]->seq);
    if (op->first + op->n < r->n_msgs) {
        /* The next part, unless the connection went away meanwhile (then the parts sent are
         * applied and the rest is not: the client is told 503, as for any publish in flight). */
        if (b->state != ST_UP) {
            release_err(b, r, HD_EOVERLOAD);
            return 0;
        }
        send_publish(b, r, op->first + op->n);
        return 1;
    }
    r->epoch = r->msgs[r->n_msgs - 1]->epoch;
    r->last_seq = r->msgs[r->n_msgs - 1]->seq;
    release(b, r);
    return 0;
bad:
    hd_log_error("redis %s: unexpected answer to herald_publish_batch", b->where);
    release_err(b, r, HD_EOVERLOAD);
    return 0;
}

/*
 * A publish in several parts holds later publishes back (b->in_parts) until its last part is
 * answered, so that the node's publishes keep their arrival order.
 */
static void publish_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    int was_in_parts = b->in_parts == op->r;
    if (publish_part_reply(b, op, rep) || !was_in_parts)
        return;
    b->in_parts = NULL;
    drain_held(b);
}

static void sub_read_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    rchan_t *c = op->c;
    pend_sub_t *ps = op->ps;
    hd_breq_t *r = op->r;
    read_result_t res;
    hd_list_remove(&op->link);
    hd_list_remove(&ps->link);
    free(ps);
    int err = 0;
    if (!rep)
        err = HD_EOVERLOAD;
    else if (rep->type == REDIS_REPLY_ERROR)
        err = map_error(b, "subscribe", rep);
    else if (parse_read(b, c->name, rep, &res) < 0) {
        hd_log_error("redis %s: unexpected answer to herald_read", b->where);
        err = HD_EOVERLOAD;
    }
    if (err) {
        release_err(b, r, err);
    } else {
        r->epoch = res.epoch;
        r->last_seq = res.cur;
        r->gap = (uint8_t)res.gap;
        if (r->has_since) {
            r->msgs = res.msgs;
            r->n_msgs = res.n;
        } else {
            discard_result(&res);
        }
        c->subs[r->worker->id]++;
        c->subs_total++;
        if (!c->has_pos) {
            c->has_pos = 1;
            c->pos_epoch = res.epoch;
            c->pos_seq = res.cur;
        }
        c->has_floor = 1;
        c->floor_epoch = res.epoch;
        c->floor_seq = res.cur;
        release(b, r);
    }
    deliver_ready(b);
    drain_held(b);
    maybe_release(b, c);
}

/* A channel's catch-up is over (or not needed any more): the next one waiting may go. */
static void end_catchup(redis_broker_t *b, rchan_t *c)
{
    c->needs_catchup = 0;
    if (b->n_catchup_sent > 0)
        b->n_catchup_sent--;
    while (!hd_list_empty(&b->catchup_wait) && b->n_catchup_sent < CATCHUP_IN_FLIGHT) {
        rchan_t *next = hd_container_of(b->catchup_wait.next, rchan_t, catchup_link);
        hd_list_remove(&next->catchup_link);
        hd_list_init(&next->catchup_link);
        start_catchup(b, next);
    }
    if (--b->n_catchup == 0) {
        sort_queue(b);
        hd_log_info("redis %s: every channel caught up", b->where);
    }
}

static void catchup_reply(redis_broker_t *b, op_t *op, const redisReply *rep, int is_current)
{
    rchan_t *c = op->c;
    read_result_t res;
    hd_list_remove(&op->link);
    if (!is_current || op->round != b->catchup_round) {
        /* hd_redis_conn_lost or give_up_catchup already ended this round of catching up */
        deliver_ready(b);
        maybe_release(b, c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR || parse_read(b, c->name, rep, &res) < 0) {
        /* Deliveries stay held (n_catchup) until the reconnect drops what may have gaps. */
        hd_log_error("redis %s: catching up channel %s failed: %.200s", b->where, c->name,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected answer");
        hd_redis_reconnect_later(b, "catching up failed");
        return;
    }
    if (res.gap) {
        hd_log_warn("redis %s: channel %s: history no longer holds every message published "
                    "while this node was disconnected; its subscribers missed some",
                    b->where, c->name);
        c->is_gap_pending = 1;
    }
    size_t i = 0;
    for (; i < res.n; i++) {
        if (b->q_len - b->q_head >= b->max_pending)
            give_up_catchup(b);
        if (op->round != b->catchup_round)
            break;
        enqueue(b, c, res.msgs[i], 0);
    }
    for (; i < res.n; i++)
        hd_message_unref(res.msgs[i]);
    free(res.msgs);
    c->has_floor = 1;
    c->floor_epoch = res.epoch;
    c->floor_seq = res.cur;
    if (op->round == b->catchup_round)
        end_catchup(b, c);
    deliver_ready(b);
    maybe_release(b, c);
}

static void read_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    read_result_t res;
    if (!rep) {
        release_err(b, r, HD_EOVERLOAD);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        release_err(b, r, map_error(b, "read", rep));
        return;
    }
    if (parse_read(b, r->channel, rep, &res) < 0) {
        hd_log_error("redis %s: unexpected answer to herald_read", b->where);
        release_err(b, r, HD_EOVERLOAD);
        return;
    }
    r->epoch = res.epoch;
    r->last_seq = res.cur;
    r->gap = (uint8_t)res.gap;
    if (op->kind == OP_INFO) {
        rchan_t *c = find_chan(b, r->channel, strlen(r->channel));
        r->subscribers = c ? c->subs_total : 0;
        r->found = res.found || r->subscribers > 0;
        r->history_len = res.history_len;
        memcpy(r->last_id, res.last_id, sizeof(r->last_id));
        discard_result(&res);
    } else {
        r->msgs = res.msgs;
        r->n_msgs = res.n;
    }
    release(b, r);
}

static void bridge_on_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    switch (op->kind) {
    case OP_PUBLISH:
        publish_reply(b, op, rep);
        break;
    case OP_SUB_READ:
        sub_read_reply(b, op, rep);
        break;
    case OP_CATCHUP:
        catchup_reply(b, op, rep, rep != NULL); /* NULL: stale (conn_lost ran) */
        break;
    default:
        read_reply(b, op, rep);
        break;
    }
}

static void subscribed(redis_broker_t *b, rchan_t *c)
{
    c->rstate = RS_SUBSCRIBED;
    if (c->needs_catchup && hd_list_linked(&c->catchup_link)) {
        /* a new subscriber subscribed it before its turn: it takes one now */
        hd_list_remove(&c->catchup_link);
        hd_list_init(&c->catchup_link);
        b->n_catchup_sent++;
    }
    if (c->needs_catchup)
        send_catchup(b, c);
    hd_list_t *pos;
    for (pos = c->pending.next; pos != &c->pending; pos = pos->next) {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        if (!ps->op)
            issue_sub_read(b, c, ps);
    }
}

static void bridge_on_message(redis_broker_t *b, const char *channel, size_t len, const char *data,
                              size_t data_len)
{
    rchan_t *c = find_chan(b, channel, len);
    if (!c)
        return;
    hd_message_t *m = parse_pubsub(b, c, data, data_len);
    if (!m) {
        hd_log_info("redis %s: ignoring a malformed message on channel %s (publish with FCALL "
                    "herald_publish)",
                    b->where, c->name);
        return;
    }
    on_live_message(b, c, m);
}

static void bridge_on_subscription(redis_broker_t *b, const char *channel, size_t len,
                                   int is_subscribe)
{
    rchan_t *c = find_chan(b, channel, len);
    if (!c)
        return;
    if (is_subscribe) {
        if (c->n_sub_sent > 0 && --c->n_sub_sent == 0 && c->rstate == RS_SUBSCRIBING)
            subscribed(b, c);
    } else if (c->n_unsub_sent > 0 && --c->n_unsub_sent == 0 && c->rstate == RS_UNSUBSCRIBING) {
        c->rstate = RS_NONE;
        maybe_release(b, c);
    }
}

/* ---- up and down ---- */

/* A channel that kept subscribers through an outage: subscribe again, then catch up. */
static void resubscribe(hd_hnode_t *n, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(n, rchan_t, node);
    if (c->subs_total == 0) {
        maybe_release(b, c);
        return;
    }
    if (!c->needs_catchup) {
        send_subscribe(b, c);
        return;
    }
    b->n_catchup++;
    start_catchup(b, c);
}

static void bridge_on_up(redis_broker_t *b)
{
    b->catchup_round++;
    b->n_catchup_sent = 0;
    hd_hmap_foreach(&b->chans, resubscribe, b);
    deliver_ready(b);
}

static void fail_unsent(hd_hnode_t *n, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(n, rchan_t, node);
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &c->pending)
    {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        if (!ps->op) {
            hd_list_remove(&ps->link);
            release_err(b, ps->r, HD_EOVERLOAD);
            free(ps);
        }
    }
    c->rstate = RS_NONE;
    c->n_sub_sent = c->n_unsub_sent = 0;
    c->needs_catchup = c->subs_total > 0 && c->has_pos;
    maybe_release(b, c);
}

static void bridge_on_down(redis_broker_t *b)
{
    b->n_catchup = 0;
    b->n_catchup_sent = 0;
    b->catchup_round++;
    while (!hd_list_empty(&b->catchup_wait)) {
        rchan_t *c = hd_container_of(b->catchup_wait.next, rchan_t, catchup_link);
        hd_list_remove(&c->catchup_link);
        hd_list_init(&c->catchup_link);
    }
    while (!hd_list_empty(&b->held)) {
        held_t *h = hd_container_of(b->held.next, held_t, link);
        hd_list_remove(&h->link);
        release_err(b, h->r, HD_EOVERLOAD);
        free(h);
    }
    /* Messages of channels that were still catching up may not follow their pos: drop them. */
    size_t k = b->q_head;
    for (size_t i = b->q_head; i < b->q_len; i++) {
        queued_t q = b->queue[i];
        if (q.c->needs_catchup) {
            q.c->n_queued--;
            hd_message_unref(q.m);
        } else {
            b->queue[k++] = q;
        }
    }
    b->q_len = k;
    sort_queue(b);
    hd_hmap_foreach(&b->chans, fail_unsent, b);
    deliver_ready(b);
}

static const hd_redis_events_t bridge_events = {
    .on_reply = bridge_on_reply,
    .on_message = bridge_on_message,
    .on_subscription = bridge_on_subscription,
    .on_up = bridge_on_up,
    .on_down = bridge_on_down,
    .sweep = bridge_sweep,
};

/* ---- the thread ---- */

static void on_wakeup(uv_async_t *a)
{
    redis_broker_t *b = a->data;
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(&b->mailbox)) != NULL)
        handle(b, (hd_breq_t *)m);
    if (__atomic_load_n(&b->is_stopping, __ATOMIC_ACQUIRE)) {
        hd_redis_conn_close(b);
        uv_close((uv_handle_t *)&b->wakeup, NULL);
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
    uv_async_send(&b->wakeup);
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
}

static void free_chan_node(hd_hnode_t *n, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(n, rchan_t, node);
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &c->pending)
    {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        hd_breq_free(ps->r);
        free(ps);
    }
    free_chan(b, c);
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
    hd_hmap_foreach(&b->chans, free_chan_node, b);
    hd_hmap_dispose(&b->chans);
    for (size_t i = 0; i < b->n_barriers; i++)
        hd_breq_free(b->barriers[i]);
    free(b->barriers);
    uv_sem_destroy(&b->started);
    free(b);
}

static void stop_thread(redis_broker_t *b)
{
    __atomic_store_n(&b->is_stopping, 1, __ATOMIC_RELEASE);
    uv_async_send(&b->wakeup);
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
    hd_hmap_init(&b->chans, 256);
    hd_list_init(&b->held);
    hd_list_init(&b->catchup_wait);
    b->max_pending = conf->redis_max_pending;
    hd_mpsc_init(&b->mailbox);
    uv_sem_init(&b->started, 0);
    if ((rc = uv_loop_init(&b->loop)) < 0) {
        snprintf(err, errlen, "redis: %s", uv_strerror(rc));
        hd_hmap_dispose(&b->chans);
        uv_sem_destroy(&b->started);
        free(b);
        return rc;
    }
    uv_async_init(&b->loop, &b->wakeup, on_wakeup);
    b->wakeup.data = b;
    hd_redis_conn_init(b, &bridge_events);
    if ((rc = uv_thread_create(&b->thread, broker_main, b)) < 0) {
        snprintf(err, errlen, "redis: cannot start its thread: %s", uv_strerror(rc));
        hd_redis_conn_close(b);
        uv_close((uv_handle_t *)&b->wakeup, NULL);
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
