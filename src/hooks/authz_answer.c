/* SPDX-License-Identifier: MIT */
/*
 * authz_answer.c: what the application's backend answered to an authorize question, read into a
 * verdict (internal.h hk_authz_answer). Pure: no I/O; the body comes from the client (at most
 * 64 KiB, response.c). Fuzzed by tests/fuzz/fuzz_authz_answer.c. The contract
 * (docs/webhooks.md, "Backend hooks"):
 *
 *   2xx {"allow":true}                                   allowed, the request's own identity
 *   2xx {"allow":true,"sub":..,"info":{..},"channels":{..},"exp":..}
 *                                                        allowed, as that identity
 *   2xx {"allow":false,"reason":"..","status":401|403}   refused (403 unless status says 401)
 *   401 or 403 (a JSON body's "reason" is used)          refused
 *   anything else (other statuses, a 2xx that is not such an object)  no usable answer
 */
#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_DENY "refused by the application"

/* Copies s (NULL: dflt) into out as one printable line, cut to fit. */
static void set_reason(char *out, size_t cap, const char *s, size_t len, const char *dflt)
{
    if (!s) {
        s = dflt;
        len = strlen(dflt);
    }
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++)
        out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[n] = '\0';
}

/* No usable answer: "the backend answered STATUS" (what is NULL), or STATUS's body is not what. */
static void verdict_error(hk_verdict_t *v, int status, const char *what)
{
    v->kind = HD_HOOKS_ERROR;
    if (what)
        snprintf(v->reason, sizeof(v->reason), "the backend's %d answer is not %s", status, what);
    else
        snprintf(v->reason, sizeof(v->reason), "the backend answered %d", status);
}

/* The "reason" member of o, if a string. */
static void deny_from(hk_verdict_t *v, int status, json_t *o)
{
    json_t *r = o ? json_object_get(o, "reason") : NULL;
    v->kind = HD_HOOKS_DENY;
    v->status = status;
    set_reason(v->reason, sizeof(v->reason), json_string_value(r), json_string_length(r),
               DEFAULT_DENY);
}

void hk_authz_answer(int status, const char *body, size_t len, hk_verdict_t *v)
{
    json_error_t jerr;
    json_t *o = NULL;

    memset(v, 0, sizeof(*v));
    if (body && len)
        o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    if (status == 401 || status == 403) {
        deny_from(v, status, o);
        goto out;
    }
    if (status < 200 || status > 299) {
        verdict_error(v, status, NULL);
        goto out;
    }
    json_t *allow = o ? json_object_get(o, "allow") : NULL;
    if (!json_is_boolean(allow)) {
        verdict_error(v, status, "{\"allow\":true|false,...}");
        goto out;
    }
    if (json_is_false(allow)) {
        json_t *st = json_object_get(o, "status");
        deny_from(v, json_is_integer(st) && json_integer_value(st) == 401 ? 401 : 403, o);
        goto out;
    }
    static const char *const id_members[] = {"sub", "info", "channels", "exp", "jti"};
    int has_id = 0;
    for (size_t i = 0; i < sizeof(id_members) / sizeof(id_members[0]); i++)
        has_id |= json_object_get(o, id_members[i]) != NULL;
    v->kind = HD_HOOKS_ALLOW;
    if (has_id) {
        char why[160];
        if (hd_identity_from_json(&v->id, body, len, why, sizeof(why)) < 0) {
            v->kind = HD_HOOKS_ERROR;
            v->id = NULL;
            snprintf(v->reason, sizeof(v->reason), "the backend's identity is unusable: %s", why);
            set_reason(v->reason, sizeof(v->reason), v->reason, strlen(v->reason), "");
        }
    }
out:
    json_decref(o);
}
