/* SPDX-License-Identifier: MIT */
/*
 * test_conn.c: unit tests of the connection layer (src/net/conn*.c) through an embedded node
 * (tests/support/embedded.h): connections are socketpairs whose server end is adopted, driven
 * by a test handler. The output queue: hd_conn_send of buffer slices and its refusals,
 * queued_bytes accounting while the peer does not read, on_drain, one writev per loop pass
 * (seen as one record on a SOCK_SEQPACKET pair), hd_conn_finish (queued output delivered, then
 * EOF, handler removed once) and hd_conn_close (queued output dropped). The timer heap: firing
 * order, re-arming earlier and later and from on_timeout, removal by timeout 0 and by close,
 * and hundreds of connections under random re-arms with the heap's invariants checked after
 * every step (hd_conn_census). The worker's mailbox against the output queue: mail that arrives
 * together (from another thread, or posted by the worker to itself, even from an I/O callback)
 * runs before anything is written, so its output leaves in one writev per connection. Streams
 * (connections carried inside another, as HTTP/2's): their own queue, the carrier told of each
 * send, finish and close, pieces taken by reference, timers, order in the worker's list.
 * Many connections' writes in one system call (conn.c flush_batch), with and without Linux AIO:
 * each socket's exact bytes in one write a pass, past one batch and past its buffers; a full
 * socket (nothing taken) waiting in libuv and kept out of later batches, its output in order;
 * a failed write closing its connection only; connections closed while a batch is made (never
 * written to the descriptor number a new file got) or by an earlier result's on_drain.
 */
#include "herald/conn.h"
#include "herald/log.h"
#include "herald/server.h"
#include "net/conn_internal.h"
#include "net/conn_layer.h"

#include "embedded.h"
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 600

/* What the test handler saw on one connection. */
typedef struct tconn_s {
    hd_conn_t *c; /* NULL once its handler was removed (on_close) */
    int fd;       /* the client's end */
    int n_close, n_drain, n_timeout;
    uint64_t fired_deadline; /* deadline.key when on_timeout ran */
    uint64_t fired_now;      /* uv_now then */
    int fired_seq;           /* order among all timeouts of the test (1-based) */
    int rearms;              /* on_timeout re-arms itself this many more times */
    int sends_on_data;       /* on_data queues this many pieces */
    int posts_on_data;       /* on_data posts this many mails to its own worker */
    size_t got;              /* bytes read by the handler */
    int n_flush;
    struct tconn_s *close_on_flush; /* on_flush closes this one's connection */
    int reuse[2];                   /* and then gives its descriptor number to this pair's [0] */
    int is_reusing;
    struct tconn_s *send_on_flush;  /* on_flush queues "++" on this one's connection */
    struct tconn_s *close_on_drain; /* on_drain closes this one's connection */
} tconn_t;

static hd_embedded_t node;
static tconn_t conns[MAX_CONNS];
static int n_conns;
static int n_fired;
/* The deadline of each timeout fired in the test, in firing order (the first FIRED_LOG). */
#define FIRED_LOG 64
static uint64_t fired_keys[FIRED_LOG];

/* A mail that queues two bytes on a connection when it runs on the worker. */
typedef struct send_mail_s {
    hd_msg_t base;
    hd_conn_t *c;
} send_mail_t;

static int mails_run;

static void on_send_mail(hd_worker_t *w, hd_msg_t *msg)
{
    send_mail_t *m = (send_mail_t *)msg;
    (void)w;
    T_EQ_INT(hd_conn_send_copy(m->c, "mm", 2), 0);
    mails_run++;
    free(m);
}

static void post_send(hd_conn_t *c)
{
    send_mail_t *m = hd_malloc(sizeof(*m));
    m->base.cb = on_send_mail;
    m->c = c;
    hd_worker_post(node.wk, &m->base);
}

static void t_on_data(hd_conn_t *c, const char *data, size_t len)
{
    tconn_t *t = c->data;
    (void)data;
    t->got += len;
    for (int i = 0; i < t->sends_on_data; i++)
        T_EQ_INT(hd_conn_send_copy(c, "0123456789", 10), 0);
    for (int i = 0; i < t->posts_on_data; i++)
        post_send(c);
}

static void t_on_drain(hd_conn_t *c)
{
    tconn_t *t = c->data;
    t->n_drain++;
    if (t->close_on_drain && t->close_on_drain->c)
        hd_conn_close(t->close_on_drain->c);
}

static void t_on_flush(hd_conn_t *c)
{
    tconn_t *t = c->data;
    t->n_flush++;
    if (t->send_on_flush && t->send_on_flush->c)
        T_EQ_INT(hd_conn_send_copy(t->send_on_flush->c, "++", 2), 0);
    if (t->close_on_flush && t->close_on_flush->c) {
        hd_conn_t *v = t->close_on_flush->c;
        uv_os_fd_t fd = -1;
        uv_fileno((const uv_handle_t *)&sock_of(v)->tcp, &fd);
        hd_conn_close(v);    /* its socket is closed now */
        if (t->is_reusing) { /* as another thread opening a file would */
            T_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, t->reuse), 0);
            if (t->reuse[0] != fd) { /* not already the lowest free number */
                T_EQ_INT(dup2(t->reuse[0], fd), fd);
                close(t->reuse[0]);
                t->reuse[0] = fd;
            }
        }
    }
}

static void t_on_timeout(hd_conn_t *c)
{
    tconn_t *t = c->data;
    T_EQ_INT(c->deadline.idx, 0); /* out of the heap while its handler runs */
    t->n_timeout++;
    t->fired_seq = ++n_fired;
    t->fired_deadline = c->deadline.key;
    if (n_fired <= FIRED_LOG)
        fired_keys[n_fired - 1] = c->deadline.key;
    t->fired_now = uv_now(&node.wk->loop);
    if (t->rearms > 0) {
        t->rearms--;
        hd_conn_set_timeout(c, 5);
    }
}

