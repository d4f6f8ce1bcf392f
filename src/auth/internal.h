/* SPDX-License-Identifier: MIT */
/*
 * internal.h: what the files of src/auth share, private to the module.
 *
 *   identity.c  hd_identity_t: building (fields, claims JSON), refcount, grant matching
 *   jwks.c      keys: a JWKS file or a PEM file read into hd_auth_key_t (JWK RSA n/e and EC
 *               crv/x/y become PEM through OpenSSL, oct k a secret), the pinned algorithms
 *   verify.c    hd_auth_verify: header (known or parsed), key selection, the signature
 *               (OpenSSL), claims
 *   policy.c    hd_auth_t (hd_auth_new/free), channel_rule parsing, hd_auth_check
 *   revoked.c   hd_auth_revoked: the revocation check asked on each refresh
 *   cache.c     hd_auth_cache_t: a worker's verified tokens, by digest, until they expire
 *
 * Calls run policy.c -> verify.c -> jwks.c, and every file -> identity.c.
 */
#ifndef HERALD_AUTH_INTERNAL_H
#define HERALD_AUTH_INTERNAL_H

#include "herald/auth.h"

#include <jwt.h>
#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

/* Formats a reason into why[0..whylen) (nothing when why is NULL or whylen 0) and returns -1,
 * so a refusal is one line: return hd_auth_fail(why, whylen, "...", ...); control bytes in
 * the result (from quoted client input) become '?'. (identity.c) */
int hd_auth_fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A parsed channel pattern (grants and rules). */
typedef struct pattern_s {
    char *name; /* the name, or the prefix without its '*' (NUL-terminated) */
    uint8_t len;
    uint8_t is_prefix;
} pattern_t;

/* One allocation of `bytes` holding the record, its grants and their strings (identity.c). */
struct hd_identity_s {
    int refs_; /* atomic */
    char *sub, *jti, *info;
    int64_t exp;
    pattern_t *grants; /* n_subscribe subscribe patterns, then n_publish publish patterns */
    uint16_t n_subscribe, n_publish;
    size_t bytes;
};

/*
 * Parses a pattern (see auth.h) of s[0..len) into p (name allocated). Returns 0 or -1 with a
 * reason in why.
 */
int hd_auth_pattern_parse(pattern_t *p, const char *s, size_t len, char *why, size_t whylen);
/* 1 when channel[0..len) matches a pattern given as name/plen/is_prefix. */
static inline int hd_auth_pattern_match(const char *name, size_t plen, int is_prefix,
                                        const char *channel, size_t len)
{
    if (is_prefix)
        return len >= plen && __builtin_memcmp(name, channel, plen) == 0;
    return len == plen && __builtin_memcmp(name, channel, plen) == 0;
}
/* hd_identity_from_json on a parsed object (verify.c parses the payload once). */
struct json_t;
int hd_identity_from_claims(hd_identity_t **out, struct json_t *claims, char *why, size_t whylen);
/* 1 when one of the identity's subscribe (publish = 0) or publish (publish = 1) patterns
 * matches the channel. */
int hd_identity_granted(const hd_identity_t *id, int publish, const char *channel, size_t len);

/* One verification key. */
typedef struct hd_auth_key_s {
    char *kid;               /* NULL: no kid (a PEM file, a secret, a JWK without one) */
    jwt_alg_t alg;           /* pinned: a token must name exactly this alg */
    unsigned char *material; /* HS*: the secret; RS* and ES*: a PEM public key, NUL-terminated */
    size_t material_len;
    EVP_PKEY *pkey;   /* RS*, ES*: the key parsed once (verify.c checks signatures with it) */
    EVP_MAC_CTX *mac; /* HS*: HMAC with the secret set, made once; verify.c duplicates it */
} hd_auth_key_t;

typedef struct hd_auth_keys_s {
    hd_auth_key_t *keys;
    size_t n;
} hd_auth_keys_t;

/* "HS256" ... "ES512" into libjwt's value; JWT_ALG_INVAL for anything else, with why saying
 * whether it is known but unsupported here (PS256, EdDSA) or unknown. */
