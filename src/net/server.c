/* SPDX-License-Identifier: MIT */
/*
 * server.c: worker threads and their loops, SO_REUSEPORT listeners, accepting with node limits
 * (max_connections, accept_rate token bucket), the lock-free mailboxes, reload and the phased
 * graceful shutdown.
 *
 * Shutdown runs in three phases so that no message is ever posted to a loop that is gone:
 *   1. drain: workers close their listeners and ask every connection to finish; each reports
 *      "drained" when it has none left;
 *   2. stop:  when all drained (or shutdown_timeout passed) the main thread tells every worker
 *      to close what is left; each reports "stopped" once its connections are freed. With no
 *      connection left, nothing can post to another loop any more;
 *   3. exit:  the main thread tells every worker to close its remaining handles; the loops end
 *      and the threads are joined.
 */
#include "herald/server.h"
#include "herald/log.h"
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

struct hd_server_s {
    hd_conf_t *conf;
    uv_loop_t *main_loop;
    uv_async_t main_wakeup;
    hd_mpsc_t main_mailbox;
    hd_accept_cb accept_cb;
    SSL_CTX *tls_ctx;
    hd_worker_t **workers;
    unsigned n_workers;
    int *fds; /* [listener * n_workers + worker] */
    char (*bound)[80];
    size_t n_listens;
    unsigned char *listen_tls; /* per listener, fixed at start (listen needs a restart) */
    uint64_t n_conns;          /* atomic */
    uv_timer_t shutdown_timer;
    void (*done_cb)(hd_server_t *s);
    void (*quiet_cb)(hd_server_t *s, int all_acked);
    unsigned n_quiet_acks;
    unsigned n_drained, n_stopped;
    unsigned is_started : 1;
    unsigned is_stopping : 1;
};

/* ---- lock-free MPSC queue (Vyukov's intrusive design) ---- */

void hd_mpsc_init(hd_mpsc_t *q)
{
    q->stub.next_ = NULL;
    q->head = q->tail = &q->stub;
}

void hd_mpsc_push(hd_mpsc_t *q, hd_msg_t *m)
{
    __atomic_store_n(&m->next_, NULL, __ATOMIC_RELAXED);
    hd_msg_t *prev = __atomic_exchange_n(&q->head, m, __ATOMIC_ACQ_REL);
    __atomic_store_n(&prev->next_, m, __ATOMIC_RELEASE);
}

hd_msg_t *hd_mpsc_pop(hd_mpsc_t *q)
{
    hd_msg_t *tail = q->tail;
    hd_msg_t *next = __atomic_load_n(&tail->next_, __ATOMIC_ACQUIRE);
    if (tail == &q->stub) {
        if (!next)
            return NULL;
        q->tail = next;
        tail = next;
        next = __atomic_load_n(&next->next_, __ATOMIC_ACQUIRE);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    if (tail != __atomic_load_n(&q->head, __ATOMIC_ACQUIRE))
        return NULL; /* a producer is between its exchange and its link */
    hd_mpsc_push(q, &q->stub);
    next = __atomic_load_n(&tail->next_, __ATOMIC_ACQUIRE);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

void hd_worker_post(hd_worker_t *w, hd_msg_t *msg)
{
    hd_mpsc_push(&w->mailbox, msg);
    uv_async_send(&w->wakeup);
}

static void post_main(hd_server_t *s, hd_msg_t *msg)
{
    hd_mpsc_push(&s->main_mailbox, msg);
    uv_async_send(&s->main_wakeup);
}

static void drain_mailbox(hd_mpsc_t *q, hd_worker_t *w)
{
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(q)) != NULL)
        m->cb(w, m);
}

static void on_worker_wakeup(uv_async_t *a)
{
    hd_worker_t *w = a->data;
    drain_mailbox(&w->mailbox, w);
}

/* Main-loop messages carry the sending worker in `w`. */
typedef struct main_msg_s {
    hd_msg_t base;
    hd_worker_t *from;
    void (*fn)(hd_server_t *s, hd_worker_t *from);
} main_msg_t;

static void run_main_msg(hd_worker_t *unused, hd_msg_t *m)
{
    (void)unused;
    main_msg_t *mm = (main_msg_t *)m;
    mm->fn(mm->from->server, mm->from);
    free(mm);
}

