/* SPDX-License-Identifier: MIT */
/*
 * internal.h (private to src/http): the state of one HTTP/1.1 connection, shared by the files
 * that make up the HTTP layer. Calls run one way:
 *
 *   http.c  -->  response.c  -->  request.c
 *   http.c  -->  request.c, parse.c, router.c, chunked.c
 *   parse.c -->  chunked.c
 *
 *   http.c:     the connection handler: reads, pipelining and backpressure, dispatch to the
 *               router, timeouts, EOF, close, take-over by a transport;
 *   response.c: queuing responses (status line, headers, body), keep-alive, access log,
 *               deferred responses; it resumes the handler through h->on_answered;
 *   parse.c:    llhttp's callbacks: the head and body buffers with their limits, and the
 *               validation of a request head (Host, target, version, Expect, field names);
 *   request.c:  the hd_req_t handlers see, built from what was parsed, reset once answered.
 *
 * Request bytes live in two per-request buffers, both freed when the response is queued, so an
 * idle keep-alive connection holds only this struct:
 *   head: the URL then each header name and value, appended as llhttp reports the spans
 *         (bounded by max_url_size + max_header_size);
 *   body: the decoded body (bounded by max_body_size).
 */
#ifndef HD_HTTP_INTERNAL_H
#define HD_HTTP_INTERNAL_H

#include "herald/bucket.h"
#include "herald/chunked.h"
#include "herald/http.h"
#include "herald/server.h"

#include <llhttp.h>

#define MAX_HEADERS 100

typedef struct hdr_off_s {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_off_t;

enum { PHASE_IDLE, PHASE_HEAD, PHASE_BODY, PHASE_HANDLING };

struct hd_http_s {
    llhttp_t parser;
    hd_conn_t *conn;
    char *head;
    size_t head_len, head_cap;
    size_t url_len;
    hdr_off_t hdrs[MAX_HEADERS];
    size_t n_hdrs;
    char *body;
    size_t body_len, body_cap;
    hd_chunked_t chunked; /* the body's decoder while is_chunked_body */
    char *pending; /* bytes received after the request being handled: [pending_off, pending_len) */
    size_t pending_off, pending_len;
    hd_header_t *req_headers;
    /* Header lines every response to the request carries (hd_req_set_response_headers): a
     * string that outlives the request, or resp_headers_owned, freed with the request. */
    const char *resp_headers;
    char *resp_headers_owned;
    hd_deferred_t *deferred;
    hd_req_t req;
    /* The handler's, called once a response is queued outside dispatch (a deferred one) on a
     * connection that stays open: go on with what was pipelined. */
    void (*on_answered)(hd_http_t *h);
    int error;             /* HD_E* (or a status > 0) raised by a callback */
    const char *error_msg; /* what the client is told about it; NULL: hd_strerror(error) */
    size_t path_off;       /* where the path starts in the URL (after an absolute-form authority) */
    int phase;             /* PHASE_* */
    hd_bucket_t
        pub_bucket; /* client_publish_rate for publishes on a token (hd_http_publish_take) */
    uint32_t served;
    uint64_t start_ms;
    unsigned is_closing_after : 1; /* answer with Connection: close */
    unsigned is_expect_continue : 1;
    unsigned is_dispatching : 1;  /* inside the handler: the caller goes on parsing */
    unsigned is_bad_method : 1;   /* llhttp refused the method: collecting the line */
    unsigned is_chunked_body : 1; /* the body is chunked: hd_chunked_feed, not llhttp, reads it */
    unsigned is_peer_eof : 1;     /* the peer closed its side with requests still pending */
};

static inline const hd_conf_t *conf_of(const hd_http_t *h)
{
    return hd_worker_conf(h->conn->worker);
}

/* ---- parse.c ---- */

/* Sets up h->parser with the layer's callbacks (h->parser.data = h). */
void hd_http_parser_init(hd_http_t *h);
/* Appends to h->head unless it would pass limit bytes. 0, or -1. */
int hd_http_head_append(hd_http_t *h, const char *at, size_t len, size_t limit);
/* Appends body bytes (an hd_chunked_feed callback: arg is h). 0, or HD_EBODYTOOBIG. */
int hd_http_append_body(void *arg, const char *at, size_t len);
/* After HPE_INVALID_METHOD: 1 a well-formed line with an unknown method (501), 0 garbage (400),
 * -1 not known yet. */
int hd_http_classify_bad_method(const char *data, size_t len);

/* ---- request.c ---- */

/* Fills h->req from what was parsed (its strings point into h->head and h->body). */
void hd_http_build_request(hd_http_t *h);
/* Frees the request's buffers; the connection is ready for the next request (PHASE_IDLE). */
void hd_http_reset_request(hd_http_t *h);

/* ---- response.c ---- */

/* Appends the status line, Server, Date, extra and Connection (is_close: 1 close, 0 keep-alive
 * where HTTP/1.0 needs it, -1 none). */
void hd_http_build_head(hd_http_t *h, hd_sbuf_t *sb, int status, const char *extra, int is_close);
void hd_http_access_log(hd_http_t *h, int status, size_t bytes);
/* Frees the deferred response, if any. */
void hd_http_end_deferred(hd_http_t *h);

#endif
