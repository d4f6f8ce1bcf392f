/* SPDX-License-Identifier: MIT */
/*
 * test_broker_memory.c: the embedded broker's store (src/broker/memory_store.c), driven
 * directly without its thread: ring growth and shrinking, the byte accounting against
 * max_memory, eviction order, the channel budget (all-or-nothing batches, refused subscribes,
 * existing channels untouched, a refusal evicts nothing), tombstones for gap detection, expiry by
 * the heap, delivery to the workers with subscribers. Then the broker itself (memory.c) on an
 * embedded node: the work done on the submitting thread, a publish's deliveries ahead of its
 * reply in the worker's mailbox, and publishers on several threads at once giving every
 * subscriber one increasing order with nothing lost (scripts/test.sh runs this under
 * ThreadSanitizer: the store's lock). The presence table's pages (memory_presence.c): keys in
 * byte order through joins and leaves in any order, a cursor that is a member, was one, or
 * never was, and a page read without sorting.
 */
#include "broker/memory_presence.h"
#include "broker/memory_store.h"
#include "embedded.h"
#include "herald/http.h"
#include "test.h"

#include <jansson.h>
#include <pthread.h>

#define EPOCH 1000u

typedef struct deliveries_s {
    unsigned n[4];
    uint64_t last_seq[4];
} deliveries_t;

static void on_deliver(void *arg, unsigned worker, hd_message_t *m)
{
    deliveries_t *d = arg;
    d->n[worker]++;
    d->last_seq[worker] = m->seq;
    hd_message_unref(m);
}

static hd_mstore_limits_t limits(void)
{
    return (hd_mstore_limits_t){.history_size = 100,
                                .history_ttl_ms = 0,
                                .history_max_bytes = 1 << 20,
                                .max_memory_bytes = 64 << 20,
                                .max_channels = 1000};
}

/* What malloc takes for n bytes, as the store charges it. */
static size_t alloc_cost(size_t n)
{
    size_t c = (n + 8u + 15u) & ~(size_t)15u;
    return c < 32u ? 32u : c;
}

/* Publishes one message of len bytes on channel at time now_ms; returns the store's answer. */
static int pub(hd_mstore_t *st, const char *channel, size_t len, uint64_t now_ms)
{
    static char payload[4096];
    hd_message_t *m = hd_message_new(channel, strlen(channel), "text/plain", payload, len);
    int err = hd_mstore_publish(st, &m, 1, now_ms);
    hd_message_unref(m);
    return err;
}

static hd_mchan_t *chan(hd_mstore_t *st, const char *name)
{
    return hd_mstore_find(st, name, strlen(name));
}

static int subscribe(hd_mstore_t *st, unsigned worker, const char *name)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_SUBSCRIBE, NULL, name, strlen(name));
    int err = hd_mstore_subscribe(st, worker, r, 0);
    hd_breq_free(r);
    return err;
}

/* History after since_seq (this epoch) on name: the count returned, and the gap flag. */
static size_t history(hd_mstore_t *st, const char *name, uint64_t since_seq, int *gap)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_HISTORY, NULL, name, strlen(name));
    r->has_since = 1;
    r->since_epoch = EPOCH;
    r->since_seq = since_seq;
    hd_mstore_history(st, r, 0);
    size_t n = r->n_msgs;
    *gap = r->gap;
    for (size_t i = 1; i < n; i++)
        T_TRUE(r->msgs[i]->seq > r->msgs[i - 1]->seq);
    hd_breq_free(r);
    return n;
}

static void test_ring_grows_and_shrinks(void)
{
    hd_mstore_limits_t lim = limits();
    lim.history_ttl_ms = 1000;
    hd_mstore_t st;
    deliveries_t d = {0};
    hd_mstore_init(&st, &lim, 2, EPOCH, on_deliver, &d);
    T_EQ_INT(st.memory_bytes, 0);
    /* caps 1, 2, 4, ... 64, then history_size (100), never more */
    static const uint32_t caps[] = {1, 2, 4, 4, 8};
    for (unsigned i = 0; i < HD_ARRAY_SIZE(caps); i++) {
        T_EQ_INT(pub(&st, "a", 10, 1000 + i), 0);
        T_EQ_INT(chan(&st, "a")->cap, caps[i]);
    }
    for (unsigned i = 5; i < 150; i++)
        T_EQ_INT(pub(&st, "a", 10, 1000 + i), 0);
    hd_mchan_t *c = chan(&st, "a");
    T_EQ_INT(c->cap, 100);
    T_EQ_INT(c->len, 100);
    T_EQ_INT(c->trimmed_seq, 50); /* seq 1..50 left */
    /* every byte charged: the channel, the ring and each message */
    hd_message_t *probe = hd_message_new("a", 1, "text/plain", "0123456789", 10);
    size_t msg_cost = hd_mstore_message_cost(probe);
    T_EQ_INT(msg_cost, alloc_cost(sizeof(hd_message_t) + strlen("text/plain") + 1 + 10));
    hd_message_set_idem_key(probe, "k-123", 5);
    T_EQ_INT(hd_mstore_message_cost(probe), msg_cost + alloc_cost(6));
    hd_message_unref(probe);
    T_EQ_INT(st.memory_bytes,
             hd_mstore_channel_cost(&st, 1) + alloc_cost(100 * sizeof(void *)) + 100 * msg_cost);
    T_EQ_INT(st.history_charge, alloc_cost(100 * sizeof(void *)) + 100 * msg_cost);
    T_EQ_INT(st.idle_charge, hd_mstore_channel_cost(&st, 1)); /* goes with its history */
    T_EQ_INT(st.history_bytes, 1000);
    T_EQ_INT(st.history_msgs, 100);
    /* expiry of all but 20 (times 1050..1149; cutoff 2130 - 1000 keeps 1130..1149): halved */
    hd_mstore_expire(&st, 2130);
    T_EQ_INT(c->len, 20);
    T_EQ_INT(c->cap, 50);
    T_EQ_INT(c->trimmed_seq, 130);
    hd_mstore_expire(&st, 2146); /* 1146..1149 stay */
    T_EQ_INT(c->len, 4);
    T_EQ_INT(c->cap, 12);
    /* a subscriber keeps the channel when its history is gone, and it holds no ring */
    T_EQ_INT(subscribe(&st, 1, "a"), 0);
    T_EQ_INT(st.idle_charge, 0);
    hd_mstore_expire(&st, 5000);
    c = chan(&st, "a");
    T_TRUE(c != NULL);
    T_EQ_INT(c->len, 0);
    T_EQ_INT(c->cap, 0);
    T_TRUE(c->ring == NULL);
    T_EQ_INT(st.memory_bytes, hd_mstore_channel_cost(&st, 1));
    hd_mstore_unsubscribe(&st, 1, "a", 1);
    T_TRUE(chan(&st, "a") == NULL);
    T_EQ_INT(st.memory_bytes, 0);
    T_EQ_INT(hd_chantab_count(&st.chans), 0);
    T_EQ_INT(d.n[0] + d.n[1], 0); /* nobody was subscribed while publishing */
    hd_mstore_dispose(&st);
}

static void test_history_bounds(void)
{
    hd_mstore_limits_t lim = limits();
    lim.history_max_bytes = 100;
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    for (int i = 0; i < 5; i++)
        pub(&st, "b", 30, 1);
    T_EQ_INT(chan(&st, "b")->len, 3); /* 90 bytes; a fourth would make 120 */
    T_EQ_INT(chan(&st, "b")->bytes, 90);
    pub(&st, "b", 101, 1); /* larger than history_max_bytes: nothing is kept */
    T_TRUE(chan(&st, "b") == NULL);
    int gap;
    T_EQ_INT(history(&st, "b", 5, &gap), 0);
    T_EQ_INT(gap, 1); /* the tombstone remembers seq 6 left */
    T_EQ_INT(history(&st, "b", 6, &gap), 0);
    T_EQ_INT(gap, 0);
    T_EQ_INT(st.memory_bytes, 0);
    hd_mstore_dispose(&st);
}

