/* SPDX-License-Identifier: MIT */
/*
 * publish.c: the publish scenario: the publish API alone. P keep-alive connections publish to
 * C channels (no subscribers) for D seconds, either at a fixed total rate R (open loop: latency
 * from each message's intended time) or, with --rate 0, as fast as the server answers with
 * --pipeline requests in flight per connection (closed loop: latency from when it was queued).
 * Reports throughput, errors, request latency and the server CPU per publish.
 *
 * With --batch N (herald), the messages leave N at a time in one POST /pub: a JSON array, one
 * item per message, each to its own channel in turn. Throughput and CPU stay per message; the
 * latency is per request. nchan has no batch publish, so bench/compare sets herald's batches
 * next to nchan's single publishes, message for message.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <poll.h>
#include <time.h>

#include <stdlib.h>
#include <string.h>

typedef struct prun_s {
    opts_t *o;
    pubset_t *ps;
    uint64_t t0, end, k, total, *seq;
} prun_t;

static void queue_next(prun_t *r, uint64_t ns)
{
    uint32_t ch = (uint32_t)(r->k % r->o->channels);
    pubset_queue(r->ps, ch, ++r->seq[ch], ns);
    r->k++;
}

static void on_tick(uv_timer_t *t)
{
    prun_t *r = t->data;
    uint64_t now = now_ns();
    if (r->o->rate > 0) {
        uint64_t due = (uint64_t)((double)(now - r->t0) * r->o->rate / 1e9) + 1;
        if (due > r->total)
            due = r->total;
        while (r->k < due)
            queue_next(r, r->t0 + (uint64_t)((double)r->k * 1e9 / r->o->rate));
    }
}

static void on_check(uv_check_t *c)
{
    prun_t *r = c->data;
    if (r->o->rate > 0)
        return;
    uint64_t now = now_ns();
    /* with batches, one more batch per connection fills while the others are answered */
    uint64_t window =
        (uint64_t)r->o->publishers * r->o->batch * (r->o->pipeline + (r->o->batch > 1 ? 1 : 0));
    while (now < r->end && pubset_outstanding(r->ps) < window) {
        uint64_t before = pubset_outstanding(r->ps);
        queue_next(r, now);
        if (pubset_outstanding(r->ps) == before)
            break; /* that publisher is gone: counted as an error, do not spin */
    }
    pubset_flush(r->ps);
}

