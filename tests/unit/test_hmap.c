/* SPDX-License-Identifier: MIT */
/* test_hmap.c: the intrusive string-keyed hash map: insert, find, growth, remove, foreach. */
#include "herald/common.h"
#include "herald/hmap.h"
#include "test.h"

typedef struct item_s {
    hd_hnode_t node;
    char name[16];
    int seen;
} item_t;

static void mark(hd_hnode_t *n, void *arg)
{
    hd_container_of(n, item_t, node)->seen++;
    (*(int *)arg)++;
}

static void test_many(void)
{
    enum { N = 5000 };
    static item_t items[N];
    hd_hmap_t m;
    hd_hmap_init(&m, 4);
    for (int i = 0; i < N; i++) {
        items[i].node.key_len = (size_t)snprintf(items[i].name, sizeof(items[i].name), "ch%d", i);
        items[i].node.key = items[i].name;
        hd_hmap_insert(&m, &items[i].node);
    }
    T_EQ_INT(m.n, N);
    T_TRUE(m.n_buckets >= N);
    for (int i = 0; i < N; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "ch%d", i);
        T_TRUE(hd_hmap_find(&m, k, (size_t)n) == &items[i].node);
    }
    T_TRUE(hd_hmap_find(&m, "ch", 2) == NULL);
    T_TRUE(hd_hmap_find(&m, "ch1x", 4) == NULL);
    for (int i = 0; i < N; i += 2)
        hd_hmap_remove(&m, &items[i].node);
    T_EQ_INT(m.n, N / 2);
    T_TRUE(hd_hmap_find(&m, "ch0", 3) == NULL);
    T_TRUE(hd_hmap_find(&m, "ch1", 3) == &items[1].node);
    int visits = 0;
    hd_hmap_foreach(&m, mark, &visits);
    T_EQ_INT(visits, N / 2);
    for (int i = 0; i < N; i++)
        T_EQ_INT(items[i].seen, i % 2);
    hd_hmap_dispose(&m);
}

static void test_prefix_keys(void)
{
    /* keys that are prefixes of each other, and binary bytes, are distinct */
    item_t a = {.name = "a"}, ab = {.name = "ab"}, nul = {.name = {'a', 0, 'b'}};
    a.node = (hd_hnode_t){.key = a.name, .key_len = 1};
    ab.node = (hd_hnode_t){.key = ab.name, .key_len = 2};
    nul.node = (hd_hnode_t){.key = nul.name, .key_len = 3};
    hd_hmap_t m;
    hd_hmap_init(&m, 1);
    hd_hmap_insert(&m, &a.node);
    hd_hmap_insert(&m, &ab.node);
    hd_hmap_insert(&m, &nul.node);
    T_TRUE(hd_hmap_find(&m, "a", 1) == &a.node);
    T_TRUE(hd_hmap_find(&m, "ab", 2) == &ab.node);
    T_TRUE(hd_hmap_find(&m, nul.name, 3) == &nul.node);
    hd_hmap_dispose(&m);
}

int main(void)
{
    T_RUN(test_many);
    T_RUN(test_prefix_keys);
    T_DONE();
}
