/* SPDX-License-Identifier: MIT */
/*
 * conf.c: the configuration loader. It owns the one table of directives (name, type, field,
 * default, range, reloadable, description), the generic setter of each value type, the line
 * tokenizer, the -o override rules and the checks that span directives.
 *
 * Adding a directive is one field in hd_conf_t (include/herald/conf.h) and one row in
 * `directives` below; defaults, range checks, error messages, hd_conf_restart_needed and
 * hd_conf_print_reference all follow from the row. Defaults are strings applied through the
 * same setter as the file, so the table cannot hold a default the parser would refuse.
 *
 * Loading a snapshot, in order:
 *
 *     defaults (origin 0) --> file lines (origin = line number) --> -o overrides (origin < 0)
 *                                                                          |
 *                                      cross-directive checks (tls) <------+
 *
 * Each directive remembers the origin of its last setting: a second file line for a directive
 * that is not repeatable is an error, an override silently wins, and the first line of a
 * repeatable directive (listen) from a new origin class drops what the previous class gave.
 */
#include "herald/conf.h"
#include "herald/common.h"
#include "herald/log.h"
#include "herald/redis_url.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_LINE 4096          /* bytes per line, without its line ending */
#define MAX_FILE (1024 * 1024) /* a conf file larger than this is a mistake */
#define MAX_ARGS 8             /* values kept per line; more are only counted */

typedef enum { T_UINT, T_SIZE, T_DURATION, T_BOOL, T_STRING, T_ENUM, T_LISTEN, T_NTYPES } type_t;

enum {
    F_RELOAD = 1 << 0, /* SIGHUP applies it live */
    F_MULTI = 1 << 1,  /* repeatable: each line adds a value */
};
#define RELOAD  F_RELOAD
#define RESTART 0

typedef struct {
    const char *name;
    int value;
} choice_t;

typedef struct directive_s {
    const char *name;
    type_t type;
    size_t offset; /* into hd_conf_t */
    size_t size;   /* of that field */
    const char *def;
    const char *min, *max; /* written as in the file: "1", "8k", "10ms" */
    unsigned flags;
    const char *desc;
    /* optional, by type */
    const choice_t *choices;      /* T_ENUM: accepted words */
    const char *none;             /* T_STRING: "|"-separated words meaning "not set" ("" too) */
    unsigned (*auto_value)(void); /* T_UINT: accepts "auto", resolved by this function */
    int (*check)(const char *value, char *why, size_t whylen); /* T_STRING: 0, or -1 and why */
} directive_t;

/* One row: D(name, type, field, default, min, max, flags, description[, .optional = ...]) */
#define D(name_, type_, field_, def_, min_, max_, flags_, desc_, ...)                              \
    {                                                                                              \
        name_, type_, offsetof(hd_conf_t, field_), sizeof(((hd_conf_t *)0)->field_), def_, min_,   \
            max_, flags_, .desc = desc_, __VA_ARGS__                                               \
    }

static const choice_t log_levels[] = {{"debug", HD_LOG_DEBUG},
                                      {"info", HD_LOG_INFO},
                                      {"warn", HD_LOG_WARN},
                                      {"error", HD_LOG_ERROR},
                                      {NULL, 0}};
static const choice_t tls_versions[] = {{"1.2", 12}, {"1.3", 13}, {NULL, 0}};

static unsigned online_cpus(void);
static int check_redis_url(const char *value, char *why, size_t whylen);
static int check_redis_prefix(const char *value, char *why, size_t whylen);

