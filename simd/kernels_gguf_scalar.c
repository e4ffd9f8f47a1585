/*
 * kernels_gguf_scalar.c — the GGUF-block kernels in plain C: the definition
 * of correct for every table (simd/kernels.h, gemv_gguf / gemm_gguf), built
 * on the block decoders of gguf_kernels.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_kernels.h"

/* ---------------------------------------------------------- activations */

tlm_gguf_act tlm_gguf_act_kind(uint32_t type) {
    switch (type) {
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16: return TLM_GGUF_ACT_F32;
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0: return TLM_GGUF_ACT_Q8_G32;
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K: return TLM_GGUF_ACT_Q8_K256;
    default: return TLM_GGUF_ACT_NONE;
    }
}

size_t tlm_gguf_act_row_bytes(tlm_gguf_act kind, int64_t n_in) {
    if (n_in <= 0) return 0;
    switch (kind) {
    case TLM_GGUF_ACT_F32: return (size_t)n_in * sizeof(float);
    case TLM_GGUF_ACT_Q8_G32:
        return n_in % TLM_QGROUP ? 0 : (size_t)(n_in / TLM_QGROUP) * sizeof(tlm_block_q8_g32_act);
    case TLM_GGUF_ACT_Q8_K256:
        return n_in % TLM_K256 ? 0 : (size_t)(n_in / TLM_K256) * sizeof(tlm_block_q8_k256_act);
    default: return 0;
    }
}

void tlm_quantize_act_q8_k256_scalar(const float *x, void *xq, int64_t n) {
    tlm_block_q8_k256_act *out = xq;
    for (int64_t b = 0; b < n / TLM_K256; b++) {
        const float *v = x + b * TLM_K256;
        float amax = 0;
        for (int j = 0; j < TLM_K256; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 16; i++) {
            int32_t sum = 0;
            for (int j = 16 * i; j < 16 * i + 16; j++) {
                /* as quantize_act_q8_g32: half to even, non-finite -> 0 */
                float r = nearbyintf(v[j] * id);
                int32_t q = r >= -127.0f && r <= 127.0f ? (int32_t)r : 0;
                out[b].qs[j] = (int8_t)q;
                sum += q;
            }
            out[b].bsum16[i] = (int16_t)sum;
        }
        for (int j = 0; j < 8; j++) out[b].bsum32[j] = (int16_t)(out[b].bsum16[2 * j] + out[b].bsum16[2 * j + 1]);
        out[b].d = d;
        memset(out[b].pad, 0, sizeof out[b].pad);
    }
}

/* ------------------------------------------------------------- K-quants */

static float k_block_dot(uint32_t type, const gguf_kblock *kb, const tlm_block_q8_k256_act *x,
                         float acc) {
    int32_t sumi = 0, summ = 0;
    for (int i = 0; i < 16; i++) {
        int32_t s = 0;
        for (int l = 16 * i; l < 16 * i + 16; l++) s += (int32_t)kb->w[l] * x->qs[l];
        sumi += kb->sc[i] * s;
        summ += kb->mn[i] * x->bsum16[i];
    }
    return gguf_k_block_fma(type, sumi, summ, kb->d, kb->dmin, x->d, acc);
}

static float block32_dot(uint32_t type, const gguf_block32 *b, const tlm_block_q8_g32_act *x,
                         float acc) {
    int32_t isum = 0;
    for (int l = 0; l < 32; l++) isum += (int32_t)b->w[l] * x->qs[l];
    return gguf_32_block_fma(type, isum, x->sum, b->d, b->m, x->d, acc);
}

/* Tokens whose accumulators one pass over a weight row keeps (GEMM). */
#define GEMM_CHUNK 64

/* Rows [r0, r1) against m activation rows; each weight block is decoded once
 * per row and chunk of GEMM_CHUNK tokens. y_t[r] lands in c[t * ldc + r]. */
