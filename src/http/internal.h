/* SPDX-License-Identifier: MIT */
/*
 * internal.h (private to src/http): the state of one HTTP/1.1 connection (or of one request
 * on an HTTP/2 stream), shared by the files that make up the HTTP layer. Calls run one way:
 *
 *   http.c  -->  h2.c  -->  h2_stream.c  -->  dispatch.c  -->  response.c  -->  h2_out.c
 *   http.c  -->  dispatch.c, request.c, parse.c, chunked.c, h2_out.c
 *   h2.c    -->  h2_stream.c, h2_out.c, h2_mem.c
 *   h2_stream.c  -->  dispatch.c, request.c, parse.c, response.c, h2_out.c
 *   dispatch.c --> router.c, request.c;   response.c --> request.c;   parse.c --> chunked.c
 *
 *   h2.c:       the HTTP/2 connection handler (nghttp2): the session, input fed to it, output
 *               produced under its bounds, timeouts, shutdown, close;
 *   h2_stream.c: its streams, as nghttp2's callbacks report frames: opened as stream
 *               connections (hd_conn_stream_new) each carrying one request, the head and body
 *               collected, dispatched, DATA held for a stream that does not read, closed;
 *   h2_out.c:   what leaves on a stream: the response head as HEADERS, the stream
 *               connection's queue as DATA frames (copied into one buffer a pass), resets;
 *               the carrier ops;
 *   h2_mem.c:   nghttp2's allocator (its frame buffer on pages of its own);
 *   dispatch.c: a complete request (either version) to the guard and the router;
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
#include <nghttp2/nghttp2.h>

#define MAX_HEADERS 100
/* Header fields a request's state holds in itself; past them, an array for MAX_HEADERS is
 * allocated (a request state waiting for its answer stays small: an HTTP/2 burst of 100
 * streams holds 100 of them). */
#define HDRS_INLINE 16

typedef struct hd_h2_s hd_h2_t;
typedef struct hd_h2_stream_s hd_h2_stream_t;

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
    hdr_off_t *hdrs; /* hdrs_inline, or MAX_HEADERS of them allocated past HDRS_INLINE */
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
    unsigned is_h2_decided : 1;   /* the first bytes said HTTP/1.1 (not an HTTP/2 preface) */
    hd_h2_stream_t *h2s;          /* an HTTP/2 stream's request (h->conn is the stream) */
    char *authority;              /* HTTP/2: :authority until the head is complete (becomes Host) */
    hdr_off_t hdrs_inline[HDRS_INLINE];
};

#define HD_H2_BIG_MAX 4

/*
 * One HTTP/2 connection (h2.c): the nghttp2 session on the socket's connection, its streams,
 * and what a connection keeps across requests.
 */
struct hd_h2_s {
    nghttp2_session *session;
    hd_conn_t *conn;
    hd_list_t streams;        /* hd_h2_stream_t by link */
    hd_h2_stream_t *drained;  /* streams whose queue a send emptied: on_drain after it */
    hd_buf_t *out;            /* frames of the produce pass under way (h2_out.c), or NULL */
    hd_bucket_t pub_bucket;   /* client_publish_rate, for every stream of the connection */
    hd_bucket_t reset_bucket; /* RST_STREAM from the client (http2_reset_rate) */
    uint32_t reset_rate;      /* http2_reset_rate when the connection opened */
    size_t max_queue_bytes;   /* http2_max_queue_bytes when the connection opened */
    size_t streams_out;       /* the streams' queues together (hd_h2_count_output) */
    /* DATA held for streams that do not read it (hd_h2_stream_t.in): the streams' windows
     * stay shut until it is delivered; the connection's window is reopened as it comes in,
     * except for what arrives while more than HD_H2_IN_HIGH is held (in_owed), given back
     * once the held total is below it again. */
    size_t in_held, in_owed;
    uint32_t n_in_ready;      /* streams with is_in_ready set */
    void *big[HD_H2_BIG_MAX]; /* nghttp2's blocks with pages of their own (h2_mem.c) */
    uint32_t n_streams;
    uint32_t depth;           /* inside nghttp2 calls: freeing waits until they return */
    unsigned is_draining : 1; /* GOAWAY sent for shutdown: end once the streams have */
    unsigned is_dead : 1;     /* the connection closed inside an nghttp2 call */
};

