/* SPDX-License-Identifier: MIT */
/*
 * wire_check.h: what a client reads from herald must keep herald's promises, whatever the input
 * was. The fuzz harnesses feed everything the server writes to one client connection, in the
 * pieces it arrives in, to a wire_check_t of the kind that client expects, which aborts (a crash
 * for libFuzzer, with the reason on stderr) on the first broken promise:
 *
 *   WIRE_SSE       an SSE stream: after a 200 head, every byte (so every event) is UTF-8.
 *   WIRE_SSE_JSON  an SSE stream in the JSON form (?format=json): UTF-8 too, and every event's
 *                  data (its data: lines joined by LF, as EventSource does) is a JSON object;
 *                  an event with id: is a message object with that "id", a string "channel",
 *                  a "data" and any "content_type" valid; one without is a herald-* event.
 *   WIRE_WS        a WebSocket whose text messages are payloads as published (/ws/{channel}).
 *   WIRE_WS_JSON   a WebSocket speaking JSON (herald.v1 envelopes, the /ws protocol).
 *
 * For both WebSocket kinds, after a 101 head: server frames are unmasked, without RSV bits (no
 * extension is negotiated) and with known opcodes; control frames are final and at most 125
 * bytes; no data frame interrupts a fragmented message; nothing follows the close frame; every
 * text message (whole, across fragments) and every close reason is UTF-8 (RFC 6455 5.6, 7.4,
 * checked with the project's validator, src/core/utf8.c). For WIRE_WS_JSON each text message is
 * also a JSON object whose "type" is a string and whose "content_type", when present, passes
 * hd_content_type_valid: a client's Content-Type that an entry point forgot to check shows up
 * here even when it is valid UTF-8.
 *
 * A response other than the expected 200 or 101 is an answer to a request the harness may have
 * let the fuzzer write (pipelined requests, a refused handshake): the rest of that connection
 * is not checked. Header-only: each harness includes it once.
 */
#ifndef HERALD_FUZZ_WIRE_CHECK_H
#define HERALD_FUZZ_WIRE_CHECK_H

#include "herald/pubsub.h"
#include "herald/utf8.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_SSE = 1, WIRE_WS, WIRE_WS_JSON, WIRE_SSE_JSON };
enum { WIRE_HEAD = 0, WIRE_BODY, WIRE_FRAMES, WIRE_CLOSED, WIRE_UNCHECKED };

#define WIRE_HEAD_MAX    8192
#define WIRE_MESSAGE_MAX (1u << 20) /* a JSON text message kept whole to parse it */
#define WIRE_CONTROL_MAX 125

typedef struct wire_check_s {
    const char *who; /* names the connection in a report */
    int kind;
    int state;
    int status;         /* of the response head, once read */
    size_t events;      /* SSE: blocks ended by a blank line */
    size_t texts;       /* WebSocket: complete text messages */
    size_t datas;       /* WebSocket: complete data messages, text or binary */
    char last_type[32]; /* WIRE_WS_JSON: "type" of the last message (cut to fit) */
    size_t head_len;
    char head[WIRE_HEAD_MAX];
    /* SSE */
    hd_utf8_t sse_utf8;
    uint8_t sse_last; /* previous byte, to find the blank line that ends a block */
    /* WIRE_SSE_JSON: the line being read, the event's data and id so far */
    char *sse_line, *sse_data;
    size_t sse_line_len, sse_line_cap, sse_data_len, sse_data_cap;
    char sse_id[HD_ID_MAX + 1];
    char sse_event[32];
    /* WebSocket: the frame being read */
    uint8_t hdr[14];
    size_t hdr_len, hdr_need;
    uint64_t left; /* payload bytes of the current frame still to come */
    int opcode, fin;
    int in_message; /* 1: text, 2: binary message continued by CONT frames */
    hd_utf8_t msg_utf8;
    uint8_t *msg; /* WIRE_WS_JSON: the text message so far */
    size_t msg_len;
    uint8_t ctl[WIRE_CONTROL_MAX];
    size_t ctl_len;
} wire_check_t;