static void on_main_wakeup(uv_async_t *a)
{
    hd_server_t *s = a->data;
    drain_mailbox(&s->main_mailbox, NULL);
}

static void tell_main(hd_worker_t *w, void (*fn)(hd_server_t *s, hd_worker_t *from))
{
    main_msg_t *m = hd_calloc(1, sizeof(*m));
    m->base.cb = run_main_msg;
    m->from = w;
    m->fn = fn;
    post_main(w->server, &m->base);
}

/* ---- accepting ---- */

static uint32_t rand_u32(hd_worker_t *w)
{
    /* xorshift over the connection counter and time: jitter, not cryptography */
    uint64_t x = w->next_conn_id * 0x9E3779B97F4A7C15ull ^ uv_hrtime();
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static int take_token(hd_worker_t *w)
{
    const hd_conf_t *conf = w->conf;
    if (conf->accept_rate == 0)
        return 1;
    unsigned n = w->server->n_workers;
    double rate = (double)conf->accept_rate / n;
    double burst = (double)conf->accept_burst / n;
    if (burst < 1)
        burst = 1;
    uint64_t now = uv_now(&w->loop);
    w->tokens += (double)(now - w->tokens_ms) * rate / 1000.0;
    w->tokens_ms = now;
    if (w->tokens > burst)
        w->tokens = burst;
    if (w->tokens < 1)
        return 0;
    w->tokens -= 1;
    return 1;
}

static void note_refused(hd_worker_t *w, const char *why)
{
    w->refused_since_log++;
    uint64_t now = uv_now(&w->loop);
    if (now - w->refused_logged_ms >= 1000) {
        hd_log_warn("refused %llu connection(s): %s", (unsigned long long)w->refused_since_log,
                    why);
        w->refused_logged_ms = now;
        w->refused_since_log = 0;
    }
}

static const hd_conn_ops_t reject_ops = {.name = "reject", .on_data = NULL};

static void reject(hd_conn_t *c, const char *why)
{
    hd_worker_t *w = c->worker;
    note_refused(w, why);
    hd_conn_set_handler(c, &reject_ops, NULL);
    if (c->tls) {
        /* A TLS client cannot read a plaintext answer; a handshake would cost what we refuse. */
        hd_conn_close(c);
        return;
    }
    char resp[512];
    const char *body = "{\"error\":\"server busy, retry later\"}";
    unsigned retry = 1 + rand_u32(w) % 10;
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 503 Service Unavailable\r\nServer: herald/" HERALD_VERSION
                     "\r\nDate: %s\r\nContent-Type: application/json\r\nRetry-After: %u\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     hd_worker_date(w), retry, strlen(body), body);
    hd_conn_send_copy(c, resp, (size_t)n);
    hd_conn_finish(c);
}

static hd_conn_t *conn_new(hd_worker_t *w)
{
    hd_conn_t *c = hd_calloc(1, sizeof(*c));
    c->worker = w;
    c->id = ((uint64_t)w->id << 48) | ++w->next_conn_id;
    c->tcp.data = c;
    hd_list_init(&c->flush_link);
    hd_list_init(&c->link);
    uv_tcp_init(&w->loop, &c->tcp);
    c->open_handles = 1;
    __atomic_add_fetch(&w->server->n_conns, 1, __ATOMIC_RELAXED);
    HD_STAT_INC(w, conns);
    return c;
}

/* Applies the node's limits to an accepted connection, then hands it to the protocol. */
static void conn_admit(hd_conn_t *c, int is_tls)
{
    hd_worker_t *w = c->worker;
    hd_server_t *s = w->server;
    HD_STAT_INC(w, accepted);
    uv_tcp_nodelay(&c->tcp, 1);
    hd_list_insert_tail(&w->conns, &c->link);
    const hd_conf_t *conf = w->conf;
    if (is_tls && w->tls_ctx) {
        c->tls = hd_calloc(1, sizeof(*c->tls));
        if (hd_tls_init(c->tls, w->tls_ctx) != 0) {
            free(c->tls);
            c->tls = NULL;
            hd_conn_close(c);
            return;
        }
    }
    if (__atomic_load_n(&s->n_conns, __ATOMIC_RELAXED) > conf->max_connections) {
        HD_STAT_INC(w, refused_max_conns);
        reject(c, "max_connections reached");
        return;
    }
    if (!take_token(w)) {
        HD_STAT_INC(w, refused_rate);
        reject(c, "accept_rate exceeded");
        return;
    }
    s->accept_cb(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    hd_worker_t *w = ls->data;
    if (status < 0) {
        hd_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    size_t li = (size_t)((uv_tcp_t *)ls - w->listeners);
    hd_conn_t *c = conn_new(w);
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        hd_conn_close(c);
        return;
    }
    conn_admit(c, w->server->listen_tls[li]);
}

hd_conn_t *hd_server_adopt(hd_server_t *s, int fd)
{
    hd_worker_t *w = s->workers[0];
    hd_conn_t *c = conn_new(w);
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        hd_conn_close(c);
        return NULL;
    }
    conn_admit(c, 0);
    return c;
}

static void check_idle(hd_worker_t *w);

void hd_worker_conn_freed(hd_worker_t *w)
{
    __atomic_sub_fetch(&w->server->n_conns, 1, __ATOMIC_RELAXED);
    HD_STAT_DEC(w, conns);
    if (w->stats.conns == 0)
        check_idle(w);
}

/* ---- per-worker loop ---- */

static void on_flush(uv_handle_t *h)
{
    hd_conn_flush_all(h->data);
}

static void on_prepare(uv_prepare_t *p)
{
    on_flush((uv_handle_t *)p);
}

static void on_check(uv_check_t *c)
{
    on_flush((uv_handle_t *)c);
}

const char *hd_worker_date(hd_worker_t *w)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = now;
    }
    return w->date;
}