static void test_tombstones(void)
{
    hd_mstore_limits_t lim = limits();
    lim.history_size = 2;
    lim.history_ttl_ms = 10;
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    pub(&st, "t", 1, 100); /* seq 1 */
    pub(&st, "t", 1, 100); /* seq 2 */
    pub(&st, "t", 1, 100); /* seq 3: seq 1 leaves */
    pub(&st, "quiet", 1, 100);
    hd_mstore_expire(&st, 1000); /* both channels go */
    T_TRUE(chan(&st, "t") == NULL);
    T_TRUE(chan(&st, "quiet") == NULL);
    int gap;
    history(&st, "t", 2, &gap);
    T_EQ_INT(gap, 1); /* seq 3 left with the channel */
    history(&st, "t", 3, &gap);
    T_EQ_INT(gap, 0);
    history(&st, "quiet", 4, &gap); /* lost nothing but what the client saw */
    T_EQ_INT(gap, 0);
    /* made again under the same name, it knows what its predecessor lost */
    pub(&st, "t", 1, 2000); /* seq 5 */
    T_EQ_INT(chan(&st, "t")->trimmed_seq, 3);
    T_EQ_INT(history(&st, "t", 3, &gap), 1);
    T_EQ_INT(gap, 0);
    T_EQ_INT(history(&st, "t", 2, &gap), 1);
    T_EQ_INT(gap, 1);
    /* another epoch: everything, and a gap */
    hd_breq_t *r = hd_breq_new(HD_BREQ_HISTORY, NULL, "t", 1);
    r->has_since = 1;
    r->since_epoch = EPOCH - 1;
    r->since_seq = 99;
    hd_mstore_history(&st, r, 0);
    T_EQ_INT(r->n_msgs, 1);
    T_EQ_INT(r->gap, 1);
    hd_breq_free(r);
    hd_mstore_dispose(&st);
}

static void test_eviction_order(void)
{
    hd_mstore_limits_t lim = limits();
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    pub(&st, "a", 1000, 1);
    pub(&st, "b", 1000, 1);
    pub(&st, "c", 1000, 1);
    pub(&st, "a", 1000, 1); /* a is now the most recently published */
    T_EQ_INT(subscribe(&st, 0, "b"), 0);
    /* room for what there is and a little: the next publish on d must evict */
    st.lim.max_memory_bytes = st.memory_bytes + 500;
    pub(&st, "d", 1000, 1);
    T_EQ_INT(st.evicted, 1);
    T_TRUE(chan(&st, "b") != NULL); /* coldest: lost its history, kept for its subscriber */
    T_EQ_INT(chan(&st, "b")->len, 0);
    T_EQ_INT(chan(&st, "c")->len, 1);
    T_EQ_INT(chan(&st, "a")->len, 2);
    pub(&st, "d", 1000, 1);
    T_EQ_INT(st.evicted, 2);
    T_TRUE(chan(&st, "c") == NULL); /* next coldest, no subscriber: gone */
    T_EQ_INT(chan(&st, "a")->len, 2);
    T_TRUE(st.memory_bytes <= st.lim.max_memory_bytes);
    int gap;
    history(&st, "c", 0, &gap);
    T_EQ_INT(gap, 1);
    /* a single channel above max_memory keeps its newest message */
    st.lim.max_memory_bytes = 1;
    pub(&st, "a", 1000, 1);
    T_EQ_INT(chan(&st, "a")->len, 1);
    T_EQ_INT(chan(&st, "a")->last_seq, st.seq);
    hd_mstore_dispose(&st);
}

static void test_channel_budget(void)
{
    hd_mstore_limits_t lim = limits();
    lim.max_channels = 3;
    lim.history_max_bytes = 1000;
    hd_mstore_t st;
    deliveries_t d = {0};
    hd_mstore_init(&st, &lim, 2, EPOCH, on_deliver, &d);
    T_EQ_INT(pub(&st, "a", 5, 1), 0);
    T_EQ_INT(pub(&st, "b", 5, 1), 0);
    T_EQ_INT(subscribe(&st, 1, "c"), 0);
    T_EQ_INT(hd_chantab_count(&st.chans), 3);
    size_t before = st.memory_bytes;
    /* a new channel, by publish or subscribe, is refused; nothing changes */
    T_EQ_INT(pub(&st, "d", 5, 1), HD_ECHANNELS);
    T_EQ_INT(subscribe(&st, 0, "e"), HD_ECHANNELS);
    T_EQ_INT(st.refused, 2);
    T_EQ_INT(st.seq, 2);
    T_EQ_INT(st.memory_bytes, before);
    T_TRUE(chan(&st, "d") == NULL);
    /* a batch with one new channel publishes nothing, even on the existing ones */
    hd_message_t *batch[3] = {hd_message_new("a", 1, "", "x", 1),
                              hd_message_new("c", 1, "", "y", 1),
                              hd_message_new("f", 1, "", "z", 1)};
    T_EQ_INT(hd_mstore_publish(&st, batch, 3, 1), HD_ECHANNELS);
    T_EQ_INT(st.seq, 2);
    T_EQ_INT(chan(&st, "a")->len, 1);
    T_EQ_INT(d.n[1], 0);
    T_EQ_INT(st.refused, 3);
    /* existing channels keep working: publish, deliver, subscribe more */
    T_EQ_INT(hd_mstore_publish(&st, batch, 2, 1), 0);
    T_EQ_INT(d.n[1], 1); /* c's subscriber on worker 1 */
    T_EQ_INT(d.last_seq[1], 4);
    T_EQ_INT(subscribe(&st, 0, "a"), 0);
    T_EQ_INT(pub(&st, "a", 5, 1), 0);
    T_EQ_INT(d.n[0], 1);
    for (int i = 0; i < 3; i++)
        hd_message_unref(batch[i]);
    /* a channel that goes frees its place */
    hd_mstore_unsubscribe(&st, 1, "c", 1);
    T_TRUE(chan(&st, "c") != NULL);      /* still has history */
    T_EQ_INT(pub(&st, "b", 2000, 1), 0); /* over history_max_bytes: b's history goes */
    T_TRUE(chan(&st, "b") == NULL);
    T_EQ_INT(pub(&st, "d", 5, 1), 0);
    /* a batch naming one new channel twice needs one place */
    hd_mstore_unsubscribe(&st, 0, "a", 1);
    st.lim.max_channels = 4;
    hd_message_t *twice[2] = {hd_message_new("g", 1, "", "1", 1),
                              hd_message_new("g", 1, "", "2", 1)};
    T_EQ_INT(hd_mstore_publish(&st, twice, 2, 1), 0);
    T_EQ_INT(chan(&st, "g")->len, 2);
    hd_message_unref(twice[0]);
    hd_message_unref(twice[1]);
    hd_mstore_dispose(&st);
}

