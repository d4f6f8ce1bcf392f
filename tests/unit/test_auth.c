/* SPDX-License-Identifier: MIT */
/*
 * test_auth.c: unit tests of src/auth: token verification (good, expired, nbf, iat, wrong
 * signature, alg none, the HS/RS confusion, wrong iss/aud, kid selection in a JWKS of RSA, EC
 * and oct keys, unsupported algs, malformed tokens), the keys the policy accepts, identities,
 * the channel rules' decisions, and the verified-token cache (hits, expiry while cached, key
 * rotation, bounds under a flood, revocation after caching), the known headers and the reused
 * HMAC context (every token is verified with and without them, and the answers must agree).
 * Tokens are minted here with libjwt and OpenSSL from keys generated at run time.
 */
#include "herald/auth.h"
#include "herald/common.h"
#include "herald/conf.h"
#include "herald/transport.h"
#include "herald/worker.h"

#include "auth/internal.h" /* hd_auth_b64url_decode */

#include "test.h"

#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <time.h>
#include <unistd.h>

#define SECRET "0123456789abcdef0123456789abcdef-herald-test"
#define NOW    1767225600 /* 2026-01-01 */

static char tmpdir[64];

/* ---- minting -------------------------------------------------------------------------------- */

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;

    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* A token signed by libjwt: alg with key (secret or private PEM), optional kid, claims JSON. */
static char *mint(jwt_alg_t alg, const void *key, size_t keylen, const char *kid,
                  const char *claims)
{
    jwt_t *jwt = NULL;
    char *tok, *copy;

    T_EQ_INT(jwt_new(&jwt), 0);
    T_EQ_INT(jwt_add_grants_json(jwt, claims), 0);
    if (kid != NULL)
        T_EQ_INT(jwt_add_header(jwt, "kid", kid), 0);
    T_EQ_INT(jwt_set_alg(jwt, alg, key, (int)keylen), 0);
    tok = jwt_encode_str(jwt);
    T_TRUE(tok != NULL);
    copy = hd_strdup(tok);
    free(tok);
    jwt_free(jwt);
    return copy;
}

/* The usual token: HS256 with SECRET, no kid. */
static char *mint_hs256(const char *claims)
{
    return mint(JWT_ALG_HS256, SECRET, strlen(SECRET), NULL, claims);
}

/* A token assembled by hand: any header, HMAC-SHA256 with key (NULL: empty signature). */
static char *mint_raw(const char *header, const char *claims, const void *key, size_t keylen)
{
    char *out = hd_malloc(8192), sig[128];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n;

    b64url((const unsigned char *)header, strlen(header), out);
    n = strlen(out);
    out[n++] = '.';
    b64url((const unsigned char *)claims, strlen(claims), out + n);
    n = strlen(out);
    if (key != NULL)
        HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)out, n, mac, &maclen);
    b64url(mac, maclen, sig);
    out[n++] = '.';
    strcpy(out + n, key != NULL ? sig : "");
    return out;
}

typedef struct keypair_s {
    EVP_PKEY *pkey;
    char *priv_pem, *pub_pem;
    size_t priv_len, pub_len;
} keypair_t;

static char *pem_string(EVP_PKEY *pkey, int private_, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (private_)
        T_TRUE(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1);
    else
        T_TRUE(PEM_write_bio_PUBKEY(bio, pkey) == 1);
    n = BIO_get_mem_data(bio, &data);
    out = hd_strndup(data, (size_t)n);
    *len = (size_t)n;
    BIO_free(bio);
    return out;
}

static void keypair_rsa(keypair_t *k, unsigned bits)
{
    k->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    T_TRUE(k->pkey != NULL);
    k->priv_pem = pem_string(k->pkey, 1, &k->priv_len);
    k->pub_pem = pem_string(k->pkey, 0, &k->pub_len);
}

static void keypair_ec(keypair_t *k, const char *curve)
{
    k->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    T_TRUE(k->pkey != NULL);
    k->priv_pem = pem_string(k->pkey, 1, &k->priv_len);
    k->pub_pem = pem_string(k->pkey, 0, &k->pub_len);
}

static void keypair_free(keypair_t *k)
{
    EVP_PKEY_free(k->pkey);
    free(k->priv_pem);
    free(k->pub_pem);
}

static void bn_b64(EVP_PKEY *pkey, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;

    T_TRUE(EVP_PKEY_get_bn_param(pkey, param, &bn) == 1);
    n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    T_TRUE(n > 0);
    b64url(buf, (size_t)n, out);
    BN_free(bn);
}

static char *write_file(const char *name, const char *text)
{
    char *path = hd_malloc(256);
    FILE *f;

    snprintf(path, 256, "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    T_TRUE(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

static hd_auth_t *policy(const hd_auth_params_t *p)
{
    hd_auth_t *a = NULL;
    char err[512];

    if (hd_auth_new(&a, p, err, sizeof(err)) != 0)
        T_FAIL("hd_auth_new: %s", err);
    return a;
}

/* A worker's HMAC context (hd_auth_scratch_t), reused by verify() for one policy at a time. */
static hd_auth_scratch_t scratch;
static uint64_t scratch_gen;

/*
 * Verifies and returns the result; the identity (if any) in *out or unref'd. Every token is
 * verified three ways that must agree on the verdict, the reason and the identity: as given
 * (a known header skips the header's JSON), with the policy's known headers hidden (the header
 * parsed: verify.c's header_key), and with a reused HMAC context (hd_auth_scratch_t).
 */
static hd_auth_verify_t verify(const hd_auth_t *a, const char *tok, int64_t now,
                               hd_identity_t **out, char *why)
{
    hd_identity_t *id = NULL, *id2 = NULL, *id3 = NULL;
    hd_auth_verify_t v = hd_auth_verify(a, tok, strlen(tok), now, &id, why, 160);
    hd_auth_times_t times;
    char why2[160] = "", why3[160] = "";

    T_TRUE((v == HD_AUTH_VERIFIED) == (id != NULL));
    if (a != NULL) {
        hd_auth_t *m = (hd_auth_t *)a;
        size_t n = m->n_headers;
        m->n_headers = 0;
        T_EQ_INT(hd_auth_verify(a, tok, strlen(tok), now, &id2, why2, sizeof(why2)), v);
        m->n_headers = n;
        if (scratch_gen != a->gen) {
            hd_auth_scratch_dispose(&scratch);
            scratch_gen = a->gen;
        }
        T_EQ_INT(hd_auth_verify_times(a, tok, strlen(tok), now, &scratch, &id3, &times, why3,
                                      sizeof(why3)),
                 v);
        if (v != HD_AUTH_VERIFIED) {
            T_EQ_STR(why2, why);
            T_EQ_STR(why3, why);
        } else {
            T_TRUE(hd_identity_sub(id) == NULL
                       ? hd_identity_sub(id2) == NULL
                       : strcmp(hd_identity_sub(id), hd_identity_sub(id2)) == 0);
            T_TRUE(hd_identity_footprint(id) == hd_identity_footprint(id3));
        }
        hd_identity_unref(id2);
        hd_identity_unref(id3);
    }
    if (out != NULL)
        *out = id;
    else
        hd_identity_unref(id);
    return v;
}

static void expect_refused(const hd_auth_t *a, const char *tok, int64_t now, hd_auth_verify_t want,
                           const char *reason)
{
    char why[160] = "";

    T_EQ_INT(verify(a, tok, now, NULL, why), want);
    T_CONTAINS(why, reason);
}

/*
 * Checks what a makes of tok (consumed) at NOW: want, HD_AUTH_VERIFIED or a refusal whose reason
 * contains `reason` ("" for any). One call per minted token: expect_token(a, mint(..), ..).
 */
static void expect_token(const hd_auth_t *a, char *tok, hd_auth_verify_t want, const char *reason)
{
    char why[160] = "";
    hd_auth_verify_t got = verify(a, tok, NOW, NULL, why);

    if (got != want || strstr(why, reason) == NULL)
        T_FAIL("token %s: got %d (\"%s\"), want %d with \"%s\"", tok, got, why, want, reason);
    free(tok);
}

/* ---- verification --------------------------------------------------------------------------- */

static void test_hs256_good(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET, .clock_skew_ms = 30000};
    hd_auth_t *a = policy(&p);
    hd_identity_t *id = NULL;
    char why[160], *tok;

    tok = mint_hs256("{\"sub\":\"42\",\"jti\":\"t-1\",\"exp\":1767229200,\"iat\":1767225600,"
                     "\"channels\":{\"subscribe\":[\"news\",\"room:*\"],\"publish\":[\"room:42\"]},"
                     "\"info\":{\"name\":\"Ann\",\"n\":[1, 2]}}");
    T_EQ_INT(verify(a, tok, NOW, &id, why), HD_AUTH_VERIFIED);
    T_EQ_STR(hd_identity_sub(id), "42");
    T_EQ_STR(hd_identity_jti(id), "t-1");
    T_EQ_INT(hd_identity_exp(id), 1767229200);
    /* Compact, whatever order libjwt wrote the members in. */
    T_CONTAINS(hd_identity_info(id), "\"name\":\"Ann\"");
    T_CONTAINS(hd_identity_info(id), "\"n\":[1,2]");
    T_TRUE(strchr(hd_identity_info(id), ' ') == NULL);
    T_TRUE(hd_auth_enabled(a) && hd_auth_has_key(a));
    hd_identity_unref(id);
    free(tok);

    /* HS384 and HS512 are refused by an HS256 policy, accepted by their own. */
    tok = mint(JWT_ALG_HS512, SECRET SECRET, 2 * strlen(SECRET), NULL, "{\"sub\":\"1\"}");
    expect_refused(a, tok, NOW, HD_AUTH_INVALID, "alg HS512 is not the configured HS256");
    hd_auth_free(a);
    p.jwt_secret = SECRET SECRET;
    p.jwt_alg = "HS512";
    a = policy(&p);
    T_EQ_INT(verify(a, tok, NOW, NULL, why), HD_AUTH_VERIFIED);
    free(tok);
    hd_auth_free(a);
}

static void test_time_claims(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET, .clock_skew_ms = 30000};
    hd_auth_t *a = policy(&p);
    char why[160], *tok;

    tok = mint_hs256("{\"sub\":\"1\",\"exp\":1767225600}");
    /* exp passed, but within the 30 s skew: still good; past it: expired. */
    T_EQ_INT(verify(a, tok, NOW + 29, NULL, why), HD_AUTH_VERIFIED);
    expect_refused(a, tok, NOW + 30, HD_AUTH_EXPIRED, "token expired");
    expect_refused(a, tok, NOW + 3600, HD_AUTH_EXPIRED, "token expired");
    free(tok);

    tok = mint_hs256("{\"sub\":\"1\",\"nbf\":1767225660}");
    expect_refused(a, tok, NOW, HD_AUTH_INVALID, "not valid yet");
    T_EQ_INT(verify(a, tok, NOW + 30, NULL, why), HD_AUTH_VERIFIED);
    free(tok);

    expect_token(a, mint_hs256("{\"sub\":\"1\",\"iat\":1767229200}"), HD_AUTH_INVALID,
                 "issued in the future");

    expect_token(
        a,
        mint_raw("{\"alg\":\"HS256\"}", "{\"sub\":\"1\",\"exp\":\"soon\"}", SECRET, strlen(SECRET)),
        HD_AUTH_INVALID, "exp is not a number");

    /* No exp at all: valid (docs/auth.md says to mint with one). */
    expect_token(a, mint_hs256("{\"sub\":\"1\"}"), HD_AUTH_VERIFIED, "");
    hd_auth_free(a);
}

