/* SPDX-License-Identifier: MIT */
/*
 * hook.c: the authorize hook seen from the transports (docs/webhooks.md, "Backend hooks"). A
 * connect whose channels fall under channel_rule subscribe=hook asks the application's backend
 * (through the hooks thread, hooks.h hd_hooks_authorize) and waits without blocking the loop,
 * as a ticket does (authz.c): the request is deferred, and once the answer is back the route's
 * handler runs again from the start (hd_http_redispatch) with the verdict in the request:
 *
 *   handler -> hd_tp_authorize_channels: subscribe=hook channels -> question, defer -> -1
 *   answer (worker's loop): allow -> req->proven_id_ (the backend's identity, or the request's
 *     own), is_hook_allowed_ -> hd_http_redispatch -> handler -> ... -> 0: go on as usual
 *   deny -> 403 (or 401) {"code":"forbidden"}; no answer -> on_error: 503 + Retry-After
 *     {"code":"backend_unavailable"} (deny) or as allowed (allow)
 *
 * A worker has at most the hook's max_pending questions waiting (hd_worker_stats_t
 * authz_pending, counted until each answer is back, even when its client left or timed out);
 * past it a connect is answered 503 {"code":"backend_busy"} at once. The question's body is
 * built here (hd_tp_hook_question), also for the /ws subscribe op (ws_hook.c).
 */
#include "herald/hooks.h"
#include "herald/transport.h"

#include <string.h>

/* A request waiting for the backend; d is NULL once the request is gone or answered (its
 * timeout). Freed when the answer comes back, whatever happened meanwhile. */
typedef struct hook_wait_s {
    hd_deferred_t *d;
    hd_identity_t *id; /* the request's own identity (one reference), or NULL */
} hook_wait_t;

/* A header or cookie value as a JSON string, bytes outside printable ASCII made '?' (the
 * backend gets text, and the question stays valid JSON whatever the client sent). */
static json_t *printable(const char *v, size_t len)
{
    char *t = hd_malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        t[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    json_t *s = json_stringn(t, len);
    free(t);
    return s;
}

json_t *hd_tp_hook_context(const hd_req_t *req, const hd_hook_def_t *def)
{
    json_t *o = json_object();
    char ip[HD_IP_TEXT_MAX];
    hd_ip_format(hd_req_client_ip(req), ip, sizeof(ip));
    json_object_set_new(o, "client_ip", json_string(ip));
    json_t *h = json_object();
    for (size_t i = 0; i < def->n_headers; i++) {
        size_t len;
        const char *v = hd_req_header(req, def->headers[i], &len);
        if (v)
            json_object_set_new(h, def->headers[i], printable(v, len));
    }
    json_object_set_new(o, "headers", h);
    json_t *c = json_object();
    size_t clen;
    const char *cookie = def->n_cookies ? hd_req_header(req, "cookie", &clen) : NULL;
    /* Cookie: a=1; b=2 (one header; RFC 6265 5.4) */
    for (const char *p = cookie, *end = cookie ? cookie + clen : NULL; p && p < end;) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *semi = memchr(p, ';', (size_t)(end - p)), *stop = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq) {
            for (size_t i = 0; i < def->n_cookies; i++) {
                size_t nl = strlen(def->cookies[i]);
                if ((size_t)(eq - p) == nl && memcmp(p, def->cookies[i], nl) == 0 &&
                    !json_object_get(c, def->cookies[i]))
                    json_object_set_new(c, def->cookies[i],
                                        printable(eq + 1, (size_t)(stop - eq - 1)));
            }
        }
        p = stop;
    }
    json_object_set_new(o, "cookies", c);
    return o;
}