static void test_memory_budget(void)
{
    hd_mstore_limits_t lim = limits();
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    pub(&st, "h", 100, 1);
    /* channels with subscribers only: nothing to evict, so a new channel past it is refused */
    for (int i = 0; i < 10; i++) {
        char name[8];
        snprintf(name, sizeof(name), "s%d", i);
        T_EQ_INT(subscribe(&st, 0, name), 0);
    }
    st.lim.max_memory_bytes = st.memory_bytes + 10;
    /* first the history of h goes to make room... */
    T_EQ_INT(subscribe(&st, 0, "n1"), 0);
    T_TRUE(chan(&st, "h") == NULL);
    T_EQ_INT(st.evicted, 1);
    /* ...then there is nothing left to evict */
    st.lim.max_memory_bytes = st.memory_bytes + 10;
    T_EQ_INT(subscribe(&st, 0, "n2"), HD_EMEMORY);
    T_EQ_INT(pub(&st, "n3", 1, 1), HD_EMEMORY);
    T_EQ_INT(st.refused, 2);
    T_EQ_INT(st.refused_err, HD_EMEMORY);
    T_TRUE(st.memory_bytes <= st.lim.max_memory_bytes);
    /* a subscribed channel still takes messages (its own history is what goes) */
    T_EQ_INT(pub(&st, "s1", 1, 1), 0);
    hd_mstore_log_limits(&st, 20000);
    T_EQ_INT(st.refused_logged, 2);
    T_EQ_INT(st.evicted_logged, 1);
    T_EQ_INT(pub(&st, "n4", 1, 1), HD_EMEMORY);
    hd_mstore_log_limits(&st, 25000); /* within 10 s of the last line: not yet */
    T_EQ_INT(st.refused_logged, 2);
    hd_mstore_log_limits(&st, 30000);
    T_EQ_INT(st.refused_logged, 3);
    hd_mstore_dispose(&st);
}

/* A batch of new channels as large as the node's memory fits by evicting channels that only
 * history kept: channels are charged, and so is what their eviction frees. */
static void test_new_channels_replace_idle_ones(void)
{
    enum { N_OLD = 50, N_NEW = 80 };
    hd_mstore_limits_t lim = limits();
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    hd_message_t *batch[N_NEW];
    char name[16];
    for (int i = 0; i < N_OLD; i++) {
        size_t len = (size_t)snprintf(name, sizeof(name), "old%02d", i);
        batch[i] = hd_message_new(name, len, "", "x", 1);
    }
    T_EQ_INT(hd_mstore_publish(&st, batch, N_OLD, 1), 0);
    for (int i = 0; i < N_OLD; i++)
        hd_message_unref(batch[i]);
    st.lim.max_memory_bytes = st.memory_bytes; /* full */
    /* the new channels alone cost more than the old ones' messages and rings: only counting
     * the old channels themselves as freed by their eviction lets them in */
    T_TRUE(N_NEW * hd_mstore_channel_cost(&st, 5) > st.history_charge);
    for (int i = 0; i < N_NEW; i++) {
        size_t len = (size_t)snprintf(name, sizeof(name), "new%02d", i);
        batch[i] = hd_message_new(name, len, "", "x", 1);
    }
    T_EQ_INT(hd_mstore_publish(&st, batch, N_NEW, 2), 0);
    for (int i = 0; i < N_NEW; i++)
        hd_message_unref(batch[i]);
    T_TRUE(st.evicted >= N_OLD);
    for (int i = 0; i < N_OLD; i++) {
        snprintf(name, sizeof(name), "old%02d", i);
        T_TRUE(chan(&st, name) == NULL);
    }
    T_TRUE(chan(&st, "new79") != NULL); /* the newest stay */
    T_TRUE(st.memory_bytes <= st.lim.max_memory_bytes);
    T_EQ_INT(st.refused, 0);
    hd_mstore_dispose(&st);
}

/* A request that is refused costs nobody their history, whichever budget refuses it. */
static void test_refusal_evicts_nothing(void)
{
    hd_mstore_limits_t lim = limits();
    lim.max_channels = 3;
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    pub(&st, "cold", 1000, 1);
    T_EQ_INT(subscribe(&st, 0, "s"), 0);
    st.lim.max_memory_bytes = st.memory_bytes + 10; /* a new channel would need eviction */
    /* two new channels where one place is left: refused before the first one evicts "cold" */
    hd_message_t *two[2] = {hd_message_new("n1", 2, "", "1", 1),
                            hd_message_new("n2", 2, "", "2", 1)};
    T_EQ_INT(hd_mstore_publish(&st, two, 2, 1), HD_ECHANNELS);
    T_EQ_INT(st.evicted, 0);
    T_EQ_INT(chan(&st, "cold")->len, 1);
    /* too big for memory even if all history went: refused, history kept */
    st.lim.max_channels = 1000;
    st.lim.max_memory_bytes = st.memory_bytes - st.history_charge - st.idle_charge + 10;
    T_EQ_INT(hd_mstore_publish(&st, two, 2, 1), HD_EMEMORY);
    T_EQ_INT(subscribe(&st, 0, "n3"), HD_EMEMORY);
    T_EQ_INT(st.evicted, 0);
    T_EQ_INT(chan(&st, "cold")->len, 1);
    T_EQ_INT(hd_chantab_count(&st.chans), 2);
    T_EQ_INT(st.refused, 3);
    /* room that eviction can make is made: "cold" goes for one new channel */
    T_EQ_INT(st.idle_charge, hd_mstore_channel_cost(&st, 4)); /* "cold" */
    st.lim.max_memory_bytes =
        st.memory_bytes - st.history_charge - st.idle_charge + hd_mstore_channel_cost(&st, 2);
    T_EQ_INT(subscribe(&st, 0, "n3"), 0);
    T_EQ_INT(st.evicted, 1);
    T_TRUE(chan(&st, "cold") == NULL);
    T_EQ_INT(st.history_charge, 0);
    T_EQ_INT(st.idle_charge, 0);
    T_TRUE(st.memory_bytes <= st.lim.max_memory_bytes);
    hd_message_unref(two[0]);
    hd_message_unref(two[1]);
    hd_mstore_dispose(&st);
}

static void test_expiry_heap(void)
{
    enum { N = 200 };
    hd_mstore_limits_t lim = limits();
    lim.history_ttl_ms = 1000;
    hd_mstore_t st;
    hd_mstore_init(&st, &lim, 1, EPOCH, on_deliver, &(deliveries_t){0});
    /* channel i published at time 10000 + (i * 7919 % N): an order unrelated to creation */
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "e%d", i);
        pub(&st, name, 1, 10000u + (uint64_t)(i * 7919 % N));
        pub(&st, name, 1, 10000u + (uint64_t)(i * 7919 % N) + 500);
    }
    T_EQ_INT(st.heap.n, N);
    T_EQ_INT(st.heap.cap, 256);
    /* cutoff 10100: every channel whose first message is before it loses that one only */
    hd_mstore_expire(&st, 11100);
    T_EQ_INT(hd_chantab_count(&st.chans), N);
    T_EQ_INT(st.history_msgs, 2 * N - 100);
    T_TRUE(hd_heap_check(&st.heap) == NULL);
    for (uint32_t i = 0; i < st.heap.n; i++) {
        /* each channel's key is its oldest message's time */
        const hd_mchan_t *c = hd_container_of(st.heap.a[i], hd_mchan_t, expiry);
        T_EQ_INT(c->expiry.key, c->ring[c->head]->time_ms);
    }
    hd_mstore_expire(&st, 11600); /* second messages before 10600 go too: 100 channels left */
    T_EQ_INT(hd_chantab_count(&st.chans), 100);
    T_EQ_INT(st.heap.n, 100);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "e%d", i);
        T_EQ_INT(chan(&st, name) != NULL, i * 7919 % N >= 100);
    }
    hd_mstore_expire(&st, 12000);
    T_EQ_INT(hd_chantab_count(&st.chans), 0);
    T_EQ_INT(st.heap.n, 0);
    T_EQ_INT(st.heap.cap, 64); /* given back as it emptied */
    T_EQ_INT(st.chans.map.n_buckets, 256);
    T_EQ_INT(st.memory_bytes, 0);
    T_EQ_INT(st.history_charge, 0);
    T_EQ_INT(st.idle_charge, 0);
    hd_mstore_dispose(&st);
}

