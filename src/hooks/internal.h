/* SPDX-License-Identifier: MIT */
/*
 * internal.h: what the webhook sender's files share, private to src/hooks (hooks.h says who
 * calls whom). Everything here runs on the hooks thread's loop, except the atomics in
 * hd_hooks_stats_t, which other threads read.
 */
#ifndef HERALD_HOOKS_INTERNAL_H
#define HERALD_HOOKS_INTERNAL_H

#include "herald/buf.h"
#include "herald/common.h"
#include "herald/heap.h"
#include "herald/hooks.h"
#include "herald/wbatch.h"
#include "herald/worker.h"

#include <hiredis/hiredis.h>
#include <llhttp.h>
#include <openssl/ssl.h>
#include <uv.h>

/* Counter updates by the hooks thread, read by anyone. */
#define HK_ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)
#define HK_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* Wall-clock milliseconds (event timestamps, webhook-timestamp, ages shown to operators). */
static inline uint64_t hk_wall_ms(void)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- response.c: one HTTP/1.x response read with llhttp (pure: no I/O) ---- */

#define HK_RESPONSE_BODY_MAX (64 * 1024) /* body bytes read; past it the answer is refused */

enum { HK_RESP_MORE = 0, HK_RESP_DONE = 1, HK_RESP_ERROR = -1 };

typedef struct hk_response_s {
    llhttp_t parser;
    llhttp_settings_t settings;
    int status;         /* of the final (non-1xx) response, once its head is complete */
    uint8_t has_head;   /* the final response's head is complete */
    uint8_t is_done;    /* the final response is complete */
    uint8_t keep_alive; /* the connection may carry another request after it */
    uint8_t has_bytes;  /* any byte was fed */
    uint8_t is_failed;  /* HK_RESP_ERROR was returned: it stays so */
    uint8_t keep_body;  /* set after init: the body is kept in body[0..body_bytes) */
    size_t body_bytes;
    /* the final response's Retry-After value ("" when absent or longer than 39 bytes) */
    char retry_after[40];
    uint8_t retry_after_len; /* past sizeof(retry_after) - 1: too long, ignored */
    uint8_t name_len;        /* of the header name being read, in name[] (past 15: none) */
    uint8_t is_retry_after;  /* the value being read is Retry-After's */
    char name[16];
    char *body; /* kept body (keep_body), malloc'd, NUL-terminated; hk_response_take_body */
} hk_response_t;

/* Ready to read one response (to a POST); frees nothing (hk_response_dispose does). */
void hk_response_init(hk_response_t *r);
/* Frees a kept body. */
void hk_response_dispose(hk_response_t *r);
/* The kept body (malloc'd, NUL-terminated, its length in *len), now the caller's; NULL when
 * there is none. */
char *hk_response_take_body(hk_response_t *r, size_t *len);
/* Feeds data[0..len): HK_RESP_MORE (more needed), HK_RESP_DONE (complete: r->status,
 * r->keep_alive), HK_RESP_ERROR (not HTTP/1.x, bytes after the response, a body past
 * HK_RESPONSE_BODY_MAX). After DONE or ERROR, feeding again returns ERROR. */
int hk_response_feed(hk_response_t *r, const char *data, size_t len);
/* The same for a pipelined connection, where the next answer may follow in data: *used is the
 * bytes of data read (on HK_RESP_DONE, up to the answer's end: the rest is the next answer's;
 * on HK_RESP_MORE, all of them; 0 after DONE or ERROR). */
int hk_response_feed_some(hk_response_t *r, const char *data, size_t len, size_t *used);
/* The peer closed: HK_RESP_DONE when that ends the response (a body read to EOF), else
 * HK_RESP_ERROR. */
int hk_response_eof(hk_response_t *r);
/*
 * A Retry-After value (RFC 9110 10.2.3): delay-seconds ("120") or an IMF-fixdate ("Wed, 21 Oct
 * 2015 07:28:00 GMT"), with optional blanks around. Sets *out_ms to the wait from now_ms (wall
 * clock; 0 for a date in the past; a wait past 2^32 s is clamped to it) and returns 0, or -1
 * when it is neither. Pure.
 */
int hk_retry_after_parse(const char *v, size_t len, uint64_t now_ms, uint64_t *out_ms);

