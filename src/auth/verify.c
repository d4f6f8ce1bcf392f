/* SPDX-License-Identifier: MIT */
/*
 * verify.c: hd_auth_verify (auth.h). A compact JWS is checked in this order, each step refusing
 * with a reason that never quotes the token:
 *
 *   shape (3 base64url parts, <= HD_AUTH_MAX_TOKEN) -> header: one of the policy's known
 *     headers byte for byte (below), or its JSON parsed: alg, kid, no crit -> key by kid ->
 *     header alg == the key's pinned alg (none, HS256 against an RSA key...)
 *     -> signature (OpenSSL, with only the key's own material) -> payload claims (the one
 *        JSON parse of the payload): exp, nbf, iat with the skew, iss, aud -> hd_identity_t
 *
 * libjwt 1.10 trusts the header's alg to choose how to use the key it is given (an RSA PEM
 * passed with an "HS256" header becomes an HMAC secret: the HS/RS confusion), and skips the
 * signature for "none"; the pinning step before it is what makes both impossible.
 *
 * Who checks the signature: OpenSSL. For RS* and ES*, libjwt 1.10 takes the key as PEM text and
 * parses it again on every token, which OpenSSL 3's decoders make cost milliseconds (measured:
 * 2.5 ms of a 3.2 ms ES256 verification on this project's loaded test machine); so herald
 * verifies those with OpenSSL's EVP_DigestVerify against the key parsed once at load (jwks.c),
 * turning a JWS ECDSA signature (R || S, RFC 7518 3.4) into the DER OpenSSL checks. For HS*,
 * libjwt's jwt_decode parses header and payload again with jansson (herald already has) around
 * a one-microsecond HMAC, which made an HS256 connect cost twice an unauthenticated one
 * (docs/benchmarks.md); herald computes the HMAC with an OpenSSL EVP_MAC context made once per
 * key at load (HMAC() fetched the algorithm and absorbed the secret on every call), reused by
 * each worker (hd_auth_scratch_t) rather than duplicated per token, and compares it in constant
 * time (CRYPTO_memcmp). Either way the algorithm is the key's pinned one.
 */
#include "internal.h"

#include "herald/common.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static hd_auth_verify_t refuse(hd_auth_verify_t v, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static hd_auth_verify_t refuse(hd_auth_verify_t v, char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whylen > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return v;
}

/* Decodes one base64url part into JSON (an object), or NULL. */
static json_t *part_json(const char *s, size_t len)
{
    unsigned char buf[HD_AUTH_MAX_TOKEN];
    json_error_t jerr;
    long n;
    json_t *j;

    if (len * 3 / 4 + 3 > sizeof(buf) || (n = hd_auth_b64url_decode(s, len, buf)) <= 0)
        return NULL;
    j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static const EVP_MD *alg_md(jwt_alg_t alg)
{
    switch (alg) {
    case JWT_ALG_HS384:
    case JWT_ALG_RS384:
    case JWT_ALG_ES384:
        return EVP_sha384();
    case JWT_ALG_HS512:
    case JWT_ALG_RS512:
    case JWT_ALG_ES512:
        return EVP_sha512();
    default:
        return EVP_sha256();
    }
}

/*
 * Checks an HS* signature (base64url sig_b64[0..sig_b64_len)) of input[0..len) with the key's
 * prepared HMAC (its secret absorbed once at load), and compares the MAC in constant time.
 * With a scratch (a worker's, cache.c), its context, a duplicate of the key's made once, is set
 * back to the start and reused; without one, a duplicate is made and freed for this token.
 * OpenSSL 3.0's EVP_MAC_CTX_dup allocates about a dozen objects (the HMAC state's three digest
 * contexts, each with its provider state, and a copy of the secret) and frees them again; the
 * reuse copies one digest state. Returns 1 when it verifies, else 0.
 */
static int hmac_verify(const hd_auth_key_t *key, hd_auth_scratch_t *scratch, const char *input,
                       size_t len, const char *sig_b64, size_t sig_b64_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE + 4];
    size_t mac_len = 0;
    long sig_len;
    EVP_MAC_CTX *ctx;
    int ok;

    if (key->mac == NULL || sig_b64_len * 3 / 4 + 3 > sizeof(sig) ||
        (sig_len = hd_auth_b64url_decode(sig_b64, sig_b64_len, sig)) <= 0)
        return 0;
    if (scratch != NULL && scratch->key != key) {
        EVP_MAC_CTX_free(scratch->mac);
        scratch->mac = EVP_MAC_CTX_dup(key->mac);
        scratch->key = scratch->mac != NULL ? key : NULL;
    }
    if (scratch != NULL && scratch->mac != NULL) {
        /* No key: "start again with the key already set" (HMAC_Init_ex's reuse of its state). */
        ctx = scratch->mac;
        ok = EVP_MAC_init(ctx, NULL, 0, NULL) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)input, len) == 1 &&
             EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1;
    } else {
        /* EVP_MAC_CTX_dup reads its source only (const): every worker may duplicate the key's. */
        ctx = EVP_MAC_CTX_dup(key->mac);
        ok = ctx != NULL && EVP_MAC_update(ctx, (const unsigned char *)input, len) == 1 &&
             EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1;
        EVP_MAC_CTX_free(ctx);
    }
    return ok && (size_t)sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

