/* SPDX-License-Identifier: MIT */
/*
 * authz.c: what every transport and the publish API ask about a request's credential
 * (docs/auth.md): the backend key or a connection token (Authorization: Bearer, ?token=),
 * verified against the configuration's policy (conf->auth), then the one decision
 * hd_auth_check, with 401/403 answers that carry a JSON reason. With auth off (no key, no
 * channel_rule) nothing here reads the request: every check passes, as before.
 *
 * A connect may carry a single-use ticket instead (?ticket=, docs/auth.md): it is taken from
 * the broker (HD_BREQ_TICKET_TAKE: once, on any node), which answers later, so the request
 * waits (hd_http_defer) without blocking the loop, and once the ticket's claims came back the
 * route's handler runs again from the start (hd_http_redispatch) and finds the identity in
 * the request:
 *
 *   handler -> hd_tp_connect_credential: ?ticket= -> defer, TICKET_TAKE -> return -1
 *   broker reply (worker's loop): claims -> req->proven_id_ -> hd_http_redispatch
 *     handler -> hd_tp_connect_credential: takes req->proven_id_ -> 0 -> authorize as usual
 */
#include "herald/transport.h"

#include <jansson.h>

#include <string.h>
#include <strings.h>
#include <time.h>

/* 1 when the query has a parameter called name (whatever its value). */
static int has_param(const hd_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    const char *p = req->query, *end = p ? p + req->query_len : NULL;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        if ((size_t)(stop - p) >= nl && memcmp(p, name, nl) == 0 &&
            ((size_t)(stop - p) == nl || p[nl] == '='))
            return 1;
        p = stop + 1;
    }
    return 0;
}

int hd_tp_verify_token(hd_worker_t *w, const hd_conf_t *conf, const char *token, size_t len,
                       hd_identity_t **out, char *why, size_t whylen)
{
    int hit = 0;
    if (!w->auth_cache && conf->auth_cache_entries > 0)
        w->auth_cache = hd_auth_cache_new();
    hd_auth_verify_t v = hd_auth_cache_verify(w->auth_cache, conf->auth, token, len,
                                              (int64_t)time(NULL), conf->auth_cache_entries,
                                              conf->auth_cache_bytes, out, &hit, why, whylen);
    if (w->auth_cache) {
        if (hit)
            HD_STAT_INC(w, auth_cache_hits);
        else
            HD_STAT_INC(w, auth_cache_misses);
        __atomic_store_n(&w->stats.auth_cache_entries, hd_auth_cache_count(w->auth_cache),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&w->stats.auth_cache_bytes, hd_auth_cache_bytes(w->auth_cache),
                         __ATOMIC_RELAXED);
    }
    switch (v) {
    case HD_AUTH_VERIFIED:
        /* Revoked (POST /admin/revoke): refused like a bad token until the revocation expires. */
        if (hd_auth_revoked(hd_identity_sub(*out), hd_identity_jti(*out))) {
            hd_identity_unref(*out);
            *out = NULL;
            snprintf(why, whylen, "token revoked");
            return HD_ETOKENREVOKED;
        }
        return 0;
    case HD_AUTH_EXPIRED:
        return HD_ETOKENEXPIRED;
    default:
        return HD_EUNAUTHENTICATED;
    }
}

void hd_tp_respond_auth(hd_req_t *req, int status, const char *reason, int err)
{
    char body[384], hdr[160];
    const char *code = status == 403             ? "forbidden"
                       : err == HD_ETOKENEXPIRED ? "token_expired"
                       : err == HD_ETOKENREVOKED ? "token_revoked"
                                                 : "unauthenticated";
    /* The reasons are static sentences or libjwt-free text of verify.c: no quotes to escape,
     * but be safe with anything that is not plain ASCII. */
    char clean[256];
    size_t n = 0;
    for (const char *p = reason ? reason : hd_strerror(err); *p && n + 1 < sizeof(clean); p++)
        clean[n++] = (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? *p : '?';
    clean[n] = '\0';
    int len = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"code\":\"%s\",\"status\":%d}",
                       clean, code, status);
    if (status == 401)
        snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Bearer realm=\"herald\"%s\r\n",
                 err == HD_ETOKENEXPIRED || err == HD_EUNAUTHENTICATED || err == HD_ETOKENREVOKED
                     ? ", error=\"invalid_token\""
                     : "");
    hd_http_respond(req, status, status == 401 ? hdr : NULL, "application/json", body, (size_t)len);
}

/* ---- tickets ---- */

/* A request waiting for its ticket's answer; d is NULL once the request is gone (aborted) or
 * answered (timed out), and the answer then only frees this. */
typedef struct ticket_wait_s {
    hd_deferred_t *d;
} ticket_wait_t;

static void ticket_on_abort(hd_deferred_t *d)
{
    ticket_wait_t *tw = d->data;
    tw->d = NULL;
}

