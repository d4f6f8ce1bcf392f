/* SPDX-License-Identifier: MIT */
/*
 * sse.c: Server-Sent Events.
 *
 *   GET /sse/{channel}                    one channel; events carry id: and data:
 *   GET /sse?channel=a&channel=b          several; events also carry event: <channel>
 *   ...&format=json                       either; data: is the message object of the polls
 *                                         (id, channel, publisher, data), no event: line
 *
 * Resume with the Last-Event-ID header or ?last_event_id=. Ids are node-wide sequence numbers,
 * so the last id a client saw resumes every channel of its stream at once; for that the stream
 * emits events in sequence order: nothing is written until every channel's subscription is
 * live, then the histories (and anything that arrived meanwhile) go out merged by sequence, and
 * live events follow in the broker's order.
 *
 * The response has no length: the body runs until the connection closes. retry: is sent with
 * per-connection jitter; a comment line every sse_heartbeat keeps proxies from timing out. A
 * client more than max_queue_bytes behind gets a final comment and is disconnected.
 *
 * Replayed history may be larger than max_queue_bytes (history_max_bytes is per channel): it is
 * written as the client reads, max_queue_bytes at a time, and live events wait behind it; only
 * live events that pile up past max_queue_bytes make a client "too far behind".
 */
#include "herald/hooks.h"
#include "herald/transport.h"

#include <stdlib.h>
#include <string.h>

#define SSE_HEADERS                                                                                \
    "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"                \
    "X-Accel-Buffering: no\r\nConnection: close\r\n"

#define SSE_GAP_EVENT                                                                              \
    "event: herald-gap\ndata: {\"channel\":\"%s\",\"reason\":\"history lost or expired; some "     \
    "messages may be missing\"}\n\n"

typedef struct sse_s {
    hd_worker_t *w;
    hd_deferred_t *d; /* until the stream starts */
    hd_conn_t *conn;  /* once it has */
    hd_sub_t **subs;  /* n_subs of them: an idle stream stays small */
    uint32_t n_subs, n_ready;
    hd_message_t **early; /* history and live messages not written yet, by sequence */
    size_t n_early, cap_early, early_sent;
    size_t live_bytes; /* what the live messages in early hold (early_cost) */
    char *gaps;        /* channels whose history may be incomplete, '\0'-separated */
    size_t gaps_len;
    uint64_t beat_at_ms; /* loop time of the next heartbeat */
    hd_tp_life_t life;   /* the token's refresh notice and expiry (lifetime.c) */
    uint8_t fmt;         /* HD_FMT_SSE, HD_FMT_SSE_NAMED or HD_FMT_SSE_JSON */
    unsigned is_failed : 1;
    unsigned is_replaying : 1; /* streaming, and early is still being written */
} sse_t;

static const hd_conn_ops_t sse_conn_ops;

static void unsubscribe_all(sse_t *s)
{
    for (uint32_t i = 0; i < s->n_subs; i++)
        if (s->subs[i])
            hd_hub_unsubscribe(s->subs[i]);
    s->n_subs = 0;
}

static void free_sse(sse_t *s)
{
    unsubscribe_all(s);
    free(s->subs);
    for (size_t i = 0; i < s->n_early; i++)
        hd_message_unref(s->early[i]);
    free(s->early);
    free(s->gaps);
    free(s);
}

/* What a live message kept in early holds: its data, and the message and its slot (so a flood
 * of tiny events cannot pile up under a bound on data bytes alone). */
static size_t early_cost(const hd_message_t *m)
{
    return sizeof(*m) + sizeof(m) + m->len;
}

static void keep_early(sse_t *s, hd_message_t *m)
{
    s->early = hd_grow_array(s->early, &s->cap_early, s->n_early + 1, sizeof(*s->early), 16);
    s->early[s->n_early++] = hd_message_ref(m);
}

