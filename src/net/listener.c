/* SPDX-License-Identifier: MIT */
/*
 * listener.c: the listening sockets and what happens to an accepted connection before any
 * protocol sees it. Binding (in the main thread, so "address in use" is reported before
 * anything starts): one socket per worker per listener with SO_REUSEPORT, after a plain probe
 * bind that fails if another process already listens there. Accepting (on each worker's loop):
 * the connection layer makes the connection (hd_conn_accept), then the node's limits apply
 * (max_connections, the accept_rate token bucket; a refused client gets a 503 with
 * Retry-After), then on a proxy_protocol listener the PROXY header is read (conn_proxy.c), then
 * the per-address limits apply to the client's address (max_connections_per_ip: 503,
 * connect_rate_per_ip: 429, both with Retry-After; iplimit.c), then the server's accept callback
 * installs the protocol.
 */
#include "herald/log.h"
#include "herald/server.h"
#include "conn_layer.h"
#include "internal.h"
#include "iplimit.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

/* ---- accepting ---- */

static uint32_t rand_u32(hd_worker_t *w)
{
    /* xorshift over the accept counter and time: jitter, not cryptography */
    uint64_t x = HD_STAT_GET(w, accepted) * 0x9E3779B97F4A7C15ull ^ uv_hrtime();
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

/* A warning at most once a second per worker, naming the last client refused: a flood of
 * refusals costs no log line each. */
static void note_refused(hd_conn_t *c, const char *why)
{
    hd_worker_t *w = c->worker;
    w->refused_since_log++;
    uint64_t now = uv_now(&w->loop);
    if (now - w->refused_logged_ms >= 1000) {
        hd_log_warn("refused %llu connection(s): %s (the last c#%llu %s)",
                    (unsigned long long)w->refused_since_log, why, (unsigned long long)c->id,
                    hd_conn_peer(c));
        w->refused_logged_ms = now;
        w->refused_since_log = 0;
    }
}

static const hd_conn_ops_t reject_ops = {.name = "reject", .on_data = NULL};

/*
 * Answers a refused client and closes: 503 (or 429 for a rate) with Retry-After, before reading
 * anything, so a refusal costs no parsing. retry_s 0: a jittered 1-10 s.
 */
static void reject(hd_conn_t *c, const char *why, int status, const char *msg, unsigned retry_s)
{
    hd_worker_t *w = c->worker;
    note_refused(c, why);
    hd_conn_set_handler(c, &reject_ops, NULL);
    if (c->is_tls) {
        /* A TLS client cannot read a plaintext answer; a handshake would cost what we refuse. */
        hd_conn_close(c);
        return;
    }
    char resp[640];
    char body[256];
    int blen = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    unsigned retry = retry_s ? retry_s : 1 + rand_u32(w) % 10;
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nServer: herald/" HERALD_VERSION
                     "\r\nDate: %s\r\nContent-Type: application/json\r\nRetry-After: %u\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     status, status == 429 ? "Too Many Requests" : "Service Unavailable",
                     hd_worker_date(w), retry, blen, body);
    hd_conn_send_copy(c, resp, (size_t)n);
    hd_conn_finish(c);
}

/*
 * The client's address is known (the socket's, or the PROXY header's): the per-address limits
 * apply, then the protocol is installed. Addresses in trusted_proxies are not limited: they
 * carry many clients, told apart per request (X-Forwarded-For).
 */
static void admit_client(hd_conn_t *c)
{
    hd_worker_t *w = c->worker;
    const hd_conf_t *conf = w->conf;
    const hd_ip_t *ip = hd_conn_client_addr(c);
    if ((conf->max_connections_per_ip || conf->connect_rate_per_ip) && ip->family != HD_IP_NONE &&
        !hd_cidr_list_match(&conf->trusted_proxies, ip)) {
        uint64_t retry_ms = 0;
        int rc = hd_iplimit_admit(w->iplimit, ip, uv_now(&w->loop), conf->max_connections_per_ip,
                                  conf->connect_rate_per_ip, conf->connect_burst_per_ip, &retry_ms);
        if (rc == HD_EIPCONNS) {
            HD_STAT_INC(w, refused_ip_conns);
            reject(c, "max_connections_per_ip reached", 503,
                   "too many connections from your address (max_connections_per_ip)", 0);
            return;
        }
        if (rc == HD_EIPRATE) {
            HD_STAT_INC(w, refused_ip_rate);
            reject(c, "connect_rate_per_ip exceeded", 429,
                   "connecting too often from your address (connect_rate_per_ip)",
                   (unsigned)((retry_ms + 999) / 1000));
            return;
        }
        c->is_ip_counted = 1;
    }
    w->server->accept_cb(c);
}

