/* SPDX-License-Identifier: MIT */
/*
 * floor.c: the kernel floor. The same fan-out shape as `fanout`, but the bench forks its own
 * minimal server: it listens on 127.0.0.1, learns each socket's channel from the first line the
 * client sends, and at the scheduled times writes every message straight to every subscribed
 * socket: one write() per message per socket, or with --batch-ms T, what fell due during T ms
 * in one writev() per socket. No parsing, framing, queueing or allocation: its CPU time per
 * delivery is what the kernel alone costs on this machine, the floor any server's figure can be
 * compared to. Its CPU is measured from /proc exactly like a real server's.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct fsock_s {
    int fd;
    uint32_t ch;
} fsock_t;

/* Writes all of iov (blocking on a full buffer, counted as a stall). Returns 0 or -1. */
static int write_all(shared_t *sh, int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        sh->floor_writes++;
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            sh->floor_stalls++;
            struct pollfd p = {fd, POLLOUT, 0};
            if (poll(&p, 1, 2000) <= 0)
                return -1;
            continue;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static void sleep_until(uint64_t ns)
{
    uint64_t now = now_ns();
    if (ns > now) {
        struct timespec ts = {(time_t)((ns - now) / 1000000000ull),
                              (long)((ns - now) % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static void floor_server(const opts_t *o, shared_t *sh, int lfd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_IGN);
    fsock_t *socks = calloc(o->subscribers + 1, sizeof(*socks));
    uint32_t n = 0;
    /* accept and identify until publishing starts */
    while (sh->phase == PH_CONNECT && n < o->subscribers) {
        struct pollfd p = {lfd, POLLIN, 0};
        if (poll(&p, 1, 10) <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        char line[32];
        size_t got = 0;
        while (got < sizeof(line) - 1) {
            struct pollfd q = {fd, POLLIN, 0};
            if (poll(&q, 1, 2000) <= 0)
                break;
            ssize_t r = read(fd, line + got, 1);
            if (r <= 0 || line[got] == '\n')
                break;
            got++;
        }
        line[got] = '\0';
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        socks[n].fd = fd;
        socks[n].ch = (uint32_t)strtoul(line, NULL, 10) % o->channels;
        n++;
        sh->floor_accepted = n;
    }
    while (sh->phase == PH_CONNECT)
        sleep_ms(1);
    /* group sockets by channel */
    uint32_t C = o->channels;
    uint32_t *start = calloc(C + 1, sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++)
        start[socks[i].ch + 1]++;
    for (uint32_t c = 0; c < C; c++)
        start[c + 1] += start[c];
    int *byc = malloc((n + 1) * sizeof(int));
    uint32_t *fill = calloc(C, sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++)
        byc[start[socks[i].ch] + fill[socks[i].ch]++] = socks[i].fd;

    uint64_t t0 = sh->go_ns, total = (uint64_t)(o->rate * o->duration_s + 0.5);
    uint64_t *seq = calloc(C, sizeof(uint64_t));
    size_t msz = o->size + 1;
    /* a batch holds at most what falls due in batch_ms on one channel */
    size_t maxb = o->batch_ms ? (size_t)(o->rate * o->batch_ms / 1000.0) + 2 : 1;
    char *buf = malloc(maxb * C * msz);
    uint32_t *cnt = calloc(C, sizeof(uint32_t));
    struct iovec *iov = malloc(maxb * sizeof(struct iovec));
    uint64_t k = 0;
    while (k < total && sh->phase != PH_STOP) {
        uint64_t due_ns = t0 + (uint64_t)((double)k * 1e9 / o->rate);
        if (o->batch_ms)
            due_ns = due_ns - (due_ns - t0) % ((uint64_t)o->batch_ms * 1000000ull) +
                     (uint64_t)o->batch_ms * 1000000ull;
        sleep_until(due_ns);
        uint64_t now = now_ns();
        uint64_t due = (uint64_t)((double)(now - t0) * o->rate / 1e9) + 1;
        if (due > total)
            due = total;
        memset(cnt, 0, C * sizeof(uint32_t));
        /* collect what is due, per channel, up to a batch each */
        uint64_t k0 = k;
        int full = 0;
        while (k < due && !full) {
            uint32_t ch = (uint32_t)(k % C);
            if (cnt[ch] == maxb) {
                full = 1;
                break;
            }
            char *m = buf + ((size_t)ch * maxb + cnt[ch]) * msz;
            payload_format(m, o->size, ch, ++seq[ch], t0 + (uint64_t)((double)k * 1e9 / o->rate));
            m[o->size] = '\n';
            cnt[ch]++;
            k++;
            if (!o->batch_ms)
                break; /* unbatched: one message at a time, in order */
        }
        (void)k0;
        for (uint32_t ch = 0; ch < C; ch++) {
            if (!cnt[ch])
                continue;
            for (uint32_t i = 0; i < cnt[ch]; i++)
                iov[i] = (struct iovec){buf + ((size_t)ch * maxb + i) * msz, msz};
            for (uint32_t s = start[ch]; s < start[ch + 1]; s++) {
                struct iovec tmp[maxb];
                memcpy(tmp, iov, cnt[ch] * sizeof(struct iovec));
                if (cnt[ch] == 1) {
                    sh->floor_writes++;
                    ssize_t w = write(byc[s], tmp[0].iov_base, tmp[0].iov_len);
                    if (w == (ssize_t)tmp[0].iov_len)
                        continue;
                    sh->floor_writes--;
                    if (w > 0) {
                        tmp[0].iov_base = (char *)tmp[0].iov_base + w;
                        tmp[0].iov_len -= (size_t)w;
                    }
                }
                write_all(sh, byc[s], tmp, (int)cnt[ch]);
            }
            sh->published[ch] += cnt[ch];
        }
    }
    sh->floor_done = 1;
    while (sh->phase != PH_STOP)
        sleep_ms(5);
    _exit(0);
}

int run_floor(opts_t *o)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001u);
    socklen_t sl = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 65535) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("herald-bench floor: listen on 127.0.0.1");
        return 3;
    }
    o->tg.addr = sa;
    o->tg.is_loopback = 1;
    o->tg.is_tls = 0;
    /* the subscribers connect to target_of(): tgs[], of which floor has one, this server */
    o->tgs[0] = o->tg;
    o->n_tgs = 1;
    o->transport = TP_RAW;
    shared_t *sh = shared_new(kids_needed(o, o->subscribers), o->channels);
    fflush(stdout);
    pid_t srv = fork();
    if (srv == 0)
        floor_server(o, sh, lfd);
    close(lfd);
    if (srv < 0) {
        perror("herald-bench floor: fork");
        return 3;
    }
    char title[256];
    snprintf(title, sizeof(title),
             "herald-bench floor: plain TCP from the bench's own server, %u subscribers on %u "
             "channel%s, %.0f msg/s x %u B for %.1f s, %s",
             o->subscribers, o->channels, o->channels == 1 ? "" : "s", o->rate, o->size,
             o->duration_s, o->batch_ms ? "batched writev per socket" : "one write per message");
    if (o->batch_ms) {
        char more[64];
        snprintf(more, sizeof(more), " every %u ms", o->batch_ms);
        strncat(title, more, sizeof(title) - strlen(title) - 1);
    }
    int rc = fanout_core(o, srv, sh, title);
    kill(srv, SIGKILL);
    waitpid(srv, NULL, 0);
    return rc;
}
