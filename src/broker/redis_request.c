/* SPDX-License-Identifier: MIT */
/*
 * redis_request.c: the Redis bridge's requests from workers (hd_redis_handle, in arrival order):
 * a PUBLISH sent as FCALL herald_publish_batch in bounded parts (PUBLISH_CALL_MAX_*, later
 * publishes held meanwhile, and held behind an earlier SUBSCRIBE of one of their channels; the
 * Idempotency-Keys go with them), a SUBSCRIBE subscribed on Redis pub/sub then read, an
 * UNSUBSCRIBE, HISTORY and INFO reads, BARRIERs, and single-use tickets (SET NX PX, GETDEL). Calls
 * redis_queue.c, redis_chan.c and redis_conn.c; the answers come back through redis_answer.c.
 */
#include "redis_bridge.h"

/* ---- requests ---- */

static int publish_blocked(redis_broker_t *b, const held_t *h)
{
    for (size_t i = 0; i < h->r->n_msgs; i++) {
        const hd_message_t *m = h->r->msgs[i];
        rchan_t *c = hd_redis_chan_find(b, m->channel, m->channel_len);
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
void hd_redis_send_publish(redis_broker_t *b, hd_breq_t *r, size_t first)
{
    size_t n = 0, bytes = 0;
    while (first + n < r->n_msgs && n < PUBLISH_CALL_MAX_MSGS &&
           (n == 0 || bytes + r->msgs[first + n]->len <= PUBLISH_CALL_MAX_BYTES))
        bytes += r->msgs[first + n++]->len;
    /* Per message: its key, then channel, payload, type, idempotency key, publisher, and when
     * one of them asked delivery receipts (docs/chat.md), the tag of its box ("" for none). */
    size_t w = 5;
    for (size_t i = 0; i < n; i++)
        if (r->msgs[first + i]->rcpt)
            w = 6;
    size_t argc = 3 + (w + 1) * n;
    const char *argv[3 + 7 * PUBLISH_CALL_MAX_MSGS];
    size_t lens[3 + 7 * PUBLISH_CALL_MAX_MSGS];
    char keys[PUBLISH_CALL_MAX_MSGS][KEY_MAX], nkeys[24];
    char tags[PUBLISH_CALL_MAX_MSGS][HD_RCPT_TAG_MAX];
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
        const char **a = argv + 3 + n + w * i;
        size_t *l = lens + 3 + n + w * i;
        a[0] = m->channel;
        l[0] = m->channel_len;
        a[1] = m->data;
        l[1] = m->len;
        a[2] = m->content_type;
        l[2] = strlen(m->content_type);
        a[3] = m->idem_key ? m->idem_key : "";
        l[3] = strlen(a[3]);
        a[4] = m->publisher ? m->publisher : ""; /* the server's stamp (auth.md), "" for none */
        l[4] = strlen(a[4]);
        if (w == 6) {
            tags[i][0] = '\0';
            l[5] = m->rcpt ? hd_rcpt_tag(m->rcpt, tags[i]) : 0;
            a[5] = tags[i];
        }
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
void hd_redis_drain_held(redis_broker_t *b)
{
    while (!hd_list_empty(&b->held) && b->state == ST_UP && !b->in_parts) {
        held_t *h = hd_container_of(b->held.next, held_t, link);
        if (publish_blocked(b, h))
            return;
        hd_list_remove(&h->link);
        hd_breq_t *r = h->r;
        free(h);
        hd_redis_send_publish(b, r, 0);
    }
}

static void do_publish(redis_broker_t *b, hd_breq_t *r, uint64_t ticket)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    if (r->n_msgs == 0) {
        hd_redis_reply(r);
        return;
    }
    if (r->n_msgs == 1 && r->msgs[0]->kind == HD_MSG_EPHEMERAL) {
        hd_redis_send_ephemeral(b, r); /* live only: pub/sub, no id, no history */
        return;
    }
    hd_redis_hold(b);
    held_t h = {.r = r, .ticket = ticket};
    if (hd_list_empty(&b->held) && !b->in_parts && !publish_blocked(b, &h)) {
        hd_redis_send_publish(b, r, 0);
        return;
    }
    held_t *copy = hd_malloc(sizeof(*copy));
    *copy = h;
    hd_list_insert_tail(&b->held, &copy->link);
}

void hd_redis_issue_sub_read(redis_broker_t *b, rchan_t *c, pend_sub_t *ps)
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
    hd_redis_send_read(b, op, c->name, "sub", r->has_since, r->since_epoch, r->since_seq, 0);
}

static void do_subscribe(redis_broker_t *b, hd_breq_t *r, uint64_t ticket)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    rchan_t *c = hd_redis_chan_get(b, r->channel, strlen(r->channel));
    pend_sub_t *ps = hd_calloc(1, sizeof(*ps));
    ps->r = r;
    ps->ticket = ticket;
    hd_list_insert_tail(&c->pending, &ps->link);
    hd_redis_hold(b);
    if (c->rstate == RS_SUBSCRIBED)
        hd_redis_issue_sub_read(b, c, ps);
    else if (c->rstate != RS_SUBSCRIBING)
        hd_redis_chan_subscribe(b, c); /* the read follows its confirmation */
}

