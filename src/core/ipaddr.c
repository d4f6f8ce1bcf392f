/* SPDX-License-Identifier: MIT */
/*
 * ipaddr.c: client addresses and address ranges (ipaddr.h): parsing and formatting, range
 * matching for trusted_proxies, and the walk of X-Forwarded-For / Forwarded that finds the
 * client behind trusted proxies. Pure: no I/O, no allocation.
 */
#include "herald/ipaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Stores a 16-byte IPv6 address, as IPv4 when it maps one. */
static void set_v6(hd_ip_t *ip, const uint8_t b[16])
{
    if (memcmp(b, v4_mapped_prefix, 12) == 0) {
        ip->family = HD_IP_V4;
        memcpy(ip->bytes, b + 12, 4);
        return;
    }
    ip->family = HD_IP_V6;
    memcpy(ip->bytes, b, 16);
}

int hd_ip_from_sockaddr(hd_ip_t *ip, const struct sockaddr *sa)
{
    memset(ip, 0, sizeof(*ip));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        ip->family = HD_IP_V4;
        memcpy(ip->bytes, &a->sin_addr, 4);
        ip->port = ntohs(a->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        set_v6(ip, a->sin6_addr.s6_addr);
        ip->port = ntohs(a->sin6_port);
        return 0;
    }
    return UV_EAFNOSUPPORT;
}

/* s[0..len) as a bare address (no brackets, no port). */
static int parse_bare(hd_ip_t *ip, const char *s, size_t len)
{
    char text[INET6_ADDRSTRLEN + 1];
    uint8_t b[16];

    if (len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, s, len);
    text[len] = '\0';
    if (memchr(s, ':', len) == NULL) {
        if (inet_pton(AF_INET, text, b) != 1)
            return -1;
        ip->family = HD_IP_V4;
        memcpy(ip->bytes, b, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, text, b) != 1)
        return -1;
    set_v6(ip, b);
    return 0;
}

int hd_ip_parse_port(const char *s, size_t len, uint16_t *out)
{
    unsigned v = 0;

    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int hd_ip_parse(hd_ip_t *ip, const char *s, size_t len, int with_port)
{
    memset(ip, 0, sizeof(*ip));
    if (with_port && len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        size_t rest;
        if (close == NULL)
            return -1;
        rest = len - (size_t)(close + 1 - s);
        if (memchr(s, ':', (size_t)(close - s)) == NULL ||
            parse_bare(ip, s + 1, (size_t)(close - s - 1)) != 0)
            goto fail; /* brackets hold IPv6 text (a mapped IPv4 is then stored as IPv4) */
        if (rest == 0)
            return 0;
        if (close[1] != ':' || hd_ip_parse_port(close + 2, rest - 1, &ip->port) != 0)
            goto fail;
        return 0;
    }
    if (with_port) {
        const char *colon = memchr(s, ':', len);
        /* One colon: IPv4 with a port; more: a bare IPv6 address. */
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) == NULL) {
            if (parse_bare(ip, s, (size_t)(colon - s)) != 0 || ip->family != HD_IP_V4 ||
                hd_ip_parse_port(colon + 1, len - (size_t)(colon + 1 - s), &ip->port) != 0)
                goto fail;
            return 0;
        }
    }
    if (parse_bare(ip, s, len) == 0)
        return 0;
fail:
    memset(ip, 0, sizeof(*ip));
    return -1;
}

size_t hd_ip_format(const hd_ip_t *ip, char *out, size_t outlen)
{
    char text[INET6_ADDRSTRLEN];

    if (ip->family == HD_IP_V4)
        inet_ntop(AF_INET, ip->bytes, text, sizeof(text));
    else if (ip->family == HD_IP_V6)
        inet_ntop(AF_INET6, ip->bytes, text, sizeof(text));
    else
        memcpy(text, "-", 2);
    int n = snprintf(out, outlen, "%s", text);
    return n < 0 ? 0 : (size_t)n < outlen ? (size_t)n : outlen ? outlen - 1 : 0;
}

size_t hd_ip_format_port(const hd_ip_t *ip, char *out, size_t outlen)
{
    char text[INET6_ADDRSTRLEN];
    int n;

    if (ip->family == HD_IP_NONE || ip->port == 0)
        return hd_ip_format(ip, out, outlen);
    hd_ip_format(ip, text, sizeof(text));
    n = snprintf(out, outlen, ip->family == HD_IP_V6 ? "[%s]:%u" : "%s:%u", text,
                 (unsigned)ip->port);
    return n < 0 ? 0 : (size_t)n < outlen ? (size_t)n : outlen ? outlen - 1 : 0;
}

