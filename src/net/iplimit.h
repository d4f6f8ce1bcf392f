/* SPDX-License-Identifier: MIT */
/*
 * iplimit.h: the node's table of client addresses, for max_connections_per_ip and
 * connect_rate_per_ip. Workers share listeners, so a client's connections land on any worker:
 * the table is node-wide, in 16 shards each under its own mutex, touched once when a connection
 * is admitted and once when it is freed (the accept path; never per request or per message).
 *
 *   address -> shard (keyed hash) -> entry { open connections, token bucket, idle link }
 *
 * Keys: an IPv4 address, or an IPv6 address's /64 (one subscriber's usual allocation: a client
 * with a /64 would otherwise have 2^64 addresses to spread over).
 *
 * Bounded: an entry with connections exists because a counted connection exists (at most
 * max_connections of those); an entry with none is kept only while its token bucket has not
 * refilled, on its shard's idle list, oldest first, and at most HD_IPLIMIT_MAX_IDLE of them
 * node-wide: past that the oldest is dropped (that address's rate starts afresh). So a flood of
 * distinct addresses costs at most (max_connections + HD_IPLIMIT_MAX_IDLE) entries of about
 * 180 bytes (with their share of the hash table).
 */
#ifndef HERALD_NET_IPLIMIT_H
#define HERALD_NET_IPLIMIT_H

#include "herald/ipaddr.h"

#include <stddef.h>
#include <stdint.h>

#define HD_IPLIMIT_MAX_IDLE 16384

typedef struct hd_iplimit_s hd_iplimit_t;

hd_iplimit_t *hd_iplimit_new(void);
/* Frees the table and every entry (no connection may still be counted). */
void hd_iplimit_free(hd_iplimit_t *t);

/*
 * Admits a new connection from ip (family V4 or V6) at now_ms (any worker's loop time): with
 * max_conns (0: no limit) connections open from that address at most, and a token bucket of
 * `rate` per second (0: no limit) and depth `burst`. Returns 0 when admitted (the connection is
 * counted: hd_iplimit_release must follow once), HD_EIPCONNS when the address has max_conns
 * open, or HD_EIPRATE when its bucket is empty, with *retry_ms the time until a token is back.
 * A refused connection is not counted and takes no token.
 */
int hd_iplimit_admit(hd_iplimit_t *t, const hd_ip_t *ip, uint64_t now_ms, uint32_t max_conns,
                     uint32_t rate, uint32_t burst, uint64_t *retry_ms);
/* A counted connection from ip is gone. rate and burst: the limits of the moment. */
void hd_iplimit_release(hd_iplimit_t *t, const hd_ip_t *ip, uint64_t now_ms, uint32_t rate,
                        uint32_t burst);
/* Entries in the table now (any thread). */
size_t hd_iplimit_entries(const hd_iplimit_t *t);

#endif
