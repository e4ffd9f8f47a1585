/*
 * cli.h — what the trimlm subcommands share: flag parsing with one-line
 * errors, exit codes, the terminal progress bar, and the entry points.
 *
 * Exit codes: 0 success, 1 a failure while doing the work (message
 * "trimlm: <reason>"), 2 a bad command line (message "trimlm <cmd>: ...").
 */
#ifndef TLM_CLI_H
#define TLM_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "trimlm.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* ------------------------------------------------------- flag parsing */

/* Walks argv[0..argc) of one subcommand. The loop in each command is
 *   while (cli_next(&a)) { if (cli_flag(&a, "-n", "--n-predict")) ... }
 * and cli_value() fetches a flag's argument ("-n 5", "--temp=0.5"). */
typedef struct cli_args {
    const char *cmd; /* "run", "eval", ... for messages */
    int argc;
    char **argv;
    int i;                 /* index of the current argument */
    const char *inline_val; /* the part after '=' in "--flag=value" */
    const char *flag;      /* the flag as the user spelled it (without =value) */
    char flag_buf[64];
    int status;            /* CLI_EXIT_USAGE once an error was printed */
} cli_args;

void cli_args_init(cli_args *a, const char *cmd, int argc, char **argv);
/* Advances to the next argument; false at the end or after an error. */
bool cli_next(cli_args *a);
/* True if the current argument is short_name or long_name (either may be NULL). */
bool cli_flag(cli_args *a, const char *short_name, const char *long_name);
/* The value of the current flag, or NULL after printing "missing value". */
const char *cli_value(cli_args *a);
/* Prints "trimlm <cmd>: unknown option '<arg>'" and sets status. */
void cli_unknown(cli_args *a);

/* Number parsers for the current flag's value: print
 * "trimlm run: invalid value 'abc' for -n (expected a positive integer)"
 * and return false when the text is not a number in [lo, hi]. */
bool cli_int(cli_args *a, int64_t lo, int64_t hi, const char *expected, int64_t *out);
bool cli_float(cli_args *a, double lo, double hi, const char *expected, double *out);
/* -t: 1..TLM_MAX_THREADS (the library's limit) into *out, with a warning on
 * stderr when it is more than the CPUs this process may use. */
bool cli_threads(cli_args *a, int64_t *out);
/* The warning alone, for a count parsed some other way (bench's lists). */
void cli_warn_threads(int64_t n);
/* --kv: f16 | f32 | int8 into *out (a tlm_kv_type). */
bool cli_kv_type(cli_args *a, int32_t *out);

/* Sampling and context flags shared by `run` and `chat`:
 *   -n --temp --top-k --top-p --min-p --repeat-penalty --seed -t -c --kv */
typedef struct cli_gen_options {
    int64_t n_predict; /* tokens to generate at most; -1 = no limit */
    double temp, top_p, min_p, repeat_penalty;
    int64_t top_k;
    int64_t seed;
    bool have_seed;
    int64_t threads, ctx; /* 0 = the library's default */
    int32_t kv_type;      /* tlm_kv_type (--kv) */
} cli_gen_options;

/* The defaults of `trimlm run` (n_predict = 128). */
cli_gen_options cli_gen_defaults(void);
/* If the current argument is one of the flags above, parses its value into g
 * (printing an error and setting a->status when it is bad) and returns true. */
bool cli_gen_flag(cli_args *a, cli_gen_options *g);
/* The help lines of those flags, except -n (whose default differs). */
extern const char cli_gen_usage[];
tlm_sampler_params cli_gen_sampler_params(const cli_gen_options *g);
tlm_context_params cli_gen_context_params(const cli_gen_options *g);
/* A warning on stderr when n_ctx tokens of context (-c) exceed what the
 * model was trained on (positions it never saw: its output degrades there). */
void cli_warn_ctx_beyond_training(const tlm_model *m, int64_t n_ctx, const char *model_arg);
/* A warning on stderr when the model's output matrix is the token embedding
 * only because the file has none (info->output_absent). */
void cli_warn_output_absent(const tlm_model_info *info, const char *model_arg);

/* "trimlm <cmd>: <message>" on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "trimlm: <message>" on stderr; returns CLI_EXIT_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_fail_err(const tlm_error *err);
/* Fills err like the library does (the CLI sees only the public header). */
tlm_status cli_seterr(tlm_error *err, tlm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------- terminal */

bool cli_stderr_is_tty(void);
double cli_now_seconds(void); /* monotonic clock */

/* A one-line progress display redrawn with '\r' on stderr, only when stderr
 * is a terminal. total may be 0 when unknown. */
typedef struct cli_progress {
    bool enabled;
    const char *label;
    double t_start, t_last_draw;
    bool drawn;
} cli_progress;

void cli_progress_start(cli_progress *p, const char *label);
/* Redraws at most ~10 times per second unless force. */
void cli_progress_bytes(cli_progress *p, uint64_t done, uint64_t total, bool force);
void cli_progress_end(cli_progress *p);

/* Reads a whole input file (or stdin for "-") of at most max_bytes into a
 * NUL-terminated buffer, freed with tlm_free_string(); on failure sets err
 * naming the path. What is not a regular file (/dev/zero, a FIFO) is refused,
 * and standard input is read only up to max_bytes (tlm_read_file, trimlm.h). */
char *cli_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err);
#define CLI_MAX_DATA_BYTES ((size_t)1 << 30)   /* evaluation text and data sets */
#define CLI_MAX_SMALL_BYTES ((size_t)64 << 20) /* prompts, conversations, the registry */

/* -------------------------------------------------------- subcommands */

int cmd_run(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
