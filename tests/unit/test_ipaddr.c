/* SPDX-License-Identifier: MIT */
/*
 * test_ipaddr.c: client addresses (src/core/ipaddr.c): parsing and formatting, ranges, and the
 * X-Forwarded-For / Forwarded walk behind trusted proxies, including spoofed and garbled chains.
 */
#include "herald/common.h"
#include "herald/ipaddr.h"

#include "test.h"

static hd_ip_t ip_of(const char *s)
{
    hd_ip_t ip;
    if (hd_ip_parse(&ip, s, strlen(s), 1) != 0)
        T_FAIL("cannot parse \"%s\"", s);
    return ip;
}

static const char *text_of(const hd_ip_t *ip)
{
    static char text[HD_IP_TEXT_MAX];
    hd_ip_format_port(ip, text, sizeof(text));
    return text;
}

static void test_parse_format(void)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"192.0.2.1", "192.0.2.1"},
        {"192.0.2.1:443", "192.0.2.1:443"},
        {"2001:db8::1", "2001:db8::1"},
        {"[2001:db8::1]", "2001:db8::1"},
        {"[2001:db8::1]:8080", "[2001:db8::1]:8080"},
        {"::ffff:10.0.0.1", "10.0.0.1"},
        {"[::ffff:10.0.0.1]:5", "10.0.0.1:5"},
        {"::1", "::1"},
    };
    for (size_t i = 0; i < HD_ARRAY_SIZE(ok); i++) {
        hd_ip_t ip = ip_of(ok[i].in);
        T_EQ_STR(text_of(&ip), ok[i].out);
    }
    static const char *const bad[] = {"",
                                      "host.example",
                                      "1.2.3",
                                      "1.2.3.4.5",
                                      "256.1.1.1",
                                      "1.2.3.4:",
                                      "1.2.3.4:65536",
                                      "1.2.3.4:x",
                                      "[1.2.3.4]:80",
                                      "[2001:db8::1",
                                      "[2001:db8::1]x",
                                      "fe80::1%eth0",
                                      "unknown",
                                      "_hidden"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        hd_ip_t ip;
        if (hd_ip_parse(&ip, bad[i], strlen(bad[i]), 1) == 0)
            T_FAIL("\"%s\" parsed as %s", bad[i], text_of(&ip));
        T_EQ_INT(ip.family, HD_IP_NONE);
    }
    hd_ip_t a = ip_of("127.0.0.2"), b = ip_of("::1"), c = ip_of("128.0.0.1"),
            d = ip_of("::ffff:127.0.0.1");
    T_TRUE(hd_ip_is_loopback(&a));
    T_TRUE(hd_ip_is_loopback(&b));
    T_TRUE(!hd_ip_is_loopback(&c));
    T_TRUE(hd_ip_is_loopback(&d));
}

