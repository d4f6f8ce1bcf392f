/* SPDX-License-Identifier: MIT */
/*
 * soak.c: the soak scenario's parent (soak.h describes the scenario). It forks the client
 * processes, publishes the primers, lets the subscribers connect, then publishes the steady
 * schedule for --duration while it samples herald every --interval: memory (Pss of its process
 * tree), open files (/proc/PID/fd), CPU, live connections, deliveries, lost, duplicated and
 * out-of-order messages, gap notices, slow-consumer cuts, publishes answered and refused, and
 * the p99 of publish-to-receipt latency in the interval. A row goes to stdout (and
 * PREFIX.csv) at each sample; at the end PREFIX.json and PREFIX.svg (RSS and fds over time).
 *
 * Verdict (exit 1): anything acknowledged lost, duplicated or out of order (slow consumers
 * apart), a subscriber fed a payload it cannot read, RSS or herald's open files beyond the
 * client's open connections growing after the warm-up beyond the tolerance (the mean of the
 * last three samples of the publishing phase against the mean of the first three after the
 * warm-up), herald gone, or fewer than 90% of
 * the subscribers live (the median over the samples after the warm-up).
 */
#define _GNU_SOURCE
#include "soak.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

typedef struct srun_s {
    opts_t *o;
    soak_shm_t *sh;
    shared_t *psh; /* the publishers' own counters */
    pubset_t *ps;
    uv_loop_t loop;
    uv_timer_t sched, sample;
    uint64_t start_ns, t0, go_end_ns, k, hot_k, total, hot_total;
    uint32_t primers_answered, primers_failed;
    uint64_t pub_ok, pub_err;
    srv_sample_t prev;
    uint64_t prev_ns;
    int server_gone;
    hist_t *last[LAT_N];
    soak_row_t *rows;
    size_t n_rows, cap_rows;
    FILE *csv;
} srun_t;

static soak_shm_t *shm_new(uint32_t n_kids, uint32_t n_channels, uint64_t seq_cap)
{
    size_t sz = sizeof(soak_shm_t) + 64 + (size_t)n_channels * SOAK_ID_MAX +
                (size_t)n_channels * 8 + 64 + (size_t)n_kids * sizeof(soak_kid_t) + 64 +
                (size_t)n_channels * seq_cap;
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("herald-bench: mmap");
        exit(3);
    }
    soak_shm_t *sh = m;
    sh->n_kids = n_kids;
    sh->n_channels = n_channels;
    sh->seq_cap = seq_cap;
    uintptr_t p = ((uintptr_t)(sh + 1) + 63) & ~(uintptr_t)63;
    sh->kids = (soak_kid_t *)p;
    p = ((p + (size_t)n_kids * sizeof(soak_kid_t)) + 63) & ~(uintptr_t)63;
    sh->maxseq = (volatile uint64_t *)p;
    p += (size_t)n_channels * 8;
    sh->primer = (char(*)[SOAK_ID_MAX])p;
    p += (size_t)n_channels * SOAK_ID_MAX;
    sh->ack = (volatile uint8_t *)p;
    return sh;
}

static void sum_kids(const soak_shm_t *sh, soak_kid_t *t)
{
    memset(t, 0, offsetof(soak_kid_t, lat));
    for (uint32_t k = 0; k < sh->n_kids; k++) {
        const uint64_t *src = (const uint64_t *)&sh->kids[k];
        uint64_t *dst = (uint64_t *)t;
        for (size_t i = 0; i < offsetof(soak_kid_t, last_status) / sizeof(uint64_t); i++)
            dst[i] += src[i];
        if (sh->kids[k].last_status)
            t->last_status = sh->kids[k].last_status;
        t->done += sh->kids[k].done;
    }
}

static uint64_t count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- publishing ---- */

static void on_answer(void *arg, uint32_t ch, uint64_t seq, int status, const char *body, size_t n)
{
    srun_t *r = arg;
    int ok = status >= 200 && status < 300;
    if (seq == 0) {
        r->primers_answered++;
        const char *id = body ? memmem(body, n, "\"id\":\"", 6) : NULL;
        const char *end = id ? memchr(id + 6, '"', (size_t)(body + n - id - 6)) : NULL;
        if (!ok || !end || end - id - 6 >= SOAK_ID_MAX) {
            r->primers_failed++;
            return;
        }
        memcpy(r->sh->primer[ch], id + 6, (size_t)(end - id - 6));
        r->sh->primer[ch][end - id - 6] = '\0';
        return;
    }
    if (seq < r->sh->seq_cap)
        r->sh->ack[(uint64_t)ch * r->sh->seq_cap + seq] = ok ? ACK_OK : ACK_FAILED;
    if (ok)
        r->pub_ok++;
    else
        r->pub_err++;
}

