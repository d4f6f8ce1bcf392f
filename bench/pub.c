/* SPDX-License-Identifier: MIT */
/*
 * pub.c: the publishers, and the payload every scenario sends.
 *
 * A payload is "hb:<channel>:<seq>:<intended send ns>:" padded with 'x' to the requested size:
 * text, so every transport carries it unchanged. The send time written into it is the time the
 * schedule intended, not the time the request left: when the server (or the publisher) stalls,
 * the messages queued behind the stall carry their original times and the stall shows up in the
 * latency figures instead of silently slowing the schedule (no coordinated omission).
 *
 * A publisher is one keep-alive HTTP connection with up to --pipeline requests in flight. Each
 * channel is published by one publisher only (channel % publishers), so a channel's messages
 * reach the server in sequence order. With several --url, publisher i talks to node
 * (i + i / N) % N: every node takes publishes and, as subscriber i is on node i % N and channel
 * ch goes to publisher ch % P, half of notify's messages cross from one node to the other
 * (with P a multiple of 2N; a plain i % N would put every publish on its subscriber's node).
 * With --batch N (herald only), up to N waiting messages leave in one POST /pub (a JSON array
 * of {"channel","data"}); pubset_flush sends a partial batch.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <inttypes.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

/* Room for a request head: the request line, Host, the type, the key (--key) and the length. */
#define HEAD_ROOM 1024

size_t payload_format(char *out, size_t size, uint32_t ch, uint64_t seq, uint64_t ns)
{
    int n = snprintf(out, size + 1, "hb:%" PRIu32 ":%" PRIu64 ":%" PRIu64 ":", ch, seq, ns);
    if (n < 0 || (size_t)n > size)
        return 0;
    memset(out + n, 'x', size - (size_t)n);
    out[size] = '\0';
    return size;
}

static int parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    if (s >= end || *s < '0' || *s > '9')
        return -1;
    while (s < end && *s >= '0' && *s <= '9')
        x = x * 10 + (uint64_t)(*s++ - '0');
    if (s >= end || *s != ':')
        return -1;
    *p = s + 1;
    *v = x;
    return 0;
}

int payload_parse(const char *p, size_t n, uint32_t *ch, uint64_t *seq, uint64_t *ns)
{
    const char *s = p, *end = p + n;
    if (n < 3 || memcmp(p, "hb:", 3) != 0) {
        /* wrapped (a JSON envelope): look for the marker near the start */
        s = memmem(p, n < 256 ? n : 256, "hb:", 3);
        if (!s)
            return -1;
    }
    s += 3;
    uint64_t c;
    if (parse_u64(&s, end, &c) || parse_u64(&s, end, seq) || parse_u64(&s, end, ns))
        return -1;
    *ch = (uint32_t)c;
    return 0;
}

int chan_name(const opts_t *o, uint32_t ch, char *out, size_t outlen)
{
    return snprintf(out, outlen, "%s-%" PRIu32, o->prefix, ch);
}

/* ---- publishers ---- */

typedef struct pmsg_s {
    uint32_t ch;
    uint32_t n; /* in flight: messages of the request this one opens (0: not the first) */
    uint64_t seq, ns;
} pmsg_t;

typedef struct pq_s {
    pmsg_t *v;
    size_t head, len, cap;
} pq_t;

typedef struct publisher_s {
    bconn_t bc;
    llhttp_t http;
    struct pubset_s *ps;
    const target_t *tg;
    pq_t waiting, inflight;
    uint32_t idx, reconnects, inflight_reqs;
    uint32_t ans_len; /* bytes of the answer's body kept in ans (pubset_on_answer) */
    char ans[256];
    unsigned is_up : 1;
    unsigned is_dead : 1;
} publisher_t;

struct pubset_s {
    uv_loop_t *loop;
    const opts_t *o;
    shared_t *sh;
    publisher_t *pubs;
    uint32_t n;
    uint64_t ok, err, last_status, outstanding, requests;
    uint32_t closed;
    int is_flushing;
    size_t body_cap;
    uint64_t reconnects;
    int is_closing;
    uint32_t big_ch, big_size; /* pubset_channel_size: channel big_ch's payloads (0: none) */
    pubset_answer_cb on_answer;
    void *answer_arg;
    hist_t lat;
    char *body;
};

