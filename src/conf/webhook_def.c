/* SPDX-License-Identifier: MIT */
/*
 * webhook_def.c: the webhook directive's syntax (webhook_def.h). Used by the conf loader, which
 * checks each line, and by the webhook sender (src/hooks/), which reads the parsed form; it
 * uses neither. The secrets are decoded here once, so the sender never parses base64.
 */
#include "herald/webhook_def.h"

#include <openssl/evp.h>
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
    /* one printable line whatever was written */
    for (char *p = why; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    return -1;
}

int hd_def_option(const char *const *keys, size_t n, const char *arg, unsigned *seen,
                  const char **value, const char *expected, char *why, size_t whylen)
{
    const char *eq = strchr(arg, '=');
    for (size_t k = 0; eq && k < n; k++) {
        size_t kl = strlen(keys[k]);
        if ((size_t)(eq - arg) != kl || strncmp(arg, keys[k], kl) != 0)
            continue;
        if (*seen & (1u << k))
            return fail(why, whylen, "%s= given twice", keys[k]);
        *seen |= 1u << k;
        *value = eq + 1;
        return (int)k;
    }
    return fail(why, whylen, "unknown option \"%.60s\": expected %s", arg, expected);
}

static int is_host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

static int parse_url(hd_webhook_def_t *d, const char *url, char *why, size_t whylen)
{
    size_t n = strlen(url);
    const char *p, *host, *host_end;

    if (n == 0 || n > HD_WEBHOOK_URL_MAX)
        return fail(why, whylen, "the URL must be 1..512 bytes%s", "");
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)url[i] <= ' ' || (unsigned char)url[i] >= 0x7f)
            return fail(why, whylen, "the URL must be printable ASCII without spaces%s", "");
    }
    memcpy(d->url, url, n + 1);
    if (strncmp(url, "https://", 8) == 0) {
        d->is_tls = 1;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return fail(why, whylen, "expected an http:// or https:// URL, got \"%.200s\"", url);
    }
    if (strchr(url, '#'))
        return fail(why, whylen, "a webhook URL has no #fragment: \"%.200s\"", url);
    const char *auth_end = strpbrk(p, "/?");
    const char *at = strchr(p, '@');
    if (at && (!auth_end || at < auth_end))
        return fail(why, whylen, "no user info in a webhook URL (the secret signs instead)%s", "");
    if (*p == '[') {
        host = ++p;
        while (*p && *p != ']')
            p++;
        if (*p != ']' || p == host)
            return fail(why, whylen, "bad IPv6 address in \"%.200s\"", url);
        host_end = p++;
    } else {
        host = p;
        while (is_host_char(*p))
            p++;
        host_end = p;
    }
    if (host_end == host || (size_t)(host_end - host) >= sizeof(d->host))
        return fail(why, whylen, "no host (or a bad one) in \"%.200s\"", url);
    memcpy(d->host, host, (size_t)(host_end - host));
    d->host[host_end - host] = '\0';
    unsigned long port = d->is_tls ? 443 : 80;
    if (*p == ':') {
        const char *digits = ++p;
        port = 0;
        while (*p >= '0' && *p <= '9' && p - digits < 6)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == digits || port == 0 || port > 65535)
            return fail(why, whylen, "bad port in \"%.200s\"", url);
    }
    if (*p != '\0' && *p != '/' && *p != '?')
        return fail(why, whylen, "bad host in \"%.200s\"", url);
    d->port = (uint16_t)port;
    snprintf(d->target, sizeof(d->target), "%s%s", *p == '?' ? "/" : "", *p ? p : "/");
    int bracket = strchr(d->host, ':') != NULL;
    if ((d->is_tls && port == 443) || (!d->is_tls && port == 80))
        snprintf(d->host_header, sizeof(d->host_header), "%s%s%s", bracket ? "[" : "", d->host,
                 bracket ? "]" : "");
    else
        snprintf(d->host_header, sizeof(d->host_header), "%s%s%s:%lu", bracket ? "[" : "", d->host,
                 bracket ? "]" : "", port);
    return 0;
}

