/* SPDX-License-Identifier: MIT */
/*
 * utf8.h: incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
 * The state carries over between calls, so a text message split across WebSocket fragments at
 * any byte is validated exactly as if it were whole.
 */
#ifndef HERALD_UTF8_H
#define HERALD_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_utf8_s {
    uint32_t need; /* continuation bytes still expected */
    uint32_t cp;   /* code point so far */
    uint32_t min;  /* smallest code point allowed for this sequence length */
} hd_utf8_t;

static inline void hd_utf8_init(hd_utf8_t *u)
{
    u->need = u->cp = u->min = 0;
}
/* Feeds bytes. Returns 0 while valid so far, -1 as soon as the input cannot be UTF-8. */
int hd_utf8_feed(hd_utf8_t *u, const void *data, size_t len);
/* 1 when the bytes fed so far end on a character boundary. */
static inline int hd_utf8_complete(const hd_utf8_t *u)
{
    return u->need == 0;
}
/* Whole-buffer check. */
int hd_utf8_valid(const void *data, size_t len);

#endif
