/* SPDX-License-Identifier: MIT */
/*
 * ws_conn.c: a WebSocket connection (RFC 6455) after the handshake: its creation and upgrade,
 * lifetime, the one timer (pings, idle limit, auth deadline, the token's refresh notice and
 * expiry), the connection's handler table, and its subscriptions. What the messages mean is the
 * protocol's (ws_proto_t: websocket.c for /ws/{channel}, ws_json.c for /ws); framing is
 * ws_frame.c's, output ws_output.c's, client publishes ws_publish.c's (ws_internal.h).
 *
 * Lifetime: wslay, the hub and the protocol call back into the connection, and a connection can
 * end inside any callback (a slow-consumer drop, a write error). Every entry point brackets its
 * work with hd_ws_enter()/hd_ws_leave(); on_close marks the state gone (unsubscribing everything
 * at once) and the memory goes then, or when the outermost entry point leaves.
 */
#include "ws_internal.h"

#include <string.h>

static const hd_conn_ops_t ws_conn_ops;

static void free_sub(ws_sub_t *e)
{
    if (e->sub)
        hd_hub_unsubscribe(e->sub);
    hd_ws_ack_free(e->ws, e);
    json_decref(e->ref);
    free(e);
}

static void free_ws(ws_t *ws)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++)
        free_sub(ws->pub.subs[i]);
    if (ws->pub.subs != &ws->sub1)
        free(ws->pub.subs);
    hd_ws_backlog_clear(ws);
    hd_ws_free_rx(ws);
    hd_rcpt_unref(ws->rcpt);
    free(ws->bearer);
    json_decref(ws->hook_ctx);
    HD_HUB_STAT_ADD(ws->pub.w, transport_conns[HD_TP_WS], -1);
    free(ws);
}

/* The connection has gone: stop every subscription now, free the memory when not busy. */
void hd_ws_gone(ws_t *ws)
{
    if (!ws->is_gone) {
        ws->is_gone = 1;
        ws->pub.conn = NULL;
        for (uint32_t i = 0; i < ws->pub.n_subs; i++) {
            if (ws->pub.subs[i]->sub)
                hd_hub_unsubscribe(ws->pub.subs[i]->sub);
            ws->pub.subs[i]->sub = NULL;
        }
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &ws->pubs)
        {
            ws_pending_t *p = hd_container_of(pos, ws_pending_t, link);
            p->ws = NULL; /* its answer will find nobody */
            hd_list_remove(&p->link);
        }
        hd_ws_backlog_clear(ws);
        if (ws->rcpt)
            hd_rcpt_close(ws->rcpt); /* receipts still on their way find nobody */
    }
    if (ws->busy == 0)
        free_ws(ws);
}

void hd_ws_enter(ws_t *ws)
{
    ws->busy++;
}

void hd_ws_leave(ws_t *ws)
{
    if (--ws->busy == 0 && ws->is_gone)
        free_ws(ws);
}

/* ---- subscriptions ---- */

ws_sub_t *hd_ws_sub_find(ws_t *ws, const char *channel, size_t len)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++)
        if (ws->pub.subs[i]->len == len && memcmp(ws->pub.subs[i]->channel, channel, len) == 0)
            return ws->pub.subs[i];
    return NULL;
}

ws_sub_t *hd_ws_sub_add(ws_t *ws, const char *channel, size_t len)
{
    if (ws->cap_subs == 0) {
        ws->pub.subs = &ws->sub1;
        ws->cap_subs = 1;
    } else if (ws->pub.n_subs == ws->cap_subs) {
        /* Out of the inline slot into an array (of 2, then doubling). */
        int was_inline = ws->pub.subs == &ws->sub1;
        size_t cap = was_inline ? 0 : ws->cap_subs;
        ws_sub_t **subs = hd_grow_array(was_inline ? NULL : ws->pub.subs, &cap, ws->pub.n_subs + 1u,
                                        sizeof(*subs), 2);
        if (was_inline)
            subs[0] = ws->sub1;
        ws->pub.subs = subs;
        ws->cap_subs = (uint32_t)cap;
    }
    ws_sub_t *e = hd_calloc(1, sizeof(*e) + len + 1);
    e->ws = ws;
    e->id = ++ws->next_sub_id;
    e->len = (uint8_t)len;
    memcpy(e->channel, channel, len);
    ws->pub.subs[ws->pub.n_subs++] = e;
    return e;
}

void hd_ws_sub_remove(ws_t *ws, ws_sub_t *e)
{
    for (uint32_t i = 0; i < ws->pub.n_subs; i++) {
        if (ws->pub.subs[i] == e) {
            ws->pub.subs[i] = ws->pub.subs[--ws->pub.n_subs];
            break;
        }
    }
    hd_ws_backlog_purge(ws, e->id);
    free_sub(e);
}

