/* SPDX-License-Identifier: MIT */
/*
 * publish.c: the HTTP publishing API.
 *   POST /pub/{channel}   the body is the payload, byte-exact; Content-Type is kept
 *   POST /pub             a JSON array [{"channel":..,"data":..,"type":..}, ...], in order
 * Both answer once the broker has assigned ids, with those ids.
 */
#include "herald/api.h"

#include <jansson.h>
#include <string.h>
#include <strings.h>

#define MAX_BATCH 10000

typedef struct pub_req_s {
    hd_deferred_t *d; /* NULL once the client is gone */
    int is_batch;
} pub_req_t;

static void on_abort(hd_deferred_t *d)
{
    pub_req_t *p = d->data;
    p->d = NULL; /* the broker's answer still comes; nobody is waiting for it */
}

static void on_published(void *arg, int err, hd_message_t *const *msgs, size_t n)
{
    pub_req_t *p = arg;
    if (p->d) {
        hd_req_t *req = p->d->req;
        if (err) {
            hd_tp_respond_failure(req, err);
        } else {
            hd_sbuf_t sb;
            hd_sbuf_init(&sb, 64 + n * 64);
            if (p->is_batch)
                hd_sbuf_appends(&sb, "{\"messages\":[");
            for (size_t i = 0; i < n; i++) {
                /* channel names and ids need no JSON escaping (their alphabets are safe); no
                 * printf: this is every publish's answer */
                hd_sbuf_appends(&sb, i ? ",{\"channel\":\"" : "{\"channel\":\"");
                hd_sbuf_appends(&sb, msgs[i]->channel);
                hd_sbuf_appends(&sb, "\",\"id\":\"");
                hd_sbuf_append(&sb, msgs[i]->id, msgs[i]->id_len);
                hd_sbuf_appends(&sb, "\"}");
            }
            if (p->is_batch)
                hd_sbuf_appends(&sb, "]}");
            /* the answer ends req (and an HTTP/2 stream), not a socket's connection */
            hd_conn_t *conn = req->conn->is_stream ? NULL : req->conn;
            hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json",
                            sb.buf->data, sb.buf->len);
            hd_sbuf_dispose(&sb);
            /* queued after this worker's deliveries of the message (its mailbox's order),
             * written before them: the publisher is not held up by the fan-out */
            if (conn)
                hd_conn_flush_first(conn);
        }
    }
    free(p);
}

static void submit(hd_req_t *req, hd_message_t **msgs, size_t n, int is_batch)
{
    pub_req_t *p = hd_calloc(1, sizeof(*p));
    p->is_batch = is_batch;
    p->d = hd_http_defer(req);
    p->d->data = p;
    p->d->on_abort = on_abort;
    hd_tp_publish(req->conn->worker, msgs, n, on_published, p);
}

#define BAD_CONTENT_TYPE                                                                           \
    "bad Content-Type: a media type such as \"text/plain; charset=utf-8\" (type/subtype and "      \
    "parameters, printable ASCII, at most 127 bytes)"

/*
 * The Content-Type of a publish into out (HD_CONTENT_TYPE_MAX + 1 bytes; "" without one).
 * Every subscriber gets it in JSON envelopes (herald.v1, /ws, polls), so it must be a valid
 * media type (hd_content_type_valid): 0, or -1 once it was answered 400 and nothing published.
 */
static int content_type_of(hd_req_t *req, char *out)
{
    const char *ct = NULL;
    size_t len = 0, n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const hd_header_t *hd = &req->headers[i];
        if (hd->name_len == 12 && strncasecmp(hd->name, "content-type", 12) == 0) {
            ct = hd->value;
            len = hd->value_len;
            n++;
        }
    }
    if (n > 1) {
        hd_http_respond_error(req, 400, "more than one Content-Type header");
        return -1;
    }
    if (ct && !hd_content_type_valid(ct, len)) {
        hd_http_respond_error(req, 400, BAD_CONTENT_TYPE);
        return -1;
    }
    memcpy(out, ct ? ct : "", len);
    out[len] = '\0';
    return 0;
}

