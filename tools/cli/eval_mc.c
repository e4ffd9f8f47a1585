/*
 * eval_mc.c — `trimlm eval --mc FILE --task TASK`: multiple-choice accuracy
 * by log-likelihood, as lm-evaluation-harness scores it.
 *
 * Each item is a context and choices (continuations); the prompts are the
 * harness's:
 *   hellaswag  {ctx, endings[4], label}   ctx                              + " " + ending
 *   arc        {query, choices, gold}     query + "\nAnswer:"              + " " + choice
 *   boolq      {query, choices, gold}     query + "\nAnswer:"              + " " + choice ("no", "yes")
 *   piqa       {goal, sol1, sol2}         "Question: " + goal + "\nAnswer:" + " " + sol
 *              with the label (0 = sol1) on the same line of X-labels.lst
 *
 * Scoring one item:
 *   ctx_tok  = tokenize(context, BOS when the model adds it)
 *   seq_c    = tokenize(context + continuation_c, same BOS)
 *   cont_c   = length of the common prefix of ctx_tok and seq_c: the
 *              continuation's tokens are seq_c[cont_c:], which handles a BPE
 *              merge across the boundary
 *   ll_c     = sum_{j >= cont_c} log softmax(logits(seq_c[:j]))[seq_c[j]]   (double)
 *   acc      : argmax_c ll_c == gold
 *   acc_norm : argmax_c ll_c / bytes(continuation_c) == gold
 * and, to compare with llama.cpp's `llama-perplexity --hellaswag`, which scores
 * the tokens after the prefix shared by all the sequences (length S) by their
 * mean log-probability:
 *   acc_tok  : argmax_c mean_{j >= S} log p(seq_c[j]) == gold
 * Ties go to the first choice. Stderr of an accuracy p over n items:
 * sqrt(p (1-p) / (n-1)), the harness's sample standard error.
 *
 * The shared prefix seq[:S] is decoded once per item; each choice then
 * rewinds the KV cache to S (tlm_context_truncate) and decodes only its own
 * tokens, so the evaluation runs at prefill speed.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "eval.h"
#include "eval_mc_items.h"
#include "model_registry.h"

/* ------------------------------------------------------------- items */

/* X.jsonl -> X-labels.lst in the same directory (PIQA's layout). */
static char *default_labels_path(const char *mc_path) {
    size_t n = strlen(mc_path);
    const char *ext = n >= 6 && strcmp(mc_path + n - 6, ".jsonl") == 0 ? mc_path + n - 6 : mc_path + n;
    size_t stem = (size_t)(ext - mc_path);
    char *p = malloc(stem + sizeof "-labels.lst");
    if (!p) return NULL;
    memcpy(p, mc_path, stem);
    memcpy(p + stem, "-labels.lst", sizeof "-labels.lst");
    return p;
}

/* Reads the items of the --mc file (the first `limit` when limit > 0) and,
 * for PIQA, their labels. */
static tlm_status read_items(const eval_options *o, mc_set *s, tlm_error *err) {
    size_t len = 0;
    char *text = cli_read_file(o->mc_file, CLI_MAX_DATA_BYTES, &len, err);
    if (!text) return err->code;
    tlm_status st = mc_items_parse(text, len, o->task, o->mc_file, o->limit, s, err);
    tlm_free_string(text);
    if (st != TLM_OK || strcmp(o->task, "piqa") != 0) return st;
    char *default_labels = o->labels_file ? NULL : default_labels_path(o->mc_file);
    if (!o->labels_file && !default_labels) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
    const char *labels_path = o->labels_file ? o->labels_file : default_labels;
    text = cli_read_file(labels_path, CLI_MAX_DATA_BYTES, &len, err);
    if (!text) {
        if (!o->labels_file) {
            char why[TLM_ERROR_MSG_MAX];
            snprintf(why, sizeof why, "%s", err->msg);
            cli_seterr(err, TLM_ERR_IO, "PIQA's labels not found (%s); give --labels FILE", why);
        }
        free(default_labels);
        return TLM_ERR_IO;
    }
    st = mc_labels_parse(text, len, labels_path, o->mc_file, s, err);
    tlm_free_string(text);
    free(default_labels);
    return st;
}

