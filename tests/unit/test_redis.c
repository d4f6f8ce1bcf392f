/* SPDX-License-Identifier: MIT */
/*
 * test_redis.c: unit tests of the Redis bridge's configuration (the redis, redis_prefix,
 * redis_timeout, redis_max_pending and idempotency_window directives; the URL syntax itself:
 * test_redis_url.c) and of its reply parsing (broker/redis_reply.c): herald_read's array,
 * herald_publish_batch's ids, pub/sub payloads, each from RESP bytes through hiredis's reader,
 * good and every way of being wrong. The bridge itself runs against a real redis-server in
 * tests/integration/test_redis.py.
 */
#include "herald/common.h"
#include "herald/conf.h"
#include "broker/redis_reply.h"

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

/* The reply tree hiredis makes of RESP bytes (a heap copy of exactly their size). */
static redisReply *resp_n(const char *text, size_t n)
{
    char *copy = hd_malloc(n ? n : 1);
    memcpy(copy, text, n);
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    T_TRUE(redisReaderFeed(rd, copy, n) == REDIS_OK);
    T_TRUE(redisReaderGetReply(rd, &rep) == REDIS_OK && rep != NULL);
    redisReaderFree(rd);
    free(copy);
    return rep;
}

static redisReply *resp(const char *text)
{
    return resp_n(text, strlen(text));
}

static void test_new_directives(void)
{
    char err[512];
    hd_conf_t *c = NULL;
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "", NULL, 0, err, sizeof(err)), 0);
    T_EQ_INT(c->idempotency_window_ms, 600000);
    T_EQ_INT(c->redis_max_pending, 100000);
    hd_conf_unref(c);
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "idempotency_window 0\nredis_max_pending 16\n", NULL,
                                 0, err, sizeof(err)),
             0);
    T_EQ_INT(c->idempotency_window_ms, 0);
    T_EQ_INT(c->redis_max_pending, 16);
    hd_conf_unref(c);
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "redis_max_pending 15\n", NULL, 0, err, sizeof(err)),
             HD_ECONF);
    T_EQ_INT(
        hd_conf_load_string(&c, "t.conf", "idempotency_window 25h\n", NULL, 0, err, sizeof(err)),
        HD_ECONF);
}

static void test_reply_scalars(void)
{
    uint64_t v;
    redisReply *r = resp(":42\r\n");
    T_EQ_INT(hd_redis_reply_u64(r, &v), 0);
    T_EQ_INT(v, 42);
    freeReplyObject(r);
    r = resp(":-1\r\n");
    T_EQ_INT(hd_redis_reply_u64(r, &v), -1);
    freeReplyObject(r);
    r = resp("$19\r\n1234567890123456789\r\n");
    T_EQ_INT(hd_redis_reply_u64(r, &v), 0);
    freeReplyObject(r);
    static const char *const bad[] = {"$20\r\n12345678901234567890\r\n",
                                      "$0\r\n\r\n",
                                      "$2\r\n1x\r\n",
                                      "*0\r\n",
                                      "$-1\r\n",
                                      "-ERR x\r\n"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        r = resp(bad[i]);
        if (hd_redis_reply_u64(r, &v) != -1)
            T_FAIL("u64 of %s", bad[i]);
        freeReplyObject(r);
    }
    T_EQ_INT(hd_redis_reply_u64(NULL, &v), -1);
    const char *s;
    size_t len;
    T_EQ_INT(hd_redis_reply_str(NULL, &s, &len), -1);
    r = resp("+OK\r\n");
    T_EQ_INT(hd_redis_reply_str(r, &s, &len), 0);
    T_EQ_INT(len, 2);
    freeReplyObject(r);
}