/*
 * One stream: the carrier of its stream connection (conn) and its place on the connection.
 * The request being received is the stream connection's handler until it is answered or
 * taken over (h2_stream.c http_of). Every stream of a connection has one of these for its life, so
 * it holds nothing a request needs only while it arrives. It is allocated with its stream
 * connection (hd_conn_stream_new) and let go of by hd_conn_carrier_release (hd_h2_stream_free):
 * it may outlive the stream connection (a stream herald reset, until nghttp2 closes it).
 */
struct hd_h2_stream_s {
    hd_carrier_t carrier; /* first: conn->carrier points here */
    hd_h2_t *h2;
    hd_conn_t *conn; /* NULL once closed */
    hd_list_t link;
    hd_h2_stream_t *next_drained;
    /* DATA its handler has not read yet: it was dispatched and not taken over, or stopped
     * reading (hd_conn_read_stop). At most the stream's window (64 KiB): nghttp2 refuses more
     * while this much of the window is not given back (nghttp2_session_consume_stream). */
    char *in;
    uint32_t in_len;
    int32_t id;
    uint32_t out_counted;        /* its queue as counted in h2->streams_out */
    uint8_t method;              /* :method, 1 + its index in h2_stream.c's table; 0: unknown */
    unsigned is_deferred : 1;    /* its data source said DEFERRED: resume when output comes */
    unsigned is_responding : 1;  /* its response head was submitted */
    unsigned is_dispatched : 1;  /* the request went to its handler */
    unsigned is_drained : 1;     /* on h2->drained */
    unsigned is_ended : 1;       /* END_STREAM sent */
    unsigned is_websocket : 1;   /* extended CONNECT, :protocol websocket (RFC 8441) */
    unsigned is_protocol : 1;    /* a :protocol herald does not serve */
    unsigned is_in_ready : 1;    /* reads again: `in` goes to its handler in the next produce */
    unsigned is_taken_over : 1;  /* a transport writes it: DATA submitted while it has output */
    unsigned has_data : 1;       /* nghttp2 holds a DATA source for it (read_data) */
    unsigned is_eof_pending : 1; /* the DATA frame being sent lets go of the source */
    unsigned is_eof_held : 1;    /* END_STREAM came behind `in`: on_eof once it is delivered */
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

/* A request state for connection (or stream) c, with no request yet (PHASE_IDLE). */
hd_http_t *hd_http_new(hd_conn_t *c);
/* The header entry n_hdrs (n_hdrs < MAX_HEADERS), with room made for it. */
hdr_off_t *hd_http_next_hdr(hd_http_t *h);

/* Fills h->req from what was parsed (its strings point into h->head and h->body). */
void hd_http_build_request(hd_http_t *h);
/* Frees the request's buffers; the connection is ready for the next request (PHASE_IDLE). */
void hd_http_reset_request(hd_http_t *h);

/* ---- dispatch.c ---- */

/* Builds h->req and hands it to the guard and the router (501, 404, 405 answered here). */
void hd_http_dispatch(hd_http_t *h);

/* ---- h2.c ---- */

/* The connection's first bytes are an HTTP/2 connection preface (prior knowledge) or TLS
 * agreed on h2: hands c (its HTTP/1.1 state already released) to HTTP/2, data first. */
void hd_h2_accept(hd_conn_t *c, const char *data, size_t len);

/* ---- h2_mem.c ---- */

/* nghttp2's allocator for h2's session (blocks of 16 KiB or more get pages of their own). */
void hd_h2_mem_init(hd_h2_t *h2, nghttp2_mem *mem);

/* ---- h2_out.c ---- */

/*
 * Submits the response head of h's stream: :status, server, date, the lines of `extra` and
 * of the request's response headers (names lowercased; connection-specific ones dropped),
 * content-type when not NULL, content-length when >= 0. Its DATA is the stream connection's
 * queue, ended by hd_conn_finish on it; is_taken_over: a transport writes it for as long as
 * it lives (DATA is submitted while it has output).
 */
void hd_h2_submit_head(hd_http_t *h, int status, const char *extra, const char *content_type,
                       int64_t content_length, int is_taken_over);
/* on_frame_send of a DATA frame of s (h2_stream.c): a source that let go is submitted again if
 * output came meanwhile. */
void hd_h2_data_sent(hd_h2_stream_t *s);
/* s's queue changed (or s->conn went): h2->streams_out follows, so that the bound on the
 * connection's output (http2_max_queue_bytes) needs no walk of its streams while under it. */
void hd_h2_count_output(hd_h2_stream_t *s);
extern const hd_carrier_ops_t hd_h2_carrier_ops;
/* n bytes at the end of the produce pass's output buffer (a full one goes to the socket). */
char *hd_h2_out_reserve(hd_h2_t *h2, size_t n);
/* Sends what the pass wrote (one piece, or the last of a few), at its end. */
void hd_h2_out_flush(hd_h2_t *h2);
/* The connection's output: queued on the socket, and not yet sent by the pass. */
static inline size_t hd_h2_out_bytes(const hd_h2_t *h2)
{
    return hd_conn_queued_bytes(h2->conn) + (h2->out ? h2->out->len : 0);
}
/* nghttp2's send_data_callback: a DATA frame's header and its bytes, taken from the stream. */
int hd_h2_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *source, void *user_data);
/* The connection's output is above this: nghttp2 waits (WOULDBLOCK) until it drains. */
#define HD_H2_OUT_HIGH (64 * 1024)
/* DATA held for streams that do not read (hd_h2_t.in_held) above this: the connection's
 * window is not reopened, so a connection holds at most this plus one window (64 KiB). */
