/* SPDX-License-Identifier: MIT */
/*
 * memory.c: the embedded broker. One thread with its own loop owns every channel of the node:
 * the id sequence, the history rings and which workers have subscribers where. Workers reach it
 * only through its mailbox (hd_breq_t) and it answers through theirs, so nothing here is shared.
 *
 * History of a channel is a ring of message references bounded by history_size (count),
 * history_max_bytes (payload bytes) and history_ttl (age, trimmed once a second). All history of
 * the node is bounded by max_memory: past it, the least recently published channels lose their
 * history first. A channel exists while it has subscribers or history.
 *
 * Gap detection: each channel remembers the highest sequence that ever left its history
 * (trimmed_seq). A resume from a sequence below it may have missed messages; so may one from
 * another epoch (ids of a previous process). A deleted channel leaves its trimmed_seq in a
 * fixed table of tombstones indexed by a keyed hash of its name, where a channel of that name made
 * again (or asked about while gone) finds it: a collision only makes a gap report cautious,
 * and a quiet channel is never reported as having lost history it never had.
 */
#include "herald/hmap.h"
#include "herald/log.h"
#include "herald/pubsub.h"

#include <string.h>
#include <sys/time.h>

typedef struct mchan_s {
    hd_hnode_t node; /* in broker->chans, keyed by name */
    hd_list_t lru;   /* broker->lru: least recently published first */
    hd_message_t **ring;
    uint32_t cap, head, len;
    size_t bytes;
    uint64_t trimmed_seq;
    char last_id[HD_ID_MAX];
    uint64_t subs_total;
    uint32_t *subs; /* per worker */
    uint8_t name_len;
    char name[HD_CHANNEL_MAX + 1];
} mchan_t;

typedef struct mem_broker_s {
    hd_broker_t base;
    hd_server_t *server;
    unsigned n_workers;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t ttl_timer;
    hd_mpsc_t mailbox;
    uint32_t history_size;
    uint64_t history_ttl_ms;
    size_t history_max_bytes;
    size_t max_memory_bytes;
    hd_hmap_t chans;
    hd_list_t lru;
    uint64_t epoch, seq;
    size_t total_bytes;
    uint64_t *tombs; /* N_TOMBS: highest sequence lost with a deleted channel, by name hash */
    int is_stopping; /* atomic: set by the thread that frees the broker */
    hd_broker_stats_t stats; /* written here, read by workers (relaxed) */
} mem_broker_t;

#define STAT_SET(b, f, v) __atomic_store_n(&(b)->stats.f, (v), __ATOMIC_RELAXED)
#define N_TOMBS           65536

static uint64_t *tomb_of(mem_broker_t *b, const char *name, size_t len)
{
    return &b->tombs[hd_hash(name, len) & (N_TOMBS - 1)];
}

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- channels ---- */

static mchan_t *find_chan(mem_broker_t *b, const char *name, size_t len)
{
    hd_hnode_t *n = hd_hmap_find(&b->chans, name, len);
    return n ? hd_container_of(n, mchan_t, node) : NULL;
}

static mchan_t *get_chan(mem_broker_t *b, const char *name, size_t len)
{
    mchan_t *c = find_chan(b, name, len);
    if (c)
        return c;
    c = hd_calloc(1, sizeof(*c));
    memcpy(c->name, name, len);
    c->name_len = (uint8_t)len;
    c->cap = b->history_size;
    c->ring = c->cap ? hd_calloc(c->cap, sizeof(*c->ring)) : NULL;
    c->subs = hd_calloc(b->n_workers, sizeof(*c->subs));
    /* A channel deleted earlier may have had messages under this name. */
    c->trimmed_seq = *tomb_of(b, name, len);
    c->node.key = c->name;
    c->node.key_len = len;
    hd_hmap_insert(&b->chans, &c->node);
    hd_list_insert_tail(&b->lru, &c->lru);
    STAT_SET(b, channels, b->chans.n);
    return c;
}

static hd_message_t *ring_at(const mchan_t *c, uint32_t i)
{
    return c->ring[(c->head + i) % c->cap];
}

static void drop_oldest(mem_broker_t *b, mchan_t *c)
{
    hd_message_t *m = c->ring[c->head];
    c->ring[c->head] = NULL;
    c->head = (c->head + 1) % c->cap;
    c->len--;
    c->bytes -= m->len;
    b->total_bytes -= m->len;
    if (m->seq > c->trimmed_seq)
        c->trimmed_seq = m->seq;
    hd_message_unref(m);
}

static void delete_chan(mem_broker_t *b, mchan_t *c)
{
    while (c->len)
        drop_oldest(b, c);
    hd_hmap_remove(&b->chans, &c->node);
    hd_list_remove(&c->lru);
    uint64_t *tomb = tomb_of(b, c->name, c->name_len);
    if (c->trimmed_seq > *tomb)
        *tomb = c->trimmed_seq;
    free(c->ring);
    free(c->subs);
    free(c);
    STAT_SET(b, channels, b->chans.n);
}

