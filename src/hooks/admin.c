/* SPDX-License-Identifier: MIT */
/*
 * admin.c: the webhook sender's answers to the admin API (src/api/webhooks.c asks through
 * hooks.c; sender.h draws the sender's files), on the hooks thread.
 *
 *   LIST          the endpoints with their state and counters, the dead letters' count
 *   REGISTER      an endpoint of the admin API: its name free, its host not one
 *                 webhook_allow_private refuses (a name is resolved first, off the loop), room
 *                 under webhook_max_endpoints; with Redis stored there first (registry.c) and
 *                 answered once Redis took it
 *   DELETE        an endpoint the admin API registered, with what it holds (the conf's are
 *                 refused); with Redis deleted there first
 *   ENABLE        a disabled endpoint enabled again (with Redis, for every node)
 *   DEAD_*        the dead letters listed, shown, replayed or purged (with Redis: durable.c
 *                 answers)
 *
 * Answers are JSON bodies with their status ({"error":..,"status":..} for a refusal); an answer
 * given later (Redis, the resolver) goes back through hk_admin_answered.
 */
#include "herald/log.h"
#include "sender.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void json_str(hd_sbuf_t *sb, const char *v)
{
    hk_json_str(sb, v, strlen(v));
}

static void endpoint_json(hd_sbuf_t *sb, hk_endpoint_t *ep)
{
    const hd_webhook_def_t *d = ep->def;
    hd_sbuf_appends(sb, "{\"name\":");
    json_str(sb, d->name);
    hd_sbuf_appends(sb, ",\"url\":");
    json_str(sb, d->url);
    hd_sbuf_appends(sb, ",\"channels\":[");
    for (size_t k = 0; k < d->n_patterns; k++) {
        if (k)
            hd_sbuf_appends(sb, ",");
        json_str(sb, d->patterns[k]);
    }
    hd_sbuf_appends(sb, "],\"events\":[");
    const char *names[] = {"message.published", "channel.occupied", "channel.vacated",
                           "member.added", "member.removed"};
    int first = 1;
    for (unsigned k = 0; k < 5; k++) {
        if (d->events & (1u << k)) {
            hd_sbuf_appendf(sb, "%s\"%s\"", first ? "" : ",", names[k]);
            first = 0;
        }
    }
    hd_sbuf_appendf(sb, "],\"pipeline\":%u,\"secrets\":%zu,\"source\":\"%s\",\"state\":\"%s\"",
                    d->pipeline ? d->pipeline : 1, d->n_keys, ep->is_api ? "api" : "conf",
                    ep->is_disabled ? "disabled" : "enabled");
    if (ep->is_disabled) {
        hd_sbuf_appends(sb, ",\"disabled_reason\":");
        json_str(sb, ep->disabled_reason);
        hd_sbuf_appendf(sb, ",\"disabled_at_ms\":%llu", (unsigned long long)ep->disabled_ms);
    }
    uint64_t oldest_age = 0;
    if (!hd_list_empty(&ep->all)) {
        hk_job_t *j = hd_container_of(ep->all.next, hk_job_t, all);
        uint64_t now = hk_wall_ms();
        oldest_age = now > j->created_ms ? now - j->created_ms : 0;
    }
    hd_sbuf_appendf(sb, ",\"pending\":%llu,\"in_flight\":%zu,\"oldest_pending_age_ms\":%llu,",
                    (unsigned long long)(ep->s->dur ? ep->redis_pending : ep->n_pending),
                    ep->in_flight, (unsigned long long)oldest_age);
    /* with Redis, the cluster's, as counted there at most HD_HOOKS_EP_STATS_MS ago */
    hd_sbuf_appendf(sb, "\"dead_letters\":%llu",
                    (unsigned long long)(ep->s->dur ? hk_durable_slot_dead(ep->slot)
                                                    : (uint64_t)ep->n_letters));
    hd_sbuf_appendf(sb, ",\"connections\":%zu,\"attempts\":%llu,\"delivered\":%llu,\"failures\":{",
                    hk_pool_conns(ep->pool), (unsigned long long)ep->attempts,
                    (unsigned long long)ep->delivered);
    for (int k = 0; k < HD_HOOKS_FAIL_COUNT; k++)
        hd_sbuf_appendf(sb, "%s\"%s\":%llu", k ? "," : "", hd_hooks_fail_names[k],
                        (unsigned long long)ep->failures[k]);
    hd_sbuf_appendf(sb, "},\"failing_since_ms\":%llu,\"last_error\":",
                    (unsigned long long)ep->failing_since_ms);
    json_str(sb, ep->last_error);
    hd_sbuf_appends(sb, "}");
}

