/* SPDX-License-Identifier: MIT */
/*
 * mpsc.h: the lock-free multi-producer single-consumer intrusive queue every loop's mailbox is
 * made of (workers, the main loop, the brokers). Any thread pushes; only the loop that owns the
 * queue pops, after its uv_async wake-up. A message is a struct that starts with an hd_msg_t;
 * its callback runs on the consuming loop and owns the message from then on.
 *
 * Vyukov's design: producers exchange the head pointer (one atomic exchange per push, never a
 * loop), then link the previous head to the new message. Between those two steps a pop sees the
 * queue end early and returns NULL; the producer's wake-up follows, so nothing is lost.
 *
 *   tail (consumer) -> stub -> m1 -> m2 -> m3 <- head (producers exchange here)
 */
#ifndef HERALD_MPSC_H
#define HERALD_MPSC_H

typedef struct hd_worker_s hd_worker_t;
typedef struct hd_msg_s hd_msg_t;

/* A message for a loop: cb runs on that loop (w is NULL on the main loop) and owns msg. */
typedef void (*hd_msg_cb)(hd_worker_t *w, hd_msg_t *msg);
struct hd_msg_s {
    hd_msg_t *next_; /* queue link: private */
    hd_msg_cb cb;
};

typedef struct hd_mpsc_s {
    hd_msg_t *head; /* producers exchange here */
    hd_msg_t *tail; /* consumer pops here */
    hd_msg_t stub;
} hd_mpsc_t;

/* Makes q empty (caller-owned storage; nothing to dispose). */
void hd_mpsc_init(hd_mpsc_t *q);
/* Appends m (any thread). The caller then wakes the consumer. */
void hd_mpsc_push(hd_mpsc_t *q, hd_msg_t *m);
/* Returns the oldest message or NULL (empty, or a producer mid-push: its wake-up follows).
 * Consumer thread only. */
hd_msg_t *hd_mpsc_pop(hd_mpsc_t *q);
/* Pops every message and runs its callback with w (consumer thread only). */
void hd_mpsc_drain(hd_mpsc_t *q, hd_worker_t *w);

/*
 * A full (sequentially consistent) fence: orders a store before it against a load after it
 * (StoreLoad), which acquire/release alone do not. GCC's ThreadSanitizer does not model fences
 * and warns (-Wtsan, an error in CI); the fence is still emitted, only the warning goes.
 */
static inline void hd_fence_full(void)
{
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#pragma GCC diagnostic pop
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif
