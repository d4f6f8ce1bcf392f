/* SPDX-License-Identifier: MIT */
/*
 * poll.c: short polling and long polling.
 *
 *   GET /poll/{channel}?since=ID            answers at once from history
 *   GET /lp/{channel}?since=ID&timeout=S    answers as soon as a message after ID exists,
 *                                           or with an empty list after the timeout
 *
 * Both answer {"channel":..,"messages":[{"id","channel","type","data"}...],"next":ID,"gap":bool}.
 * `next` is the cursor for the following poll: the last id returned, or the node's current
 * position when nothing was returned, so polling again with it never misses a message still in
 * history. A held long poll is a hub subscriber whose deadline is its connection's (the
 * worker's timer heap): it costs no CPU while it waits. A live message answers every poll held
 * on the channel with one body encoded once per worker (HD_FMT_POLL_ANSWER), queued by reference.
 *
 * Live-only events (docs/chat.md) are never stored, so only a held long poll can get them, and
 * only when it asks (?presence=1: joins and leaves; ?ephemeral=1: ephemeral messages): one
 * answers the poll at once with "messages":[] and "events":[..] (the hub's encoding, shared),
 * `next` unchanged. A short poll with ?presence=1 gets the channel's members instead, a page
 * of the snapshot, in "presence":{"count":N,"members":[..],"next":KEY|null}.
 */
#include "herald/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_HEADERS "Cache-Control: no-cache, no-store\r\n"

/*
 * The body of an answer with history, msgs[0..n) (n > 0), all of it in one buffer: at most
 * max_bytes (max_response_size) once the first message is in, the messages that would not fit
 * left out. *used says how many are in; `next` is the last one's id.
 */
static hd_buf_t *build_body(const char *channel, hd_message_t *const *msgs, size_t n, int gap,
                            size_t max_bytes, size_t *used)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256);
    hd_sbuf_appendf(&sb, "{\"channel\":\"%s\",\"messages\":[", channel);
    size_t i;
    for (i = 0; i < n; i++) {
        size_t before = sb.buf->len;
        if (i)
            hd_sbuf_append(&sb, ",", 1);
        hd_message_json_object(&sb, msgs[i]);
        if (i > 0 && sb.buf->len > max_bytes) {
            sb.buf->len = before; /* this one goes in the next answer */
            break;
        }
    }
    *used = i;
    hd_sbuf_appendf(&sb, "],\"next\":\"%s\",\"gap\":%s}", msgs[i - 1]->id, gap ? "true" : "false");
    return hd_sbuf_finish(&sb);
}

/*
 * The answer for history msgs[0..n): shared with every client of this worker asking for the
 * same messages while an earlier copy is still being written (hd_hub_shared_get). The key holds
 * all the body depends on: the channel, the epoch and sequence range of the messages (ids are
 * never reused, so one range is one list), gap and the size bound.
 */
static hd_buf_t *history_body(hd_worker_t *w, const char *channel, hd_message_t *const *msgs,
                              size_t n, int gap)
{
    size_t max_bytes = hd_worker_conf(w)->max_response_bytes, used;
    char key[HD_CHANNEL_MAX + 128];
    int klen = snprintf(key, sizeof(key), "poll %s %llx %llx %llx %zu %d %zu", channel,
                        (unsigned long long)msgs[0]->epoch, (unsigned long long)msgs[0]->seq,
                        (unsigned long long)msgs[n - 1]->seq, n, gap, max_bytes);
    hd_buf_t *body = hd_hub_shared_get(w, key, (size_t)klen);
    if (body)
        return body;
    body = build_body(channel, msgs, n, gap, max_bytes, &used);
    hd_hub_shared_put(w, key, (size_t)klen, body);
    return body;
}

/*
 * Sends the answer: for history (msgs, no `shared`) one body bounded by max_response_size;
 * for one live message of a long poll, the prefix, `shared` (its JSON object), the suffix.
 * next is the cursor when no message is returned.
 */
