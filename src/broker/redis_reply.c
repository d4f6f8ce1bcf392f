/* SPDX-License-Identifier: MIT */
/*
 * redis_reply.c: parsing Redis's answers for the bridge (redis_reply.h): herald_read's array,
 * herald_publish_batch's ids and the pub/sub payloads herald.lua publishes.
 */
#include "redis_reply.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>

int hd_redis_reply_str(const redisReply *e, const char **s, size_t *len)
{
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
        return -1;
    *s = e->str;
    *len = e->len;
    return 0;
}

int hd_redis_reply_u64(const redisReply *e, uint64_t *v)
{
    if (e && e->type == REDIS_REPLY_INTEGER && e->integer >= 0) {
        *v = (uint64_t)e->integer;
        return 0;
    }
    const char *s;
    size_t len = 0;
    if (hd_redis_reply_str(e, &s, &len) < 0 || len == 0 || len > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = x;
    return 0;
}

/* A publisher stamp as herald.lua keeps it: "" (none) or one compact JSON object. */
static int publisher_valid(const char *pub, size_t len)
{
    if (len == 0)
        return 1;
    if (len > HD_REDIS_PUBLISHER_MAX || pub[0] != '{' || memchr(pub, '\0', len))
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb(pub, len, JSON_REJECT_DUPLICATES, &jerr);
    int ok = j && json_is_object(j);
    json_decref(j);
    return ok;
}

hd_message_t *hd_redis_message_new(const char *channel, size_t channel_len, const char *id,
                                   size_t id_len, uint64_t time_ms, const char *ct, size_t ct_len,
                                   const char *pub, size_t pub_len, const char *data, size_t len)
{
    uint64_t epoch, seq;
    char type[HD_CONTENT_TYPE_MAX + 1];
    /* "<id> <receipt tag>" when its publisher asked delivery receipts (pubsub.h) */
    const char *sp = memchr(id, ' ', id_len), *tag = sp ? sp + 1 : NULL;
    size_t tag_len = sp ? id_len - (size_t)(sp - id) - 1 : 0;
    hd_rcpt_t *rcpt = tag ? hd_rcpt_address(tag, tag_len) : NULL;
    if (sp) {
        id_len = (size_t)(sp - id);
        if (!rcpt)
            return NULL;
    }
    if (hd_id_parse(id, id_len, &epoch, &seq) < 0 || ct_len > HD_CONTENT_TYPE_MAX ||
        !hd_content_type_valid(ct, ct_len) || memchr(ct, '\0', ct_len) ||
        !publisher_valid(pub, pub_len)) {
        hd_rcpt_unref(rcpt);
        return NULL; /* not herald.lua's: the type or stamp would reach clients unchecked */
    }
    memcpy(type, ct, ct_len);
    type[ct_len] = '\0';
    hd_message_t *m = hd_message_new(channel, channel_len, type, data, len);
    if (pub_len > 0)
        m->publisher = hd_strndup(pub, pub_len);
    m->rcpt = rcpt;
    hd_message_set_id(m, epoch, seq);
    m->time_ms = time_ms;
    m->publish_ns = uv_hrtime();
    return m;
}

/*
 * A live-only event in a pub/sub payload ("~e", "~j", "~l" in the id's place; herald.lua and the
 * nodes publish them): an ephemeral message keeps its type and stamp, checked as a message's
 * are; a presence event has neither and its payload must be one JSON object with "member".
 */
static hd_message_t *live_event(const char *channel, size_t channel_len, char kind, const char *ct,
                                size_t ct_len, const char *pub, size_t pub_len, const char *data,
                                size_t len)
{
    char type[HD_CONTENT_TYPE_MAX + 1];
    hd_message_t *m;
    if (kind == 'e') {
        if (ct_len > HD_CONTENT_TYPE_MAX || !hd_content_type_valid(ct, ct_len) ||
            memchr(ct, '\0', ct_len) || !publisher_valid(pub, pub_len))
            return NULL;
        memcpy(type, ct, ct_len);
        type[ct_len] = '\0';
        m = hd_message_new(channel, channel_len, type, data, len);
        if (pub_len > 0)
            m->publisher = hd_strndup(pub, pub_len);
        m->kind = HD_MSG_EPHEMERAL;
    } else if (kind == 'j' || kind == 'l') {
        json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
        int ok = ct_len == 0 && pub_len == 0 && len > 0 && data[0] == '{' && json_is_object(j) &&
                 json_is_object(json_object_get(j, "member"));
        json_decref(j);
        if (!ok)
            return NULL;
        m = hd_message_new(channel, channel_len, "application/json", data, len);
        m->kind = kind == 'j' ? HD_MSG_JOIN : HD_MSG_LEAVE;
    } else {
        return NULL;
    }
    m->publish_ns = uv_hrtime();
    return m;
}

hd_message_t *hd_redis_parse_pubsub(const char *channel, size_t channel_len, const char *s,
                                    size_t len)
{
    const char *end = s + len, *nl[4], *p = s;
    for (int i = 0; i < 4; i++) {
        nl[i] = memchr(p, '\n', (size_t)(end - p));
        if (!nl[i])
            return NULL;
        p = nl[i] + 1;
    }
    if (nl[1] - nl[0] - 1 < 1 || nl[1] - nl[0] - 1 > 19)
        return NULL;
    uint64_t t = 0;
    for (const char *q = nl[0] + 1; q < nl[1]; q++) {
        if (*q < '0' || *q > '9')
            return NULL;
        t = t * 10 + (uint64_t)(*q - '0');
    }
    if (nl[0] - s == 2 && s[0] == '~')
        return live_event(channel, channel_len, s[1], nl[1] + 1, (size_t)(nl[2] - nl[1] - 1),
                          nl[2] + 1, (size_t)(nl[3] - nl[2] - 1), nl[3] + 1,
                          (size_t)(end - nl[3] - 1));
    return hd_redis_message_new(channel, channel_len, s, (size_t)(nl[0] - s), t, nl[1] + 1,
                                (size_t)(nl[2] - nl[1] - 1), nl[2] + 1, (size_t)(nl[3] - nl[2] - 1),
                                nl[3] + 1, (size_t)(end - nl[3] - 1));
}

void hd_redis_read_dispose(hd_redis_read_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        hd_message_unref(r->msgs[i]);
    free(r->msgs);
    r->msgs = NULL;
    r->n = 0;
}

int hd_redis_parse_read(const char *channel, size_t channel_len, const redisReply *rep,
                        hd_redis_read_t *out)
{
    const char *s;
    size_t len = 0;
    uint64_t gap, found;
    memset(out, 0, sizeof(*out));
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 5 ||
        (rep->elements - 5) % 5 != 0 || hd_redis_reply_str(rep->element[0], &s, &len) < 0 ||
        hd_id_parse(s, len, &out->epoch, &out->cur) < 0 ||
        hd_redis_reply_u64(rep->element[1], &gap) < 0 ||
        hd_redis_reply_u64(rep->element[2], &found) < 0 ||
        hd_redis_reply_str(rep->element[3], &s, &len) < 0 || len >= HD_ID_MAX ||
        hd_redis_reply_u64(rep->element[4], &out->history_len) < 0)
        return -1;
    memcpy(out->last_id, s, len);
    out->last_id[len] = '\0';
    out->gap = gap != 0;
    out->found = found != 0;
    size_t n = (rep->elements - 5) / 5;
    if (n == 0)
        return 0;
    out->msgs = hd_malloc(n * sizeof(*out->msgs));
    for (size_t i = 0; i < n; i++) {
        redisReply *const *e = rep->element + 5 + i * 5;
        const char *id, *ct, *pub, *data;
        size_t id_len, ct_len, pub_len, data_len;
        uint64_t t;
        hd_message_t *m = NULL;
        if (hd_redis_reply_str(e[0], &id, &id_len) == 0 && hd_redis_reply_u64(e[1], &t) == 0 &&
            hd_redis_reply_str(e[2], &ct, &ct_len) == 0 &&
            hd_redis_reply_str(e[3], &pub, &pub_len) == 0 &&
            hd_redis_reply_str(e[4], &data, &data_len) == 0)
            m = hd_redis_message_new(channel, channel_len, id, id_len, t, ct, ct_len, pub, pub_len,
                                     data, data_len);
        if (!m) {
            hd_redis_read_dispose(out);
            memset(out, 0, sizeof(*out));
            return -1;
        }
        out->msgs[out->n++] = m;
    }
    return 0;
}

int hd_redis_parse_publish(const redisReply *rep, hd_message_t *const *msgs, size_t n)
{
    uint64_t t, epoch = 0, seq = 0;
    const char *id = NULL;
    size_t len = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != n + 1 ||
        hd_redis_reply_u64(rep->element[0], &t) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (hd_redis_reply_str(rep->element[i + 1], &id, &len) < 0 ||
            hd_id_parse(id, len, &epoch, &seq) < 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        hd_redis_reply_str(rep->element[i + 1], &id, &len);
        hd_id_parse(id, len, &epoch, &seq);
        hd_message_set_id(msgs[i], epoch, seq);
        msgs[i]->time_ms = t;
        msgs[i]->publish_ns = uv_hrtime();
    }
    return 0;
}
