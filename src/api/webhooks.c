/* SPDX-License-Identifier: MIT */
/*
 * webhooks.c: the webhooks' admin endpoints (docs/webhooks.md). Every path under /admin is an
 * admin path (access.c's guard admits only admin clients before routing). Each question goes
 * to the hooks thread (hd_hooks_admin_submit) and its answer comes back to this worker's loop;
 * meanwhile the response is deferred.
 *
 *   GET    /admin/webhooks                            endpoints, state, queue depth, figures
 *   GET    /admin/webhooks/{name}                     one endpoint
 *   POST   /admin/webhooks/{name}/enable              enabled again (after 410 Gone)
 *   GET    /admin/webhooks/dead-letters               dead letters (?endpoint=, ?limit=)
 *   GET    /admin/webhooks/dead-letters/{event_id}    those of one event, with the payload
 *   POST   /admin/webhooks/dead-letters/replay        replay all (?endpoint=)
 *   POST   /admin/webhooks/dead-letters/{event_id}/replay
 *   DELETE /admin/webhooks/dead-letters               purge all (?endpoint=)
 *   DELETE /admin/webhooks/dead-letters/{event_id}
 */
#include "herald/api.h"
#include "herald/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wait_s {
    hd_deferred_t *d; /* NULL once the client is gone */
} wait_t;

static void on_abort(hd_deferred_t *d)
{
    wait_t *wt = d->data;
    wt->d = NULL; /* the answer still comes; nobody waits for it */
}

static void on_answer(hd_hooks_admin_t *a)
{
    wait_t *wt = a->data;
    if (wt->d)
        hd_http_respond(wt->d->req, a->status, "Cache-Control: no-store\r\n", "application/json",
                        a->body, a->body_len);
    free(wt);
    hd_hooks_admin_free(a);
}

