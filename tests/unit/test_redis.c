/* SPDX-License-Identifier: MIT */
/*
 * test_redis.c: unit tests of the Redis bridge's configuration: hd_conf_redis_parse (the redis
 * directive's URL syntax) and the redis, redis_prefix, redis_timeout directives. The bridge
 * itself runs against a real redis-server in tests/integration/test_redis.py.
 */
#include "herald/common.h"
#include "herald/conf.h"

#include "test.h"

typedef struct url_case_s {
    const char *url;
    const char *host, *path, *user, *password;
    int port;
    unsigned db;
} url_case_t;

static const url_case_t good[] = {
    {"redis://127.0.0.1", "127.0.0.1", "", "", "", 6379, 0},
    {"redis://127.0.0.1/", "127.0.0.1", "", "", "", 6379, 0},
    {"redis://127.0.0.1:6380/2", "127.0.0.1", "", "", "", 6380, 2},
    {"redis://localhost:1/15", "localhost", "", "", "", 1, 15},
    {"redis://[::1]:7000/3", "::1", "", "", "", 7000, 3},
    {"redis://[::1]", "::1", "", "", "", 6379, 0},
    {"redis://:s3cret@h:6379/1", "h", "", "", "s3cret", 6379, 1},
    {"redis://app:s3cret@h", "h", "", "app", "s3cret", 6379, 0},
    {"redis://a%40b:p%3Aw%2F@h:9/0", "h", "", "a@b", "p:w/", 9, 0},
    {"redis://u:p@ss@h", "h", "", "u", "p@ss", 6379, 0}, /* the last @ ends the user info */
    {"/run/redis/redis.sock", "", "/run/redis/redis.sock", "", "", 6379, 0},
    {"unix:///tmp/r.sock", "", "/tmp/r.sock", "", "", 6379, 0},
    {"unix:/tmp/r.sock?db=4", "", "/tmp/r.sock", "", "", 6379, 4},
    {"unix:///tmp/r.sock?db=2&password=s3cret&user=me", "", "/tmp/r.sock", "me", "s3cret", 6379, 2},
};

static const char *const bad[] = {
    "",
    "redis",
    "redis://",
    "redis:///0",
    "redis://h:",
    "redis://h:0",
    "redis://h:65536",
    "redis://h:12x",
    "redis://h/x",
    "redis://h/0/1",
    "redis://[::1",
    "redis://s3cret@h",
    "redis://:s3cret%zz@h",
    "redis://:s3cret%4@h",
    "redis://:s3cret%00@h",
    "rediss://h",
    "http://h",
    "unix:relative.sock",
    "unix:///tmp/r.sock?db=x",
    "unix:///tmp/r.sock?nope=1",
    "unix:///tmp/r.sock?password",
    "relative.sock",
};

/* Parses url from a heap copy of exactly its size, so that any over-read is caught. */
static int parse(const char *url, hd_redis_addr_t *a, char *err, size_t errlen)
{
    size_t n = strlen(url);
    char *copy = hd_malloc(n + 1);
    memcpy(copy, url, n + 1);
    int rc = hd_conf_redis_parse(copy, a, err, errlen);
    free(copy);
    return rc;
}

static void test_good_urls(void)
{
    char err[256];
    for (size_t i = 0; i < HD_ARRAY_SIZE(good); i++) {
        const url_case_t *c = &good[i];
        hd_redis_addr_t a;
        err[0] = '\0';
        if (parse(c->url, &a, err, sizeof(err)) != 0)
            T_FAIL("%s: %s", c->url, err);
        T_EQ_STR(a.host, c->host);
        T_EQ_STR(a.path, c->path);
        T_EQ_STR(a.user, c->user);
        T_EQ_STR(a.password, c->password);
        T_EQ_INT(a.port, c->port);
        T_EQ_INT(a.db, c->db);
    }
}