#define BAD_IDEM_KEY "1-128 printable ASCII characters, no spaces"

/* The Idempotency-Key header into out (HD_IDEM_KEY_MAX + 1): its length, 0 without one, or -1
 * once a bad one was answered 400. */
static int idem_header(hd_req_t *req, char *out)
{
    size_t len;
    const char *k = hd_req_header(req, "idempotency-key", &len);
    if (!k)
        return 0;
    if (!hd_idem_key_valid(k, len)) {
        hd_http_respond_error(req, 400, "bad Idempotency-Key: " BAD_IDEM_KEY);
        return -1;
    }
    memcpy(out, k, len);
    out[len] = '\0';
    return (int)len;
}

/*
 * Who publishes: with auth off, the publish key check as ever; with auth on, the backend key or
 * a token (docs/auth.md), checked per channel by hd_tp_publish_authorize. 0, or -1 answered.
 */
static int publisher_of(hd_req_t *req, hd_tp_cred_t *cred)
{
    memset(cred, 0, sizeof(*cred));
    if (!hd_auth_enabled(hd_worker_conf(req->conn->worker)->auth))
        return hd_tp_publish_allowed(req);
    return hd_tp_credential(req, cred);
}

/*
 * client_publish_rate: a publish on a token is a client's and takes one of its connection's
 * tokens (a batch counts once); the backend's key is not limited. 0, or -1 answered 429 with
 * Retry-After.
 */
static int client_rate_ok(hd_req_t *req, const hd_tp_cred_t *cred)
{
    uint32_t rate = hd_worker_conf(req->conn->worker)->client_publish_rate;
    uint64_t retry_ms;
    if (!cred->id || cred->is_backend || hd_http_publish_take(req, rate, &retry_ms))
        return 0;
    HD_STAT_INC(req->conn->worker, client_publish_refused);
    char hdr[64], body[192];
    snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n",
             (unsigned long long)(retry_ms + 999) / 1000);
    int n = snprintf(body, sizeof(body),
                     "{\"error\":\"publishing too often (client_publish_rate %u/s)\","
                     "\"retry_after_ms\":%llu,\"status\":429}",
                     rate, (unsigned long long)retry_ms);
    hd_http_respond(req, 429, hdr, "application/json", body, (size_t)n);
    return -1;
}

/* A client's message carries its publisher, stamped here from the verified identity. */
static void stamp(hd_message_t *m, const hd_tp_cred_t *cred)
{
    char *s = cred->is_backend ? NULL : hd_tp_publisher_json(cred->id);
    if (s)
        hd_message_set_publisher(m, s);
    free(s);
}

static void on_publish_one(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_tp_cred_t cred;
    if (publisher_of(req, &cred) < 0)
        return;
    char channel[HD_CHANNEL_MAX + 1];
    int n = hd_tp_channel_from_path(req, 5, channel);
    if (n < 0 || hd_tp_publish_authorize(req, &cred, channel, (size_t)n) < 0 ||
        client_rate_ok(req, &cred) < 0)
        goto done;
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    if (req->body_len > conf->max_message_bytes) {
        hd_http_respond_error(req, 413, "message larger than max_message_size");
        goto done;
    }
    char ct[HD_CONTENT_TYPE_MAX + 1], key[HD_IDEM_KEY_MAX + 1];
    if (content_type_of(req, ct) < 0)
        goto done;
    int key_len = idem_header(req, key);
    if (key_len < 0)
        goto done;
    hd_message_t *m = hd_message_new(channel, (size_t)n, ct, req->body, req->body_len);
    if (key_len > 0)
        hd_message_set_idem_key(m, key, (size_t)key_len);
    stamp(m, &cred);
    submit(req, &m, 1, 0);
done:
    hd_tp_cred_dispose(&cred);
}

static void batch_error(hd_req_t *req, int status, size_t index, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "item %zu: %s", index, what);
    hd_http_respond_error(req, status, msg);
}