static void maybe_delete(mem_broker_t *b, mchan_t *c)
{
    if (c->subs_total == 0 && c->len == 0)
        delete_chan(b, c);
}

static void update_stats(mem_broker_t *b)
{
    STAT_SET(b, history_bytes, b->total_bytes);
}

/* Drops history of the coldest channels until the node is under max_memory. */
static void enforce_memory(mem_broker_t *b, mchan_t *keep)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &b->lru)
    {
        if (b->total_bytes <= b->max_memory_bytes)
            break;
        mchan_t *c = hd_container_of(pos, mchan_t, lru);
        if (c == keep || c->len == 0)
            continue;
        hd_log_info("max_memory reached: evicting the history of channel %s (%u messages)", c->name,
                    c->len);
        while (c->len)
            drop_oldest(b, c);
        __atomic_store_n(&b->stats.channels_evicted, b->stats.channels_evicted + 1,
                         __ATOMIC_RELAXED);
        maybe_delete(b, c);
    }
    /* The newest channel alone may still be above: trim its oldest messages. */
    while (b->total_bytes > b->max_memory_bytes && keep && keep->len > 1)
        drop_oldest(b, keep);
}

/* ---- requests ---- */

static void reply(mem_broker_t *b, hd_breq_t *r)
{
    r->epoch = b->epoch;
    r->last_seq = b->seq;
    hd_breq_reply(r);
}

static void do_publish(mem_broker_t *b, hd_breq_t *r)
{
    uint64_t now = wall_ms();
    for (size_t i = 0; i < r->n_msgs; i++) {
        hd_message_t *m = r->msgs[i];
        mchan_t *c = get_chan(b, m->channel, m->channel_len);
        hd_message_set_id(m, b->epoch, ++b->seq);
        m->time_ms = now;
        m->publish_ns = uv_hrtime();
        memcpy(c->last_id, m->id, m->id_len + 1u);
        hd_list_remove(&c->lru);
        hd_list_insert_tail(&b->lru, &c->lru); /* most recently published last */
        if (c->cap) {
            if (c->len == c->cap)
                drop_oldest(b, c);
            c->ring[(c->head + c->len) % c->cap] = hd_message_ref(m);
            c->len++;
            c->bytes += m->len;
            b->total_bytes += m->len;
            while (c->len > 1 && c->bytes > b->history_max_bytes)
                drop_oldest(b, c);
            if (c->len == 1 && c->bytes > b->history_max_bytes)
                drop_oldest(b, c);
        } else {
            c->trimmed_seq = m->seq; /* no history: every message leaves at once */
        }
        for (unsigned k = 0; k < b->n_workers; k++)
            if (c->subs[k])
                hd_hub_post_delivery(hd_server_worker(b->server, k), hd_message_ref(m));
        enforce_memory(b, c);
        maybe_delete(b, c);
    }
    STAT_SET(b, messages_published, b->seq);
    update_stats(b);
    reply(b, r);
}

/* Collects history after since (or the latest message when there is no since) into r. */
static void collect(mem_broker_t *b, mchan_t *c, hd_breq_t *r, size_t limit)
{
    uint32_t start;
    if (!c || c->len == 0) {
        start = 0;
    } else if (!r->has_since) {
        start = c->len - 1;
    } else if (r->since_epoch != b->epoch) {
        start = 0;
    } else {
        /* first message with seq > since (the ring is sorted by seq) */
        uint32_t lo = 0, hi = c->len;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (ring_at(c, mid)->seq <= r->since_seq)
                lo = mid + 1;
            else
                hi = mid;
        }
        start = lo;
    }
    if (r->has_since) {
        if (r->since_epoch != b->epoch)
            r->gap = 1;
        else if (c && r->since_seq < c->trimmed_seq)
            r->gap = 1;
        else if (!c && r->since_seq < *tomb_of(b, r->channel, strlen(r->channel)))
            r->gap = 1; /* deleted after it lost messages */
    }
    size_t n = c ? c->len - start : 0;
    if (limit && n > limit)
        n = limit;
    if (n == 0)
        return;
    r->msgs = hd_malloc(n * sizeof(*r->msgs));
    for (size_t i = 0; i < n; i++)
        r->msgs[i] = hd_message_ref(ring_at(c, start + (uint32_t)i));
    r->n_msgs = n;
}

static void do_subscribe(mem_broker_t *b, hd_breq_t *r)
{
    mchan_t *c = get_chan(b, r->channel, strlen(r->channel));
    c->subs[r->worker->id]++;
    c->subs_total++;
    collect(b, c, r, 0);
    if (!r->has_since) {
        /* live only: nothing from history */
        for (size_t i = 0; i < r->n_msgs; i++)
            hd_message_unref(r->msgs[i]);
        free(r->msgs);
        r->msgs = NULL;
        r->n_msgs = 0;
    }
    reply(b, r);
}