static void t_on_close(hd_conn_t *c)
{
    tconn_t *t = c->data;
    t->n_close++;
    t->c = NULL;
}

static const hd_conn_ops_t test_ops = {
    .name = "test",
    .on_data = t_on_data,
    .on_drain = t_on_drain,
    .on_flush = t_on_flush,
    .on_timeout = t_on_timeout,
    .on_close = t_on_close,
};

static void test_accept(hd_conn_t *c)
{
    T_TRUE(n_conns < MAX_CONNS);
    tconn_t *t = &conns[n_conns++];
    memset(t, 0, sizeof(*t));
    t->c = c;
    t->fd = -1;
    hd_conn_set_handler(c, &test_ops, t);
    hd_conn_read_start(c);
}

static tconn_t *open_conn_type(int type)
{
    hd_conn_t *c;
    int fd = hd_embedded_connect_type(&node, type, &c);
    tconn_t *t = &conns[n_conns - 1];
    T_TRUE(t->c == c);
    t->fd = fd;
    return t;
}

static tconn_t *open_conn(void)
{
    return open_conn_type(SOCK_STREAM);
}

static void check_census(void)
{
    hd_conn_census_t census;
    const char *why = NULL;
    if (hd_conn_census(node.wk, &census, &why) != 0)
        T_FAIL("connection layer: %s", why);
}

static size_t census_timers(void)
{
    hd_conn_census_t census;
    const char *why = NULL;
    T_EQ_INT(hd_conn_census(node.wk, &census, &why), 0);
    return census.timers;
}

/* Closes every client end, waits until every connection is freed, checks nothing is left. */
static void close_all(void)
{
    for (int i = 0; i < n_conns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        conns[i].fd = -1;
    }
    T_EQ_INT(hd_embedded_wait_idle(&node, 3000), 0);
    hd_embedded_check_clean(&node);
    for (int i = 0; i < n_conns; i++)
        T_EQ_INT(conns[i].n_close, 1); /* on_close exactly once, whatever ended it */
    n_conns = 0;
    n_fired = 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads from fd until it has `want` bytes (or fails after two seconds of loop passes). */
static void read_exactly(int fd, hd_embedded_buf_t *b, size_t want)
{
    for (int i = 0; i < 2000 && b->len < want && !b->is_eof; i++) {
        hd_embedded_pump(&node, 1);
        if (hd_embedded_read(fd, b) == 0)
            sleep_ms(1);
    }
    T_EQ_INT(b->len, want);
}

/* ---- the output queue ---- */

static void test_send_slices(void)
{
    tconn_t *t = open_conn();
    hd_conn_t *c = t->c;
    hd_buf_t *b = hd_buf_new_copy("abcdefghijklmnopqrstuvwxyz", 26);
    T_EQ_INT(hd_conn_queued_bytes(c), 0);
    T_EQ_INT(hd_conn_send(c, b, 0, 3), 0);  /* "abc" */
    T_EQ_INT(hd_conn_send(c, b, 23, 3), 0); /* "xyz" */
    T_EQ_INT(hd_conn_send(c, b, 10, 0), 0); /* nothing: no reference, no bytes */
    T_EQ_INT(hd_conn_send(c, b, 25, 1), 0); /* "z", the last byte */
    T_EQ_INT(hd_conn_send_copy(c, "-", 1), 0);
    T_EQ_INT(hd_conn_send(c, b, 0, 26), 0); /* the whole buffer */
    T_EQ_INT(hd_conn_queued_bytes(c), 3 + 3 + 1 + 1 + 26);
    T_EQ_INT(b->refs, 1 + 4); /* one reference per queued slice, none for the empty one */

    hd_embedded_buf_t got = {0};
    read_exactly(t->fd, &got, 34);
    T_EQ_STR(got.data, "abcxyzz-abcdefghijklmnopqrstuvwxyz");
    T_EQ_INT(hd_conn_queued_bytes(c), 0);
    T_EQ_INT(b->refs, 1); /* every written slice released its reference */
    T_EQ_INT(t->n_drain, 1);
    hd_buf_unref(b);
    hd_embedded_buf_free(&got);
    close_all();
}

static void test_one_writev_per_pass(void)
{
    /* On a SOCK_SEQPACKET pair each write is one record: count records, count writes. */
    tconn_t *t = open_conn_type(SOCK_SEQPACKET);
    hd_conn_t *c = t->c;
    char rec[4096];

    /* Ten pieces queued outside any callback leave in one write at the next pass. */
    hd_buf_t *b = hd_buf_new_copy("0123456789", 10);
    for (int i = 0; i < 10; i++)
        T_EQ_INT(hd_conn_send(c, b, (size_t)i, 1), 0);
    hd_embedded_pump(&node, 1);
    ssize_t n = recv(t->fd, rec, sizeof(rec), 0);
    T_EQ_INT(n, 10);
    T_TRUE(memcmp(rec, "0123456789", 10) == 0);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), -1);
    T_EQ_INT(errno, EAGAIN);

    /* Two passes, two writes. */
    T_EQ_INT(hd_conn_send_copy(c, "ab", 2), 0);
    T_EQ_INT(hd_conn_send_copy(c, "cd", 2), 0);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(hd_conn_send_copy(c, "ef", 2), 0);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 4);
    T_TRUE(memcmp(rec, "abcd", 4) == 0);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 2);
    T_TRUE(memcmp(rec, "ef", 2) == 0);

    /* Pieces queued by an I/O callback (on_data) leave together after it, in one write. */
    t->sends_on_data = 25;
    T_EQ_INT(send(t->fd, "go", 2, 0), 2);
    for (int i = 0; i < 200 && t->got == 0; i++) {
        hd_embedded_pump(&node, 1);
        if (t->got == 0)
            sleep_ms(1);
    }
    T_EQ_INT(t->got, 2);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 250);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), -1);
    T_EQ_INT(hd_conn_queued_bytes(c), 0);
    hd_buf_unref(b);
    close_all();
}

static void *post_five(void *arg)
{
    for (int i = 0; i < 5; i++)
        post_send(arg);
    return NULL;
}