static int by_seq(const void *a, const void *b)
{
    const hd_message_t *x = *(hd_message_t *const *)a, *y = *(hd_message_t *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void drop_slow(sse_t *s)
{
    hd_conn_t *c = s->conn;
    static const char bye[] = ": disconnected: this client fell too far behind; "
                              "reconnect with Last-Event-ID to resume\n\n";
    hd_conn_send_copy(c, bye, sizeof(bye) - 1);
    HD_HUB_STAT_ADD(s->w, slow_dropped, 1);
    hd_conn_log(HD_LOG_INFO, c, "slow subscriber disconnected (%zu bytes queued)",
                hd_conn_queued_bytes(c));
    hd_conn_finish(c);
}

/* Queues bytes unless the client is too far behind, in which case it is let go. One event is
 * always accepted on an empty queue, however large: max_message_size may exceed the limit. */
static int send_or_drop(sse_t *s, hd_buf_t *b)
{
    hd_conn_t *c = s->conn;
    size_t queued = hd_conn_queued_bytes(c);
    if (queued > 0 && queued + b->len > hd_worker_conf(s->w)->max_queue_bytes) {
        drop_slow(s);
        return -1;
    }
    hd_conn_send(c, b, 0, b->len);
    return 0;
}

/* Writes what early still holds, max_queue_bytes at a time (at least one event); the rest goes
 * when the connection drained. Live events follow once early is empty. */
static void replay(sse_t *s)
{
    hd_conn_t *c = s->conn;
    size_t max = hd_worker_conf(s->w)->max_queue_bytes;
    while (s->early_sent < s->n_early) {
        hd_message_t *m = s->early[s->early_sent];
        if (hd_conn_queued_bytes(c) > 0 && hd_conn_queued_bytes(c) + m->len > max)
            return; /* on_drain comes back */
        hd_buf_t *b = hd_message_encode(m, s->fmt);
        hd_conn_send(c, b, 0, b->len);
        hd_buf_unref(b);
        s->early_sent++;
    }
    for (size_t i = 0; i < s->n_early; i++)
        hd_message_unref(s->early[i]);
    free(s->early);
    s->early = NULL;
    s->n_early = s->cap_early = s->early_sent = s->live_bytes = 0;
    s->is_replaying = 0;
}

/* Arms the connection's one timer for the next heartbeat or token event, whichever is first. */
static void arm_timer(sse_t *s, uint64_t now)
{
    uint64_t wait = s->beat_at_ms > now ? s->beat_at_ms - now : 1;
    uint64_t life = hd_tp_life_wait_ms(&s->life);
    if (life < wait)
        wait = life ? life : 1;
    hd_conn_set_timeout(s->conn, wait);
}

static void start_stream(sse_t *s)
{
    hd_req_t *req = s->d->req;
    const hd_conf_t *conf = hd_worker_conf(s->w);
    s->d = NULL;
    if (hd_hooks_notify_wants(HD_NOTIFY_CONNECT)) {
        const char *chs[HD_TP_HOOK_MAX_CHANNELS];
        size_t lens[HD_TP_HOOK_MAX_CHANNELS], n = 0;
        for (uint32_t i = 0; i < s->n_subs && n < HD_TP_HOOK_MAX_CHANNELS; i++) {
            if (s->subs[i]) {
                chs[n] = hd_sub_channel(s->subs[i]);
                lens[n] = strlen(chs[n]);
                n++;
            }
        }
        hd_tp_notify_connect(req->conn, hd_req_client_ip(req), "sse", chs, lens, n);
    }
    hd_http_take_over(req, 200, SSE_HEADERS, &sse_conn_ops, s);
    hd_conn_t *c = s->conn;
    if (c->is_closing || c->data != s)
        return;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256);
    uint64_t retry = conf->sse_retry_ms + hd_tp_jitter((uint32_t)conf->sse_retry_ms + 1);
    hd_sbuf_appendf(&sb, "retry: %llu\n\n", (unsigned long long)retry);
    for (size_t off = 0; off < s->gaps_len; off += strlen(s->gaps + off) + 1) {
        hd_sbuf_appendf(&sb, SSE_GAP_EVENT, s->gaps + off);
    }
    hd_buf_t *head = hd_sbuf_finish(&sb);
    hd_conn_send(c, head, 0, head->len);
    hd_buf_unref(head);
    if (s->n_early > 1)
        qsort(s->early, s->n_early, sizeof(*s->early), by_seq);
    uint64_t now = uv_now(&s->w->loop);
    s->beat_at_ms = now + conf->sse_heartbeat_ms;
    hd_tp_life_set(&s->life, conf, c->identity, 1);
    arm_timer(s, now);
    s->is_replaying = 1;
    replay(s);
}

static void fail_stream(sse_t *s, int err)
{
    hd_req_t *req = s->d->req;
    s->d = NULL;
    HD_HUB_STAT_ADD(s->w, transport_conns[HD_TP_SSE], -1);
    free_sse(s);
    hd_conn_set_identity(req->conn, NULL); /* the connection goes on as plain HTTP */
    hd_tp_respond_failure(req, err);
}

static void note_gap(sse_t *s, const char *name)
{
    size_t len = strlen(name);
    s->gaps = hd_realloc(s->gaps, s->gaps_len + len + 1);
    memcpy(s->gaps + s->gaps_len, name, len + 1);
    s->gaps_len += len + 1;
}

static void sub_on_ready(hd_sub_t *sub, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    sse_t *s = sub->data;
    if (err) {
        for (uint32_t i = 0; i < s->n_subs; i++)
            if (s->subs[i] == sub)
                s->subs[i] = NULL; /* the hub frees it */
        fail_stream(s, err);
        return;
    }
    for (size_t i = 0; i < n; i++)
        keep_early(s, msgs[i]);
    if (gap)
        note_gap(s, hd_sub_channel(sub));
    if (++s->n_ready == s->n_subs)
        start_stream(s);
}

static void sub_on_message(hd_sub_t *sub, hd_message_t *m, hd_buf_t *encoded)
{
    sse_t *s = sub->data;
    if (m->kind != HD_MSG_NORMAL && (s->d || s->is_replaying))
        return; /* a live-only event for a stream not live yet: it was not there to see it */
    if (s->d || s->is_replaying) {
        /* Another channel of this stream is not live yet, or history is still being written:
         * hold it, it goes out in order after what is before it. */
        if (s->live_bytes + early_cost(m) > hd_worker_conf(s->w)->max_queue_bytes) {
            if (s->d)
                fail_stream(s, HD_EOVERLOAD);
            else
                drop_slow(s);
            return;
        }
        keep_early(s, m);
        s->live_bytes += early_cost(m);
        return;
    }
    uint64_t conn_id = s->conn->id;
    if (send_or_drop(s, encoded) == 0)
        hd_rcpt_delivered(m, conn_id); /* when a /ws publisher asked for a receipt */
}

static void sub_on_gap(hd_sub_t *sub)
{
    sse_t *s = sub->data;
    if (s->d) {
        note_gap(s, hd_sub_channel(sub)); /* sent when the stream starts */
        return;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 160);
    hd_sbuf_appendf(&sb, SSE_GAP_EVENT, hd_sub_channel(sub));
    hd_buf_t *b = hd_sbuf_finish(&sb);
    send_or_drop(s, b);
    hd_buf_unref(b);
}

static const hd_sub_ops_t sub_ops_plain = {.format = HD_FMT_SSE,
                                           .on_ready = sub_on_ready,
                                           .on_message = sub_on_message,
                                           .on_gap = sub_on_gap};
static const hd_sub_ops_t sub_ops_named = {.format = HD_FMT_SSE_NAMED,
                                           .on_ready = sub_on_ready,
                                           .on_message = sub_on_message,
                                           .on_gap = sub_on_gap};
static const hd_sub_ops_t sub_ops_json = {.format = HD_FMT_SSE_JSON,
                                          .on_ready = sub_on_ready,
                                          .on_message = sub_on_message,
                                          .on_gap = sub_on_gap};

/* ---- the connection, once streaming ---- */

static void sse_on_data(hd_conn_t *c, const char *data, size_t len)
{
    (void)c; /* an EventSource sends nothing more; ignore whatever comes */
    (void)data;
    (void)len;
}

static void sse_on_drain(hd_conn_t *c)
{
    sse_t *s = c->data;
    if (s->is_replaying)
        replay(s);
}

/* event: herald-refresh / herald-expired, data: {"exp":N,...} (docs/auth.md). */
static void send_auth_event(sse_t *s, const char *event, const char *extra)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "event: %s\ndata: {\"exp\":%lld%s}\n\n", event,
                     (long long)hd_identity_exp(s->conn->identity), extra);
    hd_conn_send_copy(s->conn, text, (size_t)n);
}

