/* SPDX-License-Identifier: MIT */
/*
 * directives.c: the one table of directives (conf_internal.h). Adding a directive is one field
 * in hd_conf_t (include/herald/conf.h) and one row below; defaults, range checks, error
 * messages, hd_conf_restart_needed and hd_conf_print_reference all follow from the row.
 * Defaults are strings applied through the same setter as the file, so the table cannot hold a
 * default the parser would refuse.
 */
#include "conf_internal.h"

#include "herald/log.h"
#include "herald/redis_url.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const choice_t log_levels[] = {{"debug", HD_LOG_DEBUG},
                                      {"info", HD_LOG_INFO},
                                      {"warn", HD_LOG_WARN},
                                      {"error", HD_LOG_ERROR},
                                      {NULL, 0}};
static const choice_t tls_versions[] = {{"1.2", 12}, {"1.3", 13}, {NULL, 0}};

/* "workers auto"; set_number clamps it into the directive's range. */
static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 65536 ? 65536 : (unsigned)n;
}

static int check_redis_url(const char *value, char *why, size_t whylen)
{
    hd_redis_addr_t a;

    return hd_redis_url_parse(value, &a, why, whylen) == 0 ? 0 : -1;
}

static int check_redis_prefix(const char *value, char *why, size_t whylen)
{
    size_t i, n = strlen(value);

    for (i = 0; i < n; i++) {
        if ((unsigned char)value[i] <= ' ' || (unsigned char)value[i] >= 0x7f)
            break;
    }
    if (n > 64 || i < n) {
        snprintf(why, whylen, "expected 1..64 printable characters without spaces");
        return -1;
    }
    return 0;
}

static int check_jwt_alg(const char *value, char *why, size_t whylen)
{
    const char *ok[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                        "RS512", "ES256", "ES384", "ES512"};

    for (size_t i = 0; i < HD_ARRAY_SIZE(ok); i++) {
        if (strcmp(value, ok[i]) == 0)
            return 0;
    }
    if (strncmp(value, "PS", 2) == 0 || strcmp(value, "EdDSA") == 0)
        snprintf(why, whylen, "%s is not supported by Debian 12's libjwt (1.10)", value);
    else
        snprintf(why, whylen, "expected auto, HS256/384/512, RS256/384/512 or ES256/384/512");
    return -1;
}

/* A key (publish_key, admin_key): what a client sends after "Bearer ". Never echoed. */
static int check_key(const char *value, char *why, size_t whylen)
{
    size_t i, n = strlen(value);

    for (i = 0; i < n; i++) {
        if ((unsigned char)value[i] <= ' ' || (unsigned char)value[i] >= 0x7f)
            break;
    }
    if (n > HD_KEY_MAX || i < n) {
        snprintf(why, whylen, "a key is 1..%d printable ASCII characters without spaces",
                 HD_KEY_MAX);
        return -1;
    }
    return 0;
}

/*
 * An origin as browsers send it (RFC 6454 serialization): SCHEME://HOST[:PORT], lower case, no
 * path; or "*". A trailing slash or upper case would never match, so they are refused here.
 */
static int check_origin(const char *value, char *why, size_t whylen)
{
    const char *p = value, *host;
    size_t n = strlen(value);

    if (strcmp(value, "*") == 0)
        return 0;
    if (n > 255)
        goto bad;
    if (!(*p >= 'a' && *p <= 'z'))
        goto bad;
    while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' ||
           *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        goto bad;
    host = p += 3;
    if (*p == '[') {
        const char *in = ++p;
        while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == ':' || *p == '.')
            p++;
        if (p == in || *p++ != ']')
            goto bad;
    } else {
        while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
               *p == '_')
            p++;
    }
    if (p == host)
        goto bad;
    if (*p == ':') {
        const char *port = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == port || p - port > 5)
            goto bad;
    }
    if (*p == '\0')
        return 0;
