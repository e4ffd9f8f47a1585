/*
 * svg_plot.h — a line chart (lines with markers over integer x positions)
 * written as a standalone SVG file, with no dependencies: axes with ticks
 * and labels, a legend, a title and a subtitle. The y axis is logarithmic
 * when asked and the positive values span more than a factor of 20.
 */
#ifndef TLM_SVG_PLOT_H
#define TLM_SVG_PLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "trimlm.h"

typedef enum svg_marker { SVG_CIRCLE, SVG_SQUARE, SVG_TRIANGLE, SVG_DIAMOND } svg_marker;

typedef struct svg_series {
    const char *name;    /* legend text */
    const char *color;   /* CSS colour, e.g. "#1f77b4" */
    svg_marker marker;
    const float *y;      /* n_x values; NaN = no point (the line breaks there) */
} svg_series;

typedef struct svg_chart {
    const char *title;
    const char *subtitle;  /* may be NULL */
    const char *x_label;
    const char *y_label;
    int32_t n_x;           /* points per series, at x = 0 .. n_x-1 */
    int32_t n_series;
    const svg_series *series;
    bool log_y;            /* logarithmic y axis when the data allow it */
} svg_chart;

/* Writes the chart to path through a temporary file in the same directory,
 * renamed when complete. Text is XML-escaped. TLM_OK, or err naming path. */
tlm_status svg_write_chart(const char *path, const char *const *inputs, size_t n_inputs,
                           const svg_chart *chart, tlm_error *err);

#endif
