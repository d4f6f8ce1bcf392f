/* SPDX-License-Identifier: MIT */
/* test_common.c: unit tests of src/core/common.c and common.h: the error table and hd_list. */
#include "herald/common.h"

#include "test.h"

#include <uv.h>

typedef struct err_row_s {
    int code;
    int status;
    int ws_close;
    const char *msg;
} err_row_t;

/* Written out by hand, not generated from HD_ERRNO_MAP, so a change to the table is noticed. */
static const err_row_t rows[] = {
    {HD_EBADREQ, 400, 1002, "malformed request"},
    {HD_EURITOOLONG, 414, 1009, "request line or URL too long"},
    {HD_EHDRTOOBIG, 431, 1009, "request header section too large"},
    {HD_EBODYTOOBIG, 413, 1009, "request body too large"},
    {HD_ENOTFOUND, 404, 1008, "not found"},
    {HD_EMETHOD, 405, 1008, "method not allowed"},
    {HD_EOVERLOAD, 503, 1013, "server overloaded, retry later"},
    {HD_ETIMEOUT, 408, 1001, "timed out"},
    {HD_ETLS, 400, 1002, "TLS failure"},
    {HD_ECONF, 500, 1011, "configuration error"},
    {HD_ESHUTDOWN, 503, 1001, "server shutting down"},
    {HD_EFRAMING, 400, 1002, "conflicting message framing"},
    {HD_ECHANNELS, 507, 1013, "channel limit reached (max_channels)"},
    {HD_EMEMORY, 507, 1013, "memory limit reached (max_memory)"},
    {HD_ESUBSCRIPTIONS, 503, 1013, "subscription limit reached (max_subscriptions)"},
    {HD_EUNAUTHENTICATED, 401, 4401, "missing or invalid credential"},
    {HD_ETOKENEXPIRED, 401, 4001, "token expired"},
    {HD_EFORBIDDEN, 403, 4003, "forbidden"},
    {HD_EPROXY, 400, 1002, "malformed PROXY protocol header"},
    {HD_EIPCONNS, 503, 1013, "too many connections (max_connections_per_ip)"},
    {HD_EIPRATE, 429, 1013, "connecting too often (connect_rate_per_ip)"},
    {HD_EPUBRATE, 429, 1008, "publishing too often (client_publish_rate)"},
    {HD_ETICKETS, 503, 1013, "too many tickets waiting to be used (auth_max_tickets)"},
    {HD_ETOKENREVOKED, 401, 4002, "token revoked"},
    {HD_EDISCONNECTED, 409, 4009, "disconnected by the operator"},
    {HD_EREVOCATIONS, 507, 1013, "revocation limit reached (max_revocations)"},
};

static void test_error_table(void)
{
    for (size_t i = 0; i < HD_ARRAY_SIZE(rows); i++) {
        T_EQ_STR(hd_strerror(rows[i].code), rows[i].msg);
        T_EQ_INT(hd_err_http_status(rows[i].code), rows[i].status);
        T_EQ_INT(hd_err_ws_close(rows[i].code), rows[i].ws_close);
    }
    /* Every code is distinct and outside libuv's range. */
    for (size_t i = 0; i < HD_ARRAY_SIZE(rows); i++) {
        T_TRUE(rows[i].code <= -10000);
        for (size_t j = i + 1; j < HD_ARRAY_SIZE(rows); j++)
            T_TRUE(rows[i].code != rows[j].code);
    }
    /* The table has exactly the rows above. */
    size_t n = 0;
#define COUNT_ROW(name, val, status, close, msg) n++;
    HD_ERRNO_MAP(COUNT_ROW)
#undef COUNT_ROW
    T_EQ_INT(n, HD_ARRAY_SIZE(rows));
}

