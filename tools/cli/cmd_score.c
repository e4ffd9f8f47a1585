/*
 * cmd_score.c — `trimlm score`: the importance of every attention sublayer,
 * MLP sublayer and block of a model (S = 1 - cos(X, Y), arXiv 2406.15786),
 * measured by one calibration pass (tlm_calibrate), as a table, CSV or JSON,
 * and optionally as an SVG plot.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "model_registry.h"
#include "svg_plot.h"

static const char score_usage[] =
    "usage: trimlm score SRC [options]\n"
    "\n"
    "Runs the full model SRC (GGUF file, Hugging Face directory, .tlm file, registry\n"
    "name or URL; or -m SRC) once over calibration text and prints the importance\n"
    "S = 1 - cos(X, Y) of every attention sublayer, MLP sublayer and whole block,\n"
    "X being the residual stream entering it and Y the stream after it, averaged\n"
    "over every token. Low S = the sublayer changes little: a candidate to drop.\n"
    "\n"
    "  -m, --model SRC        the model (instead of the positional SRC)\n"
    "      --calib FILE       calibration text (default: a built-in excerpt of the\n"
    "                         WikiText-2 validation split)\n"
    "      --calib-tokens N   tokens to run (default 16384; fewer if the text is shorter)\n"
    "      --calib-seq L      tokens per sequence, each starting fresh (default 512)\n"
    "  -t, --threads N        threads (default: physical cores)\n"
    "      --format F         table (default), csv or json: a list of\n"
    "                         {\"layer\": i, \"kind\": \"attn\"|\"mlp\"|\"block\", \"score\": s}\n"
    "      --plot FILE.svg    also draw the scores per layer as an SVG chart\n"
    "  -h, --help             this help\n"
    "\n"
    "The table ranks the attention scores: rank 1 is the least important attention.\n"
    "Sublayers a pruned model lacks show as \"-\" (null in JSON).\n";

typedef enum score_format { FORMAT_TABLE, FORMAT_CSV, FORMAT_JSON } score_format;

typedef struct score_options {
    const char *model, *calib, *plot;
    int64_t tokens, seq, threads;
    score_format format;
} score_options;

static int parse_score_args(int argc, char **argv, score_options *o, bool *done) {
    tlm_calib_params dp = tlm_calib_default_params();
    *o = (score_options){.tokens = dp.n_tokens, .seq = dp.seq_len};
    const char *format = "table";
    cli_args a;
    cli_args_init(&a, "score", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(score_usage, stdout); *done = true; return 0; }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--calib")) o->calib = cli_value(&a);
        else if (cli_flag(&a, NULL, "--calib-tokens"))
            cli_int(&a, 2, INT64_C(1) << 40, "an integer >= 2", &o->tokens);
        else if (cli_flag(&a, NULL, "--calib-seq"))
            cli_int(&a, 2, 1 << 20, "an integer >= 2", &o->seq);
        else if (cli_flag(&a, "-t", "--threads")) cli_threads(&a, &o->threads);
        else if (cli_flag(&a, NULL, "--format")) format = cli_value(&a);
        else if (cli_flag(&a, NULL, "--plot")) o->plot = cli_value(&a);
        else if (a.argv[a.i][0] != '-' && !o->model) o->model = a.argv[a.i];
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("score", "no model given (trimlm score SRC)");
    if (!format) return CLI_EXIT_USAGE;
    if (!strcmp(format, "table")) o->format = FORMAT_TABLE;
    else if (!strcmp(format, "csv")) o->format = FORMAT_CSV;
    else if (!strcmp(format, "json")) o->format = FORMAT_JSON;
    else
        return cli_usage_error("score", "invalid value '%s' for --format (expected table, csv or json)",
                               format);
    if (o->calib && !*o->calib) return cli_usage_error("score", "--calib needs a file name");
    if (o->plot && !*o->plot) return cli_usage_error("score", "--plot needs a file name");
    return 0;
}

/* ---------------------------------------------------------- progress */

typedef struct score_progress {
    bool enabled;
    double t_start, t_last;
    bool drawn;
} score_progress;

static bool on_progress(void *user, const char *stage, uint64_t done, uint64_t total) {
    score_progress *p = user;
    if (!p->enabled || total == 0) return true;
    double now = cli_now_seconds();
    if (p->drawn && now - p->t_last < 0.1 && done < total) return true;
    p->t_last = now;
    p->drawn = true;
    double frac = (double)done / (double)total, elapsed = now - p->t_start;
    char eta[32] = "";
    if (frac > 0.02 && done < total) {
        long s = (long)(elapsed * (1 - frac) / frac + 0.5);
        snprintf(eta, sizeof eta, "  ETA %ld:%02ld", s / 60, s % 60);
    }
    fprintf(stderr, "\rcalibrating  %3d%%  %.1f s%s\033[K", (int)(frac * 100), elapsed, eta);
    fflush(stderr);
    return true;
}

/* ------------------------------------------------------------ output */

static const char *const kind_names[3] = {"attn", "mlp", "block"};