/* Copies path segment [s, s+n) into out (cap bytes); -1 if empty or too long. */
static int segment(const char *s, size_t n, char *out, size_t cap)
{
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static void ask(hd_req_t *req, int op, const char *endpoint, const char *event_id)
{
    hd_hooks_admin_t *a = hd_hooks_admin_new(op);
    char limit[16];
    if (endpoint)
        snprintf(a->endpoint, sizeof(a->endpoint), "%s", endpoint);
    else if (hd_req_query(req, "endpoint", a->endpoint, sizeof(a->endpoint)) < 0)
        a->endpoint[0] = '\0';
    if (event_id)
        snprintf(a->event_id, sizeof(a->event_id), "%s", event_id);
    if (hd_req_query(req, "limit", limit, sizeof(limit)) > 0)
        a->limit = (uint32_t)strtoul(limit, NULL, 10);
    a->worker = req->conn->worker;
    a->cb = on_answer;
    wait_t *wt = hd_calloc(1, sizeof(*wt));
    wt->d = hd_http_defer(req);
    wt->d->data = wt;
    wt->d->on_abort = on_abort;
    a->data = wt;
    hd_hooks_admin_submit(a);
}

#define ASK(...)                                                                                   \
    do {                                                                                           \
        ask(__VA_ARGS__);                                                                          \
        return;                                                                                    \
    } while (0)

static void on_webhooks(hd_req_t *req, void *arg)
{
    (void)arg;
    const char *p = req->path + strlen("/admin/webhooks");
    size_t n = req->path_len - strlen("/admin/webhooks");
    unsigned m = req->method == HD_M_HEAD ? HD_M_GET : req->method;
    char name[HD_WEBHOOK_NAME_MAX + 1], id[64];

    if (!hd_hooks_get()) {
        if (n == 0 && m == HD_M_GET) {
            static const char empty[] = "{\"endpoints\":[],\"dead_letters\":0,\"memory_bytes\":0}";
            hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json", empty,
                            sizeof(empty) - 1);
        } else {
            hd_http_respond_error(req, 404, "no webhook is configured (webhook directive)");
        }
        return;
    }
    if (n == 0 || (n == 1 && *p == '/')) {
        if (m == HD_M_GET)
            ASK(req, HD_HOOKS_LIST, "", NULL);
        goto bad_method;
    }
    p++, n--; /* the '/' */
    static const char dl[] = "dead-letters";
    if (n >= sizeof(dl) - 1 && memcmp(p, dl, sizeof(dl) - 1) == 0 &&
        (n == sizeof(dl) - 1 || p[sizeof(dl) - 1] == '/')) {
        p += sizeof(dl) - 1, n -= sizeof(dl) - 1;
        if (n <= 1) { /* /dead-letters[/] */
            if (m == HD_M_GET)
                ASK(req, HD_HOOKS_DEAD_LIST, NULL, NULL);
            if (m == HD_M_DELETE)
                ASK(req, HD_HOOKS_DEAD_PURGE, NULL, "");
            goto bad_method;
        }
        p++, n--;
        const char *slash = memchr(p, '/', n);
        size_t idn = slash ? (size_t)(slash - p) : n;
        if (!slash && n == 6 && memcmp(p, "replay", 6) == 0) {
            if (m == HD_M_POST)
                ASK(req, HD_HOOKS_DEAD_REPLAY, NULL, "");
            goto bad_method;
        }
        if (segment(p, idn, id, sizeof(id)) < 0)
            goto not_found;
        if (!slash) {
            if (m == HD_M_GET)
                ASK(req, HD_HOOKS_DEAD_GET, NULL, id);
            if (m == HD_M_DELETE)
                ASK(req, HD_HOOKS_DEAD_PURGE, NULL, id);
            goto bad_method;
        }
        if (n - idn == 7 && memcmp(slash, "/replay", 7) == 0) {
            if (m == HD_M_POST)
                ASK(req, HD_HOOKS_DEAD_REPLAY, NULL, id);
            goto bad_method;
        }
        goto not_found;
    }
    const char *slash = memchr(p, '/', n);
    size_t nn = slash ? (size_t)(slash - p) : n;
    if (segment(p, nn, name, sizeof(name)) < 0)
        goto not_found;
    if (!slash) {
        if (m == HD_M_GET)
            ASK(req, HD_HOOKS_LIST, name, NULL);
        goto bad_method;
    }
    if (n - nn == 7 && memcmp(slash, "/enable", 7) == 0) {
        if (m == HD_M_POST)
            ASK(req, HD_HOOKS_ENABLE, name, NULL);
        goto bad_method;
    }
not_found:
    hd_http_respond_error(req, 404, "no such webhook admin endpoint (docs/webhooks.md)");
    return;
bad_method:
    hd_http_respond_error(req, 405, "method not allowed here (docs/webhooks.md)");
}

static void counter(hd_sbuf_t *sb, const char *name, const char *help, uint64_t v)
{
    hd_sbuf_appendf(sb, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                    (unsigned long long)v);
}

static void gauge(hd_sbuf_t *sb, const char *name, const char *help, uint64_t v)
{
    hd_sbuf_appendf(sb, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
                    (unsigned long long)v);
}

