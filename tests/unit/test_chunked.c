/* SPDX-License-Identifier: MIT */
/*
 * test_chunked.c: the chunked body decoder (src/http/chunked.c), every case fed whole, split at
 * every offset and byte by byte, each piece in its own heap allocation (ASan sees any read past
 * it): the same result, the same data and the same end position every way.
 */
#include "herald/chunked.h"
#include "herald/common.h"

#include "test.h"

typedef struct out_s {
    char data[8192];
    size_t len;
    size_t limit_cb; /* the callback fails past this many bytes (0: never) */
} out_t;

static int collect(void *arg, const char *data, size_t len)
{
    out_t *o = arg;
    if (o->limit_cb && o->len + len > o->limit_cb)
        return -12345;
    if (o->len + len > sizeof(o->data))
        T_FAIL("callback overflow");
    memcpy(o->data + o->len, data, len);
    o->len += len;
    return 0;
}

typedef struct result_s {
    int rc;     /* 1 done, 0 wants more, < 0 error */
    size_t end; /* offset of the first byte after the body (rc == 1) */
    const char *why;
    out_t out;
} result_t;

/* Feeds in[0..len) in pieces of the sizes cut[] (0-terminated; the last piece takes the rest). */
static void run(const char *in, size_t len, const size_t *cut, uint64_t max_total,
                uint32_t max_trailer, result_t *r)
{
    hd_chunked_t d;
    hd_chunked_init(&d, max_total, max_trailer);
    memset(r, 0, sizeof(*r));
    size_t off = 0;
    r->rc = 0;
    for (size_t k = 0; off < len; k++) {
        size_t n = cut && cut[k] ? cut[k] : len - off;
        if (n > len - off)
            n = len - off;
        char *piece = malloc(n);
        memcpy(piece, in + off, n);
        size_t used = 0;
        int rc = hd_chunked_feed(&d, piece, n, &used, collect, &r->out);
        free(piece);
        if (rc != 0) {
            r->rc = rc;
            if (rc == 1) {
                T_TRUE(used <= n);
                r->end = off + used;
            }
            r->why = d.why;
            return;
        }
        T_EQ_INT(used, n);
        off += n;
    }
}

/* The case gives the same result whole, split at every offset and byte by byte. */
static void check_(const char *in, size_t len, int want_rc, const char *want_data, size_t want_end,
                   uint64_t max_total, uint32_t max_trailer, int line)
{
    result_t whole, part;
    run(in, len, NULL, max_total, max_trailer, &whole);
    if (whole.rc != want_rc)
        T_FAIL("line %d: rc %d, expected %d (%s)", line, whole.rc, want_rc,
               whole.why ? whole.why : "-");
    if (want_rc == 1) {
        if (whole.end != want_end)
            T_FAIL("line %d: ends at %zu, expected %zu", line, whole.end, want_end);
        if (whole.out.len != strlen(want_data) ||
            memcmp(whole.out.data, want_data, whole.out.len) != 0)
            T_FAIL("line %d: data \"%.*s\", expected \"%s\"", line, (int)whole.out.len,
                   whole.out.data, want_data);
    }
    for (size_t at = 1; at < len; at++) {
        size_t cut[] = {at, 0};
        run(in, len, cut, max_total, max_trailer, &part);
        if (part.rc != whole.rc || part.end != whole.end || part.out.len != whole.out.len ||
            memcmp(part.out.data, whole.out.data, part.out.len) != 0)
            T_FAIL("line %d: split at %zu: rc %d end %zu, whole rc %d end %zu", line, at, part.rc,
                   part.end, whole.rc, whole.end);
    }
    size_t ones[8193];
    for (size_t i = 0; i < len && i < 8192; i++)
        ones[i] = 1;
    ones[len < 8192 ? len : 8192] = 0;
    run(in, len, ones, max_total, max_trailer, &part);
    if (part.rc != whole.rc || part.end != whole.end || part.out.len != whole.out.len)
        T_FAIL("line %d: byte by byte: rc %d end %zu, whole rc %d end %zu", line, part.rc, part.end,
               whole.rc, whole.end);
    test_checks_++;
}

#define OK(in, data)           check_((in), strlen(in), 1, (data), strlen(in), 1 << 20, 1024, __LINE__)
#define OK_REST(in, data, end) check_((in), strlen(in), 1, (data), (end), 1 << 20, 1024, __LINE__)
#define BAD(in)                check_((in), strlen(in), HD_EBADREQ, NULL, 0, 1 << 20, 1024, __LINE__)
#define MORE(in)               check_((in), strlen(in), 0, NULL, 0, 1 << 20, 1024, __LINE__)

static void test_plain(void)
{
    OK("5\r\nhello\r\n0\r\n\r\n", "hello");
    OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    OK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
    OK("0005\r\nhello\r\n000\r\n\r\n", "hello");
    OK("0\r\n\r\n", "");
    /* the next request starts right after the final CRLF */
    OK_REST("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc", 13);
    MORE("5\r\nhel");
    MORE("5\r\nhello\r\n0\r\n");
    MORE("5\r\nhello\r\n0\r\nX-T: 1\r\n");
}

