/* SPDX-License-Identifier: MIT */
/*
 * wake.h: how other threads wake a loop to read its mailbox, in place of uv_async_t: an eventfd
 * the loop watches (uv_poll_t) and a flag that lets only the first waker since the loop last
 * woke write to it.
 *
 *   waker (any thread)                         the loop's thread
 *   push to the mailbox                        fd readable: read it (the count goes to 0)
 *   exchange(pending, 1) == 0 ? write(fd) : -  exchange(pending, 0), then cb: drain the mailbox
 *
 * A waker that finds pending set skips the write: the loop has not yet taken the flag back, so
 * its drain comes after this push (both exchanges are acquire-release: the loop's synchronizes
 * with every waker whose exchange came before it). A waker after the loop's exchange writes
 * again: at worst a wake-up that finds the mailbox already empty.
 *
 * Why not uv_async_t: libuv 1.44's uv_async_send marks the handle busy, writes the eventfd and
 * then marks it done, and the woken loop spins (997 `pause`, then sched_yield, again and
 * again) until the waker has returned from its write(). Being woken is what makes the write
 * slow to return, so the loop spins on nearly every cross-thread delivery: 11% of a worker's
 * CPU in the notify benchmark (perf, 2 cores). Here the loop never waits for a waker.
 */
#ifndef HERALD_WAKE_H
#define HERALD_WAKE_H

#include <uv.h>

typedef void (*hd_wake_cb)(void *data);

/* The all-zero hd_wake_t is a valid one that was never set up (hd_wake_dispose does nothing). */
typedef struct hd_wake_s {
    uv_poll_t poll_; /* private: watches fd_ */
    int fd_;
    int pending_; /* atomic: a waker wrote fd_ and the loop has not taken it back yet */
    hd_wake_cb cb;
    void *data;
    unsigned is_open_ : 1; /* fd_ is ours to close */
} hd_wake_t;

/* Sets wk up on loop (the loop's thread, or before the loop runs); cb(data) runs on the loop
 * after a wake-up. Returns 0 or a negative UV_E* code (wk is left as it was: all zero). */
int hd_wake_init(hd_wake_t *wk, uv_loop_t *loop, hd_wake_cb cb, void *data);
/* Wakes the loop (any thread): cb runs on it soon, after whatever the caller pushed before.
 * Until hd_wake_dispose, a wake-up after hd_wake_close is harmless (nobody reads it). */
void hd_wake_send(hd_wake_t *wk);
/* Stops watching (the loop's thread; again, or after the loop closed the handle itself, is
 * harmless). The loop's run ends the handle; wk's storage must last until then. */
void hd_wake_close(hd_wake_t *wk);
/*
 * Holds the flag (the loop's thread, from cb): wakers skip their write as if a wake-up were on
 * its way, until hd_wake_release. The loop then drains its mailbox on its own meanwhile (a
 * timer): a loop that mail keeps waking takes it in batches, one timer tick for all the pushes
 * of the tick, instead of one wake-up (a write, two context switches) per push. The mail waits
 * at most until the release.
 */
void hd_wake_hold(hd_wake_t *wk);
/* Ends a hold (the loop's thread): from here a waker writes again. Drain the mailbox after it:
 * what was pushed during the hold woke nobody. */
void hd_wake_release(hd_wake_t *wk);
/* Closes the eventfd, once nothing can wake wk any more (the loop has ended and been closed). */
void hd_wake_dispose(hd_wake_t *wk);

#endif