jwt_alg_t hd_auth_alg_parse(const char *s, char *why, size_t whylen);
int hd_auth_alg_is_hmac(jwt_alg_t alg);

/*
 * Reads keys: a JWKS document (text, len) or a PEM public key file for alg. Returns 0, or -1
 * with a reason in err (no directive name: the caller adds it). Free with hd_auth_keys_dispose.
 * `alg` (JWT_ALG_INVAL: none) pins JWKS keys that carry no "alg" of their own, and must agree
 * with those that do.
 */
int hd_auth_jwks_parse(hd_auth_keys_t *ks, const char *text, size_t len, jwt_alg_t alg, char *err,
                       size_t errlen);
int hd_auth_jwks_load(hd_auth_keys_t *ks, const char *path, jwt_alg_t alg, char *err,
                      size_t errlen);
int hd_auth_pem_load(hd_auth_keys_t *ks, const char *path, jwt_alg_t alg, char *err, size_t errlen);
void hd_auth_keys_dispose(hd_auth_keys_t *ks);
/*
 * Makes k->mac for an HS* key: OpenSSL's HMAC fetched once, its digest set and the secret
 * absorbed, so that a verification is a duplicate of it, the input and the final block.
 * Returns 0, or -1 with a reason in why.
 */
int hd_auth_key_prepare_hmac(hd_auth_key_t *k, char *why, size_t whylen);

/* A header segment known to select a key (verify.c, "known headers"). */
typedef struct hd_auth_header_s {
    char *seg; /* base64url, as in a token */
    size_t len;
    const hd_auth_key_t *key; /* in the policy's keys */
} hd_auth_header_t;

/* The policy (hd_auth_new). */
struct hd_auth_s {
    hd_auth_keys_t keys;
    hd_auth_header_t *headers; /* known headers (hd_auth_headers_build) */
    size_t n_headers;
    char *issuer, *audience;
    int64_t skew_s;
    hd_auth_rule_t *rules; /* sorted: exact names first, then prefixes, longest first */
    size_t n_rules;
    uint64_t gen; /* unique per hd_auth_new in the process: a cache knows its policy by it */
    unsigned is_enabled : 1;
};

/* The time claims of a verified token, for a cache that answers for it later (cache.c). */
typedef struct hd_auth_times_s {
    int64_t exp;        /* 0: none */
    int64_t not_before; /* the later of nbf and iat; 0: neither */
} hd_auth_times_t;
/*
 * Writes the headers the issuers' libraries write for each key ({"alg":..,"typ":"JWT"}, with
 * the kid, in every member order) as base64url, keeping those the parsed path accepts for that
 * key, so that a token with one of them skips the header's JSON (verify.c). Called once the
 * keys are loaded; hd_auth_headers_dispose frees them.
 */
void hd_auth_headers_build(hd_auth_t *a);
void hd_auth_headers_dispose(hd_auth_t *a);

/*
 * A worker's HMAC context, reused from token to token (cache.c keeps one per worker): a
 * duplicate of one key's prepared context, set back to its start for each token instead of
 * duplicated and freed. It belongs to one policy (key points into it): its owner disposes of it
 * when the policy changes. The all-zero value is empty.
 */
typedef struct hd_auth_scratch_s {
    const hd_auth_key_t *key;
    EVP_MAC_CTX *mac;
} hd_auth_scratch_t;
void hd_auth_scratch_dispose(hd_auth_scratch_t *s);

/* hd_auth_verify, with the token's time claims in *times when it verified; scratch (NULL:
 * none) is the caller's HMAC context to reuse. */
hd_auth_verify_t hd_auth_verify_times(const hd_auth_t *a, const char *token, size_t len,
                                      int64_t now, hd_auth_scratch_t *scratch, hd_identity_t **out,
                                      hd_auth_times_t *times, char *why, size_t whylen);
/* Bytes an identity holds (the record, its strings and grants, with malloc's overhead). */
size_t hd_identity_footprint(const hd_identity_t *id);

/* Base64url (RFC 4648 5, padding optional) of s[0..len) into out (at least len * 3 / 4 + 3
 * bytes). Returns the decoded length or -1. */
long hd_auth_b64url_decode(const char *s, size_t len, unsigned char *out);

#endif
