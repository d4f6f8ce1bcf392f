/* SPDX-License-Identifier: MIT */
/*
 * main.c: herald-bench's command line: the scenario word, options, defaults per scenario,
 * validation (a bad argument is a clear message and exit 2), --help, then the scenario.
 * Exit codes: 0 ok, 1 the run completed but something failed (lost messages, connect errors),
 * 2 bad arguments, 3 the run could not start.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const tp_names[] = {"ws", "sse", "longpoll", "poll", "raw"};
const char *const tg_names[] = {"herald", "nchan"};

static const char usage[] =
    "usage: herald-bench SCENARIO [options]\n"
    "\n"
    "A load generator for herald (and nchan): every payload carries its sequence number and the\n"
    "time it was meant to be sent, so receivers measure publish-to-receipt latency without\n"
    "coordinated omission and count lost, duplicated and out-of-order deliveries.\n"
    "\n"
    "Scenarios:\n"
    "  hooksink  a light webhook receiver (204 to everything, counts requests and distinct\n"
    "            webhook-id values) for bench/webhook_bars.py; see bench/hooksink.c.\n"
    "  fanout    S subscribers over one transport, spread over C channels; P publishers send R\n"
    "            msg/s in total of N-byte payloads for D seconds, then wait up to --drain for\n"
    "            the rest. Reports delivered/lost/duplicated/out-of-order, latency percentiles,\n"
    "            server CPU per delivered message.\n"
    "  idle      open and hold S connections (--connections), then report the server's memory\n"
    "            per connection, and kernel socket memory separately.\n"
    "  connect   open --count subscriptions (connect + handshake + subscribe), --concurrency at\n"
    "            a time; reports the rate, time to subscribe, server CPU per connection.\n"
    "  publish   the publish API alone: P connections publishing for D seconds, at --rate or\n"
    "            (rate 0) as fast as answered; throughput, latency, server CPU per publish.\n"
    "            With --batch N (herald), N messages per request: a JSON array to POST /pub.\n"
    "  floor     the fanout shape written by the bench's own minimal server straight to plain\n"
    "            TCP sockets, one write() per message per socket (or with --batch-ms, one\n"
    "            writev() per socket per batch): this machine's kernel cost per delivery.\n"
    "  notify    a notification feed: S subscribers (default 10,000), each on its own channel;\n"
    "            P publishers (default 32) send R msg/s in total (default 2,000) over HTTP\n"
    "            keep-alive for D seconds (default 20s), each message to the next channel.\n"
    "            The fanout report: every message delivered (lost/duplicated/out of order),\n"
    "            server CPU per delivery (= per publish), publish-to-receipt p50/p99.\n"
    "  chat      chat rooms: C rooms (default 500) of S/C members (S default 5,000: rooms of\n"
    "            10), every member one WebSocket that subscribes to its room and publishes\n"
    "            to it (herald: GET /ws, the JSON protocol, needs ws_client_publish on;\n"
    "            nchan: an nchan_pubsub location, GET /chat?id=ROOM). R msg/s in total (default\n"
    "            1,000: 2 per room), each room's messages sent by its members in turn. Every\n"
    "            member gets every message of its room, its own included. Reports the fanout\n"
    "            figures: deliveries, loss, server CPU per delivery, latency percentiles.\n"
    "            --typing T: T ephemeral publishes per second per room too (typing\n"
    "            indicators, sent by the members in turn); --presence: every member asks join\n"
    "            and leave events (the rooms need channel_rule ... presence=on); --churn N: N\n"
    "            members a second leave their room and join it again (unsubscribe, subscribe),\n"
    "            reported as server CPU per join or leave (--rate 0: churn alone).\n"
    "  kick      S subscribers (default 10,000; --transport ws or sse) held on one channel,\n"
    "            then one POST /admin/disconnect {\"channel\":..} (--key: the admin key):\n"
    "            when the answer came, when the last connection ended, and the percentiles\n"
    "            of each connection's end after the order (issue 10: all under 1 s).\n"
    "  soak      hold S connections (default 15,000) for D (default 10m) over all four\n"
    "            transports (subscriber i: ws, sse, long poll, poll by i % 4), R msg/s over C\n"
    "            channels (defaults 100, 500) plus a hot channel with slow consumers, --churn\n"
    "            subscribers closed per second, each resuming from its last id; checks that\n"
    "            every acknowledged message reached every subscriber once, in order, and that\n"
    "            herald's RSS and open files stay flat after --warmup. Needs --server-pid. A row\n"
    "            every --interval (RSS, fds, CPU, live, delivered, lost/dup, p99); with --out P,\n"
    "            P.csv, P.json and P.svg. bench/soak.sh runs herald (and Redis) for it.\n"
    "\n"
    "Target:\n"
    "  --url URL            http://, https://, ws:// or wss:// host:port (default\n"
    "                       http://127.0.0.1:8080; ws/http are equivalent, wss/https use TLS\n"
    "                       without verifying the certificate). Give it up to 4 times for the\n"
    "                       nodes of one cluster (herald nodes sharing a Redis, nginx+nchan\n"
    "                       with nchan_use_redis): subscriber i uses node i % N, publisher i\n"
    "                       node (i + i / N) % N, so subscribers are spread over every node,\n"
    "                       every node takes publishes, and in notify half the messages are\n"
    "                       published on a node other than their subscriber's (fanout, notify,\n"
    "                       chat, publish)\n"
    "  --target T           herald (POST /pub/CH, /ws/CH, /sse/CH, /lp/CH, /poll/CH) or nchan\n"
    "                       (POST /pub?id=CH, /sub?id=CH for ws, sse and long poll)\n"
    "  --key K              herald's publish_key, sent as Authorization: Bearer K by publishers\n"
    "                       and chat members (a node publishes without a key for local clients\n"
    "                       only); kick: the admin_key of POST /admin/disconnect\n"
    "  --token T            a connection token (JWT, docs/auth.md) every subscriber sends as\n"
    "                       Authorization: Bearer T with its handshake or request (herald:\n"
    "                       ws, sse, longpoll, poll; e.g. connect with and without it)\n"
    "  --tokens FILE        connection tokens, one a line: subscriber i sends token i mod N\n"
    "                       (as many tokens as --count: every connect a first use; one token:\n"
    "                       every connect a reuse, as --token)\n"
    "  --server-pid PID     measure this process and its descendants (CPU user+sys, memory);\n"
    "                       PID,PID,... or repeated (up to 8): the sum over every node and the\n"
    "                       Redis they share\n"
    "\n"
    "Shape:\n"
    "  -t, --transport T    ws | sse | longpoll | poll                     (default ws)\n"
    "      --h2-streams K   sse over HTTP/2: K subscribers' streams a connection (fanout,\n"
    "                       notify, idle; herald); http:// h2c (prior knowledge), https://\n"
    "                       TLS with ALPN h2                           (default: HTTP/1.1)\n"
    "  -s, --subscribers S  subscribers (fanout, floor, idle: --connections) (default 1000;\n"
    "                       notify 10000; chat 5000 members)\n"
    "  -c, --channels C     channels; subscriber i listens on channel i % C   (default 1; notify\n"
    "                       S: one each; chat 500 rooms)\n"
    "  -p, --publishers P   publishing connections                        (default 1; publish 4;\n"
    "                       notify 32; chat: the members publish)\n"
    "      --pipeline K     requests in flight per publishing connection  (default 1)\n"
    "  -r, --rate R         messages per second in total                   (default 100; publish "
    "0;\n"
    "                       notify 2000; chat 1000)\n"
    "  -n, --size N         payload bytes, at least 48                     (default 64)\n"
    "  -d, --duration D     publishing time: 20, 20s, 500ms, 2m            (default 10s; publish "
    "5s;\n"
    "                       notify and chat 20s)\n"
    "      --drain T        wait for deliveries after publishing           (default 5s)\n"
    "      --settle T       pause between subscribing and publishing/measuring (default 1s)\n"
    "      --hold T         idle: how long to hold the connections         (default 5s)\n"
    "      --count N        connect: subscriptions to open                 (default 1000)\n"
    "      --concurrency K  connections being opened at once, per process  (default 256; connect "
    "64)\n"
    "      --connect-rate R at most R connections started per second       (default unlimited)\n"
    "      --connect-timeout T  give up on a connection after T           (default 10s)\n"
    "      --poll-interval T    poll: time between polls                   (default 100ms)\n"
    "      --lp-timeout S       long poll: timeout=S asked of herald       (default 30)\n"
    "      --batch-ms T     floor: write what fell due in T ms with one writev per socket\n"
    "      --batch N        publish: N messages per request, a JSON array to herald's POST /pub\n"
    "                       (nchan has no batch publish)                   (default 1: POST "
    "/pub/CH)\n"
    "\n"
    "Soak:\n"
    "      --interval T     time between samples                           (default 10s)\n"
    "      --warmup T       publishing time before the leak check's baseline (default D/5,\n"
    "                       at most 2m)\n"
    "      --churn N        subscribers closed per second, back 0.1-1 s later from their last\n"
    "                       id                                             (default 100;\n"
    "                       chat: members leaving and joining again a second, default 0)\n"
    "      --hot-subs N     ws and sse subscribers of the hot channel (among subscribers\n"
    "                       0..2N-1); half of them are slow consumers: a 4 KiB receive buffer,\n"
    "                       5 s of reading, then 30 s of none, again and again (default 40)\n"
    "      --hot-rate R     messages per second on the hot channel         (default 50)\n"
    "      --hot-size N     payload bytes on the hot channel               (default 4096)\n"
    "      --rss-tolerance P    RSS growth allowed after the warm-up, percent (default 10)\n"
    "      --rss-tolerance-mib M  ... or M MiB, whichever is larger        (default 16)\n"
    "      --fd-tolerance N     open-file growth allowed after the warm-up  (default 200)\n"
    "      --out PREFIX     write PREFIX.csv (as it goes), PREFIX.json, PREFIX.svg\n"
    "      --replot         with --out PREFIX: only draw PREFIX.svg again from PREFIX.json\n"
    "\n"
    "Machine limits:\n"
    "      --per-proc N     sockets per client process (the open-file limit is per process;\n"
    "                       more subscribers fork more processes)        (default 15000)\n"
    "      --procs K        at least K client processes                    (default as needed)\n"
    "      --source-addrs N spread client sockets over N source addresses 127.1.x.y, about\n"
    "                       28k ports each                                 (default as needed)\n"
    "\n"
    "Output:\n"
    "      --json           one JSON object on stdout instead of the table\n"
    "  -q, --quiet          no progress line\n"
    "      --prefix P       channel name prefix (default: unique per run)\n"
    "  -h, --help           this text\n"
    "\n"
    "Exit: 0 ok; 1 the run finished but lost messages or had errors (printed with !!!);\n"
    "2 bad arguments; 3 the run could not start.\n";

static _Noreturn void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void load_tokens(opts_t *o, const char *path);
static _Noreturn void bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "herald-bench: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'herald-bench --help'.\n");
    exit(2);
}

/* --tokens FILE: one token a line (blank lines skipped), each 1..BENCH_TOKEN_MAX printable
 * characters without spaces; at most 1,000,000. */
