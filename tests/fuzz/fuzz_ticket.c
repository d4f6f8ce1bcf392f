/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ticket.c: libFuzzer harness for the body of POST /auth/ticket (hd_ticket_request_parse,
 * src/auth/ticket.c) and the shape check of a ticket (hd_ticket_valid). The seed corpus holds
 * good and bad requests (every member, both channels shapes, ttl forms, an info object).
 *
 * Input: the body as is, parsed with a default ttl of 30 s and a maximum of 300 s. Checked on
 * every input:
 *   - the parser accepts exactly when it returns 0: then the claims are a JSON object text of
 *     claims_len bytes (at most HD_TICKET_MAX_CLAIMS) that hd_identity_from_json turns into an
 *     identity without exp, and ttl is in (0, 300 s]; otherwise nothing is left allocated and
 *     the reason is one printable line;
 *   - parsing the claims again as a request gives the same claims (the stored form is stable);
 *   - hd_ticket_valid on the input says 1 exactly for 32 base64url characters;
 *   - everything is freed (ASan's leak check).
 */
#include "herald/auth.h"
#include "herald/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEF_TTL 30000
#define MAX_TTL 300000

static int is_b64url(const uint8_t *s, size_t n)
{
    if (n != HD_TICKET_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_ticket_request_t tr;
    char why[256];
    const char *body = (const char *)data;

    CHECK(hd_ticket_valid(body, size) == is_b64url(data, size));
    memset(why, 0, sizeof(why));
    if (hd_ticket_request_parse(body, size, DEF_TTL, MAX_TTL, &tr, why, sizeof(why)) < 0) {
        CHECK(tr.claims == NULL && tr.claims_len == 0 && tr.ttl_ms == 0);
        size_t n = strlen(why);
        CHECK(n > 0 && n < sizeof(why));
        for (size_t i = 0; i < n; i++)
            CHECK(why[i] != '\n' && why[i] != '\r');
        return 0;
    }
    CHECK(tr.claims != NULL && strlen(tr.claims) == tr.claims_len);
    CHECK(tr.claims_len <= HD_TICKET_MAX_CLAIMS && tr.claims[0] == '{');
    CHECK(tr.ttl_ms > 0 && tr.ttl_ms <= MAX_TTL);
    hd_identity_t *id = NULL;
    CHECK(hd_identity_from_json(&id, tr.claims, tr.claims_len, why, sizeof(why)) == 0);
    CHECK(hd_identity_exp(id) == 0);
    hd_identity_unref(id);
    hd_ticket_request_t again;
    CHECK(hd_ticket_request_parse(tr.claims, tr.claims_len, DEF_TTL, MAX_TTL, &again, why,
                                  sizeof(why)) == 0);
    CHECK(again.claims_len == tr.claims_len && memcmp(again.claims, tr.claims, tr.claims_len) == 0);
    CHECK(again.ttl_ms == DEF_TTL);
    hd_ticket_request_dispose(&again);
    hd_ticket_request_dispose(&tr);
    return 0;
}
