/* SPDX-License-Identifier: MIT */
/*
 * kick.c: the kick scenario (issue 10's bar: "10,000 live connections are revoked by one
 * sub-less channel disconnect in under 1 s"). Opens and holds S subscribers (default 10,000) of
 * one transport (ws or sse) on one channel, then sends one POST /admin/disconnect
 * {"channel": C} to the first node and measures, in every client process, how long after the
 * request each connection ended (a WebSocket close frame, the end of an SSE stream). Reports
 * when the answer came, when the last connection ended, the percentiles over all of them, and
 * (with --server-pid) the server CPU the order cost, which other load on the machine does not
 * change the way it changes the wall-clock times.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One blocking POST on its own connection; the status, or -1 (why in err). */
static int post(const opts_t *o, const char *path, const char *body, char *err, size_t errlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&o->tg.addr, sizeof(o->tg.addr)) != 0) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     path, o->tg.host, o->auth, strlen(body), body);
    if (write(fd, req, (size_t)n) != n) {
        snprintf(err, errlen, "write: %s", strerror(errno));
        close(fd);
        return -1;
    }
    char resp[2048];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(resp) - 1 && (r = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) {
        snprintf(err, errlen, "no HTTP answer");
        return -1;
    }
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(err, errlen, "%s", b ? b + 4 : "");
    return status;
}

int run_kick(opts_t *o)
{
    char title[256], channel[HD_CHANNEL_MAX + 1], body[256], answer[512];
    snprintf(title, sizeof(title),
             "herald-bench kick: %u %s subscribers on one channel, one POST /admin/disconnect",
             o->subscribers, tp_names[o->transport]);
    report_t *rep = rep_new(o, title);
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), 1);
    pid_t *pids = calloc(sh->n_kids, sizeof(pid_t));
    uint32_t started = kids_spawn(o, sh, MODE_HOLD, pids);
    double wait_s = o->connect_timeout_s * 2 + o->subscribers / 1000.0;
    if (kids_wait_connected(o, sh, wait_s) != 0)
        rep_warn(rep, 1, "connections still opening after %.0f s", wait_s);
    progress_end(o);
    sleep_ms((uint32_t)(o->settle_s * 1000));
    kid_stats_t t;
    shared_sum(sh, &t);
    uint64_t held = t.ready - t.disconnects;

    chan_name(o, 0, channel, sizeof(channel));
    snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", channel);
    srv_sample_t a0, a1;
    srv_sample_opts(o, &a0);
    sh->go_ns = now_ns();
    __atomic_store_n(&sh->phase, PH_GO, __ATOMIC_RELEASE);
    uint64_t t0 = sh->go_ns;
    int status = post(o, "/admin/disconnect", body, answer, sizeof(answer));
    uint64_t t_answer = now_ns();
    if (status != 200)
        rep_warn(rep, 1, "POST /admin/disconnect: %d %s", status, answer);
    /* Wait until every held connection ended (or 10 s). */
    uint64_t until = t0 + 10000000000ull;
    for (;;) {
        shared_sum(sh, &t);
        progress(o, "%llu of %llu connections ended", (unsigned long long)t.disconnects,
                 (unsigned long long)t.ready);
        if (t.disconnects >= t.ready || now_ns() > until)
            break;
        sleep_ms(1);
    }
    progress_end(o);
    srv_sample_opts(o, &a1);
    uint64_t last = t.last_close_ns;
    hist_t *lat = calloc(1, sizeof(hist_t));
    kid_stats_t end;
    kids_stop(o, sh, pids, started, &end, lat, NULL);

    rep_section(rep, "connections");
    rep_u64(rep, "connections_planned", "connections planned", o->subscribers, NULL);
    rep_u64(rep, "connections_held", "connections held when the order was sent", held, NULL);
    rep_u64(rep, "connections_ended", "connections ended after it", lat->count, NULL);
    if (t.failed)
        rep_warn(rep, 1, "%llu of %u connections failed", (unsigned long long)t.failed,
                 o->subscribers);
    if (lat->count < held)
        rep_warn(rep, 1, "%llu connections were still open 10 s after the order",
                 (unsigned long long)(held - lat->count));
    rep_section(rep, "the order");
    rep_f(rep, "answer_ms", "POST /admin/disconnect answered after", (double)(t_answer - t0) / 1e6,
          1, "ms");
    rep_f(rep, "all_ended_ms", "every connection ended after",
          last > t0 ? (double)(last - t0) / 1e6 : 0.0 / 0.0, 1, "ms");
    rep_latency(rep, "ended", "time to each connection's end", lat);
    if (a0.ok && a1.ok) {
        /* What the order cost the server, whatever else ran on the machine meanwhile. */
        rep_section(rep, "server");
        rep_f(rep, "server_cpu_ms", "server CPU from the order to the last end",
              (a1.cpu_s - a0.cpu_s) * 1000.0, 1, "ms");
        rep_f(rep, "server_cpu_per_conn_us", "  per connection ended",
              lat->count ? (a1.cpu_s - a0.cpu_s) * 1e6 / (double)lat->count : 0.0 / 0.0, 1, "us");
    }
    free(lat);
    free(pids);
    return rep_finish(rep);
}
