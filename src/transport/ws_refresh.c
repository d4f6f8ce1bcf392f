/* SPDX-License-Identifier: MIT */
/*
 * ws_refresh.c: a live WebSocket connection swaps its token for a fresh one without
 * reconnecting (docs/auth.md, "Staying authorized"): {"type":"refresh","token":JWT} on /ws, the
 * same text message on a herald.v1 connection. The token is verified like a connect token,
 * asked of the revocation check (hd_auth_revoked), must name the same sub, and then becomes the
 * connection's identity: the expiry and the next refresh notice move to its exp (the
 * connection's one timer, ws_conn.c), and its grants apply from now on to every subscription.
 * Nothing here runs per delivered message.
 */
#include "websocket.h"

#include <string.h>

/* Both NULL, or equal strings. */
static int same_sub(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The subscriptions the new identity may no longer have: dropped on /ws (with a notice each),
 * the end of the connection on /ws/{channel}. Returns 0, or -1 when the connection was closed. */
static int recheck_subscriptions(ws_t *ws)
{
    ws_public_t *pub = hd_ws_pub(ws);
    const hd_auth_t *auth = hd_ws_conf(ws)->auth;
    if (pub->is_backend || !hd_auth_enabled(auth))
        return 0;
    for (uint32_t i = pub->n_subs; i-- > 0;) {
        ws_sub_t *e = pub->subs[i];
        const char *reason = NULL;
        hd_auth_result_t r =
            hd_auth_check(auth, hd_ws_identity(ws), e->channel, e->len, HD_AUTH_SUBSCRIBE, &reason);
        if (r == HD_AUTH_OK || r == HD_AUTH_ASK_HOOK) /* the backend's yes stands */
            continue;
        if (pub->mode != WS_MODE_JSON) {
            hd_ws_close(ws, 4003, "channel no longer granted by the refreshed token");
            return -1;
        }
        char channel[HD_CHANNEL_MAX + 1], text[192];
        memcpy(channel, e->channel, e->len + 1u);
        if (pub->conn)
            hd_tp_notify_channel(pub->conn, 0, e->channel, e->len);
        hd_ws_sub_remove(ws, e);
        snprintf(text, sizeof(text), "%s (after refresh)", reason ? reason : "not allowed");
        json_t *o = json_object();
        json_object_set_new(o, "type", json_string("unsubscribed"));
        json_object_set_new(o, "channel", json_string(channel));
        json_object_set_new(o, "code", json_string("forbidden"));
        json_object_set_new(o, "error", json_string(text));
        hd_ws_emit_json(ws, o);
        if (!hd_ws_is_open(ws))
            return -1;
    }
    return 0;
}

int hd_ws_refresh(ws_t *ws, const char *token, size_t len, const char **code, char *why,
                  size_t whylen)
{
    ws_public_t *pub = hd_ws_pub(ws);
    hd_identity_t *old = hd_ws_identity(ws), *id = NULL;
    if (!old) {
        *code = "not_authenticated";
        snprintf(why, whylen, "this connection has no token to refresh");
        return WS_REFRESH_REFUSED;
    }
    int err = hd_tp_verify_token(pub->w, hd_ws_conf(ws), token, len, &id, why, whylen);
    if (err) { /* hd_tp_verify_token asks the revoked set too */
        *code = err == HD_ETOKENEXPIRED   ? "token_expired"
                : err == HD_ETOKENREVOKED ? "token_revoked"
                                          : "unauthenticated";
        hd_conn_log(HD_LOG_INFO, pub->conn, "refresh refused: %s", why);
        return WS_REFRESH_REFUSED;
    }
    if (!same_sub(hd_identity_sub(old), hd_identity_sub(id))) {
        hd_identity_unref(id);
        hd_conn_log(HD_LOG_INFO, pub->conn, "refresh refused: another sub; closing (4003)");
        hd_ws_close(ws, 4003, "refresh token is for another sub");
        return WS_REFRESH_CLOSED;
    }
    hd_conn_set_identity(pub->conn, id);
    hd_identity_unref(id);
    hd_ws_life_reset(ws);
    return recheck_subscriptions(ws) < 0 ? WS_REFRESH_CLOSED : WS_REFRESHED;
}

void hd_ws_emit_refreshed(ws_t *ws, json_t *ref)
{
    const hd_identity_t *id = hd_ws_identity(ws);
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("refreshed"));
    if (hd_identity_sub(id))
        json_object_set_new(o, "sub", json_string(hd_identity_sub(id)));
    json_object_set_new(o, "exp", json_integer((json_int_t)hd_identity_exp(id)));
    if (ref)
        json_object_set(o, "ref", ref);
    hd_ws_emit_json(ws, o);
}
