/* SPDX-License-Identifier: MIT */
/*
 * fuzz_jwt.c: libFuzzer harness for the token path of src/auth: hd_auth_verify on arbitrary
 * bytes against a fixed HS256 secret and against a JWKS (RSA "r1", EC P-256 "e1", oct "h1"), the
 * JWKS parser (hd_auth_jwks_parse) on arbitrary documents, and hd_identity_from_json on
 * arbitrary claims. The seed corpus holds valid tokens for these keys (minted by python3-jwt),
 * so mutations reach the signature check and the claims.
 *
 * Input: byte 0 picks the target (0: HS256 policy, 1: JWKS policy, 2: JWKS parser, 3: claims);
 * the rest is the token, the document or the claims. Checked on every input:
 *   - verify returns one of its four results, an identity exactly when it verified, and a
 *     reason that is a printable ASCII line quoting nothing of a token (no 16-byte run of it);
 *   - the same result, reason and identity with the policy's known headers hidden (the header
 *     parsed instead of matched, verify.c) and with a reused HMAC context (hd_auth_scratch_t);
 *   - a verified identity answers every accessor and hd_auth_check without allocating or
 *     crashing; everything is freed (ASan's leak check).
 */
#define _GNU_SOURCE /* memmem */

#include "herald/auth.h"
#include "herald/common.h"
#include "herald/log.h"

#include "auth/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzz-secret-0123456789abcdef0123456789"
#define NOW    1767225600

static const char jwks_text[] =
    "{\"keys\": [{\"kty\": \"RSA\", \"key_ops\": [\"verify\"], \"n\": \"t2KBxi65BdFHu3GWu8a2NhP"
    "4SWck7V6sSl3TEbG1T8J0EmRRySHxAoD_pVa1ULccAN142EnUo2XsxwMIsvkbECIX02NV4gr60c4epMVgthb7c0EqW"
    "i6XKcmhTlDQkw75uxvQ9r7ccMj0ohOjMLcuUNia-nLYAfXL2ADaJTrhWV3NLoYlN28hp7Yb6mUX6Gv84Q6KJECAG6M"
    "0mrnfTSdkaCtDJ0JSJoudql5k9HgZPTMsuKKOlkZjEHK2u7egMnfQGRSodSatPVEjzs6p2zX56LWPSXtb3WRY4x1Wj"
    "7Kbf0PqL8pD0skP5ZR5Nua81IdiYIsBX49OcJolQElsJ_l2xw\", \"e\": \"AQAB\", \"kid\": \"r1\", \"a"
    "lg\": \"RS256\"}, {\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"oHugmCpa6AHPU3M71IY_6Mf4i"
    "utBKxM56muapSzKG8E\", \"y\": \"47yUUb2YyuqqqrZYBbRq7ZENvaewuIlOsDgNO_wIBH0\", \"kid\": \"e"
    "1\"}, {\"kty\": \"oct\", \"kid\": \"h1\", \"alg\": \"HS256\", \"k\": \"ZnV6ei1zZWNyZXQtMDE"
    "yMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk\"}]}";

static hd_auth_t *hs_policy, *jwks_policy;