/* clang-format off */
static const directive_t directives[] = {
    /* process */
    D("listen", T_LISTEN, listens, "0.0.0.0:8080", NULL, NULL, RESTART | F_MULTI,
      "address to accept connections on: IPv4:PORT, [IPv6]:PORT or *:PORT, tls = TLS; repeatable"),
    D("workers", T_UINT, workers, "auto", "1", "1024", RESTART,
      "worker threads, each with its own event loop; auto = one per online CPU",
      .auto_value = online_cpus),
    D("pidfile", T_STRING, pidfile, "off", NULL, NULL, RESTART,
      "file the process id is written to; off = none", .none = "off"),
    D("shutdown_timeout", T_DURATION, shutdown_timeout_ms, "10s", "0", "1h", RELOAD,
      "on SIGTERM or SIGINT, time given to open connections to finish before they are closed"),

    /* logging */
    D("log_level", T_ENUM, log_level, "info", NULL, NULL, RELOAD,
      "least severe level logged: debug, info, warn or error", .choices = log_levels),
    D("log_file", T_STRING, log_file, "stderr", NULL, NULL, RESTART,
      "error log file; stderr = standard error", .none = "off|stderr"),
    D("access_log", T_STRING, access_log, "off", NULL, NULL, RELOAD,
      "access log file, one line per request; off = none", .none = "off"),

    /* connection limits */
    D("max_connections", T_UINT, max_connections, "100000", "1", "10000000", RELOAD,
      "open client connections allowed on this node; more are refused"),
    D("accept_rate", T_UINT, accept_rate, "0", "0", "10000000", RELOAD,
      "new connections accepted per second on this node; 0 = unlimited"),
    D("accept_burst", T_UINT, accept_burst, "1000", "1", "10000000", RELOAD,
      "new connections accepted at once above accept_rate (token bucket depth)"),

    /* HTTP */
    D("max_url_size", T_SIZE, max_url_bytes, "8k", "256", "1m", RELOAD,
      "longest request URL (path and query) accepted; longer is answered 414"),
    D("max_header_size", T_SIZE, max_header_bytes, "16k", "1k", "1m", RELOAD,
      "largest request header section accepted; larger is answered 431"),
    D("max_body_size", T_SIZE, max_body_bytes, "1m", "0", "1g", RELOAD,
      "largest request body (a published message) accepted; larger is answered 413"),
    D("header_timeout", T_DURATION, header_timeout_ms, "10s", "10ms", "1h", RELOAD,
      "time allowed to receive a request's header section"),
    D("body_timeout", T_DURATION, body_timeout_ms, "30s", "10ms", "1h", RELOAD,
      "time allowed to receive a request's whole body (a deadline, not a time between reads)"),
    D("keepalive_timeout", T_DURATION, keepalive_timeout_ms, "75s", "10ms", "1h", RELOAD,
      "time an idle keep-alive connection waits for its next request"),
    D("keepalive_requests", T_UINT, keepalive_requests, "10000", "1", "10000000", RELOAD,
      "requests served on one connection before it is closed"),

    /* TLS */
    D("tls_certificate", T_STRING, tls_certificate, "off", NULL, NULL, RELOAD,
      "PEM certificate chain for tls listeners; off = none", .none = "off"),
    D("tls_certificate_key", T_STRING, tls_certificate_key, "off", NULL, NULL, RELOAD,
      "PEM private key of tls_certificate; off = none", .none = "off"),
    D("tls_ciphers", T_STRING, tls_ciphers,
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
      NULL, NULL, RELOAD,
      "TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 uses OpenSSL's default suites"),
    D("tls_min_version", T_ENUM, tls_min_version, "1.2", NULL, NULL, RELOAD,
      "oldest TLS version accepted: 1.2 or 1.3", .choices = tls_versions),

    /* publishing and history */
    D("publish_key", T_STRING, publish_key, "off", NULL, NULL, RELOAD,
      "when set, publishing needs 'Authorization: Bearer <key>'; off = open", .none = "off"),
    D("max_message_size", T_SIZE, max_message_bytes, "1m", "1", "64m", RELOAD,
      "largest message payload accepted from a publisher; larger is answered 413 (WebSocket 1009)"),
    D("idempotency_window", T_DURATION, idempotency_window_ms, "10m", "0", "24h", RESTART,
      "a publish retried with the same idempotency key within it gets the first id; 0 = off"),
    D("history_size", T_UINT, history_size, "100", "0", "1000000", RESTART,
      "messages kept per channel for resume and polling"),
    D("history_ttl", T_DURATION, history_ttl_ms, "1h", "0", "720h", RESTART,
      "age after which a message leaves history; 0 = no age limit"),
    D("history_max_bytes", T_SIZE, history_max_bytes, "4m", "0", "1g", RESTART,
      "payload bytes kept per channel; the oldest messages leave first"),
    D("max_memory", T_SIZE, max_memory_bytes, "256m", "1m", "64g", RESTART,
      "bytes of channels and history on this node; the coldest channels lose history first"),
    D("max_channels", T_UINT, max_channels, "100000", "1", "100000000", RESTART,
      "channels (with subscribers or history) on this node; a new one past it is answered 507"),

    /* delivery */
    D("max_queue_bytes", T_SIZE, max_queue_bytes, "1m", "4k", "1g", RELOAD,
      "bytes waiting to be written to one subscriber; one further behind is disconnected"),
    D("max_subscriptions_per_connection", T_UINT, max_subscriptions_per_connection, "64", "1",
      "1024", RELOAD,
      "subscriptions of one /ws connection, channels of one SSE stream; more are refused"),
    D("max_subscriptions", T_UINT, max_subscriptions, "1000000", "1", "100000000", RELOAD,
      "subscriptions on this node (every transport, long polls included); more are refused 503"),
    D("poll_max_messages", T_UINT, poll_max_messages, "100", "1", "10000", RELOAD,
      "messages in one poll or long-poll answer"),
    D("max_response_size", T_SIZE, max_response_bytes, "1m", "64k", "1g", RELOAD,
      "bytes of one poll or long-poll answer: it holds fewer messages rather than grow past this"),
    D("longpoll_timeout", T_DURATION, longpoll_timeout_ms, "30s", "1s", "1h", RELOAD,
      "how long a long poll is held when the client gives no timeout"),
    D("longpoll_max_timeout", T_DURATION, longpoll_max_timeout_ms, "120s", "1s", "1h", RELOAD,
      "upper bound for the timeout a long-poll client asks for"),
    D("sse_heartbeat", T_DURATION, sse_heartbeat_ms, "15s", "100ms", "1h", RELOAD,
      "interval of the comment line that keeps idle SSE streams (and proxies) alive"),
    D("sse_retry", T_DURATION, sse_retry_ms, "3s", "100ms", "1h", RELOAD,
      "reconnect delay hinted to SSE clients; each stream gets it plus up to 100% jitter"),
    D("ws_ping_interval", T_DURATION, ws_ping_interval_ms, "30s", "100ms", "1h", RELOAD,
      "interval of server pings on WebSocket connections"),
    D("ws_idle_timeout", T_DURATION, ws_idle_timeout_ms, "90s", "100ms", "1h", RELOAD,
      "a WebSocket peer silent this long (no frame, no pong) is closed"),
    D("ws_origins", T_STRING, ws_origins, "*", NULL, NULL, RELOAD,
      "space-separated Origin values allowed to open WebSockets; * = any", .none = "*"),
    D("ws_client_publish", T_BOOL, ws_client_publish, "off", NULL, NULL, RELOAD,
      "WebSocket clients may publish to the channels they are on"),

    /* Redis bridge */
    D("redis", T_STRING, redis, "off", NULL, NULL, RESTART,
      "Redis the nodes share: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or a socket; off = one node",
      .none = "off", .check = check_redis_url),
    D("redis_prefix", T_STRING, redis_prefix, "herald:", NULL, NULL, RESTART,
      "prefix of every Redis key and pub/sub channel herald uses", .check = check_redis_prefix),
    D("redis_timeout", T_DURATION, redis_timeout_ms, "3s", "100ms", "1m", RESTART,
      "a Redis connect or command taking longer counts as a lost connection"),
    D("redis_max_pending", T_UINT, redis_max_pending, "100000", "16", "10000000", RESTART,
      "live messages held for ordering (catching up after a reconnect); past it, a gap notice"),
};
/* clang-format on */