int hd_ip_equal(const hd_ip_t *a, const hd_ip_t *b)
{
    return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

int hd_ip_is_loopback(const hd_ip_t *ip)
{
    static const uint8_t v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (ip->family == HD_IP_V4)
        return ip->bytes[0] == 127;
    return ip->family == HD_IP_V6 && memcmp(ip->bytes, v6_loopback, 16) == 0;
}

/* ---- ranges ---- */

int hd_cidr_parse(hd_cidr_t *c, const char *s, char *why, size_t whylen)
{
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    unsigned max, bits;

    memset(c, 0, sizeof(*c));
    if (hd_ip_parse(&c->net, s, len, 0) != 0) {
        snprintf(why, whylen, "\"%s\" is not an IPv4 or IPv6 address or range (ADDR or ADDR/BITS)",
                 s);
        return -1;
    }
    max = c->net.family == HD_IP_V4 ? 32 : 128;
    bits = max;
    if (slash != NULL) {
        uint16_t v;
        /* A mapped IPv4 range was written as IPv6: its prefix counts the 96 mapping bits. */
        int mapped = c->net.family == HD_IP_V4 && memchr(s, ':', len) != NULL;
        if (hd_ip_parse_port(slash + 1, strlen(slash + 1), &v) != 0 || v > (mapped ? 128 : max) ||
            (mapped && v < 96)) {
            snprintf(why, whylen, "\"%s\": the prefix length must be 0..%u", s, mapped ? 128 : max);
            return -1;
        }
        bits = mapped ? v - 96u : v;
    }
    c->bits = (uint8_t)bits;
    for (unsigned i = bits; i < max; i++) {
        if (c->net.bytes[i / 8] & (0x80 >> (i % 8))) {
            snprintf(why, whylen,
                     "\"%s\" has bits set past its /%u prefix (did you mean the network address?)",
                     s, bits);
            return -1;
        }
    }
    return 0;
}

int hd_cidr_match(const hd_cidr_t *c, const hd_ip_t *ip)
{
    unsigned full = c->bits / 8, rest = c->bits % 8;

    if (ip->family != c->net.family || ip->family == HD_IP_NONE)
        return 0;
    if (memcmp(ip->bytes, c->net.bytes, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (ip->bytes[full] & mask) == c->net.bytes[full];
}

int hd_cidr_list_match(const hd_cidr_list_t *l, const hd_ip_t *ip)
{
    for (size_t i = 0; i < l->n; i++) {
        if (hd_cidr_match(&l->v[i], ip))
            return 1;
    }
    return 0;
}

/* ---- X-Forwarded-For and Forwarded ---- */

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trims optional whitespace around s[0..*len). */
static const char *trim(const char *s, size_t *len)
{
    while (*len > 0 && is_ows(s[0])) {
        s++;
        (*len)--;
    }
    while (*len > 0 && is_ows(s[*len - 1]))
        (*len)--;
    return s;
}

/* The address of a Forwarded element ("for=...;proto=..."), or -1 without a usable for=. */
static int forwarded_for(const char *s, size_t len, hd_ip_t *ip)
{
    const char *end = s + len;

    while (s < end) {
        const char *semi = memchr(s, ';', (size_t)(end - s));
        size_t plen = (size_t)((semi ? semi : end) - s);
        const char *p = trim(s, &plen);
        if (plen > 4 && (p[0] | 0x20) == 'f' && (p[1] | 0x20) == 'o' && (p[2] | 0x20) == 'r' &&
            p[3] == '=') {
            const char *v = p + 4;
            size_t vlen = plen - 4;
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            return hd_ip_parse(ip, v, vlen, 1);
        }
        s = semi ? semi + 1 : end;
    }
    return -1;
}

void hd_ip_forwarded_client(const hd_ip_t *peer, const hd_cidr_list_t *trusted,
                            const char *const *values, const size_t *lens, size_t n_values,
                            int is_forwarded, hd_ip_t *out)
{
    *out = *peer;
    if (!hd_cidr_list_match(trusted, peer))
        return;
    /* Right to left: the last header line first, each line's last entry first. */
    for (size_t k = n_values; k-- > 0;) {
        const char *s = values[k];
        size_t end = lens[k];
        while (end > 0) {
            size_t start = end;
            while (start > 0 && s[start - 1] != ',')
                start--;
            size_t elen = end - start;
            const char *e = trim(s + start, &elen);
            end = start > 0 ? start - 1 : 0;
            if (elen == 0)
                continue; /* "a,,b": an empty entry says nothing */
            hd_ip_t ip;
            int rc = is_forwarded ? forwarded_for(e, elen, &ip) : hd_ip_parse(&ip, e, elen, 1);
            if (rc != 0)
                return; /* not an address: trust stops at the last one found */
            *out = ip;
            if (!hd_cidr_list_match(trusted, &ip))
                return;
        }
    }
}
