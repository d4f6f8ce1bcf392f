/* SPDX-License-Identifier: MIT */
/* internal.h: functions the connection layer and the worker share, private to src/net. */
#ifndef HERALD_NET_INTERNAL_H
#define HERALD_NET_INTERNAL_H

#include "herald/server.h"

/* Writes what every connection of w queued in this loop pass (one writev each). */
void hd_conn_flush_all(hd_worker_t *w);
/* The worker's connection timer heap: set up with the loop, closed at exit. */
void hd_conn_timers_init(hd_worker_t *w);
void hd_conn_timers_close(hd_worker_t *w);
/* Frees the worker's spare write requests (at exit). */
void hd_conn_free_write_pool(hd_worker_t *w);
/* Called once a connection's memory has been freed. */
void hd_worker_conn_freed(hd_worker_t *w);

#endif
