/* SPDX-License-Identifier: MIT */
/*
 * notify.c: the notify hook on the hooks loop (hooks.h "The notify hook"). Workers hand it
 * events (a JSON object each: connect, disconnect, subscribe, unsubscribe of a stream); it keeps
 * them in one FIFO queue and sends them to the backend in batches, one request at a time, so
 * the backend sees them in the order they were queued:
 *
 *   event -> queue (at most queue_size events, and max_memory bytes with the events still in
 *            the hooks mailbox: each charged HK_NOTIFY_CHARGE from the worker's push until its
 *            batch is acknowledged; past either, dropped and counted)
 *     -> a batch: the first `batch` events, when that many wait or `flush` after the first
 *        came -> POST {"type":"events","node":..,"events":[{"id":..,...},...]}, signed
 *     -> 2xx: those events leave the queue; anything else: the same events (and any that came
 *        meanwhile, up to `batch`) again after a full-jitter backoff (500 ms doubling, at most
 *        30 s), until one is answered 2xx: at least once while the process lives
 *
 * Every event carries an id unique in the cluster ("ntf_" + the node's random id + a counter;
 * a dead node's stream claimed from Redis: "ntf_" + its entry's id), the same on every attempt,
 * for the backend to deduplicate on. With Redis, notify_rec.c keeps the records of the streams
 * the backend was told of; a 2xx settles what an event holds there (a disconnect's record, a
 * claimed entry).
 */
#include "herald/log.h"
#include "internal.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define RETRY_BASE_MS 500
#define RETRY_MAX_MS  30000

/* What a 2xx to an event's batch also settles (with Redis, notify_rec.c). */
enum { ACK_NONE = 0, ACK_CONN, ACK_CLAIMED };

typedef struct ev_s {
    hd_list_t link;
    size_t charge; /* in stats.notify_memory_bytes: HK_NOTIFY_CHARGE of the event's JSON */
    size_t len;
    uint8_t ack; /* ACK_*: the text after the JSON names its connection or claimed entry */
    char json[]; /* {"id":..,<the worker's members>}, then NUL, the ack's text and NUL */
} ev_t;

struct hk_notify_s {
    uv_loop_t *loop;
    const hd_notify_def_t *def;
    hk_client_conf_t cc;
    hk_pool_t *pool;
    hk_signer_t *signer;
    hd_hooks_stats_t *st;
    hd_list_t queue; /* events, oldest first; the first n_sent are in the request on its way */
    size_t n, n_sent;
    uint64_t seq;
    uint32_t failures; /* consecutive failed requests */
    hk_request_t req;
    uv_timer_t timer;
    unsigned is_sending : 1;  /* a request is on its way */
    unsigned is_waiting : 1;  /* the timer is a retry's backoff */
    unsigned is_flushing : 1; /* the timer is the flush of a partial batch */
    hk_nrec_t *rec;           /* with Redis: the records of live streams, or NULL */
    uint64_t warned_ms;
    void (*drained)(void *arg); /* shutting down: called once the last batch went */
    void *drained_arg;
    char node[24];
};

static void send_batch(hk_notify_t *nf);

/* Shutting down: the last batch went (or could not): tell the thread once, after Redis took
 * the removals of the records whose disconnects went (else a survivor reports them again). */
static void drained(hk_notify_t *nf)
{
    void (*cb)(void *) = nf->drained;
    nf->drained = NULL;
    uv_timer_stop(&nf->timer);
    if (nf->rec && hk_nrec_settle(nf->rec, cb, nf->drained_arg))
        return;
    cb(nf->drained_arg);
}

static void on_timer(uv_timer_t *t)
{
    hk_notify_t *nf = t->data;
    if (nf->drained) { /* the shutdown's deadline */
        drained(nf);
        return;
    }
    nf->is_waiting = nf->is_flushing = 0;
    send_batch(nf);
}

/* Sends a batch now, or arms the flush timer for a partial one. */
static void kick(hk_notify_t *nf)
{
    if (nf->is_sending || nf->is_waiting || nf->n == 0 || nf->drained)
        return;
    if (nf->n >= nf->def->batch || nf->def->flush_ms == 0) {
        if (nf->is_flushing)
            uv_timer_stop(&nf->timer);
        nf->is_flushing = 0;
        send_batch(nf);
    } else if (!nf->is_flushing) {
        nf->is_flushing = 1;
        uv_timer_start(&nf->timer, on_timer, nf->def->flush_ms, 0);
    }
}

