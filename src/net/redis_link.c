/* SPDX-License-Identifier: MIT */
/*
 * redis_link.c: the habits every hiredis connection of herald shares (redis_link.h): the Redis
 * bridge's (src/broker/redis_conn.c) and the hooks thread's (src/hooks/rconn.c). Neither owner
 * is known here: each keeps its own state and callbacks.
 */
#include "herald/redis_link.h"

#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

redisAsyncContext *hd_redis_link_open(uv_loop_t *loop, const hd_redis_addr_t *addr, void *data,
                                      redisConnectCallback *on_connect,
                                      redisDisconnectCallback *on_disconnect, char *why,
                                      size_t whylen)
{
    redisAsyncContext *ac = addr->path[0] ? redisAsyncConnectUnix(addr->path)
                                          : redisAsyncConnect(addr->host, addr->port);
    if (!ac || ac->err) {
        snprintf(why, whylen, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    if (redisLibuvAttach(ac, loop) != REDIS_OK) {
        snprintf(why, whylen, "cannot watch the connection");
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

void hd_redis_link_drop(redisAsyncContext *ac)
{
    if (ac && !(ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
        redisAsyncFree(ac);
}

int hd_redis_link_socket_error(const redisAsyncContext *ac)
{
    int e = 0;
    socklen_t len = sizeof(e);
    if (!ac || ac->c.fd < 0)
        return 0;
    if (getsockopt(ac->c.fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        return errno;
    return e;
}

void hd_redis_link_client_name(char *buf, size_t len, const char *role)
{
    char host[64] = "";
    size_t host_len = sizeof(host);
    if (uv_os_gethostname(host, &host_len) != 0)
        snprintf(host, sizeof(host), "unknown");
    for (char *p = host; *p; p++)
        if (*p <= ' ' || *p > '~')
            *p = '_';
    snprintf(buf, len, "herald:%s:%ld:%s", host, (long)uv_os_getpid(), role);
}

uint64_t hd_redis_link_backoff_ms(unsigned attempts, uint64_t *rng)
{
    uint64_t delay = (uint64_t)HD_REDIS_BACKOFF_MIN_MS << (attempts < 6 ? attempts : 6);
    if (delay > HD_REDIS_BACKOFF_MAX_MS)
        delay = HD_REDIS_BACKOFF_MAX_MS;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return delay / 2 + *rng % (delay / 2 + 1);
}

uint64_t hd_redis_link_tick_ms(uint64_t timeout_ms)
{
    return timeout_ms / 4 < 25 ? 25 : timeout_ms / 4 > 250 ? 250 : timeout_ms / 4;
}

void hd_redis_link_setup_failed(char *why, size_t whylen, const char *what, const char *err)
{
    snprintf(why, whylen, "%s failed: %.200s%s", what, err,
             strcmp(what, "FUNCTION LOAD") == 0 && strncmp(err, "ERR unknown command", 19) == 0
                 ? " (Redis 7 or later is needed)"
                 : "");
}
