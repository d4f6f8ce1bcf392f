/* SPDX-License-Identifier: MIT */
/*
 * memory.c: the embedded broker. It has no thread: the store (memory_store.c: the id sequence,
 * the history rings, which workers have subscribers where) sits behind one mutex, and the
 * worker that takes a request does the broker's work itself, in one short critical section:
 *
 *   worker A (took POST /pub/ch)           lock
 *     seq++, history, idempotency key         | one critical section: the node-wide order
 *     push DELIVER(m) on every worker         |  (pushes, no wake-up yet: each mailbox gets
 *       with subscribers on ch (A included)   |   the messages in sequence order)
 *     push the reply on A                     |
 *                                          unlock
 *     wake the other workers pushed to (one hd_wake_send each: the one hop; none for a join
 *     or leave a worker's presence_hold window will drain, hd_hub_push_delivery_lazy), none for A:
 *     A drains its own mailbox later in this loop pass (hd_worker_run_local), deliveries
 *     before the reply, and writes each connection's output in one writev.
 *
 * Every request is handled this way (publish, subscribe, unsubscribe, history, info, barrier,
 * the tickets of tickets.h),
 * so a subscribe's history and its worker's interest are read and counted under the same lock
 * as publishes: what was published before is in the reply, what comes after is queued behind
 * the reply in the same mailbox (the hub drops what the history already gave: last_seq).
 * Requests from a thread that is not the asking worker (the main loop's shutdown barrier)
 * are answered through the worker's wake-up.
 *
 * History of a channel is bounded by history_size (count), history_max_bytes (payload bytes)
 * and history_ttl (age, trimmed once a second by a timer on the main loop, under the lock);
 * everything the store holds by max_memory, and the number of channels by max_channels
 * (memory_store.h has the rules).
 */
#include "memory_presence.h"
#include "memory_store.h"

#include "herald/hooks.h"
#include "herald/log.h"
#include "idem.h"
#include "tickets.h"

#include <string.h>
#include <sys/time.h>

typedef struct mem_broker_s {
    hd_broker_t base;
    hd_server_t *server;
    uv_mutex_t lock;      /* the store, the idempotency table and wake below */
    uv_timer_t ttl_timer; /* on the main loop: expiry, eviction logs */
    hd_mstore_t store;
    hd_idem_t idem;      /* idempotency keys of recent publishes (idem.h) */
    hd_tstore_t tickets; /* single-use tickets waiting to be used (tickets.h) */
    hd_mpres_t pres;     /* presence members (memory_presence.h) */
    /* Under the lock, during one request: the workers pushed to (one bit each), to be woken
     * once the lock is released. */
    uint64_t *wake;
    size_t wake_words;
} mem_broker_t;

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void mark_wake(mem_broker_t *b, unsigned worker)
{
    b->wake[worker / 64] |= (uint64_t)1 << (worker % 64);
}

/* Store callback, under the lock: the message joins the worker's mailbox in sequence order. */
static void deliver(void *arg, unsigned worker, hd_message_t *m)
{
    mem_broker_t *b = arg;
    if (hd_hub_push_delivery_lazy(hd_server_worker(b->server, worker), m))
        mark_wake(b, worker); /* not for a held join or leave: the hold's end drains it */
}

/* ---- requests (all under the lock) ---- */

static void reply(mem_broker_t *b, hd_breq_t *r)
{
    r->epoch = b->store.epoch;
    r->last_seq = b->store.seq;
    hd_worker_t *w = hd_breq_push_reply(r);
    if (w)
        mark_wake(b, w->id);
}

/*
 * A live-only event (an ephemeral publish, a presence join or leave) for the workers that carry
 * its channel now: pushed on their mailboxes like a message, in the same order, with no id, no
 * history and no channel made for it. Takes the caller's reference.
 */
static void fan_out_event(mem_broker_t *b, hd_message_t *m)
{
    hd_mchan_t *c = hd_mstore_find_hashed(&b->store, m->channel, m->channel_len, m->channel_hash);
    if (c)
        hd_interest_fan_out(&c->in, m, deliver, b);
    hd_message_unref(m);
}

