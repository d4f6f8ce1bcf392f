/* SPDX-License-Identifier: MIT */
/* utf8.c: incremental UTF-8 validation; see utf8.h. */
#include "herald/utf8.h"

#include <string.h>

int hd_utf8_feed(hd_utf8_t *u, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t i = 0;
    while (i < len) {
        if (u->need == 0) {
            /* Between characters, ASCII 8 bytes at a time: a payload is mostly ASCII (JSON),
             * and a byte at a time was 582 instructions of a 64-byte publish (callgrind). */
            uint64_t w;
            while (len - i >= 8 && (memcpy(&w, p + i, 8), (w & 0x8080808080808080ull) == 0))
                i += 8;
            if (i == len)
                break;
        }
        uint8_t b = p[i++];
        if (u->need == 0) {
            if (b < 0x80)
                continue;
            if (b >= 0xC2 && b <= 0xDF) {
                u->need = 1, u->cp = b & 0x1Fu, u->min = 0x80;
            } else if (b >= 0xE0 && b <= 0xEF) {
                u->need = 2, u->cp = b & 0x0Fu, u->min = 0x800;
            } else if (b >= 0xF0 && b <= 0xF4) {
                u->need = 3, u->cp = b & 0x07u, u->min = 0x10000;
            } else {
                return -1;
            }
            continue;
        }
        if ((b & 0xC0) != 0x80)
            return -1;
        u->cp = (u->cp << 6) | (b & 0x3Fu);
        u->need--;
        /* Reject as early as possible: overlong or surrogate prefixes fail on the 2nd byte. */
        if (u->need == 1 && u->min == 0x800 && (u->cp < 0x20 || (u->cp >= 0x360 && u->cp <= 0x37F)))
            return -1;
        if (u->need == 2 && u->min == 0x10000 && (u->cp < 0x10 || u->cp > 0x10F))
            return -1;
        if (u->need == 0) {
            if (u->cp < u->min || u->cp > 0x10FFFF || (u->cp >= 0xD800 && u->cp <= 0xDFFF))
                return -1;
        }
    }
    return 0;
}

int hd_utf8_valid(const void *data, size_t len)
{
    hd_utf8_t u;
    hd_utf8_init(&u);
    return hd_utf8_feed(&u, data, len) == 0 && hd_utf8_complete(&u);
}