static void test_extensions(void)
{
    /* RFC 9112 7.1.1: several extensions, BWS around ';' and '=', tokens and quoted strings */
    OK("5;name=value\r\nhello\r\n0\r\n\r\n", "hello");
    OK("5;name\r\nhello\r\n0\r\n\r\n", "hello");
    OK("5;a=b;c=d;e\r\nhello\r\n0\r\n\r\n", "hello");
    OK("5 ; a = b ;\tc\t=\t\"d e\"\r\nhello\r\n0;last=1\r\n\r\n", "hello");
    OK("5;q=\"a\\\"b\\\\c;d=e\"\r\nhello\r\n0\r\n\r\n", "hello");
    OK("5;q=\"\xc3\xa9t\xe9\"\r\nhello\r\n0\r\n\r\n", "hello"); /* obs-text */
    OK("5;q=\"\"\r\nhello\r\n0\r\n\r\n", "hello");
    BAD("5;\r\nhello\r\n0\r\n\r\n");            /* ';' without a name */
    BAD("5;=v\r\nhello\r\n0\r\n\r\n");          /* no name */
    BAD("5;a=\r\nhello\r\n0\r\n\r\n");          /* '=' without a value */
    BAD("5;a=\"open\r\nhello\r\n0\r\n\r\n");    /* unterminated quoted string */
    BAD("5;a b\r\nhello\r\n0\r\n\r\n");         /* two names */
    BAD("5;a=b c\r\nhello\r\n0\r\n\r\n");       /* two values */
    BAD("5;a@b=c\r\nhello\r\n0\r\n\r\n");       /* not a token */
    BAD("5;a=\"x\x01\"\r\nhello\r\n0\r\n\r\n"); /* control byte in a quoted string */
    BAD("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n");    /* text after the closing quote */
    BAD("5;a=b\nhello\r\n0\r\n\r\n");           /* bare LF */
    /* a size line longer than HD_CHUNKED_LINE_MAX */
    static char longline[HD_CHUNKED_LINE_MAX + 64];
    size_t n = (size_t)snprintf(longline, sizeof(longline), "1;x=");
    while (n < HD_CHUNKED_LINE_MAX + 10)
        longline[n++] = 'a';
    memcpy(longline + n, "\r\nx\r\n0\r\n\r\n", 11);
    result_t r;
    run(longline, strlen(longline), NULL, 1 << 20, 1024, &r);
    T_EQ_INT(r.rc, HD_EBADREQ);
    T_EQ_STR(r.why, "chunk extensions too long");
}

static void test_framing_errors(void)
{
    BAD("\r\nhello\r\n0\r\n\r\n");   /* no size */
    BAD("x\r\nhello\r\n0\r\n\r\n");  /* not hex */
    BAD("-5\r\nhello\r\n0\r\n\r\n"); /* sign */
    BAD("0x5\r\nhello\r\n0\r\n\r\n");
    BAD("5\nhello\r\n0\r\n\r\n");    /* bare LF after the size */
    BAD("5\r\nhelloX\r\n0\r\n\r\n"); /* more data than the size */
    BAD("5\r\nhello\rX0\r\n\r\n");   /* CR not followed by LF */
    BAD("5\r\nhello\r\n0\r\n\n");    /* bare LF at the end */
    BAD("5\r\nhello\r\n0\r\nbad line\r\n\r\n");
    BAD("5\r\nhello\r\n0\r\n: v\r\n\r\n");
    BAD("5\r\nhello\r\n0\r\nX: a\x01b\r\n\r\n");
    BAD("5\r\nhello\r\n0\r\nX: a\nY: b\r\n\r\n");
}

static void test_trailers(void)
{
    OK("5\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n", "hello");
    OK("5\r\nhello\r\n0\r\nA: 1\r\nB:\r\nC: x \t y\r\n\r\n", "hello");
    /* the trailer section is bounded by max_trailer */
    const char *t = "1\r\nx\r\n0\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\n";
    check_(t, strlen(t), HD_EHDRTOOBIG, NULL, 0, 1 << 20, 32, __LINE__);
    check_(t, strlen(t), 1, "x", strlen(t), 1 << 20, 128, __LINE__);
}

static void test_limits(void)
{
    /* refused at the size line, before any data arrives */
    const char *big = "401\r\n";
    check_(big, strlen(big), HD_EBODYTOOBIG, NULL, 0, 1024, 1024, __LINE__);
    const char *fits = "400\r\n";
    check_(fits, strlen(fits), 0, NULL, 0, 1024, 1024, __LINE__);
    /* across chunks */
    const char *two = "200\r\n";
    result_t r;
    static char in[2048];
    size_t n = (size_t)snprintf(in, sizeof(in), "%s", two);
    memset(in + n, 'a', 0x200);
    n += 0x200;
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n201\r\n");
    run(in, n, NULL, 1024, 1024, &r);
    T_EQ_INT(r.rc, HD_EBODYTOOBIG);
    /* no overflow from a size of many digits */
    const char *huge = "ffffffffffffffffffffffff\r\n";
    check_(huge, strlen(huge), HD_EBODYTOOBIG, NULL, 0, UINT64_MAX, 1024, __LINE__);
    /* max_total 0: only the empty body */
    check_("0\r\n\r\n", 5, 1, "", 5, 0, 1024, __LINE__);
    check_("1\r\n", 3, HD_EBODYTOOBIG, NULL, 0, 0, 1024, __LINE__);
    /* the callback's error stops the decoding */
    out_t o = {.limit_cb = 3};
    hd_chunked_t d;
    hd_chunked_init(&d, 1024, 1024);
    size_t used;
    T_EQ_INT(hd_chunked_feed(&d, "5\r\nhello\r\n", 10, &used, collect, &o), -12345);
}

int main(void)
{
    T_RUN(test_plain);
    T_RUN(test_extensions);
    T_RUN(test_framing_errors);
    T_RUN(test_trailers);
    T_RUN(test_limits);
    fprintf(stderr, "passed: %d checks\n", test_checks_);
    return 0;
}