/* The joins and leaves of r's chain (next_op), in order. */
static void do_presence(mem_broker_t *b, hd_breq_t *r)
{
    while (r) {
        hd_breq_t *next = r->next_op;
        r->next_op = NULL;
        size_t len = strlen(r->channel);
        hd_message_t *ev = NULL;
        int err = 0;
        if (r->type == HD_BREQ_JOIN)
            ev = hd_mpres_join(&b->pres, r->channel, len, r->channel_hash, &r->member, &err);
        else
            ev = hd_mpres_leave(&b->pres, r->channel, len, r->channel_hash, r->member);
        if (ev) {
            hd_hooks_on_member(ev); /* a push on the hooks mailbox when an endpoint wants it */
            fan_out_event(b, ev);
        }
        hd_breq_free(r);
        r = next;
    }
}

static void do_unsubscribe(mem_broker_t *b, hd_breq_t *r)
{
    hd_mstore_unsubscribe(&b->store, r->worker->id, r->channel, strlen(r->channel));
    hd_breq_free(r);
}

/*
 * Publishes r's messages, except those whose idempotency key was published within the window:
 * they get the first id (a key repeated inside r: the id its first message gets).
 */
static void do_publish(mem_broker_t *b, hd_breq_t *r, hd_message_t **fresh, char **keys,
                       uint8_t *kind)
{
    enum { K_NONE = 0, K_FRESH, K_SEEN, K_REPEATED }; /* what a message's key is */
    uint64_t now = wall_ms(), seq;
    size_t n = r->n_msgs, nf = 0;
    if (n == 1 && r->msgs[0]->kind == HD_MSG_EPHEMERAL) {
        keys[0] = r->msgs[0]->idem_key; /* an ephemeral message has none to keep: freed after */
        r->msgs[0]->idem_key = NULL;
        fan_out_event(b, hd_message_ref(r->msgs[0])); /* no id, no history, no key */
        reply(b, r);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        hd_message_t *m = r->msgs[i];
        keys[i] = m->idem_key; /* the message leaves without it (history keeps no key) */
        m->idem_key = NULL;
        kind[i] = K_NONE;
        if (keys[i]) {
            if (hd_idem_find(&b->idem, m->channel, m->channel_len, keys[i], now, &seq)) {
                kind[i] = seq ? K_SEEN : K_REPEATED; /* 0: an earlier message of r */
                if (seq)
                    hd_message_set_id(m, b->store.epoch, seq);
                m->time_ms = now;
                continue;
            }
            kind[i] = K_FRESH;
            hd_idem_put(&b->idem, m->channel, m->channel_len, keys[i], 0, now);
        }
        fresh[nf++] = m;
    }
    r->err = nf ? hd_mstore_publish(&b->store, fresh, nf, now) : 0;
    for (size_t i = 0; i < n; i++) {
        hd_message_t *m = r->msgs[i];
        if (kind[i] == K_FRESH && r->err)
            hd_idem_forget(&b->idem, m->channel, m->channel_len, keys[i]);
        else if (kind[i] == K_FRESH)
            hd_idem_put(&b->idem, m->channel, m->channel_len, keys[i], m->seq, now);
        else if (kind[i] == K_REPEATED && !r->err &&
                 hd_idem_find(&b->idem, m->channel, m->channel_len, keys[i], now, &seq))
            hd_message_set_id(m, b->store.epoch, seq);
    }
    reply(b, r);
}

static void handle(mem_broker_t *b, hd_breq_t *r, hd_message_t **fresh, char **keys, uint8_t *kind)
{
    switch (r->type) {
    case HD_BREQ_PUBLISH:
        do_publish(b, r, fresh, keys, kind);
        break;
    case HD_BREQ_SUBSCRIBE:
        r->err = hd_mstore_subscribe(&b->store, r->worker->id, r, 0);
        reply(b, r);
        break;
    case HD_BREQ_UNSUBSCRIBE:
        do_unsubscribe(b, r);
        break;
    case HD_BREQ_HISTORY:
        hd_mstore_history(&b->store, r, r->limit);
        reply(b, r);
        break;
    case HD_BREQ_INFO:
        hd_mstore_info(&b->store, r);
        r->members = hd_mpres_count(&b->pres, r->channel, strlen(r->channel));
        reply(b, r);
        break;
    case HD_BREQ_JOIN:
    case HD_BREQ_LEAVE:
        do_presence(b, r);
        break;
    case HD_BREQ_PRESENCE:
        hd_mpres_page(&b->pres, r);
        reply(b, r);
        break;
    case HD_BREQ_BARRIER:
        reply(b, r);
        break;
    case HD_BREQ_TICKET_PUT:
        r->err = hd_tstore_put(&b->tickets, r->channel, r->data, r->data_len, wall_ms() + r->ttl_ms,
                               r->limit, wall_ms());
        reply(b, r);
        break;
    case HD_BREQ_TICKET_TAKE:
        free(r->data);
        r->data = NULL;
        r->err = hd_tstore_take(&b->tickets, r->channel, wall_ms(), &r->data, &r->data_len);
        reply(b, r);
        break;
    default:
        r->err = HD_EBADREQ;
        reply(b, r);
    }
}