/* rank[l] = 1 + the number of attention scores below layer l's (ties by
 * layer), 0 where the layer has none. */
static void attention_ranks(const tlm_calib *cal, int32_t *rank) {
    int32_t n = tlm_calib_n_layer(cal);
    for (int32_t l = 0; l < n; l++) {
        float s = tlm_calib_score(cal, TLM_SUBLAYER_ATTN, l);
        rank[l] = 0;
        if (isnan(s)) continue;
        rank[l] = 1;
        for (int32_t k = 0; k < n; k++) {
            float t = tlm_calib_score(cal, TLM_SUBLAYER_ATTN, k);
            if (!isnan(t) && (t < s || (t == s && k < l))) rank[l]++;
        }
    }
}

static void settings_line(char *buf, size_t cap, const tlm_calib *cal, int64_t threads) {
    int64_t n = tlm_calib_n_tokens(cal);
    int32_t seq = tlm_calib_seq_len(cal);
    int64_t n_seq = (n + seq - 1) / seq;
    const char *name = tlm_calib_text_name(cal);
    bool builtin = !strcmp(name, "built-in");
    snprintf(buf, cap,
             "calibration: %lld tokens of %s in %lld sequence%s of <= %d tokens, %lld thread%s, %.1f s",
             (long long)n, builtin ? "the built-in text (WikiText-2 validation excerpt)" : name,
             (long long)n_seq, n_seq == 1 ? "" : "s", seq, (long long)threads,
             threads == 1 ? "" : "s", tlm_calib_seconds(cal));
}

static void print_table(const tlm_calib *cal, const int32_t *rank, const tlm_model *model,
                        const char *model_name, const char *settings) {
    int32_t n = tlm_calib_n_layer(cal);
    printf("importance S = 1 - cos(X, Y) of %s (low = redundant; rank 1 = least important attention)\n\n",
           model_name);
    bool any_local = false;
    for (int32_t l = 0; l < n; l++) any_local |= tlm_model_attn_window(model, l) > 0;
    printf("layer     attn S  attn rank      mlp S    block S%s\n", any_local ? "  attention" : "");
    for (int32_t l = 0; l < n; l++) {
        printf("%5d", l);
        float a = tlm_calib_score(cal, TLM_SUBLAYER_ATTN, l);
        if (isnan(a)) printf("  %9s  %9s", "-", "-");
        else printf("  %9.6f  %9d", a, rank[l]);
        for (int k = 1; k < 3; k++) {
            float s = tlm_calib_score(cal, (tlm_sublayer_kind)k, l);
            if (isnan(s)) printf("  %9s", "-");
            else printf("  %9.6f", s);
        }
        if (any_local) {
            int32_t w = tlm_model_attn_window(model, l);
            if (w) printf("  local %d", w);
            else printf("  global");
        }
        putchar('\n');
    }
    printf("\n%s\n", settings);
}

static void print_csv(const tlm_calib *cal, const int32_t *rank, const char *model_name,
                      const char *settings) {
    int32_t n = tlm_calib_n_layer(cal);
    printf("layer,attn,attn_rank,mlp,block\n");
    for (int32_t l = 0; l < n; l++) {
        printf("%d", l);
        for (int k = 0; k < 3; k++) {
            float s = tlm_calib_score(cal, (tlm_sublayer_kind)k, l);
            if (isnan(s)) printf(",");
            else printf(",%.9g", s);
            if (k == 0) {
                if (rank[l]) printf(",%d", rank[l]);
                else printf(",");
            }
        }
        putchar('\n');
    }
    /* the footer: comment lines, skipped by CSV readers that take a comment character */
    printf("# model: %s\n# %s\n", model_name, settings);
}

static int print_json(const tlm_calib *cal) {
    int32_t n = tlm_calib_n_layer(cal);
    cJSON *list = cJSON_CreateArray();
    bool ok = list != NULL;
    for (int32_t l = 0; ok && l < n; l++)
        for (int k = 0; ok && k < 3; k++) {
            float s = tlm_calib_score(cal, (tlm_sublayer_kind)k, l);
            cJSON *o = cJSON_CreateObject();
            ok = o && cJSON_AddItemToArray(list, o) && cJSON_AddNumberToObject(o, "layer", l) &&
                 cJSON_AddStringToObject(o, "kind", kind_names[k]) &&
                 (isnan(s) ? cJSON_AddNullToObject(o, "score")
                           : cJSON_AddNumberToObject(o, "score", (double)s)) != NULL;
        }
    char *text = ok ? cJSON_Print(list) : NULL;
    cJSON_Delete(list);
    if (!text) return cli_fail("out of memory writing JSON");
    printf("%s\n", text);
    cJSON_free(text);
    return CLI_EXIT_OK;
}

