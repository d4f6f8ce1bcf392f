/* SPDX-License-Identifier: MIT */
/*
 * event.c: what a webhook delivers, in the Standard Webhooks shape ({"type", "timestamp",
 * "data"}), and the event ids (the webhook-id header, the same on every attempt of one event).
 * Pure but for the one random prefix of ids.
 */
#include "internal.h"

#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Appends now_ms as "2026-12-02T23:00:00.123Z". The text of the second is kept (one thread per
 * process makes events, at most one a few: thread-local), so an event costs no strftime. */
static void append_timestamp(hd_sbuf_t *sb, uint64_t now_ms)
{
    static __thread uint64_t cached_s = UINT64_MAX;
    static __thread char cached[24];
    static __thread size_t cached_len;
    uint64_t sec = now_ms / 1000;
    if (sec != cached_s) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_s = sec;
    }
    unsigned ms = (unsigned)(now_ms % 1000);
    char tail[6] = {
        '.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z', '\0'};
    hd_sbuf_append(sb, cached, cached_len);
    hd_sbuf_append(sb, tail, 5);
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
    static const char hex[] = "0123456789abcdef";
    static uint64_t prefix, counter;
    if (prefix == 0) {
        if (RAND_bytes((unsigned char *)&prefix, sizeof(prefix)) != 1)
            prefix = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
        prefix |= 1;
    }
    /* "evt_" + the prefix in 16 hex digits + the counter in hex, without leading zeros */
    memcpy(out, "evt_", 4);
    for (int i = 0; i < 16; i++)
        out[4 + i] = hex[(prefix >> (60 - 4 * i)) & 15];
    uint64_t c = ++counter;
    int digits = 1;
    while (digits < 16 && (c >> (4 * digits)) != 0)
        digits++;
    for (int i = 0; i < digits; i++)
        out[20 + i] = hex[(c >> (4 * (digits - 1 - i))) & 15];
    out[20 + digits] = '\0';
}
