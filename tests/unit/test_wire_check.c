/* SPDX-License-Identifier: MIT */
/*
 * test_wire_check.c: the fuzzers' check of what clients read (tests/fuzz/wire_check.h) must
 * fire on every broken promise it names and stay quiet on streams that keep them, however the
 * bytes arrive: good streams are fed whole and split at every offset, bad ones whole and byte
 * by byte, each in a child process whose abort is the expected outcome.
 */
#include "../fuzz/wire_check.h"
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define S(lit) lit, sizeof(lit) - 1

static const char sse_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
static const char ws_head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

/* Head + body in one buffer (out must hold both). */
static size_t cat(char *out, const char *head, const char *body, size_t body_len)
{
    size_t n = strlen(head);
    memcpy(out, head, n);
    memcpy(out + n, body, body_len);
    return n + body_len;
}

/* Feeds data split at `cut` (0: whole; 1: byte by byte; else two pieces at cut - 2). */
static void feed(wire_check_t *w, const char *data, size_t len, size_t cut)
{
    if (cut == 1) {
        for (size_t i = 0; i < len; i++)
            wire_check_feed(w, data + i, 1);
    } else if (cut >= 2 && cut - 2 <= len) {
        wire_check_feed(w, data, cut - 2);
        wire_check_feed(w, data + cut - 2, len - (cut - 2));
    } else {
        wire_check_feed(w, data, len);
    }
}

/* 1 when checking the stream (then its end, with eof) aborts, in a child, fed whole and byte
 * by byte; fails the test when the two ways disagree. */
static int aborts(int kind, const char *data, size_t len, int eof)
{
    int outcome[2];
    for (size_t cut = 0; cut < 2; cut++) {
        fflush(stderr);
        pid_t pid = fork();
        T_TRUE(pid >= 0);
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 2); /* the check's report is expected */
            wire_check_t w;
            wire_check_init(&w, kind, "test");
            feed(&w, data, len, cut);
            if (eof)
                wire_check_eof(&w);
            wire_check_dispose(&w);
            _exit(0);
        }
        int st;
        T_EQ_INT(waitpid(pid, &st, 0), pid);
        T_TRUE(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
        outcome[cut] = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
    }
    T_EQ_INT(outcome[0], outcome[1]);
    return outcome[0];
}

/* Checks a good stream split at every offset; returns the check of the last split. */
static void good(wire_check_t *out, int kind, const char *data, size_t len)
{
    for (size_t cut = 0; cut <= len + 2; cut++) {
        wire_check_t w;
        wire_check_init(&w, kind, "test");
        feed(&w, data, len, cut);
        wire_check_eof(&w);
        if (cut < len + 2) {
            wire_check_dispose(&w);
        } else {
            *out = w;
        }
    }
}

static void test_sse(void)
{
    char buf[512];
    wire_check_t w;
    size_t n = cat(buf, sse_head,
                   S("retry: 100\n\nid: a-1\ndata: h\xc3\xa9 \xf0\x9f\x98\x80\n\n"
                     ": base64\nid: a-2\ndata: AAE=\n\n"));
    good(&w, WIRE_SSE, buf, n);
    T_EQ_INT(w.status, 200);
    T_EQ_INT(w.state, WIRE_BODY);
    T_EQ_INT(w.events, 3);
    wire_check_dispose(&w);

    n = cat(buf, sse_head, S("id: a-1\ndata: \xff\xfe\n\n"));
    T_TRUE(aborts(WIRE_SSE, buf, n, 0));
    n = cat(buf, sse_head, S("id: a-1\nevent: \xed\xa0\x80\n")); /* a surrogate */
    T_TRUE(aborts(WIRE_SSE, buf, n, 0));
    n = cat(buf, sse_head, S("data: \xc3"));
    T_TRUE(!aborts(WIRE_SSE, buf, n, 0)); /* the rest may still come */
    T_TRUE(aborts(WIRE_SSE, buf, n, 1));  /* not after the end */
    /* an answer other than the stream is not an SSE stream: not checked */
    n = cat(buf, "HTTP/1.1 400 Bad Request\r\nContent-Length: 1\r\n\r\n", S("\xff"));
    T_TRUE(!aborts(WIRE_SSE, buf, n, 1));
    T_TRUE(aborts(WIRE_SSE, S("HTTP/1.0 200 OK\r\n\r\n"), 0));
}

