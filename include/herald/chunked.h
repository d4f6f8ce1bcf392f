/* SPDX-License-Identifier: MIT */
/*
 * chunked.h: a decoder for the chunked transfer coding of request bodies (RFC 9112 7.1).
 *
 * llhttp hands the body of a chunked request to this decoder (it refuses valid chunk extensions:
 * several on one chunk, whitespace around ';' and '=', quoted pairs). The decoder does no I/O
 * and allocates nothing: it is fed the bytes as they arrive, split anywhere, reports the data
 * through a callback and says where the body (with its trailer section) ended. Chunk extensions
 * are checked against the grammar and ignored; trailer fields are checked and dropped.
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = 1*HEXDIG [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext    = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
 *
 * Lines end in CRLF (a bare LF is refused: a proxy that reads it another way could be made to
 * see a different request boundary). The all-zero decoder is NOT ready: call hd_chunked_init.
 */
#ifndef HERALD_CHUNKED_H
#define HERALD_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

/* Longest chunk-size line (size and extensions), in bytes. */
#define HD_CHUNKED_LINE_MAX 4096

typedef struct hd_chunked_s {
    uint64_t size;        /* of the chunk being read */
    uint64_t remaining;   /* its data bytes still to come */
    uint64_t total;       /* data bytes so far */
    uint64_t max_total;   /* more data than this: HD_EBODYTOOBIG */
    uint32_t line_len;    /* bytes of the current chunk-size line */
    uint32_t trailer_len; /* bytes of the trailer section so far */
    uint32_t max_trailer; /* a larger trailer section: HD_EHDRTOOBIG */
    uint8_t state;
    uint8_t has_digit;
    const char *why; /* after HD_EBADREQ: what was wrong, for the client (static) */
} hd_chunked_t;

/* Data of the body, in order. Returns 0, or a negative code that stops the decoding. */
typedef int (*hd_chunked_data_cb)(void *arg, const char *data, size_t len);

/* A decoder for one body: at most max_total data bytes, max_trailer bytes of trailer fields. */
void hd_chunked_init(hd_chunked_t *d, uint64_t max_total, uint32_t max_trailer);
/*
 * Decodes data[0..len). Returns 0 when all of it was used and the body goes on, 1 when the body
 * ended (*used says how many bytes were its last; the rest is the next request), or a negative
 * code: HD_EBADREQ (malformed, or a chunk-size line longer than HD_CHUNKED_LINE_MAX: d->why says
 * which), HD_EBODYTOOBIG (more than max_total, refused at the chunk-size line before its data),
 * HD_EHDRTOOBIG (trailer section over max_trailer), or what cb returned. After an error or the
 * end, feed nothing more.
 */
int hd_chunked_feed(hd_chunked_t *d, const char *data, size_t len, size_t *used,
                    hd_chunked_data_cb cb, void *arg);

#endif
