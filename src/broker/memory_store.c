/* SPDX-License-Identifier: MIT */
/*
 * memory_store.c: the channels, history rings, memory accounting, channel budget and expiry
 * heap of the embedded broker; see memory_store.h for the rules and memory.c for the thread
 * that drives it.
 *
 * Gap detection: each channel remembers the highest sequence that ever left its history
 * (trimmed_seq). A resume from a sequence below it may have missed messages; so may one from
 * another epoch (ids of a previous process). A deleted channel leaves its trimmed_seq in a
 * fixed table of tombstones indexed by a keyed hash of its name, where a channel of that name
 * made again (or asked about while gone) finds it: a collision only makes a gap report
 * cautious, and a quiet channel is never reported as having lost history it never had.
 */
#include "memory_store.h"

#include "herald/hooks.h"
#include "herald/log.h"

#include <string.h>

#define N_TOMBS            65536
#define REFUSAL_LOG_MS     10000u
#define RING_SHRINK_AT_CAP 8u
#define HEAP_MIN           64u

/* What malloc takes for n bytes (glibc, 64-bit): a 16-byte aligned chunk with an 8-byte header,
 * 32 bytes at least. */
static size_t alloc_cost(size_t n)
{
    size_t c = (n + 8u + 15u) & ~(size_t)15u;
    return c < 32u ? 32u : c;
}

size_t hd_mstore_channel_cost(const hd_mstore_t *st, size_t name_len)
{
    /* the struct and name, the interest array, four bucket slots (above its initial size the
     * table keeps at most four buckets per channel) and four slots of the expiry heap (the
     * same rule) */
    return alloc_cost(offsetof(hd_mchan_t, name) + name_len + 1u) +
           alloc_cost(st->n_workers * sizeof(uint32_t)) + 8u * sizeof(void *);
}

size_t hd_mstore_message_cost(const hd_message_t *m)
{
    /* The idempotency key stays with a message of the embedded broker for its whole life, so
     * the cost is the same when it enters history and when it leaves. */
    return alloc_cost(sizeof(*m) + strlen(m->content_type) + 1u + m->len) +
           (m->idem_key ? alloc_cost(strlen(m->idem_key) + 1u) : 0);
}

static size_t ring_cost(uint32_t cap)
{
    return cap ? alloc_cost(cap * sizeof(hd_message_t *)) : 0;
}

static uint64_t *tomb_of(hd_mstore_t *st, const char *name, size_t len)
{
    return &st->tombs[hd_hash(name, len) & (N_TOMBS - 1)];
}

static size_t name_len(const hd_mchan_t *c)
{
    return hd_chan_name_len(&c->ch);
}

static hd_message_t *ring_at(const hd_mchan_t *c, uint32_t i)
{
    return c->ring[(c->head + i) % c->cap];
}

/* ---- the expiry heap: channels with history, keyed by their oldest message's time ---- */

static hd_mchan_t *chan_of_expiry(hd_heap_node_t *n)
{
    return hd_container_of(n, hd_mchan_t, expiry);
}

static void heap_push(hd_mstore_t *st, hd_mchan_t *c)
{
    if (st->lim.history_ttl_ms == 0)
        return;
    c->expiry.key = ring_at(c, 0)->time_ms;
    hd_heap_push(&st->heap, &c->expiry);
}

/* ---- rings ---- */

static void ring_resize(hd_mstore_t *st, hd_mchan_t *c, uint32_t cap)
{
    hd_message_t **ring = cap ? hd_malloc(cap * sizeof(*ring)) : NULL;
    for (uint32_t i = 0; i < c->len; i++)
        ring[i] = ring_at(c, i);
    free(c->ring);
    st->memory_bytes = st->memory_bytes - ring_cost(c->cap) + ring_cost(cap);
    st->history_charge = st->history_charge - ring_cost(c->cap) + ring_cost(cap);
    c->ring = ring;
    c->cap = cap;
    c->head = 0;
}

/* Frees an empty ring; halves one a quarter full, until it is more than that. */
static void ring_fit(hd_mstore_t *st, hd_mchan_t *c)
{
    uint32_t cap = c->cap;
    if (c->len == 0)
        cap = 0;
    while (cap >= RING_SHRINK_AT_CAP && c->len <= cap / 4)
        cap /= 2;
    if (cap != c->cap)
        ring_resize(st, c, cap);
}

