/* SPDX-License-Identifier: MIT */
/* buf.c: refcounted byte buffers and the string builder that produces them. */
#include "herald/buf.h"
#include "herald/common.h"

#include <stdarg.h>

hd_buf_t *hd_buf_new(size_t cap)
{
    HD_ASSERT(cap <= UINT32_MAX);
    hd_buf_t *b = hd_malloc(sizeof(*b) + cap);
    b->refs = 1;
    b->cap = (uint32_t)cap;
    b->len = 0;
    return b;
}

hd_buf_t *hd_buf_new_copy(const void *data, size_t len)
{
    hd_buf_t *b = hd_buf_new(len);
    memcpy(b->data, data, len);
    b->len = len;
    return b;
}

void hd_buf_unref(hd_buf_t *b)
{
    HD_ASSERT(b->refs > 0);
    if (--b->refs == 0)
        free(b);
}

void hd_sbuf_init(hd_sbuf_t *s, size_t cap)
{
    s->buf = hd_buf_new(cap < 64 ? 64 : cap);
}

static void reserve(hd_sbuf_t *s, size_t extra)
{
    hd_buf_t *b = s->buf;
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap * 2;
    while (cap < b->len + extra)
        cap *= 2;
    HD_ASSERT(cap <= UINT32_MAX);
    b = hd_realloc(b, sizeof(*b) + cap);
    b->cap = (uint32_t)cap;
    s->buf = b;
}

void hd_sbuf_append(hd_sbuf_t *s, const void *data, size_t len)
{
    reserve(s, len);
    memcpy(s->buf->data + s->buf->len, data, len);
    s->buf->len += len;
}

size_t hd_u64_dec(char *out, uint64_t v)
{
    char tmp[HD_U64_DEC_MAX];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, tmp + sizeof(tmp) - n, n);
    return n;
}

void hd_sbuf_append_u64(hd_sbuf_t *s, uint64_t v)
{
    char tmp[HD_U64_DEC_MAX];
    hd_sbuf_append(s, tmp, hd_u64_dec(tmp, v));
}

void hd_sbuf_appendf(hd_sbuf_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = s->buf->cap - s->buf->len;
    int n = vsnprintf(s->buf->data + s->buf->len, room, fmt, ap);
    va_end(ap);
    HD_ASSERT(n >= 0);
    if ((size_t)n >= room) {
        reserve(s, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(s->buf->data + s->buf->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    s->buf->len += (size_t)n;
}

hd_buf_t *hd_sbuf_finish(hd_sbuf_t *s)
{
    hd_buf_t *b = s->buf;
    s->buf = NULL;
    return b;
}

void hd_sbuf_dispose(hd_sbuf_t *s)
{
    if (s->buf)
        hd_buf_unref(s->buf);
    s->buf = NULL;
}