/* ---- sign.c: Standard Webhooks signatures (pure) ---- */

/*
 * Writes "v1,<base64 sig> v1,<base64 sig>..." for every key of def (the header
 * webhook-signature) into out[outlen] and returns its length (0 if it does not fit; 512 bytes
 * hold four signatures). sig = HMAC-SHA256(key, "<id>.<timestamp>.<body>").
 */
size_t hk_sign(const hd_webhook_def_t *def, const char *id, uint64_t timestamp_s, const char *body,
               size_t len, char *out, size_t outlen);

/* What signs one endpoint's requests: each secret's HMAC-SHA256 keyed once (its two SHA-256
 * states), and the fixed part of its request head. def outlives it. Allocation failures abort. */
typedef struct hk_signer_s hk_signer_t;
hk_signer_t *hk_signer_new(const hd_webhook_def_t *def);
void hk_signer_free(hk_signer_t *sg);
/*
 * The head of a signed POST of body to the signer's endpoint, in one buffer (one reference),
 * without printf:
 *   POST <target> HTTP/1.1, Host, User-Agent, Content-Type: application/json, Content-Length,
 *   webhook-id: <id>, webhook-timestamp: <timestamp_s>, webhook-signature: v1,<sig> [v1,..]
 * id: 1..39 bytes. Never NULL.
 */
hd_buf_t *hk_signed_head(hk_signer_t *sg, const char *id, uint64_t timestamp_s,
                         const hd_buf_t *body);

/* ---- event.c: event bodies (pure) ---- */

/*
 * The JSON body of an event (one reference):
 *   {"type":"message.published","timestamp":"2026-12-02T23:00:00.123Z","data":{<message>}}
 *   {"type":"channel.occupied","timestamp":..,"data":{"channel":"news"}}
 * <message> is the object polls give (id, channel, publisher, content_type, data, encoding).
 */
hd_buf_t *hk_event_message(const hd_message_t *m, uint64_t now_ms);
hd_buf_t *hk_event_channel(const char *channel, size_t len, int occupied, uint64_t now_ms);
/* {"type":"member.added"|"member.removed","timestamp":..,"data":{"channel":"room:1",<the
 * members of the object data[0..len)>}}: data is a presence event's {"member":..,"conn":..}.
 * NULL when data is not a JSON object's text ({ ... }). */
hd_buf_t *hk_event_member(const char *channel, size_t len, int added, const char *data,
                          size_t data_len, uint64_t now_ms);
/* Appends s[0..len) as a JSON string (quoted; quotes, backslashes, control and non-ASCII
 * bytes escaped). */
void hk_json_str(hd_sbuf_t *sb, const char *s, size_t len);
/* A new event id, "evt_" + 16 hex digits of a random prefix drawn once per process + a
 * counter: unique across restarts (the prefix) and within the process (the counter). */
void hk_event_id(char out[40]);

/* ---- client.c: HTTP/1.1 requests on a keep-alive pool per endpoint ---- */

typedef struct hk_pool_s hk_pool_t;
typedef struct hk_request_s hk_request_t;
/* Ends a request: status (> 0) when answered, else fail (HD_HOOKS_FAIL_*) and a short reason. */
typedef void (*hk_request_cb)(hk_request_t *req, int status, int fail, const char *why);
struct hk_request_s {
    hd_buf_t *head; /* request line and headers (a reference) */
    hd_buf_t *body; /* a reference */
    hk_request_cb cb;
    void *data;
    char retry_after[40];   /* out: the answer's Retry-After value when cb runs ("" none) */
    unsigned want_body : 1; /* keep the answer's body (at most 64 KiB) in answer, for cb */
    char *answer;           /* the answer's body when want_body and answered, malloc'd, or NULL;
                               the callback's to free */
    size_t answer_len;
    hd_list_t link_; /* private: its connection's requests, while sent */
};

typedef struct hk_client_conf_s {
    uv_loop_t *loop;
    SSL_CTX *tls; /* for https endpoints (verifies the peer) */
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;
    int allow_private;
    hd_wbatch_t *wbatch; /* a loop pass's writes of a pool in one system call; NULL: one by one */
} hk_client_conf_t;

