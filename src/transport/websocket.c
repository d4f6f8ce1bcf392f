/* SPDX-License-Identifier: MIT */
/*
 * websocket.c: the WebSocket transport's routes, and the /ws/{channel} protocol.
 *
 *   GET /ws/{channel}   one channel: each message is one data frame with the payload as-is;
 *                       subprotocol herald.v1: one JSON envelope per message, gap notices;
 *                       a data frame from the client is published to the channel
 *                       (ws_client_publish, publish key on the handshake)
 *   GET /ws             the JSON protocol (ws_json.c): subscribe, unsubscribe, publish, ping
 *
 * The handshake of /ws/{channel} is answered only once its subscription is live (the request
 * is deferred until the hub's on_ready), so a client that has seen 101 misses nothing
 * published afterwards. docs/protocol-websocket.md is the public contract; websocket.h says
 * how the pieces of this transport fit.
 */
#include "websocket.h"

#include <string.h>

/* 1 if data[0..len) holds needle (NUL-terminated, not empty). */
static int contains(const char *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = data; len >= n && (p = memchr(p, needle[0], len - n + 1)) != NULL;) {
        if (memcmp(p, needle, n) == 0)
            return 1;
        len -= (size_t)(p + 1 - data);
        data = ++p;
    }
    return 0;
}

/*
 * herald.v1: a text message {"type":"refresh","token":JWT} is a token refresh, not a publish
 * (docs/auth.md). Returns 1 when data was one (answered), else 0. Only text holding "refresh"
 * is parsed, so publishes pay one memmem.
 */
static int chan_refresh(ws_t *ws, uint8_t opcode, const char *data, size_t len)
{
    if (hd_ws_pub(ws)->mode != WS_MODE_ENVELOPE || opcode != WSLAY_TEXT_FRAME ||
        len > HD_AUTH_MAX_TOKEN + 256 || !contains(data, len, "\"refresh\""))
        return 0;
    json_t *root = json_loadb(data, len, 0, NULL);
    json_t *tok = json_object_get(root, "token");
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!type || strcmp(type, "refresh") != 0 || !json_is_string(tok)) {
        json_decref(root);
        return 0;
    }
    const char *code = NULL;
    char why[160];
    int rc =
        hd_ws_refresh(ws, json_string_value(tok), json_string_length(tok), &code, why, sizeof(why));
    if (rc == WS_REFRESH_REFUSED) {
        json_t *o = json_object();
        json_object_set_new(o, "type", json_string("error"));
        json_object_set_new(o, "code", json_string(code));
        json_object_set_new(o, "error", json_string(why));
        hd_ws_emit_json(ws, o);
    } else if (rc == WS_REFRESHED) {
        hd_ws_emit_refreshed(ws, NULL);
    }
    json_decref(root);
    return 1;
}

/* An error object on herald.v1 (no "ref": this protocol has none). */
static void chan_error(ws_t *ws, const char *code, const char *why)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("error"));
    json_object_set_new(o, "code", json_string(code));
    json_object_set_new(o, "error", json_string(why));
    hd_ws_emit_json(ws, o);
}

/*
 * herald.v1 with ?ack=1: a text message {"type":"ack","id":ID} acks the channel up to ID (as
 * /ws's {"op":"ack"}), silently or with an error object; it is never published. Returns 1 when
 * data was one, else 0. Only text holding "ack" is parsed.
 */
static int chan_ack(ws_t *ws, uint8_t opcode, const char *data, size_t len)
{
    ws_sub_t *e = hd_ws_pub(ws)->subs[0];
    if (!e->ack || opcode != WSLAY_TEXT_FRAME || len > 512 || !contains(data, len, "\"ack\""))
        return 0;
    json_t *root = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!type || strcmp(type, "ack") != 0) {
        json_decref(root);
        return 0;
    }
    json_t *id = json_object_get(root, "id");
    uint64_t epoch, seq;
    const char *code, *why;
    if (!json_is_string(id) ||
        hd_id_parse(json_string_value(id), json_string_length(id), &epoch, &seq) != 0)
        chan_error(ws, "bad_id", "\"id\" must be the id of a message received");
    else if (hd_ws_ack(ws, e, epoch, seq, &code, &why) < 0)
        chan_error(ws, code, why);
    json_decref(root);
    return 1;
}

/* /ws/{channel}: a data message is published when the server, the key and client_publish_rate
 * allow, else 1008. */
