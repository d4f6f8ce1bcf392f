/* SPDX-License-Identifier: MIT */
/*
 * conf_internal.h: what the configuration loader's files share, private to src/conf.
 *
 *   directives.c   the one table of directives (name, type, field, default, range, reloadable,
 *                  description) and the checks some rows name
 *   values.c       the value types: each one's setter, disposer and comparison (numbers, sizes,
 *                  durations, booleans, strings, words, listen addresses, lists of words, channel
 *                  rules, address ranges) and the table of every type's operations
 *   hook_values.c  the hooks' value types (webhook, authorize_hook, notify_hook), which
 *                  webhook_def.c and hook_def.c parse
 *   errors.c       the error messages, naming file, line and directive
 *   conf.c         lines and files: the tokenizer, the -o override rules, loading a snapshot,
 *                  cross-directive checks, references, restart-needed and the reference print
 *
 * Calls run conf.c -> values.c -> hook_values.c, conf.c -> directives.c, and conf.c, values.c
 * and hook_values.c -> errors.c, which calls none of them; values.c and directives.c know only
 * the types below.
 */
#ifndef HERALD_CONF_INTERNAL_H
#define HERALD_CONF_INTERNAL_H

#include "herald/common.h"
#include "herald/conf.h"

#include <stddef.h>
#include <string.h>

typedef enum {
    T_UINT,
    T_SIZE,
    T_DURATION,
    T_BOOL,
    T_STRING,
    T_ENUM,
    T_LISTEN,
    T_RULE, /* channel_rule: hd_auth_rule_parse */
    T_LIST,
    T_CIDRS,
    T_WEBHOOK, /* webhook: hd_webhook_def_parse */
    T_HOOK,    /* authorize_hook: hd_hook_def_parse */
    T_NOTIFY,  /* notify_hook: hd_notify_def_parse */
    T_NTYPES
} type_t;

/* The most values one line may give a directive (a list is repeated for more). */
#define MAX_VALUES 16

enum {
    F_RELOAD = 1 << 0, /* SIGHUP applies it live */
    F_MULTI = 1 << 1,  /* repeatable: each line adds a value */
};
#define RELOAD  F_RELOAD
#define RESTART 0

typedef struct {
    const char *name;
    int value;
} choice_t;

typedef struct directive_s {
    const char *name;
    type_t type;
    size_t offset; /* into hd_conf_t */
    size_t size;   /* of that field */
    const char *def;
    const char *min, *max; /* written as in the file: "1", "8k", "10ms" */
    unsigned flags;
    const char *desc;
    /* optional, by type */
    const choice_t *choices; /* T_ENUM: accepted words */
    const char *none;        /* T_STRING, T_LIST: "|"-separated words meaning "not set" ("" too) */
    unsigned (*auto_value)(void); /* T_UINT: accepts "auto", resolved by this function */
    /* T_STRING, T_LIST (each word): 0, or -1 and why */
    int (*check)(const char *value, char *why, size_t whylen);
} directive_t;

/* One row: D(name, type, field, default, min, max, flags, description[, .optional = ...]) */
#define D(name_, type_, field_, def_, min_, max_, flags_, desc_, ...)                              \
    {                                                                                              \
        name_, type_, offsetof(hd_conf_t, field_), sizeof(((hd_conf_t *)0)->field_), def_, min_,   \
            max_, flags_, .desc = desc_, __VA_ARGS__                                               \
    }

/*
 * The state of one load. An origin says where a setting came from: a positive file line
 * number, 0 for the table's default, or -(i + 1) for overrides[i].
 */
typedef struct {
    hd_conf_t *conf;
    const char *name; /* file name used in messages */
    const char *const *overrides;
    int origin;         /* of the line being applied */
    int *set_at;        /* per directive (hd_conf_directives order): origin of its last setting */
    int *listen_origin; /* origin of each conf->listens[i] */
    char *err;
    size_t errlen;
} loader_t;

typedef struct {
    const char *syntax;     /* for messages: "N", "SIZE", ... */
    int min_args, max_args; /* values after the directive name */
    int (*set)(loader_t *ld, const directive_t *d, int argc, const char *const *argv);
    void (*dispose)(hd_conf_t *c, const directive_t *d);
    int (*equal)(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d);
} type_ops_t;

/* The table (directives.c), in the order of loader_t.set_at. */
extern const directive_t hd_conf_directives[];
extern const size_t hd_conf_n_directives;

/* The operations of each value type (values.c). */
extern const type_ops_t hd_conf_type_ops[T_NTYPES];

/* Two snapshots' arrays of nx and ny items of size bytes: the same count, the same bytes (the
 * comparison of the types whose values are arrays of plain structs). */
static inline int hd_conf_same_items(const void *x, size_t nx, const void *y, size_t ny,
                                     size_t size)
{
    return nx == ny && (nx == 0 || memcmp(x, y, nx * size) == 0);
}

/* The hooks' types' operations (hook_values.c), rows of hd_conf_type_ops. */
int hd_conf_set_webhook(loader_t *ld, const directive_t *d, int argc, const char *const *argv);
void hd_conf_dispose_webhook(hd_conf_t *c, const directive_t *d);
int hd_conf_equal_webhook(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d);
int hd_conf_set_hook(loader_t *ld, const directive_t *d, int argc, const char *const *argv);
void hd_conf_dispose_hook(hd_conf_t *c, const directive_t *d);
int hd_conf_equal_hook(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d);
int hd_conf_set_notify(loader_t *ld, const directive_t *d, int argc, const char *const *argv);
void hd_conf_dispose_notify(hd_conf_t *c, const directive_t *d);
int hd_conf_equal_notify(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d);

/*
 * (errors.c) Writes "ORIGIN: DIRECTIVE: MESSAGE" (DIRECTIVE left out when NULL) into ld->err, as
 * one printable line, and returns HD_ECONF, so that every error path is `return hd_conf_fail(...)`.
 */
int hd_conf_fail(loader_t *ld, int origin, const char *directive, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends printf output at *pos of buf[len], never past its end (errors.c). */
void hd_conf_append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends where a setting came from at *pos of buf[len]: "FILE:LINE", "-o 'TEXT'" or "FILE" (a
 * default), as hd_conf_fail begins its messages (errors.c). */
void hd_conf_append_origin(const loader_t *ld, char *buf, size_t len, size_t *pos, int origin);

#endif
