/* SPDX-License-Identifier: MIT */
/*
 * ws_ticket.c: a single-use ticket sent in the /ws auth message ({"type":"auth","ticket":..},
 * docs/auth.md) taken from the broker (HD_BREQ_TICKET_TAKE: once, on any node). The broker
 * answers later, so the connection's input waits between frames meanwhile (what the client
 * sends after its auth message is read once the answer came, in order), and the connection's
 * memory stays until the answer (hd_ws_enter/leave) even if the peer leaves.
 */
#include "ws_internal.h"

typedef struct ws_ticket_s {
    ws_t *ws;
    ws_ticket_cb done;
    json_t *ref;
} ws_ticket_t;

static void on_taken(hd_worker_t *w, hd_breq_t *r)
{
    ws_ticket_t *t = r->cookie;
    ws_t *ws = t->ws;
    hd_identity_t *id = NULL;
    int err = r->err;
    char why[160];
    if (err == 0)
        HD_STAT_INC(w, tickets_used);
    else if (err == HD_ENOTFOUND)
        HD_STAT_INC(w, tickets_refused_invalid);
    if (err == 0 && hd_identity_from_json(&id, r->data, r->data_len, why, sizeof(why)) < 0) {
        hd_conn_log(HD_LOG_WARN, ws->pub.conn, "ticket with unusable claims: %s", why);
        err = HD_EUNAUTHENTICATED;
    }
    ws->is_authing = 0;
    if (hd_ws_is_open(ws)) {
        t->done(ws, err, id, t->ref);
        if (hd_ws_is_open(ws) && !ws->is_throttled) {
            hd_conn_read_start(ws->pub.conn);
            hd_ws_read_input(ws); /* what came after the auth message */
        }
    }
    hd_identity_unref(id);
    hd_ws_leave(ws);
    json_decref(t->ref);
    free(t);
    hd_breq_free(r);
}

void hd_ws_take_ticket(ws_t *ws, const char *ticket, ws_ticket_cb done, json_t *ref)
{
    char key[HD_TICKET_KEY_LEN + 1];
    ws_ticket_t *t = hd_calloc(1, sizeof(*t));
    t->ws = ws;
    t->done = done;
    t->ref = ref ? json_incref(ref) : NULL;
    hd_ws_enter(ws); /* left in on_taken */
    ws->is_authing = 1;
    hd_ticket_key(ticket, key);
    hd_breq_t *r = hd_breq_new(HD_BREQ_TICKET_TAKE, ws->pub.w, key, HD_TICKET_KEY_LEN);
    r->reply_cb = on_taken;
    r->cookie = t;
    hd_broker_submit(r);
}