static llhttp_settings_t pub_settings;

static void pq_push(pq_t *q, pmsg_t m)
{
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        pmsg_t *v = malloc(cap * sizeof(*v));
        for (size_t i = 0; i < q->len; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->len++) % q->cap] = m;
}

static void pq_push_front(pq_t *q, pmsg_t m)
{
    pq_push(q, m); /* makes room */
    q->len--;
    q->head = (q->head + q->cap - 1) % q->cap;
    q->v[q->head] = m;
    q->len++;
}

static pmsg_t pq_pop(pq_t *q)
{
    pmsg_t m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return m;
}

/* One POST /pub of up to o->batch waiting messages: [{"channel":"..","data":".."},..]. The
 * payload is plain ASCII, so it needs no JSON escaping. */
static void send_batch(publisher_t *p)
{
    pubset_t *ps = p->ps;
    const opts_t *o = ps->o;
    uint32_t k = p->waiting.len < o->batch ? (uint32_t)p->waiting.len : o->batch;
    char *b = ps->body + HEAD_ROOM; /* the head goes in front once the length is known */
    size_t n = 0;
    b[n++] = '[';
    for (uint32_t i = 0; i < k; i++) {
        pmsg_t m = pq_pop(&p->waiting);
        m.n = i == 0 ? k : 0;
        char ch[HD_CHANNEL_MAX + 1];
        chan_name(o, m.ch, ch, sizeof(ch));
        n += (size_t)sprintf(b + n, "%s{\"channel\":\"%s\",\"data\":\"", i ? "," : "", ch);
        payload_format(b + n, o->size, m.ch, m.seq, m.ns);
        n += o->size;
        b[n++] = '"';
        b[n++] = '}';
        pq_push(&p->inflight, m);
    }
    b[n++] = ']';
    char head[HEAD_ROOM];
    int hn = snprintf(head, sizeof(head),
                      "POST /pub HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "%sContent-Length: %zu\r\n\r\n",
                      p->tg->host, o->auth, n);
    memcpy(b - hn, head, (size_t)hn);
    bconn_write(&p->bc, b - hn, (size_t)hn + n);
    p->inflight_reqs++;
}

static void send_some(publisher_t *p)
{
    pubset_t *ps = p->ps;
    const opts_t *o = ps->o;
    while (p->is_up && !p->is_dead && p->waiting.len && p->inflight_reqs < o->pipeline) {
        if (o->batch > 1) {
            /* a partial batch leaves only when flushed and the connection is idle */
            if (p->waiting.len < o->batch && !(ps->is_flushing && p->inflight_reqs == 0))
                break;
            send_batch(p);
            continue;
        }
        pmsg_t m = pq_pop(&p->waiting);
        m.n = 1;
        uint32_t size = ps->big_size && m.ch == ps->big_ch ? ps->big_size : o->size;
        char head[HEAD_ROOM], ch[HD_CHANNEL_MAX + 1];
        chan_name(o, m.ch, ch, sizeof(ch));
        int hn;
        if (o->tg.kind == TG_NCHAN)
            hn = snprintf(head, sizeof(head),
                          "POST /pub?id=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                          "Content-Length: %u\r\n\r\n",
                          ch, p->tg->host, size);
        else
            hn = snprintf(head, sizeof(head),
                          "POST /pub/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                          "%sContent-Length: %u\r\n\r\n",
                          ch, p->tg->host, o->auth, size);
        /* one write per request: head and body together */
        memcpy(ps->body, head, (size_t)hn);
        payload_format(ps->body + hn, size, m.ch, m.seq, m.ns);
        bconn_write(&p->bc, ps->body, (size_t)hn + size);
        pq_push(&p->inflight, m);
        p->inflight_reqs++;
    }
}

static int on_pub_begin(llhttp_t *h)
{
    hd_container_of(h, publisher_t, http)->ans_len = 0;
    return 0;
}

