/* SPDX-License-Identifier: MIT */
/*
 * sign.c: Standard Webhooks signatures (https://www.standardwebhooks.com), and the signed
 * request heads every hook sends. The signed content is "<webhook-id>.<webhook-timestamp>.<body>";
 * each of the endpoint's secrets (decoded from whsec_ base64 once, by the conf) signs it with
 * HMAC-SHA256, and the header lists every signature, space-separated, each "v1,<base64>": during
 * a rotation the receiver accepts the delivery with either its old or its new secret.
 *
 * hk_sign is the plain form (the unit tests' reference). A signer (hk_signer_t) is what the
 * hooks thread uses per request: its HMAC contexts are keyed once (OpenSSL's algorithm fetch and
 * the key schedule, which hk_sign pays on every call, are paid when the endpoint is set up), and
 * the head's fixed part (request line, Host, User-Agent, Content-Type) is written once, so a
 * request head is one allocation and a few copies, without printf. Unit-tested against the
 * specification's example and verified by the npm standardwebhooks library in
 * tests/integration/test_webhooks.py.
 */
#include "internal.h"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#define SIG_MAX 48 /* "v1," + 44 base64 characters + a space */

size_t hk_sign(const hd_webhook_def_t *def, const char *id, uint64_t timestamp_s, const char *body,
               size_t len, char *out, size_t outlen)
{
    char prefix[128];
    int plen = snprintf(prefix, sizeof(prefix), "%s.%llu.", id, (unsigned long long)timestamp_s);
    size_t pos = 0;

    if (plen < 0 || (size_t)plen >= sizeof(prefix))
        return 0;
    for (size_t k = 0; k < def->n_keys; k++) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        size_t mac_size = 0;
        EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        int ok = ctx && EVP_MAC_init(ctx, def->keys[k], def->key_lens[k], params) &&
                 EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)plen) &&
                 EVP_MAC_update(ctx, (const unsigned char *)body, len) &&
                 EVP_MAC_final(ctx, mac, &mac_size, sizeof(mac));
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(hmac);
        mac_len = (unsigned int)mac_size;
        /* "v1," + 44 base64 characters + a space or the end */
        if (!ok || pos + 3 + 4 * ((mac_len + 2) / 3) + 2 > outlen)
            return 0;
        if (k > 0)
            out[pos++] = ' ';
        memcpy(out + pos, "v1,", 3);
        pos += 3;
        pos += (size_t)EVP_EncodeBlock((unsigned char *)out + pos, mac, (int)mac_len);
    }
    out[pos] = '\0';
    return pos;
}

/* ---- signers ---- */

struct hk_signer_s {
    const hd_webhook_def_t *def;
    EVP_MAC_CTX *keyed[HD_WEBHOOK_MAX_SECRETS]; /* each secret's HMAC, keyed; NULL: none made */
    int is_keyed;                               /* every secret has one */
    size_t prefix_len;
    char prefix[]; /* "POST <target> HTTP/1.1\r\n...Content-Length: " */
};

static void append(char **p, const char *s, size_t len)
{
    memcpy(*p, s, len);
    *p += len;
}

#define APPEND_LIT(p, lit) append(p, lit, sizeof(lit) - 1)

hk_signer_t *hk_signer_new(const hd_webhook_def_t *def)
{
    static const char ua[] = "\r\nUser-Agent: herald/" HERALD_VERSION
                             "\r\nContent-Type: application/json\r\nContent-Length: ";
    size_t tlen = strlen(def->target), hlen = strlen(def->host_header);
    size_t len = 5 + tlen + 17 + hlen + sizeof(ua) - 1;
    hk_signer_t *sg = hd_calloc(1, sizeof(*sg) + len);
    char *p = sg->prefix;
    APPEND_LIT(&p, "POST ");
    append(&p, def->target, tlen);
    APPEND_LIT(&p, " HTTP/1.1\r\nHost: ");
    append(&p, def->host_header, hlen);
    append(&p, ua, sizeof(ua) - 1);
    sg->prefix_len = (size_t)(p - sg->prefix);
    HD_ASSERT(sg->prefix_len == len);
    sg->def = def;
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    sg->is_keyed = hmac != NULL;
    for (size_t k = 0; hmac && k < def->n_keys; k++) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        sg->keyed[k] = EVP_MAC_CTX_new(hmac);
        if (!sg->keyed[k] || !EVP_MAC_init(sg->keyed[k], def->keys[k], def->key_lens[k], params))
            sg->is_keyed = 0;
    }
    EVP_MAC_free(hmac); /* each context holds its own reference */
    return sg;
}