static void test_parse_read(void)
{
    hd_redis_read_t res;
    static const char read15[] =
        "*15\r\n$6\r\nmx0-12\r\n:1\r\n:1\r\n$6\r\nmx0-11\r\n:2\r\n"
        "$6\r\nmx0-10\r\n$13\r\n1700000000000\r\n$10\r\ntext/plain\r\n$0\r\n\r\n$2\r\nhi\r\n"
        "$6\r\nmx0-11\r\n:1700000000001\r\n$0\r\n\r\n$12\r\n{\"sub\":\"42\"}\r\n"
        "$3\r\n\x00\x01\x02\r\n";
    redisReply *r = resp_n(read15, sizeof(read15) - 1);
    T_EQ_INT(hd_redis_parse_read("news", 4, r, &res), 0);
    T_EQ_INT(res.cur, 12);
    T_EQ_INT(res.gap, 1);
    T_EQ_INT(res.found, 1);
    T_EQ_INT(res.history_len, 2);
    T_EQ_STR(res.last_id, "mx0-11");
    T_EQ_INT(res.n, 2);
    T_EQ_STR(res.msgs[0]->id, "mx0-10");
    T_EQ_STR(res.msgs[0]->channel, "news");
    T_EQ_STR(res.msgs[0]->content_type, "text/plain");
    T_EQ_INT(res.msgs[0]->time_ms, 1700000000000ull);
    T_TRUE(res.msgs[0]->len == 2 && memcmp(res.msgs[0]->data, "hi", 2) == 0);
    T_TRUE(res.msgs[0]->publisher == NULL);
    T_EQ_STR(res.msgs[1]->publisher, "{\"sub\":\"42\"}"); /* the stamp travels with it */
    T_EQ_INT(res.msgs[1]->len, 3);
    T_TRUE(memcmp(res.msgs[1]->data, "\x00\x01\x02", 3) == 0);
    hd_redis_read_dispose(&res);
    freeReplyObject(r);

    /* header only: a channel with no history */
    r = resp("*5\r\n$5\r\nmx0-0\r\n:0\r\n:0\r\n$0\r\n\r\n:0\r\n");
    T_EQ_INT(hd_redis_parse_read("c", 1, r, &res), 0);
    T_EQ_INT(res.n, 0);
    T_TRUE(res.msgs == NULL);
    freeReplyObject(r);

    static const char *const bad[] = {
        "*4\r\n$5\r\nmx0-0\r\n:0\r\n:0\r\n$0\r\n\r\n",             /* too short */
        "*6\r\n$5\r\nmx0-0\r\n:0\r\n:0\r\n$0\r\n\r\n:0\r\n:0\r\n", /* not 5 + 5k */
        "*5\r\n$3\r\nmx0\r\n:0\r\n:0\r\n$0\r\n\r\n:0\r\n",         /* bad current id */
        "*5\r\n$5\r\nmx0-0\r\n:-1\r\n:0\r\n$0\r\n\r\n:0\r\n",      /* negative gap */
        "*5\r\n$5\r\nmx0-0\r\n:0\r\n*0\r\n$0\r\n\r\n:0\r\n",       /* found not a number */
        "*5\r\n$5\r\nmx0-0\r\n:0\r\n:0\r\n:7\r\n:0\r\n",           /* last id not a string */
        "*5\r\n$5\r\nmx0-0\r\n:0\r\n:0\r\n$0\r\n\r\n$1\r\nx\r\n",  /* length not a number */
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n"       /* a bad content type: */
        "$5\r\nmx0-1\r\n:1\r\n$20\r\ntext/plain; "
        "x=\xff\xfe\xff\xfe\xff\xfe\r\n$0\r\n\r\n$1\r\nx\r\n",
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* a bad id */
        "$4\r\nmx0-\r\n:1\r\n$0\r\n\r\n$0\r\n\r\n$1\r\nx\r\n",
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* time not a number */
        "$5\r\nmx0-1\r\n$1\r\nt\r\n$0\r\n\r\n$0\r\n\r\n$1\r\nx\r\n",
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* payload not a string */
        "$5\r\nmx0-1\r\n:1\r\n$0\r\n\r\n$0\r\n\r\n*1\r\n:1\r\n",
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* a stamp that is no object */
        "$5\r\nmx0-1\r\n:1\r\n$0\r\n\r\n$3\r\n[1]\r\n$1\r\nx\r\n",
        "*10\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* a stamp that is no JSON */
        "$5\r\nmx0-1\r\n:1\r\n$0\r\n\r\n$3\r\n{x}\r\n$1\r\nx\r\n",
        "*9\r\n$5\r\nmx0-1\r\n:0\r\n:1\r\n$0\r\n\r\n:1\r\n" /* the old form, 4 per message */
        "$5\r\nmx0-1\r\n:1\r\n$0\r\n\r\n$1\r\nx\r\n",
        "-ERR herald: x\r\n",
        ":5\r\n",
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        r = resp(bad[i]);
        if (hd_redis_parse_read("c", 1, r, &res) != -1)
            T_FAIL("herald_read answer %zu accepted", i);
        T_TRUE(res.n == 0 && res.msgs == NULL);
        freeReplyObject(r);
    }
    T_EQ_INT(hd_redis_parse_read("c", 1, NULL, &res), -1);
}

