/* SPDX-License-Identifier: MIT */
/*
 * hooksink.c: `herald-bench hooksink`, a light webhook receiver for the webhook bars
 * (bench/webhook_bars.py): it listens on 127.0.0.1 (port 0: the kernel picks; the first line
 * on stdout says which), answers every request with 204 on its kept-alive connection, pipelined
 * requests included (all the answers of one read go out in one write), and counts the requests
 * and the distinct `webhook-id` values it saw. It checks no signature (the tests do that with
 * the spec's own library); it costs a few microseconds of CPU per request where an asyncio
 * receiver costs about a hundred, so at 2,000 webhooks/s it leaves the cores to herald and the
 * subscriber being measured.
 *
 * Control: every line read on stdin is answered on stdout with
 *   "requests R unique U conns C"
 * and stdin's end stops it, as does --max-seconds (default 3600): it never outlives its run.
 * An outage is made from outside: SIGSTOP stops it answering (the kernel still accepts and
 * buffers until the windows fill), SIGCONT resumes it with what it holds.
 *
 *   herald-bench hooksink [--listen 127.0.0.1:0] [--max-seconds S]
 */
#define _GNU_SOURCE
#include "bench.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ID_MAX            128 /* a webhook-id longer than this is counted by its first 128 bytes */
#define SET_MAX           (1u << 26) /* distinct ids kept at most (512 MiB of hashes); then not counted */
#define ANSWERS_PER_WRITE 512        /* 204s in the static answer buffer */

static const char answer[] = "HTTP/1.1 204 No Content\r\n\r\n";
#define ANSWER_LEN (sizeof(answer) - 1)

typedef struct sink_s {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_pipe_t in;
    uv_timer_t stop;
    uint64_t requests, conns;
    uint64_t *set; /* open addressing of FNV-1a hashes of the ids; 0 = empty */
    uint32_t set_cap, set_len;
    unsigned is_full : 1;
} sink_t;

typedef struct sconn_s {
    uv_tcp_t tcp;
    llhttp_t http;
    sink_t *sink;
    unsigned is_id : 1, is_field : 1;
    char field[16];
    size_t field_len;
    char id[ID_MAX];
    size_t id_len;
    uint32_t answers; /* owed for the requests completed in the current read */
} sconn_t;

static char answers[ANSWERS_PER_WRITE * ANSWER_LEN];
static llhttp_settings_t settings;

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ? h : 1;
}

static void set_put(uint64_t *set, uint32_t cap, uint64_t h, uint32_t *len)
{
    uint32_t i = (uint32_t)h & (cap - 1);
    while (set[i] && set[i] != h)
        i = (i + 1) & (cap - 1);
    if (!set[i]) {
        set[i] = h;
        (*len)++;
    }
}

static void count_id(sink_t *s, const char *id, size_t n)
{
    if (s->is_full)
        return;
    if ((uint64_t)(s->set_len + 1) * 2 > s->set_cap) {
        if (s->set_cap >= SET_MAX) {
            s->is_full = 1;
            fprintf(stderr, "hooksink: more than %u distinct ids: no longer counted\n",
                    SET_MAX / 2);
            return;
        }
        uint32_t cap = s->set_cap ? s->set_cap * 2 : 1u << 16, len = 0;
        uint64_t *set = calloc(cap, sizeof(uint64_t));
        if (!set) {
            s->is_full = 1;
            fprintf(stderr, "hooksink: out of memory: ids no longer counted\n");
            return;
        }
        for (uint32_t i = 0; i < s->set_cap; i++)
            if (s->set[i])
                set_put(set, cap, s->set[i], &len);
        free(s->set);
        s->set = set;
        s->set_cap = cap;
    }
    set_put(s->set, s->set_cap, hash_id(id, n), &s->set_len);
}

static int on_field(llhttp_t *h, const char *at, size_t n)
{
    sconn_t *c = h->data;
    if (!c->is_field) {
        c->is_field = 1;
        c->field_len = 0;
    }
    if (c->field_len + n <= sizeof(c->field))
        memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    return 0;
}

static int on_field_complete(llhttp_t *h)
{
    sconn_t *c = h->data;
    c->is_field = 0;
    c->is_id = c->field_len == 10 && strncasecmp(c->field, "webhook-id", 10) == 0;
    if (c->is_id)
        c->id_len = 0;
    return 0;
}

static int on_value(llhttp_t *h, const char *at, size_t n)
{
    sconn_t *c = h->data;
    if (!c->is_id)
        return 0;
    size_t room = ID_MAX - c->id_len;
    if (n > room)
        n = room;
    memcpy(c->id + c->id_len, at, n);
    c->id_len += n;
    return 0;
}

