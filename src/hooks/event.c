/* SPDX-License-Identifier: MIT */
/*
 * event.c: what a webhook delivers, in the Standard Webhooks shape ({"type", "timestamp",
 * "data"}), and the event ids (the webhook-id header, the same on every attempt of one event).
 * Pure but for the one random prefix of ids.
 */
#include "internal.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void append_timestamp(hd_sbuf_t *sb, uint64_t now_ms)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    char ts[40];
    gmtime_r(&t, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03uZ", (unsigned)(now_ms % 1000));
    hd_sbuf_appends(sb, ts);
}

hd_buf_t *hk_event_message(const hd_message_t *m, uint64_t now_ms)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, m->len + 256);
    hd_sbuf_appends(&sb, "{\"type\":\"message.published\",\"timestamp\":\"");
    append_timestamp(&sb, now_ms);
    hd_sbuf_appends(&sb, "\",\"data\":");
    hd_message_json_object(&sb, m);
    hd_sbuf_appends(&sb, "}");
    return hd_sbuf_finish(&sb);
}

hd_buf_t *hk_event_channel(const char *channel, size_t len, int occupied, uint64_t now_ms)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, len + 128);
    hd_sbuf_appendf(&sb, "{\"type\":\"channel.%s\",\"timestamp\":\"",
                    occupied ? "occupied" : "vacated");
    append_timestamp(&sb, now_ms);
    /* channel names need no JSON escaping: their alphabet is [A-Za-z0-9._:@-] */
    hd_sbuf_appends(&sb, "\",\"data\":{\"channel\":\"");
    hd_sbuf_append(&sb, channel, len);
    hd_sbuf_appends(&sb, "\"}}");
    return hd_sbuf_finish(&sb);
}

hd_buf_t *hk_event_member(const char *channel, size_t len, int added, const char *data,
                          size_t data_len, uint64_t now_ms)
{
    if (data_len < 2 || data[0] != '{' || data[data_len - 1] != '}')
        return NULL;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, len + data_len + 128);
    hd_sbuf_appendf(&sb, "{\"type\":\"member.%s\",\"timestamp\":\"", added ? "added" : "removed");
    append_timestamp(&sb, now_ms);
    hd_sbuf_appends(&sb, "\",\"data\":{\"channel\":");
    hk_json_str(&sb, channel, len);
    if (data_len > 2)
        hd_sbuf_appends(&sb, ",");
    hd_sbuf_append(&sb, data + 1, data_len - 1); /* its members and its closing brace */
    hd_sbuf_appends(&sb, "}");
    return hd_sbuf_finish(&sb);
}

void hk_json_str(hd_sbuf_t *sb, const char *s, size_t len)
{
    hd_sbuf_appends(sb, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            hd_sbuf_appendf(sb, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            hd_sbuf_appendf(sb, "\\u%04x", c);
        else
            hd_sbuf_append(sb, &c, 1);
    }
    hd_sbuf_appends(sb, "\"");
}

void hk_event_id(char out[40])
{
    static uint64_t prefix, counter;
    if (prefix == 0) {
        if (RAND_bytes((unsigned char *)&prefix, sizeof(prefix)) != 1)
            prefix = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
        prefix |= 1;
    }
    snprintf(out, 40, "evt_%016llx%llx", (unsigned long long)prefix, (unsigned long long)++counter);
}