static void chan_on_message(ws_t *ws, uint8_t opcode, const char *data, size_t len)
{
    if (chan_refresh(ws, opcode, data, len) || chan_ack(ws, opcode, data, len))
        return;
    if (!hd_ws_conf(ws)->ws_client_publish) {
        hd_ws_close(ws, 1008, "client publishing is disabled");
        return;
    }
    ws_sub_t *e = hd_ws_pub(ws)->subs[0];
    const char *reason;
    if (hd_auth_enabled(hd_ws_conf(ws)->auth)) {
        /* With auth on, the channel's rule decides for the connection's identity. */
        int err = hd_ws_may_publish(ws, e->channel, e->len, &reason);
        if (err) {
            hd_ws_close(ws, hd_err_ws_close(err), reason);
            return;
        }
    } else if (!hd_ws_bearer_ok(ws)) {
        hd_ws_close(ws, 1008,
                    hd_ws_conf(ws)->publish_keys.n
                        ? "publishing needs the publish key (Authorization: Bearer)"
                        : "no publish_key: only local clients may publish");
        return;
    }
    uint64_t retry_ms;
    if (!hd_ws_publish_allowed(ws, &retry_ms)) {
        /* No reply channel on this protocol: a client past its rate is closed (policy). */
        hd_ws_close(ws, 1008, "publishing too often (client_publish_rate)");
        return;
    }
    const char *ct =
        opcode == WSLAY_TEXT_FRAME ? "text/plain; charset=utf-8" : "application/octet-stream";
    hd_message_t *m = hd_message_new(e->channel, e->len, ct, data, len);
    hd_ws_stamp(ws, m);
    hd_ws_publish(ws, m, NULL);
}

static void chan_on_published(ws_t *ws, int err, const hd_message_t *m, json_t *ref)
{
    (void)m;
    (void)ref;
    if (err)
        hd_ws_close(ws, hd_err_ws_close(err), hd_strerror(err)); /* nowhere else to say it */
}

static const ws_proto_t chan_proto = {
    .on_message = chan_on_message,
    .on_published = chan_on_published,
};

/* /ws/{channel}: the subscription is live, so the handshake can be answered. */
static void chan_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    ws_public_t *pub = hd_ws_pub(ws);
    hd_ws_enter(ws);
    hd_req_t *req = pub->d->req;
    pub->d = NULL;
    if (err) {
        e->sub = NULL; /* the hub frees it */
        hd_ws_gone(ws);
        hd_conn_set_identity(req->conn, NULL); /* the connection goes on as plain HTTP */
        hd_tp_respond_failure(req, err);
    } else {
        hd_ws_upgrade(ws, req);
        if (gap && pub->mode == WS_MODE_ENVELOPE)
            hd_ws_emit_gap(ws, e);
        if (hd_ws_hold_history(ws, e, msgs, n) == 0)
            hd_ws_pump(ws);
    }
    hd_ws_leave(ws);
}

static const hd_sub_ops_t raw_sub_ops = {
    .format = HD_FMT_WS_RAW, .on_ready = chan_on_ready, .on_message = hd_ws_sub_on_message};
static const hd_sub_ops_t envelope_sub_ops = {.format = HD_FMT_WS_ENVELOPE,
                                              .on_ready = chan_on_ready,
                                              .on_message = hd_ws_sub_on_message,
                                              .on_gap = hd_ws_sub_on_gap};

static void on_abort(hd_deferred_t *d)
{
    ws_t *ws = d->data;
    hd_ws_pub(ws)->d = NULL;
    hd_ws_gone(ws);
}

/* /ws/{channel}: the order came before the subscription was live; the handshake is answered
 * as a refused request (401 token_revoked, 409 disconnected). */
static int on_deferred_kick(hd_deferred_t *d, const hd_kick_t *k)
{
    ws_t *ws = d->data;
    ws_public_t *pub = hd_ws_pub(ws);
    if (k->kind == HD_KICK_CHANNEL && !hd_ws_sub_find(ws, k->key, k->len))
        return 0;
    hd_req_t *req = d->req;
    hd_ws_enter(ws);
    pub->d = NULL;
    hd_ws_gone(ws);
    hd_conn_set_identity(req->conn, NULL); /* the connection goes on as plain HTTP */
    hd_tp_kick_respond(req, k);
    hd_ws_leave(ws);
    return 1;
}

