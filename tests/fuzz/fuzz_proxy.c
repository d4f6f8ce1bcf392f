/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proxy.c: libFuzzer harness for the PROXY protocol header parser (hd_proxy_parse), the
 * first thing herald reads from a peer on a proxy_protocol listener, and for the address helpers
 * the header's addresses go through. Checked on every input:
 *   - the parser never reads past the input (it gets an exact-size heap copy: ASan);
 *   - a complete header is at most HD_PROXY_MAX bytes (at most 107 for v1) and its length
 *     does not depend on what follows it: parsing exactly the header gives the same answer;
 *   - every prefix of a complete header asks for more (0), never fails: a header arriving in
 *     pieces is never refused for being cut;
 *   - an input of HD_PROXY_MAX bytes or more always gets an answer (a header or a refusal), so
 *     the connection layer's bounded buffer is enough;
 *   - the addresses of a complete header format and parse back to themselves.
 */
#include "herald/common.h"
#include "herald/proxy_proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse_copy(const uint8_t *data, size_t len, hd_proxy_hdr_t *out)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    if (len)
        memcpy(copy, data, len);
    const char *why = NULL;
    int rc = hd_proxy_parse(copy, len, out, &why);
    CHECK(rc >= 0 || (rc == HD_EPROXY && why != NULL));
    free(copy);
    return rc;
}

static void check_addr(const hd_ip_t *ip)
{
    char text[HD_IP_TEXT_MAX];
    hd_ip_t back;
    CHECK(ip->family == HD_IP_V4 || ip->family == HD_IP_V6);
    size_t n = hd_ip_format_port(ip, text, sizeof(text));
    CHECK(n > 0 && n < sizeof(text));
    CHECK(hd_ip_parse(&back, text, n, 1) == 0);
    CHECK(hd_ip_equal(&back, ip) && back.port == ip->port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_proxy_hdr_t hdr, again;
    int rc = parse_copy(data, size, &hdr);
    if (size >= HD_PROXY_MAX)
        CHECK(rc != 0);
    if (rc <= 0)
        return 0;
    size_t hlen = (size_t)rc;
    CHECK(hlen <= size && hlen <= HD_PROXY_MAX);
    CHECK(hdr.version == 1 || hdr.version == 2);
    if (hdr.version == 1)
        CHECK(hlen <= HD_PROXY_V1_MAX);
    CHECK(parse_copy(data, hlen, &again) == rc);
    CHECK(again.is_local == hdr.is_local && hd_ip_equal(&again.src, &hdr.src) &&
          again.src.port == hdr.src.port);
    /* Cut anywhere before its end, the header is only incomplete (a few cuts per input keep the
     * run fast; libFuzzer's many inputs cover the offsets). */
    size_t cuts[] = {
        0, 1, hlen / 2, hlen - 1, (hlen * 7) / 8, 16 < hlen ? 16 : 0, 12 < hlen ? 12 : 0};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        if (cuts[i] < hlen)
            CHECK(parse_copy(data, cuts[i], &again) == 0);
    }
    if (!hdr.is_local) {
        check_addr(&hdr.src);
        check_addr(&hdr.dst);
    }
    return 0;
}