static void test_bad_signature_and_none(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_t *a = policy(&p);
    char *tok, *dot;
    const char *other = "another secret that is long enough, 32+ bytes";

    expect_token(a, mint(JWT_ALG_HS256, other, strlen(other), NULL, "{\"sub\":\"1\"}"),
                 HD_AUTH_INVALID, "bad signature");

    /* A good token with one byte of its payload changed. */
    tok = mint_hs256("{\"sub\":\"1\",\"x\":\"abcd\"}");
    dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    expect_refused(a, tok, NOW, HD_AUTH_INVALID, "");
    free(tok);

    /* alg none, with and without a signature part, and in other spellings. */
    expect_token(a, mint_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"1\"}", NULL, 0),
                 HD_AUTH_INVALID, "alg none");
    expect_token(a, mint_raw("{\"alg\":\"None\"}", "{\"sub\":\"1\"}", NULL, 0), HD_AUTH_INVALID,
                 "unknown alg");
    /* Without pinning libjwt itself would take an unsigned token: the check is ours. */
    {
        jwt_t *jwt = NULL;
        tok = mint_raw("{\"alg\":\"none\"}", "{\"sub\":\"1\"}", NULL, 0);
        T_EQ_INT(jwt_decode(&jwt, tok, NULL, 0), 0);
        jwt_free(jwt);
        free(tok);
    }
    /* Two alg members: refused as a duplicate, whichever one libjwt would read. */
    expect_token(
        a,
        mint_raw("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"sub\":\"1\"}", SECRET, strlen(SECRET)),
        HD_AUTH_INVALID, "header");
    expect_token(a,
                 mint_raw("{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", "{\"sub\":\"1\"}", SECRET,
                          strlen(SECRET)),
                 HD_AUTH_INVALID, "crit");
    expect_token(a, mint_raw("{\"alg\":\"PS256\"}", "{\"sub\":\"1\"}", SECRET, strlen(SECRET)),
                 HD_AUTH_INVALID, "not supported by Debian 12's libjwt");
    expect_token(a, mint_raw("{\"alg\":\"EdDSA\"}", "{\"sub\":\"1\"}", SECRET, strlen(SECRET)),
                 HD_AUTH_INVALID, "not supported by Debian 12's libjwt");
    hd_auth_free(a);
}

static void test_malformed(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_t *a = policy(&p);
    static const char *const bad[] = {
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "...",
        "!!.e30.",
        "e30.e30.",
        "W10.e30.x",
        "e30.W10.x",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOjF9.e30.x",
    };
    char why[160], *big;
    hd_identity_t *id = (hd_identity_t *)&why; /* must be reset to NULL */

    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        T_EQ_INT(hd_auth_verify(a, bad[i], strlen(bad[i]), NOW, &id, why, sizeof(why)),
                 HD_AUTH_INVALID);
        T_TRUE(id == NULL);
    }
    big = hd_malloc(HD_AUTH_MAX_TOKEN + 2);
    memset(big, 'a', HD_AUTH_MAX_TOKEN + 1);
    big[HD_AUTH_MAX_TOKEN + 1] = '\0';
    expect_refused(a, big, NOW, HD_AUTH_INVALID, "longer than");
    free(big);
    /* A NUL inside the token. */
    T_EQ_INT(hd_auth_verify(a, "e30.e\0.x", 8, NOW, &id, why, sizeof(why)), HD_AUTH_INVALID);
    hd_auth_free(a);

    /* No key configured at all. */
    T_EQ_INT(hd_auth_verify(NULL, "a.b.c", 5, NOW, &id, why, sizeof(why)), HD_AUTH_NO_KEY);
}

static void test_hs_rs_confusion(void)
{
    keypair_t rsa;
    char *path, *tok;
    hd_auth_t *a;
    jwt_t *jwt = NULL;

    keypair_rsa(&rsa, 2048);
    path = write_file("rsa.pub.pem", rsa.pub_pem);
    hd_auth_params_t p = {.jwt_public_key = path, .jwt_alg = "RS256"};
    a = policy(&p);

    tok = mint(JWT_ALG_RS256, rsa.priv_pem, rsa.priv_len, NULL, "{\"sub\":\"7\"}");
    {
        char why[160];
        T_EQ_INT(verify(a, tok, NOW, NULL, why), HD_AUTH_VERIFIED);
        /* One byte of the RSA signature changed. */
        char *bad = hd_strdup(tok);
        bad[strlen(bad) - 20] = bad[strlen(bad) - 20] == 'Q' ? 'R' : 'Q';
        expect_refused(a, bad, NOW, HD_AUTH_INVALID, "bad signature");
        free(bad);
    }
    free(tok);

    /* The attack: HS256 with the public PEM as the HMAC secret. */
    tok = mint(JWT_ALG_HS256, rsa.pub_pem, rsa.pub_len, NULL, "{\"sub\":\"admin\"}");
    /* libjwt alone, handed the PEM, accepts it: the pinning is what stops it. */
    T_EQ_INT(jwt_decode(&jwt, tok, (const unsigned char *)rsa.pub_pem, (int)rsa.pub_len), 0);
    jwt_free(jwt);
    expect_refused(a, tok, NOW, HD_AUTH_INVALID, "alg HS256 is not the configured RS256");
    free(tok);
    /* Same with the PEM re-serialized by herald (what it keeps in memory). */
    expect_token(a,
                 mint_raw("{\"alg\":\"HS256\"}", "{\"sub\":\"admin\"}", rsa.pub_pem, rsa.pub_len),
                 HD_AUTH_INVALID, "alg HS256");

    /* RS384 against the RS256 pin. */
    expect_token(a, mint(JWT_ALG_RS384, rsa.priv_pem, rsa.priv_len, NULL, "{\"sub\":\"7\"}"),
                 HD_AUTH_INVALID, "alg RS384 is not the configured RS256");
    hd_auth_free(a);
    unlink(path);
    free(path);
    keypair_free(&rsa);
}

static void test_es256_pem(void)
{
    keypair_t ec;
    char *path, *tok, why[160];
    hd_auth_t *a;

    keypair_ec(&ec, "P-256");
    path = write_file("ec.pub.pem", ec.pub_pem);
    hd_auth_params_t p = {.jwt_public_key = path}; /* alg from the curve: ES256 */
    a = policy(&p);
    tok = mint(JWT_ALG_ES256, ec.priv_pem, ec.priv_len, NULL,
               "{\"sub\":\"e\",\"channels\":[\"a\",\"b:*\"]}");
    T_EQ_INT(verify(a, tok, NOW, NULL, why), HD_AUTH_VERIFIED);
    /* The signature (R || S, 64 bytes) cut short, grown, or with one byte changed; and the
     * same claims under another header (the signed input differs). */
    {
        char *sig = strrchr(tok, '.') + 1, *bad = hd_malloc(strlen(tok) + 8);
        size_t slen = strlen(sig);
        T_EQ_INT(slen, 86);
        snprintf(bad, strlen(tok) + 8, "%.*s", (int)(strlen(tok) - 4), tok);
        expect_refused(a, bad, NOW, HD_AUTH_INVALID, "bad signature");
        snprintf(bad, strlen(tok) + 8, "%sAAAA", tok);
        expect_refused(a, bad, NOW, HD_AUTH_INVALID, "bad signature");
        strcpy(bad, tok);
        bad[strlen(bad) - 10] = bad[strlen(bad) - 10] == 'Q' ? 'R' : 'Q';
        expect_refused(a, bad, NOW, HD_AUTH_INVALID, "bad signature");
        free(bad);
    }
    free(tok);
    expect_token(a, mint(JWT_ALG_HS256, ec.pub_pem, ec.pub_len, NULL, "{\"sub\":\"e\"}"),
                 HD_AUTH_INVALID, "alg HS256 is not the configured ES256");
    hd_auth_free(a);
    unlink(path);
    free(path);
    keypair_free(&ec);
}

