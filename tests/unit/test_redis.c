/* SPDX-License-Identifier: MIT */
/*
 * test_redis.c: unit tests of the Redis bridge's configuration: the redis, redis_prefix and
 * redis_timeout directives (the URL syntax itself: test_redis_url.c). The bridge itself runs
 * against a real redis-server in tests/integration/test_redis.py.
 */
#include "herald/common.h"
#include "herald/conf.h"

#include "test.h"

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
    T_RUN(test_directives);
    T_DONE();
}
