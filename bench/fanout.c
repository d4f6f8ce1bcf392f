/* SPDX-License-Identifier: MIT */
/*
 * fanout.c: the fan-out scenario. S subscribers over one transport, spread over C channels
 * (subscriber i on channel i % C), in client processes; P publishers in this process publish R
 * messages per second in total for D seconds, each message to the next channel in turn; then a
 * drain period waits for what is still on its way. The same core measures the kernel floor
 * (floor.c), where the bench's own server writes the messages instead of herald or nchan.
 *
 * Two more scenarios run on the same core: notify (every subscriber on its own channel, a
 * notification feed: fanout with C = S and its own defaults) and chat (C rooms whose members,
 * WebSocket subscribers in the client processes, publish themselves: the parent only starts
 * the clock and waits; see sub.c for the schedule).
 *
 * Reported: subscribers connected (and why not), messages published, deliveries expected vs
 * delivered, lost, duplicated, out of order, publish-to-receipt latency, and the server's CPU
 * time and memory over the publishing and drain window, per delivered message. With several
 * --url and --server-pid (nodes over one Redis), the CPU and memory are the sum over them all.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <poll.h>
#include <time.h>

#include <stdlib.h>
#include <string.h>

typedef struct run_s {
    opts_t *o;
    shared_t *sh;
    pubset_t *ps;
    uv_loop_t loop;
    uv_timer_t sched, prog;
    uint64_t t0, total, k, *seq, last_pub_ns;
    hist_t merged;
    pid_t floor_pid;
} run_t;

static void on_sched(uv_timer_t *t)
{
    run_t *r = t->data;
    uint64_t now = now_ns();
    if (now < r->t0)
        return;
    double rate = r->o->rate;
    uint64_t due = (uint64_t)((double)(now - r->t0) * rate / 1e9) + 1;
    if (due > r->total)
        due = r->total;
    while (r->k < due) {
        uint32_t ch = (uint32_t)(r->k % r->o->channels);
        uint64_t ns = r->t0 + (uint64_t)((double)r->k * 1e9 / rate);
        pubset_queue(r->ps, ch, ++r->seq[ch], ns);
        r->k++;
    }
}

static void show_progress(run_t *r, const char *phase)
{
    const opts_t *o = r->o;
    if (!o->is_tty || o->quiet)
        return;
    kid_stats_t t;
    shared_sum(r->sh, &t);
    memset(&r->merged, 0, sizeof(r->merged));
    for (uint32_t k = 0; k < r->sh->n_kids; k++)
        hist_merge(&r->merged, &r->sh->kids[k].lat);
    uint64_t pub = 0;
    for (uint32_t c = 0; c < o->channels; c++)
        pub += r->sh->published[c];
    double el = (double)(now_ns() - r->t0) / 1e9;
    progress(o, "%s %.1fs  subs %llu  published %llu  delivered %llu (%.0f/s)  p99 %.2f ms", phase,
             el < 0 ? 0 : el, (unsigned long long)t.ready, (unsigned long long)pub,
             (unsigned long long)t.unique, el > 0 ? (double)t.unique / el : 0.0,
             (double)hist_percentile(&r->merged, 99) / 1e6);
}

static void on_prog(uv_timer_t *t)
{
    show_progress(t->data, "publishing");
}

static void report_connects(report_t *rep, const opts_t *o, const kid_stats_t *t)
{
    rep_section(rep, "connections");
    rep_u64(rep, "subscribers_planned", "subscribers planned", o->subscribers, NULL);
    rep_u64(rep, "subscribers_ready", "subscribers subscribed", t->ready, NULL);
    rep_u64(rep, "subscribers_failed", "connect failures", t->failed, NULL);
    int limit = 0;
    for (int c = 0; c < CE_COUNT; c++) {
        if (!t->err[c])
            continue;
        char key[48], label[64];
        snprintf(key, sizeof(key), "errors_%d", c);
        snprintf(label, sizeof(label), "  %s", ce_names[c]);
        rep_u64(rep, key, label, t->err[c], NULL);
        if (c == CE_PORTS || c == CE_FILES)
            limit = 1;
    }
    if (t->last_http_status)
        rep_u64(rep, "last_http_status", "  last HTTP status", t->last_http_status, NULL);
    if (t->failed)
        rep_warn(rep, 1, "%llu of %u connections failed (see causes above)",
                 (unsigned long long)t->failed, o->subscribers);
    if (limit)
        rep_warn(rep, 1,
                 "a machine limit stopped this scenario: out of local ports or file descriptors "
                 "(use more --source-addrs or a smaller --per-proc)");
}

void report_server(report_t *rep, const srv_sample_t *a, const srv_sample_t *b, uint64_t per,
                   const char *per_what)
{
    if (!a->ok || !b->ok) {
        rep_str(rep, "server_cpu_s", "server CPU", "n/a (no --server-pid)");
        return;
    }
    double cpu = b->cpu_s - a->cpu_s;
    rep_f(rep, "server_cpu_s", "server CPU (user+sys)", cpu, 2, "s");
    char key[64], label[64];
    snprintf(key, sizeof(key), "server_cpu_us_per_%s", per_what);
    snprintf(label, sizeof(label), "server CPU per %s", per_what);
    rep_f(rep, key, label, per ? cpu * 1e6 / (double)per : 0.0 / 0.0, 2, "us");
    rep_f(rep, "server_rss_mib", "server memory (Pss, whole tree)", (double)b->rss / 1048576.0, 1,
          "MiB");
    rep_u64(rep, "server_procs", "server processes", b->nprocs, NULL);
}

int fanout_core(opts_t *o, pid_t floor_pid, shared_t *sh, const char *title)
{
    report_t *rep = rep_new(o, title);
    run_t r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.sh = sh;
    r.floor_pid = floor_pid;
    pid_t *pids = calloc(sh->n_kids, sizeof(pid_t));
    uint32_t started = kids_spawn(o, sh, MODE_RECEIVE, pids);
    if (started < sh->n_kids)
        rep_warn(rep, 1, "only %u of %u client processes started", started, sh->n_kids);
    double wait_s = o->connect_timeout_s * 2 + o->subscribers / 1000.0;
    if (kids_wait_connected(o, sh, wait_s) != 0)
        rep_warn(rep, 1, "subscribers still connecting after %.0f s", wait_s);
    progress_end(o);
    kid_stats_t t;
    shared_sum(sh, &t);
    int by_kids = o->sc == SC_CHAT; /* the members publish, not this process */
    srv_sample_t a, b;
    if (t.ready == 0) {
        kids_stop(o, sh, pids, started, &t, NULL, NULL);
        report_connects(rep, o, &t);
        rep_warn(rep, 1, "no subscriber could subscribe: nothing was published");
        free(pids);
        rep_finish(rep);
        return 3;
    }

    uv_loop_init(&r.loop);
    if (!floor_pid && !by_kids) {
        r.ps = pubset_new(&r.loop, o, sh);
        uint64_t until = now_ns() + 5000000000ull;
        while (pubset_up(r.ps) < o->publishers && now_ns() < until) {
            uv_run(&r.loop, UV_RUN_NOWAIT);
            sleep_ms(1);
        }
        if (pubset_up(r.ps) < o->publishers)
            rep_warn(rep, 1, "only %u of %u publishers connected", pubset_up(r.ps), o->publishers);
    }
    sleep_ms((uint32_t)(o->settle_s * 1000));
    if (floor_pid)
        srv_sample(floor_pid, &a);
    else
        srv_sample_opts(o, &a);
    r.t0 = now_ns() + 1000000;
    r.total = (uint64_t)(o->rate * o->duration_s + 0.5);
    r.seq = calloc(o->channels, sizeof(uint64_t));
    sh->go_ns = r.t0;
    __atomic_store_n(&sh->phase, PH_GO, __ATOMIC_RELEASE);

    uv_timer_init(&r.loop, &r.prog);
    r.prog.data = &r;
    uv_timer_start(&r.prog, on_prog, 500, 500);
    uint64_t deadline = r.t0 + (uint64_t)((o->duration_s + o->drain_s) * 1e9);
    if (by_kids) {
        /* the kids publish on their own clocks until go + duration */
        uint64_t until = r.t0 + (uint64_t)(o->duration_s * 1e9) + 2000000;
        while (now_ns() < until) {
            uv_run(&r.loop, UV_RUN_NOWAIT);
            sleep_ms(20);
        }
    } else if (!floor_pid) {
        /* libuv timers tick in milliseconds; the schedule wants better, so wait on the loop's
         * backend fd with a nanosecond timeout up to the next message's intended time */
        r.sched.data = &r;
        while (now_ns() < deadline && (r.k < r.total || pubset_outstanding(r.ps) > 0)) {
            on_sched(&r.sched);
            uv_run(&r.loop, UV_RUN_NOWAIT);
            uint64_t now = now_ns();
            uint64_t next =
                r.k < r.total ? r.t0 + (uint64_t)((double)r.k * 1e9 / o->rate) : now + 10000000;
            uint64_t wait = next > now ? next - now : 0;
            if (wait > 10000000)
                wait = 10000000;
            struct timespec ts = {0, (long)wait};
            struct pollfd pfd = {uv_backend_fd(&r.loop), POLLIN, 0};
            if (wait)
                ppoll(&pfd, 1, &ts, NULL);
        }
    } else {
        while (now_ns() < deadline && !sh->floor_done)
            uv_run(&r.loop, UV_RUN_ONCE);
    }
    uint64_t pub_end = now_ns();
    /* drain: until every expected delivery arrived or the drain period is over */
    uint64_t drain_end = pub_end + (uint64_t)(o->drain_s * 1e9);
    while (now_ns() < drain_end) {
        uv_run(&r.loop, UV_RUN_NOWAIT);
        sleep_ms(50);
        show_progress(&r, "draining");
        if (now_ns() - pub_end < 400000000ull)
            continue; /* let the kids recompute what they expect */
        shared_sum(sh, &t);
        if (t.unique >= t.expected)
            break;
    }
    uint64_t end = now_ns();
    if (floor_pid)
        srv_sample(floor_pid, &b);
    else
        srv_sample_opts(o, &b);
    uv_timer_stop(&r.prog);
    progress_end(o);

    hist_t *lat = calloc(1, sizeof(hist_t)), *conn = calloc(1, sizeof(hist_t));
    kids_stop(o, sh, pids, started, &t, lat, conn);
    uint64_t pub_ok = 0, pub_err = 0, last_status = 0;
    hist_t *pub_lat = NULL;
    if (r.ps) {
        pubset_stats(r.ps, &pub_ok, &pub_err, &last_status, &pub_lat);
    } else {
        for (uint32_t c = 0; c < o->channels; c++)
            pub_ok += sh->published[c];
    }
    if (by_kids) {
        pub_err = t.pub_errors;
        r.total = (uint64_t)(o->rate * o->duration_s + 0.5);
    }

    report_connects(rep, o, &t);
    rep_section(rep, "messages");
    rep_u64(rep, "published",
            by_kids && o->tg.kind == TG_NCHAN ? "messages published (sent: nchan does not answer)"
                                              : "messages published (acknowledged)",
            pub_ok, NULL);
    if (by_kids) {
        rep_u64(rep, "publish_errors", "client publish errors", pub_err, NULL);
        if (pub_err)
            rep_warn(rep, 1, "%llu client publishes failed or had no live member to send them",
                     (unsigned long long)pub_err);
        if (pub_ok + pub_err < r.total)
            rep_warn(rep, 1, "only %llu of %llu messages were published",
                     (unsigned long long)(pub_ok + pub_err), (unsigned long long)r.total);
    }
    if (r.ps) {
        rep_u64(rep, "publish_errors", "publish errors", pub_err, NULL);
        if (pub_err)
            rep_warn(rep, 1, "%llu publishes failed (last status %llu)",
                     (unsigned long long)pub_err, (unsigned long long)last_status);
        if (r.k < r.total)
            rep_warn(rep, 1, "only %llu of %llu messages were sent before the deadline",
                     (unsigned long long)r.k, (unsigned long long)r.total);
    }
    rep_u64(rep, "expected", "deliveries expected", t.expected, NULL);
    rep_u64(rep, "delivered", "delivered (unique)", t.unique, NULL);
    rep_f(rep, "delivered_pct", "delivered", t.expected ? 100.0 * t.unique / t.expected : 100.0, 3,
          "%");
    rep_u64(rep, "lost", "lost", t.lost, NULL);
    rep_u64(rep, "duplicated", "duplicated", t.dup, NULL);
    rep_u64(rep, "out_of_order", "out of order", t.ooo, NULL);
    if (t.bad)
        rep_u64(rep, "unparsable", "unparsable payloads", t.bad, NULL);
    if (t.extra)
        rep_u64(rep, "unacknowledged_delivered", "delivered, publish not acknowledged", t.extra,
                NULL);
    if (t.disconnects)
        rep_u64(rep, "disconnects", "subscribers disconnected", t.disconnects, NULL);
    if (t.reconnects)
        rep_u64(rep, "reconnects", "poll connections reopened", t.reconnects, NULL);
    if (t.late)
        rep_warn(rep, 0, "%llu subscribers subscribed after publishing began (not counted)",
                 (unsigned long long)t.late);
    if (t.lost)
        rep_warn(rep, 1, "LOST %llu of %llu messages (%.3f%% delivered)",
                 (unsigned long long)t.lost, (unsigned long long)t.expected,
                 t.expected ? 100.0 * t.unique / t.expected : 0.0);
    if (t.dup)
        rep_warn(rep, 1, "%llu duplicated deliveries", (unsigned long long)t.dup);
    if (t.ooo)
        rep_warn(rep, 1, "%llu deliveries out of order", (unsigned long long)t.ooo);
    if (t.disconnects)
        rep_warn(rep, 1, "%llu subscribers were disconnected during the run",
                 (unsigned long long)t.disconnects);
    if (by_kids && (o->typing > 0 || o->presence || o->soak.churn)) {
        rep_section(rep, "chat events");
        rep_u64(rep, "typing_sent", "typing (ephemeral) publishes sent", t.typing_sent, NULL);
        rep_u64(rep, "typing_ok", "  acknowledged", t.typing_ok, NULL);
        rep_u64(rep, "events", "ephemeral, join and leave events received", t.events, NULL);
        rep_u64(rep, "churns", "members that left and joined again", t.churns, NULL);
        if (t.typing_sent > t.typing_ok)
            rep_warn(rep, 0, "%llu typing publishes not acknowledged (ephemeral_rate?)",
                     (unsigned long long)(t.typing_sent - t.typing_ok));
    }
    double secs = (double)(end - r.t0) / 1e9;
    rep_f(rep, "window_s", "publish + drain window", secs, 2, "s");
    rep_f(rep, "delivery_rate", "deliveries per second",
          (double)t.unique / ((double)(pub_end - r.t0) / 1e9), 0, "/s");
    rep_section(rep, "latency, intended publish time -> receipt");
    rep_latency(rep, "latency", "latency", lat);
    if (pub_lat) {
        rep_section(rep, "publish request latency (intended time -> response)");
        rep_latency(rep, "publish_latency", "publish", pub_lat);
    }
    rep_section(rep, floor_pid ? "the bench's floor server" : "server");
    report_server(rep, &a, &b, t.unique, "delivery");
    if (by_kids && t.events && a.ok && b.ok)
        rep_f(rep, "server_cpu_us_per_any_delivery",
              "server CPU per delivery, typing and presence events counted",
              (b.cpu_s - a.cpu_s) * 1e6 / (double)(t.unique + t.events), 2, "us");
    if (by_kids && t.churns && a.ok && b.ok)
        rep_f(rep, "server_cpu_us_per_join_leave",
              "server CPU per join or leave (all work / 2 "
              "per churn)",
              (b.cpu_s - a.cpu_s) * 1e6 / (2.0 * (double)t.churns), 2, "us");
    if (floor_pid) {
        rep_u64(rep, "floor_writes", "write calls", sh->floor_writes, NULL);
        rep_u64(rep, "floor_stalls", "writes that found a full buffer", sh->floor_stalls, NULL);
    }
    rep_cdf(rep, "latency_cdf", lat);
    if (r.ps)
        pubset_close(r.ps);
    uv_close((uv_handle_t *)&r.prog, NULL);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_loop_close(&r.loop);
    free(r.seq);
    free(lat);
    free(conn);
    free(pids);
    return rep_finish(rep);
}

