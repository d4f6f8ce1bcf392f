/* SPDX-License-Identifier: MIT */
/*
 * endpoint.c: the webhook sender's endpoints (sender.h draws its files).
 *
 * Endpoints: the conf's, fixed, then those the admin API registers and deletes (REGISTER,
 * DELETE; with Redis, those any node registered, read back by registry.c). A deleted endpoint
 * takes with it what it holds here: its connections (requests in flight are cut, without
 * their callbacks), its pending events and its dead letters; the publishing threads' filter
 * (filter.c) is told after every change. hk_sender_ep_stats copies every endpoint's figures for
 * /metrics (hooks.c publishes them once a second).
 */
#include "herald/log.h"
#include "sender.h"

#include <stdio.h>
#include <string.h>

/* The admin API's endpoints changed: the publishing threads' filter learns of it. */
void hk_endpoint_filter_update(hk_sender_t *s)
{
    const hd_webhook_def_t **defs = hd_calloc(s->n_api ? s->n_api : 1, sizeof(*defs));
    size_t n = 0;
    for (size_t i = 0; i < s->n_eps; i++) {
        if (s->eps[i]->is_api)
            defs[n++] = s->eps[i]->def;
    }
    hk_filter_set(s->filter, defs, n);
    free(defs);
}

/* A new endpoint, last: def is the conf's, or own (then record too) one the admin API
 * registered, both taken. The caller checked there is room (s->n_eps < s->cap_eps). */
hk_endpoint_t *hk_endpoint_add(hk_sender_t *s, const hd_webhook_def_t *def, hd_webhook_def_t *own,
                               char *record)
{
    HD_ASSERT(s->n_eps < s->cap_eps);
    hk_endpoint_t *ep = hd_calloc(1, sizeof(*ep));
    ep->s = s;
    ep->def = own ? own : def;
    ep->own_def = own;
    ep->record = record;
    ep->is_api = own != NULL;
    ep->pool = hk_pool_new(ep->def, &s->cc);
    ep->signer = hk_signer_new(ep->def);
    hd_list_init(&ep->ready);
    hd_list_init(&ep->all);
    if (s->dur)
        ep->slot = hk_durable_slot_new(s->dur, ep->def, ep);
    s->eps[s->n_eps++] = ep;
    s->n_api += ep->is_api;
    HK_SET(s->st->endpoints, (uint64_t)s->n_eps);
    return ep;
}

/* Frees ep with what it holds: its connections (requests in flight are cut), its pending events
 * and its dead letters (in memory). Returns the events that were pending here. */
size_t hk_endpoint_free(hk_sender_t *s, hk_endpoint_t *ep)
{
    size_t n = 0;
    hk_pool_close(ep->pool); /* requests in flight end without their callback */
    while (!hd_list_empty(&ep->all)) {
        hk_job_t *j = hd_container_of(ep->all.next, hk_job_t, all);
        if (j->req.head)
            hd_buf_unref(j->req.head);
        hk_job_free(s, j);
        n++;
    }
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &s->dlq)
    {
        hk_letter_t *l = hd_container_of(pos, hk_letter_t, link);
        if (l->ep == ep)
            hk_letter_free(s, l);
    }
    if (ep->slot)
        hk_durable_slot_free(ep->slot);
    hk_signer_free(ep->signer);
    free(ep->own_def);
    free(ep->record);
    free(ep);
    return n;
}

/* An endpoint of the admin API deleted (here, or on another node: with Redis). */
void hk_endpoint_remove(hk_sender_t *s, hk_endpoint_t *ep)
{
    size_t i = 0;
    while (s->eps[i] != ep)
        i++;
    memmove(&s->eps[i], &s->eps[i + 1], (s->n_eps - i - 1) * sizeof(s->eps[0]));
    s->n_eps--;
    s->n_api--;
    if (ep->is_disabled)
        HK_ADD(s->st->endpoints_disabled, (uint64_t)-1);
    HK_SET(s->st->endpoints, (uint64_t)s->n_eps);
    char name[HD_WEBHOOK_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", ep->def->name);
    size_t n = hk_endpoint_free(s, ep);
    if (n && !s->dur)
        hd_log_info("webhook %s deleted: its %zu pending events are dropped", name, n);
    else
        hd_log_info("webhook %s deleted", name);
    hk_endpoint_filter_update(s);
    hk_sender_gauges(s);
}

/* The endpoint named name, or NULL. */
hk_endpoint_t *hk_endpoint_find(hk_sender_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_eps; i++) {
        if (strcmp(s->eps[i]->def->name, name) == 0)
            return s->eps[i];
    }
    return NULL;
}

size_t hk_sender_ep_stats(hk_sender_t *s, hd_hooks_ep_stats_t **out)
{
    *out = NULL;
    if (!s || s->n_eps == 0)
        return 0;
    hd_hooks_ep_stats_t *v = hd_calloc(s->n_eps, sizeof(*v));
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
        hd_hooks_ep_stats_t *e = &v[i];
        snprintf(e->name, sizeof(e->name), "%s", ep->def->name);
        e->pending = s->dur ? ep->redis_pending : ep->n_pending;
        if (!hd_list_empty(&ep->all))
            e->oldest_pending_ms = hd_container_of(ep->all.next, hk_job_t, all)->created_ms;
        e->attempts = ep->attempts;
        e->delivered = ep->delivered;
        memcpy(e->failures, ep->failures, sizeof(e->failures));
        e->dead_letters = s->dur ? hk_durable_slot_dead(ep->slot) : ep->n_letters;
    }
    if (s->dur)
        hk_durable_count_dead(s->dur); /* the next copy's dead letters */
    *out = v;
    return s->n_eps;
}
