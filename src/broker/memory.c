/* SPDX-License-Identifier: MIT */
/*
 * memory.c: the embedded broker. One thread with its own loop owns every channel of the node
 * (a store: memory_store.c, with the id sequence, the history rings and which workers have
 * subscribers where). Workers reach it only through its mailbox (hd_breq_t) and it answers
 * through theirs, so nothing here is shared.
 *
 * History of a channel is bounded by history_size (count), history_max_bytes (payload bytes)
 * and history_ttl (age, trimmed once a second); everything the store holds by max_memory, and
 * the number of channels by max_channels (memory_store.h has the rules).
 */
#include "memory_store.h"

#include "herald/log.h"
#include "idem.h"

#include <string.h>
#include <sys/time.h>

typedef struct mem_broker_s {
    hd_broker_t base;
    hd_server_t *server;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t ttl_timer;
    hd_mpsc_t mailbox;
    hd_mstore_t store;
    int is_stopping;         /* atomic: set by the thread that frees the broker */
    hd_broker_stats_t stats; /* written here, read by workers (relaxed) */
    hd_idem_t idem;          /* idempotency keys of recent publishes (idem.h) */
} mem_broker_t;

#define STAT_SET(b, f, v) __atomic_store_n(&(b)->stats.f, (v), __ATOMIC_RELAXED)

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void update_stats(mem_broker_t *b)
{
    const hd_mstore_t *st = &b->store;
    STAT_SET(b, channels, st->chans.n);
    STAT_SET(b, messages_published, st->seq);
    STAT_SET(b, history_messages, st->history_msgs);
    STAT_SET(b, history_bytes, st->history_bytes);
    STAT_SET(b, memory_bytes, st->memory_bytes);
    STAT_SET(b, channels_evicted, st->evicted);
    STAT_SET(b, channels_refused, st->refused);
}

static void deliver(void *arg, unsigned worker, hd_message_t *m)
{
    mem_broker_t *b = arg;
    hd_hub_post_delivery(hd_server_worker(b->server, worker), m);
}

/* ---- requests ---- */

static void reply(mem_broker_t *b, hd_breq_t *r)
{
    r->epoch = b->store.epoch;
    r->last_seq = b->store.seq;
    hd_breq_reply(r);
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
static void do_publish(mem_broker_t *b, hd_breq_t *r)
{
    enum { K_NONE = 0, K_FRESH, K_SEEN, K_REPEATED }; /* what a message's key is */
    uint64_t now = wall_ms(), seq;
    size_t n = r->n_msgs, nf = 0;
    hd_message_t **fresh = hd_malloc((n ? n : 1) * sizeof(*fresh));
    char **keys = hd_calloc(n ? n : 1, sizeof(*keys)); /* taken from the messages: by index */
    uint8_t *kind = hd_calloc(n ? n : 1, 1);
    for (size_t i = 0; i < n; i++) {
        hd_message_t *m = r->msgs[i];
        keys[i] = m->idem_key; /* the message leaves without it (history keeps no key) */
        m->idem_key = NULL;
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
        free(keys[i]);
    }
    free(kind);
    free(keys);
    free(fresh);
    reply(b, r);
}

static void handle(mem_broker_t *b, hd_breq_t *r)
{
    switch (r->type) {
    case HD_BREQ_PUBLISH:
        do_publish(b, r);
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
        reply(b, r);
        break;
    case HD_BREQ_BARRIER:
        reply(b, r);
        break;
    default:
        r->err = HD_EBADREQ;
        reply(b, r);
    }
}

static void on_wakeup(uv_async_t *a)
{
    mem_broker_t *b = a->data;
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(&b->mailbox)) != NULL)
        handle(b, (hd_breq_t *)m);
    update_stats(b);
    hd_mstore_log_limits(&b->store, hd_now_ms());
    if (__atomic_load_n(&b->is_stopping, __ATOMIC_ACQUIRE)) {
        uv_close((uv_handle_t *)&b->wakeup, NULL);
        uv_close((uv_handle_t *)&b->ttl_timer, NULL);
    }
}

