/* SPDX-License-Identifier: MIT */
/*
 * test_jflat.c: unit tests of src/core/jflat.c: which texts the scan takes, what it records,
 * that whatever it takes jansson takes with the same members, and that it reads nothing past
 * the text (every text is scanned from an exact-size heap copy, whole and cut at every length).
 */
#include "herald/jflat.h"

#include "test.h"

#include <jansson.h>

/* Scans s from an exact-size heap copy (ASan catches a read past it). */
static int scan(const char *s, size_t n, hd_jflat_t *f)
{
    char *p = malloc(n ? n : 1);
    memcpy(p, s, n);
    int rc = hd_jflat_scan(p, n, f);
    /* the spans point into p: compare them against s before it goes */
    for (uint32_t k = 0; rc == 0 && k < f->n; k++) {
        f->m[k].key = s + (f->m[k].key - p);
        f->m[k].val = s + (f->m[k].val - p);
    }
    free(p);
    return rc;
}

/* Whatever the scan takes, jansson takes, with the same members, types and values. */
static void same_as_jansson(const char *s, size_t n, const hd_jflat_t *f)
{
    json_error_t err;
    json_t *root = json_loadb(s, n, 0, &err);
    if (!root || !json_is_object(root))
        T_FAIL("jansson refuses what jflat took: %.*s (%s)", (int)n, s, err.text);
    T_EQ_INT(json_object_size(root), f->n);
    for (uint32_t k = 0; k < f->n; k++) {
        const hd_jflat_member_t *m = &f->m[k];
        json_t *v = json_object_getn(root, m->key, m->key_len);
        T_TRUE(v != NULL);
        switch (m->type) {
        case HD_JFLAT_STRING:
            T_TRUE(json_is_string(v));
            T_EQ_INT(json_string_length(v), m->val_len);
            T_TRUE(memcmp(json_string_value(v), m->val, m->val_len) == 0);
            break;
        case HD_JFLAT_INTEGER:
            T_TRUE(json_is_integer(v));
            T_EQ_INT(json_integer_value(v), m->integer);
            break;
        case HD_JFLAT_TRUE:
            T_TRUE(json_is_true(v));
            break;
        case HD_JFLAT_FALSE:
            T_TRUE(json_is_false(v));
            break;
        case HD_JFLAT_NULL:
            T_TRUE(json_is_null(v));
            break;
        }
    }
    json_decref(root);
}

static void takes(const char *s)
{
    hd_jflat_t f;
    size_t n = strlen(s);
    if (scan(s, n, &f) != 0)
        T_FAIL("jflat refuses %s", s);
    same_as_jansson(s, n, &f);
    /* no shorter cut of it is an object (nor is it with a byte added after) */
    for (size_t cut = 0; cut < n; cut++)
        if (scan(s, cut, &f) == 0 && strspn(s + cut, " \t\r\n") != n - cut)
            T_FAIL("jflat takes %.*s, a cut of %s", (int)cut, s, s);
}

static void refuses(const char *s)
{
    hd_jflat_t f;
    if (scan(s, strlen(s), &f) == 0)
        T_FAIL("jflat takes %s", s);
}

static void test_takes(void)
{
    takes("{}");
    takes(" { } ");
    takes("{\"op\":\"subscribe\",\"channel\":\"room-1\"}");
    takes("{\"op\":\"unsubscribe\",\"channel\":\"room-1\",\"ref\":7}");
    takes("\t{ \"op\" : \"subscribe\" ,\n\"channel\":\"a\", \"since\":null,\"presence\":true,"
          "\"ack\":false,\"ref\":-12}\r\n");
    takes("{\"a\":0,\"b\":-0,\"c\":123456789012345678,\"d\":-123456789012345678}");
    takes("{\"\":\"\"}");
    takes("{\"k\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}");
    takes("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,"
          "\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16}");
}

