/* SPDX-License-Identifier: MIT */
/*
 * policy.c: the node's policy (hd_auth_t, auth.h): its key with the pinned algorithm, the
 * iss/aud/skew settings and the channel rules; and hd_auth_check, the one decision every
 * transport asks at subscribe, publish and history time.
 *
 * Rules are sorted once (exact names first, then prefixes longest first) so that the first
 * match is the one that applies: an exact name beats any prefix, a longer prefix a shorter one.
 */
#include "internal.h"

#include "herald/common.h"

#include <stdio.h>
#include <string.h>

/* ---- channel_rule ---------------------------------------------------------------------------- */

typedef struct {
    const char *word;
    uint8_t value;
} option_t;

static const option_t sub_words[] = {{"none", HD_AUTH_SUB_NONE},
                                     {"any", HD_AUTH_SUB_ANY},
                                     {"auth", HD_AUTH_SUB_AUTH},
                                     {"grant", HD_AUTH_SUB_GRANT},
                                     {"user", HD_AUTH_SUB_USER},
                                     {"hook", HD_AUTH_SUB_HOOK},
                                     {NULL, 0}};
static const option_t pub_words[] = {{"key", HD_AUTH_PUB_KEY},
                                     {"grant", HD_AUTH_PUB_GRANT},
                                     {"subscriber", HD_AUTH_PUB_SUBSCRIBER},
                                     {NULL, 0}};
static const option_t bool_words[] = {{"on", 1}, {"off", 0}, {NULL, 0}};

static int option_value(const option_t *opts, const char *s, uint8_t *out)
{
    for (; opts->word != NULL; opts++) {
        if (strcmp(opts->word, s) == 0) {
            *out = opts->value;
            return 0;
        }
    }
    return -1;
}

int hd_auth_rule_parse(hd_auth_rule_t *rule, int argc, const char *const *argv, char *why,
                       size_t whylen)
{
    static const struct {
        const char *key, *expect;
        const option_t *opts;
        size_t offset;
    } keys[] = {
        {"subscribe", "none, any, auth, grant, user or hook", sub_words,
         offsetof(hd_auth_rule_t, subscribe)},
        {"publish", "key, grant or subscriber", pub_words, offsetof(hd_auth_rule_t, publish)},
        {"history", "on or off", bool_words, offsetof(hd_auth_rule_t, history)},
        {"presence", "on or off", bool_words, offsetof(hd_auth_rule_t, presence)},
    };
    unsigned seen = 0;
    pattern_t p;

    memset(rule, 0, sizeof(*rule));
    if (argc < 1)
        return hd_auth_fail(
            why, whylen, "expected PATTERN [subscribe=..] [publish=..] [history=..] [presence=..]");
    if (hd_auth_pattern_parse(&p, argv[0], strlen(argv[0]), why, whylen) < 0)
        return -1;
    memcpy(rule->pattern, argv[0], strlen(argv[0]) + 1);
    rule->len = p.len;
    rule->is_prefix = p.is_prefix;
    free(p.name);
    rule->subscribe = HD_AUTH_SUB_GRANT;
    rule->publish = HD_AUTH_PUB_KEY;
    rule->history = 1;
    for (int i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        size_t k;
        for (k = 0; eq != NULL && k < HD_ARRAY_SIZE(keys); k++) {
            if (strlen(keys[k].key) == (size_t)(eq - argv[i]) &&
                memcmp(keys[k].key, argv[i], (size_t)(eq - argv[i])) == 0)
                break;
        }
        if (eq == NULL || k == HD_ARRAY_SIZE(keys))
            return hd_auth_fail(
                why, whylen,
                "expected subscribe=..., publish=..., history=... or presence=..., got \"%s\"",
                argv[i]);
        if (seen & (1u << k))
            return hd_auth_fail(why, whylen, "%s given twice", keys[k].key);
        seen |= 1u << k;
        if (option_value(keys[k].opts, eq + 1, (uint8_t *)rule + keys[k].offset) < 0)
            return hd_auth_fail(why, whylen, "%s: expected %s, got \"%s\"", keys[k].key,
                                keys[k].expect, eq + 1);
    }
    if (rule->subscribe == HD_AUTH_SUB_USER && !rule->is_prefix)
        return hd_auth_fail(why, whylen, "subscribe=user needs a prefix pattern (\"user:*\")");
    if (rule->subscribe == HD_AUTH_SUB_HOOK && rule->publish == HD_AUTH_PUB_SUBSCRIBER)
        return hd_auth_fail(why, whylen,
                            "publish=subscriber cannot go with subscribe=hook (the backend decides "
                            "each subscribe): use publish=grant and grant publish in its answer");
    return 0;
}

