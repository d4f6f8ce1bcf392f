/* SPDX-License-Identifier: MIT */
/*
 * test_heap.c: the intrusive min-heap (core/heap.c) the connection deadlines and the embedded
 * broker's expiry use: pops in key order with ties, removal and re-keying from any slot against
 * a plain array as the reference, the all-zero heap and node, growth from the first size and
 * the memory given back as it empties, and hd_heap_check catching a broken heap.
 */
#include "herald/common.h"
#include "herald/heap.h"
#include "test.h"

typedef struct item_s {
    hd_heap_node_t node;
    int id;
} item_t;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Pops everything; keys come out in non-decreasing order and every node leaves with idx 0. */
static void drain_sorted(hd_heap_t *h, size_t expect)
{
    uint64_t last = 0;
    size_t n = 0;
    hd_heap_node_t *first;
    while ((first = hd_heap_min(h)) != NULL) {
        T_TRUE(first->key >= last);
        last = first->key;
        hd_heap_remove(h, first);
        T_EQ_INT(first->idx, 0);
        T_TRUE(!hd_heap_contains(first));
        n++;
    }
    T_EQ_INT(n, expect);
    T_EQ_INT(h->n, 0);
}

static void test_zero_heap(void)
{
    hd_heap_t h = {0}; /* the all-zero heap is a valid empty one */
    item_t a = {0}, b = {0};
    T_TRUE(hd_heap_min(&h) == NULL);
    T_TRUE(hd_heap_check(&h) == NULL);
    T_TRUE(!hd_heap_contains(&a.node));
    a.node.key = 5;
    b.node.key = 3;
    hd_heap_push(&h, &a.node);
    T_EQ_INT(h.cap, 16); /* the default first size */
    hd_heap_push(&h, &b.node);
    T_TRUE(hd_heap_min(&h) == &b.node);
    T_EQ_INT(b.node.idx, 1);
    T_EQ_INT(a.node.idx, 2);
    b.node.key = 9; /* re-keyed: goes down */
    hd_heap_update(&h, &b.node);
    T_TRUE(hd_heap_min(&h) == &a.node);
    drain_sorted(&h, 2);
    hd_heap_dispose(&h);
    T_TRUE(h.a == NULL);
}

static void test_ties_and_order(void)
{
    enum { N = 1000 };
    static item_t items[N];
    hd_heap_t h;
    hd_heap_init(&h, 4);
    for (int i = 0; i < N; i++) {
        items[i] = (item_t){.id = i};
        items[i].node.key = rnd() % 10; /* many equal keys */
        hd_heap_push(&h, &items[i].node);
        T_TRUE(hd_heap_check(&h) == NULL);
    }
    T_EQ_INT(h.n, N);
    T_EQ_INT(h.cap, 1024); /* 4 doubled up to N */
    drain_sorted(&h, N);
    T_EQ_INT(h.cap, 4); /* given back as it emptied, down to the first size */
    hd_heap_dispose(&h);
}

/* Random pushes, removals from any slot and re-keys in both directions, checked after every step
 * against the set of items that should be in (the minimum is the smallest of their keys). */
static void test_random_against_reference(void)
{
    enum { N = 300, STEPS = 20000 };
    static item_t items[N];
    hd_heap_t h;
    hd_heap_init(&h, 8);
    size_t in = 0;
    for (int i = 0; i < N; i++)
        items[i] = (item_t){.id = i};
    for (int step = 0; step < STEPS; step++) {
        item_t *it = &items[rnd() % N];
        switch (rnd() % 3) {
        case 0:
            if (!hd_heap_contains(&it->node)) {
                it->node.key = rnd() % 100000;
                hd_heap_push(&h, &it->node);
                in++;
            }
            break;
        case 1:
            if (hd_heap_contains(&it->node)) {
                hd_heap_remove(&h, &it->node);
                in--;
            }
            break;
        default:
            if (hd_heap_contains(&it->node)) {
                it->node.key = rnd() % 100000;
                hd_heap_update(&h, &it->node);
            }
        }
        const char *why = hd_heap_check(&h);
        if (why)
            T_FAIL("step %d: %s", step, why);
        T_EQ_INT(h.n, in);
        uint64_t min = UINT64_MAX;
        for (int i = 0; i < N; i++)
            if (hd_heap_contains(&items[i].node) && items[i].node.key < min)
                min = items[i].node.key;
        if (in)
            T_EQ_INT(hd_heap_min(&h)->key, min);
        else
            T_TRUE(hd_heap_min(&h) == NULL);
    }
    drain_sorted(&h, in);
    hd_heap_dispose(&h);
}

/* hd_heap_check is what the connection census relies on: it must see a broken heap. */
static void test_check_sees_damage(void)
{
    item_t a = {0}, b = {0}, c = {0};
    hd_heap_t h;
    hd_heap_init(&h, 0);
    a.node.key = 1;
    b.node.key = 2;
    c.node.key = 3;
    hd_heap_push(&h, &a.node);
    hd_heap_push(&h, &b.node);
    hd_heap_push(&h, &c.node);
    T_TRUE(hd_heap_check(&h) == NULL);
    a.node.key = 10; /* changed without hd_heap_update */
    T_EQ_STR(hd_heap_check(&h), "a key is smaller than its parent's");
    hd_heap_update(&h, &a.node);
    T_TRUE(hd_heap_check(&h) == NULL);
    h.a[0]->idx = 3;
    T_EQ_STR(hd_heap_check(&h), "a node's idx does not point at its slot");
    h.a[0]->idx = 1;
    drain_sorted(&h, 3);
    hd_heap_dispose(&h);
}

int main(void)
{
    T_RUN(test_zero_heap);
    T_RUN(test_ties_and_order);
    T_RUN(test_random_against_reference);
    T_RUN(test_check_sees_damage);
    T_DONE();
}
