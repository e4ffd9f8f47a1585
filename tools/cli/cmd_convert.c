/* cmd_convert.c — `trimlm convert`: any model source into trimlm's own .tlm
 * file (or a GGUF), optionally calibrated (activation-aware int8/int4,
 * importance scores) and with sublayers dropped. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"
#include "model_registry.h"

static const char convert_usage[] =
    "usage: trimlm convert SRC -o OUT.tlm [--type int8|int4|f16|bf16|f32] [--keep-wide NAMES]\n"
    "                     [--to tlm|gguf] [--calib FILE] [--calib-tokens N] [--calib-seq L]\n"
    "                     [--no-calib] [--drop SPEC]... [--drop-list LIST] [-t N]\n"
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
    "                          a matrix whose input size is not a multiple of 32 stays f32\n"
    "      --keep-wide NAMES   comma-separated tensors kept f32, e.g. token_embd,output\n"
    "                          or blk.0.attn_q.weight (norms and biases are always f32)\n"
    "      --to tlm|gguf       output format (default: gguf when OUT ends in .gguf, else\n"
    "                          tlm; a name ending in the other format's extension is\n"
    "                          refused). gguf writes a GGUF that llama.cpp loads: a llama\n"
    "                          model, or llama.cpp's \"deci\" form when sublayers are\n"
    "                          removed (layer 0 must keep its attention); int8/int4\n"
    "                          become Q8_0/Q4_0, round-to-nearest. The source's\n"
    "                          tokenizer must be GGUF metadata (a GGUF source or a\n"
    "                          .tlm converted from one)\n"
    "\n"
    "Calibration: one forward pass of the full model over calibration text measures\n"
    "each sublayer's importance (1 - cos between the residual stream before and after\n"
    "it) and each linear layer's input statistics. It runs for --type int8/int4\n"
    "(activation-aware quantization: per-channel scales folded into the preceding op,\n"
    "an importance-weighted scale search) and for --drop; OUT.tlm stores the scores.\n"
    "      --calib FILE        calibration text (default: the text built into trimlm)\n"
    "      --calib-tokens N    tokens to run (default 16384)\n"
    "      --calib-seq L       tokens per sequence (default 512)\n"
    "      --no-calib          no calibration: int8/int4 round-to-nearest, no scores\n"
    "\n"
    "Dropping sublayers (OUT has no weights, no norm and no KV cache for them):\n"
    "      --drop SPEC         by importance (repeatable; the union is dropped):\n"
    "                            attn:K    the K attention sublayers of lowest score\n"
    "                            mlp:K     the K MLP sublayers of lowest score\n"
    "                            block:K   whole layers (attention + MLP), by block score\n"
    "                            joint:K   the K lowest of attention and MLP together\n"
    "                            KIND:s<T  every one of KIND scoring below T (attn:s<0.02)\n"
    "                          equal scores: the deeper layer goes first\n"
    "      --drop-list LIST    by layer, no calibration needed: \"attn:20,22 mlp:25 block:3\"\n"
    "                          (original layer indices; ranges such as 20-23 too)\n"
    "  -t, --threads N         threads for calibration and quantization (default: cores)\n"
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

/* After a signal cancelled the work: says so, then ends the process by that
 * signal (its default action), as an uncaught Ctrl-C would (shell status 130),
 * whichever stage it interrupted. Returns only if the signal does not end it. */
static int exit_interrupted(const char *out) {
    fprintf(stderr, "trimlm: interrupted; %s was not written\n", out);
    signal((int)g_interrupted, SIG_DFL);
    raise((int)g_interrupted);
    return CLI_EXIT_FAIL;
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
    bool tty;
    const char *counting; /* the stage a count line is drawn for, or NULL */
} convert_progress;

/* A count line for the stages measured in tokens or layers (on a terminal). */
static void show_count(convert_progress *p, const char *label, const char *unit, uint64_t done,
                       uint64_t total) {
    if (!p->tty) return;
    p->counting = label;
    fprintf(stderr, "\r%s  %llu / %llu %s  %3d%%\033[K", label, (unsigned long long)done,
            (unsigned long long)total, unit, total ? (int)(100.0 * (double)done / (double)total) : 0);
    if (done >= total) {
        fputc('\n', stderr);
        p->counting = NULL;
    }
    fflush(stderr);
}

