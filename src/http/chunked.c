/* SPDX-License-Identifier: MIT */
/*
 * chunked.c: the chunked transfer coding of request bodies, one byte of state machine per
 * grammar position (chunked.h). Chunk data is passed on in runs, never byte by byte.
 */
#include "herald/chunked.h"
#include "herald/common.h"

#include <string.h>

enum {
    S_SIZE,          /* chunk-size digits */
    S_EXT,           /* after the size or an extension: BWS, then ';' or CR */
    S_EXT_NAME0,     /* after ';': BWS, then the name's first tchar */
    S_EXT_NAME,      /* in the name */
    S_EXT_AFTER,     /* after the name: BWS, then '=', ';' or CR */
    S_EXT_VAL0,      /* after '=': BWS, then a token or a quoted string */
    S_EXT_TOKEN,     /* in a token value */
    S_EXT_QUOTED,    /* in a quoted string */
    S_EXT_QPAIR,     /* after a backslash in a quoted string */
    S_SIZE_LF,       /* CR seen at the end of the chunk-size line */
    S_DATA,          /* chunk data */
    S_DATA_CR,       /* the CRLF after chunk data */
    S_DATA_LF,       /* */
    S_TRAILER,       /* start of a trailer line (or the final CRLF) */
    S_TRAILER_NAME,  /* in a field name */
    S_TRAILER_VALUE, /* in a field value */
    S_TRAILER_LF,    /* CR seen at the end of a trailer line */
    S_END_LF,        /* CR of the final empty line seen */
    S_DONE,
};

/* RFC 9110 tchar */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t';
}

void hd_chunked_init(hd_chunked_t *d, uint64_t max_total, uint32_t max_trailer)
{
    memset(d, 0, sizeof(*d));
    d->state = S_SIZE;
    d->max_total = max_total;
    d->max_trailer = max_trailer;
}

static int bad(hd_chunked_t *d, const char *why)
{
    d->why = why;
    return HD_EBADREQ;
}

/* After the CRLF of a chunk-size line: the data, or the trailer section after the last chunk. */
static void size_line_done(hd_chunked_t *d)
{
    d->line_len = 0;
    d->has_digit = 0;
    d->remaining = d->size;
    d->state = d->size ? S_DATA : S_TRAILER;
}

/* One byte of a chunk-size line, after the size. Returns 0 or HD_EBADREQ. */
static int ext_byte(hd_chunked_t *d, unsigned char ch)
{
    switch (d->state) {
    case S_EXT:
        if (is_ws(ch))
            return 0;
        if (ch == ';') {
            d->state = S_EXT_NAME0;
            return 0;
        }
        break;
    case S_EXT_NAME0:
        if (is_ws(ch))
            return 0;
        if (is_tchar(ch)) {
            d->state = S_EXT_NAME;
            return 0;
        }
        break;
    case S_EXT_NAME:
    case S_EXT_AFTER:
        if (d->state == S_EXT_NAME && is_tchar(ch))
            return 0;
        if (is_ws(ch)) {
            d->state = S_EXT_AFTER;
            return 0;
        }
        if (ch == '=') {
            d->state = S_EXT_VAL0;
            return 0;
        }
        if (ch == ';') {
            d->state = S_EXT_NAME0;
            return 0;
        }
        break;
    case S_EXT_VAL0:
        if (is_ws(ch))
            return 0;
        if (ch == '"') {
            d->state = S_EXT_QUOTED;
            return 0;
        }
        if (is_tchar(ch)) {
            d->state = S_EXT_TOKEN;
            return 0;
        }
        break;
    case S_EXT_TOKEN:
        if (is_tchar(ch))
            return 0;
        if (is_ws(ch)) {
            d->state = S_EXT;
            return 0;
        }
        if (ch == ';') {
            d->state = S_EXT_NAME0;
            return 0;
        }
        break;
    case S_EXT_QUOTED:
        /* qdtext: HTAB, SP, VCHAR but '"' and '\', obs-text */
        if (ch == '"') {
            d->state = S_EXT;
            return 0;
        }
        if (ch == '\\') {
            d->state = S_EXT_QPAIR;
            return 0;
        }
        if (ch == '\t' || (ch >= 0x20 && ch != 0x7f))
            return 0;
        break;
    case S_EXT_QPAIR:
        if (ch == '\t' || (ch >= 0x20 && ch != 0x7f)) {
            d->state = S_EXT_QUOTED;
            return 0;
        }
        break;
    default:
        break;
    }
    return bad(d, "invalid chunk extension");
}

