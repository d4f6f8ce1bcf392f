/* SPDX-License-Identifier: MIT */
/*
 * test.h: the assertions every unit test uses. Each failure prints both values and file:line,
 * then exits non-zero; a test executable that returns from main() passed.
 */
#ifndef HERALD_TEST_H
#define HERALD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks_;

#define T_FAIL(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                      \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        exit(1);                                                                                   \
    } while (0)

#define T_TRUE(cond)                                                                               \
    do {                                                                                           \
        test_checks_++;                                                                            \
        if (!(cond))                                                                               \
            T_FAIL("expected true: %s", #cond);                                                    \
    } while (0)

#define T_EQ_INT(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        test_checks_++;                                                                            \
        if (a_ != b_)                                                                              \
            T_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                      \
    } while (0)

#define T_EQ_STR(a, b)                                                                             \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        test_checks_++;                                                                            \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            T_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");  \
    } while (0)

#define T_CONTAINS(hay, needle)                                                                    \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        test_checks_++;                                                                            \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            T_FAIL("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);                      \
    } while (0)

#define T_RUN(fn)                                                                                  \
    do {                                                                                           \
        fn();                                                                                      \
        fprintf(stderr, "ok   %s\n", #fn);                                                         \
    } while (0)

#define T_DONE()                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "passed: %d checks\n", test_checks_);                                      \
        return 0;                                                                                  \
    } while (0)

#endif
