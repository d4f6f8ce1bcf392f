/* SPDX-License-Identifier: MIT */
/*
 * message.c: immutable published messages, ids, broker requests, and the wire encodings
 * (SSE event, plain or JSON; WebSocket frames; poll JSON), each made once per message per
 * worker.
 */
#include "herald/pubsub.h"
#include "herald/utf8.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

/* ---- messages ---- */

int hd_content_type_is_text(const char *ct, size_t len)
{
    if (!ct || len == 0)
        return 1; /* no type given: treat as text when it is valid UTF-8 */
    static const char *const prefixes[] = {"text/",
                                           "application/json",
                                           "application/xml",
                                           "application/javascript",
                                           "application/x-www-form-urlencoded",
                                           "application/ld+json"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(prefixes); i++) {
        size_t n = strlen(prefixes[i]);
        if (len >= n && strncasecmp(ct, prefixes[i], n) == 0)
            return 1;
    }
    /* structured syntax suffixes: application/foo+json, +xml */
    const char *semi = memchr(ct, ';', len);
    size_t base = semi ? (size_t)(semi - ct) : len;
    return (base >= 5 && strncasecmp(ct + base - 5, "+json", 5) == 0) ||
           (base >= 4 && strncasecmp(ct + base - 4, "+xml", 4) == 0);
}

/* RFC 9110 tchar: the characters of a token. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static size_t skip_token(const char *s, size_t i, size_t len)
{
    while (i < len && is_tchar((unsigned char)s[i]))
        i++;
    return i;
}

static size_t skip_ows(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i;
}

/*
 * media-type = type "/" subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] ), in
 * printable ASCII only: obs-text (bytes >= 0x80) is refused, so a stored type is always valid
 * UTF-8 wherever it is echoed (JSON envelopes, text frames).
 */
int hd_content_type_valid(const char *ct, size_t len)
{
    if (len == 0)
        return 1;
    if (len > HD_CONTENT_TYPE_MAX)
        return 0;
    size_t i = skip_token(ct, 0, len);
    if (i == 0 || i >= len || ct[i] != '/')
        return 0;
    size_t j = skip_token(ct, i + 1, len);
    if (j == i + 1)
        return 0;
    for (i = j;;) {
        i = skip_ows(ct, i, len);
        if (i == len)
            return 1;
        if (ct[i] != ';')
            return 0;
        i = skip_ows(ct, i + 1, len);
        if (i == len || ct[i] == ';')
            continue; /* empty parameter */
        j = skip_token(ct, i, len);
        if (j == i || j >= len || ct[j] != '=')
            return 0;
        i = j + 1;
        if (i < len && ct[i] == '"') {
            for (i++;; i++) {
                if (i >= len)
                    return 0;
                unsigned char c = (unsigned char)ct[i];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (++i >= len)
                        return 0;
                    c = (unsigned char)ct[i];
                }
                if ((c < 0x20 && c != '\t') || c >= 0x7f)
                    return 0;
            }
            i++;
        } else {
            j = skip_token(ct, i, len);
            if (j == i)
                return 0;
            i = j;
        }
    }
}

static int content_type_is_json(const char *ct)
{
    size_t len = strlen(ct);
    const char *semi = memchr(ct, ';', len);
    size_t base = semi ? (size_t)(semi - ct) : len;
    while (base > 0 && ct[base - 1] == ' ')
        base--;
    return (base == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (base >= 5 && strncasecmp(ct + base - 5, "+json", 5) == 0);
}

/* The bytes of channel names: [A-Za-z0-9._:@-]. */
static const uint8_t name_byte[256] = {
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1, ['.'] = 1,
    ['_'] = 1,         ['-'] = 1,         [':'] = 1,         ['@'] = 1,
};

int hd_channel_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > HD_CHANNEL_MAX)
        return 0;
    unsigned ok = 1; /* every byte looked at, one load and one and each: no branch a byte */
    for (size_t i = 0; i < len; i++)
        ok &= name_byte[(unsigned char)name[i]];
    return (int)ok;
}

