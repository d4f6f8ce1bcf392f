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
 *   lifetime.c    how long a stream stays authorized (hd_tp_life_t)
 *   presence.c    a subscriber as a presence member, the ?presence= query (docs/chat.md)
 */
#ifndef HERALD_TRANSPORT_H
#define HERALD_TRANSPORT_H

#include <jansson.h>

#include "herald/auth.h"
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
/*
 * The one publishing check. With publish_key set, the request needs one of its keys as
 * "Authorization: Bearer KEY": none -> 401 (WWW-Authenticate: Bearer), another -> 403. With no
 * key, only a local client (hd_tp_peer_is_local) may publish; anyone else -> 403 naming
 * publish_key. Returns 0, or -1 after answering.
 */
int hd_tp_publish_allowed(hd_req_t *req);
/*
 * 0 if token[0..len) is one of keys (token may be NULL: no match), else -1. The time taken does
 * not depend on the token's content or on which key it matches (constant-time comparison of
 * every key, over HD_KEY_MAX bytes each).
 */
int hd_tp_key_match(const hd_strlist_t *keys, const char *token, size_t len);
/* The token of "Authorization: Bearer TOKEN" (scheme case-insensitive), or NULL. */
const char *hd_tp_bearer(const hd_req_t *req, size_t *len);
/*
 * 1 if the client is this host itself: the client's address (the socket's peer, or on a
 * proxy_protocol listener the client the PROXY header names: hd_req_client_ip) is a loopback
 * address (or the socket a Unix socket) and the request carries none of X-Forwarded-For,
 * Forwarded, X-Real-IP (a proxy on this host relaying someone else), Origin or Sec-Fetch-Site
 * (a browser on this host acting for a web page, which may have rebound its own name to
 * 127.0.0.1). The one rule behind
 * "no publish_key: local clients only" and "no admin_key: local clients only".
 */
int hd_tp_peer_is_local(const hd_req_t *req);
/* Answers a request the broker could not serve: its status, and for 503 a jittered
 * Retry-After so refused clients do not come back all at once. */
void hd_tp_respond_failure(hd_req_t *req, int err);
/* A pseudo-random number in [0, n) for jitter. */
uint32_t hd_tp_jitter(uint32_t n);

/* ---- authorization (authz.c, docs/auth.md) ---- */

/* What a request proved. The all-zero value is anonymous. */
typedef struct hd_tp_cred_s {
    hd_identity_t *id;       /* a verified token's identity (one reference), or NULL */
    unsigned is_backend : 1; /* Authorization: Bearer carried the publish key */
} hd_tp_cred_t;

/*
 * Reads a request's credential when auth is on (conf->auth): Authorization: Bearer with the
 * publish key (the backend), else a token from Authorization: Bearer or ?token=, verified.
 * Returns 0 with cred set (all zero: anonymous, or auth off), or -1 after answering 401 with
 * a JSON reason (a token that does not verify, an expired one: code "token_expired").
 */
int hd_tp_credential(hd_req_t *req, hd_tp_cred_t *cred);
/*
 * The same for a request that opens a connection (polls, SSE, WebSocket handshakes), which may
 * also carry a single-use ticket (?ticket=, alone: with a token too -> 401). A ticket is taken
 * from the broker asynchronously: this returns -1 at once with the request deferred, and the
 * route's handler is run again later (hd_http_redispatch) with the ticket's identity, which this
 * then returns (0); a malformed, unknown, used or expired ticket is answered 401, a broker that
 * cannot answer 503. So -1 means, as for hd_tp_credential: return, the request is taken care of
 * (free what the handler made, touch nothing else). A ticket is spent by its first use even if
 * the connect is then refused (403).
 */
int hd_tp_connect_credential(hd_req_t *req, hd_tp_cred_t *cred);
void hd_tp_cred_dispose(hd_tp_cred_t *cred);
/*
 * hd_auth_check for the request's credential (the backend passes everything). Returns 0, or -1
 * after answering 401 (a token would help) or 403 (not allowed) with a JSON reason.
 */
int hd_tp_authorize(hd_req_t *req, const hd_tp_cred_t *cred, const char *channel, size_t len,
                    hd_auth_action_t action);