void hd_auth_scratch_dispose(hd_auth_scratch_t *s)
{
    EVP_MAC_CTX_free(s->mac);
    s->mac = NULL;
    s->key = NULL;
}

/*
 * Checks an RS* or ES* signature (base64url sig[0..sig_len)) of input[0..len) with the key
 * parsed at load. Returns 1 when it verifies, else 0.
 */
static int pkey_verify(const hd_auth_key_t *key, const char *input, size_t len, const char *sig_b64,
                       size_t sig_b64_len)
{
    unsigned char sig[1024], der[160], *p = der;
    const unsigned char *check = sig;
    long sig_len;
    size_t check_len;
    int ok = 0;

    if (sig_b64_len * 3 / 4 + 3 > sizeof(sig) ||
        (sig_len = hd_auth_b64url_decode(sig_b64, sig_b64_len, sig)) <= 0)
        return 0;
    check_len = (size_t)sig_len;
    if (key->alg == JWT_ALG_ES256 || key->alg == JWT_ALG_ES384 || key->alg == JWT_ALG_ES512) {
        /* R || S, each the size of the curve's order (RFC 7518 3.4), as DER for OpenSSL. */
        size_t half = key->alg == JWT_ALG_ES256 ? 32 : key->alg == JWT_ALG_ES384 ? 48 : 66;
        ECDSA_SIG *es;
        BIGNUM *r, *s;
        int n;
        if ((size_t)sig_len != 2 * half)
            return 0;
        es = ECDSA_SIG_new();
        r = BN_bin2bn(sig, (int)half, NULL);
        s = BN_bin2bn(sig + half, (int)half, NULL);
        if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return 0;
        }
        n = i2d_ECDSA_SIG(es, NULL);
        if (n > 0 && (size_t)n <= sizeof(der))
            n = i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
        if (n <= 0 || (size_t)n > sizeof(der))
            return 0;
        check = der;
        check_len = (size_t)n;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, alg_md(key->alg), NULL, key->pkey) == 1 &&
        EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)input, len) == 1)
        ok = 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The key for a token's kid (NULL: none in the header). */
static const hd_auth_key_t *select_key(const hd_auth_t *a, const char *kid, char *why,
                                       size_t whylen)
{
    const hd_auth_keys_t *ks = &a->keys;

    if (ks->n == 1 && (kid == NULL || ks->keys[0].kid == NULL))
        return &ks->keys[0]; /* a secret, a PEM key, or a set of one key without kid */
    if (kid == NULL) {
        refuse(HD_AUTH_INVALID, why, whylen, "token without kid (the key set has %zu keys)", ks->n);
        return NULL;
    }
    for (size_t i = 0; i < ks->n; i++) {
        if (ks->keys[i].kid != NULL && strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    }
    refuse(HD_AUTH_INVALID, why, whylen, "no key with the token's kid");
    return NULL;
}

/* A NumericDate claim: 0 absent, 1 present (in *out), -1 not a number. */
static int time_claim(json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);

    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e15)
        return -1;
    *out = (int64_t)json_number_value(v);
    return 1;
}