/* Flags beyond is_text live in the byte after it: bit 0 = payload is valid JSON to embed. */
#define MSG_IS_JSON(m) ((m)->is_text & 2)

/* A message of channel with room for a content type of ct_len bytes (and its NUL) and len bytes
 * of data after it: one reference, content_type and data pointing there, everything else 0. */
static hd_message_t *message_alloc(const char *channel, size_t channel_len, size_t ct_len,
                                   size_t len)
{
    hd_message_t *m = hd_malloc(sizeof(*m) + ct_len + 1 + len);
    memset(m, 0, sizeof(*m));
    m->refs = 1;
    HD_ASSERT(channel_len <= HD_CHANNEL_MAX);
    memcpy(m->channel, channel, channel_len);
    m->channel[channel_len] = '\0';
    m->channel_len = (uint8_t)channel_len;
    m->content_type = (char *)(m + 1);
    m->data = m->content_type + ct_len + 1;
    return m;
}

/*
 * hd_message_new's work. is_json: data is known to be valid JSON (jansson wrote it), so a JSON
 * content type needs no parse to learn it; 0: parse it when the content type says JSON.
 */
static hd_message_t *message_new(const char *channel, size_t channel_len, const char *content_type,
                                 const void *data, size_t len, int is_json)
{
    if (!content_type)
        content_type = "";
    size_t ct_len = strlen(content_type);
    hd_message_t *m = message_alloc(channel, channel_len, ct_len, len);
    memcpy(m->content_type, content_type, ct_len + 1);
    if (len)
        memcpy(m->data, data, len);
    m->len = len;
    m->is_text = hd_content_type_is_text(content_type, ct_len) && hd_utf8_valid(data, len);
    if (m->is_text && content_type_is_json(content_type)) {
        json_error_t e;
        json_t *j = is_json ? NULL : json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        if (is_json || j)
            m->is_text |= 2;
        json_decref(j);
    }
    return m;
}

hd_message_t *hd_message_new_json(const char *channel, size_t channel_len, size_t len)
{
    hd_message_t *m = message_alloc(channel, channel_len, 0, len);
    m->content_type[0] = '\0';
    m->len = len;
    m->is_text = 3; /* text, and valid JSON (MSG_IS_JSON) */
    return m;
}

hd_message_t *hd_message_new(const char *channel, size_t channel_len, const char *content_type,
                             const void *data, size_t len)
{
    return message_new(channel, channel_len, content_type, data, len, 0);
}

int hd_message_from_json(const char *channel, size_t channel_len, const json_t *data,
                         const json_t *type, size_t max_bytes, hd_message_t **out, const char **why)
{
    if (!data) {
        *why = "needs \"data\" (a string or any JSON value)";
        return HD_EBADREQ;
    }
    if (type && !json_is_string(type)) {
        *why = "\"type\" must be a string";
        return HD_EBADREQ;
    }
    if (type && !hd_content_type_valid(json_string_value(type), json_string_length(type))) {
        *why = "\"type\" must be a media type such as \"text/plain; charset=utf-8\" (printable "
               "ASCII, at most 127 bytes)";
        return HD_EBADREQ;
    }
    if (json_is_string(data)) {
        size_t len = json_string_length(data);
        if (len > max_bytes) {
            *why = "message larger than max_message_size";
            return HD_EBODYTOOBIG;
        }
        const char *ct = type ? json_string_value(type) : "text/plain; charset=utf-8";
        *out = hd_message_new(channel, channel_len, ct, json_string_value(data), len);
        return 0;
    }
    char *dumped = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!dumped) {
        *why = "\"data\" could not be encoded as JSON";
        return HD_EBADREQ;
    }
    size_t len = strlen(dumped);
    if (len > max_bytes) {
        free(dumped);
        *why = "message larger than max_message_size";
        return HD_EBODYTOOBIG;
    }
    const char *ct = type ? json_string_value(type) : "application/json";
    *out = message_new(channel, channel_len, ct, dumped, len, 1); /* jansson's JSON: no parse */
    free(dumped);
    return 0;
}