static void worker_main(void *arg)
{
    hd_worker_t *w = arg;
    hd_log_thread_name(w->name);
    hd_log_thread_attach(&w->loop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Messages posted after the exit message (late broker replies) still own memory. */
    drain_mailbox(&w->mailbox, w);
    hd_log_thread_detach();
}

static int worker_init(hd_server_t *s, unsigned id, char *err, size_t errlen)
{
    hd_worker_t *w = hd_calloc(1, sizeof(*w));
    s->workers[id] = w;
    w->id = id;
    snprintf(w->name, sizeof(w->name), "w%u", id);
    w->server = s;
    w->conf = hd_conf_ref(s->conf);
    w->tls_ctx = s->tls_ctx ? hd_tls_ctx_ref(s->tls_ctx) : NULL;
    hd_list_init(&w->conns);
    hd_list_init(&w->flush_list);
    hd_mpsc_init(&w->mailbox);
    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create event loop: %s", uv_strerror(rc));
        return rc;
    }
    w->loop.data = w;
    uv_async_init(&w->loop, &w->wakeup, on_worker_wakeup);
    w->wakeup.data = w;
    uv_prepare_init(&w->loop, &w->flush_prepare);
    w->flush_prepare.data = w;
    uv_prepare_start(&w->flush_prepare, on_prepare);
    uv_check_init(&w->loop, &w->flush_check);
    w->flush_check.data = w;
    uv_check_start(&w->flush_check, on_check);
    hd_conn_timers_init(w);
    w->tokens = (double)s->conf->accept_burst / s->n_workers;
    w->n_listeners = s->n_listens;
    w->listeners = hd_calloc(w->n_listeners, sizeof(uv_tcp_t));
    for (size_t i = 0; i < w->n_listeners; i++) {
        uv_tcp_t *l = &w->listeners[i];
        uv_tcp_init(&w->loop, l);
        l->data = w;
        int fd = s->fds[i * s->n_workers + id];
        if ((rc = uv_tcp_open(l, fd)) == 0) {
            s->fds[i * s->n_workers + id] = -1; /* owned by the handle now */
            rc = uv_listen((uv_stream_t *)l, LISTEN_BACKLOG, on_connection);
        }
        if (rc < 0) {
            snprintf(err, errlen, "listen %s: %s", s->conf->listens[i].text, uv_strerror(rc));
            return rc;
        }
    }
    return 0;
}

/* ---- listeners ---- */

static int bind_one(const hd_listen_t *l, struct sockaddr_storage *addr, int reuseport, int *out,
                    char *err, size_t errlen)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "listen %s: cannot create socket: %s", l->text, strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "listen %s: SO_REUSEPORT: %s", l->text, strerror(e));
        return -e;
    }
    if (addr->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)addr, l->addrlen) != 0 ||
        (reuseport && listen(fd, LISTEN_BACKLOG) != 0)) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "listen %s: cannot bind: %s", l->text, strerror(e));
        return -e;
    }
    *out = fd;
    return 0;
}