static void load_tokens(opts_t *o, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, n_cap = 0;
    ssize_t len;

    if (!f)
        bad("--tokens %s: %s", path, strerror(errno));
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        for (ssize_t i = 0; i < len; i++) {
            if (line[i] <= ' ' || line[i] >= 0x7f)
                bad("--tokens %s: line %u: a token is printable ASCII without spaces", path,
                    o->n_tokens + 1);
        }
        if (len > BENCH_TOKEN_MAX || o->n_tokens >= 1000000)
            bad("--tokens %s: tokens of at most %d bytes, at most 1000000 of them", path,
                BENCH_TOKEN_MAX);
        if (o->n_tokens == n_cap) {
            n_cap = n_cap ? n_cap * 2 : 1024;
            o->tokens = realloc(o->tokens, n_cap * sizeof(*o->tokens));
            if (!o->tokens)
                bad("--tokens %s: out of memory", path);
        }
        o->tokens[o->n_tokens++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (o->n_tokens == 0)
        bad("--tokens %s: no token in the file", path);
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || isnan(v) || v < min || v > max)
        bad("%s: expected a number in %g..%g, got \"%s\"", opt, min, max, s);
    return v;
}

static uint32_t parse_u32(const char *opt, const char *s, uint32_t min, uint32_t max)
{
    double v = parse_num(opt, s, min, max);
    if (v != floor(v))
        bad("%s: expected a whole number, got \"%s\"", opt, s);
    return (uint32_t)v;
}