hd_message_t *hd_message_ref(hd_message_t *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    return m;
}

/* A message holds a reference to its receipts' box (receipt.c has the rest of it). */
hd_rcpt_t *hd_rcpt_ref(hd_rcpt_t *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void hd_rcpt_unref(hd_rcpt_t *r)
{
    if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(r);
}

void hd_message_unref(hd_message_t *m)
{
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(m->idem_key);
        free(m->publisher);
        hd_rcpt_unref(m->rcpt);
        free(m);
    }
}

int hd_idem_key_valid(const char *key, size_t len)
{
    if (len == 0 || len > HD_IDEM_KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (key[i] <= ' ' || key[i] > '~')
            return 0;
    return 1;
}

void hd_message_set_idem_key(hd_message_t *m, const char *key, size_t len)
{
    free(m->idem_key);
    m->idem_key = hd_malloc(len + 1);
    memcpy(m->idem_key, key, len);
    m->idem_key[len] = '\0';
}

void hd_message_set_publisher(hd_message_t *m, const char *json)
{
    free(m->publisher);
    m->publisher = json ? hd_strdup(json) : NULL;
}

void hd_message_set_id(hd_message_t *m, uint64_t epoch, uint64_t seq)
{
    m->epoch = epoch;
    m->seq = seq;
    m->id_len = (uint8_t)hd_id_format(m->id, sizeof(m->id), epoch, seq);
}

/* ---- ids ---- */

/* The last epoch a thread formatted, in base 36 (n == 0: none yet): a node's channels share
 * one or a few epochs, and their digits were half of an id's formatting (about 100 of the 200
 * instructions of a /ws subscribe's last_id). */
static __thread struct {
    uint64_t epoch;
    size_t n;
    char text[16];
} last_epoch;

size_t hd_id_format(char *out, size_t outlen, uint64_t epoch, uint64_t seq)
{
    if (last_epoch.n == 0 || last_epoch.epoch != epoch) {
        char tmp[16];
        size_t n = 0;
        uint64_t e = epoch;
        do {
            tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[e % 36];
            e /= 36;
        } while (e && n < sizeof(tmp));
        last_epoch.epoch = epoch;
        last_epoch.n = n;
        for (size_t i = 0; i < n; i++)
            last_epoch.text[i] = tmp[n - 1 - i];
    }
    size_t k = outlen ? last_epoch.n < outlen - 1 ? last_epoch.n : outlen - 1 : 0;
    memcpy(out, last_epoch.text, k);
    /* "-" and seq in decimal, by hand: this runs under the store's lock for every publish, and
     * snprintf was most of its cost */
    char dec[20];
    size_t d = 0;
    do {
        dec[d++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    if (k + 1 < outlen)
        out[k++] = '-';
    while (d > 0 && k + 1 < outlen)
        out[k++] = dec[--d];
    if (outlen)
        out[k] = '\0';
    return k;
}

int hd_id_parse(const char *s, size_t len, uint64_t *epoch, uint64_t *seq)
{
    /* At most 13 base-36 digits and 20 decimal ones: what hd_id_format writes for UINT64_MAX. */
    const char *dash = memchr(s, '-', len);
    if (!dash || dash == s || dash == s + len - 1 || dash - s > 13 || (s + len) - dash - 1 > 20)
        return HD_EBADREQ;
    uint64_t e = 0, q = 0;
    for (const char *p = s; p < dash; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (*p >= 'a' && *p <= 'z')
            d = (unsigned)(*p - 'a' + 10);
        else
            return HD_EBADREQ;
        if (e > (UINT64_MAX - d) / 36)
            return HD_EBADREQ; /* 13 digits can spell more than 64 bits */
        e = e * 36 + d;
    }
    for (const char *p = dash + 1; p < s + len; p++) {
        if (*p < '0' || *p > '9')
            return HD_EBADREQ;
        unsigned d = (unsigned)(*p - '0');
        if (q > (UINT64_MAX - d) / 10)
            return HD_EBADREQ;
        q = q * 10 + d;
    }
    *epoch = e;
    *seq = q;
    return 0;
}

/* ---- encodings ---- */

static void append_json_string(hd_sbuf_t *sb, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    hd_sbuf_append(sb, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        hd_sbuf_append(sb, s + start, i - start);
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"':
            hd_sbuf_append(sb, "\\\"", 2);
            break;
        case '\\':
            hd_sbuf_append(sb, "\\\\", 2);
            break;
        case '\n':
            hd_sbuf_append(sb, "\\n", 2);
            break;
        case '\r':
            hd_sbuf_append(sb, "\\r", 2);
            break;
        case '\t':
            hd_sbuf_append(sb, "\\t", 2);
            break;
        default:
            hd_sbuf_append(sb, esc, 6);
            break;
        }
        start = i + 1;
    }
    hd_sbuf_append(sb, s + start, len - start);
    hd_sbuf_append(sb, "\"", 1);
}

static void base64_string(hd_sbuf_t *sb, const void *data, size_t len)
{
    size_t out = 4 * ((len + 2) / 3);
    char *tmp = hd_malloc(out + 1);
    EVP_EncodeBlock((unsigned char *)tmp, data, (int)len);
    hd_sbuf_append(sb, "\"", 1);
    hd_sbuf_append(sb, tmp, out);
    hd_sbuf_append(sb, "\"", 1);
    free(tmp);
}

void hd_message_json_object(hd_sbuf_t *sb, const hd_message_t *m)
{
    if (m->kind == HD_MSG_NORMAL) {
        hd_sbuf_appends(sb, "{\"id\":");
        append_json_string(sb, m->id, m->id_len);
        hd_sbuf_appends(sb, ",\"channel\":");
    } else {
        hd_sbuf_appends(sb, "{\"channel\":"); /* live-only: no id */
    }
    append_json_string(sb, m->channel, m->channel_len);
    if (m->publisher) {
        hd_sbuf_appends(sb, ",\"publisher\":");
        hd_sbuf_appends(sb, m->publisher);
    }
    if (m->content_type[0]) {
        hd_sbuf_appends(sb, ",\"content_type\":");
        append_json_string(sb, m->content_type, strlen(m->content_type));
    }
    hd_sbuf_appends(sb, ",\"data\":");
    if (MSG_IS_JSON(m)) {
        hd_sbuf_append(sb, m->data, m->len);
    } else if (m->is_text) {
        append_json_string(sb, m->data, m->len);
    } else {
        base64_string(sb, m->data, m->len);
        hd_sbuf_appends(sb, ",\"encoding\":\"base64\"");
    }
    hd_sbuf_appends(sb, "}");
}

static void sse_data_lines(hd_sbuf_t *sb, const char *d, size_t len)
{
    /* Every line of the payload (CR, LF or CRLF ends one) becomes a data: line. */
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] != '\n' && d[i] != '\r')
            continue;
        hd_sbuf_append(sb, "data: ", 6);
        hd_sbuf_append(sb, d + start, i - start);
        hd_sbuf_append(sb, "\n", 1);
        if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    hd_sbuf_append(sb, "data: ", 6);
    hd_sbuf_append(sb, d + start, len - start);
    hd_sbuf_append(sb, "\n", 1);
}

