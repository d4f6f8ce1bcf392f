/* SPDX-License-Identifier: MIT */
/* test_buf.c: unit tests of src/core/buf.c: refcounted buffers and the string builder. */
#include "herald/buf.h"
#include "herald/common.h"

#include "test.h"

static void test_buf_new(void)
{
    hd_buf_t *b = hd_buf_new(10);
    T_EQ_INT(b->refs, 1);
    T_EQ_INT(b->cap, 10);
    T_EQ_INT(b->len, 0);
    memcpy(b->data, "0123456789", 10);
    b->len = 10;
    hd_buf_unref(b);

    /* Zero capacity is a valid, empty buffer. */
    b = hd_buf_new(0);
    T_EQ_INT(b->cap, 0);
    T_EQ_INT(b->len, 0);
    hd_buf_unref(b);
}

static void test_buf_copy_and_refs(void)
{
    hd_buf_t *b = hd_buf_new_copy("hello", 5);
    T_EQ_INT(b->len, 5);
    T_EQ_INT(b->cap, 5);
    T_TRUE(memcmp(b->data, "hello", 5) == 0);

    /* Each holder takes a reference; the memory lives until the last one is dropped (ASan
     * reports a use after free or a leak otherwise). */
    hd_buf_t *r1 = hd_buf_ref(b);
    hd_buf_t *r2 = hd_buf_ref(b);
    T_TRUE(r1 == b && r2 == b);
    T_EQ_INT(b->refs, 3);
    hd_buf_unref(r1);
    T_EQ_INT(b->refs, 2);
    T_TRUE(memcmp(b->data, "hello", 5) == 0);
    hd_buf_unref(r2);
    T_EQ_INT(b->refs, 1);
    hd_buf_unref(b);

    b = hd_buf_new_copy("", 0);
    T_EQ_INT(b->len, 0);
    hd_buf_unref(b);
}

static void test_sbuf_append(void)
{
    hd_sbuf_t s;
    hd_sbuf_init(&s, 0);
    T_TRUE(s.buf != NULL);
    T_TRUE(s.buf->cap >= 64); /* small requests get a useful minimum */
    T_EQ_INT(s.buf->len, 0);
    hd_sbuf_appends(&s, "abc");
    hd_sbuf_append(&s, "defg", 2);
    T_EQ_INT(s.buf->len, 5);
    T_TRUE(memcmp(s.buf->data, "abcde", 5) == 0);
    hd_buf_t *b = hd_sbuf_finish(&s);
    T_TRUE(s.buf == NULL);
    T_EQ_INT(b->refs, 1);
    T_EQ_INT(b->len, 5);
    hd_buf_unref(b);
    hd_sbuf_dispose(&s); /* after finish: nothing to release */
}

static void test_sbuf_growth(void)
{
    /* Grow far past the initial capacity, one byte and then big blocks at a time, checking the
     * content every step. */
    hd_sbuf_t s;
    hd_sbuf_init(&s, 64);
    size_t cap0 = s.buf->cap;
    char expect[200000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        char ch = (char)('a' + i % 26);
        hd_sbuf_append(&s, &ch, 1);
        expect[n++] = ch;
    }
    T_TRUE(s.buf->cap > cap0);
    char block[10007];
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = (char)(i * 7);
    for (int i = 0; i < 19; i++) {
        hd_sbuf_append(&s, block, sizeof(block));
        memcpy(expect + n, block, sizeof(block));
        n += sizeof(block);
    }
    T_EQ_INT(s.buf->len, n);
    T_TRUE(s.buf->cap >= n);
    T_TRUE(memcmp(s.buf->data, expect, n) == 0);

    /* A single append much larger than double the capacity. */
    hd_sbuf_t t;
    hd_sbuf_init(&t, 64);
    hd_sbuf_append(&t, expect, n);
    T_EQ_INT(t.buf->len, n);
    T_TRUE(memcmp(t.buf->data, expect, n) == 0);
    hd_sbuf_dispose(&t);
    T_TRUE(t.buf == NULL);

    hd_buf_t *b = hd_sbuf_finish(&s);
    T_EQ_INT(b->len, n);
    hd_buf_unref(b);
}

