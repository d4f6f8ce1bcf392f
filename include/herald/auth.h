/* SPDX-License-Identifier: MIT */
/*
 * auth.h: who may do what (docs/auth.md). Three things, used by the transports and the publish
 * API at connect, subscribe and publish time only (never per delivered message):
 *
 *   hd_identity_t  who a connection is: an immutable, refcounted record (sub, jti, exp, the
 *                  channels it was granted, an info object), built from a verified JWT or from
 *                  plain fields (a ticket). NULL everywhere means "anonymous".
 *   hd_auth_t      the node's policy, built once per configuration snapshot (the conf owns it,
 *                  conf->auth): the JWT key (an HMAC secret, a PEM public key or a JWKS file) with
 *                  its pinned algorithm, the iss/aud checks, the clock skew, and the channel rules.
 *   hd_auth_check  the one decision: may this identity (or anonymous) subscribe to / publish to /
 *                  read the history of this channel? OK, 401 or 403 with a short reason.
 *
 *      token --hd_auth_verify--> hd_identity_t (ref kept by the connection) --+
 *                                                                             v
 *      channel, action ---------------------------------------------> hd_auth_check -> OK/401/403
 *
 * Auth is "on" when a JWT key (auth_jwt_secret, auth_jwt_public_key or auth_jwks) or any
 * channel_rule is configured; when off, hd_auth_check allows everything, as herald always did.
 *
 * Threads: an hd_auth_t is immutable after hd_auth_new and may be read by every worker at once.
 * Identities are immutable; their refcount is atomic, so a ticket store or a revocation index on
 * another thread may hold references too. Nothing here does I/O except hd_auth_new (key files).
 * This module depends on core and the libraries only (libjwt, OpenSSL, jansson), never on a
 * transport, HTTP or the network layer.
 */
#ifndef HERALD_AUTH_H
#define HERALD_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* ---- identity ------------------------------------------------------------------------------- */

typedef struct hd_identity_s hd_identity_t;

/* Limits of one identity (a token over them is refused, an hd_identity_new call too). */
#define HD_AUTH_MAX_GRANTS 256  /* patterns in each of the subscribe and publish lists */
#define HD_AUTH_MAX_SUB    255  /* bytes of sub, and of jti */
#define HD_AUTH_MAX_INFO   4096 /* bytes of the serialized info object */
#define HD_AUTH_MAX_TOKEN  8192 /* bytes of a token */

/* The fields of an identity. Strings are copied; NULL means absent. */
typedef struct hd_identity_fields_s {
    const char *sub;              /* the user; NULL: anonymous (no user, grants still apply) */
    const char *jti;              /* the token's id (revocation); NULL: none */
    int64_t exp;                  /* unix seconds after which it is no longer valid; 0: never */
    const char *const *subscribe; /* channel patterns it may subscribe to */
    size_t n_subscribe;
    const char *const *publish; /* channel patterns it may publish to */
    size_t n_publish;
    const char *info_json; /* a JSON object as text (re-serialized compactly); NULL */
} hd_identity_fields_t;

/*
 * A channel pattern is an exact channel name ("news"), or a prefix followed by '*' ("room:*"
 * matches "room:" and every name starting with it; "*" alone matches every channel). The name
 * or prefix uses the channel alphabet [A-Za-z0-9._:@-], at most 128 bytes.
 */

/*
 * Makes an identity from plain fields (one reference). Returns 0, or -1 with a short reason in
 * why (a pattern that is not a pattern, too many grants, info not a JSON object, a string too
 * long or with a NUL). Used by hd_auth_verify and by anything else that vouches for a user (a
 * single-use ticket, a test).
 */
int hd_identity_new(hd_identity_t **out, const hd_identity_fields_t *f, char *why, size_t whylen);

