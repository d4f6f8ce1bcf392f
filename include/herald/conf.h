/* SPDX-License-Identifier: MIT */
/*
 * conf.h: herald's configuration: one immutable, refcounted snapshot per load.
 *
 * The file format is line based, in the spirit of redis.conf and nginx:
 *
 *     # a comment runs to the end of the line
 *     directive value [value ...]     # trailing comments are allowed
 *     tls_certificate "/etc/herald/my cert.pem"   # double quotes keep spaces
 *
 * Every directive is one row of a single table (src/conf/conf.c) with its type, default, range
 * and whether SIGHUP can change it live. A loaded hd_conf_t is never modified: a reload builds a
 * new snapshot and workers swap their reference, so loops share no mutable configuration.
 */
#ifndef HERALD_CONF_H
#define HERALD_CONF_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/socket.h>

#include "herald/auth.h"
#include "herald/hook_def.h"
#include "herald/ipaddr.h"
#include "herald/webhook_def.h"

typedef struct hd_listen_s {
    struct sockaddr_storage addr; /* resolved numeric address (IPv4 or IPv6) */
    socklen_t addrlen;
    char text[80]; /* as written, e.g. "0.0.0.0:8080" or "[::1]:8443" */
    unsigned is_tls : 1;
    unsigned is_admin : 1; /* "admin": serves the admin endpoints (and /healthz) to anyone */
    unsigned is_proxy : 1; /* proxy_protocol: a PROXY header (v1 or v2) comes first */
} hd_listen_t;

/*
 * The words of a list directive (publish_key, admin_key, cors_origins): every value of every
 * line, in order; n == 0 when the directive is off.
 */
#define HD_KEY_MAX 256 /* longest publish_key or admin_key */

typedef struct hd_strlist_s {
    char **v;
    size_t n;
} hd_strlist_t;