/* ---- hd_auth_t ------------------------------------------------------------------------------- */

static int rule_order(const void *x, const void *y)
{
    const hd_auth_rule_t *a = x, *b = y;

    if (a->is_prefix != b->is_prefix)
        return a->is_prefix ? 1 : -1;
    return (int)b->len - (int)a->len;
}

/* The keys from the one configured source. */
static int load_keys(hd_auth_t *a, const hd_auth_params_t *p, char *err, size_t errlen)
{
    char why[256];
    jwt_alg_t alg = JWT_ALG_INVAL;
    int n = (p->jwt_secret != NULL) + (p->jwt_public_key != NULL) + (p->jwks != NULL);

    if (n > 1)
        return hd_auth_fail(
            err, errlen, "auth_jwt_secret, auth_jwt_public_key and auth_jwks exclude each other");
    if (p->jwt_alg != NULL &&
        (alg = hd_auth_alg_parse(p->jwt_alg, why, sizeof(why))) == JWT_ALG_INVAL)
        return hd_auth_fail(err, errlen, "auth_jwt_alg: %s", why);
    if (p->jwt_secret != NULL) {
        size_t len = strlen(p->jwt_secret);
        size_t min;
        if (alg == JWT_ALG_INVAL)
            alg = JWT_ALG_HS256;
        if (!hd_auth_alg_is_hmac(alg))
            return hd_auth_fail(err, errlen,
                                "auth_jwt_secret: a secret verifies HS256/384/512 only, "
                                "auth_jwt_alg is %s (use auth_jwt_public_key)",
                                jwt_alg_str(alg));
        /* A PEM as an HMAC secret is the HS/RS confusion waiting to happen. */
        if (strstr(p->jwt_secret, "-----BEGIN") != NULL)
            return hd_auth_fail(err, errlen,
                                "auth_jwt_secret: looks like a PEM key; a public key goes "
                                "in auth_jwt_public_key");
        min = alg == JWT_ALG_HS512 ? 64 : alg == JWT_ALG_HS384 ? 48 : 32;
        if (len < min)
            return hd_auth_fail(err, errlen,
                                "auth_jwt_secret: %zu bytes; %s needs at least %zu (RFC 7518 3.2)",
                                len, jwt_alg_str(alg), min);
        a->keys.keys = hd_calloc(1, sizeof(*a->keys.keys));
        a->keys.n = 1;
        a->keys.keys[0].alg = alg;
        a->keys.keys[0].material = (unsigned char *)hd_strdup(p->jwt_secret);
        a->keys.keys[0].material_len = len;
        if (hd_auth_key_prepare_hmac(&a->keys.keys[0], why, sizeof(why)) < 0)
            return hd_auth_fail(err, errlen, "auth_jwt_secret: %s", why);
        return 0;
    }
    if (p->jwt_public_key != NULL) {
        if (hd_auth_pem_load(&a->keys, p->jwt_public_key, alg, why, sizeof(why)) < 0)
            return hd_auth_fail(err, errlen, "auth_jwt_public_key: %s", why);
        return 0;
    }
    if (p->jwks != NULL) {
        if (hd_auth_jwks_load(&a->keys, p->jwks, alg, why, sizeof(why)) < 0)
            return hd_auth_fail(err, errlen, "auth_jwks: %s", why);
        return 0;
    }
    if (p->jwt_alg != NULL)
        return hd_auth_fail(err, errlen,
                            "auth_jwt_alg set without a key (auth_jwt_secret, "
                            "auth_jwt_public_key or auth_jwks)");
    return 0;
}

