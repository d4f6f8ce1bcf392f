/* SPDX-License-Identifier: MIT */
/*
 * sender.c: the webhook sender made and closed, on the hooks thread (sender.h draws its files;
 * delivery.c says what becomes of an event). It owns the retry timer's and the poll timer's
 * handles, and with Redis wires durable.c to delivery.c's table and registry.c to regsync.c's:
 * every POLL_MS each endpoint with room asks Redis for entries, the cluster's presence and
 * occupancy events are taken, and the registry's version is read.
 */
#include "herald/log.h"
#include "sender.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* With Redis, how often an endpoint with room asks for entries other nodes queued or retries
 * that came due (its own events are taken as soon as they are queued). */
#define POLL_MS 200

static void on_poll(uv_timer_t *t)
{
    hk_sender_t *s = t->data;
    for (size_t i = 0; i < s->n_eps; i++)
        hk_sender_pump(s, s->eps[i]);
    hk_durable_take_members(s->dur);
    hk_registry_poll(s->reg);
}

hk_sender_t *hk_sender_new(uv_loop_t *loop, hd_conf_t *conf, SSL_CTX *tls, hd_hooks_stats_t *st,
                           hk_filter_t *filter)
{
    hk_sender_t *s = hd_calloc(1, sizeof(*s));
    s->loop = loop;
    s->conf = conf;
    s->st = st;
    s->filter = filter;
    s->cc.loop = loop;
    s->cc.tls = tls;
    s->cc.connect_timeout_ms = conf->webhook_connect_timeout_ms;
    s->cc.timeout_ms = conf->webhook_timeout_ms;
    s->cc.allow_private = conf->webhook_allow_private;
    s->cc.wbatch = hd_wbatch_new();
    if (!s->cc.wbatch)
        hd_log_info("webhooks: no Linux AIO (io_setup: %s): each connection is written on its own",
                    strerror(errno));
    if (RAND_bytes((unsigned char *)&s->rng, sizeof(s->rng)) != 1)
        s->rng = uv_hrtime();
    s->rng |= 1;
    hd_heap_init(&s->retry, 0);
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    hd_list_init(&s->dlq);
    hd_list_init(&s->resolving);
    uv_timer_init(loop, &s->poll);
    s->poll.data = s;
    if (conf->redis && (conf->n_webhooks || conf->webhook_max_endpoints)) {
        s->dur = hk_durable_new(loop, conf, st, &hk_sender_durable_ops, s);
        if (s->dur)
            uv_timer_start(&s->poll, on_poll, POLL_MS, POLL_MS);
        if (s->dur)
            s->reg = hk_registry_new(loop, conf, hk_durable_conn(s->dur), &hk_regsync_ops, s);
    }
    s->cap_eps = conf->n_webhooks + conf->webhook_max_endpoints;
    s->eps = hd_calloc(s->cap_eps ? s->cap_eps : 1, sizeof(*s->eps));
    for (size_t i = 0; i < conf->n_webhooks; i++)
        hk_endpoint_add(s, &conf->webhooks[i], NULL, NULL);
    return s;
}

static void on_timer_closed(uv_handle_t *h)
{
    hk_sender_t *s = h->data;
    if (--s->n_closing == 0) /* the last of its two timers */
        free(s);
}

size_t hk_sender_close(hk_sender_t *s)
{
    size_t lost = 0;
    int is_durable = s->dur != NULL;
    if (s->dur) {
        /* what this node took and did not finish stays pending in Redis: another node (or
         * this one restarted) claims it after webhook_claim_after; only what never reached
         * Redis is lost */
        lost = hk_durable_close(s->dur); /* frees the endpoints' slots */
        s->dur = NULL;
        hk_registry_close(s->reg); /* after: its answers owed came back (NULL) meanwhile */
        s->reg = NULL;
    }
    for (size_t i = 0; i < s->n_eps; i++) {
        s->eps[i]->slot = NULL;
        size_t n = hk_endpoint_free(s, s->eps[i]);
        lost += is_durable ? 0 : n;
    }
    while (!hd_list_empty(&s->dlq))
        hk_letter_free(s, hd_container_of(s->dlq.next, hk_letter_t, link));
    hk_admin_cancel(s);
    hd_wbatch_free(s->cc.wbatch); /* the pools closed: no flush comes */
    s->cc.wbatch = NULL;
    hd_heap_dispose(&s->retry);
    free(s->eps);
    s->n_closing = 2;
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->poll, on_timer_closed);
    return lost;
}