typedef struct hd_conf_s {
    int refs_;  /* atomic; use hd_conf_ref/hd_conf_unref */
    char *path; /* file this snapshot was loaded from ("" when none) */

    /* process */
    hd_listen_t *listens;
    size_t n_listens;
    unsigned workers; /* resolved: "auto" becomes the number of online CPUs */
    char *pidfile;    /* NULL: none */
    uint64_t shutdown_timeout_ms;

    /* logging */
    int log_level;    /* HD_LOG_* (herald/log.h) */
    char *log_file;   /* NULL: stderr */
    char *access_log; /* NULL: off */

    /* connection limits */
    uint32_t max_connections; /* per node */
    uint32_t accept_rate;     /* new connections per second per node; 0 = unlimited */
    uint32_t accept_burst;    /* token bucket depth */

    /* client addresses and per-client limits */
    hd_cidr_list_t trusted_proxies;  /* peers whose X-Forwarded-For / Forwarded is believed */
    uint32_t max_connections_per_ip; /* open connections of one client address; 0 = unlimited */
    uint32_t connect_rate_per_ip;    /* new connections per second per address; 0 = unlimited */
    uint32_t connect_burst_per_ip;   /* its token bucket depth */
    uint32_t client_publish_rate;    /* publishes per second per WebSocket; 0 = unlimited */

    /* HTTP */
    size_t max_url_bytes;
    size_t max_header_bytes;
    size_t max_body_bytes;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t keepalive_timeout_ms;
    uint32_t keepalive_requests; /* requests served on one connection before closing it */

    /* HTTP/2 (src/http/h2.c); read when a connection opens */
    int http2;                    /* h2 by ALPN, h2c by prior knowledge */
    uint32_t http2_max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS */
    size_t http2_max_queue_bytes; /* output waiting on all streams of one connection */
    uint32_t http2_reset_rate;    /* RST_STREAM per second from a client (rapid reset) */

    /* TLS */
    char *tls_certificate;
    char *tls_certificate_key;
    char *tls_ciphers;   /* TLS 1.2 cipher list (OpenSSL syntax) */
    int tls_min_version; /* 12 or 13 */

    /* access (src/transport/common.c, src/api/access.c) */
    hd_strlist_t publish_keys; /* any of them publishes; none: only loopback clients may */
    hd_strlist_t admin_keys;   /* any of them opens the admin endpoints; none: loopback only */
    hd_strlist_t cors_origins; /* origins answered with CORS headers; "*" = any, no credentials */

    /* publishing and history */
    size_t max_message_bytes;
    /* a publish retried with the same key within it gets the first id; 0: keys ignored */
    uint64_t idempotency_window_ms;

    uint32_t history_size;    /* messages kept per channel */
    uint64_t history_ttl_ms;  /* 0: no age limit */
    size_t history_max_bytes; /* per channel */
    size_t max_memory_bytes;  /* channels and history on this node; coldest evicted first */
    uint32_t max_channels;    /* channels on this node; a new one past it is refused */

    /* chat (docs/chat.md) */
    uint32_t presence_max_channels; /* channels with presence tracked at once on this node */
    uint32_t ephemeral_rate;        /* ephemeral publishes per second per WebSocket; 0: any */
    uint64_t presence_lease_ms;     /* Redis: a dead node's members leave within it */
    uint64_t presence_hold_ms;      /* a busy channel's joins/leaves held this long; 0: a pass */

    /* delivery */
    size_t max_queue_bytes; /* per connection; a subscriber behind by more is disconnected */
    uint32_t max_subscriptions_per_connection; /* /ws subscriptions, channels of one SSE stream */
    uint64_t max_subscriptions;                /* node-wide, every transport (hub) */
    uint32_t poll_max_messages;                /* messages in one poll / long-poll answer */
    size_t max_response_bytes;                 /* a poll answer stops adding messages past this */
    uint64_t longpoll_timeout_ms;
    uint64_t longpoll_max_timeout_ms;
    uint64_t sse_heartbeat_ms;
    uint64_t sse_retry_ms; /* base of the jittered retry: hint */
    uint64_t ws_ping_interval_ms;
    uint64_t ws_idle_timeout_ms;
    char *ws_origins;      /* space-separated allowed Origin values; NULL: any */
    int ws_client_publish; /* WebSocket clients may publish */
    int client_js;         /* GET /herald.js serves the browser client (src/api/clientjs.c) */

    /* Redis bridge (src/broker/redis.c) */
    char *redis;        /* URL or unix socket path (hd_redis_url_parse); NULL: embedded */
    char *redis_prefix; /* of every key and pub/sub channel */
    uint64_t redis_timeout_ms;
    uint32_t redis_max_pending; /* live messages held while catching up after a reconnect */

    /* authorization (src/auth, docs/auth.md) */
    char *auth_jwt_alg;        /* NULL: from the key */
    char *auth_jwt_secret;     /* HS* secret; NULL: none */
    char *auth_jwt_public_key; /* PEM file (RS*, ES*); NULL: none */
    char *auth_jwks;           /* JWKS file, reread on every load (SIGHUP); NULL: none */
    char *auth_jwt_issuer;     /* required iss; NULL: not checked */
    char *auth_jwt_audience;   /* required aud; NULL: not checked */
    uint64_t auth_clock_skew_ms;
    uint64_t auth_timeout_ms; /* /ws: a connection without a token must send its auth by then */
    /* Each worker's cache of verified tokens (hd_auth_cache_t): at most this many entries (0:
     * no cache) and bytes, read at each verification. */
    uint32_t auth_cache_entries;
    size_t auth_cache_bytes;
    /* Staying authorized (src/transport/lifetime.c): a stream ends when its token does (on), and
     * is told to refresh this long before (0: never told). */
    int auth_expire_connections;
    uint64_t auth_refresh_before_ms;
    /* Single-use tickets (POST /auth/ticket): the ttl when the request gives none, the most it
     * may give, and how many may wait to be used on this node (past it: 503). */
    uint64_t auth_ticket_ttl_ms;
    uint64_t auth_ticket_max_ttl_ms;
    uint32_t auth_max_tickets;
    /* Revocation (POST /admin/revoke, docs/auth.md): how long one lasts when the request says
     * nothing, the longest it may ask for, and how many live ones a node (or, under Redis, the
     * cluster) holds; read at each request. */
    uint64_t revocation_ttl_ms;
    uint64_t revocation_max_ttl_ms;
    uint32_t max_revocations;
    hd_auth_rule_t *channel_rules; /* channel_rule lines, as written */
    size_t n_channel_rules;
    /* The policy built from the above when the snapshot is loaded (never NULL; owned by the
     * snapshot): keys read, algorithm pinned, rules sorted. hd_auth_check(conf->auth, ...). */
    hd_auth_t *auth;

    /* webhooks (src/hooks, docs/webhooks.md): endpoints in conf order, and how they are served */
    hd_webhook_def_t *webhooks;
    size_t n_webhooks;
    uint64_t webhook_connect_timeout_ms; /* TCP and TLS connect */
    uint64_t webhook_timeout_ms;         /* from the request sent to the whole response */
    uint64_t webhook_retry_window_ms;    /* retried this long after the first attempt */
    uint64_t webhook_backoff_base_ms;    /* retry k waits random [0, min(max, base * 2^(k-1))] */
    uint64_t webhook_backoff_max_ms;
    uint64_t webhook_disable_after_ms; /* an endpoint failing this long is disabled; 0: never */
    uint32_t webhook_concurrency;      /* requests in flight per endpoint */
    uint32_t webhook_queue_size;       /* events waiting per endpoint */
    uint32_t webhook_dead_letters;     /* dead letters kept (node) */
    size_t webhook_max_memory_bytes;   /* event bodies held: pending and dead letters (node) */
    char *webhook_tls_ca;              /* CA file for https endpoints; NULL: the system's store */
    int webhook_allow_private;         /* loopback, private and link-local targets allowed */
    uint64_t webhook_claim_after_ms;   /* with Redis: unfinished this long, another node takes it */
    uint32_t webhook_max_endpoints;    /* registered through the admin API (cluster); 0: no API */
    /* The application's backend deciding connects and subscribes (channel_rule subscribe=hook;
     * docs/webhooks.md, "Backend hooks"); NULL: none. */
    hd_hook_def_t *authorize_hook;
    /* The backend told of connects, disconnects, subscribes, unsubscribes; NULL: none. */
    hd_notify_def_t *notify_hook;
} hd_conf_t;

