/*
 * forward.c — the inference context (KV cache, scratch buffers, threads) and
 * the exact f32 forward pass of the llama family (llama, qwen2).
 *
 * The model is a list of sublayers (model.h); for tokens at positions
 * pos..pos+n-1, x = the token embeddings, then for each sublayer in order
 *   h = rmsnorm(x) * norm
 *   attention: q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv); RoPE on
 *              q and k; k, v into the sublayer's KV-cache slot;
 *              x += softmax(q k^T / sqrt(head_dim), causal) v Wo^T  (grouped-query)
 *   MLP:       x += (silu(h Wg^T) * (h Wu^T)) Wd^T
 * and logits = (rmsnorm(x) * out_norm) output^T.
 *
 * Two schedules compute the same thing:
 *  - prefill (n > 1 tokens): matrix products through oneDNN's sgemm, the
 *    element-wise stages in one OpenMP region each;
 *  - decode (n = 1): one OpenMP region for the whole token, each thread taking
 *    a slice of every matrix-vector product, barriers between stages.
 *
 * Weight matrices are f32 or quantized (q8_g32_r16 / q4_g32_r16, see
 * quant/qformat.h); each product's kernel follows the tensor's storage type
 * (model.h's tlm_tensor). Quantized ones are used so:
 *  - decode: the input vector is quantized to int8 per group of 32
 *    (quantize_act_q8_g32) and the int8 GEMV kernels run over whole 16-row
 *    tiles. Each thread quantizes the vector into its own buffer (as it
 *    normalises its own copy of the residual stream): a 576..1536-float
 *    quantization costs less than the barrier that sharing one would need.
 *    One quantized vector serves every matrix with that input (xn for
 *    q/k/v and for gate/up; the attention output for Wo; the SwiGLU output
 *    for Wd; the final xn for the output head), so the result does not
 *    depend on the thread count.
 *  - prefill of quantized weights, where the kernel table prefers its int8
 *    GEMM (AVX-512 VNNI): the activation rows are quantized as decode
 *    quantizes its vector and multiplied by the packed tiles directly
 *    (matmul_int8): each row's result is bit-identical to the decode GEMV's,
 *    at ~1.4-1.6x the speed of the f32 path below;
 *  - prefill elsewhere: the matrix is dequantized to f32, one panel of rows
 *    at a time into a per-thread buffer, and multiplied by the f32
 *    activations with sgemm (C[:, panel] = A panel^T): the same weights as
 *    decode, without the activation rounding.
 *    The last row's logits of a prefill that keeps only those go through the
 *    decode GEMV (one vector: no panels).
 * GGUF matrices used in place (a GGML block type, F16 or BF16; model.h) go
 * through the kernels' gemv_gguf / gemm_gguf for their type (prefill steps
 * of GGUF_PANEL_MIN_ROWS tokens or more take the dequantized panels below). Their input is
 * quantized once per input vector (decode) or per step's activation rows
 * (prefill) for each activation form the matrices reading it take
 * (tlm_gguf_act_kind: q8 per 32 values, the same blocks as the packed types;
 * q8 per 256 for the K-quants; F16 / BF16 read the f32 vector itself).
 * Prefill quantizes a step's rows once per form and reuses them for every
 * matrix with that input (q/k/v; gate/up). Slices for GGUF matrices may
 * start on any row.
 * A quantized token-embedding table is dequantized one looked-up row at a time.
 *
 * The KV cache stores keys (after RoPE) and values as f16 by default, as f32,
 * or as int8 with one f32 scale per head vector per position (tlm_kv_type).
 * Each head vector is computed in f32 and rounded once, when it is stored
 * (kv_store); attention reads the compact form directly (the kernels'
 * attn_scores_* / attn_values_*), so decode reads 1/2 (f16) or ~1/4 (int8)
 * of the f32 cache's bytes per key.
 *
 * Every buffer is allocated in tlm_context_new; nothing is allocated per token
 * (except the logits buffer, grown when a call asks for more rows than ever).
 */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "forward.h"
#include "ggml_types.h"
#include "gguf_act.h"
#include "kernels.h"
#include "model.h"
#include "qformat.h"
#include "trimlm.h"

#define TLM_DEFAULT_N_CTX 4096
#define TLM_DEFAULT_N_BATCH 512
/* Rows of a quantized matrix dequantized at once for a prefill product: a
 * multiple of 16 (whole tiles); 256 x 1536 floats = 1.5 MB stays in L2. */
#define PANEL_ROWS 256
/* GGUF matrices in prefill: below this many activation rows the GGUF GEMM
 * kernels (int8 activations); from it on, dequantized panels and sgemm (f32
 * activations), whose one dequantization per matrix is then the cheaper
 * part. Measured on an AVX-512 VNNI Xeon, 1 thread, t/s of gemm_gguf vs
 * panels: SmolLM2 Q4_1/Q8_0 pp32 332 vs 283, pp64 336 vs 415, pp128 288
 * vs 493; Qwen2.5-1.5B Q4_K_M pp128 44 vs 40, pp256 34 vs 51. */
#define GGUF_PANEL_MIN_ROWS 128

struct tlm_context {
    const struct tlm_model *model;
    const tlm_kernels *kern;
    int32_t n_ctx;     /* KV-cache capacity in tokens */
    int32_t n_batch;   /* tokens per forward step */
    int32_t n_threads;
    int32_t pos;       /* tokens in the KV cache */

    /* KV cache: (n_kv_slots, n_head_kv, n_ctx, head_dim) each, so that one
     * head's keys over all positions are contiguous for attention. Each
     * attention sublayer of the model has its slot (tlm_sublayer.kv_slot);
     * a removed one has none. Elements are
     * kv_type (tlm_kv_type): f32, f16, or int8 with one f32 scale per head
     * vector per position in k_scale / v_scale (n_kv_slots, n_head_kv, n_ctx);
     * the kernels' kv_store_* write them (simd/kernels.h). */
    void *k_cache;
    void *v_cache;
    float *k_scale;    /* int8 only, else NULL */
    float *v_scale;
    int32_t kv_type;
    size_t kv_elem;    /* bytes per cached value: 4, 2 or 1 */
    int32_t n_kv_slots;

    /* Scratch for up to n_batch tokens. */
    float *x;      /* (n_batch, n_embd) residual stream */
    float *xn;     /* (n_batch, n_embd) normalised input of a sublayer */
    float *q;      /* (n_batch, n_head*head_dim) */
    float *k;      /* (n_batch, n_head_kv*head_dim) keys of this step, before caching */
    float *v;      /* (n_batch, n_head_kv*head_dim) */
    float *attn;   /* (n_batch, n_head*head_dim) attention output, heads concatenated */
    float *gate;   /* (n_batch, n_ff) */
    float *up;     /* (n_batch, n_ff) */
    float *proj;   /* (n_embd) decode: Wo / Wd output before the residual add */
    float *xn_thread; /* (n_threads, n_embd) decode: each thread's normalised copy */
    float *rope_cos; /* (n_batch, rope_dim/2) per token of the step */
    float *rope_sin; /* (n_batch, rope_dim/2) */
    double *rope_inv_freq; /* (rope_dim/2) radians per position, scaling applied */
    double *rope_inv_freq_local; /* (rope_dim/2) gemma3's local layers; NULL elsewhere */
    float *scores; /* (n_threads, n_ctx) attention weights, one row per thread */

    /* Quantized weights only (NULL for an all-f32 model). */
    uint8_t *xq;       /* (n_threads, xq_stride) decode: each thread's int8 activation,
                          tlm_block_q8_g32_act per 32 inputs, then (at xq_k256_at)
                          tlm_block_q8_k256_act per 256 inputs */
    size_t xq_stride;  /* bytes per thread: both forms of the widest matrix input */
    size_t xq_k256_at; /* offset of the per-256 form in a thread's buffer */
    /* Prefill with GGUF matrices: the step's activation rows in each form
     * (0: per 32, 1: per 256), n_batch rows of the widest input each, and
     * which input they hold (rows_src NULL: none; reset by every stage that
     * writes activations, PARALLEL_STAGE). */
    uint8_t *act_rows[2];
    const float *rows_src[2];
    int64_t rows_m[2], rows_k[2];
    float *panel;      /* (n_threads, PANEL_ROWS * panel_cols) prefill: dequantized rows */
    tlm_block_q8_g32_act *xq_rows; /* (n_batch, panel_cols / 32) prefill with the int8 GEMM:
                                      the step's activation rows quantized */
    int64_t panel_cols; /* the widest matrix input */

    /* Logits of the last tlm_decode call. */
    float *logits;        /* (logits_rows_cap, n_vocab) */
    size_t logits_rows_cap;
    int32_t last_n;       /* tokens in the last call */
    bool last_all;        /* logits kept for all of them (else only the last) */
};

/* ------------------------------------------------------------ helpers */

