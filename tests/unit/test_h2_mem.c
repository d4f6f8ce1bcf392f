/* SPDX-License-Identifier: MIT */
/*
 * test_h2_mem.c: nghttp2's allocator (src/http/h2_mem.c) as nghttp2 itself uses it: a session's
 * frame buffer, allocated by realloc from NULL, gets pages of its own and gives them back with
 * the session; blocks past the pages-of-their-own limit, and small ones, come from malloc.
 */
#include "http/internal.h"

#include "test.h"

static int n_big(const hd_h2_t *h2)
{
    int n = 0;
    for (int i = 0; i < HD_H2_BIG_MAX; i++)
        n += h2->big[i] != NULL;
    return n;
}

/* A server session, as h2.c makes one: its frame buffer is the one big block. */
static void test_session_frame_buffer(void)
{
    hd_h2_t h2;
    memset(&h2, 0, sizeof(h2));
    nghttp2_mem mem;
    hd_h2_mem_init(&h2, &mem);
    nghttp2_session_callbacks *cb;
    T_EQ_INT(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session *session;
    T_EQ_INT(nghttp2_session_server_new3(&session, cb, NULL, NULL, &mem), 0);
    nghttp2_session_callbacks_del(cb);
    T_EQ_INT(n_big(&h2), 1);
    nghttp2_session_del(session);
    T_EQ_INT(n_big(&h2), 0);
}

/* The allocator's own contract, through the table nghttp2 calls. */
static void test_blocks(void)
{
    hd_h2_t h2;
    memset(&h2, 0, sizeof(h2));
    nghttp2_mem mem;
    hd_h2_mem_init(&h2, &mem);
    void *small = mem.realloc(NULL, 100, mem.mem_user_data);
    T_TRUE(small != NULL);
    T_EQ_INT(n_big(&h2), 0);
    /* from NULL: a big block, zero-filled pages; grown: moved to another, contents kept */
    char *big = mem.realloc(NULL, 20000, mem.mem_user_data);
    T_EQ_INT(n_big(&h2), 1);
    memset(big, 'x', 20000);
    big = mem.realloc(big, 40000, mem.mem_user_data);
    T_EQ_INT(n_big(&h2), 1);
    T_TRUE(big[0] == 'x' && big[19999] == 'x');
    /* calloc of a big block is zeroed */
    unsigned char *z = mem.calloc(2, 10000, mem.mem_user_data);
    T_EQ_INT(n_big(&h2), 2);
    T_TRUE(z[0] == 0 && z[19999] == 0);
    /* past HD_H2_BIG_MAX: malloc, freed as such */
    void *more[HD_H2_BIG_MAX];
    for (int i = 0; i < HD_H2_BIG_MAX; i++)
        more[i] = mem.malloc(16384, mem.mem_user_data);
    T_EQ_INT(n_big(&h2), HD_H2_BIG_MAX);
    for (int i = 0; i < HD_H2_BIG_MAX; i++)
        mem.free(more[i], mem.mem_user_data);
    mem.free(z, mem.mem_user_data);
    mem.free(big, mem.mem_user_data);
    mem.free(small, mem.mem_user_data);
    mem.free(NULL, mem.mem_user_data);
    T_EQ_INT(n_big(&h2), 0);
}

/*
 * What nghttp2 asks of the allocator for a server session and for each stream it holds: a
 * counting layer over h2_mem.c's allocator (a size in front of every block). The session is
 * set up as h2.c sets it up (the options that change what it keeps) and a client opens 100
 * streams that stay open (an EventSource's GET: HEADERS with END_STREAM, no answer yet).
 */
typedef struct counted_s {
    nghttp2_mem inner;
    long long bytes, blocks;
} counted_t;

#define CNT_HDR 16

static void *cnt_malloc(size_t size, void *user)
{
    counted_t *k = user;
    size_t *p = k->inner.malloc(size + CNT_HDR, k->inner.mem_user_data);
    if (!p)
        return NULL;
    *p = size;
    k->bytes += (long long)size;
    k->blocks++;
    return (char *)p + CNT_HDR;
}

static void cnt_free(void *ptr, void *user)
{
    counted_t *k = user;
    if (!ptr)
        return;
    size_t *p = (size_t *)((char *)ptr - CNT_HDR);
    k->bytes -= (long long)*p;
    k->blocks--;
    k->inner.free(p, k->inner.mem_user_data);
}

static void *cnt_calloc(size_t n, size_t size, void *user)
{
    void *p = cnt_malloc(n * size, user);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *cnt_realloc(void *ptr, size_t size, void *user)
{
    if (!ptr)
        return cnt_malloc(size, user);
    counted_t *k = user;
    size_t *p = (size_t *)((char *)ptr - CNT_HDR), old = *p;
    size_t *q = k->inner.realloc(p, size + CNT_HDR, k->inner.mem_user_data);
    if (!q)
        return NULL;
    *q = size;
    k->bytes += (long long)size - (long long)old;
    return (char *)q + CNT_HDR;
}

/* Moves what one session sends into the other. */
static void pump(nghttp2_session *from, nghttp2_session *to)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(from, &data);
        T_TRUE(n >= 0);
        if (n == 0)
            return;
        T_EQ_INT(nghttp2_session_mem_recv(to, data, (size_t)n), n);
    }
}