#define N_DIRECTIVES HD_ARRAY_SIZE(directives)

/*
 * The state of one load. An origin says where a setting came from: a positive file line
 * number, 0 for the table's default, or -(i + 1) for overrides[i].
 */
typedef struct {
    hd_conf_t *conf;
    const char *name; /* file name used in messages */
    const char *const *overrides;
    int origin; /* of the line being applied */
    int set_at[N_DIRECTIVES];
    int *listen_origin; /* origin of each conf->listens[i] */
    char *err;
    size_t errlen;
} loader_t;

typedef struct {
    const char *syntax;     /* for messages: "N", "SIZE", ... */
    int min_args, max_args; /* values after the directive name */
    int (*set)(loader_t *ld, const directive_t *d, int argc, const char *const *argv);
    void (*dispose)(hd_conf_t *c, const directive_t *d);
    int (*equal)(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d);
} type_ops_t;

static const type_ops_t type_ops[T_NTYPES];

/* ---- messages -------------------------------------------------------------------------------- */

static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (buf == NULL || *pos >= len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len;
}

/* Writes "FILE:LINE", "-o 'TEXT'" or "FILE" (for a default) for an origin. */
static void append_origin(const loader_t *ld, char *buf, size_t len, size_t *pos, int origin)
{
    if (origin > 0)
        append(buf, len, pos, "%s:%d", ld->name, origin);
    else if (origin < 0)
        append(buf, len, pos, "-o '%s'", ld->overrides[-origin - 1]);
    else
        append(buf, len, pos, "%s", ld->name);
}

/*
 * Writes "ORIGIN: DIRECTIVE: MESSAGE" (DIRECTIVE left out when NULL) into ld->err and returns
 * HD_ECONF, so that every error path is `return fail(...)`.
 */