static void test_info_and_delivery(void)
{
    hd_mstore_limits_t lim = limits();
    hd_mstore_t st;
    deliveries_t d = {0};
    hd_mstore_init(&st, &lim, 3, EPOCH, on_deliver, &d);
    subscribe(&st, 2, "i");
    subscribe(&st, 2, "i");
    subscribe(&st, 0, "i");
    pub(&st, "i", 3, 1);
    T_EQ_INT(d.n[0], 1);
    T_EQ_INT(d.n[1], 0);
    T_EQ_INT(d.n[2], 1); /* once per worker, however many subscribers there */
    hd_breq_t *r = hd_breq_new(HD_BREQ_INFO, NULL, "i", 1);
    hd_mstore_info(&st, r);
    T_EQ_INT(r->found, 1);
    T_EQ_INT(r->subscribers, 3);
    T_EQ_INT(r->history_len, 1);
    char id[HD_ID_MAX];
    hd_id_format(id, sizeof(id), EPOCH, 1);
    T_EQ_STR(r->last_id, id);
    hd_breq_free(r);
    /* a subscribe with since gets the history after it; without, none */
    r = hd_breq_new(HD_BREQ_SUBSCRIBE, NULL, "i", 1);
    r->has_since = 1;
    r->since_epoch = EPOCH;
    r->since_seq = 0;
    T_EQ_INT(hd_mstore_subscribe(&st, 1, r, 0), 0);
    T_EQ_INT(r->n_msgs, 1);
    T_EQ_INT(r->gap, 0);
    hd_breq_free(r);
    r = hd_breq_new(HD_BREQ_INFO, NULL, "nope", 4);
    hd_mstore_info(&st, r);
    T_EQ_INT(r->found, 0);
    hd_breq_free(r);
    hd_mstore_dispose(&st);
}

/* ---- the broker (memory.c) on an embedded node ---- */

typedef struct seen_s {
    int ready;
    unsigned n;
    uint64_t last_seq;
    int out_of_order;
    unsigned history; /* messages the ready call replayed */
    int gap;
} seen_t;

static void seen_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    seen_t *seen = s->data;
    T_EQ_INT(err, 0);
    seen->ready = 1;
    seen->gap = gap;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->seq <= seen->last_seq)
            seen->out_of_order++;
        seen->last_seq = msgs[i]->seq;
        seen->history++;
    }
}

static void seen_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)encoded;
    seen_t *seen = s->data;
    if (m->seq <= seen->last_seq)
        seen->out_of_order++;
    seen->last_seq = m->seq;
    seen->n++;
}

static const hd_sub_ops_t seen_ops = {
    .format = HD_FMT_SSE, .on_ready = seen_ready, .on_message = seen_message};

typedef struct pub_reply_s {
    seen_t *seen;
    unsigned seen_at_reply; /* deliveries the subscriber had when the reply ran */
    int replies;
    int err;
} pub_reply_t;

static void on_pub_reply(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    pub_reply_t *pr = r->cookie;
    __atomic_add_fetch(&pr->replies, 1, __ATOMIC_RELAXED);
    if (r->err)
        pr->err = r->err;
    if (pr->seen)
        pr->seen_at_reply = pr->seen->n;
    hd_breq_free(r);
}

static hd_breq_t *publish_req(hd_worker_t *w, const char *channel, size_t n, pub_reply_t *pr)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_PUBLISH, w, NULL, 0);
    r->msgs = hd_malloc(n * sizeof(*r->msgs));
    for (size_t i = 0; i < n; i++)
        r->msgs[i] = hd_message_new(channel, strlen(channel), "text/plain", "x", 1);
    r->n_msgs = n;
    r->cookie = pr;
    r->reply_cb = on_pub_reply;
    return r;
}

static uint64_t published(void)
{
    hd_broker_stats_t st = {0};
    hd_broker_t *b = hd_broker_get();
    b->ops->get_stats(b, &st);
    return st.messages_published;
}

static void test_broker_works_on_the_caller(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    seen_t seen = {0};
    hd_sub_t *sub = hd_hub_subscribe(node.wk, "a", 1, NULL, NULL, &seen_ops, &seen);
    T_EQ_INT(seen.ready, 0); /* never inside the call */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(seen.ready, 1);
    pub_reply_t pr = {.seen = &seen};
    hd_broker_submit(publish_req(node.wk, "a", 3, &pr));
    /* Ids and history were assigned before submit returned, with no other thread involved;
     * the deliveries and the reply wait in the worker's mailbox. */
    T_EQ_INT(published(), 3);
    T_EQ_INT(seen.n, 0);
    T_EQ_INT(pr.replies, 0);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(seen.n, 3);
    T_EQ_INT(seen.out_of_order, 0);
    T_EQ_INT(pr.replies, 1);
    T_EQ_INT(pr.seen_at_reply, 3); /* the publisher's own deliveries come first */
    hd_hub_unsubscribe(sub);
    hd_embedded_stop(&node);
}

/* A broker in front of the embedded one that counts what the hub asks it. */
typedef struct counting_broker_s {
    hd_broker_t base;
    hd_broker_t *real;
    int n[HD_BREQ_PRESENCE + 1];
    int links; /* JOIN and LEAVE requests, counting every link of a chain (next_op) */
} counting_broker_t;

static void counting_submit(hd_broker_t *b, hd_breq_t *r)
{
    counting_broker_t *cb = (counting_broker_t *)b;
    cb->n[r->type]++;
    for (hd_breq_t *l = r; l && (r->type == HD_BREQ_JOIN || r->type == HD_BREQ_LEAVE);
         l = l->next_op)
        cb->links++;
    cb->real->ops->submit(cb->real, r);
}

static const hd_broker_ops_t counting_ops = {.name = "counting", .submit = counting_submit};

typedef struct info_s {
    int done, found;
    uint64_t subscribers;
} info_t;

static void on_info(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    info_t *i = r->cookie;
    i->done = 1;
    i->found = r->found;
    i->subscribers = r->subscribers;
    hd_breq_free(r);
}

static uint64_t subscribers_of(hd_embedded_t *node, hd_broker_t *real, const char *channel)
{
    info_t info = {0};
    hd_breq_t *r = hd_breq_new(HD_BREQ_INFO, node->wk, channel, strlen(channel));
    r->cookie = &info;
    r->reply_cb = on_info;
    real->ops->submit(real, r);
    hd_embedded_sync_broker(node);
    T_EQ_INT(info.done, 1);
    return info.found ? info.subscribers : 0;
}

static void test_join_and_leave_locally(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    counting_broker_t cb = {.base = {.ops = &counting_ops}, .real = hd_broker_get()};
    hd_broker_set(&cb.base);
    seen_t a = {0}, b = {0}, c = {0}, d = {0};
    hd_sub_t *sa = hd_hub_subscribe(node.wk, "j", 1, NULL, NULL, &seen_ops, &a);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 1); /* 0 -> 1: the broker counts the worker in */
    pub_reply_t pr = {0};
    hd_broker_submit(publish_req(node.wk, "j", 1, &pr));
    /* b subscribes with that message still in the mailbox: it joins after it, not asking the
     * broker, and starts where the worker's stream of the channel is then */
    hd_sub_t *sb = hd_hub_subscribe(node.wk, "j", 1, NULL, NULL, &seen_ops, &b);
    T_EQ_INT(b.ready, 0); /* never inside the call */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 1);
    T_EQ_INT(a.n, 1);
    T_EQ_INT(b.ready, 1);
    T_EQ_INT(b.n, 0);
    hd_sub_t *sc = hd_hub_subscribe(node.wk, "j", 1, NULL, NULL, &seen_ops, &c);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "j"), 3); /* /channels still counts each one */
    hd_broker_submit(publish_req(node.wk, "j", 2, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(a.n, 3);
    T_EQ_INT(b.n, 2);
    T_EQ_INT(c.n, 2);
    T_EQ_INT(a.out_of_order + b.out_of_order + c.out_of_order, 0);
    /* a resume from an id reads history under the broker's lock */
    hd_broker_stats_t st = {0};
    cb.real->ops->get_stats(cb.real, &st);
    T_EQ_INT(st.messages_published, 3);
    uint64_t epoch = sa->epoch, since = 1;
    hd_sub_t *sd = hd_hub_subscribe(node.wk, "j", 1, &epoch, &since, &seen_ops, &d);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 2);
    T_EQ_INT(d.ready, 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "j"), 4);
    /* leaving: the broker hears only of the last one */
    hd_hub_unsubscribe(sb);
    hd_hub_unsubscribe(sa);
    hd_hub_unsubscribe(sd);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 0);
    T_EQ_INT(subscribers_of(&node, cb.real, "j"), 1);
    hd_hub_unsubscribe(sc);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "j"), 0);
    /* and the next subscription counts the worker in again */
    seen_t e = {0};
    hd_sub_t *se = hd_hub_subscribe(node.wk, "j", 1, NULL, NULL, &seen_ops, &e);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 3);
    hd_broker_submit(publish_req(node.wk, "j", 1, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(e.n, 1);
    hd_hub_unsubscribe(se);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 2);
    T_EQ_INT(pr.err, 0);
    hd_broker_set(cb.real);
    hd_embedded_stop(&node);
}

