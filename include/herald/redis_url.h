/* SPDX-License-Identifier: MIT */
/*
 * redis_url.h: where the redis directive points. The value's syntax and its parsed form, shared
 * by the conf loader (which checks the directive) and the Redis bridge (which connects); this
 * module depends on neither.
 */
#ifndef HERALD_REDIS_URL_H
#define HERALD_REDIS_URL_H

#include <stddef.h>

/* Where the redis directive points, parsed. */
typedef struct hd_redis_addr_s {
    char host[256];     /* TCP host name or numeric address ("" for a unix socket) */
    int port;           /* TCP port */
    char path[108];     /* unix socket path ("" for TCP) */
    char user[128];     /* ACL user for AUTH ("" = the default user) */
    char password[256]; /* "" = no AUTH */
    unsigned db;        /* SELECT */
} hd_redis_addr_t;

/*
 * Parses a redis directive value:
 *     redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]    (IPv6 HOST in brackets; PORT 6379, DB 0)
 *     unix:///PATH[?db=DB&password=PASSWORD&user=USER]   or a bare /PATH
 * USER and PASSWORD may be percent-encoded. Fills *out (zeroed first) and returns 0, or returns
 * HD_ECONF with a message in err (NUL-terminated, cut to errlen; err may be NULL) that never
 * contains the password. Reads url up to its NUL only.
 */
int hd_redis_url_parse(const char *url, hd_redis_addr_t *out, char *err, size_t errlen);

#endif
