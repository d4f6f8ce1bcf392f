/* SPDX-License-Identifier: MIT */
/*
 * jwks.c: verification keys and their pinned algorithms. A PEM public key file (RS*, ES*) or a
 * JWKS document (RFC 7517) becomes a list of hd_auth_key_t in the form libjwt 1.10 takes: a PEM
 * SubjectPublicKeyInfo for RSA and EC keys (a JWK's n/e or crv/x/y go through OpenSSL 3's
 * EVP_PKEY_fromdata), the raw secret for an oct key. Every key carries exactly one algorithm;
 * verify.c refuses a token naming any other, so an RSA key can never be fed to HMAC.
 */
#include "internal.h"

#include "herald/common.h"
#include "herald/log.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#define MAX_KEY_FILE (256 * 1024)
#define MAX_KEYS     64
#define MIN_RSA_BITS 2048

/* ---- algorithms ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    jwt_alg_t alg;
    const char *curve; /* ES*: the OpenSSL group */
} algs[] = {
    {"HS256", JWT_ALG_HS256, NULL},         {"HS384", JWT_ALG_HS384, NULL},
    {"HS512", JWT_ALG_HS512, NULL},         {"RS256", JWT_ALG_RS256, NULL},
    {"RS384", JWT_ALG_RS384, NULL},         {"RS512", JWT_ALG_RS512, NULL},
    {"ES256", JWT_ALG_ES256, "prime256v1"}, {"ES384", JWT_ALG_ES384, "secp384r1"},
    {"ES512", JWT_ALG_ES512, "secp521r1"},
};

/* Known to JOSE, not to Debian 12's libjwt 1.10. */
static const char *const unsupported[] = {"PS256", "PS384", "PS512", "EdDSA", "ES256K"};

jwt_alg_t hd_auth_alg_parse(const char *s, char *why, size_t whylen)
{
    for (size_t i = 0; i < HD_ARRAY_SIZE(algs); i++) {
        if (strcmp(s, algs[i].name) == 0)
            return algs[i].alg;
    }
    for (size_t i = 0; i < HD_ARRAY_SIZE(unsupported); i++) {
        if (strcmp(s, unsupported[i]) == 0) {
            hd_auth_fail(why, whylen, "alg %s is not supported by Debian 12's libjwt (1.10)", s);
            return JWT_ALG_INVAL;
        }
    }
    if (strcmp(s, "none") == 0)
        hd_auth_fail(why, whylen, "alg none (an unsigned token) is refused");
    else
        hd_auth_fail(why, whylen,
                     "unknown alg (expected HS256/384/512, RS256/384/512 or ES256/384/512)");
    return JWT_ALG_INVAL;
}

int hd_auth_alg_is_hmac(jwt_alg_t alg)
{
    return alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
}

static int alg_is_rsa(jwt_alg_t alg)
{
    return alg == JWT_ALG_RS256 || alg == JWT_ALG_RS384 || alg == JWT_ALG_RS512;
}

static const char *alg_curve(jwt_alg_t alg)
{
    for (size_t i = 0; i < HD_ARRAY_SIZE(algs); i++) {
        if (algs[i].alg == alg)
            return algs[i].curve;
    }
    return NULL;
}

static jwt_alg_t curve_alg(const char *group)
{
    for (size_t i = 0; i < HD_ARRAY_SIZE(algs); i++) {
        if (algs[i].curve != NULL && strcmp(algs[i].curve, group) == 0)
            return algs[i].alg;
    }
    return JWT_ALG_INVAL;
}

/* ---- base64url ------------------------------------------------------------------------------- */

/* 1 + the value of each base64url character (RFC 4648 5), 0 for any other byte: one load per
 * character on the path of every token (header, claims, signature). */
