/* SPDX-License-Identifier: MIT */
/*
 * main.c: herald-bench's command line: the scenario word, options, defaults per scenario,
 * validation (a bad argument is a clear message and exit 2), --help, then the scenario.
 * Exit codes: 0 ok, 1 the run completed but something failed (lost messages, connect errors),
 * 2 bad arguments, 3 the run could not start.
 */
#include "bench.h"

#include <arpa/inet.h>
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
    "  floor     the fanout shape written by the bench's own minimal server straight to plain\n"
    "            TCP sockets, one write() per message per socket (or with --batch-ms, one\n"
    "            writev() per socket per batch): this machine's kernel cost per delivery.\n"
    "\n"
    "Target:\n"
    "  --url URL            http://, https://, ws:// or wss:// host:port (default\n"
    "                       http://127.0.0.1:8080; ws/http are equivalent, wss/https use TLS\n"
    "                       without verifying the certificate)\n"
    "  --target T           herald (POST /pub/CH, /ws/CH, /sse/CH, /lp/CH, /poll/CH) or nchan\n"
    "                       (POST /pub?id=CH, /sub?id=CH for ws, sse and long poll)\n"
    "  --server-pid PID     measure this process and its descendants (CPU user+sys, memory)\n"
    "\n"
    "Shape:\n"
    "  -t, --transport T    ws | sse | longpoll | poll                     (default ws)\n"
    "  -s, --subscribers S  subscribers (fanout, floor, idle: --connections) (default 1000)\n"
    "  -c, --channels C     channels; subscriber i listens on channel i %% C  (default 1)\n"
    "  -p, --publishers P   publishing connections                        (default 1; publish 4)\n"
    "      --pipeline K     requests in flight per publishing connection  (default 1)\n"
    "  -r, --rate R         messages per second in total                   (default 100; publish "
    "0)\n"
    "  -n, --size N         payload bytes, at least 48                     (default 64)\n"
    "  -d, --duration D     publishing time: 20, 20s, 500ms, 2m            (default 10s; publish "
    "5s)\n"
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
    O_PID,
    O_JSON,
    O_PREFIX,
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
    {"server-pid", required_argument, NULL, O_PID},
    {"json", no_argument, NULL, O_JSON},
    {"quiet", no_argument, NULL, 'q'},
    {"prefix", required_argument, NULL, O_PREFIX},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const char *const scenarios[] = {"fanout", "idle", "connect", "publish", "floor"};
    int sc = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(argv[1], scenarios[i]) == 0)
            sc = i;
    if (sc < 0)
        bad("unknown scenario \"%s\" (fanout, idle, connect, publish or floor)", argv[1]);

    opts_t o;
    memset(&o, 0, sizeof(o));
    o.scenario = scenarios[sc];
    o.transport = TP_WS;
    o.subscribers = 1000;
    o.channels = 1;
    o.publishers = sc == 3 ? 4 : 1;
    o.pipeline = 1;
    o.rate = sc == 3 ? 0 : 100;
    o.size = 64;
    o.duration_s = sc == 3 ? 5 : 10;
    o.drain_s = 5;
    o.settle_s = sc == 1 ? 2 : 1;
    o.hold_s = 5;
    o.count = 1000;
    o.concurrency = sc == 2 ? 64 : 256;
    o.connect_timeout_s = 10;
    o.per_proc = 15000;
    o.poll_interval_ms = 100;
    o.lp_timeout_s = 30;
    o.is_tty = isatty(2);
    snprintf(o.prefix, sizeof(o.prefix), "hb%x%x", (unsigned)getpid(),
             (unsigned)(time(NULL) & 0xffffff));
    parse_url(&o.tg, "http://127.0.0.1:8080");
    int have_rate = 0, have_transport = 0;

    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "t:s:c:p:r:n:d:qh", long_opts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            parse_url(&o.tg, optarg);
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
            o.channels = parse_u32("--channels", optarg, 1, 100000);
            break;
        case 'p':
            o.publishers = parse_u32("--publishers", optarg, 1, 1000);
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
        case O_PID:
            o.server_pid = (pid_t)parse_u32("--server-pid", optarg, 1, 1 << 22);
            if (kill(o.server_pid, 0) != 0)
                bad("--server-pid: no process %d", (int)o.server_pid);
            break;
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
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            bad("unknown or incomplete option");
        }
    }
    if (optind < argc)
        bad("unexpected argument \"%s\"", argv[optind]);

    /* scenario-specific checks */
    if (o.tg.kind == TG_NCHAN && o.transport == TP_POLL)
        bad("--transport poll: nchan has no short-poll endpoint (use ws, sse or longpoll)");
    if (sc == 4 && have_transport)
        bad("floor: the floor writes plain TCP; --transport does not apply");
    if (o.batch_ms && sc != 4)
        bad("--batch-ms applies to the floor scenario only");
    if ((sc == 0 || sc == 4) && o.rate <= 0)
        bad("--rate must be above 0 for %s", o.scenario);
    if (o.rate * o.duration_s > 50e6)
        bad("--rate x --duration is over 50 million messages");
    if ((sc == 0 || sc == 4) && o.channels > o.subscribers)
        bad("--channels (%u) is more than --subscribers (%u): some channels would have no "
            "subscriber",
            o.channels, o.subscribers);
    if (sc == 3 && !have_rate)
        o.rate = 0;
    if (o.tg.is_tls && sc == 4)
        bad("floor: plain TCP only");

    uint64_t sockets = (uint64_t)(sc == 2 ? o.count : o.subscribers) + o.publishers;
    if (!o.src_addrs)
        o.src_addrs = (uint32_t)(sockets / 20000 + 4);
    if (o.tg.is_loopback && sockets / o.src_addrs > 28000)
        bad("%llu sockets over %u source addresses is more than this machine's ~28k ephemeral "
            "ports per address: raise --source-addrs",
            (unsigned long long)sockets, o.src_addrs);
    if (!o.tg.is_loopback && sockets > 28000)
        fprintf(stderr, "herald-bench: warning: a non-loopback target has only ~28k local ports "
                        "per destination; connections past that will fail\n");
    signal(SIGPIPE, SIG_IGN);

    switch (sc) {
    case 0:
        return run_fanout(&o);
    case 1:
        return run_idle(&o);
    case 2:
        return run_connect(&o);
    case 3:
        return run_publish(&o);
    default:
        return run_floor(&o);
    }
}
