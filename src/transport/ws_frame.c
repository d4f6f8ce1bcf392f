/* SPDX-License-Identifier: MIT */
/*
 * ws_frame.c: the wslay glue of a WebSocket connection (RFC 6455): frames in, control frames
 * (pong, ping, close) out, close codes, and the end of a connection by a close frame.
 *
 * Input:
 *   on_data -> read_fast: while the peer has nothing half-sent, whole single-frame messages are
 *   unmasked on the stack -> proto->on_message, without a wslay context; the rest:
 *   -> ws->rx->in -> recv_cb: reads each frame header (framing errors and oversize are
 *   answered there, with a reason), hands wslay bytes up to the end of the current frame only,
 *   a control frame only once complete -> wslay (unmasking, continuation order, ping -> pong)
 *   -> frame callbacks: UTF-8 per fragment (hd_utf8), reassembly into ws->rx->msg (sized from the
 *   header, after the limit check), close frame checks -> on_msg -> proto->on_message.
 *
 * Control frames are wslay's queue, written by hd_ws_flush_control() before anything else is
 * queued on the connection (ws_output.c), so wslay never holds a frame behind our back.
 *
 * A connection is never finished from inside wslay_event_recv: hd_ws_close() queues the close
 * frame there and hd_ws_read_input() ends the connection when wslay has returned.
 */
#include "ws_internal.h"

#include <string.h>

#define WS_KEEP_MSG_BYTES   65536 /* reassembly buffer kept between messages */
#define WS_MAX_REASON_BYTES 123   /* close reason: a control frame holds 125 bytes */
#define WS_SLOW_REASON      "subscriber too slow; reconnect and resume"
#define WS_FAST_BYTES       4096 /* a message read without wslay, at most (read_fast) */

/* ---- pure helpers ---- */

/* 1 if a peer may send this close code (RFC 6455 7.4 and the IANA registry), else 0. */
static int close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return 1;
    if (code < 1000 || code > 1014)
        return 0;
    return code != 1004 && code != 1005 && code != 1006;
}

enum { FRAME_OK = 0, FRAME_MORE = 1, FRAME_BAD = -1 };

/*
 * Reads the frame header at p[0..avail). Returns FRAME_OK with *size set to the whole frame
 * (header and payload) and *payload to the payload length, FRAME_MORE when more bytes are
 * needed to tell (a control frame counts as known only once complete), or FRAME_BAD with *why
 * set for framing RFC 6455 forbids. Continuation order is left to wslay, which keeps that state.
 */
static int frame_size(const uint8_t *p, size_t avail, uint64_t *size, uint64_t *payload,
                      const char **why)
{
    if (avail < 2)
        return FRAME_MORE;
    unsigned opcode = p[0] & 0x0f, len7 = p[1] & 0x7f;
    int is_ctrl = (opcode & 0x08) != 0;
    if (p[0] & 0x70) {
        *why = "reserved bits set (no extension was negotiated)";
        return FRAME_BAD;
    }
    if ((opcode > 0x2 && opcode < 0x8) || opcode > 0xa) {
        *why = "reserved opcode";
        return FRAME_BAD;
    }
    if (!(p[1] & 0x80)) {
        *why = "client frames must be masked";
        return FRAME_BAD;
    }
    if (is_ctrl && !(p[0] & 0x80)) {
        *why = "fragmented control frame";
        return FRAME_BAD;
    }
    if (is_ctrl && len7 > 125) {
        *why = "control frame longer than 125 bytes";
        return FRAME_BAD;
    }
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + ext + 4;
    if (avail < hlen)
        return FRAME_MORE;
    uint64_t plen = len7;
    if (ext) {
        plen = 0;
        for (size_t i = 0; i < ext; i++)
            plen = plen << 8 | p[2 + i];
        if ((plen >> 63) != 0 || plen < (ext == 2 ? 126u : 65536u)) {
            *why = "payload length not in its shortest form";
            return FRAME_BAD;
        }
    }
    if (is_ctrl && avail < hlen + plen)
        return FRAME_MORE;
    *size = hlen + plen;
    *payload = plen;
    return FRAME_OK;
}

int hd_ws_is_open(const ws_t *ws)
{
    return !ws->is_gone && !ws->is_closing;
}

/* ---- control frames out, closing ---- */

