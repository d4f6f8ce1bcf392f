/* SPDX-License-Identifier: MIT */
/*
 * redis_control.c: operators' orders across the cluster (docs/auth.md, "Revocation" and
 * "Disconnecting"; docs/redis.md). An order taken by any node (HD_BREQ_CONTROL) is announced on
 * one pub/sub channel every node subscribes to, P ctl, so each node ends its own matching
 * connections (hd_kick_post to each of its workers): the cost is one message per order per node,
 * nothing per delivered message.
 *
 *   node A: POST /admin/revoke {"sub":"42"}
 *     FCALL herald_revoke 2 P revoked P ctl s:42 <until> <now> <max> "R s <until> 42"
 *       (one atomic call: ZADD to the revoked set, unless max_revocations live ones are held,
 *        then PUBLISH P ctl; answers how many nodes heard it)
 *   every node (A too), on P ctl:  "R s <until> 42" -> its revoked set += 42 (new: its workers
 *                                   end 42's connections)
 *   a node that connects (starts, or comes back after losing Redis): ZRANGE P revoked (now +inf
 *     BYSCORE WITHSCORES -> its set; those new to it end their connections there too
 *
 * Announcements: "R s <until ms> <sub>", "R j <until ms> <jti>" (revocations), "D s <sub>",
 * "D c <channel>" (disconnects); the key runs to the end (it may hold spaces). A disconnect is
 * heard by the nodes connected to Redis at that moment only; a revocation is also read back by
 * any node that connects later, so every node refuses it until it ends.
 *
 * The node that asked also adds a revocation to its set when Redis answers, so it refuses the
 * token as soon as the request is answered, whichever of the answer and the announcement (two
 * connections) comes first; the set says which of them brought it first, and only that one ends
 * connections.
 *
 * Delivery receipts (docs/chat.md) travel the same way to one node: a message published with
 * "receipt" carries its publisher's tag "<node>-<conn>" through Redis, and a node that delivers
 * it, or has it acked, hands the receipt's text (hd_rcpt_post's) to this bridge, which PUBLISHes
 * it on P rc:<node>, the channel only that node subscribes to (next to P ctl); the publisher's
 * node passes it to the connection's worker. A receipt for this node's own publisher goes to
 * its worker at once. Bounded: at most RCPT_IN_FLIGHT_MAX PUBLISHes unanswered; past it, and
 * while Redis is lost, receipts are dropped and counted (receipts_dropped). Messages without
 * receipts cost nothing here.
 */
#include "redis_bridge.h"

#include <stdlib.h>
#include <time.h>

#define ANNOUNCE_MAX (32 + HD_AUTH_MAX_SUB)

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every worker of this node ends the matching connections. */
static void kick_all(redis_broker_t *b, int kind, const char *key, size_t len)
{
    if (b->is_quiet)
        return; /* shutting down: the workers' connections are closing anyway */
    for (unsigned i = 0; i < b->n_workers; i++)
        hd_kick_post(hd_server_worker(b->server, i), kind, key, len);
}

/* A revocation enters the node's set; new to it: the node's connections of it end. */
static void apply_revocation(redis_broker_t *b, int kind, const char *key, size_t len,
                             int64_t until_ms)
{
    hd_revset_t *set = hd_auth_revocations();
    if (set && hd_revset_add(set, kind, key, len, until_ms, wall_ms(), SIZE_MAX) == 1)
        kick_all(b, kind, key, len);
}

static int is_revocation(int kind)
{
    return kind == HD_KICK_REVOKE_SUB || kind == HD_KICK_REVOKE_JTI;
}

