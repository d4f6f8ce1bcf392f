/* SPDX-License-Identifier: MIT */
/*
 * common.c: what the transports share: channel names from paths, ids, the publish check with
 * its keys (publish_key) and its rule for clients on this host, failures, publishing.
 */
#include "herald/hooks.h"
#include "herald/transport.h"

#include <netinet/in.h>
#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

int hd_tp_channel_from_path(hd_req_t *req, size_t prefix_len, char *out)
{
    const char *p = req->path + prefix_len;
    int n = hd_pct_decode(p, req->path_len - prefix_len, out, HD_CHANNEL_MAX + 1, 0);
    if (n < 0 || !hd_channel_name_valid(out, (size_t)n)) {
        hd_http_respond_error(req, 400,
                              "bad channel name: 1-128 characters of A-Z a-z 0-9 . _ - : @");
        return -1;
    }
    return n;
}

int hd_tp_parse_id(hd_req_t *req, const char *what, const char *s, size_t len, uint64_t *epoch,
                   uint64_t *seq)
{
    if (hd_id_parse(s, len, epoch, seq) == 0)
        return 0;
    char msg[128];
    snprintf(msg, sizeof(msg), "bad %s: expected a message id such as \"mh3k2x1a-42\"", what);
    hd_http_respond_error(req, 400, msg);
    return -1;
}

int hd_tp_key_match(const hd_strlist_t *keys, const char *token, size_t len)
{
    /* Each key and the token are compared as HD_KEY_MAX-byte zero-padded copies with the
     * lengths folded in: the time depends on the number of keys only, never on how much of a
     * key a token gets right, on which key matches or on where one stops matching. */
    unsigned char tok[HD_KEY_MAX], key[HD_KEY_MAX];
    unsigned ok = 0;
    size_t tl = len > HD_KEY_MAX ? HD_KEY_MAX : len;
    memset(tok, 0, sizeof(tok));
    if (token)
        memcpy(tok, token, tl);
    for (size_t i = 0; i < keys->n; i++) {
        size_t kl = strlen(keys->v[i]);
        memset(key, 0, sizeof(key));
        memcpy(key, keys->v[i], kl);
        int diff = CRYPTO_memcmp(tok, key, sizeof(key));
        ok |= (unsigned)(diff == 0) & (unsigned)(token != NULL && len == kl);
    }
    OPENSSL_cleanse(tok, sizeof(tok));
    OPENSSL_cleanse(key, sizeof(key));
    return ok ? 0 : -1;
}

const char *hd_tp_bearer(const hd_req_t *req, size_t *len)
{
    size_t n;
    const char *auth = hd_req_header(req, "authorization", &n);
    if (!auth || n < 7 || strncasecmp(auth, "Bearer ", 7) != 0)
        return NULL;
    *len = n - 7;
    return auth + 7;
}

/*
 * Whether the client is this host: its address (after a PROXY header on a proxy_protocol
 * listener, hd_req_client_ip) is 127.0.0.0/8 or ::1 (mapped IPv4 is stored as IPv4), or the
 * socket is a Unix socket (the embedded node's socketpairs in tests and fuzzers).
 */
static int client_is_loopback(const hd_req_t *req)
{
    const hd_ip_t *ip = hd_req_client_ip(req);
    if (ip->family != HD_IP_NONE)
        return hd_ip_is_loopback(ip);
    return req->conn->is_unix_peer; /* an HTTP/2 stream's: its connection's */
}

int hd_tp_peer_is_local(const hd_req_t *req)
{
    /* A request relayed by a proxy on this host comes from loopback on behalf of someone else;
     * one made by a browser on this host (it sends Origin or Sec-Fetch-Site, even to a page
     * that rebound its name to 127.0.0.1) is made on behalf of whatever page it shows. */
    static const char *const relayed[] = {"x-forwarded-for", "forwarded", "x-real-ip", "origin",
                                          "sec-fetch-site"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(relayed); i++) {
        if (hd_req_header(req, relayed[i], NULL))
            return 0;
    }
    return client_is_loopback(req);
}