/* Copies one comma-separated item of *s (advanced past it) into out[cap]; its length, or -1
 * when longer than cap - 1. */
static int next_item(const char **s, char *out, size_t cap)
{
    const char *e = strchr(*s, ',');
    size_t n = e ? (size_t)(e - *s) : strlen(*s);
    if (n >= cap)
        return -1;
    memcpy(out, *s, n);
    out[n] = '\0';
    *s += n + (e ? 1 : 0);
    return (int)n;
}

static int valid_pattern(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 129)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '*' && i == n - 1)
            return n <= 129;
        if (!(is_host_char(ch) || ch == ':' || ch == '@'))
            return 0;
    }
    return n <= 128;
}

static int parse_channels(hd_webhook_def_t *d, const char *v, char *why, size_t whylen)
{
    d->n_patterns = 0;
    while (*v || d->n_patterns == 0) {
        char item[160];
        if (d->n_patterns == HD_WEBHOOK_MAX_PATTERNS)
            return fail(why, whylen, "more than 16 channel patterns%s", "");
        if (next_item(&v, item, sizeof(item)) < 0 || !valid_pattern(item))
            return fail(why, whylen,
                        "bad channel pattern \"%.140s\": a channel name, or a prefix and '*' "
                        "(room:*), or *",
                        item);
        memcpy(d->patterns[d->n_patterns++], item, strlen(item) + 1);
    }
    return 0;
}

static int parse_secrets(hd_webhook_def_t *d, const char *v, char *why, size_t whylen)
{
    d->n_keys = 0;
    while (*v || d->n_keys == 0) {
        char item[200];
        if (d->n_keys == HD_WEBHOOK_MAX_SECRETS)
            return fail(why, whylen, "more than 4 secrets (rotation needs two)%s", "");
        int n = next_item(&v, item, sizeof(item));
        if (n < 6 || strncmp(item, "whsec_", 6) != 0 || (n - 6) % 4 != 0 || n - 6 > 88)
            goto bad;
        unsigned char raw[96];
        int len = EVP_DecodeBlock(raw, (const unsigned char *)item + 6, n - 6);
        if (len < 0)
            goto bad;
        if (n > 6 && item[n - 1] == '=')
            len--;
        if (n > 7 && item[n - 2] == '=')
            len--;
        if (len < HD_WEBHOOK_KEY_MIN || len > HD_WEBHOOK_KEY_MAX)
            goto bad;
        memcpy(d->keys[d->n_keys], raw, (size_t)len);
        d->key_lens[d->n_keys++] = (size_t)len;
        continue;
    bad:
        return fail(why, whylen,
                    "a secret is whsec_ followed by the base64 of 16..64 random bytes (Standard "
                    "Webhooks)%s",
                    "");
    }
    return 0;
}

static int parse_events(hd_webhook_def_t *d, const char *v, char *why, size_t whylen)
{
    d->events = 0;
    while (*v || d->events == 0) {
        char item[64];
        if (next_item(&v, item, sizeof(item)) < 0)
            item[0] = '\0';
        if (strcmp(item, "message.published") == 0)
            d->events |= HD_WEBHOOK_EV_MESSAGE;
        else if (strcmp(item, "channel.occupied") == 0)
            d->events |= HD_WEBHOOK_EV_OCCUPIED;
        else if (strcmp(item, "channel.vacated") == 0)
            d->events |= HD_WEBHOOK_EV_VACATED;
        else if (strcmp(item, "member.added") == 0)
            d->events |= HD_WEBHOOK_EV_MEMBER_ADDED;
        else if (strcmp(item, "member.removed") == 0)
            d->events |= HD_WEBHOOK_EV_MEMBER_REMOVED;
        else
            return fail(why, whylen,
                        "unknown event \"%.60s\": expected message.published, channel.occupied, "
                        "channel.vacated, member.added or member.removed",
                        item);
    }
    return 0;
}

