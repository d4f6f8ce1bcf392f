/* SPDX-License-Identifier: MIT */
/*
 * test_tickets.c: single-use tickets' pure parts (src/auth/ticket.c: the POST /auth/ticket body,
 * a ticket's shape and key) and the embedded broker's store (src/broker/tickets.c: once, expiry,
 * the count and byte bounds).
 */
#include "test.h"

#include "herald/auth.h"
#include "herald/common.h"

#include "broker/tickets.h"

#define DEF 30000
#define MAX 300000

static void parse_ok(const char *body, const char *claims, uint64_t ttl_ms)
{
    hd_ticket_request_t tr;
    char why[200] = "";
    int rc = hd_ticket_request_parse(body, strlen(body), DEF, MAX, &tr, why, sizeof(why));
    if (rc != 0)
        T_FAIL("%s: refused: %s", body, why);
    T_EQ_STR(tr.claims, claims);
    T_EQ_INT(tr.claims_len, strlen(claims));
    T_EQ_INT(tr.ttl_ms, ttl_ms);
    hd_ticket_request_dispose(&tr);
    T_TRUE(tr.claims == NULL);
}

static void parse_bad(const char *body, const char *reason)
{
    hd_ticket_request_t tr;
    char why[200] = "";
    T_EQ_INT(hd_ticket_request_parse(body, strlen(body), DEF, MAX, &tr, why, sizeof(why)), -1);
    T_TRUE(tr.claims == NULL && tr.ttl_ms == 0);
    T_CONTAINS(why, reason);
    T_TRUE(strchr(why, '\n') == NULL);
}

static void test_parse(void)
{
    parse_ok("{\"sub\":\"42\",\"channels\":{\"subscribe\":[\"a\",\"room:*\"],\"publish\":[\"a\"]},"
             "\"info\":{\"n\":\"Ann\"},\"ttl\":5}",
             "{\"sub\":\"42\",\"channels\":{\"subscribe\":[\"a\",\"room:*\"],\"publish\":[\"a\"]},"
             "\"info\":{\"n\":\"Ann\"}}",
             5000);
    parse_ok("{ \"ttl\" : 0.25 , \"sub\" : \"x\", \"jti\": \"j1\" }",
             "{\"sub\":\"x\",\"jti\":\"j1\"}", 250);
    parse_ok("{}", "{}", DEF);
    parse_ok("{\"sub\":\"1\",\"ttl\":300}", "{\"sub\":\"1\"}", MAX);
    parse_ok("{\"channels\":[\"*\"]}", "{\"channels\":[\"*\"]}", DEF);
    parse_bad("", "a JSON object is needed");
    parse_bad("nope", "body is not JSON");
    parse_bad("[]", "must be a JSON object");
    parse_bad("{\"sub\":\"1\",\"sub\":\"1\"}", "not JSON");
    parse_bad("{\"exp\":1}", "unknown member \"exp\"");
    /* found by fuzz_ticket: a member name with a newline quoted into the reason */
    parse_bad("{\"cha\\nels\":{}}", "unknown member \"cha?els\"");
    parse_bad("{\"channels\":{\"sub\":[]}}", "unknown member \"channels.sub\"");
    parse_bad("{\"ttl\":0}", "more than 0");
    parse_bad("{\"ttl\":0.0001}", "more than 0");
    parse_bad("{\"ttl\":300.5}", "above auth_ticket_max_ttl (300 s)");
    parse_bad("{\"ttl\":true}", "ttl must be a number");
    parse_bad("{\"sub\":1}", "sub must be a string");
    parse_bad("{\"info\":[]}", "info must be a JSON object");
    parse_bad("{\"channels\":[\"a b\"]}", "channel pattern");
    /* a default above the maximum is held to it */
    hd_ticket_request_t tr;
    char why[200];
    T_EQ_INT(hd_ticket_request_parse("{}", 2, 60000, 10000, &tr, why, sizeof(why)), 0);
    T_EQ_INT(tr.ttl_ms, 10000);
    hd_ticket_request_dispose(&tr);
}