/* ----------------------------------------------------------- scoring */

/* What scoring one item gives, per choice. */
typedef struct mc_choice_score {
    double ll;         /* sum of log p over the continuation's tokens */
    int32_t n_cont;    /* its tokens */
    double ll_shared;  /* sum of log p over the tokens after the shared prefix */
    int32_t n_shared;  /* those tokens */
    size_t bytes;      /* bytes of the continuation (" " + choice) */
} mc_choice_score;

typedef struct mc_scorer {
    const tlm_model *model;
    tlm_context *ctx;
    int32_t n_vocab;
    bool add_bos;
    /* per-item scratch, grown as needed */
    int32_t **seqs;   /* (n_choices) token sequences context + continuation */
    int32_t *lens;
    int32_t *conts;
    double **lps;     /* (n_choices) log p of seq_c[j] at j (0 where not computed) */
    int32_t *lp_caps;
    int cap_choices;
    int64_t tokens_decoded;
} mc_scorer;

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = 0;
    while (n < na && n < nb && a[n] == b[n]) n++;
    return n;
}

static tlm_status grow_choices(mc_scorer *sc, int n, tlm_error *err) {
    if (n <= sc->cap_choices) return TLM_OK;
    int32_t **seqs = realloc(sc->seqs, (size_t)n * sizeof *seqs);
    if (seqs) sc->seqs = seqs;
    double **lps = realloc(sc->lps, (size_t)n * sizeof *lps);
    if (lps) sc->lps = lps;
    int32_t *lens = realloc(sc->lens, (size_t)n * sizeof *lens);
    if (lens) sc->lens = lens;
    int32_t *conts = realloc(sc->conts, (size_t)n * sizeof *conts);
    if (conts) sc->conts = conts;
    int32_t *caps = realloc(sc->lp_caps, (size_t)n * sizeof *caps);
    if (caps) sc->lp_caps = caps;
    if (!seqs || !lps || !lens || !conts || !caps) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
    for (int c = sc->cap_choices; c < n; c++) { sc->seqs[c] = NULL; sc->lps[c] = NULL; sc->lp_caps[c] = 0; }
    sc->cap_choices = n;
    return TLM_OK;
}

/* Tokenizes an item's sequences into sc; *max_len gets the longest. */
static tlm_status tokenize_item(mc_scorer *sc, const mc_item *it, int32_t *max_len, tlm_error *err) {
    if (grow_choices(sc, it->n_choices, err) != TLM_OK) return err->code;
    int32_t n_ctx_tok = 0;
    int32_t *ctx_tok = eval_tokenize(sc->model, it->context, strlen(it->context), sc->add_bos, &n_ctx_tok, err);
    if (!ctx_tok) return err->code;
    *max_len = 0;
    for (int c = 0; c < it->n_choices; c++) {
        char *full = mc_concat3(it->context, it->continuations[c], "");
        if (!full) { free(ctx_tok); return cli_seterr(err, TLM_ERR_NOMEM, "out of memory"); }
        free(sc->seqs[c]);
        sc->seqs[c] = eval_tokenize(sc->model, full, strlen(full), sc->add_bos, &sc->lens[c], err);
        free(full);
        if (!sc->seqs[c]) { free(ctx_tok); return err->code; }
        int32_t cont = common_prefix(ctx_tok, n_ctx_tok, sc->seqs[c], sc->lens[c]);
        /* at least one token scored, and none without a token before it */
        if (cont >= sc->lens[c]) cont = sc->lens[c] - 1;
        if (cont < 1) cont = 1;
        if (sc->lens[c] < 2) {
            free(ctx_tok);
            return cli_seterr(err, TLM_ERR_FORMAT, "choice %d makes a single token: nothing to score it after", c);
        }
        sc->conts[c] = cont;
        if (sc->lens[c] > *max_len) *max_len = sc->lens[c];
        if (sc->lens[c] > sc->lp_caps[c]) {
            double *grown = realloc(sc->lps[c], (size_t)sc->lens[c] * sizeof *grown);
            if (!grown) { free(ctx_tok); return cli_seterr(err, TLM_ERR_NOMEM, "out of memory"); }
            sc->lps[c] = grown;
            sc->lp_caps[c] = sc->lens[c];
        }
    }
    free(ctx_tok);
    return TLM_OK;
}