/* The one timer: a heartbeat comment every sse_heartbeat, the token's refresh notice, and its
 * expiry (a last event, then the end of the stream). */
static void sse_on_timeout(hd_conn_t *c)
{
    sse_t *s = c->data;
    static const char beat[] = ":\n\n";
    int life = hd_tp_life_due(&s->life);
    if (life == HD_TP_LIFE_EXPIRED) {
        hd_conn_log(HD_LOG_INFO, c, "token expired: stream ended");
        send_auth_event(s, "herald-expired",
                        ",\"code\":\"token_expired\",\"error\":\"token expired; reconnect with a "
                        "new token and Last-Event-ID\"");
        hd_conn_finish(c);
        return;
    }
    if (life == HD_TP_LIFE_REFRESH)
        send_auth_event(s, "herald-refresh", "");
    uint64_t now = uv_now(&s->w->loop);
    if (now >= s->beat_at_ms) {
        if (hd_conn_queued_bytes(c) == 0)
            hd_conn_send_copy(c, beat, sizeof(beat) - 1);
        s->beat_at_ms = now + hd_worker_conf(s->w)->sse_heartbeat_ms;
    }
    arm_timer(s, now);
}

static void sse_on_shutdown(hd_conn_t *c)
{
    sse_t *s = c->data;
    const hd_conf_t *conf = hd_worker_conf(s->w);
    char bye[128];
    uint64_t retry = conf->sse_retry_ms + hd_tp_jitter((uint32_t)conf->sse_retry_ms + 1);
    int n = snprintf(bye, sizeof(bye), "retry: %llu\n: server shutting down; reconnect\n\n",
                     (unsigned long long)retry);
    hd_conn_send_copy(c, bye, (size_t)n);
    hd_conn_finish(c);
}

