/* SPDX-License-Identifier: MIT */
/*
 * proxy_proto.h: the PROXY protocol header (HAProxy's specification, versions 1 and 2) a load
 * balancer sends before anything else on a connection, naming the client it accepted. A pure
 * parser: no I/O, no allocation; the connection layer (conn.c) feeds it what arrived first on a
 * listener marked proxy_protocol, before TLS or HTTP see a byte.
 *
 *   v1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"   text, at most 107 bytes
 *       "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"
 *       "PROXY UNKNOWN[ anything]\r\n"                        keep the socket's address
 *   v2: \r\n\r\n\0\r\nQUIT\n, then version 2 | command (LOCAL 0, PROXY 1), family | transport,
 *       16-bit length of what follows: addresses (IPv4 12 bytes, IPv6 36, UNIX 216), then TLVs
 *       (skipped, but each must fit). LOCAL (the balancer's own health check), an unspecified
 *       family or a UNIX address keep the socket's address.
 */
#ifndef HERALD_PROXY_PROTO_H
#define HERALD_PROXY_PROTO_H

#include <stddef.h>

#include "herald/ipaddr.h"

/* A v1 header, CRLF included, is never longer (the specification's bound). */
#define HD_PROXY_V1_MAX 107
/* What a v2 header may carry after its 16 bytes (addresses and TLVs); longer is refused. */
#define HD_PROXY_V2_MAX_LEN 1024
/* The longest header accepted: what a connection buffers at most while one arrives. */
#define HD_PROXY_MAX (16 + HD_PROXY_V2_MAX_LEN)

typedef struct hd_proxy_hdr_s {
    unsigned version;      /* 1 or 2 */
    unsigned is_local : 1; /* no client address given: keep the socket's (LOCAL, UNKNOWN...) */
    hd_ip_t src;           /* the client (when !is_local) */
    hd_ip_t dst;           /* the address the client connected to (when !is_local) */
} hd_proxy_hdr_t;

/*
 * Parses the header at the start of data[0..len), which may hold more (the client's first
 * bytes) or less (the rest has not arrived). Returns:
 *   > 0       the header's length: it is complete, *out is filled;
 *   0         not complete yet and nothing wrong so far: call again with more bytes (a header
 *             is never longer than HD_PROXY_MAX, so a caller holding that many gets an answer);
 *   HD_EPROXY not a valid header (*why says what: no signature, bad address, v2 length over
 *             HD_PROXY_V2_MAX_LEN, ...); it is refused as soon as the first wrong byte is seen.
 * Never reads past data[len).
 */
int hd_proxy_parse(const void *data, size_t len, hd_proxy_hdr_t *out, const char **why);

#endif
