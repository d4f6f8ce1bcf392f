/* SPDX-License-Identifier: MIT */
/*
 * webhook_def.h: one webhook endpoint as the conf's `webhook` directive defines it
 * (docs/webhooks.md):
 *
 *     webhook URL [name=NAME] [channels=PATTERN,...] [secret=whsec_...[,whsec_...]]
 *                 [events=message.published,channel.occupied,channel.vacated,member.added,
 *                         member.removed] [pipeline=N]
 *
 * The value's syntax and its parsed form, shared by the conf loader (which checks the directive)
 * and the webhook sender (src/hooks/, which delivers); this module depends on neither. Pure: no
 * I/O, no allocation. The struct is flat (fixed arrays), so two conf snapshots compare with
 * memcmp.
 */
#ifndef HERALD_WEBHOOK_DEF_H
#define HERALD_WEBHOOK_DEF_H

#include <stddef.h>
#include <stdint.h>

#define HD_WEBHOOK_URL_MAX      512 /* longest URL */
#define HD_WEBHOOK_NAME_MAX     64  /* longest name= */
#define HD_WEBHOOK_MAX_PATTERNS 16  /* channels= patterns of one endpoint */
#define HD_WEBHOOK_PATTERN_SIZE 130 /* bytes of one channel pattern, with its NUL */
#define HD_WEBHOOK_MAX_SECRETS  4   /* secret= keys of one endpoint (rotation) */
#define HD_WEBHOOK_KEY_MAX      64  /* decoded bytes of one whsec_ secret */
#define HD_WEBHOOK_KEY_MIN      16
#define HD_WEBHOOK_PIPELINE_MAX 256 /* pipeline= at most (webhook_concurrency's bound) */

/* Events an endpoint may ask for (events=). */
enum {
    HD_WEBHOOK_EV_MESSAGE =
        1 << 0, /* "message.published": a message published to a matching channel */
    HD_WEBHOOK_EV_OCCUPIED = 1 << 1, /* "channel.occupied": a channel got its first subscriber */
    HD_WEBHOOK_EV_VACATED = 1 << 2,  /* "channel.vacated": its last subscriber left */
    HD_WEBHOOK_EV_MEMBER_ADDED = 1 << 3,   /* "member.added": a presence member joined */
    HD_WEBHOOK_EV_MEMBER_REMOVED = 1 << 4, /* "member.removed": its last connection left */
};

typedef struct hd_webhook_def_s {
    char name[HD_WEBHOOK_NAME_MAX + 1];  /* [A-Za-z0-9._-]; "webhook-<k>" when not given */
    char url[HD_WEBHOOK_URL_MAX + 1];    /* as written */
    unsigned is_tls : 1;                 /* https */
    char host[256];                      /* name or numeric address, without IPv6 brackets */
    uint16_t port;                       /* 80 / 443 when not written */
    char target[HD_WEBHOOK_URL_MAX + 1]; /* path and query, "/" when not written */
    char host_header[300];               /* Host: value (host[:port], IPv6 in brackets) */
    char patterns[HD_WEBHOOK_MAX_PATTERNS]
                 [HD_WEBHOOK_PATTERN_SIZE]; /* channel patterns: a name, or prefix and '*' */
    size_t n_patterns;                      /* "*" when not given */
    uint8_t keys[HD_WEBHOOK_MAX_SECRETS][HD_WEBHOOK_KEY_MAX]; /* decoded secrets, in order */
    size_t key_lens[HD_WEBHOOK_MAX_SECRETS];
    size_t n_keys;
    unsigned events; /* HD_WEBHOOK_EV_*; "message.published" when not given */
    /* pipeline=: requests written on one connection before their answers came (HTTP/1.1
     * pipelining, the receiver's opt-in); 1 when not given (0, in a def not parsed here: 1) */
    unsigned pipeline;
} hd_webhook_def_t;

/*
 * Parses one webhook line's words (argv[0] the URL, then key=value options) into *out (zeroed
 * first); index is the endpoint's position (1-based), which names it when name= is not given.
 * Returns 0, or -1 with a one-line reason in why (never containing a secret): a URL that is not
 * http(s)://HOST[:PORT][/PATH] (no user info, no fragment, printable ASCII, at most 512 bytes),
 * an unknown option, a bad name, pattern or event, more than 16 patterns or 4 secrets, a secret
 * that is not whsec_ followed by the base64 of 16..64 bytes, a pipeline= that is not 1..256, or
 * no secret at all (every delivery is signed).
 */
int hd_webhook_def_parse(hd_webhook_def_t *out, unsigned index, int argc, const char *const *argv,
                         char *why, size_t whylen);

/*
 * The option word arg ("key=value") among keys[0..n) (n at most 32), for the directives built on
 * this one (webhook, authorize_hook, notify_hook): its index, with *seen marking it, and *value
 * its value; or -1 with a one-line reason in why (an unknown option, naming expected, or one
 * given twice).
 */
int hd_def_option(const char *const *keys, size_t n, const char *arg, unsigned *seen,
                  const char **value, const char *expected, char *why, size_t whylen);

/*
 * Reads a registration of the admin API into *out (webhook_json.c, with jansson):
 *   {"id": NAME, "url": URL, "channels": [PATTERN, ...], "events": [EVENT, ...],
 *    "secret": "whsec_..." or ["whsec_...", ...], "pipeline": N}
 * id (the name), url and secret required, channels (["*"]), events (["message.published"]) and
 * pipeline (1) optional, no other member; the checks of the webhook directive. Returns 0, or -1
 * with a one-line reason in why (never a secret): not JSON, not an object, a duplicate or unknown
 * member, a member of the wrong type, or what hd_webhook_def_parse refuses.
 */
int hd_webhook_def_from_json(hd_webhook_def_t *out, const char *json, size_t len, char *why,
                             size_t whylen);

/* 1 if channel[0..len) matches one of def's patterns ("news", "room:*", "*"). */
int hd_webhook_def_matches(const hd_webhook_def_t *def, const char *channel, size_t len);

/* The same for n patterns kept as hd_webhook_def_t keeps them (the hooks' filter copies them). */
int hd_webhook_patterns_match(const char (*patterns)[HD_WEBHOOK_PATTERN_SIZE], size_t n,
                              const char *channel, size_t len);

#endif