/* 1 when one of the stream's channels is key[0..len). */
static int has_channel(const sse_t *s, const char *key, size_t len)
{
    for (uint32_t i = 0; i < s->n_subs; i++) {
        const char *ch = s->subs[i] ? hd_sub_channel(s->subs[i]) : NULL;
        if (ch && strlen(ch) == len && memcmp(ch, key, len) == 0)
            return 1;
    }
    return 0;
}

/* An operator's order (docs/auth.md): a last event, event: herald-revoked or
 * herald-disconnected with data {"code":..,"error":..}, then the stream ends. */
static int sse_on_kick(hd_conn_t *c, const hd_kick_t *k)
{
    sse_t *s = c->data;
    if (k->kind == HD_KICK_CHANNEL && !has_channel(s, k->key, k->len))
        return 0;
    char text[256];
    int n = snprintf(text, sizeof(text), "event: %s\ndata: {\"code\":\"%s\",\"error\":\"%s\"}\n\n",
                     hd_kick_is_revocation(k) ? "herald-revoked" : "herald-disconnected",
                     hd_tp_kick_code(k), hd_tp_kick_reason(k));
    /* DEBUG: an order may end thousands at once; kick.c logs one line per worker. */
    hd_conn_log(HD_LOG_DEBUG, c, "stream ended: %s", hd_tp_kick_reason(k));
    hd_conn_send_copy(c, text, (size_t)n);
    hd_conn_finish(c);
    return 1;
}