static void test_mail_batched_before_writing(void)
{
    tconn_t *t = open_conn_type(SOCK_SEQPACKET);
    char rec[4096];
    mails_run = 0;

    /* Five mails from another thread, one wake-up's worth: one write of all their output. */
    pthread_t th;
    T_EQ_INT(pthread_create(&th, NULL, post_five, t->c), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 200 && mails_run < 5; i++) {
        hd_embedded_pump(&node, 1);
        if (mails_run < 5)
            sleep_ms(1);
    }
    T_EQ_INT(mails_run, 5);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 10);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), -1);

    /* Posted by the worker to itself: no wake-up, run in the next pass, one write. */
    for (int i = 0; i < 5; i++)
        post_send(t->c);
    T_EQ_INT(mails_run, 5); /* never inside the post */
    hd_embedded_pump(&node, 1);
    T_EQ_INT(mails_run, 10);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 10);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), -1);

    /* Posted to itself from an I/O callback (a publish's own deliveries and reply): run in the
     * same pass, before the flush, so on_data's output and the mails' leave in one write. */
    t->sends_on_data = 1;
    t->posts_on_data = 3;
    T_EQ_INT(send(t->fd, "go", 2, 0), 2);
    for (int i = 0; i < 200 && t->got == 0; i++) {
        hd_embedded_pump(&node, 1);
        if (t->got == 0)
            sleep_ms(1);
    }
    T_EQ_INT(mails_run, 13);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), 16);
    T_TRUE(memcmp(rec, "0123456789mmmmmm", 16) == 0);
    T_EQ_INT(recv(t->fd, rec, sizeof(rec), 0), -1);
    close_all();
}

static void test_queued_bytes_backpressure(void)
{
    tconn_t *t = open_conn();
    hd_conn_t *c = t->c;
    enum { CHUNK = 64 * 1024 };
    hd_buf_t *b = hd_buf_new(CHUNK);
    memset(b->data, 'x', CHUNK);
    b->len = CHUNK;

    /* The client reads nothing: queue until the socket is full and output stays queued. */
    size_t sent = 0;
    for (int i = 0; i < 256 && hd_conn_queued_bytes(c) == 0; i++) {
        T_EQ_INT(hd_conn_send(c, b, 0, CHUNK), 0);
        sent += CHUNK;
        hd_embedded_pump(&node, 1);
    }
    size_t stuck = hd_conn_queued_bytes(c);
    T_TRUE(stuck > 0 && stuck <= CHUNK);
    int drains = t->n_drain; /* one per pass that wrote everything, before the socket filled */
    T_EQ_INT(drains, (int)(sent / CHUNK) - 1);
    /* More output while a write is in flight is counted at once (queue + write in flight). */
    T_EQ_INT(hd_conn_send(c, b, 0, 1000), 0);
    T_EQ_INT(hd_conn_send_copy(c, "tail", 4), 0);
    T_EQ_INT(hd_conn_queued_bytes(c), stuck + 1004);
    sent += 1004;
    hd_embedded_pump(&node, 3);
    T_EQ_INT(hd_conn_queued_bytes(c), stuck + 1004); /* the peer still reads nothing */
    T_EQ_INT(t->n_drain, drains);

    /* The client reads: everything arrives, in order, and on_drain runs once at the end. */
    hd_embedded_buf_t got = {0};
    read_exactly(t->fd, &got, sent);
    T_TRUE(memcmp(got.data + sent - 4, "tail", 4) == 0);
    T_EQ_INT(got.data[sent - 5], 'x');
    T_EQ_INT(hd_conn_queued_bytes(c), 0);
    hd_embedded_pump(&node, 2);
    T_EQ_INT(t->n_drain, drains + 1);
    T_EQ_INT(b->refs, 1);
    /* The write request that waited went back to the worker's pool. */
    hd_conn_census_t census;
    const char *why;
    T_EQ_INT(hd_conn_census(node.wk, &census, &why), 0);
    T_TRUE(census.pooled_wreqs >= 1);
    hd_buf_unref(b);
    hd_embedded_buf_free(&got);
    close_all();
}

static void test_finish(void)
{
    tconn_t *t = open_conn();
    hd_conn_t *c = t->c;
    hd_buf_t *b = hd_buf_new_copy("last words", 10);
    T_EQ_INT(hd_conn_send(c, b, 0, 10), 0);
    hd_conn_finish(c);
    T_EQ_INT(t->n_close, 1); /* the handler is removed at once */
    T_TRUE(c->ops != &test_ops);
    hd_conn_finish(c); /* again: nothing */
    T_EQ_INT(t->n_close, 1);
    /* Nothing more is accepted; no reference is taken. */
    T_EQ_INT(hd_conn_send(c, b, 0, 10), UV_ECANCELED);
    T_EQ_INT(hd_conn_send_copy(c, "x", 1), UV_ECANCELED);
    T_EQ_INT(b->refs, 2);

    /* What was queued arrives, then the end of the stream. */
    hd_embedded_buf_t got = {0};
    for (int i = 0; i < 2000 && !got.is_eof; i++) {
        hd_embedded_pump(&node, 1);
        if (hd_embedded_read(t->fd, &got) == 0)
            sleep_ms(1);
    }
    T_TRUE(got.is_eof);
    T_EQ_STR(got.data, "last words");
    T_EQ_INT(b->refs, 1);
    /* The connection lingers (reading what the peer still sends) until the peer closes. */
    T_EQ_INT(hd_server_conn_count(node.srv), 1);
    T_EQ_INT(send(t->fd, "ignored", 7, MSG_NOSIGNAL), 7);
    hd_embedded_pump(&node, 3);
    T_EQ_INT(hd_server_conn_count(node.srv), 1);
    T_EQ_INT(t->got, 0); /* not seen by the removed handler */
    hd_buf_unref(b);
    hd_embedded_buf_free(&got);
    close_all();
}

