/* cmd_run.c — `trimlm run`: one prompt in, a streamed continuation out. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model_registry.h"

static const char run_usage[] =
    "usage: trimlm run -m MODEL (-p PROMPT | -f FILE) [options]\n"
    "\n"
    "Generates a continuation of the prompt and streams it to stdout.\n"
    "\n"
    "  -m, --model MODEL       GGUF file, Hugging Face directory, registry name or URL\n"
    "  -p, --prompt TEXT       the prompt\n"
    "  -f, --file FILE         read the prompt from FILE ('-' = stdin)\n"
    "  -n, --n-predict N       tokens to generate at most (default 128)\n";
/* then cli_gen_usage (sampling and context flags), then: */
static const char run_usage_tail[] =
    "      --chat              wrap the prompt in the model's chat template\n"
    "      --no-chat           use the prompt as is\n"
    "                          (default: --chat when the model has a chat template)\n"
    "      --system TEXT       system message for --chat\n"
    "      --verbose           print timings on stderr even when it is not a terminal\n"
    "  -h, --help              this help\n";

typedef struct run_options {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    cli_gen_options gen; /* -n, sampling, -t, -c */
    int chat; /* -1 = decide from the model, 0 = off, 1 = on */
    bool verbose;
} run_options;

/* Returns 0 to go on, else an exit code (help printed, or a usage error). */
static int parse_run_args(int argc, char **argv, run_options *o, bool *done) {
    *o = (run_options){.gen = cli_gen_defaults(), .chat = -1};
    cli_args a;
    cli_args_init(&a, "run", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) {
            fputs(run_usage, stdout);
            fputs(cli_gen_usage, stdout);
            fputs(run_usage_tail, stdout);
            *done = true;
            return 0;
        }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, "-p", "--prompt")) o->prompt = cli_value(&a);
        else if (cli_flag(&a, "-f", "--file")) o->prompt_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--system")) o->system = cli_value(&a);
        else if (cli_gen_flag(&a, &o->gen)) {}
        else if (cli_flag(&a, NULL, "--chat")) o->chat = 1;
        else if (cli_flag(&a, NULL, "--no-chat")) o->chat = 0;
        else if (cli_flag(&a, NULL, "--verbose")) o->verbose = true;
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("run", "no model given (-m MODEL)");
    if (o->prompt && o->prompt_file) return cli_usage_error("run", "give -p or -f, not both");
    if (!o->prompt && !o->prompt_file) return cli_usage_error("run", "no prompt given (-p PROMPT or -f FILE)");
    if (o->prompt && !o->prompt[0]) return cli_usage_error("run", "the prompt given with -p is empty");
    return 0;
}

/* The markers tlm_chat_render recognises; anything else renders as ChatML. */
static bool chat_template_recognised(const char *tmpl) {
    static const char *markers[] = {"<|im_start|>", "<|start_header_id|>", "[INST]", "<|user|>",
                                    "<start_of_turn>"};
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (strstr(tmpl, markers[i])) return true;
    return false;
}

/* The prompt's tokens: with msgs, rendered by the chat template, whose
 * markers become special tokens while the messages stay plain text (a marker
 * typed in the prompt is text); without, the raw text with BOS when the model
 * wants one. malloc'd (*n ids), or NULL with err set. */
static int32_t *tokenize_prompt(const tlm_model *m, const tlm_chat_message *msgs, size_t n_msgs,
                                const char *text, int32_t *n, tlm_error *err) {
    size_t len = strlen(text);
    int32_t cap = (int32_t)(len < 1000000 ? len + 64 : 1000064), need = -1;
    int32_t *toks = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *grown = realloc(toks, (size_t)cap * sizeof *toks);
        if (!grown) { need = -1; break; }
        toks = grown;
        need = msgs ? tlm_chat_tokenize(m, msgs, n_msgs, true, toks, cap, err)
                    : tlm_tokenize(m, text, len, tlm_model_adds_bos(m), false, toks, cap, err);
        if (need <= cap) break;
        cap = need;
    }
    if (need < 0 || need > cap) {
        if (!toks || err->code == TLM_OK) cli_seterr(err, TLM_ERR_NOMEM, "out of memory tokenizing the prompt");
        free(toks);
        return NULL;
    }
    *n = need;
    return toks;
}

