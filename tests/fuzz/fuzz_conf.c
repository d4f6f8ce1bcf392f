/* SPDX-License-Identifier: MIT */
/*
 * fuzz_conf.c: libFuzzer harness for the configuration loader (tokenizer, the generic setter of
 * each value type, -o overrides, the checks across directives, the redis URL syntax).
 *
 * Input: the bytes up to the first NUL are the file's text; each NUL-terminated piece after it
 * (at most MAX_OVERRIDES) is one -o override. Every string is an exact-size heap copy, so a read
 * past its end is caught. Checked on every input:
 *   - a load succeeds with a snapshot or fails with HD_ECONF, a NULL snapshot and a message of
 *     one printable line (no control byte) that fits the buffer; a buffer of a few bytes is
 *     never overrun;
 *   - loading the same input again gives the same answer: the same message, or a snapshot
 *     hd_conf_restart_needed finds equal to the first;
 *   - reference counting: one extra ref and unref leave the snapshot usable.
 */
#include "herald/common.h"
#include "herald/conf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OVERRIDES 8

static char *copy_str(const uint8_t *p, size_t len)
{
    char *s = malloc(len + 1);
    CHECK(s != NULL);
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

/* Loads, and checks the answer's shape. Returns the result code; *out is the snapshot or NULL. */
static int load(const char *text, char **ov, size_t n_ov, char *err, size_t errlen, hd_conf_t **out)
{
    *out = (hd_conf_t *)(uintptr_t)1; /* must be overwritten either way */
    int rc =
        hd_conf_load_string(out, "fuzz.conf", text, (const char *const *)ov, n_ov, err, errlen);
    if (rc == 0) {
        CHECK(*out != NULL && *out != (hd_conf_t *)(uintptr_t)1);
    } else {
        CHECK(rc == HD_ECONF);
        CHECK(*out == NULL);
        if (errlen > 0) {
            size_t n = strnlen(err, errlen);
            CHECK(n < errlen);
            CHECK(n > 0);
            for (size_t i = 0; i < n; i++)
                CHECK((unsigned char)err[i] >= 0x20 && err[i] != 0x7f);
        }
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t text_len = nul ? (size_t)(nul - data) : size;
    char *text = copy_str(data, text_len);
    char *ov[MAX_OVERRIDES];
    size_t n_ov = 0;
    if (nul) {
        const uint8_t *p = nul + 1, *end = data + size;
        while (p < end && n_ov < MAX_OVERRIDES) {
            const uint8_t *q = memchr(p, '\0', (size_t)(end - p));
            size_t len = q ? (size_t)(q - p) : (size_t)(end - p);
            ov[n_ov++] = copy_str(p, len);
            p += len + 1;
        }
    }

    /* Error buffers on the heap at their exact size, so an overrun is caught. */
    char *err = malloc(512), *err2 = malloc(512), *tiny = malloc(5);
    CHECK(err && err2 && tiny);
    hd_conf_t *c = NULL, *c2 = NULL, *c3 = NULL;
    int rc = load(text, ov, n_ov, err, 512, &c);
    int rc2 = load(text, ov, n_ov, err2, 512, &c2);
    CHECK(rc == rc2);
    if (rc == 0) {
        char changed[1024];
        CHECK(hd_conf_restart_needed(c, c2, changed, sizeof(changed)) == 0);
        CHECK(changed[0] == '\0');
        CHECK(hd_conf_ref(c) == c);
        hd_conf_unref(c);
        CHECK(hd_conf_restart_needed(c2, c, NULL, 0) == 0);
    } else {
        CHECK(strcmp(err, err2) == 0);
    }
    CHECK(load(text, ov, n_ov, tiny, 5, &c3) == rc);
    if (rc != 0)
        CHECK(strncmp(tiny, err, 4) == 0);
    hd_conf_unref(c3);
    CHECK(load(text, ov, n_ov, NULL, 0, &c3) == rc);

    hd_conf_unref(c);
    hd_conf_unref(c2);
    hd_conf_unref(c3);
    free(err);
    free(err2);
    free(tiny);
    for (size_t i = 0; i < n_ov; i++)
        free(ov[i]);
    free(text);
    return 0;
}