static void on_sched(uv_timer_t *t)
{
    srun_t *r = t->data;
    const opts_t *o = r->o;
    uint64_t now = now_ns();
    if (now < r->t0)
        return;
    uint64_t due = (uint64_t)((double)(now - r->t0) * o->rate / 1e9) + 1;
    if (due > r->total)
        due = r->total;
    for (; r->k < due; r->k++) {
        uint32_t ch = (uint32_t)(r->k % o->channels);
        uint64_t seq = r->k / o->channels + 1;
        r->sh->maxseq[ch] = seq;
        pubset_queue(r->ps, ch, seq, r->t0 + (uint64_t)((double)r->k * 1e9 / o->rate));
    }
    if (o->soak.hot_subs && o->soak.hot_rate > 0) {
        uint64_t hdue = (uint64_t)((double)(now - r->t0) * o->soak.hot_rate / 1e9) + 1;
        if (hdue > r->hot_total)
            hdue = r->hot_total;
        for (; r->hot_k < hdue; r->hot_k++) {
            r->sh->maxseq[o->channels] = r->hot_k + 1;
            pubset_queue(r->ps, o->channels, r->hot_k + 1,
                         r->t0 + (uint64_t)((double)r->hot_k * 1e9 / o->soak.hot_rate));
        }
    }
}

/* ---- sampling ---- */

static double interval_p99(srun_t *r, int which, const hist_t *cur)
{
    hist_t *d = calloc(1, sizeof(*d));
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        d->counts[b] = cur->counts[b] - r->last[which]->counts[b];
        d->count += d->counts[b];
    }
    d->max = cur->max;
    double p = d->count ? (double)hist_percentile(d, 99) / 1e6 : 0.0 / 0.0;
    memcpy(r->last[which], cur, sizeof(*cur));
    free(d);
    return p;
}

static void take_sample(srun_t *r)
{
    const opts_t *o = r->o;
    uint64_t now = now_ns();
    srv_sample_t s;
    if (srv_sample(o->server_pid, &s) != 0)
        r->server_gone = 1;
    soak_kid_t t;
    sum_kids(r->sh, &t);
    soak_row_t w;
    memset(&w, 0, sizeof(w));
    w.t_s = (double)(now - r->start_ns) / 1e9;
    w.phase = r->sh->phase;
    w.rss_mib = (double)s.rss / 1048576.0;
    w.cpu_pct = r->prev_ns && s.ok
                    ? (s.cpu_s - r->prev.cpu_s) * 100.0 / ((double)(now - r->prev_ns) / 1e9)
                    : 0.0;
    w.fds = count_fds(o->server_pid);
    w.live = t.live;
    w.slow_live = t.slow_live;
    w.client_open = t.open;
    w.delivered = t.delivered + t.slow_delivered;
    w.lost = t.lost;
    w.dup = t.dup;
    w.ooo = t.ooo;
    w.gaps = t.gaps;
    w.cuts = t.cuts;
    w.churned = t.churned;
    w.connect_fail = t.connect_fail;
    w.server_closes = t.server_closes;
    w.pub_ok = r->pub_ok;
    w.pub_err = r->pub_err;
    hist_t *cur = calloc(1, sizeof(*cur));
    for (int j = 0; j < LAT_N; j++) {
        memset(cur, 0, sizeof(*cur));
        for (uint32_t k = 0; k < r->sh->n_kids; k++)
            hist_merge(cur, &r->sh->kids[k].lat[j]);
        double p = interval_p99(r, j, cur);
        if (j == LAT_PUSH)
            w.p99_push_ms = p;
        else
            w.p99_poll_ms = p;
    }
    free(cur);
    r->prev = s;
    r->prev_ns = now;
    if (r->n_rows == r->cap_rows) {
        r->cap_rows = r->cap_rows ? r->cap_rows * 2 : 128;
        r->rows = realloc(r->rows, r->cap_rows * sizeof(*r->rows));
    }
    r->rows[r->n_rows++] = w;
    if (r->csv) {
        soak_csv_row(r->csv, &w);
        fflush(r->csv);
    }
    if (!o->json) {
        static const char *const ph[] = {"prime", "connect", "go", "drain", "final"};
        printf("%7.0fs %-7s rss %7.1f MiB  fds %6llu  cpu %5.1f%%  live %6llu  delivered %9llu  "
               "lost %llu dup %llu ooo %llu  gaps %llu  cuts %llu  pub %llu/%llu refused  "
               "p99 %.1f ms (poll %.0f ms)\n",
               w.t_s, ph[w.phase], w.rss_mib, (unsigned long long)w.fds, w.cpu_pct,
               (unsigned long long)w.live, (unsigned long long)w.delivered,
               (unsigned long long)w.lost, (unsigned long long)w.dup, (unsigned long long)w.ooo,
               (unsigned long long)w.gaps, (unsigned long long)w.cuts, (unsigned long long)w.pub_ok,
               (unsigned long long)w.pub_err, isnan(w.p99_push_ms) ? 0.0 : w.p99_push_ms,
               isnan(w.p99_poll_ms) ? 0.0 : w.p99_poll_ms);
        fflush(stdout);
    }
}

