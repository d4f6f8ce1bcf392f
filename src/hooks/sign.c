/* SPDX-License-Identifier: MIT */
/*
 * sign.c: Standard Webhooks signatures (https://www.standardwebhooks.com), and the signed
 * request heads every hook sends. The signed content is "<webhook-id>.<webhook-timestamp>.<body>";
 * each of the endpoint's secrets (decoded from whsec_ base64 once, by the conf) signs it with
 * HMAC-SHA256, and the header lists every signature, space-separated, each "v1,<base64>": during
 * a rotation the receiver accepts the delivery with either its old or its new secret.
 *
 * hk_sign is the plain form (the unit tests' reference). A signer (hk_signer_t) is what the
 * hooks thread uses per request: each secret's HMAC is reduced once, when the endpoint is set
 * up, to the two SHA-256 states after its padded key (key ^ ipad, key ^ opad), and a signature is
 * two struct copies, the hash of the signed content on the first and of that hash on the second
 * (RFC 2104), with OpenSSL's SHA-256 functions, which run its block function directly. OpenSSL
 * 3 deprecated them for EVP, but its keyed EVP_MAC context, started over per request, cost more
 * than the hashing itself (the EVP and provider layers: a digest context copied twice,
 * parameters looked up, buffers cleansed): 2,700 instructions per delivery besides the block
 * function (callgrind), libcrypto about 1.9 us of the hooks thread's CPU per delivery in issue
 * 12's bar 1 against about 0.8 us now (perf). The head's fixed part (request line, Host,
 * User-Agent, Content-Type) is written once, so a request head is one allocation and a few
 * copies, without printf. Unit-tested against the specification's example and hk_sign, and
 * verified by the npm standardwebhooks library in tests/integration/test_webhooks.py.
 */
/* Only this file uses the deprecated SHA256_* functions (above); the rest of herald sees the
 * deprecations. Defined before any OpenSSL header. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "internal.h"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/sha.h>
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
    /* each secret's HMAC: the SHA-256 states after (key ^ ipad) and after (key ^ opad) */
    SHA256_CTX inner[HD_WEBHOOK_MAX_SECRETS], outer[HD_WEBHOOK_MAX_SECRETS];
    size_t prefix_len;
    char prefix[]; /* "POST <target> HTTP/1.1\r\n...Content-Length: " */
};

static void append(char **p, const char *s, size_t len)
{
    memcpy(*p, s, len);
    *p += len;
}

#define APPEND_LIT(p, lit) append(p, lit, sizeof(lit) - 1)

/* The two states of HMAC-SHA256 keyed with key[0..len) (len <= 64, the block: no key hash). */
static void key_states(const uint8_t *key, size_t len, SHA256_CTX *inner, SHA256_CTX *outer)
{
    unsigned char pad[SHA256_CBLOCK];
    HD_ASSERT(len <= sizeof(pad));
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < len; i++)
        pad[i] ^= key[i];
    SHA256_Init(inner);
    SHA256_Update(inner, pad, sizeof(pad));
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] ^= 0x36 ^ 0x5c;
    SHA256_Init(outer);
    SHA256_Update(outer, pad, sizeof(pad));
    OPENSSL_cleanse(pad, sizeof(pad));
}

hk_signer_t *hk_signer_new(const hd_webhook_def_t *def)
{
    static const char ua[] = "\r\nUser-Agent: herald/" HERALD_VERSION
                             "\r\nContent-Type: application/json\r\nContent-Length: ";
    _Static_assert(HD_WEBHOOK_KEY_MAX <= SHA256_CBLOCK, "a secret longer than a block");
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
    for (size_t k = 0; k < def->n_keys; k++)
        key_states(def->keys[k], def->key_lens[k], &sg->inner[k], &sg->outer[k]);
    return sg;
}

void hk_signer_free(hk_signer_t *sg)
{
    if (!sg)
        return;
    OPENSSL_cleanse(sg->inner, sizeof(sg->inner)); /* as good as the secrets */
    OPENSSL_cleanse(sg->outer, sizeof(sg->outer));
    free(sg);
}

/* Writes the signatures of signed_prefix ("<id>.<ts>.") and body at *p (room: SIG_MAX per
 * secret). */
static void sign_into(const hk_signer_t *sg, const char *signed_prefix, size_t plen,
                      const hd_buf_t *body, char **p)
{
    for (size_t k = 0; k < sg->def->n_keys; k++) {
        unsigned char mac[SHA256_DIGEST_LENGTH];
        SHA256_CTX c = sg->inner[k];
        SHA256_Update(&c, signed_prefix, plen);
        SHA256_Update(&c, body->data, body->len);
        SHA256_Final(mac, &c);
        c = sg->outer[k];
        SHA256_Update(&c, mac, sizeof(mac));
        SHA256_Final(mac, &c);
        if (k > 0)
            *(*p)++ = ' ';
        APPEND_LIT(p, "v1,");
        *p += EVP_EncodeBlock((unsigned char *)*p, mac, (int)sizeof(mac));
    }
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
    sign_into(sg, signed_prefix, plen, body, &p);
    APPEND_LIT(&p, "\r\n\r\n");
    b->len = (size_t)(p - b->data);
    HD_ASSERT(b->len <= cap);
    return b;
}
