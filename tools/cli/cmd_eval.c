/*
 * cmd_eval.c — `trimlm eval`: the command line, and --ppl, the perplexity of
 * a text file computed the way llama.cpp's llama-perplexity does so that the
 * numbers compare:
 *
 *   tokens = tokenize(file, add_bos = model adds BOS)
 *   n_chunk = min(n_tokens / ctx, --chunks)       (needs n_tokens >= 2*ctx)
 *   chunk i = tokens[i*ctx, (i+1)*ctx), its first token replaced by BOS when
 *             the model adds BOS; KV cache emptied; all logits kept
 *   scored: positions j = ctx/2 .. ctx-2, nll_j = -log softmax(logits_j)[tok_{j+1}]
 *   ppl = exp(mean nll), stderr = sqrt(var(nll) / (count-1)) * ppl
 *
 * --kld (eval_kld.c) and --mc (eval_mc.c) are the other modes.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"
#include "model_registry.h"

static const char eval_usage[] =
    "usage: trimlm eval -m MODEL --ppl FILE [--kld REF_MODEL] [options]\n"
    "       trimlm eval -m MODEL --mc FILE --task TASK [options]\n"
    "\n"
    "--ppl: the perplexity of MODEL on a text file (llama-perplexity's method:\n"
    "chunks of --ctx tokens, the second half of each chunk scored). With --kld,\n"
    "also the KL divergence of MODEL's next-token distribution from REF_MODEL's\n"
    "on the same tokens (mean, median, 99th percentile, top-1 agreement).\n"
    "--mc: multiple-choice accuracy by log-likelihood, as lm-evaluation-harness\n"
    "scores it: acc (sum of log p of the choice's tokens) and acc_norm (that sum\n"
    "divided by the choice's length in bytes).\n"
    "\n"
    "  -m, --model MODEL   GGUF file, Hugging Face directory, registry name or URL\n"
    "      --ppl FILE      the text to score (e.g. wikitext-2 wiki.test.raw)\n"
    "      --kld REF       reference model for KL divergence (same vocabulary)\n"
    "  -c, --ctx N         tokens per chunk (default 512)\n"
    "      --chunks N      score at most N chunks (default: all)\n"
    "      --mc FILE       multiple-choice items, one JSON object per line\n"
    "      --task TASK     hellaswag ({ctx, endings, label}), arc or boolq\n"
    "                      ({query, choices, gold}), piqa ({goal, sol1, sol2})\n"
    "      --labels FILE   PIQA's labels, one 0/1 per line (default: X-labels.lst\n"
    "                      next to X.jsonl)\n"
    "      --limit N       score the first N items only\n"
    "      --details FILE  write one JSON line per item (choice log-likelihoods)\n"
    "  -b, --batch B       tokens per forward step (default: ctx for --ppl, 512 for --mc)\n"
    "  -t, --threads N     threads (default: physical cores)\n"
    "      --kv TYPE       KV cache: f16 (default), f32 or int8\n"
    "      --json          print one JSON object on stdout instead of text\n"
    "  -h, --help          this help\n"
    "\n"
    "examples:\n"
    "  trimlm eval -m model.tlm --ppl wiki.test.raw --kld smollm2-135m-instruct\n"
    "  trimlm eval -m smollm2-135m-instruct --mc hellaswag_val_first2000.jsonl --task hellaswag\n";

double eval_log_sum_exp(const float *logits, int32_t n_vocab) {
    float max_logit = logits[0];
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > max_logit) max_logit = logits[i];
    double sum_exp = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum_exp += exp((double)logits[i] - max_logit);
    return (double)max_logit + log(sum_exp);
}

double eval_token_nll(const float *logits, int32_t n_vocab, int32_t target) {
    return eval_log_sum_exp(logits, n_vocab) - (double)logits[target];
}

int32_t *eval_tokenize(const tlm_model *m, const char *text, size_t len, bool add_bos, int32_t *n,
                       tlm_error *err) {
    if (len > INT32_MAX / 2) {
        cli_seterr(err, TLM_ERR_ARG, "a text of %zu bytes is too large to tokenize", len);
        return NULL;
    }
    int32_t cap = (int32_t)len + 2;
    int32_t *tokens = malloc((size_t)cap * sizeof *tokens);
    if (!tokens) { cli_seterr(err, TLM_ERR_NOMEM, "out of memory tokenizing"); return NULL; }
    int32_t got = tlm_tokenize(m, text, len, add_bos, false, tokens, cap, err);
    if (got > cap) {
        int32_t *grown = realloc(tokens, (size_t)got * sizeof *tokens);
        if (!grown) { free(tokens); cli_seterr(err, TLM_ERR_NOMEM, "out of memory tokenizing"); return NULL; }
        tokens = grown;
        got = tlm_tokenize(m, text, len, add_bos, false, tokens, got, err);
    }
    if (got < 0) { free(tokens); return NULL; }
    *n = got;
    return tokens;
}

/* Returns 0 to go on, else an exit code (help printed, or a usage error). */
static int parse_eval_args(int argc, char **argv, eval_options *o, bool *done) {
    *o = (eval_options){.ctx = 512};
    static const char positive[] = "a positive integer";
    cli_args a;
    cli_args_init(&a, "eval", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(eval_usage, stdout); *done = true; return 0; }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--ppl")) o->ppl_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--kld")) o->kld_model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--mc")) o->mc_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--task")) o->task = cli_value(&a);
        else if (cli_flag(&a, NULL, "--labels")) o->labels_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--details")) o->details_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--limit")) cli_int(&a, 1, INT32_MAX, positive, &o->limit);
        else if (cli_flag(&a, "-c", "--ctx")) cli_int(&a, 4, 1 << 20, "an integer >= 4", &o->ctx);
        else if (cli_flag(&a, NULL, "--chunks")) cli_int(&a, 1, INT32_MAX, positive, &o->chunks);
        else if (cli_flag(&a, "-b", "--batch")) cli_int(&a, 1, 1 << 20, positive, &o->batch);
        else if (cli_flag(&a, "-t", "--threads")) cli_threads(&a, &o->threads);
        else if (cli_flag(&a, NULL, "--kv")) cli_kv_type(&a, &o->kv_type);
        else if (cli_flag(&a, NULL, "--json")) o->json = true;
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("eval", "no model given (-m MODEL)");
    if (o->mc_file && o->ppl_file)
        return cli_usage_error("eval", "--mc and --ppl are different evaluations: give one of them");
    if (!o->ppl_file && !o->mc_file)
        return cli_usage_error("eval", "nothing to evaluate (--ppl FILE or --mc FILE --task TASK)");
    if (o->kld_model && !o->ppl_file)
        return cli_usage_error("eval", "--kld needs the text to compare on (--ppl FILE)");
    if (o->mc_file) {
        static const char *const tasks[] = {"hellaswag", "arc", "piqa", "boolq"};
        bool known = false;
        for (size_t i = 0; o->task && i < sizeof tasks / sizeof tasks[0]; i++)
            known |= strcmp(o->task, tasks[i]) == 0;
        if (!o->task) return cli_usage_error("eval", "--mc needs --task hellaswag, arc, piqa or boolq");
        if (!known)
            return cli_usage_error("eval", "invalid value '%s' for --task (expected hellaswag, arc, piqa or boolq)",
                                   o->task);
    } else if (o->task || o->labels_file || o->limit || o->details_file) {
        return cli_usage_error("eval", "--task, --labels, --limit and --details go with --mc");
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    eval_options o;
    bool done = false;
    int rc = parse_eval_args(argc, argv, &o, &done);
    if (rc || done) return rc;
    if (o.mc_file) return eval_mc(&o);
    if (o.kld_model) return eval_kld(&o);

    tlm_error err = {0};
    size_t text_len = 0;
    char *text = cli_read_file(o.ppl_file, CLI_MAX_DATA_BYTES, &text_len, &err);
    if (!text) return cli_fail_err(&err);

    tlm_model *model = NULL;
    tlm_context *ctx = NULL;
    int32_t *tokens = NULL;
    rc = CLI_EXIT_FAIL;
    const int32_t n_ctx = (int32_t)o.ctx;
    double t_start = cli_now_seconds();

    model = load_model_arg(o.model, &err);
    if (!model) { cli_fail_err(&err); goto out; }
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    const int32_t n_vocab = info.n_vocab;

    /* ---- tokens of the whole file */
    bool add_bos = tlm_model_adds_bos(model);
    int32_t bos = tlm_token_bos(model);
    if (text_len > INT32_MAX / 2) { cli_fail("%s: the file is too large (%zu bytes)", o.ppl_file, text_len); goto out; }
    int32_t cap = (int32_t)text_len + 2;
    tokens = malloc((size_t)cap * sizeof *tokens);
    if (!tokens) { cli_fail("out of memory tokenizing %s", o.ppl_file); goto out; }
    int32_t n_tokens = tlm_tokenize(model, text, text_len, add_bos, false, tokens, cap, &err);
    if (n_tokens > cap) {
        int32_t *grown = realloc(tokens, (size_t)n_tokens * sizeof *tokens);
        if (!grown) { cli_fail("out of memory tokenizing %s", o.ppl_file); goto out; }
        tokens = grown;
        n_tokens = tlm_tokenize(model, text, text_len, add_bos, false, tokens, n_tokens, &err);
    }
    if (n_tokens < 0) { cli_fail_err(&err); goto out; }
    if (n_tokens < 2 * n_ctx) {
        cli_fail("%s: too short: it has %d tokens, and perplexity with --ctx %d needs at least %d",
                 o.ppl_file, n_tokens, n_ctx, 2 * n_ctx);
        goto out;
    }
    int32_t n_chunk = n_tokens / n_ctx;
    if (o.chunks > 0 && o.chunks < n_chunk) n_chunk = (int32_t)o.chunks;

    /* ---- context sized to one chunk */
    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = (int32_t)(o.batch > 0 && o.batch < n_ctx ? o.batch : n_ctx);
    if (o.threads > 0) cp.n_threads = (int32_t)o.threads;
    cp.kv_type = o.kv_type;
    ctx = tlm_context_new(model, &cp, &err);
    if (!ctx) { cli_fail_err(&err); goto out; }
    cli_warn_ctx_beyond_training(model, n_ctx, o.model);
    const int32_t n_batch = cp.n_batch;

    /* ---- chunks */
    const int32_t first = n_ctx / 2;
    double nll_sum = 0.0, nll2_sum = 0.0;
    int64_t count = 0;
    bool progress = cli_stderr_is_tty();
    for (int32_t c = 0; c < n_chunk; c++) {
        const int32_t *chunk = tokens + (size_t)c * (size_t)n_ctx;
        tlm_context_reset(ctx);
        for (int32_t at = 0; at < n_ctx; at += n_batch) {
            int32_t n = n_ctx - at < n_batch ? n_ctx - at : n_batch;
            int32_t saved = chunk[at];
            if (at == 0 && add_bos && bos >= 0) tokens[(size_t)c * (size_t)n_ctx] = bos;
            tlm_status st = tlm_decode(ctx, chunk + at, n, true, &err);
            tokens[(size_t)c * (size_t)n_ctx + (size_t)at] = saved;
            if (st != TLM_OK) { cli_fail_err(&err); goto out; }
            /* score this batch's positions j in [first, n_ctx-2] */
            for (int32_t k = 0; k < n; k++) {
                int32_t j = at + k;
                if (j < first || j > n_ctx - 2) continue;
                const float *logits = tlm_get_logits(ctx, k);
                if (!logits) { cli_fail("the model kept no logits for position %d", j); goto out; }
                int32_t target = chunk[j + 1];
                if (target < 0 || target >= n_vocab) { cli_fail("token id %d is outside the vocabulary", target); goto out; }
                double nll = eval_token_nll(logits, n_vocab, target);
                nll_sum += nll;
                nll2_sum += nll * nll;
                count++;
            }
        }
        if (progress) {
            double elapsed = cli_now_seconds() - t_start;
            fprintf(stderr, "chunk %d/%d: ppl so far %.4f (%.1f s elapsed, about %.0f s left)\n",
                    c + 1, n_chunk, exp(nll_sum / (double)count), elapsed,
                    elapsed / (c + 1) * (n_chunk - c - 1));
        }
    }

    double mean = nll_sum / (double)count;
    double ppl = exp(mean);
    double var = nll2_sum / (double)count - mean * mean;
    double ppl_stderr = var > 0 && count > 1 ? sqrt(var / (double)(count - 1)) * ppl : 0.0;
    double seconds = cli_now_seconds() - t_start;

    if (o.json) {
        cJSON *obj = cJSON_CreateObject();
        char *json = NULL;
        if (obj) {
            cJSON_AddNumberToObject(obj, "ppl", ppl);
            cJSON_AddNumberToObject(obj, "ppl_stderr", ppl_stderr);
            cJSON_AddNumberToObject(obj, "tokens_scored", (double)count);
            cJSON_AddNumberToObject(obj, "seconds", seconds);
            cJSON_AddNumberToObject(obj, "chunks", n_chunk);
            cJSON_AddNumberToObject(obj, "ctx", n_ctx);
            json = cJSON_PrintUnformatted(obj);
            cJSON_Delete(obj);
        }
        if (!json) { cli_fail("out of memory writing JSON"); goto out; }
        printf("%s\n", json);
        cJSON_free(json);
    } else {
        printf("PPL = %.4f +/- %.5f (%lld tokens scored)\n", ppl, ppl_stderr, (long long)count);
    }
    rc = CLI_EXIT_OK;

out:
    free(tokens);
    tlm_context_free(ctx);
    tlm_model_free(model);
    tlm_free_string(text);
    return rc;
}