#define NO_PUBLISH_KEY                                                                             \
    "publishing refused: no publish_key is configured, so only a local client (loopback, not "     \
    "through a proxy or a browser) may publish; set publish_key and send Authorization: Bearer "   \
    "<key>"

int hd_tp_publish_allowed(hd_req_t *req)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (conf->publish_keys.n == 0) {
        if (hd_tp_peer_is_local(req))
            return 0;
        hd_conn_log(HD_LOG_INFO, req->conn, "publish refused: not local and no publish_key");
        hd_http_respond_error(req, 403, NO_PUBLISH_KEY);
        return -1;
    }
    size_t len;
    const char *token = hd_tp_bearer(req, &len);
    if (!token && !hd_req_header(req, "authorization", NULL)) {
        static const char body[] = "{\"error\":\"publishing needs a key (publish_key): "
                                   "Authorization: Bearer <key>\",\"status\":401}";
        hd_http_respond(req, 401, "WWW-Authenticate: Bearer realm=\"herald\"\r\n",
                        "application/json", body, sizeof(body) - 1);
        return -1;
    }
    if (hd_tp_key_match(&conf->publish_keys, token, token ? len : 0) != 0) {
        hd_http_respond_error(req, 403, "wrong publish key (publish_key)");
        return -1;
    }
    return 0;
}

void hd_tp_respond_failure(hd_req_t *req, int err)
{
    int status = hd_err_http_status(err);
    if (err == HD_ECHANNELS || err == HD_EMEMORY) {
        /* A node-wide budget is spent: retrying soon will not help, so no Retry-After. */
        char body[160];
        int n =
            snprintf(body, sizeof(body), "{\"error\":\"%s\",\"limit\":\"%s\",\"status\":%d}",
                     hd_strerror(err), err == HD_ECHANNELS ? "max_channels" : "max_memory", status);
        hd_http_respond(req, status, NULL, "application/json", body, (size_t)n);
        return;
    }
    if (status != 503) {
        hd_http_respond_error(req, status, hd_strerror(err));
        return;
    }
    /* Unavailable for now (overload, broker down): a jittered hint spreads the retries. */
    char hdr[64], body[160];
    snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", 1 + hd_tp_jitter(5));
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":503}", hd_strerror(err));
    hd_http_respond(req, 503, hdr, "application/json", body, (size_t)n);
}

uint32_t hd_tp_jitter(uint32_t n)
{
    static __thread uint64_t state;
    if (state == 0)
        state = uv_hrtime() | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return n ? (uint32_t)(state % n) : 0;
}

typedef struct pub_ctx_s {
    hd_tp_published_cb done;
    void *arg;
} pub_ctx_t;

static void on_published(hd_worker_t *w, hd_breq_t *r)
{
    pub_ctx_t *ctx = r->cookie;
    if (!r->err) {
        HD_HUB_STAT_ADD(w, published, r->n_msgs);
        hd_hooks_on_published(r->msgs, r->n_msgs); /* webhooks: a push when one matches */
    }
    ctx->done(ctx->arg, r->err, r->msgs, r->n_msgs);
    free(ctx);
    hd_breq_free(r);
}

void hd_tp_publish(hd_worker_t *w, hd_message_t **msgs, size_t n, hd_tp_published_cb done,
                   void *arg)
{
    pub_ctx_t *ctx = hd_malloc(sizeof(*ctx));
    ctx->done = done;
    ctx->arg = arg;
    hd_breq_t *r = hd_breq_new(HD_BREQ_PUBLISH, w, NULL, 0);
    r->msgs = hd_malloc(n * sizeof(*r->msgs));
    memcpy(r->msgs, msgs, n * sizeof(*r->msgs));
    r->n_msgs = n;
    r->cookie = ctx;
    r->reply_cb = on_published;
    hd_broker_submit(r);
}
