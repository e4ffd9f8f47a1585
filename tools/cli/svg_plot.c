/* svg_plot.c — a hand-written SVG line chart (see svg_plot.h). */
#include "svg_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Canvas and plot area, in SVG user units (pixels). */
#define W 960
#define H 540
#define LEFT 84
#define RIGHT 190 /* room for the legend */
#define TOP 78
#define BOTTOM 64
#define PLOT_W (W - LEFT - RIGHT)
#define PLOT_H (H - TOP - BOTTOM)

static void put_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            /* control characters are not allowed in XML 1.0 text */
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
            else fputc(' ', f);
        }
    }
}

/* The y mapping: value -> pixel row, linear or logarithmic over [lo, hi]. */
typedef struct y_axis {
    bool log;
    double lo, hi; /* data units; for log, lo > 0 */
} y_axis;

static double y_pixel(const y_axis *a, double v) {
    double t;
    if (a->log) {
        if (v < a->lo) v = a->lo; /* zero or below the floor sits on the axis */
        t = (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    } else {
        t = (v - a->lo) / (a->hi - a->lo);
    }
    return TOP + PLOT_H * (1.0 - t);
}

static double x_pixel(const svg_chart *c, double x) {
    double span = c->n_x > 1 ? (double)(c->n_x - 1) : 1.0;
    return LEFT + 16 + (PLOT_W - 32) * (x / span);
}

/* A "nice" step (1, 2 or 5 x 10^k) giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    double raw = span / want, mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void fmt_tick(char *buf, size_t cap, double v) {
    if (v == 0) snprintf(buf, cap, "0");
    else if (fabs(v) >= 1e-4 && fabs(v) < 1e5) snprintf(buf, cap, "%g", v);
    else snprintf(buf, cap, "%.0e", v);
}

static void choose_axis(const svg_chart *c, y_axis *a) {
    double mn = INFINITY, mx = -INFINITY, pos_min = INFINITY;
    for (int32_t s = 0; s < c->n_series; s++)
        for (int32_t i = 0; i < c->n_x; i++) {
            double v = c->series[s].y[i];
            if (!isfinite(v)) continue;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
            if (v > 0 && v < pos_min) pos_min = v;
        }
    if (!isfinite(mn)) { mn = 0; mx = 1; }
    a->log = c->log_y && isfinite(pos_min) && mx > 0 && mx / pos_min > 20;
    if (a->log) {
        a->lo = pow(10.0, floor(log10(pos_min)));
        a->hi = pow(10.0, ceil(log10(mx)));
        if (a->hi <= a->lo) a->hi = a->lo * 10;
    } else {
        double lo = mn > 0 ? 0 : mn, hi = mx;
        if (hi <= lo) hi = lo + 1;
        double step = nice_step(hi - lo, 5);
        a->lo = floor(lo / step) * step;
        a->hi = ceil(hi / step) * step;
    }
}

static void draw_marker(FILE *f, svg_marker m, double x, double y, const char *color) {
    switch (m) {
    case SVG_CIRCLE:
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"", x, y, color);
        break;
    case SVG_SQUARE:
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7.5\" height=\"7.5\" fill=\"%s\"", x - 3.75,
                y - 3.75, color);
        break;
    case SVG_TRIANGLE:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"", x, y - 5, x + 4.6,
                y + 3.5, x - 4.6, y + 3.5, color);
        break;
    case SVG_DIAMOND:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"", x, y - 5,
                x + 5, y, x, y + 5, x - 5, y, color);
        break;
    }
}

static void draw_y_axis(FILE *f, const y_axis *a) {
    char buf[32];
    if (a->log) {
        int decades = (int)lround(log10(a->hi / a->lo));
        for (double d = a->lo; d <= a->hi * 1.0001; d *= 10) {
            double y = y_pixel(a, d);
            fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>\n", LEFT,
                    y, LEFT + PLOT_W, y);
            fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"axis\"/>\n",
                    LEFT - 6, y, LEFT, y);
            fmt_tick(buf, sizeof buf, d);
            fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>\n",
                    LEFT - 9, y + 4, buf);
            for (int k = 2; k <= 9 && d * 10 <= a->hi * 1.0001; k++) {
                double ym = y_pixel(a, d * k);
                fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"minor\"/>\n",
                        LEFT, ym, LEFT + PLOT_W, ym);
                fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"axis\"/>\n",
                        LEFT - 3, ym, LEFT, ym);
                /* with few decades, 2 and 5 are labelled too */
                if ((k == 2 || k == 5) && decades <= 3) {
                    fmt_tick(buf, sizeof buf, d * k);
                    fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"minor-tick\" "
                               "text-anchor=\"end\">%s</text>\n",
                            LEFT - 9, ym + 4, buf);
                }
            }
        }
    } else {
        double step = nice_step(a->hi - a->lo, 5);
        for (double v = a->lo; v <= a->hi + step * 1e-6; v += step) {
            double y = y_pixel(a, v);
            fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>\n", LEFT,
                    y, LEFT + PLOT_W, y);
            fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"axis\"/>\n",
                    LEFT - 6, y, LEFT, y);
            fmt_tick(buf, sizeof buf, fabs(v) < step * 1e-9 ? 0 : v);
            fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>\n",
                    LEFT - 9, y + 4, buf);
        }
    }
}