/* Server frames are never masked: one encoded frame serves every WebSocket subscriber. */
void hd_ws_frame_header(hd_sbuf_t *sb, int opcode, size_t len)
{
    uint8_t h[10];
    size_t n = 0;
    h[n++] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        h[n++] = (uint8_t)len;
    } else if (len <= 0xFFFF) {
        h[n++] = 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (i * 8));
    }
    hd_sbuf_append(sb, h, n);
}

/* {"type":"<name>", (no printf: an event is encoded once per wire format per worker) */
static void put_type(hd_sbuf_t *sb, const char *name)
{
    hd_sbuf_appends(sb, "{\"type\":\"");
    hd_sbuf_appends(sb, name);
    hd_sbuf_appends(sb, "\",");
}

/*
 * Live-only events (no id): an ephemeral message is its JSON object under SSE
 * "event: herald-ephemeral" (with "ephemeral":true in the JSON form, ?format=json) and the
 * envelope type "ephemeral" (a plain /ws/{channel} frame is its payload as-is); a presence
 * event is {"channel":..,"member":..,"conn":..} under SSE "event: herald-join" /
 * "herald-leave" and the envelope types "join" / "leave"; a batch of them is
 * {"channel":..,"events":[{"type":"join",..},..]} under SSE "event: herald-presence" and the
 * envelope type "presence_events". A long poll that asked gets them as the elements of its
 * answer's "events" (HD_FMT_POLL_ANSWER); short polls never do.
 */