static const uint8_t b64_plus1[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

long hd_auth_b64url_decode(const char *s, size_t len, unsigned char *out)
{
    const unsigned char *in = (const unsigned char *)s;
    uint32_t acc = 0, bad = 0;
    size_t i = 0, rest;
    long o = 0;

    while (len > 0 && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    /* Four characters into three bytes at a time; an invalid one makes its value 0 - 1. */
    for (; i + 4 <= len; i += 4) {
        uint32_t a = b64_plus1[in[i]] - 1u, b = b64_plus1[in[i + 1]] - 1u;
        uint32_t c = b64_plus1[in[i + 2]] - 1u, d = b64_plus1[in[i + 3]] - 1u;
        bad |= a | b | c | d;
        acc = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (unsigned char)(acc >> 16);
        out[o++] = (unsigned char)(acc >> 8);
        out[o++] = (unsigned char)acc;
    }
    if (bad > 63)
        return -1;
    rest = len - i; /* 0, 2 or 3 */
    if (rest > 0) {
        uint32_t v[3] = {0, 0, 0};
        for (size_t k = 0; k < rest; k++) {
            v[k] = b64_plus1[in[i + k]] - 1u;
            if (v[k] > 63)
                return -1;
        }
        acc = v[0] << 18 | v[1] << 12 | v[2] << 6;
        out[o++] = (unsigned char)(acc >> 16);
        if (rest == 3)
            out[o++] = (unsigned char)(acc >> 8);
        /* The leftover bits must be zero (a canonical encoding). */
        if ((rest == 2 && (acc & 0xffff)) || (rest == 3 && (acc & 0xff)))
            return -1;
    }
    return o;
}

/* A JSON string member decoded from base64url into a new buffer. */
static unsigned char *b64_member(json_t *jwk, const char *name, size_t *n)
{
    json_t *v = json_object_get(jwk, name);
    unsigned char *buf;
    long len;

    if (!json_is_string(v) || json_string_length(v) > 16384)
        return NULL;
    buf = hd_malloc(json_string_length(v) * 3 / 4 + 3);
    len = hd_auth_b64url_decode(json_string_value(v), json_string_length(v), buf);
    if (len <= 0) {
        free(buf);
        return NULL;
    }
    *n = (size_t)len;
    return buf;
}

/* ---- keys ------------------------------------------------------------------------------------ */

static hd_auth_key_t *key_add(hd_auth_keys_t *ks, const char *kid, jwt_alg_t alg,
                              unsigned char *material, size_t len)
{
    hd_auth_key_t *k;

    ks->keys = hd_realloc(ks->keys, (ks->n + 1) * sizeof(*ks->keys));
    k = &ks->keys[ks->n++];
    k->kid = kid ? hd_strdup(kid) : NULL;
    k->alg = alg;
    k->material = material;
    k->material_len = len;
    k->pkey = NULL;
    k->mac = NULL;
    return k;
}

int hd_auth_key_prepare_hmac(hd_auth_key_t *k, char *why, size_t whylen)
{
    const char *digest = k->alg == JWT_ALG_HS512   ? "SHA512"
                         : k->alg == JWT_ALG_HS384 ? "SHA384"
                                                   : "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    k->mac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL; /* holds its own reference to mac */
    EVP_MAC_free(mac);
    if (k->mac == NULL || EVP_MAC_init(k->mac, k->material, k->material_len, params) != 1) {
        EVP_MAC_CTX_free(k->mac);
        k->mac = NULL;
        return hd_auth_fail(why, whylen, "OpenSSL cannot make an HMAC-%s context", digest);
    }
    return 0;
}

void hd_auth_keys_dispose(hd_auth_keys_t *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        OPENSSL_cleanse(ks->keys[i].material, ks->keys[i].material_len);
        free(ks->keys[i].material);
        EVP_PKEY_free(ks->keys[i].pkey);
        EVP_MAC_CTX_free(ks->keys[i].mac);
    }
    free(ks->keys);
    ks->keys = NULL;
    ks->n = 0;
}

/* The PEM SubjectPublicKeyInfo of pkey, NUL-terminated, as libjwt reads it. */
static unsigned char *pem_of(EVP_PKEY *pkey, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    unsigned char *out = NULL;
    char *data;
    long n;

    if (bio != NULL && PEM_write_bio_PUBKEY(bio, pkey) == 1 &&
        (n = BIO_get_mem_data(bio, &data)) > 0) {
        out = hd_malloc((size_t)n + 1);
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        *len = (size_t)n;
    }
    BIO_free(bio);
    return out;
}

/*
 * Checks that pkey can verify alg (RSA of at least MIN_RSA_BITS for RS*, EC on alg's curve for
 * ES*) and, when alg is JWT_ALG_INVAL, picks it (EC: by curve; RSA: RS256). Returns the alg or
 * JWT_ALG_INVAL with why.
 */
static jwt_alg_t check_pkey(EVP_PKEY *pkey, jwt_alg_t alg, char *why, size_t whylen)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (alg == JWT_ALG_INVAL)
            alg = JWT_ALG_RS256;
        if (!alg_is_rsa(alg)) {
            hd_auth_fail(why, whylen, "an RSA key cannot verify %s", jwt_alg_str(alg));
            return JWT_ALG_INVAL;
        }
        if (EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS) {
            hd_auth_fail(why, whylen, "RSA key of %d bits (at least %d)", EVP_PKEY_get_bits(pkey),
                         MIN_RSA_BITS);
            return JWT_ALG_INVAL;
        }
        return alg;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           &glen) != 1) {
            hd_auth_fail(why, whylen, "EC key without a named curve");
            return JWT_ALG_INVAL;
        }
        if (alg == JWT_ALG_INVAL)
            alg = curve_alg(group);
        if (alg_curve(alg) == NULL || strcmp(alg_curve(alg), group) != 0) {
            hd_auth_fail(why, whylen, "an EC key on curve %s cannot verify %s", group,
                         alg == JWT_ALG_INVAL ? "any supported alg" : jwt_alg_str(alg));
            return JWT_ALG_INVAL;
        }
        return alg;
    }
    hd_auth_fail(why, whylen, "not an RSA or EC public key");
    return JWT_ALG_INVAL;
}

