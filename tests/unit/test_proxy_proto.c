/* SPDX-License-Identifier: MIT */
/*
 * test_proxy_proto.c: the PROXY protocol parser (src/net/proxy_proto.c). Every header is fed
 * whole, with the client's first bytes after it, and cut at every offset (each prefix must ask
 * for more, never fail, never read past its end: prefixes are exact-size heap copies, so ASan
 * catches an over-read); malformed headers are refused, and as early as their first wrong byte.
 */
#include "herald/common.h"
#include "herald/proxy_proto.h"

#include "test.h"

#include <arpa/inet.h>

/* Parses an exact-size copy of data[0..len). */
static int parse(const void *data, size_t len, hd_proxy_hdr_t *out, const char **why)
{
    void *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int rc = hd_proxy_parse(copy, len, out, why);
    free(copy);
    return rc;
}

/* A complete header of hlen bytes: each shorter prefix asks for more; with a tail, the length. */
static void check_prefixes(const void *hdr, size_t hlen)
{
    hd_proxy_hdr_t out;
    const char *why;
    for (size_t i = 0; i < hlen; i++) {
        int rc = parse(hdr, i, &out, &why);
        if (rc != 0)
            T_FAIL("prefix of %zu/%zu bytes: rc %d (%s)", i, hlen, rc, why ? why : "");
    }
    T_EQ_INT(parse(hdr, hlen, &out, &why), (long long)hlen);
    char *more = malloc(hlen + 5);
    memcpy(more, hdr, hlen);
    memcpy(more + hlen, "GET /", 5);
    T_EQ_INT(parse(more, hlen + 5, &out, &why), (long long)hlen);
    free(more);
}

static void ip_text(const hd_ip_t *ip, char *out)
{
    hd_ip_format_port(ip, out, HD_IP_TEXT_MAX);
}

static void test_v1_tcp4(void)
{
    const char *h = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    hd_proxy_hdr_t out;
    const char *why;
    char text[HD_IP_TEXT_MAX];
    T_EQ_INT(parse(h, strlen(h), &out, &why), strlen(h));
    T_EQ_INT(out.version, 1);
    T_EQ_INT(out.is_local, 0);
    ip_text(&out.src, text);
    T_EQ_STR(text, "192.0.2.1:56324");
    ip_text(&out.dst, text);
    T_EQ_STR(text, "198.51.100.7:443");
    check_prefixes(h, strlen(h));
}

static void test_v1_tcp6_and_unknown(void)
{
    const char *h = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
    hd_proxy_hdr_t out;
    const char *why;
    char text[HD_IP_TEXT_MAX];
    T_EQ_INT(parse(h, strlen(h), &out, &why), strlen(h));
    ip_text(&out.src, text);
    T_EQ_STR(text, "[2001:db8::1]:1");
    check_prefixes(h, strlen(h));
    /* a mapped IPv4 address in TCP6 becomes IPv4 */
    h = "PROXY TCP6 ::ffff:192.0.2.9 ::1 5 6\r\n";
    T_EQ_INT(parse(h, strlen(h), &out, &why), strlen(h));
    ip_text(&out.src, text);
    T_EQ_STR(text, "192.0.2.9:5");
    h = "PROXY UNKNOWN\r\n";
    T_EQ_INT(parse(h, strlen(h), &out, &why), strlen(h));
    T_EQ_INT(out.is_local, 1);
    check_prefixes(h, strlen(h));
    h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    T_EQ_INT(parse(h, strlen(h), &out, &why), strlen(h));
    T_EQ_INT(out.is_local, 1);
    /* the longest the specification allows: 107 bytes */
    char longest[HD_PROXY_V1_MAX + 1];
    memset(longest, 'x', sizeof(longest));
    memcpy(longest, "PROXY UNKNOWN ", 14);
    memcpy(longest + HD_PROXY_V1_MAX - 2, "\r\n", 2);
    T_EQ_INT(parse(longest, HD_PROXY_V1_MAX, &out, &why), HD_PROXY_V1_MAX);
    memset(longest, 'x', sizeof(longest));
    memcpy(longest, "PROXY UNKNOWN ", 14);
    memcpy(longest + HD_PROXY_V1_MAX - 1, "\r\n", 2);
    T_EQ_INT(parse(longest, HD_PROXY_V1_MAX + 1, &out, &why), HD_EPROXY);
}

