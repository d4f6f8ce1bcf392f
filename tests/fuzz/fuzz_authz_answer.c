/* SPDX-License-Identifier: MIT */
/*
 * fuzz_authz_answer.c: libFuzzer harness for the authorize hook's answer (src/hooks/
 * authz_answer.c): what an application's backend says, read into a verdict. The first two bytes
 * choose the status (100..999); the rest is the body, in an exact-size heap copy (ASan catches
 * an over-read). Checked on every input:
 *   - the verdict is ALLOW, DENY or ERROR; DENY has status 401 or 403;
 *   - the reason is one NUL-terminated printable line within its buffer;
 *   - only ALLOW carries an identity, and only when the body names one of its members;
 *   - a status other than 2xx, 401 and 403 is never ALLOW.
 */
#include "hooks/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = 100 + (int)(((unsigned)data[0] << 8 | data[1]) % 900);
    data += 2, size -= 2;
    char *body = malloc(size ? size : 1);
    memcpy(body, data, size);
    hk_verdict_t v;
    hk_authz_answer(status, size ? body : NULL, size, &v);
    CHECK(v.kind == HD_HOOKS_ALLOW || v.kind == HD_HOOKS_DENY || v.kind == HD_HOOKS_ERROR);
    CHECK(v.kind != HD_HOOKS_DENY || v.status == 401 || v.status == 403);
    CHECK(v.kind == HD_HOOKS_ALLOW || v.id == NULL);
    CHECK(v.kind != HD_HOOKS_ALLOW || (status >= 200 && status <= 299));
    size_t n = strnlen(v.reason, sizeof(v.reason));
    CHECK(n < sizeof(v.reason));
    for (size_t i = 0; i < n; i++)
        CHECK(v.reason[i] >= 0x20 && v.reason[i] < 0x7f);
    if (v.id)
        CHECK(memchr(body, '"', size) != NULL);
    hd_identity_unref(v.id);
    free(body);
    return 0;
}