static void answer(hd_req_t *req, const char *channel, hd_message_t *const *msgs, size_t n,
                   hd_buf_t *shared, const char *next, int gap)
{
    hd_worker_t *w = req->conn->worker;
    if (n && !shared) {
        hd_buf_t *body = history_body(w, channel, msgs, n, gap);
        hd_http_respond_bufs(req, 200, POLL_HEADERS, "application/json", &body, 1);
        hd_buf_unref(body);
        return;
    }
    hd_sbuf_t pre, post;
    hd_sbuf_init(&pre, 128);
    hd_sbuf_appendf(&pre, "{\"channel\":\"%s\",\"messages\":[", channel);
    hd_buf_t *bufs[3];
    size_t n_bufs = 0;
    bufs[n_bufs++] = hd_sbuf_finish(&pre);
    if (shared)
        bufs[n_bufs++] = hd_buf_ref(shared);
    hd_sbuf_init(&post, 96);
    hd_sbuf_appendf(&post, "],\"next\":\"%s\",\"gap\":%s}", next, gap ? "true" : "false");
    bufs[n_bufs++] = hd_sbuf_finish(&post);
    hd_http_respond_bufs(req, 200, POLL_HEADERS, "application/json", bufs, n_bufs);
    for (size_t i = 0; i < n_bufs; i++)
        hd_buf_unref(bufs[i]);
}

/*
 * A long poll answered by live-only events: `events` is the hub's HD_FMT_POLL_ANSWER encoding of
 * one event (the array's elements, shared by the polls of the worker), next the poll's cursor.
 */
static void answer_events(hd_req_t *req, const char *channel, hd_buf_t *events, const char *next)
{
    hd_sbuf_t pre, post;
    hd_sbuf_init(&pre, 128);
    hd_sbuf_appendf(&pre, "{\"channel\":\"%s\",\"messages\":[],\"events\":[", channel);
    hd_sbuf_init(&post, 96);
    hd_sbuf_appendf(&post, "],\"next\":\"%s\",\"gap\":false}", next);
    hd_buf_t *bufs[3] = {hd_sbuf_finish(&pre), hd_buf_ref(events), hd_sbuf_finish(&post)};
    hd_http_respond_bufs(req, 200, POLL_HEADERS, "application/json", bufs, 3);
    for (size_t i = 0; i < 3; i++)
        hd_buf_unref(bufs[i]);
}

/* ?NAME=1|on|true (0|off|false, absent: 0). Returns 0 or 1, or -1 after a 400. */
static int flag_of(hd_req_t *req, const char *name)
{
    char v[8];
    if (hd_req_query(req, name, v, sizeof(v)) < 0)
        return 0;
    if (strcmp(v, "1") == 0 || strcmp(v, "on") == 0 || strcmp(v, "true") == 0)
        return 1;
    if (strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || strcmp(v, "false") == 0)
        return 0;
    char why[96];
    snprintf(why, sizeof(why), "%s must be 1, on, true, 0, off or false", name);
    hd_http_respond_error(req, 400, why);
    return -1;
}

/* Reads ?since= (or ?last_event_id=). Returns 1 with the id, 0 when absent, -1 after a 400. */
static int since_of(hd_req_t *req, uint64_t *epoch, uint64_t *seq)
{
    char v[256];
    int n = hd_req_query(req, "since", v, sizeof(v));
    if (n < 0)
        n = hd_req_query(req, "last_event_id", v, sizeof(v));
    if (n <= 0)
        return 0;
    return hd_tp_parse_id(req, "since", v, (size_t)n, epoch, seq) < 0 ? -1 : 1;
}

/* ---- short poll ---- */

typedef struct poll_ctx_s {
    hd_deferred_t *d;
    hd_breq_t *hist; /* ?presence=1: the history read, answered with the snapshot that follows */
    uint8_t wants_presence;
    char channel[HD_CHANNEL_MAX + 1];
    char cursor[HD_AUTH_MAX_SUB + 1]; /* ?presence_cursor= ("": the first page) */
} poll_ctx_t;