static int aud_matches(json_t *aud, const char *want)
{
    size_t i;
    json_t *v;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (json_is_array(aud)) {
        json_array_foreach(aud, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
                return 1;
        }
    }
    return 0;
}

/* The registered claims at time now; the time claims into *times (cache.c checks them again at
 * each later use: exp, and the later of nbf and iat). */
static hd_auth_verify_t check_claims(const hd_auth_t *a, json_t *claims, int64_t now,
                                     hd_auth_times_t *times, char *why, size_t whylen)
{
    int64_t t;
    int rc;

    memset(times, 0, sizeof(*times));
    if ((rc = time_claim(claims, "exp", &t)) < 0)
        return refuse(HD_AUTH_INVALID, why, whylen, "exp is not a number of seconds");
    if (rc > 0 && now >= t + a->skew_s)
        return refuse(HD_AUTH_EXPIRED, why, whylen, "token expired");
    if (rc > 0)
        times->exp = t;
    if ((rc = time_claim(claims, "nbf", &t)) < 0)
        return refuse(HD_AUTH_INVALID, why, whylen, "nbf is not a number of seconds");
    if (rc > 0 && now + a->skew_s < t)
        return refuse(HD_AUTH_INVALID, why, whylen, "token not valid yet (nbf)");
    if (rc > 0)
        times->not_before = t;
    if ((rc = time_claim(claims, "iat", &t)) < 0)
        return refuse(HD_AUTH_INVALID, why, whylen, "iat is not a number of seconds");
    if (rc > 0 && now + a->skew_s < t)
        return refuse(HD_AUTH_INVALID, why, whylen, "token issued in the future (iat)");
    if (rc > 0 && t > times->not_before)
        times->not_before = t;
    if (a->issuer != NULL) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, a->issuer) != 0)
            return refuse(HD_AUTH_INVALID, why, whylen, "wrong or missing iss");
    }
    if (a->audience != NULL && !aud_matches(json_object_get(claims, "aud"), a->audience))
        return refuse(HD_AUTH_INVALID, why, whylen, "wrong or missing aud");
    return HD_AUTH_VERIFIED;
}

/*
 * The key a JWT header (base64url seg[0..len)) selects, by parsing it: alg, no crit, kid, the
 * key by kid, the header's alg equal to the key's pinned one. NULL with a reason in why when
 * the header is refused. A function of the policy and the bytes only: known_header relies on
 * it.
 */
static const hd_auth_key_t *header_key(const hd_auth_t *a, const char *seg, size_t len, char *why,
                                       size_t whylen)
{
    const char *kid = NULL, *alg_name;
    const hd_auth_key_t *key = NULL;
    json_t *header, *v;
    char reason[160];
    jwt_alg_t alg;

    if ((header = part_json(seg, len)) == NULL) {
        refuse(HD_AUTH_INVALID, why, whylen, "JWT header is not base64url JSON");
        return NULL;
    }
    if ((alg_name = json_string_value(json_object_get(header, "alg"))) == NULL) {
        refuse(HD_AUTH_INVALID, why, whylen, "JWT header without alg");
        goto done;
    }
    if ((alg = hd_auth_alg_parse(alg_name, reason, sizeof(reason))) == JWT_ALG_INVAL) {
        refuse(HD_AUTH_INVALID, why, whylen, "%s", reason);
        goto done;
    }
    if (json_object_get(header, "crit") != NULL) {
        refuse(HD_AUTH_INVALID, why, whylen, "JWT header with crit extensions (none supported)");
        goto done;
    }
    if ((v = json_object_get(header, "kid")) != NULL && (kid = json_string_value(v)) == NULL) {
        refuse(HD_AUTH_INVALID, why, whylen, "kid is not a string");
        goto done;
    }
    if ((key = select_key(a, kid, why, whylen)) != NULL && alg != key->alg) {
        refuse(HD_AUTH_INVALID, why, whylen, "alg %s is not the configured %s", jwt_alg_str(alg),
               jwt_alg_str(key->alg));
        key = NULL;
    }

done:
    json_decref(header);
    return key;
}

