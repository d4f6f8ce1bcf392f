/* SPDX-License-Identifier: MIT */
/* jflat.c: a scan of simple JSON objects into spans, without a tree; see jflat.h. */
#include "herald/jflat.h"
#include "herald/utf8.h"

#include <string.h>

/* The bytes a string's scan stops at: the quote, a backslash, control characters, non-ASCII. */
static const uint8_t special[256] = {
    [0x00 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x80 ... 0xff] = 1,
};

static size_t skip_ws(const char *p, size_t len, size_t i)
{
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* A string without escapes at p[i] (the opening quote): its span; returns the index after the
 * closing quote, or 0 when it is not one (an escape, a control character, invalid UTF-8, no
 * end). */
static size_t scan_string(const char *p, size_t len, size_t i, const char **s, uint32_t *n)
{
    if (i >= len || p[i] != '"')
        return 0;
    size_t start = ++i;
    int high = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!special[c])
            continue; /* one test a byte for the usual ones */
        if (c == '"')
            break;
        if (c == '\\' || c < 0x20)
            return 0;
        high = 1;
    }
    if (i >= len || i - start > UINT32_MAX)
        return 0;
    if (high && !hd_utf8_valid(p + start, i - start))
        return 0;
    *s = p + start;
    *n = (uint32_t)(i - start);
    return i + 1;
}

/* A value at p[i]: returns the index after it, or 0 when it is not a simple one. */
static size_t scan_value(const char *p, size_t len, size_t i, hd_jflat_member_t *m)
{
    if (i >= len)
        return 0;
    static const struct {
        const char *word;
        size_t n;
        hd_jflat_type_t type;
    } words[] = {
        {"true", 4, HD_JFLAT_TRUE}, {"false", 5, HD_JFLAT_FALSE}, {"null", 4, HD_JFLAT_NULL}};
    char c = p[i];
    if (c == '"') {
        m->type = HD_JFLAT_STRING;
        return scan_string(p, len, i, &m->val, &m->val_len);
    }
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        if (c == words[w].word[0]) {
            if (len - i < words[w].n || memcmp(p + i, words[w].word, words[w].n) != 0)
                return 0;
            m->type = words[w].type;
            m->val = p + i;
            m->val_len = (uint32_t)words[w].n;
            return i + words[w].n;
        }
    }
    /* -?(0|[1-9][0-9]*), at most 18 digits, not followed by a fraction or an exponent */
    size_t start = i;
    int neg = c == '-';
    if (neg)
        i++;
    if (i >= len || p[i] < '0' || p[i] > '9')
        return 0;
    size_t digits = i;
    int64_t v = 0;
    if (p[i] == '0') {
        i++;
    } else {
        while (i < len && p[i] >= '0' && p[i] <= '9' && i - digits < 18)
            v = v * 10 + (p[i++] - '0');
    }
    if (i < len && ((p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == 'e' || p[i] == 'E'))
        return 0;
    m->type = HD_JFLAT_INTEGER;
    m->integer = neg ? -v : v;
    m->val = p + start;
    m->val_len = (uint32_t)(i - start);
    return i;
}

int hd_jflat_scan(const char *p, size_t len, hd_jflat_t *out)
{
    out->n = 0;
    size_t i = skip_ws(p, len, 0);
    if (i >= len || p[i] != '{')
        return -1;
    i = skip_ws(p, len, i + 1);
    if (i < len && p[i] == '}') {
        i++;
    } else {
        for (;;) {
            if (out->n == HD_JFLAT_MAX)
                return -1;
            hd_jflat_member_t *m = &out->m[out->n];
            i = scan_string(p, len, i, &m->key, &m->key_len);
            if (i == 0)
                return -1;
            for (uint32_t k = 0; k < out->n; k++)
                if (out->m[k].key_len == m->key_len &&
                    memcmp(out->m[k].key, m->key, m->key_len) == 0)
                    return -1; /* jansson keeps the last: not worth a rule of our own */
            i = skip_ws(p, len, i);
            if (i >= len || p[i] != ':')
                return -1;
            i = scan_value(p, len, skip_ws(p, len, i + 1), m);
            if (i == 0)
                return -1;
            out->n++;
            i = skip_ws(p, len, i);
            if (i < len && p[i] == ',') {
                i = skip_ws(p, len, i + 1);
                continue;
            }
            if (i < len && p[i] == '}') {
                i++;
                break;
            }
            return -1;
        }
    }
    return skip_ws(p, len, i) == len ? 0 : -1;
}

const hd_jflat_member_t *hd_jflat_getn(const hd_jflat_t *f, const char *key, size_t n)
{
    for (uint32_t k = 0; k < f->n; k++)
        if (f->m[k].key_len == n && (n == 0 || f->m[k].key[0] == key[0]) &&
            memcmp(f->m[k].key, key, n) == 0)
            return &f->m[k];
    return NULL;
}

int hd_jflat_isn(const hd_jflat_member_t *m, const char *s, size_t n)
{
    return m && m->type == HD_JFLAT_STRING && m->val_len == n && memcmp(m->val, s, n) == 0;
}
