/*
 * eval.h — what the modes of `trimlm eval` share: the options, tokenizing a
 * whole text, and numerically stable log-softmax arithmetic in double.
 *
 *   --ppl FILE              perplexity (cmd_eval.c)
 *   --ppl FILE --kld REF    KL divergence from a reference model (eval_kld.c)
 *   --mc FILE --task T      multiple-choice accuracy (eval_mc.c)
 */
#ifndef TLM_EVAL_H
#define TLM_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "trimlm.h"

typedef struct eval_options {
    const char *model;
    const char *ppl_file;
    const char *kld_model;   /* --kld: the reference model */
    const char *mc_file;     /* --mc */
    const char *task;        /* --task: hellaswag, arc, piqa, boolq */
    const char *labels_file; /* --labels: PIQA's labels (default: found next to --mc) */
    const char *details_file; /* --details: one JSON line per multiple-choice item */
    int64_t ctx, chunks, batch, threads, limit;
    int32_t kv_type;         /* --kv: tlm_kv_type (0 = f16) */
    bool json;
} eval_options;

int eval_kld(const eval_options *o);
int eval_mc(const eval_options *o);

/* Tokens of text[0..len) (malloc'd, *n of them), or NULL with err set. */
int32_t *eval_tokenize(const tlm_model *m, const char *text, size_t len, bool add_bos, int32_t *n,
                       tlm_error *err);

/* log(sum(exp(logits))) in double, shifted by the maximum. */
double eval_log_sum_exp(const float *logits, int32_t n_vocab);

/* -log softmax(logits)[target] in double. */
double eval_token_nll(const float *logits, int32_t n_vocab, int32_t target);

#endif
