/* SPDX-License-Identifier: MIT */
/*
 * idle.c: the idle scenario. Opens and holds N subscriptions that receive nothing, then reports
 * what they cost the server: memory (Pss of the server's process tree, after minus before,
 * divided by the connections held) and, separately, kernel socket memory from /proc/net/sockstat
 * (machine-wide, so it counts both ends of each loopback connection), plus the CPU the server
 * spends on them while idle (heartbeats, timers).
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int run_idle(opts_t *o)
{
    char title[256];
    snprintf(title, sizeof(title), "herald-bench idle: %s over %s, %u connections held for %.0f s",
             tg_names[o->tg.kind], tp_label(o), o->subscribers, o->hold_s);
    report_t *rep = rep_new(o, title);
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), o->channels);
    srv_sample_t a0, a1, a2;
    sockstat_t s0, s1, s2;
    srv_sample_opts(o, &a0);
    sockstat_read(&s0);
    pid_t *pids = calloc(sh->n_kids, sizeof(pid_t));
    uint32_t started = kids_spawn(o, sh, MODE_HOLD, pids);
    double wait_s = o->connect_timeout_s * 2 + o->subscribers / 1000.0;
    if (kids_wait_connected(o, sh, wait_s) != 0)
        rep_warn(rep, 1, "connections still opening after %.0f s", wait_s);
    progress_end(o);
    sleep_ms((uint32_t)(o->settle_s * 1000));
    srv_sample_opts(o, &a1);
    sockstat_read(&s1);
    uint64_t until = now_ns() + (uint64_t)(o->hold_s * 1e9);
    while (now_ns() < until) {
        kid_stats_t t;
        shared_sum(sh, &t);
        progress(o, "holding %llu connections, %.0f s left", (unsigned long long)t.ready,
                 (double)(until - now_ns()) / 1e9);
        sleep_ms(200);
    }
    progress_end(o);
    srv_sample_opts(o, &a2);
    sockstat_read(&s2);
    kid_stats_t t;
    hist_t *conn = calloc(1, sizeof(hist_t));
    kids_stop(o, sh, pids, started, &t, NULL, conn);
    uint64_t held = t.ready - t.disconnects;

    rep_section(rep, "connections");
    rep_u64(rep, "connections_planned", "connections planned", o->subscribers, NULL);
    rep_u64(rep, "connections_held", "connections held to the end", held, NULL);
    rep_u64(rep, "connect_failures", "connect failures", t.failed, NULL);
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
    if (t.failed)
        rep_warn(rep, 1, "%llu of %u connections failed", (unsigned long long)t.failed,
                 o->subscribers);
    if (t.disconnects)
        rep_warn(rep, 1, "%llu connections were closed while idle",
                 (unsigned long long)t.disconnects);
    rep_latency(rep, "connect", "subscribe time", conn);
    rep_section(rep, "server memory (Pss of the whole process tree)");
    if (a0.ok && a1.ok && a2.ok) {
        rep_f(rep, "server_rss_before_mib", "before connecting", (double)a0.rss / 1048576.0, 1,
              "MiB");
        rep_f(rep, "server_rss_after_mib", "with connections held", (double)a1.rss / 1048576.0, 1,
              "MiB");
        rep_f(rep, "server_rss_end_mib", "after the hold", (double)a2.rss / 1048576.0, 1, "MiB");
        double per = held ? ((double)a2.rss - (double)a0.rss) / (double)held : 0.0 / 0.0;
        rep_f(rep, "server_rss_per_conn_bytes", "user-space memory per connection", per, 0, "B");
        rep_f(rep, "server_idle_cpu_s", "server CPU during the hold", a2.cpu_s - a1.cpu_s, 3, "s");
        rep_f(rep, "server_connect_cpu_us", "server CPU per connection opened",
              held ? (a1.cpu_s - a0.cpu_s) * 1e6 / (double)held : 0.0 / 0.0, 1, "us");
    } else {
        rep_str(rep, "server_rss_per_conn_bytes", "user-space memory per connection",
                "n/a (no --server-pid)");
    }
    rep_section(rep, "kernel memory (machine-wide: client and server ends)");
    long page = sysconf(_SC_PAGESIZE);
    rep_u64(rep, "tcp_inuse_delta", "TCP sockets in use, added",
            (uint64_t)(s2.tcp_inuse > s0.tcp_inuse ? s2.tcp_inuse - s0.tcp_inuse : 0), NULL);
    rep_f(rep, "kernel_mem_mib", "TCP buffer memory, added",
          (double)(s2.tcp_mem_pages - s0.tcp_mem_pages) * page / 1048576.0, 2, "MiB");
    rep_f(rep, "kernel_mem_per_conn_bytes", "per connection (client + server end)",
          held ? (double)(s2.tcp_mem_pages - s0.tcp_mem_pages) * page / (double)held : 0.0 / 0.0, 0,
          "B");
    rep_f(rep, "kernel_slab_per_conn_bytes", "kernel slab added per connection (both ends)",
          held ? (double)(s1.slab_kb - s0.slab_kb) * 1024.0 / (double)held : 0.0 / 0.0, 0, "B");
    free(conn);
    free(pids);
    return rep_finish(rep);
}
