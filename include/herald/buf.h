/* SPDX-License-Identifier: MIT */
/*
 * buf.h: refcounted immutable byte buffers, the unit of every write.
 *
 * A buffer is encoded once and written to many connections: each queued write holds one
 * reference and drops it when the write completes or the connection closes.
 *
 *     hd_buf_t  +-------+-----+----------------------+
 *               | refs  | len | data[len] ...        |   one allocation
 *               +-------+-----+----------------------+
 *                  ^  ^  ^
 *        conn A ---'  |  '--- conn C   (each queue entry: buf + offset + length)
 *        conn B ------'
 *
 * The count is NOT atomic: a buffer belongs to one worker loop. Buffers that cross loops (the
 * published message itself) carry their own atomic count elsewhere.
 */
#ifndef HERALD_BUF_H
#define HERALD_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct hd_buf_s {
    uint32_t refs;
    uint32_t cap;
    size_t len;
    char data[];
} hd_buf_t;

/* Returns a buffer with room for `cap` bytes, len 0, one reference. Aborts on OOM. */
hd_buf_t *hd_buf_new(size_t cap);
/* Returns a buffer holding a copy of data[0..len), one reference. */
hd_buf_t *hd_buf_new_copy(const void *data, size_t len);
static inline hd_buf_t *hd_buf_ref(hd_buf_t *b)
{
    b->refs++;
    return b;
}
void hd_buf_unref(hd_buf_t *b);

/*
 * A growable byte string for building one response or one encoded message. Owned by one caller;
 * hd_sbuf_finish turns it into an hd_buf_t (one reference) without copying.
 */
typedef struct hd_sbuf_s {
    hd_buf_t *buf;
} hd_sbuf_t;

void hd_sbuf_init(hd_sbuf_t *s, size_t cap);
void hd_sbuf_append(hd_sbuf_t *s, const void *data, size_t len);
void hd_sbuf_appendf(hd_sbuf_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends v in decimal: what a response head needs per request, without printf's cost. */
void hd_sbuf_append_u64(hd_sbuf_t *s, uint64_t v);
/* The longest decimal of a uint64_t (18446744073709551615). */
#define HD_U64_DEC_MAX 20
/* Writes v in decimal at out (room for HD_U64_DEC_MAX bytes), without a NUL; returns its
 * length. What hd_sbuf_append_u64 appends, for a writer into a buffer sized beforehand. */
size_t hd_u64_dec(char *out, uint64_t v);
static inline void hd_sbuf_appends(hd_sbuf_t *s, const char *str)
{
    hd_sbuf_append(s, str, strlen(str));
}
/* Returns the built buffer (one reference); the sbuf is empty afterwards. */
hd_buf_t *hd_sbuf_finish(hd_sbuf_t *s);
void hd_sbuf_dispose(hd_sbuf_t *s);

#endif