static void test_uv_codes(void)
{
    T_EQ_STR(hd_strerror(UV_ECONNRESET), uv_strerror(UV_ECONNRESET));
    T_EQ_STR(hd_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
    T_EQ_INT(hd_err_http_status(UV_ECONNRESET), 500);
    T_EQ_INT(hd_err_ws_close(UV_ECONNRESET), 1011);
    T_EQ_STR(hd_strerror(0), "success");
    T_EQ_INT(hd_err_http_status(0), 500);
    T_EQ_INT(hd_err_ws_close(0), 1011);
}

typedef struct item_s {
    int value;
    hd_list_t link;
} item_t;

static void expect_list(hd_list_t *head, const int *values, size_t n)
{
    size_t i = 0;
    for (hd_list_t *p = head->next; p != head; p = p->next, i++) {
        T_TRUE(i < n);
        T_EQ_INT(hd_container_of(p, item_t, link)->value, values[i]);
        T_TRUE(p->next->prev == p);
    }
    T_EQ_INT(i, n);
    i = n;
    for (hd_list_t *p = head->prev; p != head; p = p->prev)
        T_EQ_INT(hd_container_of(p, item_t, link)->value, values[--i]);
    T_EQ_INT(i, 0);
}

static void test_list(void)
{
    hd_list_t head;
    hd_list_init(&head);
    T_TRUE(hd_list_empty(&head));
    expect_list(&head, NULL, 0);

    item_t items[5];
    for (int i = 0; i < 5; i++) {
        items[i].value = i;
        hd_list_init(&items[i].link);
        T_TRUE(!hd_list_linked(&items[i].link));
    }
    /* A zeroed node is not linked either. */
    hd_list_t zero = {NULL, NULL};
    T_TRUE(!hd_list_linked(&zero));

    for (int i = 0; i < 5; i++)
        hd_list_insert_tail(&head, &items[i].link);
    T_TRUE(!hd_list_empty(&head));
    for (int i = 0; i < 5; i++)
        T_TRUE(hd_list_linked(&items[i].link));
    expect_list(&head, (const int[]){0, 1, 2, 3, 4}, 5);

    /* Remove the middle, the head and the tail; removed nodes are unlinked and reusable. */
    hd_list_remove(&items[2].link);
    T_TRUE(!hd_list_linked(&items[2].link));
    expect_list(&head, (const int[]){0, 1, 3, 4}, 4);
    hd_list_remove(&items[0].link);
    hd_list_remove(&items[4].link);
    expect_list(&head, (const int[]){1, 3}, 2);
    hd_list_insert_tail(&head, &items[2].link);
    expect_list(&head, (const int[]){1, 3, 2}, 3);

    /* The safe iterator allows removing the current node. */
    hd_list_t *pos, *tmp;
    int seen = 0;
    hd_list_foreach_safe(pos, tmp, &head)
    {
        item_t *it = hd_container_of(pos, item_t, link);
        seen++;
        if (it->value != 2)
            hd_list_remove(pos);
    }
    T_EQ_INT(seen, 3);
    expect_list(&head, (const int[]){2}, 1);
    hd_list_foreach_safe(pos, tmp, &head)
    {
        hd_list_remove(pos);
    }
    T_TRUE(hd_list_empty(&head));
    expect_list(&head, NULL, 0);
}

static void test_alloc_helpers(void)
{
    char *s = hd_strdup("herald");
    T_EQ_STR(s, "herald");
    free(s);
    s = hd_strndup("herald", 3);
    T_EQ_STR(s, "her");
    free(s);
    int *z = hd_calloc(4, sizeof(int));
    T_EQ_INT(z[0] | z[1] | z[2] | z[3], 0);
    /* a small calloc is malloc + memset (tcache): a chunk freed dirty comes back zeroed */
    for (size_t size = 16; size <= 4096; size *= 4) {
        unsigned char *d = hd_malloc(size);
        memset(d, 0xab, size);
        free(d);
        d = hd_calloc(1, size);
        size_t nonzero = 0;
        for (size_t i = 0; i < size; i++)
            nonzero += d[i] != 0;
        T_EQ_INT(nonzero, 0);
        free(d);
    }
    z = hd_realloc(z, 100 * sizeof(int));
    T_EQ_INT(z[3], 0);
    free(z);
    void *p = hd_malloc(0); /* never NULL */
    T_TRUE(p != NULL);
    free(p);
    uint64_t a = hd_now_ms(), b = hd_now_ms();
    T_TRUE(b >= a);
}

/* hd_grow (bytes) and hd_grow_array (elements): doubling from the first size, contents kept,
 * nothing done when there is room, hd_grow's limit. */
static void test_grow(void)
{
    size_t cap = 0;
    uint64_t *a = hd_grow_array(NULL, &cap, 1, sizeof(*a), 16);
    T_EQ_INT(cap, 16);
    for (uint64_t i = 0; i < 16; i++)
        a[i] = i * 3;
    T_TRUE(hd_grow_array(a, &cap, 16, sizeof(*a), 16) == a); /* room enough: unchanged */
    T_EQ_INT(cap, 16);
    a = hd_grow_array(a, &cap, 17, sizeof(*a), 16);
    T_EQ_INT(cap, 32);
    a = hd_grow_array(a, &cap, 200, sizeof(*a), 16); /* several doublings at once */
    T_EQ_INT(cap, 256);
    for (uint64_t i = 0; i < 16; i++)
        T_EQ_INT(a[i], i * 3);
    a[255] = 7; /* the whole capacity is usable (ASan) */
    free(a);
    cap = 0;
    char *b = hd_grow_array(NULL, &cap, 3, 1, 0); /* first 0 counts as 1 */
    T_EQ_INT(cap, 4);
    free(b);
    size_t bytes = 0;
    char *p = hd_grow(NULL, &bytes, 100, 64, 0);
    T_EQ_INT(bytes, 128);
    p = hd_grow(p, &bytes, 129, 64, 200); /* past the limit: only up to it */
    T_EQ_INT(bytes, 200);
    free(p);
}

/* Decodes s with flags: the result string, or "(-1)". */
static const char *pct(const char *s, unsigned flags, size_t outlen)
{
    static char out[64];
    char buf[64];
    int n = hd_pct_decode(s, strlen(s), buf, outlen, flags);
    if (n < 0)
        return "(-1)";
    T_EQ_INT(strlen(buf), n);
    snprintf(out, sizeof(out), "%s", buf);
    return out;
}

static void test_pct_decode(void)
{
    T_EQ_STR(pct("plain", 0, 64), "plain");
    T_EQ_STR(pct("a%41%62%2f", 0, 64), "aAb/");
    T_EQ_STR(pct("a+b", 0, 64), "a+b");
    T_EQ_STR(pct("a+b%2B", HD_PCT_PLUS, 64), "a b+");
    /* lenient: a '%' without two hex digits stays */
    T_EQ_STR(pct("100%", 0, 64), "100%");
    T_EQ_STR(pct("%4", 0, 64), "%4");
    T_EQ_STR(pct("%zz%41", 0, 64), "%zzA");
    /* strict: refused, and so is a decoded NUL */
    T_EQ_STR(pct("100%", HD_PCT_STRICT, 64), "(-1)");
    T_EQ_STR(pct("%4", HD_PCT_STRICT, 64), "(-1)");
    T_EQ_STR(pct("a%00b", HD_PCT_STRICT, 64), "(-1)");
    T_EQ_STR(pct("p%40ss%3a", HD_PCT_STRICT, 64), "p@ss:");
    /* the output and its NUL must fit */
    T_EQ_STR(pct("abc", 0, 4), "abc");
    T_EQ_STR(pct("abcd", 0, 4), "(-1)");
    T_EQ_STR(pct("%41%42%43", 0, 4), "ABC");
    T_EQ_STR(pct("", 0, 1), "");
    T_EQ_STR(pct("", 0, 0), "(-1)");
}

int main(void)
{
    T_RUN(test_pct_decode);
    T_RUN(test_error_table);
    T_RUN(test_uv_codes);
    T_RUN(test_list);
    T_RUN(test_alloc_helpers);
    T_RUN(test_grow);
    T_DONE();
}