/* ---- known headers ---------------------------------------------------------------------------
 *
 * Nearly every token a deployment sees carries one of a few headers, written by its issuer's
 * library the same way every time: {"alg":"HS256","typ":"JWT"} (PyJWT, jsonwebtoken, golang-jwt),
 * {"alg":"HS256"} (jose), the same with the key's kid, in some member order. At load, each such
 * header is written for each key, base64url-encoded, and kept when header_key accepts it for that
 * very key; a token whose header segment is one of them byte for byte selects that key without
 * decoding or parsing anything. Since header_key depends on the policy and the bytes only, the
 * answer is the one it would give: every refusal (alg none, another alg than the key's, an RSA
 * key named by an HS256 header, a kid of no key, crit) still comes from header_key, which any
 * other header goes through.
 */

#define MAX_KNOWN_HEADERS 256

/* Member orders written: alg alone, with typ, with kid, with both (every order). */
static const char *const header_orders[][3] = {
    {"alg", NULL, NULL},   {"alg", "typ", NULL},  {"typ", "alg", NULL},  {"alg", "kid", NULL},
    {"kid", "alg", NULL},  {"alg", "typ", "kid"}, {"alg", "kid", "typ"}, {"typ", "alg", "kid"},
    {"typ", "kid", "alg"}, {"kid", "alg", "typ"}, {"kid", "typ", "alg"},
};

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64url without padding of s[0..len) into a new NUL-terminated string, its length in *out. */
static char *b64url_encode(const unsigned char *s, size_t len, size_t *out)
{
    char *e = hd_malloc(len / 3 * 4 + 5), *p = e;
    size_t i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *p++ = b64url_chars[v >> 18];
        *p++ = b64url_chars[(v >> 12) & 63];
        *p++ = b64url_chars[(v >> 6) & 63];
        *p++ = b64url_chars[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
        *p++ = b64url_chars[v >> 18];
        *p++ = b64url_chars[(v >> 12) & 63];
        if (i + 1 < len)
            *p++ = b64url_chars[(v >> 6) & 63];
    }
    *p = '\0';
    *out = (size_t)(p - e);
    return e;
}

/* The key of a known header segment, or NULL (not one: header_key decides). */
static const hd_auth_key_t *known_header(const hd_auth_t *a, const char *seg, size_t len)
{
    for (size_t i = 0; i < a->n_headers; i++) {
        const hd_auth_header_t *h = &a->headers[i];
        if (h->len == len && memcmp(h->seg, seg, len) == 0)
            return h->key;
    }
    return NULL;
}

/* Adds the header of key k with the members of order, when header_key selects k for it. */
static void add_known_header(hd_auth_t *a, const hd_auth_key_t *k, const char *const order[3])
{
    json_t *h = json_object();
    char *text;
    size_t len;

    for (int i = 0; i < 3 && order[i] != NULL; i++) {
        const char *m = order[i];
        json_object_set_new(h, m,
                            json_string(m[0] == 'a'   ? jwt_alg_str(k->alg)
                                        : m[0] == 't' ? "JWT"
                                                      : k->kid));
    }
    text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (text == NULL)
        return;
    char *seg = b64url_encode((const unsigned char *)text, strlen(text), &len);
    free(text);
    if (len > 0 && len < HD_AUTH_MAX_TOKEN && known_header(a, seg, len) == NULL &&
        header_key(a, seg, len, NULL, 0) == k) {
        a->headers[a->n_headers].seg = seg;
        a->headers[a->n_headers].len = len;
        a->headers[a->n_headers].key = k;
        a->n_headers++;
        return;
    }
    free(seg);
}