static void letter_json(hd_sbuf_t *sb, const hk_letter_t *l, int with_payload)
{
    hd_sbuf_appends(sb, "{\"event_id\":");
    json_str(sb, l->id);
    hd_sbuf_appends(sb, ",\"endpoint\":");
    json_str(sb, l->ep->def->name);
    hd_sbuf_appendf(sb,
                    ",\"type\":\"%s\",\"attempts\":%u,\"created_ms\":%llu,\"dead_ms\":%llu,"
                    "\"bytes\":%zu,\"reason\":",
                    l->type, l->attempts, (unsigned long long)l->created_ms,
                    (unsigned long long)l->dead_ms, l->body->len);
    json_str(sb, l->reason);
    if (with_payload) {
        hd_sbuf_appends(sb, ",\"payload\":"); /* the event body: JSON made by event.c */
        hd_sbuf_append(sb, l->body->data, l->body->len);
    }
    hd_sbuf_appends(sb, "}");
}

static void answer(hd_hooks_admin_t *a, int status, hd_sbuf_t *sb)
{
    hd_buf_t *b = hd_sbuf_finish(sb);
    a->status = status;
    a->body = hd_strndup(b->data, b->len);
    a->body_len = b->len;
    hd_buf_unref(b);
}

static void answer_error(hd_hooks_admin_t *a, int status, const char *what, const char *name)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 128);
    hd_sbuf_appends(&sb, "{\"error\":");
    char msg[200];
    snprintf(msg, sizeof(msg), "%s%s", what, name);
    json_str(&sb, msg);
    hd_sbuf_appendf(&sb, ",\"status\":%d}", status);
    answer(a, status, &sb);
}

/* 1 if def's host is an address webhook_allow_private refuses (loopback, private, link-local,
 * unspecified, multicast; IPv4 in any form inet_aton reads, as the resolver would), or a name
 * that always is (localhost); *is_name set when it is another name (resolved then: resolve). */
static int host_is_private(const hd_webhook_def_t *d, int *is_name)
{
    *is_name = 0;
    union { /* one object read as a struct sockaddr: no aliasing across types (client.c) */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    memset(&u, 0, sizeof(u));
    if (inet_aton(d->host, &u.in.sin_addr)) {
        u.in.sin_family = AF_INET;
        return hk_addr_is_private(&u.sa);
    }
    memset(&u, 0, sizeof(u));
    if (inet_pton(AF_INET6, d->host, &u.in6.sin6_addr) == 1) {
        u.in6.sin6_family = AF_INET6;
        return hk_addr_is_private(&u.sa);
    }
    size_t n = strlen(d->host);
    if (n > 0 && d->host[n - 1] == '.') /* the root: "localhost." */
        n--;
    if ((n == 9 && strncasecmp(d->host, "localhost", 9) == 0) ||
        (n > 10 && strncasecmp(d->host + n - 10, ".localhost", 10) == 0))
        return 1;
    *is_name = 1;
    return 0;
}

/* The endpoint registered (here or, with Redis, by any node): {"endpoint":{...}}, 201. */
static void answer_endpoint(hd_hooks_admin_t *a, int status, hk_endpoint_t *ep)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 1024);
    hd_sbuf_appends(&sb, "{\"endpoint\":");
    endpoint_json(&sb, ep);
    hd_sbuf_appends(&sb, "}");
    answer(a, status, &sb);
}

/* An admin request waiting for Redis. */
typedef struct pending_s {
    hk_sender_t *s;
    hd_hooks_admin_t *a;
} pending_t;

