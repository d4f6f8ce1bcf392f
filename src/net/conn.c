/* SPDX-License-Identifier: MIT */
/*
 * conn.c: the connection layer. It creates connections (the accept hand-off), owns their state
 * and its own per-worker state (conn_layer.h), and does the reading, the bounded output queue
 * with one writev per loop pass, TLS plumbing, the PROXY protocol header on listeners marked
 * for it (read before TLS or any handler sees a byte), the deadline heap, graceful finish
 * (lingering close) and freeing after the last handle closed. It uses the worker only through
 * herald/worker.h (the loop, counters, connection counts); nothing below calls back in but the
 * loop's own callbacks.
 */
#include "herald/conn.h"
#include "herald/worker.h"
#include "conn_layer.h"
#include "conn_priv.h"
#include "iplimit.h"

#include <string.h>

#define LINGER_MS         2000  /* discarding what the peer sends after our last byte */
#define FINISH_SEND_MS    30000 /* a finishing connection must drain some output this often */
#define READ_BUF_BYTES    (64 * 1024)
#define TLS_SCRATCH_BYTES (16 * 1024)
#define WREQ_POOL_MAX     1024
#define OUT_POOL_CAP      4 /* entries of a pooled output array (its first size) */
#define OUT_POOL_MAX      1024

/*
 * Write requests (about 200 bytes each) come from a per-worker pool: most flushes complete in
 * uv_try_write and need none, so an idle connection holds no request.
 */
typedef struct wreq_s {
    uv_write_t req;
    hd_conn_t *conn;
    struct wreq_s *next;
} wreq_t;

/* The layer's state on one worker (w->conns_), touched by that worker's thread only. */
struct hd_conn_worker_s {
    hd_worker_t *w;
    hd_list_t conns;            /* every connection not closing, by c->link */
    hd_list_t flush_list;       /* sockets with output queued this pass, by flush_link */
    hd_list_t dead_streams;     /* closed streams, freed at the end of the flush pass (c->link) */
    uv_prepare_t flush_prepare; /* flushes output queued by timers before the loop blocks */
    uv_check_t flush_check;     /* flushes output queued by I/O callbacks */
    uv_timer_t timer;           /* fires the earliest deadline of heap */
    hd_heap_t heap;             /* the connections' deadline nodes, earliest first */
    uint64_t timer_armed_at;
    wreq_t *wreq_pool; /* spare write requests */
    uint32_t wreq_pooled;
    void *out_pool; /* spare output arrays of OUT_POOL_CAP entries, linked by their first word */
    uint32_t out_pooled;
    uint64_t next_id;
    uint8_t open_handles; /* freed when the last of the three handles has closed */
    unsigned is_closing : 1;
    /* One read buffer per worker: a connection holds no read buffer while idle. */
    char read_buf[READ_BUF_BYTES];
    char tls_scratch[TLS_SCRATCH_BYTES];
};

static inline hd_conn_worker_t *cw_of(const hd_conn_t *c)
{
    return c->worker->conns_;
}

/*
 * A socket: the connection and what only a socket has, in one allocation (a stream is an
 * hd_conn_t alone: conn.h).
 */
typedef struct sock_s {
    hd_conn_t c; /* first: an hd_conn_t * of a socket is a sock_t * */
    uv_tcp_t tcp;
    hd_list_t flush_link; /* the worker's flush list while it has output to write */
    hd_tls_t *tls;        /* NULL on plain listeners */
    hd_out_t *wq;         /* in the uv_write in flight */
    uint32_t wq_len, wq_cap;
} sock_t;

static inline sock_t *sock_of(hd_conn_t *c)
{
    HD_ASSERT(!c->is_stream);
    return (sock_t *)c;
}

static inline hd_tls_t *tls_of(const hd_conn_t *c)
{
    return c->is_stream ? NULL : ((const sock_t *)c)->tls;
}

static void flush(hd_conn_t *c);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    hd_conn_t *c = h->data;
    hd_conn_worker_t *cw = cw_of(c);
    *buf = uv_buf_init(cw->read_buf, sizeof(cw->read_buf));
}

static int on_plaintext(void *arg, const char *data, size_t len)
{
    hd_conn_t *c = arg;
    if (c->is_closing || !c->ops->on_data)
        return 1;
    c->ops->on_data(c, data, len);
    return c->is_closing;
}

static hd_out_t *out_get(hd_conn_worker_t *cw);

/*
 * Appends buf[off..off + len) to the output queue (the reference passes to it). A stream's
 * queue waits for its carrier, told when it stops being empty; a socket's is flushed.
 */
