/* SPDX-License-Identifier: MIT */
/*
 * test_conf.c: unit tests of src/conf/ (conf.c, directives.c, values.c, hook_values.c, errors.c):
 * defaults, every value type with its suffixes and ranges, every error message, the line syntax, -o
 * overrides, the TLS checks, restart_needed, and the shipped conf/herald.conf, whole, cut at every
 * line and at every byte.
 *
 * It includes the .c files under test to reach the table and the parsers of types no directive uses
 * yet (bool).
 */
#include "conf/conf.c"
#include "conf/directives.c"
#include "conf/values.c"
#include "conf/hook_values.c"
#include "conf/errors.c"

#include "test.h"

#include <arpa/inet.h>
#include <sys/stat.h>

static char err[1024];

/* Loads `text` as file "t.conf" with the given overrides; fails the test on an error. */
static hd_conf_t *load_ok_(const char *text, const char *const *ov, size_t n_ov, int line)
{
    hd_conf_t *c = NULL;
    int rc = hd_conf_load_string(&c, "t.conf", text, ov, n_ov, err, sizeof(err));

    if (rc != 0 || c == NULL) {
        fprintf(stderr, "%s:%d: FAIL: loading \"%s\": %d: %s\n", __FILE__, line, text, rc, err);
        exit(1);
    }
    test_checks_++;
    return c;
}
#define LOAD_OK(text) load_ok_((text), NULL, 0, __LINE__)
#define LOAD_OK_O(text, ...)                                                                       \
    load_ok_((text), (const char *const[]){__VA_ARGS__},                                           \
             sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), __LINE__)

/* Loads `text`, expects HD_ECONF, no snapshot, and exactly the message `want`. */
static void load_err_(const char *text, const char *const *ov, size_t n_ov, const char *want,
                      int line)
{
    hd_conf_t *c = (hd_conf_t *)&c;
    int rc = hd_conf_load_string(&c, "t.conf", text, ov, n_ov, err, sizeof(err));

    test_checks_++;
    if (rc != HD_ECONF || c != NULL || strcmp(err, want) != 0) {
        fprintf(stderr, "%s:%d: FAIL: loading \"%s\": rc %d, message\n  got:  %s\n  want: %s\n",
                __FILE__, line, text, rc, err, want);
        exit(1);
    }
}
#define LOAD_ERR(text, want) load_err_((text), NULL, 0, (want), __LINE__)
#define LOAD_ERR_O(text, want, ...)                                                                \
    load_err_((text), (const char *const[]){__VA_ARGS__},                                          \
              sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), (want), __LINE__)

/* Whether two snapshots agree on every directive of the table. */
static int conf_same(const hd_conf_t *a, const hd_conf_t *b)
{
    size_t i;

    for (i = 0; i < hd_conf_n_directives; i++) {
        if (!hd_conf_type_ops[hd_conf_directives[i].type].equal(a, b, &hd_conf_directives[i])) {
            fprintf(stderr, "  directive %s differs\n", hd_conf_directives[i].name);
            return 0;
        }
    }
    return 1;
}

static hd_conf_t *defaults(void)
{
    return LOAD_OK("");
}

static char *src_path(const char *rel)
{
    static char buf[4096];
    const char *env = getenv("HERALD_SRC"), *me = "tests/unit/test_conf.c", *file = __FILE__;
    size_t n = strlen(file), m = strlen(me);

    /* HERALD_SRC when set, else the tree this file was compiled from. */
    if (env != NULL && env[0] != '\0')
        snprintf(buf, sizeof(buf), "%s/%s", env, rel);
    else if (n >= m && strcmp(file + n - m, me) == 0)
        snprintf(buf, sizeof(buf), "%.*s%s", (int)(n - m), file, rel);
    else
        snprintf(buf, sizeof(buf), "%s", rel);
    return buf;
}

static char *slurp(const char *path, size_t *len)
{
    char *text = NULL;
    size_t n = 0;
    int rc = read_file(path, &text, &n, err, sizeof(err));

    if (rc != 0)
        T_FAIL("%s", err);
    text = hd_realloc(text, n + 1);
    text[n] = '\0';
    if (len != NULL)
        *len = n;
    return text;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    T_TRUE(f != NULL);
    T_EQ_INT(fwrite(data, 1, len, f), len);
    T_EQ_INT(fclose(f), 0);
}

static int listen_port_of(const hd_listen_t *l)
{
    return ntohs(listen_port(l));
}

/* ---- defaults and the table ------------------------------------------------------------------ */