static void test_ws_frames(void)
{
    char buf[512];
    wire_check_t w;
    /* a text message in two fragments split inside a character, a ping between them, a
     * binary message that is not UTF-8, a close with a UTF-8 reason */
    size_t n = cat(buf, ws_head,
                   S("\x01\x02h\xc3"
                     "\x89\x00"
                     "\x80\x01\xa9"
                     "\x82\x02\xff\xfe"
                     "\x88\x04\x03\xe8\xce\xbb"));
    good(&w, WIRE_WS, buf, n);
    T_EQ_INT(w.texts, 1);
    T_EQ_INT(w.datas, 2);
    T_EQ_INT(w.state, WIRE_CLOSED);
    wire_check_dispose(&w);
    /* 126: a 16-bit length */
    char big[300 + sizeof(ws_head)];
    char frame[4 + 200] = "\x81\x7e\x00\xc8";
    memset(frame + 4, 'a', 200);
    n = cat(big, ws_head, frame, sizeof(frame));
    good(&w, WIRE_WS, big, n);
    T_EQ_INT(w.texts, 1);
    wire_check_dispose(&w);

    n = cat(buf, ws_head, S("\x81\x01\xff"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* text not UTF-8 */
    n = cat(buf, ws_head, S("\x81\x01\xc3"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* ends inside a character */
    n = cat(buf, ws_head, S("\x01\x01\xc3\x81\x01\xa9"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* a new message inside a fragmented one */
    n = cat(buf, ws_head,
            S("\x80\x01"
              "a"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* a continuation of nothing */
    n = cat(buf, ws_head, S("\x88\x03\x03\xe8\xff"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* close reason not UTF-8 */
    n = cat(buf, ws_head, S("\x88\x01\x03"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* 1-byte close payload */
    n = cat(buf, ws_head,
            S("\x88\x02\x03\xe8\x81\x01"
              "a"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* a frame after close */
    n = cat(buf, ws_head,
            S("\x81\x81\x00\x00\x00\x00"
              "a"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* masked */
    n = cat(buf, ws_head,
            S("\xc1\x01"
              "a"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* RSV1 */
    n = cat(buf, ws_head, S("\x83\x00"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* unknown opcode */
    n = cat(buf, ws_head, S("\x09\x00"));
    T_TRUE(aborts(WIRE_WS, buf, n, 0)); /* fragmented ping */
    /* a refused handshake: the answer is not frames, and not checked as such */
    n = cat(buf, "HTTP/1.1 403 Forbidden\r\n\r\n", S("\x81\x01\xff"));
    T_TRUE(!aborts(WIRE_WS, buf, n, 1));
}

/* The 101 head and one unmasked text frame per payload (each under 126 bytes). */
static size_t ws_texts(char *out, const char *const *payloads, size_t n)
{
    size_t len = cat(out, ws_head, "", 0);
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(payloads[i]);
        T_TRUE(k < 126);
        out[len++] = (char)0x81;
        out[len++] = (char)k;
        memcpy(out + len, payloads[i], k);
        len += k;
    }
    return len;
}

static void test_ws_json(void)
{
    char buf[512];
    wire_check_t w;
    static const char *const ok[] = {"{\"type\":\"message\",\"content_type\":\"text/plain; q=\\\"a "
                                     "b\\\"\",\"data\":\"\\u0000\"}",
                                     "{\"type\":\"published\"}"};
    size_t n = ws_texts(buf, ok, 2);
    good(&w, WIRE_WS_JSON, buf, n);
    T_EQ_INT(w.texts, 2);
    T_EQ_STR(w.last_type, "published");
    wire_check_dispose(&w);

    static const char *const bad[] = {
        /* valid UTF-8, but not a media type hd_content_type_valid accepts */
        "{\"type\":\"message\",\"content_type\":\"text/plain; x=\xc3\xbf\"}",
        "{\"type\":\"message\",\"content_type\":5}",
        "[1]",          /* not an object */
        "{\"type\":1}", /* type not a string */
        "{]",           /* not JSON */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = ws_texts(buf, &bad[i], 1);
        T_TRUE(aborts(WIRE_WS_JSON, buf, n, 0));
    }
    /* the same frames on a /ws/{channel} without herald.v1 are payloads: only UTF-8 counts */
    n = ws_texts(buf, &bad[2], 1);
    T_TRUE(!aborts(WIRE_WS, buf, n, 1));
}

int main(void)
{
    T_RUN(test_sse);
    T_RUN(test_ws_frames);
    T_RUN(test_ws_json);
    T_DONE();
}