static void test_iss_aud(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET, .issuer = "https://app", .audience = "herald"};
    hd_auth_t *a = policy(&p);

    expect_token(a, mint_hs256("{\"sub\":\"1\",\"iss\":\"https://app\",\"aud\":\"herald\"}"),
                 HD_AUTH_VERIFIED, "");
    expect_token(a,
                 mint_hs256("{\"sub\":\"1\",\"iss\":\"https://app\",\"aud\":[\"x\",\"herald\"]}"),
                 HD_AUTH_VERIFIED, "");
    expect_token(a, mint_hs256("{\"sub\":\"1\",\"iss\":\"https://app\",\"aud\":\"other\"}"),
                 HD_AUTH_INVALID, "aud");
    expect_token(a, mint_hs256("{\"sub\":\"1\",\"iss\":\"https://app\"}"), HD_AUTH_INVALID, "aud");
    expect_token(a, mint_hs256("{\"sub\":\"1\",\"iss\":\"https://evil\",\"aud\":\"herald\"}"),
                 HD_AUTH_INVALID, "iss");
    hd_auth_free(a);
}

static void test_jwks_kid(void)
{
    keypair_t rsa, ec, ec384;
    char n[600], e[16], x[100], y[100], x2[100], y2[100], k[100], jwks[4096], *path, *tok;
    char why[160];
    hd_auth_t *a;
    hd_identity_t *id;

    keypair_rsa(&rsa, 2048);
    keypair_ec(&ec, "P-256");
    keypair_ec(&ec384, "P-384");
    bn_b64(rsa.pkey, OSSL_PKEY_PARAM_RSA_N, 0, n);
    bn_b64(rsa.pkey, OSSL_PKEY_PARAM_RSA_E, 0, e);
    bn_b64(ec.pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, x);
    bn_b64(ec.pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, y);
    bn_b64(ec384.pkey, OSSL_PKEY_PARAM_EC_PUB_X, 48, x2);
    bn_b64(ec384.pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 48, y2);
    b64url((const unsigned char *)SECRET, strlen(SECRET), k);
    snprintf(jwks, sizeof(jwks),
             "{\"keys\":["
             "{\"kty\":\"RSA\",\"kid\":\"r1\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"%s\","
             "\"e\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"e2\",\"crv\":\"P-384\",\"x\":\"%s\",\"y\":\"%s\"},"
             "{\"kty\":\"oct\",\"kid\":\"h1\",\"alg\":\"HS256\",\"k\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
             n, e, x, y, x2, y2, k);
    path = write_file("keys.jwks", jwks);
    hd_auth_params_t p = {.jwks = path};
    a = policy(&p);

    tok = mint(JWT_ALG_RS256, rsa.priv_pem, rsa.priv_len, "r1", "{\"sub\":\"r\"}");
    T_EQ_INT(verify(a, tok, NOW, &id, why), HD_AUTH_VERIFIED);
    T_EQ_STR(hd_identity_sub(id), "r");
    hd_identity_unref(id);
    free(tok);
    expect_token(a, mint(JWT_ALG_ES256, ec.priv_pem, ec.priv_len, "e1", "{\"sub\":\"e\"}"),
                 HD_AUTH_VERIFIED, "");
    expect_token(a, mint(JWT_ALG_ES384, ec384.priv_pem, ec384.priv_len, "e2", "{\"sub\":\"e2\"}"),
                 HD_AUTH_VERIFIED, "");
    expect_token(a, mint(JWT_ALG_HS256, SECRET, strlen(SECRET), "h1", "{\"sub\":\"h\"}"),
                 HD_AUTH_VERIFIED, "");

    /* The EC key's token naming the RSA kid, an unknown kid, no kid, a confused alg. */
    expect_token(a, mint(JWT_ALG_ES256, ec.priv_pem, ec.priv_len, "r1", "{\"sub\":\"e\"}"),
                 HD_AUTH_INVALID, "alg ES256 is not the configured RS256");
    expect_token(a, mint(JWT_ALG_RS256, rsa.priv_pem, rsa.priv_len, "r9", "{\"sub\":\"r\"}"),
                 HD_AUTH_INVALID, "no key with the token's kid");
    expect_token(a, mint(JWT_ALG_RS256, rsa.priv_pem, rsa.priv_len, NULL, "{\"sub\":\"r\"}"),
                 HD_AUTH_INVALID, "without kid");
    expect_token(a, mint(JWT_ALG_HS256, rsa.pub_pem, rsa.pub_len, "r1", "{\"sub\":\"admin\"}"),
                 HD_AUTH_INVALID, "alg HS256 is not the configured RS256");
    expect_token(a, mint(JWT_ALG_ES256, ec384.priv_pem, ec384.priv_len, "e1", "{\"sub\":\"e\"}"),
                 HD_AUTH_INVALID, "");
    hd_auth_free(a);
    unlink(path);
    free(path);
    keypair_free(&rsa);
    keypair_free(&ec);
    keypair_free(&ec384);
}