static void test_defaults(void)
{
    hd_conf_t *c = NULL;
    struct sockaddr_in *sin;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    T_EQ_INT(hd_conf_load(&c, NULL, NULL, 0, err, sizeof(err)), 0);
    T_EQ_STR(c->path, "");
    T_EQ_INT(c->refs_, 1);
    T_EQ_INT(c->n_listens, 1);
    T_EQ_STR(c->listens[0].text, "0.0.0.0:8080");
    T_EQ_INT(c->listens[0].is_tls, 0);
    T_EQ_INT(c->listens[0].addrlen, sizeof(struct sockaddr_in));
    sin = (struct sockaddr_in *)&c->listens[0].addr;
    T_EQ_INT(sin->sin_family, AF_INET);
    T_EQ_INT(ntohs(sin->sin_port), 8080);
    T_EQ_INT(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    T_EQ_INT(c->workers, cpus < 1 ? 1 : cpus > 1024 ? 1024 : cpus);
    T_TRUE(c->pidfile == NULL);
    T_EQ_INT(c->shutdown_timeout_ms, 10000);
    T_EQ_INT(c->log_level, HD_LOG_INFO);
    T_TRUE(c->log_file == NULL);
    T_TRUE(c->access_log == NULL);
    T_EQ_INT(c->max_connections, 100000);
    T_EQ_INT(c->accept_rate, 0);
    T_EQ_INT(c->accept_burst, 1000);
    T_EQ_INT(c->max_url_bytes, 8192);
    T_EQ_INT(c->max_header_bytes, 16384);
    T_EQ_INT(c->max_body_bytes, 1048576);
    T_EQ_INT(c->header_timeout_ms, 10000);
    T_EQ_INT(c->body_timeout_ms, 30000);
    T_EQ_INT(c->keepalive_timeout_ms, 75000);
    T_EQ_INT(c->keepalive_requests, 10000);
    T_TRUE(c->tls_certificate == NULL);
    T_TRUE(c->tls_certificate_key == NULL);
    T_EQ_STR(c->tls_ciphers,
             "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-"
             "SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-"
             "POLY1305");
    T_EQ_INT(c->tls_min_version, 12);
    hd_conf_unref(c);

    /* A string with only blanks and comments, and a NULL text, are the defaults too. */
    c = LOAD_OK("\n  # nothing\n\t\n");
    T_EQ_STR(c->path, "t.conf");
    {
        hd_conf_t *d = NULL;
        T_EQ_INT(hd_conf_load_string(&d, NULL, NULL, NULL, 0, err, sizeof(err)), 0);
        T_EQ_STR(d->path, "");
        T_TRUE(conf_same(c, d));
        hd_conf_unref(d);
    }
    hd_conf_unref(c);
}

static void test_table(void)
{
    size_t i, j;

    for (i = 0; i < hd_conf_n_directives; i++) {
        const directive_t *d = &hd_conf_directives[i];
        const type_ops_t *ops = &hd_conf_type_ops[d->type];
        uint64_t min, max, def;

        T_TRUE(d->name != NULL && d->desc != NULL && d->def != NULL);
        T_TRUE(strlen(d->desc) > 10 && strchr(d->desc, '\n') == NULL);
        T_TRUE(strlen(d->name) + strlen(d->desc) < 120);
        T_TRUE(ops->set != NULL && ops->dispose != NULL && ops->equal != NULL);
        /* A default must print as one word so that hd_conf_print_reference reads back. */
        T_TRUE(d->def[0] != '\0' && strpbrk(d->def, " \t#\"") == NULL);
        for (j = 0; j < i; j++)
            T_TRUE(strcmp(d->name, hd_conf_directives[j].name) != 0);
        if (d->type == T_UINT || d->type == T_SIZE || d->type == T_DURATION) {
            int (*parse)(const char *, uint64_t *) = d->type == T_UINT   ? parse_uint
                                                     : d->type == T_SIZE ? parse_size
                                                                         : parse_duration;
            T_EQ_INT(parse(d->min, &min), 0);
            T_EQ_INT(parse(d->max, &max), 0);
            T_TRUE(min <= max);
            /* The largest value must fit the field. */
            T_TRUE(d->size == 8 || max < ((uint64_t)1 << (8 * d->size)));
            if (d->auto_value == NULL) {
                T_EQ_INT(parse(d->def, &def), 0);
                T_TRUE(def >= min && def <= max);
            }
        } else {
            T_TRUE(d->min == NULL && d->max == NULL);
        }
        T_TRUE((d->type == T_ENUM) == (d->choices != NULL));
        T_TRUE(d->none == NULL || d->type == T_STRING || d->type == T_LIST || d->type == T_CIDRS);
        /* A list is repeatable: a key rotation is one more line. */
        T_TRUE(d->type != T_LIST || (d->flags & F_MULTI));
        T_TRUE(d->auto_value == NULL || d->type == T_UINT);
    }
    /* Every name once: a second row would shadow the first. */
    for (size_t a = 0; a < hd_conf_n_directives; a++)
        for (size_t b = a + 1; b < hd_conf_n_directives; b++)
            T_TRUE(strcmp(hd_conf_directives[a].name, hd_conf_directives[b].name) != 0);
}

static void test_print_reference(void)
{
    char *text = NULL, *p;
    size_t len = 0, i;
    FILE *f = open_memstream(&text, &len);
    hd_conf_t *c, *d = defaults();

    T_TRUE(f != NULL);
    hd_conf_print_reference(f);
    T_EQ_INT(fclose(f), 0);
    T_CONTAINS(text, "# worker threads, each with its own event loop; auto = one per online CPU\n"
                     "workers auto\n");
    T_CONTAINS(text, "\nmax_url_size 8k\n");
    T_CONTAINS(text, "\nheader_timeout 10s\n");
    T_CONTAINS(text, "\nlisten 0.0.0.0:8080\n");
    /* Every directive: its description line, then "name default". */
    for (i = 0, p = text; i < hd_conf_n_directives; i++) {
        char want[512];
        snprintf(want, sizeof(want), "# %s\n%s %s\n", hd_conf_directives[i].desc,
                 hd_conf_directives[i].name, hd_conf_directives[i].def);
        p = strstr(p, want);
        T_TRUE(p != NULL);
    }
    /* It reads back as exactly the defaults. */
    c = LOAD_OK(text);
    T_TRUE(conf_same(c, d));
    hd_conf_unref(c);
    hd_conf_unref(d);
    free(text);
}

/* ---- value types ----------------------------------------------------------------------------- */

static void test_parse_numbers(void)
{
    uint64_t v;
    int b;

    T_EQ_INT(parse_uint("0", &v), 0);
    T_EQ_INT(v, 0);
    T_EQ_INT(parse_uint("18446744073709551615", &v), 0);
    T_TRUE(v == UINT64_MAX);
    T_EQ_INT(parse_uint("18446744073709551616", &v), -1);
    T_EQ_INT(parse_uint("", &v), -1);
    T_EQ_INT(parse_uint("-1", &v), -1);
    T_EQ_INT(parse_uint("+1", &v), -1);
    T_EQ_INT(parse_uint("1.5", &v), -1);
    T_EQ_INT(parse_uint("0x10", &v), -1);
    T_EQ_INT(parse_uint("12k", &v), -1);

    T_EQ_INT(parse_size("0", &v), 0);
    T_EQ_INT(v, 0);
    T_EQ_INT(parse_size("512", &v), 0);
    T_EQ_INT(v, 512);
    T_EQ_INT(parse_size("8k", &v), 0);
    T_EQ_INT(v, 8192);
    T_EQ_INT(parse_size("8K", &v), 0);
    T_EQ_INT(v, 8192);
    T_EQ_INT(parse_size("3m", &v), 0);
    T_EQ_INT(v, 3 * 1048576);
    T_EQ_INT(parse_size("3M", &v), 0);
    T_EQ_INT(v, 3 * 1048576);
    T_EQ_INT(parse_size("2g", &v), 0);
    T_EQ_INT(v, 2ULL << 30);
    T_EQ_INT(parse_size("2G", &v), 0);
    T_EQ_INT(v, 2ULL << 30);
    T_EQ_INT(parse_size("17179869183g", &v), 0);
    T_EQ_INT(parse_size("17179869184g", &v), -1); /* 2^64: overflows */
    T_EQ_INT(parse_size("1kb", &v), -1);
    T_EQ_INT(parse_size("1t", &v), -1);
    T_EQ_INT(parse_size("k", &v), -1);
    T_EQ_INT(parse_size("", &v), -1);
    T_EQ_INT(parse_size("-1k", &v), -1);
    T_EQ_INT(parse_size("1 k", &v), -1);

    T_EQ_INT(parse_duration("0", &v), 0);
    T_EQ_INT(v, 0);
    T_EQ_INT(parse_duration("30", &v), 0);
    T_EQ_INT(v, 30000);
    T_EQ_INT(parse_duration("250ms", &v), 0);
    T_EQ_INT(v, 250);
    T_EQ_INT(parse_duration("30s", &v), 0);
    T_EQ_INT(v, 30000);
    T_EQ_INT(parse_duration("5m", &v), 0);
    T_EQ_INT(v, 300000);
    T_EQ_INT(parse_duration("2h", &v), 0);
    T_EQ_INT(v, 7200000);
    T_EQ_INT(parse_duration("1d", &v), -1);
    T_EQ_INT(parse_duration("1S", &v), -1);
    T_EQ_INT(parse_duration("1.5s", &v), -1);
    T_EQ_INT(parse_duration("s", &v), -1);
    T_EQ_INT(parse_duration("", &v), -1);
    T_EQ_INT(parse_duration("1mss", &v), -1);
    T_EQ_INT(parse_duration("18446744073709552s", &v), -1); /* overflows in milliseconds */

    T_EQ_INT(parse_bool("on", &b), 0);
    T_EQ_INT(b, 1);
    T_EQ_INT(parse_bool("yes", &b), 0);
    T_EQ_INT(b, 1);
    T_EQ_INT(parse_bool("true", &b), 0);
    T_EQ_INT(b, 1);
    T_EQ_INT(parse_bool("off", &b), 0);
    T_EQ_INT(b, 0);
    T_EQ_INT(parse_bool("no", &b), 0);
    T_EQ_INT(b, 0);
    T_EQ_INT(parse_bool("false", &b), 0);
    T_EQ_INT(b, 0);
    T_EQ_INT(parse_bool("On", &b), -1);
    T_EQ_INT(parse_bool("1", &b), -1);
    T_EQ_INT(parse_bool("", &b), -1);
    T_EQ_INT(parse_bool("onn", &b), -1);
}

/* A bool directive does not exist yet: exercise the setter through a row made for the test. */
static void test_bool_setter(void)
{
    const directive_t row =
        D("test_flag", T_BOOL, max_connections, "off", NULL, NULL, RELOAD, "a flag for the test");
    loader_t ld;
    hd_conf_t c;
    const char *on = "yes", *bad = "maybe";

    memset(&ld, 0, sizeof(ld));
    memset(&c, 0, sizeof(c));
    ld.conf = &c;
    ld.name = "t.conf";
    ld.origin = 4;
    ld.err = err;
    ld.errlen = sizeof(err);
    T_EQ_INT(set_bool(&ld, &row, 1, &on), 0);
    T_EQ_INT(c.max_connections, 1);
    T_EQ_INT(set_bool(&ld, &row, 1, &bad), HD_ECONF);
    T_EQ_STR(err, "t.conf:4: test_flag: expected on or off (yes/no, true/false), got \"maybe\"");
    T_EQ_INT(c.max_connections, 1);
}

static void test_uint(void)
{
    hd_conf_t *c;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    c = LOAD_OK("workers 1\nmax_connections 10000000\naccept_rate 10000000\naccept_burst 1\n"
                "keepalive_requests 1");
    T_EQ_INT(c->workers, 1);
    T_EQ_INT(c->max_connections, 10000000);
    T_EQ_INT(c->accept_rate, 10000000);
    T_EQ_INT(c->accept_burst, 1);
    T_EQ_INT(c->keepalive_requests, 1);
    hd_conf_unref(c);

    c = LOAD_OK("workers 1024\nmax_connections 1\naccept_rate 0\naccept_burst 10000000\n"
                "keepalive_requests 10000000");
    T_EQ_INT(c->workers, 1024);
    T_EQ_INT(c->max_connections, 1);
    T_EQ_INT(c->accept_rate, 0);
    T_EQ_INT(c->accept_burst, 10000000);
    T_EQ_INT(c->keepalive_requests, 10000000);
    hd_conf_unref(c);

    c = LOAD_OK("workers auto");
    T_EQ_INT(c->workers, cpus < 1 ? 1 : cpus > 1024 ? 1024 : cpus);
    hd_conf_unref(c);

    LOAD_ERR("workers x",
             "t.conf:1: workers: expected \"auto\" or an integer in 1..1024, got \"x\"");
    LOAD_ERR("workers 0",
             "t.conf:1: workers: expected \"auto\" or an integer in 1..1024, got \"0\"");
    LOAD_ERR("\nworkers 1025",
             "t.conf:2: workers: expected \"auto\" or an integer in 1..1024, got \"1025\"");
    LOAD_ERR("workers -1",
             "t.conf:1: workers: expected \"auto\" or an integer in 1..1024, got \"-1\"");
    LOAD_ERR("workers AUTO",
             "t.conf:1: workers: expected \"auto\" or an integer in 1..1024, got \"AUTO\"");
    LOAD_ERR("max_connections 0",
             "t.conf:1: max_connections: expected an integer in 1..10000000, got \"0\"");
    LOAD_ERR("max_connections 10000001",
             "t.conf:1: max_connections: expected an integer in 1..10000000, got \"10000001\"");
    LOAD_ERR("max_connections 99999999999999999999999",
             "t.conf:1: max_connections: expected an integer in 1..10000000, got "
             "\"99999999999999999999999\"");
    LOAD_ERR("accept_rate 10000001",
             "t.conf:1: accept_rate: expected an integer in 0..10000000, got \"10000001\"");
    LOAD_ERR("accept_burst 0",
             "t.conf:1: accept_burst: expected an integer in 1..10000000, got \"0\"");
    LOAD_ERR("keepalive_requests 1k",
             "t.conf:1: keepalive_requests: expected an integer in 1..10000000, got \"1k\"");
}

static void test_size(void)
{
    hd_conf_t *c;

    c = LOAD_OK("max_url_size 256\nmax_header_size 1k\nmax_body_size 0");
    T_EQ_INT(c->max_url_bytes, 256);
    T_EQ_INT(c->max_header_bytes, 1024);
    T_EQ_INT(c->max_body_bytes, 0);
    hd_conf_unref(c);

    c = LOAD_OK("max_url_size 1m\nmax_header_size 1024K\nmax_body_size 1g");
    T_EQ_INT(c->max_url_bytes, 1048576);
    T_EQ_INT(c->max_header_bytes, 1048576);
    T_EQ_INT(c->max_body_bytes, 1073741824);
    hd_conf_unref(c);

    c = LOAD_OK("max_url_size 300\nmax_body_size 5M");
    T_EQ_INT(c->max_url_bytes, 300);
    T_EQ_INT(c->max_body_bytes, 5 * 1048576);
    hd_conf_unref(c);

    LOAD_ERR("max_url_size 255", "t.conf:1: max_url_size: expected a size (bytes, or with k, m, "
                                 "g) in 256..1m, got \"255\"");
    LOAD_ERR("max_url_size 1025k", "t.conf:1: max_url_size: expected a size (bytes, or with k, "
                                   "m, g) in 256..1m, got \"1025k\"");
    LOAD_ERR("max_header_size 1023", "t.conf:1: max_header_size: expected a size (bytes, or with "
                                     "k, m, g) in 1k..1m, got \"1023\"");
    LOAD_ERR("max_header_size 2M", "t.conf:1: max_header_size: expected a size (bytes, or with k, "
                                   "m, g) in 1k..1m, got \"2M\"");
    LOAD_ERR("max_body_size 1025m", "t.conf:1: max_body_size: expected a size (bytes, or with k, "
                                    "m, g) in 0..1g, got \"1025m\"");
    LOAD_ERR("max_body_size 2g", "t.conf:1: max_body_size: expected a size (bytes, or with k, m, "
                                 "g) in 0..1g, got \"2g\"");
    LOAD_ERR("max_body_size 1mb", "t.conf:1: max_body_size: expected a size (bytes, or with k, m, "
                                  "g) in 0..1g, got \"1mb\"");
    LOAD_ERR("max_body_size 99999999999999999g",
             "t.conf:1: max_body_size: expected a size (bytes, or with k, m, g) in 0..1g, got "
             "\"99999999999999999g\"");
}

static void test_duration(void)
{
    hd_conf_t *c;

    c = LOAD_OK("shutdown_timeout 0\nheader_timeout 10ms\nbody_timeout 1h\n"
                "keepalive_timeout 90");
    T_EQ_INT(c->shutdown_timeout_ms, 0);
    T_EQ_INT(c->header_timeout_ms, 10);
    T_EQ_INT(c->body_timeout_ms, 3600000);
    T_EQ_INT(c->keepalive_timeout_ms, 90000);
    hd_conf_unref(c);

    c = LOAD_OK("shutdown_timeout 1h\nheader_timeout 60m\nbody_timeout 3600s\n"
                "keepalive_timeout 3600000ms");
    T_EQ_INT(c->shutdown_timeout_ms, 3600000);
    T_EQ_INT(c->header_timeout_ms, 3600000);
    T_EQ_INT(c->body_timeout_ms, 3600000);
    T_EQ_INT(c->keepalive_timeout_ms, 3600000);
    hd_conf_unref(c);

    c = LOAD_OK("header_timeout 1500ms\nbody_timeout 2m");
    T_EQ_INT(c->header_timeout_ms, 1500);
    T_EQ_INT(c->body_timeout_ms, 120000);
    hd_conf_unref(c);

    LOAD_ERR("header_timeout 9ms", "t.conf:1: header_timeout: expected a duration (seconds, or "
                                   "with ms, s, m, h) in 10ms..1h, got \"9ms\"");
    LOAD_ERR("header_timeout 0", "t.conf:1: header_timeout: expected a duration (seconds, or with "
                                 "ms, s, m, h) in 10ms..1h, got \"0\"");
    LOAD_ERR("body_timeout 61m", "t.conf:1: body_timeout: expected a duration (seconds, or with "
                                 "ms, s, m, h) in 10ms..1h, got \"61m\"");
    LOAD_ERR("keepalive_timeout 3601", "t.conf:1: keepalive_timeout: expected a duration (seconds, "
                                       "or with ms, s, m, h) in 10ms..1h, got \"3601\"");
    LOAD_ERR("shutdown_timeout 2h", "t.conf:1: shutdown_timeout: expected a duration (seconds, or "
                                    "with ms, s, m, h) in 0..1h, got \"2h\"");
    LOAD_ERR("shutdown_timeout 1d", "t.conf:1: shutdown_timeout: expected a duration (seconds, or "
                                    "with ms, s, m, h) in 0..1h, got \"1d\"");
    LOAD_ERR("shutdown_timeout 1.5s", "t.conf:1: shutdown_timeout: expected a duration (seconds, "
                                      "or with ms, s, m, h) in 0..1h, got \"1.5s\"");
    LOAD_ERR("shutdown_timeout 10 s", "t.conf:1: shutdown_timeout: expected 1 value, got 2");
}

static void test_string(void)
{
    hd_conf_t *c;

    c = LOAD_OK("pidfile /run/herald.pid\nlog_file /var/log/herald/error.log\n"
                "access_log /var/log/herald/access.log\ntls_ciphers HIGH:!aNULL");
    T_EQ_STR(c->pidfile, "/run/herald.pid");
    T_EQ_STR(c->log_file, "/var/log/herald/error.log");
    T_EQ_STR(c->access_log, "/var/log/herald/access.log");
    T_EQ_STR(c->tls_ciphers, "HIGH:!aNULL");
    hd_conf_unref(c);

    /* The words that mean "not set". */
    c = LOAD_OK("pidfile off\nlog_file off\naccess_log off");
    T_TRUE(c->pidfile == NULL && c->log_file == NULL && c->access_log == NULL);
    hd_conf_unref(c);
    c = LOAD_OK("pidfile \"\"\nlog_file stderr\naccess_log \"\"");
    T_TRUE(c->pidfile == NULL && c->log_file == NULL && c->access_log == NULL);
    hd_conf_unref(c);
    /* "stderr" is a word for log_file only; "off" in quotes is still "off". */
    c = LOAD_OK("access_log stderr\npidfile \"off\"");
    T_EQ_STR(c->access_log, "stderr");
    T_TRUE(c->pidfile == NULL);
    hd_conf_unref(c);

    c = LOAD_OK("pidfile \"/run/my herald.pid\"");
    T_EQ_STR(c->pidfile, "/run/my herald.pid");
    hd_conf_unref(c);

    LOAD_ERR("tls_ciphers \"\"", "t.conf:1: tls_ciphers: expected a non-empty value");
    LOAD_ERR("pidfile /run/my herald.pid",
             "t.conf:1: pidfile: expected 1 value, got 2 (put a value with spaces in quotes)");
    LOAD_ERR("pidfile", "t.conf:1: pidfile: expected 1 value, got 0");
}

static void test_enum(void)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    hd_conf_t *c;
    size_t i;
    char line[64];

    for (i = 0; i < HD_ARRAY_SIZE(levels); i++) {
        snprintf(line, sizeof(line), "log_level %s", levels[i]);
        c = LOAD_OK(line);
        T_EQ_INT(c->log_level, (int)i);
        T_EQ_STR(hd_conf_log_level_name(c->log_level), levels[i]);
        hd_conf_unref(c);
    }
    T_EQ_INT(HD_LOG_DEBUG, 0);
    T_EQ_INT(HD_LOG_ERROR, 3);
    T_EQ_STR(hd_conf_log_level_name(42), "unknown");
    T_EQ_STR(hd_conf_log_level_name(-1), "unknown");

    c = LOAD_OK("tls_min_version 1.3");
    T_EQ_INT(c->tls_min_version, 13);
    hd_conf_unref(c);
    c = LOAD_OK("tls_min_version 1.2");
    T_EQ_INT(c->tls_min_version, 12);
    hd_conf_unref(c);

    LOAD_ERR("log_level verbose",
             "t.conf:1: log_level: expected one of debug, info, warn, error, got \"verbose\"");
    LOAD_ERR("log_level INFO",
             "t.conf:1: log_level: expected one of debug, info, warn, error, got \"INFO\"");
    LOAD_ERR("log_level warning",
             "t.conf:1: log_level: expected one of debug, info, warn, error, got \"warning\"");
    LOAD_ERR("tls_min_version 1.1",
             "t.conf:1: tls_min_version: expected one of 1.2, 1.3, got \"1.1\"");
    LOAD_ERR("tls_min_version 12",
             "t.conf:1: tls_min_version: expected one of 1.2, 1.3, got \"12\"");
}