/* Rows [r0, r1) of n for thread ith of nth, in multiples of 8 rows so that
 * the 4-row GEMV kernels see whole blocks. */
static inline void thread_slice(int64_t n, int ith, int nth, int64_t *r0, int64_t *r1) {
    int64_t per = (n + nth - 1) / nth;
    per = (per + 7) & ~(int64_t)7;
    int64_t a = (int64_t)ith * per, b = a + per;
    *r0 = a < n ? a : n;
    *r1 = b < n ? b : n;
}

/* Rows [r0, r1) of matrix W for thread ith of nth: whole 16-row tiles for a
 * quantized matrix, as thread_slice for an f32 one. */
static inline void matrix_slice(const tlm_tensor *W, int ith, int nth, int64_t *r0, int64_t *r1) {
    if (!tensor_is_packed(W)) {
        thread_slice(W->rows, ith, nth, r0, r1);
        return;
    }
    int64_t tiles = (W->rows + TLM_QROWS - 1) / TLM_QROWS;
    int64_t per = (tiles + nth - 1) / nth * TLM_QROWS;
    int64_t a = (int64_t)ith * per, b = a + per;
    *r0 = a < W->rows ? a : W->rows;
    *r1 = b < W->rows ? b : W->rows;
}

/* One input vector of the matrix products in the forms the matrices take:
 * x itself, quantized per 32 (quantize_act_q8_g32: the packed types and
 * GGUF's 32-value blocks) and per 256 (quantize_act_q8_k256: the K-quants);
 * a form is filled only when a matrix reading x needs it (act_needs). */
typedef struct act_in {
    const float *x;
    const void *g32;
    const void *k256;
} act_in;

enum { ACT_G32 = 1, ACT_K256 = 2 };

/* The quantized forms matrix W reads (0: x itself). */
static inline unsigned act_needs(const tlm_tensor *W) {
    if (tensor_is_packed(W)) return ACT_G32;
    const int t = tensor_ggml_type(W);
    if (t < 0) return 0;
    switch (tlm_gguf_act_kind((uint32_t)t)) {
    case TLM_GGUF_ACT_Q8_G32: return ACT_G32;
    case TLM_GGUF_ACT_Q8_K256: return ACT_K256;
    default: return 0;
    }
}

/* x (n floats) in the forms `need` asks for, into buf (a thread's xq buffer). */
static inline act_in act_quantize(const struct tlm_context *c, unsigned need, const float *x,
                                  int64_t n, uint8_t *buf) {
    act_in a = {.x = x, .g32 = buf, .k256 = buf ? buf + c->xq_k256_at : NULL};
    if (need & ACT_G32) c->kern->quantize_act_q8_g32(x, buf, n);
    if (need & ACT_K256) c->kern->quantize_act_q8_k256(x, buf + c->xq_k256_at, n);
    return a;
}

/* y[r] = (W x)[r] for r in [r0, r1); a holds x in the forms W needs
 * (act_quantize). y is the whole output vector. */
static inline void matvec_rows(const tlm_kernels *kern, const tlm_tensor *W, const act_in *a,
                               float *y, int64_t r0, int64_t r1) {
    switch (W->type) {
    case TLM_STORAGE_F32: kern->gemv_f32(W->data, a->x, y, W->cols, r0, r1); break;
    case TLM_STORAGE_Q8_G32_R16: kern->gemv_q8_g32_r16(W->data, a->g32, y, W->cols, r0, r1); break;
    case TLM_STORAGE_Q4_G32_R16: kern->gemv_q4_g32_r16(W->data, a->g32, y, W->cols, r0, r1); break;
    default: {
        const int t = tensor_ggml_type(W);
        const unsigned need = act_needs(W);
        const void *xq = need == ACT_G32 ? a->g32 : need == ACT_K256 ? a->k256 : (const void *)a->x;
        kern->gemv_gguf[t](W->data, xq, y, W->cols, r0, r1);
        break;
    }
    }
}

/* Rows [r0, r1) of a packed or GGUF matrix to f32: out[(r - r0) * cols + i]
 * (GGUF rows by the reference dequantizers of quant/ggml_types.c). */
static inline void dequant_rows(const tlm_kernels *kern, const tlm_tensor *W, float *out,
                                int64_t r0, int64_t r1) {
    const int t = tensor_ggml_type(W);
    uint64_t row_bytes;
    if (W->type == TLM_STORAGE_Q8_G32_R16) {
        kern->dequant_q8_g32_r16(W->data, out, W->cols, r0, r1);
    } else if (W->type == TLM_STORAGE_Q4_G32_R16) {
        kern->dequant_q4_g32_r16(W->data, out, W->cols, r0, r1);
    } else if (t >= 0 && ggml_row_bytes((uint32_t)t, (uint64_t)W->cols, &row_bytes)) {
        for (int64_t r = r0; r < r1; r++)
            ggml_dequantize_row((uint32_t)t, (const uint8_t *)W->data + (size_t)r * row_bytes,
                                out + (size_t)(r - r0) * (size_t)W->cols, W->cols);
    }
}

static inline bool is_quant(const tlm_tensor *W) { return tensor_is_packed(W); }
/* A GGUF matrix used in place (gemv_gguf / gemm_gguf). */
static inline bool is_gguf(const tlm_tensor *W) { return tensor_ggml_type(W) >= 0; }

static bool model_has_quant(const struct tlm_model *m) {
    if (is_quant(&m->output) || is_quant(&m->tok_embd) || is_gguf(&m->output) ||
        is_gguf(&m->tok_embd))
        return true;
    for (int32_t i = 0; i < m->n_subs; i++)
        for (int k = 0; k < SUBLAYER_MAX_SLOTS; k++)
            if (is_quant(&m->subs[i].w[k]) || is_gguf(&m->subs[i].w[k])) return true;
    return false;
}

/* Work items [i0, i1) of n for thread ith of nth (no rounding). */
static inline void item_slice(int64_t n, int ith, int nth, int64_t *i0, int64_t *i1) {
    *i0 = n * ith / nth;
    *i1 = n * (ith + 1) / nth;
}

static size_t kv_offset(const struct tlm_context *c, int32_t kv_slot, int32_t kv_head, int32_t pos) {
    const tlm_hparams *hp = &c->model->hp;
    size_t slot = (size_t)kv_slot;
    return ((slot * (size_t)hp->n_head_kv + (size_t)kv_head) * (size_t)c->n_ctx +
            (size_t)pos) *
           (size_t)hp->head_dim;
}

/* Stores one head vector x (head_dim floats) as the key (values = false) or
 * value of kv_head at pos, in the cache's type. */
static void kv_store(const struct tlm_context *c, bool values, int32_t kv_slot, int32_t kv_head,
                     int32_t pos, const float *x) {
    int32_t hd = c->model->hp.head_dim;
    size_t at = kv_offset(c, kv_slot, kv_head, pos);
    void *cache = values ? c->v_cache : c->k_cache;
    switch (c->kv_type) {
    case TLM_KV_F32: memcpy((float *)cache + at, x, (size_t)hd * sizeof(float)); break;
    case TLM_KV_F16: c->kern->kv_store_f16(x, (uint16_t *)cache + at, hd); break;
    default:
        c->kern->kv_store_q8(x, (int8_t *)cache + at, (values ? c->v_scale : c->k_scale) + at / (size_t)hd,
                             hd);
        break;
    }
}

/* scores[t] = scale * (K[t] . q) for the first n_keys cached keys of kv_head. */
static void kv_scores(const struct tlm_context *c, int32_t kv_slot, int32_t kv_head, const float *q,
                      float *scores, int32_t n_keys, float scale) {
    const tlm_kernels *kern = c->kern;
    int32_t hd = c->model->hp.head_dim;
    size_t at = kv_offset(c, kv_slot, kv_head, 0);
    switch (c->kv_type) {
    case TLM_KV_F32:
        kern->gemv_f32((const float *)c->k_cache + at, q, scores, hd, 0, n_keys);
        for (int32_t t = 0; t < n_keys; t++) scores[t] *= scale;
        break;
    case TLM_KV_F16:
        kern->attn_scores_f16((const uint16_t *)c->k_cache + at, q, scores, n_keys, hd, scale);
        break;
    default:
        kern->attn_scores_q8((const int8_t *)c->k_cache + at, c->k_scale + at / (size_t)hd, q,
                             scores, n_keys, hd, scale);
        break;
    }
}