static void poll_abort(hd_deferred_t *d)
{
    ((poll_ctx_t *)d->data)->d = NULL;
}

static void poll_free(hd_worker_t *w, poll_ctx_t *p)
{
    HD_HUB_STAT_ADD(w, transport_conns[HD_TP_POLL], -1);
    if (p->hist)
        hd_breq_free(p->hist);
    free(p);
}

static void history_next(const hd_breq_t *r, char next[HD_ID_MAX])
{
    if (r->n_msgs)
        memcpy(next, r->msgs[r->n_msgs - 1]->id, HD_ID_MAX);
    else
        hd_id_format(next, HD_ID_MAX, r->epoch, r->last_seq);
}

/*
 * The short poll's answer with the snapshot page pres (a PRESENCE reply) after its history h:
 * the usual body, with "presence":{"count":N,"members":[..],"next":..} before its end.
 */
static void answer_presence(hd_req_t *req, const char *channel, const hd_breq_t *h,
                            const hd_breq_t *pres)
{
    hd_worker_t *w = req->conn->worker;
    char next[HD_ID_MAX];
    history_next(h, next);
    hd_buf_t *body;
    if (h->n_msgs) {
        body = history_body(w, channel, h->msgs, h->n_msgs, h->gap);
    } else {
        hd_sbuf_t e;
        hd_sbuf_init(&e, 128);
        hd_sbuf_appendf(&e, "{\"channel\":\"%s\",\"messages\":[],\"next\":\"%s\",\"gap\":%s}",
                        channel, next, h->gap ? "true" : "false");
        body = hd_sbuf_finish(&e);
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, body->len + 64 + (pres->page ? strlen(pres->page) : 0));
    hd_sbuf_append(&sb, body->data, body->len - 1); /* all but its closing brace */
    hd_buf_unref(body);
    hd_sbuf_appendf(&sb, ",\"presence\":{\"count\":%llu,%s}}", (unsigned long long)pres->members,
                    pres->page ? pres->page : "\"members\":[],\"next\":null");
    body = hd_sbuf_finish(&sb);
    hd_http_respond_bufs(req, 200, POLL_HEADERS, "application/json", &body, 1);
    hd_buf_unref(body);
}

static void on_poll_presence(hd_worker_t *w, hd_breq_t *r)
{
    poll_ctx_t *p = r->cookie;
    if (p->d && r->err)
        hd_tp_respond_failure(p->d->req, r->err);
    else if (p->d)
        answer_presence(p->d->req, p->channel, p->hist, r);
    poll_free(w, p);
    hd_breq_free(r);
}

static void on_history(hd_worker_t *w, hd_breq_t *r)
{
    poll_ctx_t *p = r->cookie;
    if (p->d && !r->err && p->wants_presence) {
        /* then a page of the members: answered together */
        p->hist = r;
        hd_breq_t *q = hd_breq_new(HD_BREQ_PRESENCE, w, p->channel, strlen(p->channel));
        if (p->cursor[0])
            q->cursor = hd_strndup(p->cursor, strlen(p->cursor));
        q->limit = HD_PRESENCE_PAGE_DEFAULT;
        q->cookie = p;
        q->reply_cb = on_poll_presence;
        hd_broker_submit(q);
        return;
    }
    if (p->d) {
        hd_req_t *req = p->d->req;
        if (r->err) {
            hd_tp_respond_failure(req, r->err);
        } else {
            char next[HD_ID_MAX];
            history_next(r, next);
            answer(req, p->channel, r->msgs, r->n_msgs, NULL, next, r->gap);
        }
    }
    poll_free(w, p);
    hd_breq_free(r);
}