static void on_ws(hd_req_t *req, void *arg)
{
    (void)arg;
    ws_handshake_t hs = {0};
    if (hd_ws_check_handshake(req, &hs) < 0)
        return;
    /* A token on the handshake (Authorization: Bearer or ?token=): a bad one is 401 here. */
    hd_tp_cred_t cred;
    if (hd_tp_connect_credential(req, &cred) < 0)
        return;
    if (req->path_len == 3) { /* "/ws": the JSON protocol, live at once */
        const hd_auth_t *auth = hd_worker_conf(req->conn->worker)->auth;
        /* authorize_hook connect=on: the backend decides the connect before the upgrade (its
         * identity, if it gives one, is the connection's) */
        if (hd_tp_authorize_channels(req, &cred, NULL, 0, HD_AUTH_SUBSCRIBE, "websocket") < 0) {
            hd_tp_cred_dispose(&cred);
            return;
        }
        ws_t *ws = hd_ws_new(req, WS_MODE_JSON, &hd_ws_json_proto, &hs);
        ws_public_t *pub = hd_ws_pub(ws);
        pub->is_backend = cred.is_backend;
        /* Without a token, the first message must authenticate (or say it stays anonymous). */
        pub->needs_auth = hd_auth_has_key(auth) && !cred.id && !cred.is_backend;
        if (cred.id)
            hd_conn_set_identity(req->conn, cred.id);
        hd_tp_cred_dispose(&cred);
        hd_ws_enter(ws);
        hd_ws_upgrade(ws, req);
        hd_ws_leave(ws);
        return;
    }
    char name[HD_CHANNEL_MAX + 1];
    int n = hd_tp_channel_from_path(req, 4, name);
    if (n < 0) {
        hd_tp_cred_dispose(&cred);
        return;
    }
    uint64_t epoch = 0, seq = 0;
    int has_since = 0;
    char v[256];
    const char *what = "since";
    int qlen = hd_req_query(req, "since", v, sizeof(v));
    if (qlen < 0) {
        what = "last_event_id";
        qlen = hd_req_query(req, what, v, sizeof(v));
    }
    if (qlen > 0) {
        if (hd_tp_parse_id(req, what, v, (size_t)qlen, &epoch, &seq) < 0) {
            hd_tp_cred_dispose(&cred);
            return;
        }
        has_since = 1;
    }
    /* Refused before the upgrade: a plain 401/403 with its JSON reason. */
    if (hd_tp_authorize_channels(req, &cred, (const char(*)[HD_CHANNEL_MAX + 1]) & name, 1,
                                 has_since ? HD_AUTH_HISTORY : HD_AUTH_SUBSCRIBE,
                                 "websocket") < 0) {
        hd_tp_cred_dispose(&cred);
        return;
    }
    /* ?presence=1 (herald.v1 only: a plain client has no envelope for the events). */
    int events = hd_tp_presence_query(req, (const char(*)[HD_CHANNEL_MAX + 1]) & name, 1);
    if (events < 0 || (events && !hs.has_subprotocol)) {
        hd_tp_cred_dispose(&cred);
        if (events > 0)
            hd_http_respond_error(req, 400, "presence=1 needs the herald.v1 subprotocol");
        return;
    }
    /* ?ack=1 (herald.v1 only: a plain client's text is published, it has no ack message). */
    int acks = 0;
    qlen = hd_req_query(req, "ack", v, sizeof(v));
    if (qlen >= 0) {
        acks = strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0;
        if ((!acks && strcmp(v, "0") != 0 && strcmp(v, "false") != 0 && strcmp(v, "off") != 0) ||
            (acks && !hs.has_subprotocol)) {
            hd_tp_cred_dispose(&cred);
            hd_http_respond_error(req, 400,
                                  acks ? "ack=1 needs the herald.v1 subprotocol"
                                       : "ack must be 1, on, true, 0, off or false");
            return;
        }
    }
    if (cred.id)
        hd_conn_set_identity(req->conn, cred.id);
    int mode = hs.has_subprotocol ? WS_MODE_ENVELOPE : WS_MODE_RAW;
    ws_t *ws = hd_ws_new(req, mode, &chan_proto, &hs);
    ws_public_t *pub = hd_ws_pub(ws);
    pub->is_backend = cred.is_backend;
    hd_tp_cred_dispose(&cred);
    ws_sub_t *e = hd_ws_sub_add(ws, name, (size_t)n);
    if (acks)
        hd_ws_ack_enable(e);
    pub->d = hd_http_defer(req);
    pub->d->data = ws;
    pub->d->on_abort = on_abort;
    pub->d->on_kick = on_deferred_kick;
    e->sub = hd_hub_subscribe(pub->w, name, (size_t)n, has_since ? &epoch : NULL,
                              has_since ? &seq : NULL,
                              mode == WS_MODE_RAW ? &raw_sub_ops : &envelope_sub_ops, e);
    hd_hub_presence(e->sub, events,
                    hd_tp_member(hd_ws_conf(ws), req->conn, pub->is_backend, name, (size_t)n));
}

void hd_ws_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/ws/", 1, on_ws, NULL);
    hd_router_add(r, HD_M_GET, "/ws", 0, on_ws, NULL);
}