/* log p(seq_c[j]) for every choice whose token j follows logits row `logits`
 * (the row of position j-1 shared by every sequence). */
static void shared_row_lps(mc_scorer *sc, int n_choices, const float *logits, int32_t j) {
    double lse = eval_log_sum_exp(logits, sc->n_vocab);
    for (int c = 0; c < n_choices; c++)
        if (j < sc->lens[c]) sc->lps[c][j] = (double)logits[sc->seqs[c][j]] - lse;
}

/* Scores the item whose sequences tokenize_item() prepared. */
static tlm_status score_item(mc_scorer *sc, const mc_item *it, mc_choice_score *out, tlm_error *err) {
    const int nc = it->n_choices;
    int32_t shared = sc->lens[0], min_len = sc->lens[0], min_cont = sc->conts[0];
    for (int c = 1; c < nc; c++) {
        shared = common_prefix(sc->seqs[0], shared, sc->seqs[c], sc->lens[c]);
        if (sc->lens[c] < min_len) min_len = sc->lens[c];
        if (sc->conts[c] < min_cont) min_cont = sc->conts[c];
    }
    if (shared > min_len - 1) shared = min_len - 1; /* every choice keeps a token to score */
    if (shared < 1)
        return cli_seterr(err, TLM_ERR_FORMAT, "the choices share no token to start from");
    /* logits are needed from position first-1 on */
    int32_t first = shared < min_cont ? shared : min_cont;
    const int32_t *seq0 = sc->seqs[0];
    tlm_context_reset(sc->ctx);
    tlm_status st = TLM_OK;
    if (first - 1 > 0) st = tlm_decode(sc->ctx, seq0, first - 1, false, err);
    if (st == TLM_OK) st = tlm_decode(sc->ctx, seq0 + first - 1, shared - first + 1, true, err);
    if (st != TLM_OK) return st;
    sc->tokens_decoded += shared;
    for (int32_t p = first - 1; p < shared; p++) {
        const float *logits = tlm_get_logits(sc->ctx, p - (first - 1));
        if (!logits) return cli_seterr(err, TLM_ERR_ARG, "the model kept no logits");
        shared_row_lps(sc, nc, logits, p + 1);
    }
    for (int c = 0; c < nc; c++) {
        const int32_t *seq = sc->seqs[c];
        int32_t n_own = sc->lens[c] - 1 - shared; /* the last token needs no logits */
        if (n_own > 0) {
            tlm_context_truncate(sc->ctx, shared);
            st = tlm_decode(sc->ctx, seq + shared, n_own, true, err);
            if (st != TLM_OK) return st;
            sc->tokens_decoded += n_own;
            for (int32_t k = 0; k < n_own; k++) {
                const float *logits = tlm_get_logits(sc->ctx, k);
                if (!logits) return cli_seterr(err, TLM_ERR_ARG, "the model kept no logits");
                int32_t j = shared + k + 1;
                sc->lps[c][j] = (double)logits[seq[j]] - eval_log_sum_exp(logits, sc->n_vocab);
            }
        }
        mc_choice_score *s = &out[c];
        *s = (mc_choice_score){.bytes = strlen(it->continuations[c])};
        for (int32_t j = sc->conts[c]; j < sc->lens[c]; j++) { s->ll += sc->lps[c][j]; s->n_cont++; }
        for (int32_t j = shared; j < sc->lens[c]; j++) { s->ll_shared += sc->lps[c][j]; s->n_shared++; }
    }
    return TLM_OK;
}