static int fail(loader_t *ld, int origin, const char *directive, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(loader_t *ld, int origin, const char *directive, const char *fmt, ...)
{
    size_t pos = 0;
    va_list ap;

    if (ld->err == NULL || ld->errlen == 0)
        return HD_ECONF;
    append_origin(ld, ld->err, ld->errlen, &pos, origin);
    append(ld->err, ld->errlen, &pos, ": ");
    if (directive != NULL)
        append(ld->err, ld->errlen, &pos, "%s: ", directive);
    if (pos < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + pos, ld->errlen - pos, fmt, ap);
        va_end(ap);
    }
    /* One printable line whatever the input held: text echoed from a line or an override may
     * carry control bytes (an -o value with a newline, a stray CR), which would split a log
     * line or garble a terminal. */
    for (char *p = ld->err; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return HD_ECONF;
}

/* ---- numbers --------------------------------------------------------------------------------- */

/* Parses leading decimal digits of s into *out; returns the number of digits, 0 on none or on
 * overflow (the caller then reports the value as out of range). */
static size_t parse_digits(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return 0;
        v = v * 10 + digit;
    }
    *out = v;
    return i;
}

static int scale(uint64_t v, uint64_t mult, uint64_t *out)
{
    if (mult != 0 && v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

/* "123": plain decimal, no sign. Returns 0 or -1. */
static int parse_uint(const char *s, uint64_t *out)
{
    size_t n = parse_digits(s, out);
    return n > 0 && s[n] == '\0' ? 0 : -1;
}

/* "512", "8k", "1M", "1g" (1k = 1024 bytes). Returns 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    uint64_t v, mult;
    size_t n = parse_digits(s, &v);

    if (n == 0)
        return -1;
    switch (s[n]) {
    case '\0':
        *out = v;
        return 0;
    case 'k':
    case 'K':
        mult = 1024;
        break;
    case 'm':
    case 'M':
        mult = 1024 * 1024;
        break;
    case 'g':
    case 'G':
        mult = 1024 * 1024 * 1024;
        break;
    default:
        return -1;
    }
    return s[n + 1] == '\0' ? scale(v, mult, out) : -1;
}

/* "30" (seconds), "250ms", "30s", "5m", "1h", into milliseconds. Returns 0 or -1. */
static int parse_duration(const char *s, uint64_t *out_ms)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t v;
    size_t n = parse_digits(s, &v), i;

    if (n == 0)
        return -1;
    for (i = 0; i < HD_ARRAY_SIZE(units); i++) {
        if (strcmp(s + n, units[i].suffix) == 0)
            return scale(v, units[i].ms, out_ms);
    }
    return -1;
}

/* "on", "yes", "true" / "off", "no", "false". Returns 0 or -1. */
static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"on", "yes", "true"}, *const no[] = {"off", "no", "false"};
    size_t i;

    for (i = 0; i < HD_ARRAY_SIZE(yes); i++) {
        if (strcmp(s, yes[i]) == 0 || strcmp(s, no[i]) == 0) {
            *out = strcmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

/* The range columns of the table are in the file's syntax; a row they do not parse is a bug. */
static void range_of(const directive_t *d, int (*parse)(const char *, uint64_t *), uint64_t *min,
                     uint64_t *max)
{
    HD_ASSERT(d->min != NULL && d->max != NULL);
    HD_ASSERT(parse(d->min, min) == 0 && parse(d->max, max) == 0);
}

static void store_uint(hd_conf_t *c, const directive_t *d, uint64_t v)
{
    char *p = (char *)c + d->offset;

    switch (d->size) {
    case 1: {
        uint8_t x = (uint8_t)v;
        HD_ASSERT(x == v);
        memcpy(p, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        HD_ASSERT(x == v);
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        HD_ASSERT(x == v);
        memcpy(p, &x, 4);
        break;
    }
    case 8:
        memcpy(p, &v, 8);
        break;
    default:
        HD_ASSERT(!"integer field of unexpected size");
    }
}

/* Shared by the three numeric types: parse, check the range, store. */
static int set_number(loader_t *ld, const directive_t *d, const char *s,
                      int (*parse)(const char *, uint64_t *), const char *what)
{
    uint64_t v, min, max;

    range_of(d, parse, &min, &max);
    if (d->auto_value != NULL && strcmp(s, "auto") == 0) {
        v = d->auto_value();
        v = v < min ? min : v > max ? max : v;
    } else if (parse(s, &v) != 0 || v < min || v > max) {
        return fail(ld, ld->origin, d->name, "expected %s%s in %s..%s, got \"%s\"",
                    d->auto_value != NULL ? "\"auto\" or " : "", what, d->min, d->max, s);
    }
    store_uint(ld->conf, d, v);
    return 0;
}

static int set_uint(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    (void)argc;
    return set_number(ld, d, argv[0], parse_uint, "an integer");
}

static int set_size(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    (void)argc;
    return set_number(ld, d, argv[0], parse_size, "a size (bytes, or with k, m, g)");
}

static int set_duration(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    (void)argc;
    return set_number(ld, d, argv[0], parse_duration, "a duration (seconds, or with ms, s, m, h)");
}

static int set_bool(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    int v;

    (void)argc;
    if (parse_bool(argv[0], &v) != 0)
        return fail(ld, ld->origin, d->name, "expected on or off (yes/no, true/false), got \"%s\"",
                    argv[0]);
    store_uint(ld->conf, d, (uint64_t)v);
    return 0;
}

static int equal_bytes(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    return memcmp((const char *)a + d->offset, (const char *)b + d->offset, d->size) == 0;
}

static void dispose_nothing(hd_conf_t *c, const directive_t *d)
{
    (void)c;
    (void)d;
}

/* ---- strings and words ----------------------------------------------------------------------- */

/* Whether s is one of the "|"-separated words of list (NULL: none). */
static int is_word_of(const char *s, const char *list)
{
    size_t n = strlen(s);

    while (list != NULL && *list != '\0') {
        const char *bar = strchr(list, '|');
        size_t len = bar ? (size_t)(bar - list) : strlen(list);
        if (len == n && memcmp(list, s, n) == 0)
            return 1;
        list = bar ? bar + 1 : NULL;
    }
    return 0;
}

static char **string_field(hd_conf_t *c, const directive_t *d)
{
    HD_ASSERT(d->size == sizeof(char *));
    return (char **)(void *)((char *)c + d->offset);
}

static int set_string(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    char **field = string_field(ld->conf, d);
    const char *s = argv[0];

    (void)argc;
    if (d->none == NULL && s[0] == '\0')
        return fail(ld, ld->origin, d->name, "expected a non-empty value");
    if (d->none != NULL && (s[0] == '\0' || is_word_of(s, d->none))) {
        free(*field);
        *field = NULL;
        return 0;
    }
    if (d->check != NULL) {
        char why[256];
        if (d->check(s, why, sizeof(why)) < 0)
            return fail(ld, ld->origin, d->name, "%s", why);
    }
    free(*field);
    *field = hd_strdup(s);
    return 0;
}

static void dispose_string(hd_conf_t *c, const directive_t *d)
{
    char **field = string_field(c, d);

    free(*field);
    *field = NULL;
}

static int equal_string(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    const char *x = *(char *const *)(const void *)((const char *)a + d->offset);
    const char *y = *(char *const *)(const void *)((const char *)b + d->offset);

    return (x == NULL && y == NULL) || (x != NULL && y != NULL && strcmp(x, y) == 0);
}

static int set_enum(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    char words[256];
    size_t pos = 0;
    const choice_t *ch;

    (void)argc;
    HD_ASSERT(d->choices != NULL && d->size == sizeof(int));
    for (ch = d->choices; ch->name != NULL; ch++) {
        if (strcmp(ch->name, argv[0]) == 0) {
            memcpy((char *)ld->conf + d->offset, &ch->value, sizeof(int));
            return 0;
        }
    }
    words[0] = '\0';
    for (ch = d->choices; ch->name != NULL; ch++)
        append(words, sizeof(words), &pos, "%s%s", ch == d->choices ? "" : ", ", ch->name);
    return fail(ld, ld->origin, d->name, "expected one of %s, got \"%s\"", words, argv[0]);
}

/* ---- listen ---------------------------------------------------------------------------------- */

static const char listen_syntax[] = "ADDR:PORT [tls], e.g. 0.0.0.0:8080, [::1]:8080 or *:8443 tls";

/* Parses "IPv4:PORT", "[IPv6]:PORT" or "*:PORT" into l. Returns 0 or fails with a message. */
static int parse_listen(loader_t *ld, const directive_t *d, const char *s, hd_listen_t *l)
{
    char host[INET6_ADDRSTRLEN + 64];
    const char *colon, *h = s;
    size_t hlen;
    uint64_t port;
    int is_v6 = 0, rc;

    memset(l, 0, sizeof(*l));
    if (strlen(s) >= sizeof(l->text))
        return fail(ld, ld->origin, d->name, "address too long: \"%s\"", s);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return fail(ld, ld->origin, d->name, "expected %s, got \"%s\"", listen_syntax, s);
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        is_v6 = 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return fail(ld, ld->origin, d->name, "expected %s (IPv6 in brackets), got \"%s\"",
                        listen_syntax, s);
        hlen = (size_t)(colon - s);
    }
    if (parse_uint(colon + 1, &port) != 0 || port > 65535)
        return fail(ld, ld->origin, d->name, "expected a port in 0..65535, got \"%s\"", s);
    if (hlen == 0 || hlen >= sizeof(host))
        return fail(ld, ld->origin, d->name, "expected %s, got \"%s\"", listen_syntax, s);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (is_v6) {
        rc = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&l->addr);
        l->addrlen = sizeof(struct sockaddr_in6);
    } else {
        rc = uv_ip4_addr(strcmp(host, "*") == 0 ? "0.0.0.0" : host, (int)port,
                         (struct sockaddr_in *)&l->addr);
        l->addrlen = sizeof(struct sockaddr_in);
    }
    if (rc != 0)
        return fail(ld, ld->origin, d->name, "\"%s\" is not a numeric IPv%d address in \"%s\"",
                    host, is_v6 ? 6 : 4, s);
    memcpy(l->text, s, strlen(s) + 1);
    return 0;
}

static uint16_t listen_port(const hd_listen_t *l)
{
    return l->addr.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&l->addr)->sin6_port
                                         : ((const struct sockaddr_in *)&l->addr)->sin_port;
}

