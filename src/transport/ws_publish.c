/* SPDX-License-Identifier: MIT */
/*
 * ws_publish.c: publishes made by a WebSocket client (both protocols): whether the connection
 * may publish to a channel (the handshake's key, the local-client rule, the token's grants), the
 * publisher stamp, client_publish_rate, the broker's answers, and the delivery receipts of
 * messages published with "receipt" (receipt.c brings them here). Input waits while too many
 * publishes are in flight; a publish outlives its connection if need be.
 */
#include "ws_internal.h"

#include <string.h>

#define WS_MAX_PUBLISHES 64 /* client publishes awaiting the broker before input waits */

int hd_ws_bearer_ok(ws_t *ws)
{
    const hd_conf_t *conf = conf_of(ws);
    if (conf->publish_keys.n == 0)
        return ws->is_local;
    return hd_tp_key_match(&conf->publish_keys, ws->bearer, ws->bearer_len) == 0;
}

int hd_ws_may_publish(ws_t *ws, const char *channel, size_t len, const char **reason)
{
    const hd_conf_t *conf = conf_of(ws);
    *reason = NULL;
    /* The backend: a publish key on the handshake, or (no publish_key) a local client. */
    if (!hd_auth_enabled(conf->auth) || ws->pub.is_backend || hd_ws_bearer_ok(ws))
        return 0;
    switch (hd_auth_check(conf->auth, hd_ws_identity(ws), channel, len, HD_AUTH_PUBLISH, reason)) {
    case HD_AUTH_OK:
        return 0;
    case HD_AUTH_UNAUTHENTICATED:
        return HD_EUNAUTHENTICATED;
    default:
        return HD_EFORBIDDEN;
    }
}

void hd_ws_stamp(ws_t *ws, hd_message_t *m)
{
    char *stamp = hd_tp_publisher_json(hd_ws_identity(ws));
    if (stamp)
        hd_message_set_publisher(m, stamp);
    free(stamp);
}

int hd_ws_publish_allowed(ws_t *ws, uint64_t *retry_ms)
{
    uint32_t rate = conf_of(ws)->client_publish_rate;
    *retry_ms = 0;
    if (rate == 0 || hd_bucket_take(&ws->pub_bucket, now_ms(ws), rate, rate, retry_ms))
        return 1;
    HD_STAT_INC(ws->pub.w, client_publish_refused);
    return 0;
}

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    ws_pending_t *p = arg;
    ws_t *ws = p->ws;
    if (ws) {
        hd_ws_enter(ws);
        hd_list_remove(&p->link);
        ws->n_pubs--;
        ws->proto->on_published(ws, err, n ? msgs[0] : NULL, p->ref);
        if (ws->is_throttled && ws->n_pubs <= WS_MAX_PUBLISHES / 2) {
            ws->is_throttled = 0;
            if (hd_ws_is_open(ws) && !ws->is_authing) {
                hd_conn_read_start(ws->pub.conn);
                hd_ws_read_input(ws);
            }
        }
        hd_ws_leave(ws);
    }
    json_decref(p->ref);
    free(p);
}

/* Publishes m (the reference passes) through the broker; the answer comes to on_published. */
void hd_ws_publish(ws_t *ws, hd_message_t *m, json_t *ref)
{
    ws_pending_t *p = hd_calloc(1, sizeof(*p));
    p->ws = ws;
    p->ref = ref ? json_incref(ref) : NULL;
    hd_list_insert_tail(&ws->pubs, &p->link);
    if (++ws->n_pubs >= WS_MAX_PUBLISHES)
        ws->is_throttled = 1;
    hd_tp_publish(ws->pub.w, &m, 1, on_published, p);
}

/*
 * A receipt of one of this connection's publishes, on its worker:
 *   {"type":"receipt","channel":c,"id":ID,"status":"delivered"}
 *   {"type":"receipt","channel":c,"id":ID,"status":"acked","member":{"sub":..}|null,"conn":..}
 * Channel names, ids and connection ids need no JSON escaping; member is the server's JSON.
 */
static void on_receipt(void *owner, int status, const char *channel, const char *id,
                       const char *member, const char *conn)
{
    ws_t *ws = owner;
    hd_sbuf_t body, sb;
    hd_sbuf_init(&body, 160 + (member ? strlen(member) : 0));
    hd_sbuf_appendf(
        &body, "{\"type\":\"receipt\",\"channel\":\"%s\",\"id\":\"%s\",\"status\":", channel, id);
    if (status == HD_RCPT_DELIVERED)
        hd_sbuf_appends(&body, "\"delivered\"}");
    else
        hd_sbuf_appendf(&body, "\"acked\",\"member\":%s,\"conn\":\"%s\"}", member ? member : "null",
                        conn);
    hd_sbuf_init(&sb, body.buf->len + 10);
    hd_ws_frame_header(&sb, WSLAY_TEXT_FRAME, body.buf->len);
    hd_sbuf_append(&sb, body.buf->data, body.buf->len);
    hd_sbuf_dispose(&body);
    hd_buf_t *b = hd_sbuf_finish(&sb);
    hd_ws_enter(ws);
    hd_ws_emit(ws, b, 0);
    hd_ws_leave(ws);
    hd_buf_unref(b);
}

void hd_ws_want_receipts(ws_t *ws, hd_message_t *m)
{
    if (!ws->rcpt)
        ws->rcpt = hd_rcpt_new(ws->pub.w, ws->pub.conn->id, on_receipt, ws);
    m->rcpt = hd_rcpt_ref(ws->rcpt);
}
