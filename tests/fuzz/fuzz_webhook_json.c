/* SPDX-License-Identifier: MIT */
/*
 * fuzz_webhook_json.c: libFuzzer harness for a webhook registration read from JSON
 * (src/conf/webhook_json.c, hd_webhook_def_from_json): the body of POST /admin/webhooks once
 * completed, and what every node reads back from Redis. The input is the JSON, in an exact-size
 * heap copy (ASan catches an over-read). Checked on every input:
 *   - a refusal's reason is one NUL-terminated printable line within its buffer;
 *   - an endpoint read has a valid name, an http(s) URL with a host and a port, 1..16 patterns,
 *     1..4 secrets of 16..64 bytes and at least one event, as the webhook directive requires.
 */
#include "herald/webhook_def.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    static hd_webhook_def_t d;
    char why[200];
    memset(why, 'x', sizeof(why));
    if (hd_webhook_def_from_json(&d, text, size, why, sizeof(why)) < 0) {
        size_t n = strnlen(why, sizeof(why));
        CHECK(n > 0 && n < sizeof(why));
        for (size_t i = 0; i < n; i++)
            CHECK(why[i] >= 0x20 && why[i] < 0x7f);
    } else {
        size_t n = strnlen(d.name, sizeof(d.name));
        CHECK(n > 0 && n < sizeof(d.name));
        CHECK(strncmp(d.url, "http://", 7) == 0 || strncmp(d.url, "https://", 8) == 0);
        CHECK(d.host[0] != '\0' && d.port > 0 && d.target[0] == '/');
        CHECK(d.n_patterns >= 1 && d.n_patterns <= HD_WEBHOOK_MAX_PATTERNS);
        CHECK(d.n_keys >= 1 && d.n_keys <= HD_WEBHOOK_MAX_SECRETS);
        for (size_t i = 0; i < d.n_keys; i++)
            CHECK(d.key_lens[i] >= HD_WEBHOOK_KEY_MIN && d.key_lens[i] <= HD_WEBHOOK_KEY_MAX);
        CHECK(d.events != 0);
    }
    free(text);
    return 0;
}