static int same_listen_addr(const hd_listen_t *a, const hd_listen_t *b)
{
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

static int set_listen(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_listen_t l;
    size_t i;
    int rc;

    if ((rc = parse_listen(ld, d, argv[0], &l)) != 0)
        return rc;
    if (argc == 2) {
        if (strcmp(argv[1], "tls") != 0)
            return fail(ld, ld->origin, d->name, "expected \"tls\" after the address, got \"%s\"",
                        argv[1]);
        l.is_tls = 1;
    }
    /* Port 0 asks for an ephemeral port: two of those are two listeners, not a repeat. */
    for (i = 0; i < c->n_listens && listen_port(&l) != 0; i++) {
        if (same_listen_addr(&c->listens[i], &l)) {
            char first[256];
            size_t pos = 0;
            append_origin(ld, first, sizeof(first), &pos, ld->listen_origin[i]);
            return fail(ld, ld->origin, d->name, "\"%s\" is the same address as \"%s\" at %s",
                        l.text, c->listens[i].text, first);
        }
    }
    c->listens = hd_realloc(c->listens, (c->n_listens + 1) * sizeof(*c->listens));
    ld->listen_origin = hd_realloc(ld->listen_origin, (c->n_listens + 1) * sizeof(int));
    c->listens[c->n_listens] = l;
    ld->listen_origin[c->n_listens] = ld->origin;
    c->n_listens++;
    return 0;
}

static void dispose_listen(hd_conf_t *c, const directive_t *d)
{
    (void)d;
    free(c->listens);
    c->listens = NULL;
    c->n_listens = 0;
}

static int equal_listen(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    size_t i;

    (void)d;
    if (a->n_listens != b->n_listens)
        return 0;
    for (i = 0; i < a->n_listens; i++) {
        if (!same_listen_addr(&a->listens[i], &b->listens[i]) ||
            a->listens[i].is_tls != b->listens[i].is_tls)
            return 0;
    }
    return 1;
}

static const type_ops_t type_ops[T_NTYPES] = {
    [T_UINT] = {"N", 1, 1, set_uint, dispose_nothing, equal_bytes},
    [T_SIZE] = {"SIZE", 1, 1, set_size, dispose_nothing, equal_bytes},
    [T_DURATION] = {"DURATION", 1, 1, set_duration, dispose_nothing, equal_bytes},
    [T_BOOL] = {"on|off", 1, 1, set_bool, dispose_nothing, equal_bytes},
    [T_STRING] = {"VALUE", 1, 1, set_string, dispose_string, equal_string},
    [T_ENUM] = {"WORD", 1, 1, set_enum, dispose_nothing, equal_bytes},
    [T_LISTEN] = {"ADDR:PORT [tls]", 1, 2, set_listen, dispose_listen, equal_listen},
};

/* "workers auto"; set_number clamps it into the directive's range. */
static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 65536 ? 65536 : (unsigned)n;
}

