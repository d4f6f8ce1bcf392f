/* SPDX-License-Identifier: MIT */
/*
 * regsync.c: with Redis, what registry.c tells the webhook sender (sender.h draws its files):
 * the cluster's registry read again (every node's registrations through the admin API, and the
 * endpoints disabled for every node) applied to this node's endpoints. A registration deleted,
 * or registered again differently, removes the endpoint here; one this node does not know is
 * added (checked again: it is data from outside); a disabled state read disables the endpoint
 * here, its absence enables it, unless this node's own last decision has not reached Redis yet.
 */
#include "herald/log.h"
#include "sender.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const hk_reg_entry_t *entry_of(const hk_reg_entry_t *e, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (e[i].name_len == len && memcmp(e[i].name, name, len) == 0)
            return &e[i];
    }
    return NULL;
}

/* A registration read from Redis becomes an endpoint here (what it says is checked again: it
 * is data from outside). */
static void sync_add(hk_sender_t *s, const hk_reg_entry_t *e)
{
    char why[300];
    if (s->n_eps >= s->cap_eps) {
        if (hk_sender_may_warn(s))
            hd_log_warn("webhook %.*s (registered in Redis) not served here: this node has room "
                        "for %u (webhook_max_endpoints)",
                        (int)e->name_len, e->name, s->conf->webhook_max_endpoints);
        return;
    }
    hd_webhook_def_t *def = hd_malloc(sizeof(*def));
    int rc = hd_webhook_def_from_json(def, e->record, e->record_len, why, sizeof(why));
    if (rc < 0 || strlen(def->name) != e->name_len ||
        memcmp(def->name, e->name, e->name_len) != 0) {
        if (hk_sender_may_warn(s))
            hd_log_warn("webhook %.*s: its registration in Redis is not one (%s): ignored",
                        (int)(e->name_len > 64 ? 64 : e->name_len), e->name,
                        rc < 0 ? why : "its id is not its key");
        free(def);
        return;
    }
    hk_endpoint_add(s, NULL, def, hd_strndup(e->record, e->record_len));
    hd_log_info("webhook %s (%s) registered (read from Redis)", def->name, def->url);
}

static void on_sync(void *data, const hk_reg_entry_t *e, size_t n, uint64_t seen)
{
    hk_sender_t *s = data;
    int changed = 0;
    /* deleted, or registered again differently (deleted and added between two reads) */
    for (size_t i = s->n_eps; i-- > 0;) {
        hk_endpoint_t *ep = s->eps[i];
        const hk_reg_entry_t *x = ep->is_api ? entry_of(e, n, ep->def->name) : NULL;
        if (ep->is_api && (!x || !x->record || x->record_len != strlen(ep->record) ||
                           memcmp(x->record, ep->record, x->record_len) != 0)) {
            char name[HD_WEBHOOK_NAME_MAX + 1];
            snprintf(name, sizeof(name), "%s", ep->def->name);
            hk_endpoint_remove(s, ep);
            if (!x || !x->record)
                hk_registry_forget(s->reg, name);
            changed = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char name[HD_WEBHOOK_NAME_MAX + 1];
        if (!e[i].record || e[i].name_len > HD_WEBHOOK_NAME_MAX)
            continue;
        memcpy(name, e[i].name, e[i].name_len);
        name[e[i].name_len] = '\0';
        if (hk_endpoint_find(s, name))
            continue; /* known, or a conf endpoint's name (the admin API refuses those) */
        sync_add(s, &e[i]);
        changed = 1;
    }
    /* the cluster's disabled endpoints */
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
        const hk_reg_entry_t *x = entry_of(e, n, ep->def->name);
        if (ep->is_state_unstored) {
            hk_sender_store_state(s, ep); /* this node's decision, not in Redis yet */
        } else if (ep->state_seq > seen) {
            continue; /* read before this node's last decision reached Redis */
        } else if (x && x->off && !ep->is_disabled) {
            char reason[160];
            snprintf(reason, sizeof(reason), "%.*s", (int)x->off_len, x->off);
            hk_sender_disable(s, ep, reason, 0);
        } else if ((!x || !x->off) && ep->is_disabled) {
            hd_log_info("webhook %s enabled again (by another node)", ep->def->name);
            hk_sender_enable(s, ep);
        }
    }
    if (changed)
        hk_endpoint_filter_update(s);
    hk_sender_gauges(s);
}

const hk_registry_ops_t hk_regsync_ops = {on_sync};