/* Adds pkey as a PEM key for alg (checked). */
static int add_pkey(hd_auth_keys_t *ks, const char *kid, EVP_PKEY *pkey, jwt_alg_t alg, char *why,
                    size_t whylen)
{
    unsigned char *pem;
    size_t len = 0;

    if ((alg = check_pkey(pkey, alg, why, whylen)) == JWT_ALG_INVAL)
        return -1;
    if ((pem = pem_of(pkey, &len)) == NULL)
        return hd_auth_fail(why, whylen, "cannot encode the key as PEM");
    if (EVP_PKEY_up_ref(pkey) != 1)
        return hd_auth_fail(why, whylen, "cannot keep the key");
    key_add(ks, kid, alg, pem, len)->pkey = pkey;
    return 0;
}

static int read_small_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    char *buf;

    if (f == NULL)
        return hd_auth_fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
    buf = hd_malloc(MAX_KEY_FILE + 1);
    n = fread(buf, 1, MAX_KEY_FILE + 1, f);
    if (ferror(f) || n > MAX_KEY_FILE) {
        fclose(f);
        free(buf);
        return hd_auth_fail(err, errlen, "cannot read %s: %s", path,
                            n > MAX_KEY_FILE ? "larger than 256 KiB" : "read error");
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int hd_auth_pem_load(hd_auth_keys_t *ks, const char *path, jwt_alg_t alg, char *err, size_t errlen)
{
    char *text, why[160];
    size_t len;
    EVP_PKEY *pkey = NULL;
    BIO *bio;
    int rc;

    memset(ks, 0, sizeof(*ks));
    if (read_small_file(path, &text, &len, err, errlen) < 0)
        return -1;
    if (hd_auth_alg_is_hmac(alg)) {
        free(text);
        return hd_auth_fail(err, errlen, "%s: a public key cannot verify %s (an HMAC alg)", path,
                            jwt_alg_str(alg));
    }
    bio = BIO_new_mem_buf(text, (int)len);
    if (bio != NULL)
        pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (pkey == NULL && bio != NULL) {
        /* A certificate holds the public key as well. */
        X509 *x;
        (void)BIO_reset(bio);
        if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            pkey = X509_get_pubkey(x);
            X509_free(x);
        }
    }
    BIO_free(bio);
    OPENSSL_cleanse(text, len);
    free(text);
    if (pkey == NULL)
        return hd_auth_fail(err, errlen, "%s: not a PEM public key or certificate", path);
    rc = add_pkey(ks, NULL, pkey, alg, why, sizeof(why));
    EVP_PKEY_free(pkey);
    if (rc < 0)
        return hd_auth_fail(err, errlen, "%s: %s", path, why);
    return 0;
}

