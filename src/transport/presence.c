/* SPDX-License-Identifier: MIT */
/*
 * presence.c (transports): who a stream subscriber is as a presence member (docs/chat.md), and
 * the ?presence= query every stream transport reads. The hub does the rest (hd_hub_presence).
 */
#include "herald/transport.h"

#include <stdio.h>
#include <string.h>

hd_member_t *hd_tp_member(const hd_conf_t *conf, const hd_conn_t *conn, int is_backend,
                          const char *channel, size_t len)
{
    if (is_backend || !hd_auth_presence(conf->auth, channel, len))
        return NULL; /* the backend watches; it is nobody's fellow member */
    const hd_identity_t *id = conn->identity;
    return hd_member_new(hd_identity_sub(id), hd_identity_sub(id) ? hd_identity_info(id) : NULL,
                         conn->id);
}

int hd_tp_presence_query(hd_req_t *req, const char (*channels)[HD_CHANNEL_MAX + 1], size_t n)
{
    char v[8];
    int len = hd_req_query(req, "presence", v, sizeof(v));
    if (len < 0)
        return 0;
    int on = strcmp(v, "1") == 0 || strcmp(v, "on") == 0 || strcmp(v, "true") == 0;
    int off = strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || strcmp(v, "false") == 0;
    if (!on && !off) {
        hd_http_respond_error(req, 400, "presence must be 1, on, true, 0, off or false");
        return -1;
    }
    if (off)
        return 0;
    const hd_auth_t *auth = hd_worker_conf(req->conn->worker)->auth;
    for (size_t i = 0; i < n; i++) {
        if (!hd_auth_presence(auth, channels[i], strlen(channels[i]))) {
            char why[256];
            snprintf(why, sizeof(why),
                     "presence is not tracked on channel %s (its channel_rule needs presence=on)",
                     channels[i]);
            hd_http_respond_error(req, 400, why);
            return -1;
        }
    }
    return 1;
}
