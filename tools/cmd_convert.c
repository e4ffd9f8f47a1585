/* cmd_convert.c — `trimlm convert`: any model source into trimlm's own .tlm file. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "model_registry.h"

static const char convert_usage[] =
    "usage: trimlm convert SRC -o OUT.tlm [--type int8|int4|f16|bf16|f32] [--keep-wide NAMES]\n"
    "\n"
    "Writes the model SRC (GGUF file, Hugging Face directory, .tlm file, registry\n"
    "name or URL) as a .tlm file: weights in the chosen type, the tokenizer, the chat\n"
    "template and the layer graph, with checksums that `trimlm info --verify` checks.\n"
    "\n"
    "  -o, --output OUT.tlm    the file to write (never the input); written to a\n"
    "                          temporary file next to it and renamed when complete\n"
    "      --type T            storage type of the weight matrices:\n"
    "                            int8  8.5 bits/weight (q8_g32: int8, f16 scale per 32)\n"
    "                            int4  4.5 bits/weight (q4_g32: int4, f16 scale per 32);\n"
    "                                  token_embd / output are stored int8 (they set\n"
    "                                  every logit; llama.cpp's Q4_0 keeps them at 6-8 bits)\n"
    "                            f16 (default), bf16, f32\n"
    "                          int8/int4 use round-to-nearest; a matrix whose input\n"
    "                          size is not a multiple of 32 stays f32\n"
    "      --keep-wide NAMES   comma-separated tensors kept f32, e.g. token_embd,output\n"
    "                          or blk.0.attn_q.weight (norms and biases are always f32)\n"
    "  -h, --help              this help\n";

/* ------------------------------------------------------ interruption */

/* SIGINT/SIGTERM/SIGHUP before the output exists end the process at once;
 * once writing has begun they only raise a flag, the progress callback then
 * cancels, and the library removes its temporary file before we exit. */
static volatile sig_atomic_t g_writing;
static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    if (!g_writing) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_interrupted = sig;
}

static void install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

typedef struct convert_progress {
    cli_progress bar;
    bool writing;
} convert_progress;

static bool on_progress(void *user, const char *stage, uint64_t done, uint64_t total) {
    convert_progress *p = user;
    if (strcmp(stage, "write") == 0) {
        g_writing = 1; /* called before the temporary file is created */
        if (!p->writing) {
            p->writing = true;
            cli_progress_start(&p->bar, "writing");
        }
        cli_progress_bytes(&p->bar, done, total, done == total);
    }
    return !g_interrupted;
}

/* ------------------------------------------------------------ command */

int cmd_convert(int argc, char **argv) {
    cli_args a;
    cli_args_init(&a, "convert", argc, argv);
    const char *src = NULL, *out = NULL, *type = "f16", *keep_wide = NULL;
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(convert_usage, stdout); return CLI_EXIT_OK; }
        else if (cli_flag(&a, "-o", "--output")) out = cli_value(&a);
        else if (cli_flag(&a, NULL, "--type")) type = cli_value(&a);
        else if (cli_flag(&a, NULL, "--keep-wide")) keep_wide = cli_value(&a);
        else if (a.argv[a.i][0] != '-' && !src) src = a.argv[a.i];
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!src) return cli_usage_error("convert", "no source model given (trimlm convert SRC -o OUT.tlm)");
    if (!out || !*out) return cli_usage_error("convert", "no output file given (-o OUT.tlm)");
    tlm_convert_params params = tlm_convert_default_params();
    params.type = tlm_tensor_type_from_name(type);
    if (params.type < 0)
        return cli_usage_error("convert",
                               "invalid value '%s' for --type (expected int8, int4, f16, bf16 or f32)",
                               type);
    params.keep_wide = keep_wide;

    tlm_error err = {0};
    char path[4096];
    if (resolve_model_path(src, path, sizeof path, &err) != TLM_OK) return cli_fail_err(&err);
    install_handlers();
    convert_progress progress = {0};
    double t0 = cli_now_seconds();
    tlm_status st = tlm_convert(path, out, &params, on_progress, &progress, &err);
    if (progress.writing) cli_progress_end(&progress.bar);
    if (g_interrupted && st != TLM_OK) { /* a signal after the rename changes nothing */
        fprintf(stderr, "trimlm: interrupted; %s was not written\n", out);
        signal((int)g_interrupted, SIG_DFL);
        raise((int)g_interrupted);
        return CLI_EXIT_FAIL;
    }
    if (st != TLM_OK) return cli_fail_err(&err);
    if (cli_stderr_is_tty())
        fprintf(stderr, "trimlm: wrote %s (%s) in %.1f s\n", out, type, cli_now_seconds() - t0);
    return CLI_EXIT_OK;
}