static void wire_fail(const wire_check_t *w, const char *what, const void *data, size_t len)
{
    fprintf(stderr, "wire_check (%s): %s; bytes:", w->who, what);
    const uint8_t *p = data;
    for (size_t i = 0; i < len && i < 256; i++)
        fprintf(stderr, (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') ? "%c" : "\\x%02x", p[i]);
    fprintf(stderr, "%s\n", len > 256 ? "..." : "");
    abort();
}

static void wire_check_init(wire_check_t *w, int kind, const char *who)
{
    memset(w, 0, sizeof(*w));
    w->kind = kind;
    w->who = who;
    hd_utf8_init(&w->sse_utf8);
}

static void wire_check_dispose(wire_check_t *w)
{
    free(w->msg);
    w->msg = NULL;
    free(w->sse_line);
    free(w->sse_data);
    w->sse_line = w->sse_data = NULL;
}

static void wire_append(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2 + 64;
        *buf = realloc(*buf, *cap);
        if (!*buf)
            abort();
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

/* One whole text message of a JSON WebSocket: an object, with the fields clients rely on. */
static void wire_json_message(wire_check_t *w, const uint8_t *data, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, len, JSON_ALLOW_NUL, &jerr);
    if (!root || !json_is_object(root))
        wire_fail(w, root ? "text message is not a JSON object" : "text message is not JSON", data,
                  len);
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type))
        wire_fail(w, "JSON message without a string \"type\"", data, len);
    snprintf(w->last_type, sizeof(w->last_type), "%s", json_string_value(type));
    json_t *ct = json_object_get(root, "content_type");
    if (ct && (!json_is_string(ct) ||
               !hd_content_type_valid(json_string_value(ct), json_string_length(ct))))
        wire_fail(w, "a message carries a content_type hd_content_type_valid refuses", data, len);
    json_decref(root);
}

static void wire_message_end(wire_check_t *w)
{
    if (w->in_message == 1) {
        if (!hd_utf8_complete(&w->msg_utf8))
            wire_fail(w, "text message ends inside a UTF-8 sequence", w->msg, w->msg_len);
        if (w->kind == WIRE_WS_JSON)
            wire_json_message(w, w->msg, w->msg_len);
        w->texts++;
    }
    if (w->in_message)
        w->datas++;
    w->in_message = 0;
    w->msg_len = 0;
}

static void wire_frame_start(wire_check_t *w)
{
    uint8_t b0 = w->hdr[0], b1 = w->hdr[1];
    w->fin = !!(b0 & 0x80);
    w->opcode = b0 & 0x0F;
    if (b0 & 0x70)
        wire_fail(w, "server frame with RSV bits set", w->hdr, w->hdr_len);
    if (b1 & 0x80)
        wire_fail(w, "server frame is masked", w->hdr, w->hdr_len);
    uint64_t n = b1 & 0x7F;
    if (n == 126) {
        n = ((uint64_t)w->hdr[2] << 8) | w->hdr[3];
    } else if (n == 127) {
        n = 0;
        for (int i = 2; i < 10; i++)
            n = (n << 8) | w->hdr[i];
    }
    w->left = n;
    switch (w->opcode) {
    case 0x0: /* continuation */
        if (!w->in_message)
            wire_fail(w, "continuation frame outside a fragmented message", w->hdr, w->hdr_len);
        break;
    case 0x1:
    case 0x2:
        if (w->in_message)
            wire_fail(w, "new data frame inside a fragmented message", w->hdr, w->hdr_len);
        w->in_message = w->opcode == 0x1 ? 1 : 2;
        hd_utf8_init(&w->msg_utf8);
        w->msg_len = 0;
        break;
    case 0x8:
    case 0x9:
    case 0xA:
        if (!w->fin || n > WIRE_CONTROL_MAX)
            wire_fail(w, "control frame fragmented or longer than 125 bytes", w->hdr, w->hdr_len);
        w->ctl_len = 0;
        break;
    default:
        wire_fail(w, "server frame with an unknown opcode", w->hdr, w->hdr_len);
    }
}

