/* SPDX-License-Identifier: MIT */
/*
 * wbatch.c: the writes of a loop pass to several sockets, in one system call (wbatch.h): the
 * webhook sender's (src/hooks/client.c) and a worker's flush of its plain connections (conn.c).
 *
 * Without pipelining each webhook request has a connection of its own, so a tick of the hooks
 * thread (hooks.c) that sends four requests writes four sockets. On one machine each of those
 * writes wakes the receiver, which then takes the hooks thread's core: its sync wake-up goes to
 * the waker's core, and a SCHED_IDLE or nice 10 thread is preempted on the way out of the
 * system call. The receiver answers that one request and sleeps again before the next write
 * wakes it: a preemption and a wake-up per request (0.8 preemptions per delivery in issue 12's
 * bar 1). Submitted together (Linux AIO: io_submit with one IOCB_CMD_PWRITEV per socket), the
 * writes all run before the thread leaves the kernel, so the receiver is woken and the thread
 * preempted once a batch (0.2 per delivery; the thread's CPU per delivery about a fifth less).
 *
 *   hd_wbatch_add(fd, iov) x N  ->  hd_wbatch_run: io_submit (N writes, each done at once: a
 *   non-blocking socket never queues) -> io_getevents (their N results) -> res[slot]
 *
 * A write to a non-blocking socket completes inside io_submit with what the socket took, or
 * -EAGAIN, as writev would; nothing stays in flight, so the iovecs and what they point to are
 * free again when hd_wbatch_run returns. Where the kernel has no AIO for herald (a seccomp
 * filter, ENOSYS, aio-max-nr reached), hd_wbatch_new gives NULL and the caller writes each
 * socket itself; should io_submit refuse later, the writes it did not take are written here one
 * by one (writev), and after an error that is not transient, batches are not tried again.
 */
#include "herald/wbatch.h"
#include "herald/common.h"

#include <errno.h>
#include <linux/aio_abi.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct hd_wbatch_s {
    aio_context_t ctx;
    size_t n;
    unsigned is_off : 1; /* io_submit refused with a lasting error: writes go one by one */
    struct iocb cbs[HD_WBATCH_MAX];
    struct iocb *ptrs[HD_WBATCH_MAX];
    struct io_event evs[HD_WBATCH_MAX];
};

hd_wbatch_t *hd_wbatch_new(void)
{
    hd_wbatch_t *b = hd_calloc(1, sizeof(*b));
    if (syscall(SYS_io_setup, HD_WBATCH_MAX, &b->ctx) != 0) {
        int e = errno;
        free(b);
        errno = e; /* for the caller's message */
        return NULL;
    }
    for (size_t i = 0; i < HD_WBATCH_MAX; i++)
        b->ptrs[i] = &b->cbs[i];
    return b;
}

void hd_wbatch_free(hd_wbatch_t *b)
{
    if (!b)
        return;
    syscall(SYS_io_destroy, b->ctx);
    free(b);
}

size_t hd_wbatch_count(const hd_wbatch_t *b)
{
    return b->n;
}

int hd_wbatch_add(hd_wbatch_t *b, int fd, const uv_buf_t *iov, size_t n)
{
    if (b->n == HD_WBATCH_MAX)
        return -1;
    struct iocb *cb = &b->cbs[b->n];
    memset(cb, 0, sizeof(*cb));
    cb->aio_data = b->n;
    cb->aio_lio_opcode = IOCB_CMD_PWRITEV;
    cb->aio_fildes = (uint32_t)fd;
    /* uv_buf_t is struct iovec on Unix (base, len), which libuv's own writev relies on */
    cb->aio_buf = (uint64_t)(uintptr_t)iov;
    cb->aio_nbytes = n;
    return (int)b->n++;
}

/* A write's error as uv_try_write gives it: ENOBUFS is UV_EAGAIN there too. */
static ssize_t result_of(ssize_t r)
{
    return r == -ENOBUFS ? UV_EAGAIN : r;
}

/* The write of slot i by writev: bytes written, or a negative errno (as uv_try_write). */
static ssize_t write_one(const struct iocb *cb)
{
    ssize_t r;
    do {
        r = writev((int)cb->aio_fildes, (const struct iovec *)(uintptr_t)cb->aio_buf,
                   (int)cb->aio_nbytes);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? result_of(-errno) : r;
}

void hd_wbatch_run(hd_wbatch_t *b, ssize_t *res)
{
    size_t n = b->n, done = 0;
    b->n = 0;
    if (n == 0)
        return;
    if (n > 1 && !b->is_off) {
        long m = syscall(SYS_io_submit, b->ctx, (long)n, b->ptrs);
        if (m < 0 && errno != EAGAIN && errno != EINTR)
            b->is_off = 1; /* not transient (EINVAL, EPERM, ENOSYS...): one by one from now */
        if (m > 0) {
            /* each submitted write is complete already (a non-blocking socket never queues
             * one): the wait returns at once */
            long got = 0;
            while (got < m) {
                long r = syscall(SYS_io_getevents, b->ctx, m - got, m - got, b->evs + got, NULL);
                if (r < 0 && errno == EINTR)
                    continue;
                HD_ASSERT(r > 0);
                got += r;
            }
            for (long i = 0; i < m; i++)
                res[b->evs[i].data] = result_of((ssize_t)b->evs[i].res);
            done = (size_t)m;
        }
    }
    for (size_t i = done; i < n; i++) /* io_submit takes a prefix; the rest one by one */
        res[i] = write_one(&b->cbs[i]);
}
