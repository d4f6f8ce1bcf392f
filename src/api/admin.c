/* SPDX-License-Identifier: MIT */
/*
 * admin.c: the operator's orders about connections (docs/auth.md, "Revocation" and
 * "Disconnecting"), guarded as every /admin/ path (access.c: admin listener or admin_key):
 *
 *   POST /admin/revoke      {"sub": S} or {"jti": J}, with "expires_in" (seconds), "until"
 *                           (unix seconds) or, for a jti, "exp" (the token's own exp): the
 *                           sub's or token's live connections end on every node and its tokens
 *                           are refused (401 token_revoked) until then (revocation_ttl when the
 *                           body says nothing, at most revocation_max_ttl; max_revocations live
 *                           ones at most, 507 past it)
 *   POST /admin/disconnect  {"sub": S} or {"channel": C}: the matching connections end on every
 *                           node; nothing is refused afterwards (a kick, not a ban)
 *
 * Both are one broker request (HD_BREQ_CONTROL): the embedded broker tells this node's workers,
 * the Redis bridge stores the revocation in Redis and announces the order on the control
 * channel every node subscribes to. Answered 200 {"revoked"|"disconnected": {..}, "nodes": N}
 * once the broker took it; 400 with a JSON reason for a bad body.
 */
#include "herald/api.h"

#include <jansson.h>
#include <string.h>
#include <time.h>

typedef struct admin_req_s {
    hd_deferred_t *d; /* NULL once the client is gone */
} admin_req_t;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_abort(hd_deferred_t *d)
{
    admin_req_t *a = d->data;
    a->d = NULL; /* the broker's answer still comes; nobody waits for it */
}

static const char *kind_name(int kind)
{
    return kind == HD_KICK_REVOKE_JTI ? "jti" : kind == HD_KICK_CHANNEL ? "channel" : "sub";
}

static void on_reply(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    admin_req_t *a = r->cookie;
    if (a->d) {
        hd_req_t *req = a->d->req;
        if (r->err == HD_EREVOCATIONS) {
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "too many live revocations: at most %u (max_revocations); wait for some to "
                     "expire or raise it",
                     r->ctl_max);
            hd_http_respond_error(req, 507, msg);
        } else if (r->err) {
            hd_tp_respond_failure(req, r->err);
        } else {
            int is_rev = hd_kick_is_revocation(&(hd_kick_t){.kind = r->ctl_kind});
            json_t *o = json_object(), *what = json_object();
            json_object_set_new(what, kind_name(r->ctl_kind),
                                json_stringn(r->ctl_key, r->ctl_key_len));
            json_object_set_new(o, is_rev ? "revoked" : "disconnected", what);
            if (is_rev) {
                int64_t left = r->ctl_until_ms - wall_ms();
                json_object_set_new(o, "until", json_integer((json_int_t)(r->ctl_until_ms / 1000)));
                json_object_set_new(o, "expires_in",
                                    json_integer((json_int_t)(left > 0 ? (left + 999) / 1000 : 0)));
            }
            json_object_set_new(o, "nodes", json_integer((json_int_t)r->ctl_nodes));
            char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(o);
            hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json", text,
                            strlen(text));
            free(text);
        }
    }
    free(a);
    hd_breq_free(r);
}

/* The one string member among names[] the body has; -1 after a 400 (none, several, not a
 * string, empty or too long, or for a channel not a channel name). */
static int pick_target(hd_req_t *req, json_t *root, const char *const *names, const int *kinds,
                       size_t n, int *kind, const char **key, size_t *len)
{
    size_t found = 0;
    char msg[200];
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (!v)
            continue;
        if (found++) {
            snprintf(msg, sizeof(msg), "give exactly one of \"%s\" and \"%s\"", names[0],
                     names[n - 1]);
            hd_http_respond_error(req, 400, msg);
            return -1;
        }
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > HD_AUTH_MAX_SUB ||
            memchr(json_string_value(v), 0, json_string_length(v))) {
            snprintf(msg, sizeof(msg), "\"%s\" must be a string of 1-%d bytes", names[i],
                     HD_AUTH_MAX_SUB);
            hd_http_respond_error(req, 400, msg);
            return -1;
        }
        *kind = kinds[i];
        *key = json_string_value(v);
        *len = json_string_length(v);
        if (kinds[i] == HD_KICK_CHANNEL && !hd_channel_name_valid(*key, *len)) {
            hd_http_respond_error(req, 400,
                                  "bad channel name: 1-128 characters of A-Z a-z 0-9 . _ - : @");
            return -1;
        }
    }
    if (!found) {
        snprintf(msg, sizeof(msg), "the body names no target: {\"%s\": ...}%s", names[0],
                 n > 1 ? " or another of the documented members" : "");
        hd_http_respond_error(req, 400, msg);
        return -1;
    }
    return 0;
}