char *hd_tp_hook_question(hd_auth_action_t action, const char *transport,
                          const char *const *channels, const size_t *lens, size_t n,
                          const hd_identity_t *id, json_t *ctx, size_t *len)
{
    json_t *data = json_object();
    /* no channel: a connect-level question (connect=on), about the connection itself */
    json_object_set_new(data, "action",
                        json_string(n == 0                      ? "connect"
                                    : action == HD_AUTH_HISTORY ? "history"
                                                                : "subscribe"));
    json_object_set_new(data, "transport", json_string(transport));
    json_t *chs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(chs, json_stringn(channels[i], lens[i]));
    json_object_set_new(data, "channels", chs);
    if (id && (hd_identity_sub(id) || hd_identity_info(id))) {
        json_t *who = json_object();
        if (hd_identity_sub(id))
            json_object_set_new(who, "sub", json_string(hd_identity_sub(id)));
        if (hd_identity_info(id)) {
            json_t *info = json_loads(hd_identity_info(id), 0, NULL);
            if (info)
                json_object_set_new(who, "info", info);
        }
        json_object_set_new(data, "identity", who);
    } else {
        json_object_set_new(data, "identity", json_null());
    }
    json_object_update(data, ctx);
    json_t *q = json_object();
    json_object_set_new(q, "type", json_string("authorize"));
    json_object_set_new(q, "data", data);
    /* the same question is the same bytes: the cache and the joined calls key on them */
    char *s = json_dumps(q, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(q);
    *len = s ? strlen(s) : 0;
    return s;
}

void hd_tp_respond_backend(hd_req_t *req, int busy, const char *reason)
{
    char hdr[64], body[384], clean[256];
    size_t n = 0;
    for (const char *p = reason; *p && n + 1 < sizeof(clean); p++)
        clean[n++] = (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? *p : '?';
    clean[n] = '\0';
    snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", 1 + hd_tp_jitter(busy ? 3 : 5));
    int len = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"code\":\"%s\",\"status\":503}",
                       clean, busy ? "backend_busy" : "backend_unavailable");
    hd_http_respond(req, 503, hdr, "application/json", body, (size_t)len);
}

/* Lets the request in with identity id (a reference is taken; NULL: anonymous). */
static void let_in(hd_deferred_t *d, hd_identity_t *id)
{
    hd_req_t *req = d->req;
    d->data = NULL;
    d->on_abort = NULL;
    d->on_timeout = NULL;
    hd_identity_unref(req->proven_id_);
    req->proven_id_ = id ? hd_identity_ref(id) : NULL;
    req->is_proven_ = 1;
    req->is_hook_allowed_ = 1;
    hd_http_redispatch(d);
}

static void hook_on_abort(hd_deferred_t *d)
{
    hook_wait_t *hw = d->data;
    hw->d = NULL;
}

static void hook_on_timeout(hd_deferred_t *d)
{
    hook_wait_t *hw = d->data;
    hd_req_t *req = d->req;
    hd_worker_t *w = req->conn->worker;
    const hd_hook_def_t *def = hd_worker_conf(w)->authorize_hook;
    hw->d = NULL;
    if (def && def->allow_on_error && !w->is_draining) {
        hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: no answer in time, on_error=allow");
        let_in(d, hw->id);
        return;
    }
    HD_STAT_INC(w, authz_refused_error);
    hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: no answer in time");
    d->data = NULL;
    d->on_abort = NULL;
    d->on_timeout = NULL;
    hd_tp_respond_backend(req, 0, "the authorization backend did not answer in time; retry");
}

static void on_hook_answer(hd_hooks_authz_t *a)
{
    hook_wait_t *hw = a->data;
    hd_worker_t *w = a->worker;
    hd_deferred_t *d = hw->d;
    HD_STAT_DEC(w, authz_pending);
    if (d) {
        hd_req_t *req = d->req;
        const hd_hook_def_t *def = hd_worker_conf(w)->authorize_hook;
        if (a->verdict == HD_HOOKS_ALLOW) {
            hd_identity_t *id = a->id ? a->id : hw->id;
            if (a->id && hd_auth_revoked(hd_identity_sub(id), hd_identity_jti(id))) {
                d->data = NULL;
                d->on_abort = NULL;
                d->on_timeout = NULL;
                hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: allowed, but sub revoked");
                hd_tp_respond_auth(req, 401, "token revoked", HD_ETOKENREVOKED);
            } else {
                let_in(d, id);
            }
        } else if (a->verdict == HD_HOOKS_DENY) {
            HD_STAT_INC(w, authz_denied);
            d->data = NULL;
            d->on_abort = NULL;
            d->on_timeout = NULL;
            hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: refused: %s", a->reason);
            hd_tp_respond_auth(req, a->status == 401 ? 401 : 403, a->reason,
                               a->status == 401 ? HD_EUNAUTHENTICATED : HD_EFORBIDDEN);
        } else if (def && def->allow_on_error) {
            hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: %s; on_error=allow", a->reason);
            let_in(d, hw->id);
        } else {
            HD_STAT_INC(w, authz_refused_error);
            d->data = NULL;
            d->on_abort = NULL;
            d->on_timeout = NULL;
            hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: %s", a->reason);
            hd_tp_respond_backend(req, 0, "the authorization backend failed; retry");
        }
    }
    hd_identity_unref(hw->id);
    free(hw);
    hd_hooks_authz_free(a);
}

int hd_tp_hook_ask_room(hd_worker_t *w, const hd_hook_def_t *def)
{
    if (HD_STAT_GET(w, authz_pending) < def->max_pending)
        return 1;
    HD_STAT_INC(w, authz_refused_busy);
    return 0;
}

/* Asks the backend about channels[0..n) of req, deferred; -1 (answered or will be). */
static int ask(hd_req_t *req, const hd_tp_cred_t *cred, const char *const *channels,
               const size_t *lens, size_t n, hd_auth_action_t action, const char *transport)
{
    hd_worker_t *w = req->conn->worker;
    const hd_hook_def_t *def = hd_worker_conf(w)->authorize_hook;
    if (!def) { /* a reload added subscribe=hook without a hook: refused by the load, but safe */
        hd_tp_respond_backend(req, 0, "no authorize_hook is configured");
        return -1;
    }
    if (!hd_tp_hook_ask_room(w, def)) {
        hd_conn_log(HD_LOG_INFO, req->conn, "authorize_hook: %u questions waiting (max_pending)",
                    (unsigned)def->max_pending);
        hd_tp_respond_backend(req, 1, "too many connects waiting for the authorization backend");
        return -1;
    }
    json_t *ctx = hd_tp_hook_context(req, def);
    hd_hooks_authz_t *a = hd_hooks_authz_new();
    a->body =
        hd_tp_hook_question(action, transport, channels, lens, n, cred->id, ctx, &a->body_len);
    json_decref(ctx);
    if (!a->body) {
        hd_hooks_authz_free(a);
        hd_tp_respond_backend(req, 0, "the question to the authorization backend failed");
        return -1;
    }
    hook_wait_t *hw = hd_calloc(1, sizeof(*hw));
    hw->id = cred->id ? hd_identity_ref(cred->id) : NULL;
    hw->d = hd_http_defer(req);
    hw->d->data = hw;
    hw->d->on_abort = hook_on_abort;
    hw->d->on_timeout = hook_on_timeout;
    hd_http_defer_timeout(hw->d, def->timeout_ms + 100);
    a->worker = w;
    a->cb = on_hook_answer;
    a->data = hw;
    HD_STAT_INC(w, authz_pending);
    hd_hooks_authorize(a);
    return -1;
}

int hd_tp_authorize_channels(hd_req_t *req, const hd_tp_cred_t *cred,
                             const char (*names)[HD_CHANNEL_MAX + 1], size_t n,
                             hd_auth_action_t action, const char *transport)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    const char *ask_names[HD_TP_HOOK_MAX_CHANNELS];
    size_t ask_lens[HD_TP_HOOK_MAX_CHANNELS], n_ask = 0, n_need = 0;

    if (cred->is_backend)
        return 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        const char *reason = NULL;
        hd_auth_result_t r = hd_auth_check(conf->auth, cred->id, names[i], len, action, &reason);
        if (r == HD_AUTH_OK)
            continue;
        if (r == HD_AUTH_ASK_HOOK) {
            if (n_need++ < HD_TP_HOOK_MAX_CHANNELS) {
                ask_names[n_ask] = names[i];
                ask_lens[n_ask++] = len;
            }
            continue;
        }
        hd_tp_respond_auth(req, (int)r, reason,
                           r == HD_AUTH_FORBIDDEN ? HD_EFORBIDDEN : HD_EUNAUTHENTICATED);
        return -1;
    }
    if (req->is_hook_allowed_)
        return 0;
    if (n_ask == 0) {
        /* connect=on: the backend decides every connect, also one with no hook channel (a /ws
         * connect, open channels): one question with action "connect" and no channel */
        const hd_hook_def_t *def = conf->authorize_hook;
        if (!def || !def->ask_connect)
            return 0;
        return ask(req, cred, NULL, NULL, 0, action, transport);
    }
    if (n_need > HD_TP_HOOK_MAX_CHANNELS) {
        hd_tp_respond_auth(req, 403, "at most 256 channels of one connect ask the backend",
                           HD_EFORBIDDEN);
        return -1;
    }
    return ask(req, cred, ask_names, ask_lens, n_ask, action, transport);
}