static hd_auth_t *policy(const hd_auth_params_t *p)
{
    hd_auth_t *a = NULL;
    char err[512];
    if (hd_auth_new(&a, p, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_jwt: %s\n", err);
        abort();
    }
    return a;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (hs_policy)
        return 0;
    hd_log_set_level(HD_LOG_ERROR);
    static const char *const rule_words[][3] = {{"news", "subscribe=any", NULL},
                                                {"room:*", "subscribe=grant", "publish=grant"},
                                                {"user:*", "subscribe=user", NULL},
                                                {"*", "subscribe=auth", "history=off"}};
    static hd_auth_rule_t rules[4];
    char why[256];
    for (size_t i = 0; i < HD_ARRAY_SIZE(rules); i++)
        CHECK(hd_auth_rule_parse(&rules[i], rule_words[i][2] ? 3 : 2, rule_words[i], why,
                                 sizeof(why)) == 0);
    hd_auth_params_t p = {.jwt_secret = SECRET,
                          .clock_skew_ms = 30000,
                          .rules = rules,
                          .n_rules = HD_ARRAY_SIZE(rules)};
    hs_policy = policy(&p);
    /* The JWKS policy reads a file, as herald does. */
    char path[] = "/tmp/herald-fuzz-jwks-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, jwks_text, sizeof(jwks_text) - 1) == (ssize_t)(sizeof(jwks_text) - 1));
    close(fd);
    hd_auth_params_t q = {
        .jwks = path, .audience = NULL, .rules = rules, .n_rules = HD_ARRAY_SIZE(rules)};
    jwks_policy = policy(&q);
    unlink(path);
    return 0;
}

/* A reason is one short printable line that does not quote the input. */
static void check_reason(const char *why, const uint8_t *data, size_t size)
{
    size_t n = strlen(why);
    CHECK(n > 0 && n < 160);
    for (size_t i = 0; i < n; i++)
        CHECK(why[i] >= 0x20 && why[i] < 0x7f);
    for (size_t i = 0; size >= 16 && i + 16 <= size; i += 8)
        CHECK(memmem(why, n, data + i, 16) == NULL);
}

static void exercise(const hd_auth_t *a, const hd_identity_t *id)
{
    static const char *const channels[] = {"news", "room:1", "room:", "user:42", "user:x", "zz"};
    (void)hd_identity_sub(id);
    (void)hd_identity_jti(id);
    CHECK(hd_identity_exp(id) >= 0);
    const char *info = hd_identity_info(id);
    CHECK(info == NULL || (info[0] == '{' && strlen(info) <= HD_AUTH_MAX_INFO));
    for (size_t i = 0; i < HD_ARRAY_SIZE(channels); i++) {
        for (int act = HD_AUTH_SUBSCRIBE; act <= HD_AUTH_HISTORY; act++) {
            const char *reason = NULL;
            hd_auth_result_t r = hd_auth_check(a, id, channels[i], strlen(channels[i]),
                                               (hd_auth_action_t)act, &reason);
            CHECK(r == HD_AUTH_OK || r == HD_AUTH_UNAUTHENTICATED || r == HD_AUTH_FORBIDDEN);
            CHECK((r == HD_AUTH_OK) == (reason == NULL));
        }
    }
    hd_identity_t *again = hd_identity_ref((hd_identity_t *)id);
    hd_identity_unref(again);
}

/* One HMAC context per policy, reused across inputs as a worker's is (hd_auth_scratch_t). */
static hd_auth_scratch_t hs_scratch, jwks_scratch;

static void fuzz_verify(hd_auth_t *a, hd_auth_scratch_t *scratch, const uint8_t *data, size_t size)
{
    /* An exact-size heap copy: reading past the token is caught. */
    char *tok = malloc(size ? size : 1);
    CHECK(tok != NULL);
    memcpy(tok, data, size);
    hd_identity_t *id = (hd_identity_t *)(uintptr_t)1, *id2 = NULL, *id3 = NULL;
    char why[160] = "", why2[160] = "", why3[160] = "";
    hd_auth_times_t times;
    hd_auth_verify_t v = hd_auth_verify(a, tok, size, NOW, &id, why, sizeof(why));
    CHECK(v == HD_AUTH_VERIFIED || v == HD_AUTH_EXPIRED || v == HD_AUTH_INVALID);
    CHECK((v == HD_AUTH_VERIFIED) == (id != NULL));
    if (v == HD_AUTH_VERIFIED)
        exercise(a, id);
    else
        check_reason(why, data, size);
    /* The same answer with the known headers hidden (every header parsed) and with the reused
     * HMAC context: a header matched byte for byte selects what parsing it would select. */
    size_t n_headers = a->n_headers;
    a->n_headers = 0;
    CHECK(hd_auth_verify(a, tok, size, NOW, &id2, why2, sizeof(why2)) == v);
    a->n_headers = n_headers;
    CHECK(hd_auth_verify_times(a, tok, size, NOW, scratch, &id3, &times, why3, sizeof(why3)) == v);
    if (v != HD_AUTH_VERIFIED) {
        CHECK(strcmp(why, why2) == 0 && strcmp(why, why3) == 0);
    } else {
        const char *s1 = hd_identity_sub(id), *s2 = hd_identity_sub(id2);
        CHECK((s1 == NULL && s2 == NULL) || (s1 && s2 && strcmp(s1, s2) == 0));
        CHECK(hd_identity_footprint(id) == hd_identity_footprint(id3));
    }
    hd_identity_unref(id);
    hd_identity_unref(id2);
    hd_identity_unref(id3);
    free(tok);
}

static void fuzz_jwks(const uint8_t *data, size_t size)
{
    hd_auth_keys_t ks;
    char err[256] = "";
    char *text = malloc(size ? size : 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    if (hd_auth_jwks_parse(&ks, text, size, JWT_ALG_INVAL, err, sizeof(err)) == 0) {
        CHECK(ks.n > 0 && ks.n <= 64);
        for (size_t i = 0; i < ks.n; i++) {
            CHECK(ks.keys[i].alg > JWT_ALG_NONE && ks.keys[i].alg < JWT_ALG_TERM);
            CHECK(ks.keys[i].material != NULL && ks.keys[i].material_len > 0);
        }
        hd_auth_keys_dispose(&ks);
    } else {
        CHECK(err[0] != '\0' && ks.n == 0);
    }
    free(text);
}

static void fuzz_claims(const uint8_t *data, size_t size)
{
    hd_identity_t *id = NULL;
    char why[160] = "";
    char *text = malloc(size ? size : 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    if (hd_identity_from_json(&id, text, size, why, sizeof(why)) == 0) {
        CHECK(id != NULL);
        exercise(hs_policy, id);
        hd_identity_unref(id);
    } else {
        CHECK(id == NULL && why[0] != '\0');
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!hs_policy)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size == 0)
        return 0;
    switch (data[0] & 3) {
    case 0:
        fuzz_verify(hs_policy, &hs_scratch, data + 1, size - 1);
        break;
    case 1:
        fuzz_verify(jwks_policy, &jwks_scratch, data + 1, size - 1);
        break;
    case 2:
        fuzz_jwks(data + 1, size - 1);
        break;
    default:
        fuzz_claims(data + 1, size - 1);
        break;
    }
    return 0;
}