/* Generations of policies made in this process (hd_auth_s.gen): never 0, never reused. */
static uint64_t next_gen;

int hd_auth_new(hd_auth_t **out, const hd_auth_params_t *p, char *err, size_t errlen)
{
    hd_auth_t *a = hd_calloc(1, sizeof(*a));

    *out = NULL;
    if (load_keys(a, p, err, errlen) < 0) {
        hd_auth_free(a);
        return -1;
    }
    hd_auth_headers_build(a);
    a->issuer = p->issuer ? hd_strdup(p->issuer) : NULL;
    a->audience = p->audience ? hd_strdup(p->audience) : NULL;
    a->skew_s = (int64_t)(p->clock_skew_ms / 1000);
    if (p->n_rules > 0) {
        a->rules = hd_malloc(p->n_rules * sizeof(*a->rules));
        memcpy(a->rules, p->rules, p->n_rules * sizeof(*a->rules));
        a->n_rules = p->n_rules;
        qsort(a->rules, a->n_rules, sizeof(*a->rules), rule_order);
    }
    a->is_enabled = a->keys.n > 0 || a->n_rules > 0;
    a->gen = __atomic_add_fetch(&next_gen, 1, __ATOMIC_RELAXED);
    *out = a;
    return 0;
}

void hd_auth_free(hd_auth_t *a)
{
    if (a == NULL)
        return;
    hd_auth_headers_dispose(a);
    hd_auth_keys_dispose(&a->keys);
    free(a->issuer);
    free(a->audience);
    free(a->rules);
    free(a);
}

int hd_auth_enabled(const hd_auth_t *a)
{
    return a != NULL && a->is_enabled;
}

int hd_auth_has_key(const hd_auth_t *a)
{
    return a != NULL && a->keys.n > 0;
}

int hd_auth_describe(const hd_auth_t *a, char *buf, size_t len)
{
    const char *src;

    if (!hd_auth_enabled(a)) {
        snprintf(buf, len, "off (no JWT key, no channel_rule: every channel open as before)");
        return 0;
    }
    src = a->keys.n == 0                 ? "no JWT key (tokens are not accepted)"
          : a->keys.n > 1                ? "a JWKS"
          : a->keys.keys[0].pkey != NULL ? "a public key"
          : a->keys.keys[0].kid != NULL  ? "a JWKS"
                                         : "a secret";
    if (a->keys.n > 0 && a->n_rules == 0) {
        snprintf(buf, len,
                 "on with %s pinned to %s but no channel_rule: every channel is closed to "
                 "subscribers and clients (docs/auth.md)",
                 src, jwt_alg_str(a->keys.keys[0].alg));
        return 1;
    }
    snprintf(buf, len, "on: %s%s%s, %zu channel rule%s%s%s%s", src,
             a->keys.n == 1 ? " pinned to " : "",
             a->keys.n == 1 ? jwt_alg_str(a->keys.keys[0].alg) : "", a->n_rules,
             a->n_rules == 1 ? "" : "s", a->issuer ? ", iss checked" : "",
             a->audience ? ", aud checked" : "", a->keys.n > 1 ? " (keys by kid)" : "");
    return 0;
}

/* ---- decisions ------------------------------------------------------------------------------- */

const hd_auth_rule_t *hd_auth_rule_for(const hd_auth_t *a, const char *channel, size_t len)
{
    if (a == NULL)
        return NULL;
    for (size_t i = 0; i < a->n_rules; i++) {
        const hd_auth_rule_t *r = &a->rules[i];
        if (hd_auth_pattern_match(r->pattern, r->len, r->is_prefix, channel, len))
            return r;
    }
    return NULL;
}