/* pipeline=N: 1..HD_WEBHOOK_PIPELINE_MAX, in decimal. */
static int parse_pipeline(hd_webhook_def_t *d, const char *v, char *why, size_t whylen)
{
    unsigned n = 0;
    size_t len = strlen(v);
    for (size_t i = 0; i < len && n <= HD_WEBHOOK_PIPELINE_MAX; i++) {
        if (v[i] < '0' || v[i] > '9') {
            n = 0;
            break;
        }
        n = n * 10 + (unsigned)(v[i] - '0');
    }
    if (n < 1 || n > HD_WEBHOOK_PIPELINE_MAX)
        return fail(why, whylen,
                    "pipeline= is the requests on one connection before their answers: 1..%d, "
                    "not \"%.20s\"",
                    HD_WEBHOOK_PIPELINE_MAX, v);
    d->pipeline = n;
    return 0;
}

int hd_webhook_def_parse(hd_webhook_def_t *out, unsigned index, int argc, const char *const *argv,
                         char *why, size_t whylen)
{
    hd_webhook_def_t *d = out;
    memset(d, 0, sizeof(*d));
    if (argc < 1)
        return fail(why, whylen,
                    "expected URL [name=..] [channels=..] secret=whsec_.. [events=..] "
                    "[pipeline=..]%s",
                    "");
    if (parse_url(d, argv[0], why, whylen) < 0)
        return -1;
    snprintf(d->name, sizeof(d->name), "webhook-%u", index);
    strcpy(d->patterns[0], "*");
    d->n_patterns = 1;
    d->events = HD_WEBHOOK_EV_MESSAGE;
    d->pipeline = 1;
    unsigned seen = 0;
    for (int i = 1; i < argc; i++) {
        static const char *const keys[] = {"name", "channels", "secret", "events", "pipeline"};
        const char *a = argv[i], *v;
        int k = hd_def_option(keys, 5, a, &seen, &v,
                              "name=, channels=, secret=, events= or pipeline=", why, whylen);
        if (k < 0)
            return -1;
        int rc = 0;
        if (k == 0) {
            size_t n = strlen(v);
            for (size_t j = 0; j < n; j++)
                if (!is_host_char(v[j]))
                    n = 0;
            if (n == 0 || n > HD_WEBHOOK_NAME_MAX || strcmp(v, "dead-letters") == 0)
                return fail(why, whylen,
                            "a name is 1..64 characters of A-Z a-z 0-9 . _ - (not dead-letters)%s",
                            "");
            memcpy(d->name, v, n + 1);
        } else if (k == 1) {
            rc = parse_channels(d, v, why, whylen);
        } else if (k == 2) {
            rc = parse_secrets(d, v, why, whylen);
        } else if (k == 3) {
            rc = parse_events(d, v, why, whylen);
        } else {
            rc = parse_pipeline(d, v, why, whylen);
        }
        if (rc < 0)
            return -1;
    }
    if (d->n_keys == 0)
        return fail(why, whylen,
                    "secret=whsec_... is required: every delivery is signed (Standard Webhooks)%s",
                    "");
    return 0;
}

int hd_webhook_def_matches(const hd_webhook_def_t *def, const char *channel, size_t len)
{
    return hd_webhook_patterns_match(def->patterns, def->n_patterns, channel, len);
}

int hd_webhook_patterns_match(const char (*patterns)[HD_WEBHOOK_PATTERN_SIZE], size_t n_patterns,
                              const char *channel, size_t len)
{
    for (size_t i = 0; i < n_patterns; i++) {
        const char *p = patterns[i];
        size_t n = strlen(p);
        if (n > 0 && p[n - 1] == '*') {
            if (len >= n - 1 && memcmp(channel, p, n - 1) == 0)
                return 1;
        } else if (n == len && memcmp(channel, p, len) == 0) {
            return 1;
        }
    }
    return 0;
}