static void on_sample(uv_timer_t *t)
{
    take_sample(t->data);
}

/* Runs the loop until `until` (ns) or cond(r) holds. */
static void run_until(srun_t *r, uint64_t until, int (*cond)(srun_t *r))
{
    while (now_ns() < until && !(cond && cond(r)) && !r->server_gone) {
        uv_run(&r->loop, UV_RUN_NOWAIT);
        sleep_ms(1);
    }
}

static int primers_done(srun_t *r)
{
    return r->primers_answered > r->o->channels;
}

static int all_live(srun_t *r)
{
    soak_kid_t t;
    sum_kids(r->sh, &t);
    return t.live >= r->o->subscribers;
}

static int publishes_answered(srun_t *r)
{
    return pubset_outstanding(r->ps) == 0;
}

/* ---- the verdict ---- */

/* The mean over n rows of RSS (what 0), open descriptors (1), or descriptors not matched by a
 * connection the client holds open (2: what a descriptor leak would grow; the connections
 * themselves come and go with the churn, and with the pollers refused while Redis restarts). */
static double mean(const soak_row_t *rows, size_t n, int what)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += what == 0   ? rows[i].rss_mib
             : what == 1 ? (double)rows[i].fds
                         : (double)rows[i].fds - (double)rows[i].client_open;
    return n ? s / (double)n : 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void judge_leak(srun_t *r, report_t *rep)
{
    const opts_t *o = r->o;
    double warm_t = (double)(r->t0 - r->start_ns) / 1e9 + o->soak.warmup_s;
    size_t a = 0, b = 0;
    for (size_t i = 0; i < r->n_rows; i++) {
        if (r->rows[i].phase != SP_GO || r->rows[i].t_s < warm_t)
            continue;
        if (!b)
            a = i;
        b = i + 1;
    }
    if (b < a + 6) {
        rep_warn(rep, 0, "too few samples after the warm-up to judge a leak (%zu)", b - a);
        return;
    }
    double rss0 = mean(r->rows + a, 3, 0), rss1 = mean(r->rows + b - 3, 3, 0);
    double fd0 = mean(r->rows + a, 3, 1), fd1 = mean(r->rows + b - 3, 3, 1);
    double ex0 = mean(r->rows + a, 3, 2), ex1 = mean(r->rows + b - 3, 3, 2);
    double rss_tol = rss0 * o->soak.rss_tol_pct / 100.0;
    if (rss_tol < o->soak.rss_tol_mib)
        rss_tol = o->soak.rss_tol_mib;
    rep_section(rep, "after the warm-up (means of the first and last three samples)");
    rep_f(rep, "rss_after_warmup_mib", "RSS after the warm-up", rss0, 1, "MiB");
    rep_f(rep, "rss_end_mib", "RSS at the end", rss1, 1, "MiB");
    rep_f(rep, "rss_tolerance_mib", "RSS growth allowed", rss_tol, 1, "MiB");
    rep_f(rep, "fds_after_warmup", "open files after the warm-up", fd0, 0, NULL);
    rep_f(rep, "fds_end", "open files at the end", fd1, 0, NULL);
    rep_f(rep, "fds_extra_after_warmup", "  beyond the client's connections", ex0, 0, NULL);
    rep_f(rep, "fds_extra_end", "  ... at the end", ex1, 0, NULL);
    rep_u64(rep, "fds_tolerance", "growth of those allowed", o->soak.fd_tol, NULL);
    if (rss1 - rss0 > rss_tol)
        rep_warn(rep, 1, "RSS grew by %.1f MiB after the warm-up (%.1f -> %.1f MiB; allowed %.1f)",
                 rss1 - rss0, rss0, rss1, rss_tol);
    if (ex1 - ex0 > o->soak.fd_tol)
        rep_warn(rep, 1,
                 "herald's open files beyond the client's connections grew by %.0f after the "
                 "warm-up (%.0f -> %.0f; allowed %u)",
                 ex1 - ex0, ex0, ex1, o->soak.fd_tol);
    /* were the subscribers there? The median over the samples after the warm-up: churn, and
     * pollers refused while Redis restarts, take some away at any one moment */
    uint64_t *live = malloc((b - a) * sizeof(*live));
    for (size_t i = a; i < b; i++)
        live[i - a] = r->rows[i].live;
    qsort(live, b - a, sizeof(*live), cmp_u64);
    uint64_t med = live[(b - a) / 2];
    free(live);
    if ((double)med < 0.9 * o->subscribers)
        rep_warn(rep, 1, "only %llu of %u subscribers were live after the warm-up (median)",
                 (unsigned long long)med, o->subscribers);
}