/* ---- JWK ------------------------------------------------------------------------------------- */

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;

    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *jwk_rsa(json_t *jwk, char *why, size_t whylen)
{
    size_t nlen = 0, elen = 0;
    unsigned char *n = b64_member(jwk, "n", &nlen), *e = b64_member(jwk, "e", &elen);
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;

    if (n == NULL || e == NULL) {
        hd_auth_fail(why, whylen, "RSA key without base64url n and e");
        goto done;
    }
    bn = BN_bin2bn(n, (int)nlen, NULL);
    be = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn == NULL || be == NULL || bld == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1 ||
        (pkey = pkey_fromdata("RSA", bld)) == NULL)
        hd_auth_fail(why, whylen, "RSA key OpenSSL refuses");

done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *jwk_ec(json_t *jwk, char *why, size_t whylen)
{
    static const struct {
        const char *crv, *group;
        size_t len;
    } curves[] = {
        {"P-256", "prime256v1", 32}, {"P-384", "secp384r1", 48}, {"P-521", "secp521r1", 66}};
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    size_t xlen = 0, ylen = 0, i;
    unsigned char *x = NULL, *y = NULL, pub[1 + 2 * 66];
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;

    for (i = 0; crv != NULL && i < HD_ARRAY_SIZE(curves); i++) {
        if (strcmp(crv, curves[i].crv) == 0)
            break;
    }
    if (crv == NULL || i == HD_ARRAY_SIZE(curves)) {
        hd_auth_fail(why, whylen, "EC key on an unsupported crv (P-256, P-384, P-521)");
        return NULL;
    }
    x = b64_member(jwk, "x", &xlen);
    y = b64_member(jwk, "y", &ylen);
    if (x == NULL || y == NULL || xlen != curves[i].len || ylen != curves[i].len) {
        hd_auth_fail(why, whylen, "EC key without base64url x and y of %zu bytes", curves[i].len);
        goto done;
    }
    /* An uncompressed point: 04 || x || y (SEC 1, 2.3.3). */
    pub[0] = 0x04;
    memcpy(pub + 1, x, xlen);
    memcpy(pub + 1 + xlen, y, ylen);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[i].group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + xlen + ylen) != 1 ||
        (pkey = pkey_fromdata("EC", bld)) == NULL)
        hd_auth_fail(why, whylen, "EC key OpenSSL refuses (a point not on the curve?)");

done:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

/* Minimum HMAC key length for alg: the hash's output size (RFC 7518 3.2). */
static size_t hmac_min_len(jwt_alg_t alg)
{
    return alg == JWT_ALG_HS512 ? 64 : alg == JWT_ALG_HS384 ? 48 : 32;
}