/* wslay's writer: collects what wslay_event_send writes; hd_ws_flush_control queues it as one. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx;
    (void)flags;
    ws_t *ws = user;
    hd_sbuf_append(&ws->rx->ctl, data, len);
    return (ssize_t)len;
}

/* Queues the control frames wslay holds (pong, ping, close) on the connection, now. */
void hd_ws_flush_control(ws_t *ws)
{
    if (ws->is_gone || !ws->rx || !wslay_event_want_write(ws->rx->ctx))
        return;
    hd_sbuf_init(&ws->rx->ctl, 64);
    int rc = wslay_event_send(ws->rx->ctx);
    hd_buf_t *b = hd_sbuf_finish(&ws->rx->ctl);
    if (rc == 0 && b->len)
        hd_conn_send(ws->pub.conn, b, 0, b->len);
    hd_buf_unref(b);
    if (rc != 0 && !ws->is_gone)
        hd_conn_close(ws->pub.conn); /* out of memory inside wslay */
}

/* Writes what wslay holds, then finishes the connection (its on_close makes the state gone). */
static void finish(ws_t *ws)
{
    hd_ws_flush_control(ws);
    if (!ws->is_gone)
        hd_conn_finish(ws->pub.conn);
}

/*
 * Sends a close frame with code and reason and ends the connection: at once, or from inside
 * wslay_event_recv when it has returned (hd_ws_read_input).
 */
void hd_ws_close(ws_t *ws, int code, const char *reason)
{
    if (!hd_ws_is_open(ws))
        return;
    ws->is_closing = 1;
    hd_ws_backlog_clear(ws);
    /* 4002/4009: an operator's order, which may close thousands at once (kick.c logs one line
     * per worker instead). */
    int quiet = code == 1000 || code == 1001 || code == 4002 || code == 4009;
    hd_conn_log(quiet ? HD_LOG_DEBUG : HD_LOG_INFO, ws->pub.conn, "closing with %d: %s", code,
                reason);
    size_t len = strlen(reason);
    if (len > WS_MAX_REASON_BYTES)
        len = WS_MAX_REASON_BYTES;
    if (!ws->rx) {
        /* A silent peer has no wslay context (hd_ws_ctx), and none is made only to write one
         * frame and free it: an operator's order closes thousands of idle subscribers at once,
         * and the context is about 9 KiB zeroed per connection. The frame is the one wslay
         * writes (RFC 6455 5.5.1: FIN and opcode 8, unmasked, the code big-endian, the
         * reason), nothing is read after it (is_closing), and the connection is finished. */
        uint8_t frame[4 + WS_MAX_REASON_BYTES];
        frame[0] = 0x88;
        frame[1] = (uint8_t)(2 + len);
        frame[2] = (uint8_t)(code >> 8);
        frame[3] = (uint8_t)code;
        memcpy(frame + 4, reason, len);
        hd_conn_send_copy(ws->pub.conn, frame, 4 + len);
        if (!ws->is_gone)
            hd_conn_finish(ws->pub.conn);
        return;
    }
    wslay_event_queue_close(hd_ws_ctx(ws), (uint16_t)code, (const uint8_t *)reason, len);
    wslay_event_shutdown_read(ws->rx->ctx);
    if (!ws->in_recv)
        finish(ws);
}

void hd_ws_drop_slow(ws_t *ws)
{
    HD_HUB_STAT_ADD(ws->pub.w, slow_dropped, 1);
    hd_conn_log(HD_LOG_INFO, ws->pub.conn,
                "slow subscriber: %zu bytes queued, %zu held back, %zu of history",
                hd_conn_queued_bytes(ws->pub.conn), ws->bl ? ws->bl->bytes : 0,
                ws->bl ? ws->bl->hist_bytes : 0);
    hd_ws_close(ws, 1013, WS_SLOW_REASON);
}

/* ---- input ---- */