/* REGISTER accepted: a->def and a->record become the new endpoint's. */
static void added(hk_sender_t *s, hd_hooks_admin_t *a)
{
    hk_endpoint_t *ep =
        hk_endpoint_find(s, a->def->name); /* with Redis, a sync may have been first */
    if (!ep && s->n_eps >= s->cap_eps) {
        answer_error(a, 507, "no room for another webhook on this node (webhook_max_endpoints)",
                     "");
        return;
    }
    if (!ep) {
        ep = hk_endpoint_add(s, NULL, a->def, a->record);
        a->def = NULL;
        a->record = NULL;
        a->record_len = 0;
        hk_endpoint_filter_update(s);
        hk_sender_gauges(s);
        hd_log_info("webhook %s (%s) registered through the admin API", ep->def->name,
                    ep->def->url);
    }
    answer_endpoint(a, 201, ep);
}

static void answer_redis_down(hd_hooks_admin_t *a)
{
    answer_error(a, 503, "redis is unavailable: ",
                 "webhook registrations live in Redis; try again once it is back");
}

static void on_put(void *arg, int result)
{
    pending_t *p = arg;
    hk_sender_t *s = p->s;
    hd_hooks_admin_t *a = p->a;
    char msg[200];
    free(p);
    if (result == HK_REG_DONE && s->dur) {
        added(s, a);
    } else if (result == HK_REG_NONE) {
        answer_error(a, 409,
                     "a webhook is already registered (by a node of the cluster) with the id ",
                     a->def->name);
    } else if (result == HK_REG_FULL) {
        snprintf(msg, sizeof(msg),
                 "too many webhooks registered through the admin API: at most %u for the cluster "
                 "(webhook_max_endpoints); delete one first",
                 s->conf->webhook_max_endpoints);
        answer_error(a, 507, msg, "");
    } else {
        answer_redis_down(a);
    }
    hk_admin_answered(a);
}

static void on_del(void *arg, int result)
{
    pending_t *p = arg;
    hk_sender_t *s = p->s;
    hd_hooks_admin_t *a = p->a;
    free(p);
    hk_endpoint_t *ep = hk_endpoint_find(s, a->endpoint);
    if (ep && result != HK_REG_DONE)
        ep->is_deleting = 0;
    if (result == HK_REG_DOWN || !s->dur) {
        answer_redis_down(a);
    } else if (result == HK_REG_NONE) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
    } else {
        if (ep && ep->is_api)
            hk_endpoint_remove(s, ep);
        hd_sbuf_t sb;
        hd_sbuf_init(&sb, 128);
        hd_sbuf_appends(&sb, "{\"deleted\":");
        json_str(&sb, a->endpoint);
        hd_sbuf_appends(&sb, "}");
        answer(a, 200, &sb);
    }
    hk_admin_answered(a);
}

static void answer_private(hd_hooks_admin_t *a)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "%.60s is a loopback, private or link-local address: refused "
             "(webhook_allow_private is off)",
             a->def->host);
    answer_error(a, 400, msg, "");
}

/* A registration checked: stored (with Redis: answered later), or added here. 1 when a is
 * answered now, 0 when later. */
static int store(hk_sender_t *s, hd_hooks_admin_t *a)
{
    if (s->reg) { /* stored first; every node (this one too) adds it once Redis took it */
        pending_t *p = hd_malloc(sizeof(*p));
        p->s = s;
        p->a = a;
        hk_registry_put(s->reg, a->def->name, a->record, a->record_len, on_put, p);
        return 0;
    }
    added(s, a);
    return 1;
}

/* A registration whose host is a name, resolved before it is accepted (off the loop). */
typedef struct resolve_s {
    uv_getaddrinfo_t gai;
    hd_list_t link; /* in s->resolving */
    hk_sender_t *s; /* NULL once the sender closed */
    hd_hooks_admin_t *a;
} resolve_t;

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    resolve_t *rs = g->data;
    hk_sender_t *s = rs->s;
    hd_hooks_admin_t *a = rs->a;
    char msg[200];
    int is_private = 0;
    for (struct addrinfo *ai = res; ai && status == 0; ai = ai->ai_next)
        is_private |= hk_addr_is_private(ai->ai_addr);
    uv_freeaddrinfo(res);
    if (s)
        hd_list_remove(&rs->link);
    free(rs);
    if (!s) {
        answer_error(a, 503, "webhooks are stopping", "");
    } else if (status < 0) {
        snprintf(msg, sizeof(msg), "cannot resolve %.60s: %s", a->def->host, uv_strerror(status));
        answer_error(a, 400, msg, "");
    } else if (is_private) {
        answer_private(a);
    } else if (!store(s, a)) {
        return; /* answered once Redis took it */
    }
    hk_admin_answered(a);
}

