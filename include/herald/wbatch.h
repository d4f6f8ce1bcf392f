/* SPDX-License-Identifier: MIT */
/*
 * wbatch.h: the writes of a loop pass to several non-blocking sockets in one system call
 * (Linux AIO: one io_submit of IOCB_CMD_PWRITEV, one per socket), for a thread that owns those
 * sockets: the webhook sender's pools (src/hooks/client.c) and a worker's end-of-pass flush
 * (src/net/conn.c). One batch per thread; it is touched by that thread only.
 *
 *   hd_wbatch_add(fd, iov) x N  ->  hd_wbatch_run: io_submit (N writes, each done at once: a
 *   non-blocking socket never queues) -> io_getevents (their N results) -> res[slot]
 *
 * Nothing stays in flight once hd_wbatch_run returns: each result is what uv_try_write (one
 * writev) would have given for that socket, so the caller goes on as after uv_try_write.
 */
#ifndef HERALD_WBATCH_H
#define HERALD_WBATCH_H

#include <sys/types.h>
#include <uv.h>

#define HD_WBATCH_MAX 64 /* writes in one batch */
typedef struct hd_wbatch_s hd_wbatch_t;

/* A batch (Linux AIO), or NULL with errno when the kernel refuses one (seccomp, ENOSYS,
 * aio-max-nr): the caller then writes each socket itself. */
hd_wbatch_t *hd_wbatch_new(void);
void hd_wbatch_free(hd_wbatch_t *b);
/* Queues a write of iov[0..n) to fd (a non-blocking socket) and returns its slot (0, 1, ...), or
 * -1 when the batch holds HD_WBATCH_MAX. iov, its buffers and fd stay until hd_wbatch_run. */
int hd_wbatch_add(hd_wbatch_t *b, int fd, const uv_buf_t *iov, size_t n);
size_t hd_wbatch_count(const hd_wbatch_t *b);
/* Writes everything queued, in one io_submit when there are two or more, and empties the batch:
 * res[slot] is what uv_try_write would give, the bytes the socket took or a negative error
 * (UV_EAGAIN: none). Nothing stays in flight. */
void hd_wbatch_run(hd_wbatch_t *b, ssize_t *res);

#endif