/*
 * An operator's order (POST /admin/revoke, /admin/disconnect), on the asking worker, outside the
 * store's lock (it touches no channel): a revocation enters the process's revoked set (its own
 * lock; refused past max_revocations), then every worker is told to end the matching
 * connections (one message each: each walks its own). A revocation already in the set ended
 * its connections when it came in and refuses new ones since: nobody is told again.
 */
static void do_control(mem_broker_t *b, hd_breq_t *r)
{
    int is_new = 1;
    if (hd_kick_is_revocation(&(hd_kick_t){.kind = r->ctl_kind})) {
        hd_revset_t *set = hd_auth_revocations();
        int rc = set ? hd_revset_add(set, r->ctl_kind, r->ctl_key, r->ctl_key_len, r->ctl_until_ms,
                                     (int64_t)wall_ms(), r->ctl_max)
                     : -1;
        if (rc < 0) {
            r->err = HD_EREVOCATIONS;
            hd_breq_reply(r);
            return;
        }
        is_new = rc == 1;
    }
    /* The answer first: the asking worker's own walk (its message comes after the reply in its
     * mailbox) must not hold the operator's request. r belongs to its reply from here. */
    int kind = r->ctl_kind;
    char key[HD_AUTH_MAX_SUB + 1];
    size_t len = r->ctl_key_len;
    memcpy(key, r->ctl_key, len);
    r->ctl_nodes = 1;
    hd_breq_reply(r);
    if (is_new) {
        for (unsigned i = 0; i < hd_server_worker_count(b->server); i++)
            hd_kick_post(hd_server_worker(b->server, i), kind, key, len);
    }
}

static void on_ttl_timer(uv_timer_t *t)
{
    mem_broker_t *b = t->data;
    uv_mutex_lock(&b->lock);
    hd_mstore_expire(&b->store, wall_ms());
    hd_idem_expire(&b->idem, wall_ms());
    hd_tstore_expire(&b->tickets, wall_ms());
    hd_mstore_log_limits(&b->store, hd_now_ms());
    hd_mpres_log_limits(&b->pres, hd_now_ms());
    uv_mutex_unlock(&b->lock);
}

/* ---- the broker interface ---- */

/*
 * Does r's work now, on the calling thread (a worker, or the main loop for the shutdown
 * barrier). What the critical section needs is allocated before it; the wake-ups happen
 * after it, so the lock is held for table work only.
 */
