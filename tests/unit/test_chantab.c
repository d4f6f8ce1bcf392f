/* SPDX-License-Identifier: MIT */
/*
 * test_chantab.c: the channel table the hub, the embedded broker and the Redis bridge share, and
 * a broker channel's interest per worker (src/pubsub/chantab.c): get-or-create (zeroed entry, the
 * name inline and NUL-terminated, found again, made once), removal from the table and while
 * visiting it, growth to many channels and the buckets given back, interest counts 0 -> 1 -> 0
 * per worker with the number of workers that have any, and the fan-out's targets, including a
 * worker moving its own count between 1 and more on another thread while fan-outs run (relaxed
 * atomics, no lock: scripts/test.sh runs this under ThreadSanitizer).
 */
#include "herald/chantab.h"
#include "herald/common.h"
#include "test.h"

#include <uv.h>

typedef struct tchan_s {
    hd_chan_t ch;
    uint64_t value;
    hd_interest_t in;
    char name[];
} tchan_t;

static tchan_t *tget(hd_chantab_t *t, const char *name, int *made)
{
    return hd_container_of(hd_chantab_get(t, name, strlen(name), made), tchan_t, ch);
}

static tchan_t *tfind(hd_chantab_t *t, const char *name)
{
    hd_chan_t *c = hd_chantab_find(t, name, strlen(name));
    return c ? hd_container_of(c, tchan_t, ch) : NULL;
}

static void test_get_or_create(void)
{
    hd_chantab_t t;
    HD_CHANTAB_INIT(&t, tchan_t, 16);
    int made = -1;
    tchan_t *a = tget(&t, "news", &made);
    T_EQ_INT(made, 1);
    T_EQ_INT(a->value, 0); /* zeroed */
    T_TRUE(a->in.per_worker == NULL);
    T_EQ_STR(a->name, "news");
    T_TRUE(hd_chan_name(&a->ch) == a->name); /* the key is the inline name */
    T_EQ_INT(hd_chan_name_len(&a->ch), 4);
    a->value = 42;
    T_TRUE(tget(&t, "news", &made) == a);
    T_EQ_INT(made, 0);
    T_EQ_INT(a->value, 42);
    T_TRUE(tget(&t, "news", NULL) == a);
    /* prefixes and longer names are other channels */
    tchan_t *b = tget(&t, "new", &made);
    T_EQ_INT(made, 1);
    tchan_t *c = tget(&t, "news2", &made);
    T_EQ_INT(made, 1);
    T_TRUE(a != b && a != c && b != c);
    T_EQ_INT(hd_chantab_count(&t), 3);
    T_TRUE(tfind(&t, "new") == b);
    T_TRUE(tfind(&t, "ne") == NULL);
    /* a name of HD_CHANNEL_MAX bytes, and what is not part of the name is not */
    char big[HD_CHANNEL_MAX + 2];
    memset(big, 'x', sizeof(big));
    tchan_t *d = hd_container_of(hd_chantab_get(&t, big, HD_CHANNEL_MAX, &made), tchan_t, ch);
    T_EQ_INT(made, 1);
    T_EQ_INT(strlen(d->name), HD_CHANNEL_MAX);
    T_TRUE(hd_chantab_find(&t, big, HD_CHANNEL_MAX) == &d->ch);
    T_TRUE(hd_chantab_find(&t, big, HD_CHANNEL_MAX - 1) == NULL);
    hd_chantab_free(&t, &a->ch);
    hd_chantab_free(&t, &b->ch);
    hd_chantab_free(&t, &c->ch);
    hd_chantab_free(&t, &d->ch);
    T_EQ_INT(hd_chantab_count(&t), 0);
    T_TRUE(tfind(&t, "news") == NULL);
    a = tget(&t, "news", &made); /* made again, fresh */
    T_EQ_INT(made, 1);
    T_EQ_INT(a->value, 0);
    hd_chantab_free(&t, &a->ch);
    hd_chantab_dispose(&t);
}

typedef struct visit_s {
    int visits;
    hd_chantab_t *t;
    int only_odd;
} visit_t;