static tlm_status write_plot(const char *path, const char *const *inputs, size_t n_inputs,
                             const tlm_calib *cal, const char *model_name, tlm_error *err) {
    int32_t n = tlm_calib_n_layer(cal);
    float *y = malloc((size_t)(n > 0 ? n : 1) * 3 * sizeof *y);
    if (!y) return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    for (int k = 0; k < 3; k++)
        for (int32_t l = 0; l < n; l++) y[k * n + l] = tlm_calib_score(cal, (tlm_sublayer_kind)k, l);
    const svg_series series[3] = {
        {"attention", "#1f77b4", SVG_CIRCLE, y},
        {"MLP", "#ff7f0e", SVG_SQUARE, y + n},
        {"block", "#2ca02c", SVG_TRIANGLE, y + 2 * n},
    };
    char title[512], subtitle[512];
    snprintf(title, sizeof title, "Importance per layer: %s", model_name);
    int64_t tokens = tlm_calib_n_tokens(cal);
    snprintf(subtitle, sizeof subtitle,
             "S = 1 - cos(X, Y), mean over %lld tokens of %s (sequences of %d); low S = redundant",
             (long long)tokens,
             strcmp(tlm_calib_text_name(cal), "built-in") ? tlm_calib_text_name(cal)
                                                          : "WikiText-2 validation text",
             tlm_calib_seq_len(cal));
    const svg_chart chart = {.title = title,
                             .subtitle = subtitle,
                             .x_label = "layer",
                             .y_label = "importance S",
                             .n_x = n,
                             .n_series = 3,
                             .series = series,
                             .log_y = true};
    tlm_status st = svg_write_chart(path, inputs, n_inputs, &chart, err);
    free(y);
    return st;
}

/* ------------------------------------------------------------ command */

/* The directory that will hold path exists and is writable (checked before
 * the long pass, not instead of the write's own checks). */
static bool dir_writable(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
    return access(dir, W_OK | X_OK) == 0;
}

int cmd_score(int argc, char **argv) {
    score_options o;
    bool done = false;
    int rc = parse_score_args(argc, argv, &o, &done);
    if (rc || done) return rc;

    /* inputs and outputs first: the pass may take minutes */
    if (o.calib) {
        /* stat, not open: opening a FIFO would wait for a writer */
        struct stat st;
        if (stat(o.calib, &st) != 0) return cli_fail("calibration text %s: %s", o.calib, strerror(errno));
        if (!S_ISREG(st.st_mode)) return cli_fail("calibration text %s: not a regular file", o.calib);
    }
    char dir[4096];
    if (o.plot && !dir_writable(o.plot, dir, sizeof dir))
        return cli_fail("%s: cannot write there (%s: %s)", o.plot, dir, strerror(errno));

    tlm_error err = {0};
    char path[4096];
    if (resolve_model_path(o.model, path, sizeof path, &err) != TLM_OK) return cli_fail_err(&err);
    /* the plot may not replace what the scores are computed from */
    const char *inputs[] = {path, o.calib};
    if (o.plot && tlm_atomic_check_destination(o.plot, inputs, 2, &err) != TLM_OK)
        return cli_fail_err(&err);
    /* the pass materialises one layer at a time (model.h): the peak is one
     * layer in f32, not the whole model */
    tlm_model_load_params lp = tlm_model_default_load_params();
    lp.lazy_layers = true;
    tlm_model *model = tlm_model_load_with(path, &lp, &err);
    if (!model) return cli_fail_err(&err);
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    const char *model_name = info.name && *info.name ? info.name : o.model;

    tlm_calib_params p = tlm_calib_default_params();
    p.text_file = o.calib;
    p.n_tokens = o.tokens;
    p.seq_len = (int32_t)o.seq;
    p.n_threads = (int32_t)o.threads;
    score_progress prog = {.enabled = cli_stderr_is_tty(), .t_start = cli_now_seconds()};
    p.progress = on_progress;
    p.user = &prog;
    tlm_calib *cal = tlm_calibrate(model, &p, &err);
    if (prog.drawn) fputs("\r\033[K", stderr);
    rc = CLI_EXIT_FAIL;
    if (!cal) {
        cli_fail_err(&err);
        goto out;
    }

    int32_t n = tlm_calib_n_layer(cal);
    int32_t *rank = calloc((size_t)(n > 0 ? n : 1), sizeof *rank);
    if (!rank) { cli_fail("out of memory"); goto out; }
    attention_ranks(cal, rank);
    char settings[768];
    settings_line(settings, sizeof settings, cal, o.threads ? o.threads : tlm_physical_cores());
    if (o.format == FORMAT_TABLE) print_table(cal, rank, model, model_name, settings);
    else if (o.format == FORMAT_CSV) print_csv(cal, rank, model_name, settings);
    else if (print_json(cal) != CLI_EXIT_OK) { free(rank); goto out; }
    if (o.format == FORMAT_JSON) fprintf(stderr, "trimlm: %s\n", settings);
    free(rank);
    if (fflush(stdout) != 0) { cli_fail("writing the scores: %s", strerror(errno)); goto out; }

    if (o.plot) {
        if (write_plot(o.plot, inputs, 2, cal, model_name, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
        if (cli_stderr_is_tty()) fprintf(stderr, "trimlm: wrote %s\n", o.plot);
    }
    rc = CLI_EXIT_OK;
out:
    tlm_calib_free(cal);
    tlm_model_free(model);
    return rc;
}
