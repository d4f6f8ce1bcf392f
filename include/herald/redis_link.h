/* SPDX-License-Identifier: MIT */
/*
 * redis_link.h: what every hiredis connection of herald does the same way, whoever owns it (the
 * Redis bridge's three, src/broker/redis_conn.c; the webhook sender's and the notify hook's,
 * src/hooks/rconn.c): opening an async context on a libuv loop, dropping it, asking its socket
 * for an error hiredis's libuv adapter drops, its CLIENT SETNAME, the reconnect backoff, the
 * timeout tick and the message of a failed set-up step. It knows nothing of either owner; they
 * keep their own state, callbacks and logs.
 */
#ifndef HERALD_REDIS_LINK_H
#define HERALD_REDIS_LINK_H

#include "herald/redis_url.h"

#include <hiredis/async.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Reconnects wait 100 ms, doubling to 5 s (hd_redis_link_backoff_ms). */
#define HD_REDIS_BACKOFF_MIN_MS 100
#define HD_REDIS_BACKOFF_MAX_MS 5000

/*
 * Opens an async context to addr on loop (a unix socket when addr->path is set), with data as
 * its ac->data and the two callbacks. Returns it, or NULL with "cannot connect: REASON" or
 * "cannot watch the connection" in why (nothing is left open then).
 */
redisAsyncContext *hd_redis_link_open(uv_loop_t *loop, const hd_redis_addr_t *addr, void *data,
                                      redisConnectCallback *on_connect,
                                      redisDisconnectCallback *on_disconnect, char *why,
                                      size_t whylen);

/* Frees ac (NULL: nothing) unless hiredis is already disconnecting or freeing it; the answers
 * it still owed come back NULL, inside this call. */
void hd_redis_link_drop(redisAsyncContext *ac);

/*
 * The pending error of ac's socket (0: none, or no socket). hiredis's libuv adapter drops poll
 * errors (libuv reports POLLERR as a status the adapter ignores, and stops the poll), so a
 * refused connect or a reset connection would otherwise wait for redis_timeout: the owners' tick
 * asks the socket instead.
 */
int hd_redis_link_socket_error(const redisAsyncContext *ac);

/* Writes the CLIENT SETNAME of a connection, "herald:<host>:<pid>:<role>" (the host name's
 * bytes outside '!'..'~' as '_'), into buf[len]. */
void hd_redis_link_client_name(char *buf, size_t len, const char *role);

/* The wait before reconnect number attempts + 1 (0 for the first): 100 ms doubling to 5 s, drawn
 * in [d/2, d] with the xorshift state *rng (not 0), which it advances. */
uint64_t hd_redis_link_backoff_ms(unsigned attempts, uint64_t *rng);

/* How often the owner's timer looks at its connections: a quarter of redis_timeout, within
 * 25..250 ms. */
uint64_t hd_redis_link_tick_ms(uint64_t timeout_ms);

/* Writes why a set-up step (what: "AUTH", "SELECT", "FUNCTION LOAD", ...) failed with the error
 * answer err: "WHAT failed: ERR" (the first 200 bytes), with a hint when FUNCTION LOAD is an
 * unknown command (Redis before 7). */
void hd_redis_link_setup_failed(char *why, size_t whylen, const char *what, const char *err);

#endif
