/* SPDX-License-Identifier: MIT */
/*
 * redis_answer.c: what the connections report to the Redis bridge, turned into replies and
 * deliveries: the answers to publishes (the next part sent, the held publishes let go), to a
 * subscriber's first read, to HISTORY and INFO reads and to tickets' SET and GETDEL, error replies
 * mapped to what the client is told, pub/sub messages queued for delivery, and subscription
 * confirmations. Catch-up answers go to redis_queue.c. Calls redis_request.c, redis_queue.c,
 * redis_chan.c and redis_conn.c.
 */
#include "redis_bridge.h"

static hd_message_t *parse_pubsub(redis_broker_t *b, const rchan_t *c, const char *s, size_t len)
{
    hd_message_t *m = hd_redis_parse_pubsub(c->name, hd_chan_name_len(&c->ch), s, len);
    if (m && m->kind == HD_MSG_NORMAL)
        hd_redis_note_seq(b, m->epoch, m->seq);
    return m;
}

static void discard_result(hd_redis_read_t *res)
{
    hd_redis_read_dispose(res);
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
        hd_redis_release_err(b, r, HD_EOVERLOAD);
        return 0;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        hd_redis_release_err(b, r, map_error(b, "publish", rep));
        return 0;
    }
    if (hd_redis_parse_publish(rep, r->msgs + op->first, op->n) < 0)
        goto bad;
    for (size_t i = 0; i < op->n; i++)
        hd_redis_note_seq(b, r->msgs[op->first + i]->epoch, r->msgs[op->first + i]->seq);
    if (op->first + op->n < r->n_msgs) {
        /* The next part, unless the connection went away meanwhile (then the parts sent are
         * applied and the rest is not: the client is told 503, as for any publish in flight). */
        if (b->state != ST_UP) {
            hd_redis_release_err(b, r, HD_EOVERLOAD);
            return 0;
        }
        hd_redis_send_publish(b, r, op->first + op->n);
        return 1;
    }
    r->epoch = r->msgs[r->n_msgs - 1]->epoch;
    r->last_seq = r->msgs[r->n_msgs - 1]->seq;
    hd_redis_release(b, r);
    return 0;
bad:
    hd_log_error("redis %s: unexpected answer to herald_publish_batch", b->where);
    hd_redis_release_err(b, r, HD_EOVERLOAD);
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
    hd_redis_drain_held(b);
}

static void sub_read_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    rchan_t *c = op->c;
    pend_sub_t *ps = op->ps;
    hd_breq_t *r = op->r;
    hd_redis_read_t res;
    hd_list_remove(&op->link);
    hd_list_remove(&ps->link);
    free(ps);
    int err = 0;
    if (!rep)
        err = HD_EOVERLOAD;
    else if (rep->type == REDIS_REPLY_ERROR)
        err = map_error(b, "subscribe", rep);
    else if (hd_redis_read_answer(b, c->name, rep, &res) < 0) {
        hd_log_error("redis %s: unexpected answer to herald_read", b->where);
        err = HD_EOVERLOAD;
    }
    if (err) {
        hd_redis_release_err(b, r, err);
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
        if (hd_interest_add(&c->in, r->worker->id) && c->in.n_workers == 1)
            hd_redis_occupancy(b, c->name, 1);
        if (!c->has_pos) {
            c->has_pos = 1;
            c->pos_epoch = res.epoch;
            c->pos_seq = res.cur;
        }
        c->has_floor = 1;
        c->floor_epoch = res.epoch;
        c->floor_seq = res.cur;
        hd_redis_release(b, r);
    }
    hd_redis_deliver_ready(b);
    hd_redis_drain_held(b);
    hd_redis_maybe_release(b, c);
}