static void ring_push(hd_mstore_t *st, hd_mchan_t *c, hd_message_t *m)
{
    if (c->len == c->cap) {
        uint32_t cap = c->cap ? c->cap * 2 : 1;
        ring_resize(st, c, cap < st->lim.history_size ? cap : st->lim.history_size);
    }
    c->ring[(c->head + c->len) % c->cap] = hd_message_ref(m);
    c->len++;
    c->bytes += m->len;
    st->history_bytes += m->len;
    st->history_msgs++;
    st->memory_bytes += hd_mstore_message_cost(m);
    st->history_charge += hd_mstore_message_cost(m);
    if (c->len == 1) {
        hd_list_insert_tail(&st->lru, &c->lru);
        heap_push(st, c);
        if (c->in.n_workers == 0)
            st->idle_charge += hd_mstore_channel_cost(st, name_len(c));
    }
}

/* Drops the oldest message of c's history (keeps the ring: see ring_fit). */
static void drop_oldest(hd_mstore_t *st, hd_mchan_t *c)
{
    hd_message_t *m = c->ring[c->head];
    c->ring[c->head] = NULL;
    c->head = (c->head + 1) % c->cap;
    c->len--;
    c->bytes -= m->len;
    st->history_bytes -= m->len;
    st->history_msgs--;
    size_t cost = hd_mstore_message_cost(m);
    HD_ASSERT(st->history_charge >= cost); /* charged the same on the way in */
    st->memory_bytes -= cost;
    st->history_charge -= cost;
    if (m->seq > c->trimmed_seq)
        c->trimmed_seq = m->seq;
    hd_message_unref(m);
    if (c->len == 0) {
        hd_list_remove(&c->lru);
        if (hd_heap_contains(&c->expiry))
            hd_heap_remove(&st->heap, &c->expiry);
        if (c->in.n_workers == 0)
            st->idle_charge -= hd_mstore_channel_cost(st, name_len(c));
    } else if (hd_heap_contains(&c->expiry)) {
        c->expiry.key = ring_at(c, 0)->time_ms;
        hd_heap_update(&st->heap, &c->expiry);
    }
}

/* ---- channels ---- */

hd_mchan_t *hd_mstore_find(const hd_mstore_t *st, const char *name, size_t len)
{
    hd_chan_t *c = hd_chantab_find(&st->chans, name, len);
    return c ? hd_container_of(c, hd_mchan_t, ch) : NULL;
}

hd_mchan_t *hd_mstore_find_hashed(const hd_mstore_t *st, const char *name, size_t len, uint64_t h)
{
    hd_chan_t *c = hd_chantab_find_hashed(&st->chans, name, len, h);
    return c ? hd_container_of(c, hd_mchan_t, ch) : NULL;
}

static hd_mchan_t *new_chan(hd_mstore_t *st, const char *name, size_t len)
{
    hd_mchan_t *c = hd_container_of(hd_chantab_get(&st->chans, name, len, NULL), hd_mchan_t, ch);
    hd_interest_init(&c->in, st->n_workers);
    hd_list_init(&c->lru);
    /* A channel deleted earlier may have had messages under this name. */
    c->trimmed_seq = *tomb_of(st, name, len);
    st->memory_bytes += hd_mstore_channel_cost(st, len);
    return c;
}

static void free_chan(hd_mstore_t *st, hd_mchan_t *c)
{
    while (c->len)
        drop_oldest(st, c);
    ring_resize(st, c, 0);
    st->memory_bytes -= hd_mstore_channel_cost(st, name_len(c)); /* charged when it was made */
    hd_interest_dispose(&c->in);
    hd_chantab_free(&st->chans, &c->ch);
}

/* Deletes c, leaving the highest sequence it lost in its name's tombstone. */
static void delete_chan(hd_mstore_t *st, hd_mchan_t *c)
{
    while (c->len)
        drop_oldest(st, c);
    uint64_t *tomb = tomb_of(st, c->name, name_len(c));
    if (c->trimmed_seq > *tomb)
        *tomb = c->trimmed_seq;
    free_chan(st, c);
}

static void maybe_delete(hd_mstore_t *st, hd_mchan_t *c)
{
    if (c->in.n_workers == 0 && c->len == 0)
        delete_chan(st, c);
    else
        ring_fit(st, c);
}

/*
 * Drops history of the least recently published channels (keep aside) until the store plus
 * extra bytes fits max_memory; then, if still above, the oldest messages of keep. Only channels
 * with history are on the list, so each step frees something.
 */
static void enforce_memory(hd_mstore_t *st, hd_mchan_t *keep, size_t extra)
{
    size_t max = st->lim.max_memory_bytes;
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &st->lru)
    {
        if (st->memory_bytes + extra <= max)
            break;
        hd_mchan_t *c = hd_container_of(pos, hd_mchan_t, lru);
        if (c == keep)
            continue;
        hd_log_debug("max_memory reached: evicting the history of channel %s (%u messages)",
                     c->name, c->len);
        while (c->len)
            drop_oldest(st, c);
        st->evicted++;
        maybe_delete(st, c);
    }
    while (st->memory_bytes + extra > max && keep && keep->len > 1)
        drop_oldest(st, keep);
}