/*
 * Makes an identity from a JSON object with the claims' shape (a JWT payload, a ticket):
 *     {"sub": "42", "jti": "abc", "exp": 1767225600,
 *      "channels": {"subscribe": ["news", "room:*"], "publish": ["room:42"]},
 *      "info": {"name": "Ann"}}
 * Every member is optional; "channels" may also be an array, meaning subscribe patterns only;
 * other members are ignored. Returns 0, or -1 with a reason in why (wrong type of a member,
 * as hd_identity_new). json_len is the text's length (it need not be NUL-terminated).
 */
int hd_identity_from_json(hd_identity_t **out, const char *json, size_t json_len, char *why,
                          size_t whylen);

hd_identity_t *hd_identity_ref(hd_identity_t *id);
void hd_identity_unref(hd_identity_t *id); /* NULL is fine */

/* The fields (NULL identity: anonymous, all NULL / 0). Strings live as long as the identity. */
const char *hd_identity_sub(const hd_identity_t *id);
const char *hd_identity_jti(const hd_identity_t *id);
int64_t hd_identity_exp(const hd_identity_t *id);
const char *hd_identity_info(const hd_identity_t *id); /* compact JSON object text, or NULL */

/* ---- policy --------------------------------------------------------------------------------- */

/* What a rule lets do, per namespace. */
typedef enum {
    HD_AUTH_SUB_NONE = 0, /* nobody subscribes (the default for channels no rule covers) */
    HD_AUTH_SUB_ANY,      /* anyone, anonymous too */
    HD_AUTH_SUB_AUTH,     /* any connection with a valid identity */
    HD_AUTH_SUB_GRANT,    /* only identities whose subscribe patterns match the channel */
    HD_AUTH_SUB_USER,     /* only the channel PREFIX<sub>, for the identity's own sub */
    HD_AUTH_SUB_HOOK,     /* the application's backend decides (authorize_hook) */
} hd_auth_sub_t;

typedef enum {
    HD_AUTH_PUB_KEY = 0,    /* the backend key only (publish_key); clients never */
    HD_AUTH_PUB_GRANT,      /* identities whose publish patterns match the channel */
    HD_AUTH_PUB_SUBSCRIBER, /* whoever this rule lets subscribe to the channel */
} hd_auth_pub_t;

/* One channel_rule line: PATTERN [subscribe=..] [publish=..] [history=on|off]
 * [presence=on|off]. */
typedef struct hd_auth_rule_s {
    char pattern[130]; /* as written: a name, or a prefix and '*' */
    uint8_t len;       /* of the name or prefix (without the '*') */
    uint8_t is_prefix;
    uint8_t subscribe; /* hd_auth_sub_t */
    uint8_t publish;   /* hd_auth_pub_t */
    uint8_t history;   /* 1: past messages may be read (polls, resume) by those who subscribe */
    uint8_t presence;  /* 1: stream subscribers are presence members (docs/chat.md) */
} hd_auth_rule_t;

/*
 * Parses one channel_rule's words (argv[0] the pattern, then key=value options) into *rule.
 * Defaults: subscribe=grant publish=key history=on. Returns 0, or -1 with a reason in why.
 */
int hd_auth_rule_parse(hd_auth_rule_t *rule, int argc, const char *const *argv, char *why,
                       size_t whylen);

typedef struct hd_auth_s hd_auth_t;

/* What hd_auth_new is built from (the conf's auth_* directives and channel_rule lines). */
typedef struct hd_auth_params_s {
    const char *jwt_alg;        /* "HS256" ... "ES512"; NULL: taken from the key (JWKS, PEM) */
    const char *jwt_secret;     /* HMAC secret (HS*) */
    const char *jwt_public_key; /* path of a PEM public key (RS*, ES*) */
    const char *jwks;           /* path of a JWKS file (keys selected by kid) */
    const char *issuer;         /* required "iss"; NULL: not checked */
    const char *audience;       /* required in "aud" (a string or an array); NULL: not checked */
    uint64_t clock_skew_ms;     /* allowance on exp, nbf and iat */
    const hd_auth_rule_t *rules;
    size_t n_rules;
} hd_auth_params_t;

