/* SPDX-License-Identifier: MIT */
/*
 * soak.h: what the soak's parent (soak.c), its client processes (soak_sub.c) and its output
 * (soak_out.c) share.
 *
 * The soak holds S subscribers for a long time over all four transports (subscriber i uses
 * transport i % 4: /ws/{channel} with herald.v1, SSE, long poll, short poll), churns them
 * (every second some close and come back, resuming from the last id they saw), publishes at a
 * steady rate, and checks that every subscriber received every acknowledged message of its
 * channel exactly once and in order, while it samples the server's memory, open files and CPU.
 *
 * Channels 0..C-1 carry the steady schedule (message g of the run is sequence g / C + 1 of
 * channel g % C); channel C is the hot channel (--hot-rate messages of --hot-size bytes), with
 * --hot-subs WebSocket and SSE subscribers: half of them slow consumers, half fast ones checked
 * like every other. Before anything connects, the parent publishes a
 * primer (sequence 0) on every channel; its id is every subscriber's first resume point, so a
 * subscriber's expected messages are exactly sequences 1.. of its channel, whichever
 * transport, however often it reconnects.
 *
 * Shared memory (one writer per field, as in bench.h): the parent writes the phase, the primer
 * ids, the highest sequence queued per channel and each message's answer (ack[ch][seq]); kid k
 * writes soak_kid_t k. A kid that sees sequence s after s' < s - 1 looks at the answers of the
 * sequences skipped: acknowledged is lost, refused is fine, not yet answered is checked again
 * later. At the end (after a drain without churn), sequences above the last one received that
 * were acknowledged are lost too.
 *
 *   parent: fork kids -> publish primers -> CONNECT (wait) -> GO (D s, sample every I s)
 *           -> DRAIN (no publishing, no churn, slow consumers read fast) -> FINAL -> verdict
 */
#ifndef HERALD_BENCH_SOAK_H
#define HERALD_BENCH_SOAK_H

#include "bench.h"

enum { SP_PRIME = 0, SP_CONNECT, SP_GO, SP_DRAIN, SP_FINAL };
enum { ACK_PENDING = 0, ACK_OK, ACK_FAILED };
enum { LAT_PUSH = 0, LAT_POLL, LAT_N };

#define SOAK_ID_MAX 48

typedef struct soak_kid_s {
    /* every field up to `live` is a counter summed over kids */
    uint64_t connects, connect_fail, churned, server_closes, cuts, resumes;
    uint64_t delivered, dup, ooo, lost, gaps, bad, refused_seen;
    uint64_t slow_delivered, slow_lost, slow_gaps;
    uint64_t err[CE_COUNT];
    uint64_t lost_tp[4];      /* lost, by transport (TP_*) */
    uint64_t closes_tp[4];    /* server_closes, by transport */
    uint64_t live, slow_live; /* gauges */
    uint64_t open;            /* gauge: connections open on this side (live or connecting) */
    uint64_t last_status;
    int done;
    hist_t lat[LAT_N]; /* publish -> receipt of live messages: ws/sse/long poll, short poll */
} soak_kid_t;

typedef struct soak_shm_s {
    volatile int phase;
    uint32_t n_kids, n_channels; /* channels including the hot one */
    uint64_t seq_cap;            /* sequences per channel in ack */
    char (*primer)[SOAK_ID_MAX]; /* [n_channels] */
    volatile uint64_t *maxseq;   /* [n_channels]: highest sequence queued */
    volatile uint8_t *ack;       /* [n_channels * seq_cap]: ACK_* */
    soak_kid_t *kids;            /* [n_kids] */
} soak_shm_t;

/* Forks the client processes (they wait for SP_CONNECT). Returns how many started. */
uint32_t soak_kids_spawn(const opts_t *o, soak_shm_t *sh, pid_t *pids);
/* Is subscriber i on the hot channel, and does it read slowly? */
int soak_is_hot(const opts_t *o, uint32_t i);
int soak_is_slow(const opts_t *o, uint32_t i);

/* One row of the time series. */
typedef struct soak_row_s {
    double t_s;
    int phase;
    double rss_mib, cpu_pct;
    uint64_t fds, live, slow_live, client_open;
    uint64_t delivered, lost, dup, ooo, gaps, cuts, churned, connect_fail, server_closes;
    uint64_t pub_ok, pub_err;
    double p99_push_ms, p99_poll_ms;
} soak_row_t;

/* soak_out.c: the CSV header and rows, the JSON document, the SVG (RSS and fds over time). */
void soak_csv_header(FILE *f);
void soak_csv_row(FILE *f, const soak_row_t *r);
int soak_write_svg(const char *path, const char *title, const soak_row_t *rows, size_t n,
                   double warmup_s);
void soak_json_row(FILE *f, const soak_row_t *r, int first);
/* Draws PREFIX.svg again from PREFIX.json (--replot). Returns 0, or 3 when it cannot. */
int soak_replot(const char *prefix);

#endif