int run_publish(opts_t *o)
{
    if (o->channels < o->publishers)
        o->channels = o->publishers;
    char title[320], batch[48] = "";
    if (o->batch > 1)
        snprintf(batch, sizeof(batch), ", batches of %u", o->batch);
    snprintf(title, sizeof(title),
             "herald-bench publish: %s%s%s, %u connection%s x pipeline %u, %u channel%s, %s, %u B "
             "for %.1f s",
             tg_names[o->tg.kind], o->n_tgs > 1 ? " (several nodes)" : "", batch, o->publishers,
             o->publishers == 1 ? "" : "s", o->pipeline, o->channels, o->channels == 1 ? "" : "s",
             o->rate > 0 ? "fixed rate" : "as fast as answered", o->size, o->duration_s);
    report_t *rep = rep_new(o, title);
    shared_t *sh = shared_new(0, o->channels);
    prun_t r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.seq = calloc(o->channels, sizeof(uint64_t));
    uv_loop_t loop;
    uv_loop_init(&loop);
    r.ps = pubset_new(&loop, o, sh);
    uint64_t until = now_ns() + 5000000000ull;
    while (pubset_up(r.ps) < o->publishers && now_ns() < until) {
        uv_run(&loop, UV_RUN_NOWAIT);
        sleep_ms(1);
    }
    if (pubset_up(r.ps) == 0) {
        rep_warn(rep, 1, "no publisher could connect to %s", o->tg.host);
        pubset_close(r.ps);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        free(r.seq);
        rep_finish(rep);
        return 3;
    }
    srv_sample_t a, b;
    srv_sample_opts(o, &a);
    r.t0 = now_ns();
    r.end = r.t0 + (uint64_t)(o->duration_s * 1e9);
    r.total = o->rate > 0 ? (uint64_t)(o->rate * o->duration_s + 0.5) : UINT64_MAX;
    uv_timer_t tick, prog;
    uv_check_t check;
    uv_timer_init(&loop, &tick);
    tick.data = &r;
    uv_check_init(&loop, &check);
    check.data = &r;
    uv_check_start(&check, on_check);
    uv_timer_init(&loop, &prog);
    uint64_t hard_end = r.end + (uint64_t)(o->drain_s * 1e9);
    uint64_t last_prog = 0;
    while (now_ns() < hard_end) {
        uint64_t now = now_ns();
        if (now >= r.end) {
            uv_timer_stop(&tick);
            if (pubset_outstanding(r.ps) == 0)
                break;
        }
        on_tick(&tick);
        pubset_flush(r.ps);
        uv_run(&loop, UV_RUN_NOWAIT);
        /* wait for I/O or the next intended send time, with nanosecond precision */
        uint64_t wait = 10000000;
        if (o->rate > 0 && r.k < r.total) {
            uint64_t next = r.t0 + (uint64_t)((double)r.k * 1e9 / o->rate), t = now_ns();
            wait = next > t ? next - t : 0;
            if (wait > 10000000)
                wait = 10000000;
        } else if (o->rate <= 0 && now < r.end) {
            wait = 1000000;
        }
        struct timespec ts = {0, (long)wait};
        struct pollfd pfd = {uv_backend_fd(&loop), POLLIN, 0};
        if (wait)
            ppoll(&pfd, 1, &ts, NULL);
        if (now - last_prog > 500000000ull) {
            uint64_t ok, err, st;
            hist_t *h;
            pubset_stats(r.ps, &ok, &err, &st, &h);
            double el = (double)(now - r.t0) / 1e9;
            progress(o, "publishing %.1fs  ok %llu (%.0f/s)  errors %llu  p99 %.2f ms", el,
                     (unsigned long long)ok, el > 0 ? ok / el : 0.0, (unsigned long long)err,
                     (double)hist_percentile(h, 99) / 1e6);
            last_prog = now;
        }
    }
    uint64_t t_end = now_ns();
    srv_sample_opts(o, &b);
    progress_end(o);
    uint64_t ok, err, st;
    hist_t *h;
    pubset_stats(r.ps, &ok, &err, &st, &h);
    rep_section(rep, "publishes");
    rep_u64(rep, "sent", "sent", r.k, NULL);
    rep_u64(rep, "acknowledged", "acknowledged", ok, NULL);
    rep_u64(rep, "errors", "errors", err, NULL);
    rep_u64(rep, "batch", "messages per request", o->batch, NULL);
    rep_u64(rep, "requests", "requests answered", pubset_requests(r.ps), NULL);
    if (err)
        rep_warn(rep, 1, "%llu publishes failed (last status %llu)", (unsigned long long)err,
                 (unsigned long long)st);
    if (pubset_outstanding(r.ps))
        rep_warn(rep, 1, "%llu publishes were still unanswered at the end",
                 (unsigned long long)pubset_outstanding(r.ps));
    double secs = (double)(t_end - r.t0) / 1e9;
    rep_f(rep, "throughput", "throughput", secs > 0 ? ok / secs : 0, 0, "msg/s");
    rep_section(rep, o->rate > 0 ? "latency (intended time -> response)"
                                 : "latency (queued -> response)");
    rep_latency(rep, "publish_latency", "publish", h);
    rep_section(rep, "server");
    report_server(rep, &a, &b, ok, "publish");
    rep_cdf(rep, "publish_cdf", h);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_close((uv_handle_t *)&check, NULL);
    uv_close((uv_handle_t *)&prog, NULL);
    pubset_close(r.ps);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(r.seq);
    return rep_finish(rep);
}
