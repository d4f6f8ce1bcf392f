/* SPDX-License-Identifier: MIT */
/*
 * access.c: who may reach what, checked once per request before routing (the HTTP layer's
 * guard, hd_http_set_guard), so a route added later under an admin path is guarded without
 * asking for it.
 *
 *   admin endpoints   GET /stats, /metrics, /channels, /channels/{channel}, /presence/{channel},
 *                     any DELETE, every path under /admin/, /auth/ticket: a listener marked
 *                     admin, or one of the
 *                     admin_key keys, or (no admin_key) a local client (hd_tp_peer_is_local)
 *   /auth/ticket      the admin credentials above, or one of the publish_key keys: a ticket
 *                     hands a browser a part of what the backend's key may do already
 *   admin listeners   serve the admin endpoints and /healthz, nothing else (404)
 *   CORS              the headers of SSE, polls and publishing, preflights (cors.c)
 *
 * Publishing has its own check (hd_tp_publish_allowed, publish_key), made by its handlers.
 */
#include "herald/api.h"

#include <string.h>

static int path_is(const hd_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static int path_under(const hd_req_t *req, const char *prefix)
{
    size_t n = strlen(prefix);
    return req->path_len >= n && memcmp(req->path, prefix, n) == 0;
}

int hd_api_is_admin_path(const hd_req_t *req)
{
    return req->method == HD_M_DELETE || path_is(req, "/stats") || path_is(req, "/metrics") ||
           path_is(req, "/channels") || path_under(req, "/channels/") ||
           path_under(req, "/presence/") || path_is(req, "/admin") || path_under(req, "/admin/") ||
           path_is(req, "/auth/ticket") || path_under(req, "/auth/ticket/");
}

static int on_admin_listener(const hd_req_t *req)
{
    return req->conn->is_admin_listener;
}

int hd_api_admin_ok(const hd_req_t *req)
{
    if (on_admin_listener(req))
        return 1;
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (conf->admin_keys.n == 0)
        return hd_tp_peer_is_local(req);
    size_t len = 0;
    const char *token = hd_tp_bearer(req, &len);
    return hd_tp_key_match(&conf->admin_keys, token, len) == 0;
}

#define ADMIN_LISTENER "a listener marked admin (listen ADDR:PORT admin)"

int hd_api_admin_allowed(hd_req_t *req)
{
    if (hd_api_admin_ok(req))
        return 0;
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (conf->admin_keys.n == 0) {
        hd_conn_log(HD_LOG_INFO, req->conn, "admin endpoint refused: not local, no admin_key");
        hd_http_respond_error(req, 403,
                              "admin endpoint: no admin_key is configured, so only a local client "
                              "(loopback, not through a proxy or a browser) or " ADMIN_LISTENER
                              " may use it");
    } else if (!hd_req_header(req, "authorization", NULL)) {
        static const char body[] = "{\"error\":\"admin endpoint: needs Authorization: Bearer "
                                   "<admin_key>, or " ADMIN_LISTENER "\",\"status\":401}";
        hd_http_respond(req, 401, "WWW-Authenticate: Bearer realm=\"herald admin\"\r\n",
                        "application/json", body, sizeof(body) - 1);
    } else {
        hd_conn_log(HD_LOG_INFO, req->conn, "admin endpoint refused: wrong admin key");
        hd_http_respond_error(
            req, 403, "admin endpoint: wrong admin key (admin_key); or use " ADMIN_LISTENER);
    }
    return -1;
}

/*
 * POST /auth/ticket: the backend, which holds a publish key (with which it may already publish
 * and subscribe anywhere: a ticket delegates a part of that to one browser), or whoever may use
 * the admin endpoints (an operator minting one by hand). Without publish_key it is the admin
 * rule alone (with no admin_key either: local clients, like publishing).
 */
static int ticket_allowed(hd_req_t *req)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    size_t len = 0;
    const char *token = hd_tp_bearer(req, &len);
    if (conf->publish_keys.n && token && hd_tp_key_match(&conf->publish_keys, token, len) == 0)
        return 0;
    if (conf->publish_keys.n == 0 || hd_api_admin_ok(req))
        return hd_api_admin_allowed(req);
    if (!token) {
        static const char body[] =
            "{\"error\":\"POST /auth/ticket: needs Authorization: Bearer <publish_key> (or "
            "<admin_key>)\",\"status\":401}";
        hd_http_respond(req, 401, "WWW-Authenticate: Bearer realm=\"herald\"\r\n",
                        "application/json", body, sizeof(body) - 1);
        return -1;
    }
    hd_conn_log(HD_LOG_INFO, req->conn, "ticket request refused: wrong key");
    hd_http_respond_error(
        req, 403, "POST /auth/ticket: wrong key (one of publish_key or admin_key is needed)");
    return -1;
}

/* The HTTP layer's guard (hd_http_guard_cb). */
static int guard(hd_req_t *req)
{
    if (path_is(req, "/auth/ticket"))
        return ticket_allowed(req);
    if (hd_api_is_admin_path(req))
        return hd_api_admin_allowed(req);
    if (on_admin_listener(req) && !path_is(req, "/healthz")) {
        hd_http_respond_error(req, 404,
                              "not served on an admin listener: it serves /stats, /metrics, "
                              "/channels, /admin/*, /auth/ticket and /healthz");
        return -1;
    }
    return hd_api_cors(req);
}

void hd_access_install(void)
{
    hd_http_set_guard(guard);
}
