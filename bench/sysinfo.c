/* SPDX-License-Identifier: MIT */
/*
 * sysinfo.c: what the bench reads from /proc about the server and the machine.
 *
 * Server CPU is user+sys time (/proc/PID/stat fields 14 and 15, every thread included) summed
 * over the process given with --server-pid and all its descendants (nginx's workers under its
 * master). Memory is the sum of Pss over that tree (/proc/PID/smaps_rollup), which counts memory
 * shared between processes (nginx's shared zone) once rather than once per worker; for a single
 * process it equals Rss. Kernel socket memory is machine-wide (/proc/net/sockstat), so it
 * includes the client's sockets too: the report says so.
 */
#include "bench.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    return uv_hrtime();
}

void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

uint64_t nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    return rl.rlim_cur;
}

/* Reads ppid, utime and stime of pid. Returns 0 or -1. */
static int read_stat(pid_t pid, pid_t *ppid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    char state;
    int pp;
    unsigned long long ut, st;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &pp, &ut,
               &st) != 4)
        return -1;
    *ppid = pp;
    *ticks = ut + st;
    return 0;
}

static uint64_t read_mem(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        unsigned long long kb = 0;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "Pss: %llu kB", &kb) == 1)
                break;
        fclose(f);
        return (uint64_t)kb * 1024;
    }
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long size, res = 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

int srv_sample(pid_t root, srv_sample_t *out)
{
    memset(out, 0, sizeof(*out));
    if (root <= 0)
        return -1;
    pid_t pp;
    uint64_t ticks;
    if (read_stat(root, &pp, &ticks) != 0)
        return -1;
    /* one pass over /proc: remember every (pid, ppid, ticks), then walk down from root */
    size_t n = 0, cap = 1024;
    struct ent {
        pid_t pid, ppid;
        uint64_t ticks;
        int in;
    } *v = malloc(cap * sizeof(*v));
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (read_stat((pid_t)pid, &pp, &ticks) != 0)
            continue;
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(*v));
        }
        v[n++] = (struct ent){(pid_t)pid, pp, ticks, pid == root};
    }
    if (d)
        closedir(d);
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].in)
                continue;
            for (size_t j = 0; j < n; j++)
                if (v[j].in && v[j].pid == v[i].ppid) {
                    v[i].in = 1;
                    changed = 1;
                    break;
                }
        }
    }
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].in) {
            total += v[i].ticks;
            out->rss += read_mem(v[i].pid);
            out->nprocs++;
        }
    free(v);
    out->cpu_s = (double)total / (double)sysconf(_SC_CLK_TCK);
    out->ok = out->nprocs > 0;
    return out->ok ? 0 : -1;
}

int sockstat_read(sockstat_t *out)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f)
        return -1;
    char line[256];
    int rc = -1;
    while (fgets(line, sizeof(line), f)) {
        long inuse, orphan, tw, alloc, mem;
        if (sscanf(line, "TCP: inuse %ld orphan %ld tw %ld alloc %ld mem %ld", &inuse, &orphan, &tw,
                   &alloc, &mem) == 5) {
            out->tcp_inuse = inuse;
            out->tcp_tw = tw;
            out->tcp_alloc = alloc;
            out->tcp_mem_pages = mem;
            rc = 0;
        }
    }
    fclose(f);
    f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Slab: %ld kB", &out->slab_kb) == 1)
            break;
    if (f)
        fclose(f);
    return rc;
}

int srv_sample_opts(const opts_t *o, srv_sample_t *out)
{
    memset(out, 0, sizeof(*out));
    if (o->n_server_pids == 0)
        return -1;
    int ok = 1;
    for (uint32_t i = 0; i < o->n_server_pids; i++) {
        srv_sample_t one;
        if (srv_sample(o->server_pids[i], &one) != 0)
            ok = 0;
        out->cpu_s += one.cpu_s;
        out->rss += one.rss;
        out->nprocs += one.nprocs;
    }
    out->ok = ok;
    return ok ? 0 : -1;
}

const target_t *target_of(const opts_t *o, uint32_t i)
{
    return &o->tgs[i % o->n_tgs];
}
