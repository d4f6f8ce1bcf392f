/* SPDX-License-Identifier: MIT */
/*
 * proxy_proto.c: the PROXY protocol header parser (proxy_proto.h), versions 1 and 2. Pure: the
 * connection layer calls it with what it has read; it never reads past what it is given and
 * refuses a header at the first byte that cannot belong to one, so a peer that sends garbage is
 * told at once, not after a timeout.
 */
#include "herald/proxy_proto.h"
#include "herald/common.h"

#include <netinet/in.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

static int fail(const char **why, const char *text)
{
    if (why)
        *why = text;
    return HD_EPROXY;
}

/* ---- version 1 ---- */

/* The next space-separated field of [*p, end): its start and length; *p moves past a space. */
static const char *field(const char **p, const char *end, size_t *len, int last)
{
    const char *s = *p, *sp = memchr(s, ' ', (size_t)(end - s));
    if (last) {
        if (sp)
            return NULL;
        *len = (size_t)(end - s);
        *p = end;
    } else {
        if (!sp)
            return NULL;
        *len = (size_t)(sp - s);
        *p = sp + 1;
    }
    return *len ? s : NULL;
}

static int v1_parse(const char *d, size_t len, hd_proxy_hdr_t *out, const char **why)
{
    size_t scan = len < HD_PROXY_V1_MAX ? len : HD_PROXY_V1_MAX;
    const char *cr = NULL;

    /* Only printable ASCII before the CRLF: garbage is refused without waiting for more. */
    for (size_t i = sizeof(v1_prefix) - 1; i < scan; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch == '\r') {
            cr = d + i;
            break;
        }
        if (ch < 0x20 || ch > 0x7e)
            return fail(why, "v1: a byte that is not printable ASCII before the CRLF");
    }
    if (!cr) {
        if (len >= HD_PROXY_V1_MAX)
            return fail(why, "v1: no CRLF within 107 bytes");
        return 0;
    }
    if ((size_t)(cr - d) + 2 > HD_PROXY_V1_MAX)
        return fail(why, "v1: no CRLF within 107 bytes");
    if ((size_t)(cr - d) + 1 >= len)
        return 0; /* the LF has not arrived */
    if (cr[1] != '\n')
        return fail(why, "v1: CR not followed by LF");
    size_t hlen = (size_t)(cr - d) + 2;

    const char *p = d + sizeof(v1_prefix) - 1, *end = cr;
    size_t n;
    const char *proto =
        memchr(p, ' ', (size_t)(end - p)) ? field(&p, end, &n, 0) : field(&p, end, &n, 1);
    if (!proto)
        return fail(why, "v1: missing protocol");
    memset(out, 0, sizeof(*out));
    out->version = 1;
    if (n == 7 && memcmp(proto, "UNKNOWN", 7) == 0) {
        out->is_local = 1; /* whatever follows UNKNOWN is ignored, as the specification says */
        return (int)hlen;
    }
    int family;
    if (n == 4 && memcmp(proto, "TCP4", 4) == 0)
        family = HD_IP_V4;
    else if (n == 4 && memcmp(proto, "TCP6", 4) == 0)
        family = HD_IP_V6;
    else
        return fail(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    const char *src, *dst, *sport, *dport;
    size_t srclen, dstlen, sportlen, dportlen;
    if (!(src = field(&p, end, &srclen, 0)) || !(dst = field(&p, end, &dstlen, 0)) ||
        !(sport = field(&p, end, &sportlen, 0)) || !(dport = field(&p, end, &dportlen, 1)))
        return fail(why, "v1: expected source, destination, source port, destination port");
    /* A TCP4 line names IPv4 addresses, TCP6 IPv6 ones (a mapped IPv4 is fine for TCP6). */
    if (hd_ip_parse(&out->src, src, srclen, 0) != 0 || hd_ip_parse(&out->dst, dst, dstlen, 0) != 0)
        return fail(why, "v1: an address is not numeric IPv4 or IPv6");
    int v6_text = memchr(src, ':', srclen) != NULL || memchr(dst, ':', dstlen) != NULL;
    if ((family == HD_IP_V4) == v6_text)
        return fail(why, "v1: the addresses do not match the protocol");
    if (hd_ip_parse_port(sport, sportlen, &out->src.port) != 0 ||
        hd_ip_parse_port(dport, dportlen, &out->dst.port) != 0)
        return fail(why, "v1: a port is not a number in 0..65535");
    return (int)hlen;
}

