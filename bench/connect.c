/* SPDX-License-Identifier: MIT */
/*
 * connect.c: the connect scenario. Opens N subscriptions (TCP connect, TLS when asked, the
 * transport's handshake, the subscription itself: a 101 for WebSocket, the response head for
 * SSE, the first answer for long poll) with at most --concurrency in progress and, with
 * --connect-rate, at most that many started per second. Reports the rate achieved, the time
 * each took, and the server CPU each cost (server CPU over the run / subscriptions made).
 * Connections are held until the end, so the figure does not include closing them. With
 * --token every subscription carries a connection token (Authorization: Bearer): the cost of
 * verifying it at connect, against the same run without; with --tokens FILE subscription i
 * carries token i of the file (mod its length): as many tokens as subscriptions make every
 * connect a token's first use, one token makes every connect after the first a reuse (herald's
 * verified-token cache, docs/auth.md).
 */
#include "bench.h"

#include <stdlib.h>

int run_connect(opts_t *o)
{
    o->subscribers = o->count;
    char title[256], tokens[64] = "";
    if (o->n_tokens)
        snprintf(tokens, sizeof(tokens), ", with %u distinct tokens (--tokens)", o->n_tokens);
    else if (o->sub_auth[0])
        snprintf(tokens, sizeof(tokens), ", with one token (--token)");
    snprintf(title, sizeof(title),
             "herald-bench connect: %s over %s, %u subscriptions, %u at a time%s%s",
             tg_names[o->tg.kind], tp_names[o->transport], o->count, o->concurrency,
             o->connect_rate > 0 ? ", rate-limited" : "", tokens);
    report_t *rep = rep_new(o, title);
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), o->channels);
    srv_sample_t a, b;
    srv_sample_opts(o, &a);
    pid_t *pids = calloc(sh->n_kids, sizeof(pid_t));
    uint32_t started = kids_spawn(o, sh, MODE_CONNECT, pids);
    double wait_s = o->connect_timeout_s * 2 + o->subscribers / 200.0;
    if (kids_wait_connected(o, sh, wait_s) != 0)
        rep_warn(rep, 1, "connections still opening after %.0f s", wait_s);
    progress_end(o);
    srv_sample_opts(o, &b);
    kid_stats_t t;
    hist_t *conn = calloc(1, sizeof(hist_t));
    kids_stop(o, sh, pids, started, &t, NULL, conn);

    rep_section(rep, "subscriptions");
    rep_u64(rep, "planned", "planned", o->count, NULL);
    rep_u64(rep, "subscribed", "subscribed", t.ready, NULL);
    rep_u64(rep, "failed", "failed", t.failed, NULL);
    for (int c = 0; c < CE_COUNT; c++) {
        if (!t.err[c])
            continue;
        char key[48], label[64];
        snprintf(key, sizeof(key), "errors_%d", c);
        snprintf(label, sizeof(label), "  %s", ce_names[c]);
        rep_u64(rep, key, label, t.err[c], NULL);
        if (c == CE_PORTS || c == CE_FILES)
            rep_warn(rep, 1, "a machine limit stopped this scenario: %s", ce_names[c]);
    }
    if (t.last_http_status)
        rep_u64(rep, "last_http_status", "  last HTTP status", t.last_http_status, NULL);
    if (t.failed)
        rep_warn(rep, 1, "%llu of %u subscriptions failed", (unsigned long long)t.failed, o->count);
    double secs = t.last_ready_ns > t.first_start_ns
                      ? (double)(t.last_ready_ns - t.first_start_ns) / 1e9
                      : 0.0;
    rep_f(rep, "elapsed_s", "elapsed", secs, 3, "s");
    rep_f(rep, "rate", "subscriptions per second", secs > 0 ? (double)t.ready / secs : 0, 0, "/s");
    rep_section(rep, "time to subscribe (connect start -> subscribed)");
    rep_latency(rep, "connect", "subscribe", conn);
    rep_section(rep, "server");
    report_server(rep, &a, &b, t.ready, "connection");
    rep_cdf(rep, "connect_cdf", conn);
    free(conn);
    free(pids);
    return rep_finish(rep);
}