static void ticket_on_timeout(hd_deferred_t *d)
{
    ticket_wait_t *tw = d->data;
    hd_req_t *req = d->req;
    tw->d = NULL;
    hd_conn_log(HD_LOG_INFO, req->conn, "ticket: no answer from the broker in time");
    hd_http_respond_error(req, 503, "the ticket could not be checked in time (broker busy); retry");
}

static void on_ticket_taken(hd_worker_t *w, hd_breq_t *r)
{
    ticket_wait_t *tw = r->cookie;
    hd_deferred_t *d = tw->d;
    free(tw);
    if (r->err == 0)
        HD_STAT_INC(w, tickets_used); /* spent, even if its client left meanwhile */
    else if (r->err == HD_ENOTFOUND)
        HD_STAT_INC(w, tickets_refused_invalid);
    if (!d) {
        hd_breq_free(r);
        return;
    }
    hd_req_t *req = d->req;
    d->data = NULL;
    d->on_abort = NULL;
    d->on_timeout = NULL;
    if (r->err == HD_ENOTFOUND) {
        hd_conn_log(HD_LOG_INFO, req->conn, "ticket refused: unknown, already used or expired");
        hd_tp_respond_auth(req, 401, "ticket unknown, already used or expired",
                           HD_EUNAUTHENTICATED);
    } else if (r->err) {
        hd_tp_respond_failure(req, r->err);
    } else {
        char why[160];
        hd_identity_t *id = NULL;
        if (hd_identity_from_json(&id, r->data, r->data_len, why, sizeof(why)) < 0) {
            /* Only what POST /auth/ticket checked is ever stored: a store that lost it. */
            hd_conn_log(HD_LOG_WARN, req->conn, "ticket with unusable claims: %s", why);
            hd_tp_respond_auth(req, 401, "ticket claims unusable", HD_EUNAUTHENTICATED);
        } else if (hd_auth_revoked(hd_identity_sub(id), hd_identity_jti(id))) {
            /* A ticket vouches for a user like a token: a revoked sub or jti is refused. */
            hd_identity_unref(id);
            hd_conn_log(HD_LOG_INFO, req->conn, "ticket refused: token revoked");
            hd_tp_respond_auth(req, 401, "token revoked", HD_ETOKENREVOKED);
        } else {
            hd_identity_unref(req->proven_id_);
            req->proven_id_ = id;
            hd_http_redispatch(d);
        }
    }
    hd_breq_free(r);
}

/*
 * Spends the ticket t[0..len): asks the broker to take it and defers the request, whose handler
 * runs again with the identity once it comes back. Returns -1 (the request is answered or will
 * be).
 */
static int take_ticket(hd_req_t *req, const char *t, int len)
{
    hd_worker_t *w = req->conn->worker;
    if (len < 0 || !hd_ticket_valid(t, (size_t)len)) {
        HD_STAT_INC(w, tickets_refused_invalid);
        hd_conn_log(HD_LOG_INFO, req->conn, "ticket refused: malformed");
        hd_tp_respond_auth(req, 401, "malformed ticket (32 base64url characters expected)",
                           HD_EUNAUTHENTICATED);
        return -1;
    }
    char key[HD_TICKET_KEY_LEN + 1];
    hd_ticket_key(t, key);
    ticket_wait_t *tw = hd_calloc(1, sizeof(*tw));
    tw->d = hd_http_defer(req);
    tw->d->data = tw;
    tw->d->on_abort = ticket_on_abort;
    tw->d->on_timeout = ticket_on_timeout;
    hd_http_defer_timeout(tw->d, hd_worker_conf(w)->auth_timeout_ms);
    hd_breq_t *r = hd_breq_new(HD_BREQ_TICKET_TAKE, w, key, HD_TICKET_KEY_LEN);
    r->reply_cb = on_ticket_taken;
    r->cookie = tw;
    hd_broker_submit(r);
    return -1;
}

