/* SPDX-License-Identifier: MIT */
/*
 * hook_def.h: the application's backend as the conf's `authorize_hook` directive defines it
 * (docs/webhooks.md, "Backend hooks"):
 *
 *     authorize_hook URL secret=whsec_..[,whsec_..] [timeout=2s] [cache=0] [cache_size=10000]
 *                    [on_error=deny|allow] [forward_headers=NAME,..] [forward_cookies=NAME,..]
 *                    [max_pending=1000] [concurrency=64] [connect=off]
 *
 * Which channels it decides is said by channel_rule (subscribe=hook); with connect=on it also
 * decides every connect that names no such channel (a /ws connect, any other channel). The value's
 * syntax and its parsed form, shared by the conf loader (which checks the line) and the hooks
 * thread and the transports (which use it); this module depends on neither. Pure: no I/O, no
 * allocation. Flat, so two conf snapshots compare with memcmp.
 */
#ifndef HERALD_HOOK_DEF_H
#define HERALD_HOOK_DEF_H

#include <stddef.h>
#include <stdint.h>

#include "herald/webhook_def.h"

#define HD_HOOK_MAX_FORWARD 16 /* forward_headers= and forward_cookies= names, each */
#define HD_HOOK_NAME_MAX    64 /* bytes of one header or cookie name */

typedef struct hd_hook_def_s {
    hd_webhook_def_t ep;  /* URL and secrets (name "authorize"; patterns and events unused) */
    uint64_t timeout_ms;  /* the whole call, connect included: 2s */
    uint64_t cache_ms;    /* answers kept this long (0: never) */
    uint32_t cache_size;  /* answers kept at most (node) */
    uint32_t max_pending; /* authorizations waiting per worker; past it: 503 */
    uint32_t concurrency; /* calls in flight to the backend (node) */
    unsigned allow_on_error : 1; /* on_error=allow: a backend that fails lets the request in */
    unsigned ask_connect : 1;    /* connect=on: a connect with no subscribe=hook channel asks */
    char headers[HD_HOOK_MAX_FORWARD][HD_HOOK_NAME_MAX + 1]; /* lowercase */
    size_t n_headers;
    char cookies[HD_HOOK_MAX_FORWARD][HD_HOOK_NAME_MAX + 1];
    size_t n_cookies;
} hd_hook_def_t;

/*
 * Parses one authorize_hook line's words (argv[0] the URL, then key=value options) into *out
 * (zeroed first). Returns 0, or -1 with a one-line reason in why (never a secret): the URL or
 * secret as for webhook (hd_webhook_def_parse), an unknown or repeated option, a duration or
 * number out of range (timeout 10ms..60s, cache 0..24h, cache_size 1..1000000, max_pending
 * 1..1000000, concurrency 1..1024), on_error neither deny nor allow, connect neither on nor
 * off, a header or cookie name
 * that is not a token (or more than 16).
 */
int hd_hook_def_parse(hd_hook_def_t *out, int argc, const char *const *argv, char *why,
                      size_t whylen);

/*
 * The notify hook (`notify_hook`): connection and subscription events sent to the backend in
 * batches, at least once while the process lives (docs/webhooks.md, "Backend hooks"):
 *
 *     notify_hook URL secret=whsec_..[,whsec_..] [events=connect,disconnect,subscribe,
 *                 unsubscribe] [batch=100] [flush=1s] [queue_size=100000] [max_memory=64m]
 *                 [timeout=5s]
 */
enum {
    HD_NOTIFY_CONNECT = 1 << 0,
    HD_NOTIFY_DISCONNECT = 1 << 1,
    HD_NOTIFY_SUBSCRIBE = 1 << 2,
    HD_NOTIFY_UNSUBSCRIBE = 1 << 3,
};
typedef struct hd_notify_def_s {
    hd_webhook_def_t ep;       /* URL and secrets (name "notify") */
    unsigned events;           /* HD_NOTIFY_*: all when not given */
    uint32_t batch;            /* events per request at most: 100 (1..10000) */
    uint64_t flush_ms;         /* an event waits at most this long for its batch to fill: 1s */
    uint32_t queue_size;       /* events waiting (node); past it new ones are dropped: 100000 */
    uint64_t max_memory_bytes; /* what the events waiting hold (node); past it dropped: 64m */
    uint64_t timeout_ms;       /* one request, connect included: 5s */
} hd_notify_def_t;

/* Parses one notify_hook line as hd_hook_def_parse does: 0, or -1 with a reason in why (an
 * unknown or repeated option, an unknown event, a number or duration out of range: batch
 * 1..10000, flush 0..60s, queue_size 1..10000000, max_memory 64k..16g, timeout 10ms..60s). */
int hd_notify_def_parse(hd_notify_def_t *out, int argc, const char *const *argv, char *why,
                        size_t whylen);

#endif
