/* SPDX-License-Identifier: MIT */
/*
 * identity.c: hd_identity_t (auth.h): who a connection is, immutable once built, shared by
 * reference. Built from plain fields or from a claims object (a verified JWT's payload, a
 * ticket), in one allocation; its channel grants are parsed once here so that a check is a few
 * memcmp.
 */
#include "internal.h"

#include "herald/common.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int hd_auth_fail(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whylen > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
        /* Reasons quote client input (a member's name, a JSON error): keep them one line. */
        for (char *c = why; *c != '\0'; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        }
    }
    return -1;
}

static int is_channel_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '@' || ch == '-';
}

/* Checks a pattern (see auth.h) of s[0..len): the length of its name or prefix in *n and whether
 * it ends in '*' in *is_prefix. Returns 0 or -1 with a reason in why. */
static int pattern_check(const char *s, size_t len, size_t *n, int *is_prefix, char *why,
                         size_t whylen)
{
    *n = len;
    *is_prefix = len > 0 && s[len - 1] == '*';
    if (*is_prefix)
        (*n)--;
    if ((*n == 0 && !*is_prefix) || *n > 128)
        return hd_auth_fail(why, whylen,
                            "a channel pattern must be 1..128 bytes, a name or a prefix and '*'");
    for (size_t i = 0; i < *n; i++) {
        if (!is_channel_char((unsigned char)s[i]))
            return hd_auth_fail(
                why, whylen, "a channel pattern may hold [A-Za-z0-9._:@-] and one final '*' only");
    }
    return 0;
}

int hd_auth_pattern_parse(pattern_t *p, const char *s, size_t len, char *why, size_t whylen)
{
    size_t n;
    int is_prefix;

    memset(p, 0, sizeof(*p));
    if (pattern_check(s, len, &n, &is_prefix, why, whylen) < 0)
        return -1;
    p->name = hd_strndup(s, n);
    p->len = (uint8_t)n;
    p->is_prefix = (uint8_t)is_prefix;
    return 0;
}

/* Checks s (NULL: absent) as a sub or jti: 1..HD_AUTH_MAX_SUB bytes without NUL or control
 * bytes; its length in *len (0 when absent). Returns 0 or -1 with a reason in why. */
static int check_name(const char *what, const char *s, size_t *len, char *why, size_t whylen)
{
    *len = 0;
    if (s == NULL)
        return 0;
    *len = strlen(s);
    if (*len == 0 || *len > HD_AUTH_MAX_SUB)
        return hd_auth_fail(why, whylen, "%s must be 1..%d bytes", what, HD_AUTH_MAX_SUB);
    for (size_t i = 0; i < *len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return hd_auth_fail(why, whylen, "%s holds a control character", what);
    }
    return 0;
}

/* Copies s[0..len) and a NUL to *at, returns the copy and moves *at past it (NULL s: NULL). */
static char *carve(char **at, const char *s, size_t len)
{
    char *copy = *at;

    if (s == NULL)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    *at += len + 1;
    return copy;
}

/*
 * Builds an identity from f (its info_json ignored) and info (compact JSON text, NULL: none) in
 * one allocation: the record, its grants, then the grants' names, sub, jti and info, so that a
 * connect allocates once for its identity and frees once:
 *
 *   [ hd_identity_t | grants: pattern_t each | their names\0 ... | sub\0 | jti\0 | info\0 ]
 */
