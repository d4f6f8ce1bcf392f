/* SPDX-License-Identifier: MIT */
/*
 * hook_def.c: the authorize_hook directive's syntax (hook_def.h). The URL and the secrets are
 * the webhook directive's (webhook_def.c parses them), so a backend is reached and signs exactly
 * as a webhook endpoint does. Used by the conf loader and read by the hooks thread and the
 * transports; it uses neither.
 */
#include "herald/hook_def.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t whylen, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    for (char *p = why; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    return -1;
}

/* Digits then nothing (n) or a unit (ms, s, m, h) into milliseconds; plain digits are
 * seconds, as everywhere in the conf. Returns 0 or -1. */
static int parse_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t v = 0;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 10)
        v = v * 10 + (uint64_t)(s[n++] - '0');
    if (n == 0 || (s[n] >= '0' && s[n] <= '9'))
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].suffix) == 0) {
            *out = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 10)
        v = v * 10 + (uint64_t)(s[n++] - '0');
    if (n == 0 || s[n] != '\0' || v < min || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* "512", "64k", "16m", "1g" (1k = 1024 bytes) into bytes. Returns 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 12)
        v = v * 10 + (uint64_t)(s[n++] - '0');
    if (n == 0 || (s[n] >= '0' && s[n] <= '9'))
        return -1;
    const char *u = s + n;
    uint64_t mult = 1;
    if (*u == 'k' || *u == 'K')
        mult = 1024;
    else if (*u == 'm' || *u == 'M')
        mult = 1024 * 1024;
    else if (*u == 'g' || *u == 'G')
        mult = 1024 * 1024 * 1024;
    else if (*u != '\0')
        return -1;
    if (*u && u[1] != '\0')
        return -1;
    *out = v * mult; /* at most 12 digits times 2^30: no overflow */
    return 0;
}

/* An RFC 9110 token character (header and cookie names). */
static int is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int parse_names(char (*names)[HD_HOOK_NAME_MAX + 1], size_t *n, const char *v, int lower,
                       const char *what, char *why, size_t whylen)
{
    *n = 0;
    while (*v) {
        const char *e = strchr(v, ',');
        size_t len = e ? (size_t)(e - v) : strlen(v);
        if (*n == HD_HOOK_MAX_FORWARD)
            return fail(why, whylen, "%s: more than 16 names", what);
        if (len == 0 || len > HD_HOOK_NAME_MAX)
            return fail(why, whylen, "%s: a name is 1..64 token characters", what);
        for (size_t i = 0; i < len; i++) {
            if (!is_tchar(v[i]))
                return fail(why, whylen, "%s: \"%.64s\" is not a name (token characters only)",
                            what, v);
            names[*n][i] = lower && v[i] >= 'A' && v[i] <= 'Z' ? (char)(v[i] - 'A' + 'a') : v[i];
        }
        names[*n][len] = '\0';
        (*n)++;
        v += len + (e ? 1 : 0);
    }
    return 0;
}

int hd_hook_def_parse(hd_hook_def_t *out, int argc, const char *const *argv, char *why,
                      size_t whylen)
{
    static const char *const keys[] = {
        "secret",          "timeout",         "cache",       "cache_size",  "on_error",
        "forward_headers", "forward_cookies", "max_pending", "concurrency", "connect"};
    enum {
        K_SECRET,
        K_TIMEOUT,
        K_CACHE,
        K_CACHE_SIZE,
        K_ON_ERROR,
        K_HEADERS,
        K_COOKIES,
        K_PENDING,
        K_CONCURRENCY,
        K_CONNECT,
        K_N
    };
    hd_hook_def_t *d = out;
    const char *ep_argv[3];
    int ep_argc = 0;
    unsigned seen = 0;

    memset(d, 0, sizeof(*d));
    if (argc < 1)
        return fail(why, whylen,
                    "expected URL secret=whsec_.. [timeout=..] [cache=..] "
                    "[on_error=deny|allow] [forward_headers=..] [forward_cookies=..] "
                    "[connect=on|off]");
    ep_argv[ep_argc++] = argv[0];
    ep_argv[ep_argc++] = "name=authorize";
    d->timeout_ms = 2000;
    d->cache_size = 10000;
    d->max_pending = 1000;
    d->concurrency = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int k = hd_def_option(keys, K_N, a, &seen, &v,
                              "secret=, timeout=, cache=, cache_size=, on_error=, "
                              "forward_headers=, forward_cookies=, max_pending=, concurrency= "
                              "or connect=",
                              why, whylen);
        if (k < 0)
            return -1;
        switch (k) {
        case K_SECRET:
            ep_argv[ep_argc++] = a;
            break;
        case K_TIMEOUT:
            if (parse_ms(v, &d->timeout_ms) < 0 || d->timeout_ms < 10 || d->timeout_ms > 60000)
                return fail(why, whylen, "timeout: expected a duration in 10ms..60s, got \"%.40s\"",
                            v);
            break;
        case K_CACHE:
            if (parse_ms(v, &d->cache_ms) < 0 || d->cache_ms > 86400000)
                return fail(why, whylen, "cache: expected a duration in 0..24h, got \"%.40s\"", v);
            break;
        case K_CACHE_SIZE:
            if (parse_u32(v, 1, 1000000, &d->cache_size) < 0)
                return fail(why, whylen, "cache_size: expected 1..1000000, got \"%.40s\"", v);
            break;
        case K_ON_ERROR:
            if (strcmp(v, "deny") != 0 && strcmp(v, "allow") != 0)
                return fail(why, whylen, "on_error: expected deny or allow, got \"%.40s\"", v);
            d->allow_on_error = strcmp(v, "allow") == 0;
            break;
        case K_HEADERS:
            if (parse_names(d->headers, &d->n_headers, v, 1, "forward_headers", why, whylen) < 0)
                return -1;
            break;
        case K_COOKIES:
            if (parse_names(d->cookies, &d->n_cookies, v, 0, "forward_cookies", why, whylen) < 0)
                return -1;
            break;
        case K_PENDING:
            if (parse_u32(v, 1, 1000000, &d->max_pending) < 0)
                return fail(why, whylen, "max_pending: expected 1..1000000, got \"%.40s\"", v);
            break;
        case K_CONCURRENCY:
            if (parse_u32(v, 1, 1024, &d->concurrency) < 0)
                return fail(why, whylen, "concurrency: expected 1..1024, got \"%.40s\"", v);
            break;
        default:
            if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
                return fail(why, whylen, "connect: expected on or off, got \"%.40s\"", v);
            d->ask_connect = strcmp(v, "on") == 0;
            break;
        }
    }
    if (hd_webhook_def_parse(&d->ep, 1, ep_argc, ep_argv, why, whylen) < 0)
        return -1;
    return 0;
}

