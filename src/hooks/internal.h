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
    size_t body_bytes;
} hk_response_t;

/* Ready to read one response (to a POST). */
void hk_response_init(hk_response_t *r);
/* Feeds data[0..len): HK_RESP_MORE (more needed), HK_RESP_DONE (complete: r->status,
 * r->keep_alive), HK_RESP_ERROR (not HTTP/1.x, bytes after the response, a body past
 * HK_RESPONSE_BODY_MAX). After DONE or ERROR, feeding again returns ERROR. */
int hk_response_feed(hk_response_t *r, const char *data, size_t len);
/* The peer closed: HK_RESP_DONE when that ends the response (a body read to EOF), else
 * HK_RESP_ERROR. */
int hk_response_eof(hk_response_t *r);

/* ---- sign.c: Standard Webhooks signatures (pure) ---- */

/*
 * Writes "v1,<base64 sig> v1,<base64 sig>..." for every key of def (the header
 * webhook-signature) into out[outlen] and returns its length (0 if it does not fit; 512 bytes
 * hold four signatures). sig = HMAC-SHA256(key, "<id>.<timestamp>.<body>").
 */
size_t hk_sign(const hd_webhook_def_t *def, const char *id, uint64_t timestamp_s, const char *body,
               size_t len, char *out, size_t outlen);

/* ---- event.c: event bodies (pure) ---- */

/*
 * The JSON body of an event (one reference):
 *   {"type":"message.published","timestamp":"2026-12-02T23:00:00.123Z","data":{<message>}}
 *   {"type":"channel.occupied","timestamp":..,"data":{"channel":"news"}}
 * <message> is the object polls give (id, channel, publisher, content_type, data, encoding).
 */
hd_buf_t *hk_event_message(const hd_message_t *m, uint64_t now_ms);
hd_buf_t *hk_event_channel(const char *channel, size_t len, int occupied, uint64_t now_ms);
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
};

typedef struct hk_client_conf_s {
    uv_loop_t *loop;
    SSL_CTX *tls; /* for https endpoints (verifies the peer) */
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;
    int allow_private;
} hk_client_conf_t;

/* A pool of connections to def's host and port (def and cc outlive it). */
hk_pool_t *hk_pool_new(const hd_webhook_def_t *def, const hk_client_conf_t *cc);
/* Sends req on an idle connection of the pool, or a new one; req->cb runs once, later (never
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

/* ---- delivery.c: endpoints, queues, retries, dead letters ---- */

typedef struct hk_sender_s hk_sender_t;
hk_sender_t *hk_sender_new(uv_loop_t *loop, hd_conf_t *conf, SSL_CTX *tls, hd_hooks_stats_t *stats);
/* An event for every endpoint that wants it (takes nothing: copies what it needs). */
void hk_sender_message(hk_sender_t *s, hd_message_t *m);
void hk_sender_channel(hk_sender_t *s, const char *channel, size_t len, int occupied);
/* Answers an admin request (fills status and body). */
void hk_sender_admin(hk_sender_t *s, hd_hooks_admin_t *a);
/* Closes everything; the loop must run until its handles are closed. Returns the events that
 * were still pending (lost). */
size_t hk_sender_close(hk_sender_t *s);

#endif