static int identity_build(hd_identity_t **out, const hd_identity_fields_t *f, const char *info,
                          char *why, size_t whylen)
{
    size_t n = f->n_subscribe + f->n_publish, sub_len, jti_len, info_len = 0, names = 0, plen;
    int is_prefix;
    hd_identity_t *id;
    char *at;

    *out = NULL;
    if (f->n_subscribe > HD_AUTH_MAX_GRANTS || f->n_publish > HD_AUTH_MAX_GRANTS)
        return hd_auth_fail(why, whylen, "more than %d channel patterns", HD_AUTH_MAX_GRANTS);
    if (f->exp < 0)
        return hd_auth_fail(why, whylen, "exp is negative");
    if (check_name("sub", f->sub, &sub_len, why, whylen) < 0 ||
        check_name("jti", f->jti, &jti_len, why, whylen) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *s = i < f->n_subscribe ? f->subscribe[i] : f->publish[i - f->n_subscribe];
        if (s == NULL)
            return hd_auth_fail(why, whylen, "a channel pattern is missing");
        if (pattern_check(s, strlen(s), &plen, &is_prefix, why, whylen) < 0)
            return -1;
        names += plen + 1;
    }
    if (info != NULL && (info_len = strlen(info)) > HD_AUTH_MAX_INFO)
        return hd_auth_fail(why, whylen, "info is larger than %d bytes", HD_AUTH_MAX_INFO);
    size_t bytes = sizeof(*id) + n * sizeof(pattern_t) + names + (f->sub ? sub_len + 1 : 0) +
                   (f->jti ? jti_len + 1 : 0) + (info ? info_len + 1 : 0);
    _Static_assert(sizeof(hd_identity_t) % _Alignof(pattern_t) == 0, "grants follow the record");
    id = hd_malloc(bytes);
    memset(id, 0, sizeof(*id));
    id->refs_ = 1;
    id->exp = f->exp;
    id->bytes = bytes;
    id->grants = n > 0 ? (pattern_t *)(id + 1) : NULL;
    at = (char *)(id + 1) + n * sizeof(pattern_t);
    for (size_t i = 0; i < n; i++) {
        const char *s = i < f->n_subscribe ? f->subscribe[i] : f->publish[i - f->n_subscribe];
        pattern_check(s, strlen(s), &plen, &is_prefix, NULL, 0);
        id->grants[i].name = carve(&at, s, plen);
        id->grants[i].len = (uint8_t)plen;
        id->grants[i].is_prefix = (uint8_t)is_prefix;
    }
    id->n_subscribe = (uint16_t)f->n_subscribe;
    id->n_publish = (uint16_t)f->n_publish;
    id->sub = carve(&at, f->sub, sub_len);
    id->jti = carve(&at, f->jti, jti_len);
    id->info = carve(&at, info, info_len);
    *out = id;
    return 0;
}

int hd_identity_new(hd_identity_t **out, const hd_identity_fields_t *f, char *why, size_t whylen)
{
    char *info = NULL;
    int rc;

    *out = NULL;
    if (f->info_json != NULL) {
        /* Checked and made compact here; hd_identity_from_claims has the object already. */
        json_error_t jerr;
        json_t *obj = json_loads(f->info_json, JSON_REJECT_DUPLICATES, &jerr);
        if (obj == NULL || !json_is_object(obj)) {
            json_decref(obj);
            return hd_auth_fail(why, whylen, "info must be a JSON object");
        }
        info = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(obj);
        if (info == NULL)
            return hd_auth_fail(why, whylen, "info is larger than %d bytes", HD_AUTH_MAX_INFO);
    }
    rc = identity_build(out, f, info, why, whylen);
    free(info);
    return rc;
}

/* The strings of a JSON array of patterns into list (borrowed from the array). */
static int pattern_list(json_t *arr, const char *what, const char ***list, size_t *n, char *why,
                        size_t whylen)
{
    size_t i;
    json_t *v;

    if (!json_is_array(arr))
        return hd_auth_fail(why, whylen, "channels.%s must be an array of strings", what);
    if (json_array_size(arr) > HD_AUTH_MAX_GRANTS)
        return hd_auth_fail(why, whylen, "more than %d channel patterns", HD_AUTH_MAX_GRANTS);
    *list = hd_calloc(json_array_size(arr) + 1, sizeof(**list));
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return hd_auth_fail(why, whylen, "channels.%s must be an array of strings", what);
        (*list)[i] = json_string_value(v);
    }
    *n = json_array_size(arr);
    return 0;
}

static int string_member(json_t *obj, const char *name, const char **out, char *why, size_t whylen)
{
    json_t *v = json_object_get(obj, name);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return hd_auth_fail(why, whylen, "%s must be a string", name);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return hd_auth_fail(why, whylen, "%s holds a NUL byte", name);
    *out = json_string_value(v);
    return 0;
}

