/* SPDX-License-Identifier: MIT */
/*
 * fuzz_jflat.c: libFuzzer harness for src/core/jflat.c, the scan of simple JSON objects the
 * /ws protocol reads most requests with, checked against jansson (the parser it stands in for):
 *   - the scan reads nothing past the text (an exact-size heap copy);
 *   - whatever it takes, jansson takes as an object with exactly those members, each of the
 *     type and value the scan recorded (strings byte for byte, integers by value);
 *   - whatever jansson takes as an object of at most HD_JFLAT_MAX members, each a string
 *     without an escape or an integer of at most 18 digits, true, false or null, with no key
 *     written twice or with an escape, the scan takes too (so the fast path is not silently
 *     narrower than its contract); but not a text with a NUL byte, which jansson takes where
 *     JSON does not allow it (after a value) and the scan refuses.
 * Input: the text.
 */
#include "herald/jflat.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 when s[0..n) holds a backslash (the text of a string or key written with an escape). */
static int has_escape(const char *s, size_t n)
{
    return memchr(s, '\\', n) != NULL;
}

/* 1 when jansson's object is one the scan must take (see above), judged from the text too:
 * jansson does not say whether a string was written with escapes or a key twice, so a text
 * with any backslash, or with fewer members than "key": pairs... is not judged. */
static int simple_for_jansson(json_t *root, const char *text, size_t n)
{
    /* jansson also takes a NUL byte between a value and what follows ({"a":7\0}), which is
     * not JSON: the scan refuses it, and jansson reads it as before. */
    if (json_object_size(root) > HD_JFLAT_MAX || has_escape(text, n) || memchr(text, 0, n))
        return 0;
    const char *key;
    json_t *v;
    size_t colons = 0;
    for (size_t i = 0; i < n; i++)
        colons += text[i] == ':';
    if (colons != json_object_size(root))
        return 0; /* a duplicate key, or a colon inside a string: not judged */
    json_object_foreach(root, key, v)
    {
        if (json_is_integer(v)) {
            json_int_t x = json_integer_value(v);
            if (x > 999999999999999999LL || x < -999999999999999999LL)
                return 0;
        } else if (!json_is_string(v) && !json_is_true(v) && !json_is_false(v) &&
                   !json_is_null(v)) {
            return 0;
        }
    }
    /* an integer written with a leading minus zero or as a real is jansson's to read */
    for (size_t i = 0; i < n; i++)
        if (text[i] == '.' || text[i] == 'e' || text[i] == 'E')
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);
    CHECK(p != NULL);
    memcpy(p, data, size);
    hd_jflat_t f;
    int rc = hd_jflat_scan(p, size, &f);
    json_t *root = json_loadb(p, size, 0, NULL);
    if (rc == 0) {
        CHECK(root != NULL && json_is_object(root));
        CHECK(json_object_size(root) == f.n);
        for (uint32_t k = 0; k < f.n; k++) {
            const hd_jflat_member_t *m = &f.m[k];
            CHECK(m->key >= p && m->key + m->key_len <= p + size);
            CHECK(m->val >= p && m->val + m->val_len <= p + size);
            CHECK(hd_jflat_get(&f, "") == NULL || f.n > 0);
            json_t *v = json_object_getn(root, m->key, m->key_len);
            CHECK(v != NULL);
            switch (m->type) {
            case HD_JFLAT_STRING:
                CHECK(json_is_string(v) && json_string_length(v) == m->val_len &&
                      memcmp(json_string_value(v), m->val, m->val_len) == 0);
                break;
            case HD_JFLAT_INTEGER:
                CHECK(json_is_integer(v) && json_integer_value(v) == m->integer);
                break;
            case HD_JFLAT_TRUE:
                CHECK(json_is_true(v));
                break;
            case HD_JFLAT_FALSE:
                CHECK(json_is_false(v));
                break;
            case HD_JFLAT_NULL:
                CHECK(json_is_null(v));
                break;
            default:
                CHECK(0);
            }
        }
    } else if (root && json_is_object(root)) {
        CHECK(!simple_for_jansson(root, p, size));
    }
    json_decref(root);
    free(p);
    return 0;
}