static void draw_x_axis(FILE *f, const svg_chart *c) {
    int step = c->n_x <= 16 ? 1 : c->n_x <= 40 ? 2 : c->n_x <= 100 ? 5 : 10;
    for (int32_t i = 0; i < c->n_x; i++) {
        double x = x_pixel(c, i);
        bool labelled = i % step == 0 || i == c->n_x - 1;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"axis\"/>\n", x,
                TOP + PLOT_H, x, TOP + PLOT_H + (labelled ? 6 : 3));
        if (labelled && (i % step == 0 || (c->n_x - 1) % step > step / 2))
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%d</text>\n",
                    x, TOP + PLOT_H + 20, i);
    }
}

/* The whole document into f. */
static void write_svg(FILE *f, const svg_chart *c) {
    y_axis a;
    choose_axis(c, &a);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\">\n"
            "<style>\n"
            ".title{font-size:18px;font-weight:bold;fill:#222}\n"
            ".subtitle{font-size:13px;fill:#555}\n"
            ".label{font-size:14px;fill:#333}\n"
            ".tick{font-size:12px;fill:#444}\n"
            ".minor-tick{font-size:10px;fill:#777}\n"
            ".legend{font-size:13px;fill:#222}\n"
            ".axis{stroke:#333;stroke-width:1}\n"
            ".grid{stroke:#d8d8d8;stroke-width:1}\n"
            ".minor{stroke:#efefef;stroke-width:1}\n"
            "</style>\n"
            "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            W, H, W, H, W, H);
    fputs("<text x=\"", f);
    fprintf(f, "%d\" y=\"30\" class=\"title\">", LEFT);
    put_escaped(f, c->title);
    fputs("</text>\n", f);
    if (c->subtitle) {
        fprintf(f, "<text x=\"%d\" y=\"52\" class=\"subtitle\">", LEFT);
        put_escaped(f, c->subtitle);
        fputs("</text>\n", f);
    }

    draw_y_axis(f, &a);
    draw_x_axis(f, c);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" class=\"axis\"/>\n",
            LEFT, TOP, PLOT_W, PLOT_H);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\">", LEFT + PLOT_W / 2,
            H - 18);
    put_escaped(f, c->x_label);
    fputs("</text>\n", f);
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 %d %d)\">",
            22, TOP + PLOT_H / 2, 22, TOP + PLOT_H / 2);
    put_escaped(f, c->y_label);
    if (a.log) fputs(" (log scale)", f);
    fputs("</text>\n", f);

    /* series: a polyline per unbroken run of finite values, then markers
     * with a tooltip giving the value */
    for (int32_t s = 0; s < c->n_series; s++) {
        const svg_series *se = &c->series[s];
        fprintf(f, "<g>\n");
        int32_t i = 0;
        while (i < c->n_x) {
            while (i < c->n_x && !isfinite(se->y[i])) i++;
            int32_t start = i;
            while (i < c->n_x && isfinite(se->y[i])) i++;
            if (i - start >= 2) {
                fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                           "stroke-linejoin=\"round\" points=\"", se->color);
                for (int32_t k = start; k < i; k++)
                    fprintf(f, "%s%.1f,%.1f", k > start ? " " : "", x_pixel(c, k),
                            y_pixel(&a, se->y[k]));
                fputs("\"/>\n", f);
            }
        }
        for (int32_t k = 0; k < c->n_x; k++) {
            if (!isfinite(se->y[k])) continue;
            draw_marker(f, se->marker, x_pixel(c, k), y_pixel(&a, se->y[k]), se->color);
            fputs("><title>", f);
            put_escaped(f, se->name);
            fprintf(f, ", layer %d: %.6g</title>", k, (double)se->y[k]);
            fputs(se->marker == SVG_CIRCLE ? "</circle>\n" : se->marker == SVG_SQUARE ? "</rect>\n"
                                                                                      : "</path>\n",
                  f);
        }
        fputs("</g>\n", f);
    }

    /* legend */
    int lx = LEFT + PLOT_W + 24, ly = TOP + 12;
    for (int32_t s = 0; s < c->n_series; s++) {
        const svg_series *se = &c->series[s];
        int y = ly + s * 24;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                lx, y, lx + 28, y, se->color);
        draw_marker(f, se->marker, lx + 14, y, se->color);
        fputs("/>\n", f);
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"legend\">", lx + 36, y + 4);
        put_escaped(f, se->name);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

tlm_status svg_write_chart(const char *path, const char *const *inputs, size_t n_inputs,
                           const svg_chart *chart, tlm_error *err) {
    char *doc = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&doc, &len);
    if (!mem) return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory drawing the plot", path);
    write_svg(mem, chart);
    if (fclose(mem) != 0 || !doc) {
        free(doc);
        return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory drawing the plot", path);
    }

    /* a plot is an ordinary readable file */
    tlm_status st = tlm_atomic_write_file(path, inputs, n_inputs, doc, len, 0666, err);
    free(doc);
    return st;
}