/* A pool of connections to def's host and port (def and cc outlive it); a connection carries
 * up to def->pipeline requests at once. */
hk_pool_t *hk_pool_new(const hd_webhook_def_t *def, const hk_client_conf_t *cc);
/* Sends req on a connection of the pool with room (pipelining), an idle one, or a new one,
 * written at the end of the loop pass with the pass's others; req->cb runs once, later (never
 * inside this call), unless the pool is closed first. The caller keeps req alive until then. */
void hk_pool_send(hk_pool_t *p, hk_request_t *req);
/* Closes every connection; requests in flight end with no callback. Frees the pool once its
 * handles are closed (the loop must run). */
void hk_pool_close(hk_pool_t *p);
/* Connections open (idle and busy). */
size_t hk_pool_conns(const hk_pool_t *p);
/* 1 if the address is loopback, private, link-local, unspecified or multicast (IPv4, IPv6,
 * IPv4-mapped IPv6): what webhook_allow_private guards. */
int hk_addr_is_private(const struct sockaddr *sa);

/* ---- rconn.c: the hooks thread's own Redis connection ---- */

typedef struct hk_redis_s hk_redis_t;
/* An answer (NULL: none came, the connection is gone; the command may or may not have run). */
typedef void (*hk_redis_cb)(void *data, const redisReply *rep);
typedef void (*hk_redis_up_cb)(void *data);
/* Connects to conf's redis (and again after every loss, with backoff); on_up runs each time it
 * is ready (functions of hooks.lua loaded). role ends its client name (herald:<host>:<pid>:
 * <role>: "hooks", "notify"). NULL if conf->redis does not parse (the conf checked it). */
hk_redis_t *hk_redis_new(uv_loop_t *loop, const hd_conf_t *conf, const char *role,
                         hk_redis_up_cb on_up, void *data);
/* Sends a command when up: 0 (cb runs once, later, never inside this call), or -1 when down
 * (cb never runs). */
int hk_redis_send(hk_redis_t *r, int argc, const char **argv, const size_t *lens, hk_redis_cb cb,
                  void *data);
int hk_redis_is_up(const hk_redis_t *r);
const char *hk_redis_where(const hk_redis_t *r); /* "host:port/db", for messages */
/* Closes the connection (answers owed come back NULL, now) and frees r once its handles are
 * closed (the loop must run). */
void hk_redis_close(hk_redis_t *r);

/* ---- durable.c: pending deliveries and dead letters in Redis ---- */

#define HK_SID_MAX      48 /* a stream entry id "<ms>-<seq>" and its NUL */
#define HK_ENTRY_FIELDS 7  /* id, e, t, c, a, f, b in herald_hk_take's answer */

/* One pending entry as herald_hk_take gives it (pointers into the answer). */
typedef struct hk_entry_s {
    const char *sid, *id, *type, *body;
    size_t sid_len, id_len, type_len, body_len;
    uint64_t created_ms; /* wall clock */
    uint32_t attempts;   /* made so far */
    uint64_t first_ms;   /* wall clock of the first attempt (0: none yet) */
} hk_entry_t;
/* Parses the HK_ENTRY_FIELDS replies at el: 0, or -1 when one is not what hooks.lua stores
 * (a stream id of digits and '-', an id of 1..39 bytes without NUL, CR or LF, a type of
 * [a-z._] up to 23 bytes, decimal numbers, attempts below 2^32). Pure. */
int hk_entry_parse(const redisReply *const *el, hk_entry_t *out);

/* herald_hk_take's answer {pending, dead letters, entries...}: 0 with the two counts and *n,
 * the entries (HK_ENTRY_FIELDS elements each, from element[2]), or -1 when it is not that.
 * Pure. */
int hk_take_parse(const redisReply *rep, uint64_t *pending, uint64_t *dead, size_t *n);

