/* SPDX-License-Identifier: MIT */
/*
 * conn_priv.h: what conn.c lends the connection layer's other files (conn_proxy.c), and no
 * one else: calls run from them into conn.c, never back (conn.c reaches a waiting PROXY header
 * through the handler's on_clear_data).
 */
#ifndef HERALD_NET_CONN_PRIV_H
#define HERALD_NET_CONN_PRIV_H

#include "herald/conn.h"

/* Bytes read from the socket: through TLS when the connection has it, then to the handler. */
void hd_conn_deliver_(hd_conn_t *c, const char *data, size_t len);
/* The handler's on_close is called and the connection left to the lingering handler (which
 * drops input) until another is installed; c->data is cleared. */
void hd_conn_remove_handler_(hd_conn_t *c);

#endif
