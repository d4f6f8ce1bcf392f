/* SPDX-License-Identifier: MIT */
/*
 * values.c: the configuration's value types (conf_internal.h): for each, the setter that parses
 * a directive's words into its hd_conf_t field with the directive's range, the disposer and the
 * comparison hd_conf_restart_needed uses; and the table of every type's operations. The hooks'
 * definitions (webhook, authorize_hook, notify_hook) are hook_values.c's; the error messages,
 * which name file, line and directive, errors.c's.
 */
#include "conf_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

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
        return hd_conf_fail(ld, ld->origin, d->name, "expected %s%s in %s..%s, got \"%s\"",
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
        return hd_conf_fail(ld, ld->origin, d->name,
                            "expected on or off (yes/no, true/false), got \"%s\"", argv[0]);
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
        return hd_conf_fail(ld, ld->origin, d->name, "expected a non-empty value");
    if (d->none != NULL && (s[0] == '\0' || is_word_of(s, d->none))) {
        free(*field);
        *field = NULL;
        return 0;
    }
    if (d->check != NULL) {
        char why[256];
        if (d->check(s, why, sizeof(why)) < 0)
            return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
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
        hd_conf_append(words, sizeof(words), &pos, "%s%s", ch == d->choices ? "" : ", ", ch->name);
    return hd_conf_fail(ld, ld->origin, d->name, "expected one of %s, got \"%s\"", words, argv[0]);
}

/* ---- listen ---------------------------------------------------------------------------------- */

static const char listen_syntax[] =
    "ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, [::1]:8080 or *:8443 tls";

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
        return hd_conf_fail(ld, ld->origin, d->name, "address too long: \"%s\"", s);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return hd_conf_fail(ld, ld->origin, d->name, "expected %s, got \"%s\"", listen_syntax,
                                s);
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        is_v6 = 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return hd_conf_fail(ld, ld->origin, d->name,
                                "expected %s (IPv6 in brackets), got \"%s\"", listen_syntax, s);
        hlen = (size_t)(colon - s);
    }
    if (parse_uint(colon + 1, &port) != 0 || port > 65535)
        return hd_conf_fail(ld, ld->origin, d->name, "expected a port in 0..65535, got \"%s\"", s);
    if (hlen == 0 || hlen >= sizeof(host))
        return hd_conf_fail(ld, ld->origin, d->name, "expected %s, got \"%s\"", listen_syntax, s);
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
        return hd_conf_fail(ld, ld->origin, d->name,
                            "\"%s\" is not a numeric IPv%d address in \"%s\"", host, is_v6 ? 6 : 4,
                            s);
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
    /* Flags after the address, in any order, each at most once. */
    for (int k = 1; k < argc; k++) {
        int seen;
        if (strcmp(argv[k], "tls") == 0) {
            seen = l.is_tls;
            l.is_tls = 1;
        } else if (strcmp(argv[k], "admin") == 0) {
            seen = l.is_admin;
            l.is_admin = 1;
        } else if (strcmp(argv[k], "proxy_protocol") == 0) {
            seen = l.is_proxy;
            l.is_proxy = 1;
        } else {
            return hd_conf_fail(ld, ld->origin, d->name,
                                "expected \"tls\", \"admin\" or \"proxy_protocol\" after the "
                                "address, got \"%s\"",
                                argv[k]);
        }
        if (seen)
            return hd_conf_fail(ld, ld->origin, d->name, "\"%s\" given twice", argv[k]);
    }
    /* Port 0 asks for an ephemeral port: two of those are two listeners, not a repeat. */
    for (i = 0; i < c->n_listens && listen_port(&l) != 0; i++) {
        if (same_listen_addr(&c->listens[i], &l)) {
            char first[256];
            size_t pos = 0;
            hd_conf_append_origin(ld, first, sizeof(first), &pos, ld->listen_origin[i]);
            return hd_conf_fail(ld, ld->origin, d->name,
                                "\"%s\" is the same address as \"%s\" at %s", l.text,
                                c->listens[i].text, first);
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
            a->listens[i].is_tls != b->listens[i].is_tls ||
            a->listens[i].is_admin != b->listens[i].is_admin ||
            a->listens[i].is_proxy != b->listens[i].is_proxy)
            return 0;
    }
    return 1;
}

/* ---- lists of words -------------------------------------------------------------------------- */

static hd_strlist_t *list_field(hd_conf_t *c, const directive_t *d)
{
    HD_ASSERT(d->size == sizeof(hd_strlist_t));
    return (hd_strlist_t *)(void *)((char *)c + d->offset);
}

/*
 * Adds the line's words to the list. The directive is repeatable (F_MULTI): each line adds its
 * words, so rotating a key is one more line. A "none" word ("off") stands alone and adds nothing;
 * after words it is a contradiction, refused. Words are never echoed in messages: they may be
 * secrets (keys).
 */
static int set_list(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_strlist_t *l = list_field(ld->conf, d);
    int i;

    for (i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (s[0] == '\0' || is_word_of(s, d->none)) {
            if (argc > 1)
                return hd_conf_fail(ld, ld->origin, d->name, "\"%s\" must be the only value", s);
            if (l->n > 0)
                return hd_conf_fail(ld, ld->origin, d->name,
                                    "\"%s\" after values given on another line: keep one or "
                                    "the other",
                                    s);
            return 0;
        }
        if (d->check != NULL) {
            char why[256];
            if (d->check(s, why, sizeof(why)) < 0)
                return hd_conf_fail(ld, ld->origin, d->name, "value %d: %s", i + 1, why);
        }
    }
    l->v = hd_realloc(l->v, (l->n + (size_t)argc) * sizeof(*l->v));
    for (i = 0; i < argc; i++)
        l->v[l->n++] = hd_strdup(argv[i]);
    return 0;
}

