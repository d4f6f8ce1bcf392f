/* SPDX-License-Identifier: MIT */
/*
 * test_http.c: unit tests of src/http/ through an embedded node (tests/support): requests are
 * written into one end of a socketpair whose other end is adopted as a connection; the test drives
 * the worker loop and reads the responses. Covers keep-alive, pipelining, input split at every
 * offset and byte by byte, bodies, Expect, every limit, HTTP/1.0, HEAD, deferred responses,
 * take-over, timeouts and hd_req_query. After each test every connection is closed and the loop
 * runs until the worker is idle, so ASan/LSan sees any leak.
 */
#define _GNU_SOURCE /* memmem */
#include "herald/http.h"
#include "herald/log.h"
#include "herald/server.h"

#include "embedded.h"
#include "test.h"

#include <errno.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server under test ---- */

static hd_embedded_t node;
static hd_server_t *srv; /* node.srv and node.wk while started */
static hd_worker_t *wk;
static hd_router_t *router;

static hd_deferred_t *deferred; /* the request /defer or /hold left unanswered */
static int n_aborted;           /* on_abort calls */

static void h_health(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_respond(req, 200, NULL, "text/plain", "ok\n", 3);
}

static void h_echo(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_respond(req, 200, NULL, "application/octet-stream", req->body, req->body_len);
}

/* Prefix route: answers with the path, the query and the X-Test header it saw. */
static void h_files(hd_req_t *req, void *arg)
{
    (void)arg;
    char body[1024];
    size_t xlen = 0;
    const char *x = hd_req_header(req, "x-test", &xlen);
    int n =
        snprintf(body, sizeof(body), "path=%.*s query=%.*s x=%.*s", (int)req->path_len, req->path,
                 (int)req->query_len, req->query ? req->query : "", (int)xlen, x ? x : "");
    hd_http_respond(req, 200, NULL, "text/plain", body, (size_t)n);
}

/* Answers with the decoded query parameter "a", or "-" when hd_req_query fails. */
static void h_query(hd_req_t *req, void *arg)
{
    (void)arg;
    char out[32];
    int n = hd_req_query(req, "a", out, sizeof(out));
    if (n < 0)
        hd_http_respond(req, 200, NULL, "text/plain", "-", 1);
    else
        hd_http_respond(req, 200, NULL, "text/plain", out, (size_t)n);
}

static void on_abort(hd_deferred_t *d)
{
    T_TRUE(d == deferred);
    T_TRUE(d->req == NULL);
    n_aborted++;
    deferred = NULL;
}

static void h_defer(hd_req_t *req, void *arg)
{
    (void)arg;
    T_TRUE(deferred == NULL);
    deferred = hd_http_defer(req);
    deferred->on_abort = on_abort;
}

/* The deferred request's answer, from outside any HTTP callback. */
static void respond_deferred(const char *body)
{
    T_TRUE(deferred != NULL);
    hd_req_t *req = deferred->req;
    deferred = NULL;
    hd_http_respond(req, 200, NULL, "text/plain", body, strlen(body));
}

/* A held request (long poll): answered by its own timeout unless the client leaves first. */
static void on_hold_timeout(hd_deferred_t *d)
{
    T_TRUE(d == deferred);
    deferred = NULL;
    hd_http_respond(d->req, 504, NULL, "text/plain", "held", 4);
}

static void h_hold(hd_req_t *req, void *arg)
{
    (void)arg;
    T_TRUE(deferred == NULL);
    deferred = hd_http_defer(req);
    deferred->on_abort = on_abort;
    deferred->on_timeout = on_hold_timeout;
    hd_http_defer_timeout(deferred, 20);
}

/* The body from shared buffers, queued by reference. */
static void h_bufs(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_buf_t *bufs[3] = {hd_buf_new_copy("hello ", 6), hd_buf_new_copy("", 0),
                         hd_buf_new_copy("bufs", 4)};
    hd_http_respond_bufs(req, 200, "X-Parts: 3\r\n", "text/plain", bufs, 3);
    for (int i = 0; i < 3; i++) {
        T_TRUE(bufs[i]->refs >= 1);
        hd_buf_unref(bufs[i]);
    }
}

/* A stream taken over from HTTP: echoes what it reads in upper case. */
static void stream_data(hd_conn_t *c, const char *data, size_t len)
{
    char out[4096];
    while (len > 0) {
        size_t n = len < sizeof(out) ? len : sizeof(out);
        for (size_t i = 0; i < n; i++)
            out[i] = (char)(data[i] >= 'a' && data[i] <= 'z' ? data[i] - 'a' + 'A' : data[i]);
        hd_conn_send_copy(c, out, n);
        data += n;
        len -= n;
    }
}

static const hd_conn_ops_t stream_ops = {.name = "upper", .on_data = stream_data};

static void h_stream(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_http_take_over(req, 200, "Content-Type: text/plain\r\n", &stream_ops, NULL);
}

static void server_start(const char *const *ov, size_t n_ov)
{
    hd_embedded_start(&node, ov, n_ov, hd_http_accept);
    srv = node.srv;
    wk = node.wk;
}

static const char *const default_ov[] = {"max_url_size 256", "max_header_size 1k",
                                         "max_body_size 1k"};