/* ---- listen ---------------------------------------------------------------------------------- */

static void test_listen(void)
{
    hd_conf_t *c;
    struct sockaddr_in *sin;
    struct sockaddr_in6 *sin6;
    char text[64];

    c = LOAD_OK("listen 127.0.0.1:9000\nlisten [::1]:9443 tls\nlisten *:0\nlisten *:0\n"
                "listen [::]:65535\ntls_certificate c.pem\ntls_certificate_key k.pem");
    T_EQ_INT(c->n_listens, 5);

    T_EQ_STR(c->listens[0].text, "127.0.0.1:9000");
    T_EQ_INT(c->listens[0].is_tls, 0);
    T_EQ_INT(c->listens[0].addrlen, sizeof(struct sockaddr_in));
    sin = (struct sockaddr_in *)&c->listens[0].addr;
    T_EQ_INT(sin->sin_family, AF_INET);
    T_EQ_INT(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    T_EQ_INT(listen_port_of(&c->listens[0]), 9000);

    T_EQ_STR(c->listens[1].text, "[::1]:9443");
    T_EQ_INT(c->listens[1].is_tls, 1);
    T_EQ_INT(c->listens[1].addrlen, sizeof(struct sockaddr_in6));
    sin6 = (struct sockaddr_in6 *)&c->listens[1].addr;
    T_EQ_INT(sin6->sin6_family, AF_INET6);
    T_TRUE(memcmp(&sin6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback)) == 0);
    T_EQ_INT(listen_port_of(&c->listens[1]), 9443);

    /* "*" is 0.0.0.0 but the text stays as written; two ephemeral ports are two listeners. */
    T_EQ_STR(c->listens[2].text, "*:0");
    sin = (struct sockaddr_in *)&c->listens[2].addr;
    T_EQ_INT(sin->sin_family, AF_INET);
    T_EQ_INT(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    T_EQ_INT(listen_port_of(&c->listens[2]), 0);
    T_EQ_STR(c->listens[3].text, "*:0");

    T_EQ_STR(c->listens[4].text, "[::]:65535");
    sin6 = (struct sockaddr_in6 *)&c->listens[4].addr;
    T_TRUE(memcmp(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any)) == 0);
    T_EQ_INT(listen_port_of(&c->listens[4]), 65535);
    hd_conf_unref(c);

    /* File lines replace the default listener rather than adding to it. */
    c = LOAD_OK("listen 127.0.0.1:8081");
    T_EQ_INT(c->n_listens, 1);
    T_EQ_STR(c->listens[0].text, "127.0.0.1:8081");
    hd_conf_unref(c);
    c = LOAD_OK("listen 0.0.0.0:8080");
    T_EQ_INT(c->n_listens, 1);
    hd_conf_unref(c);

    /* A long IPv6 form (an IPv4-mapped address). */
    snprintf(text, sizeof(text), "listen [0000:0000:0000:0000:0000:ffff:127.0.0.1]:65535");
    c = LOAD_OK(text);
    T_EQ_STR(c->listens[0].text, "[0000:0000:0000:0000:0000:ffff:127.0.0.1]:65535");
    hd_conf_unref(c);

    LOAD_ERR("listen 8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls (IPv6 in brackets), got \"8080\"");
    LOAD_ERR("listen ::1:8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls (IPv6 in brackets), got \"::1:8080\"");
    LOAD_ERR("listen :8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls, got \":8080\"");
    LOAD_ERR("listen []:8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls, got \"[]:8080\"");
    LOAD_ERR("listen [::1]8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls, got \"[::1]8080\"");
    LOAD_ERR("listen [::1:8080",
             "t.conf:1: listen: expected ADDR:PORT [tls] [admin], e.g. 0.0.0.0:8080, "
             "[::1]:8080 or *:8443 tls, got \"[::1:8080\"");
    LOAD_ERR("listen 1.2.3.4:", "t.conf:1: listen: expected a port in 0..65535, got \"1.2.3.4:\"");
    LOAD_ERR("listen 1.2.3.4:65536",
             "t.conf:1: listen: expected a port in 0..65535, got \"1.2.3.4:65536\"");
    LOAD_ERR("listen 1.2.3.4:80x",
             "t.conf:1: listen: expected a port in 0..65535, got \"1.2.3.4:80x\"");
    LOAD_ERR("listen 1.2.3.4:-1",
             "t.conf:1: listen: expected a port in 0..65535, got \"1.2.3.4:-1\"");
    LOAD_ERR("listen localhost:8080", "t.conf:1: listen: \"localhost\" is not a numeric IPv4 "
                                      "address in \"localhost:8080\"");
    LOAD_ERR("listen 1.2.3:8080",
             "t.conf:1: listen: \"1.2.3\" is not a numeric IPv4 address in \"1.2.3:8080\"");
    LOAD_ERR("listen [1.2.3.4]:8080",
             "t.conf:1: listen: \"1.2.3.4\" is not a numeric IPv6 address in \"[1.2.3.4]:8080\"");
    LOAD_ERR("listen [::1]:8080 ssl", "t.conf:1: listen: expected \"tls\", \"admin\" or "
                                      "\"proxy_protocol\" after the address, got \"ssl\"");
    LOAD_ERR("listen *:1 tls x", "t.conf:1: listen: expected \"tls\", \"admin\" or "
                                 "\"proxy_protocol\" after the address, got \"x\"");
    LOAD_ERR("listen *:1 admin admin", "t.conf:1: listen: \"admin\" given twice");
    LOAD_ERR("listen *:1 tls tls", "t.conf:1: listen: \"tls\" given twice");
    LOAD_ERR("listen *:1 Admin", "t.conf:1: listen: expected \"tls\", \"admin\" or "
                                 "\"proxy_protocol\" after the address, got \"Admin\"");
    LOAD_ERR("listen", "t.conf:1: listen: expected 1 to 4 values (ADDR:PORT [tls] [admin] "
                       "[proxy_protocol]), got 0");
    LOAD_ERR("listen *:1 tls admin proxy_protocol x",
             "t.conf:1: listen: expected 1 to 4 values (ADDR:PORT [tls] [admin] [proxy_protocol]), "
             "got 5");
    /* The admin flag, alone or with tls in either order. */
    c = LOAD_OK("listen 127.0.0.1:9090 admin\nlisten *:8443 admin tls\nlisten *:8444 tls admin\n"
                "listen *:8080\ntls_certificate c.pem\ntls_certificate_key k.pem");
    T_EQ_INT(c->n_listens, 4);
    T_TRUE(c->listens[0].is_admin && !c->listens[0].is_tls);
    T_TRUE(c->listens[1].is_admin && c->listens[1].is_tls);
    T_TRUE(c->listens[2].is_admin && c->listens[2].is_tls);
    T_TRUE(!c->listens[3].is_admin && !c->listens[3].is_tls);
    T_EQ_STR(c->listens[0].text, "127.0.0.1:9090");
    hd_conf_unref(c);
    {
        char line[128], want[256];
        /* 79 bytes fit in text[80] (and are then rejected as an address), 80 do not. */
        snprintf(line, sizeof(line), "listen %.*s:1", 77,
                 "1111111111222222222233333333334444444444"
                 "55555555556666666666777777777788888888889999999999");
        snprintf(want, sizeof(want),
                 "t.conf:1: listen: \"%.77s\" is not a numeric IPv4 address in "
                 "\"%s\"",
                 line + 7, line + 7);
        LOAD_ERR(line, want);
        snprintf(line, sizeof(line), "listen %.*s:1", 78,
                 "1111111111222222222233333333334444444444"
                 "55555555556666666666777777777788888888889999999999");
        snprintf(want, sizeof(want), "t.conf:1: listen: address too long: \"%s\"", line + 7);
        LOAD_ERR(line, want);
    }

    /* The same address twice, however it is written, is a mistake. */
    LOAD_ERR("listen *:8080\n\nlisten 0.0.0.0:8080",
             "t.conf:3: listen: \"0.0.0.0:8080\" is the same address as \"*:8080\" at t.conf:1");
    LOAD_ERR_O("",
               "-o 'listen [::1]:1': listen: \"[::1]:1\" is the same address as "
               "\"[0:0::1]:1\" at -o 'listen [0:0::1]:1'",
               "listen [0:0::1]:1", "listen [::1]:1");
    /* Same address, other port: fine. */
    c = LOAD_OK("listen *:8080\nlisten *:8081\nlisten [::]:8080");
    T_EQ_INT(c->n_listens, 3);
    hd_conf_unref(c);
}