static void write_outputs(srun_t *r, report_t *rep, const soak_kid_t *t)
{
    const opts_t *o = r->o;
    if (!o->soak.out[0])
        return;
    char path[256], title[256];
    snprintf(path, sizeof(path), "%s.json", o->soak.out);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f,
                "{\"connections\":%u,\"channels\":%u,\"rate\":%g,\"hot_rate\":%g,"
                "\"hot_subs\":%u,\"churn\":%u,\"duration_s\":%g,\"interval_s\":%g,"
                "\"warmup_s\":%g,\"warmup_end_s\":%.1f,\"lost\":%llu,\"dup\":%llu,\"ooo\":%llu,"
                "\"delivered\":%llu,"
                "\"slow_lost\":%llu,\"cuts\":%llu,\"gaps\":%llu,\"samples\":[",
                o->subscribers, o->channels, o->rate, o->soak.hot_rate, o->soak.hot_subs,
                o->soak.churn, o->duration_s, o->soak.interval_s, o->soak.warmup_s,
                (double)(r->t0 - r->start_ns) / 1e9 + o->soak.warmup_s, (unsigned long long)t->lost,
                (unsigned long long)t->dup, (unsigned long long)t->ooo,
                (unsigned long long)(t->delivered + t->slow_delivered),
                (unsigned long long)t->slow_lost, (unsigned long long)t->cuts,
                (unsigned long long)t->gaps);
        for (size_t i = 0; i < r->n_rows; i++)
            soak_json_row(f, &r->rows[i], i == 0);
        fprintf(f, "]}\n");
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s.svg", o->soak.out);
    snprintf(title, sizeof(title), "herald soak: %u connections, %.0f s, churn %u/s",
             o->subscribers, o->duration_s, o->soak.churn);
    if (soak_write_svg(path, title, r->rows, r->n_rows,
                       (double)(r->t0 - r->start_ns) / 1e9 + o->soak.warmup_s) != 0)
        rep_warn(rep, 0, "could not write %s", path);
}

