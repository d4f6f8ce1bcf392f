/* SPDX-License-Identifier: MIT */
/*
 * fuzz_check.h: CHECK(cond), the assertion of the harnesses that run no embedded node (those that
 * do use HD_EMB_CHECK, tests/support/embedded.h). A broken promise writes the harness's file and
 * line and the condition to stderr and aborts: a crash for libFuzzer, a failed corpus replay for
 * ctest. Always on, whatever NDEBUG says. Header-only.
 */
#ifndef HERALD_FUZZ_CHECK_H
#define HERALD_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