static void test_close(void)
{
    tconn_t *t = open_conn();
    hd_conn_t *c = t->c;
    hd_buf_t *b = hd_buf_new_copy("never sent", 10);
    T_EQ_INT(hd_conn_send(c, b, 0, 10), 0);
    hd_conn_set_timeout(c, 1000);
    T_EQ_INT(census_timers(), 1);
    hd_conn_close(c);
    T_EQ_INT(t->n_close, 1);
    T_EQ_INT(census_timers(), 0); /* out of the heap at once */
    hd_conn_close(c);             /* again: nothing */
    T_EQ_INT(t->n_close, 1);
    T_EQ_INT(hd_conn_send(c, b, 0, 10), UV_ECANCELED);
    T_EQ_INT(hd_conn_send_copy(c, "x", 1), UV_ECANCELED);
    check_census();

    /* The queued output is dropped: the peer sees the end with no data. */
    hd_embedded_buf_t got = {0};
    for (int i = 0; i < 2000 && !got.is_eof; i++) {
        hd_embedded_pump(&node, 1);
        if (hd_embedded_read(t->fd, &got) == 0)
            sleep_ms(1);
    }
    T_TRUE(got.is_eof);
    T_EQ_INT(got.len, 0);
    T_EQ_INT(hd_server_conn_count(node.srv), 0); /* freed in the close callback */
    T_EQ_INT(b->refs, 1);
    T_EQ_INT(t->n_timeout, 0);
    hd_buf_unref(b);
    hd_embedded_buf_free(&got);
    close_all();
}

/* ---- many connections in one pass: their writes in batches (conn.c flush_batch) ---- */

#define BATCH_CONNS 150 /* more than two batches (HD_WBATCH_MAX) */

/* Whether the worker writes in batches (Linux AIO); main runs these tests both ways. */
static int batched(void)
{
    return node.wk->conns_->wbatch != NULL;
}

/* Reads fd (non-blocking) until it has `want` bytes, running the loop meanwhile. */
static void read_all(int fd, hd_embedded_buf_t *b, size_t want)
{
    for (int i = 0; i < 4000 && b->len < want; i++) {
        if (hd_embedded_read(fd, b) <= 0) {
            hd_embedded_pump(&node, 1);
            sleep_ms(1);
        }
    }
    T_EQ_INT(b->len, want);
}

/* Reads until the end of the stream (or two seconds); the bytes read before it are in b. */
static void read_to_eof(int fd, hd_embedded_buf_t *b)
{
    for (int i = 0; i < 2000 && !b->is_eof; i++) {
        hd_embedded_pump(&node, 1);
        if (hd_embedded_read(fd, b) == 0)
            sleep_ms(1);
    }
    T_TRUE(b->is_eof);
}

/*
 * 150 connections with output in the same pass, twice: each gets exactly its bytes, in one
 * write a pass (one record on a SEQPACKET pair), and on_drain once a pass; beside them a
 * connection with more buffers than a batch holds (1,100 slices) gets all of them, in order.
 */
static void test_batch_many(void)
{
    tconn_t *ts[BATCH_CONNS];
    for (int i = 0; i < BATCH_CONNS; i++)
        ts[i] = open_conn_type(SOCK_SEQPACKET);
    tconn_t *wide = open_conn();
    hd_buf_t *b = hd_buf_new_copy("0123456789", 10);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < BATCH_CONNS; i++) {
            char text[32];
            int n = snprintf(text, sizeof(text), "conn %d pass %d;", i, pass);
            T_EQ_INT(hd_conn_send_copy(ts[i]->c, text, (size_t)n), 0);
            T_EQ_INT(hd_conn_send(ts[i]->c, b, (size_t)(i % 10), 1), 0);
        }
        for (int j = 0; j < 1100; j++)
            T_EQ_INT(hd_conn_send(wide->c, b, (size_t)(j % 10), 1), 0);
        hd_embedded_pump(&node, 1);
        for (int i = 0; i < BATCH_CONNS; i++)
            T_EQ_INT(hd_conn_queued_bytes(ts[i]->c), 0); /* written in the pass */
    }
    for (int i = 0; i < BATCH_CONNS; i++) {
        for (int pass = 0; pass < 2; pass++) {
            char want[32], rec[64];
            int n = snprintf(want, sizeof(want), "conn %d pass %d;%d", i, pass, i % 10);
            T_EQ_INT(recv(ts[i]->fd, rec, sizeof(rec), 0), n);
            T_TRUE(memcmp(rec, want, (size_t)n) == 0);
        }
        T_EQ_INT(recv(ts[i]->fd, (char[8]){0}, 8, 0), -1); /* no third record */
        T_EQ_INT(ts[i]->n_drain, 2);
    }
    hd_embedded_buf_t got = {0};
    read_all(wide->fd, &got, 2200);
    for (size_t j = 0; j < 2200; j++)
        T_EQ_INT(got.data[j], (char)('0' + (j % 1100) % 10));
    T_EQ_INT(b->refs, 1); /* every written slice released its reference */
    hd_buf_unref(b);
    hd_embedded_buf_free(&got);
    close_all();
}

/*
 * A full socket in a batch: a SEQPACKET record goes whole or not at all, so once the peer's
 * buffer is full the write of the pass takes nothing (UV_EAGAIN) while the other connection of
 * the batch is written. The refused record waits in libuv until the peer reads; meanwhile the
 * connection stays out of the batches (one writer per socket) and its later output queues
 * behind the record; everything arrives, in order.
 */