static int check_redis_url(const char *value, char *why, size_t whylen)
{
    hd_redis_addr_t a;

    return hd_redis_url_parse(value, &a, why, whylen) == 0 ? 0 : -1;
}

static int check_redis_prefix(const char *value, char *why, size_t whylen)
{
    size_t i, n = strlen(value);

    for (i = 0; i < n; i++) {
        if ((unsigned char)value[i] <= ' ' || (unsigned char)value[i] >= 0x7f)
            break;
    }
    if (n > 64 || i < n) {
        snprintf(why, whylen, "expected 1..64 printable characters without spaces");
        return -1;
    }
    return 0;
}

/* ---- lines ----------------------------------------------------------------------------------- */

static const directive_t *find_directive(const char *name)
{
    size_t i;

    for (i = 0; i < N_DIRECTIVES; i++) {
        if (strcmp(directives[i].name, name) == 0)
            return &directives[i];
    }
    return NULL;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Splits one line (no line ending) into words: blanks separate words, `#` outside double
 * quotes starts a comment, double quotes keep blanks and `#` (\" and \\ inside them stand for "
 * and \). Words are written NUL-terminated into buf (at least len + 1 bytes); the first
 * MAX_ARGS go to argv. Returns the number of words, or -1 with a message in *why.
 */
static int split_line(const char *s, size_t len, char *buf, const char **argv, const char **why)
{
    size_t i = 0, o = 0;
    int argc = 0;

    for (;;) {
        while (i < len && is_space(s[i]))
            i++;
        if (i == len || s[i] == '#')
            return argc;
        if (argc < MAX_ARGS)
            argv[argc] = buf + o;
        argc++;
        while (i < len && !is_space(s[i]) && s[i] != '#') {
            if (s[i] == '\0' || s[i] == '\n') {
                *why = s[i] ? "unexpected line break" : "NUL byte in line";
                return -1;
            }
            if (s[i] != '"') {
                buf[o++] = s[i++];
                continue;
            }
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\0' || s[i] == '\n') {
                    *why = s[i] ? "unexpected line break" : "NUL byte in line";
                    return -1;
                }
                if (s[i] == '\\' && i + 1 < len && (s[i + 1] == '"' || s[i + 1] == '\\'))
                    i++;
                buf[o++] = s[i];
            }
            if (i == len) {
                *why = "unterminated double quote";
                return -1;
            }
            i++;
        }
        buf[o++] = '\0';
    }
}