/* One presence event as herald_hk_ptake gives it (pointers into the answer). */
#define HK_PEV_FIELDS   4           /* id, k, c, d */
#define HK_PEV_DATA_MAX (64 * 1024) /* longest {"member":..,"conn":..} taken */
typedef struct hk_pev_s {
    const char *sid, *channel, *data;
    size_t sid_len, channel_len, data_len;
    int is_channel; /* channel.* ("~o", "~v"), else member.* ("~j", "~l") */
    int added;      /* "~j" or "~o" (1), "~l" or "~v" (0) */
} hk_pev_t;
/* Parses the HK_PEV_FIELDS replies at el: 0, or -1 when one is not what herald.lua writes (a
 * stream id of digits and '-' of at most 35 bytes, "~j", "~l", "~o" or "~v", a valid channel
 * name, a JSON object's text of at most HK_PEV_DATA_MAX bytes). Pure. */
int hk_pev_parse(const redisReply *const *el, hk_pev_t *out);

typedef struct hk_durable_s hk_durable_t;
/* One endpoint's keys in Redis (its queue and its retries' waits). */
typedef struct hk_dslot_s hk_dslot_t;
/* What durable.c tells the sender (delivery.c's table, on the hooks loop). owner: the slot's
 * (hk_durable_slot_new). */
typedef struct hk_durable_ops_s {
    /* An entry taken for the slot's endpoint: attempt it (it is this node's until finished). */
    void (*on_entry)(void *owner, const hk_entry_t *e);
    /* A take ended: its pending events and the cluster's dead letters, as Redis counts. */
    void (*on_taken)(void *owner, uint64_t pending, uint64_t dead_letters);
    /* Redis is (back) up: take again. */
    void (*on_up)(void *data);
    /* May the dead letters of the endpoint named name[0..len) be replayed here? 1 (and *sl its
     * slot), 0 when it is disabled, -1 when this node does not know it. */
    int (*replayable)(void *data, const char *name, size_t len, hk_dslot_t **sl);
    /* A presence or occupancy event of the cluster, taken by this node (id: the event's, from
     * Redis). */
    void (*on_pev)(void *data, const hk_pev_t *ev, const char *id);
} hk_durable_ops_t;

/* Connects to conf's redis (endpoints come with hk_durable_slot_new). NULL if conf->redis does
 * not parse. */
hk_durable_t *hk_durable_new(uv_loop_t *loop, const hd_conf_t *conf, hd_hooks_stats_t *st,
                             const hk_durable_ops_t *ops, void *data);
/* The keys of endpoint def (its name and events are copied); owner is handed to the ops. */
hk_dslot_t *hk_durable_slot_new(hk_durable_t *d, const hd_webhook_def_t *def, void *owner);
/* The endpoint is gone: no op is called for it any more (a take under way is ignored). */
void hk_durable_slot_free(hk_dslot_t *sl);
int hk_durable_is_up(const hk_durable_t *d);
/* Queues an event for the slot's endpoint (body copied): 0, or -1 when the outbox is full
 * (webhook_max_memory; the caller counts the drop). */
int hk_durable_add(hk_durable_t *d, hk_dslot_t *sl, const hd_buf_t *body, const char *id,
                   const char *type, uint64_t created_ms);
/* Asks for up to count entries of the slot (ops->on_entry each, then ops->on_taken): 0, or -1
 * when Redis is down or a take of it is under way. */
int hk_durable_take(hk_durable_t *d, hk_dslot_t *sl, unsigned count);
/* Asks for the cluster's presence and occupancy events (ops->on_pev each) when an endpoint
 * wants them and no such read is under way. */
void hk_durable_take_members(hk_durable_t *d);
/* Finishes a taken entry: delivered; waiting for a retry due at due_ms (wall clock) with its
 * schedule; or a dead letter. Kept and sent again while Redis is away. */
void hk_durable_done(hk_durable_t *d, hk_dslot_t *sl, const char *sid);
void hk_durable_retry(hk_durable_t *d, hk_dslot_t *sl, const char *sid, uint64_t due_ms,
                      uint32_t attempts, uint64_t first_ms);
void hk_durable_bury(hk_durable_t *d, hk_dslot_t *sl, const char *sid, const char *reason,
                     uint32_t attempts);
/* Answers an admin request about dead letters (DEAD_*) later, through hk_admin_answered. */
void hk_durable_admin(hk_durable_t *d, hd_hooks_admin_t *a);
/* Asks Redis for the dead letters of every slot's endpoint in P hk:dl (herald_hk_dcount: one
 * command, unless one is under way or Redis is down); hk_durable_slot_dead has them once
 * answered. */
