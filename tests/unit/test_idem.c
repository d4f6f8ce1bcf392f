/* SPDX-License-Identifier: MIT */
/*
 * test_idem.c: unit tests of the embedded broker's idempotency table (broker/idem.c): a key is
 * found within its window and on its channel only, expiry and forgetting, the byte bound that
 * forgets the oldest first, and a window of 0 that stores nothing.
 */
#include "broker/idem.h"

#include "test.h"

static void test_find_put_expire(void)
{
    hd_idem_t t;
    uint64_t seq = 0;
    hd_idem_init(&t, 1000, 1 << 20);
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 0, &seq), 0);
    hd_idem_put(&t, "a", 1, "k", 7, 100);
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 500, &seq), 1);
    T_EQ_INT(seq, 7);
    T_EQ_INT(hd_idem_find(&t, "b", 1, "k", 500, &seq), 0);  /* keys are per channel */
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k2", 500, &seq), 0); /* and exact */
    /* "a:b" + "c" and "a" + "b/c" never meet: channel names have no '/' */
    hd_idem_put(&t, "a:b", 3, "c", 9, 100);
    T_EQ_INT(hd_idem_find(&t, "a", 1, "b:c", 500, &seq), 0);
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 1100, &seq), 0); /* the window is over */
    T_TRUE(t.bytes > 0);
    hd_idem_expire(&t, 1100);
    T_EQ_INT(t.map.n, 0);
    T_EQ_INT(t.bytes, 0);
    hd_idem_put(&t, "a", 1, "k", 8, 2000); /* new again */
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 2001, &seq), 1);
    T_EQ_INT(seq, 8);
    hd_idem_forget(&t, "a", 1, "k");
    hd_idem_forget(&t, "a", 1, "nope");
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 2001, &seq), 0);
    hd_idem_dispose(&t);
}

static void test_bound(void)
{
    hd_idem_t t;
    uint64_t seq;
    char key[32];
    hd_idem_init(&t, 60000, 16 * 1024);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        hd_idem_put(&t, "ch", 2, key, (uint64_t)i + 1, 10);
        T_TRUE(t.bytes <= 16 * 1024);
    }
    T_TRUE(t.n_forgotten > 9000);
    T_EQ_INT(t.map.n + t.n_forgotten, 10000);
    T_EQ_INT(hd_idem_find(&t, "ch", 2, "key-0", 20, &seq), 0);    /* the oldest went */
    T_EQ_INT(hd_idem_find(&t, "ch", 2, "key-9999", 20, &seq), 1); /* the newest stays */
    T_EQ_INT(seq, 10000);
    hd_idem_dispose(&t);
}

static void test_off(void)
{
    hd_idem_t t;
    uint64_t seq;
    hd_idem_init(&t, 0, 1 << 20);
    hd_idem_put(&t, "a", 1, "k", 1, 0);
    T_EQ_INT(hd_idem_find(&t, "a", 1, "k", 0, &seq), 0);
    T_EQ_INT(t.bytes, 0);
    hd_idem_dispose(&t);
}

int main(void)
{
    T_RUN(test_find_put_expire);
    T_RUN(test_bound);
    T_RUN(test_off);
    T_DONE();
}