static int on_pub_body(llhttp_t *h, const char *at, size_t n)
{
    publisher_t *p = hd_container_of(h, publisher_t, http);
    size_t room = sizeof(p->ans) - 1 - p->ans_len;
    if (n > room)
        n = room;
    memcpy(p->ans + p->ans_len, at, n);
    p->ans_len += (uint32_t)n;
    return 0;
}

static int on_pub_complete(llhttp_t *h)
{
    publisher_t *p = hd_container_of(h, publisher_t, http);
    pubset_t *ps = p->ps;
    if (p->inflight.len == 0)
        return 0;
    pmsg_t m = pq_pop(&p->inflight);
    uint32_t n = m.n ? m.n : 1;
    p->inflight_reqs--;
    ps->requests++;
    int status = h->status_code;
    int ok = status >= 200 && status < 300;
    if (ok) {
        uint64_t now = now_ns();
        hist_record(&ps->lat, now > m.ns ? now - m.ns : 0);
    } else {
        ps->last_status = (uint64_t)status;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            m = pq_pop(&p->inflight);
        ps->outstanding--;
        if (ok) {
            ps->ok++;
            ps->sh->published[m.ch]++;
        } else {
            ps->err++;
        }
        if (ps->on_answer) {
            p->ans[p->ans_len] = '\0';
            ps->on_answer(ps->answer_arg, m.ch, m.seq, status, n == 1 ? p->ans : NULL,
                          n == 1 ? p->ans_len : 0);
        }
    }
    return 0;
}

static void on_pub_connect(bconn_t *c)
{
    publisher_t *p = (publisher_t *)c;
    p->is_up = 1;
    llhttp_init(&p->http, HTTP_RESPONSE, &pub_settings);
    send_some(p);
}

static void on_pub_data(bconn_t *c, const char *d, size_t n)
{
    publisher_t *p = (publisher_t *)c;
    llhttp_errno_t e = llhttp_execute(&p->http, d, n);
    if (e != HPE_OK) {
        bconn_close(c, CE_HTTP);
        return;
    }
    send_some(p);
}

static const bconn_ops_t pub_ops;

static void on_pub_closed(bconn_t *c, int cause, int after_ready)
{
    (void)after_ready;
    publisher_t *p = (publisher_t *)c;
    pubset_t *ps = p->ps;
    p->is_up = 0;
    if (ps->is_closing) {
        ps->closed++;
        return;
    }
    /* The server ended the keep-alive connection (keepalive_requests, Connection: close):
     * reconnect and resend what it did not answer, first, so the channel order holds. */
    if ((cause == -1 || cause == CE_CLOSED || cause == CE_RESET) && p->reconnects < 10000) {
        p->reconnects++;
        ps->reconnects++;
        while (p->inflight.len) {
            pmsg_t m = p->inflight.v[(p->inflight.head + p->inflight.len - 1) % p->inflight.cap];
            p->inflight.len--;
            pq_push_front(&p->waiting, m);
        }
        p->inflight_reqs = 0;
        int r = bconn_connect(&p->bc, ps->loop, p->tg, ps->o->src_addrs + p->idx, &pub_ops);
        if (r == 0)
            return;
        cause = r;
    }
    p->is_dead = 1;
    /* whatever it still held is lost as a publish error: the receivers expect none of it */
    uint64_t dropped = p->inflight.len + p->waiting.len;
    for (pq_t *q = &p->inflight; ps->on_answer && q; q = q == &p->inflight ? &p->waiting : NULL)
        for (size_t i = 0; i < q->len; i++) {
            const pmsg_t *m = &q->v[(q->head + i) % q->cap];
            ps->on_answer(ps->answer_arg, m->ch, m->seq, 0, NULL, 0);
        }
    ps->err += dropped;
    ps->outstanding -= dropped;
    p->inflight.len = p->waiting.len = 0;
    p->inflight_reqs = 0;
    if (cause >= 0 && !ps->last_status)
        ps->last_status = (uint64_t)(1000 + cause);
}

static const bconn_ops_t pub_ops = {on_pub_connect, on_pub_data, on_pub_closed};

