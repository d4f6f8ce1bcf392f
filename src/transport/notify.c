/* SPDX-License-Identifier: MIT */
/*
 * notify.c: what the transports tell the notify hook (docs/webhooks.md, "Backend hooks"): a
 * stream that opened (SSE, /ws/{channel}, /ws) with its channels, a /ws subscription that went
 * live or ended, a stream that closed. Each is one small JSON object handed to the hooks
 * thread (hd_hooks_notify), which batches them; nothing is built when the hook does not want
 * the event (one load and a test). Polls are requests, not connections: they are not reported.
 *
 *   {"type":"connect","conn":"<node>-<n>","transport":"sse","sub":"42"|null,
 *    "client_ip":"203.0.113.9","channels":["a","b"],"at":1796253028175}
 *   {"type":"subscribe"|"unsubscribe","conn":..,"channel":"c","at":..}
 *   {"type":"disconnect","conn":..,"at":..}
 */
#include "herald/hooks.h"
#include "herald/transport.h"

#include <stdio.h>
#include <string.h>

static json_t *event(const char *type, const hd_conn_t *c)
{
    char conn[64];
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    snprintf(conn, sizeof(conn), "%s-%llx", hd_hooks_node_id(), (unsigned long long)c->id);
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "conn", json_string(conn));
    json_object_set_new(o, "at", json_integer((json_int_t)tv.tv_sec * 1000 + tv.tv_usec / 1000));
    return o;
}

static void send_event(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s) {
        hd_hooks_notify(s, strlen(s));
        free(s);
    }
}

void hd_tp_notify_connect(const hd_conn_t *c, const hd_ip_t *client, const char *transport,
                          const char *const *channels, const size_t *lens, size_t n)
{
    if (!hd_hooks_notify_wants(HD_NOTIFY_CONNECT))
        return;
    json_t *o = event("connect", c);
    json_object_set_new(o, "transport", json_string(transport));
    const char *sub = hd_identity_sub(c->identity);
    json_object_set_new(o, "sub", sub ? json_string(sub) : json_null());
    char ip[HD_IP_TEXT_MAX];
    hd_ip_format(client, ip, sizeof(ip));
    json_object_set_new(o, "client_ip", json_string(ip));
    json_t *chs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(chs, json_stringn(channels[i], lens[i]));
    json_object_set_new(o, "channels", chs);
    send_event(o);
}

void hd_tp_notify_channel(const hd_conn_t *c, int subscribed, const char *channel, size_t len)
{
    if (!hd_hooks_notify_wants(subscribed ? HD_NOTIFY_SUBSCRIBE : HD_NOTIFY_UNSUBSCRIBE))
        return;
    json_t *o = event(subscribed ? "subscribe" : "unsubscribe", c);
    json_object_set_new(o, "channel", json_stringn(channel, len));
    send_event(o);
}

void hd_tp_notify_disconnect(const hd_conn_t *c)
{
    if (!hd_hooks_notify_wants(HD_NOTIFY_DISCONNECT))
        return;
    send_event(event("disconnect", c));
}