static void test_sbuf_appendf(void)
{
    hd_sbuf_t s;
    hd_sbuf_init(&s, 64);
    hd_sbuf_appendf(&s, "%d-%s", 42, "x");
    T_EQ_INT(s.buf->len, 4);
    T_TRUE(memcmp(s.buf->data, "42-x", 4) == 0);

    /* Output longer than the room left: formatted again after growing. */
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    hd_sbuf_appendf(&s, "[%s]%zu", big, sizeof(big));
    size_t want = 4 + 1 + (sizeof(big) - 1) + 1 + 4;
    T_EQ_INT(s.buf->len, want);
    T_TRUE(memcmp(s.buf->data, "42-x[", 5) == 0);
    T_TRUE(memcmp(s.buf->data + 5, big, sizeof(big) - 1) == 0);
    T_TRUE(memcmp(s.buf->data + 5 + sizeof(big) - 1, "]5000", 5) == 0);

    /* Output that fits exactly up to the last byte of room (vsnprintf needs one for the NUL). */
    hd_sbuf_t e;
    hd_sbuf_init(&e, 64);
    hd_sbuf_appendf(&e, "%s", "0123456789012345678901234567890123456789012345678901234567890123");
    T_EQ_INT(e.buf->len, 64);
    hd_sbuf_appendf(&e, "%s", "!");
    T_EQ_INT(e.buf->len, 65);
    T_TRUE(memcmp(e.buf->data + 60, "0123!", 5) == 0);
    hd_sbuf_appendf(&e, "%s", "");
    T_EQ_INT(e.buf->len, 65);
    hd_sbuf_dispose(&e);

    /* Many small formatted appends across several growths. */
    hd_sbuf_t m;
    hd_sbuf_init(&m, 64);
    for (int i = 0; i < 3000; i++)
        hd_sbuf_appendf(&m, "%04d,", i);
    T_EQ_INT(m.buf->len, 3000 * 5);
    T_TRUE(memcmp(m.buf->data + 5 * 1234, "1234,", 5) == 0);
    T_TRUE(memcmp(m.buf->data + 5 * 2999, "2999,", 5) == 0);
    hd_sbuf_dispose(&m);

    hd_buf_t *b = hd_sbuf_finish(&s);
    hd_buf_unref(b);
}

/* Decimal without printf, against printf: every digit count, the ends, across growths. */
static void test_sbuf_append_u64(void)
{
    hd_sbuf_t s, f;
    hd_sbuf_init(&s, 64);
    hd_sbuf_init(&f, 64);
    uint64_t v = 1;
    const uint64_t edge[] = {0, 9, 10, 99, 100, 404, 1000000, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
        hd_sbuf_append_u64(&s, edge[i]);
        hd_sbuf_appendf(&f, "%llu", (unsigned long long)edge[i]);
        hd_sbuf_append(&s, ",", 1);
        hd_sbuf_append(&f, ",", 1);
    }
    for (int i = 0; i < 20; i++, v *= 10) {
        hd_sbuf_append_u64(&s, v - 1);
        hd_sbuf_append_u64(&s, v);
        hd_sbuf_appendf(&f, "%llu%llu", (unsigned long long)(v - 1), (unsigned long long)v);
    }
    T_EQ_INT(s.buf->len, f.buf->len);
    T_TRUE(memcmp(s.buf->data, f.buf->data, s.buf->len) == 0);
    T_TRUE(memcmp(s.buf->data, "0,9,10,99,100,404,1000000,18446744073709551614,", 47) == 0);
    hd_sbuf_dispose(&s);
    hd_sbuf_dispose(&f);
    /* hd_u64_dec, its writer (webhook heads): the length, no byte past it */
    char out[HD_U64_DEC_MAX + 1];
    memset(out, '#', sizeof(out));
    T_EQ_INT(hd_u64_dec(out, UINT64_MAX), HD_U64_DEC_MAX);
    T_TRUE(memcmp(out, "18446744073709551615#", HD_U64_DEC_MAX + 1) == 0);
    T_EQ_INT(hd_u64_dec(out, 0), 1);
    T_TRUE(memcmp(out, "08446744073709551615#", HD_U64_DEC_MAX + 1) == 0);
}

int main(void)
{
    T_RUN(test_buf_new);
    T_RUN(test_buf_copy_and_refs);
    T_RUN(test_sbuf_append);
    T_RUN(test_sbuf_growth);
    T_RUN(test_sbuf_appendf);
    T_RUN(test_sbuf_append_u64);
    T_DONE();
}
