/* SPDX-License-Identifier: MIT */
/* test_wake.c: unit tests of hd_wake (src/core/wake.c), the way other threads wake a loop to
 * drain its mailbox: wake-ups sent before the loop runs come as one callback; then four
 * producer threads push to an hd_mpsc queue and wake a loop that drains it only from the
 * callback: every message arrives exactly once and in each producer's order, with no wake-up
 * lost (a lost one would leave messages in the queue with the loop asleep: a 60 s timer fails
 * the test then), and fewer callbacks than sends. A held wake-up skips the wakers' writes until
 * it is released. scripts/test.sh runs it under ThreadSanitizer too. */
#include "herald/common.h"
#include "herald/mpsc.h"
#include "herald/wake.h"

#include "test.h"

#include <sched.h>
#include <uv.h>

#define PRODUCERS    4
#define PER_PRODUCER 50000

typedef struct tmsg_s {
    hd_msg_t base;
    uint32_t producer;
    uint32_t seq;
} tmsg_t;

static int calls;

static void count_cb(void *data)
{
    (void)data;
    calls++;
}

static void test_coalesced(void)
{
    uv_loop_t loop;
    hd_wake_t wk = {0};
    T_EQ_INT(uv_loop_init(&loop), 0);
    T_EQ_INT(hd_wake_init(&wk, &loop, count_cb, NULL), 0);
    calls = 0;
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 0); /* nothing sent: no callback */
    for (int i = 0; i < 100; i++)
        hd_wake_send(&wk);
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 1); /* a hundred sends before the loop ran: one callback */
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 1);
    hd_wake_send(&wk); /* after the callback took the flag back: a new wake-up */
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 2);
    hd_wake_close(&wk);
    hd_wake_close(&wk); /* again: harmless */
    hd_wake_send(&wk);  /* after close, before dispose: harmless */
    uv_run(&loop, UV_RUN_DEFAULT);
    T_EQ_INT(calls, 2);
    T_EQ_INT(uv_loop_close(&loop), 0);
    hd_wake_dispose(&wk);
    hd_wake_dispose(&wk);
    hd_wake_t never = {0}; /* the all-zero one was never set up: nothing to dispose */
    hd_wake_dispose(&never);
}

typedef struct producer_s {
    hd_mpsc_t *q;
    hd_wake_t *wk;
    tmsg_t *msgs;
    uint32_t id;
    uv_thread_t thread;
} producer_t;

typedef struct consumer_s {
    hd_mpsc_t q;
    hd_wake_t wk;
    uv_timer_t deadline;
    uint32_t next[PRODUCERS];
    uint64_t received, callbacks;
    int is_late;
} consumer_t;

static volatile int go;

static void produce(void *arg)
{
    producer_t *p = arg;
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
        sched_yield();
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        p->msgs[i].producer = p->id;
        p->msgs[i].seq = i;
        hd_mpsc_push(p->q, &p->msgs[i].base);
        hd_wake_send(p->wk);
        if (i % 1024 == 0)
            sched_yield(); /* vary the interleavings */
    }
}

static void drain_cb(void *data)
{
    consumer_t *c = data;
    c->callbacks++;
    tmsg_t *m;
    while ((m = (tmsg_t *)hd_mpsc_pop(&c->q)) != NULL) {
        if (m->seq != c->next[m->producer])
            T_FAIL("producer %u: got %u, expected %u", m->producer, m->seq, c->next[m->producer]);
        c->next[m->producer]++;
        c->received++;
    }
    if (c->received == (uint64_t)PRODUCERS * PER_PRODUCER) {
        hd_wake_close(&c->wk);
        uv_close((uv_handle_t *)&c->deadline, NULL);
    }
}

static void on_deadline(uv_timer_t *t)
{
    consumer_t *c = t->data;
    c->is_late = 1;
    hd_wake_close(&c->wk);
    uv_close((uv_handle_t *)&c->deadline, NULL);
}

/* A held wake-up: wakers skip their write until the loop releases it (the hooks thread holds
 * its wake-up while mail keeps coming, and drains on a timer instead). */
static void test_hold(void)
{
    uv_loop_t loop;
    hd_wake_t wk = {0};
    T_EQ_INT(uv_loop_init(&loop), 0);
    T_EQ_INT(hd_wake_init(&wk, &loop, count_cb, NULL), 0);
    calls = 0;
    hd_wake_send(&wk);
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 1);
    hd_wake_hold(&wk);
    for (int i = 0; i < 3; i++)
        hd_wake_send(&wk);
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 1); /* held: nobody wrote */
    hd_wake_release(&wk);
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 1); /* a release wakes nothing by itself: the loop drains after it */
    hd_wake_send(&wk);
    uv_run(&loop, UV_RUN_NOWAIT);
    T_EQ_INT(calls, 2); /* released: the next waker writes */
    hd_wake_close(&wk);
    uv_run(&loop, UV_RUN_DEFAULT);
    T_EQ_INT(uv_loop_close(&loop), 0);
    hd_wake_dispose(&wk);
}

static void test_many_wakers(void)
{
    uv_loop_t loop;
    consumer_t *c = hd_calloc(1, sizeof(*c));
    producer_t prod[PRODUCERS];
    T_EQ_INT(uv_loop_init(&loop), 0);
    hd_mpsc_init(&c->q);
    T_EQ_INT(hd_wake_init(&c->wk, &loop, drain_cb, c), 0);
    uv_timer_init(&loop, &c->deadline);
    c->deadline.data = c;
    uv_timer_start(&c->deadline, on_deadline, 60000, 0);
    for (uint32_t k = 0; k < PRODUCERS; k++) {
        prod[k].q = &c->q;
        prod[k].wk = &c->wk;
        prod[k].id = k;
        prod[k].msgs = hd_calloc(PER_PRODUCER, sizeof(tmsg_t));
        T_EQ_INT(uv_thread_create(&prod[k].thread, produce, &prod[k]), 0);
    }
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (uint32_t k = 0; k < PRODUCERS; k++)
        uv_thread_join(&prod[k].thread);
    if (c->is_late)
        T_FAIL("a wake-up was lost: %llu of %d messages received in 60 s",
               (unsigned long long)c->received, PRODUCERS * PER_PRODUCER);
    T_EQ_INT(c->received, (uint64_t)PRODUCERS * PER_PRODUCER);
    for (uint32_t k = 0; k < PRODUCERS; k++)
        T_EQ_INT(c->next[k], PER_PRODUCER);
    T_TRUE(hd_mpsc_pop(&c->q) == NULL);
    T_TRUE(c->callbacks <= c->received);
    fprintf(stderr, "     %llu callbacks for %d wake-ups sent\n", (unsigned long long)c->callbacks,
            PRODUCERS * PER_PRODUCER);
    T_EQ_INT(uv_loop_close(&loop), 0);
    hd_wake_dispose(&c->wk);
    for (uint32_t k = 0; k < PRODUCERS; k++)
        free(prod[k].msgs);
    free(c);
}

int main(void)
{
    T_RUN(test_coalesced);
    T_RUN(test_hold);
    T_RUN(test_many_wakers);
    T_DONE();
}
