/* SPDX-License-Identifier: MIT */
/*
 * embedded.c: the embedded test node of embedded.h, shared by the unit tests and the fuzz
 * harnesses: starting and stopping it (optionally with the hub and the embedded broker),
 * driving its loop, socketpair clients and the fuzzers' input cutting.
 */
#define _GNU_SOURCE
#include "embedded.h"

#include "herald/log.h"
#include "herald/pubsub.h"
#include "net/conn_layer.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void hd_embedded_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

void hd_embedded_start(hd_embedded_t *e, const char *const *ov, size_t n_ov, hd_accept_cb accept_cb)
{
    char err[512];
    memset(e, 0, sizeof(*e));
    signal(SIGPIPE, SIG_IGN); /* as herald's main() does: a write to a gone peer is an error */
    HD_EMB_CHECK(uv_loop_init(&e->main_loop) == 0);
    if (hd_conf_load_string(&e->conf, "embedded", "", ov, n_ov, err, sizeof(err)) != 0)
        hd_embedded_fail(__FILE__, __LINE__, "configuration: %s", err);
    HD_EMB_CHECK(hd_server_new_embedded(&e->srv, e->conf, accept_cb, &e->main_loop) == 0);
    e->wk = hd_server_worker(e->srv, 0);
}

void hd_embedded_start_pubsub(hd_embedded_t *e)
{
    hd_broker_t *broker;
    HD_EMB_CHECK(!e->has_pubsub);
    hd_hub_init(e->wk);
    HD_EMB_CHECK(hd_broker_memory_new(&broker, e->srv, e->conf) == 0);
    hd_broker_set(broker);
    e->has_pubsub = 1;
}

static void on_barrier(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    *(int *)r->cookie = 1;
    hd_breq_free(r);
}

void hd_embedded_sync_broker(hd_embedded_t *e)
{
    int done = 0;
    hd_breq_t *r = hd_breq_new(HD_BREQ_BARRIER, e->wk, NULL, 0);
    r->reply_cb = on_barrier;
    r->cookie = &done;
    hd_broker_submit(r);
    uint64_t until = uv_hrtime() + 10000000000ull;
    for (int i = 0; !done; i++) {
        hd_embedded_pump(e, 1);
        if (done)
            break;
        if (uv_hrtime() > until)
            hd_embedded_fail(__FILE__, __LINE__, "the broker did not answer in 10 s");
        if (i % 16 == 15)
            sleep_us(50);
    }
}

void hd_embedded_stop(hd_embedded_t *e)
{
    if (hd_embedded_wait_idle(e, 5000) != 0)
        hd_embedded_fail(__FILE__, __LINE__, "%llu connection(s) left after 5 s",
                         (unsigned long long)hd_server_conn_count(e->srv));
    hd_embedded_check_clean(e);
    if (e->has_pubsub) {
        hd_embedded_sync_broker(e);
        hd_broker_t *b = hd_broker_get();
        b->ops->free(b);
        hd_broker_set(NULL);
        hd_hub_dispose(e->wk);
        e->has_pubsub = 0;
    }
    hd_server_free(e->srv);
    uv_run(&e->main_loop, UV_RUN_DEFAULT); /* the node is freed when its main-loop handles close */
    HD_EMB_CHECK(uv_loop_close(&e->main_loop) == 0);
    hd_conf_unref(e->conf);
    e->srv = NULL;
    e->wk = NULL;
    e->conf = NULL;
}

void hd_embedded_pump(hd_embedded_t *e, int n)
{
    for (int i = 0; i < n; i++) {
        uv_run(&e->wk->loop, UV_RUN_NOWAIT);
        if (e->on_pass)
            e->on_pass(e, e->on_pass_arg);
    }
}

int hd_embedded_wait_idle(hd_embedded_t *e, int timeout_ms)
{
    uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    for (int i = 0; hd_server_conn_count(e->srv) > 0; i++) {
        hd_embedded_pump(e, 1);
        if (hd_server_conn_count(e->srv) == 0)
            break;
        if (uv_hrtime() > until)
            return -1;
        if (i % 16 == 15)
            sleep_us(100); /* a timer (a held request, a linger) is due */
    }
    return 0;
}