static void test_batch_full_socket(void)
{
    enum { REC = 16384 };
    tconn_t *x = open_conn_type(SOCK_SEQPACKET), *y = open_conn_type(SOCK_SEQPACKET);
    static char rec[REC];
    int n_rec = 0, n_y = 0;
    for (int i = 0; i < 1000 && hd_conn_queued_bytes(x->c) == 0; i++) {
        memset(rec, 'a' + n_rec % 26, sizeof(rec));
        T_EQ_INT(hd_conn_send_copy(x->c, rec, REC), 0);
        T_EQ_INT(hd_conn_send_copy(y->c, "y", 1), 0);
        n_rec++;
        n_y++;
        hd_embedded_pump(&node, 1);
        T_EQ_INT(hd_conn_queued_bytes(y->c), 0);
    }
    T_EQ_INT(hd_conn_queued_bytes(x->c), REC); /* the last record, refused whole */
    T_TRUE(x->c->is_writing);                  /* waiting in libuv for the peer to read */
    T_TRUE(n_rec > 2);
    for (int k = 0; k < 3; k++) {
        memset(rec, 'a' + n_rec % 26, sizeof(rec));
        T_EQ_INT(hd_conn_send_copy(x->c, rec, REC), 0);
        T_EQ_INT(hd_conn_send_copy(y->c, "y", 1), 0);
        n_rec++;
        n_y++;
        hd_embedded_pump(&node, 1);
        T_EQ_INT(hd_conn_queued_bytes(y->c), 0);
    }
    T_EQ_INT(hd_conn_queued_bytes(x->c), 4 * REC);
    T_EQ_INT(x->n_drain, n_rec - 4); /* none since the refusal */
    char ys[1100];
    T_EQ_INT(recv(y->fd, ys, sizeof(ys), 0), 1); /* one record a pass */
    /* whole records: a read shorter than its record would cut it */
    static char got[1 << 20];
    size_t len = 0, want = (size_t)n_rec * REC;
    for (int i = 0; i < 4000 && len < want; i++) {
        ssize_t n = recv(x->fd, got + len, sizeof(got) - len, 0);
        if (n > 0) {
            T_EQ_INT(n % REC, 0);
            len += (size_t)n;
            continue;
        }
        hd_embedded_pump(&node, 1);
        sleep_ms(1);
    }
    T_EQ_INT(len, want);
    for (int r = 0; r < n_rec; r++)
        for (size_t j = 0; j < REC; j += 4096)
            T_EQ_INT(got[(size_t)r * REC + j], (char)('a' + r % 26));
    T_EQ_INT(hd_conn_queued_bytes(x->c), 0);
    hd_embedded_pump(&node, 2);
    T_EQ_INT(x->n_drain, n_rec - 3);
    int ny = 1;
    while (recv(y->fd, ys, sizeof(ys), 0) == 1)
        ny++;
    T_EQ_INT(ny, n_y);
    close_all();
}

/*
 * A write that fails (the peer is gone: EPIPE) closes its connection, as a failed writev does:
 * on_close once, nothing queued is kept; the other connections of the batch are written. The
 * peer closes just before the pass, so the flush (before the loop polls) meets it first.
 */
static void test_batch_write_error(void)
{
    tconn_t *a = open_conn(), *dead = open_conn(), *z = open_conn();
    close(dead->fd);
    dead->fd = -1;
    T_EQ_INT(hd_conn_send_copy(a->c, "aa", 2), 0);
    T_EQ_INT(hd_conn_send_copy(dead->c, "dd", 2), 0);
    T_EQ_INT(hd_conn_send_copy(z->c, "zz", 2), 0);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(dead->n_close, 1);
    T_TRUE(dead->c == NULL);
    T_EQ_INT(dead->n_drain, 0);
    hd_embedded_buf_t ga = {0}, gz = {0};
    read_all(a->fd, &ga, 2);
    read_all(z->fd, &gz, 2);
    T_EQ_STR(ga.data, "aa");
    T_EQ_STR(gz.data, "zz");
    T_EQ_INT(a->n_drain + z->n_drain, 2);
    hd_embedded_buf_free(&ga);
    hd_embedded_buf_free(&gz);
    close_all();
}

/*
 * Connections closed while a batch is made or its results are read. One closed by another's
 * on_flush after its output was taken for the batch is left out of it (its socket is closed at
 * once, and its number may already be another file's): with batches it writes nothing, as a
 * close drops queued output; one by one, it was written before the on_flush ran. One closed by
 * the on_drain of an earlier connection of the batch was written with the batch (one by one:
 * not written) and is left alone after. Either way each ends once and the others are written.
 */
static void test_batch_closed_meanwhile(void)
{
    tconn_t *victim = open_conn(), *more = open_conn(), *closer = open_conn(), *other = open_conn();
    T_EQ_INT(hd_conn_send_copy(victim->c, "vv", 2), 0);
    T_EQ_INT(hd_conn_send_copy(more->c, "mm", 2), 0);
    closer->close_on_flush = victim;
    closer->is_reusing = 1;
    closer->send_on_flush = more; /* taken already: "++" waits for the next write */
    hd_conn_want_flush(closer->c);
    T_EQ_INT(hd_conn_send_copy(other->c, "oo", 2), 0);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(closer->n_flush, 1);
    T_EQ_INT(victim->n_close, 1);
    hd_embedded_buf_t gv = {0}, go = {0}, gm = {0};
    read_to_eof(victim->fd, &gv);
    T_EQ_INT(gv.len, batched() ? 0 : 2);
    T_TRUE(gv.len == 0 || memcmp(gv.data, "vv", 2) == 0);
    char none[8];
    T_EQ_INT(recv(closer->reuse[1], none, sizeof(none), 0), -1); /* nothing to the new file */
    T_EQ_INT(errno, EAGAIN);
    close(closer->reuse[0]);
    close(closer->reuse[1]);
    read_all(other->fd, &go, 2);
    T_EQ_STR(go.data, "oo");
    T_EQ_INT(other->n_drain, 1);
    read_all(more->fd, &gm, 4);
    T_EQ_STR(gm.data, "mm++");
    hd_embedded_buf_free(&gv);
    hd_embedded_buf_free(&go);
    hd_embedded_buf_free(&gm);

    tconn_t *first = open_conn(), *second = open_conn(), *third = open_conn();
    first->close_on_drain = second;
    T_EQ_INT(hd_conn_send_copy(first->c, "11", 2), 0);
    T_EQ_INT(hd_conn_send_copy(second->c, "22", 2), 0);
    T_EQ_INT(hd_conn_send_copy(third->c, "33", 2), 0);
    hd_embedded_pump(&node, 1);
    T_EQ_INT(first->n_drain, 1);
    T_EQ_INT(second->n_close, 1);
    T_EQ_INT(second->n_drain, 0);
    T_EQ_INT(third->n_drain, 1);
    hd_embedded_buf_t g1 = {0}, g2 = {0}, g3 = {0};
    read_all(first->fd, &g1, 2);
    read_to_eof(second->fd, &g2);
    read_all(third->fd, &g3, 2);
    T_EQ_STR(g1.data, "11");
    T_EQ_INT(g2.len, batched() ? 2 : 0);
    T_TRUE(g2.len == 0 || memcmp(g2.data, "22", 2) == 0);
    T_EQ_STR(g3.data, "33");
    hd_embedded_buf_free(&g1);
    hd_embedded_buf_free(&g2);
    hd_embedded_buf_free(&g3);
    close_all();
}