static void free_scorer(mc_scorer *sc) {
    for (int c = 0; c < sc->cap_choices; c++) { free(sc->seqs[c]); free(sc->lps[c]); }
    free(sc->seqs);
    free(sc->lps);
    free(sc->lens);
    free(sc->conts);
    free(sc->lp_caps);
    tlm_context_free(sc->ctx);
}

/* The index of the largest value; ties go to the first. */
static int argmax_score(const mc_choice_score *s, int n, int kind) {
    int best = 0;
    double best_v = -INFINITY;
    for (int c = 0; c < n; c++) {
        double v = kind == 0 ? s[c].ll
                 : kind == 1 ? s[c].ll / (double)(s[c].bytes ? s[c].bytes : 1)
                             : s[c].ll_shared / (double)s[c].n_shared;
        if (c == 0 || v > best_v) { best = c; best_v = v; }
    }
    return best;
}

static double acc_stderr(double p, int64_t n) {
    return n > 1 ? sqrt(p * (1.0 - p) / (double)(n - 1)) : 0.0;
}

/* One JSON line per item for --details. */
static bool write_details_line(FILE *f, const mc_item *it, const mc_choice_score *s, const mc_scorer *sc,
                               const int pred[3]) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return false;
    cJSON_AddNumberToObject(o, "line", (double)it->line);
    cJSON_AddNumberToObject(o, "gold", it->gold);
    cJSON_AddNumberToObject(o, "pred", pred[0]);
    cJSON_AddNumberToObject(o, "pred_norm", pred[1]);
    cJSON_AddNumberToObject(o, "pred_tok", pred[2]);
    cJSON *ll = cJSON_AddArrayToObject(o, "ll");
    cJSON *nt = cJSON_AddArrayToObject(o, "n_tokens");
    cJSON *by = cJSON_AddArrayToObject(o, "bytes");
    cJSON *cs = cJSON_AddArrayToObject(o, "cont_start");
    cJSON *sq = cJSON_AddArrayToObject(o, "tokens");
    for (int c = 0; c < it->n_choices; c++) {
        cJSON_AddItemToArray(ll, cJSON_CreateNumber(s[c].ll));
        cJSON_AddItemToArray(nt, cJSON_CreateNumber(s[c].n_cont));
        cJSON_AddItemToArray(by, cJSON_CreateNumber((double)s[c].bytes));
        cJSON_AddItemToArray(cs, cJSON_CreateNumber(sc->conts[c]));
        cJSON *toks = cJSON_CreateArray();
        for (int32_t j = 0; toks && j < sc->lens[c]; j++) cJSON_AddItemToArray(toks, cJSON_CreateNumber(sc->seqs[c][j]));
        cJSON_AddItemToArray(sq, toks);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return false;
    bool ok = fprintf(f, "%s\n", text) > 0;
    cJSON_free(text);
    return ok;
}

/* "hellaswag  120/2000  acc_norm 41.2%  312 tok/s  ETA 3:12", redrawn on a terminal. */
static void mc_progress(cli_progress *p, const char *task, int64_t done, int64_t total, double acc_norm,
                        int64_t tokens, bool force) {
    if (!p->enabled) return;
    double now = cli_now_seconds();
    if (!force && p->drawn && now - p->t_last_draw < 0.1) return;
    p->t_last_draw = now;
    p->drawn = true;
    double elapsed = now - p->t_start;
    long eta = done > 0 ? (long)(elapsed / (double)done * (double)(total - done) + 0.5) : 0;
    fprintf(stderr, "\r%s  %lld/%lld  acc_norm %.1f%%  %.0f tok/s  ETA %ld:%02ld\033[K", task, (long long)done,
            (long long)total, 100.0 * acc_norm, elapsed > 0 ? (double)tokens / elapsed : 0.0, eta / 60, eta % 60);
    fflush(stderr);
}