static void on_answer(hk_request_t *req, int status, int fail, const char *why)
{
    hk_notify_t *nf = req->data;
    (void)fail;
    nf->is_sending = 0;
    hd_buf_unref(req->head);
    hd_buf_unref(req->body);
    req->head = req->body = NULL;
    if (status >= 200 && status <= 299) {
        for (size_t i = 0; i < nf->n_sent && !hd_list_empty(&nf->queue); i++) {
            ev_t *e = hd_container_of(nf->queue.next, ev_t, link);
            hd_list_remove(&e->link);
            if (e->ack == ACK_CONN && nf->rec)
                hk_nrec_closed(nf->rec, e->json + e->len + 1);
            else if (e->ack == ACK_CLAIMED && nf->rec)
                hk_nrec_reported(nf->rec, e->json + e->len + 1);
            HK_ADD(nf->st->notify_memory_bytes, -(uint64_t)e->charge);
            free(e);
            nf->n--;
        }
        HK_ADD(nf->st->notify_delivered, nf->n_sent);
        HK_ADD(nf->st->notify_batches, 1);
        HK_SET(nf->st->notify_pending, (uint64_t)nf->n);
        nf->n_sent = 0;
        nf->failures = 0;
        if (nf->drained) {
            if (nf->n)
                send_batch(nf);
            else
                drained(nf);
            return;
        }
        kick(nf);
        return;
    }
    if (nf->drained) {
        nf->n_sent = 0;
        HK_ADD(nf->st->notify_failures, 1);
        drained(nf);
        return;
    }
    nf->n_sent = 0;
    HK_ADD(nf->st->notify_failures, 1);
    uint32_t k = nf->failures < 16 ? nf->failures : 16;
    nf->failures++;
    uint64_t cap = (uint64_t)RETRY_BASE_MS << k;
    if (cap > RETRY_MAX_MS)
        cap = RETRY_MAX_MS;
    uint32_t r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    uint64_t wait = cap ? r % (cap + 1) : 0;
    if (uv_now(nf->loop) >= nf->warned_ms + 1000) {
        nf->warned_ms = uv_now(nf->loop);
        char st[16];
        snprintf(st, sizeof(st), "%d", status);
        hd_log_warn("notify_hook %s: %s; %zu events kept, retry in %llu ms", nf->def->ep.url,
                    status > 0 ? st : (why ? why : "failed"), nf->n, (unsigned long long)wait);
    }
    nf->is_waiting = 1;
    uv_timer_start(&nf->timer, on_timer, wait, 0);
}

static void send_batch(hk_notify_t *nf)
{
    if (nf->n == 0 || nf->is_sending)
        return;
    hd_sbuf_t body;
    hd_sbuf_init(&body, 256);
    hd_sbuf_appendf(&body, "{\"type\":\"events\",\"node\":\"%s\",\"events\":[", nf->node);
    size_t k = 0;
    for (hd_list_t *l = nf->queue.next; l != &nf->queue && k < nf->def->batch; l = l->next, k++) {
        ev_t *e = hd_container_of(l, ev_t, link);
        if (k)
            hd_sbuf_append(&body, ",", 1);
        hd_sbuf_append(&body, e->json, e->len);
    }
    hd_sbuf_append(&body, "]}", 2);
    hd_buf_t *b = hd_sbuf_finish(&body);
    char id[40];
    hk_event_id(id);
    memset(&nf->req, 0, sizeof(nf->req));
    nf->req.head = hk_signed_head(nf->signer, id, hk_wall_ms() / 1000, b);
    nf->req.body = b;
    nf->req.cb = on_answer;
    nf->req.data = nf;
    nf->n_sent = k;
    nf->is_sending = 1;
    HK_ADD(nf->st->notify_requests, 1);
    uv_update_time(nf->loop);
    hk_pool_send(nf->pool, &nf->req);
}

/* Queues json[0..len) (a JSON object) with id (NULL: a new one) and what its 2xx settles; charge
 * is what it holds in stats.notify_memory_bytes (given back when it leaves the queue). */
static void queue_event(hk_notify_t *nf, const char *json, size_t len, const char *id, int ack,
                        const char *ack_text, size_t charge)
{
    char head[96];
    char own[40];
    if (!id) {
        snprintf(own, sizeof(own), "ntf_%s%llx", nf->node, (unsigned long long)++nf->seq);
        id = own;
    }
    int idlen = snprintf(head, sizeof(head), "{\"id\":\"%s\"%s", id, len > 2 ? "," : "");
    size_t al = ack ? strlen(ack_text) : 0;
    ev_t *e = hd_malloc(sizeof(*e) + (size_t)idlen + len + al + 1);
    memcpy(e->json, head, (size_t)idlen);
    memcpy(e->json + idlen, json + 1, len - 1); /* the worker's members and its '}' */
    e->len = (size_t)idlen + len - 1;
    e->json[e->len] = '\0';
    e->ack = (uint8_t)ack;
    if (ack)
        memcpy(e->json + e->len + 1, ack_text, al + 1);
    e->charge = charge;
    hd_list_insert_tail(&nf->queue, &e->link);
    nf->n++;
    HK_ADD(nf->st->notify_events, 1);
    HK_SET(nf->st->notify_pending, (uint64_t)nf->n);
    kick(nf);
}

