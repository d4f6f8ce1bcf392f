/* SPDX-License-Identifier: MIT */
/*
 * conn.c: a connection's I/O. Reading (into the worker's one read buffer), TLS plumbing, the
 * bounded output queue written with one write per loop pass (the flush hooks, the flush list;
 * many connections' writes in one system call where the kernel has Linux AIO, flush_batch),
 * graceful finish (lingering close), closing and freeing after the last handle closed, and a
 * connection's small accessors. It uses the worker only through herald/worker.h (the loop,
 * counters, connection counts); the layer's other files (conn_internal.h) call in, conn.c calls
 * only conn_timeout.c (deadlines) and conn_stream.c (freeing a closed stream).
 */
#include "herald/conn.h"
#include "herald/worker.h"
#include "conn_internal.h"
#include "conn_priv.h"
#include "iplimit.h"

#include <string.h>

#define LINGER_MS      2000  /* discarding what the peer sends after our last byte */
#define FINISH_SEND_MS 30000 /* a finishing connection must drain some output this often */

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

/*
 * Appends buf[off..off + len) to the output queue (the reference passes to it). A stream's
 * queue waits for its carrier, told when it stops being empty; a socket's is flushed.
 */
static void push_out(hd_conn_t *c, hd_buf_t *buf, size_t off, size_t len)
{
    if (c->q_cap == 0 && (c->q = hd_out_get(&cw_of(c)->pool)) != NULL)
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

static void start_linger(hd_conn_t *c);

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
    hd_out_put(&cw_of(c)->pool, k->wq, k->wq_cap);
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
    hd_wreq_t *r = hd_container_of(req, hd_wreq_t, req);
    hd_conn_t *c = r->conn;
    sock_t *k = sock_of(c);
    hd_wreq_put(&cw_of(c)->pool, r);
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

/*
 * What c has to write now: runs its on_flush when it asked for one, then makes its queue the
 * write in flight (k->wq, the queues swapped). Returns 0 when there is nothing to write now:
 * no output, a write still in flight, c closed (perhaps by its on_flush), or a stream.
 */
static int take_output(hd_conn_t *c)
{
    if (hd_list_linked(&sock_of(c)->flush_link))
        hd_list_remove(&sock_of(c)->flush_link);
    if (c->is_flush_wanted && !c->is_writing && !c->is_closing) {
        c->is_flush_wanted = 0;
        if (c->ops->on_flush)
            c->ops->on_flush(c); /* may queue output, and ask again */
        if (c->is_closing)
            return 0;
        if (!c->is_flush_wanted && hd_list_linked(&sock_of(c)->flush_link))
            hd_list_remove(&sock_of(c)->flush_link);
    }
    if (c->is_writing || c->q_len == 0 || c->is_closing || c->is_stream)
        return 0;
    sock_t *k = sock_of(c);
    hd_out_t *t = k->wq;
    uint32_t tcap = k->wq_cap;
    k->wq = c->q;
    k->wq_cap = c->q_cap;
    k->wq_len = c->q_len;
    c->q = t;
    c->q_cap = tcap;
    c->q_len = 0;
    return 1;
}

/* The write in flight of k as buffers (bufs has room for k->wq_len); returns its bytes. */
static size_t fill_bufs(const sock_t *k, uv_buf_t *bufs)
{
    size_t total = 0;
    for (uint32_t i = 0; i < k->wq_len; i++) {
        bufs[i] = uv_buf_init(k->wq[i].buf->data + k->wq[i].off, k->wq[i].len);
        total += k->wq[i].len;
    }
    return total;
}

/*
 * What became of the first write of c's write in flight (total bytes, in bufs), n as
 * uv_try_write gives it: all of it written, c goes on (written); a part or nothing (UV_EAGAIN),
 * the rest waits in a uv_write for the socket to take it; an error closes c. bufs is scratch
 * room for k->wq_len buffers, free again on return (uv_write copies them).
 */
static void write_done(hd_conn_t *c, uv_buf_t *bufs, size_t total, int n)
{
    sock_t *k = sock_of(c);
    if (n < 0 && n != UV_EAGAIN) {
        hd_conn_log(HD_LOG_DEBUG, c, "write failed: %s", uv_strerror(n));
        hd_conn_close(c);
        return;
    }
    if (n > 0)
        consume_written(k, (size_t)n);
    if ((size_t)(n > 0 ? n : 0) == total) {
        written(c);
        return;
    }
    fill_bufs(k, bufs);
    hd_wreq_t *r = hd_wreq_get(&cw_of(c)->pool);
    r->conn = c;
    int rc = uv_write(&r->req, (uv_stream_t *)&k->tcp, bufs, k->wq_len, on_write);
    if (rc < 0) {
        hd_wreq_put(&cw_of(c)->pool, r);
        hd_conn_log(HD_LOG_DEBUG, c, "write failed: %s", uv_strerror(rc));
        hd_conn_close(c);
        return;
    }
    c->is_writing = 1;
}

/* Writes c's write in flight now: one writev (uv_try_write), the rest as write_done says. */
static void write_now(hd_conn_t *c)
{
    sock_t *k = sock_of(c);
    uv_buf_t stackbufs[64];
    uv_buf_t *bufs =
        k->wq_len <= HD_ARRAY_SIZE(stackbufs) ? stackbufs : hd_malloc(k->wq_len * sizeof(uv_buf_t));
    size_t total = fill_bufs(k, bufs);
    HD_STAT_INC(c->worker, writes);
    write_done(c, bufs, total, uv_try_write((uv_stream_t *)&k->tcp, bufs, k->wq_len));
    if (bufs != stackbufs)
        free(bufs);
}

static void flush(hd_conn_t *c)
{
    if (take_output(c))
        write_now(c);
}

/*
 * The flush of the first connections of the flush list, whose writes go out in one system call
 * (herald/wbatch.h) instead of a writev each: a message to 2,500 subscribers of a worker is 40
 * io_submit calls, not 2,500 writev. Plain sockets only, and only with nothing of theirs queued
 * in libuv (one writer per socket: a connection whose earlier write waits in a uv_write is not
 * taken, take_output; libuv's own queue is checked besides); a TLS connection, or one with more
 * buffers than the batch has room for, is written at once (write_now).
 *
 *   1. take the output of up to HD_WBATCH_MAX connections: their on_flush runs here and may
 *      queue output or close any of them; a taken one is marked writing, so nothing takes its
 *      queue again before its result
 *   2. the batch of those still open (no callback runs from here to 3: a socket closed is a
 *      descriptor another thread may reuse at once, so it must not be in the batch)
 *   3. one io_submit; each result is what uv_try_write would have given
 *   4. each connection goes on as after uv_try_write (write_done): the callbacks this runs
 *      (on_drain, a close) may close connections later in the batch, which are then skipped
 *
 * A connection closed in 1 after its output was taken writes nothing: a close drops what is
 * queued (conn.h). A batch of one connection is one writev, as without batches. The batch adds
 * no wait: each write is made in the pass that flushes it, as before.
 */
static void flush_batch(hd_conn_worker_t *cw)
{
    hd_conn_t **cs = cw->batch;
    size_t nc = 0, used = 0;
    while (!hd_list_empty(&cw->flush_list) && nc < HD_WBATCH_MAX && used < BATCH_IOVS) {
        hd_conn_t *c = &hd_container_of(cw->flush_list.next, sock_t, flush_link)->c;
        if (!take_output(c))
            continue;
        sock_t *k = sock_of(c);
        if (k->tls || k->wq_len > BATCH_IOVS - used ||
            uv_stream_get_write_queue_size((uv_stream_t *)&k->tcp) != 0) {
            write_now(c);
            continue;
        }
        cw->batch_at[nc] = used;
        cw->batch_total[nc] = fill_bufs(k, cw->batch_iov + used);
        used += k->wq_len;
        c->is_writing = 1; /* taken: its result comes at 4 */
        cs[nc++] = c;
    }
    if (nc == 0)
        return;
    int slots[HD_WBATCH_MAX];
    ssize_t res[HD_WBATCH_MAX];
    size_t added = 0;
    for (size_t i = 0; i < nc; i++) {
        slots[i] = -1;
        if (cs[i]->is_closing)
            continue; /* its descriptor is closed (and libuv's fd -1) */
        uv_os_fd_t fd = -1;
        uv_fileno((const uv_handle_t *)&sock_of(cs[i])->tcp, &fd);
        slots[i] =
            hd_wbatch_add(cw->wbatch, fd, cw->batch_iov + cw->batch_at[i], sock_of(cs[i])->wq_len);
        added++;
    }
    if (added > 0)
        hd_wbatch_run(cw->wbatch, res); /* one alone: a writev, as uv_try_write */
    for (size_t i = 0; i < nc; i++) {
        hd_conn_t *c = cs[i];
        c->is_writing = 0;
        if (slots[i] < 0 || c->is_closing)
            continue; /* closed before its write or by an earlier result's callbacks */
        HD_STAT_INC(c->worker, writes);
        write_done(c, cw->batch_iov + cw->batch_at[i], cw->batch_total[i], (int)res[slots[i]]);
    }
}

/* Writes what every connection queued in this loop pass: one writev each, or many in one
 * system call where the kernel has AIO for herald (flush_batch). */
static void flush_all(hd_conn_worker_t *cw)
{
    while (!hd_list_empty(&cw->flush_list)) {
        if (cw->wbatch) {
            flush_batch(cw);
            continue;
        }
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
        hd_conn_free_stream_(c);
    }
}

void hd_conn_on_prepare_(uv_prepare_t *p)
{
    run_and_flush(p->data);
}

void hd_conn_on_check_(uv_check_t *c)
{
    run_and_flush(c->data);
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
    hd_out_release(c->q, c->q_len);
    hd_out_release(k->wq, k->wq_len);
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

/* ---- small accessors ---- */

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

void hd_conn_set_identity(hd_conn_t *c, hd_identity_t *id)
{
    hd_identity_t *old = c->identity;
    c->identity = id ? hd_identity_ref(id) : NULL;
    hd_identity_unref(old);
}