/* The batch tests again as where the kernel has no AIO for herald: one writev each. */
static void without_batches(void)
{
    hd_conn_worker_t *cw = node.wk->conns_;
    hd_wbatch_free(cw->wbatch);
    cw->wbatch = NULL;
}

/* ---- identities ---- */

typedef struct find_s {
    const char *sub;
    int seen, found;
} find_t;

static void find_sub(hd_conn_t *c, void *arg)
{
    find_t *f = arg;
    const char *sub = hd_identity_sub(c->identity);
    f->seen++;
    if (sub && strcmp(sub, f->sub) == 0) {
        f->found++;
        hd_conn_close(c); /* fn may close the connection it is given */
    }
}

/* A connection holds its identity's reference until it is freed; hd_conn_foreach finds the
 * connections of one sub (what revocation will do) and skips those already closing. */
static void test_identity(void)
{
    static const char *const subs[] = {"ann", "bob", "ann", NULL};
    hd_identity_t *ids[4] = {0};
    tconn_t *t[4];
    char why[128];
    for (int i = 0; i < 4; i++) {
        t[i] = open_conn();
        if (subs[i]) {
            hd_identity_fields_t f = {.sub = subs[i], .exp = 1767225600};
            T_EQ_INT(hd_identity_new(&ids[i], &f, why, sizeof(why)), 0);
            hd_conn_set_identity(t[i]->c, ids[i]);
            hd_identity_unref(ids[i]); /* the connection's reference keeps it */
        }
    }
    T_EQ_STR(hd_identity_sub(t[1]->c->identity), "bob");
    T_EQ_INT(hd_identity_exp(t[0]->c->identity), 1767225600);
    T_TRUE(t[3]->c->identity == NULL);
    /* Replacing and clearing drop the previous reference (ASan counts the rest). */
    hd_conn_set_identity(t[1]->c, t[0]->c->identity);
    T_EQ_STR(hd_identity_sub(t[1]->c->identity), "ann");
    hd_conn_set_identity(t[1]->c, NULL);
    T_TRUE(t[1]->c->identity == NULL);

    find_t f = {.sub = "ann"};
    hd_conn_foreach(node.wk, find_sub, &f);
    T_EQ_INT(f.seen, 4);
    T_EQ_INT(f.found, 2);
    T_EQ_INT(t[0]->n_close + t[2]->n_close, 2);
    T_EQ_INT(t[1]->n_close + t[3]->n_close, 0);
    find_t again = {.sub = "ann"};
    hd_conn_foreach(node.wk, find_sub, &again);
    T_EQ_INT(again.seen, 2); /* the closed ones are no longer walked */
    T_EQ_INT(again.found, 0);
    close_all();
}

/* ---- the timer heap ---- */

/* Runs the loop until n timeouts fired in total (fails after timeout_ms). */
static void wait_fired(int n, int timeout_ms)
{
    uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    while (n_fired < n && uv_hrtime() < until) {
        hd_embedded_pump(&node, 1);
        sleep_ms(1);
    }
    T_EQ_INT(n_fired, n);
}

/* Every fired timeout ran at or after its deadline, in deadline order. */
static void check_fired_in_order(void)
{
    for (int i = 0; i < n_conns; i++) {
        tconn_t *a = &conns[i];
        if (!a->n_timeout)
            continue;
        T_TRUE(a->fired_now >= a->fired_deadline);
        for (int j = 0; j < n_conns; j++) {
            tconn_t *z = &conns[j];
            if (z->n_timeout && a->fired_seq < z->fired_seq)
                T_TRUE(a->fired_deadline <= z->fired_deadline);
        }
    }
}

static void test_timer_order(void)
{
    /* 40 connections armed in a scrambled order fire in deadline order. */
    enum { N = 40 };
    for (int i = 0; i < N; i++)
        open_conn();
    for (int i = 0; i < N; i++) {
        int k = (i * 17) % N; /* 17 is prime to 40: a permutation */
        hd_conn_set_timeout(conns[k].c, 2 + (uint64_t)k * 2);
        check_census();
    }
    T_EQ_INT(census_timers(), N);
    wait_fired(N, 2000);
    check_fired_in_order();
    for (int i = 0; i < N; i++) {
        T_EQ_INT(conns[i].n_timeout, 1);
        T_EQ_INT(conns[i].c->deadline.idx, 0);
    }
    T_EQ_INT(census_timers(), 0);
    close_all();
}