/* out = V^T p over the first n_keys cached values of kv_head (head_dim floats). */
static void kv_values(const struct tlm_context *c, int32_t kv_slot, int32_t kv_head, const float *p,
                      float *out, int32_t n_keys) {
    const tlm_kernels *kern = c->kern;
    int32_t hd = c->model->hp.head_dim;
    size_t at = kv_offset(c, kv_slot, kv_head, 0);
    switch (c->kv_type) {
    case TLM_KV_F32: kern->gemv_t_f32((const float *)c->v_cache + at, p, out, n_keys, hd); break;
    case TLM_KV_F16:
        kern->attn_values_f16((const uint16_t *)c->v_cache + at, p, out, n_keys, hd);
        break;
    default:
        kern->attn_values_q8((const int8_t *)c->v_cache + at, c->v_scale + at / (size_t)hd, p, out,
                             n_keys, hd);
        break;
    }
}

/* ------------------------------------------------------------- RoPE */

/* Frequencies of the rotated pairs: theta^(-2j/rope_dim), then the scaling
 * rule. llama3 follows Llama 3.1: wavelengths longer than orig_ctx/low_freq
 * are slowed by `factor`, shorter than orig_ctx/high_freq kept, and those in
 * between interpolated smoothly. Computed in double, as are the angles. */
static void rope_init_freqs(struct tlm_context *c) {
    const tlm_hparams *hp = &c->model->hp;
    int32_t half = hp->rope_dim / 2;
    for (int32_t j = 0; j < half; j++) {
        double f = pow((double)hp->rope_theta, -2.0 * j / (double)hp->rope_dim);
        if (hp->rope_scaling == TLM_ROPE_SCALING_LINEAR) {
            f /= (double)hp->rope_factor;
        } else if (hp->rope_scaling == TLM_ROPE_SCALING_LLAMA3) {
            double factor = hp->rope_factor, lo = hp->rope_low_freq_factor,
                   hi = hp->rope_high_freq_factor, orig = (double)hp->rope_orig_ctx;
            double wavelen = 2.0 * M_PI / f;
            double low_freq_wavelen = orig / lo, high_freq_wavelen = orig / hi;
            if (wavelen > low_freq_wavelen) {
                f /= factor;
            } else if (wavelen >= high_freq_wavelen && hi != lo) {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
        }
        c->rope_inv_freq[j] = f;
    }
}

/* cos/sin tables for the n tokens of a step at positions p0.. */
static void rope_fill_tables(struct tlm_context *c, int32_t p0, int32_t n) {
    int32_t half = c->model->hp.rope_dim / 2;
    for (int32_t i = 0; i < n; i++) {
        for (int32_t j = 0; j < half; j++) {
            double angle = (double)(p0 + i) * c->rope_inv_freq[j];
            c->rope_cos[(size_t)i * half + j] = (float)cos(angle);
            c->rope_sin[(size_t)i * half + j] = (float)sin(angle);
        }
    }
}

/* Rotates one head vector (head_dim floats) in place for token i of the step. */
static void rope_apply(const struct tlm_context *c, float *vec, int32_t i) {
    const tlm_hparams *hp = &c->model->hp;
    int32_t half = hp->rope_dim / 2;
    const float *cs = c->rope_cos + (size_t)i * half, *sn = c->rope_sin + (size_t)i * half;
    if (hp->rope_style == TLM_ROPE_NORM) {
        for (int32_t j = 0; j < half; j++) {
            float a = vec[2 * j], b = vec[2 * j + 1];
            vec[2 * j] = a * cs[j] - b * sn[j];
            vec[2 * j + 1] = a * sn[j] + b * cs[j];
        }
    } else {
        for (int32_t j = 0; j < half; j++) {
            float a = vec[j], b = vec[j + half];
            vec[j] = a * cs[j] - b * sn[j];
            vec[j + half] = a * sn[j] + b * cs[j];
        }
    }
}

/* ------------------------------------------------------------- stages */
/* Each stage takes the thread's (ith, nth) and touches only its share. */

static void stage_rmsnorm(const struct tlm_context *c, float *out, const float *in,
                          const float *w, int32_t n, int ith, int nth) {
    const tlm_hparams *hp = &c->model->hp;
    int64_t r0, r1;
    item_slice(n, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++)
        c->kern->rmsnorm_f32(out + r * hp->n_embd, in + r * hp->n_embd, w, hp->n_embd,
                             hp->rms_eps);
}

/* Biases, RoPE, and the step's keys/values into the cache. Work items are
 * (token, head) over n_head query heads followed by n_head_kv KV heads. */
static void stage_qkv_finish(struct tlm_context *c, const tlm_sublayer *S, int32_t n, int ith,
                             int nth) {
    const tlm_hparams *hp = &c->model->hp;
    const float *bq = tensor_f32(&S->w[ATTN_Q_BIAS]), *bk = tensor_f32(&S->w[ATTN_K_BIAS]),
                *bv = tensor_f32(&S->w[ATTN_V_BIAS]);
    int32_t hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd;
    int32_t heads = hp->n_head + hp->n_head_kv;
    int64_t i0, i1;
    item_slice((int64_t)n * heads, ith, nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        int32_t i = (int32_t)(item / heads), h = (int32_t)(item % heads);
        if (h < hp->n_head) {
            float *qh = c->q + (size_t)i * q_dim + (size_t)h * hd;
            if (bq)
                for (int32_t d = 0; d < hd; d++) qh[d] += bq[h * hd + d];
            rope_apply(c, qh, i);
        } else {
            int32_t g = h - hp->n_head;
            float *kh = c->k + (size_t)i * kv_dim + (size_t)g * hd;
            float *vh = c->v + (size_t)i * kv_dim + (size_t)g * hd;
            if (bk)
                for (int32_t d = 0; d < hd; d++) kh[d] += bk[g * hd + d];
            if (bv)
                for (int32_t d = 0; d < hd; d++) vh[d] += bv[g * hd + d];
            rope_apply(c, kh, i);
            kv_store(c, false, S->kv_slot, g, c->pos + i, kh);
            kv_store(c, true, S->kv_slot, g, c->pos + i, vh);
        }
    }
}

/* Causal grouped-query attention; work items are (token, query head). Token
 * i of the step sits at position pos+i and sees positions 0..pos+i: scores
 * = K q (a GEMV over the head's cached keys), softmax, then out = V^T p. */
static void stage_attention(struct tlm_context *c, int32_t kv_slot, int32_t n, int ith, int nth) {
    const tlm_hparams *hp = &c->model->hp;
    const tlm_kernels *kern = c->kern;
    int32_t hd = hp->head_dim, q_dim = hp->n_head * hd;
    int32_t group = hp->n_head / hp->n_head_kv;
    float scale = 1.0f / sqrtf((float)hd);
    float *scores = c->scores + (size_t)ith * c->n_ctx;
    int64_t i0, i1;
    item_slice((int64_t)n * hp->n_head, ith, nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        int32_t i = (int32_t)(item / hp->n_head), h = (int32_t)(item % hp->n_head);
        int32_t g = h / group, n_keys = c->pos + i + 1;
        const float *qh = c->q + (size_t)i * q_dim + (size_t)h * hd;
        kv_scores(c, kv_slot, g, qh, scores, n_keys, scale);
        kern->softmax_f32(scores, n_keys);
        kv_values(c, kv_slot, g, scores, c->attn + (size_t)i * q_dim + (size_t)h * hd, n_keys);
    }
}

static void stage_silu_mul(struct tlm_context *c, int32_t n, int ith, int nth) {
    int64_t total = (int64_t)n * c->model->hp.n_ff, i0, i1;
    item_slice(total, ith, nth, &i0, &i1);
    if (i1 > i0) c->kern->silu_mul_f32(c->gate + i0, c->up + i0, i1 - i0);
}

/* ---------------------------------------------------- prefill (n > 1) */

/* C[M,N] = A[M,K] W^T + beta C with W the (N, K) row-major weight. */
static tlm_status sgemm_wt(int64_t M, int64_t N, int64_t K, const float *A, const float *W,
                           float beta, float *C, int64_t ldc, tlm_error *err) {
    dnnl_status_t st = dnnl_sgemm('N', 'T', M, N, K, 1.0f, A, K, W, K, beta, C, ldc);
    if (st != dnnl_success)
        return tlm_seterr(err, TLM_ERR_NOMEM, "matrix product %lldx%lldx%lld failed (oneDNN status %d)",
                          (long long)M, (long long)N, (long long)K, (int)st);
    return TLM_OK;
}

/* C[M, 0:N] = A[M,K] W^T (+ C when accumulate) for a quantized W (N, K)
 * through the int8 GEMM: the rows of A are quantized per group of 32 as
 * decode quantizes its vector (split among threads), then each thread
 * multiplies its whole 16-row tiles of W by all M rows. Row t of the result
 * is bit-identical to the decode GEMV of row t. */
static void matmul_int8(struct tlm_context *c, int64_t M, const tlm_tensor *W, const float *A,
                        bool accumulate, float *C, int64_t ldc) {
    const tlm_kernels *kern = c->kern;
    const int64_t K = W->cols, ng = K / TLM_QGROUP;
    tlm_block_q8_g32_act *xq = c->xq_rows;
#pragma omp parallel num_threads(c->n_threads)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t i0, i1, r0, r1;
        item_slice(M, ith, nth, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) kern->quantize_act_q8_g32(A + i * K, xq + i * ng, K);
#pragma omp barrier
        matrix_slice(W, ith, nth, &r0, &r1);
        if (r1 > r0) {
            if (W->type == TLM_STORAGE_Q8_G32_R16)
                kern->gemm_q8_g32_r16(W->data, xq, C, ldc, M, K, r0, r1, accumulate);
            else
                kern->gemm_q4_g32_r16(W->data, xq, C, ldc, M, K, r0, r1, accumulate);
        }
    }
}

