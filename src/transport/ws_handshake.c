/* SPDX-License-Identifier: MIT */
/*
 * ws_handshake.c: the WebSocket opening handshake (RFC 6455 4.2.1): method, Upgrade and
 * Connection tokens, HTTP/1.1, Sec-WebSocket-Version, Sec-WebSocket-Key and its
 * Sec-WebSocket-Accept, the Origin list, the herald.v1 subprotocol and the publish key of
 * Authorization: Bearer. It answers refusals itself and does no I/O otherwise.
 */
#include "websocket.h"

#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* 1 if key is the base64 text of 16 bytes: 22 base64 characters and "==". */
static int key_valid(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

/* Writes the Sec-WebSocket-Accept value for key (at most 64 bytes): 28 characters and a NUL. */
static void accept_key(const char *key, size_t len, char out[32])
{
    unsigned char in[64 + sizeof(WS_GUID)], md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    HD_ASSERT(len <= 64);
    memcpy(in, key, len);
    memcpy(in + len, WS_GUID, sizeof(WS_GUID) - 1);
    int ok = EVP_Digest(in, len + sizeof(WS_GUID) - 1, md, &md_len, EVP_sha1(), NULL);
    HD_ASSERT(ok == 1 && md_len == 20);
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len);
}

/* 1 if the comma-separated list v[0..len) holds token (case-insensitive, blanks ignored). */
static int list_has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    const char *p = v, *end = v + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *a = p, *b = comma ? comma : end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == tl && strncasecmp(a, token, tl) == 0)
            return 1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* 1 if any header `name` of req lists token. */
static int req_has_token(const hd_req_t *req, const char *name, const char *token)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const hd_header_t *h = &req->headers[i];
        if (h->name_len == nl && strncasecmp(h->name, name, nl) == 0 &&
            list_has_token(h->value, h->value_len, token))
            return 1;
    }
    return 0;
}

/* 1 if origin[0..len) is one of the blank-separated values of list ("*" allows any). */
static int origin_allowed(const char *list, const char *origin, size_t len)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t')
            e++;
        size_t n = (size_t)(e - p);
        if ((n == 1 && *p == '*') || (n == len && n > 0 && memcmp(p, origin, len) == 0))
            return 1;
        p = e;
    }
    return 0;
}

static void respond_426(hd_req_t *req, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":426}", msg);
    hd_http_respond(req, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                    "application/json", body, (size_t)n);
}

int hd_ws_check_handshake(hd_req_t *req, ws_handshake_t *hs)
{
    const hd_conf_t *conf = hd_worker_conf(req->conn->worker);
    size_t len;
    if (req->method != HD_M_GET) {
        static const char body[] = "{\"error\":\"method not allowed\",\"status\":405}";
        hd_http_respond(req, 405, "Allow: GET\r\n", "application/json", body, sizeof(body) - 1);
        return -1;
    }
    if (!req_has_token(req, "upgrade", "websocket") ||
        !req_has_token(req, "connection", "upgrade")) {
        respond_426(req, "this is a WebSocket endpoint: send Upgrade: websocket and "
                         "Connection: Upgrade");
        return -1;
    }
    if (req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1)) {
        hd_http_respond_error(req, 400, "a WebSocket handshake needs HTTP/1.1");
        return -1;
    }
    const char *v = hd_req_header(req, "sec-websocket-version", &len);
    if (!v || len != 2 || memcmp(v, "13", 2) != 0) {
        respond_426(req, "unsupported Sec-WebSocket-Version: this server speaks 13");
        return -1;
    }
    const char *key = hd_req_header(req, "sec-websocket-key", &len);
    if (!key || !key_valid(key, len)) {
        hd_http_respond_error(req, 400,
                              "missing or invalid Sec-WebSocket-Key (base64 of 16 bytes)");
        return -1;
    }
    accept_key(key, len, hs->accept);
    const char *origin = hd_req_header(req, "origin", &len);
    if (conf->ws_origins && origin && !origin_allowed(conf->ws_origins, origin, len)) {
        hd_conn_log(HD_LOG_INFO, req->conn, "WebSocket origin refused: %.*s",
                    (int)(len > 200 ? 200 : len), origin);
        hd_http_respond_error(req, 403, "origin not allowed");
        return -1;
    }
    hs->has_subprotocol = req_has_token(req, "sec-websocket-protocol", WS_SUBPROTOCOL);
    const char *auth = hd_req_header(req, "authorization", &len);
    if (auth && len > 7 && strncasecmp(auth, "Bearer ", 7) == 0) {
        hs->bearer = auth + 7;
        hs->bearer_len = len - 7;
    }
    hs->is_local = hd_tp_peer_is_local(req) ? 1 : 0;
    return 0;
}