static void test_timer_rearm(void)
{
    tconn_t *a = open_conn(), *b = open_conn(), *p = open_conn(), *d = open_conn();
    hd_conn_set_timeout(a->c, 10);
    hd_conn_set_timeout(b->c, 300);
    hd_conn_set_timeout(a->c, 120); /* later: no longer the first */
    hd_conn_set_timeout(b->c, 20);  /* earlier: now the first */
    p->rearms = 2;                  /* fires, re-arms itself twice from on_timeout */
    hd_conn_set_timeout(p->c, 40);
    hd_conn_set_timeout(d->c, 30);
    hd_conn_set_timeout(d->c, 0); /* removed: never fires */
    hd_conn_set_timeout(d->c, 0); /* removing twice is harmless */
    check_census();
    T_EQ_INT(census_timers(), 3);

    /*
     * b (20) fires first and a (120) once; p (40) three times, re-arming 5 ms after each firing.
     * On an idle machine that is b, p, p, p, a; a test process paused past a's deadline sees a
     * before p's re-arms instead (they count from when p fired), which is right too. What always
     * holds: deadlines fire in order, each at or after itself; a re-armed deadline lies after
     * the pass that set it, so the deadlines of all firings never decrease.
     */
    wait_fired(5, 10000);
    T_EQ_INT(b->n_timeout, 1);
    T_EQ_INT(b->fired_seq, 1);
    T_EQ_INT(p->n_timeout, 3);
    T_EQ_INT(a->n_timeout, 1);
    T_TRUE(a->fired_now >= a->fired_deadline);
    T_TRUE(p->fired_now >= p->fired_deadline);
    for (int i = 1; i < 5; i++)
        if (fired_keys[i] < fired_keys[i - 1])
            T_FAIL("firing %d: deadline %llu before the previous one's, %llu", i + 1,
                   (unsigned long long)fired_keys[i], (unsigned long long)fired_keys[i - 1]);
    /* Armed in one pass (uv_now unchanged): a re-armed to 120, b to 20. */
    T_EQ_INT(a->fired_deadline - b->fired_deadline, 100);
    /* a is last exactly when p's last re-arm is due before it (a tie may go either way). */
    if (p->fired_deadline != a->fired_deadline)
        T_EQ_INT(a->fired_seq == 5, p->fired_deadline < a->fired_deadline);
    T_EQ_INT(d->n_timeout, 0);
    sleep_ms(20);
    hd_embedded_pump(&node, 2);
    T_EQ_INT(n_fired, 5);
    T_EQ_INT(census_timers(), 0);
    close_all();
}

/* A connection whose handler has no on_timeout is closed when its deadline passes. */
static void test_timer_default_close(void)
{
    static const hd_conn_ops_t no_timeout_ops = {
        .name = "plain", .on_data = t_on_data, .on_close = t_on_close};
    tconn_t *t = open_conn();
    hd_conn_set_handler(t->c, &no_timeout_ops, t);
    hd_conn_set_timeout(t->c, 5);
    for (int i = 0; i < 2000 && hd_server_conn_count(node.srv) > 0; i++) {
        hd_embedded_pump(&node, 1);
        sleep_ms(1);
    }
    T_EQ_INT(hd_server_conn_count(node.srv), 0);
    T_EQ_INT(t->n_close, 1);
    close_all();
}

static uint32_t rng_state = 12345;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

static void test_timer_many(void)
{
    /* Hundreds of connections: random deadlines, re-arms, removals and closes; the heap's
     * order and back-indexes are checked after every step. */
    enum { N = 500 };
    for (int i = 0; i < N; i++)
        open_conn();
    int armed[N];
    memset(armed, 0, sizeof(armed));
    for (int step = 0; step < 3000; step++) {
        int k = (int)rnd(N);
        if (!conns[k].c)
            continue;
        uint32_t op = rnd(10);
        if (op < 6) {
            hd_conn_set_timeout(conns[k].c, 20 + rnd(80));
            armed[k] = 1;
        } else if (op < 9) {
            hd_conn_set_timeout(conns[k].c, 0);
            armed[k] = 0;
        } else {
            hd_conn_close(conns[k].c);
            armed[k] = 0;
        }
        check_census();
    }
    int expect = 0;
    for (int i = 0; i < N; i++)
        expect += armed[i];
    T_EQ_INT(census_timers(), expect);
    wait_fired(expect, 3000);
    check_fired_in_order();
    for (int i = 0; i < N; i++)
        T_EQ_INT(conns[i].n_timeout, armed[i]);
    T_EQ_INT(census_timers(), 0);
    check_census();
    close_all();
}

/* ---- streams: connections carried inside another (HTTP/2 streams) ---- */

typedef struct tcarrier_s {
    hd_carrier_t carrier; /* first */
    int n_output, n_finish, n_close, n_read_start;
} tcarrier_t;

static void tc_on_output(hd_conn_t *s)
{
    ((tcarrier_t *)s->carrier)->n_output++;
}

static void tc_on_finish(hd_conn_t *s)
{
    ((tcarrier_t *)s->carrier)->n_finish++;
}

static void tc_on_close(hd_conn_t *s)
{
    ((tcarrier_t *)s->carrier)->n_close++;
}

static void tc_on_read_start(hd_conn_t *s)
{
    ((tcarrier_t *)s->carrier)->n_read_start++;
}

static const hd_carrier_ops_t tc_ops = {tc_on_output, tc_on_finish, tc_on_close, tc_on_read_start};

/* A stream of parent; *tcp: its carrier's state, allocated with it (zeroed, ops set). */
static tconn_t *open_stream(hd_conn_t *parent, tcarrier_t **tcp)
{
    hd_conn_t *s = hd_conn_stream_new(parent, &tc_ops, sizeof(tcarrier_t));
    tcarrier_t *tc = *tcp = (tcarrier_t *)s->carrier;
    T_TRUE(s->is_stream);
    T_TRUE(tc->carrier.ops == &tc_ops && tc->n_output == 0 && tc->n_close == 0);
    T_TRUE(n_conns < MAX_CONNS);
    tconn_t *t = &conns[n_conns++];
    memset(t, 0, sizeof(*t));
    t->c = s;
    t->fd = -1;
    hd_conn_set_handler(s, &test_ops, t);
    hd_conn_read_start(s); /* a stream notes it and tells its carrier */
    T_EQ_INT(tc->n_read_start, 1);
    hd_conn_read_start(s); /* already reading: nothing */
    T_EQ_INT(tc->n_read_start, 1);
    return t;
}