/*
 * Builds the policy: reads and checks the key (at most one of secret, public key, JWKS), pins
 * the algorithm, copies the rules. Returns 0 with *out set, or -1 with a one-line reason in err
 * naming the directive ("auth_jwks /etc/herald/jwks.json: key 2: unknown kty \"OKP\"").
 */
int hd_auth_new(hd_auth_t **out, const hd_auth_params_t *p, char *err, size_t errlen);
void hd_auth_free(hd_auth_t *a); /* NULL is fine */

/* 1 when auth is on (a key or a rule is configured); NULL: off. */
int hd_auth_enabled(const hd_auth_t *a);
/* 1 when tokens can be verified (a key is configured). */
int hd_auth_has_key(const hd_auth_t *a);
/*
 * Writes a one-line summary of the policy for the log ("on: HS256 secret, 4 channel rules";
 * "off") into buf. Returns 1 when the policy is probably not what the operator meant (a key
 * but no channel_rule: every channel is closed to subscribers), with that said in buf, else 0.
 */
int hd_auth_describe(const hd_auth_t *a, char *buf, size_t len);

/* ---- verification --------------------------------------------------------------------------- */

/* Why a credential was refused (hd_auth_verify's return), each with its HTTP status and its
 * WebSocket close code (docs/protocol.md). */
typedef enum {
    HD_AUTH_VERIFIED = 0,
    HD_AUTH_EXPIRED = 1, /* exp passed (beyond the skew): 401, close 4001 */
    HD_AUTH_INVALID = 2, /* anything else wrong with it: 401, close 4401 */
    HD_AUTH_NO_KEY = 3,  /* a token came but no key is configured: 401, close 4401 */
} hd_auth_verify_t;

/*
 * Verifies a compact JWS (header.payload.signature) against the configured key at time now
 * (unix seconds): the alg of the header must be the key's pinned alg (alg none, and a token
 * naming another alg, HS256 against an RSA key say, are refused before any signature check),
 * the kid selects the JWKS key, then the signature (libjwt), then exp, nbf, iat (with the
 * skew), iss, aud, and the claims' shape (hd_identity_from_json). On success returns
 * HD_AUTH_VERIFIED and one reference in *out. Otherwise *out is NULL, the return says why, and
 * why holds a short human reason that never quotes the token ("token expired", "alg HS256 is
 * not the configured RS256").
 */
hd_auth_verify_t hd_auth_verify(const hd_auth_t *a, const char *token, size_t len, int64_t now,
                                hd_identity_t **out, char *why, size_t whylen);

/* ---- the verified-token cache (cache.c; docs/auth.md, "The verified-token cache") ------- */

/*
 * A worker's tokens verified lately, so that a client reconnecting with the token it holds
 * skips the signature, the claims' JSON and the identity's allocations. One per worker, used by
 * its thread only (no lock). Entries are keyed by the SHA-256 of the whole token (the token is
 * not kept), hold the identity until the token's exp, and never answer what a fresh
 * verification would refuse: exp, nbf and iat are checked against now at every hit, and every
 * entry is dropped when the policy changes (a reload: keys, JWKS, iss, aud, skew). The revoked
 * set is not asked here: the caller asks it after every answer, cached or not.
 */
typedef struct hd_auth_cache_s hd_auth_cache_t;

hd_auth_cache_t *hd_auth_cache_new(void);
void hd_auth_cache_free(hd_auth_cache_t *c); /* NULL is fine */
/*
 * hd_auth_verify through the cache: the same answers, reasons and reference in *out. *hit is 1
 * when the answer came from an entry (no signature checked), else 0 (verified, then kept when
 * it verified). The cache holds at most max_entries entries and max_bytes bytes (entries and
 * the identities they keep), evicting the least recently used; max_entries 0, or a NULL c,
 * verifies without it. An identity larger than an eighth of max_bytes is not kept.
 */
