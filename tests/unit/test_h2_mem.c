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

int main(void)
{
    T_RUN(test_session_frame_buffer);
    T_RUN(test_blocks);
    T_DONE();
}
