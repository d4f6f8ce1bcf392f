/* SPDX-License-Identifier: MIT */
/*
 * redis_chan.c: the Redis bridge's channels and its replies to workers. A channel (rchan_t) is
 * what the node keeps of a Redis channel: its subscribers per worker, its subscription on the
 * subscriber connection, its reads in flight and its position. This file finds, creates and
 * frees them, sends their SUBSCRIBE, UNSUBSCRIBE and herald_read, parses herald_read's answers
 * (noting the id epoch), and answers the workers' requests (counting those answered later, so
 * that a BARRIER waits for them). It calls only redis_conn.c and redis_reply.c.
 */
#include "redis_bridge.h"

/* ---- replies to workers ---- */

void hd_redis_reply(hd_breq_t *r)
{
    hd_breq_reply(r);
}

void hd_redis_fail_now(hd_breq_t *r, int err)
{
    r->err = err;
    hd_redis_reply(r);
}

/* A request answered later: counted, so that a BARRIER waits for it. */
void hd_redis_hold(redis_broker_t *b)
{
    b->n_inflight++;
}

void hd_redis_release(redis_broker_t *b, hd_breq_t *r)
{
    hd_redis_reply(r);
    HD_ASSERT(b->n_inflight > 0);
    if (--b->n_inflight == 0) {
        for (size_t i = 0; i < b->n_barriers; i++)
            hd_redis_reply(b->barriers[i]);
        b->n_barriers = 0;
    }
}

void hd_redis_release_err(redis_broker_t *b, hd_breq_t *r, int err)
{
    r->err = err;
    hd_redis_release(b, r);
}

/* ---- messages from Redis ---- */

/* What every message from Redis tells the node: its epoch (a new one: Redis lost its data), and
 * the highest sequence seen (messages published, for /stats). */
void hd_redis_note_seq(redis_broker_t *b, uint64_t epoch, uint64_t seq)
{
    hd_redis_note_epoch(b, epoch);
    if (seq > b->stats.messages_published)
        STAT_SET(b, messages_published, seq);
}

/* Parses herald_read's answer. Returns 0, or -1 (nothing allocated). */
int hd_redis_read_answer(redis_broker_t *b, const char *channel, const redisReply *rep,
                         hd_redis_read_t *out)
{
    if (hd_redis_parse_read(channel, strlen(channel), rep, out) < 0)
        return -1;
    hd_redis_note_seq(b, out->epoch, out->cur);
    for (size_t i = 0; i < out->n; i++)
        hd_redis_note_epoch(b, out->msgs[i]->epoch);
    return 0;
}

/* ---- channels ---- */

rchan_t *hd_redis_chan_find(redis_broker_t *b, const char *name, size_t len)
{
    hd_chan_t *c = hd_chantab_find(&b->chans, name, len);
    return c ? hd_container_of(c, rchan_t, ch) : NULL;
}

rchan_t *hd_redis_chan_get(redis_broker_t *b, const char *name, size_t len)
{
    int made;
    rchan_t *c = hd_container_of(hd_chantab_get(&b->chans, name, len, &made), rchan_t, ch);
    if (!made)
        return c;
    hd_interest_init(&c->in, b->n_workers);
    hd_list_init(&c->pending);
    hd_list_init(&c->reads);
    hd_list_init(&c->catchup_link);
    STAT_SET(b, channels, hd_chantab_count(&b->chans));
    return c;
}

void hd_redis_chan_free(redis_broker_t *b, rchan_t *c)
{
    hd_interest_dispose(&c->in);
    hd_chantab_free(&b->chans, &c->ch);
    STAT_SET(b, channels, hd_chantab_count(&b->chans));
}

void hd_redis_chan_subscribe(redis_broker_t *b, rchan_t *c)
{
    c->rstate = RS_SUBSCRIBING;
    c->n_sub_sent++;
    hd_redis_send_sub(b, "SUBSCRIBE", c->name, hd_chan_name_len(&c->ch));
}

void hd_redis_chan_unsubscribe(redis_broker_t *b, rchan_t *c)
{
    c->rstate = RS_UNSUBSCRIBING;
    c->n_unsub_sent++;
    hd_redis_send_sub(b, "UNSUBSCRIBE", c->name, hd_chan_name_len(&c->ch));
}

/* FCALL herald_read for op (its channel in op->c or op->r). */
void hd_redis_send_read(redis_broker_t *b, op_t *op, const char *channel, const char *mode,
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