void hd_auth_headers_build(hd_auth_t *a)
{
    a->headers = hd_calloc(MAX_KNOWN_HEADERS, sizeof(*a->headers));
    for (size_t i = 0; i < a->keys.n; i++) {
        const hd_auth_key_t *k = &a->keys.keys[i];
        for (size_t o = 0; o < HD_ARRAY_SIZE(header_orders); o++) {
            const char *const *order = header_orders[o];
            int wants_kid = 0;
            for (int m = 0; m < 3 && order[m] != NULL; m++)
                wants_kid |= strcmp(order[m], "kid") == 0;
            if (a->n_headers == MAX_KNOWN_HEADERS)
                return; /* the rest are parsed (header_key) */
            if (!wants_kid || k->kid != NULL)
                add_known_header(a, k, order);
        }
    }
}

void hd_auth_headers_dispose(hd_auth_t *a)
{
    for (size_t i = 0; i < a->n_headers; i++)
        free(a->headers[i].seg);
    free(a->headers);
    a->headers = NULL;
    a->n_headers = 0;
}

/* ---- verification --------------------------------------------------------------------------- */

hd_auth_verify_t hd_auth_verify(const hd_auth_t *a, const char *token, size_t len, int64_t now,
                                hd_identity_t **out, char *why, size_t whylen)
{
    hd_auth_times_t times;

    return hd_auth_verify_times(a, token, len, now, NULL, out, &times, why, whylen);
}

hd_auth_verify_t hd_auth_verify_times(const hd_auth_t *a, const char *token, size_t len,
                                      int64_t now, hd_auth_scratch_t *scratch, hd_identity_t **out,
                                      hd_auth_times_t *times, char *why, size_t whylen)
{
    const char *dot1, *dot2;
    const hd_auth_key_t *key;
    json_t *claims = NULL;
    char reason[160];
    hd_auth_verify_t rc = HD_AUTH_INVALID;

    *out = NULL;
    if (a == NULL || a->keys.n == 0)
        return refuse(HD_AUTH_NO_KEY, why, whylen, "tokens are not accepted (no key configured)");
    if (len == 0 || len > HD_AUTH_MAX_TOKEN)
        return refuse(HD_AUTH_INVALID, why, whylen, "token empty or longer than %d bytes",
                      HD_AUTH_MAX_TOKEN);
    if ((dot1 = memchr(token, '.', len)) == NULL ||
        (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return refuse(HD_AUTH_INVALID, why, whylen, "not a JWT (header.payload.signature)");
    if ((key = known_header(a, token, (size_t)(dot1 - token))) == NULL &&
        (key = header_key(a, token, (size_t)(dot1 - token), why, whylen)) == NULL)
        return HD_AUTH_INVALID;
    /* The signature before any JSON of the payload: a forged token costs one MAC or verify. */
    if (key->pkey != NULL) {
        if (!pkey_verify(key, token, (size_t)(dot2 - token), dot2 + 1,
                         len - (size_t)(dot2 + 1 - token)))
            return refuse(HD_AUTH_INVALID, why, whylen, "bad signature");
    } else if (!hd_auth_alg_is_hmac(key->alg) ||
               !hmac_verify(key, scratch, token, (size_t)(dot2 - token), dot2 + 1,
                            len - (size_t)(dot2 + 1 - token))) {
        return refuse(HD_AUTH_INVALID, why, whylen, "bad signature");
    }
    if ((claims = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1))) == NULL)
        return refuse(HD_AUTH_INVALID, why, whylen, "JWT payload is not a base64url JSON object");
    if ((rc = check_claims(a, claims, now, times, why, whylen)) != HD_AUTH_VERIFIED)
        goto done;
    if (hd_identity_from_claims(out, claims, reason, sizeof(reason)) < 0) {
        rc = refuse(HD_AUTH_INVALID, why, whylen, "claims: %s", reason);
        goto done;
    }
    rc = HD_AUTH_VERIFIED;

done:
    json_decref(claims);
    return rc;
}