static void push_out(hd_conn_t *c, hd_buf_t *buf, size_t off, size_t len)
{
    if (c->q_cap == 0 && (c->q = out_get(cw_of(c))) != NULL)
        c->q_cap = OUT_POOL_CAP;
    if (c->q_len == c->q_cap) {
        size_t cap = c->q_cap;
        c->q = hd_grow_array(c->q, &cap, (size_t)c->q_len + 1, sizeof(*c->q), OUT_POOL_CAP);
        c->q_cap = (uint32_t)cap;
    }
    c->q[c->q_len++] = (hd_out_t){buf, (uint32_t)off, (uint32_t)len};
    c->queued_bytes += len;
    if (c->is_stream) {
        if (c->carrier)
            c->carrier->ops->on_output(c);
        return;
    }
    if (!hd_list_linked(&sock_of(c)->flush_link))
        hd_list_insert_tail(&cw_of(c)->flush_list, &sock_of(c)->flush_link);
}

static void queue_tls_output(hd_conn_t *c)
{
    hd_buf_t *b = hd_tls_take(sock_of(c)->tls);
    if (!b)
        return;
    if (c->is_closing) {
        hd_buf_unref(b);
        return;
    }
    push_out(c, b, 0, b->len);
}

void hd_conn_deliver_(hd_conn_t *c, const char *data, size_t len)
{
    hd_tls_t *tls = sock_of(c)->tls;
    if (!tls) {
        c->ops->on_data(c, data, len);
        return;
    }
    const char *why = NULL;
    int was_established = tls->is_established;
    hd_conn_worker_t *cw = cw_of(c);
    int rc = hd_tls_feed(tls, data, len, cw->tls_scratch, sizeof(cw->tls_scratch), on_plaintext, c,
                         &why);
    if (!c->is_closing)
        queue_tls_output(c);
    if (rc == HD_ETLS) {
        if (!was_established) {
            HD_STAT_INC(c->worker, tls_handshake_failures);
            hd_conn_log(HD_LOG_INFO, c, "TLS handshake failed: %s", why ? why : "?");
        } else {
            hd_conn_log(HD_LOG_INFO, c, "TLS error: %s", why ? why : "?");
        }
        /* Send the alert OpenSSL queued, then close. */
        if (!c->is_closing)
            hd_conn_finish(c);
    } else if (rc == 1 && !c->is_closing) {
        if (c->ops->on_eof)
            c->ops->on_eof(c);
        else
            hd_conn_close(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hd_conn_t *c = s->data;
    if (c->is_closing)
        return;
    if (nread > 0) {
        if (c->ops->on_clear_data)
            c->ops->on_clear_data(c, buf->base, (size_t)nread); /* before TLS (conn_proxy.c) */
        else
            hd_conn_deliver_(c, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_EOF)
        c->is_reading = 0; /* libuv stops reading at EOF; a linger re-reads to see it again */
    if (nread == UV_EOF && c->ops->on_eof) {
        c->ops->on_eof(c);
        return;
    }
    if (nread != UV_EOF)
        hd_conn_log(HD_LOG_DEBUG, c, "read error: %s", uv_strerror((int)nread));
    hd_conn_close(c);
}

void hd_conn_read_start(hd_conn_t *c)
{
    if (c->is_reading || c->is_closing)
        return;
    if (c->is_stream) {
        c->is_reading = 1; /* the carrier reads and holds back what a stream does not read */
        if (c->carrier && c->carrier->ops->on_read_start)
            c->carrier->ops->on_read_start(c);
        return;
    }
    if (uv_read_start((uv_stream_t *)&sock_of(c)->tcp, on_alloc, on_read) == 0)
        c->is_reading = 1;
}

void hd_conn_read_stop(hd_conn_t *c)
{
    if (!c->is_reading)
        return;
    if (!c->is_stream)
        uv_read_stop((uv_stream_t *)&sock_of(c)->tcp);
    c->is_reading = 0;
}

int hd_conn_send(hd_conn_t *c, hd_buf_t *buf, size_t off, size_t len)
{
    if (c->is_closing || c->is_finishing)
        return UV_ECANCELED;
    if (len == 0)
        return 0;
    hd_tls_t *tls = tls_of(c);
    if (tls) {
        if (hd_tls_encrypt(tls, buf->data + off, len) != 0) {
            hd_conn_close(c);
            return UV_ECANCELED;
        }
        queue_tls_output(c);
        return 0;
    }
    push_out(c, hd_buf_ref(buf), off, len);
    return 0;
}

int hd_conn_send_copy(hd_conn_t *c, const void *data, size_t len)
{
    if (c->is_closing || c->is_finishing)
        return UV_ECANCELED;
    hd_tls_t *tls = tls_of(c);
    if (tls) {
        if (hd_tls_encrypt(tls, data, len) != 0) {
            hd_conn_close(c);
            return UV_ECANCELED;
        }
        queue_tls_output(c);
        return 0;
    }
    hd_buf_t *b = hd_buf_new_copy(data, len);
    push_out(c, b, 0, len);
    return 0;
}

static void release_out(hd_out_t *q, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        hd_buf_unref(q[i].buf);
}

static void start_linger(hd_conn_t *c);

static wreq_t *wreq_get(hd_conn_worker_t *cw)
{
    wreq_t *r = cw->wreq_pool;
    if (r) {
        cw->wreq_pool = r->next;
        cw->wreq_pooled--;
        return r;
    }
    return hd_malloc(sizeof(*r));
}

static void wreq_put(hd_conn_worker_t *cw, wreq_t *r)
{
    if (cw->wreq_pooled >= WREQ_POOL_MAX) {
        free(r);
        return;
    }
    r->next = cw->wreq_pool;
    cw->wreq_pool = r;
    cw->wreq_pooled++;
}

/*
 * Output arrays of the first size come from a per-worker pool too: a connection holds one only
 * while it has output, so without the pool every delivery to an idle subscriber would allocate
 * and free one (about 220 instructions per delivery under callgrind).
 */
static hd_out_t *out_get(hd_conn_worker_t *cw)
{
    void *a = cw->out_pool;
    if (a) {
        memcpy(&cw->out_pool, a, sizeof(void *));
        cw->out_pooled--;
    }
    return a;
}

static void out_put(hd_conn_worker_t *cw, hd_out_t *a, uint32_t cap)
{
    if (a == NULL)
        return;
    if (cap != OUT_POOL_CAP || cw->out_pooled >= OUT_POOL_MAX) {
        free(a);
        return;
    }
    memcpy(a, &cw->out_pool, sizeof(void *));
    cw->out_pool = a;
    cw->out_pooled++;
}

/* Drops the first `bytes` written bytes of wq: finished entries are released. */
static void consume_written(sock_t *k, size_t bytes)
{
    uint32_t i = 0;
    k->c.queued_bytes -= bytes;
    while (i < k->wq_len && bytes >= k->wq[i].len) {
        bytes -= k->wq[i].len;
        hd_buf_unref(k->wq[i].buf);
        i++;
    }
    if (i < k->wq_len && bytes) {
        k->wq[i].off += (uint32_t)bytes;
        k->wq[i].len -= (uint32_t)bytes;
    }
    memmove(k->wq, k->wq + i, (k->wq_len - i) * sizeof(*k->wq));
    k->wq_len -= i;
}

/*
 * Everything handed over has been written: go on with what came meanwhile, or finish. The
 * emptied array goes back to the worker's pool (first size) or to malloc, so a connection holds
 * no output array while it has nothing to write, and a slow consumer's grown array is not kept.
 */
static void written(hd_conn_t *c)
{
    sock_t *k = sock_of(c);
    HD_ASSERT(k->wq_len == 0);
    out_put(cw_of(c), k->wq, k->wq_cap);
    k->wq = NULL;
    k->wq_cap = 0;
    if (c->is_finishing)
        hd_conn_set_timeout(c, FINISH_SEND_MS); /* progress: the peer is still reading */
    if (c->q_len > 0) {
        if (!hd_list_linked(&sock_of(c)->flush_link))
            hd_list_insert_tail(&cw_of(c)->flush_list, &sock_of(c)->flush_link);
        return;
    }
    if (c->is_finishing) {
        start_linger(c);
        return;
    }
    if (c->ops->on_drain)
        c->ops->on_drain(c);
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *r = hd_container_of(req, wreq_t, req);
    hd_conn_t *c = r->conn;
    sock_t *k = sock_of(c);
    wreq_put(cw_of(c), r);
    size_t bytes = 0;
    for (uint32_t i = 0; i < k->wq_len; i++)
        bytes += k->wq[i].len;
    consume_written(k, bytes);
    c->is_writing = 0;
    if (c->is_closing)
        return;
    if (status < 0) {
        hd_conn_log(HD_LOG_DEBUG, c, "write error: %s", uv_strerror(status));
        hd_conn_close(c);
        return;
    }
    written(c);
}

static void flush(hd_conn_t *c)
{
    if (hd_list_linked(&sock_of(c)->flush_link))
        hd_list_remove(&sock_of(c)->flush_link);
    if (c->is_flush_wanted && !c->is_writing && !c->is_closing) {
        c->is_flush_wanted = 0;
        if (c->ops->on_flush)
            c->ops->on_flush(c); /* may queue output, and ask again */
        if (c->is_closing)
            return;
        if (!c->is_flush_wanted && hd_list_linked(&sock_of(c)->flush_link))
            hd_list_remove(&sock_of(c)->flush_link);
    }
    if (c->is_writing || c->q_len == 0 || c->is_closing || c->is_stream)
        return;
    /* Swap queues: what was queued becomes the write in flight. */
    sock_t *k = sock_of(c);
    hd_out_t *t = k->wq;
    uint32_t tcap = k->wq_cap;
    k->wq = c->q;
    k->wq_cap = c->q_cap;
    k->wq_len = c->q_len;
    c->q = t;
    c->q_cap = tcap;
    c->q_len = 0;

    uv_buf_t stackbufs[64];
    uv_buf_t *bufs =
        k->wq_len <= HD_ARRAY_SIZE(stackbufs) ? stackbufs : hd_malloc(k->wq_len * sizeof(uv_buf_t));
    size_t total = 0;
    for (uint32_t i = 0; i < k->wq_len; i++) {
        bufs[i] = uv_buf_init(k->wq[i].buf->data + k->wq[i].off, k->wq[i].len);
        total += k->wq[i].len;
    }
    /* One writev, now; only what the socket does not take waits for a uv_write. */
    HD_STAT_INC(c->worker, writes);
    int n = uv_try_write((uv_stream_t *)&k->tcp, bufs, k->wq_len);
    if (n < 0 && n != UV_EAGAIN) {
        if (bufs != stackbufs)
            free(bufs);
        hd_conn_log(HD_LOG_DEBUG, c, "write failed: %s", uv_strerror(n));
        hd_conn_close(c);
        return;
    }
    if (n > 0)
        consume_written(k, (size_t)n);
    if ((size_t)(n > 0 ? n : 0) == total) {
        if (bufs != stackbufs)
            free(bufs);
        written(c);
        return;
    }
    for (uint32_t i = 0; i < k->wq_len; i++)
        bufs[i] = uv_buf_init(k->wq[i].buf->data + k->wq[i].off, k->wq[i].len);
    wreq_t *r = wreq_get(cw_of(c));
    r->conn = c;
    int rc = uv_write(&r->req, (uv_stream_t *)&k->tcp, bufs, k->wq_len, on_write);
    if (bufs != stackbufs)
        free(bufs);
    if (rc < 0) {
        wreq_put(cw_of(c), r);
        hd_conn_log(HD_LOG_DEBUG, c, "write failed: %s", uv_strerror(rc));
        hd_conn_close(c);
        return;
    }
    c->is_writing = 1;
}

/* Writes what every connection queued in this loop pass (one writev each). */
static void flush_all(hd_conn_worker_t *cw)
{
    while (!hd_list_empty(&cw->flush_list)) {
        hd_conn_t *c = &hd_container_of(cw->flush_list.next, sock_t, flush_link)->c;
        flush(c);
    }
}

/*
 * Both run first what this worker posted to itself in the pass (a publish's own deliveries
 * and reply), so that its output leaves with the rest; and again for whatever writing posts
 * (a drained connection parses its next pipelined request), so that the loop never blocks
 * with mail of its own waiting.
 */
static void free_stream(hd_conn_t *c);

static void run_and_flush(hd_conn_worker_t *cw)
{
    do {
        hd_worker_run_local(cw->w);
        flush_all(cw);
    } while (cw->w->has_local_mail);
    hd_worker_send_wakes(cw->w); /* the other loops this pass queued for (hooks' events) */
    while (!hd_list_empty(&cw->dead_streams)) {
        hd_conn_t *c = hd_container_of(cw->dead_streams.next, hd_conn_t, link);
        hd_list_remove(&c->link);
        free_stream(c);
    }
}

static void on_prepare(uv_prepare_t *p)
{
    run_and_flush(p->data);
}

static void on_check(uv_check_t *c)
{
    run_and_flush(c->data);
}

/*
 * Timeouts: each worker keeps its connections' deadlines in one binary min-heap (core/heap.c)
 * and arms one uv timer for the earliest. A connection holds its heap node (deadline.key: when,
 * in loop milliseconds; deadline.idx: 0 when it is in no heap) instead of a timer handle.
 *
 * The heap is kept lazily: a keep-alive request moves its connection's deadline four times
 * (header, body, none, keep-alive), and re-keying a node among every connection of the
 * worker walks the heap (4% of the CPU of the notify scenario, bench/benchmarks-notes.md).
 * So a deadline that moves later leaves its node where it is and notes how much later it is
 * (deadline.aux: key + aux is the deadline), and a deadline removed leaves its node
 * marked (deadline_off); when such a node comes first, on_timer moves it to the real deadline
 * or drops it. Only a deadline moved earlier, or a first one, touches the heap. A connection
 * busy with requests then re-keys its node about once per header_timeout instead of four
 * times a request.
 */
static hd_conn_t *conn_of_deadline(hd_heap_node_t *n)
{
    return hd_container_of(n, hd_conn_t, deadline);
}

static void on_timer(uv_timer_t *t);

/* Arms the worker's timer for the earliest deadline (or stops it). */
static void rearm(hd_conn_worker_t *cw)
{
    hd_heap_node_t *first = hd_heap_min(&cw->heap);
    if (!first) {
        uv_timer_stop(&cw->timer);
        return;
    }
    uint64_t now = uv_now(&cw->w->loop), at = first->key;
    if (cw->timer_armed_at == at && uv_is_active((uv_handle_t *)&cw->timer))
        return;
    cw->timer_armed_at = at;
    uv_timer_start(&cw->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    hd_conn_worker_t *cw = t->data;
    uint64_t now = uv_now(&cw->w->loop);
    cw->timer_armed_at = 0;
    hd_heap_node_t *first;
    while ((first = hd_heap_min(&cw->heap)) != NULL && first->key <= now) {
        hd_conn_t *c = conn_of_deadline(first);
        if (c->deadline.aux && !c->deadline_off) {
            first->key += c->deadline.aux; /* moved later meanwhile: its place in the heap */
            c->deadline.aux = 0;
            hd_heap_update(&cw->heap, first);
            continue;
        }
        hd_heap_remove(&cw->heap, first);
        c->deadline.aux = 0;
        if (c->is_closing || c->deadline_off) {
            c->deadline_off = 0;
            continue;
        }
        if (c->ops->on_timeout)
            c->ops->on_timeout(c); /* may set a new deadline */
        else
            hd_conn_close(c);
    }
    rearm(cw);
}

void hd_conn_set_timeout(hd_conn_t *c, uint64_t timeout_ms)
{
    hd_conn_worker_t *cw = cw_of(c);
    if (c->is_closing)
        return;
    if (timeout_ms == 0) {
        c->deadline_off = hd_heap_contains(&c->deadline); /* dropped when it comes first */
        return;
    }
    uint64_t at = uv_now(&cw->w->loop) + timeout_ms;
    if (hd_heap_contains(&c->deadline) && at >= c->deadline.key &&
        at - c->deadline.key <= UINT32_MAX) {
        c->deadline.aux = (uint32_t)(at - c->deadline.key); /* later: the node stays */
        c->deadline_off = 0;
        return;
    }
    c->deadline.key = at;
    c->deadline.aux = 0;
    c->deadline_off = 0;
    if (hd_heap_contains(&c->deadline))
        hd_heap_update(&cw->heap, &c->deadline);
    else
        hd_heap_push(&cw->heap, &c->deadline);
    if (hd_heap_min(&cw->heap) == &c->deadline || !uv_is_active((uv_handle_t *)&cw->timer))
        rearm(cw);
}

/* While lingering: discard what the peer sends until it closes or the linger time ends. */
static void linger_data(hd_conn_t *c, const char *data, size_t len)
{
    (void)c;
    (void)data;
    (void)len;
}

static const hd_conn_ops_t linger_ops = {
    .name = "linger",
    .on_data = linger_data,
};

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    hd_conn_t *c = req->data;
    (void)status;
    free(req);
    c->is_shutting = 0;
    if (c->is_closing)
        return;
    hd_conn_set_timeout(c, LINGER_MS);
    hd_conn_read_start(c);
}

static void start_linger(hd_conn_t *c)
{
    sock_t *k = sock_of(c);
    if (c->is_shutting || c->is_closing)
        return;
    uv_shutdown_t *req = hd_malloc(sizeof(*req));
    req->data = c;
    c->is_shutting = 1;
    if (uv_shutdown(req, (uv_stream_t *)&k->tcp, on_shutdown_done) < 0) {
        free(req);
        c->is_shutting = 0;
        hd_conn_close(c);
    }
}

void hd_conn_remove_handler_(hd_conn_t *c)
{
    const hd_conn_ops_t *ops = c->ops;
    c->ops = &linger_ops;
    if (ops && ops->on_close)
        ops->on_close(c);
    c->data = NULL;
}

void hd_conn_finish(hd_conn_t *c)
{
    if (c->is_closing || c->is_finishing)
        return;
    hd_conn_remove_handler_(c);
    if (c->is_stream) {
        /* Ends once the carrier took the queue; a peer that stops reading it meanwhile is cut
         * off (the lingering handler has no on_timeout: the timer closes the stream). */
        c->is_finishing = 1;
        hd_conn_set_timeout(c, FINISH_SEND_MS);
        if (c->carrier)
            c->carrier->ops->on_finish(c);
        return;
    }
    if (sock_of(c)->tls) {
        hd_tls_shutdown(sock_of(c)->tls);
        queue_tls_output(c);
    }
    c->is_finishing = 1;
    /* Until the output is written, only a peer that stops reading for FINISH_SEND_MS is cut
     * off; the linger proper (LINGER_MS) starts once the write side is shut down. */
    hd_conn_set_timeout(c, FINISH_SEND_MS);
    if (!c->is_writing && c->q_len == 0)
        start_linger(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    hd_conn_t *c = h->data;
    sock_t *k = sock_of(c);
    release_out(c->q, c->q_len);
    release_out(k->wq, k->wq_len);
    free(c->q);
    free(k->wq);
    if (k->tls) {
        hd_tls_dispose(k->tls);
        free(k->tls);
    }
    hd_identity_unref(c->identity);
    hd_worker_t *w = c->worker;
    if (c->is_ip_counted)
        hd_iplimit_release(w->iplimit, &c->client, uv_now(&w->loop), w->conf->connect_rate_per_ip,
                           w->conf->connect_burst_per_ip);
    free(c);
    hd_worker_conn_freed(w);
}

void hd_conn_close(hd_conn_t *c)
{
    if (c->is_closing)
        return;
    hd_conn_remove_handler_(c);
    c->is_closing = 1;
    if (!c->is_stream && hd_list_linked(&sock_of(c)->flush_link))
        hd_list_remove(&sock_of(c)->flush_link);
    if (hd_list_linked(&c->link))
        hd_list_remove(&c->link);
    if (hd_heap_contains(&c->deadline))
        hd_heap_remove(&cw_of(c)->heap,
                       &c->deadline); /* the worker's timer may fire early once: harmless */
    if (c->is_stream) {
        if (c->carrier)
            c->carrier->ops->on_close(c);
        c->carrier = NULL;
        /* Callers up the stack may still look at c: freed at the end of the flush pass. */
        hd_list_insert_tail(&cw_of(c)->dead_streams, &c->link);
        return;
    }
    uv_close((uv_handle_t *)&sock_of(c)->tcp, on_handle_closed);
}

/* ---- streams: connections carried inside another ---- */

/* Where a stream's carrier state starts in their allocation (malloc's alignment). */
#define CARRIER_OFF ((sizeof(hd_conn_t) + 15) & ~(size_t)15)

static void free_stream(hd_conn_t *c)
{
    release_out(c->q, c->q_len);
    out_put(cw_of(c), c->q, c->q_cap);
    c->q = NULL;
    hd_identity_unref(c->identity);
    c->identity = NULL;
    c->is_stream_freed = 1;
    if (!c->is_carrier_held)
        free(c);
}

void hd_conn_carrier_release(hd_carrier_t *carrier)
{
    hd_conn_t *c = (hd_conn_t *)(void *)((char *)carrier - CARRIER_OFF);
    HD_ASSERT(c->is_carrier_held);
    c->is_carrier_held = 0;
    if (c->is_stream_freed)
        free(c);
}

hd_conn_t *hd_conn_stream_new(hd_conn_t *parent, const hd_carrier_ops_t *ops, size_t carrier_size)
{
    hd_worker_t *w = parent->worker;
    hd_conn_worker_t *cw = w->conns_;
    HD_ASSERT(carrier_size >= sizeof(hd_carrier_t));
    hd_conn_t *c = hd_calloc(1, CARRIER_OFF + carrier_size);
    hd_carrier_t *carrier = (hd_carrier_t *)(void *)((char *)c + CARRIER_OFF);
    carrier->ops = ops;
    c->is_carrier_held = 1;
    c->worker = w;
    c->id = ((uint64_t)w->id << 48) | ++cw->next_id;
    hd_list_init(&c->link);
    c->client = parent->client;
    c->is_admin_listener = parent->is_admin_listener;
    c->is_tls = parent->is_tls;
    c->is_unix_peer = parent->is_unix_peer;
    c->is_stream = 1;
    c->carrier = carrier;
    /* Just before its parent: a walk of the list (hd_conn_foreach, shutdown) meets a parent's
     * streams before it, so closing the parent never removes the walk's next entry. */
    hd_list_insert_tail(hd_list_linked(&parent->link) ? &parent->link : &cw->conns, &c->link);
    return c;
}

void hd_conn_stream_copy(hd_conn_t *s, void *dst, size_t len)
{
    HD_ASSERT(len <= s->queued_bytes);
    char *d = dst;
    uint32_t i = 0;
    s->queued_bytes -= len;
    while (len > 0) {
        hd_out_t *o = &s->q[i];
        size_t n = len < o->len ? len : o->len;
        memcpy(d, o->buf->data + o->off, n);
        d += n;
        len -= n;
        if (n == o->len) {
            hd_buf_unref(o->buf);
            i++;
        } else {
            o->off += (uint32_t)n;
            o->len -= (uint32_t)n;
        }
    }
    memmove(s->q, s->q + i, (s->q_len - i) * sizeof(*s->q));
    s->q_len -= i;
    if (s->q_len == 0) {
        /* An idle stream holds no array, as an idle socket: back to the worker's pool. */
        out_put(cw_of(s), s->q, s->q_cap);
        s->q = NULL;
        s->q_cap = 0;
    }
}

void hd_conn_stream_drained(hd_conn_t *s)
{
    if (s->is_closing || s->is_finishing || s->q_len > 0)
        return;
    if (s->ops && s->ops->on_drain)
        s->ops->on_drain(s);
}

void hd_conn_want_flush(hd_conn_t *c)
{
    if (c->is_closing)
        return;
    c->is_flush_wanted = 1;
    if (!hd_list_linked(&sock_of(c)->flush_link))
        hd_list_insert_tail(&cw_of(c)->flush_list, &sock_of(c)->flush_link);
}

void hd_conn_flush_first(hd_conn_t *c)
{
    if (c->is_stream || c->is_closing || !hd_list_linked(&sock_of(c)->flush_link))
        return;
    hd_list_remove(&sock_of(c)->flush_link);
    hd_list_insert_tail(cw_of(c)->flush_list.next, &sock_of(c)->flush_link); /* after the head */
}

const char *hd_conn_alpn(const hd_conn_t *c, unsigned *len)
{
    const unsigned char *p = NULL;
    hd_tls_t *tls = tls_of(c);
    *len = 0;
    if (!tls || !tls->ssl)
        return NULL;
    SSL_get0_alpn_selected(tls->ssl, &p, len);
    return *len ? (const char *)p : NULL;
}

const char *hd_conn_peer(hd_conn_t *c)
{
    static __thread char text[HD_IP_TEXT_MAX];
    hd_ip_format_port(&c->client, text, sizeof(text));
    return text;
}

/* ---- creation: the accept hand-off ---- */

static hd_conn_t *conn_new(hd_worker_t *w)
{
    hd_conn_worker_t *cw = w->conns_;
    sock_t *k = hd_calloc(1, sizeof(*k));
    hd_conn_t *c = &k->c;
    c->worker = w;
    c->id = ((uint64_t)w->id << 48) | ++cw->next_id;
    k->tcp.data = c;
    hd_list_init(&sock_of(c)->flush_link);
    hd_list_init(&c->link);
    uv_tcp_init(&w->loop, &k->tcp);
    hd_worker_conn_opened(w);
    return c;
}

/* The socket is ours: note its peer, list the connection and set up TLS. nodelay: set
 * TCP_NODELAY (an accepted socket has it from its listener, listener.c bind_one). */
static hd_conn_t *conn_ready(hd_conn_t *c, SSL_CTX *tls_ctx, int nodelay)
{
    sock_t *k = sock_of(c);
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (uv_tcp_getpeername(&k->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        hd_ip_from_sockaddr(&c->client, (struct sockaddr *)&ss);
        c->is_unix_peer = ss.ss_family == AF_UNIX;
    }
    if (nodelay)
        uv_tcp_nodelay(&k->tcp, 1);
    hd_list_insert_tail(&cw_of(c)->conns, &c->link);
    if (tls_ctx) {
        k->tls = hd_calloc(1, sizeof(*k->tls));
        if (hd_tls_init(k->tls, tls_ctx) != 0) {
            free(k->tls);
            k->tls = NULL;
            hd_conn_close(c);
            return NULL;
        }
        c->is_tls = 1;
    }
    return c;
}

hd_conn_t *hd_conn_accept(hd_worker_t *w, uv_stream_t *server, SSL_CTX *tls_ctx)
{
    hd_conn_t *c = conn_new(w);
    if (uv_accept(server, (uv_stream_t *)&sock_of(c)->tcp) != 0) {
        hd_conn_close(c);
        return NULL;
    }
    return conn_ready(c, tls_ctx, 0);
}

hd_conn_t *hd_conn_open(hd_worker_t *w, int fd)
{
    hd_conn_t *c = conn_new(w);
    if (uv_tcp_open(&sock_of(c)->tcp, fd) != 0) {
        hd_conn_close(c);
        return NULL;
    }
    return conn_ready(c, NULL, 1);
}

/* ---- the layer on a worker ---- */

void hd_conn_worker_init(hd_worker_t *w)
{
    hd_conn_worker_t *cw = hd_calloc(1, sizeof(*cw));
    cw->w = w;
    hd_list_init(&cw->conns);
    hd_list_init(&cw->flush_list);
    hd_list_init(&cw->dead_streams);
    hd_heap_init(&cw->heap, 64);
    uv_prepare_init(&w->loop, &cw->flush_prepare);
    cw->flush_prepare.data = cw;
    uv_prepare_start(&cw->flush_prepare, on_prepare);
    uv_check_init(&w->loop, &cw->flush_check);
    cw->flush_check.data = cw;
    uv_check_start(&cw->flush_check, on_check);
    uv_timer_init(&w->loop, &cw->timer);
    cw->timer.data = cw;
    cw->open_handles = 3;
    w->conns_ = cw;
}

static void on_worker_handle_closed(uv_handle_t *h)
{
    hd_conn_worker_t *cw = h->data;
    if (--cw->open_handles > 0)
        return;
    while (!hd_list_empty(&cw->dead_streams)) {
        hd_conn_t *c = hd_container_of(cw->dead_streams.next, hd_conn_t, link);
        hd_list_remove(&c->link);
        free_stream(c);
    }
    while (cw->wreq_pool) {
        wreq_t *r = cw->wreq_pool;
        cw->wreq_pool = r->next;
        free(r);
    }
    for (hd_out_t *a; (a = out_get(cw)) != NULL;)
        free(a);
    hd_heap_dispose(&cw->heap);
    cw->w->conns_ = NULL;
    free(cw);
}

void hd_conn_worker_close(hd_worker_t *w)
{
    hd_conn_worker_t *cw = w->conns_;
    if (!cw || cw->is_closing)
        return;
    HD_ASSERT(hd_list_empty(&cw->conns));
    cw->is_closing = 1;
    uv_close((uv_handle_t *)&cw->flush_prepare, on_worker_handle_closed);
    uv_close((uv_handle_t *)&cw->flush_check, on_worker_handle_closed);
    uv_close((uv_handle_t *)&cw->timer, on_worker_handle_closed);
}

void hd_conn_shutdown_all(hd_worker_t *w)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns_->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        if (c->ops->on_shutdown)
            c->ops->on_shutdown(c);
        else
            hd_conn_close(c);
    }
}

void hd_conn_set_identity(hd_conn_t *c, hd_identity_t *id)
{
    hd_identity_t *old = c->identity;
    c->identity = id ? hd_identity_ref(id) : NULL;
    hd_identity_unref(old);
}

void hd_conn_foreach(hd_worker_t *w, void (*fn)(hd_conn_t *c, void *arg), void *arg)
{
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns_->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        if (!c->is_closing)
            fn(c, arg);
    }
}

void hd_conn_close_all(hd_worker_t *w)
{
    /* Closing a connection closes the streams it carries, which may be next on the list. */
    while (!hd_list_empty(&w->conns_->conns))
        hd_conn_close(hd_container_of(w->conns_->conns.next, hd_conn_t, link));
}

int hd_conn_census(hd_worker_t *w, hd_conn_census_t *out, const char **why)
{
    hd_conn_worker_t *cw = w->conns_;
    hd_list_t *pos, *tmp;
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (!cw)
        return 0;
    hd_list_foreach_safe(pos, tmp, &cw->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        out->conns++;
        if (c->is_closing)
            *why = "a closing connection is still listed";
    }
    hd_list_foreach_safe(pos, tmp, &cw->flush_list)
    {
        if (hd_container_of(pos, sock_t, flush_link)->c.is_closing)
            *why = "a closing connection is on the flush list";
        out->flushing++;
    }
    for (uint32_t i = 0; i < cw->heap.n; i++)
        out->timers += !conn_of_deadline(cw->heap.a[i])->deadline_off;
    const char *heap_why = hd_heap_check(&cw->heap);
    if (heap_why)
        *why = heap_why;
    for (uint32_t i = 0; i < cw->heap.n; i++)
        if (conn_of_deadline(cw->heap.a[i])->is_closing)
            *why = "a closing connection has a deadline";
    for (wreq_t *r = cw->wreq_pool; r; r = r->next)
        out->pooled_wreqs++;
    if (out->pooled_wreqs != cw->wreq_pooled)
        *why = "the write request pool count is wrong";
    return *why ? UV_EINVAL : 0;
}