/*
 * 0 when the store plus need more bytes fits max_memory, evicting history if need be; else
 * HD_EMEMORY, and then nothing is evicted: a request that is refused anyway must not cost
 * anyone their history. Evicting all history frees at least history_charge and idle_charge:
 * the messages and rings, and the channels that go with their history.
 */
static int make_memory(hd_mstore_t *st, size_t need)
{
    size_t max = st->lim.max_memory_bytes;
    if (st->memory_bytes + need <= max)
        return 0;
    if (st->memory_bytes - st->history_charge - st->idle_charge + need > max)
        return HD_EMEMORY;
    enforce_memory(st, NULL, need);
    return 0;
}

static int refuse(hd_mstore_t *st, int err)
{
    st->refused++;
    st->refused_err = err;
    return err;
}

void hd_mstore_log_limits(hd_mstore_t *st, uint64_t now_ms)
{
    if (st->evicted != st->evicted_logged &&
        (!st->evicted_log_ms || now_ms - st->evicted_log_ms >= REFUSAL_LOG_MS)) {
        hd_log_info("max_memory (%zu bytes) reached: %llu channels lost their history, the least "
                    "recently published first",
                    st->lim.max_memory_bytes,
                    (unsigned long long)(st->evicted - st->evicted_logged));
        st->evicted_logged = st->evicted;
        st->evicted_log_ms = now_ms;
    }
    if (st->refused == st->refused_logged)
        return;
    if (st->refused_log_ms && now_ms - st->refused_log_ms < REFUSAL_LOG_MS)
        return;
    if (st->refused_err == HD_ECHANNELS)
        hd_log_warn("%llu new channels refused: max_channels (%llu) reached",
                    (unsigned long long)(st->refused - st->refused_logged),
                    (unsigned long long)st->lim.max_channels);
    else
        hd_log_warn("%llu new channels refused: max_memory (%zu bytes) would be passed even with "
                    "all history evicted",
                    (unsigned long long)(st->refused - st->refused_logged),
                    st->lim.max_memory_bytes);
    st->refused_logged = st->refused;
    st->refused_log_ms = now_ms;
}

/* ---- requests ---- */

int hd_mstore_publish(hd_mstore_t *st, hd_message_t *const *msgs, size_t n, uint64_t now_ms)
{
    /*
     * All or nothing: make every new channel first (charged, with no history), then make room
     * for them in memory; if either budget says no, take them back before anything is evicted.
     */
    size_t i, made = 0;
    int err = 0;
    for (i = 0; i < n && !err; i++) {
        const hd_message_t *m = msgs[i];
        if (hd_mstore_find(st, m->channel, m->channel_len))
            continue;
        if (hd_chantab_count(&st->chans) >= st->lim.max_channels) {
            err = HD_ECHANNELS;
            break;
        }
        new_chan(st, m->channel, m->channel_len);
        made++;
    }
    if (made && !err)
        err = make_memory(st, 0);
    if (err) {
        for (size_t j = 0; j < i; j++) {
            hd_mchan_t *c = hd_mstore_find(st, msgs[j]->channel, msgs[j]->channel_len);
            if (c)
                maybe_delete(st, c); /* only the ones made here are empty */
        }
        return refuse(st, err);
    }
    for (i = 0; i < n; i++) {
        hd_message_t *m = msgs[i];
        hd_mchan_t *c = hd_mstore_find(st, m->channel, m->channel_len);
        if (!c) /* evicted while making room for another of these */
            c = new_chan(st, m->channel, m->channel_len);
        hd_message_set_id(m, st->epoch, ++st->seq);
        m->time_ms = now_ms;
        m->publish_ns = uv_hrtime();
        c->last_seq = m->seq;
        if (st->lim.history_size == 0 || m->len > st->lim.history_max_bytes) {
            while (c->len) /* nothing fits: this message and all before it leave */
                drop_oldest(st, c);
            c->trimmed_seq = m->seq;
        } else {
            if (c->len == st->lim.history_size)
                drop_oldest(st, c);
            while (c->len && c->bytes + m->len > st->lim.history_max_bytes)
                drop_oldest(st, c);
            ring_push(st, c, m);
            hd_list_remove(&c->lru);
            hd_list_insert_tail(&st->lru, &c->lru); /* most recently published last */
        }
        hd_interest_fan_out(&c->in, m, st->deliver, st->deliver_arg);
        enforce_memory(st, c, 0);
        maybe_delete(st, c);
    }
    return 0;
}

