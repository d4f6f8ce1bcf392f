/* SPDX-License-Identifier: MIT */
/*
 * test_redis_url.c: unit tests of hd_redis_url_parse, the syntax of the redis directive's value:
 * every accepted form, every refusal (with a message that never shows the password), every
 * prefix of every good URL, and error buffers too short for the message.
 */
#include "herald/common.h"
#include "herald/redis_url.h"

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
    int rc = hd_redis_url_parse(copy, a, err, errlen);
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

/* Each field at its longest fits; one byte more is refused, never written past the field. */
static void test_field_limits(void)
{
    char err[256], url[1024], big[600];
    hd_redis_addr_t a;

    memset(big, 'h', sizeof(big));
    big[255] = '\0';
    snprintf(url, sizeof(url), "redis://%s:1", big);
    T_EQ_INT(parse(url, &a, err, sizeof(err)), 0);
    T_EQ_INT(strlen(a.host), 255);
    big[255] = 'h';
    big[256] = '\0';
    snprintf(url, sizeof(url), "redis://%s:1", big);
    T_EQ_INT(parse(url, &a, err, sizeof(err)), HD_ECONF);

    memset(big, 'p', sizeof(big));
    big[255] = '\0';
    snprintf(url, sizeof(url), "redis://:%s@h", big);
    T_EQ_INT(parse(url, &a, err, sizeof(err)), 0);
    T_EQ_INT(strlen(a.password), 255);
    big[255] = 'p';
    big[256] = '\0';
    snprintf(url, sizeof(url), "redis://:%s@h", big);
    T_EQ_INT(parse(url, &a, err, sizeof(err)), HD_ECONF);
    T_TRUE(strstr(err, "ppp") == NULL);

    memset(big, 'u', sizeof(big));
    big[0] = '/';
    big[107] = '\0';
    T_EQ_INT(parse(big, &a, err, sizeof(err)), 0);
    T_EQ_INT(strlen(a.path), 107);
    big[107] = 'u';
    big[108] = '\0';
    T_EQ_INT(parse(big, &a, err, sizeof(err)), HD_ECONF);
    T_CONTAINS(err, "too long");

    /* A database number that overflows 64 bits is refused, not wrapped. */
    T_EQ_INT(parse("redis://h/18446744073709551617", &a, err, sizeof(err)), HD_ECONF);
    T_EQ_INT(parse("redis://h/1000001", &a, err, sizeof(err)), HD_ECONF);
    T_EQ_INT(parse("redis://h/1000000", &a, err, sizeof(err)), 0);
    T_EQ_INT(a.db, 1000000);
}

int main(void)
{
    T_RUN(test_good_urls);
    T_RUN(test_bad_urls);
    T_RUN(test_every_prefix);
    T_RUN(test_field_limits);
    T_DONE();
}