/* A subscriber asking presence events: what it saw, in order ("+ann -bob" ...), and in how many
 * frames (one per pass: a single event or a batch). */
typedef struct pres_seen_s {
    int ready;
    unsigned frames;
    char log[256];
} pres_seen_t;

static void pres_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    (void)msgs, (void)n, (void)gap;
    T_EQ_INT(err, 0);
    ((pres_seen_t *)s->data)->ready = 1;
}

static void pres_log(pres_seen_t *p, const char *type, json_t *ev)
{
    const char *sub = json_string_value(json_object_get(json_object_get(ev, "member"), "sub"));
    size_t n = strlen(p->log);
    snprintf(p->log + n, sizeof(p->log) - n, "%s%c%s", n ? " " : "",
             strcmp(type, "join") == 0 ? '+' : '-', sub ? sub : "?");
}

static void pres_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)encoded;
    pres_seen_t *p = s->data;
    p->frames++;
    json_t *j = json_loadb(m->data, m->len, 0, NULL);
    T_TRUE(j != NULL);
    if (m->kind == HD_MSG_PRESENCE) {
        size_t i;
        json_t *ev;
        json_array_foreach(j, i, ev)
        {
            pres_log(p, json_string_value(json_object_get(ev, "type")), ev);
        }
    } else {
        pres_log(p, m->kind == HD_MSG_JOIN ? "join" : "leave", j);
    }
    json_decref(j);
}

static const hd_sub_ops_t pres_ops = {
    .format = HD_FMT_SSE, .on_ready = pres_ready, .on_message = pres_message};

/*
 * The joins and leaves of one loop pass reach the broker as one request (a chain, handled in
 * order in one critical section): a member with two connections joins once and leaves after its
 * last, and a watcher gets the pass's events as one batch.
 */
static void test_presence_one_request_per_pass(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10", "presence_hold 0"); /* per pass */
    hd_embedded_start_pubsub(&node);
    counting_broker_t cb = {.base = {.ops = &counting_ops}, .real = hd_broker_get()};
    hd_broker_set(&cb.base);
    pres_seen_t watcher = {0}, ann1 = {0}, ann2 = {0}, bob = {0};
    hd_sub_t *sw = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &pres_ops, &watcher);
    hd_hub_presence(sw, 1, NULL); /* events, not a member */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(watcher.ready, 1);
    hd_sub_t *sa1 = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &pres_ops, &ann1);
    hd_hub_presence(sa1, 0, hd_member_new("ann", NULL, 1));
    hd_sub_t *sa2 = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &pres_ops, &ann2);
    hd_hub_presence(sa2, 0, hd_member_new("ann", NULL, 2));
    hd_sub_t *sb = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &pres_ops, &bob);
    hd_hub_presence(sb, 1, hd_member_new("bob", NULL, 3));
    T_EQ_INT(cb.links, 0); /* a member joins when it is live, never inside the call */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(ann1.ready + ann2.ready + bob.ready, 3);
    T_EQ_INT(cb.n[HD_BREQ_JOIN], 1); /* one request ... */
    T_EQ_INT(cb.links, 3);           /* ... with the three connections */
    T_EQ_STR(watcher.log, "+ann +bob");
    T_EQ_INT(watcher.frames, 1);
    T_EQ_STR(bob.log, "+ann +bob"); /* a member asking events sees its own join */
    T_EQ_INT(ann1.frames + ann2.frames, 0);
    hd_broker_stats_t st = {0};
    cb.real->ops->get_stats(cb.real, &st);
    T_EQ_INT(st.presence_members, 2);
    /* one pass: ann's first tab leaves (nothing to tell), then bob, then ann's last tab */
    hd_hub_unsubscribe(sa1);
    hd_hub_unsubscribe(sb);
    hd_hub_unsubscribe(sa2);
    T_EQ_INT(cb.n[HD_BREQ_LEAVE], 0);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_LEAVE], 1);
    T_EQ_INT(cb.links, 6);
    T_EQ_STR(watcher.log, "+ann +bob -bob -ann");
    T_EQ_INT(watcher.frames, 2);
    cb.real->ops->get_stats(cb.real, &st);
    T_EQ_INT(st.presence_members, 0);
    T_EQ_INT(st.presence_events, 4);
    hd_hub_unsubscribe(sw);
    hd_broker_set(cb.real);
    hd_embedded_stop(&node);
}

static void test_local_join_ended_while_pending(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    counting_broker_t cb = {.base = {.ops = &counting_ops}, .real = hd_broker_get()};
    hd_broker_set(&cb.base);
    seen_t a = {0}, b = {0};
    hd_sub_t *sa = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &seen_ops, &a);
    hd_embedded_sync_broker(&node);
    hd_sub_t *sb = hd_hub_subscribe(node.wk, "p", 1, NULL, NULL, &seen_ops, &b);
    hd_hub_unsubscribe(sb); /* before its join ran */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(b.ready, 0);
    T_EQ_INT(subscribers_of(&node, cb.real, "p"), 1);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 0);
    /* the last one leaving tells the broker */
    hd_hub_unsubscribe(sa);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "p"), 0);
    hd_broker_set(cb.real);
    hd_embedded_stop(&node);
}

/*
 * A resume from the id where the worker's stream of the channel is (what a long poll asks
 * after each answer) joins locally, with no broker request; when a message of the channel
 * passes while the join waits in the mailbox, what it missed is read from history, and the
 * subscriber still sees every message once, in order.
 */