/* Applies the node's limits to a new connection, then hands it to the protocol. */
static void admit(hd_conn_t *c, int is_proxy)
{
    hd_worker_t *w = c->worker;
    hd_server_t *s = w->server;
    HD_STAT_INC(w, accepted);
    if (__atomic_load_n(&s->n_conns, __ATOMIC_RELAXED) > w->conf->max_connections) {
        HD_STAT_INC(w, refused_max_conns);
        reject(c, "max_connections reached", 503, "server busy, retry later", 0);
        return;
    }
    if (!take_token(w)) {
        HD_STAT_INC(w, refused_rate);
        reject(c, "accept_rate exceeded", 503, "server busy, retry later", 0);
        return;
    }
    /* The PROXY header names the client; it must come within header_timeout. */
    if (is_proxy)
        hd_conn_expect_proxy(c, w->conf->header_timeout_ms, admit_client);
    else
        admit_client(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    hd_worker_t *w = ls->data;
    if (status < 0) {
        /* Out of descriptors (EMFILE), a storm past the open-files limit fails every accept:
         * one warning a second with the count, not a formatted line per failure. */
        w->accept_failed_since_log++;
        uint64_t now = uv_now(&w->loop);
        if (now - w->accept_failed_logged_ms >= 1000) {
            int nofile = status == UV_EMFILE || status == UV_ENFILE;
            hd_log_warn("accept failed %llu time(s) since the last warning: %s%s",
                        (unsigned long long)w->accept_failed_since_log, uv_strerror(status),
                        nofile ? " (raise the open-files limit or lower max_connections)" : "");
            w->accept_failed_logged_ms = now;
            w->accept_failed_since_log = 0;
        }
        return;
    }
    size_t li = (size_t)((uv_tcp_t *)ls - w->listeners);
    const hd_listen_t *l = &w->server->listens[li];
    hd_conn_t *c = hd_conn_accept(w, ls, l->is_tls ? w->tls_ctx : NULL);
    if (c) {
        c->is_admin_listener = l->is_admin;
        admit(c, l->is_proxy);
    }
}

hd_conn_t *hd_server_adopt(hd_server_t *s, int fd)
{
    hd_conn_t *c = hd_conn_open(s->workers[0], fd);
    if (c)
        admit(c, 0);
    return c;
}

/* ---- listening handles on a worker's loop ---- */

int hd_listeners_open(hd_worker_t *w, char *err, size_t errlen)
{
    hd_server_t *s = w->server;
    w->listeners = hd_calloc(s->n_listens ? s->n_listens : 1, sizeof(uv_tcp_t));
    for (size_t i = 0; i < s->n_listens; i++) {
        uv_tcp_t *l = &w->listeners[i];
        uv_tcp_init(&w->loop, l);
        l->data = w;
        w->n_listeners++; /* counts initialised handles: hd_listeners_close closes these */
        int *fd = &s->fds[i * s->n_workers + w->id];
        int rc = uv_tcp_open(l, *fd);
        if (rc == 0) {
            *fd = -1; /* owned by the handle now */
            rc = uv_listen((uv_stream_t *)l, LISTEN_BACKLOG, on_connection);
        }
        if (rc < 0) {
            snprintf(err, errlen, "listen %s: %s", s->conf->listens[i].text, uv_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    hd_worker_t *w = h->data;
    if (--w->n_listeners > 0)
        return;
    free(w->listeners);
    w->listeners = NULL;
}

void hd_listeners_close(hd_worker_t *w)
{
    if (w->n_listeners == 0) {
        free(w->listeners);
        w->listeners = NULL;
        return;
    }
    size_t n = w->n_listeners; /* the callbacks run later, on the loop */
    for (size_t i = 0; i < n; i++) {
        uv_handle_t *h = (uv_handle_t *)&w->listeners[i];
        if (!uv_is_closing(h))
            uv_close(h, on_listener_closed);
    }
}

/* ---- binding (main thread) ---- */

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
    /* Every accepted socket inherits it (Linux copies the listener's TCP options into each
     * connection it accepts): one setsockopt per listener instead of one per connection
     * (hd_conn_accept sets none). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

int hd_listeners_bind(hd_server_t *s, char *err, size_t errlen)
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

const char *hd_server_listen_addr(const hd_server_t *s, size_t i)
{
    return s->bound[i];
}
