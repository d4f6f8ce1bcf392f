/* SPDX-License-Identifier: MIT */
/*
 * webhooks.c: the webhooks' admin endpoints (docs/webhooks.md). Every path under /admin is an
 * admin path (access.c's guard admits only admin clients before routing). Each question goes
 * to the hooks thread (hd_hooks_admin_submit) and its answer comes back to this worker's loop;
 * meanwhile the response is deferred.
 *
 *   GET    /admin/webhooks                            endpoints, state, queue depth, figures
 *   POST   /admin/webhooks                            registers one (JSON: url, channels,
 *                                                     events, secret, id; at most 16 KiB)
 *   GET    /admin/webhooks/{name}                     one endpoint
 *   DELETE /admin/webhooks/{name}                     deletes one the API registered
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

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest registration body: a full one (16 patterns, 4 secrets, a 512-byte URL) is
 * about 4 KiB. */
#define REGISTER_BODY_MAX (16 * 1024)

typedef struct wait_s {
    hd_deferred_t *d; /* NULL once the client is gone */
    char secret[100]; /* REGISTER: the secret made for it, shown once in the 201 ("" none) */
} wait_t;

static void on_abort(hd_deferred_t *d)
{
    wait_t *wt = d->data;
    wt->d = NULL; /* the answer still comes; nobody waits for it */
}

static void on_answer(hd_hooks_admin_t *a)
{
    wait_t *wt = a->data;
    if (wt->d && a->status == 201 && wt->secret[0] && a->body_len > 1) {
        /* {"endpoint":{..}} + the secret made for it: the only time it is shown */
        hd_sbuf_t sb;
        hd_sbuf_init(&sb, a->body_len + 128);
        hd_sbuf_append(&sb, a->body, a->body_len - 1);
        hd_sbuf_appendf(&sb, ",\"secret\":\"%s\"}", wt->secret);
        hd_buf_t *b = hd_sbuf_finish(&sb);
        hd_http_respond(wt->d->req, a->status, "Cache-Control: no-store\r\n", "application/json",
                        b->data, b->len);
        hd_buf_unref(b);
    } else if (wt->d) {
        hd_http_respond(wt->d->req, a->status, "Cache-Control: no-store\r\n", "application/json",
                        a->body, a->body_len);
    }
    OPENSSL_cleanse(wt->secret, sizeof(wt->secret));
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

static wait_t *submit(hd_req_t *req, hd_hooks_admin_t *a)
{
    a->worker = req->conn->worker;
    a->cb = on_answer;
    wait_t *wt = hd_calloc(1, sizeof(*wt));
    wt->d = hd_http_defer(req);
    wt->d->data = wt;
    wt->d->on_abort = on_abort;
    a->data = wt;
    return wt;
}

/* n random bytes as base64 (NUL-terminated) into out (4 * ceil(n / 3) + 1 bytes). */
static void random_base64(char *out, size_t n)
{
    unsigned char raw[48];
    HD_ASSERT(n <= sizeof(raw));
    if (RAND_bytes(raw, (int)n) != 1)
        uv_random(NULL, NULL, raw, n, 0, NULL);
    EVP_EncodeBlock((unsigned char *)out, raw, (int)n);
    OPENSSL_cleanse(raw, sizeof(raw));
}

/* POST /admin/webhooks while webhook_max_endpoints is 0 (the default), with or without webhook
 * lines: the endpoint exists, registering is off. */
static void respond_off(hd_req_t *req)
{
    hd_http_respond_error(req, 403,
                          "registering webhooks through the admin API is off "
                          "(webhook_max_endpoints 0): set webhook_max_endpoints N to allow N "
                          "(docs/webhooks.md)");
}

/*
 * POST /admin/webhooks: the body, completed with an id ("wh_" and 16 random hex digits) and a
 * secret (whsec_ and 32 random bytes) when it has none, is read as the stored registration
 * will be (hd_webhook_def_from_json); the hooks thread then checks the name, the target and
 * the bound, and stores it.
 */
static void on_register(hd_req_t *req)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    char why[300], secret[100] = "";
    json_error_t jerr;
    if (conf->webhook_max_endpoints == 0) {
        respond_off(req);
        return;
    }
    if (req->body_len > REGISTER_BODY_MAX) {
        hd_http_respond_error(req, 413, "a webhook registration is at most 16 KiB of JSON");
        return;
    }
    json_t *root =
        json_loadb(req->body ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        snprintf(why, sizeof(why), "the body must be a JSON object: {\"url\": ..} (%s)",
                 root ? "not an object" : jerr.text);
        hd_http_respond_error(req, 400, why);
        json_decref(root);
        return;
    }
    if (!json_object_get(root, "id")) {
        unsigned char r[8];
        char id[24];
        uv_random(NULL, NULL, r, sizeof(r), 0, NULL);
        snprintf(id, sizeof(id), "wh_%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
                 r[4], r[5], r[6], r[7]);
        json_object_set_new(root, "id", json_string(id));
    }
    if (!json_object_get(root, "secret")) {
        memcpy(secret, "whsec_", 6);
        random_base64(secret + 6, 32);
        json_object_set_new(root, "secret", json_string(secret));
    }
    char *record = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    hd_webhook_def_t *def = hd_malloc(sizeof(*def));
    if (!record || hd_webhook_def_from_json(def, record, strlen(record), why, sizeof(why)) < 0) {
        hd_http_respond_error(req, 400, record ? why : "the body cannot be read");
        free(def);
        free(record);
        OPENSSL_cleanse(secret, sizeof(secret));
        return;
    }
    hd_hooks_admin_t *a = hd_hooks_admin_new(HD_HOOKS_REGISTER);
    snprintf(a->endpoint, sizeof(a->endpoint), "%s", def->name);
    a->def = def;
    a->record = record;
    a->record_len = strlen(record);
    wait_t *wt = submit(req, a);
    memcpy(wt->secret, secret, sizeof(wt->secret));
    OPENSSL_cleanse(secret, sizeof(secret));
    hd_hooks_admin_submit(a);
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
    submit(req, a);
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
        } else if ((n == 0 || (n == 1 && *p == '/')) && m == HD_M_POST) {
            respond_off(req);
        } else {
            hd_http_respond_error(req, 404,
                                  "no webhook is configured (webhook directive) and none may be "
                                  "registered (webhook_max_endpoints 0)");
        }
        return;
    }
    if (n == 0 || (n == 1 && *p == '/')) {
        if (m == HD_M_GET)
            ASK(req, HD_HOOKS_LIST, "", NULL);
        if (m == HD_M_POST) {
            on_register(req);
            return;
        }
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
        if (m == HD_M_DELETE)
            ASK(req, HD_HOOKS_DELETE, name, NULL);
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

/* A label value, escaped per the Prometheus text format (\\, \", \n). Endpoint names are
 * [A-Za-z0-9._-] (conf and admin API check it), so this changes nothing today. */
static void label_value(hd_sbuf_t *sb, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            hd_sbuf_appendf(sb, "\\%c", *v);
        else if (*v == '\n')
            hd_sbuf_appends(sb, "\\n");
        else
            hd_sbuf_append(sb, v, 1);
    }
}