void hd_embedded_check_clean(hd_embedded_t *e)
{
    hd_conn_census_t census;
    const char *why;
    if (hd_conn_census(e->wk, &census, &why) != 0)
        hd_embedded_fail(__FILE__, __LINE__, "connection layer: %s", why);
    if (hd_server_conn_count(e->srv) || HD_STAT_GET(e->wk, conns) || census.conns ||
        census.timers || census.flushing)
        hd_embedded_fail(__FILE__, __LINE__,
                         "left behind: %llu connection(s), %zu listed, %zu timer(s), %zu to flush",
                         (unsigned long long)hd_server_conn_count(e->srv), census.conns,
                         census.timers, census.flushing);
}

int hd_embedded_connect_type(hd_embedded_t *e, int type, hd_conn_t **conn)
{
    int sv[2];
    HD_EMB_CHECK(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
    HD_EMB_CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    hd_conn_t *c = hd_server_adopt(e->srv, sv[1]);
    HD_EMB_CHECK(c != NULL);
    if (conn)
        *conn = c;
    return sv[0];
}

int hd_embedded_connect(hd_embedded_t *e, hd_conn_t **conn)
{
    return hd_embedded_connect_type(e, SOCK_STREAM, conn);
}

void hd_embedded_buf_free(hd_embedded_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

ssize_t hd_embedded_read(int fd, hd_embedded_buf_t *into)
{
    static char sink[1 << 16];
    ssize_t total = 0;
    int keep = into && !into->is_dropping;
    for (;;) {
        char *p = sink;
        size_t room = sizeof(sink);
        if (keep) {
            if (into->cap - into->len < 4096) {
                into->cap = into->cap ? into->cap * 2 : 8192;
                into->data = hd_realloc(into->data, into->cap);
            }
            p = into->data + into->len;
            room = into->cap - into->len - 1;
        }
        ssize_t n = read(fd, p, room);
        if (n > 0) {
            total += n;
            if (keep) {
                into->len += (size_t)n;
                into->data[into->len] = '\0';
            }
            if (into && into->feed)
                into->feed(into->feed_arg, p, (size_t)n);
            continue;
        }
        if (n == 0 || errno == ECONNRESET) {
            if (into && !into->is_eof) {
                into->is_eof = 1;
                if (into->feed && n == 0) /* a reset lost data: nothing to check at its end */
                    into->feed(into->feed_arg, NULL, 0);
            }
            return total ? total : -1;
        }
        if (errno != EAGAIN)
            hd_embedded_fail(__FILE__, __LINE__, "read: %s", strerror(errno));
        return total;
    }
}

int hd_embedded_send_all(hd_embedded_t *e, int fd, const void *data, size_t len,
                         hd_embedded_buf_t *into)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            hd_embedded_pump(e, 1);
            hd_embedded_read(fd, into);
        } else {
            return -1; /* the server closed */
        }
    }
    return 0;
}

void hd_embedded_settle(hd_embedded_t *e, int fd, hd_embedded_buf_t *into, int max_passes)
{
    int quiet = 0;
    for (int i = 0; i < max_passes && quiet < 3; i++) {
        hd_embedded_pump(e, 1);
        quiet = hd_embedded_read(fd, into) > 0 ? 0 : quiet + 1;
    }
}

size_t hd_embedded_next_cut(uint8_t mode, uint32_t *rng, size_t left)
{
    size_t n;
    switch (mode & 3) {
    case 0:
        n = left;
        break;
    case 1:
        n = 1;
        break;
    case 2:
        n = 1 + (size_t)(mode >> 2);
        break;
    default:
        *rng = *rng * 1103515245u + 12345u;
        n = 1 + (*rng >> 16) % (1 + (size_t)(mode >> 2) * 4);
        break;
    }
    return n < left ? n : left;
}