static bool on_progress(void *user, const char *stage, uint64_t done, uint64_t total) {
    convert_progress *p = user;
    if (strcmp(stage, "calibrate") == 0) show_count(p, "calibrating", "tokens", done, total);
    else if (strcmp(stage, "awq") == 0) show_count(p, "choosing scales", "layers", done, total);
    else if (strcmp(stage, "write") == 0) {
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

typedef struct convert_options {
    const char *src, *out, *type, *keep_wide, *to;
    const char *calib_file, *drop_list;
    int64_t calib_tokens, calib_seq, threads;
    bool no_calib;
    const char *drops[64];
    int n_drops;
} convert_options;

static int parse_convert_args(int argc, char **argv, convert_options *o, bool *done) {
    *o = (convert_options){.type = "f16"};
    cli_args a;
    cli_args_init(&a, "convert", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(convert_usage, stdout); *done = true; return 0; }
        else if (cli_flag(&a, "-o", "--output")) o->out = cli_value(&a);
        else if (cli_flag(&a, NULL, "--type")) o->type = cli_value(&a);
        else if (cli_flag(&a, NULL, "--keep-wide")) o->keep_wide = cli_value(&a);
        else if (cli_flag(&a, NULL, "--to")) o->to = cli_value(&a);
        else if (cli_flag(&a, NULL, "--calib")) o->calib_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--calib-tokens"))
            cli_int(&a, 1, INT32_MAX, "a positive number of tokens", &o->calib_tokens);
        else if (cli_flag(&a, NULL, "--calib-seq"))
            cli_int(&a, 2, 1 << 20, "a sequence length of at least 2", &o->calib_seq);
        else if (cli_flag(&a, NULL, "--no-calib")) o->no_calib = true;
        else if (cli_flag(&a, "-t", "--threads")) cli_threads(&a, &o->threads);
        else if (cli_flag(&a, NULL, "--drop")) {
            const char *v = cli_value(&a);
            if (!v) continue;
            if (o->n_drops == (int)(sizeof o->drops / sizeof *o->drops))
                return cli_usage_error("convert", "too many --drop flags (at most 64)");
            o->drops[o->n_drops++] = v;
        } else if (cli_flag(&a, NULL, "--drop-list")) o->drop_list = cli_value(&a);
        else if (a.argv[a.i][0] != '-' && !o->src) o->src = a.argv[a.i];
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->src) return cli_usage_error("convert", "no source model given (trimlm convert SRC -o OUT.tlm)");
    if (!o->out || !*o->out) return cli_usage_error("convert", "no output file given (-o OUT.tlm)");
    if (o->to && strcmp(o->to, "tlm") != 0 && strcmp(o->to, "gguf") != 0)
        return cli_usage_error("convert", "invalid value '%s' for --to (expected tlm or gguf)", o->to);
    size_t out_len = strlen(o->out);
    const bool named_gguf = out_len >= 5 && strcasecmp(o->out + out_len - 5, ".gguf") == 0;
    const bool named_tlm = out_len >= 4 && strcasecmp(o->out + out_len - 4, ".tlm") == 0;
    if (!o->to && named_gguf) o->to = "gguf";
    /* a name that says the other format would be taken for what it is not */
    if (o->to && strcmp(o->to, "gguf") == 0 && named_tlm)
        return cli_usage_error("convert", "%s: --to gguf writes a GGUF file, but the name ends in "
                               ".tlm; name it .gguf", o->out);
    if (o->to && strcmp(o->to, "tlm") == 0 && named_gguf)
        return cli_usage_error("convert", "%s: --to tlm writes a .tlm file, but the name ends in "
                               ".gguf; name it .tlm", o->out);
    if (o->no_calib && (o->calib_file || o->calib_tokens || o->calib_seq))
        return cli_usage_error("convert", "--no-calib conflicts with --calib, --calib-tokens and --calib-seq");
    if (o->no_calib && o->n_drops)
        return cli_usage_error("convert",
                               "--drop %s chooses by importance scores, which need calibration: "
                               "remove --no-calib, or name the sublayers with --drop-list",
                               o->drops[0]);
    for (int i = 0; i < o->n_drops; i++) { /* the syntax, before a long calibration */
        tlm_error err = {0};
        if (tlm_drop_select(NULL, o->drops[i], NULL, &err) != TLM_OK)
            return cli_usage_error("convert", "%s", err.msg);
    }
    return 0;
}

/* "attn 20 (0.01234), mlp 25 (0.04567)": the dropped sublayers and their scores. */
static void describe_drops(const tlm_calib *c, const tlm_drop_list *drops, char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = '\0';
    tlm_sublayer_id id;
    for (int32_t i = 0; tlm_drop_list_get(drops, i, &id); i++) {
        float s = c ? tlm_calib_score(c, id.kind, id.layer) : NAN;
        char score[32] = "";
        if (isfinite(s)) snprintf(score, sizeof score, " (%.5f)", (double)s);
        int n = snprintf(buf + at, cap - at, "%s%s %d%s", at ? ", " : "",
                         id.kind == TLM_SUBLAYER_ATTN ? "attn" : "mlp", (int)id.layer, score);
        if (n < 0 || (size_t)n >= cap - at) return;
        at += (size_t)n;
    }
}

int cmd_convert(int argc, char **argv) {
    convert_options o;
    bool done = false;
    int rc = parse_convert_args(argc, argv, &o, &done);
    if (rc || done) return rc;
    tlm_convert_params params = tlm_convert_default_params();
    params.type = tlm_tensor_type_from_name(o.type);
    if (params.type < 0)
        return cli_usage_error("convert",
                               "invalid value '%s' for --type (expected int8, int4, f16, bf16 or f32)",
                               o.type);
    params.keep_wide = o.keep_wide;
    params.to = o.to;
    const bool gguf = o.to && strcmp(o.to, "gguf") == 0;
    const bool quantized = params.type == TLM_TYPE_Q8_G32 || params.type == TLM_TYPE_Q4_G32;
    /* the GGUF writer quantizes round-to-nearest: calibrate only to drop */
    const bool calibrate = !o.no_calib && ((quantized && !gguf) || o.n_drops > 0);
    params.n_threads = (int32_t)o.threads;

    tlm_error err = {0};
    char path[4096];
    if (resolve_model_path(o.src, path, sizeof path, &err) != TLM_OK) return cli_fail_err(&err);
    /* before the calibration pass; the writer checks the source again */
    const char *inputs[] = {path, o.calib_file};
    if (tlm_atomic_check_destination(o.out, inputs, 2, &err) != TLM_OK) return cli_fail_err(&err);
    install_handlers();
    convert_progress progress = {.tty = cli_stderr_is_tty()};
    double t0 = cli_now_seconds();
    /* Lazily: calibration and the writers read one layer at a time, so the
     * peak is one layer in f32, not the whole source.
     * TRIMLM_CONVERT_EAGER=1 loads it whole, for the tests to compare. */
    const char *eager = getenv("TRIMLM_CONVERT_EAGER");
    tlm_model_load_params lp = tlm_model_default_load_params();
    if (eager && strcmp(eager, "1") == 0) lp.weights_f32 = true;
    else lp.lazy_layers = true;
    tlm_model *m = tlm_model_load_with(path, &lp, &err);
    if (!m) return cli_fail_err(&err);
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    cli_warn_output_absent(&info, o.src); /* the output states it as tied */
    const int32_t NL = info.n_layer;
    tlm_drop_list *drops = tlm_drop_list_new(NL, &err);
    tlm_calib *calib = NULL;
    tlm_status st = TLM_OK;
    rc = CLI_EXIT_OK;
    if (!drops) {
        rc = cli_fail_err(&err);
        goto done;
    }
    if (o.drop_list && tlm_drop_parse_list(o.drop_list, drops, &err) != TLM_OK) {
        rc = cli_usage_error("convert", "%s", err.msg);
        goto done;
    }
    /* against the model's shape, before minutes of calibration */
    if (tlm_drop_check(m, o.drops, o.n_drops, drops, &err) != TLM_OK) {
        rc = cli_usage_error("convert", "%s", err.msg);
        goto done;
    }
    if (calibrate) {
        tlm_calib_params cp = tlm_calib_default_params();
        cp.text_file = o.calib_file;
        if (o.calib_tokens) cp.n_tokens = o.calib_tokens;
        if (o.calib_seq) cp.seq_len = (int32_t)o.calib_seq;
        cp.n_threads = (int32_t)o.threads;
        cp.progress = on_progress;
        cp.user = &progress;
        g_writing = 1; /* a signal now cancels through the progress callback */
        calib = tlm_calibrate(m, &cp, &err);
        if (progress.counting) fputc('\n', stderr);
        progress.counting = NULL;
        if (!calib) {
            rc = g_interrupted ? exit_interrupted(o.out) : cli_fail_err(&err);
            goto done;
        }
        for (int i = 0; i < o.n_drops; i++)
            if (tlm_drop_select(calib, o.drops[i], drops, &err) != TLM_OK) {
                rc = cli_usage_error("convert", "%s", err.msg);
                goto done;
            }
        /* the union of the specs, now that the scores chose: removing all of
         * a kind is a bad command line, not a failure of the conversion */
        if (tlm_drop_check(m, NULL, 0, drops, &err) != TLM_OK) {
            rc = cli_usage_error("convert", "%s", err.msg);
            goto done;
        }
    }
    params.calib = calib;
    params.drop = drops;
    st = tlm_convert_model(m, path, o.out, &params, on_progress, &progress, &err);
    if (progress.counting) fputc('\n', stderr);
    if (progress.writing) cli_progress_end(&progress.bar);
    if (g_interrupted && st != TLM_OK) { /* a signal after the rename changes nothing */
        rc = exit_interrupted(o.out);
        goto done;
    }
    if (st != TLM_OK) {
        rc = cli_fail_err(&err);
        goto done;
    }
    struct stat sb;
    const double mb = stat(o.out, &sb) == 0 ? (double)sb.st_size / 1e6 : 0.0;
    static char dropped[16384];
    describe_drops(calib, drops, dropped, sizeof dropped);
    const int n_dropped = tlm_drop_list_count(drops);
    printf("wrote %s: %.2f MB, %s%s, %d sublayer%s dropped%s%s\n", o.out, mb, o.type,
           quantized ? (calib && !gguf ? " activation-aware" : " round-to-nearest") : "", n_dropped,
           n_dropped == 1 ? "" : "s", n_dropped ? ": " : "", dropped);
    if (progress.tty) fprintf(stderr, "trimlm: done in %.1f s\n", cli_now_seconds() - t0);
done:
    tlm_calib_free(calib);
    tlm_model_free(m);
    tlm_drop_list_free(drops);
    return rc;
}