/* C[M, 0:N] = A[M,K] W^T (+ C when accumulate) for a GGUF W (N, K) used in
 * place: the rows of A are quantized into the form W's type takes (split
 * among threads; skipped when the same rows are already there from a
 * matrix with the same input), then each thread multiplies its slice of
 * W's rows by all M rows with gemm_gguf. F16 / BF16 read A itself. */
static void matmul_gguf(struct tlm_context *c, int64_t M, const tlm_tensor *W, const float *A,
                        bool accumulate, float *C, int64_t ldc) {
    const tlm_kernels *kern = c->kern;
    const int t = tensor_ggml_type(W);
    const unsigned need = act_needs(W);
    const int64_t K = W->cols;
    const int form = need == ACT_K256;
    const size_t row_bytes =
        need ? tlm_gguf_act_row_bytes(form ? TLM_GGUF_ACT_Q8_K256 : TLM_GGUF_ACT_Q8_G32, K) : 0;
    uint8_t *rows = c->act_rows[form];
    const bool ready =
        !need || (c->rows_src[form] == A && c->rows_m[form] == M && c->rows_k[form] == K);
    const void *xq = need ? (const void *)rows : (const void *)A;
#pragma omp parallel num_threads(c->n_threads)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t i0, i1, r0, r1;
        if (!ready) { /* the same for every thread */
            item_slice(M, ith, nth, &i0, &i1);
            for (int64_t i = i0; i < i1; i++) {
                if (form) kern->quantize_act_q8_k256(A + i * K, rows + (size_t)i * row_bytes, K);
                else kern->quantize_act_q8_g32(A + i * K, rows + (size_t)i * row_bytes, K);
            }
#pragma omp barrier
        }
        thread_slice(W->rows, ith, nth, &r0, &r1);
        if (r1 > r0) kern->gemm_gguf[t](W->data, xq, C, ldc, M, K, r0, r1, accumulate);
    }
    if (need) {
        c->rows_src[form] = A;
        c->rows_m[form] = M;
        c->rows_k[form] = K;
    }
}

/* C[M, 0:N] = A[M,K] W^T + beta C for any W (N, K). A GGUF W goes through
 * matmul_gguf below GGUF_PANEL_MIN_ROWS rows; a packed W goes
 * through matmul_int8 where the kernel table prefers it; otherwise it is
 * dequantized in panels of at most PANEL_ROWS rows (a multiple of 16, at least
 * one per thread), each thread dequantizing a panel into its own buffer and
 * multiplying it on its own (oneDNN runs one thread inside a parallel region). */
static tlm_status matmul(struct tlm_context *c, int64_t M, const tlm_tensor *W, const float *A,
                         float beta, float *C, int64_t ldc, tlm_error *err) {
    if (is_gguf(W) && M < GGUF_PANEL_MIN_ROWS) {
        matmul_gguf(c, M, W, A, beta != 0.0f, C, ldc);
        return TLM_OK;
    }
    if (!is_quant(W) && !is_gguf(W)) return sgemm_wt(M, W->rows, W->cols, A, W->data, beta, C, ldc, err);
    /* int8 and int4 weights: rounding the activations to int8 (as decode
     * does) costs SmolLM2's activation-aware int4 model +0.06% perplexity
     * on 100 KB of WikiText-2 (26.501 -> 26.517) for about 1.4x prefill. */
    if (is_quant(W) && c->kern->gemm_q_preferred) {
        matmul_int8(c, M, W, A, beta != 0.0f, C, ldc);
        return TLM_OK;
    }
    const int64_t N = W->rows, K = W->cols, nth = c->n_threads;
    int64_t n_panels = (N + PANEL_ROWS - 1) / PANEL_ROWS;
    if (n_panels < nth) n_panels = nth;
    n_panels = (n_panels + nth - 1) / nth * nth;
    int64_t prow = (N + n_panels - 1) / n_panels;
    prow = (prow + TLM_QROWS - 1) / TLM_QROWS * TLM_QROWS;
    n_panels = (N + prow - 1) / prow;
    int failed = 0;
#pragma omp parallel for num_threads(c->n_threads) schedule(static, 1)
    for (int64_t pi = 0; pi < n_panels; pi++) {
        int64_t p0 = pi * prow, p1 = p0 + prow < N ? p0 + prow : N;
        float *buf = c->panel + (size_t)omp_get_thread_num() * PANEL_ROWS * (size_t)c->panel_cols;
        dequant_rows(c->kern, W, buf, p0, p1);
        if (dnnl_sgemm('N', 'T', M, p1 - p0, K, 1.0f, A, K, buf, K, beta, C + p0, ldc) !=
            dnnl_success) {
#pragma omp atomic write
            failed = 1;
        }
    }
    if (failed)
        return tlm_seterr(err, TLM_ERR_NOMEM, "matrix product %lldx%lldx%lld failed (oneDNN)",
                          (long long)M, (long long)N, (long long)K);
    return TLM_OK;
}

/* A stage writing activations: the quantized rows of matmul_gguf are stale
 * after it. */
#define PARALLEL_STAGE(c, call)                                                   \
    (c)->rows_src[0] = (c)->rows_src[1] = NULL;                                   \
    _Pragma("omp parallel num_threads((c)->n_threads)") {                        \
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();             \
        call;                                                                     \
    }

/* An observer call when there is an observer (forward.h): a NULL test per
 * stage is all the inference path pays. */
#define OBSERVE(obs, point, layer, act, n, cols) \
    do { if (obs) (obs)->observe((obs)->user, point, layer, act, n, cols); } while (0)

/* ------------------------------------------------------------ gemma3
 *
 * A Gemma 3 sublayer over n (>= 1) tokens, with the post-norm inside it:
 *   attention: h = rmsnorm(x) * norm; q, k, v = h Wq^T, h Wk^T, h Wv^T;
 *              each q and k head RMS-normalised (q_norm, k_norm) then
 *              rotated (NEOX pairs, the local or the global base);
 *              a = softmax(attn_scale * q k^T, causal, and on a local layer
 *              only the last sliding_window positions) v;
 *              x += rmsnorm(a Wo^T) * post_norm
 *   MLP:       x += rmsnorm((gelu_tanh(h Wg^T) * h Wu^T) Wd^T) * post_norm
 * Decode runs it too (n = 1): one schedule for both. The observer sees
 * what it sees of a llama sublayer; FWD_*_RESID is x after the add. */

/* The RoPE tables of the step for a local or a global layer of gemma3. */
static void gemma3_rope_tables(struct tlm_context *c, bool local, int32_t n) {
    const double *inv_freq = local ? c->rope_inv_freq_local : c->rope_inv_freq;
    int32_t half = c->model->hp.rope_dim / 2;
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < half; j++) {
            double angle = (double)(c->pos + i) * inv_freq[j];
            c->rope_cos[(size_t)i * half + j] = (float)cos(angle);
            c->rope_sin[(size_t)i * half + j] = (float)sin(angle);
        }
}

/* q/k head norms, RoPE, and the keys/values into the cache; work items as
 * in stage_qkv_finish. */
static void stage_gemma3_qkv(struct tlm_context *c, const tlm_sublayer *S, int32_t n, int ith,
                             int nth) {
    const tlm_hparams *hp = &c->model->hp;
    const float *qn = tensor_f32(&S->w[ATTN_Q_NORM]), *kn = tensor_f32(&S->w[ATTN_K_NORM]);
    int32_t hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd;
    int32_t heads = hp->n_head + hp->n_head_kv;
    int64_t i0, i1;
    item_slice((int64_t)n * heads, ith, nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        int32_t i = (int32_t)(item / heads), h = (int32_t)(item % heads);
        if (h < hp->n_head) {
            float *qh = c->q + (size_t)i * q_dim + (size_t)h * hd;
            c->kern->rmsnorm_f32(qh, qh, qn, hd, hp->rms_eps);
            rope_apply(c, qh, i);
        } else {
            int32_t g = h - hp->n_head;
            float *kh = c->k + (size_t)i * kv_dim + (size_t)g * hd;
            c->kern->rmsnorm_f32(kh, kh, kn, hd, hp->rms_eps);
            rope_apply(c, kh, i);
            kv_store(c, false, S->kv_slot, g, c->pos + i, kh);
            kv_store(c, true, S->kv_slot, g, c->pos + i, c->v + (size_t)i * kv_dim + (size_t)g * hd);
        }
    }
}