static void wire_frame_end(wire_check_t *w)
{
    if (w->opcode == 0x8) {
        if (w->ctl_len == 1)
            wire_fail(w, "close frame with a 1-byte payload", w->ctl, w->ctl_len);
        if (w->ctl_len > 2 && !hd_utf8_valid(w->ctl + 2, w->ctl_len - 2))
            wire_fail(w, "close reason is not UTF-8", w->ctl, w->ctl_len);
        w->state = WIRE_CLOSED;
    } else if (w->opcode <= 0x2 && w->fin) {
        wire_message_end(w);
    }
}

static void wire_payload(wire_check_t *w, const uint8_t *p, size_t n)
{
    if (w->opcode >= 0x8) {
        memcpy(w->ctl + w->ctl_len, p, n); /* n <= what is left of at most 125 */
        w->ctl_len += n;
        return;
    }
    if (w->in_message != 1)
        return;
    if (hd_utf8_feed(&w->msg_utf8, p, n) != 0)
        wire_fail(w, "text message is not UTF-8", p, n);
    if (w->kind != WIRE_WS_JSON)
        return;
    if (w->msg_len + n > WIRE_MESSAGE_MAX)
        wire_fail(w, "JSON text message longer than the checker keeps", p, n);
    uint8_t *grown = realloc(w->msg, w->msg_len + n);
    if (!grown)
        abort();
    w->msg = grown;
    memcpy(w->msg + w->msg_len, p, n);
    w->msg_len += n;
}

static void wire_frames(wire_check_t *w, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (w->state == WIRE_CLOSED)
            wire_fail(w, "bytes after the close frame", p, len);
        if (w->hdr_need == 0 || w->hdr_len < w->hdr_need) {
            /* the frame header: 2 bytes, then what its length field says */
            w->hdr[w->hdr_len++] = *p++;
            len--;
            if (w->hdr_len == 2) {
                uint8_t n7 = w->hdr[1] & 0x7F;
                w->hdr_need = n7 == 126 ? 4 : n7 == 127 ? 10 : 2;
            }
            if (w->hdr_len >= 2 && w->hdr_len == w->hdr_need) {
                wire_frame_start(w);
                if (w->left == 0) {
                    wire_frame_end(w);
                    w->hdr_len = w->hdr_need = 0;
                }
            }
            continue;
        }
        size_t n = len < w->left ? len : (size_t)w->left;
        wire_payload(w, p, n);
        p += n;
        len -= n;
        w->left -= n;
        if (w->left == 0) {
            wire_frame_end(w);
            w->hdr_len = w->hdr_need = 0;
        }
    }
}

/* A whole event of the JSON form: what an EventSource hands the page must parse. */
static void wire_sse_json_event(wire_check_t *w)
{
    const char *d = w->sse_data;
    size_t len = w->sse_data_len;
    if (!w->sse_id[0] && strncmp(w->sse_event, "herald-", 7) != 0)
        wire_fail(w, "an SSE event without id: that is not a herald-* event", d, len);
    json_error_t jerr;
    json_t *root = json_loadb(d, len, JSON_ALLOW_NUL, &jerr);
    if (!root || !json_is_object(root))
        wire_fail(w, root ? "SSE data is not a JSON object" : "SSE data is not JSON", d, len);
    if (w->sse_id[0]) {
        json_t *id = json_object_get(root, "id");
        if (!json_is_string(id) || strcmp(json_string_value(id), w->sse_id) != 0)
            wire_fail(w, "the message object's \"id\" is not the event's id:", d, len);
        if (!json_is_string(json_object_get(root, "channel")) || !json_object_get(root, "data"))
            wire_fail(w, "a message object without a string \"channel\" or \"data\"", d, len);
    }
    json_t *ct = json_object_get(root, "content_type");
    if (ct && (!json_is_string(ct) ||
               !hd_content_type_valid(json_string_value(ct), json_string_length(ct))))
        wire_fail(w, "a message carries a content_type hd_content_type_valid refuses", d, len);
    json_decref(root);
}