static void test_resume_at_the_stream_locally(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    counting_broker_t cb = {.base = {.ops = &counting_ops}, .real = hd_broker_get()};
    hd_broker_set(&cb.base);
    seen_t a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
    hd_sub_t *sa = hd_hub_subscribe(node.wk, "r", 1, NULL, NULL, &seen_ops, &a);
    hd_embedded_sync_broker(&node);
    pub_reply_t pr = {0};
    hd_broker_submit(publish_req(node.wk, "r", 2, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(a.n, 2);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 1);

    /* since = the last message the worker delivered: no request, nothing replayed */
    uint64_t epoch = sa->epoch, since = a.last_seq;
    b.last_seq = since;
    hd_sub_t *sb = hd_hub_subscribe(node.wk, "r", 1, &epoch, &since, &seen_ops, &b);
    T_EQ_INT(b.ready, 0); /* never inside the call */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(b.ready, 1);
    T_EQ_INT(b.history, 0);
    T_EQ_INT(b.gap, 0);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE] + cb.n[HD_BREQ_HISTORY], 1);
    hd_broker_submit(publish_req(node.wk, "r", 1, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(b.n, 1);

    /* since = the stream, but two messages are already in the mailbox when the join is asked:
     * the join runs after them, so it reads them from history (once), then goes on live */
    since = b.last_seq;
    c.last_seq = since;
    hd_broker_submit(publish_req(node.wk, "r", 2, &pr));
    hd_sub_t *sc = hd_hub_subscribe(node.wk, "r", 1, &epoch, &since, &seen_ops, &c);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 1);
    T_EQ_INT(cb.n[HD_BREQ_HISTORY], 1);
    T_EQ_INT(c.ready, 1);
    T_EQ_INT(c.history, 2);
    T_EQ_INT(c.gap, 0);
    hd_broker_submit(publish_req(node.wk, "r", 1, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(c.n, 1);
    T_EQ_INT(c.last_seq, a.last_seq);

    /* since past the stream (a cursor another channel's publishes moved): local, nothing
     * replayed, the channel's next message delivered */
    hd_broker_submit(publish_req(node.wk, "elsewhere", 3, &pr));
    hd_embedded_sync_broker(&node);
    since = a.last_seq + 3;
    d.last_seq = a.last_seq;
    hd_sub_t *sd = hd_hub_subscribe(node.wk, "r", 1, &epoch, &since, &seen_ops, &d);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE] + cb.n[HD_BREQ_HISTORY], 2);
    T_EQ_INT(d.history, 0);
    hd_broker_submit(publish_req(node.wk, "r", 1, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(d.n, 1);

    /* another epoch, or an id behind the stream: the broker reads history */
    uint64_t other = epoch + 1, zero = 0;
    hd_sub_t *se = hd_hub_subscribe(node.wk, "r", 1, &other, &zero, &seen_ops, &e);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], 2);
    T_EQ_INT(e.gap, 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "r"), 5);

    T_EQ_INT(a.out_of_order + b.out_of_order + c.out_of_order + d.out_of_order, 0);
    T_EQ_INT(a.n, 7);
    T_EQ_INT(b.n, 5);
    hd_hub_unsubscribe(sa);
    hd_hub_unsubscribe(sb);
    hd_hub_unsubscribe(sc);
    hd_hub_unsubscribe(sd);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 0);
    hd_hub_unsubscribe(se);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 1);
    T_EQ_INT(subscribers_of(&node, cb.real, "r"), 0);
    T_EQ_INT(pr.err, 0);
    hd_broker_set(cb.real);
    hd_embedded_stop(&node);
}

/*
 * Subscriptions made together on a channel the worker does not carry yet (long pollers answered
 * by one message come back together) ask the broker once: the rest wait for that reply and join
 * locally, one of them ended while it waited, one resuming from behind the stream still reads
 * history.
 */
static void test_burst_asks_once(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    counting_broker_t cb = {.base = {.ops = &counting_ops}, .real = hd_broker_get()};
    hd_broker_set(&cb.base);
    /* the hub learns from a first reply that this broker counts */
    seen_t first = {0};
    hd_sub_t *s0 = hd_hub_subscribe(node.wk, "other", 5, NULL, NULL, &seen_ops, &first);
    hd_embedded_sync_broker(&node);
    hd_hub_unsubscribe(s0);
    pub_reply_t pr = {0};
    hd_broker_submit(publish_req(node.wk, "u", 2, &pr));
    hd_embedded_sync_broker(&node);
    int asked = cb.n[HD_BREQ_SUBSCRIBE];

    seen_t a = {0}, b = {0}, c = {0}, d = {0}, gone = {0};
    uint64_t zero = 0, one = 1;
    hd_sub_t *sa = hd_hub_subscribe(node.wk, "u", 1, NULL, NULL, &seen_ops, &a);
    hd_sub_t *sb = hd_hub_subscribe(node.wk, "u", 1, NULL, NULL, &seen_ops, &b);
    hd_sub_t *sc = hd_hub_subscribe(node.wk, "u", 1, NULL, NULL, &seen_ops, &c);
    hd_sub_t *sg = hd_hub_subscribe(node.wk, "u", 1, NULL, NULL, &seen_ops, &gone);
    hd_hub_unsubscribe(sg); /* while it waits */
    hd_sub_t *sd = hd_hub_subscribe(node.wk, "u", 1, &zero, &one, &seen_ops, &d);
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], asked + 1); /* one asks; the others wait */
    hd_embedded_sync_broker(&node);
    T_EQ_INT(a.ready + b.ready + c.ready, 3);
    T_EQ_INT(gone.ready, 0);
    T_EQ_INT(d.ready, 1);
    T_EQ_INT(d.gap, 1);                           /* another epoch: history, said so */
    T_EQ_INT(cb.n[HD_BREQ_SUBSCRIBE], asked + 2); /* d, behind the stream, asked */
    T_EQ_INT(subscribers_of(&node, cb.real, "u"), 4);
    hd_broker_submit(publish_req(node.wk, "u", 1, &pr));
    hd_embedded_sync_broker(&node);
    T_EQ_INT(a.n + b.n + c.n, 3);
    T_EQ_INT(gone.n, 0);
    hd_hub_unsubscribe(sa);
    hd_hub_unsubscribe(sb);
    hd_hub_unsubscribe(sc);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 1); /* "other" */
    hd_hub_unsubscribe(sd);
    T_EQ_INT(cb.n[HD_BREQ_UNSUBSCRIBE], 2);
    T_EQ_INT(subscribers_of(&node, cb.real, "u"), 0);
    T_EQ_INT(pr.err, 0);
    hd_broker_set(cb.real);
    hd_embedded_stop(&node);
}

#define PUB_THREADS    4
#define PUB_PER_THREAD 400

typedef struct pub_thread_s {
    hd_worker_t *w;
    unsigned idx;
    pub_reply_t *pr;
} pub_thread_t;

static void *publisher_main(void *arg)
{
    pub_thread_t *t = arg;
    static const char *const chans[] = {"a", "b", "c"};
    for (unsigned i = 0; i < PUB_PER_THREAD; i++) {
        const char *ch = chans[(i + t->idx) % 3];
        hd_broker_submit(publish_req(t->w, ch, 1 + i % 3, t->pr)); /* batches too */
    }
    return NULL;
}

static void test_concurrent_publishers_one_order(void)
{
    hd_embedded_t node;
    HD_EMBEDDED_START(&node, hd_http_accept, "history_size 10");
    hd_embedded_start_pubsub(&node);
    seen_t seen[3] = {{0}};
    hd_sub_t *subs[3];
    for (int i = 0; i < 3; i++)
        subs[i] = hd_hub_subscribe(node.wk,
                                   i == 0   ? "a"
                                   : i == 1 ? "b"
                                            : "c",
                                   1, NULL, NULL, &seen_ops, &seen[i]);
    hd_embedded_sync_broker(&node);
    pub_reply_t pr = {0};
    pthread_t th[PUB_THREADS];
    pub_thread_t args[PUB_THREADS];
    for (unsigned i = 0; i < PUB_THREADS; i++) {
        args[i] = (pub_thread_t){.w = node.wk, .idx = i, .pr = &pr};
        T_EQ_INT(pthread_create(&th[i], NULL, publisher_main, &args[i]), 0);
    }
    /* The worker drains its mailbox while the publishers push into it. */
    uint64_t until = uv_hrtime() + 20000000000ull;
    while (__atomic_load_n(&pr.replies, __ATOMIC_RELAXED) < PUB_THREADS * PUB_PER_THREAD &&
           uv_hrtime() < until)
        hd_embedded_pump(&node, 1);
    for (unsigned i = 0; i < PUB_THREADS; i++)
        pthread_join(th[i], NULL);
    hd_embedded_sync_broker(&node);
    T_EQ_INT(pr.replies, PUB_THREADS * PUB_PER_THREAD);
    T_EQ_INT(pr.err, 0);
    unsigned total = 0;
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(seen[i].out_of_order, 0);
        total += seen[i].n;
        hd_hub_unsubscribe(subs[i]);
    }
    unsigned expected = 0; /* 1, 2 or 3 messages per publish: each reached its subscriber once */
    for (unsigned i = 0; i < PUB_PER_THREAD; i++)
        expected += PUB_THREADS * (1 + i % 3);
    T_EQ_INT(total, expected);
    T_EQ_INT(published(), total);
    hd_embedded_stop(&node);
}