static const char *nodes(const opts_t *o)
{
    static char buf[32];
    if (o->n_tgs == 1)
        return "";
    snprintf(buf, sizeof(buf), " (%u nodes)", o->n_tgs);
    return buf;
}

int run_fanout(opts_t *o)
{
    char title[256];
    snprintf(title, sizeof(title),
             "herald-bench fanout: %s%s over %s, %u subscribers on %u channel%s, %u publisher%s, "
             "%.0f msg/s x %u B for %.1f s",
             tg_names[o->tg.kind], nodes(o), tp_label(o), o->subscribers, o->channels,
             o->channels == 1 ? "" : "s", o->publishers, o->publishers == 1 ? "" : "s", o->rate,
             o->size, o->duration_s);
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), o->channels);
    return fanout_core(o, 0, sh, title);
}

int run_notify(opts_t *o)
{
    char title[256];
    snprintf(title, sizeof(title),
             "herald-bench notify: %s%s over %s, %u subscribers each on its own channel, %u "
             "publisher%s, %.0f msg/s x %u B for %.1f s",
             tg_names[o->tg.kind], nodes(o), tp_label(o), o->subscribers, o->publishers,
             o->publishers == 1 ? "" : "s", o->rate, o->size, o->duration_s);
    shared_t *sh =
        shared_new(kids_needed(o, (uint64_t)o->subscribers + o->publishers), o->channels);
    return fanout_core(o, 0, sh, title);
}

int run_chat(opts_t *o)
{
    char title[256];
    snprintf(title, sizeof(title),
             "herald-bench chat: %s%s, %u rooms of %u members on WebSocket, client publish, "
             "%.0f msg/s in total (%.2f per room) x %u B for %.1f s; typing %.1f/s per room, "
             "presence %s, churn %u/s",
             tg_names[o->tg.kind], nodes(o), o->channels, o->subscribers / o->channels, o->rate,
             o->rate / o->channels, o->size, o->duration_s, o->typing, o->presence ? "on" : "off",
             o->soak.churn);
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), o->channels);
    return fanout_core(o, 0, sh, title);
}