#define SERVER_START(...)                                                                          \
    server_start((const char *const[]){__VA_ARGS__},                                               \
                 sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static void pump(int n)
{
    hd_embedded_pump(&node, n);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs the worker loop until it has no connection left (fails after two seconds). */
static void wait_idle(void)
{
    if (hd_embedded_wait_idle(&node, 2000) != 0)
        T_FAIL("%llu connection(s) left after 2 s", (unsigned long long)hd_server_conn_count(srv));
    hd_embedded_check_clean(&node);
}

static void server_stop(void)
{
    wait_idle();
    T_TRUE(deferred == NULL);
    hd_embedded_stop(&node);
    srv = NULL;
    wk = NULL;
}

/* ---- the client end ---- */

typedef struct client_s {
    int fd;
    char *buf; /* everything received, NUL-terminated */
    size_t len, cap;
    size_t off; /* responses taken so far */
    int is_eof;
} client_t;

static void client_open(client_t *cl)
{
    memset(cl, 0, sizeof(*cl));
    cl->fd = hd_embedded_connect(&node, NULL);
    cl->cap = 4096;
    cl->buf = hd_malloc(cl->cap);
    cl->buf[0] = '\0';
}

/* Reads what is available; returns the number of new bytes. */
static size_t client_read(client_t *cl)
{
    size_t got = 0;
    for (;;) {
        if (cl->cap - cl->len < 4096) {
            cl->cap *= 2;
            cl->buf = hd_realloc(cl->buf, cl->cap);
        }
        ssize_t n = read(cl->fd, cl->buf + cl->len, cl->cap - cl->len - 1);
        if (n > 0) {
            cl->len += (size_t)n;
            got += (size_t)n;
            cl->buf[cl->len] = '\0';
            continue;
        }
        if (n == 0)
            cl->is_eof = 1;
        else if (errno != EAGAIN && errno != ECONNRESET)
            T_FAIL("read: %s", strerror(errno));
        return got;
    }
}

/* Runs the loop until the client has received nothing new for three passes. */
static void settle(client_t *cl)
{
    int quiet = 0;
    while (quiet < 3) {
        pump(1);
        quiet = client_read(cl) ? 0 : quiet + 1;
    }
}

static void client_send(client_t *cl, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            pump(1);
            client_read(cl);
        } else {
            return; /* the server closed: what it answered is in the buffer */
        }
    }
}

static void client_sends(client_t *cl, const char *text)
{
    client_send(cl, text, strlen(text));
}

static void client_close(client_t *cl)
{
    close(cl->fd);
    free(cl->buf);
    cl->fd = -1;
    cl->buf = NULL;
}

/* Closes the socket, keeping what was received. */
static void client_close_keep(client_t *cl)
{
    close(cl->fd);
    cl->fd = -1;
}

/* Whether the server still holds the connection open for more requests. */
static int client_is_open(client_t *cl)
{
    settle(cl);
    return !cl->is_eof;
}

/* ---- responses ---- */

typedef struct resp_s {
    int status;
    char head[2048]; /* status line and headers, NUL-terminated, Date masked */
    const char *body;
    size_t body_len;
} resp_t;

/* Replaces the value of the Date header with X's (same length): it changes every second. */
static void mask_date(char *text, size_t len)
{
    char *p = text, *end = text + len;
    while (p < end && (p = memmem(p, (size_t)(end - p), "\r\nDate: ", 8)) != NULL) {
        p += 8;
        while (p < end && *p != '\r')
            *p++ = 'X';
    }
}

/*
 * Takes the next response off the client buffer. A 1xx response and the answer to HEAD
 * (is_head) have no body. Returns 0 when no complete response is there.
 */
