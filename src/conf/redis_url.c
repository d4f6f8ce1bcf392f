/* SPDX-License-Identifier: MIT */
/*
 * redis_url.c: the syntax of the redis directive's value (a redis:// URL, a unix: URL or a bare
 * socket path) parsed into an hd_redis_addr_t. The conf loader uses it to check the directive,
 * the Redis bridge to connect; it depends on nothing of either.
 */
#include "herald/redis_url.h"
#include "herald/common.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* SELECT's argument: more than any Redis is configured with, small enough for an unsigned. */
#define MAX_DB 1000000

/* "123": plain decimal, no sign, no overflow. Returns 0 or -1. */
static int parse_uint(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    if (i == 0 || s[i] != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Percent-decodes a user name or password (strict: malformed or NUL is refused). 0 or -1. */
static int pct_decode(const char *s, size_t len, char *out, size_t outlen)
{
    return hd_pct_decode(s, len, out, outlen, HD_PCT_STRICT) < 0 ? -1 : 0;
}

static int set_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return HD_ECONF;
}

/* "db=N&password=P&user=U" after a unix socket path. */
static int parse_unix_query(const char *q, hd_redis_addr_t *out, char *err, size_t errlen)
{
    while (*q != '\0') {
        const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        uint64_t db;
        char num[24];
        if (eq == NULL)
            return set_err(err, errlen, "expected db=, password= or user= after '?'");
        const char *v = eq + 1;
        size_t klen = (size_t)(eq - q), vlen = (size_t)(end - v);
        if (klen == 2 && memcmp(q, "db", 2) == 0) {
            if (vlen == 0 || vlen >= sizeof(num))
                return set_err(err, errlen, "db: expected a database number");
            memcpy(num, v, vlen);
            num[vlen] = '\0';
            if (parse_uint(num, &db) != 0 || db > MAX_DB)
                return set_err(err, errlen, "db: expected a database number");
            out->db = (unsigned)db;
        } else if (klen == 8 && memcmp(q, "password", 8) == 0) {
            if (pct_decode(v, vlen, out->password, sizeof(out->password)) != 0)
                return set_err(err, errlen, "password: bad percent-encoding or too long");
        } else if (klen == 4 && memcmp(q, "user", 4) == 0) {
            if (pct_decode(v, vlen, out->user, sizeof(out->user)) != 0)
                return set_err(err, errlen, "user: bad percent-encoding or too long");
        } else {
            return set_err(err, errlen, "expected db=, password= or user= after '?'");
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

int hd_redis_url_parse(const char *url, hd_redis_addr_t *out, char *err, size_t errlen)
{
    static const char syntax[] =
        "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH[?db=N] or /PATH";
    const char *p, *auth_end, *at, *host, *host_end, *q;
    uint64_t v;

    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (url[0] == '/' || strncmp(url, "unix:", 5) == 0) {
        p = url[0] == '/' ? url : url + 5;
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        if (p[0] != '/')
            return set_err(err, errlen, "a unix socket path must be absolute");
        q = strchr(p, '?');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len >= sizeof(out->path))
            return set_err(err, errlen, "unix socket path too long");
        memcpy(out->path, p, len);
        out->path[len] = '\0';
        return q ? parse_unix_query(q + 1, out, err, errlen) : 0;
    }
    if (strncmp(url, "rediss://", 9) == 0)
        return set_err(err, errlen, "TLS to Redis (rediss://) is not supported");
    if (strncmp(url, "redis://", 8) != 0)
        return set_err(err, errlen, syntax);
    p = url + 8;
    auth_end = p + strcspn(p, "/?#");
    at = NULL;
    for (q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    host = p;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL)
            return set_err(err, errlen, "expected USER:PASSWORD@ or :PASSWORD@ before the host");
        size_t user_len = (size_t)(colon - p), pass_len = (size_t)(at - colon - 1);
        if (pct_decode(p, user_len, out->user, sizeof(out->user)) != 0 ||
            pct_decode(colon + 1, pass_len, out->password, sizeof(out->password)) != 0)
            return set_err(err, errlen, "user or password: bad percent-encoding or too long");
        host = at + 1;
    }
    if (host[0] == '[') {
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL)
            return set_err(err, errlen, "unterminated [ in the host");
        host++;
        q = host_end + 1;
    } else {
        host_end = memchr(host, ':', (size_t)(auth_end - host));
        if (host_end == NULL)
            host_end = auth_end;
        q = host_end;
    }
    if (host_end == host || (size_t)(host_end - host) >= sizeof(out->host))
        return set_err(err, errlen, "expected a host name or address after redis://");
    memcpy(out->host, host, (size_t)(host_end - host));
    out->host[host_end - host] = '\0';
    if (q < auth_end) {
        char num[8];
        size_t n = (size_t)(auth_end - q - 1);
        if (*q != ':' || n == 0 || n >= sizeof(num))
            return set_err(err, errlen, "expected :PORT after the host");
        memcpy(num, q + 1, n);
        num[n] = '\0';
        if (parse_uint(num, &v) != 0 || v == 0 || v > 65535)
            return set_err(err, errlen, "expected a port in 1..65535");
        out->port = (int)v;
    }
    p = auth_end;
    if (*p == '/' && p[1] != '\0') {
        if (parse_uint(p + 1, &v) != 0 || v > MAX_DB)
            return set_err(err, errlen, "expected a database number after the host, e.g. /0");
        out->db = (unsigned)v;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        return set_err(err, errlen, syntax);
    }
    return 0;
}