int run_soak(opts_t *o)
{
    if (o->soak.replot)
        return soak_replot(o->soak.out);
    char title[256];
    snprintf(title, sizeof(title),
             "herald-bench soak: %u connections (ws, sse, long poll, poll), %u channels + hot, "
             "%.0f msg/s + %.0f hot, churn %u/s, %.0f s",
             o->subscribers, o->channels, o->rate, o->soak.hot_rate, o->soak.churn, o->duration_s);
    report_t *rep = rep_new(o, title);
    srun_t r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.total = (uint64_t)(o->rate * o->duration_s + 0.5);
    r.hot_total = o->soak.hot_subs ? (uint64_t)(o->soak.hot_rate * o->duration_s + 0.5) : 0;
    uint64_t cap = r.total / o->channels + 2;
    if (r.hot_total + 2 > cap)
        cap = r.hot_total + 2;
    r.sh = shm_new(kids_needed(o, o->subscribers), o->channels + 1, cap);
    pid_t *pids = calloc(r.sh->n_kids, sizeof(pid_t));
    uint32_t started = soak_kids_spawn(o, r.sh, pids);
    int rc = 3;
    if (started < r.sh->n_kids) {
        fprintf(stderr, "herald-bench: soak: only %u of %u client processes started\n", started,
                r.sh->n_kids);
        goto out;
    }
    for (int j = 0; j < LAT_N; j++)
        r.last[j] = calloc(1, sizeof(hist_t));
    if (o->soak.out[0]) {
        char path[256];
        snprintf(path, sizeof(path), "%s.csv", o->soak.out);
        r.csv = fopen(path, "w");
        if (!r.csv) {
            fprintf(stderr, "herald-bench: soak: cannot write %s\n", path);
            goto out;
        }
        soak_csv_header(r.csv);
    }
    uv_loop_init(&r.loop);
    r.psh = shared_new(0, o->channels + 1);
    r.ps = pubset_new(&r.loop, o, r.psh);
    pubset_on_answer(r.ps, on_answer, &r);
    pubset_channel_size(r.ps, o->channels, o->soak.hot_size);
    uint64_t until = now_ns() + 10000000000ull;
    while (pubset_up(r.ps) < o->publishers && now_ns() < until) {
        uv_run(&r.loop, UV_RUN_NOWAIT);
        sleep_ms(1);
    }
    for (uint32_t ch = 0; ch <= o->channels; ch++)
        pubset_queue(r.ps, ch, 0, now_ns());
    run_until(&r, now_ns() + 60000000000ull, primers_done);
    if (!primers_done(&r) || r.primers_failed) {
        fprintf(stderr,
                "herald-bench: soak: %u of %u primer publishes failed or went unanswered (is "
                "herald at --url, and may this host publish?)\n",
                o->channels + 1 - (r.primers_answered - r.primers_failed), o->channels + 1);
        goto stop;
    }

    /* connect, sampling from here on */
    r.start_ns = now_ns();
    r.sh->phase = SP_CONNECT;
    uv_timer_init(&r.loop, &r.sample);
    r.sample.data = &r;
    take_sample(&r);
    uv_timer_start(&r.sample, on_sample, (uint64_t)(o->soak.interval_s * 1000),
                   (uint64_t)(o->soak.interval_s * 1000));
    run_until(&r, now_ns() + (uint64_t)((o->connect_timeout_s * 2 + o->subscribers / 500.0) * 1e9),
              all_live);
    run_until(&r, now_ns() + (uint64_t)(o->settle_s * 1e9), NULL);

    /* publish */
    r.t0 = now_ns();
    r.sh->phase = SP_GO;
    uv_timer_init(&r.loop, &r.sched);
    r.sched.data = &r;
    uv_timer_start(&r.sched, on_sched, 1, 1);
    run_until(&r, r.t0 + (uint64_t)(o->duration_s * 1e9), NULL);
    uv_timer_stop(&r.sched);

    /* drain: no more publishing or churn; everyone catches up */
    r.sh->phase = SP_DRAIN;
    run_until(&r, now_ns() + 10000000000ull, publishes_answered);
    run_until(&r, now_ns() + (uint64_t)(o->drain_s * 1e9), NULL);
    take_sample(&r);
    uv_timer_stop(&r.sample);
    rc = 0;
stop:
    r.sh->phase = SP_FINAL;
    pubset_close(r.ps);
    if (r.sample.loop)
        uv_close((uv_handle_t *)&r.sample, NULL);
    if (r.sched.loop)
        uv_close((uv_handle_t *)&r.sched, NULL);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    uv_loop_close(&r.loop);
out:
    r.sh->phase = SP_FINAL;
    uint64_t t_end = now_ns() + 30000000000ull;
    for (uint32_t k = 0; k < started; k++) {
        while (!__atomic_load_n(&r.sh->kids[k].done, __ATOMIC_ACQUIRE) && now_ns() < t_end &&
               waitpid(pids[k], NULL, WNOHANG) == 0)
            sleep_ms(10);
        kill(pids[k], SIGKILL);
        waitpid(pids[k], NULL, 0);
    }
    if (rc == 3) {
        free(pids);
        if (r.csv)
            fclose(r.csv);
        rep_finish(rep);
        return 3;
    }
    soak_kid_t t;
    sum_kids(r.sh, &t);
    hist_t *lat = calloc(LAT_N, sizeof(hist_t));
    for (uint32_t k = 0; k < started; k++)
        for (int j = 0; j < LAT_N; j++)
            hist_merge(&lat[j], &r.sh->kids[k].lat[j]);

    rep_section(rep, "subscribers");
    rep_u64(rep, "connections", "subscribers", o->subscribers, NULL);
    rep_u64(rep, "connects", "connections made", t.connects, NULL);
    rep_u64(rep, "resumes", "reconnections (resuming)", t.resumes, NULL);
    rep_u64(rep, "churned", "closed by the churn", t.churned, NULL);
    rep_u64(rep, "connect_fail", "connection attempts failed", t.connect_fail, NULL);
    for (int c = 0; c < CE_COUNT; c++)
        if (t.err[c]) {
            char key[48], label[64];
            snprintf(key, sizeof(key), "errors_%d", c);
            snprintf(label, sizeof(label), "  %s", ce_names[c]);
            rep_u64(rep, key, label, t.err[c], NULL);
        }
    if (t.last_status)
        rep_u64(rep, "last_http_status", "  last HTTP status refused", t.last_status, NULL);
    rep_u64(rep, "server_closes", "closed by herald (not slow)", t.server_closes, NULL);
    for (int j = 0; j < 4; j++)
        if (t.closes_tp[j]) {
            char key[32], label[48];
            snprintf(key, sizeof(key), "server_closes_%s", tp_names[j]);
            snprintf(label, sizeof(label), "  %s", tp_names[j]);
            rep_u64(rep, key, label, t.closes_tp[j], NULL);
        }
    rep_section(rep, "messages");
    rep_u64(rep, "published", "publishes acknowledged", r.pub_ok, NULL);
    rep_u64(rep, "refused", "publishes refused or unanswered", r.pub_err, NULL);
    rep_u64(rep, "delivered", "delivered (checked subscribers)", t.delivered, NULL);
    rep_u64(rep, "lost", "acknowledged and lost", t.lost, NULL);
    for (int j = 0; j < 4; j++)
        if (t.lost_tp[j]) {
            char key[32], label[48];
            snprintf(key, sizeof(key), "lost_%s", tp_names[j]);
            snprintf(label, sizeof(label), "  over %s", tp_names[j]);
            rep_u64(rep, key, label, t.lost_tp[j], NULL);
        }
    rep_u64(rep, "dup", "duplicated", t.dup, NULL);
    rep_u64(rep, "ooo", "out of order", t.ooo, NULL);
    rep_u64(rep, "bad", "unreadable", t.bad, NULL);
    rep_u64(rep, "gaps", "gap notices", t.gaps, NULL);
    rep_u64(rep, "refused_seen", "refused publishes delivered anyway", t.refused_seen, NULL);
    rep_latency(rep, "push", "live latency (ws, sse, long poll)", &lat[LAT_PUSH]);
    rep_latency(rep, "poll", "live latency (short poll)", &lat[LAT_POLL]);
    rep_section(rep, "slow consumers (hot channel; herald may cut them)");
    rep_u64(rep, "slow_delivered", "delivered", t.slow_delivered, NULL);
    rep_u64(rep, "cuts", "cut by herald", t.cuts, NULL);
    rep_u64(rep, "slow_lost", "missed (history moved on)", t.slow_lost, NULL);
    rep_u64(rep, "slow_gaps", "gap notices", t.slow_gaps, NULL);
    judge_leak(&r, rep);
    if (t.lost || t.dup || t.ooo)
        rep_warn(rep, 1, "acknowledged messages: %llu lost, %llu duplicated, %llu out of order",
                 (unsigned long long)t.lost, (unsigned long long)t.dup, (unsigned long long)t.ooo);
    if (t.bad)
        rep_warn(rep, 1, "%llu payloads could not be read", (unsigned long long)t.bad);
    if ((uint32_t)t.done < started)
        rep_warn(rep, 1, "%u client processes did not finish", started - (uint32_t)t.done);
    if (r.server_gone)
        rep_warn(rep, 1, "herald (pid %d) is gone", (int)o->server_pid);
    if (!r.pub_ok || !t.delivered)
        rep_warn(rep, 1, "nothing was published or delivered");
    write_outputs(&r, rep, &t);
    if (r.csv)
        fclose(r.csv);
    for (int j = 0; j < LAT_N; j++)
        free(r.last[j]);
    free(lat);
    free(r.rows);
    free(pids);
    return rep_finish(rep);
}