/* One line of the JSON form (herald ends lines with LF only). */
static void wire_sse_json_line(wire_check_t *w)
{
    const char *l = w->sse_line;
    size_t n = w->sse_line_len;
    if (n == 0) {
        if (w->sse_data_len)
            wire_sse_json_event(w);
        w->sse_data_len = 0;
        w->sse_id[0] = w->sse_event[0] = '\0';
        return;
    }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) {
        size_t skip = n > 5 && l[5] == ' ' ? 6 : 5;
        if (w->sse_data_len)
            wire_append(&w->sse_data, &w->sse_data_len, &w->sse_data_cap, "\n", 1);
        wire_append(&w->sse_data, &w->sse_data_len, &w->sse_data_cap, l + skip, n - skip);
    } else if (n > 4 && memcmp(l, "id: ", 4) == 0) {
        if (n - 4 > HD_ID_MAX)
            wire_fail(w, "an SSE id: longer than an id", l, n);
        memcpy(w->sse_id, l + 4, n - 4);
        w->sse_id[n - 4] = '\0';
    } else if (n > 7 && memcmp(l, "event: ", 7) == 0) {
        snprintf(w->sse_event, sizeof(w->sse_event), "%.*s", (int)(n - 7), l + 7);
    }
}

static void wire_sse(wire_check_t *w, const uint8_t *p, size_t len)
{
    if (hd_utf8_feed(&w->sse_utf8, p, len) != 0)
        wire_fail(w, "SSE stream is not UTF-8", p, len);
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n' && w->sse_last == '\n')
            w->events++;
        w->sse_last = p[i];
        if (w->kind != WIRE_SSE_JSON)
            continue;
        if (p[i] != '\n') {
            if (w->sse_line_len >= WIRE_MESSAGE_MAX)
                wire_fail(w, "an SSE line longer than 1 MiB", w->sse_line, 64);
            wire_append(&w->sse_line, &w->sse_line_len, &w->sse_line_cap, p + i, 1);
            continue;
        }
        wire_sse_json_line(w);
        w->sse_line_len = 0;
    }
}

/* Feeds what the server wrote next on this connection. */
static void wire_check_feed(wire_check_t *w, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0 && w->state == WIRE_HEAD) {
        if (w->head_len == WIRE_HEAD_MAX)
            wire_fail(w, "response head longer than 8 KiB", w->head, w->head_len);
        w->head[w->head_len++] = (char)*p++;
        len--;
        if (w->head_len < 4 || memcmp(w->head + w->head_len - 4, "\r\n\r\n", 4) != 0)
            continue;
        if (w->head_len < 12 || memcmp(w->head, "HTTP/1.1 ", 9) != 0)
            wire_fail(w, "not an HTTP/1.1 status line", w->head, w->head_len);
        w->status = atoi(w->head + 9);
        int is_sse = w->kind == WIRE_SSE || w->kind == WIRE_SSE_JSON;
        if (is_sse && w->status == 200)
            w->state = WIRE_BODY;
        else if (!is_sse && w->status == 101)
            w->state = WIRE_FRAMES;
        else
            w->state = WIRE_UNCHECKED;
    }
    if (len == 0)
        return;
    if (w->state == WIRE_BODY)
        wire_sse(w, p, len);
    else if (w->state == WIRE_FRAMES || w->state == WIRE_CLOSED)
        wire_frames(w, p, len);
}

/* At the end of the connection: a text message must not stop inside a UTF-8 sequence. */
static void wire_check_eof(wire_check_t *w)
{
    if (w->state == WIRE_BODY && !hd_utf8_complete(&w->sse_utf8))
        wire_fail(w, "SSE stream ends inside a UTF-8 sequence", NULL, 0);
}

#endif
