/* SPDX-License-Identifier: MIT */
/*
 * ticket.c: POST /auth/ticket (docs/auth.md, "Tickets"): the application backend vouches for a
 * user, and herald hands back an opaque single-use ticket the user's browser puts in its
 * connect URL. Who may ask is decided by the guard (access.c: the publish key or the admin
 * credentials). The body is parsed by hd_ticket_request_parse (src/auth/ticket.c); the ticket's
 * claims are stored by the broker under the ticket's key (HD_BREQ_TICKET_PUT: the embedded
 * store, or Redis so that any node can take it), and the answer waits for the broker without
 * blocking the loop:
 *
 *   201 {"ticket":"<32 base64url characters>","expires_in":30}
 *   400 {"error":reason}   the body (hd_ticket_request_parse says why)
 *   409                     authorization is off: nothing would check a ticket
 *   503 + Retry-After       auth_max_tickets tickets wait already; the broker cannot answer
 *
 * The transports take tickets (src/transport/authz.c).
 */
#include "herald/api.h"

#include <stdio.h>
#include <string.h>

/* A ticket on its way to the store; d is NULL once the request is gone. */
typedef struct ticket_put_s {
    hd_deferred_t *d;
    uint64_t ttl_ms;
    char ticket[HD_TICKET_LEN + 1];
} ticket_put_t;

static void on_abort(hd_deferred_t *d)
{
    ticket_put_t *tp = d->data;
    tp->d = NULL;
}

static void on_stored(hd_worker_t *w, hd_breq_t *r)
{
    ticket_put_t *tp = r->cookie;
    hd_deferred_t *d = tp->d;
    if (r->err == 0)
        HD_STAT_INC(w, tickets_issued);
    else if (r->err == HD_ETICKETS)
        HD_STAT_INC(w, tickets_refused_full);
    if (d) {
        hd_req_t *req = d->req;
        d->data = NULL;
        d->on_abort = NULL;
        if (r->err == 0) {
            char body[128];
            int n;
            if (tp->ttl_ms % 1000 == 0)
                n = snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"expires_in\":%llu}",
                             tp->ticket, (unsigned long long)(tp->ttl_ms / 1000));
            else
                n = snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"expires_in\":%.3f}",
                             tp->ticket, (double)tp->ttl_ms / 1000.0);
            hd_http_respond(req, 201, "Cache-Control: no-store\r\n", "application/json", body,
                            (size_t)n);
        } else {
            if (r->err == HD_ETICKETS)
                hd_conn_log(HD_LOG_INFO, req->conn, "ticket refused: auth_max_tickets reached");
            hd_tp_respond_failure(req, r->err);
        }
    }
    explicit_bzero(tp->ticket, sizeof(tp->ticket));
    free(tp);
    hd_breq_free(r);
}

static void on_ticket(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_worker_t *w = req->conn->worker;
    const hd_conf_t *conf = hd_worker_conf(w);
    if (!hd_auth_enabled(conf->auth)) {
        hd_http_respond_error(req, 409,
                              "authorization is off (no auth_jwt_* key and no channel_rule): "
                              "nothing would check a ticket");
        return;
    }
    hd_ticket_request_t tr;
    char why[200];
    if (hd_ticket_request_parse(req->body, req->body_len, conf->auth_ticket_ttl_ms,
                                conf->auth_ticket_max_ttl_ms, &tr, why, sizeof(why)) < 0) {
        hd_http_respond_error(req, 400, why);
        return;
    }
    ticket_put_t *tp = hd_calloc(1, sizeof(*tp));
    if (hd_ticket_new(tp->ticket) < 0) {
        hd_ticket_request_dispose(&tr);
        free(tp);
        hd_log_error("POST /auth/ticket: RAND_bytes failed");
        hd_http_respond_error(req, 500, "no random bytes for a ticket");
        return;
    }
    char key[HD_TICKET_KEY_LEN + 1];
    hd_ticket_key(tp->ticket, key);
    tp->ttl_ms = tr.ttl_ms;
    hd_breq_t *r = hd_breq_new(HD_BREQ_TICKET_PUT, w, key, HD_TICKET_KEY_LEN);
    r->data = tr.claims; /* the request owns them now */
    r->data_len = tr.claims_len;
    r->ttl_ms = tr.ttl_ms;
    r->limit = conf->auth_max_tickets;
    r->reply_cb = on_stored;
    r->cookie = tp;
    tp->d = hd_http_defer(req);
    tp->d->data = tp;
    tp->d->on_abort = on_abort;
    hd_broker_submit(r);
}

void hd_ticket_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_POST, "/auth/ticket", 0, on_ticket, NULL);
}