/* Policies refused at load, each with a reason naming what is wrong. */
static void test_bad_keys(void)
{
    keypair_t rsa, small, ec;
    char err[512], *rsa_path, *small_path, *ec_path, *jwks_path;
    hd_auth_t *a = NULL;
    struct {
        hd_auth_params_t p;
        const char *reason;
    } cases[] = {
        {{.jwt_secret = "short"}, "5 bytes; HS256 needs at least 32"},
        {{.jwt_secret = SECRET, .jwt_alg = "HS512"}, "HS512 needs at least 64"},
        {{.jwt_secret = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"},
         "looks like a PEM key"},
        {{.jwt_secret = SECRET, .jwt_alg = "RS256"}, "a secret verifies HS256/384/512 only"},
        {{.jwt_secret = SECRET, .jwks = "/x"}, "exclude each other"},
        {{.jwt_alg = "PS256", .jwt_secret = SECRET}, "not supported by Debian 12's libjwt"},
        {{.jwt_alg = "none", .jwt_secret = SECRET}, "alg none"},
        {{.jwt_alg = "HS256"}, "set without a key"},
        {{.jwt_public_key = "/nonexistent/key.pem"}, "cannot read /nonexistent/key.pem"},
        {{.jwks = "/nonexistent/keys.jwks"}, "cannot read"},
    };

    for (size_t i = 0; i < HD_ARRAY_SIZE(cases); i++) {
        err[0] = '\0';
        T_EQ_INT(hd_auth_new(&a, &cases[i].p, err, sizeof(err)), -1);
        T_TRUE(a == NULL);
        T_CONTAINS(err, cases[i].reason);
    }

    keypair_rsa(&rsa, 2048);
    keypair_rsa(&small, 1024);
    keypair_ec(&ec, "P-256");
    rsa_path = write_file("rsa2.pem", rsa.pub_pem);
    small_path = write_file("small.pem", small.pub_pem);
    ec_path = write_file("ec2.pem", ec.pub_pem);
    struct {
        hd_auth_params_t p;
        const char *reason;
    } files[] = {
        {{.jwt_public_key = rsa_path, .jwt_alg = "HS256"}, "a public key cannot verify HS256"},
        {{.jwt_public_key = rsa_path, .jwt_alg = "ES256"}, "an RSA key cannot verify ES256"},
        {{.jwt_public_key = small_path}, "RSA key of 1024 bits"},
        {{.jwt_public_key = ec_path, .jwt_alg = "ES384"}, "cannot verify ES384"},
        {{.jwt_public_key = ec_path, .jwt_alg = "RS256"}, "cannot verify RS256"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(files); i++) {
        err[0] = '\0';
        T_EQ_INT(hd_auth_new(&a, &files[i].p, err, sizeof(err)), -1);
        T_CONTAINS(err, files[i].reason);
    }

    static const struct {
        const char *jwks, *reason;
    } sets[] = {
        {"not json", "not JSON"},
        {"{}", "expected a JWKS object"},
        {"{\"keys\":[]}", "no signature key"},
        {"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}", "kty \"OKP\""},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", "secret of 5 bytes"},
        {"{\"keys\":[{\"kty\":\"oct\",\"alg\":\"RS256\",\"k\":\"c2hvcnQ\"}]}",
         "an oct key cannot verify RS256"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
         "x and y of 32 bytes"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"secp256k1\",\"x\":\"AA\",\"y\":\"AA\"}]}",
         "unsupported crv"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}", "without base64url n"},
        {"{\"keys\":[{\"kty\":\"oct\",\"alg\":\"PS256\",\"k\":\"AA\"}]}", "PS256 is not supported"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(sets); i++) {
        hd_auth_params_t p = {0};
        jwks_path = write_file("bad.jwks", sets[i].jwks);
        p.jwks = jwks_path;
        err[0] = '\0';
        T_EQ_INT(hd_auth_new(&a, &p, err, sizeof(err)), -1);
        T_CONTAINS(err, "auth_jwks");
        T_CONTAINS(err, sets[i].reason);
        unlink(jwks_path);
        free(jwks_path);
    }
    unlink(rsa_path);
    unlink(small_path);
    unlink(ec_path);
    free(rsa_path);
    free(small_path);
    free(ec_path);
    keypair_free(&rsa);
    keypair_free(&small);
    keypair_free(&ec);
}

/* ---- identities ----------------------------------------------------------------------------- */

static void test_identity(void)
{
    const char *subs[] = {"news", "room:*"}, *pubs[] = {"room:42"};
    hd_identity_fields_t f = {.sub = "u1",
                              .exp = 99,
                              .subscribe = subs,
                              .n_subscribe = 2,
                              .publish = pubs,
                              .n_publish = 1,
                              .info_json = "{ \"a\" : 1 }"};
    hd_identity_t *id = NULL, *id2;
    char why[160];

    T_EQ_INT(hd_identity_new(&id, &f, why, sizeof(why)), 0);
    T_EQ_STR(hd_identity_info(id), "{\"a\":1}");
    T_TRUE(hd_identity_jti(id) == NULL);
    id2 = hd_identity_ref(id);
    hd_identity_unref(id);
    T_EQ_STR(hd_identity_sub(id2), "u1");
    hd_identity_unref(id2);
    hd_identity_unref(NULL);
    T_TRUE(hd_identity_sub(NULL) == NULL && hd_identity_exp(NULL) == 0);

    static const struct {
        const char *json, *reason;
    } bad[] = {
        {"[]", "not a JSON object"},
        {"{\"sub\":42}", "sub must be a string"},
        {"{\"sub\":\"\"}", "sub must be 1.."},
        {"{\"sub\":\"a\\u0000b\"}", "not JSON"},
        {"{\"sub\":\"a\\nb\"}", "control character"},
        {"{\"channels\":\"news\"}", "channels must be an object"},
        {"{\"channels\":[\"a b\"]}", "may hold"},
        {"{\"channels\":[\"a*b\"]}", "may hold"},
        {"{\"channels\":[\"\"]}", "1..128 bytes"},
        {"{\"channels\":{\"publish\":[1]}}", "channels.publish must be an array of strings"},
        {"{\"info\":[1]}", "info must be a JSON object"},
        {"{\"exp\":-5}", "exp must be"},
        {"{\"sub\":\"a\",\"sub\":\"b\"}", "not JSON"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        why[0] = '\0';
        id = (hd_identity_t *)why;
        T_EQ_INT(hd_identity_from_json(&id, bad[i].json, strlen(bad[i].json), why, sizeof(why)),
                 -1);
        T_TRUE(id == NULL);
        T_CONTAINS(why, bad[i].reason);
    }
    /* Too many grants. */
    {
        char json[8192];
        size_t pos = (size_t)snprintf(json, sizeof(json), "{\"channels\":[");
        for (int i = 0; i <= HD_AUTH_MAX_GRANTS; i++)
            pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "%s\"c%d\"", i ? "," : "", i);
        snprintf(json + pos, sizeof(json) - pos, "]}");
        T_EQ_INT(hd_identity_from_json(&id, json, strlen(json), why, sizeof(why)), -1);
        T_CONTAINS(why, "more than 256");
    }
}

/* ---- rules ---------------------------------------------------------------------------------- */

static hd_identity_t *ident(const char *json)
{
    hd_identity_t *id = NULL;
    char why[160];

    if (hd_identity_from_json(&id, json, strlen(json), why, sizeof(why)) != 0)
        T_FAIL("identity %s: %s", json, why);
    return id;
}

static hd_auth_result_t check(const hd_auth_t *a, const hd_identity_t *id, const char *ch,
                              hd_auth_action_t act)
{
    const char *reason = NULL;
    hd_auth_result_t r = hd_auth_check(a, id, ch, strlen(ch), act, &reason);

    T_TRUE((r == HD_AUTH_OK) == (reason == NULL));
    return r;
}

static void test_rule_parse(void)
{
    hd_auth_rule_t r;
    char why[200];
    const char *ok[] = {"room:*", "subscribe=auth", "publish=subscriber", "history=off"};

    T_EQ_INT(hd_auth_rule_parse(&r, 4, ok, why, sizeof(why)), 0);
    T_EQ_INT(r.subscribe, HD_AUTH_SUB_AUTH);
    T_EQ_INT(r.publish, HD_AUTH_PUB_SUBSCRIBER);
    T_EQ_INT(r.history, 0);
    T_EQ_INT(r.is_prefix, 1);
    T_EQ_INT(r.len, 5);
    const char *def[] = {"x"};
    T_EQ_INT(hd_auth_rule_parse(&r, 1, def, why, sizeof(why)), 0);
    T_TRUE(r.subscribe == HD_AUTH_SUB_GRANT && r.publish == HD_AUTH_PUB_KEY && r.history == 1);

    static const struct {
        const char *argv[3];
        int argc;
        const char *reason;
    } bad[] = {
        {{"a b"}, 1, "may hold"},
        {{"x", "subscribe=everyone"},
         2,
         "subscribe: expected none, any, auth, grant, user or hook"},
        {{"x", "publish=anyone"}, 2, "publish: expected key, grant or subscriber"},
        {{"x", "history=maybe"}, 2, "history: expected on or off"},
        {{"x", "color=red"}, 2, "expected subscribe=..."},
        {{"x", "subscribe"}, 2, "expected subscribe=..."},
        {{"x", "subscribe=any", "subscribe=auth"}, 3, "subscribe given twice"},
        {{"user:42", "subscribe=user"}, 2, "subscribe=user needs a prefix pattern"},
        {{"x", "subscribe=hook", "publish=subscriber"}, 3, "cannot go with subscribe=hook"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        why[0] = '\0';
        T_EQ_INT(hd_auth_rule_parse(&r, bad[i].argc, bad[i].argv, why, sizeof(why)), -1);
        T_CONTAINS(why, bad[i].reason);
    }
}

/* subscribe=hook: the backend is asked for subscribes and history reads, not publishes. */
static void test_hook_rule(void)
{
    hd_auth_rule_t rules[2];
    const char *r0[] = {"team:*", "subscribe=hook", "publish=grant"};
    const char *r1[] = {"quiet:*", "subscribe=hook", "history=off"};
    char why[256], err[256];
    T_EQ_INT(hd_auth_rule_parse(&rules[0], 3, r0, why, sizeof(why)), 0);
    T_EQ_INT(hd_auth_rule_parse(&rules[1], 3, r1, why, sizeof(why)), 0);
    hd_auth_params_t p = {.rules = rules, .n_rules = 2};
    hd_auth_t *a = NULL;
    T_EQ_INT(hd_auth_new(&a, &p, err, sizeof(err)), 0);
    const char *reason = NULL;
    T_EQ_INT(hd_auth_check(a, NULL, "team:1", 6, HD_AUTH_SUBSCRIBE, &reason), HD_AUTH_ASK_HOOK);
    T_EQ_INT(hd_auth_check(a, NULL, "team:1", 6, HD_AUTH_HISTORY, &reason), HD_AUTH_ASK_HOOK);
    T_EQ_INT(hd_auth_check(a, NULL, "team:1", 6, HD_AUTH_PUBLISH, &reason),
             HD_AUTH_UNAUTHENTICATED);
    T_EQ_INT(hd_auth_check(a, NULL, "quiet:1", 7, HD_AUTH_SUBSCRIBE, &reason), HD_AUTH_ASK_HOOK);
    T_EQ_INT(hd_auth_check(a, NULL, "quiet:1", 7, HD_AUTH_HISTORY, &reason), HD_AUTH_FORBIDDEN);
    T_EQ_INT(hd_auth_check(a, NULL, "other", 5, HD_AUTH_SUBSCRIBE, &reason), HD_AUTH_FORBIDDEN);
    hd_auth_free(a);
}

static void test_rules(void)
{
    static const char conf_text[] =
        "auth_jwt_secret " SECRET "\n"
        "channel_rule public:* subscribe=any\n"
        "channel_rule private:* subscribe=grant publish=grant\n"
        "channel_rule user:* subscribe=user\n"
        "channel_rule room:* subscribe=auth publish=subscriber history=off\n"
        "channel_rule room:vip:* subscribe=grant publish=subscriber\n"
        "channel_rule room:vip:lobby subscribe=any\n"
        "channel_rule closed:* subscribe=none\n";
    hd_conf_t *c = NULL;
    char err[512];
    const hd_auth_t *a;
    hd_identity_t *u42, *u43, *nosub;

    if (hd_conf_load_string(&c, "t.conf", conf_text, NULL, 0, err, sizeof(err)) != 0)
        T_FAIL("conf: %s", err);
    a = c->auth;
    T_TRUE(hd_auth_enabled(a));
    u42 = ident("{\"sub\":\"42\",\"channels\":{\"subscribe\":[\"private:a\",\"private:team:*\","
                "\"room:vip:*\",\"other\"],\"publish\":[\"private:a\"]}}");
    u43 = ident("{\"sub\":\"43\"}");
    nosub = ident("{\"channels\":[\"private:*\"]}");

    /* public:* open to all */
    T_EQ_INT(check(a, NULL, "public:news", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "public:news", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, NULL, "public:news", HD_AUTH_HISTORY), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "public:news", HD_AUTH_PUBLISH), HD_AUTH_FORBIDDEN); /* key only */
    /* private:* by grant */
    T_EQ_INT(check(a, NULL, "private:a", HD_AUTH_SUBSCRIBE), HD_AUTH_UNAUTHENTICATED);
    T_EQ_INT(check(a, u42, "private:a", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "private:team:x", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "private:ab", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u42, "private:b", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u43, "private:a", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, nosub, "private:b", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "private:a", HD_AUTH_PUBLISH), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "private:team:x", HD_AUTH_PUBLISH), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, NULL, "private:a", HD_AUTH_PUBLISH), HD_AUTH_UNAUTHENTICATED);
    /* user:* for one's own sub only */
    T_EQ_INT(check(a, u42, "user:42", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "user:43", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u42, "user:420", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u42, "user:4", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u43, "user:43", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, NULL, "user:42", HD_AUTH_SUBSCRIBE), HD_AUTH_UNAUTHENTICATED);
    T_EQ_INT(check(a, nosub, "user:", HD_AUTH_SUBSCRIBE), HD_AUTH_UNAUTHENTICATED);
    T_EQ_INT(check(a, u42, "user:42", HD_AUTH_PUBLISH), HD_AUTH_FORBIDDEN);
    /* room:* any identity, subscribers publish, no history */
    T_EQ_INT(check(a, u43, "room:1", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, NULL, "room:1", HD_AUTH_SUBSCRIBE), HD_AUTH_UNAUTHENTICATED);
    T_EQ_INT(check(a, u43, "room:1", HD_AUTH_PUBLISH), HD_AUTH_OK);
    T_EQ_INT(check(a, u43, "room:1", HD_AUTH_HISTORY), HD_AUTH_FORBIDDEN);
    /* the longest prefix wins, an exact name beats every prefix */
    T_EQ_INT(check(a, u43, "room:vip:x", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u42, "room:vip:x", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, u42, "room:vip:x", HD_AUTH_HISTORY), HD_AUTH_OK);
    T_EQ_INT(check(a, NULL, "room:vip:lobby", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(a, NULL, "room:vip:lobby2", HD_AUTH_SUBSCRIBE), HD_AUTH_UNAUTHENTICATED);
    T_EQ_STR(hd_auth_rule_for(a, "room:vip:q", 10)->pattern, "room:vip:*");
    /* everything else: closed, whatever the token grants */
    T_EQ_INT(check(a, u42, "other", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, NULL, "news", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_EQ_INT(check(a, u42, "closed:x", HD_AUTH_SUBSCRIBE), HD_AUTH_FORBIDDEN);
    T_TRUE(hd_auth_rule_for(a, "news", 4) == NULL);

    T_EQ_INT(hd_auth_describe(a, err, sizeof(err)), 0);
    T_EQ_STR(err, "on: a secret pinned to HS256, 7 channel rules");
    hd_identity_unref(u42);
    hd_identity_unref(u43);
    hd_identity_unref(nosub);
    hd_conf_unref(c);

    /* A key and no rule closes everything: said as a warning. */
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "auth_jwt_secret " SECRET "\n", NULL, 0, err,
                                 sizeof(err)),
             0);
    T_EQ_INT(hd_auth_describe(c->auth, err, sizeof(err)), 1);
    T_CONTAINS(err, "no channel_rule: every channel is closed");
    hd_conf_unref(c);

    /* Auth off (the defaults): everything allowed, as before. */
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "", NULL, 0, err, sizeof(err)), 0);
    T_EQ_INT(hd_auth_describe(c->auth, err, sizeof(err)), 0);
    T_CONTAINS(err, "off");
    T_TRUE(!hd_auth_enabled(c->auth) && !hd_auth_has_key(c->auth));
    T_EQ_INT(check(c->auth, NULL, "anything", HD_AUTH_PUBLISH), HD_AUTH_OK);
    T_EQ_INT(check(NULL, NULL, "anything", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    hd_conf_unref(c);

    /* Rules without a key: auth on, everyone anonymous. "*" covers every channel. */
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "channel_rule * subscribe=any\n", NULL, 0, err,
                                 sizeof(err)),
             0);
    T_TRUE(hd_auth_enabled(c->auth) && !hd_auth_has_key(c->auth));
    T_EQ_INT(check(c->auth, NULL, "x", HD_AUTH_SUBSCRIBE), HD_AUTH_OK);
    T_EQ_INT(check(c->auth, NULL, "x", HD_AUTH_PUBLISH), HD_AUTH_FORBIDDEN);
    hd_conf_unref(c);
}

