/* SPDX-License-Identifier: MIT */
/*
 * errors.c: the configuration loader's error messages (conf_internal.h): "ORIGIN: DIRECTIVE:
 * MESSAGE", ORIGIN the file and line, the -o override or the file (a default). Every other file of
 * src/conf calls here and nothing here calls them, so the value types of values.c and
 * hook_values.c and the loader of conf.c report the same way without calling each other.
 */
#include "conf_internal.h"

#include <stdarg.h>
#include <stdio.h>

void hd_conf_append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (buf == NULL || *pos >= len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len;
}

void hd_conf_append_origin(const loader_t *ld, char *buf, size_t len, size_t *pos, int origin)
{
    if (origin > 0)
        hd_conf_append(buf, len, pos, "%s:%d", ld->name, origin);
    else if (origin < 0)
        hd_conf_append(buf, len, pos, "-o '%s'", ld->overrides[-origin - 1]);
    else
        hd_conf_append(buf, len, pos, "%s", ld->name);
}

int hd_conf_fail(loader_t *ld, int origin, const char *directive, const char *fmt, ...)
{
    size_t pos = 0;
    va_list ap;

    if (ld->err == NULL || ld->errlen == 0)
        return HD_ECONF;
    hd_conf_append_origin(ld, ld->err, ld->errlen, &pos, origin);
    hd_conf_append(ld->err, ld->errlen, &pos, ": ");
    if (directive != NULL)
        hd_conf_append(ld->err, ld->errlen, &pos, "%s: ", directive);
    if (pos < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + pos, ld->errlen - pos, fmt, ap);
        va_end(ap);
    }
    /* One printable line whatever the input held: text echoed from a line or an override may
     * carry control bytes (an -o value with a newline, a stray CR), which would split a log
     * line or garble a terminal. */
    for (char *p = ld->err; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return HD_ECONF;
}