void hd_webhooks_metrics(hd_sbuf_t *sb)
{
    hd_hooks_stats_t st;
    hd_hooks_get_stats(hd_hooks_get(), &st);
    gauge(sb, "herald_webhook_endpoints", "Webhook endpoints configured.", st.endpoints);
    gauge(sb, "herald_webhook_endpoints_disabled",
          "Webhook endpoints disabled (410 Gone), until enabled through the admin API.",
          st.endpoints_disabled);
    counter(sb, "herald_webhook_events_total",
            "Events queued for a webhook endpoint (one per endpoint).", st.events);
    counter(sb, "herald_webhook_attempts_total", "Webhook requests sent.", st.attempts);
    counter(sb, "herald_webhook_deliveries_total", "Webhook requests answered 2xx.", st.delivered);
    hd_sbuf_appends(sb, "# HELP herald_webhook_failures_total Webhook attempts that failed.\n"
                        "# TYPE herald_webhook_failures_total counter\n");
    for (int i = 0; i < HD_HOOKS_FAIL_COUNT; i++)
        hd_sbuf_appendf(sb, "herald_webhook_failures_total{reason=\"%s\"} %llu\n",
                        hd_hooks_fail_names[i], (unsigned long long)st.failures[i]);
    counter(sb, "herald_webhook_retries_total", "Webhook attempts scheduled after a failure.",
            st.retries);
    counter(sb, "herald_webhook_dead_lettered_total", "Webhook events that became dead letters.",
            st.dead_lettered);
    counter(sb, "herald_webhook_replayed_total", "Dead letters queued again by the admin API.",
            st.replayed);
    hd_sbuf_appends(sb, "# HELP herald_webhook_dropped_total Webhook events or dead letters not "
                        "kept.\n# TYPE herald_webhook_dropped_total counter\n");
    for (int i = 0; i < HD_HOOKS_DROP_COUNT; i++)
        hd_sbuf_appendf(sb, "herald_webhook_dropped_total{reason=\"%s\"} %llu\n",
                        hd_hooks_drop_names[i], (unsigned long long)st.dropped[i]);
    gauge(sb, "herald_webhook_pending", "Webhook events waiting or in flight.", st.pending);
    gauge(sb, "herald_webhook_oldest_pending_seconds",
          "Age of the oldest pending webhook event, whole seconds (0: none).",
          st.oldest_pending_ms / 1000);
    gauge(sb, "herald_webhook_dead_letters", "Webhook dead letters held (alert on growth).",
          st.dead_letters);
    gauge(sb, "herald_webhook_memory_bytes", "Bytes of webhook events held (pending and dead).",
          st.memory_bytes);
    hd_sbuf_appends(sb, "# HELP herald_authorize_hook_total Authorize hook questions, by how "
                        "they were answered: asked (all), cached, joined (a call on its way), "
                        "calls (requests sent), allowed, denied, errors (calls).\n"
                        "# TYPE herald_authorize_hook_total counter\n");
    const struct {
        const char *name;
        uint64_t v;
    } az[] = {{"asked", st.authz_asked},     {"cached", st.authz_cached},
              {"joined", st.authz_joined},   {"calls", st.authz_calls},
              {"allowed", st.authz_allowed}, {"denied", st.authz_denied},
              {"errors", st.authz_errors}};
    for (size_t i = 0; i < sizeof(az) / sizeof(az[0]); i++)
        hd_sbuf_appendf(sb, "herald_authorize_hook_total{result=\"%s\"} %llu\n", az[i].name,
                        (unsigned long long)az[i].v);
    gauge(sb, "herald_authorize_hook_cache", "Authorize hook answers cached.", st.authz_cache_size);
    hd_sbuf_appends(sb, "# HELP herald_notify_hook_events_total Notify hook events: queued, "
                        "delivered (their batch answered 2xx), dropped (queue_size or a full "
                        "mailbox).\n# TYPE herald_notify_hook_events_total counter\n");
    hd_sbuf_appendf(sb,
                    "herald_notify_hook_events_total{result=\"queued\"} %llu\n"
                    "herald_notify_hook_events_total{result=\"delivered\"} %llu\n"
                    "herald_notify_hook_events_total{result=\"dropped\"} %llu\n",
                    (unsigned long long)st.notify_events, (unsigned long long)st.notify_delivered,
                    (unsigned long long)st.notify_dropped);
    hd_sbuf_appends(sb, "# HELP herald_notify_hook_batches_total Notify hook requests: sent, "
                        "answered 2xx, failed (sent again after a backoff).\n"
                        "# TYPE herald_notify_hook_batches_total counter\n");
    hd_sbuf_appendf(sb,
                    "herald_notify_hook_batches_total{result=\"sent\"} %llu\n"
                    "herald_notify_hook_batches_total{result=\"ok\"} %llu\n"
                    "herald_notify_hook_batches_total{result=\"failed\"} %llu\n",
                    (unsigned long long)st.notify_requests, (unsigned long long)st.notify_batches,
                    (unsigned long long)st.notify_failures);
    gauge(sb, "herald_notify_hook_pending", "Notify hook events waiting or on their way.",
          st.notify_pending);
}

void hd_webhooks_register(hd_router_t *r)
{
    unsigned methods = HD_M_GET | HD_M_POST | HD_M_DELETE;
    hd_router_add(r, methods, "/admin/webhooks", 0, on_webhooks, NULL);
    hd_router_add(r, methods, "/admin/webhooks/", 1, on_webhooks, NULL);
}
