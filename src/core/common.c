/* SPDX-License-Identifier: MIT */
/* common.c: error table, assertion failure, aborting allocators, monotonic clock. */
#include "herald/common.h"

#include <string.h>
#include <time.h>
#include <uv.h>

const char *hd_strerror(int err)
{
    switch (err) {
#define HD_ERR_MSG(name, val, status, close, msg)                                                  \
    case HD_##name:                                                                                \
        return msg;
        HD_ERRNO_MAP(HD_ERR_MSG)
#undef HD_ERR_MSG
    default: {
        /* uv_strerror allocates (and leaks) for codes it does not know: use the _r form. */
        static __thread char text[128];
        return err < 0 ? uv_strerror_r(err, text, sizeof(text)) : "success";
    }
    }
}

int hd_err_http_status(int err)
{
    switch (err) {
#define HD_ERR_STATUS(name, val, status, close, msg)                                               \
    case HD_##name:                                                                                \
        return status;
        HD_ERRNO_MAP(HD_ERR_STATUS)
#undef HD_ERR_STATUS
    default:
        return 500;
    }
}

int hd_err_ws_close(int err)
{
    switch (err) {
#define HD_ERR_CLOSE(name, val, status, close, msg)                                                \
    case HD_##name:                                                                                \
        return close;
        HD_ERRNO_MAP(HD_ERR_CLOSE)
#undef HD_ERR_CLOSE
    default:
        return 1011;
    }
}

void hd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "herald: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

static void *oom(size_t n)
{
    fprintf(stderr, "herald: out of memory allocating %zu bytes\n", n);
    abort();
}

void *hd_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : oom(n);
}

/*
 * glibc before 2.41 serves calloc from its arenas only (_int_malloc under the arena's lock),
 * never from the thread's cache of freed chunks (tcache) that malloc and free use: a small
 * calloc costs about 200 instructions where malloc and a memset cost about 60. Every
 * subscription, broker request and WebSocket subscription is a small calloc. Up to
 * CALLOC_BY_MALLOC bytes (tcache holds chunks of up to 1,032), calloc is malloc + memset; a
 * large one stays calloc, which knows fresh pages are zero already.
 */
#define CALLOC_BY_MALLOC 1024

void *hd_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n ? n : 1, size ? size : 1, &total))
        return oom(SIZE_MAX);
    if (total <= CALLOC_BY_MALLOC) {
        void *p = malloc(total);
        if (!p)
            return oom(total);
        __asm__("" : "+r"(p)); /* else GCC makes the pair a calloc again */
        return memset(p, 0, total);
    }
    void *p = calloc(1, total);
    return p ? p : oom(total);
}

void *hd_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom(n);
}

void *hd_grow(void *p, size_t *cap, size_t need, size_t first, size_t limit)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap * 2 : first;
    while (n < need)
        n *= 2;
    if (limit && n > limit && limit >= need)
        n = limit;
    *cap = n;
    return hd_realloc(p, n);
}

void *hd_grow_array(void *p, size_t *cap, size_t need, size_t elem_size, size_t first)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap * 2 : (first ? first : 1), bytes;
    while (n < need)
        n *= 2;
    if (__builtin_mul_overflow(n, elem_size, &bytes))
        oom(SIZE_MAX);
    *cap = n;
    return hd_realloc(p, bytes);
}

char *hd_strdup(const char *s)
{
    return hd_strndup(s, strlen(s));
}

char *hd_strndup(const char *s, size_t n)
{
    char *p = hd_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

uint64_t hd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int hd_pct_decode(const char *s, size_t len, char *out, size_t outlen, unsigned flags)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '%' && len - i >= 3 && hd_hexval(s[i + 1]) >= 0 && hd_hexval(s[i + 2]) >= 0) {
            ch = (char)(hd_hexval(s[i + 1]) * 16 + hd_hexval(s[i + 2]));
            i += 2;
            if (ch == '\0' && (flags & HD_PCT_STRICT))
                return -1;
        } else if (ch == '%' && (flags & HD_PCT_STRICT)) {
            return -1;
        } else if (ch == '+' && (flags & HD_PCT_PLUS)) {
            ch = ' ';
        }
        if (n + 1 >= outlen)
            return -1;
        out[n++] = ch;
    }
    if (outlen == 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}