/* ---- lists: publish_key, admin_key, cors_origins --------------------------------------------- */

static void test_list(void)
{
    hd_conf_t *c, *d;
    char line[512];

    /* Defaults: no key of either kind. */
    c = LOAD_OK("");
    T_EQ_INT(c->publish_keys.n, 0);
    T_EQ_INT(c->admin_keys.n, 0);
    hd_conf_unref(c);

    /* Several values on a line, and lines adding to each other (a rotation: old and new key). */
    c = LOAD_OK("publish_key old-key new-key\nadmin_key a1\npublish_key third\nadmin_key a2");
    T_EQ_INT(c->publish_keys.n, 3);
    T_EQ_STR(c->publish_keys.v[0], "old-key");
    T_EQ_STR(c->publish_keys.v[1], "new-key");
    T_EQ_STR(c->publish_keys.v[2], "third");
    T_EQ_INT(c->admin_keys.n, 2);
    T_EQ_STR(c->admin_keys.v[0], "a1");
    T_EQ_STR(c->admin_keys.v[1], "a2");
    d = LOAD_OK("publish_key old-key\npublish_key new-key third\nadmin_key a1 a2");
    T_TRUE(conf_same(c, d));
    hd_conf_unref(d);
    /* Order and content count. */
    d = LOAD_OK("publish_key new-key old-key third\nadmin_key a1 a2");
    T_TRUE(!hd_conf_type_ops[T_LIST].equal(c, d, find_directive("publish_key")));
    hd_conf_unref(d);
    d = LOAD_OK("publish_key old-key new-key\nadmin_key a1 a2");
    T_TRUE(!hd_conf_type_ops[T_LIST].equal(c, d, find_directive("publish_key")));
    hd_conf_unref(d);
    hd_conf_unref(c);

    /* "off" (or "") is none; -o replaces the file's lines. */
    c = LOAD_OK("publish_key off\nadmin_key \"\"");
    T_EQ_INT(c->publish_keys.n, 0);
    T_EQ_INT(c->admin_keys.n, 0);
    hd_conf_unref(c);
    c = LOAD_OK_O("publish_key k1\npublish_key k2", "publish_key off");
    T_EQ_INT(c->publish_keys.n, 0);
    hd_conf_unref(c);
    c = LOAD_OK_O("publish_key k1\npublish_key k2", "publish_key k3", "publish_key k4 k5");
    T_EQ_INT(c->publish_keys.n, 3);
    T_EQ_STR(c->publish_keys.v[0], "k3");
    T_EQ_STR(c->publish_keys.v[2], "k5");
    hd_conf_unref(c);
    /* "off", then keys: the keys (the shipped file says "off"; a key added below it counts). */
    c = LOAD_OK("publish_key off\npublish_key k1");
    T_EQ_INT(c->publish_keys.n, 1);
    hd_conf_unref(c);

    /* Sixteen values per line; repeat the directive for more. */
    c = LOAD_OK("publish_key 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\npublish_key 17");
    T_EQ_INT(c->publish_keys.n, 17);
    hd_conf_unref(c);
    LOAD_ERR("publish_key 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
             "t.conf:1: publish_key: expected 1 to 16 values (VALUE [VALUE ...]), got 17");
    LOAD_ERR("admin_key",
             "t.conf:1: admin_key: expected 1 to 16 values (VALUE [VALUE ...]), got 0");

    /* Contradictions and bad values. A key is never echoed (it is a secret). */
    LOAD_ERR("publish_key k1 off", "t.conf:1: publish_key: \"off\" must be the only value");
    LOAD_ERR("admin_key k1 \"\"", "t.conf:1: admin_key: \"\" must be the only value");
    LOAD_ERR("publish_key k1\npublish_key off",
             "t.conf:2: publish_key: \"off\" after values given on another line: keep one or the "
             "other");
    LOAD_ERR("publish_key \"my key\"",
             "t.conf:1: publish_key: value 1: a key is 1..256 printable ASCII characters without "
             "spaces");
    LOAD_ERR("admin_key good \"s\xc3\xa9"
             "cret\"",
             "t.conf:1: admin_key: value 2: a key is 1..256 printable ASCII characters without "
             "spaces");
    memset(line, 'k', sizeof(line));
    memcpy(line, "publish_key ", 12);
    line[12 + 256] = '\0';
    c = LOAD_OK(line);
    T_EQ_INT(strlen(c->publish_keys.v[0]), 256);
    hd_conf_unref(c);
    line[12 + 256] = 'k';
    line[12 + 257] = '\0';
    LOAD_ERR(line, "t.conf:1: publish_key: value 1: a key is 1..256 printable ASCII characters "
                   "without spaces");
}