/*
 * Loads a configuration: reads `path` (NULL: no file, defaults only), then applies each of the
 * `n_overrides` strings in `overrides` as if it were one more line of the file ("DIRECTIVE
 * VALUE"). A repeatable directive (listen) given on the command line replaces the file's lines
 * of that directive instead of adding to them.
 *
 * On success returns 0 and stores a snapshot with one reference in *out. On failure returns
 * HD_ECONF (or UV_ENOENT/UV_EACCES-style negative errno when the file cannot be read) and writes
 * a one-line message into err, naming the file, the line and the directive, e.g.
 *     conf/herald.conf:12: workers: expected "auto" or an integer in 1..1024, got "x"
 *     -o 'workers x': workers: expected ...
 * Checks that hold across directives (a tls listener without tls_certificate, a certificate
 * without a key) are reported with the file and the line of the listener.
 */
int hd_conf_load(hd_conf_t **out, const char *path, const char *const *overrides,
                 size_t n_overrides, char *err, size_t errlen);

/* Same, parsing `text` as if it were the content of a file called `name` (for tests). */
int hd_conf_load_string(hd_conf_t **out, const char *name, const char *text,
                        const char *const *overrides, size_t n_overrides, char *err, size_t errlen);

hd_conf_t *hd_conf_ref(hd_conf_t *conf);
void hd_conf_unref(hd_conf_t *conf);

/*
 * Compares two snapshots and writes into buf the comma-separated names of the directives that
 * differ but cannot change without a restart (listen, workers, pidfile, log_file, ...). Returns
 * the number of such directives (0: the new snapshot can be applied live entirely).
 */
int hd_conf_restart_needed(const hd_conf_t *old, const hd_conf_t *new_, char *buf, size_t len);

/* Name of a log level ("debug", ...). */
const char *hd_conf_log_level_name(int level);

/* Writes every directive with its default and a one-line description (herald --reference). */
void hd_conf_print_reference(FILE *out);

#endif
