/*
 * forward.h — internal: the prefill step of one layer's sublayers, and the
 * points where an observer may look at their activations, for passes that
 * walk the model layer by layer instead of token by token
 * (runtime/compress/calibrate.c).
 *
 * tlm_decode runs every sublayer of the model's list (model.h) over a step
 * with no observer. A layer-major pass instead keeps the residual stream
 * itself and, for each original layer, loads one sequence into the context's
 * residual buffer (forward_residual), runs that layer's sublayers, and reads
 * the buffer back.
 */
#ifndef TLM_FORWARD_H
#define TLM_FORWARD_H

#include <stdint.h>

#include "trimlm.h"

/* Where in a layer an observer is called; act is (n, cols) row-major, one
 * row per token of the step. */
typedef enum forward_point {
    FWD_ATTN_IN = 0,    /* residual stream entering the attention sublayer, before its
                           norm (cols = n_embd) */
    FWD_QKV_IN = 1,     /* attention-normed input of Wq, Wk, Wv (n_embd) */
    FWD_ATTN_OUT = 2,   /* attention output, heads concatenated, input of Wo
                           (n_head*head_dim) */
    FWD_ATTN_RESID = 3, /* residual stream after the attention add (n_embd) */
    FWD_FFN_IN = 4,     /* ffn-normed input of Wgate, Wup (n_embd) */
    FWD_DOWN_IN = 5,    /* silu(gate)*up, input of Wdown (n_ff) */
    FWD_MLP_RESID = 6,  /* residual stream after the MLP add (n_embd) */
} forward_point;

/* Called on the thread that runs the step, between the step's parallel
 * regions, so it may open its own. act must not be written. It stays valid
 * and unchanged until the end of the step (the return of
 * forward_layer_batch), so that an observer can do the work of every point
 * in one parallel region, except FWD_QKV_IN's (the MLP's norm overwrites
 * it) and the residual stream of FWD_ATTN_IN / FWD_ATTN_RESID (updated in
 * place). After the step the residual buffer (forward_residual) holds the
 * layer's output. A sublayer the model lacks calls none of its points. */
typedef struct forward_observer {
    void (*observe)(void *user, forward_point point, int32_t layer, const float *act,
                    int32_t n, int64_t cols);
    void *user;
} forward_observer;

/* Runs the sublayers of original layer `layer` that the model holds over n
 * (2..n_batch) tokens whose residual stream is in forward_residual(c), at
 * positions pos..pos+n-1 (writing that layer's KV
 * cache there; pos itself is not advanced). The RoPE tables must have been
 * filled by forward_set_positions(c, n), and the OpenMP thread count set to
 * forward_n_threads(c) (oneDNN takes it from the caller). obs may be NULL. */
tlm_status forward_layer_batch(tlm_context *c, int32_t layer, int32_t n,
                               const forward_observer *obs, tlm_error *err);

/* The residual stream of the step, (n_batch, n_embd). */
float *forward_residual(tlm_context *c);
/* Writes the embeddings of tokens[0..n) into forward_residual(c); n <= n_batch,
 * tokens in the vocabulary. */
void forward_embed(tlm_context *c, const int32_t *tokens, int32_t n);
/* Fills the RoPE tables for n tokens at positions pos..pos+n-1. */
void forward_set_positions(tlm_context *c, int32_t n);
int32_t forward_n_threads(const tlm_context *c);

#endif