void hd_redis_send_control(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    char text[ANNOUNCE_MAX], zkey[KEY_MAX], member[HD_AUTH_MAX_SUB + 3], nums[3][24];
    int kind = r->ctl_kind;
    char tag = kind == HD_KICK_REVOKE_JTI ? 'j' : kind == HD_KICK_CHANNEL ? 'c' : 's';
    int n = is_revocation(kind)
                ? snprintf(text, sizeof(text), "R %c %lld ", tag, (long long)r->ctl_until_ms)
                : snprintf(text, sizeof(text), "D %c ", tag);
    HD_ASSERT(n > 0 && (size_t)n + r->ctl_key_len <= sizeof(text));
    memcpy(text + n, r->ctl_key, r->ctl_key_len);
    size_t text_len = (size_t)n + r->ctl_key_len;
    op_t *op = hd_redis_op_new(b, OP_CONTROL);
    op->r = r;
    hd_redis_hold(b);
    if (!is_revocation(kind)) {
        const char *argv[] = {"PUBLISH", b->ctl_channel, text};
        size_t lens[] = {7, strlen(b->ctl_channel), text_len};
        hd_redis_send(b, op, 3, argv, lens);
        return;
    }
    size_t zlen = hd_redis_key(b, zkey, "revoked", "", 0);
    member[0] = tag;
    member[1] = ':';
    memcpy(member + 2, r->ctl_key, r->ctl_key_len);
    snprintf(nums[0], sizeof(nums[0]), "%lld", (long long)r->ctl_until_ms);
    snprintf(nums[1], sizeof(nums[1]), "%lld", (long long)wall_ms());
    snprintf(nums[2], sizeof(nums[2]), "%u", r->ctl_max);
    const char *argv[] = {"FCALL", "herald_revoke", "2",     zkey,    b->ctl_channel,
                          member,  nums[0],         nums[1], nums[2], text};
    size_t lens[] = {5,
                     13,
                     1,
                     zlen,
                     strlen(b->ctl_channel),
                     r->ctl_key_len + 2,
                     strlen(nums[0]),
                     strlen(nums[1]),
                     strlen(nums[2]),
                     text_len};
    hd_redis_send(b, op, 10, argv, lens);
}

void hd_redis_control_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    if (!rep) {
        hd_redis_release_err(b, r, HD_EOVERLOAD);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        int is_cap = rep->str && strncmp(rep->str, "REVOCATIONS", 11) == 0;
        if (!is_cap)
            hd_log_warn("redis %s: an operator's order failed: %.200s", b->where,
                        rep->str ? rep->str : "error");
        hd_redis_release_err(b, r, is_cap ? HD_EREVOCATIONS : HD_EOVERLOAD);
        return;
    }
    r->ctl_nodes =
        rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 ? (uint64_t)rep->integer : 0;
    if (is_revocation(r->ctl_kind))
        apply_revocation(b, r->ctl_kind, r->ctl_key, r->ctl_key_len, r->ctl_until_ms);
    hd_redis_release(b, r);
}

/* The key of an order: 1..HD_AUTH_MAX_SUB bytes, no NUL; a channel's name valid. */
static int key_ok(int kind, const char *key, size_t len)
{
    if (len == 0 || len > HD_AUTH_MAX_SUB || memchr(key, '\0', len))
        return 0;
    return kind != HD_KICK_CHANNEL || hd_channel_name_valid(key, len);
}

void hd_redis_on_control(redis_broker_t *b, const char *data, size_t len)
{
    const char *end = data + len, *p = data + 4;
    if (len < 5 || data[1] != ' ' || data[3] != ' ')
        goto bad;
    int kind;
    if (data[0] == 'R' && (data[2] == 's' || data[2] == 'j')) {
        kind = data[2] == 's' ? HD_KICK_REVOKE_SUB : HD_KICK_REVOKE_JTI;
        int64_t until = 0;
        const char *q = p;
        while (q < end && *q >= '0' && *q <= '9' && q - p < 18)
            until = until * 10 + (*q++ - '0');
        if (q == p || q >= end || *q != ' ' || !key_ok(kind, q + 1, (size_t)(end - q - 1)))
            goto bad;
        apply_revocation(b, kind, q + 1, (size_t)(end - q - 1), until);
        return;
    }
    if (data[0] == 'D' && (data[2] == 's' || data[2] == 'c')) {
        kind = data[2] == 's' ? HD_KICK_SUB : HD_KICK_CHANNEL;
        if (!key_ok(kind, p, (size_t)(end - p)))
            goto bad;
        kick_all(b, kind, p, (size_t)(end - p));
        return;
    }
bad:
    hd_log_info("redis %s: ignoring a malformed order on %s (%zu bytes)", b->where, b->ctl_channel,
                len);
}