static int port_of(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)a)->sin6_port)
                                    : ntohs(((const struct sockaddr_in *)a)->sin_port);
}

static void set_port(struct sockaddr_storage *a, int port)
{
    if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
}

static int bind_listeners(hd_server_t *s, char *err, size_t errlen)
{
    const hd_conf_t *conf = s->conf;
    for (size_t i = 0; i < conf->n_listens; i++) {
        const hd_listen_t *l = &conf->listens[i];
        struct sockaddr_storage addr = l->addr;
        int rc, probe = -1;
        if (port_of(&addr) != 0) {
            /* SO_REUSEPORT would silently share a port another process listens on: probe first
             * with a plain socket, which fails if anyone listens there. */
            if ((rc = bind_one(l, &addr, 0, &probe, err, errlen)) < 0)
                return rc;
            close(probe);
        }
        for (unsigned k = 0; k < s->n_workers; k++) {
            int *fd = &s->fds[i * s->n_workers + k];
            if ((rc = bind_one(l, &addr, 1, fd, err, errlen)) < 0)
                return rc;
            if (k == 0) {
                /* Port 0: the kernel picked one; every worker binds that same port. */
                struct sockaddr_storage got;
                socklen_t len = sizeof(got);
                getsockname(*fd, (struct sockaddr *)&got, &len);
                set_port(&addr, port_of(&got));
                char ip[64];
                if (got.ss_family == AF_INET6) {
                    uv_ip6_name((struct sockaddr_in6 *)&got, ip, sizeof(ip));
                    snprintf(s->bound[i], sizeof(s->bound[i]), "[%s]:%d", ip, port_of(&got));
                } else {
                    uv_ip4_name((struct sockaddr_in *)&got, ip, sizeof(ip));
                    snprintf(s->bound[i], sizeof(s->bound[i]), "%s:%d", ip, port_of(&got));
                }
            }
        }
    }
    return 0;
}

/* ---- lifecycle ---- */