static void dispose_list(hd_conf_t *c, const directive_t *d)
{
    hd_strlist_t *l = list_field(c, d);

    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int equal_list(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    const hd_strlist_t *x = (const hd_strlist_t *)(const void *)((const char *)a + d->offset);
    const hd_strlist_t *y = (const hd_strlist_t *)(const void *)((const char *)b + d->offset);

    if (x->n != y->n)
        return 0;
    for (size_t i = 0; i < x->n; i++) {
        if (strcmp(x->v[i], y->v[i]) != 0)
            return 0;
    }
    return 1;
}

/* ---- channel_rule ---------------------------------------------------------------------------- */

static void dispose_rule(hd_conf_t *c, const directive_t *d)
{
    (void)d;
    free(c->channel_rules);
    c->channel_rules = NULL;
    c->n_channel_rules = 0;
}

static int set_rule(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_auth_rule_t r;
    char why[256];

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        dispose_rule(c, d);
        return 0;
    }
    if (hd_auth_rule_parse(&r, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    for (size_t i = 0; i < c->n_channel_rules; i++) {
        if (strcmp(c->channel_rules[i].pattern, r.pattern) == 0)
            return hd_conf_fail(ld, ld->origin, d->name, "pattern \"%s\" given twice", r.pattern);
    }
    c->channel_rules =
        hd_realloc(c->channel_rules, (c->n_channel_rules + 1) * sizeof(*c->channel_rules));
    c->channel_rules[c->n_channel_rules++] = r;
    return 0;
}

static int equal_rule(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    (void)d;
    return hd_conf_same_items(a->channel_rules, a->n_channel_rules, b->channel_rules,
                              b->n_channel_rules, sizeof(*a->channel_rules));
}

/* ---- address ranges (trusted_proxies) ------------------------------------------------------ */

static hd_cidr_list_t *cidrs_field(hd_conf_t *c, const directive_t *d)
{
    HD_ASSERT(d->size == sizeof(hd_cidr_list_t));
    return (hd_cidr_list_t *)(void *)((char *)c + d->offset);
}

static void dispose_cidrs(hd_conf_t *c, const directive_t *d)
{
    hd_cidr_list_t *l = cidrs_field(c, d);

    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Each word adds a range; one line may hold several, and the directive repeats (F_MULTI). */
static int set_cidrs(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_cidr_list_t *l = cidrs_field(ld->conf, d);

    if (argc == 1 && d->none != NULL && is_word_of(argv[0], d->none)) {
        dispose_cidrs(ld->conf, d);
        return 0;
    }
    for (int k = 0; k < argc; k++) {
        hd_cidr_t c;
        char why[256];
        if (hd_cidr_parse(&c, argv[k], why, sizeof(why)) != 0)
            return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
        l->v = hd_realloc(l->v, (l->n + 1) * sizeof(*l->v));
        l->v[l->n++] = c;
    }
    return 0;
}

static int equal_cidrs(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    const hd_cidr_list_t *x = cidrs_field((hd_conf_t *)a, d), *y = cidrs_field((hd_conf_t *)b, d);

    return hd_conf_same_items(x->v, x->n, y->v, y->n, sizeof(*x->v));
}

const type_ops_t hd_conf_type_ops[T_NTYPES] = {
    [T_UINT] = {"N", 1, 1, set_uint, dispose_nothing, equal_bytes},
    [T_SIZE] = {"SIZE", 1, 1, set_size, dispose_nothing, equal_bytes},
    [T_DURATION] = {"DURATION", 1, 1, set_duration, dispose_nothing, equal_bytes},
    [T_BOOL] = {"on|off", 1, 1, set_bool, dispose_nothing, equal_bytes},
    [T_STRING] = {"VALUE", 1, 1, set_string, dispose_string, equal_string},
    [T_ENUM] = {"WORD", 1, 1, set_enum, dispose_nothing, equal_bytes},
    [T_LISTEN] = {"ADDR:PORT [tls] [admin] [proxy_protocol]", 1, 4, set_listen, dispose_listen,
                  equal_listen},
    [T_RULE] = {"PATTERN [KEY=VALUE ...]", 1, 4, set_rule, dispose_rule, equal_rule},
    [T_LIST] = {"VALUE [VALUE ...]", 1, MAX_VALUES, set_list, dispose_list, equal_list},
    [T_CIDRS] = {"ADDR[/BITS] ...", 1, MAX_VALUES, set_cidrs, dispose_cidrs, equal_cidrs},
    [T_WEBHOOK] = {"URL [name=..] [channels=..] secret=whsec_.. [events=..]", 1, 5,
                   hd_conf_set_webhook, hd_conf_dispose_webhook, hd_conf_equal_webhook},
    [T_HOOK] = {"URL secret=whsec_.. [KEY=VALUE ...]", 1, 12, hd_conf_set_hook,
                hd_conf_dispose_hook, hd_conf_equal_hook},
    [T_NOTIFY] = {"URL secret=whsec_.. [KEY=VALUE ...]", 1, 8, hd_conf_set_notify,
                  hd_conf_dispose_notify, hd_conf_equal_notify},
};