static void test_v1_malformed(void)
{
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\n",
        "PROXY\r\n",
        "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
        "PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
        "PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n",
        "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
        "PROXY TCP4 host.example 1.2.3.4 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n",
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        hd_proxy_hdr_t out;
        const char *why = NULL;
        int rc = parse(bad[i], strlen(bad[i]), &out, &why);
        if (rc != HD_EPROXY || why == NULL)
            T_FAIL("\"%s\": rc %d, expected HD_EPROXY with a reason", bad[i], rc);
    }
    /* no CRLF within 107 bytes: refused once 107 bytes are in, not before */
    char line[200];
    memset(line, 'a', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    hd_proxy_hdr_t out;
    const char *why;
    T_EQ_INT(parse(line, HD_PROXY_V1_MAX - 1, &out, &why), 0);
    T_EQ_INT(parse(line, HD_PROXY_V1_MAX, &out, &why), HD_EPROXY);
    /* garbage is refused at its first byte */
    T_EQ_INT(parse("G", 1, &out, &why), HD_EPROXY);
    T_EQ_INT(parse("PROXX", 5, &out, &why), HD_EPROXY);
    T_EQ_INT(parse("\r\n\r\n\0\r\nQUIX", 12, &out, &why), HD_EPROXY);
    T_EQ_INT(parse("\x16\x03\x01", 3, &out, &why), HD_EPROXY); /* a TLS ClientHello */
}

/* Builds a v2 header: signature, ver_cmd, fam, then body. Returns its length. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const void *body, size_t blen)
{
    static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, sig, 12);
    out[12] = (unsigned char)ver_cmd;
    out[13] = (unsigned char)fam;
    out[14] = (unsigned char)(blen >> 8);
    out[15] = (unsigned char)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static void test_v2(void)
{
    unsigned char h[2048], body[1100];
    hd_proxy_hdr_t out;
    const char *why;
    char text[HD_IP_TEXT_MAX];

    /* TCP over IPv4 */
    unsigned char v4[12] = {192, 0, 2, 1, 198, 51, 100, 7, 0xdb, 0xc4, 0x01, 0xbb};
    size_t n = v2(h, 0x21, 0x11, v4, sizeof(v4));
    T_EQ_INT(parse(h, n, &out, &why), 28);
    T_EQ_INT(out.version, 2);
    ip_text(&out.src, text);
    T_EQ_STR(text, "192.0.2.1:56260");
    ip_text(&out.dst, text);
    T_EQ_STR(text, "198.51.100.7:443");
    check_prefixes(h, n);

    /* TCP over IPv6, with TLVs (an AWS-style one and a NOOP) */
    memset(body, 0, sizeof(body));
    inet_pton(AF_INET6, "2001:db8::17", body);
    inet_pton(AF_INET6, "2001:db8::1", body + 16);
    body[32] = 0x12, body[33] = 0x34, body[34] = 0, body[35] = 80;
    unsigned char tlv[] = {0xEA, 0x00, 0x05, 0x01, 'v', 'p', 'c', 'e', 0x04, 0x00, 0x00};
    memcpy(body + 36, tlv, sizeof(tlv));
    n = v2(h, 0x21, 0x21, body, 36 + sizeof(tlv));
    T_EQ_INT(parse(h, n, &out, &why), (long long)n);
    ip_text(&out.src, text);
    T_EQ_STR(text, "[2001:db8::17]:4660");
    check_prefixes(h, n);

    /* LOCAL: the balancer's own connection; addresses (if any) are skipped */
    n = v2(h, 0x20, 0x00, NULL, 0);
    T_EQ_INT(parse(h, n, &out, &why), 16);
    T_EQ_INT(out.is_local, 1);
    n = v2(h, 0x20, 0x11, v4, sizeof(v4));
    T_EQ_INT(parse(h, n, &out, &why), 28);
    T_EQ_INT(out.is_local, 1);
    /* PROXY with UNSPEC family, and with a UNIX address: keep the socket's */
    n = v2(h, 0x21, 0x00, v4, 4);
    T_EQ_INT(parse(h, n, &out, &why), 20);
    T_EQ_INT(out.is_local, 1);
    memset(body, 'u', 216);
    n = v2(h, 0x21, 0x31, body, 216);
    T_EQ_INT(parse(h, n, &out, &why), 232);
    T_EQ_INT(out.is_local, 1);

    /* the longest accepted, and one byte more */
    memset(body, 0, sizeof(body));
    memcpy(body, v4, 12);
    body[12] = 0x04; /* NOOP TLV filling the rest */
    body[13] = (unsigned char)((HD_PROXY_V2_MAX_LEN - 15) >> 8);
    body[14] = (unsigned char)(HD_PROXY_V2_MAX_LEN - 15);
    n = v2(h, 0x21, 0x11, body, HD_PROXY_V2_MAX_LEN);
    T_EQ_INT(parse(h, n, &out, &why), HD_PROXY_MAX);
    n = v2(h, 0x21, 0x11, body, HD_PROXY_V2_MAX_LEN + 1);
    T_EQ_INT(parse(h, 16, &out, &why), HD_EPROXY); /* refused from the length alone */
}