static void on_publish_batch(hd_req_t *req, void *arg)
{
    (void)arg;
    hd_tp_cred_t cred;
    if (publisher_of(req, &cred) < 0)
        return;
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    json_error_t jerr;
    json_t *root = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!root || !json_is_array(root)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "expected a JSON array of {\"channel\",\"data\"}: %s",
                 root ? "not an array" : jerr.text);
        json_decref(root);
        hd_http_respond_error(req, 400, msg);
        hd_tp_cred_dispose(&cred);
        return;
    }
    char key[HD_IDEM_KEY_MAX + 1];
    int key_len = idem_header(req, key);
    if (key_len < 0) {
        json_decref(root);
        hd_tp_cred_dispose(&cred);
        return;
    }
    size_t n = json_array_size(root);
    if (n > MAX_BATCH) {
        json_decref(root);
        hd_http_respond_error(req, 413, "more than 10000 messages in one batch");
        hd_tp_cred_dispose(&cred);
        return;
    }
    if (client_rate_ok(req, &cred) < 0) {
        json_decref(root);
        hd_tp_cred_dispose(&cred);
        return;
    }
    hd_message_t **msgs = hd_calloc(n ? n : 1, sizeof(*msgs));
    size_t built = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(root, i);
        json_t *ch = json_object_get(item, "channel");
        json_t *data = json_object_get(item, "data");
        json_t *type = json_object_get(item, "type");
        if (!json_is_object(item) || !json_is_string(ch) || !data) {
            batch_error(req, 400, i, "needs \"channel\" (string) and \"data\"");
            goto fail;
        }
        const char *name = json_string_value(ch);
        size_t name_len = json_string_length(ch);
        if (!hd_channel_name_valid(name, name_len)) {
            batch_error(req, 400, i, "bad channel name: 1-128 characters of A-Z a-z 0-9 . _ - : @");
            goto fail;
        }
        /* Every item's channel must be allowed, or nothing of the batch is published. */
        if (hd_tp_publish_authorize(req, &cred, name, name_len) < 0)
            goto fail;
        const char *why;
        int rc = hd_message_from_json(name, name_len, data, type, conf->max_message_bytes,
                                      &msgs[built], &why);
        if (rc != 0) {
            batch_error(req, hd_err_http_status(rc), i, why);
            goto fail;
        }
        stamp(msgs[built], &cred);
        built++;
        /* The item's own key, else the request's with the item's index: "<key>#<i>". */
        json_t *ik = json_object_get(item, "idempotency_key");
        if (ik && (!json_is_string(ik) ||
                   !hd_idem_key_valid(json_string_value(ik), json_string_length(ik)))) {
            batch_error(req, 400, i, "bad \"idempotency_key\": " BAD_IDEM_KEY);
            goto fail;
        }
        if (ik) {
            hd_message_set_idem_key(msgs[built - 1], json_string_value(ik), json_string_length(ik));
        } else if (key_len > 0) {
            char derived[HD_IDEM_KEY_MAX + 8];
            int dl = snprintf(derived, sizeof(derived), "%s#%zu", key, i);
            hd_message_set_idem_key(msgs[built - 1], derived, (size_t)dl);
        }
    }
    json_decref(root);
    hd_tp_cred_dispose(&cred);
    if (built == 0) {
        free(msgs);
        hd_http_respond(req, 200, NULL, "application/json", "{\"messages\":[]}", 15);
        return;
    }
    submit(req, msgs, built, 1);
    free(msgs);
    return;
fail:
    for (size_t i = 0; i < built; i++)
        hd_message_unref(msgs[i]);
    free(msgs);
    json_decref(root);
    hd_tp_cred_dispose(&cred);
}

void hd_publish_register(hd_router_t *r)
{
    hd_router_add(r, HD_M_POST, "/pub/", 1, on_publish_one, NULL);
    hd_router_add(r, HD_M_POST, "/pub", 0, on_publish_batch, NULL);
}
