/* SPDX-License-Identifier: MIT */
/*
 * sign.c: Standard Webhooks signatures (https://www.standardwebhooks.com). The signed content
 * is "<webhook-id>.<webhook-timestamp>.<body>"; each of the endpoint's secrets (decoded from
 * whsec_ base64 once, by the conf) signs it with HMAC-SHA256, and the header lists every
 * signature, space-separated, each "v1,<base64>": during a rotation the receiver accepts the
 * delivery with either its old or its new secret. Pure; unit-tested against the specification's
 * example and verified by the npm standardwebhooks library in tests/integration/test_webhooks.py.
 */
#include "internal.h"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

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