/* stage_attention with Gemma's scale and, on a local layer, the window: the
 * keys before it get weight 0 (scored, then zeroed: the cache holds every
 * position, and the kernels read keys from position 0). */
static void stage_gemma3_attention(struct tlm_context *c, const tlm_sublayer *S, int32_t n,
                                   int ith, int nth) {
    const tlm_hparams *hp = &c->model->hp;
    int32_t hd = hp->head_dim, q_dim = hp->n_head * hd, group = hp->n_head / hp->n_head_kv;
    float scale = hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)hd);
    int32_t window = model_layer_is_local(hp, S->layer) ? hp->sliding_window : 0;
    float *scores = c->scores + (size_t)ith * c->n_ctx;
    int64_t i0, i1;
    item_slice((int64_t)n * hp->n_head, ith, nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        int32_t i = (int32_t)(item / hp->n_head), h = (int32_t)(item % hp->n_head);
        int32_t g = h / group, n_keys = c->pos + i + 1;
        const float *qh = c->q + (size_t)i * q_dim + (size_t)h * hd;
        kv_scores(c, S->kv_slot, g, qh, scores, n_keys, scale);
        int32_t first = window && n_keys > window ? n_keys - window : 0;
        c->kern->softmax_f32(scores + first, n_keys - first);
        memset(scores, 0, (size_t)first * sizeof *scores);
        kv_values(c, S->kv_slot, g, scores, c->attn + (size_t)i * q_dim + (size_t)h * hd, n_keys);
    }
}

/* gate = gelu(gate) * up over the step, GELU's tanh approximation. */
static void stage_gelu_tanh_mul(struct tlm_context *c, int32_t n, int ith, int nth) {
    int64_t i0, i1;
    item_slice((int64_t)n * c->model->hp.n_ff, ith, nth, &i0, &i1);
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = i0; i < i1; i++) {
        float g = c->gate[i];
        c->gate[i] = 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g))) * c->up[i];
    }
}

/* x += rmsnorm(y) * w, row by row; y is overwritten. */
static void stage_post_norm_add(struct tlm_context *c, float *y, const float *w, int32_t n,
                                int ith, int nth) {
    const tlm_hparams *hp = &c->model->hp;
    int64_t r0, r1;
    item_slice(n, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *yr = y + r * hp->n_embd, *xr = c->x + r * hp->n_embd;
        c->kern->rmsnorm_f32(yr, yr, w, hp->n_embd, hp->rms_eps);
        for (int32_t e = 0; e < hp->n_embd; e++) xr[e] += yr[e];
    }
}

static tlm_status sublayer_gemma3(struct tlm_context *c, const tlm_sublayer *S, int32_t n,
                                  const forward_observer *obs, tlm_error *err) {
    const tlm_hparams *hp = &c->model->hp;
    int64_t E = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    const float *norm = tensor_f32(&S->w[SUBLAYER_NORM]);
    const int32_t l = S->layer;
    tlm_status st;
    if (S->kind == TLM_SUBLAYER_ATTN) {
        OBSERVE(obs, FWD_ATTN_IN, l, c->x, n, E);
        PARALLEL_STAGE(c, stage_rmsnorm(c, c->xn, c->x, norm, n, ith, nth));
        OBSERVE(obs, FWD_QKV_IN, l, c->xn, n, E);
        if ((st = matmul(c, n, &S->w[ATTN_Q], c->xn, 0.0f, c->q, q_dim, err)) ||
            (st = matmul(c, n, &S->w[ATTN_K], c->xn, 0.0f, c->k, kv_dim, err)) ||
            (st = matmul(c, n, &S->w[ATTN_V], c->xn, 0.0f, c->v, kv_dim, err)))
            return st;
        gemma3_rope_tables(c, model_layer_is_local(hp, l), n);
        PARALLEL_STAGE(c, stage_gemma3_qkv(c, S, n, ith, nth));
        PARALLEL_STAGE(c, stage_gemma3_attention(c, S, n, ith, nth));
        OBSERVE(obs, FWD_ATTN_OUT, l, c->attn, n, q_dim);
        if ((st = matmul(c, n, &S->w[ATTN_OUT], c->attn, 0.0f, c->xn, E, err))) return st;
        PARALLEL_STAGE(c, stage_post_norm_add(c, c->xn, tensor_f32(&S->w[ATTN_POST_NORM]), n, ith, nth));
        OBSERVE(obs, FWD_ATTN_RESID, l, c->x, n, E);
        return TLM_OK;
    }
    PARALLEL_STAGE(c, stage_rmsnorm(c, c->xn, c->x, norm, n, ith, nth));
    OBSERVE(obs, FWD_FFN_IN, l, c->xn, n, E);
    if ((st = matmul(c, n, &S->w[MLP_GATE], c->xn, 0.0f, c->gate, F, err)) ||
        (st = matmul(c, n, &S->w[MLP_UP], c->xn, 0.0f, c->up, F, err)))
        return st;
    PARALLEL_STAGE(c, stage_gelu_tanh_mul(c, n, ith, nth));
    OBSERVE(obs, FWD_DOWN_IN, l, c->gate, n, F);
    if ((st = matmul(c, n, &S->w[MLP_DOWN], c->gate, 0.0f, c->xn, E, err))) return st;
    PARALLEL_STAGE(c, stage_post_norm_add(c, c->xn, tensor_f32(&S->w[MLP_POST_NORM]), n, ith, nth));
    OBSERVE(obs, FWD_MLP_RESID, l, c->x, n, E);
    return TLM_OK;
}

/* Gemma's final soft-capping of n rows of logits (none without a cap). */
static void logits_softcap(const struct tlm_context *c, float *logits, int64_t rows) {
    const float cap = c->model->hp.logit_softcap;
    if (cap <= 0) return;
    int64_t total = rows * c->model->hp.n_vocab;
    for (int64_t i = 0; i < total; i++) logits[i] = cap * tanhf(logits[i] / cap);
}

/* Sublayer S over n (2..n_batch) tokens whose residual stream is in c->x. */
static tlm_status sublayer_batch(struct tlm_context *c, const tlm_sublayer *S, int32_t n,
                                 const forward_observer *obs, tlm_error *err) {
    const tlm_hparams *hp = &c->model->hp;
    int64_t E = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    const float *norm = tensor_f32(&S->w[SUBLAYER_NORM]);
    const int32_t l = S->layer;
    tlm_status st;
    if (hp->arch == TLM_ARCH_GEMMA3) return sublayer_gemma3(c, S, n, obs, err);
    if (S->kind == TLM_SUBLAYER_ATTN) {
        OBSERVE(obs, FWD_ATTN_IN, l, c->x, n, E);
        PARALLEL_STAGE(c, stage_rmsnorm(c, c->xn, c->x, norm, n, ith, nth));
        OBSERVE(obs, FWD_QKV_IN, l, c->xn, n, E);
        if ((st = matmul(c, n, &S->w[ATTN_Q], c->xn, 0.0f, c->q, q_dim, err)) ||
            (st = matmul(c, n, &S->w[ATTN_K], c->xn, 0.0f, c->k, kv_dim, err)) ||
            (st = matmul(c, n, &S->w[ATTN_V], c->xn, 0.0f, c->v, kv_dim, err)))
            return st;
        PARALLEL_STAGE(c, stage_qkv_finish(c, S, n, ith, nth));
        PARALLEL_STAGE(c, stage_attention(c, S->kv_slot, n, ith, nth));
        OBSERVE(obs, FWD_ATTN_OUT, l, c->attn, n, q_dim);
        if ((st = matmul(c, n, &S->w[ATTN_OUT], c->attn, 1.0f, c->x, E, err))) return st;
        OBSERVE(obs, FWD_ATTN_RESID, l, c->x, n, E);
        return TLM_OK;
    }
    PARALLEL_STAGE(c, stage_rmsnorm(c, c->xn, c->x, norm, n, ith, nth));
    OBSERVE(obs, FWD_FFN_IN, l, c->xn, n, E);
    if ((st = matmul(c, n, &S->w[MLP_GATE], c->xn, 0.0f, c->gate, F, err)) ||
        (st = matmul(c, n, &S->w[MLP_UP], c->xn, 0.0f, c->up, F, err)))
        return st;
    PARALLEL_STAGE(c, stage_silu_mul(c, n, ith, nth));
    OBSERVE(obs, FWD_DOWN_IN, l, c->gate, n, F);
    if ((st = matmul(c, n, &S->w[MLP_DOWN], c->gate, 1.0f, c->x, E, err))) return st;
    OBSERVE(obs, FWD_MLP_RESID, l, c->x, n, E);
    return TLM_OK;
}

