/* SPDX-License-Identifier: MIT */
/*
 * report.c: how results leave herald-bench. A scenario adds rows (key, label, value, unit) and
 * warnings to a report; rep_finish prints either an aligned table for people or one JSON object
 * for scripts (keys are the row keys; latencies in microseconds), and turns failures (lost
 * messages, connect errors) into exit code 1. Also the live progress line, drawn on stderr only
 * when it is a terminal.
 */
#include "bench.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { R_SECTION, R_U64, R_F, R_STR, R_CDF };

typedef struct row_s {
    int type;
    char key[48];
    char label[64];
    char unit[24];
    int decimals;
    uint64_t u;
    double f;
    char *s; /* R_STR value, R_CDF JSON array */
} row_t;

struct report_s {
    const opts_t *o;
    char title[256];
    row_t *rows;
    size_t n, cap;
    char **warnings;
    size_t n_warn;
    int failed;
};

report_t *rep_new(const opts_t *o, const char *title)
{
    report_t *r = calloc(1, sizeof(*r));
    r->o = o;
    snprintf(r->title, sizeof(r->title), "%s", title);
    return r;
}

static row_t *add(report_t *r, int type, const char *key, const char *label, const char *unit)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 32;
        r->rows = realloc(r->rows, r->cap * sizeof(*r->rows));
    }
    row_t *w = &r->rows[r->n++];
    memset(w, 0, sizeof(*w));
    w->type = type;
    snprintf(w->key, sizeof(w->key), "%s", key ? key : "");
    snprintf(w->label, sizeof(w->label), "%s", label ? label : "");
    snprintf(w->unit, sizeof(w->unit), "%s", unit ? unit : "");
    return w;
}

void rep_section(report_t *r, const char *label)
{
    add(r, R_SECTION, NULL, label, NULL);
}

void rep_u64(report_t *r, const char *key, const char *label, uint64_t v, const char *unit)
{
    add(r, R_U64, key, label, unit)->u = v;
}

void rep_f(report_t *r, const char *key, const char *label, double v, int decimals,
           const char *unit)
{
    row_t *w = add(r, R_F, key, label, unit);
    w->f = v;
    w->decimals = decimals;
}

void rep_str(report_t *r, const char *key, const char *label, const char *v)
{
    add(r, R_STR, key, label, NULL)->s = strdup(v);
}

void rep_latency(report_t *r, const char *prefix, const char *label, const hist_t *h)
{
    static const struct {
        const char *name;
        double p;
    } ps[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99_9", 99.9}, {"max", 100}};
    char key[48], lab[64];
    snprintf(key, sizeof(key), "%s_count", prefix);
    snprintf(lab, sizeof(lab), "%s samples", label);
    rep_u64(r, key, lab, h->count, NULL);
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        snprintf(key, sizeof(key), "%s_%s_us", prefix, ps[i].name);
        snprintf(lab, sizeof(lab), "%s %s", label, ps[i].name);
        for (char *c = lab; *c; c++)
            if (*c == '_')
                *c = '.';
        rep_f(r, key, lab, (double)hist_percentile(h, ps[i].p) / 1000.0, 1, "us");
    }
}

typedef struct cdf_acc_s {
    char *s;
    size_t len, cap;
    double last_frac;
} cdf_acc_t;

static void cdf_point(uint64_t v, double frac, void *arg)
{
    cdf_acc_t *a = arg;
    /* thin the curve: a point per 0.1% of the distribution, plus the tail */
    if (frac - a->last_frac < 0.001 && frac < 0.999)
        return;
    a->last_frac = frac;
    if (a->len + 64 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->s = realloc(a->s, a->cap);
    }
    a->len += (size_t)snprintf(a->s + a->len, a->cap - a->len, "%s[%.1f,%.6f]", a->len ? "," : "",
                               (double)v / 1000.0, frac);
}