static void test_session_and_stream_memory(void)
{
    hd_h2_t h2;
    memset(&h2, 0, sizeof(h2));
    counted_t k;
    memset(&k, 0, sizeof(k));
    hd_h2_mem_init(&h2, &k.inner);
    nghttp2_mem mem = {&k, cnt_malloc, cnt_free, cnt_calloc, cnt_realloc};
    nghttp2_session_callbacks *cb;
    T_EQ_INT(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_option *opt;
    T_EQ_INT(nghttp2_option_new(&opt), 0);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_session *server, *client;
    T_EQ_INT(nghttp2_session_server_new3(&server, cb, NULL, opt, &mem), 0);
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128},
                                   {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}};
    T_EQ_INT(nghttp2_submit_settings(server, NGHTTP2_FLAG_NONE, iv, 2), 0);
    T_EQ_INT(nghttp2_session_client_new(&client, cb, NULL), 0);
    nghttp2_session_callbacks_del(cb);
    T_EQ_INT(nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    pump(client, server);
    pump(server, client);
    pump(client, server);
    long long session = k.bytes, session_blocks = k.blocks;
    enum { N = 100 };
    for (int i = 0; i < N; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/sse/channel-%d", i);
        nghttp2_nv nv[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
            {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
            {(uint8_t *)":authority", (uint8_t *)"127.0.0.1:8080", 10, 14, 0},
            {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
            {(uint8_t *)"accept", (uint8_t *)"text/event-stream", 6, 17, 0},
            {(uint8_t *)"user-agent", (uint8_t *)"a browser of these days/1.0", 10, 27, 0},
        };
        T_TRUE(nghttp2_submit_request(client, NULL, nv, HD_ARRAY_SIZE(nv), NULL, NULL) > 0);
    }
    pump(client, server);
    pump(server, client);
    T_EQ_INT(nghttp2_session_get_stream_remote_close(server, 2 * N - 1), 1); /* held open */
    long long streams = k.bytes - session;
    fprintf(stderr,
            "  nghttp2, server session: %lld bytes in %lld blocks; %d streams: %lld bytes "
            "in %lld blocks (%lld a stream)\n",
            session, session_blocks, N, streams, k.blocks - session_blocks, streams / N);
    /* nghttp2 1.52: a stream is 224 bytes, and the stream map's table grows with the streams
     * (4 KiB for 100: 41 a stream); the HPACK table holds the client's fields once */
    T_TRUE(streams / N < 400);
    nghttp2_session_del(client);
    nghttp2_session_del(server);
    T_EQ_INT(k.bytes, 0);
    T_EQ_INT(k.blocks, 0);
}

int main(void)
{
    T_RUN(test_session_frame_buffer);
    T_RUN(test_session_and_stream_memory);
    T_RUN(test_blocks);
    T_DONE();
}