hd_auth_verify_t hd_auth_cache_verify(hd_auth_cache_t *c, const hd_auth_t *a, const char *token,
                                      size_t len, int64_t now, size_t max_entries, size_t max_bytes,
                                      hd_identity_t **out, int *hit, char *why, size_t whylen);
/* Drops every entry. */
void hd_auth_cache_flush(hd_auth_cache_t *c);
/* Entries held, and the bytes charged for them (NULL: 0). */
size_t hd_auth_cache_count(const hd_auth_cache_t *c);
size_t hd_auth_cache_bytes(const hd_auth_cache_t *c);

/* ---- revocation (revoked.c; docs/auth.md, "Revocation") ---------------------------------- */

/*
 * The revoked set: subs and token ids refused until a time (POST /admin/revoke). One per
 * process, shared by every worker and the Redis bridge, behind a mutex of its own: it is read
 * when a credential is verified (a connect, an in-place refresh, the /ws auth message), never
 * per delivered message, and written once per revocation. An empty set answers without taking
 * the lock (an atomic count), so a node that never revokes pays one relaxed load per connect.
 * Expired entries are dropped as they are met (a min-heap by expiry), so the set holds only live
 * revocations; its size is bounded by the max given to each add (max_revocations).
 */
typedef struct hd_revset_s hd_revset_t;

enum { HD_REVOKE_SUB = 1, HD_REVOKE_JTI = 2 }; /* what an entry names */

hd_revset_t *hd_revset_new(void);
void hd_revset_free(hd_revset_t *s); /* NULL is fine */
/*
 * Adds (or extends) the revocation of a sub or a jti (key[0..len), 1..HD_AUTH_MAX_SUB bytes) until
 * until_ms (unix milliseconds) at time now_ms. An entry already there keeps the later of the two
 * expiries. Returns 1 when the key was not revoked before (the moment to end its live
 * connections), 0 when it already was, or -1 when the set holds max live entries and this key is
 * not one of them (nothing changed), or the key's length or until_ms is out of range.
 */
int hd_revset_add(hd_revset_t *s, int kind, const char *key, size_t len, int64_t until_ms,
                  int64_t now_ms, size_t max);
/* 1 when sub (NULL: none) or jti (NULL: none) is revoked at now_ms, else 0. */
int hd_revset_has(hd_revset_t *s, const char *sub, const char *jti, int64_t now_ms);
/* Live entries at now_ms (the expired ones are dropped first). */
size_t hd_revset_count(hd_revset_t *s, int64_t now_ms);
/* The expiry (unix ms) of a live entry, or 0 when the key is not revoked at now_ms. */
int64_t hd_revset_until(hd_revset_t *s, int kind, const char *key, size_t len, int64_t now_ms);

/* The process's set (set once at start by main, before the workers and the broker run, and
 * cleared after they are gone, as hd_broker_set). */
void hd_auth_revocations_set(hd_revset_t *s);
hd_revset_t *hd_auth_revocations(void);

/*
 * 1 when a credential of user sub (NULL: none) or with token id jti (NULL: none) is in the
 * process's revoked set now, else 0 (also when no set is installed). Asked by every
 * verification of a token (hd_tp_verify_token: connects, refreshes, the /ws auth message).
 */
int hd_auth_revoked(const char *sub, const char *jti);

/* ---- decisions ------------------------------------------------------------------------------ */

typedef enum {
    HD_AUTH_SUBSCRIBE,
    HD_AUTH_PUBLISH, /* a client's publish; a publish with the backend key never asks */
    HD_AUTH_HISTORY, /* reading past messages: a short poll, a resume with since/Last-Event-ID */
} hd_auth_action_t;

typedef enum {
    HD_AUTH_OK = 0,
    /* subscribe=hook: the backend must be asked (authorize_hook); the caller asks it, or treats
     * this as a refusal where it cannot */
    HD_AUTH_ASK_HOOK = 1,
    HD_AUTH_UNAUTHENTICATED = 401, /* an identity would be needed and there is none */
    HD_AUTH_FORBIDDEN = 403,       /* the identity (or anonymous) may not do this here */
} hd_auth_result_t;

