/* SPDX-License-Identifier: MIT */
/*
 * test_keys.c: unit tests of hd_tp_key_match (src/transport/common.c), the comparison behind
 * publish_key and admin_key: every key of a list matches, nothing else does (prefixes,
 * extensions, other case, tokens with NUL bytes, tokens longer than any key, NULL), whatever the
 * position of the key in the list and whatever lengths.
 */
#include "herald/transport.h"

#include "test.h"

static hd_strlist_t list_of(char **v, size_t n)
{
    return (hd_strlist_t){v, n};
}

static int match(const hd_strlist_t *l, const char *token)
{
    return hd_tp_key_match(l, token, token ? strlen(token) : 0);
}

static void test_match(void)
{
    char k0[] = "old-key", k1[] = "new-key-longer", k2[] = "x";
    char *v[] = {k0, k1, k2};
    hd_strlist_t l = list_of(v, 3), none = list_of(NULL, 0), one = list_of(v + 1, 1);

    T_EQ_INT(match(&l, "old-key"), 0);
    T_EQ_INT(match(&l, "new-key-longer"), 0);
    T_EQ_INT(match(&l, "x"), 0);
    T_EQ_INT(match(&one, "new-key-longer"), 0);
    T_EQ_INT(match(&one, "old-key"), -1);
    static const char *const bad[] = {"",         "old-ke",
                                      "old-key ", "Old-key",
                                      "old-keyx", "new-key-longe",
                                      "xx",       "new-key-longerx",
                                      "X",        "old-keynew-key-longer"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(bad); i++) {
        if (match(&l, bad[i]) != -1)
            T_FAIL("\"%s\" matched", bad[i]);
        test_checks_++;
    }
    T_EQ_INT(match(&l, NULL), -1);
    T_EQ_INT(match(&none, "old-key"), -1);
    T_EQ_INT(match(&none, ""), -1);
    T_EQ_INT(match(&none, NULL), -1);
    /* A token with the key's bytes and a NUL after: the length counts, not the C string. */
    T_EQ_INT(hd_tp_key_match(&l, "x\0", 2), -1);
    T_EQ_INT(hd_tp_key_match(&l, "old-key\0\0", 9), -1);
    T_EQ_INT(hd_tp_key_match(&l, "old-key\0\0", 7), 0);
}

static void test_lengths(void)
{
    char longest[HD_KEY_MAX + 1], token[HD_KEY_MAX + 64];
    char *v[] = {longest};
    hd_strlist_t l = list_of(v, 1);

    memset(longest, 'k', HD_KEY_MAX);
    longest[HD_KEY_MAX] = '\0';
    memset(token, 'k', sizeof(token));
    T_EQ_INT(hd_tp_key_match(&l, token, HD_KEY_MAX), 0);
    T_EQ_INT(hd_tp_key_match(&l, token, HD_KEY_MAX - 1), -1);
    /* Longer than any key: compared on its first HD_KEY_MAX bytes, refused by its length. */
    T_EQ_INT(hd_tp_key_match(&l, token, HD_KEY_MAX + 1), -1);
    T_EQ_INT(hd_tp_key_match(&l, token, sizeof(token)), -1);
    longest[HD_KEY_MAX - 1] = 'j';
    T_EQ_INT(hd_tp_key_match(&l, token, HD_KEY_MAX), -1);
}

int main(void)
{
    T_RUN(test_match);
    T_RUN(test_lengths);
    T_DONE();
}