int hd_auth_presence(const hd_auth_t *a, const char *channel, size_t len)
{
    const hd_auth_rule_t *r = hd_auth_rule_for(a, channel, len);
    return r && r->presence;
}

static hd_auth_result_t deny(hd_auth_result_t res, const char **reason, const char *why)
{
    if (reason != NULL)
        *reason = why;
    return res;
}

/* May id subscribe under rule r? */
static hd_auth_result_t may_subscribe(const hd_auth_rule_t *r, const hd_identity_t *id,
                                      const char *channel, size_t len, const char **reason)
{
    const char *sub;

    switch ((hd_auth_sub_t)r->subscribe) {
    case HD_AUTH_SUB_ANY:
        return HD_AUTH_OK;
    case HD_AUTH_SUB_AUTH:
        return id != NULL ? HD_AUTH_OK
                          : deny(HD_AUTH_UNAUTHENTICATED, reason, "this channel needs a token");
    case HD_AUTH_SUB_GRANT:
        if (id == NULL)
            return deny(HD_AUTH_UNAUTHENTICATED, reason, "this channel needs a token granting it");
        return hd_identity_granted(id, 0, channel, len)
                   ? HD_AUTH_OK
                   : deny(HD_AUTH_FORBIDDEN, reason, "channel not granted by the token");
    case HD_AUTH_SUB_USER:
        if (id == NULL || (sub = hd_identity_sub(id)) == NULL)
            return deny(HD_AUTH_UNAUTHENTICATED, reason,
                        "this user channel needs a token with sub");
        if (len == (size_t)r->len + strlen(sub) && memcmp(channel + r->len, sub, len - r->len) == 0)
            return HD_AUTH_OK;
        return deny(HD_AUTH_FORBIDDEN, reason, "a user channel is for its own user only");
    case HD_AUTH_SUB_HOOK:
        return HD_AUTH_ASK_HOOK;
    case HD_AUTH_SUB_NONE:
    default:
        return deny(HD_AUTH_FORBIDDEN, reason, "channel closed to subscribers");
    }
}

hd_auth_result_t hd_auth_check(const hd_auth_t *a, const hd_identity_t *id, const char *channel,
                               size_t len, hd_auth_action_t action, const char **reason)
{
    const hd_auth_rule_t *r;

    if (reason != NULL)
        *reason = NULL;
    if (a == NULL || !a->is_enabled)
        return HD_AUTH_OK;
    if ((r = hd_auth_rule_for(a, channel, len)) == NULL)
        return deny(HD_AUTH_FORBIDDEN, reason, "no channel_rule allows this channel");
    switch (action) {
    case HD_AUTH_HISTORY:
        if (!r->history)
            return deny(HD_AUTH_FORBIDDEN, reason, "history is off for this channel");
        return may_subscribe(r, id, channel, len, reason);
    case HD_AUTH_SUBSCRIBE:
        return may_subscribe(r, id, channel, len, reason);
    case HD_AUTH_PUBLISH:
        switch ((hd_auth_pub_t)r->publish) {
        case HD_AUTH_PUB_GRANT:
            if (id == NULL)
                return deny(HD_AUTH_UNAUTHENTICATED, reason, "publishing here needs a token");
            return hd_identity_granted(id, 1, channel, len)
                       ? HD_AUTH_OK
                       : deny(HD_AUTH_FORBIDDEN, reason, "publishing not granted by the token");
        case HD_AUTH_PUB_SUBSCRIBER:
            return may_subscribe(r, id, channel, len, reason);
        case HD_AUTH_PUB_KEY:
        default:
            return deny(HD_AUTH_FORBIDDEN, reason, "only the backend key publishes here");
        }
    }
    return deny(HD_AUTH_FORBIDDEN, reason, "unknown action");
}
