/* SPDX-License-Identifier: MIT */
/*
 * redis_queue.c: the Redis bridge's ordered delivery queue and its catching up after reconnects.
 * Live messages pass through one node-wide FIFO (b->queue) and wait there while a read sent
 * before them is in flight on their channel; a channel is released when nothing is left for it
 * (hd_redis_maybe_release). After a reconnect the channels with subscribers are subscribed again
 * and caught up from history, CATCHUP_IN_FLIGHT at a time (b->catchup_wait), deliveries waiting
 * until all are; past redis_max_pending queued messages it gives up (give_up_catchup) and the
 * subscribers are told of a gap. The connections' up and down (hd_redis_on_up, hd_redis_on_down)
 * start and end it. Calls redis_chan.c and redis_conn.c.
 */
#include "redis_bridge.h"

static void end_catchup(redis_broker_t *b, rchan_t *c);

/*
 * A channel with no subscriber, no pending request and nothing queued leaves Redis pub/sub
 * (UNSUBSCRIBE, then its confirmation) and is freed.
 */
void hd_redis_maybe_release(redis_broker_t *b, rchan_t *c)
{
    if (c->in.n_workers == 0 && hd_list_linked(&c->catchup_link)) {
        /* nobody left to catch up for */
        hd_list_remove(&c->catchup_link);
        hd_list_init(&c->catchup_link);
        b->n_catchup_sent++; /* end_catchup counts one out */
        end_catchup(b, c);
    }
    if (c->in.n_workers || !hd_list_empty(&c->pending) || !hd_list_empty(&c->reads) || c->n_queued)
        return;
    if (b->state == ST_UP && (c->rstate == RS_SUBSCRIBED || c->rstate == RS_SUBSCRIBING)) {
        hd_redis_chan_unsubscribe(b, c);
        return;
    }
    if (b->state == ST_UP && c->rstate == RS_UNSUBSCRIBING)
        return;
    hd_redis_chan_free(b, c);
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

/* Into worker's mailbox, with a wake-up (the bridge holds no lock to wait for). */
static void post_delivery(void *arg, unsigned worker, hd_message_t *m)
{
    redis_broker_t *b = arg;
    hd_hub_post_delivery(hd_server_worker(b->server, worker), m);
}

void hd_redis_deliver_event(redis_broker_t *b, rchan_t *c, hd_message_t *m)
{
    hd_interest_fan_out(&c->in, m, post_delivery, b); /* no sequence: nothing to wait for */
    hd_message_unref(m);
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
    hd_interest_fan_out(&c->in, m, post_delivery, b);
}

static void enqueue(redis_broker_t *b, rchan_t *c, hd_message_t *m, uint64_t arrival)
{
    if (b->q_len == b->q_cap) {
        if (b->q_head > 0) {
            memmove(b->queue, b->queue + b->q_head, (b->q_len - b->q_head) * sizeof(*b->queue));
            b->q_len -= b->q_head;
            b->q_head = 0;
        }
        b->queue = hd_grow_array(b->queue, &b->q_cap, b->q_len + 1, sizeof(*b->queue), 64);
    }
    b->queue[b->q_len++] = (queued_t){c, m, arrival};
    c->n_queued++;
}

static void stop_catchup(hd_chan_t *ch, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(ch, rchan_t, ch);
    if (c->needs_catchup) {
        c->needs_catchup = 0;
        c->is_gap_pending = 1;
        if (c->rstate == RS_NONE && c->in.n_workers && b->state == ST_UP)
            hd_redis_chan_subscribe(b, c); /* its turn never came: live from now on */
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
    hd_chantab_foreach(&b->chans, stop_catchup, b);
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

static void sweep_one(hd_chan_t *ch, void *arg)
{
    hd_redis_maybe_release(arg, hd_container_of(ch, rchan_t, ch));
}

void hd_redis_sweep(redis_broker_t *b)
{
    hd_chantab_foreach(&b->chans, sweep_one, b);
}

/* A live message (the reference passes to the call). */
void hd_redis_on_live_message(redis_broker_t *b, rchan_t *c, hd_message_t *m)
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
void hd_redis_deliver_ready(redis_broker_t *b)
{
    if (b->n_catchup > 0 || b->is_in_conn_lost)
        return;
    while (b->q_head < b->q_len && !is_blocked(&b->queue[b->q_head])) {
        queued_t q = b->queue[b->q_head++];
        q.c->n_queued--;
        deliver(b, q.c, q.m);
        hd_message_unref(q.m);
        hd_redis_maybe_release(b, q.c);
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

/* ---- catching up ---- */

/* The catch-up read of a channel subscribed again (its turn was taken in start_catchup). */
void hd_redis_send_catchup(redis_broker_t *b, rchan_t *c)
{
    op_t *op = hd_redis_op_new(b, OP_CATCHUP);
    op->round = b->catchup_round;
    op->c = c;
    op->ticket = ++b->read_ticket;
    hd_list_insert_tail(&c->reads, &op->link);
    hd_redis_send_read(b, op, c->name, "sub", 1, c->pos_epoch, c->pos_seq, 0);
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
        hd_redis_chan_subscribe(b, c);
    else if (c->rstate == RS_SUBSCRIBED)
        hd_redis_send_catchup(b, c);
    /* RS_SUBSCRIBING: a new subscriber sent it; subscribed() reads */
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

void hd_redis_catchup_reply(redis_broker_t *b, op_t *op, const redisReply *rep, int is_current)
{
    rchan_t *c = op->c;
    hd_redis_read_t res;
    hd_list_remove(&op->link);
    if (!is_current || op->round != b->catchup_round) {
        /* hd_redis_conn_lost or give_up_catchup already ended this round of catching up */
        hd_redis_deliver_ready(b);
        hd_redis_maybe_release(b, c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR || hd_redis_read_answer(b, c->name, rep, &res) < 0) {
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
    hd_redis_deliver_ready(b);
    hd_redis_maybe_release(b, c);
}

/* ---- up and down ---- */

/* A channel that kept subscribers through an outage: subscribe again, then catch up. */
static void resubscribe(hd_chan_t *ch, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(ch, rchan_t, ch);
    if (c->in.n_workers == 0) {
        hd_redis_maybe_release(b, c);
        return;
    }
    if (!c->needs_catchup) {
        hd_redis_chan_subscribe(b, c);
        return;
    }
    b->n_catchup++;
    start_catchup(b, c);
}

void hd_redis_on_up(redis_broker_t *b)
{
    b->catchup_round++;
    b->n_catchup_sent = 0;
    hd_chantab_foreach(&b->chans, resubscribe, b);
    hd_redis_deliver_ready(b);
}

static void fail_unsent(hd_chan_t *ch, void *arg)
{
    redis_broker_t *b = arg;
    rchan_t *c = hd_container_of(ch, rchan_t, ch);
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &c->pending)
    {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        if (!ps->op) {
            hd_list_remove(&ps->link);
            hd_redis_release_err(b, ps->r, HD_EOVERLOAD);
            free(ps);
        }
    }
    c->rstate = RS_NONE;
    c->n_sub_sent = c->n_unsub_sent = 0;
    c->needs_catchup = c->in.n_workers > 0 && c->has_pos;
    hd_redis_maybe_release(b, c);
}

void hd_redis_on_down(redis_broker_t *b)
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
        hd_redis_release_err(b, h->r, HD_EOVERLOAD);
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
    hd_chantab_foreach(&b->chans, fail_unsent, b);
    hd_redis_deliver_ready(b);
}
