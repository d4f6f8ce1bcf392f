/* SPDX-License-Identifier: MIT */
/* common.c: what the transports share: channel names from paths, ids, the publish check. */
#include "herald/transport.h"

#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>

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

int hd_tp_publish_key_ok(const hd_conf_t *conf, const char *token, size_t len)
{
    if (!conf->publish_key)
        return 0;
    size_t kl = strlen(conf->publish_key);
    if (!token || len != kl || CRYPTO_memcmp(token, conf->publish_key, kl) != 0)
        return -1;
    return 0;
}

int hd_tp_publish_allowed(hd_req_t *req)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (!conf->publish_key)
        return 0;
    size_t len;
    const char *auth = hd_req_header(req, "authorization", &len);
    if (!auth) {
        hd_http_respond(req, 401, "WWW-Authenticate: Bearer realm=\"herald\"\r\n",
                        "application/json", "{\"error\":\"publishing needs a key\",\"status\":401}",
                        46);
        return -1;
    }
    if (len < 7 || strncasecmp(auth, "Bearer ", 7) != 0 ||
        hd_tp_publish_key_ok(conf, auth + 7, len - 7) != 0) {
        hd_http_respond_error(req, 403, "wrong publish key");
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
    if (!r->err)
        HD_HUB_STAT_ADD(w, published, r->n_msgs);
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
