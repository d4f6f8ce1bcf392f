/* SPDX-License-Identifier: MIT */
/*
 * introspect.c: what operators and scripts ask the node.
 *   GET /channels/{channel}  subscribers (all workers), last id, history length; 404 if unknown
 *   GET /stats               node-wide counts as JSON
 *   GET /metrics             the same, plus the fan-out latency histogram, in Prometheus text
 * Figures of other workers are read with relaxed atomic loads of counters each worker writes
 * alone: a scrape never stops a loop.
 */
#include "herald/api.h"

#include <string.h>
#include <time.h>

static hd_server_t *node;
static uint64_t started_ms;

typedef struct totals_s {
    hd_worker_stats_t net;
    hd_hub_stats_t hub;
    hd_broker_stats_t broker;
} totals_t;

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static void collect(totals_t *t)
{
    memset(t, 0, sizeof(*t));
    for (unsigned k = 0; k < hd_server_worker_count(node); k++) {
        hd_worker_t *w = hd_server_worker(node, k);
        t->net.accepted += LOAD(w->stats.accepted);
        t->net.refused_max_conns += LOAD(w->stats.refused_max_conns);
        t->net.refused_rate += LOAD(w->stats.refused_rate);
        t->net.refused_ip_conns += LOAD(w->stats.refused_ip_conns);
        t->net.refused_ip_rate += LOAD(w->stats.refused_ip_rate);
        t->net.proxy_malformed += LOAD(w->stats.proxy_malformed);
        t->net.proxy_timeouts += LOAD(w->stats.proxy_timeouts);
        t->net.client_publish_refused += LOAD(w->stats.client_publish_refused);
        t->net.tickets_issued += LOAD(w->stats.tickets_issued);
        t->net.tickets_used += LOAD(w->stats.tickets_used);
        t->net.tickets_refused_invalid += LOAD(w->stats.tickets_refused_invalid);
        t->net.tickets_refused_full += LOAD(w->stats.tickets_refused_full);
        t->net.auth_cache_hits += LOAD(w->stats.auth_cache_hits);
        t->net.auth_cache_misses += LOAD(w->stats.auth_cache_misses);
        t->net.auth_cache_entries += LOAD(w->stats.auth_cache_entries);
        t->net.auth_cache_bytes += LOAD(w->stats.auth_cache_bytes);
        t->net.ephemeral_refused += LOAD(w->stats.ephemeral_refused);
        t->net.receipts_dropped += LOAD(w->stats.receipts_dropped);
        t->net.requests += LOAD(w->stats.requests);
        t->net.tls_handshake_failures += LOAD(w->stats.tls_handshake_failures);
        t->net.timeouts += LOAD(w->stats.timeouts);
        t->net.h2_conns += LOAD(w->stats.h2_conns);
        t->net.h2_streams += LOAD(w->stats.h2_streams);
        t->net.h2_streams_reset += LOAD(w->stats.h2_streams_reset);
        t->net.h2_errors += LOAD(w->stats.h2_errors);
        t->net.conns += LOAD(w->stats.conns);
        t->net.kicked_revoked += LOAD(w->stats.kicked_revoked);
        t->net.kicked_disconnected += LOAD(w->stats.kicked_disconnected);
        t->net.authz_pending += LOAD(w->stats.authz_pending);
        t->net.authz_refused_busy += LOAD(w->stats.authz_refused_busy);
        t->net.authz_refused_error += LOAD(w->stats.authz_refused_error);
        t->net.authz_denied += LOAD(w->stats.authz_denied);
        hd_hub_stats_t *h = hd_hub_stats(w);
        t->hub.messages_in += LOAD(h->messages_in);
        t->hub.deliveries += LOAD(h->deliveries);
        t->hub.slow_dropped += LOAD(h->slow_dropped);
        t->hub.published += LOAD(h->published);
        for (int i = 0; i < HD_SUBS_LIMIT_COUNT; i++)
            t->hub.subscriptions_refused[i] += LOAD(h->subscriptions_refused[i]);
        for (int i = 0; i < 4; i++)
            t->hub.transport_conns[i] += LOAD(h->transport_conns[i]);
        for (int i = 0; i < HD_LATENCY_BUCKETS; i++)
            t->hub.latency_buckets[i] += LOAD(h->latency_buckets[i]);
        t->hub.latency_sum_us += LOAD(h->latency_sum_us);
        t->hub.latency_count += LOAD(h->latency_count);
    }
    hd_broker_t *b = hd_broker_get();
    b->ops->get_stats(b, &t->broker);
    t->net.receipts_dropped += t->broker.receipts_dropped; /* receipts to other nodes too */
}