static void test_parse_publish(void)
{
    hd_message_t *m[2] = {hd_message_new("a", 1, "", "x", 1), hd_message_new("b", 1, "", "y", 1)};
    redisReply *r = resp("*3\r\n:1700000000000\r\n$5\r\nmx0-7\r\n$5\r\nmx0-3\r\n");
    T_EQ_INT(hd_redis_parse_publish(r, m, 2), 0);
    T_EQ_STR(m[0]->id, "mx0-7");
    T_EQ_STR(m[1]->id, "mx0-3"); /* an idempotent retry: the first publish's id */
    T_EQ_INT(m[1]->time_ms, 1700000000000ull);
    freeReplyObject(r);
    static const char *const bad[] = {"*2\r\n:1\r\n$5\r\nmx0-9\r\n",
                                      "*3\r\n:1\r\n$5\r\nmx0-9\r\n$3\r\nbad\r\n",
                                      "*3\r\n$1\r\nx\r\n$5\r\nmx0-9\r\n$5\r\nmx0-9\r\n", "+OK\r\n"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        r = resp(bad[i]);
        if (hd_redis_parse_publish(r, m, 2) != -1)
            T_FAIL("herald_publish_batch answer %zu accepted", i);
        freeReplyObject(r);
    }
    T_EQ_STR(m[0]->id, "mx0-7"); /* a refused answer changes nothing */
    hd_message_unref(m[0]);
    hd_message_unref(m[1]);
}

static void test_parse_pubsub(void)
{
    static const char good[] = "mx0-5\n1700000000000\napplication/json\n\n{\"a\":\n1}";
    hd_message_t *m = hd_redis_parse_pubsub("ch", 2, good, sizeof(good) - 1);
    T_TRUE(m != NULL);
    T_EQ_STR(m->id, "mx0-5");
    T_EQ_STR(m->content_type, "application/json");
    T_TRUE(m->publisher == NULL);
    T_TRUE(m->len == 8 && memcmp(m->data, "{\"a\":\n1}", 8) == 0);
    hd_message_unref(m);
    m = hd_redis_parse_pubsub("ch", 2, "mx0-5\n1\n\n\n", 10); /* empty type and payload */
    T_TRUE(m != NULL && m->len == 0);
    hd_message_unref(m);
    static const char stamped[] = "mx0-6\n1\ntext/plain\n{\"sub\":\"u\",\"info\":{}}\nhi\n";
    m = hd_redis_parse_pubsub("ch", 2, stamped, sizeof(stamped) - 1);
    T_TRUE(m != NULL);
    T_EQ_STR(m->publisher, "{\"sub\":\"u\",\"info\":{}}");
    T_TRUE(m->len == 3 && memcmp(m->data, "hi\n", 3) == 0);
    hd_message_unref(m);
    /* a message whose publisher asked receipts: its tag names where they go (pubsub.h) */
    static const char tagged[] = "mx0-7 a1b2-1000000000002f\n1\ntext/plain\n\nhi";
    m = hd_redis_parse_pubsub("ch", 2, tagged, sizeof(tagged) - 1);
    T_TRUE(m != NULL && m->rcpt != NULL);
    T_EQ_STR(m->id, "mx0-7");
    T_EQ_STR(m->rcpt->node, "a1b2");
    T_TRUE(m->rcpt->conn_id == 0x1000000000002full && m->rcpt->worker == NULL);
    T_TRUE(!m->rcpt->is_here && !hd_rcpt_is_publisher(m->rcpt, 0x1000000000002full));
    hd_message_unref(m);
    static const char *const bad[] = {"",
                                      "mx0-5 \n1\ntext/plain\n\nx",
                                      "mx0-5 a1b2\n1\ntext/plain\n\nx",
                                      "mx0-5 A1-2\n1\ntext/plain\n\nx",
                                      "mx0-5 a1-\n1\ntext/plain\n\nx",
                                      "mx0-5 a1-12345678901234567\n1\ntext/plain\n\nx",
                                      "mx0-5 1234567890123456-1\n1\ntext/plain\n\nx",
                                      "mx0-5",
                                      "mx0-5\n1\ntext/plain\n",
                                      "mx0-5\n\ntext/plain\n\nx",
                                      "mx0-5\n1x\ntext/plain\n\nx",
                                      "mx0-5\n12345678901234567890\ntext/plain\n\nx",
                                      "mx0\n1\ntext/plain\n\nx",
                                      "mx0-5\n1\ntext\n\nx",
                                      "mx0-5\n1\ntext/plain; x=\xff\n\nx",
                                      "mx0-5\n1\ntext/plain\n{\"a\"\nx",
                                      "mx0-5\n1\ntext/plain\n[]\nx"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        /* from a heap copy of exactly its size: an over-read is caught */
        size_t n = strlen(bad[i]);
        char *copy = hd_malloc(n ? n : 1);
        memcpy(copy, bad[i], n);
        m = hd_redis_parse_pubsub("ch", 2, copy, n);
        if (m) {
            hd_message_unref(m);
            T_FAIL("pub/sub payload %zu accepted", i);
        }
        free(copy);
    }
}