/*
 * The HTTP publish check of one channel once hd_tp_credential ran (auth on): the backend passes
 * (a publish key; without publish_key, a local client without a token, as with auth off);
 * otherwise the channel's rule decides (publish=...). 0, or -1 after answering 401/403.
 */
int hd_tp_publish_authorize(hd_req_t *req, const hd_tp_cred_t *cred, const char *channel,
                            size_t len);
/* Verifies a token (every credential goes through here: connects, the /ws auth message,
 * in-place refreshes) on worker w, through w's cache of verified tokens (auth_cache_entries,
 * docs/auth.md): 0 with *out, or HD_EUNAUTHENTICATED / HD_ETOKENEXPIRED / HD_ETOKENREVOKED
 * (its sub or jti is in the revoked set, hd_auth_revoked, asked whether the cache answered or
 * not) with a reason in why (never the token).
 */
int hd_tp_verify_token(hd_worker_t *w, const hd_conf_t *conf, const char *token, size_t len,
                       hd_identity_t **out, char *why, size_t whylen);
/* Answers 401 or 403: {"error":reason,"code":C,"status":N}, C one of "unauthenticated",
 * "token_expired", "token_revoked", "forbidden"; 401 with WWW-Authenticate: Bearer. err is the
 * HD_E* code behind it. */
void hd_tp_respond_auth(hd_req_t *req, int status, const char *reason, int err);
/*
 * How the transports say that an operator's order (conn.h hd_kick_t) ended a connection: the
 * JSON code ("token_revoked", "disconnected"), a reason sentence, the HD_E* error (its WebSocket
 * close code: 4002 token revoked, 4009 disconnected), and the answer of a held HTTP request:
 * 401 {"code":"token_revoked"} with WWW-Authenticate, or 409 {"code":"disconnected"}.
 */
const char *hd_tp_kick_code(const hd_kick_t *k);
const char *hd_tp_kick_reason(const hd_kick_t *k);
int hd_tp_kick_err(const hd_kick_t *k);
void hd_tp_kick_respond(hd_req_t *req, const hd_kick_t *k);
/* The stamp of a client's publish: {"sub":..,"info":{..}} of its identity (malloc'd), or NULL
 * when there is nothing to say (no identity, or neither sub nor info). */
char *hd_tp_publisher_json(const hd_identity_t *id);

/* ---- the authorize hook (hook.c, docs/webhooks.md "Backend hooks") ---- */

#define HD_TP_HOOK_MAX_CHANNELS 256 /* channels of one connect a question may name */

/*
 * hd_tp_authorize (the channel rules) for each of names[0..n) of a connect, then, for the
 * channels whose rule says subscribe=hook, the application's backend: the request is deferred
 * while the hooks thread asks it, and the route's handler runs again (hd_http_redispatch) once
 * it allowed, with its identity (or the request's own) as the credential
 * (hd_tp_connect_credential returns it) and this returning 0 for those channels. A refusal of a
 * rule is answered 401/403 as hd_tp_authorize; the backend's refusal 403 (or 401) with its
 * reason; no usable answer within the hook's timeout (down, 5xx, not JSON) under on_error=deny
 * 503 {"code":"backend_unavailable"} with Retry-After, under on_error=allow as allowed; more
 * than max_pending questions waiting on this worker 503 {"code":"backend_busy"}. With the
 * hook's connect=on, a connect with no subscribe=hook channel (n may be 0: a /ws connect) asks
 * too, one question with action "connect" and no channel, answered the same ways. transport
 * names the transport for the backend ("poll", "longpoll", "sse", "websocket"). Returns 0 (go
 * on), or -1 (answered or deferred: return, as for hd_tp_connect_credential).
 */
int hd_tp_authorize_channels(hd_req_t *req, const hd_tp_cred_t *cred,
                             const char (*names)[HD_CHANNEL_MAX + 1], size_t n,
                             hd_auth_action_t action, const char *transport);
/* What the request says about its client, for the backend: {"client_ip":..,"headers":{..},
 * "cookies":{..}} with the hook's forward_headers and forward_cookies (a new object). */
json_t *hd_tp_hook_context(const hd_req_t *req, const hd_hook_def_t *def);
/* The question (malloc'd compact JSON, its length in *len; NULL if it cannot be written):
 * {"type":"authorize","data":{"action","transport","channels","identity",<ctx's members>}};
 * action is "connect" when n is 0, else "history" or "subscribe" from action. The
 * same question is the same bytes (the hooks thread caches and joins calls on them). */
