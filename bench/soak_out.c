/* SPDX-License-Identifier: MIT */
/*
 * soak_out.c: the soak's time series on disk: CSV rows, JSON rows, and an SVG of herald's
 * memory and open files over time, drawn by hand like bench/compare's latency CDFs (no
 * plotting package): two panels sharing the time axis, the warm-up's end dashed, and a red
 * tick over every interval in which publishes were refused (a Redis restart).
 */
#include "soak.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void soak_csv_header(FILE *f)
{
    fputs("t_s,phase,rss_mib,fds,cpu_pct,live,slow_live,delivered,lost,dup,ooo,gaps,cuts,"
          "churned,connect_fail,server_closes,pub_ok,pub_refused,p99_push_ms,p99_poll_ms,client_"
          "open\n",
          f);
}

static const char *const phase_names[] = {"prime", "connect", "go", "drain", "final"};

void soak_csv_row(FILE *f, const soak_row_t *r)
{
    fprintf(f,
            "%.1f,%s,%.2f,%llu,%.1f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,"
            "%llu,%.2f,%.2f,%llu\n",
            r->t_s, phase_names[r->phase], r->rss_mib, (unsigned long long)r->fds, r->cpu_pct,
            (unsigned long long)r->live, (unsigned long long)r->slow_live,
            (unsigned long long)r->delivered, (unsigned long long)r->lost,
            (unsigned long long)r->dup, (unsigned long long)r->ooo, (unsigned long long)r->gaps,
            (unsigned long long)r->cuts, (unsigned long long)r->churned,
            (unsigned long long)r->connect_fail, (unsigned long long)r->server_closes,
            (unsigned long long)r->pub_ok, (unsigned long long)r->pub_err,
            isnan(r->p99_push_ms) ? 0.0 : r->p99_push_ms,
            isnan(r->p99_poll_ms) ? 0.0 : r->p99_poll_ms, (unsigned long long)r->client_open);
}

void soak_json_row(FILE *f, const soak_row_t *r, int first)
{
    fprintf(f,
            "%s{\"t_s\":%.1f,\"phase\":\"%s\",\"rss_mib\":%.2f,\"fds\":%llu,\"cpu_pct\":%.1f,"
            "\"live\":%llu,\"delivered\":%llu,\"lost\":%llu,\"dup\":%llu,\"ooo\":%llu,"
            "\"gaps\":%llu,\"cuts\":%llu,\"churned\":%llu,\"pub_ok\":%llu,\"pub_refused\":%llu,"
            "\"p99_push_ms\":%.2f,\"p99_poll_ms\":%.2f,\"client_open\":%llu}",
            first ? "" : ",", r->t_s, phase_names[r->phase], r->rss_mib, (unsigned long long)r->fds,
            r->cpu_pct, (unsigned long long)r->live, (unsigned long long)r->delivered,
            (unsigned long long)r->lost, (unsigned long long)r->dup, (unsigned long long)r->ooo,
            (unsigned long long)r->gaps, (unsigned long long)r->cuts,
            (unsigned long long)r->churned, (unsigned long long)r->pub_ok,
            (unsigned long long)r->pub_err, isnan(r->p99_push_ms) ? 0.0 : r->p99_push_ms,
            isnan(r->p99_poll_ms) ? 0.0 : r->p99_poll_ms, (unsigned long long)r->client_open);
}

/* A "nice" axis maximum (1, 2 or 5 times a power of ten) at or above v. */
static double nice_max(double v)
{
    if (v <= 0)
        return 1;
    double p = pow(10, floor(log10(v)));
    for (int i = 0; i < 3; i++) {
        double m = (double[]){1, 2, 5}[i] * p;
        if (m >= v)
            return m;
    }
    return 10 * p;
}

#define W  760
#define L  70
#define R  20
#define PH 200 /* panel height */

/* One panel at y offset top: series a (and optionally b, dashed grey) against time. */
static void panel(FILE *f, int top, const char *label, const soak_row_t *rows, size_t n,
                  double t_max, int fds, const char *color)
{
    double vmax = 0;
    for (size_t i = 0; i < n; i++) {
        double v = fds ? (double)rows[i].fds : rows[i].rss_mib;
        if (v > vmax)
            vmax = v;
        if (fds && (double)rows[i].live > vmax)
            vmax = (double)rows[i].live;
    }
    vmax = nice_max(vmax * 1.05);
    double x0 = L, xw = W - L - R;
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\">%s</text>\n", L, top - 6, label);
    for (int g = 0; g <= 4; g++) {
        double y = top + PH - PH * g / 4.0;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>\n", L, y,
                W - R, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, y + 4,
                vmax * g / 4.0);
    }
    for (int pass = 0; pass < (fds ? 2 : 1); pass++) {
        fprintf(f, "<path d=\"");
        for (size_t i = 0; i < n; i++) {
            double v = pass ? (double)rows[i].live : fds ? (double)rows[i].fds : rows[i].rss_mib;
            fprintf(f, "%s%.1f,%.1f", i ? " L" : "M", x0 + xw * rows[i].t_s / t_max,
                    top + PH - PH * v / vmax);
        }
        fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s/>\n",
                pass ? "#999" : color, pass ? "1" : "2", pass ? " stroke-dasharray=\"4 3\"" : "");
    }
    if (fds)
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#666\">dashed: subscribers "
                "connected (client side)</text>\n",
                W - R, top + PH - 6);
}