void hk_durable_count_dead(hk_durable_t *d);
/* The slot's endpoint's dead letters in Redis (every node's) at the last count (0 before). */
uint64_t hk_durable_slot_dead(const hk_dslot_t *sl);
/* Bytes held by commands not yet answered (counted in webhook_max_memory). */
size_t hk_durable_bytes(const hk_durable_t *d);
/* Closes the connection and frees d; returns the events never sent to Redis (lost). */
size_t hk_durable_close(hk_durable_t *d);

/* The connection it uses (registry.c shares it). */
hk_redis_t *hk_durable_conn(hk_durable_t *d);

/* ---- registry.c: with Redis, the admin API's endpoints and the disabled ones, for every node ----
 */

typedef struct hk_registry_s hk_registry_t;
/* One name of the cluster's registry (pointers into Redis's answer): a registration (record,
 * the JSON hd_webhook_def_from_json reads) and/or its state (off: why it is disabled). */
typedef struct hk_reg_entry_s {
    const char *name, *record, *off; /* record, off: NULL when absent */
    size_t name_len, record_len, off_len;
} hk_reg_entry_t;
typedef struct hk_registry_ops_s {
    /* Redis's registry changed (or was read for the first time since a connect): e[0..n) is
     * all of it, as it was before the states sent after the one numbered seen. */
    void (*on_sync)(void *data, const hk_reg_entry_t *e, size_t n, uint64_t seen);
} hk_registry_ops_t;
/* What a put or a delete became (hk_registry_cb's result). */
enum { HK_REG_FULL = -1, HK_REG_NONE = 0, HK_REG_DONE = 1, HK_REG_DOWN = 2 };
typedef void (*hk_registry_cb)(void *arg, int result);

/* The registry of conf's redis over rc (a connection that outlives it). */
hk_registry_t *hk_registry_new(uv_loop_t *loop, const hd_conf_t *conf, hk_redis_t *rc,
                               const hk_registry_ops_t *ops, void *data);
void hk_registry_close(hk_registry_t *r);
/* Reads the version when no read is under way; ops->on_sync when it moved. */
void hk_registry_poll(hk_registry_t *r);
/* Stores a registration under name, bounded by webhook_max_endpoints: cb(arg, DONE), NONE (the
 * name is taken), FULL or DOWN (Redis away or failing), later (DOWN may come at once). */
void hk_registry_put(hk_registry_t *r, const char *name, const char *record, size_t len,
                     hk_registry_cb cb, void *arg);
/* Deletes a registration and its queue: cb(arg, DONE), NONE (not there) or DOWN. */
void hk_registry_del(hk_registry_t *r, const char *name, hk_registry_cb cb, void *arg);
/* This node forgot the registered endpoint name (deleted by another node): its queue in Redis
 * is deleted unless the name is registered again (this node's takes may have made it again). */
void hk_registry_forget(hk_registry_t *r, const char *name);
/* Stores that the endpoint name is disabled (reason) or enabled (NULL) for every node: its
 * number (a read sent before it does not know it: on_sync's seen is lower), or 0 when Redis is
 * away (send it again later). */
uint64_t hk_registry_state(hk_registry_t *r, const char *name, const char *reason);

/* ---- admin answers ---- */

/* An admin request answered on the hooks loop (status and body set): the answer goes to its
 * worker, where the callback hooks.c installed before handing the request over runs. */
static inline void hk_admin_answered(hd_hooks_admin_t *a)
{
    hd_worker_post(a->worker, &a->base_);
}
/* ---- authz_answer.c: the authorize hook's answer (pure) ---- */

typedef struct hk_verdict_s {
    int kind;          /* HD_HOOKS_ALLOW, _DENY, _ERROR */
    int status;        /* DENY: 401 or 403 */
    char reason[200];  /* DENY, ERROR: one printable line */
    hd_identity_t *id; /* ALLOW: the answer's identity (one reference), or NULL */
} hk_verdict_t;
/* Reads the backend's answer (status, body[0..len), body may be NULL) into *v (the contract is
 * at the top of authz_answer.c). Never fails: what is not an answer is HD_HOOKS_ERROR. */