/* Resolves a's host (uv_getaddrinfo: the resolver's thread pool): any of its addresses that
 * webhook_allow_private forbids refuses the registration, as a name that does not resolve.
 * The connections check again (client.c): the name may change. */
static int resolve(hk_sender_t *s, hd_hooks_admin_t *a)
{
    resolve_t *rs = hd_calloc(1, sizeof(*rs));
    struct addrinfo hints;
    char port[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", (unsigned)a->def->port);
    rs->s = s;
    rs->a = a;
    rs->gai.data = rs;
    int rc = uv_getaddrinfo(s->loop, &rs->gai, on_resolved, a->def->host, port, &hints);
    if (rc < 0) {
        free(rs);
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot resolve %.60s: %s", a->def->host, uv_strerror(rc));
        answer_error(a, 400, msg, "");
        return 1;
    }
    hd_list_insert_tail(&s->resolving, &rs->link);
    return 0;
}

/* REGISTER: a->def and a->record become the new endpoint's (taken from a on success). */
static int admin_register(hk_sender_t *s, hd_hooks_admin_t *a)
{
    hk_endpoint_t *ep = hk_endpoint_find(s, a->def->name);
    char msg[300];
    if (ep) {
        answer_error(a, 409,
                     ep->is_api ? "a webhook is already registered with the id "
                                : "a webhook of the conf (webhook directive) is named ",
                     a->def->name);
        return 1;
    }
    int is_name = 0;
    if (!s->conf->webhook_allow_private && host_is_private(a->def, &is_name)) {
        answer_private(a);
        return 1;
    }
    if (s->n_api >= s->conf->webhook_max_endpoints) {
        snprintf(msg, sizeof(msg),
                 "too many webhooks registered through the admin API: at most %u "
                 "(webhook_max_endpoints); delete one first",
                 s->conf->webhook_max_endpoints);
        answer_error(a, 507, msg, "");
        return 1;
    }
    if (!s->conf->webhook_allow_private && is_name)
        return resolve(s, a);
    return store(s, a);
}

/* DELETE: an endpoint of the admin API, with what it holds. */
static int admin_delete(hk_sender_t *s, hd_hooks_admin_t *a)
{
    hk_endpoint_t *ep = hk_endpoint_find(s, a->endpoint);
    if (!ep) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
        return 1;
    }
    if (!ep->is_api) {
        answer_error(a, 409, ep->def->name,
                     " is defined in the conf (webhook directive): remove it there and restart; "
                     "the admin API deletes only what it registered");
        return 1;
    }
    if (s->reg) { /* deleted in Redis first; the other nodes follow at their next read */
        /* no take after the delete: it would make its queue again in Redis */
        ep->is_deleting = 1;
        pending_t *p = hd_malloc(sizeof(*p));
        p->s = s;
        p->a = a;
        hk_registry_del(s->reg, ep->def->name, on_del, p);
        return 0;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 128);
    hd_sbuf_appends(&sb, "{\"deleted\":");
    json_str(&sb, ep->def->name);
    hd_sbuf_appends(&sb, "}");
    hk_endpoint_remove(s, ep);
    answer(a, 200, &sb);
    return 1;
}