static hd_buf_t *encode_event(const hd_message_t *m, int fmt)
{
    hd_sbuf_t body, sb;
    const char *name = m->kind == HD_MSG_JOIN       ? "join"
                       : m->kind == HD_MSG_LEAVE    ? "leave"
                       : m->kind == HD_MSG_PRESENCE ? "presence_events"
                                                    : "ephemeral";
    if (fmt == HD_FMT_WS_RAW) {
        hd_sbuf_init(&sb, m->len + 10);
        hd_ws_frame_header(&sb, m->is_text ? 0x1 : 0x2, m->len);
        hd_sbuf_append(&sb, m->data, m->len);
        return hd_sbuf_finish(&sb);
    }
    if (fmt == HD_FMT_POLL_ANSWER) {
        /* A long poll's "events" elements (poll.c wraps them): each as /ws sends it, without
         * the channel the answer names; an ephemeral message keeps its message object's. */
        hd_sbuf_init(&sb, m->len + 112);
        if (m->kind == HD_MSG_PRESENCE) { /* data is [{"type":"join",..},..] */
            hd_sbuf_append(&sb, m->data + 1, m->len - 2);
        } else if (m->kind == HD_MSG_EPHEMERAL) {
            hd_sbuf_init(&body, m->len + 96);
            hd_message_json_object(&body, m);
            hd_sbuf_appends(&sb, "{\"type\":\"ephemeral\",");
            hd_sbuf_append(&sb, body.buf->data + 1, body.buf->len - 1); /* drop the '{' */
            hd_sbuf_dispose(&body);
        } else { /* data is {"member":..,"conn":..} */
            put_type(&sb, name);
            hd_sbuf_append(&sb, m->data + 1, m->len - 1);
        }
        return hd_sbuf_finish(&sb);
    }
    hd_sbuf_init(&body, m->len + 112);
    if (m->kind == HD_MSG_EPHEMERAL && fmt == HD_FMT_SSE_JSON) {
        hd_sbuf_t obj;
        hd_sbuf_init(&obj, m->len + 96);
        hd_message_json_object(&obj, m);
        hd_sbuf_appends(&body, "{\"ephemeral\":true,");
        hd_sbuf_append(&body, obj.buf->data + 1, obj.buf->len - 1); /* drop the '{' */
        hd_sbuf_dispose(&obj);
    } else if (m->kind == HD_MSG_EPHEMERAL) {
        hd_message_json_object(&body, m);
    } else if (m->kind == HD_MSG_PRESENCE) { /* data is [{"type":"join",..},..] */
        hd_sbuf_appends(&body, "{\"channel\":");
        append_json_string(&body, m->channel, m->channel_len);
        hd_sbuf_appends(&body, ",\"events\":");
        hd_sbuf_append(&body, m->data, m->len);
        hd_sbuf_appends(&body, "}");
    } else { /* data is {"member":..,"conn":..} */
        hd_sbuf_appends(&body, "{\"channel\":");
        append_json_string(&body, m->channel, m->channel_len);
        hd_sbuf_appends(&body, ",");
        hd_sbuf_append(&body, m->data + 1, m->len - 1);
    }
    if (fmt == HD_FMT_SSE || fmt == HD_FMT_SSE_NAMED || fmt == HD_FMT_SSE_JSON) {
        hd_sbuf_init(&sb, body.buf->len + 40);
        hd_sbuf_appends(&sb, "event: herald-");
        hd_sbuf_appends(&sb, m->kind == HD_MSG_PRESENCE ? "presence" : name);
        hd_sbuf_appends(&sb, "\n");
        /* A JSON payload is embedded as published, line breaks included: one data: line each */
        sse_data_lines(&sb, body.buf->data, body.buf->len);
        hd_sbuf_appends(&sb, "\n");
    } else if (fmt == HD_FMT_WS_ENVELOPE) {
        size_t n = strlen("{\"type\":\"\",") + strlen(name) + body.buf->len - 1;
        hd_sbuf_init(&sb, n + 10);
        hd_ws_frame_header(&sb, 0x1, n);
        put_type(&sb, name);
        hd_sbuf_append(&sb, body.buf->data + 1, body.buf->len - 1); /* drop the '{' */
    } else {
        hd_sbuf_init(&sb, body.buf->len);
        hd_sbuf_append(&sb, body.buf->data, body.buf->len);
    }
    hd_sbuf_dispose(&body);
    return hd_sbuf_finish(&sb);
}