pubset_t *pubset_new(uv_loop_t *loop, const opts_t *o, shared_t *sh)
{
    llhttp_settings_init(&pub_settings);
    pub_settings.on_message_begin = on_pub_begin;
    pub_settings.on_body = on_pub_body;
    pub_settings.on_message_complete = on_pub_complete;
    pubset_t *ps = calloc(1, sizeof(*ps));
    ps->loop = loop;
    ps->o = o;
    ps->sh = sh;
    ps->n = o->publishers;
    ps->pubs = calloc(ps->n, sizeof(publisher_t));
    /* a batch item is {"channel":"..","data":".."} around the payload */
    ps->body_cap = HEAD_ROOM + (size_t)o->batch * (o->size + HD_CHANNEL_MAX + 32) + 2;
    ps->body = malloc(ps->body_cap);
    for (uint32_t i = 0; i < ps->n; i++) {
        publisher_t *p = &ps->pubs[i];
        p->ps = ps;
        p->idx = i;
        p->tg = target_of(o, i + i / o->n_tgs);
        /* publishers come from the last source addresses, away from the subscribers' */
        int r = bconn_connect(&p->bc, loop, p->tg, o->src_addrs + i, &pub_ops);
        if (r != 0) {
            p->is_dead = 1;
            ps->last_status = (uint64_t)(1000 + r);
        }
    }
    return ps;
}

uint32_t pubset_up(const pubset_t *ps)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < ps->n; i++)
        n += ps->pubs[i].is_up;
    return n;
}

void pubset_queue(pubset_t *ps, uint32_t ch, uint64_t seq, uint64_t ns)
{
    publisher_t *p = &ps->pubs[ch % ps->n];
    if (p->is_dead) {
        ps->err++;
        if (ps->on_answer)
            ps->on_answer(ps->answer_arg, ch, seq, 0, NULL, 0);
        return;
    }
    pq_push(&p->waiting, (pmsg_t){ch, 0, seq, ns});
    ps->outstanding++;
    send_some(p);
}

void pubset_flush(pubset_t *ps)
{
    if (ps->o->batch <= 1)
        return;
    ps->is_flushing = 1;
    for (uint32_t i = 0; i < ps->n; i++)
        send_some(&ps->pubs[i]);
    ps->is_flushing = 0;
}

uint64_t pubset_requests(const pubset_t *ps)
{
    return ps->requests;
}

uint64_t pubset_outstanding(const pubset_t *ps)
{
    return ps->outstanding;
}

void pubset_stats(const pubset_t *ps, uint64_t *ok, uint64_t *err, uint64_t *last_status,
                  hist_t **lat)
{
    *ok = ps->ok;
    *err = ps->err;
    *last_status = ps->last_status;
    *lat = (hist_t *)&ps->lat;
}

void pubset_channel_size(pubset_t *ps, uint32_t ch, uint32_t size)
{
    size_t cap = HEAD_ROOM + size + 2;
    if (cap > ps->body_cap) {
        ps->body = realloc(ps->body, cap);
        ps->body_cap = cap;
    }
    ps->big_ch = ch;
    ps->big_size = size;
}

void pubset_on_answer(pubset_t *ps, pubset_answer_cb cb, void *arg)
{
    ps->on_answer = cb;
    ps->answer_arg = arg;
}

void pubset_close(pubset_t *ps)
{
    uint32_t open = 0;
    ps->is_closing = 1;
    for (uint32_t i = 0; i < ps->n; i++) {
        publisher_t *p = &ps->pubs[i];
        if (!p->bc.is_open)
            continue;
        open++;
        if (!p->bc.is_closing)
            bconn_close(&p->bc, -1);
    }
    for (int spins = 0; ps->closed < open && spins < 1000; spins++)
        uv_run(ps->loop, UV_RUN_NOWAIT);
    for (uint32_t i = 0; i < ps->n; i++) {
        free(ps->pubs[i].waiting.v);
        free(ps->pubs[i].inflight.v);
    }
    free(ps->pubs);
    free(ps->body);
    free(ps);
}
