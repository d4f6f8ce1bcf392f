/* SPDX-License-Identifier: MIT */
/*
 * h2_mem.c: nghttp2's allocator for one session (h2.c). Every block comes from malloc but
 * those of 16 KiB or more. nghttp2 allocates its frame buffer (16 KiB and a frame header) with
 * the session, by realloc from NULL (nghttp2_buf_reserve), and keeps it for the session's
 * life, but writes only the frame being packed, at its start (DATA payloads never go there:
 * h2_out.c copies them itself), so that buffer gets pages of its own (mmap), resident only
 * where they were written (its first page): a block carved from a heap whose pages were
 * touched before is resident whole. At most HD_H2_BIG_MAX such blocks a session (nghttp2 adds
 * frame buffer chunks only for a header block past 16 KiB); past that, or if mmap fails,
 * malloc.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BIG_BYTES (16 * 1024)

/* In front of each big block (16 bytes: the block stays aligned as malloc's are). */
typedef struct big_s {
    size_t len;
    size_t pad;
} big_t;

static void *big_alloc(hd_h2_t *h2, size_t size)
{
    for (int i = 0; i < HD_H2_BIG_MAX; i++) {
        if (h2->big[i])
            continue;
        void *p = mmap(NULL, size + sizeof(big_t), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        ((big_t *)p)->len = size;
        h2->big[i] = (big_t *)p + 1;
        return h2->big[i];
    }
    return NULL;
}

static int big_index(const hd_h2_t *h2, const void *ptr)
{
    for (int i = 0; i < HD_H2_BIG_MAX; i++)
        if (h2->big[i] && h2->big[i] == ptr)
            return i;
    return -1;
}

static void big_free(hd_h2_t *h2, int i)
{
    big_t *b = (big_t *)h2->big[i] - 1;
    munmap(b, b->len + sizeof(big_t));
    h2->big[i] = NULL;
}

static void *mem_malloc(size_t size, void *user)
{
    void *p = size >= BIG_BYTES ? big_alloc(user, size) : NULL;
    return p ? p : malloc(size);
}

static void mem_free(void *ptr, void *user)
{
    int i = ptr ? big_index(user, ptr) : -1;
    if (i >= 0)
        big_free(user, i);
    else
        free(ptr);
}

static void *mem_calloc(size_t n, size_t size, void *user)
{
    void *p = NULL;
    if (size && n <= SIZE_MAX / size && n * size >= BIG_BYTES)
        p = big_alloc(user, n * size); /* mmap's pages are zero */
    return p ? p : calloc(n, size);
}

static void *mem_realloc(void *ptr, size_t size, void *user)
{
    hd_h2_t *h2 = user;
    if (!ptr)
        return mem_malloc(size, h2); /* how nghttp2 allocates its buffers, the frame buffer too */
    int i = big_index(h2, ptr);
    if (i < 0)
        return realloc(ptr, size);
    size_t old = ((big_t *)ptr - 1)->len;
    void *p = mem_malloc(size, h2);
    if (!p)
        return NULL;
    memcpy(p, ptr, old < size ? old : size);
    big_free(h2, i);
    return p;
}

void hd_h2_mem_init(hd_h2_t *h2, nghttp2_mem *mem)
{
    mem->mem_user_data = h2;
    mem->malloc = mem_malloc;
    mem->free = mem_free;
    mem->calloc = mem_calloc;
    mem->realloc = mem_realloc;
}