static void note_order(hd_conn_t *c, void *arg)
{
    hd_conn_t **seen = arg;
    for (int i = 0; i < 3; i++) {
        if (!seen[i]) {
            seen[i] = c;
            return;
        }
    }
}

static void test_streams(void)
{
    tconn_t *p = open_conn();
    hd_conn_t *pc = p->c;
    tcarrier_t *tc1, *tc2;
    tconn_t *s1 = open_stream(pc, &tc1);
    tconn_t *s2 = open_stream(pc, &tc2);
    hd_conn_t *c1 = s1->c, *c2 = s2->c;
    T_TRUE(c1->client.family == pc->client.family);
    /* A walk meets a parent's streams before it (closing the parent cannot cut the walk). */
    hd_conn_t *seen[3] = {NULL, NULL, NULL};
    hd_conn_foreach(node.wk, note_order, seen);
    T_TRUE(seen[0] == c1 && seen[1] == c2 && seen[2] == pc);

    /* Output waits in the stream's own queue; the carrier hears of each send. */
    T_EQ_INT(hd_conn_send_copy(c1, "abc", 3), 0);
    T_EQ_INT(hd_conn_send_copy(c1, "def", 3), 0);
    T_EQ_INT(tc1->n_output, 2);
    T_EQ_INT(hd_conn_queued_bytes(c1), 6);
    T_EQ_INT(hd_conn_queued_bytes(pc), 0);
    hd_embedded_pump(&node, 2);
    hd_embedded_buf_t got = {0};
    T_EQ_INT(hd_embedded_read(p->fd, &got), 0); /* nothing reached the socket */

    /* The carrier takes it in pieces, across slice boundaries. */
    char taken[8];
    hd_conn_stream_copy(c1, taken, 4);
    T_TRUE(memcmp(taken, "abcd", 4) == 0);
    T_EQ_INT(hd_conn_queued_bytes(c1), 2);
    hd_conn_stream_drained(c1); /* not empty: no on_drain */
    T_EQ_INT(s1->n_drain, 0);
    hd_conn_stream_copy(c1, taken + 4, 2);
    T_TRUE(memcmp(taken, "abcdef", 6) == 0);
    T_EQ_INT(hd_conn_queued_bytes(c1), 0);
    hd_conn_stream_drained(c1);
    T_EQ_INT(s1->n_drain, 1);
    T_EQ_INT(hd_conn_send_copy(pc, taken, 6), 0);
    read_exactly(p->fd, &got, 6);
    T_TRUE(memcmp(got.data, "abcdef", 6) == 0);
    hd_embedded_buf_free(&got);

    /* Reading stops and starts again: the carrier hears each restart (it holds the input). */
    hd_conn_read_stop(c1);
    T_TRUE(!c1->is_reading);
    hd_conn_read_start(c1);
    T_EQ_INT(tc1->n_read_start, 2);

    /* A stream's timer is the connection's: the worker's heap. */
    hd_conn_set_timeout(c2, 5);
    for (int i = 0; i < 200 && s2->n_timeout == 0; i++) {
        hd_embedded_pump(&node, 1);
        sleep_ms(1);
    }
    T_EQ_INT(s2->n_timeout, 1);

    /* finish: the handler goes (on_close once), the carrier ends the stream; no more sends. */
    T_EQ_INT(hd_conn_send_copy(c2, "zz", 2), 0);
    hd_conn_finish(c2);
    T_EQ_INT(s2->n_close, 1);
    T_EQ_INT(tc2->n_finish, 1);
    T_EQ_INT(hd_conn_send_copy(c2, "x", 1), UV_ECANCELED);
    hd_conn_stream_copy(c2, taken, 2); /* the carrier frames what was queued before */
    T_EQ_INT(hd_conn_send_copy(pc, taken, 2), 0);
    hd_conn_close(c2); /* the carrier's end: the stream is gone */
    T_EQ_INT(tc2->n_close, 1);
    /* The carrier lets go of its state before the flush pass frees the stream: their
     * allocation goes then (ASan: neither freed twice nor leaked). */
    hd_conn_carrier_release(&tc2->carrier);

    /* close: the carrier hears it once, even if closed twice; freed in the flush pass. */
    T_EQ_INT(hd_conn_send_copy(c1, "lost", 4), 0);
    hd_conn_close(c1);
    hd_conn_close(c1);
    T_EQ_INT(tc1->n_close, 1);
    T_EQ_INT(s1->n_close, 1);
    hd_embedded_pump(&node, 2);
    hd_conn_census_t census;
    const char *why = NULL;
    T_EQ_INT(hd_conn_census(node.wk, &census, &why), 0);
    T_EQ_INT(census.conns, 1); /* the parent only */
    /* The stream was freed first: the carrier's state stayed until it lets go of it. */
    T_EQ_INT(tc1->n_close, 1);
    hd_conn_carrier_release(&tc1->carrier);
    read_exactly(p->fd, &got, 2);
    hd_embedded_buf_free(&got);
    close_all();
}

int main(void)
{
    hd_log_set_level(HD_LOG_WARN);
    HD_EMBEDDED_START(&node, test_accept, "max_connections 10000");
    T_RUN(test_send_slices);
    T_RUN(test_one_writev_per_pass);
    T_RUN(test_mail_batched_before_writing);
    T_RUN(test_queued_bytes_backpressure);
    T_RUN(test_finish);
    T_RUN(test_close);
    T_RUN(test_identity);
    T_RUN(test_streams);
    T_RUN(test_timer_order);
    T_RUN(test_timer_rearm);
    T_RUN(test_timer_default_close);
    T_RUN(test_timer_many);
    if (!batched())
        fprintf(stderr, "  (no Linux AIO here: the batch tests run one by one only)\n");
    for (int round = 0; round < 2; round++) {
        T_RUN(test_batch_many);
        T_RUN(test_batch_full_socket);
        T_RUN(test_batch_write_error);
        T_RUN(test_batch_closed_meanwhile);
        without_batches();
    }
    hd_embedded_stop(&node);
    T_DONE();
}