static void mem_submit(hd_broker_t *base, hd_breq_t *r)
{
    mem_broker_t *b = (mem_broker_t *)base;
    if (r->type == HD_BREQ_CONTROL) {
        do_control(b, r);
        return;
    }
    enum { SMALL = 8 };
    hd_message_t *fresh_small[SMALL];
    char *keys_small[SMALL];
    uint8_t kind_small[SMALL];
    hd_message_t **fresh = fresh_small;
    char **keys = keys_small;
    uint8_t *kind = kind_small;
    size_t n = r->type == HD_BREQ_PUBLISH ? r->n_msgs : 0;
    if (n > SMALL) {
        fresh = hd_malloc(n * sizeof(*fresh));
        keys = hd_malloc(n * sizeof(*keys));
        kind = hd_malloc(n);
    }
    uint64_t wake_small[4];
    uint64_t *wake = b->wake_words <= 4 ? wake_small : hd_malloc(b->wake_words * 8u);

    uv_mutex_lock(&b->lock);
    memset(b->wake, 0, b->wake_words * sizeof(*b->wake));
    handle(b, r, fresh, keys, kind); /* r belongs to its reply (or is freed) from here */
    memcpy(wake, b->wake, b->wake_words * sizeof(*wake));
    uv_mutex_unlock(&b->lock);

    for (size_t i = 0; i < b->wake_words; i++) {
        for (uint64_t bits = wake[i]; bits; bits &= bits - 1) {
            unsigned k = (unsigned)(i * 64u + (unsigned)__builtin_ctzll(bits));
            hd_worker_wake(hd_server_worker(b->server, k));
        }
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    if (wake != wake_small)
        free(wake);
    if (n > SMALL) {
        free(kind);
        free(keys);
        free(fresh);
    }
}

static void mem_get_stats(hd_broker_t *base, hd_broker_stats_t *out)
{
    mem_broker_t *b = (mem_broker_t *)base;
    const hd_mstore_t *st = &b->store;
    uv_mutex_lock(&b->lock);
    out->channels = hd_chantab_count(&st->chans);
    out->messages_published = st->seq;
    out->history_messages = st->history_msgs;
    out->history_bytes = st->history_bytes;
    out->memory_bytes = st->memory_bytes;
    out->channels_evicted = st->evicted;
    out->channels_refused = st->refused;
    out->presence_channels = hd_chantab_count(&b->pres.chans);
    out->presence_members = b->pres.members;
    out->presence_events = b->pres.events;
    out->presence_refused = b->pres.refused;
    uv_mutex_unlock(&b->lock);
}

static void on_timer_closed(uv_handle_t *h)
{
    mem_broker_t *b = h->data;
    hd_mstore_dispose(&b->store);
    hd_mpres_dispose(&b->pres);
    hd_idem_dispose(&b->idem);
    hd_tstore_dispose(&b->tickets);
    uv_mutex_destroy(&b->lock);
    free(b->wake);
    free(b);
}

/* On the main loop, once no worker can submit any more; the memory goes in the timer's close
 * callback (the main loop runs it). */
static void mem_free(hd_broker_t *base)
{
    mem_broker_t *b = (mem_broker_t *)base;
    uv_close((uv_handle_t *)&b->ttl_timer, on_timer_closed);
}

static const hd_broker_ops_t memory_ops = {
    .name = "memory",
    .submit = mem_submit,
    .get_stats = mem_get_stats,
    .free = mem_free,
};

int hd_broker_memory_new(hd_broker_t **out, hd_server_t *server, const hd_conf_t *conf)
{
    mem_broker_t *b = hd_calloc(1, sizeof(*b));
    b->base.ops = &memory_ops;
    b->server = server;
    const hd_mstore_limits_t lim = {
        .history_size = conf->history_size,
        .history_ttl_ms = conf->history_ttl_ms,
        .history_max_bytes = conf->history_max_bytes,
        .max_memory_bytes = conf->max_memory_bytes,
        .max_channels = conf->max_channels,
    };
    int rc = uv_mutex_init(&b->lock);
    if (rc < 0) {
        free(b);
        return rc;
    }
    unsigned n_workers = hd_server_worker_count(server);
    b->wake_words = (n_workers + 63u) / 64u;
    b->wake = hd_calloc(b->wake_words, sizeof(*b->wake));
    /* The epoch: this process's start in milliseconds. A restart loses history, and clients
     * holding ids of the old epoch are told so. */
    hd_mstore_init(&b->store, &lim, n_workers, wall_ms(), deliver, b);
    /* Its bytes count against max_memory: a sixteenth of it at most. */
    hd_idem_init(&b->idem, conf->idempotency_window_ms, conf->max_memory_bytes / 16);
    /* Tickets waiting to be used: at most auth_max_tickets, and another sixteenth. */
    hd_tstore_init(&b->tickets, conf->max_memory_bytes / 16);
    hd_mpres_init(&b->pres, conf->presence_max_channels);
    uv_timer_init(hd_server_main_loop(server), &b->ttl_timer);
    b->ttl_timer.data = b;
    uv_timer_start(&b->ttl_timer, on_ttl_timer, 1000, 1000);
    *out = &b->base;
    return 0;
}