void hk_authz_answer(int status, const char *body, size_t len, hk_verdict_t *v);

/* ---- authorize.c: the authorize hook's calls, cache and waiting questions ---- */

typedef struct hk_authz_s hk_authz_t;
/* The hook of conf->authorize_hook (conf outlives it), calls signed with its secrets. */
hk_authz_t *hk_authz_new(uv_loop_t *loop, const hd_conf_t *conf, SSL_CTX *tls,
                         hd_hooks_stats_t *stats);
/* A question from a worker (hooks.h): answered later through answer(a), on this loop. */
void hk_authz_ask(hk_authz_t *z, hd_hooks_authz_t *a, void (*answer)(hd_hooks_authz_t *a));
/* Answers every waiting question with HD_HOOKS_ERROR, closes the pool, frees the cache; the loop
 * must run until its handles are closed. */
void hk_authz_close(hk_authz_t *z);

/* ---- notify_rec.c: with Redis, the notify hook's records of live streams (a dead node's
 * reported disconnected by a survivor) ---- */

typedef struct hk_nrec_s hk_nrec_t;
typedef struct hk_nrec_ops_s {
    /* Events the notify queue can take now. */
    size_t (*room)(void *data);
    /* Queue an event (json[0..len), a JSON object without id; copied) with id (NULL: a new
     * one); sid: the claimed entry to hand back through hk_nrec_reported once a batch holding
     * it was answered 2xx (NULL: none). */
    void (*push)(void *data, const char *json, size_t len, const char *id, const char *sid);
} hk_nrec_ops_t;
/* Records of this node's streams in conf's redis (the node is hd_presence_node(), the lease's
 * name). NULL if conf->redis does not parse. */
hk_nrec_t *hk_nrec_new(uv_loop_t *loop, const hd_conf_t *conf, const hk_nrec_ops_t *ops,
                       void *data);
/* A worker's event json[0..len) (queued: 1, or 0 when the queue dropped it): the records follow
 * it. Returns 1 when it is a disconnect whose record waits for hk_nrec_closed (its connection
 * id in conn), else 0. */
int hk_nrec_event(hk_nrec_t *r, const char *json, size_t len, int queued, char conn[64]);
/* The disconnect of conn was answered 2xx: its record goes. */
void hk_nrec_closed(hk_nrec_t *r, const char *conn);
/* The disconnect of a claimed entry sid was answered 2xx: the entry goes. */
void hk_nrec_reported(hk_nrec_t *r, const char *sid);
/* At a graceful stop, once the last batch went: calls done(arg) (on a later loop pass) once
 * Redis answered what was sent before (the last records' removals), or the connection was lost
 * (redis_timeout). Returns 1 (done will be called), or 0 when Redis is down (done is not). */
int hk_nrec_settle(hk_nrec_t *r, void (*done)(void *arg), void *arg);
/* Closes the connection and frees r (records stay in Redis: a survivor reports them); the loop
 * must run until its handles are closed. */
void hk_nrec_close(hk_nrec_t *r);
/* One claimed record as herald_hk_ntake gives it (HK_NEV_FIELDS replies at el: entry id, node,
 * conn, record, when claimed in wall ms). 0: sid is the entry id (digits and '-', below
 * HK_SID_MAX) and *json its disconnect event, malloc'd: {"type":"disconnect","conn":..,"at":..,
 * "reason":"node_lost",<the record's transport, sub, client_ip, channels>}; 1: only sid is
 * usable (a malformed entry, to finish and drop); -1: not even that. Pure. */
#define HK_NEV_FIELDS 5
int hk_nev_parse(const redisReply *const *el, char sid[HK_SID_MAX], char **json);

/* ---- notify.c: the notify hook's queue and batches ---- */

typedef struct hk_notify_s hk_notify_t;
/* What one notify event of len bytes is charged against the hook's max_memory, alike in the
 * mailbox and in the queue (stats.notify_memory_bytes): its JSON, and room for the structs and
 * the id around it. */
#define HK_NOTIFY_CHARGE(len) ((len) + 256)
/* The hook of conf->notify_hook; node names this process in event ids. */
hk_notify_t *hk_notify_new(uv_loop_t *loop, const hd_conf_t *conf, SSL_CTX *tls,
                           hd_hooks_stats_t *stats, const char *node);