static void read_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    hd_redis_read_t res;
    if (!rep) {
        hd_redis_release_err(b, r, HD_EOVERLOAD);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        hd_redis_release_err(b, r, map_error(b, "read", rep));
        return;
    }
    if (hd_redis_read_answer(b, r->channel, rep, &res) < 0) {
        hd_log_error("redis %s: unexpected answer to herald_read", b->where);
        hd_redis_release_err(b, r, HD_EOVERLOAD);
        return;
    }
    r->epoch = res.epoch;
    r->last_seq = res.cur;
    r->gap = (uint8_t)res.gap;
    if (op->kind == OP_INFO) {
        rchan_t *c = hd_redis_chan_find(b, r->channel, strlen(r->channel));
        r->subscribers = c ? hd_interest_total(&c->in) : 0;
        r->found = res.found || r->subscribers > 0;
        r->history_len = res.history_len;
        memcpy(r->last_id, res.last_id, sizeof(r->last_id));
        discard_result(&res);
        hd_redis_presence_count(b, r); /* its members in the cluster, then the reply */
        return;
    } else {
        r->msgs = res.msgs;
        r->n_msgs = res.n;
    }
    hd_redis_release(b, r);
}

/* The answer to a ticket's SET NX (OK, or nil: the key exists) or GETDEL (the claims, or nil). */
static void ticket_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    if (!rep) {
        hd_redis_release_err(b, r, HD_EOVERLOAD);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        hd_redis_release_err(b, r, map_error(b, "ticket", rep));
        return;
    }
    if (r->type == HD_BREQ_TICKET_PUT) {
        /* nil: a ticket with this key exists (192 random bits: never) */
        hd_redis_release_err(b, r, rep->type == REDIS_REPLY_STATUS ? 0 : HD_EBADREQ);
        return;
    }
    free(r->data);
    r->data = NULL;
    r->data_len = 0;
    if (rep->type != REDIS_REPLY_STRING) {
        hd_redis_release_err(b, r, HD_ENOTFOUND); /* unknown, taken, or expired */
        return;
    }
    r->data = hd_strndup(rep->str, rep->len);
    r->data_len = rep->len;
    hd_redis_release(b, r);
}

void hd_redis_on_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    switch (op->kind) {
    case OP_TICKET:
        ticket_reply(b, op, rep);
        break;
    case OP_PUBLISH:
        publish_reply(b, op, rep);
        break;
    case OP_SUB_READ:
        sub_read_reply(b, op, rep);
        break;
    case OP_CATCHUP:
        hd_redis_catchup_reply(b, op, rep, rep != NULL); /* NULL: stale (conn_lost ran) */
        break;
    case OP_CONTROL:
        hd_redis_control_reply(b, op, rep);
        break;
    case OP_REVOKED_LOAD:
        hd_redis_revoked_reply(b, op, rep);
        break;
    case OP_RECEIPT:
        hd_redis_receipt_reply(b, op, rep);
        break;
    case OP_PRES_CMD:
    case OP_PRES_PAGE:
    case OP_PRES_COUNT:
    case OP_EPHEMERAL:
        hd_redis_presence_reply(b, op, rep);
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
        hd_redis_send_catchup(b, c);
    hd_list_t *pos;
    for (pos = c->pending.next; pos != &c->pending; pos = pos->next) {
        pend_sub_t *ps = hd_container_of(pos, pend_sub_t, link);
        if (!ps->op)
            hd_redis_issue_sub_read(b, c, ps);
    }
}

void hd_redis_on_message(redis_broker_t *b, const char *channel, size_t len, const char *data,
                         size_t data_len)
{
    rchan_t *c = hd_redis_chan_find(b, channel, len);
    if (!c)
        return;
    hd_message_t *m = parse_pubsub(b, c, data, data_len);
    if (!m) {
        hd_log_info("redis %s: ignoring a malformed message on channel %s (publish with FCALL "
                    "herald_publish)",
                    b->where, c->name);
        return;
    }
    if (m->kind != HD_MSG_NORMAL)
        hd_redis_deliver_event(b, c, m);
    else
        hd_redis_on_live_message(b, c, m);
}

void hd_redis_on_subscription(redis_broker_t *b, const char *channel, size_t len, int is_subscribe)
{
    rchan_t *c = hd_redis_chan_find(b, channel, len);
    if (!c)
        return;
    if (is_subscribe) {
        if (c->n_sub_sent > 0 && --c->n_sub_sent == 0 && c->rstate == RS_SUBSCRIBING)
            subscribed(b, c);
    } else if (c->n_unsub_sent > 0 && --c->n_unsub_sent == 0 && c->rstate == RS_UNSUBSCRIBING) {
        c->rstate = RS_NONE;
        hd_redis_maybe_release(b, c);
    }
}
