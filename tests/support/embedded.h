/* SPDX-License-Identifier: MIT */
/*
 * embedded.h: an embedded herald node for unit tests and fuzzers (tests/support/embedded.c).
 * One worker, no thread, no listener: the test drives the worker's loop itself and talks to the
 * server through socketpairs whose server end is adopted as a connection.
 *
 *   test --write(fd)--> [socketpair] --adopted hd_conn_t--> protocol handler (HTTP, ...)
 *   test <--read(fd)--- [socketpair] <--one writev per pass-- output queue
 *                        hd_embedded_pump() runs the worker loop between the two
 *
 * Optionally with the pub/sub layer (hd_embedded_start_pubsub: the hub on the worker and the
 * embedded broker, which works on whatever thread submits), so subscriptions, history and fan-out
 * run as in herald.
 *
 * Every function checks what it needs and aborts with file:line and a message when that fails:
 * in a unit test or under libFuzzer, a broken harness is a crash, never a silent pass.
 */
#ifndef HERALD_TEST_EMBEDDED_H
#define HERALD_TEST_EMBEDDED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "herald/conf.h"
#include "herald/server.h"

typedef struct hd_embedded_s hd_embedded_t;

struct hd_embedded_s {
    uv_loop_t main_loop; /* the "main thread" loop: frees the node, runs nothing else */
    hd_conf_t *conf;
    hd_server_t *srv;
    hd_worker_t *wk;
    /* Optional: runs after every loop pass the support module drives (answering a deferred
     * request, say), with arg. */
    void (*on_pass)(hd_embedded_t *e, void *arg);
    void *on_pass_arg;
    unsigned has_pubsub : 1;
};

/* Aborts with file:line when cond is false (harness failures, in tests and fuzzers alike). */
#define HD_EMB_CHECK(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            hd_embedded_fail(__FILE__, __LINE__, "%s", #cond);                                     \
    } while (0)
void hd_embedded_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/*
 * Starts a node with the configuration directives in ov (n_ov of them, on top of the defaults)
 * whose connections go to accept_cb (hd_http_accept for HTTP). Ignores SIGPIPE as herald's main
 * does. Aborts on a configuration error, printing it.
 */
void hd_embedded_start(hd_embedded_t *e, const char *const *ov, size_t n_ov,
                       hd_accept_cb accept_cb);
#define HD_EMBEDDED_START(e, accept_cb, ...)                                                       \
    hd_embedded_start((e), (const char *const[]){__VA_ARGS__},                                     \
                      sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *),           \
                      (accept_cb))
/* Adds the hub on the worker and the embedded broker. */
void hd_embedded_start_pubsub(hd_embedded_t *e);
/* Runs the worker loop until the broker has answered everything asked before (one FIFO). */
void hd_embedded_sync_broker(hd_embedded_t *e);
/*
 * Stops the node: waits until no connection is left (aborts after 5 s), stops the broker and
 * the hub if started, frees the node, runs the main loop dry and closes it. e can be started
 * again.
 */
void hd_embedded_stop(hd_embedded_t *e);

/* Runs n passes of the worker loop (UV_RUN_NOWAIT), each followed by on_pass. */
void hd_embedded_pump(hd_embedded_t *e, int n);
/* Runs the loop until the node has no connection left; returns 0, or -1 after timeout_ms. */
int hd_embedded_wait_idle(hd_embedded_t *e, int timeout_ms);
/*
 * Checks the connection layer holds nothing once every connection is gone: no connection
 * listed, no deadline in the heap, nothing to flush, its invariants hold. Aborts otherwise.
 */
void hd_embedded_check_clean(hd_embedded_t *e);

/*
 * A client: a socketpair whose other end the node adopts (accept_cb runs on it now). Returns the
 * client's end, non-blocking; *conn (when not NULL) is the server's connection.
 */
int hd_embedded_connect(hd_embedded_t *e, hd_conn_t **conn);
/* Like hd_embedded_connect with a socket type of choice (SOCK_SEQPACKET: one record per write). */
int hd_embedded_connect_type(hd_embedded_t *e, int type, hd_conn_t **conn);

/*
 * What a client received. Zero-initialised, it keeps every byte; with is_dropping it keeps
 * none. feed, when set, sees every piece as it is read (and NULL, 0 at the orderly end of the
 * stream, not after a reset): a fuzzer's check of the wire, say.
 */
typedef struct hd_embedded_buf_s {
    char *data; /* NUL-terminated */
    size_t len, cap;
    unsigned is_eof : 1;      /* the server closed (or reset) */
    unsigned is_dropping : 1; /* keep nothing (feed still sees it) */
    void (*feed)(void *arg, const char *data, size_t len);
    void *feed_arg;
} hd_embedded_buf_t;
void hd_embedded_buf_free(hd_embedded_buf_t *b);

/*
 * Reads what fd has now, appending it to into (NULL: dropped). Returns the byte count, or -1 at
 * end of stream with nothing read. A reset counts as the end; other errors abort.
 */
ssize_t hd_embedded_read(int fd, hd_embedded_buf_t *into);
/*
 * Writes all of data to fd; while the socket is full, runs the loop and reads what the server
 * sent into `into` (NULL: dropped). Returns 0, or -1 when the server closed first.
 */
int hd_embedded_send_all(hd_embedded_t *e, int fd, const void *data, size_t len,
                         hd_embedded_buf_t *into);
/* Runs the loop until fd has received nothing new for three passes (at most max_passes). */
void hd_embedded_settle(hd_embedded_t *e, int fd, hd_embedded_buf_t *into, int max_passes);

/*
 * The fuzzers' way to cut input into writes: the low two bits of mode pick whole, byte by byte,
 * fixed pieces of 1 + mode/4 bytes, or pseudo-random sizes from *rng. Returns the size of the
 * next write (at most left).
 */
size_t hd_embedded_next_cut(uint8_t mode, uint32_t *rng, size_t left);

#endif