/* Applies one line from ld->origin: the directive's origin rules, its value count, its setter. */
static int apply_line(loader_t *ld, const char *s, size_t len)
{
    char buf[MAX_LINE + 1];
    const char *argv[MAX_ARGS], *why = NULL;
    const directive_t *d;
    const type_ops_t *ops;
    int argc, *set_at;

    if (len > MAX_LINE)
        return fail(ld, ld->origin, NULL, "line longer than %d bytes", MAX_LINE);
    argc = split_line(s, len, buf, argv, &why);
    if (argc < 0)
        return fail(ld, ld->origin, NULL, "%s", why);
    if (argc == 0) {
        if (ld->origin < 0)
            return fail(ld, ld->origin, NULL, "expected \"DIRECTIVE VALUE\"");
        return 0;
    }
    if ((d = find_directive(argv[0])) == NULL)
        return fail(ld, ld->origin, NULL, "unknown directive \"%s\"", argv[0]);
    ops = &type_ops[d->type];
    set_at = &ld->set_at[d - directives];
    if (argc - 1 < ops->min_args || argc - 1 > ops->max_args) {
        if (ops->min_args == ops->max_args)
            return fail(
                ld, ld->origin, d->name, "expected %d value, got %d%s", ops->min_args, argc - 1,
                d->type == T_STRING && argc > 2 ? " (put a value with spaces in quotes)" : "");
        return fail(ld, ld->origin, d->name, "expected %d to %d values (%s), got %d", ops->min_args,
                    ops->max_args, ops->syntax, argc - 1);
    }
    if (ld->origin > 0 && *set_at > 0 && !(d->flags & F_MULTI))
        return fail(ld, ld->origin, d->name, "duplicate directive, first set on line %d", *set_at);
    /* A repeatable directive's values come from one place: the table, the file, or -o. */
    if ((d->flags & F_MULTI) && (ld->origin > 0 ? *set_at == 0 : *set_at >= 0))
        ops->dispose(ld->conf, d);
    *set_at = ld->origin;
    return ops->set(ld, d, argc - 1, argv + 1);
}

static int apply_text(loader_t *ld, const char *text, size_t len)
{
    size_t start = 0, end, n;
    int line = 1, rc;

    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        start = 3; /* a UTF-8 byte order mark, as some editors write */
    for (; start < len; start = end + 1, line++) {
        const char *nl = memchr(text + start, '\n', len - start);
        end = nl ? (size_t)(nl - text) : len;
        n = end - start;
        if (n > 0 && text[end - 1] == '\r')
            n--; /* CRLF */
        ld->origin = line;
        if ((rc = apply_line(ld, text + start, n)) != 0)
            return rc;
    }
    return 0;
}

/* The checks that span directives, once everything is applied. */
static int check_conf(loader_t *ld)
{
    const hd_conf_t *c = ld->conf;
    const directive_t *cert = find_directive("tls_certificate");
    const directive_t *key = find_directive("tls_certificate_key");
    size_t i;

    for (i = 0; i < c->n_listens; i++) {
        const char *missing = c->tls_certificate == NULL       ? "tls_certificate"
                              : c->tls_certificate_key == NULL ? "tls_certificate_key"
                                                               : NULL;
        if (c->listens[i].is_tls && missing != NULL)
            return fail(ld, ld->listen_origin[i], "listen", "tls listener %s needs %s",
                        c->listens[i].text, missing);
    }
    if (c->tls_certificate != NULL && c->tls_certificate_key == NULL)
        return fail(ld, ld->set_at[cert - directives], cert->name, "set without %s", key->name);
    if (c->tls_certificate_key != NULL && c->tls_certificate == NULL)
        return fail(ld, ld->set_at[key - directives], key->name, "set without %s", cert->name);
    return 0;
}