#define HD_H2_IN_HIGH (256 * 1024)

/* ---- h2.c and h2_stream.c ---- */

/* Every call into nghttp2 goes through these: the connection may close inside one. */
static inline void hd_h2_enter(hd_h2_t *h2)
{
    h2->depth++;
}

/* Frees the connection's state (its session, the pass's output); its streams are gone. */
static inline void hd_h2_destroy(hd_h2_t *h2)
{
    nghttp2_session_del(h2->session);
    if (h2->out)
        hd_buf_unref(h2->out);
    free(h2);
}

/* Returns 1 when h2 is gone. */
static inline int hd_h2_leave(hd_h2_t *h2)
{
    if (--h2->depth == 0 && h2->is_dead) {
        hd_h2_destroy(h2);
        return 1;
    }
    return h2->is_dead;
}

/* n bytes held for streams left the connection's hold: what it owes its window is given
 * back once the hold is under HD_H2_IN_HIGH. */
static inline void hd_h2_release_held(hd_h2_t *h2, size_t n)
{
    h2->in_held -= n;
    if (h2->in_owed && h2->in_held <= HD_H2_IN_HIGH) {
        nghttp2_session_consume_connection(h2->session, h2->in_owed);
        h2->in_owed = 0;
    }
}

/* ---- h2_stream.c ---- */

/* Installs nghttp2's callbacks for what arrives (streams opened, heads, bodies, resets,
 * closes) and for what is sent (on_send, hd_h2_send_data, on_frame_send). */
void hd_h2_session_callbacks(nghttp2_session_callbacks *cb);
/* Hands what streams that read again hold to their handlers (inside hd_h2_enter/leave). */
void hd_h2_deliver_held(hd_h2_t *h2);
/* Frees s (unlinked from its connection; what it held is dropped); its stream connection,
 * if any, was closed or detached before. */
void hd_h2_stream_free(hd_h2_stream_t *s);

/* ---- response.c ---- */

/* Frees h: a deferred response is aborted (on_abort), the request and pending bytes freed. */
void hd_http_free(hd_http_t *h);

/* Appends the status line, Server, Date, extra and Connection (is_close: 1 close, 0 keep-alive
 * where HTTP/1.0 needs it, -1 none). */
void hd_http_build_head(hd_http_t *h, hd_sbuf_t *sb, int status, const char *extra, int is_close);
void hd_http_access_log(hd_http_t *h, int status, size_t bytes);
/* Frees the deferred response, if any. */
void hd_http_end_deferred(hd_http_t *h);

#endif