/* Adds one JWK; 1 when skipped as not for signatures, 0 when added, -1 with why. */
static int jwk_add(hd_auth_keys_t *ks, json_t *jwk, jwt_alg_t conf_alg, char *why, size_t whylen)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    json_t *jalg = json_object_get(jwk, "alg");
    jwt_alg_t alg = conf_alg;
    EVP_PKEY *pkey = NULL;
    int rc;

    if (!json_is_object(jwk))
        return hd_auth_fail(why, whylen, "not a JSON object");
    if (use != NULL && strcmp(use, "sig") != 0)
        return 1; /* an encryption key published alongside */
    if (kty == NULL)
        return hd_auth_fail(why, whylen, "no kty");
    if (json_object_get(jwk, "kid") != NULL && (kid == NULL || kid[0] == '\0'))
        return hd_auth_fail(why, whylen, "kid must be a non-empty string");
    if (jalg != NULL) {
        jwt_alg_t a;
        if (!json_is_string(jalg))
            return hd_auth_fail(why, whylen, "alg must be a string");
        if ((a = hd_auth_alg_parse(json_string_value(jalg), why, whylen)) == JWT_ALG_INVAL)
            return -1;
        if (conf_alg != JWT_ALG_INVAL && a != conf_alg)
            return hd_auth_fail(why, whylen, "alg %s is not auth_jwt_alg %s", jwt_alg_str(a),
                                jwt_alg_str(conf_alg));
        alg = a;
    }
    if (strcmp(kty, "oct") == 0) {
        size_t len = 0;
        unsigned char *k;
        if (alg == JWT_ALG_INVAL)
            alg = JWT_ALG_HS256;
        if (!hd_auth_alg_is_hmac(alg))
            return hd_auth_fail(why, whylen, "an oct key cannot verify %s", jwt_alg_str(alg));
        if ((k = b64_member(jwk, "k", &len)) == NULL)
            return hd_auth_fail(why, whylen, "oct key without a base64url k");
        if (len < hmac_min_len(alg)) {
            OPENSSL_cleanse(k, len);
            free(k);
            return hd_auth_fail(why, whylen, "%s secret of %zu bytes (at least %zu, RFC 7518 3.2)",
                                jwt_alg_str(alg), len, hmac_min_len(alg));
        }
        return hd_auth_key_prepare_hmac(key_add(ks, kid, alg, k, len), why, whylen);
    }
    if (strcmp(kty, "RSA") == 0)
        pkey = jwk_rsa(jwk, why, whylen);
    else if (strcmp(kty, "EC") == 0)
        pkey = jwk_ec(jwk, why, whylen);
    else
        return hd_auth_fail(why, whylen, "kty \"%s\" is not supported (RSA, EC, oct)", kty);
    if (pkey == NULL)
        return -1;
    rc = add_pkey(ks, kid, pkey, alg, why, whylen);
    EVP_PKEY_free(pkey);
    return rc;
}

int hd_auth_jwks_parse(hd_auth_keys_t *ks, const char *text, size_t len, jwt_alg_t alg, char *err,
                       size_t errlen)
{
    json_error_t jerr;
    json_t *root, *keys, *jwk;
    char why[160];
    size_t i;

    memset(ks, 0, sizeof(*ks));
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return hd_auth_fail(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
    keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        json_decref(root);
        return hd_auth_fail(err, errlen, "expected a JWKS object {\"keys\": [...]}");
    }
    if (json_array_size(keys) > MAX_KEYS) {
        json_decref(root);
        return hd_auth_fail(err, errlen, "more than %d keys", MAX_KEYS);
    }
    json_array_foreach(keys, i, jwk)
    {
        int rc = jwk_add(ks, jwk, alg, why, sizeof(why));
        if (rc < 0) {
            hd_auth_fail(err, errlen, "key %zu: %s", i + 1, why);
            goto fail;
        }
    }
    json_decref(root);
    if (ks->n == 0)
        return hd_auth_fail(err, errlen, "no signature key in the set");
    for (i = 0; i < ks->n; i++) {
        if (ks->n > 1 && ks->keys[i].kid == NULL) {
            hd_auth_fail(err, errlen, "a set of several keys needs a kid on each");
            hd_auth_keys_dispose(ks);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ks->keys[i].kid, ks->keys[j].kid) == 0) {
                hd_auth_fail(err, errlen, "two keys with kid \"%s\"", ks->keys[i].kid);
                hd_auth_keys_dispose(ks);
                return -1;
            }
        }
    }
    return 0;

fail:
    json_decref(root);
    hd_auth_keys_dispose(ks);
    return -1;
}

int hd_auth_jwks_load(hd_auth_keys_t *ks, const char *path, jwt_alg_t alg, char *err, size_t errlen)
{
    char *text, why[200];
    size_t len;
    int rc;

    memset(ks, 0, sizeof(*ks));
    if (read_small_file(path, &text, &len, err, errlen) < 0)
        return -1;
    rc = hd_auth_jwks_parse(ks, text, len, alg, why, sizeof(why));
    OPENSSL_cleanse(text, len);
    free(text);
    if (rc < 0)
        return hd_auth_fail(err, errlen, "%s: %s", path, why);
    return 0;
}