/*
 * Replaces the closing brace of the /stats object in sb with "per_worker": each worker's own
 * connections, requests and messages, so a test or an operator sees how SO_REUSEPORT spread the
 * load (which worker took publishes, which carries subscribers).
 */
static void append_per_worker(hd_sbuf_t *sb)
{
    sb->buf->len--; /* the object's closing brace */
    hd_sbuf_appends(sb, ",\"per_worker\":[");
    for (unsigned k = 0; k < hd_server_worker_count(node); k++) {
        hd_worker_t *w = hd_server_worker(node, k);
        hd_hub_stats_t *h = hd_hub_stats(w);
        hd_sbuf_appendf(
            sb,
            "%s{\"connections\":%llu,\"accepted\":%llu,\"requests\":%llu,"
            "\"published_here\":%llu,\"fanned_out\":%llu,\"delivered\":%llu,"
            "\"longpoll\":%lld,\"sse\":%lld,\"websocket\":%lld,\"writes\":%llu,"
            "\"kicked_revoked\":%llu,\"kicked_disconnected\":%llu}",
            k ? "," : "", (unsigned long long)LOAD(w->stats.conns),
            (unsigned long long)LOAD(w->stats.accepted),
            (unsigned long long)LOAD(w->stats.requests), (unsigned long long)LOAD(h->published),
            (unsigned long long)LOAD(h->messages_in), (unsigned long long)LOAD(h->deliveries),
            (long long)LOAD(h->transport_conns[HD_TP_LONGPOLL]),
            (long long)LOAD(h->transport_conns[HD_TP_SSE]),
            (long long)LOAD(h->transport_conns[HD_TP_WS]),
            (unsigned long long)LOAD(w->stats.writes),
            (unsigned long long)LOAD(w->stats.kicked_revoked),
            (unsigned long long)LOAD(w->stats.kicked_disconnected));
    }
    hd_sbuf_appends(sb, "]}");
}

