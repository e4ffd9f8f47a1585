/*
 * awq.h — activation-aware quantization of weight matrices into the q8_g32 /
 * q4_g32 formats of qformat.h, driven by per-input-channel activation
 * statistics (stat_j = mean of x_j^2 over calibration tokens).
 *
 * Two tools, both leaving the file format unchanged:
 *
 *  1. Importance-weighted scale search. A weight error e_ij adds e_ij * x_j
 *     to output i, so the expected squared output error of a row is
 *     sum_j stat_j e_ij^2 (cross-channel terms neglected). Per group of 32,
 *     candidate roundings are tried and each gets its least-squares scale
 *     under imp_j = stat_j + floor; the one of least weighted error is kept.
 *
 *  2. Per-input-channel scaling (AWQ, Lin et al. 2023, arXiv 2306.00978).
 *     W x = (W diag(s)) (diag(1/s) x): channels with large activations get
 *     their weight columns scaled up before quantizing, so their relative
 *     rounding error shrinks. s_j = stat_j^alpha / sqrt(max * min), alpha
 *     chosen per group of matrices sharing an input from a grid by the
 *     weighted error, in the original units, of round-to-nearest on up to
 *     TLM_AWQ_SAMPLE_ROWS rows per matrix (cheap; choosing with the search
 *     itself on fewer rows measured worse: SmolLM2-135M int4 perplexity
 *     29.5 against 28.6). The matrices are then quantized with the search.
 *     1/s is folded exactly into the op that produces the input: the
 *     RMSNorm weight for q/k/v and for gate/up, the rows of Wv for Wo (a
 *     scale per KV channel, shared by the query heads of a KV head), the
 *     rows of Wup for Wdown. alpha = 0 is s = 1 (the search alone).
 *
 * Everything here is plain scalar C over caller-given row ranges: the
 * writer runs it row-parallel (no OpenMP inside), except the whole-layer
 * step tlm_awq_scale_layer, which tries the alpha grid's points in parallel.
 */
#ifndef TLM_AWQ_H
#define TLM_AWQ_H

#include <stdbool.h>
#include <stdint.h>

#include "qformat.h"

/* floor = TLM_AWQ_IMP_FLOOR * mean(stat): a channel never seen active
 * still counts a little (calibration text is not all text). */
#define TLM_AWQ_IMP_FLOOR 0.01f
/* alpha grid: 0, 1/(N-1), ..., 1 */
#define TLM_AWQ_ALPHA_STEPS 11
/* rows per matrix sampled when comparing alphas */
#define TLM_AWQ_SAMPLE_ROWS 256

/* imp[j] = stat[j] + floor (non-finite or negative stats count as 0). */
void tlm_awq_importance(const float *stat, int64_t n, float *imp);

/* s[j] = max(stat[j], tiny)^alpha, divided by sqrt(max s * min s) so that
 * the scales straddle 1. alpha = 0 gives s = 1 exactly. */
void tlm_awq_scales(const float *stat, int64_t n, float alpha, float *s);

/* Q8 with a scale search (cf. tlm_q4_g32_quantize_row_search): candidate
 * roundings q = clamp(round(w * (127 + 0.5 k) / amax), -127, 127), k = -6..6,
 * each with its least-squares scale under imp (NULL = all 1); the one of
 * least weighted squared error is kept. k = 0 is RTN's rounding. */
void tlm_q8_g32_quantize_row_search(const float *w, tlm_block_q8_g32 *dst, int64_t n,
                                    const float *imp);

/* Quantizes rows [0, rows) of a row-major (rows, n_in) matrix into the
 * packed layout with the importance-weighted search (both types), imp:
 * n_in values. rows <= 16 writes one tile, so tiles can be quantized in
 * parallel. False on a bad shape. */
bool tlm_awq_quantize_pack(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                           const float *imp, void *dst);

/* sum over rows r = 0, step, 2 step, ... and j of imp[j] * (w[r][j] -
 * deq(Q(w[r] * s))[j] / s[j])^2: the weighted error of quantizing W diag(s)
 * (round-to-nearest when !search, else the search under imp / s^2), in the
 * original units. s = NULL means 1. */
