/* SPDX-License-Identifier: MIT */
/*
 * bench.h: the pieces herald-bench's scenarios share.
 *
 *   main.c      argv, --help, dispatch to a scenario
 *   hist.c      log-linear latency histogram (HdrHistogram style), mergeable across processes
 *   sysinfo.c   the server's CPU and memory from /proc (summed over its process tree), sockstat
 *   report.c    the result table, --json, warnings, the live progress line
 *   conn.c      one client TCP connection: source address, TLS over memory BIOs, writes
 *   sub.c       subscribers (ws, sse, long poll, poll, raw) and the client processes that run them
 *   h2sub.c     SSE subscribers as streams of HTTP/2 connections (nghttp2's client), --h2-streams
 *   pub.c       HTTP publishers scheduled by intended time
 *   fanout.c idle.c connect.c publish.c floor.c kick.c   one scenario each (fanout.c also runs
 * notify and chat: the same subscribers, with other defaults or publishing from the kids)
 *   soak.c soak_sub.c soak_out.c   the soak: its parent, its client processes (every transport,
 *               churn, resume, slow consumers) and its time series (CSV, JSON, SVG); soak.h
 *
 * Process layout: the parent publishes and measures; subscribers live in forked client processes
 * (at most --per-proc sockets each, so no process exceeds its open-file limit). Parent and
 * children share one anonymous MAP_SHARED region (shared_t): the parent writes the phase and the
 * per-channel count of acknowledged publishes, each child writes its own kid_stats_t. Every
 * field has exactly one writer, and readers tolerate a stale value, so no locks are needed; the
 * one exception is chat, where the members publish: the kids then add to the per-channel count
 * with an atomic add (a room's members may live in several kids).
 *
 *   parent:  spawn kids -> wait all ready -> settle -> GO (publish D s) -> drain -> STOP -> merge
 *   kid k:   connect its share (bounded concurrency) -> receive -> at STOP compute lost -> exit
 *            (chat: during GO the kid also publishes its members' share of the schedule)
 */
#ifndef HERALD_BENCH_H
#define HERALD_BENCH_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <uv.h>

#include "herald/common.h"
#include "herald/conf.h"   /* HD_KEY_MAX */
#include "herald/pubsub.h" /* HD_CHANNEL_MAX */

/* ---- histogram: values in nanoseconds, relative error under 0.4% ---- */

#define HIST_SUB_BITS 8
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_HALF     (HIST_SUB / 2)
#define HIST_BUCKETS  (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_HALF)

typedef struct hist_s {
    uint64_t count;
    uint64_t min, max;
    uint64_t counts[HIST_BUCKETS];
} hist_t;

void hist_record(hist_t *h, uint64_t v);
void hist_merge(hist_t *into, const hist_t *from);
/* The value at percentile p (0..100); 0 for an empty histogram. */
uint64_t hist_percentile(const hist_t *h, double p);
/* Calls cb(value, cumulative fraction) once per non-empty bucket, in increasing order. */
void hist_foreach(const hist_t *h, void (*cb)(uint64_t v, double frac, void *arg), void *arg);

/* ---- connect errors by cause ---- */

#define CE_MAP(X)                                                                                  \
    X(REFUSED, "refused")                                                                          \
    X(TIMEOUT, "timeout")                                                                          \
    X(RESET, "reset")                                                                              \
    X(CLOSED, "closed by server")                                                                  \
    X(PORTS, "no local port (EADDRNOTAVAIL)")                                                      \
    X(FILES, "out of file descriptors (EMFILE)")                                                   \
    X(HTTP, "HTTP status")                                                                         \
    X(HANDSHAKE, "bad handshake")                                                                  \
    X(TLS, "TLS")                                                                                  \
    X(OTHER, "other")

enum {
#define CE_ENUM(n, s) CE_##n,
    CE_MAP(CE_ENUM)
#undef CE_ENUM
        CE_COUNT
};
extern const char *const ce_names[CE_COUNT];
/* Maps a libuv error (negative) to a CE_* cause. */
int ce_from_uv(int err);

/* ---- what we talk to ---- */

enum { TP_WS = 0, TP_SSE, TP_LONGPOLL, TP_POLL, TP_RAW };
enum { TG_HERALD = 0, TG_NCHAN };
extern const char *const tp_names[];
extern const char *const tg_names[];

typedef struct target_s {
    int kind;                 /* TG_* */
    unsigned is_tls : 1;      /* wss:// or https:// */
    unsigned is_loopback : 1; /* spread sources over 127.x addresses */
    struct sockaddr_in addr;
    char host[160]; /* Host header (host:port) */
    char sni[128];
} target_t;

/* ---- options (one struct for every scenario; each validates what it uses) ---- */