static void test_cors_origins(void)
{
    hd_conf_t *c;
    char line[512];

    /* Default: any origin (no credentials); the file's lines replace it; "off" is none. */
    c = LOAD_OK("");
    T_EQ_INT(c->cors_origins.n, 1);
    T_EQ_STR(c->cors_origins.v[0], "*");
    hd_conf_unref(c);
    c = LOAD_OK("cors_origins off");
    T_EQ_INT(c->cors_origins.n, 0);
    hd_conf_unref(c);
    c = LOAD_OK("cors_origins https://app.example.com http://127.0.0.1:8000\n"
                "cors_origins https://[::1]:8443 *");
    T_EQ_INT(c->cors_origins.n, 4);
    T_EQ_STR(c->cors_origins.v[0], "https://app.example.com");
    T_EQ_STR(c->cors_origins.v[2], "https://[::1]:8443");
    T_EQ_STR(c->cors_origins.v[3], "*");
    hd_conf_unref(c);

    static const char *const good[] = {"*",
                                       "https://a.example",
                                       "http://127.0.0.1:8080",
                                       "https://[::1]",
                                       "https://[2001:db8::1]:1",
                                       "app+x.y-z://host-1.example_x",
                                       "http://a:65535"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(good); i++) {
        snprintf(line, sizeof(line), "cors_origins %s", good[i]);
        c = LOAD_OK(line);
        T_EQ_STR(c->cors_origins.v[0], good[i]);
        hd_conf_unref(c);
    }
    /* What a browser never sends as an Origin: a path or trailing slash, upper case, no
     * scheme, "null" (sandboxed pages and files: allowing it allows any of them). */
    static const char *const bad[] = {"https://a.example/",
                                      "https://a.example/app",
                                      "HTTPS://a.example",
                                      "https://A.example",
                                      "a.example",
                                      "https://",
                                      "https://[]",
                                      "https://[::1",
                                      "https://a:",
                                      "https://a:123456",
                                      "https://user@a",
                                      "null",
                                      "**",
                                      "https://a.example?x",
                                      "1http://a",
                                      "https://a b"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        char want[512];
        snprintf(line, sizeof(line), "cors_origins \"%s\"", bad[i]);
        snprintf(want, sizeof(want),
                 "t.conf:1: cors_origins: value 1: expected an origin SCHEME://HOST[:PORT] in "
                 "lower case without a path (as browsers send it, e.g. https://app.example.com) "
                 "or *, got \"%s\"",
                 bad[i]);
        LOAD_ERR(line, want);
    }
    LOAD_ERR("cors_origins * \"\"", "t.conf:1: cors_origins: \"\" must be the only value");
    LOAD_ERR("cors_origins * off", "t.conf:1: cors_origins: \"off\" must be the only value");
}

/* ---- syntax ---------------------------------------------------------------------------------- */