/* Collects history after since (or the latest message when there is no since) into r. */
static void collect(hd_mstore_t *st, hd_mchan_t *c, hd_breq_t *r, size_t limit)
{
    uint32_t start;
    if (!c || c->len == 0) {
        start = 0;
    } else if (!r->has_since) {
        start = c->len - 1;
    } else if (r->since_epoch != st->epoch) {
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
        if (r->since_epoch != st->epoch)
            r->gap = 1;
        else if (c && r->since_seq < c->trimmed_seq)
            r->gap = 1;
        else if (!c && r->since_seq < *tomb_of(st, r->channel, strlen(r->channel)))
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

int hd_mstore_subscribe(hd_mstore_t *st, unsigned worker, hd_breq_t *r, size_t limit)
{
    size_t len = strlen(r->channel);
    hd_mchan_t *c = hd_mstore_find(st, r->channel, len);
    if (!c) {
        if (hd_chantab_count(&st->chans) >= st->lim.max_channels)
            return refuse(st, HD_ECHANNELS);
        int err = make_memory(st, hd_mstore_channel_cost(st, len));
        if (err)
            return refuse(st, err);
        c = new_chan(st, r->channel, len);
    }
    if (hd_interest_add(&c->in, worker) && c->in.n_workers == 1) {
        if (c->len)
            st->idle_charge -= hd_mstore_channel_cost(st, len); /* history no longer takes it */
        hd_hooks_on_channel(r->channel, len, 1); /* a push on the hooks mailbox, no more */
    }
    r->interest = &c->in.per_worker[worker];
    if (r->has_since) /* live only otherwise: nothing from history */
        collect(st, c, r, limit);
    return 0;
}

void hd_mstore_unsubscribe(hd_mstore_t *st, unsigned worker, const char *channel, size_t len)
{
    hd_mchan_t *c = hd_mstore_find(st, channel, len);
    if (c && hd_interest_remove(&c->in, worker) >= 0) {
        if (c->in.n_workers == 0 && c->len) /* its last worker left: history may take it */
            st->idle_charge += hd_mstore_channel_cost(st, len);
        if (c->in.n_workers == 0)
            hd_hooks_on_channel(channel, len, 0);
        maybe_delete(st, c);
    }
}

void hd_mstore_history(hd_mstore_t *st, hd_breq_t *r, size_t limit)
{
    collect(st, hd_mstore_find(st, r->channel, strlen(r->channel)), r, limit);
}

void hd_mstore_info(hd_mstore_t *st, hd_breq_t *r)
{
    hd_mchan_t *c = hd_mstore_find(st, r->channel, strlen(r->channel));
    if (!c)
        return;
    r->found = 1;
    r->subscribers = hd_interest_total(&c->in);
    r->history_len = c->len;
    r->last_id[0] = '\0';
    if (c->last_seq)
        hd_id_format(r->last_id, sizeof(r->last_id), st->epoch, c->last_seq);
}

void hd_mstore_expire(hd_mstore_t *st, uint64_t now_ms)
{
    if (st->lim.history_ttl_ms == 0 || now_ms < st->lim.history_ttl_ms)
        return;
    uint64_t cutoff = now_ms - st->lim.history_ttl_ms;
    hd_heap_node_t *first;
    while ((first = hd_heap_min(&st->heap)) != NULL && first->key < cutoff) {
        hd_mchan_t *c = chan_of_expiry(first);
        while (c->len && ring_at(c, 0)->time_ms < cutoff)
            drop_oldest(st, c);
        maybe_delete(st, c);
    }
}

/* ---- the store ---- */

void hd_mstore_init(hd_mstore_t *st, const hd_mstore_limits_t *lim, unsigned n_workers,
                    uint64_t epoch, hd_deliver_cb deliver, void *deliver_arg)
{
    memset(st, 0, sizeof(*st));
    st->lim = *lim;
    st->n_workers = n_workers;
    st->epoch = epoch;
    st->deliver = deliver;
    st->deliver_arg = deliver_arg;
    HD_CHANTAB_INIT(&st->chans, hd_mchan_t, 256);
    hd_list_init(&st->lru);
    hd_heap_init(&st->heap, HEAP_MIN);
    st->tombs = hd_calloc(N_TOMBS, sizeof(*st->tombs));
}

static void free_chan_cb(hd_chan_t *c, void *arg)
{
    free_chan(arg, hd_container_of(c, hd_mchan_t, ch));
}

void hd_mstore_dispose(hd_mstore_t *st)
{
    hd_chantab_foreach(&st->chans, free_chan_cb, st);
    hd_chantab_dispose(&st->chans);
    hd_heap_dispose(&st->heap);
    free(st->tombs);
    st->tombs = NULL;
}