static void on_poll(hd_req_t *req, void *arg)
{
    (void)arg;
    poll_ctx_t *p = hd_calloc(1, sizeof(*p));
    int n = hd_tp_channel_from_path(req, 6, p->channel);
    uint64_t epoch, seq;
    int has_since = n < 0 ? -1 : since_of(req, &epoch, &seq);
    /* ?presence=1: a page of the members (presence events are never stored: a poll cannot
     * replay them); ephemeral messages are live only: a short poll has none to ask for */
    int presence =
        has_since < 0
            ? -1
            : hd_tp_presence_query(req, (const char(*)[HD_CHANNEL_MAX + 1]) & p->channel, 1);
    int ephemeral = presence < 0 ? -1 : flag_of(req, "ephemeral");
    if (ephemeral == 1)
        hd_http_respond_error(req, 400,
                              "ephemeral messages are live only, never stored: a short poll "
                              "cannot have them (use a long poll, /lp, with ephemeral=1)");
    if (n < 0 || has_since < 0 || presence < 0 || ephemeral != 0) {
        free(p);
        return;
    }
    int clen = presence ? hd_req_query(req, "presence_cursor", p->cursor, sizeof(p->cursor)) : -1;
    if (clen == 0) {
        hd_http_respond_error(req, 400, "bad presence_cursor: pass the \"next\" of the last page");
        free(p);
        return;
    }
    p->wants_presence = presence == 1;
    /* A short poll reads history: the channel's rule must let this credential read it. */
    hd_tp_cred_t cred;
    if (hd_tp_connect_credential(req, &cred) < 0 ||
        hd_tp_authorize_channels(req, &cred, (const char(*)[HD_CHANNEL_MAX + 1]) & p->channel, 1,
                                 HD_AUTH_HISTORY, "poll") < 0) {
        hd_tp_cred_dispose(&cred);
        free(p);
        return;
    }
    hd_tp_cred_dispose(&cred);
    hd_worker_t *w = req->conn->worker;
    hd_breq_t *r = hd_breq_new(HD_BREQ_HISTORY, w, p->channel, (size_t)n);
    r->has_since = has_since == 1;
    r->since_epoch = has_since == 1 ? epoch : 0;
    r->since_seq = has_since == 1 ? seq : 0;
    r->limit = hd_worker_conf(w)->poll_max_messages;
    r->cookie = p;
    r->reply_cb = on_history;
    p->d = hd_http_defer(req);
    p->d->data = p;
    p->d->on_abort = poll_abort;
    HD_HUB_STAT_ADD(w, transport_conns[HD_TP_POLL], 1);
    hd_broker_submit(r);
}

/* ---- long poll ---- */

typedef struct lp_s {
    hd_deferred_t *d;
    hd_sub_t *sub;
    uint64_t timeout_ms;
    int gap;           /* the message about to come starts a new epoch */
    int ends_by_token; /* held until the token expires, sooner than timeout_ms: then 401 */
    hd_tp_life_t life; /* the token's expiry (lifetime.c) */
    char channel[HD_CHANNEL_MAX + 1];
} lp_t;

/* Ends the subscription and frees lp; returns the request to answer. */
static hd_req_t *lp_end(lp_t *lp)
{
    hd_req_t *req = lp->d->req;
    hd_worker_t *w = lp->sub->worker;
    if (req) /* NULL when aborted: the connection, and its identity, are going */
        hd_conn_set_identity(req->conn, NULL); /* it was the identity's while held */
    hd_hub_unsubscribe(lp->sub);
    HD_HUB_STAT_ADD(w, transport_conns[HD_TP_LONGPOLL], -1);
    free(lp);
    return req;
}

/* Answers (once) with history msgs[0..n), or with nothing, and ends the subscription. */
static void lp_finish(lp_t *lp, hd_message_t *const *msgs, size_t n, int gap)
{
    char next[HD_ID_MAX], channel[HD_CHANNEL_MAX + 1];
    if (n)
        memcpy(next, msgs[n - 1]->id, sizeof(next));
    else
        hd_id_format(next, sizeof(next), lp->sub->epoch, lp->sub->last_seq);
    memcpy(channel, lp->channel, sizeof(channel));
    hd_req_t *req = lp_end(lp);
    answer(req, channel, msgs, n, NULL, next, gap);
}

