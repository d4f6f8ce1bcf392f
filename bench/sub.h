/* SPDX-License-Identifier: MIT */
/*
 * sub.h: a subscriber of herald-bench's client processes (sub.c), shared with h2sub.c, which
 * carries SSE subscribers as streams of HTTP/2 connections (--h2-streams).
 */
#ifndef HERALD_BENCH_SUB_H
#define HERALD_BENCH_SUB_H

#include "bench.h"

#include <llhttp.h>

enum { S_NEW = 0, S_CONNECTING, S_LIVE, S_DEAD };

typedef struct sub_s {
    bconn_t bc; /* first: a bconn_t * is a sub_t * */
    llhttp_t http;
    uint32_t idx, ch;
    uint8_t state;
    unsigned is_late : 1;
    unsigned is_upgraded : 1;
    unsigned is_first_poll : 1;
    unsigned want_reconnect : 1;
    unsigned is_churning : 1; /* chat --churn: left its room, joining again */
    uint16_t status;
    uint8_t hname_len, hval_len;
    uint64_t t_start;
    uint64_t *seen;
    uint32_t seen_words;
    uint64_t max_order, unique; /* max_order: the highest order key seen (record in sub.c) */
    char *acc;
    uint32_t acc_len, acc_cap;
    uv_timer_t *timer; /* poll interval, allocated for poll subscribers only */
    char since[48];    /* herald: next id; nchan: Etag */
    char lastmod[48];  /* nchan: Last-Modified */
    char hname[16];
    char hval[48];
} sub_t;

/* ---- sub.c, for h2sub.c: what happens to a subscriber carried by an HTTP/2 stream ---- */

/* Its response head said 200: subscribed. */
void sub_stream_ready(sub_t *s);
/* Bytes of its event stream. */
void sub_stream_data(sub_t *s, const char *p, size_t n);
/* Its stream (or connection) ended: cause CE_* (-1: a clean close); status: the HTTP status
 * that refused it, or 0. */
void sub_stream_closed(sub_t *s, int cause, int status);

/* ---- h2sub.c ---- */

/*
 * Opens an HTTP/2 connection (h2c: prior knowledge; TLS: ALPN h2) to tg from source address
 * number src and
 * subscribes subs[0..n) on it, one GET /sse/CH stream each. Returns 0, or a CE_* cause (nothing
 * was opened: the caller counts the n subscribers failed).
 */
int h2_connect(uv_loop_t *loop, const opts_t *o, const target_t *tg, uint32_t src, sub_t *subs,
               uint32_t n);

#endif