char *hd_tp_hook_question(hd_auth_action_t action, const char *transport,
                          const char *const *channels, const size_t *lens, size_t n,
                          const hd_identity_t *id, json_t *ctx, size_t *len);
/* 1 when w may ask one more question (fewer than the hook's max_pending waiting), else 0
 * (counted as refused busy). */
int hd_tp_hook_ask_room(hd_worker_t *w, const hd_hook_def_t *def);
/* 503 with Retry-After {"error":reason,"code":"backend_busy"|"backend_unavailable"}. */
void hd_tp_respond_backend(hd_req_t *req, int busy, const char *reason);

/* ---- the notify hook (notify.c, docs/webhooks.md "Backend hooks") ---- */

/* A stream opened on c (after its credential and subscriptions were settled: c->identity is
 * its), from client, with channels[0..n) (none for /ws). Nothing when the hook is off. */
void hd_tp_notify_connect(const hd_conn_t *c, const hd_ip_t *client, const char *transport,
                          const char *const *channels, const size_t *lens, size_t n);
/* A /ws subscription went live (subscribed 1) or ended while the connection stays (0). */
void hd_tp_notify_channel(const hd_conn_t *c, int subscribed, const char *channel, size_t len);
/* The stream on c closed (every subscription of it ended with it). */
void hd_tp_notify_disconnect(const hd_conn_t *c);

/* ---- presence (presence.c, docs/chat.md) ---- */

/* The presence member a stream subscription of conn on channel makes (a new one for
 * hd_hub_presence), or NULL: the channel's rule has no presence=on, or it is the backend. An
 * identity with a sub is that user; without one, the connection itself. */
hd_member_t *hd_tp_member(const hd_conf_t *conf, const hd_conn_t *conn, int is_backend,
                          const char *channel, size_t len);
/* ?presence=1|on|true (0|off|false, or absent: no) on a stream's request: 1 to send join and
 * leave events, 0 not to, or -1 after answering 400 (another value, or one of channels[0..n)
 * without presence). */
int hd_tp_presence_query(hd_req_t *req, const char (*channels)[HD_CHANNEL_MAX + 1], size_t n);

/* ---- staying authorized (lifetime.c, docs/auth.md) ---- */

/*
 * The auth events of a stream, in wall-clock milliseconds (0: none): when to tell the client
 * to refresh (auth_refresh_before ahead of exp), and when its identity runs out (exp +
 * auth_clock_skew). The all-zero value has no event. A transport keeps one in its stream state
 * and folds hd_tp_life_wait_ms into its connection's one timer (hd_conn_set_timeout).
 */
typedef struct hd_tp_life_s {
    int64_t refresh_at_ms;
    int64_t expire_at_ms;
} hd_tp_life_t;

enum { HD_TP_LIFE_NONE = 0, HD_TP_LIFE_REFRESH, HD_TP_LIFE_EXPIRED };

/*
 * Sets life for identity id (NULL, or no exp: no event) under conf's auth_expire_connections,
 * auth_refresh_before and auth_clock_skew. can_notify: the transport can tell its client to
 * refresh (SSE, /ws, herald.v1); otherwise only the expiry counts. Called again with the new
 * identity after a refresh.
 */
void hd_tp_life_set(hd_tp_life_t *life, const hd_conf_t *conf, const hd_identity_t *id,
                    int can_notify);
/* Milliseconds until life's next event (0: due now), UINT64_MAX when it has none. */
uint64_t hd_tp_life_wait_ms(const hd_tp_life_t *life);
/* What is due now: HD_TP_LIFE_EXPIRED (until reset), HD_TP_LIFE_REFRESH (once per token), or
 * HD_TP_LIFE_NONE. */
int hd_tp_life_due(hd_tp_life_t *life);

/*
 * Publishes msgs[0..n) (the references pass to the call) in order through the broker; done
 * runs on w's loop with err 0 and the messages' ids set, or an error. arg is the caller's.
 */
typedef void (*hd_tp_published_cb)(void *arg, int err, hd_message_t *const *msgs, size_t n);
void hd_tp_publish(hd_worker_t *w, hd_message_t **msgs, size_t n, hd_tp_published_cb done,
                   void *arg);

#endif