static void conf_free(hd_conf_t *c)
{
    size_t i;

    for (i = 0; i < N_DIRECTIVES; i++)
        type_ops[directives[i].type].dispose(c, &directives[i]);
    free(c->path);
    free(c);
}

static int load(hd_conf_t **out, const char *name, const char *text, size_t len,
                const char *const *overrides, size_t n_overrides, char *err, size_t errlen)
{
    loader_t ld;
    size_t i;
    int rc = 0;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(&ld, 0, sizeof(ld));
    ld.conf = hd_calloc(1, sizeof(*ld.conf));
    ld.conf->refs_ = 1;
    ld.conf->path = hd_strdup(name);
    ld.name = name[0] != '\0' ? name : "(defaults)";
    ld.overrides = overrides;
    ld.err = err;
    ld.errlen = errlen;

    for (i = 0; i < N_DIRECTIVES; i++) {
        const char *def = directives[i].def;
        /* A default the setter refuses is a bug in the table, caught by the first load. */
        rc = type_ops[directives[i].type].set(&ld, &directives[i], 1, &def);
        HD_ASSERT(rc == 0);
    }
    if (text != NULL && (rc = apply_text(&ld, text, len)) != 0)
        goto fail;
    for (i = 0; i < n_overrides; i++) {
        ld.origin = -(int)i - 1;
        if ((rc = apply_line(&ld, overrides[i], strlen(overrides[i]))) != 0)
            goto fail;
    }
    if ((rc = check_conf(&ld)) != 0)
        goto fail;
    free(ld.listen_origin);
    *out = ld.conf;
    return 0;

fail:
    free(ld.listen_origin);
    conf_free(ld.conf);
    return rc;
}

/* ---- API ------------------------------------------------------------------------------------- */

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    size_t cap = 4096, n = 0;
    char *buf;
    int fd, e;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        e = errno;
        goto fail;
    }
    buf = hd_malloc(cap);
    for (;;) {
        ssize_t r;
        if (n > MAX_FILE) {
            free(buf);
            close(fd);
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "cannot read %s: larger than %d bytes", path, MAX_FILE);
            return HD_ECONF;
        }
        if (n == cap) {
            /* One byte past the limit tells a file of exactly MAX_FILE bytes from a larger one. */
            cap = cap * 2 > MAX_FILE ? MAX_FILE + 1 : cap * 2;
            buf = hd_realloc(buf, cap);
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            free(buf);
            close(fd);
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;

fail:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
    return -e;
}

int hd_conf_load(hd_conf_t **out, const char *path, const char *const *overrides,
                 size_t n_overrides, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (path != NULL && (rc = read_file(path, &text, &len, err, errlen)) != 0)
        return rc;
    rc = load(out, path ? path : "", text, len, overrides, n_overrides, err, errlen);
    free(text);
    return rc;
}

int hd_conf_load_string(hd_conf_t **out, const char *name, const char *text,
                        const char *const *overrides, size_t n_overrides, char *err, size_t errlen)
{
    return load(out, name ? name : "", text, text ? strlen(text) : 0, overrides, n_overrides, err,
                errlen);
}

hd_conf_t *hd_conf_ref(hd_conf_t *conf)
{
    __atomic_add_fetch(&conf->refs_, 1, __ATOMIC_RELAXED);
    return conf;
}

void hd_conf_unref(hd_conf_t *conf)
{
    if (conf != NULL && __atomic_sub_fetch(&conf->refs_, 1, __ATOMIC_ACQ_REL) == 0)
        conf_free(conf);
}

int hd_conf_restart_needed(const hd_conf_t *old, const hd_conf_t *new_, char *buf, size_t len)
{
    size_t i, pos = 0;
    int n = 0;

    if (buf != NULL && len > 0)
        buf[0] = '\0';
    for (i = 0; i < N_DIRECTIVES; i++) {
        const directive_t *d = &directives[i];
        if ((d->flags & F_RELOAD) || type_ops[d->type].equal(old, new_, d))
            continue;
        append(buf, len, &pos, "%s%s", n ? ", " : "", d->name);
        n++;
    }
    return n;
}

const char *hd_conf_log_level_name(int level)
{
    const choice_t *ch;

    for (ch = log_levels; ch->name != NULL; ch++) {
        if (ch->value == level)
            return ch->name;
    }
    return "unknown";
}

void hd_conf_print_reference(FILE *out)
{
    size_t i;

    for (i = 0; i < N_DIRECTIVES; i++) {
        const directive_t *d = &directives[i];
        fprintf(out, "%s# %s\n%s %s\n", i ? "\n" : "", d->desc, d->name, d->def);
    }
}