void hd_redis_load_revoked(redis_broker_t *b)
{
    char zkey[KEY_MAX], min[32];
    size_t zlen = hd_redis_key(b, zkey, "revoked", "", 0);
    snprintf(min, sizeof(min), "(%lld", (long long)wall_ms());
    const char *argv[] = {"ZRANGE", zkey, min, "+inf", "BYSCORE", "WITHSCORES"};
    size_t lens[] = {6, zlen, strlen(min), 4, 7, 10};
    hd_redis_send(b, hd_redis_op_new(b, OP_REVOKED_LOAD), 6, argv, lens);
}

void hd_redis_revoked_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    (void)op;
    if (!rep) /* the connection went: the next connect reads them again */
        return;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2) {
        hd_log_warn("redis %s: reading the revoked set failed: %.200s", b->where,
                    rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "unexpected answer");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const redisReply *m = rep->element[i], *s = rep->element[i + 1];
        if (m->type != REDIS_REPLY_STRING || s->type != REDIS_REPLY_STRING || m->len < 3 ||
            m->str[1] != ':' || (m->str[0] != 's' && m->str[0] != 'j'))
            continue;
        int kind = m->str[0] == 's' ? HD_KICK_REVOKE_SUB : HD_KICK_REVOKE_JTI;
        int64_t until = strtoll(s->str, NULL, 10);
        if (!key_ok(kind, m->str + 2, m->len - 2) || until <= 0)
            continue;
        apply_revocation(b, kind, m->str + 2, m->len - 2, until);
        n++;
    }
    if (n)
        hd_log_info("redis %s: %zu live revocation(s) loaded", b->where, n);
}

/* ---- delivery receipts ---- */

static void drop_receipt(redis_broker_t *b)
{
    STAT_SET(b, receipts_dropped, b->stats.receipts_dropped + 1);
}

void hd_redis_send_receipt(redis_broker_t *b, hd_breq_t *r)
{
    const char *node = hd_presence_node();
    const char *dash = r->data ? memchr(r->data, '-', r->data_len) : NULL;
    size_t node_len = dash ? (size_t)(dash - r->data) : 0;
    if (b->is_quiet || node_len == 0 || node_len > 15) {
        /* shutting down (the workers may be gone), or not a tag: receipt.c never makes one */
    } else if (node_len == strlen(node) && memcmp(r->data, node, node_len) == 0) {
        hd_rcpt_post(b->server, r->data, r->data_len); /* this node's publisher: no hop */
    } else if (b->state != ST_UP || b->rcpt_out >= RCPT_IN_FLIGHT_MAX) {
        drop_receipt(b);
    } else {
        char ch[KEY_MAX];
        size_t ch_len = hd_redis_key(b, ch, "rc:", r->data, node_len);
        const char *argv[] = {"PUBLISH", ch, r->data};
        size_t lens[] = {7, ch_len, r->data_len};
        b->rcpt_out++;
        hd_redis_send(b, hd_redis_op_new(b, OP_RECEIPT), 3, argv, lens);
    }
    hd_breq_free(r);
}

void hd_redis_receipt_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    (void)op;
    b->rcpt_out--;
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        drop_receipt(b); /* it may not have gone */
}

void hd_redis_on_receipt(redis_broker_t *b, const char *data, size_t len)
{
    if (b->is_quiet || hd_rcpt_post(b->server, data, len) == 0)
        return;
    uint64_t now = hd_redis_now_ms(b);
    if (now - b->rcpt_bad_log_ms >= 1000) {
        b->rcpt_bad_log_ms = now;
        hd_log_info("redis %s: ignoring a malformed receipt on %s (%zu bytes)", b->where,
                    b->rc_channel, len);
    }
}