bad:
    snprintf(why, whylen,
             "expected an origin SCHEME://HOST[:PORT] in lower case without a path (as browsers "
             "send it, e.g. https://app.example.com) or *, got \"%.*s\"",
             (int)(n > 200 ? 200 : n), value);
    return -1;
}

/* clang-format off */
const directive_t hd_conf_directives[] = {
    /* process */
    D("listen", T_LISTEN, listens, "0.0.0.0:8080", NULL, NULL, RESTART | F_MULTI,
      "address to accept connections on: IPv4:PORT, [IPv6]:PORT or *:PORT [tls] [admin] "
      "[proxy_protocol]"),
    D("workers", T_UINT, workers, "auto", "1", "1024", RESTART,
      "worker threads, each with its own event loop; auto = one per online CPU",
      .auto_value = online_cpus),
    D("pidfile", T_STRING, pidfile, "off", NULL, NULL, RESTART,
      "file the process id is written to; off = none", .none = "off"),
    D("shutdown_timeout", T_DURATION, shutdown_timeout_ms, "10s", "0", "1h", RELOAD,
      "on SIGTERM or SIGINT, time given to open connections to finish before they are closed"),

    /* logging */
    D("log_level", T_ENUM, log_level, "info", NULL, NULL, RELOAD,
      "least severe level logged: debug, info, warn or error", .choices = log_levels),
    D("log_file", T_STRING, log_file, "stderr", NULL, NULL, RESTART,
      "error log file; stderr = standard error", .none = "off|stderr"),
    D("access_log", T_STRING, access_log, "off", NULL, NULL, RELOAD,
      "access log file, one line per request; off = none", .none = "off"),

    /* connection limits */
    D("max_connections", T_UINT, max_connections, "100000", "1", "10000000", RELOAD,
      "open client connections allowed on this node; more are refused"),
    D("accept_rate", T_UINT, accept_rate, "0", "0", "10000000", RELOAD,
      "new connections accepted per second on this node; 0 = unlimited"),
    D("accept_burst", T_UINT, accept_burst, "1000", "1", "10000000", RELOAD,
      "new connections accepted at once above accept_rate (token bucket depth)"),

    /* client addresses and per-client limits */
    D("trusted_proxies", T_CIDRS, trusted_proxies, "off", NULL, NULL, RELOAD | F_MULTI,
      "proxies (ADDR[/BITS] ...) whose X-Forwarded-For or Forwarded names the client; off = none",
      .none = "off"),
    D("max_connections_per_ip", T_UINT, max_connections_per_ip, "0", "0", "10000000", RELOAD,
      "open connections from one client address (IPv6: its /64); more get 503; 0 = unlimited"),
    D("connect_rate_per_ip", T_UINT, connect_rate_per_ip, "0", "0", "10000000", RELOAD,
      "new connections per second from one client address; more get 429; 0 = unlimited"),
    D("connect_burst_per_ip", T_UINT, connect_burst_per_ip, "20", "1", "10000000", RELOAD,
      "new connections from one address accepted at once above connect_rate_per_ip"),
    D("client_publish_rate", T_UINT, client_publish_rate, "0", "0", "10000000", RELOAD,
      "publishes per second by one client connection (WebSocket, HTTP on a token); 0 = unlimited"),

    /* HTTP */
    D("max_url_size", T_SIZE, max_url_bytes, "8k", "256", "1m", RELOAD,
      "longest request URL (path and query) accepted; longer is answered 414"),
    D("max_header_size", T_SIZE, max_header_bytes, "16k", "1k", "1m", RELOAD,
      "largest request header section accepted; larger is answered 431"),
    D("max_body_size", T_SIZE, max_body_bytes, "1m", "0", "1g", RELOAD,
      "largest request body (a published message) accepted; larger is answered 413"),
    D("header_timeout", T_DURATION, header_timeout_ms, "10s", "10ms", "1h", RELOAD,
      "time allowed to receive a request's header section"),
    D("body_timeout", T_DURATION, body_timeout_ms, "30s", "10ms", "1h", RELOAD,
      "time allowed to receive a request's whole body (a deadline, not a time between reads)"),
    D("keepalive_timeout", T_DURATION, keepalive_timeout_ms, "75s", "10ms", "1h", RELOAD,
      "time an idle keep-alive connection waits for its next request"),
    D("keepalive_requests", T_UINT, keepalive_requests, "10000", "1", "10000000", RELOAD,
      "requests served on one connection before it is closed"),

    /* HTTP/2 (docs/http2.md) */
    D("http2", T_BOOL, http2, "on", NULL, NULL, RELOAD,
      "HTTP/2 on new connections: h2 by ALPN on tls listeners, prior knowledge (h2c) on others"),
    D("http2_max_streams", T_UINT, http2_max_streams, "100", "1", "10000", RELOAD,
      "concurrent streams of one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS)"),
    D("http2_max_queue_bytes", T_SIZE, http2_max_queue_bytes, "4m", "64k", "1g", RELOAD,
      "bytes waiting on all streams of one HTTP/2 connection; past it the largest is reset"),
    D("http2_reset_rate", T_UINT, http2_reset_rate, "33", "1", "100000", RELOAD,
      "stream resets per second a client may send (10 s worth at once, at least 100); more: "
      "GOAWAY"),

    /* TLS */
    D("tls_certificate", T_STRING, tls_certificate, "off", NULL, NULL, RELOAD,
      "PEM certificate chain for tls listeners; off = none", .none = "off"),
    D("tls_certificate_key", T_STRING, tls_certificate_key, "off", NULL, NULL, RELOAD,
      "PEM private key of tls_certificate; off = none", .none = "off"),
    D("tls_ciphers", T_STRING, tls_ciphers,
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
      NULL, NULL, RELOAD,
      "TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 uses OpenSSL's default suites"),
    D("tls_min_version", T_ENUM, tls_min_version, "1.2", NULL, NULL, RELOAD,
      "oldest TLS version accepted: 1.2 or 1.3", .choices = tls_versions),

    /* access */
    D("publish_key", T_LIST, publish_keys, "off", NULL, NULL, RELOAD | F_MULTI,
      "keys publishers send as 'Authorization: Bearer KEY'; off = loopback clients only",
      .none = "off", .check = check_key),
    D("admin_key", T_LIST, admin_keys, "off", NULL, NULL, RELOAD | F_MULTI,
      "keys that open /stats, /metrics, /channels, /admin/*; off = loopback or admin listeners",
      .none = "off", .check = check_key),
    D("cors_origins", T_LIST, cors_origins, "*", NULL, NULL, RELOAD | F_MULTI,
      "origins whose pages may read SSE, polls and publish answers; * = any; off = none",
      .none = "off", .check = check_origin),

    /* publishing and history */
    D("max_message_size", T_SIZE, max_message_bytes, "1m", "1", "64m", RELOAD,
      "largest message payload accepted from a publisher; larger is answered 413 (WebSocket 1009)"),
    D("idempotency_window", T_DURATION, idempotency_window_ms, "10m", "0", "24h", RESTART,
      "a publish retried with the same idempotency key within it gets the first id; 0 = off"),
    D("history_size", T_UINT, history_size, "100", "0", "1000000", RESTART,
      "messages kept per channel for resume and polling"),
    D("history_ttl", T_DURATION, history_ttl_ms, "1h", "0", "720h", RESTART,
      "age after which a message leaves history; 0 = no age limit"),
    D("history_max_bytes", T_SIZE, history_max_bytes, "4m", "0", "1g", RESTART,
      "payload bytes kept per channel; the oldest messages leave first"),
    D("max_memory", T_SIZE, max_memory_bytes, "256m", "1m", "64g", RESTART,
      "bytes of channels and history on this node; the coldest channels lose history first"),
    D("max_channels", T_UINT, max_channels, "100000", "1", "100000000", RESTART,
      "channels (with subscribers or history) on this node; a new one past it is answered 507"),

    /* chat: presence and ephemeral messages (docs/chat.md) */
    D("presence_max_channels", T_UINT, presence_max_channels, "10000", "1", "10000000", RESTART,
      "channels whose presence members this node tracks at once; joins past it are not listed"),
    D("presence_lease", T_DURATION, presence_lease_ms, "15s", "1s", "300s", RESTART,
      "with Redis: a node's presence members leave this long after it stops renewing (dies)"),
    D("presence_hold", T_DURATION, presence_hold_ms, "3s", "0", "10s", RELOAD,
      "a busy channel's joins and leaves are held this long, then one frame; 0 = each pass"),
    D("ephemeral_rate", T_UINT, ephemeral_rate, "10", "0", "10000000", RELOAD,
      "ephemeral publishes per second by one WebSocket (typing, cursors); 0 = unlimited"),

    /* delivery */
    D("max_queue_bytes", T_SIZE, max_queue_bytes, "1m", "4k", "1g", RELOAD,
      "bytes waiting to be written to one subscriber; one further behind is disconnected"),
    D("max_subscriptions_per_connection", T_UINT, max_subscriptions_per_connection, "64", "1",
      "1024", RELOAD,
      "subscriptions of one /ws connection, channels of one SSE stream; more are refused"),
    D("max_subscriptions", T_UINT, max_subscriptions, "1000000", "1", "100000000", RELOAD,
      "subscriptions on this node (every transport, long polls included); more are refused 503"),
    D("poll_max_messages", T_UINT, poll_max_messages, "100", "1", "10000", RELOAD,
      "messages in one poll or long-poll answer"),
    D("max_response_size", T_SIZE, max_response_bytes, "1m", "64k", "1g", RELOAD,
      "bytes of one poll or long-poll answer: it holds fewer messages rather than grow past this"),
    D("longpoll_timeout", T_DURATION, longpoll_timeout_ms, "30s", "1s", "1h", RELOAD,
      "how long a long poll is held when the client gives no timeout"),
    D("longpoll_max_timeout", T_DURATION, longpoll_max_timeout_ms, "120s", "1s", "1h", RELOAD,
      "upper bound for the timeout a long-poll client asks for"),
    D("sse_heartbeat", T_DURATION, sse_heartbeat_ms, "15s", "100ms", "1h", RELOAD,
      "interval of the comment line that keeps idle SSE streams (and proxies) alive"),
    D("sse_retry", T_DURATION, sse_retry_ms, "3s", "100ms", "1h", RELOAD,
      "reconnect delay hinted to SSE clients; each stream gets it plus up to 100% jitter"),
    D("ws_ping_interval", T_DURATION, ws_ping_interval_ms, "30s", "100ms", "1h", RELOAD,
      "interval of server pings on WebSocket connections"),
    D("ws_idle_timeout", T_DURATION, ws_idle_timeout_ms, "90s", "100ms", "1h", RELOAD,
      "a WebSocket peer silent this long (no frame, no pong) is closed"),
    D("ws_origins", T_STRING, ws_origins, "*", NULL, NULL, RELOAD,
      "space-separated Origin values allowed to open WebSockets; * = any", .none = "*"),
    D("ws_client_publish", T_BOOL, ws_client_publish, "off", NULL, NULL, RELOAD,
      "WebSocket clients may publish to the channels they are on"),
    D("client_js", T_BOOL, client_js, "on", NULL, NULL, RELOAD,
      "GET /herald.js serves the browser client built into the binary (clients/js); off = 404"),

    /* Redis bridge */
    D("redis", T_STRING, redis, "off", NULL, NULL, RESTART,
      "Redis the nodes share: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or a socket; off = one node",
      .none = "off", .check = check_redis_url),
    D("redis_prefix", T_STRING, redis_prefix, "herald:", NULL, NULL, RESTART,
      "prefix of every Redis key and pub/sub channel herald uses", .check = check_redis_prefix),
    D("redis_timeout", T_DURATION, redis_timeout_ms, "3s", "100ms", "1m", RESTART,
      "a Redis connect or command taking longer counts as a lost connection"),
    D("redis_max_pending", T_UINT, redis_max_pending, "100000", "16", "10000000", RESTART,
      "live messages held for ordering (catching up after a reconnect); past it, a gap notice"),

    /* authorization (docs/auth.md) */
    D("auth_jwt_alg", T_STRING, auth_jwt_alg, "auto", NULL, NULL, RELOAD,
      "the one JWT alg accepted, HS256..ES512 (docs/auth.md); auto = from the key",
      .none = "auto", .check = check_jwt_alg),
    D("auth_jwt_secret", T_STRING, auth_jwt_secret, "off", NULL, NULL, RELOAD,
      "HMAC secret verifying HS* tokens (at least 32 bytes for HS256); off = none", .none = "off"),
    D("auth_jwt_public_key", T_STRING, auth_jwt_public_key, "off", NULL, NULL, RELOAD,
      "PEM public key (or certificate) file verifying RS* or ES* tokens; off = none",
      .none = "off"),
    D("auth_jwks", T_STRING, auth_jwks, "off", NULL, NULL, RELOAD,
      "JWKS file verifying tokens, keys chosen by kid, reread on SIGHUP; off = none",
      .none = "off"),
    D("auth_jwt_issuer", T_STRING, auth_jwt_issuer, "off", NULL, NULL, RELOAD,
      "iss a token must carry; off = not checked", .none = "off"),
    D("auth_jwt_audience", T_STRING, auth_jwt_audience, "off", NULL, NULL, RELOAD,
      "value a token's aud must be or contain; off = not checked", .none = "off"),
    D("auth_clock_skew", T_DURATION, auth_clock_skew_ms, "30s", "0", "1h", RELOAD,
      "allowance on a token's exp, nbf and iat for clocks that differ"),
    D("auth_timeout", T_DURATION, auth_timeout_ms, "5s", "100ms", "1m", RELOAD,
      "a /ws connection opened without a token must authenticate within it"),
    D("auth_cache_entries", T_UINT, auth_cache_entries, "10000", "0", "10000000", RELOAD,
      "verified tokens each worker keeps, so a reconnect skips the signature; 0 = no cache"),
    D("auth_cache_memory", T_SIZE, auth_cache_bytes, "8m", "64k", "1g", RELOAD,
      "bytes each worker's token cache may hold (entries and their identities)"),
    D("auth_expire_connections", T_BOOL, auth_expire_connections, "on", NULL, NULL, RELOAD,
      "a connection ends when its token expires (off: it outlives the token)"),
    D("auth_refresh_before", T_DURATION, auth_refresh_before_ms, "60s", "0", "24h", RELOAD,
      "SSE, /ws and herald.v1 are told to refresh this long before the token expires; 0 = never"),
    D("auth_ticket_ttl", T_DURATION, auth_ticket_ttl_ms, "30s", "1s", "1h", RELOAD,
      "how long a ticket from POST /auth/ticket waits to be used when the request gives no ttl"),
    D("auth_ticket_max_ttl", T_DURATION, auth_ticket_max_ttl_ms, "5m", "1s", "1h", RELOAD,
      "the longest ttl POST /auth/ticket accepts; a longer one is answered 400"),
    D("auth_max_tickets", T_UINT, auth_max_tickets, "100000", "1", "10000000", RELOAD,
      "tickets waiting to be used on this node; POST /auth/ticket past it is answered 503"),
    D("revocation_ttl", T_DURATION, revocation_ttl_ms, "24h", "1s", "8760h", RELOAD,
      "how long POST /admin/revoke refuses a sub or jti when the request gives no expiry"),
    D("revocation_max_ttl", T_DURATION, revocation_max_ttl_ms, "720h", "1s", "8760h", RELOAD,
      "the longest expiry a POST /admin/revoke may ask for; longer is refused 400"),
    D("max_revocations", T_UINT, max_revocations, "100000", "1", "10000000", RELOAD,
      "live revocations held (with Redis: by the cluster); past it, POST /admin/revoke gets 507"),
    D("channel_rule", T_RULE, channel_rules, "off", NULL, NULL, RELOAD | F_MULTI,
      "PATTERN [subscribe=..] [publish=..] [history=..]: who may do what (docs/auth.md)"),

    /* webhooks (docs/webhooks.md) */
    D("webhook", T_WEBHOOK, webhooks, "off", NULL, NULL, RESTART | F_MULTI,
      "URL [name=..] [channels=P,..] secret=whsec_..[,..] [events=..]: an endpoint sent events"),
    D("webhook_connect_timeout", T_DURATION, webhook_connect_timeout_ms, "5s", "10ms", "1m",
      RESTART, "a webhook connection (TCP and TLS) not made in this time is a failed attempt"),
    D("webhook_timeout", T_DURATION, webhook_timeout_ms, "10s", "10ms", "5m", RESTART,
      "a webhook response not complete this long after the request is a failed attempt"),
    D("webhook_retry_window", T_DURATION, webhook_retry_window_ms, "72h", "0", "720h", RESTART,
      "a failing event is retried this long after its first attempt, then is a dead letter"),
    D("webhook_backoff_base", T_DURATION, webhook_backoff_base_ms, "5s", "1ms", "1h", RESTART,
      "retry k waits a random time in [0, min(webhook_backoff_max, base * 2^(k-1))]"),
    D("webhook_backoff_max", T_DURATION, webhook_backoff_max_ms, "30m", "1ms", "24h", RESTART,
      "longest wait between two attempts of one event"),
    D("webhook_disable_after", T_DURATION, webhook_disable_after_ms, "0", "0", "720h", RESTART,
      "an endpoint failing this long without a 2xx is disabled, as by 410; 0 = never"),
    D("webhook_concurrency", T_UINT, webhook_concurrency, "4", "1", "256", RESTART,
      "requests in flight to one webhook endpoint"),
    D("webhook_queue_size", T_UINT, webhook_queue_size, "10000", "1", "10000000", RESTART,
      "events waiting for one endpoint; past it a new event is a dead letter at once"),
    D("webhook_dead_letters", T_UINT, webhook_dead_letters, "10000", "0", "10000000", RESTART,
      "dead letters kept for inspection and replay; past it the oldest is dropped"),
    D("webhook_max_memory", T_SIZE, webhook_max_memory_bytes, "64m", "64k", "16g", RESTART,
      "event bodies held for webhooks (pending and dead letters); past it new events are dropped"),
    D("webhook_claim_after", T_DURATION, webhook_claim_after_ms, "60s", "100ms", "24h", RESTART,
      "with Redis: a delivery left unfinished this long by a node (dead) is taken by another"),
    D("webhook_max_endpoints", T_UINT, webhook_max_endpoints, "0", "0", "1000", RESTART,
      "webhooks registered through POST /admin/webhooks (with Redis: by the cluster); 0: none"),
    D("webhook_tls_ca", T_STRING, webhook_tls_ca, "off", NULL, NULL, RESTART,
      "PEM file of the CAs https webhooks are verified against; off = the system's store",
      .none = "off"),
    D("webhook_allow_private", T_BOOL, webhook_allow_private, "off", NULL, NULL, RESTART,
      "webhooks may target loopback, private and link-local addresses (off: refused, SSRF)"),
    D("authorize_hook", T_HOOK, authorize_hook, "off", NULL, NULL, RESTART,
      "URL secret=whsec_.. [cache=..] [on_error=..] [connect=on]: asked for subscribe=hook"),
    D("notify_hook", T_NOTIFY, notify_hook, "off", NULL, NULL, RESTART,
      "URL secret=whsec_.. [events=..] [batch=N] [flush=..]: told of connects, in batches"),
};
/* clang-format on */

const size_t hd_conf_n_directives = HD_ARRAY_SIZE(hd_conf_directives);

/* The name of a log level, as the log_level directive spells it. */
const char *hd_conf_log_level_name(int level)
{
    const choice_t *ch;

    for (ch = log_levels; ch->name != NULL; ch++) {
        if (ch->value == level)
            return ch->name;
    }
    return "unknown";
}