void rep_cdf(report_t *r, const char *key, const hist_t *h)
{
    cdf_acc_t a = {0};
    a.last_frac = -1;
    hist_foreach(h, cdf_point, &a);
    row_t *w = add(r, R_CDF, key, NULL, NULL);
    w->s = a.s ? a.s : strdup("");
}

void rep_warn(report_t *r, int is_failure, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r->warnings = realloc(r->warnings, (r->n_warn + 1) * sizeof(char *));
    r->warnings[r->n_warn++] = strdup(buf);
    if (is_failure)
        r->failed = 1;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void print_json(report_t *r)
{
    FILE *f = stdout;
    fprintf(f, "{\"scenario\":");
    json_string(f, r->o->scenario);
    fprintf(f, ",\"target\":\"%s\",\"title\":", tg_names[r->o->tg.kind]);
    json_string(f, r->title);
    for (size_t i = 0; i < r->n; i++) {
        row_t *w = &r->rows[i];
        if (w->type == R_SECTION)
            continue;
        fprintf(f, ",\"%s\":", w->key);
        switch (w->type) {
        case R_U64:
            fprintf(f, "%llu", (unsigned long long)w->u);
            break;
        case R_F:
            if (w->f != w->f)
                fprintf(f, "null");
            else
                fprintf(f, "%.*f", w->decimals + 2, w->f);
            break;
        case R_STR:
            json_string(f, w->s);
            break;
        case R_CDF:
            fprintf(f, "[%s]", w->s);
            break;
        }
    }
    fprintf(f, ",\"warnings\":[");
    for (size_t i = 0; i < r->n_warn; i++) {
        if (i)
            fputc(',', f);
        json_string(f, r->warnings[i]);
    }
    fprintf(f, "],\"ok\":%s}\n", r->failed ? "false" : "true");
}

static void print_table(report_t *r)
{
    FILE *f = stdout;
    fprintf(f, "\n%s\n", r->title);
    for (size_t i = 0; i < r->n; i++) {
        row_t *w = &r->rows[i];
        char val[96];
        switch (w->type) {
        case R_SECTION:
            fprintf(f, "  %s\n", w->label);
            continue;
        case R_CDF:
            continue;
        case R_U64:
            snprintf(val, sizeof(val), "%llu", (unsigned long long)w->u);
            break;
        case R_F:
            if (w->f != w->f)
                snprintf(val, sizeof(val), "n/a");
            else
                snprintf(val, sizeof(val), "%.*f", w->decimals, w->f);
            break;
        default:
            snprintf(val, sizeof(val), "%s", w->s);
            break;
        }
        fprintf(f, "    %-36s %14s %s\n", w->label, val, w->f != w->f ? "" : w->unit);
    }
    if (r->n_warn) {
        fprintf(f, "\n");
        for (size_t i = 0; i < r->n_warn; i++)
            fprintf(f, "  !!! %s\n", r->warnings[i]);
    }
    fprintf(f, "\n");
}

int rep_finish(report_t *r)
{
    if (r->o->json) {
        print_json(r);
        /* people running with --json on a terminal still want to see what went wrong */
        for (size_t i = 0; i < r->n_warn; i++)
            fprintf(stderr, "herald-bench: !!! %s\n", r->warnings[i]);
    } else {
        print_table(r);
    }
    fflush(stdout);
    int rc = r->failed ? 1 : 0;
    for (size_t i = 0; i < r->n; i++)
        free(r->rows[i].s);
    for (size_t i = 0; i < r->n_warn; i++)
        free(r->warnings[i]);
    free(r->warnings);
    free(r->rows);
    free(r);
    return rc;
}

void progress(const opts_t *o, const char *fmt, ...)
{
    if (!o->is_tty || o->quiet)
        return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r\033[K%s", buf);
    fflush(stderr);
}

void progress_end(const opts_t *o)
{
    if (!o->is_tty || o->quiet)
        return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
