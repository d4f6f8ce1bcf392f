/* SPDX-License-Identifier: MIT */
/* test_mpsc.c: unit tests of the lock-free hd_mpsc queue (src/core/mpsc.c): FIFO order on one
 * thread, then four producer threads against one consumer: each message arrives exactly once
 * and every producer's messages arrive in the order they were pushed. */
#include "herald/common.h"
#include "herald/mpsc.h"

#include "test.h"

#include <sched.h>
#include <uv.h>

#define PRODUCERS    4
#define PER_PRODUCER 100000

typedef struct tmsg_s {
    hd_msg_t base;
    uint32_t producer;
    uint32_t seq;
} tmsg_t;

static void test_fifo_single_thread(void)
{
    hd_mpsc_t q;
    tmsg_t m[64];
    hd_mpsc_init(&q);
    T_TRUE(hd_mpsc_pop(&q) == NULL);
    T_TRUE(hd_mpsc_pop(&q) == NULL);

    for (uint32_t i = 0; i < 64; i++) {
        m[i].seq = i;
        hd_mpsc_push(&q, &m[i].base);
    }
    for (uint32_t i = 0; i < 64; i++) {
        tmsg_t *got = (tmsg_t *)hd_mpsc_pop(&q);
        T_TRUE(got != NULL);
        T_EQ_INT(got->seq, i);
    }
    T_TRUE(hd_mpsc_pop(&q) == NULL);

    /* One element at a time exercises the stub re-insertion every time. */
    for (uint32_t i = 0; i < 10; i++) {
        hd_mpsc_push(&q, &m[i].base);
        tmsg_t *got = (tmsg_t *)hd_mpsc_pop(&q);
        T_TRUE(got == &m[i]);
        T_TRUE(hd_mpsc_pop(&q) == NULL);
    }

    /* Interleaved pushes and pops keep FIFO order; a popped message can be pushed again. */
    uint32_t next_push = 0, next_pop = 0;
    for (int round = 0; round < 200; round++) {
        int pushes = 1 + round % 3;
        for (int k = 0; k < pushes && next_push - next_pop < 64; k++) {
            tmsg_t *x = &m[next_push % 64];
            x->seq = next_push++;
            hd_mpsc_push(&q, &x->base);
        }
        int pops = 1 + (round * 7) % 3;
        for (int k = 0; k < pops && next_pop < next_push; k++) {
            tmsg_t *got = (tmsg_t *)hd_mpsc_pop(&q);
            T_TRUE(got != NULL);
            T_EQ_INT(got->seq, next_pop);
            next_pop++;
        }
    }
    while (next_pop < next_push) {
        tmsg_t *got = (tmsg_t *)hd_mpsc_pop(&q);
        T_TRUE(got != NULL);
        T_EQ_INT(got->seq, next_pop);
        next_pop++;
    }
    T_TRUE(hd_mpsc_pop(&q) == NULL);
}

typedef struct producer_s {
    hd_mpsc_t *q;
    tmsg_t *msgs;
    uint32_t id;
    uv_thread_t thread;
} producer_t;

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
        if (i % 4096 == 0)
            sched_yield(); /* vary the interleavings */
    }
}

static void test_many_producers(void)
{
    hd_mpsc_t q;
    producer_t prod[PRODUCERS];
    uint32_t next[PRODUCERS] = {0};
    unsigned char *seen = hd_calloc(PRODUCERS, PER_PRODUCER);
    hd_mpsc_init(&q);
    for (uint32_t k = 0; k < PRODUCERS; k++) {
        prod[k].q = &q;
        prod[k].id = k;
        prod[k].msgs = hd_calloc(PER_PRODUCER, sizeof(tmsg_t));
        T_EQ_INT(uv_thread_create(&prod[k].thread, produce, &prod[k]), 0);
    }
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);

    uint64_t received = 0, empty_polls = 0;
    while (received < (uint64_t)PRODUCERS * PER_PRODUCER) {
        tmsg_t *m = (tmsg_t *)hd_mpsc_pop(&q);
        if (!m) {
            empty_polls++;
            if (empty_polls % 64 == 0)
                sched_yield();
            continue;
        }
        T_TRUE(m->producer < PRODUCERS);
        T_TRUE(m->seq < PER_PRODUCER);
        /* The message is one of that producer's own, not a stray pointer. */
        T_TRUE(m == &prod[m->producer].msgs[m->seq]);
        if (seen[(size_t)m->producer * PER_PRODUCER + m->seq])
            T_FAIL("producer %u message %u received twice", m->producer, m->seq);
        seen[(size_t)m->producer * PER_PRODUCER + m->seq] = 1;
        if (m->seq != next[m->producer])
            T_FAIL("producer %u: got message %u, expected %u", m->producer, m->seq,
                   next[m->producer]);
        next[m->producer]++;
        received++;
    }
    for (uint32_t k = 0; k < PRODUCERS; k++)
        T_EQ_INT(uv_thread_join(&prod[k].thread), 0);
    T_TRUE(hd_mpsc_pop(&q) == NULL);
    for (uint32_t k = 0; k < PRODUCERS; k++)
        T_EQ_INT(next[k], PER_PRODUCER);
    for (size_t i = 0; i < (size_t)PRODUCERS * PER_PRODUCER; i++)
        if (!seen[i])
            T_FAIL("message %zu never received", i);
    T_EQ_INT(received, (uint64_t)PRODUCERS * PER_PRODUCER);
    fprintf(stderr, "     %llu empty polls while producers were running\n",
            (unsigned long long)empty_polls);
    for (uint32_t k = 0; k < PRODUCERS; k++)
        free(prod[k].msgs);
    free(seen);
}

int main(void)
{
    T_RUN(test_fifo_single_thread);
    T_RUN(test_many_producers);
    T_DONE();
}