static void drop(hd_chan_t *c, void *arg)
{
    visit_t *v = arg;
    v->visits++;
    if (!v->only_odd || hd_container_of(c, tchan_t, ch)->value % 2)
        hd_chantab_free(v->t, c);
}

/* Many channels: the buckets grow with them, every one is found, a visit may free the channel
 * it is given, and the buckets go back to the first size as the table empties. */
static void test_growth_and_removal(void)
{
    enum { N = 20000 };
    hd_chantab_t t;
    HD_CHANTAB_INIT(&t, tchan_t, 8);
    size_t first = t.map.n_buckets;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "user:%d", i);
        tget(&t, name, NULL)->value = (uint64_t)i;
    }
    T_EQ_INT(hd_chantab_count(&t), N);
    T_TRUE(t.map.n_buckets >= N);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "user:%d", i);
        tchan_t *c = tfind(&t, name);
        T_TRUE(c != NULL);
        T_EQ_INT(c->value, i);
    }
    visit_t v = {0, &t, 1};
    hd_chantab_foreach(&t, drop, &v);
    T_EQ_INT(v.visits, N);
    T_EQ_INT(hd_chantab_count(&t), N / 2);
    T_TRUE(tfind(&t, "user:1") == NULL);
    T_TRUE(tfind(&t, "user:2") != NULL);
    /* the others, one by one: the buckets go back to the first size as the table empties */
    for (int i = 0; i < N; i += 2) {
        char name[32];
        snprintf(name, sizeof(name), "user:%d", i);
        hd_chantab_free(&t, &tfind(&t, name)->ch);
    }
    T_EQ_INT(hd_chantab_count(&t), 0);
    T_EQ_INT(t.map.n_buckets, first);
    /* a visit freeing every channel it is given */
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "again:%d", i);
        tget(&t, name, NULL);
    }
    v = (visit_t){0, &t, 0};
    hd_chantab_foreach(&t, drop, &v);
    T_EQ_INT(v.visits, 100);
    T_EQ_INT(hd_chantab_count(&t), 0);
    hd_chantab_dispose(&t);
}

static void test_interest_counts(void)
{
    hd_interest_t in;
    hd_interest_init(&in, 4);
    T_EQ_INT(in.n_workers, 0);
    T_EQ_INT(hd_interest_total(&in), 0);
    T_EQ_INT(hd_interest_remove(&in, 2), -1); /* none: nothing changes */
    T_EQ_INT(in.n_workers, 0);
    T_EQ_INT(hd_interest_add(&in, 2), 1); /* worker 2: 0 -> 1 */
    T_EQ_INT(in.n_workers, 1);
    T_EQ_INT(hd_interest_add(&in, 2), 0); /* 1 -> 2: not its first */
    T_EQ_INT(in.n_workers, 1);
    T_EQ_INT(hd_interest_add(&in, 0), 1);
    T_EQ_INT(in.n_workers, 2);
    T_EQ_INT(hd_interest_of(&in, 2), 2);
    T_EQ_INT(hd_interest_of(&in, 1), 0);
    T_EQ_INT(hd_interest_total(&in), 3);
    T_EQ_INT(hd_interest_remove(&in, 2), 1); /* 2 -> 1 */
    T_EQ_INT(in.n_workers, 2);
    T_EQ_INT(hd_interest_remove(&in, 2), 0); /* 1 -> 0: its last */
    T_EQ_INT(in.n_workers, 1);
    T_EQ_INT(hd_interest_remove(&in, 2), -1);
    T_EQ_INT(hd_interest_remove(&in, 0), 0);
    T_EQ_INT(in.n_workers, 0);
    T_EQ_INT(hd_interest_total(&in), 0);
    /* again from 0, after going to 0 */
    T_EQ_INT(hd_interest_add(&in, 3), 1);
    T_EQ_INT(in.n_workers, 1);
    T_EQ_INT(hd_interest_remove(&in, 3), 0);
    hd_interest_dispose(&in);
    T_TRUE(in.per_worker == NULL);
}

typedef struct got_s {
    unsigned workers[64];
    size_t n;
} got_t;

