/* SPDX-License-Identifier: MIT */
/*
 * test_hooks_client.c: the webhook client's deadlines (src/hooks/client.c) against a loopback
 * server this test plays by hand, on a loop it runs itself. An answer that came before
 * webhook_timeout but is read after it, because the loop did not run meanwhile (the hooks thread
 * waiting for a core: SCHED_IDLE on a busy machine), is that answer, not a timeout; half an
 * answer read late still times out (one more poll, not a new deadline), and so does a deadline
 * that passes with nothing unread.
 */
#include "herald/buf.h"
#include "herald/common.h"
#include "herald/webhook_def.h"
#include "hooks/internal.h"

#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SECRET     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define TIMEOUT_MS 100

typedef struct result_s {
    int done, status, fail;
} result_t;

static void on_done(hk_request_t *req, int status, int fail, const char *why)
{
    result_t *r = req->data;
    (void)why;
    r->done = 1;
    r->status = status;
    r->fail = fail;
    free(req->answer);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A listening socket on 127.0.0.1 (accept does not block); its port in *port. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    T_TRUE(fd >= 0);
    T_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    T_EQ_INT(listen(fd, 4), 0);
    T_EQ_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Runs the loop until the server's end (*conn, accepted from ls when -1) holds a whole request
 * (its head and the body "{}"). */
static void take_request(uv_loop_t *loop, int ls, int *conn)
{
    char buf[4096];
    size_t got = 0;
    for (int i = 0; i < 10000; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (*conn < 0)
            *conn = accept(ls, NULL, NULL);
        if (*conn >= 0) {
            ssize_t n = recv(*conn, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
            if (n > 0) {
                got += (size_t)n;
                buf[got] = '\0';
                if (strstr(buf, "\r\n\r\n{}"))
                    return;
            }
        }
        sleep_ms(1);
    }
    T_FAIL("the request did not arrive within 10 s");
}

static void test_answer_read_after_deadline(void)
{
    uv_loop_t loop;
    int port, conn = -1;
    char url[64], why[256] = "";
    T_EQ_INT(uv_loop_init(&loop), 0);
    int ls = listener(&port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", port);
    const char *argv[] = {url, "secret=" SECRET};
    hd_webhook_def_t def;
    T_EQ_INT(hd_webhook_def_parse(&def, 1, 2, argv, why, sizeof(why)), 0);
    hk_client_conf_t cc = {
        .loop = &loop, .connect_timeout_ms = 5000, .timeout_ms = TIMEOUT_MS, .allow_private = 1};
    hk_pool_t *p = hk_pool_new(&def, &cc);
    static const char head[] = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
    static const char answer[] = "HTTP/1.1 204 No Content\r\n\r\n";
    /* answered in time, read late (the connection kept); half an answer, on it; none at all, on
     * a new connection */
    static const char *const answers[] = {answer, "HTTP/1.1 204 No", NULL};
    for (size_t k = 0; k < HD_ARRAY_SIZE(answers); k++) {
        result_t r = {0};
        hk_request_t req;
        memset(&req, 0, sizeof(req));
        req.head = hd_buf_new_copy(head, sizeof(head) - 1);
        req.body = hd_buf_new_copy("{}", 2);
        req.cb = on_done;
        req.data = &r;
        hk_pool_send(p, &req);
        take_request(&loop, ls, &conn);
        if (answers[k])
            T_EQ_INT((int)send(conn, answers[k], strlen(answers[k]), 0), (int)strlen(answers[k]));
        sleep_ms(3 * TIMEOUT_MS); /* past webhook_timeout, the loop not running */
        for (int i = 0; i < 5000 && !r.done; i++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            if (!r.done)
                sleep_ms(1);
        }
        T_TRUE(r.done);
        if (k == 0) {
            T_EQ_INT(r.status, 204); /* was HD_HOOKS_FAIL_TIMEOUT: the timer ran first */
            T_EQ_INT((int)hk_pool_conns(p), 1);
        } else {
            T_EQ_INT(r.status, 0);
            T_EQ_INT(r.fail, HD_HOOKS_FAIL_TIMEOUT);
            close(conn); /* herald closed its end */
            conn = -1;
        }
        hd_buf_unref(req.head);
        hd_buf_unref(req.body);
    }
    hk_pool_close(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    T_EQ_INT(uv_loop_close(&loop), 0);
    close(ls);
}

int main(void)
{
    T_RUN(test_answer_read_after_deadline);
    return 0;
}