/* listen flags, trusted_proxies and the per-client limits (RELOAD). */
static void test_client_ip(void)
{
    hd_conf_t *c, *d;

    c = LOAD_OK("listen 127.0.0.1:9000 proxy_protocol\nlisten 127.0.0.1:9001 proxy_protocol tls\n"
                "listen 127.0.0.1:9002 tls proxy_protocol\nlisten 127.0.0.1:9003\n"
                "tls_certificate c.pem\ntls_certificate_key k.pem");
    T_EQ_INT(c->listens[0].is_proxy, 1);
    T_EQ_INT(c->listens[0].is_tls, 0);
    T_EQ_INT(c->listens[1].is_proxy && c->listens[1].is_tls, 1);
    T_EQ_INT(c->listens[2].is_proxy && c->listens[2].is_tls, 1);
    T_EQ_INT(c->listens[3].is_proxy, 0);
    d = LOAD_OK("listen 127.0.0.1:9000\nlisten 127.0.0.1:9001 proxy_protocol tls\n"
                "listen 127.0.0.1:9002 tls proxy_protocol\nlisten 127.0.0.1:9003\n"
                "tls_certificate c.pem\ntls_certificate_key k.pem");
    T_EQ_INT(hd_conf_restart_needed(c, d, NULL, 0), 1); /* a listener's flag needs a restart */
    hd_conf_unref(d);
    hd_conf_unref(c);
    LOAD_ERR("listen 127.0.0.1:9000 proxy",
             "t.conf:1: listen: expected \"tls\", \"admin\" or \"proxy_protocol\" after the "
             "address, got \"proxy\"");
    c = LOAD_OK("listen 127.0.0.1:9000 admin proxy_protocol tls\n"
                "tls_certificate c.pem\ntls_certificate_key k.pem");
    T_TRUE(c->listens[0].is_admin && c->listens[0].is_proxy && c->listens[0].is_tls);
    hd_conf_unref(c);
    LOAD_ERR("listen 127.0.0.1:9000 proxy_protocol proxy_protocol",
             "t.conf:1: listen: \"proxy_protocol\" given twice");

    c = LOAD_OK("");
    T_EQ_INT(c->trusted_proxies.n, 0);
    T_EQ_INT(c->max_connections_per_ip, 0);
    T_EQ_INT(c->connect_rate_per_ip, 0);
    T_EQ_INT(c->connect_burst_per_ip, 20);
    T_EQ_INT(c->client_publish_rate, 0);
    d = LOAD_OK("trusted_proxies 10.0.0.0/8 ::1\ntrusted_proxies 192.168.1.7\n"
                "max_connections_per_ip 100\nconnect_rate_per_ip 5\nconnect_burst_per_ip 10\n"
                "client_publish_rate 50");
    T_EQ_INT(d->trusted_proxies.n, 3);
    T_EQ_INT(d->trusted_proxies.v[0].bits, 8);
    T_EQ_INT(d->trusted_proxies.v[1].net.family, HD_IP_V6);
    T_EQ_INT(d->trusted_proxies.v[2].bits, 32);
    T_EQ_INT(d->max_connections_per_ip, 100);
    T_EQ_INT(d->client_publish_rate, 50);
    T_EQ_INT(hd_conf_restart_needed(c, d, NULL, 0), 0); /* all live on SIGHUP */
    hd_conf_unref(d);
    /* -o replaces the file's ranges; off empties them */
    d = LOAD_OK_O("trusted_proxies 10.0.0.0/8", "trusted_proxies 127.0.0.1");
    T_EQ_INT(d->trusted_proxies.n, 1);
    T_EQ_INT(d->trusted_proxies.v[0].net.bytes[0], 127);
    hd_conf_unref(d);
    d = LOAD_OK("trusted_proxies off");
    T_EQ_INT(d->trusted_proxies.n, 0);
    T_TRUE(conf_same(c, d));
    hd_conf_unref(d);
    hd_conf_unref(c);
    LOAD_ERR("trusted_proxies 10.0.0.1/8",
             "t.conf:1: trusted_proxies: \"10.0.0.1/8\" has bits set past its /8 prefix (did you "
             "mean the network address?)");
    LOAD_ERR("\ntrusted_proxies lb.example",
             "t.conf:2: trusted_proxies: \"lb.example\" is not an IPv4 or IPv6 address or range "
             "(ADDR or ADDR/BITS)");
}

static void test_syntax(void)
{
    hd_conf_t *c;
    char *text;
    size_t i;

    c = LOAD_OK("# a comment\n"
                "\n"
                "   workers 3   \n"
                "\tlog_level\tdebug\t# trailing comment\n"
                "pidfile \"/run/a # b.pid\" # the # inside quotes is kept\n"
                "access_log \"/var/log/say \\\"hi\\\" \\\\ there\"\n"
                "log_file /var/log/x#comment right after the value\n"
                "tls_ciphers a\"b c\"d\n"
                "max_connections 5#\n"
                "   # indented comment\n");
    T_EQ_INT(c->workers, 3);
    T_EQ_INT(c->log_level, HD_LOG_DEBUG);
    T_EQ_STR(c->pidfile, "/run/a # b.pid");
    T_EQ_STR(c->access_log, "/var/log/say \"hi\" \\ there");
    T_EQ_STR(c->log_file, "/var/log/x");
    T_EQ_STR(c->tls_ciphers, "ab cd");
    T_EQ_INT(c->max_connections, 5);
    hd_conf_unref(c);

    /* A backslash outside quotes, or before another character, is an ordinary character. */
    c = LOAD_OK("pidfile C:\\herald\\pid\naccess_log \"a\\nb\"");
    T_EQ_STR(c->pidfile, "C:\\herald\\pid");
    T_EQ_STR(c->access_log, "a\\nb");
    hd_conf_unref(c);

    /* CRLF line endings, a UTF-8 byte order mark, no newline at the end. */
    c = LOAD_OK("\xEF\xBB\xBFworkers 2\r\n\r\nlog_level warn\r\npidfile \"/x y\"\r\n"
                "max_body_size 2k");
    T_EQ_INT(c->workers, 2);
    T_EQ_INT(c->log_level, HD_LOG_WARN);
    T_EQ_STR(c->pidfile, "/x y");
    T_EQ_INT(c->max_body_bytes, 2048);
    hd_conf_unref(c);

    /* Errors name the file, the line and, once known, the directive. */
    LOAD_ERR("workers 2\n# x\n\nwrokers 4", "t.conf:4: unknown directive \"wrokers\"");
    LOAD_ERR("Workers 4", "t.conf:1: unknown directive \"Workers\"");
    LOAD_ERR("\"\" 4", "t.conf:1: unknown directive \"\"");
    LOAD_ERR("workers", "t.conf:1: workers: expected 1 value, got 0");
    LOAD_ERR("workers 1 2", "t.conf:1: workers: expected 1 value, got 2");
    LOAD_ERR("workers 1 2 3 4 5 6 7 8 9 10 11 12", "t.conf:1: workers: expected 1 value, got 12");
    LOAD_ERR("workers 2\r\nworkers 3\r\n",
             "t.conf:2: workers: duplicate directive, first set on line 1");
    LOAD_ERR("log_level info\n\n\nlog_level info",
             "t.conf:4: log_level: duplicate directive, first set on line 1");
    LOAD_ERR("\npidfile \"/run/x.pid", "t.conf:2: unterminated double quote");
    LOAD_ERR("pidfile \"a\\\"", "t.conf:1: unterminated double quote");
    LOAD_ERR("pidfile \"a\\", "t.conf:1: unterminated double quote");

    /* Line length: 4096 bytes fit, without the CRLF; 4097 do not. */
    text = hd_malloc(8192);
    memcpy(text, "pidfile ", 8);
    for (i = 8; i < 4096; i++)
        text[i] = 'p';
    memcpy(text + 4096, "\r\n\n", 4);
    c = LOAD_OK(text);
    T_EQ_INT(strlen(c->pidfile), 4096 - 8);
    hd_conf_unref(c);
    memcpy(text + 4096, "p\nworkers 1", 12);
    LOAD_ERR(text, "t.conf:1: line longer than 4096 bytes");
    /* Even when all comment. */
    memset(text, '#', 5000);
    text[5000] = '\0';
    LOAD_ERR(text, "t.conf:1: line longer than 4096 bytes");
    free(text);

    /* The message is always terminated, even in a small buffer, and never ends with a newline. */
    {
        hd_conf_t *d = NULL;
        char small[12];
        T_EQ_INT(hd_conf_load_string(&d, "t.conf", "wrokers 1", NULL, 0, small, sizeof(small)),
                 HD_ECONF);
        T_EQ_STR(small, "t.conf:1: u");
        T_EQ_INT(hd_conf_load_string(&d, "t.conf", "wrokers 1", NULL, 0, NULL, 0), HD_ECONF);
        T_TRUE(d == NULL);
    }
}

/* ---- overrides ------------------------------------------------------------------------------- */

static void test_overrides(void)
{
    hd_conf_t *c;

    /* -o wins over the file, silently; a later -o wins over an earlier one. */
    c = LOAD_OK_O("workers 2\nlog_level debug", "workers 5", "log_level error", "log_level warn");
    T_EQ_INT(c->workers, 5);
    T_EQ_INT(c->log_level, HD_LOG_WARN);
    hd_conf_unref(c);

    /* Overrides alone, with quotes and comments. */
    c = LOAD_OK_O(NULL, "pidfile \"/run/a b.pid\"  # comment", "  max_body_size 4k  ");
    T_EQ_STR(c->pidfile, "/run/a b.pid");
    T_EQ_INT(c->max_body_bytes, 4096);
    hd_conf_unref(c);

    /* -o listen replaces the file's listen lines: the first clears them, later ones add. */
    c = LOAD_OK_O("listen 127.0.0.1:1\nlisten 127.0.0.1:2\nworkers 1", "listen 127.0.0.1:3",
                  "workers 2", "listen [::1]:4");
    T_EQ_INT(c->n_listens, 2);
    T_EQ_STR(c->listens[0].text, "127.0.0.1:3");
    T_EQ_STR(c->listens[1].text, "[::1]:4");
    T_EQ_INT(c->workers, 2);
    hd_conf_unref(c);

    /* ... and the default one when the file has none. */
    c = LOAD_OK_O("", "listen 127.0.0.1:0");
    T_EQ_INT(c->n_listens, 1);
    T_EQ_STR(c->listens[0].text, "127.0.0.1:0");
    hd_conf_unref(c);

    /* A file's listen lines stay when -o does not mention listen. */
    c = LOAD_OK_O("listen 127.0.0.1:1\nlisten 127.0.0.1:2", "workers 1");
    T_EQ_INT(c->n_listens, 2);
    hd_conf_unref(c);

    /* A file address repeated by -o is not a duplicate: the file's lines are gone. */
    c = LOAD_OK_O("listen 127.0.0.1:1", "listen 127.0.0.1:1");
    T_EQ_INT(c->n_listens, 1);
    hd_conf_unref(c);

    LOAD_ERR_O("", "-o 'workers x': workers: expected \"auto\" or an integer in 1..1024, got \"x\"",
               "workers x");
    LOAD_ERR_O("workers 2", "-o 'wrokers 1': unknown directive \"wrokers\"", "log_level info",
               "wrokers 1");
    LOAD_ERR_O("", "-o '': expected \"DIRECTIVE VALUE\"", "");
    LOAD_ERR_O("", "-o '  # nothing': expected \"DIRECTIVE VALUE\"", "  # nothing");
    LOAD_ERR_O("", "-o 'workers': workers: expected 1 value, got 0", "workers");
    LOAD_ERR_O("", "-o 'pidfile \"x': unterminated double quote", "pidfile \"x");
    /* A message is one printable line: control bytes echoed from the input show as '?' (found by
     * fuzz_conf: an override with a newline split the message, and the log line, in two). */
    LOAD_ERR_O("", "-o 'workers 2?workers 3': unexpected line break", "workers 2\nworkers 3");
    LOAD_ERR_O("",
               "-o 'log_level \"?[31mred\"': log_level: expected one of debug, info, warn, "
               "error, got \"?[31mred\"",
               "log_level \"\x1b[31mred\"");
    LOAD_ERR_O("",
               "-o 'listen *:1 ssl': listen: expected \"tls\", \"admin\" or \"proxy_protocol\" "
               "after the address, got \"ssl\"",
               "listen *:1 ssl");
    /* An error in the file is reported before any override is looked at. */
    LOAD_ERR_O("workers x",
               "t.conf:1: workers: expected \"auto\" or an integer in 1..1024, got \"x\"",
               "wrokers 1");
}