#define MAX_TARGETS 4
#define MAX_PIDS    8

/* Scenarios, in main.c's table order. */
enum {
    SC_FANOUT = 0,
    SC_IDLE,
    SC_CONNECT,
    SC_PUBLISH,
    SC_FLOOR,
    SC_NOTIFY,
    SC_CHAT,
    SC_KICK,
    SC_SOAK
};

/* The soak's own options (soak.h describes the scenario). */
typedef struct soak_opts_s {
    double interval_s, warmup_s;
    uint32_t churn;    /* subscribers closed (and resumed) per second */
    uint32_t hot_subs; /* subscribers of the hot channel; half of its ws/sse ones read slowly */
    double hot_rate;   /* messages per second on the hot channel */
    uint32_t hot_size; /* payload bytes on the hot channel */
    double rss_tol_pct, rss_tol_mib;
    uint32_t fd_tol;
    char out[200]; /* PREFIX: PREFIX.csv, PREFIX.json, PREFIX.svg */
    int replot;    /* only draw PREFIX.svg again from PREFIX.json */
} soak_opts_t;

#define BENCH_TOKEN_MAX 4096 /* --token: bytes of a connection token */

typedef struct opts_s {
    const char *scenario;
    int sc;                    /* SC_* */
    target_t tg;               /* the first --url; every target has the same kind */
    target_t tgs[MAX_TARGETS]; /* every --url: nodes of one cluster (tgs[0] is tg) */
    uint32_t n_tgs;
    int transport;
    uint32_t subscribers, channels, publishers, pipeline;
    double rate;
    uint32_t size;
    double duration_s, drain_s, settle_s, hold_s, connect_timeout_s;
    uint32_t count, concurrency;
    double connect_rate;
    uint32_t per_proc, procs, src_addrs;
    uint32_t poll_interval_ms, lp_timeout_s;
    uint32_t batch_ms;
    uint32_t batch;      /* publish: messages per request (herald's POST /pub), 1 = POST /pub/CH */
    uint32_t h2_streams; /* sse over HTTP/2 (h2c): streams per connection; 0: HTTP/1.1 */
    pid_t server_pid;    /* the first --server-pid */
    pid_t server_pids[MAX_PIDS]; /* every --server-pid: nodes, and the Redis they share */
    uint32_t n_server_pids;
    int json, quiet, is_tty;
    char prefix[48];
    char auth[HD_KEY_MAX + 32]; /* "Authorization: Bearer KEY\r\n" (--key), or "" */
    /* "Authorization: Bearer TOKEN\r\n" (--token): a connection token every subscriber sends
     * with its handshake or request, or "" */
    char sub_auth[BENCH_TOKEN_MAX + 32];
    /* --tokens FILE: subscriber i sends tokens[i % n_tokens] instead (n_tokens 0: sub_auth) */
    char **tokens;
    uint32_t n_tokens;
    soak_opts_t soak;
    /* chat: typing (ephemeral publishes) per second per room, presence events asked by every
     * member, and members leaving and joining again per second (soak.churn) */
    double typing;
    int presence;
} opts_t;

/* The transport as titles name it ("sse", or sse on HTTP/2 with --h2-streams). */
const char *tp_label(const opts_t *o);
/* Channel name of channel index ch: "<prefix>-<ch>". */
int chan_name(const opts_t *o, uint32_t ch, char *out, size_t outlen);

/* ---- server measurements from /proc ---- */

typedef struct srv_sample_s {
    int ok;
    double cpu_s;    /* user+sys of the process and all its descendants */
    uint64_t rss;    /* bytes: sum of Pss (Rss where smaps_rollup is missing) over the tree */
    uint32_t nprocs; /* processes in the tree */
} srv_sample_t;

/* Samples pid's process tree. Returns 0, or -1 when pid is 0 or gone (out->ok = 0). */
int srv_sample(pid_t pid, srv_sample_t *out);
/* The sum over every --server-pid's tree (ok only when every one was sampled). */
int srv_sample_opts(const opts_t *o, srv_sample_t *out);
/* The target of node number i (i % the number of --url given). */
const target_t *target_of(const opts_t *o, uint32_t i);

typedef struct sockstat_s {
    long tcp_inuse, tcp_tw, tcp_alloc, tcp_mem_pages;
    long slab_kb; /* /proc/meminfo Slab: socket, inode and dentry structures live there */
} sockstat_t;
int sockstat_read(sockstat_t *out);
/* Open-file limit of this process. */
uint64_t nofile_limit(void);

/* ---- results ---- */

typedef struct report_s report_t;
report_t *rep_new(const opts_t *o, const char *title);
void rep_section(report_t *r, const char *label);
void rep_u64(report_t *r, const char *key, const char *label, uint64_t v, const char *unit);
void rep_f(report_t *r, const char *key, const char *label, double v, int decimals,
           const char *unit);
