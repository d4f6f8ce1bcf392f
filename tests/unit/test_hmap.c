/* SPDX-License-Identifier: MIT */
/*
 * test_hmap.c: the intrusive string-keyed hash map (insert, find, growth, remove, foreach) and
 * its keyed hash: SipHash-2-4 against the paper's vectors, a per-process key, and an even
 * spread of names that all share one bucket under the unkeyed FNV-1a the map used to have.
 */
#include "herald/common.h"
#include "herald/hmap.h"
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

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

/* After a flood the bucket array goes back to its initial size as the map empties. */
static void test_shrinks(void)
{
    enum { N = 5000 };
    static item_t items[N];
    hd_hmap_t m;
    hd_hmap_init(&m, 8);
    for (int i = 0; i < N; i++) {
        items[i].node.key_len = (size_t)snprintf(items[i].name, sizeof(items[i].name), "s%d", i);
        items[i].node.key = items[i].name;
        hd_hmap_insert(&m, &items[i].node);
    }
    T_EQ_INT(m.n_buckets, 8192);
    for (int i = 0; i < N - 100; i++) {
        hd_hmap_remove(&m, &items[i].node);
        T_TRUE(m.n_buckets <= 8 || m.n * 4 >= m.n_buckets / 2); /* never far below a quarter */
    }
    T_EQ_INT(m.n_buckets, 256); /* 100 entries: fewer than 1 per 4 of 512 */
    for (int i = N - 100; i < N; i++)
        T_TRUE(hd_hmap_find(&m, items[i].name, items[i].node.key_len) == &items[i].node);
    for (int i = N - 100; i < N; i++)
        hd_hmap_remove(&m, &items[i].node);
    T_EQ_INT(m.n_buckets, 8);
    hd_hmap_dispose(&m);
}

static void remove_self(hd_hnode_t *n, void *arg)
{
    hd_hmap_remove(arg, n);
    hd_container_of(n, item_t, node)->seen++;
}