static void record(void *arg, unsigned worker, hd_message_t *m)
{
    got_t *g = arg;
    T_TRUE(g->n < HD_ARRAY_SIZE(g->workers));
    g->workers[g->n++] = worker;
    hd_message_unref(m); /* the reference is the callee's */
}

static void test_fan_out_targets(void)
{
    hd_message_t *m = hd_message_new("c", 1, "", "x", 1);
    hd_interest_t in;
    hd_interest_init(&in, 40); /* more than one word of workers */
    got_t g = {0};
    hd_interest_fan_out(&in, m, record, &g);
    T_EQ_INT(g.n, 0); /* nobody */
    hd_interest_add(&in, 39);
    hd_interest_add(&in, 0);
    hd_interest_add(&in, 7);
    hd_interest_add(&in, 7); /* two subscribers on worker 7: still one delivery there */
    hd_interest_fan_out(&in, m, record, &g);
    T_EQ_INT(g.n, 3);
    T_EQ_INT(g.workers[0], 0); /* in worker order */
    T_EQ_INT(g.workers[1], 7);
    T_EQ_INT(g.workers[2], 39);
    T_EQ_INT(m->refs, 1); /* each delivery had a reference of its own, now dropped */
    hd_interest_remove(&in, 0);
    g.n = 0;
    hd_interest_fan_out(&in, m, record, &g);
    T_EQ_INT(g.n, 2);
    T_EQ_INT(g.workers[0], 7);
    T_EQ_INT(g.workers[1], 39);
    hd_interest_remove(&in, 7);
    hd_interest_remove(&in, 7);
    hd_interest_remove(&in, 39);
    g.n = 0;
    hd_interest_fan_out(&in, m, record, &g);
    T_EQ_INT(g.n, 0);
    hd_interest_dispose(&in);
    hd_message_unref(m);
}

/*
 * As the embedded broker runs it: the owner (here the main thread, in the broker: whoever holds
 * the lock) takes worker 1 from 0 to 1 and fans out; meanwhile worker 1's own thread moves its
 * count between 1 and more without the lock, as its hub does with the counter handed to it. Every
 * fan-out reaches worker 1 exactly once, and the count ends where the moves leave it.
 */
typedef struct mover_s {
    uint32_t *count;
    int rounds;
} mover_t;

static void mover(void *arg)
{
    mover_t *mv = arg;
    for (int i = 0; i < mv->rounds; i++) {
        __atomic_add_fetch(mv->count, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(mv->count, __ATOMIC_RELAXED) > 1)
            __atomic_sub_fetch(mv->count, 1, __ATOMIC_RELAXED);
    }
}

static void count_one(void *arg, unsigned worker, hd_message_t *m)
{
    ((uint64_t *)arg)[worker]++;
    hd_message_unref(m);
}

static void test_fan_out_while_worker_moves_its_count(void)
{
    enum { FANOUTS = 20000 };
    hd_message_t *m = hd_message_new("c", 1, "", "x", 1);
    hd_interest_t in;
    hd_interest_init(&in, 3);
    hd_interest_add(&in, 1);
    mover_t mv = {&in.per_worker[1], 50000};
    uv_thread_t th;
    T_EQ_INT(uv_thread_create(&th, mover, &mv), 0);
    uint64_t got[3] = {0};
    for (int i = 0; i < FANOUTS; i++)
        hd_interest_fan_out(&in, m, count_one, got);
    uv_thread_join(&th);
    T_EQ_INT(got[0], 0);
    T_EQ_INT(got[1], FANOUTS);
    T_EQ_INT(got[2], 0);
    T_EQ_INT(hd_interest_of(&in, 1), 1);
    T_EQ_INT(hd_interest_remove(&in, 1), 0);
    T_EQ_INT(in.n_workers, 0);
    hd_interest_dispose(&in);
    hd_message_unref(m);
}

int main(void)
{
    T_RUN(test_get_or_create);
    T_RUN(test_growth_and_removal);
    T_RUN(test_interest_counts);
    T_RUN(test_fan_out_targets);
    T_RUN(test_fan_out_while_worker_moves_its_count);
    T_DONE();
}