static int take_response(client_t *cl, resp_t *r, int is_head)
{
    const char *start = cl->buf + cl->off;
    const char *end = memmem(start, cl->len - cl->off, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head_len = (size_t)(end - start) + 4;
    T_TRUE(head_len < sizeof(r->head));
    memcpy(r->head, start, head_len);
    r->head[head_len] = '\0';
    mask_date(r->head, head_len);
    T_TRUE(strncmp(r->head, "HTTP/1.1 ", 9) == 0);
    r->status = atoi(r->head + 9);
    size_t clen = 0;
    const char *cls = strstr(r->head, "\r\nContent-Length: ");
    if (cls)
        clen = strtoul(cls + 18, NULL, 10);
    if (r->status < 200 || is_head)
        clen = 0;
    if (cl->len - cl->off < head_len + clen)
        return 0;
    r->body = start + head_len;
    r->body_len = clen;
    cl->off += head_len + clen;
    return 1;
}

static void expect_response_(client_t *cl, int status, const char *body, int is_head, int line)
{
    resp_t r;
    if (!take_response(cl, &r, is_head)) {
        fprintf(stderr, "%s:%d: FAIL: no complete response; received \"%s\"\n", __FILE__, line,
                cl->buf + cl->off);
        exit(1);
    }
    test_checks_++;
    if (r.status != status) {
        fprintf(stderr, "%s:%d: FAIL: status %d, expected %d; response:\n%s\n", __FILE__, line,
                r.status, status, r.head);
        exit(1);
    }
    if (body && (r.body_len != strlen(body) || memcmp(r.body, body, r.body_len) != 0)) {
        fprintf(stderr, "%s:%d: FAIL: body \"%.*s\", expected \"%s\"\n", __FILE__, line,
                (int)r.body_len, r.body, body);
        exit(1);
    }
}
#define EXPECT_RESPONSE(cl, status, body) expect_response_((cl), (status), (body), 0, __LINE__)

/* The head of the response just taken (for header checks). */
static resp_t last;

static void take_last_(client_t *cl, int is_head, int line)
{
    if (!take_response(cl, &last, is_head)) {
        fprintf(stderr, "%s:%d: FAIL: no complete response; received \"%s\"\n", __FILE__, line,
                cl->buf + cl->off);
        exit(1);
    }
    test_checks_++;
}
#define TAKE(cl)      take_last_((cl), 0, __LINE__)
#define TAKE_HEAD(cl) take_last_((cl), 1, __LINE__)

/* Nothing more than what was taken arrived. */
#define EXPECT_NOTHING_MORE(cl) T_EQ_INT((cl)->len, (cl)->off)

/* Writes a request, runs the loop until quiet. */
static void exchange(client_t *cl, const char *text)
{
    client_sends(cl, text);
    settle(cl);
}

/* ---- tests ---- */

#define REQ_GET "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

static void test_get_simple(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: example\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_EQ_STR(last.head, "HTTP/1.1 200 OK\r\n"
                        "Server: herald/" HERALD_VERSION "\r\n"
                        "Date: XXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Length: 3\r\n\r\n");
    T_EQ_INT(last.body_len, 3);
    T_TRUE(memcmp(last.body, "ok\n", 3) == 0);
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    T_EQ_INT(HD_STAT_GET(wk, requests), 1);
    client_close(&cl);
    wait_idle();
}

static void test_keepalive(void)
{
    client_t cl;
    client_open(&cl);
    for (int i = 0; i < 5; i++) {
        exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        TAKE(&cl);
        T_EQ_INT(last.status, 200);
        T_TRUE(strstr(last.head, "Connection:") == NULL);
        EXPECT_NOTHING_MORE(&cl);
        T_TRUE(client_is_open(&cl));
    }
    T_EQ_INT(hd_server_conn_count(srv), 1);
    /* Connection: close is honoured and said in the response. */
    exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(cl.is_eof);
    client_close(&cl);
    wait_idle();
}

static void test_keepalive_requests(void)
{
    /* keepalive_requests 3: the third response closes. */
    SERVER_START("keepalive_requests 3");
    client_t cl;
    client_open(&cl);
    exchange(&cl,
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE(&cl);
    T_TRUE(strstr(last.head, "Connection:") == NULL);
    TAKE(&cl);
    T_TRUE(strstr(last.head, "Connection:") == NULL);
    TAKE(&cl);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    EXPECT_NOTHING_MORE(&cl); /* the fourth request is not answered */
    T_TRUE(cl.is_eof);
    client_close(&cl);
    server_stop();
}

static void test_pipelined(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
                  "GET /files/one?q HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                  "chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n"
                  "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_RESPONSE(&cl, 200, "first");
    EXPECT_RESPONSE(&cl, 200, "path=/files/one query=q x=");
    EXPECT_RESPONSE(&cl, 200, "second");
    EXPECT_RESPONSE(&cl, 404, "{\"error\":\"not found\",\"status\":404}");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
}

static void test_pipelined_deferred(void)
{
    /* Requests behind a deferred one wait: responses leave in request order. */
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /defer HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /healthz "
                  "HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(deferred != NULL);
    /* More requests arrive while the deferred one is pending. */
    exchange(&cl, "GET /files/late HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NOTHING_MORE(&cl);
    respond_deferred("later");
    settle(&cl);
    EXPECT_RESPONSE(&cl, 200, "later");
    EXPECT_RESPONSE(&cl, 200, "abc");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_RESPONSE(&cl, 200, "path=/files/late query= x=");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
    T_EQ_INT(n_aborted, 0);
}

static void test_deferred_abort(void)
{
    /* The connection goes away while a request is deferred (its timer fired with no
     * on_timeout): on_abort runs, nothing leaks. */
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /defer HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    T_TRUE(deferred != NULL);
    EXPECT_NOTHING_MORE(&cl);
    hd_http_defer_timeout(deferred, 10);
    for (int i = 0; i < 500 && !cl.is_eof; i++) {
        sleep_ms(1);
        settle(&cl);
    }
    T_TRUE(cl.is_eof);
    EXPECT_NOTHING_MORE(&cl);
    T_EQ_INT(n_aborted, 1);
    T_TRUE(deferred == NULL);
    client_close(&cl);
    wait_idle();
    n_aborted = 0;

    /* The client closes while its request is deferred: EOF may be a half-close, so the
     * answer is still written (and fails), then the connection is freed. */
    client_open(&cl);
    exchange(&cl, "GET /defer HTTP/1.1\r\nHost: x\r\n\r\n");
    T_TRUE(deferred != NULL);
    client_close(&cl);
    pump(8);
    respond_deferred("nobody listens");
    wait_idle();
    T_EQ_INT(n_aborted, 0);
}

static void test_deferred_half_close(void)
{
    /* The client half-closes after its request: the deferred answer still arrives, with
     * Connection: close. */
    client_t cl;
    client_open(&cl);
    client_sends(&cl, "GET /defer HTTP/1.1\r\nHost: x\r\n\r\n");
    T_EQ_INT(shutdown(cl.fd, SHUT_WR), 0);
    settle(&cl);
    T_TRUE(deferred != NULL);
    T_TRUE(!cl.is_eof);
    respond_deferred("bye");
    settle(&cl);
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    T_EQ_INT(last.body_len, 3);
    T_TRUE(cl.is_eof);
    client_close(&cl);
    wait_idle();
    T_EQ_INT(n_aborted, 0);
}

static void test_held_request(void)
{
    /* The handler's timeout answers a held request; the connection goes on. */
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n" REQ_GET);
    T_TRUE(deferred != NULL);
    EXPECT_NOTHING_MORE(&cl);
    for (int i = 0; i < 500 && cl.len == cl.off; i++) {
        sleep_ms(1);
        settle(&cl);
    }
    EXPECT_RESPONSE(&cl, 504, "held");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(deferred == NULL);
    T_TRUE(client_is_open(&cl));

    /* The client leaves while held: on_abort runs, the connection is freed at once. */
    exchange(&cl, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    T_TRUE(deferred != NULL);
    T_EQ_INT(shutdown(cl.fd, SHUT_WR), 0);
    settle(&cl);
    T_EQ_INT(n_aborted, 1);
    T_TRUE(deferred == NULL);
    T_TRUE(cl.is_eof);
    EXPECT_NOTHING_MORE(&cl);
    client_close(&cl);
    wait_idle();
    n_aborted = 0;
}

static void test_respond_bufs(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl,
             "GET /bufs HTTP/1.1\r\nHost: x\r\n\r\nHEAD /bufs HTTP/1.1\r\nHost: x\r\n\r\n" REQ_GET);
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_CONTAINS(last.head, "\r\nX-Parts: 3\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n");
    T_EQ_INT(last.body_len, 10);
    T_TRUE(memcmp(last.body, "hello bufs", 10) == 0);
    TAKE_HEAD(&cl);
    T_CONTAINS(last.head, "\r\nContent-Length: 10\r\n");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
}

static void test_take_over(void)
{
    client_t cl;
    client_open(&cl);
    /* Bytes sent right behind the request go to the stream. */
    exchange(&cl, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nhello ");
    TAKE_HEAD(&cl); /* no Content-Length: the body runs until the connection closes */
    T_EQ_INT(last.status, 200);
    T_CONTAINS(last.head, "\r\nContent-Type: text/plain\r\n");
    T_TRUE(strstr(last.head, "Content-Length") == NULL);
    T_TRUE(strstr(last.head, "Connection:") == NULL);
    T_EQ_STR(cl.buf + cl.off, "HELLO ");
    cl.off = cl.len;
    exchange(&cl, "world");
    T_EQ_STR(cl.buf + cl.off, "WORLD");
    client_close(&cl);
    wait_idle();
}

/*
 * Feeding the same bytes whole, split in two at every offset, and byte by byte gives identical
 * output (Date masked).
 */
typedef struct feed_case_s {
    const char *name;
    const char *input;
    const char *statuses; /* expected statuses, one char code each: see status_of */
    unsigned head_mask;   /* responses (by index) that answer HEAD */
    int is_closed;        /* the server closes at the end */
    int is_stream;        /* the connection was taken over: stream bytes follow */
} feed_case_t;

static int status_of(char code)
{
    switch (code) {
    case 'c':
        return 100;
    case 'o':
        return 200;
    case 'n':
        return 404;
    case 'm':
        return 405;
    case 'b':
        return 400;
    case 'u':
        return 414;
    case 'h':
        return 431;
    case 'l':
        return 413;
    case 'e':
        return 417;
    case 'N':
        return 501;
    case 'V':
        return 505;
    default:
        return 0;
    }
}

/* Built at run time: over max_body_size (1k) by the second chunk. */
static char big_chunked[1536];

static feed_case_t feed_cases[] = {
    {"keep-alive mix",
     REQ_GET
     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
     "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n"
     "GET /files/a/b?x=%41&y=1 HTTP/1.1\r\nHost: x\r\nX-Test:  v v \r\n\r\n"
     "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
     "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
     "GET /q?a=b+c%21 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
     "POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
     "GET /none HTTP/1.1\r\nHost: x\r\n\r\n" REQ_GET,
     "ooooocoomno", 1u << 4, 0, 0},
    {"http/1.0 close", "GET /files/x HTTP/1.0\r\n\r\n" REQ_GET, "o", 0, 1, 0},
    {"take over", REQ_GET "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nabc\r\nxyz", "oo", 2u, 0, 1},
    {"garbage", REQ_GET "GARBAGE\r\n\r\n" REQ_GET, "ob", 0, 1, 0},
    {"unknown method", REQ_GET "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n" REQ_GET, "oN", 0, 1, 0},
    {"http/2.0", REQ_GET "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n" REQ_GET, "oV", 0, 1, 0},
    {"absolute-form",
     "GET http://h:80/healthz HTTP/1.1\r\nHost: x\r\n\r\n"
     "GET HTTP://h?q HTTP/1.1\r\nHost: x\r\n\r\n" REQ_GET,
     "ono", 0, 0, 0},
    {"url too long",
     REQ_GET "GET /files/"
             "0123456789012345678901234567890123456789012345678901234567890123456789"
             "0123456789012345678901234567890123456789012345678901234567890123456789"
             "0123456789012345678901234567890123456789012345678901234567890123456789"
             "0123456789012345678901234567890123456789012345678901234567890123456789"
             " HTTP/1.1\r\nHost: x\r\n\r\n",
     "ou", 0, 1, 0},
    {"body too long (chunked)", big_chunked, "ol", 0, 1, 0},
    {"body too long (length)",
     REQ_GET "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\nxxxx", "ol", 0, 1, 0},
    {"expect 100 then too long",
     "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n", "l",
     0, 1, 0},
    {"unsupported expect",
     "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", "e", 0, 1, 0},
    {"cl and te",
     REQ_GET
     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\r\nabc\r\n0\r\n\r\n",
     "ob", 0, 1, 0},
    {"duplicate cl",
     REQ_GET "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     "ob", 0, 1, 0},
};

/* Parses every response the client received and checks the statuses against the case. */
static void check_case_output(const feed_case_t *fc, client_t *cl)
{
    size_t n = strlen(fc->statuses);
    cl->off = 0;
    for (size_t i = 0; i < n; i++) {
        resp_t r;
        if (!take_response(cl, &r, (fc->head_mask >> i) & 1))
            T_FAIL("%s: response %zu missing; received:\n%s", fc->name, i, cl->buf);
        if (r.status != status_of(fc->statuses[i]))
            T_FAIL("%s: response %zu: status %d, expected %d", fc->name, i, r.status,
                   status_of(fc->statuses[i]));
        test_checks_++;
    }
    if (cl->off != cl->len && !fc->is_stream)
        T_FAIL("%s: unexpected bytes after the responses: \"%s\"", fc->name, cl->buf + cl->off);
    T_EQ_INT(cl->is_eof, fc->is_closed);
}

/* Feeds input in pieces: cuts[] are the offsets where a write ends (loop run in between). */
static void feed(const feed_case_t *fc, const size_t *cuts, size_t n_cuts, client_t *cl)
{
    size_t len = strlen(fc->input), at = 0;
    client_open(cl);
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        client_send(cl, fc->input + at, end - at);
        pump(2);
        client_read(cl);
        at = end;
    }
    settle(cl);
    mask_date(cl->buf, cl->len);
}

static void test_split_every_offset(void)
{
    char a[601], b[601];
    memset(a, 'a', 600);
    memset(b, 'b', 600);
    a[600] = b[600] = '\0';
    snprintf(big_chunked, sizeof(big_chunked),
             REQ_GET "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "258\r\n%s\r\n258\r\n%s\r\n0\r\n\r\n",
             a, b);
    for (size_t k = 0; k < HD_ARRAY_SIZE(feed_cases); k++) {
        const feed_case_t *fc = &feed_cases[k];
        size_t len = strlen(fc->input);
        client_t ref, cl;

        feed(fc, NULL, 0, &ref);
        check_case_output(fc, &ref);
        client_close_keep(&ref);
        wait_idle();

        for (size_t cut = 1; cut < len; cut++) {
            feed(fc, &cut, 1, &cl);
            if (cl.len != ref.len || memcmp(cl.buf, ref.buf, ref.len) != 0)
                T_FAIL("%s: split at %zu of %zu differs:\n--- whole:\n%s\n--- split:\n%s", fc->name,
                       cut, len, ref.buf, cl.buf);
            T_EQ_INT(cl.is_eof, ref.is_eof);
            client_close(&cl);
            wait_idle();
        }

        size_t *cuts = hd_malloc(len * sizeof(size_t));
        for (size_t i = 0; i + 1 < len; i++)
            cuts[i] = i + 1;
        feed(fc, cuts, len - 1, &cl);
        free(cuts);
        if (cl.len != ref.len || memcmp(cl.buf, ref.buf, ref.len) != 0)
            T_FAIL("%s: byte by byte differs:\n--- whole:\n%s\n--- bytes:\n%s", fc->name, ref.buf,
                   cl.buf);
        T_EQ_INT(cl.is_eof, ref.is_eof);
        client_close(&cl);
        free(ref.buf);
        wait_idle();
        test_checks_++;
    }
}

static void test_bodies(void)
{
    client_t cl;
    client_open(&cl);
    /* Fixed length: empty, binary with NULs, exactly max_body_size. */
    exchange(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "");
    static const char bin[] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\na\0b\r\n\xff"
        "c";
    client_send(&cl, bin, sizeof(bin) - 1);
    settle(&cl);
    TAKE(&cl);
    T_EQ_INT(last.body_len, 7);
    T_TRUE(memcmp(last.body,
                  "a\0b\r\n\xff"
                  "c",
                  7) == 0);
    char big[1024];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('A' + i % 26);
    exchange(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n");
    client_send(&cl, big, sizeof(big));
    settle(&cl);
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_EQ_INT(last.body_len, 1024);
    T_TRUE(memcmp(last.body, big, 1024) == 0);
    T_CONTAINS(last.head, "\r\nContent-Length: 1024\r\n");

    /* Chunked: many chunks, sizes in hex with upper and lower case, extensions, trailers;
     * exactly max_body_size in total. */
    exchange(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 4; i++) {
        client_sends(&cl, i % 2 ? "Ff;x=y\r\n" : "101\r\n");
        client_send(&cl, big + (i % 2 ? 0 : 500), i % 2 ? 0xff : 0x101);
        client_sends(&cl, "\r\n");
        pump(2);
    }
    exchange(&cl, "0\r\nX-Trailer: yes\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_EQ_INT(last.body_len, 1024);
    T_TRUE(memcmp(last.body, big + 500, 0x101) == 0);
    T_TRUE(memcmp(last.body + 0x101, big, 0xff) == 0);
    T_TRUE(memcmp(last.body + 0x200, big + 500, 0x101) == 0);
    T_TRUE(memcmp(last.body + 0x301, big, 0xff) == 0);
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
}

static void test_expect_continue(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl,
             "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    T_EQ_STR(cl.buf + cl.off, "HTTP/1.1 100 Continue\r\n\r\n");
    cl.off = cl.len;
    exchange(&cl, "hello");
    EXPECT_RESPONSE(&cl, 200, "hello");
    EXPECT_NOTHING_MORE(&cl);

    /* Case-insensitive value; chunked body. */
    exchange(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    T_EQ_STR(cl.buf + cl.off, "HTTP/1.1 100 Continue\r\n\r\n");
    cl.off = cl.len;
    exchange(&cl, "2\r\nhi\r\n0\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "hi");

    /* Trailing whitespace is not part of a header value. */
    exchange(
        &cl,
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue \t\r\nContent-Length: 1\r\n\r\n");
    T_EQ_STR(cl.buf + cl.off, "HTTP/1.1 100 Continue\r\n\r\n");
    cl.off = cl.len;
    exchange(&cl, "!");
    EXPECT_RESPONSE(&cl, 200, "!");

    /* No body: no interim response. */
    exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);

    /* HTTP/1.0 clients do not know 100 Continue. */
    exchange(&cl, "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
                  "Content-Length: 2\r\n\r\n");
    EXPECT_NOTHING_MORE(&cl);
    exchange(&cl, "ok");
    EXPECT_RESPONSE(&cl, 200, "ok");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);

    /* A body that will be refused is refused before the client sends it. */
    client_open(&cl);
    exchange(
        &cl,
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1025\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 413);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(cl.is_eof);
    client_close(&cl);

    /* Anything but 100-continue: 417. */
    client_open(&cl);
    exchange(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx");
    TAKE(&cl);
    T_EQ_INT(last.status, 417);
    T_TRUE(cl.is_eof);
    client_close(&cl);
    wait_idle();
}

/* Sends `req` on a fresh connection; expects `status` with Connection: close, then EOF. */
static void expect_limit_(const char *req, size_t len, int status, const char *body_part, int line)
{
    client_t cl;
    client_open(&cl);
    client_send(&cl, req, len);
    settle(&cl);
    resp_t r;
    if (!take_response(&cl, &r, 0))
        T_FAIL("line %d: no response; received \"%s\"", line, cl.buf);
    if (r.status != status)
        T_FAIL("line %d: status %d, expected %d:\n%s%.*s", line, r.status, status, r.head,
               (int)r.body_len, r.body);
    if (!strstr(r.head, "\r\nConnection: close\r\n"))
        T_FAIL("line %d: no Connection: close in\n%s", line, r.head);
    if (!strstr(r.head, "\r\nContent-Type: application/json\r\n"))
        T_FAIL("line %d: not a JSON error:\n%s", line, r.head);
    char want[64];
    snprintf(want, sizeof(want), ",\"status\":%d}", status);
    if (r.body_len < strlen(want) ||
        memcmp(r.body + r.body_len - strlen(want), want, strlen(want)) != 0 ||
        !memmem(r.body, r.body_len, body_part, strlen(body_part)))
        T_FAIL("line %d: body \"%.*s\"", line, (int)r.body_len, r.body);
    if (cl.off != cl.len)
        T_FAIL("line %d: more after the response: \"%s\"", line, cl.buf + cl.off);
    if (!cl.is_eof)
        T_FAIL("line %d: the connection stays open after %d", line, status);
    test_checks_++;
    client_close(&cl);
    wait_idle();
}
#define EXPECT_LIMIT(req, status, body_part)                                                       \
    expect_limit_((req), strlen(req), (status), (body_part), __LINE__)

static void test_limits(void)
{
    char buf[8192];

    /* 414: the URL alone is over max_url_size (256); a request line under it is fine. */
    snprintf(buf, sizeof(buf), "GET /files/%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 250, 0);
    EXPECT_LIMIT(buf, 414, "request line or URL too long");
    snprintf(buf, sizeof(buf), "GET /files/%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 220, 0);
    {
        client_t cl;
        client_open(&cl);
        exchange(&cl, buf);
        EXPECT_RESPONSE(&cl, 200, NULL);
        T_TRUE(client_is_open(&cl));
        client_close(&cl);
        wait_idle();
    }

    /* 431: the header section (names and values) is over max_header_size (1k). */
    snprintf(buf, sizeof(buf), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n", 1030, 0);
    EXPECT_LIMIT(buf, 431, "request header section too large");
    snprintf(buf, sizeof(buf), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n", 980, 0);
    {
        client_t cl;
        client_open(&cl);
        exchange(&cl, buf);
        EXPECT_RESPONSE(&cl, 200, "ok\n");
        client_close(&cl);
        wait_idle();
    }
    /* Many small headers count together; and more than 100 headers are refused as well. */
    size_t k = (size_t)snprintf(buf, sizeof(buf), "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 120; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "H%d: v\r\n", i % 10);
    snprintf(buf + k, sizeof(buf) - k, "\r\n");
    EXPECT_LIMIT(buf, 431, "request header section too large");

    /* 413 by Content-Length (before any body byte) and by chunked growth. */
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413,
                 "request body too large");
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n", 413,
                 "request body too large");
    k = (size_t)snprintf(buf, sizeof(buf),
                         "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 12; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "64\r\n%0*d\r\n", 100, i);
    snprintf(buf + k, sizeof(buf) - k, "0\r\n\r\n");
    EXPECT_LIMIT(buf, 413, "request body too large");

    /* Framing: Content-Length with Transfer-Encoding, conflicting lengths, garbage. */
    EXPECT_LIMIT(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n",
        400, "Content-Length");
    EXPECT_LIMIT(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n",
        400, "Content-Length");
    EXPECT_LIMIT(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        400, "Content-Length");
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 5\r\n\r\nabcde", 400,
                 "\"error\"");
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "\"error\"");
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400,
                 "\"error\"");
    EXPECT_LIMIT("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
                 "\"error\"");
    EXPECT_LIMIT("GARBAGE\r\n\r\n", 400, "\"error\"");
    EXPECT_LIMIT("GET /healthz HTTP/9.9\r\n\r\n", 505, "HTTP version not supported");
    EXPECT_LIMIT("GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version not supported");
    EXPECT_LIMIT("GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n", 505, "HTTP version not supported");
    EXPECT_LIMIT("BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method not implemented");
    EXPECT_LIMIT("BROKEN LINE\r\n\r\n", 400, "\"error\"");
    /* Host: exactly one valid value in HTTP/1.1 (RFC 9112 3.2). */
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\n\r\n", 400, "missing Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400,
                 "more than one Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "invalid Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400, "invalid Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "invalid Host header");
    EXPECT_LIMIT("GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400,
                 "more than one Host header");
    EXPECT_LIMIT("GET ftp://a/healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "absolute-form");
    EXPECT_LIMIT("GET http://a b/healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "\"error\"");
    EXPECT_LIMIT("GET http:///healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid authority");
    EXPECT_LIMIT("GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: x\r\n\r\n", 400, "\"error\"");
    EXPECT_LIMIT("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "\"error\"");
    /* A bad request after good ones: the good ones are answered first. */
    {
        client_t cl;
        client_open(&cl);
        exchange(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /he llo HTTP/1.1\r\nHost: "
                      "x\r\n\r\n" REQ_GET);
        EXPECT_RESPONSE(&cl, 200, "ok\n");
        EXPECT_RESPONSE(&cl, 400, NULL);
        EXPECT_NOTHING_MORE(&cl);
        T_TRUE(cl.is_eof);
        client_close(&cl);
        wait_idle();
    }
}

static void test_not_found_and_method(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 404);
    T_CONTAINS(last.head, "HTTP/1.1 404 Not Found\r\n");
    T_CONTAINS(last.head, "\r\nContent-Type: application/json\r\n");
    T_EQ_INT(last.body_len, strlen("{\"error\":\"not found\",\"status\":404}"));
    T_TRUE(memcmp(last.body, "{\"error\":\"not found\",\"status\":404}", last.body_len) == 0);

    exchange(&cl, "DELETE /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxx");
    TAKE(&cl);
    T_EQ_INT(last.status, 405);
    T_CONTAINS(last.head, "HTTP/1.1 405 Method Not Allowed\r\n");
    T_CONTAINS(last.head, "\r\nAllow: GET, HEAD\r\n");
    T_TRUE(memcmp(last.body, "{\"error\":\"method not allowed\",\"status\":405}", last.body_len) ==
           0);
    /* A method herald serves nowhere is 501, on any path; the connection goes on. */
    exchange(&cl, "PROPFIND /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 501);
    T_TRUE(strstr(last.head, "Allow:") == NULL);
    T_TRUE(strstr(last.head, "Connection:") == NULL);
    exchange(&cl, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 405);
    T_CONTAINS(last.head, "\r\nAllow: POST\r\n");

    /* The request was well framed: the connection goes on (hd_http_respond_error's contract). */
    T_TRUE(strstr(last.head, "Connection:") == NULL);
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    exchange(&cl, REQ_GET);
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    client_close(&cl);
    wait_idle();
}

static void test_http10(void)
{
    client_t cl;
    /* HTTP/1.0 closes by default. */
    client_open(&cl);
    exchange(&cl, "GET /healthz HTTP/1.0\r\n\r\n");
    TAKE(&cl);
    T_EQ_INT(last.status, 200);
    T_TRUE(strncmp(last.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    T_TRUE(cl.is_eof);
    client_close(&cl);

    /* Connection: keep-alive keeps it, and the response says so. */
    client_open(&cl);
    exchange(&cl, "GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    TAKE(&cl);
    T_CONTAINS(last.head, "\r\nConnection: keep-alive\r\n");
    T_TRUE(client_is_open(&cl));
    exchange(&cl, "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi");
    TAKE(&cl);
    T_CONTAINS(last.head, "\r\nConnection: keep-alive\r\n");
    T_EQ_INT(last.body_len, 2);
    T_TRUE(client_is_open(&cl));
    /* The next request without it ends the connection. */
    exchange(&cl, "GET /healthz HTTP/1.0\r\n\r\n");
    TAKE(&cl);
    T_CONTAINS(last.head, "\r\nConnection: close\r\n");
    T_TRUE(cl.is_eof);
    client_close(&cl);
    wait_idle();
}

static void test_head(void)
{
    client_t cl;
    client_open(&cl);
    exchange(&cl,
             "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE_HEAD(&cl);
    T_EQ_INT(last.status, 200);
    T_CONTAINS(last.head, "\r\nContent-Length: 3\r\n");
    /* No body bytes: the next response starts right after the head. */
    T_TRUE(strncmp(cl.buf + cl.off, "HTTP/1.1 200 OK\r\n", 17) == 0);
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    /* HEAD of a prefix route, and of an error. */
    exchange(&cl, "HEAD /files/abc HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE_HEAD(&cl);
    T_CONTAINS(last.head, "\r\nContent-Length: 25\r\n");
    exchange(&cl, "HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    TAKE_HEAD(&cl);
    T_EQ_INT(last.status, 404);
    char clen[64];
    snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu\r\n",
             strlen("{\"error\":\"not found\",\"status\":404}"));
    T_CONTAINS(last.head, clen);
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
}

static void test_eof_mid_request(void)
{
    static const char *partial[] = {
        "G",
        "GET /healthz HTTP/1.1\r\nHost",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /heal",
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(partial); i++) {
        client_t cl;
        client_open(&cl);
        exchange(&cl, partial[i]);
        T_EQ_INT(hd_server_conn_count(srv), 1);
        /* Half-close: the server gives up on the partial request and closes. */
        T_EQ_INT(shutdown(cl.fd, SHUT_WR), 0);
        settle(&cl);
        wait_idle();
        T_TRUE(cl.is_eof);
        client_close(&cl);
    }
}

/*
 * Sends text on a new connection and waits (up to seconds, not the timeout's 30 ms) for the
 * server to close it; returns the milliseconds from before the connection to the close.
 */
static uint64_t until_closed(client_t *cl, const char *text)
{
    uint64_t t0 = uv_hrtime();
    client_open(cl);
    exchange(cl, text);
    for (int i = 0; i < 2000 && !cl->is_eof; i++) {
        sleep_ms(2);
        settle(cl);
    }
    T_TRUE(cl->is_eof);
    return (uv_hrtime() - t0) / 1000000u;
}

/*
 * Each timeout on a server of its own where it is the only short one: header_timeout runs from
 * the accept, so with every timeout at 30 ms a test process paused 30 ms between the accept and
 * the first read (a loaded machine) got the header's 408 where the body's or keep-alive's
 * was wanted. A timeout never fires early: each close comes 30 ms or more after the connect.
 */
static void test_timeouts(void)
{
    client_t cl;

    /* Header section not finished in time: 408 and close. */
    SERVER_START("header_timeout 30ms");
    T_TRUE(until_closed(&cl, "GET /healthz HTTP/1.1\r\nHost: x\r\nHo") >= 29);
    EXPECT_RESPONSE(&cl, 408, "{\"error\":\"header timeout\",\"status\":408}");
    client_close(&cl);
    T_EQ_INT(HD_STAT_GET(wk, timeouts), 1);
    server_stop();

    /* Body not finished in time. */
    SERVER_START("header_timeout 10s", "body_timeout 30ms");
    T_TRUE(until_closed(&cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab") >=
           29);
    EXPECT_RESPONSE(&cl, 408, "{\"error\":\"body timeout\",\"status\":408}");
    client_close(&cl);
    T_EQ_INT(HD_STAT_GET(wk, timeouts), 1);
    server_stop();

    /* Idle keep-alive connection: closed without a word. */
    SERVER_START("header_timeout 10s", "keepalive_timeout 30ms");
    T_TRUE(until_closed(&cl, REQ_GET) >= 29);
    EXPECT_RESPONSE(&cl, 200, "ok\n");
    EXPECT_NOTHING_MORE(&cl);
    client_close(&cl);
    T_EQ_INT(HD_STAT_GET(wk, timeouts), 1);
    server_stop();
}

static void test_query_decoding(void)
{
    char out[16];
    hd_req_t r;
    memset(&r, 0, sizeof(r));
    T_EQ_INT(hd_req_query(&r, "a", out, sizeof(out)), -1); /* no query at all */

    const char *q =
        "a=1&b=%41%4a%4B&c=x+y&d&e=&f=%zz&g=%4&h=%&a=2&bb=long&n=%00!&&i=+%2B&u=%e2%82%ac";
    r.query = q;
    r.query_len = strlen(q);
    T_EQ_INT(hd_req_query(&r, "a", out, sizeof(out)), 1);
    T_EQ_STR(out, "1"); /* the first occurrence */
    T_EQ_INT(hd_req_query(&r, "b", out, sizeof(out)), 3);
    T_EQ_STR(out, "AJK");
    T_EQ_INT(hd_req_query(&r, "c", out, sizeof(out)), 3);
    T_EQ_STR(out, "x y");
    T_EQ_INT(hd_req_query(&r, "d", out, sizeof(out)), 0);
    T_EQ_STR(out, "");
    T_EQ_INT(hd_req_query(&r, "e", out, sizeof(out)), 0);
    T_EQ_INT(hd_req_query(&r, "f", out, sizeof(out)), 3);
    T_EQ_STR(out, "%zz"); /* not an escape: kept as is */
    T_EQ_INT(hd_req_query(&r, "g", out, sizeof(out)), 2);
    T_EQ_STR(out, "%4");
    T_EQ_INT(hd_req_query(&r, "h", out, sizeof(out)), 1);
    T_EQ_STR(out, "%");
    T_EQ_INT(hd_req_query(&r, "bb", out, sizeof(out)), 4);
    T_EQ_STR(out, "long");
    T_EQ_INT(hd_req_query(&r, "n", out, sizeof(out)), 2);
    T_EQ_INT(out[0], 0);
    T_EQ_INT(out[1], '!');
    T_EQ_INT(hd_req_query(&r, "i", out, sizeof(out)), 2);
    T_EQ_STR(out, " +");
    T_EQ_INT(hd_req_query(&r, "u", out, sizeof(out)), 3);
    T_EQ_STR(out, "\xe2\x82\xac");
    /* Missing keys, prefixes of keys, empty names. */
    T_EQ_INT(hd_req_query(&r, "z", out, sizeof(out)), -1);
    T_EQ_INT(hd_req_query(&r, "bbb", out, sizeof(out)), -1);
    T_EQ_INT(hd_req_query(&r, "", out, sizeof(out)), 0); /* "&&" holds an empty key */
    /* Too long: the value and its NUL must fit. */
    T_EQ_INT(hd_req_query(&r, "bb", out, 5), 4);
    T_EQ_INT(hd_req_query(&r, "bb", out, 4), -1);
    T_EQ_INT(hd_req_query(&r, "b", out, 4), 3); /* decoded length counts, not encoded */
    T_EQ_INT(hd_req_query(&r, "b", out, 3), -1);

    /* The query ends where query_len says, not at a NUL. */
    r.query = "a=12345&b=2";
    r.query_len = 4;
    T_EQ_INT(hd_req_query(&r, "a", out, sizeof(out)), 2);
    T_EQ_STR(out, "12");
    T_EQ_INT(hd_req_query(&r, "b", out, sizeof(out)), -1);
    r.query = "a=%4";
    r.query_len = 3; /* "%4" cut to "%": no escape read past the end */
    T_EQ_INT(hd_req_query(&r, "a", out, sizeof(out)), 1);
    T_EQ_STR(out, "%");
    r.query = "";
    r.query_len = 0;
    T_EQ_INT(hd_req_query(&r, "a", out, sizeof(out)), -1);

    /* Through the server: the URL's query reaches the handler undecoded. */
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /q?x=1&a=hello%20w+x%26y HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "hello w x&y");
    exchange(&cl, "GET /q HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "-");
    exchange(&cl, "GET /q? HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "-");
    exchange(&cl, "GET /q?a=0123456789012345678901234567890123456789 HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "-");
    exchange(&cl, "GET /files/x?a=%41 HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "path=/files/x query=a=%41 x=");
    client_close(&cl);
    wait_idle();
}

/* Inputs the fuzzer (tests/fuzz/fuzz_http.c) found crashing, each answered like any bad request. */
static void test_fuzz_regressions(void)
{
    client_t cl;
    /* An empty URL span reached memcpy with a NULL head buffer (UBSan); llhttp then waits for
     * more, so nothing is answered yet. */
    client_open(&cl);
    exchange(&cl, "CONNECT \n:");
    EXPECT_NOTHING_MORE(&cl);
    T_TRUE(client_is_open(&cl));
    client_close(&cl);
    wait_idle();
}

static void test_headers(void)
{
    /* Header lookup is case-insensitive; values lose surrounding whitespace. */
    client_t cl;
    client_open(&cl);
    exchange(&cl, "GET /files/h HTTP/1.1\r\nHost: x\r\nx-TEST:\t value 1 \r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "path=/files/h query= x=value 1");
    /* The first of repeated headers. */
    exchange(&cl, "GET /files/h HTTP/1.1\r\nHost: x\r\nX-Test: a\r\nX-Test: b\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "path=/files/h query= x=a");
    /* More fields than a request state holds in itself (16, then it allocates room for 100),
     * in two requests of one connection (the second starts from the state the first left):
     * a field from before the move is found, then one from after it. */
    for (int round = 0; round < 2; round++) {
        char buf[2048];
        size_t k = (size_t)snprintf(buf, sizeof(buf), "GET /files/m HTTP/1.1\r\nHost: x\r\n");
        if (round == 0)
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "X-Test: first\r\n");
        for (int i = 0; i < 40; i++)
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "X-F%d: %d\r\n", i, i);
        if (round == 1)
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "X-Test: last\r\n");
        snprintf(buf + k, sizeof(buf) - k, "\r\n");
        exchange(&cl, buf);
        EXPECT_RESPONSE(&cl, 200,
                        round ? "path=/files/m query= x=last" : "path=/files/m query= x=first");
    }
    exchange(&cl, "GET /files/h HTTP/1.1\r\nX-Test: c\r\nHost: x\r\n\r\n");
    EXPECT_RESPONSE(&cl, 200, "path=/files/h query= x=c");
    client_close(&cl);
    wait_idle();
}

int main(void)
{
    hd_log_set_level(HD_LOG_WARN);
    router = hd_router_new();
    hd_router_add(router, HD_M_GET, "/healthz", 0, h_health, NULL);
    hd_router_add(router, HD_M_POST, "/echo", 0, h_echo, NULL);
    hd_router_add(router, HD_M_GET, "/files/", 1, h_files, NULL);
    hd_router_add(router, HD_M_GET, "/q", 0, h_query, NULL);
    hd_router_add(router, HD_M_GET | HD_M_POST, "/defer", 0, h_defer, NULL);
    hd_router_add(router, HD_M_GET, "/stream", 0, h_stream, NULL);
    hd_router_add(router, HD_M_GET, "/hold", 0, h_hold, NULL);
    hd_router_add(router, HD_M_GET, "/bufs", 0, h_bufs, NULL);
    hd_http_set_router(router);

    server_start(default_ov, HD_ARRAY_SIZE(default_ov));
    T_RUN(test_get_simple);
    T_RUN(test_keepalive);
    T_RUN(test_pipelined);
    T_RUN(test_pipelined_deferred);
    T_RUN(test_deferred_abort);
    T_RUN(test_deferred_half_close);
    T_RUN(test_held_request);
    T_RUN(test_respond_bufs);
    T_RUN(test_take_over);
    T_RUN(test_bodies);
    T_RUN(test_expect_continue);
    T_RUN(test_limits);
    T_RUN(test_not_found_and_method);
    T_RUN(test_http10);
    T_RUN(test_head);
    T_RUN(test_eof_mid_request);
    T_RUN(test_query_decoding);
    T_RUN(test_headers);
    T_RUN(test_fuzz_regressions);
    T_RUN(test_split_every_offset);
    server_stop();

    T_RUN(test_keepalive_requests);
    T_RUN(test_timeouts);

    hd_router_free(router);
    T_DONE();
}
