/* SPDX-License-Identifier: MIT */
/*
 * tickets.h: the embedded broker's store of single-use tickets (docs/auth.md), private to
 * src/broker. A ticket's claims wait under its key (hd_ticket_key) until it is taken, once, or
 * its ttl passes. One lock (the broker's) serializes every call; nothing here locks.
 *
 * Bounded: at most `limit` tickets (auth_max_tickets, given with each put so that a reload
 * applies at once) and max_bytes of entries, claims and bookkeeping included; a put past
 * either is refused (HD_ETICKETS), never made room for by dropping a ticket someone waits to
 * use. Expired tickets leave in expiry order (a min-heap): a put first sweeps what expired, and
 * the broker's timer sweeps once a second, so an idle store gives its memory back.
 */
#ifndef HERALD_BROKER_TICKETS_H
#define HERALD_BROKER_TICKETS_H

#include "herald/auth.h"
#include "herald/heap.h"
#include "herald/hmap.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hd_tstore_s {
    hd_hmap_t map;  /* key -> entry */
    hd_heap_t heap; /* entries by expiry */
    size_t n;       /* tickets held */
    size_t bytes;   /* what they take */
    size_t max_bytes;
} hd_tstore_t;

void hd_tstore_init(hd_tstore_t *t, size_t max_bytes);
void hd_tstore_dispose(hd_tstore_t *t);
/*
 * Stores data[0..len) (copied) under key (HD_TICKET_KEY_LEN characters) until expires_ms.
 * Returns 0, or HD_ETICKETS when limit tickets are held or max_bytes would be passed (nothing
 * stored), HD_EBADREQ when the key is already there (never, for random tickets).
 */
int hd_tstore_put(hd_tstore_t *t, const char *key, const char *data, size_t len,
                  uint64_t expires_ms, size_t limit, uint64_t now_ms);
/*
 * Removes the ticket under key and hands its claims to the caller (*data, malloc'd, *len).
 * Returns 0, or HD_ENOTFOUND (never stored, already taken, or expired at now_ms).
 */
int hd_tstore_take(hd_tstore_t *t, const char *key, uint64_t now_ms, char **data, size_t *len);
/* Drops the tickets whose expiry is at or before now_ms. */
void hd_tstore_expire(hd_tstore_t *t, uint64_t now_ms);

#endif