void hd_ws_sub_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    hd_ws_enter(ws);
    hd_ws_emit(ws, encoded, e->id);
    if (m->rcpt && hd_ws_is_open(ws))
        hd_ws_ack_note(ws, e, m); /* receipts asked: "delivered", and "acked" due */
    hd_ws_leave(ws);
}

void hd_ws_sub_on_gap(hd_sub_t *s)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    if (ws->pub.mode == WS_MODE_RAW)
        return; /* a plain client has no envelope to carry the notice */
    hd_ws_enter(ws);
    hd_ws_emit_gap(ws, e);
    hd_ws_leave(ws);
}

/*
 * Arms the connection's one timer for the earliest of: the next ping, the idle limit, the auth
 * message's deadline (/ws without a token), and the token's next event (refresh notice, expiry).
 */
static void arm_timer(ws_t *ws, uint64_t now)
{
    const hd_conf_t *conf = conf_of(ws);
    uint64_t ping_at = ws->last_ping_ms + conf->ws_ping_interval_ms;
    uint64_t idle_at = ws->last_rx_ms + conf->ws_idle_timeout_ms;
    uint64_t at = ping_at < idle_at ? ping_at : idle_at;
    if (ws->pub.needs_auth && ws->pub.auth_deadline_ms < at)
        at = ws->pub.auth_deadline_ms;
    uint64_t life = hd_tp_life_wait_ms(&ws->pub.life);
    if (life != UINT64_MAX && now + life < at)
        at = now + life;
    if (!ws->is_gone)
        hd_conn_set_timeout(ws->pub.conn, at > now ? at - now : 1);
}

void hd_ws_life_reset(ws_t *ws)
{
    hd_tp_life_set(&ws->pub.life, conf_of(ws), hd_ws_identity(ws), ws->pub.mode != WS_MODE_RAW);
    if (!ws->is_gone && !ws->is_closing)
        arm_timer(ws, now_ms(ws));
}

/* {"type":"refresh_needed","exp":N}: the token runs out soon (auth_refresh_before). */
static void emit_refresh_needed(ws_t *ws)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("refresh_needed"));
    json_object_set_new(o, "exp", json_integer((json_int_t)hd_identity_exp(hd_ws_identity(ws))));
    hd_ws_emit_json(ws, o);
}

static void start_stream(ws_t *ws)
{
    uint64_t now = ws->last_rx_ms = ws->last_ping_ms = now_ms(ws);
    const hd_conf_t *conf = conf_of(ws);
    if (ws->pub.needs_auth) /* without a token, the auth message must come within auth_timeout */
        ws->pub.auth_deadline_ms = now + conf->auth_timeout_ms;
    hd_tp_life_set(&ws->pub.life, conf, hd_ws_identity(ws), ws->pub.mode != WS_MODE_RAW);
    arm_timer(ws, now);
    if (ws->pub.w->is_draining || ws->pub.w->is_stopped)
        hd_ws_close(ws, 1001, "server shutting down");
}

void hd_ws_upgrade(ws_t *ws, hd_req_t *req)
{
    char head[256];
    snprintf(head, sizeof(head),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s",
             ws->accept,
             ws->has_subprotocol ? "Sec-WebSocket-Protocol: " WS_SUBPROTOCOL "\r\n" : "");
    if (hd_hooks_notify_wants(HD_NOTIFY_CONNECT)) {
        const char *chs[1];
        size_t lens[1], n = 0;
        if (ws->pub.mode != WS_MODE_JSON && ws->pub.n_subs) {
            chs[0] = ws->pub.subs[0]->channel;
            lens[n++] = ws->pub.subs[0]->len;
        }
        hd_tp_notify_connect(req->conn, hd_req_client_ip(req), "websocket", chs, lens, n);
    }
    hd_http_take_over(req, 101, head, &ws_conn_ops, ws); /* may read early frames */
    if (!ws->is_gone)
        start_stream(ws);
}

/* ---- the connection ---- */

static void ws_on_data(hd_conn_t *c, const char *data, size_t len)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    ws->last_rx_ms = now_ms(ws);
    hd_ws_on_input(ws, data, len);
    hd_ws_leave(ws);
}

static void ws_on_eof(hd_conn_t *c)
{
    hd_conn_log(HD_LOG_DEBUG, c, "peer went away without a close frame");
    hd_conn_close(c);
}

/* The one timer: a ping every ws_ping_interval, the end of a peer silent too long, and the
 * token's refresh notice and expiry (docs/auth.md). */