int soak_write_svg(const char *path, const char *title, const soak_row_t *rows, size_t n,
                   double warmup_s)
{
    if (n < 2)
        return -1;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int H = 60 + PH + 50 + PH + 60;
    /* the time axis: ticks every `step` (a nice tenth or so of the run), ending at the first
     * tick past the last sample */
    double step = nice_max(rows[n - 1].t_s / 10);
    int ticks = (int)ceil(rows[n - 1].t_s / step);
    double t_max = step * ticks;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n<text x=\"%d\" y=\"22\" font-size=\"14\">",
            W, H, L);
    for (const char *p = title; *p; p++)
        fputs(*p == '&' ? "&amp;" : *p == '<' ? "&lt;" : (char[]){*p, 0}, f);
    fputs("</text>\n", f);
    int top1 = 60, top2 = 60 + PH + 50;
    panel(f, top1, "herald RSS (Pss of its process tree), MiB", rows, n, t_max, 0, "#1f77b4");
    panel(f, top2, "herald open file descriptors (/proc/PID/fd)", rows, n, t_max, 1, "#ff7f0e");
    double x0 = L, xw = W - L - R;
    for (int g = 0; g <= ticks; g++) {
        double x = x0 + xw * g / ticks;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>\n", x, top1,
                x, top2 + PH);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", x,
                top2 + PH + 16, step * g);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">seconds</text>\n", (L + W - R) / 2,
            top2 + PH + 34);
    double wx = x0 + xw * warmup_s / t_max;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#2ca02c\" "
            "stroke-dasharray=\"6 4\"/>\n<text x=\"%.1f\" y=\"%d\" fill=\"#2ca02c\">warm-up "
            "ends</text>\n",
            wx, top1, wx, top2 + PH, wx + 4, top1 + 14);
    int any = 0;
    for (size_t i = 1; i < n; i++) {
        if (rows[i].pub_err == rows[i - 1].pub_err)
            continue;
        double xa = x0 + xw * rows[i - 1].t_s / t_max, xb = x0 + xw * rows[i].t_s / t_max;
        fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"6\" fill=\"#d62728\"/>\n", xa,
                top1 + PH + 8, xb - xa > 2 ? xb - xa : 2);
        any = 1;
    }
    if (any)
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" fill=\"#d62728\">red: publishes refused in the interval "
                "(Redis restarting), under the RSS panel</text>\n",
                L, top2 + PH + 52);
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

int soak_replot(const char *prefix)
{
    char path[256], title[256];
    snprintf(path, sizeof(path), "%s.json", prefix);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        fprintf(stderr, "herald-bench: --replot: %s: %s (line %d)\n", path, err.text, err.line);
        return 3;
    }
    json_t *samples = json_object_get(root, "samples");
    size_t n = json_array_size(samples), i;
    soak_row_t *rows = calloc(n ? n : 1, sizeof(*rows));
    double last_connect_t = 0;
    json_t *m;
    json_array_foreach(samples, i, m)
    {
        soak_row_t *w = &rows[i];
        const char *ph = json_string_value(json_object_get(m, "phase"));
        for (int k = 0; ph && k <= SP_FINAL; k++)
            if (strcmp(ph, phase_names[k]) == 0)
                w->phase = k;
        w->t_s = json_number_value(json_object_get(m, "t_s"));
        w->rss_mib = json_number_value(json_object_get(m, "rss_mib"));
        w->fds = (uint64_t)json_integer_value(json_object_get(m, "fds"));
        w->live = (uint64_t)json_integer_value(json_object_get(m, "live"));
        w->pub_err = (uint64_t)json_integer_value(json_object_get(m, "pub_refused"));
        if (w->phase == SP_CONNECT)
            last_connect_t = w->t_s;
    }
    /* files of a version without warmup_end_s: the publishing began after the last
     * connecting sample */
    json_t *we = json_object_get(root, "warmup_end_s");
    double warm = json_is_number(we)
                      ? json_number_value(we)
                      : last_connect_t + json_number_value(json_object_get(root, "warmup_s"));
    snprintf(title, sizeof(title), "herald soak: %lld connections, %.0f s, churn %lld/s",
             (long long)json_integer_value(json_object_get(root, "connections")),
             json_number_value(json_object_get(root, "duration_s")),
             (long long)json_integer_value(json_object_get(root, "churn")));
    snprintf(path, sizeof(path), "%s.svg", prefix);
    int rc = soak_write_svg(path, title, rows, n, warm);
    if (rc != 0)
        fprintf(stderr, "herald-bench: --replot: could not write %s\n", path);
    free(rows);
    json_decref(root);
    return rc ? 3 : 0;
}