static void gemm_quant_scalar(uint32_t type, const void *w, const void *xq, float *c, int64_t ldc,
                              int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const bool k = gguf_is_k(type);
    const int64_t bs = k ? TLM_K256 : TLM_QGROUP, nb = n_in / bs;
    const size_t row_bytes = (size_t)nb * gguf_block_bytes(type);
    float acc[GEMM_CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;
        for (int64_t t0 = 0; t0 < m; t0 += GEMM_CHUNK) {
            int nt = m - t0 < GEMM_CHUNK ? (int)(m - t0) : GEMM_CHUNK;
            for (int t = 0; t < nt; t++) acc[t] = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * gguf_block_bytes(type);
                if (k) {
                    gguf_kblock kb;
                    gguf_decode_k(type, blk, &kb);
                    const tlm_block_q8_k256_act *x = (const tlm_block_q8_k256_act *)xq + t0 * nb + b;
                    for (int t = 0; t < nt; t++) acc[t] = k_block_dot(type, &kb, x + t * nb, acc[t]);
                } else {
                    gguf_block32 qb;
                    gguf_decode_32(type, blk, &qb);
                    const tlm_block_q8_g32_act *x = (const tlm_block_q8_g32_act *)xq + t0 * nb + b;
                    for (int t = 0; t < nt; t++) acc[t] = block32_dot(type, &qb, x + t * nb, acc[t]);
                }
            }
            for (int t = 0; t < nt; t++) {
                float *out = c + (t0 + t) * ldc + r;
                *out = (accumulate ? *out : 0.0f) + acc[t];
            }
        }
    }
}

static void gemv_quant_scalar(uint32_t type, const void *w, const void *xq, float *y, int64_t n_in,
                              int64_t r0, int64_t r1) {
    /* the GEMM of one token, with y as its only output row */
    gemm_quant_scalar(type, w, xq, y, 0, 1, n_in, r0, r1, false);
}

/* ------------------------------------------------------------ F16, BF16 */

/* Four partial sums, as dot_f32_scalar. */
static float dot_half_scalar(bool bf16, const uint8_t *w, const float *x, int64_t n) {
    float s[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, w + 2 * i, 2);
        s[i % 4] += (bf16 ? tlm_bf16_to_f32(h) : tlm_f16_to_f32(h)) * x[i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static void gemm_half_scalar(bool bf16, const void *w, const void *xq, float *c, int64_t ldc,
                             int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const float *x = xq;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * (size_t)n_in * 2;
        for (int64_t t = 0; t < m; t++) {
            float v = dot_half_scalar(bf16, row, x + t * n_in, n_in);
            float *out = c + t * ldc + r;
            *out = (accumulate ? *out : 0.0f) + v;
        }
    }
}

/* ------------------------------------------------------------- entries */

#define DEFINE_QUANT(name, type)                                                                 \
    void tlm_gemv_gguf_##name##_scalar(const void *w, const void *xq, float *y, int64_t n_in,   \
                                       int64_t r0, int64_t r1) {                                 \
        gemv_quant_scalar(type, w, xq, y, n_in, r0, r1);                                         \
    }                                                                                            \
    void tlm_gemm_gguf_##name##_scalar(const void *w, const void *xq, float *c, int64_t ldc,    \
                                       int64_t m, int64_t n_in, int64_t r0, int64_t r1,         \
                                       bool accumulate) {                                        \
        gemm_quant_scalar(type, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                     \
    }
DEFINE_QUANT(q4_0, GGML_TYPE_Q4_0)
DEFINE_QUANT(q4_1, GGML_TYPE_Q4_1)
DEFINE_QUANT(q5_0, GGML_TYPE_Q5_0)
DEFINE_QUANT(q5_1, GGML_TYPE_Q5_1)
DEFINE_QUANT(q8_0, GGML_TYPE_Q8_0)
DEFINE_QUANT(q2_k, GGML_TYPE_Q2_K)
DEFINE_QUANT(q3_k, GGML_TYPE_Q3_K)
DEFINE_QUANT(q4_k, GGML_TYPE_Q4_K)
DEFINE_QUANT(q5_k, GGML_TYPE_Q5_K)
DEFINE_QUANT(q6_k, GGML_TYPE_Q6_K)

#define DEFINE_HALF(name, is_bf16)                                                               \
    void tlm_gemv_gguf_##name##_scalar(const void *w, const void *xq, float *y, int64_t n_in,   \
                                       int64_t r0, int64_t r1) {                                 \
        gemm_half_scalar(is_bf16, w, xq, y, 0, 1, n_in, r0, r1, false);                          \
    }                                                                                            \
    void tlm_gemm_gguf_##name##_scalar(const void *w, const void *xq, float *c, int64_t ldc,    \
                                       int64_t m, int64_t n_in, int64_t r0, int64_t r1,         \
                                       bool accumulate) {                                        \
        gemm_half_scalar(is_bf16, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                   \
    }
DEFINE_HALF(f16, false)
DEFINE_HALF(bf16, true)