/* Live entries of the node's revoked set (docs/auth.md, "Revocation"). */
static size_t revocations(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return hd_revset_count(hd_auth_revocations(), (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void on_stats(hd_req_t *req, void *arg)
{
    (void)arg;
    totals_t t;
    collect(&t);
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 1024);
    hd_sbuf_appendf(
        &sb,
        "{\"version\":\"%s\",\"uptime_s\":%llu,\"workers\":%u,\"broker\":\"%s\","
        "\"broker_state\":\"%s\",\"broker_reconnects\":%llu,"
        "\"connections\":{\"total\":%llu,\"poll\":%lld,\"longpoll\":%lld,\"sse\":%lld,"
        "\"websocket\":%lld},"
        "\"connections_accepted\":%llu,\"connections_refused\":{\"max_connections\":%llu,"
        "\"accept_rate\":%llu,\"max_connections_per_ip\":%llu,\"connect_rate_per_ip\":%llu},"
        "\"client_addresses\":%llu,\"proxy_protocol_errors\":{\"malformed\":%llu,"
        "\"timeout\":%llu},\"client_publishes_refused\":%llu,\"requests\":%llu,\"timeouts\":%llu,"
        "\"tls_handshake_failures\":%llu,"
        "\"channels\":%llu,\"messages\":{\"published\":%llu,\"published_here\":%llu,"
        "\"fanned_out\":%llu,\"delivered\":%llu},\"history_bytes\":%llu,"
        "\"channels_evicted\":%llu,\"slow_subscribers_dropped\":%llu,"
        "\"channels_refused\":%llu,\"broker_memory_bytes\":%llu,\"subscriptions\":%llu,"
        "\"subscriptions_refused\":{\"max_subscriptions\":%llu,"
        "\"max_subscriptions_per_connection\":%llu},\"tickets\":{\"issued\":%llu,\"used\":%llu,"
        "\"refused_invalid\":%llu,\"refused_full\":%llu},\"auth_cache\":{\"hits\":%llu,"
        "\"misses\":%llu,\"entries\":%llu,\"bytes\":%llu},\"revocations\":%llu,"
        "\"connections_ended\":{\"revoked\":%llu,\"disconnected\":%llu},\"presence\":{\"channels\":"
        "%llu,"
        "\"members\":%llu,\"events\":%llu,\"refused\":%llu},\"ephemeral_refused\":%llu,\"receipts_"
        "dropped\":%llu}",
        HERALD_VERSION, (unsigned long long)((hd_now_ms() - started_ms) / 1000),
        hd_server_worker_count(node), hd_broker_get()->ops->name,
        hd_broker_state_name(t.broker.state), (unsigned long long)t.broker.reconnects,
        (unsigned long long)t.net.conns, (long long)t.hub.transport_conns[HD_TP_POLL],
        (long long)t.hub.transport_conns[HD_TP_LONGPOLL],
        (long long)t.hub.transport_conns[HD_TP_SSE], (long long)t.hub.transport_conns[HD_TP_WS],
        (unsigned long long)t.net.accepted, (unsigned long long)t.net.refused_max_conns,
        (unsigned long long)t.net.refused_rate, (unsigned long long)t.net.refused_ip_conns,
        (unsigned long long)t.net.refused_ip_rate,
        (unsigned long long)hd_server_client_entries(node),
        (unsigned long long)t.net.proxy_malformed, (unsigned long long)t.net.proxy_timeouts,
        (unsigned long long)t.net.client_publish_refused, (unsigned long long)t.net.requests,
        (unsigned long long)t.net.timeouts, (unsigned long long)t.net.tls_handshake_failures,
        (unsigned long long)t.broker.channels, (unsigned long long)t.broker.messages_published,
        (unsigned long long)t.hub.published, (unsigned long long)t.hub.messages_in,
        (unsigned long long)t.hub.deliveries, (unsigned long long)t.broker.history_bytes,
        (unsigned long long)t.broker.channels_evicted, (unsigned long long)t.hub.slow_dropped,
        (unsigned long long)t.broker.channels_refused, (unsigned long long)t.broker.memory_bytes,
        (unsigned long long)hd_hub_subscriptions(),
        (unsigned long long)t.hub.subscriptions_refused[HD_SUBS_LIMIT_NODE],
        (unsigned long long)t.hub.subscriptions_refused[HD_SUBS_LIMIT_CONNECTION],
        (unsigned long long)t.net.tickets_issued, (unsigned long long)t.net.tickets_used,
        (unsigned long long)t.net.tickets_refused_invalid,
        (unsigned long long)t.net.tickets_refused_full, (unsigned long long)t.net.auth_cache_hits,
        (unsigned long long)t.net.auth_cache_misses, (unsigned long long)t.net.auth_cache_entries,
        (unsigned long long)t.net.auth_cache_bytes, (unsigned long long)revocations(),
        (unsigned long long)t.net.kicked_revoked, (unsigned long long)t.net.kicked_disconnected,
        (unsigned long long)t.broker.presence_channels,
        (unsigned long long)t.broker.presence_members, (unsigned long long)t.broker.presence_events,
        (unsigned long long)t.broker.presence_refused, (unsigned long long)t.net.ephemeral_refused,
        (unsigned long long)t.net.receipts_dropped);
    append_per_worker(&sb);
    hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json", sb.buf->data,
                    sb.buf->len);
    hd_sbuf_dispose(&sb);
}

static void metric(hd_sbuf_t *sb, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
    hd_sbuf_appendf(sb, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
}

static void on_metrics(hd_req_t *req, void *arg)
{
    (void)arg;
    totals_t t;
    collect(&t);
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 4096);
    metric(&sb, "herald_connections", "gauge", "Open client connections.", t.net.conns);
    hd_sbuf_appends(&sb, "# HELP herald_subscribers Open subscriptions by transport.\n"
                         "# TYPE herald_subscribers gauge\n");
    static const char *names[] = {"poll", "longpoll", "sse", "websocket"};
    for (int i = 0; i < 4; i++)
        hd_sbuf_appendf(&sb, "herald_subscribers{transport=\"%s\"} %lld\n", names[i],
                        (long long)t.hub.transport_conns[i]);
    metric(&sb, "herald_connections_accepted_total", "counter", "Connections accepted.",
           t.net.accepted);
    hd_sbuf_appends(&sb, "# HELP herald_connections_refused_total Connections refused.\n"
                         "# TYPE herald_connections_refused_total counter\n");
    hd_sbuf_appendf(&sb, "herald_connections_refused_total{reason=\"max_connections\"} %llu\n",
                    (unsigned long long)t.net.refused_max_conns);
    hd_sbuf_appendf(&sb, "herald_connections_refused_total{reason=\"accept_rate\"} %llu\n",
                    (unsigned long long)t.net.refused_rate);
    hd_sbuf_appendf(&sb,
                    "herald_connections_refused_total{reason=\"max_connections_per_ip\"} %llu\n",
                    (unsigned long long)t.net.refused_ip_conns);
    hd_sbuf_appendf(&sb, "herald_connections_refused_total{reason=\"connect_rate_per_ip\"} %llu\n",
                    (unsigned long long)t.net.refused_ip_rate);
    metric(&sb, "herald_client_addresses", "gauge",
           "Client addresses held by the per-address limits (open connections, or a token bucket "
           "not yet refilled).",
           hd_server_client_entries(node));
    hd_sbuf_appends(&sb, "# HELP herald_proxy_protocol_errors_total Connections closed on a "
                         "proxy_protocol listener for their PROXY header.\n"
                         "# TYPE herald_proxy_protocol_errors_total counter\n");
    hd_sbuf_appendf(&sb, "herald_proxy_protocol_errors_total{reason=\"malformed\"} %llu\n",
                    (unsigned long long)t.net.proxy_malformed);
    hd_sbuf_appendf(&sb, "herald_proxy_protocol_errors_total{reason=\"timeout\"} %llu\n",
                    (unsigned long long)t.net.proxy_timeouts);
    hd_sbuf_appends(&sb, "# HELP herald_client_publishes_refused_total Client publishes refused, "
                         "by the limit reached.\n"
                         "# TYPE herald_client_publishes_refused_total counter\n");
    hd_sbuf_appendf(&sb,
                    "herald_client_publishes_refused_total{reason=\"client_publish_rate\"} %llu\n",
                    (unsigned long long)t.net.client_publish_refused);
    hd_sbuf_appendf(&sb, "herald_client_publishes_refused_total{reason=\"ephemeral_rate\"} %llu\n",
                    (unsigned long long)t.net.ephemeral_refused);
    hd_sbuf_appends(&sb, "# HELP herald_receipts_dropped_total Receipts given up: acked ones past "
                         "the 256 messages a connection may hold awaiting an ack, and (Redis) "
                         "receipts for other nodes while Redis was lost or past 4096 unsent.\n"
                         "# TYPE herald_receipts_dropped_total counter\n");
    hd_sbuf_appendf(&sb, "herald_receipts_dropped_total %llu\n",
                    (unsigned long long)t.net.receipts_dropped);
    hd_sbuf_appends(&sb, "# HELP herald_tickets_total Single-use tickets: issued by POST "
                         "/auth/ticket, used by a connect, refused at a connect (malformed, "
                         "unknown, used or expired) or at POST /auth/ticket (auth_max_tickets).\n"
                         "# TYPE herald_tickets_total counter\n");
    hd_sbuf_appendf(&sb,
                    "herald_tickets_total{result=\"issued\"} %llu\n"
                    "herald_tickets_total{result=\"used\"} %llu\n"
                    "herald_tickets_total{result=\"refused_invalid\"} %llu\n"
                    "herald_tickets_total{result=\"refused_full\"} %llu\n",
                    (unsigned long long)t.net.tickets_issued,
                    (unsigned long long)t.net.tickets_used,
                    (unsigned long long)t.net.tickets_refused_invalid,
                    (unsigned long long)t.net.tickets_refused_full);
    hd_sbuf_appends(&sb, "# HELP herald_auth_cache_total Tokens verified at a connect, a /ws "
                         "auth message or a refresh: answered by the worker's cache of verified "
                         "tokens (hit: no signature checked) or verified (miss).\n"
                         "# TYPE herald_auth_cache_total counter\n");
    hd_sbuf_appendf(&sb,
                    "herald_auth_cache_total{result=\"hit\"} %llu\n"
                    "herald_auth_cache_total{result=\"miss\"} %llu\n",
                    (unsigned long long)t.net.auth_cache_hits,
                    (unsigned long long)t.net.auth_cache_misses);
    metric(&sb, "herald_auth_cache_entries", "gauge",
           "Verified tokens held by the workers' caches (auth_cache_entries each).",
           t.net.auth_cache_entries);
    metric(&sb, "herald_auth_cache_bytes", "gauge",
           "Bytes the workers' token caches hold, identities included (auth_cache_memory each).",
           t.net.auth_cache_bytes);
    metric(&sb, "herald_revocations", "gauge",
           "Live revocations in the node's revoked set (POST /admin/revoke; with Redis, the "
           "cluster's).",
           revocations());
    hd_sbuf_appends(&sb, "# HELP herald_connections_ended_total Connections ended by an "
                         "operator's order, by kind (POST /admin/revoke, /admin/disconnect).\n"
                         "# TYPE herald_connections_ended_total counter\n");
    hd_sbuf_appendf(&sb, "herald_connections_ended_total{reason=\"revoked\"} %llu\n",
                    (unsigned long long)t.net.kicked_revoked);
    hd_sbuf_appendf(&sb, "herald_connections_ended_total{reason=\"disconnected\"} %llu\n",
                    (unsigned long long)t.net.kicked_disconnected);
    metric(&sb, "herald_authorize_pending", "gauge",
           "Connects and subscribes waiting for the authorize hook's answer (docs/webhooks.md).",
           t.net.authz_pending);
    hd_sbuf_appends(&sb, "# HELP herald_authorize_refused_total Connects and subscribes the "
                         "authorize hook refused: by the backend's answer, for a failed backend "
                         "(on_error=deny), or max_pending reached.\n"
                         "# TYPE herald_authorize_refused_total counter\n");
    hd_sbuf_appendf(&sb,
                    "herald_authorize_refused_total{reason=\"denied\"} %llu\n"
                    "herald_authorize_refused_total{reason=\"backend_error\"} %llu\n"
                    "herald_authorize_refused_total{reason=\"busy\"} %llu\n",
                    (unsigned long long)t.net.authz_denied,
                    (unsigned long long)t.net.authz_refused_error,
                    (unsigned long long)t.net.authz_refused_busy);
    metric(&sb, "herald_presence_channels", "gauge",
           "Channels whose presence members this node tracks.", t.broker.presence_channels);
    metric(&sb, "herald_presence_members", "gauge",
           "Presence members on those channels (a user's connections count once per channel).",
           t.broker.presence_members);
    metric(&sb, "herald_presence_events_total", "counter", "Presence join and leave events made.",
           t.broker.presence_events);
    metric(&sb, "herald_presence_refused_total", "counter",
           "Presence joins not tracked: presence_max_channels reached.", t.broker.presence_refused);
    metric(&sb, "herald_http_requests_total", "counter", "HTTP requests answered.", t.net.requests);
    metric(&sb, "herald_timeouts_total", "counter", "Connections closed by a timeout.",
           t.net.timeouts);
    metric(&sb, "herald_tls_handshake_failures_total", "counter", "Failed TLS handshakes.",
           t.net.tls_handshake_failures);
    metric(&sb, "herald_http2_connections_total", "counter",
           "Connections served HTTP/2 (ALPN h2 or prior knowledge).", t.net.h2_conns);
    metric(&sb, "herald_http2_streams_total", "counter", "HTTP/2 streams opened by clients.",
           t.net.h2_streams);
    metric(&sb, "herald_http2_streams_reset_total", "counter",
           "HTTP/2 streams reset because their connection's output passed "
           "http2_max_queue_bytes.",
           t.net.h2_streams_reset);
    metric(&sb, "herald_http2_connection_errors_total", "counter",
           "HTTP/2 connections ended with an error GOAWAY (protocol errors, floods, rapid "
           "reset past http2_reset_rate).",
           t.net.h2_errors);
    metric(&sb, "herald_channels", "gauge", "Channels with subscribers or history.",
           t.broker.channels);
    metric(&sb, "herald_messages_published_total", "counter", "Messages published on the node.",
           t.broker.messages_published);
    metric(&sb, "herald_deliveries_total", "counter", "Messages written to subscribers.",
           t.hub.deliveries);
    metric(&sb, "herald_history_bytes", "gauge", "Payload bytes held in history.",
           t.broker.history_bytes);
    metric(&sb, "herald_broker_connected", "gauge",
           "1 while the broker can serve (the Redis bridge: connected to Redis), else 0.",
           t.broker.state == HD_BROKER_UP);
    metric(&sb, "herald_broker_reconnects_total", "counter", "Connections to Redis lost.",
           t.broker.reconnects);
    metric(&sb, "herald_channels_evicted_total", "counter", "History evicted for max_memory.",
           t.broker.channels_evicted);
    metric(&sb, "herald_channels_refused_total", "counter",
           "New channels refused because max_channels or max_memory was reached.",
           t.broker.channels_refused);
    metric(&sb, "herald_broker_memory_bytes", "gauge",
           "Bytes the embedded broker holds for channels and history (counted against max_memory).",
           t.broker.memory_bytes);
    metric(&sb, "herald_slow_subscribers_dropped_total", "counter",
           "Subscribers disconnected for falling behind max_queue_bytes.", t.hub.slow_dropped);
    metric(&sb, "herald_subscriptions", "gauge",
           "Subscriptions on the node, every transport (counted against max_subscriptions).",
           hd_hub_subscriptions());
    hd_sbuf_appends(&sb, "# HELP herald_subscriptions_refused_total Subscriptions refused, by "
                         "the limit reached.\n"
                         "# TYPE herald_subscriptions_refused_total counter\n");
    hd_sbuf_appendf(&sb, "herald_subscriptions_refused_total{limit=\"max_subscriptions\"} %llu\n",
                    (unsigned long long)t.hub.subscriptions_refused[HD_SUBS_LIMIT_NODE]);
    hd_sbuf_appendf(
        &sb,
        "herald_subscriptions_refused_total{limit=\"max_subscriptions_per_connection\"} %llu\n",
        (unsigned long long)t.hub.subscriptions_refused[HD_SUBS_LIMIT_CONNECTION]);
    hd_sbuf_appends(&sb, "# HELP herald_fanout_latency_seconds Time from the broker taking a "
                         "message to a worker fanning it out.\n"
                         "# TYPE herald_fanout_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < HD_LATENCY_BUCKETS; i++) {
        cum += t.hub.latency_buckets[i];
        if (i < HD_LATENCY_BUCKETS - 1)
            hd_sbuf_appendf(&sb, "herald_fanout_latency_seconds_bucket{le=\"%g\"} %llu\n",
                            (double)hd_latency_bounds_us[i] / 1e6, cum);
        else
            hd_sbuf_appendf(&sb, "herald_fanout_latency_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    hd_sbuf_appendf(
        &sb, "herald_fanout_latency_seconds_sum %g\nherald_fanout_latency_seconds_count %llu\n",
        (double)t.hub.latency_sum_us / 1e6, (unsigned long long)t.hub.latency_count);
    hd_webhooks_metrics(&sb);
    hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "text/plain; version=0.0.4",
                    sb.buf->data, sb.buf->len);
    hd_sbuf_dispose(&sb);
}

typedef struct info_ctx_s {
    hd_deferred_t *d;
} info_ctx_t;

static void info_abort(hd_deferred_t *d)
{
    ((info_ctx_t *)d->data)->d = NULL;
}

static void on_info(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    info_ctx_t *ctx = r->cookie;
    if (ctx->d) {
        hd_req_t *req = ctx->d->req;
        if (r->err) {
            hd_tp_respond_failure(req, r->err);
        } else if (!r->found) {
            hd_http_respond_error(req, 404, "no such channel (no subscribers and no history)");
        } else {
            char body[512];
            int n =
                snprintf(body, sizeof(body),
                         "{\"channel\":\"%s\",\"subscribers\":%llu,\"last_id\":%s%s%s,"
                         "\"history\":%llu,\"presence\":%llu}",
                         r->channel, (unsigned long long)r->subscribers, r->last_id[0] ? "\"" : "",
                         r->last_id[0] ? r->last_id : "null", r->last_id[0] ? "\"" : "",
                         (unsigned long long)r->history_len, (unsigned long long)r->members);
            hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json", body,
                            (size_t)n);
        }
    }
    free(ctx);
    hd_breq_free(r);
}

static void on_channel(hd_req_t *req, void *arg)
{
    (void)arg;
    char channel[HD_CHANNEL_MAX + 1];
    int n = hd_tp_channel_from_path(req, 10, channel);
    if (n < 0)
        return;
    info_ctx_t *ctx = hd_calloc(1, sizeof(*ctx));
    hd_breq_t *r = hd_breq_new(HD_BREQ_INFO, req->conn->worker, channel, (size_t)n);
    r->cookie = ctx;
    r->reply_cb = on_info;
    ctx->d = hd_http_defer(req);
    ctx->d->data = ctx;
    ctx->d->on_abort = info_abort;
    hd_broker_submit(r);
}

void hd_introspect_register(hd_router_t *r, hd_server_t *server)
{
    node = server;
    started_ms = hd_now_ms();
    hd_router_add(r, HD_M_GET, "/channels/", 1, on_channel, NULL);
    hd_presence_register(r);
    hd_router_add(r, HD_M_GET, "/stats", 0, on_stats, NULL);
    hd_router_add(r, HD_M_GET, "/metrics", 0, on_metrics, NULL);
}