static void on_ttl_timer(uv_timer_t *t)
{
    mem_broker_t *b = t->data;
    hd_mstore_expire(&b->store, wall_ms());
    hd_idem_expire(&b->idem, wall_ms());
    update_stats(b);
    hd_mstore_log_limits(&b->store, hd_now_ms());
}

/* ---- the broker interface ---- */

static void mem_submit(hd_broker_t *base, hd_breq_t *r)
{
    mem_broker_t *b = (mem_broker_t *)base;
    hd_mpsc_push(&b->mailbox, &r->base);
    uv_async_send(&b->wakeup);
}

static void mem_get_stats(hd_broker_t *base, hd_broker_stats_t *out)
{
    mem_broker_t *b = (mem_broker_t *)base;
    out->channels = __atomic_load_n(&b->stats.channels, __ATOMIC_RELAXED);
    out->messages_published = __atomic_load_n(&b->stats.messages_published, __ATOMIC_RELAXED);
    out->history_messages = __atomic_load_n(&b->stats.history_messages, __ATOMIC_RELAXED);
    out->history_bytes = __atomic_load_n(&b->stats.history_bytes, __ATOMIC_RELAXED);
    out->memory_bytes = __atomic_load_n(&b->stats.memory_bytes, __ATOMIC_RELAXED);
    out->channels_evicted = __atomic_load_n(&b->stats.channels_evicted, __ATOMIC_RELAXED);
    out->channels_refused = __atomic_load_n(&b->stats.channels_refused, __ATOMIC_RELAXED);
}

static void mem_free(hd_broker_t *base)
{
    mem_broker_t *b = (mem_broker_t *)base;
    __atomic_store_n(&b->is_stopping, 1, __ATOMIC_RELEASE);
    uv_async_send(&b->wakeup);
    uv_thread_join(&b->thread);
    uv_loop_close(&b->loop);
    hd_mstore_dispose(&b->store);
    hd_idem_dispose(&b->idem);
    free(b);
}

static const hd_broker_ops_t memory_ops = {
    .name = "memory",
    .submit = mem_submit,
    .get_stats = mem_get_stats,
    .free = mem_free,
};

static void broker_main(void *arg)
{
    mem_broker_t *b = arg;
    hd_log_thread_name("broker");
    uv_run(&b->loop, UV_RUN_DEFAULT);
}

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
    /* The epoch: this process's start in milliseconds. A restart loses history, and clients
     * holding ids of the old epoch are told so. */
    hd_mstore_init(&b->store, &lim, hd_server_worker_count(server), wall_ms(), deliver, b);
    hd_mpsc_init(&b->mailbox);
    int rc = uv_loop_init(&b->loop);
    if (rc < 0) {
        hd_mstore_dispose(&b->store);
        free(b);
        return rc;
    }
    uv_async_init(&b->loop, &b->wakeup, on_wakeup);
    b->wakeup.data = b;
    uv_timer_init(&b->loop, &b->ttl_timer);
    b->ttl_timer.data = b;
    uv_timer_start(&b->ttl_timer, on_ttl_timer, 1000, 1000);
    /* Its bytes count against max_memory: a sixteenth of it at most. */
    hd_idem_init(&b->idem, conf->idempotency_window_ms, conf->max_memory_bytes / 16);
    if ((rc = uv_thread_create(&b->thread, broker_main, b)) < 0) {
        hd_idem_dispose(&b->idem);
        uv_close((uv_handle_t *)&b->wakeup, NULL);
        uv_close((uv_handle_t *)&b->ttl_timer, NULL);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        hd_mstore_dispose(&b->store);
        free(b);
        return rc;
    }
    *out = &b->base;
    return 0;
}

static hd_broker_t *the_broker;

void hd_broker_set(hd_broker_t *b)
{
    the_broker = b;
}

hd_broker_t *hd_broker_get(void)
{
    return the_broker;
}