static void ws_on_timeout(hd_conn_t *c)
{
    ws_t *ws = c->data;
    const hd_conf_t *conf = conf_of(ws);
    hd_ws_enter(ws);
    uint64_t now = now_ms(ws);
    int life = hd_tp_life_due(&ws->pub.life);
    if (life == HD_TP_LIFE_EXPIRED) {
        hd_conn_log(HD_LOG_INFO, c, "token expired: closing (4001)");
        hd_ws_close(ws, 4001, "token expired");
    } else if (ws->pub.needs_auth && now >= ws->pub.auth_deadline_ms) {
        hd_ws_close(ws, 4401,
                    "authentication timed out: send {\"op\":\"auth\",\"token\":..} first");
    } else if (now - ws->last_rx_ms >= conf->ws_idle_timeout_ms) {
        HD_STAT_INC(c->worker, timeouts); /* herald_timeouts_total, as HTTP's timeouts */
        hd_ws_close(ws, 1001, "idle timeout");
    } else {
        if (life == HD_TP_LIFE_REFRESH)
            emit_refresh_needed(ws);
        if (now - ws->last_ping_ms >= conf->ws_ping_interval_ms) {
            if (ws->rx) { /* behind what wslay holds */
                struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
                wslay_event_queue_msg(ws->rx->ctx, &ping);
                hd_ws_flush_control(ws);
                hd_ws_release_rx_if_idle(ws);
            } else {
                /* A silent peer has no wslay context, and none is made (9 KiB zeroed) only
                 * to write the two bytes wslay would: FIN and opcode 9, unmasked, empty. */
                static const uint8_t ping[2] = {0x89, 0x00};
                hd_conn_send_copy(ws->pub.conn, ping, sizeof(ping));
            }
            ws->last_ping_ms = now;
        }
        arm_timer(ws, now);
    }
    hd_ws_leave(ws);
}

static void ws_on_drain(hd_conn_t *c)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    hd_ws_pump(ws);
    hd_ws_leave(ws);
}

/* An operator's order (conn.h hd_kick_t; docs/auth.md): a connection of the revoked identity
 * closes with 4002, one disconnected (by sub, or on the channel) with 4009. */
static int ws_on_kick(hd_conn_t *c, const hd_kick_t *k)
{
    ws_t *ws = c->data;
    if (!hd_ws_is_open(ws) || (k->kind == HD_KICK_CHANNEL && !hd_ws_sub_find(ws, k->key, k->len)))
        return 0;
    hd_ws_enter(ws);
    hd_ws_close(ws, hd_err_ws_close(hd_tp_kick_err(k)), hd_tp_kick_reason(k));
    hd_ws_leave(ws);
    return 1;
}

static void ws_on_shutdown(hd_conn_t *c)
{
    ws_t *ws = c->data;
    hd_ws_enter(ws);
    hd_ws_close(ws, 1001, "server shutting down");
    hd_ws_leave(ws);
}

static void ws_on_close(hd_conn_t *c)
{
    hd_tp_notify_disconnect(c);
    hd_ws_gone(c->data);
}

static const hd_conn_ops_t ws_conn_ops = {
    .name = "ws",
    .on_data = ws_on_data,
    .on_eof = ws_on_eof,
    .on_timeout = ws_on_timeout,
    .on_drain = ws_on_drain,
    .on_shutdown = ws_on_shutdown,
    .on_close = ws_on_close,
    .on_kick = ws_on_kick,
};

ws_t *hd_ws_new(hd_req_t *req, int mode, const ws_proto_t *proto, const ws_handshake_t *hs)
{
    ws_t *ws = hd_calloc(1, sizeof(*ws));
    ws->pub.w = req->conn->worker;
    ws->pub.conn = req->conn;
    ws->pub.mode = (uint8_t)mode;
    ws->proto = proto;
    ws->fmt = mode == WS_MODE_RAW ? HD_FMT_WS_RAW : HD_FMT_WS_ENVELOPE;
    ws->has_subprotocol = hs->has_subprotocol;
    ws->is_local = hs->is_local;
    memcpy(ws->accept, hs->accept, sizeof(ws->accept));
    if (hs->bearer) {
        ws->bearer = hd_malloc(hs->bearer_len + 1);
        memcpy(ws->bearer, hs->bearer, hs->bearer_len);
        ws->bearer_len = (uint32_t)hs->bearer_len;
    }
    /* /ws subscribe ops may ask the authorize hook later, when the request is long gone */
    const hd_hook_def_t *hook = hd_worker_conf(ws->pub.w)->authorize_hook;
    if (hook && mode == WS_MODE_JSON)
        ws->hook_ctx = hd_tp_hook_context(req, hook);
    hd_list_init(&ws->pubs);
    hd_bucket_init(&ws->pub_bucket);
    hd_bucket_init(&ws->pub.eph_bucket);
    HD_HUB_STAT_ADD(ws->pub.w, transport_conns[HD_TP_WS], 1);
    return ws;
}