static void test_bad_urls(void)
{
    char err[256];
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        hd_redis_addr_t a;
        err[0] = '\0';
        if (parse(bad[i], &a, err, sizeof(err)) != HD_ECONF)
            T_FAIL("\"%s\" parsed", bad[i]);
        T_TRUE(err[0] != '\0');
        if (strstr(err, "s3cret"))
            T_FAIL("\"%s\": the message shows the password: %s", bad[i], err);
    }
}

/* Every prefix of every URL parses or fails cleanly, never with the password in the message. */
static void test_every_prefix(void)
{
    char err[256], buf[128];
    for (size_t i = 0; i < HD_ARRAY_SIZE(good); i++) {
        size_t n = strlen(good[i].url);
        for (size_t k = 0; k <= n; k++) {
            hd_redis_addr_t a;
            memcpy(buf, good[i].url, k);
            buf[k] = '\0';
            err[0] = '\0';
            int rc = parse(buf, &a, err, sizeof(err));
            T_TRUE(rc == 0 || rc == HD_ECONF);
            T_TRUE(rc == 0 || err[0] != '\0');
            T_TRUE(strstr(err, "s3cret") == NULL);
        }
    }
    /* A short error buffer is never overrun. */
    hd_redis_addr_t a;
    T_EQ_INT(parse("http://h", &a, err, 4), HD_ECONF);
    T_EQ_INT(strlen(err), 3);
    T_EQ_INT(parse("http://h", &a, NULL, 0), HD_ECONF);
}

static void test_directives(void)
{
    char err[512];
    hd_conf_t *c = NULL;
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "", NULL, 0, err, sizeof(err)), 0);
    T_TRUE(c->redis == NULL);
    T_EQ_STR(c->redis_prefix, "herald:");
    T_EQ_INT(c->redis_timeout_ms, 3000);
    hd_conf_unref(c);

    const char *ok = "redis redis://:pw@10.0.0.5:6380/1\nredis_prefix app1:\nredis_timeout 500ms\n";
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", ok, NULL, 0, err, sizeof(err)), 0);
    T_EQ_STR(c->redis, "redis://:pw@10.0.0.5:6380/1");
    T_EQ_STR(c->redis_prefix, "app1:");
    T_EQ_INT(c->redis_timeout_ms, 500);
    hd_conf_unref(c);

    const char *off[] = {"redis off"};
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", ok, off, 1, err, sizeof(err)), 0);
    T_TRUE(c->redis == NULL);
    hd_conf_unref(c);

    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "\nredis redis://:s3cret@h:99999\n", NULL, 0, err,
                                 sizeof(err)),
             HD_ECONF);
    T_TRUE(c == NULL);
    T_EQ_STR(err, "t.conf:2: redis: expected a port in 1..65535");
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "redis_prefix \"a b\"\n", NULL, 0, err, sizeof(err)),
             HD_ECONF);
    T_CONTAINS(err, "redis_prefix: expected 1..64 printable characters");
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "redis_prefix \"\"\n", NULL, 0, err, sizeof(err)),
             HD_ECONF);
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "redis_timeout 50ms\n", NULL, 0, err, sizeof(err)),
             HD_ECONF);
    T_CONTAINS(err, "redis_timeout: expected a duration");

    /* All three need a restart. */
    hd_conf_t *a, *b;
    T_EQ_INT(hd_conf_load_string(&a, "a", "", NULL, 0, err, sizeof(err)), 0);
    T_EQ_INT(hd_conf_load_string(&b, "b", ok, NULL, 0, err, sizeof(err)), 0);
    char changed[256];
    T_EQ_INT(hd_conf_restart_needed(a, b, changed, sizeof(changed)), 3);
    T_EQ_STR(changed, "redis, redis_prefix, redis_timeout");
    hd_conf_unref(a);
    hd_conf_unref(b);
}

int main(void)
{
    T_RUN(test_good_urls);
    T_RUN(test_bad_urls);
    T_RUN(test_every_prefix);
    T_RUN(test_directives);
    T_DONE();
}