static void test_new_valid_key(void)
{
    char a[HD_TICKET_LEN + 1], b[HD_TICKET_LEN + 1], ka[HD_TICKET_KEY_LEN + 1],
        kb[HD_TICKET_KEY_LEN + 1];
    T_EQ_INT(hd_ticket_new(a), 0);
    T_EQ_INT(hd_ticket_new(b), 0);
    T_EQ_INT(strlen(a), HD_TICKET_LEN);
    T_TRUE(strcmp(a, b) != 0);
    T_TRUE(hd_ticket_valid(a, strlen(a)));
    T_TRUE(!hd_ticket_valid(a, strlen(a) - 1));
    T_TRUE(!hd_ticket_valid(NULL, 0));
    char c[HD_TICKET_LEN + 1];
    memcpy(c, a, sizeof(c));
    c[5] = '=';
    T_TRUE(!hd_ticket_valid(c, HD_TICKET_LEN));
    c[5] = '+';
    T_TRUE(!hd_ticket_valid(c, HD_TICKET_LEN));
    hd_ticket_key(a, ka);
    hd_ticket_key(b, kb);
    T_EQ_INT(strlen(ka), HD_TICKET_KEY_LEN);
    T_TRUE(strcmp(ka, kb) != 0);
    T_TRUE(strstr(ka, a) == NULL);
    /* SHA-256 of 32 'A's, in base64url: known from python3 hashlib */
    char k[HD_TICKET_KEY_LEN + 1];
    hd_ticket_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", k);
    T_EQ_STR(k, "IqSAUVlMGUne7XBAhQwfD4dkU39Rkb5Wcy0WpUwdgVM");
}

static void key_of(int i, char out[HD_TICKET_KEY_LEN + 1])
{
    char t[HD_TICKET_LEN + 1];
    snprintf(t, sizeof(t), "%032d", i);
    hd_ticket_key(t, out);
}

static void test_store_once_and_expiry(void)
{
    hd_tstore_t st;
    char k1[HD_TICKET_KEY_LEN + 1], k2[HD_TICKET_KEY_LEN + 1], *data = NULL;
    size_t len = 0;
    key_of(1, k1);
    key_of(2, k2);
    hd_tstore_init(&st, 1 << 20);
    T_EQ_INT(hd_tstore_put(&st, k1, "{\"sub\":\"1\"}", 11, 1000, 10, 0), 0);
    T_EQ_INT(hd_tstore_put(&st, k1, "{}", 2, 1000, 10, 0), HD_EBADREQ);
    T_EQ_INT(hd_tstore_put(&st, k2, "{}", 2, 500, 10, 0), 0);
    T_EQ_INT(st.n, 2);
    T_EQ_INT(hd_tstore_take(&st, k1, 999, &data, &len), 0);
    T_EQ_STR(data, "{\"sub\":\"1\"}");
    T_EQ_INT(len, 11);
    free(data);
    T_EQ_INT(hd_tstore_take(&st, k1, 999, &data, &len), HD_ENOTFOUND); /* once */
    T_EQ_INT(hd_tstore_take(&st, k2, 500, &data, &len), HD_ENOTFOUND); /* expired */
    T_EQ_INT(st.n, 0);
    T_EQ_INT(st.bytes, 0);
    /* the sweep */
    for (int i = 0; i < 100; i++) {
        char k[HD_TICKET_KEY_LEN + 1];
        key_of(100 + i, k);
        T_EQ_INT(hd_tstore_put(&st, k, "{}", 2, (uint64_t)(1000 + i), 1000, 0), 0);
    }
    hd_tstore_expire(&st, 1049);
    T_EQ_INT(st.n, 50);
    hd_tstore_expire(&st, 5000);
    T_EQ_INT(st.n, 0);
    T_EQ_INT(st.bytes, 0);
    hd_tstore_dispose(&st);
}

static void test_store_bounds(void)
{
    hd_tstore_t st;
    char k[HD_TICKET_KEY_LEN + 1];
    hd_tstore_init(&st, 1 << 20);
    for (int i = 0; i < 3; i++) {
        key_of(i, k);
        T_EQ_INT(hd_tstore_put(&st, k, "{}", 2, 100, 3, 0), 0);
    }
    key_of(3, k);
    T_EQ_INT(hd_tstore_put(&st, k, "{}", 2, 100, 3, 0), HD_ETICKETS);
    /* expired ones make room (a put sweeps first) */
    T_EQ_INT(hd_tstore_put(&st, k, "{}", 2, 200, 3, 100), 0);
    T_EQ_INT(st.n, 1);
    hd_tstore_dispose(&st);
    /* bytes: 16 KiB claims in a 64 KiB store fit three times, not four */
    static char big[HD_TICKET_MAX_CLAIMS];
    memset(big, 'x', sizeof(big));
    hd_tstore_init(&st, 64 * 1024);
    int stored = 0;
    for (int i = 0; i < 10; i++) {
        key_of(i, k);
        if (hd_tstore_put(&st, k, big, sizeof(big), 100, 1000, 0) == 0)
            stored++;
    }
    T_EQ_INT(stored, 3);
    T_TRUE(st.bytes <= 64 * 1024);
    hd_tstore_dispose(&st);
}

int main(void)
{
    T_RUN(test_parse);
    T_RUN(test_new_valid_key);
    T_RUN(test_store_once_and_expiry);
    T_RUN(test_store_bounds);
    T_DONE();
}