/* Conf errors name the file, the line and the directive. */
static void test_conf_errors(void)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"channel_rule\n", "t.conf:1: channel_rule: expected 1 to 4 values"},
        {"channel_rule a b\n", "t.conf:1: channel_rule: expected subscribe="},
        {"\nchannel_rule x*y\n", "t.conf:2: channel_rule: a channel pattern may hold"},
        {"channel_rule a:*\nchannel_rule a:* subscribe=any\n",
         "t.conf:2: channel_rule: pattern \"a:*\" given twice"},
        {"auth_jwt_alg PS256\n", "t.conf:1: auth_jwt_alg: PS256 is not supported by Debian 12"},
        {"auth_jwt_alg HS999\n", "t.conf:1: auth_jwt_alg: expected auto, HS256"},
        {"\n\nauth_jwt_secret tooshort\n", "t.conf:3: auth_jwt_secret: 8 bytes"},
        {"auth_jwks /nonexistent.jwks\n", "t.conf:1: auth_jwks: cannot read /nonexistent.jwks"},
        {"auth_clock_skew 2h\n", "t.conf:1: auth_clock_skew: expected a duration"},
    };
    hd_conf_t *c;
    char err[512];

    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        c = NULL;
        err[0] = '\0';
        T_TRUE(hd_conf_load_string(&c, "t.conf", bad[i].text, NULL, 0, err, sizeof(err)) != 0);
        T_TRUE(c == NULL);
        T_CONTAINS(err, bad[i].msg);
    }
    /* -o channel_rule off drops the file's rules. */
    const char *ov[] = {"channel_rule off"};
    T_EQ_INT(hd_conf_load_string(&c, "t.conf", "channel_rule x\n", ov, 1, err, sizeof(err)), 0);
    T_EQ_INT(c->n_channel_rules, 0);
    T_TRUE(!hd_auth_enabled(c->auth));
    hd_conf_unref(c);
}

/* The revoked set: add, extend, expiry, the cap, the process's set behind hd_auth_revoked. */
static void test_revset(void)
{
    hd_revset_t *s = hd_revset_new();
    int64_t now = 1000000;
    T_EQ_INT(hd_revset_has(s, "42", NULL, now), 0);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "42", 2, now + 5000, now, 3), 1);
    T_EQ_INT(hd_revset_has(s, "42", NULL, now), 1);
    T_EQ_INT(hd_revset_has(s, "4", NULL, now), 0);
    T_EQ_INT(hd_revset_has(s, "420", NULL, now), 0);
    T_EQ_INT(hd_revset_has(s, NULL, "42", now), 0); /* a jti of the same text is another key */
    T_EQ_INT(hd_revset_has(s, "7", "42", now), 0);
    /* Again: not new; a later expiry extends it, an earlier one does not shorten it. */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "42", 2, now + 9000, now, 3), 0);
    T_EQ_INT(hd_revset_until(s, HD_REVOKE_SUB, "42", 2, now), now + 9000);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "42", 2, now + 1000, now, 3), 0);
    T_EQ_INT(hd_revset_until(s, HD_REVOKE_SUB, "42", 2, now), now + 9000);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_JTI, "t-1", 3, now + 2000, now, 3), 1);
    T_EQ_INT(hd_revset_has(s, "someone", "t-1", now), 1);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_JTI, "t-2", 3, now + 3000, now, 3), 1);
    T_EQ_INT(hd_revset_count(s, now), 3);
    /* Full: a new key is refused, a key already there is still extended. */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "43", 2, now + 5000, now, 3), -1);
    T_EQ_INT(hd_revset_has(s, "43", NULL, now), 0);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_JTI, "t-2", 3, now + 4000, now, 3), 0);
    /* Bad arguments. */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "", 0, now + 5000, now, 10), -1);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "x", 1, now, now, 10), -1);
    T_EQ_INT(hd_revset_add(s, 9, "x", 1, now + 1, now, 10), -1);
    char big[HD_AUTH_MAX_SUB + 2];
    memset(big, 'a', sizeof(big));
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, big, HD_AUTH_MAX_SUB + 1, now + 1, now, 10), -1);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, big, HD_AUTH_MAX_SUB, now + 1, now, 10), 1);
    /* Expiry: each entry stops counting at its until; the full set makes room. */
    T_EQ_INT(hd_revset_has(s, NULL, "t-1", now + 1999), 1);
    T_EQ_INT(hd_revset_has(s, NULL, "t-1", now + 2000), 0);
    T_EQ_INT(hd_revset_count(s, now + 2000), 2); /* "42" and t-2 (the long one expired at +1) */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "43", 2, now + 5000, now + 2000, 3), 1);
    T_EQ_INT(hd_revset_has(s, "42", NULL, now + 8999), 1);
    T_EQ_INT(hd_revset_has(s, "42", NULL, now + 9000), 0);
    T_EQ_INT(hd_revset_until(s, HD_REVOKE_SUB, "42", 2, now + 9000), 0);
    /* Expired then revoked again: new again (its live connections end again). */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "42", 2, now + 20000, now + 9000, 3), 1);
    T_EQ_INT(hd_revset_count(s, now + 100000), 0);
    /* Many keys: all found, all gone after their time (the map and heap shrink back). */
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "user-%d", i);
        T_EQ_INT(
            hd_revset_add(s, HD_REVOKE_SUB, key, (size_t)n, now + 200000 + i, now + 100000, 5000),
            1);
    }
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "one-more", 8, now + 300000, now + 100000, 5000), -1);
    T_EQ_INT(hd_revset_has(s, "user-4999", NULL, now + 100000), 1);
    /* until is the first moment it no longer holds: user-0..user-2500 are gone at +2500 */
    T_EQ_INT(hd_revset_count(s, now + 200000 + 2500), 2499);
    T_EQ_INT(hd_revset_has(s, "user-2500", NULL, now + 200000 + 2500), 0);
    T_EQ_INT(hd_revset_has(s, "user-2501", NULL, now + 200000 + 2500), 1);
    /* The process's set: none installed answers 0; installed, hd_auth_revoked reads the clock. */
    T_EQ_INT(hd_auth_revoked("user-4999", NULL), 0);
    hd_auth_revocations_set(s);
    T_TRUE(hd_auth_revocations() == s);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    T_EQ_INT(hd_auth_revoked("live", NULL), 0);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "live", 4, wall + 60000, wall, 10000), 1);
    T_EQ_INT(hd_auth_revoked("live", NULL), 1);
    T_EQ_INT(hd_auth_revoked(NULL, NULL), 0);
    hd_auth_revocations_set(NULL);
    hd_revset_free(s);
    hd_revset_free(NULL);
}