static void do_unsubscribe(mem_broker_t *b, hd_breq_t *r)
{
    mchan_t *c = find_chan(b, r->channel, strlen(r->channel));
    if (c && c->subs[r->worker->id] > 0) {
        c->subs[r->worker->id]--;
        c->subs_total--;
        maybe_delete(b, c);
    }
    hd_breq_free(r);
}

static void do_history(mem_broker_t *b, hd_breq_t *r)
{
    mchan_t *c = find_chan(b, r->channel, strlen(r->channel));
    collect(b, c, r, r->limit);
    reply(b, r);
}

static void do_info(mem_broker_t *b, hd_breq_t *r)
{
    mchan_t *c = find_chan(b, r->channel, strlen(r->channel));
    if (c) {
        r->found = 1;
        r->subscribers = c->subs_total;
        r->history_len = c->len;
        memcpy(r->last_id, c->last_id, sizeof(r->last_id));
    }
    reply(b, r);
}

static void handle(mem_broker_t *b, hd_breq_t *r)
{
    switch (r->type) {
    case HD_BREQ_PUBLISH:
        do_publish(b, r);
        break;
    case HD_BREQ_SUBSCRIBE:
        do_subscribe(b, r);
        break;
    case HD_BREQ_UNSUBSCRIBE:
        do_unsubscribe(b, r);
        break;
    case HD_BREQ_HISTORY:
        do_history(b, r);
        break;
    case HD_BREQ_INFO:
        do_info(b, r);
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
    if (__atomic_load_n(&b->is_stopping, __ATOMIC_ACQUIRE)) {
        uv_close((uv_handle_t *)&b->wakeup, NULL);
        uv_close((uv_handle_t *)&b->ttl_timer, NULL);
    }
}

static void on_ttl_timer(uv_timer_t *t)
{
    mem_broker_t *b = t->data;
    if (b->history_ttl_ms == 0)
        return;
    uint64_t cutoff = wall_ms() - b->history_ttl_ms;
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &b->lru)
    {
        mchan_t *c = hd_container_of(pos, mchan_t, lru);
        while (c->len && ring_at(c, 0)->time_ms < cutoff)
            drop_oldest(b, c);
        maybe_delete(b, c);
    }
    update_stats(b);
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
    out->history_bytes = __atomic_load_n(&b->stats.history_bytes, __ATOMIC_RELAXED);
    out->channels_evicted = __atomic_load_n(&b->stats.channels_evicted, __ATOMIC_RELAXED);
    out->history_messages = 0;
}

static void mem_free(hd_broker_t *base)
{
    mem_broker_t *b = (mem_broker_t *)base;
    __atomic_store_n(&b->is_stopping, 1, __ATOMIC_RELEASE);
    uv_async_send(&b->wakeup);
    uv_thread_join(&b->thread);
    uv_loop_close(&b->loop);
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &b->lru)
    {
        mchan_t *c = hd_container_of(pos, mchan_t, lru);
        while (c->len)
            drop_oldest(b, c);
        free(c->ring);
        free(c->subs);
        free(c);
    }
    hd_hmap_dispose(&b->chans);
    free(b->tombs);
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
    b->n_workers = hd_server_worker_count(server);
    b->history_size = conf->history_size;
    b->history_ttl_ms = conf->history_ttl_ms;
    b->history_max_bytes = conf->history_max_bytes;
    b->max_memory_bytes = conf->max_memory_bytes;
    hd_hmap_init(&b->chans, 256);
    b->tombs = hd_calloc(N_TOMBS, sizeof(*b->tombs));
    hd_list_init(&b->lru);
    hd_mpsc_init(&b->mailbox);
    /* The epoch: this process's start in milliseconds. A restart loses history, and clients
     * holding ids of the old epoch are told so. */
    b->epoch = wall_ms();
    int rc = uv_loop_init(&b->loop);
    if (rc < 0) {
        hd_hmap_dispose(&b->chans);
        free(b->tombs);
        free(b);
        return rc;
    }
    uv_async_init(&b->loop, &b->wakeup, on_wakeup);
    b->wakeup.data = b;
    uv_timer_init(&b->loop, &b->ttl_timer);
    b->ttl_timer.data = b;
    uv_timer_start(&b->ttl_timer, on_ttl_timer, 1000, 1000);
    if ((rc = uv_thread_create(&b->thread, broker_main, b)) < 0) {
        uv_close((uv_handle_t *)&b->wakeup, NULL);
        uv_close((uv_handle_t *)&b->ttl_timer, NULL);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        hd_hmap_dispose(&b->chans);
        free(b->tombs);
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