static void do_unsubscribe(redis_broker_t *b, hd_breq_t *r)
{
    rchan_t *c = hd_redis_chan_find(b, r->channel, strlen(r->channel));
    if (c && hd_interest_remove(&c->in, r->worker->id) >= 0) {
        if (c->in.n_workers == 0)
            hd_redis_occupancy(b, c->name, 0);
        hd_redis_maybe_release(b, c);
    }
    hd_breq_free(r);
}

static void do_read(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    hd_redis_hold(b);
    int is_info = r->type == HD_BREQ_INFO;
    op_t *op = hd_redis_op_new(b, is_info ? OP_INFO : OP_HISTORY);
    op->r = r;
    hd_redis_send_read(b, op, r->channel, is_info ? "info" : "hist", r->has_since, r->since_epoch,
                       r->since_seq, is_info ? 0 : r->limit);
}

/* Moves the ring of tickets put to the current second, forgetting those whose ttl passed. */
static void tickets_advance(redis_broker_t *b, uint64_t now_s)
{
    if (now_s - b->tickets_second >= TICKET_RING) {
        memset(b->tickets_ring, 0, TICKET_RING * sizeof(*b->tickets_ring));
        b->tickets_put = 0;
        b->tickets_second = now_s;
        return;
    }
    while (b->tickets_second < now_s) {
        uint32_t *slot = &b->tickets_ring[++b->tickets_second % TICKET_RING];
        b->tickets_put -= *slot;
        *slot = 0;
    }
}

/*
 * TICKET_PUT: SET <prefix>tk:<key> <claims> PX <ttl> NX, unless r->limit tickets put by this
 * node are still within their ttl (HD_ETICKETS); TICKET_TAKE: GETDEL <prefix>tk:<key>, atomic
 * in Redis, so that of two nodes taking one ticket only one gets its claims.
 */
static void do_ticket(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    char key[KEY_MAX], px[24];
    size_t key_len = hd_redis_key(b, key, "tk:", r->channel, strlen(r->channel));
    op_t *op;
    if (r->type == HD_BREQ_TICKET_PUT) {
        uint64_t now_ms = hd_redis_now_ms(b);
        tickets_advance(b, now_ms / 1000);
        if (b->tickets_put >= r->limit) {
            hd_redis_fail_now(r, HD_ETICKETS);
            return;
        }
        uint64_t exp_s = (now_ms + r->ttl_ms + 999) / 1000;
        if (exp_s - b->tickets_second >= TICKET_RING) /* never: ttl is at most an hour */
            exp_s = b->tickets_second + TICKET_RING - 1;
        b->tickets_ring[exp_s % TICKET_RING]++;
        b->tickets_put++;
        snprintf(px, sizeof(px), "%llu", (unsigned long long)r->ttl_ms);
        const char *argv[] = {"SET", key, r->data, "PX", px, "NX"};
        const size_t lens[] = {3, key_len, r->data_len, 2, strlen(px), 2};
        hd_redis_hold(b);
        op = hd_redis_op_new(b, OP_TICKET);
        op->r = r;
        hd_redis_send(b, op, 6, argv, lens);
    } else {
        const char *argv[] = {"GETDEL", key};
        const size_t lens[] = {6, key_len};
        hd_redis_hold(b);
        op = hd_redis_op_new(b, OP_TICKET);
        op->r = r;
        hd_redis_send(b, op, 2, argv, lens);
    }
}

static void do_barrier(redis_broker_t *b, hd_breq_t *r)
{
    if (b->n_inflight == 0) {
        hd_redis_reply(r);
        return;
    }
    b->barriers =
        hd_grow_array(b->barriers, &b->cap_barriers, b->n_barriers + 1, sizeof(*b->barriers), 8);
    b->barriers[b->n_barriers++] = r;
}

void hd_redis_handle(redis_broker_t *b, hd_breq_t *r)
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
        /* Only a shutdown sends barriers: from now on the workers may be gone once answered, so
         * operators' orders heard on P ctl are no longer passed to them (redis_control.c). */
        b->is_quiet = 1;
        do_barrier(b, r);
        break;
    case HD_BREQ_CONTROL:
        hd_redis_send_control(b, r);
        break;
    case HD_BREQ_RECEIPT:
        hd_redis_send_receipt(b, r);
        break;
    case HD_BREQ_JOIN:
    case HD_BREQ_LEAVE:
        while (r) { /* a worker's pass: its joins and leaves in order */
            hd_breq_t *next = r->next_op;
            r->next_op = NULL;
            if (r->type == HD_BREQ_JOIN)
                hd_redis_presence_join(b, r);
            else
                hd_redis_presence_leave(b, r);
            r = next;
        }
        break;
    case HD_BREQ_PRESENCE:
        hd_redis_presence_page(b, r);
        break;
    case HD_BREQ_TICKET_PUT:
    case HD_BREQ_TICKET_TAKE:
        do_ticket(b, r);
        break;
    default:
        hd_redis_fail_now(r, HD_EBADREQ);
    }
}
