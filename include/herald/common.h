/* SPDX-License-Identifier: MIT */
/*
 * common.h: the small things every module uses: herald's error table, always-on assertions,
 * container_of, and an intrusive doubly linked list (the all-zero list is NOT valid; call
 * hd_list_init).
 *
 * Functions return 0 on success or a negative code. System and I/O errors are libuv's UV_E*
 * codes; herald's own errors are the HD_E* codes below, each with a message, the HTTP status and
 * the WebSocket close code a client sees when that error ends its request or connection.
 */
#ifndef HERALD_COMMON_H
#define HERALD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* X(name, value, http_status, ws_close_code, message) */
#define HD_ERRNO_MAP(X)                                                                            \
    X(EBADREQ, -10001, 400, 1002, "malformed request")                                             \
    X(EURITOOLONG, -10002, 414, 1009, "request line or URL too long")                              \
    X(EHDRTOOBIG, -10003, 431, 1009, "request header section too large")                           \
    X(EBODYTOOBIG, -10004, 413, 1009, "request body too large")                                    \
    X(ENOTFOUND, -10005, 404, 1008, "not found")                                                   \
    X(EMETHOD, -10006, 405, 1008, "method not allowed")                                            \
    X(EOVERLOAD, -10007, 503, 1013, "server overloaded, retry later")                              \
    X(ETIMEOUT, -10008, 408, 1001, "timed out")                                                    \
    X(ETLS, -10009, 400, 1002, "TLS failure")                                                      \
    X(ECONF, -10010, 500, 1011, "configuration error")                                             \
    X(ESHUTDOWN, -10011, 503, 1001, "server shutting down")                                        \
    X(EFRAMING, -10012, 400, 1002, "conflicting message framing")                                  \
    X(ECHANNELS, -10013, 507, 1013, "channel limit reached (max_channels)")                        \
    X(EMEMORY, -10014, 507, 1013, "memory limit reached (max_memory)")                             \
    X(ESUBSCRIPTIONS, -10015, 503, 1013, "subscription limit reached (max_subscriptions)")         \
    X(EUNAUTHENTICATED, -10016, 401, 4401, "missing or invalid credential")                        \
    X(ETOKENEXPIRED, -10017, 401, 4001, "token expired")                                           \
    X(EFORBIDDEN, -10018, 403, 4003, "forbidden")                                                  \
    X(EPROXY, -10019, 400, 1002, "malformed PROXY protocol header")                                \
    X(EIPCONNS, -10020, 503, 1013, "too many connections (max_connections_per_ip)")                \
    X(EIPRATE, -10021, 429, 1013, "connecting too often (connect_rate_per_ip)")                    \
    X(EPUBRATE, -10022, 429, 1008, "publishing too often (client_publish_rate)")                   \
    X(ETICKETS, -10040, 503, 1013, "too many tickets waiting to be used (auth_max_tickets)")       \
    X(ETOKENREVOKED, -10023, 401, 4002, "token revoked")                                           \
    X(EDISCONNECTED, -10024, 409, 4009, "disconnected by the operator")                            \
    X(EREVOCATIONS, -10025, 507, 1013, "revocation limit reached (max_revocations)")

typedef enum {
#define HD_ERR_ENUM(name, val, status, close, msg) HD_##name = (val),
    HD_ERRNO_MAP(HD_ERR_ENUM)
#undef HD_ERR_ENUM
} hd_errno_t;

/* Returns a static message for an HD_E* code, or libuv's message for a UV_E* code. */
const char *hd_strerror(int err);
/* HTTP status for an HD_E* code (500 for anything else). */
int hd_err_http_status(int err);
/* WebSocket close code for an HD_E* code (1011 for anything else). */
int hd_err_ws_close(int err);

#define HD_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                          \
            hd_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
_Noreturn void hd_assert_fail(const char *expr, const char *file, int line);

#define hd_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define HD_ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))

/* Allocation that aborts on exhaustion: herald does not limp on without memory. */
void *hd_malloc(size_t n);
void *hd_calloc(size_t n, size_t size);
void *hd_realloc(void *p, size_t n);
/*
 * Grows the buffer p of *cap bytes (p NULL and *cap 0 for none yet) to hold at least need
 * bytes, doubling from `first`; past `limit` (0: none) it grows only to limit when limit >= need.
 * Returns the buffer (moved, perhaps) with its contents kept and *cap updated; never fails.
 */
void *hd_grow(void *p, size_t *cap, size_t need, size_t first, size_t limit);
/*
 * The same for an array of *cap elements of elem_size bytes (p NULL and *cap 0 for none yet):
 * grown to hold at least need elements, doubling from `first` (at least 1). Returns the array
 * (moved, perhaps) with its contents kept and *cap updated; never fails (aborts when the size
 * would not fit a size_t, as on exhausted memory).
 */
void *hd_grow_array(void *p, size_t *cap, size_t need, size_t elem_size, size_t first);
char *hd_strdup(const char *s);
char *hd_strndup(const char *s, size_t n);

typedef struct hd_list_s {
    struct hd_list_s *prev, *next;
} hd_list_t;

static inline void hd_list_init(hd_list_t *l)
{
    l->prev = l->next = l;
}
static inline int hd_list_empty(const hd_list_t *l)
{
    return l->next == l;
}
static inline int hd_list_linked(const hd_list_t *n)
{
    return n->next != NULL && n->next != n;
}
static inline void hd_list_insert_tail(hd_list_t *head, hd_list_t *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void hd_list_remove(hd_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define hd_list_foreach_safe(pos, tmp, head)                                                       \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

/* The one percent-decoder (RFC 3986 2.1), for URLs, query values and conf values. */
enum {
    HD_PCT_PLUS = 1 << 0,   /* '+' means a space (form-encoded query values) */
    HD_PCT_STRICT = 1 << 1, /* a '%' without two hex digits, or a decoded NUL, is an error */
};
/*
 * Decodes s[0..len) into out (outlen bytes, NUL-terminated). Without HD_PCT_STRICT a '%' not
 * followed by two hex digits is kept as it is. Returns the decoded length, or -1 when it does
 * not fit in outlen - 1 bytes or (HD_PCT_STRICT) is malformed.
 */
int hd_pct_decode(const char *s, size_t len, char *out, size_t outlen, unsigned flags);

/* Value of a hexadecimal digit, or -1. */
static inline int hd_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Milliseconds on a monotonic clock (not uv_now: usable from any thread). */
uint64_t hd_now_ms(void);

#endif
