/* SPDX-License-Identifier: MIT */
/*
 * jflat.h: a scan of the simple JSON objects most /ws requests are, without a tree.
 *
 * hd_jflat_scan() accepts exactly the texts that are one JSON object (RFC 8259) whose members
 * are at most HD_JFLAT_MAX, with distinct keys, each value a string without escapes, an integer
 * of at most 18 digits, true, false or null; whitespace anywhere JSON allows it. It records
 * each member's key and value as spans of the text (a string's without its quotes). Any other
 * text, valid JSON or not (escapes, nesting, numbers with a fraction or an exponent, a
 * duplicate key, trailing bytes, invalid UTF-8), is refused: the caller hands it to a full
 * parser (jansson), which then also words the errors. An accepted text is one jansson accepts
 * with the same members and values (tests/fuzz/fuzz_jflat.c checks both ways).
 *
 * Pure: no allocation, no I/O; reads p[0..len) only (no terminator needed).
 */
#ifndef HERALD_JFLAT_H
#define HERALD_JFLAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HD_JFLAT_MAX 16 /* members of an object the scan accepts */

typedef enum {
    HD_JFLAT_STRING = 1,
    HD_JFLAT_INTEGER,
    HD_JFLAT_TRUE,
    HD_JFLAT_FALSE,
    HD_JFLAT_NULL,
} hd_jflat_type_t;

typedef struct hd_jflat_member_s {
    const char *key, *val; /* spans of the text; a string's without its quotes */
    uint32_t key_len, val_len;
    hd_jflat_type_t type;
    int64_t integer; /* HD_JFLAT_INTEGER's value */
} hd_jflat_member_t;

typedef struct hd_jflat_s {
    hd_jflat_member_t m[HD_JFLAT_MAX];
    uint32_t n;
} hd_jflat_t;

/*
 * Scans p[0..len) into *out. Returns 0 when the text is a simple object (above), -1 when it is
 * anything else (*out is then undefined). The spans point into p.
 */
int hd_jflat_scan(const char *p, size_t len, hd_jflat_t *out);

/* The member named key[0..n), or NULL. */
const hd_jflat_member_t *hd_jflat_getn(const hd_jflat_t *f, const char *key, size_t n);

/* 1 when member m (may be NULL) is the string s[0..n), else 0. */
int hd_jflat_isn(const hd_jflat_member_t *m, const char *s, size_t n);

/* The member named key (NUL-terminated), or NULL. Inline: a literal's length is known where
 * it is called, not measured at each call. */
static inline const hd_jflat_member_t *hd_jflat_get(const hd_jflat_t *f, const char *key)
{
    return hd_jflat_getn(f, key, strlen(key));
}

/* 1 when member m (may be NULL) is the string s (NUL-terminated), else 0. */
static inline int hd_jflat_is(const hd_jflat_member_t *m, const char *s)
{
    return hd_jflat_isn(m, s, strlen(s));
}

#endif