void hk_signer_free(hk_signer_t *sg)
{
    if (!sg)
        return;
    for (size_t k = 0; k < HD_WEBHOOK_MAX_SECRETS; k++)
        EVP_MAC_CTX_free(sg->keyed[k]);
    free(sg);
}

/* Writes the signatures of signed_prefix ("<id>.<ts>.") and body at *p (room: SIG_MAX per
 * secret). 0, or -1 when OpenSSL failed (*p is then where it was). */
static int sign_into(hk_signer_t *sg, const char *id, uint64_t ts, const char *signed_prefix,
                     size_t plen, const hd_buf_t *body, char **p)
{
    const hd_webhook_def_t *def = sg->def;
    char *start = *p;
    if (!sg->is_keyed) { /* the plain way */
        char sig[SIG_MAX * HD_WEBHOOK_MAX_SECRETS + 1];
        size_t n = hk_sign(def, id, ts, body->data, body->len, sig, sizeof(sig));
        if (n == 0)
            return -1;
        append(p, sig, n);
        return 0;
    }
    for (size_t k = 0; k < def->n_keys; k++) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        /* a NULL key starts the keyed context over with its key (no new key schedule) */
        if (!EVP_MAC_init(sg->keyed[k], NULL, 0, NULL) ||
            !EVP_MAC_update(sg->keyed[k], (const unsigned char *)signed_prefix, plen) ||
            !EVP_MAC_update(sg->keyed[k], (const unsigned char *)body->data, body->len) ||
            !EVP_MAC_final(sg->keyed[k], mac, &mac_len, sizeof(mac)) || mac_len != 32) {
            *p = start;
            return -1;
        }
        if (k > 0)
            *(*p)++ = ' ';
        APPEND_LIT(p, "v1,");
        *p += EVP_EncodeBlock((unsigned char *)*p, mac, (int)mac_len);
    }
    return 0;
}

hd_buf_t *hk_signed_head(hk_signer_t *sg, const char *id, uint64_t timestamp_s,
                         const hd_buf_t *body)
{
    size_t idlen = strlen(id);
    HD_ASSERT(idlen > 0 && idlen < 40);
    /* "<id>.<ts>.": what is signed before the body */
    char signed_prefix[40 + 1 + 20 + 1], *q = signed_prefix;
    append(&q, id, idlen);
    *q++ = '.';
    q += hd_u64_dec(q, timestamp_s);
    *q++ = '.';
    size_t plen = (size_t)(q - signed_prefix);

    static const char l_id[] = "\r\nwebhook-id: ", l_ts[] = "\r\nwebhook-timestamp: ",
                      l_sig[] = "\r\nwebhook-signature: ";
    size_t cap = sg->prefix_len + 20 + sizeof(l_id) + idlen + sizeof(l_ts) + 20 + sizeof(l_sig) +
                 SIG_MAX * sg->def->n_keys + 4;
    hd_buf_t *b = hd_buf_new(cap);
    char *p = b->data;
    append(&p, sg->prefix, sg->prefix_len);
    p += hd_u64_dec(p, body->len);
    append(&p, l_id, sizeof(l_id) - 1);
    append(&p, id, idlen);
    append(&p, l_ts, sizeof(l_ts) - 1);
    p += hd_u64_dec(p, timestamp_s);
    append(&p, l_sig, sizeof(l_sig) - 1);
    /* OpenSSL failing leaves the signature empty: the receiver refuses it, and the attempt is
     * retried like any refused one */
    sign_into(sg, id, timestamp_s, signed_prefix, plen, body, &p);
    APPEND_LIT(&p, "\r\n\r\n");
    b->len = (size_t)(p - b->data);
    HD_ASSERT(b->len <= cap);
    return b;
}