/* The sublayers of original layer l, in order (a layer-major pass). */
tlm_status forward_layer_batch(struct tlm_context *c, int32_t l, int32_t n,
                               const forward_observer *obs, tlm_error *err) {
    const struct tlm_model *m = c->model;
    tlm_status st;
    for (int32_t i = 0; i < m->n_subs; i++)
        if (m->subs[i].layer == l && (st = sublayer_batch(c, &m->subs[i], n, obs, err))) return st;
    return TLM_OK;
}

/* Runs n (2..n_batch) tokens whose embeddings are in c->x. When logits_out is
 * not NULL, writes n rows of logits there (all_logits); otherwise leaves the
 * final hidden state in c->x for the caller. */
static tlm_status forward_batch(struct tlm_context *c, int32_t n, float *logits_out,
                                tlm_error *err) {
    const struct tlm_model *m = c->model;
    const tlm_hparams *hp = &m->hp;
    tlm_status st;
    for (int32_t i = 0; i < m->n_subs; i++)
        if ((st = sublayer_batch(c, &m->subs[i], n, NULL, err))) return st;
    if (logits_out) {
        PARALLEL_STAGE(c, stage_rmsnorm(c, c->xn, c->x, tensor_f32(&m->out_norm), n, ith, nth));
        if ((st = matmul(c, n, &m->output, c->xn, 0.0f, logits_out, hp->n_vocab, err))) return st;
        logits_softcap(c, logits_out, n);
    }
    return TLM_OK;
}

/* Logits of one hidden-state row (n_embd floats, not yet normalised). */
static void logits_of_row(struct tlm_context *c, const float *row, float *logits_out) {
    const struct tlm_model *m = c->model;
    const tlm_hparams *hp = &m->hp;
    const tlm_tensor *out = &m->output;
    c->kern->rmsnorm_f32(c->xn, row, tensor_f32(&m->out_norm), hp->n_embd, hp->rms_eps);
    const act_in a = act_quantize(c, act_needs(out), c->xn, hp->n_embd, c->xq);
#pragma omp parallel num_threads(c->n_threads)
    {
        int64_t r0, r1;
        matrix_slice(out, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        if (r1 > r0) matvec_rows(c->kern, out, &a, logits_out, r0, r1);
    }
    logits_softcap(c, logits_out, 1);
}

/* ---------------------------------------------------- decode (n = 1) */

/* This thread's int8 activation buffer. */
static inline uint8_t *thread_xq(const struct tlm_context *c, int ith) {
    return c->xq ? c->xq + (size_t)ith * c->xq_stride : NULL;
}

/* Decode Q/K/V by head: the (n_head + 2 n_head_kv) head-sized blocks of rows
 * are split among threads, and a thread finishes its own heads (bias, RoPE,
 * KV-cache store) without waiting for the others. xn: this thread's
 * normalised input (n_embd) in the forms the matrices take.
 * Each head is computed into the step buffers (q, k, v), and keys and values
 * are stored into the cache from there in the cache's type. */
static void decode_qkv_heads(struct tlm_context *c, const tlm_sublayer *S, const act_in *xn,
                             int ith, int nth) {
    const tlm_hparams *hp = &c->model->hp;
    const tlm_kernels *kern = c->kern;
    const float *bq = tensor_f32(&S->w[ATTN_Q_BIAS]), *bk = tensor_f32(&S->w[ATTN_K_BIAS]),
                *bv = tensor_f32(&S->w[ATTN_V_BIAS]);
    int32_t hd = hp->head_dim;
    int64_t u0, u1;
    item_slice(hp->n_head + 2 * hp->n_head_kv, ith, nth, &u0, &u1);
    for (int64_t u = u0; u < u1; u++) {
        if (u < hp->n_head) {
            int32_t h = (int32_t)u;
            float *qh = c->q + (size_t)h * hd;
            matvec_rows(kern, &S->w[ATTN_Q], xn, c->q, (int64_t)h * hd, (int64_t)(h + 1) * hd);
            if (bq)
                for (int32_t d = 0; d < hd; d++) qh[d] += bq[h * hd + d];
            rope_apply(c, qh, 0);
        } else if (u < hp->n_head + hp->n_head_kv) {
            int32_t g = (int32_t)u - hp->n_head;
            float *kh = c->k + (size_t)g * hd;
            matvec_rows(kern, &S->w[ATTN_K], xn, c->k, (int64_t)g * hd, (int64_t)(g + 1) * hd);
            if (bk)
                for (int32_t d = 0; d < hd; d++) kh[d] += bk[g * hd + d];
            rope_apply(c, kh, 0);
            kv_store(c, false, S->kv_slot, g, c->pos, kh);
        } else {
            int32_t g = (int32_t)u - hp->n_head - hp->n_head_kv;
            float *vh = c->v + (size_t)g * hd;
            matvec_rows(kern, &S->w[ATTN_V], xn, c->v, (int64_t)g * hd, (int64_t)(g + 1) * hd);
            if (bv)
                for (int32_t d = 0; d < hd; d++) vh[d] += bv[g * hd + d];
            kv_store(c, true, S->kv_slot, g, c->pos, vh);
        }
    }
}

/* One token (embedding in c->x) through every layer and, when logits_out is
 * not NULL, the output head — all in one parallel region with three barriers
 * per attention sublayer and two per MLP. Each thread normalises the residual stream into its own buffer
 * (576 floats: cheaper than a barrier), and finishes what it can on its own
 * rows (SwiGLU on its gate/up rows, the residual add on its Wo/Wd rows). */
static void forward_one(struct tlm_context *c, float *logits_out) {
    const struct tlm_model *m = c->model;
    const tlm_hparams *hp = &m->hp;
    const tlm_kernels *kern = c->kern;
    int64_t E = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim, F = hp->n_ff;

#pragma omp parallel num_threads(c->n_threads)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        float *xn = c->xn_thread + (size_t)ith * (size_t)E;
        uint8_t *xq = thread_xq(c, ith);
        act_in a;
        int64_t r0, r1;
        for (int32_t i = 0; i < m->n_subs; i++) {
            const tlm_sublayer *S = &m->subs[i];
            kern->rmsnorm_f32(xn, c->x, tensor_f32(&S->w[SUBLAYER_NORM]), E, hp->rms_eps);
            if (S->kind == TLM_SUBLAYER_ATTN) {
                const tlm_tensor *wq = &S->w[ATTN_Q], *wk = &S->w[ATTN_K], *wv = &S->w[ATTN_V],
                                 *wo = &S->w[ATTN_OUT];
                a = act_quantize(c, act_needs(wq) | act_needs(wk) | act_needs(wv), xn, E, xq);
                decode_qkv_heads(c, S, &a, ith, nth);
#pragma omp barrier
                stage_attention(c, S->kv_slot, 1, ith, nth);
#pragma omp barrier
                a = act_quantize(c, act_needs(wo), c->attn, q_dim, xq);
                matrix_slice(wo, ith, nth, &r0, &r1);
                if (r1 > r0) {
                    matvec_rows(kern, wo, &a, c->proj, r0, r1);
                    for (int64_t r = r0; r < r1; r++) c->x[r] += c->proj[r];
                }
#pragma omp barrier
                continue;
            }
            const tlm_tensor *wg = &S->w[MLP_GATE], *wu = &S->w[MLP_UP], *wd = &S->w[MLP_DOWN];
            a = act_quantize(c, act_needs(wg) | act_needs(wu), xn, E, xq);
            /* gate and up share the slice, so that SwiGLU runs on own rows:
             * whole tiles when either is quantized */
            matrix_slice(is_quant(wg) ? wg : wu, ith, nth, &r0, &r1);
            if (r1 > r0) {
                matvec_rows(kern, wg, &a, c->gate, r0, r1);
                matvec_rows(kern, wu, &a, c->up, r0, r1);
                kern->silu_mul_f32(c->gate + r0, c->up + r0, r1 - r0);
            }
#pragma omp barrier
            a = act_quantize(c, act_needs(wd), c->gate, F, xq);
            matrix_slice(wd, ith, nth, &r0, &r1);
            if (r1 > r0) {
                matvec_rows(kern, wd, &a, c->proj, r0, r1);
                for (int64_t r = r0; r < r1; r++) c->x[r] += c->proj[r];
            }
#pragma omp barrier
        }
        if (logits_out) {
            const tlm_tensor *out = &m->output;
            kern->rmsnorm_f32(xn, c->x, tensor_f32(&m->out_norm), E, hp->rms_eps);
            a = act_quantize(c, act_needs(out), xn, E, xq);
            matrix_slice(out, ith, nth, &r0, &r1);
            if (r1 > r0) matvec_rows(kern, out, &a, logits_out, r0, r1);
        }
    }
}
/* ------------------------------------------------------------ context */

