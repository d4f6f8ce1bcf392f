/* SPDX-License-Identifier: MIT */
/*
 * presence.c: what a presence member is (docs/chat.md): who it is on a channel (its key: the
 * token's sub, or an anonymous connection's own id), the connection it came with, and the
 * public JSON every snapshot and join/leave event shows; and the join/leave events themselves,
 * live-only messages (HD_MSG_JOIN, HD_MSG_LEAVE) a broker hands to the workers carrying the
 * channel, and several of them batched into one (HD_MSG_PRESENCE). Brokers keep the members
 * (memory_presence.c, the Redis bridge); the hub tells them when a member's subscription starts
 * and ends, and batches the events of one loop pass (hub.c).
 */
#include "herald/buf.h"
#include "herald/hmap.h"
#include "herald/pubsub.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static char node_name[12];
static uv_once_t node_once = UV_ONCE_INIT;

static void make_node_name(void)
{
    /* From the process's random hash key: two processes (nodes) differ, a restart too. */
    uint64_t h = hd_hash("herald-node", 11);
    snprintf(node_name, sizeof(node_name), "%08x", (unsigned)(h ^ (h >> 32)));
}

const char *hd_presence_node(void)
{
    uv_once(&node_once, make_node_name);
    return node_name;
}

/* Appends s as a JSON string (s: a sub or an id, any bytes but NUL; escapes what JSON needs). */
static size_t json_string_into(char *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    out[n++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[c >> 4];
            out[n + 5] = hex[c & 15];
            n += 6;
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    return n;
}

static hd_member_t *member_alloc(size_t key_len, size_t conn_len, size_t json_cap)
{
    hd_member_t *m = hd_malloc(sizeof(*m) + key_len + 1 + conn_len + 1 + json_cap + 1);
    m->refs = 1;
    m->key = (char *)(m + 1);
    m->conn = m->key + key_len + 1;
    m->json = m->conn + conn_len + 1;
    m->key_len = key_len;
    m->conn_len = conn_len;
    return m;
}

/* "<node>-<conn_id in hex>" into out (at least 8 + 1 + 16 + 1 bytes): its length. */
static size_t conn_id_into(char *out, uint64_t conn_id)
{
    static const char hex[] = "0123456789abcdef";
    const char *node = hd_presence_node();
    size_t n = strlen(node);
    memcpy(out, node, n);
    out[n++] = '-';
    int shift = 60;
    while (shift > 0 && (conn_id >> shift) == 0)
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        out[n++] = hex[(conn_id >> shift) & 15];
    out[n] = '\0';
    return n;
}

hd_member_t *hd_member_new(const char *sub, const char *info_json, uint64_t conn_id)
{
    char conn[sizeof(node_name) + 1 + 16 + 1];
    size_t cl = conn_id_into(conn, conn_id);
    const char *key = sub ? sub : conn;
    size_t kl = sub ? strlen(sub) : cl, il = info_json ? strlen(info_json) : 0;
    /* {"sub":<6x>,"info":<info>} or {"conn":"<conn>"} */
    size_t cap = sub ? 24 + 6 * kl + il : 12 + cl;
    hd_member_t *m = member_alloc(kl, cl, cap);
    memcpy(m->key, key, kl + 1);
    memcpy(m->conn, conn, cl + 1);
    m->key_hash = hd_hash(key, kl);
    size_t n = 0;
    if (sub) {
        memcpy(m->json, "{\"sub\":", 7);
        n = 7 + json_string_into(m->json + 7, sub);
        if (info_json) {
            memcpy(m->json + n, ",\"info\":", 8);
            memcpy(m->json + n + 8, info_json, il);
            n += 8 + il;
        }
    } else { /* an id is [0-9a-f-]: nothing to escape */
        memcpy(m->json, "{\"conn\":\"", 9);
        memcpy(m->json + 9, conn, cl);
        n = 9 + cl;
        m->json[n++] = '"';
    }
    m->json[n++] = '}';
    m->json[n] = '\0';
    m->json_len = n;
    return m;
}

/* Appends n bytes of src at *p. */
static void put(char **p, const void *src, size_t n)
{
    memcpy(*p, src, n);
    *p += n;
}

#define PUTS(p, lit) put(p, lit, sizeof(lit) - 1)

/*
 * Events and batches are written straight into their message (hd_message_new_json): the server
 * wrote the JSON, so there is no check and no parse, and no buffer between (a few thousand
 * instructions a join or leave with snprintf, a copy and a UTF-8 scan).
 */
hd_message_t *hd_presence_event(int kind, const char *channel, size_t channel_len,
                                const hd_member_t *member)
{
    /* {"member":<json>,"conn":"<conn>"} */
    size_t len = 10 + member->json_len + 9 + member->conn_len + 2;
    hd_message_t *m = hd_message_new_json(channel, channel_len, len);
    char *p = m->data;
    PUTS(&p, "{\"member\":");
    put(&p, member->json, member->json_len);
    PUTS(&p, ",\"conn\":\"");
    put(&p, member->conn, member->conn_len);
    PUTS(&p, "\"}");
    HD_ASSERT((size_t)(p - m->data) == len);
    m->kind = (uint8_t)kind;
    return m;
}

hd_message_t *hd_presence_batch(hd_message_t *const *evs, size_t n)
{
    /* [{"type":"join",<event's data after its {>,{"type":"leave",..] */
    size_t len = 2 + (n - 1);
    for (size_t i = 0; i < n; i++)
        len += 9 + (evs[i]->kind == HD_MSG_JOIN ? 6 : 7) + evs[i]->len - 1;
    hd_message_t *m = hd_message_new_json(evs[0]->channel, evs[0]->channel_len, len);
    char *p = m->data;
    *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        PUTS(&p, "{\"type\":\"");
        if (evs[i]->kind == HD_MSG_JOIN)
            PUTS(&p, "join\",");
        else
            PUTS(&p, "leave\",");
        put(&p, evs[i]->data + 1, evs[i]->len - 1);
    }
    *p++ = ']';
    HD_ASSERT((size_t)(p - m->data) == len);
    m->kind = HD_MSG_PRESENCE;
    return m;
}
