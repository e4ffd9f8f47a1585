/*
 * eval_kld.c — `trimlm eval --ppl FILE --kld REF`: how far MODEL's
 * next-token distribution is from a reference model's (typically the same
 * model before quantization or pruning), on the tokens and positions that
 * --ppl scores (llama-perplexity's chunks; see cmd_eval.c):
 *
 *   for each scored position j (second half of each chunk of --ctx tokens):
 *     lp_ref = log_softmax(ref logits_j), lp = log_softmax(model logits_j)  (double)
 *     kld_j  = sum_v exp(lp_ref[v]) * (lp_ref[v] - lp[v])   = KL(P_ref || P_model)
 *     top-1 agrees when argmax lp_ref == argmax lp
 *   reported: mean kld ± stderr (sample sd / sqrt(count)), median and 99th
 *   percentile (linear interpolation between order statistics, as numpy's
 *   percentile), top-1 agreement in %, and the perplexity of both models.
 *
 * The two models must share a vocabulary: the same n_vocab and the same
 * tokens for the text.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"
#include "model_registry.h"

/* One model with its context and the tokens it makes of the text. */
typedef struct kld_side {
    const char *arg;
    tlm_model *model;
    tlm_context *ctx;
    int32_t *tokens;
    int32_t n_tokens;
    int32_t n_vocab;
    double nll_sum, nll2_sum;
} kld_side;

static int load_side(kld_side *s, const char *arg, const eval_options *o, const char *text,
                     size_t text_len, tlm_error *err) {
    s->arg = arg;
    s->model = load_model_arg(arg, err);
    if (!s->model) return cli_fail_err(err);
    tlm_model_info info;
    tlm_model_get_info(s->model, &info);
    s->n_vocab = info.n_vocab;
    s->tokens = eval_tokenize(s->model, text, text_len, tlm_model_adds_bos(s->model), &s->n_tokens, err);
    if (!s->tokens) return cli_fail("%s: %s", o->ppl_file, err->msg);
    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = (int32_t)o->ctx;
    cp.n_batch = (int32_t)(o->batch > 0 && o->batch < o->ctx ? o->batch : o->ctx);
    if (o->threads > 0) cp.n_threads = (int32_t)o->threads;
    cp.kv_type = o->kv_type;
    s->ctx = tlm_context_new(s->model, &cp, err);
    if (!s->ctx) return cli_fail_err(err);
    return 0;
}

static void free_side(kld_side *s) {
    free(s->tokens);
    tlm_context_free(s->ctx);
    tlm_model_free(s->model);
}

/* Decodes chunk[0..n_ctx) (its first token replaced by bos when bos >= 0)
 * batch by batch and copies the logits of positions first..n_ctx-2 to
 * rows ((n_ctx-1-first) x n_vocab). */