/* "20", "20s", "500ms", "2m" -> seconds. */
static double parse_dur(const char *opt, const char *s, double max_s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || isnan(v) || v < 0)
        bad("%s: expected a duration like 20s or 500ms, got \"%s\"", opt, s);
    if (strcmp(end, "ms") == 0)
        v /= 1000;
    else if (strcmp(end, "m") == 0)
        v *= 60;
    else if (*end && strcmp(end, "s") != 0)
        bad("%s: expected a duration like 20s or 500ms, got \"%s\"", opt, s);
    if (v > max_s)
        bad("%s: at most %.0f s, got \"%s\"", opt, max_s, s);
    return v;
}

static void parse_url(target_t *tg, const char *url)
{
    const char *p = url;
    int def_port;
    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "ws://", 5) == 0) {
        tg->is_tls = 0;
        def_port = 80;
    } else if (strncmp(p, "https://", 8) == 0 || strncmp(p, "wss://", 6) == 0) {
        tg->is_tls = 1;
        def_port = 443;
    } else {
        bad("--url: expected http://, https://, ws:// or wss://, got \"%s\"", url);
    }
    p = strstr(p, "://") + 3;
    char host[128];
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof(host))
        bad("--url: no host in \"%s\"", url);
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    int port = def_port;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535)
            bad("--url: bad port in \"%s\"", url);
        port = (int)v;
        p = end;
    }
    if (*p && strcmp(p, "/") != 0)
        bad("--url: give only scheme://host:port (the target profile builds the paths), got "
            "\"%s\"",
            url);
    memset(&tg->addr, 0, sizeof(tg->addr));
    tg->addr.sin_family = AF_INET;
    tg->addr.sin_port = htons((uint16_t)port);
    const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, ip, &tg->addr.sin_addr) != 1)
        bad("--url: the host must be an IPv4 address or localhost, got \"%s\"", host);
    tg->is_loopback = (ntohl(tg->addr.sin_addr.s_addr) >> 24) == 127;
    snprintf(tg->host, sizeof(tg->host), "%s:%d", host, port);
    snprintf(tg->sni, sizeof(tg->sni), "%s", host);
}