tlm_context_params tlm_context_default_params(void) {
    return (tlm_context_params){.n_ctx = 0, .n_threads = 0, .n_batch = 0, .kv_type = TLM_KV_F16};
}

const char *tlm_kv_type_name(int32_t type) {
    switch (type) {
    case TLM_KV_F16: return "f16";
    case TLM_KV_F32: return "f32";
    case TLM_KV_INT8: return "int8";
    default: return "unknown";
    }
}

int32_t tlm_kv_type_from_name(const char *name) {
    if (!name) return -1;
    for (int32_t t = TLM_KV_F16; t <= TLM_KV_INT8; t++)
        if (!strcmp(name, tlm_kv_type_name(t))) return t;
    return -1;
}

/* Bytes of one cached head vector (keys or values) of head_dim values. */
static size_t kv_row_bytes(int32_t kv_type, int32_t head_dim) {
    switch (kv_type) {
    case TLM_KV_F32: return (size_t)head_dim * sizeof(float);
    case TLM_KV_F16: return (size_t)head_dim * sizeof(uint16_t);
    default: return (size_t)head_dim + sizeof(float); /* int8 values + the f32 scale */
    }
}

void tlm_context_free(tlm_context *c) {
    if (!c) return;
    tlm_free(c->k_cache);
    tlm_free(c->v_cache);
    tlm_free(c->k_scale);
    tlm_free(c->v_scale);
    tlm_free(c->x);
    tlm_free(c->xn);
    tlm_free(c->q);
    tlm_free(c->k);
    tlm_free(c->v);
    tlm_free(c->attn);
    tlm_free(c->gate);
    tlm_free(c->up);
    tlm_free(c->proj);
    tlm_free(c->xn_thread);
    tlm_free(c->rope_cos);
    tlm_free(c->rope_sin);
    tlm_free(c->rope_inv_freq);
    tlm_free(c->rope_inv_freq_local);
    tlm_free(c->scores);
    tlm_free(c->xq);
    tlm_free(c->panel);
    tlm_free(c->xq_rows);
    tlm_free(c->act_rows[0]);
    tlm_free(c->act_rows[1]);
    tlm_free(c->logits);
    tlm_free(c);
}

/* rows*cols floats, overflow-checked; NULL with err set on failure. */
static void *alloc_floats(size_t rows, size_t cols, size_t elem, const char *what,
                          tlm_error *err) {
    size_t n, bytes;
    if (tlm_mul_overflow(rows, cols, &n) || tlm_mul_overflow(n, elem, &bytes)) {
        tlm_seterr(err, TLM_ERR_ARG, "context: the %s buffer (%zu x %zu) overflows the address space",
                   what, rows, cols);
        return NULL;
    }
    void *p = tlm_malloc_aligned(bytes ? bytes : 1);
    if (!p)
        tlm_seterr(err, TLM_ERR_NOMEM, "context: out of memory allocating %zu bytes for the %s",
                   bytes, what);
    return p;
}

tlm_context *tlm_context_new(const tlm_model *m, const tlm_context_params *p, tlm_error *err) {
    tlm_clearerr(err);
    if (!m) {
        tlm_seterr(err, TLM_ERR_ARG, "context: no model given");
        return NULL;
    }
    tlm_context_params prm = p ? *p : tlm_context_default_params();
    const tlm_hparams *hp = &m->hp;
    if (prm.n_ctx < 0 || prm.n_threads < 0 || prm.n_batch < 0) {
        tlm_seterr(err, TLM_ERR_ARG,
                   "context: n_ctx (%d), n_threads (%d) and n_batch (%d) must not be negative",
                   prm.n_ctx, prm.n_threads, prm.n_batch);
        return NULL;
    }
    if (prm.n_threads > TLM_MAX_THREADS) {
        tlm_seterr(err, TLM_ERR_ARG, "context: n_threads %d is more than %d", prm.n_threads,
                   TLM_MAX_THREADS);
        return NULL;
    }
    if (prm.kv_type != TLM_KV_F16 && prm.kv_type != TLM_KV_F32 && prm.kv_type != TLM_KV_INT8) {
        tlm_seterr(err, TLM_ERR_ARG, "context: unknown KV-cache type %d (f16, f32 or int8)",
                   prm.kv_type);
        return NULL;
    }
    int32_t n_ctx = prm.n_ctx;
    if (n_ctx == 0) n_ctx = hp->n_ctx_train < TLM_DEFAULT_N_CTX ? hp->n_ctx_train : TLM_DEFAULT_N_CTX;
    if (n_ctx < 1) n_ctx = 1;
    int32_t n_batch = prm.n_batch ? prm.n_batch : TLM_DEFAULT_N_BATCH;
    if (n_batch > n_ctx) n_batch = n_ctx;
    int32_t n_threads = prm.n_threads ? prm.n_threads : tlm_physical_cores();
    if (n_threads < 1) n_threads = 1;

    /* The KV cache is the big one: say its size when it cannot exist. */
    int32_t n_kv_slots = m->n_attn;
    size_t kv_dim = (size_t)hp->n_head_kv * (size_t)hp->head_dim, kv_rows, kv_elems, kv_bytes;
    if (tlm_mul_overflow((size_t)n_ctx, (size_t)(n_kv_slots ? n_kv_slots : 1), &kv_rows) ||
        tlm_mul_overflow(kv_rows, (size_t)hp->n_head_kv, &kv_rows) ||
        tlm_mul_overflow(kv_rows, (size_t)hp->head_dim, &kv_elems) ||
        tlm_mul_overflow(kv_rows, 2 * kv_row_bytes(prm.kv_type, hp->head_dim), &kv_bytes)) {
        tlm_seterr(err, TLM_ERR_ARG,
                   "context: a KV cache of %d tokens x %d layers x %zu values x 2 overflows the address space",
                   n_ctx, n_kv_slots, kv_dim);
        return NULL;
    }

    /* Virtual memory is overcommitted: a cache larger than the machine's RAM
     * would "succeed" here and fail later, page by page. Refuse it now. */
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0 && kv_bytes / (size_t)page_size >= (size_t)pages) {
        tlm_seterr(err, TLM_ERR_NOMEM,
                   "context: n_ctx %d needs a %zu-byte KV cache, more than this machine's %zu bytes of memory; "
                   "try a smaller n_ctx",
                   n_ctx, kv_bytes, (size_t)pages * (size_t)page_size);
        return NULL;
    }

    struct tlm_context *c = tlm_calloc(1, sizeof *c);
    if (!c) {
        tlm_seterr(err, TLM_ERR_NOMEM, "context: out of memory");
        return NULL;
    }
    c->model = m;
    c->kern = tlm_kernels_best();
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->n_threads = n_threads;
    c->kv_type = prm.kv_type;
    c->kv_elem = prm.kv_type == TLM_KV_F32 ? 4 : prm.kv_type == TLM_KV_F16 ? 2 : 1;

    size_t B = (size_t)n_batch, E = (size_t)hp->n_embd;
    size_t q_dim = (size_t)hp->n_head * (size_t)hp->head_dim, F = (size_t)hp->n_ff;
    size_t half = (size_t)hp->rope_dim / 2;
    if (!(c->k_cache = alloc_floats(kv_elems, 1, c->kv_elem, "key cache", err)) ||
        !(c->v_cache = alloc_floats(kv_elems, 1, c->kv_elem, "value cache", err)) ||
        (c->kv_type == TLM_KV_INT8 &&
         (!(c->k_scale = alloc_floats(kv_rows, 1, sizeof(float), "key-cache scales", err)) ||
          !(c->v_scale = alloc_floats(kv_rows, 1, sizeof(float), "value-cache scales", err)))) ||
        !(c->x = alloc_floats(B, E, sizeof(float), "residual stream", err)) ||
        !(c->xn = alloc_floats(B, E, sizeof(float), "normalised activations", err)) ||
        !(c->q = alloc_floats(B, q_dim, sizeof(float), "queries", err)) ||
        !(c->k = alloc_floats(B, kv_dim, sizeof(float), "keys", err)) ||
        !(c->v = alloc_floats(B, kv_dim, sizeof(float), "values", err)) ||
        !(c->attn = alloc_floats(B, q_dim, sizeof(float), "attention output", err)) ||
        !(c->gate = alloc_floats(B, F, sizeof(float), "MLP gate", err)) ||
        !(c->up = alloc_floats(B, F, sizeof(float), "MLP up", err)) ||
        !(c->proj = alloc_floats(E, 1, sizeof(float), "projection", err)) ||
        !(c->xn_thread = alloc_floats((size_t)n_threads, E, sizeof(float), "per-thread activations", err)) ||
        !(c->rope_cos = alloc_floats(B, half, sizeof(float), "RoPE table", err)) ||
        !(c->rope_sin = alloc_floats(B, half, sizeof(float), "RoPE table", err)) ||
        !(c->rope_inv_freq = alloc_floats(half, 1, sizeof(double), "RoPE frequencies", err)) ||
        !(c->scores = alloc_floats((size_t)n_threads, (size_t)n_ctx, sizeof(float),
                                   "attention scores", err)) ||
        !(c->logits = alloc_floats(1, (size_t)hp->n_vocab, sizeof(float), "logits", err))) {
        if (err && err->code == TLM_ERR_NOMEM && kv_bytes > ((size_t)1 << 30))
            tlm_seterr(err, TLM_ERR_NOMEM,
                       "context: out of memory for n_ctx %d (the KV cache alone needs %zu bytes); try a smaller n_ctx",
                       n_ctx, kv_bytes);
        tlm_context_free(c);
        return NULL;
    }
    if (model_has_quant(m)) {
        /* every matrix input is n_embd, q_dim or n_ff wide */
        size_t widest = E > q_dim ? E : q_dim;
        if (F > widest) widest = F;
        size_t blocks = (widest + TLM_QGROUP - 1) / TLM_QGROUP;
        /* both forms of the widest input (rounded up to whole blocks) */
        size_t g32_bytes = (blocks * sizeof(tlm_block_q8_g32_act) + 63) / 64 * 64;
        size_t k256_bytes = (widest + 255) / 256 * sizeof(tlm_block_q8_k256_act);
        c->xq_k256_at = g32_bytes;
        c->xq_stride = g32_bytes + k256_bytes;
        c->panel_cols = (int64_t)widest;
        if (!(c->xq = alloc_floats((size_t)n_threads, c->xq_stride, 1, "quantized activations", err)) ||
            !(c->act_rows[0] = alloc_floats(B, g32_bytes, 1, "quantized activation rows", err)) ||
            !(c->act_rows[1] = alloc_floats(B, k256_bytes, 1, "quantized activation rows", err)) ||
            !(c->panel = alloc_floats((size_t)n_threads * PANEL_ROWS, widest, sizeof(float),
                                      "dequantized weight panels", err)) ||
            !(c->xq_rows = alloc_floats(B, blocks, sizeof(tlm_block_q8_g32_act),
                                        "quantized activation rows", err))) {
            tlm_context_free(c);
            return NULL;
        }
    }
    c->logits_rows_cap = 1;
    c->n_kv_slots = n_kv_slots;
    rope_init_freqs(c);
    if (hp->arch == TLM_ARCH_GEMMA3) {
        if (!(c->rope_inv_freq_local = alloc_floats(half, 1, sizeof(double), "RoPE frequencies", err))) {
            tlm_context_free(c);
            return NULL;
        }
        for (size_t j = 0; j < half; j++)
            c->rope_inv_freq_local[j] = pow((double)hp->rope_theta_local, -2.0 * (double)j / (double)hp->rope_dim);
    }
    return c;
}