/*
 * Decides whether identity id (NULL: anonymous) may do `action` on channel[0..len). The rule is
 * the one with the exact name, else the longest matching prefix; no rule: nothing but the
 * backend key's publishes. A NULL or disabled policy allows everything. A subscribe or a
 * history read under subscribe=hook is HD_AUTH_ASK_HOOK (after history=off, which still
 * refuses). *reason (may be NULL)
 * receives a static sentence for a refusal ("channel not granted by the token"). Cost: a scan
 * of the rules and of the identity's grants, no allocation.
 */
hd_auth_result_t hd_auth_check(const hd_auth_t *a, const hd_identity_t *id, const char *channel,
                               size_t len, hd_auth_action_t action, const char **reason);

/* The rule hd_auth_check applies to a channel, or NULL (none matches, or no policy). */
const hd_auth_rule_t *hd_auth_rule_for(const hd_auth_t *a, const char *channel, size_t len);
/* 1 when the channel's rule tracks presence (presence=on), else 0 (no rule, auth off). */
int hd_auth_presence(const hd_auth_t *a, const char *channel, size_t len);

/* ---- single-use tickets (ticket.c; docs/auth.md, "Tickets") ---------------------------------- */

/*
 * A ticket is HD_TICKET_BYTES from OpenSSL's RAND_bytes written in base64url (no padding): an
 * opaque credential the backend obtains with POST /auth/ticket and a browser spends once, in a
 * connect URL (?ticket=) or the first /ws message. Stores (the brokers: HD_BREQ_TICKET_*) keep
 * its claims under hd_ticket_key, never the ticket itself.
 */
#define HD_TICKET_BYTES      24    /* 192 random bits */
#define HD_TICKET_LEN        32    /* characters of a ticket */
#define HD_TICKET_KEY_LEN    43    /* characters of its key: base64url of its SHA-256 */
#define HD_TICKET_MAX_CLAIMS 16384 /* bytes of the claims one ticket stands for */

/* A parsed POST /auth/ticket body. The all-zero value is empty. */
typedef struct hd_ticket_request_s {
    char *claims; /* compact JSON object {"sub","jti","channels","info"} as given (malloc'd);
                   * hd_identity_from_json builds the connection's identity from it */
    size_t claims_len;
    uint64_t ttl_ms; /* how long the ticket may wait to be used */
} hd_ticket_request_t;

/*
 * Parses a POST /auth/ticket body: a JSON object with the optional members sub, jti, channels
 * (the shape of the JWT claim), info (an object) and ttl (seconds, a number > 0; absent:
 * default_ttl_ms), and nothing else. The claims must make a valid identity (hd_identity_new's
 * rules) of at most HD_TICKET_MAX_CLAIMS bytes, and ttl must not pass max_ttl_ms. Returns 0 with
 * *out filled (hd_ticket_request_dispose frees it), or -1 with a one-line reason for the client
 * in why (not JSON, not an object, an unknown member, a member of the wrong type, a pattern
 * that is not one, too many grants, ttl out of range, claims too large) and *out empty.
 */
int hd_ticket_request_parse(const char *body, size_t len, uint64_t default_ttl_ms,
                            uint64_t max_ttl_ms, hd_ticket_request_t *out, char *why,
                            size_t whylen);
void hd_ticket_request_dispose(hd_ticket_request_t *r);
/* Draws a new ticket into out (NUL-terminated). Returns 0, or -1 when RAND_bytes fails. */
int hd_ticket_new(char out[HD_TICKET_LEN + 1]);
/* 1 when s[0..len) has a ticket's shape (HD_TICKET_LEN base64url characters), else 0. */
int hd_ticket_valid(const char *s, size_t len);
/* The key a store keeps the ticket (HD_TICKET_LEN characters, valid) under (NUL-terminated). */
void hd_ticket_key(const char *ticket, char out[HD_TICKET_KEY_LEN + 1]);

#endif