/* The base64url decoder on every token: every length and byte value against the test's own
 * encoder, padding, and every way to be wrong at every position. */
static void test_b64url_decode(void)
{
    unsigned char in[96], out[96 + 3];
    char enc[160], bad[168];

    for (size_t len = 0; len <= 96; len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len * 11);
        b64url(in, len, enc);
        T_EQ_INT(hd_auth_b64url_decode(enc, strlen(enc), out), (long)len);
        T_TRUE(memcmp(in, out, len) == 0);
        /* With padding ('=' up to a multiple of 4). */
        snprintf(bad, sizeof(bad), "%s%s", enc,
                 strlen(enc) % 4 == 2   ? "=="
                 : strlen(enc) % 4 == 3 ? "="
                                        : "");
        T_EQ_INT(hd_auth_b64url_decode(bad, strlen(bad), out), (long)len);
        T_TRUE(memcmp(in, out, len) == 0);
        /* Any byte outside the alphabet, at any position, fails the decoding. */
        for (size_t pos = 0; pos < strlen(enc); pos++) {
            static const char wrong[] = {'+', '/', '=', ' ', '\0', '.', (char)0x80, (char)0xff};
            for (size_t k = 0; k < sizeof(wrong); k++) {
                memcpy(bad, enc, strlen(enc) + 1);
                bad[pos] = wrong[k];
                if (wrong[k] == '=' && pos == strlen(enc) - 1)
                    continue; /* a trailing '=' is padding: another (shorter) text */
                T_EQ_INT(hd_auth_b64url_decode(bad, strlen(enc), out), -1);
            }
        }
    }
    /* The whole alphabet decodes; one character past a multiple of 4 is no encoding; leftover
     * bits must be zero. */
    const char *all = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    T_EQ_INT(hd_auth_b64url_decode(all, 64, out), 48);
    T_EQ_INT(hd_auth_b64url_decode("QUJDRA", 6, out), 4);
    T_EQ_INT(hd_auth_b64url_decode("QUJDR", 5, out), -1);
    T_EQ_INT(hd_auth_b64url_decode("QR", 2, out), -1);  /* "Q" then 4 bits 0001 left over */
    T_EQ_INT(hd_auth_b64url_decode("QUF", 3, out), -1); /* 2 bits left over */
    T_EQ_INT(hd_auth_b64url_decode("QUE", 3, out), 2);
}

/* ---- the verified-token cache --------------------------------------------------------------- */

typedef struct cached_s {
    hd_auth_verify_t v;
    int hit;
    hd_identity_t *id; /* unref'd by the helper unless kept */
    char why[160];
} cached_t;

/* One hd_auth_cache_verify at now with the bounds given; the identity is dropped. */
static cached_t cv(hd_auth_cache_t *c, const hd_auth_t *a, const char *tok, int64_t now,
                   size_t max_entries, size_t max_bytes)
{
    cached_t r;

    memset(&r, 0, sizeof(r));
    r.v = hd_auth_cache_verify(c, a, tok, strlen(tok), now, max_entries, max_bytes, &r.id, &r.hit,
                               r.why, sizeof(r.why));
    T_TRUE((r.v == HD_AUTH_VERIFIED) == (r.id != NULL));
    hd_identity_unref(r.id);
    return r;
}

#define BIG (1u << 20)

static void test_cache_hit_miss(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_t *a = policy(&p);
    hd_auth_cache_t *c = hd_auth_cache_new();
    char *tok =
        mint_hs256("{\"sub\":\"u1\",\"jti\":\"t1\",\"exp\":1767226600,\"channels\":[\"a\"]}");
    hd_identity_t *first = NULL, *second = NULL;
    int hit = 1;
    char why[160];
    cached_t r;

    /* Miss (verified, kept), then hit: the same identity, shared. */
    T_EQ_INT(hd_auth_cache_verify(c, a, tok, strlen(tok), NOW, 100, BIG, &first, &hit, why, 160),
             HD_AUTH_VERIFIED);
    T_EQ_INT(hit, 0);
    T_EQ_INT(hd_auth_cache_count(c), 1);
    T_TRUE(hd_auth_cache_bytes(c) > 0);
    T_EQ_INT(hd_auth_cache_verify(c, a, tok, strlen(tok), NOW, 100, BIG, &second, &hit, why, 160),
             HD_AUTH_VERIFIED);
    T_EQ_INT(hit, 1);
    T_TRUE(first == second);
    T_EQ_STR(hd_identity_sub(second), "u1");
    T_EQ_STR(hd_identity_jti(second), "t1");
    hd_identity_unref(first);
    hd_identity_unref(second);

    /* Refusals are never kept: a changed signature byte, a prefix of the token, an expired one. */
    {
        char *bad = hd_strdup(tok);
        bad[strlen(bad) - 5] = bad[strlen(bad) - 5] == 'A' ? 'B' : 'A';
        for (int i = 0; i < 2; i++) {
            r = cv(c, a, bad, NOW, 100, BIG);
            T_EQ_INT(r.v, HD_AUTH_INVALID);
            T_EQ_INT(r.hit, 0);
            T_CONTAINS(r.why, "bad signature");
        }
        bad[strlen(bad) - 5] = '\0';
        r = cv(c, a, bad, NOW, 100, BIG);
        T_EQ_INT(r.v, HD_AUTH_INVALID);
        T_EQ_INT(r.hit, 0);
        free(bad);
    }
    char *old = mint_hs256("{\"sub\":\"u1\",\"exp\":1767225000}");
    r = cv(c, a, old, NOW, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_EXPIRED);
    T_EQ_INT(hd_auth_cache_count(c), 1);
    free(old);

    /* max_entries 0: no cache, every call verifies, nothing more kept. */
    for (int i = 0; i < 2; i++) {
        r = cv(c, a, tok, NOW, 0, BIG);
        T_EQ_INT(r.v, HD_AUTH_VERIFIED);
        T_EQ_INT(r.hit, 0);
    }
    /* A NULL cache verifies too. */
    r = cv(NULL, a, tok, NOW, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_VERIFIED);
    T_EQ_INT(r.hit, 0);
    hd_auth_cache_flush(c);
    T_EQ_INT(hd_auth_cache_count(c), 0);
    T_EQ_INT(hd_auth_cache_bytes(c), 0);
    free(tok);
    hd_auth_cache_free(c);
    hd_auth_cache_free(NULL);
    hd_auth_free(a);
}