static void lp_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    lp_t *lp = s->data;
    if (err) {
        hd_req_t *req = lp->d->req;
        hd_conn_set_identity(req->conn, NULL);
        HD_HUB_STAT_ADD(req->conn->worker, transport_conns[HD_TP_LONGPOLL], -1);
        free(lp); /* the hub frees the failed subscription */
        hd_tp_respond_failure(req, err);
        return;
    }
    size_t max = hd_worker_conf(s->worker)->poll_max_messages;
    if (n || gap || lp->timeout_ms == 0) {
        lp_finish(lp, msgs, n > max ? max : n, gap);
        return;
    }
    /* hold: nothing to do until a message, the timeout, or the token's expiry */
    uint64_t wait = lp->timeout_ms, life = hd_tp_life_wait_ms(&lp->life);
    if (life < wait) {
        wait = life ? life : 1;
        lp->ends_by_token = 1;
    }
    hd_http_defer_timeout(lp->d, wait);
}

/*
 * A live message: the answer is the hub's HD_FMT_POLL_ANSWER encoding, the whole body built
 * once per worker and queued by reference on every poll held on the channel; only an answer
 * that must say gap is built for its poll.
 */
static void lp_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    lp_t *lp = s->data;
    if (m->kind != HD_MSG_NORMAL) { /* an event it asked for: the cursor stays where it is */
        char next[HD_ID_MAX], channel[HD_CHANNEL_MAX + 1];
        hd_id_format(next, sizeof(next), s->epoch, s->last_seq);
        memcpy(channel, lp->channel, sizeof(channel));
        answer_events(lp_end(lp), channel, encoded, next);
        return;
    }
    if (!lp->gap) {
        hd_http_respond_bufs(lp_end(lp), 200, POLL_HEADERS, "application/json", &encoded, 1);
        return;
    }
    char channel[HD_CHANNEL_MAX + 1];
    memcpy(channel, lp->channel, sizeof(channel));
    hd_req_t *req = lp_end(lp);
    hd_buf_t *obj = hd_message_encode(m, HD_FMT_JSON);
    answer(req, channel, NULL, 0, obj, m->id, 1);
    hd_buf_unref(obj);
}

static void lp_on_gap(hd_sub_t *s)
{
    ((lp_t *)s->data)->gap = 1; /* answered with the message that follows */
}

static void lp_on_timeout(hd_deferred_t *d)
{
    lp_t *lp = d->data;
    hd_req_t *req = d->req;
    /* A held poll lives as long as its token (docs/auth.md). The loop's clock may run ahead of
     * the wall clock tokens are read with: not yet expired, it waits the rest. A shutdown calls
     * here early too, and is answered as a timeout. */
    if (lp->ends_by_token && !req->conn->worker->is_draining) {
        uint64_t left = hd_tp_life_wait_ms(&lp->life);
        if (left) {
            hd_http_defer_timeout(d, left);
            return;
        }
        req = lp_end(lp);
        hd_conn_log(HD_LOG_INFO, req->conn, "token expired: held long poll answered 401");
        hd_tp_respond_auth(req, 401, "token expired", HD_ETOKENEXPIRED);
        return;
    }
    lp_finish(lp, NULL, 0, 0);
}

/* An operator's order (docs/auth.md): a held poll of a revoked token is answered 401
 * {"code":"token_revoked"}, one disconnected 409 {"code":"disconnected"}. */
static int lp_on_kick(hd_deferred_t *d, const hd_kick_t *k)
{
    lp_t *lp = d->data;
    if (k->kind == HD_KICK_CHANNEL &&
        (strlen(lp->channel) != k->len || memcmp(lp->channel, k->key, k->len) != 0))
        return 0;
    hd_tp_kick_respond(lp_end(lp), k);
    return 1;
}

static void lp_on_abort(hd_deferred_t *d)
{
    lp_end(d->data);
}