int hd_chunked_feed(hd_chunked_t *d, const char *data, size_t len, size_t *used,
                    hd_chunked_data_cb cb, void *arg)
{
    size_t i = 0;
    int rc;
    while (i < len) {
        unsigned char ch = (unsigned char)data[i];
        switch (d->state) {
        case S_SIZE: {
            int v = hd_hexval((char)ch);
            if (v >= 0) {
                /* Refused at the size, before any of its data is read. */
                if (d->size > (d->max_total - d->total) >> 4 ||
                    d->size * 16 + (uint64_t)v > d->max_total - d->total)
                    return HD_EBODYTOOBIG;
                d->size = d->size * 16 + (uint64_t)v;
                d->has_digit = 1;
            } else if (!d->has_digit) {
                return bad(d, "invalid chunk size");
            } else if (ch == '\r') {
                d->state = S_SIZE_LF;
            } else if (is_ws(ch) || ch == ';') {
                d->state = S_EXT;
                if ((rc = ext_byte(d, ch)) != 0)
                    return rc;
            } else {
                return bad(d, "invalid chunk size");
            }
            break;
        }
        case S_EXT:
        case S_EXT_NAME0:
        case S_EXT_NAME:
        case S_EXT_AFTER:
        case S_EXT_VAL0:
        case S_EXT_TOKEN:
        case S_EXT_QUOTED:
        case S_EXT_QPAIR:
            if (ch == '\r' && d->state != S_EXT_QUOTED && d->state != S_EXT_QPAIR &&
                d->state != S_EXT_NAME0 && d->state != S_EXT_VAL0) {
                d->state = S_SIZE_LF;
            } else if ((rc = ext_byte(d, ch)) != 0) {
                return rc;
            }
            break;
        case S_SIZE_LF:
            if (ch != '\n')
                return bad(d, "chunk-size line not ended by CRLF");
            size_line_done(d);
            break;
        case S_DATA: {
            size_t n = len - i;
            if (n > d->remaining)
                n = (size_t)d->remaining;
            if ((rc = cb(arg, data + i, n)) != 0)
                return rc;
            d->remaining -= n;
            d->total += n;
            i += n;
            if (d->remaining == 0)
                d->state = S_DATA_CR;
            continue; /* i has moved */
        }
        case S_DATA_CR:
            if (ch != '\r')
                return bad(d, "chunk data longer than its size");
            d->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (ch != '\n')
                return bad(d, "chunk data not followed by CRLF");
            d->size = 0;
            d->state = S_SIZE;
            break;
        case S_TRAILER:
            if (ch == '\r') {
                d->state = S_END_LF;
            } else if (is_tchar(ch)) {
                d->state = S_TRAILER_NAME;
            } else {
                return bad(d, "invalid trailer field");
            }
            break;
        case S_TRAILER_NAME:
            if (ch == ':')
                d->state = S_TRAILER_VALUE;
            else if (!is_tchar(ch))
                return bad(d, "invalid trailer field");
            break;
        case S_TRAILER_VALUE:
            /* field-value: VCHAR, SP, HTAB, obs-text; no other control byte */
            if (ch == '\r')
                d->state = S_TRAILER_LF;
            else if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
                return bad(d, "invalid trailer field");
            break;
        case S_TRAILER_LF:
            if (ch != '\n')
                return bad(d, "trailer line not ended by CRLF");
            d->state = S_TRAILER;
            break;
        case S_END_LF:
            if (ch != '\n')
                return bad(d, "chunked body not ended by CRLF");
            d->state = S_DONE;
            *used = i + 1;
            return 1;
        default:
            return bad(d, "data after the end of a chunked body");
        }
        /* Bounds of what is read but not kept: the size line and the trailer section. */
        if (d->state <= S_SIZE_LF && ++d->line_len > HD_CHUNKED_LINE_MAX) /* S_SIZE is 0 */
            return bad(d, "chunk extensions too long");
        if (d->state >= S_TRAILER && d->state <= S_END_LF && ++d->trailer_len > d->max_trailer)
            return HD_EHDRTOOBIG;
        i++;
    }
    *used = len;
    return 0;
}