static void sse_on_close(hd_conn_t *c)
{
    sse_t *s = c->data;
    hd_tp_notify_disconnect(c);
    HD_HUB_STAT_ADD(s->w, transport_conns[HD_TP_SSE], -1);
    free_sse(s);
}

static const hd_conn_ops_t sse_conn_ops = {
    .name = "sse",
    .on_data = sse_on_data,
    .on_drain = sse_on_drain,
    .on_timeout = sse_on_timeout,
    .on_shutdown = sse_on_shutdown,
    .on_close = sse_on_close,
    .on_kick = sse_on_kick,
};

/* ---- the request ---- */

static void sse_on_abort(hd_deferred_t *d)
{
    sse_t *s = d->data;
    HD_HUB_STAT_ADD(s->w, transport_conns[HD_TP_SSE], -1);
    free_sse(s);
}

/* The order came while the stream's subscriptions are on their way: answered as a refused
 * request (401 token_revoked, 409 disconnected) instead of starting. */
static int sse_on_deferred_kick(hd_deferred_t *d, const hd_kick_t *k)
{
    sse_t *s = d->data;
    if (k->kind == HD_KICK_CHANNEL && !has_channel(s, k->key, k->len))
        return 0;
    hd_req_t *req = d->req;
    s->d = NULL;
    HD_HUB_STAT_ADD(s->w, transport_conns[HD_TP_SSE], -1);
    free_sse(s);
    hd_conn_set_identity(req->conn, NULL);
    hd_tp_kick_respond(req, k);
    return 1;
}

/* Collects ?channel= values, at most max of them. Returns the count, or -1 after a 400. */
static int channels_from_query(hd_req_t *req, char (*names)[HD_CHANNEL_MAX + 1], int max)
{
    /* No query: no arithmetic on its NULL pointer (UBSan under clang). */
    const char *p = req->query, *end = p ? p + req->query_len : NULL;
    int n = 0;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop - p > 8 && memcmp(p, "channel=", 8) == 0) {
            /* reuse the query decoder on a one-parameter view */
            hd_req_t view = *req;
            view.query = p;
            view.query_len = (size_t)(stop - p);
            char v[HD_CHANNEL_MAX + 2];
            int len = hd_req_query(&view, "channel", v, sizeof(v));
            if (len < 0 || !hd_channel_name_valid(v, (size_t)len)) {
                hd_http_respond_error(
                    req, 400, "bad channel name: 1-128 characters of A-Z a-z 0-9 . _ - : @");
                return -1;
            }
            int dup = 0;
            for (int i = 0; i < n; i++)
                dup |= strcmp(names[i], v) == 0;
            if (!dup) {
                if (n == max) {
                    char msg[128];
                    snprintf(msg, sizeof(msg),
                             "too many channels: at most %d per stream "
                             "(max_subscriptions_per_connection)",
                             max);
                    hd_hub_note_refused(req->conn->worker, HD_SUBS_LIMIT_CONNECTION);
                    hd_http_respond_error(req, 400, msg);
                    return -1;
                }
                memcpy(names[n++], v, (size_t)len + 1);
            }
        }
        p = stop + 1;
    }
    if (n == 0)
        hd_http_respond_error(req, 400,
                              "name at least one channel: /sse/{channel} or /sse?channel=a");
    return n ? n : -1;
}

static const hd_sub_ops_t *ops_of(int fmt)
{
    return fmt == HD_FMT_SSE_JSON    ? &sub_ops_json
           : fmt == HD_FMT_SSE_NAMED ? &sub_ops_named
                                     : &sub_ops_plain;
}

/* ?format=json picks the JSON form, ?format=text (or none) the plain one. Returns the
 * stream's HD_FMT_*, or -1 after a 400. */
static int format_from_query(hd_req_t *req, int named)
{
    /* Room for any value the query holds, so that a long one is refused, not taken as none */
    char *v = hd_malloc(req->query_len + 1);
    int len = hd_req_query(req, "format", v, req->query_len + 1);
    int fmt = -1;
    if (len < 0 || strcmp(v, "text") == 0)
        fmt = named ? HD_FMT_SSE_NAMED : HD_FMT_SSE;
    else if (strcmp(v, "json") == 0)
        fmt = HD_FMT_SSE_JSON;
    else
        hd_http_respond_error(req, 400, "format must be json or text");
    free(v);
    return fmt;
}