double tlm_awq_scaled_error(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                            const float *imp, const float *s, int64_t step, bool search);

/* ------------------------------------------------------------ folding */

/* Scales the inputs of matrices sharing one normalised input: norm[j] /=
 * s[j] and column j of each (rows[k], n) matrix mats[k] *= s[j]. */
void tlm_awq_fold_norm(float *norm, int64_t n, float *const *mats, const int64_t *rows,
                       int n_mats, const float *s);

/* Scales the input of `consumer` (n_out, n_head * head_dim), produced per
 * head by `producer` rows (n_head_kv * head_dim, n_prod_in) (+ bias, may be
 * NULL): query head h reads KV head h / (n_head / n_head_kv), so s_kv has
 * n_head_kv * head_dim entries: producer row c /= s_kv[c], bias[c] /=
 * s_kv[c], consumer column h * head_dim + d *= s_kv[kv(h) * head_dim + d].
 * Wv -> Wo: as named; Wup -> Wdown: n_head = n_head_kv = 1, head_dim = n_ff. */
void tlm_awq_fold_rows(float *producer, float *bias, int64_t n_prod_in, float *consumer,
                       int64_t n_out, int32_t n_head, int32_t n_head_kv, int64_t head_dim,
                       const float *s_kv);

/* The statistics of a per-KV-channel input from those of the query-head
 * channels (n_head * head_dim): mean over the heads sharing a KV head. */
void tlm_awq_kv_stat(const float *stat_q, int32_t n_head, int32_t n_head_kv, int64_t head_dim,
                     float *stat_kv);

/* ------------------------------------------------------------ a layer */

/* The inputs of a layer's matrices, each scaled with its own alpha. */
typedef enum tlm_awq_input {
    TLM_AWQ_QKV,     /* the attention norm's output: Wq, Wk, Wv */
    TLM_AWQ_OUT,     /* the attention's output: Wo (scales folded into Wv) */
    TLM_AWQ_GATE_UP, /* the MLP norm's output: Wgate, Wup */
    TLM_AWQ_DOWN,    /* the gated product: Wdown (scales folded into Wup) */
    TLM_AWQ_N_INPUTS
} tlm_awq_input;

/* The type of a matrix stored as floats: scaled with its group, left out of
 * the error that chooses alpha. */
#define TLM_AWQ_FLOAT 0

/* One transformer layer: writable f32 copies of its weights, rescaled in
 * place (E = n_embd, F = n_ff, QD = n_head * head_dim, KD = n_head_kv *
 * head_dim); each matrix's storage type (a tlm_qtype or TLM_AWQ_FLOAT). */
typedef struct tlm_awq_layer {
    int64_t n_embd, n_ff, head_dim;
    int32_t n_head, n_head_kv;
    float *attn_norm;    /* (E); NULL: the attention is left alone */
    float *wq, *wk, *wv; /* (QD, E), (KD, E), (KD, E) */
    float *bv;           /* (KD), or NULL */
    float *wo;           /* (E, QD) */
    int wq_type, wk_type, wv_type, wo_type;
    float *ffn_norm;     /* (E); NULL: the MLP is left alone */
    float *w_gate, *w_up; /* (F, E) */
    float *w_down;       /* (E, F) */
    int gate_type, up_type, down_type;
    const float *stat[TLM_AWQ_N_INPUTS]; /* per input: E, QD, E, F statistics; NULL: not scaled */
    float *imp[TLM_AWQ_N_INPUTS];        /* per input: E, QD, E, F floats of the caller's */
} tlm_awq_layer;

/* Scales every input of l that has statistics and whose sublayer is there:
 * alpha[k] (TLM_AWQ_N_INPUTS values) is chosen on the grid when NaN and
 * stored, else reused; the scales are folded into the weights (Wo's into
 * Wv and bv, q/k/v's into attn_norm, Wdown's into Wup, gate/up's into
 * ffn_norm), and imp[k] gets each channel's importance in the scaled units
 * (for tlm_awq_quantize_pack). False when out of memory. */
bool tlm_awq_scale_layer(const tlm_awq_layer *l, float *alpha);

#endif
