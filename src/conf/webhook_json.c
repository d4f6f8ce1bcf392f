/* SPDX-License-Identifier: MIT */
/*
 * webhook_json.c: a webhook endpoint registered through the admin API, read from its JSON
 * (webhook_def.h, hd_webhook_def_from_json): the body of POST /admin/webhooks once the API
 * filled in its id and secret, and the same text as Redis keeps it for every node. The JSON is
 * read by jansson; its members become the words of a webhook line, so an endpoint registered
 * this way passes the very checks of the webhook directive (webhook_def.c). Pure: no I/O.
 */
#include "herald/webhook_def.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* One printable line in why; returns -1. */
static int fail(char *why, size_t whylen, const char *msg, const char *name)
{
    snprintf(why, whylen, "%s%s", msg, name);
    for (char *p = why; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    return -1;
}

/* A string member without NUL, of 1..max bytes: its value, or NULL. */
static const char *str_of(json_t *v, size_t max)
{
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > max || strlen(s) != n)
        return NULL;
    return s;
}

/*
 * Writes "key=" and the strings of v (an array of 1..max_items strings of at most max_len
 * bytes without ',', or, when one_ok, one such string) joined by ',' into out[cap]. 0, or -1
 * with a reason.
 */
static int join(json_t *v, const char *key, size_t max_items, size_t max_len, int one_ok, char *out,
                size_t cap, char *why, size_t whylen)
{
    char msg[160];
    size_t at = (size_t)snprintf(out, cap, "%s=", key);
    json_t *one = one_ok && json_is_string(v) ? v : NULL;
    size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (n == 0 || n > max_items) {
        snprintf(msg, sizeof(msg), "\"%s\" must be %s1..%zu strings", key,
                 one_ok ? "a string or an array of " : "an array of ", max_items);
        return fail(why, whylen, msg, "");
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = str_of(one ? one : json_array_get(v, i), max_len);
        if (!s || strchr(s, ',')) {
            snprintf(msg, sizeof(msg),
                     "each of \"%s\" must be a string of 1..%zu bytes without ','", key, max_len);
            return fail(why, whylen, msg, "");
        }
        size_t len = strlen(s);
        if (at + len + 2 > cap)
            return fail(why, whylen, "too long: ", key);
        if (i)
            out[at++] = ',';
        memcpy(out + at, s, len + 1);
        at += len;
    }
    return 0;
}

int hd_webhook_def_from_json(hd_webhook_def_t *out, const char *text, size_t len, char *why,
                             size_t whylen)
{
    json_error_t jerr;
    char name[HD_WEBHOOK_NAME_MAX + 8], channels[HD_WEBHOOK_MAX_PATTERNS * 132 + 16];
    char secrets[HD_WEBHOOK_MAX_SECRETS * 100 + 16], events[160], pipeline[32];
    const char *argv[6];
    int argc = 0, rc = -1;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(why, whylen, "the body is not JSON: ", jerr.text);
    if (!json_is_object(root)) {
        fail(why, whylen, "the body must be a JSON object", "");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "id") && strcmp(key, "url") && strcmp(key, "channels") &&
            strcmp(key, "events") && strcmp(key, "secret") && strcmp(key, "pipeline")) {
            char k[48];
            snprintf(k, sizeof(k), "%.40s", key);
            fail(why, whylen,
                 "unknown member (expected id, url, channels, events, secret, pipeline): ", k);
            goto out;
        }
    }
    const char *url = str_of(json_object_get(root, "url"), HD_WEBHOOK_URL_MAX);
    const char *id = str_of(json_object_get(root, "id"), HD_WEBHOOK_NAME_MAX);
    if (!url) {
        fail(why, whylen, "\"url\" must be a string of 1..512 bytes (http:// or https://)", "");
        goto out;
    }
    if (!id) {
        fail(why, whylen, "\"id\" must be a string of 1..64 characters of A-Z a-z 0-9 . _ -", "");
        goto out;
    }
    argv[argc++] = url;
    snprintf(name, sizeof(name), "name=%s", id);
    argv[argc++] = name;
    if ((v = json_object_get(root, "channels")) != NULL) {
        if (join(v, "channels", HD_WEBHOOK_MAX_PATTERNS, 129, 0, channels, sizeof(channels), why,
                 whylen) < 0)
            goto out;
        argv[argc++] = channels;
    }
    if ((v = json_object_get(root, "secret")) == NULL) {
        fail(why, whylen, "\"secret\" is required: every delivery is signed", "");
        goto out;
    }
    if (join(v, "secret", HD_WEBHOOK_MAX_SECRETS, 94, 1, secrets, sizeof(secrets), why, whylen) < 0)
        goto out;
    argv[argc++] = secrets;
    if ((v = json_object_get(root, "events")) != NULL) {
        if (join(v, "events", 5, 20, 0, events, sizeof(events), why, whylen) < 0)
            goto out;
        argv[argc++] = events;
    }
    if ((v = json_object_get(root, "pipeline")) != NULL) {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
        if (n < 1 || n > HD_WEBHOOK_PIPELINE_MAX) {
            fail(why, whylen, "\"pipeline\" must be an integer in 1..256", "");
            goto out;
        }
        snprintf(pipeline, sizeof(pipeline), "pipeline=%d", (int)n);
        argv[argc++] = pipeline;
    }
    rc = hd_webhook_def_parse(out, 0, argc, argv, why, whylen);
out:
    json_decref(root);
    return rc;
}