static void test_parse_port(void)
{
    static const struct {
        const char *in;
        int rc;
        unsigned port;
    } cases[] = {
        {"0", 0, 0},    {"1", 0, 1},      {"443", 0, 443},  {"65535", 0, 65535}, {"00080", 0, 80},
        {"", -1, 0},    {"65536", -1, 0}, {"99999", -1, 0}, {"123456", -1, 0},   {"-1", -1, 0},
        {"+80", -1, 0}, {"8 0", -1, 0},   {"80a", -1, 0},   {"0x50", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t port = 7;
        int rc = hd_ip_parse_port(cases[i].in, strlen(cases[i].in), &port);
        if (rc != cases[i].rc)
            T_FAIL("\"%s\": got %d, want %d", cases[i].in, rc, cases[i].rc);
        if (port != (rc == 0 ? cases[i].port : 7u))
            T_FAIL("\"%s\": port %u, want %u", cases[i].in, port, rc == 0 ? cases[i].port : 7u);
    }
    /* The length bounds it: a longer string's first digits are not read past len. */
    uint16_t port = 0;
    T_EQ_INT(hd_ip_parse_port("80801", 2, &port), 0);
    T_EQ_INT(port, 80);
}

static void test_cidr(void)
{
    hd_cidr_t c;
    char why[256];
    T_EQ_INT(hd_cidr_parse(&c, "10.0.0.0/8", why, sizeof(why)), 0);
    hd_ip_t in = ip_of("10.200.3.4"), out = ip_of("11.0.0.1"), v6 = ip_of("::ffff:10.1.1.1");
    T_TRUE(hd_cidr_match(&c, &in));
    T_TRUE(!hd_cidr_match(&c, &out));
    T_TRUE(hd_cidr_match(&c, &v6));
    T_EQ_INT(hd_cidr_parse(&c, "2001:db8::/32", why, sizeof(why)), 0);
    hd_ip_t a = ip_of("2001:db8:ffff::1"), b = ip_of("2001:db9::1");
    T_TRUE(hd_cidr_match(&c, &a));
    T_TRUE(!hd_cidr_match(&c, &b));
    T_TRUE(!hd_cidr_match(&c, &in));
    T_EQ_INT(hd_cidr_parse(&c, "192.0.2.7", why, sizeof(why)), 0);
    T_EQ_INT(c.bits, 32);
    T_EQ_INT(hd_cidr_parse(&c, "10.1.0.0/15", why, sizeof(why)), -1);
    T_CONTAINS(why, "bits set past");
    T_EQ_INT(hd_cidr_parse(&c, "10.0.0.0/33", why, sizeof(why)), -1);
    T_EQ_INT(hd_cidr_parse(&c, "10.0.0.0/", why, sizeof(why)), -1);
    T_EQ_INT(hd_cidr_parse(&c, "example.com/8", why, sizeof(why)), -1);
    T_CONTAINS(why, "not an IPv4 or IPv6");
    T_EQ_INT(hd_cidr_parse(&c, "0.0.0.0/0", why, sizeof(why)), 0);
    T_TRUE(hd_cidr_match(&c, &out));
    T_EQ_INT(hd_cidr_parse(&c, "::ffff:10.0.0.0/104", why, sizeof(why)), 0);
    T_EQ_INT(c.bits, 8);
    T_TRUE(hd_cidr_match(&c, &in));
}

/* The client for peer and header values under trusted ranges. */
static const char *client(const char *peer, const char *trusted_list, const char *const *values,
                          size_t n, int is_forwarded)
{
    hd_cidr_t v[8];
    hd_cidr_list_t l = {v, 0};
    char why[256], buf[256];
    snprintf(buf, sizeof(buf), "%s", trusted_list);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        if (hd_cidr_parse(&v[l.n++], tok, why, sizeof(why)) != 0)
            T_FAIL("%s", why);
    }
    size_t lens[8];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(values[i]);
    hd_ip_t p = ip_of(peer), out;
    hd_ip_forwarded_client(&p, &l, values, lens, n, is_forwarded, &out);
    return text_of(&out);
}

static void test_forwarded_for(void)
{
    const char *one[] = {"203.0.113.9"};
    /* an untrusted peer's header is ignored: a spoof */
    T_EQ_STR(client("198.51.100.1:999", "", one, 1, 0), "198.51.100.1:999");
    T_EQ_STR(client("198.51.100.1:999", "10.0.0.0/8", one, 1, 0), "198.51.100.1:999");
    /* a trusted peer's header is believed */
    T_EQ_STR(client("10.0.0.5:999", "10.0.0.0/8", one, 1, 0), "203.0.113.9");
    /* the right-most untrusted address wins: what the client wrote on the left is ignored */
    const char *chain[] = {"1.1.1.1, 203.0.113.9, 10.0.0.7"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", chain, 1, 0), "203.0.113.9");
    /* several lines make one list, the last line nearest */
    const char *lines[] = {"1.1.1.1", "203.0.113.9,10.0.0.8", "10.0.0.7"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", lines, 3, 0), "203.0.113.9");
    /* every address trusted: the left-most */
    const char *all[] = {"10.0.0.1, 10.0.0.2"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", all, 1, 0), "10.0.0.1");
    /* garbage stops the walk at the last address found */
    const char *garbled[] = {"203.0.113.9, unknown, 10.0.0.2"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", garbled, 1, 0), "10.0.0.2");
    const char *garbage[] = {"not-an-ip"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", garbage, 1, 0), "10.0.0.5:1");
    /* ports, IPv6, spaces, empty entries */
    const char *mixed[] = {" [2001:db8::9]:4711 ,, 10.0.0.3:80 "};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", mixed, 1, 0), "[2001:db8::9]:4711");
    const char *v6[] = {"2001:db8::9"};
    T_EQ_STR(client("[::1]:7", "::1", v6, 1, 0), "2001:db8::9");
    /* no header at all */
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", NULL, 0, 0), "10.0.0.5:1");
    /* Forwarded (RFC 7239) */
    const char *fwd[] = {
        "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\""};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", fwd, 1, 1), "[2001:db8:cafe::17]:4711");
    const char *fwd2[] = {"for=192.0.2.60, for=10.0.0.9;proto=https"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", fwd2, 1, 1), "192.0.2.60");
    const char *obf[] = {"for=192.0.2.60, for=_hidden"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", obf, 1, 1), "10.0.0.5:1");
    const char *nofor[] = {"proto=https;by=10.0.0.1"};
    T_EQ_STR(client("10.0.0.5:1", "10.0.0.0/8", nofor, 1, 1), "10.0.0.5:1");
}

int main(void)
{
    T_RUN(test_parse_format);
    T_RUN(test_parse_port);
    T_RUN(test_cidr);
    T_RUN(test_forwarded_for);
    return 0;
}