int hd_server_new(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb, uv_loop_t *main_loop,
                  char *err, size_t errlen)
{
    hd_server_t *s = hd_calloc(1, sizeof(*s));
    int rc;
    *out = NULL;
    s->conf = hd_conf_ref(conf);
    s->main_loop = main_loop;
    s->accept_cb = accept_cb;
    s->n_workers = conf->workers;
    s->n_listens = conf->n_listens;
    s->fds = hd_malloc(conf->n_listens * s->n_workers * sizeof(int));
    for (size_t i = 0; i < conf->n_listens * s->n_workers; i++)
        s->fds[i] = -1;
    s->bound = hd_calloc(conf->n_listens, sizeof(*s->bound));
    s->listen_tls = hd_calloc(conf->n_listens, 1);
    for (size_t i = 0; i < conf->n_listens; i++)
        s->listen_tls[i] = conf->listens[i].is_tls;
    s->workers = hd_calloc(s->n_workers, sizeof(*s->workers));
    hd_mpsc_init(&s->main_mailbox);
    uv_async_init(main_loop, &s->main_wakeup, on_main_wakeup);
    s->main_wakeup.data = s;
    uv_timer_init(main_loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    for (size_t i = 0; i < conf->n_listens; i++) {
        if (conf->listens[i].is_tls && !s->tls_ctx) {
            if ((rc = hd_tls_ctx_new(&s->tls_ctx, conf, err, errlen)) < 0)
                goto fail;
        }
    }
    if ((rc = bind_listeners(s, err, errlen)) < 0)
        goto fail;
    for (unsigned k = 0; k < s->n_workers; k++) {
        if ((rc = worker_init(s, k, err, errlen)) < 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    hd_server_free(s);
    return rc;
}

int hd_server_new_embedded(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb,
                           uv_loop_t *main_loop)
{
    char err[256];
    hd_server_t *s = hd_calloc(1, sizeof(*s));
    s->conf = hd_conf_ref(conf);
    s->main_loop = main_loop;
    s->accept_cb = accept_cb;
    s->n_workers = 1;
    s->workers = hd_calloc(1, sizeof(*s->workers));
    hd_mpsc_init(&s->main_mailbox);
    uv_async_init(main_loop, &s->main_wakeup, on_main_wakeup);
    s->main_wakeup.data = s;
    uv_timer_init(main_loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    int rc = worker_init(s, 0, err, sizeof(err));
    if (rc < 0) {
        hd_server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int hd_server_start(hd_server_t *s)
{
    for (unsigned k = 0; k < s->n_workers; k++) {
        int rc = uv_thread_create(&s->workers[k]->thread, worker_main, s->workers[k]);
        if (rc < 0)
            return rc;
    }
    s->is_started = 1;
    for (size_t i = 0; i < s->n_listens; i++)
        hd_log_info("listening on %s%s (%u workers)", s->bound[i], s->listen_tls[i] ? " tls" : "",
                    s->n_workers);
    return 0;
}

/* ---- reload ---- */

typedef struct reload_msg_s {
    hd_msg_t base;
    hd_conf_t *conf;
    SSL_CTX *tls_ctx;
} reload_msg_t;

static void on_reload_msg(hd_worker_t *w, hd_msg_t *m)
{
    reload_msg_t *rm = (reload_msg_t *)m;
    hd_conf_unref(w->conf);
    w->conf = rm->conf; /* the message's reference becomes ours */
    if (rm->tls_ctx) {
        if (w->tls_ctx)
            hd_tls_ctx_unref(w->tls_ctx);
        w->tls_ctx = rm->tls_ctx;
    }
    hd_log_debug("configuration applied");
    free(rm);
}

int hd_server_reload(hd_server_t *s, hd_conf_t *conf, char *err, size_t errlen)
{
    SSL_CTX *ctx = NULL;
    if (s->tls_ctx) {
        /* Always reload: the files may have been replaced under the same names. */
        int rc = hd_tls_ctx_new(&ctx, conf, err, errlen);
        if (rc < 0)
            return rc;
        hd_tls_ctx_unref(s->tls_ctx);
        s->tls_ctx = ctx;
    }
    hd_conf_unref(s->conf);
    s->conf = hd_conf_ref(conf);
    for (unsigned k = 0; k < s->n_workers; k++) {
        reload_msg_t *m = hd_calloc(1, sizeof(*m));
        m->base.cb = on_reload_msg;
        m->conf = hd_conf_ref(conf);
        m->tls_ctx = ctx ? hd_tls_ctx_ref(ctx) : NULL;
        hd_worker_post(s->workers[k], &m->base);
    }
    return 0;
}

/* ---- shutdown ---- */

static void on_worker_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_listeners(hd_worker_t *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        uv_handle_t *h = (uv_handle_t *)&w->listeners[i];
        if (!uv_is_closing(h))
            uv_close(h, on_worker_handle_closed);
    }
}

static void main_worker_drained(hd_server_t *s, hd_worker_t *from);
static void exit_all(hd_server_t *s);
static void main_worker_stopped(hd_server_t *s, hd_worker_t *from);

static void check_idle(hd_worker_t *w)
{
    if (w->stats.conns != 0)
        return;
    if (w->is_stopped) {
        tell_main(w, main_worker_stopped);
    } else if (w->is_draining) {
        w->is_draining = 0; /* report once */
        tell_main(w, main_worker_drained);
    }
}

static void on_drain_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    close_listeners(w);
    w->is_draining = 1;
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns)
    {
        hd_conn_t *c = hd_container_of(pos, hd_conn_t, link);
        if (c->ops->on_shutdown)
            c->ops->on_shutdown(c);
        else
            hd_conn_close(c);
    }
    check_idle(w);
}

static void on_stop_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    close_listeners(w);
    w->is_stopped = 1;
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &w->conns)
    {
        hd_conn_close(hd_container_of(pos, hd_conn_t, link));
    }
    check_idle(w);
}

static void on_exit_msg(hd_worker_t *w, hd_msg_t *m)
{
    free(m);
    uv_close((uv_handle_t *)&w->wakeup, on_worker_handle_closed);
    uv_close((uv_handle_t *)&w->flush_prepare, on_worker_handle_closed);
    uv_close((uv_handle_t *)&w->flush_check, on_worker_handle_closed);
    hd_conn_timers_close(w);
}

static void post_all(hd_server_t *s, hd_msg_cb cb)
{
    for (unsigned k = 0; k < s->n_workers; k++) {
        hd_msg_t *m = hd_calloc(1, sizeof(*m));
        m->cb = cb;
        hd_worker_post(s->workers[k], m);
    }
}

static void stop_all(hd_server_t *s)
{
    if (s->is_stopping)
        return;
    s->is_stopping = 1;
    uv_timer_stop(&s->shutdown_timer);
    post_all(s, on_stop_msg);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    hd_server_t *s = t->data;
    hd_log_warn("shutdown_timeout reached: closing the remaining connections");
    stop_all(s);
}

static void main_worker_drained(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_drained == s->n_workers)
        stop_all(s);
}