void hk_notify_push(hk_notify_t *nf, const char *json, size_t len)
{
    int ok = nf->n < nf->def->queue_size && len >= 2 && json[0] == '{';
    char conn[64] = "";
    int waits = nf->rec ? hk_nrec_event(nf->rec, json, len, ok, conn) : 0;
    if (!ok) {
        HK_ADD(nf->st->notify_memory_bytes, -(uint64_t)HK_NOTIFY_CHARGE(len));
        HK_ADD(nf->st->notify_dropped, 1);
        return;
    }
    queue_event(nf, json, len, NULL, waits ? ACK_CONN : ACK_NONE, conn, HK_NOTIFY_CHARGE(len));
}

/* Room for the reconciliation's events: by count, and none while the events held reach
 * max_memory (then about one per KiB left; each is charged like a worker's). */
static size_t rec_room(void *data)
{
    hk_notify_t *nf = data;
    size_t room = nf->n < nf->def->queue_size ? nf->def->queue_size - nf->n : 0;
    uint64_t held = __atomic_load_n(&nf->st->notify_memory_bytes, __ATOMIC_RELAXED);
    uint64_t max = nf->def->max_memory_bytes;
    uint64_t by_bytes = held < max ? (max - held) / 1024 : 0;
    return room < by_bytes ? room : (size_t)by_bytes;
}

static void rec_push(void *data, const char *json, size_t len, const char *id, const char *sid)
{
    hk_notify_t *nf = data;
    if (len < 2 || json[0] != '{')
        return;
    HK_ADD(nf->st->notify_memory_bytes, (uint64_t)HK_NOTIFY_CHARGE(len));
    queue_event(nf, json, len, id, sid ? ACK_CLAIMED : ACK_NONE, sid, HK_NOTIFY_CHARGE(len));
}

static const hk_nrec_ops_t rec_ops = {.room = rec_room, .push = rec_push};

hk_notify_t *hk_notify_new(uv_loop_t *loop, const hd_conf_t *conf, SSL_CTX *tls,
                           hd_hooks_stats_t *stats, const char *node)
{
    hk_notify_t *nf = hd_calloc(1, sizeof(*nf));
    nf->loop = loop;
    nf->def = conf->notify_hook;
    nf->st = stats;
    nf->cc.loop = loop;
    nf->cc.tls = tls;
    nf->cc.timeout_ms = nf->def->timeout_ms;
    nf->cc.connect_timeout_ms = conf->webhook_connect_timeout_ms < nf->def->timeout_ms
                                    ? conf->webhook_connect_timeout_ms
                                    : nf->def->timeout_ms;
    nf->cc.allow_private = conf->webhook_allow_private;
    nf->pool = hk_pool_new(&nf->def->ep, &nf->cc);
    nf->signer = hk_signer_new(&nf->def->ep);
    hd_list_init(&nf->queue);
    snprintf(nf->node, sizeof(nf->node), "%s", node);
    uv_timer_init(loop, &nf->timer);
    nf->timer.data = nf;
    /* with Redis, a crash's streams are reported by a survivor: only worth it when the backend
     * hears both ends of a stream */
    unsigned both = HD_NOTIFY_CONNECT | HD_NOTIFY_DISCONNECT;
    if (conf->redis && (nf->def->events & both) == both)
        nf->rec = hk_nrec_new(loop, conf, &rec_ops, nf);
    return nf;
}

int hk_notify_drain(hk_notify_t *nf, void (*done)(void *arg), void *arg)
{
    if (nf->n == 0)
        return nf->rec && hk_nrec_settle(nf->rec, done, arg);
    nf->drained = done;
    nf->drained_arg = arg;
    nf->is_waiting = nf->is_flushing = 0;
    uv_timer_start(&nf->timer, on_timer, nf->def->timeout_ms, 0);
    if (!nf->is_sending)
        send_batch(nf);
    return 1;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

size_t hk_notify_close(hk_notify_t *nf)
{
    if (nf->rec)
        hk_nrec_close(nf->rec);
    nf->rec = NULL;
    hk_pool_close(nf->pool); /* the request on its way ends with no callback */
    hk_signer_free(nf->signer);
    if (nf->is_sending) {
        hd_buf_unref(nf->req.head);
        hd_buf_unref(nf->req.body);
    }
    size_t lost = nf->n;
    while (!hd_list_empty(&nf->queue)) {
        ev_t *e = hd_container_of(nf->queue.next, ev_t, link);
        hd_list_remove(&e->link);
        HK_ADD(nf->st->notify_memory_bytes, -(uint64_t)e->charge);
        free(e);
    }
    uv_close((uv_handle_t *)&nf->timer, on_timer_closed);
    return lost;
}