hd_buf_t *hd_message_encode(const hd_message_t *m, int fmt)
{
    hd_sbuf_t sb;
    if (m->kind != HD_MSG_NORMAL)
        return encode_event(m, fmt);
    switch (fmt) {
    case HD_FMT_SSE:
    case HD_FMT_SSE_NAMED:
        hd_sbuf_init(&sb, m->len + 64 + m->len / 32);
        hd_sbuf_appends(&sb, "id: ");
        hd_sbuf_append(&sb, m->id, m->id_len);
        hd_sbuf_appends(&sb, "\n");
        if (fmt == HD_FMT_SSE_NAMED) {
            hd_sbuf_appends(&sb, "event: ");
            hd_sbuf_append(&sb, m->channel, m->channel_len);
            hd_sbuf_appends(&sb, "\n");
        }
        if (m->is_text) {
            sse_data_lines(&sb, m->data, m->len);
        } else {
            /* SSE is text only: binary payloads travel base64-encoded, flagged by a comment */
            hd_sbuf_t b64;
            hd_sbuf_init(&b64, m->len * 4 / 3 + 8);
            base64_string(&b64, m->data, m->len);
            hd_sbuf_appends(&sb, ": base64\n");
            sse_data_lines(&sb, b64.buf->data + 1, b64.buf->len - 2);
            hd_sbuf_dispose(&b64);
        }
        hd_sbuf_appends(&sb, "\n");
        return hd_sbuf_finish(&sb);
    case HD_FMT_SSE_JSON: {
        /* The poll's message object; a JSON payload may span lines: one data: line each */
        hd_sbuf_t obj;
        hd_sbuf_init(&obj, m->len + 96 + m->len / 32);
        hd_message_json_object(&obj, m);
        hd_sbuf_init(&sb, obj.buf->len + 32 + obj.buf->len / 32);
        hd_sbuf_appends(&sb, "id: ");
        hd_sbuf_append(&sb, m->id, m->id_len);
        hd_sbuf_appends(&sb, "\n");
        sse_data_lines(&sb, obj.buf->data, obj.buf->len);
        hd_sbuf_appends(&sb, "\n");
        hd_sbuf_dispose(&obj);
        return hd_sbuf_finish(&sb);
    }
    case HD_FMT_WS_RAW:
        hd_sbuf_init(&sb, m->len + 10);
        hd_ws_frame_header(&sb, m->is_text ? 0x1 : 0x2, m->len);
        hd_sbuf_append(&sb, m->data, m->len);
        return hd_sbuf_finish(&sb);
    case HD_FMT_WS_ENVELOPE: {
        hd_sbuf_t body;
        hd_sbuf_init(&body, m->len + 128);
        hd_sbuf_appends(&body, "{\"type\":\"message\",");
        hd_sbuf_t obj;
        hd_sbuf_init(&obj, m->len + 96);
        hd_message_json_object(&obj, m);
        hd_sbuf_append(&body, obj.buf->data + 1, obj.buf->len - 1); /* drop the '{' */
        hd_sbuf_dispose(&obj);
        hd_sbuf_init(&sb, body.buf->len + 10);
        hd_ws_frame_header(&sb, 0x1, body.buf->len);
        hd_sbuf_append(&sb, body.buf->data, body.buf->len);
        hd_sbuf_dispose(&body);
        return hd_sbuf_finish(&sb);
    }
    case HD_FMT_POLL_ANSWER:
        hd_sbuf_init(&sb, m->len + 160 + m->channel_len);
        hd_sbuf_appends(&sb, "{\"channel\":\"");
        hd_sbuf_append(&sb, m->channel, m->channel_len); /* names need no escaping */
        hd_sbuf_appends(&sb, "\",\"messages\":[");
        hd_message_json_object(&sb, m);
        hd_sbuf_appends(&sb, "],\"next\":\"");
        hd_sbuf_append(&sb, m->id, m->id_len);
        hd_sbuf_appends(&sb, "\",\"gap\":false}");
        return hd_sbuf_finish(&sb);
    case HD_FMT_JSON:
    default:
        hd_sbuf_init(&sb, m->len + 96);
        hd_message_json_object(&sb, m);
        return hd_sbuf_finish(&sb);
    }
}