/* One labelled series of every endpoint (field: an hd_hooks_ep_stats_t member's offset, its
 * value divided by div). */
static void per_endpoint(hd_sbuf_t *sb, const char *name, const char *type, const char *help,
                         const hd_hooks_ep_stats_t *v, size_t n, size_t field, uint64_t div)
{
    hd_sbuf_appendf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < n; i++) {
        uint64_t x;
        memcpy(&x, (const char *)&v[i] + field, sizeof(x));
        hd_sbuf_appendf(sb, "%s{endpoint=\"", name);
        label_value(sb, v[i].name);
        hd_sbuf_appendf(sb, "\"} %llu\n", (unsigned long long)(x / div));
    }
}

/* The per-endpoint series, as the hooks thread last published them (at most
 * HD_HOOKS_EP_STATS_MS old). Endpoints are bounded by the conf's and webhook_max_endpoints, so
 * the series are too. */
static void endpoint_metrics(hd_sbuf_t *sb)
{
    hd_hooks_ep_stats_t *v;
    size_t n = hd_hooks_get_ep_stats(hd_hooks_get(), &v);
    if (n == 0)
        return;
    per_endpoint(sb, "herald_webhook_endpoint_pending", "gauge",
                 "Webhook events waiting or in flight, per endpoint.", v, n,
                 offsetof(hd_hooks_ep_stats_t, pending), 1);
    per_endpoint(sb, "herald_webhook_endpoint_oldest_pending_seconds", "gauge",
                 "Age of an endpoint's oldest pending webhook event held on this node, whole "
                 "seconds (0: none).",
                 v, n, offsetof(hd_hooks_ep_stats_t, oldest_pending_ms), 1000);
    per_endpoint(sb, "herald_webhook_endpoint_attempts_total", "counter",
                 "Webhook requests sent, per endpoint.", v, n,
                 offsetof(hd_hooks_ep_stats_t, attempts), 1);
    per_endpoint(sb, "herald_webhook_endpoint_deliveries_total", "counter",
                 "Webhook requests answered 2xx, per endpoint.", v, n,
                 offsetof(hd_hooks_ep_stats_t, delivered), 1);
    per_endpoint(sb, "herald_webhook_endpoint_dead_letters", "gauge",
                 "Webhook dead letters held, per endpoint (with Redis: the cluster's).", v, n,
                 offsetof(hd_hooks_ep_stats_t, dead_letters), 1);
    /* every reason of every endpoint, 0 too (a counter that appears at its first increment
     * hides that increment from rate()): HD_HOOKS_FAIL_COUNT series an endpoint */
    hd_sbuf_appends(sb, "# HELP herald_webhook_endpoint_failures_total Webhook attempts that "
                        "failed, per endpoint and reason.\n"
                        "# TYPE herald_webhook_endpoint_failures_total counter\n");
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < HD_HOOKS_FAIL_COUNT; k++) {
            hd_sbuf_appends(sb, "herald_webhook_endpoint_failures_total{endpoint=\"");
            label_value(sb, v[i].name);
            hd_sbuf_appendf(sb, "\",reason=\"%s\"} %llu\n", hd_hooks_fail_names[k],
                            (unsigned long long)v[i].failures[k]);
        }
    }
    free(v);
}

void hd_webhooks_metrics(hd_sbuf_t *sb)
{
    hd_hooks_stats_t st;
    hd_hooks_get_stats(hd_hooks_get(), &st);
    gauge(sb, "herald_webhook_endpoints",
          "Webhook endpoints: in the conf and registered through the admin API.", st.endpoints);
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
    endpoint_metrics(sb);
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
                        "delivered (their batch answered 2xx), dropped (queue_size, max_memory or "
                        "a full mailbox).\n# TYPE herald_notify_hook_events_total counter\n");
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
    gauge(sb, "herald_notify_hook_memory_bytes",
          "What the notify hook's events hold, waiting or on their way (at most max_memory).",
          st.notify_memory_bytes);
}

void hd_webhooks_register(hd_router_t *r)
{
    unsigned methods = HD_M_GET | HD_M_POST | HD_M_DELETE;
    hd_router_add(r, methods, "/admin/webhooks", 0, on_webhooks, NULL);
    hd_router_add(r, methods, "/admin/webhooks/", 1, on_webhooks, NULL);
}