static void on_sse(hd_req_t *req, void *arg)
{
    (void)arg;
    int named = req->path_len == 4; /* "/sse" with ?channel= */
    int max = named ? (int)hd_worker_conf(req->conn->worker)->max_subscriptions_per_connection : 1;
    char(*names)[HD_CHANNEL_MAX + 1] = hd_malloc((size_t)max * sizeof(*names));
    int n;
    if (named) {
        n = channels_from_query(req, names, max);
    } else {
        n = hd_tp_channel_from_path(req, 5, names[0]) < 0 ? -1 : 1;
    }
    if (n < 0)
        goto done;
    int fmt = format_from_query(req, named);
    if (fmt < 0)
        goto done;
    /* Resume point: the Last-Event-ID header, or ?last_event_id= for clients without headers. */
    uint64_t epoch = 0, seq = 0;
    int has_since = 0;
    size_t len;
    const char *hdr = hd_req_header(req, "last-event-id", &len);
    char v[256];
    int qlen = hd_req_query(req, "last_event_id", v, sizeof(v));
    if (hdr && len) {
        if (hd_tp_parse_id(req, "Last-Event-ID", hdr, len, &epoch, &seq) < 0)
            goto done;
        has_since = 1;
    } else if (qlen > 0) {
        if (hd_tp_parse_id(req, "last_event_id", v, (size_t)qlen, &epoch, &seq) < 0)
            goto done;
        has_since = 1;
    }
    /* Every channel of the stream must be allowed; a resume reads history too. */
    hd_tp_cred_t cred;
    if (hd_tp_connect_credential(req, &cred) < 0)
        goto done;
    if (hd_tp_authorize_channels(req, &cred, (const char(*)[HD_CHANNEL_MAX + 1]) names, (size_t)n,
                                 has_since ? HD_AUTH_HISTORY : HD_AUTH_SUBSCRIBE, "sse") < 0) {
        hd_tp_cred_dispose(&cred);
        goto done;
    }
    /* ?presence=1: join and leave events of the stream's channels (each needs presence on). */
    int events = hd_tp_presence_query(req, (const char(*)[HD_CHANNEL_MAX + 1]) names, (size_t)n);
    if (events < 0) {
        hd_tp_cred_dispose(&cred);
        goto done;
    }
    /* The stream is this identity's for its lifetime. */
    if (cred.id)
        hd_conn_set_identity(req->conn, cred.id);
    int is_backend = cred.is_backend;
    hd_tp_cred_dispose(&cred);
    hd_worker_t *w = req->conn->worker;
    sse_t *s = hd_calloc(1, sizeof(*s));
    s->w = w;
    s->conn = req->conn;
    s->fmt = (uint8_t)fmt;
    s->d = hd_http_defer(req);
    s->d->data = s;
    s->d->on_abort = sse_on_abort;
    s->d->on_kick = sse_on_deferred_kick;
    HD_HUB_STAT_ADD(w, transport_conns[HD_TP_SSE], 1);
    s->n_subs = (uint32_t)n;
    s->subs = hd_calloc((size_t)n, sizeof(*s->subs));
    for (int i = 0; i < n; i++) {
        s->subs[i] = hd_hub_subscribe(w, names[i], strlen(names[i]), has_since ? &epoch : NULL,
                                      has_since ? &seq : NULL, ops_of(fmt), s);
        hd_hub_presence(
            s->subs[i], events,
            hd_tp_member(hd_worker_conf(w), req->conn, is_backend, names[i], strlen(names[i])));
    }
done:
    free(names);
}

void hd_sse_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/sse/", 1, on_sse, NULL);
    hd_router_add(r, HD_M_GET, "/sse", 0, on_sse, NULL);
}