/* The page of p's channel "pg" after cursor (NULL: the first), limit at most: its keys in
 * order into keys[], *next the next cursor ("" for null); returns the count given. */
static size_t page_keys(const hd_mpres_t *p, const char *cursor, size_t limit, char keys[][8],
                        char *next, uint64_t *total)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_PRESENCE, NULL, "pg", 2);
    r->cursor = cursor ? hd_strdup(cursor) : NULL;
    r->limit = limit;
    hd_mpres_page(p, r);
    size_t len = strlen(r->page) + 3;
    char *text = malloc(len);
    snprintf(text, len, "{%s}", r->page);
    json_t *root = json_loads(text, 0, NULL);
    T_TRUE(root != NULL);
    json_t *members = json_object_get(root, "members"), *v;
    size_t i;
    json_array_foreach(members, i, v)
    {
        snprintf(keys[i], 8, "%s", json_string_value(json_object_get(v, "sub")));
        T_EQ_INT(json_array_size(json_object_get(v, "conns")), 1);
    }
    json_t *nx = json_object_get(root, "next");
    snprintf(next, 8, "%s", json_is_string(nx) ? json_string_value(nx) : "");
    *total = r->members;
    size_t n = json_array_size(members);
    json_decref(root);
    free(text);
    hd_breq_free(r);
    return n;
}

/* A join of a member the test keeps: the table takes a reference of its own. */
static hd_message_t *join_ref(hd_mpres_t *p, const char *channel, hd_member_t *m, int *err)
{
    hd_member_t *ref = hd_member_ref(m);
    hd_message_t *ev = hd_mpres_join(p, channel, strlen(channel), 0, &ref, err);
    hd_member_unref(ref); /* NULL when the table took it */
    return ev;
}

/* A member is shared, never copied: the table holds a reference for each connection it lists
 * and one for the member's key; a refused join takes none; leaves give them back, and a table
 * disposed with members in it drops its references (ASan's leak check). */
static void test_presence_member_refs(void)
{
    hd_mpres_t p;
    hd_mpres_init(&p, 1);
    hd_member_t *a = hd_member_new("ann", NULL, 1), *a2 = hd_member_new("ann", NULL, 2);
    int err;
    hd_member_t *ref = hd_member_ref(a);
    hd_message_t *ev = hd_mpres_join(&p, "c1", 2, 0, &ref, &err);
    T_TRUE(ev != NULL && err == 0 && ref == NULL);
    T_EQ_INT(a->refs, 3); /* the test's, the connection's, the member's key */
    hd_message_unref(ev);
    ref = hd_member_ref(a2);
    T_TRUE(hd_mpres_join(&p, "c1", 2, 0, &ref, &err) == NULL && ref == NULL);
    T_EQ_INT(a2->refs, 2);
    /* the budget (one channel) is spent: refused, nothing taken */
    ref = hd_member_ref(a);
    T_TRUE(hd_mpres_join(&p, "c2", 2, 0, &ref, &err) == NULL);
    T_TRUE(err == HD_ECHANNELS && ref == a);
    hd_member_unref(ref);
    T_EQ_INT(a->refs, 3);
    /* the first connection leaves: its reference goes, the key's stays */
    T_TRUE(hd_mpres_leave(&p, "c1", 2, 0, a) == NULL);
    T_EQ_INT(a->refs, 2);
    ev = hd_mpres_leave(&p, "c1", 2, 0, a2);
    T_TRUE(ev != NULL && ev->kind == HD_MSG_LEAVE);
    hd_message_unref(ev);
    T_EQ_INT(a->refs, 1);
    T_EQ_INT(a2->refs, 1);
    /* members left in the table when it goes */
    hd_message_unref(join_ref(&p, "c1", a, &err));
    T_TRUE(join_ref(&p, "c1", a2, &err) == NULL); /* ann is there already */
    hd_mpres_dispose(&p);
    T_EQ_INT(a->refs, 1);
    hd_member_unref(a);
    hd_member_unref(a2);
}

static void test_presence_pages_in_key_order(void)
{
    hd_mpres_t p;
    hd_mpres_init(&p, 10);
    enum { N = 500 };
    static char present[N];
    hd_member_t *mem[N];
    /* Joins in a scrambled order (7 is prime to N's factors); keys "k000".."k499". */
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 7 + 3) % N;
        char sub[8];
        snprintf(sub, sizeof(sub), "k%03u", i);
        mem[i] = hd_member_new(sub, NULL, i + 1);
        int err;
        hd_message_t *ev = join_ref(&p, "pg", mem[i], &err);
        T_TRUE(ev != NULL && err == 0);
        hd_message_unref(ev);
        present[i] = 1;
    }
    /* Every third leaves, in another order. */
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 11 + 5) % N;
        if (i % 3)
            continue;
        hd_message_unref(hd_mpres_leave(&p, "pg", 2, 0, mem[i]));
        present[i] = 0;
    }
    size_t want_total = 0;
    for (unsigned i = 0; i < N; i++)
        want_total += present[i];
    /* Paged 7 at a time from the start: every member present, once, in order. */
    char keys[HD_PRESENCE_PAGE_MAX][8], next[8] = "", cursor[8];
    uint64_t total;
    size_t seen = 0;
    unsigned at = 0;
    int first = 1;
    while (first || next[0]) {
        snprintf(cursor, sizeof(cursor), "%s", next);
        size_t n = page_keys(&p, first ? NULL : cursor, 7, keys, next, &total);
        first = 0;
        T_EQ_INT(total, want_total);
        for (size_t k = 0; k < n; k++) {
            while (!present[at])
                at++;
            char want[8];
            snprintf(want, sizeof(want), "k%03u", at++);
            T_EQ_STR(keys[k], want);
            seen++;
        }
        if (next[0])
            T_EQ_STR(next, keys[n - 1]);
    }
    T_EQ_INT(seen, want_total);
    /* A cursor that left (k003), one that never was (k0035: between k003 and k004), the last
     * and past it. */
    T_EQ_INT(page_keys(&p, "k003", 2, keys, next, &total), 2);
    T_EQ_STR(keys[0], "k004");
    T_EQ_STR(keys[1], "k005");
    T_EQ_STR(next, "k005");
    T_EQ_INT(page_keys(&p, "k0035", 1, keys, next, &total), 1);
    T_EQ_STR(keys[0], "k004");
    T_EQ_INT(page_keys(&p, "k499", 5, keys, next, &total), 0);
    T_EQ_STR(next, "");
    T_EQ_INT(page_keys(&p, "k497", 5, keys, next, &total), 1); /* k498 left */
    T_EQ_STR(keys[0], "k499");
    T_EQ_STR(next, "");
    /* Everyone leaves: the channel goes with its array. */
    for (unsigned i = 0; i < N; i++) {
        if (present[i])
            hd_message_unref(hd_mpres_leave(&p, "pg", 2, 0, mem[i]));
        hd_member_unref(mem[i]);
    }
    T_EQ_INT(hd_mpres_count(&p, "pg", 2), 0);
    T_EQ_INT(page_keys(&p, NULL, 5, keys, next, &total), 0);
    T_EQ_INT(total, 0);
    T_EQ_INT(p.members, 0);
    hd_mpres_dispose(&p);
}

/* r's page as a JSON object (the broker's text in braces): a reference. */
static json_t *page_json(const hd_breq_t *r)
{
    size_t len = strlen(r->page) + 3;
    char *text = malloc(len);
    snprintf(text, len, "{%s}", r->page);
    json_t *root = json_loads(text, 0, NULL);
    T_TRUE(root != NULL);
    free(text);
    return root;
}

