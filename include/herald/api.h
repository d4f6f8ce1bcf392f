/* SPDX-License-Identifier: MIT */
/*
 * api.h: the HTTP API that is not a push transport (src/api/): publishing and what operators
 * ask the node. It uses the transports' shared helpers (transport.h) and no transport.
 *
 *   publish.c     POST /pub/{channel}, POST /pub (batch)
 *   introspect.c  GET /channels/{channel}, GET /stats, GET /metrics
 */
#ifndef HERALD_API_H
#define HERALD_API_H

#include "herald/transport.h"

void hd_publish_register(hd_router_t *r);
void hd_introspect_register(hd_router_t *r, hd_server_t *server);

#endif