/* ---- checks across hd_conf_directives
 * ---------------------------------------------------------------- */

static void test_tls_checks(void)
{
    hd_conf_t *c;

    c = LOAD_OK("listen *:8080\nlisten *:8443 tls\ntls_certificate /etc/herald/cert.pem\n"
                "tls_certificate_key \"/etc/herald/my key.pem\"\ntls_min_version 1.3");
    T_EQ_INT(c->n_listens, 2);
    T_EQ_INT(c->listens[1].is_tls, 1);
    T_EQ_STR(c->tls_certificate, "/etc/herald/cert.pem");
    T_EQ_STR(c->tls_certificate_key, "/etc/herald/my key.pem");
    hd_conf_unref(c);

    /* A certificate without a tls listener is fine (it may be set ahead of time). */
    c = LOAD_OK("tls_certificate c.pem\ntls_certificate_key k.pem");
    T_EQ_INT(c->listens[0].is_tls, 0);
    hd_conf_unref(c);

    LOAD_ERR("workers 1\nlisten *:8443 tls",
             "t.conf:2: listen: tls listener *:8443 needs tls_certificate");
    LOAD_ERR("listen *:8080\nlisten *:8443 tls\ntls_certificate c.pem",
             "t.conf:2: listen: tls listener *:8443 needs tls_certificate_key");
    LOAD_ERR("listen *:8443 tls\ntls_certificate_key k.pem",
             "t.conf:1: listen: tls listener *:8443 needs tls_certificate");
    LOAD_ERR("\ntls_certificate c.pem", "t.conf:2: tls_certificate: set without "
                                        "tls_certificate_key");
    LOAD_ERR("\n\ntls_certificate_key k.pem",
             "t.conf:3: tls_certificate_key: set without tls_certificate");
    LOAD_ERR("tls_certificate c.pem\ntls_certificate_key off",
             "t.conf:1: tls_certificate: set without tls_certificate_key");
    LOAD_ERR_O("",
               "-o 'listen [::1]:8443 tls': listen: tls listener [::1]:8443 needs "
               "tls_certificate",
               "listen [::1]:8443 tls");
    LOAD_ERR_O("tls_certificate c.pem\ntls_certificate_key k.pem",
               "t.conf:1: tls_certificate: set without tls_certificate_key",
               "tls_certificate_key off");
    LOAD_ERR_O("tls_certificate c.pem\ntls_certificate_key k.pem",
               "t.conf:2: tls_certificate_key: set without tls_certificate",
               "tls_certificate new.pem", "tls_certificate off");

    /* The file's tls listener is gone once -o replaces the listeners. */
    c = LOAD_OK_O("listen *:8443 tls\ntls_certificate c.pem", "listen *:8080",
                  "tls_certificate off");
    T_EQ_INT(c->n_listens, 1);
    T_TRUE(c->tls_certificate == NULL);
    hd_conf_unref(c);
}

/* ---- files ----------------------------------------------------------------------------------- */

static void test_files(void)
{
    char dir[] = "/tmp/test_conf.XXXXXX", path[256], want[512];
    hd_conf_t *c = (hd_conf_t *)&c;

    T_TRUE(mkdtemp(dir) != NULL);

    snprintf(path, sizeof(path), "%s/missing.conf", dir);
    T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), UV_ENOENT);
    T_EQ_INT(UV_ENOENT, -ENOENT);
    T_TRUE(c == NULL);
    snprintf(want, sizeof(want), "cannot read %s: No such file or directory", path);
    T_EQ_STR(err, want);

    T_EQ_INT(hd_conf_load(&c, dir, NULL, 0, err, sizeof(err)), UV_EISDIR);
    snprintf(want, sizeof(want), "cannot read %s: Is a directory", dir);
    T_EQ_STR(err, want);

    /* A real file: its path is kept, errors name it, NUL bytes are refused. */
    snprintf(path, sizeof(path), "%s/x.conf", dir);
    write_file(path, "workers 3\r\n# c\r\nlisten [::1]:0\r\n", 32);
    T_EQ_INT(hd_conf_load(&c, path, (const char *const[]){"log_level debug"}, 1, err, sizeof(err)),
             0);
    T_EQ_STR(c->path, path);
    T_EQ_INT(c->workers, 3);
    T_EQ_INT(c->log_level, HD_LOG_DEBUG);
    T_EQ_STR(c->listens[0].text, "[::1]:0");
    hd_conf_unref(c);

    write_file(path, "workers 3\n\nworkers 4\n", 21);
    T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), HD_ECONF);
    snprintf(want, sizeof(want), "%s:3: workers: duplicate directive, first set on line 1", path);
    T_EQ_STR(err, want);

    write_file(path, "workers 3\npidfile a\0b\n", 22);
    T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), HD_ECONF);
    snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
    T_EQ_STR(err, want);

    /* An empty file is the defaults. */
    write_file(path, "", 0);
    T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), 0);
    T_EQ_INT(c->n_listens, 1);
    hd_conf_unref(c);

    /* A file larger than 1 MiB is refused, not read forever (think /dev/zero). */
    {
        size_t big = MAX_FILE + 1;
        char *data = hd_malloc(big);
        memset(data, '\n', big);
        write_file(path, data, big);
        free(data);
        T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), HD_ECONF);
        snprintf(want, sizeof(want), "cannot read %s: larger than 1048576 bytes", path);
        T_EQ_STR(err, want);
        /* Exactly 1 MiB is fine. */
        data = hd_malloc(MAX_FILE);
        memset(data, '\n', MAX_FILE);
        write_file(path, data, MAX_FILE);
        free(data);
        T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), 0);
        hd_conf_unref(c);
    }

    if (geteuid() != 0) {
        T_EQ_INT(chmod(path, 0), 0);
        T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), UV_EACCES);
        snprintf(want, sizeof(want), "cannot read %s: Permission denied", path);
        T_EQ_STR(err, want);
    }
    T_EQ_INT(unlink(path), 0);
    T_EQ_INT(rmdir(dir), 0);
}

/* ---- snapshots ------------------------------------------------------------------------------- */

static void test_refcount(void)
{
    hd_conf_t *c = LOAD_OK("pidfile /x\naccess_log /y\nlisten *:1\nlisten *:2");

    T_TRUE(hd_conf_ref(c) == c);
    T_EQ_INT(c->refs_, 2);
    hd_conf_ref(c);
    T_EQ_INT(c->refs_, 3);
    hd_conf_unref(c);
    hd_conf_unref(c);
    T_EQ_INT(c->refs_, 1);
    T_EQ_STR(c->pidfile, "/x");
    hd_conf_unref(c); /* frees: ASan reports a leak or a double free otherwise */
    hd_conf_unref(NULL);
}