static void main_worker_stopped(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_stopped < s->n_workers)
        return;
    if (s->quiet_cb) {
        s->quiet_cb(s, 0); /* continues in main_quiet_ack */
        return;
    }
    exit_all(s);
}

static void main_quiet_ack(hd_server_t *s, hd_worker_t *from)
{
    (void)from;
    if (++s->n_quiet_acks < s->n_workers)
        return;
    s->quiet_cb(s, 1);
    exit_all(s);
}

void hd_server_quiet_ack(hd_worker_t *w)
{
    tell_main(w, main_quiet_ack);
}

static void exit_all(hd_server_t *s)
{
    post_all(s, on_exit_msg);
    for (unsigned k = 0; k < s->n_workers; k++) {
        uv_thread_join(&s->workers[k]->thread);
        uv_loop_close(&s->workers[k]->loop);
        s->workers[k]->loop.data = NULL;
    }
    if (s->done_cb)
        s->done_cb(s);
}

void hd_server_on_quiet(hd_server_t *s, void (*quiet_cb)(hd_server_t *s, int all_acked))
{
    s->quiet_cb = quiet_cb;
}

void hd_server_shutdown(hd_server_t *s, void (*done_cb)(hd_server_t *s))
{
    if (s->done_cb)
        return;
    s->done_cb = done_cb;
    hd_log_info("shutting down: draining %llu connection(s), at most %llu ms",
                (unsigned long long)hd_server_conn_count(s),
                (unsigned long long)s->conf->shutdown_timeout_ms);
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, s->conf->shutdown_timeout_ms, 0);
    post_all(s, on_drain_msg);
}

/* ---- freeing ---- */

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, on_worker_handle_closed);
}

static void free_worker(hd_worker_t *w)
{
    if (!w)
        return;
    if (w->loop.data) {
        /* Never started (a failure in hd_server_new): close its handles and run it dry. */
        uv_walk(&w->loop, close_any, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    hd_conn_free_write_pool(w);
    free(w->theap); /* NULL when the loop closed it at exit */
    hd_conf_unref(w->conf);
    if (w->tls_ctx)
        hd_tls_ctx_unref(w->tls_ctx);
    free(w->listeners);
    free(w);
}

static void on_main_handle_closed(uv_handle_t *h)
{
    hd_server_t *s = h->data;
    if (h == (uv_handle_t *)&s->main_wakeup)
        uv_close((uv_handle_t *)&s->shutdown_timer, on_main_handle_closed);
    else
        free(s);
}

void hd_server_free(hd_server_t *s)
{
    for (unsigned k = 0; k < s->n_workers; k++)
        free_worker(s->workers[k]);
    for (size_t i = 0; s->fds && i < s->n_listens * s->n_workers; i++)
        if (s->fds[i] >= 0)
            close(s->fds[i]);
    free(s->fds);
    free(s->bound);
    free(s->listen_tls);
    free(s->workers);
    if (s->tls_ctx)
        hd_tls_ctx_unref(s->tls_ctx);
    hd_conf_unref(s->conf);
    /* s itself is freed when its main-loop handles have closed (next loop pass). */
    uv_close((uv_handle_t *)&s->main_wakeup, on_main_handle_closed);
}

unsigned hd_server_worker_count(const hd_server_t *s)
{
    return s->n_workers;
}

hd_worker_t *hd_server_worker(hd_server_t *s, unsigned i)
{
    return s->workers[i];
}

uint64_t hd_server_conn_count(const hd_server_t *s)
{
    return __atomic_load_n(&s->n_conns, __ATOMIC_RELAXED);
}

const char *hd_server_listen_addr(const hd_server_t *s, size_t i)
{
    return s->bound[i];
}