static const hd_sub_ops_t lp_sub_ops = {
    .format = HD_FMT_POLL_ANSWER,
    .on_ready = lp_on_ready,
    .on_message = lp_on_message,
    .on_gap = lp_on_gap,
};

/* ?timeout=S (seconds, may be fractional), bounded by longpoll_max_timeout. -1 after a 400. */
static int64_t timeout_of(hd_req_t *req, const hd_conf_t *conf)
{
    char v[32];
    int n = hd_req_query(req, "timeout", v, sizeof(v));
    if (n <= 0)
        return (int64_t)conf->longpoll_timeout_ms;
    char *end = v;
    double secs = 0;
    while (*end >= '0' && *end <= '9' && end - v < 8) /* whole seconds, the usual: no strtod */
        secs = secs * 10 + (*end++ - '0');
    if (*end != '\0')
        secs = strtod(v, &end);
    if (end == v || *end != '\0' || !(secs >= 0) || secs > 1e7) {
        hd_http_respond_error(req, 400, "bad timeout: expected seconds, e.g. timeout=30");
        return -1;
    }
    uint64_t ms = (uint64_t)(secs * 1000.0);
    return (int64_t)(ms > conf->longpoll_max_timeout_ms ? conf->longpoll_max_timeout_ms : ms);
}

static void on_longpoll(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_worker_t *w = req->conn->worker;
    lp_t *lp = hd_calloc(1, sizeof(*lp));
    int n = hd_tp_channel_from_path(req, 4, lp->channel);
    uint64_t epoch = 0, seq = 0;
    int has_since = n < 0 ? -1 : since_of(req, &epoch, &seq);
    int64_t timeout = has_since < 0 ? -1 : timeout_of(req, hd_worker_conf(w));
    /* ?presence=1, ?ephemeral=1: live-only events it asks for while held (docs/chat.md) */
    int presence =
        timeout < 0
            ? -1
            : hd_tp_presence_query(req, (const char(*)[HD_CHANNEL_MAX + 1]) & lp->channel, 1);
    int ephemeral = presence < 0 ? -1 : flag_of(req, "ephemeral");
    if (n < 0 || has_since < 0 || timeout < 0 || presence < 0 || ephemeral < 0) {
        free(lp);
        return;
    }
    /* Waiting for the next message is subscribing; resuming with since reads history too. */
    hd_tp_cred_t cred;
    if (hd_tp_connect_credential(req, &cred) < 0 ||
        hd_tp_authorize_channels(req, &cred, (const char(*)[HD_CHANNEL_MAX + 1]) & lp->channel, 1,
                                 has_since ? HD_AUTH_HISTORY : HD_AUTH_SUBSCRIBE, "longpoll") < 0) {
        hd_tp_cred_dispose(&cred);
        free(lp);
        return;
    }
    /* While it is held, the connection is this identity's (cleared with the answer). */
    if (cred.id)
        hd_conn_set_identity(req->conn, cred.id);
    hd_tp_life_set(&lp->life, hd_worker_conf(w), cred.id, 0);
    hd_tp_cred_dispose(&cred);
    lp->timeout_ms = (uint64_t)timeout;
    lp->d = hd_http_defer(req);
    lp->d->data = lp;
    lp->d->on_abort = lp_on_abort;
    lp->d->on_timeout = lp_on_timeout;
    lp->d->on_kick = lp_on_kick;
    HD_HUB_STAT_ADD(w, transport_conns[HD_TP_LONGPOLL], 1);
    lp->sub = hd_hub_subscribe(w, lp->channel, (size_t)n, has_since ? &epoch : NULL,
                               has_since ? &seq : NULL, &lp_sub_ops, lp);
    if (presence)
        hd_hub_presence(lp->sub, 1, NULL); /* a poll is never a member */
    if (ephemeral)
        hd_hub_ephemeral(lp->sub, 1);
}

void hd_poll_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/poll/", 1, on_poll, NULL);
    hd_router_add(r, HD_M_GET, "/lp/", 1, on_longpoll, NULL);
}