static void test_v2_malformed(void)
{
    unsigned char h[2048];
    unsigned char v4[12] = {192, 0, 2, 1, 198, 51, 100, 7, 0, 1, 0, 2};
    hd_proxy_hdr_t out;
    const char *why;
    struct {
        unsigned ver_cmd, fam;
        size_t blen;
        const char *what;
    } bad[] = {
        {0x11, 0x11, 12, "version 1 in a v2 header"},
        {0x31, 0x11, 12, "version 3"},
        {0x22, 0x11, 12, "command 2"},
        {0x21, 0x41, 12, "family 4"},
        {0x21, 0x13, 12, "transport 3"},
        {0x21, 0x12, 12, "UDP on a TCP listener"},
        {0x21, 0x11, 11, "IPv4 addresses cut short"},
        {0x21, 0x21, 12, "IPv6 addresses cut short"},
        {0x21, 0x11, 14, "a truncated TLV"},
        {0x21, 0x11, 16, "a TLV running past the end"},
    };
    unsigned char body[64];
    memset(body, 0, sizeof(body));
    memcpy(body, v4, 12);
    body[12] = 0x01, body[13] = 0x00, body[14] = 0x09; /* a TLV claiming 9 bytes */
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        size_t n = v2(h, bad[i].ver_cmd, bad[i].fam, body, bad[i].blen);
        int rc = parse(h, n, &out, &why);
        if (rc != HD_EPROXY)
            T_FAIL("%s: rc %d, expected HD_EPROXY", bad[i].what, rc);
    }
}

/* Byte by byte through a buffer, as a connection reading one byte at a time would. */
static void test_byte_by_byte(void)
{
    const char *h = "PROXY TCP4 10.1.2.3 10.0.0.1 1000 80\r\nGET / HTTP/1.1\r\n";
    hd_proxy_hdr_t out;
    const char *why;
    size_t hlen = strlen("PROXY TCP4 10.1.2.3 10.0.0.1 1000 80\r\n");
    for (size_t i = 1; i <= strlen(h); i++) {
        int rc = parse(h, i, &out, &why);
        T_EQ_INT(rc, i < hlen ? 0 : (long long)hlen);
    }
}

int main(void)
{
    T_RUN(test_v1_tcp4);
    T_RUN(test_v1_tcp6_and_unknown);
    T_RUN(test_v1_malformed);
    T_RUN(test_v2);
    T_RUN(test_v2_malformed);
    T_RUN(test_byte_by_byte);
    return 0;
}