int hd_identity_from_claims(hd_identity_t **out, json_t *root, char *why, size_t whylen)
{
    hd_identity_fields_t f;
    const char **sub_list = NULL, **pub_list = NULL;
    char *info = NULL;
    json_t *v;
    int rc = -1;

    *out = NULL;
    memset(&f, 0, sizeof(f));
    if (!json_is_object(root)) {
        hd_auth_fail(why, whylen, "claims are not a JSON object");
        goto done;
    }
    if (string_member(root, "sub", &f.sub, why, whylen) < 0 ||
        string_member(root, "jti", &f.jti, why, whylen) < 0)
        goto done;
    if ((v = json_object_get(root, "exp")) != NULL && !json_is_null(v)) {
        /* RFC 7519 NumericDate: seconds, possibly with a fraction (dropped). */
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e15) {
            hd_auth_fail(why, whylen, "exp must be a number of seconds");
            goto done;
        }
        f.exp = (int64_t)json_number_value(v);
    }
    if ((v = json_object_get(root, "channels")) != NULL && !json_is_null(v)) {
        if (json_is_array(v)) {
            if (pattern_list(v, "subscribe", &sub_list, &f.n_subscribe, why, whylen) < 0)
                goto done;
        } else if (json_is_object(v)) {
            json_t *s = json_object_get(v, "subscribe"), *p = json_object_get(v, "publish");
            if ((s != NULL &&
                 pattern_list(s, "subscribe", &sub_list, &f.n_subscribe, why, whylen) < 0) ||
                (p != NULL && pattern_list(p, "publish", &pub_list, &f.n_publish, why, whylen) < 0))
                goto done;
        } else {
            hd_auth_fail(
                why, whylen,
                "channels must be an object {\"subscribe\": [..], \"publish\": [..]} or an array");
            goto done;
        }
    }
    f.subscribe = sub_list;
    f.publish = pub_list;
    if ((v = json_object_get(root, "info")) != NULL && !json_is_null(v)) {
        if (!json_is_object(v)) {
            hd_auth_fail(why, whylen, "info must be a JSON object");
            goto done;
        }
        if ((info = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
            hd_auth_fail(why, whylen, "info is larger than %d bytes", HD_AUTH_MAX_INFO);
            goto done;
        }
    }
    rc = identity_build(out, &f, info, why, whylen);

done:
    free(info);
    free(sub_list);
    free(pub_list);
    return rc;
}

int hd_identity_from_json(hd_identity_t **out, const char *json, size_t json_len, char *why,
                          size_t whylen)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
    int rc;

    *out = NULL;
    if (root == NULL)
        return hd_auth_fail(why, whylen, "claims are not JSON");
    rc = hd_identity_from_claims(out, root, why, whylen);
    json_decref(root);
    return rc;
}

hd_identity_t *hd_identity_ref(hd_identity_t *id)
{
    __atomic_add_fetch(&id->refs_, 1, __ATOMIC_RELAXED);
    return id;
}

void hd_identity_unref(hd_identity_t *id)
{
    if (id != NULL && __atomic_sub_fetch(&id->refs_, 1, __ATOMIC_ACQ_REL) == 0)
        free(id); /* one block (identity_build) */
}

const char *hd_identity_sub(const hd_identity_t *id)
{
    return id != NULL ? id->sub : NULL;
}

const char *hd_identity_jti(const hd_identity_t *id)
{
    return id != NULL ? id->jti : NULL;
}

int64_t hd_identity_exp(const hd_identity_t *id)
{
    return id != NULL ? id->exp : 0;
}

const char *hd_identity_info(const hd_identity_t *id)
{
    return id != NULL ? id->info : NULL;
}

size_t hd_identity_footprint(const hd_identity_t *id)
{
    /* One block (identity_build), as glibc's malloc takes it: 16-byte chunks, an 8-byte header. */
    return (id->bytes + 8 + 15) & ~(size_t)15;
}

int hd_identity_granted(const hd_identity_t *id, int publish, const char *channel, size_t len)
{
    size_t from = publish ? id->n_subscribe : 0;
    size_t to = publish ? (size_t)id->n_subscribe + id->n_publish : id->n_subscribe;

    for (size_t i = from; i < to; i++) {
        const pattern_t *p = &id->grants[i];
        if (hd_auth_pattern_match(p->name, p->len, p->is_prefix, channel, len))
            return 1;
    }
    return 0;
}