/* A new policy (a reload: rotated keys, another JWKS) empties the cache before anything. */
static void test_cache_key_rotation(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_params_t p2 = {.jwt_secret = SECRET "-rotated-secret"};
    hd_auth_t *a = policy(&p), *same = policy(&p), *rotated = policy(&p2);
    hd_auth_cache_t *c = hd_auth_cache_new();
    char *tok = mint_hs256("{\"sub\":\"u1\"}");
    keypair_t ec;
    cached_t r;

    T_EQ_INT(cv(c, a, tok, NOW, 100, BIG).hit, 0);
    T_EQ_INT(cv(c, a, tok, NOW, 100, BIG).hit, 1);
    /* The same keys loaded again: a new policy all the same, verified again, then hits. */
    r = cv(c, same, tok, NOW, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_VERIFIED);
    T_EQ_INT(r.hit, 0);
    T_EQ_INT(cv(c, same, tok, NOW, 100, BIG).hit, 1);
    /* The secret rotated: the cached token is refused as a fresh check refuses it. */
    r = cv(c, rotated, tok, NOW, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_INVALID);
    T_EQ_INT(r.hit, 0);
    T_CONTAINS(r.why, "bad signature");
    T_EQ_INT(hd_auth_cache_count(c), 0);
    /* Back to the first policy object: it is not the cache's now, so again no hit. */
    T_EQ_INT(cv(c, a, tok, NOW, 100, BIG).hit, 0);

    /* ES256 (a public key): the signature is skipped on a hit as well. */
    keypair_ec(&ec, "P-256");
    char *path = write_file("cache-ec.pub.pem", ec.pub_pem);
    hd_auth_params_t pe = {.jwt_public_key = path};
    hd_auth_t *es = policy(&pe);
    char *etok = mint(JWT_ALG_ES256, ec.priv_pem, ec.priv_len, NULL, "{\"sub\":\"e\"}");
    r = cv(c, es, etok, NOW, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_VERIFIED);
    T_EQ_INT(r.hit, 0);
    T_EQ_INT(hd_auth_cache_count(c), 1);
    T_EQ_INT(cv(c, es, etok, NOW, 100, BIG).hit, 1);
    r = cv(c, es, tok, NOW, 100, BIG); /* the HS256 token under the EC key */
    T_EQ_INT(r.v, HD_AUTH_INVALID);
    T_CONTAINS(r.why, "alg HS256 is not the configured ES256");
    free(etok);
    hd_auth_free(es);
    unlink(path);
    free(path);
    keypair_free(&ec);

    free(tok);
    hd_auth_cache_free(c);
    hd_auth_free(a);
    hd_auth_free(same);
    hd_auth_free(rotated);
}

/* exp, nbf and iat are checked again at every hit, with the skew, as verify.c checks them. */
static void test_cache_time(void)
{
    hd_auth_params_t p0 = {.jwt_secret = SECRET, .clock_skew_ms = 0};
    hd_auth_params_t p30 = {.jwt_secret = SECRET, .clock_skew_ms = 30000};
    hd_auth_t *a = policy(&p0), *skewed = policy(&p30);
    hd_auth_cache_t *c = hd_auth_cache_new();
    /* exp NOW + 10, nbf NOW - 5, iat NOW - 2 */
    char *tok = mint_hs256("{\"sub\":\"1\",\"exp\":1767225610,\"nbf\":1767225595,"
                           "\"iat\":1767225598}");
    char why[160];
    cached_t r;

    T_EQ_INT(cv(c, a, tok, NOW, 100, BIG).hit, 0);
    T_EQ_INT(cv(c, a, tok, NOW + 9, 100, BIG).hit, 1);
    /* Expires while cached: refused at exp exactly as a fresh check, and dropped. */
    r = cv(c, a, tok, NOW + 10, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_EXPIRED);
    T_EQ_INT(r.hit, 0);
    T_CONTAINS(r.why, "token expired");
    T_EQ_INT(verify(a, tok, NOW + 10, NULL, why), HD_AUTH_EXPIRED);
    T_EQ_INT(hd_auth_cache_count(c), 0);
    /* The clock set back before iat (NOW - 2) then nbf: refused, as a fresh check would. */
    T_EQ_INT(cv(c, a, tok, NOW, 100, BIG).hit, 0);
    r = cv(c, a, tok, NOW - 3, 100, BIG);
    T_EQ_INT(r.v, HD_AUTH_INVALID);
    T_CONTAINS(r.why, "not valid yet");
    T_EQ_INT(verify(a, tok, NOW - 3, NULL, why), HD_AUTH_INVALID);
    T_EQ_INT(cv(c, a, tok, NOW - 2, 100, BIG).hit, 1); /* at iat: valid again */
    T_EQ_INT(verify(a, tok, NOW - 2, NULL, why), HD_AUTH_VERIFIED);
    /* With a 30 s skew: good until exp + 30. */
    T_EQ_INT(cv(c, skewed, tok, NOW, 100, BIG).hit, 0);
    T_EQ_INT(cv(c, skewed, tok, NOW + 39, 100, BIG).hit, 1);
    T_EQ_INT(cv(c, skewed, tok, NOW + 40, 100, BIG).v, HD_AUTH_EXPIRED);
    T_EQ_INT(verify(skewed, tok, NOW + 40, NULL, why), HD_AUTH_EXPIRED);
    free(tok);
    hd_auth_cache_free(c);
    hd_auth_free(a);
    hd_auth_free(skewed);
}

/* A flood of distinct valid tokens: the cache stays within its entries and bytes, the least
 * recently used going first; lowering the bounds (a reload) evicts at the next call. */
static void test_cache_bounds(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_t *a = policy(&p);
    hd_auth_cache_t *c = hd_auth_cache_new();
    char claims[2600], info[2100];
    char **toks = hd_calloc(1000, sizeof(*toks));

    for (int i = 0; i < 1000; i++) {
        snprintf(claims, sizeof(claims), "{\"sub\":\"user-%d\",\"exp\":1767226600}", i);
        toks[i] = mint_hs256(claims);
        T_EQ_INT(cv(c, a, toks[i], NOW, 100, BIG).hit, 0);
        T_TRUE(hd_auth_cache_count(c) <= 100);
    }
    T_EQ_INT(hd_auth_cache_count(c), 100);
    T_EQ_INT(cv(c, a, toks[900], NOW, 100, BIG).hit, 1); /* 900..999 held; 900 now the newest */
    T_EQ_INT(cv(c, a, toks[0], NOW, 100, BIG).hit, 0);   /* evicts the LRU: 901 (900 was used) */
    T_EQ_INT(cv(c, a, toks[900], NOW, 100, BIG).hit, 1);
    T_EQ_INT(cv(c, a, toks[901], NOW, 100, BIG).hit, 0);
    T_EQ_INT(cv(c, a, toks[999], NOW, 100, BIG).hit, 1);
    /* Lower bounds: the next call evicts down to them. */
    T_EQ_INT(cv(c, a, toks[999], NOW, 10, BIG).hit, 1);
    T_EQ_INT(hd_auth_cache_count(c), 10);
    for (int i = 0; i < 1000; i++)
        free(toks[i]);
    hd_auth_cache_flush(c);

    /* Large identities (2 KiB of info each) under a 64 KiB budget: the bytes bound holds. */
    memset(info, 'x', 2000);
    info[2000] = '\0';
    for (int i = 0; i < 200; i++) {
        snprintf(claims, sizeof(claims), "{\"sub\":\"big-%d\",\"info\":{\"pad\":\"%s\"}}", i, info);
        toks[i] = mint_hs256(claims);
        T_EQ_INT(cv(c, a, toks[i], NOW, 10000, 64 * 1024).v, HD_AUTH_VERIFIED);
        T_TRUE(hd_auth_cache_bytes(c) <= 64 * 1024);
        T_TRUE(hd_auth_cache_count(c) <= 32);
    }
    T_TRUE(hd_auth_cache_count(c) >= 20); /* full by bytes, not by count */
    T_EQ_INT(cv(c, a, toks[199], NOW, 10000, 64 * 1024).hit, 1);
    /* One identity over an eighth of the budget is verified but not kept. */
    hd_auth_cache_flush(c);
    T_EQ_INT(cv(c, a, toks[0], NOW, 10000, 16 * 1024).v, HD_AUTH_VERIFIED);
    T_EQ_INT(hd_auth_cache_count(c), 0);
    T_EQ_INT(cv(c, a, toks[0], NOW, 10000, 16 * 1024).hit, 0);
    for (int i = 0; i < 200; i++)
        free(toks[i]);
    free(toks);
    hd_auth_cache_free(c);
    hd_auth_free(a);
}

/* Through hd_tp_verify_token, the seam every transport uses: a token revoked after it was
 * cached is refused at its next use (a hit, then the revoked set), and the worker counts. */