static int lookup(const char *opt, const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    if (strcmp(opt, "--transport") == 0 && strcmp(s, "lp") == 0)
        return TP_LONGPOLL;
    bad("%s: unknown value \"%s\"", opt, s);
}

enum {
    O_URL = 256,
    O_TARGET,
    O_PIPELINE,
    O_DRAIN,
    O_SETTLE,
    O_HOLD,
    O_COUNT,
    O_CONC,
    O_CRATE,
    O_CTIMEOUT,
    O_PERPROC,
    O_PROCS,
    O_SRC,
    O_POLLINT,
    O_LPTIMEOUT,
    O_BATCH,
    O_BATCHN,
    O_PID,
    O_JSON,
    O_PREFIX,
    O_KEY,
    O_TOKEN,
    O_TOKENS,
    O_INTERVAL,
    O_WARMUP,
    O_CHURN,
    O_HOTSUBS,
    O_HOTRATE,
    O_HOTSIZE,
    O_RSSTOL,
    O_RSSTOLMIB,
    O_FDTOL,
    O_OUT,
    O_REPLOT,
    O_H2STREAMS,
    O_TYPING,
    O_PRESENCE,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, O_URL},
    {"target", required_argument, NULL, O_TARGET},
    {"transport", required_argument, NULL, 't'},
    {"subscribers", required_argument, NULL, 's'},
    {"connections", required_argument, NULL, 's'},
    {"channels", required_argument, NULL, 'c'},
    {"publishers", required_argument, NULL, 'p'},
    {"pipeline", required_argument, NULL, O_PIPELINE},
    {"rate", required_argument, NULL, 'r'},
    {"size", required_argument, NULL, 'n'},
    {"duration", required_argument, NULL, 'd'},
    {"drain", required_argument, NULL, O_DRAIN},
    {"settle", required_argument, NULL, O_SETTLE},
    {"hold", required_argument, NULL, O_HOLD},
    {"count", required_argument, NULL, O_COUNT},
    {"concurrency", required_argument, NULL, O_CONC},
    {"connect-rate", required_argument, NULL, O_CRATE},
    {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
    {"per-proc", required_argument, NULL, O_PERPROC},
    {"procs", required_argument, NULL, O_PROCS},
    {"source-addrs", required_argument, NULL, O_SRC},
    {"poll-interval", required_argument, NULL, O_POLLINT},
    {"lp-timeout", required_argument, NULL, O_LPTIMEOUT},
    {"batch-ms", required_argument, NULL, O_BATCH},
    {"batch", required_argument, NULL, O_BATCHN},
    {"server-pid", required_argument, NULL, O_PID},
    {"json", no_argument, NULL, O_JSON},
    {"quiet", no_argument, NULL, 'q'},
    {"prefix", required_argument, NULL, O_PREFIX},
    {"key", required_argument, NULL, O_KEY},
    {"token", required_argument, NULL, O_TOKEN},
    {"tokens", required_argument, NULL, O_TOKENS},
    {"interval", required_argument, NULL, O_INTERVAL},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"churn", required_argument, NULL, O_CHURN},
    {"typing", required_argument, NULL, O_TYPING},
    {"presence", no_argument, NULL, O_PRESENCE},
    {"hot-subs", required_argument, NULL, O_HOTSUBS},
    {"hot-rate", required_argument, NULL, O_HOTRATE},
    {"hot-size", required_argument, NULL, O_HOTSIZE},
    {"rss-tolerance", required_argument, NULL, O_RSSTOL},
    {"rss-tolerance-mib", required_argument, NULL, O_RSSTOLMIB},
    {"fd-tolerance", required_argument, NULL, O_FDTOL},
    {"out", required_argument, NULL, O_OUT},
    {"replot", no_argument, NULL, O_REPLOT},
    {"h2-streams", required_argument, NULL, O_H2STREAMS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

const char *tp_label(const opts_t *o)
{
    static char buf[64];
    if (!o->h2_streams)
        return tp_names[o->transport];
    snprintf(buf, sizeof(buf), "sse on HTTP/2 (%u streams a connection)", o->h2_streams);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "hooksink") == 0)
        return run_hooksink(argc - 1, argv + 1);
    static const char *const scenarios[] = {"fanout", "idle", "connect", "publish", "floor",
                                            "notify", "chat", "kick",    "soak"};
    int sc = -1;
    for (int i = 0; i < (int)(sizeof(scenarios) / sizeof(scenarios[0])); i++)
        if (strcmp(argv[1], scenarios[i]) == 0)
            sc = i;
    if (sc < 0)
        bad("unknown scenario \"%s\" (fanout, idle, connect, publish, floor, notify, chat, "
            "kick or soak)",
            argv[1]);

    opts_t o;
    memset(&o, 0, sizeof(o));
    o.scenario = scenarios[sc];
    o.sc = sc;
    o.transport = TP_WS;
    o.subscribers = sc == SC_NOTIFY || sc == SC_KICK ? 10000 : sc == SC_CHAT ? 5000 : 1000;
    o.channels = sc == SC_CHAT ? 500 : 1;
    o.publishers = sc == SC_PUBLISH ? 4 : sc == SC_NOTIFY ? 32 : sc == SC_KICK ? 0 : 1;
    o.pipeline = 1;
    o.rate = sc == SC_PUBLISH ? 0 : sc == SC_NOTIFY ? 2000 : sc == SC_CHAT ? 1000 : 100;
    o.size = 64;
    o.duration_s = sc == SC_PUBLISH ? 5 : sc == SC_NOTIFY || sc == SC_CHAT ? 20 : 10;
    o.drain_s = 5;
    o.settle_s = sc == SC_IDLE ? 2 : 1;
    o.hold_s = 5;
    o.count = 1000;
    o.batch = 1;
    o.concurrency = sc == SC_CONNECT ? 64 : 256;
    o.connect_timeout_s = 10;
    o.per_proc = 15000;
    o.poll_interval_ms = 100;
    o.lp_timeout_s = 30;
    o.is_tty = isatty(2);
    snprintf(o.prefix, sizeof(o.prefix), "hb%x%x", (unsigned)getpid(),
             (unsigned)(time(NULL) & 0xffffff));
    if (sc == SC_SOAK) {
        o.subscribers = 15000;
        o.channels = 500;
        o.publishers = 4;
        o.pipeline = 4;
        o.size = 128;
        o.duration_s = 600;
        o.drain_s = 15;
        o.settle_s = 2;
        o.procs = 2;
        o.poll_interval_ms = 2000;
        o.soak.interval_s = 10;
        o.soak.churn = 100;
        o.soak.hot_subs = 40;
        o.soak.hot_rate = 50;
        o.soak.hot_size = 4096;
        o.soak.rss_tol_pct = 10;
        o.soak.rss_tol_mib = 16;
        o.soak.fd_tol = 200;
        o.soak.warmup_s = -1;
    }
    parse_url(&o.tg, "http://127.0.0.1:8080");
    int have_rate = 0, have_transport = 0, have_channels = 0, have_publishers = 0, have_churn = 0;

    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "t:s:c:p:r:n:d:qh", long_opts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            if (o.n_tgs == MAX_TARGETS)
                bad("--url: at most %d nodes", MAX_TARGETS);
            parse_url(&o.tgs[o.n_tgs], optarg);
            o.n_tgs++;
            break;
        case O_TARGET:
            o.tg.kind = lookup("--target", optarg, tg_names, 2);
            break;
        case 't':
            o.transport = lookup("--transport", optarg, tp_names, 4);
            have_transport = 1;
            break;
        case 's':
            o.subscribers = parse_u32("--subscribers", optarg, 1, 1000000);
            break;
        case 'c':
            o.channels = parse_u32("--channels", optarg, 1, 1000000);
            have_channels = 1;
            break;
        case 'p':
            o.publishers = parse_u32("--publishers", optarg, 1, 1000);
            have_publishers = 1;
            break;
        case O_PIPELINE:
            o.pipeline = parse_u32("--pipeline", optarg, 1, 1024);
            break;
        case 'r':
            o.rate = parse_num("--rate", optarg, 0, 10000000);
            have_rate = 1;
            break;
        case 'n':
            o.size = parse_u32("--size", optarg, PAYLOAD_MIN, 1 << 20);
            break;
        case 'd':
            o.duration_s = parse_dur("--duration", optarg, 3600);
            break;
        case O_DRAIN:
            o.drain_s = parse_dur("--drain", optarg, 600);
            break;
        case O_SETTLE:
            o.settle_s = parse_dur("--settle", optarg, 600);
            break;
        case O_HOLD:
            o.hold_s = parse_dur("--hold", optarg, 3600);
            break;
        case O_COUNT:
            o.count = parse_u32("--count", optarg, 1, 1000000);
            break;
        case O_CONC:
            o.concurrency = parse_u32("--concurrency", optarg, 1, 100000);
            break;
        case O_CRATE:
            o.connect_rate = parse_num("--connect-rate", optarg, 0, 10000000);
            break;
        case O_CTIMEOUT:
            o.connect_timeout_s = parse_dur("--connect-timeout", optarg, 600);
            break;
        case O_PERPROC:
            o.per_proc = parse_u32("--per-proc", optarg, 1, 1000000);
            break;
        case O_PROCS:
            o.procs = parse_u32("--procs", optarg, 1, 256);
            break;
        case O_SRC:
            o.src_addrs = parse_u32("--source-addrs", optarg, 1, 60000);
            break;
        case O_POLLINT:
            o.poll_interval_ms = (uint32_t)(parse_dur("--poll-interval", optarg, 3600) * 1000);
            break;
        case O_LPTIMEOUT:
            o.lp_timeout_s = parse_u32("--lp-timeout", optarg, 0, 3600);
            break;
        case O_BATCH:
            o.batch_ms = parse_u32("--batch-ms", optarg, 0, 10000);
            break;
        case O_H2STREAMS:
            o.h2_streams = parse_u32("--h2-streams", optarg, 1, 1000);
            break;
        case O_BATCHN:
            o.batch = parse_u32("--batch", optarg, 1, 10000);
            break;
        case O_PID: {
            char *list = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o.n_server_pids == MAX_PIDS)
                    bad("--server-pid: at most %d processes", MAX_PIDS);
                pid_t pid = (pid_t)parse_u32("--server-pid", t, 1, 1 << 22);
                if (kill(pid, 0) != 0)
                    bad("--server-pid: no process %d", (int)pid);
                o.server_pids[o.n_server_pids++] = pid;
            }
            free(list);
            o.server_pid = o.server_pids[0];
            break;
        }
        case O_JSON:
            o.json = 1;
            break;
        case 'q':
            o.quiet = 1;
            break;
        case O_PREFIX:
            if (strlen(optarg) > 40 ||
                strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                               "VWXYZ0123456789._:@-") != strlen(optarg))
                bad("--prefix: 1-40 characters of A-Z a-z 0-9 . _ : @ -");
            snprintf(o.prefix, sizeof(o.prefix), "%s", optarg);
            break;
        case O_KEY: {
            size_t n = strlen(optarg), i;
            for (i = 0; i < n && optarg[i] > ' ' && optarg[i] < 0x7f; i++)
                ;
            if (n == 0 || n > HD_KEY_MAX || i < n)
                bad("--key: 1-%d printable ASCII characters without spaces", HD_KEY_MAX);
            snprintf(o.auth, sizeof(o.auth), "Authorization: Bearer %s\r\n", optarg);
            break;
        }
        case O_TOKEN: {
            size_t n = strlen(optarg), i;
            for (i = 0; i < n && optarg[i] > ' ' && optarg[i] < 0x7f; i++)
                ;
            if (n == 0 || n > BENCH_TOKEN_MAX || i < n)
                bad("--token: 1-%d printable ASCII characters without spaces", BENCH_TOKEN_MAX);
            snprintf(o.sub_auth, sizeof(o.sub_auth), "Authorization: Bearer %s\r\n", optarg);
            break;
        }
        case O_TOKENS:
            load_tokens(&o, optarg);
            break;
        case O_INTERVAL:
            o.soak.interval_s = parse_dur("--interval", optarg, 3600);
            if (o.soak.interval_s < 0.5)
                bad("--interval: at least 500ms");
            break;
        case O_WARMUP:
            o.soak.warmup_s = parse_dur("--warmup", optarg, 3600);
            break;
        case O_CHURN:
            o.soak.churn = parse_u32("--churn", optarg, 0, 100000);
            have_churn = 1;
            break;
        case O_TYPING:
            o.typing = parse_num("--typing", optarg, 0, 1000);
            break;
        case O_PRESENCE:
            o.presence = 1;
            break;
        case O_HOTSUBS:
            o.soak.hot_subs = parse_u32("--hot-subs", optarg, 0, 1000000);
            break;
        case O_HOTRATE:
            o.soak.hot_rate = parse_num("--hot-rate", optarg, 0, 100000);
            break;
        case O_HOTSIZE:
            o.soak.hot_size = parse_u32("--hot-size", optarg, PAYLOAD_MIN, 1 << 20);
            break;
        case O_RSSTOL:
            o.soak.rss_tol_pct = parse_num("--rss-tolerance", optarg, 0, 1000);
            break;
        case O_RSSTOLMIB:
            o.soak.rss_tol_mib = parse_num("--rss-tolerance-mib", optarg, 0, 100000);
            break;
        case O_FDTOL:
            o.soak.fd_tol = parse_u32("--fd-tolerance", optarg, 0, 10000000);
            break;
        case O_OUT:
            if (strlen(optarg) >= sizeof(o.soak.out) - 8)
                bad("--out: at most %zu characters", sizeof(o.soak.out) - 8);
            snprintf(o.soak.out, sizeof(o.soak.out), "%s", optarg);
            break;
        case O_REPLOT:
            o.soak.replot = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            bad("unknown or incomplete option");
        }
    }
    if (optind < argc)
        bad("unexpected argument \"%s\"", argv[optind]);

    /* every node is of the kind --target names; tg is the first */
    if (o.n_tgs == 0) {
        o.tgs[0] = o.tg;
        o.n_tgs = 1;
    }
    for (uint32_t i = 0; i < o.n_tgs; i++)
        o.tgs[i].kind = o.tg.kind;
    o.tg = o.tgs[0];
    for (uint32_t i = 1; i < o.n_tgs; i++)
        if (o.tgs[i].is_loopback != o.tg.is_loopback)
            bad("--url: mix of loopback and other addresses");

    /* scenario-specific checks */
    if (sc != SC_SOAK && (o.soak.out[0] || o.soak.replot))
        bad("--out and --replot apply to the soak scenario only");
    if (o.soak.replot) {
        if (!o.soak.out[0])
            bad("--replot needs --out PREFIX (the PREFIX.json of an earlier soak)");
        return run_soak(&o);
    }
    if (sc == SC_SOAK) {
        if (o.tg.kind != TG_HERALD)
            bad("soak: herald only (it resumes with herald's ids)");
        if (o.n_tgs > 1)
            bad("soak: one --url only");
        if (have_transport)
            bad("soak: every transport is used (subscriber i: ws, sse, long poll, poll by i %% 4)");
        if (!o.server_pid)
            bad("soak: --server-pid is needed (herald's RSS and open files are the point)");
        if ((uint64_t)o.soak.hot_subs * 2 > o.subscribers)
            bad("--hot-subs (%u) is more than half of --subscribers (%u)", o.soak.hot_subs,
                o.subscribers);
        if (o.soak.warmup_s < 0)
            o.soak.warmup_s = o.duration_s / 5 < 120 ? o.duration_s / 5 : 120;
        if (o.soak.warmup_s >= o.duration_s)
            bad("--warmup must be shorter than --duration");
        if (o.rate * o.duration_s / o.channels > 16e6 || o.soak.hot_rate * o.duration_s > 16e6)
            bad("soak: over 16 million messages on a channel");
        if (o.rate <= 0)
            bad("--rate must be above 0 for soak");
    }
    if (o.n_tgs > 1 && (sc == SC_FLOOR || sc == SC_IDLE || sc == SC_CONNECT))
        bad("%s: one --url only (several nodes apply to fanout, notify, chat and publish)",
            o.scenario);
    if (o.batch > 1 && sc != SC_PUBLISH)
        bad("--batch applies to the publish scenario only");
    if (o.batch > 1 && o.tg.kind == TG_NCHAN)
        bad("--batch: nchan has no batch publish (compare herald's batches with nchan's single "
            "publishes: run publish without --batch against nchan)");
    if (sc == SC_NOTIFY) {
        if (have_channels && o.channels != o.subscribers)
            bad("notify: every subscriber has its own channel: --channels must equal "
                "--subscribers (or be left out)");
        o.channels = o.subscribers;
    }
    if (sc == SC_CHAT) {
        if (o.transport != TP_WS)
            bad("chat: the members are WebSocket connections (--transport ws)");
        if (have_publishers)
            bad("chat: the members publish; --publishers does not apply");
        if (o.channels > o.subscribers)
            bad("chat: --channels (rooms, %u) is more than --subscribers (members, %u)", o.channels,
                o.subscribers);
        if (!have_churn)
            o.soak.churn = 0;
        if ((o.typing > 0 || o.presence || o.soak.churn) && o.tg.kind != TG_HERALD)
            bad("chat: --typing, --presence and --churn are herald's (the /ws JSON protocol)");
        o.publishers = 0;
    }
    if (sc != SC_CHAT && (o.typing > 0 || o.presence))
        bad("--typing and --presence apply to the chat scenario only");
    if (sc == SC_KICK) {
        if (o.tg.kind != TG_HERALD || o.tg.is_tls)
            bad("kick: a herald node over plain http:// (POST /admin/disconnect)");
        if (o.transport != TP_WS && o.transport != TP_SSE)
            bad("kick: --transport ws or sse (connections that stay open)");
        if (have_channels && o.channels != 1)
            bad("kick: every subscriber is on one channel (--channels 1)");
        if (have_publishers)
            bad("kick: nothing is published; --publishers does not apply");
        if (o.n_tgs > 1)
            bad("kick: one --url (the order reaches every node of a cluster by itself)");
        o.channels = 1;
        o.publishers = 0;
    }
    if (o.h2_streams) {
        if (o.transport != TP_SSE || o.tg.kind != TG_HERALD)
            bad("--h2-streams: SSE (--transport sse) to herald (http:// h2c, https:// ALPN h2)");
        if (sc != SC_FANOUT && sc != SC_NOTIFY && sc != SC_IDLE)
            bad("--h2-streams applies to fanout, notify and idle");
        if (o.n_tokens)
            bad("--tokens: HTTP/1.1 subscribers only (not with --h2-streams)");
    }
    if (o.tg.kind == TG_NCHAN && o.transport == TP_POLL)
        bad("--transport poll: nchan has no short-poll endpoint (use ws, sse or longpoll)");
    if (sc == SC_FLOOR && have_transport)
        bad("floor: the floor writes plain TCP; --transport does not apply");
    if (o.batch_ms && sc != SC_FLOOR)
        bad("--batch-ms applies to the floor scenario only");
    if ((sc == SC_FANOUT || sc == SC_FLOOR || sc == SC_NOTIFY ||
         (sc == SC_CHAT && !o.soak.churn)) &&
        o.rate <= 0)
        bad("--rate must be above 0 for %s", o.scenario);
    if (o.rate * o.duration_s > 50e6)
        bad("--rate x --duration is over 50 million messages");
    if ((sc == SC_FANOUT || sc == SC_FLOOR) && o.channels > o.subscribers)
        bad("--channels (%u) is more than --subscribers (%u): some channels would have no "
            "subscriber",
            o.channels, o.subscribers);
    if (sc == SC_PUBLISH && !have_rate)
        o.rate = 0;
    if (o.tg.is_tls && sc == SC_FLOOR)
        bad("floor: plain TCP only");
    if (sc != SC_PUBLISH && sc != SC_CONNECT && sc != SC_IDLE && o.channels > 100000)
        bad("--channels: at most 100000 for %s", o.scenario);

    uint64_t sockets = (uint64_t)(sc == SC_CONNECT   ? o.count
                                  : sc == SC_PUBLISH ? 0
                                  : o.h2_streams ? (o.subscribers + o.h2_streams - 1) / o.h2_streams
                                                 : o.subscribers) +
                       o.publishers;
    if (!o.src_addrs)
        o.src_addrs = (uint32_t)(sockets / 20000 + 4);
    /* ports are per (source, destination): spread over the nodes too */
    if (o.tg.is_loopback && sockets / o.n_tgs / o.src_addrs > 28000)
        bad("%llu sockets over %u source addresses is more than this machine's ~28k ephemeral "
            "ports per address: raise --source-addrs",
            (unsigned long long)sockets, o.src_addrs);
    if (!o.tg.is_loopback && sockets > 28000)
        fprintf(stderr, "herald-bench: warning: a non-loopback target has only ~28k local ports "
                        "per destination; connections past that will fail\n");
    signal(SIGPIPE, SIG_IGN);

    switch (sc) {
    case SC_FANOUT:
        return run_fanout(&o);
    case SC_IDLE:
        return run_idle(&o);
    case SC_CONNECT:
        return run_connect(&o);
    case SC_PUBLISH:
        return run_publish(&o);
    case SC_NOTIFY:
        return run_notify(&o);
    case SC_CHAT:
        return run_chat(&o);
    case SC_KICK:
        return run_kick(&o);
    case SC_SOAK:
        return run_soak(&o);
    default:
        return run_floor(&o);
    }
}