/*
 * wslay's reader. It hands over ws->rx->in up to the end of the current frame only, and a control
 * frame only once all of it has arrived: wslay checks a close reason for UTF-8 chunk by chunk,
 * restarting past the status code in every chunk, so a close frame must reach it in one piece.
 * The header is read here anyway, so framing errors are answered here, with a reason.
 */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_t *ws = user;
    size_t avail = ws->rx->in_len - ws->rx->in_off;
    if (!hd_ws_is_open(ws) || avail == 0)
        goto block;
    if (ws->rx->frame_left == 0) {
        if (ws->is_throttled || ws->is_authing)
            goto block; /* between frames: resumed when publishes (the ticket) are answered */
        const char *why = NULL;
        uint64_t plen = 0;
        const uint8_t *p = ws->rx->in + ws->rx->in_off;
        int rc = frame_size(p, avail, &ws->rx->frame_left, &plen, &why);
        if (rc == FRAME_BAD) {
            hd_ws_close(ws, 1002, why);
            goto block;
        }
        if (rc == FRAME_MORE)
            goto block;
        /* Too big is known from the header: answered now, not after the first payload byte. */
        size_t max = conf_of(ws)->max_message_bytes;
        size_t so_far = (p[0] & 0x0f) == WSLAY_CONTINUATION_FRAME ? ws->rx->msg_len : 0;
        if (!(p[0] & 0x08) && plen > max - so_far) {
            ws->rx->frame_left = 0;
            hd_ws_close(ws, 1009, "message larger than max_message_size");
            goto block;
        }
    }
    size_t n = len < avail ? len : avail;
    if (n > ws->rx->frame_left)
        n = (size_t)ws->rx->frame_left;
    memcpy(buf, ws->rx->in + ws->rx->in_off, n);
    ws->rx->in_off += n;
    ws->rx->frame_left -= n;
    return (ssize_t)n;
block:
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws))
        return;
    ws->rx->frame_opcode = arg->opcode;
    if (wslay_is_ctrl_frame(arg->opcode)) {
        ws->rx->ctrl_len = 0;
        return;
    }
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->rx->msg_opcode = arg->opcode;
        ws->rx->msg_len = 0;
        hd_utf8_init(&ws->rx->utf8);
    }
    /* The limit holds for the whole message, checked before anything is buffered. */
    size_t max = conf_of(ws)->max_message_bytes;
    if (ws->rx->msg_len > max || arg->payload_length > max - ws->rx->msg_len) {
        hd_ws_close(ws, 1009, "message larger than max_message_size");
        return;
    }
    size_t need = ws->rx->msg_len + (size_t)arg->payload_length;
    ws->rx->msg = hd_grow(ws->rx->msg, &ws->rx->msg_cap, need, 1024, 0);
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws) || arg->data_length == 0)
        return;
    if (wslay_is_ctrl_frame(ws->rx->frame_opcode)) {
        size_t n = arg->data_length;
        if (n > WS_CTRL_BYTES - ws->rx->ctrl_len)
            n = WS_CTRL_BYTES - ws->rx->ctrl_len;
        memcpy(ws->rx->ctrl + ws->rx->ctrl_len, arg->data, n);
        ws->rx->ctrl_len += n;
        return;
    }
    if (ws->rx->msg_opcode == WSLAY_TEXT_FRAME &&
        hd_utf8_feed(&ws->rx->utf8, arg->data, arg->data_length) < 0) {
        hd_ws_close(ws, 1007, "invalid UTF-8 in a text message");
        return;
    }
    HD_ASSERT(ws->rx->msg_len + arg->data_length <= ws->rx->msg_cap);
    memcpy(ws->rx->msg + ws->rx->msg_len, arg->data, arg->data_length);
    ws->rx->msg_len += arg->data_length;
}