/* Queues one event, json[0..len) a JSON object (copied; an id is added), charged
 * HK_NOTIFY_CHARGE(len) in stats.notify_memory_bytes already: the queue keeps the charge until
 * the event is acknowledged, or gives it back at once when the event is dropped. */
void hk_notify_push(hk_notify_t *nf, const char *json, size_t len);
/* At shutdown: sends what is queued now, batch after batch, and calls done(arg) once the queue
 * is empty, a batch failed, or the hook's timeout passed (with Redis, then once Redis took the
 * last records' removals: hk_nrec_settle). Returns 0 (nothing to wait for: done is not called)
 * or 1 (done will be). */
int hk_notify_drain(hk_notify_t *nf, void (*done)(void *arg), void *arg);
/* Closes the pool and frees the queue; returns the events not yet acknowledged (lost). The loop
 * must run until the timer is closed. */
size_t hk_notify_close(hk_notify_t *nf);

/* ---- filter.c: which events the endpoints want, read by any thread ---- */

typedef struct hk_filter_s hk_filter_t;
/* The filter of conf's endpoints (conf outlives it) and of none registered yet. */
hk_filter_t *hk_filter_new(const hd_conf_t *conf);
/* Frees f and every thread's view of it: after no thread can read it any more. */
void hk_filter_free(hk_filter_t *f);
/* On the hooks thread: the endpoints registered through the admin API are now defs[0..n)
 * (copied: their events and patterns). Readers see it at their next read. */
void hk_filter_set(hk_filter_t *f, const hd_webhook_def_t *const *defs, size_t n);
/* Any thread: every endpoint's events, or-ed (one relaxed load). */
unsigned hk_filter_events(const hk_filter_t *f);
/* Any thread: 1 if an endpoint wants ev (HD_WEBHOOK_EV_*) on channel[0..len). No lock unless
 * the registered endpoints changed since this thread last asked. */
int hk_filter_wanted(hk_filter_t *f, unsigned ev, const char *channel, size_t len);

/* ---- the sender (sender.h draws its files): endpoints, queues, retries, dead letters ---- */

typedef struct hk_sender_s hk_sender_t;
/* sender.c: the sender of conf's endpoints; the ones the admin API registers are told to
 * filter. */
hk_sender_t *hk_sender_new(uv_loop_t *loop, hd_conf_t *conf, SSL_CTX *tls, hd_hooks_stats_t *stats,
                           hk_filter_t *filter);
/* delivery.c: an event for every endpoint that wants it (takes nothing: copies what it needs). */
void hk_sender_message(hk_sender_t *s, hd_message_t *m);
/* id: the event's id when it has one already (from Redis), NULL for a new one. */
void hk_sender_channel(hk_sender_t *s, const char *channel, size_t len, int occupied,
                       const char *id);
/* A presence member added (or removed) on channel, data its {"member":..,"conn":..}; id: the
 * event's id when it has one already (from Redis), NULL for a new one. */
void hk_sender_member(hk_sender_t *s, const char *channel, size_t len, int added, const char *data,
                      size_t data_len, const char *id);
/* admin.c: answers an admin request: fills status and body and returns 1, or returns 0 when the
 * answer comes later through hk_admin_answered (with Redis; a host name being resolved). */
int hk_sender_admin(hk_sender_t *s, hd_hooks_admin_t *a);
/* endpoint.c: every endpoint's figures (hd_hooks_get_ep_stats), oldest_pending_ms a wall clock
 * time (0: none); *out to free (NULL when none). Returns how many. */
size_t hk_sender_ep_stats(hk_sender_t *s, hd_hooks_ep_stats_t **out);
/* delivery.c: 1 when an endpoint has events to send and no room under webhook_concurrency (in
 * memory: its ready queue; with Redis: more pending there than in flight here): a backlog, whose
 * answers the thread reads as they come (hooks.c does not tick then). */
int hk_sender_is_behind(const hk_sender_t *s);
/* sender.c: closes everything; the loop must run until its handles are closed. Returns the
 * events that were still pending (lost). */
size_t hk_sender_close(hk_sender_t *s);

#endif
