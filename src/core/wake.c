/* SPDX-License-Identifier: MIT */
/*
 * wake.c: a loop woken by other threads without spinning (wake.h): an eventfd, a uv_poll_t on
 * it and one flag. scripts/test.sh runs tests/unit/test_wake under ThreadSanitizer.
 */
#include "herald/wake.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void on_readable(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    hd_wake_t *wk = p->data;
    uint64_t n;
    while (read(wk->fd_, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    /* From here a waker writes again; everything pushed before the flag was set is seen. */
    __atomic_exchange_n(&wk->pending_, 0, __ATOMIC_ACQ_REL);
    wk->cb(wk->data);
}

int hd_wake_init(hd_wake_t *wk, uv_loop_t *loop, hd_wake_cb cb, void *data)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    int rc = uv_poll_init(loop, &wk->poll_, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    wk->poll_.data = wk;
    rc = uv_poll_start(&wk->poll_, UV_READABLE, on_readable);
    if (rc < 0) {
        uv_close((uv_handle_t *)&wk->poll_, NULL);
        close(fd);
        return rc;
    }
    wk->fd_ = fd;
    wk->pending_ = 0;
    wk->cb = cb;
    wk->data = data;
    wk->is_open_ = 1;
    return 0;
}

void hd_wake_send(hd_wake_t *wk)
{
    if (__atomic_exchange_n(&wk->pending_, 1, __ATOMIC_ACQ_REL))
        return; /* a wake-up is on its way, and its drain comes after our push */
    uint64_t one = 1;
    while (write(wk->fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

void hd_wake_hold(hd_wake_t *wk)
{
    __atomic_exchange_n(&wk->pending_, 1, __ATOMIC_ACQ_REL);
}

void hd_wake_release(hd_wake_t *wk)
{
    /* as on_readable: everything pushed before this exchange is seen by the caller's drain,
     * and a waker after it writes */
    __atomic_exchange_n(&wk->pending_, 0, __ATOMIC_ACQ_REL);
}

void hd_wake_close(hd_wake_t *wk)
{
    if (wk->is_open_ && !uv_is_closing((uv_handle_t *)&wk->poll_))
        uv_close((uv_handle_t *)&wk->poll_, NULL);
}

void hd_wake_dispose(hd_wake_t *wk)
{
    if (!wk->is_open_)
        return;
    close(wk->fd_);
    wk->is_open_ = 0;
}