static void test_cache_revoked(void)
{
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_conf_t *conf = hd_calloc(1, sizeof(*conf));
    hd_worker_t *w = hd_calloc(1, sizeof(*w));
    hd_revset_t *s = hd_revset_new();
    hd_identity_t *id = NULL;
    char claims[160], why[160], *tok, *tok2;
    int64_t now = (int64_t)time(NULL);

    conf->auth = policy(&p);
    conf->auth_cache_entries = 100;
    conf->auth_cache_bytes = BIG;
    hd_auth_revocations_set(s);
    snprintf(claims, sizeof(claims), "{\"sub\":\"r1\",\"jti\":\"j1\",\"exp\":%lld}",
             (long long)now + 600);
    tok = mint_hs256(claims);
    snprintf(claims, sizeof(claims), "{\"sub\":\"r2\",\"jti\":\"j2\",\"exp\":%lld}",
             (long long)now + 600);
    tok2 = mint_hs256(claims);
    for (int i = 0; i < 2; i++) {
        T_EQ_INT(hd_tp_verify_token(w, conf, tok, strlen(tok), &id, why, sizeof(why)), 0);
        hd_identity_unref(id);
        T_EQ_INT(hd_tp_verify_token(w, conf, tok2, strlen(tok2), &id, why, sizeof(why)), 0);
        hd_identity_unref(id);
    }
    T_EQ_INT(w->stats.auth_cache_misses, 2);
    T_EQ_INT(w->stats.auth_cache_hits, 2);
    T_EQ_INT(w->stats.auth_cache_entries, 2);
    /* Revoked by sub, and the other by jti: each refused although its entry answered. */
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_SUB, "r1", 2, now * 1000 + 60000, now * 1000, 10), 1);
    T_EQ_INT(hd_revset_add(s, HD_REVOKE_JTI, "j2", 2, now * 1000 + 60000, now * 1000, 10), 1);
    T_EQ_INT(hd_tp_verify_token(w, conf, tok, strlen(tok), &id, why, sizeof(why)),
             HD_ETOKENREVOKED);
    T_TRUE(id == NULL);
    T_CONTAINS(why, "revoked");
    T_EQ_INT(hd_tp_verify_token(w, conf, tok2, strlen(tok2), &id, why, sizeof(why)),
             HD_ETOKENREVOKED);
    T_TRUE(id == NULL);
    T_EQ_INT(w->stats.auth_cache_hits, 4);
    /* No cache configured: none is made, every token verified. */
    conf->auth_cache_entries = 0;
    hd_auth_cache_free(w->auth_cache);
    w->auth_cache = NULL;
    T_EQ_INT(hd_tp_verify_token(w, conf, tok, strlen(tok), &id, why, sizeof(why)),
             HD_ETOKENREVOKED);
    T_TRUE(w->auth_cache == NULL);
    hd_auth_revocations_set(NULL);
    hd_revset_free(s);
    free(tok);
    free(tok2);
    hd_auth_free(conf->auth);
    free(conf);
    free(w);
}

/* ---- known headers, the reused HMAC context (verify.c) ----------------------------------- */

/* The headers issuers' libraries write are known (no JSON parse); any other header, and every
 * refusal, goes through the parsed path, and both answer alike (verify() checks each token
 * both ways). */
static void test_known_headers(void)
{
    static const char *const known[] = {"{\"alg\":\"HS256\"}",
                                        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                                        "{\"typ\":\"JWT\",\"alg\":\"HS256\"}"};
    static const char *const parsed[] = {
        "{\"alg\": \"HS256\", \"typ\": \"JWT\"}",             /* spaces (Python's json.dumps) */
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"x\":1}",        /* another member */
        "{\"alg\":\"HS256\",\"kid\":\"k9\",\"typ\":\"JWT\"}", /* a kid: one key, no kid: taken */
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}"};
    hd_auth_params_t p = {.jwt_secret = SECRET};
    hd_auth_t *a = policy(&p);
    char hdr[64];

    /* A secret without kid: the three headers without kid. */
    T_EQ_INT(a->n_headers, 3);
    for (size_t i = 0; i < HD_ARRAY_SIZE(known); i++) {
        b64url((const unsigned char *)known[i], strlen(known[i]), hdr);
        T_TRUE(a->headers[i].key == &a->keys.keys[0]);
        T_EQ_STR(a->headers[i].seg, hdr);
        expect_token(a, mint_raw(known[i], "{\"sub\":\"k\"}", SECRET, strlen(SECRET)),
                     HD_AUTH_VERIFIED, "");
    }
    for (size_t i = 0; i < HD_ARRAY_SIZE(parsed); i++)
        expect_token(a, mint_raw(parsed[i], "{\"sub\":\"k\"}", SECRET, strlen(SECRET)),
                     HD_AUTH_VERIFIED, "");
    /* A known header with another key's signature; alg none; another HS alg. */
    expect_token(a, mint_raw(known[1], "{\"sub\":\"k\"}", "other", 5), HD_AUTH_INVALID,
                 "bad signature");
    expect_token(a, mint_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"k\"}", NULL, 0),
                 HD_AUTH_INVALID, "none");
    expect_token(
        a,
        mint_raw("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", "{\"sub\":\"k\"}", SECRET, strlen(SECRET)),
        HD_AUTH_INVALID, "alg HS384 is not the configured HS256");
    hd_auth_free(a);

    /* A JWKS: a key with a kid has its 11 headers (with and without typ and kid, any order),
     * but the headers without kid select no key in a set of two, so they are not known. */
    char k[100], k2[200], jwks[512], *path;
    b64url((const unsigned char *)SECRET, strlen(SECRET), k);
    b64url((const unsigned char *)SECRET SECRET, 2 * strlen(SECRET), k2);
    snprintf(jwks, sizeof(jwks),
             "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h1\",\"alg\":\"HS256\",\"k\":\"%s\"},"
             "{\"kty\":\"oct\",\"kid\":\"h2\",\"alg\":\"HS384\",\"k\":\"%s\"}]}",
             k, k2);
    path = write_file("known.jwks", jwks);
    hd_auth_params_t q = {.jwks = path};
    a = policy(&q);
    T_EQ_INT(a->n_headers, 16);
    for (size_t i = 0; i < a->n_headers; i++)
        T_TRUE(a->headers[i].key == &a->keys.keys[i < 8 ? 0 : 1]);
    expect_token(a,
                 mint_raw("{\"kid\":\"h1\",\"typ\":\"JWT\",\"alg\":\"HS256\"}", "{\"sub\":\"k\"}",
                          SECRET, strlen(SECRET)),
                 HD_AUTH_VERIFIED, "");
    expect_token(
        a,
        mint_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"k\"}", SECRET, strlen(SECRET)),
        HD_AUTH_INVALID, "without kid");
    expect_token(
        a,
        mint_raw("{\"alg\":\"HS256\",\"kid\":\"h2\"}", "{\"sub\":\"k\"}", SECRET, strlen(SECRET)),
        HD_AUTH_INVALID, "alg HS256 is not the configured HS384");
    hd_auth_free(a);
    unlink(path);
    free(path);
}

/* One worker's HMAC context serves token after token, across keys, after a bad signature, and
 * is dropped with its policy. */
static void test_hmac_reuse(void)
{
    char k[100], k2[100], jwks[512], *path, why[160];
    hd_auth_scratch_t sc = {0};
    hd_auth_times_t t;
    hd_identity_t *id;
    const char *secret2 = "a second secret, also 32 bytes or more";

    b64url((const unsigned char *)SECRET, strlen(SECRET), k);
    b64url((const unsigned char *)secret2, strlen(secret2), k2);
    snprintf(jwks, sizeof(jwks),
             "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h1\",\"alg\":\"HS256\",\"k\":\"%s\"},"
             "{\"kty\":\"oct\",\"kid\":\"h2\",\"alg\":\"HS256\",\"k\":\"%s\"}]}",
             k, k2);
    path = write_file("reuse.jwks", jwks);
    hd_auth_params_t q = {.jwks = path};
    hd_auth_t *a = policy(&q);
    char *good1 =
        mint_raw("{\"alg\":\"HS256\",\"kid\":\"h1\"}", "{\"sub\":\"1\"}", SECRET, strlen(SECRET));
    char *bad1 = mint_raw("{\"alg\":\"HS256\",\"kid\":\"h1\"}", "{\"sub\":\"1\"}", "no", 2);
    char *good2 =
        mint_raw("{\"alg\":\"HS256\",\"kid\":\"h2\"}", "{\"sub\":\"2\"}", secret2, strlen(secret2));
    for (int i = 0; i < 51; i++) { /* the last one with h2 */
        const char *tok = i % 3 == 0 ? good1 : i % 3 == 1 ? bad1 : good2;
        hd_auth_verify_t v =
            hd_auth_verify_times(a, tok, strlen(tok), NOW, &sc, &id, &t, why, sizeof(why));
        T_EQ_INT(v, i % 3 == 1 ? HD_AUTH_INVALID : HD_AUTH_VERIFIED);
        if (v == HD_AUTH_VERIFIED)
            T_EQ_STR(hd_identity_sub(id), i % 3 == 0 ? "1" : "2");
        hd_identity_unref(id);
    }
    T_TRUE(sc.key == &a->keys.keys[1] && sc.mac != NULL);
    hd_auth_scratch_dispose(&sc);
    T_TRUE(sc.key == NULL && sc.mac == NULL);
    free(good1);
    free(bad1);
    free(good2);
    hd_auth_free(a);
    unlink(path);
    free(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/herald-test-auth-XXXXXX");
    T_TRUE(mkdtemp(tmpdir) != NULL);
    T_RUN(test_hs256_good);
    T_RUN(test_time_claims);
    T_RUN(test_bad_signature_and_none);
    T_RUN(test_malformed);
    T_RUN(test_hs_rs_confusion);
    T_RUN(test_es256_pem);
    T_RUN(test_iss_aud);
    T_RUN(test_jwks_kid);
    T_RUN(test_bad_keys);
    T_RUN(test_identity);
    T_RUN(test_rule_parse);
    T_RUN(test_rules);
    T_RUN(test_hook_rule);
    T_RUN(test_conf_errors);
    T_RUN(test_revset);
    T_RUN(test_b64url_decode);
    T_RUN(test_cache_hit_miss);
    T_RUN(test_cache_key_rotation);
    T_RUN(test_cache_time);
    T_RUN(test_cache_bounds);
    T_RUN(test_cache_revoked);
    T_RUN(test_known_headers);
    T_RUN(test_hmac_reuse);
    hd_auth_scratch_dispose(&scratch);
    rmdir(tmpdir);
    T_DONE();
}