/* A foreach whose callback removes each node visits every node once: no shrink mid-walk. */
static void test_foreach_removing(void)
{
    enum { N = 1000 };
    static item_t items[N];
    hd_hmap_t m;
    hd_hmap_init(&m, 8);
    for (int i = 0; i < N; i++) {
        items[i].node.key_len = (size_t)snprintf(items[i].name, sizeof(items[i].name), "f%d", i);
        items[i].node.key = items[i].name;
        hd_hmap_insert(&m, &items[i].node);
    }
    T_EQ_INT(m.n_buckets, 1024);
    hd_hmap_foreach(&m, remove_self, &m);
    T_EQ_INT(m.n, 0);
    for (int i = 0; i < N; i++)
        T_EQ_INT(items[i].seen, 1);
    T_EQ_INT(m.n_buckets, 1024);
    hd_hmap_insert(&m, &items[0].node);
    hd_hmap_remove(&m, &items[0].node); /* the next removal shrinks again */
    T_EQ_INT(m.n_buckets, 512);
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

static void test_siphash_vectors(void)
{
    /* SipHash-2-4, key 00 01 .. 0f, input 00 01 .. (len-1): the reference vectors */
    uint8_t key[HD_HASH_KEY_BYTES], in[15];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        in[i] = (uint8_t)i;
    T_TRUE(hd_siphash(in, 0, key) == 0x726fdb47dd0e0e31ull);
    T_TRUE(hd_siphash(in, 1, key) == 0x74f839c593dc67fdull);
    T_TRUE(hd_siphash(in, 8, key) == 0x93f5f5799a932462ull);
    T_TRUE(hd_siphash(in, 15, key) == 0xa129ca6149be45e5ull); /* the paper's appendix A */
    key[0] ^= 1;
    T_TRUE(hd_siphash(in, 15, key) != 0xa129ca6149be45e5ull);
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static size_t longest_chain(const hd_hmap_t *m)
{
    size_t longest = 0;
    for (size_t i = 0; i < m->n_buckets; i++) {
        size_t n = 0;
        for (hd_hnode_t *e = m->buckets[i]; e; e = e->next)
            n++;
        if (n > longest)
            longest = n;
    }
    return longest;
}

/* An attacker's names: all in one bucket of a 1,024-bucket table under FNV-1a. */
static void test_crafted_names_spread(void)
{
    enum { N = 1000 };
    static item_t items[N];
    int n = 0;
    for (int i = 0; n < N; i++) {
        char k[16];
        size_t len = (size_t)snprintf(k, sizeof(k), "x%d", i);
        if ((fnv1a(k, len) & 1023) != 7)
            continue;
        memcpy(items[n].name, k, len + 1);
        items[n].node = (hd_hnode_t){.key = items[n].name, .key_len = len};
        n++;
    }
    hd_hmap_t m;
    hd_hmap_init(&m, 1024);
    for (int i = 0; i < N; i++)
        hd_hmap_insert(&m, &items[i].node);
    T_EQ_INT(m.n_buckets, 1024);
    size_t longest = longest_chain(&m);
    if (longest > 8)
        T_FAIL("crafted names: a chain of %zu in 1024 buckets", longest);
    hd_hmap_dispose(&m);
}

/* Ordinary names fill buckets as a random function would: about 1/e of them stay empty. */
static void test_distribution(void)
{
    enum { N = 65536 };
    static item_t items[N];
    hd_hmap_t m;
    hd_hmap_init(&m, N);
    for (int i = 0; i < N; i++) {
        items[i].node.key_len = (size_t)snprintf(items[i].name, sizeof(items[i].name), "ch%d", i);
        items[i].node.key = items[i].name;
        hd_hmap_insert(&m, &items[i].node);
    }
    T_EQ_INT(m.n_buckets, N);
    size_t empty = 0;
    for (size_t i = 0; i < m.n_buckets; i++)
        empty += m.buckets[i] == NULL;
    /* expected N/e = 24109, standard deviation about 123 */
    if (empty < 23500 || empty > 24700)
        T_FAIL("%zu empty buckets of %d, expected about 24109", empty, N);
    size_t longest = longest_chain(&m);
    if (longest > 12)
        T_FAIL("a chain of %zu in %d buckets", longest, N);
    hd_hmap_dispose(&m);
}

/* Each process draws its own key: a child started before the key is drawn gets another. */
static void test_key_per_process(void)
{
    int fds[2];
    T_EQ_INT(pipe(fds), 0);
    pid_t pid = fork();
    T_TRUE(pid >= 0);
    if (pid == 0) {
        ssize_t n = write(fds[1], hd_hash_key(), HD_HASH_KEY_BYTES);
        _exit(n == HD_HASH_KEY_BYTES ? 0 : 1);
    }
    uint8_t child[HD_HASH_KEY_BYTES], zero[HD_HASH_KEY_BYTES] = {0};
    T_EQ_INT(read(fds[0], child, sizeof(child)), HD_HASH_KEY_BYTES);
    int status;
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    const uint8_t *mine = hd_hash_key();
    T_TRUE(memcmp(mine, child, HD_HASH_KEY_BYTES) != 0);
    T_TRUE(memcmp(mine, zero, HD_HASH_KEY_BYTES) != 0);
    T_TRUE(hd_hash_key() == mine); /* drawn once */
    T_TRUE(hd_hash("abc", 3) == hd_siphash("abc", 3, mine));
}

int main(void)
{
    T_RUN(test_key_per_process); /* first: before anything draws this process's key */
    T_RUN(test_siphash_vectors);
    T_RUN(test_many);
    T_RUN(test_prefix_keys);
    T_RUN(test_shrinks);
    T_RUN(test_foreach_removing);
    T_RUN(test_crafted_names_spread);
    T_RUN(test_distribution);
    T_DONE();
}