int hk_sender_admin(hk_sender_t *s, hd_hooks_admin_t *a)
{
    hd_sbuf_t sb;
    hk_endpoint_t *only = NULL;
    if (a->op == HD_HOOKS_REGISTER)
        return admin_register(s, a);
    if (a->op == HD_HOOKS_DELETE)
        return admin_delete(s, a);
    if (a->endpoint[0] && !(only = hk_endpoint_find(s, a->endpoint))) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
        return 1;
    }
    if (s->dur && a->op >= HD_HOOKS_DEAD_LIST && a->op <= HD_HOOKS_DEAD_PURGE) {
        hk_durable_admin(s->dur, a);
        return 0;
    }
    hd_sbuf_init(&sb, 1024);
    switch (a->op) {
    case HD_HOOKS_LIST:
        hd_sbuf_appends(&sb, "{\"endpoints\":[");
        for (size_t i = 0, n = 0; i < s->n_eps; i++) {
            if (only && s->eps[i] != only)
                continue;
            if (n++)
                hd_sbuf_appends(&sb, ",");
            endpoint_json(&sb, s->eps[i]);
        }
        hd_sbuf_appendf(&sb, "],\"dead_letters\":%llu,\"memory_bytes\":%zu,\"store\":\"%s\"}",
                        (unsigned long long)(s->dur ? s->redis_dlq : s->n_dlq),
                        s->mem + (s->dur ? hk_durable_bytes(s->dur) : 0),
                        s->dur ? "redis" : "memory");
        answer(a, 200, &sb);
        return 1;
    case HD_HOOKS_ENABLE:
        if (!only) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no webhook named ", "");
            return 1;
        }
        if (only->is_disabled) {
            hk_sender_enable(s, only);
            hd_log_info("webhook %s enabled again by the admin API", only->def->name);
        }
        hk_sender_store_state(s, only); /* with Redis: for every node, whatever this one thought */
        hd_sbuf_appends(&sb, "{\"endpoint\":");
        endpoint_json(&sb, only);
        hd_sbuf_appends(&sb, "}");
        hk_sender_pump(s, only);
        answer(a, 200, &sb);
        break;
    case HD_HOOKS_DEAD_LIST:
    case HD_HOOKS_DEAD_GET: {
        int get = a->op == HD_HOOKS_DEAD_GET;
        size_t n = 0, limit = a->limit ? a->limit : 100;
        hd_list_t *pos;
        hd_sbuf_appends(&sb, "{\"dead_letters\":[");
        for (pos = s->dlq.next; pos != &s->dlq && n < limit; pos = pos->next) {
            hk_letter_t *l = hd_container_of(pos, hk_letter_t, link);
            if ((only && l->ep != only) || (get && strcmp(l->id, a->event_id) != 0))
                continue;
            if (n++)
                hd_sbuf_appends(&sb, ",");
            letter_json(&sb, l, get);
        }
        hd_sbuf_appendf(&sb, "],\"total\":%zu}", only ? only->n_letters : s->n_dlq);
        if (get && n == 0) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no dead letter with event id ", a->event_id);
            return 1;
        }
        answer(a, 200, &sb);
        return 1;
    }
    case HD_HOOKS_DEAD_REPLAY:
    case HD_HOOKS_DEAD_PURGE: {
        size_t done = 0, skipped = 0;
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &s->dlq)
        {
            hk_letter_t *l = hd_container_of(pos, hk_letter_t, link);
            if ((only && l->ep != only) || (a->event_id[0] && strcmp(l->id, a->event_id) != 0))
                continue;
            if (a->op == HD_HOOKS_DEAD_PURGE) {
                hk_letter_free(s, l);
                done++;
            } else if (hk_letter_replay(s, l) == 0) {
                done++;
            } else {
                skipped++;
            }
        }
        if (a->op == HD_HOOKS_DEAD_REPLAY) {
            for (size_t i = 0; i < s->n_eps; i++)
                hk_sender_pump(s, s->eps[i]);
        }
        if (a->event_id[0] && done + skipped == 0) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no dead letter with event id ", a->event_id);
            break;
        }
        if (a->op == HD_HOOKS_DEAD_PURGE) {
            hd_sbuf_appendf(&sb, "{\"purged\":%zu}", done);
            answer(a, 200, &sb);
        } else {
            hd_sbuf_appendf(&sb, "{\"replayed\":%zu,\"skipped\":%zu}", done, skipped);
            answer(a, done == 0 && skipped > 0 ? 409 : 200, &sb);
        }
        break;
    }
    default:
        hd_sbuf_dispose(&sb);
        answer_error(a, 400, "unknown admin request", "");
        return 1;
    }
    hk_sender_gauges(s);
    return 1;
}

void hk_admin_cancel(hk_sender_t *s)
{
    while (!hd_list_empty(&s->resolving)) { /* answered 503 when the resolver is done */
        resolve_t *rs = hd_container_of(s->resolving.next, resolve_t, link);
        hd_list_remove(&rs->link);
        rs->s = NULL;
        uv_cancel((uv_req_t *)&rs->gai);
    }
}
