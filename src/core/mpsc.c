/* SPDX-License-Identifier: MIT */
/*
 * mpsc.c: the lock-free multi-producer single-consumer queue of every mailbox (mpsc.h). No
 * dependency but the compiler's atomics: scripts/test.sh runs tests/unit/test_mpsc under
 * ThreadSanitizer.
 */
#include "herald/mpsc.h"

#include <stddef.h>

void hd_mpsc_init(hd_mpsc_t *q)
{
    q->stub.next_ = NULL;
    q->head = q->tail = &q->stub;
}

void hd_mpsc_push(hd_mpsc_t *q, hd_msg_t *m)
{
    __atomic_store_n(&m->next_, NULL, __ATOMIC_RELAXED);
    hd_msg_t *prev = __atomic_exchange_n(&q->head, m, __ATOMIC_ACQ_REL);
    __atomic_store_n(&prev->next_, m, __ATOMIC_RELEASE);
    /*
     * Every push is followed by a wake-up. uv_async_send's first step is a plain read of the
     * handle's pending flag (hd_wake_send's is an exchange, which needs no fence; the fence
     * stays for the mailboxes still woken by uv_async). Without a full fence that read may be
     * satisfied before the link store above is visible (StoreLoad reordering, allowed even on
     * x86): the producer sees the flag still set and skips the wake-up, while the consumer,
     * which has just cleared the flag, finds the link still NULL and reports "a producer is
     * mid-push, its wake-up follows": a lost wake-up, and a mailbox that stalls until the next
     * message (found by fuzz_publish; libuv #4584).
     */
    hd_fence_full();
}

hd_msg_t *hd_mpsc_pop(hd_mpsc_t *q)
{
    hd_msg_t *tail = q->tail;
    hd_msg_t *next = __atomic_load_n(&tail->next_, __ATOMIC_ACQUIRE);
    if (tail == &q->stub) {
        if (!next)
            return NULL;
        q->tail = next;
        tail = next;
        next = __atomic_load_n(&next->next_, __ATOMIC_ACQUIRE);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    if (tail != __atomic_load_n(&q->head, __ATOMIC_ACQUIRE))
        return NULL; /* a producer is between its exchange and its link */
    hd_mpsc_push(q, &q->stub);
    next = __atomic_load_n(&tail->next_, __ATOMIC_ACQUIRE);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

void hd_mpsc_drain(hd_mpsc_t *q, hd_worker_t *w)
{
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(q)) != NULL)
        m->cb(w, m);
}
