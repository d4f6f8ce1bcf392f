/* SPDX-License-Identifier: MIT */
/*
 * ticket.c: single-use tickets (docs/auth.md, "Tickets"), the parts that do no I/O: the body
 * of POST /auth/ticket parsed into the claims a ticket stands for, a new ticket drawn from
 * OpenSSL's RAND_bytes, the check of a ticket's shape, and the key stores keep it under (its
 * SHA-256, so that neither herald's memory nor Redis holds a ticket anyone could redeem). The
 * stores themselves belong to the brokers (HD_BREQ_TICKET_PUT / HD_BREQ_TICKET_TAKE).
 */
#include "internal.h"

#include "herald/common.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64url without padding of in[0..len) into out (4 * ceil(len / 3) + 1 bytes); its length. */
static size_t b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = b64url[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

int hd_ticket_new(char out[HD_TICKET_LEN + 1])
{
    unsigned char raw[HD_TICKET_BYTES];
    if (RAND_bytes(raw, (int)sizeof(raw)) != 1)
        return -1;
    b64url_encode(raw, sizeof(raw), out);
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

int hd_ticket_valid(const char *s, size_t len)
{
    if (s == NULL || len != HD_TICKET_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

void hd_ticket_key(const char *ticket, char out[HD_TICKET_KEY_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)ticket, HD_TICKET_LEN, md);
    b64url_encode(md, sizeof(md), out);
}

/* A member's name as a reason may quote it: printable ASCII, at most 48 bytes. */
static const char *printable(const char *key, char out[52])
{
    size_t n = 0;
    for (; key[n] && n < 48; n++)
        out[n] = (key[n] >= 0x20 && key[n] < 0x7f && key[n] != '"') ? key[n] : '?';
    if (key[n])
        out[n++] = '.', out[n++] = '.';
    out[n] = '\0';
    return out;
}

/* The members a request may carry; anything else is refused (a typo must not pass silently). */
static int known_member(const char *key)
{
    return strcmp(key, "sub") == 0 || strcmp(key, "jti") == 0 || strcmp(key, "channels") == 0 ||
           strcmp(key, "info") == 0 || strcmp(key, "ttl") == 0;
}

static int parse_ttl(json_t *v, uint64_t default_ms, uint64_t max_ms, uint64_t *out, char *why,
                     size_t whylen)
{
    if (v == NULL || json_is_null(v)) {
        *out = default_ms < max_ms ? default_ms : max_ms;
        return 0;
    }
    if (!json_is_number(v))
        return hd_auth_fail(why, whylen, "ttl must be a number of seconds");
    double s = json_number_value(v);
    if (!(s > 0) || s * 1000.0 < 1.0)
        return hd_auth_fail(why, whylen, "ttl must be more than 0 seconds (at least 0.001)");
    if (s * 1000.0 > (double)max_ms)
        return hd_auth_fail(why, whylen, "ttl %g s is above auth_ticket_max_ttl (%g s)", s,
                            (double)max_ms / 1000.0);
    *out = (uint64_t)(s * 1000.0 + 0.5);
    return 0;
}

int hd_ticket_request_parse(const char *body, size_t len, uint64_t default_ttl_ms,
                            uint64_t max_ttl_ms, hd_ticket_request_t *out, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root, *claims = NULL, *v;
    const char *key;
    hd_identity_t *id = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (len == 0)
        return hd_auth_fail(
            why, whylen,
            "a JSON object is needed: {\"sub\":..,\"channels\":..,\"info\":..,\"ttl\":..}");
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return hd_auth_fail(why, whylen, "body is not JSON (line %d: %.80s)", jerr.line, jerr.text);
    if (!json_is_object(root)) {
        hd_auth_fail(why, whylen, "body must be a JSON object");
        goto done;
    }
    char name[52];
    json_object_foreach(root, key, v)
    {
        if (!known_member(key)) {
            hd_auth_fail(why, whylen, "unknown member \"%s\" (sub, jti, channels, info, ttl)",
                         printable(key, name));
            goto done;
        }
    }
    if ((v = json_object_get(root, "channels")) != NULL && json_is_object(v)) {
        json_t *w;
        json_object_foreach(v, key, w)
        {
            if (strcmp(key, "subscribe") != 0 && strcmp(key, "publish") != 0) {
                hd_auth_fail(why, whylen, "unknown member \"channels.%s\" (subscribe, publish)",
                             printable(key, name));
                goto done;
            }
        }
    }
    if (parse_ttl(json_object_get(root, "ttl"), default_ttl_ms, max_ttl_ms, &out->ttl_ms, why,
                  whylen) < 0)
        goto done;
    /* What the ticket stands for: the claims without ttl (and never an exp: a connection opened
     * with a ticket lives independently of the backend's session). */
    claims = json_deep_copy(root);
    if (claims == NULL) {
        hd_auth_fail(why, whylen, "out of memory");
        goto done;
    }
    json_object_del(claims, "ttl");
    if (hd_identity_from_claims(&id, claims, why, whylen) < 0)
        goto done;
    out->claims = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (out->claims == NULL) {
        hd_auth_fail(why, whylen, "claims cannot be encoded");
        goto done;
    }
    out->claims_len = strlen(out->claims);
    if (out->claims_len > HD_TICKET_MAX_CLAIMS) {
        hd_auth_fail(why, whylen, "the ticket's claims take %zu bytes, more than %d",
                     out->claims_len, HD_TICKET_MAX_CLAIMS);
        goto done;
    }
    rc = 0;

done:
    if (rc < 0)
        hd_ticket_request_dispose(out);
    hd_identity_unref(id);
    json_decref(claims);
    json_decref(root);
    return rc;
}

void hd_ticket_request_dispose(hd_ticket_request_t *r)
{
    free(r->claims);
    memset(r, 0, sizeof(*r));
}