/* ---- version 2 ---- */

static uint16_t be16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static int v2_parse(const unsigned char *d, size_t len, hd_proxy_hdr_t *out, const char **why)
{
    if (len < 16)
        return 0; /* version, command, family, length: checked once they are all here */
    unsigned ver = d[12] >> 4, cmd = d[12] & 0x0f, fam = d[13] >> 4, tr = d[13] & 0x0f;
    size_t plen = be16(d + 14);
    if (ver != 2)
        return fail(why, "v2: version is not 2");
    if (cmd > 1)
        return fail(why, "v2: command is neither LOCAL nor PROXY");
    if (fam > 3 || tr > 2)
        return fail(why, "v2: unknown address family or transport");
    if (plen > HD_PROXY_V2_MAX_LEN)
        return fail(why, "v2: header longer than herald accepts (1024 bytes after the first 16)");
    if (len < 16 + plen)
        return 0;
    memset(out, 0, sizeof(*out));
    out->version = 2;
    const unsigned char *a = d + 16;
    size_t alen = 0;
    if (cmd == 0 || fam == 0) {
        out->is_local = 1; /* LOCAL, or UNSPEC: the socket's address stands; skip the rest */
        return (int)(16 + plen);
    }
    if (tr != 1)
        return fail(why, "v2: transport is not STREAM on a TCP listener");
    if (fam == 1) {
        alen = 12;
        if (plen < alen)
            return fail(why, "v2: length too short for IPv4 addresses");
        out->src.family = out->dst.family = HD_IP_V4;
        memcpy(out->src.bytes, a, 4);
        memcpy(out->dst.bytes, a + 4, 4);
        out->src.port = be16(a + 8);
        out->dst.port = be16(a + 10);
    } else if (fam == 2) {
        alen = 36;
        if (plen < alen)
            return fail(why, "v2: length too short for IPv6 addresses");
        struct sockaddr_in6 s6;
        memset(&s6, 0, sizeof(s6));
        s6.sin6_family = AF_INET6;
        memcpy(&s6.sin6_addr, a, 16);
        hd_ip_from_sockaddr(&out->src, (struct sockaddr *)&s6);
        memcpy(&s6.sin6_addr, a + 16, 16);
        hd_ip_from_sockaddr(&out->dst, (struct sockaddr *)&s6);
        out->src.port = be16(a + 32);
        out->dst.port = be16(a + 34);
    } else {
        alen = 216;
        if (plen < alen)
            return fail(why, "v2: length too short for UNIX addresses");
        out->is_local = 1; /* a UNIX socket names no client address */
    }
    /* TLVs (type, 16-bit length, value) are not used, but each must fit in the length. */
    const unsigned char *t = a + alen, *end = d + 16 + plen;
    while (t < end) {
        if (end - t < 3)
            return fail(why, "v2: truncated TLV");
        size_t vlen = be16(t + 1);
        if ((size_t)(end - t - 3) < vlen)
            return fail(why, "v2: a TLV runs past the header");
        t += 3 + vlen;
    }
    return (int)(16 + plen);
}

int hd_proxy_parse(const void *data, size_t len, hd_proxy_hdr_t *out, const char **why)
{
    const unsigned char *d = data;
    size_t n;

    if (why)
        *why = NULL;
    if (len == 0)
        return 0;
    if (d[0] == v2_sig[0]) {
        n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
        if (memcmp(d, v2_sig, n) != 0)
            return fail(why, "neither a v1 nor a v2 PROXY protocol signature");
        return len < sizeof(v2_sig) ? 0 : v2_parse(d, len, out, why);
    }
    n = len < sizeof(v1_prefix) - 1 ? len : sizeof(v1_prefix) - 1;
    if (memcmp(d, v1_prefix, n) != 0)
        return fail(why, "neither a v1 nor a v2 PROXY protocol signature");
    return len < sizeof(v1_prefix) - 1 ? 0 : v1_parse((const char *)d, len, out, why);
}
