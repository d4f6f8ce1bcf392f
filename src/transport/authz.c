/* SPDX-License-Identifier: MIT */
/*
 * authz.c: what every transport and the publish API ask about a request's credential
 * (docs/auth.md): the backend key or a connection token (Authorization: Bearer, ?token=),
 * verified against the configuration's policy (conf->auth), then the one decision
 * hd_auth_check, with 401/403 answers that carry a JSON reason. With auth off (no key, no
 * channel_rule) nothing here reads the request: every check passes, as before.
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

int hd_tp_verify_token(const hd_conf_t *conf, const char *token, size_t len, hd_identity_t **out,
                       char *why, size_t whylen)
{
    hd_auth_verify_t v =
        hd_auth_verify(conf->auth, token, len, (int64_t)time(NULL), out, why, whylen);
    switch (v) {
    case HD_AUTH_VERIFIED:
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
                 err == HD_ETOKENEXPIRED || err == HD_EUNAUTHENTICATED ? ", error=\"invalid_token\""
                                                                       : "");
    hd_http_respond(req, status, status == 401 ? hdr : NULL, "application/json", body, (size_t)len);
}

int hd_tp_credential(hd_req_t *req, hd_tp_cred_t *cred)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    char query_token[HD_AUTH_MAX_TOKEN + 1], why[160];
    const char *tok;
    size_t len = 0;

    memset(cred, 0, sizeof(*cred));
    if (!hd_auth_enabled(conf->auth))
        return 0;
    tok = hd_tp_bearer(req, &len);
    if (tok && len == 0)
        tok = NULL;
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
    int err = hd_tp_verify_token(conf, tok, len, &cred->id, why, sizeof(why));
    if (err) {
        hd_conn_log(HD_LOG_INFO, req->conn, "token refused: %s", why);
        hd_tp_respond_auth(req, 401, why, err);
        return -1;
    }
    return 0;
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
    if (r == HD_AUTH_OK)
        return 0;
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