/* Writes bytes to stdout and flushes, so that the text streams. */
static void emit(const char *s, size_t n) {
    if (n == 0) return;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

int cmd_run(int argc, char **argv) {
    run_options o;
    bool done = false;
    int rc = parse_run_args(argc, argv, &o, &done);
    if (rc || done) return rc;

    tlm_error err = {0};
    char *file_prompt = NULL;
    if (o.prompt_file) {
        size_t len = 0;
        file_prompt = cli_read_file(o.prompt_file, CLI_MAX_SMALL_BYTES, &len, &err);
        if (!file_prompt) return cli_fail_err(&err);
        if (len == 0) { tlm_free_string(file_prompt); return cli_fail("%s: the prompt file is empty", o.prompt_file); }
        if (strlen(file_prompt) != len) {
            tlm_free_string(file_prompt);
            return cli_fail("%s: the prompt file contains NUL bytes", o.prompt_file);
        }
        o.prompt = file_prompt;
    }

    tlm_model *model = NULL;
    tlm_context *ctx = NULL;
    tlm_sampler *sampler = NULL;
    int32_t *prompt_toks = NULL;
    rc = CLI_EXIT_FAIL;

    model = load_model_arg(o.model, &err);
    if (!model) { cli_fail_err(&err); goto out; }

    /* ---- prompt tokens: chat template or raw */
    const char *tmpl = tlm_model_chat_template(model);
    bool use_chat = o.chat == 1 || (o.chat == -1 && tmpl != NULL);
    tlm_chat_message msgs[2];
    size_t n_msgs = 0;
    if (use_chat) {
        if (tmpl && !chat_template_recognised(tmpl))
            fprintf(stderr, "trimlm: warning: the model's chat template is not one trimlm "
                            "knows; using ChatML\n");
        if (o.system) msgs[n_msgs++] = (tlm_chat_message){"system", o.system};
        msgs[n_msgs++] = (tlm_chat_message){"user", o.prompt};
    } else if (o.system) {
        fprintf(stderr, "trimlm: warning: --system is ignored without --chat\n");
    }
    int32_t n_prompt = 0;
    prompt_toks = tokenize_prompt(model, use_chat ? msgs : NULL, n_msgs, o.prompt, &n_prompt, &err);
    if (!prompt_toks) { cli_fail_err(&err); goto out; }
    if (n_prompt == 0) { cli_fail("the prompt tokenizes to nothing"); goto out; }

    /* ---- context and sampler */
    tlm_context_params cp = cli_gen_context_params(&o.gen);
    ctx = tlm_context_new(model, &cp, &err);
    if (!ctx) { cli_fail_err(&err); goto out; }
    cli_warn_ctx_beyond_training(model, o.gen.ctx, o.model);
    int32_t n_ctx = tlm_context_n_ctx(ctx);
    if (n_prompt >= n_ctx) {
        cli_fail("the prompt is %d tokens, which does not fit the context of %d tokens (-c)",
                 n_prompt, n_ctx);
        goto out;
    }
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    tlm_sampler_params sp = cli_gen_sampler_params(&o.gen);
    sampler = tlm_sampler_new(&sp, info.n_vocab, &err);
    if (!sampler) { cli_fail_err(&err); goto out; }
    for (int32_t i = 0; i < n_prompt; i++) tlm_sampler_accept(sampler, prompt_toks[i]);

    /* ---- prefill in batches */
    int32_t n_batch = cp.n_batch > 0 ? cp.n_batch : 512;
    double t0 = cli_now_seconds();
    for (int32_t at = 0; at < n_prompt; at += n_batch) {
        int32_t n = n_prompt - at < n_batch ? n_prompt - at : n_batch;
        if (tlm_decode(ctx, prompt_toks + at, n, false, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
    }
    double t_prefill = cli_now_seconds() - t0;

    /* ---- generation */
    tlm_detok detok;
    tlm_detok_init(&detok, model);
    static char piece[1 << 16]; /* one token's bytes (plus a held-back partial character) */
    int64_t n_gen = 0;
    bool stopped_by_ctx = false;
    t0 = cli_now_seconds();
    while (n_gen < o.gen.n_predict) {
        const float *logits = tlm_get_logits(ctx, -1);
        if (!logits) { cli_fail("the model produced no logits"); goto out; }
        int32_t tok = tlm_sampler_sample(sampler, logits);
        if (tok < 0 || tlm_token_is_eog(model, tok)) break;
        tlm_sampler_accept(sampler, tok);
        n_gen++;
        emit(piece, tlm_detok_push(&detok, tok, piece, sizeof piece));
        if (n_gen >= o.gen.n_predict) break;
        if (tlm_context_pos(ctx) >= n_ctx) { stopped_by_ctx = true; break; }
        if (tlm_decode(ctx, &tok, 1, false, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
    }
    emit(piece, tlm_detok_flush(&detok, piece, sizeof piece));
    double t_gen = cli_now_seconds() - t0;
    fputc('\n', stdout);
    fflush(stdout);
    if (stopped_by_ctx)
        fprintf(stderr, "trimlm: stopped: the context of %d tokens is full (-c)\n", n_ctx);
    if (o.verbose || cli_stderr_is_tty()) {
        fprintf(stderr, "prompt: %d tokens in %.2f s (%.1f tokens/s); generation: %lld tokens in %.2f s (%.1f tokens/s)\n",
                n_prompt, t_prefill, t_prefill > 0 ? n_prompt / t_prefill : 0.0, (long long)n_gen,
                t_gen, t_gen > 0 ? n_gen / t_gen : 0.0);
    }
    rc = CLI_EXIT_OK;

out:
    free(prompt_toks);
    tlm_sampler_free(sampler);
    tlm_context_free(ctx);
    tlm_model_free(model);
    tlm_free_string(file_prompt);
    return rc;
}
