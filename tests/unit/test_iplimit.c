/* SPDX-License-Identifier: MIT */
/*
 * test_iplimit.c: the node's table of client addresses (src/net/iplimit.c): connections per
 * address, the per-address token bucket, IPv6 keyed by /64, and the bound on idle entries under
 * a flood of distinct addresses.
 */
#include "herald/common.h"
#include "net/iplimit.h"

#include "test.h"

static hd_ip_t v4(uint32_t n)
{
    hd_ip_t ip;
    memset(&ip, 0, sizeof(ip));
    ip.family = HD_IP_V4;
    ip.bytes[0] = (uint8_t)(n >> 24);
    ip.bytes[1] = (uint8_t)(n >> 16);
    ip.bytes[2] = (uint8_t)(n >> 8);
    ip.bytes[3] = (uint8_t)n;
    return ip;
}

static void test_connections(void)
{
    hd_iplimit_t *t = hd_iplimit_new();
    hd_ip_t a = v4(0x0a000001), b = v4(0x0a000002);
    uint64_t retry;
    T_EQ_INT(hd_iplimit_admit(t, &a, 1000, 2, 0, 1, &retry), 0);
    T_EQ_INT(hd_iplimit_admit(t, &a, 1000, 2, 0, 1, &retry), 0);
    T_EQ_INT(hd_iplimit_admit(t, &a, 1000, 2, 0, 1, &retry), HD_EIPCONNS);
    T_EQ_INT(hd_iplimit_admit(t, &b, 1000, 2, 0, 1, &retry), 0); /* another address is served */
    T_EQ_INT(hd_iplimit_entries(t), 2);
    hd_iplimit_release(t, &a, 1000, 0, 1);
    T_EQ_INT(hd_iplimit_admit(t, &a, 1000, 2, 0, 1, &retry), 0);
    hd_iplimit_release(t, &a, 1000, 0, 1);
    hd_iplimit_release(t, &a, 1000, 0, 1);
    hd_iplimit_release(t, &b, 1000, 0, 1);
    T_EQ_INT(hd_iplimit_entries(t), 0); /* no rate: nothing kept for idle addresses */
    hd_iplimit_free(t);
}

static void test_rate(void)
{
    hd_iplimit_t *t = hd_iplimit_new();
    hd_ip_t a = v4(0xc0000201), b = v4(0xc0000202);
    uint64_t retry;
    /* 2 per second, burst 3: three at once, then one every 500 ms */
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(hd_iplimit_admit(t, &a, 10000, 0, 2, 3, &retry), 0);
        hd_iplimit_release(t, &a, 10000, 2, 3);
    }
    T_EQ_INT(hd_iplimit_admit(t, &a, 10000, 0, 2, 3, &retry), HD_EIPRATE);
    T_TRUE(retry > 0 && retry <= 501);
    T_EQ_INT(hd_iplimit_admit(t, &b, 10000, 0, 2, 3, &retry), 0);
    T_EQ_INT(hd_iplimit_admit(t, &a, 10400, 0, 2, 3, &retry), HD_EIPRATE);
    T_EQ_INT(hd_iplimit_admit(t, &a, 10500, 0, 2, 3, &retry), 0);
    T_EQ_INT(hd_iplimit_admit(t, &a, 10500, 0, 2, 3, &retry), HD_EIPRATE);
    hd_iplimit_release(t, &a, 10500, 2, 3);
    hd_iplimit_release(t, &b, 10500, 2, 3);
    /* b's bucket refilled by its release: dropped; a's is empty: kept */
    T_EQ_INT(hd_iplimit_entries(t), 1);
    /* a connection that leaves its bucket a token short keeps the entry; a full one drops it */
    T_EQ_INT(hd_iplimit_admit(t, &a, 20000, 0, 2, 3, &retry), 0);
    hd_iplimit_release(t, &a, 20000, 2, 3);
    T_EQ_INT(hd_iplimit_entries(t), 1);
    T_EQ_INT(hd_iplimit_admit(t, &a, 21000, 0, 2, 3, &retry), 0);
    hd_iplimit_release(t, &a, 21500, 2, 3);
    T_EQ_INT(hd_iplimit_entries(t), 0);
    /* loop times of two workers may be slightly apart: an earlier now is not a refill */
    T_EQ_INT(hd_iplimit_admit(t, &a, 30000, 0, 1, 1, &retry), 0);
    hd_iplimit_release(t, &a, 30000, 1, 1);
    T_EQ_INT(hd_iplimit_admit(t, &a, 29990, 0, 1, 1, &retry), HD_EIPRATE);
    hd_iplimit_free(t);
}

static void test_ipv6_prefix(void)
{
    hd_iplimit_t *t = hd_iplimit_new();
    hd_ip_t a, b, c;
    memset(&a, 0, sizeof(a));
    a.family = HD_IP_V6;
    a.bytes[0] = 0x20, a.bytes[1] = 0x01, a.bytes[15] = 1;
    b = a;
    b.bytes[15] = 2;
    b.bytes[9] = 0xff; /* same /64 */
    c = a;
    c.bytes[7] = 1; /* another /64 */
    uint64_t retry;
    T_EQ_INT(hd_iplimit_admit(t, &a, 0, 1, 0, 1, &retry), 0);
    T_EQ_INT(hd_iplimit_admit(t, &b, 0, 1, 0, 1, &retry), HD_EIPCONNS);
    T_EQ_INT(hd_iplimit_admit(t, &c, 0, 1, 0, 1, &retry), 0);
    hd_iplimit_release(t, &a, 0, 0, 1);
    hd_iplimit_release(t, &c, 0, 0, 1);
    hd_iplimit_free(t);
}

/* A flood of distinct addresses, each leaving a bucket that has not refilled: bounded. */
static void test_flood_bounded(void)
{
    hd_iplimit_t *t = hd_iplimit_new();
    uint64_t retry;
    for (uint32_t i = 0; i < 200000; i++) {
        hd_ip_t ip = v4(0x0b000000 + i);
        T_EQ_INT(hd_iplimit_admit(t, &ip, 1000, 0, 1, 5, &retry), 0);
        hd_iplimit_release(t, &ip, 1000, 1, 5);
        if (hd_iplimit_entries(t) > HD_IPLIMIT_MAX_IDLE)
            T_FAIL("%zu entries after %u addresses (bound %d)", hd_iplimit_entries(t), i + 1,
                   HD_IPLIMIT_MAX_IDLE);
    }
    T_TRUE(hd_iplimit_entries(t) > HD_IPLIMIT_MAX_IDLE / 2);
    /* with open connections, entries are those plus the idle bound */
    hd_ip_t held[1000];
    for (uint32_t i = 0; i < 1000; i++) {
        held[i] = v4(0x0c000000 + i);
        T_EQ_INT(hd_iplimit_admit(t, &held[i], 1000, 0, 1, 5, &retry), 0);
    }
    T_TRUE(hd_iplimit_entries(t) <= HD_IPLIMIT_MAX_IDLE + 1000);
    for (uint32_t i = 0; i < 1000; i++)
        hd_iplimit_release(t, &held[i], 1000, 1, 5);
    /* much later, everything has refilled: a few calls sweep, the rest goes with the table */
    hd_iplimit_free(t);
}

int main(void)
{
    T_RUN(test_connections);
    T_RUN(test_rate);
    T_RUN(test_ipv6_prefix);
    T_RUN(test_flood_bounded);
    return 0;
}