int32_t tlm_context_n_ctx(const tlm_context *c) { return c ? c->n_ctx : 0; }
int32_t tlm_context_pos(const tlm_context *c) { return c ? c->pos : 0; }

int64_t tlm_context_kv_bytes_per_token(const tlm_context *c) {
    if (!c) return 0;
    const tlm_hparams *hp = &c->model->hp;
    return 2 * (int64_t)c->n_kv_slots * hp->n_head_kv *
           (int64_t)kv_row_bytes(c->kv_type, hp->head_dim);
}

int32_t tlm_context_kv_type(const tlm_context *c) { return c ? c->kv_type : TLM_KV_F16; }

void tlm_context_reset(tlm_context *c) {
    if (!c) return;
    c->pos = 0;
    c->last_n = 0;
}

void tlm_context_truncate(tlm_context *c, int32_t n) {
    if (!c || n < 0 || n >= c->pos) return;
    c->pos = n;
    c->last_n = 0;
}

/* ------------------------------------------------------------- decode */

static tlm_status ensure_logits_rows(struct tlm_context *c, size_t rows, tlm_error *err) {
    if (rows <= c->logits_rows_cap) return TLM_OK;
    float *grown = alloc_floats(rows, (size_t)c->model->hp.n_vocab, sizeof(float), "logits", err);
    if (!grown) return err ? err->code : TLM_ERR_NOMEM;
    tlm_free(c->logits);
    c->logits = grown;
    c->logits_rows_cap = rows;
    return TLM_OK;
}

static void embed_tokens(struct tlm_context *c, const int32_t *tokens, int32_t n) {
    const tlm_tensor *emb = &c->model->tok_embd;
    size_t E = (size_t)emb->cols;
    for (int32_t i = 0; i < n; i++) {
        const int t = tensor_ggml_type(emb);
        uint64_t row_bytes;
        if (is_quant(emb))
            dequant_rows(c->kern, emb, c->x + (size_t)i * E, tokens[i], tokens[i] + 1);
        else if (t >= 0 && ggml_row_bytes((uint32_t)t, E, &row_bytes))
            ggml_dequantize_row((uint32_t)t, (const uint8_t *)emb->data + (size_t)tokens[i] * row_bytes,
                                c->x + (size_t)i * E, (int64_t)E);
        else
            memcpy(c->x + (size_t)i * E, tensor_f32(emb) + (size_t)tokens[i] * E, E * sizeof(float));
    }
    if (c->model->hp.arch == TLM_ARCH_GEMMA3) { /* Gemma scales the embedding by sqrt(n_embd) */
        const float scale = sqrtf((float)E);
        for (size_t i = 0; i < (size_t)n * E; i++) c->x[i] *= scale;
    }
}

tlm_status tlm_decode(tlm_context *c, const int32_t *tokens, int32_t n, bool all_logits,
                      tlm_error *err) {
    tlm_clearerr(err);
    if (!c) return tlm_seterr(err, TLM_ERR_ARG, "decode: no context given");
    if (n <= 0 || !tokens)
        return tlm_seterr(err, TLM_ERR_ARG, "decode: no tokens given (n = %d)", n);
    const tlm_hparams *hp = &c->model->hp;
    if (c->model->lazy)
        return tlm_seterr(err, TLM_ERR_ARG, "decode: the model was loaded with lazy layers "
                          "(tlm_model_load_params), for calibration and conversion only");
    if ((int64_t)c->pos + n > c->n_ctx)
        return tlm_seterr(err, TLM_ERR_CONTEXT_FULL,
                          "decode: %d tokens do not fit: pos %d + %d > n_ctx %d", n, c->pos, n,
                          c->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return tlm_seterr(err, TLM_ERR_ARG,
                              "decode: token %d (at index %d) is out of the vocabulary [0, %d)",
                              tokens[i], i, hp->n_vocab);
    tlm_status st = ensure_logits_rows(c, all_logits ? (size_t)n : 1, err);
    if (st) return st;

    /* oneDNN's sgemm takes its thread count from the calling thread's OpenMP
     * setting; set ours for the call and give the caller's back after. */
    int caller_threads = omp_get_max_threads();
    omp_set_num_threads(c->n_threads);

    c->last_n = 0;
    size_t V = (size_t)hp->n_vocab;
    for (int32_t done = 0; done < n && st == TLM_OK;) {
        int32_t step = n - done < c->n_batch ? n - done : c->n_batch;
        bool last_step = done + step == n;
        float *out = all_logits ? c->logits + (size_t)done * V : NULL;
        embed_tokens(c, tokens + done, step);
        rope_fill_tables(c, c->pos, step);
        if (step == 1 && c->model->hp.arch != TLM_ARCH_GEMMA3) {
            forward_one(c, all_logits ? out : last_step ? c->logits : NULL);
        } else {
            st = forward_batch(c, step, out, err);
            if (st == TLM_OK && !all_logits && last_step)
                logits_of_row(c, c->x + (size_t)(step - 1) * hp->n_embd, c->logits);
        }
        if (st == TLM_OK) {
            c->pos += step;
            done += step;
        }
    }
    omp_set_num_threads(caller_threads);
    if (st != TLM_OK) return st;
    c->last_n = n;
    c->last_all = all_logits;
    return TLM_OK;
}

const float *tlm_get_logits(const tlm_context *c, int32_t i) {
    if (!c || c->last_n == 0) return NULL;
    if (i == -1) i = c->last_n - 1;
    if (i < 0 || i >= c->last_n) return NULL;
    if (c->last_all) return c->logits + (size_t)i * (size_t)c->model->hp.n_vocab;
    return i == c->last_n - 1 ? c->logits : NULL;
}

/* ------------------------------------------- layer-major passes (forward.h) */

float *forward_residual(tlm_context *c) { return c->x; }

void forward_embed(tlm_context *c, const int32_t *tokens, int32_t n) { embed_tokens(c, tokens, n); }

void forward_set_positions(tlm_context *c, int32_t n) { rope_fill_tables(c, c->pos, n); }

int32_t forward_n_threads(const tlm_context *c) { return c->n_threads; }
