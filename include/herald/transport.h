/* SPDX-License-Identifier: MIT */
/*
 * transport.h: what the push transports share, and how each registers its routes. Each
 * transport is one file in src/transport/ behind the hub's subscriber interface (pubsub.h);
 * transports never include each other. The publishing and introspection API (api.h) uses the
 * shared helpers below too.
 *
 *   poll.c        GET /poll/{channel} (short poll), GET /lp/{channel} (long poll)
 *   sse.c         GET /sse/{channel}, GET /sse?channel=a&channel=b
 *   websocket.c   GET /ws/{channel}, GET /ws (JSON protocol); the rest of it in ws_*.c
 */
#ifndef HERALD_TRANSPORT_H
#define HERALD_TRANSPORT_H

#include "herald/http.h"
#include "herald/pubsub.h"

void hd_poll_register(hd_router_t *r);
void hd_sse_register(hd_router_t *r);
void hd_ws_register(hd_router_t *r);

/*
 * The channel named by the path after prefix_len bytes (no further '/'), percent-decoded into
 * out (HD_CHANNEL_MAX + 1 bytes). Returns its length, or -1 after answering 400 (bad name).
 */
int hd_tp_channel_from_path(hd_req_t *req, size_t prefix_len, char *out);
/* Parses an id given by a client. Returns 0, or -1 after answering 400. */
int hd_tp_parse_id(hd_req_t *req, const char *what, const char *s, size_t len, uint64_t *epoch,
                   uint64_t *seq);
/* The one publishing check: publish_key. Returns 0, or -1 after answering 401/403. */
int hd_tp_publish_allowed(hd_req_t *req);
/* The same check for a bearer token given another way (e.g. a WebSocket message). 0 or -1. */
int hd_tp_publish_key_ok(const hd_conf_t *conf, const char *token, size_t len);
/* Answers a request the broker could not serve: its status, and for 503 a jittered
 * Retry-After so refused clients do not come back all at once. */
void hd_tp_respond_failure(hd_req_t *req, int err);
/* A pseudo-random number in [0, n) for jitter. */
uint32_t hd_tp_jitter(uint32_t n);

/*
 * Publishes msgs[0..n) (the references pass to the call) in order through the broker; done
 * runs on w's loop with err 0 and the messages' ids set, or an error. arg is the caller's.
 */
typedef void (*hd_tp_published_cb)(void *arg, int err, hd_message_t *const *msgs, size_t n);
void hd_tp_publish(hd_worker_t *w, hd_message_t **msgs, size_t n, hd_tp_published_cb done,
                   void *arg);

#endif