void rep_str(report_t *r, const char *key, const char *label, const char *v);
/* Latency percentiles of h (ns) as p50/p90/p99/p99.9/max in ms, under keys prefix_p50_us.. */
void rep_latency(report_t *r, const char *prefix, const char *label, const hist_t *h);
/* A warning printed loudly; is_failure makes the exit code 1. */
void rep_warn(report_t *r, int is_failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints the table (or JSON), frees r, returns the exit code (0, or 1 on failure). */
int rep_finish(report_t *r);
/* Writes the CDF points of h to the JSON output (for bench/compare's pictures). */
void rep_cdf(report_t *r, const char *key, const hist_t *h);

/* The live progress line (stderr, only on a terminal, never with --quiet). */
void progress(const opts_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void progress_end(const opts_t *o);

/* ---- client connections ---- */

typedef struct bconn_s bconn_t;
typedef struct bconn_ops_s {
    void (*on_connect)(bconn_t *c);                            /* TCP (and TLS) is up */
    void (*on_data)(bconn_t *c, const char *p, size_t n);      /* plaintext from the server */
    void (*on_closed)(bconn_t *c, int cause, int after_ready); /* memory may be reused now */
} bconn_ops_t;

struct bconn_s {
    uv_tcp_t tcp;
    uv_connect_t creq;
    const bconn_ops_t *ops;
    void *ssl; /* SSL *, NULL for plain TCP */
    uint32_t pending_writes;
    int cause; /* CE_* given to bconn_close, -1 for a clean close */
    unsigned is_open : 1;
    unsigned is_closing : 1;
    unsigned is_up : 1;
    unsigned is_ready : 1; /* set by the user: passed back to on_closed */
};

/* Opens a connection to tg from source address number src (127.1.x.y on loopback). Returns 0 or a
 * CE_* cause (the connection is then not open, and on_closed is not called). */
int bconn_connect(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                  const bconn_ops_t *ops);
/* The same with a receive buffer of rcvbuf bytes (SO_RCVBUF; 0: the kernel's default). */
int bconn_connect_rcvbuf(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                         const bconn_ops_t *ops, int rcvbuf);
/* The same offering one protocol by TLS ALPN ("h2"; NULL: none, and none on plain TCP). */
int bconn_connect_alpn(bconn_t *c, uv_loop_t *loop, const target_t *tg, uint32_t src,
                       const bconn_ops_t *ops, int rcvbuf, const char *alpn);
/* 1 when TLS agreed on proto by ALPN (after on_connect), else 0 (also on plain TCP). */
int bconn_alpn_is(const bconn_t *c, const char *proto);
/* Queues n bytes (copied when they cannot be written at once). */
void bconn_write(bconn_t *c, const char *p, size_t n);
/* Closes; on_closed(cause) runs from the close callback. cause -1: a clean close. */
void bconn_close(bconn_t *c, int cause);
uint64_t bconn_pending(const bconn_t *c);
/* Stops reading (a slow consumer: the server's queue grows) and starts again. */
void bconn_read_pause(bconn_t *c);
void bconn_read_resume(bconn_t *c);

/* ---- shared memory between the parent and its client processes ---- */

enum { PH_CONNECT = 0, PH_GO, PH_STOP };
enum { MODE_RECEIVE = 0, MODE_HOLD, MODE_CONNECT };

typedef struct kid_stats_s {
    uint64_t planned, attempted, connected, ready, late, failed, disconnects, reconnects;
    uint64_t delivered, unique, dup, ooo, bad, bytes;
    uint64_t expected, lost, extra;
    uint64_t published, pub_errors;  /* chat: client publishes acknowledged (nchan: sent), failed */
    uint64_t typing_sent, typing_ok; /* chat: ephemeral publishes sent, acknowledged */
    uint64_t events;                 /* chat: ephemeral messages, joins and leaves received */
    uint64_t churns;                 /* chat: members that left and joined again */
    uint64_t err[CE_COUNT];
    uint64_t last_http_status;
    uint64_t first_start_ns, last_ready_ns;
    uint64_t last_close_ns; /* kick: when the last connection ended after GO */
    int done;
    hist_t lat;  /* publish -> receipt */
    hist_t conn; /* connect start -> subscribed */
} kid_stats_t;

typedef struct shared_s {
    volatile int phase;
    volatile uint64_t go_ns;
    uint32_t n_kids, n_channels;
    uint16_t raw_port;              /* floor: where the bench's own server listens */
    volatile int floor_done;        /* floor: the bench's server has written everything */
    volatile uint64_t floor_writes; /* floor: write()/writev() calls */
    volatile uint64_t floor_stalls; /* floor: writes that found a full socket buffer */
    volatile uint64_t floor_accepted;
    volatile uint64_t *published; /* [n_channels]: acknowledged publishes per channel */
    kid_stats_t *kids;            /* [n_kids] */
} shared_t;

/* Maps the shared region for n_kids and n_channels (before any fork). Aborts on failure. */
shared_t *shared_new(uint32_t n_kids, uint32_t n_channels);
/* Sum of every kid's counters (not the histograms) into out. */
void shared_sum(const shared_t *sh, kid_stats_t *out);

/* Forks the client processes: kid k gets subscribers [first_k, first_k + count_k) of
 * o->subscribers. Returns the number started (pids filled); prints why when fewer. */
uint32_t kids_spawn(const opts_t *o, shared_t *sh, int mode, pid_t *pids);
/* Waits (with progress) until every kid has tried every connection or timeout_s passed.
 * Returns 0, or -1 on timeout. */
int kids_wait_connected(const opts_t *o, shared_t *sh, double timeout_s);
/* Sets PH_STOP, waits for every kid to finish and reaps them; merges histograms into tot. */
void kids_stop(const opts_t *o, shared_t *sh, pid_t *pids, uint32_t n, kid_stats_t *tot,
               hist_t *lat, hist_t *conn);
/* How many client processes o needs for `sockets` sockets (and the per-process share). */
uint32_t kids_needed(const opts_t *o, uint64_t sockets);

/* ---- payloads: "hb:<channel>:<seq>:<intended send ns>:" padded with 'x' to size ---- */

#define PAYLOAD_MIN 48
size_t payload_format(char *out, size_t size, uint32_t ch, uint64_t seq, uint64_t ns);
/* Finds and parses a payload inside p[0..n) (raw, or wrapped in JSON). Returns 0 or -1. */
int payload_parse(const char *p, size_t n, uint32_t *ch, uint64_t *seq, uint64_t *ns);

/* ---- publishers ---- */

typedef struct pubset_s pubset_t;
/* Opens o->publishers keep-alive connections, publisher i to node (i + i / N) % N. */
pubset_t *pubset_new(uv_loop_t *loop, const opts_t *o, shared_t *sh);
/* Connections up (after running the loop a little); returns how many are. */
uint32_t pubset_up(const pubset_t *ps);
/* Queues one publish of channel ch, sequence seq, intended at ns (schedules it by channel on one
 * publisher, so a channel's order is kept). */
void pubset_queue(pubset_t *ps, uint32_t ch, uint64_t seq, uint64_t ns);
/* With --batch: a full batch leaves at once; this sends a partial one from every idle
 * connection (nothing in flight), so batches grow while the server is busy. */
void pubset_flush(pubset_t *ps);
/* Publishes (messages) not yet answered. */
uint64_t pubset_outstanding(const pubset_t *ps);
void pubset_stats(const pubset_t *ps, uint64_t *ok, uint64_t *err, uint64_t *last_status,
                  hist_t **lat);
/* HTTP requests answered (with --batch, fewer than the messages). */
uint64_t pubset_requests(const pubset_t *ps);
void pubset_close(pubset_t *ps);
/* Calls cb once per message answered (status: the HTTP status, or 0 when the publisher gave
 * up on it), with the answer's body for a single publish (NULL for a batch item). */
typedef void (*pubset_answer_cb)(void *arg, uint32_t ch, uint64_t seq, int status, const char *body,
                                 size_t n);
void pubset_on_answer(pubset_t *ps, pubset_answer_cb cb, void *arg);
/* Single publishes (not --batch) to channel ch carry size-byte payloads instead of --size. */
void pubset_channel_size(pubset_t *ps, uint32_t ch, uint32_t size);

/* ---- scenarios ---- */

int run_fanout(opts_t *o);
int run_notify(opts_t *o);
int run_chat(opts_t *o);
int run_idle(opts_t *o);
int run_connect(opts_t *o);
int run_publish(opts_t *o);
int run_floor(opts_t *o);
int run_kick(opts_t *o);
int run_soak(opts_t *o);
/* A light webhook receiver for bench/webhook_bars.py, with its own arguments (hooksink.c). */
int run_hooksink(int argc, char **argv);
/* The fan-out core shared by fanout and floor: floor_pid is the bench's own server, or 0. */
int fanout_core(opts_t *o, pid_t floor_pid, shared_t *sh, const char *title);
/* Server CPU and memory rows: CPU between samples a and b, per `per` units of per_what. */
void report_server(report_t *rep, const srv_sample_t *a, const srv_sample_t *b, uint64_t per,
                   const char *per_what);

/* Monotonic nanoseconds (the same clock in every process). */
uint64_t now_ns(void);
void sleep_ms(uint32_t ms);

#endif
