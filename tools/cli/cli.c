/* cli.c — flag parsing, error lines, the progress bar and file reading
 * shared by the trimlm subcommands (see cli.h). */
#include "cli.h"


#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- errors */

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "trimlm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("trimlm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

int cli_fail_err(const tlm_error *err) {
    const char *msg = err && err->msg[0] ? err->msg : tlm_status_name(err ? err->code : TLM_OK);
    return cli_fail("%s", msg);
}

tlm_status cli_seterr(tlm_error *err, tlm_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

/* ------------------------------------------------------- flag parsing */

void cli_args_init(cli_args *a, const char *cmd, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->argc = argc;
    a->argv = argv;
    a->i = -1;
}

bool cli_next(cli_args *a) {
    if (a->status != 0) return false;
    a->i++;
    if (a->i >= a->argc) return false;
    const char *arg = a->argv[a->i];
    a->inline_val = NULL;
    a->flag = arg;
    /* "--name=value": split so that cli_flag compares the name only */
    const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
    if (eq && (size_t)(eq - arg) < sizeof a->flag_buf) {
        memcpy(a->flag_buf, arg, (size_t)(eq - arg));
        a->flag_buf[eq - arg] = '\0';
        a->flag = a->flag_buf;
        a->inline_val = eq + 1;
    }
    return true;
}

bool cli_flag(cli_args *a, const char *short_name, const char *long_name) {
    return (short_name && strcmp(a->flag, short_name) == 0) ||
           (long_name && strcmp(a->flag, long_name) == 0);
}

const char *cli_value(cli_args *a) {
    if (a->inline_val) return a->inline_val;
    if (a->i + 1 >= a->argc) {
        cli_usage_error(a->cmd, "missing value for %s", a->flag);
        a->status = CLI_EXIT_USAGE;
        return NULL;
    }
    return a->argv[++a->i];
}

void cli_unknown(cli_args *a) {
    const char *arg = a->argv[a->i];
    if (arg[0] == '-' && arg[1] != '\0')
        cli_usage_error(a->cmd, "unknown option '%s' (see 'trimlm %s --help')", arg, a->cmd);
    else
        cli_usage_error(a->cmd, "unexpected argument '%s' (see 'trimlm %s --help')", arg, a->cmd);
    a->status = CLI_EXIT_USAGE;
}

static void invalid_value(cli_args *a, const char *flag, const char *text, const char *expected) {
    cli_usage_error(a->cmd, "invalid value '%s' for %s (expected %s)", text, flag, expected);
    a->status = CLI_EXIT_USAGE;
}

bool cli_int(cli_args *a, int64_t lo, int64_t hi, const char *expected, int64_t *out) {
    char flag[64];
    snprintf(flag, sizeof flag, "%s", a->flag);
    const char *text = cli_value(a);
    if (!text) return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
        invalid_value(a, flag, text, expected);
        return false;
    }
    *out = v;
    return true;
}

bool cli_float(cli_args *a, double lo, double hi, const char *expected, double *out) {
    char flag[64];
    snprintf(flag, sizeof flag, "%s", a->flag);
    const char *text = cli_value(a);
    if (!text) return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        invalid_value(a, flag, text, expected);
        return false;
    }
    *out = v;
    return true;
}

bool cli_kv_type(cli_args *a, int32_t *out) {
    char flag[64];
    snprintf(flag, sizeof flag, "%s", a->flag);
    const char *text = cli_value(a);
    if (!text) return false;
    int32_t t = tlm_kv_type_from_name(text);
    if (t < 0) {
        invalid_value(a, flag, text, "f16, f32 or int8");
        return false;
    }
    *out = t;
    return true;
}

/* ------------------------------------------- sampling and context flags */

const char cli_gen_usage[] =
    "      --temp T            temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K           keep the K most likely tokens; 0 = off (default 40)\n"
    "      --top-p P           nucleus sampling; 1 = off (default 0.95)\n"
    "      --min-p P           drop tokens below P x the top probability (default 0.05)\n"
    "      --repeat-penalty R  penalty for recent tokens; 1 = off (default 1.0)\n"
    "      --seed S            random seed (default: from the clock)\n"
    "  -t, --threads N         threads (default: physical cores)\n"
    "  -c, --ctx N             context length in tokens (default: min(model, 4096))\n"
    "      --kv f16|f32|int8   KV-cache storage (default f16; int8: one scale per head vector)\n";

cli_gen_options cli_gen_defaults(void) {
    return (cli_gen_options){.n_predict = 128, .temp = 0.8, .top_k = 40, .top_p = 0.95,
                             .min_p = 0.05, .repeat_penalty = 1.0, .kv_type = TLM_KV_F16};
}

void cli_warn_threads(int64_t n) {
    int cpus = tlm_usable_cpus();
    if (n > cpus)
        fprintf(stderr, "trimlm: warning: %lld threads on %d CPU%s: the extra threads only wait "
                        "for each other (-t %d or fewer is faster)\n",
                (long long)n, cpus, cpus == 1 ? "" : "s", cpus);
}

bool cli_threads(cli_args *a, int64_t *out) {
    char expected[64];
    snprintf(expected, sizeof expected, "a number of threads from 1 to %d", TLM_MAX_THREADS);
    if (!cli_int(a, 1, TLM_MAX_THREADS, expected, out)) return false;
    cli_warn_threads(*out);
    return true;
}

