/* SPDX-License-Identifier: MIT */
/*
 * heap.c: the intrusive binary min-heap (heap.h) behind the connection layer's deadlines
 * (src/net/conn_timeout.c) and the embedded broker's history expiry (src/broker/memory_store.c).
 */
#include "herald/heap.h"
#include "herald/common.h"

#define FIRST_CAP 16u

void hd_heap_init(hd_heap_t *h, uint32_t min_cap)
{
    h->a = NULL;
    h->n = 0;
    h->cap = 0;
    h->min_cap = min_cap;
}

void hd_heap_dispose(hd_heap_t *h)
{
    free(h->a);
    h->a = NULL;
    h->n = 0;
    h->cap = 0;
}

static void set(hd_heap_t *h, uint32_t i, hd_heap_node_t *node)
{
    h->a[i] = node;
    node->idx = i + 1;
}

/* Moves the node at slot i up past every parent with a larger key. */
static void sift_up(hd_heap_t *h, uint32_t i)
{
    hd_heap_node_t *node = h->a[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->a[parent]->key <= node->key)
            break;
        set(h, i, h->a[parent]);
        i = parent;
    }
    set(h, i, node);
}

/* Moves the node at slot i down past every child with a smaller key. */
static void sift_down(hd_heap_t *h, uint32_t i)
{
    hd_heap_node_t *node = h->a[i];
    for (;;) {
        uint32_t l = 2 * i + 1, m = l;
        if (l >= h->n)
            break;
        if (l + 1 < h->n && h->a[l + 1]->key < h->a[l]->key)
            m = l + 1;
        if (h->a[m]->key >= node->key)
            break;
        set(h, i, h->a[m]);
        i = m;
    }
    set(h, i, node);
}

void hd_heap_push(hd_heap_t *h, hd_heap_node_t *node)
{
    HD_ASSERT(node->idx == 0);
    h->a = hd_grow_array(h->a, &h->cap, (size_t)h->n + 1, sizeof(*h->a),
                         h->min_cap ? h->min_cap : FIRST_CAP);
    set(h, h->n++, node);
    sift_up(h, h->n - 1);
}

void hd_heap_remove(hd_heap_t *h, hd_heap_node_t *node)
{
    HD_ASSERT(node->idx > 0 && node->idx <= h->n && h->a[node->idx - 1] == node);
    uint32_t i = node->idx - 1;
    node->idx = 0;
    hd_heap_node_t *last = h->a[--h->n];
    if (i != h->n) {
        set(h, i, last);
        hd_heap_update(h, last);
    }
    size_t min = h->min_cap ? h->min_cap : FIRST_CAP;
    if (h->cap > min && (size_t)h->n * 4 < h->cap) {
        h->cap /= 2; /* a heap that held a flood gives the memory back */
        h->a = hd_realloc(h->a, h->cap * sizeof(*h->a));
    }
}

void hd_heap_update(hd_heap_t *h, hd_heap_node_t *node)
{
    HD_ASSERT(node->idx > 0 && node->idx <= h->n && h->a[node->idx - 1] == node);
    sift_up(h, node->idx - 1);
    sift_down(h, node->idx - 1);
}

const char *hd_heap_check(const hd_heap_t *h)
{
    if (h->n > h->cap)
        return "more nodes than slots";
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->a[i]->idx != i + 1)
            return "a node's idx does not point at its slot";
        if (i > 0 && h->a[i]->key < h->a[(i - 1) / 2]->key)
            return "a key is smaller than its parent's";
    }
    return NULL;
}