/* Live-only events: "~e" (ephemeral, typed and stamped), "~j" / "~l" (presence). */
static void test_parse_events(void)
{
    static const char eph[] = "~e\n5\napplication/json\n{\"sub\":\"u\"}\n{\"typing\":true}";
    hd_message_t *m = hd_redis_parse_pubsub("ch", 2, eph, sizeof(eph) - 1);
    T_TRUE(m != NULL);
    T_TRUE(m->kind == HD_MSG_EPHEMERAL && m->seq == 0 && m->id_len == 0);
    T_EQ_STR(m->publisher, "{\"sub\":\"u\"}");
    T_EQ_STR(m->content_type, "application/json");
    hd_message_unref(m);
    static const char join[] = "~j\n5\n\n\n{\"member\":{\"sub\":\"a\"},\"conn\":\"1f-2\"}";
    m = hd_redis_parse_pubsub("ch", 2, join, sizeof(join) - 1);
    T_TRUE(m != NULL && m->kind == HD_MSG_JOIN);
    hd_message_unref(m);
    static const char leave[] = "~l\n5\n\n\n{\"member\":{\"conn\":\"1f-2\"},\"conn\":\"1f-2\"}";
    m = hd_redis_parse_pubsub("ch", 2, leave, sizeof(leave) - 1);
    T_TRUE(m != NULL && m->kind == HD_MSG_LEAVE);
    hd_message_unref(m);
    static const char *const bad[] = {
        "~x\n5\n\n\n{\"member\":{}}",           /* unknown kind */
        "~j\n5\ntext/plain\n\n{\"member\":{}}", /* a type on a presence event */
        "~j\n5\n\n{}\n{\"member\":{}}",         /* a stamp on a presence event */
        "~j\n5\n\n\n{\"conn\":\"x\"}",          /* no member */
        "~l\n5\n\n\n {\"member\":{}}",          /* not starting with its '{' */
        "~l\n5\n\n\n[1]",                       /* not an object */
        "~e\n5\ntext\n\nhi",                    /* a bad type */
        "~e\n5\ntext/plain\n[]\nhi",            /* a stamp that is not an object */
        "~e\n5\ntext/plain\n"};                 /* cut short */
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        size_t n = strlen(bad[i]);
        char *copy = hd_malloc(n ? n : 1);
        memcpy(copy, bad[i], n);
        m = hd_redis_parse_pubsub("ch", 2, copy, n);
        if (m) {
            hd_message_unref(m);
            T_FAIL("event payload %zu accepted", i);
        }
        free(copy);
    }
}

int main(void)
{
    T_RUN(test_directives);
    T_RUN(test_new_directives);
    T_RUN(test_reply_scalars);
    T_RUN(test_parse_read);
    T_RUN(test_parse_publish);
    T_RUN(test_parse_pubsub);
    T_RUN(test_parse_events);
    T_DONE();
}
