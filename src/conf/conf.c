/* SPDX-License-Identifier: MIT */
/*
 * conf.c: the configuration loader: the line tokenizer, the -o override rules, loading a
 * snapshot and the checks that span directives, and the API of include/herald/conf.h. The table
 * of directives is in directives.c, the value types in values.c and hook_values.c, the error
 * messages in errors.c (conf_internal.h).
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
#include "conf_internal.h"

#include "herald/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_LINE 4096             /* bytes per line, without its line ending */
#define MAX_FILE (1024 * 1024)    /* a conf file larger than this is a mistake */
#define MAX_ARGS (MAX_VALUES + 1) /* words kept per line; more are only counted */

/* ---- lines ----------------------------------------------------------------------------------- */

static const directive_t *find_directive(const char *name)
{
    size_t i;

    for (i = 0; i < hd_conf_n_directives; i++) {
        if (strcmp(hd_conf_directives[i].name, name) == 0)
            return &hd_conf_directives[i];
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
        return hd_conf_fail(ld, ld->origin, NULL, "line longer than %d bytes", MAX_LINE);
    argc = split_line(s, len, buf, argv, &why);
    if (argc < 0)
        return hd_conf_fail(ld, ld->origin, NULL, "%s", why);
    if (argc == 0) {
        if (ld->origin < 0)
            return hd_conf_fail(ld, ld->origin, NULL, "expected \"DIRECTIVE VALUE\"");
        return 0;
    }
    if ((d = find_directive(argv[0])) == NULL)
        return hd_conf_fail(ld, ld->origin, NULL, "unknown directive \"%s\"", argv[0]);
    ops = &hd_conf_type_ops[d->type];
    set_at = &ld->set_at[d - hd_conf_directives];
    if (argc - 1 < ops->min_args || argc - 1 > ops->max_args) {
        if (ops->min_args == ops->max_args)
            return hd_conf_fail(
                ld, ld->origin, d->name, "expected %d value, got %d%s", ops->min_args, argc - 1,
                d->type == T_STRING && argc > 2 ? " (put a value with spaces in quotes)" : "");
        return hd_conf_fail(ld, ld->origin, d->name, "expected %d to %d values (%s), got %d",
                            ops->min_args, ops->max_args, ops->syntax, argc - 1);
    }
    if (ld->origin > 0 && *set_at > 0 && !(d->flags & F_MULTI))
        return hd_conf_fail(ld, ld->origin, d->name, "duplicate directive, first set on line %d",
                            *set_at);
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

/* The origin of the first of these directives that was set (0: none). */
static int first_set(const loader_t *ld, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const directive_t *d = find_directive(names[i]);
        if (ld->set_at[d - hd_conf_directives] != 0)
            return ld->set_at[d - hd_conf_directives];
    }
    return 0;
}

/* The snapshot's policy (auth.h): reads the key files now, so a bad key fails the load (and a
 * SIGHUP rereads a JWKS). */
static int build_auth(loader_t *ld)
{
    static const char *const key_names[] = {"auth_jwks", "auth_jwt_public_key", "auth_jwt_secret",
                                            "auth_jwt_alg"};
    hd_conf_t *c = ld->conf;
    hd_auth_params_t p = {
        .jwt_alg = c->auth_jwt_alg,
        .jwt_secret = c->auth_jwt_secret,
        .jwt_public_key = c->auth_jwt_public_key,
        .jwks = c->auth_jwks,
        .issuer = c->auth_jwt_issuer,
        .audience = c->auth_jwt_audience,
        .clock_skew_ms = c->auth_clock_skew_ms,
        .rules = c->channel_rules,
        .n_rules = c->n_channel_rules,
    };
    char why[512];

    if (hd_auth_new(&c->auth, &p, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, first_set(ld, key_names, HD_ARRAY_SIZE(key_names)), NULL, "%s",
                            why);
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
            return hd_conf_fail(ld, ld->listen_origin[i], "listen", "tls listener %s needs %s",
                                c->listens[i].text, missing);
    }
    if (c->tls_certificate != NULL && c->tls_certificate_key == NULL)
        return hd_conf_fail(ld, ld->set_at[cert - hd_conf_directives], cert->name, "set without %s",
                            key->name);
    if (c->tls_certificate_key != NULL && c->tls_certificate == NULL)
        return hd_conf_fail(ld, ld->set_at[key - hd_conf_directives], key->name, "set without %s",
                            cert->name);
    /* With Redis, a webhook delivery another node sees idle for webhook_claim_after is taken
     * over: a node still waiting for its answer must not be overtaken. */
    if (c->redis != NULL && (c->n_webhooks > 0 || c->webhook_max_endpoints > 0) &&
        c->webhook_claim_after_ms <= c->webhook_connect_timeout_ms + c->webhook_timeout_ms) {
        const directive_t *claim = find_directive("webhook_claim_after");
        const directive_t *tmo = find_directive("webhook_timeout");
        int at = ld->set_at[claim - hd_conf_directives];
        return hd_conf_fail(
            ld, at ? at : ld->set_at[tmo - hd_conf_directives], claim->name,
            "%llu ms must be longer than webhook_connect_timeout + "
            "webhook_timeout (%llu ms): a node still waiting for a receiver's "
            "answer would see another node take the delivery over",
            (unsigned long long)c->webhook_claim_after_ms,
            (unsigned long long)(c->webhook_connect_timeout_ms + c->webhook_timeout_ms));
    }
    if (!c->authorize_hook) {
        const directive_t *rule = find_directive("channel_rule");
        for (i = 0; i < c->n_channel_rules; i++) {
            if (c->channel_rules[i].subscribe == HD_AUTH_SUB_HOOK)
                return hd_conf_fail(ld, ld->set_at[rule - hd_conf_directives], rule->name,
                                    "%s: subscribe=hook needs authorize_hook (the backend to ask)",
                                    c->channel_rules[i].pattern);
        }
    }
    return build_auth(ld);
}

static void conf_free(hd_conf_t *c)
{
    size_t i;

    for (i = 0; i < hd_conf_n_directives; i++)
        hd_conf_type_ops[hd_conf_directives[i].type].dispose(c, &hd_conf_directives[i]);
    hd_auth_free(c->auth);
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
    ld.set_at = hd_calloc(hd_conf_n_directives, sizeof(*ld.set_at));
    ld.conf = hd_calloc(1, sizeof(*ld.conf));
    ld.conf->refs_ = 1;
    ld.conf->path = hd_strdup(name);
    ld.name = name[0] != '\0' ? name : "(defaults)";
    ld.overrides = overrides;
    ld.err = err;
    ld.errlen = errlen;

    for (i = 0; i < hd_conf_n_directives; i++) {
        const char *def = hd_conf_directives[i].def;
        /* A default the setter refuses is a bug in the table, caught by the first load. */
        rc = hd_conf_type_ops[hd_conf_directives[i].type].set(&ld, &hd_conf_directives[i], 1, &def);
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
    free(ld.set_at);
    *out = ld.conf;
    return 0;

fail:
    free(ld.listen_origin);
    free(ld.set_at);
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
    for (i = 0; i < hd_conf_n_directives; i++) {
        const directive_t *d = &hd_conf_directives[i];
        if ((d->flags & F_RELOAD) || hd_conf_type_ops[d->type].equal(old, new_, d))
            continue;
        hd_conf_append(buf, len, &pos, "%s%s", n ? ", " : "", d->name);
        n++;
    }
    return n;
}

void hd_conf_print_reference(FILE *out)
{
    size_t i;

    for (i = 0; i < hd_conf_n_directives; i++) {
        const directive_t *d = &hd_conf_directives[i];
        fprintf(out, "%s# %s\n%s %s\n", i ? "\n" : "", d->desc, d->name, d->def);
    }
}