/* One member with many connections (a user's tabs): one join event for the first, one leave
 * after the last, whatever the orders; a page's entry holds the first HD_PRESENCE_MEMBER_CONNS
 * in strcmp order and the count, and the member's own pages (member_key) hold all of them,
 * each once, in strcmp order. */
static void test_presence_member_many_conns(void)
{
    hd_mpres_t p;
    hd_mpres_init(&p, 10);
    enum { N = 1000 };
    hd_member_t *mem[N];
    int err, events = 0;
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 7 + 3) % N;
        mem[i] = hd_member_new("tabs", NULL, i + 1);
        hd_message_t *ev = join_ref(&p, "mc", mem[i], &err);
        T_EQ_INT(err, 0);
        events += ev != NULL;
        if (ev)
            hd_message_unref(ev);
    }
    T_EQ_INT(events, 1);
    T_EQ_INT(p.conns, N);
    T_EQ_INT(hd_mpres_count(&p, "mc", 2), 1);
    hd_breq_t *r = hd_breq_new(HD_BREQ_PRESENCE, NULL, "mc", 2);
    hd_mpres_page(&p, r);
    json_t *root = page_json(r);
    json_t *entry = json_array_get(json_object_get(root, "members"), 0);
    json_t *conns = json_object_get(entry, "conns");
    T_EQ_INT(json_array_size(conns), HD_PRESENCE_MEMBER_CONNS);
    T_EQ_INT(json_integer_value(json_object_get(entry, "conn_count")), N);
    T_TRUE(strlen(r->page) < 400); /* {"sub":"tabs"} and ten ids, not a thousand */
    char first[HD_PRESENCE_MEMBER_CONNS][64];
    for (size_t k = 0; k < HD_PRESENCE_MEMBER_CONNS; k++)
        snprintf(first[k], sizeof(first[k]), "%s", json_string_value(json_array_get(conns, k)));
    json_decref(root);
    hd_breq_free(r);
    /* the member's pages of 300: 4 pages, every id once, in strcmp order, the first ten as on
     * its entry */
    char prev[64] = "", cursor[64] = "";
    size_t seen = 0, pages = 0;
    do {
        r = hd_breq_new(HD_BREQ_PRESENCE, NULL, "mc", 2);
        r->member_key = hd_strdup("tabs");
        r->cursor = cursor[0] ? hd_strdup(cursor) : NULL;
        r->limit = 300;
        hd_mpres_page(&p, r);
        T_EQ_INT(r->members, N);
        root = page_json(r);
        T_EQ_STR(json_string_value(json_object_get(json_object_get(root, "member"), "sub")),
                 "tabs");
        conns = json_object_get(root, "conns");
        T_TRUE(json_array_size(conns) <= 300);
        for (size_t k = 0; k < json_array_size(conns); k++, seen++) {
            const char *id = json_string_value(json_array_get(conns, k));
            T_TRUE(strcmp(prev, id) < 0);
            if (seen < HD_PRESENCE_MEMBER_CONNS)
                T_EQ_STR(id, first[seen]);
            snprintf(prev, sizeof(prev), "%s", id);
        }
        json_t *nx = json_object_get(root, "next");
        T_TRUE(json_is_null(nx) || strcmp(json_string_value(nx), prev) == 0);
        snprintf(cursor, sizeof(cursor), "%s", json_is_string(nx) ? json_string_value(nx) : "");
        json_decref(root);
        hd_breq_free(r);
        pages++;
    } while (cursor[0]);
    T_EQ_INT(seen, N);
    T_EQ_INT(pages, 4);
    /* a key that is not a member: null, no connections */
    r = hd_breq_new(HD_BREQ_PRESENCE, NULL, "mc", 2);
    r->member_key = hd_strdup("nobody");
    hd_mpres_page(&p, r);
    T_EQ_INT(r->members, 0);
    T_EQ_STR(r->page, "\"member\":null,\"conns\":[],\"next\":null");
    hd_breq_free(r);
    /* a connection it never joined with (a refused join) changes nothing */
    hd_member_t *stranger = hd_member_new("tabs", NULL, N + 5);
    T_TRUE(hd_mpres_leave(&p, "mc", 2, 0, stranger) == NULL);
    hd_member_unref(stranger);
    T_EQ_INT(p.conns, N);
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 11 + 5) % N;
        hd_message_t *ev = hd_mpres_leave(&p, "mc", 2, 0, mem[i]);
        T_EQ_INT(ev != NULL, j == N - 1);
        if (ev)
            hd_message_unref(ev);
        hd_member_unref(mem[i]);
    }
    T_EQ_INT(p.conns, 0);
    T_EQ_INT(p.members, 0);
    hd_mpres_dispose(&p);
}

/* Many blocks: 3,000 members joined in a scrambled order (blocks split), nine in ten leave
 * (blocks merge and go), a walk by cursor lists exactly those left, in order. */
static void test_presence_blocks_split_and_merge(void)
{
    hd_mpres_t p;
    hd_mpres_init(&p, 10);
    enum { N = 3000 };
    static hd_member_t *mem[N];
    int err;
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 7 + 3) % N;
        char sub[8];
        snprintf(sub, sizeof(sub), "k%04u", i);
        mem[i] = hd_member_new(sub, NULL, i + 1);
        hd_message_unref(join_ref(&p, "pg", mem[i], &err));
    }
    for (unsigned pass = 0; pass < 2; pass++) {
        char keys[HD_PRESENCE_PAGE_MAX][8], next[8] = "", cursor[8];
        uint64_t total;
        unsigned at = 0, seen = 0;
        int first = 1;
        while (first || next[0]) {
            snprintf(cursor, sizeof(cursor), "%s", next);
            size_t n = page_keys(&p, first ? NULL : cursor, 97, keys, next, &total);
            first = 0;
            for (size_t k = 0; k < n; k++, seen++) {
                while (pass && at % 10)
                    at++;
                char want[8];
                snprintf(want, sizeof(want), "k%04u", at++);
                T_EQ_STR(keys[k], want);
            }
        }
        T_EQ_INT(seen, pass ? N / 10 : N);
        T_EQ_INT(total, seen);
        for (unsigned j = 0; pass == 0 && j < N; j++) {
            unsigned i = (j * 11 + 5) % N;
            if (i % 10)
                hd_message_unref(hd_mpres_leave(&p, "pg", 2, 0, mem[i]));
        }
    }
    for (unsigned i = 0; i < N; i++) {
        if (i % 10 == 0)
            hd_message_unref(hd_mpres_leave(&p, "pg", 2, 0, mem[i]));
        hd_member_unref(mem[i]);
    }
    T_EQ_INT(p.members, 0);
    hd_mpres_dispose(&p);
}

int main(void)
{
    T_RUN(test_ring_grows_and_shrinks);
    T_RUN(test_history_bounds);
    T_RUN(test_tombstones);
    T_RUN(test_eviction_order);
    T_RUN(test_channel_budget);
    T_RUN(test_memory_budget);
    T_RUN(test_refusal_evicts_nothing);
    T_RUN(test_new_channels_replace_idle_ones);
    T_RUN(test_expiry_heap);
    T_RUN(test_info_and_delivery);
    T_RUN(test_broker_works_on_the_caller);
    T_RUN(test_concurrent_publishers_one_order);
    T_RUN(test_join_and_leave_locally);
    T_RUN(test_local_join_ended_while_pending);
    T_RUN(test_resume_at_the_stream_locally);
    T_RUN(test_burst_asks_once);
    T_RUN(test_presence_one_request_per_pass);
    T_RUN(test_presence_member_refs);
    T_RUN(test_presence_pages_in_key_order);
    T_RUN(test_presence_member_many_conns);
    T_RUN(test_presence_blocks_split_and_merge);
    T_DONE();
}