int eval_mc(const eval_options *o) {
    tlm_error err = {0};
    mc_set set = {0};
    mc_scorer sc = {0};
    tlm_model *model = NULL;
    mc_choice_score *scores = NULL;
    tlm_atomic_file details_file = {.fd = -1};
    FILE *details = NULL; /* streams into details_file */
    char *labels_default = NULL; /* PIQA's labels next to --mc, when --labels is not given */
    int rc = CLI_EXIT_FAIL;

    if (read_items(o, &set, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
    char model_path[4096];
    if (resolve_model_path(o->model, model_path, sizeof model_path, &err) != TLM_OK) {
        cli_fail_err(&err);
        goto out;
    }
    /* --details may not replace the model or the data it scores */
    labels_default = o->labels_file ? NULL : default_labels_path(o->mc_file);
    const char *inputs[] = {model_path, o->mc_file, o->labels_file ? o->labels_file : labels_default};
    const size_t n_inputs = sizeof inputs / sizeof inputs[0];
    if (o->details_file && tlm_atomic_check_destination(o->details_file, inputs, n_inputs, &err) != TLM_OK) {
        cli_fail_err(&err);
        goto out;
    }
    double t_start = cli_now_seconds();
    model = tlm_model_load(model_path, &err);
    if (!model) { cli_fail_err(&err); goto out; }
    double t_loaded = cli_now_seconds();
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    sc.model = model;
    sc.n_vocab = info.n_vocab;
    sc.add_bos = tlm_model_adds_bos(model);

    /* ---- the longest sequence sizes the context */
    int max_choices = 0;
    int32_t max_len = 0;
    for (int64_t i = 0; i < set.n; i++) {
        if (set.items[i].n_choices > max_choices) max_choices = set.items[i].n_choices;
        int32_t len = 0;
        if (tokenize_item(&sc, &set.items[i], &len, &err) != TLM_OK) {
            cli_fail("%s:%lld: %s", o->mc_file, (long long)set.items[i].line, err.msg);
            goto out;
        }
        if (len > max_len) max_len = len;
    }
    if (info.n_ctx_train > 0 && max_len > info.n_ctx_train) {
        cli_fail("%s: an item needs %d tokens, more than %s's context of %d", o->mc_file, max_len, o->model,
                 info.n_ctx_train);
        goto out;
    }
    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = max_len;
    cp.n_batch = (int32_t)(o->batch > 0 ? o->batch : 512);
    if (o->threads > 0) cp.n_threads = (int32_t)o->threads;
    cp.kv_type = o->kv_type;
    sc.ctx = tlm_context_new(model, &cp, &err);
    if (!sc.ctx) { cli_fail_err(&err); goto out; }
    scores = calloc((size_t)max_choices, sizeof *scores);
    if (!scores) { cli_fail("out of memory"); goto out; }

    if (o->details_file) {
        /* created now, so that a bad path fails before the scoring; stdio
         * writes through a duplicate descriptor, which fclose closes */
        if (tlm_atomic_open(&details_file, o->details_file, inputs, n_inputs, 0666, 0, &err) != TLM_OK) {
            cli_fail_err(&err);
            goto out;
        }
        int fd = dup(details_file.fd);
        details = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!details) {
            cli_fail("%s: %s", o->details_file, strerror(errno));
            if (fd >= 0) close(fd);
            goto out;
        }
    }

    /* ---- score */
    int64_t correct[3] = {0, 0, 0};
    cli_progress prog;
    cli_progress_start(&prog, NULL);
    for (int64_t i = 0; i < set.n; i++) {
        const mc_item *it = &set.items[i];
        int32_t len = 0;
        if (tokenize_item(&sc, it, &len, &err) != TLM_OK || score_item(&sc, it, scores, &err) != TLM_OK) {
            cli_fail("%s:%lld: %s", o->mc_file, (long long)it->line, err.msg);
            goto out;
        }
        int pred[3];
        for (int k = 0; k < 3; k++) {
            pred[k] = argmax_score(scores, it->n_choices, k);
            correct[k] += pred[k] == it->gold;
        }
        if (details && !write_details_line(details, it, scores, &sc, pred)) {
            cli_fail("%s: writing failed", o->details_file);
            goto out;
        }
        mc_progress(&prog, o->task, i + 1, set.n, (double)correct[1] / (double)(i + 1), sc.tokens_decoded,
                    i + 1 == set.n);
    }
    if (prog.enabled && prog.drawn) fputs("\r\033[K", stderr);
    if (details) {
        bool failed = fclose(details) != 0;
        details = NULL;
        if (failed) {
            cli_fail("%s: cannot write: %s", o->details_file, strerror(errno));
            goto out;
        }
        if (tlm_atomic_commit(&details_file, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
    }

    double seconds = cli_now_seconds() - t_loaded;
    double acc[3];
    for (int k = 0; k < 3; k++) acc[k] = (double)correct[k] / (double)set.n;
    double tps = seconds > 0 ? (double)sc.tokens_decoded / seconds : 0.0;
    if (o->json) {
        cJSON *obj = cJSON_CreateObject();
        char *json = NULL;
        if (obj) {
            cJSON_AddStringToObject(obj, "task", o->task);
            cJSON_AddNumberToObject(obj, "n", (double)set.n);
            cJSON_AddNumberToObject(obj, "acc", acc[0]);
            cJSON_AddNumberToObject(obj, "acc_stderr", acc_stderr(acc[0], set.n));
            cJSON_AddNumberToObject(obj, "acc_norm", acc[1]);
            cJSON_AddNumberToObject(obj, "acc_norm_stderr", acc_stderr(acc[1], set.n));
            cJSON_AddNumberToObject(obj, "acc_tok", acc[2]);
            cJSON_AddNumberToObject(obj, "acc_tok_stderr", acc_stderr(acc[2], set.n));
            cJSON_AddNumberToObject(obj, "tokens", (double)sc.tokens_decoded);
            cJSON_AddNumberToObject(obj, "seconds", seconds);
            cJSON_AddNumberToObject(obj, "tokens_per_s", tps);
            cJSON_AddNumberToObject(obj, "load_seconds", t_loaded - t_start);
            cJSON_AddStringToObject(obj, "model", o->model);
            cJSON_AddStringToObject(obj, "file", o->mc_file);
            json = cJSON_PrintUnformatted(obj);
            cJSON_Delete(obj);
        }
        if (!json) { cli_fail("out of memory writing JSON"); goto out; }
        printf("%s\n", json);
        cJSON_free(json);
    } else {
        printf("%s: %lld items\n", o->task, (long long)set.n);
        printf("acc      = %.2f %% +/- %.2f\n", 100 * acc[0], 100 * acc_stderr(acc[0], set.n));
        printf("acc_norm = %.2f %% +/- %.2f\n", 100 * acc[1], 100 * acc_stderr(acc[1], set.n));
        printf("acc_tok  = %.2f %% +/- %.2f (mean log p per token, llama-perplexity's definition)\n",
               100 * acc[2], 100 * acc_stderr(acc[2], set.n));
        printf("%lld tokens in %.1f s, %.1f tokens/s\n", (long long)sc.tokens_decoded, seconds, tps);
    }
    rc = CLI_EXIT_OK;

out:
    if (details) fclose(details);
    tlm_atomic_discard(&details_file); /* nothing once committed */
    free(labels_default);
    free(scores);
    free_scorer(&sc);
    tlm_model_free(model);
    mc_set_free(&set);
    return rc;
}