/* ---- broker requests ---- */

hd_breq_t *hd_breq_new(int type, hd_worker_t *w, const char *channel, size_t channel_len)
{
    hd_breq_t *r = hd_calloc(1, sizeof(*r));
    r->type = type;
    r->worker = w;
    if (channel) {
        HD_ASSERT(channel_len <= HD_CHANNEL_MAX);
        memcpy(r->channel, channel, channel_len);
        r->channel[channel_len] = '\0';
    }
    return r;
}

void hd_breq_free(hd_breq_t *r)
{
    while (r) {
        hd_breq_t *next = r->next_op;
        if (r->msgs) {
            for (size_t i = 0; i < r->n_msgs; i++)
                hd_message_unref(r->msgs[i]);
            free(r->msgs);
        }
        hd_member_unref(r->member);
        /* what only some requests own (most own none of it: no call each, at every request) */
        if (r->data || r->ctl_key || r->cursor || r->member_key || r->page) {
            free(r->data);
            free(r->ctl_key);
            free(r->cursor);
            free(r->member_key);
            free(r->page);
        }
        free(r);
        r = next;
    }
}

static void run_reply(hd_worker_t *w, hd_msg_t *msg)
{
    hd_breq_t *r = (hd_breq_t *)msg;
    r->reply_cb(w, r);
}

hd_worker_t *hd_breq_push_reply(hd_breq_t *r)
{
    if (!r->reply_cb) {
        hd_breq_free(r);
        return NULL;
    }
    hd_worker_t *w = r->worker; /* r may be run and freed as soon as it is pushed */
    r->base.cb = run_reply;
    hd_worker_push(w, &r->base);
    return w;
}

void hd_breq_reply(hd_breq_t *r)
{
    hd_worker_t *w = hd_breq_push_reply(r);
    if (w)
        hd_worker_wake(w);
}
