/* SPDX-License-Identifier: MIT */
/*
 * ipaddr.h: client addresses, as the connection layer, the PROXY protocol parser, the
 * X-Forwarded-For resolution and the per-client limits see them; and address ranges (CIDR) for
 * trusted_proxies. Pure functions: no I/O, no allocation.
 *
 * An hd_ip_t is 20 bytes (a connection keeps one): the family (0 when unknown, for a socket that
 * is not TCP), the address in network order (IPv4 in the first 4 bytes) and the port. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is stored as the IPv4 address it maps, so a range
 * written as IPv4 matches it and one client is one key whichever way it arrived.
 */
#ifndef HERALD_IPADDR_H
#define HERALD_IPADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum { HD_IP_NONE = 0, HD_IP_V4 = 4, HD_IP_V6 = 6 };

typedef struct hd_ip_s {
    uint8_t family;    /* HD_IP_NONE, HD_IP_V4 or HD_IP_V6 */
    uint8_t bytes[16]; /* network order; IPv4 uses bytes[0..4) and the rest is zero */
    uint16_t port;     /* host order; 0 when unknown */
} hd_ip_t;

/* An address range: the addresses whose first `bits` bits are net's. */
typedef struct hd_cidr_s {
    hd_ip_t net; /* bits past the prefix are zero; port 0 */
    uint8_t bits;
} hd_cidr_t;

typedef struct hd_cidr_list_s {
    hd_cidr_t *v;
    size_t n;
} hd_cidr_list_t;

/* Longest text hd_ip_format writes, with its NUL: "[ipv6]:65535". */
#define HD_IP_TEXT_MAX 56

/*
 * Fills ip from a socket address (AF_INET or AF_INET6, mapped IPv4 made IPv4). Any other family
 * gives HD_IP_NONE. Returns 0, or UV_EAFNOSUPPORT for another family.
 */
int hd_ip_from_sockaddr(hd_ip_t *ip, const struct sockaddr *sa);
/*
 * Parses a numeric address s[0..len): "192.0.2.1", "2001:db8::1", or either with a port
 * ("192.0.2.1:443", "[2001:db8::1]:443") when with_port (a port is then optional). No names, no
 * zone ids. Returns 0, or -1 (ip left zeroed).
 */
int hd_ip_parse(hd_ip_t *ip, const char *s, size_t len, int with_port);
/* Parses a port s[0..len): decimal 0..65535, 1 to 5 digits, nothing else. Returns 0 with *out
 * set, or -1 (*out untouched). */
int hd_ip_parse_port(const char *s, size_t len, uint16_t *out);
/* "192.0.2.1" or "2001:db8::1" ("-" for HD_IP_NONE) into out; returns the length. */
size_t hd_ip_format(const hd_ip_t *ip, char *out, size_t outlen);
/* The same with the port: "192.0.2.1:443", "[2001:db8::1]:443" (without a port when it is 0,
 * as for an address from X-Forwarded-For; "-" for HD_IP_NONE). */
size_t hd_ip_format_port(const hd_ip_t *ip, char *out, size_t outlen);
/* 1 when a and b are the same address (ports ignored). */
int hd_ip_equal(const hd_ip_t *a, const hd_ip_t *b);
/* 1 for 127.0.0.0/8 and ::1, else 0. */
int hd_ip_is_loopback(const hd_ip_t *ip);

/*
 * Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6; no brackets); an address alone is a /32 or /128.
 * Bits set past the prefix ("10.0.0.1/8") are refused: they are most often a typo for another
 * range. Returns 0, or -1 with why set.
 */
int hd_cidr_parse(hd_cidr_t *c, const char *s, char *why, size_t whylen);
/* 1 when ip is in c. */
int hd_cidr_match(const hd_cidr_t *c, const hd_ip_t *ip);
/* 1 when ip is in any range of the list. */
int hd_cidr_list_match(const hd_cidr_list_t *l, const hd_ip_t *ip);

/*
 * The client behind trusted proxies (X-Forwarded-For, RFC 7239 Forwarded: for=). `values` are
 * the header's values in the order they came (several header lines make one list), each a
 * comma-separated list of addresses, the right-most added by the nearest proxy. `is_forwarded`:
 * the values are Forwarded elements ("for=192.0.2.1;proto=https, for=\"[2001:db8::1]:80\"")
 * rather than X-Forwarded-For addresses.
 *
 * Starting from `peer` (the connection's address), as long as the current address is trusted
 * the next address to the left is taken; the walk stops at the first address that is not
 * trusted (the client), at the left end, or at an entry that is not an address ("unknown",
 * an obfuscated identifier, garbage), where the last address found stands. An untrusted peer
 * is its own client whatever the headers say. Writes the client into *out (its port: the
 * header's when given, else 0 unless it is the peer).
 */
void hd_ip_forwarded_client(const hd_ip_t *peer, const hd_cidr_list_t *trusted,
                            const char *const *values, const size_t *lens, size_t n_values,
                            int is_forwarded, hd_ip_t *out);

#endif