static int parse_events(unsigned *events, const char *v, char *why, size_t whylen)
{
    static const struct {
        const char *name;
        unsigned bit;
    } evs[] = {{"connect", HD_NOTIFY_CONNECT},
               {"disconnect", HD_NOTIFY_DISCONNECT},
               {"subscribe", HD_NOTIFY_SUBSCRIBE},
               {"unsubscribe", HD_NOTIFY_UNSUBSCRIBE}};
    *events = 0;
    while (*v || *events == 0) {
        const char *e = strchr(v, ',');
        size_t len = e ? (size_t)(e - v) : strlen(v), k;
        for (k = 0; k < sizeof(evs) / sizeof(evs[0]); k++) {
            if (strlen(evs[k].name) == len && strncmp(v, evs[k].name, len) == 0)
                break;
        }
        if (k == sizeof(evs) / sizeof(evs[0]))
            return fail(why, whylen,
                        "events: unknown event \"%.*s\" (connect, disconnect, subscribe, "
                        "unsubscribe)",
                        (int)(len > 40 ? 40 : len), v);
        *events |= evs[k].bit;
        v += len + (e ? 1 : 0);
    }
    return 0;
}

int hd_notify_def_parse(hd_notify_def_t *out, int argc, const char *const *argv, char *why,
                        size_t whylen)
{
    static const char *const keys[] = {"secret",     "events",     "batch",  "flush",
                                       "queue_size", "max_memory", "timeout"};
    enum { K_SECRET, K_EVENTS, K_BATCH, K_FLUSH, K_QUEUE, K_MEMORY, K_TIMEOUT, K_N };
    hd_notify_def_t *d = out;
    const char *ep_argv[3];
    int ep_argc = 0;
    unsigned seen = 0;

    memset(d, 0, sizeof(*d));
    if (argc < 1)
        return fail(why, whylen,
                    "expected URL secret=whsec_.. [events=..] [batch=N] [flush=..] "
                    "[queue_size=N] [max_memory=SIZE] [timeout=..]");
    ep_argv[ep_argc++] = argv[0];
    ep_argv[ep_argc++] = "name=notify";
    d->events =
        HD_NOTIFY_CONNECT | HD_NOTIFY_DISCONNECT | HD_NOTIFY_SUBSCRIBE | HD_NOTIFY_UNSUBSCRIBE;
    d->batch = 100;
    d->flush_ms = 1000;
    d->queue_size = 100000;
    d->max_memory_bytes = (uint64_t)64 << 20;
    d->timeout_ms = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int k = hd_def_option(
            keys, K_N, a, &seen, &v,
            "secret=, events=, batch=, flush=, queue_size=, max_memory= or timeout=", why, whylen);
        if (k < 0)
            return -1;
        switch (k) {
        case K_SECRET:
            ep_argv[ep_argc++] = a;
            break;
        case K_EVENTS:
            if (parse_events(&d->events, v, why, whylen) < 0)
                return -1;
            break;
        case K_BATCH:
            if (parse_u32(v, 1, 10000, &d->batch) < 0)
                return fail(why, whylen, "batch: expected 1..10000, got \"%.40s\"", v);
            break;
        case K_FLUSH:
            if (parse_ms(v, &d->flush_ms) < 0 || d->flush_ms > 60000)
                return fail(why, whylen, "flush: expected a duration in 0..60s, got \"%.40s\"", v);
            break;
        case K_QUEUE:
            if (parse_u32(v, 1, 10000000, &d->queue_size) < 0)
                return fail(why, whylen, "queue_size: expected 1..10000000, got \"%.40s\"", v);
            break;
        case K_MEMORY:
            if (parse_size(v, &d->max_memory_bytes) < 0 || d->max_memory_bytes < 64 * 1024 ||
                d->max_memory_bytes > (uint64_t)16 << 30)
                return fail(why, whylen,
                            "max_memory: expected a size in 64k..16g (bytes, or with k, m, g), "
                            "got \"%.40s\"",
                            v);
            break;
        default:
            if (parse_ms(v, &d->timeout_ms) < 0 || d->timeout_ms < 10 || d->timeout_ms > 60000)
                return fail(why, whylen, "timeout: expected a duration in 10ms..60s, got \"%.40s\"",
                            v);
            break;
        }
    }
    if (hd_webhook_def_parse(&d->ep, 1, ep_argc, ep_argv, why, whylen) < 0)
        return -1;
    return 0;
}
