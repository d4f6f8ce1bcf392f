/* SPDX-License-Identifier: MIT */
/*
 * api.h: the HTTP API that is not a push transport (src/api/): publishing and what operators
 * ask the node. It uses the transports' shared helpers (transport.h) and no transport.
 *
 *   publish.c     POST /pub/{channel}, POST /pub (batch)
 *   introspect.c  GET /channels/{channel}, GET /stats, GET /metrics
 *   ticket.c      POST /auth/ticket (single-use tickets, docs/auth.md)
 *   admin.c       POST /admin/revoke, POST /admin/disconnect (docs/auth.md)
 *   clientjs.c    GET /herald.js: the browser client (clients/js/herald.js), built in
 *   presence.c    GET /presence/{channel}: a page of a channel's presence members
 *   access.c      who may reach what: the admin endpoints, admin listeners (a guard run on
 *                 every request before routing), then CORS (cors.c)
 */
#ifndef HERALD_API_H
#define HERALD_API_H

#include "herald/transport.h"

void hd_publish_register(hd_router_t *r);
void hd_introspect_register(hd_router_t *r, hd_server_t *server);
void hd_ticket_register(hd_router_t *r);
void hd_admin_register(hd_router_t *r);
/*
 * GET /herald.js (and HEAD): clients/js/herald.js as embedded at build time, with a strong
 * ETag (its SHA-256), If-None-Match answered 304, Cache-Control and Access-Control-Allow-Origin:
 * * (a module script from another origin is a CORS request); 404 while client_js is off.
 */
void hd_clientjs_register(hd_router_t *r);
void hd_presence_register(hd_router_t *r);
/* The webhooks' admin endpoints under /admin/webhooks (webhooks.c, docs/webhooks.md). */
void hd_webhooks_register(hd_router_t *r);
/* Appends the webhook series to a /metrics answer (always, zero without webhooks). */
void hd_webhooks_metrics(hd_sbuf_t *sb);

/* Installs the access rules (access.c) as the HTTP layer's guard; once, at start. */
void hd_access_install(void);
/*
 * 1 if req is for an admin endpoint: GET /stats, /metrics, /channels, /channels/{channel}, any
 * DELETE, /admin and every path under /admin/, /auth/ticket (and under it). The guard holds
 * every such request to hd_api_admin_allowed before it is routed.
 */
int hd_api_is_admin_path(const hd_req_t *req);
/*
 * 1 if req may use the admin endpoints: it came in on a listener marked admin, or carries
 * "Authorization: Bearer KEY" with one of admin_key's keys (constant-time), or no admin_key is
 * set and the client is local (hd_tp_peer_is_local). Answers nothing.
 */
int hd_api_admin_ok(const hd_req_t *req);
/*
 * The same, answering a refusal: 0 if allowed; else -1 once answered, 403 (no admin_key and
 * not local; or a wrong key) or 401 with WWW-Authenticate: Bearer (admin_key set, none sent),
 * with a JSON reason naming admin_key and the admin listen flag. Handlers of admin endpoints
 * need not call it (the guard did); one that serves admin and other requests on one path may.
 */
int hd_api_admin_allowed(hd_req_t *req);
/*
 * CORS for SSE, polls and publishing under cors_origins (cors.c): sets the Access-Control-*
 * and Vary headers every response to req carries, and answers a preflight (OPTIONS with Origin
 * and Access-Control-Request-Method): 204 for an allowed origin, 403 otherwise. Returns 0 to
 * route req, or -1 once it answered. Other paths, or cors_origins off: 0, nothing set.
 */
int hd_api_cors(hd_req_t *req);

#endif