static void test_records(void)
{
    hd_jflat_t f;
    const char *s = "{\"op\":\"subscribe\", \"n\":-42,\"t\":true,\"f\":false,\"z\":null}";
    T_EQ_INT(scan(s, strlen(s), &f), 0);
    T_EQ_INT(f.n, 5);
    T_TRUE(hd_jflat_is(hd_jflat_get(&f, "op"), "subscribe"));
    T_TRUE(!hd_jflat_is(hd_jflat_get(&f, "op"), "subscrib"));
    T_TRUE(!hd_jflat_is(hd_jflat_get(&f, "n"), "-42")); /* not a string */
    T_EQ_INT(hd_jflat_get(&f, "n")->type, HD_JFLAT_INTEGER);
    T_EQ_INT(hd_jflat_get(&f, "n")->integer, -42);
    T_EQ_INT(hd_jflat_get(&f, "n")->val_len, 3);
    T_EQ_INT(hd_jflat_get(&f, "t")->type, HD_JFLAT_TRUE);
    T_EQ_INT(hd_jflat_get(&f, "f")->type, HD_JFLAT_FALSE);
    T_EQ_INT(hd_jflat_get(&f, "z")->type, HD_JFLAT_NULL);
    T_TRUE(hd_jflat_get(&f, "channel") == NULL);
    T_TRUE(!hd_jflat_is(NULL, "x"));
}

static void test_refuses(void)
{
    refuses("");
    refuses("   ");
    refuses("[]");
    refuses("\"s\"");
    refuses("{");
    refuses("{\"a\"}");
    refuses("{\"a\":}");
    refuses("{\"a\":1,}");
    refuses("{,}");
    refuses("{\"a\":1 \"b\":2}");
    refuses("{\"a\":1}x");
    refuses("{\"a\":1}{}");
    refuses("\xef\xbb\xbf{}");           /* a byte order mark */
    refuses("{\"a\":\"x\\\"y\"}");       /* an escape: jansson's */
    refuses("{\"a\\u0041\":1}");         /* in a key too */
    refuses("{\"a\":\"tab\there\"}");    /* a control character */
    refuses("{\"a\":\"nul\0\"}");        /* cut by strlen: unterminated */
    refuses("{\"a\":\"\xc3\x28\"}");     /* invalid UTF-8 */
    refuses("{\"a\":\"\xed\xa0\x80\"}"); /* a surrogate */
    refuses("{\"a\":{}}");               /* nesting */
    refuses("{\"a\":[1]}");
    refuses("{\"a\":1.5}"); /* fractions and exponents: jansson's reals */
    refuses("{\"a\":1e3}");
    refuses("{\"a\":1E3}");
    refuses("{\"a\":01}"); /* not JSON */
    refuses("{\"a\":-}");
    refuses("{\"a\":+1}");
    refuses("{\"a\":1234567890123456789}"); /* 19 digits */
    refuses("{\"a\":tru}");
    refuses("{\"a\":truex}");
    refuses("{\"a\":nulll}");
    refuses("{\"a\":True}");
    refuses("{\"a\":1,\"a\":2}"); /* a duplicate: jansson keeps the last */
    refuses("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,"
            "\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17}"); /* 17 members */
    refuses("{'a':1}");
    refuses("{\"a\":1}\v"); /* not JSON whitespace */
}

/* The whole NUL case: an exact-length text with a NUL byte inside a string. */
static void test_nul_byte(void)
{
    static const char s[] = "{\"a\":\"x\0y\"}";
    hd_jflat_t f;
    T_EQ_INT(scan(s, sizeof(s) - 1, &f), -1);
    /* jansson takes a NUL after a value (fuzz_jflat found it); JSON does not, nor the scan */
    static const char after[] = "{\"a\":7\0}";
    T_EQ_INT(scan(after, sizeof(after) - 1, &f), -1);
}

int main(void)
{
    T_RUN(test_takes);
    T_RUN(test_records);
    T_RUN(test_refuses);
    T_RUN(test_nul_byte);
    T_DONE();
}