/* The credential of a request; tickets are taken only when is_connect. */
static int credential(hd_req_t *req, hd_tp_cred_t *cred, int is_connect)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    char query_token[HD_AUTH_MAX_TOKEN + 1], why[160];
    const char *tok;
    size_t len = 0;

    memset(cred, 0, sizeof(*cred));
    if (!hd_auth_enabled(conf->auth))
        return 0;
    if (req->proven_id_ || req->is_proven_) { /* run again after its ticket or hook answered */
        cred->id = req->proven_id_;
        req->proven_id_ = NULL;
        req->is_proven_ = 0;
        return 0;
    }
    tok = hd_tp_bearer(req, &len);
    if (tok && len == 0)
        tok = NULL;
    if (has_param(req, "ticket")) {
        if (!is_connect) {
            hd_tp_respond_auth(req, 401,
                               "a ticket opens a connection (poll, SSE, WebSocket); publish with "
                               "a token or the publish key",
                               HD_EUNAUTHENTICATED);
            return -1;
        }
        if (tok || has_param(req, "token")) {
            hd_tp_respond_auth(req, 401, "give one credential: a ticket or a token, not both",
                               HD_EUNAUTHENTICATED);
            return -1;
        }
        char t[HD_TICKET_LEN + 1];
        return take_ticket(req, t, hd_req_query(req, "ticket", t, sizeof(t)));
    }
    if (tok && conf->publish_keys.n && hd_tp_key_match(&conf->publish_keys, tok, len) == 0) {
        cred->is_backend = 1;
        return 0;
    }
    if (!tok) {
        int n = hd_req_query(req, "token", query_token, sizeof(query_token));
        if (n > 0) {
            tok = query_token;
            len = (size_t)n;
        } else if (n < 0 && has_param(req, "token")) {
            /* Present but longer than any token may be. */
            hd_tp_respond_auth(req, 401, "token longer than 8192 bytes", HD_EUNAUTHENTICATED);
            return -1;
        }
    }
    if (!tok || !hd_auth_has_key(conf->auth))
        return 0; /* anonymous (a bearer that is no key, with no key to verify it, is ignored) */
    int err = hd_tp_verify_token(req->conn->worker, conf, tok, len, &cred->id, why, sizeof(why));
    if (err) {
        hd_conn_log(HD_LOG_INFO, req->conn, "token refused: %s", why);
        hd_tp_respond_auth(req, 401, why, err);
        return -1;
    }
    return 0;
}

int hd_tp_credential(hd_req_t *req, hd_tp_cred_t *cred)
{
    return credential(req, cred, 0);
}

int hd_tp_connect_credential(hd_req_t *req, hd_tp_cred_t *cred)
{
    return credential(req, cred, 1);
}

void hd_tp_cred_dispose(hd_tp_cred_t *cred)
{
    hd_identity_unref(cred->id);
    cred->id = NULL;
}

int hd_tp_authorize(hd_req_t *req, const hd_tp_cred_t *cred, const char *channel, size_t len,
                    hd_auth_action_t action)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    const char *reason = NULL;

    if (cred->is_backend)
        return 0;
    hd_auth_result_t r = hd_auth_check(conf->auth, cred->id, channel, len, action, &reason);
    if (r == HD_AUTH_OK || (r == HD_AUTH_ASK_HOOK && req->is_hook_allowed_))
        return 0;
    if (r == HD_AUTH_ASK_HOOK) /* a caller that cannot ask the backend (hd_tp_authorize_channels) */
        r = HD_AUTH_FORBIDDEN;
    hd_tp_respond_auth(req, (int)r, reason,
                       r == HD_AUTH_FORBIDDEN ? HD_EFORBIDDEN : HD_EUNAUTHENTICATED);
    return -1;
}

/* {"sub":..,"info":{..}} for a publisher with a sub, or NULL. */
char *hd_tp_publisher_json(const hd_identity_t *id)
{
    const char *sub = hd_identity_sub(id), *info = hd_identity_info(id);
    if (!id || (!sub && !info))
        return NULL;
    json_t *o = json_object();
    if (sub)
        json_object_set_new(o, "sub", json_string(sub));
    if (info) {
        json_error_t jerr;
        json_t *v = json_loads(info, 0, &jerr);
        if (v)
            json_object_set_new(o, "info", v);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

int hd_tp_publish_authorize(hd_req_t *req, const hd_tp_cred_t *cred, const char *channel,
                            size_t len)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (!hd_auth_enabled(conf->auth) || cred->is_backend)
        return 0;
    if (!cred->id && conf->publish_keys.n == 0 && hd_tp_peer_is_local(req))
        return 0; /* without a publish key, a local client is the backend, as with auth off */
    return hd_tp_authorize(req, cred, channel, len, HD_AUTH_PUBLISH);
}

/* ---- an operator's order (conn.h hd_kick_t; docs/auth.md "Revocation", "Disconnecting") ---- */

const char *hd_tp_kick_code(const hd_kick_t *k)
{
    return hd_kick_is_revocation(k) ? "token_revoked" : "disconnected";
}

const char *hd_tp_kick_reason(const hd_kick_t *k)
{
    return hd_kick_is_revocation(k) ? "token revoked"
                                    : "disconnected by the operator (POST /admin/disconnect)";
}

int hd_tp_kick_err(const hd_kick_t *k)
{
    return hd_kick_is_revocation(k) ? HD_ETOKENREVOKED : HD_EDISCONNECTED;
}

void hd_tp_kick_respond(hd_req_t *req, const hd_kick_t *k)
{
    hd_conn_log(HD_LOG_DEBUG, req->conn, "held request answered: %s", hd_tp_kick_reason(k));
    if (hd_kick_is_revocation(k)) {
        hd_tp_respond_auth(req, 401, hd_tp_kick_reason(k), HD_ETOKENREVOKED);
        return;
    }
    char body[160];
    int n =
        snprintf(body, sizeof(body), "{\"error\":\"%s\",\"code\":\"disconnected\",\"status\":409}",
                 hd_tp_kick_reason(k));
    hd_http_respond(req, 409, NULL, "application/json", body, (size_t)n);
}
