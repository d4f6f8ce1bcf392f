/* SPDX-License-Identifier: MIT */
/*
 * heap.h: an intrusive binary min-heap of nodes keyed by a 64-bit number (a deadline, a
 * publish time). The entry embeds an hd_heap_node_t; the heap holds only an array of pointers
 * to nodes, and each node knows its slot, so removing or re-keying any entry costs O(log n):
 *
 *   a: [ n0 | n1 | n2 | n3 | n4 | -- | -- | -- ]   n 5, cap 8; a[i]'s children: a[2i+1], a[2i+2]
 *        ^ the smallest key       n3->idx == 4 (1-based: 0 means "in no heap")
 *
 * The all-zero node is "in no heap" and the all-zero heap is a valid empty heap (its first
 * allocation then holds 16 slots). The array doubles when full and halves when a quarter full,
 * never below its first size, so a heap that held a flood gives the memory back. Nothing here
 * locks: the owner serializes calls (one worker's loop, or a lock the owner holds).
 */
#ifndef HERALD_HEAP_H
#define HERALD_HEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_heap_node_s {
    uint64_t key; /* set before hd_heap_push; hd_heap_update after changing it in the heap */
    uint32_t idx; /* 1-based slot in the heap; 0: in no heap */
    uint32_t aux; /* the owner's (the heap never reads it): it fills what would be padding */
} hd_heap_node_t;

typedef struct hd_heap_s {
    hd_heap_node_t **a;
    uint32_t n;       /* nodes in the heap */
    uint32_t min_cap; /* the first allocation, in slots; the array never shrinks below it */
    size_t cap;       /* slots allocated */
} hd_heap_t;

/* An empty heap whose array, once needed, starts at min_cap slots (0: 16). Allocates nothing. */
void hd_heap_init(hd_heap_t *h, uint32_t min_cap);
/* Frees the array; the nodes belong to the caller (and keep stale idx values). */
void hd_heap_dispose(hd_heap_t *h);
/* Adds node (in no heap; its key set). */
void hd_heap_push(hd_heap_t *h, hd_heap_node_t *node);
/* Takes node (in h) out; its idx becomes 0. */
void hd_heap_remove(hd_heap_t *h, hd_heap_node_t *node);
/* Puts node (in h) back in order after its key changed, up or down. */
void hd_heap_update(hd_heap_t *h, hd_heap_node_t *node);
/* NULL when the heap has no node, otherwise the node of the smallest key (ties: any of them). */
static inline hd_heap_node_t *hd_heap_min(const hd_heap_t *h)
{
    return h->n ? h->a[0] : NULL;
}
static inline int hd_heap_contains(const hd_heap_node_t *node)
{
    return node->idx != 0;
}
/* For tests and census: NULL when every slot's node points back at it and no key is smaller than
 * its parent's, else what is wrong. */
const char *hd_heap_check(const hd_heap_t *h);

#endif