/* The peer's close frame: answered with its code, or with 1002/1007 when it is malformed. */
static void answer_close(ws_t *ws)
{
    const uint8_t *p = ws->rx->ctrl;
    size_t n = ws->rx->ctrl_len;
    unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
    if (n == 1) {
        hd_ws_close(ws, 1002, "close frame with a 1-byte payload");
        return;
    }
    if (n >= 2 && !close_code_valid(code)) {
        hd_ws_close(ws, 1002, "invalid close code");
        return;
    }
    if (n > 2 && !hd_utf8_valid(p + 2, n - 2)) {
        hd_ws_close(ws, 1007, "close reason is not UTF-8");
        return;
    }
    /* Queued before wslay's own echo, which then finds a close queued and stays out. */
    hd_conn_log(HD_LOG_DEBUG, ws->pub.conn, "peer closed with %u", code);
    ws->is_closing = 1;
    hd_ws_backlog_clear(ws);
    wslay_event_queue_close(hd_ws_ctx(ws), (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(ws->rx->ctx);
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (hd_ws_is_open(ws) && ws->rx->frame_opcode == WSLAY_CONNECTION_CLOSE)
        answer_close(ws);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    ws_t *ws = user;
    if (!hd_ws_is_open(ws) || wslay_is_ctrl_frame(arg->opcode))
        return; /* wslay has queued the pong for a ping; a pong only shows the peer is alive */
    if (ws->rx->msg_opcode == WSLAY_TEXT_FRAME && !hd_utf8_complete(&ws->rx->utf8)) {
        hd_ws_close(ws, 1007, "text message ends inside a UTF-8 sequence");
        return;
    }
    const char *data = ws->rx->msg ? (const char *)ws->rx->msg : "";
    ws->proto->on_message(ws, ws->rx->msg_opcode, data, ws->rx->msg_len);
    ws->rx->msg_len = 0;
    ws->rx->msg_opcode = 0;
    if (ws->rx->msg_cap > WS_KEEP_MSG_BYTES) {
        free(ws->rx->msg);
        ws->rx->msg = NULL;
        ws->rx->msg_cap = 0;
    }
}

/* Unmasks in[0..n) into out, 8 bytes at a time (the 4-byte mask repeated). */
static void unmask(uint8_t *out, const uint8_t *in, size_t n, const uint8_t *mask)
{
    uint8_t m8[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    uint64_t m, w;
    memcpy(&m, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, in + i, 8);
        w ^= m;
        memcpy(out + i, &w, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ mask[i & 3];
}

/*
 * The common case without wslay. While the peer has nothing half-sent (no ws->rx: no partial
 * frame, no fragmented message, no control frame going out), each whole frame at the start of
 * p that is a complete message (FIN, text or binary, masked, no reserved bit, its length in
 * shortest form, within max_message_size and WS_FAST_BYTES, valid UTF-8 when text) is unmasked
 * into a buffer on the stack and handed to the protocol; a pong is passed over and a ping
 * answered with its pong. That is what wslay and the frame callbacks above would do, without
 * making (zeroing) and freeing a 9 KiB wslay context for every message of a peer that sends one
 * now and then (a /ws subscribe or unsubscribe: 13,000 of the 29,000 instructions of one; the
 * pong of every idle connection at each ws_ping_interval). Returns how many bytes it took: it
 * stops before anything else (a close frame, a fragment, a partial, oversized or malformed
 * frame, input that must wait),
 * which then goes through wslay from that frame boundary, where a new context starts as it
 * expects, and gets its answer there (errors, closes and their reasons stay wslay's path's).
 */
static size_t read_fast(ws_t *ws, const uint8_t *p, size_t len)
{
    size_t off = 0;
    uint8_t buf[WS_FAST_BYTES];
    while (off < len && hd_ws_is_open(ws) && !ws->rx && !ws->is_throttled && !ws->is_authing) {
        const uint8_t *f = p + off;
        uint64_t size = 0, plen = 0;
        const char *why = NULL;
        /* a ping or a pong: frame_size says FRAME_OK only once the frame is complete */
        int is_ctrl = f[0] == 0x89 || f[0] == 0x8a;
        if ((!is_ctrl && f[0] != 0x81 && f[0] != 0x82) ||
            frame_size(f, len - off, &size, &plen, &why) != FRAME_OK || size > len - off ||
            plen > sizeof(buf) - 2 || plen > conf_of(ws)->max_message_bytes)
            break;
        const uint8_t *in = f + (size - plen);
        off += (size_t)size;
        if (f[0] == 0x8a)
            continue; /* a pong only shows the peer is alive (last_rx_ms) */
        unmask(buf + 2, in, (size_t)plen, in - 4);
        if (f[0] == 0x89) { /* answered with a pong of its payload, as wslay would */
            buf[0] = 0x8a;
            buf[1] = (uint8_t)plen; /* at most 125 */
            hd_conn_send_copy(ws->pub.conn, buf, (size_t)plen + 2);
            continue;
        }
        uint8_t opcode = f[0] & 0x0f;
        if (opcode == WSLAY_TEXT_FRAME && !hd_utf8_valid(buf + 2, (size_t)plen)) {
            off -= (size_t)size;
            break; /* closed with 1007 there, with the reason for what is wrong */
        }
        ws->proto->on_message(ws, opcode, (const char *)buf + 2, (size_t)plen);
    }
    return off;
}

void hd_ws_on_input(ws_t *ws, const char *data, size_t len)
{
    if (!hd_ws_is_open(ws))
        return;
    size_t n = ws->rx ? 0 : read_fast(ws, (const uint8_t *)data, len);
    if (!hd_ws_is_open(ws))
        return;
    if (n == len) {
        if (hd_conn_queued_bytes(ws->pub.conn) > conf_of(ws)->max_queue_bytes)
            hd_ws_drop_slow(ws); /* a peer that asks much faster than it reads */
        return;
    }
    hd_ws_ctx(ws);
    ws_rx_t *rx = ws->rx;
    rx->in = hd_grow(rx->in, &rx->in_cap, rx->in_len + (len - n), 4096, 0);
    memcpy(rx->in + rx->in_len, data + n, len - n);
    rx->in_len += len - n;
    hd_ws_read_input(ws); /* may free rx (hd_ws_release_rx_if_idle) */
    if (!ws->is_gone && ws->rx && ws->rx->in_len == 0) { /* no input buffer while idle */
        free(ws->rx->in);
        ws->rx->in = NULL;
        ws->rx->in_cap = 0;
    }
}

/* Lets wslay read what has arrived; ends the connection when a close frame has been queued. */
void hd_ws_read_input(ws_t *ws)
{
    if (!hd_ws_is_open(ws))
        return;
    ws->in_recv = 1;
    int rc = wslay_event_recv(hd_ws_ctx(ws));
    ws->in_recv = 0;
    if (ws->is_gone)
        return;
    if (ws->is_closing)
        ws->rx->in_off = ws->rx->in_len;
    if (ws->rx->in_off) { /* an idle connection has no input buffer at all (in == NULL) */
        memmove(ws->rx->in, ws->rx->in + ws->rx->in_off, ws->rx->in_len - ws->rx->in_off);
        ws->rx->in_len -= ws->rx->in_off;
        ws->rx->in_off = 0;
    }
    if (rc != 0) {
        hd_conn_log(HD_LOG_WARN, ws->pub.conn, "wslay failed (%d): closing", rc);
        hd_conn_close(ws->pub.conn);
        return;
    }
    hd_ws_flush_control(ws);
    if (ws->is_gone)
        return;
    if (ws->is_closing || wslay_event_get_close_sent(ws->rx->ctx)) {
        if (!ws->is_closing)
            hd_conn_log(HD_LOG_INFO, ws->pub.conn, "protocol error: closed with %u",
                        wslay_event_get_status_code_sent(ws->rx->ctx));
        ws->is_closing = 1;
        hd_conn_finish(ws->pub.conn);
        return;
    }
    if ((ws->is_throttled || ws->is_authing) && ws->rx->in_len > WS_KEEP_MSG_BYTES)
        hd_conn_read_stop(ws->pub.conn); /* on_published (on_taken) starts reading again */
    if (hd_conn_queued_bytes(ws->pub.conn) > conf_of(ws)->max_queue_bytes)
        hd_ws_drop_slow(ws); /* a peer that pings (or asks) much faster than it reads */
    else
        hd_ws_release_rx_if_idle(ws);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_frame_recv_start_callback = on_frame_start,
    .on_frame_recv_chunk_callback = on_frame_chunk,
    .on_frame_recv_end_callback = on_frame_end,
    .on_msg_recv_callback = on_msg,
};

/*
 * The wslay context (about 9 KiB) and the rest of ws_rx_t exist only while the peer is sending
 * or a control frame is going out: an idle subscriber holds none. Created on demand...
 */
wslay_event_context_ptr hd_ws_ctx(ws_t *ws)
{
    if (!ws->rx) {
        ws->rx = hd_calloc(1, sizeof(*ws->rx));
        HD_ASSERT(wslay_event_context_server_init(&ws->rx->ctx, &callbacks, ws) == 0);
        /* Data frames are reassembled here (size checked first); wslay buffers control frames. */
        wslay_event_config_set_no_buffering(ws->rx->ctx, 1);
        wslay_event_config_set_max_recv_msg_length(ws->rx->ctx, UINT64_MAX);
    }
    return ws->rx->ctx;
}

void hd_ws_free_rx(ws_t *ws)
{
    ws_rx_t *rx = ws->rx;
    if (!rx)
        return;
    hd_sbuf_dispose(&rx->ctl);
    wslay_event_context_free(rx->ctx);
    free(rx->in);
    free(rx->msg);
    free(rx);
    ws->rx = NULL;
}

/* ...and freed when it holds nothing: no input waiting, no frame or fragmented message half
 * received, nothing to send, no close under way. */
void hd_ws_release_rx_if_idle(ws_t *ws)
{
    ws_rx_t *rx = ws->rx;
    if (!rx || ws->is_gone || ws->is_closing || ws->in_recv || rx->in_len || rx->frame_left ||
        rx->msg_opcode || wslay_event_want_write(rx->ctx) || wslay_event_get_close_sent(rx->ctx) ||
        wslay_event_get_close_received(rx->ctx))
        return;
    hd_ws_free_rx(ws);
}
