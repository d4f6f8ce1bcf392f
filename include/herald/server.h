/* SPDX-License-Identifier: MIT */
/*
 * server.h: the node: N worker threads, each with its own uv loop, its own listening socket per
 * listener (SO_REUSEPORT: the kernel spreads accepts) and its own connections. Loops share no
 * mutable state; they talk by messages pushed on a lock-free queue and an uv_async wake-up.
 *
 *                 main thread (signals, reload, shutdown, systemd notify)
 *                   |  hd_worker_post(msg)        ^ hd_server_post_main
 *        +----------+-----------+                  |
 *        v                      v                  |
 *   worker 0: uv loop      worker 1: uv loop  -----+
 *   listener :8080 (fd)    listener :8080 (fd)   <- same port, SO_REUSEPORT
 *   conns, timers          conns, timers
 *
 * Node-wide figures that must be shared (the connection count for max_connections) are single
 * atomic counters touched once per connection, never per request or per delivery.
 *
 * Files: core/mpsc.c (the queue), net/worker.c (thread, loop, mailbox; worker.h), net/listener.c
 * (binding, accepting under the node's limits), net/lifecycle.c (new, start, reload, shutdown,
 * free), net/conn.c (connections, under their own per-worker state; conn.h).
 */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "herald/common.h"
#include "herald/conf.h"
#include "herald/conn.h"
#include "herald/mpsc.h"
#include "herald/worker.h"

typedef struct hd_server_s hd_server_t;

/* Called on the worker loop for every accepted connection that passed the limits. */
typedef void (*hd_accept_cb)(hd_conn_t *c);

/*
 * Creates the node for `conf` (one reference taken): binds every listener once per worker with
 * SO_REUSEPORT (port 0 binds an ephemeral port once and reuses it), loads the TLS context when a
 * listener needs it. Returns 0, or a negative code with a message in err saying which listener
 * or certificate failed ("listen 0.0.0.0:80: address already in use").
 */
int hd_server_new(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb, uv_loop_t *main_loop,
                  char *err, size_t errlen);
/* Starts the worker threads. */
int hd_server_start(hd_server_t *s);
/*
 * Applies a new configuration snapshot live (takes a reference): reloads the TLS certificate and
 * posts the snapshot to every worker. Returns 0, or HD_ETLS with err set (nothing changed).
 */
int hd_server_reload(hd_server_t *s, hd_conf_t *conf, char *err, size_t errlen);
/*
 * Graceful shutdown: workers stop accepting, finish in-flight responses, ask long-lived
 * connections to leave; after conf->shutdown_timeout_ms whatever is left is closed. done_cb runs
 * on the main loop when every worker has exited; then call hd_server_free.
 */
void hd_server_shutdown(hd_server_t *s, void (*done_cb)(hd_server_t *s));
/*
 * Shutdown hook for whatever else posts to workers (the broker). When no worker has a
 * connection left, quiet_cb(s, 0) runs on the main loop; the hook then makes every worker call
 * hd_server_quiet_ack once (from its own loop) after the last message it can receive, and when
 * all have, quiet_cb(s, 1) runs: the moment to stop that component. Then the loops end.
 */
void hd_server_on_quiet(hd_server_t *s, void (*quiet_cb)(hd_server_t *s, int all_acked));
void hd_server_quiet_ack(hd_worker_t *w);
/* The main loop given to hd_server_new (for timers of node-wide components: the broker's). */
uv_loop_t *hd_server_main_loop(hd_server_t *s);
void hd_server_free(hd_server_t *s);

/*
 * For tests and fuzzers: a node with one worker, no listeners and no threads. The caller drives
 * the worker's loop (hd_server_worker(s, 0)->loop) and hands it connected sockets with
 * hd_server_adopt; the calling thread counts as the worker's own (its posts wake nothing). Free
 * with hd_server_free after closing every connection.
 */
int hd_server_new_embedded(hd_server_t **out, hd_conf_t *conf, hd_accept_cb accept_cb,
                           uv_loop_t *main_loop);
/* Adopts a connected socket (one end of a socketpair, say) as a connection on worker 0. */
hd_conn_t *hd_server_adopt(hd_server_t *s, int fd);

unsigned hd_server_worker_count(const hd_server_t *s);
hd_worker_t *hd_server_worker(hd_server_t *s, unsigned i);
/* The node's open connection count (all workers). */
uint64_t hd_server_conn_count(const hd_server_t *s);
/* Client addresses held by the per-address limits' table now (max_connections_per_ip,
 * connect_rate_per_ip): bounded by the open connections plus a fixed number of idle ones. */
size_t hd_server_client_entries(const hd_server_t *s);
/* Bound address of listener i ("127.0.0.1:43121"). */
const char *hd_server_listen_addr(const hd_server_t *s, size_t i);

#endif