static void test_restart_needed(void)
{
    hd_conf_t *a = defaults(), *b;
    char buf[256];

    T_EQ_INT(hd_conf_restart_needed(a, a, buf, sizeof(buf)), 0);
    T_EQ_STR(buf, "");

    /* Everything that can change live. */
    b = LOAD_OK("log_level debug\naccess_log /a\nmax_connections 5\naccept_rate 5\naccept_burst 5\n"
                "max_url_size 1k\nmax_header_size 2k\nmax_body_size 3k\nheader_timeout 1\n"
                "body_timeout 2\nkeepalive_timeout 3\nkeepalive_requests 4\nshutdown_timeout 5\n"
                "tls_certificate c\ntls_certificate_key k\ntls_ciphers HIGH\ntls_min_version 1.3");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 0);
    T_EQ_STR(buf, "");
    hd_conf_unref(b);

    /* The same listeners written differently need no restart. */
    b = LOAD_OK("listen *:8080\nlog_file off\npidfile \"\"");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 0);
    hd_conf_unref(b);

    /* A tls flag, one more listener, another port: all need a restart, named once. */
    b = LOAD_OK("listen *:8080 tls\ntls_certificate c\ntls_certificate_key k");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 1);
    T_EQ_STR(buf, "listen");
    hd_conf_unref(b);
    b = LOAD_OK("listen *:8080\nlisten *:8081");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 1);
    hd_conf_unref(b);
    b = LOAD_OK("listen *:8081");
    T_EQ_INT(hd_conf_restart_needed(b, a, buf, sizeof(buf)), 1);
    T_EQ_STR(buf, "listen");
    hd_conf_unref(b);
    b = LOAD_OK("listen *:8080 admin");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 1);
    T_EQ_STR(buf, "listen");
    hd_conf_unref(b);
    /* Keys and origins change live. */
    b = LOAD_OK("publish_key k1 k2\nadmin_key a\ncors_origins https://a.example");
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 0);
    hd_conf_unref(b);

    /* Each restart-only directive, in table order, whatever else changed. */
    {
        char text[256];
        snprintf(text, sizeof(text),
                 "listen [::]:8080\nworkers %u\npidfile /run/h.pid\nlog_file /var/log/h.log\n"
                 "log_level debug\nmax_connections 7",
                 a->workers == 1 ? 2 : 1);
        b = LOAD_OK(text);
        T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 4);
        T_EQ_STR(buf, "listen, workers, pidfile, log_file");
        /* A short buffer gets what fits, terminated; the count stays right. */
        T_EQ_INT(hd_conf_restart_needed(a, b, buf, 10), 4);
        T_EQ_STR(buf, "listen, w");
        T_EQ_INT(hd_conf_restart_needed(a, b, NULL, 0), 4);
        hd_conf_unref(b);
    }
    hd_conf_unref(a);
}

/* ---- the shipped conf/herald.conf ------------------------------------------------------------ */

/*
 * The hooks' value types (hook_values.c): each webhook line adds an endpoint (a name given twice
 * refused), a later authorize_hook or notify_hook line replaces the earlier one, "off" clears
 * each, and hd_conf_restart_needed tells the same definitions from others (all need a restart).
 */
static void test_hook_values(void)
{
#define HOOK_SECRET " secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static const char hooks[] = "webhook http://127.0.0.1:9/a name=a" HOOK_SECRET "\n"
                                "webhook http://127.0.0.1:9/b name=b" HOOK_SECRET "\n"
                                "authorize_hook http://127.0.0.1:9/x" HOOK_SECRET "\n"
                                "notify_hook http://127.0.0.1:9/n" HOOK_SECRET " batch=7\n";
    static const char *const replace =
        "authorize_hook http://127.0.0.1:9/y" HOOK_SECRET " timeout=1s";
    hd_conf_t *a = defaults(), *b = LOAD_OK_O(hooks, replace), *c;
    char buf[256];

    T_EQ_INT(a->n_webhooks, 0);
    T_TRUE(a->authorize_hook == NULL && a->notify_hook == NULL);
    T_EQ_INT(b->n_webhooks, 2);
    T_EQ_STR(b->webhooks[0].url, "http://127.0.0.1:9/a");
    T_EQ_STR(b->webhooks[1].name, "b");
    T_TRUE(b->authorize_hook != NULL && b->notify_hook != NULL);
    T_EQ_STR(b->authorize_hook->ep.url, "http://127.0.0.1:9/y");
    T_EQ_INT(b->authorize_hook->timeout_ms, 1000);
    T_EQ_INT(b->notify_hook->batch, 7);

    /* The same lines again: equal; other values, or none, need a restart named for each. */
    c = LOAD_OK_O(hooks, replace);
    T_EQ_INT(hd_conf_restart_needed(b, c, buf, sizeof(buf)), 0);
    hd_conf_unref(c);
    T_EQ_INT(hd_conf_restart_needed(a, b, buf, sizeof(buf)), 3);
    T_EQ_STR(buf, "webhook, authorize_hook, notify_hook");
    c = LOAD_OK_O(hooks, replace, "notify_hook http://127.0.0.1:9/n" HOOK_SECRET " batch=8");
    T_EQ_INT(hd_conf_restart_needed(b, c, buf, sizeof(buf)), 1);
    T_EQ_STR(buf, "notify_hook");
    hd_conf_unref(c);

    /* "off" clears what the lines before set. */
    c = LOAD_OK_O(hooks, "webhook off", "authorize_hook off", "notify_hook off");
    T_EQ_INT(c->n_webhooks, 0);
    T_TRUE(c->webhooks == NULL && c->authorize_hook == NULL && c->notify_hook == NULL);
    T_EQ_INT(hd_conf_restart_needed(a, c, buf, sizeof(buf)), 0);
    hd_conf_unref(c);

    LOAD_ERR("webhook http://127.0.0.1:9/a name=a" HOOK_SECRET "\n"
             "webhook http://127.0.0.1:9/c name=a" HOOK_SECRET,
             "t.conf:2: webhook: name \"a\" given twice");
    hd_conf_unref(a);
    hd_conf_unref(b);
#undef HOOK_SECRET
}

static void test_shipped_conf(void)
{
    const char *path = src_path("conf/herald.conf");
    hd_conf_t *c = NULL, *d = defaults();
    char *text;
    size_t len, i;

    T_EQ_INT(hd_conf_load(&c, path, NULL, 0, err, sizeof(err)), 0);
    T_EQ_STR(c->path, path);
    T_TRUE(conf_same(c, d));
    T_EQ_INT(hd_conf_restart_needed(c, d, NULL, 0), 0);
    hd_conf_unref(c);

    /* Every directive is in it, set to its default or shown in a comment, and documented. */
    text = slurp(path, &len);
    {
        char *doc = slurp(src_path("docs/configuration.md"), NULL);
        for (i = 0; i < hd_conf_n_directives; i++) {
            char want[512];
            snprintf(want, sizeof(want), "\n%s %s\n", hd_conf_directives[i].name,
                     hd_conf_directives[i].def);
            if (strstr(text, want) == NULL) {
                snprintf(want, sizeof(want), "\n# %s ", hd_conf_directives[i].name);
                T_CONTAINS(text, want);
            }
            snprintf(want, sizeof(want), "### %s\n", hd_conf_directives[i].name);
            T_CONTAINS(doc, want);
        }
        free(doc);
    }
    T_CONTAINS(text, "\n# listen 0.0.0.0:8443 tls\n");
    T_CONTAINS(text, "\n# tls_certificate /etc/herald/cert.pem\n");

    /* Cut at every line: both parts load and, put together, give the defaults. */
    for (i = 0; i <= len; i++) {
        hd_conf_t *head, *tail;
        char *first;
        if (i != 0 && i != len && text[i - 1] != '\n')
            continue;
        first = hd_strndup(text, i);
        head = LOAD_OK(first);
        tail = LOAD_OK(text + i);
        T_TRUE(conf_same(head, d) && conf_same(tail, d));
        free(first);
        hd_conf_unref(head);
        hd_conf_unref(tail);
    }

    /* Cut at every byte, in a buffer of exactly that size with no terminating NUL, so that any
     * read past the end is caught by ASan: each prefix loads or fails with a located message. */
    for (i = 0; i <= len; i++) {
        char *part = hd_malloc(i);
        int rc;
        memcpy(part, text, i);
        rc = load(&c, "herald.conf", part, i, NULL, 0, err, sizeof(err));
        test_checks_++;
        if (rc == 0) {
            hd_conf_unref(c);
        } else if (rc != HD_ECONF || c != NULL || strncmp(err, "herald.conf:", 12) != 0 ||
                   err[strlen(err) - 1] == '\n') {
            T_FAIL("prefix of %zu bytes: rc %d: %s", i, rc, err);
        }
        free(part);
    }

    /* Every directive line of the file is also a valid -o. */
    for (i = 0; i < len;) {
        size_t end = i;
        char *line;
        while (end < len && text[end] != '\n')
            end++;
        line = hd_strndup(text + i, end - i);
        if (strspn(line, " \t\r") != strlen(line) && line[strspn(line, " \t")] != '#') {
            c = load_ok_("", (const char *const[]){line}, 1, __LINE__);
            T_TRUE(conf_same(c, d));
            hd_conf_unref(c);
        }
        free(line);
        i = end + 1;
    }
    free(text);
    hd_conf_unref(d);
}

int main(void)
{
    T_RUN(test_defaults);
    T_RUN(test_table);
    T_RUN(test_print_reference);
    T_RUN(test_parse_numbers);
    T_RUN(test_bool_setter);
    T_RUN(test_uint);
    T_RUN(test_size);
    T_RUN(test_duration);
    T_RUN(test_string);
    T_RUN(test_enum);
    T_RUN(test_listen);
    T_RUN(test_list);
    T_RUN(test_cors_origins);
    T_RUN(test_client_ip);
    T_RUN(test_syntax);
    T_RUN(test_overrides);
    T_RUN(test_tls_checks);
    T_RUN(test_files);
    T_RUN(test_refcount);
    T_RUN(test_restart_needed);
    T_RUN(test_hook_values);
    T_RUN(test_shipped_conf);
    T_DONE();
}