static int on_complete(llhttp_t *h)
{
    sconn_t *c = h->data;
    c->sink->requests++;
    if (c->id_len)
        count_id(c->sink, c->id, c->id_len);
    c->id_len = 0;
    c->is_id = 0;
    c->answers++;
    return 0;
}

static void on_close(uv_handle_t *h)
{
    free(h->data);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status; /* a failed write: the peer is gone, and the read side closes the conn */
    free(w);
}

/* Sends c->answers 204s: tried at once, the rest queued (the static buffer outlives it). */
static void answer_all(sconn_t *c)
{
    while (c->answers > 0) {
        uint32_t k = c->answers < ANSWERS_PER_WRITE ? c->answers : ANSWERS_PER_WRITE;
        c->answers -= k;
        uv_buf_t b = uv_buf_init(answers, (unsigned)(k * ANSWER_LEN));
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)b.len)
            continue;
        if (n > 0) {
            b.base += n;
            b.len -= (unsigned)n;
        } else if (n != UV_EAGAIN) {
            return; /* the read side sees the error and closes */
        }
        uv_write_t *w = malloc(sizeof(*w));
        if (!w || uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
            free(w);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rbuf[65536];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    sconn_t *c = st->data;
    if (n < 0) {
        uv_close((uv_handle_t *)st, on_close);
        return;
    }
    if (n == 0)
        return;
    llhttp_errno_t e = llhttp_execute(&c->http, buf->base, (size_t)n);
    answer_all(c);
    if (e != HPE_OK) {
        fprintf(stderr, "hooksink: bad request (%s): closing the connection\n",
                llhttp_errno_name(e));
        uv_close((uv_handle_t *)st, on_close);
    }
}

static void on_conn(uv_stream_t *server, int status)
{
    sink_t *s = server->data;
    if (status < 0)
        return;
    sconn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->sink = s;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->http, HTTP_REQUEST, &settings);
    c->http.data = c;
    s->conns++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_line_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char lbuf[256];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(lbuf, sizeof(lbuf));
}

static void close_all(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data && h->data != h->loop->data ? on_close : NULL);
}

static void on_stdin(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    sink_t *s = st->data;
    if (n < 0) {
        uv_walk(&s->loop, close_all, NULL);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (buf->base[i] == '\n')
            printf("requests %llu unique %u conns %llu\n", (unsigned long long)s->requests,
                   s->set_len, (unsigned long long)s->conns);
    fflush(stdout);
}

static void on_stop(uv_timer_t *t)
{
    fprintf(stderr, "hooksink: --max-seconds reached: stopping\n");
    uv_walk(t->loop, close_all, NULL);
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr,
            "herald-bench hooksink: %s%s\n"
            "usage: herald-bench hooksink [--listen 127.0.0.1:PORT] [--max-seconds S]\n",
            msg, arg ? arg : "");
    return 2;
}

int run_hooksink(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    long max_s = 3600;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
            char *end;
            max_s = strtol(argv[++i], &end, 10);
            if (*end || max_s < 1 || max_s > 86400)
                return usage_error("--max-seconds: 1 to 86400, not ", argv[i]);
        } else {
            return usage_error("unknown argument ", argv[i]);
        }
    }
    char host[64];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host))
        return usage_error("--listen wants HOST:PORT, not ", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, atoi(colon + 1), &sa) != 0)
        return usage_error("--listen: not an IPv4 address: ", listen);

    for (int i = 0; i < ANSWERS_PER_WRITE; i++)
        memcpy(answers + (size_t)i * ANSWER_LEN, answer, ANSWER_LEN);
    llhttp_settings_init(&settings);
    settings.on_header_field = on_field;
    settings.on_header_field_complete = on_field_complete;
    settings.on_header_value = on_value;
    settings.on_message_complete = on_complete;

    static sink_t s;
    uv_loop_init(&s.loop);
    s.loop.data = &s;
    uv_tcp_init(&s.loop, &s.server);
    s.server.data = &s;
    int rc = uv_tcp_bind(&s.server, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s.server, 1024, on_conn);
    if (rc != 0) {
        fprintf(stderr, "herald-bench hooksink: cannot listen on %s: %s\n", listen,
                uv_strerror(rc));
        return 3;
    }
    struct sockaddr_in me;
    int len = sizeof(me);
    uv_tcp_getsockname(&s.server, (struct sockaddr *)&me, &len);
    printf("hooksink listening on %s:%d\n", host, ntohs(me.sin_port));
    fflush(stdout);

    uv_pipe_init(&s.loop, &s.in, 0);
    s.in.data = &s;
    if (uv_pipe_open(&s.in, 0) == 0)
        uv_read_start((uv_stream_t *)&s.in, on_line_alloc, on_stdin);
    uv_timer_init(&s.loop, &s.stop);
    s.stop.data = &s;
    uv_timer_start(&s.stop, on_stop, (uint64_t)max_s * 1000, 0);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    free(s.set);
    return 0;
}