static tlm_status decode_chunk_rows(kld_side *s, const int32_t *chunk, int32_t n_ctx, int32_t bos,
                                    int32_t first, float *rows, tlm_error *err) {
    int32_t *tokens = malloc((size_t)n_ctx * sizeof *tokens);
    if (!tokens) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(tokens, chunk, (size_t)n_ctx * sizeof *tokens);
    if (bos >= 0) tokens[0] = bos;
    tlm_context_reset(s->ctx);
    /* tlm_decode splits a call into forward steps of n_batch tokens and keeps
     * every row when asked; one call per half keeps the first half's logits
     * out of memory. */
    tlm_status st = tlm_decode(s->ctx, tokens, first, false, err);
    if (st == TLM_OK) st = tlm_decode(s->ctx, tokens + first, n_ctx - first, true, err);
    free(tokens);
    if (st != TLM_OK) return st;
    const size_t V = (size_t)s->n_vocab;
    for (int32_t j = first; j <= n_ctx - 2; j++) {
        const float *logits = tlm_get_logits(s->ctx, j - first);
        if (!logits) return cli_seterr(err, TLM_ERR_ARG, "the model kept no logits for position %d", j);
        memcpy(rows + (size_t)(j - first) * V, logits, V * sizeof(float));
    }
    return TLM_OK;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted[0..n), interpolated linearly. */
static double percentile(const double *sorted, int64_t n, double p) {
    double at = p / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(at);
    if (lo >= n - 1) return sorted[n - 1];
    double frac = at - (double)lo;
    return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

static void side_ppl(const kld_side *s, int64_t count, double *ppl, double *ppl_stderr) {
    double mean = s->nll_sum / (double)count;
    double var = s->nll2_sum / (double)count - mean * mean;
    *ppl = exp(mean);
    *ppl_stderr = var > 0 && count > 1 ? sqrt(var / (double)(count - 1)) * *ppl : 0.0;
}

int eval_kld(const eval_options *o) {
    tlm_error err = {0};
    size_t text_len = 0;
    char *text = cli_read_file(o->ppl_file, CLI_MAX_DATA_BYTES, &text_len, &err);
    if (!text) return cli_fail_err(&err);

    kld_side model = {0}, ref = {0};
    float *ref_rows = NULL, *model_rows = NULL;
    double *klds = NULL;
    int rc = CLI_EXIT_FAIL;
    const int32_t n_ctx = (int32_t)o->ctx;
    double t_start = cli_now_seconds();

    if (load_side(&model, o->model, o, text, text_len, &err)) goto out;
    if (load_side(&ref, o->kld_model, o, text, text_len, &err)) goto out;

    /* ---- one vocabulary */
    if (model.n_vocab != ref.n_vocab) {
        cli_fail("%s and %s do not share a vocabulary (%d and %d tokens): KL divergence needs the same one",
                 o->model, o->kld_model, model.n_vocab, ref.n_vocab);
        goto out;
    }
    if (model.n_tokens != ref.n_tokens ||
        memcmp(model.tokens, ref.tokens, (size_t)model.n_tokens * sizeof *model.tokens) != 0) {
        int32_t i = 0;
        while (i < model.n_tokens && i < ref.n_tokens && model.tokens[i] == ref.tokens[i]) i++;
        cli_fail("%s and %s do not share a vocabulary: they tokenize %s differently (from token %d on)",
                 o->model, o->kld_model, o->ppl_file, i);
        goto out;
    }
    const int32_t n_vocab = model.n_vocab, n_tokens = model.n_tokens;
    if (n_tokens < 2 * n_ctx) {
        cli_fail("%s: too short: it has %d tokens, and --kld with --ctx %d needs at least %d",
                 o->ppl_file, n_tokens, n_ctx, 2 * n_ctx);
        goto out;
    }
    int32_t n_chunk = n_tokens / n_ctx;
    if (o->chunks > 0 && o->chunks < n_chunk) n_chunk = (int32_t)o->chunks;
    const int32_t first = n_ctx / 2, n_rows = n_ctx - 1 - first;
    int32_t bos = tlm_model_adds_bos(model.model) ? tlm_token_bos(model.model) : -1;

    ref_rows = malloc((size_t)n_rows * (size_t)n_vocab * sizeof *ref_rows);
    model_rows = malloc((size_t)n_rows * (size_t)n_vocab * sizeof *model_rows);
    klds = malloc((size_t)n_chunk * (size_t)n_rows * sizeof *klds);
    if (!ref_rows || !model_rows || !klds) { cli_fail("out of memory for the logits of one chunk"); goto out; }

    int64_t count = 0, agree = 0;
    bool progress = cli_stderr_is_tty();
    for (int32_t c = 0; c < n_chunk; c++) {
        const int32_t *chunk = model.tokens + (size_t)c * (size_t)n_ctx;
        if (decode_chunk_rows(&ref, chunk, n_ctx, bos, first, ref_rows, &err) != TLM_OK ||
            decode_chunk_rows(&model, chunk, n_ctx, bos, first, model_rows, &err) != TLM_OK) {
            cli_fail_err(&err);
            goto out;
        }
        for (int32_t r = 0; r < n_rows; r++) {
            const float *lr = ref_rows + (size_t)r * (size_t)n_vocab;
            const float *lm = model_rows + (size_t)r * (size_t)n_vocab;
            int32_t target = chunk[first + r + 1];
            if (target < 0 || target >= n_vocab) { cli_fail("token id %d is outside the vocabulary", target); goto out; }
            double lse_r = eval_log_sum_exp(lr, n_vocab), lse_m = eval_log_sum_exp(lm, n_vocab);
            double kld = 0.0;
            for (int32_t v = 0; v < n_vocab; v++) {
                double lp_r = (double)lr[v] - lse_r, lp_m = (double)lm[v] - lse_m;
                kld += exp(lp_r) * (lp_r - lp_m);
            }
            klds[count++] = kld > 0.0 ? kld : 0.0; /* rounding can leave -1e-17 */
            agree += argmax(lr, n_vocab) == argmax(lm, n_vocab);
            double nll_r = lse_r - (double)lr[target], nll_m = lse_m - (double)lm[target];
            ref.nll_sum += nll_r;
            ref.nll2_sum += nll_r * nll_r;
            model.nll_sum += nll_m;
            model.nll2_sum += nll_m * nll_m;
        }
        if (progress) {
            double elapsed = cli_now_seconds() - t_start;
            fprintf(stderr, "\r\033[Kchunk %d/%d (%.1f s elapsed, about %.0f s left)", c + 1, n_chunk,
                    elapsed, elapsed / (c + 1) * (n_chunk - c - 1));
            fflush(stderr);
        }
    }
    if (progress) fputs("\r\033[K", stderr);

    double sum = 0.0, sum2 = 0.0;
    for (int64_t i = 0; i < count; i++) { sum += klds[i]; sum2 += klds[i] * klds[i]; }
    double mean = sum / (double)count;
    double var = count > 1 ? (sum2 - (double)count * mean * mean) / (double)(count - 1) : 0.0;
    double kld_stderr = var > 0 ? sqrt(var / (double)count) : 0.0;
    qsort(klds, (size_t)count, sizeof *klds, cmp_double);
    double median = percentile(klds, count, 50.0), p99 = percentile(klds, count, 99.0);
    double top1 = 100.0 * (double)agree / (double)count;
    double ppl, ppl_err, ppl_ref, ppl_ref_err;
    side_ppl(&model, count, &ppl, &ppl_err);
    side_ppl(&ref, count, &ppl_ref, &ppl_ref_err);
    double seconds = cli_now_seconds() - t_start;

    if (o->json) {
        cJSON *obj = cJSON_CreateObject();
        char *json = NULL;
        if (obj) {
            cJSON_AddNumberToObject(obj, "kld_mean", mean);
            cJSON_AddNumberToObject(obj, "kld_stderr", kld_stderr);
            cJSON_AddNumberToObject(obj, "kld_median", median);
            cJSON_AddNumberToObject(obj, "kld_p99", p99);
            cJSON_AddNumberToObject(obj, "top1_agreement_pct", top1);
            cJSON_AddNumberToObject(obj, "ppl", ppl);
            cJSON_AddNumberToObject(obj, "ppl_stderr", ppl_err);
            cJSON_AddNumberToObject(obj, "ppl_ref", ppl_ref);
            cJSON_AddNumberToObject(obj, "ppl_ref_stderr", ppl_ref_err);
            cJSON_AddNumberToObject(obj, "tokens_scored", (double)count);
            cJSON_AddNumberToObject(obj, "chunks", n_chunk);
            cJSON_AddNumberToObject(obj, "ctx", n_ctx);
            cJSON_AddNumberToObject(obj, "seconds", seconds);
            cJSON_AddStringToObject(obj, "model", o->model);
            cJSON_AddStringToObject(obj, "ref_model", o->kld_model);
            json = cJSON_PrintUnformatted(obj);
            cJSON_Delete(obj);
        }
        if (!json) { cli_fail("out of memory writing JSON"); goto out; }
        printf("%s\n", json);
        cJSON_free(json);
    } else {
        printf("KLD = %.6f +/- %.6f (mean of %lld tokens)\n", mean, kld_stderr, (long long)count);
        printf("KLD median = %.6f, 99th percentile = %.6f\n", median, p99);
        printf("top-1 agreement = %.3f %%\n", top1);
        printf("PPL = %.4f +/- %.5f (%s)\n", ppl, ppl_err, o->model);
        printf("PPL = %.4f +/- %.5f (reference %s)\n", ppl_ref, ppl_ref_err, o->kld_model);
    }
    rc = CLI_EXIT_OK;

out:
    free(klds);
    free(model_rows);
    free(ref_rows);
    free_side(&ref);
    free_side(&model);
    tlm_free_string(text);
    return rc;
}