/* A number of seconds from member name (integer or real), or -1 after a 400. 0: absent. */
static int seconds_of(hd_req_t *req, json_t *root, const char *name, double *out)
{
    json_t *v = json_object_get(root, name);
    *out = 0;
    if (!v)
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) > 0) || json_number_value(v) > 1e12) {
        char msg[120];
        snprintf(msg, sizeof(msg), "\"%s\" must be a positive number of seconds", name);
        hd_http_respond_error(req, 400, msg);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

/* When the revocation ends (unix ms) from the body and the conf; -1 after a 400. */
static int64_t until_of(hd_req_t *req, json_t *root, int kind, const hd_conf_t *conf)
{
    double in = 0, until = 0, exp = 0;
    int has_in = seconds_of(req, root, "expires_in", &in);
    int has_until = has_in < 0 ? -1 : seconds_of(req, root, "until", &until);
    int has_exp = has_until < 0 ? -1 : seconds_of(req, root, "exp", &exp);
    if (has_in < 0 || has_until < 0 || has_exp < 0)
        return -1;
    if (has_in + has_until + has_exp > 1) {
        hd_http_respond_error(req, 400, "give at most one of \"expires_in\", \"until\", \"exp\"");
        return -1;
    }
    if (has_exp && kind != HD_KICK_REVOKE_JTI) {
        hd_http_respond_error(req, 400,
                              "\"exp\" (the token's exp) goes with \"jti\"; for a sub give "
                              "\"expires_in\" or \"until\"");
        return -1;
    }
    int64_t now = wall_ms(), at;
    if (has_in)
        at = now + (int64_t)(in * 1000.0);
    else if (has_until)
        at = (int64_t)(until * 1000.0);
    else if (has_exp) /* the token is refused anyway once exp + skew passed */
        at = (int64_t)(exp * 1000.0) + (int64_t)conf->auth_clock_skew_ms;
    else
        at = now + (int64_t)conf->revocation_ttl_ms;
    if (at <= now) {
        hd_http_respond_error(req, 400, "the revocation would already have expired");
        return -1;
    }
    if (at - now > (int64_t)conf->revocation_max_ttl_ms) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the revocation would last %lld s, more than revocation_max_ttl (%llu s)",
                 (long long)((at - now) / 1000),
                 (unsigned long long)(conf->revocation_max_ttl_ms / 1000));
        hd_http_respond_error(req, 400, msg);
        return -1;
    }
    return at;
}

static void submit(hd_req_t *req, int kind, const char *key, size_t len, int64_t until_ms)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    hd_breq_t *r = hd_breq_new(HD_BREQ_CONTROL, req->conn->worker, NULL, 0);
    r->ctl_kind = (uint8_t)kind;
    r->ctl_key = hd_malloc(len + 1);
    memcpy(r->ctl_key, key, len);
    r->ctl_key[len] = '\0';
    r->ctl_key_len = len;
    r->ctl_until_ms = until_ms;
    r->ctl_max = conf->max_revocations;
    admin_req_t *a = hd_calloc(1, sizeof(*a));
    a->d = hd_http_defer(req);
    a->d->data = a;
    a->d->on_abort = on_abort;
    r->cookie = a;
    r->reply_cb = on_reply;
    hd_broker_submit(r);
}

/* The body as a JSON object, or NULL after a 400. */
static json_t *body_of(hd_req_t *req)
{
    json_error_t jerr;
    json_t *root = req->body_len ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        hd_http_respond_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

static void on_revoke(hd_req_t *req, void *arg)
{
    (void)arg;
    static const char *const names[] = {"sub", "jti"};
    static const int kinds[] = {HD_KICK_REVOKE_SUB, HD_KICK_REVOKE_JTI};
    json_t *root = body_of(req);
    if (!root)
        return;
    int kind = 0;
    const char *key = NULL;
    size_t len = 0;
    if (pick_target(req, root, names, kinds, 2, &kind, &key, &len) == 0) {
        int64_t until = until_of(req, root, kind, hd_worker_conf(req->conn->worker));
        if (until > 0)
            submit(req, kind, key, len, until);
    }
    json_decref(root);
}

static void on_disconnect(hd_req_t *req, void *arg)
{
    (void)arg;
    static const char *const names[] = {"sub", "channel"};
    static const int kinds[] = {HD_KICK_SUB, HD_KICK_CHANNEL};
    json_t *root = body_of(req);
    if (!root)
        return;
    int kind = 0;
    const char *key = NULL;
    size_t len = 0;
    if (pick_target(req, root, names, kinds, 2, &kind, &key, &len) == 0)
        submit(req, kind, key, len, 0);
    json_decref(root);
}

void hd_admin_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_POST, "/admin/revoke", 0, on_revoke, NULL);
    hd_router_add(r, HD_M_POST, "/admin/disconnect", 0, on_disconnect, NULL);
}