bool cli_gen_flag(cli_args *a, cli_gen_options *g) {
    static const char positive[] = "a positive integer";
    if (cli_flag(a, "-n", "--n-predict")) cli_int(a, 1, 1 << 24, positive, &g->n_predict);
    else if (cli_flag(a, NULL, "--temp")) cli_float(a, 0, 1e6, "a number >= 0", &g->temp);
    else if (cli_flag(a, NULL, "--top-k")) cli_int(a, 0, 1 << 24, "an integer >= 0", &g->top_k);
    else if (cli_flag(a, NULL, "--top-p")) cli_float(a, 0, 1, "a number in [0, 1]", &g->top_p);
    else if (cli_flag(a, NULL, "--min-p")) cli_float(a, 0, 1, "a number in [0, 1]", &g->min_p);
    else if (cli_flag(a, NULL, "--repeat-penalty"))
        cli_float(a, 1e-6, 1e6, "a number > 0", &g->repeat_penalty);
    else if (cli_flag(a, NULL, "--seed")) {
        if (cli_int(a, 0, INT64_MAX, "an integer >= 0", &g->seed)) g->have_seed = true;
    }
    else if (cli_flag(a, "-t", "--threads")) cli_threads(a, &g->threads);
    else if (cli_flag(a, "-c", "--ctx")) cli_int(a, 1, 1 << 24, positive, &g->ctx);
    else if (cli_flag(a, NULL, "--kv")) cli_kv_type(a, &g->kv_type);
    else return false;
    return true;
}

tlm_sampler_params cli_gen_sampler_params(const cli_gen_options *g) {
    tlm_sampler_params sp = tlm_sampler_default_params();
    sp.temperature = (float)g->temp;
    sp.top_k = (int32_t)g->top_k;
    sp.top_p = (float)g->top_p;
    sp.min_p = (float)g->min_p;
    sp.repeat_penalty = (float)g->repeat_penalty;
    sp.seed = g->have_seed ? (uint64_t)g->seed : TLM_SEED_RANDOM;
    return sp;
}

tlm_context_params cli_gen_context_params(const cli_gen_options *g) {
    tlm_context_params cp = tlm_context_default_params();
    if (g->ctx > 0) cp.n_ctx = (int32_t)g->ctx;
    if (g->threads > 0) cp.n_threads = (int32_t)g->threads;
    cp.kv_type = g->kv_type;
    return cp;
}

void cli_warn_ctx_beyond_training(const tlm_model *m, int64_t n_ctx, const char *model_arg) {
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    if (info.n_ctx_train > 0 && n_ctx > info.n_ctx_train)
        fprintf(stderr,
                "trimlm: warning: a context of %lld tokens (-c) is beyond the %d that %s was "
                "trained on; its output degrades past them\n",
                (long long)n_ctx, (int)info.n_ctx_train, model_arg);
}

void cli_warn_output_absent(const tlm_model_info *info, const char *model_arg) {
    if (info->output_absent)
        fprintf(stderr,
                "trimlm: warning: %s has no output matrix (output.weight); the token embedding "
                "is used in its place (tied embeddings, as llama.cpp does)\n", model_arg);
}

/* ---------------------------------------------------------- terminal */

bool cli_stderr_is_tty(void) { return isatty(STDERR_FILENO) == 1; }

double cli_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label) {
    memset(p, 0, sizeof *p);
    p->enabled = cli_stderr_is_tty();
    p->label = label;
    p->t_start = cli_now_seconds();
}

/* "  45.2 MB / 98.4 MB  46%  12.3 MB/s  ETA 0:04" */
void cli_progress_bytes(cli_progress *p, uint64_t done, uint64_t total, bool force) {
    if (!p->enabled) return;
    double now = cli_now_seconds();
    if (!force && p->drawn && now - p->t_last_draw < 0.1) return;
    p->t_last_draw = now;
    p->drawn = true;
    double elapsed = now - p->t_start;
    double rate = elapsed > 0 ? (double)done / elapsed : 0; /* bytes/s */
    char line[160];
    int n = snprintf(line, sizeof line, "\r%s  %.1f MB", p->label ? p->label : "", done / 1e6);
    if (total > 0 && n > 0 && (size_t)n < sizeof line) {
        double frac = (double)done / (double)total;
        n += snprintf(line + n, sizeof line - (size_t)n, " / %.1f MB  %3d%%", total / 1e6,
                      (int)(frac * 100));
        if (rate > 0 && done <= total && (size_t)n < sizeof line) {
            long eta = (long)((double)(total - done) / rate + 0.5);
            n += snprintf(line + n, sizeof line - (size_t)n, "  %.1f MB/s  ETA %ld:%02ld",
                          rate / 1e6, eta / 60, eta % 60);
        }
    } else if (rate > 0 && n > 0 && (size_t)n < sizeof line) {
        n += snprintf(line + n, sizeof line - (size_t)n, "  %.1f MB/s", rate / 1e6);
    }
    fprintf(stderr, "%s\033[K", line);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->enabled && p->drawn) fputc('\n', stderr);
    p->drawn = false;
}

/* --------------------------------------------------------------- files */

char *cli_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err) {
    size_t n = 0;
    char *text = strcmp(path, "-") == 0
                     ? tlm_read_fd(STDIN_FILENO, "standard input", max_bytes, &n, err)
                     : tlm_read_file(path, max_bytes, &n, err);
    if (text && len) *len = n;
    return text;
}
